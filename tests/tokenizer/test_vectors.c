/* llama.cpp's tokenizer vectors (testdata/vocab NAME.inp/.out, made with the
 * models' Hugging Face tokenizers, no BOS/EOS, special parsing off): every
 * case must match exactly, from the vocab GGUFs and from tokenizer.json. */
#include "tok_common.h"

#define SEP "\n__ggml_vocab_test__\n"

typedef struct vcase {
    char *text;
    size_t len;
    int32_t *ids;
    size_t n;
} vcase;

/* Parse NAME.gguf.inp / .out into cases; returns the count. */
static size_t load_vectors(const char *name, vcase **out)
{
    char rel[256];
    size_t il, ol;
    snprintf(rel, sizeof rel, "vocab/%s.inp", name);
    char *ip = kr_test_path(rel);
    char *inp = kr_test_read(ip, &il);
    snprintf(rel, sizeof rel, "vocab/%s.out", name);
    char *op = kr_test_path(rel);
    char *outp = kr_test_read(op, &ol);
    free(ip);
    free(op);

    size_t cap = 64, n = 0;
    vcase *c = calloc(cap, sizeof *c);
    cr_assert(c);
    const char *p = inp, *end = inp + il;
    while (p < end) {
        const char *s = strstr(p, SEP);
        cr_assert(s, "unterminated case in %s.inp", name);
        cr_assert(n < cap);
        c[n].len = (size_t)(s - p);
        c[n].text = malloc(c[n].len + 1);
        memcpy(c[n].text, p, c[n].len);
        c[n].text[c[n].len] = '\0';
        n++;
        p = s + strlen(SEP);
    }
    /* .out: one line per case, ids separated by spaces */
    const char *q = outp;
    for (size_t i = 0; i < n; i++) {
        const char *nl = strchr(q, '\n');
        cr_assert(nl, "%s.out has fewer lines than cases", name);
        c[i].ids = malloc(((size_t)(nl - q) / 2 + 1) * sizeof(int32_t));
        const char *r = q;
        while (r < nl) {
            while (r < nl && *r == ' ')
                r++;
            if (r >= nl)
                break;
            char *e;
            long v = strtol(r, &e, 10);
            cr_assert(e > r);
            c[i].ids[c[i].n++] = (int32_t)v;
            r = e;
        }
        q = nl + 1;
    }
    cr_assert(*q == '\0', "%s.out has more lines than cases", name);
    free(inp);
    free(outp);
    *out = c;
    return n;
}

static void free_vectors(vcase *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(c[i].text);
        free(c[i].ids);
    }
    free(c);
}

static void fmt_ids(char *b, size_t cap, const int32_t *ids, size_t n)
{
    size_t o = 0;
    b[0] = '\0';
    for (size_t i = 0; i < n && o + 12 < cap; i++)
        o += (size_t)snprintf(b + o, cap - o, "%d ", (int)ids[i]);
}

static void check_vectors(const char *tokfile, const char *vecname)
{
    kr_tokenizer *t = kr_test_load(tokfile);
    vcase *c;
    size_t n = load_vectors(vecname, &c);
    cr_assert(n >= 40, "only %zu cases in %s", n, vecname);
    for (size_t i = 0; i < n; i++) {
        size_t got_n;
        int32_t *got = kr_test_encode(t, c[i].text, c[i].len, false, false, &got_n);
        bool same = got_n == c[i].n && (got_n == 0 || memcmp(got, c[i].ids, got_n * sizeof *got) == 0);
        if (!same) {
            char a[2048], b[2048];
            fmt_ids(a, sizeof a, c[i].ids, c[i].n);
            fmt_ids(b, sizeof b, got, got_n);
            cr_assert_fail("%s with %s: case %zu input '%s'\n expected: %s\n got:      %s", vecname, tokfile, i,
                    c[i].text, a, b);
        }
        free(got);
    }
    free_vectors(c, n);
    kr_tokenizer_free(t);
    kr_test_leak_check();
}

Test(vectors, llama_spm_gguf) { check_vectors("vocab/ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-spm.gguf"); }
Test(vectors, falcon_gguf) { check_vectors("vocab/ggml-vocab-falcon.gguf", "ggml-vocab-falcon.gguf"); }
Test(vectors, gpt2_gguf) { check_vectors("vocab/ggml-vocab-gpt-2.gguf", "ggml-vocab-gpt-2.gguf"); }
Test(vectors, llama_bpe_llama3_json) { check_vectors("tokenizers/llama3/tokenizer.json", "ggml-vocab-llama-bpe.gguf"); }
Test(vectors, llama_spm_llama2_json) { check_vectors("tokenizers/llama2/tokenizer.json", "ggml-vocab-llama-spm.gguf"); }
/* a real model file carrying the full Llama-2 vocabulary */
Test(vectors, llama_spm_model_gguf) { check_vectors("models/llama2-tiny-random-f16.gguf", "ggml-vocab-llama-spm.gguf"); }
Test(vectors, falcon_json) { check_vectors("tokenizers/falcon/tokenizer.json", "ggml-vocab-falcon.gguf"); }

/* Llama-2: tokenizer.json (rank merges) and the vocab GGUF (score merges)
 * must agree on every input, including ones outside the vector set. */
Test(vectors, llama2_json_equals_gguf)
{
    kr_tokenizer *a = kr_test_load("tokenizers/llama2/tokenizer.json");
    kr_tokenizer *b = kr_test_load("vocab/ggml-vocab-llama-spm.gguf");
    cr_assert_eq(kr_tokenizer_n_vocab(a), kr_tokenizer_n_vocab(b));
    static const char *const extra[] = {
        "The quick brown fox jumps over the lazy dog.",
        "  leading and trailing spaces  ",
        "tabs\tand\nnewlines\r\n",
        "数字 123 ünïcödé 🦙 emoji ☃",
        "<s> looks like a control token </s>",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "\xe1\x88\xb4\xe1\x8c\x8b\xe1\x8d\x8b rare script",
        "int main(void) { return printf(\"%d\\n\", 42); }",
    };
    /* plus pseudo-random printable/unicode strings (fixed seed) */
    static const char *const alphabet[] = {"a", "b", "e", "t", " ", "  ", "\n", "th", "ing", "é", "ü",
                                           "中", "文", "🦙", ",", ".", "'", "1", "0", "\t", "Q"};
    uint32_t seed = 12345;
    char buf[512];
    for (size_t k = 0; k < sizeof extra / sizeof extra[0] + 300; k++) {
        const char *s;
        if (k < sizeof extra / sizeof extra[0]) {
            s = extra[k];
        } else {
            size_t o = 0;
            size_t len = 1 + (seed >> 16) % 40;
            for (size_t j = 0; j < len; j++) {
                seed = seed * 1103515245u + 12345u;
                const char *piece = alphabet[(seed >> 16) % (sizeof alphabet / sizeof alphabet[0])];
                size_t pl = strlen(piece);
                memcpy(buf + o, piece, pl);
                o += pl;
            }
            buf[o] = '\0';
            s = buf;
        }
        size_t na, nb;
        int32_t *ia = kr_test_encode(a, s, strlen(s), false, false, &na);
        int32_t *ib = kr_test_encode(b, s, strlen(s), false, false, &nb);
        cr_assert(na == nb && memcmp(ia, ib, na * sizeof *ia) == 0, "json and GGUF differ on '%s'", s);
        free(ia);
        free(ib);
    }
    /* with special-token parsing on */
    static const char *const sp[] = {"<s>Hello</s> world", " <s> a <unk> b </s>", "x</s></s>y", "<s>"};
    for (size_t k = 0; k < sizeof sp / sizeof sp[0]; k++) {
        size_t na, nb;
        int32_t *ia = kr_test_encode(a, sp[k], strlen(sp[k]), true, true, &na);
        int32_t *ib = kr_test_encode(b, sp[k], strlen(sp[k]), true, true, &nb);
        cr_assert(na == nb && memcmp(ia, ib, na * sizeof *ia) == 0, "json and GGUF differ on '%s' (special on)",
                  sp[k]);
        bool has_eos = false;
        for (size_t i = 0; i < na; i++)
            has_eos = has_eos || ia[i] == 2;
        cr_assert(has_eos == (strstr(sp[k], "</s>") != NULL), "'%s'", sp[k]);
        bool has_unk = false;
        for (size_t i = 0; i < na; i++)
            has_unk = has_unk || ia[i] == 0;
        cr_assert(has_unk == (strstr(sp[k], "<unk>") != NULL), "'%s'", sp[k]);
        free(ia);
        free(ib);
    }
    kr_tokenizer_free(a);
    kr_tokenizer_free(b);
    kr_test_leak_check();
}
