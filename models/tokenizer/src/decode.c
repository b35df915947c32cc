/* Decoding ids to bytes, accessors, and the streaming detokenizer. */
#include <stdlib.h>
#include <string.h>

#include "kernrun/checked.h"
#include "tok_internal.h"

/* Bytes of one token, appended through put(); returns the byte count. The
 * caller has checked the id. Writes at most cap bytes into out (out may be
 * NULL when cap is 0) but always returns the full length. */
static size_t kr__piece_bytes(const kr_tokenizer *t, int32_t id, bool render_special, char *out,
                              size_t cap)
{
    const kr__tok_entry *te = &t->toks[id];
    const char *s = t->strs + te->off;
    size_t n = te->len, o = 0;
#define KR__PUT(c)                \
    do {                          \
        if (o < cap)              \
            out[o] = (char)(c);   \
        o++;                      \
    } while (0)
    switch (te->type) {
    case KR_TOK_TYPE_CONTROL:
    case KR_TOK_TYPE_UNKNOWN:
    case KR_TOK_TYPE_UNUSED:
        if (!render_special)
            return 0;
        for (size_t i = 0; i < n; i++)
            KR__PUT(s[i]);
        return o;
    case KR_TOK_TYPE_USER_DEFINED:
        for (size_t i = 0; i < n; i++)
            KR__PUT(s[i]);
        return o;
    case KR_TOK_TYPE_BYTE: {
        uint8_t b;
        if (kr__parse_byte_token(s, n, &b)) {
            KR__PUT(b);
            return o;
        }
        break;
    }
    default:
        break;
    }
    if (t->byte_level) {
        for (size_t i = 0; i < n;) {
            uint32_t cp;
            size_t cl = kr__utf8_get(s + i, n - i, &cp);
            int b = cl ? kr__cp_to_byte(cp) : -1;
            if (b >= 0) {
                KR__PUT(b);
                i += cl;
            } else {
                if (cl == 0)
                    cl = 1;
                for (size_t j = 0; j < cl; j++)
                    KR__PUT(s[i + j]);
                i += cl;
            }
        }
        return o;
    }
    for (size_t i = 0; i < n;) {
        if (t->dec_metaspace && i + 3 <= n && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
            KR__PUT(' ');
            i += 3;
        } else {
            KR__PUT(s[i]);
            i++;
        }
    }
    return o;
#undef KR__PUT
}

kr_tok_decode_opts kr_tokenizer_decode_defaults(const kr_tokenizer *tok)
{
    kr_tok_decode_opts o = {0};
    if (tok)
        o.strip_leading_space = tok->dec_strip_leading;
    return o;
}

kr_status kr_tokenizer_token_bytes(const kr_tokenizer *tok, int32_t id, bool render_special,
                                   char *out, size_t cap, size_t *n_out, kr_err *err)
{
    if (n_out)
        *n_out = 0;
    if (!tok || !n_out || (!out && cap > 0))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "token_bytes: NULL argument");
    if (id < 0 || id >= tok->n_vocab)
        return kr_err_set(err, KR_ERR_RANGE, "token id %d outside [0, %d)", (int)id, (int)tok->n_vocab);
    size_t n = kr__piece_bytes(tok, id, render_special, out, cap);
    *n_out = n;
    if (n > cap)
        return kr_err_set(err, KR_ERR_RANGE, "token %d needs %zu bytes, buffer has %zu", (int)id, n, cap);
    return KR_OK;
}

kr_status kr_tokenizer_decode(const kr_tokenizer *tok, const int32_t *ids, size_t n,
                              const kr_tok_decode_opts *opts, char *out, size_t cap,
                              size_t *n_out, kr_err *err)
{
    if (n_out)
        *n_out = 0;
    if (!tok || !n_out || (!ids && n > 0) || (!out && cap > 0))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "detokenize: NULL argument");
    kr_tok_decode_opts o = opts ? *opts : kr_tokenizer_decode_defaults(tok);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok->n_vocab)
            return kr_err_set(err, KR_ERR_RANGE, "detokenize: id %d at position %zu outside [0, %d)",
                              (int)ids[i], i, (int)tok->n_vocab);
    size_t total = 0;
    bool at_start = true;
    char tmp[KR_TOK_MAX_TOKEN_LEN];
    for (size_t i = 0; i < n; i++) {
        size_t pn = kr__piece_bytes(tok, ids[i], o.render_special, tmp, sizeof tmp);
        size_t skip = 0;
        if (at_start && pn > 0) {
            if (o.strip_leading_space && tmp[0] == ' ')
                skip = 1;
            at_start = false;
        }
        for (size_t j = skip; j < pn; j++) {
            if (total < cap)
                out[total] = tmp[j];
            total++;
        }
    }
    *n_out = total;
    if (total > cap)
        return kr_err_set(err, KR_ERR_RANGE, "detokenize: %zu bytes do not fit in %zu", total, cap);
    return KR_OK;
}

/* ---- accessors ---- */
kr_tok_kind kr_tokenizer_kind(const kr_tokenizer *t) { return t->kind; }
int32_t kr_tokenizer_n_vocab(const kr_tokenizer *t) { return t->n_vocab; }
int32_t kr_tokenizer_bos(const kr_tokenizer *t) { return t->bos; }
int32_t kr_tokenizer_eos(const kr_tokenizer *t) { return t->eos; }
int32_t kr_tokenizer_eot(const kr_tokenizer *t) { return t->eot; }
int32_t kr_tokenizer_unk(const kr_tokenizer *t) { return t->unk; }
int32_t kr_tokenizer_pad(const kr_tokenizer *t) { return t->pad; }
bool kr_tokenizer_add_bos_default(const kr_tokenizer *t) { return t->add_bos; }
bool kr_tokenizer_add_eos_default(const kr_tokenizer *t) { return t->add_eos; }
const char *kr_tokenizer_chat_template(const kr_tokenizer *t) { return t->chat_template; }

bool kr_tokenizer_is_eog(const kr_tokenizer *t, int32_t id)
{
    for (size_t i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id)
            return true;
    return false;
}

kr_tok_type kr_tokenizer_token_type(const kr_tokenizer *t, int32_t id)
{
    if (id < 0 || id >= t->n_vocab)
        return KR_TOK_TYPE_UNDEFINED;
    return (kr_tok_type)t->toks[id].type;
}

bool kr_tokenizer_is_control(const kr_tokenizer *t, int32_t id)
{
    kr_tok_type ty = kr_tokenizer_token_type(t, id);
    return ty == KR_TOK_TYPE_CONTROL || ty == KR_TOK_TYPE_UNKNOWN || ty == KR_TOK_TYPE_UNUSED;
}

const char *kr_tokenizer_piece(const kr_tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab)
        return NULL;
    if (len)
        *len = t->toks[id].len;
    return t->strs + t->toks[id].off;
}

int32_t kr_tokenizer_find(const kr_tokenizer *t, const char *text, size_t len)
{
    int32_t id = kr__tok_lookup(t, text, len);
    return id < 0 ? KR_TOK_NONE : id;
}

void kr_tokenizer_free(kr_tokenizer *t)
{
    if (!t)
        return;
    kr__tok_free_pipeline(t);
    free(t->toks);
    free(t->strs);
    free(t->map.slots);
    free(t->merges);
    free(t->specials);
    free(t->eog);
    free(t->chat_template);
    free(t);
}

/* ---- streaming detokenizer ---- */
struct kr_detok {
    const kr_tokenizer *tok;
    kr_tok_decode_opts opts;
    bool started;       /* some byte has been produced */
    char held[4];       /* incomplete UTF-8 tail */
    size_t n_held;
    char *buf;          /* (cap) returned text */
    size_t cap;
};

kr_status kr_detok_new(const kr_tokenizer *tok, const kr_tok_decode_opts *opts, kr_detok **out,
                       kr_err *err)
{
    if (out)
        *out = NULL;
    if (!tok || !out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "detok_new: NULL argument");
    kr_detok *d = calloc(1, sizeof *d);
    if (!d)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    d->tok = tok;
    if (opts)
        d->opts = *opts;
    d->cap = KR_TOK_MAX_TOKEN_LEN + 8;
    d->buf = malloc(d->cap);
    if (!d->buf) {
        free(d);
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    }
    *out = d;
    return KR_OK;
}

/* Length of the valid-but-incomplete UTF-8 sequence ending s[0..n), 0 if none. */
static size_t kr__incomplete_tail(const char *s, size_t n)
{
    const uint8_t *u = (const uint8_t *)s;
    for (size_t k = 1; k <= 3 && k <= n; k++) {
        uint8_t c = u[n - k];
        if ((c & 0xc0) == 0x80)
            continue; /* continuation: look further back */
        size_t need;
        if (c >= 0xc2 && c <= 0xdf)
            need = 2;
        else if (c >= 0xe0 && c <= 0xef)
            need = 3;
        else if (c >= 0xf0 && c <= 0xf4)
            need = 4;
        else
            return 0; /* ASCII or a byte that can never start a sequence */
        if (k >= need)
            return 0; /* complete (or over-long run: not ours to hold) */
        /* second-byte range rules so that a held prefix can still become valid */
        if (k >= 2) {
            uint8_t c1 = u[n - k + 1];
            if ((c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 > 0x9f) || (c == 0xf0 && c1 < 0x90) ||
                (c == 0xf4 && c1 > 0x8f))
                return 0;
        }
        return k;
    }
    return 0;
}

kr_status kr_detok_push(kr_detok *d, int32_t id, const char **text, size_t *len, kr_err *err)
{
    if (!d || !text || !len)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "detok_push: NULL argument");
    *text = d->buf;
    *len = 0;
    if (id < 0 || id >= d->tok->n_vocab)
        return kr_err_set(err, KR_ERR_RANGE, "detokenize: id %d outside [0, %d)", (int)id,
                          (int)d->tok->n_vocab);
    memcpy(d->buf, d->held, d->n_held);
    size_t n = d->n_held;
    size_t pn = kr__piece_bytes(d->tok, id, d->opts.render_special, d->buf + n, d->cap - n);
    n += pn;
    size_t start = 0;
    if (!d->started && n > 0) {
        if (d->opts.strip_leading_space && d->buf[0] == ' ')
            start = 1;
        d->started = true;
    }
    size_t hold = kr__incomplete_tail(d->buf + start, n - start);
    memcpy(d->held, d->buf + n - hold, hold);
    d->n_held = hold;
    *text = d->buf + start;
    *len = n - start - hold;
    return KR_OK;
}

kr_status kr_detok_flush(kr_detok *d, const char **text, size_t *len, kr_err *err)
{
    if (!d || !text || !len)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "detok_flush: NULL argument");
    memcpy(d->buf, d->held, d->n_held);
    *text = d->buf;
    *len = d->n_held;
    d->n_held = 0;
    d->started = false;
    return KR_OK;
}

void kr_detok_free(kr_detok *d)
{
    if (!d)
        return;
    free(d->buf);
    free(d);
}
