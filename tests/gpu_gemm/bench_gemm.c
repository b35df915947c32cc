/* GEMM microbenchmark (not a test): C (M, N) = A (M, K) @ W (N, K)^T with
 * M = 512 tokens, N = K = 4096, i.e. (4096 x 4096) . (4096 x 512), 2*M*N*K
 * flops. FP32 SIMT (W F32) vs tensor cores (W F16, and Q4_0/Q8_0/Q4_1/Q4_K/Q6_K
 * dequantized on the fly): time per GEMM (CUDA events, mean over the timed
 * runs after warm-up), TFLOP/s, speedup over SIMT, and the fraction of the
 * card's dense fp16 tensor rate (fp32 accumulate) looked up from the device
 * name (H100/H200 SXM 989.4, H100 NVL 835, H100 PCIe 756 TFLOP/s;
 * KR_GEMM_PEAK_TFLOPS overrides). Also prints the NMSE between the F16
 * tensor-core and the SIMT results as a sanity check that both did the work.
 *
 * Usage: bench-gemm [M N K [iters]]    exit 0 = ran; prints "speedup ... (>= 5x: yes|no)". */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/backend.h"
#include "kernrun/quant.h"
#include "kr_gemm.h"

static uint64_t g_rng = 0x1234567887654321ull;
static float rng_f(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * 0x1p-24) * 2.0f - 1.0f;
}

static double peak_fp16_tflops(const char *name)
{
    const char *e = getenv("KR_GEMM_PEAK_TFLOPS");
    if (e && atof(e) > 0)
        return atof(e);
    if (strstr(name, "H100") && strstr(name, "PCIe"))
        return 756.0;
    if (strstr(name, "H100") && strstr(name, "NVL"))
        return 835.0;
    if (strstr(name, "H100") || strstr(name, "H200") || strstr(name, "GH200"))
        return 989.4;
    return 0.0;
}

typedef struct bench_ctx {
    kr_backend *be;
    kr_gemm *g;
    kr_event *ev0, *ev1;
    int64_t m, n, k;
    int iters;
    void *a, *c; /* device (m, k) fp32, (m, n) fp32 */
} bench_ctx;

/* Mean milliseconds per GEMM; negative on error (printed). */
static double time_gemm(bench_ctx *b, kr_gemm_variant v, kr_dtype t, const void *w, size_t ws)
{
    kr_err err;
    memset(&err, 0, sizeof err);
    for (int i = 0; i < 3; i++) {
        if (kr_gemm_run(b->g, NULL, v, t, w, ws, b->a, (size_t)b->k, b->c, (size_t)b->n, b->m, b->n, b->k, &err) !=
            KR_OK) {
            fprintf(stderr, "bench-gemm: %s\n", err.msg);
            return -1;
        }
    }
    if (kr_backend_sync(b->be, NULL, &err) != KR_OK || kr_backend_event_record(b->be, b->ev0, NULL, &err) != KR_OK)
        goto fail;
    for (int i = 0; i < b->iters; i++)
        if (kr_gemm_run(b->g, NULL, v, t, w, ws, b->a, (size_t)b->k, b->c, (size_t)b->n, b->m, b->n, b->k, &err) !=
            KR_OK)
            goto fail;
    float ms = 0;
    if (kr_backend_event_record(b->be, b->ev1, NULL, &err) != KR_OK ||
        kr_backend_event_elapsed(b->be, b->ev0, b->ev1, &ms, &err) != KR_OK)
        goto fail;
    return (double)ms / b->iters;
fail:
    fprintf(stderr, "bench-gemm: %s\n", err.msg);
    return -1;
}

/* Quantize (n, k) fp32 to type t and upload; returns the device buffer. */
static kr_buffer *upload_weights(kr_backend *be, kr_dtype t, const float *wf, int64_t n, int64_t k, size_t *stride)
{
    uint64_t rb = 0;
    if (kr_quant_row_size(t, (uint64_t)k, &rb, NULL) != KR_OK)
        return NULL;
    *stride = (size_t)rb;
    uint8_t *h = malloc((size_t)n * rb);
    kr_buffer *d = NULL;
    kr_err err;
    memset(&err, 0, sizeof err);
    if (!h)
        return NULL;
    for (int64_t r = 0; r < n; r++)
        kr_quantize_row(t, wf + r * k, h + r * rb, (size_t)k);
    if (kr_backend_alloc(be, (size_t)n * rb, &d, &err) != KR_OK ||
        kr_backend_h2d(be, d->ptr, h, (size_t)n * rb, NULL, &err) != KR_OK) {
        fprintf(stderr, "bench-gemm: upload: %s\n", err.msg);
        kr_backend_free(be, d);
        d = NULL;
    }
    free(h);
    return d;
}

int main(int argc, char **argv)
{
    bench_ctx b = {.m = 512, .n = 4096, .k = 4096, .iters = 20};
    if (argc >= 4) {
        b.m = atoll(argv[1]);
        b.n = atoll(argv[2]);
        b.k = atoll(argv[3]);
    }
    if (argc >= 5)
        b.iters = atoi(argv[4]);
    if (b.m < 1 || b.n < 1 || b.k < 32 || b.k % 32 || b.iters < 1) {
        fprintf(stderr, "usage: bench-gemm [M N K [iters]]  (K a multiple of 32)\n");
        return 2;
    }
    kr_err err;
    memset(&err, 0, sizeof err);
    int rc = 1;
    float *wf = NULL, *ah = NULL, *c1 = NULL, *c2 = NULL;
    kr_buffer *da = NULL, *dc = NULL, *dw[7] = {0};
    if (kr_backend_create(KR_BACKEND_CUDA, 0, &b.be, &err) != KR_OK) {
        fprintf(stderr, "bench-gemm: no CUDA device: %s\n", err.msg);
        return 1;
    }
    const kr_device_info *dev = kr_backend_device_info(b.be);
    const char *name = dev ? dev->name : "?";
    double peak = peak_fp16_tflops(name);
    if (kr_gemm_create(b.be, &b.g, &err) != KR_OK || kr_gemm_prepare_all(b.g, &err) != KR_OK ||
        kr_backend_event_create(b.be, &b.ev0, &err) != KR_OK || kr_backend_event_create(b.be, &b.ev1, &err) != KR_OK)
        goto out_err;

    size_t nw = (size_t)b.n * b.k, na = (size_t)b.m * b.k, nc = (size_t)b.m * b.n;
    wf = malloc(nw * sizeof *wf);
    ah = malloc(na * sizeof *ah);
    c1 = malloc(nc * sizeof *c1);
    c2 = malloc(nc * sizeof *c2);
    if (!wf || !ah || !c1 || !c2) {
        fprintf(stderr, "bench-gemm: out of host memory\n");
        goto out;
    }
    for (size_t i = 0; i < nw; i++)
        wf[i] = rng_f();
    for (size_t i = 0; i < na; i++)
        ah[i] = rng_f();
    if (kr_backend_alloc(b.be, na * sizeof(float), &da, &err) != KR_OK ||
        kr_backend_alloc(b.be, nc * sizeof(float), &dc, &err) != KR_OK ||
        kr_backend_h2d(b.be, da->ptr, ah, na * sizeof(float), NULL, &err) != KR_OK)
        goto out_err;
    b.a = da->ptr;
    b.c = dc->ptr;

    const kr_dtype types[7] = {KR_DTYPE_F32,  KR_DTYPE_F16,  KR_DTYPE_Q4_0, KR_DTYPE_Q8_0,
                               KR_DTYPE_Q4_1, KR_DTYPE_Q4_K, KR_DTYPE_Q6_K};
    const char *tnames[7] = {"F32", "F16", "Q4_0", "Q8_0", "Q4_1", "Q4_K", "Q6_K"};
    size_t ws[7] = {0};
    for (int i = 0; i < 7; i++) {
        if (b.k % (int64_t)kr_quant_block_size(types[i]) != 0)
            continue; /* K-quants need K % 256 == 0 */
        dw[i] = upload_weights(b.be, types[i], wf, b.n, b.k, &ws[i]);
        if (!dw[i])
            goto out;
    }

    double flops = 2.0 * (double)b.m * (double)b.n * (double)b.k;
    printf("bench-gemm: %s (%d SMs), C (%lld, %lld) = A (%lld, %lld) @ W (%lld, %lld)^T, %.2f GFLOP, %d iters\n",
           name, dev ? dev->sm_count : 0, (long long)b.m, (long long)b.n, (long long)b.m, (long long)b.k,
           (long long)b.n, (long long)b.k, flops * 1e-9, b.iters);
    if (peak > 0)
        printf("bench-gemm: dense fp16 tensor peak (fp32 accumulate) taken as %.1f TFLOP/s\n", peak);
    else
        printf("bench-gemm: unknown card: no peak (set KR_GEMM_PEAK_TFLOPS)\n");

    double simt_ms = time_gemm(&b, KR_GEMM_AUTO, KR_DTYPE_F32, dw[0]->ptr, ws[0]);
    if (simt_ms < 0)
        goto out;
    if (kr_backend_d2h(b.be, c1, b.c, nc * sizeof(float), NULL, &err) != KR_OK)
        goto out_err;
    printf("gemm %-5s %-6s %9.3f ms %8.2f TFLOP/s\n", "F32", "simt", simt_ms, flops / (simt_ms * 1e-3) * 1e-12);

    double best_f16 = 0;
    struct {
        kr_gemm_variant v;
        const char *name;
    } vars[3] = {{KR_GEMM_AUTO, "auto"}, {KR_GEMM_TC128, "tc128"}, {KR_GEMM_TC64, "tc64"}};
    for (int t = 1; t < 7; t++) {
        if (!dw[t])
            continue;
        for (int vi = 0; vi < 3; vi++) {
            double ms = time_gemm(&b, vars[vi].v, types[t], dw[t]->ptr, ws[t]);
            if (ms < 0)
                goto out;
            double tf = flops / (ms * 1e-3) * 1e-12;
            if (t == 1 && tf > best_f16)
                best_f16 = tf;
            printf("gemm %-5s %-6s %9.3f ms %8.2f TFLOP/s  %5.2fx simt", tnames[t], vars[vi].name, ms, tf,
                   simt_ms / ms);
            if (peak > 0)
                printf("  %5.1f%% of fp16 peak", 100.0 * tf / peak);
            printf("\n");
        }
    }
    /* sanity: the F16 tensor-core result (auto) against the SIMT one */
    if (time_gemm(&b, KR_GEMM_AUTO, KR_DTYPE_F16, dw[1]->ptr, ws[1]) < 0 ||
        kr_backend_d2h(b.be, c2, b.c, nc * sizeof(float), NULL, &err) != KR_OK)
        goto out_err;
    double num = 0, den = 0;
    for (size_t i = 0; i < nc; i++) {
        double e = (double)c2[i] - c1[i];
        num += e * e;
        den += (double)c1[i] * c1[i];
    }
    double simt_tf = flops / (simt_ms * 1e-3) * 1e-12;
    printf("bench-gemm: NMSE(F16 tensor cores vs F32 SIMT) = %.3g\n", den > 0 ? num / den : num);
    printf("bench-gemm: speedup F16 tensor cores (best %.2f TFLOP/s) over F32 SIMT (%.2f TFLOP/s) = %.2fx (>= 5x: %s)",
           best_f16, simt_tf, best_f16 / simt_tf, best_f16 / simt_tf >= 5.0 ? "yes" : "no");
    if (peak > 0)
        printf(", %.1f%% of the fp16 peak", 100.0 * best_f16 / peak);
    printf("\n");
    rc = 0;
    goto out;
out_err:
    fprintf(stderr, "bench-gemm: %s\n", err.msg);
out:
    for (int i = 0; i < 7; i++)
        kr_backend_free(b.be, dw[i]);
    kr_backend_free(b.be, da);
    kr_backend_free(b.be, dc);
    kr_backend_event_destroy(b.be, b.ev0);
    kr_backend_event_destroy(b.be, b.ev1);
    kr_gemm_free(b.g);
    kr_backend_destroy(b.be);
    free(wf);
    free(ah);
    free(c1);
    free(c2);
    return rc;
}
