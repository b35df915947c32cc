/* Private to plugins/cuda_forward: the device KV cache of a kr_gpu_forward
 * (gpu_kvcache.c). Sizing (kr_kv_plan_make with the SPLIT row layout), the
 * fit check against free device memory before any weight is uploaded,
 * sequence slots with the host cache's bookkeeping (kr_kv_slots_*), one
 * captured step graph per slot, context shift (kernels/forward/kv_shift.cu).
 *
 * Device layout (docs/KVCACHE.md): one buffer; layer l's K at
 * l * 2*layer_bytes, its V at (2l+1) * layer_bytes; each (n_seq slots, rows,
 * row_bytes); position p of a sequence at row p % rows. gpu_forward.c's
 * layers[l].k_cache / v_cache always point at the CURRENT slot's K / V base. */
#ifndef KR_GPU_KVCACHE_H
#define KR_GPU_KVCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "kernrun/backend.h"
#include "kernrun/kvcache.h"
#include "kr_gpu_forward.h"

typedef struct kr__gkv {
    kr_kv_plan pl;                 /* SPLIT layout; rows = window with a ring */
    kr_kv_slots sl;                /* sequences */
    uint32_t window;               /* model's sliding window (0: none) */
    bool ring;                     /* pl.rows < pl.n_ctx */
    kr_kv_full full;               /* at n_ctx: stop or shift */
    uint32_t n_keep;               /* positions an automatic shift keeps */
    kr_buffer *buf;                /* all layers, K and V */
    kr_graph **graphs;             /* (n_seq) captured step of each other slot; the current slot's is g->graph */
    kr_function *fn_shift;         /* kv_shift.cu, compiled on first shift */
    bool use_new;                  /* kr_dec_kv_store / kr_dec_attention_kv (else the old f16 kernels) */
    bool fused_rope;               /* use_new and kr_dec_kv_store_rope */
    int n_split;                   /* split count of kr_dec_attention_kv */
    kr_buffer *scratch_buf;        /* its split partials (n_split > 1) */
    bool fa_ok;                    /* kr_dec_fattn takes this cache and model shape (use_new) */
    int fa_split;                  /* its default split count (kr_dec_fattn_default_splits) */
    kr_buffer *fa_scratch;         /* its split counters + partials, up to KR__GKV_FA_MAX_SPLIT splits */
} kr__gkv;

/* most splits kr__gkv_fattn takes (its scratch is sized for them) */
#define KR__GKV_FA_MAX_SPLIT 128

/* 1: the step uses kr_dec_kv_store_rope (or kr_dec_kv_store) and
 * kr_dec_attention_kv (kr_decode_kv.h) for every cache; KR_GKV_KERNELS=old in
 * the environment selects the older kr_dec_kv_append / kr_dec_attention
 * instead (f16 only, rows = n_ctx: no ring), for comparisons. */
#ifndef KR__GKV_NEW_KERNELS
#define KR__GKV_NEW_KERNELS 1
#endif

struct kr_gpu_forward;

/* In kr_gpu_forward_new, before uploading weights: the plan from p (type,
 * n_seq, ring) for g->hp / g->n_ctx. KR_ERR_UNSUPPORTED for F32 and for
 * combinations the kernels lack. Allocates g->kv (host only). */
kr_status kr__gkv_plan(struct kr_gpu_forward *g, const kr_gpu_forward_params *p, kr_err *err);
/* KR_ERR_LIMIT (with the numbers) when weights + cache + activations +
 * other (repack scratch) + a fixed reserve exceed the free device memory
 * (or limit when > 0). Logs the KV size. */
kr_status kr__gkv_check_fit(struct kr_gpu_forward *g, uint64_t weight_bytes, uint64_t act_bytes,
                            uint64_t other_bytes, uint64_t limit, kr_err *err);
/* Allocate the device cache; layers point at slot 0; stats filled. */
kr_status kr__gkv_alloc(struct kr_gpu_forward *g, kr_err *err);
/* Free the cache, the other slots' graphs, g->kv (g->graph is the caller's). */
void kr__gkv_free(struct kr_gpu_forward *g);
/* Destroy the other slots' captured graphs (after the step changed: they
 * would replay the old one); g->graph is the caller's. */
void kr__gkv_drop_graphs(struct kr_gpu_forward *g);
/* Inside the decode step (token position *pos, device): store g->k / g->v
 * into layer l's cache; g->att = attention of g->q over layer l (window:
 * the attention window, 0 none). Launch counts: 1 for the store; the
 * attention 1, plus 1 when kr__gkv_splits(g) > 1 (the combine). */
kr_status kr__gkv_store(struct kr_gpu_forward *g, kr_stream *s, uint32_t l, const int32_t *pos, kr_err *err);
kr_status kr__gkv_attention(struct kr_gpu_forward *g, kr_stream *s, uint32_t l, const int32_t *pos, int window,
                            float scale, kr_err *err);
int kr__gkv_splits(const struct kr_gpu_forward *g);
/* True when the step should use kr__gkv_rope_store (one launch: q rotated in
 * place, k rotated into the cache, v stored; the new kernels, unless
 * KR_GKV_FUSED_ROPE=0) instead of kr_dec_rope + kr__gkv_store. */
bool kr__gkv_fused_rope(const struct kr_gpu_forward *g);
kr_status kr__gkv_rope_store(struct kr_gpu_forward *g, kr_stream *s, uint32_t l, const int32_t *pos, bool neox,
                             const float *freq_factors, kr_err *err);
/* The fused attention block (kr_dec_fattn, kr_decode_kv.h): one launch doing RoPE of g->q (not
 * written back) and g->k, the store of g->k / g->v into layer l's cache, attention into g->att and,
 * when xq != NULL, the q8 activations of g->att (kr_dec_quantize_q8's format) there. n_split 0: the
 * default (fa_split), else 1..KR__GKV_FA_MAX_SPLIT; max_stages 0: the launcher's default; variant: the
 * kernel variant (kr_dec_fattn_variant_name; 0 default); pf /
 * pf_bytes: a range the next kernel reads, prefetched into L2 (NULL/0: off). Only when
 * kr__gkv_fattn_ok(g) (else KR_ERR_UNSUPPORTED). */
bool kr__gkv_fattn_ok(const struct kr_gpu_forward *g);
bool kr__gkv_fattn_xq_ok(const struct kr_gpu_forward *g); /* head_dim % 32 == 0: xq may be asked for */
/* index of the kernel variant named v[0..n) (kr_dec_fattn_variant_name), or -1 */
int kr__gkv_fattn_variant_find(const char *v, size_t n);
bool kr__gkv_fattn_variant_ok(int variant); /* a kernel variant of that index exists */
kr_status kr__gkv_fattn(struct kr_gpu_forward *g, kr_stream *s, uint32_t l, const int32_t *pos, bool neox,
                        const float *freq_factors, int window, float scale, int n_split, int max_stages, int variant,
                        void *xq, const void *pf, size_t pf_bytes, kr_err *err);
/* Before an eval of n tokens at *pos: automatic context shift (kv_full
 * SHIFT, *pos == n_past, full: *pos becomes the new n_past), the CPU path's
 * "context full" message, the ring's rewind check. */
kr_status kr__gkv_before_eval(struct kr_gpu_forward *g, size_t n, uint32_t *pos, kr_err *err);

#endif
