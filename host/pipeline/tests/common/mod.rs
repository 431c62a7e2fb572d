//! Test helpers: a stage catalog and a fake step runner that sleeps (in tokio
//! time, so tests run with the clock paused) or fails on demand, and records
//! what happened to each step, including whether its future was dropped.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use stagecraft_pipeline::*;
use tokio::time::Instant;

pub fn catalog() -> BTreeMap<String, Value> {
    [
        (
            "generate",
            json!({"type": "object", "properties": {"prompt": {"type": "string"}, "seed": {"type": "integer"}},
                   "additionalProperties": false}),
        ),
        (
            "upscale",
            json!({"type": "object", "properties": {"factor": {"type": "integer", "enum": [2, 4]}},
                   "required": ["factor"]}),
        ),
        ("social_formats", json!({"type": "object"})),
        ("report_xlsx", json!({"type": "object"})),
        ("work", json!({"type": "object", "properties": {"width": {"type": "integer"}}})),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

pub fn load_ok(yaml: &str) -> Pipeline {
    match load(yaml, "test.yaml", &catalog()) {
        Ok(p) => p,
        Err(d) => panic!("pipeline should be valid, got:\n{d}"),
    }
}

pub fn load_err(yaml: &str) -> Diagnostics {
    match load(yaml, "test.yaml", &catalog()) {
        Ok(_) => panic!("pipeline should be invalid"),
        Err(d) => d,
    }
}

/// How the fake runner behaves for one step.
#[derive(Clone, Default)]
pub struct Behavior {
    pub sleep: Duration,
    pub fail: Option<String>,
    pub panic: bool,
    pub metadata: Value,
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mark {
    Start,
    End,
    Dropped,
}

#[derive(Default)]
pub struct Log {
    pub marks: Vec<(String, Mark, Instant)>,
    pub received: HashMap<String, ReadyStep<String>>,
}

#[derive(Clone, Default)]
pub struct Fake {
    pub behaviors: Arc<HashMap<String, Behavior>>,
    pub log: Arc<Mutex<Log>>,
}

/// Records `Dropped` if the future is dropped before it completes.
struct DropGuard {
    name: String,
    log: Arc<Mutex<Log>>,
    done: bool,
}

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.done {
            self.log.lock().unwrap().marks.push((self.name.clone(), Mark::Dropped, Instant::now()));
        }
    }
}

impl Fake {
    pub fn new(behaviors: impl IntoIterator<Item = (&'static str, Behavior)>) -> Self {
        Fake {
            behaviors: Arc::new(behaviors.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
            log: Default::default(),
        }
    }

    /// Every step sleeps `d`.
    pub fn sleeping(names: &[&'static str], d: Duration) -> Self {
        Self::new(names.iter().map(|n| (*n, Behavior { sleep: d, ..Default::default() })))
    }

    pub fn marks(&self, step: &str) -> Vec<Mark> {
        self.log.lock().unwrap().marks.iter().filter(|m| m.0 == step).map(|m| m.1.clone()).collect()
    }

    pub fn time(&self, step: &str, mark: Mark) -> Instant {
        self.log
            .lock()
            .unwrap()
            .marks
            .iter()
            .find(|m| m.0 == step && m.1 == mark)
            .unwrap_or_else(|| panic!("no {mark:?} for {step}"))
            .2
    }

    pub fn received(&self, step: &str) -> ReadyStep<String> {
        self.log.lock().unwrap().received.get(step).cloned().unwrap_or_else(|| panic!("{step} never ran"))
    }

    /// Steps in the order they started.
    pub fn start_order(&self) -> Vec<String> {
        self.log.lock().unwrap().marks.iter().filter(|m| m.1 == Mark::Start).map(|m| m.0.clone()).collect()
    }

    /// The most steps that were running at once, from the recorded marks.
    pub fn max_concurrency(&self) -> usize {
        let log = self.log.lock().unwrap();
        let (mut cur, mut max) = (0usize, 0usize);
        for (_, mark, _) in &log.marks {
            match mark {
                Mark::Start => {
                    cur += 1;
                    max = max.max(cur);
                }
                Mark::End | Mark::Dropped => cur -= 1,
            }
        }
        max
    }
}

impl StepRunner<String> for Fake {
    fn run_step(&self, step: ReadyStep<String>) -> BoxFuture<'static, Result<StepOutput<String>, StepFailure>> {
        let b = self.behaviors.get(&step.name).cloned().unwrap_or_default();
        let log = self.log.clone();
        Box::pin(async move {
            let name = step.name.clone();
            {
                let mut l = log.lock().unwrap();
                l.marks.push((name.clone(), Mark::Start, Instant::now()));
                l.received.insert(name.clone(), step);
            }
            let mut guard = DropGuard { name: name.clone(), log: log.clone(), done: false };
            tokio::time::sleep(b.sleep).await;
            guard.done = true;
            log.lock().unwrap().marks.push((name.clone(), Mark::End, Instant::now()));
            if b.panic {
                panic!("boom in {name}");
            }
            match b.fail {
                Some(msg) => Err(StepFailure::new(msg)),
                None => Ok(StepOutput::new(vec![format!("{name}.out")], b.metadata)),
            }
        })
    }
}

/// Runs with an event recorder.
pub async fn run_with(
    pipeline: &Pipeline,
    fake: &Fake,
    input: RunInput<String>,
    mut options: RunOptions,
) -> (RunOutcome<String>, Vec<Event>) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    options.observer = Some(Arc::new(move |e: &Event| sink.lock().unwrap().push(e.clone())));
    let outcome = DagExecutor::new(fake.clone()).run(pipeline, input, options).await;
    let events = events.lock().unwrap().clone();
    (outcome, events)
}

pub async fn run(pipeline: &Pipeline, fake: &Fake) -> (RunOutcome<String>, Vec<Event>) {
    run_with(pipeline, fake, RunInput::default(), RunOptions::default()).await
}

pub fn status(outcome: &RunOutcome<String>, step: &str) -> StepStatus {
    outcome.report.step(step).unwrap_or_else(|| panic!("no step {step}")).status
}

pub fn error(outcome: &RunOutcome<String>, step: &str) -> String {
    outcome.report.step(step).unwrap().error.clone().unwrap_or_default()
}
