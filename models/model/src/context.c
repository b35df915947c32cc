/* Inference context: host KV cache, scratch, thread pool; eval loop. */
#include "model_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernrun/checked.h"
#include "kernrun/log.h"

#define KR__LOG "model"
#define KR__MAX_CTX (1u << 24)
#define KR__MAX_THREADS 256
#define KR__MAX_SEQ 4096

kr_context_params kr_context_params_default(void)
{
    kr_context_params p = {
        .n_ctx = 0,
        .n_batch = 512,
        .n_threads = 0,
        .kv_type = KR_DTYPE_F32,
        .n_seq = 1,
        .kv_full = KR_KV_FULL_STOP,
        .n_keep = 0,
        .kv_mem_limit = 0,
        .kv_no_ring = false,
    };
    return p;
}

static int kr__default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > 16 ? 16 : (int)n;
}

static void *kr__aligned_alloc(size_t bytes)
{
    size_t rounded;
    if (kr_add_overflow_size(bytes, 63, &rounded))
        return NULL;
    rounded &= ~(size_t)63;
    if (rounded == 0)
        rounded = 64;
    return aligned_alloc(64, rounded);
}

kr_status kr_context_new(kr_model *m, const kr_context_params *p, kr_context **out, kr_err *err)
{
    kr_status st;
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_context_new: out is NULL");
    *out = NULL;
    if (!m)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_context_new: model is NULL");
    kr_context_params cp = p ? *p : kr_context_params_default();
    const kr_hparams *hp = &m->hp;

    if (cp.n_ctx == 0) {
        cp.n_ctx = hp->n_ctx_train ? hp->n_ctx_train : 2048;
        if (cp.n_ctx > 4096)
            cp.n_ctx = 4096;
    }
    if (cp.n_ctx > KR__MAX_CTX)
        return kr_err_set(err, KR_ERR_RANGE, "context size %" PRIu32 " exceeds the limit %u", cp.n_ctx,
                          KR__MAX_CTX);
    if (hp->n_ctx_train && cp.n_ctx > hp->n_ctx_train)
        KR_LOGW(KR__LOG, "context size %" PRIu32 " exceeds the training context %" PRIu32, cp.n_ctx,
                hp->n_ctx_train);
    if (cp.n_batch == 0)
        cp.n_batch = 512;
    if (cp.n_batch > cp.n_ctx)
        cp.n_batch = cp.n_ctx;
    if (cp.n_threads <= 0)
        cp.n_threads = kr__default_threads();
    if (cp.n_threads > KR__MAX_THREADS)
        cp.n_threads = KR__MAX_THREADS;
    if (cp.n_seq > KR__MAX_SEQ)
        return kr_err_set(err, KR_ERR_RANGE, "sequence count %" PRIu32 " exceeds the limit %u", cp.n_seq,
                          KR__MAX_SEQ);
    if (cp.kv_full != KR_KV_FULL_STOP && cp.kv_full != KR_KV_FULL_SHIFT)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kv_full %d is neither stop nor shift", (int)cp.kv_full);

    /* sizes first (checked math), refused against the limit before allocating */
    kr_kv_plan plan;
    kr_kv_plan_params pp = {
        .n_ctx = cp.n_ctx,
        .n_seq = cp.n_seq,
        .window = hp->sliding_window,
        .ring = !cp.kv_no_ring,
        .type = cp.kv_type,
    };
    if ((st = kr_kv_plan_make(hp, &pp, &plan, err)) != KR_OK)
        return st;
    size_t scratch_bytes;
    if ((st = m->arch->scratch_size(hp, cp.n_batch, &scratch_bytes, err)) != KR_OK) {
        kr_err_prefix(err, "scratch for %" PRIu32 " tokens", cp.n_batch);
        return st;
    }

    kr_context *c = calloc(1, sizeof *c);
    if (!c)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    c->model = m;
    c->n_ctx = cp.n_ctx;
    c->n_batch = cp.n_batch;
    c->kv_type = cp.kv_type;
    c->kv_full = cp.kv_full;
    c->n_keep = cp.n_keep;
    c->scratch_bytes = scratch_bytes;
    c->pos = calloc(cp.n_batch, sizeof *c->pos);
    if (!c->pos) {
        st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
        goto err_free_ctx;
    }
    const kr_weight *rf = kr_model_weight(m, "rope_freqs.weight");
    kr_kv_params kp = {
        .hp = hp,
        .ops = m->ops,
        .freq_factors = rf ? rf->data : NULL,
        .n_batch = cp.n_batch,
        .mem_limit = cp.kv_mem_limit,
        .extra_bytes = scratch_bytes,
    };
    if ((st = kr_kv_new(&plan, &kp, &c->kv, err)) != KR_OK)
        goto err_free_ctx;
    c->scratch = kr__aligned_alloc(c->scratch_bytes);
    if (!c->scratch) {
        st = kr_err_set(err, KR_ERR_NOMEM, "cannot allocate %zu bytes of scratch", c->scratch_bytes);
        goto err_free_ctx;
    }
    st = kr_pool_new(cp.n_threads, &c->pool);
    if (st != KR_OK) {
        kr_err_set(err, st, "cannot create the thread pool");
        goto err_free_ctx;
    }
    KR_LOGD(KR__LOG, "context: n_ctx %" PRIu32 ", KV cache %.1f MiB (%s), scratch %.1f MiB, %d threads", c->n_ctx,
            (double)plan.bytes / (1024.0 * 1024.0), kr_dtype_name(c->kv_type),
            (double)c->scratch_bytes / (1024.0 * 1024.0), kr_pool_exec(c->pool)->n_threads);
    *out = c;
    return KR_OK;

err_free_ctx:
    kr_context_free(c);
    return st;
}

void kr_context_reset(kr_context *c)
{
    if (c)
        kr_kv_set_n_past(c->kv, 0);
}

void kr_context_free(kr_context *c)
{
    if (!c)
        return;
    kr_pool_free(c->pool);
    kr_kv_free(c->kv);
    free(c->pos);
    free(c->scratch);
    free(c);
}

uint32_t kr_context_n_ctx(const kr_context *c) { return c->n_ctx; }
uint32_t kr_context_n_past(const kr_context *c) { return kr_kv_n_past(c->kv); }
int kr_context_n_threads(const kr_context *c) { return kr_pool_exec(c->pool)->n_threads; }

/* ---- KV cache API (kernrun/kvcache.h) ---- */

uint64_t kr_context_kv_bytes(const kr_context *c) { return kr_kv_get_plan(c->kv)->bytes; }
uint32_t kr_context_kv_rows(const kr_context *c) { return kr_kv_get_plan(c->kv)->rows; }
kr_dtype kr_context_kv_type(const kr_context *c) { return c->kv_type; }
kr_status kr_context_seq_use(kr_context *c, int32_t seq_id, kr_err *err) { return kr_kv_seq_use(c->kv, seq_id, err); }
int32_t kr_context_seq_current(const kr_context *c) { return kr_kv_seq_current(c->kv); }
bool kr_context_seq_cached(const kr_context *c, int32_t seq_id) { return kr_kv_seq_cached(c->kv, seq_id); }
kr_status kr_context_seq_pin(kr_context *c, int32_t seq_id, bool pinned, kr_err *err)
{
    return kr_kv_seq_pin(c->kv, seq_id, pinned, err);
}
void kr_context_seq_drop(kr_context *c, int32_t seq_id) { kr_kv_seq_drop(c->kv, seq_id); }
kr_status kr_context_shift(kr_context *c, uint32_t n_keep, uint32_t *n_discarded, kr_err *err)
{
    return kr_kv_shift(c->kv, kr_pool_exec(c->pool), n_keep, n_discarded, err);
}
kr_status kr_context_kv_read(const kr_context *c, uint32_t layer, uint32_t pos, float *k, float *v, kr_err *err)
{
    return kr_kv_read(c->kv, layer, pos, k, v, err);
}

static kr_status kr__eval(kr_context *c, const int32_t *tokens, size_t n, uint32_t pos, float *logits,
                          bool all, kr_err *err)
{
    if (!c || (!tokens && n > 0))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "eval: NULL context or tokens");
    const kr_model *m = c->model;
    if (n == 0)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "eval: no tokens");
    uint32_t n_past = kr_kv_n_past(c->kv);
    if (pos > n_past)
        return kr_err_set(err, KR_ERR_STATE, "eval at position %" PRIu32 " but only %" PRIu32
                          " positions are cached", pos, n_past);
    if (n > c->n_ctx)
        return kr_err_set(err, KR_ERR_RANGE, "eval of %zu tokens exceeds the context size %" PRIu32, n, c->n_ctx);
    if (pos > c->n_ctx - n && c->kv_full == KR_KV_FULL_SHIFT && pos == n_past) {
        kr_status st = kr_context_shift(c, c->n_keep, NULL, err);
        if (st != KR_OK) {
            kr_err_prefix(err, "context full at %" PRIu32 " positions", n_past);
            return st;
        }
        pos = kr_kv_n_past(c->kv); /* the tokens go right after the kept ones */
    }
    if (pos > c->n_ctx - n)
        return kr_kv_full_error(n, pos, c->n_ctx, c->kv_full == KR_KV_FULL_SHIFT, err);
    kr_status rst = kr_kv_can_rewind(c->kv, pos, err);
    if (rst != KR_OK)
        return rst;
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= m->hp.n_vocab)
            return kr_err_set(err, KR_ERR_RANGE, "token %zu: id %" PRId32 " outside [0, %" PRIu32 ")", i,
                              tokens[i], m->hp.n_vocab);

    kr_kv_set_n_past(c->kv, pos); /* rows from pos on are being rewritten */
    for (size_t done = 0; done < n;) {
        uint32_t nb = (uint32_t)(n - done < c->n_batch ? n - done : c->n_batch);
        uint32_t p0 = pos + (uint32_t)done;
        for (uint32_t i = 0; i < nb; i++)
            c->pos[i] = (int32_t)(p0 + i);
        bool last = done + nb == n;
        float *lg = NULL;
        if (logits && all)
            lg = logits + done * (size_t)m->hp.n_vocab;
        else if (logits && last)
            lg = logits;
        /* the arch stores new K/V rows at row 0 of per-layer staging buffers
         * and calls the wrapped attention, which moves them into the cache */
        kr_kv_batch kb;
        kr_kv_begin(c->kv, kr_pool_exec(c->pool), p0, nb, &kb);
        kr_forward_args a = {
            .struct_size = sizeof a,
            .hp = &m->hp,
            .w = m->w,
            .n_w = m->n_w,
            .ops = kb.ops,
            .ex = kb.ex,
            .k_cache = kb.k_cache,
            .v_cache = kb.v_cache,
            .kv_type = KR_DTYPE_F32,
            .n_ctx = kb.n_ctx,
            .tokens = tokens + done,
            .pos = c->pos,
            .n_tok = nb,
            .pos0 = 0,
            .logits = lg,
            .logits_all = all,
            .scratch = c->scratch,
            .scratch_bytes = c->scratch_bytes,
        };
        kr_status st = m->arch->forward(&a, err);
        if (st != KR_OK) {
            kr_err_prefix(err, "%s forward at position %" PRIu32, m->arch_name, p0);
            return st;
        }
        done += nb;
        kr_kv_set_n_past(c->kv, p0 + nb);
    }
    return KR_OK;
}

kr_status kr_model_eval(kr_context *c, const int32_t *tokens, size_t n, uint32_t pos, float *logits_last,
                        kr_err *err)
{
    return kr__eval(c, tokens, n, pos, logits_last, false, err);
}

kr_status kr_model_eval_all(kr_context *c, const int32_t *tokens, size_t n, uint32_t pos, float *logits_all,
                            kr_err *err)
{
    return kr__eval(c, tokens, n, pos, logits_all, true, err);
}
