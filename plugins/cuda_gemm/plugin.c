/* cuda_gemm plugin: registers the prefill GEMM (kr_gemm.h) as a "matmul"
 * implementation for batches of rows (op conventions of kernrun/ops.h, as
 * cuda_decode's matvec_cuda):
 *   src[0] W (ne {k, n}, F32/F16/Q4_0/Q4_1/Q8_0/Q4_K/Q6_K, rows nb[1] bytes apart),
 *   src[1] x F32 (ne {k, m}, contiguous), dst F32 (ne {n, m}, contiguous).
 * Priority 5: below cuda_decode's matvec (10), so nothing changes for callers
 * that dispatch "matmul" until the prefill path opts in (docs/GEMM.md);
 * `kernrun list` shows it. All tensor data are device addresses of the call's
 * CUDA backend. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/plugin.h"
#include "kr_gemm.h"

#define KR__GM_MAX_BACKENDS 4

typedef struct kr__gm_state {
    pthread_mutex_t lock;                  /* guards gemms[] */
    kr_gemm *gemms[KR__GM_MAX_BACKENDS];   /* (KR__GM_MAX_BACKENDS,) one per CUDA backend seen */
} kr__gm_state;

static kr_status kr__init(const kr_host *host, void **state, kr_err *err)
{
    kr__gm_state *st = calloc(1, sizeof *st);
    if (!st)
        return host->err_set(err, KR_ERR_NOMEM, "cuda_gemm: out of memory");
    if (pthread_mutex_init(&st->lock, NULL) != 0) {
        free(st);
        return host->err_set(err, KR_ERR_INTERNAL, "cuda_gemm: pthread_mutex_init failed");
    }
    *state = st;
    return KR_OK;
}

static void kr__fini(const kr_host *host, void *state)
{
    (void)host;
    kr__gm_state *st = state;
    if (!st)
        return;
    for (int i = 0; i < KR__GM_MAX_BACKENDS; i++)
        kr_gemm_free(st->gemms[i]);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* The kr_gemm of the call's backend (created on first use). */
static kr_status kr__gemm_for(const kr_kernel_call *call, kr_gemm **out, kr_err *err)
{
    kr__gm_state *st = call->plugin_state;
    kr_status rc = KR_OK;
    *out = NULL;
    pthread_mutex_lock(&st->lock);
    for (int i = 0; i < KR__GM_MAX_BACKENDS && !*out; i++)
        if (st->gemms[i] && kr_gemm_backend(st->gemms[i]) == call->backend)
            *out = st->gemms[i];
    for (int i = 0; i < KR__GM_MAX_BACKENDS && !*out; i++) {
        if (!st->gemms[i]) {
            rc = kr_gemm_create(call->backend, &st->gemms[i], err);
            *out = st->gemms[i];
            break;
        }
    }
    pthread_mutex_unlock(&st->lock);
    if (rc == KR_OK && !*out)
        rc = call->host->err_set(err, KR_ERR_LIMIT, "cuda_gemm: more than %d CUDA backends", KR__GM_MAX_BACKENDS);
    return rc;
}

static const kr_tensor *kr__src(const kr_kernel_args *a, int i) { return a->src && i < a->n_src ? a->src[i] : NULL; }

static bool kr__f32_matrix(const kr_tensor *t)
{
    return t && t->type == KR_DTYPE_F32 && t->data && kr_tensor_is_contiguous(t) && t->ne[2] == 1 && t->ne[3] == 1 &&
           t->ne[0] > 0 && t->ne[1] > 0 && t->ne[0] <= INT32_MAX && t->ne[1] <= INT32_MAX;
}

/* Bytes of one row of k weights of type t (k a multiple of its block), 0 if unknown. */
static uint64_t kr__row_bytes(kr_dtype t, int64_t k)
{
    switch (t) {
    case KR_DTYPE_Q4_K: return (uint64_t)(k / 256) * 144;
    case KR_DTYPE_Q6_K: return (uint64_t)(k / 256) * 210;
    case KR_DTYPE_F32: return (uint64_t)k * 4;
    case KR_DTYPE_F16: return (uint64_t)k * 2;
    case KR_DTYPE_Q4_0: return (uint64_t)(k / 32) * 18;
    case KR_DTYPE_Q4_1: return (uint64_t)(k / 32) * 20;
    case KR_DTYPE_Q8_0: return (uint64_t)(k / 32) * 34;
    default: return 0;
    }
}

static size_t kr__align(kr_dtype t)
{
    return t == KR_DTYPE_F32 || t == KR_DTYPE_F16 ? 16 : t == KR_DTYPE_Q4_1 || t == KR_DTYPE_Q4_K ? 4 : 2;
}

/* The same conditions kr_gemm_run checks, so a supported call never fails on arguments. */
static bool kr__mm_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    (void)dev;
    const kr_tensor *w = kr__src(a, 0), *x = kr__src(a, 1), *y = a->dst;
    if (!w || !x || !y || !w->data || !kr_gemm_supports(w->type) || !kr__f32_matrix(x) || !kr__f32_matrix(y))
        return false;
    if (w->ne[2] != 1 || w->ne[3] != 1 || x->ne[0] != w->ne[0] || y->ne[0] != w->ne[1] || y->ne[1] != x->ne[1])
        return false;
    const int64_t k = w->ne[0], blk = w->type == KR_DTYPE_Q4_K || w->type == KR_DTYPE_Q6_K ? 256 : 32;
    if (k < blk || k % blk != 0 || w->ne[1] < 1 || w->ne[1] > INT32_MAX || (x->ne[1] + 63) / 64 > 65535)
        return false;
    const size_t al = kr__align(w->type);
    return w->nb[1] >= kr__row_bytes(w->type, k) && w->nb[1] % al == 0 && (uintptr_t)w->data % al == 0 &&
           (uintptr_t)x->data % 16 == 0;
}

static kr_status kr__mm_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_kernel_args *a = call->args;
    const kr_tensor *w = a->src[0], *x = a->src[1];
    kr_gemm *g;
    kr_status st = kr__gemm_for(call, &g, err);
    if (st != KR_OK)
        return st;
    return kr_gemm_run(g, call->stream, KR_GEMM_AUTO, w->type, w->data, (size_t)w->nb[1], x->data,
                       (size_t)x->ne[0], a->dst->data, (size_t)w->ne[1], x->ne[1], w->ne[1], w->ne[0], err);
}

static const kr_kernel kr__gemm_kernels[] = {
    {
        .name = "gemm_cuda",           /* unique kernel name */
        .op = "matmul",                /* op of kernrun/ops.h */
        .backend = KR_BACKEND_CUDA,    /* device addresses only */
        .n_dtypes = 0,                 /* types checked by supports() */
        .priority = 5,                 /* below matvec_cuda (10) until prefill opts in */
        .cuda = NULL,                  /* several entry points: fetched by kr_gemm */
        .supports = kr__mm_supports,   /* shapes, alignment */
        .run = kr__mm_run,             /* enqueue on call->stream */
        .description = "Y = X W^T for a batch of rows; tensor cores (f16/q4_0/q4_1/q8_0/q4_k/q6_k -> fp16 "
                       "tiles, fp32 accumulate) or fp32 SIMT (f32)",
    },
};

KR_PLUGIN_DEFINE(
    .name = "cuda_gemm",
    .version = "0.1.0",
    .description = "CUDA prefill GEMM: tensor-core mma.sync with on-the-fly dequantization, FP32 SIMT baseline",
    .init = kr__init,
    .fini = kr__fini,
    .kernels = kr__gemm_kernels,
    .n_kernels = KR_ARRAY_LEN(kr__gemm_kernels))
