/* Element types. Values are the GGML/GGUF type ids, so a GGUF tensor type maps
 * to kr_dtype unchanged. Quantized types store elements in blocks of
 * kr_dtype_block_size() values taking kr_dtype_type_size() bytes. */
#ifndef KERNRUN_DTYPE_H
#define KERNRUN_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "kernrun/export.h"

/* X(NAME, ggml id, block size (elements), type size (bytes per block), "name") */
#define KR_DTYPE_MAP(X)                         \
    X(F32, 0, 1, 4, "f32")                      \
    X(F16, 1, 1, 2, "f16")                      \
    X(Q4_0, 2, 32, 18, "q4_0")                  \
    X(Q4_1, 3, 32, 20, "q4_1")                  \
    X(Q5_0, 6, 32, 22, "q5_0")                  \
    X(Q5_1, 7, 32, 24, "q5_1")                  \
    X(Q8_0, 8, 32, 34, "q8_0")                  \
    X(Q8_1, 9, 32, 36, "q8_1")                  \
    X(Q2_K, 10, 256, 84, "q2_k")                \
    X(Q3_K, 11, 256, 110, "q3_k")               \
    X(Q4_K, 12, 256, 144, "q4_k")               \
    X(Q5_K, 13, 256, 176, "q5_k")               \
    X(Q6_K, 14, 256, 210, "q6_k")               \
    X(Q8_K, 15, 256, 292, "q8_k")               \
    X(I8, 24, 1, 1, "i8")                       \
    X(I16, 25, 1, 2, "i16")                     \
    X(I32, 26, 1, 4, "i32")                     \
    X(I64, 27, 1, 8, "i64")                     \
    X(F64, 28, 1, 8, "f64")                     \
    X(BF16, 30, 1, 2, "bf16")

typedef enum kr_dtype {
#define KR__DTYPE_ENUM(name, id, bs, ts, str) KR_DTYPE_##name = (id),
    KR_DTYPE_MAP(KR__DTYPE_ENUM)
#undef KR__DTYPE_ENUM
    KR_DTYPE_COUNT = 40, /* exclusive upper bound of ids; not all below are valid */
    KR_DTYPE_INVALID = -1,
} kr_dtype;

/* True when id names a type listed above (ids of other GGML types, e.g.
 * IQ formats, are known by name only and are not valid here). */
KR_API bool kr_dtype_valid(int id);
/* Elements per block (1 for plain types); 0 if invalid. */
KR_API size_t kr_dtype_block_size(kr_dtype t);
/* Bytes per block; 0 if invalid. */
KR_API size_t kr_dtype_type_size(kr_dtype t);
/* Lower-case name ("q4_0"); GGML's name for other known ids ("iq2_xxs"); "?" if unknown. */
KR_API const char *kr_dtype_name(int id);
/* Parse a name (case-insensitive) -> type; KR_DTYPE_INVALID if none. */
KR_API kr_dtype kr_dtype_from_name(const char *name);
KR_API bool kr_dtype_is_quantized(kr_dtype t);
/* Bytes of one row of n elements; returns false when n is not a multiple of
 * the block size or on overflow. */
KR_API bool kr_dtype_row_size(kr_dtype t, uint64_t n, uint64_t *bytes);

#endif
