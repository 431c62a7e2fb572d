#!/usr/bin/env python3
"""Trains and writes stagecraft's two shipped ONNX models, with no downloads.

    pip install numpy scipy scikit-image onnx onnxruntime   # onnxruntime only checks
    python3 scripts/make-models.py [--out models] [--quick] [--cells-only] [--eval-only]

- `models/sr2x/`: 2x super-resolution of RGB images, NCHW float32 in [0, 1],
  (N,3,H,W) -> (N,3,2H,2W). ESPCN-style: a 5x5 "skip" conv initialised as
  Keys bicubic (a = -0.5) plus a residual body of three 3x3 convs, summed
  into 12 sub-pixel channels and shuffled with DepthToSpace(2). Trained on
  procedural images (anti-aliased shapes, strokes, gradients, band-limited
  textures) and scikit-image's bundled texture/scene samples, degraded by a
  2x2 box average; evaluated on held-out photos (skimage's astronaut,
  coffee, chelsea, rocket: never trained on) and held-out procedural images
  against bilinear and bicubic.
- `models/cell_fg/`: foreground probability of fluorescence-like cell
  images, (N,1,H,W) float32 -> (N,1,H,W) in [0, 1]. Input convention: the
  raw samples divided by the bit depth's maximum (255 or 65535). Five
  layers of 3x3 convs (the first a sum of dilation 1 and dilation 16, the
  others dilations 2, 4, 8, 16; receptive field 95 px), a 1x1 conv and a
  sigmoid. Trained on a wide generator (`synth_wide`, `CELL_TRAIN`):
  linear, radial and fall-off illumination, background gradients, shot
  and read noise from mild to strong, dim cells, dense touching clusters,
  ellipses and irregular outlines over a range of sizes, optical blur, 8
  and 16 bits, exposure gains; every training image is new. Evaluated by
  mask IoU and by AP@0.5 of the same watershed pipeline fed by Otsu vs by
  the model (scikit-image, as `scripts/bench-skimage.py`), on synth.rs's
  default options and on held-out configurations of the generator with
  ranges beyond the training ones (`held_out_sets`).

    python3 scripts/make-models.py --cells-only   # cell_fg only (sr2x left as it is)
    python3 scripts/make-models.py --eval-only    # score the files in models/, train nothing

Both models use only Conv, Relu, Add, Sigmoid and DepthToSpace (opset 13),
with a symbolic batch dimension `N`, so tract runs them. Everything is
seeded: the same numpy gives the same files. Each folder also gets the
`config.json` of the host's model repository.
"""
import argparse
import json
import os
import sys
import time

for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")  # one BLAS thread: faster than two on small matrices

import numpy as np
from scipy import ndimage as ndi

# ---------------------------------------------------------------- layers


def im2col(x, k, d):
    """(N,C,H,W) -> (N, C*k*k, H*W) for a 'same' k x k conv with dilation d."""
    n, c, h, w = x.shape
    p = d * (k // 2)
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    cols = np.stack([xp[:, :, i * d:i * d + h, j * d:j * d + w] for i in range(k) for j in range(k)], axis=2)
    return cols.reshape(n, c * k * k, h * w)


def col2im(dcols, shape, k, d):
    n, c, h, w = shape
    p = d * (k // 2)
    dcols = dcols.reshape(n, c, k * k, h, w)
    dxp = np.zeros((n, c, h + 2 * p, w + 2 * p), np.float32)
    for idx in range(k * k):
        i, j = divmod(idx, k)
        dxp[:, :, i * d:i * d + h, j * d:j * d + w] += dcols[:, :, idx]
    return dxp[:, :, p:p + h, p:p + w]


class Conv:
    """A 'same' 2-D convolution (zero padding), as ONNX Conv with pads = d*(k//2)."""

    def __init__(self, rng, cin, cout, k=3, d=1, scale=None):
        self.k, self.d = k, d
        fan_in = cin * k * k
        scale = np.sqrt(2.0 / fan_in) if scale is None else scale
        self.w = (rng.standard_normal((cout, cin, k, k)) * scale).astype(np.float32)
        self.b = np.zeros(cout, np.float32)

    def params(self):
        return [self.w, self.b]

    def forward(self, x):
        self.shape = x.shape
        self.cols = im2col(x, self.k, self.d)
        n, _, h, w = x.shape
        y = np.matmul(self.w.reshape(self.w.shape[0], -1), self.cols) + self.b[None, :, None]
        return y.reshape(n, -1, h, w)

    def backward(self, dy):
        n, co, h, w = dy.shape
        dy = dy.reshape(n, co, h * w)
        w2 = self.w.reshape(co, -1)
        self.gw = np.einsum("nop,nkp->ok", dy, self.cols, optimize=True).reshape(self.w.shape)
        self.gb = dy.sum(axis=(0, 2))
        dcols = np.matmul(w2.T, dy)
        self.cols = None
        return col2im(dcols, self.shape, self.k, self.d)

    def grads(self):
        return [self.gw, self.gb]


class Adam:
    def __init__(self, params, lr):
        self.params, self.lr, self.t = params, lr, 0
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]

    def step(self, grads, lr_scale=1.0):
        self.t += 1
        b1, b2 = 0.9, 0.999
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            mh = m / (1 - b1 ** self.t)
            vh = v / (1 - b2 ** self.t)
            p -= (self.lr * lr_scale * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32)


def relu_fwd(x):
    return np.maximum(x, 0)


def depth_to_space(x, bs=2):
    """ONNX DepthToSpace, mode DCR."""
    n, c, h, w = x.shape
    co = c // (bs * bs)
    t = x.reshape(n, bs, bs, co, h, w).transpose(0, 3, 4, 1, 5, 2)
    return t.reshape(n, co, h * bs, w * bs)


def space_to_depth(y, bs=2):
    """Inverse of depth_to_space (DCR): used for its gradient."""
    n, co, hh, ww = y.shape
    h, w = hh // bs, ww // bs
    t = y.reshape(n, co, h, bs, w, bs).transpose(0, 3, 5, 1, 2, 4)
    return t.reshape(n, bs * bs * co, h, w)


# ---------------------------------------------------------------- sr2x

def keys_cubic(t, a=-0.5):
    t = abs(t)
    if t <= 1:
        return (a + 2) * t ** 3 - (a + 3) * t ** 2 + 1
    if t < 2:
        return a * t ** 3 - 5 * a * t ** 2 + 8 * a * t - 4 * a
    return 0.0


def bicubic_taps():
    """1-D taps over input offsets -2..2 for the two output phases of a 2x
    upscale with half-pixel centres: output 2h+i samples input h + i/2 - 1/4."""
    taps = np.zeros((2, 5))
    for i in range(2):
        pos = i / 2 - 0.25
        for o in range(-2, 3):
            taps[i, o + 2] = keys_cubic(pos - o)
        taps[i] /= taps[i].sum()
    return taps


def bicubic_skip_weights():
    """A 5x5 conv 3 -> 12 whose DepthToSpace(2) output is bicubic 2x."""
    taps = bicubic_taps()
    w = np.zeros((12, 3, 5, 5), np.float32)
    for i in range(2):
        for j in range(2):
            k2 = np.outer(taps[i], taps[j])
            for c in range(3):
                w[(i * 2 + j) * 3 + c, c] = k2
    return w


class SR:
    def __init__(self, rng, width=32):
        self.skip = Conv(rng, 3, 12, k=5)
        self.skip.w[:] = bicubic_skip_weights()
        self.c1 = Conv(rng, 3, width)
        self.c2 = Conv(rng, width, width)
        self.c3 = Conv(rng, width, width)
        self.c4 = Conv(rng, width, 12, scale=1e-3)
        self.layers = [self.skip, self.c1, self.c2, self.c3, self.c4]

    def params(self):
        return [p for l in self.layers for p in l.params()]

    def grads(self):
        return [g for l in self.layers for g in l.grads()]

    def forward(self, x):
        s = self.skip.forward(x)
        self.h1 = relu_fwd(self.c1.forward(x))
        self.h2 = relu_fwd(self.c2.forward(self.h1))
        self.h3 = relu_fwd(self.c3.forward(self.h2))
        r = self.c4.forward(self.h3)
        return depth_to_space(s + r)

    def backward(self, dy):
        d = space_to_depth(dy)
        self.skip.backward(d)
        g = self.c4.backward(d) * (self.h3 > 0)
        g = self.c3.backward(g) * (self.h2 > 0)
        g = self.c2.backward(g) * (self.h1 > 0)
        self.c1.backward(g)


def box_down2(img):
    """(..., 2H, 2W) -> (..., H, W): the 2x2 mean, the degradation trained for."""
    h, w = img.shape[-2] // 2 * 2, img.shape[-1] // 2 * 2
    img = img[..., :h, :w]
    return 0.25 * (img[..., 0::2, 0::2] + img[..., 1::2, 0::2] + img[..., 0::2, 1::2] + img[..., 1::2, 1::2])


def upsample_taps(img, taps):
    """Separable 2x upsampling of (C,H,W) with edge clamping; taps (2, K) over
    offsets centred on K//2."""
    c, h, w = img.shape
    k = taps.shape[1]
    r = k // 2

    def along(x, axis):
        pad = [(0, 0)] * 3
        pad[axis] = (r, r)
        xp = np.pad(x, pad, mode="edge")
        n = x.shape[axis]
        outs = []
        for i in range(2):
            acc = 0
            for o in range(k):
                acc = acc + taps[i, o] * np.take(xp, np.arange(o, o + n), axis=axis)
            outs.append(acc)
        out = np.stack(outs, axis=axis + 1)
        shape = list(x.shape)
        shape[axis] *= 2
        return out.reshape(shape)

    return along(along(img, 1), 2)


def bilinear2x(img):
    return upsample_taps(img, np.array([[0.25, 0.75, 0.0], [0.0, 0.75, 0.25]]))


def bicubic2x(img):
    return upsample_taps(img, bicubic_taps())


def psnr(a, b):
    mse = float(np.mean((np.clip(a, 0, 1) - b) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def procedural_image(rng, size=192):
    """An RGB image in [0,1]: gradient background, anti-aliased shapes and
    strokes, band-limited texture patches (rendered 4x and box-averaged)."""
    ss = 4
    n = size * ss
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) / ss
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    ang = rng.uniform(0, 2 * np.pi)
    t = ((xx * np.cos(ang) + yy * np.sin(ang)) / (size * 1.5) + 0.5).clip(0, 1)
    img = c0[:, None, None] * (1 - t) + c1[:, None, None] * t
    for _ in range(rng.integers(6, 16)):
        kind = rng.integers(0, 5)
        col = rng.uniform(0, 1, 3)[:, None, None]
        cx, cy = rng.uniform(0, size, 2)
        if kind == 0:  # ellipse
            a, b = rng.uniform(4, size / 4, 2)
            th = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
            v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
            m = (u / a) ** 2 + (v / b) ** 2 < 1
        elif kind == 1:  # rotated rectangle
            a, b = rng.uniform(3, size / 4, 2)
            th = rng.uniform(0, np.pi)
            u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
            v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
            m = (np.abs(u) < a) & (np.abs(v) < b)
        elif kind == 2:  # stroke (a thick line segment)
            x2, y2 = rng.uniform(0, size, 2)
            wdt = rng.uniform(0.6, 4)
            dx, dy = x2 - cx, y2 - cy
            l2 = dx * dx + dy * dy + 1e-6
            s = (((xx - cx) * dx + (yy - cy) * dy) / l2).clip(0, 1)
            m = (xx - cx - s * dx) ** 2 + (yy - cy - s * dy) ** 2 < wdt ** 2
        elif kind == 3:  # stripes inside a disc
            r = rng.uniform(10, size / 3)
            f = rng.uniform(0.15, 0.9)
            th = rng.uniform(0, np.pi)
            m = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r) & (np.sin(f * (xx * np.cos(th) + yy * np.sin(th))) > 0)
        else:  # band-limited texture in a rectangle
            a, b = rng.uniform(10, size / 3, 2)
            box = (np.abs(xx - cx) < a) & (np.abs(yy - cy) < b)
            noise = ndi.gaussian_filter(rng.standard_normal((size, size)), rng.uniform(0.7, 2.5))
            noise = noise / (noise.std() + 1e-6)
            noise = np.repeat(np.repeat(noise, ss, 0), ss, 1)
            amp = rng.uniform(0.05, 0.25)
            img = np.where(box[None], (img + amp * noise[None] * col).clip(0, 1), img)
            continue
        img = np.where(m[None], col, img)
    img = img.reshape(3, size, ss, size, ss).mean(axis=(2, 4))
    sigma = rng.uniform(0, 0.5)
    if sigma > 0.2:
        img = ndi.gaussian_filter(img, (0, sigma, sigma))
    return img.astype(np.float32)


def skimage_rgb(name):
    from skimage import data, io
    import skimage
    path = os.path.join(os.path.dirname(data.__file__), name)
    img = io.imread(path)
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    img = img.astype(np.float32) / (65535.0 if img.dtype == np.uint16 else 255.0) if img.dtype != np.float32 else img
    if img.max() > 1.0:
        img = img / 255.0
    return np.ascontiguousarray(img.transpose(2, 0, 1)).astype(np.float32)


SR_TRAIN_FILES = ["brick.png", "grass.png", "gravel.png", "camera.png", "text.png", "page.png",
                  "coins.png", "moon.png", "retina.jpg", "ihc.png", "motorcycle_left.png", "hubble_deep_field.jpg", "color.png"]
SR_HELD_OUT_FILES = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]


def sr_infer(model, lr, margin=6):
    """Runs the numpy model on a whole (3,H,W) image the way the upscale
    stage does: edge-replicated margin, then crop."""
    x = np.pad(lr, ((0, 0), (margin, margin), (margin, margin)), mode="edge")[None]
    y = model.forward(x)[0]
    return y[:, 2 * margin:-2 * margin, 2 * margin:-2 * margin]


def train_sr(args, rng):
    t0 = time.time()
    sources = [procedural_image(rng) for _ in range(args.sr_procedural)]
    photos = []
    for f in SR_TRAIN_FILES:
        try:
            photos.append(skimage_rgb(f))
        except Exception as e:  # noqa: BLE001 - a missing sample only shrinks the set
            print(f"  (skipping {f}: {e})")
    sources += photos
    print(f"sr2x: {args.sr_procedural} procedural images + {len(photos)} scikit-image samples, "
          f"{time.time() - t0:.1f}s to build")
    model = SR(rng)
    opt = Adam(model.params(), lr=1e-3)
    hp, batch, crop = 48, 16, 8  # HR patch, batch, loss crop (HR px) against zero-padding edges
    start = time.time()
    for step in range(args.sr_steps):
        xs, ys = [], []
        for _ in range(batch):
            src = sources[rng.integers(len(sources))]
            _, h, w = src.shape
            y0, x0 = rng.integers(0, h - hp + 1) // 2 * 2, rng.integers(0, w - hp + 1) // 2 * 2
            hr = src[:, y0:y0 + hp, x0:x0 + hp]
            if rng.random() < 0.5:
                hr = hr[:, :, ::-1]
            if rng.random() < 0.5:
                hr = hr.transpose(0, 2, 1)
            hr = hr[rng.permutation(3)]
            ys.append(hr)
            xs.append(box_down2(hr))
        x, y = np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)
        out = model.forward(x)
        diff = (out - y)[:, :, crop:-crop, crop:-crop]
        loss = float(np.mean(diff ** 2))
        grad = np.zeros_like(out)
        grad[:, :, crop:-crop, crop:-crop] = 2 * diff / diff.size
        model.backward(grad)
        lr_scale = 0.5 * (1 + np.cos(np.pi * step / args.sr_steps))
        opt.step(model.grads(), lr_scale)
        if step % max(1, args.sr_steps // 8) == 0 or step == args.sr_steps - 1:
            print(f"  step {step:5d}  mse {loss:.6f}  ({time.time() - start:.0f}s)")
    return model


def eval_sr(model, rng):
    rows = []
    held = [(f, skimage_rgb(f)) for f in SR_HELD_OUT_FILES]
    eval_rng = np.random.default_rng(777)
    held += [(f"procedural #{k}", procedural_image(eval_rng, 160)) for k in range(4)]
    for name, hr in held:
        _, h, w = hr.shape
        hr = hr[:, :h // 2 * 2, :w // 2 * 2]
        lr = box_down2(hr)
        b = 8  # ignore an 8-px frame: edge handling differs between methods
        crop = lambda im: im[:, b:-b, b:-b]  # noqa: E731
        rows.append((name, psnr(crop(bilinear2x(lr)), crop(hr)), psnr(crop(bicubic2x(lr)), crop(hr)),
                     psnr(crop(sr_infer(model, lr)), crop(hr))))
    print("\nsr2x held-out PSNR (dB, 2x2 box-downscaled then upscaled 2x; 8-px frame ignored)")
    print(f"  {'image':<16} {'bilinear':>9} {'bicubic':>9} {'sr2x':>9} {'vs bicubic':>11}")
    for name, bl, bc, m in rows:
        print(f"  {name:<16} {bl:9.2f} {bc:9.2f} {m:9.2f} {m - bc:+11.2f}")
    mean = [float(np.mean([r[i] for r in rows])) for i in (1, 2, 3)]
    print(f"  {'mean':<16} {mean[0]:9.2f} {mean[1]:9.2f} {mean[2]:9.2f} {mean[2] - mean[1]:+11.2f}")
    return rows


# ---------------------------------------------------------------- cell_fg

def synth_cells(rng, w=128, h=128, cells=None, radius=(9.0, 16.0), clustered=0.4, illumination=0.3,
                photons=100.0, read_noise=2.0, bits=8):
    """A numpy port of host/accel/src/synth.rs: (samples uint16, truth labels)."""
    cells = cells if cells is not None else max(1, round(70 * w * h / (512 * 512)))
    placed = place_cells(rng, w, h, cells, radius, clustered, (0.6, 0.95), (0.55, 1.0), 0.78, (0.8, 0.95))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    signal, truth = render_cells(placed, xx, yy)
    ix, iy = rng.uniform(0, w), rng.uniform(0, h)
    reach2 = w * w + h * h
    light = 1 - illumination * np.minimum(((xx - ix) ** 2 + (yy - iy) ** 2) / reach2, 1)
    expected = photons * (0.08 + light * signal)
    counts = rng.poisson(expected) + read_noise * rng.standard_normal((h, w))
    full = 200.0 if bits == 8 else 200.0 * 256
    maxv = 255 if bits == 8 else 65535
    samples = np.clip(np.round(counts * full / photons), 0, maxv).astype(np.uint16)
    return samples, truth


def place_cells(rng, w, h, cells, radius, clustered, aspect, brightness, min_gap, touch, wobble=0.0):
    """synth.rs's placement: each cell free or against an earlier one (at
    `touch` x the summed mean radii), none closer than `min_gap` x that.
    Returns (cx, cy, a, b, angle, brightness, harmonics) tuples."""
    placed = []
    attempts = 0
    while len(placed) < cells and attempts < cells * 60:
        attempts += 1
        a = rng.uniform(*radius)
        b = a * rng.uniform(*aspect)
        mean_r = (a + b) / 2
        if placed and rng.random() < clustered:
            o = placed[rng.integers(len(placed))]
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(*touch) * (mean_r + (o[2] + o[3]) / 2)
            cx, cy = o[0] + dist * np.cos(ang), o[1] + dist * np.sin(ang)
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        if cx < 0 or cy < 0 or cx >= w or cy >= h:
            continue
        if any(np.hypot(o[0] - cx, o[1] - cy) < min_gap * (mean_r + (o[2] + o[3]) / 2) for o in placed):
            continue
        # An irregular outline: the radius modulated by harmonics 2..4 (none when wobble is 0).
        harm = [(k, rng.uniform(0, wobble) / k, rng.uniform(0, 2 * np.pi)) for k in (2, 3, 4)] if wobble > 0 else []
        placed.append((cx, cy, a, b, rng.uniform(0, np.pi), rng.uniform(*brightness), harm))
    return placed


def render_cells(placed, xx, yy):
    """Each cell a soft-edged dome (synth.rs's profile); truth labels where
    the normalised radius is below 1 (the nearest centre wins)."""
    h, w = xx.shape
    truth = np.zeros((h, w), np.int32)
    best = np.full((h, w), np.inf)
    signal = np.zeros((h, w))
    for k, (cx, cy, a, b, th, br, harm) in enumerate(placed):
        r = int(np.ceil(1.5 * max(a, b))) + 2
        y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 1)
        x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        dx, dy = xx[y0:y1, x0:x1] - cx, yy[y0:y1, x0:x1] - cy
        u = dx * np.cos(th) + dy * np.sin(th)
        v = -dx * np.sin(th) + dy * np.cos(th)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        if harm:
            phi = np.arctan2(v / b, u / a)
            rho = rho / (1 + sum(amp * np.cos(k * phi + ph) for k, amp, ph in harm))
        e = np.clip((1.1 - rho) / 0.2, 0, 1)
        e = e * e * (3 - 2 * e)
        signal[y0:y1, x0:x1] += br * e * (0.85 + 0.15 * np.maximum(1 - rho * rho, 0))
        sb, st = best[y0:y1, x0:x1], truth[y0:y1, x0:x1]
        inside = (rho < 1) & (rho < sb)
        sb[inside] = rho[inside]
        st[inside] = k + 1
    return signal, truth


def illumination_field(rng, w, h, kind, strength):
    """A multiplicative field in [1 - strength, 1]: linear in any direction,
    radial about a point near the centre (vignetting), or falling off from
    a random point (synth.rs's)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    if kind == "linear":
        ang = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(ang) + yy * np.sin(ang)
        t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    elif kind == "radial":
        cx, cy = w * rng.uniform(0.3, 0.7), h * rng.uniform(0.3, 0.7)
        t = np.minimum(((xx - cx) ** 2 + (yy - cy) ** 2) / (0.25 * (w * w + h * h)), 1)
    else:  # fall-off from a random point
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        t = np.sqrt(np.minimum(((xx - cx) ** 2 + (yy - cy) ** 2) / (w * w + h * h), 1))
    return 1 - strength * t


# The wide generator's parameter ranges. TRAIN is what cell_fg is trained
# on; each HELD_OUT entry changes some ranges to values beyond TRAIN's (or a
# combination TRAIN draws rarely), and no held-out image is drawn from TRAIN.
CELL_TRAIN = dict(
    radius_lo=(6.0, 13.0), radius_span=(1.15, 1.6),  # radii r_lo .. r_lo * span
    aspect=(0.55, 0.95), wobble=(0.0, 0.25),           # ellipse axis ratio; outline harmonics
    coverage=(0.08, 0.45), clustered=(0.0, 0.7),      # area share attempted; share placed touching
    dim=(0.15, 0.6),                                   # cell brightness drawn from [dim, 1]
    background=(0.03, 0.2),                            # background level (of a full-brightness cell)
    illum_kind=("linear", "radial", "falloff"), illumination=(0.0, 0.65),
    bg_gradient=(0.0, 0.6),                            # background varies by this share, its own direction
    photons=(12.0, 300.0), read_noise=(0.5, 6.0),      # shot noise from the photons; read noise in photons
    blur=(0.0, 1.2),                                   # optics (gaussian sigma, px)
    gain=(0.45, 1.3), bits16=0.4,
)


def held_out_sets():
    def v(**kw):
        return {**CELL_TRAIN, **kw}
    return [
        ("steep gradient", v(illumination=(0.75, 0.85), bg_gradient=(0.7, 0.9), illum_kind=("linear", "radial"))),
        ("dense clusters", v(coverage=(0.6, 0.7), clustered=(0.85, 0.95), radius_lo=(8.0, 10.0))),
        ("small cells", v(radius_lo=(4.0, 5.0), radius_span=(1.1, 1.3))),
        ("large cells", v(radius_lo=(17.0, 19.0), radius_span=(1.1, 1.3))),
        ("dim, noisy", v(photons=(8.0, 12.0), read_noise=(6.0, 8.0), dim=(0.1, 0.2))),
        ("all of them", v(illumination=(0.7, 0.8), coverage=(0.5, 0.6), clustered=(0.8, 0.9),
                          photons=(10.0, 15.0), read_noise=(5.0, 7.0), dim=(0.12, 0.2), gain=(0.3, 0.45))),
    ]


def synth_wide(rng, size, cfg):
    """One image of the wide generator: (x in [0, 1] as the host feeds the
    model, truth labels). Poisson shot noise plus gaussian read noise,
    quantised to 8 or 16 bits, then an exposure gain (clipped)."""
    u = lambda key: rng.uniform(*cfg[key])  # noqa: E731
    w = h = size
    r_lo = u("radius_lo")
    radius = (r_lo, r_lo * u("radius_span"))
    mean_area = np.pi * (sum(radius) / 2) ** 2 * np.mean(cfg["aspect"])
    cells = max(1, int(round(u("coverage") * w * h / mean_area)))
    dim = u("dim")
    placed = place_cells(rng, w, h, cells, radius, u("clustered"), cfg["aspect"], (dim, 1.0), 0.78,
                         (0.8, 0.95), wobble=u("wobble"))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    signal, truth = render_cells(placed, xx, yy)
    blur = u("blur")
    if blur > 0.3:
        signal = ndi.gaussian_filter(signal, blur)
    kind = cfg["illum_kind"][rng.integers(len(cfg["illum_kind"]))]
    light = illumination_field(rng, w, h, kind, u("illumination"))
    bg_light = illumination_field(rng, w, h, "linear", u("bg_gradient"))
    photons = u("photons")
    expected = photons * (u("background") * bg_light + light * signal)
    counts = rng.poisson(expected) + u("read_noise") * rng.standard_normal((h, w))
    bits = 16 if rng.random() < cfg["bits16"] else 8
    full = 200.0 if bits == 8 else 200.0 * 256
    maxv = 255 if bits == 8 else 65535
    samples = np.clip(np.round(counts * full / photons), 0, maxv)
    x = np.clip(samples / maxv * u("gain"), 0, 1).astype(np.float32)
    return x, truth


# cell_fg's layers: each a sum of 3x3 convs at these dilations, then ReLU.
# The first sees the pixel's neighbourhood and, through dilation 16, the
# background about 16 px away (the illumination it sits in); the rest
# widen the receptive field to 1 + 2 * (1 + 16 + 2 + 4 + 8 + 16) = 95 px.
CELL_LAYERS = [(1, 16), (2,), (4,), (8,), (16,)]


class CellFg:
    """bias=False keeps every bias at zero: the network is then positively
    homogeneous (f(a x) = a f(x) for a > 0, ReLU and convolutions only), so
    the mask p > 0.5 (logit > 0) does not change with the exposure gain, and
    bias-free networks hold up better at noise levels beyond their training
    ones (Mohan et al., ICLR 2020)."""

    def __init__(self, rng, width=16, layers=CELL_LAYERS, bias=True):
        self.bias = bias
        self.stages = []
        cin = 1
        for dils in layers:
            self.stages.append([Conv(rng, cin, width, d=d, scale=np.sqrt(2.0 / (cin * 9 * len(dils)))) for d in dils])
            cin = width
        self.head = Conv(rng, width, 1, k=1, scale=0.1)
        self.head.b[:] = -1.0 if bias else 0.0  # most pixels are background
        self.layers = [c for s in self.stages for c in s] + [self.head]

    def params(self):
        return [p for l in self.layers for p in l.params()]

    def grads(self):
        if self.bias:
            return [g for l in self.layers for g in l.grads()]
        return [g for l in self.layers for g in (l.gw, np.zeros_like(l.gb))]

    def forward(self, x):
        self.acts = []
        h = x
        for stage in self.stages:
            z = stage[0].forward(h)
            for c in stage[1:]:
                z = z + c.forward(h)
            h = relu_fwd(z)
            self.acts.append(h)
        self.logit = self.head.forward(h)
        return 1 / (1 + np.exp(-self.logit))

    def backward(self, dlogit):
        g = self.head.backward(dlogit)
        for stage, a in zip(reversed(self.stages), reversed(self.acts)):
            g = g * (a > 0)
            g = sum(c.backward(g) for c in stage)

    def infer(self, x, tile=192, margin=48):
        """forward() over tiles with a margin (the same numbers, less memory):
        (N,1,H,W) -> (N,1,H,W). margin covers the receptive field radius."""
        n, _, h, w = x.shape
        out = np.zeros((n, 1, h, w), np.float32)
        for y0 in range(0, h, tile):
            for x0 in range(0, w, tile):
                ya, xa = max(0, y0 - margin), max(0, x0 - margin)
                yb, xb = min(h, y0 + tile + margin), min(w, x0 + tile + margin)
                p = self.forward(x[:, :, ya:yb, xa:xb])
                ty, tx = min(tile, h - y0), min(tile, w - x0)
                out[:, :, y0:y0 + ty, x0:x0 + tx] = p[:, :, y0 - ya:y0 - ya + ty, x0 - xa:x0 - xa + tx]
        self.acts = None
        return out


def train_cells(args, rng):
    """Adam on BCE; each step draws `batch` new images from CELL_TRAIN (no
    image is seen twice), so the model sees steps x batch distinct images."""
    size, batch = args.cell_size, args.cell_batch
    model = CellFg(rng, width=args.cell_width, bias=not args.cell_no_bias)
    n_params = sum(p.size for p in model.params())
    print(f"\ncell_fg: {n_params} parameters; {args.cell_steps} steps x {batch} new {size}x{size} images "
          f"from the wide generator")
    opt = Adam(model.params(), lr=args.cell_lr)
    start = time.time()
    losses = []
    for step in range(args.cell_steps):
        xs, ts = [], []
        for _ in range(batch):
            x, truth = synth_wide(rng, size, CELL_TRAIN)
            k = rng.integers(4)
            xs.append(np.rot90(x, k))
            ts.append(np.rot90(truth > 0, k))
        x = np.stack(xs)[:, None].astype(np.float32)
        t = np.stack(ts)[:, None].astype(np.float32)
        p = model.forward(x)
        eps = 1e-6
        losses.append(float(-np.mean(t * np.log(p + eps) + (1 - t) * np.log(1 - p + eps))))
        model.backward(((p - t) / p.size).astype(np.float32))
        lr_scale = 0.5 * (1 + np.cos(np.pi * step / args.cell_steps))
        opt.step(model.grads(), lr_scale)
        if step % max(1, args.cell_steps // 10) == 0 or step == args.cell_steps - 1:
            recent = float(np.mean(losses[-50:]))
            print(f"  step {step:5d}  bce {recent:.4f} (mean of the last {min(50, len(losses))})  "
                  f"({time.time() - start:.0f}s)", flush=True)
    return model


def watershed_labels(mask, min_distance=5, min_area=30):
    from skimage import morphology, segmentation
    from skimage.feature import peak_local_max
    distance = ndi.distance_transform_edt(mask)
    label_mask, _ = ndi.label(mask)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=label_mask, exclude_border=False)
    markers = np.zeros(distance.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = segmentation.watershed(-distance, markers, mask=mask)
    labels = morphology.remove_small_objects(labels, max_size=min_area - 1) if min_area > 1 else labels
    return segmentation.relabel_sequential(labels)[0]


def ap50(truth, pred):
    """TP / (TP + FP + FN) at IoU >= 0.5 (as stagecraft_accel::metrics)."""
    nt, npred = truth.max(), pred.max()
    inter = np.bincount((truth.astype(np.int64) * (npred + 1) + pred).ravel(),
                        minlength=(nt + 1) * (npred + 1)).reshape(nt + 1, npred + 1)
    at, ap = inter.sum(1), inter.sum(0)
    iou = inter / np.maximum(at[:, None] + ap[None, :] - inter, 1)
    iou[0, :], iou[:, 0] = 0, 0
    pairs = sorted(((iou[i, j], i, j) for i, j in zip(*np.nonzero(iou >= 0.5))), reverse=True)
    used_t, used_p, tp = set(), set(), 0
    for _, i, j in pairs:
        if i not in used_t and j not in used_p:
            used_t.add(i), used_p.add(j)
            tp += 1
    return tp / max(nt + npred - tp, 1)


def otsu_mask(x):
    """The host's default foreground: gaussian (sigma 2), then Otsu's threshold."""
    from skimage import filters
    smooth = filters.gaussian(x, sigma=2.0, preserve_range=True)
    return smooth > filters.threshold_otsu(smooth)


def score(x, truth, predict):
    """(IoU Otsu, IoU model, AP@0.5 Otsu, AP@0.5 model) on one image."""
    otsu = otsu_mask(x)
    fg = predict(x[None, None])[0, 0] > 0.5
    t = truth > 0
    iou = lambda m: (m & t).sum() / max((m | t).sum(), 1)  # noqa: E731
    return (iou(otsu), iou(fg), ap50(truth, watershed_labels(otsu)), ap50(truth, watershed_labels(fg)))


def print_table(title, rows):
    print(f"\n{title}")
    print(f"  {'image':<18} {'IoU otsu':>9} {'IoU model':>10} {'AP otsu':>8} {'AP model':>9}")
    for r in rows:
        print(f"  {r[0]:<18} {r[1]:9.3f} {r[2]:10.3f} {r[3]:8.3f} {r[4]:9.3f}")
    m = [float(np.mean([r[i] for r in rows])) for i in range(1, 5)]
    print(f"  {'mean':<18} {m[0]:9.3f} {m[1]:10.3f} {m[2]:8.3f} {m[3]:9.3f}", flush=True)
    return m


def eval_cells(predict, held_out_images=2, held_out_size=384):
    """Two tables: synth.rs's default options (4 images of 512x512, as
    before), then each HELD_OUT configuration of the wide generator (mean
    over its images). Fixed seeds, none shared with training."""
    rng = np.random.default_rng(4242)
    rows = []
    for k in range(4):
        gain = [1.0, 1.0, 0.6, 1.2][k]
        samples, truth = synth_cells(rng, 512, 512, bits=8 if k != 1 else 16)
        x = np.clip(samples.astype(np.float32) / (255.0 if k != 1 else 65535.0) * gain, 0, 1)
        rows.append((f"{'16' if k == 1 else '8'}-bit gain {gain}",) + score(x, truth, predict))
    default = print_table("cell_fg held-out 512x512 images, synth.rs's default options "
                          "(foreground IoU; AP@0.5 of the same watershed)", rows)
    rows = []
    for k, (name, cfg) in enumerate(held_out_sets()):
        srng = np.random.default_rng(9100 + k)
        scores = [score(*synth_wide(srng, held_out_size, cfg), predict) for _ in range(held_out_images)]
        rows.append((name,) + tuple(float(np.mean([s[i] for s in scores])) for i in range(4)))
    harder = print_table(f"cell_fg held-out configurations of the wide generator, beyond its training ranges "
                         f"({held_out_images} images of {held_out_size}x{held_out_size} each, mean)", rows)
    return default, harder


class OnnxModel:
    """A written model file run by onnxruntime, with the numpy models'
    forward(): to score the shipped files (`--eval-only`)."""

    def __init__(self, path):
        import onnxruntime as ort
        self.sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])

    def forward(self, x):
        return self.sess.run(None, {"input": np.ascontiguousarray(x, np.float32)})[0]


# ---------------------------------------------------------------- ONNX

def conv_node(helper, numpy_helper, inits, name, conv, x, out):
    inits.append(numpy_helper.from_array(conv.w, f"{name}.weight"))
    inits.append(numpy_helper.from_array(conv.b, f"{name}.bias"))
    p = conv.d * (conv.k // 2)
    return helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [out], name=name,
                            kernel_shape=[conv.k, conv.k], dilations=[conv.d, conv.d], pads=[p, p, p, p],
                            strides=[1, 1])


def export_sr(model, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    inits, nodes = [], []
    nodes.append(conv_node(helper, numpy_helper, inits, "skip", model.skip, "input", "skip_out"))
    nodes.append(conv_node(helper, numpy_helper, inits, "conv1", model.c1, "input", "c1"))
    nodes.append(helper.make_node("Relu", ["c1"], ["r1"]))
    nodes.append(conv_node(helper, numpy_helper, inits, "conv2", model.c2, "r1", "c2"))
    nodes.append(helper.make_node("Relu", ["c2"], ["r2"]))
    nodes.append(conv_node(helper, numpy_helper, inits, "conv3", model.c3, "r2", "c3"))
    nodes.append(helper.make_node("Relu", ["c3"], ["r3"]))
    nodes.append(conv_node(helper, numpy_helper, inits, "conv4", model.c4, "r3", "c4"))
    nodes.append(helper.make_node("Add", ["skip_out", "c4"], ["sum"]))
    nodes.append(helper.make_node("DepthToSpace", ["sum"], ["output"], blocksize=2, mode="DCR"))
    graph = helper.make_graph(
        nodes, "sr2x",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, "H2", "W2"])],
        inits)
    save(onnx, helper, graph, path, "2x super-resolution, RGB NCHW in [0,1]")


def export_cells(model, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    inits, nodes = [], []
    x = "input"
    for k, stage in enumerate(model.stages):
        outs = []
        for j, c in enumerate(stage):
            name = f"conv{k + 1}" + ("" if len(stage) == 1 else "abcdefgh"[j])
            nodes.append(conv_node(helper, numpy_helper, inits, name, c, x, f"c{k + 1}{'abcdefgh'[j]}"))
            outs.append(f"c{k + 1}{'abcdefgh'[j]}")
        while len(outs) > 1:  # a stage's branches summed pairwise, then its ReLU
            s = f"{outs[0]}+{outs[1]}"
            nodes.append(helper.make_node("Add", outs[:2], [s]))
            outs = [s] + outs[2:]
        nodes.append(helper.make_node("Relu", outs, [f"r{k + 1}"]))
        x = f"r{k + 1}"
    nodes.append(conv_node(helper, numpy_helper, inits, "head", model.head, x, "logit"))
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["output"]))
    graph = helper.make_graph(
        nodes, "cell_fg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        inits)
    save(onnx, helper, graph, path, "cell foreground probability, gray NCHW = samples / max sample value")


def save(onnx, helper, graph, path, doc):
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="stagecraft make-models.py",
                          doc_string=doc)
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(m.SerializeToString())


def write_config(path, name, description, channels_in, channels_out, max_batch, batch_delay_ms):
    """The model repository's config.json. Shapes are per item (Triton's
    rule: no batch dimension; the batch is the leading ONNX dimension `N`),
    -1 for any size."""
    config = {
        "name": name,
        "description": description,
        "inputs": [{"name": "input", "shape": [channels_in, -1, -1], "type": "fp32"}],
        "outputs": [{"name": "output", "shape": [channels_out, -1, -1], "type": "fp32"}],
        "max_batch": max_batch,
        "instances": 1,
        "batch_delay_ms": batch_delay_ms,
    }
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")


def check_onnx(path, forward, x):
    """Runs the written file with onnxruntime (when installed) against the numpy forward pass."""
    try:
        import onnxruntime as ort
    except ImportError:
        print(f"  onnxruntime not installed: {path} checked by onnx.checker only")
        return
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    want = forward(x)
    err = float(np.abs(got - want).max())
    print(f"  {path}: onnxruntime output {tuple(got.shape)}, max |ort - numpy| = {err:.2e}")
    if got.shape != want.shape or err > 1e-4:
        sys.exit(f"{path}: onnxruntime disagrees with the numpy model (max error {err})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test; the files are not the shipped ones)")
    p.add_argument("--cells-only", action="store_true", help="train, score and write cell_fg only (sr2x left as it is)")
    p.add_argument("--eval-only", action="store_true",
                   help="score the models already in --out (onnxruntime) on the held-out tables; train nothing")
    p.add_argument("--sr-steps", type=int, default=1000)
    p.add_argument("--sr-procedural", type=int, default=40)
    p.add_argument("--cell-steps", type=int, default=1200)
    p.add_argument("--cell-batch", type=int, default=8)
    p.add_argument("--cell-size", type=int, default=96)
    p.add_argument("--cell-width", type=int, default=16)
    p.add_argument("--cell-lr", type=float, default=3e-3)
    p.add_argument("--cell-no-bias", action="store_true", help="cell_fg without biases (gain-invariant mask)")
    args = p.parse_args()
    if args.quick:
        args.sr_steps, args.sr_procedural, args.cell_steps = 20, 4, 20
    out = os.path.abspath(args.out)
    started = time.time()
    if args.eval_only:
        if not args.cells_only:
            eval_sr(OnnxModel(os.path.join(out, "sr2x", "model.onnx")), np.random.default_rng(1))
        eval_cells(OnnxModel(os.path.join(out, "cell_fg", "model.onnx")).forward)
        print(f"done in {time.time() - started:.0f}s")
        return

    paths = []
    if not args.cells_only:
        sr = train_sr(args, np.random.default_rng(20261123))
        eval_sr(sr, np.random.default_rng(1))
    cells = train_cells(args, np.random.default_rng(20261124))
    eval_cells(cells.infer)

    print("\nwriting")
    if not args.cells_only:
        sr_path = os.path.join(out, "sr2x", "model.onnx")
        export_sr(sr, sr_path)
        write_config(os.path.join(out, "sr2x", "config.json"), "sr2x",
                     "2x super-resolution: RGB in [0,1], N x 3 x H x W -> N x 3 x 2H x 2W (scripts/make-models.py)",
                     3, 3, max_batch=8, batch_delay_ms=2)
        check_onnx(sr_path, sr.forward, np.random.default_rng(5).uniform(0, 1, (2, 3, 24, 20)).astype(np.float32))
        paths.append(sr_path)
    cell_path = os.path.join(out, "cell_fg", "model.onnx")
    export_cells(cells, cell_path)
    write_config(os.path.join(out, "cell_fg", "config.json"), "cell_fg",
                 "cell foreground probability: gray samples / (2^bits - 1), N x 1 x H x W -> N x 1 x H x W (scripts/make-models.py)",
                 1, 1, max_batch=4, batch_delay_ms=2)
    check_onnx(cell_path, cells.forward, np.random.default_rng(6).uniform(0, 1, (2, 1, 40, 36)).astype(np.float32))
    paths.append(cell_path)
    for path in paths:
        print(f"  {os.path.relpath(path)}: {os.path.getsize(path) / 1024:.1f} KiB")
    print(f"done in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
