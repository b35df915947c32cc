/* falcon architecture handler (Falcon-7B; Falcon-40B's second norm).
 *
 * Per token (parallel attention + MLP, as llama.cpp's falcon graph):
 *   x = token_embd[tok]
 *   per layer l:
 *     h  = layer_norm(x) * attn_norm + attn_norm_b            (ln_mlp on 40B)
 *     ha = attn_norm_2 present ? layer_norm(x) * attn_norm_2 + b : h   (ln_attn)
 *     [q | k | v] = Wqkv ha;  rope_neox(q), rope_neox(k)
 *     K[pos], V[pos] = k, v
 *     x += Wo attention(q, K, V) + Wdown gelu(Wup h)          (MQA/GQA, causal)
 *   logits = Wout (layer_norm(x) * output_norm + output_norm_b)
 *            (Wout = token_embd when output.weight is absent)
 */
#include "kernrun/arch_falcon.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "kernrun/arch_util.h"

enum {
    KR__F_TOK_EMBD = 0,
    KR__F_OUT_NORM,
    KR__F_OUT_NORM_B,
    KR__F_OUTPUT,
    KR__F_N_GLOBAL,
};
enum {
    KR__F_ATTN_NORM = 0,
    KR__F_ATTN_NORM_B,
    KR__F_ATTN_NORM_2,
    KR__F_ATTN_NORM_2_B,
    KR__F_QKV,
    KR__F_O,
    KR__F_UP,
    KR__F_DOWN,
    KR__F_N_LAYER,
};

static kr_status kr__falcon_hparams(const kr_meta_i *m, kr_hparams *hp, kr_err *err)
{
    const char *arch = "falcon";
    kr_status st;
#define KR__U32(sfx, req, def, field)                                  \
    if ((st = kr_arch_meta_u32(m, arch, sfx, req, def, &hp->field, err)) != KR_OK) \
        return st;
    KR__U32("context_length", false, 0, n_ctx_train)
    KR__U32("embedding_length", true, 0, n_embd)
    KR__U32("block_count", true, 0, n_layer)
    KR__U32("attention.head_count", true, 0, n_head)
    KR__U32("attention.head_count_kv", false, hp->n_head, n_head_kv)
    if (hp->n_head == 0 || hp->n_embd % hp->n_head != 0)
        return kr_err_set_local(err, KR_ERR_RANGE, "n_head = %u does not divide n_embd = %u", hp->n_head, hp->n_embd);
    hp->head_dim = hp->n_embd / hp->n_head;
    KR__U32("feed_forward_length", false, hp->n_embd <= UINT32_MAX / 4 ? 4 * hp->n_embd : 0, n_ff)
    KR__U32("rope.dimension_count", false, hp->head_dim, n_rot)
#undef KR__U32
    if ((st = kr_arch_meta_f32(m, arch, "attention.layer_norm_epsilon", 1e-5f, &hp->norm_eps, err)) != KR_OK)
        return st;
    if ((st = kr_arch_meta_f32(m, arch, "rope.freq_base", 10000.0f, &hp->rope_base, err)) != KR_OK)
        return st;
    if ((st = kr_arch_rope_scaling(m, arch, &hp->rope_freq_scale, err)) != KR_OK)
        return st;
    hp->rope_mode = KR_ROPE_NEOX;
    hp->sliding_window = 0;
    return KR_OK;
}

static kr_status kr__falcon_table(const kr_hparams *hp, kr_tensor_spec *s, size_t cap, size_t *n, kr_err *err)
{
    uint64_t total = KR__F_N_GLOBAL + (uint64_t)hp->n_layer * KR__F_N_LAYER;
    *n = (size_t)total;
    if (!s)
        return KR_OK;
    if (cap < total)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "tensor table needs %zu entries", (size_t)total);
    uint64_t E = hp->n_embd, V = hp->n_vocab, F = hp->n_ff;
    uint64_t QD = (uint64_t)hp->n_head * hp->head_dim, KVD = (uint64_t)hp->n_head_kv * hp->head_dim;
    kr_arch_spec(&s[KR__F_TOK_EMBD], "token_embd.weight", 2, E, V, 0);
    kr_arch_spec(&s[KR__F_OUT_NORM], "output_norm.weight", 1, E, 1, KR_TS_TO_F32);
    kr_arch_spec(&s[KR__F_OUT_NORM_B], "output_norm.bias", 1, E, 1, KR_TS_TO_F32);
    kr_arch_spec(&s[KR__F_OUTPUT], "output.weight", 2, E, V, KR_TS_OPTIONAL);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        kr_tensor_spec *b = s + KR__F_N_GLOBAL + (size_t)l * KR__F_N_LAYER;
        char nm[KR_ARCH_NAME_MAX];
#define KR__SPEC(idx, sfx, nd, a, bb, fl)                     \
        snprintf(nm, sizeof nm, "blk.%u.%s", l, sfx);      \
        kr_arch_spec(&b[idx], nm, nd, a, bb, fl);
        KR__SPEC(KR__F_ATTN_NORM, "attn_norm.weight", 1, E, 1, KR_TS_TO_F32)
        KR__SPEC(KR__F_ATTN_NORM_B, "attn_norm.bias", 1, E, 1, KR_TS_TO_F32)
        KR__SPEC(KR__F_ATTN_NORM_2, "attn_norm_2.weight", 1, E, 1, KR_TS_TO_F32 | KR_TS_OPTIONAL)
        KR__SPEC(KR__F_ATTN_NORM_2_B, "attn_norm_2.bias", 1, E, 1, KR_TS_TO_F32 | KR_TS_OPTIONAL)
        KR__SPEC(KR__F_QKV, "attn_qkv.weight", 2, E, QD + 2 * KVD, 0)
        KR__SPEC(KR__F_O, "attn_output.weight", 2, QD, E, 0)
        KR__SPEC(KR__F_UP, "ffn_up.weight", 2, E, F, 0)
        KR__SPEC(KR__F_DOWN, "ffn_down.weight", 2, F, E, 0)
#undef KR__SPEC
    }
    return KR_OK;
}

typedef struct kr__falcon_buf {
    float *x;     /* (n, E) residual stream */
    float *h;     /* (n, E) attn_norm output (MLP input; attention input on 7B) */
    float *h2;    /* (n, E) attn_norm_2 output (attention input on 40B) */
    float *qkv;   /* (n, QD + 2 KVD) fused projection */
    float *q;     /* (n, QD) */
    float *k;     /* (n, KVD) */
    float *v;     /* (n, KVD) */
    float *att;   /* (n, QD) */
    float *tmp;   /* (n, E) attention projection */
    float *up;    /* (n, F) */
    float *ffo;   /* (n, E) MLP output */
} kr__falcon_buf;

static void kr__falcon_layout(const kr_hparams *hp, uint64_t n, kr_arch_arena *a, void *buf)
{
    kr__falcon_buf *b = buf;
    uint64_t E = hp->n_embd, F = hp->n_ff;
    uint64_t QD = (uint64_t)hp->n_head * hp->head_dim, KVD = (uint64_t)hp->n_head_kv * hp->head_dim;
    b->x = kr_arch_take(a, n * E);
    b->h = kr_arch_take(a, n * E);
    b->h2 = kr_arch_take(a, n * E);
    b->qkv = kr_arch_take(a, n * (QD + 2 * KVD));
    b->q = kr_arch_take(a, n * QD);
    b->k = kr_arch_take(a, n * KVD);
    b->v = kr_arch_take(a, n * KVD);
    b->att = kr_arch_take(a, n * QD);
    b->tmp = kr_arch_take(a, n * E);
    b->up = kr_arch_take(a, n * F);
    b->ffo = kr_arch_take(a, n * E);
}

static kr_status kr__falcon_scratch(const kr_hparams *hp, uint32_t n_tok, size_t *bytes, kr_err *err)
{
    kr__falcon_buf b;
    return kr_arch_scratch_bytes(hp, n_tok, kr__falcon_layout, &b, bytes, err);
}

static kr_status kr__falcon_forward(const kr_forward_args *fa, kr_err *err)
{
    const kr_hparams *hp = fa->hp;
    const kr_ops *ops = fa->ops;
    const kr_exec *ex = fa->ex;
    const kr_weight *w = fa->w;
    size_t n = fa->n_tok, E = hp->n_embd, F = hp->n_ff;
    size_t QD = (size_t)hp->n_head * hp->head_dim, KVD = (size_t)hp->n_head_kv * hp->head_dim;
    size_t QKV = QD + 2 * KVD;
    kr_status st;

    kr__falcon_buf b;
    if ((st = kr_arch_forward_begin(fa, KR__F_N_GLOBAL + (size_t)hp->n_layer * KR__F_N_LAYER, kr__falcon_layout, &b, err)) !=
        KR_OK)
        return st;

    if ((st = ops->get_rows(ex, &w[KR__F_TOK_EMBD], fa->tokens, n, b.x, err)) != KR_OK)
        return st;
    kr_rope_args ra;
    kr_attn_args aa;
    kr_arch_attention_args(fa, NULL, b.q, b.att, 0, &ra, &aa);

    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const kr_weight *lw = w + KR__F_N_GLOBAL + (size_t)l * KR__F_N_LAYER;
        bool has_n2 = lw[KR__F_ATTN_NORM_2].data != NULL;
        if (has_n2 != (lw[KR__F_ATTN_NORM_2_B].data != NULL))
            return kr_err_set_local(err, KR_ERR_FORMAT, "blk.%u: attn_norm_2 weight and bias must both be present", l);
        ops->layer_norm(ex, b.x, lw[KR__F_ATTN_NORM].data, lw[KR__F_ATTN_NORM_B].data, n, E, hp->norm_eps, b.h);
        const float *attn_in = b.h;
        if (has_n2) {
            ops->layer_norm(ex, b.x, lw[KR__F_ATTN_NORM_2].data, lw[KR__F_ATTN_NORM_2_B].data, n, E, hp->norm_eps,
                            b.h2);
            attn_in = b.h2;
        }
        if ((st = ops->matmul(ex, &lw[KR__F_QKV], attn_in, n, b.qkv, err)) != KR_OK)
            return st;
        for (size_t t = 0; t < n; t++) {
            const float *r = b.qkv + t * QKV;
            memcpy(b.q + t * QD, r, QD * sizeof(float));
            memcpy(b.k + t * KVD, r + QD, KVD * sizeof(float));
            memcpy(b.v + t * KVD, r + QD + KVD, KVD * sizeof(float));
        }
        if ((st = kr_arch_attention(fa, l, &ra, &aa, b.q, b.k, b.v, &lw[KR__F_O], b.tmp, err)) != KR_OK)
            return st;
        /* MLP on the attn_norm output, in parallel with attention */
        if ((st = ops->matmul(ex, &lw[KR__F_UP], b.h, n, b.up, err)) != KR_OK)
            return st;
        ops->gelu(ex, b.up, n * F, b.up);
        if ((st = ops->matmul(ex, &lw[KR__F_DOWN], b.up, n, b.ffo, err)) != KR_OK)
            return st;
        ops->add(ex, b.tmp, b.ffo, n * E);
        ops->add(ex, b.x, b.tmp, n * E);
    }

    if (!fa->logits)
        return KR_OK;
    const kr_weight *out = w[KR__F_OUTPUT].data ? &w[KR__F_OUTPUT] : &w[KR__F_TOK_EMBD];
    size_t first = kr_arch_logits_first(fa), rows = n - first;
    ops->layer_norm(ex, b.x + first * E, w[KR__F_OUT_NORM].data, w[KR__F_OUT_NORM_B].data, rows, E, hp->norm_eps,
                    b.h);
    return ops->matmul(ex, out, b.h, rows, fa->logits, err);
}

const kr_arch_iface kr_arch_falcon_iface = {
    .version = KR_ARCH_IFACE_VERSION,
    .struct_size = sizeof(kr_arch_iface),
    .name = "falcon",
    .load_hparams = kr__falcon_hparams,
    .tensor_table = kr__falcon_table,
    .scratch_size = kr__falcon_scratch,
    .forward = kr__falcon_forward,
};
