/* Quantization (round-to-nearest, the arithmetic of ggml's
 * quantize_row_*_ref, so finite input gives the same bytes). Non-finite
 * input: see the policy in kernrun/quant.h. */
#include <math.h>
#include <string.h>

#include "quant_common.h"

#define KR__FP16_MAX 65504.0f

/* Largest magnitude among the finite values (and its signed value). */
static inline void absmax_finite(const float *x, int n, float *amax, float *max)
{
    float a = 0.0f, m = 0.0f;
    for (int j = 0; j < n; j++) {
        const float v = x[j];
        if (isfinite(v) && fabsf(v) > a) {
            a = fabsf(v);
            m = v;
        }
    }
    *amax = a;
    *max = m;
}

static inline void minmax_finite(const float *x, int n, float *mn, float *mx)
{
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < n; j++) {
        const float v = x[j];
        if (isfinite(v)) {
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
    }
    if (lo > hi) /* no finite value */
        lo = hi = 0.0f;
    *mn = lo;
    *mx = hi;
}

/* Clamp a scale so its fp16 encoding stays finite. */
static inline float clamp_scale(float d)
{
    if (d > KR__FP16_MAX)
        return KR__FP16_MAX;
    if (d < -KR__FP16_MAX)
        return -KR__FP16_MAX;
    return d;
}

/* (int)v clamped to [0, hi]; NaN -> nan_value. Avoids the undefined
 * float->int conversion of out-of-range values. */
static inline int trunc_clamp(float v, int hi, int nan_value)
{
    if (v != v)
        return nan_value;
    if (!(v >= 0.0f))
        return 0;
    if (v >= (float)hi)
        return hi;
    return (int)v;
}

/* Same results as the simple loops in q_q4_1 style, written so the
 * compiler vectorizes them (mkmodel quantizes billions of values):
 * - NaN is replaced by 0 up front (policy), which also gives ggml's result;
 * - the largest finite |x| is found as an integer max over the magnitude
 *   bits (for non-negative floats the integer order is the float order;
 *   inf/NaN bit patterns are >= 0x7f800000 and are skipped), then the
 *   first element with that magnitude supplies the sign, as in ggml;
 * - clamps are ternaries (min/max instructions), conversions truncate. */
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(KR_QUANT_NO_CLONES)
#define KR__Q_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KR__Q_CLONES
#endif

/* NaN -> 0 copy of a 32-block (integer ops: vectorizes); returns the largest finite magnitude and, in
 * *max, the first element having it (signed). */
typedef uint32_t kr__v4u __attribute__((vector_size(16)));

static inline float block_prep(const float *x, float *xs, float *max)
{
    uint32_t xb[32];
    kr__v4u acc = {0, 0, 0, 0};
    memcpy(xb, x, sizeof xb);
    for (int k = 0; k < 32; k += 4) {
        kr__v4u v;
        memcpy(&v, xb + k, sizeof v);
        const kr__v4u m = v & 0x7fffffffu;
        v &= ~(kr__v4u)(m > 0x7f800000u);                     /* NaN -> +0 */
        memcpy(xb + k, &v, sizeof v);
        const kr__v4u mf = m & (kr__v4u)(m < 0x7f800000u);    /* finite magnitudes only */
        const kr__v4u gt = (kr__v4u)(mf > acc);
        acc = (mf & gt) | (acc & ~gt);
    }
    uint32_t am = acc[0];
    for (int i = 1; i < 4; i++)
        am = acc[i] > am ? acc[i] : am;
    memcpy(xs, xb, sizeof xb);
    float amax;
    memcpy(&amax, &am, 4);
    *max = 0.0f;
    if (am != 0)
        for (int j = 0; j < 32; j++)
            if ((xb[j] & 0x7fffffffu) == am) {
                *max = xs[j];
                break;
            }
    return amax;
}

/* round half away from zero (roundf) for |v| < 2^23, without a libm call:
 * t = trunc(v) (exact), then step away from zero when |v - t| >= 0.5 */
static inline float round_away(float v)
{
    const float t = (float)(int)v;
    const float f = v - t; /* exact */
    return t + (f >= 0.5f ? 1.0f : 0.0f) - (f <= -0.5f ? 1.0f : 0.0f);
}

KR__Q_CLONES static void q_q8_0(const float *x, uint8_t *b)
{
    float xs[32], max;
    const float amax = block_prep(x, xs, &max);
    const float d = clamp_scale(amax / 127.0f);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    kr__st_u16(b, kr_fp32_to_fp16(d));
    for (int j = 0; j < 32; j++) {
        float v = xs[j] * id; /* id == 0: inf * 0 = NaN -> 0 below */
        v = v == v ? v : 0.0f;
        v = v < 127.0f ? v : 127.0f;
        v = v > -127.0f ? v : -127.0f;
        b[2 + j] = (uint8_t)(int8_t)(int)round_away(v);
    }
}

KR__Q_CLONES static void q_q4_0(const float *x, uint8_t *b)
{
    float xs[32], max;
    (void)block_prep(x, xs, &max);
    const float d = clamp_scale(max / -8.0f);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    kr__st_u16(b, kr_fp32_to_fp16(d));
    uint8_t q[32];
    for (int j = 0; j < 32; j++) {
        float v = xs[j] * id + 8.5f;
        v = v == v ? v : 8.5f; /* id == 0 with x = +-inf */
        v = v > 0.0f ? v : 0.0f;
        v = v < 15.0f ? v : 15.0f;
        q[j] = (uint8_t)(int)v;
    }
    for (int j = 0; j < 16; j++)
        b[2 + j] = (uint8_t)(q[j] | (q[j + 16] << 4));
}

static void q_q4_1(const float *x, uint8_t *b)
{
    float mn, mx;
    minmax_finite(x, 32, &mn, &mx);
    mn = clamp_scale(mn);
    const float d = clamp_scale((mx - mn) / 15.0f);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    kr__st_u16(b, kr_fp32_to_fp16(d));
    kr__st_u16(b + 2, kr_fp32_to_fp16(mn));
    /* NaN encodes as the quant nearest to 0 (clamped into the block's range). */
    const int qz = trunc_clamp((0.0f - mn) * id + 0.5f, 15, 0);
    for (int j = 0; j < 16; j++) {
        const int q0 = trunc_clamp((x[j] - mn) * id + 0.5f, 15, qz);
        const int q1 = trunc_clamp((x[j + 16] - mn) * id + 0.5f, 15, qz);
        b[4 + j] = (uint8_t)(q0 | (q1 << 4));
    }
}

static void q_q5_0(const float *x, uint8_t *b)
{
    float amax, max;
    absmax_finite(x, 32, &amax, &max);
    (void)amax;
    const float d = clamp_scale(max / -16.0f);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t qh = 0;
    kr__st_u16(b, kr_fp32_to_fp16(d));
    for (int j = 0; j < 16; j++) {
        const int q0 = trunc_clamp(x[j] * id + 16.5f, 31, 16);
        const int q1 = trunc_clamp(x[j + 16] * id + 16.5f, 31, 16);
        b[6 + j] = (uint8_t)((q0 & 0x0f) | ((q1 & 0x0f) << 4));
        qh |= (uint32_t)((q0 >> 4) & 1) << j;
        qh |= (uint32_t)((q1 >> 4) & 1) << (j + 16);
    }
    kr__st_u32(b + 2, qh);
}

static void q_q5_1(const float *x, uint8_t *b)
{
    float mn, mx;
    minmax_finite(x, 32, &mn, &mx);
    mn = clamp_scale(mn);
    const float d = clamp_scale((mx - mn) / 31.0f);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    uint32_t qh = 0;
    kr__st_u16(b, kr_fp32_to_fp16(d));
    kr__st_u16(b + 2, kr_fp32_to_fp16(mn));
    const int qz = trunc_clamp((0.0f - mn) * id + 0.5f, 31, 0);
    for (int j = 0; j < 16; j++) {
        const int q0 = trunc_clamp((x[j] - mn) * id + 0.5f, 31, qz);
        const int q1 = trunc_clamp((x[j + 16] - mn) * id + 0.5f, 31, qz);
        b[8 + j] = (uint8_t)((q0 & 0x0f) | ((q1 & 0x0f) << 4));
        qh |= (uint32_t)((q0 >> 4) & 1) << j;
        qh |= (uint32_t)((q1 >> 4) & 1) << (j + 16);
    }
    kr__st_u32(b + 4, qh);
}

kr_status kr_quantize_row_e(kr_dtype t, const float *src, void *dst, size_t n, kr_err *err)
{
    kr_status st = kr__quant_check(t, n, kr_quant_can_quantize(t), "quantize", err);
    if (st != KR_OK)
        return st;
    if (n > 0 && (!src || !dst))
        return kr__quant_err(err, KR_ERR_INVALID_ARG, "quantize: NULL buffer");
    uint8_t *d = dst;
    void (*fn)(const float *, uint8_t *) = NULL;
    switch (t) {
    case KR_DTYPE_F32:
        if (n)
            memcpy(dst, src, n * sizeof(float));
        return KR_OK;
    case KR_DTYPE_F16:
        for (size_t i = 0; i < n; i++)
            kr__st_u16(d + 2 * i, kr_fp32_to_fp16(src[i]));
        return KR_OK;
    case KR_DTYPE_BF16:
        for (size_t i = 0; i < n; i++)
            kr__st_u16(d + 2 * i, kr_fp32_to_bf16(src[i]));
        return KR_OK;
    case KR_DTYPE_Q8_0: fn = q_q8_0; break;
    case KR_DTYPE_Q4_0: fn = q_q4_0; break;
    case KR_DTYPE_Q4_1: fn = q_q4_1; break;
    case KR_DTYPE_Q5_0: fn = q_q5_0; break;
    case KR_DTYPE_Q5_1: fn = q_q5_1; break;
    default:
        return kr__quant_err(err, KR_ERR_INTERNAL, "quantize: no encoder for %s", kr__quant_type_name(t));
    }
    const size_t bytes = kr_quant_type_size(t);
    for (size_t i = 0; i < n / KR_QK; i++)
        fn(src + i * KR_QK, d + i * bytes);
    return KR_OK;
}

kr_status kr_quantize_row(kr_dtype t, const float *src, void *dst, size_t n)
{
    return kr_quantize_row_e(t, src, dst, n, NULL);
}
