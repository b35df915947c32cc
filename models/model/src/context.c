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

kr_context_params kr_context_params_default(void)
{
    kr_context_params p = {
        .n_ctx = 0,
        .n_batch = 512,
        .n_threads = 0,
        .kv_type = KR_DTYPE_F32,
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
    if (cp.kv_type != KR_DTYPE_F32 && cp.kv_type != KR_DTYPE_F16)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "KV cache type %s not supported (f32 or f16)",
                          kr_dtype_name(cp.kv_type));

    /* per layer: n_ctx * n_head_kv * head_dim elements, for K and for V */
    uint64_t layer_bytes, total;
    size_t elem = cp.kv_type == KR_DTYPE_F16 ? 2 : 4;
    if (kr_mul3_overflow_u64(cp.n_ctx, (uint64_t)hp->n_head_kv * hp->head_dim, elem, &layer_bytes) ||
        kr_mul3_overflow_u64(layer_bytes, hp->n_layer, 2, &total) || layer_bytes > SIZE_MAX)
        return kr_err_set(err, KR_ERR_OVERFLOW,
                          "KV cache size overflows: n_ctx %" PRIu32 " x layers %" PRIu32 " x kv heads %" PRIu32
                          " x head_dim %" PRIu32, cp.n_ctx, hp->n_layer, hp->n_head_kv, hp->head_dim);

    kr_context *c = calloc(1, sizeof *c);
    if (!c)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    c->model = m;
    c->n_ctx = cp.n_ctx;
    c->n_batch = cp.n_batch;
    c->kv_type = cp.kv_type;
    c->k = calloc(hp->n_layer, sizeof *c->k);
    c->v = calloc(hp->n_layer, sizeof *c->v);
    c->pos = calloc(cp.n_batch, sizeof *c->pos);
    if (!c->k || !c->v || !c->pos) {
        st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
        goto err_free_ctx;
    }
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        c->k[l] = kr__aligned_alloc((size_t)layer_bytes);
        c->v[l] = kr__aligned_alloc((size_t)layer_bytes);
        if (!c->k[l] || !c->v[l]) {
            st = kr_err_set(err, KR_ERR_NOMEM,
                            "cannot allocate the KV cache: %" PRIu64 " bytes (n_ctx %" PRIu32 ", %" PRIu32
                            " layers, %" PRIu32 " kv heads x %" PRIu32 ", %s)", total, cp.n_ctx, hp->n_layer,
                            hp->n_head_kv, hp->head_dim, kr_dtype_name(cp.kv_type));
            goto err_free_ctx;
        }
    }
    st = m->arch->scratch_size(hp, cp.n_batch, &c->scratch_bytes, err);
    if (st != KR_OK) {
        kr_err_prefix(err, "scratch for %" PRIu32 " tokens", cp.n_batch);
        goto err_free_ctx;
    }
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
            (double)total / (1024.0 * 1024.0), kr_dtype_name(c->kv_type),
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
        c->n_past = 0;
}

void kr_context_free(kr_context *c)
{
    if (!c)
        return;
    kr_pool_free(c->pool);
    if (c->k)
        for (uint32_t l = 0; l < c->model->hp.n_layer; l++)
            free(c->k[l]);
    if (c->v)
        for (uint32_t l = 0; l < c->model->hp.n_layer; l++)
            free(c->v[l]);
    free(c->k);
    free(c->v);
    free(c->pos);
    free(c->scratch);
    free(c);
}

uint32_t kr_context_n_ctx(const kr_context *c) { return c->n_ctx; }
uint32_t kr_context_n_past(const kr_context *c) { return c->n_past; }
int kr_context_n_threads(const kr_context *c) { return kr_pool_exec(c->pool)->n_threads; }

static kr_status kr__eval(kr_context *c, const int32_t *tokens, size_t n, uint32_t pos, float *logits,
                          bool all, kr_err *err)
{
    if (!c || (!tokens && n > 0))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "eval: NULL context or tokens");
    const kr_model *m = c->model;
    if (n == 0)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "eval: no tokens");
    if (pos > c->n_past)
        return kr_err_set(err, KR_ERR_STATE, "eval at position %" PRIu32 " but only %" PRIu32
                          " positions are cached", pos, c->n_past);
    if (n > c->n_ctx || pos > c->n_ctx - n)
        return kr_err_set(err, KR_ERR_RANGE, "eval of %zu tokens at position %" PRIu32
                          " exceeds the context size %" PRIu32, n, pos, c->n_ctx);
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= m->hp.n_vocab)
            return kr_err_set(err, KR_ERR_RANGE, "token %zu: id %" PRId32 " outside [0, %" PRIu32 ")", i,
                              tokens[i], m->hp.n_vocab);

    c->n_past = pos; /* rows from pos on are being rewritten */
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
        kr_forward_args a = {
            .struct_size = sizeof a,
            .hp = &m->hp,
            .w = m->w,
            .n_w = m->n_w,
            .ops = m->ops,
            .ex = kr_pool_exec(c->pool),
            .k_cache = c->k,
            .v_cache = c->v,
            .kv_type = c->kv_type,
            .n_ctx = c->n_ctx,
            .tokens = tokens + done,
            .pos = c->pos,
            .n_tok = nb,
            .pos0 = p0,
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
        c->n_past = p0 + nb;
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
