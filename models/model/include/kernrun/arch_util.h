/* Helpers shared by architecture handlers (header-only; plugins use it
 * without linking anything). */
#ifndef KERNRUN_ARCH_UTIL_H
#define KERNRUN_ARCH_UTIL_H

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernrun/arch.h"
#include "kernrun/checked.h"

/* Read "<arch>.<suffix>" as a uint32. Absent: *out = def, or KR_ERR_NOT_FOUND
 * with a message when required. */
static inline kr_status kr_arch_meta_u32(const kr_meta_i *m, const char *arch, const char *suffix, bool required,
                                         uint32_t def, uint32_t *out, kr_err *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    uint64_t v;
    kr_status st = m->get_uint(m->ctx, key, &v, err);
    if (st == KR_ERR_NOT_FOUND) {
        if (required)
            return kr_err_set_local(err, KR_ERR_NOT_FOUND, "required key '%s' is missing", key);
        *out = def;
        return KR_OK;
    }
    if (st != KR_OK)
        return st;
    if (v > UINT32_MAX)
        return kr_err_set_local(err, KR_ERR_RANGE, "key '%s' = %" PRIu64 " is too large", key, v);
    *out = (uint32_t)v;
    return KR_OK;
}

/* Read "<arch>.<suffix>" as a float (absent: *out = def). */
static inline kr_status kr_arch_meta_f32(const kr_meta_i *m, const char *arch, const char *suffix, float def,
                                         float *out, kr_err *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    kr_status st = m->get_f32(m->ctx, key, out, err);
    if (st == KR_ERR_NOT_FOUND) {
        *out = def;
        return KR_OK;
    }
    return st;
}

/* Rope scaling: <arch>.rope.scaling.type ("none", "linear"; others are
 * unsupported) with <arch>.rope.scaling.factor, or the legacy
 * <arch>.rope.scale_linear. Sets *freq_scale = 1 / factor (default 1). */
static inline kr_status kr_arch_rope_scaling(const kr_meta_i *m, const char *arch, float *freq_scale, kr_err *err)
{
    char key[128];
    const char *s;
    size_t len;
    float factor = 0.0f;
    *freq_scale = 1.0f;
    snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
    kr_status st = m->get_str(m->ctx, key, &s, &len, err);
    if (st == KR_OK) {
        if (len == 4 && memcmp(s, "none", 4) == 0)
            return KR_OK;
        if (!(len == 6 && memcmp(s, "linear", 6) == 0))
            return kr_err_set_local(err, KR_ERR_UNSUPPORTED, "rope scaling type '%.*s' is not supported (none, linear)",
                               (int)(len > 32 ? 32 : len), s);
        st = kr_arch_meta_f32(m, arch, "rope.scaling.factor", 0.0f, &factor, err);
        if (st != KR_OK)
            return st;
    } else if (st == KR_ERR_NOT_FOUND) {
        st = kr_arch_meta_f32(m, arch, "rope.scale_linear", 0.0f, &factor, err);
        if (st != KR_OK)
            return st;
    } else {
        return st;
    }
    if (factor == 0.0f || factor == 1.0f)
        return KR_OK;
    if (!(factor > 0.0f) || factor > 1e6f)
        return kr_err_set_local(err, KR_ERR_RANGE, "rope scaling factor %g out of range", (double)factor);
    *freq_scale = 1.0f / factor;
    return KR_OK;
}

/* Fill a tensor spec. */
static inline void kr_arch_spec(kr_tensor_spec *s, const char *name, uint32_t n_dims, uint64_t ne0, uint64_t ne1,
                                uint32_t flags)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->n_dims = n_dims;
    s->ne[0] = ne0;
    s->ne[1] = n_dims > 1 ? ne1 : 1;
    s->ne[2] = 1;
    s->ne[3] = 1;
    s->flags = flags;
}

/* Scratch carving: regions of floats, each 64-byte aligned. Sizing pass with
 * base NULL accumulates the total (checked); the carving pass hands out
 * pointers. */
typedef struct kr_arch_arena {
    char *base;      /* NULL while sizing */
    size_t off;      /* bytes used */
    size_t cap;      /* bytes available (carving) */
    bool overflow;
} kr_arch_arena;

static inline float *kr_arch_take(kr_arch_arena *a, uint64_t n_floats)
{
    uint64_t bytes, end, aligned;
    if (a->overflow || kr_mul_overflow_u64(n_floats, sizeof(float), &bytes) ||
        kr_align_up_u64(a->off, 64, &aligned) || kr_add_overflow_u64(aligned, bytes, &end) || end > SIZE_MAX) {
        a->overflow = true;
        return NULL;
    }
    if (a->base && end > a->cap) {
        a->overflow = true;
        return NULL;
    }
    a->off = (size_t)end;
    return a->base ? (float *)(void *)(a->base + aligned) : NULL;
}

/* A handler's scratch layout: carve the regions of its buffer struct `buf`
 * for n tokens out of a (sizing pass when a->base is NULL). */
typedef void (*kr_arch_layout_fn)(const kr_hparams *hp, uint64_t n, kr_arch_arena *a, void *buf);

/* kr_arch_iface.scratch_size from a layout function; buf is scratch space
 * of the handler's buffer struct (only pointers are written to it). */
static inline kr_status kr_arch_scratch_bytes(const kr_hparams *hp, uint32_t n_tok, kr_arch_layout_fn layout,
                                              void *buf, size_t *bytes, kr_err *err)
{
    kr_arch_arena a = {0};
    layout(hp, n_tok, &a, buf); /* hparams are bounded (<= 2^20), n_tok <= 2^24: products fit */
    if (a.overflow)
        return kr_err_set_local(err, KR_ERR_OVERFLOW, "scratch size overflows for %u tokens", n_tok);
    *bytes = a.off;
    return KR_OK;
}

/* The start of every forward: the weight table has n_w entries and the
 * scratch holds the layout for fa->n_tok tokens (buf gets the pointers). */
static inline kr_status kr_arch_forward_begin(const kr_forward_args *fa, size_t n_w, kr_arch_layout_fn layout,
                                              void *buf, kr_err *err)
{
    if (fa->n_w != n_w)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "weight table has %zu entries (expected %zu)", fa->n_w,
                                n_w);
    kr_arch_arena a = {.base = fa->scratch, .cap = fa->scratch_bytes};
    layout(fa->hp, fa->n_tok, &a, buf);
    if (a.overflow)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "scratch of %zu bytes too small for %zu tokens",
                                fa->scratch_bytes, fa->n_tok);
    return KR_OK;
}

/* The rows that get logits: all tokens with fa->logits_all, else the last. */
static inline size_t kr_arch_logits_first(const kr_forward_args *fa)
{
    return fa->logits_all ? 0 : fa->n_tok - 1;
}

/* Rope and attention arguments for one forward batch, as every decoder
 * handler builds them: positions, heads and rope settings from fa and its
 * hparams, scale 1/sqrt(head_dim). ra->x and ra->n_head, aa->k and aa->v
 * are set per layer (kr_arch_attention). freq_factors: (n_rot/2) or NULL;
 * q: (n_tok, n_head * head_dim) queries; att: same shape, attention output;
 * window: sliding window (0 = none). */
static inline void kr_arch_attention_args(const kr_forward_args *fa, const float *freq_factors, float *q, float *att,
                                          uint32_t window, kr_rope_args *ra, kr_attn_args *aa)
{
    const kr_hparams *hp = fa->hp;
    *ra = (kr_rope_args){
        .struct_size = sizeof *ra,
        .pos = fa->pos,
        .n_tok = fa->n_tok,
        .head_dim = hp->head_dim,
        .n_rot = hp->n_rot,
        .mode = hp->rope_mode,
        .base = hp->rope_base,
        .freq_scale = hp->rope_freq_scale,
        .freq_factors = freq_factors,
    };
    *aa = (kr_attn_args){
        .struct_size = sizeof *aa,
        .q = q,
        .kv_type = fa->kv_type,
        .out = att,
        .n_tok = fa->n_tok,
        .n_head = hp->n_head,
        .n_head_kv = hp->n_head_kv,
        .head_dim = hp->head_dim,
        .pos0 = fa->pos0,
        .n_ctx = fa->n_ctx,
        .window = window,
        .scale = 1.0f / sqrtf((float)hp->head_dim),
    };
}

/* The attention step of layer l, shared by the handlers: rope q
 * (n_tok, n_head * head_dim) and k (n_tok, n_head_kv * head_dim) in place,
 * store k and v (same shape as k) in layer l's caches at rows pos0.., attend
 * over the cache into aa->out (aa->q must be q), then out (n_tok, n_embd) =
 * wo * aa->out. ra and aa come from kr_arch_attention_args. */
static inline kr_status kr_arch_attention(const kr_forward_args *fa, uint32_t l, kr_rope_args *ra, kr_attn_args *aa,
                                          float *q, float *k, const float *v, const kr_weight *wo, float *out,
                                          kr_err *err)
{
    const kr_hparams *hp = fa->hp;
    const kr_ops *ops = fa->ops;
    const kr_exec *ex = fa->ex;
    size_t n = fa->n_tok, kvd = (size_t)hp->n_head_kv * hp->head_dim;
    size_t kv_elem = fa->kv_type == KR_DTYPE_F16 ? 2 : 4;
    kr_status st;
    ra->x = q;
    ra->n_head = hp->n_head;
    ops->rope(ex, ra);
    ra->x = k;
    ra->n_head = hp->n_head_kv;
    ops->rope(ex, ra);
    char *kc = (char *)fa->k_cache[l] + (size_t)fa->pos0 * kvd * kv_elem;
    char *vc = (char *)fa->v_cache[l] + (size_t)fa->pos0 * kvd * kv_elem;
    if ((st = ops->store_kv(ex, k, n, kvd, fa->kv_type, kc, err)) != KR_OK ||
        (st = ops->store_kv(ex, v, n, kvd, fa->kv_type, vc, err)) != KR_OK)
        return st;
    aa->k = fa->k_cache[l];
    aa->v = fa->v_cache[l];
    if ((st = ops->attention(ex, aa, err)) != KR_OK)
        return st;
    return ops->matmul(ex, wo, aa->out, n, out, err);
}

#endif
