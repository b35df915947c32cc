/* Prefill kernels (kernels/prefill/{flash_attn,batch_ops}.cu): host launchers. Batched prefill
 * processes n prompt tokens at positions pos0 .. pos0+n-1 at once (see
 * docs/PREFILL.md); these are its ops that the decode launchers
 * (plugins/cuda_decode/kr_decode.h) do not cover.
 *
 * A kr_pf binds one CUDA backend and caches the JIT-compiled functions
 * (NVRTC + the cubin cache, on first use). Launchers validate their
 * arguments (KR_ERR_INVALID_ARG / KR_ERR_UNSUPPORTED naming the values) and
 * only enqueue work on stream s (NULL = default stream). Pointers are device
 * addresses of that backend. Strides count elements (floats) unless named
 * *_bytes. Thread-safe (a mutex guards the function cache).
 */
#ifndef KERNRUN_PLUGIN_KR_PREFILL_OPS_H
#define KERNRUN_PLUGIN_KR_PREFILL_OPS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/backend.h"
#include "kernrun/dtype.h"
#include "kernrun/status.h"

typedef struct kr_pf kr_pf;

kr_status kr_pf_create(kr_backend *be, kr_pf **out, kr_err *err); /* be: a CUDA backend, outlives the kr_pf */
void kr_pf_free(kr_pf *p);                                         /* NULL ok */
kr_status kr_pf_prepare_all(kr_pf *p, kr_err *err);                /* compile every kernel now */

/* The static kernel records (for compile-only tests): i in [0, count). */
size_t kr_pf_source_count(void);
const kr_kernel_source *kr_pf_source_at(size_t i);

/* Flash attention kernel for F16 caches: AUTO (the measured default), SIMPLE
 * (tiles loaded synchronously, 64 keys), PIPE (2-stage cp.async ring, 64/32/16
 * keys for head_dim <= 64 / <= 128 / 256). Env KERNRUN_FA_VARIANT=simple|pipe
 * sets it at kr_pf_create. Q8_0 caches have one kernel. */
enum { KR_PF_FA_AUTO = 0, KR_PF_FA_SIMPLE = 1, KR_PF_FA_PIPE = 2 };
void kr_pf_set_flash_variant(kr_pf *p, int variant);

/* True when kr_pf_flash_attn handles head_dim (16, 32, 64, 80, 96, 128, 256). */
bool kr_pf_flash_attn_supports(int head_dim);

/* Causal attention of n query tokens at positions pos0 .. pos0+n-1 over an
 * fp16 KV cache (the layout of docs/KVCACHE.md / interfaces: K and V slot
 * bases, row r at base + r*row_bytes, position j at row j % rows, head g at
 * +g*head_dim halves). Every position the queries see must already be in
 * the cache (the batch's own K/V stored first):
 *   out[t, h, :] = sum_j softmax_j(scale q[t, h, :] . K[j, g, :]) V[j, g, :],
 *   j in [lo(p), p], p = pos0 + t, lo(p) = window > 0 ? max(0, p - window + 1) : 0,
 *   g = h / (n_head / n_head_kv).
 * q:   (n, q_stride) fp32, head h of token t at q + t*q_stride + h*head_dim;
 *      16-byte aligned, q_stride a multiple of 4 (q may be the q part of a
 *      fused QKV output).
 * out: (n, o_stride) fp32, same indexing; 8-byte aligned, o_stride even;
 *      must not overlap q.
 * k, v: 16-byte aligned, row_bytes a multiple of 16; kv_type KR_DTYPE_F16 (row_bytes >=
 *      2*kv_dim) or KR_DTYPE_Q8_0 (kv_dim int8 quants then kv_dim/32 fp16 scales,
 *      kv_dim % 32 == 0; values become fp16 q*d in shared memory), kv_dim = n_head_kv*head_dim.
 * Ring: the positions seen must not have been overwritten by later ones of the
 * batch: pos0 + n - 1 - lo(pos0) < rows (else KR_ERR_INVALID_ARG with the
 * numbers; the caller splits the batch).
 * Tensor cores (fp16 Q/K/V/P, fp32 accumulation and softmax). */
kr_status kr_pf_flash_attn(kr_pf *p, kr_stream *s, const float *q, size_t q_stride, const void *k, const void *v,
                           kr_dtype kv_type, size_t row_bytes, int rows, float *out, size_t o_stride, int n, int pos0,
                           int n_head, int n_head_kv, int head_dim, int window, float scale, kr_err *err);

/* As kr_pf_flash_attn, writing either out (fp32) or out16 (fp16 RNE, 4-byte
 * aligned, o_stride halves per token): exactly one of them non-NULL. */
kr_status kr_pf_flash_attn_ex(kr_pf *p, kr_stream *s, const float *q, size_t q_stride, const void *k, const void *v,
                              kr_dtype kv_type, size_t row_bytes, int rows, float *out, uint16_t *out16,
                              size_t o_stride, int n, int pos0, int n_head, int n_head_kv, int head_dim, int window,
                              float scale, kr_err *err);

/* RoPE in place on q (n, q_stride) with n_head_q heads and k (n, k_stride)
 * with n_head_k heads (k NULL with n_head_k 0), token t at position pos0 + t;
 * the math of kr_dec_rope (normal or neox pairs, first n_rot dims, optional
 * freq_factors (n_rot/2,) fp32); n_rot <= 256. */
kr_status kr_pf_rope(kr_pf *p, kr_stream *s, float *q, size_t q_stride, int n_head_q, float *k, size_t k_stride,
                     int n_head_k, int head_dim, int n_rot, int n, int pos0, float freq_base, float freq_scale,
                     const float *freq_factors, bool neox, kr_err *err);

/* RoPE (as kr_pf_rope) fused with the f16 KV store (as kr_pf_kv_store_f16):
 * q rotated in place; k is only read: the rotated k (dims >= n_rot unchanged)
 * and v (both (n, stride) with n_head_kv heads) go to row (pos0 + t) % rows
 * of k_cache / v_cache as fp16 (RNE). n <= rows, n_rot <= 256. */
kr_status kr_pf_rope_kv_f16(kr_pf *p, kr_stream *s, float *q, size_t q_stride, int n_head_q, const float *k,
                            size_t k_stride, const float *v, size_t v_stride, int n_head_kv, int head_dim, int n_rot,
                            int n, int pos0, float freq_base, float freq_scale, const float *freq_factors, bool neox,
                            void *k_cache, void *v_cache, size_t row_bytes, int rows, kr_err *err);

/* fp16 KV store of n tokens: row (pos0 + t) % rows of k_cache / v_cache
 * (row_bytes apart, row_bytes >= 2*kv_dim, even) = fp16 (round to nearest
 * even) of k[t, 0..kv_dim) / v[t, 0..kv_dim); k, v (n, k_stride / v_stride)
 * fp32. n <= rows (two tokens of one launch must not share a row). */
kr_status kr_pf_kv_store_f16(kr_pf *p, kr_stream *s, const float *k, size_t k_stride, const float *v,
                             size_t v_stride, void *k_cache, void *v_cache, size_t row_bytes, int rows, int kv_dim,
                             int n, int pos0, kr_err *err);

/* Q8_0 KV store (the interfaces' row layout, GGML q8_0 quantization as
 * kernels/decode/kv_attn.cu: per 32 values d = amax/127, q = roundf(x * (1/d)),
 * fp16 d); kv_dim % 32 == 0, row_bytes >= kv_dim + kv_dim/16; otherwise as
 * kr_pf_kv_store_f16. */
kr_status kr_pf_kv_store_q8(kr_pf *p, kr_stream *s, const float *k, size_t k_stride, const float *v, size_t v_stride,
                            void *k_cache, void *v_cache, size_t row_bytes, int rows, int kv_dim, int n, int pos0,
                            kr_err *err);

/* y[t, i] = silu(x[t, i]) * x[t, up_off + i], i < ff, t < n; y may alias x
 * (same rows, y_stride == x_stride, gate half). */
kr_status kr_pf_swiglu(kr_pf *p, kr_stream *s, const float *x, size_t x_stride, size_t up_off, float *y,
                       size_t y_stride, int ff, int n, kr_err *err);

/* Undo the decode path's repacking (kernels/forward/matvec_repacked.cu) of a
 * Q4_0 (q8_0 false) or Q8_0 matrix (rows, cols): qs (rows*cols/32 blocks of
 * 16 / 32 quant bytes, 16-byte aligned), sc (rows*cols/32 fp16 scales) ->
 * GGML blocks [d | quants], row r at dst + r*dst_stride (dst and dst_stride
 * 16-byte aligned, stride >= the row's bytes; padding bytes untouched). For
 * the GEMM, which reads GGML blocks. */
kr_status kr_pf_unrepack(kr_pf *p, kr_stream *s, bool q8_0, const void *qs, const void *sc, void *dst,
                         size_t dst_stride, int64_t rows, int64_t cols, kr_err *err);

/* Embedding rows of n tokens: out[t, :] = dequantized row tok[t] (device
 * int32) of table (n_vocab, n_embd), rows row_stride bytes apart; out rows
 * o_stride floats apart. Types F32, F16, Q4_0, Q4_1, Q8_0 (kr_pf_embed_supports;
 * the same formulas as kr_dec_embed); a token outside [0, n_vocab) gives NaN. */
bool kr_pf_embed_supports(kr_dtype t);
kr_status kr_pf_embed(kr_pf *p, kr_stream *s, kr_dtype ttype, const void *table, size_t row_stride, int64_t n_vocab,
                      int64_t n_embd, const int32_t *tok, float *out, size_t o_stride, int n, kr_err *err);

/* fp16 activations for the GEMM (kr_gemm_run_f16a / _repacked with a16):
 * rmsnorm_h: for each of rows rows of x (rows n floats apart): x += res (when
 * res != NULL, written back), y (rows y_stride halves apart) = fp16 RNE of
 * x / sqrt(mean(x^2) + eps) * w (w NULL: 1).
 * swiglu_h: y[t, i] = fp16(silu(x[t, i]) * x[t, up_off + i]), i < ff, t < n. */
kr_status kr_pf_rmsnorm_h(kr_pf *p, kr_stream *s, float *x, const float *res, const float *w, uint16_t *y,
                          size_t y_stride, int64_t rows, int64_t n, float eps, kr_err *err);
kr_status kr_pf_swiglu_h(kr_pf *p, kr_stream *s, const float *x, size_t x_stride, size_t up_off, uint16_t *y,
                         size_t y_stride, int ff, int n, kr_err *err);
/* y[i] = fp16 RNE of x[i], i < n (x 16-byte, y 8-byte aligned). */
kr_status kr_pf_to_f16(kr_pf *p, kr_stream *s, const float *x, uint16_t *y, int64_t n, kr_err *err);

#endif
