// Context shift of the device KV cache (plugins/cuda_forward/gpu_kvcache.c):
// move n_rows rows of one slot from row src_row to row dst_row in every layer,
// K and V, and re-rotate the moved keys by `delta` positions (delta = -n_discard).
//
// Cache layout (docs/KVCACHE.md): layer l's K slot base = base + l*layer_stride,
// its V slot base = K base + v_off; row r at slot base + r*row_bytes.
//   type 1 (F16):  row = kv_dim fp16
//   type 8 (Q8_0): row = kv_dim int8 q, then kv_dim/32 fp16 d; value i = q[i]*d[i/32]
// RoPE as kernels/decode/rope.cu, per kv head of head_dim values:
//   theta_i = delta * freq_scale * freq_base^(-2i/n_rot) / ff[i]  (ff NULL: 1), i < n_rot/2
//   normal: pairs (2i, 2i+1); neox: pairs (i, i + n_rot/2); dims >= n_rot unchanged.
// RoPE at p followed by RoPE at delta equals RoPE at p + delta (angles add).
// K rows are dequantized into shared memory (kv_dim floats), rotated, and
// written back (q8_0: requantized, d = amax/127, q = roundf(x/d), 0 when d == 0).
// V rows are copied as 32-bit words (row_bytes % 4 == 0).
// Source and destination rows of one launch must not overlap (the host splits
// the move into chunks of at most src_row - dst_row rows).
// Launch: grid (n_rows, n_layer, 2: K then V), block 256 (a multiple of 32),
// dynamic shared memory kv_dim * 4 bytes. Not part of the decode step: no PDL.

typedef unsigned char kr_ks_u8;
typedef signed char kr_ks_i8;
typedef unsigned short kr_ks_u16;
typedef unsigned int kr_ks_u32;
typedef unsigned long long kr_ks_u64;

__device__ __forceinline__ float kr_ks_h2f(kr_ks_u16 h)
{
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ kr_ks_u16 kr_ks_f2h(float f)
{
    kr_ks_u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

extern "C" __global__ void kr_kv_shift(kr_ks_u8 *base, kr_ks_u64 layer_stride, kr_ks_u64 v_off,
                                       kr_ks_u64 row_bytes, int src_row, int dst_row, int kv_dim, int head_dim,
                                       int n_rot, int neox, float delta, float freq_base, float freq_scale,
                                       const float *freq_factors, int type)
{
    extern __shared__ float kr_ks_row[]; // (kv_dim) fp32
    const int r = blockIdx.x, l = blockIdx.y, is_v = blockIdx.z;
    kr_ks_u8 *slot = base + (kr_ks_u64)l * layer_stride + (is_v ? v_off : 0);
    const kr_ks_u8 *src = slot + (kr_ks_u64)(src_row + r) * row_bytes;
    kr_ks_u8 *dst = slot + (kr_ks_u64)(dst_row + r) * row_bytes;
    if (is_v) {
        const kr_ks_u32 *s4 = (const kr_ks_u32 *)src;
        kr_ks_u32 *d4 = (kr_ks_u32 *)dst;
        for (kr_ks_u64 i = threadIdx.x; i < row_bytes / 4; i += blockDim.x)
            d4[i] = s4[i];
        return;
    }
    // dequantize
    if (type == 1) {
        const kr_ks_u16 *h = (const kr_ks_u16 *)src;
        for (int i = threadIdx.x; i < kv_dim; i += blockDim.x)
            kr_ks_row[i] = kr_ks_h2f(h[i]);
    } else {
        const kr_ks_i8 *q = (const kr_ks_i8 *)src;
        const kr_ks_u16 *d = (const kr_ks_u16 *)(src + kv_dim);
        for (int i = threadIdx.x; i < kv_dim; i += blockDim.x)
            kr_ks_row[i] = (float)q[i] * kr_ks_h2f(d[i / 32]);
    }
    __syncthreads();
    // rotate: one thread per pair (n_head_kv * n_rot/2 pairs)
    const int half = n_rot / 2, n_pairs = (kv_dim / head_dim) * half;
    for (int j = threadIdx.x; j < n_pairs; j += blockDim.x) {
        const int g = j / half, i = j % half;
        float theta = delta * freq_scale * powf(freq_base, -2.0f * (float)i / (float)n_rot);
        if (freq_factors)
            theta /= freq_factors[i];
        float sn, cs;
        sincosf(theta, &sn, &cs);
        float *v = kr_ks_row + g * head_dim;
        const int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
        const float a = v[ia], b = v[ib];
        v[ia] = a * cs - b * sn;
        v[ib] = a * sn + b * cs;
    }
    __syncthreads();
    // store
    if (type == 1) {
        kr_ks_u16 *h = (kr_ks_u16 *)dst;
        for (int i = threadIdx.x; i < kv_dim; i += blockDim.x)
            h[i] = kr_ks_f2h(kr_ks_row[i]);
        return;
    }
    kr_ks_i8 *q = (kr_ks_i8 *)dst;
    kr_ks_u16 *d = (kr_ks_u16 *)(dst + kv_dim);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, n_warps = blockDim.x >> 5;
    for (int b = warp; b < kv_dim / 32; b += n_warps) {
        const float x = kr_ks_row[b * 32 + lane];
        float amax = fabsf(x);
        for (int o = 16; o > 0; o >>= 1)
            amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        const float dd = amax / 127.0f;
        q[b * 32 + lane] = (kr_ks_i8)(dd != 0.0f ? (int)roundf(x / dd) : 0);
        if (lane == 0)
            d[b] = kr_ks_f2h(dd);
    }
}
