/* libFuzzer harness: encode arbitrary bytes and decode them back (batch and
 * streaming). The tokenizer is $KR_FUZZ_TOKENIZER (GGUF or tokenizer.json),
 * else a small built-in byte-level BPE. The first input byte picks options. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char builtin_json[] =
    "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2,\"\\u0120\":3,\"\\u0120a\":4,"
    "\"<|x|>\":5},\"merges\":[\"a b\",\"\\u0120 a\"]},"
    "\"added_tokens\":[{\"id\":5,\"content\":\"<|x|>\",\"special\":true}],"
    "\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
    "{\"Regex\":\"(?i:'s|'t)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}{1,3}|\\\\s+(?!\\\\S)|\\\\s+\"},"
    "\"behavior\":\"Isolated\"},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]},"
    "\"decoder\":{\"type\":\"ByteLevel\"}}";

static kr_tokenizer *g_tok;

static void cleanup(void) { kr_tokenizer_free(g_tok); }

static kr_tokenizer *get_tok(void)
{
    if (g_tok)
        return g_tok;
    kr_err err;
    const char *p = getenv("KR_FUZZ_TOKENIZER");
    kr_status st = p && *p ? kr_tokenizer_load_file(p, &g_tok, &err)
                           : kr_tokenizer_load_json_memory(builtin_json, sizeof builtin_json - 1, &g_tok, &err);
    if (st != KR_OK)
        abort(); /* harness setup, not library code */
    atexit(cleanup);
    return g_tok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kr_tokenizer *t = get_tok();
    if (size == 0)
        return 0;
    kr_tok_encode_opts o = {.add_bos = data[0] & 1, .add_eos = data[0] & 2, .parse_special = data[0] & 4};
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    kr_err err;
    size_t n = 0;
    kr_status st = kr_tokenizer_encode(t, text, len, &o, NULL, 0, &n, &err);
    if (st != KR_OK && st != KR_ERR_RANGE)
        return 0;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids)
        return 0;
    if (kr_tokenizer_encode(t, text, len, &o, ids, n, &n, &err) == KR_OK) {
        size_t need = 0;
        (void)kr_tokenizer_decode(t, ids, n, NULL, NULL, 0, &need, &err);
        char *out = malloc(need + 1);
        if (out) {
            size_t dl;
            (void)kr_tokenizer_decode(t, ids, n, NULL, out, need, &dl, &err);
            free(out);
        }
        kr_detok *d = NULL;
        kr_tok_decode_opts dop = {.render_special = data[0] & 8};
        if (kr_detok_new(t, &dop, &d, &err) == KR_OK) {
            const char *p;
            size_t pl;
            for (size_t i = 0; i < n; i++)
                (void)kr_detok_push(d, ids[i], &p, &pl, &err);
            (void)kr_detok_flush(d, &p, &pl, &err);
            kr_detok_free(d);
        }
    }
    free(ids);
    return 0;
}
