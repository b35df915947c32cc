/* libFuzzer harness: tokenizer.json loading, then encode/decode with what
 * loaded. Any input must give a status, never a crash or leak. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "kernrun/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kr_tokenizer *t = NULL;
    kr_err err;
    if (kr_tokenizer_load_json_memory((const char *)data, size, &t, &err) != KR_OK)
        return 0;
    static const char text[] = "Hello <s> w\xc3\xb6rld 123 \xf0\x9f\xa6\x99\xff\n";
    int32_t ids[256];
    size_t n = 0;
    kr_tok_encode_opts o = {.add_bos = true, .add_eos = true, .parse_special = true};
    kr_status st = kr_tokenizer_encode(t, text, sizeof text - 1, &o, ids, 256, &n, &err);
    if (st == KR_OK) {
        char out[1024];
        size_t dl;
        (void)kr_tokenizer_decode(t, ids, n, NULL, out, sizeof out, &dl, &err);
    }
    kr_tokenizer_free(t);
    return 0;
}
