//! A pipeline job, run the one way the embedded server and a cluster worker
//! both run it: inputs by digest from the blob store, the pipeline loaded
//! against this host's stages, the run with an observer, every artifact
//! put back into the store and listed by digest in the report, and the
//! run's status mapped to the job's final state.
//!
//! What differs between the two callers stays with them: the server also
//! records each artifact's name and media type in SQLite (an
//! [`ArtifactSink`] of its own) and counts cache hits; a worker only
//! stores blobs.

use crate::{BlobStore, Orchestrator, RunObserver};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use stagecraft_pipeline::{RunInput, RunOptions, RunStatus};
use stagecraft_runtime::Artifact;
use std::sync::Arc;

/// What a job runs: the pipeline's source, its text input and its input
/// files by digest (already in the blob store). It is also the payload a
/// job carries through the cluster's queue, as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    /// The pipeline, YAML or JSON.
    pub pipeline: String,
    /// The name its diagnostics use.
    pub file: String,
    /// Text input, `{{input}}` in params.
    pub input: Option<String>,
    /// Input files, in the blob store.
    pub inputs: Vec<JobInput>,
}

/// An input file of a job, stored in the blob store under its sha256.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JobInput {
    /// Its file name.
    pub name: String,
    /// Its media type.
    pub media_type: String,
    /// Its digest in the blob store.
    pub sha256: String,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobEnd {
    /// Every step succeeded (or was skipped as its pipeline says).
    Succeeded,
    /// A step failed or timed out, or the job could not start.
    Failed,
    /// It was cancelled.
    Cancelled,
}

/// A job's end: its state, its report (artifacts linked by digest) and why
/// it did not succeed.
#[derive(Debug, Clone)]
pub struct JobResult {
    /// The final state.
    pub end: JobEnd,
    /// The run report; None when the job never ran.
    pub report: Option<Value>,
    /// Why it did not succeed.
    pub error: Option<String>,
}

impl JobResult {
    fn failed(error: String) -> Self {
        Self { end: JobEnd::Failed, report: None, error: Some(error) }
    }
}

/// An artifact to keep, with its digest when the caller already has it.
pub type ArtifactToStore<'a> = (&'a Artifact, Option<&'a str>);

/// Where a job's artifacts are kept.
pub trait ArtifactSink: Send + Sync {
    /// Keeps each artifact (under the digest given with it when the caller
    /// already has one) and returns the digests, in order.
    fn store<'a>(&'a self, artifacts: Vec<ArtifactToStore<'a>>) -> BoxFuture<'a, anyhow::Result<Vec<String>>>;
}

impl ArtifactSink for BlobStore {
    fn store<'a>(&'a self, artifacts: Vec<ArtifactToStore<'a>>) -> BoxFuture<'a, anyhow::Result<Vec<String>>> {
        Box::pin(async move {
            let mut digests = Vec::with_capacity(artifacts.len());
            for (artifact, known) in artifacts {
                match known {
                    Some(digest) => {
                        self.put_known(digest, &artifact.data).await?;
                        digests.push(digest.to_owned());
                    }
                    None => digests.push(self.put(&artifact.data).await?),
                }
            }
            Ok(digests)
        })
    }
}

/// How an artifact is listed in a report: a link to `GET /v1/artifacts/{digest}`,
/// which every API process of a deployment serves from the same store.
pub fn artifact_link(name: &str, media_type: &str, bytes: usize, digest: &str) -> Value {
    json!({
        "name": name,
        "media_type": media_type,
        "bytes": bytes,
        "sha256": digest,
        "url": format!("/v1/artifacts/{digest}"),
    })
}

impl Orchestrator {
    /// Runs the job `spec` (see the [module](self)): inputs from `blobs`,
    /// artifacts into `sink`. `options` carries the run id and the cancel
    /// token; `observer` receives the run's events.
    pub async fn run_job(
        &self,
        blobs: &BlobStore,
        sink: &dyn ArtifactSink,
        spec: &JobSpec,
        options: RunOptions,
        observer: Option<RunObserver>,
    ) -> JobResult {
        let mut files = Vec::with_capacity(spec.inputs.len());
        for input in &spec.inputs {
            match blobs.get(&input.sha256).await {
                Ok(Some(data)) => files.push(Arc::new(Artifact::new(&input.name, &input.media_type, data))),
                Ok(None) => return JobResult::failed(format!("input {} is missing from the blob store", input.name)),
                Err(e) => return JobResult::failed(format!("reading input {}: {e:#}", input.name)),
            }
        }
        let pipeline = match self.load_pipeline(&spec.pipeline, &spec.file) {
            Ok(p) => p,
            Err(d) => return JobResult::failed(format!("the pipeline is not valid here: {d}")),
        };
        let input = RunInput { text: spec.input.clone(), files };
        let outcome = self.run(&pipeline, input, options, observer).await;
        let mut report = outcome.report.to_json();
        if let Some(steps) = report["steps"].as_array_mut() {
            for step in steps {
                let name = step["name"].as_str().unwrap_or_default().to_owned();
                let Some(output) = outcome.outputs.get(&name) else { continue };
                // The runner already hashed each artifact (its sha256 is in
                // the step's report): store under it instead of hashing again.
                let artifacts: Vec<(&Artifact, Option<&str>)> = output
                    .artifacts
                    .iter()
                    .enumerate()
                    .map(|(i, a)| (&**a, step["execution"]["artifacts"][i]["sha256"].as_str()))
                    .collect();
                let digests = match sink.store(artifacts).await {
                    Ok(d) => d,
                    Err(e) => {
                        let error = Some(format!("storing an artifact: {e:#}"));
                        return JobResult { end: JobEnd::Failed, report: Some(report.clone()), error };
                    }
                };
                let links: Vec<Value> = output
                    .artifacts
                    .iter()
                    .zip(&digests)
                    .map(|(a, digest)| artifact_link(&a.name, &a.media_type, a.data.len(), digest))
                    .collect();
                step["artifacts"] = Value::Array(links);
                step["metadata"] = output.metadata.clone();
            }
        }
        let end = match outcome.report.status {
            RunStatus::Succeeded => JobEnd::Succeeded,
            RunStatus::Cancelled => JobEnd::Cancelled,
            RunStatus::Failed | RunStatus::TimedOut => JobEnd::Failed,
        };
        let error = (end != JobEnd::Succeeded).then(|| {
            let status = serde_json::to_value(outcome.report.status).ok();
            format!("the run ended {}", status.as_ref().and_then(Value::as_str).unwrap_or_default())
        });
        JobResult { end, report: Some(report), error }
    }
}
