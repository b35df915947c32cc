/* Kernels of the decode step in kernels/forward/ against CPU references on
 * fresh random inputs with odd sizes, outputs poisoned first:
 * - the repacked Q4_0 / Q8_0 matvecs against 8-bit activations, v1
 *   (kr_gf_mv_*) and every v2 variant (kr_gf_mv2_*_r<NR>p<PF>, with and
 *   without the residual add), row counts not multiples of the rows per
 *   CTA and block counts that are not multiples of 32 * PF (several
 *   prefetch chunks, partial last chunk);
 * - the gate/up matvec with SwiGLU + q8 in its last CTAs (kr_gf_mv2gus_*), twice
 *   per case (the group counters must return to 0);
 * - the norm-folding producer (x += W xq, then q8(x * wn) and block sums of x^2; input q8,
 *   fp32 quantized by the kernel, or SwiGLU of fp32 gate|up quantized by the kernel) and
 *   consumer (scale from those sums times W xq), kr_gf_mv2nf{p,c}_*;
 * - the multi-block rmsnorm + q8 (kr_gf_rmsnorm_q8_mb) with several grid
 *   sizes (grid-stride over the 32-blocks);
 * - a chain of them launched with KR_LAUNCH_PDL equals the same chain
 *   launched normally, bit for bit (each kernel waits for its predecessor), also
 *   through the L2-prefetching kernels;
 * - the kernels that take an L2 prefetch request (kr_gf_mv2t_*, kr_gf_rmsnorm_q8_mbp,
 *   kr_gf_swiglu_q8p; kernels/forward/kr_gf_common.cuh) give the same bits as the plain
 *   ones for requests with odd, unaligned, empty and NULL ranges and any share count;
 *   kr_gf_swiglu_q8 against a double reference.
 * The CPU references are written here from the layouts documented in the
 * .cu files, in double. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kr_test_gpu.h"
#include "../common/kr_test_rng.h"
#include "../core/kr_test_leaks.h"
#include "kernrun/backend.h"
#include "kernrun/half.h"
#include "kernrun/jit.h"
#include "kr_gf_matvec_repacked_src.h" /* kernels/forward/matvec_repacked.cu, headers flattened in front */
#include "kr_gf_step_fused_src.h"      /* kernels/forward/step_fused.cu, likewise */

#define WARPS 4 /* KR_GF_WARPS of the .cu */

TestSuite(gpu_forward_kernels, .fini = kr_test_leak_check);

static const kr_kernel_source k_mv_src = {
    .name = "forward/matvec_repacked.cu",
    .code = kr_gf_matvec_repacked_src,
    .len = kr_gf_matvec_repacked_src_LEN,
    .entry = "-", /* per lookup: see get_fn */
};

static kr_function *get_fn(kr_backend *be, const char *code, size_t len, const char *name, const char *entry)
{
    /* one static record per entry: the backend caches by record address + entry */
    static kr_kernel_source recs[128];
    static size_t n_recs;
    kr_kernel_source *r = NULL;
    for (size_t i = 0; i < n_recs; i++)
        if (recs[i].code == (const char *)code && strcmp(recs[i].entry, entry) == 0)
            r = &recs[i];
    if (!r) {
        cr_assert_lt(n_recs, 128u);
        r = &recs[n_recs++];
        *r = (kr_kernel_source){.name = name, .code = (const char *)code, .len = len, .entry = strdup(entry)};
        cr_assert_not_null(r->entry);
    }
    kr_err err;
    kr_err_clear(&err);
    kr_function *fn = NULL;
    kr_status st = kr_backend_get_function(be, r, &fn, &err);
    cr_assert_eq(st, KR_OK, "%s: %s", entry, kr_err_msg(&err, st));
    return fn;
}

static void launch_on(kr_backend *be, kr_stream *s, kr_function *fn, uint32_t gx, uint32_t bx, uint32_t by,
                      void **args, uint32_t flags)
{
    kr_err err;
    kr_err_clear(&err);
    const uint32_t grid[3] = {gx, 1, 1}, block[3] = {bx, by, 1};
    kr_status st = kr_backend_launch_ex(be, fn, grid, block, 0, s, args, flags, &err);
    cr_assert_eq(st, KR_OK, "launch: %s", kr_err_msg(&err, st));
}

static void launch(kr_backend *be, kr_function *fn, uint32_t gx, uint32_t bx, uint32_t by, void **args, uint32_t flags)
{
    launch_on(be, NULL, fn, gx, bx, by, args, flags);
}

/* ---- host data --------------------------------------------------------------------- */

/* Repacked matrix: qs (rows*nb*qb bytes) then sc (rows*nb fp16). */
typedef struct mat {
    int q8, rows, nb;
    uint8_t *bytes; /* qs | sc */
    size_t n_bytes, sc_off;
} mat;

static mat mat_random(int q8, int rows, int nb)
{
    mat m = {.q8 = q8, .rows = rows, .nb = nb};
    size_t qb = q8 ? 32 : 16, nblk = (size_t)rows * nb;
    m.sc_off = nblk * qb;
    m.n_bytes = m.sc_off + nblk * 2;
    m.bytes = malloc(m.n_bytes);
    cr_assert_not_null(m.bytes);
    for (size_t i = 0; i < m.sc_off; i++)
        m.bytes[i] = (uint8_t)(kr_test_rng_u64() >> 56);
    uint16_t *sc = (uint16_t *)(m.bytes + m.sc_off);
    for (size_t i = 0; i < nblk; i++)
        sc[i] = kr_fp32_to_fp16(kr_test_rng_f(-0.02f, 0.02f));
    return m;
}

/* x as kr_dec_quantize_q8 output: int8 q[32 nb] | float d[nb] | float s[nb], s = d sum(q). */
static uint8_t *xq_random(int nb, size_t *bytes)
{
    *bytes = (size_t)nb * 32 + (size_t)nb * 8;
    uint8_t *x = malloc(*bytes);
    cr_assert_not_null(x);
    float *d = (float *)(x + (size_t)nb * 32), *s = d + nb;
    for (int b = 0; b < nb; b++) {
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            int q = (int)(kr_test_rng_u64() % 255) - 127;
            ((int8_t *)x)[b * 32 + j] = (int8_t)q;
            sum += q;
        }
        d[b] = kr_test_rng_f(0.001f, 0.05f);
        s[b] = d[b] * (float)sum;
    }
    return x;
}

/* y[r] = sum_b dw (dx sum_j w_j q_j) with w_j = nibble - 8 (Q4_0: byte i of a block holds
 * j = i (low) and j = i + 16 (high)) or int8 (Q8_0). */
static void mv_ref(const mat *m, const uint8_t *xq, double *y)
{
    const float *d = (const float *)(xq + (size_t)m->nb * 32);
    const uint16_t *sc = (const uint16_t *)(m->bytes + m->sc_off);
    size_t qb = m->q8 ? 32 : 16;
    for (int r = 0; r < m->rows; r++) {
        double acc = 0;
        for (int b = 0; b < m->nb; b++) {
            const uint8_t *q = m->bytes + ((size_t)r * m->nb + b) * qb;
            const int8_t *xb = (const int8_t *)xq + (size_t)b * 32;
            long dot = 0;
            for (int j = 0; j < 32; j++) {
                int w = m->q8 ? (int)(int8_t)q[j] : (j < 16 ? (q[j] & 15) : (q[j - 16] >> 4)) - 8;
                dot += (long)w * xb[j];
            }
            acc += (double)kr_fp16_to_fp32(sc[(size_t)r * m->nb + b]) * (double)d[b] * (double)dot;
        }
        y[r] = acc;
    }
}

static double nmse_d(const float *a, const double *ref, int n)
{
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        double e = (double)a[i] - ref[i];
        num += e * e;
        den += ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

/* ---- matvec ------------------------------------------------------------------------ */

typedef struct mv_kernel {
    const char *entry;
    int q8, rows_per_warp, v2;
    int persist; /* any grid: also run with grids of 1, 3 and 7 CTAs (several tiles per warp) */
} mv_kernel;

static const mv_kernel k_mv[] = {
    {"kr_gf_mv_q4_0", 0, 1, 0, 0},         {"kr_gf_mv_q8_0", 1, 1, 0, 0},
    {"kr_gf_mv2_q4_0_r1p4", 0, 1, 1, 0},   {"kr_gf_mv2_q4_0_r2p4", 0, 2, 1, 0}, {"kr_gf_mv2_q4_0_r4p2", 0, 4, 1, 0},
    {"kr_gf_mv2_q4_0_r2p8", 0, 2, 1, 0},   {"kr_gf_mv2_q8_0_r1p4", 1, 1, 1, 0}, {"kr_gf_mv2_q8_0_r2p2", 1, 2, 1, 0},
    {"kr_gf_mv2_q8_0_r2p4", 1, 2, 1, 0},   {"kr_gf_mv2_q8_0_r4p2", 1, 4, 1, 0},
    /* double-buffered (d) and helper-loop (h) variants */
    {"kr_gf_mv2_q4_0_r2p4d", 0, 2, 1, 0},  {"kr_gf_mv2_q4_0_r2p2d", 0, 2, 1, 0}, {"kr_gf_mv2_q4_0_r2p4h", 0, 2, 1, 0},
    {"kr_gf_mv2_q8_0_r2p2d", 1, 2, 1, 0},  {"kr_gf_mv2_q8_0_r2p1d", 1, 2, 1, 0}, {"kr_gf_mv2_q8_0_r2p2h", 1, 2, 1, 0},
    {"kr_gf_mv2_q4_0_r2p1d", 0, 2, 1, 0},  {"kr_gf_mv2_q4_0_r4p1d", 0, 4, 1, 0}, {"kr_gf_mv2_q4_0_r1p2d", 0, 1, 1, 0},
    /* persistent warps over row tiles */
    {"kr_gf_mv2_q4_0_pr2p4", 0, 2, 1, 1}, {"kr_gf_mv2_q4_0_pr2p2", 0, 2, 1, 1}, {"kr_gf_mv2_q4_0_pr1p4", 0, 1, 1, 1},
    {"kr_gf_mv2_q4_0_pr4p2", 0, 4, 1, 1}, {"kr_gf_mv2_q8_0_pr2p2", 1, 2, 1, 1}, {"kr_gf_mv2_q8_0_pr2p1", 1, 2, 1, 1},
};

Test(gpu_forward_kernels, repacked_matvecs_vs_cpu, .timeout = 300)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    /* (rows, nb): odd rows; nb 1, < 32, 32*PF +- 1, several chunks with a partial one */
    static const int shapes[][2] = {{1, 1}, {37, 7}, {131, 129}, {67, 300}, {9, 513}, {1001, 128}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int rows = shapes[s][0], nb = shapes[s][1];
        size_t xb;
        uint8_t *xq = xq_random(nb, &xb);
        kr_buffer *bx;
        void *dx = kr_test_dupload(be, xq, xb, &bx);
        for (int q8 = 0; q8 < 2; q8++) {
            mat m = mat_random(q8, rows, nb);
            double *ref = malloc((size_t)rows * sizeof *ref);
            float *y0 = malloc((size_t)rows * sizeof *y0), *y = malloc((size_t)rows * sizeof *y);
            cr_assert(ref && y0 && y);
            mv_ref(&m, xq, ref);
            for (int r = 0; r < rows; r++)
                y0[r] = kr_test_rng_f(-1.0f, 1.0f);
            kr_buffer *bw;
            const uint8_t *dw = kr_test_dupload(be, m.bytes, m.n_bytes, &bw);
            const void *dqs = dw, *dsc = dw + m.sc_off;
            for (size_t k = 0; k < sizeof k_mv / sizeof k_mv[0]; k++) {
                if (k_mv[k].q8 != q8)
                    continue;
                kr_function *fn = get_fn(be, kr_gf_matvec_repacked_src,
                                         kr_gf_matvec_repacked_src_LEN, k_mv_src.name, k_mv[k].entry);
                for (int acc = 0; acc <= 3 * k_mv[k].v2; acc++) {
                    /* acc 2, 3: persistent kernels only, with grids of 1 / 3 / 7 CTAs */
                    if (acc >= 2 && !k_mv[k].persist)
                        break;
                    int a = acc & 1;
                    kr_buffer *by;
                    float *dy = a ? kr_test_dupload(be, y0, (size_t)rows * 4, &by)
                                  : kr_test_dpoisoned(be, (size_t)rows, &by);
                    int irows = rows, inb = nb, iacc = a;
                    void *args[] = {&dqs, &dsc, &dx, &dy, &irows, &inb, &iacc};
                    int per = WARPS * k_mv[k].rows_per_warp;
                    uint32_t grid = (uint32_t)((rows + per - 1) / per);
                    if (acc >= 2)
                        grid = acc == 2 ? 1 : (s % 2 ? 3 : 7);
                    launch(be, fn, grid, 32, WARPS, args, 0);
                    kr_test_download(be, y, dy, (size_t)rows * 4);
                    double *want = ref;
                    double *tmp = NULL;
                    if (a) {
                        tmp = malloc((size_t)rows * sizeof *tmp);
                        cr_assert_not_null(tmp);
                        for (int r = 0; r < rows; r++)
                            tmp[r] = ref[r] + y0[r];
                        want = tmp;
                    }
                    double e = nmse_d(y, want, rows);
                    cr_expect_leq(e, 1e-10, "%s rows %d nb %d acc %d grid %u: NMSE %.3g (seed %llu)", k_mv[k].entry,
                                  rows, nb, a, grid, e, (unsigned long long)kr_test_seed());
                    free(tmp);
                    kr_backend_free(be, by);
                }
            }
            kr_backend_free(be, bw);
            free(ref);
            free(y0);
            free(y);
            free(m.bytes);
        }
        kr_backend_free(be, bx);
        free(xq);
    }
    kr_backend_destroy(be);
}

/* ---- multi-block rmsnorm + q8 ------------------------------------------------------ */

/* h = x / sqrt(mean(x^2) + eps) * w (w NULL: 1), in double */
static void rms_ref(const float *x, const float *w, int n, float eps, double *h)
{
    double ss = 0;
    for (int i = 0; i < n; i++)
        ss += (double)x[i] * x[i];
    double sc = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++)
        h[i] = x[i] * sc * (w ? w[i] : 1.0);
}

/* xq = q8(h) as documented: per 32-block d = max|h|/127, q = rint(h/d), s = d sum(q).
 * Checked against the reference h: d within 1e-5 relative, |q d - h| <= d/2 (+ rounding), s = d sum(q). */
static void check_q8(const uint8_t *xq, const double *h, int n, const char *what)
{
    int nb = n / 32;
    const float *d = (const float *)(xq + n), *s = d + nb;
    for (int b = 0; b < nb; b++) {
        double amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmax(amax, fabs(h[b * 32 + j]));
        double dw = amax / 127.0;
        cr_expect(fabs(d[b] - dw) <= 1e-5 * dw + 1e-30, "%s block %d: d %g, want %g", what, b, (double)d[b], dw);
        long sum = 0;
        for (int j = 0; j < 32; j++) {
            int q = ((const int8_t *)xq)[b * 32 + j];
            sum += q;
            cr_expect(fabs(q * (double)d[b] - h[b * 32 + j]) <= 0.5 * dw * (1 + 1e-4) + 1e-30,
                      "%s block %d elem %d: q %d d %g vs h %g", what, b, j, q, (double)d[b], h[b * 32 + j]);
        }
        cr_expect(fabs(s[b] - d[b] * (double)sum) <= 1e-5 * fabs(d[b] * (double)sum) + 1e-30, "%s block %d: s", what,
                  b);
    }
}

Test(gpu_forward_kernels, rmsnorm_q8_multiblock_vs_cpu, .timeout = 120)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_function *fn = get_fn(be, kr_gf_step_fused_src, kr_gf_step_fused_src_LEN,
                             "forward/step_fused.cu", "kr_gf_rmsnorm_q8_mb");
    static const int ns[] = {32, 96, 4096, 4128, 5120 + 32};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        int n = ns[t];
        float *x = malloc((size_t)n * 4), *w = malloc((size_t)n * 4), *h = malloc((size_t)n * 4);
        double *ref = malloc((size_t)n * sizeof *ref);
        size_t xqb = (size_t)n + (size_t)n / 32 * 8;
        uint8_t *xq = malloc(xqb);
        cr_assert(x && w && h && ref && xq);
        for (int i = 0; i < n; i++) {
            x[i] = kr_test_rng_f(-3.0f, 3.0f);
            w[i] = kr_test_rng_f(0.5f, 1.5f);
        }
        kr_buffer *bx, *bw, *bh, *bq;
        const float *dx = kr_test_dupload(be, x, (size_t)n * 4, &bx);
        const float *dw = kr_test_dupload(be, w, (size_t)n * 4, &bw);
        for (int use_w = 0; use_w < 2; use_w++) {
            rms_ref(x, use_w ? w : NULL, n, 1e-5f, ref);
            uint32_t nblk = (uint32_t)n / 32;
            /* (grid, block): 4 warps per CTA as norm=mb, one CTA, three, and 32 warps as norm=mbw */
            const uint32_t grids[5][2] = {{(nblk + 3) / 4, 128}, {1, 128}, {3, 128}, {(nblk + 31) / 32, 1024}, {2, 1024}};
            for (int g = 0; g < 5; g++) {
                for (int q8 = 0; q8 < 2; q8++) {
                    float *dh = kr_test_dpoisoned(be, (size_t)n, &bh);
                    uint8_t *poison = malloc(xqb);
                    cr_assert_not_null(poison);
                    memset(poison, 0x7f, xqb);
                    void *dq = kr_test_dupload(be, poison, xqb, &bq);
                    free(poison);
                    const float *wp = use_w ? dw : NULL;
                    int in = n, iq8 = q8;
                    float eps = 1e-5f;
                    void *args[] = {&dx, &wp, &dh, &dq, &in, &eps, &iq8};
                    launch(be, fn, grids[g][0], grids[g][1], 1, args, 0);
                    kr_test_download(be, h, dh, (size_t)n * 4);
                    char what[96];
                    snprintf(what, sizeof what, "n %d w %d grid %u x %u q8 %d (seed %llu)", n, use_w, grids[g][0],
                             grids[g][1], q8,
                             (unsigned long long)kr_test_seed());
                    double e = nmse_d(h, ref, n);
                    cr_expect_leq(e, 1e-12, "%s: h NMSE %.3g", what, e);
                    if (q8) {
                        kr_test_download(be, xq, dq, xqb);
                        check_q8(xq, ref, n, what);
                    }
                    kr_backend_free(be, bh);
                    kr_backend_free(be, bq);
                }
            }
        }
        kr_backend_free(be, bx);
        kr_backend_free(be, bw);
        free(x);
        free(w);
        free(h);
        free(ref);
        free(xq);
    }
    kr_backend_destroy(be);
}

/* ---- gate/up + SwiGLU + q8 (kr_gf_mv2gus_*) ----------------------------------------- */

Test(gpu_forward_kernels, gate_up_swiglu_q8_vs_cpu, .timeout = 300)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    static const struct {
        const char *entry;
        int q8, per; /* rows per CTA */
    } ks[] = {{"kr_gf_mv2gus_q4_0_r1p4", 0, 4}, {"kr_gf_mv2gus_q4_0_r2p4", 0, 8}, {"kr_gf_mv2gus_q4_0_r4p2", 0, 16},
              {"kr_gf_mv2gus_q4_0_r2p8", 0, 8}, {"kr_gf_mv2gus_q8_0_r1p4", 1, 4}, {"kr_gf_mv2gus_q8_0_r2p2", 1, 8},
              {"kr_gf_mv2gus_q8_0_r2p4", 1, 8}, {"kr_gf_mv2gus_q8_0_r4p2", 1, 16},
              {"kr_gf_mv2gus_q4_0_r2p4d", 0, 8}, {"kr_gf_mv2gus_q4_0_r2p2d", 0, 8}, {"kr_gf_mv2gus_q8_0_r2p1d", 1, 8}};
    static const int shapes[][2] = {{32, 1}, {352, 7}, {96, 129}, {1376, 300}}; /* (F, nb) */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int F = shapes[si][0], nb = shapes[si][1], rows = 2 * F;
        size_t xb;
        uint8_t *xq = xq_random(nb, &xb);
        kr_buffer *bx, *bc;
        void *dx = kr_test_dupload(be, xq, xb, &bx);
        int *zeros = calloc((size_t)F / 32, sizeof(int)), *cnt = malloc((size_t)F / 32 * sizeof(int));
        cr_assert(zeros && cnt);
        int *dcnt = kr_test_dupload(be, zeros, (size_t)F / 32 * sizeof(int), &bc);
        for (int q8 = 0; q8 < 2; q8++) {
            mat m = mat_random(q8, rows, nb);
            double *ref = malloc((size_t)rows * sizeof *ref), *v = malloc((size_t)F * sizeof *v);
            float *y = malloc((size_t)rows * 4);
            size_t xob = (size_t)F + (size_t)F / 32 * 8;
            uint8_t *xo = malloc(xob);
            cr_assert(ref && v && y && xo);
            mv_ref(&m, xq, ref);
            for (int i = 0; i < F; i++)
                v[i] = ref[i] / (1.0 + exp(-ref[i])) * ref[F + i];
            kr_buffer *bw;
            const uint8_t *dw = kr_test_dupload(be, m.bytes, m.n_bytes, &bw);
            const void *dqs = dw, *dsc = dw + m.sc_off;
            for (size_t k = 0; k < sizeof ks / sizeof ks[0]; k++) {
                if (ks[k].q8 != q8 || F % ks[k].per != 0)
                    continue;
                kr_function *fn = get_fn(be, kr_gf_matvec_repacked_src,
                                         kr_gf_matvec_repacked_src_LEN, k_mv_src.name, ks[k].entry);
                for (int rep = 0; rep < 2; rep++) { /* twice: the counters must be back at 0 */
                    kr_buffer *by, *bo;
                    float *dy = kr_test_dpoisoned(be, (size_t)rows, &by);
                    uint8_t *poison = malloc(xob);
                    cr_assert_not_null(poison);
                    memset(poison, 0x7f, xob);
                    void *dxo = kr_test_dupload(be, poison, xob, &bo);
                    free(poison);
                    int irows = rows, inb = nb, iF = F;
                    void *args[] = {&dqs, &dsc, &dx, &dy, &irows, &inb, &iF, &dcnt, &dxo};
                    launch(be, fn, (uint32_t)(rows / ks[k].per), 32, WARPS, args, 0);
                    kr_test_download(be, y, dy, (size_t)rows * 4);
                    kr_test_download(be, xo, dxo, xob);
                    kr_test_download(be, cnt, dcnt, (size_t)F / 32 * sizeof(int));
                    char what[128];
                    snprintf(what, sizeof what, "%s F %d nb %d rep %d (seed %llu)", ks[k].entry, F, nb, rep,
                             (unsigned long long)kr_test_seed());
                    double e1 = nmse_d(y, v, F), e2 = nmse_d(y + F, ref + F, F);
                    cr_expect_leq(e1, 1e-10, "%s: swiglu NMSE %.3g", what, e1);
                    cr_expect_leq(e2, 1e-10, "%s: up rows NMSE %.3g", what, e2);
                    check_q8(xo, v, F, what);
                    int nz = 0;
                    for (int i = 0; i < F / 32; i++)
                        nz += cnt[i] != 0;
                    cr_expect_eq(nz, 0, "%s: %d group counters not reset", what, nz);
                    kr_backend_free(be, by);
                    kr_backend_free(be, bo);
                }
            }
            kr_backend_free(be, bw);
            free(ref);
            free(v);
            free(y);
            free(xo);
            free(m.bytes);
        }
        kr_backend_free(be, bx);
        kr_backend_free(be, bc);
        free(zeros);
        free(cnt);
        free(xq);
    }
    kr_backend_destroy(be);
}

/* ---- norm folding: kr_gf_mv2nfp_* (producer) and kr_gf_mv2nfc_* (consumer) ------------- */

/* q8 of v (n floats) as kr_dec_quantize_q8, in float like the kernels (same IEEE ops). */
static void q8_host(const float *v, int n, uint8_t *xq)
{
    float *d = (float *)(xq + n), *s = d + n / 32;
    for (int b = 0; b < n / 32; b++) {
        float amax = 0.0f;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(v[b * 32 + j]));
        float dq = amax / 127.0f;
        int sum = 0;
        for (int j = 0; j < 32; j++) {
            int q = dq > 0.0f ? (int)rintf(v[b * 32 + j] / dq) : 0;
            ((int8_t *)xq)[b * 32 + j] = (int8_t)q;
            sum += q;
        }
        d[b] = dq;
        s[b] = dq * (float)sum;
    }
}

/* mode 0: input q8 (kr_gf_mv2nfp_*); 1: fp32 x (kr_gf_mv2nfpf_*); 2: fp32 gate|up, x = silu(g) * u
 * (kr_gf_mv2nfps_*). */
Test(gpu_forward_kernels, norm_folding_producer_vs_cpu, .timeout = 300)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    static const char *const entries[3][2] = {{"kr_gf_mv2nfp_q4_0", "kr_gf_mv2nfp_q8_0"},
                                              {"kr_gf_mv2nfpf_q4_0", "kr_gf_mv2nfpf_q8_0"},
                                              {"kr_gf_mv2nfps_q4_0", "kr_gf_mv2nfps_q8_0"}};
    static const int shapes[][2] = {{32, 1}, {96, 7}, {160, 300}, {4096, 129}}; /* (rows = E, nb) */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int rows = shapes[si][0], nb = shapes[si][1], n = nb * 32;
        size_t xb = (size_t)n + (size_t)nb * 8;
        uint8_t *xq = malloc(xb);
        float *xin = malloc((size_t)n * 2 * 4), *v = malloc((size_t)n * 4);
        float *x0 = malloc((size_t)rows * 4), *wn = malloc((size_t)rows * 4), *x = malloc((size_t)rows * 4);
        float *part = malloc((size_t)rows / 32 * 4);
        double *ref = malloc((size_t)rows * sizeof *ref), *hw = malloc((size_t)rows * sizeof *hw);
        size_t xob = (size_t)rows + (size_t)rows / 32 * 8;
        uint8_t *xo = malloc(xob);
        cr_assert(xq && xin && v && x0 && wn && x && part && ref && hw && xo);
        for (int i = 0; i < rows; i++) {
            x0[i] = kr_test_rng_f(-2.0f, 2.0f);
            wn[i] = kr_test_rng_f(0.5f, 1.5f);
        }
        for (int i = 0; i < 2 * n; i++)
            xin[i] = kr_test_rng_f(-3.0f, 3.0f);
        kr_buffer *bw;
        const float *dwn = kr_test_dupload(be, wn, (size_t)rows * 4, &bw);
        for (int mode = 0; mode < 3; mode++) {
            /* the q8 input the kernel sees (built on the host the way the kernel builds it) */
            for (int i = 0; i < n; i++)
                v[i] = mode == 2 ? xin[i] / (1.0f + expf(-xin[i])) * xin[n + i] : xin[i];
            q8_host(v, n, xq);
            kr_buffer *bx;
            void *dx = mode == 0 ? kr_test_dupload(be, xq, xb, &bx)
                                 : kr_test_dupload(be, xin, (size_t)n * (mode == 2 ? 2 : 1) * 4, &bx);
            for (int q8w = 0; q8w < (mode == 0 ? 6 : 2); q8w++) {
                int q8 = q8w & 1, wpc = q8w < 2 ? 16 : q8w < 4 ? 8 : 4;
                char entry[48];
                snprintf(entry, sizeof entry, "%s", entries[mode][q8]);
                if (wpc != 16)
                    snprintf(entry, sizeof entry, "kr_gf_mv2nfp%d_%s", wpc, q8 ? "q8_0" : "q4_0");
                mat m = mat_random(q8, rows, nb);
                mv_ref(&m, xq, ref);
                for (int i = 0; i < rows; i++)
                    ref[i] += x0[i];
                kr_buffer *bm, *by, *bp, *bo;
                const uint8_t *dm = kr_test_dupload(be, m.bytes, m.n_bytes, &bm);
                const void *dqs = dm, *dsc = dm + m.sc_off;
                float *dy = kr_test_dupload(be, x0, (size_t)rows * 4, &by);
                float *dp = kr_test_dpoisoned(be, (size_t)rows / 32, &bp);
                uint8_t *poison = malloc(xob);
                cr_assert_not_null(poison);
                memset(poison, 0x7f, xob);
                void *dxo = kr_test_dupload(be, poison, xob, &bo);
                free(poison);
                kr_function *fn = get_fn(be, kr_gf_matvec_repacked_src,
                                         kr_gf_matvec_repacked_src_LEN, k_mv_src.name, entry);
                int irows = rows, inb = nb;
                void *args[] = {&dqs, &dsc, &dx, &dy, &irows, &inb, &dwn, &dp, &dxo};
                kr_err err;
                kr_err_clear(&err);
                const uint32_t grid[3] = {(uint32_t)rows / 32, 1, 1}, block[3] = {32, (uint32_t)wpc, 1};
                kr_status st = kr_backend_launch(be, fn, grid, block, mode ? (size_t)nb * 40 : 0, NULL, args, &err);
                cr_assert_eq(st, KR_OK, "launch: %s", kr_err_msg(&err, st));
                kr_test_download(be, x, dy, (size_t)rows * 4);
                kr_test_download(be, part, dp, (size_t)rows / 32 * 4);
                kr_test_download(be, xo, dxo, xob);
                char what[128];
                snprintf(what, sizeof what, "%s rows %d nb %d (seed %llu)", entry, rows, nb,
                         (unsigned long long)kr_test_seed());
                double e = nmse_d(x, ref, rows);
                /* mode 2: expf may differ by an ulp from the host's, flipping a rare q at a .5 boundary */
                cr_expect_leq(e, mode == 2 ? 1e-5 : 1e-10, "%s: x NMSE %.3g", what, e);
                /* the epilogue against the kernel's own x */
                for (int i = 0; i < rows; i++)
                    hw[i] = (double)x[i] * wn[i];
                check_q8(xo, hw, rows, what);
                for (int b = 0; b < rows / 32; b++) {
                    double ss = 0;
                    for (int j = 0; j < 32; j++)
                        ss += (double)x[b * 32 + j] * x[b * 32 + j];
                    cr_expect(fabs(part[b] - ss) <= 1e-5 * ss + 1e-30, "%s: part[%d] %g, want %g", what, b,
                              (double)part[b], ss);
                }
                kr_backend_free(be, bm);
                kr_backend_free(be, by);
                kr_backend_free(be, bp);
                kr_backend_free(be, bo);
                free(m.bytes);
            }
            kr_backend_free(be, bx);
        }
        kr_backend_free(be, bw);
        free(xq);
        free(xin);
        free(v);
        free(x0);
        free(wn);
        free(x);
        free(part);
        free(ref);
        free(hw);
        free(xo);
    }
    kr_backend_destroy(be);
}

Test(gpu_forward_kernels, norm_folding_consumer_vs_cpu, .timeout = 300)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    static const char *const entries[2] = {"kr_gf_mv2nfc_q4_0", "kr_gf_mv2nfc_q8_0"};
    static const int shapes[][2] = {{1, 1}, {37, 7}, {1001, 128}, {67, 300}}; /* (rows, nb) */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int rows = shapes[si][0], nb = shapes[si][1];
        size_t xb;
        uint8_t *xq = xq_random(nb, &xb);
        float *part = malloc((size_t)nb * 4), *y = malloc((size_t)rows * 4);
        double *ref = malloc((size_t)rows * sizeof *ref);
        cr_assert(part && y && ref);
        double sum = 0;
        for (int b = 0; b < nb; b++) {
            part[b] = kr_test_rng_f(0.0f, 40.0f);
            sum += part[b];
        }
        const float eps = 1e-5f;
        double scale = 1.0 / sqrt(sum / (32.0 * nb) + eps);
        kr_buffer *bx, *bp;
        void *dx = kr_test_dupload(be, xq, xb, &bx);
        const float *dp = kr_test_dupload(be, part, (size_t)nb * 4, &bp);
        for (int q8 = 0; q8 < 2; q8++) {
            mat m = mat_random(q8, rows, nb);
            mv_ref(&m, xq, ref);
            for (int r = 0; r < rows; r++)
                ref[r] *= scale;
            kr_buffer *bm, *by;
            const uint8_t *dm = kr_test_dupload(be, m.bytes, m.n_bytes, &bm);
            const void *dqs = dm, *dsc = dm + m.sc_off;
            float *dy = kr_test_dpoisoned(be, (size_t)rows, &by);
            kr_function *fn = get_fn(be, kr_gf_matvec_repacked_src, kr_gf_matvec_repacked_src_LEN,
                                     k_mv_src.name, entries[q8]);
            int irows = rows, inb = nb;
            float e2 = eps;
            void *args[] = {&dqs, &dsc, &dx, &dy, &irows, &inb, &dp, &e2};
            launch(be, fn, (uint32_t)(rows + 2 * WARPS - 1) / (2 * WARPS), 32, WARPS, args, 0);
            kr_test_download(be, y, dy, (size_t)rows * 4);
            double e = nmse_d(y, ref, rows);
            cr_expect_leq(e, 1e-10, "%s rows %d nb %d: NMSE %.3g (seed %llu)", entries[q8], rows, nb, e,
                          (unsigned long long)kr_test_seed());
            kr_backend_free(be, bm);
            kr_backend_free(be, by);
            free(m.bytes);
        }
        kr_backend_free(be, bx);
        kr_backend_free(be, bp);
        free(xq);
        free(part);
        free(y);
        free(ref);
    }
    kr_backend_destroy(be);
}

/* Mirror of struct kr_gf_pf (kernels/forward/kr_gf_common.cuh): a kernel parameter by value. */
typedef struct pf_req {
    const void *p[4];
    int64_t n[4];
    int32_t first, nparts, early, ahead;
} pf_req;
_Static_assert(sizeof(pf_req) == 80, "pf_req must match struct kr_gf_pf");

/* Ranges with odd sizes and offsets (narrowed to 16-byte bounds by the kernel), one that
 * narrows to nothing, a NULL base (ignored), and more than 64 KiB per share for large buffers. */
static pf_req pf_make(const uint8_t *a, size_t an, const void *b, size_t bn, int first, int nparts, int early)
{
    pf_req r = {.first = first, .nparts = nparts, .early = early};
    r.p[0] = a + 5;
    r.n[0] = an > 12 ? (int64_t)an - 7 : 0;
    r.p[1] = b;
    r.n[1] = (int64_t)bn;
    r.p[2] = a + 1;
    r.n[2] = 9;
    r.p[3] = NULL;
    r.n[3] = 4096;
    return r;
}

/* ---- PDL chain ----------------------------------------------------------------------- */

/* L rounds of: h, xq = rmsnorm_q8_mb(x); x += W xq (v2, residual add). Each kernel reads
 * what the previous one wrote, so a kernel that ran ahead of its predecessor would
 * read stale data. Launched with KR_LAUNCH_PDL (where the device supports it) and
 * without: the final x must be equal bit for bit, and finite. */
static void run_chain(kr_backend *be, kr_function *fn_norm, kr_function *fn_mv, const mat *m, const float *x0,
                      uint32_t flags, bool with_pf, float *out)
{
    int n = m->rows; /* square: rows = cols = 32 nb */
    kr_buffer *bx, *bh, *bq, *bw;
    float *dx = kr_test_dupload(be, x0, (size_t)n * 4, &bx);
    float *dh = kr_test_dalloc(be, (size_t)n * 4, &bh);
    void *dq = kr_test_dalloc(be, (size_t)n + (size_t)n / 32 * 8, &bq);
    const uint8_t *dw = kr_test_dupload(be, m->bytes, m->n_bytes, &bw);
    const void *dqs = dw, *dsc = dw + m->sc_off;
    const float *wnull = NULL;
    int in = n, q8 = 1, one = 1, nb = m->nb;
    float eps = 1e-5f;
    const float *cdx = dx;
    /* with_pf: fn_norm / fn_mv are the _mbp / mv2t kernels, given prefetch requests over the
     * weights (the norm's before its wait; the matvec's after its rows / before its wait) */
    const int mgrid = (n + 2 * WARPS - 1) / (2 * WARPS), ngrid = (n / 32 + 3) / 4;
    pf_req npf = pf_make(dw, m->n_bytes, dx, (size_t)n * 4, 0, ngrid * 4, 0);
    pf_req mpf[2] = {pf_make(dw, m->n_bytes, dq, (size_t)n, mgrid / 2, mgrid - mgrid / 2, 0),
                     pf_make(dw, m->n_bytes, dq, (size_t)n, 0, mgrid, 1)};
    mpf[1].ahead = 7;
    void *nargs[] = {&cdx, &wnull, &dh, &dq, &in, &eps, &q8, &npf};
    void *margs[2][8] = {{&dqs, &dsc, &dq, &dx, &in, &nb, &one, &mpf[0]}, {&dqs, &dsc, &dq, &dx, &in, &nb, &one, &mpf[1]}};
    void *nargs0[] = {&cdx, &wnull, &dh, &dq, &in, &eps, &q8};
    void *margs0[] = {&dqs, &dsc, &dq, &dx, &in, &nb, &one};
    kr_stream *s = NULL;
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_backend_stream_create(be, &s, &err);
    cr_assert_eq(st, KR_OK, "stream: %s", kr_err_msg(&err, st));
    kr_test_download(be, out, dx, 4); /* uploads done before the stream starts */
    for (int l = 0; l < 48; l++) {
        launch_on(be, s, fn_norm, (uint32_t)ngrid, 128, 1, with_pf ? nargs : nargs0, flags);
        launch_on(be, s, fn_mv, (uint32_t)mgrid, 32, WARPS, with_pf ? margs[l & 1] : margs0, flags);
    }
    st = kr_backend_sync(be, s, &err);
    cr_assert_eq(st, KR_OK, "sync: %s", kr_err_msg(&err, st));
    kr_backend_stream_destroy(be, s);
    kr_test_download(be, out, dx, (size_t)n * 4);
    kr_backend_free(be, bx);
    kr_backend_free(be, bh);
    kr_backend_free(be, bq);
    kr_backend_free(be, bw);
}

Test(gpu_forward_kernels, pdl_chain_equals_plain_launches, .timeout = 120)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_function *fn_norm = get_fn(be, kr_gf_step_fused_src, kr_gf_step_fused_src_LEN,
                                  "forward/step_fused.cu", "kr_gf_rmsnorm_q8_mb");
    kr_function *fn_mv = get_fn(be, kr_gf_matvec_repacked_src, kr_gf_matvec_repacked_src_LEN,
                                k_mv_src.name, "kr_gf_mv2_q4_0_r2p4");
    int nb = 160, n = 32 * nb; /* 5120 */
    mat m = mat_random(0, n, nb);
    float *x0 = malloc((size_t)n * 4), *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
    cr_assert(x0 && a && b);
    for (int i = 0; i < n; i++)
        x0[i] = kr_test_rng_f(-1.0f, 1.0f);
    run_chain(be, fn_norm, fn_mv, &m, x0, KR_LAUNCH_PDL, false, a);
    run_chain(be, fn_norm, fn_mv, &m, x0, 0, false, b);
    int bad = 0;
    for (int i = 0; i < n; i++)
        bad += !isfinite(a[i]);
    cr_expect_eq(bad, 0, "%d non-finite outputs", bad);
    cr_expect_eq(memcmp(a, b, (size_t)n * 4), 0, "PDL chain differs from plain launches (seed %llu)",
                 (unsigned long long)kr_test_seed());
    /* the same chain through the L2-prefetching kernels (requests before the PDL waits) */
    kr_function *fn_norm_p = get_fn(be, kr_gf_step_fused_src, kr_gf_step_fused_src_LEN, "forward/step_fused.cu",
                                    "kr_gf_rmsnorm_q8_mbp");
    kr_function *fn_mv_t = get_fn(be, kr_gf_matvec_repacked_src, kr_gf_matvec_repacked_src_LEN, k_mv_src.name,
                                  "kr_gf_mv2t_q4_0_r2p4");
    run_chain(be, fn_norm_p, fn_mv_t, &m, x0, KR_LAUNCH_PDL, true, a);
    cr_expect_eq(memcmp(a, b, (size_t)n * 4), 0, "PDL chain with L2 prefetch requests differs (seed %llu)",
                 (unsigned long long)kr_test_seed());
    free(x0);
    free(a);
    free(b);
    free(m.bytes);
    kr_backend_destroy(be);
}

/* ---- in-kernel L2 prefetch requests (kr_gf_pf): results unchanged ------------------------ */

/* kr_gf_mv2t_* (every v2 variant) with prefetch requests vs kr_gf_mv2_*: bit-identical y, with and
 * without the residual add, prefetch issued after the rows and before the PDL wait, by all
 * CTAs, by the last 3, or by the last one with more shares than CTAs. */
Test(gpu_forward_kernels, matvec_l2_prefetch_equals_plain, .timeout = 300)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    static const int shapes[][2] = {{1, 1}, {37, 7}, {67, 300}, {1001, 128}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int rows = shapes[si][0], nb = shapes[si][1];
        size_t xb;
        uint8_t *xq = xq_random(nb, &xb);
        kr_buffer *bx;
        void *dx = kr_test_dupload(be, xq, xb, &bx);
        float *y0 = malloc((size_t)rows * 4), *ya = malloc((size_t)rows * 4), *yb = malloc((size_t)rows * 4);
        cr_assert(y0 && ya && yb);
        for (int r = 0; r < rows; r++)
            y0[r] = kr_test_rng_f(-1.0f, 1.0f);
        for (size_t k = 0; k < sizeof k_mv / sizeof k_mv[0]; k++) {
            if (!k_mv[k].v2)
                continue;
            int q8 = k_mv[k].q8;
            mat m = mat_random(q8, rows, nb);
            kr_buffer *bw;
            const uint8_t *dw = kr_test_dupload(be, m.bytes, m.n_bytes, &bw);
            const void *dqs = dw, *dsc = dw + m.sc_off;
            char tentry[64];
            snprintf(tentry, sizeof tentry, "kr_gf_mv2t_%s", k_mv[k].entry + strlen("kr_gf_mv2_"));
            kr_function *fn = get_fn(be, kr_gf_matvec_repacked_src, kr_gf_matvec_repacked_src_LEN, k_mv_src.name,
                                     k_mv[k].entry);
            kr_function *ft = get_fn(be, kr_gf_matvec_repacked_src, kr_gf_matvec_repacked_src_LEN, k_mv_src.name,
                                     tentry);
            int per = WARPS * k_mv[k].rows_per_warp, grid = (rows + per - 1) / per;
            const int cfg[3][2] = {{0, grid}, {grid > 3 ? grid - 3 : 0, grid > 3 ? 3 : grid}, {grid - 1, 7}};
            for (int acc = 0; acc < 2; acc++) {
                kr_buffer *by;
                float *dy = acc ? kr_test_dupload(be, y0, (size_t)rows * 4, &by) : kr_test_dpoisoned(be, (size_t)rows, &by);
                int irows = rows, inb = nb, iacc = acc;
                void *args[] = {&dqs, &dsc, &dx, &dy, &irows, &inb, &iacc};
                launch(be, fn, (uint32_t)grid, 32, WARPS, args, 0);
                kr_test_download(be, ya, dy, (size_t)rows * 4);
                kr_backend_free(be, by);
                for (int c = 0; c < 6; c++) {
                    pf_req pf = pf_make(dw, m.n_bytes, dx, xb, cfg[c / 2][0], cfg[c / 2][1], c & 1);
                    pf.ahead = c % 3 == 0 ? 0 : c % 3 == 1 ? 1 : 3; /* the rows of the CTA 1 / 3 ahead (or none) */
                    dy = acc ? kr_test_dupload(be, y0, (size_t)rows * 4, &by) : kr_test_dpoisoned(be, (size_t)rows, &by);
                    void *targs[] = {&dqs, &dsc, &dx, &dy, &irows, &inb, &iacc, &pf};
                    launch(be, ft, (uint32_t)grid, 32, WARPS, targs, 0);
                    kr_test_download(be, yb, dy, (size_t)rows * 4);
                    kr_backend_free(be, by);
                    cr_expect_eq(memcmp(ya, yb, (size_t)rows * 4), 0,
                                 "%s rows %d nb %d acc %d pf first %d nparts %d early %d ahead %d: differs from %s (seed %llu)",
                                 tentry, rows, nb, acc, pf.first, pf.nparts, pf.early, pf.ahead, k_mv[k].entry,
                                 (unsigned long long)kr_test_seed());
                }
            }
            kr_backend_free(be, bw);
            free(m.bytes);
        }
        kr_backend_free(be, bx);
        free(xq);
        free(y0);
        free(ya);
        free(yb);
    }
    kr_backend_destroy(be);
}

/* kr_gf_rmsnorm_q8_mbp vs kr_gf_rmsnorm_q8_mb (bit-identical h and q8), and kr_gf_swiglu_q8 /
 * kr_gf_swiglu_q8p vs a double reference (y, and q8 of the kernel's own y) and vs each other. */
Test(gpu_forward_kernels, norm_swiglu_l2_prefetch, .timeout = 120)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_function *fmb = get_fn(be, kr_gf_step_fused_src, kr_gf_step_fused_src_LEN, "forward/step_fused.cu",
                              "kr_gf_rmsnorm_q8_mb");
    kr_function *fmbp = get_fn(be, kr_gf_step_fused_src, kr_gf_step_fused_src_LEN, "forward/step_fused.cu",
                               "kr_gf_rmsnorm_q8_mbp");
    kr_function *fsw = get_fn(be, kr_gf_step_fused_src, kr_gf_step_fused_src_LEN, "forward/step_fused.cu",
                              "kr_gf_swiglu_q8");
    kr_function *fswp = get_fn(be, kr_gf_step_fused_src, kr_gf_step_fused_src_LEN, "forward/step_fused.cu",
                               "kr_gf_swiglu_q8p");
    /* a weight-like buffer for the prefetch ranges: 3 MiB + 3 bytes */
    size_t wn = ((size_t)3 << 20) + 3;
    uint8_t *wbytes = malloc(wn);
    cr_assert_not_null(wbytes);
    for (size_t i = 0; i < wn; i++)
        wbytes[i] = (uint8_t)i;
    kr_buffer *bwb;
    const uint8_t *dwb = kr_test_dupload(be, wbytes, wn, &bwb);
    free(wbytes);
    static const int ns[] = {32, 160, 4128, 11008};
    for (size_t t = 0; t < sizeof ns / sizeof ns[0]; t++) {
        int n = ns[t];
        size_t xqb = (size_t)n + (size_t)n / 32 * 8;
        float *x = malloc((size_t)n * 2 * 4), *w = malloc((size_t)n * 4), *ha = malloc((size_t)n * 4),
              *hb = malloc((size_t)n * 4);
        uint8_t *qa = malloc(xqb), *qb = malloc(xqb);
        double *ref = malloc((size_t)n * sizeof *ref);
        cr_assert(x && w && ha && hb && qa && qb && ref);
        for (int i = 0; i < 2 * n; i++)
            x[i] = kr_test_rng_f(-3.0f, 3.0f);
        for (int i = 0; i < n; i++)
            w[i] = kr_test_rng_f(0.5f, 1.5f);
        kr_buffer *bx, *bw, *bh, *bq;
        const float *dx = kr_test_dupload(be, x, (size_t)n * 2 * 4, &bx);
        const float *dw = kr_test_dupload(be, w, (size_t)n * 4, &bw);
        uint32_t nblk = (uint32_t)n / 32;
        const uint32_t grids[3][2] = {{(nblk + 31) / 32, 1024}, {(nblk + 3) / 4, 128}, {1, 64}};
        /* norm: plain, then with requests (shares per warp of the grid, or fewer/more) */
        for (int g = 0; g < 3; g++) {
            int nwarps = (int)(grids[g][0] * grids[g][1] / 32);
            for (int c = -1; c < 3; c++) {
                float *dh = kr_test_dpoisoned(be, (size_t)n, &bh);
                float *dq = kr_test_dpoisoned(be, (xqb + 3) / 4, &bq);
                int in = n, iq8 = 1;
                float eps = 1e-5f;
                const int np[3] = {nwarps, nwarps > 1 ? nwarps - 1 : 1, nwarps + 5};
                pf_req pf = pf_make(dwb, wn, dx, (size_t)n * 8, 0, c < 0 ? 0 : np[c], 0);
                void *args[] = {&dx, &dw, &dh, &dq, &in, &eps, &iq8, &pf};
                launch(be, c < 0 ? fmb : fmbp, grids[g][0], grids[g][1], 1, args, 0);
                kr_test_download(be, c < 0 ? ha : hb, dh, (size_t)n * 4);
                kr_test_download(be, c < 0 ? qa : qb, dq, xqb);
                kr_backend_free(be, bh);
                kr_backend_free(be, bq);
                if (c >= 0) {
                    cr_expect_eq(memcmp(ha, hb, (size_t)n * 4), 0, "rmsnorm_q8_mbp n %d grid %u x %u nparts %d: h differs",
                                 n, grids[g][0], grids[g][1], pf.nparts);
                    cr_expect_eq(memcmp(qa, qb, xqb), 0, "rmsnorm_q8_mbp n %d grid %u x %u nparts %d: q8 differs", n,
                                 grids[g][0], grids[g][1], pf.nparts);
                }
            }
        }
        /* swiglu: y = silu(g) * u of gu = x (2n floats) */
        for (int i = 0; i < n; i++) {
            double gg = x[i], u = x[n + i];
            ref[i] = gg / (1.0 + exp(-gg)) * u;
        }
        for (int c = -1; c < 3; c++) {
            float *dy = kr_test_dpoisoned(be, (size_t)n, &bh);
            float *dq = kr_test_dpoisoned(be, (xqb + 3) / 4, &bq);
            int in = n, iq8 = 1;
            uint32_t grid = (uint32_t)(n + 255) / 256;
            const int np[3] = {(int)grid * 8, 1, (int)grid * 8 + 9};
            pf_req pf = pf_make(dwb, wn, dx, (size_t)n * 8, 0, c < 0 ? 0 : np[c], 0);
            void *args[] = {&dx, &dy, &dq, &in, &iq8, &pf};
            launch(be, c < 0 ? fsw : fswp, grid, 256, 1, args, 0);
            kr_test_download(be, c < 0 ? ha : hb, dy, (size_t)n * 4);
            kr_test_download(be, c < 0 ? qa : qb, dq, xqb);
            kr_backend_free(be, bh);
            kr_backend_free(be, bq);
            char what[96];
            snprintf(what, sizeof what, "swiglu_q8%s n %d nparts %d (seed %llu)", c < 0 ? "" : "p", n, pf.nparts,
                     (unsigned long long)kr_test_seed());
            if (c < 0) {
                double e = nmse_d(ha, ref, n);
                cr_expect_leq(e, 1e-12, "%s: y NMSE %.3g", what, e);
                double *own = malloc((size_t)n * sizeof *own);
                cr_assert_not_null(own);
                for (int i = 0; i < n; i++)
                    own[i] = ha[i];
                check_q8(qa, own, n, what);
                free(own);
            } else {
                cr_expect_eq(memcmp(ha, hb, (size_t)n * 4), 0, "%s: y differs from kr_gf_swiglu_q8", what);
                cr_expect_eq(memcmp(qa, qb, xqb), 0, "%s: q8 differs from kr_gf_swiglu_q8", what);
            }
        }
        kr_backend_free(be, bx);
        kr_backend_free(be, bw);
        free(x);
        free(w);
        free(ha);
        free(hb);
        free(qa);
        free(qb);
        free(ref);
    }
    kr_backend_free(be, bwb);
    kr_backend_destroy(be);
}

/* The embedded texts (kr_decode_common.cuh + kr_gf_common.cuh + .cu, flattened at build
 * time) compile for sm_90 without any include path and contain every entry the step
 * fetches by name. Host only (NVRTC, no device); skips without NVRTC. */
Test(gpu_forward_kernels, embedded_sources_compile_for_sm90, .timeout = 300)
{
    kr_jit_config cfg = {.no_cache = true, .kernel_dir = ""};
    kr_err e;
    kr_err_clear(&e);
    kr_jit *jit = NULL;
    kr_status st = kr_jit_create(&cfg, &jit, &e);
    if (st == KR_ERR_NOT_FOUND || st == KR_ERR_UNSUPPORTED)
        cr_skip_test("NVRTC unavailable: %s", kr_err_msg(&e, st));
    cr_assert_eq(st, KR_OK, "kr_jit_create: %s", kr_err_msg(&e, st));
    static const struct {
        const char *name, *code;
        size_t len;
        const char *entries[6];
    } srcs[] = {
        {"forward/matvec_repacked.cu", kr_gf_matvec_repacked_src, kr_gf_matvec_repacked_src_LEN,
         {"kr_gf_mv2t_q4_0_r2p4(", "kr_gf_mv2t_q8_0_pr2p1(", "kr_gf_mv2_q4_0_r2p4d(", "kr_gf_mv2t_q8_0_r2p1d(",
          "kr_gf_mv2_q4_0_pr2p4(", "kr_gf_mv2_q4_0_r2p1d("}},
        {"forward/step_fused.cu", kr_gf_step_fused_src, kr_gf_step_fused_src_LEN,
         {"kr_gf_rmsnorm_q8_mbp(", "kr_gf_swiglu_q8p(", "kr_gf_rmsnorm_q8_mb(", "kr_gf_swiglu_q8(",
          "kr_gf_add_rmsnorm_q8(", "kr_gf_prefetch_l2("}},
    };
    for (size_t i = 0; i < sizeof srcs / sizeof srcs[0]; i++) {
        kr_jit_source js = {.name = srcs[i].name, .src = srcs[i].code, .len = srcs[i].len};
        kr_jit_image img;
        kr_err_clear(&e);
        st = kr_jit_compile(jit, &js, 90, KR_JIT_PTX, &img, &e);
        cr_expect_eq(st, KR_OK, "%s (embedded) does not compile for sm_90: %s", srcs[i].name, kr_err_msg(&e, st));
        if (st != KR_OK)
            continue;
        for (int k = 0; k < 6; k++) {
            char want[96];
            snprintf(want, sizeof want, ".entry %s", srcs[i].entries[k]);
            cr_expect(strstr(img.data, want) != NULL, "%s: no %s in the PTX", srcs[i].name, want);
        }
        cr_expect(strstr(img.data, "cp.async.bulk.prefetch.L2") != NULL,
                  "%s: no bulk L2 prefetch in the PTX", srcs[i].name);
        kr_jit_image_free(&img);
    }
    kr_jit_free(jit);
}
