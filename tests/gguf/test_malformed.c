/* Malformed files built byte by byte: each must be rejected cleanly with a
 * message naming the item and the values. Expected numbers come from the
 * bytes written here and the GGUF format definition. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "gguf_test_util.h"

#define REJ(tag, b, code, n1, n2) tu_expect_reject(tag, b, code, n1, n2)

TestSuite(gguf_malformed, .fini = kr_test_leak_check);

Test(gguf_malformed, every_truncation)
{
    gb b = {0};
    tu_build_valid(&b);
    void *full;
    kr_gguf *g = tu_expect_ok("valid_full", &b, &full);
    kr_gguf_close(g);
    free(full);
    for (size_t len = 0; len < b.n; len++) {
        void *p = malloc(len ? len : 1);
        cr_assert_not_null(p);
        memcpy(p, b.p, len);
        kr_err err;
        kr_err_clear(&err);
        g = (kr_gguf *)0x1;
        kr_status st = kr_gguf_open_memory(p, len, &g, &err);
        cr_expect_eq(st, KR_ERR_FORMAT, "prefix %zu of %zu: %s (%s)", len, b.n, kr_status_name(st), err.msg);
        cr_expect_null(g);
        cr_expect(err.msg[0], "prefix %zu: empty message", len);
        if (st == KR_OK)
            kr_gguf_close(g);
        free(p);
    }
    gb_free(&b);
}

Test(gguf_malformed, empty_and_magic)
{
    gb b = {0};
    REJ("empty", &b, KR_ERR_FORMAT, "empty", NULL);
    gb_raw(&b, "GG", 2);
    REJ("magic_short", &b, KR_ERR_FORMAT, "too small", "size 2");
    gb_free(&b);
    gb_raw(&b, "GGUX", 4);
    gb_u32(&b, 3);
    gb_zeros(&b, 16);
    REJ("bad_magic", &b, KR_ERR_FORMAT, "bad magic", "47 47 55 58");
    gb_free(&b);
    gb_raw(&b, "version https://git-lfs.github.com/spec/v1\noid sha256:00\n", 57);
    REJ("lfs_pointer", &b, KR_ERR_FORMAT, "bad magic 76 65 72 73", "Git LFS pointer");
    gb_free(&b);
    gb_raw(&b, "<!DOCTYPE html><html>", 21);
    REJ("html", &b, KR_ERR_FORMAT, "HTML", NULL);
    gb_free(&b);
    gb_raw(&b, "{\"model\": {}}", 13);
    REJ("json", &b, KR_ERR_FORMAT, "JSON", NULL);
    gb_free(&b);
    gb_raw(&b, "tjgg", 4); /* 'ggjt' as a little-endian u32 */
    gb_u32(&b, 3);
    REJ("ggjt_magic", &b, KR_ERR_UNSUPPORTED, "legacy", "convert");
    gb_free(&b);
}

Test(gguf_malformed, versions)
{
    gb b = {0};
    gb_header(&b, 0, 0, 0);
    REJ("version0", &b, KR_ERR_FORMAT, "version 0", NULL);
    gb_free(&b);
    gb_header(&b, 1, 0, 0);
    REJ("version1", &b, KR_ERR_UNSUPPORTED, "GGUF v1 is no longer supported; convert the file", NULL);
    gb_free(&b);
    gb_header(&b, 4, 0, 0);
    REJ("version4", &b, KR_ERR_UNSUPPORTED, "version 4 is newer than supported", NULL);
    gb_free(&b);
    gb_header(&b, 0x03000000u, 0, 0); /* version 3 written big-endian */
    REJ("version_bswap", &b, KR_ERR_UNSUPPORTED, "big-endian GGUF v3", "0x03000000");
    gb_free(&b);
    gb_header(&b, 0x02000000u, 0, 0);
    REJ("version_bswap2", &b, KR_ERR_UNSUPPORTED, "big-endian GGUF v2", NULL);
    gb_free(&b);
    gb_header(&b, 0x00010000u, 0, 0); /* 65536: newer, not byte-swapped */
    REJ("version_65536", &b, KR_ERR_UNSUPPORTED, "version 65536 is newer than supported", NULL);
    gb_free(&b);
    gb_raw(&b, "GGUF", 4);
    gb_u16(&b, 3);
    REJ("version_cut", &b, KR_ERR_FORMAT, "version", "needs 4 bytes");
    gb_free(&b);
}

Test(gguf_malformed, huge_counts)
{
    gb b = {0};
    gb_header(&b, 3, UINT64_MAX, 0);
    REJ("n_tensors_max", &b, KR_ERR_FORMAT, "tensor count 18446744073709551615", "cannot fit");
    gb_free(&b);
    gb_header(&b, 3, 0, UINT64_MAX);
    REJ("n_kv_max", &b, KR_ERR_FORMAT, "metadata count 18446744073709551615", "cannot fit");
    gb_free(&b);
    gb_header(&b, 3, 0, 1ull << 63); /* -2^63 as int64 */
    REJ("n_kv_negative", &b, KR_ERR_FORMAT, "metadata count 9223372036854775808", NULL);
    gb_free(&b);
    /* 3 entries of 14 bytes fit in 42 bytes; claim 4 */
    gb_header(&b, 3, 0, 4);
    for (int i = 0; i < 3; i++) {
        char k[2] = {(char)('a' + i), 0};
        gb_key(&b, k, GB_U8);
        gb_u8(&b, 1);
    }
    REJ("n_kv_plus_one", &b, KR_ERR_FORMAT, "metadata count 4", "42 bytes left");
    gb_free(&b);
    /* tensor count that the metadata leaves no room for */
    gb_header(&b, 3, 1, 1);
    gb_kv_str(&b, "k", "0123456789012345678901234567890123456789");
    REJ("n_tensors_after_kv", &b, KR_ERR_FORMAT, "tensor count 1", "after the metadata");
    gb_free(&b);
}

Test(gguf_malformed, key_lengths)
{
    gb b = {0};
    gb_header(&b, 3, 0, 1);
    gb_u64(&b, UINT64_MAX);
    gb_zeros(&b, 16);
    REJ("key_len_max", &b, KR_ERR_FORMAT, "key length 18446744073709551615", "limit 65536");
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_u64(&b, 1000);
    gb_raw(&b, "abcdefghijklmnopqrstuvwxyz", 26);
    REJ("key_len_past_end", &b, KR_ERR_FORMAT, "key length 1000", "26 bytes left");
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_u64(&b, 65537);
    gb_zeros(&b, 65537 + 5);
    REJ("key_len_64k_plus_1", &b, KR_ERR_FORMAT, "key length 65537", "limit 65536");
    gb_free(&b);
}

Test(gguf_malformed, keys_empty_dup_nul)
{
    gb b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "", GB_U32);
    gb_u32(&b, 0);
    REJ("key_empty", &b, KR_ERR_FORMAT, "empty key", "#0");
    gb_free(&b);
    gb_header(&b, 3, 0, 3);
    gb_kv_u32(&b, "a.b", 1);
    gb_kv_u32(&b, "c", 1);
    gb_kv_str(&b, "a.b", "x");
    REJ("key_dup", &b, KR_ERR_FORMAT, "'a.b': duplicate of key #0", NULL);
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_strn(&b, "ab\0cd", 5);
    gb_u32(&b, GB_U8);
    gb_u8(&b, 0);
    REJ("key_nul", &b, KR_ERR_FORMAT, "NUL", NULL);
    gb_free(&b);
}

Test(gguf_malformed, value_types)
{
    gb b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k.unknown", 13);
    gb_u32(&b, 0);
    REJ("value_type_13", &b, KR_ERR_FORMAT, "'k.unknown'", "unknown value type 13");
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k.big", 0xffffffffu);
    gb_u32(&b, 0);
    REJ("value_type_max", &b, KR_ERR_FORMAT, "unknown value type 4294967295", NULL);
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k.aa", GB_ARR);
    gb_u32(&b, GB_ARR);
    gb_u64(&b, 1);
    gb_u32(&b, GB_U8);
    gb_u64(&b, 1);
    gb_u8(&b, 0);
    REJ("array_of_arrays", &b, KR_ERR_FORMAT, "'k.aa'", "arrays of arrays");
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k.ae", GB_ARR);
    gb_u32(&b, 77);
    gb_u64(&b, 0);
    REJ("array_elem_type", &b, KR_ERR_FORMAT, "unknown array element type 77", NULL);
    gb_free(&b);
}

Test(gguf_malformed, array_sizes)
{
    gb b = {0};
    /* 2^61 u64 elements = 2^64 bytes: wraps to 0 in unchecked arithmetic */
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k.wrap", GB_ARR);
    gb_u32(&b, GB_U64);
    gb_u64(&b, 1ull << 61);
    gb_zeros(&b, 16);
    REJ("array_count_wrap", &b, KR_ERR_FORMAT, "array count 2305843009213693952 x element size 8 overflows", NULL);
    gb_free(&b);
    /* u32 x 2^62 also wraps */
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k.wrap4", GB_ARR);
    gb_u32(&b, GB_F32);
    gb_u64(&b, 1ull << 62);
    REJ("array_count_wrap_f32", &b, KR_ERR_FORMAT, "overflows", NULL);
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k.long", GB_ARR);
    gb_u32(&b, GB_U16);
    gb_u64(&b, 5);
    gb_u16(&b, 1);
    gb_u16(&b, 2);
    REJ("array_past_end", &b, KR_ERR_FORMAT, "array of 5 u16 (10 bytes)", "4 bytes left");
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k.strs", GB_ARR);
    gb_u32(&b, GB_STR);
    gb_u64(&b, UINT64_MAX);
    gb_zeros(&b, 24);
    REJ("array_str_count", &b, KR_ERR_FORMAT, "array of 18446744073709551615 strings", "cannot fit");
    gb_free(&b);
    /* string element with a length past the end */
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k.strs2", GB_ARR);
    gb_u32(&b, GB_STR);
    gb_u64(&b, 2);
    gb_str(&b, "ok");
    gb_u64(&b, 100);
    gb_raw(&b, "short", 5);
    REJ("array_str_len", &b, KR_ERR_FORMAT, "array element 1", "length 100");
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k.s", GB_STR);
    gb_u64(&b, UINT64_MAX);
    gb_raw(&b, "abc", 3);
    REJ("string_len_max", &b, KR_ERR_FORMAT, "'k.s'", "length 18446744073709551615");
    gb_free(&b);
}

Test(gguf_malformed, bools)
{
    gb b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k.b", GB_BOOL);
    gb_u8(&b, 2);
    REJ("bool_2", &b, KR_ERR_FORMAT, "'k.b'", "bool value 2");
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "k.ba", GB_ARR);
    gb_u32(&b, GB_BOOL);
    gb_u64(&b, 3);
    gb_u8(&b, 1);
    gb_u8(&b, 0);
    gb_u8(&b, 255);
    REJ("bool_arr_255", &b, KR_ERR_FORMAT, "bool element 2 has value 255", NULL);
    gb_free(&b);
}

Test(gguf_malformed, alignment)
{
    gb b = {0};
    gb_header(&b, 3, 0, 1);
    gb_key(&b, "general.alignment", GB_U64);
    gb_u64(&b, 32);
    REJ("align_type", &b, KR_ERR_FORMAT, "general.alignment has type u64, expected u32", NULL);
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_kv_u32(&b, "general.alignment", 0);
    REJ("align_0", &b, KR_ERR_FORMAT, "general.alignment 0", "power of two");
    gb_free(&b);
    gb_header(&b, 3, 0, 1);
    gb_kv_u32(&b, "general.alignment", 3);
    REJ("align_3", &b, KR_ERR_FORMAT, "general.alignment 3", "power of two");
    gb_free(&b);
}

/* A file with one tensor info (given by the caller) followed by padding and
 * `data` bytes of data. */
static void one_tensor(gb *b, const char *name, uint32_t n_dims, const uint64_t *ne, uint32_t type, uint64_t off,
                       size_t data)
{
    gb_header(b, 3, 1, 0);
    gb_tinfo(b, name, n_dims, ne, type, off);
    gb_pad(b, 32);
    gb_zeros(b, data);
}

Test(gguf_malformed, tensor_names)
{
    gb b = {0};
    gb_header(&b, 3, 2, 0);
    gb_tinfo(&b, "x", 1, (const uint64_t[]){8}, 0, 0);
    gb_tinfo(&b, "x", 1, (const uint64_t[]){8}, 0, 32);
    gb_pad(&b, 32);
    gb_zeros(&b, 64);
    REJ("tensor_dup", &b, KR_ERR_FORMAT, "tensor #1 'x': duplicate name", NULL);
    gb_free(&b);
    char name[65];
    memset(name, 'n', 64);
    name[64] = '\0';
    one_tensor(&b, name, 1, (const uint64_t[]){1}, 0, 0, 4);
    REJ("tensor_name_64", &b, KR_ERR_FORMAT, "name length 64", "limit 63");
    gb_free(&b);
    gb_header(&b, 3, 1, 0);
    gb_strn(&b, "a\0b", 3);
    gb_u32(&b, 1);
    gb_u64(&b, 1);
    gb_u32(&b, 0);
    gb_u64(&b, 0);
    gb_pad(&b, 32);
    gb_zeros(&b, 4);
    REJ("tensor_name_nul", &b, KR_ERR_FORMAT, "NUL", NULL);
    gb_free(&b);
    one_tensor(&b, "", 1, (const uint64_t[]){1}, 0, 0, 4);
    REJ("tensor_name_empty", &b, KR_ERR_FORMAT, "empty name", NULL);
    gb_free(&b);
    gb_header(&b, 3, 1, 0);
    gb_u64(&b, UINT64_MAX);
    gb_zeros(&b, 40);
    REJ("tensor_name_len_max", &b, KR_ERR_FORMAT, "tensor #0", "length 18446744073709551615");
    gb_free(&b);
}

Test(gguf_malformed, tensor_dims)
{
    gb b = {0};
    one_tensor(&b, "t5", 5, (const uint64_t[]){1, 1, 1, 1, 1}, 0, 0, 4);
    REJ("n_dims_5", &b, KR_ERR_FORMAT, "'t5': n_dims 5", NULL);
    gb_free(&b);
    one_tensor(&b, "t0", 0, NULL, 0, 0, 4);
    REJ("n_dims_0", &b, KR_ERR_FORMAT, "'t0': n_dims 0", NULL);
    gb_free(&b);
    one_tensor(&b, "z", 2, (const uint64_t[]){4, 0}, 0, 0, 64);
    REJ("ne_0", &b, KR_ERR_FORMAT, "'z': ne[1] is 0", NULL);
    gb_free(&b);
    one_tensor(&b, "neg", 2, (const uint64_t[]){4, UINT64_MAX}, 0, 0, 64);
    REJ("ne_negative", &b, KR_ERR_FORMAT, "'neg': ne[1] = -1 is negative", NULL);
    gb_free(&b);
    one_tensor(&b, "prod", 2, (const uint64_t[]){1ull << 32, 1ull << 32}, 0, 0, 64);
    REJ("ne_product", &b, KR_ERR_FORMAT, "'prod': element count", "overflows");
    gb_free(&b);
    /* 2^31 * 2^31 = 2^62 elements fits int64, but 2^62 f32 = 2^64 bytes */
    one_tensor(&b, "bytes", 2, (const uint64_t[]){1ull << 31, 1ull << 31}, 0, 0, 64);
    REJ("byte_size", &b, KR_ERR_FORMAT, "'bytes': byte size of f32", "overflows");
    gb_free(&b);
    /* 4 dims whose product exceeds INT64_MAX without wrapping uint64 */
    one_tensor(&b, "i64", 4, (const uint64_t[]){1ull << 16, 1ull << 16, 1ull << 16, 1ull << 15}, 0, 0, 64);
    REJ("ne_product_int64", &b, KR_ERR_FORMAT, "'i64': element count", NULL);
    gb_free(&b);
}

Test(gguf_malformed, tensor_types)
{
    gb b = {0};
    one_tensor(&b, "u", 1, (const uint64_t[]){32}, 99, 0, 64);
    REJ("type_99", &b, KR_ERR_FORMAT, "'u': unknown type id 99", NULL);
    gb_free(&b);
    one_tensor(&b, "iq", 1, (const uint64_t[]){256}, 16, 0, 128);
    REJ("type_iq2_xxs", &b, KR_ERR_UNSUPPORTED, "type 16 (iq2_xxs) is not supported", NULL);
    gb_free(&b);
    one_tensor(&b, "q", 2, (const uint64_t[]){33, 2}, 8, 0, 128);
    REJ("q8_row_33", &b, KR_ERR_FORMAT, "'q': row length ne[0] = 33 is not a multiple of the q8_0 block size 32",
        NULL);
    gb_free(&b);
    one_tensor(&b, "k", 1, (const uint64_t[]){128}, 12, 0, 256);
    REJ("q4k_row_128", &b, KR_ERR_FORMAT, "q4_k block size 256", NULL);
    gb_free(&b);
}

Test(gguf_malformed, tensor_offsets)
{
    gb b = {0};
    one_tensor(&b, "un", 1, (const uint64_t[]){4}, 0, 16, 64);
    REJ("offset_unaligned", &b, KR_ERR_FORMAT, "'un': offset 16 is not a multiple of the alignment 32", NULL);
    gb_free(&b);
    one_tensor(&b, "far", 1, (const uint64_t[]){4}, 0, 64, 64);
    REJ("offset_past_eof", &b, KR_ERR_FORMAT, "'far': offset 64 + size 16 past end of data (size 64", NULL);
    gb_free(&b);
    /* offset + size wraps: 2^64 - 32 + 64 */
    one_tensor(&b, "wrap", 1, (const uint64_t[]){16}, 0, UINT64_MAX - 31, 64);
    REJ("offset_wrap", &b, KR_ERR_FORMAT, "'wrap': offset 18446744073709551584 + size 64 overflows", NULL);
    gb_free(&b);
    /* short data: 16 bytes declared, 15 present */
    one_tensor(&b, "short", 1, (const uint64_t[]){4}, 0, 0, 15);
    REJ("data_short", &b, KR_ERR_FORMAT, "'short': offset 0 + size 16 past end of data (size 15", "truncated");
    gb_free(&b);
    /* no data section at all */
    gb_header(&b, 3, 1, 0);
    gb_tinfo(&b, "none", 1, (const uint64_t[]){4}, 0, 0);
    REJ("data_missing", &b, KR_ERR_FORMAT, "data section starts at offset 64", "size 60");
    gb_free(&b);
    /* overlap: a = [0, 64), b at 32 */
    gb_header(&b, 3, 2, 0);
    gb_tinfo(&b, "b", 1, (const uint64_t[]){8}, 0, 32);
    gb_tinfo(&b, "a", 1, (const uint64_t[]){16}, 0, 0);
    gb_pad(&b, 32);
    gb_zeros(&b, 96);
    REJ("overlap", &b, KR_ERR_FORMAT, "'a' (offset 0, size 64) overlaps tensor 'b' (offset 32)", NULL);
    gb_free(&b);
    /* same offset */
    gb_header(&b, 3, 2, 0);
    gb_tinfo(&b, "p", 1, (const uint64_t[]){8}, 0, 0);
    gb_tinfo(&b, "q", 1, (const uint64_t[]){8}, 0, 0);
    gb_pad(&b, 32);
    gb_zeros(&b, 64);
    REJ("overlap_same", &b, KR_ERR_FORMAT, "overlaps", NULL);
    gb_free(&b);
}

/* Many tensors out of order, then overlap found only by sorting. */
Test(gguf_malformed, overlap_among_many)
{
    gb b = {0};
    enum { N = 50 };
    gb_header(&b, 3, N, 0);
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d", i);
        /* offsets 32 * perm(i); tensor 17 is 64 bytes long and runs into the next slot */
        uint64_t slot = (uint64_t)((i * 7) % N);
        gb_tinfo(&b, name, 1, (const uint64_t[]){i == 17 ? 16u : 8u}, 0, slot * 32);
    }
    gb_pad(&b, 32);
    gb_zeros(&b, 32 * N + 32);
    REJ("overlap_many", &b, KR_ERR_FORMAT, "'t17' (offset 608, size 64) overlaps", NULL);
    gb_free(&b);
}
