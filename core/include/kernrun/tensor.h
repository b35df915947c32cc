/* Tensor descriptor: a typed, strided view of up to 4 dimensions.
 *
 * ne[0] is the innermost (fastest varying) dimension, as in GGUF/GGML: a
 * matrix of R rows and C columns has ne = {C, R, 1, 1}. nb[i] is the byte
 * stride of dimension i; for quantized types nb[0] is the size of one block
 * and ne[0] must be a multiple of the block size.
 *
 * Everything here is header-only (static inline) so plugins, which never
 * link libkernrun, can use it.
 */
#ifndef KERNRUN_TENSOR_H
#define KERNRUN_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/dtype.h"
#include "kernrun/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KR_MAX_DIMS 4

typedef struct kr_buffer kr_buffer; /* backend memory, see backend.h */

typedef struct kr_tensor {
    kr_dtype type;            /* element type (GGUF type id) */
    int64_t ne[KR_MAX_DIMS];  /* (4,) elements per dimension, innermost first; unused dims = 1 */
    size_t nb[KR_MAX_DIMS];   /* (4,) byte stride per dimension */
    void *data;               /* address of element (0,0,0,0) in the buffer's address space:
                                 host pointer (CPU) or device pointer (CUDA); NULL = not allocated */
    kr_buffer *buf;           /* owning buffer, NULL for plain host memory the caller owns */
    const char *name;         /* optional, for messages ("blk.3.attn_q.weight"); not owned */
} kr_tensor;

/* Elements per block / bytes per block of a type; 0 when the type is invalid.
 * Inline twins of kr_dtype_block_size / kr_dtype_type_size for plugins. */
static inline size_t kr_tensor_type_block_size(kr_dtype t)
{
    switch (t) {
#define KR__T_BS(nm, id, bs, ts, str) case KR_DTYPE_##nm: return bs;
        KR_DTYPE_MAP(KR__T_BS)
#undef KR__T_BS
    default: return 0;
    }
}
static inline size_t kr_tensor_type_size(kr_dtype t)
{
    switch (t) {
#define KR__T_TS(nm, id, bs, ts, str) case KR_DTYPE_##nm: return ts;
        KR_DTYPE_MAP(KR__T_TS)
#undef KR__T_TS
    default: return 0;
    }
}

/* Total elements. Assumes a validated tensor (kr_tensor_init or checked by
 * the loader); returns -1 on a negative dim or overflow. */
static inline int64_t kr_tensor_nelements(const kr_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < KR_MAX_DIMS; i++) {
        if (t->ne[i] < 0 || __builtin_mul_overflow(n, t->ne[i], &n))
            return -1;
    }
    return n;
}

/* Number of rows (ne[1]*ne[2]*ne[3]); -1 on overflow. */
static inline int64_t kr_tensor_nrows(const kr_tensor *t)
{
    int64_t n = 1;
    for (int i = 1; i < KR_MAX_DIMS; i++) {
        if (t->ne[i] < 0 || __builtin_mul_overflow(n, t->ne[i], &n))
            return -1;
    }
    return n;
}

/* Bytes spanned by the tensor: offset of the last element + its block, i.e.
 * the buffer size a (possibly strided) view needs. Returns false on overflow
 * or invalid type; an empty tensor spans 0 bytes. */
static inline bool kr_tensor_span(const kr_tensor *t, size_t *bytes)
{
    size_t bs = kr_tensor_type_block_size(t->type), ts = kr_tensor_type_size(t->type);
    if (bs == 0 || t->ne[0] < 0 || (uint64_t)t->ne[0] % bs != 0)
        return false;
    size_t last = 0;
    for (int i = 0; i < KR_MAX_DIMS; i++) {
        if (t->ne[i] < 0)
            return false;
        if (t->ne[i] == 0) {
            *bytes = 0;
            return true;
        }
        uint64_t n = (uint64_t)t->ne[i];
        if (i == 0)
            n /= bs;
        size_t part;
        if (__builtin_mul_overflow((size_t)(n - 1), t->nb[i], &part) ||
            __builtin_add_overflow(last, part, &last))
            return false;
    }
    return !__builtin_add_overflow(last, ts, bytes);
}

/* Bytes of the data of a contiguous tensor (nelements/block * type size).
 * Returns false on overflow, invalid type or ne[0] not a multiple of the block. */
static inline bool kr_tensor_nbytes(const kr_tensor *t, size_t *bytes)
{
    size_t bs = kr_tensor_type_block_size(t->type), ts = kr_tensor_type_size(t->type);
    if (bs == 0 || t->ne[0] < 0 || (uint64_t)t->ne[0] % bs != 0)
        return false;
    size_t n = (size_t)t->ne[0] / bs;
    for (int i = 1; i < KR_MAX_DIMS; i++) {
        if (t->ne[i] < 0 || __builtin_mul_overflow(n, (size_t)t->ne[i], &n))
            return false;
    }
    return !__builtin_mul_overflow(n, ts, bytes);
}

/* True when the strides are the packed row-major ones for the shape
 * (dimensions of extent 1 may have any stride). */
static inline bool kr_tensor_is_contiguous(const kr_tensor *t)
{
    size_t bs = kr_tensor_type_block_size(t->type), ts = kr_tensor_type_size(t->type);
    if (bs == 0 || t->ne[0] < 0 || (uint64_t)t->ne[0] % bs != 0)
        return false;
    size_t expect = ts;
    for (int i = 0; i < KR_MAX_DIMS; i++) {
        if (t->ne[i] < 0)
            return false;
        if (t->ne[i] != 1 && t->nb[i] != expect)
            return false;
        uint64_t n = (uint64_t)t->ne[i];
        if (i == 0)
            n /= bs;
        if (__builtin_mul_overflow(expect, (size_t)n, &expect))
            return false;
    }
    return true;
}

/* Fill *t as a contiguous tensor of shape (ne0, ne1, ne2, ne3) with packed
 * strides; data/buf/name are left NULL. KR_ERR_INVALID_ARG for an invalid
 * type, negative dims or ne0 not a multiple of the block size,
 * KR_ERR_OVERFLOW when the byte size does not fit size_t. */
static inline kr_status kr_tensor_init(kr_tensor *t, kr_dtype type, int64_t ne0, int64_t ne1,
                                       int64_t ne2, int64_t ne3)
{
    size_t bs = kr_tensor_type_block_size(type), ts = kr_tensor_type_size(type);
    int64_t ne[KR_MAX_DIMS] = {ne0, ne1, ne2, ne3};
    if (bs == 0 || ne0 < 0 || ne1 < 0 || ne2 < 0 || ne3 < 0 || (uint64_t)ne0 % bs != 0)
        return KR_ERR_INVALID_ARG;
    t->type = type;
    t->data = NULL;
    t->buf = NULL;
    t->name = NULL;
    size_t stride = ts;
    for (int i = 0; i < KR_MAX_DIMS; i++) {
        t->ne[i] = ne[i];
        t->nb[i] = stride;
        uint64_t n = (uint64_t)ne[i];
        if (i == 0)
            n /= bs;
        if (__builtin_mul_overflow(stride, (size_t)n, &stride))
            return KR_ERR_OVERFLOW;
    }
    return KR_OK;
}

#ifdef __cplusplus
}
#endif
#endif
