/* Fused decode attention kr_dec_fattn (kernels/decode/kv_attn.cu kr_fa_*) against C references
 * written here, in double: RoPE of q and k_new, the new K/V row, attention over the cache.
 *
 * The host builds the cache rows of positions < p itself (f16: kernrun/half.h; q8_0: the GGML rule,
 * as test_kv_attn.c), every other row NaN-poisoned. Checks per case:
 *   - the row written for p equals, byte for byte, what kr_dec_kv_store_rope writes from the same
 *     inputs, and is within rounding of the double RoPE reference; no other cache byte changes;
 *   - out vs the double attention reference (q rotated in double; K/V of position p taken from the
 *     row the kernel wrote, which the previous check pins down) by NMSE;
 *   - xq equals kr_dec_quantize_q8 of the kernel's own fp32 out, byte for byte;
 *   - q is not modified; a second launch (split counters reset) gives identical bits.
 * Outputs (out, xq, partials) are poisoned before each run. Without a GPU every test skips (fails
 * with KERNRUN_REQUIRE_GPU=1). KR_TEST_SEED=n replays a run. */
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

/* double rotation of one head vector (kr_dec_rope's formula) */
static void ref_rope(const float *x, double *y, int hd, int n_rot, int p, bool neox, const float *ff, float fb,
                     float fs)
{
    for (int d = 0; d < hd; d++)
        y[d] = x[d];
    const int half = n_rot / 2;
    for (int i = 0; i < half; i++) {
        double th = (double)p * fs * pow((double)fb, -2.0 * i / n_rot) / (ff ? ff[i] : 1.0);
        const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
        y[a] = x[a] * cos(th) - x[b] * sin(th);
        y[b] = x[a] * sin(th) + x[b] * cos(th);
    }
}

static const char *tname(kr_dtype t) { return t == KR_DTYPE_F16 ? "f16" : "q8_0"; }

TestSuite(kv_fattn, .fini = kr_test_leak_check);

typedef struct fa_case {
    kr_dtype type;
    int n_head, n_kv, hd, n_rot;
    bool neox, ff;
    float freq_base, freq_scale;
    int rows, pos, window, n_split;
    int n_slot, slot; /* slot from device memory when n_slot > 1 */
    bool xq, prefetch;
    int max_stages;
    int variant;
    float kmag;
} fa_case;

static fa_case fc(kr_dtype t, int nh, int nkv, int hd, int rows, int pos, int window, int split)
{
    return (fa_case){.type = t, .n_head = nh, .n_kv = nkv, .hd = hd, .n_rot = hd, .freq_base = 10000.0f,
                     .freq_scale = 1.0f, .rows = rows, .pos = pos, .window = window, .n_split = split, .n_slot = 1,
                     .xq = hd % 32 == 0, .kmag = 1.0f};
}

static void run_case(gpu *g, fa_case c)
{
    cr_assert(kr_dec_fattn_supports(c.type, c.n_head, c.n_kv, c.hd, c.n_rot), "case not supported");
    const int kv_dim = c.n_kv * c.hd, D = c.hd;
    const size_t rb = ref_row_bytes(c.type, kv_dim) + (c.n_head % 2 ? 16 : 0); /* odd head counts: padded rows */
    const size_t slot_bytes = (size_t)c.rows * rb, cb = slot_bytes * (size_t)c.n_slot;
    const int j0 = c.window > 0 && c.pos - c.window + 1 > 0 ? c.pos - c.window + 1 : 0;
    const size_t n_out = (size_t)c.n_head * D;
    char what[200];
    snprintf(what, sizeof what,
             "%s %s heads %d/%d dim %d rot %d%s%s rows %d pos %d window %d split %d slot %d/%d st %d",
             kr_dec_fattn_variant_name(c.variant), tname(c.type), c.n_head, c.n_kv, D, c.n_rot, c.neox ? " neox" : "",
             c.ff ? " ff" : "", c.rows, c.pos, c.window, c.n_split, c.slot, c.n_slot, c.max_stages);

    /* cache: rows of positions [j0, pos) random, everything else NaN */
    uint8_t *kc = malloc(cb), *vc = malloc(cb);
    float *x = malloc((size_t)kv_dim * 4);
    cr_assert(kc && vc && x);
    poison_rows(c.type, kc, c.rows * c.n_slot, rb, kv_dim);
    poison_rows(c.type, vc, c.rows * c.n_slot, rb, kv_dim);
    uint8_t *ks = kc + (size_t)c.slot * slot_bytes, *vs = vc + (size_t)c.slot * slot_bytes;
    for (int j = j0; j < c.pos; j++) {
        for (int i = 0; i < kv_dim; i++)
            x[i] = kr_test_rng_f(-c.kmag, c.kmag);
        if (c.type == KR_DTYPE_Q8_0 && j % 7 == 3)
            memset(x, 0, 32 * 4); /* an all-zero block: d = 0 */
        ref_pack_row(c.type, x, kv_dim, ks + (size_t)(j % c.rows) * rb);
        for (int i = 0; i < kv_dim; i++)
            x[i] = kr_test_rng_f(-1, 1);
        ref_pack_row(c.type, x, kv_dim, vs + (size_t)(j % c.rows) * rb);
    }
    float *q = malloc(n_out * 4), *kn = malloc((size_t)kv_dim * 4), *vn = malloc((size_t)kv_dim * 4);
    float *ff = malloc(128 * 4);
    cr_assert(q && kn && vn && ff);
    for (size_t i = 0; i < n_out; i++)
        q[i] = kr_test_rng_f(-1, 1);
    for (int i = 0; i < kv_dim; i++) {
        kn[i] = kr_test_rng_f(-c.kmag, c.kmag);
        vn[i] = kr_test_rng_f(-1, 1);
    }
    if (c.type == KR_DTYPE_Q8_0)
        memset(vn, 0, 32 * 4); /* zero block in the new row */
    for (int i = 0; i < 128; i++)
        ff[i] = kr_test_rng_f(1, 8);
    const float scale = 2.0f / sqrtf((float)D); /* sharper than usual */

    /* device */
    kr_buffer *bk, *bv, *bk2, *bv2, *bq, *bkn, *bvn, *bff, *bo, *bxq, *bs = NULL, *bp, *bsl, *bq2, *bpf;
    uint8_t *dk = kr_test_dupload(g->be, kc, cb, &bk), *dv = kr_test_dupload(g->be, vc, cb, &bv);
    uint8_t *dk2 = kr_test_dupload(g->be, kc, cb, &bk2), *dv2 = kr_test_dupload(g->be, vc, cb, &bv2);
    float *dq = kr_test_dupload(g->be, q, n_out * 4, &bq), *dq2 = kr_test_dupload(g->be, q, n_out * 4, &bq2);
    float *dkn = kr_test_dupload(g->be, kn, (size_t)kv_dim * 4, &bkn);
    float *dvn = kr_test_dupload(g->be, vn, (size_t)kv_dim * 4, &bvn);
    float *dff = kr_test_dupload(g->be, ff, 128 * 4, &bff);
    float *dout = kr_test_dpoisoned(g->be, n_out, &bo);
    const size_t xqb = kr_dec_q8_bytes((int64_t)n_out);
    uint8_t *dxq = kr_test_dalloc(g->be, xqb ? xqb : 16, &bxq);
    float *dpf = kr_test_dalloc(g->be, 1 << 20, &bpf);
    int32_t p = c.pos, sl = c.slot;
    int32_t *dp = kr_test_dupload(g->be, &p, 4, &bp), *dsl = kr_test_dupload(g->be, &sl, 4, &bsl);
    const size_t nscr = kr_dec_fattn_scratch_floats(c.n_head, D, c.n_split + 3); /* larger than needed */
    float *dscr = kr_test_dpoisoned(g->be, nscr, &bs);
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(kr_backend_memset(g->be, dxq, 0xff, xqb ? xqb : 16, NULL, &err), KR_OK);
    CHECK_OK(kr_dec_fattn_scratch_init(g->dec, NULL, dscr, c.n_head, errp));

    kr_dec_kv_view view = {.k = dk, .v = dv, .type = c.type, .rows = c.rows, .kv_dim = kv_dim, .row_bytes = rb};
    if (c.n_slot > 1) {
        view.slot = dsl;
        view.slot_bytes = slot_bytes;
    } else {
        cr_assert_eq(c.slot, 0);
    }
    kr_dec_fattn_params fp = {
        .q = dq, .k_new = dkn, .v_new = dvn, .n_head = c.n_head, .n_head_kv = c.n_kv, .head_dim = D,
        .n_rot = c.n_rot, .freq_base = c.freq_base, .freq_scale = c.freq_scale, .freq_factors = c.ff ? dff : NULL,
        .neox = c.neox, .pos = dp, .window = c.window, .scale = scale, .n_split = c.n_split, .scratch = dscr,
        .out = dout, .xq = c.xq ? dxq : NULL, .prefetch = c.prefetch ? dpf : NULL,
        .prefetch_bytes = c.prefetch ? (1u << 20) - 5 : 0, .max_stages = c.max_stages, .variant = c.variant};
    CHECK_OK(kr_dec_fattn(g->dec, NULL, &view, &fp, errp));
    float *out = malloc(n_out * 4), *out2 = malloc(n_out * 4), *qa = malloc(n_out * 4);
    uint8_t *kc1 = malloc(cb), *vc1 = malloc(cb), *kc2 = malloc(cb), *vc2 = malloc(cb);
    uint8_t *xq1 = malloc(xqb + 1), *xq2 = malloc(xqb + 1);
    cr_assert(out && out2 && qa && kc1 && vc1 && kc2 && vc2 && xq1 && xq2);
    kr_test_download(g->be, out, dout, n_out * 4);
    kr_test_download(g->be, kc1, dk, cb);
    kr_test_download(g->be, vc1, dv, cb);
    kr_test_download(g->be, qa, dq, n_out * 4);
    if (c.xq)
        kr_test_download(g->be, xq1, dxq, xqb);
    cr_expect(memcmp(qa, q, n_out * 4) == 0, "%s: q was modified", what);

    /* the old rope + store on a second copy: the row of p must be identical */
    kr_dec_kv_view view2 = view;
    view2.k = dk2;
    view2.v = dv2;
    if (c.n_rot > 0)
        CHECK_OK(kr_dec_kv_store_rope(g->dec, NULL, dq2, c.n_head, dkn, dvn, 1, &view2, D, c.n_rot, dp, 0,
                                      c.freq_base, c.freq_scale, c.ff ? dff : NULL, c.neox, errp));
    else
        CHECK_OK(kr_dec_kv_store(g->dec, NULL, dkn, dvn, 1, &view2, dp, 0, errp));
    kr_test_download(g->be, kc2, dk2, cb);
    kr_test_download(g->be, vc2, dv2, cb);
    size_t kdiff = 0, vdiff = 0, other = 0;
    const size_t prow = (size_t)c.slot * slot_bytes + (size_t)(c.pos % c.rows) * rb;
    for (size_t b = 0; b < cb; b++) {
        const bool in_row = b >= prow && b < prow + rb;
        if (in_row) {
            kdiff += kc1[b] != kc2[b];
            vdiff += vc1[b] != vc2[b];
        } else {
            other += (kc1[b] != kc[b]) + (vc1[b] != vc[b]);
        }
    }
    cr_expect(kdiff == 0 && vdiff == 0, "%s: new row differs from kr_dec_kv_store_rope's: K %zu, V %zu bytes", what,
              kdiff, vdiff);
    cr_expect_eq(other, 0, "%s: %zu cache bytes outside the row of p changed", what, other);

    /* the new K row vs the double RoPE (rounding of the cache format) */
    double *kr = malloc((size_t)kv_dim * sizeof *kr), *qr = malloc(n_out * sizeof *qr);
    cr_assert(kr && qr);
    for (int gq = 0; gq < c.n_kv; gq++)
        ref_rope(kn + gq * D, kr + gq * D, D, c.n_rot, c.pos, c.neox, c.ff ? ff : NULL, c.freq_base, c.freq_scale);
    for (int h = 0; h < c.n_head; h++)
        ref_rope(q + h * D, qr + h * D, D, c.n_rot, c.pos, c.neox, c.ff ? ff : NULL, c.freq_base, c.freq_scale);
    double kerr = 0, kden = 0;
    for (int i = 0; i < kv_dim; i++) {
        const double e = ref_value(c.type, kc1 + prow, kv_dim, i) - kr[i];
        kerr += e * e;
        kden += kr[i] * kr[i];
    }
    const double ktol = c.type == KR_DTYPE_F16 ? 1e-6 : 1e-4;
    cr_expect(kerr / kden <= ktol, "%s: new K row vs double RoPE NMSE %.3g > %.1g (seed %llu)", what, kerr / kden,
              ktol, (unsigned long long)kr_test_seed());

    /* attention reference: cache rows as written (row p from the kernel, checked above) */
    const int R = c.n_head / c.n_kv;
    double *ref = calloc(n_out, sizeof *ref), *sc = calloc((size_t)c.pos + 1, sizeof *sc);
    cr_assert(ref && sc);
    const uint8_t *k1 = kc1 + (size_t)c.slot * slot_bytes, *v1 = vc1 + (size_t)c.slot * slot_bytes;
    for (int h = 0; h < c.n_head; h++) {
        const int gk = h / R;
        double mx = -INFINITY, sum = 0;
        for (int j = j0; j <= c.pos; j++) {
            const uint8_t *row = k1 + (size_t)(j % c.rows) * rb;
            double s = 0;
            for (int d = 0; d < D; d++)
                s += qr[h * D + d] * ref_value(c.type, row, kv_dim, gk * D + d);
            sc[j] = s * scale;
            mx = fmax(mx, sc[j]);
        }
        for (int j = j0; j <= c.pos; j++)
            sum += exp(sc[j] - mx);
        for (int j = j0; j <= c.pos; j++) {
            const uint8_t *row = v1 + (size_t)(j % c.rows) * rb;
            const double pw = exp(sc[j] - mx) / sum;
            for (int d = 0; d < D; d++)
                ref[h * D + d] += pw * ref_value(c.type, row, kv_dim, gk * D + d);
        }
    }
    const double e = nmse(out, ref, n_out);
    cr_expect(e <= 1e-7, "%s: out NMSE %.3g > 1e-7 (seed %llu)", what, e, (unsigned long long)kr_test_seed());

    if (c.xq) { /* vs kr_dec_quantize_q8 of the kernel's own out */
        kr_buffer *bo2, *bxr;
        float *dout2 = kr_test_dupload(g->be, out, n_out * 4, &bo2);
        uint8_t *dxr = kr_test_dalloc(g->be, xqb, &bxr);
        CHECK_OK(kr_dec_quantize_q8(g->dec, NULL, dout2, dxr, (int64_t)n_out, errp));
        kr_test_download(g->be, xq2, dxr, xqb);
        size_t bad = 0;
        for (size_t b = 0; b < xqb; b++)
            bad += xq1[b] != xq2[b];
        cr_expect_eq(bad, 0, "%s: xq differs from kr_dec_quantize_q8(out) in %zu of %zu bytes", what, bad, xqb);
        kr_backend_free(g->be, bo2);
        kr_backend_free(g->be, bxr);
    }

    /* again (the counters were reset; the row of p is rewritten with the same bytes): same bits */
    CHECK_OK(kr_backend_memset(g->be, dout, 0xff, n_out * 4, NULL, errp));
    CHECK_OK(kr_dec_fattn(g->dec, NULL, &view, &fp, errp));
    kr_test_download(g->be, out2, dout, n_out * 4);
    cr_expect(memcmp(out, out2, n_out * 4) == 0, "%s: second launch differs", what);

    free(kc);
    free(vc);
    free(x);
    free(q);
    free(kn);
    free(vn);
    free(ff);
    free(out);
    free(out2);
    free(qa);
    free(kc1);
    free(vc1);
    free(kc2);
    free(vc2);
    free(xq1);
    free(xq2);
    free(kr);
    free(qr);
    free(ref);
    free(sc);
    kr_buffer *bufs[] = {bk, bv, bk2, bv2, bq, bkn, bvn, bff, bo, bxq, bs, bp, bsl, bq2, bpf};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        kr_backend_free(g->be, bufs[i]);
}

static void cases(kr_dtype t)
{
    gpu g;
    gpu_open(&g);
    const bool q8 = t == KR_DTYPE_Q8_0;
    run_case(&g, fc(t, 8, 8, 64, 16, 0, 0, 1));          /* first token */
    run_case(&g, fc(t, 8, 8, 64, 16, 0, 0, 4));          /* first token, empty splits */
    run_case(&g, fc(t, 8, 8, 64, 16, 1, 0, 3));          /* second, more splits than keys */
    run_case(&g, fc(t, 32, 32, 128, 641, 600, 0, 8));    /* llama-2 7B, the bench shape */
    run_case(&g, fc(t, 32, 32, 128, 1100, 1037, 0, 1));  /* one block walks > 8 stages */
    fa_case c = fc(t, 32, 32, 128, 1100, 1037, 0, 13);   /* uneven chunks, 2 stages streaming */
    c.max_stages = 2;
    run_case(&g, c);
    run_case(&g, fc(t, 32, 8, 128, 4200, 4100, 0, 33));  /* GQA, llama-3, > 4096 */
    c = fc(t, 32, 8, 128, 4200, 4100, 0, 20);
    c.neox = true;
    c.ff = true;
    c.freq_base = 500000.0f;
    c.prefetch = true;
    run_case(&g, c);
    c = fc(t, 71, 1, 64, 700, 650, 0, 9); /* falcon 7B MQA: 9 head batches */
    c.neox = true;
    run_case(&g, c);
    run_case(&g, fc(t, 71, 1, 64, 700, 650, 0, 1));
    run_case(&g, fc(t, 4, 1, 256, 300, 299, 0, 16)); /* head_dim 256 */
    c = fc(t, 4, 2, 256, 300, 200, 0, 3);
    c.n_rot = 64; /* partial rotary */
    c.freq_scale = 0.25f;
    run_case(&g, c);
    if (!q8) {
        c = fc(t, 6, 2, 80, 100, 3, 0, 8); /* head_dim 80 (no xq), empty splits */
        run_case(&g, c);
        c = fc(t, 12, 4, 96, 530, 517, 0, 5); /* head_dim 96 */
        c.n_rot = 32;
        run_case(&g, c);
        c = fc(t, 5, 5, 8, 40, 39, 0, 2); /* tiny heads */
        run_case(&g, c);
    }
    run_case(&g, fc(t, 8, 8, 64, 600, 517, 33, 1)); /* sliding window, plain cache */
    run_case(&g, fc(t, 8, 8, 64, 600, 517, 33, 4));
    run_case(&g, fc(t, 8, 2, 128, 64, 1000, 64, 3));       /* ring: rows = window */
    run_case(&g, fc(t, 8, 2, 128, 64, 1000, 50, 1));       /* ring, window < rows */
    run_case(&g, fc(t, 16, 4, 64, 4096, 4095, 4096, 20));  /* window = rows, full */
    run_case(&g, fc(t, 16, 4, 64, 4096, 5000, 4096, 20));  /* ring of 4096 at 5000 */
    c = fc(t, 10, 2, 64, 77, 76, 0, 2);
    c.kmag = 8.0f; /* peaky softmax */
    c.n_rot = 0;   /* no rotation */
    run_case(&g, c);
    c = fc(t, 32, 8, 128, 700, 650, 0, 6); /* slot 2 of 3 from device memory */
    c.n_slot = 3;
    c.slot = 2;
    run_case(&g, c);
    gpu_close(&g);
}

/* a few small cases for compute-sanitizer (memcheck, racecheck): stage reuse, ring, splits, slots */
Test(kv_fattn, small, .timeout = 300)
{
    gpu g;
    gpu_open(&g);
    for (int q8 = 0; q8 < 2; q8++) {
        const kr_dtype t = q8 ? KR_DTYPE_Q8_0 : KR_DTYPE_F16;
        run_case(&g, fc(t, 8, 8, 64, 16, 1, 0, 3));
        fa_case c = fc(t, 8, 2, 128, 64, 1000, 64, 3);
        c.max_stages = 1; /* every tile through the one stage */
        c.n_slot = 2;
        c.slot = 1;
        run_case(&g, c);
        c = fc(t, 12, 1, 64, 200, 150, 0, 2);
        c.max_stages = 2;
        c.neox = true;
        run_case(&g, c);
    }
    gpu_close(&g);
}

/* the other kernel variants (kr_dec_fattn_variant_name) on a subset */
Test(kv_fattn, variants, .timeout = 300)
{
    gpu g;
    gpu_open(&g);
    for (int v = 1; kr_dec_fattn_variant_name(v); v++) {
        fa_case c = fc(KR_DTYPE_F16, 32, 32, 128, 641, 600, 0, 8);
        c.variant = v;
        run_case(&g, c);
        c = fc(KR_DTYPE_Q8_0, 32, 8, 128, 1100, 1037, 0, 5); /* streaming through 2 stages */
        c.variant = v;
        c.max_stages = 2;
        c.neox = true;
        run_case(&g, c);
        c = fc(v % 2 ? KR_DTYPE_F16 : KR_DTYPE_Q8_0, 71, 1, 64, 300, 250, 0, 3); /* MQA: 9 head batches */
        c.variant = v;
        run_case(&g, c);
        c = fc(v % 2 ? KR_DTYPE_Q8_0 : KR_DTYPE_F16, 8, 2, 128, 64, 1000, 50, 2); /* ring, window < rows */
        c.variant = v;
        run_case(&g, c);
    }
    gpu_close(&g);
}

Test(kv_fattn, f16, .timeout = 300) { cases(KR_DTYPE_F16); }
Test(kv_fattn, q8_0, .timeout = 300) { cases(KR_DTYPE_Q8_0); }

/* p < 0 and a span that does not fit: out NaN, xq scales NaN, nothing stored */
Test(kv_fattn, invalid_position)
{
    gpu g;
    gpu_open(&g);
    const int nh = 4, hd = 64, rows = 8, kv_dim = nh * hd;
    const size_t rb = ref_row_bytes(KR_DTYPE_F16, kv_dim), n_out = (size_t)nh * hd, xqb = kr_dec_q8_bytes((int64_t)n_out);
    kr_buffer *bk, *bv, *bq, *bo, *bs, *bx;
    uint8_t *dk = kr_test_dalloc(g.be, rows * rb, &bk), *dv = kr_test_dalloc(g.be, rows * rb, &bv);
    float *dq = kr_test_dalloc(g.be, n_out * 4, &bq), *dout = kr_test_dalloc(g.be, n_out * 4, &bo);
    uint8_t *dx = kr_test_dalloc(g.be, xqb, &bx);
    float *scr = kr_test_dalloc(g.be, kr_dec_fattn_scratch_floats(nh, hd, 3) * 4, &bs);
    kr_err err;
    kr_err_clear(&err);
    CHECK_OK(kr_dec_fattn_scratch_init(g.dec, NULL, scr, nh, errp));
    cr_assert_eq(kr_backend_memset(g.be, dk, 0, rows * rb, NULL, &err), KR_OK);
    cr_assert_eq(kr_backend_memset(g.be, dv, 0, rows * rb, NULL, &err), KR_OK);
    cr_assert_eq(kr_backend_memset(g.be, dq, 0, n_out * 4, NULL, &err), KR_OK);
    kr_dec_kv_view view = {.k = dk, .v = dv, .type = KR_DTYPE_F16, .rows = rows, .kv_dim = kv_dim, .row_bytes = rb};
    const int bad[] = {-1, rows, 100};
    for (int split = 1; split <= 3; split += 2)
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            cr_assert_eq(kr_backend_memset(g.be, dout, 0, n_out * 4, NULL, &err), KR_OK);
            cr_assert_eq(kr_backend_memset(g.be, dx, 0, xqb, NULL, &err), KR_OK);
            kr_dec_fattn_params fp = {.q = dq, .k_new = dq, .v_new = dq, .n_head = nh, .n_head_kv = nh,
                                      .head_dim = hd, .n_rot = hd, .freq_base = 10000.0f, .freq_scale = 1.0f,
                                      .pos_imm = bad[i], .scale = 1.0f, .n_split = split, .scratch = scr,
                                      .out = dout, .xq = dx};
            CHECK_OK(kr_dec_fattn(g.dec, NULL, &view, &fp, errp));
            float out[256], dsc[16];
            uint8_t cache[2048];
            kr_test_download(g.be, out, dout, sizeof out);
            kr_test_download(g.be, dsc, dx + n_out, sizeof dsc);
            int nan = 0, dnan = 0;
            for (size_t j = 0; j < n_out; j++)
                nan += isnan(out[j]) != 0;
            for (int j = 0; j < 16; j++)
                dnan += isnan(dsc[j]) != 0;
            cr_expect_eq(nan, (int)n_out, "pos %d split %d: %d of %zu outputs NaN", bad[i], split, nan, n_out);
            cr_expect_eq(dnan, 16, "pos %d split %d: %d of 16 xq scales NaN", bad[i], split, dnan);
            size_t nz = 0;
            for (int r = 0; r < rows; r++) {
                kr_test_download(g.be, cache, dk + (size_t)r * rb, rb);
                for (size_t b = 0; b < rb; b++)
                    nz += cache[b] != 0;
            }
            cr_expect_eq(nz, 0, "pos %d: the cache was written", bad[i]);
        }
    kr_backend_free(g.be, bk);
    kr_backend_free(g.be, bv);
    kr_backend_free(g.be, bq);
    kr_backend_free(g.be, bo);
    kr_backend_free(g.be, bs);
    kr_backend_free(g.be, bx);
    gpu_close(&g);
}

/* shapes the kernel does not take (the step falls back to the split kernels) */
Test(kv_fattn_host, supports)
{
    cr_expect(kr_dec_fattn_supports(KR_DTYPE_F16, 32, 8, 128, 128));
    cr_expect(kr_dec_fattn_supports(KR_DTYPE_F16, 71, 1, 64, 64));
    cr_expect(kr_dec_fattn_supports(KR_DTYPE_F16, 6, 2, 80, 80));
    cr_expect(kr_dec_fattn_supports(KR_DTYPE_Q8_0, 32, 32, 128, 128));
    cr_expect(!kr_dec_fattn_supports(KR_DTYPE_Q8_0, 6, 2, 80, 80));
    cr_expect(!kr_dec_fattn_supports(KR_DTYPE_Q8_0, 12, 4, 96, 96));
    cr_expect(!kr_dec_fattn_supports(KR_DTYPE_F16, 8, 8, 260, 64));
    cr_expect(!kr_dec_fattn_supports(KR_DTYPE_F16, 8, 3, 64, 64));
    cr_expect(!kr_dec_fattn_supports(KR_DTYPE_F16, 8, 8, 64, 65));
    cr_expect(!kr_dec_fattn_supports(KR_DTYPE_F32, 8, 8, 64, 64));
    cr_expect_eq(kr_dec_fattn_default_splits(NULL, 32, 32, 641), 8);
    cr_expect_eq(kr_dec_fattn_default_splits(NULL, 32, 32, 4161), 8);
    cr_expect_eq(kr_dec_fattn_default_splits(NULL, 32, 8, 641), 20);
    cr_expect_eq(kr_dec_fattn_default_splits(NULL, 32, 8, 32768), 33);
    cr_expect_eq(kr_dec_fattn_default_splits(NULL, 8, 8, 16), 1);
    cr_expect_eq(kr_dec_fattn_scratch_floats(5, 64, 2), 8 + 5 * 2 * 66u);
    cr_expect_str_eq(kr_dec_fattn_variant_name(0), "auto");
    cr_expect_str_eq(kr_dec_fattn_variant_name(1), "c64");
    cr_expect_null(kr_dec_fattn_variant_name(-1));
}
