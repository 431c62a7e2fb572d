//! Templating of string params: `{{input}}`, `{{pipeline.name}}`,
//! `{{run.id}}`, `{{steps.<name>.metadata.<path>}}`,
//! `{{steps.<name>.artifacts}}` (the number of artifacts), and for report
//! stages `{{run}}` (`{id, pipeline}`) and `{{run.steps}}`: every step
//! declared before this one (each an implicit dependency) with its status,
//! timing, attempts, version and artifacts.
//!
//! Templates are parsed at validation time (to report syntax errors and to
//! add an implicit dependency on every step referenced) and rendered just
//! before a step runs. A string that is exactly one `{{ ... }}` renders to the
//! referenced JSON value (a number stays a number); inside a longer string the
//! value is stringified (strings as they are, other values as JSON).
//!
//! Metadata paths are dot separated; a segment indexes an object by key or an
//! array by position (`{{steps.a.metadata.sizes.0.width}}`, `sizes[0]` also works).

use serde_json::Value;

use crate::limits::{child_pointer, shorten};

/// What a `{{ ... }}` refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateRef {
    /// `{{input}}`: the caller's input text.
    Input,
    /// `{{pipeline.name}}`.
    PipelineName,
    /// `{{run.id}}`.
    RunId,
    /// `{{run}}`: `{id, pipeline}`.
    Run,
    /// `{{run.steps}}`: the steps declared before this one, as report rows.
    RunSteps,
    /// `{{steps.<step>.metadata.<path>}}`: a value in a step's output metadata.
    StepMetadata {
        /// The referenced step.
        step: String,
        /// Keys or array indices below `metadata` (empty: the whole metadata).
        path: Vec<String>,
    },
    /// `{{steps.<step>.artifacts}}`: the number of artifacts the step produced.
    StepArtifacts {
        /// The referenced step.
        step: String,
    },
}

impl TemplateRef {
    /// The step this reference depends on, if any.
    pub fn step(&self) -> Option<&str> {
        match self {
            TemplateRef::StepMetadata { step, .. } | TemplateRef::StepArtifacts { step } => Some(step),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Ref(TemplateRef, String),
}

/// A parsed template string.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    segments: Vec<Segment>,
}

/// True when `s` contains template syntax and must be rendered.
pub fn is_templated(s: &str) -> bool {
    s.contains("{{")
}

impl Template {
    /// Parses a template string. Errors name the offending expression.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut segments = Vec::new();
        let mut rest = s;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                segments.push(Segment::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                let s = shorten(s, 80);
                return Err(format!("unterminated template in \"{s}\": '{{{{' without a closing '}}}}'"));
            };
            let expr = after[..close].trim();
            segments.push(Segment::Ref(parse_ref(expr)?, expr.to_owned()));
            rest = &after[close + 2..];
        }
        if !rest.is_empty() {
            segments.push(Segment::Literal(rest.to_owned()));
        }
        Ok(Template { segments })
    }

    /// Every reference in the template, in order.
    pub fn refs(&self) -> impl Iterator<Item = &TemplateRef> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Ref(r, _) => Some(r),
            Segment::Literal(_) => None,
        })
    }

    /// Renders with `ctx`: a single whole-string reference yields its JSON
    /// value, anything else a string.
    pub fn render(&self, ctx: &dyn RenderContext) -> Result<Value, String> {
        if let [Segment::Ref(r, expr)] = self.segments.as_slice() {
            return resolve(r, expr, ctx);
        }
        let mut out = String::new();
        for seg in &self.segments {
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::Ref(r, expr) => match resolve(r, expr, ctx)? {
                    Value::String(s) => out.push_str(&s),
                    v => out.push_str(&v.to_string()),
                },
            }
        }
        Ok(Value::String(out))
    }
}

/// Longest `{{ ... }}` expression: a step name (at most 128 characters) and
/// a metadata path fit; error messages quote the expression.
const MAX_EXPR_BYTES: usize = 512;

const EXPECTED: &str =
    "expected input, pipeline.name, run, run.id, run.steps, steps.<name>.metadata[.<path>] or steps.<name>.artifacts";

fn parse_ref(expr: &str) -> Result<TemplateRef, String> {
    if expr.len() > MAX_EXPR_BYTES {
        return Err(format!(
            "template '{{{{{}}}}}' is longer than {MAX_EXPR_BYTES} characters (the limit)",
            shorten(expr, 40)
        ));
    }
    match expr {
        "input" => return Ok(TemplateRef::Input),
        "pipeline.name" => return Ok(TemplateRef::PipelineName),
        "run.id" => return Ok(TemplateRef::RunId),
        "run" => return Ok(TemplateRef::Run),
        "run.steps" => return Ok(TemplateRef::RunSteps),
        "" => return Err(format!("empty template '{{{{}}}}'; {EXPECTED}")),
        _ => {}
    }
    let Some(rest) = expr.strip_prefix("steps.") else {
        return Err(format!("unknown template reference '{{{{{expr}}}}}'; {EXPECTED}"));
    };
    let (step, field) = rest.split_once('.').unwrap_or((rest, ""));
    if step.is_empty() {
        return Err(format!("template '{{{{{expr}}}}}' names no step; {EXPECTED}"));
    }
    let step = step.to_owned();
    match field {
        "artifacts" => Ok(TemplateRef::StepArtifacts { step }),
        "metadata" => Ok(TemplateRef::StepMetadata { step, path: Vec::new() }),
        f if f.starts_with("metadata.") || f.starts_with("metadata[") => {
            let path =
                parse_path(&f["metadata".len()..]).ok_or_else(|| format!("bad metadata path in '{{{{{expr}}}}}'"))?;
            Ok(TemplateRef::StepMetadata { step, path })
        }
        _ => Err(format!(
            "unknown template reference '{{{{{expr}}}}}': after steps.{step} expected .metadata[.<path>] or .artifacts"
        )),
    }
}

/// `.a.b[0].c` or `.a.b.0.c` into segments; None if malformed.
fn parse_path(p: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = p;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            if end == 0 {
                return None;
            }
            out.push(r[..end].to_owned());
            rest = &r[end..];
        } else if let Some(r) = rest.strip_prefix('[') {
            let end = r.find(']')?;
            let idx = r[..end].trim();
            idx.parse::<usize>().ok()?;
            out.push(idx.to_owned());
            rest = &r[end + 1..];
        } else {
            return None;
        }
    }
    Some(out)
}

/// What templates are rendered against.
pub trait RenderContext {
    /// The caller's input text, if the run has one.
    fn input(&self) -> Option<&str>;
    /// The pipeline's name.
    fn pipeline_name(&self) -> &str;
    /// The run id.
    fn run_id(&self) -> &str;
    /// A finished step's metadata and artifact count; None if it has no output.
    fn step_output(&self, step: &str) -> Option<(&Value, usize)>;
    /// Report rows of the steps declared before the one being rendered.
    fn earlier_steps(&self) -> Value {
        Value::Array(Vec::new())
    }
}

fn resolve(r: &TemplateRef, expr: &str, ctx: &dyn RenderContext) -> Result<Value, String> {
    match r {
        TemplateRef::Input => ctx
            .input()
            .map(|s| Value::String(s.to_owned()))
            .ok_or_else(|| "'{{input}}' is used but the run was given no input text".to_owned()),
        TemplateRef::PipelineName => Ok(Value::String(ctx.pipeline_name().to_owned())),
        TemplateRef::RunId => Ok(Value::String(ctx.run_id().to_owned())),
        TemplateRef::Run => Ok(serde_json::json!({"id": ctx.run_id(), "pipeline": ctx.pipeline_name()})),
        TemplateRef::RunSteps => Ok(ctx.earlier_steps()),
        TemplateRef::StepArtifacts { step } => ctx
            .step_output(step)
            .map(|(_, n)| Value::from(n))
            .ok_or_else(|| format!("'{{{{{expr}}}}}': step '{step}' has no output")),
        TemplateRef::StepMetadata { step, path } => {
            let (mut v, _) =
                ctx.step_output(step).ok_or_else(|| format!("'{{{{{expr}}}}}': step '{step}' has no output"))?;
            for (i, seg) in path.iter().enumerate() {
                let next = match v {
                    Value::Object(m) => m.get(seg),
                    Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
                    _ => None,
                };
                v = next.ok_or_else(|| {
                    let at = if i == 0 { "metadata".to_owned() } else { format!("metadata.{}", path[..i].join(".")) };
                    let keys = match v {
                        Value::Object(m) if !m.is_empty() => {
                            format!(" (it has: {})", m.keys().cloned().collect::<Vec<_>>().join(", "))
                        }
                        Value::Array(a) => format!(" (it is a list of {})", a.len()),
                        other => format!(" (it is {other})"),
                    };
                    format!("'{{{{{expr}}}}}': step '{step}' {at} has no '{seg}'{keys}")
                })?;
            }
            Ok(v.clone())
        }
    }
}

/// Every template string inside `value`, with its JSON pointer (the nearest
/// ancestor's past [`crate::limits::MAX_POINTER_BYTES`]). Iterative: the
/// value may be as deep as the caller made it.
pub(crate) fn templated_strings(value: &Value) -> Vec<(String, &str)> {
    let mut out = Vec::new();
    let mut stack: Vec<(&Value, std::rc::Rc<str>)> = vec![(value, "".into())];
    while let Some((v, ptr)) = stack.pop() {
        let child = |seg: &str| child_pointer(Some(&ptr), seg).map_or_else(|| ptr.clone(), Into::into);
        match v {
            Value::String(s) if is_templated(s) => out.push((ptr.to_string(), s.as_str())),
            Value::Array(a) => stack.extend(a.iter().enumerate().rev().map(|(i, x)| (x, child(&i.to_string())))),
            Value::Object(m) => {
                let children: Vec<_> = m.iter().map(|(k, x)| (x, child(k))).collect();
                stack.extend(children.into_iter().rev());
            }
            _ => {}
        }
    }
    out
}

/// Renders every template string inside `value`; errors name the JSON pointer.
/// Recursion is bounded by the depth of params as written, which parsing
/// limits ([`crate::SourceLimits::max_depth`]); rendered values are cloned, not walked.
pub fn render_value(value: &Value, ctx: &dyn RenderContext) -> Result<Value, String> {
    fn walk(v: &Value, ptr: Option<&str>, ctx: &dyn RenderContext) -> Result<Value, String> {
        Ok(match v {
            Value::String(s) if is_templated(s) => Template::parse(s).and_then(|t| t.render(ctx)).map_err(|e| {
                let at = ptr.filter(|p| !p.is_empty()).map(|p| format!(" at '{p}'")).unwrap_or_default();
                format!("params{at}: {e}")
            })?,
            Value::Array(a) => Value::Array(
                a.iter()
                    .enumerate()
                    .map(|(i, x)| walk(x, child_pointer(ptr, &i.to_string()).as_deref().or(ptr), ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, x)| Ok((k.clone(), walk(x, child_pointer(ptr, k).as_deref().or(ptr), ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }
    walk(value, Some(""), ctx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Ctx(Value);
    impl RenderContext for Ctx {
        fn input(&self) -> Option<&str> {
            Some("a cat")
        }
        fn pipeline_name(&self) -> &str {
            "P"
        }
        fn run_id(&self) -> &str {
            "r1"
        }
        fn step_output(&self, step: &str) -> Option<(&Value, usize)> {
            (step == "a").then_some((&self.0, 3))
        }
    }

    #[test]
    fn whole_string_keeps_type_and_longer_strings_stringify() {
        let ctx = Ctx(json!({"width": 512, "sizes": [{"w": 1}, {"w": 2}], "tag": "x"}));
        let r = |s: &str| Template::parse(s).unwrap().render(&ctx).unwrap();
        assert_eq!(r("{{steps.a.metadata.width}}"), json!(512));
        assert_eq!(r("{{ steps.a.metadata.sizes[1].w }}"), json!(2));
        assert_eq!(r("{{steps.a.metadata.sizes.0.w}}"), json!(1));
        assert_eq!(r("w={{steps.a.metadata.width}} tag={{steps.a.metadata.tag}}"), json!("w=512 tag=x"));
        assert_eq!(r("{{steps.a.artifacts}}"), json!(3));
        assert_eq!(r("{{input}} by {{pipeline.name}} in {{run.id}}"), json!("a cat by P in r1"));
        let err = Template::parse("{{steps.a.metadata.height}}").unwrap().render(&ctx).unwrap_err();
        assert!(err.contains("has no 'height'") && err.contains("width"), "{err}");
    }

    #[test]
    fn syntax_errors() {
        assert!(Template::parse("{{input").unwrap_err().contains("unterminated"));
        assert!(Template::parse("{{inptu}}").unwrap_err().contains("unknown template reference"));
        assert!(Template::parse("{{steps.a.meta}}").unwrap_err().contains("expected .metadata"));
        assert_eq!(Template::parse("{{steps.b.artifacts}}").unwrap().refs().next().unwrap().step(), Some("b"));
    }
}
