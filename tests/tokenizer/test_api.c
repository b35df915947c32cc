/* Tokenizer behaviour: synthetic vocabularies with hand-computed results,
 * special-token parsing, decode round trips, streaming UTF-8, buffer sizes,
 * invalid UTF-8 and NUL bytes. */
#include <unistd.h>

#include "tok_common.h"

/* ---- tiny synthetic GGUF vocabularies ---- */
typedef struct synth {
    const char *model;            /* tokenizer.ggml.model */
    const char *const *tokens;
    size_t n;
    const float *scores;          /* NULL: no key */
    const int32_t *types;         /* NULL: no key */
    const char *const *merges;    /* NULL: no key */
    size_t n_merges;
    const char *pre;              /* NULL: no key */
    int64_t bos;                  /* < 0: no key */
    const char *chat_template;    /* NULL: no key */
} synth;

static char g_path[256];

static kr_status synth_load(const synth *s, kr_tokenizer **out, kr_err *err)
{
    snprintf(g_path, sizeof g_path, "/tmp/kr_tok_test_%d.gguf", (int)getpid());
    kr_gguf_writer *w = NULL;
    kr_err werr;
    cr_assert(kr_gguf_writer_open(g_path, &w, &werr) == KR_OK);
    cr_assert(kr_gguf_writer_set_str(w, "general.architecture", "llama") == KR_OK);
    cr_assert(kr_gguf_writer_set_str(w, "tokenizer.ggml.model", s->model) == KR_OK);
    cr_assert(kr_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", KR_GGUF_STRING, s->tokens, s->n) == KR_OK);
    if (s->scores)
        cr_assert(kr_gguf_writer_set_arr(w, "tokenizer.ggml.scores", KR_GGUF_FLOAT32, s->scores, s->n) == KR_OK);
    if (s->types)
        cr_assert(kr_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", KR_GGUF_INT32, s->types, s->n) == KR_OK);
    if (s->merges)
        cr_assert(kr_gguf_writer_set_arr(w, "tokenizer.ggml.merges", KR_GGUF_STRING, s->merges, s->n_merges) == KR_OK);
    if (s->pre)
        cr_assert(kr_gguf_writer_set_str(w, "tokenizer.ggml.pre", s->pre) == KR_OK);
    if (s->bos >= 0)
        cr_assert(kr_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)s->bos) == KR_OK);
    if (s->chat_template)
        cr_assert(kr_gguf_writer_set_str(w, "tokenizer.chat_template", s->chat_template) == KR_OK);
    cr_assert(kr_gguf_writer_finish(w) == KR_OK, "%s", kr_gguf_writer_error(w));
    kr_gguf_writer_free(w);
    kr_gguf *g = NULL;
    kr_status st = kr_gguf_open(g_path, NULL, &g, &werr);
    cr_assert(st == KR_OK, "%s", kr_err_msg(&werr, st));
    st = kr_tokenizer_load_gguf(g, out, err);
    kr_gguf_close(g);
    unlink(g_path);
    return st;
}

/* SPM: <unk> <s> </s> <0x00>..<0xFF> then pieces */
#define SPM_BASE 259
static const char *spm_tokens[SPM_BASE + 6];
static float spm_scores[SPM_BASE + 6];
static int32_t spm_types[SPM_BASE + 6];
static char spm_bytes[256][8];

static synth spm_synth(void)
{
    spm_tokens[0] = "<unk>";
    spm_tokens[1] = "<s>";
    spm_tokens[2] = "</s>";
    spm_types[0] = 2;
    spm_types[1] = spm_types[2] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(spm_bytes[b], sizeof spm_bytes[b], "<0x%02X>", b);
        spm_tokens[3 + b] = spm_bytes[b];
        spm_types[3 + b] = 6;
    }
    static const char *const pieces[] = {"\xe2\x96\x81", "a", "b", "\xe2\x96\x81\x61" /* ▁a */, "ab",
                                         "\xe2\x96\x81\x61\x62" /* ▁ab */};
    static const float sc[] = {-1, -2, -3, -5, -1, -0.5f};
    for (int i = 0; i < 6; i++) {
        spm_tokens[SPM_BASE + i] = pieces[i];
        spm_scores[SPM_BASE + i] = sc[i];
        spm_types[SPM_BASE + i] = 1;
    }
    return (synth){.model = "llama", .tokens = spm_tokens, .n = SPM_BASE + 6, .scores = spm_scores,
                   .types = spm_types, .bos = -1};
}

#define META SPM_BASE
#define TA (SPM_BASE + 1)
#define TB (SPM_BASE + 2)
#define TMA (SPM_BASE + 3)
#define TAB (SPM_BASE + 4)
#define TMAB (SPM_BASE + 5)

static void expect_ids(const kr_tokenizer *t, const char *s, size_t n, const int32_t *want, size_t wn)
{
    size_t got_n;
    int32_t *got = kr_test_encode(t, s, n, false, false, &got_n);
    cr_assert_eq(got_n, wn, "'%s': %zu ids, want %zu", s, got_n, wn);
    for (size_t i = 0; i < wn; i++)
        cr_assert_eq(got[i], want[i], "'%s': id %zu is %d, want %d", s, i, got[i], want[i]);
    free(got);
}

Test(spm, merges_by_score_and_byte_fallback)
{
    synth s = spm_synth();
    kr_tokenizer *t = NULL;
    kr_err err;
    kr_status st = synth_load(&s, &t, &err);
    cr_assert(st == KR_OK, "%s", kr_err_msg(&err, st));
    /* "ab" -> "▁ab": "ab" (-1) merges before "▁a" (-5), then "▁"+"ab" = "▁ab" */
    expect_ids(t, "ab", 2, (int32_t[]){TMAB}, 1);
    /* "ba" -> ▁ b a: no bigram is a token */
    expect_ids(t, "ba", 2, (int32_t[]){META, TB, TA}, 3);
    /* "é" is not a token: byte fallback C3 A9 */
    expect_ids(t, "a\xc3\xa9", 3, (int32_t[]){TMA, 3 + 0xc3, 3 + 0xa9}, 3);
    /* space -> ▁ and the leading ▁ added: " a" -> ▁ ▁a */
    expect_ids(t, " a", 2, (int32_t[]){META, TMA}, 2);
    /* NUL is data: <0x00> */
    expect_ids(t, "a\0b", 3, (int32_t[]){TMA, 3 + 0, TB}, 3);
    /* defaults of a llama vocab without keys */
    cr_assert_eq(kr_tokenizer_bos(t), 1);
    cr_assert_eq(kr_tokenizer_eos(t), 2);
    cr_assert_eq(kr_tokenizer_unk(t), 0);
    cr_assert(kr_tokenizer_add_bos_default(t));
    cr_assert(kr_tokenizer_is_eog(t, 2));
    cr_assert(!kr_tokenizer_is_eog(t, TA));
    cr_assert_eq(kr_tokenizer_kind(t), KR_TOK_SPM);
    cr_assert_null(kr_tokenizer_chat_template(t));
    /* BOS honoured */
    size_t n;
    int32_t *ids = kr_test_encode(t, "ab", 2, true, false, &n);
    cr_assert(n == 2 && ids[0] == 1 && ids[1] == TMAB);
    free(ids);
    /* decode: ▁ -> space, leading space stripped by default, bytes rebuilt */
    size_t dl;
    char *d = kr_test_decode(t, (int32_t[]){1, TMA, 3 + 0xc3, 3 + 0xa9, META, TAB}, 6, NULL, &dl);
    cr_assert_str_eq(d, "a\xc3\xa9 ab");
    free(d);
    kr_tok_decode_opts o = {.render_special = true, .strip_leading_space = false};
    d = kr_test_decode(t, (int32_t[]){1, TMA}, 2, &o, &dl);
    cr_assert_str_eq(d, "<s> a");
    free(d);
    kr_tokenizer_free(t);
    kr_test_leak_check();
}

Test(spm, chat_template_and_bos_key)
{
    synth s = spm_synth();
    s.chat_template = "{{ messages }}";
    s.bos = 2;
    kr_tokenizer *t = NULL;
    kr_err err;
    cr_assert(synth_load(&s, &t, &err) == KR_OK);
    cr_assert_str_eq(kr_tokenizer_chat_template(t), "{{ messages }}");
    cr_assert_eq(kr_tokenizer_bos(t), 2);
    kr_tokenizer_free(t);
    kr_test_leak_check();
}

/* BPE (gpt2 model): byte-level alphabet + merges by rank */
Test(bpe, merges_by_rank)
{
    static const char *const toks[] = {"a", "b", "c", "\xc4\xa0" /* Ġ */, "ab", "bc", "abc", "\xc4\xa0\x61" /* Ġa */};
    static const char *const merges[] = {"b c", "a b", "\xc4\xa0 a", "a bc"};
    synth s = {.model = "gpt2", .tokens = toks, .n = 8, .merges = merges, .n_merges = 4, .pre = "gpt-2", .bos = -1};
    kr_tokenizer *t = NULL;
    kr_err err;
    kr_status st = synth_load(&s, &t, &err);
    cr_assert(st == KR_OK, "%s", kr_err_msg(&err, st));
    /* "abc": rank 0 "b c" first -> a bc -> rank 3 "a bc" -> abc */
    expect_ids(t, "abc", 3, (int32_t[]){6}, 1);
    /* "ab c" pre-tokenizes to "ab", " c": ab | Ġ c */
    expect_ids(t, "ab c", 4, (int32_t[]){4, 3, 2}, 3);
    /* " a" -> Ġa */
    expect_ids(t, " a", 2, (int32_t[]){7}, 1);
    size_t dl;
    char *d = kr_test_decode(t, (int32_t[]){6, 7}, 2, NULL, &dl);
    cr_assert_str_eq(d, "abc a");
    free(d);
    kr_tokenizer_free(t);
    kr_test_leak_check();
}

/* ---- special tokens ---- */
Test(special, parse_off_keeps_text_on_matches_whole)
{
    kr_tokenizer *t = kr_test_load("tokenizers/llama3/tokenizer.json");
    int32_t eot = kr_tokenizer_find(t, "<|eot_id|>", 10);
    cr_assert_eq(eot, 128009);
    cr_assert(kr_tokenizer_is_eog(t, eot));
    cr_assert(kr_tokenizer_is_control(t, eot));
    cr_assert_eq(kr_tokenizer_bos(t), 128000);
    size_t n;
    int32_t *ids = kr_test_encode(t, "Hello<|eot_id|>", 15, false, false, &n);
    cr_assert(n > 2);
    for (size_t i = 0; i < n; i++)
        cr_assert(ids[i] < 128000, "control id %d produced with parse_special off", ids[i]);
    free(ids);
    ids = kr_test_encode(t, "Hello<|eot_id|>", 15, false, true, &n);
    cr_assert(n == 2 && ids[0] == 9906 && ids[1] == 128009);
    free(ids);
    /* defaults (NULL opts) never parse specials */
    int32_t buf[64];
    kr_err err;
    cr_assert(kr_tokenizer_encode(t, "<|eot_id|>", 10, NULL, buf, 64, &n, &err) == KR_OK);
    for (size_t i = 0; i < n; i++)
        cr_assert(buf[i] < 128000);
    kr_tokenizer_free(t);

    t = kr_test_load("vocab/ggml-vocab-llama-spm.gguf");
    ids = kr_test_encode(t, "<s>", 3, false, false, &n);
    cr_assert(n > 1);
    for (size_t i = 0; i < n; i++)
        cr_assert(ids[i] != 1);
    free(ids);
    ids = kr_test_encode(t, "<s>", 3, false, true, &n);
    cr_assert(n == 1 && ids[0] == 1);
    free(ids);
    kr_tokenizer_free(t);
    kr_test_leak_check();
}

/* ---- round trips and streaming ---- */
static bool valid_utf8(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (!l || i + l > n)
            return false;
        for (size_t k = 1; k < l; k++)
            if ((u[i + k] & 0xc0) != 0x80)
                return false;
        i += l;
    }
    return true;
}

static const char *const rt_files[] = {
    "vocab/ggml-vocab-llama-spm.gguf", "vocab/ggml-vocab-gpt-2.gguf", "vocab/ggml-vocab-falcon.gguf",
    "tokenizers/llama2/tokenizer.json", "tokenizers/llama3/tokenizer.json", "tokenizers/falcon/tokenizer.json",
};

/* random valid UTF-8: ASCII, 2-, 3- and 4-byte code points, spaces, NUL */
static size_t rand_utf8(uint32_t *seed, char *out, size_t max_cps)
{
    size_t o = 0, n = 1 + (*seed >> 8) % max_cps;
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1664525u + 1013904223u;
        uint32_t r = *seed >> 8, cp;
        switch (r % 6) {
        case 0: cp = ' '; break;
        case 1: cp = 0x20 + (r >> 4) % 95; break;
        case 2: cp = 0x61 + (r >> 4) % 26; break;
        case 3: cp = 0x80 + (r >> 4) % 0x780; break;
        case 4: cp = 0x800 + (r >> 4) % 0xf000; if (cp >= 0xd800 && cp <= 0xdfff) cp = 0x4e2d; break;
        default: cp = 0x10000 + (r >> 4) % 0x10000; break;
        }
        if (r % 97 == 0)
            cp = 0; /* NUL is data */
        if (cp < 0x80) {
            out[o++] = (char)cp;
        } else if (cp < 0x800) {
            out[o++] = (char)(0xc0 | (cp >> 6));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            out[o++] = (char)(0xe0 | (cp >> 12));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        } else {
            out[o++] = (char)(0xf0 | (cp >> 18));
            out[o++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            out[o++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            out[o++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    return o;
}

Test(roundtrip, decode_encode_random_utf8, .timeout = 120)
{
    for (size_t f = 0; f < sizeof rt_files / sizeof rt_files[0]; f++) {
        kr_tokenizer *t = kr_test_load(rt_files[f]);
        uint32_t seed = 99 + (uint32_t)f;
        char s[256];
        for (int k = 0; k < 200; k++) {
            size_t sl = rand_utf8(&seed, s, 40);
            size_t n, dl;
            int32_t *ids = kr_test_encode(t, s, sl, true, false, &n);
            char *d = kr_test_decode(t, ids, n, NULL, &dl);
            cr_assert(dl == sl && memcmp(d, s, sl) == 0, "%s: round trip of %zu bytes gave %zu bytes",
                      rt_files[f], sl, dl);
            free(d);
            free(ids);
        }
        kr_tokenizer_free(t);
    }
    kr_test_leak_check();
}

Test(roundtrip, streaming_never_splits_utf8)
{
    static const char text[] = "llama \xf0\x9f\xa6\x99 caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87 \xe2\x82\xac" "5 end";
    for (size_t f = 0; f < sizeof rt_files / sizeof rt_files[0]; f++) {
        kr_tokenizer *t = kr_test_load(rt_files[f]);
        size_t n;
        int32_t *ids = kr_test_encode(t, text, sizeof text - 1, false, false, &n);
        kr_tok_decode_opts o = kr_tokenizer_decode_defaults(t);
        kr_detok *d = NULL;
        kr_err err;
        cr_assert(kr_detok_new(t, &o, &d, &err) == KR_OK);
        char acc[512];
        size_t al = 0;
        for (size_t i = 0; i < n; i++) {
            const char *p;
            size_t pl;
            cr_assert(kr_detok_push(d, ids[i], &p, &pl, &err) == KR_OK);
            cr_assert(valid_utf8(p, pl), "%s: chunk after token %zu is not whole UTF-8", rt_files[f], i);
            memcpy(acc + al, p, pl);
            al += pl;
        }
        const char *p;
        size_t pl;
        cr_assert(kr_detok_flush(d, &p, &pl, &err) == KR_OK);
        cr_assert_eq(pl, 0);
        cr_assert(al == sizeof text - 1 && memcmp(acc, text, al) == 0, "%s: stream gave '%.*s'",
                  rt_files[f], (int)al, acc);
        /* out-of-range id: error, state kept */
        cr_assert(kr_detok_push(d, kr_tokenizer_n_vocab(t), &p, &pl, &err) == KR_ERR_RANGE);
        kr_detok_free(d);
        free(ids);
        kr_tokenizer_free(t);
    }
    kr_test_leak_check();
}

Test(roundtrip, streaming_holds_partial_sequence)
{
    /* SPM byte tokens: push the 4 bytes of U+1F999 one by one */
    kr_tokenizer *t = kr_test_load("vocab/ggml-vocab-llama-spm.gguf");
    int32_t b[4];
    static const unsigned char emoji[4] = {0xf0, 0x9f, 0xa6, 0x99};
    char name[8];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "<0x%02X>", emoji[i]);
        b[i] = kr_tokenizer_find(t, name, 6);
        cr_assert(b[i] >= 0);
    }
    kr_detok *d = NULL;
    kr_err err;
    cr_assert(kr_detok_new(t, NULL, &d, &err) == KR_OK);
    const char *p;
    size_t pl;
    for (int i = 0; i < 3; i++) {
        cr_assert(kr_detok_push(d, b[i], &p, &pl, &err) == KR_OK);
        cr_assert_eq(pl, 0, "byte %d emitted early", i);
    }
    cr_assert(kr_detok_push(d, b[3], &p, &pl, &err) == KR_OK);
    cr_assert(pl == 4 && memcmp(p, emoji, 4) == 0);
    /* an invalid byte passes through at once; an incomplete tail comes out on flush */
    int32_t ff = kr_tokenizer_find(t, "<0xFF>", 6), e2 = kr_tokenizer_find(t, "<0xE2>", 6);
    cr_assert(kr_detok_push(d, ff, &p, &pl, &err) == KR_OK);
    cr_assert(pl == 1 && (unsigned char)p[0] == 0xff);
    cr_assert(kr_detok_push(d, e2, &p, &pl, &err) == KR_OK);
    cr_assert_eq(pl, 0);
    cr_assert(kr_detok_flush(d, &p, &pl, &err) == KR_OK);
    cr_assert(pl == 1 && (unsigned char)p[0] == 0xe2);
    kr_detok_free(d);
    kr_tokenizer_free(t);
    kr_test_leak_check();
}

/* ---- buffers and ranges ---- */
Test(buffers, encode_and_decode_report_needed_size)
{
    kr_tokenizer *t = kr_test_load("tokenizers/llama3/tokenizer.json");
    kr_err err;
    size_t full_n;
    int32_t *full = kr_test_encode(t, "Hello, world!", 13, false, false, &full_n);
    cr_assert_eq(full_n, 4); /* 9906 11 1917 0 in the llama-bpe vectors */
    int32_t ids[3] = {-7, -7, -7};
    size_t n = 0;
    kr_tok_encode_opts o = {0};
    cr_assert(kr_tokenizer_encode(t, "Hello, world!", 13, &o, ids, 2, &n, &err) == KR_ERR_RANGE);
    cr_assert_eq(n, 4);
    cr_assert(ids[0] == full[0] && ids[1] == full[1] && ids[2] == -7, "wrote past cap");
    cr_assert(kr_tokenizer_encode(t, "Hello, world!", 13, &o, NULL, 0, &n, &err) == KR_ERR_RANGE);
    cr_assert_eq(n, 4);

    char buf[8];
    memset(buf, 'Z', sizeof buf);
    cr_assert(kr_tokenizer_decode(t, full, full_n, NULL, buf, 5, &n, &err) == KR_ERR_RANGE);
    cr_assert_eq(n, 13);
    cr_assert(memcmp(buf, "Hello", 5) == 0 && buf[5] == 'Z', "wrote past cap");
    /* out-of-range ids */
    int32_t bad[2] = {9906, kr_tokenizer_n_vocab(t)};
    cr_assert(kr_tokenizer_decode(t, bad, 2, NULL, buf, 8, &n, &err) == KR_ERR_RANGE);
    cr_assert(strstr(err.msg, "position 1") != NULL, "%s", err.msg);
    int32_t neg = -1;
    cr_assert(kr_tokenizer_decode(t, &neg, 1, NULL, buf, 8, &n, &err) == KR_ERR_RANGE);
    cr_assert(kr_tokenizer_token_bytes(t, -5, false, buf, 8, &n, &err) == KR_ERR_RANGE);
    cr_assert_null(kr_tokenizer_piece(t, kr_tokenizer_n_vocab(t), NULL));
    free(full);
    kr_tokenizer_free(t);
    kr_test_leak_check();
}

/* ---- invalid UTF-8 and NUL: no crash, bytes preserved ---- */
Test(robust, invalid_utf8_and_nul_round_trip)
{
    static const struct { const char *s; size_t n; } cases[] = {
        {"\x80", 1},                  /* lone continuation */
        {"ab\xe2\x82", 4},            /* truncated 3-byte sequence */
        {"\xc0\xaf", 2},              /* overlong '/' */
        {"\xed\xa0\x80", 3},          /* UTF-16 surrogate */
        {"\xff\xfe x", 4},            /* bytes never valid */
        {"\xf4\x90\x80\x80", 4},      /* above U+10FFFF */
        {"a\0b\0", 4},                /* NUL bytes are data */
        {"Hello \xe4\xb8 world\xf0\x9f\xa6", 17},
    };
    for (size_t f = 0; f < sizeof rt_files / sizeof rt_files[0]; f++) {
        kr_tokenizer *t = kr_test_load(rt_files[f]);
        /* Falcon's vocabulary lacks some byte-alphabet characters (0xC0, 0xFF,
         * ...) and has no unk token: those bytes are dropped, so only check
         * that encoding works. */
        bool lossy = strstr(rt_files[f], "falcon") != NULL;
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            size_t n, dl;
            int32_t *ids = kr_test_encode(t, cases[k].s, cases[k].n, false, false, &n);
            if (lossy) {
                free(ids);
                continue;
            }
            cr_assert(n > 0);
            char *d = kr_test_decode(t, ids, n, NULL, &dl);
            cr_assert(dl == cases[k].n && memcmp(d, cases[k].s, dl) == 0,
                      "%s: case %zu does not round trip (%zu bytes back)", rt_files[f], k, dl);
            free(d);
            free(ids);
        }
        kr_tokenizer_free(t);
    }
    kr_test_leak_check();
}

/* ---- malformed GGUF vocabularies: rejected with a message, no crash ---- */
typedef void (*fill_fn)(kr_gguf_writer *w);

static kr_status load_filled(fill_fn fill, kr_err *err)
{
    snprintf(g_path, sizeof g_path, "/tmp/kr_tok_bad_%d.gguf", (int)getpid());
    kr_gguf_writer *w = NULL;
    kr_err werr;
    cr_assert(kr_gguf_writer_open(g_path, &w, &werr) == KR_OK);
    fill(w);
    cr_assert(kr_gguf_writer_finish(w) == KR_OK, "%s", kr_gguf_writer_error(w));
    kr_gguf_writer_free(w);
    kr_gguf *g = NULL;
    kr_status st = kr_gguf_open(g_path, NULL, &g, &werr);
    cr_assert(st == KR_OK, "%s", kr_err_msg(&werr, st));
    kr_tokenizer *t = NULL;
    kr_err_clear(err);
    st = kr_tokenizer_load_gguf(g, &t, err);
    cr_assert_null(t);
    kr_gguf_close(g);
    unlink(g_path);
    return st;
}

static const char *const bad_toks[] = {"<unk>", "<s>", "</s>", "a", "b", "ab"};

static void fill_base(kr_gguf_writer *w, const char *model)
{
    kr_gguf_writer_set_str(w, "tokenizer.ggml.model", model);
    kr_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", KR_GGUF_STRING, bad_toks, 6);
}
static void fill_bos_range(kr_gguf_writer *w)
{
    fill_base(w, "llama");
    kr_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 6);
}
static void fill_eos_huge(kr_gguf_writer *w)
{
    fill_base(w, "llama");
    kr_gguf_writer_set_u64(w, "tokenizer.ggml.eos_token_id", UINT64_MAX);
}
static void fill_scores_len(kr_gguf_writer *w)
{
    static const float sc[5] = {0};
    fill_base(w, "llama");
    kr_gguf_writer_set_arr(w, "tokenizer.ggml.scores", KR_GGUF_FLOAT32, sc, 5);
}
static void fill_scores_type(kr_gguf_writer *w)
{
    static const int32_t sc[6] = {0};
    fill_base(w, "llama");
    kr_gguf_writer_set_arr(w, "tokenizer.ggml.scores", KR_GGUF_INT32, sc, 6);
}
static void fill_types_len(kr_gguf_writer *w)
{
    static const int32_t ty[7] = {1, 1, 1, 1, 1, 1, 1};
    fill_base(w, "llama");
    kr_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", KR_GGUF_INT32, ty, 7);
}
static void fill_types_value(kr_gguf_writer *w)
{
    static const int32_t ty[6] = {2, 3, 3, 1, 42, 1};
    fill_base(w, "llama");
    kr_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", KR_GGUF_INT32, ty, 6);
}
static void fill_bad_byte_token(kr_gguf_writer *w)
{
    static const char *const toks[] = {"<unk>", "<s>", "</s>", "<0xZZ>"};
    static const int32_t ty[4] = {2, 3, 3, 6};
    kr_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    kr_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", KR_GGUF_STRING, toks, 4);
    kr_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", KR_GGUF_INT32, ty, 4);
}
static void fill_long_token(kr_gguf_writer *w)
{
    static char big[5001];
    memset(big, 'x', 5000);
    const char *toks[] = {"<unk>", big};
    kr_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    kr_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", KR_GGUF_STRING, toks, 2);
}
static void fill_merge_unknown(kr_gguf_writer *w)
{
    static const char *const m[] = {"a b", "a zz"};
    fill_base(w, "gpt2");
    kr_gguf_writer_set_str(w, "tokenizer.ggml.pre", "gpt-2");
    kr_gguf_writer_set_arr(w, "tokenizer.ggml.merges", KR_GGUF_STRING, m, 2);
}
static void fill_merge_nospace(kr_gguf_writer *w)
{
    static const char *const m[] = {"ab"};
    fill_base(w, "gpt2");
    kr_gguf_writer_set_arr(w, "tokenizer.ggml.merges", KR_GGUF_STRING, m, 1);
}
static void fill_unknown_pre(kr_gguf_writer *w)
{
    static const char *const m[] = {"a b"};
    fill_base(w, "gpt2");
    kr_gguf_writer_set_str(w, "tokenizer.ggml.pre", "martian-v9");
    kr_gguf_writer_set_arr(w, "tokenizer.ggml.merges", KR_GGUF_STRING, m, 1);
}
static void fill_unknown_model(kr_gguf_writer *w) { fill_base(w, "bert"); }
static void fill_no_tokens(kr_gguf_writer *w) { kr_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama"); }
static void fill_tokens_type(kr_gguf_writer *w)
{
    static const int32_t x[3] = {1, 2, 3};
    kr_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    kr_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", KR_GGUF_INT32, x, 3);
}

static void expect_reject(fill_fn f, kr_status want, const char *needle)
{
    kr_err err;
    kr_status st = load_filled(f, &err);
    cr_assert(st != KR_OK, "accepted a bad vocabulary (expected '%s')", needle);
    if (want != KR_OK)
        cr_assert_eq(st, want, "status %s, want %s (%s)", kr_status_name(st), kr_status_name(want), err.msg);
    cr_assert(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
}

Test(gguf_bad, rejected_with_messages)
{
    expect_reject(fill_bos_range, KR_ERR_RANGE, "bos token id 6");
    expect_reject(fill_eos_huge, KR_ERR_RANGE, "eos_token_id");
    expect_reject(fill_scores_len, KR_ERR_FORMAT, "scores has 5 entries");
    expect_reject(fill_scores_type, KR_OK, "scores");
    expect_reject(fill_types_len, KR_ERR_FORMAT, "token_type has 7 entries");
    expect_reject(fill_types_value, KR_ERR_FORMAT, "42");
    expect_reject(fill_bad_byte_token, KR_ERR_FORMAT, "<0xZZ>");
    expect_reject(fill_long_token, KR_ERR_LIMIT, "5000 bytes");
    expect_reject(fill_merge_unknown, KR_ERR_FORMAT, "zz");
    expect_reject(fill_merge_nospace, KR_ERR_FORMAT, "no space");
    expect_reject(fill_unknown_pre, KR_ERR_UNSUPPORTED, "martian-v9");
    expect_reject(fill_unknown_model, KR_ERR_UNSUPPORTED, "bert");
    expect_reject(fill_no_tokens, KR_OK, "tokenizer.ggml.tokens");
    expect_reject(fill_tokens_type, KR_OK, "tokenizer.ggml.tokens");
    kr_test_leak_check();
}

/* Every tokenizer.ggml.pre name we claim loads (its regexes compile) and splits. */
Test(bpe, every_pre_type_loads)
{
    static const char *const names[] = {
        "default", "gpt-2", "gpt2", "mpt", "olmo", "jais", "phi-2", "roberta-bpe", "llama-bpe", "llama3",
        "llama-v3", "falcon3", "dbrx", "smaug-bpe", "chatglm-bpe", "falcon", "starcoder", "refact",
        "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "qwen2", "stablelm2",
        "deepseek-r1-qwen", "deepseek-llm", "deepseek-coder", "deepseek-v3", "megrez", "exaone4",
        "poro-chat", "bloom", "gpt3-finnish", "viking", "tekken", "gpt-4o", "llama4",
    };
    static const char *const toks[] = {"a", "b", "c", "\xc4\xa0" /* Ġ */, "ab", "bc", "abc", "\xc4\xa0\x61"};
    static const char *const merges[] = {"b c", "a b", "\xc4\xa0 a", "a bc"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        synth s = {.model = "gpt2", .tokens = toks, .n = 8, .merges = merges, .n_merges = 4, .pre = names[i], .bos = -1};
        kr_tokenizer *t = NULL;
        kr_err err;
        kr_status st = synth_load(&s, &t, &err);
        cr_assert(st == KR_OK, "pre '%s': %s", names[i], kr_err_msg(&err, st));
        size_t n;
        int32_t *ids = kr_test_encode(t, "abc a", 5, false, false, &n);
        cr_assert(n >= 2, "pre '%s'", names[i]);
        free(ids);
        kr_tokenizer_free(t);
    }
    kr_test_leak_check();
}

/* Repeated words (served from the per-call word cache) encode exactly as the
 * first occurrence: N copies of a sentence = N times its ids. */
Test(bpe, repeated_text_equals_repeated_ids)
{
    static const char *const files[] = {"vocab/ggml-vocab-gpt-2.gguf", "tokenizers/llama3/tokenizer.json",
                                        "vocab/ggml-vocab-falcon.gguf"};
    static const char sent[] = " The cat sat on the mat, didn't it? Yes.";
    enum { COPIES = 300 };
    char *big = malloc(sizeof sent * COPIES);
    size_t bl = 0;
    for (int k = 0; k < COPIES; k++) {
        memcpy(big + bl, sent, sizeof sent - 1);
        bl += sizeof sent - 1;
    }
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        kr_tokenizer *t = kr_test_load(files[f]);
        size_t n1, nb;
        int32_t *one = kr_test_encode(t, sent, sizeof sent - 1, false, false, &n1);
        int32_t *all = kr_test_encode(t, big, bl, false, false, &nb);
        cr_assert_eq(nb, n1 * COPIES, "%s", files[f]);
        for (size_t k = 0; k < nb; k++)
            cr_assert_eq(all[k], one[k % n1], "%s: id %zu", files[f], k);
        free(one);
        free(all);
        kr_tokenizer_free(t);
    }
    free(big);
    kr_test_leak_check();
}
