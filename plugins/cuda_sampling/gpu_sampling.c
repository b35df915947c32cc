/* Host side of the GPU sampler: device state, argument checks, launches.
 * The math lives in kernels/sampling/sampling.cu. */
#include "kr_gpu_sampling.h"

#include <stdlib.h>
#include <string.h>

#include "kernrun/checked.h"
#include "kr_kernel_sampling_sampling_cu.h"

#define KR__GS_THREADS 1024 /* KR_GS_THREADS of the kernel: one block */
#define KR__GSP_THREADS 256  /* KR_GSP_THREADS of kr_gs_prepass */
#define KR__GSP_CHUNK 1024   /* KR_GSP_CHUNK: vocabulary entries per pre-pass block */
#define KR__GSP_KMAX 256     /* KR_GSP_KMAX: candidates per block at most */
#define KR__GSPP_BINS 4096   /* KR_GSPP_BINS: top-p pre-pass histogram */

/* Kernel records: static, because the backend caches functions by record address. */
#define KR__GS_SRC(var, entry_)                                 \
    static const kr_kernel_source var = {                      \
        .name = "sampling/sampling.cu",                         \
        .code = (const char *)kr_kernel_sampling_sampling_cu,   \
        .len = kr_kernel_sampling_sampling_cu_LEN,              \
        .entry = entry_,                                        \
    }
KR__GS_SRC(kr__gs_src_sample, "kr_gs_sample");
KR__GS_SRC(kr__gs_src_prepass, "kr_gs_prepass");
KR__GS_SRC(kr__gs_src_pp_adjust, "kr_gs_pp_adjust");
KR__GS_SRC(kr__gs_src_pp_mass, "kr_gs_pp_mass");
KR__GS_SRC(kr__gs_src_pp_select, "kr_gs_pp_select");
KR__GS_SRC(kr__gs_src_accept, "kr_gs_accept");

struct kr_gpu_sampler {
    kr_backend *be;             /* CUDA backend (not owned) */
    kr_sampler_params p;        /* validated copy; p.logit_bias = NULL (the table is on the device) */
    int32_t n_vocab;
    int32_t hist_cap;           /* repeat_last_n */
    int32_t n_bias;             /* entries in the device bias table */
    kr_buffer *buf;             /* one device allocation, laid out below */
    float *d_cur;               /* (n_vocab,) scratch: adjusted logits */
    uint64_t *d_draws;          /* (1,) draws so far; followed directly by d_hist_meta */
    int32_t *d_hist_meta;       /* (2,) valid history entries, next write position */
    int32_t *d_out;             /* (1,) token slot of kr_gpu_sampler_sample */
    int32_t *d_hist;            /* (hist_cap,) ring of accepted tokens */
    int32_t *d_bias_tok;        /* (n_bias,) */
    float *d_bias_val;          /* (n_bias,) */
    int32_t pre_k;              /* top-k pre-pass: candidates per block; 0: none */
    bool pre_topp;              /* top-p pre-pass (no top-k) */
    int32_t pre_blocks;         /* ceil(n_vocab / KR__GSP_CHUNK) */
    float *d_cand_val;          /* (pre_blocks * pre_k or n_vocab,) pre-pass candidates */
    int32_t *d_cand_id;         /* (same,) their ids, ascending */
    uint32_t *d_block_max;      /* top-p pre-pass: (pre_blocks,) max key per block */
    double *d_block_sum;        /* (pre_blocks,) sum of exp(l - max) per block */
    uint64_t *d_mass_hist;      /* (KR__GSPP_BINS,) fixed-point mass per 12-bit key digit */
    double *d_ext_tot;          /* (2,) totals handed to kr_gs_sample */
    int32_t *d_n_cand;          /* (1,) candidates written by kr_gs_pp_select */
    kr_function *fn_sample;     /* owned by the backend */
    kr_function *fn_prepass;
    kr_function *fn_pp_adjust, *fn_pp_mass, *fn_pp_select;
    kr_function *fn_accept;
};

/* Multi-block pre-passes before the one-block sampler (docs/SAMPLING.md):
 * top-k (kr_gs_prepass) reduces the vocabulary to each 1024-entry chunk's
 * best k = top_k (1 when greedy), when that leaves at most half of it;
 * top-p without top-k (kr_gs_pp_*) to the tokens of the 12-bit key digits
 * that hold the top_p mass, for vocabularies of 8192 or more. Both off with
 * KERNRUN_GPU_SAMPLER_PREPASS=0. */
static int32_t kr__gs_pre_k(const kr_sampler_params *p, int32_t n_vocab, int32_t *blocks, bool *topp)
{
    const char *e = getenv("KERNRUN_GPU_SAMPLER_PREPASS");
    *blocks = (int32_t)((n_vocab + (KR__GSP_CHUNK - 1)) / KR__GSP_CHUNK);
    *topp = false;
    if (e && strcmp(e, "0") == 0)
        return 0;
    bool greedy = p->greedy || p->temperature <= 0.0f;
    int32_t k = greedy ? 1 : p->top_k;
    if (!greedy && (k <= 0 || k >= n_vocab)) {
        *topp = p->top_p < 1.0f && n_vocab >= 8192;
        return 0;
    }
    if (k <= 0 || k > KR__GSP_KMAX || (int64_t)*blocks * k * 2 > n_vocab)
        return 0;
    return k;
}

/* Add context to err; returns st (also when err is NULL). */
static kr_status kr__gs_prefix(kr_err *err, kr_status st, const char *what)
{
    kr_err_prefix(err, "%s", what);
    return st;
}

/* offset of the next region: *off rounded up to 16, then advanced by n*size */
static bool kr__gs_region(size_t *off, size_t n, size_t size, size_t *at)
{
    size_t bytes, o = (*off + 15) & ~(size_t)15;
    if (o < *off || kr_mul_overflow_size(n, size, &bytes) || kr_add_overflow_size(o, bytes, off))
        return false;
    *at = o;
    return true;
}

kr_status kr_gpu_sampler_create(kr_backend *be, const kr_sampler_params *p, int32_t n_vocab, kr_gpu_sampler **out,
                                kr_err *err)
{
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu sampler: NULL output");
    *out = NULL;
    if (!be || be->kind != KR_BACKEND_CUDA)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu sampler: needs a CUDA backend");
    kr_status st = kr_sampler_params_validate(p, n_vocab, err);
    if (st != KR_OK) {
        kr_err_prefix(err, "gpu sampler");
        return st;
    }
    if (p->n_logit_bias > (size_t)INT32_MAX)
        return kr_err_set(err, KR_ERR_RANGE, "gpu sampler: %zu logit-bias entries (at most %d)", p->n_logit_bias,
                          (int)INT32_MAX);

    kr_gpu_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return kr_err_set(err, KR_ERR_NOMEM, "gpu sampler: out of memory");
    s->be = be;
    s->p = *p;
    s->p.logit_bias = NULL;
    s->n_vocab = n_vocab;
    s->hist_cap = p->repeat_last_n;
    s->n_bias = (int32_t)p->n_logit_bias;
    s->pre_k = kr__gs_pre_k(p, n_vocab, &s->pre_blocks, &s->pre_topp);
    size_t n_cand = s->pre_topp ? (size_t)n_vocab : (size_t)s->pre_blocks * (size_t)s->pre_k;
    size_t n_pp = s->pre_topp ? (size_t)s->pre_blocks : 0, n_ppb = s->pre_topp ? KR__GSPP_BINS : 0;

    size_t off = 0, o_cur, o_meta, o_out, o_hist, o_btok, o_bval, o_cval, o_cid, o_bmax, o_bsum, o_mh, o_ext, o_nc;
    if (!kr__gs_region(&off, (size_t)n_vocab, sizeof(float), &o_cur) ||
        !kr__gs_region(&off, 2, sizeof(uint64_t), &o_meta) || /* draws (8) + hist_meta (8) */
        !kr__gs_region(&off, 1, sizeof(int32_t), &o_out) ||
        !kr__gs_region(&off, (size_t)s->hist_cap, sizeof(int32_t), &o_hist) ||
        !kr__gs_region(&off, (size_t)s->n_bias, sizeof(int32_t), &o_btok) ||
        !kr__gs_region(&off, (size_t)s->n_bias, sizeof(float), &o_bval) ||
        !kr__gs_region(&off, n_cand, sizeof(float), &o_cval) || !kr__gs_region(&off, n_cand, sizeof(int32_t), &o_cid) ||
        !kr__gs_region(&off, n_pp, sizeof(uint32_t), &o_bmax) || !kr__gs_region(&off, n_pp, sizeof(double), &o_bsum) ||
        !kr__gs_region(&off, n_ppb, sizeof(uint64_t), &o_mh) || !kr__gs_region(&off, 2, sizeof(double), &o_ext) ||
        !kr__gs_region(&off, 1, sizeof(int32_t), &o_nc)) {
        free(s);
        return kr_err_set(err, KR_ERR_OVERFLOW, "gpu sampler: device state size overflows (n_vocab %d)",
                          (int)n_vocab);
    }
    st = kr_backend_alloc(be, off, &s->buf, err);
    if (st != KR_OK) {
        kr_err_prefix(err, "gpu sampler: allocating %zu bytes of device state", off);
        goto err_free_host;
    }
    char *base = s->buf->ptr;
    s->d_cur = (float *)(void *)(base + o_cur);
    s->d_draws = (uint64_t *)(void *)(base + o_meta);
    s->d_hist_meta = (int32_t *)(void *)(base + o_meta + sizeof(uint64_t));
    s->d_out = (int32_t *)(void *)(base + o_out);
    s->d_hist = (int32_t *)(void *)(base + o_hist);
    s->d_bias_tok = (int32_t *)(void *)(base + o_btok);
    s->d_bias_val = (float *)(void *)(base + o_bval);
    s->d_cand_val = (float *)(void *)(base + o_cval);
    s->d_cand_id = (int32_t *)(void *)(base + o_cid);
    s->d_block_max = (uint32_t *)(void *)(base + o_bmax);
    s->d_block_sum = (double *)(void *)(base + o_bsum);
    s->d_mass_hist = (uint64_t *)(void *)(base + o_mh);
    s->d_ext_tot = (double *)(void *)(base + o_ext);
    s->d_n_cand = (int32_t *)(void *)(base + o_nc);

    if (s->n_bias > 0) {
        size_t nb = (size_t)s->n_bias;
        int32_t *tok = malloc(nb * sizeof *tok);
        float *val = malloc(nb * sizeof *val);
        if (!tok || !val) {
            free(tok);
            free(val);
            st = kr_err_set(err, KR_ERR_NOMEM, "gpu sampler: out of memory for %zu bias entries", nb);
            goto err_free_buf;
        }
        for (size_t i = 0; i < nb; i++) {
            tok[i] = p->logit_bias[i].token;
            val[i] = p->logit_bias[i].bias;
        }
        st = kr_backend_h2d(be, s->d_bias_tok, tok, nb * sizeof *tok, NULL, err);
        if (st == KR_OK)
            st = kr_backend_h2d(be, s->d_bias_val, val, nb * sizeof *val, NULL, err);
        free(tok);
        free(val);
        if (st != KR_OK) {
            kr_err_prefix(err, "gpu sampler: uploading the logit bias");
            goto err_free_buf;
        }
    }
    st = kr_gpu_sampler_reset(s, NULL, err);
    if (st == KR_OK)
        st = kr_backend_sync(be, NULL, err);
    if (st != KR_OK)
        goto err_free_buf;
    *out = s;
    return KR_OK;

err_free_buf:
    kr_backend_free(be, s->buf);
err_free_host:
    free(s);
    return st;
}

void kr_gpu_sampler_free(kr_gpu_sampler *s)
{
    if (!s)
        return;
    kr_backend_free(s->be, s->buf);
    free(s);
}

static kr_status kr__gs_fn(kr_gpu_sampler *s, const kr_kernel_source *src, kr_function **fn, kr_err *err)
{
    if (*fn)
        return KR_OK;
    kr_status st = kr_backend_get_function(s->be, src, fn, err);
    if (st != KR_OK) {
        *fn = NULL;
        kr_err_prefix(err, "gpu sampler: kernel %s (%s)", src->entry, src->name);
        return st;
    }
    return KR_OK;
}

static kr_status kr__gs_pre_fns(kr_gpu_sampler *s, kr_err *err)
{
    kr_status st = KR_OK;
    if (s->pre_k > 0)
        st = kr__gs_fn(s, &kr__gs_src_prepass, &s->fn_prepass, err);
    if (st == KR_OK && s->pre_topp)
        st = kr__gs_fn(s, &kr__gs_src_pp_adjust, &s->fn_pp_adjust, err);
    if (st == KR_OK && s->pre_topp)
        st = kr__gs_fn(s, &kr__gs_src_pp_mass, &s->fn_pp_mass, err);
    if (st == KR_OK && s->pre_topp)
        st = kr__gs_fn(s, &kr__gs_src_pp_select, &s->fn_pp_select, err);
    return st;
}

kr_status kr_gpu_sampler_prepare(kr_gpu_sampler *s, kr_err *err)
{
    if (!s)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu sampler: NULL handle");
    kr_status st = kr__gs_fn(s, &kr__gs_src_sample, &s->fn_sample, err);
    if (st == KR_OK)
        st = kr__gs_pre_fns(s, err);
    return st != KR_OK ? st : kr__gs_fn(s, &kr__gs_src_accept, &s->fn_accept, err);
}

kr_status kr_gpu_sampler_reset(kr_gpu_sampler *s, kr_stream *stream, kr_err *err)
{
    if (!s)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu sampler: NULL handle");
    /* draws (8 bytes) and hist_meta (8 bytes) are adjacent */
    kr_status st = kr_backend_memset(s->be, s->d_draws, 0, 2 * sizeof(uint64_t), stream, err);
    return st != KR_OK ? kr__gs_prefix(err, st, "gpu sampler: reset") : KR_OK;
}

static kr_status kr__gs_accept(kr_gpu_sampler *s, kr_stream *stream, const int32_t *d_token, int32_t tok, kr_err *err)
{
    if (s->hist_cap == 0)
        return KR_OK;
    kr_status st = kr__gs_fn(s, &kr__gs_src_accept, &s->fn_accept, err);
    if (st != KR_OK)
        return st;
    void *hist = s->d_hist, *meta = s->d_hist_meta, *dt = (void *)(uintptr_t)d_token;
    int cap = s->hist_cap, nv = s->n_vocab, imm = tok;
    void *args[] = {&hist, &meta, &cap, &nv, &dt, &imm};
    const uint32_t grid[3] = {1, 1, 1}, block[3] = {32, 1, 1};
    st = kr_backend_launch(s->be, s->fn_accept, grid, block, 0, stream, args, err);
    return st != KR_OK ? kr__gs_prefix(err, st, "gpu sampler: accept") : KR_OK;
}

kr_status kr_gpu_sampler_accept(kr_gpu_sampler *s, kr_stream *stream, int32_t token, kr_err *err)
{
    if (!s)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu sampler: NULL handle");
    if (token < 0 || token >= s->n_vocab)
        return kr_err_set(err, KR_ERR_RANGE, "gpu sampler: accepted token %d outside [0, %d)", (int)token,
                          (int)s->n_vocab);
    return kr__gs_accept(s, stream, NULL, token, err);
}

kr_status kr_gpu_sampler_accept_device(kr_gpu_sampler *s, kr_stream *stream, const int32_t *d_token, kr_err *err)
{
    if (!s || !d_token)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu sampler: NULL argument");
    return kr__gs_accept(s, stream, d_token, 0, err);
}

kr_status kr_gpu_sampler_sample_async(kr_gpu_sampler *s, kr_stream *stream, const float *d_logits,
                                      int32_t *d_token, kr_err *err)
{
    if (!s || !d_logits || !d_token)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu sampler: NULL argument");
    kr_status st = kr__gs_fn(s, &kr__gs_src_sample, &s->fn_sample, err);
    if (st == KR_OK)
        st = kr__gs_pre_fns(s, err);
    if (st != KR_OK)
        return st;
    const kr_sampler_params *p = &s->p;
    void *logits = (void *)(uintptr_t)d_logits, *cur = s->d_cur, *hist = s->d_hist, *meta = s->d_hist_meta,
         *draws = s->d_draws, *btok = s->d_bias_tok, *bval = s->d_bias_val, *out = d_token, *cand_id = NULL,
         *n_dev = NULL, *ext = NULL;
    int nv = s->n_vocab, nb = s->n_bias, greedy = p->greedy || p->temperature <= 0.0f, top_k = p->top_k;
    float top_p = p->top_p, min_p = p->min_p, temp = p->temperature, rp = p->repeat_penalty,
          pres = p->presence_penalty, freq = p->frequency_penalty;
    unsigned long long seed = p->seed;
    if (s->pre_k > 0) {
        /* order and types of kr_gs_prepass's parameters */
        void *cval = s->d_cand_val, *cid = s->d_cand_id;
        int k = s->pre_k;
        void *pargs[] = {&logits, &nv, &hist, &meta, &btok, &bval, &nb, &rp, &pres, &freq, &k, &cval, &cid};
        const uint32_t pgrid[3] = {(uint32_t)s->pre_blocks, 1, 1}, pblock[3] = {KR__GSP_THREADS, 1, 1};
        st = kr_backend_launch(s->be, s->fn_prepass, pgrid, pblock, 0, stream, pargs, err);
        if (st != KR_OK)
            return kr__gs_prefix(err, st, "gpu sampler: launching kr_gs_prepass");
        logits = cval;
        cand_id = cid;
        nv = s->pre_blocks * s->pre_k;
    } else if (s->pre_topp) {
        void *bmax = s->d_block_max, *bsum = s->d_block_sum, *mh = s->d_mass_hist, *cval = s->d_cand_val,
             *cid = s->d_cand_id, *nc = s->d_n_cand;
        int nblk = s->pre_blocks;
        ext = s->d_ext_tot;
        const uint32_t pgrid[3] = {(uint32_t)nblk, 1, 1}, pblock[3] = {KR__GSP_THREADS, 1, 1};
        const uint32_t one[3] = {1, 1, 1}, sblock[3] = {KR__GS_THREADS, 1, 1};
        /* orders and types of kr_gs_pp_adjust's, kr_gs_pp_mass's and kr_gs_pp_select's parameters */
        void *a1[] = {&logits, &nv, &hist, &meta, &btok, &bval, &nb, &rp, &pres, &freq, &cur, &bmax, &mh};
        void *a2[] = {&cur, &nv, &bmax, &mh, &bsum};
        void *a3[] = {&cur, &nv, &nblk, &mh, &bsum, &top_p, &cval, &cid, &nc, &ext};
        st = kr_backend_launch(s->be, s->fn_pp_adjust, pgrid, pblock, 0, stream, a1, err);
        if (st == KR_OK)
            st = kr_backend_launch(s->be, s->fn_pp_mass, pgrid, pblock, 0, stream, a2, err);
        if (st == KR_OK)
            st = kr_backend_launch(s->be, s->fn_pp_select, one, sblock, 0, stream, a3, err);
        if (st != KR_OK)
            return kr__gs_prefix(err, st, "gpu sampler: launching the top-p pre-pass");
        logits = cval;
        cand_id = cid;
        n_dev = nc;
    }
    if (cand_id) { /* the sampler runs on pre-pass candidates: adjusted already, ids mapped back */
        nb = 0;
        rp = 1.0f;
        pres = 0.0f;
        freq = 0.0f;
    }
    /* order and types of kr_gs_sample's parameters */
    void *args[] = {&logits, &cur, &nv, &hist, &meta, &draws, &btok, &bval, &nb, &greedy,
                    &top_k, &top_p, &min_p, &temp, &rp, &pres, &freq, &seed, &out, &cand_id, &n_dev, &ext};
    const uint32_t grid[3] = {1, 1, 1}, block[3] = {KR__GS_THREADS, 1, 1};
    st = kr_backend_launch(s->be, s->fn_sample, grid, block, 0, stream, args, err);
    return st != KR_OK ? kr__gs_prefix(err, st, "gpu sampler: launching kr_gs_sample") : KR_OK;
}

kr_status kr_gpu_sampler_sample(kr_gpu_sampler *s, kr_stream *stream, const float *d_logits, int32_t *token,
                                kr_err *err)
{
    if (!s || !token)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu sampler: NULL argument");
    kr_status st = kr_gpu_sampler_sample_async(s, stream, d_logits, s->d_out, err);
    if (st != KR_OK)
        return st;
    int32_t t = -1;
    st = kr_backend_d2h(s->be, &t, s->d_out, sizeof t, stream, err);
    if (st == KR_OK)
        st = kr_backend_sync(s->be, stream, err);
    if (st != KR_OK)
        return kr__gs_prefix(err, st, "gpu sampler: reading the token");
    if (t < 0 || t >= s->n_vocab)
        return kr_err_set(err, KR_ERR_RANGE, "gpu sampler: all %d logits are -inf or NaN (after penalties and bias)",
                          (int)s->n_vocab);
    *token = t;
    return KR_OK;
}

kr_status kr_gpu_sampler_draws(kr_gpu_sampler *s, kr_stream *stream, uint64_t *draws, kr_err *err)
{
    if (!s || !draws)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu sampler: NULL argument");
    kr_status st = kr_backend_d2h(s->be, draws, s->d_draws, sizeof *draws, stream, err);
    if (st == KR_OK)
        st = kr_backend_sync(s->be, stream, err);
    return st != KR_OK ? kr__gs_prefix(err, st, "gpu sampler: reading the draw counter") : KR_OK;
}
