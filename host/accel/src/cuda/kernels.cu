// stagecraft segmentation kernels, compiled by NVRTC at start-up (see
// compile.rs) with --fmad=false so every float step rounds as the CPU path
// does (Rust never contracts a*b+c into an FMA). Each kernel mirrors one
// CPU function in host/accel/src/segment/*; the comments name it.
//
// Conventions: one thread per pixel on a 1-D grid (i = block * dim + thread,
// x = i % w, y = i / w) unless said otherwise; every kernel checks its
// bounds; n = w * h fits in 32 bits (GrayImage::MAX_PIXELS is 1e8).

typedef unsigned int u32;
typedef unsigned long long u64;
typedef unsigned short u16;
typedef unsigned char u8;

#define EDT_INF 1e20f
#define NONE 0xFFFFFFFFu
#define MAX_BUCKETS 65536u
// NVRTC has no <math.h>: infinities by their bits.
#define POS_INF __int_as_float(0x7f800000)
#define NEG_INF __int_as_float((int)0xff800000)

__device__ __forceinline__ u32 global_id() { return blockIdx.x * blockDim.x + threadIdx.x; }

__device__ __forceinline__ int clampi(int v, int lo, int hi) { return v < lo ? lo : (v > hi ? hi : v); }

// GrayImage::to_f32.
extern "C" __global__ void to_f32(const u16* __restrict__ src, float* __restrict__ dst, u32 n) {
    u32 i = global_id();
    if (i < n) dst[i] = (float)src[i];
}

// blur::gaussian, horizontal pass: nearest-edge padding, taps summed in
// order from 0.0 as the CPU does.
extern "C" __global__ void blur_rows(const float* __restrict__ src, float* __restrict__ dst,
                                     const float* __restrict__ k, int r, int w, int h) {
    u32 i = global_id();
    if (i >= (u32)w * (u32)h) return;
    int x = (int)(i % (u32)w);
    const float* row = src + (i - (u32)x);
    float acc = 0.0f;
    for (int j = 0; j <= 2 * r; ++j) {
        int sx = clampi(x + j - r, 0, w - 1);
        acc += k[j] * row[sx];
    }
    dst[i] = acc;
}

// blur::gaussian, vertical pass.
extern "C" __global__ void blur_cols(const float* __restrict__ src, float* __restrict__ dst,
                                     const float* __restrict__ k, int r, int w, int h) {
    u32 i = global_id();
    if (i >= (u32)w * (u32)h) return;
    int x = (int)(i % (u32)w);
    int y = (int)(i / (u32)w);
    float acc = 0.0f;
    for (int j = 0; j <= 2 * r; ++j) {
        int sy = clampi(y + j - r, 0, h - 1);
        acc += k[j] * src[(u64)sy * (u64)w + (u64)x];
    }
    dst[i] = acc;
}

// otsu::threshold, step 1: min and max of the image. One block of 1024
// threads (launch with exactly that); out[0] = min, out[1] = max.
extern "C" __global__ void minmax(const float* __restrict__ v, u32 n, float* __restrict__ out) {
    __shared__ float lo_s[1024];
    __shared__ float hi_s[1024];
    u32 t = threadIdx.x;
    float lo = POS_INF, hi = NEG_INF;
    for (u32 i = t; i < n; i += blockDim.x) {
        lo = fminf(lo, v[i]);
        hi = fmaxf(hi, v[i]);
    }
    lo_s[t] = lo;
    hi_s[t] = hi;
    __syncthreads();
    for (u32 s = blockDim.x / 2; s > 0; s >>= 1) {
        if (t < s) {
            lo_s[t] = fminf(lo_s[t], lo_s[t + s]);
            hi_s[t] = fmaxf(hi_s[t], hi_s[t + s]);
        }
        __syncthreads();
    }
    if (t == 0) {
        out[0] = lo_s[0];
        out[1] = hi_s[0];
    }
}

// otsu::threshold, step 2: the 256-bin histogram over [min, max]
// (hist must be zeroed). Block-local counts in shared memory first.
extern "C" __global__ void histogram(const float* __restrict__ v, u32 n, const float* __restrict__ mm,
                                     u32* __restrict__ hist) {
    __shared__ u32 local[256];
    for (u32 b = threadIdx.x; b < 256; b += blockDim.x) local[b] = 0;
    __syncthreads();
    float lo = mm[0], hi = mm[1];
    u32 i = global_id();
    if (i < n && hi > lo) {
        float scale = 256.0f / (hi - lo);
        int bin = (int)((v[i] - lo) * scale);
        bin = clampi(bin, 0, 255);
        atomicAdd(&local[bin], 1u);
    }
    __syncthreads();
    for (u32 b = threadIdx.x; b < 256; b += blockDim.x) {
        if (local[b] != 0) atomicAdd(&hist[b], local[b]);
    }
}

// otsu::threshold, step 3: the split with the largest between-class
// variance, in double as the CPU. One thread (launch 1x1).
extern "C" __global__ void otsu_threshold(const u32* __restrict__ hist, const float* __restrict__ mm,
                                          float* __restrict__ out) {
    if (blockIdx.x != 0 || threadIdx.x != 0) return;
    float lo = mm[0], hi = mm[1];
    if (!(hi > lo)) {
        out[0] = lo;
        return;
    }
    float bin_width = (hi - lo) / 256.0f;
    double total = 0.0, total_mass = 0.0;
    for (int i = 0; i < 256; ++i) total += (double)hist[i];
    for (int i = 0; i < 256; ++i) {
        float centre = lo + ((float)i + 0.5f) * bin_width;
        total_mass += (double)hist[i] * (double)centre;
    }
    double w0 = 0.0, m0 = 0.0, best = -1.0;
    int best_split = 0;
    for (int i = 0; i < 255; ++i) {
        float centre = lo + ((float)i + 0.5f) * bin_width;
        w0 += (double)hist[i];
        m0 += (double)hist[i] * (double)centre;
        double w1 = total - w0;
        if (w0 == 0.0 || w1 == 0.0) continue;
        double diff = m0 / w0 - (total_mass - m0) / w1;
        double between = w0 * w1 * diff * diff;
        if (between > best) {
            best = between;
            best_split = i;
        }
    }
    out[0] = lo + ((float)best_split + 0.5f) * bin_width;
}

// Foreground: value > threshold (Otsu), or probability > 0.5.
extern "C" __global__ void mask_above(const float* __restrict__ v, const float* __restrict__ t, u32 n,
                                      u8* __restrict__ mask) {
    u32 i = global_id();
    if (i < n) mask[i] = v[i] > t[0] ? 1 : 0;
}

extern "C" __global__ void mask_probability(const float* __restrict__ p, u32 n, u8* __restrict__ mask) {
    u32 i = global_id();
    if (i < n) mask[i] = p[i] > 0.5f ? 1 : 0;
}

// edt::distance_transform, column pass: one thread per column, down then
// up, then squared (EDT_INF where no background is in the column).
extern "C" __global__ void edt_columns(const u8* __restrict__ mask, float* __restrict__ g, int w, int h) {
    u32 x = global_id();
    if (x >= (u32)w) return;
    float prev = 0.0f;
    for (int y = 0; y < h; ++y) {
        u64 i = (u64)y * (u64)w + x;
        float d;
        if (mask[i]) {
            d = (y == 0) ? EDT_INF : fminf(prev + 1.0f, EDT_INF);
        } else {
            d = 0.0f;
        }
        g[i] = d;
        prev = d;
    }
    for (int y = h - 2; y >= 0; --y) {
        u64 i = (u64)y * (u64)w + x;
        float c = g[i + (u64)w] + 1.0f;
        if (c < g[i]) g[i] = c;
    }
    for (int y = 0; y < h; ++y) {
        u64 i = (u64)y * (u64)w + x;
        float d = g[i];
        g[i] = d >= EDT_INF ? EDT_INF : d * d;
    }
}

// edt::dt_1d over each row (Felzenszwalb-Huttenlocher lower envelope), one
// thread per row, in place; f, v and z are per-row scratch (w, w and w + 1
// long per row).
extern "C" __global__ void edt_rows(float* __restrict__ g, float* __restrict__ fs, int* __restrict__ vs,
                                    float* __restrict__ zs, int w, int h) {
    u32 y = global_id();
    if (y >= (u32)h) return;
    float* line = g + (u64)y * (u64)w;
    float* f = fs + (u64)y * (u64)w;
    int* v = vs + (u64)y * (u64)w;
    float* z = zs + (u64)y * (u64)(w + 1);
    int first = -1;
    bool all_zero = true;
    for (int q = 0; q < w; ++q) {
        if (first < 0 && line[q] < EDT_INF) first = q;
        if (line[q] != 0.0f) all_zero = false;
    }
    if (first < 0 || all_zero) return;
    for (int q = 0; q < w; ++q) f[q] = line[q];
    int k = 0;
    v[0] = first;
    z[0] = NEG_INF;
    z[1] = POS_INF;
    for (int q = first + 1; q < w; ++q) {
        if (f[q] >= EDT_INF) continue;
        long long fq = (long long)f[q] + (long long)q * (long long)q;
        float s;
        while (true) {
            int p = v[k];
            long long fp = (long long)f[p] + (long long)p * (long long)p;
            s = (float)(fq - fp) / (float)(2 * (q - p));
            if (s <= z[k]) {
                k -= 1;  // z[0] is -inf, so k never goes below 0
            } else {
                break;
            }
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = POS_INF;
    }
    k = 0;
    for (int q = 0; q < w; ++q) {
        while (z[k + 1] < (float)q) k += 1;
        int p = v[k];
        float dq = (float)q - (float)p;
        line[q] = dq * dq + f[p];
    }
}

// edt::distance_transform, last step: squared distance to distance.
extern "C" __global__ void edt_sqrt(float* __restrict__ g, u32 n) {
    u32 i = global_id();
    if (i >= n) return;
    float v = g[i];
    g[i] = v >= EDT_INF ? 1e10f : sqrtf(v);
}

__device__ bool is_window_max(const float* d, int w, int h, int x, int y, int r) {
    float c = d[(u64)y * (u64)w + (u64)x];
    int y0 = max(y - r, 0), y1 = min(y + r + 1, h);
    int x0 = max(x - r, 0), x1 = min(x + r + 1, w);
    for (int sy = y0; sy < y1; ++sy) {
        const float* row = d + (u64)sy * (u64)w;
        for (int sx = x0; sx < x1; ++sx) {
            if (row[sx] > c) return false;
        }
    }
    return true;
}

// peaks::candidates: foreground maxima of their (2r + 1) window, appended
// (in no particular order) to cand/cand_d; count must be zeroed. The host
// sorts them and runs the plateau and spacing rules (peaks::select).
extern "C" __global__ void peak_candidates(const float* __restrict__ d, const u8* __restrict__ mask, int w,
                                           int h, int r, u32* __restrict__ cand, float* __restrict__ cand_d,
                                           u32* __restrict__ count) {
    u32 i = global_id();
    if (i >= (u32)w * (u32)h) return;
    float c = d[i];
    if (c <= 0.0f || !mask[i]) return;
    int x = (int)(i % (u32)w), y = (int)(i / (u32)w);
    if (!is_window_max(d, w, h, x, y, 1)) return;
    if (r > 1 && !is_window_max(d, w, h, x, y, r)) return;
    u32 slot = atomicAdd(count, 1u);
    if (slot < (u32)w * (u32)h) {
        cand[slot] = i;
        cand_d[slot] = c;
    }
}

// Writes markers: labels[at[k]] = k + 1 (labels zeroed before).
extern "C" __global__ void scatter_markers(const u32* __restrict__ at, u32 count, u32 n, u32* __restrict__ labels) {
    u32 k = global_id();
    if (k < count && at[k] < n) labels[at[k]] = k + 1;
}

// watershed's bucket index of a distance (the same float steps as the CPU).
__device__ __forceinline__ u32 level_of(float d, float dmax, float per_pixel) {
    float c = fminf(fmaxf(d, 0.0f), dmax) * per_pixel;
    u32 l = (u32)c;
    return l > MAX_BUCKETS ? MAX_BUCKETS : l;
}

// The largest foreground distance, capped at 1e10, by one block of 1024.
extern "C" __global__ void masked_max(const float* __restrict__ d, const u8* __restrict__ mask, u32 n,
                                      float* __restrict__ out) {
    __shared__ float s[1024];
    u32 t = threadIdx.x;
    float m = 0.0f;
    for (u32 i = t; i < n; i += blockDim.x) {
        if (mask[i]) m = fmaxf(m, d[i]);
    }
    s[t] = m;
    __syncthreads();
    for (u32 k = blockDim.x / 2; k > 0; k >>= 1) {
        if (t < k) s[t] = fmaxf(s[t], s[t + k]);
        __syncthreads();
    }
    if (t == 0) out[0] = fminf(s[0], 1e10f);
}

// Which buckets hold a foreground pixel (present must be zeroed, top + 1 long).
extern "C" __global__ void level_presence(const float* __restrict__ d, const u8* __restrict__ mask, u32 n,
                                          float dmax, float per_pixel, u32 top, u32* __restrict__ present) {
    u32 i = global_id();
    if (i >= n || !mask[i]) return;
    u32 l = level_of(d[i], dmax, per_pixel);
    if (l > top) l = top;
    present[l] = 1;
}

// One synchronous step of the level-by-level flood (the parallel stand-in
// for watershed::watershed's priority queue): an unlabelled foreground
// pixel takes the label of a labelled 4-neighbour whose level is >= the
// current level (a pixel the CPU queue would already have expanded); of
// several, the one farthest from the background, then the lowest label.
extern "C" __global__ void flood_step(const float* __restrict__ d, const u8* __restrict__ mask,
                                      const u32* __restrict__ src, u32* __restrict__ dst, int w, int h,
                                      float dmax, float per_pixel, u32 level, u32* __restrict__ changed) {
    u32 i = global_id();
    if (i >= (u32)w * (u32)h) return;
    u32 own = src[i];
    if (own != 0 || !mask[i]) {
        dst[i] = own;
        return;
    }
    int x = (int)(i % (u32)w), y = (int)(i / (u32)w);
    u32 best = 0;
    float best_d = -1.0f;
    u32 nb[4];
    bool ok[4] = {x > 0, x + 1 < w, y > 0, y + 1 < h};
    nb[0] = i - 1;
    nb[1] = i + 1;
    nb[2] = i - (u32)w;
    nb[3] = i + (u32)w;
    for (int k = 0; k < 4; ++k) {
        if (!ok[k]) continue;
        u32 j = nb[k];
        u32 l = src[j];
        if (l == 0 || !mask[j]) continue;
        float dj = d[j];
        if (level_of(dj, dmax, per_pixel) < level) continue;
        if (dj > best_d || (dj == best_d && l < best)) {
            best = l;
            best_d = dj;
        }
    }
    dst[i] = best;
    if (best != 0) changed[0] = 1;
}

// watershed::label_unreached, step 1: foreground pixels no marker reached
// start as their own index; others are NONE. any[0] is set if there are some.
extern "C" __global__ void unreached_init(const u8* __restrict__ mask, const u32* __restrict__ labels, u32 n,
                                          u32* __restrict__ comp, u32* __restrict__ any) {
    u32 i = global_id();
    if (i >= n) return;
    bool u = mask[i] && labels[i] == 0;
    comp[i] = u ? i : NONE;
    if (u) any[0] = 1;
}

// Step 2, iterated until stable: each unreached pixel takes the smallest
// index among itself, its 4-neighbours and what its current index points
// at (pointer jumping), so a component ends labelled by its first pixel
// in raster order.
extern "C" __global__ void unreached_step(const u32* __restrict__ src, u32* __restrict__ dst, int w, int h,
                                          u32* __restrict__ changed) {
    u32 i = global_id();
    if (i >= (u32)w * (u32)h) return;
    u32 own = src[i];
    if (own == NONE) {
        dst[i] = NONE;
        return;
    }
    int x = (int)(i % (u32)w), y = (int)(i / (u32)w);
    u32 m = own;
    u32 jumped = src[own];  // own is a pixel of the same component
    if (jumped < m) m = jumped;
    if (x > 0 && src[i - 1] < m) m = src[i - 1];
    if (x + 1 < w && src[i + 1] < m) m = src[i + 1];
    if (y > 0 && src[i - (u32)w] < m) m = src[i - (u32)w];
    if (y + 1 < h && src[i + (u32)w] < m) m = src[i + (u32)w];
    dst[i] = m;
    if (m != own) changed[0] = 1;
}

// Step 3: provisional labels in one label space (seeds first, then the
// unreached components by their first pixel, as the CPU numbers them),
// and the area of each (area zeroed, seeds + 1 + n long).
extern "C" __global__ void provisional_labels(u32* __restrict__ labels, const u32* __restrict__ comp, u32 n,
                                              u32 seeds, u32* __restrict__ area) {
    u32 i = global_id();
    if (i >= n) return;
    u32 l = labels[i];
    if (l == 0 && comp[i] != NONE) l = seeds + 1 + comp[i];
    labels[i] = l;
    if (l != 0) atomicAdd(&area[l], 1u);
}

// label::drop_small_and_relabel, step 1: keep[l] = 1 for labels with an
// area of at least min_area (and at least one pixel).
extern "C" __global__ void keep_flags(const u32* __restrict__ area, u32 len, u32 min_area, u32* __restrict__ keep) {
    u32 l = global_id();
    if (l >= len) return;
    keep[l] = (l != 0 && area[l] > 0 && area[l] >= min_area) ? 1u : 0u;
}

// Step 2: exclusive prefix sum in place, by one block of 1024 threads
// (each scans a contiguous chunk); total[0] = the sum.
extern "C" __global__ void exclusive_scan(u32* __restrict__ a, u32 len, u32* __restrict__ total) {
    __shared__ u32 partial[1024];
    u32 t = threadIdx.x, threads = blockDim.x;
    u32 chunk = (len + threads - 1) / threads;
    u32 begin = t * chunk;
    u32 end = begin + chunk;
    if (begin > len) begin = len;
    if (end > len) end = len;
    u32 sum = 0;
    for (u32 k = begin; k < end; ++k) sum += a[k];
    partial[t] = sum;
    __syncthreads();
    if (t == 0) {
        u32 run = 0;
        for (u32 k = 0; k < threads; ++k) {
            u32 v = partial[k];
            partial[k] = run;
            run += v;
        }
        total[0] = run;
    }
    __syncthreads();
    u32 run = partial[t];
    for (u32 k = begin; k < end; ++k) {
        u32 v = a[k];
        a[k] = run;
        run += v;
    }
}

// Step 3: final labels 1..=N in the order of the provisional ones.
extern "C" __global__ void relabel(u32* __restrict__ labels, u32 n, const u32* __restrict__ area,
                                   const u32* __restrict__ rank, u32 min_area) {
    u32 i = global_id();
    if (i >= n) return;
    u32 l = labels[i];
    if (l == 0) return;
    u32 a = area[l];
    labels[i] = (a > 0 && a >= min_area) ? rank[l] + 1 : 0;
}

// measure::measure: per-label sums with atomics. sums is 4 u64 per label
// (area, x, y, intensity), box 4 u32 per label (x0, y0 = 0xFFFFFFFF;
// x1, y1 = 0 before); index 0 is label 1.
extern "C" __global__ void measure_init(u32* __restrict__ box, u32 count) {
    u32 k = global_id();
    if (k >= count) return;
    box[4 * k + 0] = NONE;
    box[4 * k + 1] = NONE;
    box[4 * k + 2] = 0;
    box[4 * k + 3] = 0;
}

extern "C" __global__ void measure(const u32* __restrict__ labels, const u16* __restrict__ intensity, int w,
                                   int h, u32 count, u64* __restrict__ sums, u32* __restrict__ box) {
    u32 i = global_id();
    if (i >= (u32)w * (u32)h) return;
    u32 l = labels[i];
    if (l == 0 || l > count) return;
    u32 k = l - 1;
    u32 x = i % (u32)w, y = i / (u32)w;
    atomicAdd(&sums[4 * k + 0], 1ull);
    atomicAdd(&sums[4 * k + 1], (u64)x);
    atomicAdd(&sums[4 * k + 2], (u64)y);
    atomicAdd(&sums[4 * k + 3], (u64)intensity[i]);
    atomicMin(&box[4 * k + 0], x);
    atomicMin(&box[4 * k + 1], y);
    atomicMax(&box[4 * k + 2], x);
    atomicMax(&box[4 * k + 3], y);
}
