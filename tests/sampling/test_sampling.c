/* CPU sampler: Philox known answers, parameter validation, each stage's
 * distribution by a chi-square test, exact top-p sets, greedy limits and the
 * penalty arithmetic. Expected values come from the definitions (written out
 * here independently) or from published test vectors, never from the code
 * under test. */
#include <criterion/criterion.h>

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/sampling.h"
#include "kr_test_leaks.h"

#define N_DRAWS 100000

/* ---- Philox4x32-10 ---- */

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(philox, .fini = kr_test_leak_check);
TestSuite(sampling, .fini = kr_test_leak_check);
TestSuite(penalties, .fini = kr_test_leak_check);
TestSuite(validate, .fini = kr_test_leak_check);

/* Known-answer vectors published with Random123 (kat_vectors, philox4x32 R=10). */
Test(philox, random123_kat)
{
    static const struct {
        uint32_t ctr[4], key[2], out[4];
    } kat[] = {
        {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
        {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
         {0xffffffff, 0xffffffff},
         {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
        {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
         {0xa4093822, 0x299f31d0},
         {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
    };
    for (size_t i = 0; i < sizeof kat / sizeof kat[0]; i++) {
        uint32_t out[4];
        kr_philox4x32_10(kat[i].ctr, kat[i].key, out);
        for (int j = 0; j < 4; j++)
            cr_expect_eq(out[j], kat[i].out[j], "vector %zu word %d: got %08x want %08x", i, j, out[j],
                         kat[i].out[j]);
    }
}

/* Draw t uses word t%4 of block t/4 (cuRAND's curand_init(seed, 0, t) order). */
Test(philox, uniform_mapping)
{
    uint64_t seed = 0x0123456789abcdefull;
    uint32_t key[2] = {0x89abcdefu, 0x01234567u};
    for (uint64_t t = 0; t < 12; t++) {
        uint32_t ctr[4] = {(uint32_t)(t / 4), 0, 0, 0}, out[4];
        kr_philox4x32_10(ctr, key, out);
        /* x * 2^-32 + 2^-33, computed here in double then rounded. */
        double want = ((double)out[t % 4] + 0.5) / 4294967296.0;
        float u = kr_philox_uniform(seed, t);
        cr_expect(u > 0.0f && u <= 1.0f);
        cr_expect(fabs((double)u - want) <= 1e-7, "t=%llu u=%.9g want %.9g", (unsigned long long)t,
                  (double)u, want);
    }
    /* the block index spills into the second counter word */
    uint64_t t = (1ull << 34) + 5;
    uint32_t ctr[4] = {(uint32_t)(t / 4), (uint32_t)((t / 4) >> 32), 0, 0}, out[4];
    kr_philox4x32_10(ctr, key, out);
    cr_expect(fabs((double)kr_philox_uniform(seed, t) - ((double)out[1] + 0.5) / 4294967296.0) <= 1e-7);
}

/* cuRAND itself: curand_init(seed, 0, t, &st) with curandStatePhilox4_32_10_t,
 * then curand(&st) (raw) and, after a fresh init, curand_uniform(&st) (u).
 * Recorded on an NVIDIA H200 (CUDA 13) with tests/sampling/curand_philox_check.cu;
 * all 76 values of that run matched bit for bit. */
Test(philox, matches_curand)
{
    static const struct {
        uint64_t seed, t;
        uint32_t raw;
        float u;
    } ref[] = {
        {0ull, 0ull, 0x6627e8d5u, 0x1.989fa4p-2f},
        {0ull, 5ull, 0x5cb200dbu, 0x1.72c804p-2f},
        {0ull, 10ull, 0x241513adu, 0x1.20a89ep-3f},
        {0ull, 15ull, 0x6d413e04u, 0x1.b504f8p-2f},
        {0ull, 1000ull, 0x72e69c61u, 0x1.cb9a72p-2f},
        {0ull, 8589934592ull, 0xbf9c529bu, 0x1.7f38a6p-1f},
        {0ull, 17179869189ull, 0xe4c29d23u, 0x1.c9853ap-1f},
        {1234ull, 1ull, 0xda7cf0abu, 0x1.b4f9e2p-1f},
        {1234ull, 6ull, 0xfa277093u, 0x1.f44ee2p-1f},
        {1234ull, 11ull, 0x891d3b11u, 0x1.123a76p-1f},
        {1234ull, 1000ull, 0x1d2f0134u, 0x1.d2f014p-4f},
        {1234ull, 8589934592ull, 0x8f572baeu, 0x1.1eae58p-1f},
        {1234ull, 17179869189ull, 0xc78135dfu, 0x1.8f026cp-1f},
        {81985529216486895ull, 2ull, 0x14a7a020u, 0x1.4a7a02p-4f},
        {81985529216486895ull, 7ull, 0xb299da3fu, 0x1.6533b4p-1f},
        {81985529216486895ull, 12ull, 0xac3078f0u, 0x1.5860f2p-1f},
        {81985529216486895ull, 1000ull, 0xa035051du, 0x1.406a0ap-1f},
        {81985529216486895ull, 8589934592ull, 0xf88bcdabu, 0x1.f1179cp-1f},
        {81985529216486895ull, 17179869189ull, 0x5fe720cbu, 0x1.7f9c84p-2f},
        {18446744073709551615ull, 3ull, 0x22799a5au, 0x1.13ccd2p-3f},
        {18446744073709551615ull, 8ull, 0x17625282u, 0x1.762528p-4f},
        {18446744073709551615ull, 13ull, 0xae51ee73u, 0x1.5ca3dcp-1f},
        {18446744073709551615ull, 1000ull, 0x4d4105feu, 0x1.350418p-2f},
        {18446744073709551615ull, 8589934592ull, 0xbf47d986u, 0x1.7e8fb4p-1f},
        {18446744073709551615ull, 17179869189ull, 0xbb70a852u, 0x1.76e15p-1f},
    };
    for (size_t i = 0; i < sizeof ref / sizeof ref[0]; i++) {
        uint64_t blk = ref[i].t / 4;
        uint32_t ctr[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), 0, 0};
        uint32_t key[2] = {(uint32_t)ref[i].seed, (uint32_t)(ref[i].seed >> 32)}, out[4];
        kr_philox4x32_10(ctr, key, out);
        cr_expect_eq(out[ref[i].t % 4], ref[i].raw, "seed %llu t %llu", (unsigned long long)ref[i].seed,
                     (unsigned long long)ref[i].t);
        float u = kr_philox_uniform(ref[i].seed, ref[i].t);
        cr_expect(u == ref[i].u, "seed %llu t %llu: u %a, cuRAND %a", (unsigned long long)ref[i].seed,
                  (unsigned long long)ref[i].t, (double)u, (double)ref[i].u);
    }
}

/* ---- helpers ---- */

static kr_sampler *mk(const kr_sampler_params *p, int32_t n_vocab)
{
    kr_sampler *s = NULL;
    kr_err e;
    kr_err_clear(&e);
    kr_status st = kr_sampler_create(p, n_vocab, &s, &e);
    cr_assert_eq(st, KR_OK, "create: %s", e.msg);
    return s;
}

/* Everything off: plain softmax sampling at temperature 1. */
static kr_sampler_params plain(uint64_t seed)
{
    kr_sampler_params p;
    kr_sampler_params_default(&p);
    p.temperature = 1.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.repeat_penalty = 1.0f;
    p.seed = seed;
    return p;
}

/* chi-square quantile at 0.999 (tables for small df, Wilson-Hilferty above). */
static double chi2_q999(int df)
{
    static const double tab[] = {0, 10.828, 13.816, 16.266, 18.467, 20.515, 22.458, 24.322, 26.124, 27.877, 29.588};
    if (df >= 1 && df <= 10)
        return tab[df];
    double z = 3.0902, a = 2.0 / (9.0 * df);
    double c = 1.0 - a + z * sqrt(a);
    return df * c * c * c;
}

/* Draw N_DRAWS tokens from logits with s; compare the histogram against the
 * expected probabilities (zero = must never be drawn). */
static void check_distribution(kr_sampler *s, const float *logits, int32_t n, const double *expect, const char *what)
{
    long *obs = calloc((size_t)n, sizeof *obs);
    cr_assert_not_null(obs);
    for (int i = 0; i < N_DRAWS; i++) {
        int32_t tok = -1;
        kr_err e;
        kr_err_clear(&e);
        cr_assert_eq(kr_sampler_sample(s, logits, &tok, &e), KR_OK, "%s: %s", what, e.msg);
        cr_assert(tok >= 0 && tok < n);
        obs[tok]++;
    }
    double chi2 = 0.0;
    int support = 0;
    for (int32_t i = 0; i < n; i++) {
        if (expect[i] == 0.0) {
            cr_expect_eq(obs[i], 0, "%s: token %d must not be drawn (drawn %ld times)", what, (int)i, obs[i]);
            continue;
        }
        double e = expect[i] * N_DRAWS;
        chi2 += (obs[i] - e) * (obs[i] - e) / e;
        support++;
    }
    if (support > 1) {
        double q = chi2_q999(support - 1);
        cr_expect(chi2 < q, "%s: chi2 = %.2f >= %.2f (df %d)", what, chi2, q, support - 1);
    }
    free(obs);
}

/* 8 tokens, ids deliberately not in probability order. */
static const double W8[8] = {0.06, 0.25, 0.02, 0.40, 0.10, 0.15, 0.01, 0.01};

static void logits_from(const double *w, int n, float *out)
{
    for (int i = 0; i < n; i++)
        out[i] = (float)log(w[i]) + 3.0f; /* a shift must not matter */
}

static void normalize(double *w, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += w[i];
    for (int i = 0; i < n; i++)
        w[i] /= s;
}

/* ---- distributions after each stage ---- */

Test(sampling, plain_softmax)
{
    float l[8];
    logits_from(W8, 8, l);
    kr_sampler_params p = plain(1);
    kr_sampler *s = mk(&p, 8);
    double ex[8];
    memcpy(ex, W8, sizeof ex);
    normalize(ex, 8);
    check_distribution(s, l, 8, ex, "plain");
    kr_sampler_free(s);
}

Test(sampling, temperature)
{
    float l[8];
    logits_from(W8, 8, l);
    kr_sampler_params p = plain(2);
    p.temperature = 0.5f; /* p_i ∝ w_i^(1/T) = w_i^2 */
    kr_sampler *s = mk(&p, 8);
    double ex[8];
    for (int i = 0; i < 8; i++)
        ex[i] = W8[i] * W8[i];
    normalize(ex, 8);
    check_distribution(s, l, 8, ex, "temperature 0.5");
    kr_sampler_free(s);
}

Test(sampling, top_k)
{
    float l[8];
    logits_from(W8, 8, l);
    kr_sampler_params p = plain(3);
    p.top_k = 3; /* keeps ids 3 (0.40), 1 (0.25), 5 (0.15) */
    kr_sampler *s = mk(&p, 8);
    double ex[8] = {0};
    ex[3] = 0.40, ex[1] = 0.25, ex[5] = 0.15;
    normalize(ex, 8);
    check_distribution(s, l, 8, ex, "top-k 3");
    kr_sampler_free(s);
}

Test(sampling, top_p)
{
    float l[8];
    logits_from(W8, 8, l);
    kr_sampler_params p = plain(4);
    /* sorted masses: .40 .65 .80 .90 .96 ... ; smallest prefix >= .85 is 4 tokens */
    p.top_p = 0.85f;
    kr_sampler *s = mk(&p, 8);
    double ex[8] = {0};
    ex[3] = 0.40, ex[1] = 0.25, ex[5] = 0.15, ex[4] = 0.10;
    normalize(ex, 8);
    check_distribution(s, l, 8, ex, "top-p 0.85");
    kr_sampler_free(s);
}

Test(sampling, min_p)
{
    float l[8];
    logits_from(W8, 8, l);
    kr_sampler_params p = plain(5);
    p.min_p = 0.2f; /* keep p >= 0.08: ids 3, 1, 5, 4 */
    kr_sampler *s = mk(&p, 8);
    double ex[8] = {0};
    ex[3] = 0.40, ex[1] = 0.25, ex[5] = 0.15, ex[4] = 0.10;
    normalize(ex, 8);
    check_distribution(s, l, 8, ex, "min-p 0.2");
    kr_sampler_free(s);
}

Test(sampling, repetition_penalty)
{
    /* logits: ln(w)+3 is positive for all here except ids 2, 6, 7 (ln .02 + 3 < 0 ...) */
    float l[8];
    logits_from(W8, 8, l);
    kr_sampler_params p = plain(6);
    p.repeat_penalty = 1.5f;
    p.repeat_last_n = 4;
    kr_sampler *s = mk(&p, 8);
    /* history 3 3 6 1 0 -> window of 4 keeps 3 6 1 0 */
    int32_t hist[] = {3, 3, 6, 1, 0};
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(kr_sampler_accept(s, hist[i], NULL), KR_OK);
    double ex[8];
    for (int i = 0; i < 8; i++) {
        double x = log(W8[i]) + 3.0;
        if (i == 3 || i == 6 || i == 1 || i == 0)
            x = x > 0 ? x / 1.5 : x * 1.5;
        ex[i] = exp(x);
    }
    normalize(ex, 8);
    check_distribution(s, l, 8, ex, "repeat penalty");
    kr_sampler_free(s);
}

Test(sampling, presence_frequency_and_bias)
{
    float l[8];
    logits_from(W8, 8, l);
    kr_logit_bias b[] = {{.token = 2, .bias = 2.0f}, {.token = 3, .bias = -INFINITY}};
    kr_sampler_params p = plain(7);
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    p.repeat_last_n = 8;
    p.logit_bias = b;
    p.n_logit_bias = 2;
    kr_sampler *s = mk(&p, 8);
    int32_t hist[] = {1, 1, 1, 5};
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(kr_sampler_accept(s, hist[i], NULL), KR_OK);
    double ex[8];
    for (int i = 0; i < 8; i++) {
        double x = log(W8[i]) + 3.0;
        if (i == 1)
            x -= 3 * 0.25 + 0.5;
        if (i == 5)
            x -= 1 * 0.25 + 0.5;
        if (i == 2)
            x += 2.0;
        ex[i] = i == 3 ? 0.0 : exp(x);
    }
    normalize(ex, 8);
    check_distribution(s, l, 8, ex, "presence/frequency/bias");
    kr_sampler_free(s);
}

Test(sampling, all_stages_chained)
{
    float l[8];
    logits_from(W8, 8, l);
    kr_sampler_params p = plain(8);
    p.top_k = 5;          /* ids 3 1 5 4 0 (0.96 of the mass) */
    p.top_p = 0.7f;       /* renormalised: .417 .677 .833 -> keep 3 1 5 */
    p.min_p = 0.45f;      /* >= .45*.40 = .18: keep 3 1 */
    p.temperature = 2.0f; /* p ∝ sqrt(w) */
    kr_sampler *s = mk(&p, 8);
    double ex[8] = {0};
    ex[3] = sqrt(0.40), ex[1] = sqrt(0.25);
    normalize(ex, 8);
    check_distribution(s, l, 8, ex, "chain");
    kr_sampler_free(s);
}

/* ---- exact sets on a large vocabulary ---- */

static uint64_t lcg(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return *x >> 11;
}

static float *random_logits(int32_t n, uint64_t seed)
{
    float *l = malloc((size_t)n * sizeof *l);
    cr_assert_not_null(l);
    uint64_t x = seed;
    for (int32_t i = 0; i < n; i++)
        l[i] = (float)((double)lcg(&x) / 9007199254740992.0 * 8.0 - 4.0);
    return l;
}

static const float *g_sort_logits;
static int cmp_desc(const void *a, const void *b)
{
    int32_t i = *(const int32_t *)a, j = *(const int32_t *)b;
    float x = g_sort_logits[i], y = g_sort_logits[j];
    if (x != y)
        return x > y ? -1 : 1;
    return (i > j) - (i < j);
}

static int32_t *order_desc(const float *l, int32_t n)
{
    int32_t *ord = malloc((size_t)n * sizeof *ord);
    cr_assert_not_null(ord);
    for (int32_t i = 0; i < n; i++)
        ord[i] = i;
    g_sort_logits = l;
    qsort(ord, (size_t)n, sizeof *ord, cmp_desc);
    return ord;
}

/* Draw many times at a high temperature (near uniform over the kept set):
 * every kept token must appear, no other may. */
static void check_support(kr_sampler *s, const float *l, int32_t n, const unsigned char *keep, int draws,
                          const char *what)
{
    unsigned char *seen = calloc((size_t)n, 1);
    cr_assert_not_null(seen);
    for (int i = 0; i < draws; i++) {
        int32_t tok;
        cr_assert_eq(kr_sampler_sample(s, l, &tok, NULL), KR_OK);
        cr_assert(keep[tok], "%s: drew token %d outside the kept set", what, (int)tok);
        seen[tok] = 1;
    }
    for (int32_t i = 0; i < n; i++)
        cr_expect(!keep[i] || seen[i], "%s: kept token %d never drawn", what, (int)i);
    free(seen);
}

Test(sampling, top_p_minimal_set_large_vocab)
{
    const int32_t n = 5000;
    float *l = random_logits(n, 42);
    int32_t *ord = order_desc(l, n);
    const float top_p = 0.5f;
    double total = 0, cum = 0;
    for (int32_t i = 0; i < n; i++)
        total += exp((double)l[i]);
    unsigned char *keep = calloc((size_t)n, 1);
    cr_assert_not_null(keep);
    int32_t m = 0;
    while (cum < top_p * total) {
        cum += exp((double)l[ord[m]]);
        keep[ord[m]] = 1;
        m++;
    }
    /* minimal: without the last kept token the mass is short of p */
    cr_assert(cum - exp((double)l[ord[m - 1]]) < top_p * total);
    cr_assert(m > 256, "want a set spanning many logit buckets (m = %d)", (int)m);
    kr_sampler_params p = plain(9);
    p.top_p = top_p;
    p.temperature = 1000.0f;
    kr_sampler *s = mk(&p, n);
    check_support(s, l, n, keep, 30 * m, "top-p large"); /* ~30 draws per kept token */
    kr_sampler_free(s);
    free(keep);
    free(ord);
    free(l);
}

Test(sampling, top_k_large_vocab)
{
    const int32_t n = 256000, k = 40;
    float *l = random_logits(n, 7);
    int32_t *ord = order_desc(l, n);
    unsigned char *keep = calloc((size_t)n, 1);
    cr_assert_not_null(keep);
    for (int32_t i = 0; i < k; i++)
        keep[ord[i]] = 1;
    kr_sampler_params p = plain(10);
    p.top_k = k;
    p.temperature = 1000.0f;
    kr_sampler *s = mk(&p, n);
    unsigned char *seen = calloc((size_t)n, 1);
    cr_assert_not_null(seen);
    for (int i = 0; i < 600; i++) {
        int32_t tok;
        cr_assert_eq(kr_sampler_sample(s, l, &tok, NULL), KR_OK);
        cr_assert(keep[tok], "drew token %d outside the top %d", (int)tok, (int)k);
        seen[tok] = 1;
    }
    for (int32_t i = 0; i < k; i++)
        cr_expect(seen[ord[i]], "top-%d token %d never drawn", (int)k, (int)ord[i]);
    kr_sampler_free(s);
    free(seen);
    free(keep);
    free(ord);
    free(l);
}

Test(sampling, top_p_ties_rank_by_id)
{
    /* 10 equal logits: rank order is id order, so top-p 0.5 keeps ids 0-4 */
    float l[10];
    for (int i = 0; i < 10; i++)
        l[i] = 1.5f;
    kr_sampler_params p = plain(11);
    p.top_p = 0.5f;
    kr_sampler *s = mk(&p, 10);
    double ex[10] = {0.2, 0.2, 0.2, 0.2, 0.2, 0, 0, 0, 0, 0};
    check_distribution(s, l, 10, ex, "top-p ties");
    kr_sampler_free(s);

    /* two levels: 3 tokens at logit 2, 7 at 0; mass of the top 3 is
     * 3e^2 / (3e^2 + 7) = 0.76 >= 0.7 -> exactly ids {1, 4, 8} */
    float m[10] = {0, 2, 0, 0, 2, 0, 0, 0, 2, 0};
    p.top_p = 0.7f;
    s = mk(&p, 10);
    double ex2[10] = {0, 1.0 / 3, 0, 0, 1.0 / 3, 0, 0, 0, 1.0 / 3, 0};
    check_distribution(s, m, 10, ex2, "top-p two levels");
    kr_sampler_free(s);
}

/* ---- greedy ---- */

Test(sampling, temperature_to_zero_is_greedy)
{
    const int32_t n = 1000;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        float *l = random_logits(n, seed * 31);
        int32_t am = 0;
        for (int32_t i = 1; i < n; i++)
            if (l[i] > l[am])
                am = i;
        float gap = INFINITY; /* to the runner-up */
        for (int32_t i = 0; i < n; i++)
            if (i != am && l[am] - l[i] < gap)
                gap = l[am] - l[i];
        cr_assert(gap > 0.0f);
        kr_sampler_params p = plain(seed);
        p.temperature = gap / 100.0f; /* runner-up weight e^-100 relative */
        kr_sampler *s = mk(&p, n);
        for (int r = 0; r < 50; r++) {
            int32_t tok;
            cr_assert_eq(kr_sampler_sample(s, l, &tok, NULL), KR_OK);
            cr_expect_eq(tok, am, "seed %llu: temp -> 0 drew %d, argmax %d", (unsigned long long)seed, (int)tok,
                         (int)am);
        }
        kr_sampler_free(s);
        p.temperature = 0.0f;
        s = mk(&p, n);
        int32_t tok;
        cr_assert_eq(kr_sampler_sample(s, l, &tok, NULL), KR_OK);
        cr_expect_eq(tok, am);
        cr_expect_eq(kr_sampler_draws(s), 0, "greedy consumes no random numbers");
        kr_sampler_free(s);
        free(l);
    }
}

Test(sampling, greedy_flag_ties_and_nonfinite)
{
    float l[6] = {1.0f, NAN, 5.0f, 5.0f, -INFINITY, 2.0f};
    kr_sampler_params p = plain(1);
    p.greedy = true;
    kr_sampler *s = mk(&p, 6);
    int32_t tok;
    cr_assert_eq(kr_sampler_sample(s, l, &tok, NULL), KR_OK);
    cr_expect_eq(tok, 2, "tie goes to the lower id");
    l[4] = INFINITY;
    cr_assert_eq(kr_sampler_sample(s, l, &tok, NULL), KR_OK);
    cr_expect_eq(tok, 4);
    kr_sampler_free(s);

    /* sampling never picks NaN / -inf tokens */
    float m[4] = {NAN, 0.0f, -INFINITY, 0.0f};
    p = plain(3);
    s = mk(&p, 4);
    double ex[4] = {0, 0.5, 0, 0.5};
    check_distribution(s, m, 4, ex, "non-finite");
    kr_sampler_free(s);

    float all[3] = {-INFINITY, NAN, -INFINITY};
    s = mk(&p, 3);
    kr_err e;
    kr_err_clear(&e);
    cr_expect_eq(kr_sampler_sample(s, all, &tok, &e), KR_ERR_RANGE);
    cr_expect(strstr(e.msg, "-inf") != NULL, "%s", e.msg);
    kr_sampler_free(s);
}

/* ---- penalties: exactly the right tokens, exactly the formula ---- */

Test(penalties, exact_tokens)
{
    const int32_t n = 100;
    float l[100], out[100];
    for (int i = 0; i < n; i++)
        l[i] = (float)(i - 50) * 0.25f; /* negative, zero and positive logits */
    kr_sampler_params p = plain(1);
    p.repeat_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.125f;
    p.repeat_last_n = 5;
    kr_sampler *s = mk(&p, n);
    /* window of 5 keeps the last five: 10 50 60 60 60 (7 and 99 slide out) */
    int32_t hist[] = {7, 99, 10, 50, 60, 60, 60};
    for (size_t i = 0; i < sizeof hist / sizeof hist[0]; i++)
        cr_assert_eq(kr_sampler_accept(s, hist[i], NULL), KR_OK);
    cr_assert_eq(kr_sampler_adjust_logits(s, l, out, NULL), KR_OK);
    for (int i = 0; i < n; i++) {
        int c = (i == 10) + (i == 50) + 3 * (i == 60);
        float want = l[i];
        if (c > 0) {
            want = want <= 0.0f ? want * 2.0f : want / 2.0f;
            want -= (float)c * 0.125f + 0.5f;
        }
        cr_expect_eq(out[i], want, "token %d: got %g want %g", i, (double)out[i], (double)want);
    }
    /* l[10] = -10 -> -20 - .625; l[50] = 0 -> 0 - .625; l[60] = 2.5 -> 1.25 - .875 */
    cr_expect_eq(out[10], -20.625f);
    cr_expect_eq(out[50], -0.625f);
    cr_expect_eq(out[60], 0.375f);
    cr_expect_eq(out[7], l[7]);
    cr_expect_eq(out[99], l[99]);

    /* reset forgets the history */
    kr_sampler_reset(s);
    cr_assert_eq(kr_sampler_adjust_logits(s, l, out, NULL), KR_OK);
    cr_expect(memcmp(out, l, sizeof l) == 0);
    kr_sampler_free(s);
}

Test(penalties, accept_rejects_bad_ids)
{
    kr_sampler_params p = plain(1);
    kr_sampler *s = mk(&p, 10);
    kr_err e;
    kr_err_clear(&e);
    cr_expect_eq(kr_sampler_accept(s, 10, &e), KR_ERR_RANGE);
    cr_expect_eq(kr_sampler_accept(s, -1, &e), KR_ERR_RANGE);
    cr_expect(strstr(e.msg, "-1") != NULL, "%s", e.msg);
    kr_sampler_free(s);
}

/* ---- reproducibility ---- */

Test(sampling, seeds)
{
    const int32_t n = 2000;
    float *l = random_logits(n, 5);
    int32_t a[64], b[64], c[64];
    kr_sampler_params p;
    kr_sampler_params_default(&p);
    p.top_k = 0;
    p.temperature = 1.5f;
    p.min_p = 0.0f;
    int32_t *runs[3] = {a, b, c};
    uint64_t seeds[3] = {1234, 1234, 1235};
    for (int r = 0; r < 3; r++) {
        p.seed = seeds[r];
        kr_sampler *s = mk(&p, n);
        for (int i = 0; i < 64; i++)
            cr_assert_eq(kr_sampler_sample(s, l, &runs[r][i], NULL), KR_OK);
        cr_expect_eq(kr_sampler_draws(s), 64);
        kr_sampler_free(s);
    }
    cr_expect(memcmp(a, b, sizeof a) == 0, "same seed, same tokens");
    cr_expect(memcmp(a, c, sizeof a) != 0, "different seed, different tokens");
    free(l);
}

/* ---- validation ---- */

static void expect_reject(kr_sampler_params p, const char *name)
{
    kr_err e;
    kr_err_clear(&e);
    kr_sampler *s = (kr_sampler *)&e; /* must be overwritten with NULL */
    kr_status st = kr_sampler_create(&p, 10, &s, &e);
    cr_expect_neq(st, KR_OK, "%s accepted", name);
    cr_expect_null(s);
    cr_expect(strstr(e.msg, name) != NULL, "message '%s' should name %s", e.msg, name);
}

Test(validate, rejects_bad_values)
{
    kr_sampler_params p = plain(0);
    p.temperature = -0.1f;
    expect_reject(p, "temperature");
    p = plain(0), p.temperature = NAN;
    expect_reject(p, "temperature");
    p = plain(0), p.top_p = 0.0f;
    expect_reject(p, "top_p");
    p = plain(0), p.top_p = 1.5f;
    expect_reject(p, "top_p");
    p = plain(0), p.top_p = NAN;
    expect_reject(p, "top_p");
    p = plain(0), p.min_p = -0.1f;
    expect_reject(p, "min_p");
    p = plain(0), p.min_p = 1.1f;
    expect_reject(p, "min_p");
    p = plain(0), p.top_k = -1;
    expect_reject(p, "top_k");
    p = plain(0), p.repeat_penalty = 0.0f;
    expect_reject(p, "repeat_penalty");
    p = plain(0), p.repeat_penalty = INFINITY;
    expect_reject(p, "repeat_penalty");
    p = plain(0), p.repeat_last_n = -1;
    expect_reject(p, "repeat_last_n");
    p = plain(0), p.presence_penalty = NAN;
    expect_reject(p, "presence_penalty");
    p = plain(0), p.frequency_penalty = INFINITY;
    expect_reject(p, "frequency_penalty");
    kr_logit_bias b = {.token = 10, .bias = 1.0f};
    p = plain(0), p.logit_bias = &b, p.n_logit_bias = 1;
    expect_reject(p, "logit_bias");
    b.token = 3, b.bias = NAN;
    expect_reject(p, "logit_bias");
}

Test(validate, accepts_edges)
{
    kr_sampler_params p = plain(0);
    p.temperature = 0.0f;
    p.top_p = 1.0f;
    p.min_p = 1.0f;
    p.repeat_last_n = 0;
    cr_expect_eq(kr_sampler_params_validate(&p, 10, NULL), KR_OK);
    kr_sampler_params_default(&p);
    cr_expect_eq(kr_sampler_params_validate(&p, 10, NULL), KR_OK);
    cr_expect_neq(kr_sampler_params_validate(&p, 0, NULL), KR_OK);
}
