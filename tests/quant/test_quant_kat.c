/* Known-answer tests for the block formats. Every block is built here byte
 * by byte from the format definition (docs/QUANTS.md, ggml's
 * ggml-common.h), and the expected floats are computed here from the
 * format's formula — never by the code under test. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernrun/half.h"
#include "kernrun/quant.h"
#include "kr_test_leaks.h"

/* fp16 bit patterns of exact values */
#define H_0_5 0x3800u
#define H_0_25 0x3400u
#define H_1 0x3c00u
#define H_2 0x4000u
#define H_0_125 0x3000u
#define H_M1_5 0xbe00u /* -1.5 */
#define H_3 0x4200u

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

static uint64_t g_rng = 0x1234567887654321ull;
static uint32_t rnd(void)
{
    /* splitmix64 */
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)((z ^ (z >> 31)) >> 32);
}

static void check_dequant(kr_dtype t, const void *blk, const float *want, size_t n)
{
    float got[2 * KR_QK_K];
    cr_assert(n <= 2 * KR_QK_K);
    cr_assert_eq(kr_dequantize_row(t, blk, got, n), KR_OK);
    for (size_t i = 0; i < n; i++)
        cr_assert(got[i] == want[i] || (isnan(got[i]) && isnan(want[i])),
                  "%s element %zu: got %.9g want %.9g", kr_dtype_name(t), i, got[i], want[i]);
    /* vec_dot with the unit vector e_i picks element i (exact: one product;
     * only meaningful when the row is finite, since 0 * inf = NaN) */
    for (size_t i = 0; i < n; i++)
        if (!isfinite(want[i]))
            return;
    float x[2 * KR_QK_K] = {0};
    for (size_t i = 0; i < n; i += 7) {
        float out = NAN;
        x[i] = 1.0f;
        cr_assert_eq(kr_vec_dot_row(t, blk, x, n, &out), KR_OK);
        cr_assert(out == want[i], "%s vec_dot e_%zu: got %.9g want %.9g", kr_dtype_name(t), i, out,
                  want[i]);
        x[i] = 0.0f;
    }
}

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(kat, .fini = kr_test_leak_check);

Test(kat, f32_f16_bf16)
{
    /* f16: 1.0, -2.0, 0.5, 65504 (max), smallest subnormal 2^-24, inf, -0 */
    uint8_t h[7 * 2];
    const uint16_t hv[7] = {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x7c00, 0x8000};
    const float hw[7] = {1.0f, -2.0f, 0.5f, 65504.0f, 5.9604644775390625e-8f, INFINITY, -0.0f};
    for (int i = 0; i < 7; i++)
        put16(h + 2 * i, hv[i]);
    check_dequant(KR_DTYPE_F16, h, hw, 7);

    /* bf16 = upper half of an f32: 0x3f80 = 1.0, 0xc040 = -3.0, 0x4049 = 3.140625 */
    uint8_t b[3 * 2];
    put16(b, 0x3f80);
    put16(b + 2, 0xc040);
    put16(b + 4, 0x4049);
    const float bw[3] = {1.0f, -3.0f, 3.140625f};
    check_dequant(KR_DTYPE_BF16, b, bw, 3);

    const float f[5] = {1.5f, -2.25f, 0.0f, 1e30f, -7.0f};
    check_dequant(KR_DTYPE_F32, f, f, 5);
}

/* Q4_0 block with d = 0.5 and nibbles 0..15 -> (q-8)*0.5 */
Test(kat, q4_0)
{
    uint8_t blk[18];
    float want[32];
    put16(blk, H_0_5);
    for (int j = 0; j < 16; j++) {
        int lo = j, hi = 15 - j;
        blk[2 + j] = (uint8_t)(lo | (hi << 4));
        want[j] = (float)(lo - 8) * 0.5f;
        want[j + 16] = (float)(hi - 8) * 0.5f;
    }
    check_dequant(KR_DTYPE_Q4_0, blk, want, 32);
    cr_assert_eq(want[0], -4.0f); /* spot values by hand */
    cr_assert_eq(want[16], 3.5f);
}

/* Q4_1: d = 0.25, m = -1.5 -> q*0.25 - 1.5 */
Test(kat, q4_1)
{
    uint8_t blk[20];
    float want[32];
    put16(blk, H_0_25);
    put16(blk + 2, H_M1_5);
    for (int j = 0; j < 16; j++) {
        int lo = (3 * j) & 15, hi = (5 * j + 1) & 15;
        blk[4 + j] = (uint8_t)(lo | (hi << 4));
        want[j] = (float)lo * 0.25f - 1.5f;
        want[j + 16] = (float)hi * 0.25f - 1.5f;
    }
    check_dequant(KR_DTYPE_Q4_1, blk, want, 32);
}

/* Q5_0: 5-bit q = nibble | (bit j of qh) << 4; x = (q - 16) * d */
Test(kat, q5_0)
{
    uint8_t blk[22];
    float want[32];
    int q[32];
    for (int j = 0; j < 32; j++)
        q[j] = (j * 7 + 3) % 32;
    put16(blk, H_0_125);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        blk[6 + j] = (uint8_t)((q[j] & 15) | ((q[j + 16] & 15) << 4));
        qh |= (uint32_t)(q[j] >> 4) << j;
        qh |= (uint32_t)(q[j + 16] >> 4) << (j + 16);
    }
    for (int i = 0; i < 4; i++) /* little-endian */
        blk[2 + i] = (uint8_t)(qh >> (8 * i));
    for (int j = 0; j < 32; j++)
        want[j] = (float)(q[j] - 16) * 0.125f;
    check_dequant(KR_DTYPE_Q5_0, blk, want, 32);

    /* single-bit check: only qh bit 31 set, nibbles 0 -> x[31] = (16-16)*d = 0, others -16*d */
    memset(blk + 2, 0, 20);
    blk[5] = 0x80;
    for (int j = 0; j < 32; j++)
        want[j] = j == 31 ? 0.0f : -2.0f;
    check_dequant(KR_DTYPE_Q5_0, blk, want, 32);
}

/* Q5_1: x = q * d + m */
Test(kat, q5_1)
{
    uint8_t blk[24];
    float want[32];
    int q[32];
    for (int j = 0; j < 32; j++)
        q[j] = 31 - j;
    put16(blk, H_0_5);
    put16(blk + 2, H_1);
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        blk[8 + j] = (uint8_t)((q[j] & 15) | ((q[j + 16] & 15) << 4));
        qh |= (uint32_t)(q[j] >> 4) << j;
        qh |= (uint32_t)(q[j + 16] >> 4) << (j + 16);
    }
    for (int i = 0; i < 4; i++)
        blk[4 + i] = (uint8_t)(qh >> (8 * i));
    for (int j = 0; j < 32; j++)
        want[j] = (float)q[j] * 0.5f + 1.0f;
    check_dequant(KR_DTYPE_Q5_1, blk, want, 32);
    cr_assert_eq(want[0], 16.5f);
}

/* Q8_0: x = qs * d, qs signed */
Test(kat, q8_0)
{
    uint8_t blk[2 * 34];
    float want[64];
    for (int b = 0; b < 2; b++) {
        put16(blk + 34 * b, b ? H_2 : H_0_25);
        for (int j = 0; j < 32; j++) {
            int q = (j * 9 - 128 + 64 * b) % 128; /* spans -128..127 */
            if (j == 31)
                q = b ? 127 : -128;
            blk[34 * b + 2 + j] = (uint8_t)(int8_t)q;
            want[32 * b + j] = (float)q * (b ? 2.0f : 0.25f);
        }
    }
    check_dequant(KR_DTYPE_Q8_0, blk, want, 64);
}

/* ---- K-quants: blocks built from chosen scales/mins/quants ---- */

/* Q2_K: 16 groups of 16; scales[g] = sc | (mn << 4); element e: half h = e/128,
 * r = e%128, shift s = r/32, l = r%32 -> qs[32h + l] bits 2s..2s+1; group
 * g = e/16. x = d*sc*q - dmin*mn. */
Test(kat, q2_K)
{
    uint8_t blk[84];
    float want[256];
    int q[256], sc[16], mn[16];
    memset(blk, 0, sizeof blk);
    for (int g = 0; g < 16; g++) {
        sc[g] = (g * 5 + 1) & 15;
        mn[g] = (g * 3 + 2) & 15;
        blk[g] = (uint8_t)(sc[g] | (mn[g] << 4));
    }
    for (int e = 0; e < 256; e++) {
        q[e] = (int)(rnd() & 3);
        int h = e / 128, r = e % 128, s = r / 32, l = r % 32;
        blk[16 + 32 * h + l] |= (uint8_t)(q[e] << (2 * s));
    }
    put16(blk + 80, H_0_5);  /* d */
    put16(blk + 82, H_0_25); /* dmin */
    for (int e = 0; e < 256; e++)
        want[e] = 0.5f * (float)sc[e / 16] * (float)q[e] - 0.25f * (float)mn[e / 16];
    check_dequant(KR_DTYPE_Q2_K, blk, want, 256);
}

/* Q3_K: quants q in 0..7 stored as low 2 bits (as Q2_K) plus the high bit in
 * hmask[e%32] bit (e/32); the value is q - 4 (hmask bit set: low bits as is,
 * clear: low bits - 4). 16 six-bit scales sc: low nibble of scale g in
 * scales[g] (g<8) or high nibble of scales[g-8]; top 2 bits in
 * scales[8 + g%4] at bit 2*(g/4). x = d * (sc - 32) * (q - 4). */
Test(kat, q3_K)
{
    uint8_t blk[110];
    float want[256];
    int q[256], sc[16];
    memset(blk, 0, sizeof blk);
    for (int g = 0; g < 16; g++) {
        sc[g] = (g * 13 + 7) & 63; /* covers values below and above 32 */
        if (g < 8)
            blk[96 + g] |= (uint8_t)(sc[g] & 15);
        else
            blk[96 + g - 8] |= (uint8_t)((sc[g] & 15) << 4);
        blk[96 + 8 + g % 4] |= (uint8_t)((sc[g] >> 4) << (2 * (g / 4)));
    }
    for (int e = 0; e < 256; e++) {
        q[e] = (int)(rnd() & 7);
        int h = e / 128, r = e % 128, s = r / 32, l = r % 32;
        blk[32 + 32 * h + l] |= (uint8_t)((q[e] & 3) << (2 * s));
        if (q[e] & 4)
            blk[e % 32] |= (uint8_t)(1u << (e / 32));
    }
    put16(blk + 108, H_0_25);
    for (int e = 0; e < 256; e++)
        want[e] = 0.25f * (float)(sc[e / 16] - 32) * (float)(q[e] - 4);
    check_dequant(KR_DTYPE_Q3_K, blk, want, 256);
}

/* Q4_K/Q5_K scale packing: 8 (sc, mn) pairs of 6 bits in 12 bytes.
 * j < 4: bytes[j] low 6 = sc, bytes[j+4] low 6 = mn;
 * j >= 4: bytes[j+4] = (sc & 15) | (mn & 15) << 4, top 2 bits of sc in
 * bytes[j-4] bits 6-7, top 2 bits of mn in bytes[j] bits 6-7. */
static void pack_k4_scales(uint8_t *s, const int *sc, const int *mn)
{
    memset(s, 0, 12);
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            s[j] |= (uint8_t)sc[j];
            s[j + 4] |= (uint8_t)mn[j];
        } else {
            s[j + 4] = (uint8_t)((sc[j] & 15) | ((mn[j] & 15) << 4));
            s[j - 4] |= (uint8_t)((sc[j] >> 4) << 6);
            s[j] |= (uint8_t)((mn[j] >> 4) << 6);
        }
    }
}

Test(kat, q4_K)
{
    uint8_t blk[144];
    float want[256];
    int q[256], sc[8], mn[8];
    memset(blk, 0, sizeof blk);
    for (int g = 0; g < 8; g++) {
        sc[g] = (g * 23 + 5) & 63;
        mn[g] = (g * 41 + 60) & 63;
    }
    sc[7] = 63; /* all 6 bits */
    mn[4] = 63;
    pack_k4_scales(blk + 4, sc, mn);
    /* element e: chunk c = e/64, r = e%64: low nibble of qs[32c + r] for r < 32, else high of qs[32c + r-32] */
    for (int e = 0; e < 256; e++) {
        q[e] = (int)(rnd() & 15);
        int c = e / 64, r = e % 64;
        if (r < 32)
            blk[16 + 32 * c + r] |= (uint8_t)q[e];
        else
            blk[16 + 32 * c + r - 32] |= (uint8_t)(q[e] << 4);
    }
    put16(blk, H_0_125); /* d */
    put16(blk + 2, H_0_5); /* dmin */
    for (int e = 0; e < 256; e++)
        want[e] = 0.125f * (float)sc[e / 32] * (float)q[e] - 0.5f * (float)mn[e / 32];
    check_dequant(KR_DTYPE_Q4_K, blk, want, 256);
}

/* Q5_K: as Q4_K plus qh[32]: the 5th bit of element e is bit (e/32) of qh[e%32]. */
Test(kat, q5_K)
{
    uint8_t blk[176];
    float want[256];
    int q[256], sc[8], mn[8];
    memset(blk, 0, sizeof blk);
    for (int g = 0; g < 8; g++) {
        sc[g] = (g * 29 + 11) & 63;
        mn[g] = (g * 17 + 3) & 63;
    }
    pack_k4_scales(blk + 4, sc, mn);
    for (int e = 0; e < 256; e++) {
        q[e] = (int)(rnd() & 31);
        int c = e / 64, r = e % 64;
        if (r < 32)
            blk[48 + 32 * c + r] |= (uint8_t)(q[e] & 15);
        else
            blk[48 + 32 * c + r - 32] |= (uint8_t)((q[e] & 15) << 4);
        if (q[e] & 16)
            blk[16 + e % 32] |= (uint8_t)(1u << (e / 32));
    }
    put16(blk, H_0_25);
    put16(blk + 2, H_1);
    for (int e = 0; e < 256; e++)
        want[e] = 0.25f * (float)sc[e / 32] * (float)q[e] - 1.0f * (float)mn[e / 32];
    check_dequant(KR_DTYPE_Q5_K, blk, want, 256);
}

/* Q6_K: 6-bit q, x = d * scales[e/16] * (q - 32). Element e: half h = e/128,
 * r = e%128, quarter k = r/32, l = r%32: low 4 bits in ql[64h + l + 32*(k&1)]
 * (low nibble for k < 2, high for k >= 2), high 2 bits at bit 2k of qh[32h + l]. */
Test(kat, q6_K)
{
    uint8_t blk[210];
    float want[256];
    int q[256];
    int8_t sc[16];
    memset(blk, 0, sizeof blk);
    for (int g = 0; g < 16; g++) {
        sc[g] = (int8_t)((g * 37) % 256 - 128);
        blk[192 + g] = (uint8_t)sc[g];
    }
    for (int e = 0; e < 256; e++) {
        q[e] = (int)(rnd() & 63);
        int h = e / 128, r = e % 128, k = r / 32, l = r % 32;
        uint8_t *ql = blk + 64 * h + l + 32 * (k & 1);
        *ql |= (uint8_t)(k < 2 ? (q[e] & 15) : ((q[e] & 15) << 4));
        blk[128 + 32 * h + l] |= (uint8_t)((q[e] >> 4) << (2 * k));
    }
    put16(blk + 208, H_0_125);
    for (int e = 0; e < 256; e++)
        want[e] = 0.125f * (float)sc[e / 16] * (float)(q[e] - 32);
    check_dequant(KR_DTYPE_Q6_K, blk, want, 256);
}

/* Two consecutive super-blocks: the second block's bytes start at 210. */
Test(kat, q6_K_two_blocks_all_max)
{
    uint8_t blk[420];
    float want[512];
    memset(blk, 0xff, sizeof blk); /* q = 63, scales = -1 */
    put16(blk + 208, H_1);
    put16(blk + 418, H_3);
    for (int e = 0; e < 512; e++)
        want[e] = (e < 256 ? 1.0f : 3.0f) * -1.0f * 31.0f;
    check_dequant(KR_DTYPE_Q6_K, blk, want, 512);
}

/* Quantizer bytes worked out by hand from ggml's reference arithmetic. */
Test(kat, quantize_q4_0_bytes)
{
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = (float)(j - 16); /* max |x| is x[0] = -16 -> d = -16 / -8 = 2 */
    uint8_t blk[18];
    cr_assert_eq(kr_quantize_row(KR_DTYPE_Q4_0, x, blk, 32), KR_OK);
    cr_assert_eq(blk[0] | (blk[1] << 8), H_2);
    /* q = min(15, trunc(x/2 + 8.5)) = trunc(j/2 + 0.5) */
    for (int j = 0; j < 16; j++) {
        int q0 = (j + 1) / 2, q1 = (j + 16 + 1) / 2 > 15 ? 15 : (j + 16 + 1) / 2;
        cr_assert_eq(blk[2 + j], q0 | (q1 << 4), "byte %d", j);
    }
}

Test(kat, quantize_q8_0_bytes)
{
    float x[32] = {0};
    x[0] = 127.0f; /* d = 1 */
    x[1] = -2.5f;  /* roundf: away from zero -> -3 */
    x[2] = 2.5f;
    x[3] = 0.49f;
    x[4] = -127.0f;
    uint8_t blk[34];
    cr_assert_eq(kr_quantize_row(KR_DTYPE_Q8_0, x, blk, 32), KR_OK);
    cr_assert_eq(blk[0] | (blk[1] << 8), H_1);
    cr_assert_eq((int8_t)blk[2], 127);
    cr_assert_eq((int8_t)blk[3], -3);
    cr_assert_eq((int8_t)blk[4], 3);
    cr_assert_eq((int8_t)blk[5], 0);
    cr_assert_eq((int8_t)blk[6], -127);
}

Test(kat, quantize_q4_1_bytes)
{
    float x[32];
    for (int j = 0; j < 32; j++)
        x[j] = 1.0f + 0.25f * (float)(j % 16); /* min 1, max 4.75 -> d = 0.25 */
    uint8_t blk[20];
    cr_assert_eq(kr_quantize_row(KR_DTYPE_Q4_1, x, blk, 32), KR_OK);
    cr_assert_eq(blk[0] | (blk[1] << 8), H_0_25);
    cr_assert_eq(blk[2] | (blk[3] << 8), H_1);
    for (int j = 0; j < 16; j++)
        cr_assert_eq(blk[4 + j], j | (j << 4), "byte %d", j);
}

Test(kat, type_sizes)
{
    /* block sizes/bytes from ggml-common.h */
    const struct { kr_dtype t; size_t bs, ts; } tab[] = {
        {KR_DTYPE_F32, 1, 4}, {KR_DTYPE_F16, 1, 2}, {KR_DTYPE_BF16, 1, 2},
        {KR_DTYPE_Q4_0, 32, 18}, {KR_DTYPE_Q4_1, 32, 20}, {KR_DTYPE_Q5_0, 32, 22},
        {KR_DTYPE_Q5_1, 32, 24}, {KR_DTYPE_Q8_0, 32, 34}, {KR_DTYPE_Q2_K, 256, 84},
        {KR_DTYPE_Q3_K, 256, 110}, {KR_DTYPE_Q4_K, 256, 144}, {KR_DTYPE_Q5_K, 256, 176},
        {KR_DTYPE_Q6_K, 256, 210},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++) {
        cr_assert_eq(kr_quant_block_size(tab[i].t), tab[i].bs);
        cr_assert_eq(kr_quant_type_size(tab[i].t), tab[i].ts);
        cr_assert(kr_quant_can_dequantize(tab[i].t));
    }
    cr_assert_eq(kr_quant_block_size(KR_DTYPE_I32), 0);
    cr_assert_not(kr_quant_can_dequantize((kr_dtype)4));
    cr_assert_not(kr_quant_can_dequantize((kr_dtype)-3));
    cr_assert_not(kr_quant_can_dequantize((kr_dtype)1000));
    cr_assert_not(kr_quant_can_quantize(KR_DTYPE_Q2_K));
    cr_assert(kr_quant_can_quantize(KR_DTYPE_Q6_K));
}

/* The library's fast fp16 decoder against core's reference converter, for
 * all 65536 bit patterns (through dequantize of an F16 row). */
Test(kat, f16_all_patterns)
{
    static uint8_t h[65536 * 2];
    static float y[65536];
    for (uint32_t i = 0; i < 65536; i++) {
        h[2 * i] = (uint8_t)(i & 0xff);
        h[2 * i + 1] = (uint8_t)(i >> 8);
    }
    cr_assert_eq(kr_dequantize_row(KR_DTYPE_F16, h, y, 65536), KR_OK);
    for (uint32_t i = 0; i < 65536; i++) {
        const float want = kr_fp16_to_fp32((uint16_t)i);
        uint32_t a, b;
        memcpy(&a, &y[i], 4);
        memcpy(&b, &want, 4);
        cr_assert_eq(a, b, "fp16 0x%04x: got 0x%08x want 0x%08x", i, a, b);
    }
}
