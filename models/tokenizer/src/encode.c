/* Encoding: special-token partition -> normalizer -> pre-tokenizer -> model
 * (SPM score merges or BPE rank merges, both a binary heap over a linked
 * list of symbols: O(n log n) per word). */
#include <stdlib.h>
#include <string.h>

#include "kernrun/checked.h"
#include "tok_internal.h"

typedef struct kr__sym {
    uint32_t off;  /* into the word */
    uint32_t n;    /* bytes; 0 once merged into its left neighbour */
    int32_t id;    /* BPE: token id of the symbol, -1 if none */
    int32_t prev, next;
} kr__sym;

/* Candidate merge of sym[left] + sym[right]. Smaller key first, then smaller left. */
typedef struct kr__bigram {
    float key;     /* SPM: -score; BPE: rank */
    int32_t left, right;
    uint32_t size; /* bytes of the merged text when pushed (staleness check) */
} kr__bigram;

/* Per-call cache of short pre-tokens -> ids (words repeat a lot in text).
 * Encoding a word depends only on its bytes, so this is exact. */
#define KR__WC_SLOTS 8192     /* power of two; filled to half at most */
#define KR__WC_MAX_WORD 48    /* bytes */
typedef struct kr__wc_slot {
    uint64_t hash;            /* 0 = empty */
    uint32_t word_off;        /* into kr__enc.wc_bytes */
    uint32_t ids_off;         /* into kr__enc.wc_ids */
    uint16_t word_len, ids_n;
} kr__wc_slot;

typedef struct kr__enc {
    const kr_tokenizer *t;
    int32_t *ids;            /* (ids_cap) output */
    size_t n_ids, ids_cap;
    kr__sym *syms;           /* (syms_cap) scratch per word */
    size_t syms_cap;
    kr__bigram *heap;        /* (heap_cap) */
    size_t heap_n, heap_cap;
    char *norm;              /* (norm_cap) normalizer scratch */
    size_t norm_cap;
    bool last_was_fused_unk;
    kr__wc_slot *wc;         /* (KR__WC_SLOTS) word cache, NULL until needed */
    size_t wc_used;
    char *wc_bytes;          /* (wc_bytes_cap) cached words */
    size_t wc_bytes_n, wc_bytes_cap;
    int32_t *wc_ids;         /* (wc_ids_cap) cached ids */
    size_t wc_ids_n, wc_ids_cap;
    kr_err *err;
} kr__enc;

static kr_status kr__grow(void **p, size_t *cap, size_t need, size_t elem, kr_err *err)
{
    if (need <= *cap)
        return KR_OK;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    size_t bytes;
    if (kr_mul_overflow_size(c, elem, &bytes))
        return kr_err_set(err, KR_ERR_OVERFLOW, "encode buffer size overflows");
    void *n = realloc(*p, bytes);
    if (!n)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory (%zu bytes) while encoding", bytes);
    *p = n;
    *cap = c;
    return KR_OK;
}

static kr_status kr__emit(kr__enc *e, int32_t id)
{
    if (e->n_ids == e->ids_cap) {
        kr_status st = kr__grow((void **)&e->ids, &e->ids_cap, e->n_ids + 1, sizeof *e->ids, e->err);
        if (st)
            return st;
    }
    e->ids[e->n_ids++] = id;
    e->last_was_fused_unk = false;
    return KR_OK;
}

static kr_status kr__emit_unk(kr__enc *e)
{
    const kr_tokenizer *t = e->t;
    if (t->unk < 0)
        return KR_OK; /* no unknown token: the bytes are dropped (documented) */
    if (t->fuse_unk && e->last_was_fused_unk)
        return KR_OK;
    kr_status st = kr__emit(e, t->unk);
    e->last_was_fused_unk = true;
    return st;
}

/* Bytes with no token of their own: <0xXX> tokens, else unk. */
static kr_status kr__emit_bytes(kr__enc *e, const char *s, size_t n)
{
    const kr_tokenizer *t = e->t;
    bool all = t->kind == KR_TOK_SPM || t->byte_fallback;
    for (size_t i = 0; all && i < n; i++)
        all = t->byte_tok[(uint8_t)s[i]] >= 0;
    kr_status st = KR_OK;
    if (all) {
        for (size_t i = 0; i < n && !st; i++)
            st = kr__emit(e, t->byte_tok[(uint8_t)s[i]]);
        return st;
    }
    return kr__emit_unk(e);
}

/* ---- 4-ary heap (children 4i+1..4i+4: fewer levels, siblings share cache lines) ---- */
static bool kr__bg_less(const kr__bigram *a, const kr__bigram *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static kr_status kr__heap_push(kr__enc *e, kr__bigram b)
{
    if (e->heap_n == e->heap_cap) {
        kr_status st = kr__grow((void **)&e->heap, &e->heap_cap, e->heap_n + 1, sizeof *e->heap, e->err);
        if (st)
            return st;
    }
    size_t i = e->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 4;
        if (!kr__bg_less(&b, &e->heap[p]))
            break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = b;
    return KR_OK;
}

static kr__bigram kr__heap_pop(kr__enc *e)
{
    kr__bigram top = e->heap[0];
    kr__bigram last = e->heap[--e->heap_n];
    size_t i = 0, n = e->heap_n;
    for (;;) {
        size_t c = 4 * i + 1;
        if (c >= n)
            break;
        size_t end = c + 4 < n ? c + 4 : n;
        for (size_t k = c + 1; k < end; k++)
            if (kr__bg_less(&e->heap[k], &e->heap[c]))
                c = k;
        if (!kr__bg_less(&e->heap[c], &last))
            break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n > 0)
        e->heap[i] = last;
    return top;
}

static kr_status kr__try_bigram(kr__enc *e, const char *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return KR_OK;
    const kr__sym *a = &e->syms[l], *b = &e->syms[r];
    const kr_tokenizer *t = e->t;
    kr__bigram bg = {.left = l, .right = r, .size = a->n + b->n};
    if (t->kind == KR_TOK_SPM) {
        int32_t id = kr__tok_lookup(t, w + a->off, (size_t)a->n + b->n);
        if (id < 0)
            return KR_OK;
        bg.key = -t->toks[id].score;
    } else {
        int32_t rank, res;
        if (!kr__merge_find(t, a->id, b->id, &rank, &res))
            return KR_OK;
        bg.key = (float)rank;
    }
    return kr__heap_push(e, bg);
}

/* Merge one run of text (a pre-token or a chunk of one) into tokens. */
static kr_status kr__merge_word(kr__enc *e, const char *w, size_t n)
{
    const kr_tokenizer *t = e->t;
    kr_status st;
    if (n == 0)
        return KR_OK;
    /* symbols: one per UTF-8 character (an invalid byte is a character of its own) */
    if ((st = kr__grow((void **)&e->syms, &e->syms_cap, n, sizeof *e->syms, e->err)))
        return st;
    int32_t ns = 0;
    for (size_t off = 0; off < n;) {
        uint32_t cp;
        size_t cl = kr__utf8_get(w + off, n - off, &cp);
        if (cl == 0)
            cl = 1;
        int32_t id = -1;
        if (t->kind == KR_TOK_BPE) {
            id = kr__tok_lookup(t, w + off, cl);
            if (id < 0 && t->byte_fallback) {
                bool all = true;
                for (size_t i = 0; i < cl; i++)
                    all = all && t->byte_tok[(uint8_t)w[off + i]] >= 0;
                if (all) {
                    for (size_t i = 0; i < cl; i++) {
                        e->syms[ns] = (kr__sym){(uint32_t)(off + i), 1, t->byte_tok[(uint8_t)w[off + i]],
                                                ns - 1, ns + 1};
                        ns++;
                    }
                    off += cl;
                    continue;
                }
            }
        }
        e->syms[ns] = (kr__sym){(uint32_t)off, (uint32_t)cl, id, ns - 1, ns + 1};
        ns++;
        off += cl;
    }
    e->syms[ns - 1].next = -1;

    e->heap_n = 0;
    for (int32_t i = 1; i < ns; i++)
        if ((st = kr__try_bigram(e, w, i - 1, i)))
            return st;
    while (e->heap_n > 0) {
        kr__bigram bg = kr__heap_pop(e);
        kr__sym *l = &e->syms[bg.left], *r = &e->syms[bg.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != bg.size || l->next != bg.right)
            continue; /* stale */
        if (t->kind == KR_TOK_BPE) {
            int32_t rank, res;
            if (!kr__merge_find(t, l->id, r->id, &rank, &res))
                continue;
            l->id = res;
        }
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            e->syms[r->next].prev = bg.left;
        if ((st = kr__try_bigram(e, w, l->prev, bg.left)) || (st = kr__try_bigram(e, w, bg.left, l->next)))
            return st;
    }
    for (int32_t i = 0; i >= 0; i = e->syms[i].next) {
        const kr__sym *s = &e->syms[i];
        int32_t id = t->kind == KR_TOK_SPM ? kr__tok_lookup(t, w + s->off, s->n) : s->id;
        if (id >= 0)
            st = kr__emit(e, id);
        else
            st = kr__emit_bytes(e, w + s->off, s->n);
        if (st)
            return st;
    }
    return KR_OK;
}

/* Encode one pre-token (the whole normalized segment for SPM). */
static kr_status kr__encode_word(kr__enc *e, const char *w, size_t n)
{
    const kr_tokenizer *t = e->t;
    kr_status st;
    if (n == 0)
        return KR_OK;
    e->last_was_fused_unk = false; /* unk fusion stays inside one pre-token (HF) */
    if (t->kind == KR_TOK_BPE && t->ignore_merges) {
        int32_t id = kr__tok_lookup(t, w, n);
        if (id >= 0)
            return kr__emit(e, id);
    }
    if (!t->chunk_meta)
        return kr__merge_word(e, w, n);
    /* cut before each "\u2581" that follows another character (exact: see chunk_meta) */
    size_t start = 0;
    for (size_t i = 1; i + 3 <= n; i++) {
        if (memcmp(w + i, "\xe2\x96\x81", 3) == 0 && (i < 3 || memcmp(w + i - 3, "\xe2\x96\x81", 3) != 0)) {
            if ((st = kr__merge_word(e, w + start, i - start)))
                return st;
            start = i;
        }
    }
    return kr__merge_word(e, w + start, n - start);
}

/* Every match of ns->re in s[0..n) replaced by the literal ns->b, into *out. */
static kr_status kr__replace_re(kr__enc *e, const kr__norm_step *ns, const char *s, size_t n,
                                char **out, size_t *out_cap, size_t *out_n)
{
    kr_status st = KR_OK;
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    if (!mc)
        return kr_err_set(e->err, KR_ERR_NOMEM, "out of memory for regex matching");
    uint64_t lim = 10000000u + 64u * (uint64_t)n;
    pcre2_set_match_limit(mc, lim > UINT32_MAX ? UINT32_MAX : (uint32_t)lim);
    uint32_t opts = PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_LITERAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH;
    for (int attempt = 0; attempt < 2; attempt++) {
        PCRE2_SIZE len = *out_cap;
        char dummy;
        int rc = pcre2_substitute(ns->re, (PCRE2_SPTR)s, n, 0, opts, NULL, mc, (PCRE2_SPTR)ns->b, ns->b_len,
                                  (PCRE2_UCHAR *)(*out ? *out : &dummy), &len);
        if (rc >= 0) {
            *out_n = len;
            goto out_free;
        }
        if (rc != PCRE2_ERROR_NOMEMORY || attempt == 1) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            st = kr_err_set(e->err, KR_ERR_LIMIT, "normalizer Replace: %s", (const char *)msg);
            goto out_free;
        }
        /* len is now the size needed (including the terminating NUL) */
        if ((st = kr__grow((void **)out, out_cap, len + 1, 1, e->err)))
            goto out_free;
    }
out_free:
    pcre2_match_context_free(mc);
    return st;
}

/* Apply the normalizer steps; result in e->norm (returns its length). */
static kr_status kr__normalize(kr__enc *e, const char *s, size_t n, const char **out, size_t *out_n)
{
    const kr_tokenizer *t = e->t;
    if (t->n_norm == 0) {
        *out = s;
        *out_n = n;
        return KR_OK;
    }
    char *cur = NULL, *nxt = NULL;
    size_t cur_n = n, cur_cap = 0, nxt_cap = 0;
    kr_status st = KR_OK;
    if ((st = kr__grow((void **)&cur, &cur_cap, n + 1, 1, e->err)))
        goto err_free;
    memcpy(cur, s, n);
    for (size_t i = 0; i < t->n_norm; i++) {
        const kr__norm_step *ns = &t->norm[i];
        if (ns->kind == KR__NORM_PREPEND) {
            if (cur_n == 0)
                continue;
            if ((st = kr__grow((void **)&nxt, &nxt_cap, cur_n + ns->a_len + 1, 1, e->err)))
                goto err_free;
            memcpy(nxt, ns->a, ns->a_len);
            memcpy(nxt + ns->a_len, cur, cur_n);
            cur_n += ns->a_len;
        } else if (ns->kind == KR__NORM_REPLACE_RE) {
            if ((st = kr__replace_re(e, ns, cur, cur_n, &nxt, &nxt_cap, &cur_n)))
                goto err_free;
        } else { /* REPLACE literal a -> b */
            size_t cnt = 0;
            for (size_t j = 0; j + ns->a_len <= cur_n;) {
                if (memcmp(cur + j, ns->a, ns->a_len) == 0) {
                    cnt++;
                    j += ns->a_len;
                } else {
                    j++;
                }
            }
            size_t need, extra;
            if (kr_mul_overflow_size(cnt, ns->b_len, &extra) ||
                kr_add_overflow_size(cur_n, extra, &need) || kr_add_overflow_size(need, 1, &need)) {
                st = kr_err_set(e->err, KR_ERR_OVERFLOW, "normalized text too large");
                goto err_free;
            }
            if ((st = kr__grow((void **)&nxt, &nxt_cap, need, 1, e->err)))
                goto err_free;
            size_t o = 0;
            for (size_t j = 0; j < cur_n;) {
                if (j + ns->a_len <= cur_n && memcmp(cur + j, ns->a, ns->a_len) == 0) {
                    memcpy(nxt + o, ns->b, ns->b_len);
                    o += ns->b_len;
                    j += ns->a_len;
                } else {
                    nxt[o++] = cur[j++];
                }
            }
            cur_n = o;
        }
        char *tp = cur;
        size_t tc = cur_cap;
        cur = nxt;
        cur_cap = nxt_cap;
        nxt = tp;
        nxt_cap = tc;
    }
    free(e->norm);
    e->norm = cur;
    e->norm_cap = cur_cap;
    cur = NULL;
    *out = e->norm;
    *out_n = cur_n;
err_free:
    free(cur);
    free(nxt);
    return st;
}

/* kr__encode_word through the word cache. */
static kr_status kr__encode_word_cached(kr__enc *e, const char *w, size_t n)
{
    if (n == 0 || n > KR__WC_MAX_WORD)
        return kr__encode_word(e, w, n);
    kr_status st;
    if (!e->wc) {
        e->wc = calloc(KR__WC_SLOTS, sizeof *e->wc);
        if (!e->wc)
            return kr__encode_word(e, w, n); /* no cache, still correct */
    }
    uint64_t h = kr__hash_bytes(w, n) | 1;
    size_t mask = KR__WC_SLOTS - 1, i = (size_t)h & mask;
    for (; e->wc[i].hash; i = (i + 1) & mask) {
        const kr__wc_slot *c = &e->wc[i];
        if (c->hash == h && c->word_len == n && memcmp(e->wc_bytes + c->word_off, w, n) == 0) {
            for (uint32_t k = 0; k < c->ids_n; k++)
                if ((st = kr__emit(e, e->wc_ids[c->ids_off + k])))
                    return st;
            return KR_OK;
        }
    }
    size_t start = e->n_ids;
    if ((st = kr__encode_word(e, w, n)))
        return st;
    size_t got = e->n_ids - start;
    if (e->wc_used >= KR__WC_SLOTS / 2 || got > UINT16_MAX || e->wc_ids_n + got > UINT32_MAX ||
        e->wc_bytes_n + n > UINT32_MAX)
        return KR_OK; /* cache full: just don't remember */
    if (kr__grow((void **)&e->wc_bytes, &e->wc_bytes_cap, e->wc_bytes_n + n, 1, e->err) ||
        kr__grow((void **)&e->wc_ids, &e->wc_ids_cap, e->wc_ids_n + got, sizeof *e->wc_ids, e->err)) {
        kr_err_clear(e->err); /* caching is optional */
        return KR_OK;
    }
    memcpy(e->wc_bytes + e->wc_bytes_n, w, n);
    if (got) /* a word may give no ids at all (bytes without tokens) */
        memcpy(e->wc_ids + e->wc_ids_n, e->ids + start, got * sizeof *e->ids);
    e->wc[i] = (kr__wc_slot){h, (uint32_t)e->wc_bytes_n, (uint32_t)e->wc_ids_n, (uint16_t)n, (uint16_t)got};
    e->wc_bytes_n += n;
    e->wc_ids_n += got;
    e->wc_used++;
    return KR_OK;
}

static kr_status kr__encode_segment(kr__enc *e, const char *s, size_t n, bool first)
{
    const char *ns = NULL;
    size_t nn = 0;
    kr_status st = kr__normalize(e, s, n, &ns, &nn);
    if (st)
        return st;
    if (nn == 0)
        return KR_OK;
    if (e->t->n_pre == 0)
        return kr__encode_word(e, ns, nn);
    kr__words w;
    if ((st = kr__pretokenize(e->t, ns, nn, first, &w, e->err)))
        return st;
    for (size_t i = 0; i < w.n && !st; i++)
        st = kr__encode_word_cached(e, w.buf + w.sp[i].off, w.sp[i].len);
    kr__words_free(&w);
    return st;
}

/* Longest special token starting at s (n bytes left); -1 if none. */
static int32_t kr__match_special(const kr_tokenizer *t, const char *s, size_t n, bool parse_special,
                                 size_t *mlen)
{
    uint8_t c = (uint8_t)s[0];
    for (uint32_t k = t->special_idx[c]; k < t->special_idx[c + 1]; k++) {
        int32_t id = t->specials[k];
        const kr__tok_entry *te = &t->toks[id];
        if (!parse_special && te->type != KR_TOK_TYPE_USER_DEFINED)
            continue;
        if (te->len <= n && memcmp(s, t->strs + te->off, te->len) == 0) {
            *mlen = te->len;
            return id;
        }
    }
    return -1;
}

/* Unicode White_Space (as Rust's char::is_whitespace, which HF uses). */
static bool kr__is_ws(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
           c == 0x3000;
}

/* Start of the whitespace run that ends at s[end] (not before lo). */
static size_t kr__ws_back(const char *s, size_t lo, size_t end)
{
    while (end > lo) {
        size_t k = end - 1; /* find the start of the previous character */
        while (k > lo && end - k < 4 && ((uint8_t)s[k] & 0xc0) == 0x80)
            k--;
        uint32_t cp;
        if (kr__utf8_get(s + k, end - k, &cp) != end - k || !kr__is_ws(cp))
            break;
        end = k;
    }
    return end;
}

/* End of the whitespace run starting at s[i] (not after hi). */
static size_t kr__ws_fwd(const char *s, size_t i, size_t hi)
{
    while (i < hi) {
        uint32_t cp;
        size_t l = kr__utf8_get(s + i, hi - i, &cp);
        if (l == 0 || !kr__is_ws(cp))
            break;
        i += l;
    }
    return i;
}

kr_tok_encode_opts kr_tokenizer_encode_defaults(const kr_tokenizer *tok)
{
    kr_tok_encode_opts o = {0};
    if (tok) {
        o.add_bos = tok->add_bos;
        o.add_eos = tok->add_eos;
    }
    return o;
}

kr_status kr_tokenizer_encode(const kr_tokenizer *tok, const char *text, size_t len,
                              const kr_tok_encode_opts *opts, int32_t *ids, size_t cap,
                              size_t *n_out, kr_err *err)
{
    if (n_out)
        *n_out = 0;
    if (!tok || !n_out || (!text && len > 0) || (!ids && cap > 0))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "tokenize: NULL argument");
    if (len > KR_TOK_MAX_TEXT)
        return kr_err_set(err, KR_ERR_LIMIT, "tokenize: input of %zu bytes exceeds the %zu byte limit",
                          len, KR_TOK_MAX_TEXT);
    kr_tok_encode_opts o = opts ? *opts : kr_tokenizer_encode_defaults(tok);
    kr__enc e = {.t = tok, .err = err};
    kr_status st = KR_OK;

    if (o.add_bos && tok->bos >= 0 && (st = kr__emit(&e, tok->bos)))
        goto err_free;
    /* partition around special tokens, then encode the raw pieces */
    size_t seg = 0;
    bool first = true;
    bool any_special = false;
    for (size_t k = 0; k < tok->n_specials && !any_special; k++)
        any_special = o.parse_special || tok->toks[tok->specials[k]].type == KR_TOK_TYPE_USER_DEFINED;
    if (any_special) {
        for (size_t i = 0; i < len;) {
            size_t ml = 0;
            int32_t id = kr__match_special(tok, text + i, len - i, o.parse_special, &ml);
            if (id < 0) {
                i++;
                continue;
            }
            size_t end = i; /* end of the text before the token */
            if (tok->toks[id].strip & KR__STRIP_LEFT)
                end = kr__ws_back(text, seg, i);
            if (end > seg && (st = kr__encode_segment(&e, text + seg, end - seg, first)))
                goto err_free;
            first = false;
            if ((st = kr__emit(&e, id)))
                goto err_free;
            i += ml;
            if (tok->toks[id].strip & KR__STRIP_RIGHT)
                i = kr__ws_fwd(text, i, len);
            seg = i;
        }
    }
    if (len > seg && (st = kr__encode_segment(&e, text + seg, len - seg, first)))
        goto err_free;
    if (o.add_eos && tok->eos >= 0 && (st = kr__emit(&e, tok->eos)))
        goto err_free;

    *n_out = e.n_ids;
    if (e.n_ids > 0 && ids)
        memcpy(ids, e.ids, (e.n_ids < cap ? e.n_ids : cap) * sizeof *ids);
    if (e.n_ids > cap)
        st = kr_err_set(err, KR_ERR_RANGE, "tokenize: %zu tokens do not fit in %zu", e.n_ids, cap);
err_free:
    free(e.ids);
    free(e.syms);
    free(e.heap);
    free(e.norm);
    free(e.wc);
    free(e.wc_bytes);
    free(e.wc_ids);
    return st;
}
