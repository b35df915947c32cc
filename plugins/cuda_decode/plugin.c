/* cuda_decode plugin: registers the CUDA decode kernels under the op names of
 * kernrun/ops.h ("matmul", "get_rows", "rms_norm", ...) for the registry
 * (dispatch, `kernrun list`). Operand conventions per op: docs/KERNELS.md.
 * All tensor data are device addresses of the call's CUDA backend. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/operand.h"
#include "kernrun/ops.h"
#include "kernrun/plugin.h"
#include "kr_decode.h"

#define KR__DEC_MAX_BACKENDS 4

typedef struct kr__dec_state {
    pthread_mutex_t lock;                    /* guards decs[] */
    kr_dec *decs[KR__DEC_MAX_BACKENDS];      /* (KR__DEC_MAX_BACKENDS,) one per CUDA backend seen */
} kr__dec_state;

static kr_status kr__init(const kr_host *host, void **state, kr_err *err)
{
    kr__dec_state *st = calloc(1, sizeof *st);
    if (!st)
        return host->err_set(err, KR_ERR_NOMEM, "cuda_decode: out of memory");
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        free(st);
        return host->err_set(err, KR_ERR_INTERNAL, "cuda_decode: pthread_mutex_init failed");
    }
    *state = st;
    return KR_OK;
}

static void kr__fini(const kr_host *host, void *state)
{
    kr__dec_state *st = state;
    if (!st)
        return;
    for (int i = 0; i < KR__DEC_MAX_BACKENDS; i++)
        kr_dec_free(st->decs[i]);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* The kr_dec of the call's backend (created on first use). */
static kr_status kr__dec_for(const kr_kernel_call *call, kr_dec **out, kr_err *err)
{
    kr__dec_state *st = call->plugin_state;
    kr_status rc = KR_OK;
    *out = NULL;
    pthread_mutex_lock(&st->lock);
    for (int i = 0; i < KR__DEC_MAX_BACKENDS && !*out; i++) {
        if (st->decs[i] && kr_dec_backend(st->decs[i]) == call->backend)
            *out = st->decs[i];
    }
    for (int i = 0; i < KR__DEC_MAX_BACKENDS && !*out; i++) {
        if (!st->decs[i]) {
            rc = kr_dec_create(call->backend, &st->decs[i], err);
            *out = st->decs[i];
            break;
        }
    }
    pthread_mutex_unlock(&st->lock);
    if (rc == KR_OK && !*out)
        rc = call->host->err_set(err, KR_ERR_LIMIT, "cuda_decode: more than %d CUDA backends",
                                 KR__DEC_MAX_BACKENDS);
    return rc;
}

/* ---- operand checks (cheap, side-effect free) ---- */

static bool kr__f32_vec(const kr_tensor *t)
{
    return t && t->type == KR_DTYPE_F32 && t->data && kr_tensor_is_contiguous(t) &&
           kr_tensor_nelements(t) > 0 && kr_tensor_nelements(t) <= INT32_MAX / 2;
}

static bool kr__has_params(const kr_kernel_args *a, size_t size)
{
    return a->params && a->params_size >= size;
}

/* matmul: src[0] W (ne {cols, rows}, any supported type, rows nb[1] apart),
 * src[1] x F32 (ne {cols, n}), dst F32 (ne {rows, n}). */
static bool kr__mm_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    const kr_tensor *w = kr_operand_src(a, 0), *x = kr_operand_src(a, 1), *y = a->dst;
    if (!w || !x || !y || !w->data || !kr_dec_matvec_supports(w->type) || !kr__f32_vec(x) || !kr__f32_vec(y))
        return false;
    if (w->ne[2] != 1 || w->ne[3] != 1 || x->ne[0] != w->ne[0] || y->ne[0] != w->ne[1] || y->ne[1] != x->ne[1])
        return false;
    return ((uintptr_t)x->data & 15) == 0 && (x->ne[0] % 4) == 0; /* every x row 16-byte aligned */
}

static kr_status kr__mm_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    const kr_tensor *w = a->src[0], *x = a->src[1];
    kr_dec *d;
    kr_status st = kr__dec_for(call, &d, err);
    for (int64_t i = 0; st == KR_OK && i < x->ne[1]; i++)
        st = kr_dec_matvec(d, call->stream, w->type, w->data, w->nb[1], (const float *)x->data + i * x->ne[0],
                           (float *)a->dst->data + i * w->ne[1], w->ne[1], w->ne[0], err);
    return st;
}

/* get_rows: src[0] table (ne {n_embd, n_vocab}), src[1] ids I32 (ne {n}), dst F32 (ne {n_embd, n}). */
static bool kr__gr_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    const kr_tensor *w = kr_operand_src(a, 0), *ids = kr_operand_src(a, 1), *y = a->dst;
    return w && ids && y && w->data && ids->data && kr_dec_matvec_supports(w->type) &&
           ids->type == KR_DTYPE_I32 && kr_tensor_is_contiguous(ids) && kr__f32_vec(y) &&
           y->ne[0] == w->ne[0] && y->ne[1] == kr_tensor_nelements(ids);
}

static kr_status kr__gr_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    const kr_tensor *w = a->src[0], *ids = a->src[1];
    kr_dec *d;
    kr_status st = kr__dec_for(call, &d, err);
    for (int64_t i = 0; st == KR_OK && i < a->dst->ne[1]; i++)
        st = kr_dec_embed(d, call->stream, w->type, w->data, w->nb[1], w->ne[1], w->ne[0],
                          (const int32_t *)ids->data + i, 0, (float *)a->dst->data + i * w->ne[0], err);
    return st;
}

/* rms_norm / layer_norm: src[0] x F32 (ne {dim, rows}), src[1] w F32 (dim) or
 * absent, layer_norm src[2] b F32 (dim) or absent; params float eps; dst like x. */
static bool kr__norm_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    const kr_tensor *x = kr_operand_src(a, 0);
    if (!kr__f32_vec(x) || !kr__f32_vec(a->dst) || !kr_operand_same_shape(x, a->dst) || !kr__has_params(a, sizeof(float)))
        return false;
    for (int i = 1; i < a->n_src; i++) {
        const kr_tensor *p = kr_operand_src(a, i);
        if (p && (!kr__f32_vec(p) || kr_tensor_nelements(p) != x->ne[0]))
            return false;
    }
    return true;
}

static kr_status kr__rms_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    const kr_tensor *x = a->src[0], *w = kr_operand_src(a, 1);
    kr_dec *d;
    kr_status st = kr__dec_for(call, &d, err);
    if (st != KR_OK)
        return st;
    return kr_dec_rmsnorm(d, call->stream, x->data, w ? w->data : NULL, a->dst->data,
                          kr_tensor_nrows(x), x->ne[0], *(const float *)a->params, err);
}

static kr_status kr__ln_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    const kr_tensor *x = a->src[0], *w = kr_operand_src(a, 1), *b = kr_operand_src(a, 2);
    kr_dec *d;
    kr_status st = kr__dec_for(call, &d, err);
    if (st != KR_OK)
        return st;
    return kr_dec_layernorm(d, call->stream, x->data, w ? w->data : NULL, b ? b->data : NULL, a->dst->data,
                            kr_tensor_nrows(x), x->ne[0], *(const float *)a->params, err);
}

/* rope: params kr_rope_args (ops.h) whose x and pos are device addresses. */
static bool kr__rope_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    if (!kr__has_params(a, offsetof(kr_rope_args, freq_factors) + sizeof(const float *)))
        return false;
    const kr_rope_args *r = a->params;
    return r->x && r->pos && r->n_tok > 0 && r->n_head > 0 && r->n_head <= 65535 && r->head_dim > 0 &&
           r->n_rot > 0 && r->n_rot % 2 == 0 && r->n_rot <= r->head_dim &&
           (r->mode == KR_ROPE_NORMAL || r->mode == KR_ROPE_NEOX);
}

static kr_status kr__rope_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_rope_args *r = call->args->params;
    kr_dec *d;
    kr_status st = kr__dec_for(call, &d, err);
    for (uint32_t i = 0; st == KR_OK && i < r->n_tok; i++)
        st = kr_dec_rope(d, call->stream, r->x + (size_t)i * r->n_head * r->head_dim, (int)r->n_head, NULL, 0,
                         (int)r->head_dim, (int)r->n_rot, r->pos + i, 0, r->base, r->freq_scale, r->freq_factors,
                         r->mode == KR_ROPE_NEOX, err);
    return st;
}

/* attention: params kr_attn_args (ops.h) with device q/k/v/out and an F16 cache. */
static bool kr__attn_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    if (!kr__has_params(a, offsetof(kr_attn_args, scale) + sizeof(float)))
        return false;
    const kr_attn_args *t = a->params;
    return t->q && t->k && t->v && t->out && t->kv_type == KR_DTYPE_F16 && t->n_tok > 0 && t->n_head > 0 &&
           t->n_head <= 65535 && t->n_head_kv > 0 && t->n_head % t->n_head_kv == 0 && t->head_dim > 0 &&
           t->head_dim <= 256 && t->head_dim % 2 == 0 && t->n_ctx > 0 && t->n_ctx <= INT32_MAX / 2 &&
           (uint64_t)t->pos0 + t->n_tok <= t->n_ctx;
}

static kr_status kr__attn_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_attn_args *t = call->args->params;
    kr_dec *d;
    kr_status st = kr__dec_for(call, &d, err);
    const size_t row = (size_t)t->n_head * t->head_dim;
    for (uint32_t i = 0; st == KR_OK && i < t->n_tok; i++)
        st = kr_dec_attention(d, call->stream, t->q + i * row, t->k, t->v, t->out + i * row, (int)t->n_head,
                              (int)t->n_head_kv, (int)t->head_dim, (int)t->n_ctx, NULL, (int32_t)(t->pos0 + i),
                              (int)t->window, t->scale, 1, NULL, err);
    return st;
}

/* swiglu: src[0] gate, src[1] up, dst (all F32, same length). gelu: src[0] x, dst.
 * add: dst += src[0]. softmax: rows of src[0] (ne {dim, rows}) into dst (may be src[0]). */
static bool kr__ew_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    return kr_operand_elementwise(a, kr__f32_vec);
}

static bool kr__swiglu_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    return a->n_src == 2 && kr__ew_supports(a, dev);
}

static bool kr__softmax_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    return kr__ew_supports(a, dev) && kr_operand_same_shape(a->src[0], a->dst);
}

#define KR__EW_RUN(fname, expr)                                   \
    static kr_status fname(const kr_kernel_call *call, kr_err *err) \
    {                                                             \
        const kr_kernel_args *a = call->args;                     \
        kr_dec *d;                                                \
        kr_status st = kr__dec_for(call, &d, err);                \
        if (st != KR_OK)                                          \
            return st;                                            \
        const int64_t n = kr_tensor_nelements(a->dst);            \
        (void)n;                                                  \
        return expr;                                              \
    }
KR__EW_RUN(kr__swiglu_run, kr_dec_swiglu(d, call->stream, a->src[0]->data, a->src[1]->data, a->dst->data, n, err))
KR__EW_RUN(kr__gelu_run, kr_dec_gelu(d, call->stream, a->src[0]->data, a->dst->data, n, err))
KR__EW_RUN(kr__add_run, kr_dec_add(d, call->stream, a->dst->data, a->src[0]->data, a->dst->data, n, err))
KR__EW_RUN(kr__softmax_run, kr_dec_softmax(d, call->stream, a->src[0]->data, a->dst->data,
                                           kr_tensor_nrows(a->src[0]), a->src[0]->ne[0], err))
#undef KR__EW_RUN

/* store_kv: src[0] F32 (ne {dim, rows}) -> dst F16 (ne {dim, rows}), contiguous. */
static bool kr__store_kv_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    const kr_tensor *x = kr_operand_src(a, 0), *y = a->dst;
    return kr__f32_vec(x) && y && y->type == KR_DTYPE_F16 && y->data && kr_tensor_is_contiguous(y) &&
           kr_tensor_nelements(y) == kr_tensor_nelements(x);
}

static kr_status kr__store_kv_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    kr_dec *d;
    kr_status st = kr__dec_for(call, &d, err);
    if (st != KR_OK)
        return st;
    /* one "row" of n elements at position 0; K and V targets are the same buffer */
    int n = (int)kr_tensor_nelements(a->dst);
    return kr_dec_kv_append(d, call->stream, a->src[0]->data, a->src[0]->data, a->dst->data, a->dst->data, n, 1,
                            NULL, 0, err);
}

#define KR__DEC_KERNEL(nm, opname, sup, fn, desc)                                          \
    {                                                                                     \
        .name = nm,                       /* unique kernel name */                        \
        .op = opname,                     /* op of kernrun/ops.h */                       \
        .backend = KR_BACKEND_CUDA,       /* device addresses only */                     \
        .n_dtypes = 0,                    /* types checked by supports() */               \
        .priority = 10,                   /* preferred over generic CUDA fallbacks */     \
        .cuda = NULL,                     /* several entry points: fetched by kr_dec */   \
        .supports = sup,                  /* shapes, alignment, params */                 \
        .run = fn,                        /* enqueue on call->stream */                   \
        .description = desc,              /* `kernrun list` */                            \
    }

static const kr_kernel kr__decode_kernels[] = {
    KR__DEC_KERNEL("matvec_cuda", "matmul", kr__mm_supports, kr__mm_run,
                   "y = W x per row of x; W f32/f16/q4_0/q4_1/q8_0/q4_k/q6_k (decode matvec)"),
    KR__DEC_KERNEL("get_rows_cuda", "get_rows", kr__gr_supports, kr__gr_run, "embedding rows, dequantized"),
    KR__DEC_KERNEL("rms_norm_cuda", "rms_norm", kr__norm_supports, kr__rms_run, "RMSNorm, one block per row"),
    KR__DEC_KERNEL("layer_norm_cuda", "layer_norm", kr__norm_supports, kr__ln_run, "LayerNorm (+bias)"),
    KR__DEC_KERNEL("rope_cuda", "rope", kr__rope_supports, kr__rope_run, "RoPE normal/neox, in place"),
    KR__DEC_KERNEL("attention_decode_cuda", "attention", kr__attn_supports, kr__attn_run,
                   "decode attention over an fp16 KV cache (GQA, sliding window)"),
    KR__DEC_KERNEL("swiglu_cuda", "swiglu", kr__swiglu_supports, kr__swiglu_run, "silu(gate) * up"),
    KR__DEC_KERNEL("gelu_cuda", "gelu", kr__ew_supports, kr__gelu_run, "GELU (tanh approximation)"),
    KR__DEC_KERNEL("add_cuda", "add", kr__ew_supports, kr__add_run, "acc += x"),
    KR__DEC_KERNEL("softmax_cuda", "softmax", kr__softmax_supports, kr__softmax_run, "row softmax"),
    KR__DEC_KERNEL("store_kv_cuda", "store_kv", kr__store_kv_supports, kr__store_kv_run, "fp32 -> fp16 rows"),
};

KR_PLUGIN_DEFINE(
    .name = "cuda_decode",
    .version = "0.1.0",
    .description = "CUDA decode-path kernels: quantized matvec, norms, RoPE, KV cache, attention, activations",
    .init = kr__init,
    .fini = kr__fini,
    .kernels = kr__decode_kernels,
    .n_kernels = KR_ARRAY_LEN(kr__decode_kernels))
