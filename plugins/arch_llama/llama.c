/* llama and mistral architecture handlers.
 *
 * Per token (pre-norm decoder, as llama.cpp's llama graph):
 *   x = token_embd[tok]
 *   per layer l:
 *     h = rms_norm(x) * attn_norm
 *     q = Wq h, k = Wk h, v = Wv h;  rope(q), rope(k)  (adjacent pairs; the
 *         GGUF converter permutes Wq/Wk rows for this)
 *     K[pos], V[pos] = k, v
 *     x += Wo attention(q, K, V)       (GQA; causal; sliding window if set)
 *     h = rms_norm(x) * ffn_norm
 *     x += Wdown (silu(Wgate h) * (Wup h))
 *   logits = Wout (rms_norm(x) * output_norm)   (Wout = token_embd if absent)
 * mistral = llama with <arch>.attention.sliding_window.
 */
#include "kernrun/arch_llama.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernrun/arch_util.h"

enum {
    KR__L_TOK_EMBD = 0,
    KR__L_OUT_NORM,
    KR__L_OUTPUT,
    KR__L_ROPE_FREQS,
    KR__L_N_GLOBAL,
};
enum {
    KR__L_ATTN_NORM = 0,
    KR__L_Q,
    KR__L_K,
    KR__L_V,
    KR__L_O,
    KR__L_FFN_NORM,
    KR__L_GATE,
    KR__L_UP,
    KR__L_DOWN,
    KR__L_N_LAYER,
};

static kr_status kr__llama_hparams_named(const kr_meta_i *m, const char *arch, kr_hparams *hp, kr_err *err)
{
    kr_status st;
#define KR__U32(sfx, req, def, field)                                  \
    if ((st = kr_arch_meta_u32(m, arch, sfx, req, def, &hp->field, err)) != KR_OK) \
        return st;
    KR__U32("context_length", false, 0, n_ctx_train)
    KR__U32("embedding_length", true, 0, n_embd)
    KR__U32("block_count", true, 0, n_layer)
    KR__U32("feed_forward_length", true, 0, n_ff)
    KR__U32("attention.head_count", true, 0, n_head)
    KR__U32("attention.head_count_kv", false, hp->n_head, n_head_kv)
    if (hp->n_head == 0 || hp->n_embd % hp->n_head != 0) {
        uint32_t kl = 0;
        if ((st = kr_arch_meta_u32(m, arch, "attention.key_length", false, 0, &kl, err)) != KR_OK)
            return st;
        if (kl == 0)
            return kr_err_set_local(err, KR_ERR_RANGE, "n_head = %u does not divide n_embd = %u", hp->n_head, hp->n_embd);
    }
    KR__U32("attention.key_length", false, hp->n_head ? hp->n_embd / hp->n_head : 0, head_dim)
    uint32_t vl = 0;
    if ((st = kr_arch_meta_u32(m, arch, "attention.value_length", false, hp->head_dim, &vl, err)) != KR_OK)
        return st;
    if (vl != hp->head_dim)
        return kr_err_set_local(err, KR_ERR_UNSUPPORTED, "value_length %u != key_length %u is not supported", vl,
                           hp->head_dim);
    KR__U32("rope.dimension_count", false, hp->head_dim, n_rot)
    KR__U32("attention.sliding_window", false, 0, sliding_window)
#undef KR__U32
    if ((st = kr_arch_meta_f32(m, arch, "attention.layer_norm_rms_epsilon", 1e-5f, &hp->norm_eps, err)) != KR_OK)
        return st;
    if ((st = kr_arch_meta_f32(m, arch, "rope.freq_base", 10000.0f, &hp->rope_base, err)) != KR_OK)
        return st;
    if ((st = kr_arch_rope_scaling(m, arch, &hp->rope_freq_scale, err)) != KR_OK)
        return st;
    hp->rope_mode = KR_ROPE_NORMAL;
    return KR_OK;
}

static kr_status kr__llama_hparams(const kr_meta_i *m, kr_hparams *hp, kr_err *err)
{
    return kr__llama_hparams_named(m, "llama", hp, err);
}

static kr_status kr__mistral_hparams(const kr_meta_i *m, kr_hparams *hp, kr_err *err)
{
    return kr__llama_hparams_named(m, "mistral", hp, err);
}

static kr_status kr__llama_table(const kr_hparams *hp, kr_tensor_spec *s, size_t cap, size_t *n, kr_err *err)
{
    uint64_t total = KR__L_N_GLOBAL + (uint64_t)hp->n_layer * KR__L_N_LAYER;
    *n = (size_t)total;
    if (!s)
        return KR_OK;
    if (cap < total)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "tensor table needs %zu entries", (size_t)total);
    uint64_t E = hp->n_embd, V = hp->n_vocab, F = hp->n_ff;
    uint64_t QD = (uint64_t)hp->n_head * hp->head_dim, KVD = (uint64_t)hp->n_head_kv * hp->head_dim;
    kr_arch_spec(&s[KR__L_TOK_EMBD], "token_embd.weight", 2, E, V, 0);
    kr_arch_spec(&s[KR__L_OUT_NORM], "output_norm.weight", 1, E, 1, KR_TS_TO_F32);
    kr_arch_spec(&s[KR__L_OUTPUT], "output.weight", 2, E, V, KR_TS_OPTIONAL);
    kr_arch_spec(&s[KR__L_ROPE_FREQS], "rope_freqs.weight", 1, hp->n_rot / 2, 1, KR_TS_OPTIONAL | KR_TS_TO_F32);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        kr_tensor_spec *b = s + KR__L_N_GLOBAL + (size_t)l * KR__L_N_LAYER;
        char nm[KR_ARCH_NAME_MAX];
#define KR__SPEC(idx, sfx, nd, a, bb, fl)                     \
        snprintf(nm, sizeof nm, "blk.%u.%s", l, sfx);      \
        kr_arch_spec(&b[idx], nm, nd, a, bb, fl);
        KR__SPEC(KR__L_ATTN_NORM, "attn_norm.weight", 1, E, 1, KR_TS_TO_F32)
        KR__SPEC(KR__L_Q, "attn_q.weight", 2, E, QD, 0)
        KR__SPEC(KR__L_K, "attn_k.weight", 2, E, KVD, 0)
        KR__SPEC(KR__L_V, "attn_v.weight", 2, E, KVD, 0)
        KR__SPEC(KR__L_O, "attn_output.weight", 2, QD, E, 0)
        KR__SPEC(KR__L_FFN_NORM, "ffn_norm.weight", 1, E, 1, KR_TS_TO_F32)
        KR__SPEC(KR__L_GATE, "ffn_gate.weight", 2, E, F, 0)
        KR__SPEC(KR__L_UP, "ffn_up.weight", 2, E, F, 0)
        KR__SPEC(KR__L_DOWN, "ffn_down.weight", 2, F, E, 0)
#undef KR__SPEC
    }
    return KR_OK;
}

/* Scratch regions for n tokens. */
typedef struct kr__llama_buf {
    float *x;     /* (n, E) residual stream */
    float *h;     /* (n, E) normed input */
    float *q;     /* (n, QD) */
    float *k;     /* (n, KVD) */
    float *v;     /* (n, KVD) */
    float *att;   /* (n, QD) attention output */
    float *tmp;   /* (n, E) projection output */
    float *gate;  /* (n, F) */
    float *up;    /* (n, F) */
} kr__llama_buf;

static void kr__llama_layout(const kr_hparams *hp, uint64_t n, kr_arch_arena *a, void *buf)
{
    kr__llama_buf *b = buf;
    uint64_t E = hp->n_embd, F = hp->n_ff;
    uint64_t QD = (uint64_t)hp->n_head * hp->head_dim, KVD = (uint64_t)hp->n_head_kv * hp->head_dim;
    b->x = kr_arch_take(a, n * E);
    b->h = kr_arch_take(a, n * E);
    b->q = kr_arch_take(a, n * QD);
    b->k = kr_arch_take(a, n * KVD);
    b->v = kr_arch_take(a, n * KVD);
    b->att = kr_arch_take(a, n * QD);
    b->tmp = kr_arch_take(a, n * E);
    b->gate = kr_arch_take(a, n * F);
    b->up = kr_arch_take(a, n * F);
}

static kr_status kr__llama_scratch(const kr_hparams *hp, uint32_t n_tok, size_t *bytes, kr_err *err)
{
    kr__llama_buf b;
    return kr_arch_scratch_bytes(hp, n_tok, kr__llama_layout, &b, bytes, err);
}

static kr_status kr__llama_forward(const kr_forward_args *fa, kr_err *err)
{
    const kr_hparams *hp = fa->hp;
    const kr_ops *ops = fa->ops;
    const kr_exec *ex = fa->ex;
    const kr_weight *w = fa->w;
    size_t n = fa->n_tok, E = hp->n_embd, F = hp->n_ff;
    kr_status st;

    kr__llama_buf b;
    if ((st = kr_arch_forward_begin(fa, KR__L_N_GLOBAL + (size_t)hp->n_layer * KR__L_N_LAYER, kr__llama_layout, &b, err)) !=
        KR_OK)
        return st;

    if ((st = ops->get_rows(ex, &w[KR__L_TOK_EMBD], fa->tokens, n, b.x, err)) != KR_OK)
        return st;
    kr_rope_args ra;
    kr_attn_args aa;
    kr_arch_attention_args(fa, w[KR__L_ROPE_FREQS].data, b.q, b.att, hp->sliding_window, &ra, &aa);

    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const kr_weight *lw = w + KR__L_N_GLOBAL + (size_t)l * KR__L_N_LAYER;
        ops->rms_norm(ex, b.x, lw[KR__L_ATTN_NORM].data, n, E, hp->norm_eps, b.h);
        if ((st = ops->matmul(ex, &lw[KR__L_Q], b.h, n, b.q, err)) != KR_OK ||
            (st = ops->matmul(ex, &lw[KR__L_K], b.h, n, b.k, err)) != KR_OK ||
            (st = ops->matmul(ex, &lw[KR__L_V], b.h, n, b.v, err)) != KR_OK)
            return st;
        if ((st = kr_arch_attention(fa, l, &ra, &aa, b.q, b.k, b.v, &lw[KR__L_O], b.tmp, err)) != KR_OK)
            return st;
        ops->add(ex, b.x, b.tmp, n * E);

        ops->rms_norm(ex, b.x, lw[KR__L_FFN_NORM].data, n, E, hp->norm_eps, b.h);
        if ((st = ops->matmul(ex, &lw[KR__L_GATE], b.h, n, b.gate, err)) != KR_OK ||
            (st = ops->matmul(ex, &lw[KR__L_UP], b.h, n, b.up, err)) != KR_OK)
            return st;
        ops->swiglu(ex, b.gate, b.up, n * F, b.gate);
        if ((st = ops->matmul(ex, &lw[KR__L_DOWN], b.gate, n, b.tmp, err)) != KR_OK)
            return st;
        ops->add(ex, b.x, b.tmp, n * E);
    }

    if (!fa->logits)
        return KR_OK;
    const kr_weight *out = w[KR__L_OUTPUT].data ? &w[KR__L_OUTPUT] : &w[KR__L_TOK_EMBD];
    size_t first = kr_arch_logits_first(fa), rows = n - first;
    ops->rms_norm(ex, b.x + first * E, w[KR__L_OUT_NORM].data, rows, E, hp->norm_eps, b.h);
    return ops->matmul(ex, out, b.h, rows, fa->logits, err);
}

const kr_arch_iface kr_arch_llama_iface = {
    .version = KR_ARCH_IFACE_VERSION,
    .struct_size = sizeof(kr_arch_iface),
    .name = "llama",
    .load_hparams = kr__llama_hparams,
    .tensor_table = kr__llama_table,
    .scratch_size = kr__llama_scratch,
    .forward = kr__llama_forward,
};

const kr_arch_iface kr_arch_mistral_iface = {
    .version = KR_ARCH_IFACE_VERSION,
    .struct_size = sizeof(kr_arch_iface),
    .name = "mistral",
    .load_hparams = kr__mistral_hparams,
    .tensor_table = kr__llama_table,
    .scratch_size = kr__llama_scratch,
    .forward = kr__llama_forward,
};
