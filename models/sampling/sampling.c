/* CPU token sampler: see kernrun/sampling.h for the stage order and the
 * random-number mapping. */
#include "kernrun/sampling.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/checked.h"

/* ---- Philox4x32-10 (Salmon et al., SC'11; constants from the paper) ---- */

#define KR__PHILOX_M0 0xD2511F53u
#define KR__PHILOX_M1 0xCD9E8D57u
#define KR__PHILOX_W0 0x9E3779B9u /* golden ratio */
#define KR__PHILOX_W1 0xBB67AE85u /* sqrt(3) - 1 */

static void kr__philox_round(uint32_t c[4], const uint32_t k[2])
{
    uint64_t p0 = (uint64_t)KR__PHILOX_M0 * c[0];
    uint64_t p1 = (uint64_t)KR__PHILOX_M1 * c[2];
    uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    uint32_t n0 = hi1 ^ c[1] ^ k[0];
    uint32_t n2 = hi0 ^ c[3] ^ k[1];
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
}

void kr_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c[4] = {ctr[0], ctr[1], ctr[2], ctr[3]};
    uint32_t k[2] = {key[0], key[1]};
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k[0] += KR__PHILOX_W0;
            k[1] += KR__PHILOX_W1;
        }
        kr__philox_round(c, k);
    }
    memcpy(out, c, sizeof c);
}

float kr_philox_uniform(uint64_t seed, uint64_t t)
{
    uint64_t blk = t / 4;
    uint32_t ctr[4] = {(uint32_t)blk, (uint32_t)(blk >> 32), 0, 0};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    uint32_t out[4];
    kr_philox4x32_10(ctr, key, out);
    /* cuRAND's _curand_uniform: x * 2^-32 + 2^-33, in float arithmetic. */
    const float inv = 2.3283064e-10f; /* CURAND_2POW32_INV */
    float x = (float)out[t % 4];
    float u = x * inv;
    return u + inv / 2.0f;
}

/* ---- sampler ---- */

typedef struct kr__cand {
    float logit;  /* after penalties/bias (then divided by temperature) */
    int32_t id;   /* token id */
} kr__cand;

struct kr_sampler {
    kr_sampler_params p;     /* validated copy; p.logit_bias points at bias */
    kr_logit_bias *bias;     /* (n_logit_bias,) owned copy */
    int32_t n_vocab;
    int32_t *hist;           /* (repeat_last_n,) ring of accepted tokens */
    int32_t hist_n;          /* valid entries in hist */
    int32_t hist_pos;        /* next write position */
    int32_t *counts;         /* (n_vocab,) scratch occurrence counts, all 0 between calls */
    float *cur;              /* (n_vocab,) working logits */
    kr__cand *cand;          /* (n_vocab,) candidate list */
    uint64_t draws;          /* random draws made since create/reset */
};

void kr_sampler_params_default(kr_sampler_params *p)
{
    memset(p, 0, sizeof *p);
    p->temperature = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
    p->seed = 0;
    p->greedy = false;
}

kr_status kr_sampler_params_validate(const kr_sampler_params *p, int32_t n_vocab, kr_err *err)
{
    if (!p)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "sampler parameters: NULL");
    if (n_vocab <= 0)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "sampler: n_vocab = %d: must be > 0", (int)n_vocab);
    if (!isfinite(p->temperature) || p->temperature < 0.0f)
        return kr_err_set(err, KR_ERR_RANGE, "temperature = %g: must be finite and >= 0 (0 = greedy)",
                          (double)p->temperature);
    if (p->top_k < 0)
        return kr_err_set(err, KR_ERR_RANGE, "top_k = %d: must be >= 0 (0 = off)", (int)p->top_k);
    if (!(p->top_p > 0.0f && p->top_p <= 1.0f))
        return kr_err_set(err, KR_ERR_RANGE, "top_p = %g: must be in (0, 1] (1 = off)", (double)p->top_p);
    if (!(p->min_p >= 0.0f && p->min_p <= 1.0f))
        return kr_err_set(err, KR_ERR_RANGE, "min_p = %g: must be in [0, 1] (0 = off)", (double)p->min_p);
    if (!isfinite(p->repeat_penalty) || p->repeat_penalty <= 0.0f)
        return kr_err_set(err, KR_ERR_RANGE, "repeat_penalty = %g: must be finite and > 0 (1 = off)",
                          (double)p->repeat_penalty);
    if (p->repeat_last_n < 0)
        return kr_err_set(err, KR_ERR_RANGE, "repeat_last_n = %d: must be >= 0", (int)p->repeat_last_n);
    if (!isfinite(p->presence_penalty))
        return kr_err_set(err, KR_ERR_RANGE, "presence_penalty = %g: must be finite", (double)p->presence_penalty);
    if (!isfinite(p->frequency_penalty))
        return kr_err_set(err, KR_ERR_RANGE, "frequency_penalty = %g: must be finite",
                          (double)p->frequency_penalty);
    if (p->n_logit_bias > 0 && !p->logit_bias)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "logit_bias: %zu entries but NULL array", p->n_logit_bias);
    for (size_t i = 0; i < p->n_logit_bias; i++) {
        const kr_logit_bias *b = &p->logit_bias[i];
        if (b->token < 0 || b->token >= n_vocab)
            return kr_err_set(err, KR_ERR_RANGE, "logit_bias[%zu]: token %d outside [0, %d)", i,
                              (int)b->token, (int)n_vocab);
        if (isnan(b->bias) || b->bias == INFINITY)
            return kr_err_set(err, KR_ERR_RANGE, "logit_bias[%zu] (token %d): bias %g: must be a number or -inf",
                              i, (int)b->token, (double)b->bias);
    }
    return KR_OK;
}

kr_status kr_sampler_create(const kr_sampler_params *p, int32_t n_vocab, kr_sampler **out, kr_err *err)
{
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "sampler: NULL output");
    *out = NULL;
    kr_status st = kr_sampler_params_validate(p, n_vocab, err);
    if (st != KR_OK)
        return st;

    kr_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return kr_err_set(err, KR_ERR_NOMEM, "sampler: out of memory");
    s->p = *p;
    s->n_vocab = n_vocab;
    size_t nv = (size_t)n_vocab;
    s->counts = calloc(nv, sizeof *s->counts);
    s->cur = malloc(nv * sizeof *s->cur);
    s->cand = malloc(nv * sizeof *s->cand);
    if (!s->counts || !s->cur || !s->cand)
        goto err_free;
    if (p->repeat_last_n > 0) {
        s->hist = malloc((size_t)p->repeat_last_n * sizeof *s->hist);
        if (!s->hist)
            goto err_free;
    }
    if (p->n_logit_bias > 0) {
        size_t bytes;
        if (kr_mul_overflow_size(p->n_logit_bias, sizeof *s->bias, &bytes)) {
            kr_sampler_free(s);
            return kr_err_set(err, KR_ERR_OVERFLOW, "logit_bias: %zu entries overflow", p->n_logit_bias);
        }
        s->bias = malloc(bytes);
        if (!s->bias)
            goto err_free;
        memcpy(s->bias, p->logit_bias, bytes);
    }
    s->p.logit_bias = s->bias;
    *out = s;
    return KR_OK;

err_free:
    kr_sampler_free(s);
    return kr_err_set(err, KR_ERR_NOMEM, "sampler: out of memory for n_vocab = %d", (int)n_vocab);
}

void kr_sampler_free(kr_sampler *s)
{
    if (!s)
        return;
    free(s->bias);
    free(s->hist);
    free(s->counts);
    free(s->cur);
    free(s->cand);
    free(s);
}

void kr_sampler_reset(kr_sampler *s)
{
    if (!s)
        return;
    s->hist_n = 0;
    s->hist_pos = 0;
    s->draws = 0;
}

uint64_t kr_sampler_draws(const kr_sampler *s) { return s ? s->draws : 0; }

kr_status kr_sampler_accept(kr_sampler *s, int32_t token, kr_err *err)
{
    if (!s)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "sampler: NULL handle");
    if (token < 0 || token >= s->n_vocab)
        return kr_err_set(err, KR_ERR_RANGE, "sampler: accepted token %d outside [0, %d)", (int)token,
                          (int)s->n_vocab);
    int32_t cap = s->p.repeat_last_n;
    if (cap == 0)
        return KR_OK;
    s->hist[s->hist_pos] = token;
    s->hist_pos = (s->hist_pos + 1) % cap;
    if (s->hist_n < cap)
        s->hist_n++;
    return KR_OK;
}

/* Stages 1-2: every distinct token of the window is touched exactly once. */
static void kr__apply_penalties(kr_sampler *s)
{
    const kr_sampler_params *p = &s->p;
    if (s->hist_n == 0)
        return;
    if (p->repeat_penalty == 1.0f && p->presence_penalty == 0.0f && p->frequency_penalty == 0.0f)
        return;
    for (int32_t i = 0; i < s->hist_n; i++)
        s->counts[s->hist[i]]++;
    for (int32_t i = 0; i < s->hist_n; i++) {
        int32_t id = s->hist[i];
        int32_t c = s->counts[id];
        if (c == 0)
            continue; /* already applied */
        float l = s->cur[id];
        if (l <= 0.0f)
            l *= p->repeat_penalty;
        else
            l /= p->repeat_penalty;
        l -= (float)c * p->frequency_penalty + p->presence_penalty;
        s->cur[id] = l;
        s->counts[id] = 0;
    }
}

static float kr__sanitize(float x)
{
    if (isnan(x))
        return -INFINITY;
    if (x == INFINITY)
        return FLT_MAX;
    return x;
}

/* Stages 1-3 into s->cur. */
static void kr__adjust(kr_sampler *s, const float *logits)
{
    const kr_sampler_params *p = &s->p;
    size_t nv = (size_t)s->n_vocab;
    for (size_t i = 0; i < nv; i++)
        s->cur[i] = kr__sanitize(logits[i]);
    kr__apply_penalties(s);
    for (size_t i = 0; i < p->n_logit_bias; i++)
        s->cur[p->logit_bias[i].token] += p->logit_bias[i].bias;
    for (size_t i = 0; i < nv; i++) /* a penalty or bias may overflow to +inf */
        if (s->cur[i] == INFINITY)
            s->cur[i] = FLT_MAX;
}

kr_status kr_sampler_adjust_logits(kr_sampler *s, const float *logits, float *out, kr_err *err)
{
    if (!s || !logits || !out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "sampler: NULL argument");
    kr__adjust(s, logits);
    memcpy(out, s->cur, (size_t)s->n_vocab * sizeof *out);
    return KR_OK;
}

/* a ranks before b: larger logit, then lower id. */
static bool kr__before(const kr__cand *a, const kr__cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int kr__cmp_rank(const void *pa, const void *pb)
{
    const kr__cand *a = pa, *b = pb;
    if (kr__before(a, b))
        return -1;
    if (kr__before(b, a))
        return 1;
    return 0;
}

static int kr__cmp_id(const void *pa, const void *pb)
{
    const kr__cand *a = pa, *b = pb;
    return (a->id > b->id) - (a->id < b->id);
}

/* Min-heap on rank (root = worst kept). */
static void kr__heap_down(kr__cand *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && kr__before(&h[w], &h[l]))
            w = l;
        if (r < n && kr__before(&h[w], &h[r]))
            w = r;
        if (w == i)
            return;
        kr__cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

/* Move the k best of c[0..n) to c[0..k), sorted best first. O(n log k). */
static void kr__select_top(kr__cand *c, size_t n, size_t k)
{
    if (k >= n) {
        qsort(c, n, sizeof *c, kr__cmp_rank);
        return;
    }
    for (size_t i = k / 2; i-- > 0;)
        kr__heap_down(c, k, i);
    for (size_t i = k; i < n; i++) {
        if (kr__before(&c[i], &c[0])) {
            kr__cand t = c[0];
            c[0] = c[i];
            c[i] = t;
            kr__heap_down(c, k, 0);
        }
    }
    qsort(c, k, sizeof *c, kr__cmp_rank);
}

/* Top-p on a rank-sorted list: the smallest prefix with mass >= need. */
static size_t kr__top_p_sorted(const kr__cand *c, size_t n, float maxl, double need)
{
    double cum = 0.0;
    size_t m = 0;
    while (m < n) {
        cum += exp((double)c[m].logit - (double)maxl);
        m++;
        if (cum >= need)
            break;
    }
    return m ? m : 1;
}

#define KR__TOPP_BUCKETS 256

/* Bucket of a logit: 0 holds the largest. Monotone in the logit, so every
 * token of a lower bucket ranks before every token of a higher one. */
static size_t kr__bucket(float l, float maxl, double scale)
{
    double b = ((double)maxl - (double)l) * scale;
    return b >= KR__TOPP_BUCKETS - 1 ? KR__TOPP_BUCKETS - 1 : (size_t)b;
}

/* Top-p on an unsorted list without sorting it: bucket the logits, find the
 * bucket where the cumulative mass (from the top) reaches need, keep every
 * bucket above it and sort only that one to find the exact cut. Moves the
 * kept tokens to c[0..m) and returns m. O(n) plus the sort of one bucket. */
static size_t kr__top_p_buckets(kr__cand *c, size_t n, float maxl, double need)
{
    float minl = maxl;
    for (size_t i = 0; i < n; i++)
        if (c[i].logit < minl)
            minl = c[i].logit;
    if (!((double)maxl - (double)minl > 0.0)) { /* all equal: rank = id order */
        qsort(c, n, sizeof *c, kr__cmp_rank);
        return kr__top_p_sorted(c, n, maxl, need);
    }
    double scale = (KR__TOPP_BUCKETS - 1) / ((double)maxl - (double)minl);
    double mass[KR__TOPP_BUCKETS] = {0};
    for (size_t i = 0; i < n; i++)
        mass[kr__bucket(c[i].logit, maxl, scale)] += exp((double)c[i].logit - (double)maxl);
    size_t cut = 0;
    double above = 0.0; /* mass of the buckets before `cut` */
    while (cut < KR__TOPP_BUCKETS - 1 && above + mass[cut] < need)
        above += mass[cut++];
    /* three-way partition: [bucket < cut | bucket == cut | bucket > cut] */
    size_t lo = 0, mid = 0, hi = n;
    while (mid < hi) {
        size_t b = kr__bucket(c[mid].logit, maxl, scale);
        kr__cand t;
        if (b < cut) {
            t = c[lo], c[lo] = c[mid], c[mid] = t;
            lo++, mid++;
        } else if (b == cut) {
            mid++;
        } else {
            hi--;
            t = c[mid], c[mid] = c[hi], c[hi] = t;
        }
    }
    qsort(c + lo, mid - lo, sizeof *c, kr__cmp_rank);
    double cum = above;
    size_t m = lo;
    while (m < mid) {
        cum += exp((double)c[m].logit - (double)maxl);
        m++;
        if (cum >= need)
            break;
    }
    return m ? m : 1;
}

kr_status kr_sampler_sample(kr_sampler *s, const float *logits, int32_t *out_token, kr_err *err)
{
    if (!s || !logits || !out_token)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "sampler: NULL argument");
    const kr_sampler_params *p = &s->p;
    size_t nv = (size_t)s->n_vocab;

    kr__adjust(s, logits);

    /* Max logit (lowest id on ties): the greedy answer, and the softmax shift. */
    size_t best = 0;
    for (size_t i = 1; i < nv; i++)
        if (s->cur[i] > s->cur[best])
            best = i;
    float maxl = s->cur[best];
    if (maxl == -INFINITY)
        return kr_err_set(err, KR_ERR_RANGE, "sampler: all %zu logits are -inf or NaN (after penalties and bias)",
                          nv);
    if (p->greedy || p->temperature <= 0.0f) {
        *out_token = (int32_t)best;
        return KR_OK;
    }

    /* Candidates: the finite ones (a -inf logit can never be drawn). */
    kr__cand *c = s->cand;
    size_t n = 0;
    for (size_t i = 0; i < nv; i++)
        if (s->cur[i] != -INFINITY)
            c[n++] = (kr__cand){.logit = s->cur[i], .id = (int32_t)i};
    bool sorted = false;  /* c is in rank order */
    bool id_order = true; /* c is in ascending id order */

    /* 4. top-k */
    if (p->top_k > 0 && (size_t)p->top_k < n) {
        kr__select_top(c, n, (size_t)p->top_k);
        n = (size_t)p->top_k;
        sorted = true;
        id_order = false;
    }

    /* 5. top-p: probabilities over the current survivors (temperature 1). */
    if (p->top_p < 1.0f && n > 1) {
        double total = 0.0;
        for (size_t i = 0; i < n; i++)
            total += exp((double)c[i].logit - (double)maxl);
        double need = (double)p->top_p * total;
        n = sorted ? kr__top_p_sorted(c, n, maxl, need) : kr__top_p_buckets(c, n, maxl, need);
        id_order = false;
    }

    /* 6. min-p: p_i >= min_p * p_max  <=>  logit_i >= max + log(min_p). */
    if (p->min_p > 0.0f) {
        double thr = (double)maxl + log((double)p->min_p);
        size_t w = 0;
        for (size_t i = 0; i < n; i++)
            if ((double)c[i].logit >= thr)
                c[w++] = c[i];
        n = w; /* the max always passes (log(min_p) <= 0) */
    }

    /* 7-8. temperature, then the draw in ascending token id. */
    double inv_t = 1.0 / (double)p->temperature;
    float u = kr_philox_uniform(p->seed, s->draws);
    s->draws++;
    int32_t pick;
    if (id_order || n * 16 < nv) {
        if (!id_order && n > 1)
            qsort(c, n, sizeof *c, kr__cmp_id);
        double total = 0.0;
        for (size_t i = 0; i < n; i++)
            total += exp(((double)c[i].logit - (double)maxl) * inv_t);
        double target = (double)u * total;
        double cum = 0.0;
        pick = c[n - 1].id;
        for (size_t i = 0; i < n; i++) {
            cum += exp(((double)c[i].logit - (double)maxl) * inv_t);
            if (cum > target) {
                pick = c[i].id;
                break;
            }
        }
    } else {
        /* Many survivors out of order: mark them and walk the vocabulary
         * (s->cur is free now: survivors keep their logit, others -inf). */
        for (size_t i = 0; i < nv; i++)
            s->cur[i] = -INFINITY;
        for (size_t i = 0; i < n; i++)
            s->cur[c[i].id] = c[i].logit;
        double total = 0.0;
        for (size_t i = 0; i < nv; i++)
            if (s->cur[i] != -INFINITY)
                total += exp(((double)s->cur[i] - (double)maxl) * inv_t);
        double target = (double)u * total;
        double cum = 0.0;
        pick = -1;
        for (size_t i = 0; i < nv; i++) {
            if (s->cur[i] == -INFINITY)
                continue;
            pick = (int32_t)i; /* last survivor if rounding leaves cum <= target */
            cum += exp(((double)s->cur[i] - (double)maxl) * inv_t);
            if (cum > target)
                break;
        }
    }
    *out_token = pick;
    return KR_OK;
}
