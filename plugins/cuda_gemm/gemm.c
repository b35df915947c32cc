/* Host-side launchers for kernels/gemm/gemm.cu (see kr_gemm.h). */
#include "kr_gemm.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/err_local.h"

#include "kr_kernel_gemm_gemm_cu.h"     /* kr_kernel_gemm_gemm_cu[], embedded by meson */
#include "kr_kernel_gemm_gemm_mma_cu.h" /* kr_kernel_gemm_gemm_mma_cu[] */

#define KR__GM_THREADS 256 /* KR_GM_THREADS in gemm.cu */
#define KR__GM_BN 128      /* KR_GM_BN */

/* Kernel records: X(id, entry, options, tile rows, threads per block, tile columns). Static: the CUDA backend
 * caches functions by record address. */
static const char *const kr__opts_bm128[1] = {"-DKR_GM_BM=128"};
static const char *const kr__opts_bm64[1] = {"-DKR_GM_BM=64"};
/* gemm_mma.cu: weight type (GGML id), tile rows, pipeline stages (smem <= 48 KiB) */
#define KR__MM_OPTS(name, wt, bm, st) \
    static const char *const name[3] = {"-DKR_MM_WT=" #wt, "-DKR_MM_BM=" #bm, "-DKR_MM_ST=" #st};
KR__MM_OPTS(kr__opts_mm_f16_128, 1, 128, 3)
KR__MM_OPTS(kr__opts_mm_q4_0_128, 2, 128, 3)
KR__MM_OPTS(kr__opts_mm_q4_1_128, 3, 128, 3)
KR__MM_OPTS(kr__opts_mm_q8_0_128, 8, 128, 3)
KR__MM_OPTS(kr__opts_mm_q4_k_128, 12, 128, 3)
KR__MM_OPTS(kr__opts_mm_f16_64, 1, 64, 4)
KR__MM_OPTS(kr__opts_mm_q4_0_64, 2, 64, 4)
KR__MM_OPTS(kr__opts_mm_q4_1_64, 3, 64, 4)
KR__MM_OPTS(kr__opts_mm_q8_0_64, 8, 64, 4)
KR__MM_OPTS(kr__opts_mm_q4_k_64, 12, 64, 4)
KR__MM_OPTS(kr__opts_mm_q4_0r_128, 102, 128, 3)
KR__MM_OPTS(kr__opts_mm_q8_0r_128, 108, 128, 3)
KR__MM_OPTS(kr__opts_mm_q4_0r_64, 102, 64, 4)
KR__MM_OPTS(kr__opts_mm_q8_0r_64, 108, 64, 4)
KR__MM_OPTS(kr__opts_mm_q6_k_128, 14, 128, 2) /* Q6_K: 128-byte raw rows, 2 stages fit */
KR__MM_OPTS(kr__opts_mm_q6_k_64, 14, 64, 2)
KR__MM_OPTS(kr__opts_mm_cvt, 0, 128, 3)
#undef KR__MM_OPTS
/* 8 warps (2 x 4, warp tile 64 x 32) on 128 x 128 tiles */
#define KR__MM_OPTS8(name, wt) \
    static const char *const name[4] = {"-DKR_MM_WT=" #wt, "-DKR_MM_BM=128", "-DKR_MM_ST=3", "-DKR_MM_WN=4"};
KR__MM_OPTS8(kr__opts_mm_f16_w8, 1)
KR__MM_OPTS8(kr__opts_mm_q4_0_w8, 2)
KR__MM_OPTS8(kr__opts_mm_q4_1_w8, 3)
KR__MM_OPTS8(kr__opts_mm_q8_0_w8, 8)
KR__MM_OPTS8(kr__opts_mm_q4_k_w8, 12)
KR__MM_OPTS8(kr__opts_mm_q4_0r_w8, 102)
KR__MM_OPTS8(kr__opts_mm_q8_0r_w8, 108)
static const char *const kr__opts_mm_q6_k_w8[4] = {"-DKR_MM_WT=14", "-DKR_MM_BM=128", "-DKR_MM_ST=2",
                                                   "-DKR_MM_WN=4"};
#undef KR__MM_OPTS8
/* 128 x 256 tiles, 8 warps of 64 x 64: F16 K steps of 16, 4 stages; block types 2 stages */
static const char *const kr__opts_mm_f16_big[6] = {"-DKR_MM_WT=1", "-DKR_MM_BM=128", "-DKR_MM_ST=4",
                                                   "-DKR_MM_WN=4", "-DKR_MM_BN=256", "-DKR_MM_BK=16"};
#define KR__MM_OPTSB(name, wt) \
    static const char *const name[5] = {"-DKR_MM_WT=" #wt, "-DKR_MM_BM=128", "-DKR_MM_ST=2", "-DKR_MM_WN=4", \
                                        "-DKR_MM_BN=256"};
KR__MM_OPTSB(kr__opts_mm_q4_0_big, 2)
KR__MM_OPTSB(kr__opts_mm_q4_1_big, 3)
KR__MM_OPTSB(kr__opts_mm_q8_0_big, 8)
KR__MM_OPTSB(kr__opts_mm_q4_k_big, 12)
KR__MM_OPTSB(kr__opts_mm_q4_0r_big, 102)
KR__MM_OPTSB(kr__opts_mm_q8_0r_big, 108)
#undef KR__MM_OPTSB
/* Hopper wgmma (sm_90a: the later --gpu-architecture wins over the JIT's sm_90) */
#define KR__WG_OPTS(name, wt, st) \
    static const char *const name[5] = {"-DKR_MM_WT=" #wt, "-DKR_MM_BM=128", "-DKR_MM_ST=" #st, "-DKR_MM_WG=1", \
                                        "--gpu-architecture=sm_90a"};
KR__WG_OPTS(kr__opts_wg_f16, 1, 3)
KR__WG_OPTS(kr__opts_wg_q4_0, 2, 3)
KR__WG_OPTS(kr__opts_wg_q4_1, 3, 3)
KR__WG_OPTS(kr__opts_wg_q8_0, 8, 3)
KR__WG_OPTS(kr__opts_wg_q4_k, 12, 3)
KR__WG_OPTS(kr__opts_wg_q6_k, 14, 2)
KR__WG_OPTS(kr__opts_wg_q4_0r, 102, 3)
KR__WG_OPTS(kr__opts_wg_q8_0r, 108, 3)
#undef KR__WG_OPTS
/* F16, both wgmma operands from shared memory, K steps of 16, 6 stages, one group in flight */
/* 4-stage wgmma records for the types whose raw rows fit 32 bytes */
#define KR__WG4_OPTS(name, wt)                                                                                    \
    static const char *const name[6] = {"-DKR_MM_WT=" #wt, "-DKR_MM_BM=128", "-DKR_MM_ST=4", "-DKR_MM_WG=1",     \
                                        "-DKR_MM_RAW32=1", "--gpu-architecture=sm_90a"};
KR__WG4_OPTS(kr__opts_wg4_q4_0, 2)
KR__WG4_OPTS(kr__opts_wg4_q4_1, 3)
KR__WG4_OPTS(kr__opts_wg4_q4_0r, 102)
#undef KR__WG4_OPTS
static const char *const kr__opts_wgss_f16[5] = {"-DKR_MM_WT=1", "-DKR_MM_BM=128", "-DKR_MM_ST=3", "-DKR_MM_WG=4",
                                                 "--gpu-architecture=sm_90a"};
static const char *const kr__opts_wg2_f16[6] = {"-DKR_MM_WT=1", "-DKR_MM_BM=128", "-DKR_MM_ST=6", "-DKR_MM_BK=16",
                                                "-DKR_MM_WG=2", "--gpu-architecture=sm_90a"};

#define KR__GM_FN_MAP(X)                                 \
    X(F16_128, "kr_gemm_f16", kr__opts_bm128, 128, 256, 128)       \
    X(Q4_0_128, "kr_gemm_q4_0", kr__opts_bm128, 128, 256, 128)     \
    X(Q4_1_128, "kr_gemm_q4_1", kr__opts_bm128, 128, 256, 128)     \
    X(Q8_0_128, "kr_gemm_q8_0", kr__opts_bm128, 128, 256, 128)     \
    X(F16_64, "kr_gemm_f16", kr__opts_bm64, 64, 256, 128)          \
    X(Q4_0_64, "kr_gemm_q4_0", kr__opts_bm64, 64, 256, 128)        \
    X(Q4_1_64, "kr_gemm_q4_1", kr__opts_bm64, 64, 256, 128)        \
    X(Q8_0_64, "kr_gemm_q8_0", kr__opts_bm64, 64, 256, 128)        \
    X(Q4_K_128, "kr_gemm_q4_k", kr__opts_bm128, 128, 256, 128)     \
    X(Q6_K_128, "kr_gemm_q6_k", kr__opts_bm128, 128, 256, 128)     \
    X(Q4_K_64, "kr_gemm_q4_k", kr__opts_bm64, 64, 256, 128)        \
    X(Q6_K_64, "kr_gemm_q6_k", kr__opts_bm64, 64, 256, 128)        \
    X(F32_SIMT, "kr_gemm_f32_simt", kr__opts_bm128, 128, 256, 128)                                          \
    X(MM_F16_128, "kr_mm_gemm", kr__opts_mm_f16_128, 128, 128, 128)                                         \
    X(MM_Q4_0_128, "kr_mm_gemm", kr__opts_mm_q4_0_128, 128, 128, 128)                                       \
    X(MM_Q4_1_128, "kr_mm_gemm", kr__opts_mm_q4_1_128, 128, 128, 128)                                       \
    X(MM_Q8_0_128, "kr_mm_gemm", kr__opts_mm_q8_0_128, 128, 128, 128)                                       \
    X(MM_Q4_K_128, "kr_mm_gemm", kr__opts_mm_q4_k_128, 128, 128, 128)                                       \
    X(MM_F16_64, "kr_mm_gemm", kr__opts_mm_f16_64, 64, 128, 128)                                            \
    X(MM_Q4_0_64, "kr_mm_gemm", kr__opts_mm_q4_0_64, 64, 128, 128)                                          \
    X(MM_Q4_1_64, "kr_mm_gemm", kr__opts_mm_q4_1_64, 64, 128, 128)                                          \
    X(MM_Q8_0_64, "kr_mm_gemm", kr__opts_mm_q8_0_64, 64, 128, 128)                                          \
    X(MM_Q4_K_64, "kr_mm_gemm", kr__opts_mm_q4_k_64, 64, 128, 128)                                          \
    X(MM_F16_W8, "kr_mm_gemm", kr__opts_mm_f16_w8, 128, 256, 128)                                     \
    X(MM_Q4_0_W8, "kr_mm_gemm", kr__opts_mm_q4_0_w8, 128, 256, 128)                                   \
    X(MM_Q4_1_W8, "kr_mm_gemm", kr__opts_mm_q4_1_w8, 128, 256, 128)                                   \
    X(MM_Q8_0_W8, "kr_mm_gemm", kr__opts_mm_q8_0_w8, 128, 256, 128)                                   \
    X(MM_Q4_K_W8, "kr_mm_gemm", kr__opts_mm_q4_k_w8, 128, 256, 128)                                   \
    X(MM_F16_BIG, "kr_mm_gemm", kr__opts_mm_f16_big, 128, 256, 256)                             \
    X(MM_Q4_0_BIG, "kr_mm_gemm", kr__opts_mm_q4_0_big, 128, 256, 256)                           \
    X(MM_Q4_1_BIG, "kr_mm_gemm", kr__opts_mm_q4_1_big, 128, 256, 256)                           \
    X(MM_Q8_0_BIG, "kr_mm_gemm", kr__opts_mm_q8_0_big, 128, 256, 256)                           \
    X(MM_Q4_K_BIG, "kr_mm_gemm", kr__opts_mm_q4_k_big, 128, 256, 256)                           \
    X(MM_Q4_0R_128, "kr_mm_gemm", kr__opts_mm_q4_0r_128, 128, 128, 128)                         \
    X(MM_Q8_0R_128, "kr_mm_gemm", kr__opts_mm_q8_0r_128, 128, 128, 128)                         \
    X(MM_Q4_0R_64, "kr_mm_gemm", kr__opts_mm_q4_0r_64, 64, 128, 128)                            \
    X(MM_Q8_0R_64, "kr_mm_gemm", kr__opts_mm_q8_0r_64, 64, 128, 128)                            \
    X(MM_Q4_0R_W8, "kr_mm_gemm", kr__opts_mm_q4_0r_w8, 128, 256, 128)                           \
    X(MM_Q8_0R_W8, "kr_mm_gemm", kr__opts_mm_q8_0r_w8, 128, 256, 128)                           \
    X(MM_Q4_0R_BIG, "kr_mm_gemm", kr__opts_mm_q4_0r_big, 128, 256, 256)                         \
    X(MM_Q8_0R_BIG, "kr_mm_gemm", kr__opts_mm_q8_0r_big, 128, 256, 256)                         \
    X(MM_Q6_K_128, "kr_mm_gemm", kr__opts_mm_q6_k_128, 128, 128, 128)                          \
    X(MM_Q6_K_64, "kr_mm_gemm", kr__opts_mm_q6_k_64, 64, 128, 128)                             \
    X(MM_Q6_K_W8, "kr_mm_gemm", kr__opts_mm_q6_k_w8, 128, 256, 128)                            \
    X(WG_F16, "kr_mm_gemm", kr__opts_wg_f16, 128, 256, 128)                                    \
    X(WG_Q4_0, "kr_mm_gemm", kr__opts_wg_q4_0, 128, 256, 128)                                  \
    X(WG_Q4_1, "kr_mm_gemm", kr__opts_wg_q4_1, 128, 256, 128)                                  \
    X(WG_Q8_0, "kr_mm_gemm", kr__opts_wg_q8_0, 128, 256, 128)                                  \
    X(WG_Q4_K, "kr_mm_gemm", kr__opts_wg_q4_k, 128, 256, 128)                                  \
    X(WG_Q6_K, "kr_mm_gemm", kr__opts_wg_q6_k, 128, 256, 128)                                  \
    X(WG_Q4_0R, "kr_mm_gemm", kr__opts_wg_q4_0r, 128, 256, 128)                                \
    X(WG_Q8_0R, "kr_mm_gemm", kr__opts_wg_q8_0r, 128, 256, 128)                                \
    X(WG2_F16, "kr_mm_gemm", kr__opts_wg2_f16, 128, 256, 128)                                  \
    X(WGSS_F16, "kr_mm_gemm", kr__opts_wgss_f16, 128, 256, 128)                                \
    X(WG4_Q4_0, "kr_mm_gemm", kr__opts_wg4_q4_0, 128, 256, 128)                                \
    X(WG4_Q4_1, "kr_mm_gemm", kr__opts_wg4_q4_1, 128, 256, 128)                                \
    X(WG4_Q4_0R, "kr_mm_gemm", kr__opts_wg4_q4_0r, 128, 256, 128)                              \
    X(MM_CVT_A, "kr_mm_cvt_a", kr__opts_mm_cvt, 0, 256, 128)

typedef enum kr__gm_fn {
#define KR__GM_ENUM(id, entry, opts, bm, thr, bn) KR__GM_##id,
    KR__GM_FN_MAP(KR__GM_ENUM)
#undef KR__GM_ENUM
    KR__GM_COUNT
} kr__gm_fn;

static const kr_kernel_source kr__gm_src[KR__GM_COUNT] = {
#define KR__GM_SRC(id, e, opts, bm, thr, bn)                                                                         \
    [KR__GM_##id] = {.name = sizeof(opts) / sizeof(opts[0]) == 1 ? "gemm/gemm.cu" : "gemm/gemm_mma.cu",     \
                     .code = sizeof(opts) / sizeof(opts[0]) == 1 ? (const char *)kr_kernel_gemm_gemm_cu        \
                                                                 : (const char *)kr_kernel_gemm_gemm_mma_cu,   \
                     .len = sizeof(opts) / sizeof(opts[0]) == 1 ? kr_kernel_gemm_gemm_cu_LEN                   \
                                                                : kr_kernel_gemm_gemm_mma_cu_LEN,              \
                     .entry = e, .options = opts, .n_options = (int)(sizeof(opts) / sizeof(opts[0]))},
    KR__GM_FN_MAP(KR__GM_SRC)
#undef KR__GM_SRC
};

static const int kr__gm_bm[KR__GM_COUNT] = {
#define KR__GM_BM(id, e, opts, bm, thr, bn) [KR__GM_##id] = bm,
    KR__GM_FN_MAP(KR__GM_BM)
#undef KR__GM_BM
};

static const uint32_t kr__gm_threads[KR__GM_COUNT] = {
#define KR__GM_THR(id, e, opts, bm, thr, bn) [KR__GM_##id] = thr,
    KR__GM_FN_MAP(KR__GM_THR)
#undef KR__GM_THR
};

static const int kr__gm_bn[KR__GM_COUNT] = {
#define KR__GM_BN_(id, e, opts, bm, thr, bn) [KR__GM_##id] = bn,
    KR__GM_FN_MAP(KR__GM_BN_)
#undef KR__GM_BN_
};

struct kr_gemm {
    kr_backend *be;                 /* CUDA backend the functions belong to */
    pthread_mutex_t lock;           /* guards fn[] */
    kr_function *fn[KR__GM_COUNT];  /* (KR__GM_COUNT,) lazily fetched; owned by the backend */
    kr_buffer *ws;                  /* fp16 copy of A for the MMA kernels (kr_gemm_run); NULL until needed */
    bool failed[KR__GM_COUNT];      /* (KR__GM_COUNT,) the JIT compile / load failed once: not retried */
};



size_t kr_gemm_source_count(void) { return KR__GM_COUNT; }

const kr_kernel_source *kr_gemm_source_at(size_t i) { return i < KR__GM_COUNT ? &kr__gm_src[i] : NULL; }

kr_status kr_gemm_create(kr_backend *be, kr_gemm **out, kr_err *err)
{
    *out = NULL;
    if (!be || be->kind != KR_BACKEND_CUDA)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: needs a CUDA backend");
    kr_gemm *g = calloc(1, sizeof *g);
    if (!g)
        return kr_err_set_local(err, KR_ERR_NOMEM, "cuda_gemm: out of memory");
    if (pthread_mutex_init(&g->lock, NULL) != 0) {
        free(g);
        return kr_err_set_local(err, KR_ERR_INTERNAL, "cuda_gemm: pthread_mutex_init failed");
    }
    g->be = be;
    *out = g;
    return KR_OK;
}

void kr_gemm_free(kr_gemm *g)
{
    if (!g)
        return;
    kr_backend_free(g->be, g->ws);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

kr_backend *kr_gemm_backend(const kr_gemm *g) { return g ? g->be : NULL; }

static kr_status kr__gm_get(kr_gemm *g, kr__gm_fn id, kr_function **fn, kr_err *err)
{
    pthread_mutex_lock(&g->lock);
    kr_status st = KR_OK;
    if (!g->fn[id] && g->failed[id]) {
        st = kr_err_set_local(err, KR_ERR_UNSUPPORTED, "cuda_gemm: kernel %s (%s %s) failed to compile or load before",
                              kr__gm_src[id].entry, kr__gm_src[id].name, kr__gm_src[id].options[0]);
    } else if (!g->fn[id]) {
        st = kr_backend_get_function(g->be, &kr__gm_src[id], &g->fn[id], err);
        if (st != KR_OK) {
            g->fn[id] = NULL;
            g->failed[id] = true;
            char what[128];
            snprintf(what, sizeof what, "cuda_gemm: kernel %s (%s %s)", kr__gm_src[id].entry,
                     kr__gm_src[id].name, kr__gm_src[id].options[0]);
            kr_err_prefix_local(err, st, what);
        }
    }
    *fn = g->fn[id];
    pthread_mutex_unlock(&g->lock);
    return st;
}

kr_status kr_gemm_prepare_all(kr_gemm *g, kr_err *err)
{
    if (!g)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: NULL kr_gemm");
    for (int i = 0; i < KR__GM_COUNT; i++) {
        kr_function *fn;
        kr_status st = kr__gm_get(g, (kr__gm_fn)i, &fn, err);
        if (st != KR_OK)
            return st;
    }
    return KR_OK;
}

bool kr_gemm_uses_tensor_cores(kr_dtype t)
{
    return t == KR_DTYPE_F16 || t == KR_DTYPE_Q4_0 || t == KR_DTYPE_Q4_1 || t == KR_DTYPE_Q8_0 ||
           t == KR_DTYPE_Q4_K || t == KR_DTYPE_Q6_K;
}

bool kr_gemm_supports(kr_dtype t) { return t == KR_DTYPE_F32 || kr_gemm_uses_tensor_cores(t); }

/* Elements and bytes per block, and the alignment the kernel's loads need. */
static void kr__gm_type(kr_dtype t, int64_t *blk, size_t *bytes, size_t *align, const char **name)
{
    *blk = 32;
    switch (t) {
    case KR_DTYPE_F32: *bytes = 128, *align = 16, *name = "F32"; break;
    case KR_DTYPE_F16: *bytes = 64, *align = 16, *name = "F16"; break;
    case KR_DTYPE_Q4_0: *bytes = 18, *align = 2, *name = "Q4_0"; break;
    case KR_DTYPE_Q4_1: *bytes = 20, *align = 4, *name = "Q4_1"; break;
    case KR_DTYPE_Q8_0: *bytes = 34, *align = 2, *name = "Q8_0"; break;
    case KR_DTYPE_Q4_K: *blk = 256, *bytes = 144, *align = 4, *name = "Q4_K"; break;
    case KR_DTYPE_Q6_K: *blk = 256, *bytes = 210, *align = 2, *name = "Q6_K"; break;
    default: *bytes = 0, *align = 1, *name = "?"; break;
    }
}

static kr__gm_fn kr__gm_pick(kr_dtype t, bool small)
{
    switch (t) {
    case KR_DTYPE_F16: return small ? KR__GM_F16_64 : KR__GM_F16_128;
    case KR_DTYPE_Q4_0: return small ? KR__GM_Q4_0_64 : KR__GM_Q4_0_128;
    case KR_DTYPE_Q4_1: return small ? KR__GM_Q4_1_64 : KR__GM_Q4_1_128;
    case KR_DTYPE_Q8_0: return small ? KR__GM_Q8_0_64 : KR__GM_Q8_0_128;
    case KR_DTYPE_Q4_K: return small ? KR__GM_Q4_K_64 : KR__GM_Q4_K_128;
    case KR_DTYPE_Q6_K: return small ? KR__GM_Q6_K_64 : KR__GM_Q6_K_128;
    default: return KR__GM_F32_SIMT;
    }
}

static int64_t kr__div_up(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool kr_gemm_mma_supports(kr_dtype t)
{
    return t == KR_DTYPE_F16 || t == KR_DTYPE_Q4_0 || t == KR_DTYPE_Q4_1 || t == KR_DTYPE_Q8_0 || t == KR_DTYPE_Q4_K ||
           t == KR_DTYPE_Q6_K;
}

static kr__gm_fn kr__wg_pick(kr_dtype t, bool repacked)
{
    switch (t) {
    case KR_DTYPE_F16: return KR__GM_WG_F16;
    case KR_DTYPE_Q4_0: return repacked ? KR__GM_WG_Q4_0R : KR__GM_WG_Q4_0;
    case KR_DTYPE_Q4_1: return KR__GM_WG_Q4_1;
    case KR_DTYPE_Q8_0: return repacked ? KR__GM_WG_Q8_0R : KR__GM_WG_Q8_0;
    case KR_DTYPE_Q4_K: return KR__GM_WG_Q4_K;
    default: return KR__GM_WG_Q6_K;
    }
}

static kr__gm_fn kr__mm_pick(kr_dtype t, bool small, bool w8, bool big, bool repacked)
{
    if (repacked) {
        bool q8 = t == KR_DTYPE_Q8_0;
        if (big)
            return q8 ? KR__GM_MM_Q8_0R_BIG : KR__GM_MM_Q4_0R_BIG;
        if (w8)
            return q8 ? KR__GM_MM_Q8_0R_W8 : KR__GM_MM_Q4_0R_W8;
        if (small)
            return q8 ? KR__GM_MM_Q8_0R_64 : KR__GM_MM_Q4_0R_64;
        return q8 ? KR__GM_MM_Q8_0R_128 : KR__GM_MM_Q4_0R_128;
    }
    if (t == KR_DTYPE_Q6_K) /* no 128 x 256 record (raw rows too big): the 8-warp one */
        return big || w8 ? KR__GM_MM_Q6_K_W8 : small ? KR__GM_MM_Q6_K_64 : KR__GM_MM_Q6_K_128;
    if (big) {
        switch (t) {
        case KR_DTYPE_F16: return KR__GM_MM_F16_BIG;
        case KR_DTYPE_Q4_0: return KR__GM_MM_Q4_0_BIG;
        case KR_DTYPE_Q4_1: return KR__GM_MM_Q4_1_BIG;
        case KR_DTYPE_Q8_0: return KR__GM_MM_Q8_0_BIG;
        default: return KR__GM_MM_Q4_K_BIG;
        }
    }
    if (w8) {
        switch (t) {
        case KR_DTYPE_F16: return KR__GM_MM_F16_W8;
        case KR_DTYPE_Q4_0: return KR__GM_MM_Q4_0_W8;
        case KR_DTYPE_Q4_1: return KR__GM_MM_Q4_1_W8;
        case KR_DTYPE_Q8_0: return KR__GM_MM_Q8_0_W8;
        default: return KR__GM_MM_Q4_K_W8;
        }
    }
    switch (t) {
    case KR_DTYPE_F16: return small ? KR__GM_MM_F16_64 : KR__GM_MM_F16_128;
    case KR_DTYPE_Q4_0: return small ? KR__GM_MM_Q4_0_64 : KR__GM_MM_Q4_0_128;
    case KR_DTYPE_Q4_1: return small ? KR__GM_MM_Q4_1_64 : KR__GM_MM_Q4_1_128;
    case KR_DTYPE_Q8_0: return small ? KR__GM_MM_Q8_0_64 : KR__GM_MM_Q8_0_128;
    default: return small ? KR__GM_MM_Q4_K_64 : KR__GM_MM_Q4_K_128;
    }
}

static kr_status kr__gm_launch(kr_gemm *g, kr_stream *s, kr__gm_fn id, const uint32_t grid[3], uint32_t threads,
                               void **args, const char *tn, kr_err *err)
{
    kr_function *fn;
    kr_status st = kr__gm_get(g, id, &fn, err);
    if (st != KR_OK)
        return st;
    const uint32_t block[3] = {threads, 1, 1};
    st = kr_backend_launch(g->be, fn, grid, block, 0, s, args, err);
    if (st != KR_OK) {
        char what[96];
        snprintf(what, sizeof what, "cuda_gemm: launching %s (%s)", kr__gm_src[id].entry, tn);
        return kr_err_prefix_local(err, st, what);
    }
    return KR_OK;
}

/* The workspace holding at least `bytes` (under g->lock). */
static kr_status kr__gm_workspace(kr_gemm *g, size_t bytes, void **out, kr_err *err)
{
    pthread_mutex_lock(&g->lock);
    kr_status st = KR_OK;
    if (!g->ws || g->ws->size < bytes) {
        /* earlier launches may still read the old buffer */
        if (g->ws && (st = kr_backend_sync(g->be, NULL, err)) != KR_OK)
            goto out;
        kr_backend_free(g->be, g->ws);
        g->ws = NULL;
        size_t want = bytes < ((size_t)1 << 20) ? ((size_t)1 << 20) : bytes;
        st = kr_backend_alloc(g->be, want, &g->ws, err);
        if (st != KR_OK) {
            g->ws = NULL;
            kr_err_prefix_local(err, st, "cuda_gemm: workspace for fp16 A");
            goto out;
        }
    }
    *out = g->ws->ptr;
out:
    pthread_mutex_unlock(&g->lock);
    return st;
}

/* a32 (fp32, lda floats) or a16 (fp16, lda halves): exactly one is non-NULL. */
/* sc != NULL: W in the repacked layout (kr_gemm_run_repacked; w = qs, w_stride = nb * quant bytes). */
static kr_status kr__gm_run(kr_gemm *g, kr_stream *s, kr_gemm_variant variant, kr_dtype wtype, const void *w,
                            size_t w_stride, const void *sc, const float *a32, const uint16_t *a16, size_t lda,
                            float *c, size_t ldc, int64_t m, int64_t n, int64_t k, kr_err *err)
{
    if (!g)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: NULL kr_gemm");
    if (!kr_gemm_supports(wtype))
        return kr_err_set_local(err, KR_ERR_UNSUPPORTED, "cuda_gemm: weight type %d not supported (F32, F16, Q4_0, "
                                                   "Q4_1, Q8_0, Q4_K, Q6_K)", (int)wtype);
    if (variant < KR_GEMM_AUTO || variant > KR_GEMM_WG_SS_K2)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: unknown variant %d", (int)variant);
    int64_t blk;
    size_t blk_bytes, align;
    const char *tn;
    kr__gm_type(wtype, &blk, &blk_bytes, &align, &tn);
    if (m < 1 || m > INT32_MAX || n < 1 || n > INT32_MAX)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: m %lld and n %lld must lie in [1, 2^31)",
                          (long long)m, (long long)n);
    if (k < blk || k > INT32_MAX || k % blk != 0)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: k %lld is not a positive multiple of %lld (%s block)",
                          (long long)k, (long long)blk, tn);
    const void *a = a32 ? (const void *)a32 : (const void *)a16;
    if (!w || !a || !c)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: NULL operand (w %p, a %p, c %p)", w, a,
                          (void *)c);
    /* k <= INT32_MAX, so row bytes <= 2^31/32*128 = 2^33: no overflow in 64 bits */
    uint64_t row_bytes = (uint64_t)(k / blk) * (sc ? blk_bytes - 2 : blk_bytes); /* repacked: quants only */
    if (w_stride < row_bytes || w_stride % align != 0 || (uintptr_t)w % align != 0)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                          "cuda_gemm: %s weight stride %zu (row of %lld needs >= %llu bytes) or address %p not "
                          "%zu-byte aligned",
                          tn, w_stride, (long long)k, (unsigned long long)row_bytes, w, align);
    if (a32 && (lda < (uint64_t)k || lda % 4 != 0 || (uintptr_t)a % 16 != 0))
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                          "cuda_gemm: A row stride %zu must be >= k %lld and a multiple of 4, A (%p) 16-byte aligned",
                          lda, (long long)k, a);
    if (a16 && (lda < (uint64_t)k || lda % 8 != 0 || (uintptr_t)a % 16 != 0))
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                          "cuda_gemm: fp16 A row stride %zu must be >= k %lld and a multiple of 8, A (%p) 16-byte "
                          "aligned", lda, (long long)k, a);
    if (ldc < (uint64_t)n)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: C row stride %zu < n %lld", ldc, (long long)n);
    if (lda > INT64_MAX / (uint64_t)m || ldc > INT64_MAX / (uint64_t)m || w_stride > INT64_MAX / (uint64_t)n)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: strides too large for 64-bit indexing");

    const bool mma_var = variant >= KR_GEMM_MMA128;
    const bool w_aligned = (uintptr_t)w % 16 == 0 && w_stride % 16 == 0;
    bool use_mma = false;
    if (sc) {
        if (wtype != KR_DTYPE_Q4_0 && wtype != KR_DTYPE_Q8_0)
            return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: repacked weights must be Q4_0 or Q8_0, not %s",
                              tn);
        if (k % 256 != 0 || (uintptr_t)sc % 16 != 0)
            return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                              "cuda_gemm: repacked weights need k %% 256 == 0 (k %lld) and 16-byte aligned scales (%p)",
                              (long long)k, sc);
        if (variant == KR_GEMM_TC128 || variant == KR_GEMM_TC64)
            return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: repacked weights need an MMA variant or AUTO, "
                                                       "not %d", (int)variant);
        use_mma = true;
    } else if (a16) {
        if (!kr_gemm_mma_supports(wtype))
            return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: fp16 A needs a type with an MMA kernel (F16, "
                                                       "Q4_0, Q4_1, Q8_0, Q4_K, Q6_K), not %s", tn);
        if (variant == KR_GEMM_TC128 || variant == KR_GEMM_TC64)
            return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: fp16 A needs an MMA variant or AUTO, not %d",
                              (int)variant);
        use_mma = true;
    } else if (mma_var) {
        use_mma = kr_gemm_mma_supports(wtype);
    } else if (variant == KR_GEMM_AUTO) {
        /* rows of whole 16-byte chunks: the MMA loads never pass a row's end */
        use_mma = kr_gemm_mma_supports(wtype) && w_aligned && row_bytes % 16 == 0;
    }
    if (use_mma && !w_aligned)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                          "cuda_gemm: the MMA kernels need W (%p) and its stride (%zu) 16-byte aligned", w, w_stride);

    if (!use_mma) {
        kr__gm_fn id;
        if (wtype == KR_DTYPE_F32) {
            id = KR__GM_F32_SIMT;
        } else {
            bool small = variant == KR_GEMM_TC64 || variant == KR_GEMM_MMA64;
            if (variant == KR_GEMM_AUTO) {
                /* H200, m 512, n = k = 4096 (docs/GEMM.md): F16 is ~3% faster with 64-row
                 * tiles when 128-row ones give < 2 blocks per SM; the block types are
                 * 1.2-1.3x faster with 128-row tiles (their loads are the bottleneck and
                 * a 128-row tile loads each W tile for twice the rows), so they take 64
                 * only for m <= 64. */
                if (wtype == KR_DTYPE_F16) {
                    const kr_device_info *dev = kr_backend_device_info(g->be);
                    int sms = dev && dev->sm_count > 0 ? dev->sm_count : 1;
                    small = kr__div_up(m, 128) * kr__div_up(n, KR__GM_BN) < 2 * (int64_t)sms;
                } else {
                    small = m <= 64;
                }
            }
            id = kr__gm_pick(wtype, small);
        }
        int64_t gy = kr__div_up(m, kr__gm_bm[id]), gx = kr__div_up(n, KR__GM_BN);
        if (gy > 65535)
            return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: m %lld needs %lld row blocks (> 65535)",
                              (long long)m, (long long)gy);
        long long lda_k = (long long)lda, ldw_k = (long long)w_stride, ldc_k = (long long)ldc;
        int m_k = (int)m, n_k = (int)n, k_k = (int)k;
        void *args[] = {&a, &lda_k, &w, &ldw_k, &c, &ldc_k, &m_k, &n_k, &k_k};
        const uint32_t grid[3] = {(uint32_t)gx, (uint32_t)gy, 1};
        return kr__gm_launch(g, s, id, grid, KR__GM_THREADS, args, tn, err);
    }

    /* MMA path. AUTO (H200 at m 512, docs/GEMM.md): m <= 64: 64-row tiles; compute capability
     * 9.0: wgmma, split K in 2 below two tiles per SM; else (mma.sync): fewer 128 x 128 tiles
     * than SMs: split K in 2; 4-bit types: 8 warps (their dequantization is the heavier
     * part); F16/Q8_0/Q6_K: 8 warps up to 3 tiles per SM, 4 warps of 64 x 64 beyond. */
    kr_gemm_variant v = variant;
    if (v == KR_GEMM_AUTO) {
        const kr_device_info *dev = kr_backend_device_info(g->be);
        int64_t sms = dev && dev->sm_count > 0 ? dev->sm_count : 1;
        int64_t tiles = kr__div_up(m, 128) * kr__div_up(n, KR__GM_BN);
        bool q4 = wtype == KR_DTYPE_Q4_0 || wtype == KR_DTYPE_Q4_1 || wtype == KR_DTYPE_Q4_K;
        const bool hopper = dev && dev->cc_major == 9 && dev->cc_minor == 0;
        bool wg_ok = hopper;
        if (hopper) { /* an NVRTC without sm_90a (or a failed load): mma.sync from now on */
            kr_function *probe;
            kr_err e2;
            memset(&e2, 0, sizeof e2);
            wg_ok = kr__gm_get(g, kr__wg_pick(wtype, sc != NULL), &probe, &e2) == KR_OK;
        }
        if (m <= 64)
            v = KR_GEMM_MMA64;
        else if (wg_ok) { /* wgmma: 15-30% over the best mma.sync config at every 7B shape (H200, 07:54);
                             GGML Q4_0 / Q4_1: the 4-stage records, 3-6% more (08:21) */
            const bool s4 = (wtype == KR_DTYPE_Q4_0 && !sc) || (wtype == KR_DTYPE_Q4_1 && !sc);
            const bool k2 = tiles < 2 * sms && ldc == (uint64_t)n && k >= 1024;
            if (wtype == KR_DTYPE_F16) /* both operands from shared memory: 2-10% over WG (08:45) */
                v = k2 ? KR_GEMM_WG_SS_K2 : KR_GEMM_WG_SS;
            else
                v = s4 ? (k2 ? KR_GEMM_WG_S4_K2 : KR_GEMM_WG_S4) : (k2 ? KR_GEMM_WG_K2 : KR_GEMM_WG);
        }
        else if (tiles < sms && ldc == (uint64_t)n && k >= 1024)
            v = KR_GEMM_MMA128_K2;
        else if (q4 || tiles < 3 * sms)
            v = KR_GEMM_MMA128_W8;
        else
            v = KR_GEMM_MMA128;
    }
    const bool wg2 = (v == KR_GEMM_WG2 || v == KR_GEMM_WG2_K2) && wtype == KR_DTYPE_F16 && !sc;
    const bool wgss = (v == KR_GEMM_WG_SS || v == KR_GEMM_WG_SS_K2) && wtype == KR_DTYPE_F16 && !sc;
    const bool wg4 = (v == KR_GEMM_WG_S4 || v == KR_GEMM_WG_S4_K2) &&
                     (wtype == KR_DTYPE_Q4_0 || (wtype == KR_DTYPE_Q4_1 && !sc));
    const bool wg = v == KR_GEMM_WG || v == KR_GEMM_WG_K2 || v == KR_GEMM_WG2 || v == KR_GEMM_WG2_K2 ||
                    v == KR_GEMM_WG_S4 || v == KR_GEMM_WG_S4_K2 || v == KR_GEMM_WG_SS || v == KR_GEMM_WG_SS_K2;
    if (wg) {
        const kr_device_info *dev = kr_backend_device_info(g->be);
        if (!dev || dev->cc_major != 9 || dev->cc_minor != 0)
            return kr_err_set_local(err, KR_ERR_UNSUPPORTED, "cuda_gemm: the wgmma kernels need compute capability 9.0, "
                                                       "not %d.%d", dev ? dev->cc_major : 0, dev ? dev->cc_minor : 0);
    }
    kr__gm_fn id = wg2  ? KR__GM_WG2_F16
                 : wgss ? KR__GM_WGSS_F16
                 : wg4 ? (wtype == KR_DTYPE_Q4_1 ? KR__GM_WG4_Q4_1 : sc ? KR__GM_WG4_Q4_0R : KR__GM_WG4_Q4_0)
                 : wg  ? kr__wg_pick(wtype, sc != NULL)
                      : kr__mm_pick(wtype, v == KR_GEMM_MMA64, v == KR_GEMM_MMA128_W8,
                                    v == KR_GEMM_MMA256 || v == KR_GEMM_MMA256_K2, sc != NULL);
    int64_t gy = kr__div_up(m, kr__gm_bm[id]), gx = kr__div_up(n, kr__gm_bn[id]);
    if (gy > 65535)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: m %lld needs %lld row blocks (> 65535)",
                          (long long)m, (long long)gy);
    /* split-K: C is zeroed, each half adds (fp32 a + b is commutative: deterministic for 2) */
    int splits = (v == KR_GEMM_MMA128_K2 || v == KR_GEMM_MMA256_K2 || v == KR_GEMM_WG_K2 || v == KR_GEMM_WG2_K2 ||
                  v == KR_GEMM_WG_S4_K2 || v == KR_GEMM_WG_SS_K2) &&
                         ldc == (uint64_t)n && k >= 2 * blk ? 2 : 1;
    int64_t k_split = k;
    if (splits > 1) {
        k_split = kr__div_up(k / blk, splits) * blk; /* whole blocks per split */
        if (k_split >= k)
            splits = 1, k_split = k;
    }
    kr_status st;
    const uint16_t *ah = a16;
    size_t ldh = lda;
    if (a32) {
        /* fp32 -> fp16 copy of A in the workspace: (m, k) halves, rows k apart */
        void *ws = NULL;
        st = kr__gm_workspace(g, (size_t)m * (size_t)k * 2, &ws, err);
        if (st != KR_OK)
            return st;
        long long lda_k = (long long)lda, ldh_k = (long long)k;
        int m_k = (int)m, k_k = (int)k;
        void *cargs[] = {&a32, &lda_k, &ws, &ldh_k, &m_k, &k_k};
        int64_t groups = m * (k / 4), blocks = kr__div_up(groups, 256);
        const uint32_t cgrid[3] = {(uint32_t)(blocks < 4096 ? blocks : 4096), 1, 1};
        st = kr__gm_launch(g, s, KR__GM_MM_CVT_A, cgrid, 256, cargs, "fp32 A", err);
        if (st != KR_OK)
            return st;
        ah = ws;
        ldh = (size_t)k;
    }
    if (splits > 1) {
        st = kr_backend_memset(g->be, c, 0, (size_t)m * (size_t)n * sizeof(float), s, err);
        if (st != KR_OK)
            return kr_err_prefix_local(err, st, "cuda_gemm: zeroing C for split-K");
    }
    long long lda_k = (long long)ldh, ldw_k = (long long)w_stride, ldc_k = (long long)ldc;
    long long lds_k = sc ? (long long)(k / 32 * 2) : 0;
    const void *sp = sc ? sc : w;
    int m_k = (int)m, n_k = (int)n, k_k = (int)k, ks_k = (int)k_split;
    void *args[] = {&ah, &lda_k, &w, &ldw_k, &sp, &lds_k, &c, &ldc_k, &m_k, &n_k, &k_k, &ks_k};
    const uint32_t grid[3] = {(uint32_t)gx, (uint32_t)gy, (uint32_t)splits};
    return kr__gm_launch(g, s, id, grid, kr__gm_threads[id], args, tn, err);
}

kr_status kr_gemm_run(kr_gemm *g, kr_stream *s, kr_gemm_variant variant, kr_dtype wtype, const void *w,
                      size_t w_stride, const float *a, size_t lda, float *c, size_t ldc, int64_t m, int64_t n,
                      int64_t k, kr_err *err)
{
    if (!a)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: NULL operand (w %p, a %p, c %p)", w,
                                (const void *)a, (void *)c);
    return kr__gm_run(g, s, variant, wtype, w, w_stride, NULL, a, NULL, lda, c, ldc, m, n, k, err);
}

kr_status kr_gemm_run_f16a(kr_gemm *g, kr_stream *s, kr_gemm_variant variant, kr_dtype wtype, const void *w,
                           size_t w_stride, const uint16_t *a, size_t lda, float *c, size_t ldc, int64_t m,
                           int64_t n, int64_t k, kr_err *err)
{
    if (!a)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: NULL operand (w %p, a %p, c %p)", w,
                                (const void *)a, (void *)c);
    return kr__gm_run(g, s, variant, wtype, w, w_stride, NULL, NULL, a, lda, c, ldc, m, n, k, err);
}

kr_status kr_gemm_run_repacked(kr_gemm *g, kr_stream *s, kr_gemm_variant variant, kr_dtype wtype, const void *qs,
                               const void *sc, const float *a, const uint16_t *a16, size_t lda, float *c, size_t ldc,
                               int64_t m, int64_t n, int64_t k, kr_err *err)
{
    if (!qs || !sc || (!a) == (!a16))
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                                "cuda_gemm: repacked: need qs (%p), sc (%p) and exactly one of a (%p), a16 (%p)", qs,
                                sc, (const void *)a, (const void *)a16);
    if (wtype != KR_DTYPE_Q4_0 && wtype != KR_DTYPE_Q8_0)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: repacked weights must be Q4_0 or Q8_0, not type %d",
                                (int)wtype);
    if (k < 32 || k > INT32_MAX)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: k %lld out of range", (long long)k);
    size_t qsz = wtype == KR_DTYPE_Q8_0 ? 32 : 16;
    return kr__gm_run(g, s, variant, wtype, qs, (size_t)(k / 32) * qsz, sc, a, a16, lda, c, ldc, m, n, k, err);
}

kr_status kr_gemm_reserve(kr_gemm *g, int64_t m, int64_t k, kr_err *err)
{
    if (!g || m < 1 || k < 1 || m > INT32_MAX || k > INT32_MAX)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "cuda_gemm: reserve: bad kr_gemm or m %lld, k %lld",
                                (long long)m, (long long)k);
    void *ws = NULL;
    return kr__gm_workspace(g, (size_t)m * (size_t)k * 2, &ws, err);
}
