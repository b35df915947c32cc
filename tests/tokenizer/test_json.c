/* tokenizer.json loading: a minimal valid file loads; each kind of bad or
 * unsupported content is rejected with a message naming it. */
#include "tok_common.h"

#define VOCAB "{\"a\":0,\"b\":1,\"ab\":2,\"<s>\":3}"

static kr_status load_str(const char *json, kr_tokenizer **t, kr_err *err)
{
    kr_err_clear(err);
    *t = NULL;
    return kr_tokenizer_load_json_memory(json, strlen(json), t, err);
}

/* model + optional extra top-level members */
static char *mk(const char *model_extra, const char *vocab, const char *merges, const char *top_extra)
{
    char *b = malloc(1 << 16);
    cr_assert(b);
    snprintf(b, 1 << 16,
             "{\"model\":{\"type\":\"BPE\",\"vocab\":%s,\"merges\":%s%s}%s}", vocab, merges,
             model_extra, top_extra);
    return b;
}

Test(json, minimal_valid_file_loads_and_encodes)
{
    char *j = mk("", VOCAB, "[\"a b\"]",
                 ",\"added_tokens\":[{\"id\":3,\"content\":\"<s>\",\"special\":true}],"
                 "\"post_processor\":{\"type\":\"TemplateProcessing\",\"single\":[{\"SpecialToken\":{\"id\":\"<s>\",\"type_id\":0}},{\"Sequence\":{\"id\":\"A\",\"type_id\":0}}]}");
    kr_tokenizer *t;
    kr_err err;
    kr_status st = load_str(j, &t, &err);
    cr_assert(st == KR_OK, "%s", err.msg);
    cr_assert_eq(kr_tokenizer_n_vocab(t), 4);
    cr_assert_eq(kr_tokenizer_bos(t), 3);
    cr_assert(kr_tokenizer_add_bos_default(t));
    size_t n;
    int32_t *ids = kr_test_encode(t, "abab<s>", 7, true, false, &n);
    /* bos, ab, ab, then "<s>" as text: '<', 's', '>' are not tokens and there is no unk */
    cr_assert(n == 3 && ids[0] == 3 && ids[1] == 2 && ids[2] == 2);
    free(ids);
    ids = kr_test_encode(t, "abab<s>", 7, false, true, &n);
    cr_assert(n == 3 && ids[0] == 2 && ids[1] == 2 && ids[2] == 3);
    free(ids);
    kr_tokenizer_free(t);
    free(j);
    /* a non-special added token is matched whole even with parse_special off */
    j = mk("", "{\"a\":0,\"b\":1,\"ab\":2,\"<s>\":3,\"<u>\":4}", "[\"a b\"]",
           ",\"added_tokens\":[{\"id\":3,\"content\":\"<s>\",\"special\":true},"
           "{\"id\":4,\"content\":\"<u>\",\"special\":false}]");
    cr_assert(load_str(j, &t, &err) == KR_OK, "%s", err.msg);
    cr_assert_eq(kr_tokenizer_token_type(t, 4), KR_TOK_TYPE_USER_DEFINED);
    ids = kr_test_encode(t, "a<u>b<s>", 8, false, false, &n);
    cr_assert(n == 3 && ids[0] == 0 && ids[1] == 4 && ids[2] == 1, "n=%zu", n);
    free(ids);
    kr_tokenizer_free(t);
    free(j);
    /* merges as pairs */
    j = mk("", VOCAB, "[[\"a\",\"b\"]]", "");
    cr_assert(load_str(j, &t, &err) == KR_OK, "%s", err.msg);
    ids = kr_test_encode(t, "ab", 2, false, false, &n);
    cr_assert(n == 1 && ids[0] == 2);
    free(ids);
    kr_tokenizer_free(t);
    free(j);
    kr_test_leak_check();
}

static void reject(const char *json, kr_status want, const char *needle)
{
    kr_tokenizer *t;
    kr_err err;
    kr_status st = load_str(json, &t, &err);
    cr_assert(st != KR_OK, "accepted: %.200s", json);
    cr_assert_null(t);
    if (want != KR_OK)
        cr_assert_eq(st, want, "status %s for %.200s (%s)", kr_status_name(st), json, err.msg);
    cr_assert(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
}

static void reject_mk(const char *mx, const char *vocab, const char *merges, const char *top,
                      kr_status want, const char *needle)
{
    char *j = mk(mx, vocab, merges, top);
    reject(j, want, needle);
    free(j);
}

Test(json, bad_inputs_rejected)
{
    reject("", KR_ERR_FORMAT, "tokenizer.json");
    reject("{\"model\":", KR_ERR_FORMAT, "end of input");
    reject("[1,2,3]", KR_ERR_FORMAT, "not a JSON object");
    reject("{}", KR_ERR_FORMAT, "model");
    reject("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", KR_ERR_UNSUPPORTED, "Unigram");
    reject("{\"model\":{\"type\":\"WordPiece\"}}", KR_ERR_UNSUPPORTED, "WordPiece");
    reject("{\"model\":{\"type\":\"BPE\",\"vocab\":{},\"merges\":[]}} trailing", KR_ERR_FORMAT, "trailing");
    /* merges naming unknown tokens / results not in vocab / malformed */
    reject_mk("", VOCAB, "[\"a zz\"]", "", KR_ERR_FORMAT, "zz");
    reject_mk("", VOCAB, "[\"b a\"]", "", KR_ERR_FORMAT, "'ba' is not a token");
    reject_mk("", VOCAB, "[\"ab\"]", "", KR_ERR_FORMAT, "merge 0");
    reject_mk("", VOCAB, "[42]", "", KR_ERR_FORMAT, "merge 0");
    /* duplicate ids, bad ids */
    reject_mk("", "{\"a\":0,\"b\":0}", "[]", "", KR_ERR_FORMAT, "id 0");
    reject_mk("", "{\"a\":-1}", "[]", "", KR_ERR_RANGE, "-1");
    reject_mk("", "{\"a\":\"x\"}", "[]", "", KR_ERR_TYPE, "integer");
    reject_mk("", "{\"a\":99999999999}", "[]", "", KR_ERR_RANGE, "99999999999");
    /* added tokens out of range / twice */
    reject_mk("", VOCAB, "[]", ",\"added_tokens\":[{\"id\":4294967296,\"content\":\"x\"}]", KR_ERR_RANGE,
              "4294967296");
    reject_mk("", VOCAB, "[]",
              ",\"added_tokens\":[{\"id\":3,\"content\":\"x\"},{\"id\":3,\"content\":\"y\"}]",
              KR_ERR_FORMAT, "twice");
    /* a tiny file naming a huge id must not allocate millions of entries */
    reject_mk("", VOCAB, "[]", ",\"added_tokens\":[{\"id\":4000000,\"content\":\"x\"}]", KR_ERR_FORMAT,
              "4000000");
    /* unsupported pipeline pieces are named */
    reject_mk("", VOCAB, "[]", ",\"normalizer\":{\"type\":\"NFC\"}", KR_ERR_UNSUPPORTED, "NFC");
    reject_mk("", VOCAB, "[]", ",\"normalizer\":{\"type\":\"Sequence\",\"normalizers\":[{\"type\":\"Lowercase\"}]}",
              KR_ERR_UNSUPPORTED, "Lowercase");
    reject_mk("", VOCAB, "[]", ",\"pre_tokenizer\":{\"type\":\"Whitespace\"}", KR_ERR_UNSUPPORTED,
              "Whitespace");
    reject_mk("", VOCAB, "[]", ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}",
              KR_ERR_FORMAT, "does not compile");
    reject_mk("", VOCAB, "[]", ",\"pre_tokenizer\":{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Sideways\"}",
              KR_ERR_UNSUPPORTED, "Sideways");
    reject_mk("", VOCAB, "[]", ",\"decoder\":{\"type\":\"WordPiece\"}", KR_ERR_UNSUPPORTED, "WordPiece");
    reject_mk("", VOCAB, "[]", ",\"post_processor\":{\"type\":\"RobertaProcessing\"}", KR_ERR_UNSUPPORTED,
              "RobertaProcessing");
    reject_mk(",\"dropout\":0.1", VOCAB, "[]", "", KR_ERR_UNSUPPORTED, "dropout");
    reject_mk(",\"continuing_subword_prefix\":\"##\"", VOCAB, "[]", "", KR_ERR_UNSUPPORTED, "continuing_subword_prefix");
    reject_mk(",\"unk_token\":\"<nope>\"", VOCAB, "[]", "", KR_ERR_FORMAT, "<nope>");
    kr_test_leak_check();
}

Test(json, deep_nesting_and_huge_strings)
{
    /* 100000 nested arrays: the parser's depth limit, no stack overflow */
    size_t depth = 100000;
    char *j = malloc(2 * depth + 1);
    memset(j, '[', depth);
    memset(j + depth, ']', depth);
    j[2 * depth] = '\0';
    reject(j, KR_ERR_FORMAT, "JSON error");
    free(j);
    /* nested Sequence pre-tokenizers beyond our own limit */
    char *p = malloc(1 << 16);
    size_t o = 0;
    o += (size_t)sprintf(p + o, "{\"model\":{\"type\":\"BPE\",\"vocab\":" VOCAB ",\"merges\":[]},\"pre_tokenizer\":");
    for (int i = 0; i < 20; i++)
        o += (size_t)sprintf(p + o, "{\"type\":\"Sequence\",\"pretokenizers\":[");
    o += (size_t)sprintf(p + o, "{\"type\":\"ByteLevel\"}");
    for (int i = 0; i < 20; i++)
        o += (size_t)sprintf(p + o, "]}");
    sprintf(p + o, "}");
    reject(p, KR_ERR_LIMIT, "nesting");
    free(p);
    /* a 1 MiB token text */
    size_t big = 1 << 20;
    size_t total = big + 256;
    char *k = malloc(total);
    int m = snprintf(k, total, "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"");
    memset(k + m, 'y', big);
    snprintf(k + m + big, total - (size_t)m - big, "\":0},\"merges\":[]}}");
    reject(k, KR_ERR_LIMIT, "bytes long");
    free(k);
    kr_test_leak_check();
}

/* Metaspace pre-tokenizer (replace ' ' by U+2581, prepend, split before each
 * U+2581) and its decoder; expected pieces worked out by hand. */
Test(json, metaspace_pretokenizer_and_decoder)
{
    static const char j[] =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\u2581\":0,\"a\":1,\"b\":2,\"\\u2581a\":3,\"\\u2581b\":4,"
        "\"ab\":5},\"merges\":[\"\\u2581 a\",\"\\u2581 b\",\"a b\"]},"
        "\"pre_tokenizer\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"always\",\"split\":true},"
        "\"decoder\":{\"type\":\"Metaspace\",\"replacement\":\"\\u2581\",\"prepend_scheme\":\"always\"}}";
    kr_tokenizer *t;
    kr_err err;
    cr_assert(load_str(j, &t, &err) == KR_OK, "%s", err.msg);
    /* "a b" -> "▁a▁b" -> pieces "▁a" "▁b"; "ab" -> "▁ab": merges rank 0 "▁ a" first -> ▁a, b */
    size_t n;
    int32_t *ids = kr_test_encode(t, "a b", 3, false, false, &n);
    cr_assert(n == 2 && ids[0] == 3 && ids[1] == 4);
    free(ids);
    ids = kr_test_encode(t, "ab", 2, false, false, &n);
    cr_assert(n == 2 && ids[0] == 3 && ids[1] == 2);
    free(ids);
    size_t dl;
    char *d = kr_test_decode(t, (int32_t[]){3, 4, 5}, 3, NULL, &dl);
    cr_assert_str_eq(d, "a bab");
    free(d);
    kr_tokenizer_free(t);
    kr_test_leak_check();
}

/* Replace with a Regex pattern: runs of spaces -> one "_" (literal content). */
Test(json, replace_regex_normalizer)
{
    static const char j[] =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"_\":2,\"$1\":3},\"merges\":[]},"
        "\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" +\"},\"content\":\"_\"}}";
    kr_tokenizer *t;
    kr_err err;
    cr_assert(load_str(j, &t, &err) == KR_OK, "%s", err.msg);
    size_t n;
    int32_t *ids = kr_test_encode(t, "a   b a", 7, false, false, &n);
    static const int32_t want[] = {0, 2, 1, 2, 0};
    cr_assert_eq(n, 5);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(ids[i], want[i]);
    free(ids);
    /* long input: the output buffer grows */
    char big[3000];
    memset(big, ' ', sizeof big);
    for (size_t i = 0; i < sizeof big; i += 3)
        big[i] = 'a';
    ids = kr_test_encode(t, big, sizeof big, false, false, &n);
    cr_assert_eq(n, 2000); /* 1000 'a', each followed by a run of 2 spaces -> "_" */
    free(ids);
    kr_tokenizer_free(t);
    /* a pattern that can match nothing is refused */
    static const char j2[] =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]},"
        "\"normalizer\":{\"type\":\"Replace\",\"pattern\":{\"Regex\":\" *\"},\"content\":\"_\"}}";
    cr_assert(load_str(j2, &t, &err) == KR_ERR_UNSUPPORTED);
    cr_assert(strstr(err.msg, "empty") != NULL, "%s", err.msg);
    kr_test_leak_check();
}

/* ByteLevel with add_prefix_space: "a" -> "Ġa"; Digits and Punctuation splits. */
Test(json, bytelevel_prefix_digits_punctuation)
{
    static const char j[] =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\\u0120\":0,\"a\":1,\"\\u0120a\":2,\"1\":3,\"2\":4,\"12\":5,"
        "\"!\":6,\"!!\":7,\"a!\":8},\"merges\":[\"\\u0120 a\",\"1 2\",\"! !\",\"a !\"]},"
        "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
        "{\"type\":\"Punctuation\",\"behavior\":\"Contiguous\"},{\"type\":\"Digits\",\"individual_digits\":true},"
        "{\"type\":\"ByteLevel\",\"add_prefix_space\":true,\"use_regex\":false}]},"
        "\"decoder\":{\"type\":\"ByteLevel\"}}";
    kr_tokenizer *t;
    kr_err err;
    cr_assert(load_str(j, &t, &err) == KR_OK, "%s", err.msg);
    /* "a!!12": Punctuation -> "a" "!!" "12"; Digits -> "a" "!!" "1" "2";
     * ByteLevel prefix -> "Ġa" "Ġ!!" "Ġ1" "Ġ2" -> Ġa | Ġ !! | Ġ 1 | Ġ 2 */
    size_t n;
    int32_t *ids = kr_test_encode(t, "a!!12", 5, false, false, &n);
    static const int32_t want[] = {2, 0, 7, 0, 3, 0, 4};
    cr_assert_eq(n, 7);
    for (size_t i = 0; i < 7; i++)
        cr_assert_eq(ids[i], want[i], "id %zu: %d want %d", i, ids[i], want[i]);
    free(ids);
    kr_tokenizer_free(t);
    kr_test_leak_check();
}

/* Added tokens with lstrip/rstrip swallow the whitespace next to them (HF). */
Test(json, added_token_lstrip_rstrip)
{
    static const char j[] =
        "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\" \":1,\"<L>\":2,\"<R>\":3,\"<N>\":4},\"merges\":[]},"
        "\"added_tokens\":[{\"id\":2,\"content\":\"<L>\",\"special\":true,\"lstrip\":true},"
        "{\"id\":3,\"content\":\"<R>\",\"special\":true,\"rstrip\":true},"
        "{\"id\":4,\"content\":\"<N>\",\"special\":true}]}";
    kr_tokenizer *t;
    kr_err err;
    cr_assert(load_str(j, &t, &err) == KR_OK, "%s", err.msg);
    size_t n;
    /* "a  <L> a": spaces before <L> go; the one after stays */
    int32_t *ids = kr_test_encode(t, "a  <L> a", 8, false, true, &n);
    static const int32_t w1[] = {0, 2, 1, 0};
    cr_assert_eq(n, 4);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(ids[i], w1[i]);
    free(ids);
    /* "a <R>\u3000 a": U+3000 and the space after <R> go; the one before stays */
    ids = kr_test_encode(t, "a <R>\xe3\x80\x80 a", 10, false, true, &n);
    static const int32_t w2[] = {0, 1, 3, 0};
    cr_assert_eq(n, 4);
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(ids[i], w2[i]);
    free(ids);
    /* no flags: both spaces stay */
    ids = kr_test_encode(t, "a <N> a", 7, false, true, &n);
    static const int32_t w3[] = {0, 1, 4, 1, 0};
    cr_assert_eq(n, 5);
    for (size_t i = 0; i < 5; i++)
        cr_assert_eq(ids[i], w3[i]);
    free(ids);
    kr_tokenizer_free(t);
    kr_test_leak_check();
}
