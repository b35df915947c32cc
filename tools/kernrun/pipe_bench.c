/* `kernrun bench`: prefill and decode speed of a model on the CUDA or CPU path.
 *
 * Decode GB/s counts the bytes one decode step must read: every weight
 * matrix, the norms and one embedding row (kr_gpu_forward_stats
 * step_weight_bytes), plus K and V of every cached position at that step
 * (kv_bytes_per_pos x (pos + 1)), averaged over the decoded tokens. It is
 * compared with a device-to-device copy measured in the same run (bytes
 * read + written per second, as bench-decode-matvec and docs/KERNELS.md).
 *
 * --profile (CUDA): after the timed decode, KR__PROF_STEPS more steps run as
 * eager launches with CUDA events around each (kr_gpu_forward_profile); the
 * per-kernel times of one step are printed sorted, with % of the step. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "app.h"
#include "kernrun/backend.h"
#include "kernrun/builtin_model.h"
#include "kernrun/log.h"
#include "kernrun/model.h"
#include "kr_gpu_forward.h"
#include "pipelines.h"

#define KR__DOM "bench"

static const char g_usage[] =
    "usage: kernrun bench -m FILE [-p N] [-n N] [--backend cuda|cpu|auto] [--json]\n"
    "                     [--no-graph] [--no-q8] [--no-fuse] [--no-repack] [--no-fused-ops]\n"
    "                     [--attn-splits N] [-t N] [--profile] [--tuning SPEC] [--variants LIST]\n"
    "                     [--no-batch-prefill] [--n-batch N] [--kv-type f16|q8_0] [--weights native|f16]\n"
    "\n"
    "Prefill and decode tokens/s of a model (random token ids, no sampling).\n"
    "On CUDA also: achieved GB/s of decode (weights + KV cache read per token),\n"
    "that as a fraction of a device-to-device copy measured in the same run, and\n"
    "kernel launches per decoded token. Prefill on CUDA runs in batches (tensor-core\n"
    "GEMMs + flash attention, llama/mistral) unless --no-batch-prefill.\n"
    "\n"
    "  -m, --model FILE  GGUF model (e.g. from `kernrun mkmodel --arch llama --preset 7b`)\n"
    "  -p N              prompt tokens (default 512; 0 skips prefill)\n"
    "  -n N              decoded tokens (default 128)\n"
    "  --backend B       cuda, cpu or auto (default auto: cuda when a device is usable)\n"
    "  --json            one JSON object on stdout instead of the table\n"
    "  --no-graph        eager kernel launches instead of a CUDA graph per step\n"
    "  --no-q8           fp32 activations for every matvec (default: 8-bit for Q4_0/Q8_0)\n"
    "  --no-fuse         separate q/k/v and gate/up matvecs (default: one each where types match)\n"
    "  --no-repack       keep GGML's Q4_0/Q8_0 blocks (kr_dec_matvec_q8) instead of the repacked kernels\n"
    "  --no-fused-ops    separate add/rmsnorm/quantize and swiglu/quantize launches\n"
    "  --attn-splits N   split-K chunks of the decode attention (default: about 2 blocks per SM)\n"
    "  --no-batch-prefill (cuda) prompt token by token through the decode step instead of batched\n"
    "                    tensor-core prefill (docs/PREFILL.md)\n"
    "  --n-batch N       (cuda) prompt tokens per batched prefill chunk at most (default 2048)\n"
    "  --kv-type T       (cuda) KV cache rows: f16 (default) or q8_0 (docs/KVCACHE.md)\n"
    "  --weights W       (cuda) weight storage: native (as in the file) or f16 (every matrix converted\n"
    "                    to fp16 at load); default: [runtime] weights (native); the CPU ignores it\n"
    "  -t N              CPU threads (cpu backend; default: online CPUs, max 16)\n"
    "  --profile         (cuda) per-kernel GPU time of one decode step: eager launches timed\n"
    "                    with CUDA events, grouped by kernel and matrix, averaged over 8 steps\n"
    "  --tuning SPEC     (cuda) decode-step variant, kr_gpu_forward_set_tuning syntax, e.g.\n"
    "                    \"pdl=0,mv4=v1\" or \"old\" (docs/GPU-FORWARD.md)\n"
    "  --variants LIST   (cuda) after the timed decode, decode the same -n tokens again for each\n"
    "                    ';'-separated SPEC (applied on top of the default) and print one\n"
    "                    'variant' line each: the same model load and prefill for all\n"
    "\n"
    "Exit status: 0 ok, 1 error, 2 usage error.\n";

typedef struct kr__bench_opts {
    const char *model;
    long p, n, threads, attn_splits, n_batch;
    const char *backend; /* cuda | cpu | auto */
    const char *tuning;   /* --tuning SPEC or NULL */
    const char *variants; /* --variants LIST or NULL */
    const char *kv_type;  /* --kv-type T or NULL */
    const char *weights;  /* --weights W or NULL ([runtime] weights) */
    bool json, no_graph, no_q8, no_fuse, no_repack, no_fused_ops, profile;
    bool no_batch_prefill;
} kr__bench_opts;

#define KR__PROF_STEPS 8
#define KR__PROF_MAX 64 /* labels kept */

typedef struct kr__bench_res {
    char device[256];
    const char *backend;
    char wtype[32];
    double load_s, upload_s;
    double prefill_s, decode_s;
    double copy_gbs;          /* 0: not measured */
    uint64_t weight_bytes;    /* weights on the device (or in the file for cpu) */
    double bytes_per_tok;     /* average bytes read per decoded token */
    uint32_t launches;        /* per decoded token (0 on cpu) */
    bool graph;
    uint32_t prefill_batched;  /* prompt tokens that ran as a batched prefill (cuda) */
    bool weights_f16;          /* cuda: matrices stored as fp16 (--weights f16) */
    uint32_t n_converted;      /* cuda: weights converted to fp16 at load */
    kr_gpu_forward_prof_op prof[KR__PROF_MAX]; /* --profile: sorted by time */
    size_t n_prof;            /* entries in prof (0: no profile) */
    size_t n_prof_labels;     /* distinct labels (may exceed KR__PROF_MAX) */
    double prof_step_ms;      /* eager step, first to last event */
    uint32_t prof_pos;        /* position of the first profiled step */
} kr__bench_res;

static double kr__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool kr__parse_count(const char *s, long lo, long hi, long *out)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

static int kr__usage_err(const char *msg, const char *arg)
{
    fprintf(stderr, "kernrun bench: %s%s%s\n(see `kernrun help bench`)\n", msg, arg ? ": " : "", arg ? arg : "");
    return 2;
}

static int kr__parse(int argc, char **argv, kr__bench_opts *o, bool *help)
{
    *o = (kr__bench_opts){.p = 512, .n = 128, .backend = "auto"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
#define KR__NEED()                                   \
        if (!v)                                      \
            return kr__usage_err("missing value", a); \
        i++;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            *help = true;
            return 0;
        } else if (!strcmp(a, "-m") || !strcmp(a, "--model")) {
            KR__NEED()
            o->model = v;
        } else if (!strcmp(a, "-p")) {
            KR__NEED()
            if (!kr__parse_count(v, 0, 1 << 20, &o->p))
                return kr__usage_err("-p wants a count in 0..1048576", v);
        } else if (!strcmp(a, "-n")) {
            KR__NEED()
            if (!kr__parse_count(v, 1, 1 << 20, &o->n))
                return kr__usage_err("-n wants a count in 1..1048576", v);
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            KR__NEED()
            if (!kr__parse_count(v, 1, 1024, &o->threads))
                return kr__usage_err("-t wants a count in 1..1024", v);
        } else if (!strcmp(a, "--backend")) {
            KR__NEED()
            if (strcasecmp(v, "cuda") && strcasecmp(v, "cpu") && strcasecmp(v, "auto"))
                return kr__usage_err("--backend wants cuda, cpu or auto", v);
            o->backend = v;
        } else if (!strcmp(a, "--json")) {
            o->json = true;
        } else if (!strcmp(a, "--no-graph")) {
            o->no_graph = true;
        } else if (!strcmp(a, "--no-q8")) {
            o->no_q8 = true;
        } else if (!strcmp(a, "--no-fuse")) {
            o->no_fuse = true;
        } else if (!strcmp(a, "--no-repack")) {
            o->no_repack = true;
        } else if (!strcmp(a, "--no-fused-ops")) {
            o->no_fused_ops = true;
        } else if (!strcmp(a, "--profile")) {
            o->profile = true;
        } else if (!strcmp(a, "--tuning")) {
            KR__NEED()
            o->tuning = v;
        } else if (!strcmp(a, "--variants")) {
            KR__NEED()
            o->variants = v;
        } else if (!strcmp(a, "--attn-splits")) {
            KR__NEED()
            if (!kr__parse_count(v, 1, 1024, &o->attn_splits))
                return kr__usage_err("--attn-splits wants a count in 1..1024", v);
        } else if (!strcmp(a, "--kv-type")) {
            KR__NEED()
            o->kv_type = v;
        } else if (!strcmp(a, "--weights")) {
            KR__NEED()
            kr_dtype wt;
            if (kr_gpu_forward_weights_parse(v, &wt, NULL) != KR_OK)
                return kr__usage_err("--weights wants native or f16", v);
            o->weights = v;
        } else if (!strcmp(a, "--no-batch-prefill")) {
            o->no_batch_prefill = true;
        } else if (!strcmp(a, "--n-batch")) {
            KR__NEED()
            if (!kr__parse_count(v, 1, 65535, &o->n_batch))
                return kr__usage_err("--n-batch wants a count in 1..65535", v);
        } else {
            return kr__usage_err("unknown argument", a);
        }
#undef KR__NEED
    }
    if (!o->model)
        return kr__usage_err("-m FILE is required", NULL);
    return 0;
}

static int kr__fail(const char *what, const kr_err *e, kr_status st)
{
    fprintf(stderr, "kernrun bench: %s: %s\n", what, kr_err_msg(e, st));
    return 1;
}

/* Deterministic pseudo-random token ids in [0, n_vocab). */
static void kr__tokens(int32_t *t, size_t n, int32_t n_vocab)
{
    uint64_t s = 0x9E3779B97F4A7C15ull;
    for (size_t i = 0; i < n; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        t[i] = (int32_t)(s % (uint64_t)n_vocab);
    }
}

/* Device-to-device copy bandwidth (read + write bytes per second), best of 3
 * rounds of 10 copies of up to 512 MiB, timed with events. */
static kr_status kr__copy_bw(kr_backend *be, double *gbs, kr_err *err)
{
    size_t bytes = (size_t)512 << 20;
    uint64_t free_b = 0, total_b = 0;
    if (kr_backend_mem_info(be, &free_b, &total_b, NULL) == KR_OK && free_b / 4 < bytes)
        bytes = (size_t)(free_b / 4) & ~(size_t)0xFFFFF;
    if (bytes < ((size_t)1 << 20))
        return kr_err_set(err, KR_ERR_NOMEM, "too little device memory for the copy benchmark");
    kr_buffer *a = NULL, *b = NULL;
    kr_stream *s = NULL;
    kr_event *e0 = NULL, *e1 = NULL;
    kr_status st;
    if ((st = kr_backend_alloc(be, bytes, &a, err)) != KR_OK)
        goto out;
    if ((st = kr_backend_alloc(be, bytes, &b, err)) != KR_OK)
        goto out;
    if ((st = kr_backend_stream_create(be, &s, err)) != KR_OK || (st = kr_backend_event_create(be, &e0, err)) != KR_OK ||
        (st = kr_backend_event_create(be, &e1, err)) != KR_OK)
        goto out;
    if ((st = kr_backend_memset(be, a->ptr, 1, bytes, s, err)) != KR_OK ||
        (st = kr_backend_d2d(be, b->ptr, a->ptr, bytes, s, err)) != KR_OK) /* warm-up */
        goto out;
    double best = 0;
    for (int round = 0; round < 3; round++) {
        if ((st = kr_backend_event_record(be, e0, s, err)) != KR_OK)
            goto out;
        for (int i = 0; i < 10; i++)
            if ((st = kr_backend_d2d(be, (i & 1) ? a->ptr : b->ptr, (i & 1) ? b->ptr : a->ptr, bytes, s, err)) !=
                KR_OK)
                goto out;
        float ms = 0;
        if ((st = kr_backend_event_record(be, e1, s, err)) != KR_OK ||
            (st = kr_backend_event_elapsed(be, e0, e1, &ms, err)) != KR_OK)
            goto out;
        double v = ms > 0 ? 2.0 * 10.0 * (double)bytes / ((double)ms * 1e-3) / 1e9 : 0;
        if (v > best)
            best = v;
    }
    *gbs = best;
    st = kr_backend_sync(be, s, err);
out:
    kr_backend_event_destroy(be, e1);
    kr_backend_event_destroy(be, e0);
    kr_backend_stream_destroy(be, s);
    kr_backend_free(be, b);
    kr_backend_free(be, a);
    return st;
}

/* --variants: for each ';'-separated spec, default + spec, one warm-up step
 * (graph capture), then the same n tokens at pos .. pos+n-1; one line each. */
static int kr__variants(const kr__bench_opts *o, kr_gpu_forward *g, const int32_t *toks, uint32_t pos,
                        float *logits)
{
    kr_err e;
    kr_err_clear(&e);
    kr_status st;
    kr_gpu_forward_stats gs;
    kr_gpu_forward_get_stats(g, &gs);
    double bytes = (double)gs.step_weight_bytes + (double)gs.kv_bytes_per_pos * ((double)pos + ((double)o->n + 1) / 2.0);
    const char *p = o->variants;
    while (*p) {
        size_t n = strcspn(p, ";");
        char spec[256];
        snprintf(spec, sizeof spec, "%.*s", (int)(n < sizeof spec - 1 ? n : sizeof spec - 1), p);
        p += n;
        if (*p == ';')
            p++;
        if (!spec[0])
            continue;
        if ((st = kr_gpu_forward_set_tuning(g, "default", &e)) != KR_OK ||
            (st = kr_gpu_forward_set_tuning(g, spec, &e)) != KR_OK) {
            fprintf(stderr, "kernrun bench: variant '%s': %s\n", spec, kr_err_msg(&e, st));
            return 1;
        }
        if ((st = kr_gpu_forward_eval(g, &toks[o->p], 1, pos, logits, &e)) != KR_OK)
            return kr__fail("variant warm-up", &e, st);
        double t0 = kr__now();
        for (long i = 0; i < o->n; i++)
            if ((st = kr_gpu_forward_eval(g, &toks[o->p + i], 1, pos + (uint32_t)i, logits, &e)) != KR_OK)
                return kr__fail("variant decode", &e, st);
        double dt = kr__now() - t0;
        kr_gpu_forward_get_stats(g, &gs);
        double tps = dt > 0 ? (double)o->n / dt : 0;
        printf("variant %-44s %8.2f tok/s %7.4f ms/tok %7.1f GB/s launches %u%s\n", spec, tps,
               tps > 0 ? 1e3 / tps : 0, tps * bytes / 1e9, gs.launches_per_token, gs.graph ? "" : " (eager)");
        fflush(stdout);
    }
    if ((st = kr_gpu_forward_set_tuning(g, "default", &e)) != KR_OK)
        return kr__fail("restoring the default variant", &e, st);
    if (o->tuning && (st = kr_gpu_forward_set_tuning(g, o->tuning, &e)) != KR_OK)
        return kr__fail("--tuning", &e, st);
    return 0;
}

static int kr__bench_cuda(const kr__bench_opts *o, kr_model *m, kr_backend *be, const int32_t *toks,
                          kr__bench_res *r)
{
    kr_err e;
    kr_err_clear(&e);
    kr_status st;
    const kr_device_info *di = kr_backend_device_info(be);
    snprintf(r->device, sizeof r->device, "%s", di ? di->name : "cuda");
    r->backend = "cuda";
    if ((st = kr__copy_bw(be, &r->copy_gbs, &e)) != KR_OK)
        return kr__fail("copy bandwidth", &e, st);

    kr_gpu_forward_params gp = kr_gpu_forward_params_default();
    gp.n_ctx = (uint32_t)(o->p + o->n + 1 + (o->profile ? KR__PROF_STEPS : 0));
    gp.no_graph = o->no_graph;
    gp.no_q8 = o->no_q8;
    gp.no_fuse = o->no_fuse;
    gp.no_repack = o->no_repack;
    gp.no_fused_ops = o->no_fused_ops;
    gp.attn_splits = (int)o->attn_splits;
    gp.no_batch_prefill = o->no_batch_prefill;
    gp.n_batch = (uint32_t)o->n_batch;
    if (o->kv_type && (st = kr_kv_type_parse(o->kv_type, &gp.kv_type, &e)) != KR_OK)
        return kr__fail("--kv-type", &e, st);
    if (o->weights && (st = kr_gpu_forward_weights_parse(o->weights, &gp.weights, &e)) != KR_OK)
        return kr__fail("--weights", &e, st);
    kr_gpu_forward *g = NULL;
    if ((st = kr_gpu_forward_new(m, be, &gp, &g, &e)) != KR_OK)
        return kr__fail("loading onto the GPU", &e, st);
    int rc = 1;
    if (o->tuning && (st = kr_gpu_forward_set_tuning(g, o->tuning, &e)) != KR_OK) {
        rc = kr__fail("--tuning", &e, st);
        kr_gpu_forward_free(g);
        return rc;
    }
    int32_t nv = kr_model_n_vocab(m);
    float *logits = malloc((size_t)nv * sizeof(float));
    if (!logits) {
        fprintf(stderr, "kernrun bench: out of memory\n");
        goto out;
    }
    /* warm-up: first step (graph capture), then rewind; with batched prefill also
     * the whole prompt once (JIT, first launches, prefill buffers not timed) */
    if ((st = kr_gpu_forward_eval(g, toks, 1, 0, logits, &e)) != KR_OK ||
        (o->p > 1 && !o->no_batch_prefill &&
         (st = kr_gpu_forward_eval(g, toks, (size_t)o->p, 0, logits, &e)) != KR_OK)) {
        rc = kr__fail("warm-up step", &e, st);
        goto out;
    }
    uint32_t pos = 0;
    if (o->p > 0) {
        double t0 = kr__now();
        if ((st = kr_gpu_forward_eval(g, toks, (size_t)o->p, 0, logits, &e)) != KR_OK) {
            rc = kr__fail("prefill", &e, st);
            goto out;
        }
        r->prefill_s = kr__now() - t0;
        pos = (uint32_t)o->p;
        kr_gpu_forward_stats ps;
        kr_gpu_forward_get_stats(g, &ps);
        r->prefill_batched = ps.batched_tokens;
    }
    double t0 = kr__now();
    for (long i = 0; i < o->n; i++) {
        if ((st = kr_gpu_forward_eval(g, &toks[o->p + i], 1, pos + (uint32_t)i, logits, &e)) != KR_OK) {
            rc = kr__fail("decode", &e, st);
            goto out;
        }
    }
    r->decode_s = kr__now() - t0;
    if (o->variants && (rc = kr__variants(o, g, toks, pos, logits)) != 0)
        goto out;
    rc = 1;
    if (o->profile) {
        r->prof_pos = pos + (uint32_t)o->n;
        if ((st = kr_gpu_forward_profile(g, toks, KR__PROF_STEPS, r->prof_pos, r->prof, KR__PROF_MAX,
                                         &r->n_prof_labels, &r->prof_step_ms, &e)) != KR_OK) {
            rc = kr__fail("profile", &e, st);
            goto out;
        }
        r->n_prof = r->n_prof_labels < KR__PROF_MAX ? r->n_prof_labels : KR__PROF_MAX;
    }
    kr_gpu_forward_stats gs;
    kr_gpu_forward_get_stats(g, &gs);
    r->weight_bytes = gs.weight_bytes;
    r->upload_s = gs.upload_s;
    r->weights_f16 = gs.weights == KR_DTYPE_F16;
    r->n_converted = gs.n_converted;
    r->launches = gs.launches_per_token;
    r->graph = gs.graph;
    /* average over positions pos .. pos+n-1 of weights + (position+1) cached K/V rows */
    r->bytes_per_tok = (double)gs.step_weight_bytes + (double)gs.kv_bytes_per_pos * ((double)pos + ((double)o->n + 1) / 2.0);
    rc = 0;
out:
    free(logits);
    kr_gpu_forward_free(g);
    return rc;
}

static int kr__bench_cpu(const kr__bench_opts *o, kr_model *m, const int32_t *toks, kr__bench_res *r)
{
    kr_err e;
    kr_err_clear(&e);
    kr_status st;
    r->backend = "cpu";
    snprintf(r->device, sizeof r->device, "cpu");
    kr_context_params cp = kr_context_params_default();
    cp.n_ctx = (uint32_t)(o->p + o->n + 1);
    if (o->threads > 0)
        cp.n_threads = (int)o->threads;
    kr_context *c = NULL;
    if ((st = kr_context_new(m, &cp, &c, &e)) != KR_OK)
        return kr__fail("context", &e, st);
    snprintf(r->device, sizeof r->device, "cpu (%d threads)", kr_context_n_threads(c));
    int rc = 1;
    int32_t nv = kr_model_n_vocab(m);
    float *logits = malloc((size_t)nv * sizeof(float));
    if (!logits)
        goto out;
    uint32_t pos = 0;
    if (o->p > 0) {
        double t0 = kr__now();
        if ((st = kr_model_eval(c, toks, (size_t)o->p, 0, logits, &e)) != KR_OK) {
            rc = kr__fail("prefill", &e, st);
            goto out;
        }
        r->prefill_s = kr__now() - t0;
        pos = (uint32_t)o->p;
    }
    double t0 = kr__now();
    for (long i = 0; i < o->n; i++)
        if ((st = kr_model_eval(c, &toks[o->p + i], 1, pos + (uint32_t)i, logits, &e)) != KR_OK) {
            rc = kr__fail("decode", &e, st);
            goto out;
        }
    r->decode_s = kr__now() - t0;
    const kr_hparams *hp = kr_model_hparams(m);
    double kv_pos = 2.0 * hp->n_layer * hp->n_head_kv * hp->head_dim * 4.0; /* F32 cache */
    r->weight_bytes = kr_model_weight_bytes(m);
    r->bytes_per_tok = (double)r->weight_bytes + kv_pos * ((double)pos + ((double)o->n + 1) / 2.0);
    rc = 0;
out:
    free(logits);
    kr_context_free(c);
    return rc;
}

static void kr__print(const kr__bench_opts *o, const kr_model *m, const kr__bench_res *r)
{
    const kr_hparams *hp = kr_model_hparams(m);
    double dec_tps = r->decode_s > 0 ? (double)o->n / r->decode_s : 0;
    double pre_tps = r->prefill_s > 0 ? (double)o->p / r->prefill_s : 0;
    double gbs = dec_tps * r->bytes_per_tok / 1e9;
    double frac = r->copy_gbs > 0 ? gbs / r->copy_gbs : 0;
    if (o->json) {
        printf("{\"model\":\"%s\",\"arch\":\"%s\",\"type\":\"%s\",\"n_layer\":%u,\"n_embd\":%u,\"backend\":\"%s\","
               "\"device\":\"%s\",\"weight_bytes\":%" PRIu64 ",\"load_s\":%.3f,\"upload_s\":%.3f,\"p\":%ld,\"n\":%ld,"
               "\"prefill_tok_s\":%.2f,\"decode_tok_s\":%.2f,\"decode_ms_per_tok\":%.4f,\"bytes_per_tok\":%.0f,"
               "\"decode_gb_s\":%.1f,\"copy_gb_s\":%.1f,\"fraction_of_copy\":%.4f,\"launches_per_tok\":%u,"
               "\"graph\":%s,\"q8_activations\":%s,\"weights\":\"%s\",\"n_converted\":%u",
               o->model, kr_model_arch(m), r->wtype, hp->n_layer, hp->n_embd, r->backend, r->device,
               r->weight_bytes, r->load_s, r->upload_s, o->p, o->n, pre_tps, dec_tps,
               dec_tps > 0 ? 1e3 / dec_tps : 0, r->bytes_per_tok, gbs, r->copy_gbs, frac, r->launches,
               r->graph ? "true" : "false", (!o->no_q8 && !r->weights_f16 && !strcmp(r->backend, "cuda")) ? "true" : "false",
               r->weights_f16 ? "f16" : "native", r->n_converted);
        if (r->n_prof > 0) {
            printf(",\"profile\":{\"steps\":%d,\"pos\":%u,\"step_ms\":%.4f,\"n_labels\":%zu,\"ops\":[",
                   KR__PROF_STEPS, r->prof_pos, r->prof_step_ms, r->n_prof_labels);
            for (size_t i = 0; i < r->n_prof; i++)
                printf("%s{\"name\":\"%s\",\"calls\":%u,\"ms\":%.5f,\"pct\":%.2f}", i ? "," : "",
                       r->prof[i].name, r->prof[i].calls, r->prof[i].ms,
                       r->prof_step_ms > 0 ? 100.0 * r->prof[i].ms / r->prof_step_ms : 0.0);
            printf("]}");
        }
        printf("}\n");
        return;
    }
    printf("model     : %s (%s, %u layers, n_embd %u, %s, %.2f GiB)\n", o->model, kr_model_arch(m), hp->n_layer,
           hp->n_embd, r->wtype, (double)r->weight_bytes / 1073741824.0);
    printf("device    : %s [%s%s%s]\n", r->device, r->backend,
           !strcmp(r->backend, "cuda") ? (r->graph ? ", CUDA graph" : ", eager launches") : "",
           !strcmp(r->backend, "cuda")
               ? (o->no_q8 || r->weights_f16 ? ", fp32 activations" : ", q8 activations for Q4_0/Q8_0")
               : "");
    if (r->weights_f16)
        printf("weights   : fp16 on the device (%u matrices converted at load)\n", r->n_converted);
    printf("load      : %.2f s (file)%s", r->load_s, !strcmp(r->backend, "cuda") ? "" : "\n");
    if (!strcmp(r->backend, "cuda"))
        printf(", upload %.2f s (%.1f GB/s)\n", r->upload_s,
               r->upload_s > 0 ? (double)r->weight_bytes / r->upload_s / 1e9 : 0);
    if (o->p > 0)
        printf("prefill   : %ld tokens, %.2f tok/s%s\n", o->p, pre_tps,
               strcmp(r->backend, "cuda") ? ""
               : r->prefill_batched == (uint32_t)o->p ? " (batched: tensor-core GEMMs + flash attention)"
               : r->prefill_batched ? " (partly batched)" : " (token by token through the decode step)");
    printf("decode    : %ld tokens, %.2f tok/s (%.3f ms/token)\n", o->n, dec_tps, dec_tps > 0 ? 1e3 / dec_tps : 0);
    printf("decode bw : %.1f GB/s (%.1f MiB read per token: weights + KV)\n", gbs, r->bytes_per_tok / 1048576.0);
    if (r->copy_gbs > 0) {
        printf("copy bw   : %.1f GB/s (device-to-device, read+write)\n", r->copy_gbs);
        printf("fraction  : %.1f%% of copy bandwidth\n", 100.0 * frac);
        printf("launches  : %u per decoded token\n", r->launches);
    }
    if (r->n_prof > 0) {
        printf("profile   : eager step at positions %u..%u, mean of %d: %.3f ms from first to last launch "
               "(timed decode: %.3f ms/token)\n",
               r->prof_pos, r->prof_pos + KR__PROF_STEPS - 1, KR__PROF_STEPS, r->prof_step_ms,
               dec_tps > 0 ? 1e3 / dec_tps : 0);
        printf("  %-48s %6s %10s %7s\n", "kernel", "calls", "ms/step", "%");
        for (size_t i = 0; i < r->n_prof; i++)
            printf("  %-48s %6u %10.4f %6.2f%%\n", r->prof[i].name, r->prof[i].calls, r->prof[i].ms,
                   r->prof_step_ms > 0 ? 100.0 * r->prof[i].ms / r->prof_step_ms : 0.0);
        if (r->n_prof_labels > r->n_prof)
            printf("  (%zu more labels not shown)\n", r->n_prof_labels - r->n_prof);
    }
}

static int run_bench(kr_app *app, int argc, char **argv)
{
    kr__bench_opts o;
    bool help = false;
    int prc = kr__parse(argc, argv, &o, &help);
    if (prc)
        return prc;
    if (help) {
        fputs(g_usage, stdout);
        return 0;
    }
    if (!o.weights) { /* [runtime] weights (config file or KERNRUN_RUNTIME_WEIGHTS) */
        kr_config *cfg = kr_app_config(app);
        if (!cfg)
            return 1; /* the driver printed why */
        o.weights = kr_config_get(cfg, "runtime", "weights");
    }
    kr_err e;
    kr_err_clear(&e);
    kr_status st;
    kr__bench_res r;
    memset(&r, 0, sizeof r);
    int rc = 1;
    kr_model *m = NULL;
    kr_backend *be = NULL;
    int32_t *toks = NULL;

    double t0 = kr__now();
    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    if ((st = kr_model_load(o.model, &mp, &m, &e)) != KR_OK)
        return kr__fail("loading the model", &e, st);
    r.load_s = kr__now() - t0;
    const kr_weight *wq = kr_model_weight(m, "blk.0.attn_q.weight");
    if (!wq)
        wq = kr_model_weight(m, "blk.0.attn_qkv.weight");
    snprintf(r.wtype, sizeof r.wtype, "%s", wq ? kr_dtype_name(wq->type) : "?");
    if (o.p + o.n + 1 > (long)kr_model_n_ctx_train(m) && kr_model_n_ctx_train(m) > 0)
        KR_LOGW(KR__DOM, "p + n = %ld exceeds the model's training context %u", o.p + o.n,
                kr_model_n_ctx_train(m));
    toks = malloc((size_t)(o.p + o.n) * sizeof *toks);
    if (!toks) {
        fprintf(stderr, "kernrun bench: out of memory\n");
        goto out;
    }
    kr__tokens(toks, (size_t)(o.p + o.n), kr_model_n_vocab(m));

    bool want_cuda = strcasecmp(o.backend, "cpu") != 0;
    if (want_cuda) {
        st = kr_backend_create(KR_BACKEND_CUDA, 0, &be, &e);
        kr_gpu_forward_params cp0 = kr_gpu_forward_params_default(); /* --weights f16 converts more types */
        if (o.weights && kr_gpu_forward_weights_parse(o.weights, &cp0.weights, NULL) != KR_OK)
            cp0.weights = KR_DTYPE_F32;
        if (st == KR_OK)
            st = kr_gpu_forward_check_params(m, &cp0, &e);
        if (st != KR_OK) {
            if (strcasecmp(o.backend, "cuda") == 0) {
                rc = kr__fail("--backend cuda", &e, st);
                goto out;
            }
            KR_LOGI(KR__DOM, "backend auto: CUDA not usable (%s); using the CPU", kr_err_msg(&e, st));
            kr_backend_destroy(be);
            be = NULL;
        }
    }
    if (!be && o.profile)
        KR_LOGW(KR__DOM, "--profile needs the cuda backend; no profile on the CPU");
    if (!be && o.weights && strcasecmp(o.weights, "native") != 0)
        KR_LOGW(KR__DOM, "weights %s: ignored on the CPU (it computes from the file's weights)", o.weights);
    rc = be ? kr__bench_cuda(&o, m, be, toks, &r) : kr__bench_cpu(&o, m, toks, &r);
    if (rc == 0)
        kr__print(&o, m, &r);
out:
    free(toks);
    kr_backend_destroy(be);
    kr_model_free(m);
    return rc;
}

const kr_cli_pipeline kr_pipe_bench = {
    .name = "bench",
    .summary = "prefill/decode tokens/s, decode GB/s vs copy bandwidth, launches per token",
    .usage = g_usage,
    .run = run_bench,
};
