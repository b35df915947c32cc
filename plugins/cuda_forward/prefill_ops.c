/* Host launchers for kernels/prefill/{flash_attn,batch_ops}.cu (see kr_prefill_ops.h). */
#include "kr_prefill_ops.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/err_local.h"

#include "kr_kernel_prefill_batch_ops_cu.h"  /* embedded by meson (kernels/meson.build) */
#include "kr_kernel_prefill_flash_attn_cu.h"

static const char *const kr__o_d16[1] = {"-DKR_FA_D=16"};
static const char *const kr__o_d32[1] = {"-DKR_FA_D=32"};
static const char *const kr__o_d64[1] = {"-DKR_FA_D=64"};
static const char *const kr__o_d80[1] = {"-DKR_FA_D=80"};
static const char *const kr__o_d96[1] = {"-DKR_FA_D=96"};
static const char *const kr__o_d128[1] = {"-DKR_FA_D=128"};
static const char *const kr__o_d256[1] = {"-DKR_FA_D=256"};
static const char *const kr__o_q16[2] = {"-DKR_FA_D=16", "-DKR_FA_Q8=1"};
static const char *const kr__o_q32[2] = {"-DKR_FA_D=32", "-DKR_FA_Q8=1"};
static const char *const kr__o_q64[2] = {"-DKR_FA_D=64", "-DKR_FA_Q8=1"};
static const char *const kr__o_q80[2] = {"-DKR_FA_D=80", "-DKR_FA_Q8=1"};
static const char *const kr__o_q96[2] = {"-DKR_FA_D=96", "-DKR_FA_Q8=1"};
static const char *const kr__o_q128[2] = {"-DKR_FA_D=128", "-DKR_FA_Q8=1"};
static const char *const kr__o_q256[2] = {"-DKR_FA_D=256", "-DKR_FA_Q8=1"};
static const char *const kr__o_p16[2] = {"-DKR_FA_D=16", "-DKR_FA_PIPE=1"};
static const char *const kr__o_p32[2] = {"-DKR_FA_D=32", "-DKR_FA_PIPE=1"};
static const char *const kr__o_p64[2] = {"-DKR_FA_D=64", "-DKR_FA_PIPE=1"};
static const char *const kr__o_p80[2] = {"-DKR_FA_D=80", "-DKR_FA_PIPE=1"};
static const char *const kr__o_p96[2] = {"-DKR_FA_D=96", "-DKR_FA_PIPE=1"};
static const char *const kr__o_p128[2] = {"-DKR_FA_D=128", "-DKR_FA_PIPE=1"};
static const char *const kr__o_p256[2] = {"-DKR_FA_D=256", "-DKR_FA_PIPE=1"};

#define KR__FA_SRC(opts, nopt)                                                                           \
    {.name = "prefill/flash_attn.cu", .code = (const char *)kr_kernel_prefill_flash_attn_cu,            \
     .len = kr_kernel_prefill_flash_attn_cu_LEN, .entry = "kr_flash_attn_f16", .options = opts, .n_options = nopt}
#define KR__PB_SRC(e)                                                                                    \
    {.name = "prefill/batch_ops.cu", .code = (const char *)kr_kernel_prefill_batch_ops_cu,              \
     .len = kr_kernel_prefill_batch_ops_cu_LEN, .entry = e, .options = NULL, .n_options = 0}

enum {
    KR__PF_FA16,
    KR__PF_FA32,
    KR__PF_FA64,
    KR__PF_FA80,
    KR__PF_FA96,
    KR__PF_FA128,
    KR__PF_FA256,
    KR__PF_FAQ16,
    KR__PF_FAQ32,
    KR__PF_FAQ64,
    KR__PF_FAQ80,
    KR__PF_FAQ96,
    KR__PF_FAQ128,
    KR__PF_FAQ256,
    KR__PF_FAP16,
    KR__PF_FAP32,
    KR__PF_FAP64,
    KR__PF_FAP80,
    KR__PF_FAP96,
    KR__PF_FAP128,
    KR__PF_FAP256,
    KR__PF_ROPE,
    KR__PF_KV_STORE,
    KR__PF_KV_STORE_Q8,
    KR__PF_SWIGLU,
    KR__PF_UNREPACK,
    KR__PF_EMBED,
    KR__PF_RMSNORM_H,
    KR__PF_SWIGLU_H,
    KR__PF_TO_F16,
    KR__PF_COUNT
};

/* Static: the CUDA backend caches functions by record address. */
static const kr_kernel_source kr__pf_src[KR__PF_COUNT] = {
    [KR__PF_FA16] = KR__FA_SRC(kr__o_d16, 1),
    [KR__PF_FA32] = KR__FA_SRC(kr__o_d32, 1),
    [KR__PF_FA64] = KR__FA_SRC(kr__o_d64, 1),
    [KR__PF_FA80] = KR__FA_SRC(kr__o_d80, 1),
    [KR__PF_FA96] = KR__FA_SRC(kr__o_d96, 1),
    [KR__PF_FA128] = KR__FA_SRC(kr__o_d128, 1),
    [KR__PF_FA256] = KR__FA_SRC(kr__o_d256, 1),
    [KR__PF_FAQ16] = KR__FA_SRC(kr__o_q16, 2),
    [KR__PF_FAQ32] = KR__FA_SRC(kr__o_q32, 2),
    [KR__PF_FAQ64] = KR__FA_SRC(kr__o_q64, 2),
    [KR__PF_FAQ80] = KR__FA_SRC(kr__o_q80, 2),
    [KR__PF_FAQ96] = KR__FA_SRC(kr__o_q96, 2),
    [KR__PF_FAQ128] = KR__FA_SRC(kr__o_q128, 2),
    [KR__PF_FAQ256] = KR__FA_SRC(kr__o_q256, 2),
    [KR__PF_FAP16] = KR__FA_SRC(kr__o_p16, 2),
    [KR__PF_FAP32] = KR__FA_SRC(kr__o_p32, 2),
    [KR__PF_FAP64] = KR__FA_SRC(kr__o_p64, 2),
    [KR__PF_FAP80] = KR__FA_SRC(kr__o_p80, 2),
    [KR__PF_FAP96] = KR__FA_SRC(kr__o_p96, 2),
    [KR__PF_FAP128] = KR__FA_SRC(kr__o_p128, 2),
    [KR__PF_FAP256] = KR__FA_SRC(kr__o_p256, 2),
    [KR__PF_ROPE] = KR__PB_SRC("kr_pf_rope_f32"),
    [KR__PF_KV_STORE] = KR__PB_SRC("kr_pf_kv_store_f16"),
    [KR__PF_KV_STORE_Q8] = KR__PB_SRC("kr_pf_kv_store_q8"),
    [KR__PF_SWIGLU] = KR__PB_SRC("kr_pf_swiglu_f32"),
    [KR__PF_UNREPACK] = KR__PB_SRC("kr_pf_unrepack"),
    [KR__PF_EMBED] = KR__PB_SRC("kr_pf_embed"),
    [KR__PF_RMSNORM_H] = KR__PB_SRC("kr_pf_rmsnorm_h"),
    [KR__PF_SWIGLU_H] = KR__PB_SRC("kr_pf_swiglu_h"),
    [KR__PF_TO_F16] = KR__PB_SRC("kr_pf_to_f16"),
};

struct kr_pf {
    kr_backend *be;
    int fa_variant;                /* KR_PF_FA_* */
    pthread_mutex_t lock;          /* guards fn[] */
    kr_function *fn[KR__PF_COUNT]; /* lazily fetched; owned by the backend */
};

size_t kr_pf_source_count(void) { return KR__PF_COUNT; }
const kr_kernel_source *kr_pf_source_at(size_t i) { return i < KR__PF_COUNT ? &kr__pf_src[i] : NULL; }

kr_status kr_pf_create(kr_backend *be, kr_pf **out, kr_err *err)
{
    *out = NULL;
    if (!be || be->kind != KR_BACKEND_CUDA)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "prefill ops: needs a CUDA backend");
    kr_pf *p = calloc(1, sizeof *p);
    if (!p)
        return kr_err_set_local(err, KR_ERR_NOMEM, "prefill ops: out of memory");
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return kr_err_set_local(err, KR_ERR_INTERNAL, "prefill ops: pthread_mutex_init failed");
    }
    p->be = be;
    const char *fv = getenv("KERNRUN_FA_VARIANT");
    p->fa_variant = fv && !strcmp(fv, "simple") ? KR_PF_FA_SIMPLE : fv && !strcmp(fv, "pipe") ? KR_PF_FA_PIPE : KR_PF_FA_AUTO;
    *out = p;
    return KR_OK;
}

void kr_pf_free(kr_pf *p)
{
    if (!p)
        return;
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static kr_status kr__pf_get(kr_pf *p, int id, kr_function **fn, kr_err *err)
{
    pthread_mutex_lock(&p->lock);
    kr_status st = KR_OK;
    if (!p->fn[id]) {
        st = kr_backend_get_function(p->be, &kr__pf_src[id], &p->fn[id], err);
        if (st != KR_OK) {
            p->fn[id] = NULL;
            char what[128];
            snprintf(what, sizeof what, "prefill ops: kernel %s (%s%s%s%s%s)", kr__pf_src[id].entry,
                     kr__pf_src[id].name, kr__pf_src[id].n_options ? " " : "",
                     kr__pf_src[id].n_options ? kr__pf_src[id].options[0] : "",
                     kr__pf_src[id].n_options > 1 ? " " : "",
                     kr__pf_src[id].n_options > 1 ? kr__pf_src[id].options[1] : "");
            kr_err_prefix_local(err, st, what);
        }
    }
    *fn = p->fn[id];
    pthread_mutex_unlock(&p->lock);
    return st;
}

kr_status kr_pf_prepare_all(kr_pf *p, kr_err *err)
{
    if (!p)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "prefill ops: NULL kr_pf");
    for (int i = 0; i < KR__PF_COUNT; i++) {
        kr_function *fn;
        kr_status st = kr__pf_get(p, i, &fn, err);
        if (st != KR_OK)
            return st;
    }
    return KR_OK;
}

static int kr__pf_fa_id(int head_dim)
{
    switch (head_dim) {
    case 16: return KR__PF_FA16;
    case 32: return KR__PF_FA32;
    case 64: return KR__PF_FA64;
    case 80: return KR__PF_FA80;
    case 96: return KR__PF_FA96;
    case 128: return KR__PF_FA128;
    case 256: return KR__PF_FA256;
    default: return -1;
    }
}

bool kr_pf_flash_attn_supports(int head_dim) { return kr__pf_fa_id(head_dim) >= 0; }

/* AUTO's choice for F16 caches (set from measurements, docs/PREFILL.md: H200, 512 x 32 x 128 at
 * position 0: pipe 38 us vs simple 49; at 1536: 134 vs 240; falcon 71/1 x 64: equal). */
#define KR__PF_FA_AUTO_PIPE 1

void kr_pf_set_flash_variant(kr_pf *p, int variant)
{
    if (p)
        p->fa_variant = variant == KR_PF_FA_SIMPLE || variant == KR_PF_FA_PIPE ? variant : KR_PF_FA_AUTO;
}

static kr_status kr__pf_launch(kr_pf *p, int id, uint32_t gx, uint32_t gy, uint32_t bx, kr_stream *s, void **args,
                               kr_err *err)
{
    kr_function *fn;
    kr_status st = kr__pf_get(p, id, &fn, err);
    if (st != KR_OK)
        return st;
    const uint32_t grid[3] = {gx, gy, 1}, block[3] = {bx, 1, 1};
    st = kr_backend_launch(p->be, fn, grid, block, 0, s, args, err);
    if (st != KR_OK)
        kr_err_prefix_local(err, st, kr__pf_src[id].entry);
    return st;
}

#define KR__PF_FA_BM 64 /* KR_FA_BM in flash_attn.cu */

kr_status kr_pf_flash_attn(kr_pf *p, kr_stream *s, const float *q, size_t q_stride, const void *k, const void *v,
                           kr_dtype kv_type, size_t row_bytes, int rows, float *out, size_t o_stride, int n, int pos0,
                           int n_head, int n_head_kv, int head_dim, int window, float scale, kr_err *err)
{
    return kr_pf_flash_attn_ex(p, s, q, q_stride, k, v, kv_type, row_bytes, rows, out, NULL, o_stride, n, pos0, n_head,
                               n_head_kv, head_dim, window, scale, err);
}

kr_status kr_pf_flash_attn_ex(kr_pf *p, kr_stream *s, const float *q, size_t q_stride, const void *k, const void *v,
                              kr_dtype kv_type, size_t row_bytes, int rows, float *out, uint16_t *out16,
                              size_t o_stride, int n, int pos0, int n_head, int n_head_kv, int head_dim, int window,
                              float scale, kr_err *err)
{
    if (!p)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "flash attention: NULL kr_pf");
    if (kv_type != KR_DTYPE_F16 && kv_type != KR_DTYPE_Q8_0)
        return kr_err_set_local(err, KR_ERR_UNSUPPORTED, "flash attention: KV cache type %d (F16, Q8_0)", (int)kv_type);
    const bool q8 = kv_type == KR_DTYPE_Q8_0;
    /* F16: simple (synchronous tile loads) or pipelined (cp.async ring) kernel; Q8_0: one kernel */
    const bool pipe = !q8 && (p->fa_variant == KR_PF_FA_PIPE || (p->fa_variant == KR_PF_FA_AUTO && KR__PF_FA_AUTO_PIPE));
    const int id = kr__pf_fa_id(head_dim) < 0 ? -1
                   : kr__pf_fa_id(head_dim) + (q8 ? KR__PF_FAQ16 - KR__PF_FA16 : pipe ? KR__PF_FAP16 - KR__PF_FA16 : 0);
    if (id < 0)
        return kr_err_set_local(err, KR_ERR_UNSUPPORTED, "flash attention: head_dim %d (supported: 16, 32, 64, 80, 96, 128, 256)",
                                head_dim);
    if (n < 1 || pos0 < 0 || n_head < 1 || n_head_kv < 1 || n_head % n_head_kv != 0 || window < 0 || rows < 1)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "flash attention: n %d, pos0 %d, heads %d/%d, window %d, rows %d (need n >= 1, "
                                "pos0 >= 0, n_head a multiple of n_head_kv, window >= 0, rows >= 1)",
                                n, pos0, n_head, n_head_kv, window, rows);
    if ((int64_t)pos0 + n - 1 > INT32_MAX - 1 || (int64_t)n * (n_head / n_head_kv) > INT32_MAX - KR__PF_FA_BM)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "flash attention: n %d at pos0 %d with %d heads too large", n,
                                pos0, n_head);
    if (!q || !k || !v || (!out) == (!out16))
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "flash attention: NULL operand (or both / neither of out, out16)");
    const size_t qkd = (size_t)n_head * (size_t)head_dim, kvd = (size_t)n_head_kv * (size_t)head_dim;
    if (q_stride < qkd || q_stride % 4 != 0 || (uintptr_t)q % 16 != 0)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "flash attention: q stride %zu (need >= %zu, multiple of 4) or q %p not 16-byte "
                                "aligned", q_stride, qkd, (const void *)q);
    if (o_stride < qkd || o_stride % 2 != 0 || (out ? (uintptr_t)out % 8 : (uintptr_t)out16 % 4) != 0)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "flash attention: out stride %zu (need >= %zu, even) or out %p / out16 %p not 8 / 4-byte "
                                "aligned", o_stride, qkd, (void *)out, (void *)out16);
    const size_t min_row = q8 ? kvd + 2 * (kvd / 32) : 2 * kvd;
    if ((q8 && kvd % 32 != 0) || kvd > INT32_MAX || row_bytes < min_row || row_bytes % 16 != 0 ||
        (uintptr_t)k % 16 != 0 || (uintptr_t)v % 16 != 0)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "flash attention: kv_dim %zu (Q8_0: multiple of 32), row_bytes %zu (need >= %zu, "
                                "multiple of 16) or cache bases %p/%p not 16-byte aligned",
                                kvd, row_bytes, min_row, k, v);
    const int64_t lo0 = window > 0 ? (pos0 - window + 1 > 0 ? pos0 - window + 1 : 0) : 0;
    if ((int64_t)pos0 + n - 1 - lo0 >= rows)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "flash attention: positions %lld..%d do not fit %d cache rows (n %d at pos0 %d, "
                                "window %d)", (long long)lo0, pos0 + n - 1, rows, n, pos0, window);
    long long qs = (long long)q_stride, os = (long long)o_stride, rb = (long long)row_bytes;
    const float scale_log2 = scale * 1.4426950408889634f;
    int kv_dim = (int)kvd;
    void *args[] = {(void *)&q, &qs, (void *)&k, (void *)&v, &rb, &rows, &out, &os, &n, &pos0, &n_head, &n_head_kv,
                    &window, (void *)&scale_log2, &kv_dim, &out16};
    const int64_t n_rows = (int64_t)n * (n_head / n_head_kv);
    return kr__pf_launch(p, id, (uint32_t)((n_rows + KR__PF_FA_BM - 1) / KR__PF_FA_BM), (uint32_t)n_head_kv,
                         32 * 4, s, args, err);
}

/* Shared by kr_pf_rope and kr_pf_rope_kv_f16 (kc NULL: in place). */
static kr_status kr__pf_rope(kr_pf *p, kr_stream *s, float *q, size_t q_stride, int n_head_q, float *k, size_t k_stride,
                             int n_head_k, int head_dim, int n_rot, int n, int pos0, float freq_base, float freq_scale,
                             const float *freq_factors, bool neox, const float *v, size_t v_stride, void *kc, void *vc,
                             size_t row_bytes, int rows, kr_err *err)
{
    if (!p)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "rope: NULL kr_pf");
    if (n < 1 || n > 65535 || pos0 < 0 || n_head_q < 1 || n_head_k < 0 || (n_head_k > 0 && !k) || !q ||
        head_dim < 2 || n_rot < 2 || n_rot % 2 != 0 || n_rot > head_dim || n_rot > 256 ||
        (int64_t)n_head_q + 2 * (int64_t)n_head_k > 65535 * 8)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "rope: n %d (1..65535), pos0 %d, heads %d/%d, head_dim %d, n_rot %d (even, <= "
                                "head_dim, <= 256), q %p, k %p", n, pos0, n_head_q, n_head_k, head_dim, n_rot,
                                (void *)q, (void *)k);
    if (q_stride < (size_t)n_head_q * head_dim || (n_head_k > 0 && k_stride < (size_t)n_head_k * head_dim))
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "rope: strides %zu/%zu shorter than the heads", q_stride,
                                k_stride);
    if (kc && (!vc || !v || n_head_k < 1 || n > rows || rows < 1 || v_stride < (size_t)n_head_k * head_dim ||
               row_bytes < 2 * (size_t)n_head_k * head_dim || row_bytes % 2 != 0 || (uintptr_t)kc % 2 != 0 ||
               (uintptr_t)vc % 2 != 0 || (int64_t)pos0 + n > INT32_MAX))
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "rope + kv store: n %d (<= rows %d), v stride %zu, row_bytes %zu (>= %d, even), or a "
                                "NULL / misaligned cache", n, rows, v_stride, row_bytes, 2 * n_head_k * head_dim);
    long long qs = (long long)q_stride, ks = (long long)k_stride, vs = (long long)v_stride, rb = (long long)row_bytes;
    int nx = neox ? 1 : 0;
    void *args[] = {&q, &qs, &n_head_q, &k, &ks, &n_head_k, &head_dim, &n_rot, &pos0, &freq_base, &freq_scale,
                    (void *)&freq_factors, &nx, (void *)&v, &vs, &kc, &vc, &rb, &rows};
    const int half = n_rot / 2, heads = n_head_q + n_head_k + (kc ? n_head_k : 0);
    const uint32_t bx = half <= 32 ? 32 : half <= 64 ? 64 : 128;
    return kr__pf_launch(p, KR__PF_ROPE, (uint32_t)n, (uint32_t)((heads + 7) / 8), bx, s, args, err);
}

kr_status kr_pf_rope(kr_pf *p, kr_stream *s, float *q, size_t q_stride, int n_head_q, float *k, size_t k_stride,
                     int n_head_k, int head_dim, int n_rot, int n, int pos0, float freq_base, float freq_scale,
                     const float *freq_factors, bool neox, kr_err *err)
{
    return kr__pf_rope(p, s, q, q_stride, n_head_q, k, k_stride, n_head_k, head_dim, n_rot, n, pos0, freq_base,
                       freq_scale, freq_factors, neox, NULL, 0, NULL, NULL, 0, 1, err);
}

kr_status kr_pf_rope_kv_f16(kr_pf *p, kr_stream *s, float *q, size_t q_stride, int n_head_q, const float *k,
                            size_t k_stride, const float *v, size_t v_stride, int n_head_kv, int head_dim, int n_rot,
                            int n, int pos0, float freq_base, float freq_scale, const float *freq_factors, bool neox,
                            void *k_cache, void *v_cache, size_t row_bytes, int rows, kr_err *err)
{
    if (!k_cache)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "rope + kv store: NULL k_cache");
    return kr__pf_rope(p, s, q, q_stride, n_head_q, (float *)k, k_stride, n_head_kv, head_dim, n_rot, n, pos0,
                       freq_base, freq_scale, freq_factors, neox, v, v_stride, k_cache, v_cache, row_bytes, rows, err);
}

kr_status kr_pf_kv_store_f16(kr_pf *p, kr_stream *s, const float *k, size_t k_stride, const float *v,
                             size_t v_stride, void *k_cache, void *v_cache, size_t row_bytes, int rows, int kv_dim,
                             int n, int pos0, kr_err *err)
{
    if (!p)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "kv store: NULL kr_pf");
    if (n < 1 || n > 65535 || n > rows || pos0 < 0 || rows < 1 || kv_dim < 1 || !k || !v || !k_cache || !v_cache ||
        (int64_t)pos0 + n > INT32_MAX)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "kv store: n %d (1..65535, <= rows), pos0 %d, rows %d, kv_dim %d, or a NULL operand",
                                n, pos0, rows, kv_dim);
    if (k_stride < (size_t)kv_dim || v_stride < (size_t)kv_dim || row_bytes < 2 * (size_t)kv_dim ||
        row_bytes % 2 != 0 || (uintptr_t)k_cache % 2 != 0 || (uintptr_t)v_cache % 2 != 0)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "kv store: strides %zu/%zu, row_bytes %zu (need >= %d, even)", k_stride, v_stride,
                                row_bytes, 2 * kv_dim);
    long long ks = (long long)k_stride, vs = (long long)v_stride, rb = (long long)row_bytes;
    void *args[] = {(void *)&k, &ks, (void *)&v, &vs, &k_cache, &v_cache, &rb, &rows, &kv_dim, &pos0};
    return kr__pf_launch(p, KR__PF_KV_STORE, (uint32_t)((kv_dim + 255) / 256), (uint32_t)n, 256, s, args, err);
}

kr_status kr_pf_swiglu(kr_pf *p, kr_stream *s, const float *x, size_t x_stride, size_t up_off, float *y,
                       size_t y_stride, int ff, int n, kr_err *err)
{
    if (!p)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "swiglu: NULL kr_pf");
    if (n < 1 || n > 65535 || ff < 1 || !x || !y || up_off < (size_t)ff || x_stride < up_off + (size_t)ff ||
        y_stride < (size_t)ff)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "swiglu: n %d (1..65535), ff %d, x stride %zu, up offset %zu, y stride %zu", n, ff,
                                x_stride, up_off, y_stride);
    long long xs = (long long)x_stride, uo = (long long)up_off, ys = (long long)y_stride;
    void *args[] = {(void *)&x, &xs, &uo, &y, &ys, &ff};
    return kr__pf_launch(p, KR__PF_SWIGLU, (uint32_t)((ff + 255) / 256), (uint32_t)n, 256, s, args, err);
}

kr_status kr_pf_unrepack(kr_pf *p, kr_stream *s, bool q8_0, const void *qs, const void *sc, void *dst,
                         size_t dst_stride, int64_t rows, int64_t cols, kr_err *err)
{
    if (!p)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "unrepack: NULL kr_pf");
    const int qsz = q8_0 ? 32 : 16;
    if (!qs || !sc || !dst || rows < 1 || cols < 32 || cols % 32 != 0 || cols / 32 > INT32_MAX ||
        (uintptr_t)qs % 16 != 0 || (uintptr_t)sc % 2 != 0 || (uintptr_t)dst % 16 != 0 || dst_stride % 16 != 0 ||
        dst_stride < (size_t)(cols / 32) * (size_t)(qsz + 2) || rows > INT64_MAX / (cols / 32 + 31) ||
        (rows * ((cols / 32 + 31) / 32) + 7) / 8 > UINT32_MAX)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "unrepack: rows %lld, cols %lld (multiple of 32), dst stride %zu (multiple of 16), or "
                                "a NULL / misaligned operand (qs, dst 16 bytes)",
                                (long long)rows, (long long)cols, dst_stride);
    long long ds = (long long)dst_stride, nr = (long long)rows;
    int nb = (int)(cols / 32);
    const int64_t items = rows * ((nb + 31) / 32);
    void *args[] = {(void *)&qs, (void *)&sc, &dst, &ds, &nr, &nb, (void *)&qsz};
    return kr__pf_launch(p, KR__PF_UNREPACK, (uint32_t)((items + 7) / 8), 1, 256, s, args, err);
}

bool kr_pf_embed_supports(kr_dtype t)
{
    return t == KR_DTYPE_F32 || t == KR_DTYPE_F16 || t == KR_DTYPE_Q4_0 || t == KR_DTYPE_Q4_1 || t == KR_DTYPE_Q8_0;
}

kr_status kr_pf_embed(kr_pf *p, kr_stream *s, kr_dtype ttype, const void *table, size_t row_stride, int64_t n_vocab,
                      int64_t n_embd, const int32_t *tok, float *out, size_t o_stride, int n, kr_err *err)
{
    if (!p)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "embed: NULL kr_pf");
    if (!kr_pf_embed_supports(ttype))
        return kr_err_set_local(err, KR_ERR_UNSUPPORTED, "embed: table type %d (F32, F16, Q4_0, Q4_1, Q8_0)",
                                (int)ttype);
    const bool blk = ttype != KR_DTYPE_F32 && ttype != KR_DTYPE_F16;
    const size_t esz = ttype == KR_DTYPE_F32 ? 4 : 2;
    const size_t bb = ttype == KR_DTYPE_Q4_0 ? 18 : ttype == KR_DTYPE_Q4_1 ? 20 : 34;
    if (!table || !tok || !out || n < 1 || n > 65535 || n_vocab < 1 || n_vocab > INT32_MAX || n_embd < 1 ||
        n_embd > INT32_MAX || (blk && n_embd % 32 != 0) || o_stride < (size_t)n_embd ||
        row_stride < (blk ? (size_t)(n_embd / 32) * bb : (size_t)n_embd * esz) ||
        (uintptr_t)table % (blk ? 1 : esz) != 0 || row_stride % (blk ? 1 : esz) != 0)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "embed: n %d, n_vocab %lld, n_embd %lld, row stride %zu, out stride %zu, or a NULL / "
                                "misaligned operand", n, (long long)n_vocab, (long long)n_embd, row_stride, o_stride);
    long long rs = (long long)row_stride, os = (long long)o_stride;
    int nv = (int)n_vocab, ne = (int)n_embd, ty = (int)ttype;
    void *args[] = {(void *)&table, &rs, &nv, &ne, &ty, (void *)&tok, &out, &os};
    return kr__pf_launch(p, KR__PF_EMBED, (uint32_t)((n_embd + 255) / 256), (uint32_t)n, 256, s, args, err);
}

kr_status kr_pf_kv_store_q8(kr_pf *p, kr_stream *s, const float *k, size_t k_stride, const float *v, size_t v_stride,
                            void *k_cache, void *v_cache, size_t row_bytes, int rows, int kv_dim, int n, int pos0,
                            kr_err *err)
{
    if (!p)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "kv store q8: NULL kr_pf");
    if (n < 1 || n > 65535 || n > rows || pos0 < 0 || rows < 1 || kv_dim < 32 || kv_dim % 32 != 0 ||
        kv_dim > INT32_MAX / 2 ||
        !k || !v || !k_cache || !v_cache || (int64_t)pos0 + n > INT32_MAX)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "kv store q8: n %d (1..65535, <= rows), pos0 %d, rows %d, kv_dim %d (multiple of 32), or a "
                                "NULL operand", n, pos0, rows, kv_dim);
    if (k_stride < (size_t)kv_dim || v_stride < (size_t)kv_dim ||
        row_bytes < (size_t)kv_dim + 2 * (size_t)(kv_dim / 32) || row_bytes % 2 != 0 ||
        (uintptr_t)k_cache % 2 != 0 || (uintptr_t)v_cache % 2 != 0)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "kv store q8: strides %zu/%zu, row_bytes %zu (need >= %d, even)",
                                k_stride, v_stride, row_bytes, kv_dim + 2 * (kv_dim / 32));
    long long ks = (long long)k_stride, vs = (long long)v_stride, rb = (long long)row_bytes;
    void *args[] = {(void *)&k, &ks, (void *)&v, &vs, &k_cache, &v_cache, &rb, &rows, &kv_dim, &pos0};
    return kr__pf_launch(p, KR__PF_KV_STORE_Q8, (uint32_t)((2 * kv_dim + 255) / 256), (uint32_t)n, 256, s, args, err);
}

kr_status kr_pf_rmsnorm_h(kr_pf *p, kr_stream *s, float *x, const float *res, const float *w, uint16_t *y,
                          size_t y_stride, int64_t rows, int64_t n, float eps, kr_err *err)
{
    if (!p)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "rmsnorm_h: NULL kr_pf");
    if (!x || !y || rows < 1 || rows > UINT32_MAX || n < 1 || n > INT32_MAX || y_stride < (size_t)n)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "rmsnorm_h: rows %lld, n %lld, y stride %zu or a NULL operand",
                                (long long)rows, (long long)n, y_stride);
    long long ys = (long long)y_stride;
    int ni = (int)n;
    int vec = n % 4 == 0 && n <= 8192 && y_stride % 4 == 0 && (uintptr_t)x % 16 == 0 && (uintptr_t)res % 16 == 0 &&
              (uintptr_t)w % 16 == 0 && (uintptr_t)y % 8 == 0;
    void *args[] = {&x, (void *)&res, (void *)&w, &y, &ys, &ni, &eps, &vec};
    return kr__pf_launch(p, KR__PF_RMSNORM_H, (uint32_t)rows, 1, 256, s, args, err);
}

kr_status kr_pf_swiglu_h(kr_pf *p, kr_stream *s, const float *x, size_t x_stride, size_t up_off, uint16_t *y,
                         size_t y_stride, int ff, int n, kr_err *err)
{
    if (!p)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "swiglu_h: NULL kr_pf");
    if (n < 1 || n > 65535 || ff < 1 || !x || !y || up_off < (size_t)ff || x_stride < up_off + (size_t)ff ||
        y_stride < (size_t)ff)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "swiglu_h: n %d (1..65535), ff %d, x stride %zu, up offset %zu, y stride %zu", n, ff,
                                x_stride, up_off, y_stride);
    long long xs = (long long)x_stride, uo = (long long)up_off, ys = (long long)y_stride;
    int vec = ff % 4 == 0 && x_stride % 4 == 0 && up_off % 4 == 0 && y_stride % 4 == 0 && (uintptr_t)x % 16 == 0 &&
              (uintptr_t)y % 8 == 0;
    void *args[] = {(void *)&x, &xs, &uo, &y, &ys, &ff, &vec};
    const int per_block = vec ? 1024 : 256;
    return kr__pf_launch(p, KR__PF_SWIGLU_H, (uint32_t)((ff + per_block - 1) / per_block), (uint32_t)n, 256, s, args,
                         err);
}

kr_status kr_pf_to_f16(kr_pf *p, kr_stream *s, const float *x, uint16_t *y, int64_t n, kr_err *err)
{
    if (!p)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "to_f16: NULL kr_pf");
    if (!x || !y || n < 1 || (n + 1023) / 1024 > UINT32_MAX || (uintptr_t)x % 16 != 0 || (uintptr_t)y % 8 != 0)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "to_f16: n %lld, or x %p / y %p NULL or not 16/8-byte aligned",
                                (long long)n, (const void *)x, (void *)y);
    long long nn = (long long)n;
    void *args[] = {(void *)&x, &y, &nn};
    return kr__pf_launch(p, KR__PF_TO_F16, (uint32_t)((n + 1023) / 1024), 1, 256, s, args, err);
}
