//! Validation: turns a [`PipelineSpec`] into a runnable [`Pipeline`], or
//! reports every problem at once: unknown stages (with a suggestion), duplicate
//! names, `input_from` or template references to no step, dependency cycles
//! (naming the steps), params that do not match the stage's JSON Schema
//! (draft 2020-12), and template syntax errors. Structural problems (unknown
//! keys, wrong types) come from the parser; [`load`] reports both together.
//!
//! Templated values (strings containing `{{`) cannot be type-checked before
//! they are rendered: schema errors *about* such a value are skipped here, and
//! the engine checks the rendered params against the schema again before the
//! step runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::Value;

use crate::dag::{self, Pipeline, PlannedGroup, PlannedStep, Settings};
use crate::diag::{closest, did_you_mean, Diagnostic, Diagnostics, Position};
use crate::limits::SourceLimits;
use crate::spec::{self, NodeSpec, ParamsSpec, PipelineSpec, StepSpec};
use crate::template::{templated_strings, Template};

/// What the validator needs to know about stages.
pub trait StageCatalog {
    /// The JSON Schema (draft 2020-12) of `stage`'s params; None when no such
    /// stage exists. A stage without params constraints returns `true` or `{}`.
    fn params_schema(&self, stage: &str) -> Option<Value>;

    /// Every known stage name, used to suggest a fix for a misspelt stage.
    fn stage_names(&self) -> Vec<String> {
        Vec::new()
    }
}

impl StageCatalog for HashMap<String, Value> {
    fn params_schema(&self, stage: &str) -> Option<Value> {
        self.get(stage).cloned()
    }
    fn stage_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.keys().cloned().collect();
        v.sort();
        v
    }
}

impl StageCatalog for BTreeMap<String, Value> {
    fn params_schema(&self, stage: &str) -> Option<Value> {
        self.get(stage).cloned()
    }
    fn stage_names(&self) -> Vec<String> {
        self.keys().cloned().collect()
    }
}

impl<T: StageCatalog + ?Sized> StageCatalog for &T {
    fn params_schema(&self, stage: &str) -> Option<Value> {
        (**self).params_schema(stage)
    }
    fn stage_names(&self) -> Vec<String> {
        (**self).stage_names()
    }
}

impl<T: StageCatalog + ?Sized> StageCatalog for Arc<T> {
    fn params_schema(&self, stage: &str) -> Option<Value> {
        (**self).params_schema(stage)
    }
    fn stage_names(&self) -> Vec<String> {
        (**self).stage_names()
    }
}

/// Parses and validates pipeline source text (YAML or JSON) in one go,
/// reporting every problem found by either phase. `file` names the origin in
/// diagnostics.
///
/// The source is held to [`SourceLimits::default`] (size, nesting depth, node and
/// step counts); [`load_with_limits`] takes others.
pub fn load(source: &str, file: &str, catalog: &dyn StageCatalog) -> Result<Pipeline, Diagnostics> {
    load_with_limits(source, file, catalog, &SourceLimits::default())
}

/// [`load`] under explicit [`SourceLimits`]: a source past one gets a single
/// diagnostic that names the limit (and where it was passed), before any
/// tree is built.
pub fn load_with_limits(
    source: &str,
    file: &str,
    catalog: &dyn StageCatalog,
    limits: &SourceLimits,
) -> Result<Pipeline, Diagnostics> {
    let (spec, mut diags) = spec::parse_lenient(source, file, limits);
    let Some(spec) = spec else {
        return Err(Diagnostics::sorted(diags));
    };
    let (pipeline, more) = build(&spec, catalog);
    diags.extend(more);
    match pipeline {
        Some(p) if diags.is_empty() => Ok(p),
        _ => Err(Diagnostics::sorted(diags)),
    }
}

/// Validates a parsed spec against `catalog`.
pub fn validate(spec: &PipelineSpec, catalog: &dyn StageCatalog) -> Result<Pipeline, Diagnostics> {
    match build(spec, catalog) {
        (Some(p), d) if d.is_empty() => Ok(p),
        (_, d) => Err(Diagnostics::sorted(d)),
    }
}

/// A stage's compiled params schema, or why there is none.
#[derive(Clone)]
enum SchemaEntry {
    Valid(Arc<jsonschema::Validator>),
    Unknown,
    Invalid(String),
}

/// What a name refers to.
#[derive(Clone, Copy)]
enum Named {
    Step(usize),
    Group(usize),
}

struct Builder<'a> {
    file: &'a str,
    diags: Vec<Diagnostic>,
    steps: Vec<(&'a StepSpec, Vec<usize>)>,
    groups: Vec<PlannedGroup>,
    names: HashMap<&'a str, (Named, Position)>,
}

impl<'a> Builder<'a> {
    fn error(&mut self, pos: Position, step: &str, msg: impl Into<String>) {
        self.diags.push(Diagnostic::new(self.file, pos, Some(step), msg));
    }

    fn claim_name(&mut self, name: &'a spec::Spanned<String>, what: Named, defaulted: bool) {
        if let Some((_, first)) = self.names.get(name.value.as_str()) {
            let hint = if defaulted {
                " (a step without 'name' is named after its 'type'; give it a unique 'name')"
            } else {
                ""
            };
            let msg = format!("duplicate name '{}': already used at {}:{first}{hint}", name.value, self.file);
            self.error(name.pos, &name.value, msg);
        } else {
            self.names.insert(&name.value, (what, name.pos));
        }
    }

    /// Flattens nodes, recording each step's enclosing groups (innermost first).
    fn flatten(&mut self, nodes: &'a [NodeSpec], chain: &[usize]) {
        for node in nodes {
            match node {
                NodeSpec::Step(s) => {
                    let idx = self.steps.len();
                    self.claim_name(&s.name, Named::Step(idx), s.name_defaulted);
                    for &g in chain {
                        self.groups[g].steps.push(idx);
                    }
                    self.steps.push((s, chain.to_vec()));
                }
                NodeSpec::Group(g) => {
                    let gi = self.groups.len();
                    self.claim_name(&g.name, Named::Group(gi), false);
                    self.groups.push(PlannedGroup {
                        name: g.name.value.clone(),
                        parent: Some(chain[0]),
                        max_workers: g.max_workers.as_ref().map(|m| m.value),
                        fail_fast: g.fail_fast.as_ref().is_none_or(|f| f.value),
                        timeout: g.timeout.as_ref().map(|t| t.value),
                        steps: Vec::new(),
                        pos: g.pos,
                    });
                    let mut inner = Vec::with_capacity(chain.len() + 1);
                    inner.push(gi);
                    inner.extend_from_slice(chain);
                    self.flatten(&g.steps, &inner);
                }
            }
        }
    }

    /// Steps a name stands for (a group: all its steps), or a diagnostic.
    fn resolve(&mut self, name: &spec::Spanned<String>, step: &str, what: &str) -> Option<Vec<usize>> {
        match self.names.get(name.value.as_str()) {
            Some((Named::Step(i), _)) => Some(vec![*i]),
            Some((Named::Group(g), _)) => Some(self.groups[*g].steps.clone()),
            None => {
                let hint = did_you_mean(closest(&name.value, self.names.keys().copied()));
                self.error(name.pos, step, format!("{what} names no step: '{}'{hint}", name.value));
                None
            }
        }
    }
}

/// Builds the pipeline; returns it only if no diagnostic was produced.
fn build(spec: &PipelineSpec, catalog: &dyn StageCatalog) -> (Option<Pipeline>, Vec<Diagnostic>) {
    let file = spec.file.as_str();
    let s = &spec.settings;
    let settings = Settings {
        parallel: s.parallel.as_ref().is_none_or(|p| p.value),
        max_workers: s.max_workers.as_ref().map(|m| m.value),
        timeout: s.timeout.as_ref().map(|t| t.value),
        rate_limit_delay: s.rate_limit_delay.as_ref().map(|d| d.value).unwrap_or_default(),
        fail_fast: s.fail_fast.as_ref().is_some_and(|f| f.value),
    };
    let name = spec.name.as_ref().map(|n| n.value.clone()).unwrap_or_else(|| {
        std::path::Path::new(file)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pipeline".to_owned())
    });
    let mut b = Builder {
        file,
        diags: Vec::new(),
        steps: Vec::new(),
        groups: vec![PlannedGroup {
            name: name.clone(),
            parent: None,
            max_workers: settings.max_workers,
            fail_fast: settings.fail_fast,
            timeout: settings.timeout,
            steps: Vec::new(),
            pos: spec.pos,
        }],
        names: HashMap::new(),
    };
    b.flatten(&spec.steps, &[0]);

    let stage_names = catalog.stage_names();
    let mut schemas: HashMap<String, SchemaEntry> = HashMap::new();
    let mut planned = Vec::with_capacity(b.steps.len());
    // (step, dependency) -> where the dependency is written, for cycle reports.
    let mut edge_pos: HashMap<(usize, usize), Position> = HashMap::new();

    for idx in 0..b.steps.len() {
        let (st, chain) = (b.steps[idx].0, b.steps[idx].1.clone());
        let step = st.name.value.as_str();
        let empty = Value::Object(Default::default());
        let params = st.params.as_ref().map_or(&empty, |p| &p.value);

        // Stage and params schema.
        if let Some(stage) = &st.stage {
            let entry = schemas
                .entry(stage.value.clone())
                .or_insert_with(|| match catalog.params_schema(&stage.value) {
                    None => SchemaEntry::Unknown,
                    Some(schema) => match jsonschema::draft202012::new(&schema) {
                        Ok(v) => SchemaEntry::Valid(Arc::new(v)),
                        Err(e) => SchemaEntry::Invalid(e.to_string()),
                    },
                })
                .clone();
            match entry {
                SchemaEntry::Valid(validator) => check_params(&mut b, &validator, st, params),
                SchemaEntry::Invalid(e) => {
                    b.error(stage.pos, step, format!("stage '{}' has an invalid params schema: {e}", stage.value))
                }
                SchemaEntry::Unknown => {
                    let hint = did_you_mean(closest(&stage.value, stage_names.iter().map(String::as_str)));
                    let known = if stage_names.is_empty() || stage_names.len() > 30 {
                        String::new()
                    } else {
                        format!("; known stages: {}", stage_names.join(", "))
                    };
                    let name = crate::limits::shorten(&stage.value, 60);
                    b.error(stage.pos, step, format!("unknown stage '{name}'{hint}{known}"));
                }
            }
        }

        // input_from.
        let mut input_from = Vec::new();
        for name in &st.input_from {
            if let Some(targets) = b.resolve(name, step, "input_from") {
                for t in targets {
                    edge_pos.entry((idx, t)).or_insert(name.pos);
                    input_from.push(t);
                }
            }
        }

        // Templates: syntax, references, implicit dependencies.
        let mut deps = input_from.clone();
        let templates = templated_strings(params);
        for (pointer, text) in &templates {
            let at = st.params.as_ref().map_or(st.pos, |p: &ParamsSpec| p.position_of(pointer));
            match Template::parse(text) {
                Err(e) => b.error(at, step, format!("params at '{pointer}': {e}")),
                Ok(t) => {
                    for r in t.refs() {
                        if *r == crate::template::TemplateRef::RunSteps {
                            // A report of the run waits for everything declared before it.
                            for earlier in 0..idx {
                                edge_pos.entry((idx, earlier)).or_insert(at);
                                deps.push(earlier);
                            }
                            continue;
                        }
                        let Some(target) = r.step() else { continue };
                        match b.names.get(target) {
                            Some((Named::Step(i), _)) => {
                                edge_pos.entry((idx, *i)).or_insert(at);
                                deps.push(*i);
                            }
                            Some((Named::Group(_), _)) => b.error(
                                at,
                                step,
                                format!("params at '{pointer}': template refers to group '{target}'; templates can refer only to steps"),
                            ),
                            None => {
                                let hint = did_you_mean(closest(target, b.names.keys().copied()));
                                b.error(at, step, format!("params at '{pointer}': template refers to no step: '{target}'{hint}"));
                            }
                        }
                    }
                }
            }
        }
        deps.sort_unstable();
        deps.dedup();

        planned.push(PlannedStep {
            name: st.name.value.clone(),
            stage: st.stage.as_ref().map(|s| s.value.clone()).unwrap_or_default(),
            params: params.clone(),
            templated: !templates.is_empty(),
            input_from,
            deps,
            dependents: Vec::new(),
            retries: st.retries.as_ref().map_or(0, |r| r.value),
            timeout: st.timeout.as_ref().map(|t| t.value),
            priority: st.priority.as_ref().map_or(0, |p| p.value),
            cache: st.cache.as_ref().map(|c| c.value),
            groups: chain,
            pos: st.pos,
        });
    }

    // Cycles.
    let deps: Vec<Vec<usize>> = planned.iter().map(|s| s.deps.clone()).collect();
    for cycle in dag::find_cycles(&deps) {
        let first = cycle[0];
        let next = cycle.get(1).copied().unwrap_or(first);
        let at = edge_pos.get(&(first, next)).copied().unwrap_or(planned[first].pos);
        let names: Vec<&str> = cycle.iter().map(|&i| planned[i].name.as_str()).collect();
        let msg = if cycle.len() == 1 {
            "the step depends on itself (through input_from or a template)".to_owned()
        } else {
            let chain: Vec<String> =
                (0..cycle.len()).map(|k| format!("'{}' needs '{}'", names[k], names[(k + 1) % names.len()])).collect();
            format!("dependency cycle between {}: {}", names.join(", "), chain.join(", "))
        };
        let step = names[0].to_owned();
        b.error(at, &step, msg);
    }

    if !b.diags.is_empty() {
        return (None, b.diags);
    }
    for i in 0..planned.len() {
        for d in planned[i].deps.clone() {
            planned[d].dependents.push(i);
        }
    }
    let topo = dag::topological_order(&deps);
    let pipeline = Pipeline {
        name,
        file: file.to_owned(),
        settings,
        steps: planned,
        groups: b.groups,
        topo,
        schemas: schemas
            .into_iter()
            .filter_map(|(k, v)| match v {
                SchemaEntry::Valid(v) => Some((k, v)),
                _ => None,
            })
            .collect(),
    };
    (Some(pipeline), Vec::new())
}

/// Checks a step's params against its stage's schema, skipping errors about
/// values that are templates (they are checked after rendering).
fn check_params(b: &mut Builder<'_>, validator: &jsonschema::Validator, st: &StepSpec, params: &Value) {
    use jsonschema::error::ValidationErrorKind as K;
    for err in validator.iter_errors(params) {
        let pointer = err.instance_path.as_str().to_owned();
        let instance = err.instance.as_ref();
        let about_template = match instance {
            Value::String(s) => s.contains("{{"),
            _ => {
                matches!(
                    err.kind,
                    K::AnyOf { .. }
                        | K::OneOfNotValid { .. }
                        | K::OneOfMultipleValid { .. }
                        | K::Not { .. }
                        | K::Contains
                        | K::UniqueItems
                ) && !templated_strings(instance).is_empty()
            }
        };
        if about_template {
            continue;
        }
        let at = st.params.as_ref().map_or(st.pos, |p| p.position_of(&pointer));
        let at_path = if pointer.is_empty() { String::new() } else { format!(" at '{pointer}'") };
        let msg = format!(
            "params{at_path} do not match the schema of stage '{}': {err}",
            st.stage.as_ref().map_or("", |s| s.value.as_str())
        );
        b.error(at, &st.name.value, msg);
    }
}
