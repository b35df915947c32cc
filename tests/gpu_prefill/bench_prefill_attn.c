/* Flash attention microbenchmark (kernels/prefill/flash_attn.cu): n query
 * tokens at pos0 .. pos0+n-1 over an fp16 cache, time per launch (CUDA
 * events, mean of --iters after 3 warm-ups) and TFLOP/s counted as 4*D FLOPs
 * per visible (query, key) pair and head (QK^T and PV; masked work not
 * counted). One line per shape and kernel (simple, pipe): "D H/HK n pos0 window kernel us TFLOP/s".
 * Usage: bench-prefill-attn [--iters N]. Exits 77 without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/backend.h"
#include "kr_prefill_ops.h"

typedef struct shape {
    int d, h, hk, n, pos0, window;
} shape;

int main(int argc, char **argv)
{
    int iters = 50;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            iters = atoi(argv[++i]);
    kr_err err;
    memset(&err, 0, sizeof err);
    kr_backend *be = NULL;
    kr_status st = kr_backend_create(KR_BACKEND_CUDA, 0, &be, &err);
    if (st != KR_OK) {
        fprintf(stderr, "bench-prefill-attn: no CUDA backend: %s\n", kr_err_msg(&err, st));
        return 77;
    }
    const kr_device_info *di = kr_backend_device_info(be);
    printf("device: %s\n", di ? di->name : "?");
    kr_pf *p = NULL;
    kr_event *e0 = NULL, *e1 = NULL;
    kr_buffer *bq = NULL, *bk = NULL, *bv = NULL, *bo = NULL;
    int rc = 1;
    if ((st = kr_pf_create(be, &p, &err)) != KR_OK || (st = kr_backend_event_create(be, &e0, &err)) != KR_OK ||
        (st = kr_backend_event_create(be, &e1, &err)) != KR_OK)
        goto fail;
    const size_t maxq = (size_t)4096 * 32 * 128, maxkv = (size_t)8192 * 8 * 128 * 4;
    if ((st = kr_backend_alloc(be, maxq * 4, &bq, &err)) != KR_OK || (st = kr_backend_alloc(be, maxq * 4, &bo, &err)) != KR_OK ||
        (st = kr_backend_alloc(be, maxkv * 2, &bk, &err)) != KR_OK || (st = kr_backend_alloc(be, maxkv * 2, &bv, &err)) != KR_OK)
        goto fail;
    /* small finite values everywhere (0x3c00 pairs = fp16 1.0; q = 2^-10-ish floats) */
    if ((st = kr_backend_memset(be, bq->ptr, 0x3a, maxq * 4, NULL, &err)) != KR_OK ||
        (st = kr_backend_memset(be, bk->ptr, 0x2c, maxkv * 2, NULL, &err)) != KR_OK ||
        (st = kr_backend_memset(be, bv->ptr, 0x2c, maxkv * 2, NULL, &err)) != KR_OK)
        goto fail;
    const shape shapes[] = {
        {128, 32, 32, 512, 0, 0},    /* the figure: 512 tokens x 32 heads x 128 */
        {128, 32, 8, 512, 0, 0},     /* GQA */
        {128, 32, 32, 512, 1536, 0}, /* 4th chunk of a 2048 prompt */
        {128, 32, 8, 512, 3584, 4096}, /* mistral-like, window */
        {64, 71, 1, 512, 0, 0},      /* falcon 7B */
        {128, 32, 32, 2048, 0, 0},   /* one long chunk */
    };
    printf("%-4s %-7s %-5s %-5s %-6s %-6s %10s %8s\n", "D", "H/HK", "n", "pos0", "window", "kernel", "us", "TFLOP/s");
    for (size_t vi = 0; vi < 2 * sizeof shapes / sizeof shapes[0]; vi++) {
        const shape *s = &shapes[vi / 2];
        const int variant = vi % 2 ? KR_PF_FA_PIPE : KR_PF_FA_SIMPLE;
        kr_pf_set_flash_variant(p, variant);
        const int rows = s->pos0 + s->n;
        const size_t qs = (size_t)s->h * s->d, rb = (size_t)2 * s->hk * s->d;
        if ((size_t)rows * rb > maxkv * 2 || (size_t)s->n * qs > maxq)
            continue;
        for (int it = -3; it < iters; it++) {
            if (it == 0 && (st = kr_backend_event_record(be, e0, NULL, &err)) != KR_OK)
                goto fail;
            st = kr_pf_flash_attn(p, NULL, bq->ptr, qs, bk->ptr, bv->ptr, KR_DTYPE_F16, rb, rows, bo->ptr, qs, s->n, s->pos0, s->h,
                                  s->hk, s->d, s->window, 0.0883883f, &err);
            if (st != KR_OK)
                goto fail;
        }
        float ms = 0;
        if ((st = kr_backend_event_record(be, e1, NULL, &err)) != KR_OK ||
            (st = kr_backend_event_elapsed(be, e0, e1, &ms, &err)) != KR_OK)
            goto fail;
        double pairs = 0;
        for (int t = 0; t < s->n; t++) {
            const int pp = s->pos0 + t, lo = s->window > 0 && pp - s->window + 1 > 0 ? pp - s->window + 1 : 0;
            pairs += pp - lo + 1;
        }
        const double us = 1e3 * ms / iters, flops = 4.0 * s->d * s->h * pairs;
        printf("%-4d %3d/%-3d %-5d %-5d %-6d %-6s %10.1f %8.1f\n", s->d, s->h, s->hk, s->n, s->pos0, s->window,
               variant == KR_PF_FA_PIPE ? "pipe" : "simple", us, flops / (us * 1e-6) / 1e12);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench-prefill-attn: %s\n", kr_err_msg(&err, st));
done:
    kr_backend_free(be, bq);
    kr_backend_free(be, bk);
    kr_backend_free(be, bv);
    kr_backend_free(be, bo);
    if (e0)
        kr_backend_event_destroy(be, e0);
    if (e1)
        kr_backend_event_destroy(be, e1);
    kr_pf_free(p);
    kr_backend_destroy(be);
    return rc;
}
