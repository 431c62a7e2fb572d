//! Live progress of `stagecraft run` on stderr: on a terminal, a bar per
//! step (queued, running with the stage's own progress, done or failed);
//! otherwise one plain line per event, which reads well in a log file.
//! Stage progress is printed as lines only in steps of a quarter, so a
//! chatty stage does not flood a log.

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use stagecraft_orchestrator::RunEvent;
use stagecraft_pipeline::Event;
use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

/// Where run events go while a pipeline runs.
pub enum Live {
    Bars(Bars),
    Lines(Lines),
}

impl Live {
    /// Bars when stderr is a terminal, lines otherwise. `steps` sizes the
    /// name column.
    pub fn for_stderr<'a>(steps: impl IntoIterator<Item = &'a str>) -> Self {
        if std::io::stderr().is_terminal() {
            Live::Bars(Bars::new(steps))
        } else {
            Live::Lines(Lines::default())
        }
    }

    pub fn show(&self, event: &RunEvent) {
        match self {
            Live::Bars(b) => b.show(event),
            Live::Lines(l) => l.show(event),
        }
    }
}

/// Plain lines, one per event.
#[derive(Default)]
pub struct Lines {
    last_quarter: Mutex<HashMap<String, u32>>,
}

impl Lines {
    fn show(&self, event: &RunEvent) {
        match event {
            RunEvent::Step(e) => {
                let at = e.at().as_secs_f64();
                match e {
                    Event::Queued { step, .. } => eprintln!("[{at:8.3}s] queued    {step}"),
                    Event::Started { step, stage, .. } => eprintln!("[{at:8.3}s] started   {step} ({stage})"),
                    Event::Finished { step, duration, .. } => {
                        eprintln!("[{at:8.3}s] done      {step} in {:.3}s", duration.as_secs_f64())
                    }
                    Event::Failed { step, error, .. } => eprintln!("[{at:8.3}s] FAILED    {step}: {error}"),
                    Event::Skipped { step, reason, .. } => eprintln!("[{at:8.3}s] skipped   {step}: {reason}"),
                    Event::Cancelled { step, reason, .. } => eprintln!("[{at:8.3}s] cancelled {step}: {reason}"),
                    Event::RunFinished { .. } => {}
                }
            }
            RunEvent::Progress(p) => {
                let quarter = (p.fraction * 4.0).floor() as u32;
                let mut seen = self.last_quarter.lock().expect("printer lock");
                let last = seen.entry(p.step.clone()).or_insert(0);
                if quarter > *last {
                    *last = quarter;
                    eprintln!("            {:<9} {} {:>3.0}% {}", "progress", p.step, p.fraction * 100.0, p.message);
                }
            }
            other => {
                if let Some(line) = note(other) {
                    eprintln!("            {line}");
                }
            }
        }
    }
}

/// A bar per step under one [`MultiProgress`].
pub struct Bars {
    multi: MultiProgress,
    style: ProgressStyle,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new<'a>(steps: impl IntoIterator<Item = &'a str>) -> Self {
        let width = steps.into_iter().map(str::len).max().unwrap_or(8).clamp(8, 32);
        let template = format!("{{prefix:<{width}}} [{{bar:30}}] {{pos:>3}}% {{elapsed:>4}} {{wide_msg}}");
        let style = ProgressStyle::with_template(&template).expect("a valid template").progress_chars("=> ");
        Self { multi: MultiProgress::new(), style, bars: Mutex::new(HashMap::new()) }
    }

    /// The step's bar, added below the others the first time it is seen.
    fn bar(&self, step: &str) -> ProgressBar {
        let mut bars = self.bars.lock().expect("bars lock");
        bars.entry(step.to_owned())
            .or_insert_with(|| {
                let bar = self.multi.add(ProgressBar::new(100).with_style(self.style.clone()));
                bar.set_prefix(step.to_owned());
                bar
            })
            .clone()
    }

    fn show(&self, event: &RunEvent) {
        match event {
            RunEvent::Step(e) => match e {
                Event::Queued { step, .. } => self.bar(step).set_message("queued"),
                Event::Started { step, stage, .. } => {
                    let bar = self.bar(step);
                    bar.reset_elapsed();
                    bar.set_message(format!("running {stage}"));
                    bar.enable_steady_tick(Duration::from_millis(250));
                }
                Event::Finished { step, duration, .. } => {
                    let bar = self.bar(step);
                    bar.set_position(100);
                    bar.finish_with_message(format!("done in {:.3}s", duration.as_secs_f64()));
                }
                Event::Failed { step, error, .. } => self.bar(step).abandon_with_message(format!("FAILED: {error}")),
                Event::Skipped { step, reason, .. } => {
                    self.bar(step).abandon_with_message(format!("skipped: {reason}"))
                }
                Event::Cancelled { step, reason, .. } => {
                    self.bar(step).abandon_with_message(format!("cancelled: {reason}"))
                }
                Event::RunFinished { .. } => {}
            },
            RunEvent::Progress(p) => {
                let bar = self.bar(&p.step);
                bar.set_position((p.fraction.clamp(0.0, 1.0) * 100.0).round() as u64);
                if !p.message.is_empty() {
                    bar.set_message(p.message.clone());
                }
            }
            other => {
                if let Some(line) = note(other) {
                    // Printed above the bars, which stay where they are.
                    let _ = self.multi.println(line);
                }
            }
        }
    }
}

/// Warnings, errors and failed attempts: worth a line in either mode.
fn note(event: &RunEvent) -> Option<String> {
    match event {
        RunEvent::Log(l) if matches!(l.level, "warn" | "error") => {
            Some(format!("{:<9} {}: {}", l.level, l.step, l.message))
        }
        RunEvent::Limited(l) => {
            Some(format!("limited   {}: max_workers {} asked, {} allowed by {}", l.scope, l.asked, l.allowed, l.by))
        }
        RunEvent::AttemptFailed(a) => Some(format!(
            "attempt {} of {} failed{}: {}",
            a.attempt,
            a.step,
            if a.retryable { " (will retry if attempts remain)" } else { "" },
            a.error
        )),
        _ => None,
    }
}
