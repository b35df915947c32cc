/* Host emulation of kernels/prefill/flash_attn.cu (no GPU): the kernel
 * source is compiled as C with KR_FA_HOST_EMU and run with one pthread per
 * CUDA thread (128 per block, blocks one after another); __syncthreads is a
 * barrier, __shfl_xor_sync, ldmatrix and mma.sync m16n8k16 exchange through
 * per-warp arrays between two warp barriers (the mma computes each lane's C fragment
 * from the A/B fragments of all 32 lanes with the PTX fragment layout, fp32
 * accumulation), fp16 conversions are kernrun/half.h's round-to-nearest-even.
 * Checked against a double reference on the fp16 (or Q8_0) K/V values like
 * tests/gpu_prefill's GPU test: worst (token, head) row error <= 1e-4,
 * NMSE <= 1e-5; unseen cache rows hold NaN, out padding stays NaN.
 * Built once per head_dim (-DKR_FA_D, meson), with -DKR_FA_Q8=1 and with
 * -DKR_FA_PIPE=1 (cp.async as a plain copy: the stage bookkeeping is checked,
 * not the asynchrony). */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/half.h"

/* ---- device pieces for the kernel source -------------------------------------- */

typedef struct { float x, y, z, w; } float4;
typedef struct { float x, y; } float2;
typedef struct { unsigned int x, y, z, w; } uint4;
typedef struct { unsigned int x, y; } uint2;
static inline float4 make_float4(float a, float b, float c, float d) { return (float4){a, b, c, d}; }
static inline float2 make_float2(float a, float b) { return (float2){a, b}; }
static inline uint4 make_uint4(unsigned a, unsigned b, unsigned c, unsigned d) { return (uint4){a, b, c, d}; }

typedef struct emu_dim3 { unsigned x, y, z; } emu_dim3;
static _Thread_local emu_dim3 threadIdx, blockIdx;

#define KR_FA_KERNEL static void
#define KR_FA_SHARED static _Alignas(16)
#define KR_FA_UNROLL
#define KR_FA_INL static inline
#define min(a, b) ((a) < (b) ? (a) : (b))
#define max(a, b) ((a) > (b) ? (a) : (b))

static pthread_barrier_t g_block_bar, g_warp_bar[4];
#define __syncthreads() pthread_barrier_wait(&g_block_bar)

typedef unsigned short kr_fa_u16_emu;
static inline float kr_fa_neg_inf(void) { return -INFINITY; }
static inline kr_fa_u16_emu kr_fa_f2h(float f) { return kr_fp32_to_fp16(f); }
static inline float kr_fa_h2f(kr_fa_u16_emu h) { return kr_fp16_to_fp32(h); }

static float g_xch[4][32];
static inline float __shfl_xor_sync(unsigned mask, float v, int o)
{
    (void)mask;
    const int w = (int)threadIdx.x >> 5, l = (int)threadIdx.x & 31;
    g_xch[w][l] = v;
    pthread_barrier_wait(&g_warp_bar[w]);
    float r = g_xch[w][l ^ o];
    pthread_barrier_wait(&g_warp_bar[w]);
    return r;
}

static unsigned g_fa[4][32][4], g_fb[4][32][2];

static float emu_half(unsigned reg, int hi) { return kr_fp16_to_fp32((uint16_t)(hi ? reg >> 16 : reg & 0xffffu)); }

/* A (16 x 16, row): lane (r%8)*4 + (k%8)/2, register (r >= 8) + 2*(k >= 8), half k&1.
 * B (16 x 8, col): lane c*4 + (k%8)/2, register (k >= 8), half k&1.
 * C (16 x 8): c0,c1 at (lane/4, 2*(lane%4) + 0/1), c2,c3 at row lane/4 + 8. */
static inline void kr_fa_mma(float c[4], const unsigned a[4], unsigned b0, unsigned b1)
{
    const int w = (int)threadIdx.x >> 5, l = (int)threadIdx.x & 31;
    memcpy(g_fa[w][l], a, sizeof g_fa[w][l]);
    g_fb[w][l][0] = b0;
    g_fb[w][l][1] = b1;
    pthread_barrier_wait(&g_warp_bar[w]);
    for (int i = 0; i < 4; i++) {
        const int row = l / 4 + 8 * (i >= 2), col = 2 * (l % 4) + (i & 1);
        float acc = 0;
        for (int k = 0; k < 16; k++) {
            const float av = emu_half(g_fa[w][(row % 8) * 4 + (k % 8) / 2][(row >= 8) + 2 * (k >= 8)], k & 1);
            const float bv = emu_half(g_fb[w][col * 4 + (k % 8) / 2][k >= 8], k & 1);
            acc += av * bv;
        }
        c[i] += acc;
    }
    pthread_barrier_wait(&g_warp_bar[w]);
}

/* ldmatrix x4 (optionally .trans): lane l gives the row address of row l%8 of matrix l/8;
 * r[j] = matrix j's (row lane/4, cols 2(lane%4), +1) or, transposed, (rows 2(lane%4), +1, col lane/4);
 * the lower column (row) in the low 16 bits. */
static const unsigned short *g_rowp[4][32];
static inline void emu_ldsm4(unsigned r[4], const unsigned short *p, int trans)
{
    const int w = (int)threadIdx.x >> 5, l = (int)threadIdx.x & 31;
    g_rowp[w][l] = p;
    pthread_barrier_wait(&g_warp_bar[w]);
    const int gq = l / 4, t = l % 4;
    for (int j = 0; j < 4; j++) {
        if (trans)
            r[j] = (unsigned)g_rowp[w][j * 8 + 2 * t][gq] | ((unsigned)g_rowp[w][j * 8 + 2 * t + 1][gq] << 16);
        else
            r[j] = (unsigned)g_rowp[w][j * 8 + gq][2 * t] | ((unsigned)g_rowp[w][j * 8 + gq][2 * t + 1] << 16);
    }
    pthread_barrier_wait(&g_warp_bar[w]);
}
static inline void kr_fa_ldsm4(unsigned r[4], const unsigned short *p) { emu_ldsm4(r, p, 0); }
static inline void kr_fa_ldsm4t(unsigned r[4], const unsigned short *p) { emu_ldsm4(r, p, 1); }

/* cp.async: a plain copy (ordering is not emulated) */
static inline void kr_fa_cp16(void *dst, const void *src, int src_bytes)
{
    if (src_bytes)
        memcpy(dst, src, 16);
    else
        memset(dst, 0, 16);
}
static inline void kr_fa_commit(void) {}
static inline void kr_fa_wait1(void) {}

static inline float __int_as_float(unsigned u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

#define KR_FA_HOST_EMU 1
#include "flash_attn.cu"

/* ---- launcher ---------------------------------------------------------------- */

typedef struct emu_args {
    const float *q;
    long long q_stride;
    const unsigned char *kc, *vc;
    long long row_bytes;
    int rows;
    float *out;
    long long o_stride;
    int n, pos0, n_head, n_head_kv, window;
    float scale_log2;
    int kv_dim;
    unsigned short *out16;
} emu_args;

typedef struct emu_thread {
    const emu_args *a;
    emu_dim3 tid, bid;
} emu_thread;

static void *emu_run(void *p)
{
    const emu_thread *t = p;
    threadIdx = t->tid;
    blockIdx = t->bid;
    const emu_args *a = t->a;
    kr_flash_attn_f16(a->q, a->q_stride, a->kc, a->vc, a->row_bytes, a->rows, a->out, a->o_stride, a->n, a->pos0,
                      a->n_head, a->n_head_kv, a->window, a->scale_log2, a->kv_dim, a->out16);
    return NULL;
}

static void emu_launch(const emu_args *a)
{
    const int gx = (a->n * (a->n_head / a->n_head_kv) + KR_FA_BM - 1) / KR_FA_BM, gy = a->n_head_kv;
    cr_assert_eq(pthread_barrier_init(&g_block_bar, NULL, KR_FA_THREADS), 0);
    for (int w = 0; w < 4; w++)
        cr_assert_eq(pthread_barrier_init(&g_warp_bar[w], NULL, 32), 0);
    static emu_thread th[KR_FA_THREADS];
    static pthread_t tid[KR_FA_THREADS];
    for (int by = 0; by < gy; by++) {
        for (int bx = 0; bx < gx; bx++) {
            for (int i = 0; i < KR_FA_THREADS; i++) {
                th[i] = (emu_thread){.a = a, .tid = {(unsigned)i, 0, 0}, .bid = {(unsigned)bx, (unsigned)by, 0}};
                pthread_attr_t at;
                pthread_attr_init(&at);
                pthread_attr_setstacksize(&at, 1 << 20);
                cr_assert_eq(pthread_create(&tid[i], &at, emu_run, &th[i]), 0);
                pthread_attr_destroy(&at);
            }
            for (int i = 0; i < KR_FA_THREADS; i++)
                pthread_join(tid[i], NULL);
        }
    }
    pthread_barrier_destroy(&g_block_bar);
    for (int w = 0; w < 4; w++)
        pthread_barrier_destroy(&g_warp_bar[w]);
}

/* ---- test ---------------------------------------------------------------------- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;
static float rnd(float lo, float hi)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return lo + (hi - lo) * (float)((g_rng >> 40) * 0x1p-24);
}

static void q8_row(const float *x, size_t kvd, uint8_t *row, float *deq)
{
    for (size_t b = 0; b < kvd / 32; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(x[32 * b + i]));
        const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
        const uint16_t dh = kr_fp32_to_fp16(d);
        memcpy(row + kvd + 2 * b, &dh, 2);
        for (int i = 0; i < 32; i++) {
            const int qv = (int)roundf(x[32 * b + i] * id);
            row[32 * b + i] = (uint8_t)(int8_t)qv;
            deq[32 * b + i] = (float)qv * kr_fp16_to_fp32(dh);
        }
    }
}

static void run_case(int H, int HK, int n, int pos0, int W, int R, int q_pad, int o_pad, int out16)
{
    const int D = KR_FA_D, G = H / HK, q8 = KR_FA_Q8;
    const size_t qs = (size_t)H * D + q_pad, os = (size_t)H * D + o_pad, kvd = (size_t)HK * D;
    const size_t row_bytes = ((q8 ? kvd + 2 * (kvd / 32) : 2 * kvd) + 15) / 16 * 16;
    const int lo0 = W > 0 ? (pos0 - W + 1 > 0 ? pos0 - W + 1 : 0) : 0, hi = pos0 + n - 1;
    cr_assert(hi - lo0 < R);
    float *q = malloc((size_t)n * qs * sizeof *q), *o = malloc((size_t)n * os * sizeof *o);
    uint8_t *kc = aligned_alloc(16, (size_t)R * row_bytes), *vc = aligned_alloc(16, (size_t)R * row_bytes);
    float *kf = malloc((size_t)R * kvd * sizeof *kf), *vf = malloc((size_t)R * kvd * sizeof *vf);
    float *x = malloc(kvd * sizeof *x);
    cr_assert(q && o && kc && vc && kf && vf && x);
    for (size_t i = 0; i < (size_t)n * qs; i++)
        q[i] = rnd(-6.0f, 6.0f);
    for (size_t i = 0; i < (size_t)n * os; i++)
        o[i] = NAN;
    for (size_t i = 0; i < (size_t)R * row_bytes / 2; i++)
        ((uint16_t *)kc)[i] = ((uint16_t *)vc)[i] = 0x7e00;
    for (int j = lo0; j <= hi; j++)
        for (int kv = 0; kv < 2; kv++) {
            uint8_t *row = (kv ? vc : kc) + (size_t)(j % R) * row_bytes;
            float *ref = (kv ? vf : kf) + (size_t)(j % R) * kvd;
            for (size_t i = 0; i < kvd; i++)
                x[i] = rnd(-1.0f, 1.0f);
            if (q8) {
                q8_row(x, kvd, row, ref);
            } else {
                for (size_t i = 0; i < kvd; i++) {
                    uint16_t h = kr_fp32_to_fp16(x[i]);
                    memcpy(row + 2 * i, &h, 2);
                    ref[i] = kr_fp16_to_fp32(h);
                }
            }
        }
    const float scale = 1.0f / sqrtf((float)D);
    emu_args a = {.q = q, .q_stride = (long long)qs, .kc = kc, .vc = vc, .row_bytes = (long long)row_bytes,
                  .rows = R, .out = o, .o_stride = (long long)os, .n = n, .pos0 = pos0, .n_head = H,
                  .n_head_kv = HK, .window = W, .scale_log2 = scale * 1.4426950408889634f, .kv_dim = (int)kvd};
    uint16_t *o16 = NULL;
    if (out16) {
        o16 = malloc((size_t)n * os * 2);
        cr_assert(o16);
        for (size_t i = 0; i < (size_t)n * os; i++)
            o16[i] = 0xFFFF;
        a.out = NULL;
        a.out16 = o16;
    }
    emu_launch(&a);
    if (out16) {
        for (size_t i = 0; i < (size_t)n * os; i++)
            o[i] = kr_fp16_to_fp32(o16[i]);
        free(o16);
    }

    double num = 0, den = 0, worst = 0;
    double *sc = malloc((size_t)(hi + 1) * sizeof *sc), *ref = malloc((size_t)D * sizeof *ref);
    cr_assert(sc && ref);
    for (int t = 0; t < n; t++) {
        const int pp = pos0 + t, lo = W > 0 ? (pp - W + 1 > 0 ? pp - W + 1 : 0) : 0;
        for (int h = 0; h < H; h++) {
            const int g = h / G;
            const float *qh = q + (size_t)t * qs + (size_t)h * D;
            double mx = -INFINITY, l = 0;
            for (int j = lo; j <= pp; j++) {
                double dot = 0;
                for (int i = 0; i < D; i++)
                    dot += (double)qh[i] * kf[(size_t)(j % R) * kvd + (size_t)g * D + i];
                sc[j] = dot * scale;
                mx = sc[j] > mx ? sc[j] : mx;
            }
            for (int i = 0; i < D; i++)
                ref[i] = 0;
            for (int j = lo; j <= pp; j++) {
                const double e = exp(sc[j] - mx);
                l += e;
                for (int i = 0; i < D; i++)
                    ref[i] += e * vf[(size_t)(j % R) * kvd + (size_t)g * D + i];
            }
            double rn = 0, rd = 0;
            for (int i = 0; i < D; i++) {
                const float v = o[(size_t)t * os + (size_t)h * D + i];
                cr_assert(isfinite(v), "D %d q8 %d: out[%d, %d, %d] = %g", D, q8, t, h, i, v);
                const double r = ref[i] / l, e = v - r;
                rn += e * e;
                rd += r * r;
            }
            num += rn;
            den += rd;
            worst = rn / rd > worst ? rn / rd : worst;
        }
        for (int i = 0; i < o_pad; i++)
            cr_assert(isnan(o[(size_t)t * os + (size_t)H * D + i]), "out padding written");
    }
    cr_log_info("emu D %d pipe %d q8 %d heads %d/%d n %d pos0 %d window %d rows %d: nmse %.3g worst row %.3g", D, KR_FA_PIPE, q8, H, HK, n,
                pos0, W, R, num / den, worst);
    cr_expect(worst <= 1e-4, "emu D %d q8 %d heads %d/%d n %d pos0 %d window %d: worst row %.3g", D, q8, H, HK, n, pos0,
              W, worst);
    cr_expect(num / den <= 1e-5, "emu D %d q8 %d: NMSE %.3g", D, q8, num / den);
    free(sc);
    free(ref);
    free(q);
    free(o);
    free(kc);
    free(vc);
    free(kf);
    free(vf);
    free(x);
}

Test(flash_emu, causal_gqa_window_ring)
{
    if (KR_FA_Q8 && (2 * KR_FA_D) % 32 != 0)
        cr_skip_test("q8_0 needs kv_dim %% 32 == 0");
    run_case(4, 2, 37, 0, 0, 40, 4, 2, 0);  /* odd n, GQA, from position 0 */
    run_case(3, 3, 21, 50, 0, 80, 0, 0, 0); /* cached tokens before the batch */
    run_case(6, 2, 30, 20, 7, 37, 0, 2, 0); /* window, ring (positions 14..49 in 37 rows) */
    run_case(5, 1, 14, 3, 0, 17, 0, 0, 0);  /* MQA */
    run_case(4, 2, 20, 5, 0, 32, 0, 2, 1);  /* fp16 output */
}
