//! The CUDA path of segmentation (cudarc, driver and NVRTC loaded at run time).
pub mod compile;
