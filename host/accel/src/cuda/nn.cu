// The operators of the shipped ONNX models as CUDA C kernels (see
// cuda/net.rs, which plans their launches): a direct 2-D convolution with
// shared-memory tiling and bias (+ ReLU) fused, ReLU, Sigmoid, Add (+ ReLU)
// and DepthToSpace. Tensors are fp32 NCHW. Every kernel takes its pointers
// first and then `int`s, in the order net.rs pushes them, and runs on a 1-D
// grid of 1-D blocks (the CPU shim in tests/emulate runs them unchanged).

// Output tile of one convolution block: TILE x TILE pixels, one a thread.
#define TILE 16
// Largest (k - 1) * dilation along either axis (net.rs checks it).
#define MAX_SPAN 32
// Largest kh * kw (net.rs checks it).
#define MAX_TAPS 49
// Output channels one thread accumulates (reuses each loaded input pixel).
#define COUT_BLOCK 8

// y[n, co, oy, ox] = bias[co] + sum_{ci, ky, kx} w[co, ci, ky, kx] *
//   x[n, ci, oy - pt + ky * dh, ox - pl + kx * dw]  (zero outside), then
// ReLU when `relu`. Block: TILE * TILE threads; grid: tiles_x * tiles_y *
// ceil(cout / COUT_BLOCK) * n blocks. For each input channel the block
// loads the input patch its tile needs and the weights of its output
// channels into shared memory, then every thread sums its pixel.
extern "C" __global__ void conv2d(const float* __restrict__ x, float* __restrict__ y, const float* __restrict__ w,
                                  const float* __restrict__ bias, int has_bias, int n, int cin, int h, int wd,
                                  int cout, int oh, int ow, int kh, int kw, int pt, int pl, int dh, int dw,
                                  int relu) {
    __shared__ float patch[(TILE + MAX_SPAN) * (TILE + MAX_SPAN)];
    __shared__ float taps[COUT_BLOCK * MAX_TAPS];
    int tiles_x = (ow + TILE - 1) / TILE, tiles_y = (oh + TILE - 1) / TILE;
    int groups = (cout + COUT_BLOCK - 1) / COUT_BLOCK;
    unsigned b = blockIdx.x;
    int x0 = (int)(b % (unsigned)tiles_x) * TILE;
    b /= (unsigned)tiles_x;
    int y0 = (int)(b % (unsigned)tiles_y) * TILE;
    b /= (unsigned)tiles_y;
    int c0 = (int)(b % (unsigned)groups) * COUT_BLOCK;
    int img = (int)(b / (unsigned)groups);
    int t = (int)threadIdx.x, lx = t % TILE, ly = t / TILE;
    int span_w = TILE + (kw - 1) * dw, span_h = TILE + (kh - 1) * dh;
    int kk = kh * kw;
    float acc[COUT_BLOCK];
    for (int j = 0; j < COUT_BLOCK; ++j) acc[j] = 0.0f;
    for (int ci = 0; ci < cin; ++ci) {
        const float* xc = x + ((size_t)img * cin + ci) * (size_t)h * wd;
        for (int i = t; i < span_h * span_w; i += (int)blockDim.x) {
            int iy = y0 - pt + i / span_w, ix = x0 - pl + i % span_w;
            patch[i] = (iy >= 0 && iy < h && ix >= 0 && ix < wd) ? xc[(size_t)iy * wd + ix] : 0.0f;
        }
        for (int i = t; i < COUT_BLOCK * kk; i += (int)blockDim.x) {
            int co = c0 + i / kk;
            taps[i] = co < cout ? w[((size_t)co * cin + ci) * kk + i % kk] : 0.0f;
        }
        __syncthreads();
        for (int ky = 0; ky < kh; ++ky) {
            for (int kx = 0; kx < kw; ++kx) {
                float v = patch[(ly + ky * dh) * span_w + lx + kx * dw];
                int tap = ky * kw + kx;
                for (int j = 0; j < COUT_BLOCK; ++j) acc[j] += taps[j * kk + tap] * v;
            }
        }
        __syncthreads();
    }
    int ox = x0 + lx, oy = y0 + ly;
    if (ox >= ow || oy >= oh) return;
    for (int j = 0; j < COUT_BLOCK; ++j) {
        int co = c0 + j;
        if (co >= cout) break;
        float v = acc[j] + (has_bias ? bias[co] : 0.0f);
        if (relu && v < 0.0f) v = 0.0f;
        y[(((size_t)img * cout + co) * oh + oy) * ow + ox] = v;
    }
}

extern "C" __global__ void nn_relu(const float* __restrict__ x, float* __restrict__ y, int count) {
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < count) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

extern "C" __global__ void nn_sigmoid(const float* __restrict__ x, float* __restrict__ y, int count) {
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i < count) y[i] = 1.0f / (1.0f + expf(-x[i]));
}

// y = a + b (same shape), then ReLU when `relu`.
extern "C" __global__ void nn_add(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ y,
                                  int count, int relu) {
    int i = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    if (i >= count) return;
    float v = a[i] + b[i];
    y[i] = (relu && v < 0.0f) ? 0.0f : v;
}

// ONNX DepthToSpace: N x C x H x W -> N x C/(bs*bs) x H*bs x W*bs. One
// thread per output element. DCR: input channel (by * bs + bx) * oc + c;
// CRD: c * bs * bs + by * bs + bx.
extern "C" __global__ void depth_to_space(const float* __restrict__ x, float* __restrict__ y, int n, int c, int h,
                                          int wd, int bs, int crd) {
    int oc = c / (bs * bs), oh = h * bs, ow = wd * bs;
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t total = (size_t)n * oc * oh * ow;
    if (i >= total) return;
    int ox = (int)(i % ow), oy = (int)((i / ow) % oh);
    int co = (int)((i / ((size_t)ow * oh)) % oc), img = (int)(i / ((size_t)ow * oh * oc));
    int by = oy % bs, bx = ox % bs;
    int ci = crd ? co * bs * bs + by * bs + bx : (by * bs + bx) * oc + co;
    y[i] = x[(((size_t)img * c + ci) * h + oy / bs) * wd + ox / bs];
}
