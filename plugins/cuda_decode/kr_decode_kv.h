/* CUDA decode path: KV cache store + decode attention over the device KV
 * cache layout of docs/KVCACHE.md / notes interfaces (kernels/decode/kv_attn.cu).
 *
 * Device KV cache (per layer, K and V in separate buffers):
 *   n_seq slots x rows x row_bytes; row r of slot s at base + ((size_t)s*rows + r) * row_bytes.
 *   Position p of a sequence lives in row p % rows (rows = n_ctx, or the sliding window W for a
 *   ring). kv_dim = n_head_kv * head_dim; element (kv head g, dim i) is index g*head_dim + i.
 *   KR_DTYPE_F16 : row = kv_dim fp16, row_bytes >= 2*kv_dim.
 *   KR_DTYPE_Q8_0: kv_dim % 32 == 0; row = kv_dim int8 quants q[0..kv_dim) then kv_dim/32 fp16
 *                  scales d[..]; value i = q[i] * d[i/32]; row_bytes >= round_up(kv_dim + kv_dim/16, 16).
 *                  Quantization as GGML q8_0 (and the CPU cache) per 32 values: d = amax/127,
 *                  q = roundf(x * (1/d)) (0 if d == 0) with the fp32 d, then d stored as fp16.
 * The launchers take the base of one slot (already offset) plus rows; the view may instead name the
 * slot in device memory (slot/slot_bytes below) so a captured CUDA graph stays valid when it changes.
 *
 * Same conventions as kr_decode.h: arguments are validated (KR_ERR_INVALID_ARG / KR_ERR_UNSUPPORTED
 * naming the values), work is only enqueued on stream s, positions marked "device" are read at run
 * time (pointer NULL: the *_imm value is used). Every kernel starts with KR_PDL_WAIT(), so all of
 * them may be launched with programmatic dependent launch.
 */
#ifndef KERNRUN_PLUGIN_CUDA_DECODE_KV_H
#define KERNRUN_PLUGIN_CUDA_DECODE_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kr_decode.h"

/* One layer's K and V cache of one slot. */
typedef struct kr_dec_kv_view {
    void *k, *v;          /* device: slot bases (16-byte aligned) */
    kr_dtype type;        /* KR_DTYPE_F16 or KR_DTYPE_Q8_0 */
    int rows;             /* rows per slot (> 0): n_ctx, or the window for a ring */
    int kv_dim;           /* n_head_kv * head_dim */
    size_t row_bytes;     /* >= kr_dec_kv_row_bytes(type, kv_dim), multiple of 16 */
    /* Optional slot chosen at run time (both 0/NULL = unused): the kernels use
     * k + *slot * slot_bytes and v + *slot * slot_bytes as the bases (slot:
     * device int32, >= 0; slot_bytes = rows * row_bytes for the layout above). */
    const int32_t *slot;
    size_t slot_bytes;
} kr_dec_kv_view;

/* Minimum row bytes for type and kv_dim (already a multiple of 16); 0 when
 * the pair is not supported (type not F16/Q8_0, kv_dim <= 0, Q8_0 with
 * kv_dim % 32 != 0). */
size_t kr_dec_kv_row_bytes(kr_dtype type, int kv_dim);

/* Validates a view (what every launcher checks first). */
kr_status kr_dec_kv_check_view(const kr_dec_kv_view *view, kr_err *err);

/* Store n_tok new tokens: token t (0 <= t < n_tok) of k_new, v_new ((n_tok, kv_dim) fp32, rows
 * kv_dim floats apart) goes to position p + t, row (p + t) % rows, p = *pos (device) or pos_imm.
 * n_tok <= rows (two tokens must not share a row). Positions < 0 write nothing. */
kr_status kr_dec_kv_store(kr_dec *d, kr_stream *s, const float *k_new, const float *v_new, int n_tok,
                          const kr_dec_kv_view *view, const int32_t *pos, int32_t pos_imm, kr_err *err);

/* Fused RoPE + store (one launch instead of kr_dec_rope + kr_dec_kv_store):
 * q ((n_tok, n_head, head_dim) fp32) is rotated in place, K is rotated on the
 * way into the cache (k_new itself is NOT modified), V is stored as is.
 * Token t is at position p + t. Rotation exactly as kr_dec_rope (n_rot even
 * <= head_dim, freq_base, freq_scale, freq_factors (n_rot/2,) or NULL, neox).
 * kv_dim of the view = n_head_kv * head_dim. */
kr_status kr_dec_kv_store_rope(kr_dec *d, kr_stream *s, float *q, int n_head, const float *k_new,
                               const float *v_new, int n_tok, const kr_dec_kv_view *view, int head_dim, int n_rot,
                               const int32_t *pos, int32_t pos_imm, float freq_base, float freq_scale,
                               const float *freq_factors, bool neox, kr_err *err);

/* Decode attention of one query token at position p = *pos (device) or pos_imm:
 *   out[h] = sum_j softmax_j(scale * q[h] . K[j, g]) V[j, g],  g = h / (n_head / n_head_kv),
 *   j in [max(0, p - window + 1), p] (window <= 0: [0, p]), K/V[j] read from row j % rows.
 * q, out: (n_head, head_dim) fp32 (out must not alias q). n_head % n_head_kv == 0,
 * head_dim % 8 == 0, head_dim <= 256, view->kv_dim == n_head_kv * head_dim.
 * When the visible span does not fit the cache (p + 1 - j0 > rows) or p < 0 the
 * outputs are NaN. n_split (1..1024) splits the positions into chunks handled
 * by separate blocks; n_split > 1 needs `scratch` of
 * kr_dec_attention_kv_scratch_floats() floats (device), initialised once with
 * kr_dec_attention_kv_scratch_init(), and adds a combine launch (none for the
 * fused-combine variants). kr_dec_attention_kv_default_splits() picks a split
 * count. */
kr_status kr_dec_attention_kv(kr_dec *d, kr_stream *s, const float *q, const kr_dec_kv_view *view, float *out,
                              int n_head, int n_head_kv, int head_dim, const int32_t *pos, int32_t pos_imm,
                              int window, float scale, int n_split, float *scratch, kr_err *err);
size_t kr_dec_attention_kv_scratch_floats(int n_head, int head_dim, int n_split);
/* Zero the scratch's split counters (enqueued on s). Call once after allocating
 * the scratch, before its first use: the fused-combine variants count finished
 * splits there (and leave the counters zero); harmless for the others. */
kr_status kr_dec_attention_kv_scratch_init(kr_dec *d, kr_stream *s, float *scratch, int n_head, int head_dim,
                                           int n_split, kr_err *err);
/* Split count for a cache of up to n_ctx visible positions on device dev
 * (NULL: 132 SMs): enough blocks to fill the GPU, chunks of >= 32 positions. */
int kr_dec_attention_kv_default_splits(const kr_device_info *dev, int n_head, int n_head_kv, int head_dim,
                                       int n_ctx);

/* Kernel variants (for the benchmark): 0 is the default kr_dec_attention_kv
 * uses; kr_dec_attention_kv_variant_name(i) is NULL past the last one. A
 * variant may refuse a shape it is not built for (KR_ERR_UNSUPPORTED).
 * KR_DEC_KV_ATTN=<name> in the environment (read once) makes
 * kr_dec_attention_kv use that variant (end-to-end measurements). */
const char *kr_dec_attention_kv_variant_name(int variant);
kr_status kr_dec_attention_kv_variant(kr_dec *d, kr_stream *s, int variant, const float *q,
                                      const kr_dec_kv_view *view, float *out, int n_head, int n_head_kv,
                                      int head_dim, const int32_t *pos, int32_t pos_imm, int window, float scale,
                                      int n_split, float *scratch, kr_err *err);

/* ---- fused decode attention (kr_fa_* in kernels/decode/kv_attn.cu) ----
 * One launch for the whole attention block of a decode step at position p = *pos (device) or pos_imm:
 *   - RoPE of q (NOT written back) and of k_new exactly as kr_dec_kv_store_rope (n_rot even <= head_dim,
 *     0: none; freq_base, freq_scale, freq_factors (n_rot/2,) or NULL, neox);
 *   - the new K/V row stored at row p % rows (bit-identical to kr_dec_kv_store_rope's row) and used
 *     directly for position p;
 *   - attention as kr_dec_attention_kv over [max(0, p - window + 1), p] (window <= 0: [0, p]);
 *   - n_split blocks per head group, merged by the last block to finish (no combine launch);
 *   - out (n_head, head_dim) fp32 and, when xq != NULL, the same values quantized as
 *     kr_dec_quantize_q8(out) writes them (head_dim % 32 == 0), so no separate quantize launch.
 * K/V loads of positions < p are issued BEFORE the kernel's PDL wait (they overlap the previous kernel):
 * only legal in a stream where every kernel triggers its dependents after its own wait (the decode step's
 * rule, docs/KERNELS.md). p < 0 or a span > rows: out NaN (xq: d, s NaN), nothing stored.
 * Shapes: n_head % n_head_kv == 0; f16 cache: head_dim % 8 == 0, <= 256; q8_0 cache: head_dim 64, 128
 * or 256; anything else KR_ERR_UNSUPPORTED (kr_dec_fattn_supports says so up front). */
typedef struct kr_dec_fattn_params {
    const float *q;             /* (n_head, head_dim) fp32, not rotated; only read */
    const float *k_new, *v_new; /* (kv_dim) fp32 of the token at p; k not rotated; only read */
    int n_head, n_head_kv, head_dim;
    int n_rot;                  /* 0: no rotation */
    float freq_base, freq_scale;
    const float *freq_factors;  /* device (n_rot/2) or NULL */
    bool neox;
    const int32_t *pos;         /* device, or NULL: pos_imm */
    int32_t pos_imm;
    int window;                 /* <= 0: none */
    float scale;                /* softmax scale (1/sqrt(head_dim)) */
    int n_split;                /* 1..KR_DEC_FATTN_MAX_SPLIT */
    float *scratch;             /* n_split > 1: kr_dec_fattn_scratch_floats(n_head, head_dim, >= n_split)
                                   floats, zeroed once with kr_dec_fattn_scratch_init */
    float *out;                 /* (n_head, head_dim) fp32, not aliasing q */
    void *xq;                   /* NULL or kr_dec_q8_bytes(n_head * head_dim) bytes, 4-byte aligned */
    const void *prefetch;       /* NULL or a device range the NEXT kernel reads: requested into L2 by the */
    size_t prefetch_bytes;      /*   blocks before their wait (kr_l2_prefetch_part); 0: off */
    int max_stages;             /* 0: default; else most K/V stages (tiles) per block (1..8) */
    int variant;                /* 0: "auto" (c128w when a block's chunk is one 128-position tile, else c64w);
                                   kr_dec_fattn_variant_name(i) names them (NULL past the last): c<N> tiles
                                   of N positions, w: 256 threads, s: no softmax phase, pw: loads after the wait,
                                   cl8...: the 8 splits of a head group are one thread block cluster merging
                                   in distributed shared memory (n_split is then 8, the scratch is unused) */
} kr_dec_fattn_params;
#define KR_DEC_FATTN_MAX_SPLIT 256

const char *kr_dec_fattn_variant_name(int variant);
bool kr_dec_fattn_supports(kr_dtype cache_type, int n_head, int n_head_kv, int head_dim, int n_rot);
kr_status kr_dec_fattn(kr_dec *d, kr_stream *s, const kr_dec_kv_view *view, const kr_dec_fattn_params *p,
                       kr_err *err);
/* Scratch of n_split (or fewer) splits: split counters first, then the partials. */
size_t kr_dec_fattn_scratch_floats(int n_head, int head_dim, int max_split);
kr_status kr_dec_fattn_scratch_init(kr_dec *d, kr_stream *s, float *scratch, int n_head, kr_err *err);
/* Split count for up to `visible` positions on device dev (NULL: 132 SMs): about two blocks per SM,
 * chunks of >= 32 positions. */
int kr_dec_fattn_default_splits(const kr_device_info *dev, int n_head, int n_head_kv, int visible);

#endif
