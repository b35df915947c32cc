/* Tokenizer from GGUF metadata (tokenizer.ggml.*), as llama.cpp defines it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* pre types for which llama.cpp sets ignore_merges and add_bos */
#define KR__LLAMA3_IGNORE_MERGES(p)                                                                  \
    (!strcmp(p, "llama-bpe") || !strcmp(p, "llama3") || !strcmp(p, "llama-v3") || !strcmp(p, "falcon3") || \
     !strcmp(p, "tekken"))

/* Optional token id key: NONE when absent or stored as a negative int32. */
static kr_status kr__get_id(const kr_gguf *g, const char *key, int32_t *id, kr_err *err)
{
    int64_t k = kr_gguf_find_key(g, key);
    if (k < 0)
        return KR_OK;
    kr_gguf_type ty = kr_gguf_kv_type(g, k);
    if (ty == KR_GGUF_INT32) {
        int32_t v;
        kr_status st = kr_gguf_get_i32(g, key, &v, err);
        if (st)
            return st;
        *id = v < 0 ? KR_TOK_NONE : v;
        return KR_OK;
    }
    uint64_t v;
    kr_status st = kr_gguf_get_uint(g, key, &v, err);
    if (st)
        return st;
    if (v > INT32_MAX)
        return kr_err_set(err, KR_ERR_RANGE, "%s = %llu is not a valid token id", key,
                          (unsigned long long)v);
    *id = (int32_t)v;
    return KR_OK;
}

static kr_status kr__get_bool_opt(const kr_gguf *g, const char *key, bool *out, kr_err *err)
{
    if (kr_gguf_find_key(g, key) < 0)
        return KR_OK;
    return kr_gguf_get_bool(g, key, out, err);
}

static kr_status kr__add_norm(kr_tokenizer *t, kr__norm_kind kind, const char *a, const char *b,
                              kr_err *err)
{
    if (t->n_norm >= KR_TOK_MAX_NORM_STEPS)
        return kr_err_set(err, KR_ERR_LIMIT, "more than %d normalizer steps", KR_TOK_MAX_NORM_STEPS);
    kr__norm_step *s = &t->norm[t->n_norm];
    memset(s, 0, sizeof *s);
    s->kind = kind;
    s->a_len = strlen(a);
    s->a = malloc(s->a_len + 1);
    if (b) {
        s->b_len = strlen(b);
        s->b = malloc(s->b_len + 1);
    }
    if (!s->a || (b && !s->b)) {
        free(s->a);
        free(s->b);
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    }
    memcpy(s->a, a, s->a_len + 1);
    if (b)
        memcpy(s->b, b, s->b_len + 1);
    t->n_norm++;
    return KR_OK;
}

kr_status kr__norm_add(kr_tokenizer *t, kr__norm_kind kind, const char *a, const char *b, kr_err *err)
{
    return kr__add_norm(t, kind, a, b, err);
}

static kr_status kr__load_gguf(const kr_gguf *g, kr_tokenizer **out, kr_err *err)
{
    kr_status st;
    kr_gguf_str model;
    kr_tokenizer *t = NULL;
    *out = NULL;
    if ((st = kr_gguf_get_str(g, "tokenizer.ggml.model", &model, err)))
        return st;
    kr_tok_kind kind;
    if (model.len == 5 && memcmp(model.ptr, "llama", 5) == 0)
        kind = KR_TOK_SPM;
    else if (model.len == 4 && memcmp(model.ptr, "gpt2", 4) == 0)
        kind = KR_TOK_BPE;
    else
        return kr_err_set(err, KR_ERR_UNSUPPORTED,
                          "tokenizer.ggml.model '%.*s' is not supported (supported: llama, gpt2)",
                          (int)(model.len > 64 ? 64 : model.len), model.ptr);

    uint64_t n;
    if ((st = kr_gguf_get_arr(g, "tokenizer.ggml.tokens", KR_GGUF_STRING, &n, err)))
        return st;
    if (n == 0 || n > KR_TOK_MAX_VOCAB)
        return kr_err_set(err, KR_ERR_RANGE, "tokenizer.ggml.tokens has %llu entries (allowed 1..%d)",
                          (unsigned long long)n, KR_TOK_MAX_VOCAB);
    if ((st = kr__tok_alloc(&t, (int32_t)n, err)))
        return st;
    t->kind = kind;
    for (uint64_t i = 0; i < n; i++) {
        kr_gguf_str s;
        if ((st = kr_gguf_arr_str(g, "tokenizer.ggml.tokens", i, &s, err)))
            goto err_free_tok;
        if (s.len > KR_TOK_MAX_TOKEN_LEN) {
            st = kr_err_set(err, KR_ERR_LIMIT, "token %llu is %llu bytes long (limit %d)",
                            (unsigned long long)i, (unsigned long long)s.len, KR_TOK_MAX_TOKEN_LEN);
            goto err_free_tok;
        }
        if ((st = kr__tok_set_text(t, (int32_t)i, s.ptr, (size_t)s.len, err)))
            goto err_free_tok;
    }
    /* scores (optional, float32, one per token) */
    if (kr_gguf_find_key(g, "tokenizer.ggml.scores") >= 0) {
        const void *data;
        uint64_t m;
        if ((st = kr_gguf_arr_data(g, "tokenizer.ggml.scores", KR_GGUF_FLOAT32, &data, &m, err)))
            goto err_free_tok;
        if (m != n) {
            st = kr_err_set(err, KR_ERR_FORMAT, "tokenizer.ggml.scores has %llu entries, tokens has %llu",
                            (unsigned long long)m, (unsigned long long)n);
            goto err_free_tok;
        }
        for (uint64_t i = 0; i < n; i++) {
            float f;
            memcpy(&f, (const char *)data + i * 4, 4);
            if (f != f) {
                st = kr_err_set(err, KR_ERR_FORMAT, "tokenizer.ggml.scores[%llu] is NaN",
                                (unsigned long long)i);
                goto err_free_tok;
            }
            t->toks[i].score = f;
        }
    }
    /* token types (optional, int32 0..6) */
    if (kr_gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        const void *data;
        uint64_t m;
        /* int32 as llama.cpp writes it; uint32 accepted too (values are checked) */
        int64_t tk = kr_gguf_find_key(g, "tokenizer.ggml.token_type");
        kr_gguf_type et = kr_gguf_kv_type(g, tk) == KR_GGUF_ARRAY && kr_gguf_arr_type(g, tk) == KR_GGUF_UINT32
                              ? KR_GGUF_UINT32 : KR_GGUF_INT32;
        if ((st = kr_gguf_arr_data(g, "tokenizer.ggml.token_type", et, &data, &m, err)))
            goto err_free_tok;
        if (m != n) {
            st = kr_err_set(err, KR_ERR_FORMAT,
                            "tokenizer.ggml.token_type has %llu entries, tokens has %llu",
                            (unsigned long long)m, (unsigned long long)n);
            goto err_free_tok;
        }
        for (uint64_t i = 0; i < n; i++) {
            int32_t v;
            memcpy(&v, (const char *)data + i * 4, 4);
            if (v < 0 || v > KR_TOK_TYPE_BYTE) {
                st = kr_err_set(err, KR_ERR_FORMAT, "tokenizer.ggml.token_type[%llu] = %d is not a token type (0..6)",
                                (unsigned long long)i, (int)v);
                goto err_free_tok;
            }
            t->toks[i].type = (uint8_t)(v == 0 ? KR_TOK_TYPE_NORMAL : v);
        }
    }
    if ((st = kr__tok_build_map(t, err)))
        goto err_free_tok;

    /* special ids and flags */
    if (kind == KR_TOK_SPM) {
        t->bos = n > 1 ? 1 : KR_TOK_NONE;
        t->eos = n > 2 ? 2 : KR_TOK_NONE;
        t->unk = 0;
        t->add_bos = true;
    }
    if ((st = kr__get_id(g, "tokenizer.ggml.bos_token_id", &t->bos, err)) ||
        (st = kr__get_id(g, "tokenizer.ggml.eos_token_id", &t->eos, err)) ||
        (st = kr__get_id(g, "tokenizer.ggml.unknown_token_id", &t->unk, err)) ||
        (st = kr__get_id(g, "tokenizer.ggml.padding_token_id", &t->pad, err)) ||
        (st = kr__get_id(g, "tokenizer.ggml.eot_token_id", &t->eot, err)))
        goto err_free_tok;

    const char *pre = "default";
    char pre_buf[128];
    if (kind == KR_TOK_BPE && kr_gguf_find_key(g, "tokenizer.ggml.pre") >= 0) {
        kr_gguf_str p;
        if ((st = kr_gguf_get_str(g, "tokenizer.ggml.pre", &p, err)))
            goto err_free_tok;
        if (p.len >= sizeof pre_buf || memchr(p.ptr, 0, (size_t)p.len)) {
            st = kr_err_set(err, KR_ERR_UNSUPPORTED, "unknown pre-tokenizer type '%.*s'",
                            (int)(p.len > 64 ? 64 : p.len), p.ptr);
            goto err_free_tok;
        }
        if (p.len)
            memcpy(pre_buf, p.ptr, (size_t)p.len);
        pre_buf[p.len] = '\0';
        pre = pre_buf;
    }
    if (kind == KR_TOK_BPE && KR__LLAMA3_IGNORE_MERGES(pre)) {
        t->ignore_merges = true;
        t->add_bos = true;
    }
    bool add_space_prefix = kind == KR_TOK_SPM;
    if ((st = kr__get_bool_opt(g, "tokenizer.ggml.add_bos_token", &t->add_bos, err)) ||
        (st = kr__get_bool_opt(g, "tokenizer.ggml.add_eos_token", &t->add_eos, err)) ||
        (st = kr__get_bool_opt(g, "tokenizer.ggml.add_space_prefix", &add_space_prefix, err)))
        goto err_free_tok;

    if (kind == KR_TOK_SPM) {
        if (add_space_prefix && (st = kr__add_norm(t, KR__NORM_PREPEND, "\xe2\x96\x81", NULL, err)))
            goto err_free_tok;
        if ((st = kr__add_norm(t, KR__NORM_REPLACE, " ", "\xe2\x96\x81", err)))
            goto err_free_tok;
        t->byte_fallback = true;
        t->dec_metaspace = true;
        t->dec_strip_leading = add_space_prefix;
    } else {
        const char *const *list;
        size_t nl;
        if (!kr__pre_regexes(pre, &list, &nl)) {
            st = kr_err_set(err, KR_ERR_UNSUPPORTED, "unknown pre-tokenizer type '%s' (tokenizer.ggml.pre)",
                            pre);
            goto err_free_tok;
        }
        for (size_t i = 0; i < nl; i++)
            if ((st = kr__pretok_add_split(t, list[i], strlen(list[i]), false, KR__SPLIT_ISOLATED, err)))
                goto err_free_tok;
        kr__pretok_step bl = {.kind = KR__PRE_BYTELEVEL};
        if ((st = kr__pretok_add(t, &bl, err)))
            goto err_free_tok;
        t->byte_level = true;

        uint64_t nm;
        if ((st = kr_gguf_get_arr(g, "tokenizer.ggml.merges", KR_GGUF_STRING, &nm, err)))
            goto err_free_tok;
        if ((st = kr__merges_init(t, (size_t)nm, err)))
            goto err_free_tok;
        for (uint64_t i = 0; i < nm; i++) {
            kr_gguf_str s;
            if ((st = kr_gguf_arr_str(g, "tokenizer.ggml.merges", i, &s, err)))
                goto err_free_tok;
            const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', (size_t)s.len - 1) : NULL;
            if (!sp) {
                st = kr_err_set(err, KR_ERR_FORMAT, "merge %llu '%.*s' has no space separator",
                                (unsigned long long)i, (int)(s.len > 64 ? 64 : s.len), s.ptr);
                goto err_free_tok;
            }
            size_t ln = (size_t)(sp - s.ptr);
            if ((st = kr__merges_add(t, s.ptr, ln, sp + 1, (size_t)s.len - ln - 1, err)))
                goto err_free_tok;
        }
    }

    if (kr_gguf_find_key(g, "tokenizer.chat_template") >= 0) {
        kr_gguf_str ct;
        if ((st = kr_gguf_get_str(g, "tokenizer.chat_template", &ct, err)))
            goto err_free_tok;
        if (ct.len > (1u << 24)) {
            st = kr_err_set(err, KR_ERR_LIMIT, "tokenizer.chat_template is %llu bytes (limit 16 MiB)",
                            (unsigned long long)ct.len);
            goto err_free_tok;
        }
        t->chat_template = malloc((size_t)ct.len + 1);
        if (!t->chat_template) {
            st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
            goto err_free_tok;
        }
        if (ct.len)
            memcpy(t->chat_template, ct.ptr, (size_t)ct.len);
        t->chat_template[ct.len] = '\0';
    }
    if ((st = kr__tok_finish(t, err)))
        goto err_free_tok;
    *out = t;
    return KR_OK;

err_free_tok:
    kr_tokenizer_free(t);
    return st;
}

kr_status kr_tokenizer_load_gguf(const kr_gguf *g, kr_tokenizer **out, kr_err *err)
{
    if (out)
        *out = NULL;
    if (!g || !out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "loading tokenizer: NULL argument");
    kr_status st = kr__load_gguf(g, out, err);
    if (st)
        kr_err_prefix(err, "loading tokenizer from GGUF");
    return st;
}

kr_status kr_tokenizer_load_file(const char *path, kr_tokenizer **out, kr_err *err)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "loading tokenizer: NULL argument");
    FILE *f = fopen(path, "rb");
    if (!f)
        return kr_err_set(err, KR_ERR_IO, "opening '%s': %s", path, strerror(errno));
    char magic[4] = {0};
    size_t got = fread(magic, 1, 4, f);
    fclose(f);
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) {
        kr_gguf *g = NULL;
        kr_status st = kr_gguf_open(path, NULL, &g, err);
        if (st) {
            kr_err_prefix(err, "%s", path);
            return st;
        }
        st = kr_tokenizer_load_gguf(g, out, err);
        kr_gguf_close(g);
        if (st)
            kr_err_prefix(err, "%s", path);
        return st;
    }
    return kr_tokenizer_load_json(path, out, err);
}
