//! Options shared by every subcommand that needs a runtime, and building it.

use anyhow::Context;
use stagecraft_runtime::{Limits, Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Args, Clone)]
pub struct HostArgs {
    /// Folder of stage components (*.wasm).
    #[arg(long, global = true, env = "STAGECRAFT_PLUGINS", default_value = "target/plugins")]
    pub plugins: PathBuf,
    /// Per-invocation deadline, in seconds.
    #[arg(long, global = true, env = "STAGECRAFT_TIMEOUT", default_value_t = 60.0)]
    pub timeout: f64,
    /// Per-instance memory limit, in MiB.
    #[arg(long, global = true, env = "STAGECRAFT_MEMORY_MB", default_value_t = 512)]
    pub memory_mb: u64,
    /// Where compiled components and scratch dirs live.
    #[arg(long, global = true, env = "STAGECRAFT_HOME")]
    pub home: Option<PathBuf>,
}

impl HostArgs {
    pub fn config(&self) -> RuntimeConfig {
        let mut config = RuntimeConfig::default();
        if let Some(home) = &self.home {
            config.cache_dir = Some(home.join("cache"));
            config.scratch_dir = home.join("scratch");
        }
        config.limits = Limits {
            memory_bytes: self.memory_mb << 20,
            timeout: Duration::from_secs_f64(self.timeout.max(0.001)),
        };
        config.max_memory_bytes = config.max_memory_bytes.max(config.limits.memory_bytes);
        config
    }

    /// Builds the runtime and loads the plugins folder. Components that fail
    /// to load are reported on stderr; the rest are usable.
    pub fn runtime(&self) -> anyhow::Result<Runtime> {
        if !self.plugins.is_dir() {
            anyhow::bail!(
                "plugins folder {} does not exist (build the plugins with scripts/build-plugins, or pass --plugins DIR)",
                self.plugins.display()
            );
        }
        let runtime = Runtime::new(self.config()).context("starting the runtime")?;
        let report = runtime.load_dir(&self.plugins);
        for failure in &report.failed {
            eprintln!("warning: {} not loaded: {}", failure.path.display(), failure.reason);
        }
        Ok(runtime)
    }
}
