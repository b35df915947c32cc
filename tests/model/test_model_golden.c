/* Whole-model checks on the real tiny models in shared/testdata:
 * stories260K greedy from BOS must reproduce llama.cpp's token ids
 * (testdata/README.md), prefill and decode must agree, F16 model loads and
 * runs, the unaligned Q8_0 file is rejected naming ffn_down. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/builtin_model.h"
#include "kernrun/model.h"
#include "kr_test_leaks.h"

static char g_path[4096];

static const char *td(const char *rel)
{
    const char *dir = getenv("KR_TESTDATA");
    if (!dir)
        dir = "../shared/testdata";
    snprintf(g_path, sizeof g_path, "%s/%s", dir, rel);
    return g_path;
}

static kr_model *load(const char *rel)
{
    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    kr_model *m = NULL;
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_model_load(td(rel), &mp, &m, &err);
    cr_assert_eq(st, KR_OK, "load %s: %s", rel, err.msg);
    return m;
}

static kr_context *ctx_new(kr_model *m, uint32_t n_ctx, int threads, kr_dtype kv)
{
    kr_context_params cp = kr_context_params_default();
    cp.n_ctx = n_ctx;
    cp.n_threads = threads;
    cp.kv_type = kv;
    kr_context *c = NULL;
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(kr_context_new(m, &cp, &c, &err), KR_OK, "%s", err.msg);
    return c;
}

static int32_t argmax(const float *v, int32_t n)
{
    int32_t b = 0;
    for (int32_t i = 1; i < n; i++)
        if (v[i] > v[b])
            b = i;
    return b;
}

/* greedy decode of n tokens after feeding `first` at pos 0 */
static void greedy(kr_context *c, int32_t n_vocab, int32_t first, int32_t *out, int n)
{
    float *lg = malloc((size_t)n_vocab * sizeof *lg);
    cr_assert(lg);
    kr_err err;
    kr_err_clear(&err);
    int32_t tok = first;
    for (int i = 0; i < n; i++) {
        cr_assert_eq(kr_model_eval(c, &tok, 1, (uint32_t)i, lg, &err), KR_OK, "%s", err.msg);
        for (int32_t j = 0; j < n_vocab; j++)
            cr_assert(isfinite(lg[j]));
        tok = argmax(lg, n_vocab);
        out[i] = tok;
    }
    free(lg);
}

static const int32_t k_stories_bos[16] = {403, 407, 261, 378, 432, 383, 286, 261,
                                          376, 298, 315, 421, 395, 317, 426, 338};

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(golden, .fini = kr_test_leak_check);

Test(golden, stories260k_greedy_from_bos)
{
    kr_model *m = load("models/stories260K-f32.gguf");
    cr_assert_str_eq(kr_model_arch(m), "llama");
    cr_assert_eq(kr_model_n_vocab(m), 512);
    const kr_hparams *hp = kr_model_hparams(m);
    cr_assert_eq(hp->n_embd, 64);
    cr_assert_eq(hp->n_layer, 5);
    cr_assert_eq(hp->n_head, 8);
    cr_assert_eq(hp->n_head_kv, 4);
    cr_assert_eq(hp->n_ff, 172);
    for (int threads = 1; threads <= 2; threads++) {
        kr_context *c = ctx_new(m, 64, threads, KR_DTYPE_F32);
        int32_t got[16];
        greedy(c, 512, 1, got, 16);
        for (int i = 0; i < 16; i++)
            cr_expect_eq(got[i], k_stories_bos[i], "threads %d, token %d: got %d want %d", threads, i, got[i],
                         k_stories_bos[i]);
        kr_context_free(c);
    }
    kr_model_free(m);
}

Test(golden, stories260k_greedy_f16_kv)
{
    kr_model *m = load("models/stories260K-f32.gguf");
    kr_context *c = ctx_new(m, 32, 2, KR_DTYPE_F16);
    int32_t got[16];
    greedy(c, 512, 1, got, 16);
    for (int i = 0; i < 16; i++)
        cr_expect_eq(got[i], k_stories_bos[i], "token %d: got %d want %d", i, got[i], k_stories_bos[i]);
    kr_context_free(c);
    kr_model_free(m);
}

/* Feeding the 17-token greedy sequence as one batch gives, per position,
 * the same logits as decoding it one token at a time. */
Test(golden, prefill_matches_decode)
{
    kr_model *m = load("models/stories260K-f32.gguf");
    int32_t seq[17] = {1};
    memcpy(seq + 1, k_stories_bos, sizeof k_stories_bos);
    const int n = 17, V = 512;
    float *all = malloc((size_t)n * V * sizeof *all), *one = malloc((size_t)V * sizeof *one);
    cr_assert(all && one);
    kr_err err;
    kr_err_clear(&err);
    kr_context *c = ctx_new(m, 64, 2, KR_DTYPE_F32);
    cr_assert_eq(kr_model_eval_all(c, seq, (size_t)n, 0, all, &err), KR_OK, "%s", err.msg);
    cr_assert_eq(kr_context_n_past(c), 17);
    kr_context_reset(c);
    cr_assert_eq(kr_context_n_past(c), 0);
    for (int i = 0; i < n; i++) {
        cr_assert_eq(kr_model_eval(c, &seq[i], 1, (uint32_t)i, one, &err), KR_OK, "%s", err.msg);
        double num = 0, den = 0;
        for (int j = 0; j < V; j++) {
            double d = (double)one[j] - all[i * V + j];
            num += d * d;
            den += (double)one[j] * one[j];
        }
        cr_expect(num / den < 1e-10, "position %d: nmse %g", i, num / den);
        if (i + 1 < n)
            cr_expect_eq(argmax(one, V), seq[i + 1]);
    }
    /* a chunked prefill (n_batch 5) gives the same last logits */
    kr_context_free(c);
    kr_context_params cp = kr_context_params_default();
    cp.n_ctx = 64;
    cp.n_batch = 5;
    cp.n_threads = 2;
    cr_assert_eq(kr_context_new(m, &cp, &c, &err), KR_OK, "%s", err.msg);
    cr_assert_eq(kr_model_eval(c, seq, (size_t)n, 0, one, &err), KR_OK, "%s", err.msg);
    double num = 0, den = 0;
    for (int j = 0; j < V; j++) {
        double d = (double)one[j] - all[(n - 1) * V + j];
        num += d * d;
        den += (double)one[j] * one[j];
    }
    cr_expect(num / den < 1e-10, "chunked prefill nmse %g", num / den);
    /* rewinding: eval again at pos 3 over the cached prefix */
    cr_assert_eq(kr_model_eval(c, &seq[3], 1, 3, one, &err), KR_OK, "%s", err.msg);
    cr_expect_eq(kr_context_n_past(c), 4);
    cr_expect_eq(argmax(one, V), seq[4]);
    kr_context_free(c);
    free(all);
    free(one);
    kr_model_free(m);
}

Test(golden, eval_argument_errors)
{
    kr_model *m = load("models/stories260K-f32.gguf");
    kr_context *c = ctx_new(m, 8, 1, KR_DTYPE_F32);
    kr_err err;
    kr_err_clear(&err);
    int32_t bad = 512, neg = -1, ok[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    cr_expect_eq(kr_model_eval(c, &bad, 1, 0, NULL, &err), KR_ERR_RANGE);
    cr_expect(strstr(err.msg, "512"), "%s", err.msg);
    cr_expect_eq(kr_model_eval(c, &neg, 1, 0, NULL, &err), KR_ERR_RANGE);
    cr_expect_eq(kr_model_eval(c, ok, 1, 1, NULL, &err), KR_ERR_STATE, "%s", err.msg);
    cr_expect_eq(kr_model_eval(c, ok, 9, 0, NULL, &err), KR_ERR_RANGE, "%s", err.msg);
    cr_expect_eq(kr_model_eval(c, ok, 0, 0, NULL, &err), KR_ERR_INVALID_ARG);
    cr_expect_eq(kr_model_eval(c, ok, 8, 0, NULL, &err), KR_OK, "%s", err.msg);
    cr_expect_eq(kr_model_eval(c, ok, 1, 8, NULL, &err), KR_ERR_RANGE, "%s", err.msg);
    kr_context_free(c);
    kr_model_free(m);
}

Test(golden, llama2_tiny_random_f16_runs)
{
    kr_model *m = load("models/llama2-tiny-random-f16.gguf");
    cr_assert_eq(kr_model_n_vocab(m), 32000);
    kr_context *c = ctx_new(m, 16, 2, KR_DTYPE_F32);
    int32_t got[8];
    greedy(c, 32000, 1, got, 8);
    for (int i = 0; i < 8; i++)
        cr_expect(got[i] >= 0 && got[i] < 32000);
    kr_context_free(c);
    kr_model_free(m);
}

Test(golden, q8_0_unaligned_rows_rejected)
{
    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    kr_model *m = (kr_model *)(uintptr_t)1;
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_model_load(td("models/stories260K-q8_0-v2-unaligned-rows.gguf"), &mp, &m, &err);
    cr_assert_neq(st, KR_OK);
    cr_assert_null(m);
    cr_expect(strstr(err.msg, "ffn_down") != NULL, "message: %s", err.msg);
    /* and a good model still loads afterwards */
    kr_model *ok = load("models/stories260K-f32.gguf");
    kr_model_free(ok);
}

Test(golden, missing_file)
{
    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    kr_model *m = NULL;
    kr_err err;
    kr_err_clear(&err);
    cr_expect_neq(kr_model_load("/nonexistent/x.gguf", &mp, &m, &err), KR_OK);
    cr_expect_null(m);
    cr_expect(strstr(err.msg, "/nonexistent/x.gguf") != NULL, "%s", err.msg);
}

Test(golden, vocab_only_file_rejected)
{
    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    kr_model *m = NULL;
    kr_err err;
    kr_err_clear(&err);
    cr_expect_eq(kr_model_load(td("vocab/ggml-vocab-falcon.gguf"), &mp, &m, &err), KR_ERR_FORMAT);
    cr_expect_null(m);
    cr_expect(strstr(err.msg, "no tensors") != NULL, "%s", err.msg);
}
