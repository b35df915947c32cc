/* Batched prefill (plugins/cuda_forward/gpu_prefill.c) end to end, on
 * mkmodel-written synthetic models (tiny llama/mistral/falcon: head_dim 16, F16,
 * Q4_0, Q8_0, Q4_1 weights; a 1-layer TinyLlama-shaped Q4_0 model: head_dim
 * 64, GQA 32/4) with fresh random prompts (KR_TEST_SEED=n replays):
 *   - last-token logits of a batched prefill vs the CPU reference forward
 *     (kr_model_eval of the same prompt, f16 KV cache), NMSE <= 1e-3 (the
 *     issue's fp16 bound); also vs the GPU's token-by-token prefill
 *     (params.no_batch_prefill) of the same prompt, NMSE <= 1e-3;
 *   - prompts longer than n_batch (several chunks, positions > 0 with cached
 *     tokens before them), and a second batched eval continuing at n_past;
 *   - greedy continuation (16 tokens) after batched prefill == after
 *     token-by-token prefill, except after a top-two logit gap too small to
 *     decide (< 4x the rms difference of the two logit vectors at that step:
 *     then the rest is not compared).
 * The real tiny models in testdata (stories260K: head_dim 8; llama2-tiny-random:
 * head_dim 4) have head dims the flash kernel lacks: batched prefill declines
 * them (checked: logits equal the token-by-token path bit for bit).
 * GPU tests skip without a CUDA device unless KERNRUN_REQUIRE_GPU=1. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernrun/backend.h"
#include "kernrun/builtin_model.h"
#include "kernrun/dtype.h"
#include "kernrun/model.h"
#include "kr_gpu_forward.h"
#include "kr_test_model.h"
#include "kr_test_gpu.h"
#include "kr_test_rng.h"
#include "mkmodel.h"

#define TOL 1e-3

/* Under tools/gpu-check's compute-sanitizer pass (KERNRUN_SKIP_FAULT_TESTS set): short prompts, few
 * greedy steps, no 1b-shaped models, so every launch of the token-by-token reference stays affordable. */
static bool quick(void) { return getenv("KERNRUN_SKIP_FAULT_TESTS") != NULL; }

static kr_dtype g_kv_type = KR_DTYPE_F16; /* KV cache type of the GPU runs and the CPU reference */
static bool g_gpu_ring;                   /* GPU cache: the default sliding-window ring (CPU: n_ctx rows + mask) */

static const char *testdata(void)
{
    const char *d = getenv("KR_TESTDATA");
    return d ? d : "../shared/testdata";
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

/* CPU logits of the last token after evaluating toks[0..n) at 0 (f16 cache, no ring). */
static void cpu_logits(kr_model *m, const int32_t *toks, int n, float *out)
{
    kr_err err;
    kr_err_clear(&err);
    kr_context_params cp = kr_context_params_default();
    cp.n_ctx = (uint32_t)n + 8;
    cp.n_threads = 4;
    cp.kv_type = g_kv_type;
    cp.kv_no_ring = true;
    kr_context *c = NULL;
    kr_status st = kr_context_new(m, &cp, &c, &err);
    cr_assert_eq(st, KR_OK, "cpu context: %s", kr_err_msg(&err, st));
    st = kr_model_eval(c, toks, (size_t)n, 0, out, &err);
    cr_assert_eq(st, KR_OK, "cpu eval: %s", kr_err_msg(&err, st));
    kr_context_free(c);
}

static kr_gpu_forward *gpu_new(kr_model *m, kr_backend *be, uint32_t n_ctx, bool batched, uint32_t n_batch)
{
    kr_err err;
    kr_err_clear(&err);
    kr_gpu_forward_params gp = kr_gpu_forward_params_default();
    gp.n_ctx = n_ctx;
    gp.no_batch_prefill = !batched;
    gp.n_batch = n_batch;
    gp.kv_no_ring = !g_gpu_ring;
    gp.kv_type = g_kv_type;
    kr_gpu_forward *g = NULL;
    kr_status st = kr_gpu_forward_new(m, be, &gp, &g, &err);
    if (st == KR_ERR_UNSUPPORTED && g_kv_type != KR_DTYPE_F16)
        cr_skip_test("the CUDA path has no %s KV cache yet: %s", kr_dtype_name(g_kv_type), kr_err_msg(&err, st));
    cr_assert_eq(st, KR_OK, "gpu_forward_new: %s", kr_err_msg(&err, st));
    return g;
}

static void gpu_eval(kr_gpu_forward *g, const int32_t *toks, int n, uint32_t pos, float *lg, int nv)
{
    for (int j = 0; j < nv; j++)
        lg[j] = NAN;
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_gpu_forward_eval(g, toks, (size_t)n, pos, lg, &err);
    cr_assert_eq(st, KR_OK, "gpu eval of %d at %u: %s", n, pos, kr_err_msg(&err, st));
}

/* Prompt of n random tokens, batched (chunks of n_batch) vs CPU and vs token by token;
 * then a second batched eval of n2 tokens at n_past; then greedy continuations. */
static void check_model(const char *path, int n, int n2, uint32_t n_batch)
{
    kr_backend *be = kr_test_gpu_backend();
    kr_test_rng_seed();
    if (quick()) {
        n = n < 24 ? n : 24;
        n2 = n2 < 6 ? n2 : 6;
        n_batch = n_batch && n_batch < 16 ? n_batch : 16; /* still several chunks */
    }
    kr_model *m = kr_test_load_model(path);
    const int nv = kr_model_n_vocab(m), N = n + n2;
    int32_t *toks = malloc((size_t)N * sizeof *toks);
    float *ref = malloc((size_t)nv * sizeof *ref), *lb = malloc((size_t)nv * sizeof *lb),
          *lt = malloc((size_t)nv * sizeof *lt);
    cr_assert(toks && ref && lb && lt);
    for (int i = 0; i < N; i++)
        toks[i] = (int32_t)(kr_test_rng_u64() % (uint64_t)nv);

    const uint32_t n_ctx = (uint32_t)N + 24;
    kr_gpu_forward *gb = gpu_new(m, be, n_ctx, true, n_batch);
    kr_gpu_forward *gt = gpu_new(m, be, n_ctx, false, 0);

    /* 1: first n tokens */
    cpu_logits(m, toks, n, ref);
    gpu_eval(gb, toks, n, 0, lb, nv);
    kr_gpu_forward_stats gs;
    kr_gpu_forward_get_stats(gb, &gs);
    if (g_gpu_ring) /* batched up to the ring's first wrap (all when the CUDA path has no ring) */
        cr_expect(gs.batched_tokens >= 2 && gs.batched_tokens <= (uint32_t)n, "%s: %u tokens batched", path,
                  gs.batched_tokens);
    else
        cr_expect_eq(gs.batched_tokens, (uint32_t)n, "%s: the batched prefill did not run all %d tokens", path, n);
    gpu_eval(gt, toks, n, 0, lt, nv);
    kr_gpu_forward_get_stats(gt, &gs);
    cr_expect_eq(gs.batched_tokens, 0u, "%s: no_batch_prefill still batched", path);
    double e_cpu = kr_test_nmse_f(lb, ref, nv), e_tok = kr_test_nmse_f(lb, lt, nv), e_tok_cpu = kr_test_nmse_f(lt, ref, nv);
    cr_log_info("%s n %d (n_batch %u): batched vs cpu %.3g, vs token-by-token %.3g (token-by-token vs cpu %.3g)",
                path, n, n_batch, e_cpu, e_tok, e_tok_cpu);
    cr_expect_leq(e_cpu, TOL, "%s n %d: batched prefill vs CPU NMSE %.3g (seed %llu)", path, n, e_cpu,
                  (unsigned long long)kr_test_seed());
    cr_expect_leq(e_tok, TOL, "%s n %d: batched vs token-by-token NMSE %.3g (seed %llu)", path, n, e_tok,
                  (unsigned long long)kr_test_seed());

    /* 2: n2 more tokens continuing at n_past (cached positions before the batch) */
    if (n2 > 0) {
        cpu_logits(m, toks, N, ref);
        gpu_eval(gb, toks + n, n2, (uint32_t)n, lb, nv);
        gpu_eval(gt, toks + n, n2, (uint32_t)n, lt, nv);
        e_cpu = kr_test_nmse_f(lb, ref, nv);
        e_tok = kr_test_nmse_f(lb, lt, nv);
        cr_log_info("%s +%d at %d: batched vs cpu %.3g, vs token-by-token %.3g", path, n2, n, e_cpu, e_tok);
        cr_expect_leq(e_cpu, TOL, "%s +%d at %d: batched vs CPU NMSE %.3g (seed %llu)", path, n2, n, e_cpu,
                      (unsigned long long)kr_test_seed());
        cr_expect_leq(e_tok, TOL, "%s +%d at %d: batched vs token-by-token NMSE %.3g (seed %llu)", path, n2, n,
                      e_tok, (unsigned long long)kr_test_seed());
    }

    /* 3: greedy continuation from both caches: at every step the logits agree (NMSE <= TOL) and,
     * where the token-by-token top-two gap exceeds 4x the rms difference of the two logit
     * vectors (plus 1e-6), so do the argmaxes; a smaller gap is a tie and ends the comparison. */
    int32_t tb, tt;
    float gap_b, gap_t;
    tb = argmax(lb, nv, &gap_b);
    tt = argmax(lt, nv, &gap_t);
    int compared = 0;
    for (int i = 0; i < (quick() ? 3 : 16); i++) {
        double dd = 0;
        for (int j = 0; j < nv; j++)
            dd += ((double)lb[j] - lt[j]) * ((double)lb[j] - lt[j]);
        const double tie = 4.0 * sqrt(dd / nv) + 1e-6;
        cr_expect_leq(kr_test_nmse_f(lb, lt, nv), TOL, "%s greedy step %d: logits NMSE %.3g", path, i,
                      kr_test_nmse_f(lb, lt, nv));
        if (gap_t < tie)
            break; /* undecidable from here on */
        cr_expect_eq(tb, tt, "%s greedy step %d: after batched prefill %d, after token-by-token %d (gap %g, tie %g)",
                     path, i, tb, tt, (double)gap_t, tie);
        if (tb != tt)
            break;
        compared++;
        gpu_eval(gb, &tb, 1, (uint32_t)(N + i), lb, nv);
        gpu_eval(gt, &tt, 1, (uint32_t)(N + i), lt, nv);
        tb = argmax(lb, nv, &gap_b);
        tt = argmax(lt, nv, &gap_t);
    }
    cr_log_info("%s: %d greedy tokens compared", path, compared);
    kr_gpu_forward_free(gb);
    kr_gpu_forward_free(gt);
    kr_model_free(m);
    free(toks);
    free(ref);
    free(lb);
    free(lt);
    kr_backend_destroy(be);
}

static void mk(const char *arch, const char *preset, kr_dtype type, uint32_t n_layer, char *dir, char *path, size_t n)
{
    snprintf(dir, 64, "/tmp/kr-gpu-prefill-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, n, "%s/m.gguf", dir);
    kr_mkmodel_opts o = {.arch = arch, .preset = preset, .type = type, .out_path = path, .seed = 5, .n_threads = 4,
                         .n_layer = n_layer};
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_mkmodel_write(&o, NULL, &err);
    cr_assert_eq(st, KR_OK, "mkmodel: %s", kr_err_msg(&err, st));
}

static void mk_check(const char *arch, const char *preset, kr_dtype type, uint32_t n_layer, int n, int n2,
                     uint32_t n_batch)
{
    kr_backend_destroy(kr_test_gpu_backend()); /* skip before writing anything */
    if (quick() && strcmp(preset, "tiny") != 0)
        cr_skip_test("%s preset: not under the sanitizer (KERNRUN_SKIP_FAULT_TESTS)", preset);
    char dir[64], path[128];
    mk(arch, preset, type, n_layer, dir, path, sizeof path);
    check_model(path, n, n2, n_batch);
    unlink(path);
    rmdir(dir);
}

Test(gpu_prefill_forward, llama_tiny_f16) { mk_check("llama", "tiny", KR_DTYPE_F16, 0, 77, 0, 0); }
/* the chunk buffers grow: 20 tokens first, then 150 */
Test(gpu_prefill_forward, llama_tiny_f16_buffers_grow) { mk_check("llama", "tiny", KR_DTYPE_F16, 0, 20, 150, 0); }
Test(gpu_prefill_forward, llama_tiny_q4_0_chunks) { mk_check("llama", "tiny", KR_DTYPE_Q4_0, 0, 45, 23, 16); }
Test(gpu_prefill_forward, llama_tiny_q8_0) { mk_check("llama", "tiny", KR_DTYPE_Q8_0, 0, 130, 9, 0); }
Test(gpu_prefill_forward, mistral_tiny_q4_1_window) { mk_check("mistral", "tiny", KR_DTYPE_Q4_1, 0, 150, 31, 64); }
Test(gpu_prefill_forward, llama_tiny_q8_0_kv_q8_0)
{
    g_kv_type = KR_DTYPE_Q8_0;
    mk_check("llama", "tiny", KR_DTYPE_Q8_0, 0, 70, 11, 32);
}
Test(gpu_prefill_forward, falcon_tiny_f16) { mk_check("falcon", "tiny", KR_DTYPE_F16, 0, 61, 12, 32); }
Test(gpu_prefill_forward, falcon_tiny_q8_0) { mk_check("falcon", "tiny", KR_DTYPE_Q8_0, 0, 40, 0, 0); }
/* fp16 GEMM inputs (kr_pf_rmsnorm_h / kr_pf_swiglu_h, kr_gemm_run_f16a / _repacked with a16) */
Test(gpu_prefill_forward, llama_tiny_f16_f16a)
{
    setenv("KERNRUN_PREFILL_F16A", "1", 1);
    mk_check("llama", "tiny", KR_DTYPE_F16, 0, 66, 17, 32);
}
Test(gpu_prefill_forward, llama_1b_shape_q4_0_f16a)
{
    setenv("KERNRUN_PREFILL_F16A", "1", 1);
    mk_check("llama", "1b", KR_DTYPE_Q4_0, 1, 150, 20, 64);
}
/* The window-row ring (when the CUDA path has it): batched up to the first wrap, the rest token by token. */
Test(gpu_prefill_forward, mistral_tiny_q8_0_ring)
{
    g_gpu_ring = true;
    mk_check("mistral", "tiny", KR_DTYPE_Q8_0, 0, 100, 20, 32);
}
Test(gpu_prefill_forward, llama_1b_shape_q4_0_one_layer) { mk_check("llama", "1b", KR_DTYPE_Q4_0, 1, 200, 0, 128); }

/* Real tiny models: head dims the flash kernel lacks -> token by token, identical logits. */
Test(gpu_prefill_forward, testdata_models_decline)
{
    kr_backend *be = kr_test_gpu_backend();
    static const char *files[] = {"stories260K-f32.gguf", "llama2-tiny-random-f16.gguf"};
    for (size_t f = 0; f < 2; f++) {
        char path[512];
        snprintf(path, sizeof path, "%s/models/%s", testdata(), files[f]);
        kr_model *m = kr_test_load_model(path);
        const int nv = kr_model_n_vocab(m);
        int32_t toks[20];
        for (int i = 0; i < 20; i++)
            toks[i] = 1 + i * 7 % (nv - 1);
        float *a = malloc((size_t)nv * sizeof *a), *b = malloc((size_t)nv * sizeof *b);
        cr_assert(a && b);
        kr_gpu_forward *ga = gpu_new(m, be, 32, true, 0), *gb = gpu_new(m, be, 32, false, 0);
        gpu_eval(ga, toks, 20, 0, a, nv);
        gpu_eval(gb, toks, 20, 0, b, nv);
        kr_gpu_forward_stats gs;
        kr_gpu_forward_get_stats(ga, &gs);
        cr_expect_eq(gs.batched_tokens, 0u, "%s: head_dim without a flash kernel, yet batched", files[f]);
        cr_expect_eq(memcmp(a, b, (size_t)nv * sizeof *a), 0, "%s: declined batched prefill differs", files[f]);
        kr_gpu_forward_free(ga);
        kr_gpu_forward_free(gb);
        kr_model_free(m);
        free(a);
        free(b);
    }
    kr_backend_destroy(be);
}
