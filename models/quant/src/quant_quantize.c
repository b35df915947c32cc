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

/* NaN -> 0, +-inf -> +-amax copy of a 32-block (integer ops: vectorizes);
 * returns amax, the largest finite magnitude, and in *max the first element
 * having it (signed). */
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
    float amax;
    memcpy(&amax, &am, 4);
    *max = 0.0f; /* the first finite element of magnitude amax, before inf is replaced */
    if (am != 0)
        for (int j = 0; j < 32; j++)
            if ((xb[j] & 0x7fffffffu) == am) {
                memcpy(max, &xb[j], 4);
                break;
            }
    /* +-inf -> +-amax: quantizes to the same saturated quant, and leaves
     * only finite values with |x| <= amax for the quantizer loops */
    for (int j = 0; j < 32; j++) {
        const uint32_t inf = 0u - (uint32_t)((xb[j] & 0x7fffffffu) == 0x7f800000u);
        xb[j] = (xb[j] & ~inf) | (((xb[j] & 0x80000000u) | am) & inf);
    }
    memcpy(xs, xb, sizeof xb);
    return amax;
}

/* round half away from zero (roundf) for |v| < 2^23, without a libm call:
 * t = trunc(v), then step away from zero when |v - t| >= 0.5 (exact) */
static inline int round_away(float v)
{
    const int t = (int)v;
    const float f = v - (float)t;
    return t + (f >= 0.5f) - (f <= -0.5f);
}

KR__Q_CLONES static void q_q8_0(const float *x, uint8_t *b)
{
    float xs[32], max;
    const float amax = block_prep(x, xs, &max);
    const float d = clamp_scale(amax / 127.0f);
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    kr__st_u16(b, kr_fp32_to_fp16(d));
    if (id == 0.0f) { /* all zero (or only inf/NaN): every quant 0, avoids inf * 0 */
        memset(b + 2, 0, 32);
        return;
    }
    if (amax * id <= 128.0f) {
        /* usual case: xs is finite with |xs| <= amax, so |xs * id| <= 127 (+ rounding) */
        for (int j = 0; j < 32; j++)
            b[2 + j] = (uint8_t)(int8_t)round_away(xs[j] * id);
        return;
    }
    for (int j = 0; j < 32; j++) { /* the scale was clamped to 65504: saturate */
        float v = xs[j] * id;
        v = v < 127.0f ? v : 127.0f;
        v = v > -127.0f ? v : -127.0f;
        b[2 + j] = (uint8_t)(int8_t)round_away(v);
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

/* ---- K-quants (Q4_K, Q5_K, Q6_K) ----
 * Not ggml's iterative scale search (make_qkx2_quants / make_qx_quants):
 * a direct scheme whose sub-block scales are rounded *up* so every finite
 * value of a sub-block lies inside its quantized range; the error is then
 * at most half a sub-block step. The bytes are a valid block of the format
 * (any decoder reads them), just not ggml's bytes. */

/* Smallest fp16 value >= v (v >= 0), capped at 65504; returned decoded. */
static float fp16_ceil(float v, uint16_t *bits)
{
    if (!(v > 0.0f)) {
        *bits = 0;
        return 0.0f;
    }
    if (v >= KR__FP16_MAX) {
        *bits = 0x7bffu;
        return KR__FP16_MAX;
    }
    uint16_t h = kr_fp32_to_fp16(v);
    if (kr_fp16_to_fp32(h) < v)
        h++; /* next representable magnitude (positive values are ordered) */
    *bits = h;
    return kr_fp16_to_fp32(h);
}

/* NaN -> 0 copy of n values; finite min / max (0, 0 when none). */
static void prep_minmax(const float *x, float *xs, int n, float *mn, float *mx)
{
    float lo = INFINITY, hi = -INFINITY;
    for (int j = 0; j < n; j++) {
        const float v = x[j] == x[j] ? x[j] : 0.0f;
        xs[j] = v;
        if (isfinite(v)) {
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
    }
    if (lo > hi)
        lo = hi = 0.0f;
    *mn = lo;
    *mx = hi;
}

/* q = round(v * inv) clamped to [lo, hi] (lo <= 0 <= hi); inv = 1/step or
 * 0 when the step is 0 (then q = 0). Rounds half up via floor(t + 0.5). */
static inline int q_round(float v, float inv, int lo, int hi)
{
    float t = v * inv;
    t = t == t ? t : 0.0f;
    t = t > (float)lo ? t : (float)lo;
    t = t < (float)hi ? t : (float)hi;
    return (int)(t - (float)lo + 0.5f) + lo; /* argument >= 0.5: truncation is floor */
}

static inline float inv_or_zero(float step) { return step > 0.0f ? 1.0f / step : 0.0f; }

static inline int ceil_div_clamp(float num, float den, int hi)
{
    if (!(den > 0.0f) || !(num > 0.0f))
        return 0;
    const float t = ceilf(num / den);
    return t < (float)hi ? (int)t : hi;
}

/* Q4_K (nmax 15) and Q5_K (nmax 31): 8 groups of 32, x ~ d*sc*q - dmin*mn. */
static void q_k4k5(const float *x, uint8_t *b, int nmax, bool five)
{
    float xs[256], mn[8], mx[8], m[8], off[8], sub[8];
    int lm[8], ls[8];
    float mmax = 0.0f;
    for (int g = 0; g < 8; g++) {
        prep_minmax(x + 32 * g, xs + 32 * g, 32, &mn[g], &mx[g]);
        m[g] = mn[g] < 0.0f ? -mn[g] : 0.0f; /* subtracted offset, >= 0 */
        mmax = m[g] > mmax ? m[g] : mmax;
    }
    uint16_t dmin_bits, d_bits;
    const float dmin = fp16_ceil(mmax / 63.0f, &dmin_bits);
    float smax = 0.0f;
    for (int g = 0; g < 8; g++) {
        lm[g] = ceil_div_clamp(m[g], dmin, 63);
        off[g] = dmin * (float)lm[g];             /* >= m[g]: covers the bottom */
        float top = mx[g] + off[g];
        top = top > 0.0f ? top : 0.0f;
        sub[g] = top / (float)nmax;               /* step needed to reach the top */
        smax = sub[g] > smax ? sub[g] : smax;
    }
    const float d = fp16_ceil(smax / 63.0f, &d_bits);
    for (int g = 0; g < 8; g++)
        ls[g] = ceil_div_clamp(sub[g], d, 63);
    kr__st_u16(b, d_bits);
    kr__st_u16(b + 2, dmin_bits);
    uint8_t *sc = b + 4;
    for (int j = 0; j < 4; j++) {
        sc[j] = (uint8_t)(ls[j] | ((ls[j + 4] >> 4) << 6));
        sc[j + 4] = (uint8_t)(lm[j] | ((lm[j + 4] >> 4) << 6));
        sc[j + 8] = (uint8_t)((ls[j + 4] & 15) | ((lm[j + 4] & 15) << 4));
    }
    uint8_t *qh = five ? b + 16 : NULL;
    uint8_t *qs = five ? b + 48 : b + 16;
    if (qh)
        memset(qh, 0, 32);
    memset(qs, 0, 128);
    float inv[8];
    for (int g = 0; g < 8; g++)
        inv[g] = inv_or_zero(d * (float)ls[g]);
    for (int i = 0; i < 256; i++) {
        const int g = i / 32, c = i / 64, r = i % 64;
        const int q = q_round(xs[i] + off[g], inv[g], 0, nmax);
        if (r < 32)
            qs[32 * c + r] |= (uint8_t)(q & 15);
        else
            qs[32 * c + r - 32] |= (uint8_t)((q & 15) << 4);
        if (qh && (q & 16))
            qh[i % 32] |= (uint8_t)(1u << (i / 32));
    }
}

static void q_q4_K(const float *x, uint8_t *b) { q_k4k5(x, b, 15, false); }
static void q_q5_K(const float *x, uint8_t *b) { q_k4k5(x, b, 31, true); }

/* Q6_K: 16 groups of 16, x ~ d * sc * (q - 32), q - 32 in [-32, 31]; the
 * scheme uses [-31, 31] so both signs are covered. */
static void q_q6_K(const float *x, uint8_t *b)
{
    float xs[256], sub[16];
    int ls[16];
    float smax = 0.0f;
    for (int g = 0; g < 16; g++) {
        float mn, mx;
        prep_minmax(x + 16 * g, xs + 16 * g, 16, &mn, &mx);
        const float amax = -mn > mx ? -mn : mx;
        sub[g] = amax / 31.0f;
        smax = sub[g] > smax ? sub[g] : smax;
    }
    uint16_t d_bits;
    const float d = fp16_ceil(smax / 127.0f, &d_bits);
    memset(b, 0, 210);
    for (int g = 0; g < 16; g++) {
        ls[g] = ceil_div_clamp(sub[g], d, 127);
        b[192 + g] = (uint8_t)(int8_t)ls[g];
    }
    kr__st_u16(b + 208, d_bits);
    float inv[16];
    for (int g = 0; g < 16; g++)
        inv[g] = inv_or_zero(d * (float)ls[g]);
    for (int i = 0; i < 256; i++) {
        const int q = q_round(xs[i], inv[i / 16], -32, 31) + 32; /* 0..63 */
        const int h = i / 128, r = i % 128, k = r / 32, l = r % 32;
        uint8_t *ql = b + 64 * h + l + 32 * (k & 1);
        *ql |= (uint8_t)(k < 2 ? (q & 15) : ((q & 15) << 4));
        b[128 + 32 * h + l] |= (uint8_t)((q >> 4) << (2 * k));
    }
}

kr_status kr_quantize_row_e(kr_dtype t, const float *src, void *dst, size_t n, kr_err *err)
{
    kr_status st = kr__quant_check(t, n, kr_quant_can_quantize(t), "quantize", err);
    if (st != KR_OK)
        return st;
    if (n > 0 && (!src || !dst))
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "quantize: NULL buffer");
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
    case KR_DTYPE_Q4_K: fn = q_q4_K; break;
    case KR_DTYPE_Q5_K: fn = q_q5_K; break;
    case KR_DTYPE_Q6_K: fn = q_q6_K; break;
    default:
        return kr_err_set_local(err, KR_ERR_INTERNAL, "quantize: no encoder for %s", kr__quant_type_name(t));
    }
    const size_t bytes = kr_quant_type_size(t), qk = kr_quant_block_size(t);
    for (size_t i = 0; i < n / qk; i++)
        fn(src + i * qk, d + i * bytes);
    return KR_OK;
}

kr_status kr_quantize_row(kr_dtype t, const float *src, void *dst, size_t n)
{
    return kr_quantize_row_e(t, src, dst, n, NULL);
}
