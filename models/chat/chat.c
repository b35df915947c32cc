/* Chat template detection and formatting; see kernrun/chat.h. */
#include "kernrun/chat.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const g_names[KR_CHAT_KIND_COUNT] = {
    [KR_CHAT_UNKNOWN] = "unknown",
    [KR_CHAT_CHATML] = "chatml",
    [KR_CHAT_LLAMA2] = "llama2",
    [KR_CHAT_LLAMA2_SYS] = "llama2-sys",
    [KR_CHAT_LLAMA2_SYS_STRIP] = "llama2-sys-strip",
    [KR_CHAT_MISTRAL_V1] = "mistral-v1",
    [KR_CHAT_MISTRAL_V3] = "mistral-v3",
    [KR_CHAT_MISTRAL_V3_TEKKEN] = "mistral-v3-tekken",
    [KR_CHAT_MISTRAL_V7] = "mistral-v7",
    [KR_CHAT_LLAMA3] = "llama3",
    [KR_CHAT_ZEPHYR] = "zephyr",
    [KR_CHAT_FALCON3] = "falcon3",
    [KR_CHAT_GEMMA] = "gemma",
    [KR_CHAT_PHI3] = "phi3",
};

#define KR__SUPPORTED "chatml, llama2, llama2-sys, llama2-sys-strip, mistral-v1, mistral-v3, " \
                      "mistral-v3-tekken, mistral-v7, llama3, zephyr, falcon3, gemma, phi3"

const char *kr_chat_kind_name(kr_chat_kind k)
{
    if ((int)k < 0 || k >= KR_CHAT_KIND_COUNT)
        return "unknown";
    return g_names[k];
}

kr_status kr_chat_kind_from_name(const char *name, kr_chat_kind *out, kr_err *err)
{
    for (int k = 1; name && k < KR_CHAT_KIND_COUNT; k++)
        if (strcmp(name, g_names[k]) == 0) {
            *out = (kr_chat_kind)k;
            return KR_OK;
        }
    return kr_err_set(err, KR_ERR_NOT_FOUND, "unknown chat template name '%s' (known: " KR__SUPPORTED ")",
                      name ? name : "(null)");
}

/* Bounded substring search (the template need not be NUL-terminated). */
static const char *kr__find(const char *hay, size_t n, const char *needle)
{
    size_t m = strlen(needle);
    if (m == 0 || m > n)
        return NULL;
    for (size_t i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, m) == 0)
            return hay + i;
    return NULL;
}

static bool kr__has(const char *t, size_t n, const char *needle) { return kr__find(t, n, needle) != NULL; }

/* Zephyr closes the user turn with EOS; Falcon3 with a newline. Look at the
 * Jinja expression that prints '<|user|>' up to its closing "}}". */
static bool kr__user_turn_ends_with_eos(const char *t, size_t n)
{
    const char *p = kr__find(t, n, "<|user|>");
    while (p) {
        size_t rest = n - (size_t)(p - t);
        const char *end = kr__find(p, rest, "}}");
        size_t span = end ? (size_t)(end - p) : rest;
        if (kr__has(p, span, "eos_token") || kr__has(p, span, "<|endoftext|>") || kr__has(p, span, "</s>"))
            return true;
        p = kr__find(p + 1, rest - 1, "<|user|>");
    }
    return false;
}

kr_chat_kind kr_chat_detect(const char *t, size_t n)
{
    if (!t || n == 0)
        return KR_CHAT_UNKNOWN;
    if (kr__has(t, n, "<|im_start|>"))
        return KR_CHAT_CHATML;
    if (kr__has(t, n, "[INST]")) {
        if (kr__has(t, n, "[SYSTEM_PROMPT]"))
            return KR_CHAT_MISTRAL_V7;
        if (kr__has(t, n, "' [INST] ' + system_message") || kr__has(t, n, "[AVAILABLE_TOOLS]")) {
            if (kr__has(t, n, " [INST]"))
                return KR_CHAT_MISTRAL_V1;
            if (kr__has(t, n, "\"[INST]\""))
                return KR_CHAT_MISTRAL_V3_TEKKEN;
            return KR_CHAT_MISTRAL_V3;
        }
        if (kr__has(t, n, "content.strip()"))
            return KR_CHAT_LLAMA2_SYS_STRIP;
        if (kr__has(t, n, "<<SYS>>"))
            return KR_CHAT_LLAMA2_SYS;
        return KR_CHAT_LLAMA2;
    }
    if (kr__has(t, n, "<|assistant|>") && kr__has(t, n, "<|end|>"))
        return KR_CHAT_PHI3;
    if (kr__has(t, n, "<|start_header_id|>") && kr__has(t, n, "<|end_header_id|>"))
        return KR_CHAT_LLAMA3;
    if (kr__has(t, n, "<|user|>") && kr__has(t, n, "<|assistant|>"))
        return kr__user_turn_ends_with_eos(t, n) ? KR_CHAT_ZEPHYR : KR_CHAT_FALCON3;
    if (kr__has(t, n, "<start_of_turn>"))
        return KR_CHAT_GEMMA;
    return KR_CHAT_UNKNOWN;
}

/* ---- a tiny growable string ---- */

typedef struct kr__buf {
    char *p;    /* NUL-terminated */
    size_t n;   /* bytes used, excluding the NUL */
    size_t cap; /* bytes allocated */
    bool oom;
} kr__buf;

static void kr__put(kr__buf *b, const char *s, size_t len)
{
    if (b->oom)
        return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1) {
            if (cap > SIZE_MAX / 2) {
                b->oom = true;
                return;
            }
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void kr__puts(kr__buf *b, const char *s) { kr__put(b, s, strlen(s)); }

static bool kr__isspace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

/* Python str.strip() / Jinja trim on ASCII whitespace. */
static void kr__put_trimmed(kr__buf *b, const char *s)
{
    size_t a = 0, e = strlen(s);
    while (a < e && kr__isspace(s[a]))
        a++;
    while (e > a && kr__isspace(s[e - 1]))
        e--;
    kr__put(b, s + a, e - a);
}

kr_status kr_chat_format(kr_chat_kind kind, const char *sys, const char *user, const char *eos, char **out,
                         kr_err *err)
{
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "chat format: NULL output");
    *out = NULL;
    if (!user)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "chat format: NULL user message");
    if (!eos)
        eos = "</s>";
    kr__buf b = {0};
    switch (kind) {
    case KR_CHAT_CHATML:
        if (sys) {
            kr__puts(&b, "<|im_start|>system\n");
            kr__puts(&b, sys);
            kr__puts(&b, "<|im_end|>\n");
        }
        kr__puts(&b, "<|im_start|>user\n");
        kr__puts(&b, user);
        kr__puts(&b, "<|im_end|>\n<|im_start|>assistant\n");
        break;
    case KR_CHAT_LLAMA2:
    case KR_CHAT_LLAMA2_SYS:
    case KR_CHAT_LLAMA2_SYS_STRIP: {
        bool strip = kind == KR_CHAT_LLAMA2_SYS_STRIP;
        kr__puts(&b, "[INST] ");
        if (sys) {
            if (kind == KR_CHAT_LLAMA2) {
                kr__puts(&b, sys); /* no system block: prepend to the message */
                kr__puts(&b, "\n");
            } else {
                kr__puts(&b, "<<SYS>>\n");
                if (strip)
                    kr__put_trimmed(&b, sys);
                else
                    kr__puts(&b, sys);
                kr__puts(&b, "\n<</SYS>>\n\n");
            }
        }
        if (strip)
            kr__put_trimmed(&b, user);
        else
            kr__puts(&b, user);
        kr__puts(&b, " [/INST]");
        break;
    }
    case KR_CHAT_MISTRAL_V1:
    case KR_CHAT_MISTRAL_V3:
    case KR_CHAT_MISTRAL_V3_TEKKEN:
        kr__puts(&b, kind == KR_CHAT_MISTRAL_V1 ? " [INST]" : "[INST]");
        kr__puts(&b, kind == KR_CHAT_MISTRAL_V3_TEKKEN ? "" : " ");
        if (sys) {
            kr__puts(&b, sys);
            kr__puts(&b, "\n\n");
        }
        kr__puts(&b, user);
        kr__puts(&b, kind == KR_CHAT_MISTRAL_V1 ? " [/INST]" : "[/INST]");
        break;
    case KR_CHAT_MISTRAL_V7:
        if (sys) {
            kr__puts(&b, "[SYSTEM_PROMPT] ");
            kr__puts(&b, sys);
            kr__puts(&b, "[/SYSTEM_PROMPT]");
        }
        kr__puts(&b, "[INST] ");
        kr__puts(&b, user);
        kr__puts(&b, "[/INST]");
        break;
    case KR_CHAT_LLAMA3:
        if (sys) {
            kr__puts(&b, "<|start_header_id|>system<|end_header_id|>\n\n");
            kr__put_trimmed(&b, sys);
            kr__puts(&b, "<|eot_id|>");
        }
        kr__puts(&b, "<|start_header_id|>user<|end_header_id|>\n\n");
        kr__put_trimmed(&b, user);
        kr__puts(&b, "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n");
        break;
    case KR_CHAT_ZEPHYR:
        if (sys) {
            kr__puts(&b, "<|system|>\n");
            kr__puts(&b, sys);
            kr__puts(&b, eos);
            kr__puts(&b, "\n");
        }
        kr__puts(&b, "<|user|>\n");
        kr__puts(&b, user);
        kr__puts(&b, eos);
        kr__puts(&b, "\n<|assistant|>\n");
        break;
    case KR_CHAT_FALCON3:
        if (sys) {
            kr__puts(&b, "<|system|>\n");
            kr__puts(&b, sys);
            kr__puts(&b, "\n");
        }
        kr__puts(&b, "<|user|>\n");
        kr__puts(&b, user);
        kr__puts(&b, "\n<|assistant|>\n");
        break;
    case KR_CHAT_GEMMA:
        /* no system role: the system text opens the user turn */
        kr__puts(&b, "<start_of_turn>user\n");
        if (sys) {
            kr__put_trimmed(&b, sys);
            kr__puts(&b, "\n\n");
        }
        kr__put_trimmed(&b, user);
        kr__puts(&b, "<end_of_turn>\n<start_of_turn>model\n");
        break;
    case KR_CHAT_PHI3:
        if (sys) {
            kr__puts(&b, "<|system|>\n");
            kr__puts(&b, sys);
            kr__puts(&b, "<|end|>\n");
        }
        kr__puts(&b, "<|user|>\n");
        kr__puts(&b, user);
        kr__puts(&b, "<|end|>\n<|assistant|>\n");
        break;
    default:
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "chat format: unsupported template kind %d", (int)kind);
    }
    if (b.oom || !b.p) {
        free(b.p);
        return kr_err_set(err, KR_ERR_NOMEM, "chat format: out of memory");
    }
    *out = b.p;
    return KR_OK;
}

/* Copy a Jinja string-literal fragment, turning the escapes \n \t \\ \' \"
 * into their characters. */
static char *kr__unescape(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\\' && i + 1 < n) {
            char c = s[++i];
            o[j++] = c == 'n' ? '\n' : c == 't' ? '\t' : c;
        } else {
            o[j++] = s[i];
        }
    }
    o[j] = '\0';
    return o;
}

kr_status kr_chat_default_system(const char *t, size_t n, char **out, kr_err *err)
{
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "chat: NULL output");
    *out = NULL;
    if (!t || kr_chat_detect(t, n) != KR_CHAT_CHATML)
        return KR_OK;
    /* Only a conditional default ("... != 'system'"), not a system role that
     * the conversation itself supplies. */
    if (!kr__has(t, n, "!= 'system'") && !kr__has(t, n, "!= \"system\""))
        return KR_OK;
    static const char *const starts[] = {"<|im_start|>system\n", "<|im_start|>system\\n"};
    for (size_t k = 0; k < 2; k++) {
        const char *p = kr__find(t, n, starts[k]);
        if (!p)
            continue;
        p += strlen(starts[k]);
        size_t rest = n - (size_t)(p - t);
        const char *e = kr__find(p, rest, "<|im_end|>");
        if (!e)
            return KR_OK;
        /* A literal default, not a "' + message['content'] + '" expression. */
        size_t len = (size_t)(e - p);
        if (memchr(p, '\'', len) && kr__has(p, len, "' +"))
            return KR_OK;
        *out = kr__unescape(p, len);
        if (!*out)
            return kr_err_set(err, KR_ERR_NOMEM, "chat: out of memory");
        return KR_OK;
    }
    return KR_OK;
}

kr_status kr_chat_apply(const char *t, size_t n, const char *sys, const char *user, const char *eos, char **out,
                        kr_err *err)
{
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "chat: NULL output");
    *out = NULL;
    if (!t || n == 0)
        return kr_err_set(err, KR_ERR_NOT_FOUND, "the model has no tokenizer.chat_template");
    kr_chat_kind kind = kr_chat_detect(t, n);
    if (kind == KR_CHAT_UNKNOWN) {
        int show = n > 60 ? 60 : (int)n;
        return kr_err_set(err, KR_ERR_UNSUPPORTED,
                          "unrecognised chat template (starts \"%.*s%s\"); supported families: " KR__SUPPORTED, show,
                          t, n > 60 ? "..." : "");
    }
    char *def = NULL;
    if (!sys) {
        kr_status st = kr_chat_default_system(t, n, &def, err);
        if (st != KR_OK)
            return st;
        sys = def;
    }
    kr_status st = kr_chat_format(kind, sys, user, eos, out, err);
    free(def);
    return st;
}
