/* Tokenizer from a Hugging Face tokenizer.json (model BPE). Every component
 * type we do not implement is rejected by name. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>

#include "tok_internal.h"

#define KR__JSON_MAX_FILE ((size_t)1 << 30)
#define KR__JSON_MAX_DEPTH 64
#define KR__SEQ_MAX_DEPTH 8

static const char kr__hf_bytelevel_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static json_object *kr__get(json_object *o, const char *key)
{
    json_object *v = NULL;
    if (!o || !json_object_is_type(o, json_type_object))
        return NULL;
    if (!json_object_object_get_ex(o, key, &v))
        return NULL;
    return v; /* NULL for JSON null too */
}

/* String member: NULL when absent/null; error when another type. */
static kr_status kr__get_str(json_object *o, const char *what, const char *key, const char **s,
                             size_t *n, kr_err *err)
{
    json_object *v = kr__get(o, key);
    *s = NULL;
    if (n)
        *n = 0;
    if (!v)
        return KR_OK;
    if (!json_object_is_type(v, json_type_string))
        return kr_err_set(err, KR_ERR_TYPE, "%s: '%s' must be a string", what, key);
    *s = json_object_get_string(v);
    if (n)
        *n = (size_t)json_object_get_string_len(v);
    return KR_OK;
}

static kr_status kr__get_boolean(json_object *o, const char *what, const char *key, bool *out,
                                 kr_err *err)
{
    json_object *v = kr__get(o, key);
    if (!v)
        return KR_OK;
    if (!json_object_is_type(v, json_type_boolean))
        return kr_err_set(err, KR_ERR_TYPE, "%s: '%s' must be true or false", what, key);
    *out = json_object_get_boolean(v);
    return KR_OK;
}

static const char *kr__type_of(json_object *o)
{
    json_object *ty = kr__get(o, "type");
    if (!ty || !json_object_is_type(ty, json_type_string))
        return NULL;
    return json_object_get_string(ty);
}

static bool kr__has_nul(const char *s, size_t n) { return memchr(s, 0, n) != NULL; }

/* pattern: {"String": s} or {"Regex": r} */
static kr_status kr__get_pattern(json_object *o, const char *what, const char **s, size_t *n,
                                 bool *literal, kr_err *err)
{
    json_object *p = kr__get(o, "pattern");
    if (!p || !json_object_is_type(p, json_type_object))
        return kr_err_set(err, KR_ERR_FORMAT, "%s: missing 'pattern' object", what);
    json_object *v;
    if ((v = kr__get(p, "String"))) {
        *literal = true;
    } else if ((v = kr__get(p, "Regex"))) {
        *literal = false;
    } else {
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "%s: pattern must be String or Regex", what);
    }
    if (!json_object_is_type(v, json_type_string))
        return kr_err_set(err, KR_ERR_TYPE, "%s: pattern must be a string", what);
    *s = json_object_get_string(v);
    *n = (size_t)json_object_get_string_len(v);
    if (*n == 0)
        return kr_err_set(err, KR_ERR_FORMAT, "%s: empty pattern", what);
    return KR_OK;
}

/* ---- normalizers ---- */
static kr_status kr__parse_normalizer(kr_tokenizer *t, json_object *o, int depth, kr_err *err)
{
    if (!o)
        return KR_OK;
    if (depth > KR__SEQ_MAX_DEPTH)
        return kr_err_set(err, KR_ERR_LIMIT, "normalizer nesting deeper than %d", KR__SEQ_MAX_DEPTH);
    const char *ty = kr__type_of(o);
    if (!ty)
        return kr_err_set(err, KR_ERR_FORMAT, "normalizer without a 'type'");
    kr_status st;
    if (!strcmp(ty, "Sequence")) {
        json_object *a = kr__get(o, "normalizers");
        if (!a || !json_object_is_type(a, json_type_array))
            return kr_err_set(err, KR_ERR_FORMAT, "normalizer Sequence: 'normalizers' must be an array");
        for (size_t i = 0; i < json_object_array_length(a); i++)
            if ((st = kr__parse_normalizer(t, json_object_array_get_idx(a, i), depth + 1, err)))
                return st;
        return KR_OK;
    }
    if (!strcmp(ty, "Prepend")) {
        const char *s;
        size_t n;
        if ((st = kr__get_str(o, "normalizer Prepend", "prepend", &s, &n, err)))
            return st;
        if (!s || n == 0 || kr__has_nul(s, n))
            return kr_err_set(err, KR_ERR_FORMAT, "normalizer Prepend: 'prepend' must be a non-empty string");
        return kr__norm_add(t, KR__NORM_PREPEND, s, NULL, err);
    }
    if (!strcmp(ty, "Replace")) {
        const char *p, *c;
        size_t pn, cn;
        bool literal;
        if ((st = kr__get_pattern(o, "normalizer Replace", &p, &pn, &literal, err)))
            return st;
        if ((st = kr__get_str(o, "normalizer Replace", "content", &c, &cn, err)))
            return st;
        if (!c || kr__has_nul(c, cn) || (literal && kr__has_nul(p, pn)))
            return kr_err_set(err, KR_ERR_FORMAT, "normalizer Replace: bad 'content'");
        if (literal)
            return kr__norm_add(t, KR__NORM_REPLACE, p, c, err);
        pcre2_code *re;
        if ((st = kr__regex_compile(p, pn, false, &re, err)))
            return kr_err_prefix(err, "normalizer Replace");
        size_t minlen = 0;
        if (pcre2_pattern_info(re, PCRE2_INFO_MINLENGTH, &minlen) != 0 || minlen == 0) {
            pcre2_code_free(re);
            return kr_err_set(err, KR_ERR_UNSUPPORTED, "normalizer Replace: pattern '%.*s' can match empty text",
                              (int)(pn > 64 ? 64 : pn), p);
        }
        if ((st = kr__norm_add(t, KR__NORM_REPLACE_RE, "", c, err))) {
            pcre2_code_free(re);
            return st;
        }
        t->norm[t->n_norm - 1].re = re;
        return KR_OK;
    }
    return kr_err_set(err, KR_ERR_UNSUPPORTED, "normalizer '%s' is not supported (supported: Sequence, Prepend, Replace)",
                      ty);
}

/* ---- pre-tokenizers ---- */
static kr_status kr__parse_behavior(json_object *o, const char *what, kr__split_behavior *b,
                                    kr_err *err)
{
    const char *s;
    kr_status st = kr__get_str(o, what, "behavior", &s, NULL, err);
    if (st)
        return st;
    if (!s || !strcmp(s, "Isolated"))
        *b = KR__SPLIT_ISOLATED;
    else if (!strcmp(s, "Removed"))
        *b = KR__SPLIT_REMOVED;
    else if (!strcmp(s, "MergedWithPrevious"))
        *b = KR__SPLIT_MERGED_PREV;
    else if (!strcmp(s, "MergedWithNext"))
        *b = KR__SPLIT_MERGED_NEXT;
    else if (!strcmp(s, "Contiguous"))
        *b = KR__SPLIT_CONTIGUOUS;
    else
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "%s: behavior '%s' is not supported", what, s);
    return KR_OK;
}

static kr_status kr__parse_pretok(kr_tokenizer *t, json_object *o, int depth, kr_err *err)
{
    if (!o)
        return KR_OK;
    if (depth > KR__SEQ_MAX_DEPTH)
        return kr_err_set(err, KR_ERR_LIMIT, "pre-tokenizer nesting deeper than %d", KR__SEQ_MAX_DEPTH);
    const char *ty = kr__type_of(o);
    if (!ty)
        return kr_err_set(err, KR_ERR_FORMAT, "pre-tokenizer without a 'type'");
    kr_status st;
    if (!strcmp(ty, "Sequence")) {
        json_object *a = kr__get(o, "pretokenizers");
        if (!a || !json_object_is_type(a, json_type_array))
            return kr_err_set(err, KR_ERR_FORMAT, "pre-tokenizer Sequence: 'pretokenizers' must be an array");
        for (size_t i = 0; i < json_object_array_length(a); i++)
            if ((st = kr__parse_pretok(t, json_object_array_get_idx(a, i), depth + 1, err)))
                return st;
        return KR_OK;
    }
    if (!strcmp(ty, "Split")) {
        const char *p;
        size_t pn;
        bool literal, invert = false;
        kr__split_behavior b;
        if ((st = kr__get_pattern(o, "pre-tokenizer Split", &p, &pn, &literal, err)) ||
            (st = kr__parse_behavior(o, "pre-tokenizer Split", &b, err)) ||
            (st = kr__get_boolean(o, "pre-tokenizer Split", "invert", &invert, err)))
            return st;
        if (invert)
            return kr_err_set(err, KR_ERR_UNSUPPORTED, "pre-tokenizer Split with invert=true is not supported");
        return kr__pretok_add_split(t, p, pn, literal, b, err);
    }
    if (!strcmp(ty, "ByteLevel")) {
        bool prefix = true, use_regex = true;
        if ((st = kr__get_boolean(o, "pre-tokenizer ByteLevel", "add_prefix_space", &prefix, err)) ||
            (st = kr__get_boolean(o, "pre-tokenizer ByteLevel", "use_regex", &use_regex, err)))
            return st;
        if (prefix) {
            kr__pretok_step s = {.kind = KR__PRE_METASPACE, .repl = " ", .repl_len = 1, .prepend = true};
            if ((st = kr__pretok_add(t, &s, err)))
                return st;
        }
        if (use_regex &&
            (st = kr__pretok_add_split(t, kr__hf_bytelevel_regex, strlen(kr__hf_bytelevel_regex), false,
                                       KR__SPLIT_ISOLATED, err)))
            return st;
        kr__pretok_step s = {.kind = KR__PRE_BYTELEVEL};
        t->byte_level = true;
        return kr__pretok_add(t, &s, err);
    }
    if (!strcmp(ty, "Metaspace")) {
        const char *r, *scheme;
        size_t rn;
        bool split = true, prefix = true;
        if ((st = kr__get_str(o, "pre-tokenizer Metaspace", "replacement", &r, &rn, err)) ||
            (st = kr__get_str(o, "pre-tokenizer Metaspace", "prepend_scheme", &scheme, NULL, err)) ||
            (st = kr__get_boolean(o, "pre-tokenizer Metaspace", "split", &split, err)) ||
            (st = kr__get_boolean(o, "pre-tokenizer Metaspace", "add_prefix_space", &prefix, err)))
            return st;
        if (!r) {
            r = "\xe2\x96\x81";
            rn = 3;
        }
        kr__pretok_step s = {.kind = KR__PRE_METASPACE, .prepend = prefix};
        uint32_t cp;
        if (rn == 0 || rn > 4 || kr__utf8_get(r, rn, &cp) != rn)
            return kr_err_set(err, KR_ERR_FORMAT, "pre-tokenizer Metaspace: replacement must be one character");
        memcpy(s.repl, r, rn);
        s.repl_len = (uint8_t)rn;
        if (scheme) {
            if (!strcmp(scheme, "always")) {
                s.prepend = true;
            } else if (!strcmp(scheme, "first")) {
                s.prepend = true;
                s.prepend_first_only = true;
            } else if (!strcmp(scheme, "never")) {
                s.prepend = false;
            } else {
                return kr_err_set(err, KR_ERR_UNSUPPORTED, "pre-tokenizer Metaspace: prepend_scheme '%s' is not supported",
                                  scheme);
            }
        }
        if ((st = kr__pretok_add(t, &s, err)))
            return st;
        if (split)
            return kr__pretok_add_split(t, s.repl, s.repl_len, true, KR__SPLIT_MERGED_NEXT, err);
        return KR_OK;
    }
    if (!strcmp(ty, "Punctuation")) {
        kr__split_behavior b;
        if ((st = kr__parse_behavior(o, "pre-tokenizer Punctuation", &b, err)))
            return st;
        static const char re[] = "[\\p{P}\\x{21}-\\x{2f}\\x{3a}-\\x{40}\\x{5b}-\\x{60}\\x{7b}-\\x{7e}]";
        return kr__pretok_add_split(t, re, strlen(re), false, b, err);
    }
    if (!strcmp(ty, "Digits")) {
        bool individual = false;
        if ((st = kr__get_boolean(o, "pre-tokenizer Digits", "individual_digits", &individual, err)))
            return st;
        const char *re = individual ? "\\p{N}" : "\\p{N}+";
        return kr__pretok_add_split(t, re, strlen(re), false, KR__SPLIT_ISOLATED, err);
    }
    return kr_err_set(err, KR_ERR_UNSUPPORTED,
                      "pre-tokenizer '%s' is not supported (supported: Sequence, Split, ByteLevel, Metaspace, Punctuation, Digits)",
                      ty);
}

/* ---- decoders: they only set decode flags ---- */
static kr_status kr__parse_decoder(kr_tokenizer *t, json_object *o, int depth, kr_err *err)
{
    if (!o)
        return KR_OK;
    if (depth > KR__SEQ_MAX_DEPTH)
        return kr_err_set(err, KR_ERR_LIMIT, "decoder nesting deeper than %d", KR__SEQ_MAX_DEPTH);
    const char *ty = kr__type_of(o);
    if (!ty)
        return kr_err_set(err, KR_ERR_FORMAT, "decoder without a 'type'");
    kr_status st;
    if (!strcmp(ty, "Sequence")) {
        json_object *a = kr__get(o, "decoders");
        if (!a || !json_object_is_type(a, json_type_array))
            return kr_err_set(err, KR_ERR_FORMAT, "decoder Sequence: 'decoders' must be an array");
        for (size_t i = 0; i < json_object_array_length(a); i++)
            if ((st = kr__parse_decoder(t, json_object_array_get_idx(a, i), depth + 1, err)))
                return st;
        return KR_OK;
    }
    if (!strcmp(ty, "ByteLevel")) {
        t->byte_level = true;
        return KR_OK;
    }
    if (!strcmp(ty, "ByteFallback") || !strcmp(ty, "Fuse"))
        return KR_OK;
    if (!strcmp(ty, "Replace")) {
        const char *p, *c;
        size_t pn, cn;
        bool literal;
        if ((st = kr__get_pattern(o, "decoder Replace", &p, &pn, &literal, err)) ||
            (st = kr__get_str(o, "decoder Replace", "content", &c, &cn, err)))
            return st;
        if (literal && pn == 3 && !memcmp(p, "\xe2\x96\x81", 3) && c && cn == 1 && c[0] == ' ') {
            t->dec_metaspace = true;
            return KR_OK;
        }
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "decoder Replace other than \"\\u2581\" -> \" \" is not supported");
    }
    if (!strcmp(ty, "Strip")) {
        const char *c;
        size_t cn;
        if ((st = kr__get_str(o, "decoder Strip", "content", &c, &cn, err)))
            return st;
        json_object *start = kr__get(o, "start"), *stop = kr__get(o, "stop");
        if (c && cn == 1 && c[0] == ' ' && start && json_object_get_int(start) == 1 &&
            (!stop || json_object_get_int(stop) == 0)) {
            t->dec_strip_leading = true;
            return KR_OK;
        }
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "decoder Strip other than one leading space is not supported");
    }
    if (!strcmp(ty, "Metaspace")) {
        const char *scheme;
        bool prefix = true;
        if ((st = kr__get_str(o, "decoder Metaspace", "prepend_scheme", &scheme, NULL, err)) ||
            (st = kr__get_boolean(o, "decoder Metaspace", "add_prefix_space", &prefix, err)))
            return st;
        t->dec_metaspace = true;
        t->dec_strip_leading = scheme ? strcmp(scheme, "never") != 0 : prefix;
        return KR_OK;
    }
    return kr_err_set(err, KR_ERR_UNSUPPORTED,
                      "decoder '%s' is not supported (supported: Sequence, ByteLevel, ByteFallback, Fuse, Replace, Strip, Metaspace)",
                      ty);
}

/* ---- post-processor: bos/eos placement ---- */
static kr_status kr__parse_post(kr_tokenizer *t, json_object *o, int depth, kr_err *err)
{
    if (!o)
        return KR_OK;
    if (depth > KR__SEQ_MAX_DEPTH)
        return kr_err_set(err, KR_ERR_LIMIT, "post-processor nesting deeper than %d", KR__SEQ_MAX_DEPTH);
    const char *ty = kr__type_of(o);
    if (!ty)
        return kr_err_set(err, KR_ERR_FORMAT, "post-processor without a 'type'");
    kr_status st;
    if (!strcmp(ty, "Sequence")) {
        json_object *a = kr__get(o, "processors");
        if (!a || !json_object_is_type(a, json_type_array))
            return kr_err_set(err, KR_ERR_FORMAT, "post-processor Sequence: 'processors' must be an array");
        for (size_t i = 0; i < json_object_array_length(a); i++)
            if ((st = kr__parse_post(t, json_object_array_get_idx(a, i), depth + 1, err)))
                return st;
        return KR_OK;
    }
    if (!strcmp(ty, "ByteLevel"))
        return KR_OK;
    if (!strcmp(ty, "TemplateProcessing")) {
        json_object *single = kr__get(o, "single");
        if (!single || !json_object_is_type(single, json_type_array))
            return kr_err_set(err, KR_ERR_FORMAT, "post-processor TemplateProcessing: 'single' must be an array");
        size_t n = json_object_array_length(single);
        for (size_t i = 0; i < n; i++) {
            json_object *sp = kr__get(json_object_array_get_idx(single, i), "SpecialToken");
            if (!sp)
                continue;
            const char *name;
            size_t nn;
            if ((st = kr__get_str(sp, "post-processor SpecialToken", "id", &name, &nn, err)))
                return st;
            int32_t id = name ? kr__tok_lookup(t, name, nn) : -1;
            if (id < 0)
                return kr_err_set(err, KR_ERR_FORMAT, "post-processor names unknown special token '%.*s'",
                                  (int)(nn > 64 ? 64 : nn), name ? name : "");
            if (i == 0) {
                t->bos = id;
                t->add_bos = true;
            } else if (i == n - 1) {
                t->eos = id;
                t->add_eos = true;
            } else {
                return kr_err_set(err, KR_ERR_UNSUPPORTED,
                                  "post-processor TemplateProcessing: special token '%.*s' in the middle is not supported",
                                  (int)(nn > 64 ? 64 : nn), name);
            }
        }
        return KR_OK;
    }
    return kr_err_set(err, KR_ERR_UNSUPPORTED,
                      "post-processor '%s' is not supported (supported: TemplateProcessing, ByteLevel, Sequence)", ty);
}

/* ---- model + vocab ---- */
static kr_status kr__json_id(json_object *v, const char *what, int64_t *id, kr_err *err)
{
    if (!v || !json_object_is_type(v, json_type_int))
        return kr_err_set(err, KR_ERR_TYPE, "%s: id must be an integer", what);
    errno = 0;
    int64_t x = json_object_get_int64(v);
    if (x < 0 || x >= KR_TOK_MAX_VOCAB)
        return kr_err_set(err, KR_ERR_RANGE, "%s: id %lld outside [0, %d)", what, (long long)x,
                          KR_TOK_MAX_VOCAB);
    *id = x;
    return KR_OK;
}

static int32_t kr__find_name(const kr_tokenizer *t, const char *const *names, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int32_t id = kr__tok_lookup(t, names[i], strlen(names[i]));
        if (id >= 0)
            return id;
    }
    return KR_TOK_NONE;
}

static kr_status kr__load_json_obj(json_object *root, kr_tokenizer **out, kr_err *err)
{
    kr_status st;
    kr_tokenizer *t = NULL;
    uint8_t *seen = NULL;
    *out = NULL;
    if (!json_object_is_type(root, json_type_object))
        return kr_err_set(err, KR_ERR_FORMAT, "top level is not a JSON object");
    json_object *model = kr__get(root, "model");
    if (!model || !json_object_is_type(model, json_type_object))
        return kr_err_set(err, KR_ERR_FORMAT, "missing 'model' object");
    const char *mty = kr__type_of(model);
    if (mty && strcmp(mty, "BPE") != 0)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "model type '%s' is not supported (supported: BPE)", mty);
    json_object *vocab = kr__get(model, "vocab");
    json_object *merges = kr__get(model, "merges");
    if (!vocab || !json_object_is_type(vocab, json_type_object))
        return kr_err_set(err, KR_ERR_FORMAT, "model: 'vocab' must be an object");
    if (!merges || !json_object_is_type(merges, json_type_array))
        return kr_err_set(err, KR_ERR_FORMAT, "model: 'merges' must be an array");
    json_object *drop = kr__get(model, "dropout");
    if (drop && json_object_get_double(drop) != 0.0)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "model: BPE dropout is not supported");
    const char *cs, *ews;
    size_t csn, ewsn;
    if ((st = kr__get_str(model, "model", "continuing_subword_prefix", &cs, &csn, err)) ||
        (st = kr__get_str(model, "model", "end_of_word_suffix", &ews, &ewsn, err)))
        return st;
    if ((cs && csn) || (ews && ewsn))
        return kr_err_set(err, KR_ERR_UNSUPPORTED,
                          "model: continuing_subword_prefix / end_of_word_suffix are not supported");
    json_object *added = kr__get(root, "added_tokens");
    if (added && !json_object_is_type(added, json_type_array))
        return kr_err_set(err, KR_ERR_FORMAT, "'added_tokens' must be an array");

    /* vocabulary size: largest id + 1 */
    int64_t max_id = -1;
    json_object_object_foreach(vocab, key, val) {
        (void)key;
        int64_t id;
        if ((st = kr__json_id(val, "model.vocab", &id, err)))
            return kr_err_prefix(err, "token '%.64s'", key);
        if (id > max_id)
            max_id = id;
    }
    size_t n_added = added ? json_object_array_length(added) : 0;
    for (size_t i = 0; i < n_added; i++) {
        int64_t id;
        if ((st = kr__json_id(kr__get(json_object_array_get_idx(added, i), "id"), "added_tokens", &id, err)))
            return kr_err_prefix(err, "added token %zu", i);
        if (id > max_id)
            max_id = id;
    }
    if (max_id < 0)
        return kr_err_set(err, KR_ERR_FORMAT, "empty vocabulary");
    /* ids index arrays sized by the largest id: a small file must not make us
     * allocate for millions of ids it never names */
    size_t n_named = json_object_object_length(vocab) + n_added;
    if ((uint64_t)max_id + 1 > 2 * (uint64_t)n_named + 1024)
        return kr_err_set(err, KR_ERR_FORMAT,
                          "largest token id %lld is far beyond the %zu tokens named (ids must be nearly dense)",
                          (long long)max_id, n_named);
    if ((st = kr__tok_alloc(&t, (int32_t)(max_id + 1), err)))
        return st;
    t->kind = KR_TOK_BPE;
    seen = calloc((size_t)t->n_vocab, 1);
    if (!seen) {
        st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
        goto err_free_tok;
    }
    /* json-c keeps the last of duplicate keys; duplicate ids are an error */
    json_object_object_foreach(vocab, key2, val2) {
        int32_t id = (int32_t)json_object_get_int64(val2);
        if (seen[id]) {
            st = kr_err_set(err, KR_ERR_FORMAT, "model.vocab: id %d is used by '%.64s' and '%.64s'",
                            (int)id, kr__tok_text(t, id), key2);
            goto err_free_tok;
        }
        seen[id] = 1;
        size_t kn = strlen(key2); /* json-c object keys are NUL-terminated */
        if ((st = kr__tok_set_text(t, id, key2, kn, err)))
            goto err_free_tok;
    }
    for (size_t i = 0; i < n_added; i++) {
        json_object *a = json_object_array_get_idx(added, i);
        int32_t id = (int32_t)json_object_get_int64(kr__get(a, "id"));
        const char *c;
        size_t cn;
        bool special = false, lstrip = false, rstrip = false;
        if ((st = kr__get_str(a, "added token", "content", &c, &cn, err)) ||
            (st = kr__get_boolean(a, "added token", "special", &special, err)) ||
            (st = kr__get_boolean(a, "added token", "lstrip", &lstrip, err)) ||
            (st = kr__get_boolean(a, "added token", "rstrip", &rstrip, err)))
            goto err_free_tok;
        if (!c || cn == 0) {
            st = kr_err_set(err, KR_ERR_FORMAT, "added token %zu (id %d) has no content", i, (int)id);
            goto err_free_tok;
        }
        if (seen[id] == 2) {
            st = kr_err_set(err, KR_ERR_FORMAT, "added_tokens: id %d appears twice", (int)id);
            goto err_free_tok;
        }
        if (!seen[id] || t->toks[id].len != cn || memcmp(kr__tok_text(t, id), c, cn) != 0)
            if ((st = kr__tok_set_text(t, id, c, cn, err)))
                goto err_free_tok;
        seen[id] = 2;
        t->toks[id].type = special ? KR_TOK_TYPE_CONTROL : KR_TOK_TYPE_USER_DEFINED;
        t->toks[id].strip = (uint8_t)((lstrip ? KR__STRIP_LEFT : 0) | (rstrip ? KR__STRIP_RIGHT : 0));
    }
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (!seen[id])
            t->toks[id].type = KR_TOK_TYPE_UNUSED; /* hole in the id space */
    if ((st = kr__tok_build_map(t, err)))
        goto err_free_tok;

    /* model flags */
    if ((st = kr__get_boolean(model, "model", "byte_fallback", &t->byte_fallback, err)) ||
        (st = kr__get_boolean(model, "model", "ignore_merges", &t->ignore_merges, err)) ||
        (st = kr__get_boolean(model, "model", "fuse_unk", &t->fuse_unk, err)))
        goto err_free_tok;
    const char *unk;
    size_t unkn;
    if ((st = kr__get_str(model, "model", "unk_token", &unk, &unkn, err)))
        goto err_free_tok;
    if (unk) {
        t->unk = kr__tok_lookup(t, unk, unkn);
        if (t->unk < 0) {
            st = kr_err_set(err, KR_ERR_FORMAT, "model.unk_token '%.64s' is not in the vocabulary", unk);
            goto err_free_tok;
        }
        t->toks[t->unk].type = KR_TOK_TYPE_UNKNOWN;
    }

    /* merges: "a b" strings or [a, b] pairs, rank = position */
    size_t nm = json_object_array_length(merges);
    if ((st = kr__merges_init(t, nm, err)))
        goto err_free_tok;
    for (size_t i = 0; i < nm; i++) {
        json_object *m = json_object_array_get_idx(merges, i);
        const char *l, *r;
        size_t ln, rn;
        if (m && json_object_is_type(m, json_type_string)) {
            const char *s = json_object_get_string(m);
            size_t sn = (size_t)json_object_get_string_len(m);
            const char *sp = sn > 1 ? memchr(s + 1, ' ', sn - 1) : NULL;
            if (!sp) {
                st = kr_err_set(err, KR_ERR_FORMAT, "merge %zu '%.64s' is not of the form \"a b\"", i, s);
                goto err_free_tok;
            }
            l = s;
            ln = (size_t)(sp - s);
            r = sp + 1;
            rn = sn - ln - 1;
        } else if (m && json_object_is_type(m, json_type_array) && json_object_array_length(m) == 2 &&
                   json_object_is_type(json_object_array_get_idx(m, 0), json_type_string) &&
                   json_object_is_type(json_object_array_get_idx(m, 1), json_type_string)) {
            json_object *a = json_object_array_get_idx(m, 0), *b = json_object_array_get_idx(m, 1);
            l = json_object_get_string(a);
            ln = (size_t)json_object_get_string_len(a);
            r = json_object_get_string(b);
            rn = (size_t)json_object_get_string_len(b);
        } else {
            st = kr_err_set(err, KR_ERR_FORMAT, "merge %zu must be a string \"a b\" or a pair [a, b]", i);
            goto err_free_tok;
        }
        if ((st = kr__merges_add(t, l, ln, r, rn, err)))
            goto err_free_tok;
    }

    /* pipeline */
    if ((st = kr__parse_normalizer(t, kr__get(root, "normalizer"), 0, err)) ||
        (st = kr__parse_pretok(t, kr__get(root, "pre_tokenizer"), 0, err)))
        goto err_free_tok;
    t->byte_level = false; /* decoder decides how pieces decode */
    if ((st = kr__parse_decoder(t, kr__get(root, "decoder"), 0, err)) ||
        (st = kr__parse_post(t, kr__get(root, "post_processor"), 0, err)))
        goto err_free_tok;
    /* special tokens not placed by the post-processor: well-known names */
    static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"};
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<eos>", "<|endoftext|>", "<|im_end|>"};
    static const char *const pad_names[] = {"<pad>", "<|pad|>", "[PAD]", "<|finetune_right_pad_id|>"};
    if (t->bos == KR_TOK_NONE)
        t->bos = kr__find_name(t, bos_names, sizeof bos_names / sizeof bos_names[0]);
    if (t->eos == KR_TOK_NONE)
        t->eos = kr__find_name(t, eos_names, sizeof eos_names / sizeof eos_names[0]);
    t->pad = kr__find_name(t, pad_names, sizeof pad_names / sizeof pad_names[0]);
    const char *ct;
    size_t ctn;
    if ((st = kr__get_str(root, "tokenizer", "chat_template", &ct, &ctn, err)))
        goto err_free_tok;
    if (ct) {
        t->chat_template = malloc(ctn + 1);
        if (!t->chat_template) {
            st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
            goto err_free_tok;
        }
        memcpy(t->chat_template, ct, ctn + 1);
    }
    if ((st = kr__tok_finish(t, err)))
        goto err_free_tok;
    free(seen);
    *out = t;
    return KR_OK;

err_free_tok:
    free(seen);
    kr_tokenizer_free(t);
    return st;
}

kr_status kr_tokenizer_load_json_memory(const char *data, size_t len, kr_tokenizer **out, kr_err *err)
{
    if (out)
        *out = NULL;
    if (!out || (!data && len))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "loading tokenizer.json: NULL argument");
    if (len > KR__JSON_MAX_FILE || len > INT_MAX)
        return kr_err_set(err, KR_ERR_LIMIT, "tokenizer.json of %zu bytes is too large", len);
    json_tokener *tk = json_tokener_new_ex(KR__JSON_MAX_DEPTH);
    if (!tk)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    json_object *root = json_tokener_parse_ex(tk, data ? data : "", (int)len);
    enum json_tokener_error je = json_tokener_get_error(tk);
    kr_status st;
    if (!root || je != json_tokener_success) {
        if (je == json_tokener_continue)
            st = kr_err_set(err, KR_ERR_FORMAT, "tokenizer.json: unexpected end of input");
        else
            st = kr_err_set(err, KR_ERR_FORMAT, "tokenizer.json: JSON error at byte %zu: %s",
                            json_tokener_get_parse_end(tk), json_tokener_error_desc(je));
        json_object_put(root);
        json_tokener_free(tk);
        return st;
    }
    size_t end = json_tokener_get_parse_end(tk);
    json_tokener_free(tk);
    for (; end < len; end++) {
        char c = data[end];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t') {
            json_object_put(root);
            return kr_err_set(err, KR_ERR_FORMAT, "tokenizer.json: trailing data at byte %zu", end);
        }
    }
    st = kr__load_json_obj(root, out, err);
    json_object_put(root);
    if (st)
        kr_err_prefix(err, "loading tokenizer.json");
    return st;
}

kr_status kr_tokenizer_load_json(const char *path, kr_tokenizer **out, kr_err *err)
{
    if (out)
        *out = NULL;
    if (!path || !out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "loading tokenizer.json: NULL argument");
    kr_status st = KR_OK;
    char *buf = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kr_err_set(err, KR_ERR_IO, "opening '%s': %s", path, strerror(errno));
    if (fseek(f, 0, SEEK_END) != 0) {
        st = kr_err_set(err, KR_ERR_IO, "seeking '%s': %s", path, strerror(errno));
        goto err_close;
    }
    long sz = ftell(f);
    if (sz < 0 || (unsigned long)sz > KR__JSON_MAX_FILE) {
        st = kr_err_set(err, KR_ERR_LIMIT, "'%s': size %ld not in [0, 1 GiB]", path, sz);
        goto err_close;
    }
    rewind(f);
    buf = malloc((size_t)sz + 1);
    if (!buf) {
        st = kr_err_set(err, KR_ERR_NOMEM, "out of memory reading '%s' (%ld bytes)", path, sz);
        goto err_close;
    }
    if (fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        st = kr_err_set(err, KR_ERR_IO, "reading '%s' failed", path);
        goto err_free_buf;
    }
    st = kr_tokenizer_load_json_memory(buf, (size_t)sz, out, err);
    if (st)
        kr_err_prefix(err, "%s", path);
err_free_buf:
    free(buf);
err_close:
    fclose(f);
    return st;
}
