/* `kernrun inspect`, run as a user would: the binary is executed and its
 * --json output parsed with json-c. Expected numbers come from the testdata
 * README (stories260K: dim 64, 5 layers, 8 heads, 4 KV heads, ffn 172,
 * vocab 512, ctx 512) and from the bytes the test writes. */
#include <criterion/criterion.h>
#include <json-c/json.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gguf_test_util.h"

TestSuite(gguf_inspect, .fini = kr_test_leak_check);

#ifndef KR_KERNRUN_EXE
#error "KR_KERNRUN_EXE must be defined by the build"
#endif

/* Run `kernrun inspect ARGS`, return exit status; stdout and stderr in
 * malloc'ed strings. */
static int run_inspect(const char *args, char **out, char **errout)
{
    char errpath[] = "/tmp/kr_inspect_errXXXXXX";
    int fd = mkstemp(errpath);
    cr_assert_geq(fd, 0);
    close(fd);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' inspect %s 2>'%s'", KR_KERNRUN_EXE, args, errpath);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t cap = 1 << 16, n = 0, r;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    while ((r = fread(buf + n, 1, cap - n - 1, p)) > 0) {
        n += r;
        if (n + 1 == cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            cr_assert_not_null(buf);
        }
    }
    buf[n] = '\0';
    int status = pclose(p);
    *out = buf;
    FILE *e = fopen(errpath, "rb");
    cr_assert_not_null(e);
    char *eb = calloc(1, 8192);
    cr_assert_not_null(eb);
    size_t en = fread(eb, 1, 8191, e);
    eb[en] = '\0';
    fclose(e);
    unlink(errpath);
    *errout = eb;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static json_object *get(json_object *o, const char *key)
{
    json_object *v = NULL;
    cr_assert(json_object_object_get_ex(o, key, &v), "missing JSON key '%s'", key);
    return v;
}

Test(gguf_inspect, stories_json)
{
    char path[4096], args[4200];
    snprintf(args, sizeof args, "--json '%s'", tu_testdata("models/stories260K-f32.gguf", path, sizeof path));
    char *out, *err;
    int rc = run_inspect(args, &out, &err);
    cr_assert_eq(rc, 0, "rc %d, stderr: %s", rc, err);
    json_object *root = json_tokener_parse(out);
    cr_assert_not_null(root, "invalid JSON: %.200s", out);
    cr_expect_eq(json_object_get_int64(get(root, "version")), 3);
    cr_expect_eq(json_object_get_int64(get(root, "alignment")), 32);
    cr_expect_str_eq(json_object_get_string(get(root, "architecture")), "llama");
    json_object *hp = get(root, "hparams");
    cr_expect_eq(json_object_get_int64(get(hp, "embedding_length")), 64);
    cr_expect_eq(json_object_get_int64(get(hp, "block_count")), 5);
    cr_expect_eq(json_object_get_int64(get(hp, "attention.head_count")), 8);
    cr_expect_eq(json_object_get_int64(get(hp, "attention.head_count_kv")), 4);
    cr_expect_eq(json_object_get_int64(get(hp, "feed_forward_length")), 172);
    cr_expect_eq(json_object_get_int64(get(hp, "context_length")), 512);
    cr_expect_eq(json_object_get_int64(get(hp, "n_vocab")), 512);
    /* 48 tensors: embd + 5 x 9 + output_norm + output; all F32 */
    json_object *tensors = get(root, "tensors");
    cr_assert_eq(json_object_array_length(tensors), 48);
    uint64_t bytes = 0, params = 0;
    for (size_t i = 0; i < 48; i++) {
        json_object *t = json_object_array_get_idx(tensors, i);
        cr_expect_str_eq(json_object_get_string(get(t, "type")), "f32");
        json_object *shape = get(t, "shape");
        uint64_t ne = 1;
        for (size_t d = 0; d < json_object_array_length(shape); d++)
            ne *= (uint64_t)json_object_get_int64(json_object_array_get_idx(shape, d));
        cr_expect_eq((uint64_t)json_object_get_int64(get(t, "bytes")), ne * 4);
        bytes += ne * 4;
        params += ne;
    }
    /* params: 512*64*2 (embd, output) + 5 * (64*64*2 + 64*32*2 + 64*172*3 + 64*2) + 64 */
    cr_expect_eq(params, 512u * 64 * 2 + 5u * (64 * 64 * 2 + 64 * 32 * 2 + 64 * 172 * 3 + 64 * 2) + 64);
    json_object *tot = get(root, "totals");
    cr_expect_eq((uint64_t)json_object_get_int64(get(tot, "params")), params);
    cr_expect_eq((uint64_t)json_object_get_int64(get(tot, "bytes")), bytes);
    cr_expect_eq(json_object_get_int64(get(tot, "tensors")), 48);
    /* the token array is summarised */
    json_object *md = get(root, "metadata");
    bool found = false;
    for (size_t i = 0; i < json_object_array_length(md); i++) {
        json_object *kv = json_object_array_get_idx(md, i);
        if (strcmp(json_object_get_string(get(kv, "key")), "tokenizer.ggml.tokens") != 0)
            continue;
        found = true;
        cr_expect_str_eq(json_object_get_string(get(kv, "elem_type")), "string");
        cr_expect_eq(json_object_get_int64(get(kv, "count")), 512);
        cr_expect(json_object_get_boolean(get(kv, "truncated")));
        json_object *vals = get(kv, "values");
        cr_expect_lt(json_object_array_length(vals), 512);
        cr_expect_str_eq(json_object_get_string(json_object_array_get_idx(vals, 1)), "<s>");
    }
    cr_expect(found);
    json_object_put(root);
    free(out);
    free(err);
}

Test(gguf_inspect, text_and_errors)
{
    char path[4096], args[4200];
    char *out, *err;
    snprintf(args, sizeof args, "'%s'", tu_testdata("models/llama2-tiny-random-f16.gguf", path, sizeof path));
    cr_assert_eq(run_inspect(args, &out, &err), 0, "%s", err);
    cr_expect(strstr(out, "GGUF version: ") && strstr(out, "output.weight") && strstr(out, "f16") &&
                  strstr(out, "hyperparameters (llama)") && strstr(out, "string[32000]"),
              "%s", out);
    free(out);
    free(err);

    snprintf(args, sizeof args, "'%s'",
             tu_testdata("models/stories260K-q8_0-v2-unaligned-rows.gguf", path, sizeof path));
    cr_expect_eq(run_inspect(args, &out, &err), 1);
    cr_expect(strstr(err, "blk.0.ffn_down.weight"), "%s", err);
    cr_expect_eq(out[0], '\0', "nothing on stdout: %s", out);
    free(out);
    free(err);

    cr_expect_eq(run_inspect("", &out, &err), 2);
    cr_expect(strstr(err, "usage"), "%s", err);
    free(out);
    free(err);
    cr_expect_eq(run_inspect("--nope x", &out, &err), 2);
    free(out);
    free(err);
    cr_expect_eq(run_inspect("/nonexistent.gguf", &out, &err), 1);
    cr_expect(strstr(err, "/nonexistent.gguf"), "%s", err);
    free(out);
    free(err);
}

/* Strings with quotes, control characters and invalid UTF-8 must come out as
 * valid JSON that decodes to the documented text. */
Test(gguf_inspect, json_escaping)
{
    gb b = {0};
    gb_header(&b, 3, 0, 3);
    gb_kv_str(&b, "general.architecture", "t\"x");
    gb_key(&b, "k.weird", GB_STR);
    gb_strn(&b, "a\"\\\n\x01\xff\xc3\xa9\xe2\x82", 10); /* quote, backslash, LF, SOH, 0xFF, é, cut € */
    gb_key(&b, "k\xc0.bad", GB_U8);
    gb_u8(&b, 7);
    char path[] = "/tmp/kr_inspect_escXXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    cr_assert_eq(write(fd, b.p, b.n), (ssize_t)b.n);
    close(fd);
    char args[256];
    snprintf(args, sizeof args, "--json '%s'", path);
    char *out, *err;
    int rc = run_inspect(args, &out, &err);
    unlink(path);
    cr_assert_eq(rc, 0, "%s", err);
    json_object *root = json_tokener_parse(out);
    cr_assert_not_null(root, "invalid JSON: %s", out);
    json_object *md = get(root, "metadata");
    cr_assert_eq(json_object_array_length(md), 3);
    cr_expect_str_eq(json_object_get_string(get(json_object_array_get_idx(md, 0), "value")), "t\"x");
    /* invalid bytes are escaped as \u00XX: 0xFF -> U+00FF, 0xE2 0x82 -> U+00E2 U+0082 */
    cr_expect_str_eq(json_object_get_string(get(json_object_array_get_idx(md, 1), "value")),
                     "a\"\\\n\x01\xc3\xbf\xc3\xa9\xc3\xa2\xc2\x82");
    cr_expect_str_eq(json_object_get_string(get(json_object_array_get_idx(md, 2), "key")), "k\xc3\x80.bad");
    cr_expect_str_eq(json_object_get_string(get(root, "architecture")), "t\"x");
    json_object_put(root);
    free(out);
    free(err);
    gb_free(&b);
}
