/* Chat templates: recognise the common families from a model's
 * tokenizer.chat_template (Jinja source) by distinctive substrings, as
 * llama.cpp does — no Jinja interpreter — and format one user message (plus
 * an optional system message) followed by the assistant generation prompt.
 *
 * The returned text never contains BOS; the caller adds it according to the
 * tokenizer's add-BOS flag. Tokenize it with special-token parsing on (the
 * markers such as <|im_start|> are special tokens).
 */
#ifndef KERNRUN_CHAT_H
#define KERNRUN_CHAT_H

#include <stddef.h>

#include "kernrun/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kr_chat_kind {
    KR_CHAT_UNKNOWN = 0,
    KR_CHAT_CHATML,            /* <|im_start|>user\n..<|im_end|>\n<|im_start|>assistant\n (SmolLM2, Qwen, Hermes) */
    KR_CHAT_LLAMA2,            /* [INST] .. [/INST] (Mistral v0.1/v0.2, no system block) */
    KR_CHAT_LLAMA2_SYS,        /* [INST] <<SYS>>\n..\n<</SYS>>\n\n.. [/INST] */
    KR_CHAT_LLAMA2_SYS_STRIP,  /* same, message stripped (Llama-2-chat: content.strip()) */
    KR_CHAT_MISTRAL_V1,        /* " [INST] .. [/INST]" */
    KR_CHAT_MISTRAL_V3,        /* "[INST] ..[/INST]" */
    KR_CHAT_MISTRAL_V3_TEKKEN, /* "[INST]..[/INST]" */
    KR_CHAT_MISTRAL_V7,        /* [SYSTEM_PROMPT] ..[/SYSTEM_PROMPT][INST] ..[/INST] */
    KR_CHAT_LLAMA3,            /* <|start_header_id|>user<|end_header_id|>\n\n..<|eot_id|>... */
    KR_CHAT_ZEPHYR,            /* <|user|>\n..EOS\n<|assistant|>\n */
    KR_CHAT_FALCON3,           /* <|user|>\n..\n<|assistant|>\n */
    KR_CHAT_GEMMA,             /* <start_of_turn>user\n..<end_of_turn>\n<start_of_turn>model\n */
    KR_CHAT_PHI3,              /* <|user|>\n..<|end|>\n<|assistant|>\n */
    KR_CHAT_KIND_COUNT
} kr_chat_kind;

/* Family of a template source (len bytes, need not be NUL-terminated). */
kr_chat_kind kr_chat_detect(const char *tmpl, size_t len);
/* "chatml", "llama2", "llama2-sys", "llama2-sys-strip", "mistral-v1",
 * "mistral-v3", "mistral-v3-tekken", "mistral-v7", "llama3", "zephyr",
 * "falcon3", "gemma", "phi3"; "unknown". */
const char *kr_chat_kind_name(kr_chat_kind k);
/* Name -> kind (for a --chat-template override). KR_ERR_NOT_FOUND lists the names. */
kr_status kr_chat_kind_from_name(const char *name, kr_chat_kind *out, kr_err *err);

/* Format system (may be NULL: none) + user + generation prompt. eos is the
 * EOS token's text (Zephyr closes turns with it; NULL = "</s>"). *out is
 * malloc'd, NUL-terminated; free() it. */
kr_status kr_chat_format(kr_chat_kind kind, const char *system, const char *user, const char *eos, char **out,
                         kr_err *err);

/* The system message a template inserts by itself when the conversation has
 * none (ChatML templates with "messages[0]['role'] != 'system'", such as
 * SmolLM2's). *out = NULL when there is none; else malloc'd. */
kr_status kr_chat_default_system(const char *tmpl, size_t len, char **out, kr_err *err);

/* Detect + default system + format. An unrecognised template is
 * KR_ERR_UNSUPPORTED with a message naming the supported families; a NULL or
 * empty template is KR_ERR_NOT_FOUND. system NULL = the template's default. */
kr_status kr_chat_apply(const char *tmpl, size_t len, const char *system, const char *user, const char *eos,
                        char **out, kr_err *err);

#ifdef __cplusplus
}
#endif
#endif
