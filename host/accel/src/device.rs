//! Which device runs segmentation: `auto | cpu | cuda`, decided once at
//! start. The CUDA driver (`libcuda.so.1`) is opened with `dlopen` at run
//! time only, so the host builds and runs on machines without CUDA.
//!
//! This build has no CUDA kernels yet: when a driver answers, the answer
//! says so and the work still runs on the CPU path (the reference every
//! future kernel is checked against).

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

/// What actually runs the work, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Always [`Device::Cpu`] in this build (see the module docs).
    pub device: Device,
    /// One line, e.g. `cpu (no CUDA driver: libcuda.so.1 not found)`.
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
    /// Resolves the request against this machine. `cuda` without a driver
    /// is an error; `auto` falls back to the CPU and says why.
    pub fn resolve(self) -> Result<DeviceInfo, String> {
        let cpu = format!("cpu ({} threads)", rayon::current_num_threads());
        match self {
            Device::Cpu => Ok(DeviceInfo { device: Device::Cpu, summary: format!("{cpu}, as requested"), cuda: None }),
            Device::Auto | Device::Cuda => match probe_cuda() {
                Ok(driver) => Ok(DeviceInfo {
                    device: Device::Cpu,
                    summary: format!(
                        "{cpu}: CUDA driver {} with {} device(s) [{}] found, but this build has no CUDA segmentation kernels",
                        driver.version,
                        driver.devices.len(),
                        driver.devices.join(", ")
                    ),
                    cuda: Some(driver),
                }),
                Err(why) if self == Device::Auto => {
                    Ok(DeviceInfo { device: Device::Cpu, summary: format!("{cpu} (no CUDA driver: {why})"), cuda: None })
                }
                Err(why) => Err(format!("device cuda requested but no CUDA driver: {why}")),
            },
        }
    }
}

/// The device this process uses, resolved once from `STAGECRAFT_DEVICE`
/// (`auto` when unset) and logged. An error (e.g. `cuda` asked for on a
/// machine without a driver, or an unknown name) is kept and returned to
/// every caller.
pub fn current() -> Result<&'static DeviceInfo, &'static String> {
    static CURRENT: std::sync::OnceLock<Result<DeviceInfo, String>> = std::sync::OnceLock::new();
    CURRENT
        .get_or_init(|| {
            let asked = std::env::var("STAGECRAFT_DEVICE").unwrap_or_else(|_| "auto".into());
            asked.parse::<Device>().and_then(Device::resolve)
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
        assert!(auto.summary.starts_with("cpu"), "{}", auto.summary);
        // `cuda` succeeds exactly when a driver answers.
        assert_eq!(Device::Cuda.resolve().is_ok(), probe_cuda().is_ok());
    }
}
