//! The validated pipeline: a DAG of [`PlannedStep`]s with their
//! [`PlannedGroup`]s and resolved [`Settings`], plus the graph algorithms on
//! it (cycle detection, topological order, critical path).
//!
//! A [`Pipeline`] is only built by validation ([`crate::load`] or
//! [`crate::validate()`]), so the engine can rely on it: every dependency
//! exists, there is no cycle, every stage is known.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::diag::Position;

/// Run-wide settings after defaults are applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// False: one step at a time (default true).
    pub parallel: bool,
    /// Limit on steps running at once in the whole run (default: none).
    pub max_workers: Option<usize>,
    /// Timeout for the whole run (default: none).
    pub timeout: Option<Duration>,
    /// Minimum time between two step starts (default zero).
    pub rate_limit_delay: Duration,
    /// Whether a top-level failure cancels the whole run (default false).
    pub fail_fast: bool,
}

/// A step of a validated pipeline.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlannedStep {
    /// Unique step name.
    pub name: String,
    /// The stage it runs.
    pub stage: String,
    /// Params as written (templates unrendered); `{}` when absent.
    pub params: Value,
    /// Whether `params` holds templates to render before running.
    pub templated: bool,
    /// Steps whose output artifacts are this step's inputs, in order (a group
    /// named in `input_from` is expanded to its steps).
    pub input_from: Vec<usize>,
    /// Every step this one waits for: `input_from` plus steps referenced by
    /// templates. Sorted, without duplicates.
    pub deps: Vec<usize>,
    /// Steps that wait for this one.
    pub dependents: Vec<usize>,
    /// Retries after the first attempt, for the runner.
    pub retries: u32,
    /// Per-attempt timeout, for the runner.
    pub timeout: Option<Duration>,
    /// Higher starts first among ready steps (default 0).
    pub priority: i64,
    /// `cache:` as written, for the runner: Some(true) opts in to reuse,
    /// Some(false) opts out, None lets the stage decide.
    pub cache: Option<bool>,
    /// Enclosing groups, innermost first; the last is always the root group 0.
    pub groups: Vec<usize>,
    /// Where the step is written.
    pub pos: Position,
}

impl PlannedStep {
    /// True when the step takes the pipeline's input files (no `input_from`).
    pub fn uses_pipeline_inputs(&self) -> bool {
        self.input_from.is_empty()
    }
}

/// A group of steps; group 0 is the implicit root (the whole pipeline).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PlannedGroup {
    /// Group name (the pipeline's name for the root).
    pub name: String,
    /// Enclosing group; None for the root.
    pub parent: Option<usize>,
    /// Limit on this group's steps running at once.
    pub max_workers: Option<usize>,
    /// Whether the first failure cancels the group's other steps.
    pub fail_fast: bool,
    /// Time limit, counted from the start of the group's first step.
    pub timeout: Option<Duration>,
    /// Every step inside, nested groups included, in declaration order.
    pub steps: Vec<usize>,
    /// Where the group is written.
    pub pos: Position,
}

/// A validated pipeline, ready to run.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub(crate) name: String,
    pub(crate) file: String,
    pub(crate) settings: Settings,
    pub(crate) steps: Vec<PlannedStep>,
    pub(crate) groups: Vec<PlannedGroup>,
    pub(crate) topo: Vec<usize>,
    pub(crate) schemas: HashMap<String, Arc<jsonschema::Validator>>,
}

impl Pipeline {
    /// The pipeline's name (the file name when it gives none).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The file (origin) it was loaded from.
    pub fn file(&self) -> &str {
        &self.file
    }
    /// Resolved settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }
    /// Steps in declaration order; indices are used by `deps`, `input_from`, ...
    pub fn steps(&self) -> &[PlannedStep] {
        &self.steps
    }
    /// Groups; index 0 is the root.
    pub fn groups(&self) -> &[PlannedGroup] {
        &self.groups
    }
    /// A step by name.
    pub fn step(&self, name: &str) -> Option<&PlannedStep> {
        self.steps.iter().find(|s| s.name == name)
    }
    /// Step indices in an order where every step follows its dependencies.
    pub fn topological_order(&self) -> &[usize] {
        &self.topo
    }
    /// The compiled params schema of `stage`, if the catalog gave one.
    pub(crate) fn schema(&self, stage: &str) -> Option<&jsonschema::Validator> {
        self.schemas.get(stage).map(|v| &**v)
    }
}

/// Cycles in the graph given as `deps[i]` = what i depends on: one per
/// strongly connected component, as a path `[a, b, c]` meaning a needs b,
/// b needs c, c needs a, starting at the smallest index.
pub(crate) fn find_cycles(deps: &[Vec<usize>]) -> Vec<Vec<usize>> {
    struct Tarjan<'a> {
        deps: &'a [Vec<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        sccs: Vec<Vec<usize>>,
    }
    impl Tarjan<'_> {
        fn visit(&mut self, v: usize) {
            self.index[v] = Some(self.next);
            self.low[v] = self.next;
            self.next += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in &self.deps[v] {
                match self.index[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                    _ => {}
                }
            }
            if Some(self.low[v]) == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    scc.push(w);
                    if w == v {
                        break;
                    }
                }
                self.sccs.push(scc);
            }
        }
    }
    let n = deps.len();
    let mut t = Tarjan {
        deps,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        sccs: Vec::new(),
    };
    for v in 0..n {
        if t.index[v].is_none() {
            t.visit(v);
        }
    }
    let mut cycles: Vec<Vec<usize>> = t
        .sccs
        .into_iter()
        .filter(|scc| scc.len() > 1 || deps[scc[0]].contains(&scc[0]))
        .map(|scc| cycle_in(deps, &scc))
        .collect();
    cycles.sort();
    cycles
}

/// A shortest cycle through the smallest member of a strongly connected component.
fn cycle_in(deps: &[Vec<usize>], scc: &[usize]) -> Vec<usize> {
    let start = *scc.iter().min().expect("non-empty component");
    let mut prev: HashMap<usize, usize> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for &w in &deps[v] {
            if w == start {
                let mut path = vec![v];
                let mut cur = v;
                while cur != start {
                    cur = prev[&cur];
                    path.push(cur);
                }
                path.reverse();
                return path;
            }
            if scc.contains(&w) && !prev.contains_key(&w) {
                prev.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start]
}

/// Kahn's algorithm, smallest index first among ready nodes (declaration
/// order when possible). Assumes no cycle.
pub(crate) fn topological_order(deps: &[Vec<usize>]) -> Vec<usize> {
    let n = deps.len();
    let mut remaining: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); n];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut ready: std::collections::BTreeSet<usize> = (0..n).filter(|&i| remaining[i] == 0).collect();
    let mut out = Vec::with_capacity(n);
    while let Some(v) = ready.pop_first() {
        out.push(v);
        for &w in &dependents[v] {
            remaining[w] -= 1;
            if remaining[w] == 0 {
                ready.insert(w);
            }
        }
    }
    out
}

/// The longest chain by `weight` through the DAG (steps without a weight,
/// those that never ran, are left out), and its total.
pub(crate) fn critical_path(
    deps: &[Vec<usize>],
    topo: &[usize],
    weight: &[Option<Duration>],
) -> (Vec<usize>, Duration) {
    let n = deps.len();
    let mut best: Vec<Duration> = vec![Duration::ZERO; n];
    let mut via: Vec<Option<usize>> = vec![None; n];
    for &v in topo {
        let Some(w) = weight[v] else { continue };
        let mut from = None;
        let mut base = Duration::ZERO;
        for &d in &deps[v] {
            if weight[d].is_some() && (from.is_none() || best[d] > base) {
                base = best[d];
                from = Some(d);
            }
        }
        best[v] = base + w;
        via[v] = from;
    }
    let Some(end) = (0..n).filter(|&v| weight[v].is_some()).max_by(|&a, &b| best[a].cmp(&best[b]).then(b.cmp(&a)))
    else {
        return (Vec::new(), Duration::ZERO);
    };
    let mut path = vec![end];
    let mut cur = end;
    while let Some(p) = via[cur] {
        path.push(p);
        cur = p;
    }
    path.reverse();
    (path, best[end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycles_topo_and_critical_path() {
        // 0 <- 1 <- 2, 0 <- 3
        let deps = vec![vec![], vec![0], vec![1], vec![0]];
        assert!(find_cycles(&deps).is_empty());
        assert_eq!(topological_order(&deps), vec![0, 1, 2, 3]);
        let ms = |m| Some(Duration::from_millis(m));
        let (path, total) = critical_path(&deps, &[0, 1, 2, 3], &[ms(10), ms(5), ms(5), ms(30)]);
        assert_eq!(path, vec![0, 3]);
        assert_eq!(total, Duration::from_millis(40));

        let cyclic = vec![vec![2], vec![0], vec![1], vec![3]];
        assert_eq!(find_cycles(&cyclic), vec![vec![0, 2, 1], vec![3]]);
    }
}
