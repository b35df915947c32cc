// Fused elementwise steps of the decode forward pass (plugins/cuda_forward):
// fewer, larger launches than add + rmsnorm + quantize and swiglu + quantize.
//
// 8-bit activation format (as kr_dec_quantize_q8): xq = int8 q[n] | float d[n/32] | float s[n/32],
// per 32-block d = max|v|/127, q = rint(v/d) (0 when d = 0), s = d * sum(q).

#ifndef KR_GF_COMMON_CUH
#include "kr_gf_common.cuh"
#endif

typedef long long kr_gf_i64;

// Programmatic dependent launch (as kernels/decode/kr_decode_common.cuh; this
// file is compiled on its own): every kernel here waits before its first
// global memory access, so all of them may be launched with KR_LAUNCH_PDL.
#ifndef KR_PDL_WAIT
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define KR_PDL_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#define KR_PDL_LAUNCH_DEPENDENTS() asm volatile("griddepcontrol.launch_dependents;" ::: "memory")
#else
#define KR_PDL_WAIT() do { } while (0)
#define KR_PDL_LAUNCH_DEPENDENTS() do { } while (0)
#endif
#endif

__device__ __forceinline__ float kr_gf_warp_sum_f(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float kr_gf_warp_max_f(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ int kr_gf_warp_sum_i(int v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// One lane's value v of 32-block blk (lane = element in the block): write the q8 form.
__device__ __forceinline__ void kr_gf_q8_block(float v, int blk, int lane, signed char *xq, int n)
{
    float amax = kr_gf_warp_max_f(fabsf(v));
    float d = amax / 127.0f;
    int q = d > 0.0f ? (int)rintf(v / d) : 0;
    int sum = kr_gf_warp_sum_i(q);
    xq[(kr_gf_i64)blk * 32 + lane] = (signed char)q;
    if (lane == 0) {
        float *dd = (float *)(xq + n);
        dd[blk] = d;
        dd[n / 32 + blk] = d * (float)sum;
    }
}

// One CTA (blockDim.x a multiple of 32, <= 1024):
//   x (n) += r (n)   (r NULL: no add)
//   h (n) = x / sqrt(mean(x^2) + eps) * w   (w NULL: 1)
//   q8 != 0 (n a multiple of 32): xq = q8(h)
extern "C" __global__ void kr_gf_add_rmsnorm_q8(float *__restrict__ x, const float *__restrict__ r,
                                                const float *__restrict__ w, float *__restrict__ h,
                                                signed char *__restrict__ xq, int n, float eps, int q8)
{
    __shared__ float part[32];
    __shared__ float scale_s;
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarp = blockDim.x >> 5;
    float ss = 0.0f;
    for (int i = tid; i < n; i += blockDim.x) {
        float v = x[i];
        if (r) {
            v += r[i];
            x[i] = v;
        }
        ss += v * v;
    }
    ss = kr_gf_warp_sum_f(ss);
    if (lane == 0)
        part[warp] = ss;
    __syncthreads();
    if (warp == 0) {
        float t = lane < nwarp ? part[lane] : 0.0f;
        t = kr_gf_warp_sum_f(t);
        if (lane == 0)
            scale_s = rsqrtf(t / (float)n + eps);
    }
    __syncthreads();
    float scale = scale_s;
    if (!q8) {
        for (int i = tid; i < n; i += blockDim.x)
            h[i] = x[i] * scale * (w ? w[i] : 1.0f);
        return;
    }
    for (int blk = warp; blk < n / 32; blk += nwarp) {
        int i = blk * 32 + lane;
        float v = x[i] * scale * (w ? w[i] : 1.0f);
        h[i] = v;
        kr_gf_q8_block(v, blk, lane, xq, n);
    }
}

// y (n) = silu(g) * u with g = gu[0..n), u = gu[n..2n); y may alias g.
// q8 != 0: also xq = q8(y). n a multiple of 32; one warp per 32-block, any grid.
// pf (NULL: none): before the PDL wait, lane 0 of global warp j issues part j of the L2
// prefetch (the next matvec's weights; kr_gf_pf).
__device__ __forceinline__ void kr_gf_swiglu_q8_impl(const float *gu, float *y, signed char *__restrict__ xq, int n,
                                                     int q8, const kr_gf_pf *pf)
{
    if (pf && (threadIdx.x & 31) == 0)
        kr_gf_pf_issue(*pf, (int)(((kr_gf_i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5));
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    int lane = threadIdx.x & 31;
    int blk = (int)(((kr_gf_i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5);
    if (blk >= n / 32)
        return;
    int i = blk * 32 + lane;
    float g = gu[i], u = gu[(kr_gf_i64)n + i];
    float v = g / (1.0f + expf(-g)) * u;
    y[i] = v;
    if (q8)
        kr_gf_q8_block(v, blk, lane, xq, n);
}

extern "C" __global__ void kr_gf_swiglu_q8(const float *gu, float *y, signed char *__restrict__ xq, int n, int q8)
{
    kr_gf_swiglu_q8_impl(gu, y, xq, n, q8, 0);
}

// The same with an L2 prefetch request (issued before the PDL wait).
extern "C" __global__ void kr_gf_swiglu_q8p(const float *gu, float *y, signed char *__restrict__ xq, int n, int q8,
                                            const __grid_constant__ kr_gf_pf pf)
{
    kr_gf_swiglu_q8_impl(gu, y, xq, n, q8, &pf);
}

// Several CTAs (blockDim.x a multiple of 32, <= 1024; any grid), n a multiple of 32:
//   h (n) = x / sqrt(mean(x^2) + eps) * w   (w NULL: 1);  q8 != 0: xq = q8(h)
// Every CTA reduces the whole x (from L2; same order in every CTA, so all get
// the same scale) and writes its share of the 32-blocks. x is only read: the
// residual add happens in the producing matvec (kr_gf_mv2_* with acc_y).
// pf (NULL: none): before the PDL wait, lane 0 of global warp j (blockIdx.x * warps + warp)
// issues part j of the L2 prefetch (the next matvec's weights; kr_gf_pf).
__device__ __forceinline__ void kr_gf_rmsnorm_q8_mb_impl(const float *__restrict__ x, const float *__restrict__ w,
                                                         float *__restrict__ h, signed char *__restrict__ xq, int n,
                                                         float eps, int q8, const kr_gf_pf *pf)
{
    __shared__ float part[32];
    int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nwarp = blockDim.x >> 5;
    // this warp's first 32-block: its norm weight is constant in the step, so it is
    // loaded before the PDL wait; its x is loaded together with the reduction's loads
    const int blk0 = blockIdx.x * nwarp + warp, nblk = n / 32;
    const float w0 = (w && blk0 < nblk) ? __ldg(w + blk0 * 32 + lane) : 1.0f;
    if (pf && lane == 0)
        kr_gf_pf_issue(*pf, blk0);
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    const float x0 = blk0 < nblk ? x[blk0 * 32 + lane] : 0.0f;
    float ss = 0.0f;
    const float4 *x4 = (const float4 *)x;
    for (int i = tid; i < n / 4; i += blockDim.x) {
        float4 v = x4[i];
        ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    }
    ss = kr_gf_warp_sum_f(ss);
    if (lane == 0)
        part[warp] = ss;
    __syncthreads();
    float t = lane < nwarp ? part[lane] : 0.0f;
    t = kr_gf_warp_sum_f(t);
    float scale = rsqrtf(t / (float)n + eps);
    for (int blk = blk0; blk < nblk; blk += gridDim.x * nwarp) {
        int i = blk * 32 + lane;
        float v = blk == blk0 ? x0 * scale * w0 : x[i] * scale * (w ? w[i] : 1.0f);
        h[i] = v;
        if (q8)
            kr_gf_q8_block(v, blk, lane, xq, n);
    }
}

extern "C" __global__ void kr_gf_rmsnorm_q8_mb(const float *__restrict__ x, const float *__restrict__ w,
                                               float *__restrict__ h, signed char *__restrict__ xq, int n, float eps,
                                               int q8)
{
    kr_gf_rmsnorm_q8_mb_impl(x, w, h, xq, n, eps, q8, 0);
}

// The same with an L2 prefetch request (issued before the PDL wait).
extern "C" __global__ void kr_gf_rmsnorm_q8_mbp(const float *__restrict__ x, const float *__restrict__ w,
                                                float *__restrict__ h, signed char *__restrict__ xq, int n, float eps,
                                                int q8, const __grid_constant__ kr_gf_pf pf)
{
    kr_gf_rmsnorm_q8_mb_impl(x, w, h, xq, n, eps, q8, &pf);
}

// Prefetch n bytes at p into L2 (evict_last), one 128-byte line per thread per step; reads
// nothing into registers and writes nothing, so it needs no PDL wait (and is never launched
// with the attribute). Any grid. Used on a side stream while the attention runs, for the
// next matrices of the layer.
extern "C" __global__ void kr_gf_prefetch_l2(const char *p, long long n)
{
    long long stride = (long long)gridDim.x * blockDim.x * 128;
    for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * 128; i < n; i += stride)
        asm volatile("prefetch.global.L2::evict_last [%0];" ::"l"(p + i));
}
