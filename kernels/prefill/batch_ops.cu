// Batched element-wise ops of the prefill path (n tokens at positions
// pos0 .. pos0+n-1); the rest (norms over rows, add, gelu) reuse the decode
// kernels. NVRTC-compilable without headers: halves go through PTX cvt.

typedef unsigned short kr_pb_u16;
typedef long long kr_pb_i64;

__device__ __forceinline__ kr_pb_u16 kr_pb_f2h(float f)
{
    kr_pb_u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// RoPE, same math as decode/rope.cu for each token t at p = pos0 + t:
//   theta_i = p * freq_scale * freq_base^(-2i/n_rot) / ff[i], i < n_rot/2   (n_rot <= 256)
//   normal: (a, b) = (h[2i], h[2i+1]); neox: (a, b) = (h[i], h[i + n_rot/2])
// q: (n, q_stride) fp32, head h of token t at q + t*q_stride + h*head_dim, rotated in place;
// k likewise with k_stride (k NULL with n_head_k 0):
//   kc == NULL: k rotated in place;
//   kc != NULL (f16 cache, fused KV store): k is only read; row (pos0 + t) % rows of kc
//     (row_bytes apart) gets fp16 of the rotated k (dims >= n_rot as they are) and the same row
//     of vc fp16 of v (n_head_k heads, v_stride).
// Block (x = token, y = group of 8 heads of the q, k (and v) heads); the block's angles are
// computed once into shared memory. Launch: block (32..128, >= n_rot/2 rounded to 32 when
// possible), grid (n, ceil(heads / 8)).
#define KR_PB_ROPE_HPB 8
extern "C" __global__ void kr_pf_rope_f32(float *q, long long q_stride, int n_head_q, float *k, long long k_stride,
                                          int n_head_k, int head_dim, int n_rot, int pos0, float freq_base,
                                          float freq_scale, const float *freq_factors, int neox, const float *v,
                                          long long v_stride, unsigned char *kc, unsigned char *vc,
                                          long long row_bytes, int rows)
{
    __shared__ float s_sn[128], s_cs[128];
    const int t = blockIdx.x, half = n_rot / 2;
    const float p = (float)(pos0 + t);
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float theta = p * freq_scale * powf(freq_base, -2.0f * (float)i / (float)n_rot);
        if (freq_factors)
            theta /= freq_factors[i];
        sincosf(theta, &s_sn[i], &s_cs[i]);
    }
    __syncthreads();
    const int nqk = n_head_q + n_head_k, nh = nqk + (kc ? n_head_k : 0);
    const int h_end = min(nh, (int)(blockIdx.y + 1) * KR_PB_ROPE_HPB);
    kr_pb_u16 *krow = 0, *vrow = 0;
    if (kc) {
        const kr_pb_i64 ro = (kr_pb_i64)((pos0 + t) % rows) * row_bytes;
        krow = (kr_pb_u16 *)(kc + ro);
        vrow = (kr_pb_u16 *)(vc + ro);
    }
    for (int h = blockIdx.y * KR_PB_ROPE_HPB; h < h_end; h++) {
        if (h < nqk) {
            const bool isq = h < n_head_q;
            float *x = isq ? q + (kr_pb_i64)t * q_stride + (kr_pb_i64)h * head_dim
                           : k + (kr_pb_i64)t * k_stride + (kr_pb_i64)(h - n_head_q) * head_dim;
            kr_pb_u16 *dst = !isq && kc ? krow + (kr_pb_i64)(h - n_head_q) * head_dim : 0;
            for (int i = threadIdx.x; i < half; i += blockDim.x) {
                const int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
                const float sn = s_sn[i], cs = s_cs[i];
                const float a = x[ia], b = x[ib];
                const float ra = a * cs - b * sn, rb = a * sn + b * cs;
                if (dst) {
                    dst[ia] = kr_pb_f2h(ra);
                    dst[ib] = kr_pb_f2h(rb);
                } else {
                    x[ia] = ra;
                    x[ib] = rb;
                }
            }
            if (dst)
                for (int d = n_rot + threadIdx.x; d < head_dim; d += blockDim.x)
                    dst[d] = kr_pb_f2h(x[d]);
        } else {
            const int g = h - nqk;
            const float *x = v + (kr_pb_i64)t * v_stride + (kr_pb_i64)g * head_dim;
            for (int d = threadIdx.x; d < head_dim; d += blockDim.x)
                vrow[(kr_pb_i64)g * head_dim + d] = kr_pb_f2h(x[d]);
        }
    }
}

// KV store of n tokens into an fp16 cache: row (pos0 + t) % rows of k_cache
// (row_bytes apart) = fp16(k[t, 0..kv_dim)), same for v.
// k, v: (n, k_stride / v_stride) fp32. Launch: block (256), grid (ceil(kv_dim/256), n).
extern "C" __global__ void kr_pf_kv_store_f16(const float *k, long long k_stride, const float *v,
                                              long long v_stride, unsigned char *k_cache,
                                              unsigned char *v_cache, long long row_bytes, int rows, int kv_dim,
                                              int pos0)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (i >= kv_dim)
        return;
    const kr_pb_i64 row = (kr_pb_i64)((pos0 + t) % rows) * row_bytes;
    ((kr_pb_u16 *)(k_cache + row))[i] = kr_pb_f2h(k[(kr_pb_i64)t * k_stride + i]);
    ((kr_pb_u16 *)(v_cache + row))[i] = kr_pb_f2h(v[(kr_pb_i64)t * v_stride + i]);
}

// Q8_0 KV store of n tokens (row layout of the interfaces: kv_dim int8 quants,
// then kv_dim/32 fp16 scales): per 32 values d = amax/127, q = roundf(x * (1/d))
// (0 when d == 0) with the fp32 d, d stored as fp16 (GGML q8_0, same as
// kernels/decode/kv_attn.cu). kv_dim % 32 == 0. Item e < kv_dim: K element e;
// e >= kv_dim: V element e - kv_dim; one warp = one 32-block.
// Launch: block (256), grid (ceil(2*kv_dim/256), n).
extern "C" __global__ void kr_pf_kv_store_q8(const float *k, long long k_stride, const float *v,
                                             long long v_stride, unsigned char *k_cache, unsigned char *v_cache,
                                             long long row_bytes, int rows, int kv_dim, int pos0)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (i >= 2 * kv_dim) // whole warps (2*kv_dim is a multiple of 32)
        return;
    const bool is_k = i < kv_dim;
    const int e = is_k ? i : i - kv_dim;
    const float x = is_k ? k[(kr_pb_i64)t * k_stride + e] : v[(kr_pb_i64)t * v_stride + e];
    float amax = fabsf(x);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    unsigned char *row = (is_k ? k_cache : v_cache) + (kr_pb_i64)((pos0 + t) % rows) * row_bytes;
    ((signed char *)row)[e] = (signed char)(int)roundf(x * id);
    if ((e & 31) == 0)
        ((kr_pb_u16 *)(row + kv_dim))[e >> 5] = kr_pb_f2h(d);
}

// SwiGLU over rows: y[t, i] = silu(x[t, i]) * x[t, up_off + i], i < ff;
// x rows x_stride floats apart, y rows y_stride apart (y may alias x's gate half).
// Launch: block (256), grid (ceil(ff/256), n).
extern "C" __global__ void kr_pf_swiglu_f32(const float *x, long long x_stride, long long up_off, float *y,
                                            long long y_stride, int ff)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (i >= ff)
        return;
    const float g = x[(kr_pb_i64)t * x_stride + i], u = x[(kr_pb_i64)t * x_stride + up_off + i];
    y[(kr_pb_i64)t * y_stride + i] = g / (1.0f + expf(-g)) * u;
}

// Undo kernels/forward/matvec_repacked.cu's repacking of a Q4_0 (qsz 16) or
// Q8_0 (qsz 32) matrix for the GEMM: block b (of rows * nb, row-major) with
// quants qs[b*qsz ..] and fp16 scale sc[b] becomes the GGML block [d | quants]
// at dst + (b / nb) * dst_stride + (b % nb) * (qsz + 2).
// One warp per (row, chunk of 32 blocks): 16-byte loads of the quants, the
// blocks assembled in shared memory, then written with 16-byte stores (a
// chunk starts 16-byte aligned: 32*18 and 32*34 are multiples of 16).
// qs 16-byte aligned, dst and dst_stride 16-byte aligned.
// Launch: block (256), grid (ceil(rows * ceil(nb/32) / 8)).
extern "C" __global__ void __launch_bounds__(256)
kr_pf_unrepack(const unsigned char *__restrict__ qs, const kr_pb_u16 *__restrict__ sc,
               unsigned char *__restrict__ dst, long long dst_stride, long long rows, int nb, int qsz)
{
    __shared__ __align__(16) unsigned char sm[8][32 * 34];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int cpr = (nb + 31) >> 5; // chunks per row
    const kr_pb_i64 item = (kr_pb_i64)blockIdx.x * 8 + warp;
    if (item >= rows * cpr)
        return; // whole warp
    const kr_pb_i64 row = item / cpr;
    const int chunk = (int)(item - row * cpr), kb0 = chunk * 32, nblk = min(32, nb - kb0);
    const int bb = qsz + 2;
    unsigned char *w = sm[warp];
    if (lane < nblk) {
        const kr_pb_i64 b = row * nb + kb0 + lane;
        kr_pb_u16 *o = (kr_pb_u16 *)(w + lane * bb); // even offset
        o[0] = sc[b];
        for (int c = 0; c < qsz / 16; c++) {
            const uint4 v = *(const uint4 *)(qs + b * qsz + 16 * c);
            const unsigned int u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                o[1 + 8 * c + 2 * i] = (kr_pb_u16)(u[i] & 0xffffu);
                o[2 + 8 * c + 2 * i] = (kr_pb_u16)(u[i] >> 16);
            }
        }
    }
    __syncwarp();
    unsigned char *d = dst + row * dst_stride + (kr_pb_i64)kb0 * bb;
    const int bytes = nblk * bb, n16 = bytes >> 4;
    for (int i = lane; i < n16; i += 32)
        ((uint4 *)d)[i] = ((const uint4 *)w)[i];
    for (int i = 16 * n16 + 2 * lane; i < bytes; i += 64) // tail of a partial chunk (even length)
        *(kr_pb_u16 *)(d + i) = *(const kr_pb_u16 *)(w + i);
}

__device__ __forceinline__ float kr_pb_h2f(kr_pb_u16 h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ kr_pb_u16 kr_pb_ld16(const unsigned char *p) { return (kr_pb_u16)(p[0] | (p[1] << 8)); }

// Embedding of n tokens: out[t, i] = dequant(table row tok[t])[i], i < n_embd,
// for type (GGML ids) F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 8 (the decode
// kernels' formulas: d*(q-8), d*q + m, d*q); rows row_stride bytes apart.
// A token outside [0, n_vocab) gives NaN. out rows o_stride floats apart.
// Launch: block (256), grid (ceil(n_embd/256), n).
extern "C" __global__ void kr_pf_embed(const unsigned char *__restrict__ table, long long row_stride, int n_vocab,
                                       int n_embd, int type, const int *__restrict__ tok, float *__restrict__ out,
                                       long long o_stride)
{
    const int i = blockIdx.x * blockDim.x + threadIdx.x, t = blockIdx.y;
    if (i >= n_embd)
        return;
    const int id = tok[t];
    float v;
    if (id < 0 || id >= n_vocab) {
        v = __int_as_float(0x7fc00000);
    } else {
        const unsigned char *row = table + (kr_pb_i64)id * row_stride;
        const int b = i >> 5, j = i & 31;
        switch (type) {
        case 0: v = ((const float *)row)[i]; break;
        case 1: v = kr_pb_h2f(((const kr_pb_u16 *)row)[i]); break;
        case 2: {
            const unsigned char *blk = row + b * 18;
            const int q = j < 16 ? (blk[2 + j] & 15) : (blk[2 + j - 16] >> 4);
            v = kr_pb_h2f(kr_pb_ld16(blk)) * (float)(q - 8);
            break;
        }
        case 3: {
            const unsigned char *blk = row + b * 20;
            const int q = j < 16 ? (blk[4 + j] & 15) : (blk[4 + j - 16] >> 4);
            v = kr_pb_h2f(kr_pb_ld16(blk)) * (float)q + kr_pb_h2f(kr_pb_ld16(blk + 2));
            break;
        }
        default: { // 8: Q8_0
            const unsigned char *blk = row + b * 34;
            v = kr_pb_h2f(kr_pb_ld16(blk)) * (float)(signed char)blk[2 + j];
            break;
        }
        }
    }
    out[(kr_pb_i64)t * o_stride + i] = v;
}

// Residual add + RMSNorm of rows with fp16 output (the GEMM's fp16 A):
//   if res: x[r, :] += res[r, :] (written back to x)
//   y[r, i] = fp16(x[r, i] / sqrt(mean(x[r, :]^2) + eps) * w[i])   (w NULL: 1)
// x, res: (rows, n) fp32 rows n apart; y rows y_stride halves apart.
// n % 4 == 0, n <= 8192, y_stride % 4 == 0 (and 16-byte aligned x, res, w, 8-byte
// aligned y: the launcher checks): float4 loads, the row kept in registers; otherwise a
// scalar two-pass loop. Launch: block (256), grid (rows).
extern "C" __global__ void __launch_bounds__(256)
kr_pf_rmsnorm_h(float *x, const float *res, const float *w, kr_pb_u16 *y, long long y_stride, int n, float eps,
                int vec)
{
    __shared__ float sh[8];
    float *xr = x + (kr_pb_i64)blockIdx.x * n;
    const float *rr = res ? res + (kr_pb_i64)blockIdx.x * n : 0;
    kr_pb_u16 *yr = y + (kr_pb_i64)blockIdx.x * y_stride;
    float ss = 0.0f;
    float4 r[8];
    const int n4 = n >> 2;
    if (vec) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int idx = threadIdx.x + j * 256;
            if (idx < n4) {
                float4 v = ((const float4 *)xr)[idx];
                if (rr) {
                    const float4 e = ((const float4 *)rr)[idx];
                    v.x += e.x, v.y += e.y, v.z += e.z, v.w += e.w;
                    ((float4 *)xr)[idx] = v;
                }
                r[j] = v;
                ss += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
            }
        }
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            float v = xr[i];
            if (rr) {
                v += rr[i];
                xr[i] = v;
            }
            ss += v * v;
        }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
        ss += __shfl_xor_sync(0xffffffffu, ss, o);
    if ((threadIdx.x & 31) == 0)
        sh[threadIdx.x >> 5] = ss;
    __syncthreads();
    float tot = 0.0f;
#pragma unroll
    for (int i = 0; i < 8; i++)
        tot += sh[i];
    const float scale = rsqrtf(tot / (float)n + eps);
    if (vec) {
#pragma unroll
        for (int j = 0; j < 8; j++) {
            const int idx = threadIdx.x + j * 256;
            if (idx < n4) {
                const float4 v = r[j];
                float4 m = w ? ((const float4 *)w)[idx] : make_float4(1.0f, 1.0f, 1.0f, 1.0f);
                const unsigned int lo = (unsigned int)kr_pb_f2h(w ? v.x * scale * m.x : v.x * scale) |
                                        ((unsigned int)kr_pb_f2h(w ? v.y * scale * m.y : v.y * scale) << 16);
                const unsigned int hi = (unsigned int)kr_pb_f2h(w ? v.z * scale * m.z : v.z * scale) |
                                        ((unsigned int)kr_pb_f2h(w ? v.w * scale * m.w : v.w * scale) << 16);
                ((uint2 *)yr)[idx] = make_uint2(lo, hi);
            }
        }
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            yr[i] = kr_pb_f2h(w ? xr[i] * scale * w[i] : xr[i] * scale);
    }
}

// SwiGLU over rows with fp16 output: y[t, i] = fp16(silu(x[t, i]) * x[t, up_off + i]), i < ff;
// y rows y_stride halves apart. vec: 4 values per thread (ff, x_stride, up_off, y_stride
// multiples of 4, x 16-byte and y 8-byte aligned: the launcher checks).
// Launch: block (256), grid (ceil(ff / (vec ? 1024 : 256)), n).
__device__ __forceinline__ float kr_pb_silu_mul(float g, float u) { return g / (1.0f + expf(-g)) * u; }
extern "C" __global__ void kr_pf_swiglu_h(const float *x, long long x_stride, long long up_off, kr_pb_u16 *y,
                                          long long y_stride, int ff, int vec)
{
    const int t = blockIdx.y;
    const float *xt = x + (kr_pb_i64)t * x_stride;
    kr_pb_u16 *yt = y + (kr_pb_i64)t * y_stride;
    if (vec) {
        const int i = (blockIdx.x * blockDim.x + threadIdx.x) * 4;
        if (i >= ff)
            return;
        const float4 g = *(const float4 *)(xt + i), u = *(const float4 *)(xt + up_off + i);
        const unsigned int lo = (unsigned int)kr_pb_f2h(kr_pb_silu_mul(g.x, u.x)) |
                                ((unsigned int)kr_pb_f2h(kr_pb_silu_mul(g.y, u.y)) << 16);
        const unsigned int hi = (unsigned int)kr_pb_f2h(kr_pb_silu_mul(g.z, u.z)) |
                                ((unsigned int)kr_pb_f2h(kr_pb_silu_mul(g.w, u.w)) << 16);
        *(uint2 *)(yt + i) = make_uint2(lo, hi);
        return;
    }
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= ff)
        return;
    yt[i] = kr_pb_f2h(kr_pb_silu_mul(xt[i], xt[up_off + i]));
}

// fp32 -> fp16 (RNE) of n values (the attention output as the next GEMM's A).
// Launch: block (256), grid (ceil(n / 1024)): 4 values per thread.
extern "C" __global__ void kr_pf_to_f16(const float *__restrict__ x, kr_pb_u16 *__restrict__ y, long long n)
{
    const kr_pb_i64 i = ((kr_pb_i64)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    if (i + 3 < n) {
        const float4 v = *(const float4 *)(x + i);
        const unsigned int lo = (unsigned int)kr_pb_f2h(v.x) | ((unsigned int)kr_pb_f2h(v.y) << 16);
        const unsigned int hi = (unsigned int)kr_pb_f2h(v.z) | ((unsigned int)kr_pb_f2h(v.w) << 16);
        *(uint2 *)(y + i) = make_uint2(lo, hi);
    } else {
        for (kr_pb_i64 j = i; j < n; j++)
            y[j] = kr_pb_f2h(x[j]);
    }
}
