//! Which device runs segmentation: `auto | cpu | cuda`, decided once at
//! start. The CUDA driver and NVRTC are opened at run time only, so the
//! host builds and runs on machines without CUDA.
//!
//! `cuda` resolves when the driver and NVRTC load, a device opens and the
//! kernels compile for it (see [`crate::cuda`]); `auto` does the same and
//! falls back to the CPU with the reason; `cuda` without them is an error.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::fmt;

/// The device asked for (`--device`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// CUDA when a driver answers, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda,
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda),
            other => Err(format!("unknown device '{other}': expected auto, cpu or cuda")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        })
    }
}

/// What actually runs the work, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// [`Device::Cpu`] or [`Device::Cuda`] (never `Auto`).
    pub device: Device,
    /// One line, e.g. `cpu (2 threads): CUDA unavailable: no CUDA driver: libcuda.so not found`.
    pub summary: String,
    /// The CUDA driver's answer, when one was found.
    pub cuda: Option<CudaDriver>,
}

impl fmt::Display for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

/// A CUDA driver that answered `cuInit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDriver {
    pub version: i32,
    pub devices: Vec<String>,
}

impl Device {
    /// Resolves the request against this machine. `cuda` without a usable
    /// CUDA engine is an error; `auto` falls back to the CPU and says why.
    pub fn resolve(self) -> Result<DeviceInfo, String> {
        let cpu = format!("cpu ({} threads)", rayon::current_num_threads());
        if self == Device::Cpu {
            return Ok(DeviceInfo { device: Device::Cpu, summary: format!("{cpu}, as requested"), cuda: None });
        }
        match crate::cuda::engine() {
            Ok(engine) => {
                let driver = probe_cuda().ok();
                let version = driver.as_ref().map_or(String::new(), |d| format!(", driver {}", d.version));
                Ok(DeviceInfo {
                    device: Device::Cuda,
                    summary: format!("cuda: {}{version}", engine.summary),
                    cuda: driver,
                })
            }
            Err(why) if self == Device::Auto => {
                Ok(DeviceInfo { device: Device::Cpu, summary: format!("{cpu}: CUDA unavailable: {why}"), cuda: None })
            }
            Err(why) => Err(format!("device cuda requested but CUDA is unavailable: {why}")),
        }
    }
}

/// The device asked for on the command line, which wins over
/// `STAGECRAFT_DEVICE`. Returns false when the device was already resolved
/// (or requested), so the request came too late to count.
pub fn request(device: Device) -> bool {
    REQUESTED.set(device).is_ok() && CURRENT.get().is_none()
}

static REQUESTED: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
static CURRENT: std::sync::OnceLock<Result<DeviceInfo, String>> = std::sync::OnceLock::new();

/// The device this process uses, resolved once from [`request`] or else
/// `STAGECRAFT_DEVICE` (`auto` when unset) and logged. An error (e.g.
/// `cuda` asked for on a machine without CUDA, or an unknown name) is kept
/// and returned to every caller.
pub fn current() -> Result<&'static DeviceInfo, &'static String> {
    CURRENT
        .get_or_init(|| {
            let asked = match REQUESTED.get() {
                Some(d) => Ok(*d),
                None => std::env::var("STAGECRAFT_DEVICE").unwrap_or_else(|_| "auto".into()).parse::<Device>(),
            };
            let resolved = asked.and_then(Device::resolve);
            match &resolved {
                Ok(info) => tracing::info!(device = %info, "segmentation device"),
                Err(e) => tracing::warn!(error = %e, "segmentation device unavailable"),
            }
            resolved
        })
        .as_ref()
}

type CuInit = unsafe extern "C" fn(u32) -> c_int;
type CuDriverGetVersion = unsafe extern "C" fn(*mut c_int) -> c_int;
type CuDeviceGetCount = unsafe extern "C" fn(*mut c_int) -> c_int;
type CuDeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
type CuDeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;

fn dlerror() -> String {
    // SAFETY: dlerror returns a thread-local C string or null.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

unsafe fn symbol(lib: *mut c_void, name: &str) -> Result<*mut c_void, String> {
    let c = CString::new(name).expect("symbol names have no NUL");
    let p = libc::dlsym(lib, c.as_ptr());
    if p.is_null() {
        Err(format!("{name} missing from libcuda.so.1"))
    } else {
        Ok(p)
    }
}

/// Opens `libcuda.so.1`, initialises it and lists its devices. The library
/// stays loaded for the life of the process (as the CUDA runtime does).
pub fn probe_cuda() -> Result<CudaDriver, String> {
    let name = CString::new("libcuda.so.1").expect("no NUL");
    // SAFETY: dlopen/dlsym with valid C strings; the function pointer types
    // match the CUDA driver API's documented signatures.
    unsafe {
        let lib = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if lib.is_null() {
            let e = dlerror();
            return Err(if e.contains("No such file") || e.contains("cannot open") {
                "libcuda.so.1 not found".into()
            } else {
                e
            });
        }
        let init: CuInit = std::mem::transmute(symbol(lib, "cuInit")?);
        let version: CuDriverGetVersion = std::mem::transmute(symbol(lib, "cuDriverGetVersion")?);
        let count: CuDeviceGetCount = std::mem::transmute(symbol(lib, "cuDeviceGetCount")?);
        let get: CuDeviceGet = std::mem::transmute(symbol(lib, "cuDeviceGet")?);
        let get_name: CuDeviceGetName = std::mem::transmute(symbol(lib, "cuDeviceGetName")?);
        let rc = init(0);
        if rc != 0 {
            return Err(format!("cuInit failed with CUDA error {rc}"));
        }
        let mut v = 0;
        version(&mut v);
        let mut n = 0;
        let rc = count(&mut n);
        if rc != 0 || n == 0 {
            return Err(format!("the CUDA driver reports no devices (error {rc})"));
        }
        let mut devices = Vec::new();
        for ordinal in 0..n {
            let mut dev = 0;
            let mut buf = [0 as c_char; 256];
            if get(&mut dev, ordinal) == 0 && get_name(buf.as_mut_ptr(), buf.len() as c_int, dev) == 0 {
                devices.push(CStr::from_ptr(buf.as_ptr()).to_string_lossy().into_owned());
            }
        }
        Ok(CudaDriver { version: v, devices })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_always_resolves_auto_and_cpu() {
        assert_eq!("AUTO".parse::<Device>().unwrap(), Device::Auto);
        assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda);
        assert!("tpu".parse::<Device>().is_err());
        let cpu = Device::Cpu.resolve().unwrap();
        assert!(cpu.summary.starts_with("cpu"));
        let auto = Device::Auto.resolve().unwrap();
        // `cuda` succeeds exactly when the engine starts, and says why not.
        match crate::cuda::engine() {
            Ok(_) => assert_eq!(Device::Cuda.resolve().unwrap().device, Device::Cuda),
            Err(why) => {
                assert_eq!(auto.device, Device::Cpu);
                assert!(auto.summary.contains(why), "{}", auto.summary);
                assert!(Device::Cuda.resolve().unwrap_err().contains(why));
            }
        }
    }
}
