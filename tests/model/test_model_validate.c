/* Loader validation on GGUFs written by the test: missing / extra /
 * misshapen tensors named with both shapes, bad hyperparameters, unknown
 * architectures, wrong key types, context sizing. Every rejected load must
 * leave *out NULL, and a valid model must load afterwards. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernrun/builtin_model.h"
#include "kernrun/model.h"
#include "tiny_model.h"
#include "kr_test_leaks.h"

static tm_model g_m;

static void setup(void)
{
    tm_init(&g_m, "llama", 64, 64, 2, 4, 2, 96, 7);
    tm_build(&g_m, 7);
}
static void teardown(void)
{
    tm_free(&g_m);
    kr_test_leak_check();
}

/* Write with tweak, load; returns status and fills err. */
static kr_status try_load(const tm_model *m, const tm_tweak *tw, kr_err *err, kr_model **keep)
{
    const char *path = tm_tmp_path("v");
    cr_assert_eq(tm_write(m, path, tw), KR_OK);
    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    kr_model *km = (kr_model *)(uintptr_t)1;
    kr_err_clear(err);
    kr_status st = kr_model_load(path, &mp, &km, err);
    unlink(path);
    if (st != KR_OK)
        cr_expect_null(km);
    if (keep)
        *keep = st == KR_OK ? km : NULL;
    else if (st == KR_OK)
        kr_model_free(km);
    return st;
}

#define EXPECT_MSG(err, sub) cr_expect(strstr((err).msg, sub) != NULL, "message lacks '%s': %s", sub, (err).msg)

TestSuite(validate, .init = setup, .fini = teardown);

Test(validate, valid_model_loads)
{
    kr_err err;
    kr_model *km;
    cr_assert_eq(try_load(&g_m, NULL, &err, &km), KR_OK, "%s", err.msg);
    cr_expect_eq(kr_model_n_vocab(km), 64);
    const kr_hparams *hp = kr_model_hparams(km);
    cr_expect_eq(hp->n_head_kv, 2);
    cr_expect_eq(hp->head_dim, 16);
    cr_expect_eq(hp->n_rot, 16);
    cr_expect_eq(hp->n_ff, 96);
    cr_expect_eq(hp->rope_base, 10000.0f);
    cr_expect_eq(hp->rope_freq_scale, 1.0f);
    cr_expect_eq(hp->sliding_window, 0);
    kr_model_free(km);
}

Test(validate, missing_tensor_named_with_shape)
{
    kr_err err;
    tm_tweak tw = {.skip = "blk.1.ffn_up.weight"};
    cr_expect_eq(try_load(&g_m, &tw, &err, NULL), KR_ERR_NOT_FOUND);
    EXPECT_MSG(err, "missing tensor 'blk.1.ffn_up.weight'");
    EXPECT_MSG(err, "[64, 96]");
}

Test(validate, misshapen_tensor_names_both_shapes)
{
    kr_err err;
    tm_tweak tw = {.reshape = "blk.0.attn_k.weight"};
    cr_expect_eq(try_load(&g_m, &tw, &err, NULL), KR_ERR_FORMAT);
    EXPECT_MSG(err, "blk.0.attn_k.weight");
    EXPECT_MSG(err, "[96, 32]");   /* found */
    EXPECT_MSG(err, "expected [64, 32]");
}

Test(validate, extra_tensor_rejected)
{
    kr_err err;
    tm_tweak tw = {.extra = "blk.0.attn_q.bias"};
    cr_expect_eq(try_load(&g_m, &tw, &err, NULL), KR_ERR_FORMAT);
    EXPECT_MSG(err, "unexpected tensor 'blk.0.attn_q.bias'");
}

Test(validate, tied_embeddings_are_legal)
{
    tm_free(&g_m);
    tm_init(&g_m, "llama", 64, 64, 1, 4, 4, 96, 8);
    g_m.tied = true;
    tm_build(&g_m, 8);
    kr_err err;
    cr_expect_eq(try_load(&g_m, NULL, &err, NULL), KR_OK, "%s", err.msg);
    /* but a missing token_embd is not */
    tm_tweak tw = {.skip = "token_embd.weight"};
    cr_expect_neq(try_load(&g_m, &tw, &err, NULL), KR_OK);
    EXPECT_MSG(err, "token_embd.weight");
}

Test(validate, head_count_kv_must_divide)
{
    kr_err err;
    tm_tweak tw = {.u32_key = "llama.attention.head_count_kv", .u32_val = 3};
    cr_expect_eq(try_load(&g_m, &tw, &err, NULL), KR_ERR_RANGE);
    EXPECT_MSG(err, "n_head_kv = 3 does not divide n_head = 4");
}

Test(validate, zero_and_huge_hparams)
{
    kr_err err;
    tm_tweak tw = {.u32_key = "llama.embedding_length", .u32_val = 0};
    cr_expect_eq(try_load(&g_m, &tw, &err, NULL), KR_ERR_RANGE);
    tm_tweak tw2 = {.u32_key = "llama.attention.head_count", .u32_val = 0};
    cr_expect_eq(try_load(&g_m, &tw2, &err, NULL), KR_ERR_RANGE);
    tm_tweak tw3 = {.u32_key = "llama.block_count", .u32_val = 0xffffffffu};
    cr_expect_eq(try_load(&g_m, &tw3, &err, NULL), KR_ERR_RANGE);
    EXPECT_MSG(err, "n_layer");
    tm_tweak tw4 = {.u32_key = "llama.feed_forward_length", .u32_val = 0x7fffffffu};
    cr_expect_eq(try_load(&g_m, &tw4, &err, NULL), KR_ERR_RANGE);
    tm_tweak tw5 = {.u32_key = "llama.attention.head_count_kv", .u32_val = 8};
    cr_expect_eq(try_load(&g_m, &tw5, &err, NULL), KR_ERR_RANGE);
    tm_tweak tw6 = {.u32_key = "llama.rope.dimension_count", .u32_val = 17};
    cr_expect_eq(try_load(&g_m, &tw6, &err, NULL), KR_ERR_RANGE);
    /* a layer count that passes the range check but does not match the file */
    tm_tweak tw7 = {.u32_key = "llama.block_count", .u32_val = 3};
    cr_expect_eq(try_load(&g_m, &tw7, &err, NULL), KR_ERR_NOT_FOUND);
    EXPECT_MSG(err, "missing tensor 'blk.2.attn_norm.weight'");
    EXPECT_MSG(err, "more problems");
    /* more layers than tensors: refused before the table is built */
    tm_tweak tw8 = {.u32_key = "llama.block_count", .u32_val = 40};
    cr_expect_eq(try_load(&g_m, &tw8, &err, NULL), KR_ERR_FORMAT);
    EXPECT_MSG(err, "block_count 40 but the file holds only 21 tensors");
}

Test(validate, nan_and_negative_floats)
{
    kr_err err;
    tm_tweak tw = {.f32_key = "llama.attention.layer_norm_rms_epsilon", .f32_val = NAN};
    cr_expect_eq(try_load(&g_m, &tw, &err, NULL), KR_ERR_RANGE);
    EXPECT_MSG(err, "epsilon");
    tm_tweak tw2 = {.f32_key = "llama.rope.freq_base", .f32_val = -1.0f};
    cr_expect_eq(try_load(&g_m, &tw2, &err, NULL), KR_ERR_RANGE);
    tm_tweak tw3 = {.f32_key = "llama.rope.freq_base", .f32_val = INFINITY};
    cr_expect_eq(try_load(&g_m, &tw3, &err, NULL), KR_ERR_RANGE);
}

Test(validate, missing_required_key_and_wrong_type)
{
    kr_err err;
    tm_tweak tw = {.omit_key = "attention.head_count"};
    cr_expect_eq(try_load(&g_m, &tw, &err, NULL), KR_ERR_NOT_FOUND);
    EXPECT_MSG(err, "llama.attention.head_count");
    tm_tweak tw2 = {.str_key = "llama.block_count", .str_val = "two"};
    cr_expect_eq(try_load(&g_m, &tw2, &err, NULL), KR_ERR_TYPE, "%s", err.msg);
    EXPECT_MSG(err, "block_count");
    /* optional keys fall back to their defaults */
    tm_tweak tw3 = {.omit_key = "attention.head_count_kv"};
    kr_model *km;
    cr_expect_eq(try_load(&g_m, &tw3, &err, &km), KR_ERR_FORMAT, "%s", err.msg); /* n_head_kv 4: K/V shapes differ */
    EXPECT_MSG(err, "blk.0.attn_k.weight");
}

Test(validate, unsupported_rope_scaling)
{
    kr_err err;
    g_m.rope_scale = 2.0f;
    tm_tweak tw = {.str_key = "llama.rope.scaling.type", .str_val = "yarn"};
    cr_expect_eq(try_load(&g_m, &tw, &err, NULL), KR_ERR_UNSUPPORTED);
    EXPECT_MSG(err, "yarn");
    kr_model *km;
    cr_assert_eq(try_load(&g_m, NULL, &err, &km), KR_OK, "%s", err.msg);
    cr_expect_eq(kr_model_hparams(km)->rope_freq_scale, 0.5f);
    kr_model_free(km);
}

Test(validate, unknown_architecture)
{
    kr_err err;
    snprintf(g_m.arch, sizeof g_m.arch, "gpt5");
    cr_expect_eq(try_load(&g_m, NULL, &err, NULL), KR_ERR_UNSUPPORTED);
    EXPECT_MSG(err, "unknown architecture 'gpt5'");
    EXPECT_MSG(err, "llama");
    EXPECT_MSG(err, "falcon");
}

Test(validate, no_handlers_or_ops)
{
    const char *path = tm_tmp_path("noh");
    cr_assert_eq(tm_write(&g_m, path, NULL), KR_OK);
    kr_model_params mp = kr_model_params_default();
    kr_model *km = NULL;
    kr_err err;
    kr_err_clear(&err);
    cr_expect_eq(kr_model_load(path, &mp, &km, &err), KR_ERR_UNSUPPORTED);
    cr_expect_null(km);
    kr_builtin_model_params(&mp);
    mp.ops = NULL;
    cr_expect_eq(kr_model_load(path, &mp, &km, &err), KR_ERR_INVALID_ARG);
    cr_expect_null(km);
    unlink(path);
}

Test(validate, context_sizing)
{
    kr_err err;
    kr_model *km;
    cr_assert_eq(try_load(&g_m, NULL, &err, &km), KR_OK, "%s", err.msg);
    kr_context_params cp = kr_context_params_default();
    kr_context *c = (kr_context *)(uintptr_t)1;
    cp.n_ctx = 0xffffffffu;
    cr_expect_eq(kr_context_new(km, &cp, &c, &err), KR_ERR_RANGE);
    cr_expect_null(c);
    cp.n_ctx = 16;
    cp.kv_type = KR_DTYPE_Q4_0; /* KV types: f32, f16, q8_0 */
    cr_expect_eq(kr_context_new(km, &cp, &c, &err), KR_ERR_UNSUPPORTED);
    cp.kv_type = KR_DTYPE_F32;
    cp.n_threads = 3;
    cr_assert_eq(kr_context_new(km, &cp, &c, &err), KR_OK, "%s", err.msg);
    cr_expect_eq(kr_context_n_ctx(c), 16);
    cr_expect_eq(kr_context_n_threads(c), 3);
    kr_context_free(c);
    /* default n_ctx: the training context (64 here) */
    cr_assert_eq(kr_context_new(km, NULL, &c, &err), KR_OK, "%s", err.msg);
    cr_expect_eq(kr_context_n_ctx(c), 64);
    kr_context_free(c);
    kr_model_free(km);
}

/* Every integer hyperparameter set to each of a list of hostile values:
 * the load either fails with a message or succeeds and then evaluates a
 * token without touching memory it should not (run under ASan in CI). */
Test(validate, hostile_hparam_values)
{
    const char *keys[] = {"llama.context_length", "llama.embedding_length", "llama.block_count",
                          "llama.feed_forward_length", "llama.attention.head_count",
                          "llama.attention.head_count_kv", "llama.rope.dimension_count",
                          "llama.attention.key_length", "llama.attention.value_length",
                          "llama.attention.sliding_window", "llama.vocab_size"};
    const uint32_t vals[] = {0, 1, 2, 3, 8, 15, 16, 17, 32, 63, 64, 65, 1u << 20, 0x7fffffffu, 0xffffffffu};
    int loaded = 0;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        for (size_t v = 0; v < sizeof vals / sizeof vals[0]; v++) {
            tm_tweak tw = {.u32_key = keys[k], .u32_val = vals[v]};
            kr_err err;
            kr_model *km = NULL;
            kr_status st = try_load(&g_m, &tw, &err, &km);
            if (st != KR_OK) {
                cr_expect(err.msg[0] != '\0', "%s = %u: error without a message", keys[k], vals[v]);
                continue;
            }
            loaded++;
            kr_context_params cp = kr_context_params_default();
            cp.n_ctx = 8;
            cp.n_threads = 2;
            kr_context *c = NULL;
            if (kr_context_new(km, &cp, &c, &err) == KR_OK) {
                int32_t tok[2] = {1, 2};
                float *lg = malloc((size_t)kr_model_n_vocab(km) * sizeof *lg);
                cr_expect_eq(kr_model_eval(c, tok, 2, 0, lg, &err), KR_OK, "%s = %u: %s", keys[k], vals[v], err.msg);
                free(lg);
                kr_context_free(c);
            }
            kr_model_free(km);
        }
    /* some values are the true ones or harmless (context_length, window) */
    cr_expect(loaded > 0);
}
