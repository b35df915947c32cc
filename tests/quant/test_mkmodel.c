/* kernrun mkmodel: tiny models for each arch x type read back with the GGUF
 * reader; metadata and tensor shapes checked against numbers written here
 * from the llama.cpp naming convention and the published model configs;
 * value statistics, determinism (seed, thread count), --vocab-from, the
 * synthetic vocabulary through the tokenizer, and error paths. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernrun/gguf.h"
#include "kernrun/quant.h"
#include "kernrun/tokenizer.h"
#include "mkmodel.h"
#include "kr_test_leaks.h"

static char g_dir[256];

static void setup_dir(void)
{
    snprintf(g_dir, sizeof g_dir, "/tmp/kr-mkmodel-test-XXXXXX");
    cr_assert_not_null(mkdtemp(g_dir));
}

static void teardown_dir(void)
{
    rmdir(g_dir); /* tests unlink their files; fails harmlessly if not empty */
    kr_test_leak_check();
}

static const char *path_in_dir(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", g_dir, name);
    return buf;
}

static const char *testdata(char *buf, size_t n, const char *rel)
{
    const char *d = getenv("KR_TESTDATA");
    snprintf(buf, n, "%s/%s", d ? d : "../shared/testdata", rel);
    return buf;
}

static void write_model(const char *path, const char *arch, const char *preset, kr_dtype t, uint64_t seed,
                        int threads, const char *vocab)
{
    kr_mkmodel_opts o = {.arch = arch, .preset = preset, .type = t, .out_path = path, .seed = seed,
                         .n_threads = threads, .vocab_from = vocab};
    kr_err err = {0};
    kr_mkmodel_stats s;
    kr_status st = kr_mkmodel_write(&o, &s, &err);
    cr_assert_eq(st, KR_OK, "mkmodel %s %s %s: %s", arch, preset, kr_dtype_name(t), err.msg);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq((uint64_t)sb.st_size, s.file_bytes);
}

static uint32_t get_u32(const kr_gguf *g, const char *key)
{
    uint32_t v = 0;
    kr_err err = {0};
    cr_assert_eq(kr_gguf_get_u32(g, key, &v, &err), KR_OK, "%s: %s", key, err.msg);
    return v;
}

static float get_f32(const kr_gguf *g, const char *key)
{
    float v = 0;
    kr_err err = {0};
    cr_assert_eq(kr_gguf_get_f32(g, key, &v, &err), KR_OK, "%s: %s", key, err.msg);
    return v;
}

static void expect_tensor(const kr_gguf *g, const char *name, kr_dtype type, uint32_t n_dims, uint64_t ne0,
                          uint64_t ne1)
{
    const kr_gguf_tensor *t = kr_gguf_find_tensor(g, name);
    cr_assert_not_null(t, "tensor %s missing", name);
    cr_assert_eq(t->type, type, "%s type %s, want %s", name, kr_dtype_name(t->type), kr_dtype_name(type));
    cr_assert_eq(t->n_dims, n_dims, "%s n_dims %u want %u", name, t->n_dims, n_dims);
    cr_assert_eq(t->ne[0], ne0, "%s ne0 %llu want %llu", name, (unsigned long long)t->ne[0], (unsigned long long)ne0);
    if (n_dims > 1)
        cr_assert_eq(t->ne[1], ne1, "%s ne1 %llu want %llu", name, (unsigned long long)t->ne[1],
                     (unsigned long long)ne1);
    /* values: weights uniform(-a, a) with std 0.02 (a = 0.0346), norms 1 +- 0.1,
     * biases +- 0.02 — checked on the dequantized data */
    const uint64_t n = t->ne[0] * t->ne[1];
    float *y = malloc(n * sizeof *y);
    cr_assert_not_null(y);
    cr_assert_eq(kr_dequantize_row(t->type, t->data, y, n), KR_OK);
    double s = 0, s2 = 0, lo = INFINITY, hi = -INFINITY;
    for (uint64_t i = 0; i < n; i++) {
        cr_assert(isfinite(y[i]));
        s += y[i];
        s2 += (double)y[i] * y[i];
        lo = fmin(lo, y[i]);
        hi = fmax(hi, y[i]);
    }
    const double mean = s / (double)n, sd = sqrt(s2 / (double)n - mean * mean);
    if (strstr(name, "norm.weight")) {
        cr_assert(lo >= 0.9 && hi <= 1.1 && fabs(mean - 1.0) < 0.03, "%s: [%g, %g] mean %g", name, lo, hi, mean);
    } else if (strstr(name, ".bias")) {
        cr_assert(lo >= -0.02 && hi <= 0.02 && sd > 0.005, "%s: [%g, %g] sd %g", name, lo, hi, sd);
    } else {
        /* quantization can move values by up to one step (Q4_0: amax/8) */
        cr_assert(lo >= -0.0347 * 1.2 && hi <= 0.0347 * 1.2, "%s: range [%g, %g]", name, lo, hi);
        cr_assert(fabs(mean) < 0.002 && fabs(sd - 0.02) < 0.02 * 0.15, "%s: mean %g sd %g", name, mean, sd);
    }
    free(y);
}

/* Expected structure of a tiny model, written from the preset definition:
 * 2 layers, n_embd 64, 4 heads (head dim 16), 2 KV heads, ffn 128. */
static void check_tiny(const char *path, const char *arch, kr_dtype wt, uint32_t n_vocab)
{
    kr_gguf *g = NULL;
    kr_err err = {0};
    cr_assert_eq(kr_gguf_open(path, NULL, &g, &err), KR_OK, "%s: %s", path, err.msg);
    kr_gguf_str s;
    cr_assert_eq(kr_gguf_get_str(g, "general.architecture", &s, &err), KR_OK);
    cr_assert(s.len == strlen(arch) && memcmp(s.ptr, arch, s.len) == 0);
    char k[128];
#define AK(sfx) (snprintf(k, sizeof k, "%s.%s", arch, sfx), k)
    cr_assert_eq(get_u32(g, AK("embedding_length")), 64);
    cr_assert_eq(get_u32(g, AK("block_count")), 2);
    cr_assert_eq(get_u32(g, AK("feed_forward_length")), 128);
    cr_assert_eq(get_u32(g, AK("attention.head_count")), 4);
    cr_assert_eq(get_u32(g, AK("attention.head_count_kv")), 2);
    cr_assert_eq(get_u32(g, AK("rope.dimension_count")), 16);
    cr_assert(get_u32(g, AK("context_length")) > 0);
    cr_assert_eq(get_f32(g, AK("rope.freq_base")), 10000.0f);
    const bool falcon = strcmp(arch, "falcon") == 0;
    if (falcon) {
        cr_assert_eq(get_f32(g, AK("attention.layer_norm_epsilon")), 1e-5f);
        cr_assert_lt(kr_gguf_find_key(g, AK("attention.layer_norm_rms_epsilon")), 0);
    } else {
        cr_assert_eq(get_f32(g, AK("attention.layer_norm_rms_epsilon")), 1e-5f);
    }
    if (strcmp(arch, "mistral") == 0)
        cr_assert_gt(get_u32(g, AK("attention.sliding_window")), 0);
    else
        cr_assert_lt(kr_gguf_find_key(g, AK("attention.sliding_window")), 0);
#undef AK
    uint64_t nv = 0;
    cr_assert_eq(kr_gguf_get_arr(g, "tokenizer.ggml.tokens", KR_GGUF_STRING, &nv, &err), KR_OK, "%s", err.msg);
    cr_assert_eq(nv, n_vocab);

    const kr_dtype f32 = KR_DTYPE_F32;
    expect_tensor(g, "token_embd.weight", wt, 2, 64, n_vocab);
    expect_tensor(g, "output_norm.weight", f32, 1, 64, 1);
    expect_tensor(g, "output.weight", wt, 2, 64, n_vocab);
    char nm[64];
    for (int l = 0; l < 2; l++) {
#define T(sfx) (snprintf(nm, sizeof nm, "blk.%d.%s", l, sfx), nm)
        expect_tensor(g, T("attn_norm.weight"), f32, 1, 64, 1);
        expect_tensor(g, T("attn_output.weight"), wt, 2, 64, 64);
        expect_tensor(g, T("ffn_up.weight"), wt, 2, 64, 128);
        expect_tensor(g, T("ffn_down.weight"), wt, 2, 128, 64);
        if (falcon) {
            expect_tensor(g, T("attn_norm.bias"), f32, 1, 64, 1);
            /* fused q (4*16) + k (2*16) + v (2*16) rows */
            expect_tensor(g, T("attn_qkv.weight"), wt, 2, 64, 128);
            cr_assert_null(kr_gguf_find_tensor(g, T("ffn_norm.weight")));
        } else {
            expect_tensor(g, T("attn_q.weight"), wt, 2, 64, 64);
            expect_tensor(g, T("attn_k.weight"), wt, 2, 64, 32);
            expect_tensor(g, T("attn_v.weight"), wt, 2, 64, 32);
            expect_tensor(g, T("ffn_norm.weight"), f32, 1, 64, 1);
            expect_tensor(g, T("ffn_gate.weight"), wt, 2, 64, 128);
        }
#undef T
    }
    if (falcon)
        expect_tensor(g, "output_norm.bias", f32, 1, 64, 1);
    /* llama/mistral: 3 + 9 per layer; falcon: 4 + 6 per layer */
    cr_assert_eq(kr_gguf_n_tensors(g), falcon ? 4 + 6 * 2 : 3 + 9 * 2);
    kr_gguf_close(g);
}

TestSuite(mkmodel, .init = setup_dir, .fini = teardown_dir);

Test(mkmodel, tiny_all_arches_and_types)
{
    const char *arches[] = {"llama", "mistral", "falcon"};
    const kr_dtype types[] = {KR_DTYPE_F16, KR_DTYPE_Q8_0, KR_DTYPE_Q4_0, KR_DTYPE_Q4_1};
    char p[512];
    for (int a = 0; a < 3; a++)
        for (int t = 0; t < 4; t++) {
            path_in_dir(p, sizeof p, "tiny.gguf");
            write_model(p, arches[a], "tiny", types[t], 7, 0, NULL);
            check_tiny(p, arches[a], types[t], 256);
            unlink(p);
        }
}

static void *slurp(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    void *b = malloc((size_t)sz);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

Test(mkmodel, deterministic_in_seed_not_threads)
{
    char a[512], b[512], c[512];
    path_in_dir(a, sizeof a, "a.gguf");
    path_in_dir(b, sizeof b, "b.gguf");
    path_in_dir(c, sizeof c, "c.gguf");
    write_model(a, "llama", "tiny", KR_DTYPE_Q4_0, 42, 1, NULL);
    write_model(b, "llama", "tiny", KR_DTYPE_Q4_0, 42, 3, NULL);
    write_model(c, "llama", "tiny", KR_DTYPE_Q4_0, 43, 3, NULL);
    size_t na, nb, nc;
    unsigned char *da = slurp(a, &na), *db = slurp(b, &nb), *dc = slurp(c, &nc);
    cr_assert_eq(na, nb);
    cr_assert_eq(memcmp(da, db, na), 0, "same seed, different thread count: files differ");
    /* different seed: same size, different tensor bytes (and name) */
    cr_assert_eq(na, nc);
    kr_gguf *ga = NULL, *gc = NULL;
    cr_assert_eq(kr_gguf_open(a, NULL, &ga, NULL), KR_OK);
    cr_assert_eq(kr_gguf_open(c, NULL, &gc, NULL), KR_OK);
    const kr_gguf_tensor *ta = kr_gguf_find_tensor(ga, "blk.1.ffn_down.weight");
    const kr_gguf_tensor *tc = kr_gguf_find_tensor(gc, "blk.1.ffn_down.weight");
    cr_assert(ta && tc && ta->size == tc->size);
    cr_assert_neq(memcmp(ta->data, tc->data, ta->size), 0);
    /* rows differ from each other too (no repeated row pattern) */
    const kr_gguf_tensor *te = kr_gguf_find_tensor(ga, "token_embd.weight");
    const size_t rb = 64 / 32 * 18;
    cr_assert_neq(memcmp(te->data, (const char *)te->data + rb, rb), 0);
    kr_gguf_close(ga);
    kr_gguf_close(gc);
    free(da);
    free(db);
    free(dc);
    unlink(a);
    unlink(b);
    unlink(c);
}

Test(mkmodel, vocab_from_real_file)
{
    char p[512], v[512];
    path_in_dir(p, sizeof p, "v.gguf");
    testdata(v, sizeof v, "vocab/ggml-vocab-llama-spm.gguf");
    write_model(p, "mistral", "tiny", KR_DTYPE_Q8_0, 1, 2, v);
    check_tiny(p, "mistral", KR_DTYPE_Q8_0, 32000);
    /* the tokenizer keys are copied verbatim */
    kr_gguf *g = NULL, *src = NULL;
    cr_assert_eq(kr_gguf_open(p, NULL, &g, NULL), KR_OK);
    cr_assert_eq(kr_gguf_open(v, NULL, &src, NULL), KR_OK);
    int copied = 0;
    for (int64_t i = 0; i < kr_gguf_n_kv(src); i++) {
        const char *k = kr_gguf_key(src, i);
        if (strncmp(k, "tokenizer.", 10) != 0)
            continue;
        int64_t j = kr_gguf_find_key(g, k);
        cr_assert_geq(j, 0, "%s not copied", k);
        cr_assert_eq(kr_gguf_kv_type(g, j), kr_gguf_kv_type(src, i));
        copied++;
    }
    cr_assert_gt(copied, 3);
    kr_gguf_str a, b;
    cr_assert_eq(kr_gguf_arr_str(g, "tokenizer.ggml.tokens", 31999, &a, NULL), KR_OK);
    cr_assert_eq(kr_gguf_arr_str(src, "tokenizer.ggml.tokens", 31999, &b, NULL), KR_OK);
    cr_assert(a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0);
    kr_gguf_close(g);
    kr_gguf_close(src);
    unlink(p);
}

Test(mkmodel, synthetic_vocab_tokenizes)
{
    char p[512];
    path_in_dir(p, sizeof p, "s.gguf");
    write_model(p, "llama", "tiny", KR_DTYPE_F16, 1, 1, NULL);
    kr_gguf *g = NULL;
    kr_tokenizer *tok = NULL;
    kr_err err = {0};
    cr_assert_eq(kr_gguf_open(p, NULL, &g, NULL), KR_OK);
    cr_assert_eq(kr_tokenizer_load_gguf(g, &tok, &err), KR_OK, "%s", err.msg);
    cr_assert_eq(kr_tokenizer_n_vocab(tok), 256);
    cr_assert_eq(kr_tokenizer_bos(tok), 1);
    cr_assert_eq(kr_tokenizer_eos(tok), 2);
    int32_t ids[64];
    size_t n = 0;
    const char *text = "hello world";
    cr_assert_eq(kr_tokenizer_encode(tok, text, strlen(text), NULL, ids, 64, &n, &err), KR_OK, "%s", err.msg);
    cr_assert_gt(n, 1);
    cr_assert_eq(ids[0], 1); /* bos */
    for (size_t i = 0; i < n; i++)
        cr_assert(ids[i] >= 0 && ids[i] < 256);
    char out[64];
    size_t m = 0;
    cr_assert_eq(kr_tokenizer_decode(tok, ids, n, NULL, out, sizeof out, &m, &err), KR_OK, "%s", err.msg);
    cr_assert(m == strlen(text) && memcmp(out, text, m) == 0, "round trip: '%.*s'", (int)m, out);
    kr_tokenizer_free(tok);
    kr_gguf_close(g);
    unlink(p);
}

/* Published shapes: llama-2-7b, mistral-7b-v0.1, falcon-7b, TinyLlama-1.1B. */
Test(mkmodel, presets)
{
    kr_mkmodel_hparams hp;
    cr_assert_eq(kr_mkmodel_preset("llama", "7b", &hp, NULL), KR_OK);
    cr_assert(hp.n_layer == 32 && hp.n_embd == 4096 && hp.n_head == 32 && hp.n_head_kv == 32 && hp.n_ff == 11008 &&
              hp.n_vocab == 32000 && hp.n_ctx == 4096 && hp.n_rot == 128 && hp.sliding_window == 0);
    cr_assert_eq(kr_mkmodel_preset("mistral", "7b", &hp, NULL), KR_OK);
    cr_assert(hp.n_layer == 32 && hp.n_embd == 4096 && hp.n_head == 32 && hp.n_head_kv == 8 && hp.n_ff == 14336 &&
              hp.n_vocab == 32000 && hp.sliding_window == 4096);
    cr_assert_eq(kr_mkmodel_preset("falcon", "7b", &hp, NULL), KR_OK);
    cr_assert(hp.n_layer == 32 && hp.n_embd == 4544 && hp.n_head == 71 && hp.n_head_kv == 1 && hp.n_ff == 18176 &&
              hp.n_vocab == 65024 && hp.n_rot == 64);
    cr_assert_eq(kr_mkmodel_preset("llama", "1b", &hp, NULL), KR_OK);
    cr_assert(hp.n_layer == 22 && hp.n_embd == 2048 && hp.n_head == 32 && hp.n_head_kv == 4 && hp.n_ff == 5632);
    cr_assert_eq(kr_mkmodel_preset("falcon", "tiny", &hp, NULL), KR_OK);
    cr_assert(hp.n_layer == 2 && hp.n_embd == 64 && hp.n_head == 4 && hp.n_head_kv == 2 && hp.n_ff == 128 &&
              hp.n_vocab == 256);
    kr_err err = {0};
    cr_assert_eq(kr_mkmodel_preset("gpt2", "7b", &hp, &err), KR_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "gpt2"));
    cr_assert_eq(kr_mkmodel_preset("llama", "70b", &hp, &err), KR_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "70b"));
    /* llama.cpp file types */
    cr_assert_eq(kr_mkmodel_file_type(KR_DTYPE_F16), 1);
    cr_assert_eq(kr_mkmodel_file_type(KR_DTYPE_Q4_0), 2);
    cr_assert_eq(kr_mkmodel_file_type(KR_DTYPE_Q4_1), 3);
    cr_assert_eq(kr_mkmodel_file_type(KR_DTYPE_Q8_0), 7);
    cr_assert_eq(kr_mkmodel_file_type(KR_DTYPE_Q6_K), 18);
    cr_assert_eq(kr_mkmodel_file_type(KR_DTYPE_Q2_K), -1);
}

Test(mkmodel, layer_override_and_1b_shapes)
{
    char p[512];
    path_in_dir(p, sizeof p, "l.gguf");
    kr_mkmodel_opts o = {.arch = "falcon", .preset = "1b", .type = KR_DTYPE_Q4_0, .out_path = p, .seed = 3,
                         .n_layer = 1};
    kr_err err = {0};
    cr_assert_eq(kr_mkmodel_write(&o, NULL, &err), KR_OK, "%s", err.msg);
    kr_gguf *g = NULL;
    cr_assert_eq(kr_gguf_open(p, NULL, &g, NULL), KR_OK);
    cr_assert_eq(get_u32(g, "falcon.block_count"), 1);
    cr_assert_eq(kr_gguf_n_tensors(g), 4 + 6);
    /* 32 heads * 64 + 2 * 4 KV heads * 64 = 2560 fused rows */
    const kr_gguf_tensor *t = kr_gguf_find_tensor(g, "blk.0.attn_qkv.weight");
    cr_assert(t && t->ne[0] == 2048 && t->ne[1] == 2560);
    t = kr_gguf_find_tensor(g, "token_embd.weight");
    cr_assert(t && t->ne[0] == 2048 && t->ne[1] == 32000);
    kr_gguf_close(g);
    unlink(p);
}

Test(mkmodel, errors_leave_no_file)
{
    char p[512];
    path_in_dir(p, sizeof p, "e.gguf");
    kr_err err = {0};
    kr_mkmodel_opts o = {.arch = "llama", .preset = "tiny", .type = KR_DTYPE_Q3_K, .out_path = p};
    cr_assert_eq(kr_mkmodel_write(&o, NULL, &err), KR_ERR_UNSUPPORTED);
    cr_assert(strstr(err.msg, "q3_k"), "%s", err.msg);
    /* tiny rows (64) are not a multiple of the K-quant block (256): the tensor is named */
    o.type = KR_DTYPE_Q4_K;
    cr_assert_eq(kr_mkmodel_write(&o, NULL, &err), KR_ERR_INVALID_ARG);
    cr_assert(strstr(err.msg, "token_embd.weight") && strstr(err.msg, "256"), "%s", err.msg);
    o.type = KR_DTYPE_Q4_0;
    o.arch = "bert";
    cr_assert_eq(kr_mkmodel_write(&o, NULL, &err), KR_ERR_INVALID_ARG);
    o.arch = "llama";
    o.vocab_from = "/nonexistent/vocab.gguf";
    cr_assert_neq(kr_mkmodel_write(&o, NULL, &err), KR_OK);
    cr_assert(strstr(err.msg, "/nonexistent/vocab.gguf"), "%s", err.msg);
    /* a GGUF without tokenizer keys: a model file from before */
    char nv[512];
    path_in_dir(nv, sizeof nv, "novocab.gguf");
    kr_gguf_writer *w = NULL;
    cr_assert_eq(kr_gguf_writer_open(nv, &w, NULL), KR_OK);
    cr_assert_eq(kr_gguf_writer_set_str(w, "general.architecture", "llama"), KR_OK);
    cr_assert_eq(kr_gguf_writer_finish(w), KR_OK);
    kr_gguf_writer_free(w);
    o.vocab_from = nv;
    cr_assert_eq(kr_mkmodel_write(&o, NULL, &err), KR_ERR_FORMAT);
    cr_assert(strstr(err.msg, "tokenizer.ggml.tokens"), "%s", err.msg);
    o.vocab_from = NULL;
    o.out_path = "/nonexistent-dir/x.gguf";
    cr_assert_neq(kr_mkmodel_write(&o, NULL, &err), KR_OK);
    cr_assert(strstr(err.msg, "/nonexistent-dir/x.gguf"), "%s", err.msg);
    cr_assert_neq(access(p, F_OK), 0, "no partial file left behind");
    unlink(nv);
}

/* K-quant weights where the row lengths allow them (llama 1b: 2048, 5632). */
Test(mkmodel, kquant_weights)
{
    char p[512];
    path_in_dir(p, sizeof p, "k.gguf");
    const kr_dtype ts[] = {KR_DTYPE_Q4_K, KR_DTYPE_Q6_K};
    for (int k = 0; k < 2; k++) {
        kr_mkmodel_opts o = {.arch = "llama", .preset = "1b", .type = ts[k], .out_path = p, .seed = 9, .n_layer = 1};
        kr_err err = {0};
        cr_assert_eq(kr_mkmodel_write(&o, NULL, &err), KR_OK, "%s", err.msg);
        kr_gguf *g = NULL;
        cr_assert_eq(kr_gguf_open(p, NULL, &g, NULL), KR_OK);
        cr_assert_eq(get_u32(g, "general.file_type"), ts[k] == KR_DTYPE_Q4_K ? 14u : 18u);
        const kr_gguf_tensor *t = kr_gguf_find_tensor(g, "blk.0.ffn_down.weight");
        cr_assert(t && t->type == ts[k] && t->ne[0] == 5632 && t->ne[1] == 2048);
        /* first 8 rows: uniform(-a, a), a = 0.0346, std 0.02 */
        const uint64_t n = 8 * 5632;
        float *y = malloc(n * sizeof *y);
        cr_assert_not_null(y);
        cr_assert_eq(kr_dequantize_row(t->type, t->data, y, n), KR_OK);
        double s2 = 0, amax = 0;
        for (uint64_t i = 0; i < n; i++) {
            s2 += (double)y[i] * y[i];
            amax = fmax(amax, fabs(y[i]));
        }
        cr_assert(amax <= 0.0347 * 1.1 && fabs(sqrt(s2 / (double)n) - 0.02) < 0.002, "%s: amax %g rms %g",
                  kr_dtype_name(ts[k]), amax, sqrt(s2 / (double)n));
        free(y);
        kr_gguf_close(g);
        unlink(p);
    }
}
