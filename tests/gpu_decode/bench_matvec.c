/* bench-decode-matvec: GB/s of the decode matvec kernels vs a device-to-device
 * copy measured in the same run.
 *
 *   bench-decode-matvec [--iters N] [--quick]
 *
 * For Q4_0, Q8_0 and F16 (then Q4_1, Q4_K, Q6_K, F32) on 4096x4096 and
 * 11008x4096 matrices: the weights are replicated into enough copies (>= 256
 * MiB in all, several times the L2) and the launches cycle through them, so
 * every matvec reads its weights from DRAM. Time per matvec comes from the
 * wall clock around N launches (captured once into a CUDA graph when the
 * backend can, else plain launches) after a warm-up. GB/s = weight bytes /
 * time. Copy bandwidth = 2 * bytes / time of cuMemcpyDtoD of 512 MiB (read +
 * write), the convention of bandwidthTest and of issue 6's anchor numbers.
 * Then decode attention over an fp16 KV cache (llama-2-7B and llama-3-8B head
 * shapes, positions 511 / 4095 / 16383) with one split and with the default
 * split count: GB/s = K+V bytes read / time.
 * Q4_0/Q8_0/F16 are also timed under several launch geometries (the other
 * types under the default and its prefetch twin)
 * (kr_dec_tuning: rows per warp, warps per block, staged steps); "*" marks
 * the default. Exit status: 0 ok, 1 failure, 77 no GPU (and
 * KERNRUN_REQUIRE_GPU unset). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernrun/backend.h"
#include "kernrun/half.h"
#include "kr_decode.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint64_t g_rng = 0x243F6A8885A308D3ull;
static uint64_t rng_u64(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

#define CHECK(expr)                                                                              \
    do {                                                                                         \
        kr_status st_ = (expr);                                                                  \
        if (st_ != KR_OK) {                                                                      \
            fprintf(stderr, "bench-decode-matvec: %s failed: %s\n", #expr, kr_err_msg(&err, st_)); \
            goto fail;                                                                           \
        }                                                                                        \
    } while (0)

/* seconds per copy of `bytes` (best of 5 rounds of 4) */
static double time_copy(kr_backend *be, void *dst, const void *src, size_t bytes, kr_err *errp)
{
    double best = 1e30;
    for (int round = 0; round < 5; round++) {
        if (kr_backend_sync(be, NULL, errp) != KR_OK)
            return -1;
        double t0 = now_s();
        for (int i = 0; i < 4; i++)
            if (kr_backend_d2d(be, dst, src, bytes, NULL, errp) != KR_OK)
                return -1;
        if (kr_backend_sync(be, NULL, errp) != KR_OK)
            return -1;
        double t = (now_s() - t0) / 4;
        if (t < best)
            best = t;
    }
    return best;
}


/* seconds per matvec (best of 3 timed rounds after a warm-up), or < 0 on error */
/* one matvec: fp32 x, or (xq non-NULL) x quantized to q8 */
static kr_status mv(kr_dec *dec, kr_stream *s, kr_dtype t, const void *w, size_t row_bytes, const void *x,
                    const void *xq, void *y, int64_t rows, int64_t cols, kr_err *errp)
{
    if (xq)
        return kr_dec_matvec_q8(dec, s, t, w, row_bytes, xq, y, rows, cols, errp);
    return kr_dec_matvec(dec, s, t, w, row_bytes, x, y, rows, cols, errp);
}

static double time_matvec(kr_backend *be, kr_dec *dec, kr_stream *stream, kr_dtype t, kr_buffer **bw, size_t copies,
                          size_t row_bytes, void *x, const void *xq, void *y, int64_t rows, int64_t cols, int iters,
                          bool *graph_out, kr_err *errp)
{
    bool graph = false, ok = true;
    kr_graph *gr = NULL;
    double best = 1e30;
    /* first launch outside any capture: JIT-compiles (or fails) here */
    if (mv(dec, stream, t, bw[0]->ptr, row_bytes, x, xq, y, rows, cols, errp) != KR_OK ||
        kr_backend_sync(be, NULL, errp) != KR_OK)
        return -1;
    if (stream && kr_backend_graph_begin(be, stream, errp) == KR_OK) {
        bool cap = true;
        for (int i = 0; i < iters && cap; i++)
            cap = mv(dec, stream, t, bw[(size_t)i % copies]->ptr, row_bytes, x, xq, y, rows, cols, errp) == KR_OK;
        kr_status ge = kr_backend_graph_end(be, stream, &gr, errp);
        graph = cap && ge == KR_OK && gr;
        if (!graph) {
            kr_backend_graph_destroy(be, gr);
            gr = NULL;
            kr_backend_sync(be, stream, NULL);
            if (!cap) /* the launch itself failed (e.g. compile error): report it */
                return -1;
            kr_err_clear(errp);
        }
    }
    for (int round = 0; round < 4 && ok; round++) { /* round 0 is the warm-up */
        ok = kr_backend_sync(be, NULL, errp) == KR_OK;
        double t0 = now_s();
        if (graph) {
            ok = ok && kr_backend_graph_launch(be, gr, stream, errp) == KR_OK;
        } else {
            for (int i = 0; i < iters && ok; i++)
                ok = mv(dec, stream, t, bw[(size_t)i % copies]->ptr, row_bytes, x, xq, y, rows, cols, errp) == KR_OK;
        }
        ok = ok && kr_backend_sync(be, NULL, errp) == KR_OK;
        double dt = (now_s() - t0) / iters;
        if (round > 0 && dt < best)
            best = dt;
    }
    kr_backend_graph_destroy(be, gr);
    *graph_out = graph;
    return ok ? best : -1;
}

/* Fill a host row-major matrix with valid random blocks (sane fp16 scales). */
static void fill_blocks(kr_dtype t, uint8_t *m, size_t bytes)
{
    for (size_t i = 0; i < bytes; i++)
        m[i] = (uint8_t)rng_u64();
    size_t ts = kr_tensor_type_size(t);
    uint16_t d = kr_fp32_to_fp16(0.01f);
    for (size_t o = 0; o + ts <= bytes; o += ts) {
        switch (t) {
        case KR_DTYPE_Q4_0: case KR_DTYPE_Q8_0: case KR_DTYPE_Q4_1: case KR_DTYPE_Q4_K:
            memcpy(m + o, &d, 2);
            break;
        case KR_DTYPE_Q6_K:
            memcpy(m + o + 208, &d, 2);
            break;
        case KR_DTYPE_F16: {
            uint16_t h = kr_fp32_to_fp16((float)((int)(rng_u64() % 2001) - 1000) * 1e-3f);
            memcpy(m + o, &h, 2);
        } break;
        case KR_DTYPE_F32: {
            float f = (float)((int)(rng_u64() % 2001) - 1000) * 1e-3f;
            memcpy(m + o, &f, 4);
        } break;
        default:
            break;
        }
    }
}

/* Decode attention at position pos over an fp16 cache: seconds per call (best
 * of 3 rounds of iters launches), or < 0 on error. */
static double time_attention(kr_backend *be, kr_dec *dec, int n_head, int n_kv, int hd, int pos, int n_split,
                             int iters, kr_err *errp)
{
    const int n_ctx = pos + 1;
    const size_t cache = (size_t)n_ctx * n_kv * hd * 2;
    kr_buffer *bk = NULL, *bv = NULL, *bq = NULL, *bo = NULL, *bs = NULL, *bp = NULL;
    double best = -1;
    size_t scr = kr_dec_attention_scratch_floats(n_head, hd, n_split);
    if (kr_backend_alloc(be, cache, &bk, errp) != KR_OK || kr_backend_alloc(be, cache, &bv, errp) != KR_OK ||
        kr_backend_alloc(be, (size_t)n_head * hd * 4, &bq, errp) != KR_OK ||
        kr_backend_alloc(be, (size_t)n_head * hd * 4, &bo, errp) != KR_OK ||
        kr_backend_alloc(be, scr ? scr * 4 : 16, &bs, errp) != KR_OK || kr_backend_alloc(be, 4, &bp, errp) != KR_OK)
        goto out;
    int32_t p = pos;
    /* 0x3c00 = fp16 1.0 in every half: finite scores, any values do for timing */
    if (kr_backend_memset(be, bk->ptr, 0x3c, cache, NULL, errp) != KR_OK ||
        kr_backend_memset(be, bv->ptr, 0x3c, cache, NULL, errp) != KR_OK ||
        kr_backend_memset(be, bq->ptr, 0, (size_t)n_head * hd * 4, NULL, errp) != KR_OK ||
        kr_backend_h2d(be, bp->ptr, &p, 4, NULL, errp) != KR_OK)
        goto out;
    best = 1e30;
    for (int round = 0; round < 4; round++) {
        if (kr_backend_sync(be, NULL, errp) != KR_OK) {
            best = -1;
            goto out;
        }
        double t0 = now_s();
        for (int i = 0; i < iters; i++) {
            if (kr_dec_attention(dec, NULL, bq->ptr, bk->ptr, bv->ptr, bo->ptr, n_head, n_kv, hd, n_ctx, bp->ptr, 0,
                                 0, 0.088f, n_split, scr ? bs->ptr : NULL, errp) != KR_OK) {
                best = -1;
                goto out;
            }
        }
        if (kr_backend_sync(be, NULL, errp) != KR_OK) {
            best = -1;
            goto out;
        }
        double dt = (now_s() - t0) / iters;
        if (round > 0 && dt < best)
            best = dt;
    }
out:
    kr_backend_free(be, bk);
    kr_backend_free(be, bv);
    kr_backend_free(be, bq);
    kr_backend_free(be, bo);
    kr_backend_free(be, bs);
    kr_backend_free(be, bp);
    return best;
}

int main(int argc, char **argv)
{
    int iters = 200;
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            iters = atoi(argv[++i]);
        else if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else {
            fprintf(stderr, "usage: %s [--iters N] [--quick]\n", argv[0]);
            return 2;
        }
    }
    if (iters < 1)
        iters = 1;
    kr_err err;
    kr_err_clear(&err);
    kr_backend *be = NULL;
    kr_dec *dec = NULL;
    kr_stream *stream = NULL;
    kr_buffer *bcopy_a = NULL, *bcopy_b = NULL, *bx = NULL, *by = NULL, *bxq = NULL;
    int rc = 1, failures = 0;
    kr_status st = kr_backend_create(KR_BACKEND_CUDA, 0, &be, &err);
    if (st != KR_OK) {
        const char *req = getenv("KERNRUN_REQUIRE_GPU");
        fprintf(stderr, "bench-decode-matvec: no CUDA device: %s\n", kr_err_msg(&err, st));
        return req && strcmp(req, "1") == 0 ? 1 : 77;
    }
    const kr_device_info *dev = kr_backend_device_info(be);
    printf("device: %s (sm_%d%d, %d SMs)\n", dev ? dev->name : "?", dev ? dev->cc_major : 0,
           dev ? dev->cc_minor : 0, dev ? dev->sm_count : 0);
    CHECK(kr_dec_create(be, &dec, &err));
    CHECK(kr_dec_prepare_all(dec, &err));
    if (kr_backend_stream_create(be, &stream, &err) != KR_OK)
        stream = NULL;

    /* device-to-device copy bandwidth */
    const size_t copy_bytes = (size_t)512 << 20;
    CHECK(kr_backend_alloc(be, copy_bytes, &bcopy_a, &err));
    CHECK(kr_backend_alloc(be, copy_bytes, &bcopy_b, &err));
    CHECK(kr_backend_memset(be, bcopy_a->ptr, 1, copy_bytes, NULL, &err));
    double tc = time_copy(be, bcopy_b->ptr, bcopy_a->ptr, copy_bytes, &err);
    if (tc <= 0) {
        fprintf(stderr, "bench-decode-matvec: copy failed: %s\n", kr_err_msg(&err, err.code));
        goto fail;
    }
    const double copy_gbs = 2.0 * (double)copy_bytes / tc / 1e9;
    printf("copy (cuMemcpyDtoD 512 MiB, read+write): %.0f GB/s\n", copy_gbs);
    kr_backend_free(be, bcopy_b);
    bcopy_b = NULL;
    kr_backend_free(be, bcopy_a);
    bcopy_a = NULL;

    CHECK(kr_backend_alloc(be, 16384 * sizeof(float), &bx, &err));
    CHECK(kr_backend_alloc(be, 16384 * sizeof(float), &by, &err));
    CHECK(kr_backend_alloc(be, kr_dec_q8_bytes(16384), &bxq, &err));
    {
        float *hx = malloc(16384 * sizeof *hx);
        if (!hx)
            goto fail;
        for (int i = 0; i < 16384; i++)
            hx[i] = (float)((int)(rng_u64() % 2001) - 1000) * 1e-3f;
        kr_status hs = kr_backend_h2d(be, bx->ptr, hx, 16384 * sizeof *hx, NULL, &err);
        free(hx);
        CHECK(hs);
    }

    const kr_dtype types[] = {KR_DTYPE_Q4_0, KR_DTYPE_Q8_0, KR_DTYPE_F16,
                              KR_DTYPE_Q4_1, KR_DTYPE_Q4_K, KR_DTYPE_Q6_K, KR_DTYPE_F32};
    const int64_t shapes[][2] = {{4096, 4096}, {11008, 4096}, {4096, 11008}};
    const size_t n_types = quick ? 3 : sizeof types / sizeof types[0];
    for (size_t ti = 0; ti < n_types; ti++) {
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            kr_dtype t = types[ti];
            int64_t rows = shapes[si][0], cols = shapes[si][1];
            size_t row_bytes = (size_t)cols / kr_tensor_type_block_size(t) * kr_tensor_type_size(t);
            size_t wbytes = row_bytes * (size_t)rows;
            size_t copies = ((size_t)256 << 20) / wbytes + 1;
            kr_buffer **bw = calloc(copies, sizeof *bw);
            uint8_t *host = malloc(wbytes);
            if (!bw || !host) {
                fprintf(stderr, "bench-decode-matvec: out of host memory\n");
                free(bw);
                free(host);
                goto fail;
            }
            fill_blocks(t, host, wbytes);
            bool ok = true;
            for (size_t c = 0; c < copies && ok; c++) {
                ok = kr_backend_alloc(be, wbytes, &bw[c], &err) == KR_OK &&
                     kr_backend_h2d(be, bw[c]->ptr, host, wbytes, NULL, &err) == KR_OK;
            }
            free(host);
            if (!ok) {
                fprintf(stderr, "bench-decode-matvec: upload failed: %s\n", kr_err_msg(&err, err.code));
                for (size_t c = 0; c < copies; c++)
                    kr_backend_free(be, bw[c]);
                free(bw);
                goto fail;
            }
            /* the preset tunings (index 0 = default) with >= 8 staged steps; for
             * Q4_0/Q8_0 also with x quantized to q8 (quantized once, not timed) */
            const size_t n_tun = kr_dec_tuning_count();
            for (int q8 = 0; q8 < (kr_dec_matvec_q8_supports(t) ? 2 : 1); q8++) {
                for (size_t k = 0; k < n_tun; k++) {
                    kr_dec *dk = NULL;
                    kr_dec_tuning tun;
                    bool graph = false;
                    double best = -1;
                    if (!kr_dec_tuning_at(k, &tun) || tun.mv_steps < 8)
                        continue;
                    /* other types: the default and its prefetch twin only */
                    if (ti >= 3 && k != 0 &&
                        !(tun.mv_prefetch && tun.mv_rows == 2 && tun.mv_warps == 4 && tun.mv_steps == 16))
                        continue;
                    if (kr_dec_create_tuned(be, &tun, &dk, &err) == KR_OK &&
                        (!q8 || kr_dec_quantize_q8(dk, NULL, bx->ptr, bxq->ptr, cols, &err) == KR_OK))
                        best = time_matvec(be, dk, stream, t, bw, copies, row_bytes, bx->ptr, q8 ? bxq->ptr : NULL,
                                           by->ptr, rows, cols, iters, &graph, &err);
                    kr_dec_free(dk);
                    if (best <= 0) {
                        printf("matvec %-5s %5lldx%-5lld x %s rows/warp %d warps %d steps %2d%s: failed: %s\n",
                               kr_dtype_name(t), (long long)rows, (long long)cols, q8 ? "q8 " : "f32", tun.mv_rows,
                               tun.mv_warps, tun.mv_steps, tun.mv_prefetch ? " prefetch" : "",
                               kr_err_msg(&err, err.code));
                        kr_err_clear(&err);
                        if (k == 0)
                            failures++;
                        continue;
                    }
                    double gbs = (double)wbytes / best / 1e9;
                    printf("matvec %-5s %5lldx%-5lld x %s rows/warp %d warps %2d steps %2d%s%s %7.2f MB %8.2f us "
                           "%6.0f GB/s %5.1f%% of copy (%s)\n",
                           kr_dtype_name(t), (long long)rows, (long long)cols, q8 ? "q8 " : "f32", tun.mv_rows,
                           tun.mv_warps, tun.mv_steps, tun.mv_prefetch ? " pf" : "   ", k == 0 ? "*" : " ",
                           (double)wbytes / 1e6, best * 1e6, gbs, 100.0 * gbs / copy_gbs, graph ? "graph" : "launches");
                    fflush(stdout);
                }
            }
            for (size_t c = 0; c < copies; c++)
                kr_backend_free(be, bw[c]);
            free(bw);
        }
    }

    /* decode attention: (n_head, n_kv_head, head_dim) of llama-2-7B and llama-3-8B */
    const int attn_shapes[][3] = {{32, 32, 128}, {32, 8, 128}};
    const int attn_pos[] = {511, 4095, 16383};
    for (size_t si = 0; si < sizeof attn_shapes / sizeof attn_shapes[0]; si++) {
        for (size_t pi = 0; pi < sizeof attn_pos / sizeof attn_pos[0]; pi++) {
            const int nh = attn_shapes[si][0], nkv = attn_shapes[si][1], hd = attn_shapes[si][2];
            const int pos = attn_pos[pi];
            const int splits[2] = {1, kr_dec_attention_default_splits(dev, nh, pos + 1)};
            for (int k = 0; k < 2; k++) {
                double t = time_attention(be, dec, nh, nkv, hd, pos, splits[k], quick ? 20 : 50, &err);
                if (t <= 0) {
                    printf("attention %d/%d heads dim %d pos %5d split %2d: failed: %s\n", nh, nkv, hd, pos,
                           splits[k], kr_err_msg(&err, err.code));
                    kr_err_clear(&err);
                    failures++;
                    continue;
                }
                double bytes = 2.0 * (pos + 1) * nkv * hd * 2;
                printf("attention %2d/%2d heads dim %d pos %5d split %2d: %8.2f us %6.0f GB/s %5.1f%% of copy\n", nh,
                       nkv, hd, pos, splits[k], t * 1e6, bytes / t / 1e9, 100.0 * bytes / t / 1e9 / copy_gbs);
                fflush(stdout);
            }
        }
    }
    rc = failures ? 1 : 0;
fail:
    kr_backend_free(be, bx);
    kr_backend_free(be, by);
    kr_backend_free(be, bxq);
    kr_backend_free(be, bcopy_a);
    kr_backend_free(be, bcopy_b);
    kr_backend_stream_destroy(be, stream);
    kr_dec_free(dec);
    kr_backend_destroy(be);
    return rc;
}
