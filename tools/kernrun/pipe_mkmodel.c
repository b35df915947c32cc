/* `kernrun mkmodel`: write a synthetic GGUF model (random weights, real
 * shapes and metadata) — see tools/mkmodel/mkmodel.h and docs/QUANTS.md. */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mkmodel.h"
#include "pipelines.h"

static const char g_usage[] =
    "usage: kernrun mkmodel --arch llama|mistral|falcon --preset tiny|1b|7b\n"
    "                       --type f16|q8_0|q4_0|q4_1 -o FILE\n"
    "                       [--vocab-from VOCAB.gguf] [--seed N] [--threads N] [--layers N]\n"
    "\n"
    "Write a valid GGUF model with random weights (deterministic in --seed) and the\n"
    "preset's shapes, llama.cpp tensor names and metadata, for benchmarks and tests.\n"
    "\n"
    "  --arch A          llama, mistral or falcon\n"
    "  --preset P        tiny (2 layers, 64 dims, 4 heads, 2 KV heads, ffn 128),\n"
    "                    1b (TinyLlama-1.1B shapes), 7b (llama-2-7b, mistral-7b, falcon-7b)\n"
    "  --type T          type of the 2-D weights: f16, q8_0, q4_0, q4_1 (also f32, bf16,\n"
    "                    q5_0, q5_1, and q4_k, q5_k, q6_k for presets whose row lengths\n"
    "                    are multiples of 256: llama/mistral 1b and 7b); norms and\n"
    "                    biases are always f32\n"
    "  -o, --output FILE file to write (removed again if writing fails)\n"
    "  --vocab-from F    copy the tokenizer.* keys of this GGUF (and use its vocabulary\n"
    "                    size); default: a synthetic SentencePiece vocabulary\n"
    "                    (tiny: 256 tokens, otherwise the preset's size)\n"
    "  --seed N          random seed (default 1)\n"
    "  --threads N       generator threads (default: online CPUs - 1; the main thread writes)\n"
    "  --layers N        override the preset's layer count\n"
    "\n"
    "Exit status: 0 ok, 1 error, 2 usage error.\n";

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("kernrun mkmodel: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\n(see kernrun mkmodel --help)\n", stderr);
    va_end(ap);
    return 2;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    char *end;
    if (!s || !*s || *s == '-')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || *end)
        return false;
    *out = (uint64_t)v;
    return true;
}

static int run_mkmodel(kr_app *app, int argc, char **argv)
{
    (void)app;
    kr_mkmodel_opts o = {.seed = 1, .type = KR_DTYPE_INVALID};
    const char *type = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t u;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(g_usage, stdout);
            return 0;
        }
#define KR__NEEDV()                                              \
        if (!v)                                                  \
            return usage_error("%s needs a value", a);           \
        i++;
        if (strcmp(a, "--arch") == 0) {
            KR__NEEDV()
            o.arch = v;
        } else if (strcmp(a, "--preset") == 0) {
            KR__NEEDV()
            o.preset = v;
        } else if (strcmp(a, "--type") == 0) {
            KR__NEEDV()
            type = v;
        } else if (strcmp(a, "-o") == 0 || strcmp(a, "--output") == 0) {
            KR__NEEDV()
            o.out_path = v;
        } else if (strcmp(a, "--vocab-from") == 0) {
            KR__NEEDV()
            o.vocab_from = v;
        } else if (strcmp(a, "--seed") == 0) {
            KR__NEEDV()
            if (!parse_u64(v, &o.seed))
                return usage_error("--seed: '%s' is not a non-negative integer", v);
        } else if (strcmp(a, "--threads") == 0) {
            KR__NEEDV()
            if (!parse_u64(v, &u) || u == 0 || u > 1024)
                return usage_error("--threads: '%s' is not a count in 1..1024", v);
            o.n_threads = (int)u;
        } else if (strcmp(a, "--layers") == 0) {
            KR__NEEDV()
            if (!parse_u64(v, &u) || u == 0 || u > 4096)
                return usage_error("--layers: '%s' is not a count in 1..4096", v);
            o.n_layer = (uint32_t)u;
        } else {
            return usage_error("unknown argument '%s'", a);
        }
#undef KR__NEEDV
    }
    if (!o.arch)
        return usage_error("%s", "--arch is required (llama, mistral, falcon)");
    if (!o.preset)
        return usage_error("%s", "--preset is required (tiny, 1b, 7b)");
    if (!type)
        return usage_error("%s", "--type is required (f16, q8_0, q4_0, q4_1)");
    if (!o.out_path)
        return usage_error("%s", "-o FILE is required");
    o.type = kr_dtype_from_name(type);
    if (o.type == KR_DTYPE_INVALID || kr_mkmodel_file_type(o.type) < 0)
        return usage_error("--type: '%s' is not one of f16, q8_0, q4_0, q4_1, f32, bf16, q5_0, q5_1, q4_k, q5_k, q6_k",
                           type);
    kr_mkmodel_hparams hp;
    kr_err err = {0};
    if (kr_mkmodel_preset(o.arch, o.preset, &hp, &err) != KR_OK)
        return usage_error("%s", err.msg);

    kr_mkmodel_stats s;
    kr_status st = kr_mkmodel_write(&o, &s, &err);
    if (st != KR_OK) {
        fprintf(stderr, "kernrun mkmodel: %s\n", kr_err_msg(&err, st));
        return 1;
    }
    const double mb = (double)s.file_bytes / 1e6;
    printf("wrote %s: %s %s %s, %u tensors, %.3f B params, %.1f MB in %.2f s (%.0f MB/s)\n", o.out_path, o.arch,
           o.preset, kr_dtype_name(o.type), s.n_tensors, (double)s.n_params / 1e9, mb, s.seconds,
           s.seconds > 0 ? mb / s.seconds : 0.0);
    return 0;
}

const kr_cli_pipeline kr_pipe_mkmodel = {
    .name = "mkmodel",
    .summary = "write a synthetic GGUF model (random weights, real shapes)",
    .usage = g_usage,
    .run = run_mkmodel,
};
