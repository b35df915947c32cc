/* GEMM microbenchmark (not a test): C (M, N) = A (M, K) @ W (N, K)^T, 2*M*N*K
 * flops. M is the token count (512 by default), N the output features, K the
 * inputs: the (4096 x 4096) . (4096 x 512) is M 512, N = K = 4096.
 * FP32 SIMT (W F32, the baseline) vs the tensor-core kernels (W F16, and
 * Q4_0/Q8_0/Q4_1/Q4_K/Q6_K dequantized on the fly): time per GEMM (CUDA events,
 * mean over the timed runs after warm-up), TFLOP/s, speedup over SIMT of the
 * same shape, and the fraction of the card's dense fp16 tensor rate (fp32
 * accumulate) looked up from the device name (H100/H200 SXM 989.4, H100 NVL
 * 835, H100 PCIe 756 TFLOP/s; KR_GEMM_PEAK_TFLOPS overrides). Each row also
 * prints the NMSE of its result against the SIMT one (fp32 weights: for the
 * quantized types that is the quantization error, ~1e-3..1e-2; a broken kernel
 * shows ~1).
 *
 * Usage: bench-gemm [M N K [iters]]        one shape
 * Environment:
 *   KR_BENCH_SHAPES   "MxNxK,MxNxK,..." instead of the arguments
 *   KR_BENCH_TYPES    "F16 Q4_0 Q8_0 Q4_1 Q4_K Q6_K Q4_0R Q8_0R" (default all;
 *                     ...R: the decode path's repacked layout, kr_gemm_run_repacked)
 *   KR_BENCH_VARIANTS "auto tc128 tc64 mma128 mma64 mma128k2 mma128w8 mma256 mma256k2" and
 *                     with an "h" prefix (hauto, hmma128, ...) for fp16 A
 *                     (kr_gemm_run_f16a); default all of them
 *   KR_BENCH_SIMT=0   skip the SIMT baseline (speedups then not printed)
 *   KR_BENCH_NMSE=0   skip the NMSE check (saves the copy of C per row)
 * Weights: 256 distinct random rows (per-row scale), repeated over N (fast setup
 * for 32000-row shapes; the data is still N*K distinct bytes to stream).
 * Prints "speedup ... (>= 5x: yes|no)" for the F16 best of the first shape.
 * Exit 0 = ran. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/backend.h"
#include "kernrun/half.h"
#include "kernrun/quant.h"
#include "kr_gemm.h"

#define UNIQUE_ROWS 256

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
    void *a, *ah, *c; /* device (m, k) fp32, (m, k) fp16, (m, n) fp32 */
    const void *sc;   /* repacked weights: the scales; NULL otherwise */
} bench_ctx;

static kr_status run_one(bench_ctx *b, kr_gemm_variant v, bool f16a, kr_dtype t, const void *w, size_t ws,
                         kr_err *err)
{
    if (b->sc)
        return kr_gemm_run_repacked(b->g, NULL, v, t, w, b->sc, f16a ? NULL : b->a, f16a ? b->ah : NULL,
                                    (size_t)b->k, b->c, (size_t)b->n, b->m, b->n, b->k, err);
    if (f16a)
        return kr_gemm_run_f16a(b->g, NULL, v, t, w, ws, b->ah, (size_t)b->k, b->c, (size_t)b->n, b->m, b->n, b->k,
                                err);
    return kr_gemm_run(b->g, NULL, v, t, w, ws, b->a, (size_t)b->k, b->c, (size_t)b->n, b->m, b->n, b->k, err);
}

/* Mean milliseconds per GEMM; negative on error (printed). */
static double time_gemm(bench_ctx *b, kr_gemm_variant v, bool f16a, kr_dtype t, const void *w, size_t ws)
{
    kr_err err;
    memset(&err, 0, sizeof err);
    for (int i = 0; i < 3; i++)
        if (run_one(b, v, f16a, t, w, ws, &err) != KR_OK)
            goto fail;
    if (kr_backend_sync(b->be, NULL, &err) != KR_OK || kr_backend_event_record(b->be, b->ev0, NULL, &err) != KR_OK)
        goto fail;
    for (int i = 0; i < b->iters; i++)
        if (run_one(b, v, f16a, t, w, ws, &err) != KR_OK)
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

/* Rows of wf (UNIQUE_ROWS, k) quantized to type t, repeated over n rows, uploaded.
 * repacked (Q4_0/Q8_0): rewritten as [quants row-major | fp16 scales row-major]
 * (kr_gemm_run_repacked); *stride is then the quant bytes per row. */
static kr_buffer *upload_weights(kr_backend *be, kr_dtype t, const float *wf, int64_t n, int64_t k, size_t *stride,
                                 bool repacked)
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
    for (int64_t r = 0; r < n && r < UNIQUE_ROWS; r++)
        kr_quantize_row(t, wf + r * k, h + r * rb, (size_t)k);
    for (int64_t r = UNIQUE_ROWS; r < n; r++)
        memcpy(h + r * rb, h + (r % UNIQUE_ROWS) * rb, rb);
    if (repacked) {
        const size_t nb = (size_t)k / 32, qsz = t == KR_DTYPE_Q8_0 ? 32 : 16;
        uint8_t *rp = malloc((size_t)n * rb);
        if (!rp) {
            free(h);
            return NULL;
        }
        for (int64_t r = 0; r < n; r++)
            for (size_t b = 0; b < nb; b++) {
                const uint8_t *blk = h + r * rb + b * (qsz + 2);
                memcpy(rp + (size_t)n * nb * qsz + ((size_t)r * nb + b) * 2, blk, 2);
                memcpy(rp + ((size_t)r * nb + b) * qsz, blk + 2, qsz);
            }
        free(h);
        h = rp;
        *stride = nb * qsz;
    }
    if (kr_backend_alloc(be, (size_t)n * rb, &d, &err) != KR_OK ||
        kr_backend_h2d(be, d->ptr, h, (size_t)n * rb, NULL, &err) != KR_OK) {
        fprintf(stderr, "bench-gemm: upload: %s\n", err.msg);
        kr_backend_free(be, d);
        d = NULL;
    }
    free(h);
    return d;
}

static const struct {
    const char *name;
    kr_dtype t;
    bool repacked;
} k_types[] = {{"F16", KR_DTYPE_F16, false},   {"Q4_0", KR_DTYPE_Q4_0, false}, {"Q8_0", KR_DTYPE_Q8_0, false},
               {"Q4_1", KR_DTYPE_Q4_1, false}, {"Q4_K", KR_DTYPE_Q4_K, false}, {"Q6_K", KR_DTYPE_Q6_K, false},
               {"Q4_0R", KR_DTYPE_Q4_0, true}, {"Q8_0R", KR_DTYPE_Q8_0, true}};
#define N_TYPES (sizeof k_types / sizeof k_types[0])

static const struct {
    const char *name;
    kr_gemm_variant v;
    bool f16a;
} k_vars[] = {{"auto", KR_GEMM_AUTO, false},         {"tc128", KR_GEMM_TC128, false},
              {"tc64", KR_GEMM_TC64, false},         {"mma128", KR_GEMM_MMA128, false},
              {"mma64", KR_GEMM_MMA64, false},       {"mma128k2", KR_GEMM_MMA128_K2, false},
              {"mma128w8", KR_GEMM_MMA128_W8, false},  {"mma256", KR_GEMM_MMA256, false},
              {"mma256k2", KR_GEMM_MMA256_K2, false},
              {"hauto", KR_GEMM_AUTO, true},         {"hmma128", KR_GEMM_MMA128, true},
              {"hmma64", KR_GEMM_MMA64, true},       {"hmma128k2", KR_GEMM_MMA128_K2, true},
              {"hmma128w8", KR_GEMM_MMA128_W8, true}, {"hmma256", KR_GEMM_MMA256, true},
              {"hmma256k2", KR_GEMM_MMA256_K2, true}, {"wg", KR_GEMM_WG, false},
              {"wgk2", KR_GEMM_WG_K2, false},         {"hwg", KR_GEMM_WG, true},
              {"hwgk2", KR_GEMM_WG_K2, true},         {"wg2", KR_GEMM_WG2, false},
              {"wg2k2", KR_GEMM_WG2_K2, false},       {"hwg2", KR_GEMM_WG2, true},
              {"hwg2k2", KR_GEMM_WG2_K2, true},       {"wgs4", KR_GEMM_WG_S4, false},
              {"wgs4k2", KR_GEMM_WG_S4_K2, false},    {"hwgs4", KR_GEMM_WG_S4, true},
              {"hwgs4k2", KR_GEMM_WG_S4_K2, true},    {"wgss", KR_GEMM_WG_SS, false},
              {"wgssk2", KR_GEMM_WG_SS_K2, false},    {"hwgss", KR_GEMM_WG_SS, true},
              {"hwgssk2", KR_GEMM_WG_SS_K2, true}};
#define N_VARS (sizeof k_vars / sizeof k_vars[0])

/* name is in the space/comma separated list env (NULL or empty: all). */
static bool listed(const char *env, const char *name)
{
    const char *l = getenv(env);
    if (!l || !*l)
        return true;
    size_t n = strlen(name);
    for (const char *p = l; (p = strstr(p, name)) != NULL; p += n) {
        bool start = p == l || p[-1] == ' ' || p[-1] == ',';
        bool end = p[n] == '\0' || p[n] == ' ' || p[n] == ',';
        if (start && end)
            return true;
    }
    return false;
}

/* One shape; *best_f16 / *simt_tf report the F16 best and the SIMT rate. Returns 0 on success. */
static int bench_shape(bench_ctx *b, double peak, double *best_f16, double *simt_tf)
{
    kr_err err;
    memset(&err, 0, sizeof err);
    int rc = 1;
    int64_t m = b->m, n = b->n, k = b->k;
    float *wf = NULL, *ah = NULL, *c1 = NULL, *c2 = NULL;
    uint16_t *ah16 = NULL;
    kr_buffer *da = NULL, *dah = NULL, *dc = NULL, *dw = NULL;
    int64_t nu = n < UNIQUE_ROWS ? n : UNIQUE_ROWS;
    size_t na = (size_t)m * k, nc = (size_t)m * n;
    wf = malloc((size_t)nu * k * sizeof *wf);
    ah = malloc(na * sizeof *ah);
    ah16 = malloc(na * sizeof *ah16);
    c1 = malloc(nc * sizeof *c1);
    c2 = malloc(nc * sizeof *c2);
    if (!wf || !ah || !ah16 || !c1 || !c2) {
        fprintf(stderr, "bench-gemm: out of host memory\n");
        goto out;
    }
    for (int64_t r = 0; r < nu; r++) {
        float sc = 0.25f + 0.875f * (rng_f() + 1.0f);
        for (int64_t i = 0; i < k; i++)
            wf[r * k + i] = sc * rng_f();
    }
    for (size_t i = 0; i < na; i++) {
        ah[i] = rng_f();
        ah16[i] = kr_fp32_to_fp16(ah[i]);
    }
    if (kr_backend_alloc(b->be, na * sizeof(float), &da, &err) != KR_OK ||
        kr_backend_alloc(b->be, na * 2, &dah, &err) != KR_OK ||
        kr_backend_alloc(b->be, nc * sizeof(float), &dc, &err) != KR_OK ||
        kr_backend_h2d(b->be, da->ptr, ah, na * sizeof(float), NULL, &err) != KR_OK ||
        kr_backend_h2d(b->be, dah->ptr, ah16, na * 2, NULL, &err) != KR_OK)
        goto out_err;
    b->a = da->ptr;
    b->ah = dah->ptr;
    b->c = dc->ptr;
    double flops = 2.0 * (double)m * (double)n * (double)k;
    printf("== shape M %lld (tokens) N %lld K %lld: %.2f GFLOP, %d iters\n", (long long)m, (long long)n, (long long)k,
           flops * 1e-9, b->iters);

    *simt_tf = 0;
    b->sc = NULL;
    double simt_ms = 0;
    bool have_ref = false;
    const char *se = getenv("KR_BENCH_SIMT");
    if (!se || strcmp(se, "0") != 0) {
        size_t ws = 0;
        dw = upload_weights(b->be, KR_DTYPE_F32, wf, n, k, &ws, false);
        if (!dw)
            goto out;
        simt_ms = time_gemm(b, KR_GEMM_AUTO, false, KR_DTYPE_F32, dw->ptr, ws);
        if (simt_ms < 0)
            goto out;
        if (kr_backend_d2h(b->be, c1, b->c, nc * sizeof(float), NULL, &err) != KR_OK)
            goto out_err;
        have_ref = true;
        *simt_tf = flops / (simt_ms * 1e-3) * 1e-12;
        printf("gemm %-5s %-9s %9.4f ms %8.2f TFLOP/s\n", "F32", "simt", simt_ms, *simt_tf);
        kr_backend_free(b->be, dw);
        dw = NULL;
    }
    for (size_t ti = 0; ti < N_TYPES; ti++) {
        kr_dtype t = k_types[ti].t;
        const bool rp = k_types[ti].repacked;
        if (!listed("KR_BENCH_TYPES", k_types[ti].name) || k % (int64_t)kr_quant_block_size(t) != 0 ||
            (rp && k % 256 != 0))
            continue;
        size_t ws = 0;
        dw = upload_weights(b->be, t, wf, n, k, &ws, rp);
        b->sc = rp ? (const uint8_t *)dw->ptr + (size_t)n * ws : NULL;
        if (!dw)
            goto out;
        for (size_t vi = 0; vi < N_VARS; vi++) {
            if (!listed("KR_BENCH_VARIANTS", k_vars[vi].name))
                continue;
            if ((k_vars[vi].f16a && !kr_gemm_mma_supports(t)) ||
                (rp && (k_vars[vi].v == KR_GEMM_TC128 || k_vars[vi].v == KR_GEMM_TC64)))
                continue;
            if (kr_backend_memset(b->be, b->c, 0xFF, nc * sizeof(float), NULL, &err) != KR_OK)
                goto out_err;
            double ms = time_gemm(b, k_vars[vi].v, k_vars[vi].f16a, t, dw->ptr, ws);
            if (ms < 0) {
                printf("gemm %-5s %-9s FAILED\n", k_types[ti].name, k_vars[vi].name);
                continue;
            }
            double tf = flops / (ms * 1e-3) * 1e-12;
            if (t == KR_DTYPE_F16 && tf > *best_f16)
                *best_f16 = tf;
            printf("gemm %-5s %-9s %9.4f ms %8.2f TFLOP/s", k_types[ti].name, k_vars[vi].name, ms, tf);
            if (simt_ms > 0)
                printf("  %5.2fx simt", simt_ms / ms);
            if (peak > 0)
                printf("  %5.1f%% peak", 100.0 * tf / peak);
            const char *ne = getenv("KR_BENCH_NMSE");
            if (have_ref && !(ne && strcmp(ne, "0") == 0)) {
                if (kr_backend_d2h(b->be, c2, b->c, nc * sizeof(float), NULL, &err) != KR_OK)
                    goto out_err;
                double num = 0, den = 0;
                for (size_t i = 0; i < nc; i++) {
                    double e = (double)c2[i] - c1[i];
                    num += e * e;
                    den += (double)c1[i] * c1[i];
                }
                double nm = den > 0 ? num / den : num;
                printf("  nmse %.2g%s", nm, !(nm < 0.05) ? " BAD" : "");
            }
            printf("\n");
        }
        kr_backend_free(b->be, dw);
        dw = NULL;
        b->sc = NULL;
    }
    rc = 0;
    goto out;
out_err:
    fprintf(stderr, "bench-gemm: %s\n", err.msg);
out:
    kr_backend_free(b->be, dw);
    kr_backend_free(b->be, da);
    kr_backend_free(b->be, dah);
    kr_backend_free(b->be, dc);
    free(wf);
    free(ah);
    free(ah16);
    free(c1);
    free(c2);
    return rc;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* rows survive a timeout kill */
    bench_ctx b = {.iters = 20};
    int64_t shapes[16][3];
    int n_shapes = 0;
    const char *se = getenv("KR_BENCH_SHAPES");
    if (se && *se) {
        const char *p = se;
        while (*p && n_shapes < 16) {
            long long m, n, k;
            int used = 0;
            if (sscanf(p, "%lldx%lldx%lld%n", &m, &n, &k, &used) != 3)
                break;
            shapes[n_shapes][0] = m, shapes[n_shapes][1] = n, shapes[n_shapes][2] = k;
            n_shapes++;
            p += used;
            while (*p == ',' || *p == ' ')
                p++;
        }
    } else {
        shapes[0][0] = 512, shapes[0][1] = 4096, shapes[0][2] = 4096;
        n_shapes = 1;
        if (argc >= 4) {
            shapes[0][0] = atoll(argv[1]);
            shapes[0][1] = atoll(argv[2]);
            shapes[0][2] = atoll(argv[3]);
        }
    }
    if (argc >= 5)
        b.iters = atoi(argv[4]);
    for (int i = 0; i < n_shapes; i++) {
        if (shapes[i][0] < 1 || shapes[i][1] < 1 || shapes[i][2] < 32 || shapes[i][2] % 32 || b.iters < 1) {
            fprintf(stderr, "usage: bench-gemm [M N K [iters]]  (K a multiple of 32)\n");
            return 2;
        }
    }
    if (n_shapes == 0) {
        fprintf(stderr, "bench-gemm: KR_BENCH_SHAPES has no MxNxK\n");
        return 2;
    }
    kr_err err;
    memset(&err, 0, sizeof err);
    int rc = 1;
    if (kr_backend_create(KR_BACKEND_CUDA, 0, &b.be, &err) != KR_OK) {
        fprintf(stderr, "bench-gemm: no CUDA device: %s\n", err.msg);
        return 1;
    }
    const kr_device_info *dev = kr_backend_device_info(b.be);
    const char *name = dev ? dev->name : "?";
    double peak = peak_fp16_tflops(name);
    if (kr_gemm_create(b.be, &b.g, &err) != KR_OK || kr_backend_event_create(b.be, &b.ev0, &err) != KR_OK ||
        kr_backend_event_create(b.be, &b.ev1, &err) != KR_OK) {
        fprintf(stderr, "bench-gemm: %s\n", err.msg);
        goto out;
    }
    printf("bench-gemm: %s (%d SMs)\n", name, dev ? dev->sm_count : 0);
    if (peak > 0)
        printf("bench-gemm: dense fp16 tensor peak (fp32 accumulate) taken as %.1f TFLOP/s\n", peak);
    else
        printf("bench-gemm: unknown card: no peak (set KR_GEMM_PEAK_TFLOPS)\n");
    double first_best = 0, first_simt = 0;
    for (int i = 0; i < n_shapes; i++) {
        b.m = shapes[i][0], b.n = shapes[i][1], b.k = shapes[i][2];
        double best = 0, simt = 0;
        if (bench_shape(&b, peak, &best, &simt) != 0)
            goto out;
        if (i == 0)
            first_best = best, first_simt = simt;
        fflush(stdout);
    }
    if (first_simt > 0 && first_best > 0) {
        printf("bench-gemm: speedup F16 tensor cores (best %.2f TFLOP/s) over F32 SIMT (%.2f TFLOP/s) = %.2fx "
               "(>= 5x: %s)",
               first_best, first_simt, first_best / first_simt, first_best / first_simt >= 5.0 ? "yes" : "no");
        if (peak > 0)
            printf(", %.1f%% of the fp16 peak", 100.0 * first_best / peak);
        printf("\n");
    }
    rc = 0;
out:
    kr_backend_event_destroy(b.be, b.ev0);
    kr_backend_event_destroy(b.be, b.ev1);
    kr_gemm_free(b.g);
    kr_backend_destroy(b.be);
    return rc;
}
