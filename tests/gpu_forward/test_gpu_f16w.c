/* fp16 weight storage on the CUDA path (kr_gpu_forward_params.weights = KR_DTYPE_F16, `--weights f16`,
 * [runtime] weights; docs/PREFILL.md "Weight storage and precision").
 *
 * GPU (suite gpu_f16w; skip without a device unless KERNRUN_REQUIRE_GPU=1):
 * - kr_dec_dequant_f16 on random blocks of every type (odd sizes, padded strides, poisoned output)
 *   vs the CPU's kr_dequantize_row + kr_fp32_to_fp16;
 * - whole models loaded with weights F16 (weight buffer poisoned first, KERNRUN_GF_POISON_WEIGHTS):
 *   every converted matrix on the device vs the CPU dequantization of the file (bit-exact where
 *   the fp32 value is exact: F32, F16, Q4_0, Q8_0; else within 1 fp16 ulp), untouched weights
 *   byte-equal to the file; teacher-forced logits vs the CPU reference for 32 steps (NMSE <= 1e-4,
 *   the native path's tolerance), then the GPU's own greedy tokens equal to the CPU's up to the
 *   first near-tie; batched-prefill logits of a prompt vs the CPU (NMSE <= 1e-3);
 * - the fit check refuses weights F16 where native fits, naming needed vs available bytes;
 * - `kernrun generate --backend cuda --weights f16 --greedy` prints the CPU's text.
 * CPU (suite gpu_f16w_host, runs everywhere): kr_gpu_forward_weights_parse, the flag and the config
 * key through the kernrun binary. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../core/kr_test_leaks.h"
#include "kernrun/backend.h"
#include "kernrun/builtin_model.h"
#include "kernrun/half.h"
#include "kernrun/model.h"
#include "kernrun/quant.h"
#include "kr_decode.h"
#include "kr_gpu_forward.h"
#include "kr_test_model.h"
#include "kr_test_gpu.h"
#include "mkmodel.h"

#define N_STEPS 32
#define NMSE_TOL 1e-4
#define PREFILL_TOL 1e-3
#define TIE_GAP 1e-3f
#define N_PROMPT 24

TestSuite(gpu_f16w, .fini = kr_test_leak_check);
TestSuite(gpu_f16w_host, .fini = kr_test_leak_check);

static const char *testdata(void)
{
    const char *d = getenv("KR_TESTDATA");
#ifdef KR_TESTDATA_DEFAULT
    return d ? d : KR_TESTDATA_DEFAULT;
#else
    return d ? d : "../shared/testdata";
#endif
}



static int argmax(const float *x, int n, float *gap)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    float second = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != best && x[i] > second)
            second = x[i];
    *gap = x[best] - second;
    return best;
}

/* fp16 bits as an ordered integer (sign-magnitude -> monotonic) */
static int32_t h_ord(uint16_t h) { return (h & 0x8000) ? -(int32_t)(h & 0x7fff) : (int32_t)h; }

/* Compare n device halves with the CPU's fp32 values ref: *mism = elements whose bits differ from
 * kr_fp32_to_fp16(ref); *max_ulp the largest distance; returns NMSE of the halves vs ref. */
static double cmp_halves(const uint16_t *dev, const float *ref, size_t n, size_t *mism, int32_t *max_ulp)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        uint16_t want = kr_fp32_to_fp16(ref[i]);
        if (dev[i] != want) {
            (*mism)++;
            int32_t d = h_ord(dev[i]) - h_ord(want);
            if (d < 0)
                d = -d;
            if (d > *max_ulp)
                *max_ulp = d;
        }
        float v = kr_fp16_to_fp32(dev[i]);
        if (!isfinite(v))
            return INFINITY;
        double e = (double)v - ref[i];
        num += e * e;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

/* The fp16 bits must equal the CPU's for these: the fp32 value of each element is exact (F32, F16,
 * Q4_0, Q8_0 on the device), or the host converts with the CPU's own code (types the device cannot
 * read). */
static bool exact_type(kr_dtype t)
{
    return t == KR_DTYPE_F32 || t == KR_DTYPE_F16 || t == KR_DTYPE_Q4_0 || t == KR_DTYPE_Q8_0 ||
           !kr_dec_matvec_supports(t);
}

/* ---- kr_dec_dequant_f16 on random blocks ------------------------------------------------------ */

static uint64_t g_rng = 0x243F6A8885A308D3ull;
static float frand(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static void dequant_kernel_case(kr_backend *be, kr_dec *d, kr_dtype t, int64_t rows, int64_t cols)
{
    uint64_t rb = 0;
    cr_assert_eq(kr_quant_row_size(t, (uint64_t)cols, &rb, NULL), KR_OK);
    const size_t sstride = (size_t)rb + (t == KR_DTYPE_F32 ? 12 : 6); /* padded source rows */
    const size_t dstride = (size_t)cols * 2 + 10;                     /* padded fp16 rows */
    uint8_t *src = calloc((size_t)rows, sstride);
    float *row = malloc((size_t)cols * sizeof *row);
    float *ref = malloc((size_t)rows * cols * sizeof *ref);
    uint16_t *out = malloc((size_t)rows * dstride);
    cr_assert(src && row && ref && out);
    for (int64_t r = 0; r < rows; r++) {
        float scale = 0.01f + 4.0f * (frand() + 1.0f); /* rows of different magnitude */
        for (int64_t c = 0; c < cols; c++)
            row[c] = scale * frand();
        cr_assert_eq(kr_quantize_row(t, row, src + (size_t)r * sstride, (size_t)cols), KR_OK);
        cr_assert_eq(kr_dequantize_row(t, src + (size_t)r * sstride, ref + (size_t)r * cols, (size_t)cols), KR_OK);
    }
    kr_err err;
    kr_err_clear(&err);
    kr_buffer *bs = NULL, *bd = NULL;
    void *dsrc = kr_test_dupload(be, src, (size_t)rows * sstride, &bs);
    void *ddst = kr_test_dalloc(be, (size_t)rows * dstride, &bd);
    cr_assert_eq(kr_backend_memset(be, ddst, 0xff, (size_t)rows * dstride, NULL, &err), KR_OK); /* poison */
    kr_status st = kr_dec_dequant_f16(d, NULL, t, dsrc, sstride, ddst, dstride, rows, cols, &err);
    cr_assert_eq(st, KR_OK, "%s: %s", kr_dtype_name(t), kr_err_msg(&err, st));
    kr_test_download(be, out, ddst, (size_t)rows * dstride);
    size_t mism = 0;
    int32_t max_ulp = 0;
    double worst = 0;
    for (int64_t r = 0; r < rows; r++) {
        const uint16_t *o = (const uint16_t *)((const uint8_t *)out + (size_t)r * dstride);
        double e = cmp_halves(o, ref + (size_t)r * cols, (size_t)cols, &mism, &max_ulp);
        if (e > worst)
            worst = e;
        for (size_t p = (size_t)cols; p < dstride / 2; p++) /* the padding stays poisoned */
            cr_assert_eq(o[p], 0xffff, "%s row %lld: padding half %zu written", kr_dtype_name(t), (long long)r, p);
    }
    cr_log_info("dequant_f16 %s (%lld x %lld): %zu halves differ from the CPU's (max %d ulp), worst row NMSE %.3g",
                kr_dtype_name(t), (long long)rows, (long long)cols, mism, max_ulp, worst);
    if (exact_type(t))
        cr_expect_eq(mism, 0, "%s: %zu halves differ from the CPU's", kr_dtype_name(t), mism);
    cr_expect_leq(max_ulp, 1, "%s: a half %d ulp from the CPU's", kr_dtype_name(t), max_ulp);
    cr_expect_leq(worst, 1e-6, "%s: NMSE %.3g vs the CPU's fp32", kr_dtype_name(t), worst);
    kr_backend_free(be, bs);
    kr_backend_free(be, bd);
    free(src);
    free(row);
    free(ref);
    free(out);
}

Test(gpu_f16w, dequant_f16_kernel_every_type)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_dec *d = NULL;
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(kr_dec_create(be, &d, &err), KR_OK, "%s", err.msg);
    static const kr_dtype types[] = {KR_DTYPE_F32, KR_DTYPE_F16, KR_DTYPE_Q4_0, KR_DTYPE_Q4_1, KR_DTYPE_Q8_0,
                                     KR_DTYPE_Q4_K, KR_DTYPE_Q6_K};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        kr_dtype t = types[i];
        size_t bsz = kr_dtype_block_size(t);
        dequant_kernel_case(be, d, t, 37, (int64_t)(bsz == 1 ? 4133 : bsz * (bsz == 256 ? 9 : 71)));
        dequant_kernel_case(be, d, t, 3, (int64_t)bsz); /* one block per row */
    }
    /* refused: a row stride shorter than the row, a type without a kernel */
    uint16_t *dummy = NULL;
    kr_status st = kr_dec_dequant_f16(d, NULL, KR_DTYPE_Q4_0, (const void *)16, 18, (void *)16, 62, 1, 32, &err);
    cr_expect_eq(st, KR_ERR_INVALID_ARG, "dst stride 62 < 64: %d", (int)st);
    st = kr_dec_dequant_f16(d, NULL, KR_DTYPE_Q5_0, (const void *)16, 22, (void *)16, 64, 1, 32, &err);
    cr_expect_eq(st, KR_ERR_UNSUPPORTED);
    (void)dummy;
    kr_dec_free(d);
    kr_backend_destroy(be);
}

/* ---- whole models ----------------------------------------------------------------------------- */

/* The matrices the forward pass multiplies with: converted with weights F16 (as kr__mark_conv). */
static bool converted_name(const kr_model *m, const char *name)
{
    static const char *const sfx[] = {".attn_q.weight", ".attn_k.weight", ".attn_v.weight", ".attn_output.weight",
                                      ".ffn_gate.weight", ".ffn_up.weight", ".ffn_down.weight", ".attn_qkv.weight"};
    if (strncmp(name, "blk.", 4) == 0) {
        const char *dot = strchr(name + 4, '.');
        for (size_t i = 0; dot && i < sizeof sfx / sizeof sfx[0]; i++)
            if (strcmp(dot, sfx[i]) == 0)
                return true;
        return false;
    }
    if (strcmp(name, "output.weight") == 0)
        return true;
    const kr_weight *e = kr_model_weight(m, "token_embd.weight");
    return strcmp(name, "token_embd.weight") == 0 &&
           (!kr_model_weight(m, "output.weight") || !kr_dec_matvec_supports(e->type)); /* host-converted */
}

static kr_gpu_forward *gpu_new_f16(kr_model *m, kr_backend *be)
{
    kr_err err;
    kr_err_clear(&err);
    kr_gpu_forward_params gp = kr_gpu_forward_params_default();
    gp.n_ctx = 64;
    gp.weights = KR_DTYPE_F16;
    kr_gpu_forward *g = NULL;
    setenv("KERNRUN_GF_POISON_WEIGHTS", "1", 1);
    kr_status st = kr_gpu_forward_new(m, be, &gp, &g, &err);
    unsetenv("KERNRUN_GF_POISON_WEIGHTS");
    cr_assert_eq(st, KR_OK, "gpu_forward_new (weights f16): %s", kr_err_msg(&err, st));
    return g;
}

/* Every weight on the device vs the file: converted ones vs the CPU dequantization. */
static void check_weights(kr_gpu_forward *g, kr_model *m, kr_backend *be, const char *label)
{
    size_t n_w;
    const kr_weight *w = kr_model_weights(m, &n_w);
    uint32_t n_conv = 0;
    size_t mism_all = 0;
    kr_err err;
    kr_err_clear(&err);
    for (size_t i = 0; i < n_w; i++) {
        if (!w[i].data)
            continue;
        kr_dtype t;
        const void *dev;
        size_t stride;
        kr_status st = kr_gpu_forward_weight(g, w[i].name, &t, &dev, &stride, &err);
        cr_assert_eq(st, KR_OK, "%s: %s", label, kr_err_msg(&err, st));
        const size_t rows = (size_t)(w[i].ne[1] * w[i].ne[2] * w[i].ne[3]), cols = (size_t)w[i].ne[0];
        const bool conv = converted_name(m, w[i].name) && w[i].type != KR_DTYPE_F16;
        if (!conv) {
            cr_expect_eq(t, w[i].type, "%s %s: stored as %s", label, w[i].name, kr_dtype_name(t));
            size_t bytes = (size_t)w[i].row_bytes * rows;
            uint8_t *h = malloc(bytes ? bytes : 1);
            cr_assert_not_null(h);
            cr_assert_eq(kr_backend_d2h(be, h, dev, bytes, NULL, &err), KR_OK);
            cr_expect(memcmp(h, w[i].data, bytes) == 0, "%s %s: device bytes differ from the file", label, w[i].name);
            free(h);
            continue;
        }
        n_conv++;
        cr_expect_eq(t, KR_DTYPE_F16, "%s %s: stored as %s, want f16", label, w[i].name, kr_dtype_name(t));
        cr_expect_eq(stride, cols * 2, "%s %s: row stride %zu", label, w[i].name, stride);
        uint16_t *h = malloc(rows * cols * 2);
        float *ref = malloc(cols * sizeof *ref);
        cr_assert(h && ref);
        cr_assert_eq(kr_backend_d2h(be, h, dev, rows * cols * 2, NULL, &err), KR_OK);
        size_t mism = 0;
        int32_t max_ulp = 0;
        double worst = 0;
        for (size_t r = 0; r < rows; r++) {
            cr_assert_eq(kr_dequantize_row(w[i].type, (const uint8_t *)w[i].data + r * w[i].row_bytes, ref, cols),
                         KR_OK);
            double e = cmp_halves(h + r * cols, ref, cols, &mism, &max_ulp);
            if (e > worst)
                worst = e;
        }
        if (exact_type(w[i].type))
            cr_expect_eq(mism, 0, "%s %s (%s): %zu halves differ from the CPU's", label, w[i].name,
                         kr_dtype_name(w[i].type), mism);
        cr_expect_leq(max_ulp, 1, "%s %s: a half %d ulp from the CPU's", label, w[i].name, max_ulp);
        cr_expect_leq(worst, 1e-6, "%s %s: row NMSE %.3g vs the CPU's fp32 (or NaN: unwritten)", label, w[i].name,
                      worst);
        mism_all += mism;
        free(h);
        free(ref);
    }
    kr_gpu_forward_stats gs;
    kr_gpu_forward_get_stats(g, &gs);
    cr_expect_eq(gs.weights, KR_DTYPE_F16);
    cr_expect_eq(gs.n_converted, n_conv, "%s: %u converted, want %u", label, gs.n_converted, n_conv);
    cr_log_info("%s: %u matrices converted, %zu halves 1 ulp off the CPU's", label, n_conv, mism_all);
}

/* CPU reference: greedy from start for N_STEPS (fp16 KV cache like the GPU's). */
static void cpu_greedy(kr_model *m, int32_t start, int32_t *toks, float *gaps, float *logits)
{
    kr_err err;
    kr_err_clear(&err);
    int nv = kr_model_n_vocab(m);
    kr_context_params cp = kr_context_params_default();
    cp.n_ctx = 64;
    cp.kv_type = KR_DTYPE_F16;
    kr_context *c = NULL;
    kr_status st = kr_context_new(m, &cp, &c, &err);
    cr_assert_eq(st, KR_OK, "cpu context: %s", kr_err_msg(&err, st));
    toks[0] = start;
    for (int i = 0; i < N_STEPS; i++) {
        float *lg = logits + (size_t)i * nv;
        st = kr_model_eval(c, &toks[i], 1, (uint32_t)i, lg, &err);
        cr_assert_eq(st, KR_OK, "cpu eval %d: %s", i, kr_err_msg(&err, st));
        toks[i + 1] = argmax(lg, nv, &gaps[i]);
    }
    kr_context_free(c);
}

static void check_decode(kr_gpu_forward *g, kr_model *m, const char *label)
{
    int nv = kr_model_n_vocab(m);
    int32_t toks[N_STEPS + 1];
    float gaps[N_STEPS];
    float *ref = malloc((size_t)N_STEPS * nv * sizeof *ref), *lg = malloc((size_t)nv * sizeof *lg);
    cr_assert(ref && lg);
    cpu_greedy(m, 1, toks, gaps, ref);
    kr_err err;
    kr_err_clear(&err);
    int first_tie = N_STEPS;
    double worst = 0;
    for (int i = 0; i < N_STEPS; i++) {
        for (int j = 0; j < nv; j++)
            lg[j] = NAN;
        kr_status st = kr_gpu_forward_eval(g, &toks[i], 1, (uint32_t)i, lg, &err);
        cr_assert_eq(st, KR_OK, "%s: gpu eval %d: %s", label, i, kr_err_msg(&err, st));
        double e = kr_test_nmse_f(lg, ref + (size_t)i * nv, (size_t)nv);
        if (e > worst)
            worst = e;
        cr_expect_leq(e, NMSE_TOL, "%s step %d: logits NMSE %.3g", label, i, e);
        float gap;
        int t = argmax(lg, nv, &gap);
        if (gaps[i] < TIE_GAP) {
            if (first_tie == N_STEPS)
                first_tie = i;
        } else {
            cr_expect_eq(t, toks[i + 1], "%s step %d: gpu argmax %d, cpu %d", label, i, t, toks[i + 1]);
        }
    }
    int32_t tok = toks[0];
    for (int i = 0; i < first_tie; i++) { /* free greedy run, rewound */
        kr_status st = kr_gpu_forward_eval(g, &tok, 1, (uint32_t)i, lg, &err);
        cr_assert_eq(st, KR_OK, "%s: gpu greedy %d: %s", label, i, kr_err_msg(&err, st));
        float gap;
        tok = argmax(lg, nv, &gap);
        cr_expect_eq(tok, toks[i + 1], "%s greedy step %d: gpu %d, cpu %d", label, i, tok, toks[i + 1]);
    }
    cr_log_info("%s: decode logits worst NMSE %.3g over %d steps, greedy equal for %d steps", label, worst, N_STEPS,
                first_tie);
    free(ref);
    free(lg);
}

/* A prompt of N_PROMPT tokens in one eval (batched prefill where the model allows) vs the CPU. */
static void check_prefill(kr_gpu_forward *g, kr_model *m, const char *label, bool want_batched)
{
    int nv = kr_model_n_vocab(m);
    int32_t prompt[N_PROMPT];
    for (int i = 0; i < N_PROMPT; i++)
        prompt[i] = (int32_t)((7u + 131u * (unsigned)i * (unsigned)i) % (unsigned)nv);
    float *ref = malloc((size_t)nv * sizeof *ref), *lg = malloc((size_t)nv * sizeof *lg);
    cr_assert(ref && lg);
    kr_err err;
    kr_err_clear(&err);
    kr_context_params cp = kr_context_params_default();
    cp.n_ctx = 64;
    cp.kv_type = KR_DTYPE_F16;
    kr_context *c = NULL;
    kr_status st = kr_context_new(m, &cp, &c, &err);
    cr_assert_eq(st, KR_OK, "cpu context: %s", kr_err_msg(&err, st));
    st = kr_model_eval(c, prompt, N_PROMPT, 0, ref, &err);
    cr_assert_eq(st, KR_OK, "cpu prompt: %s", kr_err_msg(&err, st));
    kr_context_free(c);
    for (int j = 0; j < nv; j++)
        lg[j] = NAN;
    st = kr_gpu_forward_eval(g, prompt, N_PROMPT, 0, lg, &err);
    cr_assert_eq(st, KR_OK, "%s: gpu prompt: %s", label, kr_err_msg(&err, st));
    kr_gpu_forward_stats gs;
    kr_gpu_forward_get_stats(g, &gs);
    double e = kr_test_nmse_f(lg, ref, (size_t)nv);
    cr_log_info("%s: prompt of %d tokens (%u batched): last logits NMSE %.3g", label, N_PROMPT, gs.batched_tokens, e);
    if (want_batched)
        cr_expect_geq(gs.batched_tokens, N_PROMPT - 1, "%s: only %u prompt tokens batched", label, gs.batched_tokens);
    cr_expect_leq(e, PREFILL_TOL, "%s: prefill logits NMSE %.3g", label, e);
    free(ref);
    free(lg);
}

static void check_model(const char *path, const char *label, bool want_batched)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_model *m = kr_test_load_model(path);
    kr_gpu_forward *g = gpu_new_f16(m, be);
    check_weights(g, m, be, label);
    check_decode(g, m, label);
    check_prefill(g, m, label, want_batched);
    kr_gpu_forward_free(g);
    kr_model_free(m);
    kr_backend_destroy(be);
}

/* mkmodel a model into a temp dir; path gets the file. */
static void mk(const char *arch, const char *preset, kr_dtype type, uint32_t n_layer, char *dir, char *path, size_t n)
{
    strcpy(dir, "/tmp/kr-gpu-f16w-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, n, "%s/m.gguf", dir);
    kr_mkmodel_opts o = {.arch = arch, .preset = preset, .type = type, .out_path = path, .seed = 11,
                         .n_threads = 0, .n_layer = n_layer};
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_mkmodel_write(&o, NULL, &err);
    cr_assert_eq(st, KR_OK, "mkmodel: %s", kr_err_msg(&err, st));
}

static void mk_and_check(const char *arch, const char *preset, kr_dtype type, uint32_t n_layer)
{
    kr_backend *be = kr_test_gpu_backend(); /* skip before writing anything */
    kr_backend_destroy(be);
    char dir[64], path[128], label[96];
    mk(arch, preset, type, n_layer, dir, path, sizeof path);
    snprintf(label, sizeof label, "mkmodel %s %s %s", arch, preset, kr_dtype_name(type));
    check_model(path, label, true);
    unlink(path);
    rmdir(dir);
}

Test(gpu_f16w, stories260k_f32)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/models/stories260K-f32.gguf", testdata());
    check_model(p, "stories260K (F32)", false); /* head_dim 8: the prompt goes token by token */
}

Test(gpu_f16w, mkmodel_llama_q4_0) { mk_and_check("llama", "tiny", KR_DTYPE_Q4_0, 0); }
Test(gpu_f16w, mkmodel_llama_q8_0) { mk_and_check("llama", "tiny", KR_DTYPE_Q8_0, 0); }
Test(gpu_f16w, mkmodel_mistral_q4_1) { mk_and_check("mistral", "tiny", KR_DTYPE_Q4_1, 0); }
Test(gpu_f16w, mkmodel_falcon_q8_0) { mk_and_check("falcon", "tiny", KR_DTYPE_Q8_0, 0); }
/* types the device cannot read: converted on the host (models/quant), then the same F16 paths */
Test(gpu_f16w, mkmodel_llama_q5_0_host) { mk_and_check("llama", "tiny", KR_DTYPE_Q5_0, 0); }
Test(gpu_f16w, mkmodel_mistral_bf16_host) { mk_and_check("mistral", "tiny", KR_DTYPE_BF16, 0); }
/* K-quants need rows of 256: the 1b shapes with one layer (n_embd 2048, n_ff 5632, vocab 32000) */
Test(gpu_f16w, mkmodel_llama_1b_1layer_q4_k, .timeout = 300) { mk_and_check("llama", "1b", KR_DTYPE_Q4_K, 1); }
Test(gpu_f16w, mkmodel_llama_1b_1layer_q5_k_host, .timeout = 300) { mk_and_check("llama", "1b", KR_DTYPE_Q5_K, 1); }

/* "KV cache needs N bytes" -> N */
static uint64_t needed_bytes(const char *msg)
{
    const char *p = strstr(msg, "KV cache needs ");
    cr_assert_not_null(p, "no 'KV cache needs' in: %s", msg);
    return strtoull(p + strlen("KV cache needs "), NULL, 10);
}

Test(gpu_f16w, fit_check_refuses_f16_where_native_fits)
{
    kr_backend *be = kr_test_gpu_backend();
    char dir[64], path[128];
    mk("llama", "tiny", KR_DTYPE_Q4_0, 0, dir, path, sizeof path);
    kr_model *m = kr_test_load_model(path);
    kr_err err;
    kr_err_clear(&err);
    kr_gpu_forward_params gp = kr_gpu_forward_params_default();
    gp.n_ctx = 64;
    gp.mem_limit = 1;
    kr_gpu_forward *g = NULL;
    kr_status st = kr_gpu_forward_new(m, be, &gp, &g, &err);
    cr_assert_eq(st, KR_ERR_LIMIT, "native at 1 byte: %d %s", (int)st, err.msg);
    uint64_t native = needed_bytes(err.msg);
    gp.weights = KR_DTYPE_F16;
    kr_err_clear(&err);
    st = kr_gpu_forward_new(m, be, &gp, &g, &err);
    cr_assert_eq(st, KR_ERR_LIMIT);
    uint64_t f16 = needed_bytes(err.msg);
    cr_log_info("needed: native %llu bytes, f16 %llu bytes", (unsigned long long)native, (unsigned long long)f16);
    cr_expect_gt(f16, native, "f16 needs %llu <= native %llu", (unsigned long long)f16, (unsigned long long)native);
    /* at exactly the native need: native loads, f16 is refused with the reason and the numbers */
    gp.mem_limit = native;
    gp.weights = KR_DTYPE_F32;
    kr_err_clear(&err);
    st = kr_gpu_forward_new(m, be, &gp, &g, &err);
    cr_expect_eq(st, KR_OK, "native at its own need: %s", kr_err_msg(&err, st));
    kr_gpu_forward_free(g);
    g = NULL;
    gp.weights = KR_DTYPE_F16;
    kr_err_clear(&err);
    st = kr_gpu_forward_new(m, be, &gp, &g, &err);
    cr_expect_eq(st, KR_ERR_LIMIT);
    cr_expect_null(g);
    cr_log_info("refusal: %s", err.msg);
    cr_expect(strstr(err.msg, "fp16") && strstr(err.msg, "--weights native takes less"), "message: %s", err.msg);
    char want[64];
    snprintf(want, sizeof want, "only %llu bytes", (unsigned long long)native);
    cr_expect(strstr(err.msg, want) != NULL, "available bytes not named: %s", err.msg);
    kr_model_free(m);
    kr_backend_destroy(be);
    unlink(path);
    rmdir(dir);
}

/* ---- through the kernrun binary ---------------------------------------------------------------- */

/* Run `env kernrun args` (stderr into the output too unless quiet); output into buf; returns the exit
 * status. */
static int run_kernrun_q(const char *env, const char *args, char *buf, size_t cap, bool quiet)
{
    const char *k = getenv("KR_KERNRUN");
    if (!k)
        cr_skip_test("KR_KERNRUN not set (run through meson test)");
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "%s '%s' %s %s", env ? env : "", k, args, quiet ? "2>/dev/null" : "2>&1");
    FILE *f = popen(cmd, "r");
    cr_assert_not_null(f);
    size_t n = fread(buf, 1, cap - 1, f);
    buf[n] = '\0';
    int rc = pclose(f);
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

static int run_kernrun(const char *env, const char *args, char *buf, size_t cap)
{
    return run_kernrun_q(env, args, buf, cap, false);
}

Test(gpu_f16w, generate_cuda_weights_f16_prints_the_cpu_text, .timeout = 120)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_backend_destroy(be);
    static char out_cpu[1 << 16], out_gpu[1 << 16];
    char args[4096], a_cpu[4200], a_gpu[4200];
    snprintf(args, sizeof args, "generate -m '%s/models/stories260K-f32.gguf' -p 'Once upon a time' -n 24 --greedy "
             "--backend", testdata());
    snprintf(a_cpu, sizeof a_cpu, "%s cpu", args);
    snprintf(a_gpu, sizeof a_gpu, "%s cuda --weights f16", args);
    cr_assert_eq(run_kernrun_q(NULL, a_cpu, out_cpu, sizeof out_cpu, true), 0, "%s", out_cpu);
    cr_assert_eq(run_kernrun_q(NULL, a_gpu, out_gpu, sizeof out_gpu, true), 0, "%s", out_gpu);
    cr_log_info("cpu: %s\ncuda --weights f16: %s", out_cpu, out_gpu);
    cr_expect(strlen(out_cpu) > 16, "no text: %s", out_cpu);
    cr_expect_str_eq(out_gpu, out_cpu);
}

/* ---- CPU only ---------------------------------------------------------------------------------- */

Test(gpu_f16w_host, weights_parse)
{
    kr_err err;
    kr_err_clear(&err);
    kr_dtype t = KR_DTYPE_Q4_0;
    cr_expect_eq(kr_gpu_forward_weights_parse("native", &t, &err), KR_OK);
    cr_expect_eq(t, KR_DTYPE_F32);
    cr_expect_eq(kr_gpu_forward_weights_parse("F16", &t, &err), KR_OK);
    cr_expect_eq(t, KR_DTYPE_F16);
    static const char *const bad[] = {"f32", "", "fp16", "q8_0", "f16 "};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        t = KR_DTYPE_Q4_0;
        kr_err_clear(&err);
        cr_expect_eq(kr_gpu_forward_weights_parse(bad[i], &t, &err), KR_ERR_INVALID_ARG, "'%s'", bad[i]);
        cr_expect_eq(t, KR_DTYPE_Q4_0, "'%s' changed the output", bad[i]);
        cr_expect(strstr(err.msg, "native or f16") != NULL, "'%s': %s", bad[i], err.msg);
    }
    cr_expect_eq(kr_gpu_forward_weights_parse(NULL, &t, NULL), KR_ERR_INVALID_ARG);
    cr_expect_eq(kr_gpu_forward_params_default().weights, KR_DTYPE_F32, "default: as in the file");
}

/* Types the device cannot read pass the check only with weights F16 (no GPU needed). */
Test(gpu_f16w_host, check_params_accepts_host_converted_types)
{
    static const kr_dtype types[] = {KR_DTYPE_Q5_0, KR_DTYPE_Q5_1, KR_DTYPE_BF16};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        char dir[64], path[128];
        mk("llama", "tiny", types[i], 0, dir, path, sizeof path);
        kr_model *m = kr_test_load_model(path);
        kr_err err;
        kr_err_clear(&err);
        kr_gpu_forward_params gp = kr_gpu_forward_params_default();
        kr_status st = kr_gpu_forward_check_params(m, &gp, &err);
        cr_expect_eq(st, KR_ERR_UNSUPPORTED, "%s native: %d", kr_dtype_name(types[i]), (int)st);
        cr_expect(strstr(err.msg, "--weights f16 converts it") != NULL, "%s: %s", kr_dtype_name(types[i]), err.msg);
        cr_expect_eq(kr_gpu_forward_check(m, &err), KR_ERR_UNSUPPORTED);
        gp.weights = KR_DTYPE_F16;
        kr_err_clear(&err);
        st = kr_gpu_forward_check_params(m, &gp, &err);
        cr_expect_eq(st, KR_OK, "%s f16: %s", kr_dtype_name(types[i]), err.msg);
        kr_model_free(m);
        unlink(path);
        rmdir(dir);
    }
}

Test(gpu_f16w_host, cli_flag_and_config_key)
{
    static char out[1 << 16];
    char args[8192];
    const char *td = testdata();
    /* bad values: usage errors naming the choices */
    snprintf(args, sizeof args, "bench -m '%s/models/stories260K-f32.gguf' --weights f32", td);
    cr_expect_eq(run_kernrun(NULL, args, out, sizeof out), 2, "%s", out);
    cr_expect(strstr(out, "native or f16") != NULL, "%s", out);
    snprintf(args, sizeof args, "generate -m '%s/models/stories260K-f32.gguf' -p hi -n 2 --weights bf16", td);
    cr_expect_eq(run_kernrun(NULL, args, out, sizeof out), 2, "%s", out);
    cr_expect(strstr(out, "native, f16") != NULL, "%s", out);
    /* the config key: env override checked like the other keys */
    snprintf(args, sizeof args, "generate -m '%s/models/stories260K-f32.gguf' -p hi -n 2 --backend cpu", td);
    cr_expect_eq(run_kernrun("KERNRUN_RUNTIME_WEIGHTS=f8", args, out, sizeof out), 1, "%s", out);
    cr_expect(strstr(out, "KERNRUN_RUNTIME_WEIGHTS") && strstr(out, "native, f16"), "%s", out);
    cr_expect_eq(run_kernrun("KERNRUN_RUNTIME_WEIGHTS=f16", "help config", out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "now f16 [env KERNRUN_RUNTIME_WEIGHTS]") != NULL, "%s", out);
    /* the CPU path runs and says it ignores the setting */
    snprintf(args, sizeof args, "generate -m '%s/models/stories260K-f32.gguf' -p hi -n 2 --greedy --backend cpu "
             "--weights f16", td);
    cr_expect_eq(run_kernrun(NULL, args, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "ignored on the CPU") != NULL, "%s", out);
    snprintf(args, sizeof args, "bench -m '%s/models/stories260K-f32.gguf' -p 4 -n 2 --backend cpu", td);
    cr_expect_eq(run_kernrun("KERNRUN_RUNTIME_WEIGHTS=f16", args, out, sizeof out), 0, "%s", out);
    cr_expect(strstr(out, "ignored on the CPU") != NULL, "%s", out);
    /* --help documents the flag */
    cr_expect_eq(run_kernrun(NULL, "generate --help", out, sizeof out), 0);
    cr_expect(strstr(out, "--weights W") != NULL, "%s", out);
    cr_expect_eq(run_kernrun(NULL, "bench --help", out, sizeof out), 0);
    cr_expect(strstr(out, "--weights W") != NULL, "%s", out);
}
