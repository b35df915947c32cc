/* CPU ops (plugins/cpu_ops) against naive implementations written here with
 * explicit loops in double precision, on random inputs. The ops run under a
 * fake executor that splits work into several chunks on the calling thread
 * (and once under the real pool through a model context elsewhere). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/cpu_ops.h"
#include "kernrun/half.h"
#include "kernrun/quant.h"
#include "kr_test_leaks.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* uniform [-1, 1) */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static uint8_t brand(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (uint8_t)(g_rng >> 32);
}

/* Fake executor: split [0, n) into up to 3 chunks, run them in reverse
 * order with distinct tids (catches ops that assume chunk 0 runs first). */
static void fake_parallel_for(void *pool, size_t n, size_t min_chunk, kr_par_fn fn, void *arg)
{
    (void)pool;
    (void)min_chunk;
    size_t k = n < 3 ? n : 3;
    for (size_t c = k; c-- > 0;)
        fn(arg, n * c / k, n * (c + 1) / k, (int)c);
}
static const kr_exec g_ex = {.struct_size = sizeof(kr_exec), .n_threads = 3, .parallel_for = fake_parallel_for};

static float *rand_vec(size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    cr_assert(v);
    for (size_t i = 0; i < n; i++)
        v[i] = frand() * scale;
    return v;
}

/* normalised squared error sum (a-b)^2 / sum b^2 */
static double nmse(const float *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    return den > 0 ? num / den : num;
}

/* ---- matmul / get_rows for every weight type ---- */

/* Random row bytes for type t with sane f16 scales (K-quants have no
 * quantizer: random quants + scale fields set per the ggml block layouts). */
static void fill_row(kr_dtype t, uint8_t *row, size_t K, uint64_t row_bytes)
{
    if (kr_quant_can_quantize(t)) {
        float *src = rand_vec(K, 1.0f);
        cr_assert_eq(kr_quantize_row(t, src, row, K), KR_OK);
        free(src);
        return;
    }
    for (uint64_t i = 0; i < row_bytes; i++)
        row[i] = brand();
    size_t bs = kr_dtype_type_size(t);
    for (size_t b = 0; b < K / 256; b++) {
        uint8_t *blk = row + b * bs;
        uint16_t d = kr_fp32_to_fp16(0.01f + 0.02f * (frand() + 1.0f));
        uint16_t m = kr_fp32_to_fp16(0.005f * (frand() + 1.0f));
        switch (t) {
        case KR_DTYPE_Q2_K: memcpy(blk + 80, &d, 2); memcpy(blk + 82, &m, 2); break;
        case KR_DTYPE_Q3_K: memcpy(blk + 108, &d, 2); break;
        case KR_DTYPE_Q4_K:
        case KR_DTYPE_Q5_K: memcpy(blk + 0, &d, 2); memcpy(blk + 2, &m, 2); break;
        case KR_DTYPE_Q6_K: memcpy(blk + 208, &d, 2); break;
        default: cr_assert_fail("no filler for %s", kr_dtype_name(t));
        }
    }
}

static const kr_dtype k_types[] = {
    KR_DTYPE_F32, KR_DTYPE_F16, KR_DTYPE_BF16, KR_DTYPE_Q4_0, KR_DTYPE_Q4_1, KR_DTYPE_Q5_0, KR_DTYPE_Q5_1,
    KR_DTYPE_Q8_0, KR_DTYPE_Q2_K, KR_DTYPE_Q3_K, KR_DTYPE_Q4_K, KR_DTYPE_Q5_K, KR_DTYPE_Q6_K,
};

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(ops, .fini = kr_test_leak_check);

Test(ops, matmul_all_types_vs_dequant_dot)
{
    const kr_ops *ops = kr_cpu_ops();
    const size_t M = 37;
    /* every type at K = 512; the plain float types also at K = 37 (kernel tails) */
    const size_t NT = sizeof k_types / sizeof k_types[0];
    for (size_t ti = 0; ti < NT + 3; ti++) {
        kr_dtype t = ti < NT ? k_types[ti] : k_types[ti - NT]; /* k_types starts F32, F16, BF16 */
        size_t K = ti < NT ? 512 : 37;
        uint64_t rb;
        cr_assert(kr_dtype_row_size(t, K, &rb));
        uint8_t *w = malloc(rb * M);
        cr_assert(w);
        for (size_t r = 0; r < M; r++)
            fill_row(t, w + r * rb, K, rb);
        kr_weight wt = {.name = "w", .type = t, .n_dims = 2, .ne = {K, M, 1, 1}, .row_bytes = rb, .data = w};
        /* reference: dequantize each row, dot in double */
        float *deq = malloc(K * M * sizeof *deq);
        cr_assert(deq);
        for (size_t r = 0; r < M; r++)
            cr_assert_eq(kr_dequantize_row(t, w + r * rb, deq + r * K, K), KR_OK);
        for (size_t n = 1; n <= 5; n += 2) {
            float *x = rand_vec(n * K, 1.0f), *out = malloc(n * M * sizeof *out);
            double *ref = malloc(n * M * sizeof *ref);
            cr_assert(out && ref);
            for (size_t i = 0; i < n * M; i++)
                out[i] = NAN;
            for (size_t tk = 0; tk < n; tk++)
                for (size_t r = 0; r < M; r++) {
                    double s = 0;
                    for (size_t k = 0; k < K; k++)
                        s += (double)deq[r * K + k] * x[tk * K + k];
                    ref[tk * M + r] = s;
                }
            kr_err err;
            kr_err_clear(&err);
            cr_assert_eq(ops->matmul(&g_ex, &wt, x, n, out, &err), KR_OK, "%s", err.msg);
            double e = nmse(out, ref, n * M);
            cr_expect(e < 1e-10, "matmul %s K=%zu n=%zu: nmse %g", kr_dtype_name(t), K, n, e);
            /* get_rows: rows 0, M-1, 5 */
            int32_t ids[3] = {0, (int32_t)M - 1, 5};
            float *rows = malloc(3 * K * sizeof *rows);
            cr_assert(rows);
            cr_assert_eq(ops->get_rows(&g_ex, &wt, ids, 3, rows, &err), KR_OK, "%s", err.msg);
            for (int i = 0; i < 3; i++)
                cr_expect_arr_eq(rows + i * K, deq + (size_t)ids[i] * K, K * sizeof(float), "get_rows %s",
                                 kr_dtype_name(t));
            free(rows);
            free(x);
            free(out);
            free(ref);
        }
        free(deq);
        free(w);
    }
}

Test(ops, get_rows_rejects_bad_ids)
{
    const kr_ops *ops = kr_cpu_ops();
    float w[8] = {0};
    kr_weight wt = {.name = "token_embd.weight", .type = KR_DTYPE_F32, .n_dims = 2, .ne = {4, 2, 1, 1},
                    .row_bytes = 16, .data = w};
    float out[4];
    kr_err err;
    kr_err_clear(&err);
    int32_t bad = 2, neg = -1;
    cr_expect_eq(ops->get_rows(&g_ex, &wt, &bad, 1, out, &err), KR_ERR_RANGE);
    cr_expect(strstr(err.msg, "token_embd.weight"), "%s", err.msg);
    cr_expect_eq(ops->get_rows(&g_ex, &wt, &neg, 1, out, &err), KR_ERR_RANGE);
}

/* ---- norms ---- */

Test(ops, rms_norm_and_layer_norm)
{
    const kr_ops *ops = kr_cpu_ops();
    const size_t n = 3, dim = 67;
    float *x = rand_vec(n * dim, 3.0f), *w = rand_vec(dim, 1.0f), *b = rand_vec(dim, 1.0f);
    float *out = malloc(n * dim * sizeof *out);
    double *ref = malloc(n * dim * sizeof *ref);
    const float eps = 1e-5f;
    ops->rms_norm(&g_ex, x, w, n, dim, eps, out);
    for (size_t t = 0; t < n; t++) {
        double ss = 0;
        for (size_t i = 0; i < dim; i++)
            ss += (double)x[t * dim + i] * x[t * dim + i];
        double s = 1.0 / sqrt(ss / dim + eps);
        for (size_t i = 0; i < dim; i++)
            ref[t * dim + i] = x[t * dim + i] * s * w[i];
    }
    cr_expect(nmse(out, ref, n * dim) < 1e-12, "rms_norm nmse %g", nmse(out, ref, n * dim));
    ops->layer_norm(&g_ex, x, w, b, n, dim, eps, out);
    for (size_t t = 0; t < n; t++) {
        double mu = 0, var = 0;
        for (size_t i = 0; i < dim; i++)
            mu += x[t * dim + i];
        mu /= dim;
        for (size_t i = 0; i < dim; i++)
            var += (x[t * dim + i] - mu) * (x[t * dim + i] - mu);
        var /= dim;
        for (size_t i = 0; i < dim; i++)
            ref[t * dim + i] = (x[t * dim + i] - mu) / sqrt(var + eps) * w[i] + b[i];
    }
    cr_expect(nmse(out, ref, n * dim) < 1e-12, "layer_norm nmse %g", nmse(out, ref, n * dim));
    /* without weight/bias: zero mean, unit variance */
    ops->layer_norm(&g_ex, x, NULL, NULL, 1, dim, 0.0f + 1e-12f, out);
    double mu = 0, var = 0;
    for (size_t i = 0; i < dim; i++)
        mu += out[i];
    mu /= dim;
    for (size_t i = 0; i < dim; i++)
        var += (out[i] - mu) * (out[i] - mu);
    cr_expect(fabs(mu) < 1e-6 && fabs(var / dim - 1.0) < 1e-5, "mean %g var %g", mu, var / dim);
    free(x);
    free(w);
    free(b);
    free(out);
    free(ref);
}

/* ---- RoPE against the formula ---- */

static void rope_case(kr_rope_mode mode, uint32_t head_dim, uint32_t n_rot, float base, float fscale, bool ff)
{
    const kr_ops *ops = kr_cpu_ops();
    const uint32_t n_tok = 3, n_head = 2;
    int32_t pos[3] = {0, 7, 1234};
    size_t N = (size_t)n_tok * n_head * head_dim;
    float *x = rand_vec(N, 1.0f), *orig = malloc(N * sizeof *orig), *ffv = rand_vec(n_rot / 2, 1.0f);
    for (uint32_t i = 0; i < n_rot / 2; i++)
        ffv[i] = 1.0f + fabsf(ffv[i]) * 4.0f;
    memcpy(orig, x, N * sizeof *x);
    double *ref = malloc(N * sizeof *ref);
    for (size_t i = 0; i < N; i++)
        ref[i] = orig[i];
    for (uint32_t t = 0; t < n_tok; t++)
        for (uint32_t h = 0; h < n_head; h++) {
            const float *v = orig + ((size_t)t * n_head + h) * head_dim;
            double *r = ref + ((size_t)t * n_head + h) * head_dim;
            for (uint32_t i = 0; i < n_rot / 2; i++) {
                double theta = pos[t] * (double)fscale * pow(base, -2.0 * i / n_rot);
                if (ff)
                    theta /= ffv[i];
                uint32_t a = mode == KR_ROPE_NEOX ? i : 2 * i, b = mode == KR_ROPE_NEOX ? i + n_rot / 2 : 2 * i + 1;
                r[a] = v[a] * cos(theta) - v[b] * sin(theta);
                r[b] = v[a] * sin(theta) + v[b] * cos(theta);
            }
        }
    kr_rope_args ra = {.struct_size = sizeof ra, .x = x, .pos = pos, .n_tok = n_tok, .n_head = n_head,
                       .head_dim = head_dim, .n_rot = n_rot, .mode = mode, .base = base, .freq_scale = fscale,
                       .freq_factors = ff ? ffv : NULL};
    ops->rope(&g_ex, &ra);
    for (size_t i = 0; i < N; i++)
        cr_expect(fabs(x[i] - ref[i]) < 2e-6, "rope mode %d [%zu]: %g vs %g", (int)mode, i, x[i], ref[i]);
    /* position 0 is the identity; dims past n_rot pass through untouched */
    for (uint32_t i = 0; i < n_head * head_dim; i++)
        cr_expect_eq(x[i], orig[i]);
    for (uint32_t t = 0; t < n_tok; t++)
        for (uint32_t h = 0; h < n_head; h++)
            for (uint32_t i = n_rot; i < head_dim; i++) {
                size_t k = ((size_t)t * n_head + h) * head_dim + i;
                cr_expect_eq(x[k], orig[k]);
            }
    free(x);
    free(orig);
    free(ffv);
    free(ref);
}

Test(ops, rope_normal_and_neox)
{
    rope_case(KR_ROPE_NORMAL, 16, 16, 10000.0f, 1.0f, false);
    rope_case(KR_ROPE_NEOX, 16, 16, 10000.0f, 1.0f, false);
    rope_case(KR_ROPE_NORMAL, 24, 16, 500000.0f, 0.25f, true);
    rope_case(KR_ROPE_NEOX, 24, 8, 10000.0f, 0.5f, true);
}

/* ---- attention against explicit loops ---- */

static void attn_case(uint32_t n_head, uint32_t n_head_kv, uint32_t D, uint32_t pos0, uint32_t n_tok, uint32_t window,
                      kr_dtype kv_type)
{
    const kr_ops *ops = kr_cpu_ops();
    const uint32_t n_ctx = pos0 + n_tok + 3;
    size_t kvd = (size_t)n_head_kv * D, qd = (size_t)n_head * D;
    float *q = rand_vec(n_tok * qd, 1.0f), *k = rand_vec(n_ctx * kvd, 1.0f), *v = rand_vec(n_ctx * kvd, 1.0f);
    void *kc = k, *vc = v;
    uint16_t *kh = NULL, *vh = NULL;
    if (kv_type == KR_DTYPE_F16) { /* reference uses the rounded values */
        kh = malloc(n_ctx * kvd * 2);
        vh = malloc(n_ctx * kvd * 2);
        for (size_t i = 0; i < n_ctx * kvd; i++) {
            kh[i] = kr_fp32_to_fp16(k[i]);
            vh[i] = kr_fp32_to_fp16(v[i]);
            k[i] = kr_fp16_to_fp32(kh[i]);
            v[i] = kr_fp16_to_fp32(vh[i]);
        }
        kc = kh;
        vc = vh;
    }
    float *out = malloc(n_tok * qd * sizeof *out);
    double *ref = malloc(n_tok * qd * sizeof *ref);
    double *sc = malloc(n_ctx * sizeof *sc);
    double scale = 1.0 / sqrt((double)D);
    for (uint32_t t = 0; t < n_tok; t++) {
        uint32_t p = pos0 + t;
        for (uint32_t h = 0; h < n_head; h++) {
            uint32_t hk = h / (n_head / n_head_kv);
            double mx = -INFINITY;
            for (uint32_t j = 0; j < n_ctx; j++) {
                bool visible = j <= p && (window == 0 || p - j < window);
                if (!visible) {
                    sc[j] = -INFINITY;
                    continue;
                }
                double s = 0;
                for (uint32_t d = 0; d < D; d++)
                    s += (double)q[t * qd + h * D + d] * k[j * kvd + hk * D + d];
                sc[j] = s * scale;
                if (sc[j] > mx)
                    mx = sc[j];
            }
            double sum = 0;
            for (uint32_t j = 0; j < n_ctx; j++) {
                sc[j] = sc[j] == -INFINITY ? 0.0 : exp(sc[j] - mx);
                sum += sc[j];
            }
            for (uint32_t d = 0; d < D; d++) {
                double o = 0;
                for (uint32_t j = 0; j < n_ctx; j++)
                    o += sc[j] / sum * v[j * kvd + hk * D + d];
                ref[t * qd + h * D + d] = o;
            }
        }
    }
    kr_attn_args aa = {.struct_size = sizeof aa, .q = q, .k = kc, .v = vc, .kv_type = kv_type, .out = out,
                       .n_tok = n_tok, .n_head = n_head, .n_head_kv = n_head_kv, .head_dim = D, .pos0 = pos0,
                       .n_ctx = n_ctx, .window = window, .scale = (float)scale};
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(ops->attention(&g_ex, &aa, &err), KR_OK, "%s", err.msg);
    double e = nmse(out, ref, n_tok * qd);
    cr_expect(e < 1e-11, "attention heads %u/%u D %u pos0 %u n %u window %u kv %s: nmse %g", n_head, n_head_kv, D,
              pos0, n_tok, window, kr_dtype_name(kv_type), e);
    free(q);
    free(k);
    free(v);
    free(kh);
    free(vh);
    free(out);
    free(ref);
    free(sc);
}

Test(ops, attention_gqa_mqa_window)
{
    attn_case(4, 4, 16, 0, 1, 0, KR_DTYPE_F32);       /* MHA, first token */
    attn_case(8, 2, 8, 5, 6, 0, KR_DTYPE_F32);        /* GQA, prefill after a prefix */
    attn_case(6, 1, 32, 0, 9, 0, KR_DTYPE_F32);       /* MQA (falcon) */
    attn_case(4, 2, 16, 3, 8, 4, KR_DTYPE_F32);       /* sliding window 4 */
    attn_case(4, 2, 16, 10, 1, 3, KR_DTYPE_F32);      /* decode with window */
    attn_case(4, 2, 16, 2, 5, 0, KR_DTYPE_F16);       /* f16 cache */
}

Test(ops, attention_rejects_bad_shapes)
{
    const kr_ops *ops = kr_cpu_ops();
    float q[8] = {0}, kv[8] = {0}, out[8];
    kr_attn_args aa = {.struct_size = sizeof aa, .q = q, .k = kv, .v = kv, .kv_type = KR_DTYPE_F32, .out = out,
                       .n_tok = 1, .n_head = 3, .n_head_kv = 2, .head_dim = 2, .pos0 = 0, .n_ctx = 1, .scale = 1};
    kr_err err;
    kr_err_clear(&err);
    cr_expect_eq(ops->attention(&g_ex, &aa, &err), KR_ERR_INVALID_ARG);
    aa.n_head = 2;
    aa.pos0 = 1;
    cr_expect_eq(ops->attention(&g_ex, &aa, &err), KR_ERR_INVALID_ARG);
    aa.pos0 = 0;
    aa.kv_type = KR_DTYPE_Q8_0;
    cr_expect_eq(ops->attention(&g_ex, &aa, &err), KR_ERR_UNSUPPORTED);
}

/* ---- elementwise ---- */

Test(ops, swiglu_gelu_add_softmax_store)
{
    const kr_ops *ops = kr_cpu_ops();
    const size_t n = 101;
    float *g = rand_vec(n, 6.0f), *u = rand_vec(n, 2.0f), *out = malloc(n * sizeof *out);
    double *ref = malloc(n * sizeof *ref);
    ops->swiglu(&g_ex, g, u, n, out);
    for (size_t i = 0; i < n; i++)
        ref[i] = g[i] / (1.0 + exp(-(double)g[i])) * u[i];
    cr_expect(nmse(out, ref, n) < 1e-12);
    ops->gelu(&g_ex, g, n, out);
    for (size_t i = 0; i < n; i++) {
        double x = g[i];
        ref[i] = 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    }
    cr_expect(nmse(out, ref, n) < 1e-12);
    float z = 0.0f, zo;
    ops->gelu(&g_ex, &z, 1, &zo);
    cr_expect_eq(zo, 0.0f);

    float *acc = rand_vec(n, 1.0f);
    for (size_t i = 0; i < n; i++)
        ref[i] = (double)acc[i] + u[i];
    ops->add(&g_ex, acc, u, n);
    cr_expect(nmse(acc, ref, n) < 1e-14);

    float xb[6] = {1, 2, 3, 4, 5, 6}, bias[3] = {10, 20, 30};
    ops->add_bias(&g_ex, xb, bias, 2, 3);
    float want[6] = {11, 22, 33, 14, 25, 36};
    cr_expect_arr_eq(xb, want, sizeof want);

    float sm[8] = {1000, 1001, 1002, -5, 0, 0, 0, 0};
    ops->softmax(&g_ex, sm, 2, 4);
    double e0 = exp(-2.0), e1 = exp(-1.0), s = e0 + e1 + 1 + exp(-1005.0);
    cr_expect(fabs(sm[0] - e0 / s) < 1e-6 && fabs(sm[2] - 1 / s) < 1e-6, "%g %g", sm[0], sm[2]);
    for (int i = 4; i < 8; i++)
        cr_expect(fabs(sm[i] - 0.25) < 1e-7);

    float src[4] = {1.0f, -2.5f, 65504.0f, 1e-3f};
    uint16_t h[4];
    float f[4];
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(ops->store_kv(&g_ex, src, 2, 2, KR_DTYPE_F16, h, &err), KR_OK);
    cr_expect_eq(h[0], 0x3c00); /* 1.0 */
    cr_expect_eq(h[1], 0xc100); /* -2.5 */
    cr_expect_eq(h[2], 0x7bff); /* 65504 */
    cr_assert_eq(ops->store_kv(&g_ex, src, 2, 2, KR_DTYPE_F32, f, &err), KR_OK);
    cr_expect_arr_eq(f, src, sizeof src);
    cr_expect_eq(ops->store_kv(&g_ex, src, 2, 2, KR_DTYPE_Q8_0, f, &err), KR_ERR_UNSUPPORTED);
    free(g);
    free(u);
    free(out);
    free(ref);
    free(acc);
}
