/* The decode forward pass on a CUDA backend (kr_gpu_forward.h).
 *
 * Per token, llama / mistral (as plugins/arch_llama's CPU reference):
 *   x = token_embd[*tok]
 *   per layer: h = rmsnorm(x) attn_norm; q,k,v = Wq h, Wk h, Wv h; rope(q,k,*pos);
 *              K[*pos],V[*pos] = k,v (fp16); att = attention; x += Wo att;
 *              h = rmsnorm(x) ffn_norm; x += Wdown (silu(Wgate h) * Wup h)
 *   logits = Wout (rmsnorm(x) output_norm)
 * falcon (as plugins/arch_falcon): parallel attention and MLP,
 *   per layer: h = layernorm(x) attn_norm + b; ha = attn_norm_2 ? layernorm(x) attn_norm_2 + b2 : h;
 *              [q|k|v] = Wqkv ha; rope neox; K,V append; att = attention (MQA/GQA);
 *              x += Wo att; x += Wdown gelu(Wup h)
 *   logits = Wout (layernorm(x) output_norm + output_norm_b)
 * *tok and *pos are device int32 values written before each step, so the
 * captured graph of the step stays valid. */
#include "gpu_forward_int.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "kernrun/checked.h"
#include "kernrun/half.h"
#include "kernrun/log.h"
#include "kernrun/quant.h"
#include "gpu_kvcache.h"
#include "gpu_prefill.h"
#include "kr_decode.h"
#include "kr_gf_matvec_repacked_src.h" /* kernels/forward/matvec_repacked.cu, headers flattened in front */
#include "kr_gf_step_fused_src.h"      /* kernels/forward/step_fused.cu, likewise */

#define KR__DOM "gpu_forward"
#define KR__ALIGN 256u
#define KR__STAGE_BYTES ((size_t)32 << 20) /* per pinned staging buffer (two of them) */

static kr_status kr__repack_all(kr_gpu_forward *g, kr_err *err);

kr_gpu_forward_params kr_gpu_forward_params_default(void)
{
    kr_gpu_forward_params p = {0};
    p.kv_type = KR_DTYPE_F16;
    return p;
}

static double kr__now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- model checks ------------------------------------------------------------------- */

static bool kr__is_llama(const kr_model *m)
{
    const char *a = kr_model_arch(m);
    return strcmp(a, "llama") == 0 || strcmp(a, "mistral") == 0;
}

static bool kr__is_falcon(const kr_model *m) { return strcmp(kr_model_arch(m), "falcon") == 0; }

/* A type the device cannot read but models/quant dequantizes: with weights F16 converted on the host. */
static bool kr__host_conv_type(kr_dtype t) { return !kr_dec_matvec_supports(t) && kr_quant_can_dequantize(t); }

/* f16: params.weights F16 (host-converted types are accepted too). */
static kr_status kr__check_mat(const kr_weight *w, const char *name, uint64_t cols, uint64_t rows, bool f16,
                               kr_err *err)
{
    if (!w)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "tensor '%s' missing", name);
    if (!kr_dec_matvec_supports(w->type) && !(f16 && kr__host_conv_type(w->type)))
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "tensor '%s': type %s has no CUDA matvec%s", name,
                          kr_dtype_name(w->type), f16 ? " and no fp16 conversion" : " (--weights f16 converts it)");
    size_t bs = kr_dtype_block_size(w->type);
    if (w->ne[0] != cols || w->ne[1] != rows || w->ne[2] != 1 || w->ne[3] != 1 || bs == 0 || cols % bs != 0 ||
        w->row_bytes % 2 != 0)
        return kr_err_set(err, KR_ERR_UNSUPPORTED,
                          "tensor '%s': shape (%" PRIu64 ", %" PRIu64 ") of %s unsupported on CUDA (want (%" PRIu64
                          ", %" PRIu64 "), rows a multiple of the block)",
                          name, w->ne[0], w->ne[1], kr_dtype_name(w->type), cols, rows);
    return KR_OK;
}

static kr_status kr__check_vec(const kr_weight *w, const char *name, uint64_t n, kr_err *err)
{
    if (!w)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "tensor '%s' missing", name);
    if (w->type != KR_DTYPE_F32 || w->ne[0] != n)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "tensor '%s': want %" PRIu64 " F32 values", name, n);
    return KR_OK;
}

/* falcon's layers (the globals are checked by the caller). */
static kr_status kr__check_falcon(const kr_model *m, uint64_t E, uint64_t F, uint64_t QD, uint64_t KVD, bool f16,
                                  kr_err *err)
{
    kr_status st;
    char nm[KR_ARCH_NAME_MAX], nb[KR_ARCH_NAME_MAX];
    if ((st = kr__check_vec(kr_model_weight(m, "output_norm.bias"), "output_norm.bias", E, err)) != KR_OK)
        return st;
    uint32_t n_layer = kr_model_hparams(m)->n_layer;
    for (uint32_t l = 0; l < n_layer; l++) {
        static const struct {
            const char *sfx;
            int rows, cols; /* 0 E, 1 QD, 2 F, 3 QD + 2 KVD */
        } mats[] = {{"attn_qkv", 3, 0}, {"attn_output", 0, 1}, {"ffn_up", 2, 0}, {"ffn_down", 0, 2}};
        uint64_t dims[4] = {E, QD, F, QD + 2 * KVD};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            snprintf(nm, sizeof nm, "blk.%u.%s.weight", l, mats[i].sfx);
            if ((st = kr__check_mat(kr_model_weight(m, nm), nm, dims[mats[i].cols], dims[mats[i].rows], f16, err)) !=
                KR_OK)
                return st;
        }
        static const char *const norms[2] = {"attn_norm", "attn_norm_2"};
        for (int i = 0; i < 2; i++) {
            snprintf(nm, sizeof nm, "blk.%u.%s.weight", l, norms[i]);
            snprintf(nb, sizeof nb, "blk.%u.%s.bias", l, norms[i]);
            const kr_weight *w = kr_model_weight(m, nm), *b = kr_model_weight(m, nb);
            if (i == 1 && !w && !b)
                continue; /* 7B: no second norm */
            if ((st = kr__check_vec(w, nm, E, err)) != KR_OK || (st = kr__check_vec(b, nb, E, err)) != KR_OK)
                return st;
        }
    }
    return KR_OK;
}

kr_status kr_gpu_forward_check(const kr_model *m, kr_err *err) { return kr_gpu_forward_check_params(m, NULL, err); }

kr_status kr_gpu_forward_check_params(const kr_model *m, const kr_gpu_forward_params *p, kr_err *err)
{
    if (!m)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu_forward: no model");
    const bool f16 = p && p->weights == KR_DTYPE_F16;
    bool falcon = kr__is_falcon(m);
    if (!kr__is_llama(m) && !falcon)
        return kr_err_set(err, KR_ERR_UNSUPPORTED,
                          "the CUDA forward pass supports llama, mistral and falcon, not '%s'", kr_model_arch(m));
    const kr_hparams *hp = kr_model_hparams(m);
    if (hp->head_dim == 0 || hp->head_dim % 2 != 0 || hp->head_dim > 256 || hp->n_rot % 2 != 0 ||
        hp->n_rot > hp->head_dim || hp->n_head_kv == 0 || hp->n_head % hp->n_head_kv != 0)
        return kr_err_set(err, KR_ERR_UNSUPPORTED,
                          "CUDA attention needs an even head_dim <= 256 (have %u, n_rot %u, %u heads / %u kv)",
                          hp->head_dim, hp->n_rot, hp->n_head, hp->n_head_kv);
    if (hp->rope_mode != KR_ROPE_NORMAL && hp->rope_mode != KR_ROPE_NEOX)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "rope mode %d", (int)hp->rope_mode);
    uint64_t E = hp->n_embd, F = hp->n_ff, V = hp->n_vocab;
    uint64_t QD = (uint64_t)hp->n_head * hp->head_dim, KVD = (uint64_t)hp->n_head_kv * hp->head_dim;
    kr_status st;
    const kr_weight *emb = kr_model_weight(m, "token_embd.weight");
    if (!emb || !(kr_dec_matvec_supports(emb->type) || (f16 && kr__host_conv_type(emb->type))))
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "token_embd.weight: type %s has no CUDA embedding%s",
                          emb ? kr_dtype_name(emb->type) : "?",
                          emb && !f16 && kr__host_conv_type(emb->type) ? " (--weights f16 converts it)" : "");
    const kr_weight *out = kr_model_weight(m, "output.weight");
    if ((st = kr__check_mat(out ? out : emb, out ? "output.weight" : "token_embd.weight", E, V, f16, err)) != KR_OK)
        return st;
    if ((st = kr__check_vec(kr_model_weight(m, "output_norm.weight"), "output_norm.weight", E, err)) != KR_OK)
        return st;
    char nm[KR_ARCH_NAME_MAX];
    if (falcon)
        return kr__check_falcon(m, E, F, QD, KVD, f16, err);
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        static const struct {
            const char *sfx;
            int rows, cols; /* 0 E, 1 QD, 2 KVD, 3 F */
        } mats[] = {{"attn_q", 1, 0}, {"attn_k", 2, 0}, {"attn_v", 2, 0}, {"attn_output", 0, 1},
                    {"ffn_gate", 3, 0}, {"ffn_up", 3, 0}, {"ffn_down", 0, 3}};
        uint64_t dims[4] = {E, QD, KVD, F};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            snprintf(nm, sizeof nm, "blk.%u.%s.weight", l, mats[i].sfx);
            if ((st = kr__check_mat(kr_model_weight(m, nm), nm, dims[mats[i].cols], dims[mats[i].rows], f16, err)) !=
                KR_OK)
                return st;
        }
        snprintf(nm, sizeof nm, "blk.%u.attn_norm.weight", l);
        if ((st = kr__check_vec(kr_model_weight(m, nm), nm, E, err)) != KR_OK)
            return st;
        snprintf(nm, sizeof nm, "blk.%u.ffn_norm.weight", l);
        if ((st = kr__check_vec(kr_model_weight(m, nm), nm, E, err)) != KR_OK)
            return st;
    }
    return KR_OK;
}

/* ---- upload --------------------------------------------------------------------------- */

static uint64_t kr__weight_bytes(const kr_weight *w)
{
    return w->row_bytes * w->ne[1] * w->ne[2] * w->ne[3]; /* bounded by the file size (model lib checked) */
}

/* ---- weight storage (params.weights): which weights become fp16, their device type and size ---- */

kr_status kr_gpu_forward_weights_parse(const char *s, kr_dtype *out, kr_err *err)
{
    if (s && strcasecmp(s, "native") == 0) {
        *out = KR_DTYPE_F32;
        return KR_OK;
    }
    if (s && strcasecmp(s, "f16") == 0) {
        *out = KR_DTYPE_F16;
        return KR_OK;
    }
    return kr_err_set(err, KR_ERR_INVALID_ARG, "weight storage '%s': expected native or f16", s ? s : "(null)");
}

/* g->wconv values: 1 converted on the device (kr_dec_dequant_f16), 2 on the host (models/quant). */
enum { KR__CONV_DEV = 1, KR__CONV_HOST = 2 };

static uint8_t kr__conv_kind(kr_dtype t) { return kr__host_conv_type(t) ? KR__CONV_HOST : KR__CONV_DEV; }

/* Weights of the matrices the forward pass multiplies with: per layer q,k,v,o,gate,up,down (falcon:
 * qkv,o,up,down), and the output matrix (output.weight, or token_embd when it is tied); an untied
 * token_embd only when the device cannot read its type. */
static void kr__mark_conv(const kr_gpu_forward *g, const kr_weight *w0, uint8_t *conv)
{
    static const char *const llama[] = {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up",
                                        "ffn_down"};
    static const char *const falcon[] = {"attn_qkv", "attn_output", "ffn_up", "ffn_down"};
    const kr_model *m = g->model;
    const bool fal = kr__is_falcon(m);
    char nm[KR_ARCH_NAME_MAX];
    for (uint32_t l = 0; l < g->hp.n_layer; l++)
        for (size_t j = 0; j < (fal ? 4u : 7u); j++) {
            snprintf(nm, sizeof nm, "blk.%u.%s.weight", l, fal ? falcon[j] : llama[j]);
            const kr_weight *w = kr_model_weight(m, nm);
            if (w && w->type != KR_DTYPE_F16)
                conv[w - w0] = kr__conv_kind(w->type);
        }
    const kr_weight *out = kr_model_weight(m, "output.weight"), *emb = kr_model_weight(m, "token_embd.weight");
    if (!out)
        out = emb;
    if (out && out->type != KR_DTYPE_F16)
        conv[out - w0] = kr__conv_kind(out->type);
    if (emb && kr__host_conv_type(emb->type))
        conv[emb - w0] = KR__CONV_HOST;
}

/* Device type / bytes per row / bytes of weight w = w0[i]. */
static kr_dtype kr__dev_type(const kr_gpu_forward *g, const kr_weight *w0, const kr_weight *w)
{
    return g->wconv && g->wconv[w - w0] ? KR_DTYPE_F16 : w->type;
}

static uint64_t kr__dev_row_bytes(const kr_gpu_forward *g, const kr_weight *w0, const kr_weight *w)
{
    return g->wconv && g->wconv[w - w0] ? w->ne[0] * 2 : w->row_bytes;
}

static uint64_t kr__dev_bytes(const kr_gpu_forward *g, const kr_weight *w0, const kr_weight *w)
{
    /* fp16 rows (2 bytes per element) are at most 4x a quantized row's bytes (>= 4.5 bits per element),
     * which the file size bounds: no overflow */
    return kr__dev_row_bytes(g, w0, w) * w->ne[1] * w->ne[2] * w->ne[3];
}

/* Place weight w0[i] at the next offset (aligned unless it continues a group). */
static bool kr__place(const kr_gpu_forward *g, const kr_weight *w0, size_t i, bool aligned, uint64_t *offs,
                      uint64_t *total)
{
    uint64_t a = *total;
    if (aligned && kr_align_up_u64(a, KR__ALIGN, &a))
        return false;
    offs[i] = a;
    return !kr_add_overflow_u64(a, kr__dev_bytes(g, w0, &w0[i]), total);
}

/* Same device type and row layout: the rows of `names` may be read as one matrix. */
static bool kr__fusable(const kr_gpu_forward *g, const kr_weight *w0, const char *const *names, int n)
{
    const kr_weight *a = kr_model_weight(g->model, names[0]);
    for (int i = 1; i < n; i++) {
        const kr_weight *b = kr_model_weight(g->model, names[i]);
        if (!a || !b || kr__dev_type(g, w0, a) != kr__dev_type(g, w0, b) ||
            kr__dev_row_bytes(g, w0, a) != kr__dev_row_bytes(g, w0, b) || a->ne[0] != b->ne[0])
            return false;
    }
    return true;
}

/* Offsets of every present weight in one device buffer: per layer q,k,v and
 * gate,up adjacent (no padding) when fusable, the rest 256-byte aligned. */
static kr_status kr__plan(const kr_gpu_forward *g, const kr_weight *w, size_t n_w, uint64_t *offs, uint64_t *total,
                          bool fuse, kr_err *err)
{
    *total = 0;
    for (size_t i = 0; i < n_w; i++)
        offs[i] = UINT64_MAX;
    char nm[3][KR_ARCH_NAME_MAX];
    const char *names[3] = {nm[0], nm[1], nm[2]};
    static const char *const groups[2][3] = {{"attn_q", "attn_k", "attn_v"}, {"ffn_gate", "ffn_up", NULL}};
    for (uint32_t l = 0; fuse && l < g->hp.n_layer; l++) {
        for (int gi = 0; gi < 2; gi++) {
            int n = groups[gi][2] ? 3 : 2;
            for (int j = 0; j < n; j++)
                snprintf(nm[j], sizeof nm[j], "blk.%u.%s.weight", l, groups[gi][j]);
            if (!kr__fusable(g, w, names, n))
                continue;
            for (int j = 0; j < n; j++)
                if (!kr__place(g, w, (size_t)(kr_model_weight(g->model, names[j]) - w), j == 0, offs, total))
                    return kr_err_set(err, KR_ERR_OVERFLOW, "weight bytes overflow");
        }
    }
    for (size_t i = 0; i < n_w; i++)
        if (w[i].data && offs[i] == UINT64_MAX && !kr__place(g, w, i, true, offs, total))
            return kr_err_set(err, KR_ERR_OVERFLOW, "weight bytes overflow");
    return KR_OK;
}

/* Bytes of each of the two device staging slots the fp16 conversion uploads through: the largest
 * converted weight as in the file, capped at KR__STAGE_BYTES (whole rows go in slices); 0: none. */
static uint64_t kr__conv_slot_bytes(const kr_gpu_forward *g, const kr_weight *w, size_t n_w)
{
    uint64_t mx = 0;
    for (size_t i = 0; i < n_w; i++)
        if (g->wconv && g->wconv[i] == KR__CONV_DEV && w[i].data && kr__weight_bytes(&w[i]) > mx)
            mx = kr__weight_bytes(&w[i]);
    if (mx > KR__STAGE_BYTES)
        mx = KR__STAGE_BYTES;
    return (mx + KR__ALIGN - 1) / KR__ALIGN * KR__ALIGN;
}

/* Host conversion of rows [r0, r1) of w into out ((r1 - r0), cols) fp16 halves: kr_dequantize_row
 * then kr_fp32_to_fp16 (RNE), by up to 16 threads. */
typedef struct kr__hconv {
    const kr_weight *w;
    uint16_t *out;
    int64_t r0, r1;
    kr_status st;
} kr__hconv;

static void *kr__hconv_run(void *arg)
{
    kr__hconv *j = arg;
    const size_t cols = (size_t)j->w->ne[0];
    float *tmp = malloc(cols * sizeof *tmp);
    if (!tmp) {
        j->st = KR_ERR_NOMEM;
        return NULL;
    }
    for (int64_t r = j->r0; r < j->r1 && j->st == KR_OK; r++) {
        j->st = kr_dequantize_row(j->w->type, (const char *)j->w->data + (size_t)r * j->w->row_bytes, tmp, cols);
        uint16_t *o = j->out + (size_t)(r - j->r0) * cols;
        for (size_t c = 0; c < cols; c++)
            o[c] = kr_fp32_to_fp16(tmp[c]);
    }
    free(tmp);
    return NULL;
}

static kr_status kr__host_convert(const kr_weight *w, int64_t r0, int64_t r1, uint16_t *out, kr_err *err)
{
    enum { MAXT = 16 };
    kr__hconv jobs[MAXT];
    pthread_t th[MAXT];
    bool started[MAXT] = {false};
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t nt = ncpu < 1 ? 1 : ncpu > MAXT ? MAXT : ncpu;
    if (nt > r1 - r0)
        nt = r1 - r0 > 0 ? r1 - r0 : 1;
    const int64_t per = (r1 - r0 + nt - 1) / nt;
    for (int64_t t = 0; t < nt; t++) {
        int64_t a = r0 + t * per, b = a + per < r1 ? a + per : r1;
        jobs[t] = (kr__hconv){.w = w, .out = out + (size_t)(a - r0) * (size_t)w->ne[0], .r0 = a, .r1 = a < b ? b : a,
                              .st = KR_OK};
        if (t > 0)
            started[t] = pthread_create(&th[t], NULL, kr__hconv_run, &jobs[t]) == 0;
    }
    kr__hconv_run(&jobs[0]);
    for (int64_t t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(th[t], NULL);
        else
            kr__hconv_run(&jobs[t]); /* no thread: do it here */
    }
    for (int64_t t = 0; t < nt; t++)
        if (jobs[t].st != KR_OK)
            return kr_err_set(err, jobs[t].st, "dequantizing %s rows on the host failed", kr_dtype_name(w->type));
    return KR_OK;
}

/* Copy every present weight into one device buffer at offs[i] (kr__plan). A weight marked in
 * g->wconv goes as in the file into a device staging slot, in slices of whole rows, and
 * kr_dec_dequant_f16 writes its fp16 rows into place (on the slot's stream, so the next copy into
 * the slot waits for it); one marked KR__CONV_HOST is converted on the host into the pinned staging
 * buffer (or a malloc'd one without pinned memory) and copied as fp16. */
static kr_status kr__upload(kr_gpu_forward *g, const kr_weight *w, size_t n_w, const uint64_t *offs, uint64_t total,
                            kr_err *err)
{
    kr_backend *be = g->be;
    if (total > SIZE_MAX)
        return kr_err_set(err, KR_ERR_OVERFLOW, "weight bytes overflow");
    kr_status st = kr_backend_alloc(be, (size_t)total, &g->wbuf, err);
    if (st != KR_OK)
        return kr_err_prefix(err, "allocating %.2f GiB of weights on the device", (double)total / 1073741824.0);
    g->stats.weight_bytes = total;
    const char *pz = getenv("KERNRUN_GF_POISON_WEIGHTS"); /* tests: 0xff bytes (fp16 NaN) wherever nothing lands */
    if (pz && strcmp(pz, "1") == 0 &&
        ((st = kr_backend_memset(be, g->wbuf->ptr, 0xff, (size_t)total, NULL, err)) != KR_OK ||
         (st = kr_backend_sync(be, NULL, err)) != KR_OK))
        return kr_err_prefix(err, "poisoning the weight buffer");
    const uint64_t slot = kr__conv_slot_bytes(g, w, n_w);
    kr_buffer *dstage = NULL; /* (2, slot) device staging of the converted weights' file bytes */
    if (slot && (st = kr_backend_alloc(be, (size_t)(2 * slot), &dstage, err)) != KR_OK)
        return kr_err_prefix(err, "allocating %.1f MiB of fp16-conversion staging on the device",
                             (double)(2 * slot) / 1048576.0);

    /* Two pinned staging buffers, each with its own stream: while one DMA
     * runs, the CPU reads (page faults in) the next chunk of the file. */
    kr_buffer *stage[2] = {NULL, NULL};
    kr_stream *ss[2] = {NULL, NULL};
    bool staged = true;
    kr_err e2;
    kr_err_clear(&e2);
    for (int b = 0; b < 2 && staged; b++)
        if (kr_backend_host_alloc(be, KR__STAGE_BYTES, &stage[b], &e2) != KR_OK ||
            kr_backend_stream_create(be, &ss[b], &e2) != KR_OK)
            staged = false;
    if (!staged)
        KR_LOGI(KR__DOM, "no pinned staging (%s): synchronous uploads", e2.msg);

    char *base = g->wbuf->ptr;
    int cur = 0;
    uint16_t *hbuf = NULL; /* host conversion without pinned staging */
    for (size_t i = 0; i < n_w && st == KR_OK; i++) {
        if (offs[i] == UINT64_MAX)
            continue;
        if (g->wconv && g->wconv[i] == KR__CONV_HOST) {
            const uint64_t drb = kr__dev_row_bytes(g, w, &w[i]), rows = w[i].ne[1] * w[i].ne[2] * w[i].ne[3];
            const uint64_t per = drb ? KR__STAGE_BYTES / drb : 0; /* rows per slice */
            if (per == 0) {
                st = kr_err_set(err, KR_ERR_UNSUPPORTED, "fp16 rows of %" PRIu64 " bytes exceed the staging", drb);
            } else if (!staged && !hbuf && !(hbuf = malloc(KR__STAGE_BYTES))) {
                st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
            }
            g->stats.n_converted++;
            char *dst = base + offs[i];
            for (uint64_t r = 0; r < rows && st == KR_OK; r += per) {
                const uint64_t n = rows - r < per ? rows - r : per;
                uint16_t *h = staged ? stage[cur]->ptr : hbuf;
                if (staged && (st = kr_backend_sync(be, ss[cur], err)) != KR_OK) /* its previous DMA is done */
                    break;
                if ((st = kr__host_convert(&w[i], (int64_t)r, (int64_t)(r + n), h, err)) != KR_OK ||
                    (st = kr_backend_h2d(be, dst, h, (size_t)(n * drb), staged ? ss[cur] : NULL, err)) != KR_OK)
                    break;
                dst += n * drb;
                cur ^= 1;
            }
            if (st != KR_OK)
                kr_err_prefix(err, "uploading '%s' (fp16 conversion on the host)", w[i].name);
            continue;
        }
        const bool conv = g->wconv && g->wconv[i];
        const uint64_t rb = w[i].row_bytes, drb = kr__dev_row_bytes(g, w, &w[i]);
        uint64_t cap = KR__STAGE_BYTES; /* bytes per slice */
        if (conv) {
            if (rb == 0 || rb > slot) {
                st = kr_err_set(err, KR_ERR_UNSUPPORTED, "rows of %" PRIu64 " bytes exceed the fp16-conversion "
                                "staging (%" PRIu64 " bytes)", rb, slot);
                kr_err_prefix(err, "uploading '%s'", w[i].name);
                break;
            }
            cap = slot / rb * rb; /* whole rows */
            g->stats.n_converted++;
        }
        const char *src = w[i].data;
        uint64_t left = kr__weight_bytes(&w[i]);
        char *dst = base + offs[i];
        while (left > 0 && st == KR_OK) {
            if (!staged && !conv) {
                st = kr_backend_h2d(be, dst, src, (size_t)left, NULL, err);
                break;
            }
            size_t chunk = left < cap ? (size_t)left : (size_t)cap;
            kr_stream *cs = staged ? ss[cur] : g->stream;
            char *dslot = conv ? (char *)dstage->ptr + (staged ? (size_t)cur * slot : 0) : NULL;
            if (!staged) { /* synchronous copy into the slot, then the conversion */
                if ((st = kr_backend_h2d(be, dslot, src, chunk, NULL, err)) != KR_OK)
                    break;
            } else {
                if ((st = kr_backend_sync(be, cs, err)) != KR_OK) /* its previous DMA (and conversion) is done */
                    break;
                memcpy(stage[cur]->ptr, src, chunk);
                if ((st = kr_backend_h2d(be, conv ? dslot : dst, stage[cur]->ptr, chunk, cs, err)) != KR_OK)
                    break;
            }
            if (conv) {
                const int64_t rows = (int64_t)(chunk / rb);
                if ((st = kr_dec_dequant_f16(g->dec, cs, w[i].type, dslot, (size_t)rb, dst, (size_t)drb, rows,
                                             (int64_t)w[i].ne[0], err)) != KR_OK ||
                    (!staged && (st = kr_backend_sync(be, cs, err)) != KR_OK))
                    break;
                dst += (size_t)rows * drb;
            } else {
                dst += chunk;
            }
            src += chunk;
            left -= chunk;
            cur ^= 1;
        }
        if (st != KR_OK)
            kr_err_prefix(err, "uploading '%s'%s", w[i].name, conv ? " (fp16 conversion)" : "");
    }
    for (int b = 0; b < 2; b++) {
        if (ss[b]) {
            kr_status s2 = kr_backend_sync(be, ss[b], st == KR_OK ? err : NULL);
            if (st == KR_OK)
                st = s2;
            kr_backend_stream_destroy(be, ss[b]);
        }
        kr_backend_free(be, stage[b]);
    }
    if (dstage && !staged && st != KR_OK)
        kr_backend_sync(be, g->stream, NULL); /* a conversion may still read the slot */
    kr_backend_free(be, dstage);
    free(hbuf);
    return st;
}

/* ---- creation ------------------------------------------------------------------------- */

static const void *kr__dev(const kr_gpu_forward *g, const kr_model *m, const kr_weight *w0, const uint64_t *offs,
                           const char *name)
{
    const kr_weight *w = kr_model_weight(m, name);
    if (!w)
        return NULL;
    return (const char *)g->wbuf->ptr + offs[w - w0];
}

static void kr__mat(const kr_gpu_forward *g, const kr_model *m, const kr_weight *w0, const uint64_t *offs,
                    const char *name, bool use_q8, kr__gf_mat *out)
{
    const kr_weight *w = kr_model_weight(m, name); /* present: checked */
    out->type = kr__dev_type(g, w0, w);
    out->w = (const char *)g->wbuf->ptr + offs[w - w0];
    out->row_stride = (size_t)kr__dev_row_bytes(g, w0, w);
    out->rows = (int64_t)w->ne[1];
    out->cols = (int64_t)w->ne[0];
    out->q8 = use_q8 && kr_dec_matvec_q8_supports(out->type) && kr_dec_q8_bytes(out->cols) > 0; /* device type */
}

/* Carve n bytes (256-aligned) from an arena; sizes are bounded by hparams (<= 2^20 each). */
static void *kr__take(char *base, uint64_t *off, uint64_t n)
{
    void *p = base ? base + *off : NULL;
    *off += (n + KR__ALIGN - 1) / KR__ALIGN * KR__ALIGN;
    return p;
}

static kr_status kr__layout_acts(kr_gpu_forward *g, char *base, uint64_t *size)
{
    const kr_hparams *hp = &g->hp;
    uint64_t E = hp->n_embd, F = hp->n_ff, V = hp->n_vocab;
    uint64_t QD = (uint64_t)hp->n_head * hp->head_dim, KVD = (uint64_t)hp->n_head_kv * hp->head_dim;
    uint64_t maxc = E > F ? E : F;
    if (QD > maxc)
        maxc = QD;
    uint64_t off = 0;
    g->x = kr__take(base, &off, E * 4);
    g->h = kr__take(base, &off, E * 4);
    g->h2 = kr__take(base, &off, E * 4);
    g->ffo = kr__take(base, &off, E * 4);
    g->q = kr__take(base, &off, (QD + 2 * KVD) * 4);
    g->k = g->q ? g->q + QD : NULL;
    g->v = g->k ? g->k + KVD : NULL;
    g->att = kr__take(base, &off, QD * 4);
    g->tmp = kr__take(base, &off, E * 4);
    g->gate = kr__take(base, &off, 2 * F * 4);
    g->up = g->gate ? g->gate + F : NULL;
    g->logits = kr__take(base, &off, V * 4);
    size_t q8b = kr_dec_q8_bytes((int64_t)maxc);
    g->xq = kr__take(base, &off, q8b ? q8b : 16);
    g->xq2 = kr__take(base, &off, q8b ? q8b : 16);
    g->nf_part = kr__take(base, &off, (E / 32 + 1) * 4);
    size_t sc = kr_dec_attention_scratch_floats((int)hp->n_head, (int)hp->head_dim, g->n_split);
    g->attn_scratch = sc ? kr__take(base, &off, (uint64_t)sc * 4) : NULL;
    g->step = kr__take(base, &off, 2 * sizeof(int32_t));
    *size = off;
    return KR_OK;
}

/* Before any upload: the KV cache plan, the attention split count and the
 * activation size, checked with the weights against free device memory. */
static kr_status kr__fit(kr_gpu_forward *g, const kr_gpu_forward_params *p, const kr_weight *w, size_t n_w,
                         uint64_t wtotal, kr_err *err)
{
    const kr_hparams *hp = &g->hp;
    kr_status st = kr__gkv_plan(g, p, err);
    if (st != KR_OK)
        return st;
    g->n_split = p->attn_splits > 0 ? p->attn_splits
                                    : kr_dec_attention_default_splits(kr_backend_device_info(g->be), (int)hp->n_head,
                                                                      (int)g->n_ctx);
    if (g->n_split > 1024)
        g->n_split = 1024;
    if (g->n_split < 1)
        g->n_split = 1;
    uint64_t abytes, max_w = 0;
    kr__layout_acts(g, NULL, &abytes);
    for (size_t i = 0; i < n_w; i++) /* the repack's temporary copy of the largest matrix */
        if (w[i].data && kr__dev_bytes(g, w, &w[i]) > max_w && !(g->wconv && g->wconv[i]))
            max_w = kr__weight_bytes(&w[i]);
    const uint64_t conv_stage = 2 * kr__conv_slot_bytes(g, w, n_w); /* during the upload only */
    if (conv_stage > max_w)
        max_w = conv_stage;
    st = kr__gkv_check_fit(g, wtotal, abytes, max_w, p->mem_limit, err);
    if (st != KR_OK && g->wconv) {
        uint64_t file = 0;
        for (size_t i = 0; i < n_w; i++)
            if (w[i].data)
                file += kr__weight_bytes(&w[i]);
        kr_err_prefix(err, "weights stored as fp16 (--weights f16): %.2f GiB instead of %.2f GiB as in the file "
                      "(--weights native takes less)", (double)wtotal / 1073741824.0, (double)file / 1073741824.0);
    }
    return st;
}

kr_status kr_gpu_forward_new(const kr_model *m, kr_backend *be, const kr_gpu_forward_params *p,
                             kr_gpu_forward **out, kr_err *err)
{
    *out = NULL;
    kr_gpu_forward_params dp = kr_gpu_forward_params_default();
    if (!p)
        p = &dp;
    if (!be || be->kind != KR_BACKEND_CUDA)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu_forward: needs a CUDA backend");
    kr_status st = kr_gpu_forward_check_params(m, p, err);
    if (st != KR_OK)
        return st;
    kr_gpu_forward *g = calloc(1, sizeof *g);
    if (!g)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    g->model = m;
    g->be = be;
    g->hp = *kr_model_hparams(m);
    const kr_hparams *hp = &g->hp;
    const char *ng = getenv("KERNRUN_NO_GRAPH");
    g->use_graph = !p->no_graph && !(ng && strcmp(ng, "1") == 0);
    const char *nbp = getenv("KERNRUN_NO_BATCH_PREFILL");
    g->no_batch_prefill = p->no_batch_prefill || (nbp && strcmp(nbp, "1") == 0);
    g->n_batch = p->n_batch;
    g->n_ctx = p->n_ctx;
    if (g->n_ctx == 0) {
        g->n_ctx = hp->n_ctx_train ? hp->n_ctx_train : 4096;
        if (g->n_ctx > 4096)
            g->n_ctx = 4096;
    }
    if (g->n_ctx > (1u << 24)) {
        st = kr_err_set(err, KR_ERR_RANGE, "n_ctx %u too large", g->n_ctx);
        goto err_free;
    }
    uint64_t E = hp->n_embd, V = hp->n_vocab;

    if ((st = kr_dec_create(be, &g->dec, err)) != KR_OK)
        goto err_free;
    if ((st = kr_dec_prepare_all(g->dec, err)) != KR_OK) {
        kr_err_prefix(err, "compiling the decode kernels");
        goto err_dec;
    }
    if ((st = kr_backend_stream_create(be, &g->stream, err)) != KR_OK)
        goto err_dec;

    /* weights */
    size_t n_w;
    const kr_weight *w0 = kr_model_weights(m, &n_w);
    uint64_t *offs = calloc(n_w ? n_w : 1, sizeof *offs);
    if (!offs) {
        st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
        goto err_stream;
    }
    double t0 = kr__now_s();
    uint64_t wtotal = 0;
    if (p->weights != KR_DTYPE_F32 && p->weights != KR_DTYPE_F16) {
        free(offs);
        st = kr_err_set(err, KR_ERR_UNSUPPORTED, "weight storage %s: only as in the file or f16",
                        kr_dtype_name(p->weights));
        goto err_stream;
    }
    g->stats.weights = p->weights;
    if (p->weights == KR_DTYPE_F16) {
        g->wconv = calloc(n_w ? n_w : 1, 1);
        if (!g->wconv) {
            free(offs);
            st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
            goto err_stream;
        }
        kr__mark_conv(g, w0, g->wconv);
    }
    st = kr__plan(g, w0, n_w, offs, &wtotal, !p->no_fuse, err);
    if (st == KR_OK)
        st = kr__fit(g, p, w0, n_w, wtotal, err);
    if (st == KR_OK)
        st = kr__upload(g, w0, n_w, offs, wtotal, err);
    g->stats.upload_s = kr__now_s() - t0;
    if (st != KR_OK) {
        free(offs);
        goto err_weights;
    }
    g->layers = calloc(hp->n_layer ? hp->n_layer : 1, sizeof *g->layers);
    if (!g->layers) {
        free(offs);
        st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
        goto err_weights;
    }
    bool use_q8 = !p->no_q8;
    const kr_weight *emb = kr_model_weight(m, "token_embd.weight");
    g->embd_type = kr__dev_type(g, w0, emb);
    g->embd = kr__dev(g, m, w0, offs, "token_embd.weight");
    g->embd_row_stride = (size_t)kr__dev_row_bytes(g, w0, emb);
    g->out_norm = kr__dev(g, m, w0, offs, "output_norm.weight");
    g->out_norm_b = kr__dev(g, m, w0, offs, "output_norm.bias");
    g->falcon = kr__is_falcon(m);
    kr__mat(g, m, w0, offs, kr_model_weight(m, "output.weight") ? "output.weight" : "token_embd.weight", use_q8,
            &g->out);
    g->freq_factors = kr__dev(g, m, w0, offs, "rope_freqs.weight");
    uint64_t step_bytes = g->embd_row_stride + E * 4 /* output_norm */ + (uint64_t)g->out.rows * g->out.row_stride;
    char nm[KR_ARCH_NAME_MAX];
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        kr__gf_layer *L = &g->layers[l];
#define KR__M(field, sfx)                                              \
        snprintf(nm, sizeof nm, "blk.%u.%s.weight", l, sfx);           \
        kr__mat(g, m, w0, offs, nm, use_q8, &L->field);                \
        step_bytes += (uint64_t)L->field.rows * L->field.row_stride;
        if (g->falcon) {
            /* one fused qkv matrix; q/k/v, gate and ffn_norm stay empty */
            KR__M(qkv, "attn_qkv")
            KR__M(o, "attn_output")
            KR__M(up, "ffn_up")
            KR__M(down, "ffn_down")
            L->fuse_qkv = true;
            static const char *const nn[4] = {"attn_norm.weight", "attn_norm.bias", "attn_norm_2.weight",
                                              "attn_norm_2.bias"};
            const float **dst[4] = {&L->attn_norm, &L->attn_norm_b, &L->attn_norm2, &L->attn_norm2_b};
            for (int i = 0; i < 4; i++) {
                snprintf(nm, sizeof nm, "blk.%u.%s", l, nn[i]);
                *dst[i] = kr__dev(g, m, w0, offs, nm);
                if (*dst[i])
                    step_bytes += E * 4;
            }
            continue;
        }
        KR__M(q, "attn_q")
        KR__M(k, "attn_k")
        KR__M(v, "attn_v")
        KR__M(o, "attn_output")
        KR__M(gate, "ffn_gate")
        KR__M(up, "ffn_up")
        KR__M(down, "ffn_down")
#undef KR__M
        /* fused views: adjacent on the device (kr__plan) */
        L->fuse_qkv = !p->no_fuse && L->q.type == L->k.type && L->k.type == L->v.type &&
                      L->q.row_stride == L->k.row_stride && L->k.row_stride == L->v.row_stride &&
                      (const char *)L->k.w == (const char *)L->q.w + (size_t)L->q.rows * L->q.row_stride &&
                      (const char *)L->v.w == (const char *)L->k.w + (size_t)L->k.rows * L->k.row_stride;
        if (L->fuse_qkv) {
            L->qkv = L->q;
            L->qkv.rows = L->q.rows + L->k.rows + L->v.rows;
        }
        L->fuse_gu = !p->no_fuse && L->gate.type == L->up.type && L->gate.row_stride == L->up.row_stride &&
                     (const char *)L->up.w == (const char *)L->gate.w + (size_t)L->gate.rows * L->gate.row_stride;
        if (L->fuse_gu) {
            L->gu = L->gate;
            L->gu.rows = 2 * L->gate.rows;
        }
        snprintf(nm, sizeof nm, "blk.%u.attn_norm.weight", l);
        L->attn_norm = kr__dev(g, m, w0, offs, nm);
        snprintf(nm, sizeof nm, "blk.%u.ffn_norm.weight", l);
        L->ffn_norm = kr__dev(g, m, w0, offs, nm);
        step_bytes += 2 * E * 4;
    }
    g->woffs = offs; /* kr_gpu_forward_weight */
    if (g->out_norm_b)
        step_bytes += E * 4;
    g->stats.step_weight_bytes = step_bytes;
    if (!p->no_fused_ops && !g->falcon) { /* the fused kernels are RMSNorm / SwiGLU */
        const char *entries[2] = {"kr_gf_add_rmsnorm_q8", "kr_gf_swiglu_q8"};
        kr_function **fns[2] = {&g->fn_norm, &g->fn_swiglu};
        for (int i = 0; i < 2; i++) {
            const kr_kernel_source src = {
                .name = "forward/step_fused.cu",
                .code = kr_gf_step_fused_src,
                .len = kr_gf_step_fused_src_LEN,
                .entry = entries[i],
            };
            if ((st = kr_backend_get_function(be, &src, fns[i], err)) != KR_OK) {
                kr_err_prefix(err, "kernel %s", entries[i]);
                goto err_layers;
            }
        }
    }
    const char *nr = getenv("KERNRUN_NO_REPACK");
    if (use_q8 && !p->no_repack && !(nr && strcmp(nr, "1") == 0) && (st = kr__repack_all(g, err)) != KR_OK) {
        kr_err_prefix(err, "repacking Q4_0/Q8_0 weights");
        goto err_layers;
    }
    {
        const char *ts = getenv("KERNRUN_GF_TUNING");
        if ((st = kr_gpu_forward_set_tuning(g, "default", err)) != KR_OK ||
            (ts && *ts && (st = kr_gpu_forward_set_tuning(g, ts, err)) != KR_OK)) {
            kr_err_prefix(err, "step variant%s%s", ts && *ts ? " KERNRUN_GF_TUNING=" : "", ts && *ts ? ts : "");
            goto err_layers;
        }
    }

    /* KV cache (gpu_kvcache.c; planned and checked by kr__fit) */
    if ((st = kr__gkv_alloc(g, err)) != KR_OK)
        goto err_layers;

    /* activations (n_split: kr__fit) */
    uint64_t abytes;
    kr__layout_acts(g, NULL, &abytes);
    if ((st = kr_backend_alloc(be, (size_t)abytes, &g->abuf, err)) != KR_OK) {
        kr_err_prefix(err, "allocating activations");
        goto err_kv;
    }
    kr__layout_acts(g, g->abuf->ptr, &abytes);

    /* host side of the step inputs and the logits: pinned when possible */
    kr_err e2;
    kr_err_clear(&e2);
    if (kr_backend_host_alloc(be, (size_t)g->n_ctx * 2 * sizeof(int32_t), &g->hstep, &e2) != KR_OK) {
        g->hstep = NULL;
        g->hstep_mem = malloc((size_t)g->n_ctx * 2 * sizeof(int32_t));
        if (!g->hstep_mem) {
            st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
            goto err_acts;
        }
    }
    if (kr_backend_host_alloc(be, (size_t)V * sizeof(float), &g->hlogits_buf, &e2) != KR_OK) {
        g->hlogits_buf = NULL;
        g->hlogits_mem = malloc((size_t)V * sizeof(float));
        if (!g->hlogits_mem) {
            st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
            goto err_host;
        }
    }
    KR_LOGI(KR__DOM, "uploaded %.1f MiB of weights in %.2f s; KV cache %.1f MiB (n_ctx %u); attention splits %d",
            (double)g->stats.weight_bytes / 1048576.0, g->stats.upload_s, (double)g->stats.kv_bytes / 1048576.0, g->n_ctx,
            g->n_split);
    *out = g;
    return KR_OK;

err_host:
    kr_backend_free(be, g->hstep);
    free(g->hstep_mem);
err_acts:
    kr_backend_free(be, g->abuf);
err_kv:
    kr__gkv_free(g);
err_layers:
    free(g->layers);
err_weights:
    kr_backend_free(be, g->wbuf);
err_stream:
    kr_backend_event_destroy(be, g->ev_fork);
    kr_backend_event_destroy(be, g->ev_join);
    kr_backend_stream_destroy(be, g->side);
    kr_backend_free(be, g->gus_cnt);
    kr_backend_stream_destroy(be, g->stream);
err_dec:
    kr_dec_free(g->dec);
err_free:
    kr__gkv_free(g);
    free(g->woffs);
    free(g->wconv);
    free(g);
    return kr_err_prefix(err, "CUDA forward pass");
}

void kr_gpu_forward_free(kr_gpu_forward *g)
{
    if (!g)
        return;
    kr_backend *be = g->be;
    if (g->stream && !g->dead)
        kr_backend_sync(be, g->stream, NULL);
    kr_backend_graph_destroy(be, g->graph);
    if (g->side && !g->dead)
        kr_backend_sync(be, g->side, NULL);
    kr_backend_event_destroy(be, g->ev_fork);
    kr_backend_event_destroy(be, g->ev_join);
    kr_backend_stream_destroy(be, g->side);
    kr_backend_free(be, g->gus_cnt);
    for (size_t i = 0; i < g->prof_cap; i++)
        kr_backend_event_destroy(be, g->prof_ev[i]);
    free(g->prof_ev);
    free(g->prof_label);
    kr_backend_free(be, g->hlogits_buf);
    free(g->hlogits_mem);
    kr_backend_free(be, g->hstep);
    free(g->hstep_mem);
    kr__prefill_free(g);
    kr_backend_free(be, g->abuf);
    kr__gkv_free(g);
    free(g->layers);
    kr_backend_free(be, g->wbuf);
    free(g->woffs);
    free(g->wconv);
    kr_backend_stream_destroy(be, g->stream);
    kr_dec_free(g->dec);
    free(g);
}

kr_status kr_gpu_forward_weight(const kr_gpu_forward *g, const char *name, kr_dtype *type, const void **dev,
                                size_t *row_stride, kr_err *err)
{
    size_t n_w;
    const kr_weight *w0 = g ? kr_model_weights(g->model, &n_w) : NULL;
    const kr_weight *w = g && name ? kr_model_weight(g->model, name) : NULL;
    if (!w || !g->woffs || g->woffs[w - w0] == UINT64_MAX)
        return kr_err_set(err, KR_ERR_NOT_FOUND, "weight '%s' is not on the device", name ? name : "(null)");
    *type = kr__dev_type(g, w0, w);
    *dev = (const char *)g->wbuf->ptr + g->woffs[w - w0];
    *row_stride = (size_t)kr__dev_row_bytes(g, w0, w);
    return KR_OK;
}

/* ---- repacked Q4_0 / Q8_0 (kernels/forward/matvec_repacked.cu) ----------------------- */

#define KR__GF_WARPS 4 /* rows per CTA: the .cu's default KR_GF_WARPS */

static kr_status kr__gf_fn(kr_backend *be, const char *entry, kr_function **fn, kr_err *err)
{
    const kr_kernel_source src = {
        .name = "forward/matvec_repacked.cu",
        .code = kr_gf_matvec_repacked_src,
        .len = kr_gf_matvec_repacked_src_LEN,
        .entry = entry,
    };
    kr_status st = kr_backend_get_function(be, &src, fn, err);
    if (st != KR_OK)
        kr_err_prefix(err, "kernel %s", entry);
    return st;
}

static size_t kr__quant_bytes(kr_dtype t) { return t == KR_DTYPE_Q4_0 ? 16 : 32; }

static bool kr__repackable(const kr__gf_mat *M)
{
    return M->q8 && (M->type == KR_DTYPE_Q4_0 || M->type == KR_DTYPE_Q8_0) && M->cols % 32 == 0 &&
           M->row_stride == (size_t)(M->cols / 32) * (kr__quant_bytes(M->type) + 2) && ((uintptr_t)M->w % 16) == 0 &&
           M->rows <= INT32_MAX && M->cols / 32 <= INT32_MAX;
}

/* Rewrite M in place (through tmp) as [quants | scales]; marks it repacked. */
static kr_status kr__repack(kr_gpu_forward *g, kr__gf_mat *M, kr_function *fn_q4, kr_function *fn_q8, void *tmp,
                            kr_err *err)
{
    size_t bytes = (size_t)M->rows * M->row_stride;
    long long n_blk = (long long)M->rows * (M->cols / 32);
    kr_status st = kr_backend_d2d(g->be, tmp, M->w, bytes, g->stream, err);
    if (st != KR_OK)
        return st;
    void *qs = (void *)M->w;
    void *sc = (char *)qs + (size_t)n_blk * kr__quant_bytes(M->type);
    void *args[] = {&tmp, &qs, &sc, &n_blk};
    uint32_t grid[3] = {(uint32_t)((n_blk + 255) / 256), 1, 1}, block[3] = {256, 1, 1};
    st = kr_backend_launch(g->be, M->type == KR_DTYPE_Q4_0 ? fn_q4 : fn_q8, grid, block, 0, g->stream, args, err);
    if (st == KR_OK)
        M->repacked = true;
    return st;
}

/* Repack every Q4_0/Q8_0 matrix the step will use with 8-bit activations. */
static kr_status kr__repack_all(kr_gpu_forward *g, kr_err *err)
{
    kr__gf_mat *todo[16];
    size_t max_bytes = 0;
    kr_status st = KR_OK;
    /* pass 0 sizes the temp buffer, pass 1 repacks */
    kr_buffer *tmp = NULL;
    kr_function *fq4 = NULL, *fq8 = NULL;
    for (int pass = 0; pass < 2 && st == KR_OK; pass++) {
        if (pass == 1) {
            if (max_bytes == 0)
                return KR_OK;
            if ((st = kr__gf_fn(g->be, "kr_gf_repack_q4_0", &fq4, err)) != KR_OK ||
                (st = kr__gf_fn(g->be, "kr_gf_repack_q8_0", &fq8, err)) != KR_OK ||
                (st = kr__gf_fn(g->be, "kr_gf_mv_q4_0", &g->fn_mv_q4_0, err)) != KR_OK ||
                (st = kr__gf_fn(g->be, "kr_gf_mv_q8_0", &g->fn_mv_q8_0, err)) != KR_OK)
                return st;
            if ((st = kr_backend_alloc(g->be, max_bytes, &tmp, err)) != KR_OK)
                return kr_err_prefix(err, "repacking buffer");
        }
        for (uint32_t l = 0; l <= g->hp.n_layer && st == KR_OK; l++) {
            size_t n = 0;
            if (l == g->hp.n_layer) {
                /* output.weight; token_embd (tied) stays in GGML layout for the embedding lookup */
                if (kr_model_weight(g->model, "output.weight"))
                    todo[n++] = &g->out;
            } else {
                kr__gf_layer *L = &g->layers[l];
                if (L->fuse_qkv) {
                    todo[n++] = &L->qkv;
                } else {
                    todo[n++] = &L->q;
                    todo[n++] = &L->k;
                    todo[n++] = &L->v;
                }
                todo[n++] = &L->o;
                if (L->fuse_gu) {
                    todo[n++] = &L->gu;
                } else {
                    todo[n++] = &L->gate;
                    todo[n++] = &L->up;
                }
                todo[n++] = &L->down;
            }
            for (size_t i = 0; i < n && st == KR_OK; i++) {
                if (!kr__repackable(todo[i]))
                    continue;
                size_t b = (size_t)todo[i]->rows * todo[i]->row_stride;
                if (pass == 0 && b > max_bytes)
                    max_bytes = b;
                if (pass == 1)
                    st = kr__repack(g, todo[i], fq4, fq8, tmp->ptr, err);
            }
        }
    }
    if (st == KR_OK)
        st = kr_backend_sync(g->be, g->stream, err);
    kr_backend_free(g->be, tmp);
    return st;
}

/* ---- step variants (kr_gpu_forward_set_tuning) ------------------------------------------ */

/* v2 repacked matvecs (kernels/forward/matvec_repacked.cu kr_gf_mv2_<type>_r<NR>p<PF>). */
typedef struct kr__mv2_var {
    const char *name; /* "r2p4" */
    int rows;         /* NR: rows per warp */
    bool persist;     /* "pr..": persistent warps over row tiles (grid from kr__mv2p_grid) */
} kr__mv2_var;
/* suffix d: double-buffered chunks; h: the same single-buffered loop through the .cu's
 * helpers (fewer registers); prefix p: persistent warps, double-buffered across tiles */
static const kr__mv2_var kr__mv2_q4[] = {
    {"r1p4", 1, false},  {"r2p4", 2, false},  {"r4p2", 4, false}, {"r2p8", 2, false}, {"r2p4d", 2, false},
    {"r2p2d", 2, false}, {"r2p4h", 2, false}, {"pr2p4", 2, true}, {"pr2p2", 2, true}, {"pr1p4", 1, true},
    {"pr4p2", 4, true},  {"r2p1d", 2, false}, {"r4p1d", 4, false}, {"r1p2d", 1, false}};
static const kr__mv2_var kr__mv2_q8[] = {
    {"r1p4", 1, false},  {"r2p2", 2, false},  {"r2p4", 2, false}, {"r4p2", 4, false}, {"r2p2d", 2, false},
    {"r2p1d", 2, false}, {"r2p2h", 2, false}, {"pr2p2", 2, true}, {"pr2p1", 2, true}};
#define KR__N_MV2_Q4 ((int)(sizeof kr__mv2_q4 / sizeof kr__mv2_q4[0]))
#define KR__N_MV2_Q8 ((int)(sizeof kr__mv2_q8 / sizeof kr__mv2_q8[0]))

/* Default variant (docs/GPU-FORWARD.md). */
static kr__gf_tuning kr__tuning_default(void)
{
    /* H200 checkpoints 07:15-07:54 (docs/PERF.md): PDL, v2 r2p4 / r2p2, residual in the
     * matvec, 32-warp multi-block norm; nf / gus / l2pf / oq / sw measured slower.
     * Session 3 (10:10): Q8_0 r2p1d (double-buffered, 1 block per lane per chunk) 2.518 vs
     * 2.603 ms/token; the in-kernel L2 prefetch variants (pfa/pft/pfn/pfs/pfw) all slower;
     * 10:43: Q8_0 attn_output / ffn_down on r2p2d (mv8e) 2.356 vs 2.386 */
    return (kr__gf_tuning){.pdl = true, .mv4 = 1 + 1, .mv8 = 1 + 5, .mv8e = 1 + 4, .resid = true,
                           .norm_mb = true, .norm_wide = true, .nfp_w = 16,
                           .fa = true /* fused attention (auto): H200 10:43 Q4_0 1.684 vs 1.912 ms/token */};
}

static bool kr__parse_bool(const char *v, size_t n, bool *out)
{
    if (n == 1 && (v[0] == '0' || v[0] == '1')) {
        *out = v[0] == '1';
        return true;
    }
    return false;
}

/* MiB count: 1-4 digits */
static bool kr__parse_mib(const char *v, size_t n, int *out)
{
    if (n < 1 || n > 4 || strspn(v, "0123456789") < n)
        return false;
    *out = atoi(v);
    return true;
}

static bool kr__parse_mv(const char *v, size_t n, const kr__mv2_var *vars, int n_vars, int *out)
{
    if (n == 2 && strncmp(v, "v1", 2) == 0) {
        *out = 0;
        return true;
    }
    for (int i = 0; i < n_vars; i++)
        if (strlen(vars[i].name) == n && strncmp(v, vars[i].name, n) == 0) {
            *out = 1 + i;
            return true;
        }
    return false;
}

/* "key=value,..." over *t: pdl=0|1, mv4=v1|r1p4|r2p4|r4p2|r2p8|r2p4d|r2p2d|r2p4h,
 * mv8=v1|r1p4|r2p2|r2p4|r4p2|r2p2d|r2p1d|r2p2h, mv4e=/mv8e= (a v2 name: the n_embd-row matrices), resid=0|1, norm=sb|mb|mbw, nf=0|1, nfp=16|8|4, oq=0|1, sw=0|1,
 * gus=0|1, l2pf=MiB (0: off), pfa/pft/pfn/pfs=MiB (in-kernel L2 prefetch of the next weights: qkv tail,
 * matvec tails, norms, swiglu; pfo: the output matvec's tail -> layer 0 of the next step; 0: off), pfc=N,
 * pfe=0|1, pfw=N (matvec CTAs request the rows of the CTA
 * N x SMs ahead), fa=0|1 (fused attention), fas=N (its splits, 0: default),
 * fapf=0|1 (it prefetches attn_output), fast=0..8 (its stages, 0: default), fav=NAME (its kernel variant:
 * kr_dec_fattn_variant_name, e.g. c64 (default), c32, cl8),
 * skip=[anms]|0 (timing experiments: leave
 * out the layers' attention / norms / matvecs / swiglu; wrong results); "default" resets to the default, "old" to the
 * pre-PDL step. */
static kr_status kr__parse_tuning(const char *spec, kr__gf_tuning *t, kr_err *err)
{
    const char *p = spec;
    while (*p) {
        size_t n = strcspn(p, ",");
        const char *eq = memchr(p, '=', n);
        bool ok = false;
        if (!eq) {
            if (n == 7 && strncmp(p, "default", 7) == 0) {
                *t = kr__tuning_default();
                ok = true;
            } else if (n == 3 && strncmp(p, "old", 3) == 0) {
                *t = (kr__gf_tuning){0};
                ok = true;
            }
        } else {
            size_t kn = (size_t)(eq - p), vn = n - kn - 1;
            const char *v = eq + 1;
            if (kn == 3 && strncmp(p, "pdl", 3) == 0)
                ok = kr__parse_bool(v, vn, &t->pdl);
            else if (kn == 5 && strncmp(p, "resid", 5) == 0)
                ok = kr__parse_bool(v, vn, &t->resid);
            else if (kn == 3 && strncmp(p, "gus", 3) == 0)
                ok = kr__parse_bool(v, vn, &t->gus);
            else if (kn == 2 && strncmp(p, "nf", 2) == 0)
                ok = kr__parse_bool(v, vn, &t->nf);
            else if (kn == 3 && strncmp(p, "nfp", 3) == 0 &&
                     ((vn == 2 && v[0] == '1' && v[1] == '6') || (vn == 1 && (v[0] == '8' || v[0] == '4')))) {
                t->nfp_w = atoi(v);
                ok = true;
            } else if (kn == 2 && strncmp(p, "oq", 2) == 0)
                ok = kr__parse_bool(v, vn, &t->oq);
            else if (kn == 2 && strncmp(p, "sw", 2) == 0)
                ok = kr__parse_bool(v, vn, &t->sw);
            else if (kn == 2 && strncmp(p, "fa", 2) == 0)
                ok = kr__parse_bool(v, vn, &t->fa);
            else if (kn == 4 && strncmp(p, "fapf", 4) == 0)
                ok = kr__parse_bool(v, vn, &t->fa_pf);
            else if (kn == 3 && strncmp(p, "fas", 3) == 0 && vn >= 1 && vn <= 3 && strspn(v, "0123456789") >= vn &&
                     atoi(v) <= KR__GKV_FA_MAX_SPLIT) {
                t->fa_split = atoi(v);
                ok = true;
            } else if (kn == 4 && strncmp(p, "fast", 4) == 0 && vn == 1 && v[0] >= '0' && v[0] <= '8') {
                t->fa_st = v[0] - '0';
                ok = true;
            } else if (kn == 3 && strncmp(p, "fav", 3) == 0 && kr__gkv_fattn_variant_find(v, vn) >= 0) {
                t->fa_var = kr__gkv_fattn_variant_find(v, vn);
                ok = true;
            }
            else if (kn == 4 && strncmp(p, "skip", 4) == 0) {
                t->skip = 0;
                ok = true;
                for (size_t i = 0; i < vn && ok; i++) {
                    if (v[i] == 'a')
                        t->skip |= KR__SKIP_ATTN;
                    else if (v[i] == 'n')
                        t->skip |= KR__SKIP_NORM;
                    else if (v[i] == 'm')
                        t->skip |= KR__SKIP_MV;
                    else if (v[i] == 's')
                        t->skip |= KR__SKIP_SWIGLU;
                    else if (v[i] != '0')
                        ok = false;
                }
            }
            else if (kn == 3 && strncmp(p, "mv4", 3) == 0)
                ok = kr__parse_mv(v, vn, kr__mv2_q4, KR__N_MV2_Q4, &t->mv4);
            else if (kn == 3 && strncmp(p, "mv8", 3) == 0)
                ok = kr__parse_mv(v, vn, kr__mv2_q8, KR__N_MV2_Q8, &t->mv8);
            else if (kn == 4 && strncmp(p, "mv4e", 4) == 0)
                ok = kr__parse_mv(v, vn, kr__mv2_q4, KR__N_MV2_Q4, &t->mv4e) && t->mv4e > 0;
            else if (kn == 4 && strncmp(p, "mv8e", 4) == 0)
                ok = kr__parse_mv(v, vn, kr__mv2_q8, KR__N_MV2_Q8, &t->mv8e) && t->mv8e > 0;
            else if (kn == 3 && strncmp(p, "pfa", 3) == 0)
                ok = kr__parse_mib(v, vn, &t->pfa_mb);
            else if (kn == 3 && strncmp(p, "pft", 3) == 0)
                ok = kr__parse_mib(v, vn, &t->pft_mb);
            else if (kn == 3 && strncmp(p, "pfn", 3) == 0)
                ok = kr__parse_mib(v, vn, &t->pfn_mb);
            else if (kn == 3 && strncmp(p, "pfs", 3) == 0)
                ok = kr__parse_mib(v, vn, &t->pfs_mb);
            else if (kn == 3 && strncmp(p, "pfc", 3) == 0)
                ok = kr__parse_mib(v, vn, &t->pfc) && t->pfc <= 64;
            else if (kn == 3 && strncmp(p, "pfe", 3) == 0)
                ok = kr__parse_bool(v, vn, &t->pfe);
            else if (kn == 3 && strncmp(p, "mvp", 3) == 0)
                ok = kr__parse_mib(v, vn, &t->mvp) && t->mvp >= 1 && t->mvp <= 32;
            else if (kn == 3 && strncmp(p, "pfo", 3) == 0)
                ok = kr__parse_mib(v, vn, &t->pfo_mb);
            else if (kn == 3 && strncmp(p, "pfw", 3) == 0)
                ok = kr__parse_mib(v, vn, &t->pfw) && t->pfw <= 64;
            else if (kn == 4 && strncmp(p, "l2pf", 4) == 0 && vn >= 1 && vn <= 4 && strspn(v, "0123456789") >= vn) {
                t->l2pf_mb = atoi(v);
                ok = true;
            } else if (kn == 4 && strncmp(p, "norm", 4) == 0 && vn == 2 &&
                       (strncmp(v, "sb", 2) == 0 || strncmp(v, "mb", 2) == 0)) {
                t->norm_mb = v[0] == 'm';
                t->norm_wide = false;
                ok = true;
            } else if (kn == 4 && strncmp(p, "norm", 4) == 0 && vn == 3 && strncmp(v, "mbw", 3) == 0) {
                t->norm_mb = t->norm_wide = true;
                ok = true;
            }
        }
        if (!ok && n > 0)
            return kr_err_set(err, KR_ERR_INVALID_ARG,
                              "gpu_forward tuning: bad item '%.*s' in '%s' (pdl=0|1, "
                              "mv4=v1|r1p4|r2p4|r4p2|r2p8|r2p4d|r2p2d|r2p4h, mv8=v1|r1p4|r2p2|r2p4|r4p2|r2p2d|r2p1d|r2p2h, "
                              "mv4e=, mv8e= (v2 names: o/down), mvp=1..32, "
                              "resid=0|1, norm=sb|mb, nf=0|1, oq=0|1, sw=0|1, gus=0|1, l2pf=MiB, "
                              "pfa|pft|pfn|pfs|pfo=MiB, pfc=N, pfe=0|1, pfw=N, fa=0|1, fas=N, fapf=0|1, fast=0..8, fav=c64|c32|cl8|..., "
                              "skip=[anms]|0, default, old)",
                              (int)n, p, spec);
        p += n;
        if (*p == ',')
            p++;
    }
    return KR_OK;
}

static kr_status kr__gf_fn(kr_backend *be, const char *entry, kr_function **fn, kr_err *err);

/* *fn = <pfx>_<type>_<name of v2 variant var> (var 1-based; other values: NULL). */
static kr_status kr__mv2_fn(kr_backend *be, const char *pfx, bool q4, int var, kr_function **fn, kr_err *err)
{
    *fn = NULL;
    if (var < 1 || var > (q4 ? KR__N_MV2_Q4 : KR__N_MV2_Q8))
        return KR_OK;
    char entry[64];
    snprintf(entry, sizeof entry, "%s_%s_%s", pfx, q4 ? "q4_0" : "q8_0",
             q4 ? kr__mv2_q4[var - 1].name : kr__mv2_q8[var - 1].name);
    return kr__gf_fn(be, entry, fn, err);
}

kr_status kr_gpu_forward_set_tuning(kr_gpu_forward *g, const char *spec, kr_err *err)
{
    if (!g || !spec)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu_forward tuning: NULL argument");
    kr__gf_tuning t = g->tun;
    kr_status st = kr__parse_tuning(spec, &t, err);
    if (st != KR_OK)
        return st;
    /* functions of the variant (JIT-compiled on first use) */
    kr_function *f4 = NULL, *f8 = NULL, *fn_mb = NULL;
    char entry[64];
    if (t.mv4 > 0) {
        snprintf(entry, sizeof entry, "kr_gf_mv2_q4_0_%s", kr__mv2_q4[t.mv4 - 1].name);
        if ((st = kr__gf_fn(g->be, entry, &f4, err)) != KR_OK)
            return st;
    }
    if (t.mv8 > 0) {
        snprintf(entry, sizeof entry, "kr_gf_mv2_q8_0_%s", kr__mv2_q8[t.mv8 - 1].name);
        if ((st = kr__gf_fn(g->be, entry, &f8, err)) != KR_OK)
            return st;
    }
    /* in-kernel L2 prefetch (pfa / pft / pfn / pfs): the same kernels with a kr_gf_pf argument */
    kr_function *ft4 = NULL, *ft8 = NULL, *fn_mbp = NULL, *fn_swp = NULL;
    const bool want_t = t.pfa_mb > 0 || t.pft_mb > 0 || t.pfo_mb > 0 || t.pfw > 0;
    if (want_t && t.mv4 > 0) {
        snprintf(entry, sizeof entry, "kr_gf_mv2t_q4_0_%s", kr__mv2_q4[t.mv4 - 1].name);
        if ((st = kr__gf_fn(g->be, entry, &ft4, err)) != KR_OK)
            return st;
    }
    if (want_t && t.mv8 > 0) {
        snprintf(entry, sizeof entry, "kr_gf_mv2t_q8_0_%s", kr__mv2_q8[t.mv8 - 1].name);
        if ((st = kr__gf_fn(g->be, entry, &ft8, err)) != KR_OK)
            return st;
    }
    for (int i = 0; i < 2; i++) {
        if (i == 0 ? !(t.pfn_mb > 0 && t.norm_mb) : !(t.pfs_mb > 0))
            continue;
        const kr_kernel_source src = {
            .name = "forward/step_fused.cu",
            .code = kr_gf_step_fused_src,
            .len = kr_gf_step_fused_src_LEN,
            .entry = i == 0 ? "kr_gf_rmsnorm_q8_mbp" : "kr_gf_swiglu_q8p",
        };
        if ((st = kr_backend_get_function(g->be, &src, i == 0 ? &fn_mbp : &fn_swp, err)) != KR_OK)
            return kr_err_prefix(err, "kernel %s", src.entry);
    }
    /* mv4e / mv8e: another v2 variant (and its prefetching twin) for the n_embd-row matrices */
    kr_function *fe[4] = {NULL}; /* q4, q8, t q4, t q8 */
    for (int i = 0; i < 4; i++) {
        bool q4 = i % 2 == 0;
        if ((q4 ? t.mv4 : t.mv8) <= 0 || (i >= 2 && !want_t))
            continue;
        if ((st = kr__mv2_fn(g->be, i >= 2 ? "kr_gf_mv2t" : "kr_gf_mv2", q4, q4 ? t.mv4e : t.mv8e, &fe[i], err)) !=
            KR_OK)
            return st;
    }
    kr_function *fnf[8] = {NULL}; /* p q4, p q8, c q4, c q8, pf q4, pf q8, ps q4, ps q8 */
    if (t.nf) {
        char p4[32], p8[32];
        snprintf(p4, sizeof p4, "kr_gf_mv2nfp%s_q4_0", t.nfp_w == 8 ? "8" : t.nfp_w == 4 ? "4" : "");
        snprintf(p8, sizeof p8, "kr_gf_mv2nfp%s_q8_0", t.nfp_w == 8 ? "8" : t.nfp_w == 4 ? "4" : "");
        const char *const nfe[8] = {p4, p8, "kr_gf_mv2nfc_q4_0",
                                           "kr_gf_mv2nfc_q8_0",  "kr_gf_mv2nfpf_q4_0", "kr_gf_mv2nfpf_q8_0",
                                           "kr_gf_mv2nfps_q4_0", "kr_gf_mv2nfps_q8_0"};
        for (int i = 0; i < 8; i++)
            if ((i < 4 || (i < 6 && t.oq) || (i >= 6 && t.sw)) && (st = kr__gf_fn(g->be, nfe[i], &fnf[i], err)) != KR_OK)
                return st;
    }
    kr_function *fg4 = NULL, *fg8 = NULL;
    if (t.gus && t.mv4 > 0) {
        snprintf(entry, sizeof entry, "kr_gf_mv2gus_q4_0_%s", kr__mv2_q4[t.mv4 - 1].name);
        if ((st = kr__gf_fn(g->be, entry, &fg4, err)) != KR_OK)
            return st;
    }
    if (t.gus && t.mv8 > 0) {
        snprintf(entry, sizeof entry, "kr_gf_mv2gus_q8_0_%s", kr__mv2_q8[t.mv8 - 1].name);
        if ((st = kr__gf_fn(g->be, entry, &fg8, err)) != KR_OK)
            return st;
    }
    if (t.gus && !g->gus_cnt && g->hp.n_ff % 32 == 0) {
        size_t nb = (size_t)g->hp.n_ff / 32 * sizeof(int32_t);
        if ((st = kr_backend_alloc(g->be, nb, &g->gus_cnt, err)) != KR_OK)
            return kr_err_prefix(err, "gate/up group counters");
        if ((st = kr_backend_memset(g->be, g->gus_cnt->ptr, 0, nb, g->stream, err)) != KR_OK ||
            (st = kr_backend_sync(g->be, g->stream, err)) != KR_OK)
            return st;
    }
    if (t.norm_mb) {
        const kr_kernel_source src = {
            .name = "forward/step_fused.cu",
            .code = kr_gf_step_fused_src,
            .len = kr_gf_step_fused_src_LEN,
            .entry = "kr_gf_rmsnorm_q8_mb",
        };
        if ((st = kr_backend_get_function(g->be, &src, &fn_mb, err)) != KR_OK)
            return kr_err_prefix(err, "kernel kr_gf_rmsnorm_q8_mb");
    }
    kr_function *fn_pf = NULL;
    if (t.l2pf_mb > 0) {
        const kr_kernel_source src = {
            .name = "forward/step_fused.cu",
            .code = kr_gf_step_fused_src,
            .len = kr_gf_step_fused_src_LEN,
            .entry = "kr_gf_prefetch_l2",
        };
        if ((st = kr_backend_get_function(g->be, &src, &fn_pf, err)) != KR_OK)
            return kr_err_prefix(err, "kernel kr_gf_prefetch_l2");
        if (!g->side && (st = kr_backend_stream_create(g->be, &g->side, err)) != KR_OK)
            return kr_err_prefix(err, "L2 prefetch stream");
        if (!g->ev_fork && (st = kr_backend_event_create(g->be, &g->ev_fork, err)) != KR_OK)
            return st;
        if (!g->ev_join && (st = kr_backend_event_create(g->be, &g->ev_join, err)) != KR_OK)
            return st;
    }
    /* the captured step may be in flight: finish it before dropping the graph */
    if (g->graph) {
        if ((st = kr_backend_sync(g->be, g->stream, err)) != KR_OK)
            return st;
        kr_backend_graph_destroy(g->be, g->graph);
        g->graph = NULL;
    }
    kr__gkv_drop_graphs(g); /* the other sequence slots' captures */
    g->graph_failed = false;
    g->tun = t;
    g->fn_mv2_q4_0 = f4;
    g->fn_mv2_q8_0 = f8;
    g->mv2_rows4 = t.mv4 > 0 ? kr__mv2_q4[t.mv4 - 1].rows : 0;
    g->mv2_rows8 = t.mv8 > 0 ? kr__mv2_q8[t.mv8 - 1].rows : 0;
    g->mv2_persist4 = t.mv4 > 0 && kr__mv2_q4[t.mv4 - 1].persist;
    g->mv2_persist8 = t.mv8 > 0 && kr__mv2_q8[t.mv8 - 1].persist;
    g->mv2e_persist4 = t.mv4e > 0 && kr__mv2_q4[t.mv4e - 1].persist;
    g->mv2e_persist8 = t.mv8e > 0 && kr__mv2_q8[t.mv8e - 1].persist;
    g->fn_norm_mb = fn_mb;
    g->fn_prefetch = fn_pf;
    g->fn_mv2t_q4_0 = ft4;
    g->fn_mv2t_q8_0 = ft8;
    g->fn_mv2e_q4_0 = fe[0];
    g->fn_mv2e_q8_0 = fe[1];
    g->fn_mv2et_q4_0 = fe[2];
    g->fn_mv2et_q8_0 = fe[3];
    g->mv2e_rows4 = t.mv4e > 0 ? kr__mv2_q4[t.mv4e - 1].rows : 0;
    g->mv2e_rows8 = t.mv8e > 0 ? kr__mv2_q8[t.mv8e - 1].rows : 0;
    g->fn_norm_mbp = fn_mbp;
    g->fn_swiglu_p = fn_swp;
    g->fn_gus_q4_0 = fg4;
    g->fn_gus_q8_0 = fg8;
    g->fn_nfp_q4_0 = fnf[0];
    g->fn_nfp_q8_0 = fnf[1];
    g->fn_nfc_q4_0 = fnf[2];
    g->fn_nfc_q8_0 = fnf[3];
    g->fn_nfpf_q4_0 = fnf[4];
    g->fn_nfpf_q8_0 = fnf[5];
    g->fn_nfps_q4_0 = fnf[6];
    g->fn_nfps_q8_0 = fnf[7];
    kr_dec_set_pdl(g->dec, t.pdl);
    return KR_OK;
}

static uint32_t kr__gf_flags(const kr_gpu_forward *g) { return g->tun.pdl ? KR_LAUNCH_PDL : 0; }

/* ---- the decode step ------------------------------------------------------------------ */

/* Profiling: record an event after a launch, labelled. Failures are kept
 * in g->prof_st (the step itself goes on). */
static void kr__prof_mark(kr_gpu_forward *g, kr_stream *s, const char *label)
{
    if (!g->prof_on || g->prof_st != KR_OK)
        return;
    if (g->prof_n == g->prof_cap) {
        size_t cap = g->prof_cap ? 2 * g->prof_cap : 256;
        kr_event **ev = realloc(g->prof_ev, cap * sizeof *ev);
        if (ev)
            g->prof_ev = ev;
        char(*lb)[64] = ev ? realloc(g->prof_label, cap * sizeof *lb) : NULL;
        if (!lb) {
            g->prof_st = kr_err_set(&g->prof_err, KR_ERR_NOMEM, "out of memory");
            return;
        }
        g->prof_label = lb;
        for (size_t i = g->prof_cap; i < cap; i++)
            g->prof_ev[i] = NULL;
        g->prof_cap = cap;
    }
    size_t i = g->prof_n;
    if (!g->prof_ev[i] && (g->prof_st = kr_backend_event_create(g->be, &g->prof_ev[i], &g->prof_err)) != KR_OK)
        return;
    if ((g->prof_st = kr_backend_event_record(g->be, g->prof_ev[i], s, &g->prof_err)) != KR_OK)
        return;
    snprintf(g->prof_label[i], sizeof g->prof_label[i], "%s", label ? label : "?");
    g->prof_n++;
}

/* "kr_dec_rope(d, s, ...)" -> "rope" */
static void kr__label_of(const char *expr, char *out, size_t n)
{
    static const char *const pfx[2] = {"kr_dec_", "kr_backend_"};
    for (int i = 0; i < 2; i++)
        if (strncmp(expr, pfx[i], strlen(pfx[i])) == 0) {
            expr += strlen(pfx[i]);
            break;
        }
    size_t k = 0;
    while (expr[k] && expr[k] != '(' && k + 1 < n) {
        out[k] = expr[k];
        k++;
    }
    out[k] = '\0';
}

/* A launch: count it and, when profiling, mark its end with label (NULL: from the expression). */
#define KR__TRYL(label, expr)                               \
    do {                                                    \
        if ((st = (expr)) != KR_OK)                         \
            return st;                                      \
        g->launches++;                                      \
        if (g->prof_on) {                                   \
            char kr__lb[64];                                \
            const char *kr__l = (label);                    \
            if (!kr__l) {                                   \
                kr__label_of(#expr, kr__lb, sizeof kr__lb); \
                kr__l = kr__lb;                             \
            }                                               \
            kr__prof_mark(g, s, kr__l);                     \
        }                                                   \
    } while (0)
#define KR__TRY(expr) KR__TRYL(NULL, expr)

/* ys[i] = mats[i] @ x for n matrices sharing the input x (quantized once when any uses q8). */
static bool kr__any_q8(const kr__gf_mat *const *mats, int n)
{
    for (int i = 0; i < n; i++)
        if (mats[i]->q8)
            return true;
    return false;
}

/* M runs on a v2 repacked matvec (which can add into its output). */
static bool kr__mv2_ok(const kr_gpu_forward *g, const kr__gf_mat *M)
{
    return M->repacked && (M->type == KR_DTYPE_Q4_0 ? g->fn_mv2_q4_0 : g->fn_mv2_q8_0) != NULL;
}

/* ---- in-kernel L2 prefetch of the next weights (tun.pfa/pft/pfn/pfs, kr__gf_pf) ---------- */

/* Append the leading *budget bytes of M (at most all of it) to pf's ranges and take them
 * from *budget. Repacked matrices are [quants | scales]: the leading fraction of each part
 * (what the first rows need). False when pf has no room left (the rest is dropped). */
static bool kr__pf_add(kr__gf_pf *pf, const kr__gf_mat *M, uint64_t *budget)
{
    if (!M || !M->w || *budget == 0)
        return true;
    uint64_t total = (uint64_t)M->rows * M->row_stride; /* the matrix's device bytes (checked at upload) */
    uint64_t take = total < *budget ? total : *budget;
    int free_i = 0;
    while (free_i < 4 && pf->n[free_i] > 0)
        free_i++;
    if (take == total || !M->repacked) {
        if (free_i == 4)
            return false;
        pf->p[free_i] = M->w;
        pf->n[free_i] = (int64_t)take;
    } else {
        if (free_i > 2)
            return false;
        uint64_t qs = (uint64_t)M->rows * (uint64_t)(M->cols / 32) * kr__quant_bytes(M->type), sc = total - qs;
        double f = (double)take / (double)total;
        pf->p[free_i] = M->w;
        pf->n[free_i] = (int64_t)(f * (double)qs);
        pf->p[free_i + 1] = (const char *)M->w + qs;
        pf->n[free_i + 1] = (int64_t)(f * (double)sc);
    }
    *budget -= take;
    return true;
}

/* pf = the leading MiB of a, then of b (either may be NULL). */
static void kr__pf_set(kr__gf_pf *pf, int mib, const kr__gf_mat *a, const kr__gf_mat *b)
{
    memset(pf, 0, sizeof *pf);
    uint64_t budget = (uint64_t)(mib > 0 ? mib : 0) << 20;
    if (kr__pf_add(pf, a, &budget))
        kr__pf_add(pf, b, &budget);
}

static bool kr__pf_any(const kr__gf_pf *pf) { return pf->n[0] > 0; }

/* x_quantized: g->xq already holds q8(x). acc: ys[i] += mats[i] @ x (every
 * mats[i] must satisfy kr__mv2_ok), else ys[i] = mats[i] @ x. */
static kr_status kr__proj(kr_gpu_forward *g, kr_stream *s, const float *x, bool x_quantized,
                          const kr__gf_mat *const *mats, float *const *ys, int n, bool acc, kr_err *err)
{
    kr_status st;
    const kr__gf_pf pf_req = g->pf_mv; /* consumed by this call (tun.pfa / pft) */
    memset(&g->pf_mv, 0, sizeof g->pf_mv);
    if (kr__any_q8(mats, n) && !x_quantized)
        KR__TRY(kr_dec_quantize_q8(g->dec, s, x, g->xq, mats[0]->cols, err));
    for (int i = 0; i < n; i++) {
        const kr__gf_mat *M = mats[i];
        bool v2 = kr__mv2_ok(g, M);
        if (acc && !v2)
            return kr_err_set(err, KR_ERR_INTERNAL, "gpu_forward: accumulating matvec on a %s matrix without v2",
                              kr_dtype_name(M->type));
        char lb[64];
        snprintf(lb, sizeof lb, "matvec %s %s%s%s%s", g->role ? g->role : "?", kr_dtype_name(M->type),
                 M->q8 ? " q8" : "", M->repacked ? " repacked" : "", v2 ? " v2" : "");
        if (M->repacked) {
            const void *qs = M->w;
            const void *sc = (const char *)M->w + (size_t)M->rows * (size_t)(M->cols / 32) * kr__quant_bytes(M->type);
            const void *xq = g->xq;
            float *y = ys[i];
            int rows = (int)M->rows, nb = (int)(M->cols / 32), iacc = acc;
            kr__gf_pf pf = pf_req;
            void *args[] = {&qs, &sc, &xq, &y, &rows, &nb, &iacc};
            void *args_t[] = {&qs, &sc, &xq, &y, &rows, &nb, &iacc, &pf};
            bool q4 = M->type == KR_DTYPE_Q4_0;
            int per = KR__GF_WARPS * (v2 ? (q4 ? g->mv2_rows4 : g->mv2_rows8) : 1);
            kr_function *fn = v2 ? (q4 ? g->fn_mv2_q4_0 : g->fn_mv2_q8_0) : (q4 ? g->fn_mv_q4_0 : g->fn_mv_q8_0);
            kr_function *ft = q4 ? g->fn_mv2t_q4_0 : g->fn_mv2t_q8_0;
            bool persist = v2 && (q4 ? g->mv2_persist4 : g->mv2_persist8);
            if (v2 && M->rows == (int64_t)g->hp.n_embd && (q4 ? g->fn_mv2e_q4_0 : g->fn_mv2e_q8_0)) {
                /* tun.mv4e / mv8e: the n_embd-row matrices (attn_output, ffn_down) */
                fn = q4 ? g->fn_mv2e_q4_0 : g->fn_mv2e_q8_0;
                ft = q4 ? g->fn_mv2et_q4_0 : g->fn_mv2et_q8_0;
                per = KR__GF_WARPS * (q4 ? g->mv2e_rows4 : g->mv2e_rows8);
                persist = q4 ? g->mv2e_persist4 : g->mv2e_persist8;
            }
            uint32_t grid[3] = {(uint32_t)((rows + per - 1) / per), 1, 1}, block[3] = {32, KR__GF_WARPS, 1};
            if (persist) {
                /* persistent warps: at most tun.mvp (default 4) CTAs per SM, every warp the same
                 * number of row tiles (k), the fewest warps that achieve it */
                const kr_device_info *di = kr_backend_device_info(g->be);
                int64_t sms = di && di->sm_count > 0 ? di->sm_count : 132;
                int64_t nr = per / KR__GF_WARPS, tiles = (rows + nr - 1) / nr;
                int64_t cap = sms * (g->tun.mvp > 0 ? g->tun.mvp : 4) * KR__GF_WARPS;
                int64_t k = (tiles + cap - 1) / cap, warps = (tiles + k - 1) / k;
                grid[0] = (uint32_t)((warps + KR__GF_WARPS - 1) / KR__GF_WARPS);
            }
            bool ranges = i == n - 1 && kr__pf_any(&pf);
            if (v2 && ft && (ranges || g->tun.pfw > 0)) {
                /* the tail request (tun.pfa / pft): the last pfc x SMs CTAs each issue a share;
                 * tun.pfw: every CTA also requests the rows of CTA + pfw x SMs before its wait */
                const kr_device_info *di = kr_backend_device_info(g->be);
                uint32_t sms = di && di->sm_count > 0 ? (uint32_t)di->sm_count : 132;
                uint32_t k = sms * (uint32_t)(g->tun.pfc > 0 ? g->tun.pfc : 4);
                if (!ranges)
                    memset(&pf, 0, sizeof pf);
                pf.nparts = ranges ? (int32_t)(k < grid[0] ? k : grid[0]) : 0;
                pf.first = (int32_t)grid[0] - pf.nparts;
                pf.early = g->tun.pfe;
                pf.ahead = (int32_t)(sms * (uint32_t)g->tun.pfw);
                snprintf(lb + strlen(lb), sizeof lb - strlen(lb), " + L2 prefetch");
                KR__TRYL(lb, kr_backend_launch_ex(g->be, ft, grid, block, 0, s, args_t, kr__gf_flags(g), err));
                continue;
            }
            KR__TRYL(lb, kr_backend_launch_ex(g->be, fn, grid, block, 0, s, args, kr__gf_flags(g), err));
        } else if (M->q8)
            KR__TRYL(lb, kr_dec_matvec_q8(g->dec, s, M->type, M->w, M->row_stride, g->xq, ys[i], M->rows, M->cols, err));
        else
            KR__TRYL(lb, kr_dec_matvec(g->dec, s, M->type, M->w, M->row_stride, x, ys[i], M->rows, M->cols, err));
    }
    return KR_OK;
}

/* The fused gate/up matvec with SwiGLU + q8 in its epilogue (tun.gus), or false when
 * it does not apply to M (the caller then runs the matvec and kr__swiglu). */
static bool kr__gus_ok(const kr_gpu_forward *g, const kr__gf_mat *M)
{
    int64_t F = g->hp.n_ff;
    if (!g->tun.gus || !g->gus_cnt || !kr__mv2_ok(g, M) || F % 32 != 0 || M->rows != 2 * F)
        return false;
    bool q4 = M->type == KR_DTYPE_Q4_0;
    int per = KR__GF_WARPS * (q4 ? g->mv2_rows4 : g->mv2_rows8);
    return (q4 ? g->fn_gus_q4_0 : g->fn_gus_q8_0) != NULL && per > 0 && F % per == 0 && 64 % per == 0;
}

/* y (2F) = M @ xq; then y[0..F) = silu(gate) * up and g->xq2 = q8 of that. */
static kr_status kr__proj_gus(kr_gpu_forward *g, kr_stream *s, const kr__gf_mat *M, float *y, kr_err *err)
{
    kr_status st;
    bool q4 = M->type == KR_DTYPE_Q4_0;
    const void *qs = M->w;
    const void *sc = (const char *)M->w + (size_t)M->rows * (size_t)(M->cols / 32) * kr__quant_bytes(M->type);
    const void *xq = g->xq;
    void *xo = g->xq2; /* not xq: other CTAs may still read xq when the first groups finish */
    int *cnt = g->gus_cnt->ptr;
    int rows = (int)M->rows, nb = (int)(M->cols / 32), F = (int)g->hp.n_ff;
    void *args[] = {&qs, &sc, &xq, &y, &rows, &nb, &F, &cnt, &xo};
    int per = KR__GF_WARPS * (q4 ? g->mv2_rows4 : g->mv2_rows8);
    uint32_t grid[3] = {(uint32_t)(rows / per), 1, 1}, block[3] = {32, KR__GF_WARPS, 1};
    char lb[64];
    snprintf(lb, sizeof lb, "matvec %s %s q8 repacked v2 + swiglu_q8", g->role ? g->role : "?",
             kr_dtype_name(M->type));
    KR__TRYL(lb, kr_backend_launch_ex(g->be, q4 ? g->fn_gus_q4_0 : g->fn_gus_q8_0, grid, block, 0, s, args,
                                      kr__gf_flags(g), err));
    return KR_OK;
}

/* Norm folding (tun.nf): producer P (attn_output / ffn_down, adds into x) and consumer C
 * (gate_up / next qkv) both on the v2 repacked path, E % 32 == 0. */
static bool kr__nf_ok(const kr_gpu_forward *g, const kr__gf_mat *P, const kr__gf_mat *C)
{
    int64_t E = g->hp.n_embd;
    if (!g->tun.nf || !g->tun.resid || !kr__mv2_ok(g, P) || !kr__mv2_ok(g, C) || E % 32 != 0 || P->rows != E ||
        C->cols != E)
        return false;
    return (P->type == KR_DTYPE_Q4_0 ? g->fn_nfp_q4_0 : g->fn_nfp_q8_0) != NULL &&
           (C->type == KR_DTYPE_Q4_0 ? g->fn_nfc_q4_0 : g->fn_nfc_q8_0) != NULL;
}

/* x += P @ q8(input); g->xq2 = q8(x * wn) unscaled, g->nf_part = block sums of x^2.
 * xf NULL: the input is q8 in g->xq; else fp32 (sw false: x itself; sw true: the gate|up
 * vector, x = silu(gate) * up), quantized by each CTA (kr_gf_mv2nfp{f,s}_*). */
static kr_status kr__nf_produce(kr_gpu_forward *g, kr_stream *s, const kr__gf_mat *P, const float *wn, const float *xf,
                                bool sw, kr_err *err)
{
    kr_status st;
    bool q4 = P->type == KR_DTYPE_Q4_0;
    const void *qs = P->w;
    const void *sc = (const char *)P->w + (size_t)P->rows * (size_t)(P->cols / 32) * kr__quant_bytes(P->type);
    const void *xq = xf ? (const void *)xf : (const void *)g->xq;
    float *x = g->x, *part = g->nf_part;
    void *xo = g->xq2;
    int rows = (int)P->rows, nb = (int)(P->cols / 32);
    void *args[] = {&qs, &sc, &xq, &x, &rows, &nb, &wn, &part, &xo};
    uint32_t grid[3] = {(uint32_t)(rows / 32), 1, 1}, block[3] = {32, xf || !g->tun.nfp_w ? 16 : (uint32_t)g->tun.nfp_w, 1};
    kr_function *fn = !xf ? (q4 ? g->fn_nfp_q4_0 : g->fn_nfp_q8_0)
                      : sw ? (q4 ? g->fn_nfps_q4_0 : g->fn_nfps_q8_0)
                           : (q4 ? g->fn_nfpf_q4_0 : g->fn_nfpf_q8_0);
    char lb[64];
    snprintf(lb, sizeof lb, "matvec %s %s q8 repacked v2 + norm%s", g->role ? g->role : "?", kr_dtype_name(P->type),
             !xf ? "" : sw ? " (+ swiglu_q8 in)" : " (+ quantize in)");
    KR__TRYL(lb, kr_backend_launch_ex(g->be, fn, grid, block, xf ? (size_t)nb * 40 : 0, s, args, kr__gf_flags(g), err));
    return KR_OK;
}

/* y = rsqrt(sum(nf_part) / E + eps) * (C @ xq2). */
static kr_status kr__nf_consume(kr_gpu_forward *g, kr_stream *s, const kr__gf_mat *C, float *y, kr_err *err)
{
    kr_status st;
    const void *qs = C->w;
    const void *sc = (const char *)C->w + (size_t)C->rows * (size_t)(C->cols / 32) * kr__quant_bytes(C->type);
    const void *xq = g->xq2;
    const float *part = g->nf_part;
    float eps = g->hp.norm_eps;
    int rows = (int)C->rows, nb = (int)(C->cols / 32);
    void *args[] = {&qs, &sc, &xq, &y, &rows, &nb, &part, &eps};
    uint32_t grid[3] = {(uint32_t)((rows + 2 * KR__GF_WARPS - 1) / (2 * KR__GF_WARPS)), 1, 1},
             block[3] = {32, KR__GF_WARPS, 1};
    char lb[64];
    snprintf(lb, sizeof lb, "matvec %s %s q8 repacked v2 (norm scale)", g->role ? g->role : "?",
             kr_dtype_name(C->type));
    KR__TRYL(lb, kr_backend_launch_ex(g->be, C->type == KR_DTYPE_Q4_0 ? g->fn_nfc_q4_0 : g->fn_nfc_q8_0, grid, block,
                                      0, s, args, kr__gf_flags(g), err));
    return KR_OK;
}

/* x += resid (resid NULL: none); h = rmsnorm(x) * w; q8: xq = q8(h). The multi-block kernel
 * takes g->pf_lat (tun.pfn), which every call consumes. */
static kr_status kr__norm(kr_gpu_forward *g, kr_stream *s, const float *resid, const float *w, bool q8, kr_err *err)
{
    kr_status st;
    int64_t E = g->hp.n_embd;
    kr__gf_pf pf = g->pf_lat;
    memset(&g->pf_lat, 0, sizeof g->pf_lat);
    if (!resid && g->fn_norm_mb && g->fn_norm && E % 32 == 0) {
        /* several CTAs, 4 warps each, one warp per 32-block */
        const float *x = g->x;
        float *h = g->h;
        void *xq = g->xq;
        int n = (int)E, iq8 = q8;
        float eps = g->hp.norm_eps;
        void *args[] = {&x, &w, &h, &xq, &n, &eps, &iq8};
        void *args_p[] = {&x, &w, &h, &xq, &n, &eps, &iq8, &pf};
        /* mb: 4 warps per CTA; mbw: up to 32 warps (one float4 of x per thread for E <= 4096) */
        uint32_t nblk = (uint32_t)(E / 32), wpc = 4;
        if (g->tun.norm_wide) {
            wpc = nblk < 32 ? nblk : 32;
            uint32_t by4 = (uint32_t)((E / 4 + 31) / 32); /* warps for one float4 per thread */
            if (by4 < wpc)
                wpc = by4 > 0 ? by4 : 1;
        }
        uint32_t grid[3] = {(nblk + wpc - 1) / wpc, 1, 1}, block[3] = {32 * wpc, 1, 1};
        if (g->fn_norm_mbp && kr__pf_any(&pf)) {
            pf.nparts = (int32_t)(grid[0] * wpc); /* one share per warp */
            KR__TRYL("rmsnorm_q8 (multi-block) + L2 prefetch",
                     kr_backend_launch_ex(g->be, g->fn_norm_mbp, grid, block, 0, s, args_p, kr__gf_flags(g), err));
            return KR_OK;
        }
        KR__TRYL("rmsnorm_q8 (multi-block)",
                 kr_backend_launch_ex(g->be, g->fn_norm_mb, grid, block, 0, s, args, kr__gf_flags(g), err));
        return KR_OK;
    }
    if (g->fn_norm) {
        float *x = g->x, *h = g->h;
        void *xq = g->xq;
        int n = (int)E, iq8 = q8;
        float eps = g->hp.norm_eps;
        void *args[] = {&x, &resid, &w, &h, &xq, &n, &eps, &iq8};
        uint32_t grid[3] = {1, 1, 1}, block[3] = {E >= 1024 ? 1024 : (uint32_t)((E + 31) / 32 * 32), 1, 1};
        KR__TRYL(resid ? "add_rmsnorm_q8 (fused)" : "rmsnorm_q8 (fused)",
                 kr_backend_launch_ex(g->be, g->fn_norm, grid, block, 0, s, args, kr__gf_flags(g), err));
        return KR_OK;
    }
    if (resid)
        KR__TRY(kr_dec_add(g->dec, s, g->x, resid, g->x, E, err));
    KR__TRY(kr_dec_rmsnorm(g->dec, s, g->x, w, g->h, 1, E, g->hp.norm_eps, err));
    if (q8)
        KR__TRY(kr_dec_quantize_q8(g->dec, s, g->h, g->xq, E, err));
    return KR_OK;
}

/* gate = silu(gate) * up; q8: xq = q8(gate) when that can be fused. Sets *quantized. The
 * fused kernel takes g->pf_lat (tun.pfs), which every call consumes. */
static kr_status kr__swiglu(kr_gpu_forward *g, kr_stream *s, bool q8, bool *quantized, kr_err *err)
{
    kr_status st;
    int64_t F = g->hp.n_ff;
    *quantized = false;
    kr__gf_pf pf = g->pf_lat;
    memset(&g->pf_lat, 0, sizeof g->pf_lat);
    if (g->fn_swiglu && F % 32 == 0) {
        const float *gu = g->gate;
        float *y = g->gate;
        void *xq = g->xq;
        int n = (int)F, iq8 = q8;
        void *args[] = {&gu, &y, &xq, &n, &iq8};
        void *args_p[] = {&gu, &y, &xq, &n, &iq8, &pf};
        uint32_t grid[3] = {(uint32_t)((F + 255) / 256), 1, 1}, block[3] = {256, 1, 1};
        if (g->fn_swiglu_p && kr__pf_any(&pf)) {
            pf.nparts = (int32_t)(grid[0] * 8); /* one share per warp */
            KR__TRYL("swiglu_q8 (fused) + L2 prefetch",
                     kr_backend_launch_ex(g->be, g->fn_swiglu_p, grid, block, 0, s, args_p, kr__gf_flags(g), err));
            *quantized = q8;
            return KR_OK;
        }
        KR__TRYL("swiglu_q8 (fused)",
                 kr_backend_launch_ex(g->be, g->fn_swiglu, grid, block, 0, s, args, kr__gf_flags(g), err));
        *quantized = q8;
        return KR_OK;
    }
    KR__TRY(kr_dec_swiglu(g->dec, s, g->gate, g->up, g->gate, F, err));
    return KR_OK;
}

static kr_status kr__step_falcon(kr_gpu_forward *g, kr_stream *s, kr_err *err)
{
    const kr_hparams *hp = &g->hp;
    kr_dec *d = g->dec;
    kr_status st;
    int64_t E = hp->n_embd, F = hp->n_ff;
    const int32_t *tok = g->step, *pos = g->step + 1;
    float scale = 1.0f / sqrtf((float)hp->head_dim);
    g->launches = 0;

    KR__TRY(kr_dec_embed(d, s, g->embd_type, g->embd, g->embd_row_stride, hp->n_vocab, E, tok, 0, g->x, err));
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const kr__gf_layer *L = &g->layers[l];
        KR__TRY(kr_dec_layernorm(d, s, g->x, L->attn_norm, L->attn_norm_b, g->h, 1, E, hp->norm_eps, err));
        const kr__gf_mat *qkv_up[2] = {&L->qkv, &L->up};
        float *const qkv_up_y[2] = {g->q, g->gate};
        if (L->attn_norm2) {
            /* 40B: attention reads its own norm, the MLP reads h */
            KR__TRY(kr_dec_layernorm(d, s, g->x, L->attn_norm2, L->attn_norm2_b, g->h2, 1, E, hp->norm_eps, err));
            g->role = "attn_qkv";
            if ((st = kr__proj(g, s, g->h2, false, qkv_up, qkv_up_y, 1, false, err)) != KR_OK)
                return st;
            g->role = "ffn_up";
            if ((st = kr__proj(g, s, g->h, false, qkv_up + 1, qkv_up_y + 1, 1, false, err)) != KR_OK)
                return st;
        } else {
            /* 7B: one input, quantized once for both */
            g->role = "attn_qkv + ffn_up";
            if ((st = kr__proj(g, s, g->h, false, qkv_up, qkv_up_y, 2, false, err)) != KR_OK)
                return st;
        }
        /* the fused attention (tun.fa; neox, no freq factors) also leaves q8(att) in g->xq */
        bool att_q = false;
        if (g->tun.fa && kr__gkv_fattn_ok(g)) {
            att_q = L->o.q8 && kr__gkv_fattn_xq_ok(g);
            KR__TRYL("fused attention (rope + kv store + attention + q8)",
                     kr__gkv_fattn(g, s, l, pos, true, NULL, 0, scale, g->tun.fa_split, g->tun.fa_st, g->tun.fa_var,
                                   att_q ? g->xq : NULL, g->tun.fa_pf ? L->o.w : NULL,
                                   (size_t)L->o.rows * L->o.row_stride, err));
        } else {
        if (kr__gkv_fused_rope(g)) { /* gpu_kvcache.c: into the current slot */
            KR__TRYL("rope + kv store", kr__gkv_rope_store(g, s, l, pos, true, NULL, err));
        } else {
            KR__TRY(kr_dec_rope(d, s, g->q, (int)hp->n_head, g->k, (int)hp->n_head_kv, (int)hp->head_dim,
                                (int)hp->n_rot, pos, 0, hp->rope_base, hp->rope_freq_scale, NULL, true, err));
            KR__TRYL("kv_append", kr__gkv_store(g, s, l, pos, err));
        }
        KR__TRYL(kr__gkv_splits(g) > 1 ? "attention (split + combine)" : "attention",
                 kr__gkv_attention(g, s, l, pos, 0, scale, err));
        if (kr__gkv_splits(g) > 1)
            g->launches++; /* the combine kernel */
        }
        const kr__gf_mat *o[1] = {&L->o}, *dn[1] = {&L->down};
        float *const o_y[1] = {g->tmp}, *const dn_y[1] = {g->ffo};
        g->role = "attn_output";
        if ((st = kr__proj(g, s, g->att, att_q, o, o_y, 1, false, err)) != KR_OK)
            return st;
        KR__TRY(kr_dec_gelu(d, s, g->gate, g->gate, F, err));
        g->role = "ffn_down";
        if ((st = kr__proj(g, s, g->gate, false, dn, dn_y, 1, false, err)) != KR_OK)
            return st;
        KR__TRY(kr_dec_add(d, s, g->x, g->tmp, g->x, E, err));
        KR__TRY(kr_dec_add(d, s, g->x, g->ffo, g->x, E, err));
    }
    KR__TRY(kr_dec_layernorm(d, s, g->x, g->out_norm, g->out_norm_b, g->h, 1, E, hp->norm_eps, err));
    const kr__gf_mat *om[1] = {&g->out};
    float *const om_y[1] = {g->logits};
    g->role = "output";
    return kr__proj(g, s, g->h, false, om, om_y, 1, false, err);
}

/* tun.l2pf_mb: fork the side stream off s and prefetch into L2 the first bytes of the
 * layer's attn_output and then gate/up weights (what the step reads after the attention). */
static kr_status kr__l2_prefetch(kr_gpu_forward *g, kr_stream *s, const kr__gf_layer *L, kr_err *err)
{
    kr_status st;
    if ((st = kr_backend_event_record(g->be, g->ev_fork, s, err)) != KR_OK ||
        (st = kr_backend_stream_wait_event(g->be, g->side, g->ev_fork, err)) != KR_OK)
        return st;
    uint64_t budget = (uint64_t)g->tun.l2pf_mb << 20;
    const kr__gf_mat *ms[3] = {&L->o, L->fuse_gu ? &L->gu : &L->gate, L->fuse_gu ? NULL : &L->up};
    for (int i = 0; i < 3 && budget > 0; i++) {
        if (!ms[i] || !ms[i]->w)
            continue;
        uint64_t b = (uint64_t)ms[i]->rows * ms[i]->row_stride;
        long long n = (long long)(b < budget ? b : budget);
        budget -= (uint64_t)n;
        const void *p = ms[i]->w;
        void *args[] = {&p, &n};
        uint32_t grid[3] = {(uint32_t)((n / 128 + 255) / 256 < 264 ? (n / 128 + 255) / 256 : 264), 1, 1};
        uint32_t block[3] = {256, 1, 1};
        if (grid[0] == 0)
            grid[0] = 1;
        if ((st = kr_backend_launch(g->be, g->fn_prefetch, grid, block, 0, g->side, args, err)) != KR_OK)
            return st;
        g->launches++;
    }
    return KR_OK;
}

static kr_status kr__step_llama(kr_gpu_forward *g, kr_stream *s, kr_err *err)
{
    const kr_hparams *hp = &g->hp;
    kr_dec *d = g->dec;
    kr_status st;
    const int32_t *tok = g->step, *pos = g->step + 1;
    bool neox = hp->rope_mode == KR_ROPE_NEOX;
    float scale = 1.0f / sqrtf((float)hp->head_dim);
    g->launches = 0;
    const unsigned skip = g->tun.skip; /* timing experiments only (wrong results) */

    KR__TRY(kr_dec_embed(d, s, g->embd_type, g->embd, g->embd_row_stride, hp->n_vocab, (int64_t)hp->n_embd, tok, 0,
                         g->x, err));
    /* The residual adds x += Wo att and x += Wdown(...): with tun.resid the
     * (v2 repacked) matvec adds into x itself; otherwise it writes tmp and
     * the next norm adds it (pend). */
    const float *pend = NULL;
    bool nf_in = false; /* this layer's qkv input was left by the previous ffn_down (tun.nf) */
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        const kr__gf_layer *L = &g->layers[l];
        const kr__gf_mat *qkv[3] = {&L->q, &L->k, &L->v};
        float *const qkv_y[3] = {g->q, g->k, g->v};
        const kr__gf_mat *qkv1[1] = {&L->qkv};
        bool fq = L->fuse_qkv;
        bool fg = L->fuse_gu;
        const kr__gf_mat *gu0 = fg ? &L->gu : &L->gate; /* the first gate/up matvec */
        /* in-kernel L2 prefetch requests (tun.pfn / pfa / pft / pfs; each consumed by the next
         * kr__norm / kr__swiglu (pf_lat) or kr__proj (pf_mv)): the next matvec's leading bytes */
        if (g->tun.pfn_mb > 0)
            kr__pf_set(&g->pf_lat, g->tun.pfn_mb, fq ? &L->qkv : &L->q, NULL);
        if (!nf_in && !(skip & KR__SKIP_NORM) &&
            (st = kr__norm(g, s, pend, L->attn_norm, fq ? kr__any_q8(qkv1, 1) : kr__any_q8(qkv, 3), err)) != KR_OK)
            return st;
        g->role = fq ? "attn_qkv" : "attn_q/k/v";
        if (nf_in) {
            if (!(skip & KR__SKIP_MV) && (st = kr__nf_consume(g, s, &L->qkv, g->q, err)) != KR_OK)
                return st;
        } else {
            /* the attention leaves HBM mostly idle: pfa covers attn_output and the start of gate/up */
            if (g->tun.pfa_mb > 0)
                kr__pf_set(&g->pf_mv, g->tun.pfa_mb, &L->o, gu0);
            else if (g->tun.pft_mb > 0)
                kr__pf_set(&g->pf_mv, g->tun.pft_mb, &L->o, NULL);
            if (!(skip & KR__SKIP_MV) && (st = fq ? kr__proj(g, s, g->h, true, qkv1, qkv_y, 1, false, err)
                                                  : kr__proj(g, s, g->h, true, qkv, qkv_y, 3, false, err)) != KR_OK)
                return st;
            memset(&g->pf_mv, 0, sizeof g->pf_mv);
        }
        if (g->fn_prefetch && g->tun.l2pf_mb > 0 && g->side && (st = kr__l2_prefetch(g, s, L, err)) != KR_OK)
            return st;
        /* the fused attention (tun.fa) also leaves q8(att) in g->xq for a q8 attn_output */
        bool att_q = false;
        if (!(skip & KR__SKIP_ATTN) && g->tun.fa && kr__gkv_fattn_ok(g)) {
            att_q = L->o.q8 && kr__gkv_fattn_xq_ok(g);
            KR__TRYL("fused attention (rope + kv store + attention + q8)",
                     kr__gkv_fattn(g, s, l, pos, neox, g->freq_factors, (int)hp->sliding_window, scale,
                                   g->tun.fa_split, g->tun.fa_st, g->tun.fa_var, att_q ? g->xq : NULL,
                                   g->tun.fa_pf ? L->o.w : NULL, (size_t)L->o.rows * L->o.row_stride, err));
        } else if (!(skip & KR__SKIP_ATTN)) {
        if (kr__gkv_fused_rope(g)) { /* gpu_kvcache.c: into the current slot */
            KR__TRYL("rope + kv store", kr__gkv_rope_store(g, s, l, pos, neox, g->freq_factors, err));
        } else {
            KR__TRY(kr_dec_rope(d, s, g->q, (int)hp->n_head, g->k, (int)hp->n_head_kv, (int)hp->head_dim,
                                (int)hp->n_rot, pos, 0, hp->rope_base, hp->rope_freq_scale, g->freq_factors, neox, err));
            KR__TRYL("kv_append", kr__gkv_store(g, s, l, pos, err));
        }
        KR__TRYL(kr__gkv_splits(g) > 1 ? "attention (split + combine)" : "attention",
                 kr__gkv_attention(g, s, l, pos, (int)hp->sliding_window, scale, err));
        if (kr__gkv_splits(g) > 1)
            g->launches++; /* the combine kernel */
        }
        const kr__gf_mat *o[1] = {&L->o};
        bool ro = g->tun.resid && kr__mv2_ok(g, &L->o);
        float *const o_y[1] = {ro ? g->x : g->tmp};
        g->role = "attn_output";
        bool nf_o = fg && kr__nf_ok(g, &L->o, &L->gu);
        if (nf_o) {
            bool oq = g->tun.oq && (L->o.type == KR_DTYPE_Q4_0 ? g->fn_nfpf_q4_0 : g->fn_nfpf_q8_0) != NULL;
            if (!(skip & KR__SKIP_MV)) {
                if (!oq && !att_q)
                    KR__TRY(kr_dec_quantize_q8(d, s, g->att, g->xq, L->o.cols, err));
                if ((st = kr__nf_produce(g, s, &L->o, L->ffn_norm, oq ? g->att : NULL, false, err)) != KR_OK)
                    return st;
            }
        } else {
            if (g->tun.pft_mb > 0)
                kr__pf_set(&g->pf_mv, g->tun.pft_mb, gu0, NULL);
            if (!(skip & KR__SKIP_MV) && (st = kr__proj(g, s, g->att, att_q, o, o_y, 1, ro, err)) != KR_OK)
                return st;
            memset(&g->pf_mv, 0, sizeof g->pf_mv);
        }
        if (g->tun.pfn_mb > 0)
            kr__pf_set(&g->pf_lat, g->tun.pfn_mb, gu0, NULL);
        const kr__gf_mat *gu[2] = {&L->gate, &L->up};
        float *const gu_y[2] = {g->gate, g->up};
        const kr__gf_mat *gu1[1] = {&L->gu};
        if (!nf_o && !(skip & KR__SKIP_NORM) &&
            (st = kr__norm(g, s, ro ? NULL : g->tmp, L->ffn_norm, fg ? kr__any_q8(gu1, 1) : kr__any_q8(gu, 2), err)) !=
                KR_OK)
            return st;
        g->role = fg ? "ffn_gate_up" : "ffn_gate/up";
        bool gus = !nf_o && fg && kr__gus_ok(g, &L->gu) && L->down.q8;
        memset(&g->pf_lat, 0, sizeof g->pf_lat);
        if (g->tun.pft_mb > 0 && !nf_o && !gus)
            kr__pf_set(&g->pf_mv, g->tun.pft_mb, &L->down, NULL);
        if (nf_o) {
            if (!(skip & KR__SKIP_MV) && (st = kr__nf_consume(g, s, &L->gu, g->gate, err)) != KR_OK)
                return st;
        } else if (!(skip & KR__SKIP_MV) && (st = gus ? kr__proj_gus(g, s, &L->gu, g->gate, err)
                  : fg ? kr__proj(g, s, g->h, true, gu1, gu_y, 1, false, err)
                       : kr__proj(g, s, g->h, true, gu, gu_y, 2, false, err)) != KR_OK)
            return st;
        memset(&g->pf_mv, 0, sizeof g->pf_mv);
        const kr__gf_mat *dn[1] = {&L->down};
        bool rd = g->tun.resid && kr__mv2_ok(g, &L->down);
        float *const dn_y[1] = {rd ? g->x : g->tmp};
        bool dq = false;
        if (gus) {
            /* the gate/up matvec left q8(silu(gate) * up) in xq2 */
            void *xq_save = g->xq;
            g->xq = g->xq2;
            g->role = "ffn_down";
            st = (skip & KR__SKIP_MV) ? KR_OK : kr__proj(g, s, g->gate, true, dn, dn_y, 1, rd, err);
            g->xq = xq_save;
            if (st != KR_OK)
                return st;
        } else {
            const kr__gf_layer *Ln = l + 1 < hp->n_layer ? &g->layers[l + 1] : NULL;
            nf_in = Ln && Ln->fuse_qkv && L->down.q8 && kr__nf_ok(g, &L->down, &Ln->qkv);
            /* tun.sw: the down matvec computes SwiGLU + q8 itself (fused gate|up output) */
            bool sw = nf_in && g->tun.sw && fg && g->hp.n_ff % 32 == 0 &&
                      (L->down.type == KR_DTYPE_Q4_0 ? g->fn_nfps_q4_0 : g->fn_nfps_q8_0) != NULL;
            if (g->tun.pfs_mb > 0)
                kr__pf_set(&g->pf_lat, g->tun.pfs_mb, &L->down, NULL);
            if (skip & KR__SKIP_SWIGLU) /* timing only: down reads whatever xq holds */
                dq = kr__any_q8(dn, 1);
            else if (!sw && (st = kr__swiglu(g, s, kr__any_q8(dn, 1), &dq, err)) != KR_OK)
                return st;
            memset(&g->pf_lat, 0, sizeof g->pf_lat);
            nf_in = nf_in && (sw || dq);
            g->role = "ffn_down";
            if (nf_in) {
                if (!(skip & KR__SKIP_MV) &&
                    (st = kr__nf_produce(g, s, &L->down, Ln->attn_norm, sw ? g->gate : NULL, sw, err)) != KR_OK)
                    return st;
            } else {
                if (g->tun.pft_mb > 0)
                    kr__pf_set(&g->pf_mv, g->tun.pft_mb, Ln ? (Ln->fuse_qkv ? &Ln->qkv : &Ln->q) : &g->out, NULL);
                if (!(skip & KR__SKIP_MV) && (st = kr__proj(g, s, g->gate, dq, dn, dn_y, 1, rd, err)) != KR_OK)
                    return st;
                memset(&g->pf_mv, 0, sizeof g->pf_mv);
            }
        }
        if (gus)
            nf_in = false;
        pend = rd ? NULL : g->tmp;
    }
    if (g->fn_prefetch && g->tun.l2pf_mb > 0 && g->side && hp->n_layer > 0) {
        /* join the side stream (graph capture needs every fork joined) */
        if ((st = kr_backend_event_record(g->be, g->ev_join, g->side, err)) != KR_OK ||
            (st = kr_backend_stream_wait_event(g->be, s, g->ev_join, err)) != KR_OK)
            return st;
    }
    const kr__gf_mat *om[1] = {&g->out};
    g->role = "output";
    float *const om_y[1] = {g->logits};
    if (g->tun.pfn_mb > 0)
        kr__pf_set(&g->pf_lat, g->tun.pfn_mb, &g->out, NULL);
    if ((st = kr__norm(g, s, pend, g->out_norm, kr__any_q8(om, 1), err)) != KR_OK)
        return st;
    /* tun.pfo: the output matvec's last CTAs request layer 0's qkv (then attn_output) for the
     * next step: HBM idles while the logits go to the host and the next token comes back */
    if (g->tun.pfo_mb > 0 && hp->n_layer > 0)
        kr__pf_set(&g->pf_mv, g->tun.pfo_mb, g->layers[0].fuse_qkv ? &g->layers[0].qkv : &g->layers[0].q,
                   &g->layers[0].o);
    st = kr__proj(g, s, g->h, true, om, om_y, 1, false, err);
    memset(&g->pf_mv, 0, sizeof g->pf_mv);
    return st;
}

static kr_status kr__step(kr_gpu_forward *g, kr_stream *s, kr_err *err)
{
    if (g->prof_on)
        kr__prof_mark(g, s, "start");
    return g->falcon ? kr__step_falcon(g, s, err) : kr__step_llama(g, s, err);
}

/* Capture the step once; on any failure fall back to eager launches for good. */
static void kr__try_capture(kr_gpu_forward *g)
{
    kr_err e;
    kr_err_clear(&e);
    kr_status st = kr_backend_graph_begin(g->be, g->stream, &e);
    if (st == KR_OK) {
        kr_err e_step;
        kr_err_clear(&e_step);
        kr_status st_step = kr__step(g, g->stream, &e_step);
        kr_graph *graph = NULL;
        st = kr_backend_graph_end(g->be, g->stream, &graph, &e);
        if (st_step != KR_OK) {
            kr_backend_graph_destroy(g->be, graph);
            graph = NULL;
            st = st_step;
            e = e_step;
        }
        if (st == KR_OK && graph) {
            g->graph = graph;
            KR_LOGI(KR__DOM, "decode step captured as a CUDA graph (%u launches)", g->launches);
            return;
        }
        kr_backend_graph_destroy(g->be, graph);
    }
    g->graph_failed = true;
    KR_LOGW(KR__DOM, "CUDA graph capture failed (%s); using eager launches", kr_err_msg(&e, st));
}

static kr_status kr__run_step(kr_gpu_forward *g, kr_err *err)
{
    if (g->use_graph && !g->graph && !g->graph_failed)
        kr__try_capture(g);
    if (g->graph)
        return kr_backend_graph_launch(g->be, g->graph, g->stream, err);
    return kr__step(g, g->stream, err);
}

static kr_status kr__eval_args(const kr_gpu_forward *g, const int32_t *tokens, size_t n, uint32_t pos, kr_err *err)
{
    if (!g || (!tokens && n))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu_forward eval: NULL argument");
    if (g->dead)
        return kr_err_set(err, KR_ERR_STATE, "gpu_forward eval: an earlier device step failed");
    if (n == 0)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu_forward eval: no tokens");
    if (pos > g->n_past)
        return kr_err_set(err, KR_ERR_STATE, "gpu_forward eval: pos %u is past the %u cached positions", pos,
                          g->n_past);
    if (n > g->n_ctx || pos > g->n_ctx - n)
        return kr_err_set(err, KR_ERR_RANGE, "gpu_forward eval: positions %u..%zu exceed n_ctx %u", pos,
                          (size_t)pos + n - 1, g->n_ctx);
    for (size_t i = 0; i < n; i++)
        if (tokens[i] < 0 || (uint32_t)tokens[i] >= g->hp.n_vocab)
            return kr_err_set(err, KR_ERR_RANGE, "gpu_forward eval: token %zu id %d outside [0, %u)", i,
                              (int)tokens[i], g->hp.n_vocab);
    return KR_OK;
}

kr_status kr_gpu_forward_eval(kr_gpu_forward *g, const int32_t *tokens, size_t n, uint32_t pos,
                              float *logits_last, kr_err *err)
{
    kr_status st0 = g && (tokens || !n) ? kr__gkv_before_eval(g, n, &pos, err) : KR_OK; /* auto shift */
    if (st0 == KR_OK)
        st0 = kr__eval_args(g, tokens, n, pos, err);
    if (st0 != KR_OK)
        return st0;
    int32_t *hs = g->hstep ? g->hstep->ptr : g->hstep_mem;
    float *hl = g->hlogits_buf ? g->hlogits_buf->ptr : g->hlogits_mem;
    kr_status st = KR_OK;
    size_t done = 0; /* n > 1: batched prefill (gpu_prefill.c) of done tokens, the rest token by token */
    if (n > 1)
        st = kr__prefill(g, tokens, n, pos, &done, err);
    for (size_t i = done; i < n && st == KR_OK; i++) {
        hs[2 * i] = tokens[i];
        hs[2 * i + 1] = (int32_t)(pos + i);
        st = kr_backend_h2d(g->be, g->step, &hs[2 * i], 2 * sizeof(int32_t), g->stream, err);
        if (st == KR_OK)
            st = kr__run_step(g, err);
    }
    if (st == KR_OK && logits_last)
        st = kr_backend_d2h(g->be, hl, g->logits, (size_t)g->hp.n_vocab * sizeof(float), g->stream, err);
    if (st == KR_OK)
        st = kr_backend_sync(g->be, g->stream, err);
    if (st != KR_OK) {
        g->dead = true;
        return kr_err_prefix(err, "CUDA decode step");
    }
    if (logits_last)
        memcpy(logits_last, hl, (size_t)g->hp.n_vocab * sizeof(float));
    g->n_past = pos + (uint32_t)n;
    g->stats.launches_per_token = g->launches;
    g->stats.graph = g->graph != NULL;
    g->stats.graph_failed = g->graph_failed;
    g->stats.batched_tokens = (uint32_t)done;
    return KR_OK;
}

uint32_t kr_gpu_forward_n_ctx(const kr_gpu_forward *g) { return g->n_ctx; }
uint32_t kr_gpu_forward_n_past(const kr_gpu_forward *g) { return g->n_past; }
void kr_gpu_forward_reset(kr_gpu_forward *g) { g->n_past = 0; }

void kr_gpu_forward_get_stats(const kr_gpu_forward *g, kr_gpu_forward_stats *out) { *out = g->stats; }

/* ---- profiling -------------------------------------------------------------------------- */

static int kr__prof_cmp(const void *a, const void *b)
{
    const kr_gpu_forward_prof_op *x = a, *y = b;
    return x->ms < y->ms ? 1 : x->ms > y->ms ? -1 : strcmp(x->name, y->name);
}

/* Add the launches of the step just run (events prof_ev[0 .. prof_n-1]) to tab. */
static kr_status kr__prof_collect(kr_gpu_forward *g, kr_gpu_forward_prof_op **tab, size_t *n_tab, size_t *cap_tab,
                                  double *step_ms, kr_err *err)
{
    kr_status st;
    for (size_t i = 1; i < g->prof_n; i++) {
        float ms = 0;
        if ((st = kr_backend_event_elapsed(g->be, g->prof_ev[i - 1], g->prof_ev[i], &ms, err)) != KR_OK)
            return st;
        *step_ms += ms;
        size_t j = 0;
        while (j < *n_tab && strcmp((*tab)[j].name, g->prof_label[i]) != 0)
            j++;
        if (j == *n_tab) {
            if (*n_tab == *cap_tab) {
                size_t c = *cap_tab ? 2 * *cap_tab : 32;
                kr_gpu_forward_prof_op *t = realloc(*tab, c * sizeof *t);
                if (!t)
                    return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
                *tab = t;
                *cap_tab = c;
            }
            memset(&(*tab)[j], 0, sizeof (*tab)[j]);
            snprintf((*tab)[j].name, sizeof (*tab)[j].name, "%s", g->prof_label[i]);
            (*n_tab)++;
        }
        (*tab)[j].calls++;
        (*tab)[j].ms += ms;
    }
    return KR_OK;
}

kr_status kr_gpu_forward_profile(kr_gpu_forward *g, const int32_t *tokens, size_t n, uint32_t pos,
                                 kr_gpu_forward_prof_op *ops, size_t cap, size_t *n_ops, double *step_ms,
                                 kr_err *err)
{
    kr_status st = kr__eval_args(g, tokens, n, pos, err);
    if (st != KR_OK)
        return st;
    if ((!ops && cap) || !n_ops || !step_ms)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "gpu_forward profile: NULL argument");
    *n_ops = 0;
    *step_ms = 0;
    int32_t *hs = g->hstep ? g->hstep->ptr : g->hstep_mem;
    kr_gpu_forward_prof_op *tab = NULL;
    size_t n_tab = 0, cap_tab = 0;
    double total = 0;
    for (size_t i = 0; i < n && st == KR_OK; i++) {
        hs[0] = tokens[i];
        hs[1] = (int32_t)(pos + i);
        g->prof_on = true;
        g->prof_n = 0;
        g->prof_st = KR_OK;
        kr_err_clear(&g->prof_err);
        st = kr_backend_h2d(g->be, g->step, hs, 2 * sizeof(int32_t), g->stream, err);
        if (st == KR_OK)
            st = kr__step(g, g->stream, err);
        g->prof_on = false;
        if (st == KR_OK)
            st = kr_backend_sync(g->be, g->stream, err);
        if (st != KR_OK) {
            g->dead = true;
            kr_err_prefix(err, "CUDA decode step (profiled)");
            break;
        }
        if (g->prof_st != KR_OK) {
            st = g->prof_st;
            if (err)
                *err = g->prof_err;
            kr_err_prefix(err, "profiling events");
            break;
        }
        g->n_past = pos + (uint32_t)i + 1;
        st = kr__prof_collect(g, &tab, &n_tab, &cap_tab, &total, err);
    }
    if (st == KR_OK) {
        for (size_t j = 0; j < n_tab; j++) {
            tab[j].ms /= (double)n;
            tab[j].calls = (uint32_t)(tab[j].calls / n);
        }
        if (n_tab > 1)
            qsort(tab, n_tab, sizeof *tab, kr__prof_cmp);
        for (size_t j = 0; j < n_tab && j < cap; j++)
            ops[j] = tab[j];
        *n_ops = n_tab;
        *step_ms = total / (double)n;
    }
    free(tab);
    return st;
}

/* ---- device logits for on-device sampling ------------------------------------------------ */

const float *kr_gpu_forward_logits_device(const kr_gpu_forward *g) { return g->logits; }
kr_stream *kr_gpu_forward_stream(const kr_gpu_forward *g) { return g->stream; }
