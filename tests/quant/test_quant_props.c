/* Property tests on random data: quantize -> dequantize error bounds (the
 * bound per block is derived here from the format: half a quantization step
 * plus the fp16 rounding of the stored scale/min), sizes, signs, zeros,
 * all-equal blocks, huge/tiny values, the NaN/inf policy, argument checks,
 * and vec_dot == dequantize + dot. */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/half.h"
#include "kernrun/quant.h"
#include "kr_test_leaks.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd64(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
/* uniform in [-1, 1) */
static float urand(void) { return (float)((double)(rnd64() >> 11) / 9007199254740992.0 * 2.0 - 1.0); }

static void fill(float *x, size_t n, float scale, int mode)
{
    for (size_t i = 0; i < n; i++) {
        float v = urand() * scale;
        if (mode == 1)
            v = fabsf(v); /* all positive */
        else if (mode == 2)
            v = -fabsf(v); /* all negative */
        else if (mode == 3 && (rnd64() & 3) == 0)
            v = 0.0f; /* sparse zeros */
        x[i] = v;
    }
}

static float h2f(float v) { return kr_fp16_to_fp32(kr_fp32_to_fp16(v)); }

/* Per-block tolerance of a 32-block format from its definition. */
/* *clampv: the largest magnitude representable on the side opposite to the
 * block's signed max for Q4_0/Q5_0 (q - 8 ranges -8..7: one side holds only
 * 7 steps, so a value of the opposite sign near amax is clamped to 7d);
 * elements beyond it may err by their excess too. */
static double block_tol(kr_dtype t, const float *x, double *clampv)
{
    *clampv = INFINITY;
    double amax = 0, mx = -INFINITY, mn = INFINITY;
    for (int j = 0; j < 32; j++) {
        amax = fmax(amax, fabs(x[j]));
        mx = fmax(mx, x[j]);
        mn = fmin(mn, x[j]);
    }
    double d, dh, qmax, mtol = 0;
    switch (t) {
    case KR_DTYPE_Q8_0: d = amax / 127; qmax = 127; break;
    case KR_DTYPE_Q4_0: d = amax / 8; qmax = 8; *clampv = 7 * d; break;
    case KR_DTYPE_Q5_0: d = amax / 16; qmax = 16; *clampv = 15 * d; break;
    case KR_DTYPE_Q4_1: d = (mx - mn) / 15; qmax = 15; mtol = fabs(mn - h2f((float)mn)); break;
    case KR_DTYPE_Q5_1: d = (mx - mn) / 31; qmax = 31; mtol = fabs(mn - h2f((float)mn)); break;
    default: cr_assert_fail("no tolerance for %d", (int)t); return 0;
    }
    dh = fabs((double)h2f((float)d));
    /* half a step of the real scale, the stored scale's rounding times the
     * largest quant, the stored min's rounding, a few float ulps */
    return 0.5 * d * (1 + 1e-5) + qmax * fabs(d - dh) + mtol + 1e-6 * amax + 1e-30;
}

static const kr_dtype g_qtypes[] = {KR_DTYPE_Q8_0, KR_DTYPE_Q4_0, KR_DTYPE_Q4_1, KR_DTYPE_Q5_0,
                                    KR_DTYPE_Q5_1};

static void roundtrip_check(kr_dtype t, const float *x, size_t n)
{
    uint64_t bytes = 0;
    cr_assert_eq(kr_quant_row_size(t, n, &bytes, NULL), KR_OK);
    uint8_t *q = malloc(bytes + 1);
    float *y = malloc((n + 1) * sizeof *y);
    cr_assert(q && y);
    cr_assert_eq(kr_quantize_row(t, x, q, n), KR_OK);
    cr_assert_eq(kr_dequantize_row(t, q, y, n), KR_OK);
    for (size_t b = 0; b < n / 32; b++) {
        double clampv;
        const double btol = block_tol(t, x + 32 * b, &clampv);
        for (size_t j = 0; j < 32; j++) {
            const size_t i = 32 * b + j;
            const double tol = btol + fmax(0.0, fabs((double)x[i]) - clampv);
            cr_assert(fabs((double)x[i] - (double)y[i]) <= tol,
                      "%s block %zu elem %zu: x=%.9g y=%.9g |err|=%.3g > tol %.3g", kr_dtype_name(t), b,
                      j, x[i], y[i], fabs((double)x[i] - (double)y[i]), tol);
        }
    }
    free(q);
    free(y);
}

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(props, .fini = kr_test_leak_check);

Test(props, roundtrip_random_all_types)
{
    const size_t sizes[] = {32, 64, 32 * 37, 4096};
    const float scales[] = {1.0f, 0.02f, 100.0f, 1e-3f};
    for (size_t ti = 0; ti < sizeof g_qtypes / sizeof g_qtypes[0]; ti++)
        for (size_t si = 0; si < 4; si++)
            for (int mode = 0; mode < 4; mode++) {
                float *x = malloc(sizes[si] * sizeof *x);
                cr_assert(x);
                fill(x, sizes[si], scales[(si + (size_t)mode) % 4], mode);
                roundtrip_check(g_qtypes[ti], x, sizes[si]);
                free(x);
            }
}

Test(props, zeros_and_all_equal)
{
    float x[64], y[64];
    uint8_t q[2 * 34];
    for (size_t ti = 0; ti < sizeof g_qtypes / sizeof g_qtypes[0]; ti++) {
        const kr_dtype t = g_qtypes[ti];
        memset(x, 0, sizeof x);
        cr_assert_eq(kr_quantize_row(t, x, q, 64), KR_OK);
        cr_assert_eq(kr_dequantize_row(t, q, y, 64), KR_OK);
        for (int i = 0; i < 64; i++)
            cr_assert(y[i] == 0.0f, "%s zeros: y[%d] = %g", kr_dtype_name(t), i, y[i]);
        /* all-equal blocks: +c and -c; result within fp16 rounding of c */
        const float cs[] = {0.7f, -3.25f, 1e-2f};
        for (int k = 0; k < 3; k++) {
            for (int i = 0; i < 64; i++)
                x[i] = i < 32 ? cs[k] : -cs[k];
            cr_assert_eq(kr_quantize_row(t, x, q, 64), KR_OK);
            cr_assert_eq(kr_dequantize_row(t, q, y, 64), KR_OK);
            for (int i = 0; i < 64; i++)
                cr_assert(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 2e-3f, "%s const %g: y[%d] = %.9g",
                          kr_dtype_name(t), x[i], i, y[i]);
        }
    }
}

Test(props, huge_and_tiny)
{
    float x[32], y[32];
    uint8_t q[34];
    for (size_t ti = 0; ti < sizeof g_qtypes / sizeof g_qtypes[0]; ti++) {
        const kr_dtype t = g_qtypes[ti];
        /* tiny: scale underflows fp16 -> everything ~0; error <= |x| */
        for (int i = 0; i < 32; i++)
            x[i] = (i & 1 ? 1e-30f : -1e-30f) * (float)(i + 1);
        cr_assert_eq(kr_quantize_row(t, x, q, 32), KR_OK);
        cr_assert_eq(kr_dequantize_row(t, q, y, 32), KR_OK);
        for (int i = 0; i < 32; i++)
            cr_assert(isfinite(y[i]) && fabsf(y[i] - x[i]) <= 64e-30f, "%s tiny y[%d]=%g", kr_dtype_name(t), i, y[i]);
        /* huge: the fp16 scale would overflow; policy: clamp, results finite */
        for (int i = 0; i < 32; i++)
            x[i] = (i & 1 ? 1e30f : -1e30f) / (float)(i + 1);
        cr_assert_eq(kr_quantize_row(t, x, q, 32), KR_OK);
        cr_assert_eq(kr_dequantize_row(t, q, y, 32), KR_OK);
        for (int i = 0; i < 32; i++) {
            cr_assert(isfinite(y[i]), "%s huge y[%d]=%g", kr_dtype_name(t), i, y[i]);
            /* sign kept for the symmetric formats */
            if (t != KR_DTYPE_Q4_1 && t != KR_DTYPE_Q5_1 && y[i] != 0.0f)
                cr_assert((y[i] > 0) == (x[i] > 0), "%s huge sign y[%d]", kr_dtype_name(t), i);
        }
    }
}

/* Policy (kernrun/quant.h): NaN -> 0 (nearest representable to 0 for the
 * offset formats), +-inf saturate, scales ignore non-finite values. */
Test(props, nan_inf_policy)
{
    float x[32], y[32];
    uint8_t q[34];
    for (size_t ti = 0; ti < sizeof g_qtypes / sizeof g_qtypes[0]; ti++) {
        const kr_dtype t = g_qtypes[ti];
        for (int i = 0; i < 32; i++)
            x[i] = (float)(i - 16) / 4.0f;
        x[3] = NAN;
        x[5] = INFINITY;
        x[7] = -INFINITY;
        cr_assert_eq(kr_quantize_row(t, x, q, 32), KR_OK);
        cr_assert_eq(kr_dequantize_row(t, q, y, 32), KR_OK);
        float lo = INFINITY, hi = -INFINITY;
        for (int i = 0; i < 32; i++) {
            cr_assert(isfinite(y[i]), "%s y[%d] = %g", kr_dtype_name(t), i, y[i]);
            lo = fminf(lo, y[i]);
            hi = fmaxf(hi, y[i]);
        }
        cr_assert(y[5] == hi, "%s +inf -> block max (%g vs %g)", kr_dtype_name(t), y[5], hi);
        cr_assert(y[7] == lo, "%s -inf -> block min (%g vs %g)", kr_dtype_name(t), y[7], lo);
        /* the finite values keep their usual error bound */
        const double step = (t == KR_DTYPE_Q8_0) ? 4.0 / 127 : (t == KR_DTYPE_Q5_0 || t == KR_DTYPE_Q5_1) ? 8.0 / 16 : 8.0 / 8;
        cr_assert(fabsf(y[3]) <= step, "%s NaN -> %g, not ~0", kr_dtype_name(t), y[3]);
        if (t == KR_DTYPE_Q8_0 || t == KR_DTYPE_Q4_0 || t == KR_DTYPE_Q5_0)
            cr_assert(y[3] == 0.0f, "%s NaN -> exactly 0, got %g", kr_dtype_name(t), y[3]);
    }
    /* F16/BF16 keep IEEE specials */
    const float s[3] = {NAN, INFINITY, -INFINITY};
    uint8_t h[6];
    float r[3];
    cr_assert_eq(kr_quantize_row(KR_DTYPE_F16, s, h, 3), KR_OK);
    cr_assert_eq(kr_dequantize_row(KR_DTYPE_F16, h, r, 3), KR_OK);
    cr_assert(isnan(r[0]) && r[1] == INFINITY && r[2] == -INFINITY);
    cr_assert_eq(kr_quantize_row(KR_DTYPE_BF16, s, h, 3), KR_OK);
    cr_assert_eq(kr_dequantize_row(KR_DTYPE_BF16, h, r, 3), KR_OK);
    cr_assert(isnan(r[0]) && r[1] == INFINITY && r[2] == -INFINITY);
}

Test(props, f16_bf16_roundtrip)
{
    enum { N = 1000 };
    float x[N], y[N];
    uint8_t b[2 * N];
    fill(x, N, 10.0f, 0);
    cr_assert_eq(kr_quantize_row(KR_DTYPE_F16, x, b, N), KR_OK);
    cr_assert_eq(kr_dequantize_row(KR_DTYPE_F16, b, y, N), KR_OK);
    for (int i = 0; i < N; i++) /* fp16: 11-bit significand -> rel err <= 2^-11 */
        cr_assert(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 0x1p-11f + 0x1p-25f, "f16 %d", i);
    cr_assert_eq(kr_quantize_row(KR_DTYPE_BF16, x, b, N), KR_OK);
    cr_assert_eq(kr_dequantize_row(KR_DTYPE_BF16, b, y, N), KR_OK);
    for (int i = 0; i < N; i++) /* bf16: 8-bit significand -> rel err <= 2^-8 */
        cr_assert(fabsf(y[i] - x[i]) <= fabsf(x[i]) * 0x1p-8f, "bf16 %d", i);
    cr_assert_eq(kr_quantize_row(KR_DTYPE_F32, x, b, N / 2), KR_OK);
    cr_assert_eq(kr_dequantize_row(KR_DTYPE_F32, b, y, N / 2), KR_OK);
    cr_assert_eq(memcmp(x, y, N / 2 * sizeof(float)), 0);
}

Test(props, bad_lengths_and_types)
{
    float x[64] = {0}, y[64];
    uint8_t q[64 * 4];
    kr_err err = {0};
    cr_assert_eq(kr_quantize_row(KR_DTYPE_Q4_0, x, q, 33), KR_ERR_INVALID_ARG);
    cr_assert_eq(kr_dequantize_row(KR_DTYPE_Q8_0, q, y, 40), KR_ERR_INVALID_ARG);
    cr_assert_eq(kr_dequantize_row_e(KR_DTYPE_Q6_K, q, y, 172, &err), KR_ERR_INVALID_ARG);
    cr_assert_eq(err.code, KR_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "172") && strstr(err.msg, "256") && strstr(err.msg, "q6_k"), "msg: %s", err.msg);
    float out;
    cr_assert_eq(kr_vec_dot_row_e(KR_DTYPE_Q8_0, q, x, 172, &out, &err), KR_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "not a multiple"), "msg: %s", err.msg);
    uint64_t bytes;
    cr_assert_eq(kr_quant_row_size(KR_DTYPE_Q8_0, 172, &bytes, &err), KR_ERR_INVALID_ARG);
    cr_assert_eq(kr_quant_row_size(KR_DTYPE_Q8_0, 4096, &bytes, NULL), KR_OK);
    cr_assert_eq(bytes, 4096 / 32 * 34);
    cr_assert_eq(kr_quant_row_size(KR_DTYPE_Q8_0, UINT64_MAX - 31, &bytes, &err), KR_ERR_OVERFLOW);
    cr_assert_eq(kr_quant_row_size((kr_dtype)17, 256, &bytes, &err), KR_ERR_UNSUPPORTED);
    /* unsupported types */
    cr_assert_eq(kr_quantize_row(KR_DTYPE_Q2_K, x, q, 256), KR_ERR_UNSUPPORTED);
    cr_assert_eq(kr_quantize_row(KR_DTYPE_Q3_K, x, q, 256), KR_ERR_UNSUPPORTED);
    cr_assert_eq(kr_quantize_row(KR_DTYPE_Q4_K, x, q, 200), KR_ERR_INVALID_ARG);
    cr_assert_eq(kr_dequantize_row(KR_DTYPE_I32, q, y, 4), KR_ERR_UNSUPPORTED);
    cr_assert_eq(kr_dequantize_row(KR_DTYPE_Q8_K, q, y, 256), KR_ERR_UNSUPPORTED);
    cr_assert_eq(kr_vec_dot_row((kr_dtype)-1, q, x, 32, &out), KR_ERR_UNSUPPORTED);
    cr_assert_eq(kr_vec_dot_row((kr_dtype)99, q, x, 32, &out), KR_ERR_UNSUPPORTED);
    /* NULL buffers */
    cr_assert_eq(kr_dequantize_row(KR_DTYPE_Q8_0, NULL, y, 32), KR_ERR_INVALID_ARG);
    cr_assert_eq(kr_vec_dot_row(KR_DTYPE_Q8_0, q, x, 32, NULL), KR_ERR_INVALID_ARG);
    /* n = 0 is fine and does nothing */
    cr_assert_eq(kr_vec_dot_row(KR_DTYPE_Q4_K, q, x, 0, &out), KR_OK);
    cr_assert_eq(out, 0.0f);
}

/* Random block bytes for any type, with finite fp16 scales. */
static void random_blocks(kr_dtype t, uint8_t *b, size_t nblocks)
{
    const size_t bs = kr_quant_type_size(t);
    for (size_t i = 0; i < nblocks * bs; i++)
        b[i] = (uint8_t)rnd64();
    /* offsets of the fp16 fields per block, from the layouts */
    int off[2] = {-1, -1};
    switch (t) {
    case KR_DTYPE_F16: off[0] = 0; break;
    case KR_DTYPE_BF16: off[0] = 0; break;
    case KR_DTYPE_Q4_0: case KR_DTYPE_Q5_0: case KR_DTYPE_Q8_0: off[0] = 0; break;
    case KR_DTYPE_Q4_1: case KR_DTYPE_Q5_1: off[0] = 0; off[1] = 2; break;
    case KR_DTYPE_Q2_K: off[0] = 80; off[1] = 82; break;
    case KR_DTYPE_Q3_K: off[0] = 108; break;
    case KR_DTYPE_Q4_K: case KR_DTYPE_Q5_K: off[0] = 0; off[1] = 2; break;
    case KR_DTYPE_Q6_K: off[0] = 208; break;
    default: break;
    }
    for (size_t i = 0; i < nblocks; i++)
        for (int k = 0; k < 2; k++)
            if (off[k] >= 0) {
                uint16_t h = t == KR_DTYPE_BF16 ? kr_fp32_to_bf16(urand()) : kr_fp32_to_fp16(urand() * 0.1f);
                b[i * bs + (size_t)off[k]] = (uint8_t)h;
                b[i * bs + (size_t)off[k] + 1] = (uint8_t)(h >> 8);
            }
}

Test(props, vec_dot_matches_dequant)
{
    const kr_dtype types[] = {KR_DTYPE_F32, KR_DTYPE_F16, KR_DTYPE_BF16, KR_DTYPE_Q4_0,
                              KR_DTYPE_Q4_1, KR_DTYPE_Q5_0, KR_DTYPE_Q5_1, KR_DTYPE_Q8_0,
                              KR_DTYPE_Q2_K, KR_DTYPE_Q3_K, KR_DTYPE_Q4_K, KR_DTYPE_Q5_K,
                              KR_DTYPE_Q6_K};
    const size_t ns[] = {256, 512, 4096, 256 * 11};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const kr_dtype t = types[ti];
        for (size_t ni = 0; ni < 4; ni++) {
            size_t n = ns[ni] + (kr_quant_block_size(t) == 1 ? 13 : 0); /* tails for plain types */
            const size_t nb = n / kr_quant_block_size(t);
            /* +1 byte so the row can start at an odd address */
            uint8_t *buf = malloc(nb * kr_quant_type_size(t) + 1);
            float *x = malloc(n * sizeof *x), *y = malloc(n * sizeof *y);
            cr_assert(buf && x && y);
            uint8_t *row = buf + (ni & 1);
            if (t == KR_DTYPE_F32) {
                for (size_t i = 0; i < n; i++) {
                    float v = urand();
                    memcpy(row + 4 * i, &v, 4);
                }
            } else {
                random_blocks(t, row, nb);
            }
            fill(x, n, 1.0f, 0);
            cr_assert_eq(kr_dequantize_row(t, row, y, n), KR_OK);
            double ref = 0, mag = 0;
            for (size_t i = 0; i < n; i++) {
                ref += (double)y[i] * (double)x[i];
                mag += fabs((double)y[i] * (double)x[i]);
            }
            float got = NAN;
            cr_assert_eq(kr_vec_dot_row(t, row, x, n, &got), KR_OK);
            cr_assert(fabs((double)got - ref) <= 1e-5 * mag + 1e-30, "%s n=%zu: got %.9g ref %.9g (mag %g)",
                      kr_dtype_name(t), n, got, ref, mag);
            free(buf);
            free(x);
            free(y);
        }
    }
}

/* K-quant quantizers: per sub-block bound derived from the scheme in
 * docs/QUANTS.md — sub-block offsets and steps are rounded up so every value
 * is covered; the step is at most the needed step plus one unit of the
 * fp16 super-block scale (which is within 2^-10 relative of its ideal). */
static void kq_check(kr_dtype t, const float *x)
{
    uint8_t q[210];
    float y[256];
    cr_assert_eq(kr_quantize_row(t, x, q, 256), KR_OK);
    cr_assert_eq(kr_dequantize_row(t, q, y, 256), KR_OK);
    const int gs = t == KR_DTYPE_Q6_K ? 16 : 32, ng = 256 / gs;
    double need[16], mmax = 0, smax = 0, m[16];
    for (int g = 0; g < ng; g++) {
        double mn = INFINITY, mx = -INFINITY;
        for (int j = 0; j < gs; j++) {
            mn = fmin(mn, x[g * gs + j]);
            mx = fmax(mx, x[g * gs + j]);
        }
        m[g] = mn < 0 ? -mn : 0;
        mmax = fmax(mmax, m[g]);
        if (t == KR_DTYPE_Q6_K)
            need[g] = fmax(-mn, mx) / 31;
        else
            need[g] = mx; /* finished below, needs dmin */
    }
    const double fp16_up = 1 + 0x1p-10, tiny = 0x1p-24;
    const double nmax = t == KR_DTYPE_Q4_K ? 15 : 31;
    if (t != KR_DTYPE_Q6_K) {
        const double dmin = mmax / 63 * fp16_up + tiny;
        for (int g = 0; g < ng; g++)
            need[g] = fmax(0, need[g] + m[g] + dmin) / nmax;
    }
    for (int g = 0; g < ng; g++)
        smax = fmax(smax, need[g]);
    const double d = smax / (t == KR_DTYPE_Q6_K ? 127 : 63) * fp16_up + tiny;
    for (int i = 0; i < 256; i++) {
        const double tol = 0.5 * (need[i / gs] + d) * (1 + 1e-5) + 1e-7 * fabs(x[i]);
        cr_assert(fabs((double)x[i] - y[i]) <= tol, "%s elem %d: x=%.9g y=%.9g err %.3g > %.3g", kr_dtype_name(t), i,
                  x[i], y[i], fabs((double)x[i] - y[i]), tol);
    }
}

Test(props, roundtrip_kquants)
{
    const kr_dtype ts[] = {KR_DTYPE_Q4_K, KR_DTYPE_Q5_K, KR_DTYPE_Q6_K};
    const float scales[] = {1.0f, 0.02f, 300.0f, 1e-3f};
    float x[256];
    for (int ti = 0; ti < 3; ti++)
        for (int rep = 0; rep < 40; rep++) {
            fill(x, 256, scales[rep % 4], rep % 4);
            if (rep % 5 == 4) /* one sub-block of zeros, one constant */
                for (int j = 0; j < 32; j++) {
                    x[j] = 0.0f;
                    x[64 + j] = 0.375f;
                }
            kq_check(ts[ti], x);
        }
    /* the bound is not vacuous: random data uses most of each sub-block's levels */
    fill(x, 256, 1.0f, 0);
    uint8_t q[210];
    float y[256];
    cr_assert_eq(kr_quantize_row(KR_DTYPE_Q4_K, x, q, 256), KR_OK);
    cr_assert_eq(kr_dequantize_row(KR_DTYPE_Q4_K, q, y, 256), KR_OK);
    double err = 0;
    for (int i = 0; i < 256; i++)
        err = fmax(err, fabs((double)x[i] - y[i]));
    cr_assert(err < 2.0 / 15 * 0.6, "q4_k max error %g", err);
    /* non-finite input: finite output, NaN near 0 */
    for (int ti = 0; ti < 3; ti++) {
        fill(x, 256, 1.0f, 0);
        x[5] = NAN;
        x[40] = INFINITY;
        x[200] = -INFINITY;
        cr_assert_eq(kr_quantize_row(ts[ti], x, q, 256), KR_OK);
        cr_assert_eq(kr_dequantize_row(ts[ti], q, y, 256), KR_OK);
        for (int i = 0; i < 256; i++)
            cr_assert(isfinite(y[i]), "%s y[%d] = %g", kr_dtype_name(ts[ti]), i, y[i]);
        cr_assert(fabsf(y[5]) < 0.2f, "%s NaN -> %g", kr_dtype_name(ts[ti]), y[5]);
        cr_assert(y[40] > 0.5f && y[200] < -0.5f, "%s inf saturates: %g %g", kr_dtype_name(ts[ti]), y[40], y[200]);
    }
}
