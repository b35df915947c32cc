/* GPU sampler (plugins/cuda_sampling) against the CPU sampler
 * (models/sampling, the reference written from the stage definitions).
 *
 * Both get the same parameters, the same logits and the same accepted
 * history, and draw t uses the same Philox uniform on both sides, so the token
 * ids must be equal at every step. Random logits are continuous (no exact
 * near-ties at a top-p or draw boundary within double rounding); the tie
 * tests use logits on a coarse grid where rank ties are exact and the order
 * is decided by token id on both sides. Without a GPU every GPU test skips;
 * with KERNRUN_REQUIRE_GPU=1 it fails instead. KR_TEST_SEED=n replays. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/backend.h"
#include "kernrun/sampling.h"
#include "kr_gpu_sampling.h"
#include "kr_test_gpu.h"
#include "kr_test_leaks.h"
#include "kr_test_rng.h"

/* ---- harness ---------------------------------------------------------------- */

/* Under tools/gpu-check's compute-sanitizer pass (which sets
 * KERNRUN_SKIP_FAULT_TESTS) run fewer and smaller cases: same paths, less time. */
static bool quick(void) { return getenv("KERNRUN_SKIP_FAULT_TESTS") != NULL; }

static kr_backend *gpu_open(void)
{
    kr_test_rng_seed();
    return kr_test_gpu_backend();
}

typedef struct pair {
    kr_backend *be;
    kr_sampler *cpu;
    kr_gpu_sampler *gpu;
    kr_buffer *dlog;  /* (n_vocab,) device logits */
    int32_t n_vocab;
} pair;

static void pair_open(pair *q, kr_backend *be, const kr_sampler_params *p, int32_t n_vocab)
{
    kr_err err;
    kr_err_clear(&err);
    q->be = be;
    q->n_vocab = n_vocab;
    kr_status st = kr_sampler_create(p, n_vocab, &q->cpu, &err);
    cr_assert_eq(st, KR_OK, "cpu sampler: %s", kr_err_msg(&err, st));
    st = kr_gpu_sampler_create(be, p, n_vocab, &q->gpu, &err);
    cr_assert_eq(st, KR_OK, "gpu sampler: %s", kr_err_msg(&err, st));
    st = kr_backend_alloc(be, (size_t)n_vocab * sizeof(float), &q->dlog, &err);
    cr_assert_eq(st, KR_OK, "alloc: %s", kr_err_msg(&err, st));
}

static void pair_close(pair *q)
{
    kr_backend_free(q->be, q->dlog);
    kr_gpu_sampler_free(q->gpu);
    kr_sampler_free(q->cpu);
}

static void pair_accept(pair *q, int32_t tok)
{
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_sampler_accept(q->cpu, tok, &err);
    cr_assert_eq(st, KR_OK, "cpu accept: %s", kr_err_msg(&err, st));
    st = kr_gpu_sampler_accept(q->gpu, NULL, tok, &err);
    cr_assert_eq(st, KR_OK, "gpu accept: %s", kr_err_msg(&err, st));
}

/* One step on both; returns the token (asserts equality). */
static int32_t pair_step(pair *q, const float *logits, const char *what)
{
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_backend_h2d(q->be, q->dlog->ptr, logits, (size_t)q->n_vocab * sizeof(float), NULL, &err);
    cr_assert_eq(st, KR_OK, "h2d: %s", kr_err_msg(&err, st));
    int32_t tc = -7, tg = -9;
    st = kr_sampler_sample(q->cpu, logits, &tc, &err);
    cr_assert_eq(st, KR_OK, "%s: cpu sample: %s", what, kr_err_msg(&err, st));
    st = kr_gpu_sampler_sample(q->gpu, NULL, q->dlog->ptr, &tg, &err);
    cr_assert_eq(st, KR_OK, "%s: gpu sample: %s", what, kr_err_msg(&err, st));
    cr_assert_eq(tg, tc, "%s: gpu token %d != cpu token %d (KR_TEST_SEED=%llu)", what, (int)tg, (int)tc,
                 (unsigned long long)kr_test_seed());
    return tc;
}

/* smooth random logits: sum of three uniforms (bell-shaped) times scale */
static void rand_logits(float *l, int32_t n, float scale)
{
    for (int32_t i = 0; i < n; i++)
        l[i] = scale * (kr_test_rng_f(-1, 1) + kr_test_rng_f(-1, 1) + kr_test_rng_f(-1, 1));
}

typedef struct combo {
    int32_t top_k;
    float top_p, min_p, temp;
    float rep, pres, freq;
    int32_t last_n;
} combo;

static const combo k_combos[] = {
    {40, 0.9f, 0.0f, 0.8f, 1.0f, 0.0f, 0.0f, 64},    /* the benchmark setting */
    {40, 0.95f, 0.05f, 0.8f, 1.0f, 0.0f, 0.0f, 64},  /* llama.cpp defaults */
    {0, 0.9f, 0.0f, 1.0f, 1.0f, 0.0f, 0.0f, 64},     /* top-p over the whole vocabulary */
    {0, 1.0f, 0.0f, 1.5f, 1.0f, 0.0f, 0.0f, 0},      /* plain draw over everything */
    {0, 1.0f, 0.1f, 0.7f, 1.0f, 0.0f, 0.0f, 0},      /* min-p only */
    {1, 0.9f, 0.0f, 0.8f, 1.0f, 0.0f, 0.0f, 0},      /* top-k 1 */
    {5000, 0.8f, 0.0f, 1.0f, 1.0f, 0.0f, 0.0f, 0},   /* top-k beyond the shared-memory list */
    {3000, 0.5f, 0.02f, 1.2f, 1.0f, 0.0f, 0.0f, 0},  /* large top-k in shared memory */
    {0, 0.3f, 0.0f, 0.9f, 1.1f, 0.3f, 0.2f, 32},     /* penalties + top-p */
    {40, 1.0f, 0.0f, 0.8f, 1.3f, 0.5f, 0.1f, 16},    /* penalties + top-k */
};

static void run_combo(kr_backend *be, const combo *c, int32_t n_vocab, int steps, float scale, uint64_t seed)
{
    kr_sampler_params p;
    kr_sampler_params_default(&p);
    p.top_k = c->top_k;
    p.top_p = c->top_p;
    p.min_p = c->min_p;
    p.temperature = c->temp;
    p.repeat_penalty = c->rep;
    p.presence_penalty = c->pres;
    p.frequency_penalty = c->freq;
    p.repeat_last_n = c->last_n;
    p.seed = seed;
    pair q;
    pair_open(&q, be, &p, n_vocab);
    float *l = malloc((size_t)n_vocab * sizeof *l);
    cr_assert_not_null(l);
    /* a short "prompt" for the penalties: tokens near the top so they matter */
    for (int i = 0; i < 8; i++)
        pair_accept(&q, (int32_t)(kr_test_rng_u64() % (uint64_t)n_vocab));
    char what[160];
    for (int s = 0; s < steps; s++) {
        rand_logits(l, n_vocab, scale);
        /* make some history tokens the best ones, so penalties change the answer */
        if (c->last_n > 0 && s % 2 == 0)
            l[kr_test_rng_u64() % (uint64_t)n_vocab] = 4.0f * scale;
        snprintf(what, sizeof what, "V=%d top_k=%d top_p=%g min_p=%g T=%g rep=%g seed=%llu step %d", (int)n_vocab,
                 (int)c->top_k, (double)c->top_p, (double)c->min_p, (double)c->temp, (double)c->rep,
                 (unsigned long long)seed, s);
        int32_t t = pair_step(&q, l, what);
        pair_accept(&q, t);
    }
    kr_err err;
    kr_err_clear(&err);
    uint64_t dg = 0;
    kr_status st = kr_gpu_sampler_draws(q.gpu, NULL, &dg, &err);
    cr_assert_eq(st, KR_OK, "draws: %s", kr_err_msg(&err, st));
    cr_assert_eq(dg, kr_sampler_draws(q.cpu), "draw counters differ: gpu %llu cpu %llu", (unsigned long long)dg,
                 (unsigned long long)kr_sampler_draws(q.cpu));
    free(l);
    pair_close(&q);
}

/* ---- tests -------------------------------------------------------------------- */

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(gpu_sampling_host, .fini = kr_test_leak_check);
TestSuite(gpu_sampling, .fini = kr_test_leak_check);

Test(gpu_sampling_host, rejects_non_cuda_and_bad_params)
{
    kr_err err;
    kr_err_clear(&err);
    kr_sampler_params p;
    kr_sampler_params_default(&p);
    kr_gpu_sampler *s = (kr_gpu_sampler *)1;
    cr_assert_eq(kr_gpu_sampler_create(NULL, &p, 100, &s, &err), KR_ERR_INVALID_ARG);
    cr_assert_null(s);
    cr_assert(strstr(err.msg, "CUDA") != NULL, "%s", err.msg);
    kr_backend *cpu = NULL;
    kr_status st = kr_backend_create(KR_BACKEND_CPU, 0, &cpu, &err);
    cr_assert_eq(st, KR_OK, "cpu backend: %s", kr_err_msg(&err, st));
    cr_assert_eq(kr_gpu_sampler_create(cpu, &p, 100, &s, &err), KR_ERR_INVALID_ARG);
    kr_backend_destroy(cpu);
    cr_assert_eq(kr_gpu_sampler_create(NULL, &p, 100, NULL, &err), KR_ERR_INVALID_ARG);
    kr_gpu_sampler_free(NULL);
}

Test(gpu_sampling, params_validated_like_cpu, .timeout = 60)
{
    kr_backend *be = gpu_open();
    kr_err err;
    kr_err_clear(&err);
    kr_sampler_params p;
    kr_sampler_params_default(&p);
    p.top_p = 1.5f;
    kr_gpu_sampler *s = NULL;
    cr_assert_eq(kr_gpu_sampler_create(be, &p, 100, &s, &err), KR_ERR_RANGE);
    cr_assert(strstr(err.msg, "top_p = 1.5") != NULL, "%s", err.msg);
    kr_sampler_params_default(&p);
    kr_logit_bias b = {.token = 100, .bias = 1.0f};
    p.logit_bias = &b;
    p.n_logit_bias = 1;
    cr_assert_eq(kr_gpu_sampler_create(be, &p, 100, &s, &err), KR_ERR_RANGE);
    cr_assert_null(s);
    kr_sampler_params_default(&p);
    cr_assert_eq(kr_gpu_sampler_create(be, &p, 100, &s, &err), KR_OK, "%s", err.msg);
    cr_assert_eq(kr_gpu_sampler_accept(s, NULL, 100, &err), KR_ERR_RANGE);
    cr_assert_eq(kr_gpu_sampler_accept(s, NULL, -1, &err), KR_ERR_RANGE);
    kr_gpu_sampler_free(s);
    kr_backend_destroy(be);
}

Test(gpu_sampling, random_logits_match_cpu, .timeout = 600)
{
    kr_backend *be = gpu_open();
    const int32_t vocabs[] = {1000, 32000, 128256};
    size_t nv = quick() ? 2 : 3;
    for (size_t v = 0; v < nv; v++)
        for (size_t c = 0; c < sizeof k_combos / sizeof k_combos[0]; c++)
            for (int r = 0; r < (quick() ? 1 : 3); r++)
                run_combo(be, &k_combos[c], vocabs[v], quick() ? 2 : vocabs[v] > 100000 ? 8 : 20,
                          r == 2 ? 6.0f : 2.0f, kr_test_rng_u64());
    kr_backend_destroy(be);
}

Test(gpu_sampling, vocab_256k_and_odd_sizes, .timeout = 300)
{
    kr_backend *be = gpu_open();
    const int32_t vocabs[] = {1, 2, 31, 1023, 1025, 4097, 256000};
    for (size_t v = 0; v < sizeof vocabs / sizeof vocabs[0] - quick(); v++) {
        run_combo(be, &k_combos[0], vocabs[v], 10, 3.0f, kr_test_rng_u64());
        run_combo(be, &k_combos[2], vocabs[v], 10, 3.0f, kr_test_rng_u64());
        run_combo(be, &k_combos[3], vocabs[v], 5, 3.0f, kr_test_rng_u64());
    }
    kr_backend_destroy(be);
}

/* Top-k <= 256, greedy and top-p without top-k go through multi-block pre-passes by default;
 * the same settings with it off (KERNRUN_GPU_SAMPLER_PREPASS=0, read when the
 * sampler is created) keep the one-block path covered. Also the pre-pass
 * bounds: k = 256 (the largest per block) and 257 (one-block path). */
Test(gpu_sampling, prepass_on_and_off_match_cpu, .timeout = 300)
{
    kr_backend *be = gpu_open();
    const combo edge[] = {
        {256, 0.9f, 0.0f, 0.8f, 1.0f, 0.0f, 0.0f, 0},
        {257, 0.9f, 0.0f, 0.8f, 1.0f, 0.0f, 0.0f, 0},
        {2, 1.0f, 0.0f, 1.0f, 1.0f, 0.0f, 0.0f, 0},
    };
    for (int off = 0; off < 2; off++) {
        if (off)
            setenv("KERNRUN_GPU_SAMPLER_PREPASS", "0", 1);
        const size_t pick[] = {0, 1, 2, 5, 8, 9}; /* top-k, llama.cpp defaults, top-p alone, top-k 1, penalties */
        for (size_t i = 0; i < sizeof pick / sizeof pick[0]; i++)
            run_combo(be, &k_combos[pick[i]], 32000, 10, 2.0f, kr_test_rng_u64());
        for (size_t i = 0; i < sizeof edge / sizeof edge[0]; i++) {
            run_combo(be, &edge[i], 128256, 6, 3.0f, kr_test_rng_u64());
            run_combo(be, &edge[i], 2049, 6, 3.0f, kr_test_rng_u64()); /* last chunk of 1 entry */
        }
        unsetenv("KERNRUN_GPU_SAMPLER_PREPASS");
    }
    kr_backend_destroy(be);
}

/* Greedy: argmax, lowest id among equal maxima; no random numbers used. */
Test(gpu_sampling, greedy_matches_and_takes_lowest_tied_id, .timeout = 120)
{
    kr_backend *be = gpu_open();
    kr_sampler_params p;
    kr_sampler_params_default(&p);
    p.greedy = true;
    const int32_t nv = 50000;
    pair q;
    pair_open(&q, be, &p, nv);
    float *l = malloc(nv * sizeof *l);
    cr_assert_not_null(l);
    for (int s = 0; s < 20; s++) {
        rand_logits(l, nv, 3.0f);
        int32_t a = (int32_t)(kr_test_rng_u64() % nv), b = (int32_t)(kr_test_rng_u64() % nv);
        l[a] = l[b] = 100.0f; /* a tie for the maximum: the lower id wins */
        int32_t lo = a < b ? a : b, hi = a < b ? b : a;
        if (s % 3 == 0 && (lo ^ 1) != hi)
            l[lo ^ 1] = -0.0f; /* some noise around the winners */
        int32_t t = pair_step(&q, l, "greedy");
        cr_assert_eq(t, a < b ? a : b, "greedy picked %d, maxima at %d and %d", (int)t, (int)a, (int)b);
    }
    /* NaN counts as -inf, +inf as FLT_MAX: +inf at 7 beats everything */
    l[7] = INFINITY;
    l[3] = NAN;
    cr_assert_eq(pair_step(&q, l, "greedy +inf"), 7);
    uint64_t dg = 99;
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(kr_gpu_sampler_draws(q.gpu, NULL, &dg, &err), KR_OK);
    cr_assert_eq(dg, 0, "greedy consumed %llu random numbers", (unsigned long long)dg);
    free(l);
    pair_close(&q);
    /* temperature 0 is greedy too */
    kr_sampler_params_default(&p);
    p.temperature = 0.0f;
    pair_open(&q, be, &p, 1000);
    float l2[1000];
    rand_logits(l2, 1000, 1.0f);
    size_t best = 0;
    for (size_t i = 1; i < 1000; i++)
        if (l2[i] > l2[best])
            best = i;
    cr_assert_eq(pair_step(&q, l2, "temperature 0"), (int32_t)best);
    pair_close(&q);
    kr_backend_destroy(be);
}

/* Logits on a grid of a few values: top-k and top-p cuts fall inside groups of
 * equal logits, where rank is decided by token id (lower first). Flat logits
 * (one value) push the selection through the tied-id scan (the tied group is
 * larger than the shared-memory list). */
Test(gpu_sampling, ties_resolved_by_id, .timeout = 300)
{
    kr_backend *be = gpu_open();
    const int32_t nv = 40000;
    float *l = malloc(nv * sizeof *l);
    cr_assert_not_null(l);
    const combo cs[] = {
        {100, 1.0f, 0.0f, 1.0f, 1.0f, 0.0f, 0.0f, 0},  {7000, 1.0f, 0.0f, 1.0f, 1.0f, 0.0f, 0.0f, 0},
        {0, 0.37f, 0.0f, 1.0f, 1.0f, 0.0f, 0.0f, 0},   {10000, 0.61f, 0.0f, 0.5f, 1.0f, 0.0f, 0.0f, 0},
        {300, 0.77f, 0.0f, 2.0f, 1.0f, 0.0f, 0.0f, 0},
    };
    for (size_t c = 0; c < sizeof cs / sizeof cs[0]; c++) {
        for (int mode = 0; mode < 3; mode++) {
            kr_sampler_params p;
            kr_sampler_params_default(&p);
            p.top_k = cs[c].top_k;
            p.top_p = cs[c].top_p;
            p.min_p = 0.0f;
            p.temperature = cs[c].temp;
            p.seed = kr_test_rng_u64();
            pair q;
            pair_open(&q, be, &p, nv);
            for (int s = 0; s < (quick() ? 1 : 6); s++) {
                for (int32_t i = 0; i < nv; i++) {
                    if (mode == 0)
                        l[i] = 1.5f; /* flat */
                    else if (mode == 1)
                        l[i] = (float)(int)(kr_test_rng_u64() % 4) * 0.5f; /* 4 levels */
                    else
                        l[i] = (float)(int)(kr_test_rng_u64() % 40) * 0.25f - 5.0f; /* 40 levels */
                }
                char what[96];
                snprintf(what, sizeof what, "ties mode %d top_k %d top_p %g step %d", mode, (int)cs[c].top_k,
                         (double)cs[c].top_p, s);
                pair_step(&q, l, what);
            }
            pair_close(&q);
        }
    }
    free(l);
    kr_backend_destroy(be);
}

/* Penalties and bias: the GPU's adjusted logits are not visible, but a
 * history token made the clear winner must lose exactly when the CPU says so,
 * and bias entries for one token add up in order. */
Test(gpu_sampling, penalties_and_bias_match_cpu, .timeout = 300)
{
    kr_backend *be = gpu_open();
    const int32_t nv = 32000;
    float *l = malloc(nv * sizeof *l);
    cr_assert_not_null(l);
    kr_logit_bias bias[] = {{5, -INFINITY}, {6, 3.0f}, {6, 2.5f}, {11, -1e30f}, {12, 1e38f}, {12, 3e38f}};
    for (int variant = 0; variant < 4; variant++) {
        kr_sampler_params p;
        kr_sampler_params_default(&p);
        p.greedy = variant % 2 == 0;
        p.repeat_penalty = 1.0f + 0.25f * (float)variant;
        p.presence_penalty = 0.5f * (float)(variant & 1);
        p.frequency_penalty = 0.3f;
        p.repeat_last_n = 16 + variant * 100;
        p.seed = kr_test_rng_u64();
        if (variant >= 2) {
            p.logit_bias = bias;
            p.n_logit_bias = variant == 2 ? 3 : sizeof bias / sizeof bias[0];
        }
        pair q;
        pair_open(&q, be, &p, nv);
        for (int s = 0; s < (quick() ? 4 : 40); s++) {
            rand_logits(l, nv, 2.0f);
            /* history tokens at the top, some repeated, some negative */
            for (int k = 0; k < 4; k++) {
                int32_t t = (int32_t)(kr_test_rng_u64() % 64);
                l[t] = (k & 1 ? -1.0f : 1.0f) * kr_test_rng_f(5.0f, 9.0f);
            }
            char what[64];
            snprintf(what, sizeof what, "penalties variant %d step %d", variant, s);
            int32_t t = pair_step(&q, l, what);
            pair_accept(&q, t);
            pair_accept(&q, (int32_t)(kr_test_rng_u64() % 64));
            if (variant == 3)
                cr_assert_neq(t, 5, "token 5 is banned by a -inf bias");
        }
        pair_close(&q);
    }
    free(l);
    kr_backend_destroy(be);
}

Test(gpu_sampling, all_neg_inf_is_an_error_and_reset_restarts, .timeout = 120)
{
    kr_backend *be = gpu_open();
    kr_sampler_params p;
    kr_sampler_params_default(&p);
    p.seed = 1234;
    const int32_t nv = 3000;
    pair q;
    pair_open(&q, be, &p, nv);
    float *l = malloc(nv * sizeof *l);
    cr_assert_not_null(l);
    for (int32_t i = 0; i < nv; i++)
        l[i] = (i & 1) ? -INFINITY : NAN;
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(kr_backend_h2d(be, q.dlog->ptr, l, nv * sizeof *l, NULL, &err), KR_OK);
    int32_t t = 5;
    kr_status st = kr_gpu_sampler_sample(q.gpu, NULL, q.dlog->ptr, &t, &err);
    cr_assert_eq(st, KR_ERR_RANGE, "all -inf: %s", kr_err_msg(&err, st));
    cr_assert(strstr(err.msg, "-inf") != NULL, "%s", err.msg);
    cr_assert_eq(t, 5, "token written on error");
    /* reset: the same logits give the same sequence again */
    rand_logits(l, nv, 1.0f);
    int32_t first[6];
    for (int s = 0; s < 6; s++)
        first[s] = pair_step(&q, l, "before reset");
    cr_assert_eq(kr_gpu_sampler_reset(q.gpu, NULL, &err), KR_OK);
    kr_sampler_reset(q.cpu);
    for (int s = 0; s < 6; s++)
        cr_assert_eq(pair_step(&q, l, "after reset"), first[s], "step %d differs after reset", s);
    free(l);
    pair_close(&q);
    kr_backend_destroy(be);
}

/* The device-only loop (sample_async + accept_device, no host copy per step,
 * captured in a graph when the backend can) gives the host loop's tokens. */
Test(gpu_sampling, device_loop_equals_host_loop, .timeout = 120)
{
    kr_backend *be = gpu_open();
    kr_sampler_params p;
    kr_sampler_params_default(&p);
    p.repeat_penalty = 1.2f;
    p.frequency_penalty = 0.4f;
    p.repeat_last_n = 8;
    p.seed = kr_test_rng_u64();
    const int32_t nv = 20000;
    const int steps = 12;
    float *l = malloc(nv * sizeof *l);
    cr_assert_not_null(l);
    rand_logits(l, nv, 1.5f);
    pair q;
    pair_open(&q, be, &p, nv);
    int32_t host_tokens[12];
    for (int s = 0; s < steps; s++) {
        host_tokens[s] = pair_step(&q, l, "host loop");
        pair_accept(&q, host_tokens[s]);
    }
    kr_err err;
    kr_err_clear(&err);
    kr_buffer *dt = NULL;
    cr_assert_eq(kr_backend_alloc(be, steps * sizeof(int32_t), &dt, &err), KR_OK);
    cr_assert_eq(kr_gpu_sampler_reset(q.gpu, NULL, &err), KR_OK);
    for (int s = 0; s < steps; s++) {
        int32_t *d = (int32_t *)dt->ptr + s;
        cr_assert_eq(kr_gpu_sampler_sample_async(q.gpu, NULL, q.dlog->ptr, d, &err), KR_OK, "%s", err.msg);
        cr_assert_eq(kr_gpu_sampler_accept_device(q.gpu, NULL, d, &err), KR_OK, "%s", err.msg);
    }
    int32_t dev_tokens[12];
    cr_assert_eq(kr_backend_sync(be, NULL, &err), KR_OK);
    cr_assert_eq(kr_backend_d2h(be, dev_tokens, dt->ptr, sizeof dev_tokens, NULL, &err), KR_OK);
    for (int s = 0; s < steps; s++)
        cr_assert_eq(dev_tokens[s], host_tokens[s], "step %d: device loop %d, host loop %d", s, (int)dev_tokens[s],
                     (int)host_tokens[s]);
    kr_backend_free(be, dt);
    free(l);
    pair_close(&q);
    kr_backend_destroy(be);
}
