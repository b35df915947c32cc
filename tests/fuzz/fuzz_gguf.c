/* libFuzzer harness for the GGUF reader: parse the input with
 * kr_gguf_open_memory and, when it is accepted, walk every metadata value,
 * every array element and every tensor (touching the first and last byte of
 * its data), so any out-of-bounds pointer the reader hands out is caught by
 * ASan. Built only with -Dfuzz=enabled and clang; the same file is compiled
 * into the regression replayer (replay_main.c) for the normal test suite. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t g_sink; /* keeps the reads from being optimised out */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exact-size copy: libFuzzer's buffer already is, the replayer's may not be */
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    if (size)
        memcpy(copy, data, size);
    kr_gguf *g = NULL;
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_gguf_open_memory(copy, size, &g, &err);
    if (st != KR_OK) {
        /* a failure must come with a message and no handle */
        if (g != NULL || err.msg[0] == '\0' || strlen(err.msg) >= sizeof err.msg)
            abort();
        free(copy);
        return 0;
    }
    uint64_t acc = kr_gguf_version(g) + kr_gguf_alignment(g) + kr_gguf_data_offset(g);
    for (int64_t i = 0; i < kr_gguf_n_kv(g); i++) {
        const char *key = kr_gguf_key(g, i);
        acc += strlen(key);
        if (kr_gguf_find_key(g, key) != i)
            abort();
        kr_gguf_type t = kr_gguf_kv_type(g, i);
        uint64_t n = t == KR_GGUF_ARRAY ? kr_gguf_arr_n(g, i) : 1;
        for (uint64_t j = 0; j < n; j++) {
            kr_gguf_value v;
            if (kr_gguf_kv_value(g, i, j, &v, &err) != KR_OK)
                abort();
            if (v.type == KR_GGUF_STRING && v.s.len > 0)
                acc += (uint8_t)v.s.ptr[0] + (uint8_t)v.s.ptr[v.s.len - 1];
            else
                acc += v.u;
        }
        /* typed getters must fail cleanly on the wrong type */
        uint32_t u32;
        kr_gguf_str s;
        uint64_t u64;
        const void *p;
        kr_gguf_get_u32(g, key, &u32, &err);
        kr_gguf_get_str(g, key, &s, &err);
        kr_gguf_get_uint(g, key, &u64, &err);
        if (t == KR_GGUF_ARRAY && kr_gguf_arr_type(g, i) != KR_GGUF_STRING &&
            kr_gguf_arr_data(g, key, kr_gguf_arr_type(g, i), &p, &u64, &err) == KR_OK && u64 > 0)
            acc += ((const uint8_t *)p)[0];
    }
    for (int64_t i = 0; i < kr_gguf_n_tensors(g); i++) {
        const kr_gguf_tensor *t = kr_gguf_tensor_at(g, i);
        if (kr_gguf_find_tensor(g, t->name) != t || t->size == 0)
            abort();
        const uint8_t *d = t->data;
        if (d < copy || d + t->size > copy + size)
            abort();
        acc += d[0] + d[t->size - 1];
    }
    g_sink = acc;
    kr_gguf_close(g);
    free(copy);
    return 0;
}
