/* Batched prefill on the CUDA path (gpu_prefill.h, docs/PREFILL.md).
 *
 * Per chunk of m <= n_batch tokens at positions p0 .. p0+m-1, llama/mistral with fp16 GEMM
 * inputs (the default; kr__pf_chunk_llama16):
 *   x (m, E)         = embedding rows                              (kr_pf_embed)
 *   per layer:
 *     x += pending;  h16 = fp16(rmsnorm(x) * attn_norm)           (kr_pf_rmsnorm_h)
 *     qkv (m, QD+2KVD) = h16 @ [Wq; Wk; Wv]^T                       (kr_gemm, tensor cores)
 *     rope on q (in place) and k, K/V rows p0.. of the cache       (kr_pf_rope_kv_f16; q8_0: rope + store)
 *     att16 (m, QD)  = causal flash attention over the cache       (kr_pf_flash_attn_ex)
 *     tmp  = att16 @ Wo^T
 *     x += tmp;  h16 = fp16(rmsnorm(x) * ffn_norm)
 *     gu (m, 2F)     = h16 @ [Wgate; Wup]^T
 *     ff16           = fp16(silu(gate) * up)                       (kr_pf_swiglu_h)
 *     pending        = ff16 @ Wdown^T
 *   last chunk: logits = W_out @ rmsnorm(x[m-1] + pending)         (kr_dec_matvec, or the GEMM)
 * kr__pf_chunk is the same with fp32 GEMM inputs and separate adds (a matrix without an fp16-input
 * kernel, or KERNRUN_PREFILL_F16A=0); kr__pf_chunk_falcon the falcon layout (LayerNorm, parallel
 * attention + GELU MLP). Repacked Q4_0/Q8_0 matrices (the decode path's [quants | scales]) go
 * through kr_gemm_run_repacked, or are turned back into GGML blocks slice by slice
 * (kr_pf_unrepack) for k % 256 != 0.
 */
#include "gpu_prefill.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_forward_int.h"
#include "gpu_kvcache.h"
#include "kernrun/checked.h"
#include "kernrun/log.h"
#include "kr_gemm.h"
#include "kr_prefill_ops.h"

#define KR__DOM "gpu_prefill"

/* Bytes of the unrepack scratch at most (big matrices go in row slices). */
#define KR__PF_UNPACK_MAX ((size_t)32 << 20)

typedef struct kr__gpf kr__gpf;

struct kr__gpf {
    kr_gemm *gemm;
    kr_pf *pf;
    uint32_t n_batch;   /* tokens per chunk the buffers hold */
    kr_buffer *buf;     /* all of the below */
    float *x, *h, *qkv, *att, *gu, *tmp; /* (nb,E) (nb,E) (nb,QKVD) (nb,QD) (nb,2F) (nb,E) */
    bool f16a;          /* llama: norms and swiglu write fp16 GEMM inputs (h16, ff16), kr_gemm_run_f16a /
                           _repacked with a16 (env KERNRUN_PREFILL_F16A=1/0 overrides the default) */
    uint16_t *h16, *ff16, *att16; /* (nb,E) (nb,F) (nb,QD) halves, when f16a */
    int32_t *tok;       /* (nb) token ids of the chunk */
    void *unpack;       /* unpack_bytes of GGML-layout scratch, or NULL */
    size_t unpack_bytes;
    bool failed;        /* creation failed once: decline from now on */
    bool gemm_repacked; /* repacked Q4_0/Q8_0 through kr_gemm_run_repacked (k % 256 == 0), not unrepack + GEMM;
                           env KERNRUN_PREFILL_UNREPACK=1 forces the unrepack path (measurements) */
    /* KERNRUN_PREFILL_PROFILE=1: an event after every op, time per category logged per eval */
    bool prof;
    kr_event **ev;      /* (cap_ev) created on demand */
    int *ev_cat;        /* (cap_ev) category of the op ending at ev[i] */
    size_t n_ev, cap_ev;
    bool prof_broken;   /* an event call failed: profiling off */
};

enum {
    KR__PF_CAT_GEMM, KR__PF_CAT_UNPACK, KR__PF_CAT_ATTN, KR__PF_CAT_OTHER, /* reported first */
    KR__PF_CAT_NORM, KR__PF_CAT_ROPE, KR__PF_CAT_KV, KR__PF_CAT_ACT, KR__PF_CAT_EMBED, KR__PF_CAT_ADD, KR__PF_NCAT
};
/* The category of an op from its KR__PF_TRY label. */
static int kr__pf_cat_of(const char *what)
{
    if (strstr(what, "attention"))
        return KR__PF_CAT_ATTN;
    if (strstr(what, "norm"))
        return KR__PF_CAT_NORM;
    if (strstr(what, "rope"))
        return KR__PF_CAT_ROPE;
    if (strstr(what, "kv store"))
        return KR__PF_CAT_KV;
    if (strstr(what, "swiglu") || strstr(what, "gelu"))
        return KR__PF_CAT_ACT;
    if (strstr(what, "embedding") || strstr(what, "token upload"))
        return KR__PF_CAT_EMBED;
    if (strstr(what, "residual"))
        return KR__PF_CAT_ADD;
    return KR__PF_CAT_OTHER;
}

/* Profiling: record an event closing an op of category cat. */
static void kr__pf_mark(kr_gpu_forward *g, int cat)
{
    kr__gpf *P = g->prefill;
    if (!P->prof || P->prof_broken)
        return;
    if (P->n_ev == P->cap_ev) {
        size_t c = P->cap_ev ? 2 * P->cap_ev : 1024;
        kr_event **e = realloc(P->ev, c * sizeof *e);
        if (e)
            P->ev = e;
        int *k = e ? realloc(P->ev_cat, c * sizeof *k) : NULL;
        if (k)
            P->ev_cat = k;
        if (!e || !k) {
            P->prof_broken = true;
            return;
        }
        for (size_t i = P->cap_ev; i < c; i++)
            P->ev[i] = NULL;
        P->cap_ev = c;
    }
    if (!P->ev[P->n_ev] && kr_backend_event_create(g->be, &P->ev[P->n_ev], NULL) != KR_OK) {
        P->ev[P->n_ev] = NULL;
        P->prof_broken = true;
        return;
    }
    if (kr_backend_event_record(g->be, P->ev[P->n_ev], g->stream, NULL) != KR_OK) {
        P->prof_broken = true;
        return;
    }
    P->ev_cat[P->n_ev++] = cat;
}

/* Profiling: wait for the events, log the time per category of this eval. */
static void kr__pf_prof_report(kr_gpu_forward *g, size_t n_tok)
{
    kr__gpf *P = g->prefill;
    if (!P->prof || P->prof_broken || P->n_ev < 2) {
        P->n_ev = 0;
        return;
    }
    double ms[KR__PF_NCAT] = {0}, total = 0;
    for (size_t i = 1; i < P->n_ev; i++) {
        float t = 0;
        if (kr_backend_event_elapsed(g->be, P->ev[i - 1], P->ev[i], &t, NULL) != KR_OK) {
            P->prof_broken = true;
            P->n_ev = 0;
            return;
        }
        ms[P->ev_cat[i]] += t;
        total += t;
    }
    double other = 0;
    for (int c = KR__PF_CAT_OTHER; c < KR__PF_NCAT; c++)
        other += ms[c];
    KR_LOGW(KR__DOM, "profile of %zu tokens: %.3f ms (%.0f tok/s): gemm %.3f, unrepack %.3f, attention %.3f, "
            "other %.3f ms (norms %.3f, rope %.3f, kv store %.3f, swiglu/gelu %.3f, embedding %.3f, adds %.3f, "
            "rest %.3f) (%zu ops; chunks of %u, fp%d GEMM inputs)", n_tok, total,
            total > 0 ? 1e3 * (double)n_tok / total : 0.0, ms[KR__PF_CAT_GEMM], ms[KR__PF_CAT_UNPACK],
            ms[KR__PF_CAT_ATTN], other, ms[KR__PF_CAT_NORM], ms[KR__PF_CAT_ROPE], ms[KR__PF_CAT_KV], ms[KR__PF_CAT_ACT],
            ms[KR__PF_CAT_EMBED], ms[KR__PF_CAT_ADD], ms[KR__PF_CAT_OTHER], P->n_ev - 1, P->n_batch, P->f16a ? 16 : 32);
    P->n_ev = 0;
}

/* Row stride of a repacked matrix's GGML copy: whole blocks, 16-byte multiple. */
static size_t kr__pf_ggml_stride(const kr__gf_mat *M)
{
    size_t row = (size_t)(M->cols / 32) * (M->type == KR_DTYPE_Q4_0 ? 18u : 34u);
    return (row + 15) & ~(size_t)15;
}

/* The matrices a llama layer's prefill multiplies with (fused views where the decode step uses them). */
static int kr__pf_layer_mats(const kr_gpu_forward *g, const kr__gf_layer *L, const kr__gf_mat **out)
{
    int n = 0;
    if (g->falcon) { /* qkv always fused; MLP up / down */
        out[n++] = &L->qkv, out[n++] = &L->o, out[n++] = &L->up, out[n++] = &L->down;
        return n;
    }
    if (L->fuse_qkv)
        out[n++] = &L->qkv;
    else
        out[n++] = &L->q, out[n++] = &L->k, out[n++] = &L->v;
    out[n++] = &L->o;
    if (L->fuse_gu)
        out[n++] = &L->gu;
    else
        out[n++] = &L->gate, out[n++] = &L->up;
    out[n++] = &L->down;
    return n;
}

static const char *kr__pf_mat_unsupported(const kr__gf_mat *M)
{
    if (!kr_gemm_supports(M->type) || !kr_gemm_uses_tensor_cores(M->type))
        return "a weight type without a tensor-core GEMM";
    if (M->repacked && M->type != KR_DTYPE_Q4_0 && M->type != KR_DTYPE_Q8_0)
        return "a repacked matrix of an unknown layout";
    if (M->rows > INT32_MAX || M->cols > INT32_MAX)
        return "a matrix too large";
    if (M->cols % ((M->type == KR_DTYPE_Q4_K || M->type == KR_DTYPE_Q6_K) ? 256 : 32) != 0)
        return "a row length that is not whole blocks";
    return NULL;
}

const char *kr__prefill_unsupported(const kr_gpu_forward *g, size_t n, uint32_t pos)
{
    const kr_hparams *hp = &g->hp;
    if (g->no_batch_prefill)
        return "turned off (no_batch_prefill / KERNRUN_NO_BATCH_PREFILL=1)";
    if (n < 2)
        return "one token";
    if (g->prefill && g->prefill->failed)
        return "its buffers did not fit";
    if (!g->kv || (g->kv->pl.type != KR_DTYPE_F16 && g->kv->pl.type != KR_DTYPE_Q8_0))
        return "KV cache type other than f16 / q8_0";
    if (g->kv->pl.type == KR_DTYPE_Q8_0 && g->kv->pl.kv_dim % 32 != 0)
        return "q8_0 KV cache with kv_dim not a multiple of 32";
    if (!kr_pf_flash_attn_supports((int)hp->head_dim))
        return "head_dim not 16/32/64/80/96/128/256";
    if (g->kv->pl.row_bytes % 16 != 0)
        return "KV rows not 16-byte multiples";
    if ((uint64_t)pos + 2 > g->kv->pl.rows)
        return "the positions wrap the KV ring";
    /* GEMM inputs need rows of multiples of 4 floats: h (E), att (QD), the MLP activations
     * (falcon: F; llama: the gate half of (2F) rows) */
    uint64_t qd = (uint64_t)hp->n_head * hp->head_dim, qkvd = qd + 2ull * hp->n_head_kv * hp->head_dim;
    if (hp->n_embd % 4 != 0 || qd % 4 != 0 || qkvd % 4 != 0 || hp->n_ff % (g->falcon ? 4 : 2) != 0 ||
        hp->n_rot % 2 != 0)
        return "n_embd, n_ff or the q/k/v widths not multiples of 4";
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const kr__gf_mat *mats[8];
        int nm = kr__pf_layer_mats(g, &g->layers[l], mats);
        for (int i = 0; i < nm; i++) {
            const char *why = kr__pf_mat_unsupported(mats[i]);
            if (why)
                return why;
        }
    }
    return kr__pf_mat_unsupported(&g->out);
}

void kr__prefill_free(kr_gpu_forward *g)
{
    if (!g || !g->prefill)
        return;
    kr__gpf *P = g->prefill;
    for (size_t i = 0; i < P->cap_ev; i++)
        if (P->ev[i])
            kr_backend_event_destroy(g->be, P->ev[i]);
    free(P->ev);
    free(P->ev_cat);
    kr_backend_free(g->be, P->buf);
    kr_pf_free(P->pf);
    kr_gemm_free(P->gemm);
    free(P);
    g->prefill = NULL;
}

static void *kr__pf_take(char *base, uint64_t *off, uint64_t bytes)
{
    void *p = base ? base + *off : NULL;
    *off += (bytes + 255) & ~(uint64_t)255;
    return p;
}

/* Lay out (base NULL: size) the chunk buffers for nb tokens. */
static uint64_t kr__pf_layout(kr__gpf *P, const kr_gpu_forward *g, char *base, uint64_t nb)
{
    const kr_hparams *hp = &g->hp;
    uint64_t E = hp->n_embd, QD = (uint64_t)hp->n_head * hp->head_dim, KVD = (uint64_t)hp->n_head_kv * hp->head_dim;
    uint64_t F = hp->n_ff, off = 0;
    P->x = kr__pf_take(base, &off, nb * E * 4);
    P->h = kr__pf_take(base, &off, nb * E * 4);
    P->tmp = kr__pf_take(base, &off, nb * E * 4);
    P->qkv = kr__pf_take(base, &off, nb * (QD + 2 * KVD) * 4);
    P->att = kr__pf_take(base, &off, nb * QD * 4);
    P->gu = kr__pf_take(base, &off, nb * 2 * F * 4);
    P->tok = kr__pf_take(base, &off, nb * 4);
    P->h16 = P->f16a ? kr__pf_take(base, &off, nb * E * 2) : NULL;
    P->ff16 = P->f16a ? kr__pf_take(base, &off, nb * F * 2) : NULL;
    P->att16 = P->f16a ? kr__pf_take(base, &off, nb * QD * 2) : NULL;
    P->unpack = P->unpack_bytes ? kr__pf_take(base, &off, P->unpack_bytes) : NULL;
    return off;
}

/* Default of P->f16a (set from measurements, docs/PREFILL.md). */
#define KR__PF_F16A_DEFAULT 1 /* H200: GEMM AUTO with fp16 A 1.7x (Q4_0) - 2.5x (Q8_0) the fp32-A path */

/* M can take fp16 A: the repacked GEMM, or an MMA kernel on 16-byte aligned rows. */
static bool kr__pf_f16a_mat(const kr__gpf *P, const kr__gf_mat *M)
{
    if (M->repacked)
        return P->gemm_repacked && M->cols % 256 == 0;
    return kr_gemm_mma_supports(M->type) && M->row_stride % 16 == 0 && (uintptr_t)M->w % 16 == 0;
}

/* llama/mistral whose every layer matrix takes fp16 A (the output matrix stays fp32); rows of
 * 8-half multiples. */
static bool kr__pf_f16a_possible(const kr_gpu_forward *g, const kr__gpf *P)
{
    if (g->falcon || g->hp.n_embd % 8 != 0 || g->hp.n_ff % 8 != 0 || ((uint64_t)g->hp.n_head * g->hp.head_dim) % 8 != 0)
        return false;
    for (uint32_t l = 0; l < g->hp.n_layer; l++) {
        const kr__gf_layer *L = &g->layers[l];
        const kr__gf_mat *mats[8];
        int nm = kr__pf_layer_mats(g, L, mats);
        for (int i = 0; i < nm; i++)
            if (!kr__pf_f16a_mat(P, mats[i]))
                return false;
    }
    return true;
}

static kr_status kr__pf_create(kr_gpu_forward *g, kr_err *err)
{
    kr__gpf *P = calloc(1, sizeof *P);
    if (!P)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    g->prefill = P;
    kr_status st;
    if ((st = kr_gemm_create(g->be, &P->gemm, err)) != KR_OK || (st = kr_pf_create(g->be, &P->pf, err)) != KR_OK)
        return st;
    const char *ur = getenv("KERNRUN_PREFILL_UNREPACK");
    P->gemm_repacked = !(ur && strcmp(ur, "1") == 0);
    const char *fa = getenv("KERNRUN_PREFILL_F16A");
    P->f16a = fa ? strcmp(fa, "1") == 0 : KR__PF_F16A_DEFAULT;
    if (P->f16a)
        P->f16a = kr__pf_f16a_possible(g, P);
    /* unrepack scratch: the largest repacked matrix, capped (slices; env
     * KERNRUN_PREFILL_UNPACK_MB overrides the cap, for measurements) */
    size_t cap = KR__PF_UNPACK_MAX;
    const char *ue = getenv("KERNRUN_PREFILL_UNPACK_MB");
    if (ue && atoi(ue) > 0 && atoi(ue) <= 4096)
        cap = (size_t)atoi(ue) << 20;
    const kr__gf_mat *all[8 * 1 + 1];
    for (uint32_t l = 0; l <= g->hp.n_layer; l++) {
        int nm = 1;
        if (l < g->hp.n_layer)
            nm = kr__pf_layer_mats(g, &g->layers[l], all);
        else
            all[0] = &g->out;
        for (int i = 0; i < nm; i++) {
            if (!all[i]->repacked || (P->gemm_repacked && all[i]->cols % 256 == 0))
                continue;
            size_t need = kr__pf_ggml_stride(all[i]) * (size_t)all[i]->rows;
            if (need > cap)
                need = cap;
            if (need > P->unpack_bytes)
                P->unpack_bytes = need;
        }
    }
    /* chunk buffers: allocated by kr__pf_reserve, sized by the evals */
    return KR_OK;
}

/* Chunk buffers for `want` tokens (want <= n_batch): grown on demand (the stream is synchronised
 * and the old buffers freed first), halved while the device says no, down to 64 (or the old size). */
static kr_status kr__pf_reserve(kr_gpu_forward *g, uint32_t want, kr_err *err)
{
    kr__gpf *P = g->prefill;
    if (P->buf && P->n_batch >= want)
        return KR_OK;
    kr_status st = kr_backend_sync(g->be, g->stream, err);
    if (st != KR_OK)
        return st;
    const uint32_t floor = P->buf && P->n_batch > 64 ? P->n_batch : 64;
    kr_backend_free(g->be, P->buf);
    P->buf = NULL;
    P->n_batch = 0;
    uint32_t nb = want;
    for (;;) {
        uint64_t bytes = kr__pf_layout(P, g, NULL, nb);
        kr_err e2;
        kr_err_clear(&e2);
        st = kr_backend_alloc(g->be, (size_t)bytes, &P->buf, &e2);
        if (st == KR_OK) {
            kr__pf_layout(P, g, P->buf->ptr, nb);
            P->n_batch = nb;
            KR_LOGI(KR__DOM, "batched prefill: chunks of %u tokens, %.1f MiB of device buffers, %s GEMM inputs", nb,
                    (double)bytes / 1048576.0, P->f16a ? "fp16" : "fp32");
            return KR_OK;
        }
        P->buf = NULL;
        if (nb <= floor)
            return kr_err_set(err, KR_ERR_NOMEM, "batched prefill buffers (%.1f MiB for %u tokens): %s",
                              (double)bytes / 1048576.0, nb, e2.msg);
        nb = nb / 2 > floor ? nb / 2 : floor;
    }
}

/* c (m, M->rows) (rows ldc apart) = a (m, M->cols) @ M^T. */
static kr_status kr__pf_mm(kr_gpu_forward *g, const kr__gf_mat *M, const float *a, size_t lda, float *c, size_t ldc,
                           int64_t m, kr_err *err)
{
    kr__gpf *P = g->prefill;
    kr_stream *s = g->stream;
    if (!M->repacked) {
        /* AUTO may pick kernels that need 16-byte rows; GGML rows of 18/34-byte blocks may not be */
        bool a16 = M->row_stride % 16 == 0 && (uintptr_t)M->w % 16 == 0;
        kr_gemm_variant v = a16 ? KR_GEMM_AUTO : m <= 64 ? KR_GEMM_TC64 : KR_GEMM_TC128;
        kr_status st = kr_gemm_run(P->gemm, s, v, M->type, M->w, M->row_stride, a, lda, c, ldc, m, M->rows, M->cols,
                                   err);
        kr__pf_mark(g, KR__PF_CAT_GEMM);
        return st;
    }
    const bool q8 = M->type == KR_DTYPE_Q8_0;
    const size_t qsz = q8 ? 32 : 16, nb = (size_t)(M->cols / 32), stride = kr__pf_ggml_stride(M);
    const char *qs = M->w, *sc = (const char *)M->w + (size_t)M->rows * nb * qsz;
    if (P->gemm_repacked && M->cols % 256 == 0 && (uintptr_t)qs % 16 == 0 && (uintptr_t)sc % 16 == 0) {
        /* the GEMM reads the repacked layout itself */
        kr_status st = kr_gemm_run_repacked(P->gemm, s, KR_GEMM_AUTO, M->type, qs, sc, a, NULL, lda, c, ldc, m, M->rows,
                                            M->cols, err);
        kr__pf_mark(g, KR__PF_CAT_GEMM);
        return st;
    }
    int64_t per = (int64_t)(P->unpack_bytes / stride);
    if (per >= 256)
        per &= ~(int64_t)127; /* whole GEMM column tiles per slice */
    if (per < 1)
        return kr_err_set(err, KR_ERR_INTERNAL, "unrepack scratch of %zu bytes below one row of %zu",
                          P->unpack_bytes, stride);
    for (int64_t r0 = 0; r0 < M->rows; r0 += per) {
        int64_t R = M->rows - r0 < per ? M->rows - r0 : per;
        kr_status st = kr_pf_unrepack(P->pf, s, q8, qs + (size_t)r0 * nb * qsz, sc + (size_t)r0 * nb * 2, P->unpack,
                                      stride, R, M->cols, err);
        kr__pf_mark(g, KR__PF_CAT_UNPACK);
        if (st == KR_OK)
            st = kr_gemm_run(P->gemm, s, KR_GEMM_AUTO, M->type, P->unpack, stride, a, lda, c + r0, ldc, m, R, M->cols,
                             err);
        kr__pf_mark(g, KR__PF_CAT_GEMM);
        if (st != KR_OK)
            return st;
    }
    return KR_OK;
}

/* logits (n_vocab) = W_out @ h (one row): the decode matvec (fp32 x, memory-bound kernel) for GGML
 * layouts, the GEMM with m = 1 for repacked weights. */
static kr_status kr__pf_logits(kr_gpu_forward *g, const float *h, kr_err *err)
{
    const kr__gf_mat *M = &g->out;
    if (!M->repacked && kr_dec_matvec_supports(M->type)) {
        kr_status st = kr_dec_matvec(g->dec, g->stream, M->type, M->w, M->row_stride, h, g->logits, M->rows, M->cols,
                                     err);
        kr__pf_mark(g, KR__PF_CAT_GEMM);
        return st;
    }
    return kr__pf_mm(g, M, h, (size_t)M->cols, g->logits, (size_t)M->rows, 1, err);
}

/* Run one op; profiling marks: gemm ops mark themselves (kr__pf_mm), the flash
 * attention counts as attention, everything else as other. */
/* As kr__pf_mm with A in fp16 (rows lda halves apart); M must pass kr__pf_f16a_mat. */
static kr_status kr__pf_mm16(kr_gpu_forward *g, const kr__gf_mat *M, const uint16_t *a, size_t lda, float *c,
                             size_t ldc, int64_t m, kr_err *err)
{
    kr__gpf *P = g->prefill;
    kr_status st;
    if (M->repacked) {
        const size_t qsz = M->type == KR_DTYPE_Q8_0 ? 32 : 16;
        const char *qs = M->w, *sc = (const char *)M->w + (size_t)M->rows * (size_t)(M->cols / 32) * qsz;
        st = kr_gemm_run_repacked(P->gemm, g->stream, KR_GEMM_AUTO, M->type, qs, sc, NULL, a, lda, c, ldc, m, M->rows,
                                  M->cols, err);
    } else {
        st = kr_gemm_run_f16a(P->gemm, g->stream, KR_GEMM_AUTO, M->type, M->w, M->row_stride, a, lda, c, ldc, m,
                              M->rows, M->cols, err);
    }
    kr__pf_mark(g, KR__PF_CAT_GEMM);
    return st;
}

#define KR__PF_TRY(what, call)                                                                 \
    do {                                                                                       \
        kr_status st_ = (call);                                                                \
        if (st_ != KR_OK)                                                                      \
            return kr_err_prefix(err, "batched prefill %s (layer %u)", what, (unsigned)l);     \
        if (!strstr(what, "gemm"))                                                             \
            kr__pf_mark(g, kr__pf_cat_of(what));                                               \
    } while (0)

/* K/V of m tokens (rows stride floats apart) into the layer's cache at p0.. (f16 or q8_0 rows). */
static kr_status kr__pf_kv_store(kr_gpu_forward *g, const kr__gf_layer *L, const float *k, const float *v,
                                 size_t stride, int m, int p0, kr_err *err)
{
    const kr_kv_plan *pl = &g->kv->pl;
    if (pl->type == KR_DTYPE_Q8_0)
        return kr_pf_kv_store_q8(g->prefill->pf, g->stream, k, stride, v, stride, L->k_cache, L->v_cache,
                                 pl->row_bytes, (int)pl->rows, (int)pl->kv_dim, m, p0, err);
    return kr_pf_kv_store_f16(g->prefill->pf, g->stream, k, stride, v, stride, L->k_cache, L->v_cache, pl->row_bytes,
                              (int)pl->rows, (int)pl->kv_dim, m, p0, err);
}

/* RoPE on the q and k parts of P->qkv and the K/V store of the m tokens at p0: one fused launch for
 * f16 caches, rope in place + kr_pf_kv_store_q8 for q8_0. */
static kr_status kr__pf_rope_kv(kr_gpu_forward *g, const kr__gf_layer *L, const float *freq_factors, bool neox, int m,
                                int p0, kr_err *err)
{
    kr__gpf *P = g->prefill;
    const kr_hparams *hp = &g->hp;
    const kr_kv_plan *pl = &g->kv->pl;
    const int H = (int)hp->n_head, HK = (int)hp->n_head_kv, D = (int)hp->head_dim;
    const size_t QD = (size_t)H * D, KVD = (size_t)HK * D, QKVD = QD + 2 * KVD;
    if (pl->type == KR_DTYPE_F16)
        return kr_pf_rope_kv_f16(P->pf, g->stream, P->qkv, QKVD, H, P->qkv + QD, QKVD, P->qkv + QD + KVD, QKVD, HK, D,
                                 (int)hp->n_rot, m, p0, hp->rope_base, hp->rope_freq_scale, freq_factors, neox,
                                 L->k_cache, L->v_cache, pl->row_bytes, (int)pl->rows, err);
    kr_status st = kr_pf_rope(P->pf, g->stream, P->qkv, QKVD, H, P->qkv + QD, QKVD, HK, D, (int)hp->n_rot, m, p0,
                              hp->rope_base, hp->rope_freq_scale, freq_factors, neox, err);
    return st != KR_OK ? st : kr__pf_kv_store(g, L, P->qkv + QD, P->qkv + QD + KVD, QKVD, m, p0, err);
}

/* Falcon (7B: one LayerNorm feeds attention and MLP; 40B: attn_norm_2 feeds
 * the attention): x += attn(norm(x)) + down(gelu(up(norm(x)))). */
static kr_status kr__pf_chunk_falcon(kr_gpu_forward *g, int m, int p0, bool last, kr_err *err)
{
    kr__gpf *P = g->prefill;
    const kr_hparams *hp = &g->hp;
    kr_dec *d = g->dec;
    kr_stream *s = g->stream;
    const int64_t E = hp->n_embd, F = hp->n_ff;
    const int H = (int)hp->n_head, HK = (int)hp->n_head_kv, D = (int)hp->head_dim;
    const int64_t QD = (int64_t)H * D, KVD = (int64_t)HK * D, QKVD = QD + 2 * KVD;
    const float scale = 1.0f / sqrtf((float)D);
    uint32_t l = 0;
    for (l = 0; l < hp->n_layer; l++) {
        const kr__gf_layer *L = &g->layers[l];
        KR__PF_TRY("attn_norm", kr_dec_layernorm(d, s, P->x, L->attn_norm, L->attn_norm_b, P->h, m, E, hp->norm_eps,
                                                 err));
        if (L->attn_norm2) { /* 40B: the attention reads its own norm (into tmp, free until attn_output) */
            KR__PF_TRY("attn_norm_2", kr_dec_layernorm(d, s, P->x, L->attn_norm2, L->attn_norm2_b, P->tmp, m, E,
                                                       hp->norm_eps, err));
            KR__PF_TRY("qkv gemm", kr__pf_mm(g, &L->qkv, P->tmp, E, P->qkv, QKVD, m, err));
        } else {
            KR__PF_TRY("qkv gemm", kr__pf_mm(g, &L->qkv, P->h, E, P->qkv, QKVD, m, err));
        }
        KR__PF_TRY("up gemm", kr__pf_mm(g, &L->up, P->h, E, P->gu, F, m, err));
        KR__PF_TRY("rope + kv store", kr__pf_rope_kv(g, L, NULL, true, m, p0, err));
        KR__PF_TRY("flash attention",
                   kr_pf_flash_attn(P->pf, s, P->qkv, QKVD, L->k_cache, L->v_cache, g->kv->pl.type, g->kv->pl.row_bytes,
                                    (int)g->kv->pl.rows, P->att, QD, m, p0, H, HK, D, 0, scale, err));
        KR__PF_TRY("attn_output gemm", kr__pf_mm(g, &L->o, P->att, QD, P->tmp, E, m, err));
        KR__PF_TRY("gelu", kr_dec_gelu(d, s, P->gu, P->gu, m * F, err));
        KR__PF_TRY("ffn_down gemm", kr__pf_mm(g, &L->down, P->gu, F, P->h, E, m, err));
        KR__PF_TRY("residual", kr_dec_add(d, s, P->x, P->tmp, P->x, m * E, err));
        KR__PF_TRY("residual", kr_dec_add(d, s, P->x, P->h, P->x, m * E, err));
    }
    if (!last)
        return KR_OK;
    KR__PF_TRY("output norm", kr_dec_layernorm(d, s, P->x + (int64_t)(m - 1) * E, g->out_norm, g->out_norm_b, P->h,
                                               1, E, hp->norm_eps, err));
    KR__PF_TRY("output gemm", kr__pf_logits(g, P->h, err));
    return KR_OK;
}

/* llama/mistral with fp16 GEMM inputs: the residual adds ride in the norms (x += pending, then
 * normalise into h16), SwiGLU writes ff16. */
static kr_status kr__pf_chunk_llama16(kr_gpu_forward *g, int m, int p0, bool last, kr_err *err)
{
    kr__gpf *P = g->prefill;
    const kr_hparams *hp = &g->hp;
    kr_dec *d = g->dec;
    kr_stream *s = g->stream;
    const int64_t E = hp->n_embd, F = hp->n_ff;
    const int H = (int)hp->n_head, HK = (int)hp->n_head_kv, D = (int)hp->head_dim;
    const int64_t QD = (int64_t)H * D, KVD = (int64_t)HK * D, QKVD = QD + 2 * KVD;
    const float scale = 1.0f / sqrtf((float)D);
    const bool neox = hp->rope_mode == KR_ROPE_NEOX;
    const float *pend = NULL; /* residual not yet added to x */
    uint32_t l = 0;
    for (l = 0; l < hp->n_layer; l++) {
        const kr__gf_layer *L = &g->layers[l];
        KR__PF_TRY("attn_norm", kr_pf_rmsnorm_h(P->pf, s, P->x, pend, L->attn_norm, P->h16, E, m, E, hp->norm_eps, err));
        if (L->fuse_qkv) {
            KR__PF_TRY("qkv gemm", kr__pf_mm16(g, &L->qkv, P->h16, E, P->qkv, QKVD, m, err));
        } else {
            KR__PF_TRY("q gemm", kr__pf_mm16(g, &L->q, P->h16, E, P->qkv, QKVD, m, err));
            KR__PF_TRY("k gemm", kr__pf_mm16(g, &L->k, P->h16, E, P->qkv + QD, QKVD, m, err));
            KR__PF_TRY("v gemm", kr__pf_mm16(g, &L->v, P->h16, E, P->qkv + QD + KVD, QKVD, m, err));
        }
        KR__PF_TRY("rope + kv store", kr__pf_rope_kv(g, L, g->freq_factors, neox, m, p0, err));
        KR__PF_TRY("flash attention",
                   kr_pf_flash_attn_ex(P->pf, s, P->qkv, QKVD, L->k_cache, L->v_cache, g->kv->pl.type,
                                       g->kv->pl.row_bytes, (int)g->kv->pl.rows, NULL, P->att16, QD, m, p0, H, HK, D,
                                       (int)hp->sliding_window, scale, err));
        KR__PF_TRY("attn_output gemm", kr__pf_mm16(g, &L->o, P->att16, QD, P->tmp, E, m, err));
        KR__PF_TRY("ffn_norm", kr_pf_rmsnorm_h(P->pf, s, P->x, P->tmp, L->ffn_norm, P->h16, E, m, E, hp->norm_eps, err));
        if (L->fuse_gu) {
            KR__PF_TRY("gate/up gemm", kr__pf_mm16(g, &L->gu, P->h16, E, P->gu, 2 * F, m, err));
        } else {
            KR__PF_TRY("gate gemm", kr__pf_mm16(g, &L->gate, P->h16, E, P->gu, 2 * F, m, err));
            KR__PF_TRY("up gemm", kr__pf_mm16(g, &L->up, P->h16, E, P->gu + F, 2 * F, m, err));
        }
        KR__PF_TRY("swiglu", kr_pf_swiglu_h(P->pf, s, P->gu, 2 * F, F, P->ff16, F, (int)F, m, err));
        KR__PF_TRY("ffn_down gemm", kr__pf_mm16(g, &L->down, P->ff16, F, P->tmp, E, m, err));
        pend = P->tmp;
    }
    if (!last)
        return KR_OK; /* the chunk's residual stream is not needed past its KV */
    float *xl = P->x + (int64_t)(m - 1) * E;
    KR__PF_TRY("residual", kr_dec_add(d, s, xl, pend + (int64_t)(m - 1) * E, xl, E, err));
    KR__PF_TRY("output norm", kr_dec_rmsnorm(d, s, xl, g->out_norm, P->h, 1, E, hp->norm_eps, err));
    KR__PF_TRY("output gemm", kr__pf_logits(g, P->h, err));
    return KR_OK;
}

/* One chunk of m tokens at p0; logits of its last token when last. */
static kr_status kr__pf_chunk(kr_gpu_forward *g, const int32_t *tokens, int m, int p0, bool last, kr_err *err)
{
    kr__gpf *P = g->prefill;
    const kr_hparams *hp = &g->hp;
    kr_dec *d = g->dec;
    kr_stream *s = g->stream;
    const int64_t E = hp->n_embd, F = hp->n_ff;
    const int H = (int)hp->n_head, HK = (int)hp->n_head_kv, D = (int)hp->head_dim;
    const int64_t QD = (int64_t)H * D, KVD = (int64_t)HK * D, QKVD = QD + 2 * KVD;
    const float scale = 1.0f / sqrtf((float)D);
    const bool neox = hp->rope_mode == KR_ROPE_NEOX;
    uint32_t l = 0;

    KR__PF_TRY("token upload", kr_backend_h2d(g->be, P->tok, tokens, (size_t)m * sizeof(int32_t), s, err));
    if (kr_pf_embed_supports(g->embd_type)) {
        KR__PF_TRY("embedding", kr_pf_embed(P->pf, s, g->embd_type, g->embd, g->embd_row_stride, hp->n_vocab, E,
                                             P->tok, P->x, E, m, err));
    } else {
        for (int t = 0; t < m; t++) /* K quants: one decode launch per token */
            KR__PF_TRY("embedding", kr_dec_embed(d, s, g->embd_type, g->embd, g->embd_row_stride, hp->n_vocab, E,
                                                  P->tok + t, 0, P->x + t * E, err));
    }
    if (g->falcon)
        return kr__pf_chunk_falcon(g, m, p0, last, err);
    if (P->f16a)
        return kr__pf_chunk_llama16(g, m, p0, last, err);
    for (l = 0; l < hp->n_layer; l++) {
        const kr__gf_layer *L = &g->layers[l];
        KR__PF_TRY("attn_norm", kr_dec_rmsnorm(d, s, P->x, L->attn_norm, P->h, m, E, hp->norm_eps, err));
        if (L->fuse_qkv) {
            KR__PF_TRY("qkv gemm", kr__pf_mm(g, &L->qkv, P->h, E, P->qkv, QKVD, m, err));
        } else {
            KR__PF_TRY("q gemm", kr__pf_mm(g, &L->q, P->h, E, P->qkv, QKVD, m, err));
            KR__PF_TRY("k gemm", kr__pf_mm(g, &L->k, P->h, E, P->qkv + QD, QKVD, m, err));
            KR__PF_TRY("v gemm", kr__pf_mm(g, &L->v, P->h, E, P->qkv + QD + KVD, QKVD, m, err));
        }
        KR__PF_TRY("rope + kv store", kr__pf_rope_kv(g, L, g->freq_factors, neox, m, p0, err));
        KR__PF_TRY("flash attention",
                   kr_pf_flash_attn(P->pf, s, P->qkv, QKVD, L->k_cache, L->v_cache, g->kv->pl.type, g->kv->pl.row_bytes,
                                    (int)g->kv->pl.rows, P->att, QD, m, p0, H, HK, D, (int)hp->sliding_window, scale,
                                    err));
        KR__PF_TRY("attn_output gemm", kr__pf_mm(g, &L->o, P->att, QD, P->tmp, E, m, err));
        KR__PF_TRY("residual", kr_dec_add(d, s, P->x, P->tmp, P->x, m * E, err));
        KR__PF_TRY("ffn_norm", kr_dec_rmsnorm(d, s, P->x, L->ffn_norm, P->h, m, E, hp->norm_eps, err));
        if (L->fuse_gu) {
            KR__PF_TRY("gate/up gemm", kr__pf_mm(g, &L->gu, P->h, E, P->gu, 2 * F, m, err));
        } else {
            KR__PF_TRY("gate gemm", kr__pf_mm(g, &L->gate, P->h, E, P->gu, 2 * F, m, err));
            KR__PF_TRY("up gemm", kr__pf_mm(g, &L->up, P->h, E, P->gu + F, 2 * F, m, err));
        }
        KR__PF_TRY("swiglu", kr_pf_swiglu(P->pf, s, P->gu, 2 * F, F, P->gu, 2 * F, (int)F, m, err));
        KR__PF_TRY("ffn_down gemm", kr__pf_mm(g, &L->down, P->gu, 2 * F, P->tmp, E, m, err));
        KR__PF_TRY("residual", kr_dec_add(d, s, P->x, P->tmp, P->x, m * E, err));
    }
    if (!last)
        return KR_OK;
    KR__PF_TRY("output norm", kr_dec_rmsnorm(d, s, P->x + (int64_t)(m - 1) * E, g->out_norm, P->h, 1, E,
                                             hp->norm_eps, err));
    KR__PF_TRY("output gemm", kr__pf_logits(g, P->h, err));
    return KR_OK;
}

kr_status kr__prefill(kr_gpu_forward *g, const int32_t *tokens, size_t n, uint32_t pos, size_t *n_done, kr_err *err)
{
    *n_done = 0;
    const char *why = kr__prefill_unsupported(g, n, pos);
    if (why) {
        KR_LOGD(KR__DOM, "token-by-token prefill of %zu tokens: %s", n, why);
        return KR_OK;
    }
    if (!g->prefill) {
        kr_err e2;
        kr_err_clear(&e2);
        kr_status st = kr__pf_create(g, &e2);
        if (st != KR_OK) {
            KR_LOGW(KR__DOM, "batched prefill off: %s", kr_err_msg(&e2, st));
            kr__prefill_free(g);
            g->prefill = calloc(1, sizeof *g->prefill); /* remembers the failure (NULL: retried next time) */
            if (g->prefill)
                g->prefill->failed = true;
            return KR_OK;
        }
    }
    /* a sliding-window ring: only the positions before its first wrap (later ones would overwrite
     * keys the earlier queries of a chunk still need); the caller runs the rest token by token */
    const size_t nb_ok = (uint64_t)pos + n <= g->kv->pl.rows ? n : (size_t)(g->kv->pl.rows - pos);
    kr__gpf *P = g->prefill;
    const uint32_t max_batch = g->n_batch ? g->n_batch : KR__PREFILL_N_BATCH_DEFAULT;
    {
        kr_err e2;
        kr_err_clear(&e2);
        kr_status st = kr__pf_reserve(g, nb_ok < max_batch ? (uint32_t)nb_ok : max_batch, &e2);
        if (st != KR_OK) {
            if (st != KR_ERR_NOMEM) { /* the synchronisation failed: a device failure */
                *err = e2;
                return st;
            }
            KR_LOGW(KR__DOM, "batched prefill off: %s", kr_err_msg(&e2, st));
            P->failed = true;
            return KR_OK;
        }
    }
    const char *pe = getenv("KERNRUN_PREFILL_PROFILE");
    P->prof = pe && strcmp(pe, "1") == 0;
    P->n_ev = 0;
    kr__pf_mark(g, KR__PF_CAT_OTHER); /* start */
    const uint32_t nb = P->n_batch;
    for (size_t c0 = 0; c0 < nb_ok; c0 += nb) {
        int m = (int)(nb_ok - c0 < nb ? nb_ok - c0 : nb);
        /* logits only when this chunk ends the eval */
        kr_status st = kr__pf_chunk(g, tokens + c0, m, (int)(pos + c0), c0 + (size_t)m == n, err);
        if (st != KR_OK)
            return st;
        *n_done = c0 + (size_t)m;
    }
    kr__pf_prof_report(g, nb_ok);
    return KR_OK;
}
