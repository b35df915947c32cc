/* KV cache store + decode attention over the device cache layout
 * (plugins/cuda_decode/kr_decode_kv.h, kernels/decode/kv_attn.cu) against C
 * references written here from the layout definition, in double.
 *
 * The host builds caches itself (f16: round-to-nearest-even via kernrun/half.h;
 * q8_0: the GGML q8_0 rule below, written independently of the kernel), so the
 * attention tests do not depend on the store kernel. Rows the query must not
 * see hold NaN (f16 NaN halves / NaN q8_0 scales); outputs are NaN-poisoned
 * before each run. Without a GPU every test skips (fails with
 * KERNRUN_REQUIRE_GPU=1). KR_TEST_SEED=n replays a run. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/backend.h"
#include "kernrun/half.h"
#include "kr_decode.h"
#include "kr_decode_kv.h"
#include "kr_test_gpu.h"
#include "kr_test_leaks.h"
#include "kr_test_rng.h"
#include "kr_test_dec.h"

#define CHECK_OK(expr)                                                                                  \
    do {                                                                                                \
        kr_err err_;                                                                                    \
        kr_err_clear(&err_);                                                                            \
        kr_err *errp = &err_;                                                                           \
        kr_status st_ = (expr);                                                                         \
        cr_assert_eq(st_, KR_OK, "%s: %s", #expr, kr_err_msg(&err_, st_));                             \
    } while (0)

static double nmse_f(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]) || !isfinite(b[i]))
            return INFINITY;
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? num / den : num;
}

/* ---- reference row format (written from the layout definition) ------------- */

/* bytes of one row: f16 2*kv_dim, q8_0 kv_dim quants + kv_dim/32 fp16 scales, rounded up to 16 */
static const char *tname(kr_dtype t) { return t == KR_DTYPE_F16 ? "f16" : "q8_0"; }

TestSuite(kv_attn, .fini = kr_test_leak_check);
TestSuite(kv_attn_host, .fini = kr_test_leak_check);

/* ---- attention ----------------------------------------------------------------- */

typedef struct attn_case {
    kr_dtype type;
    int n_head, n_kv, hd;
    int rows;      /* cache rows (< pos + 1: ring) */
    int pos, window, n_split;
    int pad;       /* extra row bytes */
    float kmag;    /* K values in [-kmag, kmag] */
    bool all;      /* every kernel variant (else the default one only) */
} attn_case;

/* Upload a cache of c->rows rows (row_bytes rb) placed in slot `slot` of n_slot, run variant v. */
/* false: the variant does not take this shape (KR_ERR_UNSUPPORTED, e.g. w4 and head_dim 80) */
static bool gpu_attn(gpu *g, const attn_case *c, int v, const uint8_t *kc, const uint8_t *vc, size_t rb, int n_slot,
                     int slot, const float *q, float scale, float *out)
{
    const size_t slot_bytes = (size_t)c->rows * rb, n_out = (size_t)c->n_head * c->hd;
    kr_buffer *bk, *bv, *bq, *bo, *bp, *bs = NULL, *bsl;
    uint8_t *dk = kr_test_dalloc(g->be, slot_bytes * n_slot, &bk);
    uint8_t *dv = kr_test_dalloc(g->be, slot_bytes * n_slot, &bv);
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(kr_backend_memset(g->be, dk, 0xff, slot_bytes * n_slot, NULL, &err), KR_OK); /* NaN elsewhere */
    cr_assert_eq(kr_backend_memset(g->be, dv, 0xff, slot_bytes * n_slot, NULL, &err), KR_OK);
    cr_assert_eq(kr_backend_h2d(g->be, dk + slot * slot_bytes, kc, slot_bytes, NULL, &err), KR_OK);
    cr_assert_eq(kr_backend_h2d(g->be, dv + slot * slot_bytes, vc, slot_bytes, NULL, &err), KR_OK);
    float *dq = kr_test_dupload(g->be, q, n_out * 4, &bq);
    float *dout = kr_test_dpoisoned(g->be, n_out, &bo);
    int32_t p = c->pos, sl = slot;
    int32_t *dp = kr_test_dupload(g->be, &p, 4, &bp);
    int32_t *dsl = kr_test_dupload(g->be, &sl, 4, &bsl);
    size_t nscr = kr_dec_attention_kv_scratch_floats(c->n_head, c->hd, c->n_split);
    float *dscr = nscr ? kr_test_dpoisoned(g->be, nscr, &bs) : NULL;
    CHECK_OK(kr_dec_attention_kv_scratch_init(g->dec, NULL, dscr, c->n_head, c->hd, c->n_split, errp));
    kr_dec_kv_view view = {.k = dk, .v = dv, .type = c->type, .rows = c->rows, .kv_dim = c->n_kv * c->hd,
                           .row_bytes = rb};
    if (n_slot > 1) {
        view.slot = dsl;
        view.slot_bytes = slot_bytes;
    }
    kr_err aerr;
    kr_err_clear(&aerr);
    kr_status ast = kr_dec_attention_kv_variant(g->dec, NULL, v, dq, &view, dout, c->n_head, c->n_kv, c->hd, dp, 0,
                                                c->window, scale, c->n_split, dscr, &aerr);
    cr_assert(ast == KR_OK || ast == KR_ERR_UNSUPPORTED, "attention_kv variant %d: %s", v, kr_err_msg(&aerr, ast));
    if (ast == KR_OK)
        kr_test_download(g->be, out, dout, n_out * 4);
    kr_backend_free(g->be, bk);
    kr_backend_free(g->be, bv);
    kr_backend_free(g->be, bq);
    kr_backend_free(g->be, bo);
    kr_backend_free(g->be, bp);
    kr_backend_free(g->be, bsl);
    kr_backend_free(g->be, bs);
    return ast == KR_OK;
}

static void run_attn(gpu *g, attn_case c)
{
    const int kv_dim = c.n_kv * c.hd;
    const size_t rb = ref_row_bytes(c.type, kv_dim) + (size_t)c.pad;
    const int j0 = c.window > 0 && c.pos - c.window + 1 > 0 ? c.pos - c.window + 1 : 0;
    const bool ring = c.pos + 1 > c.rows;
    uint8_t *kc = malloc((size_t)c.rows * rb), *vc = malloc((size_t)c.rows * rb);
    /* the same positions in a plain cache (row = position), for the ring == no-ring check */
    const int rows2 = c.pos + 1;
    uint8_t *kc2 = malloc((size_t)rows2 * rb), *vc2 = malloc((size_t)rows2 * rb);
    cr_assert(kc && vc && kc2 && vc2);
    poison_rows(c.type, kc, c.rows, rb, kv_dim);
    poison_rows(c.type, vc, c.rows, rb, kv_dim);
    poison_rows(c.type, kc2, rows2, rb, kv_dim);
    poison_rows(c.type, vc2, rows2, rb, kv_dim);
    float *x = malloc((size_t)kv_dim * 4);
    for (int j = j0; j <= c.pos; j++) {
        for (int i = 0; i < kv_dim; i++)
            x[i] = kr_test_rng_f(-c.kmag, c.kmag);
        if (c.type == KR_DTYPE_Q8_0 && j % 7 == 3)
            memset(x, 0, 32 * 4); /* an all-zero block: d = 0 */
        ref_pack_row(c.type, x, kv_dim, kc + (size_t)(j % c.rows) * rb);
        memcpy(kc2 + (size_t)j * rb, kc + (size_t)(j % c.rows) * rb, rb);
        for (int i = 0; i < kv_dim; i++)
            x[i] = kr_test_rng_f(-1, 1);
        ref_pack_row(c.type, x, kv_dim, vc + (size_t)(j % c.rows) * rb);
        memcpy(vc2 + (size_t)j * rb, vc + (size_t)(j % c.rows) * rb, rb);
    }
    const size_t n_out = (size_t)c.n_head * c.hd;
    float *q = malloc(n_out * 4);
    for (size_t i = 0; i < n_out; i++)
        q[i] = kr_test_rng_f(-1, 1);
    const float scale = 2.0f / sqrtf((float)c.hd); /* sharper than usual: softmax far from uniform */
    double *ref = calloc(n_out, sizeof *ref), *sc = calloc((size_t)c.pos + 1, sizeof *sc);
    cr_assert(ref && sc && q && x);
    for (int h = 0; h < c.n_head; h++) {
        const int gk = h / (c.n_head / c.n_kv);
        double mx = -INFINITY, sum = 0;
        for (int j = j0; j <= c.pos; j++) {
            const uint8_t *row = kc + (size_t)(j % c.rows) * rb;
            double s = 0;
            for (int d = 0; d < c.hd; d++)
                s += (double)q[h * c.hd + d] * ref_value(c.type, row, kv_dim, gk * c.hd + d);
            sc[j] = s * scale;
            mx = fmax(mx, sc[j]);
        }
        for (int j = j0; j <= c.pos; j++)
            sum += exp(sc[j] - mx);
        for (int j = j0; j <= c.pos; j++) {
            const uint8_t *row = vc + (size_t)(j % c.rows) * rb;
            const double pw = exp(sc[j] - mx) / sum;
            for (int d = 0; d < c.hd; d++)
                ref[h * c.hd + d] += pw * ref_value(c.type, row, kv_dim, gk * c.hd + d);
        }
    }
    float *out = malloc(n_out * 4), *out2 = malloc(n_out * 4);
    cr_assert(out && out2);
    for (int v = 0; kr_dec_attention_kv_variant_name(v) && (v == 0 || c.all); v++) {
        if (!gpu_attn(g, &c, v, kc, vc, rb, 1, 0, q, scale, out))
            continue;
        double e = nmse(out, ref, n_out);
        cr_expect(e <= 1e-7,
                  "NMSE %.3g > 1e-7 (seed %llu): attention_kv %s %s heads %d/%d dim %d rows %d pos %d window %d "
                  "split %d",
                  e, (unsigned long long)kr_test_seed(), kr_dec_attention_kv_variant_name(v), tname(c.type), c.n_head,
                  c.n_kv, c.hd, c.rows, c.pos, c.window, c.n_split);
        if (v == 0) {
            /* same cache in slot 2 of 3, slot read from device memory */
            gpu_attn(g, &c, v, kc, vc, rb, 3, 2, q, scale, out2);
            e = nmse_f(out2, out, n_out);
            cr_expect(e == 0, "slot 2 of 3 differs from the single slot: NMSE %.3g (seed %llu)", e,
                      (unsigned long long)kr_test_seed());
        }
        if (v == 0 && ring) {
            attn_case c2 = c;
            c2.rows = rows2;
            gpu_attn(g, &c2, v, kc2, vc2, rb, 1, 0, q, scale, out2);
            e = nmse_f(out, out2, n_out);
            cr_expect(e <= 1e-12,
                      "ring (rows %d) differs from the plain cache with the window mask: NMSE %.3g (seed %llu) %s "
                      "pos %d window %d",
                      c.rows, e, (unsigned long long)kr_test_seed(), tname(c.type), c.pos, c.window);
        }
    }
    free(kc);
    free(vc);
    free(kc2);
    free(vc2);
    free(x);
    free(q);
    free(ref);
    free(sc);
    free(out);
    free(out2);
}

static attn_case ac(kr_dtype t, int nh, int nkv, int hd, int rows, int pos, int window, int split)
{
    return (attn_case){.type = t, .n_head = nh, .n_kv = nkv, .hd = hd, .rows = rows, .pos = pos, .window = window,
                       .n_split = split, .pad = 0, .kmag = 1.0f, .all = false};
}

static attn_case every(attn_case c)
{
    c.all = true;
    return c;
}

static void attn_cases(kr_dtype t)
{
    gpu g;
    gpu_open(&g);
    run_attn(&g, ac(t, 8, 8, 64, 16, 0, 0, 1));                 /* first token */
    run_attn(&g, ac(t, 8, 8, 64, 16, 1, 0, 1));                 /* second */
    run_attn(&g, ac(t, 8, 8, 64, 16, 1, 0, 3));                 /* more splits than keys */
    run_attn(&g, ac(t, 32, 32, 128, 1100, 1000, 0, 1));         /* llama-2 7B */
    run_attn(&g, every(ac(t, 32, 32, 128, 1100, 1000, 0, 13))); /* split, uneven chunks */
    run_attn(&g, every(ac(t, 32, 8, 128, 4200, 4100, 0, 33)));  /* GQA, llama-3 */
    run_attn(&g, ac(t, 32, 8, 128, 4200, 4100, 0, 1));          /* one block walks the whole span */
    run_attn(&g, every(ac(t, 71, 1, 64, 700, 650, 0, 9)));      /* falcon 7B MQA: 9 head batches */
    run_attn(&g, ac(t, 71, 1, 64, 700, 650, 0, 1));
    run_attn(&g, ac(t, 4, 1, 256, 300, 299, 0, 16));            /* head_dim 256 */
    run_attn(&g, every(ac(t, 6, 2, 80, 100, 3, 0, 8)));         /* head_dim 80, empty splits */
    run_attn(&g, ac(t, 12, 4, 96, 530, 517, 0, 5));             /* head_dim 96 */
    run_attn(&g, ac(t, 8, 8, 64, 600, 517, 33, 1));             /* sliding window, plain cache */
    run_attn(&g, ac(t, 8, 8, 64, 600, 517, 33, 4));
    run_attn(&g, ac(t, 8, 2, 128, 64, 1000, 64, 3));            /* ring: rows = window */
    run_attn(&g, ac(t, 8, 2, 128, 64, 1000, 50, 1));            /* ring, window < rows */
    run_attn(&g, ac(t, 16, 4, 64, 4096, 4095, 4096, 20));       /* window = rows, full */
    run_attn(&g, ac(t, 16, 4, 64, 4096, 5000, 4096, 20));       /* ring of 4096 at 5000 */
    attn_case c = every(ac(t, 10, 2, 64, 77, 76, 0, 2));
    c.pad = 48;    /* row_bytes larger than needed */
    c.kmag = 8.0f; /* peaky softmax */
    run_attn(&g, c);
    gpu_close(&g);
}

Test(kv_attn, attention_f16, .timeout = 300) { attn_cases(KR_DTYPE_F16); }
Test(kv_attn, attention_q8_0, .timeout = 300) { attn_cases(KR_DTYPE_Q8_0); }

/* p < 0, and a span that does not fit the cache (no window, p + 1 > rows): NaN */
Test(kv_attn, attention_invalid_position_is_nan)
{
    gpu g;
    gpu_open(&g);
    const int n_head = 4, hd = 64, rows = 8;
    const size_t rb = ref_row_bytes(KR_DTYPE_F16, n_head * hd);
    kr_buffer *bk, *bq, *bo, *bs;
    void *dk = kr_test_dalloc(g.be, rows * rb, &bk);
    float *dq = kr_test_dalloc(g.be, (size_t)n_head * hd * 4, &bq);
    float *dout = kr_test_dalloc(g.be, (size_t)n_head * hd * 4, &bo);
    float *scr = kr_test_dalloc(g.be, kr_dec_attention_kv_scratch_floats(n_head, hd, 3) * 4, &bs);
    kr_err err;
    kr_err_clear(&err);
    CHECK_OK(kr_dec_attention_kv_scratch_init(g.dec, NULL, scr, n_head, hd, 3, errp));
    cr_assert_eq(kr_backend_memset(g.be, dk, 0, rows * rb, NULL, &err), KR_OK);
    cr_assert_eq(kr_backend_memset(g.be, dq, 0, (size_t)n_head * hd * 4, NULL, &err), KR_OK);
    kr_dec_kv_view view = {.k = dk, .v = dk, .type = KR_DTYPE_F16, .rows = rows, .kv_dim = n_head * hd, .row_bytes = rb};
    const int bad_pos[] = {-1, rows, 100};
    for (int v = 0; kr_dec_attention_kv_variant_name(v); v++) {
        kr_err verr;
        kr_err_clear(&verr);
        if (kr_dec_attention_kv_variant(g.dec, NULL, v, dq, &view, dout, n_head, n_head, hd, NULL, 0, 0, 1.0f, 1, scr,
                                        &verr) == KR_ERR_UNSUPPORTED)
            continue; /* this variant is not built for the shape */
        for (int split = 1; split <= 3; split += 2) {
            for (size_t i = 0; i < sizeof bad_pos / sizeof bad_pos[0]; i++) {
                cr_assert_eq(kr_backend_memset(g.be, dout, 0, (size_t)n_head * hd * 4, NULL, &err), KR_OK);
                CHECK_OK(kr_dec_attention_kv_variant(g.dec, NULL, v, dq, &view, dout, n_head, n_head, hd, NULL,
                                                     bad_pos[i], 0, 1.0f, split, scr, errp));
                float out[256];
                kr_test_download(g.be, out, dout, sizeof out);
                int nan = 0;
                for (int j = 0; j < n_head * hd; j++)
                    nan += isnan(out[j]) != 0;
                cr_expect_eq(nan, n_head * hd, "%s pos %d split %d: %d of %d outputs NaN",
                             kr_dec_attention_kv_variant_name(v), bad_pos[i], split, nan, n_head * hd);
            }
            /* the same position with a window that fits is valid */
            CHECK_OK(kr_dec_attention_kv_variant(g.dec, NULL, v, dq, &view, dout, n_head, n_head, hd, NULL, 100, rows,
                                                 1.0f, split, scr, errp));
            float out[256];
            kr_test_download(g.be, out, dout, sizeof out);
            int nz = 0;
            for (int j = 0; j < n_head * hd; j++)
                nz += out[j] != 0.0f;
            cr_expect_eq(nz, 0, "%s pos 100 window %d split %d: %d outputs not 0 (zero cache)",
                         kr_dec_attention_kv_variant_name(v), rows, split, nz);
        }
    }
    kr_backend_free(g.be, bk);
    kr_backend_free(g.be, bq);
    kr_backend_free(g.be, bo);
    kr_backend_free(g.be, bs);
    gpu_close(&g);
}

/* ---- store ------------------------------------------------------------------------- */

typedef struct store_case {
    kr_dtype type;
    int n_head, n_kv, hd;
    int rows, pos, n_tok;
    int n_rot;   /* 0: plain store */
    bool neox, ff;
    float freq_scale;
} store_case;

/* double reference rotation of one head vector (as kr_dec_rope's formula) */
static void ref_rope(const float *x, double *y, int hd, int n_rot, int p, bool neox, const float *ff, float fs)
{
    for (int d = 0; d < hd; d++)
        y[d] = x[d];
    const int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        double th = (double)p * fs * pow(10000.0, -2.0 * i / n_rot) / (ff ? ff[i] : 1.0);
        const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        y[a] = x[a] * cos(th) - x[b] * sin(th);
        y[b] = x[a] * sin(th) + x[b] * cos(th);
    }
}

static void run_store(gpu *g, store_case c)
{
    const int kv_dim = c.n_kv * c.hd, T = c.n_tok;
    const size_t rb = ref_row_bytes(c.type, kv_dim) + 16;
    const size_t cb = (size_t)c.rows * rb;
    float *k = malloc((size_t)T * kv_dim * 4), *v = malloc((size_t)T * kv_dim * 4);
    float *q = malloc((size_t)T * c.n_head * c.hd * 4);
    float *ff = malloc((size_t)(c.hd / 2 + 1) * 4);
    cr_assert(k && v && q && ff);
    for (size_t i = 0; i < (size_t)T * kv_dim; i++) {
        k[i] = kr_test_rng_f(-2, 2);
        v[i] = kr_test_rng_f(-3, 3);
    }
    if (kv_dim >= 64) {
        memset(v, 0, 32 * 4);         /* zero block: d = 0 */
        for (int i = 32; i < 64; i++) /* large values */
            k[i] *= 3000.0f;
    }
    for (size_t i = 0; i < (size_t)T * c.n_head * c.hd; i++)
        q[i] = kr_test_rng_f(-1, 1);
    for (int i = 0; i <= c.hd / 2; i++)
        ff[i] = kr_test_rng_f(1, 8);
    uint8_t *init = malloc(cb), *kc = malloc(cb), *vc = malloc(cb);
    cr_assert(init && kc && vc);
    memset(init, 0xa5, cb);
    kr_buffer *bk, *bv, *bq, *bkc, *bvc, *bp, *bff;
    float *dk = kr_test_dupload(g->be, k, (size_t)T * kv_dim * 4, &bk);
    float *dv = kr_test_dupload(g->be, v, (size_t)T * kv_dim * 4, &bv);
    float *dq = kr_test_dupload(g->be, q, (size_t)T * c.n_head * c.hd * 4, &bq);
    float *dff = kr_test_dupload(g->be, ff, (size_t)(c.hd / 2 + 1) * 4, &bff);
    uint8_t *dkc = kr_test_dupload(g->be, init, cb, &bkc);
    uint8_t *dvc = kr_test_dupload(g->be, init, cb, &bvc);
    int32_t p = c.pos;
    int32_t *dp = kr_test_dupload(g->be, &p, 4, &bp);
    kr_dec_kv_view view = {.k = dkc, .v = dvc, .type = c.type, .rows = c.rows, .kv_dim = kv_dim, .row_bytes = rb};
    if (c.n_rot > 0)
        CHECK_OK(kr_dec_kv_store_rope(g->dec, NULL, dq, c.n_head, dk, dv, T, &view, c.hd, c.n_rot, dp, 0, 10000.0f,
                                      c.freq_scale, c.ff ? dff : NULL, c.neox, errp));
    else
        CHECK_OK(kr_dec_kv_store(g->dec, NULL, dk, dv, T, &view, dp, 0, errp));
    kr_test_download(g->be, kc, dkc, cb);
    kr_test_download(g->be, vc, dvc, cb);

    /* expected K rows (rotated in double when n_rot > 0) */
    double *kr = malloc((size_t)T * kv_dim * sizeof *kr);
    uint8_t *erow = malloc(rb);
    cr_assert(kr && erow);
    for (int t = 0; t < T; t++)
        for (int gq = 0; gq < c.n_kv; gq++)
            if (c.n_rot > 0)
                ref_rope(k + (size_t)t * kv_dim + gq * c.hd, kr + (size_t)t * kv_dim + gq * c.hd, c.hd, c.n_rot,
                         c.pos + t, c.neox, c.ff ? ff : NULL, c.freq_scale);
            else
                for (int d = 0; d < c.hd; d++)
                    kr[(size_t)t * kv_dim + gq * c.hd + d] = k[(size_t)t * kv_dim + gq * c.hd + d];
    int untouched_bad = 0, vbad = 0, kbad = 0;
    double kerr = 0, kden = 0;
    for (int r = 0; r < c.rows; r++) {
        int t = -1;
        for (int u = 0; u < T; u++)
            if (c.pos + u >= 0 && (c.pos + u) % c.rows == r)
                t = u;
        const uint8_t *krow = kc + (size_t)r * rb, *vrow = vc + (size_t)r * rb;
        const size_t used = c.type == KR_DTYPE_F16 ? 2 * (size_t)kv_dim : (size_t)kv_dim + (size_t)kv_dim / 16;
        if (t < 0) {
            for (size_t b = 0; b < rb; b++)
                untouched_bad += (krow[b] != 0xa5) + (vrow[b] != 0xa5);
            continue;
        }
        for (size_t b = used; b < rb; b++) /* padding is never written */
            untouched_bad += (krow[b] != 0xa5) + (vrow[b] != 0xa5);
        /* V: stored as is -> the reference packing, byte for byte (q8_0 quants may differ by one
         * where x/d sits on a rounding tie in fp32) */
        ref_pack_row(c.type, v + (size_t)t * kv_dim, kv_dim, erow);
        for (size_t b = 0; b < used; b++) {
            if (vrow[b] == erow[b])
                continue;
            if (c.type == KR_DTYPE_Q8_0 && b < (size_t)kv_dim && abs((int8_t)vrow[b] - (int8_t)erow[b]) <= 1)
                continue;
            vbad++;
        }
        if (c.n_rot == 0) {
            ref_pack_row(c.type, k + (size_t)t * kv_dim, kv_dim, erow);
            for (size_t b = 0; b < used; b++) {
                if (krow[b] == erow[b])
                    continue;
                if (c.type == KR_DTYPE_Q8_0 && b < (size_t)kv_dim && abs((int8_t)krow[b] - (int8_t)erow[b]) <= 1)
                    continue;
                kbad++;
            }
        }
        for (int i = 0; i < kv_dim; i++) {
            const double e = ref_value(c.type, krow, kv_dim, i) - kr[(size_t)t * kv_dim + i];
            kerr += e * e;
            kden += kr[(size_t)t * kv_dim + i] * kr[(size_t)t * kv_dim + i];
        }
    }
    const double ktol = c.type == KR_DTYPE_F16 ? 1e-6 : 1e-4;
    cr_expect_eq(untouched_bad, 0, "%d bytes written outside the target rows / past the row data (seed %llu)",
                 untouched_bad, (unsigned long long)kr_test_seed());
    cr_expect_eq(vbad, 0, "%s V: %d bytes differ from the reference packing (seed %llu)", tname(c.type), vbad,
                 (unsigned long long)kr_test_seed());
    cr_expect_eq(kbad, 0, "%s K: %d bytes differ from the reference packing (seed %llu)", tname(c.type), kbad,
                 (unsigned long long)kr_test_seed());
    cr_expect(kden > 0 && kerr / kden <= ktol, "%s K (n_rot %d neox %d): NMSE %.3g > %.1g (seed %llu)", tname(c.type),
              c.n_rot, c.neox, kerr / kden, ktol, (unsigned long long)kr_test_seed());
    if (c.n_rot > 0) {
        /* q rotated in place: vs the double reference, and vs kr_dec_rope on the same input */
        float *qo = malloc((size_t)T * c.n_head * c.hd * 4);
        double *qr = malloc((size_t)T * c.n_head * c.hd * sizeof *qr);
        cr_assert(qo && qr);
        kr_test_download(g->be, qo, dq, (size_t)T * c.n_head * c.hd * 4);
        for (int t = 0; t < T; t++)
            for (int h = 0; h < c.n_head; h++)
                ref_rope(q + ((size_t)t * c.n_head + h) * c.hd, qr + ((size_t)t * c.n_head + h) * c.hd, c.hd, c.n_rot,
                         c.pos + t, c.neox, c.ff ? ff : NULL, c.freq_scale);
        const double e = nmse(qo, qr, (size_t)T * c.n_head * c.hd);
        cr_expect(e <= 1e-6, "q rotation NMSE %.3g (seed %llu)", e, (unsigned long long)kr_test_seed());
        if (T == 1) {
            /* unfused path: kr_dec_rope on k and q, then kr_dec_kv_store of the rotated k */
            kr_buffer *bq2, *bk2, *bkc2;
            float *dq2 = kr_test_dupload(g->be, q, (size_t)c.n_head * c.hd * 4, &bq2);
            float *dk2 = kr_test_dupload(g->be, k, (size_t)kv_dim * 4, &bk2);
            uint8_t *dkc2 = kr_test_dupload(g->be, init, cb, &bkc2);
            CHECK_OK(kr_dec_rope(g->dec, NULL, dq2, c.n_head, dk2, c.n_kv, c.hd, c.n_rot, dp, 0, 10000.0f,
                                 c.freq_scale, c.ff ? dff : NULL, c.neox, errp));
            kr_dec_kv_view v2 = view;
            v2.k = dkc2;
            CHECK_OK(kr_dec_kv_store(g->dec, NULL, dk2, dv, 1, &v2, dp, 0, errp));
            float *q2 = malloc((size_t)c.n_head * c.hd * 4);
            uint8_t *kc2 = malloc(cb);
            cr_assert(q2 && kc2);
            kr_test_download(g->be, q2, dq2, (size_t)c.n_head * c.hd * 4);
            kr_test_download(g->be, kc2, dkc2, cb);
            const double eq = nmse_f(qo, q2, (size_t)c.n_head * c.hd);
            cr_expect(eq <= 1e-12, "fused q vs kr_dec_rope: NMSE %.3g", eq);
            const int r = c.pos % c.rows;
            float *a = malloc((size_t)kv_dim * 4), *b = malloc((size_t)kv_dim * 4);
            cr_assert(a && b);
            for (int i = 0; i < kv_dim; i++) {
                a[i] = (float)ref_value(c.type, kc + (size_t)r * rb, kv_dim, i);
                b[i] = (float)ref_value(c.type, kc2 + (size_t)r * rb, kv_dim, i);
            }
            const double ek = nmse_f(a, b, (size_t)kv_dim);
            cr_expect(ek <= 1e-6, "fused K vs rope + store: NMSE %.3g (%s)", ek,
                      tname(c.type));
            free(a);
            free(b);
            free(q2);
            free(kc2);
            kr_backend_free(g->be, bq2);
            kr_backend_free(g->be, bk2);
            kr_backend_free(g->be, bkc2);
        }
        free(qo);
        free(qr);
    }
    kr_backend_free(g->be, bk);
    kr_backend_free(g->be, bv);
    kr_backend_free(g->be, bq);
    kr_backend_free(g->be, bff);
    kr_backend_free(g->be, bkc);
    kr_backend_free(g->be, bvc);
    kr_backend_free(g->be, bp);
    free(k);
    free(v);
    free(q);
    free(ff);
    free(init);
    free(kc);
    free(vc);
    free(kr);
    free(erow);
}

static store_case sc(kr_dtype t, int nh, int nkv, int hd, int rows, int pos, int n_tok, int n_rot, bool neox)
{
    return (store_case){.type = t, .n_head = nh, .n_kv = nkv, .hd = hd, .rows = rows, .pos = pos, .n_tok = n_tok,
                        .n_rot = n_rot, .neox = neox, .ff = false, .freq_scale = 1.0f};
}

static void store_cases(kr_dtype t)
{
    gpu g;
    gpu_open(&g);
    run_store(&g, sc(t, 8, 8, 64, 19, 11, 1, 0, false));     /* one token */
    run_store(&g, sc(t, 8, 8, 64, 19, 0, 1, 0, false));      /* position 0 */
    run_store(&g, sc(t, 32, 8, 128, 16, 14, 5, 0, false));   /* ring wrap: rows 14, 15, 0, 1, 2 */
    run_store(&g, sc(t, 6, 2, 96, 300, 4100, 16, 0, false)); /* ring, large position */
    run_store(&g, sc(t, 8, 8, 64, 19, 11, 1, 64, false));    /* fused rope, normal */
    run_store(&g, sc(t, 8, 8, 64, 19, 11, 1, 64, true));     /* neox */
    run_store(&g, sc(t, 71, 1, 64, 700, 650, 1, 64, true));  /* falcon */
    store_case c = sc(t, 32, 8, 128, 5000, 4097, 1, 96, false); /* n_rot < head_dim, freq factors, scale */
    c.ff = true;
    c.freq_scale = 0.25f;
    run_store(&g, c);
    run_store(&g, sc(t, 12, 4, 80, 40, 36, 7, 32, true));    /* several tokens, ring wrap, head_dim 80 */
    gpu_close(&g);
}

Test(kv_attn, store_f16, .timeout = 300) { store_cases(KR_DTYPE_F16); }
Test(kv_attn, store_q8_0, .timeout = 300) { store_cases(KR_DTYPE_Q8_0); }

/* store kernel then attention kernel, vs the reference on the reference-packed cache */
Test(kv_attn, store_then_attention, .timeout = 300)
{
    gpu g;
    gpu_open(&g);
    const kr_dtype types[2] = {KR_DTYPE_F16, KR_DTYPE_Q8_0};
    for (int ti = 0; ti < 2; ti++) {
        const kr_dtype t = types[ti];
        const int n_head = 8, n_kv = 2, hd = 64, kv_dim = n_kv * hd, rows = 48, pos0 = 20, n = 40; /* ring */
        const int window = 40, last = pos0 + n - 1; /* sees exactly positions 20..59 */
        const size_t rb = ref_row_bytes(t, kv_dim), cb = (size_t)rows * rb;
        float *k = malloc((size_t)n * kv_dim * 4), *v = malloc((size_t)n * kv_dim * 4);
        float *q = malloc((size_t)n_head * hd * 4);
        cr_assert(k && v && q);
        for (size_t i = 0; i < (size_t)n * kv_dim; i++) {
            k[i] = kr_test_rng_f(-1, 1);
            v[i] = kr_test_rng_f(-1, 1);
        }
        for (int i = 0; i < n_head * hd; i++)
            q[i] = kr_test_rng_f(-1, 1);
        kr_buffer *bk, *bv, *bq, *bkc, *bvc, *bo, *bs;
        float *dk = kr_test_dupload(g.be, k, (size_t)n * kv_dim * 4, &bk);
        float *dv = kr_test_dupload(g.be, v, (size_t)n * kv_dim * 4, &bv);
        float *dq = kr_test_dupload(g.be, q, (size_t)n_head * hd * 4, &bq);
        uint8_t *dkc = kr_test_dalloc(g.be, cb, &bkc), *dvc = kr_test_dalloc(g.be, cb, &bvc);
        float *dout = kr_test_dpoisoned(g.be, (size_t)n_head * hd, &bo);
        float *scr = kr_test_dpoisoned(g.be, kr_dec_attention_kv_scratch_floats(n_head, hd, 4), &bs);
        CHECK_OK(kr_dec_attention_kv_scratch_init(g.dec, NULL, scr, n_head, hd, 4, errp));
        kr_dec_kv_view view = {.k = dkc, .v = dvc, .type = t, .rows = rows, .kv_dim = kv_dim, .row_bytes = rb};
        /* 40 tokens in two calls (20 + 20; the second wraps the ring) */
        CHECK_OK(kr_dec_kv_store(g.dec, NULL, dk, dv, 20, &view, NULL, pos0, errp));
        CHECK_OK(kr_dec_kv_store(g.dec, NULL, dk + 20 * kv_dim, dv + 20 * kv_dim, 20, &view, NULL, pos0 + 20, errp));
        CHECK_OK(kr_dec_attention_kv(g.dec, NULL, dq, &view, dout, n_head, n_kv, hd, NULL, last, window, 0.125f, 4,
                                     scr, errp));
        float out[512];
        kr_test_download(g.be, out, dout, (size_t)n_head * hd * 4);
        uint8_t *kr = malloc((size_t)n * rb), *vr = malloc((size_t)n * rb);
        cr_assert(kr && vr);
        for (int j = 0; j < n; j++) {
            ref_pack_row(t, k + (size_t)j * kv_dim, kv_dim, kr + (size_t)j * rb);
            ref_pack_row(t, v + (size_t)j * kv_dim, kv_dim, vr + (size_t)j * rb);
        }
        double ref[512] = {0}, s[64];
        const int j0 = last - window + 1 > pos0 ? last - window + 1 : pos0;
        cr_assert(j0 == pos0);
        for (int h = 0; h < n_head; h++) {
            const int gk = h / (n_head / n_kv);
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < n; j++) {
                double a = 0;
                for (int d = 0; d < hd; d++)
                    a += (double)q[h * hd + d] * ref_value(t, kr + (size_t)j * rb, kv_dim, gk * hd + d);
                s[j] = a * 0.125;
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < n; j++)
                sum += exp(s[j] - mx);
            for (int j = 0; j < n; j++)
                for (int d = 0; d < hd; d++)
                    ref[h * hd + d] += exp(s[j] - mx) / sum * ref_value(t, vr + (size_t)j * rb, kv_dim, gk * hd + d);
        }
        const double e = nmse(out, ref, (size_t)n_head * hd);
        cr_expect(e <= (t == KR_DTYPE_F16 ? 1e-7 : 1e-5), "%s store + attention NMSE %.3g (seed %llu)", tname(t), e,
                  (unsigned long long)kr_test_seed());
        kr_backend_free(g.be, bk);
        kr_backend_free(g.be, bv);
        kr_backend_free(g.be, bq);
        kr_backend_free(g.be, bkc);
        kr_backend_free(g.be, bvc);
        kr_backend_free(g.be, bo);
        kr_backend_free(g.be, bs);
        free(k);
        free(v);
        free(q);
        free(kr);
        free(vr);
    }
    gpu_close(&g);
}

/* ---- host-side checks (no GPU) ------------------------------------------------------ */

Test(kv_attn_host, row_bytes_and_view_checks)
{
    cr_expect_eq(kr_dec_kv_row_bytes(KR_DTYPE_F16, 1024), 2048);
    cr_expect_eq(kr_dec_kv_row_bytes(KR_DTYPE_F16, 100), 208);
    cr_expect_eq(kr_dec_kv_row_bytes(KR_DTYPE_Q8_0, 4096), 4096 + 256);
    cr_expect_eq(kr_dec_kv_row_bytes(KR_DTYPE_Q8_0, 64), 64 + 4 + 12);
    cr_expect_eq(kr_dec_kv_row_bytes(KR_DTYPE_Q8_0, 80), 0);
    cr_expect_eq(kr_dec_kv_row_bytes(KR_DTYPE_F32, 64), 0);
    cr_expect_eq(kr_dec_kv_row_bytes(KR_DTYPE_F16, 0), 0);
    for (int kv = 32; kv <= 4096; kv += 32)
        cr_expect_eq(kr_dec_kv_row_bytes(KR_DTYPE_Q8_0, kv), ref_row_bytes(KR_DTYPE_Q8_0, kv), "kv_dim %d", kv);
    kr_err err;
    kr_err_clear(&err);
    kr_dec_kv_view v = {.k = (void *)(uintptr_t)0x1000, .v = (void *)(uintptr_t)0x2000, .type = KR_DTYPE_Q8_0,
                        .rows = 16, .kv_dim = 128, .row_bytes = 144};
    cr_expect_eq(kr_dec_kv_check_view(&v, &err), KR_OK, "%s", err.msg);
    v.row_bytes = 128;
    cr_expect_eq(kr_dec_kv_check_view(&v, &err), KR_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "row_bytes 128") != NULL, "message: %s", err.msg);
    v.row_bytes = 152; /* not a multiple of 16 */
    cr_expect_eq(kr_dec_kv_check_view(&v, &err), KR_ERR_INVALID_ARG);
    v.row_bytes = 144;
    v.kv_dim = 96 + 8;
    cr_expect_eq(kr_dec_kv_check_view(&v, &err), KR_ERR_INVALID_ARG);
    cr_expect(strstr(err.msg, "104") != NULL, "message: %s", err.msg);
    v.kv_dim = 128;
    v.type = KR_DTYPE_F32;
    cr_expect_eq(kr_dec_kv_check_view(&v, &err), KR_ERR_UNSUPPORTED);
    v.type = KR_DTYPE_F16;
    v.row_bytes = 256;
    v.k = (void *)(uintptr_t)0x1008;
    cr_expect_eq(kr_dec_kv_check_view(&v, &err), KR_ERR_INVALID_ARG);
    v.k = (void *)(uintptr_t)0x1000;
    v.rows = 0;
    cr_expect_eq(kr_dec_kv_check_view(&v, &err), KR_ERR_INVALID_ARG);
    cr_expect_eq(kr_dec_attention_kv_scratch_floats(32, 128, 1), 0);
    cr_expect_eq(kr_dec_attention_kv_scratch_floats(32, 128, 4), 32 * 4 * 130 + 32);
    kr_device_info dev = {.sm_count = 132};
    for (int ctx = 1; ctx <= 65536; ctx *= 4) {
        int s = kr_dec_attention_kv_default_splits(&dev, 32, 8, 128, ctx);
        cr_expect(s >= 1 && s <= 1024 && (s == 1 || ctx / s >= 32), "ctx %d: %d splits", ctx, s);
    }
    cr_expect(kr_dec_attention_kv_variant_name(0) != NULL);
    cr_expect(kr_dec_attention_kv_variant_name(-1) == NULL);
}

/* the reference q8_0 rule itself, on hand-worked blocks */
Test(kv_attn_host, reference_q8_0_block)
{
    float x[32] = {0};
    x[0] = 127.0f;
    x[1] = -63.5f; /* x * (1/d) = -63.5: rounds away from zero to -64 */
    x[2] = 0.49f;
    x[3] = -127.0f;
    int8_t q[32];
    uint16_t d;
    ref_q8_block(x, q, &d);
    cr_expect_eq(kr_fp16_to_fp32(d), 1.0f);
    cr_expect_eq(q[0], 127);
    cr_expect_eq(q[1], -64);
    cr_expect_eq(q[2], 0);
    cr_expect_eq(q[3], -127);
    memset(x, 0, sizeof x);
    ref_q8_block(x, q, &d);
    cr_expect_eq(d, 0);
    for (int i = 0; i < 32; i++)
        cr_expect_eq(q[i], 0);
}
