// KV cache store and decode attention over the device KV cache layout of
// plugins/cuda_decode/kr_decode_kv.h (per layer and slot: rows x row_bytes,
// position p in row p % rows; F16 rows = kv_dim fp16; Q8_0 rows = kv_dim int8
// quants then kv_dim/32 fp16 scales). Positions come from device memory
// (pos != NULL) so a captured CUDA graph stays valid; the slot base may too
// (slot != NULL: base + *slot * slot_bytes). Every kernel starts with
// KR_PDL_WAIT() (programmatic dependent launch).
#ifndef KR_DECODE_COMMON_CUH
#include "kr_decode_common.cuh"
#endif

#ifndef KR_PDL_WAIT
#define KR_PDL_WAIT() asm volatile("griddepcontrol.wait;" ::: "memory")
#endif
#ifndef KR_PDL_LAUNCH_DEPENDENTS
#define KR_PDL_LAUNCH_DEPENDENTS() do { } while (0)
#endif

#ifndef KR_KVA_THREADS
#define KR_KVA_THREADS 128 // threads per attention block (128 or 256)
#endif
#ifndef KR_KVA_CP
#define KR_KVA_CP 0        // 1: F16 tiles arrive by cp.async into KR_KVA_STAGES stages
#endif
#ifndef KR_KVA_STAGES
#define KR_KVA_STAGES 2    // cp.async stages (tiles in flight + 1); STAGES x TILE <= 8192
#endif
#ifndef KR_KVA_FC
#define KR_KVA_FC 0        // 1: the last block of each head group merges the splits (no combine launch)
#endif
#ifndef KR_KVA_EARLY
#define KR_KVA_EARLY 0     // 1: trigger the dependent launch (PDL) at the start instead of after the loop
#endif
// 4096-element tiles: ask for 512 resident threads per SM (<= 128 registers: 4 blocks of 128)
#if defined(KR_KVA_MINB_OPT) && KR_KVA_MINB_OPT > 0
#define KR_KVA_MINB KR_KVA_MINB_OPT
#else
#define KR_KVA_MINB (KR_KVA_TILE <= 4096 ? 512 / KR_KVA_THREADS : 1)
#endif
#ifndef KR_KVA_DSP
#define KR_KVA_DSP 4       // most threads per (head, position) dot product in the scores (1, 2 or 4)
#endif
#ifndef KR_KVA_HR
#define KR_KVA_HR 0        // 1: GQA groups of 2..4 query heads: a thread keeps all of them (one K/V chunk load and
#endif                     //    conversion serves every head); 128 threads only
#if KR_KVA_HR && KR_KVA_THREADS != 128
#error "KR_KVA_HR needs KR_KVA_THREADS 128 (slice reduction buffer)"
#endif
#define KR_KVA_HRMAX 4
#define KR_KVA_FC_MAX 512  // most splits the fused combine takes ((RB x n_split) weights in shared memory)
#define KR_KVA_RB 8        // query heads per block at most (one KV group, or part of one)
#ifndef KR_KVA_TILE
#define KR_KVA_TILE 8192   // positions x head_dim per shared-memory tile (<= 8192)
#endif
#define KR_KVA_MAXT 128    // positions per tile at most
#if KR_KVA_CP && KR_KVA_STAGES * KR_KVA_TILE > 8192
#error "KR_KVA_CP needs KR_KVA_STAGES x KR_KVA_TILE <= 8192 (stages of K and V tiles)"
#endif
#define KR_KVA_LPT (KR_KVA_TILE / 8 / KR_KVA_THREADS)                  // 8-element chunks per thread per tile
#define KR_KVA_CPT ((KR_KVA_RB * 32 + KR_KVA_THREADS - 1) / KR_KVA_THREADS) // (head, chunk) PV outputs per thread
#define KR_KVA_NACC (KR_KVA_HR && KR_KVA_CPT < 4 ? 4 : KR_KVA_CPT)          // acc rows per thread
// Shared bytes: K and V tiles (one stage: 2 x (2*TILE + 16*MAXT) for F16 rows padded by 16 bytes; Q8_0
// needs less; cp.async: KR_KVA_STAGES stages of at most 32 rows) below KR_KVA_QOFF, then Q rows + scores
// (KR_KVA_RB * (head_dim + T) fp32 <= 9216 bytes: head_dim 256 with T 32 is the widest case).
#if KR_KVA_CP // stages of at most 32 rows (KR_KVA_CPT_ROWS)
#define KR_KVA_QOFF (KR_KVA_STAGES * 2 * (2 * KR_KVA_TILE + 16 * 32))
#else
#define KR_KVA_QOFF (2 * (2 * KR_KVA_TILE + 16 * KR_KVA_MAXT))
#endif
#define KR_KVA_SMEM (KR_KVA_QOFF + 9216)

__device__ __forceinline__ const kr_u8 *kr_kv_base(const void *b, const int *slot, long long slot_bytes)
{
    return (const kr_u8 *)b + (slot ? (kr_i64)*slot * slot_bytes : 0);
}

// ---- store -------------------------------------------------------------------
// Token t (blockIdx.y) at position p = (*pos or pos_imm) + t:
//   items [0, nq): q rotation pairs (nq = n_head*n_rot/2 rounded up to 32; 0 when q is NULL or n_rot 0),
//   items [nq, nq + nkv): K element e (rotated when n_rot > 0), nkv = kv_dim rounded up to 32,
//   items [nq + nkv, nq + 2 nkv): V element e.
// One warp covers 32 consecutive K (or V) elements = one Q8_0 block (kv_dim % 32 == 0 for Q8_0).
// Rotation as kr_rope_f32: theta_i = p*freq_scale*freq_base^(-2i/n_rot) / ff[i]; pairs (2i, 2i+1),
// or (i, i + n_rot/2) with neox. k_new is only read; q is rotated in place.
// Q8_0: d = amax/127, q = roundf(x * (1/d)) (0 when d == 0), d stored as fp16 (GGML q8_0).
// Nothing is stored for p < 0. Launch: block 256, grid (ceil((nq + 2 nkv) / 256), n_tok).
__device__ __forceinline__ float kr_kv_theta(int p, int i, int n_rot, float freq_base, float freq_scale,
                                             const float *ff)
{
    float theta = (float)p * freq_scale * powf(freq_base, -2.0f * (float)i / (float)n_rot);
    if (ff)
        theta /= ff[i];
    return theta;
}

// One rotated element: x is the element, y its pair partner; first: x is the pair's first element.
// Shared by kr_kv_store_rope and kr_fa_* so both write bit-identical cache rows.
__device__ __forceinline__ float kr_kv_rot(float x, float y, float cs, float sn, bool first)
{
    return first ? x * cs - y * sn : y * sn + x * cs;
}

extern "C" __global__ void __launch_bounds__(256)
kr_kv_store_rope(float *q, int n_head, const float *k_new, const float *v_new, void *kc, void *vc, const int *slot,
                 long long slot_bytes, int q8, int rows, int kv_dim, long long row_bytes, int head_dim, int n_rot,
                 const int *pos, int pos_imm, float freq_base, float freq_scale, const float *ff, int neox)
{
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS(); // the next kernel may start once all our blocks have (it still waits for us)
    const int t = blockIdx.y;
    const int p = (pos ? *pos : pos_imm) + t;
    const int half = n_rot >> 1;
    const int nq = q && n_rot > 0 ? ((n_head * half + 31) & ~31) : 0;
    const int nkv = (kv_dim + 31) & ~31;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < nq) { // warp-uniform: nq is a multiple of 32
        if (i < n_head * half) {
            const int h = i / half, ii = i - h * half;
            float *v = q + ((kr_i64)t * n_head + h) * head_dim;
            float sn, cs;
            sincosf(kr_kv_theta(p, ii, n_rot, freq_base, freq_scale, ff), &sn, &cs);
            const int ia = neox ? ii : 2 * ii, ib = neox ? ii + half : 2 * ii + 1;
            const float a = v[ia], b = v[ib];
            v[ia] = a * cs - b * sn;
            v[ib] = a * sn + b * cs;
        }
        return;
    }
    int e = i - nq;
    const bool is_k = e < nkv;
    if (!is_k)
        e -= nkv;
    if (e >= nkv)
        return; // whole warp (nkv is a multiple of 32)
    const bool in = e < kv_dim;
    float x = 0.0f;
    if (in) {
        const float *src = (is_k ? k_new : v_new) + (kr_i64)t * kv_dim;
        x = src[e];
        const int d = e % head_dim;
        if (is_k && d < n_rot) {
            const bool first = neox ? d < half : (d & 1) == 0;
            const int ii = neox ? (first ? d : d - half) : d >> 1;
            const int partner = neox ? (first ? d + half : d - half) : (d ^ 1);
            const float y = src[e - d + partner];
            float sn, cs;
            sincosf(kr_kv_theta(p, ii, n_rot, freq_base, freq_scale, ff), &sn, &cs);
            x = kr_kv_rot(x, y, cs, sn, first);
        }
    }
    kr_u8 *row = (kr_u8 *)kr_kv_base(is_k ? kc : vc, slot, slot_bytes);
    if (p >= 0)
        row += (kr_i64)(p % rows) * row_bytes;
    if (!q8) {
        if (in && p >= 0)
            ((kr_u16 *)row)[e] = kr_f2h(x);
        return;
    }
    const float amax = kr_warp_max(fabsf(x));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    if (in && p >= 0) {
        ((signed char *)row)[e] = (signed char)(int)roundf(x * id);
        if ((e & 31) == 0)
            ((kr_u16 *)(row + kv_dim))[e >> 5] = kr_f2h(d);
    }
}

// ---- attention -----------------------------------------------------------------
// One block: query heads h0 .. h0+nr-1 (nr <= KR_KVA_RB) of KV group g, and split
// blockIdx.y of the visible positions [j0, p]. Grid (n_head_kv * nhb, n_split),
// nhb = ceil((n_head/n_head_kv) / KR_KVA_RB), block KR_KVA_THREADS.
// The block walks its chunk in tiles of T = min(128, KR_KVA_TILE/head_dim) positions:
// every thread loads its share of the next tile's K and V rows (16-byte F16 /
// 8-byte Q8_0 chunks) into registers while the current tile (in shared memory)
// is used: scores S[r][t] = (scale q_r) . K_t (one thread per (r, t)), an online
// softmax per head (one warp per head: running max m, sum l, correction), then
// acc[r][d] = acc*corr + sum_t P[r][t] V_t[d] (threads own (r, 8 dims) and a slice of t).
// Output: n_split == 1: out = acc / l; else part[(h*n_split + s)*(D + 2) + :] = (acc, m, l)
// for kr_kva_combine. Invalid position (p < 0 or the span > rows): NaN.
#ifndef KR_KVA_CP_HELPERS // (a CPU emulation of this file may supply its own)
__device__ __forceinline__ kr_u32 kr_smem_addr(const void *p)
{
    kr_u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}

// 16 bytes global -> shared, asynchronous; n = 0 zero-fills them instead.
__device__ __forceinline__ void kr_cp_async16(void *dst, const void *src, int n)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(kr_smem_addr(dst)), "l"(src), "r"(n)
                 : "memory");
}
__device__ __forceinline__ void kr_cp_commit(void) { asm volatile("cp.async.commit_group;" ::: "memory"); }
// wait until at most the newest committed group is still in flight
__device__ __forceinline__ void kr_cp_wait1(void) { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
// wait until at most the newest KR_KVA_STAGES - 1 groups are still in flight
__device__ __forceinline__ void kr_cp_wait_stages(void)
{
    asm volatile("cp.async.wait_group %0;" ::"n"(KR_KVA_STAGES - 1) : "memory");
}
#endif

// cp.async of one F16 tile pair (rows t0.. of [t0, te)) into Kt/Vt; rows past te are zero-filled.
__device__ __forceinline__ void kr_kva_issue(kr_u8 *Kt, kr_u8 *Vt, const kr_u8 *kb, const kr_u8 *vb,
                                             long long row_bytes, int rows, int goff, int t0, int te, const int *ct,
                                             const int *cj, int stride)
{
    const int r0 = t0 % rows;
#pragma unroll
    for (int k = 0; k < KR_KVA_LPT; k++) {
        const int t = ct[k];
        if (t < 0)
            continue;
        const bool ok = t0 + t < te;
        int row = r0 + t;
        if (row >= rows)
            row -= rows;
        const kr_i64 o = ok ? (kr_i64)row * row_bytes + goff + cj[k] * 16 : 0;
        kr_cp_async16(Kt + t * stride + cj[k] * 16, kb + o, ok ? 16 : 0);
        kr_cp_async16(Vt + t * stride + cj[k] * 16, vb + o, ok ? 16 : 0);
    }
}

template <int Q8>
__device__ __forceinline__ void kr_kva_load(const kr_u8 *kb, const kr_u8 *vb, long long row_bytes, int rows,
                                            int kv_dim, int goff, int t0, int te, const int *ct, const int *cj,
                                            uint4 *kr, uint4 *vr, kr_u16 *ks, kr_u16 *vs)
{
    const int r0 = t0 % rows;
#pragma unroll
    for (int k = 0; k < KR_KVA_LPT; k++) {
        const int t = ct[k];
        kr[k] = make_uint4(0, 0, 0, 0);
        vr[k] = make_uint4(0, 0, 0, 0);
        ks[k] = 0;
        vs[k] = 0;
        if (t >= 0 && t0 + t < te) {
            int row = r0 + t;
            if (row >= rows)
                row -= rows;
            const kr_i64 ro = (kr_i64)row * row_bytes;
            if (Q8) {
                const kr_i64 o = ro + goff + cj[k] * 8;
                const uint2 a = __ldg((const uint2 *)(kb + o)), b = __ldg((const uint2 *)(vb + o));
                kr[k].x = a.x;
                kr[k].y = a.y;
                vr[k].x = b.x;
                vr[k].y = b.y;
                const kr_i64 so = ro + kv_dim + ((goff + cj[k] * 8) >> 5) * 2;
                ks[k] = __ldg((const unsigned short *)(kb + so));
                vs[k] = __ldg((const unsigned short *)(vb + so));
            } else {
                const kr_i64 o = ro + goff + cj[k] * 16;
                kr[k] = __ldg((const uint4 *)(kb + o));
                vr[k] = __ldg((const uint4 *)(vb + o));
            }
        }
    }
}

// 8 values of row t, chunk j of a shared tile, as floats (F16: exact; Q8_0:
// the int8 quants, *sc = the chunk's scale).
__device__ __forceinline__ void kr_kva_h8(uint4 u, float *f)
{
    f[0] = kr_h2f((kr_u16)(u.x & 0xffff));
    f[1] = kr_h2f((kr_u16)(u.x >> 16));
    f[2] = kr_h2f((kr_u16)(u.y & 0xffff));
    f[3] = kr_h2f((kr_u16)(u.y >> 16));
    f[4] = kr_h2f((kr_u16)(u.z & 0xffff));
    f[5] = kr_h2f((kr_u16)(u.z >> 16));
    f[6] = kr_h2f((kr_u16)(u.w & 0xffff));
    f[7] = kr_h2f((kr_u16)(u.w >> 16));
}

// int8 -> float without I2F (a quarter-rate conversion): flip the sign bit so the byte is
// q + 128, place it in the mantissa of 2^23 (0x4B0000xx = 2^23 + q + 128) and subtract: exact.
__device__ __forceinline__ float kr_kva_b2f(kr_u32 u, kr_u32 sel)
{
    return __int_as_float((int)__byte_perm(u, 0x4Bu, sel)) - 8388736.0f; // 2^23 + 128
}

__device__ __forceinline__ void kr_kva_q8(uint2 u, float *f)
{
    const kr_u32 a = u.x ^ 0x80808080u, b = u.y ^ 0x80808080u;
    f[0] = kr_kva_b2f(a, 0x4550u);
    f[1] = kr_kva_b2f(a, 0x4551u);
    f[2] = kr_kva_b2f(a, 0x4552u);
    f[3] = kr_kva_b2f(a, 0x4553u);
    f[4] = kr_kva_b2f(b, 0x4550u);
    f[5] = kr_kva_b2f(b, 0x4551u);
    f[6] = kr_kva_b2f(b, 0x4552u);
    f[7] = kr_kva_b2f(b, 0x4553u);
}

template <int Q8>
__device__ __forceinline__ void kr_kva_chunk(const kr_u8 *tile, const float *sc, int stride, int DC, int t, int j,
                                             float *f, float *s)
{
    if (Q8) {
        kr_kva_q8(*(const uint2 *)(tile + t * stride + j * 8), f);
        *s = sc[t * DC + j];
    } else {
        kr_kva_h8(*(const uint4 *)(tile + t * stride + j * 16), f);
        *s = 1.0f;
    }
}

// One tile in shared memory (rows 0..tv-1 valid): scores, online softmax, acc = acc*corr + P V.
// Scores: dsp (1, 2 or 4) adjacent threads per (head, position), each over DC/dsp chunks with four
// accumulators, summed by shuffles. PV: threads own (head, 8 dims) combos x a slice of the positions.
template <int Q8>
__device__ __forceinline__ void kr_kva_tile(const kr_u8 *Kt, const kr_u8 *Vt, const float *Ksc, const float *Vsc,
                                            int stride, int DC, int D, int T, int tv, int nr, const float *Qs,
                                            float *Ss, float *m_s, float *l_s, float *c_s, float (*acc)[8], int cb,
                                            int nsl, int slice, int NC, bool hr, int dsp)
{
    const int NT = KR_KVA_THREADS;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
#if KR_KVA_HR
    if (hr) {
        // scores: dsp threads per position, each over DC/dsp chunks for every head of the group
        const int items = T * dsp, dcp = DC / dsp;
        for (int base = 0; base < items; base += NT) {
            const int i = base + tid;
            const int t = i / dsp, part = i - t * dsp;
            float d[KR_KVA_HRMAX][2];
#pragma unroll
            for (int r = 0; r < KR_KVA_HRMAX; r++)
                d[r][0] = d[r][1] = 0.0f;
            if (i < items && t < tv) {
#pragma unroll 2
                for (int jj = 0; jj < dcp; jj++) {
                    const int j = jj * dsp + part; // interleaved: the dsp lanes read adjacent chunks
                    float f[8], sc;
                    kr_kva_chunk<Q8>(Kt, Ksc, stride, DC, t, j, f, &sc);
#pragma unroll
                    for (int r = 0; r < KR_KVA_HRMAX; r++) {
                        if (r < nr) {
                            const float *qr = Qs + r * D + 8 * j;
                            const float4 qa = *(const float4 *)qr, qb = *(const float4 *)(qr + 4);
                            const float s0 = fmaf(qb.z, f[6], fmaf(qb.x, f[4], fmaf(qa.z, f[2], qa.x * f[0])));
                            const float s1 = fmaf(qb.w, f[7], fmaf(qb.y, f[5], fmaf(qa.w, f[3], qa.y * f[1])));
                            if (Q8) {
                                d[r][0] = fmaf(s0, sc, d[r][0]);
                                d[r][1] = fmaf(s1, sc, d[r][1]);
                            } else {
                                d[r][0] += s0;
                                d[r][1] += s1;
                            }
                        }
                    }
                }
            }
#pragma unroll
            for (int r = 0; r < KR_KVA_HRMAX; r++) {
                if (r < nr) { // block-uniform
                    float dot = d[r][0] + d[r][1];
                    if (dsp > 1)
                        dot += __shfl_xor_sync(0xffffffffu, dot, 1);
                    if (dsp > 2)
                        dot += __shfl_xor_sync(0xffffffffu, dot, 2);
                    if (i < items && part == 0)
                        Ss[r * T + t] = t < tv ? dot : kr_neg_inf();
                }
            }
        }
    } else
#endif
    {
    const int items = nr * T * dsp, dcp = DC / dsp;
    for (int base = 0; base < items; base += NT) { // trip count uniform over the block (shuffles)
        const int i = base + tid;
        const int pr = i / dsp, part = i - pr * dsp;
        const int r = pr / T, t = pr - r * T;
        float d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f;
        if (i < items && t < tv) {
            const float *qr = Qs + r * D;
#pragma unroll 4
            for (int jj = 0; jj < dcp; jj++) {
                const int j = jj * dsp + part; // interleaved: the dsp lanes read adjacent chunks
                float f[8], sc;
                kr_kva_chunk<Q8>(Kt, Ksc, stride, DC, t, j, f, &sc);
                const float4 qa = *(const float4 *)(qr + 8 * j), qb = *(const float4 *)(qr + 8 * j + 4);
                if (Q8) {
                    d0 = fmaf(fmaf(qb.x, f[4], qa.x * f[0]), sc, d0);
                    d1 = fmaf(fmaf(qb.y, f[5], qa.y * f[1]), sc, d1);
                    d2 = fmaf(fmaf(qb.z, f[6], qa.z * f[2]), sc, d2);
                    d3 = fmaf(fmaf(qb.w, f[7], qa.w * f[3]), sc, d3);
                } else {
                    d0 = fmaf(qa.x, f[0], d0);
                    d1 = fmaf(qa.y, f[1], d1);
                    d2 = fmaf(qa.z, f[2], d2);
                    d3 = fmaf(qa.w, f[3], d3);
                    d0 = fmaf(qb.x, f[4], d0);
                    d1 = fmaf(qb.y, f[5], d1);
                    d2 = fmaf(qb.z, f[6], d2);
                    d3 = fmaf(qb.w, f[7], d3);
                }
            }
        }
        float dot = (d0 + d1) + (d2 + d3);
        if (dsp > 1)
            dot += __shfl_xor_sync(0xffffffffu, dot, 1);
        if (dsp > 2)
            dot += __shfl_xor_sync(0xffffffffu, dot, 2);
        if (i < items && part == 0)
            Ss[r * T + t] = t < tv ? dot : kr_neg_inf();
    }
    }
    __syncthreads();
    // online softmax, one warp per head
    for (int r = warp; r < nr; r += NT / 32) {
        float mt = kr_neg_inf();
        for (int t = lane; t < tv; t += 32)
            mt = fmaxf(mt, Ss[r * T + t]);
        mt = kr_warp_max(mt);
        const float mo = m_s[r], mn = fmaxf(mo, mt);
        float sum = 0.0f;
        for (int t = lane; t < tv; t += 32) {
            const float e = expf(Ss[r * T + t] - mn);
            Ss[r * T + t] = e;
            sum += e;
        }
        sum = kr_warp_sum(sum);
        __syncwarp(); // every lane has read m_s[r] (racecheck does not count the shuffles)
        if (lane == 0) {
            const float corr = expf(mo - mn); // mo = -inf on the first tile: 0
            c_s[r] = corr;
            l_s[r] = l_s[r] * corr + sum;
            m_s[r] = mn;
        }
    }
    __syncthreads();
    // acc = acc * corr + P V
#if KR_KVA_HR
    if (hr) { // thread: chunk j = cb of every head, positions slice, slice + nsl, ...
        if (slice < nsl) {
#pragma unroll
            for (int r = 0; r < KR_KVA_HRMAX; r++) {
                if (r < nr) {
                    const float corr = c_s[r];
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        acc[r][e] *= corr;
                }
            }
#pragma unroll 2
            for (int t = slice; t < tv; t += nsl) {
                float f[8], sc;
                kr_kva_chunk<Q8>(Vt, Vsc, stride, DC, t, cb, f, &sc);
#pragma unroll
                for (int r = 0; r < KR_KVA_HRMAX; r++) {
                    if (r < nr) {
                        const float w = Q8 ? Ss[r * T + t] * sc : Ss[r * T + t];
#pragma unroll
                        for (int e = 0; e < 8; e++)
                            acc[r][e] = fmaf(w, f[e], acc[r][e]);
                    }
                }
            }
        }
        return;
    }
#endif
    if (slice < nsl) {
#pragma unroll
        for (int k = 0; k < KR_KVA_CPT; k++) {
            const int c = cb + k * NT;
            if (c < NC && (k == 0 || NC >= NT)) {
                const int r = c / DC, j = c - r * DC;
                const float corr = c_s[r];
#pragma unroll
                for (int e = 0; e < 8; e++)
                    acc[k][e] *= corr;
                const float *pr = Ss + r * T;
#pragma unroll 4
                for (int t = slice; t < tv; t += nsl) {
                    float f[8], sc;
                    kr_kva_chunk<Q8>(Vt, Vsc, stride, DC, t, j, f, &sc);
                    const float w = Q8 ? pr[t] * sc : pr[t];
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        acc[k][e] = fmaf(w, f[e], acc[k][e]);
                }
            }
        }
    }
}

template <int Q8, int CP>
__device__ __forceinline__ void kr_kva(const float *q, const void *kc, const void *vc, const int *slot,
                                       long long slot_bytes, int rows, long long row_bytes, int kv_dim, float *out,
                                       float *part, int n_head, int n_head_kv, int head_dim, const int *pos,
                                       int pos_imm, int window, float scale, int n_split)
{
    __shared__ __align__(16) kr_u8 sm[KR_KVA_SMEM];
    __shared__ float m_s[KR_KVA_RB], l_s[KR_KVA_RB], c_s[KR_KVA_RB];
    KR_PDL_WAIT();
#if KR_KVA_EARLY
    KR_PDL_LAUNCH_DEPENDENTS(); // one wave: the next grid may get resident while this one runs
#endif
    const int NT = KR_KVA_THREADS;
    const int tid = threadIdx.x;
    const int R = n_head / n_head_kv;
    const int nhb = (R + KR_KVA_RB - 1) / KR_KVA_RB;
    const int g = blockIdx.x / nhb, hb = blockIdx.x - g * nhb;
    const int h0 = g * R + hb * KR_KVA_RB;
    const int nr = min(KR_KVA_RB, R - hb * KR_KVA_RB);
    const int split = blockIdx.y;
    const int D = head_dim, DC = D >> 3;
    enum { USE_CP = CP && !Q8 };                          // cp.async double buffering (F16 only)
    const int T = min(USE_CP ? 32 : KR_KVA_MAXT, KR_KVA_TILE / D);
    // shared layout: K tile | V tile | Q (RB x D fp32, pre-scaled) | S (RB x T fp32)
    // scores: dsp adjacent threads per (head, position) dot product (HR: per position, all heads);
    // F16 rows padded by 16*dsp bytes so the dsp x (32/dsp) 16-byte reads of a quarter warp hit
    // distinct banks when 2*head_dim is a multiple of 128 (T*dsp <= 128 keeps the tile bound)
    const int hr_rows = KR_KVA_HR && nr > 1 && nr <= KR_KVA_HRMAX ? 1 : nr;
    const int dlim = USE_CP ? 32 : NT;
    const int dsp = KR_KVA_DSP >= 4 && hr_rows * T * 4 <= NT && T * 4 <= dlim && DC % 4 == 0   ? 4
                    : KR_KVA_DSP >= 2 && hr_rows * T * 2 <= NT && T * 2 <= dlim && DC % 2 == 0 ? 2
                                                                                               : 1;
    const int stride = Q8 ? D + 8 : 2 * D + 16 * dsp; // bytes per tile row
    const int qbytes = (T * stride + 15) & ~15;          // quants / halves of one tile
    const int tbytes = (qbytes + (Q8 ? T * DC * 4 : 0) + 15) & ~15; // + Q8_0 scales (fp32 per 8-chunk)
    kr_u8 *Kt = sm, *Vt = sm + tbytes;
    float *Ksc = (float *)(Kt + qbytes), *Vsc = (float *)(Vt + qbytes);
    float *Qs = (float *)(sm + KR_KVA_QOFF);
    float *Ss = Qs + KR_KVA_RB * D;

    const int p = pos ? *pos : pos_imm; // issued first: the q loads below overlap it
    for (int i = tid; i < nr * D; i += NT)
        Qs[i] = q[(kr_i64)h0 * D + i] * scale;
    const int j0 = window > 0 ? max(0, p - window + 1) : 0;
    const int len = p - j0 + 1;
    if (p < 0 || len > rows) {
        for (int i = tid; i < nr * D; i += NT) {
            const int h = h0 + i / D, d = i - (i / D) * D;
            if (n_split == 1 || KR_KVA_FC)
                out[(kr_i64)h * D + d] = kr_qnan();
            else
                part[((kr_i64)h * n_split + split) * (D + 2) + d] = kr_qnan();
        }
        return;
    }
    const int chunk = (len + n_split - 1) / n_split;
    const int ts = j0 + split * chunk, te = min(ts + chunk, p + 1);

    if (tid < KR_KVA_RB) {
        m_s[tid] = kr_neg_inf();
        l_s[tid] = 0.0f;
    }
    // PV ownership: combos (r, j) = c, r = c / DC; NC >= NT: combos tid + k*NT, one slice;
    // else combo tid % NC, slice tid / NC of nsl = NT / NC.
    // HR (GQA groups of 2..4 heads): chunk cb = tid % DC of every head, slice tid / DC of NT / DC.
    const int NC = nr * DC;
    const bool hr = KR_KVA_HR && nr > 1 && nr <= KR_KVA_HRMAX;
    const int nsl = hr ? NT / DC : NC >= NT ? 1 : NT / NC;
    const int slice = hr ? tid / DC : NC >= NT ? 0 : tid / NC;
    const int cb = hr ? tid - (tid / DC) * DC : NC >= NT ? tid : tid - (tid / NC) * NC;
    float acc[KR_KVA_NACC][8];
#pragma unroll
    for (int k = 0; k < KR_KVA_NACC; k++)
#pragma unroll
        for (int e = 0; e < 8; e++)
            acc[k][e] = 0.0f;

    if (ts < te) {
        int ct[KR_KVA_LPT], cj[KR_KVA_LPT];
#pragma unroll
        for (int k = 0; k < KR_KVA_LPT; k++) {
            const int c = tid + k * NT;
            ct[k] = c < T * DC ? c / DC : -1;
            cj[k] = c < T * DC ? c - (c / DC) * DC : 0;
        }
        const kr_u8 *kb = kr_kv_base(kc, slot, slot_bytes), *vb = kr_kv_base(vc, slot, slot_bytes);
        const int goff = Q8 ? g * D : g * D * 2;
        if (USE_CP) {
            // KR_KVA_STAGES stages of (K tile, V tile): STAGES - 1 tiles in flight while one is used
            const int S = KR_KVA_STAGES;
            for (int st = 0; st < S - 1; st++) {
                if (ts + st * T < te)
                    kr_kva_issue(sm + st * 2 * tbytes, sm + st * 2 * tbytes + tbytes, kb, vb, row_bytes, rows, goff,
                                 ts + st * T, te, ct, cj, stride);
                kr_cp_commit();
            }
            int it = 0;
            for (int t0 = ts; t0 < te; t0 += T, it++) {
                const int tn = t0 + (S - 1) * T;
                if (tn < te) { // into the stage used by the previous tile (done: trailing barrier)
                    kr_u8 *nk = sm + ((it + S - 1) % S) * 2 * tbytes;
                    kr_kva_issue(nk, nk + tbytes, kb, vb, row_bytes, rows, goff, tn, te, ct, cj, stride);
                }
                kr_cp_commit();
                kr_cp_wait_stages(); // all but the newest S - 1 groups: this tile's group is complete
                __syncthreads();
                Kt = sm + (it % S) * 2 * tbytes;
                Vt = Kt + tbytes;
                const int tv = min(T, te - t0); // valid rows of this tile
                kr_kva_tile<Q8>(Kt, Vt, Ksc, Vsc, stride, DC, D, T, tv, nr, Qs, Ss, m_s, l_s, c_s, acc, cb, nsl, slice,
                                NC, hr, dsp);
                __syncthreads(); // this stage is refilled by the next iteration
            }
        } else {
            uint4 kr[KR_KVA_LPT], vr[KR_KVA_LPT];
            kr_u16 ks[KR_KVA_LPT], vs[KR_KVA_LPT];
            kr_kva_load<Q8>(kb, vb, row_bytes, rows, kv_dim, goff, ts, te, ct, cj, kr, vr, ks, vs);
            for (int t0 = ts; t0 < te; t0 += T) {
                __syncthreads(); // the previous tile is no longer read
#pragma unroll
                for (int k = 0; k < KR_KVA_LPT; k++) {
                    const int t = ct[k];
                    if (t >= 0) {
                        if (Q8) {
                            *(uint2 *)(Kt + t * stride + cj[k] * 8) = make_uint2(kr[k].x, kr[k].y);
                            *(uint2 *)(Vt + t * stride + cj[k] * 8) = make_uint2(vr[k].x, vr[k].y);
                            Ksc[t * DC + cj[k]] = kr_h2f(ks[k]);
                            Vsc[t * DC + cj[k]] = kr_h2f(vs[k]);
                        } else {
                            *(uint4 *)(Kt + t * stride + cj[k] * 16) = kr[k];
                            *(uint4 *)(Vt + t * stride + cj[k] * 16) = vr[k];
                        }
                    }
                }
                __syncthreads();
                if (t0 + T < te) // next tile's loads fly while this one is used
                    kr_kva_load<Q8>(kb, vb, row_bytes, rows, kv_dim, goff, t0 + T, te, ct, cj, kr, vr, ks, vs);
                const int tv = min(T, te - t0); // valid rows of this tile
                kr_kva_tile<Q8>(Kt, Vt, Ksc, Vsc, stride, DC, D, T, tv, nr, Qs, Ss, m_s, l_s, c_s, acc, cb, nsl, slice,
                                NC, hr, dsp);
            }
        }
    }
#if !KR_KVA_EARLY
    KR_PDL_LAUNCH_DEPENDENTS();
#endif
    __syncthreads(); // tiles are no longer read: reuse them for the slice reduction
    float *red = (float *)sm; // (nsl, NC, 8)
#if KR_KVA_HR
    if (hr && slice < nsl) {
#pragma unroll
        for (int r = 0; r < KR_KVA_HRMAX; r++)
            if (r < nr)
#pragma unroll
                for (int e = 0; e < 8; e++)
                    red[((kr_i64)slice * NC + r * DC + cb) * 8 + e] = acc[r][e];
    } else
#endif
    if (slice < nsl) {
#pragma unroll
        for (int k = 0; k < KR_KVA_CPT; k++) {
            const int c = cb + k * NT;
            if (c < NC && (k == 0 || NC >= NT))
#pragma unroll
                for (int e = 0; e < 8; e++)
                    red[((kr_i64)slice * NC + c) * 8 + e] = acc[k][e];
        }
    }
    __syncthreads();
    for (int i = tid; i < nr * D; i += NT) {
        float a = 0.0f;
        for (int s = 0; s < nsl; s++)
            a += red[s * NC * 8 + i];
        const int r = i / D, d = i - r * D, h = h0 + r;
        if (n_split == 1) {
            out[(kr_i64)h * D + d] = a / l_s[r];
        } else {
            float *ph = part + ((kr_i64)h * n_split + split) * (D + 2);
            ph[d] = a;
            if (d == 0) {
                ph[D] = m_s[r];
                ph[D + 1] = l_s[r];
            }
        }
    }
#if KR_KVA_FC
    // Fused combine: the last block of this head group to finish merges all splits.
    // Counter per blockIdx.x after the partials; zero before the first launch, left zero.
    if (n_split > 1) {
        __shared__ int last_s;
        __shared__ float L_s[KR_KVA_RB];
        const int lane = tid & 31, warp = tid >> 5;
        unsigned *cnt = (unsigned *)(part + (kr_i64)n_head * n_split * (D + 2)) + blockIdx.x;
        __threadfence(); // this block's partials are visible before the count says so
        __syncthreads();
        if (tid == 0)
            last_s = atomicAdd(cnt, 1u) == (unsigned)(n_split - 1);
        __syncthreads();
        if (last_s) {
            __threadfence();
            float *w = (float *)sm; // (nr, n_split) weights; n_split <= KR_KVA_FC_MAX
            for (int i = tid; i < nr * n_split; i += NT) {
                const int r = i / n_split, sp = i - r * n_split;
                w[i] = __ldcg(part + ((kr_i64)(h0 + r) * n_split + sp) * (D + 2) + D);
            }
            __syncthreads();
            for (int r = warp; r < nr; r += NT / 32) {
                float mx = kr_neg_inf();
                for (int sp = lane; sp < n_split; sp += 32)
                    mx = fmaxf(mx, w[r * n_split + sp]);
                mx = kr_warp_max(mx);
                float lsum = 0.0f;
                for (int sp = lane; sp < n_split; sp += 32) {
                    const float ms = w[r * n_split + sp];
                    const float wt = ms == kr_neg_inf() ? 0.0f : expf(ms - mx);
                    w[r * n_split + sp] = wt;
                    lsum += wt * __ldcg(part + ((kr_i64)(h0 + r) * n_split + sp) * (D + 2) + D + 1);
                }
                lsum = kr_warp_sum(lsum);
                if (lane == 0)
                    L_s[r] = lsum;
            }
            __syncthreads();
            for (int i = tid; i < nr * D; i += NT) {
                const int r = i / D, d = i - r * D;
                const float *ph = part + (kr_i64)(h0 + r) * n_split * (D + 2) + d;
                float a = 0.0f;
                for (int sp = 0; sp < n_split; sp++) {
                    const float wt = w[r * n_split + sp];
                    if (wt != 0.0f)
                        a += wt * __ldcg(ph + (kr_i64)sp * (D + 2));
                }
                out[(kr_i64)(h0 + r) * D + d] = a / L_s[r];
            }
            if (tid == 0)
                *cnt = 0u;
        }
    }
#endif
}

// KR_FA_ONLY=1 (the fused kernel's modules) leaves the split kernels' entries out (JIT time)
#if !defined(KR_FA_ONLY) || !KR_FA_ONLY
extern "C" __global__ void __launch_bounds__(KR_KVA_THREADS, KR_KVA_MINB)
kr_kva_f16(const float *q, const void *kc, const void *vc, const int *slot, long long slot_bytes, int rows,
           long long row_bytes, int kv_dim, float *out, float *part, int n_head, int n_head_kv, int head_dim,
           const int *pos, int pos_imm, int window, float scale, int n_split)
{
    kr_kva<0, KR_KVA_CP>(q, kc, vc, slot, slot_bytes, rows, row_bytes, kv_dim, out, part, n_head, n_head_kv, head_dim, pos,
              pos_imm, window, scale, n_split);
}

extern "C" __global__ void __launch_bounds__(KR_KVA_THREADS, KR_KVA_MINB)
kr_kva_q8_0(const float *q, const void *kc, const void *vc, const int *slot, long long slot_bytes, int rows,
            long long row_bytes, int kv_dim, float *out, float *part, int n_head, int n_head_kv, int head_dim,
            const int *pos, int pos_imm, int window, float scale, int n_split)
{
    kr_kva<1, KR_KVA_CP>(q, kc, vc, slot, slot_bytes, rows, row_bytes, kv_dim, out, part, n_head, n_head_kv, head_dim, pos,
              pos_imm, window, scale, n_split);
}


// Merge the split partials of kr_kva_*: out[h, d] = sum_s acc_s[d] w_s / sum_s l_s w_s,
// w_s = e^(m_s - M), M = max_s m_s (empty splits: m = -inf, w = 0). Invalid
// position (as the attention kernel decides): NaN. n_split <= 1024.
// Launch: block 256, grid (n_head).
extern "C" __global__ void __launch_bounds__(256)
kr_kva_combine(const float *part, float *out, int head_dim, int n_split, const int *pos, int pos_imm, int window,
               int rows)
{
    __shared__ float w_s[1024];
    __shared__ float red[32];
    KR_PDL_WAIT();
    KR_PDL_LAUNCH_DEPENDENTS(); // the next kernel may start once all our blocks have (it still waits for us)
    const int h = blockIdx.x, D = head_dim, st = D + 2;
    const int p = pos ? *pos : pos_imm;
    const int j0 = window > 0 ? max(0, p - window + 1) : 0;
    if (p < 0 || p - j0 + 1 > rows) {
        for (int d = threadIdx.x; d < D; d += blockDim.x)
            out[(kr_i64)h * D + d] = kr_qnan();
        return;
    }
    const float *ph = part + (kr_i64)h * n_split * st;
    float mx = kr_neg_inf();
    for (int s = threadIdx.x; s < n_split; s += blockDim.x)
        mx = fmaxf(mx, ph[(kr_i64)s * st + D]);
    const float M = kr_block_max(mx, red);
    float lsum = 0.0f;
    for (int s = threadIdx.x; s < n_split; s += blockDim.x) {
        const float ms = ph[(kr_i64)s * st + D];
        const float w = ms == kr_neg_inf() ? 0.0f : expf(ms - M);
        w_s[s] = w;
        lsum += w * ph[(kr_i64)s * st + D + 1];
    }
    const float L = kr_block_sum(lsum, red); // contains __syncthreads: w_s is complete
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float a = 0.0f;
        for (int s = 0; s < n_split; s++)
            if (w_s[s] != 0.0f)
                a += ph[(kr_i64)s * st + d] * w_s[s];
        out[(kr_i64)h * D + d] = a / L;
    }
}
#endif // !KR_FA_ONLY

// KR_FA=0 (the split kernels' variant modules) leaves the fused kernel out (JIT time)
#if !defined(KR_FA) || KR_FA
// ---- fused decode attention: RoPE + KV store + attention + split merge + q8 ----------------
// kr_fa_f16 / kr_fa_q8_0: one launch per layer replaces kr_kv_store_rope, kr_kva_*, kr_kva_combine
// and the kr_quantize_x_q8 of the attention output (kr_dec_fattn in kr_decode_kv.h).
// Grid (n_head_kv * nhb, n_split), nhb = ceil(R / KR_FA_RB), R = n_head / n_head_kv; block KR_FA_NT.
// Block (group g, head batch hb, split s): query heads h0 .. h0+nr-1 of KV group g, positions
// [ts, te) of the visible span [j0, p] cut into n_split chunks; the block with te == p + 1 holds p.
// Phases:
//  1. before KR_PDL_WAIT (the previous kernel may still run): read *pos / *slot, compute the range,
//     issue cp.async of the K/V rows of positions < p into up to nst stages of KR_FA_CH rows, the
//     RoPE sin/cos table of p, and an L2 prefetch of a share of [pf, pf + pf_bytes) (the next
//     matvec's weights). Legal because every kernel of the decode step executes
//     KR_PDL_LAUNCH_DEPENDENTS only after its own KR_PDL_WAIT (docs/KERNELS.md, PDL): when this grid
//     runs at all, the kernel before the previous one has completed, so the position/slot words
//     (host-written before the launch), the rows < p (earlier steps) and the weights are final,
//     and the previous kernel (the q/k/v matvec) writes none of them.
//  2. after the wait: q (heads of the block) rotated, pre-scaled by scale*log2(e) into shared
//     memory; the block holding p rotates k_new (kr_kv_rot, the table), rounds the K/V rows to the
//     cache format (f16, or q8_0 as kr_kv_store_rope), writes them to the cache (head batch 0 only)
//     and uses the rounded rows for position p (no re-read).
//  3. tiles of KR_FA_CH positions: scores (dsp threads per (head, position) dot product), online
//     softmax (one warp per head, one lane per position, base 2), acc = acc*corr + P V.
//  4. n_split == 1: out = acc / l. Else partials (acc, m, l) to part; the last block of each
//     (g, hb) to finish (atomic counter after the partials, as kr_kva's KR_KVA_FC) merges them.
//  5. the merging block writes out (n_head, D) fp32 and, when xq != NULL (D % 32 == 0), the q8
//     activations exactly as kr_quantize_x_q8 would from out: int8 q[cols] | float d[cols/32] |
//     float s[cols/32], cols = n_head * D. (KR_FA_CL: the blocks of a cluster merge shares of the
//     units through distributed shared memory instead.)
// Compile-time variants (decode_kv.c's table): KR_FA_CH positions per tile, KR_FA_NT threads,
// KR_FA_PS, KR_FA_LATE, KR_FA_CL, KR_FA_POSTLOAD (below).
// Invalid position (p < 0 or the span > rows): out NaN (and xq: q 0, d = s = NaN); nothing stored.
// Shared memory (dynamic, host-sized in decode_kv.c kr_dec_fattn): nst stages of
// [K rows CH x ks | V rows CH x ks | K scales CH x D/16 B | V scales] (ks = 16 (DC + dsp) bytes,
// DC = 16-byte chunks per row), then Q (RB x D fp32), S (RB x CH fp32), the sin/cos table
// (2 x 128 fp32), the new K and V rows (2 x 512 B), the softmax state (m, l, corr per head, a flag).
#ifndef KR_FA_NT
#define KR_FA_NT 128
#endif
#ifndef KR_FA_CH
#define KR_FA_CH 64  // positions per stage (32, 64, 96 or 128: CH/32 per lane in the softmax)
#endif
#ifndef KR_FA_POSTLOAD
#define KR_FA_POSTLOAD 0 // 1 (diagnostic): the K/V loads are issued after the PDL wait, not before
#endif
#ifndef KR_FA_PS
#define KR_FA_PS 0   // 1: no softmax phase: the P V threads take the tile max themselves (one barrier less)
#endif
#ifndef KR_FA_LATE
#define KR_FA_LATE 0 // 1: trigger the next kernel after the tiles instead of right after the wait
#endif
#define KR_FA_RB 8   // query heads per block at most
#define KR_FA_MAXST 8
#define KR_FA_FIXED (KR_FA_RB * 256 * 4 + KR_FA_RB * KR_FA_CH * 4 + 2 * 128 * 4 + 2 * 512 + 128)
#ifndef KR_FA_CL
#define KR_FA_CL 0 // > 0: the n_split == KR_FA_CL blocks of a head group are one thread block cluster and
#endif             //      merge their partials through distributed shared memory (no atomics, no global partials)
#define KR_FA_LOG2E 1.4426950408889634f

#ifndef KR_FA_EMU // (a CPU emulation of this file supplies its own)
__device__ __forceinline__ void kr_fa_cp(void *dst, const void *src, int bytes)
{
    if (bytes == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(kr_smem_addr(dst)), "l"(src) : "memory");
    else if (bytes == 8)
        asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" ::"r"(kr_smem_addr(dst)), "l"(src) : "memory");
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(kr_smem_addr(dst)), "l"(src) : "memory");
}

__device__ __forceinline__ void kr_fa_commit(void) { asm volatile("cp.async.commit_group;" ::: "memory"); }

// wait until at most n (0..KR_FA_MAXST-1) committed groups are still in flight
__device__ __forceinline__ void kr_fa_wait(int n)
{
    switch (n) {
    case 0: asm volatile("cp.async.wait_group 0;" ::: "memory"); break;
    case 1: asm volatile("cp.async.wait_group 1;" ::: "memory"); break;
    case 2: asm volatile("cp.async.wait_group 2;" ::: "memory"); break;
    case 3: asm volatile("cp.async.wait_group 3;" ::: "memory"); break;
    case 4: asm volatile("cp.async.wait_group 4;" ::: "memory"); break;
    case 5: asm volatile("cp.async.wait_group 5;" ::: "memory"); break;
    case 6: asm volatile("cp.async.wait_group 6;" ::: "memory"); break;
    default: asm volatile("cp.async.wait_group 7;" ::: "memory"); break;
    }
}
#define KR_FA_DYN_SMEM extern __shared__ __align__(16) kr_u8 fsm[]
// cluster-wide barrier (release / acquire: shared-memory writes before it are visible to the cluster)
__device__ __forceinline__ void kr_fa_cluster_sync(void)
{
    asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
}
// fp32 at shared address a (this block's layout) of cluster block `rank`
__device__ __forceinline__ float kr_fa_dsmem_ld(kr_u32 a, int rank)
{
    kr_u32 ra;
    float v;
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(ra) : "r"(a), "r"(rank));
    asm volatile("ld.shared::cluster.f32 %0, [%1];" : "=f"(v) : "r"(ra) : "memory");
    return v;
}
#endif

// Issue the cp.async loads of tile positions [t0, t0 + n) (n <= CH) into stage st.
template <int Q8>
__device__ __forceinline__ void kr_fa_issue(kr_u8 *Kt, kr_u8 *Vt, kr_u8 *Ks, kr_u8 *Vs, const kr_u8 *kb,
                                            const kr_u8 *vb, long long row_bytes, int rows, int kv_dim, int goff,
                                            int soff, int DC, int ks, int sbytes, int t0, int n)
{
    if (n <= 0)
        return;
    const int r0 = t0 % rows;
    for (int i = threadIdx.x; i < n * DC; i += KR_FA_NT) {
        const int t = i / DC, j = i - t * DC;
        int row = r0 + t;
        if (row >= rows)
            row -= rows;
        const kr_i64 o = (kr_i64)row * row_bytes + goff + 16 * j;
        kr_fa_cp(Kt + t * ks + 16 * j, kb + o, 16);
        kr_fa_cp(Vt + t * ks + 16 * j, vb + o, 16);
    }
    if (Q8) {
        for (int t = threadIdx.x; t < n; t += KR_FA_NT) {
            int row = r0 + t;
            if (row >= rows)
                row -= rows;
            const kr_i64 o = (kr_i64)row * row_bytes + kv_dim + soff;
            kr_fa_cp(Ks + t * sbytes, kb + o, sbytes);
            kr_fa_cp(Vs + t * sbytes, vb + o, sbytes);
        }
    }
}

template <int Q8>
__device__ __forceinline__ void kr_fa(const float *q, const float *k_new, const float *v_new, void *kc, void *vc,
                                      const int *slot, long long slot_bytes, int rows, long long row_bytes, int kv_dim,
                                      int n_head, int n_head_kv, int D, int n_rot, float freq_base, float freq_scale,
                                      const float *ff, int neox, const int *pos, int pos_imm, int window, float scale,
                                      int n_split, int nst, int dsp, float *scr, float *out, kr_u8 *xq,
                                      const void *pf, long long pf_bytes)
{
    // scratch: ((n_head + 3) & ~3) split counters (zero before the first launch, left zero), then the
    // partials (n_head, n_split, D + 2) fp32
    float *part = scr + ((n_head + 3) & ~3);
    (void)part; // (unused by the cluster variants)
    KR_FA_DYN_SMEM;
    const int NT = KR_FA_NT, CH = KR_FA_CH;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int R = n_head / n_head_kv;
    const int nhb = (R + KR_FA_RB - 1) / KR_FA_RB;
    const int g = blockIdx.x / nhb, hb = blockIdx.x - g * nhb;
    const int h0 = g * R + hb * KR_FA_RB;
    const int nr = min(KR_FA_RB, R - hb * KR_FA_RB);
    const int split = blockIdx.y;
    const int DC = Q8 ? D >> 4 : D >> 3; // 16-byte chunks per row
    const int ks = 16 * (DC + dsp);       // tile row stride (bytes)
    const int sbytes = Q8 ? D >> 4 : 0;   // q8_0 scale bytes per row (fp16 per 32 values)
    const int sstage = (CH * sbytes + 15) & ~15;
    const int stage = 2 * CH * ks + 2 * sstage;
    float *Qs = (float *)(fsm + nst * stage);
    float *Ss = Qs + KR_FA_RB * 256;
    float *tab = Ss + KR_FA_RB * CH; // sin [0, 128), cos [128, 256)
    kr_u8 *newk = (kr_u8 *)(tab + 256), *newv = newk + 512;
    float *m_s = (float *)(newv + 512), *l_s = m_s + KR_FA_RB, *c_s = l_s + KR_FA_RB; // per head: max, sum, corr
    int *last_s = (int *)(c_s + KR_FA_RB);
    (void)last_s;
    const int half = n_rot >> 1;

    // ---- 1. before the wait (see above: only data no running kernel writes) ----
#if KR_FA_POSTLOAD
    KR_PDL_WAIT(); // (diagnostic variant: everything after the wait)
#endif
    const int p = pos ? *pos : pos_imm;
    const kr_u8 *kb = kr_kv_base(kc, slot, slot_bytes), *vb = kr_kv_base(vc, slot, slot_bytes);
    const int j0 = window > 0 ? max(0, p - window + 1) : 0;
    const int len = p - j0 + 1;
    const bool valid = p >= 0 && len <= rows;
    const int chunk = valid ? (len + n_split - 1) / n_split : 0;
    const int ts = j0 + split * chunk, te = valid ? min(ts + chunk, p + 1) : ts;
    const int tol = min(te, p); // rows [ts, tol) are in the cache already
    const int ntiles = te > ts ? (te - ts + CH - 1) / CH : 0;
    const int goff = Q8 ? g * D : 2 * g * D, soff = g * sbytes;
    for (int st = 0; st < nst; st++) {
        if (st < ntiles) {
            kr_u8 *Kt = fsm + st * stage;
            const int t0 = ts + st * CH;
            kr_fa_issue<Q8>(Kt, Kt + CH * ks, Kt + 2 * CH * ks, Kt + 2 * CH * ks + sstage, kb, vb, row_bytes, rows,
                            kv_dim, goff, soff, DC, ks, sbytes, t0, min(CH, tol - t0));
        }
        kr_fa_commit();
    }
    if (tid == 0 && pf && pf_bytes > 0)
        kr_l2_prefetch_part(pf, pf_bytes, blockIdx.y * gridDim.x + blockIdx.x, gridDim.x * gridDim.y);
    const bool has_p = valid && ts <= p && p < te;
    if (valid && n_rot > 0)
        for (int i = tid; i < half; i += NT) {
            float sn, cs;
            sincosf(kr_kv_theta(p, i, n_rot, freq_base, freq_scale, ff), &sn, &cs);
            tab[i] = sn;
            tab[128 + i] = cs;
        }
    if (tid < KR_FA_RB) {
        m_s[tid] = kr_neg_inf();
        l_s[tid] = 0.0f;
    }

#if !KR_FA_POSTLOAD
    KR_PDL_WAIT();
#endif
    // Every block is past its wait: the next kernel may get resident (it waits for our completion
    // in its own KR_PDL_WAIT; we never trigger before our own wait, which the pre-wait phase of the
    // next fused attention relies on).
#if !KR_FA_LATE
    KR_PDL_LAUNCH_DEPENDENTS();
#endif

    if (!valid) {
        if (split == 0) {
            for (int i = tid; i < nr * D; i += NT)
                out[(kr_i64)h0 * D + i] = kr_qnan();
            if (xq && (D & 31) == 0) {
                const int cols = n_head * D, nb = cols >> 5;
                for (int i = tid; i < nr * D; i += NT)
                    ((kr_i8 *)xq)[(kr_i64)h0 * D + i] = 0;
                for (int b = tid; b < nr * D / 32; b += NT) {
                    float *dp = (float *)(xq + cols);
                    dp[h0 * D / 32 + b] = kr_qnan();
                    dp[nb + h0 * D / 32 + b] = kr_qnan();
                }
            }
        }
        kr_fa_wait(0);
        return;
    }

    // ---- 2. q (rotated, scaled), the new K/V row ----
    const float qsc = scale * KR_FA_LOG2E;
    // the block holding p: its k_new / v_new values go into registers first, so their loads fly
    // together with the q loads below (one round trip); thread item i = tid + k NT of [K | V] rows
    // padded to 32 (a warp = one q8_0 block), 2 Dp <= 512 items: k < 4
    const int Dp = (D + 31) & ~31;
    float kx[4], ky[4];
#pragma unroll
    for (int k = 0; k < 4; k++) {
        const int i = tid + k * NT, d = i < Dp ? i : i - Dp;
        kx[k] = ky[k] = 0.0f;
        if (has_p && i < 2 * Dp && d < D) {
            const float *src = (i < Dp ? k_new : v_new) + g * D;
            kx[k] = src[d];
            if (i < Dp && d < n_rot)
                ky[k] = src[neox ? (d < half ? d + half : d - half) : (d ^ 1)];
        }
    }
    __syncthreads(); // tab complete
    for (int i = tid; i < nr * D; i += NT) {
        const int r = i / D, d = i - r * D;
        const float *qh = q + (kr_i64)(h0 + r) * D;
        float v = qh[d];
        if (d < n_rot) {
            const bool first = neox ? d < half : (d & 1) == 0;
            const int ii = neox ? (first ? d : d - half) : d >> 1;
            const int partner = neox ? (first ? d + half : d - half) : (d ^ 1);
            v = kr_kv_rot(v, qh[partner], tab[128 + ii], tab[ii], first);
        }
        Qs[r * D + d] = v * qsc;
    }
    if (has_p) {
        kr_u8 *krow = (kr_u8 *)kb + (kr_i64)(p % rows) * row_bytes, *vrow = (kr_u8 *)vb + (kr_i64)(p % rows) * row_bytes;
        const bool store = hb == 0;
        // warps walk 32 consecutive elements (one q8_0 block) of K then V
#pragma unroll
        for (int k = 0; k < 4; k++) {
            const int i = tid + k * NT;
            if (i >= 2 * Dp)
                break; // warp-uniform (2 Dp and NT are multiples of 32)
            const bool is_k = i < Dp;
            const int d = is_k ? i : i - Dp;
            const bool in = d < D;
            float x = kx[k];
            if (in && is_k && d < n_rot) {
                const bool first = neox ? d < half : (d & 1) == 0;
                const int ii = neox ? (first ? d : d - half) : d >> 1;
                x = kr_kv_rot(x, ky[k], tab[128 + ii], tab[ii], first);
            }
            kr_u8 *sm_row = is_k ? newk : newv;
            kr_u8 *g_row = is_k ? krow : vrow;
            if (!Q8) {
                if (in) {
                    const kr_u16 h = kr_f2h(x);
                    ((kr_u16 *)sm_row)[d] = h;
                    if (store)
                        ((kr_u16 *)g_row)[g * D + d] = h;
                }
            } else { // D % 32 == 0: the warp holds one block
                const float amax = kr_warp_max(fabsf(x));
                const float dd = amax / 127.0f;
                const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
                const signed char qv = (signed char)(int)roundf(x * id);
                sm_row[d] = (kr_u8)qv;
                if (store)
                    ((signed char *)g_row)[g * D + d] = qv;
                if ((d & 31) == 0) {
                    const kr_u16 hd = kr_f2h(dd);
                    ((kr_u16 *)(sm_row + D))[d >> 5] = hd;
                    if (store)
                        ((kr_u16 *)(g_row + kv_dim))[(g * D + d) >> 5] = hd;
                }
            }
        }
    }
    __syncthreads(); // Q and the new rows complete

    // ---- 3. tiles ----
    const int DC8 = D >> 3, NC = nr * DC8;
    const int nsl = NC >= NT ? 1 : NT / NC;
    const int slice = NC >= NT ? 0 : tid / NC;
    const int cb = NC >= NT ? tid : tid - (tid / NC) * NC;
    float acc[2][8];
#pragma unroll
    for (int k = 0; k < 2; k++)
#pragma unroll
        for (int e = 0; e < 8; e++)
            acc[k][e] = 0.0f;
#if KR_FA_PS
    float mrun[2] = {kr_neg_inf(), kr_neg_inf()}, lrun[2] = {0.0f, 0.0f}; // per combo: running max, partial sum
#endif
    for (int it = 0; it < ntiles; it++) {
        kr_u8 *Kt = fsm + (it % nst) * stage;
        kr_u8 *Vt = Kt + CH * ks, *Ks = Kt + 2 * CH * ks, *Vs = Ks + sstage;
        const int t0 = ts + it * CH, tv = min(CH, te - t0);
        kr_fa_wait(nst - 1); // this tile's group is complete (one group committed per tile)
        if (has_p && p - t0 < CH) { // the new row at tile row p - t0
            const int tp = p - t0;
            for (int i = tid; i < DC; i += NT) {
                *(uint4 *)(Kt + tp * ks + 16 * i) = *(const uint4 *)(newk + 16 * i);
                *(uint4 *)(Vt + tp * ks + 16 * i) = *(const uint4 *)(newv + 16 * i);
            }
            if (Q8)
                for (int i = tid; i < sbytes; i += NT) {
                    Ks[tp * sbytes + i] = newk[D + i];
                    Vs[tp * sbytes + i] = newv[D + i];
                }
        }
        __syncthreads();
        // scores: item = (r, t, part), dsp adjacent threads per dot product
        for (int base = 0; base < nr * CH * dsp; base += NT) {
            const int i = base + tid;
            const int part = i % dsp, rt = i / dsp, r = rt / CH, t = rt - r * CH;
            float a0 = 0.0f, a1 = 0.0f;
            if (r < nr && t < tv) {
                const float *qr = Qs + r * D;
                const kr_u8 *kr = Kt + t * ks;
                for (int j = part; j < DC; j += dsp) {
                    const uint4 u = *(const uint4 *)(kr + 16 * j);
                    if (Q8) {
                        float f[8], f2[8];
                        kr_kva_q8(make_uint2(u.x, u.y), f);
                        kr_kva_q8(make_uint2(u.z, u.w), f2);
                        const float *qq = qr + 16 * j;
                        float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
                        for (int e = 0; e < 8; e += 2) {
                            s0 = fmaf(qq[e], f[e], s0);
                            s1 = fmaf(qq[e + 1], f[e + 1], s1);
                            s0 = fmaf(qq[8 + e], f2[e], s0);
                            s1 = fmaf(qq[9 + e], f2[e + 1], s1);
                        }
                        const float sc = kr_h2f(*(const kr_u16 *)(Ks + t * sbytes + 2 * (j >> 1)));
                        a0 = fmaf(s0, sc, a0);
                        a1 = fmaf(s1, sc, a1);
                    } else {
                        float f[8];
                        kr_kva_h8(u, f);
                        const float4 qa = *(const float4 *)(qr + 8 * j), qb = *(const float4 *)(qr + 8 * j + 4);
                        a0 = fmaf(qb.z, f[6], fmaf(qb.x, f[4], fmaf(qa.z, f[2], fmaf(qa.x, f[0], a0))));
                        a1 = fmaf(qb.w, f[7], fmaf(qb.y, f[5], fmaf(qa.w, f[3], fmaf(qa.y, f[1], a1))));
                    }
                }
            }
            float dot = a0 + a1;
            for (int o = 1; o < dsp; o <<= 1)
                dot += __shfl_xor_sync(0xffffffffu, dot, o);
            if (r < nr && part == 0)
                Ss[r * CH + t] = t < tv ? dot : kr_neg_inf();
        }
        __syncthreads();
#if KR_FA_PS
        // per-thread softmax: every P V thread takes the tile max of its head from S itself (the
        // same value in every thread of the head), rescales its acc and its partial sum l, and
        // turns the scores of its own positions into weights: no softmax phase, one barrier less
        if (slice < nsl) {
#pragma unroll
            for (int k = 0; k < 2; k++) {
                const int c = cb + k * NT;
                if (c < NC && (k == 0 || NC >= NT)) {
                    const int r = c / DC8, j8 = c - r * DC8;
                    const float *pr = Ss + r * CH;
                    float mt = kr_neg_inf();
#pragma unroll 4
                    for (int t = 0; t < CH; t += 4) {
                        const float4 v = *(const float4 *)(pr + t);
                        mt = fmaxf(mt, fmaxf(fmaxf(v.x, v.y), fmaxf(v.z, v.w)));
                    }
                    const float mn = fmaxf(mrun[k], mt);
                    const float corr = mrun[k] == kr_neg_inf() ? 0.0f : exp2f(mrun[k] - mn);
                    mrun[k] = mn;
                    lrun[k] *= corr;
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        acc[k][e] *= corr;
                    for (int t = slice; t < tv; t += nsl) {
                        float f[8];
                        const float pw = exp2f(pr[t] - mn);
                        float w = pw;
                        lrun[k] += pw;
                        if (Q8) {
                            kr_kva_q8(*(const uint2 *)(Vt + t * ks + 8 * j8), f);
                            w *= kr_h2f(*(const kr_u16 *)(Vs + t * sbytes + 2 * (j8 >> 2)));
                        } else {
                            kr_kva_h8(*(const uint4 *)(Vt + t * ks + 16 * j8), f);
                        }
#pragma unroll
                        for (int e = 0; e < 8; e++)
                            acc[k][e] = fmaf(w, f[e], acc[k][e]);
                    }
                }
            }
        }
#else
        // online softmax: warp per head, lane = position
        for (int r = warp; r < nr; r += NT / 32) {
            float sv[KR_FA_CH / 32], mt = kr_neg_inf(), ps = 0.0f;
#pragma unroll
            for (int k = 0; k < KR_FA_CH / 32; k++) {
                sv[k] = Ss[r * CH + 32 * k + lane];
                mt = fmaxf(mt, sv[k]);
            }
            const float mo = m_s[r];
            const float mn = fmaxf(mo, kr_warp_max(mt));
#pragma unroll
            for (int k = 0; k < KR_FA_CH / 32; k++) {
                const float pe = 32 * k + lane < tv ? exp2f(sv[k] - mn) : 0.0f;
                Ss[r * CH + 32 * k + lane] = pe;
                ps += pe;
            }
            const float ls = kr_warp_sum(ps);
            __syncwarp(); // every lane has read m_s[r] before lane 0 replaces it
            if (lane == 0) {
                const float corr = mo == kr_neg_inf() ? 0.0f : exp2f(mo - mn);
                c_s[r] = corr;
                m_s[r] = mn;
                l_s[r] = l_s[r] * corr + ls;
            }
        }
        __syncthreads();
        // acc = acc * corr + P V: combos (r, 8 dims), slices of the positions
        if (slice < nsl) {
#pragma unroll
            for (int k = 0; k < 2; k++) {
                const int c = cb + k * NT;
                if (c < NC && (k == 0 || NC >= NT)) {
                    const int r = c / DC8, j8 = c - r * DC8;
                    const float corr = c_s[r];
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        acc[k][e] *= corr;
                    const float *pr = Ss + r * CH;
                    for (int t = slice; t < tv; t += nsl) {
                        float f[8], w = pr[t];
                        if (Q8) {
                            kr_kva_q8(*(const uint2 *)(Vt + t * ks + 8 * j8), f);
                            w *= kr_h2f(*(const kr_u16 *)(Vs + t * sbytes + 2 * (j8 >> 2)));
                        } else {
                            kr_kva_h8(*(const uint4 *)(Vt + t * ks + 16 * j8), f);
                        }
#pragma unroll
                        for (int e = 0; e < 8; e++)
                            acc[k][e] = fmaf(w, f[e], acc[k][e]);
                    }
                }
            }
        }
#endif
        __syncthreads(); // this stage and S are free again
        if (it + nst < ntiles) {
            const int tn = ts + (it + nst) * CH;
            kr_fa_issue<Q8>(Kt, Vt, Ks, Vs, kb, vb, row_bytes, rows, kv_dim, goff, soff, DC, ks, sbytes, tn,
                            min(CH, tol - tn));
        }
        kr_fa_commit();
    }
    kr_fa_wait(0);
#if KR_FA_LATE
    KR_PDL_LAUNCH_DEPENDENTS();
#endif
    __syncthreads();
#if KR_FA_PS
    // per head: m from any of its threads (all equal), l = sum over the position slices (S is free)
    if (slice < nsl) {
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const int c = cb + k * NT;
            if (c < NC && (k == 0 || NC >= NT)) {
                const int r = c / DC8, j8 = c - r * DC8;
                if (j8 == 0) {
                    Ss[slice * nr + r] = lrun[k];
                    if (slice == 0)
                        m_s[r] = mrun[k];
                }
            }
        }
    }
    __syncthreads();
    if (tid < nr) {
        float l = 0.0f;
        for (int sl = 0; sl < nsl; sl++)
            l += Ss[sl * nr + tid];
        l_s[tid] = l;
    }
#endif

    // ---- 4. slices -> (acc, m, l) per head; merge ----
    float *red = (float *)fsm; // (nsl, NC, 8) over the stages
    if (slice < nsl) {
#pragma unroll
        for (int k = 0; k < 2; k++) {
            const int c = cb + k * NT;
            if (c < NC && (k == 0 || NC >= NT))
#pragma unroll
                for (int e = 0; e < 8; e++)
                    red[(slice * NC + c) * 8 + e] = acc[k][e];
        }
    }
    __syncthreads();
    float *Os = Qs; // (nr, D) final outputs (Q is no longer read)
#if KR_FA_CL > 0
    // cluster: every block leaves (acc, m, l) in its own shared memory; after a cluster barrier, block
    // rank k merges the 32-element units u = k*4 + warp (mod 4*CL) from all ranks, writes out and xq
    for (int i = tid; i < nr * D; i += NT) {
        float a = 0.0f;
        for (int s = 0; s < nsl; s++)
            a += red[s * NC * 8 + i];
        Os[i] = a;
    }
    kr_fa_cluster_sync();
    {
        const int nu = (nr * D + 31) >> 5, cols = n_head * D, nb = cols >> 5;
        const kr_u32 a_os = kr_smem_addr(Os), a_m = kr_smem_addr(m_s), a_l = kr_smem_addr(l_s);
        for (int u = split * (NT / 32) + warp; u < nu; u += KR_FA_CL * (NT / 32)) {
            const int e = 32 * u + lane, ec = min(e, nr * D - 1), r = ec / D;
            float mv[KR_FA_CL], lv[KR_FA_CL], av[KR_FA_CL], mx = kr_neg_inf();
#pragma unroll
            for (int k = 0; k < KR_FA_CL; k++) {
                mv[k] = kr_fa_dsmem_ld(a_m + 4 * r, k);
                lv[k] = kr_fa_dsmem_ld(a_l + 4 * r, k);
                av[k] = kr_fa_dsmem_ld(a_os + 4 * ec, k);
                mx = fmaxf(mx, mv[k]);
            }
            float L = 0.0f, acc1 = 0.0f;
#pragma unroll
            for (int k = 0; k < KR_FA_CL; k++) {
                const float wt = mv[k] == kr_neg_inf() ? 0.0f : exp2f(mv[k] - mx);
                L = fmaf(wt, lv[k], L);
                acc1 = fmaf(wt, av[k], acc1);
            }
            const float v = acc1 / L;
            if (e < nr * D)
                out[(kr_i64)h0 * D + e] = v;
            if (xq && (D & 31) == 0) { // as kr_quantize_x_q8 (all lanes valid: nr * D % 32 == 0)
                const float amax = kr_warp_max(fabsf(v));
                const float dq = amax / 127.0f;
                const int qi = dq > 0.0f ? __float2int_rn(v / dq) : 0;
                const float qs = kr_warp_sum((float)qi);
                const int gb = h0 * D / 32 + u;
                ((kr_i8 *)xq)[32 * gb + lane] = (kr_i8)qi;
                if (lane == 0) {
                    float *dp = (float *)(xq + cols);
                    dp[gb] = dq;
                    dp[nb + gb] = dq * qs;
                }
            }
        }
    }
    kr_fa_cluster_sync(); // no block leaves while another still reads its shared memory
#else
    for (int i = tid; i < nr * D; i += NT) {
        float a = 0.0f;
        for (int s = 0; s < nsl; s++)
            a += red[s * NC * 8 + i];
        const int r = i / D, d = i - r * D;
        if (n_split == 1) {
            Os[i] = a / l_s[r];
        } else {
            float *ph = part + ((kr_i64)(h0 + r) * n_split + split) * (D + 2);
            ph[d] = a;
            if (d == 0) {
                ph[D] = m_s[r];
                ph[D + 1] = l_s[r];
            }
        }
    }
    if (n_split > 1) {
        unsigned *cnt = (unsigned *)scr + blockIdx.x;
        __threadfence(); // this block's partials are visible before the count says so
        __syncthreads();
        if (tid == 0)
            *last_s = atomicAdd(cnt, 1u) == (unsigned)(n_split - 1);
        __syncthreads();
        if (!*last_s)
            return;
        __threadfence();
        // one pass, 8 splits' (m, l, acc) loads in flight at a time (one L2 round trip for <= 8 splits)
        for (int i = tid; i < nr * D; i += NT) {
            const int r = i / D, d = i - r * D;
            const float *ph = part + (kr_i64)(h0 + r) * n_split * (D + 2);
            float mx = kr_neg_inf(), L = 0.0f, a = 0.0f;
            for (int s0 = 0; s0 < n_split; s0 += 8) {
                float mv[8], lv[8], av[8];
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    const float *pk = ph + (kr_i64)min(s0 + k, n_split - 1) * (D + 2);
                    mv[k] = s0 + k < n_split ? __ldcg(pk + D) : kr_neg_inf();
                    lv[k] = __ldcg(pk + D + 1);
                    av[k] = __ldcg(pk + d);
                }
                float m8 = mx;
#pragma unroll
                for (int k = 0; k < 8; k++)
                    m8 = fmaxf(m8, mv[k]);
                if (m8 == kr_neg_inf())
                    continue; // only empty splits so far
                const float c = mx == kr_neg_inf() ? 0.0f : exp2f(mx - m8);
                L *= c;
                a *= c;
#pragma unroll
                for (int k = 0; k < 8; k++) {
                    const float wt = mv[k] == kr_neg_inf() ? 0.0f : exp2f(mv[k] - m8);
                    L = fmaf(wt, lv[k], L);
                    a = fmaf(wt, av[k], a);
                }
                mx = m8;
            }
            Os[i] = a / L;
        }
        if (tid == 0)
            *cnt = 0u; // ready for the next launch
    }
    __syncthreads();
    // ---- 5. outputs ----
    for (int i = tid; i < nr * D; i += NT)
        out[(kr_i64)h0 * D + i] = Os[i];
    if (xq && (D & 31) == 0) { // as kr_quantize_x_q8 (lane = element of the 32-block)
        const int cols = n_head * D, nb = cols >> 5;
        for (int b = warp; b < nr * D / 32; b += NT / 32) {
            const float v = Os[32 * b + lane];
            const float amax = kr_warp_max(fabsf(v));
            const float dq = amax / 127.0f;
            const int qi = dq > 0.0f ? __float2int_rn(v / dq) : 0;
            const float qs = kr_warp_sum((float)qi);
            const int gb = h0 * D / 32 + b;
            ((kr_i8 *)xq)[32 * gb + lane] = (kr_i8)qi;
            if (lane == 0) {
                float *dp = (float *)(xq + cols);
                dp[gb] = dq;
                dp[nb + gb] = dq * qs;
            }
        }
    }
#endif // KR_FA_CL
}

#if KR_FA_CL > 0 && !defined(KR_FA_EMU)
#define KR_FA_CLUSTER __cluster_dims__(1, KR_FA_CL, 1)
#else
#define KR_FA_CLUSTER
#endif
#define KR_FA_ENTRY(name, Q8)                                                                                         \
    extern "C" __global__ void __launch_bounds__(KR_FA_NT) KR_FA_CLUSTER                                              \
    name(const float *q, const float *k_new, const float *v_new, void *kc, void *vc, const int *slot,                \
         long long slot_bytes, int rows, long long row_bytes, int kv_dim, int n_head, int n_head_kv, int head_dim,     \
         int n_rot, float freq_base, float freq_scale, const float *ff, int neox, const int *pos, int pos_imm,        \
         int window, float scale, int n_split, int nst, int dsp, float *scr, float *out, kr_u8 *xq, const void *pf,   \
         long long pf_bytes)                                                                                          \
    {                                                                                                                 \
        kr_fa<Q8>(q, k_new, v_new, kc, vc, slot, slot_bytes, rows, row_bytes, kv_dim, n_head, n_head_kv, head_dim,    \
                  n_rot, freq_base, freq_scale, ff, neox, pos, pos_imm, window, scale, n_split, nst, dsp, scr, out,   \
                  xq, pf, pf_bytes);                                                                                  \
    }
KR_FA_ENTRY(kr_fa_f16, 0)
KR_FA_ENTRY(kr_fa_q8_0, 1)
#endif // KR_FA
