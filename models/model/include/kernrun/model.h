/* Model loading and the forward pass (CPU reference path).
 *
 *   kr_model_params mp = kr_model_params_default();
 *   kr_builtin_model_params(&mp);          // archs + CPU ops linked in (kernrun/builtin_model.h)
 *   kr_model *m;  kr_model_load("m.gguf", &mp, &m, &err);
 *   kr_context_params cp = kr_context_params_default();
 *   cp.n_ctx = 2048;  cp.n_threads = 2;
 *   kr_context *c;  kr_context_new(m, &cp, &c, &err);
 *   float *logits = malloc(kr_model_n_vocab(m) * sizeof(float));
 *   kr_model_eval(c, prompt, n_prompt, 0, logits, &err);       // prefill
 *   kr_model_eval(c, &next, 1, n_prompt, logits, &err);        // decode
 *   kr_context_free(c);  kr_model_free(m);
 *
 * Thread safety: a model is read-only after load and may be shared by
 * contexts; one context is used by one thread at a time. Free every
 * context before its model (contexts point into the model).
 */
#ifndef KERNRUN_MODEL_H
#define KERNRUN_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/arch.h"
#include "kernrun/gguf.h"
#include "kernrun/kvcache.h"
#include "kernrun/ops.h"
#include "kernrun/status.h"

typedef struct kr_model kr_model;       /* opaque: weights (mmap), hparams, handler */
typedef struct kr_context kr_context;   /* opaque: KV cache, scratch, threads */
struct kr_registry;

typedef struct kr_model_params {
    /* Architecture handlers to choose from (by general.architecture). When
     * n_archs == 0 the handlers registered in `registry` are used (entries
     * with iface_version == KR_ARCH_IFACE_VERSION). */
    const kr_arch_iface *const *archs;
    size_t n_archs;
    /* Op table for the forward pass. NULL: the registry's "ops.cpu" entry
     * (cpu_ops plugin). Linked in: kr_cpu_ops() or kr_builtin_model_params(). */
    const kr_ops *ops;
    /* Registry (kr_runtime_registry(rt)) that provides handlers when archs
     * is empty and ops when ops is NULL (may be NULL). */
    const struct kr_registry *registry;
    bool no_mmap;           /* read the file into memory instead of mmap */
} kr_model_params;

kr_model_params kr_model_params_default(void);

/* Open `path`, pick the handler, read and validate hparams and the tensor
 * table (missing / extra / misshapen tensors named with both shapes). On
 * error *out is NULL and err says why, prefixed with the path. */
kr_status kr_model_load(const char *path, const kr_model_params *params, kr_model **out, kr_err *err);
void kr_model_free(kr_model *m);

const char *kr_model_arch(const kr_model *m);            /* "llama" */
const kr_hparams *kr_model_hparams(const kr_model *m);
int32_t kr_model_n_vocab(const kr_model *m);
uint32_t kr_model_n_ctx_train(const kr_model *m);
/* The underlying GGUF (tokenizer metadata lives there); owned by the model. */
const kr_gguf *kr_model_gguf(const kr_model *m);
/* Bytes of weights referenced by the tensor table. */
uint64_t kr_model_weight_bytes(const kr_model *m);
/* The weight table in the handler's tensor_table order (*n entries; absent
 * optional tensors have data NULL; KR_TS_TO_F32 vectors are F32 copies).
 * Owned by the model; for backends that upload the weights (cuda_forward). */
const kr_weight *kr_model_weights(const kr_model *m, size_t *n);
/* The entry named `name` ("blk.0.attn_q.weight"), or NULL when the table has
 * none or the tensor is an absent optional one. */
const kr_weight *kr_model_weight(const kr_model *m, const char *name);

typedef struct kr_context_params {
    uint32_t n_ctx;         /* KV cache positions (default: min(n_ctx_train, 4096)) when 0 */
    uint32_t n_batch;       /* max tokens per forward chunk (default 512); longer evals are split */
    int n_threads;          /* worker threads incl. the caller (default: online CPUs, max 16) when <= 0 */
    kr_dtype kv_type;       /* KR_DTYPE_F32 (default), KR_DTYPE_F16 or KR_DTYPE_Q8_0 */
    /* KV cache (kernrun/kvcache.h, docs/KVCACHE.md); fields added at the end */
    uint32_t n_seq;         /* sequence slots in the cache (default 1; kr_context_seq_use) */
    kr_kv_full kv_full;     /* at n_ctx: KR_KV_FULL_STOP (error, default) or KR_KV_FULL_SHIFT */
    uint32_t n_keep;        /* positions an automatic context shift keeps at the start */
    uint64_t kv_mem_limit;  /* bytes the cache + work buffers may take; 0: physical RAM */
    bool kv_no_ring;        /* sliding-window models: n_ctx rows + window mask instead of a window-row ring */
} kr_context_params;

kr_context_params kr_context_params_default(void);

kr_status kr_context_new(kr_model *m, const kr_context_params *p, kr_context **out, kr_err *err);
/* Forget the cached positions (the KV cache contents become unused). */
void kr_context_reset(kr_context *c);
void kr_context_free(kr_context *c);
uint32_t kr_context_n_ctx(const kr_context *c);
/* Number of positions evaluated so far (the next eval's natural pos). */
uint32_t kr_context_n_past(const kr_context *c);
int kr_context_n_threads(const kr_context *c);

/* Evaluate n tokens at positions pos .. pos+n-1 of the current sequence
 * (pos <= n_past: evaluating at an earlier pos rewinds the cache; with
 * kv_full SHIFT and pos == n_past, a full context is shifted first and the
 * tokens go to the new kr_context_n_past()). Writes the logits of the LAST token
 * to logits_last (n_vocab floats) unless it is NULL. Errors: ids outside
 * [0, n_vocab), pos + n > n_ctx (KR_ERR_RANGE), pos > n_past (KR_ERR_STATE). */
kr_status kr_model_eval(kr_context *c, const int32_t *tokens, size_t n, uint32_t pos,
                        float *logits_last, kr_err *err);
/* Same, with logits of every token: logits_all is (n, n_vocab). */
kr_status kr_model_eval_all(kr_context *c, const int32_t *tokens, size_t n, uint32_t pos,
                            float *logits_all, kr_err *err);

#endif
