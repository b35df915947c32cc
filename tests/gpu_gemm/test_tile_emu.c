/* Host check of the GEMM kernels' weight-tile loaders (no GPU).
 *
 * kernels/gemm/gemm.cu keeps its tile code (kr_gm_load_w, which gathers one
 * thread's raw bytes of a 32-wide K step, and kr_gm_store_w, which decodes them
 * into the fp16 shared tile) in plain C; with KR_GM_HOST_EMU the kernels are
 * hidden and it compiles here. We run all 256 "threads" of a block for every
 * K step of random quantized rows and compare each tile element with the CPU
 * dequantization of the same bytes (models/quant kr_dequantize_row, written
 * from the format definitions) rounded to fp16: equal, or one fp16 ulp apart
 * where the two compute d*q - m in a different order (then at most 1% of the
 * elements). Rows past N must be +0 or -0 and the row padding (columns 32..39)
 * untouched. */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernrun/half.h"
#include "kernrun/quant.h"

/* What gemm.cu expects from CUDA, on the host. */
#define KR_GM_HOST_EMU 1
#define __device__
#define __forceinline__ static inline
typedef struct uint4 {
    unsigned x, y, z, w;
} uint4;
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w)
{
    uint4 v = {x, y, z, w};
    return v;
}
static inline float kr_gm_h2f(unsigned short h) { return kr_fp16_to_fp32(h); }
static inline unsigned short kr_gm_f2h(float f) { return kr_fp32_to_fp16(f); }

#include "gemm.cu"

#define SENTINEL 0xAAAAu

static uint64_t g_rng;

static float rng_f(float lo, float hi)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return lo + (hi - lo) * (float)((g_rng >> 40) * 0x1p-24);
}

/* fp16 bit patterns as an ordered integer line (for ulp distances). */
static int32_t h_ord(uint16_t h) { return (h & 0x8000u) ? -(int32_t)(h & 0x7fffu) : (int32_t)h; }

/* One tile row band [n0, n0 + 128) of an N-row matrix of type wt, all K steps. */
static void check_type(kr_dtype wt, int N, int n0, int K)
{
    uint64_t rb = 0;
    cr_assert_eq(kr_quant_row_size(wt, (uint64_t)K, &rb, NULL), KR_OK);
    /* 16-byte aligned base and row stride (F16's 16-byte loads need it) */
    size_t ldw = ((size_t)rb + 15) & ~(size_t)15;
    uint8_t *w = aligned_alloc(16, (size_t)N * ldw);
    float *src = malloc((size_t)K * sizeof *src), *deq = malloc((size_t)N * K * sizeof *deq);
    cr_assert(w && src && deq);
    memset(w, 0, (size_t)N * ldw);
    for (int r = 0; r < N; r++) {
        float sc = rng_f(0.1f, 3.0f);
        for (int i = 0; i < K; i++)
            src[i] = sc * rng_f(-1.0f, 1.0f) + (r % 3 == 0 ? 0.5f * sc : 0.0f); /* some rows with an offset */
        cr_assert_eq(kr_quantize_row(wt, src, w + (size_t)r * ldw, (size_t)K), KR_OK);
        cr_assert_eq(kr_dequantize_row(wt, w + (size_t)r * ldw, deq + (size_t)r * K, (size_t)K), KR_OK);
    }
    static _Alignas(16) uint16_t tile[KR_GM_BN * KR_GM_LDS];
    size_t off1 = 0, total = 0;
    for (int k0 = 0; k0 < K; k0 += KR_GM_BK) {
        for (size_t i = 0; i < sizeof tile / sizeof tile[0]; i++)
            tile[i] = SENTINEL;
        for (int tid = 0; tid < KR_GM_THREADS; tid++) {
            kr_gm_wraw raw;
            memset(&raw, 0x5A, sizeof raw); /* garbage: the loader must set what the store reads */
            kr_gm_load_w((int)wt, &raw, w, (kr_gm_i64)ldw, N, n0, k0, tid);
            kr_gm_store_w((int)wt, &raw, tile, tid);
        }
        for (int row = 0; row < KR_GM_BN; row++) {
            for (int c = 0; c < KR_GM_LDS; c++) {
                uint16_t got = tile[row * KR_GM_LDS + c];
                if (c >= KR_GM_BK) {
                    cr_assert_eq(got, SENTINEL, "type %d k0 %d row %d: padding column %d written", (int)wt, k0,
                                 row, c);
                    continue;
                }
                int n = n0 + row;
                uint16_t want = n < N ? kr_fp32_to_fp16(deq[(size_t)n * K + k0 + c]) : 0;
                if (n >= N) {
                    cr_assert((got & 0x7fffu) == 0, "type %d k0 %d: row %d past N %d is 0x%04x, not +-0", (int)wt, k0,
                              n, N, got);
                    continue;
                }
                int32_t dist = abs(h_ord(got) - h_ord(want));
                total++;
                off1 += dist != 0;
                cr_assert_leq(dist, 1,
                              "type %d row %d k %d: tile 0x%04x (%g), CPU 0x%04x (%g) (%g before rounding)",
                              (int)wt, n, k0 + c, got, kr_fp16_to_fp32(got), want, kr_fp16_to_fp32(want),
                              deq[(size_t)n * K + k0 + c]);
            }
        }
    }
    cr_expect_gt(total, 0);
    cr_expect_leq(off1 * 100, total, "type %d: %zu of %zu elements one ulp off", (int)wt, off1, total);
    free(w);
    free(src);
    free(deq);
}

static void check_all_bands(kr_dtype wt)
{
    g_rng = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ 0x9E3779B97F4A7C15ull;
    check_type(wt, 100, 0, 512);  /* rows 100..127 of the band are past N */
    check_type(wt, 200, 128, 768); /* second band: rows 128..199, then zeros */
    check_type(wt, 256, 128, 256); /* full band */
}

Test(gemm_tile, f16) { check_all_bands(KR_DTYPE_F16); }
Test(gemm_tile, q4_0) { check_all_bands(KR_DTYPE_Q4_0); }
Test(gemm_tile, q4_1) { check_all_bands(KR_DTYPE_Q4_1); }
Test(gemm_tile, q8_0) { check_all_bands(KR_DTYPE_Q8_0); }
Test(gemm_tile, q4_k) { check_all_bands(KR_DTYPE_Q4_K); }
Test(gemm_tile, q6_k) { check_all_bands(KR_DTYPE_Q6_K); }
