#!/usr/bin/env python3
"""Trains and writes stagecraft's two shipped ONNX models, with no downloads.

    pip install numpy scipy scikit-image onnx onnxruntime   # onnxruntime only checks
    python3 scripts/make-models.py [--out models] [--quick]

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
  raw samples divided by the bit depth's maximum (255 or 65535). Four 3x3
  convs with dilations 1, 2, 4, 8 (receptive field 31 px, a cell's
  diameter), a 1x1 conv and a sigmoid. Trained on a numpy port of
  `host/accel/src/synth.rs` (same distributions, not bit-identical images)
  with gain/illumination/noise augmentation; evaluated on held-out images
  by mask IoU and by AP@0.5 of the same watershed pipeline fed by Otsu vs
  by the model (scikit-image, as `scripts/bench-skimage.py`).

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
    placed = []
    attempts = 0
    while len(placed) < cells and attempts < cells * 60:
        attempts += 1
        a = rng.uniform(*radius)
        b = a * rng.uniform(0.6, 0.95)
        mean_r = (a + b) / 2
        if placed and rng.random() < clustered:
            o = placed[rng.integers(len(placed))]
            ang = rng.uniform(0, 2 * np.pi)
            dist = rng.uniform(0.8, 0.95) * (mean_r + (o[2] + o[3]) / 2)
            cx, cy = o[0] + dist * np.cos(ang), o[1] + dist * np.sin(ang)
        else:
            cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        if cx < 0 or cy < 0 or cx >= w or cy >= h:
            continue
        if any(np.hypot(o[0] - cx, o[1] - cy) < 0.78 * (mean_r + (o[2] + o[3]) / 2) for o in placed):
            continue
        placed.append((cx, cy, a, b, rng.uniform(0, np.pi), rng.uniform(0.55, 1.0)))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    truth = np.zeros((h, w), np.int32)
    best = np.full((h, w), np.inf)
    signal = np.zeros((h, w))
    for k, (cx, cy, a, b, th, br) in enumerate(placed):
        dx, dy = xx - cx, yy - cy
        u = dx * np.cos(th) + dy * np.sin(th)
        v = -dx * np.sin(th) + dy * np.cos(th)
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        e = np.clip((1.1 - rho) / 0.2, 0, 1)
        e = e * e * (3 - 2 * e)
        signal += br * e * (0.85 + 0.15 * np.maximum(1 - rho * rho, 0))
        inside = (rho < 1) & (rho < best)
        best[inside] = rho[inside]
        truth[inside] = k + 1
    ix, iy = rng.uniform(0, w), rng.uniform(0, h)
    reach2 = w * w + h * h
    light = 1 - illumination * np.minimum(((xx - ix) ** 2 + (yy - iy) ** 2) / reach2, 1)
    expected = photons * (0.08 + light * signal)
    counts = rng.poisson(expected) + read_noise * rng.standard_normal((h, w))
    full = 200.0 if bits == 8 else 200.0 * 256
    maxv = 255 if bits == 8 else 65535
    samples = np.clip(np.round(counts * full / photons), 0, maxv).astype(np.uint16)
    return samples, truth


class CellFg:
    def __init__(self, rng, width=16):
        self.convs = [Conv(rng, 1, width, d=1), Conv(rng, width, width, d=2),
                      Conv(rng, width, width, d=4), Conv(rng, width, width, d=8)]
        self.head = Conv(rng, width, 1, k=1, scale=0.1)
        self.head.b[:] = -1.0  # most pixels are background
        self.layers = self.convs + [self.head]

    def params(self):
        return [p for l in self.layers for p in l.params()]

    def grads(self):
        return [g for l in self.layers for g in l.grads()]

    def forward(self, x):
        self.acts = []
        h = x
        for c in self.convs:
            h = relu_fwd(c.forward(h))
            self.acts.append(h)
        self.logit = self.head.forward(h)
        return 1 / (1 + np.exp(-self.logit))

    def backward(self, dlogit):
        g = self.head.backward(dlogit)
        for c, a in zip(reversed(self.convs), reversed(self.acts)):
            g = c.backward(g * (a > 0))


def cell_sample(rng, size):
    """One augmented training image: varied photons, illumination, gain, depth."""
    bits = 16 if rng.random() < 0.3 else 8
    samples, truth = synth_cells(rng, size, size, cells=rng.integers(3, 9), photons=rng.uniform(40, 250),
                                 illumination=rng.uniform(0, 0.5), read_noise=rng.uniform(1, 4), bits=bits)
    x = samples.astype(np.float32) / (255.0 if bits == 8 else 65535.0)
    x = np.clip(x * rng.uniform(0.5, 1.25), 0, 1)  # exposure differences between instruments
    return x, (truth > 0).astype(np.float32)


def train_cells(args, rng):
    size = 80
    t0 = time.time()
    pool = [cell_sample(rng, size) for _ in range(args.cell_pool)]
    print(f"\ncell_fg: {len(pool)} synthetic {size}x{size} images, {time.time() - t0:.1f}s to build")
    model = CellFg(rng)
    opt = Adam(model.params(), lr=3e-3)
    batch = 6
    start = time.time()
    for step in range(args.cell_steps):
        idx = rng.integers(0, len(pool), batch)
        xs, ts = [], []
        for i in idx:
            x, t = pool[i]
            k = rng.integers(4)
            xs.append(np.rot90(x, k))
            ts.append(np.rot90(t, k))
        x = np.stack(xs)[:, None].astype(np.float32)
        t = np.stack(ts)[:, None].astype(np.float32)
        p = model.forward(x)
        eps = 1e-6
        loss = float(-np.mean(t * np.log(p + eps) + (1 - t) * np.log(1 - p + eps)))
        model.backward(((p - t) / p.size).astype(np.float32))
        lr_scale = 0.5 * (1 + np.cos(np.pi * step / args.cell_steps))
        opt.step(model.grads(), lr_scale)
        if step % max(1, args.cell_steps // 8) == 0 or step == args.cell_steps - 1:
            print(f"  step {step:5d}  bce {loss:.4f}  ({time.time() - start:.0f}s)")
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


def eval_cells(model):
    from skimage import filters
    rng = np.random.default_rng(4242)
    rows = []
    for k in range(4):
        gain = [1.0, 1.0, 0.6, 1.2][k]
        samples, truth = synth_cells(rng, 512, 512, bits=8 if k != 1 else 16)
        x = np.clip(samples.astype(np.float32) / (255.0 if k != 1 else 65535.0) * gain, 0, 1)
        smooth = filters.gaussian(x, sigma=2.0, preserve_range=True)
        otsu = smooth > filters.threshold_otsu(smooth)
        prob = model.forward(x[None, None])[0, 0]
        fg = prob > 0.5
        t = truth > 0
        iou = lambda m: (m & t).sum() / (m | t).sum()  # noqa: E731
        rows.append((f"{'16' if k == 1 else '8'}-bit gain {gain}", iou(otsu), iou(fg),
                     ap50(truth, watershed_labels(otsu)), ap50(truth, watershed_labels(fg))))
    print("\ncell_fg held-out 512x512 synthetic images (foreground IoU; AP@0.5 of the same watershed)")
    print(f"  {'image':<18} {'IoU otsu':>9} {'IoU model':>10} {'AP otsu':>8} {'AP model':>9}")
    for r in rows:
        print(f"  {r[0]:<18} {r[1]:9.3f} {r[2]:10.3f} {r[3]:8.3f} {r[4]:9.3f}")
    m = [float(np.mean([r[i] for r in rows])) for i in range(1, 5)]
    print(f"  {'mean':<18} {m[0]:9.3f} {m[1]:10.3f} {m[2]:8.3f} {m[3]:9.3f}")
    return rows


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
    for k, c in enumerate(model.convs):
        nodes.append(conv_node(helper, numpy_helper, inits, f"conv{k + 1}", c, x, f"c{k + 1}"))
        nodes.append(helper.make_node("Relu", [f"c{k + 1}"], [f"r{k + 1}"]))
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
    p.add_argument("--sr-steps", type=int, default=1000)
    p.add_argument("--sr-procedural", type=int, default=40)
    p.add_argument("--cell-steps", type=int, default=500)
    p.add_argument("--cell-pool", type=int, default=160)
    args = p.parse_args()
    if args.quick:
        args.sr_steps, args.sr_procedural, args.cell_steps, args.cell_pool = 20, 4, 20, 16
    out = os.path.abspath(args.out)
    started = time.time()

    sr = train_sr(args, np.random.default_rng(20261123))
    eval_sr(sr, np.random.default_rng(1))
    cells = train_cells(args, np.random.default_rng(20261124))
    eval_cells(cells)

    print("\nwriting")
    sr_path = os.path.join(out, "sr2x", "model.onnx")
    export_sr(sr, sr_path)
    write_config(os.path.join(out, "sr2x", "config.json"), "sr2x",
                 "2x super-resolution: RGB in [0,1], N x 3 x H x W -> N x 3 x 2H x 2W (scripts/make-models.py)",
                 3, 3, max_batch=8, batch_delay_ms=2)
    check_onnx(sr_path, sr.forward, np.random.default_rng(5).uniform(0, 1, (2, 3, 24, 20)).astype(np.float32))
    cell_path = os.path.join(out, "cell_fg", "model.onnx")
    export_cells(cells, cell_path)
    write_config(os.path.join(out, "cell_fg", "config.json"), "cell_fg",
                 "cell foreground probability: gray samples / (2^bits - 1), N x 1 x H x W -> N x 1 x H x W (scripts/make-models.py)",
                 1, 1, max_batch=4, batch_delay_ms=2)
    check_onnx(cell_path, cells.forward, np.random.default_rng(6).uniform(0, 1, (2, 1, 40, 36)).astype(np.float32))
    for path in (sr_path, cell_path):
        print(f"  {os.path.relpath(path)}: {os.path.getsize(path) / 1024:.1f} KiB")
    print(f"done in {time.time() - started:.0f}s")


if __name__ == "__main__":
    main()
