/* CUDA decode-path kernels (kernels/decode/<name>.cu): host-side launchers.
 *
 * A kr_dec binds one CUDA backend and caches the JIT-compiled functions
 * (compiled on first use through the backend's get_function, i.e. NVRTC +
 * the cubin cache). Every launcher validates its arguments (KR_ERR_INVALID_ARG
 * with a message naming the value) and only enqueues work on stream s
 * (NULL = default stream); nothing is synchronised. Pointers are device
 * addresses of that backend. Values marked "device" (positions, token ids)
 * are read by the kernel at run time, so a captured CUDA graph stays valid
 * when they change; such a pointer may be NULL, and then the `*_imm` value
 * passed next to it is used instead (baked into the launch).
 *
 * Used by the cuda_decode plugin (registry ops) and directly by the forward
 * pass / tests. Thread-safe: one kr_dec may be used from several threads.
 */
#ifndef KERNRUN_PLUGIN_CUDA_DECODE_H
#define KERNRUN_PLUGIN_CUDA_DECODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/backend.h"
#include "kernrun/dtype.h"
#include "kernrun/status.h"

typedef struct kr_dec kr_dec;

/* Matvec launch geometry (compiled into the kernels with -D options). */
typedef struct kr_dec_tuning {
    int mv_rows;   /* rows per warp, 1..8 (default 2) */
    int mv_warps;  /* warps per block, 1..16 (default 4) */
    int mv_steps;  /* 256-element steps staged in shared memory per pass, 1..64 (default 16);
                      shared memory per block = warps*rows*steps*(bytes of 256 weights) <= 48 KiB */
    int mv_prefetch; /* 1: stage copy issues all its loads before storing (KR_MV_PREFETCH; not yet
                        measured on a GPU, so no default uses it); 0: load/store per iteration */
} kr_dec_tuning;

/* be must be a CUDA backend and outlive the kr_dec. Matvec geometry: the
 * per-type defaults (kr_dec_default_tuning). */
kr_status kr_dec_create(kr_backend *be, kr_dec **out, kr_err *err);
/* Default geometry of the matvec for weight type t (false: type not supported). */
bool kr_dec_default_tuning(kr_dtype t, kr_dec_tuning *out);
/* As kr_dec_create, with one explicit tuning for every type (NULL = the
 * per-type defaults; 0 fields = preset 0's values). Only
 * the preset tunings listed by kr_dec_tuning_at exist (each has static kernel
 * records, which the backend's function cache is keyed by); others give
 * KR_ERR_UNSUPPORTED. */
kr_status kr_dec_create_tuned(kr_backend *be, const kr_dec_tuning *tuning, kr_dec **out, kr_err *err);
/* Preset tunings; index 0 is the default. */
size_t kr_dec_tuning_count(void);
bool kr_dec_tuning_at(size_t i, kr_dec_tuning *out);
/* The tuning asked for at creation (preset 0's values for kr_dec_create,
 * whose types use their own defaults). */
void kr_dec_get_tuning(const kr_dec *d, kr_dec_tuning *out);
void kr_dec_free(kr_dec *d); /* NULL ok */
kr_backend *kr_dec_backend(const kr_dec *d);

/* Programmatic dependent launch (docs/KERNELS.md, PDL): when on, the
 * launchers whose kernels start with KR_PDL_WAIT() (matvec, quantize, norms,
 * elementwise, embed) launch with KR_LAUNCH_PDL, so a kernel's blocks can
 * become resident while the previous kernel on the stream finishes. Off by
 * default. kr_dec_launch_flags gives KR_LAUNCH_PDL when on (0 when off) for
 * callers launching their own PDL-capable kernels. */
void kr_dec_set_pdl(kr_dec *d, bool on);
uint32_t kr_dec_launch_flags(const kr_dec *d);

/* Compile (or load from the cache) every decode kernel now instead of on first use. */
kr_status kr_dec_prepare_all(kr_dec *d, kr_err *err);

/* True when kr_dec_matvec / kr_dec_embed handle weight type t
 * (F32, F16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K). */
bool kr_dec_matvec_supports(kr_dtype t);

/* y (rows,) = W (rows, cols) @ x (cols,). W in GGML block layout, row r at
 * w + r*row_stride bytes (row_stride >= the row's bytes, even); cols a
 * multiple of the block size; x 16-byte aligned, fp32; y fp32 (not aliasing x). */
kr_status kr_dec_matvec(kr_dec *d, kr_stream *s, kr_dtype wtype, const void *w, size_t row_stride,
                        const float *x, float *y, int64_t rows, int64_t cols, kr_err *err);

/* Activations quantized to 8 bits on the fly (the alternative to fp32 x for
 * Q4_0/Q8_0 weights; dp4a dot products). xq holds kr_dec_q8_bytes(cols)
 * bytes: int8 q[cols] | float d[cols/32] | float s[cols/32], per 32-block
 * d = max|x|/127, q = rint(x/d), s = d*sum(q). xq 4-byte aligned. One
 * quantization serves every matvec of the same x (q, k, v; gate, up). */
size_t kr_dec_q8_bytes(int64_t cols); /* 0 when cols is not a positive multiple of 32 */
bool kr_dec_matvec_q8_supports(kr_dtype t);
kr_status kr_dec_quantize_q8(kr_dec *d, kr_stream *s, const float *x, void *xq, int64_t cols, kr_err *err);
kr_status kr_dec_matvec_q8(kr_dec *d, kr_stream *s, kr_dtype wtype, const void *w, size_t row_stride,
                           const void *xq, float *y, int64_t rows, int64_t cols, kr_err *err);

/* dst (rows, cols) fp16 (IEEE half bits, rows dst_stride bytes apart) = W (rows, cols) of wtype (any
 * kr_dec_matvec_supports type, GGML block layout, rows row_stride bytes apart) dequantized to fp32 and
 * rounded to nearest even, as the CPU's kr_dequantize_row + kr_fp32_to_fp16. W and dst 2-byte aligned,
 * dst_stride >= 2 cols, even. Used to store weights as fp16 at load (kr_gpu_forward params.weights). */
kr_status kr_dec_dequant_f16(kr_dec *d, kr_stream *s, kr_dtype wtype, const void *w, size_t row_stride,
                             void *dst, size_t dst_stride, int64_t rows, int64_t cols, kr_err *err);

/* y[r,:] = x[r,:] / sqrt(mean(x[r,:]^2) + eps) * w; x, y (rows, n); w (n,) or NULL. y may be x. */
kr_status kr_dec_rmsnorm(kr_dec *d, kr_stream *s, const float *x, const float *w, float *y, int64_t rows,
                         int64_t n, float eps, kr_err *err);
/* y = (x - mean) / sqrt(var + eps) * w + b per row; w, b (n,) or NULL. */
kr_status kr_dec_layernorm(kr_dec *d, kr_stream *s, const float *x, const float *w, const float *b, float *y,
                           int64_t rows, int64_t n, float eps, kr_err *err);

/* RoPE in place on q (n_head_q, head_dim) and k (n_head_k, head_dim) (k may
 * be NULL with n_head_k 0) at position *pos (device int32). First n_rot dims
 * rotate (n_rot even, <= head_dim);
 *   theta_i = pos*freq_scale*freq_base^(-2i/n_rot) / ff[i]  (ff = freq_factors (n_rot/2,) or NULL = 1);
 * neox false: pairs (2i, 2i+1); true: pairs (i, i + n_rot/2). */
kr_status kr_dec_rope(kr_dec *d, kr_stream *s, float *q, int n_head_q, float *k, int n_head_k, int head_dim,
                      int n_rot, const int32_t *pos, int32_t pos_imm, float freq_base, float freq_scale,
                      const float *freq_factors, bool neox, kr_err *err);

/* KV cache append: k_cache[*pos, :] = fp16(k), v_cache[*pos, :] = fp16(v).
 * Caches (n_ctx, n_kv_dim) fp16 (n_kv_dim = n_kv_head*head_dim); k, v (n_kv_dim,) fp32.
 * A position outside [0, n_ctx) writes nothing. */
kr_status kr_dec_kv_append(kr_dec *d, kr_stream *s, const float *k, const float *v, uint16_t *k_cache,
                           uint16_t *v_cache, int n_kv_dim, int n_ctx, const int32_t *pos, int32_t pos_imm,
                           kr_err *err);

/* Decode attention of one token at position *pos (device int32) over the
 * fp16 cache (n_ctx, n_kv_head, head_dim):
 *   out[h] = softmax_t(scale * q[h] . K[t, g]) V[t, g],  g = h / (n_head/n_kv_head),
 *   t in [max(0, pos - window + 1), pos] (window <= 0: [0, pos]).
 * q, out (n_head, head_dim) fp32; head_dim even, <= 256; n_head % n_kv_head == 0.
 * n_split > 1 splits the keys into n_split chunks (split-K) and then needs
 * `scratch` of kr_dec_attention_scratch_floats() floats; n_split 1 needs none.
 * A position outside [0, n_ctx) gives NaN outputs. */
kr_status kr_dec_attention(kr_dec *d, kr_stream *s, const float *q, const uint16_t *k_cache,
                           const uint16_t *v_cache, float *out, int n_head, int n_kv_head, int head_dim,
                           int n_ctx, const int32_t *pos, int32_t pos_imm, int window, float scale, int n_split,
                           float *scratch, kr_err *err);
size_t kr_dec_attention_scratch_floats(int n_head, int head_dim, int n_split);
/* A split count that fills the GPU: about 2 blocks per SM over all heads, at
 * most one split per 32 positions of n_ctx, capped at 64. */
int kr_dec_attention_default_splits(const kr_device_info *dev, int n_head, int n_ctx);

/* y[r,:] = softmax(x[r,:]); (rows, n). y may be x. */
kr_status kr_dec_softmax(kr_dec *d, kr_stream *s, const float *x, float *y, int64_t rows, int64_t n, kr_err *err);
/* y = silu(g) * u; (n,). */
kr_status kr_dec_swiglu(kr_dec *d, kr_stream *s, const float *g, const float *u, float *y, int64_t n, kr_err *err);
/* y = 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3))); (n,). */
kr_status kr_dec_gelu(kr_dec *d, kr_stream *s, const float *x, float *y, int64_t n, kr_err *err);
/* y = a + b; (n,); y may alias a or b. */
kr_status kr_dec_add(kr_dec *d, kr_stream *s, const float *a, const float *b, float *y, int64_t n, kr_err *err);

/* out (n_embd,) fp32 = row *token (device int32) of table (n_vocab, n_embd),
 * type ttype, rows row_stride bytes apart. A token outside [0, n_vocab) gives NaN. */
kr_status kr_dec_embed(kr_dec *d, kr_stream *s, kr_dtype ttype, const void *table, size_t row_stride,
                       int64_t n_vocab, int64_t n_embd, const int32_t *token, int32_t tok_imm, float *out, kr_err *err);

#endif
