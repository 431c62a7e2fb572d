//! NVRTC: compiles `kernels.cu` (segmentation) and `nn.cu` (the ONNX
//! models' operators) to CUBINs for one GPU architecture.
//!
//! A CUBIN (not PTX) so a driver older than the NVRTC library still loads
//! it (PTX would need the driver to JIT a PTX version it may not know).
//! `--fmad=false` keeps every float step rounded as the CPU path rounds it.
//! NVRTC needs no GPU, so this also runs on machines with `libnvrtc` only
//! (the test below checks the CUDA C there).

use cudarc::nvrtc::{result, sys};
use std::ffi::{CStr, CString};

/// The CUDA C source of every kernel.
pub const SOURCE: &str = include_str!("kernels.cu");

/// Every kernel `SOURCE` defines, in the order the pipeline loads them.
pub const KERNELS: &[&str] = &[
    "to_f32",
    "blur_rows",
    "blur_cols",
    "minmax",
    "histogram",
    "otsu_threshold",
    "mask_above",
    "mask_probability",
    "edt_columns",
    "edt_rows",
    "edt_sqrt",
    "peak_candidates",
    "scatter_markers",
    "masked_max",
    "level_presence",
    "flood_step",
    "unreached_init",
    "unreached_step",
    "provisional_labels",
    "keep_flags",
    "exclusive_scan",
    "relabel",
    "measure_init",
    "measure",
];

/// The CUDA C source of the neural-network operators (see `net.rs`).
pub const NN_SOURCE: &str = include_str!("nn.cu");

/// Every kernel `NN_SOURCE` defines.
pub const NN_KERNELS: &[&str] = &["conv2d", "nn_relu", "nn_sigmoid", "nn_add", "depth_to_space"];

/// Whether `libnvrtc` can be opened (cudarc would panic on first use
/// otherwise).
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library by its candidate names.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version, e.g. `(12, 9)`.
pub fn nvrtc_version() -> Result<(i32, i32), String> {
    if !nvrtc_present() {
        return Err(
            "libnvrtc not found (install the CUDA toolkit or nvidia-cuda-nvrtc-cu12, or set LD_LIBRARY_PATH)".into()
        );
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two valid out-pointers.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }.result().map_err(|e| format!("nvrtcVersion: {e:?}"))?;
    Ok((major, minor))
}

/// Compiles [`SOURCE`] for `arch` (e.g. `sm_90`) and returns the CUBIN.
/// Errors carry NVRTC's log.
pub fn compile_cubin(arch: &str) -> Result<Vec<u8>, String> {
    compile_source(SOURCE, "kernels.cu", arch)
}

/// Compiles one CUDA C `source` (named `file` in messages) for `arch`.
pub fn compile_source(source: &str, file: &str, arch: &str) -> Result<Vec<u8>, String> {
    if !nvrtc_present() {
        return Err(nvrtc_version().unwrap_err());
    }
    let src = CString::new(source).expect("CUDA sources have no NUL");
    let name = CString::new(format!("stagecraft_{file}")).expect("no NUL");
    let prog = result::create_program(&src, Some(&name)).map_err(|e| format!("nvrtcCreateProgram: {e:?}"))?;
    let options = [format!("--gpu-architecture={arch}"), "--fmad=false".into(), "--std=c++14".into()];
    // SAFETY: `prog` is a live program until destroyed below; `src` and
    // `name` outlive it.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options);
        let log = result::get_program_log(prog)
            .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().trim().to_string())
            .unwrap_or_default();
        match compiled {
            Err(e) => Err(format!("NVRTC failed to compile {file} for {arch} ({e:?}): {log}")),
            Ok(()) => {
                let mut size = 0usize;
                sys::nvrtcGetCUBINSize(prog, &mut size)
                    .result()
                    .map_err(|e| format!("nvrtcGetCUBINSize: {e:?}"))
                    .and_then(|()| {
                        let mut cubin = vec![0u8; size];
                        sys::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast())
                            .result()
                            .map_err(|e| format!("nvrtcGetCUBIN: {e:?}"))?;
                        if cubin.is_empty() {
                            return Err(format!("NVRTC returned an empty CUBIN for {arch}"));
                        }
                        Ok(cubin)
                    })
            }
        }
    };
    // SAFETY: destroyed exactly once.
    let _ = unsafe { result::destroy_program(prog) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most useful check on a machine without a GPU: NVRTC compiles
    /// the CUDA C for two architectures. Skipped, loudly, without libnvrtc.
    #[test]
    fn kernels_compile_with_nvrtc_when_it_loads() {
        match nvrtc_version() {
            Err(why) => eprintln!("SKIPPED: NVRTC compile check: {why}"),
            Ok((major, minor)) => {
                for (file, source, kernels) in [("kernels.cu", SOURCE, KERNELS), ("nn.cu", NN_SOURCE, NN_KERNELS)] {
                    for arch in ["sm_80", "sm_90"] {
                        let cubin = compile_source(source, file, arch).unwrap_or_else(|e| panic!("{e}"));
                        // An ELF image.
                        assert_eq!(&cubin[..4], b"\x7fELF", "{arch}");
                        for kernel in kernels {
                            assert!(
                                cubin.windows(kernel.len()).any(|w| w == kernel.as_bytes()),
                                "{kernel} missing from the {arch} CUBIN of {file}"
                            );
                        }
                    }
                    eprintln!("NVRTC {major}.{minor} compiled {file} for sm_80 and sm_90");
                }
            }
        }
    }
}
