// Rotary position embedding, in place, for one token at position p = *pos
// (device memory, so a captured graph stays valid; pos NULL: p = pos_imm):
//   theta_i = p * freq_scale * freq_base^(-2i/n_rot) / ff[i],  i < n_rot/2
//   (ff = freq_factors (n_rot/2,) fp32, or 1 when NULL - llama-3.1 rope_freqs)
//   (a, b) <- (a cos theta_i - b sin theta_i, a sin theta_i + b cos theta_i)
//   normal (neox = 0): (a, b) = (h[2i], h[2i+1]);  neox != 0: (a, b) = (h[i], h[i + n_rot/2])
// for every head h of q (n_head_q, head_dim) and k (n_head_k, head_dim) fp32;
// dims n_rot..head_dim-1 are left unchanged (n_rot even, <= head_dim). k may be
// NULL with n_head_k = 0. Launch: block (min(n_rot/2, 256)), grid (n_head_q + n_head_k).
#ifndef KR_DECODE_COMMON_CUH
#include "kr_decode_common.cuh"
#endif

extern "C" __global__ void kr_rope_f32(float *q, int n_head_q, float *k, int n_head_k, int head_dim,
                                       int n_rot, const int *pos, float freq_base, float freq_scale,
                                       const float *freq_factors, int neox, int pos_imm)
{
    const int h = blockIdx.x;
    float *v = h < n_head_q ? q + (kr_i64)h * head_dim : k + (kr_i64)(h - n_head_q) * head_dim;
    const float p = (float)(pos ? *pos : pos_imm);
    const int half = n_rot / 2;
    for (int i = threadIdx.x; i < half; i += blockDim.x) {
        float theta = p * freq_scale * powf(freq_base, -2.0f * (float)i / (float)n_rot);
        if (freq_factors)
            theta /= freq_factors[i];
        float sn, cs;
        sincosf(theta, &sn, &cs);
        const int ia = neox ? i : 2 * i, ib = neox ? i + half : 2 * i + 1;
        const float a = v[ia], b = v[ib];
        v[ia] = a * cs - b * sn;
        v[ib] = a * sn + b * cs;
    }
}
