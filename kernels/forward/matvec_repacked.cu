// Decode matvec on repacked Q4_0 / Q8_0 weights against 8-bit activations
// (plugins/cuda_forward). GGML's 18- and 34-byte blocks put the quants at
// 2-byte alignment; after the upload, kr_gf_repack_* rewrites each matrix in
// place (through a copy) as
//     qs: (rows * nb) blocks of 16 (Q4_0) or 32 (Q8_0) quant bytes, row-major, 16-byte aligned
//     sc: (rows * nb) fp16 block scales, right after qs
// so one lane reads a whole block's quants with 16-byte loads.
//
//   y (rows) = W (rows, nb*32) @ x,  x given as kr_dec_quantize_q8 output:
//     int8 q[cols] | float d[nb] | float s[nb]   (x_j ~ d_b q_j, s_b = d_b sum_j q_j)
//   Q4_0: w_j = dw (n_j - 8) with n_j the nibble (byte i: j = i low, j = i + 16 high)
//         sum_j w_j x_j = dw (d_b sum_j n_j q_j - 8 s_b)
//   Q8_0: w_j = dw n_j (int8):  sum_j w_j x_j = dw d_b sum_j n_j q_j
//
// One warp per row, lanes stride over the row's blocks; KR_GF_WARPS rows per
// CTA (blockDim = (32, KR_GF_WARPS)).

#ifndef KR_GF_COMMON_CUH
#include "kr_gf_common.cuh"
#endif

#ifndef KR_GF_WARPS
#define KR_GF_WARPS 4
#endif

// Programmatic dependent launch (as kernels/decode/kr_decode_common.cuh; this
// file is compiled on its own). Every kernel here that runs in the decode
// step executes KR_PDL_WAIT() before touching memory that an earlier kernel
// of the step writes (the weights are never written inside the step).
#ifndef KR_PDL_WAIT
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define KR_PDL_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#define KR_PDL_LAUNCH_DEPENDENTS() asm volatile("griddepcontrol.launch_dependents;" ::: "memory")
#else
#define KR_PDL_WAIT() do { } while (0)
#define KR_PDL_LAUNCH_DEPENDENTS() do { } while (0)
#endif
#endif

typedef long long kr_gf_i64;

__device__ __forceinline__ float kr_gf_h2f(unsigned short h)
{
    float f;
    asm("{ .reg .f16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ float kr_gf_warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Repack n_blk GGML blocks of bsz bytes (2-byte fp16 scale + qsz quant bytes)
// from src into dst_qs (qsz bytes per block) and dst_sc (one u16 per block).
__device__ __forceinline__ void kr_gf_repack(const unsigned char *__restrict__ src, unsigned char *__restrict__ dst_qs,
                                             unsigned short *__restrict__ dst_sc, kr_gf_i64 n_blk, int qsz)
{
    kr_gf_i64 b = (kr_gf_i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (b >= n_blk)
        return;
    const unsigned char *s = src + b * (kr_gf_i64)(qsz + 2);
    dst_sc[b] = (unsigned short)(s[0] | (s[1] << 8));
    unsigned int *d = (unsigned int *)(dst_qs + b * (kr_gf_i64)qsz);
    for (int i = 0; i < qsz / 4; i++) {
        const unsigned char *p = s + 2 + 4 * i;
        d[i] = (unsigned int)p[0] | ((unsigned int)p[1] << 8) | ((unsigned int)p[2] << 16) |
               ((unsigned int)p[3] << 24);
    }
}

extern "C" __global__ void kr_gf_repack_q4_0(const unsigned char *__restrict__ src, unsigned char *__restrict__ dst_qs,
                                             unsigned short *__restrict__ dst_sc, kr_gf_i64 n_blk)
{
    kr_gf_repack(src, dst_qs, dst_sc, n_blk, 16);
}

extern "C" __global__ void kr_gf_repack_q8_0(const unsigned char *__restrict__ src, unsigned char *__restrict__ dst_qs,
                                             unsigned short *__restrict__ dst_sc, kr_gf_i64 n_blk)
{
    kr_gf_repack(src, dst_qs, dst_sc, n_blk, 32);
}

extern "C" __global__ void __launch_bounds__(32 * KR_GF_WARPS)
kr_gf_mv_q4_0(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc, const signed char *__restrict__ xq,
              float *__restrict__ y, int rows, int nb)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    int row = blockIdx.x * KR_GF_WARPS + threadIdx.y;
    if (row >= rows)
        return;
    const float *xd = (const float *)(xq + (kr_gf_i64)nb * 32);
    const float *xs = xd + nb;
    const uint4 *rq = qs + (kr_gf_i64)row * nb;
    const unsigned short *rs = sc + (kr_gf_i64)row * nb;
    const int4 *xv = (const int4 *)xq;
    float acc = 0.0f;
#pragma unroll 4
    for (int b = threadIdx.x; b < nb; b += 32) {
        uint4 w = __ldg(rq + b);
        float dw = kr_gf_h2f(__ldg(rs + b));
        int4 x0 = __ldg(xv + 2 * b), x1 = __ldg(xv + 2 * b + 1);
        int s = 0;
        s = __dp4a((int)(w.x & 0x0F0F0F0Fu), x0.x, s);
        s = __dp4a((int)(w.y & 0x0F0F0F0Fu), x0.y, s);
        s = __dp4a((int)(w.z & 0x0F0F0F0Fu), x0.z, s);
        s = __dp4a((int)(w.w & 0x0F0F0F0Fu), x0.w, s);
        s = __dp4a((int)((w.x >> 4) & 0x0F0F0F0Fu), x1.x, s);
        s = __dp4a((int)((w.y >> 4) & 0x0F0F0F0Fu), x1.y, s);
        s = __dp4a((int)((w.z >> 4) & 0x0F0F0F0Fu), x1.z, s);
        s = __dp4a((int)((w.w >> 4) & 0x0F0F0F0Fu), x1.w, s);
        acc += dw * (__ldg(xd + b) * (float)s - 8.0f * __ldg(xs + b));
    }
    acc = kr_gf_warp_sum(acc);
    if (threadIdx.x == 0)
        y[row] = acc;
}

extern "C" __global__ void __launch_bounds__(32 * KR_GF_WARPS)
kr_gf_mv_q8_0(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc, const signed char *__restrict__ xq,
              float *__restrict__ y, int rows, int nb)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    int row = blockIdx.x * KR_GF_WARPS + threadIdx.y;
    if (row >= rows)
        return;
    const float *xd = (const float *)(xq + (kr_gf_i64)nb * 32);
    const uint4 *rq = qs + (kr_gf_i64)row * nb * 2;
    const unsigned short *rs = sc + (kr_gf_i64)row * nb;
    const int4 *xv = (const int4 *)xq;
    float acc = 0.0f;
#pragma unroll 4
    for (int b = threadIdx.x; b < nb; b += 32) {
        uint4 w0 = __ldg(rq + 2 * b), w1 = __ldg(rq + 2 * b + 1);
        float dw = kr_gf_h2f(__ldg(rs + b));
        int4 x0 = __ldg(xv + 2 * b), x1 = __ldg(xv + 2 * b + 1);
        int s = 0;
        s = __dp4a((int)w0.x, x0.x, s);
        s = __dp4a((int)w0.y, x0.y, s);
        s = __dp4a((int)w0.z, x0.z, s);
        s = __dp4a((int)w0.w, x0.w, s);
        s = __dp4a((int)w1.x, x1.x, s);
        s = __dp4a((int)w1.y, x1.y, s);
        s = __dp4a((int)w1.z, x1.z, s);
        s = __dp4a((int)w1.w, x1.w, s);
        acc += dw * __ldg(xd + b) * (float)s;
    }
    acc = kr_gf_warp_sum(acc);
    if (threadIdx.x == 0)
        y[row] = acc;
}

// v2 helpers: the PF blocks b0 + 32 k (k < PF) of each of the NR rows (b0 = lane + 32 k0).
template <int Q8, int NR, int PF>
__device__ __forceinline__ void kr_gf_mv2_load(uint4 (&w)[PF][NR][Q8 ? 2 : 1], unsigned short (&d)[PF][NR],
                                               const uint4 *const (&rq)[NR], const unsigned short *const (&rs)[NR],
                                               int b0, int nb)
{
    const int VPB = Q8 ? 2 : 1;
#pragma unroll
    for (int k = 0; k < PF; k++) {
        int b = b0 + 32 * k;
#pragma unroll
        for (int r = 0; r < NR; r++) {
            if (b < nb) {
#pragma unroll
                for (int v = 0; v < VPB; v++)
                    w[k][r][v] = __ldg(rq[r] + (kr_gf_i64)b * VPB + v);
                d[k][r] = __ldg(rs[r] + b);
            }
        }
    }
}

// acc[r] += the dot products of those blocks with x (XF: x in shared memory, else global).
template <int Q8, int NR, int PF, int XF>
__device__ __forceinline__ void kr_gf_mv2_dot(float (&acc)[NR], const uint4 (&w)[PF][NR][Q8 ? 2 : 1],
                                              const unsigned short (&d)[PF][NR], const int4 *xv, const float *xd,
                                              const float *xs, int b0, int nb)
{
    const int VPB = Q8 ? 2 : 1;
#pragma unroll
    for (int k = 0; k < PF; k++) {
        int b = b0 + 32 * k;
        if (b < nb) {
            int4 x0 = XF ? xv[2 * b] : __ldg(xv + 2 * b), x1 = XF ? xv[2 * b + 1] : __ldg(xv + 2 * b + 1);
            float dx = XF ? xd[b] : __ldg(xd + b);
            float sx = Q8 ? 0.0f : (XF ? xs[b] : __ldg(xs + b));
#pragma unroll
            for (int r = 0; r < NR; r++) {
                int s = 0;
                if (Q8) {
                    s = __dp4a((int)w[k][r][0].x, x0.x, s);
                    s = __dp4a((int)w[k][r][0].y, x0.y, s);
                    s = __dp4a((int)w[k][r][0].z, x0.z, s);
                    s = __dp4a((int)w[k][r][0].w, x0.w, s);
                    s = __dp4a((int)w[k][r][VPB - 1].x, x1.x, s);
                    s = __dp4a((int)w[k][r][VPB - 1].y, x1.y, s);
                    s = __dp4a((int)w[k][r][VPB - 1].z, x1.z, s);
                    s = __dp4a((int)w[k][r][VPB - 1].w, x1.w, s);
                    acc[r] += kr_gf_h2f(d[k][r]) * dx * (float)s;
                } else {
                    uint4 q = w[k][r][0];
                    s = __dp4a((int)(q.x & 0x0F0F0F0Fu), x0.x, s);
                    s = __dp4a((int)(q.y & 0x0F0F0F0Fu), x0.y, s);
                    s = __dp4a((int)(q.z & 0x0F0F0F0Fu), x0.z, s);
                    s = __dp4a((int)(q.w & 0x0F0F0F0Fu), x0.w, s);
                    s = __dp4a((int)((q.x >> 4) & 0x0F0F0F0Fu), x1.x, s);
                    s = __dp4a((int)((q.y >> 4) & 0x0F0F0F0Fu), x1.y, s);
                    s = __dp4a((int)((q.z >> 4) & 0x0F0F0F0Fu), x1.z, s);
                    s = __dp4a((int)((q.w >> 4) & 0x0F0F0F0Fu), x1.w, s);
                    acc[r] += kr_gf_h2f(d[k][r]) * (dx * (float)s - 8.0f * sx);
                }
            }
        }
    }
}

// ---- v2: NR rows per warp, weights prefetched before the PDL wait ----------
// blockDim (32, KR_GF_WARPS); warp w of CTA c takes rows (c*KR_GF_WARPS + w)*NR
// .. +NR-1; lane l takes the blocks b = l + 32 k of each. The weights (and
// scales) of the first PF blocks per lane are loaded BEFORE KR_PDL_WAIT: the
// weights are constant during the step, so under PDL they stream in while the
// previous kernel finishes. Each x block is loaded once for the NR rows.
// acc != 0: y[row] += W x (residual add into y), else y[row] = W x.
// Q8 = 0: Q4_0 (16 quant bytes per block), 1: Q8_0 (32).
// GUS = 1 (gate/up + SwiGLU + q8, the kr_gf_mv2gus_* entries): W is the fused (2F, E) gate|up
// matrix, rows = 2F with F % (KR_GF_WARPS * NR) == 0 and F % 32 == 0 (every CTA full, none
// straddling a 32-row group). After writing its rows of y (gate|up, fp32), each CTA counts
// itself in cnt[group] (group = 32 outputs i0..i0+31: 32 gate rows + 32 up rows, 64 / (W NR)
// CTAs); the last CTA of a group (threadfence pattern) computes v = silu(g) * u for the
// group, writes it to y[i] (over the gate value) and its q8 form to xo (F int8 | F/32 d |
// F/32 s, as kr_dec_quantize_q8), and resets cnt[group] to 0 (cnt: F/32 ints, zero
// before the first launch).
//
// MODE (the GUS template argument): 0 plain, 1 GUS (above), 2 NORM producer, 3 NS consumer;
// W warps per CTA. The norm folding (kr_gf_mv2nf{p,c}_*, docs/GPU-FORWARD.md `nf`):
// NORM (2): y is the residual x (acc_y = 1 implied), rows = n = E, rows % 32 == 0 and
//   W * NR == 32 (one CTA = one q8 block of x). After x[row] += W xq, the CTA writes
//   xo = q8(x * wn) for its 32 rows (block blockIdx.x; layout as kr_dec_quantize_q8 with
//   n = rows) and part[blockIdx.x] = sum of x^2 over them. The rms scale is NOT applied:
//   q8 of (x * wn) equals q8 of (x * wn * scale) with d scaled by 1/scale.
// NS (3): xq is such an unscaled q8 vector of n = nb*32 elements and part its n/32
//   partial sums; y = rsqrt(sum(part) / n + eps) * (W xq) (every warp sums part in the
//   same order).
// XF (x source): 0 = xq, q8 in global memory; 1 = xq is fp32 x (nb*32 floats), quantized by
// the CTA into shared memory after the PDL wait (dynamic smem nb*40 bytes; MODE 2 only: full
// CTAs); 2 = xq is the fp32 gate|up vector (2 * nb*32 floats), x = silu(gate) * up computed
// and quantized into shared memory the same way. Quantization as kr_dec_quantize_q8.
// DB = 1: double-buffered chunks (the next PF blocks per lane are loaded before the current
// ones are used: two chunks in flight per warp; rows longer than 32 * PF blocks only);
// DB = 2: the single-buffered loop written with the helpers (same math, other registers).
// pf (MODE 0 only; NULL: none): L2 prefetch of the step's next weights (kr_gf_pf): CTA
// first + j issues part j, right after its own first weight loads (pf->early) or after its
// rows are written; with pf->ahead, each CTA also requests the rows of CTA + ahead before
// its PDL wait.
template <int Q8, int NR, int PF, int GUS, int W = KR_GF_WARPS, int XF = 0, int DB = 0>
__device__ __forceinline__ void kr_gf_mv2(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc,
                                          const signed char *__restrict__ xq, float *y, int rows,
                                          int nb, int acc_y, int F, int *cnt, signed char *xo,
                                          const float *wn = 0, float *part = 0, float eps = 0.0f,
                                          const kr_gf_pf *pf = 0)
{
    const int VPB = Q8 ? 2 : 1; // uint4 per block
    const int lane = threadIdx.x;
    const int r0 = (blockIdx.x * W + threadIdx.y) * NR;
    if (r0 >= rows)
        return;
    const uint4 *rq[NR];
    const unsigned short *rs[NR];
#pragma unroll
    for (int r = 0; r < NR; r++) {
        int row = min(r0 + r, rows - 1);
        rq[r] = qs + (kr_gf_i64)row * nb * VPB;
        rs[r] = sc + (kr_gf_i64)row * nb;
    }
    uint4 w[PF][NR][VPB];
    unsigned short d[PF][NR];
#pragma unroll
    for (int k = 0; k < PF; k++) {
        int b = lane + 32 * k;
#pragma unroll
        for (int r = 0; r < NR; r++) {
            if (b < nb) {
#pragma unroll
                for (int v = 0; v < VPB; v++)
                    w[k][r][v] = __ldg(rq[r] + (kr_gf_i64)b * VPB + v);
                d[k][r] = __ldg(rs[r] + b);
            }
        }
    }
    const bool pf_me = GUS == 0 && pf && lane == 0 && threadIdx.y == 0;
    if (pf_me && pf->early)
        kr_gf_pf_issue(*pf, (int)blockIdx.x - pf->first);
    if (pf_me && pf->ahead > 0) {
        // the rows of CTA blockIdx.x + ahead (a later wave): quants, then their scales
        const kr_gf_i64 ra = ((kr_gf_i64)blockIdx.x + pf->ahead) * W * NR;
        if (ra < rows) {
            const kr_gf_i64 nr = min((kr_gf_i64)W * NR, (kr_gf_i64)rows - ra);
            kr_l2_prefetch_part(qs + ra * nb * VPB, nr * nb * VPB * 16, 0, 1);
            kr_l2_prefetch_part(sc + ra * nb, nr * nb * 2, 0, 1);
        }
    }
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    const int4 *xv = (const int4 *)xq;
    const float *xd = (const float *)(xq + (kr_gf_i64)nb * 32);
    const float *xs = xd + nb;
    if (XF) {
        extern __shared__ int4 kr_gf_xsm[];
        signed char *sq = (signed char *)kr_gf_xsm;
        float *sd = (float *)(sq + nb * 32), *ss = sd + nb;
        const float *xf = (const float *)xq;
        const int n = nb * 32;
        for (int b = threadIdx.y; b < nb; b += W) {
            const int i = b * 32 + lane;
            float v;
            if (XF == 1) {
                v = xf[i];
            } else {
                float g = xf[i], u = xf[n + i];
                v = g / (1.0f + expf(-g)) * u;
            }
            float amax = fabsf(v);
            for (int o = 16; o > 0; o >>= 1)
                amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
            float dq = amax / 127.0f;
            int q = dq > 0.0f ? (int)rintf(v / dq) : 0;
            int qsum = q;
            for (int o = 16; o > 0; o >>= 1)
                qsum += __shfl_xor_sync(0xffffffffu, qsum, o);
            sq[i] = (signed char)q;
            if (lane == 0) {
                sd[b] = dq;
                ss[b] = dq * (float)qsum;
            }
        }
        __syncthreads();
        xv = (const int4 *)sq;
        xd = sd;
        xs = ss;
    }
    float t = 0.0f; // NS: this lane's share of the partial sums, loaded before the main loop
    if (GUS == 3)
        for (int i = lane; i < nb; i += 32) // nb partials: (nb * 32) / 32
            t += __ldcg(part + i);
    float acc[NR];
#pragma unroll
    for (int r = 0; r < NR; r++)
        acc[r] = 0.0f;
    if (!DB) {
        // (kept as written before the helpers: the same code as the measured default)
        for (int k0 = 0;; k0 += PF) {
#pragma unroll
            for (int k = 0; k < PF; k++) {
                int b = lane + 32 * (k0 + k);
                if (b < nb) {
                    int4 x0 = XF ? xv[2 * b] : __ldg(xv + 2 * b), x1 = XF ? xv[2 * b + 1] : __ldg(xv + 2 * b + 1);
                    float dx = XF ? xd[b] : __ldg(xd + b);
                    float sx = Q8 ? 0.0f : (XF ? xs[b] : __ldg(xs + b));
#pragma unroll
                    for (int r = 0; r < NR; r++) {
                        int s = 0;
                        if (Q8) {
                            s = __dp4a((int)w[k][r][0].x, x0.x, s);
                            s = __dp4a((int)w[k][r][0].y, x0.y, s);
                            s = __dp4a((int)w[k][r][0].z, x0.z, s);
                            s = __dp4a((int)w[k][r][0].w, x0.w, s);
                            s = __dp4a((int)w[k][r][VPB - 1].x, x1.x, s);
                            s = __dp4a((int)w[k][r][VPB - 1].y, x1.y, s);
                            s = __dp4a((int)w[k][r][VPB - 1].z, x1.z, s);
                            s = __dp4a((int)w[k][r][VPB - 1].w, x1.w, s);
                            acc[r] += kr_gf_h2f(d[k][r]) * dx * (float)s;
                        } else {
                            uint4 q = w[k][r][0];
                            s = __dp4a((int)(q.x & 0x0F0F0F0Fu), x0.x, s);
                            s = __dp4a((int)(q.y & 0x0F0F0F0Fu), x0.y, s);
                            s = __dp4a((int)(q.z & 0x0F0F0F0Fu), x0.z, s);
                            s = __dp4a((int)(q.w & 0x0F0F0F0Fu), x0.w, s);
                            s = __dp4a((int)((q.x >> 4) & 0x0F0F0F0Fu), x1.x, s);
                            s = __dp4a((int)((q.y >> 4) & 0x0F0F0F0Fu), x1.y, s);
                            s = __dp4a((int)((q.z >> 4) & 0x0F0F0F0Fu), x1.z, s);
                            s = __dp4a((int)((q.w >> 4) & 0x0F0F0F0Fu), x1.w, s);
                            acc[r] += kr_gf_h2f(d[k][r]) * (dx * (float)s - 8.0f * sx);
                        }
                    }
                }
            }
            if (lane + 32 * (k0 + PF) >= nb)
                break;
#pragma unroll
            for (int k = 0; k < PF; k++) {
                int b = lane + 32 * (k0 + PF + k);
#pragma unroll
                for (int r = 0; r < NR; r++) {
                    if (b < nb) {
#pragma unroll
                        for (int v = 0; v < VPB; v++)
                            w[k][r][v] = __ldg(rq[r] + (kr_gf_i64)b * VPB + v);
                        d[k][r] = __ldg(rs[r] + b);
                    }
                }
            }
        }
    } else if (DB == 2) {
        // the same loop through the helpers (ptxas allocates fewer registers for it: r2p4 64 vs 80)
        for (int k0 = 0;; k0 += PF) {
            kr_gf_mv2_dot<Q8, NR, PF, XF>(acc, w, d, xv, xd, xs, lane + 32 * k0, nb);
            if (lane + 32 * (k0 + PF) >= nb)
                break;
            kr_gf_mv2_load<Q8, NR, PF>(w, d, rq, rs, lane + 32 * (k0 + PF), nb);
        }
    } else {
        uint4 w2[PF][NR][VPB];
        unsigned short d2[PF][NR];
        for (int k0 = 0;; k0 += 2 * PF) {
            const bool m1 = lane + 32 * (k0 + PF) < nb;
            if (m1)
                kr_gf_mv2_load<Q8, NR, PF>(w2, d2, rq, rs, lane + 32 * (k0 + PF), nb);
            kr_gf_mv2_dot<Q8, NR, PF, XF>(acc, w, d, xv, xd, xs, lane + 32 * k0, nb);
            if (!m1)
                break;
            const bool m2 = lane + 32 * (k0 + 2 * PF) < nb;
            if (m2)
                kr_gf_mv2_load<Q8, NR, PF>(w, d, rq, rs, lane + 32 * (k0 + 2 * PF), nb);
            kr_gf_mv2_dot<Q8, NR, PF, XF>(acc, w2, d2, xv, xd, xs, lane + 32 * (k0 + PF), nb);
            if (!m2)
                break;
        }
    }
    float scale = 1.0f;
    if (GUS == 3) {
        t = kr_gf_warp_sum(t);
        scale = rsqrtf(t / (float)(nb * 32) + eps);
    }
    __shared__ float xnew[GUS == 2 ? 32 : 1];
#pragma unroll
    for (int r = 0; r < NR; r++) {
        float v = kr_gf_warp_sum(acc[r]);
        if (lane == 0 && r0 + r < rows) {
            if (GUS == 2) {
                float xn = y[r0 + r] + v;
                y[r0 + r] = xn;
                xnew[r0 + r - blockIdx.x * 32] = xn;
            } else {
                v *= scale;
                y[r0 + r] = acc_y ? y[r0 + r] + v : v;
            }
        }
    }
    if (pf_me && !pf->early)
        kr_gf_pf_issue(*pf, (int)blockIdx.x - pf->first);
    if (GUS == 2) {
        __syncthreads();
        if (threadIdx.y != 0)
            return;
        const int row = blockIdx.x * 32 + lane;
        float xn = xnew[lane];
        float hv = xn * __ldg(wn + row);
        float amax = fabsf(hv);
        for (int o = 16; o > 0; o >>= 1)
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        float d = amax / 127.0f;
        int q = d > 0.0f ? (int)rintf(hv / d) : 0;
        int qsum = q;
        for (int o = 16; o > 0; o >>= 1)
            qsum += __shfl_xor_sync(0xffffffffu, qsum, o);
        float ss = kr_gf_warp_sum(xn * xn);
        xo[row] = (signed char)q;
        if (lane == 0) {
            float *dd = (float *)(xo + rows);
            dd[blockIdx.x] = d;
            dd[rows / 32 + blockIdx.x] = d * (float)qsum;
            part[blockIdx.x] = ss;
        }
        return;
    }
    if (GUS == 1) {
        __shared__ int last;
        const int cta_rows = KR_GF_WARPS * NR;
        const int rc = blockIdx.x * cta_rows;          // first row of this CTA
        const int i0 = (rc < F ? rc : rc - F) & ~31;   // its output group
        __threadfence();
        __syncthreads();
        if (threadIdx.x == 0 && threadIdx.y == 0) {
            int done = atomicAdd(cnt + (i0 >> 5), 1) + 1;
            last = done == 64 / cta_rows;
            if (last)
                atomicExch(cnt + (i0 >> 5), 0);
        }
        __syncthreads();
        if (!last || threadIdx.y != 0)
            return;
        __threadfence();
        const int i = i0 + lane;
        float g = __ldcg(y + i), u = __ldcg(y + F + i);
        float v = g / (1.0f + expf(-g)) * u;
        y[i] = v;
        float amax = fabsf(v);
        for (int o = 16; o > 0; o >>= 1)
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        float d = amax / 127.0f;
        int q = d > 0.0f ? (int)rintf(v / d) : 0;
        int qsum = q;
        for (int o = 16; o > 0; o >>= 1)
            qsum += __shfl_xor_sync(0xffffffffu, qsum, o);
        xo[i] = (signed char)q;
        if (lane == 0) {
            float *dd = (float *)(xo + F);
            dd[i0 >> 5] = d;
            dd[F / 32 + (i0 >> 5)] = d * (float)qsum;
        }
    }
}

// Entries kr_gf_mv2_{q4_0,q8_0}_r<NR>p<PF>[d|h]: arguments as kr_gf_mv_* plus acc_y (suffix d: DB = 1,
// h: DB = 2);
// kr_gf_mv2t_*: the same plus the L2 prefetch request pf (kr_gf_pf, by value; see kr_gf_mv2);
// kr_gf_mv2gus_{q4_0,q8_0}_r<NR>p<PF>[d]: (qs, sc, xq, y, rows = 2F, nb, F, cnt, xo), see GUS above.
#define KR_GF_MV2X(T, Q8, NR, PF, DB, SFX)                                                                        \
    extern "C" __global__ void __launch_bounds__(32 * KR_GF_WARPS)                                                \
    kr_gf_mv2_##T##_r##NR##p##PF##SFX(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc,         \
                                      const signed char *__restrict__ xq, float *__restrict__ y, int rows, int nb, \
                                      int acc_y)                                                                  \
    {                                                                                                             \
        kr_gf_mv2<Q8, NR, PF, 0, KR_GF_WARPS, 0, DB>(qs, sc, xq, y, rows, nb, acc_y, 0, 0, 0);                     \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * KR_GF_WARPS)                                                \
    kr_gf_mv2t_##T##_r##NR##p##PF##SFX(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc,        \
                                       const signed char *__restrict__ xq, float *__restrict__ y, int rows,       \
                                       int nb, int acc_y, const __grid_constant__ kr_gf_pf pf)                    \
    {                                                                                                             \
        kr_gf_mv2<Q8, NR, PF, 0, KR_GF_WARPS, 0, DB>(qs, sc, xq, y, rows, nb, acc_y, 0, 0, 0, 0, 0, 0.0f, &pf);    \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * KR_GF_WARPS)                                                \
    kr_gf_mv2gus_##T##_r##NR##p##PF##SFX(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc,      \
                                         const signed char *__restrict__ xq, float *y, int rows, int nb, int F,   \
                                         int *cnt, signed char *xo)                                               \
    {                                                                                                             \
        kr_gf_mv2<Q8, NR, PF, 1, KR_GF_WARPS, 0, DB>(qs, sc, xq, y, rows, nb, 0, F, cnt, xo);                      \
    }
#define KR_GF_MV2(T, Q8, NR, PF) KR_GF_MV2X(T, Q8, NR, PF, 0, )
#define KR_GF_MV2D(T, Q8, NR, PF) KR_GF_MV2X(T, Q8, NR, PF, 1, d)
#define KR_GF_MV2H(T, Q8, NR, PF) KR_GF_MV2X(T, Q8, NR, PF, 2, h)
KR_GF_MV2(q4_0, 0, 1, 4)
KR_GF_MV2(q4_0, 0, 2, 4)
KR_GF_MV2(q4_0, 0, 4, 2)
KR_GF_MV2(q4_0, 0, 2, 8)
KR_GF_MV2D(q4_0, 0, 2, 4)
KR_GF_MV2D(q4_0, 0, 2, 2)
KR_GF_MV2H(q4_0, 0, 2, 4)
KR_GF_MV2D(q4_0, 0, 2, 1)
KR_GF_MV2D(q4_0, 0, 4, 1)
KR_GF_MV2D(q4_0, 0, 1, 2)
KR_GF_MV2(q8_0, 1, 1, 4)
KR_GF_MV2(q8_0, 1, 2, 2)
KR_GF_MV2(q8_0, 1, 2, 4)
KR_GF_MV2(q8_0, 1, 4, 2)
KR_GF_MV2D(q8_0, 1, 2, 2)
KR_GF_MV2D(q8_0, 1, 2, 1)
KR_GF_MV2H(q8_0, 1, 2, 2)

// ---- v2p: persistent warps over row tiles, double-buffered across chunk AND tile bounds ----
// Same math and result layout as kr_gf_mv2 (MODE 0). A tile = NR rows; warp gw = blockIdx.x *
// KR_GF_WARPS + threadIdx.y of nw = gridDim.x * KR_GF_WARPS takes tiles gw, gw + nw, ... and
// walks their chunks (PF blocks per lane) as one sequence s = 0, 1, ...: chunk s + 1 (of the
// same tile or of the next) is loaded before chunk s is used, so a warp keeps two chunks in
// flight and never waits for a CTA of a later wave to be scheduled. The host sizes the grid
// so every warp gets about the same number of tiles. Chunk 0 is loaded before the PDL wait.
// acc_y != 0: y[row] += W x. pf (may be NULL): as kr_gf_mv2's tail request (first/nparts
// over CTAs; issued after the CTA's first warp finishes, or before its wait when pf->early).
template <int Q8, int NR, int PF>
__device__ __forceinline__ void kr_gf_mv2p(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc,
                                           const signed char *__restrict__ xq, float *__restrict__ y, int rows,
                                           int nb, int acc_y, const kr_gf_pf *pf)
{
    const int VPB = Q8 ? 2 : 1;
    const int lane = threadIdx.x;
    const int gw = blockIdx.x * KR_GF_WARPS + threadIdx.y, nw = gridDim.x * KR_GF_WARPS;
    const int ntiles = (rows + NR - 1) / NR, nch = (nb + 32 * PF - 1) / (32 * PF);
    const bool pf_me = pf && lane == 0 && threadIdx.y == 0;
    const int my_tiles = gw < ntiles ? (ntiles - gw + nw - 1) / nw : 0;
    const int S = my_tiles * nch; // chunks of this warp
    uint4 wa[PF][NR][VPB], wb[PF][NR][VPB];
    unsigned short da[PF][NR], db[PF][NR];
    // row pointers of sequence step s (tile gw + nw * (s / nch), chunk s % nch)
    const uint4 *rq[NR];
    const unsigned short *rs[NR];
#define KR_GF_MV2P_ROWS(s_)                                                                                    \
    {                                                                                                          \
        const int t_ = gw + nw * ((s_) / nch);                                                                 \
        _Pragma("unroll") for (int r = 0; r < NR; r++)                                                         \
        {                                                                                                      \
            const int row = min(t_ * NR + r, rows - 1);                                                        \
            rq[r] = qs + (kr_gf_i64)row * nb * VPB;                                                            \
            rs[r] = sc + (kr_gf_i64)row * nb;                                                                  \
        }                                                                                                      \
    }
    if (S > 0) {
        KR_GF_MV2P_ROWS(0);
        kr_gf_mv2_load<Q8, NR, PF>(wa, da, rq, rs, lane, nb);
    }
    if (pf_me && pf->early)
        kr_gf_pf_issue(*pf, (int)blockIdx.x - pf->first);
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    const int4 *xv = (const int4 *)xq;
    const float *xd = (const float *)(xq + (kr_gf_i64)nb * 32);
    const float *xs = xd + nb;
    float acc[NR];
#pragma unroll
    for (int r = 0; r < NR; r++)
        acc[r] = 0.0f;
    for (int s = 0; s < S; s += 2) {
        // step s: chunk in (wa, da); load step s + 1 into (wb, db) first
        if (s + 1 < S) {
            KR_GF_MV2P_ROWS(s + 1);
            kr_gf_mv2_load<Q8, NR, PF>(wb, db, rq, rs, lane + 32 * PF * ((s + 1) % nch), nb);
        }
        kr_gf_mv2_dot<Q8, NR, PF, 0>(acc, wa, da, xv, xd, xs, lane + 32 * PF * (s % nch), nb);
        if (s % nch == nch - 1) {
            const int t = gw + nw * (s / nch);
#pragma unroll
            for (int r = 0; r < NR; r++) {
                float v = kr_gf_warp_sum(acc[r]);
                acc[r] = 0.0f;
                if (lane == 0 && t * NR + r < rows)
                    y[t * NR + r] = acc_y ? y[t * NR + r] + v : v;
            }
        }
        if (s + 1 >= S)
            break;
        // step s + 1: chunk in (wb, db); load step s + 2 into (wa, da) first
        if (s + 2 < S) {
            KR_GF_MV2P_ROWS(s + 2);
            kr_gf_mv2_load<Q8, NR, PF>(wa, da, rq, rs, lane + 32 * PF * ((s + 2) % nch), nb);
        }
        kr_gf_mv2_dot<Q8, NR, PF, 0>(acc, wb, db, xv, xd, xs, lane + 32 * PF * ((s + 1) % nch), nb);
        if ((s + 1) % nch == nch - 1) {
            const int t = gw + nw * ((s + 1) / nch);
#pragma unroll
            for (int r = 0; r < NR; r++) {
                float v = kr_gf_warp_sum(acc[r]);
                acc[r] = 0.0f;
                if (lane == 0 && t * NR + r < rows)
                    y[t * NR + r] = acc_y ? y[t * NR + r] + v : v;
            }
        }
    }
#undef KR_GF_MV2P_ROWS
    if (pf_me && !pf->early)
        kr_gf_pf_issue(*pf, (int)blockIdx.x - pf->first);
}

// Entries kr_gf_mv2_{q4_0,q8_0}_pr<NR>p<PF> (qs, sc, xq, y, rows, nb, acc_y) and
// kr_gf_mv2t_*_pr<NR>p<PF> (+ kr_gf_pf pf): any grid (the host picks one that balances the tiles).
#define KR_GF_MV2P(T, Q8, NR, PF)                                                                                 \
    extern "C" __global__ void __launch_bounds__(32 * KR_GF_WARPS)                                                \
    kr_gf_mv2_##T##_pr##NR##p##PF(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc,             \
                                  const signed char *__restrict__ xq, float *__restrict__ y, int rows, int nb,    \
                                  int acc_y)                                                                      \
    {                                                                                                             \
        kr_gf_mv2p<Q8, NR, PF>(qs, sc, xq, y, rows, nb, acc_y, 0);                                                \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * KR_GF_WARPS)                                                \
    kr_gf_mv2t_##T##_pr##NR##p##PF(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc,            \
                                   const signed char *__restrict__ xq, float *__restrict__ y, int rows, int nb,   \
                                   int acc_y, const __grid_constant__ kr_gf_pf pf)                                \
    {                                                                                                             \
        kr_gf_mv2p<Q8, NR, PF>(qs, sc, xq, y, rows, nb, acc_y, &pf);                                              \
    }
KR_GF_MV2P(q4_0, 0, 2, 4)
KR_GF_MV2P(q4_0, 0, 2, 2)
KR_GF_MV2P(q4_0, 0, 1, 4)
KR_GF_MV2P(q4_0, 0, 4, 2)
KR_GF_MV2P(q8_0, 1, 2, 2)
KR_GF_MV2P(q8_0, 1, 2, 1)

// Norm folding (MODE 2 / 3 above), 16 warps x 2 rows = 32 rows per CTA for the producer.
//   kr_gf_mv2nfp_<type>(qs, sc, xq, x, rows, nb, wn, part, xo): x += W xq; xo, part as NORM
//   kr_gf_mv2nfc_<type>(qs, sc, xq, y, rows, nb, part, eps):   y = scale * (W xq) as NS
#define KR_GF_MV2NF(T, Q8, PF)                                                                                    \
    extern "C" __global__ void __launch_bounds__(32 * 16)                                                         \
    kr_gf_mv2nfp_##T(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc,                         \
                     const signed char *__restrict__ xq, float *x, int rows, int nb, const float *wn, float *part,  \
                     signed char *xo)                                                                             \
    {                                                                                                             \
        kr_gf_mv2<Q8, 2, PF, 2, 16>(qs, sc, xq, x, rows, nb, 1, 0, 0, xo, wn, part, 0.0f);                         \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * KR_GF_WARPS)                                                \
    kr_gf_mv2nfc_##T(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc,                         \
                     const signed char *__restrict__ xq, float *y, int rows, int nb, const float *part, float eps)  \
    {                                                                                                             \
        kr_gf_mv2<Q8, 2, PF, 3>(qs, sc, xq, y, rows, nb, 0, 0, 0, 0, 0, (float *)part, eps);                      \
    }
KR_GF_MV2NF(q4_0, 0, 4)
KR_GF_MV2NF(q8_0, 1, 2)

// The same producer with smaller CTAs (32 rows each): kr_gf_mv2nfp<W>_<type>, W warps x (32/W) rows.
#define KR_GF_MV2NFPW(T, Q8, W, NR, PF)                                                                           \
    extern "C" __global__ void __launch_bounds__(32 * W)                                                          \
    kr_gf_mv2nfp##W##_##T(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc,                    \
                          const signed char *__restrict__ xq, float *x, int rows, int nb, const float *wn,        \
                          float *part, signed char *xo)                                                           \
    {                                                                                                             \
        kr_gf_mv2<Q8, NR, PF, 2, W>(qs, sc, xq, x, rows, nb, 1, 0, 0, xo, wn, part, 0.0f);                        \
    }
KR_GF_MV2NFPW(q4_0, 0, 8, 4, 2)
KR_GF_MV2NFPW(q8_0, 1, 8, 4, 1)
KR_GF_MV2NFPW(q4_0, 0, 4, 8, 1)
KR_GF_MV2NFPW(q8_0, 1, 4, 8, 1)

// Norm-folding producers that quantize their own input (dynamic smem nb*40 bytes):
//   kr_gf_mv2nfpf_<type>(qs, sc, const float *xf, x, rows, nb, wn, part, xo): x input fp32 (nb*32)
//   kr_gf_mv2nfps_<type>(qs, sc, const float *gu, x, rows, nb, wn, part, xo): x = silu(gate) * up
//     of the fp32 gate|up vector (2 * nb*32 floats)
#define KR_GF_MV2NFX(T, Q8, PF)                                                                                   \
    extern "C" __global__ void __launch_bounds__(32 * 16)                                                         \
    kr_gf_mv2nfpf_##T(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc, const float *xf,      \
                      float *x, int rows, int nb, const float *wn, float *part, signed char *xo)                 \
    {                                                                                                             \
        kr_gf_mv2<Q8, 2, PF, 2, 16, 1>(qs, sc, (const signed char *)xf, x, rows, nb, 1, 0, 0, xo, wn, part, 0.0f); \
    }                                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * 16)                                                         \
    kr_gf_mv2nfps_##T(const uint4 *__restrict__ qs, const unsigned short *__restrict__ sc, const float *gu,      \
                      float *x, int rows, int nb, const float *wn, float *part, signed char *xo)                 \
    {                                                                                                             \
        kr_gf_mv2<Q8, 2, PF, 2, 16, 2>(qs, sc, (const signed char *)gu, x, rows, nb, 1, 0, 0, xo, wn, part, 0.0f); \
    }
KR_GF_MV2NFX(q4_0, 0, 4)
KR_GF_MV2NFX(q8_0, 1, 2)
