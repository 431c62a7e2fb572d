//! Parsing: pipeline source text (YAML, or JSON, which is YAML) into a
//! [`PipelineSpec`] whose every node keeps its 1-based line and column.
//!
//! # YAML library
//!
//! We use [`saphyr`]'s `MarkedYaml` tree: it is a maintained, YAML 1.2
//! compliant parser (a successor of `yaml-rust2`) that attaches a source span
//! to every node, *including mapping keys*, keeps typed scalars (`7` is an
//! integer, `"7"` a string), reports syntax errors with a marker, and rejects
//! duplicate keys. `serde_yaml` is deprecated and only locates errors, and
//! `marked-yaml` turns every scalar into a string, which would lose the
//! difference between `timeout: 30` and `timeout: "30"` that validation
//! must report.
//!
//! The parser here is *lenient*: a structural problem (unknown key, wrong
//! type, missing field) is recorded as a [`Diagnostic`] and parsing goes on, so
//! one pass reports every problem. [`PipelineSpec::parse`] is the strict
//! wrapper; [`crate::load`] combines the lenient parse with validation.

use std::collections::BTreeMap;
use std::time::Duration;

use saphyr::{LoadableYamlNode, MarkedYaml, Scalar, YamlData};
use serde_json::{Map, Number, Value};

use crate::diag::{closest, did_you_mean, Diagnostic, Diagnostics, Position};
use crate::limits::{self, child_pointer, shorten, SourceLimits};

/// The stage name that marks a group of steps rather than a step.
pub const GROUP_TYPE: &str = "parallel_group";

/// A value with the source position it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub pos: Position,
}

impl<T> Spanned<T> {
    fn new(value: T, pos: Position) -> Self {
        Self { value, pos }
    }
}

/// A parsed (not yet validated) pipeline file.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSpec {
    /// The file name (or other origin) given to the parser; used in diagnostics.
    pub file: String,
    /// `name:`; absent when the file gives none.
    pub name: Option<Spanned<String>>,
    /// `settings:`.
    pub settings: SettingsSpec,
    /// `steps:`, in declaration order.
    pub steps: Vec<NodeSpec>,
    /// Position of the document's root mapping.
    pub pos: Position,
}

/// `settings:` of a pipeline. Every field is optional; see
/// [`crate::Settings`] for the defaults.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SettingsSpec {
    /// `parallel:` (default true); false runs one step at a time.
    pub parallel: Option<Spanned<bool>>,
    /// `max_workers:` limit on steps running at once in the whole run.
    pub max_workers: Option<Spanned<usize>>,
    /// `timeout:` for the whole run, in seconds.
    pub timeout: Option<Spanned<Duration>>,
    /// `rate_limit_delay:` minimum seconds between two step starts.
    pub rate_limit_delay: Option<Spanned<Duration>>,
    /// `fail_fast:` for top-level steps (default false).
    pub fail_fast: Option<Spanned<bool>>,
}

/// An entry of a `steps:` list: a step, or a group of steps.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeSpec {
    /// A step that runs one stage.
    Step(StepSpec),
    /// `type: parallel_group`: steps sharing a worker limit, fail-fast policy and timeout.
    Group(GroupSpec),
}

impl NodeSpec {
    /// The step's or group's name.
    pub fn name(&self) -> &Spanned<String> {
        match self {
            NodeSpec::Step(s) => &s.name,
            NodeSpec::Group(g) => &g.name,
        }
    }
}

/// One step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepSpec {
    /// `name:`; when absent, the stage name (at the `type:` position).
    pub name: Spanned<String>,
    /// True when `name:` was absent and the name was taken from `type:`.
    pub name_defaulted: bool,
    /// `type:`, the stage to run; None only in a spec that had errors.
    pub stage: Option<Spanned<String>>,
    /// `params:`; None when absent.
    pub params: Option<ParamsSpec>,
    /// `input_from:` (one name or a list); empty means the pipeline's inputs.
    pub input_from: Vec<Spanned<String>>,
    /// `retries:` (attempts after the first), passed to the runner.
    pub retries: Option<Spanned<u32>>,
    /// `timeout:` per attempt, in seconds, passed to the runner.
    pub timeout: Option<Spanned<Duration>>,
    /// `priority:`; higher starts first when steps compete for a worker.
    pub priority: Option<Spanned<i64>>,
    /// `cache:`: true reuses a stored result even for a stage that is not
    /// a pure function, false never reuses one; absent, the stage decides.
    pub cache: Option<Spanned<bool>>,
    /// Position of the step's mapping.
    pub pos: Position,
}

/// A step's `params:` as JSON, plus the source position of every value in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamsSpec {
    /// The params converted to JSON.
    pub value: Value,
    /// Position of the `params:` value.
    pub pos: Position,
    /// Position of every value inside, keyed by JSON pointer (`""`, `/factor`, `/sizes/0`).
    pub positions: BTreeMap<String, Position>,
}

impl ParamsSpec {
    /// Position of the value at `pointer`, or of its nearest ancestor that has one.
    pub fn position_of(&self, pointer: &str) -> Position {
        let mut p = pointer;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind('/') {
                Some(i) => p = &p[..i],
                None => return self.pos,
            }
        }
    }
}

/// A group of steps.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpec {
    /// `name:`; when absent, `parallel_group_<line>`.
    pub name: Spanned<String>,
    /// `max_workers:` limit on the group's steps running at once.
    pub max_workers: Option<Spanned<usize>>,
    /// `fail_fast:` (default true).
    pub fail_fast: Option<Spanned<bool>>,
    /// `timeout:` for the group, in seconds, counted from its first step's start.
    pub timeout: Option<Spanned<Duration>>,
    /// `steps:`; groups may nest.
    pub steps: Vec<NodeSpec>,
    /// Position of the group's mapping.
    pub pos: Position,
}

impl PipelineSpec {
    /// Parses `source` strictly: any problem (bad YAML, unknown key, wrong
    /// type) is an error. `file` names the origin in diagnostics.
    pub fn parse(source: &str, file: &str) -> Result<PipelineSpec, Diagnostics> {
        Self::parse_with_limits(source, file, &SourceLimits::default())
    }

    /// [`PipelineSpec::parse`] under explicit size and depth [`SourceLimits`].
    pub fn parse_with_limits(source: &str, file: &str, limits: &SourceLimits) -> Result<PipelineSpec, Diagnostics> {
        let (spec, diags) = parse_lenient(source, file, limits);
        match spec {
            Some(spec) if diags.is_empty() => Ok(spec),
            _ => Err(Diagnostics::sorted(diags)),
        }
    }
}

/// Parses what can be parsed and reports every structural problem. Returns no
/// spec only when the text is not YAML, its root is not a mapping, or it
/// passes a size or depth limit (checked first, before any tree is built).
pub(crate) fn parse_lenient(
    source: &str,
    file: &str,
    limits: &SourceLimits,
) -> (Option<PipelineSpec>, Vec<Diagnostic>) {
    if let Err(d) = limits::prescan(source, file, limits) {
        return (None, vec![d]);
    }
    let mut p = Parser { file, diags: Vec::new(), max_steps: limits.max_steps, nodes: 0 };
    let docs = match MarkedYaml::load_from_str(source) {
        Ok(docs) => docs,
        Err(e) => {
            let m = e.marker();
            let pos = Position::new(m.line().max(1), m.col() + 1);
            p.error(pos, None, format!("invalid YAML: {}", e.info()));
            return (None, p.diags);
        }
    };
    let spec = match docs.as_slice() {
        [] => {
            p.error(Position::new(1, 1), None, "the pipeline file is empty");
            None
        }
        [doc] => p.pipeline(doc),
        [_, second, ..] => {
            p.error(pos(second), None, "expected one YAML document, found several");
            None
        }
    };
    (spec, p.diags)
}

fn pos(node: &MarkedYaml<'_>) -> Position {
    let m = node.span.start;
    Position::new(m.line().max(1), m.col() + 1)
}

/// The node's data, looking through tags (`!foo value`).
fn data<'a, 'i>(node: &'a MarkedYaml<'i>) -> &'a YamlData<'i, MarkedYaml<'i>> {
    match &node.data {
        YamlData::Tagged(_, inner) => data(inner),
        d => d,
    }
}

fn scalar<'a, 'i>(node: &'a MarkedYaml<'i>) -> Option<&'a Scalar<'i>> {
    match data(node) {
        YamlData::Value(s) => Some(s),
        _ => None,
    }
}

fn as_str<'a>(node: &'a MarkedYaml<'_>) -> Option<&'a str> {
    match scalar(node) {
        Some(Scalar::String(s)) => Some(s.as_ref()),
        _ => None,
    }
}

/// "a string", "a list", ... for "expected X, found Y" messages.
fn describe(node: &MarkedYaml<'_>) -> String {
    match data(node) {
        YamlData::Value(Scalar::Null) => "nothing (null)".into(),
        YamlData::Value(Scalar::Boolean(b)) => format!("the boolean {b}"),
        YamlData::Value(Scalar::Integer(i)) => format!("the number {i}"),
        YamlData::Value(Scalar::FloatingPoint(f)) => format!("the number {}", f.into_inner()),
        YamlData::Value(Scalar::String(s)) => format!("the string \"{}\"", shorten(s, 60)),
        YamlData::Sequence(_) => "a list".into(),
        YamlData::Mapping(_) => "a mapping".into(),
        _ => "an unsupported value".into(),
    }
}

const PIPELINE_KEYS: &[&str] = &["name", "description", "settings", "steps"];
const SETTINGS_KEYS: &[&str] = &["parallel", "max_workers", "timeout", "rate_limit_delay", "fail_fast"];
const STEP_KEYS: &[&str] =
    &["name", "type", "description", "params", "input_from", "retries", "timeout", "priority", "cache"];
const GROUP_KEYS: &[&str] = &["name", "type", "description", "max_workers", "fail_fast", "timeout", "steps"];

/// Longest step or group name: names appear in reports, events, file names
/// and templates, so they stay short.
const MAX_NAME_BYTES: usize = 128;

/// A mapping entry with a string key.
struct Entry<'a, 'i> {
    key: &'a str,
    key_pos: Position,
    value: &'a MarkedYaml<'i>,
}

struct Parser<'f> {
    file: &'f str,
    diags: Vec<Diagnostic>,
    /// [`SourceLimits::max_steps`], and the steps and groups seen so far.
    max_steps: usize,
    nodes: usize,
}

impl Parser<'_> {
    fn error(&mut self, pos: Position, step: Option<&str>, msg: impl Into<String>) {
        self.diags.push(Diagnostic::new(self.file, pos, step, msg));
    }

    /// The entries of a mapping with string keys, reporting keys not in
    /// `allowed` (with a suggestion). None (and a diagnostic) if not a mapping.
    fn mapping<'a, 'i>(
        &mut self,
        node: &'a MarkedYaml<'i>,
        what: &str,
        step: Option<&str>,
        allowed: &[&str],
    ) -> Option<Vec<Entry<'a, 'i>>> {
        let YamlData::Mapping(map) = data(node) else {
            self.error(pos(node), step, format!("{what} must be a mapping, found {}", describe(node)));
            return None;
        };
        let mut out = Vec::with_capacity(map.len());
        for (k, v) in map.iter() {
            let Some(key) = as_str(k) else {
                self.error(pos(k), step, format!("keys in {what} must be strings, found {}", describe(k)));
                continue;
            };
            if !allowed.contains(&key) {
                let hint = did_you_mean(closest(key, allowed.iter().copied()));
                let key = shorten(key, 60);
                self.error(
                    pos(k),
                    step,
                    format!("unknown key '{key}' in {what}{hint}; expected one of: {}", allowed.join(", ")),
                );
                continue;
            }
            out.push(Entry { key, key_pos: pos(k), value: v });
        }
        Some(out)
    }

    fn string(&mut self, e: &Entry<'_, '_>, step: Option<&str>) -> Option<Spanned<String>> {
        match as_str(e.value) {
            Some(s) if !s.trim().is_empty() => Some(Spanned::new(s.to_owned(), pos(e.value))),
            Some(_) => {
                self.error(pos(e.value), step, format!("'{}' must not be empty", e.key));
                None
            }
            None => {
                self.error(pos(e.value), step, format!("'{}' must be a string, found {}", e.key, describe(e.value)));
                None
            }
        }
    }

    fn boolean(&mut self, e: &Entry<'_, '_>, step: Option<&str>) -> Option<Spanned<bool>> {
        match scalar(e.value) {
            Some(Scalar::Boolean(b)) => Some(Spanned::new(*b, pos(e.value))),
            _ => {
                self.error(
                    pos(e.value),
                    step,
                    format!("'{}' must be true or false, found {}", e.key, describe(e.value)),
                );
                None
            }
        }
    }

    /// A number of seconds: positive, or non-negative when `allow_zero`.
    fn seconds(&mut self, e: &Entry<'_, '_>, step: Option<&str>, allow_zero: bool) -> Option<Spanned<Duration>> {
        let secs = match scalar(e.value) {
            Some(Scalar::Integer(i)) => Some(*i as f64),
            Some(Scalar::FloatingPoint(f)) => Some(f.into_inner()),
            _ => None,
        };
        let bound = if allow_zero { "zero or more" } else { "a positive number of" };
        match secs {
            Some(s) if s.is_finite() && (s > 0.0 || (allow_zero && s == 0.0)) && s < 1e9 => {
                Some(Spanned::new(Duration::from_secs_f64(s), pos(e.value)))
            }
            _ => {
                self.error(
                    pos(e.value),
                    step,
                    format!("'{}' must be {bound} seconds, found {}", e.key, describe(e.value)),
                );
                None
            }
        }
    }

    fn integer(&mut self, e: &Entry<'_, '_>, step: Option<&str>, min: i64, what: &str) -> Option<Spanned<i64>> {
        match scalar(e.value) {
            Some(Scalar::Integer(i)) if *i >= min => Some(Spanned::new(*i, pos(e.value))),
            _ => {
                self.error(pos(e.value), step, format!("'{}' must be {what}, found {}", e.key, describe(e.value)));
                None
            }
        }
    }

    fn workers(&mut self, e: &Entry<'_, '_>, step: Option<&str>) -> Option<Spanned<usize>> {
        self.integer(e, step, 1, "a whole number of at least 1").map(|s| Spanned::new(s.value as usize, s.pos))
    }

    fn pipeline(&mut self, root: &MarkedYaml<'_>) -> Option<PipelineSpec> {
        let entries = self.mapping(root, "a pipeline", None, PIPELINE_KEYS)?;
        let mut spec = PipelineSpec {
            file: self.file.to_owned(),
            name: None,
            settings: SettingsSpec::default(),
            steps: Vec::new(),
            pos: pos(root),
        };
        let mut have_steps = false;
        for e in &entries {
            match e.key {
                "name" => spec.name = self.string(e, None),
                "description" => {}
                "settings" => spec.settings = self.settings(e.value),
                "steps" => {
                    have_steps = true;
                    spec.steps = self.steps(e.value, "the pipeline");
                }
                _ => unreachable!("filtered by mapping()"),
            }
        }
        if !have_steps {
            self.error(spec.pos, None, "the pipeline has no 'steps' list");
        }
        Some(spec)
    }

    fn settings(&mut self, node: &MarkedYaml<'_>) -> SettingsSpec {
        let mut s = SettingsSpec::default();
        if matches!(scalar(node), Some(Scalar::Null)) {
            return s;
        }
        let Some(entries) = self.mapping(node, "settings", None, SETTINGS_KEYS) else {
            return s;
        };
        for e in &entries {
            match e.key {
                "parallel" => s.parallel = self.boolean(e, None),
                "max_workers" => s.max_workers = self.workers(e, None),
                "timeout" => s.timeout = self.seconds(e, None, false),
                "rate_limit_delay" => s.rate_limit_delay = self.seconds(e, None, true),
                "fail_fast" => s.fail_fast = self.boolean(e, None),
                _ => unreachable!("filtered by mapping()"),
            }
        }
        s
    }

    fn steps(&mut self, node: &MarkedYaml<'_>, owner: &str) -> Vec<NodeSpec> {
        let YamlData::Sequence(items) = data(node) else {
            self.error(pos(node), None, format!("'steps' of {owner} must be a list, found {}", describe(node)));
            return Vec::new();
        };
        if items.is_empty() {
            self.error(pos(node), None, format!("'steps' of {owner} is empty"));
        }
        let mut out = Vec::with_capacity(items.len().min(self.max_steps));
        for item in items {
            self.nodes += 1;
            if self.nodes > self.max_steps {
                let msg = format!("the pipeline has more than {} steps and groups (the limit)", self.max_steps);
                self.error(pos(item), None, msg);
                break;
            }
            out.extend(self.node(item));
        }
        out
    }

    fn node(&mut self, node: &MarkedYaml<'_>) -> Option<NodeSpec> {
        let YamlData::Mapping(map) = data(node) else {
            self.error(pos(node), None, format!("a step must be a mapping, found {}", describe(node)));
            return None;
        };
        let get = |key: &str| map.iter().find(|(k, _)| as_str(k) == Some(key)).map(|(_, v)| v);
        let ty = get("type").and_then(|v| as_str(v));
        let is_group = ty == Some(GROUP_TYPE) || (ty.is_none() && get("steps").is_some());
        if is_group {
            Some(NodeSpec::Group(self.group(node, get("name").and_then(|v| as_str(v)))))
        } else {
            Some(NodeSpec::Step(self.step(node, get("name").and_then(|v| as_str(v)), ty)))
        }
    }

    fn step(&mut self, node: &MarkedYaml<'_>, name_hint: Option<&str>, type_hint: Option<&str>) -> StepSpec {
        let label = name_hint.or(type_hint).map(str::to_owned);
        let step = label.as_deref();
        let entries = self.mapping(node, "a step", step, STEP_KEYS).unwrap_or_default();
        let mut s = StepSpec {
            name: Spanned::new(String::new(), pos(node)),
            name_defaulted: true,
            stage: None,
            params: None,
            input_from: Vec::new(),
            retries: None,
            timeout: None,
            priority: None,
            cache: None,
            pos: pos(node),
        };
        let mut name = None;
        for e in &entries {
            match e.key {
                "name" => name = self.string(e, step),
                "type" => s.stage = self.string(e, step),
                "description" => {}
                "params" => s.params = self.params(e.value, step),
                "input_from" => s.input_from = self.input_from(e, step),
                "retries" => {
                    s.retries = self
                        .integer(e, step, 0, "a whole number of at least 0")
                        .map(|r| Spanned::new(r.value.min(u32::MAX as i64) as u32, r.pos))
                }
                "timeout" => s.timeout = self.seconds(e, step, false),
                "priority" => s.priority = self.integer(e, step, i64::MIN, "a whole number"),
                "cache" => s.cache = self.boolean(e, step),
                _ => unreachable!("filtered by mapping()"),
            }
        }
        if s.stage.is_none() && !entries.iter().any(|e| e.key == "type") {
            self.error(s.pos, step, "the step has no 'type' (the stage to run)");
        }
        match (name, &s.stage) {
            (Some(n), _) => {
                s.name = n;
                s.name_defaulted = false;
            }
            (None, Some(stage)) => s.name = stage.clone(),
            (None, None) => s.name = Spanned::new(format!("step_{}", s.pos.line), s.pos),
        }
        if let Some(e) = entries.iter().find(|e| e.key == "name") {
            self.check_name(&s.name.value, e.key_pos);
        }
        s
    }

    fn group(&mut self, node: &MarkedYaml<'_>, name_hint: Option<&str>) -> GroupSpec {
        let step = name_hint;
        let entries = self.mapping(node, "a parallel_group", step, GROUP_KEYS).unwrap_or_default();
        let mut g = GroupSpec {
            name: Spanned::new(format!("{GROUP_TYPE}_{}", pos(node).line), pos(node)),
            max_workers: None,
            fail_fast: None,
            timeout: None,
            steps: Vec::new(),
            pos: pos(node),
        };
        let mut have_steps = false;
        for e in &entries {
            match e.key {
                "name" => {
                    if let Some(n) = self.string(e, step) {
                        self.check_name(&n.value, e.key_pos);
                        g.name = n;
                    }
                }
                "type" | "description" => {}
                "max_workers" => g.max_workers = self.workers(e, step),
                "fail_fast" => g.fail_fast = self.boolean(e, step),
                "timeout" => g.timeout = self.seconds(e, step, false),
                "steps" => {
                    have_steps = true;
                    let owner = format!("group '{}'", g.name.value);
                    g.steps = self.steps(e.value, &owner);
                }
                _ => unreachable!("filtered by mapping()"),
            }
        }
        if !have_steps {
            self.error(g.pos, Some(&g.name.value), "a parallel_group needs a 'steps' list");
        }
        g
    }

    fn check_name(&mut self, name: &str, at: Position) {
        if name.len() > MAX_NAME_BYTES {
            let msg = format!("names may be at most {MAX_NAME_BYTES} characters long (the limit)");
            self.error(at, Some(&shorten(name, 60)), msg);
            return;
        }
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            self.error(
                at,
                Some(name),
                "names may contain only letters, digits, '_' and '-' (templates refer to steps by name)",
            );
        }
    }

    fn input_from(&mut self, e: &Entry<'_, '_>, step: Option<&str>) -> Vec<Spanned<String>> {
        if let Some(s) = as_str(e.value) {
            return vec![Spanned::new(s.to_owned(), pos(e.value))];
        }
        let YamlData::Sequence(items) = data(e.value) else {
            self.error(
                pos(e.value),
                step,
                format!("'input_from' must be a step name or a list of step names, found {}", describe(e.value)),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            match as_str(item) {
                Some(s) => out.push(Spanned::new(s.to_owned(), pos(item))),
                None => self.error(
                    pos(item),
                    step,
                    format!("'input_from' entries must be step names, found {}", describe(item)),
                ),
            }
        }
        out
    }

    fn params(&mut self, node: &MarkedYaml<'_>, step: Option<&str>) -> Option<ParamsSpec> {
        if matches!(scalar(node), Some(Scalar::Null)) {
            return None;
        }
        if !matches!(data(node), YamlData::Mapping(_)) {
            self.error(pos(node), step, format!("'params' must be a mapping, found {}", describe(node)));
            return None;
        }
        let mut positions = BTreeMap::new();
        let value = self.json(node, Some(String::new()), &mut positions, step);
        Some(ParamsSpec { value, pos: pos(node), positions })
    }

    /// Converts a YAML node to JSON, recording positions by JSON pointer
    /// (None past [`limits::MAX_POINTER_BYTES`]: the node is then found at
    /// its nearest recorded ancestor). Recursion depth is bounded by
    /// [`SourceLimits::max_depth`], checked before the tree was built.
    fn json(
        &mut self,
        node: &MarkedYaml<'_>,
        pointer: Option<String>,
        positions: &mut BTreeMap<String, Position>,
        step: Option<&str>,
    ) -> Value {
        if let Some(p) = &pointer {
            positions.insert(p.clone(), pos(node));
        }
        match data(node) {
            YamlData::Value(Scalar::Null) => Value::Null,
            YamlData::Value(Scalar::Boolean(b)) => Value::Bool(*b),
            YamlData::Value(Scalar::Integer(i)) => Value::Number((*i).into()),
            YamlData::Value(Scalar::FloatingPoint(f)) => match Number::from_f64(f.into_inner()) {
                Some(n) => Value::Number(n),
                None => {
                    self.error(pos(node), step, "params cannot hold NaN or infinite numbers (JSON has none)");
                    Value::Null
                }
            },
            YamlData::Value(Scalar::String(s)) => Value::String(s.to_string()),
            YamlData::Sequence(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        self.json(item, child_pointer(pointer.as_deref(), &i.to_string()), positions, step)
                    })
                    .collect(),
            ),
            YamlData::Mapping(map) => {
                let mut out = Map::new();
                for (k, v) in map.iter() {
                    let key = match scalar(k) {
                        Some(Scalar::String(s)) => s.to_string(),
                        Some(Scalar::Integer(i)) => i.to_string(),
                        Some(Scalar::Boolean(b)) => b.to_string(),
                        _ => {
                            self.error(pos(k), step, format!("params keys must be strings, found {}", describe(k)));
                            continue;
                        }
                    };
                    let child = child_pointer(pointer.as_deref(), &key);
                    let value = self.json(v, child, positions, step);
                    out.insert(key, value);
                }
                Value::Object(out)
            }
            _ => {
                self.error(pos(node), step, "unsupported YAML value in params");
                Value::Null
            }
        }
    }
}
