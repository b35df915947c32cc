/* Vocabulary storage: token table, text->id map, merge table, special lists,
 * byte alphabets and UTF-8 helpers. */
#include <stdlib.h>
#include <string.h>

#include "kernrun/checked.h"
#include "tok_internal.h"

uint64_t kr__hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t kr__mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static size_t kr__pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c <<= 1;
    return c;
}

kr_status kr__tok_alloc(kr_tokenizer **out, int32_t n_vocab, kr_err *err)
{
    *out = NULL;
    if (n_vocab <= 0 || n_vocab > KR_TOK_MAX_VOCAB)
        return kr_err_set(err, KR_ERR_RANGE, "vocabulary size %d outside [1, %d]", (int)n_vocab,
                          KR_TOK_MAX_VOCAB);
    kr_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory allocating the tokenizer");
    t->n_vocab = n_vocab;
    t->toks = calloc((size_t)n_vocab, sizeof *t->toks);
    t->strs_cap = (size_t)n_vocab * 8 + 16;
    t->strs = malloc(t->strs_cap);
    if (!t->toks || !t->strs) {
        kr_tokenizer_free(t);
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory allocating %d tokens", (int)n_vocab);
    }
    /* offset 0 holds the empty string for tokens never set */
    t->strs[0] = '\0';
    t->strs_len = 1;
    for (int32_t i = 0; i < n_vocab; i++)
        t->toks[i].type = KR_TOK_TYPE_NORMAL;
    t->bos = t->eos = t->eot = t->unk = t->pad = KR_TOK_NONE;
    for (int i = 0; i < 256; i++)
        t->byte_tok[i] = -1;
    *out = t;
    return KR_OK;
}

kr_status kr__tok_set_text(kr_tokenizer *t, int32_t id, const char *s, size_t n, kr_err *err)
{
    if (id < 0 || id >= t->n_vocab)
        return kr_err_set(err, KR_ERR_RANGE, "token id %d outside [0, %d)", (int)id, (int)t->n_vocab);
    if (n > KR_TOK_MAX_TOKEN_LEN)
        return kr_err_set(err, KR_ERR_LIMIT, "token %d is %zu bytes long (limit %d)", (int)id, n,
                          KR_TOK_MAX_TOKEN_LEN);
    size_t need;
    if (kr_add_overflow_size(t->strs_len, n + 1, &need) || need > UINT32_MAX)
        return kr_err_set(err, KR_ERR_LIMIT, "token texts exceed 4 GiB in total");
    if (need > t->strs_cap) {
        size_t cap = t->strs_cap;
        while (cap < need)
            cap = cap / 2 * 3 + 64;
        if (cap > (size_t)UINT32_MAX + 1)
            cap = (size_t)UINT32_MAX + 1;
        char *p = realloc(t->strs, cap);
        if (!p)
            return kr_err_set(err, KR_ERR_NOMEM, "out of memory storing token texts");
        t->strs = p;
        t->strs_cap = cap;
    }
    if (n)
        memcpy(t->strs + t->strs_len, s, n);
    t->strs[t->strs_len + n] = '\0';
    t->toks[id].off = (uint32_t)t->strs_len;
    t->toks[id].len = (uint32_t)n;
    t->strs_len = need;
    return KR_OK;
}

kr_status kr__tok_build_map(kr_tokenizer *t, kr_err *err)
{
    free(t->map.slots);
    t->map.cap = kr__pow2_at_least((size_t)t->n_vocab * 2);
    t->map.slots = malloc(t->map.cap * sizeof *t->map.slots);
    if (!t->map.slots)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory for the token map");
    memset(t->map.slots, 0xff, t->map.cap * sizeof *t->map.slots);
    size_t mask = t->map.cap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const kr__tok_entry *e = &t->toks[id];
        if (e->len == 0)
            continue; /* empty texts (holes) are never looked up */
        const char *s = t->strs + e->off;
        size_t h = (size_t)kr__hash_bytes(s, e->len) & mask;
        for (;;) {
            int32_t o = t->map.slots[h];
            if (o < 0) {
                t->map.slots[h] = id;
                break;
            }
            if (t->toks[o].len == e->len && memcmp(t->strs + t->toks[o].off, s, e->len) == 0)
                break; /* duplicate text: keep the lower id */
            h = (h + 1) & mask;
        }
    }
    return KR_OK;
}

int32_t kr__tok_lookup(const kr_tokenizer *t, const char *s, size_t n)
{
    if (n == 0 || !t->map.slots)
        return -1;
    size_t mask = t->map.cap - 1;
    size_t h = (size_t)kr__hash_bytes(s, n) & mask;
    for (;;) {
        int32_t o = t->map.slots[h];
        if (o < 0)
            return -1;
        if (t->toks[o].len == n && memcmp(t->strs + t->toks[o].off, s, n) == 0)
            return o;
        h = (h + 1) & mask;
    }
}

kr_status kr__merges_init(kr_tokenizer *t, size_t n, kr_err *err)
{
    if (n > KR_TOK_MAX_MERGES)
        return kr_err_set(err, KR_ERR_LIMIT, "%zu merges (limit %d)", n, KR_TOK_MAX_MERGES);
    free(t->merges);
    t->merges_cap = kr__pow2_at_least(n * 2 + 1);
    t->merges = malloc(t->merges_cap * sizeof *t->merges);
    if (!t->merges)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory for %zu merges", n);
    for (size_t i = 0; i < t->merges_cap; i++)
        t->merges[i].key = UINT64_MAX;
    t->n_merges = 0;
    return KR_OK;
}

kr_status kr__merges_add(kr_tokenizer *t, const char *l, size_t ln, const char *r, size_t rn,
                         kr_err *err)
{
    size_t rank = t->n_merges;
    if (rank * 2 + 1 > t->merges_cap)
        return kr_err_set(err, KR_ERR_INTERNAL, "merge table full");
    int32_t li = kr__tok_lookup(t, l, ln);
    int32_t ri = kr__tok_lookup(t, r, rn);
    if (li < 0 || ri < 0)
        return kr_err_set(err, KR_ERR_FORMAT, "merge %zu '%.*s %.*s' names unknown token '%.*s'", rank,
                          (int)(ln > 64 ? 64 : ln), l, (int)(rn > 64 ? 64 : rn), r,
                          (int)(li < 0 ? (ln > 64 ? 64 : ln) : (rn > 64 ? 64 : rn)), li < 0 ? l : r);
    if (ln + rn > KR_TOK_MAX_TOKEN_LEN)
        return kr_err_set(err, KR_ERR_FORMAT, "merge %zu result longer than any token", rank);
    char buf[KR_TOK_MAX_TOKEN_LEN];
    memcpy(buf, l, ln);
    memcpy(buf + ln, r, rn);
    int32_t res = kr__tok_lookup(t, buf, ln + rn);
    if (res < 0)
        return kr_err_set(err, KR_ERR_FORMAT, "merge %zu '%.*s %.*s': result '%.*s' is not a token",
                          rank, (int)(ln > 64 ? 64 : ln), l, (int)(rn > 64 ? 64 : rn), r,
                          (int)((ln + rn) > 128 ? 128 : (ln + rn)), buf);
    uint64_t key = ((uint64_t)(uint32_t)li << 32) | (uint32_t)ri;
    size_t mask = t->merges_cap - 1;
    size_t h = (size_t)kr__mix64(key) & mask;
    while (t->merges[h].key != UINT64_MAX) {
        if (t->merges[h].key == key) {
            t->n_merges++; /* duplicate merge: the first (lower rank) wins, rank slot consumed */
            return KR_OK;
        }
        h = (h + 1) & mask;
    }
    t->merges[h].key = key;
    t->merges[h].rank = (int32_t)rank;
    t->merges[h].result = res;
    t->n_merges++;
    return KR_OK;
}

bool kr__merge_find(const kr_tokenizer *t, int32_t l, int32_t r, int32_t *rank, int32_t *result)
{
    if (!t->merges || l < 0 || r < 0)
        return false;
    uint64_t key = ((uint64_t)(uint32_t)l << 32) | (uint32_t)r;
    size_t mask = t->merges_cap - 1;
    size_t h = (size_t)kr__mix64(key) & mask;
    for (;;) {
        const kr__merge_slot *s = &t->merges[h];
        if (s->key == UINT64_MAX)
            return false;
        if (s->key == key) {
            *rank = s->rank;
            *result = s->result;
            return true;
        }
        h = (h + 1) & mask;
    }
}

static int kr__hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

bool kr__parse_byte_token(const char *s, size_t n, uint8_t *out)
{
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>')
        return false;
    int hi = kr__hexval(s[3]), lo = kr__hexval(s[4]);
    if (hi < 0 || lo < 0)
        return false;
    *out = (uint8_t)(hi * 16 + lo);
    return true;
}

static const char *const kr__eog_names[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<EOT>", "<|eom_id|>", "</s>", "<|return|>", "<|call|>",
};

static int kr__cmp_special(const void *a, const void *b, void *u)
{
    const kr_tokenizer *t = u;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    uint8_t cx = (uint8_t)kr__tok_text(t, x)[0], cy = (uint8_t)kr__tok_text(t, y)[0];
    if (cx != cy)
        return cx < cy ? -1 : 1;
    if (t->toks[x].len != t->toks[y].len)
        return t->toks[x].len > t->toks[y].len ? -1 : 1;
    return x < y ? -1 : x > y;
}

kr_status kr__tok_finish(kr_tokenizer *t, kr_err *err)
{
    kr_status st = kr__tok_build_map(t, err);
    if (st)
        return st;
    /* special ids must be in range */
    struct { const char *name; int32_t *id; } sp[] = {
        {"bos", &t->bos}, {"eos", &t->eos}, {"eot", &t->eot}, {"unk", &t->unk}, {"pad", &t->pad},
    };
    for (size_t i = 0; i < sizeof sp / sizeof sp[0]; i++) {
        int32_t v = *sp[i].id;
        if (v != KR_TOK_NONE && (v < 0 || v >= t->n_vocab))
            return kr_err_set(err, KR_ERR_RANGE, "%s token id %d outside [0, %d)", sp[i].name, (int)v,
                              (int)t->n_vocab);
    }
    /* byte tokens */
    for (int32_t id = 0; id < t->n_vocab; id++) {
        kr__tok_entry *e = &t->toks[id];
        if (e->type == KR_TOK_TYPE_BYTE) {
            uint8_t b;
            if (!kr__parse_byte_token(kr__tok_text(t, id), e->len, &b))
                return kr_err_set(err, KR_ERR_FORMAT,
                                  "token %d has type BYTE but text '%.*s' is not of the form <0xXX>",
                                  (int)id, (int)(e->len > 32 ? 32 : e->len), kr__tok_text(t, id));
            if (t->byte_tok[b] < 0)
                t->byte_tok[b] = id;
        }
    }
    if (t->byte_fallback) {
        /* tokenizer.json marks nothing as BYTE: find <0xXX> by text */
        for (int b = 0; b < 256; b++) {
            if (t->byte_tok[b] >= 0)
                continue;
            char name[8];
            static const char hex[] = "0123456789ABCDEF";
            memcpy(name, "<0x", 3);
            name[3] = hex[b >> 4];
            name[4] = hex[b & 15];
            name[5] = '>';
            int32_t id = kr__tok_lookup(t, name, 6);
            if (id >= 0) {
                t->byte_tok[b] = id;
                if (t->toks[id].type == KR_TOK_TYPE_NORMAL)
                    t->toks[id].type = KR_TOK_TYPE_BYTE;
            }
        }
    }
    /* specials: control, unknown and user-defined tokens, matched whole, longest
     * first (as llama.cpp; control/unknown only with parse_special) */
    size_t ns = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        uint8_t ty = t->toks[id].type;
        if ((ty == KR_TOK_TYPE_CONTROL || ty == KR_TOK_TYPE_USER_DEFINED || ty == KR_TOK_TYPE_UNKNOWN) &&
            t->toks[id].len > 0)
            ns++;
    }
    free(t->specials);
    t->specials = NULL;
    t->n_specials = 0;
    memset(t->special_idx, 0, sizeof t->special_idx);
    if (ns) {
        t->specials = malloc(ns * sizeof *t->specials);
        if (!t->specials)
            return kr_err_set(err, KR_ERR_NOMEM, "out of memory for special tokens");
        for (int32_t id = 0; id < t->n_vocab; id++) {
            uint8_t ty = t->toks[id].type;
            if ((ty == KR_TOK_TYPE_CONTROL || ty == KR_TOK_TYPE_USER_DEFINED || ty == KR_TOK_TYPE_UNKNOWN) &&
            t->toks[id].len > 0) {
                t->specials[t->n_specials++] = id;
                t->special_idx[(uint8_t)kr__tok_text(t, id)[0] + 1]++;
            }
        }
        qsort_r(t->specials, t->n_specials, sizeof *t->specials, kr__cmp_special, t);
    }
    for (int c = 0; c < 256; c++)
        t->special_idx[c + 1] += t->special_idx[c];
    /* Merging a word can be cut before every "\u2581" that follows another
     * character when no token could span such a cut (true for Llama-2; byte-level
     * text never contains the bytes of "\u2581", so there it never cuts). */
    t->chunk_meta = !t->ignore_merges;
    for (int32_t id = 0; id < t->n_vocab && t->chunk_meta; id++) {
        const char *s = kr__tok_text(t, id);
        size_t n = t->toks[id].len;
        for (size_t p = 1; p + 3 <= n; p++) {
            if (memcmp(s + p, "\xe2\x96\x81", 3) == 0 && (p < 3 || memcmp(s + p - 3, "\xe2\x96\x81", 3) != 0)) {
                t->chunk_meta = false;
                break;
            }
        }
    }
    /* end-of-generation set */
    free(t->eog);
    t->eog = malloc((sizeof kr__eog_names / sizeof kr__eog_names[0] + 2) * sizeof *t->eog);
    if (!t->eog)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    t->n_eog = 0;
    if (t->eos >= 0)
        t->eog[t->n_eog++] = t->eos;
    if (t->eot >= 0 && t->eot != t->eos)
        t->eog[t->n_eog++] = t->eot;
    for (size_t i = 0; i < sizeof kr__eog_names / sizeof kr__eog_names[0]; i++) {
        int32_t id = kr__tok_lookup(t, kr__eog_names[i], strlen(kr__eog_names[i]));
        if (id < 0 || t->toks[id].type != KR_TOK_TYPE_CONTROL)
            continue;
        bool dup = false;
        for (size_t j = 0; j < t->n_eog; j++)
            dup = dup || t->eog[j] == id;
        if (!dup)
            t->eog[t->n_eog++] = id;
        if (t->eot == KR_TOK_NONE && i < 4)
            t->eot = id;
    }
    return KR_OK;
}

/* ---- GPT-2 byte alphabet: printable bytes (0x21-0x7E, 0xA1-0xAC, 0xAE-0xFF)
 * map to themselves, the others to U+0100 + n in byte order. Tables generated
 * from that rule. ---- */
static const uint16_t kr__b2cp[256] = {
    256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267,
    268, 269, 270, 271, 272, 273, 274, 275, 276, 277, 278, 279,
    280, 281, 282, 283, 284, 285, 286, 287, 288, 33, 34, 35,
    36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
    48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
    60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71,
    72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83,
    84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,
    96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107,
    108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119,
    120, 121, 122, 123, 124, 125, 126, 289, 290, 291, 292, 293,
    294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305,
    306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317,
    318, 319, 320, 321, 322, 161, 162, 163, 164, 165, 166, 167,
    168, 169, 170, 171, 172, 323, 174, 175, 176, 177, 178, 179,
    180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
    192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203,
    204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215,
    216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227,
    228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
    240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251,
    252, 253, 254, 255,
};
static const int16_t kr__cp2b[0x100 + 68] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, 33, 34, 35,
    36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
    48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59,
    60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71,
    72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83,
    84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,
    96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107,
    108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119,
    120, 121, 122, 123, 124, 125, 126, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, 161, 162, 163, 164, 165, 166, 167,
    168, 169, 170, 171, 172, -1, 174, 175, 176, 177, 178, 179,
    180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
    192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203,
    204, 205, 206, 207, 208, 209, 210, 211, 212, 213, 214, 215,
    216, 217, 218, 219, 220, 221, 222, 223, 224, 225, 226, 227,
    228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
    240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251,
    252, 253, 254, 255, 0, 1, 2, 3, 4, 5, 6, 7,
    8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19,
    20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
    32, 127, 128, 129, 130, 131, 132, 133, 134, 135, 136, 137,
    138, 139, 140, 141, 142, 143, 144, 145, 146, 147, 148, 149,
    150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 160, 173,
};

uint32_t kr__byte_to_cp(uint8_t b) { return kr__b2cp[b]; }

int kr__cp_to_byte(uint32_t cp)
{
    return cp < sizeof kr__cp2b / sizeof kr__cp2b[0] ? kr__cp2b[cp] : -1;
}

size_t kr__utf8_len(uint8_t c)
{
    if (c < 0x80)
        return 1;
    if ((c & 0xe0) == 0xc0)
        return 2;
    if ((c & 0xf0) == 0xe0)
        return 3;
    if ((c & 0xf8) == 0xf0)
        return 4;
    return 1;
}

size_t kr__utf8_put(uint32_t cp, char *o)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

size_t kr__utf8_get(const char *s, size_t n, uint32_t *cp)
{
    const uint8_t *u = (const uint8_t *)s;
    if (n == 0)
        return 0;
    if (u[0] < 0x80) {
        *cp = u[0];
        return 1;
    }
    size_t len = kr__utf8_len(u[0]);
    if (len == 1 || len > n)
        return 0;
    uint32_t c = u[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((u[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (u[i] & 0x3f);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (c < min[len] || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}
