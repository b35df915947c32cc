/* Host check of the GEMM kernels' tile code (no GPU).
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
 * untouched.
 *
 * gemm_block: the whole tensor-core kernel emulated on the host from the same
 * pieces (A/W loaders and stores, fragment loads, C store, warp origins; only
 * the mma itself is emulated here, from the PTX ISA's m16n8k16 fragment
 * layout, and the phases run thread after thread) vs the double reference of
 * the fp16-rounded inputs, at odd sizes: checks every index of the kernel
 * except the hardware mma. Built twice, KR_GM_BM 128 and 64. gemm_block::simt_f32
 * does the same for the FP32 SIMT kernel (no warp-level operations: exact). */
#include <criterion/criterion.h>
#include <math.h>
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
typedef struct uint2 {
    unsigned x, y;
} uint2;
static inline uint2 make_uint2(unsigned x, unsigned y)
{
    uint2 v = {x, y};
    return v;
}
typedef struct float4 {
    float x, y, z, w;
} float4;
static inline float4 make_float4(float x, float y, float z, float w)
{
    float4 v = {x, y, z, w};
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

/* ---- whole-kernel emulation ---------------------------------------------------- */

static float h_lo(kr_gm_u32 v) { return kr_fp16_to_fp32((uint16_t)(v & 0xffffu)); }
static float h_hi(kr_gm_u32 v) { return kr_fp16_to_fp32((uint16_t)(v >> 16)); }

/* c (16x8) += A (16x16) B (16x8) for a warp, from per-lane fragments, per the
 * PTX ISA layout of mma.m16n8k16 .f16/.f32 (g = lane/4, t = lane%4). */
static void emu_mma(float c[32][4], kr_gm_u32 a[32][4], kr_gm_u32 b[32][2])
{
    float Am[16][16], Bm[16][8];
    for (int l = 0; l < 32; l++) {
        int g = l >> 2, t = l & 3;
        Am[g][2 * t] = h_lo(a[l][0]), Am[g][2 * t + 1] = h_hi(a[l][0]);
        Am[g + 8][2 * t] = h_lo(a[l][1]), Am[g + 8][2 * t + 1] = h_hi(a[l][1]);
        Am[g][2 * t + 8] = h_lo(a[l][2]), Am[g][2 * t + 9] = h_hi(a[l][2]);
        Am[g + 8][2 * t + 8] = h_lo(a[l][3]), Am[g + 8][2 * t + 9] = h_hi(a[l][3]);
        Bm[2 * t][g] = h_lo(b[l][0]), Bm[2 * t + 1][g] = h_hi(b[l][0]);
        Bm[2 * t + 8][g] = h_lo(b[l][1]), Bm[2 * t + 9][g] = h_hi(b[l][1]);
    }
    for (int l = 0; l < 32; l++) {
        int g = l >> 2, t = l & 3;
        for (int e = 0; e < 4; e++) {
            int r = g + 8 * (e >> 1), col = 2 * t + (e & 1);
            float sum = 0;
            for (int k = 0; k < 16; k++)
                sum += Am[r][k] * Bm[k][col];
            c[l][e] += sum;
        }
    }
}

static void emu_gemm(int wt, const float *A, kr_gm_i64 lda, const uint8_t *W, kr_gm_i64 ldw, float *C, kr_gm_i64 ldc,
                     int M, int N, int K)
{
    static _Alignas(16) uint16_t As[KR_GM_BM * KR_GM_LDS], Ws[KR_GM_BN * KR_GM_LDS];
    static float acc[8][KR_GM_MT][KR_GM_NT][32][4];
    static float4 ar[KR_GM_THREADS][KR_GM_AV];
    static kr_gm_wraw wr[KR_GM_THREADS];
    for (int m0 = 0; m0 < M; m0 += KR_GM_BM) {
        for (int n0 = 0; n0 < N; n0 += KR_GM_BN) {
            memset(acc, 0, sizeof acc);
            for (int k0 = 0; k0 < K; k0 += KR_GM_BK) {
                for (int tid = 0; tid < KR_GM_THREADS; tid++) {
                    kr_gm_load_a(ar[tid], A, lda, M, m0, k0, tid);
                    kr_gm_load_w(wt, &wr[tid], W, ldw, N, n0, k0, tid);
                }
                for (int tid = 0; tid < KR_GM_THREADS; tid++) {
                    kr_gm_store_a(ar[tid], As, tid);
                    kr_gm_store_w(wt, &wr[tid], Ws, tid);
                }
                for (int kk = 0; kk < KR_GM_BK; kk += 16) {
                    for (int warp = 0; warp < 8; warp++) {
                        int wm, wn;
                        kr_gm_warp_origin(warp, &wm, &wn);
                        for (int i = 0; i < KR_GM_MT; i++) {
                            for (int j = 0; j < KR_GM_NT; j++) {
                                kr_gm_u32 a[32][4], b[32][2];
                                for (int l = 0; l < 32; l++) {
                                    kr_gm_frag_a(As, wm + 16 * i, kk, l, a[l]);
                                    kr_gm_frag_b(Ws, wn + 8 * j, kk, l, b[l]);
                                }
                                emu_mma(acc[warp][i][j], a, b);
                            }
                        }
                    }
                }
            }
            for (int warp = 0; warp < 8; warp++) {
                int wm, wn;
                kr_gm_warp_origin(warp, &wm, &wn);
                for (int i = 0; i < KR_GM_MT; i++)
                    for (int j = 0; j < KR_GM_NT; j++)
                        for (int l = 0; l < 32; l++)
                            kr_gm_store_c(C, ldc, M, N, m0 + wm + 16 * i, n0 + wn + 8 * j, l, acc[warp][i][j][l]);
            }
        }
    }
}

static void check_block(kr_dtype wt, int M, int N, int K, int lda_pad, int ldc_pad)
{
    uint64_t rb = 0;
    cr_assert_eq(kr_quant_row_size(wt, (uint64_t)K, &rb, NULL), KR_OK);
    size_t ldw = ((size_t)rb + 15) & ~(size_t)15, lda = (size_t)(K + lda_pad), ldc = (size_t)(N + ldc_pad);
    uint8_t *w = aligned_alloc(16, (size_t)N * ldw);
    float *a = aligned_alloc(16, ((size_t)M * lda * sizeof(float) + 15) & ~(size_t)15);
    float *deq = malloc((size_t)N * K * sizeof *deq), *src = malloc((size_t)K * sizeof *src);
    float *c = malloc(((size_t)M * ldc + 16) * sizeof *c);
    cr_assert(w && a && deq && src && c);
    memset(w, 0, (size_t)N * ldw);
    for (int r = 0; r < N; r++) {
        for (int i = 0; i < K; i++)
            src[i] = rng_f(-1.0f, 1.0f);
        cr_assert_eq(kr_quantize_row(wt, src, w + (size_t)r * ldw, (size_t)K), KR_OK);
        cr_assert_eq(kr_dequantize_row(wt, w + (size_t)r * ldw, deq + (size_t)r * K, (size_t)K), KR_OK);
    }
    for (size_t i = 0; i < (size_t)M * lda; i++)
        a[i] = rng_f(-2.0f, 2.0f);
    memset(c, 0xFF, ((size_t)M * ldc + 16) * sizeof *c);
    emu_gemm((int)wt, a, (kr_gm_i64)lda, w, (kr_gm_i64)ldw, c, (kr_gm_i64)ldc, M, N, K);
    double num = 0, den = 0;
    size_t unwritten = 0, outside = 0, over_bound = 0;
    for (int i = 0; i < M; i++) {
        for (size_t j = 0; j < ldc; j++) {
            uint32_t u;
            memcpy(&u, &c[(size_t)i * ldc + j], 4);
            if ((int)j >= N) {
                outside += u != 0xFFFFFFFFu;
                continue;
            }
            if (u == 0xFFFFFFFFu) {
                unwritten++;
                continue;
            }
            double ref = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double p = (double)kr_fp16_to_fp32(kr_fp32_to_fp16(a[(size_t)i * lda + k])) *
                           kr_fp16_to_fp32(kr_fp32_to_fp16(deq[(size_t)j * K + k]));
                ref += p;
                mag += fabs(p);
            }
            double e = c[(size_t)i * ldc + j] - ref;
            num += e * e;
            den += ref * ref;
            /* fp32 accumulation of K exact products: |e| <= K * 2^-24 * sum|p| */
            over_bound += fabs(e) > (double)K * 0x1p-24 * mag;
        }
    }
    for (int i = 0; i < 16; i++) {
        uint32_t u;
        memcpy(&u, &c[(size_t)M * ldc + i], 4);
        outside += u != 0xFFFFFFFFu;
    }
    cr_expect_eq(unwritten, 0, "type %d M %d N %d K %d: %zu outputs unwritten", (int)wt, M, N, K, unwritten);
    cr_expect_eq(outside, 0, "type %d M %d N %d K %d: %zu writes outside C", (int)wt, M, N, K, outside);
    cr_expect_eq(over_bound, 0, "type %d M %d N %d K %d (BM %d): %zu outputs beyond the fp32 accumulation bound",
                 (int)wt, M, N, K, KR_GM_BM, over_bound);
    /* NMSE is a stable summary only over many outputs: a lone output whose
     * terms cancel can have a large relative error within the bound above. */
    if ((size_t)M * (size_t)N >= 256)
        cr_expect_leq(num / den, 1e-10, "type %d M %d N %d K %d (BM %d): NMSE %g", (int)wt, M, N, K, KR_GM_BM,
                      num / den);
    free(w);
    free(a);
    free(deq);
    free(src);
    free(c);
}

Test(gemm_block, all_types)
{
    g_rng = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ 0x2545F4914F6CDD1Dull;
    const kr_dtype types[] = {KR_DTYPE_F16, KR_DTYPE_Q4_0, KR_DTYPE_Q4_1, KR_DTYPE_Q8_0, KR_DTYPE_Q4_K, KR_DTYPE_Q6_K};
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        int kq = (int)kr_quant_block_size(types[t]) == 256 ? 256 : 64;
        check_block(types[t], 1, 1, kq, 0, 0);
        check_block(types[t], 7, 5, kq, 4, 3);
        check_block(types[t], KR_GM_BM + 3, 131, 2 * kq, 8, 1); /* two tiles each way, ragged */
    }
}

/* ---- the FP32 SIMT kernel, emulated from its pieces ------------------------------ */

static void emu_simt(const float *A, kr_gm_i64 lda, const uint8_t *W, kr_gm_i64 ldw, float *C, kr_gm_i64 ldc, int M,
                     int N, int K)
{
    static _Alignas(16) float As[KR_GS_BK * KR_GS_LD], Bs[KR_GS_BK * KR_GS_LD];
    static float acc[KR_GM_THREADS][8][8];
    static float4 ra[KR_GM_THREADS], rw[KR_GM_THREADS];
    for (int m0 = 0; m0 < M; m0 += 128) {
        for (int n0 = 0; n0 < N; n0 += 128) {
            memset(acc, 0, sizeof acc);
            for (int k0 = 0; k0 < K; k0 += KR_GS_BK) {
                for (int tid = 0; tid < KR_GM_THREADS; tid++)
                    kr_gs_load(A, lda, W, ldw, M, N, m0, n0, k0, tid, &ra[tid], &rw[tid]);
                for (int tid = 0; tid < KR_GM_THREADS; tid++)
                    kr_gs_store(&ra[tid], &rw[tid], As, Bs, tid);
                for (int tid = 0; tid < KR_GM_THREADS; tid++)
                    kr_gs_step(As, Bs, tid, acc[tid]);
            }
            for (int tid = 0; tid < KR_GM_THREADS; tid++)
                kr_gs_store_c(C, ldc, M, N, m0, n0, tid, acc[tid]);
        }
    }
}

Test(gemm_block, simt_f32)
{
    g_rng = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ 0x61C8864680B583EBull;
    const int sizes[][5] = {{1, 1, 32, 0, 0}, {7, 5, 64, 4, 3}, {131, 257, 96, 8, 1}, {128, 128, 32, 0, 0}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int M = sizes[s][0], N = sizes[s][1], K = sizes[s][2];
        size_t lda = (size_t)(K + sizes[s][3]), ldc = (size_t)(N + sizes[s][4]), ldw = (size_t)K * 4;
        float *a = aligned_alloc(16, (size_t)M * lda * sizeof(float));
        float *w = aligned_alloc(16, (size_t)N * ldw);
        float *c = malloc(((size_t)M * ldc + 16) * sizeof *c);
        cr_assert(a && w && c);
        for (size_t i = 0; i < (size_t)M * lda; i++)
            a[i] = rng_f(-2.0f, 2.0f);
        for (size_t i = 0; i < (size_t)N * K; i++)
            w[i] = rng_f(-1.0f, 1.0f);
        memset(c, 0xFF, ((size_t)M * ldc + 16) * sizeof *c);
        emu_simt(a, (kr_gm_i64)lda, (const uint8_t *)w, (kr_gm_i64)ldw, c, (kr_gm_i64)ldc, M, N, K);
        double num = 0, den = 0;
        size_t unwritten = 0, outside = 0, over_bound = 0;
        for (int i = 0; i < M; i++) {
            for (size_t j = 0; j < ldc; j++) {
                uint32_t u;
                memcpy(&u, &c[(size_t)i * ldc + j], 4);
                if ((int)j >= N) {
                    outside += u != 0xFFFFFFFFu;
                    continue;
                }
                if (u == 0xFFFFFFFFu) {
                    unwritten++;
                    continue;
                }
                double ref = 0, mag = 0;
                for (int k = 0; k < K; k++) {
                    double p = (double)a[(size_t)i * lda + k] * w[(size_t)j * K + k];
                    ref += p;
                    mag += fabs(p);
                }
                double e = c[(size_t)i * ldc + j] - ref;
                num += e * e;
                den += ref * ref;
                over_bound += fabs(e) > (double)K * 0x1p-24 * mag;
            }
        }
        for (int i = 0; i < 16; i++) {
            uint32_t u;
            memcpy(&u, &c[(size_t)M * ldc + i], 4);
            outside += u != 0xFFFFFFFFu;
        }
        cr_expect_eq(unwritten, 0, "M %d N %d K %d: %zu unwritten", M, N, K, unwritten);
        cr_expect_eq(outside, 0, "M %d N %d K %d: %zu writes outside C", M, N, K, outside);
        cr_expect_eq(over_bound, 0, "M %d N %d K %d: %zu outputs beyond the fp32 accumulation bound", M, N, K,
                     over_bound);
        if ((size_t)M * (size_t)N >= 256)
            cr_expect_leq(num / den, 1e-12, "M %d N %d K %d: NMSE %g", M, N, K, num / den);
        free(a);
        free(w);
        free(c);
    }
}
