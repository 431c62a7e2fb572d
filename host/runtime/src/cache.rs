//! On-disk cache of compiled components, keyed by the component's content
//! hash and the engine's compatibility hash, so a second start (or a second
//! host process) does not compile again.

use anyhow::Context;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use wasmtime::component::Component;
use wasmtime::Engine;

pub struct CompiledCache {
    dir: Option<PathBuf>,
    /// Changes whenever compiled code would: wasmtime version, target, settings.
    engine_key: String,
}

/// How a component was obtained, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Compiled,
}

/// The sha256 of a component's bytes, hex encoded.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl CompiledCache {
    pub fn new(dir: Option<PathBuf>, engine: &Engine) -> anyhow::Result<Self> {
        if let Some(dir) = &dir {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating the compiled-component cache {}", dir.display()))?;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self { dir, engine_key: format!("{:016x}", hasher.finish()) })
    }

    /// Returns the compiled component for `bytes` (whose sha256 is `digest`),
    /// from the cache when present, else compiling and storing it.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &str,
    ) -> anyhow::Result<(Component, CacheOutcome)> {
        let Some(dir) = &self.dir else {
            return Ok((Component::new(engine, bytes).map_err(anyhow::Error::from)?, CacheOutcome::Compiled));
        };
        let path = dir.join(format!("{digest}-{}.cwasm", self.engine_key));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the name),
            // into a directory only this host writes.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, CacheOutcome::Hit)),
                Err(e) => tracing::warn!(path = %path.display(), "ignoring unusable cache entry: {e:#}"),
            }
        }
        let component = Component::new(engine, bytes).map_err(anyhow::Error::from)?;
        match component.serialize() {
            Ok(compiled) => {
                // Write then rename, so a concurrent reader never sees half a file.
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                if let Err(e) = std::fs::write(&tmp, compiled).and_then(|_| std::fs::rename(&tmp, &path)) {
                    tracing::warn!(path = %path.display(), "cannot write the compiled-component cache: {e}");
                }
            }
            Err(e) => tracing::warn!("cannot serialize a compiled component: {e:#}"),
        }
        Ok((component, CacheOutcome::Compiled))
    }
}
