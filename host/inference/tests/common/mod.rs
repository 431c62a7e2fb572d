//! The two-layer MLP the repository tests run (`models`, `engines`): its
//! layers, the arithmetic written out by hand, input rows and the tolerance.

use stagecraft_inference::onnx_build::Dense;

pub const IN: usize = 8;
pub const OUT: usize = 4;

pub fn layers(seed: u64) -> Vec<Dense> {
    vec![Dense::seeded(IN, 16, seed), Dense::seeded(16, OUT, seed + 1)]
}

/// What the two-layer MLP computes, written out by hand.
pub fn reference(layers: &[Dense], x: &[f32]) -> Vec<f32> {
    let hidden: Vec<f32> = layers[0].apply(x).into_iter().map(|v| v.max(0.0)).collect();
    layers[1].apply(&hidden)
}

/// Input row `i`: distinct, deterministic values.
pub fn row(i: usize) -> Vec<f32> {
    (0..IN).map(|j| ((i * IN + j) as f32 * 0.37).sin()).collect()
}

pub fn assert_close(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "got {got:?}, want {want:?}");
    }
}
