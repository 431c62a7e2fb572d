//! Per-invocation quotas: the typed error every breach ends in, and the
//! scratch-disk quota, enforced inside `wasi:filesystem`.
//!
//! wasmtime-wasi has no quota hook, so [`add_to_linker`] shadows its
//! `wasi:filesystem/types` with [`QuotaFs`], which forwards every call to
//! wasmtime-wasi's own implementation and counts, before the call, what it
//! would add: bytes of each `write`, of each size increase (`set-size`) and
//! of each write through a file stream (`write-via-stream` and
//! `append-via-stream` hand out streams wrapped in [`QuotaStream`]), and one
//! file for each `open-at` that creates, `create-directory-at`, `link-at`
//! and `symlink-at`. A call that would go past the quota traps with
//! [`QuotaExceeded`] before anything is written, so one huge write cannot
//! slip past it, and the guest cannot catch the error and carry on.

use crate::sandbox::StoreState;
use bytes::Bytes;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, DirectoryEntryStream, ErrorCode, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError, FsResult, OutputStream, Pollable, StreamError};

/// Which quota was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaKind {
    /// Bytes written into `/scratch`.
    ScratchBytes,
    /// Files (and directories, links) created in `/scratch`.
    ScratchFiles,
    /// Total bytes of the output's artifacts.
    OutputBytes,
    /// Number of artifacts in the output.
    Artifacts,
    /// Bytes of the output's metadata.
    MetadataBytes,
}

impl QuotaKind {
    fn name(self) -> &'static str {
        match self {
            Self::ScratchBytes => "scratch",
            Self::ScratchFiles => "scratch files",
            Self::OutputBytes => "output",
            Self::Artifacts => "artifacts",
            Self::MetadataBytes => "metadata",
        }
    }

    fn is_bytes(self) -> bool {
        matches!(self, Self::ScratchBytes | Self::OutputBytes | Self::MetadataBytes)
    }
}

/// A stage went past a quota: `quota exceeded: scratch 256 MiB`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quota exceeded: {} {}", .kind.name(), if .kind.is_bytes() { bytes(*.limit) } else { .limit.to_string() })]
pub struct QuotaExceeded {
    pub kind: QuotaKind,
    /// The quota as configured.
    pub limit: u64,
}

impl QuotaExceeded {
    pub fn new(kind: QuotaKind, limit: u64) -> Self {
        Self { kind, limit }
    }
}

/// `268435456` → `256 MiB`; sizes that are not whole KiB or MiB stay in bytes.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// What one invocation has put into its scratch directory so far. Shared
/// (`Arc`) between the store and the file streams it handed out.
#[derive(Debug)]
pub struct ScratchUsage {
    bytes: AtomicU64,
    files: AtomicU64,
    max_bytes: u64,
    max_files: u64,
}

impl ScratchUsage {
    pub fn new(max_bytes: u64, max_files: u64) -> Self {
        Self { bytes: AtomicU64::new(0), files: AtomicU64::new(0), max_bytes, max_files }
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Files created so far.
    pub fn files(&self) -> u64 {
        self.files.load(Ordering::Relaxed)
    }

    /// Counts `n` more bytes, or refuses them (counting nothing).
    pub fn charge_bytes(&self, n: u64) -> Result<(), QuotaExceeded> {
        charge(&self.bytes, n, self.max_bytes).map_err(|()| QuotaExceeded::new(QuotaKind::ScratchBytes, self.max_bytes))
    }

    /// Counts one more file, or refuses it.
    pub fn charge_file(&self) -> Result<(), QuotaExceeded> {
        charge(&self.files, 1, self.max_files).map_err(|()| QuotaExceeded::new(QuotaKind::ScratchFiles, self.max_files))
    }
}

fn charge(counter: &AtomicU64, n: u64, max: u64) -> Result<(), ()> {
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| used.checked_add(n).filter(|&total| total <= max))
        .map(drop)
        .map_err(drop)
}

fn fs_trap(e: QuotaExceeded) -> FsError {
    FsError::trap(wasmtime::Error::new(e))
}

/// `wasi:filesystem/types` with the scratch quota: wasmtime-wasi's
/// implementation plus the invocation's [`ScratchUsage`].
pub struct QuotaFs<'a> {
    fs: WasiFilesystemCtxView<'a>,
    usage: &'a Arc<ScratchUsage>,
}

struct QuotaFsData;

impl HasData for QuotaFsData {
    type Data<'a> = QuotaFs<'a>;
}

/// Replaces the `wasi:filesystem/types` that
/// `wasmtime_wasi::p2::add_to_linker_async` added with [`QuotaFs`].
pub(crate) fn add_to_linker(linker: &mut Linker<StoreState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = types::add_to_linker::<StoreState, QuotaFsData>(linker, |s| QuotaFs {
        fs: WasiFilesystemCtxView { ctx: s.wasi.filesystem(), table: &mut s.table },
        usage: &s.scratch_usage,
    });
    linker.allow_shadowing(false);
    added
}

/// A borrow of the same descriptor (the generated code passes borrows by value).
fn again(fd: &Resource<Descriptor>) -> Resource<Descriptor> {
    Resource::new_borrow(fd.rep())
}

impl QuotaFs<'_> {
    /// Wraps a file stream wasmtime-wasi handed out so that it counts.
    fn counted(&mut self, stream: Resource<DynOutputStream>) -> FsResult<Resource<DynOutputStream>> {
        let inner = self.fs.table.delete(stream)?;
        let wrapped: DynOutputStream = Box::new(QuotaStream { inner, usage: self.usage.clone() });
        Ok(self.fs.table.push(wrapped)?)
    }
}

impl types::Host for QuotaFs<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.fs, err)
    }

    fn filesystem_error_code(&mut self, err: Resource<wasmtime::Error>) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.fs, err)
    }
}

impl HostDescriptor for QuotaFs<'_> {
    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
        len: types::Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        self.fs.advise(fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.fs.sync_data(fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorFlags> {
        self.fs.get_flags(fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorType> {
        self.fs.get_type(fd).await
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: types::Filesize) -> FsResult<()> {
        // Growing a file counts as writing the bytes it grows by (a sparse
        // file costs little disk, but reading it back costs its full size).
        let current = self.fs.stat(again(&fd)).await?.size;
        if size > current {
            self.usage.charge_bytes(size - current).map_err(fs_trap)?;
        }
        self.fs.set_size(fd, size).await
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.fs.set_times(fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: types::Filesize,
        offset: types::Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        self.fs.read(fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buf: Vec<u8>,
        offset: types::Filesize,
    ) -> FsResult<types::Filesize> {
        self.usage.charge_bytes(buf.len() as u64).map_err(fs_trap)?;
        self.fs.write(fd, buf, offset).await
    }

    async fn read_directory(&mut self, fd: Resource<Descriptor>) -> FsResult<Resource<DirectoryEntryStream>> {
        self.fs.read_directory(fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        self.fs.sync(fd).await
    }

    async fn create_directory_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        self.usage.charge_file().map_err(fs_trap)?;
        self.fs.create_directory_at(fd, path).await
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorStat> {
        self.fs.stat(fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::DescriptorStat> {
        self.fs.stat_at(fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        self.fs.set_times_at(fd, path_flags, path, atim, mtim).await
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        self.usage.charge_file().map_err(fs_trap)?;
        self.fs.link_at(fd, old_path_flags, old_path, new_descriptor, new_path).await
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        oflags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        // Only a create of a path that does not exist yet makes a file.
        if oflags.contains(types::OpenFlags::CREATE)
            && self.fs.stat_at(again(&fd), path_flags, path.clone()).await.is_err()
        {
            self.usage.charge_file().map_err(fs_trap)?;
        }
        self.fs.open_at(fd, path_flags, path, oflags, flags).await
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.fs, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        self.fs.readlink_at(fd, path).await
    }

    async fn remove_directory_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        self.fs.remove_directory_at(fd, path).await
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        self.fs.rename_at(fd, old_path, new_fd, new_path).await
    }

    async fn symlink_at(&mut self, fd: Resource<Descriptor>, src_path: String, dest_path: String) -> FsResult<()> {
        self.usage.charge_file().map_err(fs_trap)?;
        self.fs.symlink_at(fd, src_path, dest_path).await
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        self.fs.unlink_file_at(fd, path).await
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        self.fs.read_via_stream(fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: types::Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let stream = self.fs.write_via_stream(fd, offset)?;
        self.counted(stream)
    }

    fn append_via_stream(&mut self, fd: Resource<Descriptor>) -> FsResult<Resource<DynOutputStream>> {
        let stream = self.fs.append_via_stream(fd)?;
        self.counted(stream)
    }

    async fn is_same_object(&mut self, a: Resource<Descriptor>, b: Resource<Descriptor>) -> wasmtime::Result<bool> {
        self.fs.is_same_object(a, b).await
    }

    async fn metadata_hash(&mut self, fd: Resource<Descriptor>) -> FsResult<types::MetadataHashValue> {
        self.fs.metadata_hash(fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        self.fs.metadata_hash_at(fd, path_flags, path).await
    }
}

impl HostDirectoryEntryStream for QuotaFs<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        self.fs.read_directory_entry(stream).await
    }

    fn drop(&mut self, stream: Resource<DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.fs, stream)
    }
}

/// A file's output stream that counts what is written through it.
struct QuotaStream {
    inner: DynOutputStream,
    usage: Arc<ScratchUsage>,
}

fn stream_trap(e: QuotaExceeded) -> StreamError {
    StreamError::Trap(wasmtime::Error::new(e))
}

#[wasmtime_wasi::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        self.inner.ready().await
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.usage.charge_bytes(bytes.len() as u64).map_err(stream_trap)?;
        self.inner.write(bytes)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.inner.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        self.inner.check_write()
    }

    fn write_zeroes(&mut self, nelem: usize) -> Result<(), StreamError> {
        self.usage.charge_bytes(nelem as u64).map_err(stream_trap)?;
        self.inner.write_zeroes(nelem)
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_past_the_quota_is_refused_whole() {
        let usage = ScratchUsage::new(100, 2);
        usage.charge_bytes(60).unwrap();
        let err = usage.charge_bytes(41).unwrap_err();
        assert_eq!(err.to_string(), "quota exceeded: scratch 100 bytes");
        assert_eq!(usage.bytes(), 60, "a refused write counts nothing");
        usage.charge_bytes(40).unwrap();
        assert!(usage.charge_bytes(u64::MAX).is_err(), "no overflow");
        usage.charge_file().unwrap();
        usage.charge_file().unwrap();
        assert_eq!(usage.charge_file().unwrap_err().to_string(), "quota exceeded: scratch files 2");
    }

    #[test]
    fn limits_are_named_in_units() {
        assert_eq!(
            QuotaExceeded::new(QuotaKind::ScratchBytes, 256 << 20).to_string(),
            "quota exceeded: scratch 256 MiB"
        );
        assert_eq!(QuotaExceeded::new(QuotaKind::MetadataBytes, 4 << 10).to_string(), "quota exceeded: metadata 4 KiB");
        assert_eq!(QuotaExceeded::new(QuotaKind::Artifacts, 256).to_string(), "quota exceeded: artifacts 256");
    }
}
