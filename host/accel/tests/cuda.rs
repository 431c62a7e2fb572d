//! The CUDA path against the CPU path.
//!
//! With CUDA (driver + NVRTC + a GPU): the GPU's labels agree with the
//! CPU's on the synthetic set (AP@0.5 of one against the other), Otsu's
//! threshold is the same number, measurements match the labels, and
//! several jobs in flight on separate streams give the same answers.
//! Without CUDA: `auto` resolves to the CPU with the reason, `cuda` is an
//! error carrying it, and the segmenter for a failed `cuda` request refuses
//! work. Each test prints which of the two it checked.
//!
//! Always (no GPU needed): a Rust model of the GPU's level-by-level flood
//! (the one step that is not an exact match) agrees with the CPU's queue;
//! and where g++ is installed, kernels.cu itself runs under a CPU shim
//! (tests/emulate) step by step against the CPU path.

use stagecraft_accel::cuda::net::{Layer, NetSpec};
use stagecraft_accel::metrics::match_labels;
use stagecraft_accel::segment::{self, edt, peaks, watershed, Foreground, SegmentError, SegmentOptions};
use stagecraft_accel::segmenter::Ran;
use stagecraft_accel::synth::{dataset, SynthOptions};
use stagecraft_accel::{cuda, Device, Segmenter};

/// Agreement of GPU with CPU labels (AP@0.5, one as truth for the other).
/// Only pixels equidistant between seeds may differ (see cuda/pipeline.rs),
/// which moves no object's IoU anywhere near 0.5.
const AGREEMENT_FLOOR: f64 = 0.97;

#[test]
fn cuda_labels_agree_with_the_cpu_or_auto_falls_back_with_a_reason() {
    let engine = match cuda::engine() {
        Ok(engine) => engine,
        Err(why) => {
            eprintln!("SKIPPED GPU agreement (no CUDA here): {why}");
            let auto = Device::Auto.resolve().expect("auto always resolves");
            assert_eq!(auto.device, Device::Cpu);
            assert!(auto.summary.contains(why), "auto says why: {}", auto.summary);
            let err = Device::Cuda.resolve().expect_err("cuda without CUDA is an error");
            assert!(err.contains("cuda") && err.contains(why), "{err}");
            let refused = Segmenter::new(Err(err.clone()));
            let d = &dataset(&SynthOptions { width: 64, height: 64, cells: 3, ..Default::default() }, 1, 1)[0];
            match refused.segment(&d.image, &SegmentOptions::default(), Foreground::Otsu) {
                Err(SegmentError::Unavailable(m)) => assert_eq!(m, err),
                other => panic!("expected Unavailable, got {other:?}"),
            }
            eprintln!("checked: auto -> {auto}; cuda -> error: {err}");
            return;
        }
    };
    eprintln!("CUDA engine: {}", engine.summary);
    let data = dataset(&SynthOptions::default(), 6, 2024);
    let options = SegmentOptions::default();
    let mut agreements = Vec::new();
    for (k, d) in data.iter().enumerate() {
        let cpu = segment::segment(&d.image, &options, Foreground::Otsu).unwrap();
        let gpu = engine.segment(&d.image, &options, Foreground::Otsu).unwrap_or_else(|e| panic!("image {k}: {e:?}"));
        // Blur and Otsu follow the CPU's float steps exactly.
        assert_eq!(gpu.threshold, cpu.threshold, "image {k}: Otsu threshold");
        assert_eq!(gpu.labels.len(), cpu.labels.len());
        assert_eq!(gpu.cells.len() as u32, gpu.labels.iter().copied().max().unwrap_or(0), "image {k}");
        // Measurements agree with the GPU's own labels.
        for c in &gpu.cells {
            let area = gpu.labels.iter().filter(|&&l| l == c.id).count() as u32;
            assert_eq!(area, c.area, "image {k} cell {}", c.id);
        }
        let m = match_labels(&cpu.labels, &gpu.labels, 0.5);
        let same = cpu.labels.iter().zip(&gpu.labels).filter(|(a, b)| a == b).count() as f64 / cpu.labels.len() as f64;
        eprintln!(
            "image {k}: cpu {} cells, gpu {} cells, AP@0.5 gpu vs cpu {:.3}, identical labels on {:.2}% of pixels",
            cpu.cells.len(),
            gpu.cells.len(),
            m.average_precision(),
            same * 100.0
        );
        agreements.push(m.average_precision());
    }
    let mean = agreements.iter().sum::<f64>() / agreements.len() as f64;
    eprintln!("mean AP@0.5 of GPU labels against CPU labels: {mean:.3}");
    assert!(mean >= AGREEMENT_FLOOR, "GPU/CPU agreement {mean:.3} below {AGREEMENT_FLOOR}");

    // A probability map as foreground (the model path): the ground truth's
    // own mask, so the foreground is the same on both devices.
    let d = &data[0];
    let p: Vec<f32> = d.truth.iter().map(|&l| if l != 0 { 0.9 } else { 0.1 }).collect();
    let cpu = segment::segment(&d.image, &options, Foreground::Probability(&p)).unwrap();
    let gpu = engine.segment(&d.image, &options, Foreground::Probability(&p)).unwrap();
    let ap = match_labels(&cpu.labels, &gpu.labels, 0.5).average_precision();
    eprintln!("probability foreground: AP@0.5 gpu vs cpu {ap:.3}");
    assert!(ap >= AGREEMENT_FLOOR && gpu.threshold.is_none());
}

#[test]
fn concurrent_jobs_on_separate_streams_give_the_same_labels() {
    let info = match Device::Auto.resolve() {
        Ok(info) if info.device == Device::Cuda => info,
        other => {
            eprintln!("SKIPPED concurrent GPU jobs (no CUDA here): {}", other.map(|i| i.summary).unwrap_or_else(|e| e));
            return;
        }
    };
    let segmenter = Segmenter::new(Ok(info));
    let data = dataset(&SynthOptions { width: 256, height: 256, cells: 20, ..Default::default() }, 8, 7);
    let options = SegmentOptions::default();
    let alone: Vec<_> =
        data.iter().map(|d| segmenter.segment_traced(&d.image, &options, Foreground::Otsu).unwrap()).collect();
    let together: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = data
            .iter()
            .map(|d| s.spawn(|| segmenter.segment_traced(&d.image, &options, Foreground::Otsu).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, (a, b)) in alone.iter().zip(&together).enumerate() {
        assert_eq!((a.1, b.1), (Ran::Cuda, Ran::Cuda), "image {k} ran on the GPU both times");
        // The flood is deterministic (synchronous steps), so streams
        // running side by side change nothing.
        assert_eq!(a.0, b.0, "image {k}");
    }
    eprintln!("8 jobs on {} streams: identical to one at a time", cuda::context::STREAMS);
}

/// The GPU's flood (kernels.cu `flood_step`), modelled on the CPU: level
/// by level from the top, synchronous steps until stable, a pixel taking
/// the label of its labelled 4-neighbour with level >= the current one,
/// the farthest from the background first, then the lowest label.
fn flood_model(distance: &[f32], mask: &[bool], markers: &[u32], w: usize, h: usize) -> Vec<u32> {
    let dmax = distance.iter().zip(mask).filter(|(_, &m)| m).map(|(&d, _)| d).fold(0f32, f32::max).min(1e10);
    let per_pixel = watershed::LEVELS_PER_PIXEL.min(watershed::MAX_BUCKETS as f32 / dmax.max(1.0));
    let level = |d: f32| ((d.clamp(0.0, dmax) * per_pixel) as usize).min(watershed::MAX_BUCKETS);
    let top = level(dmax);
    let mut present = vec![false; top + 1];
    for (i, &m) in mask.iter().enumerate() {
        if m {
            present[level(distance[i]).min(top)] = true;
        }
    }
    let mut labels: Vec<u32> = markers.to_vec();
    for l in (0..=top).rev().filter(|&l| present[l]) {
        loop {
            let src = labels.clone();
            let mut changed = false;
            for i in 0..w * h {
                if src[i] != 0 || !mask[i] {
                    continue;
                }
                let (x, y) = (i % w, i / w);
                let mut best = (0u32, -1f32);
                for (ok, j) in
                    [(x > 0, i.wrapping_sub(1)), (x + 1 < w, i + 1), (y > 0, i.wrapping_sub(w)), (y + 1 < h, i + w)]
                {
                    if !ok || src[j] == 0 || !mask[j] || level(distance[j]) < l {
                        continue;
                    }
                    if distance[j] > best.1 || (distance[j] == best.1 && src[j] < best.0) {
                        best = (src[j], distance[j]);
                    }
                }
                if best.0 != 0 {
                    labels[i] = best.0;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }
    labels
}

#[test]
fn the_gpu_flood_rule_agrees_with_the_cpu_queue() {
    // Runs everywhere: the agreement the GPU test expects, from the rule alone.
    let data = dataset(&SynthOptions::default(), 3, 2024);
    let options = SegmentOptions::default();
    for (k, d) in data.iter().enumerate() {
        let (w, h) = (d.image.width as usize, d.image.height as usize);
        let cpu = segment::segment(&d.image, &options, Foreground::Otsu).unwrap();
        let smooth = segment::blur::gaussian(&d.image.to_f32(), w, h, options.sigma);
        let t = segment::otsu::threshold(&smooth);
        let mask: Vec<bool> = smooth.iter().map(|&v| v > t).collect();
        let distance = edt::distance_transform(&mask, w, h);
        let (markers, seeds) = peaks::markers(&distance, &mask, w, h, options.min_distance);
        let mut labels = flood_model(&distance, &mask, &markers, w, h);
        watershed::label_unreached(&mut labels, &mask, w, h, seeds);
        segment::label::drop_small_and_relabel(&mut labels, options.min_area);
        let ap = match_labels(&cpu.labels, &labels, 0.5).average_precision();
        let same = cpu.labels.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / labels.len() as f64;
        eprintln!(
            "image {k}: model of the GPU flood vs CPU: AP@0.5 {ap:.3}, identical labels on {:.2}% of pixels",
            same * 100.0
        );
        assert!(ap >= AGREEMENT_FLOOR, "image {k}: {ap:.3}");
    }
}

fn write<T: Copy>(path: &std::path::Path, values: &[T]) {
    // SAFETY: plain numbers (u8, u16, u32, f32) viewed as their bytes.
    let bytes = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), std::mem::size_of_val(values)) };
    std::fs::write(path, bytes).unwrap();
}

fn read_u32s(path: &std::path::Path) -> Vec<u32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn kernels_run_under_cpu_emulation() {
    // kernels.cu compiled by g++ with tests/emulate/shim.h standing in for
    // the CUDA built-ins: checks the kernels' logic (indexing, bounds,
    // reductions, the flood and relabel loops) where no GPU is at hand.
    if std::process::Command::new("g++").arg("--version").output().map_or(true, |o| !o.status.success()) {
        eprintln!("SKIPPED CPU emulation of kernels.cu: g++ not found");
        return;
    }
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulate");
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("harness");
    let build = std::process::Command::new("g++")
        .args(["-O2", "-std=c++20", "-pthread", "-o"])
        .arg(&exe)
        .arg(here.join("harness.cpp"))
        .output()
        .unwrap();
    assert!(build.status.success(), "g++: {}", String::from_utf8_lossy(&build.stderr));

    let d = &dataset(&SynthOptions { width: 256, height: 192, cells: 24, ..Default::default() }, 1, 11)[0];
    let options = SegmentOptions::default();
    let (w, h) = (d.image.width as usize, d.image.height as usize);
    let taps = segment::blur::kernel(options.sigma);
    let smooth = segment::blur::gaussian(&d.image.to_f32(), w, h, options.sigma);
    let t = segment::otsu::threshold(&smooth);
    let mask: Vec<bool> = smooth.iter().map(|&v| v > t).collect();
    let distance = edt::distance_transform(&mask, w, h);
    let r = options.min_distance.max(1) as usize;
    let cands = peaks::candidates(&distance, &mask, w, h, r);
    let kept = peaks::select(&cands, |i| distance[i], w, h, options.min_distance);
    let cpu = segment::segment(&d.image, &options, Foreground::Otsu).unwrap();

    let p = dir.path();
    std::fs::write(
        p.join("meta.txt"),
        format!("{w} {h} {} {} {} {}", taps.len() / 2, options.min_distance, options.min_area, kept.len()),
    )
    .unwrap();
    write(&p.join("samples.u16"), &d.image.samples);
    write(&p.join("taps.f32"), &taps);
    write(&p.join("smooth.f32"), &smooth);
    write(&p.join("threshold.f32"), &[t]);
    write(&p.join("mask.u8"), &mask.iter().map(|&m| m as u8).collect::<Vec<u8>>());
    write(&p.join("distance.f32"), &distance);
    write(&p.join("candidates.u32"), &cands.iter().map(|&i| i as u32).collect::<Vec<u32>>());
    write(&p.join("seeds.u32"), &kept.iter().map(|&i| i as u32).collect::<Vec<u32>>());

    let run = std::process::Command::new(&exe).arg(p).output().unwrap();
    let report = String::from_utf8_lossy(&run.stdout);
    eprintln!("{report}{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "a step that should match the CPU exactly did not");

    let labels = read_u32s(&p.join("gpu_labels.u32"));
    let count = labels.iter().copied().max().unwrap_or(0);
    let ap = match_labels(&cpu.labels, &labels, 0.5).average_precision();
    eprintln!("emulated kernels vs CPU: {} vs {} cells, AP@0.5 {ap:.3}", count, cpu.cells.len());
    assert!(ap >= AGREEMENT_FLOOR, "{ap:.3}");
    // The labels are 1..=N with no gaps, and the atomics' sums are the
    // CPU's measurements of those labels.
    let cells = segment::measure::measure(&labels, &d.image.samples, w, count);
    assert_eq!(cells.len() as u32, count);
    let sums: Vec<u64> = std::fs::read(p.join("gpu_sums.u64"))
        .unwrap()
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let boxes = read_u32s(&p.join("gpu_boxes.u32"));
    for (k, c) in cells.iter().enumerate() {
        assert_eq!(sums[4 * k] as u32, c.area, "cell {}", c.id);
        assert_eq!((sums[4 * k + 1] as f64 / sums[4 * k] as f64) as f32, c.centroid_x);
        assert_eq!((sums[4 * k + 3] as f64 / sums[4 * k] as f64) as f32, c.mean_intensity);
        assert_eq!((boxes[4 * k], boxes[4 * k + 1]), (c.bbox_x, c.bbox_y));
        assert_eq!(
            (boxes[4 * k + 2] - boxes[4 * k] + 1, boxes[4 * k + 3] - boxes[4 * k + 1] + 1),
            (c.bbox_width, c.bbox_height)
        );
    }
}

// The network planner (cuda/net.rs) behind the GPU inference engine; its
// kernels run against tract in host/inference/tests/cuda_models.rs.
fn conv(input: usize, output: usize, cin: usize, cout: usize, k: usize, d: usize) -> Layer {
    let p = d * (k / 2);
    Layer::Conv {
        input,
        output,
        cin,
        cout,
        kernel: [k, k],
        pads: [p; 4],
        dilations: [d, d],
        weight: 0,
        bias: None,
        relu: false,
    }
}

#[test]
fn plans_shapes_and_refuses_what_the_kernels_cannot_run() {
    let spec = NetSpec {
        slots: 4,
        input: 0,
        output: 3,
        input_channels: 3,
        layers: vec![
            conv(0, 1, 3, 12, 3, 2),
            Layer::Relu { input: 1, output: 2 },
            Layer::DepthToSpace { input: 2, output: 3, block: 2, crd: false },
        ],
        weights: vec![0.0; 12 * 3 * 9],
    };
    let plan = spec.plan(2, 20, 30).unwrap();
    assert_eq!(plan.shapes[1], [2, 12, 20, 30], "'same' padding keeps the size");
    assert_eq!(plan.shapes[3], [2, 3, 40, 60]);
    // 2 x 2 tiles, 2 groups of output channels, 2 images.
    assert_eq!(plan.launches[0].grid, 2 * 2 * 2 * 2);
    // The harness's text: slot sizes, then kernel, grid, block, pointers, ints.
    let text = plan.to_text();
    let want = "slots 4 3600 14400 14400 14400\nconv2d 16 256 4 s0 s1 w0 w0 15 0 2 3 20 30 12";
    assert_eq!(&text[..want.len()], want);

    let mut wide = spec.clone();
    wide.layers[0] = conv(0, 1, 3, 12, 3, 17);
    assert!(wide.check().unwrap_err().contains("dilation"));
    let mut short = spec.clone();
    short.weights.truncate(10);
    assert!(short.check().unwrap_err().contains("weights"));
    assert!(spec.plan(1, 0, 4).is_err());
}

/// A direct reference for one convolution (NCHW, zero padding).
#[allow(clippy::too_many_arguments)]
fn conv_reference(
    x: &[f32],
    [n, c, h, w]: [usize; 4],
    wt: &[f32],
    cout: usize,
    [kh, kw]: [usize; 2],
    pads: [usize; 4],
    [dh, dw]: [usize; 2],
) -> (Vec<f32>, [usize; 4]) {
    let (oh, ow) = (h + pads[0] + pads[2] - (kh - 1) * dh, w + pads[1] + pads[3] - (kw - 1) * dw);
    let mut y = vec![0f32; n * cout * oh * ow];
    for b in 0..n {
        for o in 0..cout {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = 0f32;
                    for ci in 0..c {
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let (iy, ix) = (
                                    (oy + ky * dh) as isize - pads[0] as isize,
                                    (ox + kx * dw) as isize - pads[1] as isize,
                                );
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    acc += wt[((o * c + ci) * kh + ky) * kw + kx]
                                        * x[((b * c + ci) * h + iy as usize) * w + ix as usize];
                                }
                            }
                        }
                    }
                    y[((b * cout + o) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    (y, [n, cout, oh, ow])
}

#[test]
fn nn_ops_beyond_the_shipped_models_run_under_cpu_emulation() {
    // What the shipped models do not exercise: asymmetric pads, a non-square
    // kernel with unequal dilations, no bias, DepthToSpace CRD, Add with
    // ReLU fused, Sigmoid. nn.cu under the CPU shim against plain loops.
    if std::process::Command::new("g++").arg("--version").output().map_or(true, |o| !o.status.success()) {
        eprintln!("SKIPPED CPU emulation of nn.cu: g++ not found");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("nn_harness");
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulate");
    let build = std::process::Command::new("g++")
        .args(["-O2", "-std=c++20", "-pthread", "-o"])
        .arg(&exe)
        .arg(here.join("nn_harness.cpp"))
        .output()
        .unwrap();
    assert!(build.status.success(), "g++: {}", String::from_utf8_lossy(&build.stderr));

    let (n, c, h, w, cout) = (2, 3, 11, 19, 8);
    let (kernel, pads, dilations) = ([3, 2], [0, 1, 2, 1], [2, 1]);
    let mut s = 12345u32;
    let mut next = move || {
        s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    let x: Vec<f32> = (0..n * c * h * w).map(|_| next()).collect();
    let weights: Vec<f32> = (0..cout * c * kernel[0] * kernel[1]).map(|_| next()).collect();
    let spec = NetSpec {
        slots: 5,
        input: 0,
        output: 4,
        input_channels: c,
        layers: vec![
            Layer::Conv {
                input: 0,
                output: 1,
                cin: c,
                cout,
                kernel,
                pads,
                dilations,
                weight: 0,
                bias: None,
                relu: false,
            },
            Layer::DepthToSpace { input: 1, output: 2, block: 2, crd: true },
            Layer::Add { a: 2, b: 2, output: 3, relu: true },
            Layer::Sigmoid { input: 3, output: 4 },
        ],
        weights: weights.clone(),
    };
    let plan = spec.plan(n, h, w).unwrap();
    write(&dir.path().join("weights.f32"), &weights);
    write(&dir.path().join("input.f32"), &x);
    std::fs::write(dir.path().join("plan.txt"), plan.to_text()).unwrap();
    let run = std::process::Command::new(&exe).arg(dir.path()).args(["0", "4"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let got: Vec<f32> = std::fs::read(dir.path().join("output.f32"))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();

    let (y, [_, yc, yh, yw]) = conv_reference(&x, [n, c, h, w], &weights, cout, kernel, pads, dilations);
    let oc = yc / 4;
    let mut want = Vec::with_capacity(y.len());
    for b in 0..n {
        for co in 0..oc {
            for oy in 0..yh * 2 {
                for ox in 0..yw * 2 {
                    // CRD: channel co * 4 + (oy % 2) * 2 + ox % 2.
                    let v = y[((b * yc + co * 4 + (oy % 2) * 2 + ox % 2) * yh + oy / 2) * yw + ox / 2];
                    want.push(1.0 / (1.0 + (-(v + v).max(0.0)).exp()));
                }
            }
        }
    }
    assert_eq!(plan.shapes[4], [n, oc, yh * 2, yw * 2]);
    let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    eprintln!("conv (asymmetric pads, 3x2, dilation 2x1) + DepthToSpace CRD + Add/ReLU + Sigmoid, emulated vs loops: max abs diff {diff:.2e}");
    assert!(got.len() == want.len() && diff <= 1e-5, "{diff:e}");
}
