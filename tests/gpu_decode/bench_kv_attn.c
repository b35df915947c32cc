/* bench-kv-attn: decode attention over the device KV cache (kr_dec_attention_kv,
 * kernels/decode/kv_attn.cu) vs the old fp16 kernel (kr_dec_attention), and the
 * KV store / fused RoPE + store launches.
 *
 *   bench-kv-attn [--quick] [--iters N]
 *
 * Shapes: 32/32 heads x 128 (llama-2 7B), 32/8 x 128 (llama-3 8B), 71/1 x 64 (falcon 7B); positions
 * 512, 640, 4096, 32768 (the query at position pos-1 sees pos positions); f16
 * and q8_0 caches. Each layer's cache is replicated (>= 512 MiB in all, many
 * times the L2) and consecutive launches cycle through the copies, so K/V come
 * from DRAM as in a real decode step. Time per call = wall time of a CUDA graph
 * of N calls / N (plain launches when capture fails). GB/s = K+V bytes of the
 * visible rows / time. Copy bandwidth (cuMemcpyDtoD, 2 x bytes / time) is
 * printed for reference. Exit: 0 ok, 1 failure, 77 no GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kernrun/backend.h"
#include "kr_decode.h"
#include "kr_decode_kv.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct bench {
    kr_backend *be;
    kr_dec *dec;
    kr_stream *stream;
    int iters;
    kr_err err;
} bench;

/* what one timed call does */
typedef struct call {
    int kind; /* 0 new attention, 1 old attention, 2 store, 3 fused rope + store, 4 rope then store, 5 old append */
    int variant;
    kr_dtype type;
    int n_head, n_kv, hd, pos, n_split;
    size_t row_bytes, layer_bytes;
    int copies;          /* layers in the buffers, layer_bytes apart */
    uint8_t *kb, *vb;
    float *q, *out, *scratch, *knew, *vnew;
    int32_t *dpos;
} call;

static kr_status do_call(bench *b, const call *c, int i)
{
    const int l = i % c->copies;
    uint8_t *kl = c->kb + (size_t)l * c->layer_bytes, *vl = c->vb + (size_t)l * c->layer_bytes;
    kr_dec_kv_view view = {.k = kl, .v = vl, .type = c->type, .rows = c->pos,
                           .kv_dim = c->n_kv * c->hd, .row_bytes = c->row_bytes};
    const float scale = 0.088f;
    switch (c->kind) {
    case 0:
        return kr_dec_attention_kv_variant(b->dec, b->stream, c->variant, c->q, &view, c->out, c->n_head, c->n_kv,
                                           c->hd, c->dpos, 0, 0, scale, c->n_split, c->scratch, &b->err);
    case 1:
        return kr_dec_attention(b->dec, b->stream, c->q, (const uint16_t *)kl, (const uint16_t *)vl, c->out, c->n_head, c->n_kv,
                                c->hd, c->pos, c->dpos, 0, 0, scale, c->n_split, c->scratch, &b->err);
    case 2:
        return kr_dec_kv_store(b->dec, b->stream, c->knew, c->vnew, 1, &view, c->dpos, 0, &b->err);
    case 3:
        return kr_dec_kv_store_rope(b->dec, b->stream, c->q, c->n_head, c->knew, c->vnew, 1, &view, c->hd, c->hd,
                                    c->dpos, 0, 10000.0f, 1.0f, NULL, false, &b->err);
    case 4: {
        kr_status st = kr_dec_rope(b->dec, b->stream, c->q, c->n_head, c->knew, c->n_kv, c->hd, c->hd, c->dpos, 0,
                                   10000.0f, 1.0f, NULL, false, &b->err);
        return st != KR_OK ? st : kr_dec_kv_store(b->dec, b->stream, c->knew, c->vnew, 1, &view, c->dpos, 0, &b->err);
    }
    default: {
        kr_status st = kr_dec_rope(b->dec, b->stream, c->q, c->n_head, c->knew, c->n_kv, c->hd, c->hd, c->dpos, 0,
                                   10000.0f, 1.0f, NULL, false, &b->err);
        return st != KR_OK ? st
                           : kr_dec_kv_append(b->dec, b->stream, c->knew, c->vnew, (uint16_t *)kl, (uint16_t *)vl,
                                              c->n_kv * c->hd, c->pos, c->dpos, 0, &b->err);
    }
    }
}

/* seconds per call, < 0 on error */
static double time_call(bench *b, const call *c, bool *graphed)
{
    kr_graph *gr = NULL;
    bool graph = false;
    /* other runs' partials may cover this split count's counters */
    if (c->kind == 0 && kr_dec_attention_kv_scratch_init(b->dec, NULL, c->scratch, c->n_head, c->hd, c->n_split,
                                                         &b->err) != KR_OK)
        return -1;
    if (do_call(b, c, 0) != KR_OK || kr_backend_sync(b->be, NULL, &b->err) != KR_OK)
        return -1;
    if (kr_backend_graph_begin(b->be, b->stream, &b->err) == KR_OK) {
        bool cap = true;
        for (int i = 0; i < b->iters && cap; i++)
            cap = do_call(b, c, i) == KR_OK;
        kr_status ge = kr_backend_graph_end(b->be, b->stream, &gr, &b->err);
        graph = cap && ge == KR_OK && gr;
        if (!graph) {
            kr_backend_graph_destroy(b->be, gr);
            gr = NULL;
            kr_backend_sync(b->be, b->stream, NULL);
            if (!cap)
                return -1;
            kr_err_clear(&b->err);
        }
    }
    double best = 1e30;
    bool ok = true;
    for (int round = 0; round < 5 && ok; round++) {
        ok = kr_backend_sync(b->be, NULL, &b->err) == KR_OK;
        double t0 = now_s();
        if (graph)
            ok = ok && kr_backend_graph_launch(b->be, gr, b->stream, &b->err) == KR_OK;
        else
            for (int i = 0; i < b->iters && ok; i++)
                ok = do_call(b, c, i) == KR_OK;
        ok = ok && kr_backend_sync(b->be, b->stream, &b->err) == KR_OK;
        double dt = (now_s() - t0) / b->iters;
        if (round > 0 && dt < best)
            best = dt;
    }
    kr_backend_graph_destroy(b->be, gr);
    *graphed = graph;
    return ok ? best : -1;
}

int main(int argc, char **argv)
{
    bench b = {.iters = 128};
    bool quick = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else if (strcmp(argv[i], "--iters") == 0 && i + 1 < argc)
            b.iters = atoi(argv[++i]);
    }
    if (b.iters < 4)
        b.iters = 4;
    kr_err_clear(&b.err);
    if (kr_backend_create(KR_BACKEND_CUDA, 0, &b.be, &b.err) != KR_OK) {
        fprintf(stderr, "bench-kv-attn: no CUDA backend: %s\n", b.err.msg);
        const char *r = getenv("KERNRUN_REQUIRE_GPU");
        return r && strcmp(r, "1") == 0 ? 1 : 77;
    }
    int rc = 1;
    kr_buffer *bk = NULL, *bv = NULL, *bq = NULL, *bo = NULL, *bs = NULL, *bp = NULL, *bkn = NULL,
              *bvn = NULL, *bca = NULL, *bcb = NULL;
    const kr_device_info *dev = kr_backend_device_info(b.be);
    printf("device: %s, %d SMs\n", dev->name, dev->sm_count);
    if (kr_dec_create(b.be, &b.dec, &b.err) != KR_OK || kr_backend_stream_create(b.be, &b.stream, &b.err) != KR_OK)
        goto out;
    /* copy bandwidth */
    {
        const size_t cb = 512u << 20;
        if (kr_backend_alloc(b.be, cb, &bca, &b.err) != KR_OK || kr_backend_alloc(b.be, cb, &bcb, &b.err) != KR_OK)
            goto out;
        kr_backend_memset(b.be, bca->ptr, 1, cb, NULL, &b.err);
        double best = 1e30;
        for (int r = 0; r < 4; r++) {
            kr_backend_sync(b.be, NULL, &b.err);
            double t0 = now_s();
            for (int i = 0; i < 4; i++)
                kr_backend_d2d(b.be, bcb->ptr, bca->ptr, cb, NULL, &b.err);
            kr_backend_sync(b.be, NULL, &b.err);
            double t = (now_s() - t0) / 4;
            if (r > 0 && t < best)
                best = t;
        }
        printf("copy bandwidth: %.0f GB/s (cuMemcpyDtoD 512 MiB, 2 x bytes / time)\n", 2.0 * cb / best / 1e9);
        kr_backend_free(b.be, bca);
        kr_backend_free(b.be, bcb);
        bca = bcb = NULL;
    }
    const size_t qbytes = 64 * 256 * 4;
    const size_t scr_floats = 64u * 1024u * 258u;
    if (kr_backend_alloc(b.be, qbytes, &bq, &b.err) != KR_OK || kr_backend_alloc(b.be, qbytes, &bo, &b.err) != KR_OK ||
        kr_backend_alloc(b.be, scr_floats * 4, &bs, &b.err) != KR_OK || kr_backend_alloc(b.be, 4, &bp, &b.err) != KR_OK ||
        kr_backend_alloc(b.be, qbytes, &bkn, &b.err) != KR_OK || kr_backend_alloc(b.be, qbytes, &bvn, &b.err) != KR_OK)
        goto out;
    kr_backend_memset(b.be, bq->ptr, 0, qbytes, NULL, &b.err);
    kr_backend_memset(b.be, bs->ptr, 0, scr_floats * 4, NULL, &b.err); /* split counters start at 0 */
    kr_backend_memset(b.be, bkn->ptr, 0, qbytes, NULL, &b.err);
    kr_backend_memset(b.be, bvn->ptr, 0, qbytes, NULL, &b.err);

    static const int shapes[][3] = {{32, 32, 128}, {32, 8, 128}, {71, 1, 64}}; /* falcon 7B last, 640/4096 only */
    /* most telling first (a timeout keeps them); 64..256: the fixed cost, default variant + old only */
    static const int positions[] = {640, 4096, 32768, 512, 64, 128, 256};
    const int n_pos = quick ? 2 : 7;
    const int iters0 = b.iters;
    printf("\n%-5s %-9s %6s %-6s %-8s %6s %9s %8s %s\n", "op", "heads", "pos", "type", "kernel", "split", "us/call",
           "GB/s", "");
    for (int pi = 0; pi < n_pos; pi++) {
        for (size_t si = 0; si < 3; si++) {
            if (si == 2 && positions[pi] != 640 && positions[pi] != 4096)
                continue;
            for (int ti = 0; ti < 2; ti++) {
                const kr_dtype t = ti == 0 ? KR_DTYPE_F16 : KR_DTYPE_Q8_0;
                const int nh = shapes[si][0], nkv = shapes[si][1], hd = shapes[si][2], pos = positions[pi];
                const int kv_dim = nkv * hd;
                /* ~1-4 ms of work per graph */
                b.iters = pos >= 32768 ? iters0 / 16 : pos >= 4096 ? iters0 / 4 : iters0;
                if (b.iters < 4)
                    b.iters = 4;
                call c = {.type = t, .n_head = nh, .n_kv = nkv, .hd = hd, .pos = pos,
                          .q = bq->ptr, .out = bo->ptr, .scratch = bs->ptr, .knew = bkn->ptr, .vnew = bvn->ptr};
                c.row_bytes = kr_dec_kv_row_bytes(t, kv_dim);
                c.layer_bytes = (c.row_bytes * (size_t)pos + 255) / 256 * 256;
                c.copies = (int)((512u << 20) / c.layer_bytes + 1);
                if (c.copies < 2)
                    c.copies = 2;
                if (c.copies > b.iters)
                    c.copies = b.iters;
                const size_t all = c.layer_bytes * (size_t)c.copies;
                if (kr_backend_alloc(b.be, all, &bk, &b.err) != KR_OK ||
                    kr_backend_alloc(b.be, all, &bv, &b.err) != KR_OK)
                    goto out;
                kr_backend_memset(b.be, bk->ptr, 0x3c, all, NULL, &b.err);
                kr_backend_memset(b.be, bv->ptr, 0x3c, all, NULL, &b.err);
                c.kb = bk->ptr;
                c.vb = bv->ptr;
                int32_t p = pos - 1;
                kr_backend_h2d(b.be, bp->ptr, &p, 4, NULL, &b.err);
                c.dpos = bp->ptr;
                const double kv_bytes = 2.0 * (double)pos * (double)kv_dim * (t == KR_DTYPE_F16 ? 2.0 : 1.0625);
                const int def = kr_dec_attention_kv_default_splits(dev, nh, nkv, hd, pos);
                int splits[12], ns = 0;
                splits[ns++] = def;
                static const int sweep[] = {1, 4, 8, 16, 32, 64, 128, 256};
                for (size_t k = 0; k < sizeof sweep / sizeof sweep[0]; k++)
                    if (sweep[k] != def && sweep[k] * 16 <= pos && !(quick && sweep[k] > 64))
                        splits[ns++] = sweep[k];
                char heads[16];
                snprintf(heads, sizeof heads, "%d/%dx%d", nh, nkv, hd);
                for (int v = 0; kr_dec_attention_kv_variant_name(v); v++) {
                    const char *vn = kr_dec_attention_kv_variant_name(v);
                    if (v > 0 && pos < 512 && strcmp(vn, "w4") != 0 && strcmp(vn, "hyb") != 0)
                        continue;
                    for (int k = 0; k < ns; k++) {
                        /* the full sweep for variant 0; the others at the default, and at 640 / 4096
                         * positions also at about 2x and 1/2 of it */
                        if (v > 0 && k > 0 && (pos != 640 && pos != 4096))
                            continue;
                        if (v > 0 && k > 0 && splits[k] != 2 * def && 2 * splits[k] != def &&
                            !(splits[k] > def && splits[k] < 2 * def) && !(2 * splits[k] > def && splits[k] < def))
                            continue;
                        c.kind = 0;
                        c.variant = v;
                        c.n_split = splits[k];
                        bool gph;
                        double s = time_call(&b, &c, &gph);
                        if (s < 0 && b.err.code == KR_ERR_UNSUPPORTED) { /* variant not built for the shape */
                            kr_err_clear(&b.err);
                            break;
                        }
                        if (s < 0) {
                            fprintf(stderr, "bench-kv-attn: %s\n", b.err.msg);
                            goto out;
                        }
                        printf("%-5s %-9s %6d %-6s %-8s %6d %9.2f %8.0f %s%s\n", "attn", heads, pos,
                               t == KR_DTYPE_F16 ? "f16" : "q8_0", kr_dec_attention_kv_variant_name(v), c.n_split,
                               s * 1e6, kv_bytes / s / 1e9, k == 0 ? "default" : "", gph ? "" : " (no graph)");
                    }
                }
                if (t == KR_DTYPE_F16) {
                    int osplit[3] = {1, kr_dec_attention_default_splits(dev, nh, pos), 32};
                    for (int k = 0; k < 3; k++) {
                        if (k == 2 && osplit[1] == 32)
                            continue;
                        c.kind = 1;
                        c.n_split = osplit[k];
                        bool gph;
                        double s = time_call(&b, &c, &gph);
                        if (s < 0) {
                            fprintf(stderr, "bench-kv-attn: old: %s\n", b.err.msg);
                            goto out;
                        }
                        printf("%-5s %-9s %6d %-6s %-8s %6d %9.2f %8.0f %s\n", "attn", heads, pos, "f16", "old",
                               c.n_split, s * 1e6, kv_bytes / s / 1e9, k == 1 ? "old default" : "");
                    }
                }
                if (pi == 0) { /* store timings once per shape and type (640 positions) */
                    static const char *names[] = {"store", "rope+store fused", "rope, store", "rope, old append"};
                    for (int kind = 2; kind <= 5; kind++) {
                        if (kind == 5 && t != KR_DTYPE_F16)
                            continue;
                        c.kind = kind;
                        bool gph;
                        double s = time_call(&b, &c, &gph);
                        if (s < 0) {
                            fprintf(stderr, "bench-kv-attn: %s: %s\n", names[kind - 2], b.err.msg);
                            goto out;
                        }
                        printf("%-5s %-9s %6d %-6s %-17s %9.2f us/call (per layer)\n", "store", heads, pos,
                               t == KR_DTYPE_F16 ? "f16" : "q8_0", names[kind - 2], s * 1e6);
                    }
                }
                kr_backend_free(b.be, bk);
                kr_backend_free(b.be, bv);
                bk = bv = NULL;
                fflush(stdout);
            }
        }
    }
    rc = 0;
out:
    if (rc != 0)
        fprintf(stderr, "bench-kv-attn: failed: %s\n", b.err.msg);
    kr_backend_free(b.be, bk);
    kr_backend_free(b.be, bv);
    kr_backend_free(b.be, bq);
    kr_backend_free(b.be, bo);
    kr_backend_free(b.be, bs);
    kr_backend_free(b.be, bp);
    kr_backend_free(b.be, bkn);
    kr_backend_free(b.be, bvn);
    kr_backend_free(b.be, bca);
    kr_backend_free(b.be, bcb);
    if (b.stream)
        kr_backend_stream_destroy(b.be, b.stream);
    kr_dec_free(b.dec);
    kr_backend_destroy(b.be);
    return rc;
}
