//! SourceLimits on pipeline source, checked before anything recurses over it.
//!
//! A pipeline comes from a caller (`POST /v1/pipelines/run`, `stagecraft run
//! FILE`), so its size and shape are hostile until proven otherwise. The YAML
//! tree saphyr builds, its `Drop`, the conversion of `params:` to JSON, the
//! template walks and the schema checks all recurse once per nesting level:
//! 5000 levels of `- - - …` (10 KB) overflowed a tokio worker's 2 MiB stack.
//! So [`prescan`] walks saphyr's *event stream* (a flat state machine, no
//! recursion) with a depth counter and stops at the first level past the
//! limit, before any tree exists. Aliases count as deep and as large as the
//! node they name, so `&a [[…]]` repeated through `*a` cannot grow past the
//! limits either.
//!
//! Every limit failure is a [`Diagnostic`] that names the limit and, where
//! there is one, the line and column: `pipeline nesting is deeper than 64
//! levels (the limit)`.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};
use serde_json::Value;

use crate::diag::{Diagnostic, Diagnostics, Position};

/// Size and shape limits for one pipeline source. [`Default`] is what
/// [`crate::load`] applies; the server and CLI may lower them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// Largest source text, in bytes. 1 MiB: the largest pipeline in the
    /// repository is under 4 KiB, and a generated one with the largest step
    /// count still fits with room to spare.
    pub max_source_bytes: usize,
    /// Deepest nesting of YAML values: the root is level 1 and each value
    /// inside a mapping or list one level deeper (a scalar too). 64: a pipeline needs 3 levels, a group 2 more per level and
    /// params rarely more than 5; every recursion over the spec stays far
    /// below a 2 MiB stack at this depth.
    pub max_depth: usize,
    /// Most YAML nodes (scalars and collections, aliases expanded). 200,000:
    /// a 1 MiB source holds at most about that many; aliases must not expand
    /// past it.
    pub max_nodes: usize,
    /// Most steps and groups in one pipeline. 1000: the scheduler and report
    /// are built for tens; past this a pipeline is a generated mistake.
    pub max_steps: usize,
}

impl Default for SourceLimits {
    fn default() -> Self {
        Self { max_source_bytes: 1 << 20, max_depth: 64, max_nodes: 200_000, max_steps: 1000 }
    }
}

/// Bytes in a human unit for limit messages: `1 MiB`, `512 KiB`, `300 bytes`.
pub fn human_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else {
        format!("{n} bytes")
    }
}

/// One open collection in the event stream.
struct Frame {
    anchor: usize,
    /// Height of the collection's subtree seen so far (1: no children yet).
    height: usize,
    /// Nodes in the subtree so far, the collection included.
    nodes: usize,
}

/// Checks a pipeline source against `limits` (size, nesting depth, node
/// count) without parsing it into a tree; [`crate::load_with_limits`] does
/// the same first. For a caller that applies tighter limits than the loader
/// it hands the source to.
pub fn check(source: &str, file: &str, limits: &SourceLimits) -> Result<(), Diagnostics> {
    prescan(source, file, limits).map_err(|d| Diagnostics::sorted(vec![d]))
}

/// Checks `source` against `limits` without building a tree: size, nesting
/// depth and node count (aliases expanded). A syntax error is left to the
/// loader, which reports it with its own message.
pub(crate) fn prescan(source: &str, file: &str, limits: &SourceLimits) -> Result<(), Diagnostic> {
    if source.len() > limits.max_source_bytes {
        return Err(Diagnostic::new(
            file,
            Position::new(1, 1),
            None,
            format!(
                "the pipeline source is {} long; the limit is {}",
                human_bytes(source.len()),
                human_bytes(limits.max_source_bytes)
            ),
        ));
    }
    // Height and node count of each anchored node, by saphyr's anchor id.
    let mut anchors: HashMap<usize, (usize, usize)> = HashMap::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut total = 0usize;
    for event in Parser::new_from_str(source) {
        let (event, span) = match event {
            Ok(e) => e,
            // The scanner refuses flow collections past 255 levels itself,
            // while reading ahead (before the events that would reach ours).
            Err(e) if e.info() == "recursion limit exceeded" => {
                let m = e.marker();
                return Err(too_deep(file, Position::new(m.line().max(1), m.col() + 1), limits));
            }
            // Any other syntax error is the loader's to report.
            Err(_) => return Ok(()),
        };
        let at = Position::new(span.start.line().max(1), span.start.col() + 1);
        // A leaf (scalar or alias) has a height and a node count; a
        // collection's are known at its end.
        let leaf = match event {
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                if stack.len() >= limits.max_depth {
                    return Err(too_deep(file, at, limits));
                }
                stack.push(Frame { anchor, height: 1, nodes: 1 });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(done) = stack.pop() else { return Ok(()) };
                if done.anchor > 0 {
                    anchors.insert(done.anchor, (done.height, done.nodes));
                }
                if let Some(parent) = stack.last_mut() {
                    parent.height = parent.height.max(done.height + 1);
                    parent.nodes = parent.nodes.saturating_add(done.nodes);
                }
                continue;
            }
            Event::Scalar(_, _, anchor, _) => {
                if anchor > 0 {
                    anchors.insert(anchor, (1, 1));
                }
                Some((1, 1))
            }
            Event::Alias(id) => Some(anchors.get(&id).copied().unwrap_or((1, 1))),
            _ => None,
        };
        if let Some((height, nodes)) = leaf {
            if stack.len() + height > limits.max_depth {
                return Err(too_deep(file, at, limits));
            }
            if let Some(parent) = stack.last_mut() {
                parent.height = parent.height.max(height + 1);
                parent.nodes = parent.nodes.saturating_add(nodes);
            }
            total = total.saturating_add(nodes);
        } else if matches!(event, Event::SequenceStart(..) | Event::MappingStart(..)) {
            total += 1;
        }
        if total > limits.max_nodes {
            return Err(Diagnostic::new(
                file,
                at,
                None,
                format!(
                    "the pipeline has more than {} YAML values (aliases expanded); that is the limit",
                    limits.max_nodes
                ),
            ));
        }
    }
    Ok(())
}

fn too_deep(file: &str, at: Position, limits: &SourceLimits) -> Diagnostic {
    Diagnostic::new(file, at, None, format!("pipeline nesting is deeper than {} levels (the limit)", limits.max_depth))
}

/// The nesting depth of a JSON value (a scalar is 1), computed without
/// recursion so that any value, however deep, can be measured.
pub fn json_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((v, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, depth + 1))),
            Value::Object(m) => stack.extend(m.values().map(|x| (x, depth + 1))),
            _ => {}
        }
    }
    deepest
}

/// Longest JSON pointer recorded for a params value (bytes). Pointers are
/// built per node, so without a bound a long key path times many leaves
/// below it is quadratic in the source; past the bound a node is reported
/// at its nearest ancestor that has a pointer.
pub(crate) const MAX_POINTER_BYTES: usize = 256;

/// `ptr` extended by one escaped segment, or None when that would pass
/// [`MAX_POINTER_BYTES`] (or `ptr` is already past it).
pub(crate) fn child_pointer(ptr: Option<&str>, segment: &str) -> Option<String> {
    let ptr = ptr?;
    if ptr.len() + 1 + segment.len() > MAX_POINTER_BYTES {
        return None;
    }
    Some(format!("{ptr}/{}", segment.replace('~', "~0").replace('/', "~1")))
}

/// At most `max` characters of `s`, with `…` when cut: keeps echoes of caller
/// text in error messages short.
pub fn shorten(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match s.char_indices().nth(max) {
        None => s.into(),
        Some((i, _)) => format!("{}…", &s[..i]).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(src: &str) -> Result<(), String> {
        prescan(src, "p.yaml", &SourceLimits::default()).map_err(|d| d.to_string())
    }

    #[test]
    fn deep_block_sequences_are_refused_with_the_position() {
        let deep = "- ".repeat(5000) + "x\n";
        let err = scan(&deep).unwrap_err();
        assert_eq!(err, "p.yaml:1:129: pipeline nesting is deeper than 64 levels (the limit)");
        let ok = "- ".repeat(63) + "x\n";
        scan(&ok).unwrap();
    }

    #[test]
    fn deep_flow_collections_and_mappings_are_refused() {
        let flow = "[".repeat(100_000);
        assert!(scan(&flow).unwrap_err().contains("deeper than 64 levels"));
        let maps: String = (0..100).map(|i| format!("{}k:\n", "  ".repeat(i))).collect();
        let err = scan(&maps).unwrap_err();
        assert!(err.starts_with("p.yaml:64:"), "{err}");
    }

    #[test]
    fn aliases_count_as_deep_and_as_large_as_what_they_name() {
        // Each anchor nests the previous one 40 levels down: 2 × 40 > 64.
        let a = format!("a: &a {}1{}\n", "[".repeat(40), "]".repeat(40));
        let b = format!("b: {}*a{}\n", "[".repeat(40), "]".repeat(40));
        assert!(scan(&(a.clone() + &b)).unwrap_err().contains("deeper than 64"));
        // Billion laughs: ten aliases of ten aliases of ...
        let mut laughs = String::from("l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..9 {
            let refs = vec![format!("*l{}", i - 1); 10].join(", ");
            laughs += &format!("l{i}: &l{i} [{refs}]\n");
        }
        assert!(scan(&laughs).unwrap_err().contains("more than 200000 YAML values"));
    }

    #[test]
    fn size_limit_names_both_sizes() {
        let big = format!("name: x\n# {}\n", "a".repeat(2 << 20));
        assert_eq!(scan(&big).unwrap_err(), "p.yaml:1:1: the pipeline source is 2.0 MiB long; the limit is 1 MiB");
    }

    fn load_err(src: &str) -> String {
        let catalog: std::collections::BTreeMap<String, Value> =
            [("noop".to_owned(), serde_json::json!({"type": "object"}))].into();
        crate::load(src, "p.yaml", &catalog).unwrap_err().to_string()
    }

    #[test]
    fn load_refuses_deep_params_and_too_many_steps_in_one_line() {
        let mut params = String::from("1");
        for _ in 0..10_000 {
            params = format!("{{a: {params}}}");
        }
        let src = format!("name: p\nsteps:\n  - {{name: a, type: noop, params: {params}}}\n");
        let err = load_err(&src);
        assert!(err.starts_with("p.yaml:3:") && err.ends_with("deeper than 64 levels (the limit)"), "{err}");
        assert_eq!(err.lines().count(), 1);

        let many: String = (0..1001).map(|i| format!("  - {{name: s{i}, type: noop}}\n")).collect();
        let err = load_err(&format!("name: p\nsteps:\n{many}"));
        assert_eq!(err, "p.yaml:1003:5: the pipeline has more than 1000 steps and groups (the limit)");
        let ok: String = (0..1000).map(|i| format!("  - {{name: s{i}, type: noop}}\n")).collect();
        let catalog: std::collections::BTreeMap<String, Value> = [("noop".to_owned(), serde_json::json!({}))].into();
        assert_eq!(crate::load(&format!("name: p\nsteps:\n{ok}"), "p.yaml", &catalog).unwrap().steps().len(), 1000);
    }

    #[test]
    fn hostile_names_and_many_problems_get_short_answers() {
        let long = "n".repeat(100_000);
        let err = load_err(&format!("name: p\nsteps:\n  - {{name: {long}, type: noop}}\n"));
        assert!(err.contains("names may be at most 128 characters long"), "{err}");
        assert!(err.len() < 400, "{}", err.len());
        // A 500 KB reference to no step: no quadratic typo search, a short message.
        let src = format!(
            "name: p\nsteps:\n  - {{name: a, type: noop}}\n  - {{name: b, type: noop, input_from: {}}}\n",
            "r".repeat(500_000)
        );
        let err = load_err(&src);
        assert!(err.contains("input_from names no step") && err.len() < 1500, "{}", err.len());
        let bad: String = (0..20_000).map(|i| format!("  - {{name: s{i}, tpye: noop}}\n")).collect();
        let err = load_err(&format!("name: p\nsteps:\n{bad}"));
        assert_eq!(err.lines().count(), crate::diag::MAX_DIAGNOSTICS + 1);
        assert!(err.lines().last().unwrap().contains("more problem(s) not shown (at most 100 are reported)"), "{err}");
    }

    #[test]
    fn long_key_paths_do_not_multiply_pointers() {
        // 55 levels of 1000-byte keys (YAML's longest implicit key is 1024) above 20,000 leaves: pointers stop growing
        // at MAX_POINTER_BYTES, so this parses in linear time and memory.
        let key = "k".repeat(1000);
        let mut src = String::from("name: p\nsteps:\n  - name: a\n    type: noop\n    params:\n");
        for depth in 0..55 {
            src += &format!("{}{key}{depth}:\n", "  ".repeat(depth + 3));
        }
        let leaves: Vec<String> = (0..20_000).map(|i| format!("l{i}: 1")).collect();
        src += &format!("{}last: {{{}}}\n", "  ".repeat(58), leaves.join(", "));
        let catalog: std::collections::BTreeMap<String, Value> = [("noop".to_owned(), serde_json::json!({}))].into();
        let spec = crate::PipelineSpec::parse(&src, "p.yaml").unwrap();
        let crate::spec::NodeSpec::Step(step) = &spec.steps[0] else { panic!("a step") };
        let params = step.params.as_ref().unwrap();
        assert!(params.positions.keys().all(|p| p.len() <= MAX_POINTER_BYTES));
        assert!(params.positions.len() < 100, "{}", params.positions.len());
        crate::load(&src, "p.yaml", &catalog).unwrap();
    }

    #[test]
    fn json_depth_is_iterative() {
        let mut v = Value::Null;
        for _ in 0..100_000 {
            v = Value::Array(vec![v]);
        }
        assert_eq!(json_depth(&v), 100_001);
        // Value's own Drop recurses: take it apart iteratively.
        while let Value::Array(mut a) = v {
            v = a.pop().unwrap_or(Value::Null);
        }
    }
}
