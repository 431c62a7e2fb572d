// A CPU stand-in for the few CUDA built-ins kernels.cu uses, so g++ can
// compile and run the kernels without a GPU (tests/cuda.rs,
// kernels_run_under_cpu_emulation). Blocks run one after another; a
// block's threads run in turn, or as real threads with a barrier for the
// kernels that call __syncthreads. Shared memory is a function-local
// static (one block at a time). x86-64 g++ without -march does not fuse
// a*b+c, like NVRTC with --fmad=false.
#pragma once
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

struct Dim {
    unsigned x = 0, y = 0, z = 0;
};
inline thread_local Dim threadIdx, blockIdx;
inline Dim blockDim, gridDim;
inline std::barrier<>* g_barrier = nullptr;

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __shared__ static

inline void __syncthreads() { g_barrier->arrive_and_wait(); }
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, sizeof f);
    return f;
}
using std::max;
using std::min;

template <class T>
T atomicAdd(T* p, T v) {
    return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST);
}
template <class T>
T atomicMin(T* p, T v) {
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v < old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return old;
}
template <class T>
T atomicMax(T* p, T v) {
    T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v > old && !__atomic_compare_exchange_n(p, &old, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
    }
    return old;
}

// Runs f as `grid` blocks of `block` threads; `sync` for kernels that call
// __syncthreads (their threads must really run side by side).
template <class F>
void launch(unsigned grid, unsigned block, bool sync, F f) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        if (!sync) {
            blockIdx = {b, 0, 0};
            for (unsigned t = 0; t < block; ++t) {
                threadIdx = {t, 0, 0};
                f();
            }
            continue;
        }
        std::barrier<> bar((std::ptrdiff_t)block);
        g_barrier = &bar;
        std::vector<std::thread> threads;
        threads.reserve(block);
        for (unsigned t = 0; t < block; ++t) {
            threads.emplace_back([&f, b, t] {
                blockIdx = {b, 0, 0};
                threadIdx = {t, 0, 0};
                f();
            });
        }
        for (auto& th : threads) th.join();
        g_barrier = nullptr;
    }
}
