/* Pre-tokenizers: regex splits (PCRE2, UTF + UCP, invalid UTF-8 tolerated),
 * the byte-level alphabet and Metaspace, plus the llama.cpp regex lists per
 * tokenizer.ggml.pre name. */
#include <stdlib.h>
#include <string.h>

#include "kernrun/checked.h"
#include "tok_internal.h"

/* ---- Regex lists per tokenizer.ggml.pre (as llama.cpp applies them: each
 * regex splits every piece left by the previous one, matches and the text
 * between them both kept). ---- */
const char kr__gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";

static const char kr__re_llama3[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char kr__re_qwen2[] =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char *const kr__pre_default[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|]+", kr__gpt2_regex, "\\p{N}+", "[0-9][0-9][0-9]",
};
static const char *const kr__pre_gpt2[] = {kr__gpt2_regex};
static const char *const kr__pre_llama3[] = {kr__re_llama3};
static const char *const kr__pre_qwen2[] = {kr__re_qwen2};
static const char *const kr__pre_falcon[] = {
    "[\\p{P}\\$\\+<=>\\^~\\|`]+", kr__gpt2_regex, "[0-9][0-9][0-9]",
};
static const char *const kr__pre_starcoder[] = {"\\p{N}", kr__gpt2_regex};
static const char *const kr__pre_deepseek_coder[] = {
    "[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+",
    "\\p{N}",
};
static const char *const kr__pre_deepseek_llm[] = {
    "[\\r\\n]",
    "\\s?[A-Za-z\\x{00B5}\\x{00C0}-\\x{00D6}\\x{00D8}-\\x{00F6}\\x{00F8}-\\x{01BA}\\x{01BC}-\\x{01BF}"
    "\\x{01C4}-\\x{0293}\\x{0295}-\\x{02AF}\\x{0370}-\\x{0373}\\x{0376}\\x{0377}\\x{037B}-\\x{037D}"
    "\\x{037F}\\x{0386}\\x{0388}-\\x{038A}\\x{038C}\\x{038E}-\\x{03A1}\\x{03A3}-\\x{03F5}"
    "\\x{03F7}-\\x{0481}\\x{048A}-\\x{052F}\\x{0531}-\\x{0556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}"
    "\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}"
    "\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}"
    "\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}\\x{1F80}-\\x{1FB4}"
    "\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}"
    "\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}"
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}"
    "\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}"
    "\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}"
    "\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}"
    "\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}"
    "\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}]+",
    "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
    "\\s+$",
    "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+",
    "\\p{N}+",
};

static const char *const kr__pre_bloom[] = {" ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{0964}\\x{06D4}\\x{060C})]+"};
static const char *const kr__pre_viking[] = {
    " ?[^(\\s|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{0964}\\x{06D4}\\x{060C})]+", "\\p{N}",
};
/* Mistral tekken: the tokenizer.json pattern itself (PCRE2 handles it). */
static const char *const kr__pre_tekken[] = {
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|"
    "\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
/* o200k (gpt-4o, llama4) */
static const char *const kr__pre_gpt4o[] = {
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*"
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
    "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};
static const char *const kr__pre_deepseek3[] = {
    "\\p{N}{1,3}",
    "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+|"
    " ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
};

#define KR__N(a) (sizeof(a) / sizeof((a)[0]))

static const struct {
    const char *name;
    const char *const *list;
    size_t n;
} kr__pre_table[] = {
    {"default", kr__pre_default, KR__N(kr__pre_default)},
    {"gpt-2", kr__pre_gpt2, KR__N(kr__pre_gpt2)},
    {"gpt2", kr__pre_gpt2, KR__N(kr__pre_gpt2)},
    {"mpt", kr__pre_gpt2, KR__N(kr__pre_gpt2)},
    {"olmo", kr__pre_gpt2, KR__N(kr__pre_gpt2)},
    {"jais", kr__pre_gpt2, KR__N(kr__pre_gpt2)},
    {"phi-2", kr__pre_gpt2, KR__N(kr__pre_gpt2)},
    {"roberta-bpe", kr__pre_gpt2, KR__N(kr__pre_gpt2)},
    {"llama-bpe", kr__pre_llama3, KR__N(kr__pre_llama3)},
    {"llama3", kr__pre_llama3, KR__N(kr__pre_llama3)},
    {"llama-v3", kr__pre_llama3, KR__N(kr__pre_llama3)},
    {"falcon3", kr__pre_llama3, KR__N(kr__pre_llama3)},
    {"dbrx", kr__pre_llama3, KR__N(kr__pre_llama3)},
    {"smaug-bpe", kr__pre_llama3, KR__N(kr__pre_llama3)},
    {"chatglm-bpe", kr__pre_llama3, KR__N(kr__pre_llama3)},
    {"falcon", kr__pre_falcon, KR__N(kr__pre_falcon)},
    {"starcoder", kr__pre_starcoder, KR__N(kr__pre_starcoder)},
    {"refact", kr__pre_starcoder, KR__N(kr__pre_starcoder)},
    {"command-r", kr__pre_starcoder, KR__N(kr__pre_starcoder)},
    {"smollm", kr__pre_starcoder, KR__N(kr__pre_starcoder)},
    {"codeshell", kr__pre_starcoder, KR__N(kr__pre_starcoder)},
    {"exaone", kr__pre_starcoder, KR__N(kr__pre_starcoder)},
    {"minerva-7b", kr__pre_starcoder, KR__N(kr__pre_starcoder)},
    {"qwen2", kr__pre_qwen2, KR__N(kr__pre_qwen2)},
    {"stablelm2", kr__pre_qwen2, KR__N(kr__pre_qwen2)},
    {"deepseek-r1-qwen", kr__pre_qwen2, KR__N(kr__pre_qwen2)},
    {"deepseek-llm", kr__pre_deepseek_llm, KR__N(kr__pre_deepseek_llm)},
    {"deepseek-coder", kr__pre_deepseek_coder, KR__N(kr__pre_deepseek_coder)},
    {"deepseek-v3", kr__pre_deepseek3, KR__N(kr__pre_deepseek3)},
    {"megrez", kr__pre_qwen2, KR__N(kr__pre_qwen2)},
    {"exaone4", kr__pre_gpt2, KR__N(kr__pre_gpt2)},
    {"poro-chat", kr__pre_bloom, KR__N(kr__pre_bloom)},
    {"bloom", kr__pre_bloom, KR__N(kr__pre_bloom)},
    {"gpt3-finnish", kr__pre_bloom, KR__N(kr__pre_bloom)},
    {"viking", kr__pre_viking, KR__N(kr__pre_viking)},
    {"tekken", kr__pre_tekken, KR__N(kr__pre_tekken)},
    {"gpt-4o", kr__pre_gpt4o, KR__N(kr__pre_gpt4o)},
    {"llama4", kr__pre_gpt4o, KR__N(kr__pre_gpt4o)},
};

bool kr__pre_regexes(const char *name, const char *const **list, size_t *n)
{
    for (size_t i = 0; i < KR__N(kr__pre_table); i++) {
        if (strcmp(kr__pre_table[i].name, name) == 0) {
            *list = kr__pre_table[i].list;
            *n = kr__pre_table[i].n;
            return true;
        }
    }
    return false;
}

kr_status kr__regex_compile(const char *pattern, size_t len, bool literal, pcre2_code **out,
                            kr_err *err)
{
    int ec = 0;
    PCRE2_SIZE eo = 0;
    uint32_t flags = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF;
    flags |= literal ? PCRE2_LITERAL : PCRE2_UCP; /* UCP is refused with LITERAL */
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, flags, &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return kr_err_set(err, KR_ERR_FORMAT, "regex '%.*s' does not compile at offset %zu: %s",
                          (int)(len > 200 ? 200 : len), pattern, (size_t)eo, (const char *)msg);
    }
    /* JIT is an optimisation: when unavailable the interpreter runs. */
    (void)pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);
    *out = re;
    return KR_OK;
}

kr_status kr__pretok_add(kr_tokenizer *t, const kr__pretok_step *step, kr_err *err)
{
    if (t->n_pre >= KR_TOK_MAX_PRETOK_STEPS)
        return kr_err_set(err, KR_ERR_LIMIT, "more than %d pre-tokenizer steps",
                          KR_TOK_MAX_PRETOK_STEPS);
    t->pre[t->n_pre++] = *step;
    return KR_OK;
}

kr_status kr__pretok_add_split(kr_tokenizer *t, const char *pattern, size_t len, bool literal,
                               kr__split_behavior behavior, kr_err *err)
{
    kr__pretok_step s = {.kind = KR__PRE_SPLIT, .behavior = behavior};
    if (t->n_pre >= KR_TOK_MAX_PRETOK_STEPS)
        return kr_err_set(err, KR_ERR_LIMIT, "more than %d pre-tokenizer steps",
                          KR_TOK_MAX_PRETOK_STEPS);
    kr_status st = kr__regex_compile(pattern, len, literal, &s.re, err);
    if (st)
        return st;
    t->pre[t->n_pre++] = s;
    return KR_OK;
}

/* ---- Applying the steps ---- */

void kr__words_free(kr__words *w)
{
    free(w->buf);
    free(w->sp);
    memset(w, 0, sizeof *w);
}

static kr_status kr__words_push(kr__words *w, size_t off, size_t len, kr_err *err)
{
    if (len == 0)
        return KR_OK;
    if (off > UINT32_MAX || len > UINT32_MAX - off)
        return kr_err_set(err, KR_ERR_LIMIT, "pre-tokenized text larger than 4 GiB");
    if (w->n == w->sp_cap) {
        size_t cap = w->sp_cap ? w->sp_cap * 2 : 64;
        kr__span *p = realloc(w->sp, cap * sizeof *p);
        if (!p)
            return kr_err_set(err, KR_ERR_NOMEM, "out of memory splitting text");
        w->sp = p;
        w->sp_cap = cap;
    }
    w->sp[w->n].off = (uint32_t)off;
    w->sp[w->n].len = (uint32_t)len;
    w->n++;
    return KR_OK;
}

static kr_status kr__buf_reserve(char **buf, size_t *cap, size_t need, kr_err *err)
{
    if (need <= *cap)
        return KR_OK;
    size_t c = *cap ? *cap : 256;
    while (c < need) {
        if (kr_mul_overflow_size(c, 2, &c))
            return kr_err_set(err, KR_ERR_OVERFLOW, "text too large");
    }
    char *p = realloc(*buf, c);
    if (!p)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory (%zu bytes)", c);
    *buf = p;
    *cap = c;
    return KR_OK;
}

typedef struct kr__match_ctx {
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
} kr__match_ctx;

/* Collect the matches of re in s[0..n) and emit pieces by behavior into out
 * (offsets relative to base). */
static kr_status kr__split_span(const kr__pretok_step *stp, kr__match_ctx *mx, const char *s,
                                size_t n, size_t base, kr__words *out, kr_err *err)
{
    size_t start = 0;     /* search position */
    size_t cur = 0;       /* start of the pending piece */
    size_t last_end = SIZE_MAX;
    kr_status st = KR_OK;
    while (start <= n) {
        int rc = pcre2_match(stp->re, (PCRE2_SPTR)s, n, start, 0, mx->md, mx->mc);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT && !mx->js) {
            /* the default 32 KiB JIT stack is too small for this input: retry with 8 MiB */
            mx->js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
            if (!mx->js)
                return kr_err_set(err, KR_ERR_NOMEM, "out of memory for the regex stack");
            pcre2_jit_stack_assign(mx->mc, NULL, mx->js);
            continue;
        }
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return kr_err_set(err, KR_ERR_LIMIT, "pre-tokenizer regex failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(mx->md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) { /* empty match: step one character on */
            if (ms >= n)
                break;
            start = ms + kr__utf8_len((uint8_t)s[ms]);
            if (start > n)
                start = n;
            continue;
        }
        switch (stp->behavior) {
        case KR__SPLIT_ISOLATED:
            if ((st = kr__words_push(out, base + cur, ms - cur, err)) ||
                (st = kr__words_push(out, base + ms, me - ms, err)))
                return st;
            cur = me;
            break;
        case KR__SPLIT_REMOVED:
            if ((st = kr__words_push(out, base + cur, ms - cur, err)))
                return st;
            cur = me;
            break;
        case KR__SPLIT_MERGED_PREV:
            if ((st = kr__words_push(out, base + cur, me - cur, err)))
                return st;
            cur = me;
            break;
        case KR__SPLIT_MERGED_NEXT:
            if ((st = kr__words_push(out, base + cur, ms - cur, err)))
                return st;
            cur = ms;
            break;
        case KR__SPLIT_CONTIGUOUS:
            if (last_end == ms && out->n > 0 && cur == ms) {
                /* extend the previous match piece */
                out->sp[out->n - 1].len += (uint32_t)(me - ms);
            } else {
                if ((st = kr__words_push(out, base + cur, ms - cur, err)) ||
                    (st = kr__words_push(out, base + ms, me - ms, err)))
                    return st;
            }
            cur = me;
            last_end = me;
            break;
        }
        start = me;
    }
    return kr__words_push(out, base + cur, n - cur, err);
}

kr_status kr__pretokenize(const kr_tokenizer *t, const char *text, size_t len, bool first_segment,
                          kr__words *out, kr_err *err)
{
    kr_status st = KR_OK;
    kr__words a = {0}, b = {0};
    kr__match_ctx mx = {0};
    memset(out, 0, sizeof *out);

    if ((st = kr__buf_reserve(&a.buf, &a.cap, len + 1, err)))
        goto err_free_words;
    memcpy(a.buf, text, len);
    a.len = len;
    if ((st = kr__words_push(&a, 0, len, err)))
        goto err_free_words;

    for (size_t i = 0; i < t->n_pre; i++) {
        const kr__pretok_step *stp = &t->pre[i];
        b.n = 0;
        b.len = 0;
        if (stp->kind == KR__PRE_SPLIT) {
            if (!mx.md) {
                mx.md = pcre2_match_data_create(8, NULL);
                mx.mc = pcre2_match_context_create(NULL);
                if (!mx.md || !mx.mc) {
                    st = kr_err_set(err, KR_ERR_NOMEM, "out of memory for regex matching");
                    goto err_free_match;
                }

            }
            /* pieces keep pointing into a's buffer: share it */
            for (size_t k = 0; k < a.n; k++) {
                /* Linear patterns still take many steps on long runs (10 MiB of
                 * spaces); a pathological regex from a file must not run forever. */
                uint64_t lim = 10000000u + 64u * (uint64_t)a.sp[k].len;
                pcre2_set_match_limit(mx.mc, lim > UINT32_MAX ? UINT32_MAX : (uint32_t)lim);
                st = kr__split_span(stp, &mx, a.buf + a.sp[k].off, a.sp[k].len, a.sp[k].off, &b, err);
                if (st)
                    goto err_free_match;
            }
            kr__span *tmp = a.sp;
            size_t tcap = a.sp_cap;
            a.sp = b.sp;
            a.sp_cap = b.sp_cap;
            a.n = b.n;
            b.sp = tmp;
            b.sp_cap = tcap;
            continue;
        }
        /* transforming steps build a new buffer */
        for (size_t k = 0; k < a.n; k++) {
            const char *s = a.buf + a.sp[k].off;
            size_t n = a.sp[k].len;
            size_t start = b.len;
            if (stp->kind == KR__PRE_BYTELEVEL) {
                size_t need;
                if (kr_mul_overflow_size(n, 2, &need) || kr_add_overflow_size(need, b.len + 1, &need)) {
                    st = kr_err_set(err, KR_ERR_OVERFLOW, "text too large");
                    goto err_free_match;
                }
                if ((st = kr__buf_reserve(&b.buf, &b.cap, need, err)))
                    goto err_free_match;
                for (size_t j = 0; j < n; j++)
                    b.len += kr__utf8_put(kr__byte_to_cp((uint8_t)s[j]), b.buf + b.len);
            } else { /* METASPACE */
                size_t need;
                if (kr_mul_overflow_size(n + 1, stp->repl_len, &need) ||
                    kr_add_overflow_size(need, b.len + 1, &need)) {
                    st = kr_err_set(err, KR_ERR_OVERFLOW, "text too large");
                    goto err_free_match;
                }
                if ((st = kr__buf_reserve(&b.buf, &b.cap, need, err)))
                    goto err_free_match;
                bool want = stp->prepend && (!stp->prepend_first_only || (first_segment && k == 0 && a.sp[0].off == 0));
                bool starts = n > 0 && (s[0] == ' ' ||
                                        (n >= stp->repl_len && memcmp(s, stp->repl, stp->repl_len) == 0));
                if (want && !starts) {
                    memcpy(b.buf + b.len, stp->repl, stp->repl_len);
                    b.len += stp->repl_len;
                }
                for (size_t j = 0; j < n; j++) {
                    if (s[j] == ' ') {
                        memcpy(b.buf + b.len, stp->repl, stp->repl_len);
                        b.len += stp->repl_len;
                    } else {
                        b.buf[b.len++] = s[j];
                    }
                }
            }
            if (b.len - start > UINT32_MAX) {
                st = kr_err_set(err, KR_ERR_LIMIT, "pre-token larger than 4 GiB");
                goto err_free_match;
            }
            if ((st = kr__words_push(&b, start, b.len - start, err)))
                goto err_free_match;
        }
        kr__words tmp = a;
        a = b;
        b = tmp;
    }
    *out = a;
    memset(&a, 0, sizeof a);
err_free_match:
    if (mx.js)
        pcre2_jit_stack_free(mx.js);
    if (mx.mc)
        pcre2_match_context_free(mx.mc);
    if (mx.md)
        pcre2_match_data_free(mx.md);
err_free_words:
    kr__words_free(&a);
    kr__words_free(&b);
    return st;
}

void kr__tok_free_pipeline(kr_tokenizer *t)
{
    for (size_t i = 0; i < t->n_pre; i++)
        if (t->pre[i].re)
            pcre2_code_free(t->pre[i].re);
    t->n_pre = 0;
    for (size_t i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
        if (t->norm[i].re)
            pcre2_code_free(t->norm[i].re);
    }
    t->n_norm = 0;
}
