/* KV cache benchmark (not a test).
 *   bench-kvcache [-m FILE] [-t THREADS] [-r REPS]
 * For prefix lengths 512 and 2048: the time of one decode step with the
 * cache (f32, f16, q8_0 rows) vs recomputing the whole prefix for that token
 * (a fresh prefill of N tokens, as a cacheless runtime would). Without -m a
 * random llama (dim 256, 4 layers, 8/4 heads, ffn 704, vocab 512, fp32) is
 * written to $TMPDIR and removed afterwards. Numbers: docs/PERF.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernrun/builtin_model.h"
#include "kernrun/kvcache.h"
#include "kernrun/model.h"
#include "tiny_model.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
    const char *file = NULL;
    int threads = 2, reps = 8;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-m") == 0 && i + 1 < argc)
            file = argv[++i];
        else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (strcmp(argv[i], "-r") == 0 && i + 1 < argc)
            reps = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [-m FILE] [-t THREADS] [-r REPS]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1)
        reps = 1;
    char synth[512] = "";
    if (!file) {
        const char *dir = getenv("TMPDIR");
        snprintf(synth, sizeof synth, "%s/kr-bench-kv-%ld.gguf", dir ? dir : "/tmp", (long)getpid());
        tm_model m;
        tm_init(&m, "llama", 512, 256, 4, 8, 4, 704, 7);
        m.ctx = 4096;
        tm_build(&m, 7);
        kr_status st = tm_write(&m, synth, NULL);
        tm_free(&m);
        if (st != KR_OK) {
            fprintf(stderr, "cannot write %s\n", synth);
            return 1;
        }
        file = synth;
    }
    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    kr_model *km = NULL;
    kr_err err;
    int rc = 1;
    if (kr_model_load(file, &mp, &km, &err) != KR_OK) {
        fprintf(stderr, "%s\n", err.msg);
        goto out_unlink;
    }
    int32_t V = kr_model_n_vocab(km);
    const uint32_t lens[2] = {512, 2048};
    int32_t *tok = malloc((2048 + 64) * sizeof *tok);
    float *lg = malloc((size_t)V * sizeof *lg);
    float *ref = malloc((size_t)V * (size_t)reps * sizeof *ref); /* f32-cache logits per decode step */
    if (!tok || !lg || !ref)
        goto out_free;
    for (int i = 0; i < 2048 + 64; i++)
        tok[i] = (int32_t)((i * 7919u + 13u) % (uint32_t)V);
    printf("model %s, %d threads, %d reps\n", file == synth ? "synthetic llama E256 L4" : file, threads, reps);
    const kr_dtype types[3] = {KR_DTYPE_F32, KR_DTYPE_F16, KR_DTYPE_Q8_0};
    for (int li = 0; li < 2; li++) {
        uint32_t N = lens[li];
        kr_context_params cp = kr_context_params_default();
        cp.n_ctx = N + (uint32_t)reps + 1;
        cp.n_threads = threads;
        double t_cache[3] = {0}, t_re = 0, nmse[3] = {0};
        for (int ti = 0; ti < 3; ti++) {
            cp.kv_type = types[ti];
            kr_context *c;
            if (kr_context_new(km, &cp, &c, &err) != KR_OK) {
                fprintf(stderr, "%s\n", err.msg);
                goto out_free;
            }
            if (kr_model_eval(c, tok, N, 0, NULL, &err) != KR_OK) {
                fprintf(stderr, "%s\n", err.msg);
                kr_context_free(c);
                goto out_free;
            }
            double t0 = now();
            for (int r = 0; r < reps; r++) {
                kr_model_eval(c, &tok[N + r], 1, N + (uint32_t)r, ti == 0 ? ref + (size_t)r * V : lg, &err);
                if (ti > 0) { /* quality vs the f32 cache (outside the hot loop cost: O(V)) */
                    double num = 0, den = 0;
                    for (int32_t i = 0; i < V; i++) {
                        double d = (double)lg[i] - ref[(size_t)r * V + i];
                        num += d * d;
                        den += (double)ref[(size_t)r * V + i] * ref[(size_t)r * V + i];
                    }
                    nmse[ti] += num / den / reps;
                }
            }
            t_cache[ti] = (now() - t0) / reps;
            if (ti == 0) { /* recompute: the whole prefix + token from scratch */
                int rr = reps < 3 ? reps : 3;
                t0 = now();
                for (int r = 0; r < rr; r++) {
                    kr_context_reset(c);
                    kr_model_eval(c, tok, N + 1, 0, lg, &err);
                }
                t_re = (now() - t0) / rr;
            }
            kr_context_free(c);
        }
        printf("N=%4u  recompute %8.2f ms/token | cache f32 %7.3f ms  f16 %7.3f ms  q8_0 %7.3f ms | speedup f32 %.0fx\n",
               N, t_re * 1e3, t_cache[0] * 1e3, t_cache[1] * 1e3, t_cache[2] * 1e3, t_re / t_cache[0]);
        printf("        logits nmse vs f32 cache (mean over %d steps): f16 %.3g  q8_0 %.3g\n", reps, nmse[1], nmse[2]);
    }
    rc = 0;
out_free:
    free(tok);
    free(lg);
    free(ref);
    kr_model_free(km);
out_unlink:
    if (synth[0])
        unlink(synth);
    return rc;
}
