// KV cache and decode attention over an fp16 cache. Cache layout per layer:
//   k_cache, v_cache: (n_ctx, n_kv_head, head_dim) fp16 - row t holds all KV heads of position t.
// The current position p = *pos lives in device memory so a captured graph stays valid
// (pos NULL: p = pos_imm, for callers without a device position).
#ifndef KR_DECODE_COMMON_CUH
#include "kr_decode_common.cuh"
#endif

#ifndef KR_ATTN_WARPS
#define KR_ATTN_WARPS 4
#endif
#ifndef KR_ATTN_KT
#define KR_ATTN_KT 4 // keys per warp per iteration
#endif
#define KR_ATTN_MAX_PAIRS 4 // head_dim <= 64 * KR_ATTN_MAX_PAIRS = 256

// KV append: k_cache[p, :] = fp16(k), v_cache[p, :] = fp16(v) for p = *pos,
// k, v: (n_kv_dim,) fp32 with n_kv_dim = n_kv_head*head_dim. Nothing is written
// when p is outside [0, n_ctx). Launch: block 256, grid ceil(n_kv_dim / 256).
extern "C" __global__ void kr_kv_append_f16(const float *k, const float *v, kr_u16 *k_cache,
                                            kr_u16 *v_cache, int n_kv_dim, int n_ctx, const int *pos, int pos_imm)
{
    const int p = pos ? *pos : pos_imm;
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (p < 0 || p >= n_ctx || i >= n_kv_dim)
        return;
    const kr_i64 o = (kr_i64)p * n_kv_dim + i;
    k_cache[o] = kr_f2h(k[i]);
    v_cache[o] = kr_f2h(v[i]);
}

// Decode attention for one query token at position p = *pos:
//   out[h, :] = sum_t softmax_t(scale * q[h, :] . K[t, g, :]) V[t, g, :]
//   t in [t0, p], t0 = window > 0 ? max(0, p - window + 1) : 0, g = h / (n_head / n_kv_head)
// q: (n_head, head_dim) fp32; out: (n_head, head_dim) fp32; head_dim even, <= 256.
// Split-K: blockIdx.y = s of n_split takes a contiguous chunk of [t0, p]
// (chunk = ceil(len / n_split), computed from p at run time). With n_split == 1
// the block writes out directly; otherwise it writes its unnormalised partial
//   part[(h*n_split + s)*(head_dim + 2) + :] = (acc[0..head_dim), m, l)
// with m the running max of the scores, l = sum exp(score - m), acc = sum exp(score - m) V,
// and kr_attn_combine_f32 merges them. p outside [0, n_ctx) yields NaN outputs.
// Launch: block (32*KR_ATTN_WARPS), grid (n_head, n_split).
extern "C" __global__ void __launch_bounds__(32 * KR_ATTN_WARPS)
kr_attn_decode_f16(const float *q, const kr_u16 *k_cache, const kr_u16 *v_cache, float *out,
                   float *part, int n_head, int n_kv_head, int head_dim, int n_ctx, const int *pos,
                   int window, float scale, int n_split, int pos_imm)
{
    __shared__ float sh_acc[KR_ATTN_WARPS][64 * KR_ATTN_MAX_PAIRS];
    __shared__ float sh_m[KR_ATTN_WARPS], sh_l[KR_ATTN_WARPS];
    const int h = blockIdx.x, s = blockIdx.y;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = h / (n_head / n_kv_head);
    const int p = pos ? *pos : pos_imm;
    const int npair = head_dim >> 1;

    if (p < 0 || p >= n_ctx) {
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
            if (n_split == 1)
                out[(kr_i64)h * head_dim + d] = kr_qnan();
            else
                part[((kr_i64)h * n_split + s) * (head_dim + 2) + d] = kr_qnan();
        }
        if (n_split > 1 && threadIdx.x == 0) {
            part[((kr_i64)h * n_split + s) * (head_dim + 2) + head_dim] = kr_qnan();
            part[((kr_i64)h * n_split + s) * (head_dim + 2) + head_dim + 1] = kr_qnan();
        }
        return;
    }
    const int t0 = window > 0 ? max(0, p - window + 1) : 0;
    const int len = p - t0 + 1;
    const int chunk = (len + n_split - 1) / n_split;
    const int ts = t0 + s * chunk, te = min(ts + chunk, p + 1);

    // this lane's q pairs (pre-scaled), pair index c = lane + 32*j
    float2 qv[KR_ATTN_MAX_PAIRS];
    float2 acc[KR_ATTN_MAX_PAIRS];
#pragma unroll
    for (int j = 0; j < KR_ATTN_MAX_PAIRS; j++) {
        const int c = lane + 32 * j;
        qv[j] = c < npair ? make_float2(q[(kr_i64)h * head_dim + 2 * c] * scale,
                                        q[(kr_i64)h * head_dim + 2 * c + 1] * scale)
                          : make_float2(0.0f, 0.0f);
        acc[j] = make_float2(0.0f, 0.0f);
    }
    float m = kr_neg_inf(), l = 0.0f;
    const kr_i64 row = (kr_i64)n_kv_head * head_dim;
    const kr_u16 *kbase = k_cache + (kr_i64)g * head_dim, *vbase = v_cache + (kr_i64)g * head_dim;
    // Each warp takes KR_ATTN_KT consecutive keys per iteration and issues all
    // their K and V loads before any reduction, so one memory round trip
    // covers KR_ATTN_KT keys.
    for (int t = ts + warp * KR_ATTN_KT; t < te; t += KR_ATTN_WARPS * KR_ATTN_KT) {
        kr_u32 kk[KR_ATTN_KT][KR_ATTN_MAX_PAIRS], vv[KR_ATTN_KT][KR_ATTN_MAX_PAIRS];
#pragma unroll
        for (int j = 0; j < KR_ATTN_KT; j++) {
            const bool ok = t + j < te;
            const kr_u32 *kr = (const kr_u32 *)(kbase + (kr_i64)(t + j) * row);
            const kr_u32 *vr = (const kr_u32 *)(vbase + (kr_i64)(t + j) * row);
#pragma unroll
            for (int i = 0; i < KR_ATTN_MAX_PAIRS; i++) {
                const int c = lane + 32 * i;
                kk[j][i] = ok && c < npair ? __ldg(kr + c) : 0u;
                vv[j][i] = ok && c < npair ? __ldg(vr + c) : 0u;
            }
        }
        float sc[KR_ATTN_KT];
        float mt = m;
#pragma unroll
        for (int j = 0; j < KR_ATTN_KT; j++) {
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < KR_ATTN_MAX_PAIRS; i++)
                dot += qv[i].x * kr_h2f((kr_u16)(kk[j][i] & 0xffff)) + qv[i].y * kr_h2f((kr_u16)(kk[j][i] >> 16));
            dot = kr_warp_sum(dot);
            sc[j] = t + j < te ? dot : kr_neg_inf();
            mt = fmaxf(mt, sc[j]);
        }
        const float corr = expf(m - mt); // m = -inf at the start: 0
        l *= corr;
#pragma unroll
        for (int i = 0; i < KR_ATTN_MAX_PAIRS; i++) {
            acc[i].x *= corr;
            acc[i].y *= corr;
        }
#pragma unroll
        for (int j = 0; j < KR_ATTN_KT; j++) {
            const float pw = expf(sc[j] - mt); // masked keys: exp(-inf) = 0
            l += pw;
#pragma unroll
            for (int i = 0; i < KR_ATTN_MAX_PAIRS; i++) {
                acc[i].x += pw * kr_h2f((kr_u16)(vv[j][i] & 0xffff));
                acc[i].y += pw * kr_h2f((kr_u16)(vv[j][i] >> 16));
            }
        }
        m = mt;
    }
    // merge the warps of this block
#pragma unroll
    for (int j = 0; j < KR_ATTN_MAX_PAIRS; j++) {
        const int c = lane + 32 * j;
        if (c < npair) {
            sh_acc[warp][2 * c] = acc[j].x;
            sh_acc[warp][2 * c + 1] = acc[j].y;
        }
    }
    if (lane == 0) {
        sh_m[warp] = m;
        sh_l[warp] = l;
    }
    __syncthreads();
    float mb = kr_neg_inf();
    for (int w = 0; w < KR_ATTN_WARPS; w++)
        mb = fmaxf(mb, sh_m[w]);
    float f[KR_ATTN_WARPS], lb = 0.0f;
#pragma unroll
    for (int w = 0; w < KR_ATTN_WARPS; w++) {
        f[w] = sh_m[w] == kr_neg_inf() ? 0.0f : expf(sh_m[w] - mb); // empty warp adds nothing
        lb += sh_l[w] * f[w];
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float a = 0.0f;
#pragma unroll
        for (int w = 0; w < KR_ATTN_WARPS; w++)
            a += sh_acc[w][d] * f[w];
        if (n_split == 1)
            out[(kr_i64)h * head_dim + d] = a / lb;
        else
            part[((kr_i64)h * n_split + s) * (head_dim + 2) + d] = a;
    }
    if (n_split > 1 && threadIdx.x == 0) {
        part[((kr_i64)h * n_split + s) * (head_dim + 2) + head_dim] = mb;
        part[((kr_i64)h * n_split + s) * (head_dim + 2) + head_dim + 1] = lb;
    }
}

// Merge split-K partials: out[h, d] = sum_s acc_s[d] e^(m_s - M) / sum_s l_s e^(m_s - M),
// M = max_s m_s (splits with no keys have m = -inf and count zero).
// part: (n_head, n_split, head_dim + 2) as written by kr_attn_decode_f16.
// Launch: block (min(head_dim rounded up to 32, 256)), grid (n_head).
extern "C" __global__ void kr_attn_combine_f32(const float *part, float *out, int head_dim, int n_split)
{
    const int h = blockIdx.x;
    const int st = head_dim + 2;
    const float *ph = part + (kr_i64)h * n_split * st;
    float M = kr_neg_inf();
    for (int s = 0; s < n_split; s++)
        M = fmaxf(M, ph[s * st + head_dim]);
    float L = 0.0f;
    for (int s = 0; s < n_split; s++) {
        const float ms = ph[s * st + head_dim];
        if (ms != kr_neg_inf())
            L += ph[s * st + head_dim + 1] * expf(ms - M);
    }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float a = 0.0f;
        for (int s = 0; s < n_split; s++) {
            const float ms = ph[s * st + head_dim];
            if (ms != kr_neg_inf())
                a += ph[s * st + d] * expf(ms - M);
        }
        out[(kr_i64)h * head_dim + d] = a / L;
    }
}
