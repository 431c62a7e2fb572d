//! Uploaded components survive a restart: each upload is kept as
//! `<home>/components/<stage>/<digest>.wasm`, and `<stage>/current` names
//! the version serving now (rollback moves it back, or removes it when the
//! stage goes back to what the plugins folder holds). At start, the
//! current uploads are installed over what the plugins folder loaded.

use anyhow::Context;
use stagecraft_runtime::{Runtime, StageVersion};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

pub struct UploadStore {
    root: PathBuf,
    /// Held across a swap in the runtime and its record on disk, so that
    /// concurrent uploads and rollbacks leave `current` naming the version
    /// the runtime serves (and never race on its temporary file).
    swaps: Mutex<()>,
}

fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("a path with a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

impl UploadStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), swaps: Mutex::default() }
    }

    /// One swap at a time: hold this from changing the runtime's current
    /// version until [`record_upload`](Self::record_upload) or
    /// [`record_rollback`](Self::record_rollback) returns.
    pub fn swap_lock(&self) -> MutexGuard<'_, ()> {
        self.swaps.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn stage_dir(&self, stage: &str) -> PathBuf {
        self.root.join(stage)
    }

    /// Keeps an installed upload and makes it current.
    pub fn record_upload(&self, version: &StageVersion, bytes: &[u8]) -> anyhow::Result<()> {
        let dir = self.stage_dir(&version.info.name);
        write_atomic(&dir.join(format!("{}.wasm", version.digest)), bytes)?;
        write_atomic(&dir.join("current"), version.digest.as_bytes())
    }

    /// After a rollback to `version`: current if it was an upload, else
    /// back to the plugins folder's.
    pub fn record_rollback(&self, version: &StageVersion) -> anyhow::Result<()> {
        let dir = self.stage_dir(&version.info.name);
        if dir.join(format!("{}.wasm", version.digest)).is_file() {
            write_atomic(&dir.join("current"), version.digest.as_bytes())
        } else {
            match std::fs::remove_file(dir.join("current")) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            }
        }
    }

    /// Installs every stage's current upload; returns how many.
    pub fn restore(&self, runtime: &Runtime) -> anyhow::Result<usize> {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return Ok(0) };
        let mut n = 0;
        for entry in entries.filter_map(Result::ok) {
            let dir = entry.path();
            let Ok(digest) = std::fs::read_to_string(dir.join("current")) else { continue };
            let file = dir.join(format!("{}.wasm", digest.trim()));
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            match runtime.install_bytes(&bytes, &file.display().to_string()) {
                Ok(_) => n += 1,
                Err(e) => tracing::warn!(file = %file.display(), "a kept upload no longer installs: {e:#}"),
            }
        }
        Ok(n)
    }
}
