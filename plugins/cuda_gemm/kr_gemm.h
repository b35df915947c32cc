/* GEMM for prompt processing (kernels/gemm/gemm.cu): host-side launchers.
 *
 *   C (m, n) fp32 = A (m, k) fp32 @ W (n, k)^T
 *
 * W is a weight matrix in GGML/GGUF layout (one row per output feature).
 * Weight types and kernels:
 *   F16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K
 *                          tensor cores (mma.sync m16n8k16): A rounded to fp16,
 *                          W dequantized to fp16 tiles on the fly in shared
 *                          memory (no fp16 copy of the weights), fp32 accumulation.
 *   F32                    FP32 SIMT kernel (the baseline; fp32 throughout).
 * A's values must fit fp16 (|x| < 65504) for the tensor-core kernels.
 *
 * A kr_gemm binds one CUDA backend and caches the JIT-compiled functions
 * (NVRTC + the cubin cache, on first use). Launchers validate their arguments
 * (KR_ERR_INVALID_ARG naming the value) and only enqueue work on stream s
 * (NULL = default stream). Pointers are device addresses of that backend.
 * Thread-safe: one kr_gemm may be used from several threads.
 */
#ifndef KERNRUN_PLUGIN_CUDA_GEMM_H
#define KERNRUN_PLUGIN_CUDA_GEMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/backend.h"
#include "kernrun/dtype.h"
#include "kernrun/status.h"

typedef struct kr_gemm kr_gemm;

/* Which kernel runs (tensor-core tile height along m). */
typedef enum kr_gemm_variant {
    KR_GEMM_AUTO = 0, /* an MMA/WG kernel when the type has one and W, its stride and the
                         row bytes are 16-byte multiples: m <= 64 MMA64; compute capability
                         9.0: WG (F16: WG_SS, GGML Q4_0/Q4_1: WG_S4), split K below two
                         tiles per SM;
                         else the mma.sync records (docs/GEMM.md). Otherwise TC: F16
                         128-row tiles, or 64 when 128 gives < 2 blocks per SM; block
                         types: 128, or 64 when m <= 64 */
    KR_GEMM_TC128 = 1, /* tensor cores, 128 (m) x 128 (n) tiles */
    KR_GEMM_TC64 = 2,  /* tensor cores, 64 (m) x 128 (n) tiles */
    /* Pipelined kernels (kernels/gemm/gemm_mma.cu): A as fp16 (converted from
     * fp32 into the kr_gemm's workspace first, or given by kr_gemm_run_f16a),
     * 2-4 stage cp.async ring, ldmatrix, 4 or 8 warps. Types F16, Q4_0, Q4_1,
     * Q8_0, Q4_K, Q6_K (Q6_K: 2 stages; its MMA256 runs the MMA128_W8 record).
     * Need w and w_stride 16-byte aligned; each row is read up to the next
     * multiple of 16 bytes (<= w_stride). */
    KR_GEMM_MMA128 = 3,    /* 128 x 128 tiles, 3 stages */
    KR_GEMM_MMA64 = 4,     /* 64 x 128 tiles, 4 stages */
    KR_GEMM_MMA128_K2 = 5, /* 128 x 128, K split in 2 halves added into C (needs ldc == n, else no split) */
    KR_GEMM_MMA128_W8 = 6, /* 128 x 128 tiles, 8 warps of 64 x 32, 3 stages */
    KR_GEMM_MMA256 = 7,    /* 128 x 256 tiles, 8 warps of 64 x 64 (F16: K steps of 16, 4 stages; others 2) */
    KR_GEMM_MMA256_K2 = 8, /* MMA256 with K split in 2 (as MMA128_K2) */
    /* Hopper wgmma (compute capability 9.0 only, else KR_ERR_UNSUPPORTED): 2 warpgroups,
     * 128 W rows x 128 tokens; W dequantized per warp into the A operand registers,
     * the fp16 tokens tile from shared memory (64-byte swizzle); 3 stages (Q6_K 2). */
    KR_GEMM_WG = 9,
    KR_GEMM_WG_K2 = 10, /* WG with K split in 2 (as MMA128_K2) */
    KR_GEMM_WG2 = 11,    /* F16: both wgmma operands from shared memory, K steps of 16 in 6
                            stages, one wgmma group in flight; other types: WG */
    KR_GEMM_WG2_K2 = 12, /* WG2 with K split in 2 */
    KR_GEMM_WG_S4 = 13,    /* Q4_0 (GGML or repacked), Q4_1: WG with 4 stages (32-byte raw rows);
                              other types: WG */
    KR_GEMM_WG_S4_K2 = 14, /* WG_S4 with K split in 2 */
    KR_GEMM_WG_SS = 15,    /* F16: WG with the W tile as a shared-memory operand too (no ldmatrix);
                              other types: WG */
    KR_GEMM_WG_SS_K2 = 16, /* WG_SS with K split in 2 */
} kr_gemm_variant;

/* be must be a CUDA backend and outlive the kr_gemm. */
kr_status kr_gemm_create(kr_backend *be, kr_gemm **out, kr_err *err);
void kr_gemm_free(kr_gemm *g); /* NULL ok */
kr_backend *kr_gemm_backend(const kr_gemm *g);

/* True when kr_gemm_run handles weight type t (F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K). */
bool kr_gemm_supports(kr_dtype t);
/* True when t goes through the tensor-core kernels (all but F32). */
bool kr_gemm_uses_tensor_cores(kr_dtype t);

/* C (m, n) = A (m, k) @ W (n, k)^T.
 *   w: row r at w + r*w_stride bytes; w_stride >= the row's bytes; k a
 *      positive multiple of the block size (32; 256 for Q4_K/Q6_K). Alignment
 *      of w and w_stride: F32/F16 16 bytes, Q4_1/Q4_K 4, Q4_0/Q8_0/Q6_K 2.
 *   a: (m, k) fp32, rows lda floats apart (lda >= k, multiple of 4), 16-byte aligned.
 *   c: (m, n) fp32, rows ldc floats apart (ldc >= n); must not overlap a or w.
 *   m, n >= 1 and < 2^31; every index fits 64 bits.
 * variant is ignored for F32 (one SIMT kernel). */
kr_status kr_gemm_run(kr_gemm *g, kr_stream *s, kr_gemm_variant variant, kr_dtype wtype, const void *w,
                      size_t w_stride, const float *a, size_t lda, float *c, size_t ldc, int64_t m, int64_t n,
                      int64_t k, kr_err *err);

/* As kr_gemm_run with A given as fp16 (IEEE half bits): a (m, k) at a, rows
 * lda halves apart (lda >= k, multiple of 8), 16-byte aligned. Only the MMA
 * variants and AUTO (which then picks an MMA variant); types F16, Q4_0, Q4_1,
 * Q8_0, Q4_K, Q6_K (kr_gemm_mma_supports). Uses no workspace: calls may overlap on
 * several streams. */
kr_status kr_gemm_run_f16a(kr_gemm *g, kr_stream *s, kr_gemm_variant variant, kr_dtype wtype, const void *w,
                           size_t w_stride, const uint16_t *a, size_t lda, float *c, size_t ldc, int64_t m,
                           int64_t n, int64_t k, kr_err *err);
/* As kr_gemm_run / kr_gemm_run_f16a (exactly one of a, a16 non-NULL; lda in its
 * elements) with W (n, k) in the decode path's repacked layout
 * (kernels/forward/matvec_repacked.cu): qs = (n * nb) blocks of 16 (Q4_0) or 32
 * (Q8_0) quant bytes, row-major; sc = (n * nb) fp16 block scales, row-major;
 * nb = k / 32. wtype Q4_0 or Q8_0; k % 256 == 0; qs and sc 16-byte aligned;
 * MMA variants or AUTO. A row slice r0.. is qs + r0*nb*(16|32), sc + r0*nb*2. */
kr_status kr_gemm_run_repacked(kr_gemm *g, kr_stream *s, kr_gemm_variant variant, kr_dtype wtype, const void *qs,
                               const void *sc, const float *a, const uint16_t *a16, size_t lda, float *c, size_t ldc,
                               int64_t m, int64_t n, int64_t k, kr_err *err);
/* True when t has a pipelined (MMA) kernel. */
bool kr_gemm_mma_supports(kr_dtype t);

/* Workspace: kr_gemm_run on an MMA variant (AUTO included) converts A to fp16
 * into one device buffer owned by the kr_gemm (grown on demand, 2*m*k bytes;
 * growing synchronises the device). Such calls must not run concurrently on
 * different streams with one kr_gemm; use one kr_gemm per stream, or
 * kr_gemm_run_f16a. kr_gemm_reserve sizes it up front for the largest m x k. */
kr_status kr_gemm_reserve(kr_gemm *g, int64_t m, int64_t k, kr_err *err);

/* Compile (or load from the cache) every kernel now instead of on first use. */
kr_status kr_gemm_prepare_all(kr_gemm *g, kr_err *err);

/* The static kernel records (for compile-only tests): i in [0, count). */
size_t kr_gemm_source_count(void);
const kr_kernel_source *kr_gemm_source_at(size_t i);

#endif
