// Quantized matrix-vector product for batch-1 decode:
//   y (rows,) = W (rows, cols) @ x (cols,)     fp32 x and y, fp32 accumulation
// W is in GGML/GGUF block layout, one row every `row_stride` bytes (row r at
// w + r*row_stride), cols a multiple of the type's block size. Entry points:
//   kr_mv_q4_0, kr_mv_q4_1, kr_mv_q8_0, kr_mv_q4_k, kr_mv_q6_k  (block types)
//   kr_mv_f16, kr_mv_f32                                     (plain types)
//   kr_mv_q4_0_q8, kr_mv_q8_0_q8 with x pre-quantized by kr_quantize_x_q8 (end of file)
// Launch: block (32*KR_MV_WARPS, 1, 1), grid (ceil(rows / (KR_MV_WARPS*KR_MV_ROWS)), 1, 1).
// x must be 16-byte aligned. Each warp owns KR_MV_ROWS rows; it copies a
// stage of each row (KR_MV_STEPS steps of 256 elements; the three KR_MV_*
// macros may be set with -D, the launcher must match) into its own slice of
// shared memory with coalesced 16-byte loads (2-byte loads when the row base
// or stride is not 16-byte aligned), then every lane decodes 8 weights per
// step and row against 8 x values it loads once for all of the warp's rows.
#ifndef KR_DECODE_COMMON_CUH
#include "kr_decode_common.cuh"
#endif

#ifndef KR_MV_WARPS
#define KR_MV_WARPS 4
#endif
#ifndef KR_MV_ROWS
#define KR_MV_ROWS 2
#endif
#ifndef KR_MV_STEPS
#define KR_MV_STEPS 16
#endif
// 1: stage copy loads everything into registers before the first shared-memory
// store, so all 16-byte loads of a stage are in flight at once (0: one
// load -> store per iteration, which waits out a memory latency each time).
#ifndef KR_MV_PREFETCH
#define KR_MV_PREFETCH 0
#endif

__device__ __forceinline__ float4 kr_ldx4(const float *p) { return __ldg((const float4 *)p); }
__device__ __forceinline__ float kr_sum4(float4 a) { return (a.x + a.y) + (a.z + a.w); }

// Per-type step decoders. s: the step's bytes in shared memory for row 0,
// rows KR_MV_ROWS apart by `rs` bytes; x: the step's first x element;
// nvalid: valid elements in this step (multiple of the block size);
// acc[r] += this lane's share of row r.
template <int T> struct kr_mv_type;

// Q4_0, 8 blocks per step, 4 lanes per block: lane 4*bb+k takes qs bytes
// 4k..4k+3 of block bb -> elements 4k..4k+3 (low nibbles) and 16+4k.. (high).
template <> struct kr_mv_type<KR_T_Q4_0> {
    enum { TS = 18, BS = 32 };
    static __device__ __forceinline__ void step(const kr_u8 *s, int rs, const float *xb, int e0, int cols,
                                                int nvalid, int lane, float *acc)
    {
        const float *x = xb + e0;
        int bb = lane >> 2, k = lane & 3;
        if (32 * bb >= nvalid)
            return;
        float4 xl = kr_ldx4(x + 32 * bb + 4 * k), xh = kr_ldx4(x + 32 * bb + 16 + 4 * k);
        float xs = kr_sum4(xl) + kr_sum4(xh);
#pragma unroll
        for (int r = 0; r < KR_MV_ROWS; r++) {
            const kr_u8 *b = s + r * rs + bb * 18;
            kr_u32 q = (kr_u32)kr_ld_u16(b + 2 + 4 * k) | ((kr_u32)kr_ld_u16(b + 4 + 4 * k) << 16);
            float dot = (float)(q & 15) * xl.x + (float)((q >> 8) & 15) * xl.y +
                        (float)((q >> 16) & 15) * xl.z + (float)((q >> 24) & 15) * xl.w +
                        (float)((q >> 4) & 15) * xh.x + (float)((q >> 12) & 15) * xh.y +
                        (float)((q >> 20) & 15) * xh.z + (float)(q >> 28) * xh.w;
            acc[r] += kr_h2f(kr_ld_u16(b)) * (dot - 8.0f * xs);
        }
    }
};

// Q4_1: as Q4_0 with x = d*q + m (qs at byte 4, so 4-byte aligned).
template <> struct kr_mv_type<KR_T_Q4_1> {
    enum { TS = 20, BS = 32 };
    static __device__ __forceinline__ void step(const kr_u8 *s, int rs, const float *xb, int e0, int cols,
                                                int nvalid, int lane, float *acc)
    {
        const float *x = xb + e0;
        int bb = lane >> 2, k = lane & 3;
        if (32 * bb >= nvalid)
            return;
        float4 xl = kr_ldx4(x + 32 * bb + 4 * k), xh = kr_ldx4(x + 32 * bb + 16 + 4 * k);
        float xs = kr_sum4(xl) + kr_sum4(xh);
#pragma unroll
        for (int r = 0; r < KR_MV_ROWS; r++) {
            const kr_u8 *b = s + r * rs + bb * 20;
            kr_u32 q = *(const kr_u32 *)(b + 4 + 4 * k);
            float dot = (float)(q & 15) * xl.x + (float)((q >> 8) & 15) * xl.y +
                        (float)((q >> 16) & 15) * xl.z + (float)((q >> 24) & 15) * xl.w +
                        (float)((q >> 4) & 15) * xh.x + (float)((q >> 12) & 15) * xh.y +
                        (float)((q >> 20) & 15) * xh.z + (float)(q >> 28) * xh.w;
            acc[r] += kr_h2f(kr_ld_u16(b)) * dot + kr_h2f(kr_ld_u16(b + 2)) * xs;
        }
    }
};

__device__ __forceinline__ float kr_dot4_i8(kr_u32 q, float4 x)
{
    return (float)(kr_i8)(q & 0xff) * x.x + (float)(kr_i8)((q >> 8) & 0xff) * x.y +
           (float)(kr_i8)((q >> 16) & 0xff) * x.z + (float)(kr_i8)(q >> 24) * x.w;
}

// Q8_0, 8 blocks per step, lane 4*bb+k takes qs bytes 8k..8k+7 of block bb.
template <> struct kr_mv_type<KR_T_Q8_0> {
    enum { TS = 34, BS = 32 };
    static __device__ __forceinline__ void step(const kr_u8 *s, int rs, const float *xb, int e0, int cols,
                                                int nvalid, int lane, float *acc)
    {
        const float *x = xb + e0;
        int bb = lane >> 2, k = lane & 3;
        if (32 * bb >= nvalid)
            return;
        float4 x0 = kr_ldx4(x + 32 * bb + 8 * k), x1 = kr_ldx4(x + 32 * bb + 8 * k + 4);
#pragma unroll
        for (int r = 0; r < KR_MV_ROWS; r++) {
            const kr_u8 *b = s + r * rs + bb * 34;
            const kr_u8 *qp = b + 2 + 8 * k;
            kr_u32 q0 = (kr_u32)kr_ld_u16(qp) | ((kr_u32)kr_ld_u16(qp + 2) << 16);
            kr_u32 q1 = (kr_u32)kr_ld_u16(qp + 4) | ((kr_u32)kr_ld_u16(qp + 6) << 16);
            acc[r] += kr_h2f(kr_ld_u16(b)) * (kr_dot4_i8(q0, x0) + kr_dot4_i8(q1, x1));
        }
    }
};

// Q4_K, one super-block per step: lane = 8*j + t/4 takes qs bytes 32j+t..t+3
// -> elements 64j+t.. (low nibbles, sub-block 2j) and 64j+32+t.. (high, 2j+1).
template <> struct kr_mv_type<KR_T_Q4_K> {
    enum { TS = 144, BS = 256 };
    static __device__ __forceinline__ void step(const kr_u8 *s, int rs, const float *xb, int e0, int cols,
                                                int nvalid, int lane, float *acc)
    {
        const float *x = xb + e0;
        int j = lane >> 3, t = (lane & 7) * 4;
        float4 xl = kr_ldx4(x + 64 * j + t), xh = kr_ldx4(x + 64 * j + 32 + t);
        float sl = kr_sum4(xl), sh = kr_sum4(xh);
#pragma unroll
        for (int r = 0; r < KR_MV_ROWS; r++) {
            const kr_u8 *b = s + r * rs;
            kr_u32 q = *(const kr_u32 *)(b + 16 + 32 * j + t);
            float dl = (float)(q & 15) * xl.x + (float)((q >> 8) & 15) * xl.y +
                       (float)((q >> 16) & 15) * xl.z + (float)((q >> 24) & 15) * xl.w;
            float dh = (float)((q >> 4) & 15) * xh.x + (float)((q >> 12) & 15) * xh.y +
                       (float)((q >> 20) & 15) * xh.z + (float)(q >> 28) * xh.w;
            float sc0, m0, sc1, m1;
            kr_q4k_scale_min(b + 4, 2 * j, &sc0, &m0);
            kr_q4k_scale_min(b + 4, 2 * j + 1, &sc1, &m1);
            float d = kr_h2f(kr_ld_u16(b)), dmin = kr_h2f(kr_ld_u16(b + 2));
            acc[r] += d * (sc0 * dl + sc1 * dh) - dmin * (m0 * sl + m1 * sh);
        }
    }
};

// Q6_K, one super-block per step: lane = 16*n + l0/2 takes l = l0, l0+1 of
// half n -> elements 128n + 32m + l for m < 4 (see kr_deq1_q6_k).
template <> struct kr_mv_type<KR_T_Q6_K> {
    enum { TS = 210, BS = 256 };
    static __device__ __forceinline__ void step(const kr_u8 *s, int rs, const float *xb, int e0, int cols,
                                                int nvalid, int lane, float *acc)
    {
        const float *x = xb + e0;
        int n = lane >> 4, l0 = (lane & 15) * 2;
        float2 xv[4];
#pragma unroll
        for (int m = 0; m < 4; m++)
            xv[m] = __ldg((const float2 *)(x + 128 * n + 32 * m + l0));
#pragma unroll
        for (int r = 0; r < KR_MV_ROWS; r++) {
            const kr_u8 *b = s + r * rs;
            const kr_u8 *ql = b + 64 * n + l0, *qh = b + 128 + 32 * n + l0;
            const kr_i8 *sc = (const kr_i8 *)(b + 192 + 8 * n + (l0 >> 4));
            float part = 0.0f;
#pragma unroll
            for (int m = 0; m < 4; m++) {
                int sh = m >= 2 ? 4 : 0, half = (m & 1) * 32;
                int qa = ((ql[half] >> sh) & 15) | (((qh[0] >> (2 * m)) & 3) << 4);
                int qb = ((ql[half + 1] >> sh) & 15) | (((qh[1] >> (2 * m)) & 3) << 4);
                part += (float)sc[2 * m] * ((float)(qa - 32) * xv[m].x + (float)(qb - 32) * xv[m].y);
            }
            acc[r] += kr_h2f(kr_ld_u16(b + 208)) * part;
        }
    }
};

// Stage geometry of block type Q: steps per stage = KR_MV_STEPS, lowered to
// fit 48 KiB of static shared memory and rounded to keep every stage start
// 16-byte aligned (Q6_K's 210-byte steps need multiples of 8).
template <class Q> struct kr_mv_geom {
    enum {
        STEP = (256 / Q::BS) * Q::TS,
        ALIGN = STEP % 16 == 0 ? 1 : STEP % 8 == 0 ? 2 : STEP % 4 == 0 ? 4 : 8,
        MAXST = 49152 / (KR_MV_WARPS * KR_MV_ROWS * STEP),
        S0 = KR_MV_STEPS < MAXST ? KR_MV_STEPS : MAXST,
        STEPS = S0 / ALIGN * ALIGN > 0 ? S0 / ALIGN * ALIGN : ALIGN,
        STAGE = STEPS * STEP,
        STAGE_PAD = (STAGE + 15) & ~15
    };
};

// Copy bytes [off, off + nb) of rows r0.. (those < rows) into this warp's
// shared slices dst + r*pad: 16-byte loads when vec, else 2-byte loads.
// MAXB: largest nb (the stage size), for the KR_MV_PREFETCH register buffer.
template <int MAXB>
__device__ __forceinline__ void kr_mv_stage(const kr_u8 *__restrict__ w, kr_i64 row_stride, int r0, int rows,
                                            kr_i64 off, int nb, bool vec, kr_u8 *dst, int pad, int lane)
{
    const int n16 = vec ? nb >> 4 : 0;
#if KR_MV_PREFETCH
    enum { PER_LANE = (MAXB / 16 + 31) / 32 };
    uint4 buf[KR_MV_ROWS][PER_LANE];
#pragma unroll
    for (int r = 0; r < KR_MV_ROWS; r++) {
        const uint4 *src = (const uint4 *)(w + (kr_i64)min(r0 + r, rows - 1) * row_stride + off);
#pragma unroll
        for (int j = 0; j < PER_LANE; j++) {
            const int i = lane + 32 * j;
            if (i < n16)
                buf[r][j] = __ldg(src + i);
        }
    }
#pragma unroll
    for (int r = 0; r < KR_MV_ROWS; r++) {
        uint4 *d = (uint4 *)(dst + r * pad);
#pragma unroll
        for (int j = 0; j < PER_LANE; j++) {
            const int i = lane + 32 * j;
            if (i < n16)
                d[i] = buf[r][j];
        }
    }
    const int first16 = n16; // the 16-byte part is done; only the 2-byte tail below
#else
    const int first16 = 0;
#endif
#pragma unroll
    for (int r = 0; r < KR_MV_ROWS; r++) {
        if (r0 + r >= rows)
            break;
        const kr_u8 *src = w + (kr_i64)(r0 + r) * row_stride + off;
        kr_u8 *d = dst + r * pad;
        for (int i = first16 + lane; i < n16; i += 32)
            ((uint4 *)d)[i] = __ldg((const uint4 *)src + i);
        for (int i = n16 * 8 + lane; i < (nb >> 1); i += 32)
            ((kr_u16 *)d)[i] = __ldg((const unsigned short *)src + i);
    }
}

// Q: step decoder (kr_mv_type<T> for fp32 x, kr_mv8_type<T> for q8 x);
// X: what the decoder reads for x (float, or the q8 buffer's bytes).
template <class Q, class X>
__device__ __forceinline__ void kr_mv_block(const kr_u8 *__restrict__ w, const X *__restrict__ x,
                                            float *__restrict__ y, int rows, int cols, kr_i64 row_stride)
{
    typedef kr_mv_geom<Q> G;
    __shared__ __align__(16) kr_u8 sm[KR_MV_WARPS][KR_MV_ROWS][G::STAGE_PAD];

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r0 = (blockIdx.x * KR_MV_WARPS + warp) * KR_MV_ROWS;
    if (r0 >= rows)
        return; // whole warp; no block-wide barriers below
    const kr_i64 row_bytes = (kr_i64)(cols / Q::BS) * Q::TS;
    const bool vec = (((kr_u64)w | (kr_u64)row_stride) & 15) == 0;
    float acc[KR_MV_ROWS];
#pragma unroll
    for (int r = 0; r < KR_MV_ROWS; r++)
        acc[r] = 0.0f;

    for (kr_i64 off = 0; off < row_bytes; off += G::STAGE) {
        const int nb = (int)min((kr_i64)G::STAGE, row_bytes - off); // even: all block sizes are
        kr_mv_stage<G::STAGE>(w, row_stride, r0, rows, off, nb, vec, &sm[warp][0][0], G::STAGE_PAD, lane);
        __syncwarp();
        const int e_base = (int)(off / Q::TS) * Q::BS;
#pragma unroll 1
        for (int st = 0; st < G::STEPS; st++) {
            const int e0 = e_base + st * 256;
            if (e0 >= cols)
                break;
            Q::step(&sm[warp][0][st * G::STEP], G::STAGE_PAD, x, e0, cols, min(256, cols - e0), lane, acc);
        }
        __syncwarp();
    }
#pragma unroll
    for (int r = 0; r < KR_MV_ROWS; r++) {
        float v = kr_warp_sum(acc[r]);
        if (lane == 0 && r0 + r < rows)
            y[r0 + r] = v;
    }
}

extern "C" __global__ void __launch_bounds__(32 * KR_MV_WARPS)
kr_mv_q4_0(const kr_u8 *w, const float *x, float *y, int rows, int cols, kr_i64 row_stride)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    kr_mv_block<kr_mv_type<KR_T_Q4_0>, float>(w, x, y, rows, cols, row_stride);
}
extern "C" __global__ void __launch_bounds__(32 * KR_MV_WARPS)
kr_mv_q4_1(const kr_u8 *w, const float *x, float *y, int rows, int cols, kr_i64 row_stride)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    kr_mv_block<kr_mv_type<KR_T_Q4_1>, float>(w, x, y, rows, cols, row_stride);
}
extern "C" __global__ void __launch_bounds__(32 * KR_MV_WARPS)
kr_mv_q8_0(const kr_u8 *w, const float *x, float *y, int rows, int cols, kr_i64 row_stride)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    kr_mv_block<kr_mv_type<KR_T_Q8_0>, float>(w, x, y, rows, cols, row_stride);
}
extern "C" __global__ void __launch_bounds__(32 * KR_MV_WARPS)
kr_mv_q4_k(const kr_u8 *w, const float *x, float *y, int rows, int cols, kr_i64 row_stride)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    kr_mv_block<kr_mv_type<KR_T_Q4_K>, float>(w, x, y, rows, cols, row_stride);
}
extern "C" __global__ void __launch_bounds__(32 * KR_MV_WARPS)
kr_mv_q6_k(const kr_u8 *w, const float *x, float *y, int rows, int cols, kr_i64 row_stride)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    kr_mv_block<kr_mv_type<KR_T_Q6_K>, float>(w, x, y, rows, cols, row_stride);
}

// F16 / F32 rows need no decoding: each lane streams 16-byte chunks of every
// row straight from global memory (scalar loads when the row base, stride or
// cols break 16-byte alignment), KR_MV_ROWS rows per warp sharing x.
// 8 halves of q against xa (4) and xb (4)
__device__ __forceinline__ float kr_dot8_f16(uint4 q, float4 xa, float4 xb)
{
    return kr_h2f((kr_u16)(q.x & 0xffff)) * xa.x + kr_h2f((kr_u16)(q.x >> 16)) * xa.y +
           kr_h2f((kr_u16)(q.y & 0xffff)) * xa.z + kr_h2f((kr_u16)(q.y >> 16)) * xa.w +
           kr_h2f((kr_u16)(q.z & 0xffff)) * xb.x + kr_h2f((kr_u16)(q.z >> 16)) * xb.y +
           kr_h2f((kr_u16)(q.w & 0xffff)) * xb.z + kr_h2f((kr_u16)(q.w >> 16)) * xb.w;
}

// The first KR_MV_F16_PRE chunks of each row are loaded before KR_PDL_WAIT():
// the weights are constant, so under PDL they stream in while the previous
// kernel finishes (same accumulation order as without).
#define KR_MV_F16_PRE 4
extern "C" __global__ void __launch_bounds__(32 * KR_MV_WARPS)
kr_mv_f16(const kr_u8 *w, const float *x, float *y, int rows, int cols, kr_i64 row_stride)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r0 = (blockIdx.x * KR_MV_WARPS + warp) * KR_MV_ROWS;
    if (r0 >= rows)
        return;
    const bool vec = (((kr_u64)w | (kr_u64)row_stride) & 15) == 0;
    const int nv = vec ? cols >> 3 : 0; // 8-half chunks
    const kr_u8 *rp[KR_MV_ROWS];
    float acc[KR_MV_ROWS];
#pragma unroll
    for (int r = 0; r < KR_MV_ROWS; r++) {
        rp[r] = w + (kr_i64)min(r0 + r, rows - 1) * row_stride; // clamp: reads stay in bounds
        acc[r] = 0.0f;
    }
    uint4 pre[KR_MV_F16_PRE][KR_MV_ROWS];
#pragma unroll
    for (int k = 0; k < KR_MV_F16_PRE; k++) {
        const int c = lane + 32 * k;
#pragma unroll
        for (int r = 0; r < KR_MV_ROWS; r++)
            if (c < nv)
                pre[k][r] = __ldg((const uint4 *)rp[r] + c);
    }
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
#pragma unroll
    for (int k = 0; k < KR_MV_F16_PRE; k++) {
        const int c = lane + 32 * k;
        if (c < nv) {
            float4 xa = kr_ldx4(x + 8 * c), xb = kr_ldx4(x + 8 * c + 4);
#pragma unroll
            for (int r = 0; r < KR_MV_ROWS; r++)
                acc[r] += kr_dot8_f16(pre[k][r], xa, xb);
        }
    }
#pragma unroll 4
    for (int c = lane + 32 * KR_MV_F16_PRE; c < nv; c += 32) {
        float4 xa = kr_ldx4(x + 8 * c), xb = kr_ldx4(x + 8 * c + 4);
#pragma unroll
        for (int r = 0; r < KR_MV_ROWS; r++) {
            uint4 q = __ldg((const uint4 *)rp[r] + c);
            acc[r] += kr_dot8_f16(q, xa, xb);
        }
    }
    for (int i = nv * 8 + lane; i < cols; i += 32) {
        float xv = x[i];
#pragma unroll
        for (int r = 0; r < KR_MV_ROWS; r++)
            acc[r] += kr_h2f(((const kr_u16 *)rp[r])[i]) * xv;
    }
#pragma unroll
    for (int r = 0; r < KR_MV_ROWS; r++) {
        float v = kr_warp_sum(acc[r]);
        if (lane == 0 && r0 + r < rows)
            y[r0 + r] = v;
    }
}

extern "C" __global__ void __launch_bounds__(32 * KR_MV_WARPS)
kr_mv_f32(const kr_u8 *w, const float *x, float *y, int rows, int cols, kr_i64 row_stride)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r0 = (blockIdx.x * KR_MV_WARPS + warp) * KR_MV_ROWS;
    if (r0 >= rows)
        return;
    const bool vec = (((kr_u64)w | (kr_u64)row_stride) & 15) == 0;
    const int nv = vec ? cols >> 2 : 0; // 4-float chunks
    const float *rp[KR_MV_ROWS];
    float acc[KR_MV_ROWS];
#pragma unroll
    for (int r = 0; r < KR_MV_ROWS; r++) {
        rp[r] = (const float *)(w + (kr_i64)min(r0 + r, rows - 1) * row_stride);
        acc[r] = 0.0f;
    }
#pragma unroll 4
    for (int c = lane; c < nv; c += 32) {
        float4 xa = kr_ldx4(x + 4 * c);
#pragma unroll
        for (int r = 0; r < KR_MV_ROWS; r++) {
            float4 q = __ldg((const float4 *)rp[r] + c);
            acc[r] += q.x * xa.x + q.y * xa.y + q.z * xa.z + q.w * xa.w;
        }
    }
    for (int i = nv * 4 + lane; i < cols; i += 32) {
        float xv = x[i];
#pragma unroll
        for (int r = 0; r < KR_MV_ROWS; r++)
            acc[r] += rp[r][i] * xv;
    }
#pragma unroll
    for (int r = 0; r < KR_MV_ROWS; r++) {
        float v = kr_warp_sum(acc[r]);
        if (lane == 0 && r0 + r < rows)
            y[r0 + r] = v;
    }
}

// ---- activations quantized to 8 bits on the fly -----------------------------
// kr_quantize_x_q8: x (cols,) fp32, cols a multiple of 32 -> xq, laid out as
//   int8 q[cols] | float d[cols/32] | float s[cols/32]
// with, per block b of 32: d = max|x|/127, q = rint(x/d) (0 when d = 0),
// s = d * sum(q). Launch: block 256, grid ceil(cols/32 / 8).
extern "C" __global__ void kr_quantize_x_q8(const float *__restrict__ x, kr_u8 *__restrict__ xq, int cols)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    const int nb = cols >> 5;
    const int b = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (b >= nb)
        return;
    const float v = x[32 * b + lane];
    const float amax = kr_warp_max(fabsf(v));
    const float d = amax / 127.0f;
    const int q = d > 0.0f ? __float2int_rn(v / d) : 0;
    const float qs = kr_warp_sum((float)q);
    ((kr_i8 *)xq)[32 * b + lane] = (kr_i8)q;
    if (lane == 0) {
        float *dp = (float *)(xq + cols);
        dp[b] = d;
        dp[nb + b] = d * qs;
    }
}

// Step decoders against q8 x (same lane mapping as the fp32 ones, __dp4a dots).
template <int T> struct kr_mv8_type;

// Q4_0 x q8: sum_block d_w d_x (q_w - 8) q_x = d_w (d_x dot - 8 s_x); the
// 4 lanes of a block each add d_w (d_x dot_lane - 2 s_x).
template <> struct kr_mv8_type<KR_T_Q4_0> {
    enum { TS = 18, BS = 32 };
    static __device__ __forceinline__ void step(const kr_u8 *s, int rs, const kr_u8 *xq, int e0, int cols,
                                                int nvalid, int lane, float *acc)
    {
        int bb = lane >> 2, k = lane & 3;
        if (32 * bb >= nvalid)
            return;
        const int b = (e0 >> 5) + bb;
        const int *qx = (const int *)(xq + 32 * b);
        const int xl = __ldg(qx + k), xh = __ldg(qx + 4 + k);
        const float *dp = (const float *)(xq + cols);
        const float dx = __ldg(dp + b), sx = __ldg(dp + (cols >> 5) + b);
#pragma unroll
        for (int r = 0; r < KR_MV_ROWS; r++) {
            const kr_u8 *blk = s + r * rs + bb * 18;
            kr_u32 q = (kr_u32)kr_ld_u16(blk + 2 + 4 * k) | ((kr_u32)kr_ld_u16(blk + 4 + 4 * k) << 16);
            int dot = __dp4a((int)(q & 0x0f0f0f0fu), xl, __dp4a((int)((q >> 4) & 0x0f0f0f0fu), xh, 0));
            acc[r] += kr_h2f(kr_ld_u16(blk)) * (dx * (float)dot - 2.0f * sx);
        }
    }
};

// Q8_0 x q8: d_w d_x sum q_w q_x; lane 4*bb+k takes bytes 8k..8k+7.
template <> struct kr_mv8_type<KR_T_Q8_0> {
    enum { TS = 34, BS = 32 };
    static __device__ __forceinline__ void step(const kr_u8 *s, int rs, const kr_u8 *xq, int e0, int cols,
                                                int nvalid, int lane, float *acc)
    {
        int bb = lane >> 2, k = lane & 3;
        if (32 * bb >= nvalid)
            return;
        const int b = (e0 >> 5) + bb;
        const int *qx = (const int *)(xq + 32 * b);
        const int x0 = __ldg(qx + 2 * k), x1 = __ldg(qx + 2 * k + 1);
        const float dx = __ldg((const float *)(xq + cols) + b);
#pragma unroll
        for (int r = 0; r < KR_MV_ROWS; r++) {
            const kr_u8 *blk = s + r * rs + bb * 34;
            const kr_u8 *qp = blk + 2 + 8 * k;
            kr_u32 q0 = (kr_u32)kr_ld_u16(qp) | ((kr_u32)kr_ld_u16(qp + 2) << 16);
            kr_u32 q1 = (kr_u32)kr_ld_u16(qp + 4) | ((kr_u32)kr_ld_u16(qp + 6) << 16);
            int dot = __dp4a((int)q0, x0, __dp4a((int)q1, x1, 0));
            acc[r] += kr_h2f(kr_ld_u16(blk)) * dx * (float)dot;
        }
    }
};

// y (rows,) = W (rows, cols) @ x, with x given as kr_quantize_x_q8's output.
extern "C" __global__ void __launch_bounds__(32 * KR_MV_WARPS)
kr_mv_q4_0_q8(const kr_u8 *w, const kr_u8 *xq, float *y, int rows, int cols, kr_i64 row_stride)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    kr_mv_block<kr_mv8_type<KR_T_Q4_0>, kr_u8>(w, xq, y, rows, cols, row_stride);
}
extern "C" __global__ void __launch_bounds__(32 * KR_MV_WARPS)
kr_mv_q8_0_q8(const kr_u8 *w, const kr_u8 *xq, float *y, int rows, int cols, kr_i64 row_stride)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS();
    kr_mv_block<kr_mv8_type<KR_T_Q8_0>, kr_u8>(w, xq, y, rows, cols, row_stride);
}
