/* Tokenizers: SentencePiece-style BPE ("llama", merge by score with byte
 * fallback) and byte-level BPE ("gpt2", merge by rank after a regex
 * pre-tokenizer), loaded from GGUF metadata (tokenizer.ggml.*) or from a
 * Hugging Face tokenizer.json.
 *
 * Token ids are int32_t in [0, n_vocab). Inputs are untrusted: malformed
 * vocabularies are rejected with a message; encode accepts any bytes (invalid
 * UTF-8, see docs/TOKENIZER.md: each invalid byte is a symbol of its own and
 * ends up as a <0xXX> token, its byte-level character, or unk; it never
 * crashes). NUL bytes are data. A loaded tokenizer is immutable: encode and
 * decode may run from several threads at once (a kr_detok is per thread).
 */
#ifndef KERNRUN_TOKENIZER_H
#define KERNRUN_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/gguf.h"
#include "kernrun/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kr_tokenizer kr_tokenizer; /* opaque, immutable after load */

typedef enum kr_tok_kind {
    KR_TOK_SPM = 1, /* "llama": score merges, ▁ for spaces, <0xXX> byte fallback */
    KR_TOK_BPE = 2, /* "gpt2" / tokenizer.json BPE: rank merges */
} kr_tok_kind;

/* Token attributes (GGUF tokenizer.ggml.token_type values). */
typedef enum kr_tok_type {
    KR_TOK_TYPE_UNDEFINED = 0,
    KR_TOK_TYPE_NORMAL = 1,
    KR_TOK_TYPE_UNKNOWN = 2,
    KR_TOK_TYPE_CONTROL = 3,      /* <s>, </s>, <|eot_id|>: matched only with parse_special */
    KR_TOK_TYPE_USER_DEFINED = 4, /* added non-special tokens: always matched whole */
    KR_TOK_TYPE_UNUSED = 5,
    KR_TOK_TYPE_BYTE = 6,         /* <0xXX> */
} kr_tok_type;

#define KR_TOK_NONE (-1) /* "no such token" for the special-id getters */

/* Load from an open GGUF (tokenizer.ggml.model "llama" or "gpt2"). The
 * tokenizer copies what it needs; the GGUF may be closed afterwards. */
kr_status kr_tokenizer_load_gguf(const kr_gguf *g, kr_tokenizer **out, kr_err *err);
/* Load a Hugging Face tokenizer.json (model type BPE). */
kr_status kr_tokenizer_load_json(const char *path, kr_tokenizer **out, kr_err *err);
/* Same from memory (len bytes, no NUL needed). */
kr_status kr_tokenizer_load_json_memory(const char *data, size_t len, kr_tokenizer **out,
                                        kr_err *err);
/* Either kind of file: GGUF when the file starts with "GGUF", else tokenizer.json. */
kr_status kr_tokenizer_load_file(const char *path, kr_tokenizer **out, kr_err *err);
void kr_tokenizer_free(kr_tokenizer *tok); /* NULL ok */

kr_tok_kind kr_tokenizer_kind(const kr_tokenizer *tok);
int32_t kr_tokenizer_n_vocab(const kr_tokenizer *tok);
/* Special ids, KR_TOK_NONE when the vocabulary has none. Always < n_vocab. */
int32_t kr_tokenizer_bos(const kr_tokenizer *tok);
int32_t kr_tokenizer_eos(const kr_tokenizer *tok);
int32_t kr_tokenizer_eot(const kr_tokenizer *tok);
int32_t kr_tokenizer_unk(const kr_tokenizer *tok);
int32_t kr_tokenizer_pad(const kr_tokenizer *tok);
/* Defaults from the file (tokenizer.ggml.add_bos_token / post_processor). */
bool kr_tokenizer_add_bos_default(const kr_tokenizer *tok);
bool kr_tokenizer_add_eos_default(const kr_tokenizer *tok);
/* End of generation: eos, eot, or another end-of-turn control token
 * (<|eot_id|>, <|im_end|>, <|end|>, <end_of_turn>, <|endoftext|>...). */
bool kr_tokenizer_is_eog(const kr_tokenizer *tok, int32_t id);
/* Control / unknown / unused tokens (not rendered by decode by default). */
bool kr_tokenizer_is_control(const kr_tokenizer *tok, int32_t id);
kr_tok_type kr_tokenizer_token_type(const kr_tokenizer *tok, int32_t id);
/* Raw vocabulary text of a token ("▁Hello", "ĠHello", "<0x0A>"); *len bytes,
 * NUL-terminated too. NULL when id is out of range. Valid until free. */
const char *kr_tokenizer_piece(const kr_tokenizer *tok, int32_t id, size_t *len);
/* Find a token by its exact vocabulary text; KR_TOK_NONE when absent. */
int32_t kr_tokenizer_find(const kr_tokenizer *tok, const char *text, size_t len);
/* tokenizer.chat_template (GGUF) / chat_template (json); NULL when absent. */
const char *kr_tokenizer_chat_template(const kr_tokenizer *tok);

typedef struct kr_tok_encode_opts {
    bool add_bos;       /* prepend bos (ignored when the vocab has none) */
    bool add_eos;       /* append eos */
    bool parse_special; /* match control tokens written as text ("<s>"); off for user text */
} kr_tok_encode_opts;

/* The file's defaults: add_bos/add_eos from the file, parse_special false.
 * Passing opts = NULL to encode means exactly these. */
kr_tok_encode_opts kr_tokenizer_encode_defaults(const kr_tokenizer *tok);

/* Encode len bytes of text into ids[0..cap). *n_out is always set to the
 * number of ids the full result has; when it exceeds cap, ids holds the first
 * cap of them and KR_ERR_RANGE is returned (call again with a bigger array;
 * ids may be NULL with cap 0 to ask for the size). */
kr_status kr_tokenizer_encode(const kr_tokenizer *tok, const char *text, size_t len,
                              const kr_tok_encode_opts *opts, int32_t *ids, size_t cap,
                              size_t *n_out, kr_err *err);

typedef struct kr_tok_decode_opts {
    bool render_special;      /* write control tokens' text ("<s>") instead of nothing */
    bool strip_leading_space; /* SPM: drop the space the encoder added at the start */
} kr_tok_decode_opts;

/* Defaults: render_special false; strip_leading_space true for SPM vocabs
 * whose encoder adds a leading space. Passing opts = NULL means these. */
kr_tok_decode_opts kr_tokenizer_decode_defaults(const kr_tokenizer *tok);

/* Decode ids into bytes (not NUL-terminated). *n_out is always the full
 * length; when it exceeds cap, out holds the first cap bytes and KR_ERR_RANGE
 * is returned (out may be NULL with cap 0). An id outside [0, n_vocab) is
 * KR_ERR_RANGE too, with a message naming it and its position; *n_out is 0. */
kr_status kr_tokenizer_decode(const kr_tokenizer *tok, const int32_t *ids, size_t n,
                              const kr_tok_decode_opts *opts, char *out, size_t cap,
                              size_t *n_out, kr_err *err);

/* Bytes of one token as decode would write them (no leading-space strip). */
kr_status kr_tokenizer_token_bytes(const kr_tokenizer *tok, int32_t id, bool render_special,
                                   char *out, size_t cap, size_t *n_out, kr_err *err);

/* ---- Streaming detokenizer: push ids one at a time, receive text that never
 * ends inside a UTF-8 sequence. Bytes that cannot start/continue a valid
 * sequence are passed through as they are (they can never become valid);
 * only a valid but incomplete tail (at most 3 bytes) is held back. ---- */
typedef struct kr_detok kr_detok;

/* opts NULL: render_special false, strip_leading_space false (the first pushed
 * token is usually a continuation of the prompt). The tokenizer must outlive it. */
kr_status kr_detok_new(const kr_tokenizer *tok, const kr_tok_decode_opts *opts, kr_detok **out,
                       kr_err *err);
/* Push one id; text and len receive the bytes now complete (possibly 0 bytes).
 * *text stays valid until the next call on d. Out-of-range id: KR_ERR_RANGE,
 * state unchanged. */
kr_status kr_detok_push(kr_detok *d, int32_t id, const char **text, size_t *len, kr_err *err);
/* End of stream: returns whatever is held back (an incomplete sequence as raw
 * bytes) and resets. */
kr_status kr_detok_flush(kr_detok *d, const char **text, size_t *len, kr_err *err);
void kr_detok_free(kr_detok *d); /* NULL ok */

#ifdef __cplusplus
}
#endif
#endif
