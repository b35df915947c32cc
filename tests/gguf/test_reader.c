/* Reader on valid input: the reference file, getters, real files. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "gguf_test_util.h"

TestSuite(gguf_reader, .fini = kr_test_leak_check);
TestSuite(gguf_real, .fini = kr_test_leak_check);

Test(gguf_reader, valid_reference_file)
{
    gb b = {0};
    tu_build_valid(&b);
    void *copy;
    kr_gguf *g = tu_expect_ok("valid_reference", &b, &copy);
    cr_expect_eq(kr_gguf_version(g), 3);
    cr_expect_eq(kr_gguf_alignment(g), 32);
    cr_expect_eq(kr_gguf_file_size(g), b.n);
    cr_expect_eq(kr_gguf_data_offset(g), b.n - TU_VALID_DATA_BYTES);
    cr_expect_eq(kr_gguf_data_offset(g) % 32, 0);
    cr_expect_eq(kr_gguf_n_kv(g), 16);
    cr_expect_eq(kr_gguf_n_tensors(g), 3);

    kr_err err;
    kr_gguf_str s;
    cr_assert_eq(kr_gguf_get_str(g, "general.architecture", &s, &err), KR_OK);
    cr_expect(s.len == 5 && memcmp(s.ptr, "llama", 5) == 0);
    uint32_t u32;
    int32_t i32;
    uint64_t u64;
    int64_t i64;
    float f32;
    double f64;
    bool bl;
    cr_expect_eq(kr_gguf_get_u32(g, "t.u32", &u32, &err), KR_OK);
    cr_expect_eq(u32, 4000000000u);
    cr_expect_eq(kr_gguf_get_i32(g, "t.i32", &i32, &err), KR_OK);
    cr_expect_eq(i32, -70000);
    cr_expect_eq(kr_gguf_get_u64(g, "t.u64", &u64, &err), KR_OK);
    cr_expect_eq(u64, 1ull << 40);
    cr_expect_eq(kr_gguf_get_i64(g, "t.i64", &i64, &err), KR_OK);
    cr_expect_eq(i64, -(1ll << 40));
    cr_expect_eq(kr_gguf_get_f32(g, "t.f32", &f32, &err), KR_OK);
    cr_expect_eq(f32, 1.5f);
    cr_expect_eq(kr_gguf_get_f64(g, "t.f64", &f64, &err), KR_OK);
    cr_expect_eq(f64, -2.25);
    cr_expect_eq(kr_gguf_get_bool(g, "t.bool", &bl, &err), KR_OK);
    cr_expect(bl);

    /* get_uint widens unsigned and non-negative signed integers */
    cr_expect_eq(kr_gguf_get_uint(g, "t.u8", &u64, &err), KR_OK);
    cr_expect_eq(u64, 200);
    cr_expect_eq(kr_gguf_get_uint(g, "t.u16", &u64, &err), KR_OK);
    cr_expect_eq(u64, 65000);
    cr_expect_eq(kr_gguf_get_uint(g, "t.i8", &u64, &err), KR_ERR_RANGE);
    cr_expect_eq(kr_gguf_get_uint(g, "t.f32", &u64, &err), KR_ERR_TYPE);

    /* kv_value decodes everything */
    kr_gguf_value v;
    int64_t i = kr_gguf_find_key(g, "t.i16");
    cr_assert_geq(i, 0);
    cr_expect_eq(kr_gguf_kv_type(g, i), KR_GGUF_INT16);
    cr_expect_eq(kr_gguf_kv_value(g, i, 0, &v, &err), KR_OK);
    cr_expect_eq(v.i, -300);
    cr_expect_eq(kr_gguf_kv_value(g, i, 1, &v, &err), KR_ERR_RANGE);
    i = kr_gguf_find_key(g, "t.i8");
    cr_expect_eq(kr_gguf_kv_value(g, i, 0, &v, &err), KR_OK);
    cr_expect_eq(v.i, -5);
    cr_expect_eq(kr_gguf_kv_value(g, 16, 0, &v, &err), KR_ERR_RANGE);
    cr_expect_eq(kr_gguf_kv_value(g, -1, 0, &v, &err), KR_ERR_RANGE);
    cr_expect_null(kr_gguf_key(g, 16));
    cr_expect_eq(kr_gguf_kv_type(g, 99), KR_GGUF_TYPE_COUNT);
    cr_expect_str_eq(kr_gguf_key(g, 0), "general.architecture");

    /* arrays */
    i = kr_gguf_find_key(g, "t.arr_u32");
    cr_expect_eq(kr_gguf_kv_type(g, i), KR_GGUF_ARRAY);
    cr_expect_eq(kr_gguf_arr_type(g, i), KR_GGUF_UINT32);
    cr_expect_eq(kr_gguf_arr_n(g, i), 3);
    const void *data;
    uint64_t n;
    cr_assert_eq(kr_gguf_arr_data(g, "t.arr_u32", KR_GGUF_UINT32, &data, &n, &err), KR_OK);
    cr_expect_eq(n, 3);
    const uint8_t *d8 = data;
    cr_expect(d8[0] == 10 && d8[4] == 20 && d8[8] == 30);
    cr_expect_eq(kr_gguf_kv_value(g, i, 2, &v, &err), KR_OK);
    cr_expect_eq(v.u, 30);
    cr_expect_eq(kr_gguf_get_arr(g, "t.arr_str", KR_GGUF_STRING, &n, &err), KR_OK);
    cr_expect_eq(n, 3);
    cr_expect_eq(kr_gguf_arr_str(g, "t.arr_str", 1, &s, &err), KR_OK);
    cr_expect(s.len == 2 && memcmp(s.ptr, "bc", 2) == 0);
    cr_expect_eq(kr_gguf_arr_str(g, "t.arr_str", 2, &s, &err), KR_OK);
    cr_expect_eq(s.len, 0);
    cr_expect_eq(kr_gguf_arr_str(g, "t.arr_str", 3, &s, &err), KR_ERR_RANGE);
    cr_expect_eq(kr_gguf_get_arr(g, "t.arr_empty", KR_GGUF_FLOAT32, &n, &err), KR_OK);
    cr_expect_eq(n, 0);

    /* tensors */
    const kr_gguf_tensor *t = kr_gguf_find_tensor(g, "w");
    cr_assert_not_null(t);
    cr_expect_eq(t->type, KR_DTYPE_Q8_0);
    cr_expect_eq(t->n_dims, 2);
    cr_expect(t->ne[0] == 32 && t->ne[1] == 2 && t->ne[2] == 1 && t->ne[3] == 1);
    cr_expect_eq(t->offset, 32);
    cr_expect_eq(t->size, 68);
    const uint8_t *base = (const uint8_t *)copy + kr_gguf_data_offset(g);
    cr_expect_eq((const uint8_t *)t->data, base + 32);
    cr_expect_eq(((const uint8_t *)t->data)[0], (32 * 7 + 3) & 0xff);
    t = kr_gguf_tensor_at(g, 2);
    cr_assert_not_null(t);
    cr_expect_str_eq(t->name, "last");
    cr_expect_eq(t->size, 6);
    cr_expect_eq(t->type, KR_DTYPE_F16);
    cr_expect_null(kr_gguf_tensor_at(g, 3));
    cr_expect_null(kr_gguf_find_tensor(g, "nope"));
    cr_expect_null(kr_gguf_find_tensor(g, "tok2"));
    kr_gguf_close(g);
    free(copy);
    gb_free(&b);
}

Test(gguf_reader, getter_wrong_type_and_missing)
{
    gb b = {0};
    tu_build_valid(&b);
    void *copy;
    kr_gguf *g = tu_expect_ok("valid_getters", &b, &copy);
    kr_err err;
    uint32_t u32 = 77;
    float f;
    kr_gguf_str s;
    uint64_t n;
    const void *data;
    cr_expect_eq(kr_gguf_get_u32(g, "general.architecture", &u32, &err), KR_ERR_TYPE);
    cr_expect(strstr(err.msg, "general.architecture") && strstr(err.msg, "u32") && strstr(err.msg, "string"),
              "%s", err.msg);
    cr_expect_eq(u32, 77, "output untouched on error");
    cr_expect_eq(kr_gguf_get_f32(g, "t.u32", &f, &err), KR_ERR_TYPE);
    cr_expect_eq(kr_gguf_get_str(g, "t.u32", &s, &err), KR_ERR_TYPE);
    cr_expect_eq(kr_gguf_get_u32(g, "no.such.key", &u32, &err), KR_ERR_NOT_FOUND);
    cr_expect(strstr(err.msg, "no.such.key"), "%s", err.msg);
    cr_expect_eq(kr_gguf_get_arr(g, "t.arr_u32", KR_GGUF_INT32, &n, &err), KR_ERR_TYPE);
    cr_expect(strstr(err.msg, "array of i32") && strstr(err.msg, "array of u32"), "%s", err.msg);
    cr_expect_eq(kr_gguf_get_arr(g, "t.u32", KR_GGUF_UINT32, &n, &err), KR_ERR_TYPE);
    cr_expect_eq(kr_gguf_arr_str(g, "t.arr_u32", 0, &s, &err), KR_ERR_TYPE);
    cr_expect_eq(kr_gguf_arr_data(g, "t.arr_str", KR_GGUF_STRING, &data, &n, &err), KR_ERR_INVALID_ARG);
    cr_expect_eq(kr_gguf_arr_data(g, "t.arr_u32", KR_GGUF_FLOAT32, &data, &n, &err), KR_ERR_TYPE);
    cr_expect_eq(kr_gguf_get_u32(g, NULL, &u32, NULL), KR_ERR_NOT_FOUND);
    cr_expect_eq(kr_gguf_find_key(g, NULL), -1);
    kr_gguf_close(g);
    free(copy);
    gb_free(&b);
}

Test(gguf_reader, type_names)
{
    cr_expect_str_eq(kr_gguf_type_name(KR_GGUF_UINT8), "u8");
    cr_expect_str_eq(kr_gguf_type_name(KR_GGUF_STRING), "string");
    cr_expect_str_eq(kr_gguf_type_name(KR_GGUF_FLOAT64), "f64");
    cr_expect_str_eq(kr_gguf_type_name((kr_gguf_type)13), "?");
}

/* A file without tensors may end right after the metadata (vocab files). */
Test(gguf_reader, no_tensors_no_padding)
{
    gb b = {0};
    gb_header(&b, 2, 0, 1);
    gb_kv_str(&b, "general.name", "x");
    void *copy;
    kr_gguf *g = tu_expect_ok("no_tensors", &b, &copy);
    cr_expect_eq(kr_gguf_version(g), 2);
    cr_expect_eq(kr_gguf_n_tensors(g), 0);
    cr_expect_eq(kr_gguf_alignment(g), 32);
    kr_gguf_close(g);
    free(copy);
    gb_free(&b);
}

Test(gguf_reader, key_of_64k_accepted)
{
    gb b = {0};
    char *key = malloc(65537);
    cr_assert_not_null(key);
    memset(key, 'k', 65536);
    key[65536] = '\0';
    gb_header(&b, 3, 0, 1);
    gb_kv_u32(&b, key, 5);
    void *copy;
    kr_gguf *g = tu_expect_ok("key_64k", &b, &copy);
    cr_expect_eq(kr_gguf_find_key(g, key), 0);
    kr_gguf_close(g);
    free(copy);
    free(key);
    gb_free(&b);
}

Test(gguf_reader, name_of_63_bytes_and_alignment_64)
{
    char name[64];
    memset(name, 'n', 63);
    name[63] = '\0';
    gb b = {0};
    gb_header(&b, 3, 2, 1);
    gb_kv_u32(&b, "general.alignment", 64);
    gb_tinfo(&b, name, 1, (const uint64_t[]){3}, 0, 0);
    gb_tinfo(&b, "b", 1, (const uint64_t[]){1}, 0, 64);
    gb_pad(&b, 64);
    gb_zeros(&b, 68);
    void *copy;
    kr_gguf *g = tu_expect_ok("name63", &b, &copy);
    cr_expect_eq(kr_gguf_alignment(g), 64);
    cr_expect_eq(kr_gguf_data_offset(g) % 64, 0);
    cr_expect_not_null(kr_gguf_find_tensor(g, name));
    kr_gguf_close(g);
    free(copy);
    gb_free(&b);
}

/* Parsing must not touch a single byte of the data section: put it on pages
 * that fault on any access. */
Test(gguf_reader, metadata_read_does_not_touch_data)
{
    long page = sysconf(_SC_PAGESIZE);
    cr_assert_gt(page, 0);
    gb b = {0};
    gb_header(&b, 3, 2, 2);
    gb_kv_u32(&b, "general.alignment", (uint32_t)page);
    gb_kv_str(&b, "general.architecture", "llama");
    gb_tinfo(&b, "a", 2, (const uint64_t[]){(uint64_t)page / 4, 2}, 0, 0);
    gb_tinfo(&b, "b", 1, (const uint64_t[]){64}, 8, (uint64_t)page * 2);
    gb_pad(&b, (size_t)page);
    size_t hdr = b.n;
    size_t data = (size_t)page * 3; /* a: 2 pages, b: 68 bytes in the third */
    size_t total = hdr + data;
    uint8_t *m = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(m, MAP_FAILED);
    memcpy(m, b.p, hdr);
    cr_assert_eq(mprotect(m + hdr, data, PROT_NONE), 0);
    kr_gguf *g = NULL;
    kr_err err;
    cr_assert_eq(kr_gguf_open_memory(m, total, &g, &err), KR_OK, "%s", err.msg);
    cr_expect_eq(kr_gguf_data_offset(g), hdr);
    const kr_gguf_tensor *t = kr_gguf_find_tensor(g, "b");
    cr_assert_not_null(t);
    cr_expect_eq((const uint8_t *)t->data, m + hdr + page * 2);
    cr_expect_eq(t->size, 68);
    kr_gguf_close(g);
    munmap(m, total);
    gb_free(&b);
}

/* ---- real files ---- */

static void open_real(const char *rel, bool no_mmap)
{
    char path[4096];
    tu_testdata(rel, path, sizeof path);
    kr_gguf *g = NULL;
    kr_err err;
    kr_gguf_open_opts o = {.no_mmap = no_mmap};
    kr_status st = kr_gguf_open(path, &o, &g, &err);
    cr_assert_eq(st, KR_OK, "%s: %s", path, err.msg);
    cr_expect_geq(kr_gguf_version(g), 2);
    kr_gguf_str arch;
    cr_expect_eq(kr_gguf_get_str(g, "general.architecture", &arch, &err), KR_OK, "%s: %s", rel, err.msg);
    /* walk everything */
    for (int64_t i = 0; i < kr_gguf_n_kv(g); i++) {
        uint64_t n = kr_gguf_kv_type(g, i) == KR_GGUF_ARRAY ? kr_gguf_arr_n(g, i) : 1;
        for (uint64_t j = 0; j < n; j++) {
            kr_gguf_value v;
            cr_assert_eq(kr_gguf_kv_value(g, i, j, &v, &err), KR_OK);
        }
    }
    uint64_t end = 0;
    for (int64_t i = 0; i < kr_gguf_n_tensors(g); i++) {
        const kr_gguf_tensor *t = kr_gguf_tensor_at(g, i);
        cr_expect_eq(kr_gguf_find_tensor(g, t->name), t);
        uint64_t e = kr_gguf_data_offset(g) + t->offset + t->size;
        if (e > end)
            end = e;
    }
    cr_expect_leq(end, kr_gguf_file_size(g));
    kr_gguf_close(g);
}

Test(gguf_real, models_and_vocabs_parse)
{
    const char *files[] = {
        "models/stories260K-f32.gguf",      "models/llama2-tiny-random-f16.gguf", "vocab/ggml-vocab-falcon.gguf",
        "vocab/ggml-vocab-gpt-2.gguf",      "vocab/ggml-vocab-llama-spm.gguf",
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        open_real(files[i], false);
        open_real(files[i], true);
    }
}

Test(gguf_real, stories260K_shapes)
{
    char path[4096];
    kr_gguf *g = NULL;
    kr_err err;
    cr_assert_eq(kr_gguf_open(tu_testdata("models/stories260K-f32.gguf", path, sizeof path), NULL, &g, &err), KR_OK,
                 "%s", err.msg);
    /* README: llama arch, dim 64, 5 layers, 8 heads, 4 KV heads, ffn 172, vocab 512, ctx 512, all F32 */
    uint64_t v;
    cr_expect_eq(kr_gguf_get_uint(g, "llama.embedding_length", &v, &err), KR_OK);
    cr_expect_eq(v, 64);
    cr_expect_eq(kr_gguf_get_uint(g, "llama.block_count", &v, &err), KR_OK);
    cr_expect_eq(v, 5);
    cr_expect_eq(kr_gguf_get_uint(g, "llama.feed_forward_length", &v, &err), KR_OK);
    cr_expect_eq(v, 172);
    cr_expect_eq(kr_gguf_get_uint(g, "llama.attention.head_count_kv", &v, &err), KR_OK);
    cr_expect_eq(v, 4);
    cr_expect_eq(kr_gguf_get_arr(g, "tokenizer.ggml.tokens", KR_GGUF_STRING, &v, &err), KR_OK);
    cr_expect_eq(v, 512);
    const kr_gguf_tensor *t = kr_gguf_find_tensor(g, "blk.0.ffn_down.weight");
    cr_assert_not_null(t);
    cr_expect_eq(t->type, KR_DTYPE_F32);
    cr_expect(t->ne[0] == 172 && t->ne[1] == 64, "ne %" PRIu64 " %" PRIu64, t->ne[0], t->ne[1]);
    cr_expect_eq(t->size, 172u * 64u * 4u);
    for (int64_t i = 0; i < kr_gguf_n_tensors(g); i++)
        cr_expect_eq(kr_gguf_tensor_at(g, i)->type, KR_DTYPE_F32);
    kr_gguf_close(g);
}

Test(gguf_real, unaligned_rows_rejected_naming_tensor)
{
    char path[4096];
    tu_testdata("models/stories260K-q8_0-v2-unaligned-rows.gguf", path, sizeof path);
    for (int no_mmap = 0; no_mmap < 2; no_mmap++) {
        kr_gguf *g = (kr_gguf *)0x1;
        kr_err err;
        kr_gguf_open_opts o = {.no_mmap = no_mmap};
        kr_status st = kr_gguf_open(path, &o, &g, &err);
        cr_expect_eq(st, KR_ERR_FORMAT, "%s", err.msg);
        cr_expect_null(g);
        cr_expect(strstr(err.msg, "ffn_down") && strstr(err.msg, "172") && strstr(err.msg, "q8_0") &&
                      strstr(err.msg, "32"),
                  "%s", err.msg);
        cr_expect(strstr(err.msg, "stories260K-q8_0-v2-unaligned-rows.gguf"), "path in message: %s", err.msg);
    }
}

Test(gguf_real, missing_file)
{
    kr_gguf *g = NULL;
    kr_err err;
    cr_expect_eq(kr_gguf_open("/nonexistent/x.gguf", NULL, &g, &err), KR_ERR_NOT_FOUND);
    cr_expect(strstr(err.msg, "/nonexistent/x.gguf"), "%s", err.msg);
    cr_expect_eq(kr_gguf_open("/", NULL, &g, &err), KR_ERR_IO, "%s", err.msg);
}

Test(gguf_real, empty_file_on_disk)
{
    char path[] = "/tmp/kr_gguf_emptyXXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    close(fd);
    kr_gguf *g = NULL;
    kr_err err;
    cr_expect_eq(kr_gguf_open(path, NULL, &g, &err), KR_ERR_FORMAT);
    cr_expect(strstr(err.msg, "empty"), "%s", err.msg);
    unlink(path);
}

/* A 7B-shaped Q4_0 file (sparse: only the header is written, the data is a
 * hole). Opening it must read the metadata only: well under the time it would
 * take to page in 3.8 GB, and no data touched. */
static void add_t(gb *b, const char *name, uint32_t nd, uint64_t ne0, uint64_t ne1, uint32_t type, uint64_t *off)
{
    uint64_t ne[2] = {ne0, ne1};
    uint64_t bytes = type == 2 ? ne0 / 32 * 18 * (nd > 1 ? ne1 : 1) : ne0 * 4 * (nd > 1 ? ne1 : 1);
    gb_tinfo(b, name, nd, ne, type, *off);
    *off = (*off + bytes + 31) / 32 * 32;
}

Test(gguf_reader, big_sparse_7b_metadata_only, .timeout = 60)
{
    gb b = {0};
    enum { L = 32, VOCAB = 32000 };
    const uint64_t E = 4096, F = 11008;
    gb_header(&b, 3, 2 + 9 * L + 1, 5);
    gb_kv_str(&b, "general.architecture", "llama");
    gb_kv_u32(&b, "llama.block_count", L);
    gb_kv_u32(&b, "llama.embedding_length", (uint32_t)E);
    gb_kv_u32(&b, "llama.feed_forward_length", (uint32_t)F);
    gb_key(&b, "tokenizer.ggml.tokens", GB_ARR);
    gb_u32(&b, GB_STR);
    gb_u64(&b, VOCAB);
    for (int i = 0; i < VOCAB; i++) {
        char tok[16];
        snprintf(tok, sizeof tok, "tok%d", i);
        gb_str(&b, tok);
    }
    uint64_t off = 0;
    add_t(&b, "token_embd.weight", 2, E, VOCAB, 2, &off);
    for (int l = 0; l < L; l++) {
        char n[64];
        const char *mats[] = {"attn_q", "attn_k", "attn_v", "attn_output"};
        for (int m = 0; m < 4; m++) {
            snprintf(n, sizeof n, "blk.%d.%s.weight", l, mats[m]);
            add_t(&b, n, 2, E, E, 2, &off);
        }
        snprintf(n, sizeof n, "blk.%d.ffn_gate.weight", l);
        add_t(&b, n, 2, E, F, 2, &off);
        snprintf(n, sizeof n, "blk.%d.ffn_up.weight", l);
        add_t(&b, n, 2, E, F, 2, &off);
        snprintf(n, sizeof n, "blk.%d.ffn_down.weight", l);
        add_t(&b, n, 2, F, E, 2, &off);
        snprintf(n, sizeof n, "blk.%d.attn_norm.weight", l);
        add_t(&b, n, 1, E, 1, 0, &off);
        snprintf(n, sizeof n, "blk.%d.ffn_norm.weight", l);
        add_t(&b, n, 1, E, 1, 0, &off);
    }
    add_t(&b, "output_norm.weight", 1, E, 1, 0, &off);
    add_t(&b, "output.weight", 2, E, VOCAB, 2, &off);
    gb_pad(&b, 32);
    uint64_t total = b.n + off;
    cr_assert_gt(total, 3500000000ull);

    char path[] = "/tmp/kr_gguf_7bXXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, b.p, b.n), (ssize_t)b.n);
    cr_assert_eq(ftruncate(fd, (off_t)total), 0);
    close(fd);

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    kr_gguf *g = NULL;
    kr_err err;
    kr_status st = kr_gguf_open(path, NULL, &g, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    unlink(path);
    cr_assert_eq(st, KR_OK, "%s", err.msg);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    cr_log_info("7B-shaped metadata (%zu bytes header, %" PRIu64 " bytes file) opened in %.2f ms", b.n, total, ms);
    /* generous for sanitizer builds; reading the 3.8 GB would take seconds */
    cr_expect_lt(ms, 250.0, "open took %.1f ms", ms);
    cr_expect_eq(kr_gguf_n_tensors(g), 2 + 9 * L + 1);
    const kr_gguf_tensor *t = kr_gguf_find_tensor(g, "blk.31.ffn_down.weight");
    cr_assert_not_null(t);
    cr_expect_eq(t->size, F / 32 * 18 * E);
    kr_gguf_close(g);
    gb_free(&b);
}
