//! The content-addressed result cache: a stage's outputs, keyed by what
//! determines them — the component's digest, the params (canonical JSON)
//! and the digests of the input artifacts (with their names and media
//! types, which stages may read). The same key means the same work, so the
//! stored outputs are reused and the step is reported as a cache hit.
//!
//! On one machine ([`ResultCache::new`]): `<root>/blobs/..` (a
//! [`BlobStore`]) for artifact bytes and `<root>/results/<key>.json` for the
//! manifest naming them. In a cluster ([`ResultCache::shared`]): the
//! cluster's blob store, and manifests in a [`ManifestStore`] every worker
//! reaches (Redis), so a result any worker computed answers every worker.
//! Manifests are written after their blobs, atomically, so a crash leaves
//! either a whole entry or none.

use crate::blobs::{sha256_hex, BlobStore};
use anyhow::Context;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use stagecraft_runtime::Artifact;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// A stored result, as the manifest records it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    stage: String,
    version: String,
    digest: String,
    metadata: Value,
    artifacts: Vec<StoredArtifact>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredArtifact {
    name: String,
    media_type: String,
    sha256: String,
}

/// A result read back from the cache.
#[derive(Debug, Clone)]
pub struct CachedResult {
    pub version: String,
    pub metadata: Value,
    pub artifacts: Vec<Arc<Artifact>>,
    /// The sha256 of each artifact, in order (checked on the way in).
    pub digests: Vec<String>,
}

/// Where manifests are kept when they are not in a local folder: a store
/// every worker shares (the cluster's Redis). A manifest is small JSON.
pub trait ManifestStore: Send + Sync {
    /// The manifest under `key`, if there is one.
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, anyhow::Result<Option<String>>>;
    /// Keeps `manifest` under `key` (replacing any).
    fn put<'a>(&'a self, key: &'a str, manifest: String) -> BoxFuture<'a, anyhow::Result<()>>;
}

#[derive(Clone)]
enum Manifests {
    Folder(PathBuf),
    Shared(Arc<dyn ManifestStore>),
}

impl std::fmt::Debug for Manifests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Manifests::Folder(path) => f.debug_tuple("Folder").field(path).finish(),
            Manifests::Shared(_) => f.write_str("Shared"),
        }
    }
}

/// Results by key.
#[derive(Debug, Clone)]
pub struct ResultCache {
    blobs: BlobStore,
    manifests: Manifests,
}

impl ResultCache {
    /// A cache rooted at `root` on this machine (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self { blobs: BlobStore::new(root.join("blobs")), manifests: Manifests::Folder(root.join("results")) }
    }

    /// A cache shared by a cluster: artifacts in `blobs`, manifests in `manifests`.
    pub fn shared(blobs: BlobStore, manifests: Arc<dyn ManifestStore>) -> Self {
        Self { blobs, manifests: Manifests::Shared(manifests) }
    }

    /// The blob store holding the artifacts.
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// The key of running the component `digest` with `params` on `inputs`.
    /// Synchronous invocations in the server key their in-memory cache the
    /// same way.
    pub fn key<A: std::borrow::Borrow<Artifact>>(
        component_digest: &str,
        params: &Value,
        inputs: impl IntoIterator<Item = A>,
    ) -> String {
        let mut h = Sha256::new();
        h.update(b"stagecraft-result-v1\0");
        h.update(component_digest.as_bytes());
        h.update(b"\0");
        h.update(canonical_json(params).as_bytes());
        for input in inputs {
            let input = input.borrow();
            h.update(b"\0");
            h.update(input.name.as_bytes());
            h.update(b"\0");
            h.update(input.media_type.as_bytes());
            h.update(b"\0");
            h.update(sha256_hex(&input.data).as_bytes());
        }
        hex::encode(h.finalize())
    }

    /// The stored result for `key`, if there is a whole one.
    pub async fn get(&self, key: &str) -> anyhow::Result<Option<CachedResult>> {
        let text = match &self.manifests {
            Manifests::Folder(folder) => {
                let path = folder.join(format!("{key}.json"));
                match std::fs::read_to_string(&path) {
                    Ok(t) => t,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
                }
            }
            Manifests::Shared(store) => match store.get(key).await? {
                Some(text) => text,
                None => return Ok(None),
            },
        };
        let manifest: Manifest = match serde_json::from_str(&text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(key, error = %e, "unreadable cache manifest; ignoring it");
                return Ok(None);
            }
        };
        let mut artifacts = Vec::with_capacity(manifest.artifacts.len());
        let mut digests = Vec::with_capacity(manifest.artifacts.len());
        for a in manifest.artifacts {
            // A missing or corrupt blob makes the entry a miss: it is recomputed.
            let Some(data) = self.blobs.get(&a.sha256).await? else { return Ok(None) };
            artifacts.push(Arc::new(Artifact::new(a.name, a.media_type, data)));
            digests.push(a.sha256);
        }
        Ok(Some(CachedResult { version: manifest.version, metadata: manifest.metadata, artifacts, digests }))
    }

    /// Stores a result under `key`: blobs first, then the manifest. Returns
    /// the artifacts' digests, in order.
    pub async fn put(
        &self,
        key: &str,
        stage: &str,
        version: &str,
        component_digest: &str,
        metadata: &Value,
        artifacts: &[Arc<Artifact>],
    ) -> anyhow::Result<Vec<String>> {
        let mut stored = Vec::with_capacity(artifacts.len());
        for a in artifacts {
            let sha256 = self.blobs.put(&a.data).await?;
            stored.push(StoredArtifact { name: a.name.clone(), media_type: a.media_type.clone(), sha256 });
        }
        let digests = stored.iter().map(|a| a.sha256.clone()).collect();
        let manifest = Manifest {
            stage: stage.to_owned(),
            version: version.to_owned(),
            digest: component_digest.to_owned(),
            metadata: metadata.clone(),
            artifacts: stored,
        };
        match &self.manifests {
            Manifests::Folder(folder) => {
                std::fs::create_dir_all(folder).with_context(|| format!("creating {}", folder.display()))?;
                let mut tmp = tempfile::NamedTempFile::new_in(folder).context("creating a temporary manifest")?;
                serde_json::to_writer(&mut tmp, &manifest).context("writing a cache manifest")?;
                tmp.flush()?;
                let path = folder.join(format!("{key}.json"));
                tmp.persist(&path).map_err(|e| e.error).with_context(|| format!("storing {}", path.display()))?;
            }
            Manifests::Shared(store) => store.put(key, serde_json::to_string(&manifest)?).await?,
        }
        Ok(digests)
    }
}

/// JSON with object keys sorted at every level, so that `{a,b}` and `{b,a}`
/// give the same key whatever map type parsed them.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(entries.into_iter().map(|(k, v)| (k.clone(), sorted(v))).collect())
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn art(name: &str, data: &[u8]) -> Arc<Artifact> {
        Arc::new(Artifact::new(name, "image/png", data.to_vec()))
    }

    #[test]
    fn key_depends_on_component_params_and_inputs_but_not_key_order() {
        let inputs = [art("a.png", b"1")];
        let k = ResultCache::key("d1", &json!({"x": 1, "y": [1, {"b": 2, "a": 1}]}), inputs.iter().map(Arc::as_ref));
        assert_eq!(
            k,
            ResultCache::key("d1", &json!({"y": [1, {"a": 1, "b": 2}], "x": 1}), inputs.iter().map(Arc::as_ref))
        );
        assert_ne!(
            k,
            ResultCache::key("d2", &json!({"x": 1, "y": [1, {"a": 1, "b": 2}]}), inputs.iter().map(Arc::as_ref))
        );
        assert_ne!(
            k,
            ResultCache::key("d1", &json!({"x": 2, "y": [1, {"a": 1, "b": 2}]}), inputs.iter().map(Arc::as_ref))
        );
        assert_ne!(k, ResultCache::key("d1", &json!({"x": 1, "y": [1, {"a": 1, "b": 2}]}), [art("a.png", b"2")]));
        assert_ne!(k, ResultCache::key("d1", &json!({"x": 1, "y": [1, {"a": 1, "b": 2}]}), [art("b.png", b"1")]));
    }

    #[tokio::test]
    async fn put_then_get_and_a_lost_blob_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ResultCache::new(dir.path());
        let out = vec![art("out.png", b"pixels"), art("meta.json", b"{}")];
        assert!(cache.get("k").await.unwrap().is_none());
        let digests = cache.put("k", "upscale", "1.0.0", "d1", &json!({"w": 2}), &out).await.unwrap();
        assert_eq!(digests, vec![sha256_hex(b"pixels"), sha256_hex(b"{}")]);
        let hit = cache.get("k").await.unwrap().expect("stored");
        assert_eq!(hit.digests, digests);
        assert_eq!(hit.version, "1.0.0");
        assert_eq!(hit.metadata, json!({"w": 2}));
        assert_eq!(hit.artifacts, out);
        std::fs::remove_file(cache.blobs().path(&sha256_hex(b"pixels")).unwrap()).unwrap();
        assert!(cache.get("k").await.unwrap().is_none());
    }
}
