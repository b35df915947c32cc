/* GGUF v2/v3 reader and writer.
 *
 * The reader mmaps the file and validates everything before returning: header,
 * every metadata key/value, tensor infos (dims, types, sizes, offsets against the
 * file length, alignment). Files are untrusted: any malformed input yields a
 * status and a message naming the item and the values; nothing aborts, nothing
 * reads out of bounds. Tensor data is not touched until the caller reads it.
 */
#ifndef KERNRUN_GGUF_H
#define KERNRUN_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/dtype.h"
#include "kernrun/status.h"

#define KR_GGUF_MAX_DIMS 4
#define KR_GGUF_DEFAULT_ALIGNMENT 32

typedef enum kr_gguf_type {
    KR_GGUF_UINT8 = 0,
    KR_GGUF_INT8 = 1,
    KR_GGUF_UINT16 = 2,
    KR_GGUF_INT16 = 3,
    KR_GGUF_UINT32 = 4,
    KR_GGUF_INT32 = 5,
    KR_GGUF_FLOAT32 = 6,
    KR_GGUF_BOOL = 7,
    KR_GGUF_STRING = 8,
    KR_GGUF_ARRAY = 9,
    KR_GGUF_UINT64 = 10,
    KR_GGUF_INT64 = 11,
    KR_GGUF_FLOAT64 = 12,
    KR_GGUF_TYPE_COUNT
} kr_gguf_type;

typedef struct kr_gguf kr_gguf; /* opaque reader handle */

/* A string inside the mapped file: NOT NUL-terminated; len bytes at ptr. */
typedef struct kr_gguf_str {
    const char *ptr;
    uint64_t len;
} kr_gguf_str;

/* One decoded metadata value (or array element), widened: unsigned integers
 * in u, signed in i, f32/f64 in f, bool in b, strings in s. */
typedef struct kr_gguf_value {
    kr_gguf_type type;          /* the element's stored type (never ARRAY) */
    union {
        uint64_t u;
        int64_t i;
        double f;
        bool b;
        kr_gguf_str s;
    };
} kr_gguf_value;

typedef struct kr_gguf_tensor {
    const char *name;           /* NUL-terminated copy owned by the reader */
    kr_dtype type;              /* validated element type */
    uint32_t n_dims;            /* 1..4 */
    uint64_t ne[KR_GGUF_MAX_DIMS]; /* elements per dim, ne[0] fastest; unused dims = 1 */
    uint64_t offset;            /* relative to the data section start */
    uint64_t size;              /* bytes (checked) */
    const void *data;           /* pointer into the mapping (data section + offset) */
} kr_gguf_tensor;

typedef struct kr_gguf_open_opts {
    bool no_mmap;               /* read the whole file into memory instead of mmap */
    /* Quantized tensors whose row length (ne[0]) is not a multiple of the
     * block size are always rejected, naming the tensor. */
} kr_gguf_open_opts;

/* Open + fully validate (opts may be NULL). On error returns non-OK, *out is
 * NULL, err says why (prefixed with the path). Status: KR_ERR_FORMAT for
 * malformed files, KR_ERR_UNSUPPORTED for v1, big-endian, newer versions and
 * unimplemented tensor types, KR_ERR_NOT_FOUND / KR_ERR_IO for the file.
 * The handle is read-only after open: concurrent readers need no locking.
 * Tensor data pointers stay valid until kr_gguf_close. */
kr_status kr_gguf_open(const char *path, const kr_gguf_open_opts *opts, kr_gguf **out, kr_err *err);
/* Parse a buffer the caller owns and keeps alive for the handle's lifetime. */
kr_status kr_gguf_open_memory(const void *data, size_t size, kr_gguf **out, kr_err *err);
void kr_gguf_close(kr_gguf *g);

uint32_t kr_gguf_version(const kr_gguf *g);
uint64_t kr_gguf_alignment(const kr_gguf *g);
uint64_t kr_gguf_data_offset(const kr_gguf *g);   /* file offset of the data section */
uint64_t kr_gguf_file_size(const kr_gguf *g);

/* Metadata */
int64_t kr_gguf_n_kv(const kr_gguf *g);
int64_t kr_gguf_find_key(const kr_gguf *g, const char *key);   /* index or -1 */
const char *kr_gguf_key(const kr_gguf *g, int64_t i);          /* NUL-terminated copy */
/* KR_GGUF_TYPE_COUNT when i is out of range. */
kr_gguf_type kr_gguf_kv_type(const kr_gguf *g, int64_t i);
/* For arrays: element type and count (KR_GGUF_TYPE_COUNT / 0 for non-arrays). */
kr_gguf_type kr_gguf_arr_type(const kr_gguf *g, int64_t i);
uint64_t kr_gguf_arr_n(const kr_gguf *g, int64_t i);
/* Value of entry i: idx must be 0 for a scalar/string, < arr_n for an array.
 * KR_ERR_RANGE when i or idx is out of range. */
kr_status kr_gguf_kv_value(const kr_gguf *g, int64_t i, uint64_t idx, kr_gguf_value *out, kr_err *err);

/* Typed getters by key: KR_ERR_NOT_FOUND when missing, KR_ERR_TYPE when the
 * stored type differs (message names key, expected and found types). */
kr_status kr_gguf_get_u32(const kr_gguf *g, const char *key, uint32_t *out, kr_err *err);
kr_status kr_gguf_get_i32(const kr_gguf *g, const char *key, int32_t *out, kr_err *err);
kr_status kr_gguf_get_u64(const kr_gguf *g, const char *key, uint64_t *out, kr_err *err);
kr_status kr_gguf_get_f32(const kr_gguf *g, const char *key, float *out, kr_err *err);
kr_status kr_gguf_get_bool(const kr_gguf *g, const char *key, bool *out, kr_err *err);
kr_status kr_gguf_get_i64(const kr_gguf *g, const char *key, int64_t *out, kr_err *err);
kr_status kr_gguf_get_f64(const kr_gguf *g, const char *key, double *out, kr_err *err);
kr_status kr_gguf_get_str(const kr_gguf *g, const char *key, kr_gguf_str *out, kr_err *err);
/* Any unsigned/signed integer type that fits in uint64 (non-negative; a
 * negative value gives KR_ERR_RANGE). */
kr_status kr_gguf_get_uint(const kr_gguf *g, const char *key, uint64_t *out, kr_err *err);

/* Arrays: element access with bounds and type checks. */
kr_status kr_gguf_get_arr(const kr_gguf *g, const char *key, kr_gguf_type elem_type,
                          uint64_t *n, kr_err *err);
kr_status kr_gguf_arr_str(const kr_gguf *g, const char *key, uint64_t idx, kr_gguf_str *out, kr_err *err);
/* Raw pointer to a numeric array's packed elements (little-endian, unaligned
 * access must use memcpy). */
kr_status kr_gguf_arr_data(const kr_gguf *g, const char *key, kr_gguf_type elem_type,
                           const void **data, uint64_t *n, kr_err *err);

/* Tensors */
int64_t kr_gguf_n_tensors(const kr_gguf *g);
const kr_gguf_tensor *kr_gguf_tensor_at(const kr_gguf *g, int64_t i);
const kr_gguf_tensor *kr_gguf_find_tensor(const kr_gguf *g, const char *name);

const char *kr_gguf_type_name(kr_gguf_type t);

/* ---- Writer: metadata + tensor infos first, then tensor data streamed. ---- */
typedef struct kr_gguf_writer kr_gguf_writer;

kr_status kr_gguf_writer_open(const char *path, kr_gguf_writer **out, kr_err *err);
/* Metadata (must precede tensor declarations being finalised). */
kr_status kr_gguf_writer_set_u32(kr_gguf_writer *w, const char *key, uint32_t v);
kr_status kr_gguf_writer_set_i32(kr_gguf_writer *w, const char *key, int32_t v);
kr_status kr_gguf_writer_set_u64(kr_gguf_writer *w, const char *key, uint64_t v);
kr_status kr_gguf_writer_set_f32(kr_gguf_writer *w, const char *key, float v);
kr_status kr_gguf_writer_set_bool(kr_gguf_writer *w, const char *key, bool v);
kr_status kr_gguf_writer_set_str(kr_gguf_writer *w, const char *key, const char *v);
/* Any fixed-size scalar type (u8..f64, bool); v points to a value of the
 * matching C type (uint8_t, int16_t, double, bool ...). */
kr_status kr_gguf_writer_set_scalar(kr_gguf_writer *w, const char *key, kr_gguf_type type, const void *v);
/* Array of elem_type; for STRING, data is `const char *const *`. */
kr_status kr_gguf_writer_set_arr(kr_gguf_writer *w, const char *key, kr_gguf_type elem_type,
                                 const void *data, uint64_t n);
/* Copy a key/value verbatim from a reader (e.g. the tokenizer from a vocab file). */
kr_status kr_gguf_writer_copy_kv(kr_gguf_writer *w, const kr_gguf *src, int64_t idx);
/* Declare a tensor (shape ne[0..n_dims-1]); its data is written later, in
 * declaration order. Names are 1..63 bytes and unique; ne[0] must be a
 * multiple of the type's block size. */
kr_status kr_gguf_writer_add_tensor(kr_gguf_writer *w, const char *name, kr_dtype type,
                                    uint32_t n_dims, const uint64_t *ne);
/* Write header, metadata and tensor infos; after this only tensor data. */
kr_status kr_gguf_writer_begin_data(kr_gguf_writer *w);
/* Append bytes of the current tensor (may be called repeatedly; the writer pads
 * and advances to the next tensor when the declared size is reached). */
kr_status kr_gguf_writer_write_data(kr_gguf_writer *w, const void *data, size_t n);
/* Check all data was written, flush, fsync-less close. */
kr_status kr_gguf_writer_finish(kr_gguf_writer *w);
/* Last error message of the writer. */
const char *kr_gguf_writer_error(const kr_gguf_writer *w);
void kr_gguf_writer_free(kr_gguf_writer *w);

#endif
