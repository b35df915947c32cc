/* Private tokenizer state shared by the loaders, the encoder and the decoder. */
#ifndef KR_TOK_INTERNAL_H
#define KR_TOK_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "kernrun/tokenizer.h"

/* Limits on untrusted vocabularies. */
#define KR_TOK_MAX_VOCAB (1 << 22)      /* 4M tokens */
#define KR_TOK_MAX_TOKEN_LEN 4096       /* bytes of one token's text */
#define KR_TOK_MAX_MERGES (1 << 23)     /* ranks must stay exact in a float key */
#define KR_TOK_MAX_PRETOK_STEPS 16
#define KR_TOK_MAX_NORM_STEPS 16
#define KR_TOK_MAX_TEXT ((size_t)1 << 30) /* encode input cap (bytes); offsets are u32 */

typedef struct kr__tok_entry {
    uint32_t off;  /* into kr_tokenizer.strs; text is NUL-terminated there too */
    uint32_t len;  /* bytes */
    float score;   /* SPM merge score */
    uint8_t type;  /* kr_tok_type */
    uint8_t strip; /* KR__STRIP_* for added tokens matched in text */
} kr__tok_entry;

#define KR__STRIP_LEFT 1u  /* HF added token lstrip: swallow whitespace before it */
#define KR__STRIP_RIGHT 2u /* rstrip: swallow whitespace after it */

/* How a split step combines matches with the text between them (HF names). */
typedef enum kr__split_behavior {
    KR__SPLIT_ISOLATED = 0,
    KR__SPLIT_REMOVED,
    KR__SPLIT_MERGED_PREV,
    KR__SPLIT_MERGED_NEXT,
    KR__SPLIT_CONTIGUOUS,
} kr__split_behavior;

typedef enum kr__pretok_kind {
    KR__PRE_SPLIT = 0,   /* regex split with a behavior */
    KR__PRE_BYTELEVEL,   /* map every byte of every piece to the GPT-2 byte alphabet */
    KR__PRE_METASPACE,   /* ' ' -> replacement, optional prepend (per piece) */
} kr__pretok_kind;

typedef struct kr__pretok_step {
    kr__pretok_kind kind;
    pcre2_code *re;              /* KR__PRE_SPLIT */
    kr__split_behavior behavior; /* KR__PRE_SPLIT */
    char repl[8];                /* KR__PRE_METASPACE: replacement (UTF-8) */
    uint8_t repl_len;
    bool prepend;                /* KR__PRE_METASPACE: prepend replacement when missing */
    bool prepend_first_only;     /* ... only on the first segment of the input */
} kr__pretok_step;

typedef enum kr__norm_kind {
    KR__NORM_PREPEND = 0, /* prepend a (unless text is empty) */
    KR__NORM_REPLACE,     /* replace every literal a with b */
    KR__NORM_REPLACE_RE,  /* replace every match of re with the literal b */
} kr__norm_kind;

typedef struct kr__norm_step {
    kr__norm_kind kind;
    char *a; size_t a_len;
    char *b; size_t b_len;
    pcre2_code *re;       /* KR__NORM_REPLACE_RE */
} kr__norm_step;

/* text -> id map: open addressing over ids (-1 empty). */
typedef struct kr__strmap {
    int32_t *slots; /* (cap) */
    size_t cap;     /* power of two */
} kr__strmap;

/* (left id, right id) -> merge rank + result id. */
typedef struct kr__merge_slot {
    uint64_t key;   /* (left << 32) | right; UINT64_MAX empty */
    int32_t rank;
    int32_t result;
} kr__merge_slot;

struct kr_tokenizer {
    kr_tok_kind kind;
    int32_t n_vocab;
    kr__tok_entry *toks;   /* (n_vocab) */
    char *strs;            /* all token texts, NUL-separated */
    size_t strs_len;
    size_t strs_cap;
    kr__strmap map;

    kr__merge_slot *merges; /* (merges_cap) hash table */
    size_t merges_cap;
    size_t n_merges;

    int32_t *specials;     /* (n_specials) ids matched whole in text, by first byte, longest first */
    size_t n_specials;
    uint32_t special_idx[257]; /* specials[special_idx[c] .. special_idx[c+1]) start with byte c */

    int32_t bos, eos, eot, unk, pad;
    int32_t *eog;          /* (n_eog) */
    size_t n_eog;
    bool add_bos, add_eos;

    /* Encoding pipeline */
    kr__norm_step norm[KR_TOK_MAX_NORM_STEPS];
    size_t n_norm;
    kr__pretok_step pre[KR_TOK_MAX_PRETOK_STEPS];
    size_t n_pre;
    bool byte_level;       /* vocabulary is in the GPT-2 byte alphabet */
    bool byte_fallback;    /* unknown chars -> <0xXX> tokens */
    bool ignore_merges;    /* whole pre-token in vocab -> emit it directly */
    bool fuse_unk;         /* consecutive unk collapse into one */
    bool chunk_meta;       /* no token has "X\u2581" (X not \u2581) and no ignore_merges:
                            * merging each run starting at such a boundary alone is exact */
    int32_t byte_tok[256]; /* <0xXX> ids (byte_fallback) or -1 */

    /* Decoding */
    bool dec_strip_leading; /* default for strip_leading_space */
    bool dec_metaspace;     /* decode "\u2581" as ' ' */

    char *chat_template;
};

/* ---- vocab.c ---- */
uint64_t kr__hash_bytes(const char *s, size_t n);
kr_status kr__tok_alloc(kr_tokenizer **out, int32_t n_vocab, kr_err *err);
/* Set token id's text (copied). Length is checked against the cap. */
kr_status kr__tok_set_text(kr_tokenizer *t, int32_t id, const char *s, size_t n, kr_err *err);
/* Build the text->id map; duplicate texts: the lowest id wins (like llama.cpp). */
kr_status kr__tok_build_map(kr_tokenizer *t, kr_err *err);
int32_t kr__tok_lookup(const kr_tokenizer *t, const char *s, size_t n);
static inline const char *kr__tok_text(const kr_tokenizer *t, int32_t id)
{
    return t->strs + t->toks[id].off;
}
kr_status kr__merges_init(kr_tokenizer *t, size_t n, kr_err *err);
/* Add "left right" with rank = order of addition; texts are looked up. */
kr_status kr__merges_add(kr_tokenizer *t, const char *l, size_t ln, const char *r, size_t rn,
                         kr_err *err);
bool kr__merge_find(const kr_tokenizer *t, int32_t l, int32_t r, int32_t *rank, int32_t *result);
/* Finish: byte-token table, specials list, eog list, id checks. */
kr_status kr__tok_finish(kr_tokenizer *t, kr_err *err);
/* Parse "<0xXX>" -> byte; false if text is not of that form. */
bool kr__parse_byte_token(const char *s, size_t n, uint8_t *out);

/* GPT-2 byte alphabet: byte -> code point, code point -> byte (-1 none). */
uint32_t kr__byte_to_cp(uint8_t b);
int kr__cp_to_byte(uint32_t cp);
/* UTF-8 helpers. */
size_t kr__utf8_len(uint8_t lead); /* 1..4 from the lead byte (1 for invalid) */
size_t kr__utf8_put(uint32_t cp, char *out); /* writes 1..4 bytes */
/* Decode one code point at s (n bytes left); returns its length, 0 if invalid. */
size_t kr__utf8_get(const char *s, size_t n, uint32_t *cp);

/* ---- pretok.c ---- */
/* Compile one regex (UTF, UCP, invalid UTF allowed, JIT where available). */
kr_status kr__regex_compile(const char *pattern, size_t len, bool literal, pcre2_code **out,
                            kr_err *err);
kr_status kr__pretok_add_split(kr_tokenizer *t, const char *pattern, size_t len, bool literal,
                               kr__split_behavior behavior, kr_err *err);
kr_status kr__pretok_add(kr_tokenizer *t, const kr__pretok_step *step, kr_err *err);
/* Regex list for a tokenizer.ggml.pre name; false when unknown. */
bool kr__pre_regexes(const char *name, const char *const **list, size_t *n);
extern const char kr__gpt2_regex[];

typedef struct kr__span {
    uint32_t off, len; /* into kr__words.buf */
} kr__span;

/* Pre-tokenized pieces of one text segment. */
typedef struct kr__words {
    char *buf;       /* (cap) text the spans point into */
    size_t len, cap;
    kr__span *sp;    /* (sp_cap) pieces, in order */
    size_t n, sp_cap;
} kr__words;

/* Run the pre-tokenizer steps over text; first_segment: the text starts the
 * input (Metaspace prepend_scheme "first"). */
kr_status kr__pretokenize(const kr_tokenizer *t, const char *text, size_t len, bool first_segment,
                          kr__words *out, kr_err *err);
void kr__words_free(kr__words *w);

/* ---- load_json.c / load_gguf.c ---- */
/* Append a normalizer step (a, b NUL-terminated; b NULL for PREPEND). */
kr_status kr__norm_add(kr_tokenizer *t, kr__norm_kind kind, const char *a, const char *b, kr_err *err);
void kr__tok_free_pipeline(kr_tokenizer *t);

#endif
