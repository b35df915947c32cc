/* A tiny GGUF byte builder for tests, independent of models/gguf's writer (so
 * a writer bug cannot hide a reader bug). It writes exactly what it is told,
 * valid or not: the encoding follows the GGUF spec (little-endian; strings are
 * u64 length + bytes; kv = key, u32 type, value; tensor info = name, u32
 * n_dims, u64 ne[n_dims], u32 type, u64 offset). */
#ifndef KR_TEST_GGUF_BUILDER_H
#define KR_TEST_GGUF_BUILDER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct gb {
    uint8_t *p;
    size_t n, cap;
} gb;

/* GGUF value type ids (spec numbers, written out here on purpose). */
enum { GB_U8 = 0, GB_I8, GB_U16, GB_I16, GB_U32, GB_I32, GB_F32, GB_BOOL, GB_STR, GB_ARR, GB_U64, GB_I64, GB_F64 };

static inline void gb_raw(gb *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n)
            nc *= 2;
        uint8_t *np = realloc(b->p, nc);
        if (!np) {
            fprintf(stderr, "gb: out of memory\n");
            exit(1);
        }
        b->p = np;
        b->cap = nc;
    }
    if (n)
        memcpy(b->p + b->n, src, n);
    b->n += n;
}

static inline void gb_u8(gb *b, uint8_t v) { gb_raw(b, &v, 1); }
static inline void gb_u16(gb *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    gb_raw(b, x, 2);
}
static inline void gb_u32(gb *b, uint32_t v)
{
    uint8_t x[4];
    for (int i = 0; i < 4; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    gb_raw(b, x, 4);
}
static inline void gb_u64(gb *b, uint64_t v)
{
    uint8_t x[8];
    for (int i = 0; i < 8; i++)
        x[i] = (uint8_t)(v >> (8 * i));
    gb_raw(b, x, 8);
}
static inline void gb_f32(gb *b, float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    gb_u32(b, u);
}
static inline void gb_f64(gb *b, double f)
{
    uint64_t u;
    memcpy(&u, &f, 8);
    gb_u64(b, u);
}
static inline void gb_strn(gb *b, const char *s, size_t n)
{
    gb_u64(b, n);
    gb_raw(b, s, n);
}
static inline void gb_str(gb *b, const char *s) { gb_strn(b, s, strlen(s)); }
static inline void gb_zeros(gb *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        gb_u8(b, 0);
}
static inline void gb_pad(gb *b, size_t align)
{
    while (b->n % align)
        gb_u8(b, 0);
}

static inline void gb_header(gb *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    gb_raw(b, "GGUF", 4);
    gb_u32(b, version);
    gb_u64(b, n_tensors);
    gb_u64(b, n_kv);
}

/* key + type; the caller writes the value */
static inline void gb_key(gb *b, const char *key, uint32_t type)
{
    gb_str(b, key);
    gb_u32(b, type);
}
static inline void gb_kv_u32(gb *b, const char *key, uint32_t v)
{
    gb_key(b, key, GB_U32);
    gb_u32(b, v);
}
static inline void gb_kv_str(gb *b, const char *key, const char *v)
{
    gb_key(b, key, GB_STR);
    gb_str(b, v);
}

static inline void gb_tinfo(gb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t offset)
{
    gb_str(b, name);
    gb_u32(b, n_dims);
    for (uint32_t d = 0; d < n_dims; d++)
        gb_u64(b, ne[d]);
    gb_u32(b, type);
    gb_u64(b, offset);
}

static inline void gb_free(gb *b)
{
    free(b->p);
    b->p = NULL;
    b->n = b->cap = 0;
}

#endif
