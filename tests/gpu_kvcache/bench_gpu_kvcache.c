/* Benchmark (not a test) of the CUDA path's KV cache types:
 *
 *   bench-gpu-kvcache -m MODEL [--kv-types f16,q8_0] [--pos 512,2048] [-n 32] [--seqs 4]
 *
 * A type may carry the kernel set, "f16:old" / "f16:new" (KR_GKV_KERNELS for
 * that instance, gpu_kvcache.h) / "f16:newsep" (new, without the fused rope),
 * and a split count: "f16:old/s1" (params.attn_splits). The same type twice
 * (e.g. first and last) shows the drift between runs.
 *
 * Per cache type: one kr_gpu_forward with n_ctx = max pos + n; for each
 * position P: recompute = one eval of the P-token prefix from position 0 (what
 * decoding without a cache costs per token), then n decode steps at P.. (one
 * token each, logits copied back) with the cache. Prints ms/token, tok/s, the
 * recompute time and the ratio; the logits NMSE of each type against the
 * first one (same tokens); then (--seqs S > 1) the decode time per token when
 * S sequences take turns token by token (one graph per slot) vs one sequence.
 * Numbers go to docs/KVCACHE.md / docs/PERF.md. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernrun/backend.h"
#include "kernrun/builtin_model.h"
#include "kernrun/kvcache.h"
#include "kernrun/model.h"
#include "kr_gpu_forward.h"

#define MAX_T 6
#define MAX_P 8

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_list(const char *s, long *out, int cap)
{
    int n = 0;
    char *end;
    while (s && *s && n < cap) {
        out[n++] = strtol(s, &end, 10);
        if (end == s)
            return -1;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

static double nmse(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

static int fail(const char *what, const kr_err *e, kr_status st)
{
    fprintf(stderr, "bench-gpu-kvcache: %s: %s\n", what, kr_err_msg(e, st));
    return 1;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *types_s = "f16,q8_0", *pos_s = "512,2048";
    long n = 32, seqs = 4;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "-m") && v)
            model = argv[++i];
        else if (!strcmp(argv[i], "--kv-types") && v)
            types_s = argv[++i];
        else if (!strcmp(argv[i], "--pos") && v)
            pos_s = argv[++i];
        else if (!strcmp(argv[i], "-n") && v)
            n = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--seqs") && v)
            seqs = strtol(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: bench-gpu-kvcache -m MODEL [--kv-types f16,q8_0] [--pos 512,2048] [-n 32] "
                            "[--seqs 4]\n");
            return 2;
        }
    }
    long pos[MAX_P];
    int np = parse_list(pos_s, pos, MAX_P);
    if (!model || np <= 0 || n < 1 || n > 4096 || seqs < 1 || seqs > 64) {
        fprintf(stderr, "bench-gpu-kvcache: need -m MODEL, positions, 1 <= n <= 4096, 1 <= seqs <= 64\n");
        return 2;
    }
    kr_dtype types[MAX_T];
    char names[MAX_T][24], kern[MAX_T][8];
    int splits[MAX_T];
    int nt = 0;
    char tb[128];
    snprintf(tb, sizeof tb, "%s", types_s);
    kr_err e;
    kr_err_clear(&e);
    for (char *t = strtok(tb, ","); t && nt < MAX_T; t = strtok(NULL, ",")) {
        snprintf(names[nt], sizeof names[nt], "%s", t);
        char *sl = strchr(t, '/');
        splits[nt] = 0;
        if (sl) { /* "/sN": attention split count N */
            splits[nt] = (int)strtol(sl + 2, NULL, 10);
            *sl = 0;
        }
        char *colon = strchr(t, ':');
        kern[nt][0] = 0;
        if (colon) {
            *colon = 0;
            snprintf(kern[nt], sizeof kern[nt], "%s", colon + 1);
        }
        if (kr_kv_type_parse(t, &types[nt], &e) != KR_OK)
            return fail("--kv-types", &e, KR_ERR_INVALID_ARG);
        nt++;
    }
    long maxp = 0;
    for (int i = 0; i < np; i++)
        if (pos[i] > maxp)
            maxp = pos[i];
    if (maxp < 1 || maxp > (1 << 20))
        return fail("--pos", &e, kr_err_set(&e, KR_ERR_RANGE, "positions in 1..2^20"));

    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    kr_model *m = NULL;
    kr_status st = kr_model_load(model, &mp, &m, &e);
    if (st != KR_OK)
        return fail("load", &e, st);
    kr_backend *be = NULL;
    if ((st = kr_backend_create(KR_BACKEND_CUDA, 0, &be, &e)) != KR_OK) {
        kr_model_free(m);
        return fail("CUDA backend", &e, st);
    }
    const kr_device_info *di = kr_backend_device_info(be);
    size_t nv = (size_t)kr_model_n_vocab(m);
    size_t n_tok = (size_t)maxp + (size_t)n;
    int32_t *tok = malloc(n_tok * sizeof *tok);
    float *lg = malloc(nv * sizeof *lg);
    float *ref = malloc((size_t)np * (size_t)n * nv * sizeof *ref); /* first type's decode logits */
    if (!tok || !lg || !ref) {
        fprintf(stderr, "bench-gpu-kvcache: out of memory\n");
        return 1;
    }
    uint32_t s = 12345;
    for (size_t i = 0; i < n_tok; i++) {
        s = s * 1103515245u + 12345u;
        tok[i] = (int32_t)((s >> 16) % (uint32_t)nv);
    }
    printf("model %s, card %s, %ld decode tokens per point\n", model, di ? di->name : "?", n);
    printf("%-10s %6s %10s %9s %12s %9s %12s %12s %10s\n", "kv", "pos", "ms/token", "tok/s", "recompute_ms", "ratio",
           "kv_MiB", "nmse_mean", "nmse_max");
    int rc = 0;
    for (int ti = 0; ti < nt && rc == 0; ti++) {
        kr_gpu_forward_params gp = kr_gpu_forward_params_default();
        gp.n_ctx = (uint32_t)n_tok;
        gp.kv_type = types[ti];
        gp.n_seq = (uint32_t)seqs;
        gp.attn_splits = splits[ti];
        kr_gpu_forward *g = NULL;
        bool sep = strcmp(kern[ti], "newsep") == 0; /* new kernels, rope not fused into the store */
        if (kern[ti][0])
            setenv("KR_GKV_KERNELS", sep ? "new" : kern[ti], 1);
        else
            unsetenv("KR_GKV_KERNELS");
        if (sep)
            setenv("KR_GKV_FUSED_ROPE", "0", 1);
        st = kr_gpu_forward_new(m, be, &gp, &g, &e);
        unsetenv("KR_GKV_KERNELS");
        unsetenv("KR_GKV_FUSED_ROPE");
        if (st != KR_OK) {
            printf("%-8s unavailable: %s\n", names[ti], kr_err_msg(&e, st));
            continue;
        }
        kr_gpu_forward_stats gs;
        kr_gpu_forward_get_stats(g, &gs);
        for (int pi = 0; pi < np && rc == 0; pi++) {
            uint32_t P = (uint32_t)pos[pi];
            double t0 = now_s();
            if ((st = kr_gpu_forward_eval(g, tok, P, 0, lg, &e)) != KR_OK) {
                rc = fail("prefix", &e, st);
                break;
            }
            double t_re = now_s() - t0;
            double sum = 0, worst = 0;
            t0 = now_s();
            for (long i = 0; i < n; i++) {
                if ((st = kr_gpu_forward_eval(g, &tok[P + i], 1, P + (uint32_t)i, lg, &e)) != KR_OK) {
                    rc = fail("decode", &e, st);
                    break;
                }
                float *r = ref + ((size_t)pi * (size_t)n + (size_t)i) * nv;
                if (ti == 0) {
                    memcpy(r, lg, nv * sizeof *lg);
                } else {
                    double d = nmse(lg, r, nv);
                    sum += d;
                    worst = d > worst ? d : worst;
                }
            }
            double t_dec = (now_s() - t0) / (double)n;
            printf("%-10s %6u %10.3f %9.1f %12.1f %9.1f %12.1f %12.3g %10.3g\n", names[ti], P,
                   t_dec * 1e3, 1.0 / t_dec, t_re * 1e3, t_re / t_dec, (double)gs.kv_bytes / 1048576.0,
                   ti ? sum / (double)n : 0.0, worst);
        }
        /* sequences taking turns (one graph per slot) vs one sequence, at small positions */
        if (rc == 0 && seqs > 1) {
            long steps = n < 64 ? n : 64;
            double t1 = 0, t2 = 0;
            for (int round = 0; round < 2 && rc == 0; round++) {
                double t0 = now_s();
                for (long i = 0; i < steps && rc == 0; i++)
                    for (long q = 0; q < seqs && rc == 0; q++) {
                        if ((st = kr_gpu_forward_seq_use(g, (int32_t)(round == 0 ? q : 0), &e)) != KR_OK ||
                            (st = kr_gpu_forward_eval(g, &tok[i], 1, (uint32_t)i, lg, &e)) != KR_OK)
                            rc = fail("sequences", &e, st);
                    }
                double t = (now_s() - t0) / (double)(steps * seqs);
                if (round == 0)
                    t1 = t;
                else
                    t2 = t;
            }
            kr_gpu_forward_get_stats(g, &gs);
            printf("%-8s %ld sequences taking turns: %.3f ms/token; one sequence: %.3f ms/token (graph %d)\n",
                   names[ti], seqs, t1 * 1e3, t2 * 1e3, (int)gs.graph);
        }
        kr_gpu_forward_free(g);
    }
    free(tok);
    free(lg);
    free(ref);
    kr_backend_destroy(be);
    kr_model_free(m);
    return rc;
}
