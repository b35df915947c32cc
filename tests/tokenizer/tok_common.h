/* Helpers shared by the tokenizer tests. */
#ifndef KR_TEST_TOK_COMMON_H
#define KR_TEST_TOK_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>

#include "kernrun/gguf.h"
#include "kernrun/tokenizer.h"
#include "kr_test_leaks.h"

static inline const char *kr_test_data_dir(void)
{
    const char *d = getenv("KR_TESTDATA");
    return d && *d ? d : "../shared/testdata";
}

static inline char *kr_test_path(const char *rel)
{
    const char *d = kr_test_data_dir();
    size_t n = strlen(d) + strlen(rel) + 2;
    char *p = malloc(n);
    cr_assert(p);
    snprintf(p, n, "%s/%s", d, rel);
    return p;
}

static inline char *kr_test_read(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    rewind(f);
    char *b = malloc((size_t)sz + 1);
    cr_assert(b);
    cr_assert(fread(b, 1, (size_t)sz, f) == (size_t)sz);
    b[sz] = '\0';
    fclose(f);
    *len = (size_t)sz;
    return b;
}

/* Load a tokenizer from a testdata-relative path (GGUF or json). */
static inline kr_tokenizer *kr_test_load(const char *rel)
{
    char *p = kr_test_path(rel);
    kr_err err;
    kr_err_clear(&err);
    kr_tokenizer *t = NULL;
    kr_status st = kr_tokenizer_load_file(p, &t, &err);
    cr_assert(st == KR_OK, "loading %s: %s", p, kr_err_msg(&err, st));
    free(p);
    return t;
}

/* Encode with explicit options; returns a malloc'd array. */
static inline int32_t *kr_test_encode(const kr_tokenizer *t, const char *s, size_t n, bool bos,
                                      bool special, size_t *n_out)
{
    kr_tok_encode_opts o = {.add_bos = bos, .add_eos = false, .parse_special = special};
    kr_err err;
    kr_err_clear(&err);
    size_t need = 0;
    kr_status st = kr_tokenizer_encode(t, s, n, &o, NULL, 0, &need, &err);
    cr_assert(st == KR_OK || st == KR_ERR_RANGE, "encode: %s", kr_err_msg(&err, st));
    int32_t *ids = malloc((need ? need : 1) * sizeof *ids);
    cr_assert(ids);
    st = kr_tokenizer_encode(t, s, n, &o, ids, need, n_out, &err);
    cr_assert(st == KR_OK, "encode: %s", kr_err_msg(&err, st));
    cr_assert(*n_out == need);
    return ids;
}

static inline char *kr_test_decode(const kr_tokenizer *t, const int32_t *ids, size_t n,
                                   const kr_tok_decode_opts *o, size_t *len)
{
    kr_err err;
    kr_err_clear(&err);
    size_t need = 0;
    kr_status st = kr_tokenizer_decode(t, ids, n, o, NULL, 0, &need, &err);
    cr_assert(st == KR_OK || st == KR_ERR_RANGE, "decode: %s", kr_err_msg(&err, st));
    char *b = malloc(need + 1);
    cr_assert(b);
    st = kr_tokenizer_decode(t, ids, n, o, b, need, len, &err);
    cr_assert(st == KR_OK, "decode: %s", kr_err_msg(&err, st));
    b[*len] = '\0';
    return b;
}

#endif
