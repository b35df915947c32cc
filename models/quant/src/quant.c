/* Block formats: type table, dequantization and the quantized-row dot
 * product. Formulas follow ggml's definitions (see docs/QUANTS.md). Blocks
 * are read through byte offsets, so rows may have any alignment. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "kernrun/checked.h"
#include "quant_common.h"

/* ---- type table ---- */

typedef struct kr__qinfo {
    const char *name;
    uint16_t block;  /* elements per block */
    uint16_t bytes;  /* bytes per block */
    bool dequant;    /* kr_dequantize_row / kr_vec_dot_row handle it */
    bool quant;      /* kr_quantize_row handles it */
} kr__qinfo;

static const kr__qinfo g_qinfo[KR_DTYPE_COUNT] = {
    [KR_DTYPE_F32] = {"f32", 1, 4, true, true},
    [KR_DTYPE_F16] = {"f16", 1, 2, true, true},
    [KR_DTYPE_BF16] = {"bf16", 1, 2, true, true},
    [KR_DTYPE_Q4_0] = {"q4_0", KR_QK, sizeof(kr_block_q4_0), true, true},
    [KR_DTYPE_Q4_1] = {"q4_1", KR_QK, sizeof(kr_block_q4_1), true, true},
    [KR_DTYPE_Q5_0] = {"q5_0", KR_QK, sizeof(kr_block_q5_0), true, true},
    [KR_DTYPE_Q5_1] = {"q5_1", KR_QK, sizeof(kr_block_q5_1), true, true},
    [KR_DTYPE_Q8_0] = {"q8_0", KR_QK, sizeof(kr_block_q8_0), true, true},
    [KR_DTYPE_Q2_K] = {"q2_k", KR_QK_K, sizeof(kr_block_q2_K), true, false},
    [KR_DTYPE_Q3_K] = {"q3_k", KR_QK_K, sizeof(kr_block_q3_K), true, false},
    [KR_DTYPE_Q4_K] = {"q4_k", KR_QK_K, sizeof(kr_block_q4_K), true, true},
    [KR_DTYPE_Q5_K] = {"q5_k", KR_QK_K, sizeof(kr_block_q5_K), true, true},
    [KR_DTYPE_Q6_K] = {"q6_k", KR_QK_K, sizeof(kr_block_q6_K), true, true},
};

static const kr__qinfo *qinfo(kr_dtype t)
{
    if ((int)t < 0 || (int)t >= KR_DTYPE_COUNT || g_qinfo[t].name == NULL)
        return NULL;
    return &g_qinfo[t];
}

const char *kr__quant_type_name(kr_dtype t)
{
    const kr__qinfo *q = qinfo(t);
    return q ? q->name : "?";
}

size_t kr_quant_block_size(kr_dtype t)
{
    const kr__qinfo *q = qinfo(t);
    return q ? q->block : 0;
}

size_t kr_quant_type_size(kr_dtype t)
{
    const kr__qinfo *q = qinfo(t);
    return q ? q->bytes : 0;
}

bool kr_quant_can_dequantize(kr_dtype t)
{
    const kr__qinfo *q = qinfo(t);
    return q && q->dequant;
}

bool kr_quant_can_quantize(kr_dtype t)
{
    const kr__qinfo *q = qinfo(t);
    return q && q->quant;
}


kr_status kr__quant_check(kr_dtype t, size_t n, bool ok_type, const char *what, kr_err *err)
{
    const kr__qinfo *q = qinfo(t);
    if (!q || !ok_type)
        return kr_err_set_local(err, KR_ERR_UNSUPPORTED, "%s: type %d (%s) is not supported", what,
                             (int)t, q ? q->name : "unknown");
    if (n % q->block != 0)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                             "%s: row length %zu is not a multiple of the %s block size %u", what, n,
                             q->name, (unsigned)q->block);
    return KR_OK;
}

kr_status kr_quant_row_size(kr_dtype t, uint64_t n, uint64_t *bytes, kr_err *err)
{
    const kr__qinfo *q = qinfo(t);
    if (!q)
        return kr_err_set_local(err, KR_ERR_UNSUPPORTED, "type %d is not a known block format", (int)t);
    if (n % q->block != 0)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                             "row length %" PRIu64 " is not a multiple of the %s block size %u", n,
                             q->name, (unsigned)q->block);
    if (kr_mul_overflow_u64(n / q->block, q->bytes, bytes))
        return kr_err_set_local(err, KR_ERR_OVERFLOW, "row of %" PRIu64 " %s elements: byte size overflows",
                             n, q->name);
    return KR_OK;
}

/* ---- one block -> floats ---- */

/* x[j] = (q[j] - 8) * d; q[j] = low nibble of qs[j], q[j+16] = high nibble. */
static inline void dq_q4_0(const uint8_t *b, float *restrict y)
{
    const float d = kr__ld_f16(b);
    const uint8_t *qs = b + 2;
    /* ((float)q - 8) is exact, so this equals (float)(q - 8) * d. The
     * pragmas keep GCC from unrolling these loops before the loop
     * vectorizer sees them (unrolled, they were scalarized). */
#pragma GCC unroll 1
    for (int j = 0; j < 16; j++)
        y[j] = ((float)(qs[j] & 0x0f) - 8.0f) * d;
#pragma GCC unroll 1
    for (int j = 0; j < 16; j++)
        y[j + 16] = ((float)(qs[j] >> 4) - 8.0f) * d;
}

/* x[j] = q[j] * d + m */
static inline void dq_q4_1(const uint8_t *b, float *restrict y)
{
    const float d = kr__ld_f16(b), m = kr__ld_f16(b + 2);
    const uint8_t *qs = b + 4;
#pragma GCC unroll 1
    for (int j = 0; j < 16; j++) /* loop shape: see dq_q4_0 */
        y[j] = (float)(qs[j] & 0x0f) * d + m;
#pragma GCC unroll 1
    for (int j = 0; j < 16; j++)
        y[j + 16] = (float)(qs[j] >> 4) * d + m;
}

/* x[j] = (q[j] - 16) * d; q = nibble | (bit j of qh) << 4 */
static inline void dq_q5_0(const uint8_t *b, float *restrict y)
{
    const float d = kr__ld_f16(b);
    const uint32_t qh = kr__ld_u32(b + 2);
    const uint8_t *qs = b + 6;
#pragma GCC unroll 1
    for (int j = 0; j < 16; j++)
        y[j] = ((float)((qs[j] & 0x0f) | (((qh >> j) & 1u) << 4)) - 16.0f) * d;
#pragma GCC unroll 1
    for (int j = 0; j < 16; j++)
        y[j + 16] = ((float)((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4)) - 16.0f) * d;
}

static inline void dq_q5_1(const uint8_t *b, float *restrict y)
{
    const float d = kr__ld_f16(b), m = kr__ld_f16(b + 2);
    const uint32_t qh = kr__ld_u32(b + 4);
    const uint8_t *qs = b + 8;
#pragma GCC unroll 1
    for (int j = 0; j < 16; j++)
        y[j] = (float)((qs[j] & 0x0f) | (((qh >> j) & 1u) << 4)) * d + m;
#pragma GCC unroll 1
    for (int j = 0; j < 16; j++)
        y[j + 16] = (float)((qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4)) * d + m;
}

static inline void dq_q8_0(const uint8_t *b, float *restrict y)
{
    const float d = kr__ld_f16(b);
    const int8_t *qs = (const int8_t *)(b + 2);
    for (int j = 0; j < 32; j++)
        y[j] = (float)qs[j] * d;
}

/* Q2_K: 16 groups of 16; group g: scale = d * (sc[g] & 15), min = dmin * (sc[g] >> 4),
 * x = scale * q - min. Element e (half h = e/128, shift s = (e%128)/32, l = e%32):
 * q = (qs[32h + l] >> 2s) & 3, group g = 8h + 2s + l/16. */
static inline void dq_q2_K(const uint8_t *b, float *restrict y)
{
    const uint8_t *sc = b;
    const uint8_t *qs = b + 16;
    const float d = kr__ld_f16(b + 80), dmin = kr__ld_f16(b + 82);
    for (int h = 0; h < 2; h++) {
        for (int s = 0; s < 4; s++) {
            for (int k = 0; k < 2; k++) {
                const int g = 8 * h + 2 * s + k;
                const float dl = d * (float)(sc[g] & 0x0f), ml = dmin * (float)(sc[g] >> 4);
                const uint8_t *q = qs + 32 * h + 16 * k;
                float *o = y + 128 * h + 32 * s + 16 * k;
                for (int l = 0; l < 16; l++)
                    o[l] = dl * (float)((q[l] >> (2 * s)) & 3) - ml;
            }
        }
    }
}

/* 6-bit scale g (0..15) of Q3_K: low 4 bits from scales[g] (g < 8) or
 * scales[g-8] >> 4; high 2 bits from scales[8 + g%4] >> (2*(g/4)). */
static inline int q3k_scale(const uint8_t *sc, int g)
{
    int lo = g < 8 ? (sc[g] & 0x0f) : (sc[g - 8] >> 4);
    int hi = (sc[8 + (g & 3)] >> (2 * (g >> 2))) & 3;
    return lo | (hi << 4);
}

/* Q3_K: x = d * (scale_g - 32) * (q - (hbit ? 0 : 4)), q as in Q2_K, hbit =
 * hmask[l] bit (4h + s) with l = e%32. */
static inline void dq_q3_K(const uint8_t *b, float *restrict y)
{
    const uint8_t *hm = b;
    const uint8_t *qs = b + 32;
    const uint8_t *sc = b + 96;
    const float d = kr__ld_f16(b + 108);
    for (int h = 0; h < 2; h++) {
        for (int s = 0; s < 4; s++) {
            const uint8_t m = (uint8_t)(1u << (4 * h + s));
            for (int k = 0; k < 2; k++) {
                const int g = 8 * h + 2 * s + k;
                const float dl = d * (float)(q3k_scale(sc, g) - 32);
                const uint8_t *q = qs + 32 * h + 16 * k;
                const uint8_t *hh = hm + 16 * k;
                float *o = y + 128 * h + 32 * s + 16 * k;
                for (int l = 0; l < 16; l++)
                    o[l] = dl * (float)(((q[l] >> (2 * s)) & 3) - ((hh[l] & m) ? 0 : 4));
            }
        }
    }
}

/* 6-bit (scale, min) j (0..7) of Q4_K/Q5_K:
 * j < 4: sc = s[j] & 63, m = s[j+4] & 63;
 * j >= 4: sc = (s[j+4] & 15) | (s[j-4] >> 6) << 4, m = (s[j+4] >> 4) | (s[j] >> 6) << 4. */
static inline void k4_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q4_K: 8 groups of 32; chunk c (64 elements) uses qs[32c..32c+31]: low
 * nibbles -> group 2c, high -> group 2c+1; x = d*sc*q - dmin*m. */
static inline void dq_q4_K(const uint8_t *b, float *restrict y)
{
    const float d = kr__ld_f16(b), dmin = kr__ld_f16(b + 2);
    const uint8_t *s = b + 4;
    const uint8_t *qs = b + 16;
    for (int c = 0; c < 4; c++) {
        int sc, m;
        k4_scale_min(s, 2 * c, &sc, &m);
        const float d1 = d * (float)sc, m1 = dmin * (float)m;
        k4_scale_min(s, 2 * c + 1, &sc, &m);
        const float d2 = d * (float)sc, m2 = dmin * (float)m;
        const uint8_t *q = qs + 32 * c;
        float *o = y + 64 * c;
        for (int l = 0; l < 32; l++) {
            o[l] = d1 * (float)(q[l] & 0x0f) - m1;
            o[l + 32] = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

/* Q5_K: as Q4_K plus a 5th bit: group 2c uses qh[l] bit 2c, group 2c+1 bit 2c+1. */
static inline void dq_q5_K(const uint8_t *b, float *restrict y)
{
    const float d = kr__ld_f16(b), dmin = kr__ld_f16(b + 2);
    const uint8_t *s = b + 4;
    const uint8_t *qh = b + 16;
    const uint8_t *qs = b + 48;
    for (int c = 0; c < 4; c++) {
        int sc, m;
        k4_scale_min(s, 2 * c, &sc, &m);
        const float d1 = d * (float)sc, m1 = dmin * (float)m;
        k4_scale_min(s, 2 * c + 1, &sc, &m);
        const float d2 = d * (float)sc, m2 = dmin * (float)m;
        const uint8_t *q = qs + 32 * c;
        float *o = y + 64 * c;
        for (int l = 0; l < 32; l++) {
            int q0 = (q[l] & 0x0f) | (((qh[l] >> (2 * c)) & 1) << 4);
            int q1 = (q[l] >> 4) | (((qh[l] >> (2 * c + 1)) & 1) << 4);
            o[l] = d1 * (float)q0 - m1;
            o[l + 32] = d2 * (float)q1 - m2;
        }
    }
}

/* Q6_K: half h (128 elements) uses ql[64h..], qh[32h..], scales[8h..]; for
 * l in 0..31: element 128h + 32r + l (r = 0..3) has low 4 bits from
 * ql[64h + l + 32(r&1)] (low nibble for r < 2, high for r >= 2), high 2 bits
 * (qh[32h + l] >> 2r) & 3, q6 - 32, scale scales[8h + 2r + l/16]; x = d*scale*(q-32). */
static inline void dq_q6_K(const uint8_t *b, float *restrict y)
{
    const uint8_t *ql0 = b;
    const uint8_t *qh0 = b + 128;
    const int8_t *sc0 = (const int8_t *)(b + 192);
    const float d = kr__ld_f16(b + 208);
    for (int h = 0; h < 2; h++) {
        const uint8_t *ql = ql0 + 64 * h;
        const uint8_t *qh = qh0 + 32 * h;
        const int8_t *sc = sc0 + 8 * h;
        float *o = y + 128 * h;
        /* group g of 16 (l = 16g..16g+15) covers elements 32r + l of the
         * four quarters r; one loop per (g, r) pair keeps each vectorizable */
        for (int g = 0; g < 2; g++) {
            const float d0 = d * (float)sc[g], d1 = d * (float)sc[g + 2];
            const float d2 = d * (float)sc[g + 4], d3 = d * (float)sc[g + 6];
#pragma GCC unroll 1
            for (int l = 16 * g; l < 16 * g + 16; l++) {
                const int q1 = ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32;
                const int q2 = ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32;
                const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                o[l] = d0 * (float)q1;
                o[l + 32] = d1 * (float)q2;
                o[l + 64] = d2 * (float)q3;
                o[l + 96] = d3 * (float)q4;
            }
        }
    }
}

typedef void (*kr__dq_fn)(const uint8_t *b, float *restrict y);

static kr__dq_fn block_fn(kr_dtype t)
{
    switch (t) {
    case KR_DTYPE_Q4_0: return dq_q4_0;
    case KR_DTYPE_Q4_1: return dq_q4_1;
    case KR_DTYPE_Q5_0: return dq_q5_0;
    case KR_DTYPE_Q5_1: return dq_q5_1;
    case KR_DTYPE_Q8_0: return dq_q8_0;
    case KR_DTYPE_Q2_K: return dq_q2_K;
    case KR_DTYPE_Q3_K: return dq_q3_K;
    case KR_DTYPE_Q4_K: return dq_q4_K;
    case KR_DTYPE_Q5_K: return dq_q5_K;
    case KR_DTYPE_Q6_K: return dq_q6_K;
    default: return NULL;
    }
}

/* ---- row dequantization ---- */

kr_status kr_dequantize_row_e(kr_dtype t, const void *src, float *dst, size_t n, kr_err *err)
{
    kr_status st = kr__quant_check(t, n, kr_quant_can_dequantize(t), "dequantize", err);
    if (st != KR_OK)
        return st;
    if (n > 0 && (!src || !dst))
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "dequantize: NULL buffer");
    const uint8_t *s = src;
    switch (t) {
    case KR_DTYPE_F32:
        if (n)
            memcpy(dst, src, n * sizeof(float));
        return KR_OK;
    case KR_DTYPE_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = kr__ld_f16(s + 2 * i);
        return KR_OK;
    case KR_DTYPE_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = kr_bf16_to_fp32(kr__ld_u16(s + 2 * i));
        return KR_OK;
    default:
        break;
    }
    const kr__qinfo *q = qinfo(t);
    const kr__dq_fn fn = block_fn(t);
    if (!fn)
        return kr_err_set_local(err, KR_ERR_INTERNAL, "dequantize: no block decoder for %s", q->name);
    const size_t nb = n / q->block;
    for (size_t i = 0; i < nb; i++)
        fn(s + i * q->bytes, dst + i * q->block);
    return KR_OK;
}

kr_status kr_dequantize_row(kr_dtype t, const void *src, float *dst, size_t n)
{
    return kr_dequantize_row_e(t, src, dst, n, NULL);
}

/* ---- dot products ----
 * Each block is dequantized into a small stack buffer by the plain block
 * decoder (its loops vectorize), then multiplied with x using GCC/clang
 * vector extensions: a plain loop with a float sum is not vectorized without
 * -ffast-math. Eight lanes (two 4-wide vectors) accumulate independently;
 * the horizontal sum happens once per row. */

typedef float kr__v4f __attribute__((vector_size(16)));

/* x86-64: also build an AVX2+FMA clone of each dot kernel, picked at load
 * time by the CPU (GCC/clang target_clones, needs ifunc: glibc/ELF). */
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(KR_QUANT_NO_CLONES)
#define KR__DOT_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KR__DOT_CLONES
#endif

static inline kr__v4f ldv(const float *p)
{
    kr__v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* acc[0..1] += a[0..n) * x[0..n), n a multiple of 8 */
static inline void acc_dot(kr__v4f acc[2], const float *restrict a, const float *restrict x, size_t n)
{
    for (size_t k = 0; k < n; k += 8) {
        acc[0] += ldv(a + k) * ldv(x + k);
        acc[1] += ldv(a + k + 4) * ldv(x + k + 4);
    }
}

static inline float hsum(const kr__v4f acc[2])
{
    const kr__v4f a = acc[0] + acc[1];
    return (a[0] + a[2]) + (a[1] + a[3]);
}

#define KR__DEF_DOT(NAME, DQ, QK, BYTES)                                                      \
    KR__DOT_CLONES static float NAME(const uint8_t *row, const float *restrict x, size_t nb)  \
    {                                                                                         \
        kr__v4f acc[2] = {{0}, {0}};                                                          \
        float buf[QK];                                                                        \
        for (size_t i = 0; i < nb; i++) {                                                     \
            DQ(row + i * (BYTES), buf);                                                       \
            acc_dot(acc, buf, x + i * (QK), QK);                                              \
        }                                                                                     \
        return hsum(acc);                                                                     \
    }

KR__DEF_DOT(dot_q4_0, dq_q4_0, KR_QK, 18)
KR__DEF_DOT(dot_q4_1, dq_q4_1, KR_QK, 20)
KR__DEF_DOT(dot_q5_0, dq_q5_0, KR_QK, 22)
KR__DEF_DOT(dot_q5_1, dq_q5_1, KR_QK, 24)
KR__DEF_DOT(dot_q8_0, dq_q8_0, KR_QK, 34)
KR__DEF_DOT(dot_q2_K, dq_q2_K, KR_QK_K, 84)
KR__DEF_DOT(dot_q3_K, dq_q3_K, KR_QK_K, 110)
KR__DEF_DOT(dot_q4_K, dq_q4_K, KR_QK_K, 144)
KR__DEF_DOT(dot_q5_K, dq_q5_K, KR_QK_K, 176)
KR__DEF_DOT(dot_q6_K, dq_q6_K, KR_QK_K, 210)

KR__DOT_CLONES static float dot_f32(const uint8_t *row, const float *restrict x, size_t n)
{
    kr__v4f acc[2] = {{0}, {0}};
    float buf[64];
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        memcpy(buf, row + 4 * i, sizeof buf);
        acc_dot(acc, buf, x + i, 64);
    }
    float tail = 0.0f;
    for (; i < n; i++) {
        float v;
        memcpy(&v, row + 4 * i, 4);
        tail += v * x[i];
    }
    return hsum(acc) + tail;
}

KR__DOT_CLONES static float dot_f16(const uint8_t *row, const float *restrict x, size_t n)
{
    kr__v4f acc[2] = {{0}, {0}};
    float buf[64];
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        for (int j = 0; j < 64; j++)
            buf[j] = kr__ld_f16(row + 2 * (i + (size_t)j));
        acc_dot(acc, buf, x + i, 64);
    }
    float tail = 0.0f;
    for (; i < n; i++)
        tail += kr__ld_f16(row + 2 * i) * x[i];
    return hsum(acc) + tail;
}

KR__DOT_CLONES static float dot_bf16(const uint8_t *row, const float *restrict x, size_t n)
{
    kr__v4f acc[2] = {{0}, {0}};
    float buf[64];
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        for (int j = 0; j < 64; j++)
            buf[j] = kr_bf16_to_fp32(kr__ld_u16(row + 2 * (i + (size_t)j)));
        acc_dot(acc, buf, x + i, 64);
    }
    float tail = 0.0f;
    for (; i < n; i++)
        tail += kr_bf16_to_fp32(kr__ld_u16(row + 2 * i)) * x[i];
    return hsum(acc) + tail;
}

kr_status kr_vec_dot_row_e(kr_dtype t, const void *row, const float *x, size_t n, float *out,
                           kr_err *err)
{
    kr_status st = kr__quant_check(t, n, kr_quant_can_dequantize(t), "vec_dot", err);
    if (st != KR_OK)
        return st;
    if (!out || (n > 0 && (!row || !x)))
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "vec_dot: NULL buffer");
    const uint8_t *r = row;
    const size_t nb = n / kr_quant_block_size(t);
    switch (t) {
    case KR_DTYPE_F32: *out = dot_f32(r, x, n); break;
    case KR_DTYPE_F16: *out = dot_f16(r, x, n); break;
    case KR_DTYPE_BF16: *out = dot_bf16(r, x, n); break;
    case KR_DTYPE_Q4_0: *out = dot_q4_0(r, x, nb); break;
    case KR_DTYPE_Q4_1: *out = dot_q4_1(r, x, nb); break;
    case KR_DTYPE_Q5_0: *out = dot_q5_0(r, x, nb); break;
    case KR_DTYPE_Q5_1: *out = dot_q5_1(r, x, nb); break;
    case KR_DTYPE_Q8_0: *out = dot_q8_0(r, x, nb); break;
    case KR_DTYPE_Q2_K: *out = dot_q2_K(r, x, nb); break;
    case KR_DTYPE_Q3_K: *out = dot_q3_K(r, x, nb); break;
    case KR_DTYPE_Q4_K: *out = dot_q4_K(r, x, nb); break;
    case KR_DTYPE_Q5_K: *out = dot_q5_K(r, x, nb); break;
    case KR_DTYPE_Q6_K: *out = dot_q6_K(r, x, nb); break;
    default:
        return kr_err_set_local(err, KR_ERR_INTERNAL, "vec_dot: no kernel for %s", kr__quant_type_name(t));
    }
    return KR_OK;
}

kr_status kr_vec_dot_row(kr_dtype t, const void *row, const float *x, size_t n, float *out)
{
    return kr_vec_dot_row_e(t, row, x, n, out, NULL);
}
