/* Private structures of the model library. */
#ifndef KERNRUN_MODEL_INTERNAL_H
#define KERNRUN_MODEL_INTERNAL_H

#include "kernrun/model.h"
#include "kvcache_int.h"
#include "pool.h"

struct kr_model {
    kr_gguf *gguf;                 /* owns the mapping all weight views point into */
    const kr_arch_iface *arch;     /* handler chosen by general.architecture */
    const kr_ops *ops;             /* op table for forward */
    char arch_name[64];            /* general.architecture */
    kr_hparams hp;
    kr_tensor_spec *specs;         /* (n_w) expected tensor table */
    kr_weight *w;                  /* (n_w) views, table order; absent optional: data NULL */
    float **f32;                   /* (n_w) owned fp32 copies for KR_TS_TO_F32 tensors, else NULL */
    size_t n_w;
    uint64_t weight_bytes;
};

struct kr_context {
    kr_model *model;
    kr_pool *pool;
    uint32_t n_ctx;                /* cache rows */
    uint32_t n_batch;              /* max tokens per forward */
    kr_dtype kv_type;
    kr_kv *kv;                     /* KV cache: slots, ring, storage (kvcache.c) */
    kr_kv_full kv_full;            /* full context: stop or shift */
    uint32_t n_keep;               /* positions kept by an automatic shift */
    void *scratch;                 /* arch scratch for n_batch tokens */
    size_t scratch_bytes;
    int32_t *pos;                  /* (n_batch) positions */
};

#endif
