//! A content-addressed blob store: every blob is named by the sha256 of its
//! bytes, so writing the same content twice is a no-op and a reader can
//! check what it got. Two backends, chosen by a location
//! ([`BlobStore::open`]):
//!
//! * a folder (`/path`, `relative/path` or `file:///path`): each blob at
//!   `<root>/<first two hex digits>/<sha256 hex>`, written atomically (temp
//!   file + rename), so readers never see a partial blob. Local disk, or a
//!   shared folder (NFS, …) every worker mounts. The server's retention
//!   sweep expires these by modification time; file I/O runs on tokio's
//!   blocking threads.
//! * S3 (`s3://bucket/optional/prefix`) through the `object_store` crate:
//!   each blob at the key `<prefix>/<first two hex digits>/<sha256 hex>`,
//!   configured from the standard `AWS_*` variables (`AWS_ENDPOINT_URL`,
//!   `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_ALLOW_HTTP`, …). A single PUT writes an object whole. Nothing
//!   here deletes objects: expiry is the bucket's lifecycle rule.
//!
//! The same rules hold for both:
//!
//! * names that are not sha256 digests (64 lowercase hex digits) are
//!   refused, so a hostile name never becomes a path or a key;
//! * a write is skipped when a blob of the same size is already there
//!   (a blob of another size under that name is corrupt and is replaced);
//! * every [`BlobStore::get`] hashes what it read: a blob that no longer
//!   matches its name is never served, it reads as absent (with a warning);
//! * no read or write is unbounded: blobs above [`BlobStore::max_bytes`]
//!   ([`DEFAULT_MAX_BYTES`] unless set) are refused, and a read stops as
//!   soon as it passes the bound, whatever the object's size claims.
//!
//! The result cache keeps artifacts here; the HTTP service serves them by
//! digest; cluster workers share job inputs and artifacts through one.

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt, PutPayload};
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The sha256 of `data`, as lowercase hex: the runtime's component digest,
/// so an artifact and a component are named the same way.
pub use stagecraft_runtime::cache::digest as sha256_hex;

/// Whether `digest` looks like a sha256 hex digest (and so is safe as a file name).
pub fn is_digest(digest: &str) -> bool {
    digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The largest blob a store takes or serves unless told otherwise: 256 MiB,
/// the runtime's default bound on the bytes one invocation may return
/// ([`Quotas::output_bytes`](stagecraft_runtime::Quotas::output_bytes)), so
/// any artifact a stage can produce with the default quotas fits.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// Why a blob store call failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The name is not a sha256 hex digest.
    #[error("'{0}' is not a sha256 digest (64 lowercase hex digits)")]
    NotADigest(String),
    /// The blob is larger than the store's bound.
    #[error("blob {digest} is {bytes} bytes or more, above the blob store's limit of {max} bytes")]
    TooLarge {
        /// The blob's name (or `(new)` for a blob being hashed).
        digest: String,
        /// Its size, or how far a read got before stopping.
        bytes: u64,
        /// The store's bound.
        max: u64,
    },
    /// The location is not a folder, a `file://` or an `s3://` URL, or the
    /// S3 client cannot be built from it and the configuration.
    #[error("blob store location '{location}': {reason}")]
    Location {
        /// The location as given.
        location: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A folder backend's file operation failed.
    #[error("{action} {}: {source}", .path.display())]
    Io {
        /// What was being done (`reading`, `storing`, …).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// An S3 request failed (after `object_store`'s retries).
    #[error("S3 {action} {key}: {source}")]
    S3 {
        /// What was being done (`get`, `head`, `put`).
        action: &'static str,
        /// The object's key.
        key: String,
        /// The client's error.
        #[source]
        source: object_store::Error,
    },
    /// A blocking task of the folder backend panicked or was cancelled.
    #[error("a blob store task did not finish: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The blob store's `Result`.
pub type BlobResult<T, E = BlobError> = std::result::Result<T, E>;

/// Blobs by sha256, in a folder or an S3 bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BlobStore {
    backend: Backend,
    max_bytes: u64,
}

#[derive(Debug, Clone)]
enum Backend {
    Folder(PathBuf),
    S3(Arc<S3>),
}

#[derive(Debug)]
struct S3 {
    store: AmazonS3,
    bucket: String,
    /// Without leading or trailing `/`; empty for none.
    prefix: String,
}

impl BlobStore {
    /// A folder store rooted at `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { backend: Backend::Folder(root.into()), max_bytes: DEFAULT_MAX_BYTES }
    }

    /// A store at `location`: a folder path, `file:///absolute/path`, or
    /// `s3://bucket/optional/prefix` configured from the process's `AWS_*`
    /// environment variables (`AmazonS3Builder::from_env`).
    pub fn open(location: &str) -> BlobResult<Self> {
        Self::open_configured(location, AmazonS3Builder::from_env)
    }

    /// As [`BlobStore::open`], with these `AWS_*` variables (name, value)
    /// in place of the process's environment: for S3 settings a caller
    /// holds itself (tests, one process reaching two endpoints). Names that
    /// are not S3 settings are ignored.
    pub fn open_with<K: AsRef<str>, V: Into<String>>(
        location: &str,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> BlobResult<Self> {
        Self::open_configured(location, || {
            let mut builder = AmazonS3Builder::new();
            for (name, value) in vars {
                let name = name.as_ref();
                if name.starts_with("AWS_") {
                    if let Ok(key) = name.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
                        builder = builder.with_config(key, value);
                    }
                }
            }
            builder
        })
    }

    /// `configured` is called only for an `s3://` location.
    fn open_configured(location: &str, configured: impl FnOnce() -> AmazonS3Builder) -> BlobResult<Self> {
        let bad = |reason: &str| BlobError::Location { location: location.to_owned(), reason: reason.to_owned() };
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("no bucket (s3://bucket/optional/prefix)"));
            }
            let prefix = prefix.trim_matches('/');
            if !prefix.is_empty() && Key::parse(prefix).is_err() {
                return Err(bad("the prefix is not a valid object key (no empty, '.' or '..' segments)"));
            }
            // object_store signs requests with ring; its HTTP client's TLS is
            // rustls with no provider compiled in: ring is the process's one
            // (unless another part of the process installed its own first).
            let _ = rustls::crypto::ring::default_provider().install_default();
            let store = configured().with_bucket_name(bucket).build().map_err(|e| bad(&e.to_string()))?;
            let s3 = S3 { store, bucket: bucket.to_owned(), prefix: prefix.to_owned() };
            return Ok(Self { backend: Backend::S3(Arc::new(s3)), max_bytes: DEFAULT_MAX_BYTES });
        }
        let root = match location.strip_prefix("file://") {
            Some(path) if path.starts_with('/') => PathBuf::from(path),
            Some(_) => return Err(bad("a file:// URL needs an absolute path (file:///path)")),
            None if location.contains("://") => return Err(bad("not a folder, a file:// or an s3:// URL")),
            None if location.is_empty() => return Err(bad("empty")),
            None => PathBuf::from(location),
        };
        Ok(Self::new(root))
    }

    /// The same store with another bound on a blob's size.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The largest blob stored or served, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The folder backend's root; `None` for S3.
    pub fn root(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Folder(root) => Some(root),
            Backend::S3(_) => None,
        }
    }

    /// Where the folder backend keeps the blob with this digest (whether or
    /// not it exists); `None` for S3 or a name that is not a digest.
    pub fn path(&self, digest: &str) -> Option<PathBuf> {
        match &self.backend {
            Backend::Folder(root) if is_digest(digest) => Some(folder_path(root, digest)),
            _ => None,
        }
    }

    /// The S3 backend's object key for this digest (whether or not it
    /// exists); `None` for a folder or a name that is not a digest.
    pub fn key(&self, digest: &str) -> Option<String> {
        match &self.backend {
            Backend::S3(s3) if is_digest(digest) => Some(s3.key(digest).to_string()),
            _ => None,
        }
    }

    /// Stores `data` and returns its digest. The bytes are copied once
    /// (to the blocking thread that hashes and writes them, or into the
    /// request body).
    pub async fn put(&self, data: &[u8]) -> BlobResult<String> {
        self.check_size("(new)", data.len() as u64)?;
        let data = Bytes::copy_from_slice(data);
        match &self.backend {
            Backend::Folder(root) => {
                let root = root.clone();
                tokio::task::spawn_blocking(move || {
                    let digest = sha256_hex(&data);
                    folder_write(&root, &digest, &data).map(|()| digest)
                })
                .await?
            }
            Backend::S3(s3) => {
                let hashed = data.clone();
                let digest = tokio::task::spawn_blocking(move || sha256_hex(&hashed)).await?;
                s3.write(&digest, data).await?;
                Ok(digest)
            }
        }
    }

    /// Stores `data` under a digest the caller already has (a step report's
    /// sha256, computed by this process from the same bytes), without
    /// hashing it a second time. The digest is checked only in debug
    /// builds: a mismatch would be a bug in the caller, not untrusted input,
    /// and [`BlobStore::get`] verifies every read, so a blob stored under
    /// a wrong name is never served, only ignored as corrupt.
    pub async fn put_known(&self, digest: &str, data: &[u8]) -> BlobResult<()> {
        refuse_non_digest(digest)?;
        self.check_size(digest, data.len() as u64)?;
        debug_assert_eq!(sha256_hex(data), digest, "put_known was given the wrong digest");
        let data = Bytes::copy_from_slice(data);
        match &self.backend {
            Backend::Folder(root) => {
                let (root, digest) = (root.clone(), digest.to_owned());
                tokio::task::spawn_blocking(move || folder_write(&root, &digest, &data)).await?
            }
            Backend::S3(s3) => s3.write(digest, data).await,
        }
    }

    /// The blob's bytes; `Ok(None)` when absent. Verifies the content still
    /// matches its digest, so a corrupted blob is never served: it reads as
    /// absent, with a warning. A name that is not a digest is an error.
    pub async fn get(&self, digest: &str) -> BlobResult<Option<Vec<u8>>> {
        refuse_non_digest(digest)?;
        let max = self.max_bytes;
        let (data, place) = match &self.backend {
            Backend::Folder(root) => {
                let path = folder_path(root, digest);
                let owned = (path.clone(), digest.to_owned());
                let read = tokio::task::spawn_blocking(move || folder_read(&owned.0, &owned.1, max)).await??;
                match read {
                    Some(data) => (data, path.display().to_string()),
                    None => return Ok(None),
                }
            }
            Backend::S3(s3) => match s3.read(digest, max).await? {
                Some(data) => (data, format!("s3://{}/{}", s3.bucket, s3.key(digest))),
                None => return Ok(None),
            },
        };
        let (data, intact) = {
            let digest = digest.to_owned();
            tokio::task::spawn_blocking(move || {
                let intact = sha256_hex(&data) == digest;
                (data, intact)
            })
            .await?
        };
        if intact {
            Ok(Some(data))
        } else {
            tracing::warn!(blob = %place, "blob does not match its digest; ignoring it");
            Ok(None)
        }
    }

    /// Whether a blob of this name is there (without reading or verifying
    /// it: [`BlobStore::get`] may still find it corrupt).
    pub async fn contains(&self, digest: &str) -> BlobResult<bool> {
        refuse_non_digest(digest)?;
        match &self.backend {
            Backend::Folder(root) => {
                let path = folder_path(root, digest);
                Ok(tokio::task::spawn_blocking(move || path.is_file()).await?)
            }
            Backend::S3(s3) => Ok(s3.size(digest).await?.is_some()),
        }
    }

    fn check_size(&self, digest: &str, bytes: u64) -> BlobResult<()> {
        if bytes > self.max_bytes {
            return Err(BlobError::TooLarge { digest: digest.to_owned(), bytes, max: self.max_bytes });
        }
        Ok(())
    }
}

/// The location, as [`BlobStore::open`] takes it.
impl fmt::Display for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.backend {
            Backend::Folder(root) => write!(f, "{}", root.display()),
            Backend::S3(s3) if s3.prefix.is_empty() => write!(f, "s3://{}", s3.bucket),
            Backend::S3(s3) => write!(f, "s3://{}/{}", s3.bucket, s3.prefix),
        }
    }
}

fn refuse_non_digest(digest: &str) -> BlobResult<()> {
    if is_digest(digest) {
        Ok(())
    } else {
        // Bounded in the message: the name may be anything a caller sent.
        Err(BlobError::NotADigest(digest.chars().take(80).collect()))
    }
}

fn folder_path(root: &Path, digest: &str) -> PathBuf {
    root.join(&digest[..2]).join(digest)
}

fn folder_write(root: &Path, digest: &str, data: &[u8]) -> BlobResult<()> {
    let path = folder_path(root, digest);
    if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == data.len() as u64) {
        // Written again: it is recent for the server's retention sweep,
        // which removes the blobs written longest ago first.
        let _ =
            std::fs::File::options().write(true).open(&path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok(());
    }
    fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BlobError {
        let path = path.to_owned();
        move |source| BlobError::Io { action, path, source }
    }
    let dir = path.parent().expect("blob paths have a parent");
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io("creating a temporary blob in", dir))?;
    tmp.write_all(data).map_err(io("writing a temporary blob in", dir))?;
    tmp.persist(&path).map_err(|e| e.error).map_err(io("storing", &path))?;
    Ok(())
}

fn folder_read(path: &Path, digest: &str, max: u64) -> BlobResult<Option<Vec<u8>>> {
    let io = |source| BlobError::Io { action: "reading", path: path.to_owned(), source };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let len = file.metadata().map_err(io)?.len();
    if len > max {
        return Err(BlobError::TooLarge { digest: digest.to_owned(), bytes: len, max });
    }
    // The file may grow after the size check: read at most one byte past the bound.
    let mut data = Vec::with_capacity(len as usize);
    file.take(max + 1).read_to_end(&mut data).map_err(io)?;
    if data.len() as u64 > max {
        return Err(BlobError::TooLarge { digest: digest.to_owned(), bytes: data.len() as u64, max });
    }
    Ok(Some(data))
}

impl S3 {
    fn key(&self, digest: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from_iter([&digest[..2], digest])
        } else {
            Key::from(format!("{}/{}/{digest}", self.prefix, &digest[..2]))
        }
    }

    fn error(&self, action: &'static str, key: &Key) -> impl FnOnce(object_store::Error) -> BlobError {
        let key = key.to_string();
        move |source| BlobError::S3 { action, key, source }
    }

    /// The object's size; `None` when absent.
    async fn size(&self, digest: &str) -> BlobResult<Option<u64>> {
        let key = self.key(digest);
        match self.store.head(&key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("head", &key)(e)),
        }
    }

    async fn write(&self, digest: &str, data: Bytes) -> BlobResult<()> {
        // Content-addressed: an object of the same size is the same blob
        // (or a corrupt one no size check could tell, which `get` refuses).
        if self.size(digest).await? == Some(data.len() as u64) {
            return Ok(());
        }
        let key = self.key(digest);
        self.store.put(&key, PutPayload::from_bytes(data)).await.map_err(self.error("put", &key))?;
        Ok(())
    }

    async fn read(&self, digest: &str, max: u64) -> BlobResult<Option<Vec<u8>>> {
        let key = self.key(digest);
        let got = match self.store.get_opts(&key, GetOptions::default()).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("get", &key)(e)),
        };
        let too_large = |bytes| BlobError::TooLarge { digest: digest.to_owned(), bytes, max };
        if got.meta.size > max {
            return Err(too_large(got.meta.size));
        }
        // Collected by hand, stopping past the bound, rather than trusting
        // the size the server announced.
        let mut data = Vec::with_capacity(got.meta.size as usize);
        let mut body = got.into_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(self.error("get", &key))?;
            if (data.len() + chunk.len()) as u64 > max {
                return Err(too_large((data.len() + chunk.len()) as u64));
            }
            data.extend_from_slice(&chunk);
        }
        Ok(Some(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_then_get_round_trips_and_rejects_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path());
        let digest = store.put(b"hello").await.unwrap();
        assert_eq!(digest, sha256_hex(b"hello"));
        assert_eq!(store.put(b"hello").await.unwrap(), digest);
        assert!(store.contains(&digest).await.unwrap());
        assert_eq!(store.get(&digest).await.unwrap().as_deref(), Some(&b"hello"[..]));
        // Same size, other bytes: never served, and not rewritten by a put
        // (the size matches); another size is replaced by the next put.
        std::fs::write(store.path(&digest).unwrap(), b"HELLO").unwrap();
        assert_eq!(store.get(&digest).await.unwrap(), None);
        std::fs::write(store.path(&digest).unwrap(), b"tampered").unwrap();
        assert_eq!(store.get(&digest).await.unwrap(), None);
        store.put(b"hello").await.unwrap();
        assert_eq!(store.get(&digest).await.unwrap().as_deref(), Some(&b"hello"[..]));
        for hostile in ["../../etc/passwd", "", &digest.to_uppercase(), &format!("{}/x", &digest[..62])] {
            assert!(matches!(store.get(hostile).await, Err(BlobError::NotADigest(_))), "{hostile}");
            assert!(matches!(store.contains(hostile).await, Err(BlobError::NotADigest(_))), "{hostile}");
        }
        assert!(!store.contains(&sha256_hex(b"absent")).await.unwrap());
        assert_eq!(store.get(&sha256_hex(b"absent")).await.unwrap(), None);
    }

    #[tokio::test]
    async fn put_known_stores_under_the_given_digest() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path());
        let digest = sha256_hex(b"known");
        store.put_known(&digest, b"known").await.unwrap();
        assert_eq!(store.get(&digest).await.unwrap().as_deref(), Some(&b"known"[..]));
        assert!(matches!(store.put_known("not-a-digest", b"known").await, Err(BlobError::NotADigest(_))));
    }

    #[tokio::test]
    async fn blobs_above_the_bound_are_neither_stored_nor_served() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::new(dir.path()).with_max_bytes(4);
        assert!(matches!(store.put(b"12345").await, Err(BlobError::TooLarge { bytes: 5, max: 4, .. })));
        let digest = sha256_hex(b"12345");
        let path = store.path(&digest).unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"12345").unwrap();
        assert!(matches!(store.get(&digest).await, Err(BlobError::TooLarge { .. })));
        assert_eq!(DEFAULT_MAX_BYTES, stagecraft_runtime::Quotas::default().output_bytes);
    }

    #[test]
    fn locations() {
        let folder = BlobStore::open("some/dir").unwrap();
        assert_eq!(folder.root(), Some(Path::new("some/dir")));
        let url = BlobStore::open("file:///srv/blobs").unwrap();
        assert_eq!(url.root(), Some(Path::new("/srv/blobs")));
        assert_eq!(url.to_string(), "/srv/blobs");
        for bad in ["", "file://relative", "http://example.com/x", "s3://", "s3:///prefix", "s3://b/a/../c"] {
            assert!(matches!(BlobStore::open(bad), Err(BlobError::Location { .. })), "{bad}");
        }
        let vars = [("AWS_REGION", "us-east-1"), ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"), ("HOME", "/x")];
        let s3 = BlobStore::open_with("s3://bucket/some/prefix/", vars).unwrap();
        assert_eq!(s3.to_string(), "s3://bucket/some/prefix");
        assert_eq!(s3.root(), None);
        let digest = sha256_hex(b"x");
        assert_eq!(s3.key(&digest).unwrap(), format!("some/prefix/{}/{digest}", &digest[..2]));
        let bare = BlobStore::open_with("s3://bucket", vars).unwrap();
        assert_eq!(bare.key(&digest).unwrap(), format!("{}/{digest}", &digest[..2]));
        assert_eq!(bare.key("../x"), None);
    }
}
