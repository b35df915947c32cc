/* The device KV cache of the CUDA forward pass (gpu_kvcache.h): plan and fit
 * check, slots (host bookkeeping from kernrun/kvcache.h), per-slot step
 * graphs, context shift, reads for tests. docs/KVCACHE.md. */
#include "gpu_kvcache.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_forward_int.h"
#include "kernrun/checked.h"
#include "kernrun/half.h"
#include "kernrun/log.h"
#include "kr_kernel_forward_kv_shift_cu.h"
#if KR__GKV_NEW_KERNELS
#include "kr_decode_kv.h"
#endif

#define KR__DOM "gpu_kvcache"
#define KR__MIB(b) ((double)(b) / 1048576.0)
#define KR__MAX_SEQ 4096u
/* Device memory kept free beyond what we allocate: CUDA graphs, module
 * loads of kernels compiled later, allocator granularity. */
#define KR__RESERVE ((uint64_t)64 << 20)
#define KR__SHIFT_SMEM_MAX (48u * 1024u)

kr_status kr__gkv_plan(kr_gpu_forward *g, const kr_gpu_forward_params *p, kr_err *err)
{
    const kr_hparams *hp = &g->hp;
    kr_dtype t = p->kv_type;
    if (t == KR_DTYPE_F32)
        return kr_err_set(err, KR_ERR_UNSUPPORTED,
                          "KV cache type f32 is not supported on CUDA (f16 or q8_0; f32 runs on the CPU backend)");
    if (t != KR_DTYPE_F16 && t != KR_DTYPE_Q8_0)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "KV cache type %s not supported on CUDA (f16 or q8_0)",
                          kr_dtype_name(t));
    /* the new kernels (kr_dec_attention_kv) unless KR_GKV_KERNELS=old (f16, no ring) */
    const char *ke = getenv("KR_GKV_KERNELS");
    bool use_new = KR__GKV_NEW_KERNELS && !(ke && strcmp(ke, "old") == 0);
    if (use_new && hp->head_dim % 8 != 0) { /* kr_dec_attention_kv's limit; the old kernels take even sizes */
        if (t != KR_DTYPE_F16)
            return kr_err_set(err, KR_ERR_UNSUPPORTED,
                              "%s KV cache on CUDA needs head_dim %% 8 == 0 (have %" PRIu32 ")", kr_dtype_name(t),
                              hp->head_dim);
        use_new = false;
    }
    if (t == KR_DTYPE_Q8_0 && !use_new)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "q8_0 KV cache on CUDA needs the kr_dec_attention_kv kernels%s",
                          KR__GKV_NEW_KERNELS ? " (KR_GKV_KERNELS=old is set)" : "");
    if (p->n_seq > KR__MAX_SEQ)
        return kr_err_set(err, KR_ERR_RANGE, "sequence count %" PRIu32 " exceeds the limit %u", p->n_seq,
                          KR__MAX_SEQ);
    if (p->kv_full != KR_KV_FULL_STOP && p->kv_full != KR_KV_FULL_SHIFT)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kv_full %d is neither stop nor shift", (int)p->kv_full);
    kr_kv_plan_params pp = {
        .n_ctx = g->n_ctx,
        .n_seq = p->n_seq,
        .window = hp->sliding_window,
        .ring = !p->kv_no_ring && use_new,
        .type = t,
        .layout = KR_KV_LAYOUT_SPLIT,
    };
    kr_kv_plan pl;
    kr_status st = kr_kv_plan_make(hp, &pp, &pl, err);
    if (st != KR_OK)
        return st;
    if (pl.rows > INT32_MAX || pl.kv_dim > INT32_MAX)
        return kr_err_set(err, KR_ERR_RANGE, "KV cache rows %" PRIu32 " x kv_dim %" PRIu32 " too large", pl.rows,
                          pl.kv_dim);
    kr__gkv *kv = calloc(1, sizeof *kv);
    if (!kv)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    kv->pl = pl;
    kv->window = hp->sliding_window;
    kv->ring = pl.rows < pl.n_ctx;
    kv->full = p->kv_full;
    kv->n_keep = p->n_keep;
    kv->use_new = use_new;
    const char *fr = getenv("KR_GKV_FUSED_ROPE");
    kv->fused_rope = use_new && !(fr && strcmp(fr, "0") == 0);
    kv->n_split = 1;
#if KR__GKV_NEW_KERNELS
    if (use_new) {
        uint32_t vis = kv->window && kv->window < pl.n_ctx ? kv->window : pl.n_ctx;
        kv->n_split = p->attn_splits > 0 ? p->attn_splits
                                         : kr_dec_attention_kv_default_splits(kr_backend_device_info(g->be),
                                                                               (int)hp->n_head, (int)hp->n_head_kv,
                                                                               (int)hp->head_dim, (int)vis);
        if (kv->n_split > 1024)
            kv->n_split = 1024;
        if (kv->n_split < 1)
            kv->n_split = 1;
        kv->fa_ok = kr_dec_fattn_supports(t, (int)hp->n_head, (int)hp->n_head_kv, (int)hp->head_dim, (int)hp->n_rot);
        kv->fa_split = p->attn_splits > 0 ? p->attn_splits
                                          : kr_dec_fattn_default_splits(kr_backend_device_info(g->be),
                                                                        (int)hp->n_head, (int)hp->n_head_kv, (int)vis);
        if (kv->fa_split > KR__GKV_FA_MAX_SPLIT)
            kv->fa_split = KR__GKV_FA_MAX_SPLIT;
    }
#endif
    kv->graphs = calloc(pl.n_seq, sizeof *kv->graphs);
    if (!kv->graphs || (st = kr_kv_slots_init(&kv->sl, pl.n_seq, err)) != KR_OK) {
        if (!kv->graphs)
            st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
        free(kv->graphs);
        free(kv);
        return st;
    }
    g->kv = kv;
    return KR_OK;
}

/* bytes of kr_dec_fattn's scratch (0 without the fused attention) */
static uint64_t kr__fa_scratch_bytes(const kr_gpu_forward *g)
{
#if KR__GKV_NEW_KERNELS
    if (g->kv->fa_ok)
        return 4 * (uint64_t)kr_dec_fattn_scratch_floats((int)g->hp.n_head, (int)g->hp.head_dim, KR__GKV_FA_MAX_SPLIT);
#else
    (void)g;
#endif
    return 0;
}

/* bytes of kr_dec_attention_kv's split partials (0 with the old kernels: g->attn_scratch) + kr_dec_fattn's */
static uint64_t kr__scratch_bytes(const kr_gpu_forward *g)
{
#if KR__GKV_NEW_KERNELS
    const kr__gkv *kv = g->kv;
    uint64_t fa = kr__fa_scratch_bytes(g);
    if (kv->use_new && kv->n_split > 1)
        return fa + 4 * (uint64_t)kr_dec_attention_kv_scratch_floats((int)g->hp.n_head, (int)g->hp.head_dim,
                                                                      kv->n_split);
    return fa;
#else
    (void)g;
#endif
    return 0;
}

kr_status kr__gkv_check_fit(kr_gpu_forward *g, uint64_t weight_bytes, uint64_t act_bytes, uint64_t other_bytes,
                            uint64_t limit, kr_err *err)
{
    const kr__gkv *kv = g->kv;
    const kr_kv_plan *pl = &kv->pl;
    uint64_t avail = limit, total = 0, needed;
    const char *what = "the configured device memory limit";
    if (!limit) {
        what = "free GPU memory";
        kr_err e2;
        kr_err_clear(&e2);
        kr_status s2 = kr_backend_mem_info(g->be, &avail, &total, &e2);
        if (s2 != KR_OK) { /* no number to compare with: allocations will tell */
            KR_LOGW(KR__DOM, "no device memory info (%s): fit not checked", kr_err_msg(&e2, s2));
            avail = UINT64_MAX;
        }
    }
    other_bytes += kr__scratch_bytes(g);
    if (kr_add_overflow_u64(weight_bytes, pl->bytes, &needed) || kr_add_overflow_u64(needed, act_bytes, &needed) ||
        kr_add_overflow_u64(needed, other_bytes, &needed) || kr_add_overflow_u64(needed, KR__RESERVE, &needed))
        return kr_err_set(err, KR_ERR_OVERFLOW, "device memory needed overflows");
    KR_LOGI(KR__DOM, "KV cache %.1f MiB (%s, %" PRIu32 " rows x %" PRIu32 " seqs x %" PRIu32 " layers%s, row %" PRIu64
            " bytes); device memory needed %.1f MiB of %.1f MiB %s", KR__MIB(pl->bytes), kr_dtype_name(pl->type),
            pl->rows, pl->n_seq, pl->n_layer, kv->ring ? ", sliding-window ring" : "", pl->row_bytes,
            KR__MIB(needed), avail == UINT64_MAX ? 0.0 : KR__MIB(avail), limit ? "(limit)" : "free");
    kr_status st = kr_kv_check_fit(needed, avail, what, err);
    if (st != KR_OK)
        kr_err_prefix(err, "n_ctx %" PRIu32 " x %" PRIu32 " seqs, %" PRIu32 " layers, kv row %" PRIu32
                      " %s: weights %" PRIu64 " + KV cache %" PRIu64 " + activations %" PRIu64 " + scratch %" PRIu64
                      " + reserve %" PRIu64 " bytes", pl->n_ctx, pl->n_seq, pl->n_layer, pl->kv_dim,
                      kr_dtype_name(pl->type), weight_bytes, pl->bytes, act_bytes, other_bytes, KR__RESERVE);
    return st;
}

/* layers[l].k_cache / v_cache = the current slot's bases */
static void kr__point(kr_gpu_forward *g)
{
    const kr__gkv *kv = g->kv;
    size_t lb = (size_t)kv->pl.layer_bytes, so = (size_t)kv->sl.cur * kv->pl.rows * (size_t)kv->pl.row_bytes;
    char *b = kv->buf->ptr;
    for (uint32_t l = 0; l < kv->pl.n_layer; l++) {
        g->layers[l].k_cache = (uint16_t *)(b + 2 * (size_t)l * lb + so);
        g->layers[l].v_cache = (uint16_t *)(b + (2 * (size_t)l + 1) * lb + so);
    }
}

kr_status kr__gkv_alloc(kr_gpu_forward *g, kr_err *err)
{
    kr__gkv *kv = g->kv;
    if (kv->pl.bytes > SIZE_MAX)
        return kr_err_set(err, KR_ERR_OVERFLOW, "KV cache size overflows");
    kr_status st = kr_backend_alloc(g->be, (size_t)kv->pl.bytes, &kv->buf, err);
    if (st != KR_OK)
        return kr_err_prefix(err, "allocating the KV cache (%.1f MiB: %" PRIu32 " rows x %" PRIu32 " seqs x %" PRIu32
                             " layers, %s rows of %" PRIu64 " bytes)", KR__MIB(kv->pl.bytes), kv->pl.rows,
                             kv->pl.n_seq, kv->pl.n_layer, kr_dtype_name(kv->pl.type), kv->pl.row_bytes);
    uint64_t fb = kr__fa_scratch_bytes(g), sb = kr__scratch_bytes(g) - fb;
    if (sb && (st = kr_backend_alloc(g->be, (size_t)sb, &kv->scratch_buf, err)) != KR_OK)
        return kr_err_prefix(err, "allocating the attention split scratch");
#if KR__GKV_NEW_KERNELS
    if (fb && ((st = kr_backend_alloc(g->be, (size_t)fb, &kv->fa_scratch, err)) != KR_OK ||
               (st = kr_dec_fattn_scratch_init(g->dec, g->stream, kv->fa_scratch->ptr, (int)g->hp.n_head, err)) !=
                   KR_OK ||
               (st = kr_backend_sync(g->be, g->stream, err)) != KR_OK))
        return kr_err_prefix(err, "allocating the fused attention scratch");
#endif
    kr__point(g);
    g->stats.kv_bytes_per_pos = 2 * kv->pl.row_bytes * kv->pl.n_layer;
    g->stats.kv_bytes = kv->pl.bytes;
    g->stats.kv_rows = kv->pl.rows;
    g->stats.kv_n_seq = kv->pl.n_seq;
    g->stats.kv_type = kv->pl.type;
    return KR_OK;
}

void kr__gkv_free(kr_gpu_forward *g)
{
    kr__gkv *kv = g->kv;
    if (!kv)
        return;
    for (uint32_t s = 0; kv->graphs && s < kv->pl.n_seq; s++)
        kr_backend_graph_destroy(g->be, kv->graphs[s]);
    free(kv->graphs);
    kr_backend_free(g->be, kv->buf);
    kr_backend_free(g->be, kv->scratch_buf);
    kr_backend_free(g->be, kv->fa_scratch);
    kr_kv_slots_fini(&kv->sl);
    free(kv);
    g->kv = NULL;
}

/* ---- the decode step's store and attention ---- */

int kr__gkv_splits(const kr_gpu_forward *g) { return g->kv->use_new ? g->kv->n_split : g->n_split; }

#if KR__GKV_NEW_KERNELS
static void kr__view(const kr_gpu_forward *g, uint32_t l, kr_dec_kv_view *v)
{
    const kr__gkv *kv = g->kv;
    *v = (kr_dec_kv_view){
        .k = g->layers[l].k_cache,
        .v = g->layers[l].v_cache,
        .type = kv->pl.type,
        .rows = (int)kv->pl.rows,
        .kv_dim = (int)kv->pl.kv_dim,
        .row_bytes = (size_t)kv->pl.row_bytes,
    };
}
#endif

kr_status kr__gkv_store(kr_gpu_forward *g, kr_stream *s, uint32_t l, const int32_t *pos, kr_err *err)
{
    const kr__gf_layer *L = &g->layers[l];
#if KR__GKV_NEW_KERNELS
    if (g->kv->use_new) {
        kr_dec_kv_view v;
        kr__view(g, l, &v);
        return kr_dec_kv_store(g->dec, s, g->k, g->v, 1, &v, pos, 0, err);
    }
#endif
    return kr_dec_kv_append(g->dec, s, g->k, g->v, L->k_cache, L->v_cache, (int)g->kv->pl.kv_dim, (int)g->n_ctx, pos,
                            0, err);
}

bool kr__gkv_fused_rope(const kr_gpu_forward *g) { return g->kv->fused_rope; }

kr_status kr__gkv_rope_store(kr_gpu_forward *g, kr_stream *s, uint32_t l, const int32_t *pos, bool neox,
                             const float *freq_factors, kr_err *err)
{
#if KR__GKV_NEW_KERNELS
    const kr_hparams *hp = &g->hp;
    kr_dec_kv_view v;
    kr__view(g, l, &v);
    return kr_dec_kv_store_rope(g->dec, s, g->q, (int)hp->n_head, g->k, g->v, 1, &v, (int)hp->head_dim,
                                (int)hp->n_rot, pos, 0, hp->rope_base, hp->rope_freq_scale, freq_factors, neox, err);
#else
    (void)s, (void)l, (void)pos, (void)neox, (void)freq_factors;
    return kr_err_set(err, KR_ERR_INTERNAL, "gpu_kvcache: fused rope + store without the new kernels");
#endif
}

kr_status kr__gkv_attention(kr_gpu_forward *g, kr_stream *s, uint32_t l, const int32_t *pos, int window, float scale,
                            kr_err *err)
{
    const kr_hparams *hp = &g->hp;
    const kr__gf_layer *L = &g->layers[l];
#if KR__GKV_NEW_KERNELS
    const kr__gkv *kv = g->kv;
    if (kv->use_new) {
        kr_dec_kv_view v;
        kr__view(g, l, &v);
        return kr_dec_attention_kv(g->dec, s, g->q, &v, g->att, (int)hp->n_head, (int)hp->n_head_kv,
                                   (int)hp->head_dim, pos, 0, window, scale, kv->n_split,
                                   kv->scratch_buf ? kv->scratch_buf->ptr : NULL, err);
    }
#endif
    return kr_dec_attention(g->dec, s, g->q, L->k_cache, L->v_cache, g->att, (int)hp->n_head, (int)hp->n_head_kv,
                            (int)hp->head_dim, (int)g->n_ctx, pos, 0, window, scale, g->n_split, g->attn_scratch,
                            err);
}

bool kr__gkv_fattn_ok(const kr_gpu_forward *g) { return g->kv->fa_ok && g->kv->fa_scratch; }
bool kr__gkv_fattn_xq_ok(const kr_gpu_forward *g) { return g->hp.head_dim % 32 == 0; }
bool kr__gkv_fattn_variant_ok(int variant)
{
#if KR__GKV_NEW_KERNELS
    return kr_dec_fattn_variant_name(variant) != NULL;
#else
    return variant == 0;
#endif
}

int kr__gkv_fattn_variant_find(const char *v, size_t n)
{
#if KR__GKV_NEW_KERNELS
    for (int i = 0; kr_dec_fattn_variant_name(i); i++)
        if (strlen(kr_dec_fattn_variant_name(i)) == n && strncmp(v, kr_dec_fattn_variant_name(i), n) == 0)
            return i;
#else
    (void)v, (void)n;
#endif
    return -1;
}

kr_status kr__gkv_fattn(kr_gpu_forward *g, kr_stream *s, uint32_t l, const int32_t *pos, bool neox,
                        const float *freq_factors, int window, float scale, int n_split, int max_stages, int variant,
                        void *xq, const void *pf, size_t pf_bytes, kr_err *err)
{
#if KR__GKV_NEW_KERNELS
    const kr_hparams *hp = &g->hp;
    const kr__gkv *kv = g->kv;
    if (!kr__gkv_fattn_ok(g))
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "gpu_kvcache: the fused attention does not take this model");
    if (n_split <= 0)
        n_split = kv->fa_split;
    if (n_split > KR__GKV_FA_MAX_SPLIT)
        n_split = KR__GKV_FA_MAX_SPLIT;
    kr_dec_kv_view v;
    kr__view(g, l, &v);
    kr_dec_fattn_params fp = {
        .q = g->q, .k_new = g->k, .v_new = g->v, .n_head = (int)hp->n_head, .n_head_kv = (int)hp->n_head_kv,
        .head_dim = (int)hp->head_dim, .n_rot = (int)hp->n_rot, .freq_base = hp->rope_base,
        .freq_scale = hp->rope_freq_scale, .freq_factors = freq_factors, .neox = neox, .pos = pos, .window = window,
        .scale = scale, .n_split = n_split, .scratch = kv->fa_scratch->ptr, .out = g->att, .xq = xq,
        .prefetch = pf, .prefetch_bytes = pf ? pf_bytes : 0, .max_stages = max_stages, .variant = variant};
    return kr_dec_fattn(g->dec, s, &v, &fp, err);
#else
    (void)g, (void)s, (void)l, (void)pos, (void)neox, (void)freq_factors, (void)window, (void)scale, (void)n_split;
    (void)max_stages, (void)variant, (void)xq, (void)pf, (void)pf_bytes;
    return kr_err_set(err, KR_ERR_UNSUPPORTED, "gpu_kvcache: no fused attention without the new kernels");
#endif
}

void kr__gkv_drop_graphs(kr_gpu_forward *g)
{
    kr__gkv *kv = g->kv;
    bool any = false;
    for (uint32_t s = 0; kv && s < kv->pl.n_seq; s++)
        any |= kv->graphs[s] != NULL;
    if (!any)
        return;
    if (!g->dead)
        kr_backend_sync(g->be, g->stream, NULL); /* a replay may be in flight */
    for (uint32_t s = 0; s < kv->pl.n_seq; s++) {
        kr_backend_graph_destroy(g->be, kv->graphs[s]);
        kv->graphs[s] = NULL;
    }
}

/* ---- sequences ---- */

kr_status kr_gpu_forward_seq_use(kr_gpu_forward *g, int32_t seq_id, kr_err *err)
{
    if (!g)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu_forward seq_use: NULL");
    kr__gkv *kv = g->kv;
    uint32_t old = kv->sl.cur;
    kv->sl.seq[old].n_past = g->n_past;
    kr_status st = kr_kv_slots_use(&kv->sl, seq_id, NULL, KR__DOM, err);
    if (st != KR_OK)
        return st;
    if (kv->sl.cur != old) { /* the step graph of a slot captures its cache pointers */
        kv->graphs[old] = g->graph;
        g->graph = kv->graphs[kv->sl.cur]; /* g->graph owns the current slot's */
        kv->graphs[kv->sl.cur] = NULL;
        kr__point(g);
    }
    g->n_past = kv->sl.seq[kv->sl.cur].n_past;
    return KR_OK;
}

int32_t kr_gpu_forward_seq_current(const kr_gpu_forward *g) { return g ? g->kv->sl.seq[g->kv->sl.cur].id : -1; }
bool kr_gpu_forward_seq_cached(const kr_gpu_forward *g, int32_t seq_id)
{
    return g && kr_kv_slots_find(&g->kv->sl, seq_id) >= 0;
}

kr_status kr_gpu_forward_seq_pin(kr_gpu_forward *g, int32_t seq_id, bool pinned, kr_err *err)
{
    if (!g)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu_forward seq_pin: NULL");
    return kr_kv_slots_pin(&g->kv->sl, seq_id, pinned, err);
}

void kr_gpu_forward_seq_drop(kr_gpu_forward *g, int32_t seq_id)
{
    if (!g)
        return;
    kr__gkv *kv = g->kv;
    int64_t s = kr_kv_slots_find(&kv->sl, seq_id);
    if (s < 0)
        return;
    kr_kv_slots_drop(&kv->sl, seq_id);
    if ((uint32_t)s == kv->sl.cur)
        g->n_past = 0;
}

/* ---- context shift ---- */

kr_status kr_gpu_forward_shift(kr_gpu_forward *g, uint32_t n_keep, uint32_t *n_discarded, kr_err *err)
{
    if (!g)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu_forward shift: NULL");
    if (g->dead)
        return kr_err_set(err, KR_ERR_STATE, "gpu_forward shift: an earlier device step failed");
    kr__gkv *kv = g->kv;
    const kr_kv_plan *pl = &kv->pl;
    uint32_t nd = 0;
    kr_status st = kr_kv_shift_count(g->n_past, n_keep, kv->ring, &nd, err);
    if (st != KR_OK)
        return st;
    if ((uint64_t)pl->kv_dim * 4 > KR__SHIFT_SMEM_MAX || pl->row_bytes % 4 != 0)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "context shift on CUDA: kv row of %" PRIu32 " values too long",
                          pl->kv_dim);
    if (!kv->fn_shift) {
        const kr_kernel_source src = {
            .name = "forward/kv_shift.cu",
            .code = (const char *)kr_kernel_forward_kv_shift_cu,
            .len = kr_kernel_forward_kv_shift_cu_LEN,
            .entry = "kr_kv_shift",
        };
        if ((st = kr_backend_get_function(g->be, &src, &kv->fn_shift, err)) != KR_OK)
            return kr_err_prefix(err, "kernel kr_kv_shift");
    }
    const kr_hparams *hp = &g->hp;
    uint32_t n_move = g->n_past - n_keep - nd;
    char *base = (char *)kv->buf->ptr + (size_t)kv->sl.cur * pl->rows * (size_t)pl->row_bytes;
    unsigned long long layer_stride = 2 * pl->layer_bytes, v_off = pl->layer_bytes, rb = pl->row_bytes;
    int kv_dim = (int)pl->kv_dim, head_dim = (int)hp->head_dim, n_rot = (int)hp->n_rot;
    int neox = g->falcon || hp->rope_mode == KR_ROPE_NEOX, type = (int)pl->type;
    float delta = -(float)nd, fb = hp->rope_base, fs = hp->rope_freq_scale;
    const float *ff = g->falcon ? NULL : g->freq_factors;
    /* chunks of <= nd rows: a chunk's destination is the previous chunk's source */
    for (uint32_t c = 0; c < n_move && st == KR_OK; c += nd) {
        uint32_t cnt = n_move - c < nd ? n_move - c : nd;
        int src_row = (int)(n_keep + nd + c), dst_row = (int)(n_keep + c);
        void *args[] = {&base, &layer_stride, &v_off, &rb, &src_row, &dst_row, &kv_dim, &head_dim,
                        &n_rot, &neox, &delta, &fb, &fs, &ff, &type};
        uint32_t grid[3] = {cnt, pl->n_layer, 2}, block[3] = {256, 1, 1};
        st = kr_backend_launch(g->be, kv->fn_shift, grid, block, (size_t)kv_dim * 4, g->stream, args, err);
    }
    if (st == KR_OK)
        st = kr_backend_sync(g->be, g->stream, err);
    if (st != KR_OK) {
        g->dead = true;
        return kr_err_prefix(err, "context shift on the device");
    }
    KR_LOGI(KR__DOM, "context shift of sequence %" PRId32 ": kept %" PRIu32 ", dropped %" PRIu32 ", %" PRIu32
            " -> %" PRIu32 " positions", kv->sl.seq[kv->sl.cur].id, n_keep, nd, g->n_past, g->n_past - nd);
    g->n_past -= nd;
    if (n_discarded)
        *n_discarded = nd;
    return KR_OK;
}

kr_status kr__gkv_before_eval(kr_gpu_forward *g, size_t n, uint32_t *pos, kr_err *err)
{
    kr__gkv *kv = g->kv;
    uint32_t p = *pos, n_ctx = g->n_ctx;
    if (n == 0 || n > n_ctx || p > g->n_past || g->dead)
        return KR_OK; /* the argument checks report these */
    if (p > n_ctx - n && kv->full == KR_KV_FULL_SHIFT && p == g->n_past) {
        kr_status st = kr_gpu_forward_shift(g, kv->n_keep, NULL, err);
        if (st != KR_OK)
            return kr_err_prefix(err, "context full at %" PRIu32 " positions", p);
        p = *pos = g->n_past; /* the tokens go right after the kept ones */
    }
    if (p > n_ctx - n)
        return kr_kv_full_error(n, p, n_ctx, kv->full == KR_KV_FULL_SHIFT, err);
    return kr_kv_rewind_check(&kv->pl, kv->window, g->n_past, p, err);
}

/* ---- reads (tests, tools) ---- */

static void kr__dequant_row(const kr_kv_plan *pl, const unsigned char *row, float *out)
{
    size_t n = pl->kv_dim;
    if (pl->type == KR_DTYPE_F16) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, row + 2 * i, 2);
            out[i] = kr_fp16_to_fp32(h);
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        uint16_t d;
        memcpy(&d, row + n + 2 * (i / 32), 2);
        out[i] = (float)(int8_t)row[i] * kr_fp16_to_fp32(d);
    }
}

kr_status kr_gpu_forward_kv_read(kr_gpu_forward *g, uint32_t layer, uint32_t pos, float *k, float *v, kr_err *err)
{
    if (!g)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu_forward kv_read: NULL");
    const kr__gkv *kv = g->kv;
    const kr_kv_plan *pl = &kv->pl;
    uint32_t np = g->n_past;
    if (layer >= pl->n_layer || pos >= np || (kv->ring && np - pos > pl->rows))
        return kr_err_set(err, KR_ERR_RANGE, "KV read: layer %" PRIu32 " (of %" PRIu32 "), position %" PRIu32
                          " not cached (n_past %" PRIu32 ", %" PRIu32 " rows)", layer, pl->n_layer, pos, np,
                          pl->rows);
    unsigned char *row = malloc((size_t)pl->row_bytes);
    if (!row)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    size_t off = ((size_t)kv->sl.cur * pl->rows + pos % pl->rows) * (size_t)pl->row_bytes;
    kr_status st = kr_backend_sync(g->be, g->stream, err);
    for (int w = 0; w < 2 && st == KR_OK; w++) {
        float *out = w ? v : k;
        if (!out)
            continue;
        const char *src = (const char *)kv->buf->ptr + (2 * (size_t)layer + (size_t)w) * (size_t)pl->layer_bytes + off;
        st = kr_backend_d2h(g->be, row, src, (size_t)pl->row_bytes, NULL, err);
        if (st == KR_OK)
            st = kr_backend_sync(g->be, NULL, err);
        if (st == KR_OK)
            kr__dequant_row(pl, row, out);
    }
    free(row);
    return st;
}
