/* Compute ops used by the architecture forward passes (CPU reference now;
 * CUDA implementations slot in behind the same table later).
 *
 * Header-only interface: arch plugins and op plugins include it but never
 * link libkernrun or the model library. Everything an op needs arrives in
 * its arguments: the executor (thread pool) is a small vtable, weights are
 * views into the model file.
 *
 * Op names (as registered/documented in docs/MODEL.md): "get_rows",
 * "matmul", "rms_norm", "layer_norm", "rope", "attention", "swiglu",
 * "gelu", "add", "add_bias", "softmax", "store_kv".
 *
 * Structs crossing the plugin boundary only grow at the end and carry
 * struct_size; consumers check struct_size >= offsetof(the member) + size.
 */
#ifndef KERNRUN_OPS_H
#define KERNRUN_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/dtype.h"
#include "kernrun/status.h"

#define KR_OPS_VERSION 1
/* Largest head dimension the attention op supports. */
#define KR_OPS_MAX_HEAD_DIM 1024

/* A weight tensor as stored in the model file (host memory, usually the
 * mmap). ne[0] is the fastest (row) dimension: a 2-D weight used as
 * out = W @ x has ne[0] = input dim, ne[1] = output dim. */
typedef struct kr_weight {
    const char *name;       /* tensor name ("blk.0.attn_q.weight"); for messages */
    kr_dtype type;          /* element type (F32/F16/BF16/Q*) */
    uint32_t n_dims;        /* 1..4 */
    uint64_t ne[4];         /* elements per dim; unused dims = 1 */
    uint64_t row_bytes;     /* bytes of one row of ne[0] elements */
    const void *data;       /* (ne[3], ne[2], ne[1], ne[0]) rows of row_bytes; NULL = absent optional */
} kr_weight;

/* Work function for parallel_for: handle items [begin, end). tid in
 * [0, n_threads) identifies the worker (for per-thread scratch). */
typedef void (*kr_par_fn)(void *arg, size_t begin, size_t end, int tid);

/* Executor: a thread pool handed to ops. parallel_for splits [0, n) into at
 * most n_threads contiguous chunks of at least min_chunk items (so tiny work
 * stays on the calling thread) and returns when all are done. */
typedef struct kr_exec {
    uint32_t struct_size;   /* sizeof(kr_exec) of the provider */
    int n_threads;          /* >= 1 */
    void *pool;             /* provider state */
    void (*parallel_for)(void *pool, size_t n, size_t min_chunk, kr_par_fn fn, void *arg);
} kr_exec;

typedef enum kr_rope_mode {
    KR_ROPE_NORMAL = 0,     /* rotate adjacent pairs (x[2i], x[2i+1]) — llama */
    KR_ROPE_NEOX = 2,       /* rotate halves (x[i], x[i + n_rot/2]) — falcon, gpt-neox */
} kr_rope_mode;

/* Causal attention over a KV cache for n_tok consecutive query positions
 * pos0 .. pos0+n_tok-1, whose keys/values are already stored in the cache.
 * Query i (position p = pos0+i), head h, uses kv head h / (n_head/n_head_kv)
 * and keys j with p - window < j <= p (window 0: all j <= p):
 *   out[i, h] = sum_j softmax_j(scale * q[i,h] . k[j,hk]) v[j,hk] */
typedef struct kr_attn_args {
    uint32_t struct_size;   /* sizeof(kr_attn_args) */
    const float *q;         /* (n_tok, n_head * head_dim) */
    const void *k;          /* cache (n_ctx, n_head_kv * head_dim) of kv_type; row = position */
    const void *v;          /* cache (n_ctx, n_head_kv * head_dim) of kv_type */
    kr_dtype kv_type;       /* KR_DTYPE_F32 or KR_DTYPE_F16 */
    float *out;             /* (n_tok, n_head * head_dim) */
    uint32_t n_tok;         /* queries */
    uint32_t n_head;        /* query heads */
    uint32_t n_head_kv;     /* kv heads; divides n_head */
    uint32_t head_dim;      /* <= KR_OPS_MAX_HEAD_DIM */
    uint32_t pos0;          /* position of query 0 */
    uint32_t n_ctx;         /* rows in the cache; pos0 + n_tok <= n_ctx */
    uint32_t window;        /* sliding window (0 = none) */
    float scale;            /* usually 1/sqrt(head_dim) */
} kr_attn_args;

typedef struct kr_rope_args {
    uint32_t struct_size;   /* sizeof(kr_rope_args) */
    float *x;               /* (n_tok, n_head, head_dim), rotated in place */
    const int32_t *pos;     /* (n_tok) positions */
    uint32_t n_tok;
    uint32_t n_head;
    uint32_t head_dim;
    uint32_t n_rot;         /* rotated dims per head (even, <= head_dim); the rest pass through */
    kr_rope_mode mode;
    float base;             /* theta_i = pos * freq_scale * base^(-2i/n_rot) / freq_factors[i] */
    float freq_scale;       /* 1 / linear scaling factor */
    const float *freq_factors; /* (n_rot/2) or NULL (llama-3.1 rope_freqs.weight) */
} kr_rope_args;

/* The op table. Every slot is required. Errors: ops that can fail (memory,
 * unsupported dtypes) return a status and fill err. */
typedef struct kr_ops {
    uint32_t version;       /* KR_OPS_VERSION */
    uint32_t struct_size;   /* sizeof(kr_ops) of the provider */
    const char *name;       /* "cpu" */

    /* out (n, ne[1]) = x (n, ne[0]) @ W^T — W a 2-D weight of any supported type */
    kr_status (*matmul)(const kr_exec *ex, const kr_weight *w, const float *x, size_t n,
                        float *out, kr_err *err);
    /* out (n, ne[0]) = rows ids[0..n) of W (dequantized); ids checked against ne[1] */
    kr_status (*get_rows)(const kr_exec *ex, const kr_weight *w, const int32_t *ids, size_t n,
                          float *out, kr_err *err);
    /* out (n, dim) = x / sqrt(mean(x^2) + eps) * w   (w (dim) or NULL) */
    void (*rms_norm)(const kr_exec *ex, const float *x, const float *w, size_t n, size_t dim,
                     float eps, float *out);
    /* out (n, dim) = (x - mean) / sqrt(var + eps) * w + b   (w, b (dim) or NULL) */
    void (*layer_norm)(const kr_exec *ex, const float *x, const float *w, const float *b,
                       size_t n, size_t dim, float eps, float *out);
    void (*rope)(const kr_exec *ex, const kr_rope_args *a);
    kr_status (*attention)(const kr_exec *ex, const kr_attn_args *a, kr_err *err);
    /* out (n) = silu(gate) * up   (out may alias gate or up) */
    void (*swiglu)(const kr_exec *ex, const float *gate, const float *up, size_t n, float *out);
    /* out (n) = gelu(x), tanh approximation (as llama.cpp / GPT-2); out may alias x */
    void (*gelu)(const kr_exec *ex, const float *x, size_t n, float *out);
    /* acc (n) += x (n) */
    void (*add)(const kr_exec *ex, float *acc, const float *x, size_t n);
    /* x (rows, dim) += b (dim) per row */
    void (*add_bias)(const kr_exec *ex, float *x, const float *b, size_t rows, size_t dim);
    /* softmax over each row of x (rows, dim), in place */
    void (*softmax)(const kr_exec *ex, float *x, size_t rows, size_t dim);
    /* dst rows = src (rows, dim) fp32 converted to type (F32 or F16); dst row stride = dim */
    kr_status (*store_kv)(const kr_exec *ex, const float *src, size_t rows, size_t dim,
                          kr_dtype type, void *dst, kr_err *err);
} kr_ops;

#endif
