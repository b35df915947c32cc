/* Tiny random llama / mistral / falcon models, written as GGUF, loaded and
 * run through kr_model_eval; logits compared with the naive double-precision
 * forward in tiny_model.c (independent code: explicit loops, no KV cache). */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "kernrun/builtin_model.h"
#include "kernrun/model.h"
#include "tiny_model.h"
#include "kr_test_leaks.h"

static double nmse_row(const float *a, const double *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += b[i] * b[i];
    }
    return num / den;
}

/* Load m (written to a temp file), eval tokens as one batch (all logits),
 * then again one token at a time with the given threads and KV type. */
static void check_model(tm_model *m, const int32_t *tok, int T, double tol, kr_dtype kv, const char *tag)
{
    const char *path = tm_tmp_path(tag);
    cr_assert_eq(tm_write(m, path, NULL), KR_OK);
    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    kr_model *km = NULL;
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_model_load(path, &mp, &km, &err);
    unlink(path);
    cr_assert_eq(st, KR_OK, "%s: %s", tag, err.msg);
    cr_assert_str_eq(kr_model_arch(km), m->arch);
    cr_assert_eq(kr_model_hparams(km)->sliding_window, m->window);

    double *ref = malloc((size_t)T * m->V * sizeof *ref);
    float *all = malloc((size_t)T * m->V * sizeof *all);
    cr_assert(ref && all);
    tm_forward(m, tok, T, ref);

    kr_context_params cp = kr_context_params_default();
    cp.n_ctx = 32;
    cp.n_threads = 2;
    cp.kv_type = kv;
    kr_context *c = NULL;
    cr_assert_eq(kr_context_new(km, &cp, &c, &err), KR_OK, "%s", err.msg);
    cr_assert_eq(kr_model_eval_all(c, tok, (size_t)T, 0, all, &err), KR_OK, "%s", err.msg);
    for (int t = 0; t < T; t++) {
        double e = nmse_row(all + (size_t)t * m->V, ref + (size_t)t * m->V, m->V);
        cr_expect(e < tol, "%s batch, position %d: nmse %g", tag, t, e);
    }
    kr_context_reset(c);
    for (int t = 0; t < T; t++) {
        cr_assert_eq(kr_model_eval(c, &tok[t], 1, (uint32_t)t, all, &err), KR_OK, "%s", err.msg);
        double e = nmse_row(all, ref + (size_t)t * m->V, m->V);
        cr_expect(e < tol, "%s decode, position %d: nmse %g", tag, t, e);
    }
    kr_context_free(c);
    kr_model_free(km);
    free(ref);
    free(all);
}

static const int32_t k_tok[10] = {1, 5, 9, 2, 31, 17, 4, 4, 60, 3};

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(reference, .fini = kr_test_leak_check);

Test(reference, llama_gqa_tied)
{
    tm_model m;
    tm_init(&m, "llama", 64, 64, 2, 4, 2, 96, 11);
    m.tied = true;
    tm_build(&m, 11);
    check_model(&m, k_tok, 10, 1e-9, KR_DTYPE_F32, "llama");
    tm_free(&m);
}

Test(reference, llama_rope_freqs_linear_scaling_partial_rot)
{
    tm_model m;
    tm_init(&m, "llama", 64, 64, 2, 4, 4, 96, 12);
    m.n_rot = 8; /* of head_dim 16 */
    m.rope_freqs = true;
    m.rope_scale = 4.0f;
    m.base = 500000.0f;
    tm_build(&m, 12);
    check_model(&m, k_tok, 10, 1e-9, KR_DTYPE_F32, "llama-rope");
    tm_free(&m);
}

Test(reference, mistral_sliding_window)
{
    tm_model m;
    tm_init(&m, "mistral", 64, 64, 2, 4, 2, 96, 13);
    m.window = 3;
    tm_build(&m, 13);
    check_model(&m, k_tok, 10, 1e-9, KR_DTYPE_F32, "mistral");
    tm_free(&m);
}

Test(reference, llama_window_from_metadata_f16_kv)
{
    tm_model m;
    tm_init(&m, "llama", 64, 64, 1, 4, 1, 64, 14);
    m.window = 4;
    tm_build(&m, 14);
    check_model(&m, k_tok, 10, 1e-5, KR_DTYPE_F16, "llama-f16kv");
    tm_free(&m);
}

Test(reference, llama_f16_and_q8_0_weights)
{
    tm_model m;
    tm_init(&m, "llama", 64, 64, 2, 4, 2, 96, 15);
    m.wtype = KR_DTYPE_F16;
    tm_build(&m, 15);
    check_model(&m, k_tok, 6, 1e-9, KR_DTYPE_F32, "llama-f16");
    tm_free(&m);
    tm_init(&m, "llama", 64, 64, 2, 4, 2, 96, 16);
    m.wtype = KR_DTYPE_Q8_0;
    tm_build(&m, 16);
    check_model(&m, k_tok, 6, 1e-9, KR_DTYPE_F32, "llama-q8");
    tm_free(&m);
}

Test(reference, falcon_7b_style_mqa_tied)
{
    tm_model m;
    tm_init(&m, "falcon", 64, 64, 2, 4, 1, 128, 17);
    m.tied = true;
    tm_build(&m, 17);
    check_model(&m, k_tok, 10, 1e-9, KR_DTYPE_F32, "falcon7b");
    tm_free(&m);
}

Test(reference, falcon_40b_style_norm2_gqa)
{
    tm_model m;
    tm_init(&m, "falcon", 64, 64, 2, 4, 2, 128, 18);
    m.norm2 = true;
    tm_build(&m, 18);
    check_model(&m, k_tok, 10, 1e-9, KR_DTYPE_F32, "falcon40b");
    tm_free(&m);
}

/* Hugging Face layout: Q/K as in the HF checkpoint with rotate_half RoPE
 * (pairs i, i + D/2). llama.cpp's converter permutes their rows so that
 * GGUF + "normal" RoPE (adjacent pairs) computes the same function. The
 * reference runs the HF form on unpermuted weights; the file gets the
 * permuted ones. */
static void hf_case(uint32_t H, uint32_t HKV, uint64_t seed, const char *tag)
{
    tm_model m;
    tm_init(&m, "llama", 64, 64, 2, H, HKV, 96, seed);
    tm_build(&m, seed);
    double *ref = malloc(10 * 64 * sizeof *ref);
    m.hf_rope = true;
    tm_forward(&m, k_tok, 10, ref);
    m.hf_rope = false;
    { /* sensitivity: normal RoPE on the unpermuted weights is a different function */
        double *ref2 = malloc(10 * 64 * sizeof *ref2), num = 0, den = 0;
        tm_forward(&m, k_tok, 10, ref2);
        for (int i = 10 * 64 - 64; i < 10 * 64; i++) {
            num += (ref2[i] - ref[i]) * (ref2[i] - ref[i]);
            den += ref[i] * ref[i];
        }
        cr_expect(num / den > 1e-4, "%s: permutation makes no difference (nmse %g)", tag, num / den);
        free(ref2);
    }
    tm_permute_qk(&m);
    const char *path = tm_tmp_path(tag);
    cr_assert_eq(tm_write(&m, path, NULL), KR_OK);
    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    kr_model *km = NULL;
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_model_load(path, &mp, &km, &err);
    unlink(path);
    cr_assert_eq(st, KR_OK, "%s", err.msg);
    kr_context *c = NULL;
    kr_context_params cp = kr_context_params_default();
    cp.n_ctx = 16;
    cr_assert_eq(kr_context_new(km, &cp, &c, &err), KR_OK, "%s", err.msg);
    float *all = malloc(10 * 64 * sizeof *all);
    cr_assert_eq(kr_model_eval_all(c, k_tok, 10, 0, all, &err), KR_OK, "%s", err.msg);
    for (int t = 0; t < 10; t++) {
        double e = nmse_row(all + t * 64, ref + t * 64, 64);
        cr_expect(e < 1e-9, "%s position %d: nmse %g", tag, t, e);
    }
    free(all);
    free(ref);
    kr_context_free(c);
    kr_model_free(km);
    tm_free(&m);
}

Test(reference, hf_layout_qk_permutation)
{
    hf_case(4, 4, 21, "hf-mha");
    hf_case(4, 2, 22, "hf-gqa");
}
