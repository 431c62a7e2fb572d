//! A content-addressed blob store on disk: every blob lives at
//! `<root>/<first two hex digits>/<sha256 hex>`, written atomically (temp
//! file + rename), so readers never see a partial blob and writing the same
//! content twice is a no-op. The result cache keeps artifacts here; the HTTP
//! service serves them by digest.

use anyhow::Context;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The sha256 of `data`, as lowercase hex: the runtime's component digest,
/// so an artifact and a component are named the same way.
pub use stagecraft_runtime::cache::digest as sha256_hex;

/// Whether `digest` looks like a sha256 hex digest (and so is safe as a file name).
pub fn is_digest(digest: &str) -> bool {
    digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Blobs by sha256.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// A store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Where the blob with this digest lives (whether or not it exists).
    pub fn path(&self, digest: &str) -> PathBuf {
        self.root.join(&digest[..2]).join(digest)
    }

    /// Stores `data` and returns its digest.
    pub fn put(&self, data: &[u8]) -> anyhow::Result<String> {
        let digest = sha256_hex(data);
        self.write(&digest, data)?;
        Ok(digest)
    }

    /// Stores `data` under a digest the caller already has (a step report's
    /// sha256, computed by this process from the same bytes), without
    /// hashing it a second time. The digest is checked only in debug
    /// builds: a mismatch would be a bug in the caller, not untrusted input,
    /// and [`BlobStore::get`] verifies every read, so a blob stored under
    /// a wrong name is never served, only ignored as corrupt.
    pub fn put_known(&self, digest: &str, data: &[u8]) -> anyhow::Result<()> {
        anyhow::ensure!(is_digest(digest), "'{digest}' is not a sha256 digest");
        debug_assert_eq!(sha256_hex(data), digest, "put_known was given the wrong digest");
        self.write(digest, data)
    }

    fn write(&self, digest: &str, data: &[u8]) -> anyhow::Result<()> {
        let path = self.path(digest);
        if path.is_file() {
            // Written again: it is recent for the server's retention sweep,
            // which removes the blobs written longest ago first.
            let _ = std::fs::File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(std::time::SystemTime::now()));
            return Ok(());
        }
        let dir = path.parent().expect("blob paths have a parent");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).context("creating a temporary blob")?;
        tmp.write_all(data).context("writing a blob")?;
        tmp.persist(&path).map_err(|e| e.error).with_context(|| format!("storing {}", path.display()))?;
        Ok(())
    }

    /// The blob's bytes; `Ok(None)` when absent. Verifies the content still
    /// matches its digest, so a corrupted blob is never served.
    pub fn get(&self, digest: &str) -> anyhow::Result<Option<Vec<u8>>> {
        if !is_digest(digest) {
            return Ok(None);
        }
        let path = self.path(digest);
        match std::fs::read(&path) {
            Ok(data) if sha256_hex(&data) == digest => Ok(Some(data)),
            Ok(_) => {
                tracing::warn!(path = %path.display(), "blob does not match its digest; ignoring it");
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The store's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_then_get_round_trips_and_rejects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path());
        let digest = store.put(b"hello").unwrap();
        assert_eq!(digest, sha256_hex(b"hello"));
        assert_eq!(store.put(b"hello").unwrap(), digest);
        assert_eq!(store.get(&digest).unwrap().as_deref(), Some(&b"hello"[..]));
        std::fs::write(store.path(&digest), b"tampered").unwrap();
        assert_eq!(store.get(&digest).unwrap(), None);
        assert_eq!(store.get("../../etc/passwd").unwrap(), None);
    }

    #[test]
    fn put_known_stores_under_the_given_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path());
        let digest = sha256_hex(b"known");
        store.put_known(&digest, b"known").unwrap();
        assert_eq!(store.get(&digest).unwrap().as_deref(), Some(&b"known"[..]));
        assert!(store.put_known("not-a-digest", b"known").is_err());
    }
}
