/* Writer: round trips (write -> read -> identical) and misuse errors. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf_test_util.h"

TestSuite(gguf_writer, .fini = kr_test_leak_check);

static void tmp_path(char *buf, size_t cap)
{
    snprintf(buf, cap, "/tmp/kr_gguf_wXXXXXX");
    int fd = mkstemp(buf);
    cr_assert_geq(fd, 0);
    close(fd);
}

static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc((size_t)sz + 1);
    cr_assert_not_null(p);
    cr_assert_eq(fread(p, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return p;
}

#define W(call) cr_assert_eq((call), KR_OK, "%s: %s", #call, kr_gguf_writer_error(w))

Test(gguf_writer, round_trip_all_types)
{
    char path[64];
    tmp_path(path, sizeof path);
    kr_gguf_writer *w = NULL;
    kr_err err;
    cr_assert_eq(kr_gguf_writer_open(path, &w, &err), KR_OK, "%s", err.msg);
    W(kr_gguf_writer_set_str(w, "general.architecture", "llama"));
    W(kr_gguf_writer_set_u32(w, "general.alignment", 64));
    W(kr_gguf_writer_set_u32(w, "a.u32", 0xdeadbeefu));
    W(kr_gguf_writer_set_i32(w, "a.i32", -123456));
    W(kr_gguf_writer_set_u64(w, "a.u64", 0x0123456789abcdefull));
    W(kr_gguf_writer_set_f32(w, "a.f32", 1e-5f));
    W(kr_gguf_writer_set_bool(w, "a.bool", false));
    uint8_t u8 = 250;
    int8_t i8 = -128;
    uint16_t u16 = 0xbeef;
    int16_t i16 = -32768;
    int64_t i64 = INT64_MIN;
    double f64 = 3.141592653589793;
    W(kr_gguf_writer_set_scalar(w, "a.u8", KR_GGUF_UINT8, &u8));
    W(kr_gguf_writer_set_scalar(w, "a.i8", KR_GGUF_INT8, &i8));
    W(kr_gguf_writer_set_scalar(w, "a.u16", KR_GGUF_UINT16, &u16));
    W(kr_gguf_writer_set_scalar(w, "a.i16", KR_GGUF_INT16, &i16));
    W(kr_gguf_writer_set_scalar(w, "a.i64", KR_GGUF_INT64, &i64));
    W(kr_gguf_writer_set_scalar(w, "a.f64", KR_GGUF_FLOAT64, &f64));
    const char *strs[] = {"<unk>", "", "\xe2\x96\x81the", "x y"};
    W(kr_gguf_writer_set_arr(w, "a.strs", KR_GGUF_STRING, strs, 4));
    const float fs[] = {0.5f, -1.0f, 1e30f};
    W(kr_gguf_writer_set_arr(w, "a.f32s", KR_GGUF_FLOAT32, fs, 3));
    const int32_t is[] = {1, -2, 3, -4, 5};
    W(kr_gguf_writer_set_arr(w, "a.i32s", KR_GGUF_INT32, is, 5));
    const bool bs[] = {true, false, true};
    W(kr_gguf_writer_set_arr(w, "a.bools", KR_GGUF_BOOL, bs, 3));
    const uint64_t u64s[] = {UINT64_MAX, 0};
    W(kr_gguf_writer_set_arr(w, "a.u64s", KR_GGUF_UINT64, u64s, 2));
    const uint16_t u16s[] = {1, 65535};
    W(kr_gguf_writer_set_arr(w, "a.u16s", KR_GGUF_UINT16, u16s, 2));
    W(kr_gguf_writer_set_arr(w, "a.empty", KR_GGUF_INT8, NULL, 0));

    /* tensors: f32 [5,3] (60 B), q8_0 [64,2] (136 B), q4_0 [32] (18 B), f16 [7,1,1,2] (28 B) */
    struct { const char *name; kr_dtype type; uint32_t nd; uint64_t ne[4]; size_t bytes; } ts[] = {
        {"token_embd.weight", KR_DTYPE_F32, 2, {5, 3}, 60},
        {"blk.0.attn_q.weight", KR_DTYPE_Q8_0, 2, {64, 2}, 136},
        {"blk.0.ffn_up.weight", KR_DTYPE_Q4_0, 1, {32}, 18},
        {"output_norm.weight", KR_DTYPE_F16, 4, {7, 1, 1, 2}, 28},
    };
    enum { NT = 4 };
    uint8_t *data[NT];
    for (int i = 0; i < NT; i++) {
        W(kr_gguf_writer_add_tensor(w, ts[i].name, ts[i].type, ts[i].nd, ts[i].ne));
        data[i] = malloc(ts[i].bytes);
        for (size_t j = 0; j < ts[i].bytes; j++)
            data[i][j] = (uint8_t)(j * 31 + (size_t)i * 17 + 1);
    }
    W(kr_gguf_writer_begin_data(w));
    for (int i = 0; i < NT; i++) /* odd-sized chunks, crossing nothing */
        for (size_t j = 0; j < ts[i].bytes; j += 7)
            W(kr_gguf_writer_write_data(w, data[i] + j, ts[i].bytes - j < 7 ? ts[i].bytes - j : 7));
    W(kr_gguf_writer_finish(w));
    kr_gguf_writer_free(w);

    /* header bytes by the format definition */
    size_t n;
    uint8_t *file = read_all(path, &n);
    cr_expect(memcmp(file, "GGUF", 4) == 0);
    cr_expect(file[4] == 3 && file[5] == 0 && file[6] == 0 && file[7] == 0);
    cr_expect(file[8] == NT && file[16] == 20, "n_tensors %u n_kv %u", file[8], file[16]);
    free(file);

    kr_gguf *g = NULL;
    cr_assert_eq(kr_gguf_open(path, NULL, &g, &err), KR_OK, "%s", err.msg);
    cr_expect_eq(kr_gguf_version(g), 3);
    cr_expect_eq(kr_gguf_alignment(g), 64);
    cr_expect_eq(kr_gguf_data_offset(g) % 64, 0);
    cr_expect_eq(kr_gguf_n_kv(g), 20);
    cr_expect_str_eq(kr_gguf_key(g, 0), "general.architecture");
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    float f;
    bool b;
    kr_gguf_str s;
    kr_gguf_value v;
    cr_expect(kr_gguf_get_u32(g, "a.u32", &u32, &err) == KR_OK && u32 == 0xdeadbeefu);
    cr_expect(kr_gguf_get_i32(g, "a.i32", &i32, &err) == KR_OK && i32 == -123456);
    cr_expect(kr_gguf_get_u64(g, "a.u64", &u64, &err) == KR_OK && u64 == 0x0123456789abcdefull);
    cr_expect(kr_gguf_get_f32(g, "a.f32", &f, &err) == KR_OK && f == 1e-5f);
    cr_expect(kr_gguf_get_bool(g, "a.bool", &b, &err) == KR_OK && !b);
    cr_expect(kr_gguf_kv_value(g, kr_gguf_find_key(g, "a.u8"), 0, &v, &err) == KR_OK && v.u == 250);
    cr_expect(kr_gguf_kv_value(g, kr_gguf_find_key(g, "a.i8"), 0, &v, &err) == KR_OK && v.i == -128);
    cr_expect(kr_gguf_kv_value(g, kr_gguf_find_key(g, "a.u16"), 0, &v, &err) == KR_OK && v.u == 0xbeef);
    cr_expect(kr_gguf_kv_value(g, kr_gguf_find_key(g, "a.i16"), 0, &v, &err) == KR_OK && v.i == -32768);
    cr_expect(kr_gguf_kv_value(g, kr_gguf_find_key(g, "a.i64"), 0, &v, &err) == KR_OK && v.i == INT64_MIN);
    cr_expect(kr_gguf_kv_value(g, kr_gguf_find_key(g, "a.f64"), 0, &v, &err) == KR_OK && v.f == f64);
    for (uint64_t j = 0; j < 4; j++) {
        cr_assert_eq(kr_gguf_arr_str(g, "a.strs", j, &s, &err), KR_OK);
        cr_expect(s.len == strlen(strs[j]) && memcmp(s.ptr, strs[j], s.len) == 0, "string %" PRIu64, j);
    }
    int64_t k = kr_gguf_find_key(g, "a.f32s");
    for (uint64_t j = 0; j < 3; j++)
        cr_expect(kr_gguf_kv_value(g, k, j, &v, &err) == KR_OK && v.f == fs[j]);
    k = kr_gguf_find_key(g, "a.i32s");
    for (uint64_t j = 0; j < 5; j++)
        cr_expect(kr_gguf_kv_value(g, k, j, &v, &err) == KR_OK && v.i == is[j]);
    k = kr_gguf_find_key(g, "a.bools");
    for (uint64_t j = 0; j < 3; j++)
        cr_expect(kr_gguf_kv_value(g, k, j, &v, &err) == KR_OK && v.b == bs[j]);
    k = kr_gguf_find_key(g, "a.u64s");
    cr_expect(kr_gguf_kv_value(g, k, 0, &v, &err) == KR_OK && v.u == UINT64_MAX);
    k = kr_gguf_find_key(g, "a.u16s");
    cr_expect(kr_gguf_kv_value(g, k, 1, &v, &err) == KR_OK && v.u == 65535);
    cr_expect(kr_gguf_get_arr(g, "a.empty", KR_GGUF_INT8, &u64, &err) == KR_OK && u64 == 0);

    cr_expect_eq(kr_gguf_n_tensors(g), NT);
    for (int i = 0; i < NT; i++) {
        const kr_gguf_tensor *t = kr_gguf_tensor_at(g, i);
        cr_assert_not_null(t);
        cr_expect_str_eq(t->name, ts[i].name);
        cr_expect_eq(t->type, ts[i].type);
        cr_expect_eq(t->n_dims, ts[i].nd);
        for (uint32_t d = 0; d < 4; d++)
            cr_expect_eq(t->ne[d], d < ts[i].nd ? ts[i].ne[d] : 1);
        cr_expect_eq(t->size, ts[i].bytes);
        cr_expect_eq(t->offset % 64, 0);
        cr_expect(memcmp(t->data, data[i], ts[i].bytes) == 0, "tensor %s bytes", ts[i].name);
        free(data[i]);
    }
    kr_gguf_close(g);
    unlink(path);
}

/* Copy a real model (all metadata verbatim, tensors streamed in chunks) and
 * compare the copy against the original. */
static void copy_and_compare(const char *rel)
{
    char src_path[4096], path[64];
    tu_testdata(rel, src_path, sizeof src_path);
    tmp_path(path, sizeof path);
    kr_gguf *src = NULL, *dst = NULL;
    kr_err err;
    cr_assert_eq(kr_gguf_open(src_path, NULL, &src, &err), KR_OK, "%s", err.msg);
    kr_gguf_writer *w = NULL;
    cr_assert_eq(kr_gguf_writer_open(path, &w, &err), KR_OK, "%s", err.msg);
    for (int64_t i = 0; i < kr_gguf_n_kv(src); i++)
        W(kr_gguf_writer_copy_kv(w, src, i));
    for (int64_t i = 0; i < kr_gguf_n_tensors(src); i++) {
        const kr_gguf_tensor *t = kr_gguf_tensor_at(src, i);
        W(kr_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne));
    }
    W(kr_gguf_writer_begin_data(w));
    for (int64_t i = 0; i < kr_gguf_n_tensors(src); i++) {
        const kr_gguf_tensor *t = kr_gguf_tensor_at(src, i);
        for (uint64_t off = 0; off < t->size; off += 1000)
            W(kr_gguf_writer_write_data(w, (const uint8_t *)t->data + off,
                                        (size_t)(t->size - off < 1000 ? t->size - off : 1000)));
    }
    W(kr_gguf_writer_finish(w));
    kr_gguf_writer_free(w);

    cr_assert_eq(kr_gguf_open(path, NULL, &dst, &err), KR_OK, "%s", err.msg);
    cr_assert_eq(kr_gguf_n_kv(dst), kr_gguf_n_kv(src));
    cr_expect_eq(kr_gguf_alignment(dst), kr_gguf_alignment(src));
    for (int64_t i = 0; i < kr_gguf_n_kv(src); i++) {
        cr_assert_str_eq(kr_gguf_key(dst, i), kr_gguf_key(src, i));
        cr_assert_eq(kr_gguf_kv_type(dst, i), kr_gguf_kv_type(src, i));
        cr_assert_eq(kr_gguf_arr_type(dst, i), kr_gguf_arr_type(src, i));
        uint64_t n = kr_gguf_kv_type(src, i) == KR_GGUF_ARRAY ? kr_gguf_arr_n(src, i) : 1;
        cr_assert_eq(kr_gguf_arr_n(dst, i), kr_gguf_arr_n(src, i));
        for (uint64_t j = 0; j < n; j++) {
            kr_gguf_value a, b;
            cr_assert_eq(kr_gguf_kv_value(src, i, j, &a, &err), KR_OK);
            cr_assert_eq(kr_gguf_kv_value(dst, i, j, &b, &err), KR_OK);
            cr_assert_eq(a.type, b.type);
            if (a.type == KR_GGUF_STRING)
                cr_assert(a.s.len == b.s.len && memcmp(a.s.ptr, b.s.ptr, a.s.len) == 0, "%s[%" PRIu64 "]",
                          kr_gguf_key(src, i), j);
            else
                cr_assert(a.u == b.u, "%s[%" PRIu64 "]", kr_gguf_key(src, i), j); /* same 8 union bytes */
        }
    }
    cr_assert_eq(kr_gguf_n_tensors(dst), kr_gguf_n_tensors(src));
    for (int64_t i = 0; i < kr_gguf_n_tensors(src); i++) {
        const kr_gguf_tensor *a = kr_gguf_tensor_at(src, i), *b = kr_gguf_tensor_at(dst, i);
        cr_expect_str_eq(b->name, a->name);
        cr_expect_eq(b->type, a->type);
        cr_expect_eq(b->n_dims, a->n_dims);
        cr_expect(memcmp(b->ne, a->ne, sizeof a->ne) == 0);
        cr_assert_eq(b->size, a->size);
        cr_expect(memcmp(b->data, a->data, (size_t)a->size) == 0, "tensor %s", a->name);
    }
    kr_gguf_close(dst);
    kr_gguf_close(src);
    unlink(path);
}

Test(gguf_writer, copy_real_models)
{
    copy_and_compare("models/stories260K-f32.gguf");
    copy_and_compare("models/llama2-tiny-random-f16.gguf");
    copy_and_compare("vocab/ggml-vocab-gpt-2.gguf");
}

Test(gguf_writer, misuse_errors)
{
    char path[64];
    tmp_path(path, sizeof path);
    kr_gguf_writer *w = NULL;
    kr_err err;
    cr_assert_eq(kr_gguf_writer_open(path, &w, &err), KR_OK);
    cr_expect_eq(kr_gguf_writer_set_u32(w, "k", 1), KR_OK);
    cr_expect_eq(kr_gguf_writer_set_str(w, "k", "x"), KR_ERR_EXISTS);
    cr_expect(strstr(kr_gguf_writer_error(w), "'k'"), "%s", kr_gguf_writer_error(w));
    cr_expect_eq(kr_gguf_writer_set_u32(w, "", 1), KR_ERR_INVALID_ARG);
    cr_expect_eq(kr_gguf_writer_set_u32(w, "general.alignment", 3), KR_ERR_INVALID_ARG);
    cr_expect_eq(kr_gguf_writer_set_u32(w, "general.alignment", 0), KR_ERR_INVALID_ARG);
    cr_expect_eq(kr_gguf_writer_set_u64(w, "general.alignment", 32), KR_ERR_TYPE);
    cr_expect_eq(kr_gguf_writer_set_arr(w, "aa", KR_GGUF_ARRAY, NULL, 0), KR_ERR_INVALID_ARG);
    cr_expect_eq(kr_gguf_writer_set_scalar(w, "s", KR_GGUF_STRING, "x"), KR_ERR_INVALID_ARG);
    char name[65];
    memset(name, 'n', 64);
    name[64] = '\0';
    const uint64_t ne[2] = {33, 2};
    cr_expect_eq(kr_gguf_writer_add_tensor(w, name, KR_DTYPE_F32, 1, ne), KR_ERR_INVALID_ARG);
    cr_expect_eq(kr_gguf_writer_add_tensor(w, "q", KR_DTYPE_Q8_0, 2, ne), KR_ERR_INVALID_ARG);
    cr_expect(strstr(kr_gguf_writer_error(w), "33"), "%s", kr_gguf_writer_error(w));
    cr_expect_eq(kr_gguf_writer_add_tensor(w, "z", KR_DTYPE_F32, 5, ne), KR_ERR_INVALID_ARG);
    cr_expect_eq(kr_gguf_writer_add_tensor(w, "t", KR_DTYPE_F32, 2, ne), KR_OK);
    cr_expect_eq(kr_gguf_writer_add_tensor(w, "t", KR_DTYPE_F32, 2, ne), KR_ERR_EXISTS);
    cr_expect_eq(kr_gguf_writer_write_data(w, "x", 1), KR_ERR_STATE);
    cr_expect_eq(kr_gguf_writer_begin_data(w), KR_OK);
    cr_expect_eq(kr_gguf_writer_set_u32(w, "late", 1), KR_ERR_STATE);
    uint8_t buf[33 * 2 * 4 + 1] = {0};
    cr_expect_eq(kr_gguf_writer_write_data(w, buf, 10), KR_OK);
    cr_expect_eq(kr_gguf_writer_finish(w), KR_ERR_STATE);
    cr_expect(strstr(kr_gguf_writer_error(w), "'t' has 10 of 264 bytes"), "%s", kr_gguf_writer_error(w));
    cr_expect_eq(kr_gguf_writer_write_data(w, buf, 255), KR_ERR_RANGE); /* 254 fit, 1 too many */
    kr_gguf_writer_free(w); /* unfinished: the partial file is removed */
    struct stat sb;
    cr_expect_neq(stat(path, &sb), 0, "partial file left behind");
    cr_expect_eq(kr_gguf_writer_open("/nonexistent/dir/x.gguf", &w, &err), KR_ERR_IO);
    cr_expect_null(w);
}

/* A file with metadata only round-trips and is valid for the reader. */
Test(gguf_writer, metadata_only)
{
    char path[64];
    tmp_path(path, sizeof path);
    kr_gguf_writer *w = NULL;
    kr_err err;
    cr_assert_eq(kr_gguf_writer_open(path, &w, &err), KR_OK);
    W(kr_gguf_writer_set_str(w, "general.name", "empty"));
    W(kr_gguf_writer_finish(w));
    kr_gguf_writer_free(w);
    kr_gguf *g = NULL;
    cr_assert_eq(kr_gguf_open(path, NULL, &g, &err), KR_OK, "%s", err.msg);
    cr_expect_eq(kr_gguf_n_tensors(g), 0);
    cr_expect_eq(kr_gguf_n_kv(g), 1);
    kr_gguf_close(g);
    unlink(path);
}

/* I/O errors surface as KR_ERR_IO naming the path; a device is never unlinked. */
Test(gguf_writer, io_error_dev_full)
{
    struct stat sb;
    if (stat("/dev/full", &sb) != 0 || !S_ISCHR(sb.st_mode))
        cr_skip_test("no /dev/full");
    kr_gguf_writer *w = NULL;
    kr_err err;
    cr_assert_eq(kr_gguf_writer_open("/dev/full", &w, &err), KR_OK, "%s", err.msg);
    const uint64_t ne[1] = {1u << 20}; /* 4 MiB: more than the 1 MiB stdio buffer */
    cr_assert_eq(kr_gguf_writer_add_tensor(w, "big", KR_DTYPE_F32, 1, ne), KR_OK);
    kr_status st = kr_gguf_writer_begin_data(w);
    static uint8_t zeros[1 << 16];
    for (int i = 0; st == KR_OK && i < 64; i++)
        st = kr_gguf_writer_write_data(w, zeros, sizeof zeros);
    if (st == KR_OK)
        st = kr_gguf_writer_finish(w);
    cr_expect_eq(st, KR_ERR_IO, "%s", kr_gguf_writer_error(w));
    cr_expect(strstr(kr_gguf_writer_error(w), "/dev/full"), "%s", kr_gguf_writer_error(w));
    cr_expect_eq(kr_gguf_writer_write_data(w, zeros, 1), KR_ERR_STATE);
    kr_gguf_writer_free(w);
    cr_expect_eq(stat("/dev/full", &sb), 0, "/dev/full must survive");
    cr_expect(S_ISCHR(sb.st_mode));
}

/* Peak resident set (VmHWM) in KiB, from /proc/self/status; -1 if unknown. */
static long peak_rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld kB", &v) == 1)
            break;
    fclose(f);
    return v;
}

/* Streaming: writing 128 MiB of tensor data in 1 MiB chunks must not grow the
 * peak RSS by anything like the data size (the writer keeps no data). */
Test(gguf_writer, streams_without_buffering_data, .timeout = 120)
{
    long before = peak_rss_kib();
    if (before < 0)
        cr_skip_test("no /proc/self/status");
    char path[64];
    tmp_path(path, sizeof path);
    kr_gguf_writer *w = NULL;
    kr_err err;
    cr_assert_eq(kr_gguf_writer_open(path, &w, &err), KR_OK, "%s", err.msg);
    enum { NT = 32, MIB = 1 << 20 };
    for (int i = 0; i < NT; i++) {
        char name[32];
        snprintf(name, sizeof name, "blk.%d.w", i);
        const uint64_t ne[2] = {MIB / 4, 4}; /* 4 MiB of f32 */
        W(kr_gguf_writer_add_tensor(w, name, KR_DTYPE_F32, 2, ne));
    }
    W(kr_gguf_writer_begin_data(w));
    uint8_t *chunk = malloc(MIB);
    cr_assert_not_null(chunk);
    memset(chunk, 0x5a, MIB);
    for (int i = 0; i < NT * 4; i++)
        W(kr_gguf_writer_write_data(w, chunk, MIB));
    W(kr_gguf_writer_finish(w));
    kr_gguf_writer_free(w);
    free(chunk);
    long after = peak_rss_kib();
    unlink(path);
    cr_log_info("peak RSS %ld -> %ld KiB while writing %d MiB", before, after, NT * 4);
    cr_expect_lt(after - before, 32 * 1024, "peak RSS grew by %ld KiB writing %d MiB", after - before, NT * 4);
}
