//! Capacity settings shared by `run`, `invoke` and `serve`: the two kinds of
//! capacity (CPU slots for instances that compute, in-flight instances for
//! those that exist), per-stage limits and outgoing-HTTP connections, from
//! flags and one optional TOML file (`--config`). A flag beats the file,
//! which beats the default.
//!
//! ```toml
//! cpu_slots = 2               # instances computing at once (default: cores)
//! max_in_flight = 1000        # instances existing at once (default 1000)
//! waiting_holds_cpu = false   # true: the behaviour before CPU slots
//!
//! [stages.generate_http]
//! limit = 256                 # this stage's instances in flight
//! http_max_connections = 256  # its outgoing requests in flight (more wait)
//! ```

use anyhow::Context;
use serde::Deserialize;
use stagecraft_runtime::{ParkPolicy, RuntimeConfig};
use stagecraft_scheduler::{SchedulerConfig, StagePoolConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The capacity flags (global: every subcommand takes them).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct CapacityArgs {
    /// Capacity settings file (TOML: cpu_slots, max_in_flight,
    /// waiting_holds_cpu, [stages.NAME] limit and http_max_connections).
    #[arg(long = "config", global = true, env = "STAGECRAFT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Instances computing at once (default: the core count). An instance
    /// waiting on outgoing HTTP, a model, segmentation or a WASI sleep holds
    /// none.
    #[arg(long, global = true, env = "STAGECRAFT_CPU_SLOTS")]
    pub cpu_slots: Option<usize>,
    /// Instances in flight at once, waiting or computing (default 1000;
    /// the memory budget may allow fewer).
    #[arg(long, global = true, env = "STAGECRAFT_MAX_IN_FLIGHT")]
    pub max_in_flight: Option<usize>,
    /// One stage's limit of instances in flight: `STAGE=N` (repeatable).
    #[arg(long = "stage-limit", global = true, value_name = "STAGE=N")]
    pub stage_limits: Vec<String>,
    /// Outgoing HTTP requests in flight per granted stage: `N` for every
    /// grant or `STAGE=N` (repeatable; default 64). More wait in line.
    #[arg(long = "http-max-connections", global = true, value_name = "[STAGE=]N")]
    pub http_max_connections: Vec<String>,
    /// Waiting instances keep their CPU slot, as before CPU slots existed
    /// (for comparisons; slow for work that waits).
    #[arg(long, global = true)]
    pub waiting_holds_cpu: bool,
}

/// The `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    cpu_slots: Option<usize>,
    max_in_flight: Option<usize>,
    waiting_holds_cpu: Option<bool>,
    #[serde(default)]
    stages: BTreeMap<String, StageFileConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StageFileConfig {
    limit: Option<usize>,
    http_max_connections: Option<usize>,
}

/// Capacity resolved from flags, file and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    pub cpu_slots: usize,
    pub max_in_flight: usize,
    pub park_policy: ParkPolicy,
    pub stage_limits: BTreeMap<String, usize>,
    /// Connections for grants without their own.
    pub http_default: Option<usize>,
    pub http_per_stage: BTreeMap<String, usize>,
}

impl CapacityArgs {
    /// Reads the file (if any) and applies the flags over it.
    pub fn resolve(&self) -> anyhow::Result<Capacity> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let mut stage_limits = BTreeMap::new();
        let mut http_per_stage = BTreeMap::new();
        for (stage, c) in &file.stages {
            if let Some(n) = c.limit {
                stage_limits.insert(stage.clone(), positive(n, "limit", stage)?);
            }
            if let Some(n) = c.http_max_connections {
                http_per_stage.insert(stage.clone(), positive(n, "http_max_connections", stage)?);
            }
        }
        for spec in &self.stage_limits {
            let (stage, n) = stage_count(spec).context("--stage-limit")?;
            stage_limits.insert(stage, n);
        }
        let mut http_default = None;
        for spec in &self.http_max_connections {
            if spec.contains('=') {
                let (stage, n) = stage_count(spec).context("--http-max-connections")?;
                http_per_stage.insert(stage, n);
            } else {
                http_default = Some(count(spec).context("--http-max-connections")?);
            }
        }
        let cores = stagecraft_scheduler::available_cores();
        let holds = self.waiting_holds_cpu || file.waiting_holds_cpu.unwrap_or(false);
        Ok(Capacity {
            cpu_slots: self.cpu_slots.or(file.cpu_slots).unwrap_or(cores).max(1),
            max_in_flight: self
                .max_in_flight
                .or(file.max_in_flight)
                .unwrap_or(stagecraft_scheduler::DEFAULT_IN_FLIGHT)
                .max(1),
            park_policy: if holds { ParkPolicy::HoldWhileWaiting } else { ParkPolicy::ReleaseWhileWaiting },
            stage_limits,
            http_default,
            http_per_stage,
        })
    }
}

impl Capacity {
    /// Sets CPU slots, instance slots and HTTP connections on a runtime
    /// configuration whose grants are already in place.
    pub fn apply_to_runtime(&self, config: &mut RuntimeConfig) -> anyhow::Result<()> {
        config.cpu_slots = self.cpu_slots;
        config.park_policy = self.park_policy;
        // Every in-flight instance needs a pooling slot, plus room for
        // `describe` at load and direct calls.
        config.max_instances = config.max_instances.max(u32::try_from(self.max_in_flight + 24).unwrap_or(u32::MAX));
        for (stage, grant) in config.http.iter_mut() {
            if let Some(n) = self.http_per_stage.get(stage).copied().or(self.http_default) {
                grant.max_connections = n;
            }
        }
        if let Some(stage) = self.http_per_stage.keys().find(|s| !config.http.contains_key(*s)) {
            anyhow::bail!("--http-max-connections names stage '{stage}', which has no --http-grant");
        }
        Ok(())
    }

    /// The scheduler configuration: the in-flight limit and stage limits.
    pub fn scheduler(&self) -> SchedulerConfig {
        let mut config = SchedulerConfig {
            max_workers: self.max_in_flight,
            default_stage_limit: self.max_in_flight,
            ..Default::default()
        };
        for (stage, n) in &self.stage_limits {
            config.per_stage.insert(stage.clone(), StagePoolConfig { limit: Some(*n), memory_bytes: None });
        }
        config
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path).with_context(|| format!("--config: cannot read {}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("--config {}: {}", path.display(), e.to_string().trim_end()))
}

fn positive(n: usize, what: &str, stage: &str) -> anyhow::Result<usize> {
    anyhow::ensure!(n > 0, "[stages.{stage}] {what} must be at least 1");
    Ok(n)
}

fn count(text: &str) -> anyhow::Result<usize> {
    let n: usize = text.trim().parse().map_err(|_| anyhow::anyhow!("{text:?} is not a count"))?;
    anyhow::ensure!(n > 0, "{text:?}: must be at least 1");
    Ok(n)
}

fn stage_count(spec: &str) -> anyhow::Result<(String, usize)> {
    let (stage, n) = spec.split_once('=').with_context(|| format!("{spec:?} must look like STAGE=N"))?;
    let stage = stage.trim();
    anyhow::ensure!(!stage.is_empty(), "{spec:?} names no stage");
    Ok((stage.to_owned(), count(n)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_which_beats_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capacity.toml");
        std::fs::write(
            &path,
            "cpu_slots = 3\nmax_in_flight = 50\n[stages.generate_http]\nlimit = 8\nhttp_max_connections = 16\n[stages.upscale]\nlimit = 1\n",
        )
        .unwrap();
        let args = CapacityArgs {
            config: Some(path),
            max_in_flight: Some(70),
            stage_limits: vec!["upscale=2".into()],
            http_max_connections: vec!["32".into()],
            ..CapacityArgs::default()
        };
        let c = args.resolve().unwrap();
        assert_eq!((c.cpu_slots, c.max_in_flight), (3, 70));
        assert_eq!(c.stage_limits, BTreeMap::from([("generate_http".into(), 8), ("upscale".into(), 2)]));
        assert_eq!(c.http_per_stage, BTreeMap::from([("generate_http".into(), 16)]));
        assert_eq!(c.http_default, Some(32));
        assert_eq!(c.park_policy, ParkPolicy::ReleaseWhileWaiting);
        let s = c.scheduler();
        assert_eq!((s.max_workers, s.per_stage["upscale"].limit), (70, Some(2)));
    }

    #[test]
    fn bad_settings_are_one_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "cpu_slot = 3\n").unwrap();
        let e = CapacityArgs { config: Some(path), ..CapacityArgs::default() }.resolve().unwrap_err();
        assert!(format!("{e:#}").contains("cpu_slot"), "{e:#}");
        let e = CapacityArgs { stage_limits: vec!["upscale=0".into()], ..CapacityArgs::default() }.resolve();
        assert!(format!("{:#}", e.unwrap_err()).contains("at least 1"));
        let e = CapacityArgs { stage_limits: vec!["upscale".into()], ..CapacityArgs::default() }.resolve();
        assert!(format!("{:#}", e.unwrap_err()).contains("STAGE=N"));
    }
}
