/* Private to models/gguf: shared between the reader and the writer. */
#ifndef KERNRUN_GGUF_INTERNAL_H
#define KERNRUN_GGUF_INTERNAL_H

#include <stdint.h>

#include "kernrun/gguf.h"

#define KR__GGUF_MAGIC "GGUF"
#define KR__GGUF_VERSION_MIN 2u
#define KR__GGUF_VERSION_MAX 3u
#define KR__GGUF_MAX_KEY_LEN 65536u   /* bytes, a key longer than this is rejected */
#define KR__GGUF_MAX_NAME_LEN 63u     /* tensor name bytes (GGML_MAX_NAME 64 with NUL) */
/* Smallest possible encodings, used to bound counts by the bytes left before
 * anything is allocated: */
#define KR__GGUF_MIN_KV_BYTES 14u     /* key len (8) + 1 key byte + type (4) + 1 value byte */
#define KR__GGUF_MIN_TINFO_BYTES 33u  /* name len (8) + 1 + n_dims (4) + ne (8) + type (4) + offset (8) */
#define KR__GGUF_MIN_STR_BYTES 8u     /* length prefix of an empty string */

/* Size in bytes of one element of a fixed-size value type; 0 for STRING,
 * ARRAY and unknown types. */
uint64_t kr__gguf_type_size(kr_gguf_type t);

/* The encoded value of metadata entry i as it appears in the file, starting
 * right after its type field (for arrays: element type, count, elements). */
kr_status kr__gguf_kv_raw(const kr_gguf *g, int64_t i, kr_gguf_type *type, const uint8_t **ptr,
                          uint64_t *size);

static inline uint32_t kr__rd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t kr__rd_u64(const uint8_t *p)
{
    return (uint64_t)kr__rd_u32(p) | (uint64_t)kr__rd_u32(p + 4) << 32;
}

#endif
