//! Writing a finished run to a folder: each step's artifacts under
//! `<out>/<step>/<artifact name>` and the JSON report as
//! `<out>/report.json`, with each artifact's path beside its digest.
//!
//! Artifact names arrive normalised by the runtime (plain, bounded, unique
//! within a step: `stagecraft_runtime::output`); [`safe_file_name`] still
//! guards step names and artifacts that came from elsewhere. An artifact
//! that cannot be written is noted in the report (`"write_error"`) and the
//! rest are written regardless: `report.json` is always written.

use crate::runner::SharedArtifact;
use anyhow::Context;
use serde_json::Value;
use stagecraft_pipeline::RunOutcome;
use std::path::{Path, PathBuf};

/// Artifact and step names come from plugins and pipeline files: keep a
/// plain file name (no separators, no leading dots, portable characters).
pub fn safe_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let cleaned: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect();
    match cleaned.trim_start_matches('.') {
        "" => "artifact".to_owned(),
        s => s.to_owned(),
    }
}

/// Writes the artifacts and `report.json`; returns the report as written.
pub fn write_run(out: &Path, outcome: &RunOutcome<SharedArtifact>) -> anyhow::Result<Value> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut report = outcome.report.to_json();
    let steps = report["steps"].as_array_mut().context("a report lists its steps")?;
    for step in steps {
        let name = step["name"].as_str().unwrap_or_default().to_owned();
        let Some(output) = outcome.outputs.get(&name) else { continue };
        let dir = out.join(safe_file_name(&name));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut written: Vec<Result<PathBuf, String>> = Vec::with_capacity(output.artifacts.len());
        let mut used = std::collections::HashSet::new();
        for artifact in &output.artifacts {
            let mut name = safe_file_name(&artifact.name);
            // Unique already when it came from the runtime; kept so for any other source.
            while !used.insert(name.to_ascii_lowercase()) {
                name = format!("_{name}");
            }
            let path = dir.join(name);
            written.push(match std::fs::write(&path, &artifact.data) {
                Ok(()) => Ok(path),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "cannot write an artifact: {e}");
                    Err(format!("cannot write {}: {e}", path.display()))
                }
            });
        }
        if let Some(listed) = step["execution"]["artifacts"].as_array_mut() {
            for (entry, result) in listed.iter_mut().zip(&written) {
                match result {
                    Ok(path) => {
                        let relative = path.strip_prefix(out).unwrap_or(path);
                        entry["path"] = Value::String(relative.display().to_string());
                    }
                    Err(e) => entry["write_error"] = Value::String(e.clone()),
                }
            }
        }
        step["metadata"] = output.metadata.clone();
    }
    let path = out.join("report.json");
    let text = serde_json::to_string_pretty(&report).context("serializing the report")?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::safe_file_name;

    #[test]
    fn names_cannot_escape_the_step_folder() {
        assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(safe_file_name(".."), "artifact");
        assert_eq!(safe_file_name("a\\b.png"), "b.png");
        assert_eq!(safe_file_name("logo.png"), "logo.png");
    }
}
