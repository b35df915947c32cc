/* Host KV cache: plan (checked sizes), fit check, sequence slots with LRU
 * eviction and pinning, sliding-window ring, context shift, f32/f16/q8_0
 * rows. The arch forward is unchanged: it stores new K/V rows into staging
 * buffers and calls ops->attention; our wrapped attention moves the rows
 * into the cache and runs the model's attention op on the cache (directly,
 * or on an f32 gathered copy of the keys it needs for q8_0 and rings). */
#include "kvcache_int.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernrun/checked.h"
#include "kernrun/half.h"
#include "kernrun/log.h"
#include "kernrun/quant.h"

#define KR__LOG "kvcache"
#define KR__MIB(b) ((double)(b) / (1024.0 * 1024.0))

/* Executor handed to the arch: the real one plus a way back to the cache. */
typedef struct kr__kv_exec {
    kr_exec ex;             /* copy of the real executor (first member) */
    kr_kv *kv;
} kr__kv_exec;

struct kr_kv {
    kr_kv_plan pl;
    kr_hparams hp;
    const kr_ops *base;          /* model ops */
    const float *freq_factors;   /* (n_rot/2) or NULL */
    uint32_t window;             /* attention window (0 = none) */
    bool ring;                   /* rows == window < n_ctx: slot row = pos % rows */
    uint32_t n_batch;
    void **k;                    /* (n_layer) each (n_seq, rows, row_bytes) */
    void **v;                    /* (n_layer) same */
    kr_kv_slots sl;              /* sequences (shared bookkeeping, kr_kv_slots_*) */
    float *stage_k;              /* (n_batch * kv_dim + n_layer) new rows; layer l at +l */
    float *stage_v;              /* same */
    void **stage_kp;             /* (n_layer) stage_k + l */
    void **stage_vp;             /* (n_layer) stage_v + l */
    float *gk;                   /* (g_rows, kv_dim) f32 gathered keys (q8_0 / ring), else NULL */
    float *gv;                   /* same for values */
    uint32_t g_rows;
    int32_t *shift_pos;          /* (n_batch) rope positions for a shift */
    kr_ops ops;                  /* base with attention wrapped */
    kr__kv_exec wex;
    uint32_t pos0, n_tok;        /* running batch */
};

/* ---- plan ---- */

uint64_t kr_kv_host_ram(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
    uint64_t b;
    if (pages <= 0 || psz <= 0 || kr_mul_overflow_u64((uint64_t)pages, (uint64_t)psz, &b))
        return 0;
    return b;
}

kr_status kr_kv_plan_make(const kr_hparams *hp, const kr_kv_plan_params *p, kr_kv_plan *pl, kr_err *err)
{
    if (!hp || !p || !pl)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "KV plan: NULL argument");
    memset(pl, 0, sizeof *pl);
    if (p->n_ctx == 0)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "KV plan: n_ctx is 0");
    if (p->type != KR_DTYPE_F32 && p->type != KR_DTYPE_F16 && p->type != KR_DTYPE_Q8_0)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "KV cache type %s not supported (f32, f16 or q8_0)",
                          kr_dtype_name(p->type));
    uint64_t kv_dim;
    if (kr_mul_overflow_u64(hp->n_head_kv, hp->head_dim, &kv_dim) || kv_dim == 0 || kv_dim > UINT32_MAX)
        return kr_err_set(err, KR_ERR_OVERFLOW, "KV row size: %" PRIu32 " kv heads x head_dim %" PRIu32,
                          hp->n_head_kv, hp->head_dim);
    if (p->layout != KR_KV_LAYOUT_BLOCKS && p->layout != KR_KV_LAYOUT_SPLIT)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "KV plan: layout %d unknown", (int)p->layout);
    if (p->layout == KR_KV_LAYOUT_SPLIT && p->type == KR_DTYPE_Q8_0 && kv_dim % 32 == 0) {
        pl->row_bytes = (kv_dim + 2 * (kv_dim / 32) + 15) / 16 * 16; /* kv_dim < 2^32: no overflow */
    } else if (p->layout == KR_KV_LAYOUT_SPLIT && p->type == KR_DTYPE_F16) {
        pl->row_bytes = (2 * kv_dim + 15) / 16 * 16;
    } else if (!kr_dtype_row_size(p->type, kv_dim, &pl->row_bytes))
        return kr_err_set(err, KR_ERR_UNSUPPORTED,
                          "KV cache type %s needs rows of whole %zu-element blocks; kv row has %" PRIu64
                          " (%" PRIu32 " kv heads x %" PRIu32 ")", kr_dtype_name(p->type),
                          kr_dtype_block_size(p->type), kv_dim, hp->n_head_kv, hp->head_dim);
    pl->n_layer = hp->n_layer;
    pl->n_seq = p->n_seq ? p->n_seq : 1;
    pl->n_ctx = p->n_ctx;
    pl->rows = (p->ring && p->window && p->window < p->n_ctx) ? p->window : p->n_ctx;
    pl->kv_dim = (uint32_t)kv_dim;
    pl->type = p->type;
    if (kr_mul3_overflow_u64(pl->n_seq, pl->rows, pl->row_bytes, &pl->layer_bytes) ||
        kr_mul3_overflow_u64(pl->layer_bytes, pl->n_layer, 2, &pl->bytes) || pl->layer_bytes > SIZE_MAX)
        return kr_err_set(err, KR_ERR_OVERFLOW,
                          "KV cache size overflows: %" PRIu32 " seqs x %" PRIu32 " rows x %" PRIu64
                          " bytes x %" PRIu32 " layers x 2", pl->n_seq, pl->rows, pl->row_bytes, pl->n_layer);
    return KR_OK;
}

kr_status kr_kv_type_parse(const char *s, kr_dtype *out, kr_err *err)
{
    static const struct {
        const char *name;
        kr_dtype type;
    } types[] = {{"f32", KR_DTYPE_F32}, {"f16", KR_DTYPE_F16}, {"q8_0", KR_DTYPE_Q8_0}};
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_kv_type_parse: out is NULL");
    for (size_t i = 0; s && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(s, types[i].name) == 0) {
            *out = types[i].type;
            return KR_OK;
        }
    return kr_err_set(err, KR_ERR_INVALID_ARG, "KV cache type '%s' unknown (f32, f16 or q8_0)", s ? s : "(null)");
}

kr_status kr_kv_check_fit(uint64_t needed, uint64_t available, const char *what, kr_err *err)
{
    if (needed <= available)
        return KR_OK;
    return kr_err_set(err, KR_ERR_LIMIT,
                      "KV cache needs %" PRIu64 " bytes (%.1f MiB) but only %" PRIu64 " bytes (%.1f MiB) of %s "
                      "are available; lower -c / the sequence count or use --kv-type f16|q8_0",
                      needed, KR__MIB(needed), available, KR__MIB(available), what ? what : "memory");
}

/* ---- rows ---- */

static void *kr__aligned(size_t bytes)
{
    size_t r;
    if (kr_add_overflow_size(bytes, 63, &r))
        return NULL;
    r &= ~(size_t)63;
    return aligned_alloc(64, r ? r : 64);
}

static char *kr__row(const kr_kv *kv, void *const *base, uint32_t layer, uint32_t slot, uint32_t pos)
{
    uint32_t r = kv->ring ? pos % kv->pl.rows : pos;
    return (char *)base[layer] + ((size_t)slot * kv->pl.rows + r) * (size_t)kv->pl.row_bytes;
}

static void kr__put_row(const kr_kv *kv, const float *src, void *dst)
{
    size_t n = kv->pl.kv_dim;
    if (kv->pl.type == KR_DTYPE_F32) {
        memcpy(dst, src, n * sizeof *src);
    } else if (kv->pl.type == KR_DTYPE_F16) {
        uint16_t *h = dst;
        for (size_t i = 0; i < n; i++)
            h[i] = kr_fp32_to_fp16(src[i]);
    } else {
        (void)kr_quantize_row(KR_DTYPE_Q8_0, src, dst, n); /* row size validated by the plan */
    }
}

static void kr__get_row(const kr_kv *kv, const void *src, float *dst)
{
    size_t n = kv->pl.kv_dim;
    if (kv->pl.type == KR_DTYPE_F32) {
        memcpy(dst, src, n * sizeof *dst);
    } else if (kv->pl.type == KR_DTYPE_F16) {
        const uint16_t *h = src;
        for (size_t i = 0; i < n; i++)
            dst[i] = kr_fp16_to_fp32(h[i]);
    } else {
        (void)kr_dequantize_row(KR_DTYPE_Q8_0, src, dst, n);
    }
}

/* ---- wrapped attention ---- */

typedef struct kr__gather_job {
    const kr_kv *kv;
    uint32_t layer, slot, lo;    /* rows lo + [begin, end) of this layer and slot */
} kr__gather_job;

/* gk/gv rows [b, e) = cached positions lo+b .. lo+e-1 as f32 */
static void kr__gather_rows(void *arg, size_t b, size_t e, int tid)
{
    (void)tid;
    const kr__gather_job *j = arg;
    const kr_kv *kv = j->kv;
    size_t D = kv->pl.kv_dim;
    for (size_t i = b; i < e; i++) {
        uint32_t p = j->lo + (uint32_t)i;
        kr__get_row(kv, kr__row(kv, kv->k, j->layer, j->slot, p), kv->gk + i * D);
        kr__get_row(kv, kr__row(kv, kv->v, j->layer, j->slot, p), kv->gv + i * D);
    }
}

static kr_status kr__kv_attention(const kr_exec *ex, const kr_attn_args *a, kr_err *err)
{
    const kr__kv_exec *w = (const kr__kv_exec *)ex;
    kr_kv *kv = w->kv;
    const kr_exec *rex = &w->ex;
    size_t D = kv->pl.kv_dim;
    if (!a || a->struct_size < sizeof *a)
        return kr_err_set(err, KR_ERR_ABI, "kv attention: args struct too small");
    /* the layer from the staging offset (integers: a->k may be any pointer) */
    uintptr_t ka = (uintptr_t)a->k, k0 = (uintptr_t)kv->stage_k;
    size_t l = (size_t)((ka - k0) / sizeof(float));
    if (ka < k0 || (ka - k0) % sizeof(float) != 0 || l >= kv->pl.n_layer ||
        (const float *)a->v != kv->stage_v + l || a->n_tok != kv->n_tok || a->kv_type != KR_DTYPE_F32)
        return kr_err_set(err, KR_ERR_INTERNAL, "kv attention: not called on the staged rows of this batch");
    const float *sk = kv->stage_k + l, *sv = kv->stage_v + l; /* (n_tok, D) new rows */
    uint32_t P0 = kv->pos0, n = kv->n_tok, slot = kv->sl.cur;
    kr_attn_args aa = *a;

    if (!kv->gk) { /* f32/f16 without ring: rows in place, attention on the slot */
        for (uint32_t i = 0; i < n; i++) {
            kr__put_row(kv, sk + (size_t)i * D, kr__row(kv, kv->k, (uint32_t)l, slot, P0 + i));
            kr__put_row(kv, sv + (size_t)i * D, kr__row(kv, kv->v, (uint32_t)l, slot, P0 + i));
        }
        aa.k = kr__row(kv, kv->k, (uint32_t)l, slot, 0);
        aa.v = kr__row(kv, kv->v, (uint32_t)l, slot, 0);
        aa.kv_type = kv->pl.type;
        aa.pos0 = P0;
        aa.n_ctx = kv->pl.rows;
        return kv->base->attention(rex, &aa, err);
    }
    /* gather keys lo .. P0+n-1 as f32 (old ones from the cache, new ones
     * staged), then store the new rows (a ring may overwrite old ones) */
    uint32_t lo = 0;
    if (kv->window && P0 > kv->window - 1)
        lo = P0 - (kv->window - 1);
    uint32_t g = P0 - lo + n;
    if (g > kv->g_rows)
        return kr_err_set(err, KR_ERR_INTERNAL, "kv attention: %" PRIu32 " rows exceed the gather buffer %" PRIu32, g,
                          kv->g_rows);
    kr__gather_job gj = {.kv = kv, .layer = (uint32_t)l, .slot = slot, .lo = lo};
    if (P0 > lo)
        rex->parallel_for(rex->pool, P0 - lo, 64, kr__gather_rows, &gj);
    memcpy(kv->gk + (size_t)(P0 - lo) * D, sk, (size_t)n * D * sizeof *sk);
    memcpy(kv->gv + (size_t)(P0 - lo) * D, sv, (size_t)n * D * sizeof *sv);
    uint32_t first = (kv->ring && n > kv->pl.rows) ? n - kv->pl.rows : 0; /* earlier ones are overwritten */
    for (uint32_t i = first; i < n; i++) {
        kr__put_row(kv, sk + (size_t)i * D, kr__row(kv, kv->k, (uint32_t)l, slot, P0 + i));
        kr__put_row(kv, sv + (size_t)i * D, kr__row(kv, kv->v, (uint32_t)l, slot, P0 + i));
    }
    aa.k = kv->gk;
    aa.v = kv->gv;
    aa.kv_type = KR_DTYPE_F32;
    aa.pos0 = P0 - lo;
    aa.n_ctx = g;
    return kv->base->attention(rex, &aa, err);
}

/* ---- lifetime ---- */

kr_status kr_kv_new(const kr_kv_plan *pl, const kr_kv_params *p, kr_kv **out, kr_err *err)
{
    kr_status st;
    *out = NULL;
    const kr_hparams *hp = p->hp;
    if (pl->n_layer != hp->n_layer || (uint64_t)hp->n_head_kv * hp->head_dim != pl->kv_dim || p->n_batch == 0)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "KV cache: plan does not match the model");
    uint64_t blocks_rb;
    if (!kr_dtype_row_size(pl->type, pl->kv_dim, &blocks_rb) || blocks_rb != pl->row_bytes)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "KV cache: the host cache needs the block row layout");
    bool ring = pl->rows < pl->n_ctx;
    bool gather = ring || pl->type != KR_DTYPE_F32; /* f16: convert each row once, not per head */
    uint32_t window = hp->sliding_window;
    uint32_t nb = p->n_batch < pl->n_ctx ? p->n_batch : pl->n_ctx;
    uint64_t g_rows = 0;
    if (gather) {
        g_rows = pl->n_ctx;
        if (window && (uint64_t)window - 1 + nb < g_rows)
            g_rows = (uint64_t)window - 1 + nb;
    }
    /* staging (2 x (nb*D + L) floats) and gather (2 x g_rows*D floats) */
    uint64_t stage_elems, g_elems, aux, needed;
    if (kr_mul_overflow_u64(nb, pl->kv_dim, &stage_elems) ||
        kr_add_overflow_u64(stage_elems, pl->n_layer, &stage_elems) ||
        kr_mul_overflow_u64(g_rows, pl->kv_dim, &g_elems) ||
        kr_add_overflow_u64(stage_elems, g_elems, &aux) || kr_mul3_overflow_u64(aux, 2, sizeof(float), &aux) ||
        kr_add_overflow_u64(pl->bytes, aux, &needed) || kr_add_overflow_u64(needed, p->extra_bytes, &needed) ||
        stage_elems > SIZE_MAX / sizeof(float) || g_elems > SIZE_MAX / sizeof(float))
        return kr_err_set(err, KR_ERR_OVERFLOW, "KV cache work buffers overflow");
    uint64_t avail = p->mem_limit ? p->mem_limit : kr_kv_host_ram();
    if (avail && (st = kr_kv_check_fit(needed, avail, p->mem_limit ? "the configured limit" : "host RAM", err)) != KR_OK) {
        kr_err_prefix(err, "n_ctx %" PRIu32 " x %" PRIu32 " seqs, %" PRIu32 " layers, kv row %" PRIu32
                      " %s: cache %" PRIu64 " bytes + work buffers %" PRIu64 " bytes", pl->n_ctx, pl->n_seq,
                      pl->n_layer, pl->kv_dim, kr_dtype_name(pl->type), pl->bytes, needed - pl->bytes);
        return st;
    }

    kr_kv *kv = calloc(1, sizeof *kv);
    if (!kv)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    kv->pl = *pl;
    kv->hp = *hp;
    kv->base = p->ops;
    kv->freq_factors = p->freq_factors;
    kv->window = window;
    kv->ring = ring;
    kv->n_batch = nb;
    kv->g_rows = (uint32_t)g_rows;
    kv->k = calloc(pl->n_layer, sizeof *kv->k);
    kv->v = calloc(pl->n_layer, sizeof *kv->v);
    kv->stage_kp = calloc(pl->n_layer, sizeof *kv->stage_kp);
    kv->stage_vp = calloc(pl->n_layer, sizeof *kv->stage_vp);
    kv->stage_k = kr__aligned((size_t)stage_elems * sizeof(float));
    kv->stage_v = kr__aligned((size_t)stage_elems * sizeof(float));
    kv->shift_pos = calloc(nb, sizeof *kv->shift_pos);
    if (!kv->k || !kv->v || !kv->stage_kp || !kv->stage_vp || !kv->stage_k || !kv->stage_v ||
        !kv->shift_pos)
        goto err_nomem;
    if ((st = kr_kv_slots_init(&kv->sl, pl->n_seq, err)) != KR_OK) {
        kr_kv_free(kv);
        return st;
    }
    if (gather) {
        kv->gk = kr__aligned((size_t)g_elems * sizeof(float));
        kv->gv = kr__aligned((size_t)g_elems * sizeof(float));
        if (!kv->gk || !kv->gv)
            goto err_nomem;
    }
    for (uint32_t l = 0; l < pl->n_layer; l++) {
        kv->k[l] = kr__aligned((size_t)pl->layer_bytes);
        kv->v[l] = kr__aligned((size_t)pl->layer_bytes);
        if (!kv->k[l] || !kv->v[l])
            goto err_nomem;
        kv->stage_kp[l] = kv->stage_k + l;
        kv->stage_vp[l] = kv->stage_v + l;
    }
    kv->ops = *p->ops;
    kv->ops.attention = kr__kv_attention;
    kv->wex.kv = kv;
    KR_LOGI(KR__LOG, "KV cache %.1f MiB (%s, %" PRIu32 " rows x %" PRIu32 " seqs x %" PRIu32
            " layers%s) + %.1f MiB work buffers", KR__MIB(pl->bytes), kr_dtype_name(pl->type), pl->rows,
            pl->n_seq, pl->n_layer, ring ? ", sliding-window ring" : "", KR__MIB(aux));
    *out = kv;
    return KR_OK;

err_nomem:
    st = kr_err_set(err, KR_ERR_NOMEM, "cannot allocate the KV cache: %" PRIu64 " bytes (%.1f MiB)", needed,
                    KR__MIB(needed));
    kr_kv_free(kv);
    return st;
}

void kr_kv_free(kr_kv *kv)
{
    if (!kv)
        return;
    for (uint32_t l = 0; l < kv->pl.n_layer; l++) {
        if (kv->k)
            free(kv->k[l]);
        if (kv->v)
            free(kv->v[l]);
    }
    free(kv->k);
    free(kv->v);
    kr_kv_slots_fini(&kv->sl);
    free(kv->stage_kp);
    free(kv->stage_vp);
    free(kv->stage_k);
    free(kv->stage_v);
    free(kv->gk);
    free(kv->gv);
    free(kv->shift_pos);
    free(kv);
}

const kr_kv_plan *kr_kv_get_plan(const kr_kv *kv) { return &kv->pl; }

void kr_kv_begin(kr_kv *kv, const kr_exec *real_ex, uint32_t pos0, uint32_t n_tok, kr_kv_batch *b)
{
    kv->wex.ex = *real_ex;
    kv->pos0 = pos0;
    kv->n_tok = n_tok;
    kr_kv_slots_touch(&kv->sl);
    b->ops = &kv->ops;
    b->ex = &kv->wex.ex;
    b->k_cache = kv->stage_kp;
    b->v_cache = kv->stage_vp;
    b->n_ctx = kv->n_batch;
}

uint32_t kr_kv_n_past(const kr_kv *kv) { return kv->sl.seq[kv->sl.cur].n_past; }
void kr_kv_set_n_past(kr_kv *kv, uint32_t n) { kv->sl.seq[kv->sl.cur].n_past = n; }

kr_status kr_kv_rewind_check(const kr_kv_plan *pl, uint32_t window, uint32_t n_past, uint32_t pos, kr_err *err)
{
    bool ring = pl->rows < pl->n_ctx;
    if (!ring || pos == 0 || n_past <= pl->rows || (uint64_t)(n_past - pos) + window - 1 <= pl->rows)
        return KR_OK;
    return kr_err_set(err, KR_ERR_STATE,
                      "cannot go back to position %" PRIu32 " from %" PRIu32 ": the sliding-window ring of %" PRIu32
                      " rows no longer holds the keys it needs", pos, n_past, pl->rows);
}

kr_status kr_kv_can_rewind(const kr_kv *kv, uint32_t pos, kr_err *err)
{
    return kr_kv_rewind_check(&kv->pl, kv->window, kr_kv_n_past(kv), pos, err);
}

kr_status kr_kv_full_error(size_t n, uint32_t pos, uint32_t n_ctx, bool shift_on, kr_err *err)
{
    return kr_err_set(err, KR_ERR_RANGE, "context full: eval of %zu tokens at position %" PRIu32
                      " exceeds the context size %" PRIu32 "%s", n, pos, n_ctx,
                      shift_on ? "" : " (context shift is off)");
}

/* ---- sequence slots (shared with plugins/cuda_forward) ---- */

kr_status kr_kv_slots_init(kr_kv_slots *s, uint32_t n_seq, kr_err *err)
{
    memset(s, 0, sizeof *s);
    s->n_seq = n_seq ? n_seq : 1;
    s->seq = calloc(s->n_seq, sizeof *s->seq);
    if (!s->seq)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory (%" PRIu32 " sequence slots)", s->n_seq);
    s->seq[0].used = true; /* sequence 0 current */
    return KR_OK;
}

void kr_kv_slots_fini(kr_kv_slots *s)
{
    if (!s)
        return;
    free(s->seq);
    s->seq = NULL;
    s->n_seq = 0;
}

int64_t kr_kv_slots_find(const kr_kv_slots *s, int32_t id)
{
    for (uint32_t i = 0; i < s->n_seq; i++)
        if (s->seq[i].used && s->seq[i].id == id)
            return i;
    return -1;
}

void kr_kv_slots_touch(kr_kv_slots *s) { s->seq[s->cur].stamp = ++s->clock; }

kr_status kr_kv_slots_use(kr_kv_slots *sl, int32_t id, int32_t *evicted, const char *domain, kr_err *err)
{
    if (evicted)
        *evicted = -1;
    if (id < 0)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "sequence id %" PRId32 " is negative", id);
    int64_t s = kr_kv_slots_find(sl, id);
    if (s < 0) {
        for (uint32_t i = 0; i < sl->n_seq && s < 0; i++)
            if (!sl->seq[i].used)
                s = i;
        if (s < 0) { /* evict the least recently used unpinned sequence */
            for (uint32_t i = 0; i < sl->n_seq; i++)
                if (!sl->seq[i].pinned && (s < 0 || sl->seq[i].stamp < sl->seq[s].stamp))
                    s = i;
            if (s < 0)
                return kr_err_set(err, KR_ERR_LIMIT,
                                  "no KV cache slot for sequence %" PRId32 ": all %" PRIu32
                                  " slots hold pinned sequences (unpin or drop one, or raise the sequence count)",
                                  id, sl->n_seq);
            KR_LOGI(domain ? domain : KR__LOG, "sequence %" PRId32 " evicted (least recently used, %" PRIu32
                    " positions) for sequence %" PRId32, sl->seq[s].id, sl->seq[s].n_past, id);
            if (evicted)
                *evicted = sl->seq[s].id;
        }
        sl->seq[s] = (kr_kv_seq){.id = id, .used = true};
    }
    sl->cur = (uint32_t)s;
    kr_kv_slots_touch(sl);
    return KR_OK;
}

kr_status kr_kv_slots_pin(kr_kv_slots *sl, int32_t id, bool pinned, kr_err *err)
{
    int64_t s = kr_kv_slots_find(sl, id);
    if (s < 0)
        return kr_err_set(err, KR_ERR_NOT_FOUND, "sequence %" PRId32 " is not in the KV cache", id);
    sl->seq[s].pinned = pinned;
    return KR_OK;
}

void kr_kv_slots_drop(kr_kv_slots *sl, int32_t id)
{
    int64_t s = kr_kv_slots_find(sl, id);
    if (s < 0)
        return;
    if ((uint32_t)s == sl->cur) {
        sl->seq[s].n_past = 0;
        sl->seq[s].pinned = false;
    } else {
        sl->seq[s] = (kr_kv_seq){0};
    }
}

kr_status kr_kv_shift_count(uint32_t n_past, uint32_t n_keep, bool ring, uint32_t *n_discard, kr_err *err)
{
    if (ring)
        return kr_err_set(err, KR_ERR_UNSUPPORTED,
                          "context shift on a sliding-window ring cache is not supported (the ring holds the "
                          "window only; raise the context size instead)");
    if (n_keep >= n_past || n_past - n_keep < 2)
        return kr_err_set(err, KR_ERR_RANGE,
                          "context shift: nothing to drop (n_keep %" PRIu32 ", %" PRIu32 " positions cached)",
                          n_keep, n_past);
    *n_discard = (n_past - n_keep) / 2;
    return KR_OK;
}

/* ---- sequences of the host cache ---- */

kr_status kr_kv_seq_use(kr_kv *kv, int32_t id, kr_err *err) { return kr_kv_slots_use(&kv->sl, id, NULL, KR__LOG, err); }
int32_t kr_kv_seq_current(const kr_kv *kv) { return kv->sl.seq[kv->sl.cur].id; }
bool kr_kv_seq_cached(const kr_kv *kv, int32_t id) { return kr_kv_slots_find(&kv->sl, id) >= 0; }
kr_status kr_kv_seq_pin(kr_kv *kv, int32_t id, bool pinned, kr_err *err)
{
    return kr_kv_slots_pin(&kv->sl, id, pinned, err);
}
void kr_kv_seq_drop(kr_kv *kv, int32_t id) { kr_kv_slots_drop(&kv->sl, id); }

/* ---- shift ---- */

kr_status kr_kv_shift(kr_kv *kv, const kr_exec *ex, uint32_t n_keep, uint32_t *n_discarded, kr_err *err)
{
    kr_kv_seq *sq = &kv->sl.seq[kv->sl.cur];
    uint32_t nd = 0, cur = kv->sl.cur;
    kr_status st = kr_kv_shift_count(sq->n_past, n_keep, kv->ring, &nd, err);
    if (st != KR_OK)
        return st;
    uint32_t n_move = sq->n_past - n_keep - nd;
    size_t rb = (size_t)kv->pl.row_bytes, D = kv->pl.kv_dim;
    for (uint32_t l = 0; l < kv->pl.n_layer; l++) {
        memmove(kr__row(kv, kv->k, l, cur, n_keep), kr__row(kv, kv->k, l, cur, n_keep + nd), n_move * rb);
        memmove(kr__row(kv, kv->v, l, cur, n_keep), kr__row(kv, kv->v, l, cur, n_keep + nd), n_move * rb);
    }
    /* keys were rotated for p; rotate by -nd to get p - nd (rotations add) */
    for (uint32_t i = 0; i < kv->n_batch; i++)
        kv->shift_pos[i] = -(int32_t)nd;
    kr_rope_args ra = {
        .struct_size = sizeof ra,
        .pos = kv->shift_pos,
        .n_head = kv->hp.n_head_kv,
        .head_dim = kv->hp.head_dim,
        .n_rot = kv->hp.n_rot,
        .mode = kv->hp.rope_mode,
        .base = kv->hp.rope_base,
        .freq_scale = kv->hp.rope_freq_scale,
        .freq_factors = kv->freq_factors,
    };
    for (uint32_t l = 0; l < kv->pl.n_layer; l++)
        for (uint32_t done = 0; done < n_move;) {
            uint32_t c = n_move - done < kv->n_batch ? n_move - done : kv->n_batch;
            for (uint32_t i = 0; i < c; i++)
                kr__get_row(kv, kr__row(kv, kv->k, l, cur, n_keep + done + i), kv->stage_k + (size_t)i * D);
            ra.x = kv->stage_k;
            ra.n_tok = c;
            kv->base->rope(ex, &ra);
            for (uint32_t i = 0; i < c; i++)
                kr__put_row(kv, kv->stage_k + (size_t)i * D, kr__row(kv, kv->k, l, cur, n_keep + done + i));
            done += c;
        }
    KR_LOGI(KR__LOG, "context shift of sequence %" PRId32 ": kept %" PRIu32 ", dropped %" PRIu32 ", %" PRIu32
            " -> %" PRIu32 " positions", sq->id, n_keep, nd, sq->n_past, sq->n_past - nd);
    sq->n_past -= nd;
    if (n_discarded)
        *n_discarded = nd;
    return KR_OK;
}

kr_status kr_kv_read(const kr_kv *kv, uint32_t layer, uint32_t pos, float *k, float *v, kr_err *err)
{
    uint32_t np = kr_kv_n_past(kv), cur = kv->sl.cur;
    if (layer >= kv->pl.n_layer || pos >= np || (kv->ring && np - pos > kv->pl.rows))
        return kr_err_set(err, KR_ERR_RANGE, "KV read: layer %" PRIu32 " (of %" PRIu32 "), position %" PRIu32
                          " not cached (n_past %" PRIu32 ", %" PRIu32 " rows)", layer, kv->pl.n_layer, pos, np,
                          kv->pl.rows);
    if (k)
        kr__get_row(kv, kr__row(kv, kv->k, layer, cur, pos), k);
    if (v)
        kr__get_row(kv, kr__row(kv, kv->v, layer, cur, pos), v);
    return KR_OK;
}
