//! Options shared by every subcommand that needs a runtime, and building it.

use crate::capacity::CapacityArgs;
use anyhow::Context;
use stagecraft_inference::Models;
use stagecraft_runtime::{Artifact, InvocationLimits, Runtime, RuntimeConfig};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(clap::Args, Clone)]
pub struct HostArgs {
    /// Folder of stage components (*.wasm); several separated by `:` (for
    /// example the bundled stages and your own), a later folder's version
    /// of a stage winning.
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
    /// Lets a stage make outgoing HTTP requests to these hosts:
    /// `STAGE=host[:port],host...` (repeatable). Its API key, if any, is read
    /// from `$STAGECRAFT_HTTP_<STAGE>_KEY` and sent as a bearer token.
    #[arg(long = "http-grant", global = true, value_name = "STAGE=HOSTS")]
    pub http_grants: Vec<String>,
    /// Minimum time between two outgoing HTTP requests of one stage, in milliseconds.
    #[arg(long, global = true, default_value_t = 0)]
    pub http_rate_limit_ms: u64,
    /// Where the host's segmentation runs: auto (CUDA when the driver and
    /// NVRTC load and the kernels compile, else the CPU), cpu, or cuda (an
    /// error without CUDA).
    #[arg(long, global = true, env = "STAGECRAFT_DEVICE", default_value = "auto")]
    pub device: stagecraft_accel::Device,
    /// Model repository for the `inference` import: one folder per model
    /// with `model.onnx` and `config.json`. Default: the `models/` folder of
    /// the source tree this binary was built in, when there is one.
    #[arg(long, global = true, env = "STAGECRAFT_MODELS")]
    pub models: Option<PathBuf>,
    /// Whether a stage's stored results answer repeated calls:
    /// `STAGE=auto|always|never|seeded` (repeatable). auto (the default)
    /// reuses only stages that are pure functions (no outgoing HTTP, not
    /// declared non-deterministic); seeded reuses calls with a `seed`.
    #[arg(long = "reuse", global = true, value_name = "STAGE=RULE")]
    pub reuse: Vec<String>,
    /// ONNX Runtime library (libonnxruntime.so) the models run on. Default:
    /// `$ORT_DYLIB_PATH`, else the `onnxruntime` wheel of python3
    /// (scripts/setup-ort); without one, models run on tract.
    #[arg(long = "ort-lib", global = true, value_name = "PATH")]
    pub ort_lib: Option<PathBuf>,
    #[command(flatten)]
    pub capacity: CapacityArgs,
}

impl HostArgs {
    /// The operators' reuse rules from `--reuse`.
    pub fn reuse(&self) -> anyhow::Result<stagecraft_orchestrator::ReusePolicy> {
        let mut policy = stagecraft_orchestrator::ReusePolicy::default();
        for rule in &self.reuse {
            let (stage, rule) = rule.split_once('=').with_context(|| format!("--reuse {rule}: expected STAGE=RULE"))?;
            let rule = rule.parse().map_err(|e: String| anyhow::anyhow!("--reuse {stage}={rule}: {e}"))?;
            policy = policy.with_stage(stage, rule);
        }
        Ok(policy)
    }

    /// The plugins folders `--plugins` names, in order.
    pub fn plugin_dirs(&self) -> Vec<PathBuf> {
        std::env::split_paths(&self.plugins).collect()
    }

    /// The first plugins folder: where the benchmarks look for their stages.
    pub fn first_plugin_dir(&self) -> PathBuf {
        self.plugin_dirs().into_iter().next().unwrap_or_default()
    }

    /// The folder for caches and scratch space: `--home`, else
    /// `$STAGECRAFT_HOME`, else `<tmp>/stagecraft`.
    pub fn home(&self) -> PathBuf {
        self.home.clone().unwrap_or_else(|| std::env::temp_dir().join("stagecraft"))
    }

    pub fn config(&self) -> RuntimeConfig {
        let mut config = RuntimeConfig::default();
        if let Some(home) = &self.home {
            config.cache_dir = Some(home.join("cache"));
            config.scratch_dir = home.join("scratch");
        }
        config.limits = InvocationLimits {
            memory_bytes: self.memory_mb << 20,
            timeout: Duration::from_secs_f64(self.timeout.max(0.001)),
        };
        config.max_memory_bytes = config.max_memory_bytes.max(config.limits.memory_bytes);
        config
    }

    /// Resolves `--device` once for the process (logged); `cuda` on a
    /// machine without usable CUDA is an error.
    pub fn device(&self) -> anyhow::Result<&'static stagecraft_accel::DeviceInfo> {
        stagecraft_accel::device::request(self.device);
        stagecraft_accel::device::current().map_err(|e| anyhow::anyhow!("--device {}: {e}", self.device))
    }

    /// The model repository folder: `--models`, else `<repo>/models` of the
    /// checkout whose `target/` holds this binary, else none.
    pub fn models_dir(&self) -> Option<PathBuf> {
        if let Some(dir) = &self.models {
            return Some(dir.clone());
        }
        let exe = std::env::current_exe().ok()?;
        exe.ancestors().filter(|d| d.join("Cargo.toml").is_file()).map(|d| d.join("models")).find(|m| m.is_dir())
    }

    /// Loads the model repository, if there is one; models that fail to
    /// load are reported on stderr, the rest are usable.
    pub fn models(&self) -> anyhow::Result<Option<Arc<Models>>> {
        let Some(dir) = self.models_dir() else { return Ok(None) };
        // The device choice decides whether models may run on CUDA; a
        // `cuda` that cannot be had leaves them on tract with the reason.
        stagecraft_accel::device::request(self.device);
        if let Some(lib) = &self.ort_lib {
            stagecraft_inference::ort_engine::set_library(lib);
        }
        let (models, report) = Models::open(&dir).context("--models")?;
        for (name, why) in &report.failed {
            eprintln!("warning: model {name} not loaded: {why}");
        }
        Ok(Some(models))
    }

    /// Builds the runtime and loads the plugins folder. Components that fail
    /// to load are reported on stderr; the rest are usable.
    pub fn runtime(&self) -> anyhow::Result<Runtime> {
        let dirs = self.plugin_dirs();
        if let Some(missing) = dirs.iter().find(|dir| !dir.is_dir()) {
            anyhow::bail!(
                "plugins folder {} does not exist (build the plugins with scripts/build-plugins, or pass --plugins DIR)",
                missing.display()
            );
        }
        self.runtime_from(&dirs, |_| {})
    }

    /// Builds the runtime (its config adjusted by `adjust`) and loads the
    /// components of `dirs`.
    pub fn runtime_from(&self, dirs: &[PathBuf], adjust: impl FnOnce(&mut RuntimeConfig)) -> anyhow::Result<Runtime> {
        self.device()?;
        let mut config = self.config();
        adjust(&mut config);
        for spec in &self.http_grants {
            let delay = Duration::from_millis(self.http_rate_limit_ms);
            let (stage, grant) = stagecraft_runtime::http::parse_grant(spec, delay).context("--http-grant")?;
            config.http.insert(stage, grant);
        }
        self.capacity.resolve()?.apply_to_runtime(&mut config)?;
        config.models = self.models()?;
        let runtime = Runtime::new(config).context("starting the runtime")?;
        for dir in dirs {
            let report = runtime.load_dir(dir);
            for failure in &report.failed {
                eprintln!("warning: {} not loaded: {}", failure.path.display(), failure.reason);
            }
        }
        Ok(runtime)
    }
}

impl HostArgs {
    /// The scheduler configuration from the capacity settings (in-flight
    /// limit, per-stage limits).
    pub fn scheduler(&self) -> anyhow::Result<stagecraft_scheduler::SchedulerConfig> {
        Ok(self.capacity.resolve()?.scheduler())
    }
}

/// Reads input files as artifacts named after the file, with the media
/// type its extension implies.
pub fn read_inputs(paths: &[PathBuf]) -> anyhow::Result<Vec<Artifact>> {
    paths
        .iter()
        .map(|path| {
            let data = std::fs::read(path).with_context(|| format!("cannot read input {}", path.display()))?;
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "input".into());
            Ok(Artifact::new(name.clone(), Artifact::media_type_for(&name), data))
        })
        .collect()
}
