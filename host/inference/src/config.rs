//! A model's `config.json`: what the repository promises about a model
//! (its tensors, batching and instances), parsed and checked.
//!
//! ```json
//! { "name": "sr2x", "max_batch": 8, "instances": 1, "batch_delay_ms": 2,
//!   "inputs":  [{ "name": "image", "type": "fp32", "shape": [1, -1, -1] }],
//!   "outputs": [{ "name": "image", "type": "fp32", "shape": [1, -1, -1] }] }
//! ```
//!
//! Shapes follow Triton's rule: they describe ONE item, without the batch
//! dimension, which is always the leading one of the ONNX tensors. A shape
//! that also lists the batch dimension (`["N", 1, -1, -1]`) is accepted: the
//! engine tells the two apart by the rank `model.onnx` declares. A dimension
//! is a positive size, or `-1`, `null` or a name (`"H"`) for "any size".
//! Optional keys: `max_queue` (rows waiting before calls get `unavailable`,
//! default 64 x `max_batch`), `timeout_ms` (queue time plus execution,
//! default 30000), `preferred_batch_size` (Triton's: batch sizes the
//! batcher sends at once, without waiting out the delay, e.g. `[8, 16]`)
//! and `cpu_threads` (ONNX Runtime intra-op threads per instance; default
//! the host's CPUs / `instances`). Triton's spellings `max_batch_size`,
//! `max_queue_delay_microseconds`, `dims`, `data_type` and `TYPE_FP32` are
//! understood too.

use crate::tensor::DType;
use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// One declared input or output. `dims` as written (the engine decides
/// whether the first is the batch dimension); `None` is a dynamic size.
#[derive(Debug, Clone, PartialEq)]
pub struct IoSpec {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<Option<usize>>,
}

/// A parsed, checked `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    pub name: String,
    /// Most rows one batch may hold (1: no batching).
    pub max_batch: usize,
    /// Worker threads, each running one batch at a time.
    pub instances: usize,
    /// How long the oldest queued call waits for others to join its batch.
    pub batch_delay: Duration,
    /// Batch sizes sent as soon as the queue holds them (ascending, each at
    /// most `max_batch`); empty: only a full `max_batch` ends the wait early.
    pub preferred_batch: Vec<usize>,
    /// ONNX Runtime intra-op threads per instance, when set.
    pub cpu_threads: Option<usize>,
    /// Rows allowed to wait; more get `unavailable`.
    pub max_queue: usize,
    /// Deadline of one call, queue time and execution together.
    pub timeout: Duration,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: Option<String>,
    #[serde(alias = "max_batch_size")]
    max_batch: Option<usize>,
    instances: Option<usize>,
    #[serde(alias = "max_queue_delay_ms")]
    batch_delay_ms: Option<f64>,
    max_queue_delay_microseconds: Option<f64>,
    #[serde(alias = "preferred_batch_sizes")]
    preferred_batch_size: Option<Vec<usize>>,
    cpu_threads: Option<usize>,
    max_queue: Option<usize>,
    timeout_ms: Option<u64>,
    inputs: Vec<RawIo>,
    outputs: Vec<RawIo>,
    /// Free text for people; ignored.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIo {
    name: String,
    #[serde(rename = "type", alias = "dtype", alias = "data_type")]
    ty: String,
    #[serde(alias = "dims")]
    shape: Vec<serde_json::Value>,
}

impl ModelConfig {
    /// Reads and checks `<dir>/config.json`; `folder` is the model's folder
    /// name, which the `name` key (optional) must repeat.
    pub fn load(path: &Path, folder: &str) -> anyhow::Result<ModelConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text, folder).with_context(|| format!("bad {}", path.display()))
    }

    pub fn parse(text: &str, folder: &str) -> anyhow::Result<ModelConfig> {
        let raw: RawConfig = serde_json::from_str(text).context("not a valid model config")?;
        let name = raw.name.unwrap_or_else(|| folder.to_owned());
        if name != folder {
            bail!(
                "`name` is '{name}' but the model's folder is '{folder}': they must agree, callers use the folder name"
            );
        }
        let max_batch = raw.max_batch.unwrap_or(1);
        let instances = raw.instances.unwrap_or(1);
        if max_batch == 0 {
            bail!("`max_batch` must be at least 1 (1 disables batching)");
        }
        if instances == 0 || instances > 64 {
            bail!("`instances` must be between 1 and 64, got {instances}");
        }
        let delay_ms = match (raw.batch_delay_ms, raw.max_queue_delay_microseconds) {
            (Some(_), Some(_)) => bail!("give `batch_delay_ms` or `max_queue_delay_microseconds`, not both"),
            (Some(ms), None) => ms,
            (None, Some(us)) => us / 1e3,
            (None, None) => 0.0,
        };
        let mut preferred_batch = raw.preferred_batch_size.unwrap_or_default();
        preferred_batch.sort_unstable();
        preferred_batch.dedup();
        if let Some(bad) = preferred_batch.iter().find(|&&b| b == 0 || b > max_batch) {
            bail!("`preferred_batch_size` {bad} is not between 1 and max_batch ({max_batch})");
        }
        if raw.cpu_threads == Some(0) {
            bail!("`cpu_threads` must be at least 1");
        }
        if !(0.0..=10_000.0).contains(&delay_ms) {
            bail!("`batch_delay_ms` must be between 0 and 10000, got {delay_ms}");
        }
        let timeout_ms = raw.timeout_ms.unwrap_or(30_000);
        if timeout_ms == 0 {
            bail!("`timeout_ms` must be positive");
        }
        let inputs = io_specs(raw.inputs, "inputs")?;
        let outputs = io_specs(raw.outputs, "outputs")?;
        Ok(ModelConfig {
            name,
            max_batch,
            instances,
            batch_delay: Duration::from_secs_f64(delay_ms / 1e3),
            preferred_batch,
            cpu_threads: raw.cpu_threads,
            max_queue: raw.max_queue.unwrap_or(64 * max_batch).max(max_batch),
            timeout: Duration::from_millis(timeout_ms),
            inputs,
            outputs,
        })
    }
}

fn io_specs(raw: Vec<RawIo>, what: &str) -> anyhow::Result<Vec<IoSpec>> {
    if raw.is_empty() {
        bail!("`{what}` is empty: a model needs at least one");
    }
    let mut specs: Vec<IoSpec> = Vec::with_capacity(raw.len());
    for io in raw {
        if specs.iter().any(|s| s.name == io.name) {
            bail!("`{what}` names '{}' twice", io.name);
        }
        let dtype = DType::parse(&io.ty).with_context(|| {
            format!("{what} '{}': unknown type '{}' (fp32, u8, i32, i64, fp16, bf16)", io.name, io.ty)
        })?;
        let dims = io
            .shape
            .iter()
            .map(|d| match d {
                serde_json::Value::Null | serde_json::Value::String(_) => Ok(None),
                serde_json::Value::Number(n) if n.as_i64() == Some(-1) => Ok(None),
                serde_json::Value::Number(n) => match n.as_u64() {
                    Some(v) if v > 0 => Ok(Some(v as usize)),
                    _ => bail!("{what} '{}': dimension {n} is neither a positive size nor -1", io.name),
                },
                other => bail!("{what} '{}': dimension {other} is neither a size, -1, null nor a name", io.name),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        specs.push(IoSpec { name: io.name, dtype, dims });
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_triton_spellings_and_defaults() {
        let c = ModelConfig::parse(
            r#"{"max_batch_size": 4, "inputs": [{"name": "x", "data_type": "TYPE_FP32", "dims": [3, -1, "W"]}],
                "outputs": [{"name": "y", "type": "fp32", "shape": [3]}]}"#,
            "m",
        )
        .unwrap();
        assert_eq!(c.name, "m");
        assert_eq!(c.max_batch, 4);
        assert_eq!(c.instances, 1);
        assert_eq!(c.max_queue, 256);
        assert_eq!(c.inputs[0].dims, vec![Some(3), None, None]);
    }

    #[test]
    fn reads_preferred_batch_sizes_and_the_triton_delay() {
        let io = r#""inputs": [{"name": "x", "type": "fp32", "shape": [3]}], "outputs": [{"name": "y", "type": "fp32", "shape": [3]}]"#;
        let c = ModelConfig::parse(
            &format!(
                r#"{{"max_batch": 16, "preferred_batch_size": [16, 4, 8], "max_queue_delay_microseconds": 500, {io}}}"#
            ),
            "m",
        )
        .unwrap();
        assert_eq!(c.preferred_batch, vec![4, 8, 16]);
        assert_eq!(c.batch_delay, Duration::from_micros(500));
        let e = ModelConfig::parse(&format!(r#"{{"max_batch": 4, "preferred_batch_size": [8], {io}}}"#), "m");
        assert!(format!("{:#}", e.unwrap_err()).contains("not between 1 and max_batch (4)"));
    }

    #[test]
    fn refuses_a_name_that_is_not_the_folder() {
        let e = ModelConfig::parse(r#"{"name": "a", "inputs": [], "outputs": []}"#, "b").unwrap_err();
        assert!(format!("{e:#}").contains("folder is 'b'"), "{e:#}");
    }

    #[test]
    fn refuses_unknown_types_and_zero_dims() {
        let bad_type = r#"{"inputs": [{"name": "x", "type": "complex64", "shape": [1]}], "outputs": [{"name": "y", "type": "fp32", "shape": [1]}]}"#;
        assert!(format!("{:#}", ModelConfig::parse(bad_type, "m").unwrap_err()).contains("unknown type 'complex64'"));
        let zero = r#"{"inputs": [{"name": "x", "type": "fp32", "shape": [0]}], "outputs": [{"name": "y", "type": "fp32", "shape": [1]}]}"#;
        assert!(format!("{:#}", ModelConfig::parse(zero, "m").unwrap_err()).contains("neither a positive size"));
    }
}
