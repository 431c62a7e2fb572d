//! The CUDA engine: one context on device 0, the compiled kernels, a small
//! pool of streams (one job per stream, so the pool size bounds the GPU
//! jobs in flight) and device-memory accounting (each job's bytes are
//! estimated and reserved before launch: a warning at 90% of device
//! memory, [`Admission::Refuse`] at 95%, which the caller turns into
//! `SegmentError::Unavailable` so the scheduler retries).
//!
//! No lock is held around device work: the pool's mutex guards only the
//! list of idle streams, and the memory account is one atomic counter.

use super::compile;
use cudarc::driver::{CudaContext, CudaFunction, CudaStream};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// Streams in the pool: the most GPU jobs in flight at once.
pub const STREAMS: usize = 4;
/// Share of device memory in use above which a job is admitted with a warning.
pub const WARN_AT: f64 = 0.90;
/// Share above which new jobs are refused.
pub const REFUSE_AT: f64 = 0.95;

/// A started CUDA engine (see the module docs).
pub struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    kernels: HashMap<&'static str, CudaFunction>,
    /// `nn.cu`'s kernels, compiled when the first model is loaded (a host
    /// that only segments never pays for them).
    nn_kernels: OnceLock<Result<HashMap<&'static str, CudaFunction>, String>>,
    /// e.g. `sm_90`.
    arch: String,
    pool: StreamPool,
    memory: MemoryAccount,
    /// e.g. `NVIDIA H100 80GB HBM3 (sm_90), 79.1 GiB, NVRTC 12.9, 4 streams`.
    pub summary: String,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary)
    }
}

impl Gpu {
    /// Loads the driver and NVRTC, opens device 0 and compiles the kernels
    /// for its architecture. Every failure is one line saying which step.
    pub fn start() -> Result<Gpu, String> {
        // SAFETY: only tries to dlopen libcuda by its candidate names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err("no CUDA driver: libcuda.so not found".into());
        }
        let (major, minor) = compile::nvrtc_version()?;
        // cudarc panics where a symbol is missing from an old library:
        // contain that as an error.
        let started = std::panic::catch_unwind(|| -> Result<Gpu, String> {
            let ctx = CudaContext::new(0).map_err(|e| format!("CUDA context on device 0: {e}"))?;
            let name = ctx.name().map_err(|e| format!("device name: {e}"))?;
            let (cc_major, cc_minor) = ctx.compute_capability().map_err(|e| format!("compute capability: {e}"))?;
            let arch = format!("sm_{cc_major}{cc_minor}");
            let cubin = compile::compile_cubin(&arch)?;
            // Each job owns its buffers on its own stream, so cudarc's
            // per-buffer cross-stream events are not needed. SAFETY: set
            // before any buffer exists; no buffer is shared between streams.
            unsafe { ctx.disable_event_tracking() };
            let module = ctx
                .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
                .map_err(|e| format!("loading the {arch} CUBIN: {e}"))?;
            let mut kernels = HashMap::new();
            for &k in compile::KERNELS {
                kernels.insert(k, module.load_function(k).map_err(|e| format!("kernel {k}: {e}"))?);
            }
            let streams = (0..STREAMS)
                .map(|_| ctx.new_stream().map_err(|e| format!("creating a stream: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let (free, total) = ctx.mem_get_info().map_err(|e| format!("cuMemGetInfo: {e}"))?;
            let summary = format!(
                "{name} ({arch}), {:.1} GiB, NVRTC {major}.{minor}, {STREAMS} streams",
                total as f64 / (1u64 << 30) as f64
            );
            Ok(Gpu {
                ctx,
                kernels,
                nn_kernels: OnceLock::new(),
                arch,
                pool: StreamPool::new(streams),
                memory: MemoryAccount::new(total as u64, (total - free) as u64),
                summary,
            })
        });
        match started {
            Ok(r) => r,
            Err(panic) => Err(format!(
                "the CUDA driver or NVRTC library is unusable: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("panic while loading")
            )),
        }
    }

    /// A compiled kernel by name (one of [`compile::KERNELS`]).
    pub(crate) fn kernel(&self, name: &str) -> &CudaFunction {
        self.kernels.get(name).unwrap_or_else(|| panic!("kernel {name} is not in compile::KERNELS"))
    }

    /// `nn.cu`'s kernels, compiled by NVRTC and loaded on first use.
    pub(crate) fn nn_kernels(&self) -> Result<&HashMap<&'static str, CudaFunction>, String> {
        self.nn_kernels
            .get_or_init(|| {
                let started = std::time::Instant::now();
                let cubin = compile::compile_source(compile::NN_SOURCE, "nn.cu", &self.arch)?;
                let module = self
                    .ctx
                    .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))
                    .map_err(|e| format!("loading the {} CUBIN of nn.cu: {e}", self.arch))?;
                let mut kernels = HashMap::new();
                for &k in compile::NN_KERNELS {
                    kernels.insert(k, module.load_function(k).map_err(|e| format!("kernel {k}: {e}"))?);
                }
                tracing::info!(ms = started.elapsed().as_millis() as u64, "CUDA network kernels compiled");
                Ok(kernels)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// Waits for an idle stream.
    pub(crate) fn stream(&self) -> StreamLease<'_> {
        self.pool.acquire()
    }

    /// Device memory in use at start plus what jobs in flight reserved, and
    /// the device's total, in bytes.
    pub fn memory(&self) -> (u64, u64) {
        let m = &self.memory;
        (m.baseline + m.reserved.load(Ordering::Acquire), m.total)
    }

    /// Reserves `bytes` of device memory for one job, or refuses.
    pub(crate) fn reserve(&self, bytes: u64) -> Result<Reservation<'_>, String> {
        let used = self.ctx.mem_get_info().map(|(free, total)| (total - free) as u64).unwrap_or(0);
        self.memory.reserve(bytes, used)
    }
}

/// A fixed set of streams handed out one job at a time.
struct StreamPool {
    idle: Mutex<Vec<Arc<CudaStream>>>,
    returned: Condvar,
}

impl StreamPool {
    fn new(streams: Vec<Arc<CudaStream>>) -> Self {
        Self { idle: Mutex::new(streams), returned: Condvar::new() }
    }

    fn acquire(&self) -> StreamLease<'_> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(stream) = idle.pop() {
                return StreamLease { pool: self, stream: Some(stream) };
            }
            idle = self.returned.wait(idle).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// A stream borrowed from the pool; returned on drop.
pub(crate) struct StreamLease<'a> {
    pool: &'a StreamPool,
    stream: Option<Arc<CudaStream>>,
}

impl std::ops::Deref for StreamLease<'_> {
    type Target = Arc<CudaStream>;
    fn deref(&self) -> &Arc<CudaStream> {
        self.stream.as_ref().expect("held until drop")
    }
}

impl Drop for StreamLease<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take() {
            self.pool.idle.lock().unwrap_or_else(|p| p.into_inner()).push(s);
            self.pool.returned.notify_one();
        }
    }
}

/// What the memory account says to one job.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    Admit,
    /// Admitted, with device memory at this share after it.
    Warn(f64),
    /// Refused: device memory would be at this share.
    Refuse(f64),
}

/// The admission rule. `used` is what the driver reports in use now,
/// `baseline` what was in use when the engine started (other processes,
/// the context itself), `reserved` the bytes promised to jobs in flight.
/// In-flight jobs may not have allocated yet, so the larger of `used` and
/// `baseline + reserved` is taken as the memory already spoken for.
pub fn admission(total: u64, used: u64, baseline: u64, reserved: u64, estimate: u64) -> Admission {
    let spoken_for = used.max(baseline + reserved);
    let share = (spoken_for + estimate) as f64 / total.max(1) as f64;
    if share >= REFUSE_AT {
        Admission::Refuse(share)
    } else if share >= WARN_AT {
        Admission::Warn(share)
    } else {
        Admission::Admit
    }
}

/// Device memory promised to jobs in flight.
pub(crate) struct MemoryAccount {
    total: u64,
    baseline: u64,
    reserved: AtomicU64,
}

impl MemoryAccount {
    pub(crate) fn new(total: u64, baseline: u64) -> Self {
        Self { total, baseline, reserved: AtomicU64::new(0) }
    }

    pub(crate) fn reserve(&self, bytes: u64, used: u64) -> Result<Reservation<'_>, String> {
        // Compare-and-swap so two jobs cannot both take the last headroom.
        let mut current = self.reserved.load(Ordering::Acquire);
        loop {
            match admission(self.total, used, self.baseline, current, bytes) {
                Admission::Refuse(share) => {
                    return Err(format!(
                        "GPU memory would be {:.0}% in use with this job ({} MiB); refusing new work at {:.0}%",
                        share * 100.0,
                        bytes >> 20,
                        REFUSE_AT * 100.0
                    ))
                }
                verdict => {
                    match self.reserved.compare_exchange(current, current + bytes, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => {
                            if let Admission::Warn(share) = verdict {
                                tracing::warn!(
                                    share_pct = share * 100.0,
                                    job_mib = bytes >> 20,
                                    "GPU memory above {:.0}% in use",
                                    WARN_AT * 100.0
                                );
                            }
                            return Ok(Reservation { account: self, bytes });
                        }
                        Err(now) => current = now,
                    }
                }
            }
        }
    }
}

/// Bytes held for one job; released on drop.
pub(crate) struct Reservation<'a> {
    account: &'a MemoryAccount,
    bytes: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.account.reserved.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warns_at_ninety_and_refuses_at_ninety_five_percent() {
        let gib = 1u64 << 30;
        let total = 100 * gib;
        assert_eq!(admission(total, 10 * gib, 10 * gib, 0, gib), Admission::Admit);
        assert!(
            matches!(admission(total, 80 * gib, 10 * gib, 0, 11 * gib), Admission::Warn(s) if (s - 0.91).abs() < 1e-9)
        );
        assert!(matches!(admission(total, 80 * gib, 10 * gib, 0, 15 * gib), Admission::Refuse(_)));
        // Reservations not yet allocated count too.
        assert!(matches!(admission(total, 10 * gib, 10 * gib, 80 * gib, 5 * gib), Admission::Refuse(_)));
    }

    #[test]
    fn reservations_add_up_and_release_on_drop() {
        let gib = 1u64 << 30;
        let account = MemoryAccount::new(100 * gib, 0);
        let a = account.reserve(50 * gib, 0).unwrap();
        let b = account.reserve(40 * gib, 0).unwrap();
        assert!(account.reserve(10 * gib, 0).is_err(), "100% would be in use");
        drop(a);
        let c = account.reserve(10 * gib, 0).unwrap();
        assert_eq!(account.reserved.load(Ordering::Acquire), 50 * gib);
        drop((b, c));
        assert_eq!(account.reserved.load(Ordering::Acquire), 0);
    }
}
