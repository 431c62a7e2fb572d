//! Whether a stored result may answer a call: reuse only where reuse is
//! what the caller meant. Both caches (the server's in-memory answers to
//! synchronous invocations, and the pipeline result cache) ask
//! [`ReusePolicy::decide`] before they look anything up or store anything.
//!
//! By default a stage's results are reused when the host believes it is a
//! pure function of its component, params and inputs
//! ([`Determinism::Pure`]): a stage that imports outgoing HTTP, or declares
//! itself non-deterministic, runs every time. Callers opt in or out per call
//! (a step's `cache:`, an invocation's `?cache=`), operators per stage
//! (`--reuse STAGE=always|never|seeded|auto`). Whoever turns reuse off wins.

use stagecraft_runtime::{Determinism, StageVersion};
use std::collections::HashMap;
use std::str::FromStr;

/// An operator's rule for one stage's results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StageReuse {
    /// As the stage's [`Determinism`] says.
    #[default]
    Auto,
    /// Reuse even if the stage is not a pure function (the operator knows
    /// its API is deterministic).
    Always,
    /// Never reuse.
    Never,
    /// Reuse only calls whose params carry a `seed` (a hosted API that is
    /// deterministic for a fixed seed).
    Seeded,
}

impl FromStr for StageReuse {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Self::Auto,
            "always" => Self::Always,
            "never" => Self::Never,
            "seeded" => Self::Seeded,
            other => return Err(format!("'{other}' is not a reuse rule (auto, always, never, seeded)")),
        })
    }
}

/// The operators' per-stage rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReusePolicy {
    stages: HashMap<String, StageReuse>,
}

/// Whether a call's result may be looked up and kept, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reuse {
    /// Look the result up; keep a fresh one.
    On,
    /// Run the stage and keep nothing, for this reason (said in reports
    /// and in `x-stagecraft-cache-reason`).
    Off(String),
}

impl Reuse {
    pub fn is_on(&self) -> bool {
        matches!(self, Reuse::On)
    }

    /// Why it is off; None when on.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Reuse::On => None,
            Reuse::Off(reason) => Some(reason),
        }
    }
}

impl ReusePolicy {
    /// Sets the rule for `stage`.
    #[must_use]
    pub fn with_stage(mut self, stage: impl Into<String>, rule: StageReuse) -> Self {
        self.stages.insert(stage.into(), rule);
        self
    }

    /// The rule for `stage` ([`StageReuse::Auto`] unless an operator set one).
    pub fn rule(&self, stage: &str) -> StageReuse {
        self.stages.get(stage).copied().unwrap_or_default()
    }

    /// Whether a call of `version` with `params` may reuse a result.
    /// `caller` is the call's own wish: `Some(true)` opts in (a step's
    /// `cache: true`), `Some(false)` opts out, None lets the stage decide.
    pub fn decide(&self, version: &StageVersion, params: &serde_json::Value, caller: Option<bool>) -> Reuse {
        let off = |why: &str| Reuse::Off(why.to_owned());
        if caller == Some(false) {
            return off("the caller turned reuse off");
        }
        match self.rule(&version.info.name) {
            StageReuse::Never => off("the operator turned reuse off for this stage"),
            StageReuse::Always => Reuse::On,
            StageReuse::Seeded => match params.get("seed") {
                Some(seed) if !seed.is_null() => Reuse::On,
                _ => off("the operator allows reuse of this stage only with a fixed `seed` in params"),
            },
            StageReuse::Auto => match (version.determinism, caller) {
                (Determinism::Pure, _) | (_, Some(true)) => Reuse::On,
                (determinism, _) => Reuse::Off(format!(
                    "{} (opt in with `cache: true`, or an operator's --reuse {}=always)",
                    determinism.reason().unwrap_or("not a pure function"),
                    version.info.name
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_name_the_choices_when_wrong() {
        assert_eq!("seeded".parse::<StageReuse>(), Ok(StageReuse::Seeded));
        assert!("sometimes".parse::<StageReuse>().unwrap_err().contains("auto, always, never, seeded"));
    }
}
