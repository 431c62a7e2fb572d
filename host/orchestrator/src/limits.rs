//! Limits that cut what a pipeline asks for, said out loud: a run's or a
//! group's `max_workers` is a limit on steps in flight, and the host may
//! allow fewer (its in-flight limit, or a stage's own limit). Each cut
//! becomes a [`LimitedEvent`] at the start of the run, never silence.

use crate::events::LimitedEvent;
use stagecraft_pipeline::Pipeline;
use stagecraft_scheduler::Scheduler;
use std::collections::BTreeMap;

/// Every limit of the host below what `pipeline` asks for, given the run's
/// `max_workers` override (already resolved by the caller, `None` if none).
pub(crate) fn cuts(pipeline: &Pipeline, run_max_workers: Option<usize>, scheduler: &Scheduler) -> Vec<LimitedEvent> {
    let mut out = Vec::new();
    if !pipeline.settings().parallel {
        return out;
    }
    for (index, group) in pipeline.groups().iter().enumerate() {
        let asked = if index == 0 { run_max_workers.or(pipeline.settings().max_workers) } else { group.max_workers };
        let Some(asked) = asked else { continue };
        let scope = if index == 0 { "run".to_owned() } else { format!("group {}", group.name) };
        // How many steps of each stage the group could run at once.
        let mut per_stage: BTreeMap<&str, usize> = BTreeMap::new();
        for &s in &group.steps {
            *per_stage.entry(pipeline.steps()[s].stage.as_str()).or_default() += 1;
        }
        let in_flight = scheduler.in_flight_limit();
        if in_flight < asked.min(group.steps.len()) {
            out.push(LimitedEvent::new(&scope, asked, in_flight, "the host's in-flight limit".to_owned()));
        }
        for (stage, steps) in per_stage {
            let stage_limit = scheduler.stage_limit(stage);
            if stage_limit < asked.min(steps) && stage_limit < in_flight {
                out.push(LimitedEvent::new(&scope, asked, stage_limit, format!("the limit of stage {stage}")));
            }
        }
    }
    out
}
