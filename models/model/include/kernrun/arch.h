/* Architecture handler interface (llama, mistral, falcon, ...).
 *
 * An arch plugin registers a kr_arch_entry { name, iface_version =
 * KR_ARCH_IFACE_VERSION, iface = const kr_arch_iface * }. The model library
 * (models/model) picks the handler by general.architecture and drives it:
 *   1. load_hparams(meta)       hyperparameters from metadata, with defaults
 *   2. tensor_table(hp)         the expected tensors: name, shape, flags
 *   3. (model lib validates the file against the table: missing, extra and
 *       misshapen tensors are reported by name; hparams checked)
 *   4. scratch_size(hp, n_tok)  bytes of scratch for a batch
 *   5. forward(args)            one batch through the network
 * Header-only for plugins: they never link libkernrun; metadata arrives via
 * kr_meta_i, compute via kr_ops (kernrun/ops.h).
 */
#ifndef KERNRUN_ARCH_H
#define KERNRUN_ARCH_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "kernrun/ops.h"
#include "kernrun/err_local.h"
#include "kernrun/status.h"

#define KR_ARCH_IFACE_VERSION 1
#define KR_ARCH_NAME_MAX 64          /* tensor names, like GGUF's limit */

/* Hyperparameters (all validated by the model library after load_hparams). */
typedef struct kr_hparams {
    uint32_t n_vocab;          /* rows of token_embd (set by the model lib before load_hparams) */
    uint32_t n_ctx_train;      /* <arch>.context_length */
    uint32_t n_embd;           /* <arch>.embedding_length */
    uint32_t n_layer;          /* <arch>.block_count */
    uint32_t n_head;           /* <arch>.attention.head_count */
    uint32_t n_head_kv;        /* <arch>.attention.head_count_kv (default n_head) */
    uint32_t head_dim;         /* <arch>.attention.key_length (default n_embd / n_head) */
    uint32_t n_rot;            /* <arch>.rope.dimension_count (default head_dim) */
    uint32_t n_ff;             /* <arch>.feed_forward_length */
    float norm_eps;            /* RMSNorm or LayerNorm epsilon */
    float rope_base;           /* <arch>.rope.freq_base (default 10000) */
    float rope_freq_scale;     /* 1 / <arch>.rope.scaling.factor for linear scaling (default 1) */
    uint32_t sliding_window;   /* <arch>.attention.sliding_window (0 = full causal) */
    kr_rope_mode rope_mode;    /* normal (llama) or neox (falcon) */
    uint32_t flags;            /* arch-specific bits (KR_HP_*) */
} kr_hparams;

#define KR_HP_TIED_OUTPUT 0x1u     /* no output.weight: logits use token_embd */

/* Tensor spec flags */
#define KR_TS_OPTIONAL 0x1u        /* may be absent (weight view then has data == NULL) */
#define KR_TS_TO_F32 0x2u          /* small vector (norm/bias): the model lib hands it as F32 */

typedef struct kr_tensor_spec {
    char name[KR_ARCH_NAME_MAX];   /* "blk.3.attn_q.weight" */
    uint32_t n_dims;               /* 1..4 */
    uint64_t ne[4];                /* expected shape, ne[0] fastest; unused = 1 */
    uint32_t flags;                /* KR_TS_* */
} kr_tensor_spec;

/* Metadata accessor (GGUF keys). Getters return KR_ERR_NOT_FOUND when the key
 * is absent (err untouched) and KR_ERR_TYPE (message set) on a wrong type. */
typedef struct kr_meta_i {
    uint32_t struct_size;
    const void *ctx;
    /* any non-negative integer type */
    kr_status (*get_uint)(const void *ctx, const char *key, uint64_t *out, kr_err *err);
    /* float32 or float64 */
    kr_status (*get_f32)(const void *ctx, const char *key, float *out, kr_err *err);
    /* string: *s points at len bytes, NOT NUL-terminated */
    kr_status (*get_str)(const void *ctx, const char *key, const char **s, size_t *len, kr_err *err);
    kr_status (*get_bool)(const void *ctx, const char *key, bool *out, kr_err *err);
} kr_meta_i;

/* One forward batch. The model lib owns every buffer. */
typedef struct kr_forward_args {
    uint32_t struct_size;      /* sizeof(kr_forward_args) */
    const kr_hparams *hp;
    const kr_weight *w;        /* (n_tensors) in tensor_table order; absent optional: data NULL */
    size_t n_w;
    const kr_ops *ops;
    const kr_exec *ex;
    void *const *k_cache;      /* (n_layer) each (n_ctx, n_head_kv * head_dim) of kv_type */
    void *const *v_cache;      /* (n_layer) each (n_ctx, n_head_kv * head_dim) of kv_type */
    kr_dtype kv_type;          /* F32 or F16 */
    uint32_t n_ctx;            /* cache rows */
    const int32_t *tokens;     /* (n_tok) ids in [0, n_vocab) (checked by the model lib) */
    const int32_t *pos;        /* (n_tok) positions pos0 .. pos0+n_tok-1 */
    uint32_t n_tok;            /* >= 1; pos0 + n_tok <= n_ctx */
    uint32_t pos0;
    float *logits;             /* (n_tok, n_vocab) if logits_all, else (n_vocab) for the last token; NULL: none */
    bool logits_all;
    void *scratch;             /* scratch_size(hp, n_tok) bytes, 64-byte aligned */
    size_t scratch_bytes;
} kr_forward_args;

typedef struct kr_arch_iface {
    uint32_t version;          /* KR_ARCH_IFACE_VERSION */
    uint32_t struct_size;      /* sizeof(kr_arch_iface) */
    const char *name;          /* general.architecture value ("llama") */
    /* Fill hp from metadata (prefix keys with `name`). hp->n_vocab is preset. */
    kr_status (*load_hparams)(const kr_meta_i *meta, kr_hparams *hp, kr_err *err);
    /* Expected tensors. specs NULL: only *n is set. Else writes min(cap, count) and sets *n = count. */
    kr_status (*tensor_table)(const kr_hparams *hp, kr_tensor_spec *specs, size_t cap, size_t *n,
                              kr_err *err);
    /* Scratch bytes for a batch of n_tok tokens (checked math; KR_ERR_OVERFLOW on overflow). */
    kr_status (*scratch_size)(const kr_hparams *hp, uint32_t n_tok, size_t *bytes, kr_err *err);
    kr_status (*forward)(const kr_forward_args *a, kr_err *err);
} kr_arch_iface;

/* Plugins cannot call libkernrun's kr_err_set: they format errors with
 * kr_err_set_local (kernrun/err_local.h, included above). */

#endif
