#include "gguf_test_util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *tu_testdata(const char *rel, char *buf, size_t cap)
{
    const char *root = getenv("KR_TESTDATA");
    if (!root || !root[0])
        root = "../shared/testdata";
    snprintf(buf, cap, "%s/%s", root, rel);
    return buf;
}

void tu_dump(const char *tag, const void *data, size_t n)
{
    const char *dir = getenv("KR_GGUF_SEED_DIR");
    if (!dir || !dir[0])
        return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.gguf", dir, tag);
    FILE *f = fopen(path, "wb");
    if (!f)
        return;
    if (n)
        fwrite(data, 1, n, f);
    fclose(f);
}

static void *exact_copy(const gb *b)
{
    void *p = malloc(b->n ? b->n : 1);
    cr_assert_not_null(p);
    if (b->n)
        memcpy(p, b->p, b->n);
    return p;
}

void tu_expect_reject(const char *tag, const gb *b, int code, const char *needle1, const char *needle2)
{
    tu_dump(tag, b->p, b->n);
    void *copy = exact_copy(b);
    kr_gguf *g = (kr_gguf *)0x1;
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_gguf_open_memory(copy, b->n, &g, &err);
    cr_expect_eq(st, code, "%s: expected %s, got %s (%s)", tag, kr_status_name((kr_status)code),
                 kr_status_name(st), err.msg);
    cr_expect_null(g, "%s: handle must be NULL on error", tag);
    cr_expect(err.msg[0] != '\0', "%s: empty error message", tag);
    if (needle1)
        cr_expect(strstr(err.msg, needle1) != NULL, "%s: message '%s' lacks '%s'", tag, err.msg, needle1);
    if (needle2)
        cr_expect(strstr(err.msg, needle2) != NULL, "%s: message '%s' lacks '%s'", tag, err.msg, needle2);
    if (g && g != (kr_gguf *)0x1)
        kr_gguf_close(g);
    free(copy);
}

kr_gguf *tu_expect_ok(const char *tag, const gb *b, void **copy)
{
    tu_dump(tag, b->p, b->n);
    *copy = exact_copy(b);
    kr_gguf *g = NULL;
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_gguf_open_memory(*copy, b->n, &g, &err);
    cr_assert_eq(st, KR_OK, "%s: %s", tag, err.msg);
    cr_assert_not_null(g);
    return g;
}

/* Reference file: v3, 16 metadata entries covering every value type, three
 * tensors whose data ends exactly at the end of the file, so that every
 * shorter prefix is invalid:
 *   "tok"  f32  [4, 2]   offset 0    32 bytes
 *   "w"    q8_0 [32, 2]  offset 32   68 bytes (2 blocks of 34)
 *   "last" f16  [3]      offset 128  6 bytes   -> data = 134 bytes
 * Tensor bytes are (i * 7 + 3) & 0xff for byte i of the data section. */
void tu_build_valid(gb *b)
{
    gb_header(b, 3, 3, 16);
    gb_kv_str(b, "general.architecture", "llama");
    gb_kv_u32(b, "general.alignment", 32);
    gb_key(b, "t.u8", GB_U8); gb_u8(b, 200);
    gb_key(b, "t.i8", GB_I8); gb_u8(b, (uint8_t)-5);
    gb_key(b, "t.u16", GB_U16); gb_u16(b, 65000);
    gb_key(b, "t.i16", GB_I16); gb_u16(b, (uint16_t)-300);
    gb_kv_u32(b, "t.u32", 4000000000u);
    gb_key(b, "t.i32", GB_I32); gb_u32(b, (uint32_t)-70000);
    gb_key(b, "t.f32", GB_F32); gb_f32(b, 1.5f);
    gb_key(b, "t.bool", GB_BOOL); gb_u8(b, 1);
    gb_key(b, "t.u64", GB_U64); gb_u64(b, 1ull << 40);
    gb_key(b, "t.i64", GB_I64); gb_u64(b, (uint64_t)-(1ll << 40));
    gb_key(b, "t.f64", GB_F64); gb_f64(b, -2.25);
    gb_key(b, "t.arr_u32", GB_ARR); gb_u32(b, GB_U32); gb_u64(b, 3); gb_u32(b, 10); gb_u32(b, 20); gb_u32(b, 30);
    gb_key(b, "t.arr_str", GB_ARR); gb_u32(b, GB_STR); gb_u64(b, 3); gb_str(b, "a"); gb_str(b, "bc"); gb_str(b, "");
    gb_key(b, "t.arr_empty", GB_ARR); gb_u32(b, GB_F32); gb_u64(b, 0);
    gb_tinfo(b, "tok", 2, (const uint64_t[]){4, 2}, 0, 0);
    gb_tinfo(b, "w", 2, (const uint64_t[]){32, 2}, 8, 32);
    gb_tinfo(b, "last", 1, (const uint64_t[]){3}, 1, 128);
    gb_pad(b, 32);
    for (unsigned i = 0; i < TU_VALID_DATA_BYTES; i++)
        gb_u8(b, (uint8_t)((i * 7 + 3) & 0xff));
}
