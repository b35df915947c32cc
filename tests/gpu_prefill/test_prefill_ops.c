/* Prefill kernels (kernels/prefill/ via plugins/cuda_forward/kr_prefill_ops.h)
 * against CPU references on fresh random inputs (KR_TEST_SEED=n replays).
 *
 * Flash attention: reference in double from the very fp16 K/V values in the
 * cache and the fp32 q. The kernel rounds q and the softmax weights P to fp16
 * (fp32 accumulation), so per (token, head) row
 *     |o - ref|^2 / |ref|^2 <= 1e-4    (max over rows)
 * and over everything NMSE <= 1e-5. Scores have a standard deviation of ~2
 * (peaked softmax), so a key too many or too few changes a row by far more
 * than that (early rows see 1..few keys, windowed rows ~window keys).
 * Every cache row not visible to the batch holds NaN and the output padding
 * (o_stride > n_head*head_dim) and all outputs are poisoned with NaN: a read
 * of an unwritten key or a missing / stray write shows.
 * RoPE: vs double, NMSE <= 1e-6 (the decode RoPE tolerance); KV store: bit-exact
 * fp16 round-to-nearest-even, other rows untouched; swiglu: NMSE <= 1e-9. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/backend.h"
#include "kernrun/dtype.h"
#include "kernrun/half.h"
#include "kernrun/quant.h"
#include "kr_prefill_ops.h"
#include "kr_test_gpu.h"
#include "kr_test_rng.h"

static kr_pf *pf_open(kr_backend *be)
{
    kr_err err;
    kr_err_clear(&err);
    kr_pf *p = NULL;
    kr_status st = kr_pf_create(be, &p, &err);
    cr_assert_eq(st, KR_OK, "kr_pf_create: %s", kr_err_msg(&err, st));
    return p;
}

/* ---- flash attention --------------------------------------------------------- */

typedef struct fa_case {
    int d, n_head, n_head_kv, n, pos0, window, rows;
    int q_pad, o_pad;   /* extra floats per token row of q / out */
    int row_pad;        /* extra bytes per cache row (multiple of 16) */
    bool q8;            /* Q8_0 cache rows instead of f16 */
    bool out16;         /* fp16 output (kr_pf_flash_attn_ex out16) */
} fa_case;

/* Host Q8_0 row (interfaces layout) of kvd values x: quants then fp16 scales; deq gets q * fp32(fp16 d). */
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
            const int q = (int)roundf(x[32 * b + i] * id);
            row[32 * b + i] = (uint8_t)(int8_t)q;
            deq[32 * b + i] = (float)q * kr_fp16_to_fp32(dh);
        }
    }
}

static int g_fa_variant = KR_PF_FA_AUTO; /* kernel of F16 cases (in the messages) */

/* Under tools/gpu-check's compute-sanitizer pass: no cases above 200 tokens, fewer random ones. */
static bool quick(void) { return getenv("KERNRUN_SKIP_FAULT_TESTS") != NULL; }

static void run_fa(kr_backend *be, kr_pf *p, const fa_case *c)
{
    kr_pf_set_flash_variant(p, g_fa_variant);
    const int D = c->d, H = c->n_head, HK = c->n_head_kv, n = c->n, pos0 = c->pos0, W = c->window, R = c->rows;
    const int G = H / HK;
    const size_t qs = (size_t)H * D + c->q_pad, os = (size_t)H * D + c->o_pad;
    const size_t kvd = (size_t)HK * D;
    const size_t row_bytes = ((c->q8 ? kvd + 2 * (kvd / 32) : 2 * kvd) + 15) / 16 * 16 + c->row_pad;
    const int lo0 = W > 0 ? (pos0 - W + 1 > 0 ? pos0 - W + 1 : 0) : 0, hi = pos0 + n - 1;
    cr_assert(hi - lo0 < R, "bad case");

    float *q = malloc((size_t)n * qs * sizeof *q);
    uint8_t *kc = malloc((size_t)R * row_bytes), *vc = malloc((size_t)R * row_bytes);
    float *kf = malloc((size_t)R * kvd * sizeof *kf), *vf = malloc((size_t)R * kvd * sizeof *vf); /* reference values */
    float *x = malloc(kvd * sizeof *x);
    float *o = malloc((size_t)n * os * sizeof *o);
    cr_assert(q && kc && vc && kf && vf && x && o);
    const float qa = 6.0f; /* score std ~ qa / 3 with scale 1/sqrt(D) */
    for (size_t i = 0; i < (size_t)n * qs; i++)
        q[i] = kr_test_rng_f(-qa, qa);
    for (size_t i = 0; i < (size_t)R * row_bytes / 2; i++)
        ((uint16_t *)kc)[i] = ((uint16_t *)vc)[i] = 0x7e00; /* fp16 NaN (q8: NaN scales): rows nobody may read */
    for (int j = lo0; j <= hi; j++) {
        for (int kv = 0; kv < 2; kv++) {
            uint8_t *row = (kv ? vc : kc) + (size_t)(j % R) * row_bytes;
            float *ref = (kv ? vf : kf) + (size_t)(j % R) * kvd;
            for (size_t i = 0; i < kvd; i++)
                x[i] = kr_test_rng_f(-1.0f, 1.0f);
            if (c->q8) {
                q8_row(x, kvd, row, ref);
            } else {
                for (size_t i = 0; i < kvd; i++) {
                    uint16_t h = kr_fp32_to_fp16(x[i]);
                    memcpy(row + 2 * i, &h, 2);
                    ref[i] = kr_fp16_to_fp32(h);
                }
            }
        }
    }
    const float scale = 1.0f / sqrtf((float)D);

    kr_buffer *bq, *bk, *bv, *bo;
    float *dq = kr_test_dupload(be, q, (size_t)n * qs * sizeof *q, &bq);
    void *dk = kr_test_dupload(be, kc, (size_t)R * row_bytes, &bk);
    void *dv = kr_test_dupload(be, vc, (size_t)R * row_bytes, &bv);
    float *dout = kr_test_dpoisoned(be, (size_t)n * os, &bo);
    kr_err err;
    kr_err_clear(&err);
    if (c->out16) /* (n, os) halves, poisoned with fp16 NaN 0xFFFF */
        cr_assert_eq(kr_backend_memset(be, dout, 0xFF, (size_t)n * os * sizeof(float), NULL, &err), KR_OK);
    kr_status st = kr_pf_flash_attn_ex(p, NULL, dq, qs, dk, dv, c->q8 ? KR_DTYPE_Q8_0 : KR_DTYPE_F16, row_bytes, R,
                                       c->out16 ? NULL : dout, c->out16 ? (uint16_t *)dout : NULL, os, n, pos0, H, HK, D,
                                       W, scale, &err);
    cr_assert_eq(st, KR_OK, "flash attn: %s", kr_err_msg(&err, st));
    kr_test_download(be, o, dout, (size_t)n * os * sizeof *o);
    if (c->out16) { /* widen in place, back to front (halves occupy the first half of the buffer) */
        const uint16_t *h16 = (const uint16_t *)o;
        for (size_t i = (size_t)n * os; i-- > 0;)
            o[i] = kr_fp16_to_fp32(h16[i]);
    }

    double num = 0, den = 0, worst = 0;
    int worst_t = -1, worst_h = -1;
    double *sc = malloc((size_t)(hi + 1) * sizeof *sc), *ref = malloc((size_t)D * sizeof *ref);
    cr_assert(sc && ref);
    for (int t = 0; t < n; t++) {
        const int pp = pos0 + t, lo = W > 0 ? (pp - W + 1 > 0 ? pp - W + 1 : 0) : 0;
        for (int h = 0; h < H; h++) {
            const int g = h / G;
            const float *qh = q + (size_t)t * qs + (size_t)h * D;
            double mx = -INFINITY;
            for (int j = lo; j <= pp; j++) {
                const float *kr = kf + (size_t)(j % R) * kvd + (size_t)g * D;
                double dot = 0;
                for (int i = 0; i < D; i++)
                    dot += (double)qh[i] * kr[i];
                sc[j] = dot * scale;
                if (sc[j] > mx)
                    mx = sc[j];
            }
            double l = 0;
            for (int i = 0; i < D; i++)
                ref[i] = 0;
            for (int j = lo; j <= pp; j++) {
                const double e = exp(sc[j] - mx);
                l += e;
                const float *vr = vf + (size_t)(j % R) * kvd + (size_t)g * D;
                for (int i = 0; i < D; i++)
                    ref[i] += e * vr[i];
            }
            double rn = 0, rd = 0;
            const float *oh = o + (size_t)t * os + (size_t)h * D;
            for (int i = 0; i < D; i++) {
                const double r = ref[i] / l, e = (double)oh[i] - r;
                cr_assert(isfinite(oh[i]), "flash attn D %d n %d pos0 %d q8 %d: out[%d, %d, %d] = %g not finite (seed %llu)",
                          D, n, pos0, (int)c->q8, t, h, i, oh[i], (unsigned long long)kr_test_seed());
                rn += e * e;
                rd += r * r;
            }
            num += rn;
            den += rd;
            if (rn / rd > worst) {
                worst = rn / rd;
                worst_t = t;
                worst_h = h;
            }
        }
        for (int i = 0; i < c->o_pad; i++)
            cr_assert(isnan(o[(size_t)t * os + (size_t)H * D + i]), "flash attn wrote into the out padding");
    }
    const double nmse = num / den;
    const char *var = c->q8 ? " q8_0" : g_fa_variant == KR_PF_FA_PIPE ? " pipe" : " simple";
    cr_log_info("flash attn D %d heads %d/%d n %d pos0 %d window %d rows %d%s: nmse %.3g, worst row %.3g (t %d h %d)", D,
                H, HK, n, pos0, W, R, var, nmse, worst, worst_t, worst_h);
    cr_expect(worst <= 1e-4, "flash attn D %d heads %d/%d n %d pos0 %d window %d rows %d%s: worst row error %.3g at t "
              "%d h %d (seed %llu)", D, H, HK, n, pos0, W, R, var, worst, worst_t, worst_h,
              (unsigned long long)kr_test_seed());
    cr_expect(nmse <= 1e-5, "flash attn D %d heads %d/%d n %d pos0 %d q8 %d: NMSE %.3g (seed %llu)", D, H, HK, n, pos0,
              (int)c->q8, nmse, (unsigned long long)kr_test_seed());
    free(sc);
    free(ref);
    kr_backend_free(be, bq);
    kr_backend_free(be, bk);
    kr_backend_free(be, bv);
    kr_backend_free(be, bo);
    free(q);
    free(kc);
    free(vc);
    free(kf);
    free(vf);
    free(x);
    free(o);
}

/* Fixed shapes; which: 0 F16 cases with the simple kernel, 1 with the pipelined one, 2 Q8_0 cases. */
static void fa_shapes(int which)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_pf *p = pf_open(be);
    static const fa_case cases[] = {
        {.d = 128, .n_head = 8, .n_head_kv = 8, .n = 77, .pos0 = 0, .rows = 128},                  /* MHA, odd n */
        {.d = 128, .n_head = 32, .n_head_kv = 8, .n = 131, .pos0 = 45, .rows = 200, .q_pad = 4},    /* GQA, cached */
        {.d = 64, .n_head = 71, .n_head_kv = 1, .n = 19, .pos0 = 10, .rows = 64, .o_pad = 6},       /* falcon MQA */
        {.d = 80, .n_head = 12, .n_head_kv = 4, .n = 65, .pos0 = 100, .window = 37, .rows = 256},   /* window */
        {.d = 128, .n_head = 4, .n_head_kv = 2, .n = 57, .pos0 = 300, .window = 40, .rows = 96,
         .row_pad = 16},                                                                             /* ring wraps */
        {.d = 256, .n_head = 4, .n_head_kv = 2, .n = 33, .pos0 = 7, .rows = 64},                    /* head_dim 256 */
        {.d = 96, .n_head = 6, .n_head_kv = 6, .n = 1, .pos0 = 250, .rows = 251},                   /* one token */
        {.d = 16, .n_head = 4, .n_head_kv = 2, .n = 70, .pos0 = 5, .rows = 80},                     /* tiny models */
        {.d = 32, .n_head = 3, .n_head_kv = 1, .n = 9, .pos0 = 0, .window = 4, .rows = 9},
        {.d = 64, .n_head = 6, .n_head_kv = 3, .n = 200, .pos0 = 3, .window = 9, .rows = 300},      /* tiny window */
        {.d = 128, .n_head = 32, .n_head_kv = 32, .n = 512, .pos0 = 0, .rows = 512},                /* 7B chunk */
        /* Q8_0 cache */
        {.d = 128, .n_head = 32, .n_head_kv = 8, .n = 131, .pos0 = 45, .rows = 200, .q8 = true},
        {.d = 64, .n_head = 71, .n_head_kv = 1, .n = 19, .pos0 = 10, .rows = 64, .q8 = true},
        {.d = 80, .n_head = 8, .n_head_kv = 2, .n = 65, .pos0 = 100, .window = 37, .rows = 256, .q8 = true},
        {.d = 16, .n_head = 4, .n_head_kv = 2, .n = 70, .pos0 = 5, .rows = 80, .row_pad = 16, .q8 = true},
        {.d = 256, .n_head = 2, .n_head_kv = 1, .n = 33, .pos0 = 7, .rows = 64, .q8 = true},
        /* fp16 output (f16 cases run with both F16 kernels) */
        {.d = 128, .n_head = 32, .n_head_kv = 8, .n = 100, .pos0 = 20, .rows = 128, .o_pad = 2, .out16 = true},
        {.d = 80, .n_head = 6, .n_head_kv = 2, .n = 45, .pos0 = 3, .window = 11, .rows = 64, .out16 = true},
        {.d = 64, .n_head = 8, .n_head_kv = 2, .n = 50, .pos0 = 0, .rows = 64, .q8 = true, .out16 = true},
    };
    g_fa_variant = which == 1 ? KR_PF_FA_PIPE : KR_PF_FA_SIMPLE;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (cases[i].q8 == (which == 2) && !(quick() && cases[i].n > 200))
            run_fa(be, p, &cases[i]);
    kr_pf_free(p);
    kr_backend_destroy(be);
}

/* (separate tests: they run in parallel processes with -jN, compiling their kernels at once) */
Test(gpu_prefill, flash_attn_shapes_simple) { fa_shapes(0); }
Test(gpu_prefill, flash_attn_shapes_pipe) { fa_shapes(1); }
Test(gpu_prefill, flash_attn_shapes_q8_0) { fa_shapes(2); }

Test(gpu_prefill, flash_attn_random)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_pf *p = pf_open(be);
    static const int dims[] = {16, 32, 64, 80, 96, 128, 256};
    for (int it = 0; it < (quick() ? 3 : 8); it++) {
        fa_case c = {0};
        c.d = dims[kr_test_rng_u64() % 7];
        c.n_head_kv = 1 + (int)(kr_test_rng_u64() % 4);
        c.n_head = c.n_head_kv * (1 + (int)(kr_test_rng_u64() % 5));
        c.n = 1 + (int)(kr_test_rng_u64() % 150);
        c.pos0 = (int)(kr_test_rng_u64() % 120);
        c.window = kr_test_rng_u64() % 2 ? 1 + (int)(kr_test_rng_u64() % 80) : 0;
        const int lo0 = c.window > 0 ? (c.pos0 - c.window + 1 > 0 ? c.pos0 - c.window + 1 : 0) : 0;
        c.rows = c.pos0 + c.n - lo0 + (int)(kr_test_rng_u64() % 5); /* ring when the window cuts */
        c.q_pad = 4 * (int)(kr_test_rng_u64() % 3);
        c.o_pad = 2 * (int)(kr_test_rng_u64() % 3);
        c.q8 = (c.n_head_kv * c.d) % 32 == 0 && kr_test_rng_u64() % 2;
        g_fa_variant = kr_test_rng_u64() % 2 ? KR_PF_FA_PIPE : KR_PF_FA_SIMPLE;
        run_fa(be, p, &c);
    }
    kr_pf_free(p);
    kr_backend_destroy(be);
}

Test(gpu_prefill, flash_attn_refuses)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_pf *p = pf_open(be);
    kr_buffer *b;
    float *d = kr_test_dalloc(be, 1 << 20, &b);
    kr_err err;
    kr_err_clear(&err);
    /* head_dim 72 unsupported */
    cr_expect_eq(kr_pf_flash_attn(p, NULL, d, 72, d, d, KR_DTYPE_F16, 144, 16, d, 72, 4, 0, 1, 1, 72, 0, 1.0f, &err),
                 KR_ERR_UNSUPPORTED);
    /* heads not a multiple */
    cr_expect_eq(kr_pf_flash_attn(p, NULL, d, 384, d, d, KR_DTYPE_F16, 256, 16, d, 384, 4, 0, 3, 2, 128, 0, 1.0f, &err),
                 KR_ERR_INVALID_ARG);
    /* span does not fit the ring: positions 0..16 in 16 rows */
    cr_expect_eq(kr_pf_flash_attn(p, NULL, d, 128, d, d, KR_DTYPE_F16, 256, 16, d, 128, 17, 0, 1, 1, 128, 0, 1.0f, &err),
                 KR_ERR_INVALID_ARG);
    /* window makes it fit: pos 100..115 with window 1 -> lo0 100 */
    cr_expect_eq(kr_pf_flash_attn(p, NULL, d, 128, d, d, KR_DTYPE_F16, 256, 16, d + 4096, 128, 16, 100, 1, 1, 128, 1, 1.0f, &err),
                 KR_OK, "%s", err.msg);
    /* q8_0 cache with kv_dim 16 (not whole blocks); F32 cache */
    cr_expect_eq(kr_pf_flash_attn(p, NULL, d, 16, d, d, KR_DTYPE_Q8_0, 64, 16, d, 16, 4, 0, 1, 1, 16, 0, 1.0f, &err),
                 KR_ERR_INVALID_ARG);
    cr_expect_eq(kr_pf_flash_attn(p, NULL, d, 128, d, d, KR_DTYPE_F32, 512, 16, d, 128, 4, 0, 1, 1, 128, 0, 1.0f, &err),
                 KR_ERR_UNSUPPORTED);
    /* misaligned q stride */
    cr_expect_eq(kr_pf_flash_attn(p, NULL, d, 130, d, d, KR_DTYPE_F16, 256, 16, d, 128, 4, 0, 1, 1, 128, 0, 1.0f, &err),
                 KR_ERR_INVALID_ARG);
    kr_test_download(be, &(float){0}, d, sizeof(float)); /* sync: the one valid launch ran */
    kr_backend_free(be, b);
    kr_pf_free(p);
    kr_backend_destroy(be);
}

/* ---- RoPE, KV store, swiglu --------------------------------------------------- */

Test(gpu_prefill, rope_batched)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_pf *p = pf_open(be);
    for (int variant = 0; variant < 4; variant++) {
        const int D = variant == 2 ? 80 : 128, HQ = 5, HK = 3, n = 37 + variant, pos0 = 17 * variant;
        const int n_rot = variant == 3 ? 64 : D;
        const bool neox = variant % 2 == 1, ff = variant == 3;
        const size_t qs = (size_t)(HQ + 2 * HK) * D + 8; /* fused qkv row: q, k, v */
        const float base = 10000.0f, fscale = variant == 1 ? 0.25f : 1.0f;
        float *x = malloc((size_t)n * qs * sizeof *x), *y = malloc((size_t)n * qs * sizeof *y);
        float *fr = malloc((size_t)n_rot / 2 * sizeof *fr);
        cr_assert(x && y && fr);
        for (size_t i = 0; i < (size_t)n * qs; i++)
            x[i] = kr_test_rng_f(-2.0f, 2.0f);
        for (int i = 0; i < n_rot / 2; i++)
            fr[i] = kr_test_rng_f(1.0f, 8.0f);
        kr_buffer *bx, *bf;
        float *dx = kr_test_dupload(be, x, (size_t)n * qs * sizeof *x, &bx);
        float *df = kr_test_dupload(be, fr, (size_t)n_rot / 2 * sizeof *fr, &bf);
        kr_err err;
        kr_err_clear(&err);
        kr_status st = kr_pf_rope(p, NULL, dx, qs, HQ, dx + (size_t)HQ * D, qs, HK, D, n_rot, n, pos0, base, fscale,
                                  ff ? df : NULL, neox, &err);
        cr_assert_eq(st, KR_OK, "rope: %s", kr_err_msg(&err, st));
        kr_test_download(be, y, dx, (size_t)n * qs * sizeof *y);
        double num = 0, den = 0;
        for (int t = 0; t < n; t++) {
            for (int h = 0; h < HQ + 2 * HK; h++) {
                const float *a = x + (size_t)t * qs + (size_t)h * D;
                const float *b = y + (size_t)t * qs + (size_t)h * D;
                double r[256];
                for (int i = 0; i < D; i++)
                    r[i] = a[i];
                if (h < HQ + HK) {
                    for (int i = 0; i < n_rot / 2; i++) {
                        double th = (double)(pos0 + t) * fscale * pow(base, -2.0 * i / n_rot);
                        if (ff)
                            th /= fr[i];
                        const int ia = neox ? i : 2 * i, ib = neox ? i + n_rot / 2 : 2 * i + 1;
                        r[ia] = a[ia] * cos(th) - a[ib] * sin(th);
                        r[ib] = a[ia] * sin(th) + a[ib] * cos(th);
                    }
                }
                for (int i = 0; i < D; i++) {
                    num += (b[i] - r[i]) * (b[i] - r[i]);
                    den += r[i] * r[i];
                    if (h >= HQ + HK || i >= n_rot)
                        cr_assert_eq(b[i], a[i], "rope changed an unrotated value (h %d i %d)", h, i);
                }
            }
            for (int i = (HQ + 2 * HK) * D; i < (int)qs; i++)
                cr_assert_eq(y[(size_t)t * qs + i], x[(size_t)t * qs + i], "rope wrote past the heads");
        }
        cr_expect(num / den <= 1e-6, "rope variant %d: NMSE %.3g (seed %llu)", variant, num / den,
                  (unsigned long long)kr_test_seed());
        kr_backend_free(be, bx);
        kr_backend_free(be, bf);
        free(x);
        free(y);
        free(fr);
    }
    kr_pf_free(p);
    kr_backend_destroy(be);
}

Test(gpu_prefill, kv_store)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_pf *p = pf_open(be);
    const int kvd = 200, n = 29, rows = 32, pos0 = 13; /* wraps the ring (positions 13..41), 3 rows untouched */
    const size_t xs = 3 * (size_t)kvd + 4, row_bytes = 2 * (size_t)kvd + 16, rowh = row_bytes / 2;
    float *x = malloc((size_t)n * xs * sizeof *x);
    uint16_t *kc = malloc(rows * row_bytes), *vc = malloc(rows * row_bytes);
    cr_assert(x && kc && vc);
    for (size_t i = 0; i < (size_t)n * xs; i++)
        x[i] = kr_test_rng_f(-70000.0f, 70000.0f) * (kr_test_rng_u64() % 2 ? 1.0f : 1e-6f);
    kr_buffer *bx, *bk, *bv;
    float *dx = kr_test_dupload(be, x, (size_t)n * xs * sizeof *x, &bx);
    void *dk = kr_test_dalloc(be, rows * row_bytes, &bk), *dv = kr_test_dalloc(be, rows * row_bytes, &bv);
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(kr_backend_memset(be, dk, 0xAB, rows * row_bytes, NULL, &err), KR_OK);
    cr_assert_eq(kr_backend_memset(be, dv, 0xCD, rows * row_bytes, NULL, &err), KR_OK);
    cr_expect_eq(kr_pf_kv_store_f16(p, NULL, dx + kvd, xs, dx + 2 * kvd, xs, dk, dv, row_bytes, rows, kvd, rows + 1,
                                    pos0, &err),
                 KR_ERR_INVALID_ARG, "n > rows must be refused (two tokens would share a row)");
    kr_status st = kr_pf_kv_store_f16(p, NULL, dx + kvd, xs, dx + 2 * kvd, xs, dk, dv, row_bytes, rows, kvd, n, pos0,
                                      &err);
    cr_assert_eq(st, KR_OK, "kv store: %s", kr_err_msg(&err, st));
    kr_test_download(be, kc, dk, rows * row_bytes);
    kr_test_download(be, vc, dv, rows * row_bytes);
    for (int r = 0; r < rows; r++) {
        /* the token t with (pos0 + t) % rows == r (at most one: n <= rows) */
        int t = -1;
        for (int u = 0; u < n; u++)
            if ((pos0 + u) % rows == r)
                t = u;
        for (size_t i = 0; i < rowh; i++) {
            uint16_t ek = 0xABAB, ev = 0xCDCD;
            if (t >= 0 && i < (size_t)kvd) {
                ek = kr_fp32_to_fp16(x[(size_t)t * xs + kvd + i]);
                ev = kr_fp32_to_fp16(x[(size_t)t * xs + 2 * kvd + i]);
            }
            cr_assert_eq(kc[(size_t)r * rowh + i], ek, "k row %d [%zu]: %04x != %04x", r, i, kc[(size_t)r * rowh + i], ek);
            cr_assert_eq(vc[(size_t)r * rowh + i], ev, "v row %d [%zu]: %04x != %04x", r, i, vc[(size_t)r * rowh + i], ev);
        }
    }
    kr_backend_free(be, bx);
    kr_backend_free(be, bk);
    kr_backend_free(be, bv);
    free(x);
    free(kc);
    free(vc);
    kr_pf_free(p);
    kr_backend_destroy(be);
}

/* Q8_0 store: bytes equal the host quantization (GGML q8_0 formula) of the same values; ring; other rows untouched. */
Test(gpu_prefill, kv_store_q8)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_pf *p = pf_open(be);
    const int kvd = 96, n = 13, rows = 16, pos0 = 7;
    const size_t xs = 2 * (size_t)kvd + 4, row_bytes = 128;
    float *x = malloc((size_t)n * xs * sizeof *x), *deq = malloc(kvd * sizeof *deq);
    uint8_t *kc = malloc(rows * row_bytes), *vc = malloc(rows * row_bytes), *want = malloc(row_bytes);
    cr_assert(x && deq && kc && vc && want);
    for (size_t i = 0; i < (size_t)n * xs; i++)
        x[i] = kr_test_rng_f(-5.0f, 5.0f);
    for (int i = 0; i < 32; i++)
        x[(size_t)3 * xs + i] = 0.0f; /* an all-zero block: d = 0, q = 0 */
    kr_buffer *bx, *bk, *bv;
    float *dx = kr_test_dupload(be, x, (size_t)n * xs * sizeof *x, &bx);
    void *dk = kr_test_dalloc(be, rows * row_bytes, &bk), *dv = kr_test_dalloc(be, rows * row_bytes, &bv);
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(kr_backend_memset(be, dk, 0xAB, rows * row_bytes, NULL, &err), KR_OK);
    cr_assert_eq(kr_backend_memset(be, dv, 0xCD, rows * row_bytes, NULL, &err), KR_OK);
    kr_status st = kr_pf_kv_store_q8(p, NULL, dx, xs, dx + kvd, xs, dk, dv, row_bytes, rows, kvd, n, pos0, &err);
    cr_assert_eq(st, KR_OK, "kv store q8: %s", kr_err_msg(&err, st));
    kr_test_download(be, kc, dk, rows * row_bytes);
    kr_test_download(be, vc, dv, rows * row_bytes);
    const size_t used = (size_t)kvd + 2 * (kvd / 32);
    for (int r = 0; r < rows; r++) {
        int t = -1;
        for (int u = 0; u < n; u++)
            if ((pos0 + u) % rows == r)
                t = u;
        for (int kv = 0; kv < 2; kv++) {
            const uint8_t *got = (kv ? vc : kc) + (size_t)r * row_bytes;
            memset(want, kv ? 0xCD : 0xAB, row_bytes);
            if (t >= 0)
                q8_row(x + (size_t)t * xs + (size_t)kv * kvd, kvd, want, deq);
            for (size_t i = 0; i < row_bytes; i++)
                cr_assert_eq(got[i], want[i], "%s row %d byte %zu (of %zu used): %02x != %02x", kv ? "v" : "k", r, i,
                             used, got[i], want[i]);
        }
    }
    kr_backend_free(be, bx);
    kr_backend_free(be, bk);
    kr_backend_free(be, bv);
    free(x);
    free(deq);
    free(kc);
    free(vc);
    free(want);
    kr_pf_free(p);
    kr_backend_destroy(be);
}

Test(gpu_prefill, swiglu_rows)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_pf *p = pf_open(be);
    const int ff = 333, n = 7;
    const size_t xs = 2 * (size_t)ff + 5, ys = ff + 3;
    float *x = malloc((size_t)n * xs * sizeof *x), *y = malloc((size_t)n * ys * sizeof *y);
    cr_assert(x && y);
    for (size_t i = 0; i < (size_t)n * xs; i++)
        x[i] = kr_test_rng_f(-8.0f, 8.0f);
    kr_buffer *bx, *by;
    float *dx = kr_test_dupload(be, x, (size_t)n * xs * sizeof *x, &bx);
    float *dy = kr_test_dpoisoned(be, (size_t)n * ys, &by);
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_pf_swiglu(p, NULL, dx, xs, (size_t)ff + 2, dy, ys, ff, n, &err);
    cr_assert_eq(st, KR_OK, "swiglu: %s", kr_err_msg(&err, st));
    kr_test_download(be, y, dy, (size_t)n * ys * sizeof *y);
    double num = 0, den = 0;
    for (int t = 0; t < n; t++) {
        for (int i = 0; i < ff; i++) {
            const double g = x[(size_t)t * xs + i], u = x[(size_t)t * xs + ff + 2 + i];
            const double r = g / (1.0 + exp(-g)) * u, e = y[(size_t)t * ys + i] - r;
            num += e * e;
            den += r * r;
        }
        for (size_t i = ff; i < ys; i++)
            cr_assert(isnan(y[(size_t)t * ys + i]), "swiglu wrote into the padding");
    }
    cr_expect(num / den <= 1e-9, "swiglu NMSE %.3g (seed %llu)", num / den, (unsigned long long)kr_test_seed());
    kr_backend_free(be, bx);
    kr_backend_free(be, by);
    free(x);
    free(y);
    kr_pf_free(p);
    kr_backend_destroy(be);
}

/* Repacked (qs | scales, kernels/forward/matvec_repacked.cu) -> GGML blocks, byte-exact; padding untouched. */
Test(gpu_prefill, unrepack)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_pf *p = pf_open(be);
    for (int q8 = 0; q8 < 2; q8++) {
        const int qsz = q8 ? 32 : 16, rows = 37, nb = q8 ? 5 : 70, bb = qsz + 2; /* partial chunks of 32 blocks */
        const size_t row = (size_t)nb * bb, stride = (row + 15) / 16 * 16 + 16, nbk = (size_t)rows * nb;
        uint8_t *ggml = malloc(rows * row), *qs = malloc(nbk * qsz), *out = malloc(rows * stride);
        uint16_t *sc = malloc(nbk * 2);
        cr_assert(ggml && qs && out && sc);
        for (size_t i = 0; i < rows * row; i++)
            ggml[i] = (uint8_t)kr_test_rng_u64();
        for (size_t b = 0; b < nbk; b++) {
            const uint8_t *blk = ggml + b * bb;
            sc[b] = (uint16_t)(blk[0] | blk[1] << 8);
            memcpy(qs + b * qsz, blk + 2, qsz);
        }
        kr_buffer *bq, *bs, *bo;
        void *dq = kr_test_dupload(be, qs, nbk * qsz, &bq), *ds = kr_test_dupload(be, sc, nbk * 2, &bs);
        void *dout = kr_test_dalloc(be, rows * stride, &bo);
        kr_err err;
        kr_err_clear(&err);
        cr_assert_eq(kr_backend_memset(be, dout, 0x5A, rows * stride, NULL, &err), KR_OK);
        kr_status st = kr_pf_unrepack(p, NULL, q8 == 1, dq, ds, dout, stride, rows, (int64_t)nb * 32, &err);
        cr_assert_eq(st, KR_OK, "unrepack: %s", kr_err_msg(&err, st));
        kr_test_download(be, out, dout, rows * stride);
        for (int r = 0; r < rows; r++) {
            cr_assert_eq(memcmp(out + r * stride, ggml + r * row, row), 0, "q8 %d row %d differs", q8, r);
            for (size_t i = row; i < stride; i++)
                cr_assert_eq(out[r * stride + i], 0x5A, "q8 %d row %d: padding written", q8, r);
        }
        kr_backend_free(be, bq);
        kr_backend_free(be, bs);
        kr_backend_free(be, bo);
        free(ggml);
        free(qs);
        free(out);
        free(sc);
    }
    kr_pf_free(p);
    kr_backend_destroy(be);
}

/* Batched embedding vs models/quant's CPU dequantization (exact for these types), bad ids -> NaN. */
Test(gpu_prefill, embed_batched)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_pf *p = pf_open(be);
    static const kr_dtype types[] = {KR_DTYPE_F32, KR_DTYPE_F16, KR_DTYPE_Q4_0, KR_DTYPE_Q4_1, KR_DTYPE_Q8_0};
    for (size_t ti = 0; ti < sizeof types / sizeof types[0]; ti++) {
        const kr_dtype t = types[ti];
        const int nv = 37, E = 160, n = 23;
        uint64_t row = 0;
        cr_assert(kr_dtype_row_size(t, E, &row));
        const size_t rs = (size_t)row + 2 * (ti % 2) * 4, os = E + 3;
        uint8_t *tab = calloc(nv, rs);
        float *src = malloc(E * sizeof *src), *ref = malloc((size_t)nv * E * sizeof *ref);
        float *out = malloc((size_t)n * os * sizeof *out);
        int32_t tok[23];
        cr_assert(tab && src && ref && out);
        for (int r = 0; r < nv; r++) {
            for (int i = 0; i < E; i++)
                src[i] = kr_test_rng_f(-3.0f, 3.0f);
            cr_assert_eq(kr_quantize_row(t, src, tab + (size_t)r * rs, E), KR_OK);
            cr_assert_eq(kr_dequantize_row(t, tab + (size_t)r * rs, ref + (size_t)r * E, E), KR_OK);
        }
        for (int i = 0; i < n; i++)
            tok[i] = (int32_t)(kr_test_rng_u64() % nv);
        tok[5] = -1;
        tok[9] = nv;
        kr_buffer *bt, *bk, *bo;
        void *dt = kr_test_dupload(be, tab, (size_t)nv * rs, &bt);
        int32_t *dk = kr_test_dupload(be, tok, sizeof tok, &bk);
        float *dout = kr_test_dpoisoned(be, (size_t)n * os, &bo);
        kr_err err;
        kr_err_clear(&err);
        kr_status st = kr_pf_embed(p, NULL, t, dt, rs, nv, E, dk, dout, os, n, &err);
        cr_assert_eq(st, KR_OK, "embed %s: %s", kr_dtype_name(t), kr_err_msg(&err, st));
        kr_test_download(be, out, dout, (size_t)n * os * sizeof *out);
        for (int i = 0; i < n; i++) {
            for (int j = 0; j < E; j++) {
                float o = out[(size_t)i * os + j];
                if (i == 5 || i == 9)
                    cr_assert(isnan(o), "embed %s: bad id gave %g", kr_dtype_name(t), o);
                else
                    cr_assert_float_eq(o, ref[(size_t)tok[i] * E + j], 1e-6f * (1.0f + fabsf(o)),
                                       "embed %s token %d [%d]: %g != %g", kr_dtype_name(t), i, j, o,
                                       ref[(size_t)tok[i] * E + j]);
            }
            for (size_t j = E; j < os; j++)
                cr_assert(isnan(out[(size_t)i * os + j]), "embed wrote into the padding");
        }
        kr_backend_free(be, bt);
        kr_backend_free(be, bk);
        kr_backend_free(be, bo);
        free(tab);
        free(src);
        free(ref);
        free(out);
    }
    kr_pf_free(p);
    kr_backend_destroy(be);
}

/* fp16-output ops: residual add + RMSNorm rows (x written back exactly: x + res in fp32),
 * SwiGLU rows; outputs vs double references rounded to fp16: every value within one
 * fp16 rounding (relative 2^-10) plus fp32 noise, padding untouched. */
/* vec: shapes for the float4 paths (n, ff, strides multiples of 4), else the scalar ones */
static void fp16_outputs(bool vec)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_pf *p = pf_open(be);
    const int rows = 13, n = vec ? 4096 : 777, ys = vec ? 4100 : 784, ff = vec ? 1100 : 301;
    const int fs = vec ? 2 * ff + 4 : 2 * ff + 3, fys = vec ? 1104 : 304;
    float *x = malloc((size_t)rows * n * sizeof *x), *r = malloc((size_t)rows * n * sizeof *r);
    float *w = malloc((size_t)n * sizeof *w), *x2 = malloc((size_t)rows * n * sizeof *x2);
    float *g = malloc((size_t)rows * fs * sizeof *g);
    uint16_t *y = malloc((size_t)rows * ys * 2), *fy = malloc((size_t)rows * fys * 2);
    cr_assert(x && r && w && x2 && g && y && fy);
    for (size_t i = 0; i < (size_t)rows * n; i++) {
        x[i] = kr_test_rng_f(-4.0f, 4.0f);
        r[i] = kr_test_rng_f(-1.0f, 1.0f);
    }
    for (int i = 0; i < n; i++)
        w[i] = kr_test_rng_f(0.5f, 1.5f);
    for (size_t i = 0; i < (size_t)rows * fs; i++)
        g[i] = kr_test_rng_f(-6.0f, 6.0f);
    kr_buffer *bx, *br, *bw, *by, *bg, *bf;
    float *dx = kr_test_dupload(be, x, (size_t)rows * n * sizeof *x, &bx);
    float *dr = kr_test_dupload(be, r, (size_t)rows * n * sizeof *r, &br);
    float *dw = kr_test_dupload(be, w, (size_t)n * sizeof *w, &bw);
    float *dg = kr_test_dupload(be, g, (size_t)rows * fs * sizeof *g, &bg);
    uint16_t *dy = kr_test_dalloc(be, (size_t)rows * ys * 2, &by), *df = kr_test_dalloc(be, (size_t)rows * fys * 2, &bf);
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(kr_backend_memset(be, dy, 0xFF, (size_t)rows * ys * 2, NULL, &err), KR_OK);
    cr_assert_eq(kr_backend_memset(be, df, 0xFF, (size_t)rows * fys * 2, NULL, &err), KR_OK);
    kr_status st = kr_pf_rmsnorm_h(p, NULL, dx, dr, dw, dy, ys, rows, n, 1e-5f, &err);
    cr_assert_eq(st, KR_OK, "rmsnorm_h: %s", kr_err_msg(&err, st));
    const int uo = vec ? ff + 4 : ff + 1; /* up half offset */
    st = kr_pf_swiglu_h(p, NULL, dg, fs, (size_t)uo, df, fys, ff, rows, &err);
    cr_assert_eq(st, KR_OK, "swiglu_h: %s", kr_err_msg(&err, st));
    /* to_f16 of an odd count (tail path): g's values as fp16 into the rmsnorm output's space after the test */
    const int64_t nc = 1001;
    kr_buffer *bc;
    uint16_t *dc = kr_test_dalloc(be, (size_t)nc * 2 + 64, &bc), *hc = malloc((size_t)nc * 2 + 64);
    cr_assert(hc);
    cr_assert_eq(kr_backend_memset(be, dc, 0xEE, (size_t)nc * 2 + 64, NULL, &err), KR_OK);
    st = kr_pf_to_f16(p, NULL, dg, dc, nc, &err);
    cr_assert_eq(st, KR_OK, "to_f16: %s", kr_err_msg(&err, st));
    kr_test_download(be, hc, dc, (size_t)nc * 2 + 64);
    for (int64_t i = 0; i < nc; i++)
        cr_assert_eq(hc[i], kr_fp32_to_fp16(g[i]), "to_f16 [%lld]: %04x != %04x", (long long)i, hc[i],
                     kr_fp32_to_fp16(g[i]));
    for (int64_t i = nc; i < nc + 32; i++)
        cr_assert_eq(hc[i], 0xEEEE, "to_f16 wrote past n");
    free(hc);
    kr_backend_free(be, bc);
    kr_test_download(be, x2, dx, (size_t)rows * n * sizeof *x2);
    kr_test_download(be, y, dy, (size_t)rows * ys * 2);
    kr_test_download(be, fy, df, (size_t)rows * fys * 2);
    for (int t = 0; t < rows; t++) {
        double ss = 0;
        for (int i = 0; i < n; i++) {
            const float v = x[(size_t)t * n + i] + r[(size_t)t * n + i];
            cr_assert_eq(x2[(size_t)t * n + i], v, "x + res written back (row %d, %d)", t, i);
            ss += (double)v * v;
        }
        const double sc = 1.0 / sqrt(ss / n + 1e-5);
        for (int i = 0; i < n; i++) {
            const double ref = (double)x2[(size_t)t * n + i] * sc * w[i];
            const double got = kr_fp16_to_fp32(y[(size_t)t * ys + i]);
            cr_assert(fabs(got - ref) <= fabs(ref) * 1.0e-3 + 1e-6, "rmsnorm_h row %d [%d]: %g vs %g (seed %llu)", t,
                      i, got, ref, (unsigned long long)kr_test_seed());
        }
        for (int i = n; i < ys; i++)
            cr_assert_eq(y[(size_t)t * ys + i], 0xFFFF, "rmsnorm_h wrote into the padding");
        for (int i = 0; i < ff; i++) {
            const double a = g[(size_t)t * fs + i], u = g[(size_t)t * fs + uo + i];
            const double ref = a / (1.0 + exp(-a)) * u, got = kr_fp16_to_fp32(fy[(size_t)t * fys + i]);
            cr_assert(fabs(got - ref) <= fabs(ref) * 1.0e-3 + 1e-6, "swiglu_h row %d [%d]: %g vs %g (seed %llu)", t, i,
                      got, ref, (unsigned long long)kr_test_seed());
        }
        for (int i = ff; i < fys; i++)
            cr_assert_eq(fy[(size_t)t * fys + i], 0xFFFF, "swiglu_h wrote into the padding");
    }
    kr_backend_free(be, bx);
    kr_backend_free(be, br);
    kr_backend_free(be, bw);
    kr_backend_free(be, by);
    kr_backend_free(be, bg);
    kr_backend_free(be, bf);
    free(x);
    free(r);
    free(w);
    free(x2);
    free(g);
    free(y);
    free(fy);
    kr_pf_free(p);
    kr_backend_destroy(be);
}

Test(gpu_prefill, fp16_outputs_scalar) { fp16_outputs(false); }
Test(gpu_prefill, fp16_outputs_vec) { fp16_outputs(true); }

/* RoPE fused with the f16 KV store == kr_pf_rope then kr_pf_kv_store_f16: q bit-exact, the cache within one fp16
 * ulp (fp32 rounding of the rotation may differ by contraction), k untouched; 26 heads (several head groups),
 * partial rotary, neox and normal, a wrapped ring row. */
Test(gpu_prefill, rope_kv_fused)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    kr_pf *p = pf_open(be);
    for (int variant = 0; variant < 2; variant++) {
        /* positions 20..42: rows 20..31, then 0..10 */
        const int D = 64, HQ = 20, HK = 6, n = 23, pos0 = 20, rows = 32, n_rot = variant ? 32 : 64;
        const bool neox = variant == 1;
        const size_t qs = (size_t)(HQ + 2 * HK) * D + 4, kvd = (size_t)HK * D, row_bytes = 2 * kvd + 32;
        float *x = malloc((size_t)n * qs * sizeof *x), *qa = malloc((size_t)n * qs * sizeof *qa);
        float *qb = malloc((size_t)n * qs * sizeof *qb);
        uint16_t *ca = malloc(2 * rows * row_bytes), *cb = malloc(2 * rows * row_bytes);
        cr_assert(x && qa && qb && ca && cb);
        for (size_t i = 0; i < (size_t)n * qs; i++)
            x[i] = kr_test_rng_f(-3.0f, 3.0f);
        kr_buffer *b1, *b2, *bc1, *bc2;
        float *d1 = kr_test_dupload(be, x, (size_t)n * qs * sizeof *x, &b1);
        float *d2 = kr_test_dupload(be, x, (size_t)n * qs * sizeof *x, &b2);
        uint8_t *c1 = kr_test_dalloc(be, 2 * rows * row_bytes, &bc1), *c2 = kr_test_dalloc(be, 2 * rows * row_bytes, &bc2);
        kr_err err;
        kr_err_clear(&err);
        cr_assert_eq(kr_backend_memset(be, c1, 0x77, 2 * rows * row_bytes, NULL, &err), KR_OK);
        cr_assert_eq(kr_backend_memset(be, c2, 0x77, 2 * rows * row_bytes, NULL, &err), KR_OK);
        /* separate */
        kr_status st = kr_pf_rope(p, NULL, d1, qs, HQ, d1 + (size_t)HQ * D, qs, HK, D, n_rot, n, pos0, 10000.0f, 1.0f,
                                  NULL, neox, &err);
        cr_assert_eq(st, KR_OK, "%s", err.msg);
        st = kr_pf_kv_store_f16(p, NULL, d1 + (size_t)HQ * D, qs, d1 + (size_t)(HQ + HK) * D, qs, c1,
                                c1 + rows * row_bytes, row_bytes, rows, (int)kvd, n, pos0, &err);
        cr_assert_eq(st, KR_OK, "%s", err.msg);
        /* fused */
        st = kr_pf_rope_kv_f16(p, NULL, d2, qs, HQ, d2 + (size_t)HQ * D, qs, d2 + (size_t)(HQ + HK) * D, qs, HK, D,
                               n_rot, n, pos0, 10000.0f, 1.0f, NULL, neox, c2, c2 + rows * row_bytes, row_bytes, rows,
                               &err);
        cr_assert_eq(st, KR_OK, "%s", err.msg);
        kr_test_download(be, qa, d1, (size_t)n * qs * sizeof *qa);
        kr_test_download(be, qb, d2, (size_t)n * qs * sizeof *qb);
        kr_test_download(be, ca, c1, 2 * rows * row_bytes);
        kr_test_download(be, cb, c2, 2 * rows * row_bytes);
        for (int t = 0; t < n; t++) {
            for (size_t i = 0; i < (size_t)HQ * D; i++)
                cr_assert_eq(qa[(size_t)t * qs + i], qb[(size_t)t * qs + i], "variant %d: q[%d][%zu] differs", variant,
                             t, i);
            for (size_t i = (size_t)HQ * D; i < qs; i++)
                cr_assert_eq(qb[(size_t)t * qs + i], x[(size_t)t * qs + i], "variant %d: fused rope wrote k/v/pad [%d][%zu]",
                             variant, t, i);
        }
        for (size_t i = 0; i < 2 * rows * row_bytes / 2; i++) {
            const int d = (int)ca[i] - (int)cb[i];
            cr_assert(d >= -1 && d <= 1 && (ca[i] & 0x8000) == (cb[i] & 0x8000), "variant %d: cache half %zu: %04x vs %04x",
                      variant, i, ca[i], cb[i]);
        }
        kr_backend_free(be, b1);
        kr_backend_free(be, b2);
        kr_backend_free(be, bc1);
        kr_backend_free(be, bc2);
        free(x);
        free(qa);
        free(qb);
        free(ca);
        free(cb);
    }
    kr_pf_free(p);
    kr_backend_destroy(be);
}
