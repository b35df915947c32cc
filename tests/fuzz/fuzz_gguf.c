/* libFuzzer harness for the GGUF reader: parse the input with
 * kr_gguf_open_memory and, when it is accepted, walk every metadata value,
 * every array element and every tensor (touching the first and last byte of
 * its data), so any out-of-bounds pointer the reader hands out is caught by
 * ASan; small accepted inputs are also re-written by the writer and compared.
 * Built only with -Dfuzz=enabled and clang; the same file is compiled
 * into the regression replayer (tests/common/fuzz_replay_main.c) for the normal test suite. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernrun/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static volatile uint64_t g_sink; /* keeps the reads from being optimised out */

#define ROUND_TRIP_MAX (64u << 10) /* inputs up to this size are also re-written */

/* Property: any file the reader accepts, copied by the writer (metadata via
 * copy_kv, tensors declared and streamed), reads back with identical keys,
 * values and tensor bytes. The copy lives in a memfd. */
static void round_trip(const kr_gguf *src)
{
    int fd = memfd_create("fuzz_gguf", 0);
    if (fd < 0)
        return;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    kr_gguf_writer *w = NULL;
    kr_err err;
    if (kr_gguf_writer_open(path, &w, &err) != KR_OK) {
        close(fd);
        return;
    }
    for (int64_t i = 0; i < kr_gguf_n_kv(src); i++)
        if (kr_gguf_writer_copy_kv(w, src, i) != KR_OK)
            abort(); /* everything the reader accepts must be writable */
    for (int64_t i = 0; i < kr_gguf_n_tensors(src); i++) {
        const kr_gguf_tensor *t = kr_gguf_tensor_at(src, i);
        if (kr_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne) != KR_OK)
            abort();
    }
    if (kr_gguf_writer_begin_data(w) != KR_OK)
        abort();
    for (int64_t i = 0; i < kr_gguf_n_tensors(src); i++) {
        const kr_gguf_tensor *t = kr_gguf_tensor_at(src, i);
        if (kr_gguf_writer_write_data(w, t->data, (size_t)t->size) != KR_OK)
            abort();
    }
    if (kr_gguf_writer_finish(w) != KR_OK)
        abort();
    kr_gguf_writer_free(w);

    off_t n = lseek(fd, 0, SEEK_END);
    void *m = n > 0 ? mmap(NULL, (size_t)n, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    if (m == MAP_FAILED)
        abort();
    kr_gguf *dst = NULL;
    if (kr_gguf_open_memory(m, (size_t)n, &dst, &err) != KR_OK)
        abort();
    if (kr_gguf_n_kv(dst) != kr_gguf_n_kv(src) || kr_gguf_n_tensors(dst) != kr_gguf_n_tensors(src) ||
        kr_gguf_alignment(dst) != kr_gguf_alignment(src))
        abort();
    for (int64_t i = 0; i < kr_gguf_n_kv(src); i++) {
        if (strcmp(kr_gguf_key(src, i), kr_gguf_key(dst, i)) != 0 ||
            kr_gguf_kv_type(src, i) != kr_gguf_kv_type(dst, i) || kr_gguf_arr_n(src, i) != kr_gguf_arr_n(dst, i))
            abort();
        uint64_t cnt = kr_gguf_kv_type(src, i) == KR_GGUF_ARRAY ? kr_gguf_arr_n(src, i) : 1;
        for (uint64_t j = 0; j < cnt; j++) {
            kr_gguf_value a, b;
            if (kr_gguf_kv_value(src, i, j, &a, &err) != KR_OK || kr_gguf_kv_value(dst, i, j, &b, &err) != KR_OK ||
                a.type != b.type)
                abort();
            if (a.type == KR_GGUF_STRING ? (a.s.len != b.s.len || memcmp(a.s.ptr, b.s.ptr, (size_t)a.s.len) != 0)
                                         : memcmp(&a.u, &b.u, sizeof a.u) != 0)
                abort();
        }
    }
    for (int64_t i = 0; i < kr_gguf_n_tensors(src); i++) {
        const kr_gguf_tensor *a = kr_gguf_tensor_at(src, i), *b = kr_gguf_tensor_at(dst, i);
        if (strcmp(a->name, b->name) != 0 || a->type != b->type || a->n_dims != b->n_dims ||
            memcmp(a->ne, b->ne, sizeof a->ne) != 0 || a->size != b->size ||
            memcmp(a->data, b->data, (size_t)a->size) != 0)
            abort();
    }
    kr_gguf_close(dst);
    munmap(m, (size_t)n);
    close(fd);
}

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
    if (size <= ROUND_TRIP_MAX)
        round_trip(g);
    kr_gguf_close(g);
    free(copy);
    return 0;
}
