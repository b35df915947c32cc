/* Decode kernels (kernels/decode, plugins/cuda_decode) against plain C
 * references on fresh random inputs, by normalised MSE.
 *
 * References: matvec and embedding dequantize with models/quant
 * (kr_dequantize_row, written from the GGML format definition by another
 * hand) and accumulate in double; every other op is written out below from
 * its formula, in double. Outputs are poisoned with NaN before each run so
 * unwritten elements show. Without a GPU every test skips with the reason;
 * with KERNRUN_REQUIRE_GPU=1 it fails instead. The seed is printed on
 * failure (KR_TEST_SEED=n repeats a run). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/backend.h"
#include "kernrun/half.h"
#include "kernrun/quant.h"
#include "kr_decode.h"
#include "kr_test_gpu.h"
#include "kr_test_leaks.h"
#include "kr_test_rng.h"
#include "kr_test_dec.h"

#define KR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ---- harness ---------------------------------------------------------------- */

static void check_ok(kr_status st, const kr_err *err, const char *what)
{
    cr_assert_eq(st, KR_OK, "%s: %s", what, kr_err_msg(err, st));
}

/* For dot products: sum (a-b)^2 / sum mag^2 with mag[i] = sum_j |w_ij x_j|,
 * so a product that cancels to ~0 (a single row, say) is judged against the
 * size of its terms, as fp32 accumulation error is. */
static double nmse_mag(const float *a, const double *ref, const double *mag, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += mag[i] * mag[i];
    }
    return den > 0 ? num / den : num;
}

#define EXPECT_NMSE(out, ref, n, tol, ...)                                                               \
    do {                                                                                                 \
        double e_ = nmse(out, ref, n);                                                                   \
        char what_[256];                                                                                 \
        snprintf(what_, sizeof what_, __VA_ARGS__);                                                      \
        cr_expect(e_ <= (tol), "NMSE %.3g > %.1g (seed %llu): %s", e_, (double)(tol),                   \
                  (unsigned long long)kr_test_seed(), what_);                                                    \
    } while (0)

static float *rand_f32(size_t n, float lo, float hi)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    cr_assert_not_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = kr_test_rng_f(lo, hi);
    return v;
}

static double *dvec(size_t n)
{
    double *v = calloc(n ? n : 1, sizeof *v);
    cr_assert_not_null(v);
    return v;
}

/* ---- random quantized rows (valid GGML blocks) --------------------------------- */

static void put_f16(uint8_t *p, float v)
{
    uint16_t h = kr_fp32_to_fp16(v);
    memcpy(p, &h, 2);
}

/* Random bytes with sane fp16 scale fields, for `nblocks` blocks of type t. */
static void rand_blocks(kr_dtype t, uint8_t *dst, size_t nblocks)
{
    size_t ts = kr_dtype_type_size(t);
    for (size_t b = 0; b < nblocks; b++) {
        uint8_t *p = dst + b * ts;
        for (size_t i = 0; i < ts; i++)
            p[i] = (uint8_t)kr_test_rng_u64();
        switch (t) {
        case KR_DTYPE_F16: put_f16(p, kr_test_rng_f(-1, 1)); break;
        case KR_DTYPE_F32: { float v = kr_test_rng_f(-1, 1); memcpy(p, &v, 4); } break;
        case KR_DTYPE_Q4_0: put_f16(p, kr_test_rng_f(-0.1f, 0.1f)); break;
        case KR_DTYPE_Q8_0: put_f16(p, kr_test_rng_f(-0.01f, 0.01f)); break;
        case KR_DTYPE_Q4_1: put_f16(p, kr_test_rng_f(-0.1f, 0.1f)); put_f16(p + 2, kr_test_rng_f(-1, 1)); break;
        case KR_DTYPE_Q4_K: put_f16(p, kr_test_rng_f(-0.01f, 0.01f)); put_f16(p + 2, kr_test_rng_f(-0.01f, 0.01f)); break;
        case KR_DTYPE_Q6_K: put_f16(p + 208, kr_test_rng_f(-0.001f, 0.001f)); break;
        default: cr_assert_fail("rand_blocks: type %d", (int)t);
        }
    }
}

/* rows x cols matrix of type t, rows `stride` bytes apart (stride >= row bytes) */
static uint8_t *rand_matrix(kr_dtype t, int64_t rows, int64_t cols, size_t stride)
{
    size_t bs = kr_dtype_block_size(t), ts = kr_dtype_type_size(t);
    size_t nb = (size_t)cols / bs;
    uint8_t *m = calloc((size_t)rows, stride);
    cr_assert_not_null(m);
    for (int64_t r = 0; r < rows; r++)
        rand_blocks(t, m + (size_t)r * stride, nb);
    (void)ts;
    return m;
}

static void deq_row(kr_dtype t, const uint8_t *row, float *out, int64_t cols)
{
    if (t == KR_DTYPE_F32) {
        memcpy(out, row, (size_t)cols * 4);
        return;
    }
    kr_status st = kr_dequantize_row(t, row, out, (size_t)cols);
    cr_assert_eq(st, KR_OK, "kr_dequantize_row(%s) failed", kr_dtype_name(t));
}

/* ---- matvec -------------------------------------------------------------------- */

static void run_matvec(gpu *g, kr_dtype t, int64_t rows, int64_t cols, size_t extra_stride)
{
    size_t row_bytes = (size_t)cols / kr_dtype_block_size(t) * kr_dtype_type_size(t);
    size_t stride = row_bytes + extra_stride;
    uint8_t *w = rand_matrix(t, rows, cols, stride);
    float *x = rand_f32((size_t)cols, -1, 1);
    double *ref = dvec((size_t)rows), *mag = dvec((size_t)rows);
    float *row = malloc((size_t)cols * sizeof *row);
    for (int64_t r = 0; r < rows; r++) {
        deq_row(t, w + (size_t)r * stride, row, cols);
        double acc = 0, m = 0;
        for (int64_t c = 0; c < cols; c++) {
            acc += (double)row[c] * x[c];
            m += fabs((double)row[c] * x[c]);
        }
        ref[r] = acc;
        mag[r] = m;
    }
    kr_buffer *bw, *bx, *by;
    void *dw = kr_test_dupload(g->be, w, (size_t)rows * stride, &bw);
    float *dx = kr_test_dupload(g->be, x, (size_t)cols * 4, &bx);
    float *dy = kr_test_dpoisoned(g->be, (size_t)rows, &by);
    kr_err err;
    kr_err_clear(&err);
    check_ok(kr_dec_matvec(g->dec, NULL, t, dw, stride, dx, dy, rows, cols, &err), &err, "matvec");
    float *y = malloc((size_t)rows * sizeof *y);
    kr_test_download(g->be, y, dy, (size_t)rows * 4);
    double e = nmse_mag(y, ref, mag, (size_t)rows);
    cr_expect(e <= 1e-9, "matvec %s %lldx%lld stride %zu: error^2 / sum|w x|^2 = %.3g > 1e-9 (seed %llu)",
              kr_dtype_name(t), (long long)rows, (long long)cols, stride, e, (unsigned long long)kr_test_seed());
    kr_backend_free(g->be, bw);
    kr_backend_free(g->be, bx);
    kr_backend_free(g->be, by);
    free(w);
    free(x);
    free(ref);
    free(mag);
    free(row);
    free(y);
}

static const kr_dtype k_block32[] = {KR_DTYPE_Q4_0, KR_DTYPE_Q4_1, KR_DTYPE_Q8_0, KR_DTYPE_F16, KR_DTYPE_F32};
static const kr_dtype k_block256[] = {KR_DTYPE_Q4_K, KR_DTYPE_Q6_K};

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(gpu_decode, .fini = kr_test_leak_check);
TestSuite(decode_host, .fini = kr_test_leak_check);

Test(gpu_decode, matvec_block32_types, .timeout = 300)
{
    gpu g;
    gpu_open(&g);
    /* rows odd and not a multiple of 8 (rows per block); cols: 1 block, odd
     * blocks (rows not 16-byte aligned), more than one stage, 4096 */
    const int64_t shapes[][2] = {{1, 32}, {37, 224}, {129, 1440}, {7, 4128}, {1001, 4096}, {3, 32 * 257}};
    for (size_t i = 0; i < KR_ARRAY_LEN(k_block32); i++)
        for (size_t s = 0; s < KR_ARRAY_LEN(shapes); s++)
            run_matvec(&g, k_block32[i], shapes[s][0], shapes[s][1], 0);
    /* padded row stride (not a multiple of 16) */
    for (size_t i = 0; i < KR_ARRAY_LEN(k_block32); i++)
        run_matvec(&g, k_block32[i], 45, 640, 4);
    gpu_close(&g);
}

Test(gpu_decode, matvec_k_quants, .timeout = 300)
{
    gpu g;
    gpu_open(&g);
    const int64_t shapes[][2] = {{1, 256}, {37, 768}, {129, 2304}, {1001, 4096}, {5, 256 * 17}};
    for (size_t i = 0; i < KR_ARRAY_LEN(k_block256); i++) {
        for (size_t s = 0; s < KR_ARRAY_LEN(shapes); s++)
            run_matvec(&g, k_block256[i], shapes[s][0], shapes[s][1], 0);
        run_matvec(&g, k_block256[i], 33, 512, 2);
    }
    gpu_close(&g);
}

static void run_matvec_q8(gpu *g, kr_dtype t, int64_t rows, int64_t cols);

/* Non-default launch geometries (rows per warp, warps per block, staged
 * steps; Q6_K's stage is rounded to 8 steps) compute the same products. */
Test(gpu_decode, matvec_tunings, .timeout = 300)
{
    gpu g;
    gpu_open(&g);
    /* the prefetch ones were added after the H200 run (not yet run on a GPU) */
    const kr_dec_tuning tunings[] = {{1, 4, 4, 0}, {4, 2, 3, 0}, {3, 1, 1, 0}, {2, 8, 16, 0},
                                     {2, 4, 16, 1}, {1, 4, 16, 1}, {2, 4, 8, 1}, {2, 8, 16, 1}};
    const kr_dtype types[] = {KR_DTYPE_Q4_0, KR_DTYPE_Q4_1, KR_DTYPE_Q8_0, KR_DTYPE_F16,
                              KR_DTYPE_F32, KR_DTYPE_Q4_K, KR_DTYPE_Q6_K};
    kr_dec *def = g.dec;
    for (size_t k = 0; k < KR_ARRAY_LEN(tunings); k++) {
        kr_err err;
        kr_err_clear(&err);
        kr_dec *d = NULL;
        check_ok(kr_dec_create_tuned(g.be, &tunings[k], &d, &err), &err, "kr_dec_create_tuned");
        g.dec = d;
        for (size_t i = 0; i < KR_ARRAY_LEN(types); i++) {
            int64_t bs = (int64_t)kr_dtype_block_size(types[i]);
            run_matvec(&g, types[i], 13, bs == 256 ? 256 * 19 : 32 * 77, 0);
            run_matvec(&g, types[i], 130, bs == 256 ? 4096 : 4096 + 32, 0);
        }
        run_matvec_q8(&g, KR_DTYPE_Q4_0, 130, 4096 + 32);
        run_matvec_q8(&g, KR_DTYPE_Q8_0, 13, 32 * 77);
        kr_dec_free(d);
    }
    g.dec = def;
    kr_err err;
    kr_err_clear(&err);
    kr_dec *d = NULL;
    const kr_dec_tuning bad = {9, 4, 16, 0};
    cr_expect_eq(kr_dec_create_tuned(g.be, &bad, &d, &err), KR_ERR_UNSUPPORTED, "9 rows per warp is no preset");
    cr_expect_null(d);
    gpu_close(&g);
}

/* x quantized on the device: bit-exact against the formula in C; then the
 * q8 matvec against exact math on those quantized values. */
static void run_matvec_q8(gpu *g, kr_dtype t, int64_t rows, int64_t cols)
{
    size_t stride = (size_t)cols / 32 * kr_dtype_type_size(t);
    uint8_t *w = rand_matrix(t, rows, cols, stride);
    float *x = rand_f32((size_t)cols, -3, 3);
    x[kr_test_rng_u64() % (uint64_t)cols] = 0.0f;
    if (cols >= 64)
        for (int i = 32; i < 64; i++) /* an all-zero block: d = 0 */
            x[i] = 0.0f;
    const int64_t nb = cols / 32;
    int8_t *q = malloc((size_t)cols);
    float *dq = malloc((size_t)nb * 4), *sq = malloc((size_t)nb * 4);
    for (int64_t b = 0; b < nb; b++) {
        float amax = 0;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(x[b * 32 + i]));
        float d = amax / 127.0f;
        int sum = 0;
        for (int i = 0; i < 32; i++) {
            q[b * 32 + i] = (int8_t)(d > 0 ? (int)rintf(x[b * 32 + i] / d) : 0);
            sum += q[b * 32 + i];
        }
        dq[b] = d;
        sq[b] = d * (float)sum;
    }
    double *ref = dvec((size_t)rows), *mag = dvec((size_t)rows);
    float *row = malloc((size_t)cols * 4);
    for (int64_t r = 0; r < rows; r++) {
        deq_row(t, w + (size_t)r * stride, row, cols);
        for (int64_t c = 0; c < cols; c++) {
            double xv = (double)dq[c / 32] * q[c];
            ref[r] += (double)row[c] * xv;
            mag[r] += fabs((double)row[c] * xv);
        }
    }
    size_t xqb = kr_dec_q8_bytes(cols);
    cr_assert_eq(xqb, (size_t)cols + (size_t)nb * 8);
    kr_buffer *bw, *bx, *bq, *by;
    void *dw = kr_test_dupload(g->be, w, (size_t)rows * stride, &bw);
    float *dx = kr_test_dupload(g->be, x, (size_t)cols * 4, &bx);
    uint8_t *dxq = (uint8_t *)kr_test_dpoisoned(g->be, (xqb + 3) / 4, &bq);
    float *dy = kr_test_dpoisoned(g->be, (size_t)rows, &by);
    kr_err err;
    kr_err_clear(&err);
    check_ok(kr_dec_quantize_q8(g->dec, NULL, dx, dxq, cols, &err), &err, "quantize_q8");
    check_ok(kr_dec_matvec_q8(g->dec, NULL, t, dw, stride, dxq, dy, rows, cols, &err), &err, "matvec_q8");
    uint8_t *xq = malloc(xqb);
    kr_test_download(g->be, xq, dxq, xqb);
    cr_expect_eq(memcmp(xq, q, (size_t)cols), 0, "q8 values differ from rint(x/d) (seed %llu)",
                 (unsigned long long)kr_test_seed());
    cr_expect_eq(memcmp(xq + cols, dq, (size_t)nb * 4), 0, "q8 scales differ (seed %llu)",
                 (unsigned long long)kr_test_seed());
    cr_expect_eq(memcmp(xq + cols + nb * 4, sq, (size_t)nb * 4), 0, "q8 sums differ (seed %llu)",
                 (unsigned long long)kr_test_seed());
    float *y = malloc((size_t)rows * 4);
    kr_test_download(g->be, y, dy, (size_t)rows * 4);
    double e = nmse_mag(y, ref, mag, (size_t)rows);
    cr_expect(e <= 1e-9, "matvec_q8 %s %lldx%lld: error^2 / sum|w x|^2 = %.3g > 1e-9 (seed %llu)", kr_dtype_name(t),
              (long long)rows, (long long)cols, e, (unsigned long long)kr_test_seed());
    kr_backend_free(g->be, bw);
    kr_backend_free(g->be, bx);
    kr_backend_free(g->be, bq);
    kr_backend_free(g->be, by);
    free(w);
    free(x);
    free(q);
    free(dq);
    free(sq);
    free(ref);
    free(mag);
    free(row);
    free(xq);
    free(y);
}

Test(gpu_decode, matvec_q8_activations, .timeout = 300)
{
    gpu g;
    gpu_open(&g);
    const int64_t shapes[][2] = {{1, 32}, {37, 224}, {129, 1440}, {1001, 4096}, {3, 32 * 257}};
    const kr_dtype types[] = {KR_DTYPE_Q4_0, KR_DTYPE_Q8_0};
    for (size_t i = 0; i < KR_ARRAY_LEN(types); i++)
        for (size_t s = 0; s < KR_ARRAY_LEN(shapes); s++)
            run_matvec_q8(&g, types[i], shapes[s][0], shapes[s][1]);
    kr_err err;
    kr_err_clear(&err);
    cr_expect_eq(kr_dec_matvec_q8(g.dec, NULL, KR_DTYPE_Q4_1, NULL, 20, NULL, NULL, 1, 32, &err), KR_ERR_UNSUPPORTED);
    cr_expect_eq(kr_dec_q8_bytes(33), 0u);
    gpu_close(&g);
}

Test(gpu_decode, matvec_rejects_bad_args)
{
    gpu g;
    gpu_open(&g);
    kr_buffer *b;
    float *d = kr_test_dalloc(g.be, 4096, &b);
    kr_err err;
    kr_err_clear(&err);
    cr_expect_eq(kr_dec_matvec(g.dec, NULL, KR_DTYPE_Q4_0, d, 18, d, d, 1, 33, &err), KR_ERR_INVALID_ARG,
                 "cols not a multiple of 32");
    cr_expect(strstr(err.msg, "33") != NULL, "message should name the value: %s", err.msg);
    cr_expect_eq(kr_dec_matvec(g.dec, NULL, KR_DTYPE_Q4_0, d, 16, d, d, 1, 32, &err), KR_ERR_INVALID_ARG,
                 "stride below row bytes");
    cr_expect_eq(kr_dec_matvec(g.dec, NULL, KR_DTYPE_Q5_0, d, 22, d, d, 1, 32, &err), KR_ERR_UNSUPPORTED);
    cr_expect_eq(kr_dec_matvec(g.dec, NULL, KR_DTYPE_F32, d, 128, d + 1, d, 1, 32, &err), KR_ERR_INVALID_ARG,
                 "misaligned x");
    kr_backend_free(g.be, b);
    gpu_close(&g);
}

/* ---- embedding ------------------------------------------------------------------ */

Test(gpu_decode, embed_all_types, .timeout = 120)
{
    gpu g;
    gpu_open(&g);
    const kr_dtype types[] = {KR_DTYPE_F32, KR_DTYPE_F16, KR_DTYPE_Q4_0, KR_DTYPE_Q4_1,
                              KR_DTYPE_Q8_0, KR_DTYPE_Q4_K, KR_DTYPE_Q6_K};
    for (size_t i = 0; i < KR_ARRAY_LEN(types); i++) {
        kr_dtype t = types[i];
        int64_t n_vocab = 37, n_embd = kr_dtype_block_size(t) == 256 ? 768 : 288;
        size_t stride = (size_t)n_embd / kr_dtype_block_size(t) * kr_dtype_type_size(t);
        uint8_t *tab = rand_matrix(t, n_vocab, n_embd, stride);
        int32_t tok = (int32_t)(kr_test_rng_u64() % (uint64_t)n_vocab);
        float *row = malloc((size_t)n_embd * 4);
        double *ref = dvec((size_t)n_embd);
        deq_row(t, tab + (size_t)tok * stride, row, n_embd);
        for (int64_t c = 0; c < n_embd; c++)
            ref[c] = row[c];
        kr_buffer *bt, *bk, *bo;
        void *dt = kr_test_dupload(g.be, tab, (size_t)n_vocab * stride, &bt);
        int32_t *dk = kr_test_dupload(g.be, &tok, 4, &bk);
        float *dout = kr_test_dpoisoned(g.be, (size_t)n_embd, &bo);
        kr_err err;
        kr_err_clear(&err);
        check_ok(kr_dec_embed(g.dec, NULL, t, dt, stride, n_vocab, n_embd, dk, 0, dout, &err), &err, "embed");
        kr_test_download(g.be, row, dout, (size_t)n_embd * 4);
        EXPECT_NMSE(row, ref, (size_t)n_embd, 1e-12, "embed %s token %d", kr_dtype_name(t), tok);
        /* out-of-range token (immediate): every output NaN */
        check_ok(kr_dec_embed(g.dec, NULL, t, dt, stride, n_vocab, n_embd, NULL, (int32_t)n_vocab, dout, &err), &err,
                 "embed");
        kr_test_download(g.be, row, dout, (size_t)n_embd * 4);
        for (int64_t c = 0; c < n_embd; c++)
            cr_expect(isnan(row[c]), "embed %s: token %lld out of range gave %g at %lld", kr_dtype_name(t),
                      (long long)n_vocab, row[c], (long long)c);
        kr_backend_free(g.be, bt);
        kr_backend_free(g.be, bk);
        kr_backend_free(g.be, bo);
        free(tab);
        free(row);
        free(ref);
    }
    gpu_close(&g);
}

/* ---- norms ----------------------------------------------------------------------- */

static void run_norm(gpu *g, bool layer, int64_t rows, int64_t n, bool with_w, bool with_b)
{
    const float eps = 1e-5f;
    float *x = rand_f32((size_t)(rows * n), -2, 3);
    float *w = rand_f32((size_t)n, -1, 1), *b = rand_f32((size_t)n, -1, 1);
    double *ref = dvec((size_t)(rows * n));
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n;
        double mu = 0, v = 0;
        if (layer) {
            for (int64_t i = 0; i < n; i++)
                mu += xr[i];
            mu /= (double)n;
        }
        for (int64_t i = 0; i < n; i++)
            v += ((double)xr[i] - mu) * ((double)xr[i] - mu);
        double s = 1.0 / sqrt(v / (double)n + eps);
        for (int64_t i = 0; i < n; i++)
            ref[r * n + i] = ((double)xr[i] - mu) * s * (with_w ? w[i] : 1.0) + (with_b ? b[i] : 0.0);
    }
    kr_buffer *bx, *bw, *bb, *by;
    float *dx = kr_test_dupload(g->be, x, (size_t)(rows * n) * 4, &bx);
    float *dw = kr_test_dupload(g->be, w, (size_t)n * 4, &bw);
    float *db = kr_test_dupload(g->be, b, (size_t)n * 4, &bb);
    float *dy = kr_test_dpoisoned(g->be, (size_t)(rows * n), &by);
    kr_err err;
    kr_err_clear(&err);
    if (layer)
        check_ok(kr_dec_layernorm(g->dec, NULL, dx, with_w ? dw : NULL, with_b ? db : NULL, dy, rows, n, eps, &err),
                 &err, "layernorm");
    else
        check_ok(kr_dec_rmsnorm(g->dec, NULL, dx, with_w ? dw : NULL, dy, rows, n, eps, &err), &err, "rmsnorm");
    float *y = malloc((size_t)(rows * n) * 4);
    kr_test_download(g->be, y, dy, (size_t)(rows * n) * 4);
    EXPECT_NMSE(y, ref, (size_t)(rows * n), 1e-8, "%s rows %lld n %lld w %d b %d", layer ? "layernorm" : "rmsnorm",
                (long long)rows, (long long)n, with_w, with_b);
    kr_backend_free(g->be, bx);
    kr_backend_free(g->be, bw);
    kr_backend_free(g->be, bb);
    kr_backend_free(g->be, by);
    free(x);
    free(w);
    free(b);
    free(ref);
    free(y);
}

Test(gpu_decode, rmsnorm)
{
    gpu g;
    gpu_open(&g);
    const int64_t ns[] = {1, 33, 1000, 4096, 8193};
    for (size_t i = 0; i < KR_ARRAY_LEN(ns); i++) {
        run_norm(&g, false, 3, ns[i], true, false);
        run_norm(&g, false, 1, ns[i], false, false);
    }
    gpu_close(&g);
}

Test(gpu_decode, layernorm)
{
    gpu g;
    gpu_open(&g);
    const int64_t ns[] = {2, 33, 1000, 4544, 8193};
    for (size_t i = 0; i < KR_ARRAY_LEN(ns); i++) {
        run_norm(&g, true, 3, ns[i], true, true);
        run_norm(&g, true, 2, ns[i], false, false);
        run_norm(&g, true, 1, ns[i], true, false);
    }
    gpu_close(&g);
}

/* ---- rope ------------------------------------------------------------------------- */

static void run_rope(gpu *g, int n_head_q, int n_head_k, int head_dim, int n_rot, int pos, bool neox, bool ff)
{
    const float base = 10000.0f, fscale = 0.5f;
    size_t nq = (size_t)n_head_q * head_dim, nk = (size_t)n_head_k * head_dim;
    float *x = rand_f32(nq + nk, -1, 1);
    float *fac = rand_f32((size_t)n_rot / 2, 1, 4);
    double *ref = dvec(nq + nk);
    for (size_t i = 0; i < nq + nk; i++)
        ref[i] = x[i];
    for (int h = 0; h < n_head_q + n_head_k; h++) {
        double *v = ref + (size_t)h * head_dim;
        for (int i = 0; i < n_rot / 2; i++) {
            double th = pos * (double)fscale * pow(base, -2.0 * i / n_rot) / (ff ? fac[i] : 1.0);
            int a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
            double va = v[a], vb = v[b];
            v[a] = va * cos(th) - vb * sin(th);
            v[b] = va * sin(th) + vb * cos(th);
        }
    }
    kr_buffer *bx, *bp, *bf;
    float *dx = kr_test_dupload(g->be, x, (nq + nk) * 4, &bx);
    int32_t *dp = kr_test_dupload(g->be, &pos, 4, &bp);
    float *df = kr_test_dupload(g->be, fac, (size_t)n_rot / 2 * 4, &bf);
    kr_err err;
    kr_err_clear(&err);
    check_ok(kr_dec_rope(g->dec, NULL, dx, n_head_q, n_head_k ? dx + nq : NULL, n_head_k, head_dim, n_rot, dp, 0,
                         base, fscale, ff ? df : NULL, neox, &err),
             &err, "rope");
    kr_test_download(g->be, x, dx, (nq + nk) * 4);
    EXPECT_NMSE(x, ref, nq + nk, 1e-6, "rope heads %d+%d dim %d rot %d pos %d neox %d ff %d", n_head_q, n_head_k,
                head_dim, n_rot, pos, neox, ff);
    kr_backend_free(g->be, bx);
    kr_backend_free(g->be, bp);
    kr_backend_free(g->be, bf);
    free(x);
    free(fac);
    free(ref);
}

Test(gpu_decode, rope)
{
    gpu g;
    gpu_open(&g);
    for (int neox = 0; neox < 2; neox++) {
        run_rope(&g, 8, 8, 64, 64, 0, neox, false);
        run_rope(&g, 32, 8, 128, 128, 4095, neox, false);
        run_rope(&g, 7, 1, 80, 32, 517, neox, false); /* partial rotary, MQA */
        run_rope(&g, 3, 0, 256, 256, 100, neox, true); /* q only, freq factors */
        run_rope(&g, 5, 5, 130, 130, 33, neox, true);  /* more than 64 pairs */
    }
    gpu_close(&g);
}

/* ---- KV cache + attention ------------------------------------------------------------ */

Test(gpu_decode, kv_append_writes_one_row)
{
    gpu g;
    gpu_open(&g);
    const int n_ctx = 19, dim = 3 * 80, pos = 11;
    uint16_t *cache = malloc((size_t)n_ctx * dim * 2);
    for (int i = 0; i < n_ctx * dim; i++)
        cache[i] = 0x7e00; /* fp16 NaN: must stay in every other row */
    float *k = rand_f32((size_t)dim, -70000, 70000); /* includes values that overflow fp16 */
    float *v = rand_f32((size_t)dim, -1, 1);
    kr_buffer *bk, *bv, *bkc, *bvc, *bp;
    float *dk = kr_test_dupload(g.be, k, (size_t)dim * 4, &bk);
    float *dv = kr_test_dupload(g.be, v, (size_t)dim * 4, &bv);
    uint16_t *dkc = kr_test_dupload(g.be, cache, (size_t)n_ctx * dim * 2, &bkc);
    uint16_t *dvc = kr_test_dupload(g.be, cache, (size_t)n_ctx * dim * 2, &bvc);
    int32_t p = pos;
    int32_t *dp = kr_test_dupload(g.be, &p, 4, &bp);
    kr_err err;
    kr_err_clear(&err);
    check_ok(kr_dec_kv_append(g.dec, NULL, dk, dv, dkc, dvc, dim, n_ctx, dp, 0, &err), &err, "kv_append");
    /* position outside the cache: nothing written */
    check_ok(kr_dec_kv_append(g.dec, NULL, dk, dv, dkc, dvc, dim, n_ctx, NULL, n_ctx, &err), &err, "kv_append");
    uint16_t *kc = malloc((size_t)n_ctx * dim * 2), *vc = malloc((size_t)n_ctx * dim * 2);
    kr_test_download(g.be, kc, dkc, (size_t)n_ctx * dim * 2);
    kr_test_download(g.be, vc, dvc, (size_t)n_ctx * dim * 2);
    int bad = 0;
    for (int t = 0; t < n_ctx; t++) {
        for (int i = 0; i < dim; i++) {
            uint16_t ek = t == pos ? kr_fp32_to_fp16(k[i]) : 0x7e00;
            uint16_t ev = t == pos ? kr_fp32_to_fp16(v[i]) : 0x7e00;
            if (kc[t * dim + i] != ek || vc[t * dim + i] != ev)
                bad++;
        }
    }
    cr_expect_eq(bad, 0, "%d cache elements differ from round-to-nearest-even fp16 (seed %llu)", bad,
                 (unsigned long long)kr_test_seed());
    kr_backend_free(g.be, bk);
    kr_backend_free(g.be, bv);
    kr_backend_free(g.be, bkc);
    kr_backend_free(g.be, bvc);
    kr_backend_free(g.be, bp);
    free(cache);
    free(k);
    free(v);
    free(kc);
    free(vc);
    gpu_close(&g);
}

static void run_attention(gpu *g, int n_head, int n_kv, int hd, int n_ctx, int pos, int window, int n_split)
{
    const size_t row = (size_t)n_kv * hd;
    uint16_t *kc = malloc((size_t)n_ctx * row * 2), *vc = malloc((size_t)n_ctx * row * 2);
    for (size_t i = 0; i < (size_t)n_ctx * row; i++) {
        kc[i] = kr_fp32_to_fp16(kr_test_rng_f(-1, 1));
        vc[i] = kr_fp32_to_fp16(kr_test_rng_f(-1, 1));
    }
    float *q = rand_f32((size_t)n_head * hd, -1, 1);
    const float scale = 1.0f / sqrtf((float)hd) * 2.0f; /* sharper than usual: softmax far from uniform */
    double *ref = dvec((size_t)n_head * hd);
    const int t0 = window > 0 && pos - window + 1 > 0 ? pos - window + 1 : 0;
    double *sc = dvec((size_t)n_ctx);
    for (int h = 0; h < n_head; h++) {
        int gk = h / (n_head / n_kv);
        double mx = -INFINITY, sum = 0;
        for (int t = t0; t <= pos; t++) {
            double s = 0;
            for (int d = 0; d < hd; d++)
                s += (double)q[h * hd + d] * kr_fp16_to_fp32(kc[t * row + (size_t)gk * hd + d]);
            sc[t] = s * scale;
            mx = fmax(mx, sc[t]);
        }
        for (int t = t0; t <= pos; t++)
            sum += exp(sc[t] - mx);
        for (int t = t0; t <= pos; t++) {
            double p = exp(sc[t] - mx) / sum;
            for (int d = 0; d < hd; d++)
                ref[h * hd + d] += p * kr_fp16_to_fp32(vc[t * row + (size_t)gk * hd + d]);
        }
    }
    kr_buffer *bk, *bv, *bq, *bo, *bp, *bs = NULL;
    uint16_t *dk = kr_test_dupload(g->be, kc, (size_t)n_ctx * row * 2, &bk);
    uint16_t *dv = kr_test_dupload(g->be, vc, (size_t)n_ctx * row * 2, &bv);
    float *dq = kr_test_dupload(g->be, q, (size_t)n_head * hd * 4, &bq);
    float *dout = kr_test_dpoisoned(g->be, (size_t)n_head * hd, &bo);
    int32_t p = pos;
    int32_t *dp = kr_test_dupload(g->be, &p, 4, &bp);
    size_t nscr = kr_dec_attention_scratch_floats(n_head, hd, n_split);
    float *dscr = nscr ? kr_test_dpoisoned(g->be, nscr, &bs) : NULL;
    kr_err err;
    kr_err_clear(&err);
    check_ok(kr_dec_attention(g->dec, NULL, dq, dk, dv, dout, n_head, n_kv, hd, n_ctx, dp, 0, window, scale, n_split,
                              dscr, &err),
             &err, "attention");
    float *out = malloc((size_t)n_head * hd * 4);
    kr_test_download(g->be, out, dout, (size_t)n_head * hd * 4);
    EXPECT_NMSE(out, ref, (size_t)n_head * hd, 1e-7, "attention heads %d/%d dim %d ctx %d pos %d window %d split %d",
                n_head, n_kv, hd, n_ctx, pos, window, n_split);
    kr_backend_free(g->be, bk);
    kr_backend_free(g->be, bv);
    kr_backend_free(g->be, bq);
    kr_backend_free(g->be, bo);
    kr_backend_free(g->be, bp);
    kr_backend_free(g->be, bs);
    free(kc);
    free(vc);
    free(q);
    free(ref);
    free(sc);
    free(out);
}

Test(gpu_decode, attention, .timeout = 300)
{
    gpu g;
    gpu_open(&g);
    run_attention(&g, 8, 8, 64, 16, 0, 0, 1);        /* first token */
    run_attention(&g, 8, 4, 64, 512, 300, 0, 1);     /* GQA */
    run_attention(&g, 32, 8, 128, 2048, 1999, 0, 1); /* llama-3 shape */
    run_attention(&g, 32, 8, 128, 2048, 1999, 0, 7); /* split-K, chunks not even */
    run_attention(&g, 4, 1, 256, 300, 299, 0, 16);   /* MQA, head_dim 256 */
    run_attention(&g, 6, 2, 80, 100, 3, 0, 8);       /* more splits than keys: empty splits */
    run_attention(&g, 8, 8, 64, 600, 517, 33, 1);    /* sliding window */
    run_attention(&g, 8, 8, 64, 600, 517, 33, 4);
    run_attention(&g, 5, 5, 2, 40, 39, 0, 3);        /* tiny head */
    gpu_close(&g);
}

Test(gpu_decode, attention_position_out_of_range_is_nan)
{
    gpu g;
    gpu_open(&g);
    const int n_head = 2, hd = 64, n_ctx = 8;
    kr_buffer *bk, *bq, *bo;
    void *dk = kr_test_dalloc(g.be, (size_t)n_ctx * n_head * hd * 2, &bk);
    float *dq = kr_test_dalloc(g.be, (size_t)n_head * hd * 4, &bq);
    float *dout = kr_test_dalloc(g.be, (size_t)n_head * hd * 4, &bo);
    kr_err err;
    kr_err_clear(&err);
    check_ok(kr_dec_backend(g.dec) == g.be ? KR_OK : KR_ERR_INTERNAL, &err, "backend");
    float *scr = NULL;
    kr_buffer *bs;
    scr = kr_test_dalloc(g.be, kr_dec_attention_scratch_floats(n_head, hd, 2) * 4, &bs);
    for (int split = 1; split <= 2; split++) {
        check_ok(kr_dec_attention(g.dec, NULL, dq, dk, dk, dout, n_head, n_head, hd, n_ctx, NULL, n_ctx, 0, 1.0f,
                                  split, scr, &err),
                 &err, "attention");
        float out[128];
        kr_test_download(g.be, out, dout, sizeof out);
        for (int i = 0; i < n_head * hd; i++)
            cr_expect(isnan(out[i]), "split %d: element %d is %g, want NaN", split, i, out[i]);
    }
    cr_expect_eq(kr_dec_attention(g.dec, NULL, dq, dk, dk, dout, 3, 2, hd, n_ctx, NULL, 0, 0, 1.0f, 1, NULL, &err),
                 KR_ERR_INVALID_ARG, "n_head not a multiple of n_kv_head");
    cr_expect_eq(kr_dec_attention(g.dec, NULL, dq, dk, dk, dout, 2, 2, 258, n_ctx, NULL, 0, 0, 1.0f, 1, NULL, &err),
                 KR_ERR_INVALID_ARG, "head_dim > 256");
    cr_expect_eq(kr_dec_attention(g.dec, NULL, dq, dk, dk, dout, 2, 2, hd, n_ctx, NULL, 0, 0, 1.0f, 2, NULL, &err),
                 KR_ERR_INVALID_ARG, "split without scratch");
    kr_backend_free(g.be, bk);
    kr_backend_free(g.be, bq);
    kr_backend_free(g.be, bo);
    kr_backend_free(g.be, bs);
    gpu_close(&g);
}

/* ---- softmax and element-wise ---------------------------------------------------------- */

Test(gpu_decode, softmax)
{
    gpu g;
    gpu_open(&g);
    const int64_t shapes[][2] = {{1, 1}, {3, 7}, {2, 1000}, {1, 32000}, {4, 4097}};
    for (size_t s = 0; s < KR_ARRAY_LEN(shapes); s++) {
        int64_t rows = shapes[s][0], n = shapes[s][1];
        size_t tot = (size_t)(rows * n);
        float *x = rand_f32(tot, -20, 20);
        double *ref = dvec(tot);
        for (int64_t r = 0; r < rows; r++) {
            double mx = -INFINITY, sum = 0;
            for (int64_t i = 0; i < n; i++)
                mx = fmax(mx, x[r * n + i]);
            for (int64_t i = 0; i < n; i++)
                sum += exp(x[r * n + i] - mx);
            for (int64_t i = 0; i < n; i++)
                ref[r * n + i] = exp(x[r * n + i] - mx) / sum;
        }
        kr_buffer *bx, *by;
        float *dx = kr_test_dupload(g.be, x, tot * 4, &bx);
        float *dy = kr_test_dpoisoned(g.be, tot, &by);
        kr_err err;
        kr_err_clear(&err);
        check_ok(kr_dec_softmax(g.dec, NULL, dx, dy, rows, n, &err), &err, "softmax");
        kr_test_download(g.be, x, dy, tot * 4);
        EXPECT_NMSE(x, ref, tot, 1e-8, "softmax %lldx%lld", (long long)rows, (long long)n);
        kr_backend_free(g.be, bx);
        kr_backend_free(g.be, by);
        free(x);
        free(ref);
    }
    gpu_close(&g);
}

Test(gpu_decode, swiglu_gelu_add)
{
    gpu g;
    gpu_open(&g);
    const int64_t ns[] = {1, 255, 11008, 100003};
    for (size_t s = 0; s < KR_ARRAY_LEN(ns); s++) {
        size_t n = (size_t)ns[s];
        float *a = rand_f32(n, -8, 8), *b = rand_f32(n, -3, 3), *y = malloc(n * 4);
        double *rs = dvec(n), *rg = dvec(n), *ra = dvec(n);
        for (size_t i = 0; i < n; i++) {
            double v = a[i];
            rs[i] = v / (1 + exp(-v)) * b[i];
            /* 0.5 v (1 + tanh z) written as v / (1 + e^-2z): equal, and free of the
             * cancellation of 1 + tanh(z) for negative v, even in double */
            double z = sqrt(2 / M_PI) * (v + 0.044715 * v * v * v);
            rg[i] = v / (1 + exp(-2 * z));
            ra[i] = v + b[i];
        }
        kr_buffer *ba, *bb, *by;
        float *da = kr_test_dupload(g.be, a, n * 4, &ba), *db = kr_test_dupload(g.be, b, n * 4, &bb);
        float *dy = kr_test_dpoisoned(g.be, n, &by);
        kr_err err;
        kr_err_clear(&err);
        check_ok(kr_dec_swiglu(g.dec, NULL, da, db, dy, (int64_t)n, &err), &err, "swiglu");
        kr_test_download(g.be, y, dy, n * 4);
        EXPECT_NMSE(y, rs, n, 1e-9, "swiglu n %zu", n);
        check_ok(kr_dec_gelu(g.dec, NULL, da, dy, (int64_t)n, &err), &err, "gelu");
        kr_test_download(g.be, y, dy, n * 4);
        EXPECT_NMSE(y, rg, n, 1e-9, "gelu n %zu", n);
        check_ok(kr_dec_add(g.dec, NULL, da, db, da, (int64_t)n, &err), &err, "add"); /* in place */
        kr_test_download(g.be, y, da, n * 4);
        EXPECT_NMSE(y, ra, n, 1e-12, "add n %zu", n);
        kr_backend_free(g.be, ba);
        kr_backend_free(g.be, bb);
        kr_backend_free(g.be, by);
        free(a);
        free(b);
        free(y);
        free(rs);
        free(rg);
        free(ra);
    }
    gpu_close(&g);
}

/* ---- programmatic dependent launch ------------------------------------------------ */

/* A chain where every launch reads what the previous one wrote, on one stream:
 *   h = rmsnorm(x); xq = quantize_q8(h); y = W xq (q8 matvec); x = x + y; x = swiglu(x, h)
 * repeated, with kr_dec_set_pdl on and off: bit-identical results (a kernel that
 * started before its predecessor finished would read stale data), finite. */
static void pdl_chain(gpu *g, bool pdl, kr_dtype t, const uint8_t *w, int64_t n, const float *x0, float *out)
{
    kr_err err;
    kr_err_clear(&err);
    kr_dec_set_pdl(g->dec, pdl);
    cr_expect_eq(kr_dec_launch_flags(g->dec), pdl ? (uint32_t)KR_LAUNCH_PDL : 0u);
    size_t rs = (size_t)n / 32 * kr_dtype_type_size(t);
    kr_buffer *bw, *bx, *bh, *by, *bq;
    const uint8_t *dw = kr_test_dupload(g->be, w, rs * (size_t)n, &bw);
    float *dx = kr_test_dupload(g->be, x0, (size_t)n * 4, &bx);
    float *dh = kr_test_dalloc(g->be, (size_t)n * 4, &bh), *dy = kr_test_dalloc(g->be, (size_t)n * 4, &by);
    void *dq = kr_test_dalloc(g->be, kr_dec_q8_bytes(n), &bq);
    kr_stream *s = NULL;
    check_ok(kr_backend_stream_create(g->be, &s, &err), &err, "stream");
    for (int l = 0; l < 24; l++) {
        check_ok(kr_dec_rmsnorm(g->dec, s, dx, NULL, dh, 1, n, 1e-5f, &err), &err, "rmsnorm");
        check_ok(kr_dec_quantize_q8(g->dec, s, dh, dq, n, &err), &err, "quantize");
        check_ok(kr_dec_matvec_q8(g->dec, s, t, dw, rs, dq, dy, n, n, &err), &err, "matvec_q8");
        check_ok(kr_dec_add(g->dec, s, dx, dy, dx, n, &err), &err, "add");
        check_ok(kr_dec_swiglu(g->dec, s, dx, dh, dx, n, &err), &err, "swiglu");
    }
    check_ok(kr_backend_sync(g->be, s, &err), &err, "sync");
    kr_backend_stream_destroy(g->be, s);
    kr_test_download(g->be, out, dx, (size_t)n * 4);
    kr_backend_free(g->be, bw);
    kr_backend_free(g->be, bx);
    kr_backend_free(g->be, bh);
    kr_backend_free(g->be, by);
    kr_backend_free(g->be, bq);
    kr_dec_set_pdl(g->dec, false);
}

Test(gpu_decode, pdl_chain_equals_plain_launches, .timeout = 120)
{
    gpu g;
    gpu_open(&g);
    cr_expect_eq(kr_dec_launch_flags(g.dec), 0u, "PDL must be off by default");
    const kr_dtype types[] = {KR_DTYPE_Q4_0, KR_DTYPE_Q8_0};
    const int64_t n = 4096 + 96;
    for (size_t ti = 0; ti < KR_ARRAY_LEN(types); ti++) {
        kr_dtype t = types[ti];
        size_t rs = (size_t)n / 32 * kr_dtype_type_size(t);
        uint8_t *w = rand_matrix(t, n, n, rs);
        float *x0 = rand_f32((size_t)n, -1, 1), *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
        cr_assert(a && b);
        pdl_chain(&g, true, t, w, n, x0, a);
        pdl_chain(&g, false, t, w, n, x0, b);
        int bad = 0;
        for (int64_t i = 0; i < n; i++)
            bad += !isfinite(a[i]);
        cr_expect_eq(bad, 0, "%s: %d non-finite", kr_dtype_name(t), bad);
        cr_expect_eq(memcmp(a, b, (size_t)n * 4), 0, "%s: PDL chain differs from plain launches (seed %llu)",
                     kr_dtype_name(t), (unsigned long long)kr_test_seed());
        free(w);
        free(x0);
        free(a);
        free(b);
    }
    gpu_close(&g);
}

/* ---- CPU-only: the embedded sources and argument checks ----------------------------------- */

Test(decode_host, default_splits_are_sane)
{
    kr_device_info dev = {.struct_size = sizeof dev, .sm_count = 132};
    cr_expect_eq(kr_dec_attention_default_splits(&dev, 32, 4096), 9); /* ceil(264/32) */
    cr_expect_eq(kr_dec_attention_default_splits(&dev, 32, 64), 2);  /* capped by context */
    cr_expect_eq(kr_dec_attention_default_splits(&dev, 1, 1 << 20), 64);
    cr_expect_eq(kr_dec_attention_default_splits(NULL, 264, 4096), 1);
    cr_expect_eq(kr_dec_attention_scratch_floats(32, 128, 1), 0);
    cr_expect_eq(kr_dec_attention_scratch_floats(32, 128, 4), 32u * 4u * 130u);
}

Test(decode_host, tuning_presets)
{
    size_t n = kr_dec_tuning_count();
    cr_assert_geq(n, 2);
    kr_dec_tuning t0, a, b;
    cr_assert(kr_dec_tuning_at(0, &t0));
    cr_expect(t0.mv_rows == 2 && t0.mv_warps == 4 && t0.mv_steps == 16, "default tuning changed: update docs");
    for (size_t i = 0; i < n; i++) {
        cr_assert(kr_dec_tuning_at(i, &a));
        cr_expect(a.mv_rows >= 1 && a.mv_rows <= 8 && a.mv_warps >= 1 && a.mv_warps <= 16 && a.mv_steps >= 1);
        for (size_t j = i + 1; j < n; j++) {
            cr_assert(kr_dec_tuning_at(j, &b));
            cr_expect(a.mv_rows != b.mv_rows || a.mv_warps != b.mv_warps || a.mv_steps != b.mv_steps ||
                          a.mv_prefetch != b.mv_prefetch,
                      "presets %zu and %zu are the same", i, j);
        }
    }
    cr_expect_not(kr_dec_tuning_at(n, &a));
    /* per-type defaults are presets; F16 uses one row per warp (H200 sweep) */
    const kr_dtype types[] = {KR_DTYPE_F32, KR_DTYPE_F16, KR_DTYPE_Q4_0, KR_DTYPE_Q4_1,
                              KR_DTYPE_Q8_0, KR_DTYPE_Q4_K, KR_DTYPE_Q6_K};
    for (size_t i = 0; i < KR_ARRAY_LEN(types); i++) {
        cr_assert(kr_dec_default_tuning(types[i], &a), "%s", kr_dtype_name(types[i]));
        bool found = false;
        for (size_t j = 0; j < n && !found; j++) {
            cr_assert(kr_dec_tuning_at(j, &b));
            found = a.mv_rows == b.mv_rows && a.mv_warps == b.mv_warps && a.mv_steps == b.mv_steps &&
                    a.mv_prefetch == b.mv_prefetch;
        }
        cr_expect(found, "default tuning of %s is no preset", kr_dtype_name(types[i]));
    }
    cr_assert(kr_dec_default_tuning(KR_DTYPE_F16, &a));
    cr_expect_eq(a.mv_rows, 1);
    cr_expect_not(kr_dec_default_tuning(KR_DTYPE_Q5_0, &a));
    kr_dec *d = NULL;
    const kr_dec_tuning bad = {9, 4, 16, 0};
    cr_expect_eq(kr_dec_create_tuned(NULL, &bad, &d, NULL), KR_ERR_UNSUPPORTED);
    cr_expect_null(d);
}

Test(decode_host, create_needs_a_cuda_backend)
{
    kr_backend *cpu = NULL;
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(kr_backend_create(KR_BACKEND_CPU, 0, &cpu, &err), KR_OK, "%s", err.msg);
    kr_dec *d = (kr_dec *)1;
    cr_expect_eq(kr_dec_create(cpu, &d, &err), KR_ERR_INVALID_ARG);
    cr_expect_null(d);
    kr_backend_destroy(cpu);
}

/* ---- through the runtime: plugin load, registry dispatch, op adapters ------------------------- */

#include "kernrun/runtime.h"

static kr_runtime *open_runtime(void)
{
    kr_runtime *rt = NULL;
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_runtime_open(NULL, &rt, &err);
    cr_assert_eq(st, KR_OK, "kr_runtime_open: %s", kr_err_msg(&err, st));
    return rt;
}

Test(decode_host, plugin_registers_its_ops)
{
    kr_runtime *rt = open_runtime();
    for (size_t i = 0; i < kr_runtime_plugin_failure_count(rt); i++) {
        kr_plugin_failure f;
        cr_assert(kr_runtime_plugin_failure_at(rt, i, &f));
        cr_expect(strstr(f.path, "cuda_decode") == NULL, "cuda_decode refused: %s", f.reason);
    }
    const kr_registry *reg = kr_runtime_registry(rt);
    const char *const names[][2] = {
        {"matvec_cuda", "matmul"}, {"get_rows_cuda", "get_rows"}, {"rms_norm_cuda", "rms_norm"},
        {"layer_norm_cuda", "layer_norm"}, {"rope_cuda", "rope"}, {"attention_decode_cuda", "attention"},
        {"swiglu_cuda", "swiglu"}, {"gelu_cuda", "gelu"}, {"add_cuda", "add"}, {"softmax_cuda", "softmax"},
        {"store_kv_cuda", "store_kv"},
    };
    for (size_t i = 0; i < KR_ARRAY_LEN(names); i++) {
        kr_kernel_ref ref;
        cr_assert(kr_registry_find_kernel_by_name(reg, names[i][0], &ref), "%s not registered", names[i][0]);
        cr_expect_str_eq(ref.kernel->op, names[i][1]);
        cr_expect_eq(ref.kernel->backend, KR_BACKEND_CUDA);
        cr_expect_str_eq(ref.plugin, "cuda_decode");
        /* supports() refuses operands it cannot run (no tensors, no params) */
        kr_kernel_args none = {.op = names[i][1]};
        cr_expect_not(ref.kernel->supports(&none, NULL), "%s accepted empty args", names[i][0]);
    }
    kr_runtime_close(rt);
}

Test(gpu_decode, registry_dispatch_runs_the_cuda_ops, .timeout = 120)
{
    gpu g;
    gpu_open(&g); /* skip / require logic; the runtime opens its own backend */
    kr_runtime *rt = open_runtime();
    kr_backend *be = kr_runtime_backend(rt);
    cr_assert(be && be->kind == KR_BACKEND_CUDA, "runtime did not pick CUDA: %s", kr_runtime_cuda_status(rt));
    kr_err err;
    kr_err_clear(&err);

    /* matmul: Q8_0 W (rows 77, cols 320) @ x (320, n = 2) */
    const int64_t rows = 77, cols = 320, n = 2;
    size_t stride = (size_t)cols / 32 * 34;
    uint8_t *w = rand_matrix(KR_DTYPE_Q8_0, rows, cols, stride);
    float *x = rand_f32((size_t)(cols * n), -1, 1);
    double *ref = dvec((size_t)(rows * n));
    float *row = malloc((size_t)cols * 4);
    for (int64_t r = 0; r < rows; r++) {
        deq_row(KR_DTYPE_Q8_0, w + (size_t)r * stride, row, cols);
        for (int64_t j = 0; j < n; j++) {
            double acc = 0;
            for (int64_t c = 0; c < cols; c++)
                acc += (double)row[c] * x[j * cols + c];
            ref[j * rows + r] = acc;
        }
    }
    kr_buffer *bw, *bx, *by;
    kr_tensor tw, tx, ty;
    cr_assert_eq(kr_tensor_init(&tw, KR_DTYPE_Q8_0, cols, rows, 1, 1), KR_OK);
    cr_assert_eq(kr_tensor_init(&tx, KR_DTYPE_F32, cols, n, 1, 1), KR_OK);
    cr_assert_eq(kr_tensor_init(&ty, KR_DTYPE_F32, rows, n, 1, 1), KR_OK);
    gpu rg = {.be = be};
    tw.data = kr_test_dupload(rg.be, w, (size_t)rows * stride, &bw);
    tx.data = kr_test_dupload(rg.be, x, (size_t)(cols * n) * 4, &bx);
    ty.data = kr_test_dpoisoned(rg.be, (size_t)(rows * n), &by);
    tw.buf = bw;
    tx.buf = bx;
    ty.buf = by;
    const kr_tensor *srcs[] = {&tw, &tx};
    kr_kernel_args mm = {.op = "matmul", .src = srcs, .n_src = 2, .dst = &ty};
    kr_status st = kr_runtime_run_op(rt, &mm, NULL, &err);
    cr_assert_eq(st, KR_OK, "matmul: %s", kr_err_msg(&err, st));
    float *y = malloc((size_t)(rows * n) * 4);
    kr_test_download(rg.be, y, ty.data, (size_t)(rows * n) * 4);
    EXPECT_NMSE(y, ref, (size_t)(rows * n), 1e-7, "registry matmul q8_0");

    /* rms_norm on the result, in place, with eps as the params */
    double *rn = dvec((size_t)(rows * n));
    for (int64_t j = 0; j < n; j++) {
        double ss = 0;
        for (int64_t r = 0; r < rows; r++)
            ss += (double)y[j * rows + r] * y[j * rows + r];
        double s = 1.0 / sqrt(ss / (double)rows + 1e-6);
        for (int64_t r = 0; r < rows; r++)
            rn[j * rows + r] = y[j * rows + r] * s;
    }
    const float eps = 1e-6f;
    const kr_tensor *nsrc[] = {&ty};
    kr_kernel_args rms = {.op = "rms_norm", .src = nsrc, .n_src = 1, .dst = &ty, .params = &eps,
                          .params_size = sizeof eps};
    st = kr_runtime_run_op(rt, &rms, NULL, &err);
    cr_assert_eq(st, KR_OK, "rms_norm: %s", kr_err_msg(&err, st));
    kr_test_download(rg.be, y, ty.data, (size_t)(rows * n) * 4);
    EXPECT_NMSE(y, rn, (size_t)(rows * n), 1e-8, "registry rms_norm");

    kr_backend_free(be, bw);
    kr_backend_free(be, bx);
    kr_backend_free(be, by);
    free(w);
    free(x);
    free(ref);
    free(row);
    free(y);
    free(rn);
    kr_runtime_close(rt);
    gpu_close(&g);
}

/* ---- CPU-only: every matvec tuning preset compiles to a cubin for sm_90 ----------------------- */

#include "kernrun/jit.h"

static char *read_text(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    cr_assert_eq(fseek(f, 0, SEEK_END), 0);
    long n = ftell(f);
    cr_assert_gt(n, 0);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    cr_assert_not_null(buf);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

Test(decode_host, every_tuning_compiles, .timeout = 600)
{
    const char *dir = getenv("KR_DECODE_KERNELS_DIR");
#ifdef KR_DECODE_KERNELS_DIR_DEFAULT
    if (!dir || !dir[0])
        dir = KR_DECODE_KERNELS_DIR_DEFAULT;
#endif
    cr_assert(dir && dir[0], "KR_DECODE_KERNELS_DIR is not set (tests/gpu_decode/meson.build sets it)");
    /* a cache in the build dir: a second run (compute-sanitizer) is quick */
    const char *cache = getenv("KR_DECODE_JIT_CACHE");
#ifdef KR_DECODE_JIT_CACHE_DEFAULT
    if (!cache || !cache[0])
        cache = KR_DECODE_JIT_CACHE_DEFAULT;
#endif
    kr_jit_config cfg = {.cache_dir = cache, .no_cache = !cache || !cache[0], .kernel_dir = ""};
    kr_jit *jit = NULL;
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_jit_create(&cfg, &jit, &err);
    if (st != KR_OK)
        cr_skip_test("NVRTC unavailable: %s", kr_err_msg(&err, st));
    char path[4096], inc[4200];
    snprintf(path, sizeof path, "%s/matvec.cu", dir);
    snprintf(inc, sizeof inc, "-I%s", dir);
    size_t len;
    char *text = read_text(path, &len);
    for (size_t i = 0; i < kr_dec_tuning_count(); i++) {
        kr_dec_tuning t;
        cr_assert(kr_dec_tuning_at(i, &t));
        char o1[32], o2[32], o3[32], o4[32];
        snprintf(o1, sizeof o1, "-DKR_MV_ROWS=%d", t.mv_rows);
        snprintf(o2, sizeof o2, "-DKR_MV_WARPS=%d", t.mv_warps);
        snprintf(o3, sizeof o3, "-DKR_MV_STEPS=%d", t.mv_steps);
        snprintf(o4, sizeof o4, "-DKR_MV_PREFETCH=%d", t.mv_prefetch);
        const char *opts[] = {inc, o1, o2, o3, o4};
        kr_jit_source src = {.name = "decode/matvec.cu", .src = text, .len = len, .options = opts, .n_options = 5};
        kr_jit_image img;
        kr_err_clear(&err);
        st = kr_jit_compile(jit, &src, 90, KR_JIT_CUBIN, &img, &err);
        cr_expect_eq(st, KR_OK, "tuning %zu (%d rows, %d warps, %d steps): %s", i, t.mv_rows, t.mv_warps,
                     t.mv_steps, kr_err_msg(&err, st)); /* prefetch in the preset index */
        if (st == KR_OK)
            kr_jit_image_free(&img);
    }
    free(text);
    kr_jit_free(jit);
}

/* ---- the other registry ops through the runtime (adapters of plugin.c) ---------------------- */

#include "kernrun/ops.h"

typedef struct rt_ctx {
    kr_runtime *rt;
    gpu g;          /* the runtime's backend, for the upload helpers */
    kr_buffer *bufs[32];
    int n;
} rt_ctx;

static void *rt_up(rt_ctx *c, const void *host, size_t bytes)
{
    cr_assert_lt(c->n, 32);
    return kr_test_dupload(c->g.be, host, bytes, &c->bufs[c->n++]);
}

static float *rt_poison(rt_ctx *c, size_t n)
{
    cr_assert_lt(c->n, 32);
    return kr_test_dpoisoned(c->g.be, n, &c->bufs[c->n++]);
}

/* data is the block rt_up/rt_poison just allocated (c->bufs[c->n - 1]); the
 * tensor records that buffer so dispatch sees device memory. */
static void rt_tensor(rt_ctx *c, kr_tensor *t, kr_dtype type, int64_t ne0, int64_t ne1, void *data)
{
    cr_assert_eq(kr_tensor_init(t, type, ne0, ne1, 1, 1), KR_OK);
    cr_assert(c->n > 0 && c->bufs[c->n - 1]->ptr == data);
    t->data = data;
    t->buf = c->bufs[c->n - 1];
}

static void rt_run(rt_ctx *c, kr_kernel_args *a)
{
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_runtime_run_op(c->rt, a, NULL, &err);
    cr_assert_eq(st, KR_OK, "%s: %s", a->op, kr_err_msg(&err, st));
    kr_kernel_ref ref;
    kr_err_clear(&err);
    cr_assert_eq(kr_registry_dispatch(kr_runtime_registry(c->rt), a->op, a, KR_BACKEND_CUDA,
                                      kr_backend_device_info(c->g.be), NULL, &ref, &err),
                 KR_OK, "%s: %s", a->op, err.msg);
    cr_expect_str_eq(ref.plugin, "cuda_decode", "%s dispatched to %s", a->op, ref.plugin);
}

Test(gpu_decode, registry_dispatch_other_ops, .timeout = 120)
{
    gpu g0;
    gpu_open(&g0);
    rt_ctx c = {.rt = open_runtime()};
    c.g.be = kr_runtime_backend(c.rt);
    cr_assert(c.g.be && c.g.be->kind == KR_BACKEND_CUDA, "runtime did not pick CUDA");

    /* get_rows: Q4_0 table (10 x 64), ids {3, 7} */
    {
        const int64_t nv = 10, ne = 64;
        size_t stride = (size_t)ne / 32 * 18;
        uint8_t *tab = rand_matrix(KR_DTYPE_Q4_0, nv, ne, stride);
        int32_t ids[2] = {3, 7};
        double ref[128];
        float row[64], out[128];
        for (int j = 0; j < 2; j++) {
            deq_row(KR_DTYPE_Q4_0, tab + (size_t)ids[j] * stride, row, ne);
            for (int i = 0; i < ne; i++)
                ref[j * ne + i] = row[i];
        }
        kr_tensor tt, ti, to;
        rt_tensor(&c, &tt, KR_DTYPE_Q4_0, ne, nv, rt_up(&c, tab, (size_t)nv * stride));
        rt_tensor(&c, &ti, KR_DTYPE_I32, 2, 1, rt_up(&c, ids, sizeof ids));
        rt_tensor(&c, &to, KR_DTYPE_F32, ne, 2, rt_poison(&c, 128));
        const kr_tensor *src[] = {&tt, &ti};
        kr_kernel_args a = {.op = "get_rows", .src = src, .n_src = 2, .dst = &to};
        rt_run(&c, &a);
        kr_test_download(c.g.be, out, to.data, sizeof out);
        EXPECT_NMSE(out, ref, 128, 1e-12, "registry get_rows");
        free(tab);
    }
    /* layer_norm with w and b; swiglu, gelu, add, softmax on (33, 2) */
    {
        const int dim = 33, rows = 2, n = dim * rows;
        float *x = rand_f32((size_t)n, -2, 2), *w = rand_f32((size_t)dim, -1, 1), *b = rand_f32((size_t)dim, -1, 1);
        float *u = rand_f32((size_t)n, -2, 2);
        double ref[66];
        float out[66];
        for (int r = 0; r < rows; r++) {
            double mu = 0, v = 0;
            for (int i = 0; i < dim; i++)
                mu += x[r * dim + i];
            mu /= dim;
            for (int i = 0; i < dim; i++)
                v += (x[r * dim + i] - mu) * (x[r * dim + i] - mu);
            double s = 1 / sqrt(v / dim + 1e-5);
            for (int i = 0; i < dim; i++)
                ref[r * dim + i] = (x[r * dim + i] - mu) * s * w[i] + b[i];
        }
        kr_tensor tx, tw, tb, tu, ty;
        rt_tensor(&c, &tx, KR_DTYPE_F32, dim, rows, rt_up(&c, x, (size_t)n * 4));
        rt_tensor(&c, &tw, KR_DTYPE_F32, dim, 1, rt_up(&c, w, (size_t)dim * 4));
        rt_tensor(&c, &tb, KR_DTYPE_F32, dim, 1, rt_up(&c, b, (size_t)dim * 4));
        rt_tensor(&c, &tu, KR_DTYPE_F32, dim, rows, rt_up(&c, u, (size_t)n * 4));
        rt_tensor(&c, &ty, KR_DTYPE_F32, dim, rows, rt_poison(&c, (size_t)n));
        const float eps = 1e-5f;
        const kr_tensor *ln_src[] = {&tx, &tw, &tb};
        kr_kernel_args ln = {.op = "layer_norm", .src = ln_src, .n_src = 3, .dst = &ty, .params = &eps,
                             .params_size = sizeof eps};
        rt_run(&c, &ln);
        kr_test_download(c.g.be, out, ty.data, sizeof out);
        EXPECT_NMSE(out, ref, (size_t)n, 1e-8, "registry layer_norm");

        for (int i = 0; i < n; i++)
            ref[i] = x[i] / (1 + exp(-(double)x[i])) * u[i];
        const kr_tensor *sw_src[] = {&tx, &tu};
        kr_kernel_args sw = {.op = "swiglu", .src = sw_src, .n_src = 2, .dst = &ty};
        rt_run(&c, &sw);
        kr_test_download(c.g.be, out, ty.data, sizeof out);
        EXPECT_NMSE(out, ref, (size_t)n, 1e-9, "registry swiglu");

        for (int i = 0; i < n; i++) {
            double v = x[i], z = sqrt(2 / M_PI) * (v + 0.044715 * v * v * v);
            ref[i] = v / (1 + exp(-2 * z));
        }
        const kr_tensor *ge_src[] = {&tx};
        kr_kernel_args ge = {.op = "gelu", .src = ge_src, .n_src = 1, .dst = &ty};
        rt_run(&c, &ge);
        kr_test_download(c.g.be, out, ty.data, sizeof out);
        EXPECT_NMSE(out, ref, (size_t)n, 1e-9, "registry gelu");

        /* add: dst (= gelu output, downloaded in out) += u */
        for (int i = 0; i < n; i++)
            ref[i] = (double)out[i] + u[i];
        const kr_tensor *add_src[] = {&tu};
        kr_kernel_args ad = {.op = "add", .src = add_src, .n_src = 1, .dst = &ty};
        rt_run(&c, &ad);
        kr_test_download(c.g.be, out, ty.data, sizeof out);
        EXPECT_NMSE(out, ref, (size_t)n, 1e-12, "registry add");

        for (int r = 0; r < rows; r++) {
            double mx = -INFINITY, sum = 0;
            for (int i = 0; i < dim; i++)
                mx = fmax(mx, x[r * dim + i]);
            for (int i = 0; i < dim; i++)
                sum += exp(x[r * dim + i] - mx);
            for (int i = 0; i < dim; i++)
                ref[r * dim + i] = exp(x[r * dim + i] - mx) / sum;
        }
        const kr_tensor *sm_src[] = {&tx};
        kr_kernel_args sm = {.op = "softmax", .src = sm_src, .n_src = 1, .dst = &ty};
        rt_run(&c, &sm);
        kr_test_download(c.g.be, out, ty.data, sizeof out);
        EXPECT_NMSE(out, ref, (size_t)n, 1e-8, "registry softmax");
        free(x);
        free(w);
        free(b);
        free(u);
    }
    /* store_kv: F32 (16, 3) -> F16, bit-exact */
    {
        float *x = rand_f32(48, -3, 3);
        uint16_t want[48], got[48];
        for (int i = 0; i < 48; i++)
            want[i] = kr_fp32_to_fp16(x[i]);
        kr_tensor tx, th;
        rt_tensor(&c, &tx, KR_DTYPE_F32, 16, 3, rt_up(&c, x, sizeof(float) * 48));
        rt_tensor(&c, &th, KR_DTYPE_F16, 16, 3, rt_poison(&c, 24));
        const kr_tensor *src[] = {&tx};
        kr_kernel_args a = {.op = "store_kv", .src = src, .n_src = 1, .dst = &th};
        rt_run(&c, &a);
        kr_test_download(c.g.be, got, th.data, sizeof got);
        cr_expect_eq(memcmp(got, want, sizeof got), 0, "registry store_kv differs from RNE fp16");
        free(x);
    }
    /* rope (neox) and attention through the ops.h parameter structs */
    {
        const int n_head = 4, n_kv = 2, hd = 16, n_ctx = 16, pos = 9;
        float *q = rand_f32((size_t)n_head * hd, -1, 1);
        double rq[64];
        for (int i = 0; i < n_head * hd; i++)
            rq[i] = q[i];
        for (int h = 0; h < n_head; h++)
            for (int i = 0; i < hd / 2; i++) {
                double th = pos * pow(10000.0, -2.0 * i / hd), a0 = rq[h * hd + i], b0 = rq[h * hd + i + hd / 2];
                rq[h * hd + i] = a0 * cos(th) - b0 * sin(th);
                rq[h * hd + i + hd / 2] = a0 * sin(th) + b0 * cos(th);
            }
        int32_t p = pos;
        float *dq = rt_up(&c, q, (size_t)n_head * hd * 4);
        kr_rope_args ra = {.struct_size = sizeof ra, .x = dq, .pos = rt_up(&c, &p, 4), .n_tok = 1,
                           .n_head = (uint32_t)n_head, .head_dim = (uint32_t)hd, .n_rot = (uint32_t)hd,
                           .mode = KR_ROPE_NEOX, .base = 10000.0f, .freq_scale = 1.0f};
        kr_kernel_args rop = {.op = "rope", .params = &ra, .params_size = sizeof ra};
        rt_run(&c, &rop);
        float qo[64];
        kr_test_download(c.g.be, qo, dq, sizeof qo);
        EXPECT_NMSE(qo, rq, 64, 1e-6, "registry rope");

        const size_t row = (size_t)n_kv * hd;
        uint16_t kc[16 * 32], vc[16 * 32];
        for (size_t i = 0; i < (size_t)n_ctx * row; i++) {
            kc[i] = kr_fp32_to_fp16(kr_test_rng_f(-1, 1));
            vc[i] = kr_fp32_to_fp16(kr_test_rng_f(-1, 1));
        }
        double ref[64] = {0};
        for (int h = 0; h < n_head; h++) {
            int gk = h / (n_head / n_kv);
            double s[16], mx = -INFINITY, sum = 0;
            for (int t = 0; t <= pos; t++) {
                s[t] = 0;
                for (int d = 0; d < hd; d++)
                    s[t] += (double)qo[h * hd + d] * kr_fp16_to_fp32(kc[t * row + (size_t)gk * hd + d]);
                s[t] *= 0.25;
                mx = fmax(mx, s[t]);
            }
            for (int t = 0; t <= pos; t++)
                sum += exp(s[t] - mx);
            for (int t = 0; t <= pos; t++)
                for (int d = 0; d < hd; d++)
                    ref[h * hd + d] += exp(s[t] - mx) / sum * kr_fp16_to_fp32(vc[t * row + (size_t)gk * hd + d]);
        }
        float *dout = rt_poison(&c, 64);
        kr_attn_args aa = {.struct_size = sizeof aa, .q = dq, .k = rt_up(&c, kc, sizeof kc), .v = rt_up(&c, vc, sizeof vc),
                           .kv_type = KR_DTYPE_F16, .out = dout, .n_tok = 1, .n_head = (uint32_t)n_head,
                           .n_head_kv = (uint32_t)n_kv, .head_dim = (uint32_t)hd, .pos0 = (uint32_t)pos,
                           .n_ctx = (uint32_t)n_ctx, .window = 0, .scale = 0.25f};
        kr_kernel_args at = {.op = "attention", .params = &aa, .params_size = sizeof aa};
        rt_run(&c, &at);
        float out[64];
        kr_test_download(c.g.be, out, dout, sizeof out);
        EXPECT_NMSE(out, ref, 64, 1e-7, "registry attention");
        free(q);
    }
    for (int i = 0; i < c.n; i++)
        kr_backend_free(c.g.be, c.bufs[i]);
    kr_runtime_close(c.rt);
    gpu_close(&g0);
}
