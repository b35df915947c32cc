/* Private: the host KV cache object behind a kr_context (kvcache.c). */
#ifndef KERNRUN_KVCACHE_INT_H
#define KERNRUN_KVCACHE_INT_H

#include "kernrun/kvcache.h"
#include "kernrun/ops.h"

typedef struct kr_kv kr_kv;

typedef struct kr_kv_params {
    const kr_hparams *hp;
    const kr_ops *ops;           /* the model's op table (attention, rope) */
    const float *freq_factors;   /* (n_rot/2) rope_freqs.weight or NULL */
    uint32_t n_batch;            /* max tokens per forward */
    uint64_t mem_limit;          /* bytes (0 = physical RAM) */
    uint64_t extra_bytes;        /* other allocations of the context counted against the limit */
} kr_kv_params;

/* The plan must come from kr_kv_plan_make for the same hparams. Checks the
 * fit, then allocates. */
kr_status kr_kv_new(const kr_kv_plan *pl, const kr_kv_params *p, kr_kv **out, kr_err *err);
void kr_kv_free(kr_kv *kv);
const kr_kv_plan *kr_kv_get_plan(const kr_kv *kv);

/* What a forward batch at absolute positions pos0 .. pos0+n_tok-1 of the
 * current sequence gets: a wrapped op table and executor (attention goes
 * through the cache), and staging "caches" (one shared buffer, layer l at a
 * distinct float offset) that the arch writes the new K/V rows to at row 0.
 * Pass pos0 0, n_ctx n_batch and kv_type F32 in kr_forward_args. */
typedef struct kr_kv_batch {
    const kr_ops *ops;
    const kr_exec *ex;
    void *const *k_cache;
    void *const *v_cache;
    uint32_t n_ctx;
} kr_kv_batch;
void kr_kv_begin(kr_kv *kv, const kr_exec *real_ex, uint32_t pos0, uint32_t n_tok, kr_kv_batch *b);

uint32_t kr_kv_n_past(const kr_kv *kv);
void kr_kv_set_n_past(kr_kv *kv, uint32_t n);
/* KR_OK when evaluating at pos (<= n_past) keeps every key it needs. */
kr_status kr_kv_can_rewind(const kr_kv *kv, uint32_t pos, kr_err *err);

kr_status kr_kv_seq_use(kr_kv *kv, int32_t id, kr_err *err);
int32_t kr_kv_seq_current(const kr_kv *kv);
bool kr_kv_seq_cached(const kr_kv *kv, int32_t id);
kr_status kr_kv_seq_pin(kr_kv *kv, int32_t id, bool pinned, kr_err *err);
void kr_kv_seq_drop(kr_kv *kv, int32_t id);
kr_status kr_kv_shift(kr_kv *kv, const kr_exec *ex, uint32_t n_keep, uint32_t *n_discarded, kr_err *err);
kr_status kr_kv_read(const kr_kv *kv, uint32_t layer, uint32_t pos, float *k, float *v, kr_err *err);

#endif
