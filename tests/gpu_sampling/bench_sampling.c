/* bench-gpu-sampling: GPU sampler time per token (not a test).
 *
 *   bench-gpu-sampling [--iters N]
 *
 * For vocab 32000 and 128256 and a few parameter sets (the target:
 * top-k 40, top-p 0.9, temperature 0.8, min-p off) prints
 *   - kernel time per token: N back-to-back sample_async launches between two
 *     events (device time, no host round trip),
 *   - round trip per token: kr_gpu_sampler_sample (launch + 4-byte copy +
 *     stream sync) timed on the host.
 * Logits: fixed pseudo-random bell-shaped values (sum of three uniforms * 3). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernrun/backend.h"
#include "kernrun/sampling.h"
#include "kr_gpu_sampling.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct setting {
    const char *name;
    int32_t top_k;
    float top_p, min_p, temp;
    bool greedy;
} setting;

static int bench_one(kr_backend *be, const setting *c, int32_t nv, int iters)
{
    kr_err err;
    kr_err_clear(&err);
    kr_sampler_params p;
    kr_sampler_params_default(&p);
    p.top_k = c->top_k;
    p.top_p = c->top_p;
    p.min_p = c->min_p;
    p.temperature = c->temp;
    p.greedy = c->greedy;
    p.seed = 42;
    kr_gpu_sampler *s = NULL;
    kr_buffer *dl = NULL, *dt = NULL;
    kr_event *e0 = NULL, *e1 = NULL;
    float *l = malloc((size_t)nv * sizeof *l);
    int rc = 1;
    if (!l)
        goto done;
    uint64_t r = 0x9E3779B97F4A7C15ull;
    for (int32_t i = 0; i < nv; i++) {
        float a = 0;
        for (int k = 0; k < 3; k++) {
            r ^= r << 13, r ^= r >> 7, r ^= r << 17;
            a += (float)((r >> 40) * 0x1p-24) * 2.0f - 1.0f;
        }
        l[i] = 3.0f * a;
    }
    kr_status st = kr_gpu_sampler_create(be, &p, nv, &s, &err);
    if (st == KR_OK)
        st = kr_gpu_sampler_prepare(s, &err);
    if (st == KR_OK)
        st = kr_backend_alloc(be, (size_t)nv * sizeof *l, &dl, &err);
    if (st == KR_OK)
        st = kr_backend_alloc(be, sizeof(int32_t), &dt, &err);
    if (st == KR_OK)
        st = kr_backend_h2d(be, dl->ptr, l, (size_t)nv * sizeof *l, NULL, &err);
    if (st == KR_OK)
        st = kr_backend_event_create(be, &e0, &err);
    if (st == KR_OK)
        st = kr_backend_event_create(be, &e1, &err);
    for (int i = 0; i < 10 && st == KR_OK; i++) /* warm-up */
        st = kr_gpu_sampler_sample_async(s, NULL, dl->ptr, dt->ptr, &err);
    if (st == KR_OK)
        st = kr_backend_event_record(be, e0, NULL, &err);
    for (int i = 0; i < iters && st == KR_OK; i++)
        st = kr_gpu_sampler_sample_async(s, NULL, dl->ptr, dt->ptr, &err);
    if (st == KR_OK)
        st = kr_backend_event_record(be, e1, NULL, &err);
    float ms = 0;
    if (st == KR_OK)
        st = kr_backend_event_elapsed(be, e0, e1, &ms, &err);
    double t0 = now_s();
    int32_t tok = -1;
    for (int i = 0; i < iters && st == KR_OK; i++)
        st = kr_gpu_sampler_sample(s, NULL, dl->ptr, &tok, &err);
    double t1 = now_s();
    if (st != KR_OK) {
        fprintf(stderr, "bench-gpu-sampling: %s V=%d: %s\n", c->name, (int)nv, kr_err_msg(&err, st));
        goto done;
    }
    printf("gpu-sampling %-28s vocab %6d: kernel %7.1f us/token, round trip %7.1f us/token\n", c->name, (int)nv,
           1000.0 * (double)ms / iters, 1e6 * (t1 - t0) / iters);
    rc = 0;
done:
    if (e0)
        kr_backend_event_destroy(be, e0);
    if (e1)
        kr_backend_event_destroy(be, e1);
    kr_backend_free(be, dl);
    kr_backend_free(be, dt);
    kr_gpu_sampler_free(s);
    free(l);
    return rc;
}

int main(int argc, char **argv)
{
    int iters = 200;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc) {
            iters = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: %s [--iters N]\n", argv[0]);
            return 2;
        }
    }
    if (iters < 1)
        iters = 1;
    kr_err err;
    kr_err_clear(&err);
    kr_backend *be = NULL;
    kr_status st = kr_backend_create(KR_BACKEND_CUDA, 0, &be, &err);
    if (st != KR_OK) {
        fprintf(stderr, "bench-gpu-sampling: no CUDA backend: %s\n", kr_err_msg(&err, st));
        return 1;
    }
    const kr_device_info *dev = kr_backend_device_info(be);
    printf("gpu-sampling on %s, %d iterations\n", dev ? dev->name : "?", iters);
    static const setting settings[] = {
        {"top-k 40 top-p .9 T .8", 40, 0.9f, 0.0f, 0.8f, false},
        {"defaults (+ min-p .05 top-p .95)", 40, 0.95f, 0.05f, 0.8f, false},
        {"top-p .9 (no top-k)", 0, 0.9f, 0.0f, 0.8f, false},
        {"greedy", 0, 1.0f, 0.0f, 0.8f, true},
    };
    const int32_t vocabs[] = {32000, 128256};
    int rc = 0;
    for (size_t v = 0; v < 2; v++)
        for (size_t c = 0; c < sizeof settings / sizeof settings[0]; c++)
            rc |= bench_one(be, &settings[c], vocabs[v], iters);
    kr_backend_destroy(be);
    return rc;
}
