/* Quantization block formats (as ggml defines them) — CPU reference code.
 * Layouts and formulas: docs/QUANTS.md. Depends only on core headers (no
 * libkernrun symbols), so the static library can be linked into plugins as
 * well as models/ and tools/. All functions are pure (no global state) and
 * safe to call from any number of threads at once.
 *
 * Policy for non-finite input to the quantizers (F32/F16/BF16 keep them as
 * IEEE values): NaN is encoded as 0, +-inf saturate to the block's largest
 * magnitude, and block scales ignore non-finite values and are clamped to
 * the largest finite fp16 (65504), so a quantized block never holds inf/NaN.
 * Dequantization reproduces whatever the bytes say (an fp16 scale of inf or
 * NaN in a file gives inf/NaN values, as in ggml). */
#ifndef KERNRUN_QUANT_H
#define KERNRUN_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/dtype.h"
#include "kernrun/status.h"

#define KR_QK 32   /* elements per block of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 */
#define KR_QK_K 256 /* elements per super-block of the K-quants */

/* ---- Block layouts (byte-exact with ggml; fp16 fields as raw bits).
 * Rows from files are only 2-byte aligned in general; the library itself
 * reads blocks through byte offsets, so it accepts any pointer. ---- */
typedef struct kr_block_q4_0 {
    uint16_t d;          /* fp16 scale */
    uint8_t qs[KR_QK / 2]; /* nibbles: low of qs[j] = x[j], high = x[j+16] */
} kr_block_q4_0;
typedef struct kr_block_q4_1 {
    uint16_t d, m;       /* fp16 scale, fp16 min */
    uint8_t qs[KR_QK / 2];
} kr_block_q4_1;
typedef struct kr_block_q5_0 {
    uint16_t d;
    uint8_t qh[4];       /* bit j of the LE u32 = 5th bit of x[j] */
    uint8_t qs[KR_QK / 2];
} kr_block_q5_0;
typedef struct kr_block_q5_1 {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[KR_QK / 2];
} kr_block_q5_1;
typedef struct kr_block_q8_0 {
    uint16_t d;
    int8_t qs[KR_QK];
} kr_block_q8_0;
typedef struct kr_block_q2_K {
    uint8_t scales[KR_QK_K / 16]; /* per 16: low nibble scale, high nibble min */
    uint8_t qs[KR_QK_K / 4];      /* 2-bit quants */
    uint16_t d, dmin;             /* fp16 super-block scale for scales / mins */
} kr_block_q2_K;
typedef struct kr_block_q3_K {
    uint8_t hmask[KR_QK_K / 8];   /* high bit of each quant */
    uint8_t qs[KR_QK_K / 4];      /* low 2 bits */
    uint8_t scales[12];           /* 16 x 6-bit scales, packed */
    uint16_t d;
} kr_block_q3_K;
typedef struct kr_block_q4_K {
    uint16_t d, dmin;
    uint8_t scales[12];           /* 8 x (6-bit scale, 6-bit min), packed */
    uint8_t qs[KR_QK_K / 2];
} kr_block_q4_K;
typedef struct kr_block_q5_K {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[KR_QK_K / 8];
    uint8_t qs[KR_QK_K / 2];
} kr_block_q5_K;
typedef struct kr_block_q6_K {
    uint8_t ql[KR_QK_K / 2];      /* low 4 bits */
    uint8_t qh[KR_QK_K / 4];      /* high 2 bits */
    int8_t scales[KR_QK_K / 16];  /* 8-bit signed scales */
    uint16_t d;
} kr_block_q6_K;

_Static_assert(sizeof(kr_block_q4_0) == 18, "q4_0 block");
_Static_assert(sizeof(kr_block_q4_1) == 20, "q4_1 block");
_Static_assert(sizeof(kr_block_q5_0) == 22, "q5_0 block");
_Static_assert(sizeof(kr_block_q5_1) == 24, "q5_1 block");
_Static_assert(sizeof(kr_block_q8_0) == 34, "q8_0 block");
_Static_assert(sizeof(kr_block_q2_K) == 84, "q2_K block");
_Static_assert(sizeof(kr_block_q3_K) == 110, "q3_K block");
_Static_assert(sizeof(kr_block_q4_K) == 144, "q4_K block");
_Static_assert(sizeof(kr_block_q5_K) == 176, "q5_K block");
_Static_assert(sizeof(kr_block_q6_K) == 210, "q6_K block");

/* Elements per block / bytes per block of t (same numbers as kernrun/dtype.h,
 * available without libkernrun); 0 for types this library does not know. */
size_t kr_quant_block_size(kr_dtype t);
size_t kr_quant_type_size(kr_dtype t);
/* Bytes of a row of n elements. KR_ERR_INVALID_ARG (message in err) when n is
 * not a multiple of the block size, KR_ERR_UNSUPPORTED for unknown types,
 * KR_ERR_OVERFLOW on overflow. err may be NULL. Callers add the tensor name
 * with kr_err_prefix. */
kr_status kr_quant_row_size(kr_dtype t, uint64_t n, uint64_t *bytes, kr_err *err);

/* Dequantize n elements (n a multiple of the block size) of type t from src
 * to dst (fp32). Types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K,
 * Q3_K, Q4_K, Q5_K, Q6_K. Returns KR_ERR_UNSUPPORTED for other types and
 * KR_ERR_INVALID_ARG when n is not a multiple of the block size. */
kr_status kr_dequantize_row(kr_dtype t, const void *src, float *dst, size_t n);

/* Quantize n fp32 values into dst (kr_dtype_row_size(t, n) bytes). Types:
 * F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 (round-to-nearest, same
 * bytes as ggml's quantize_row_*_ref for finite input), and Q4_K, Q5_K,
 * Q6_K (valid blocks from a simpler scheme than ggml's scale search, error
 * at most half a sub-block step; not ggml's bytes — docs/QUANTS.md). */
kr_status kr_quantize_row(kr_dtype t, const float *src, void *dst, size_t n);

/* True when kr_dequantize_row / kr_quantize_row handle t. */
bool kr_quant_can_dequantize(kr_dtype t);
bool kr_quant_can_quantize(kr_dtype t);

/* Dot product of one quantized row (n elements of type t) with fp32 x —
 * the CPU matvec building block; no temporary row needed. Same types as
 * kr_dequantize_row. */
kr_status kr_vec_dot_row(kr_dtype t, const void *row, const float *x, size_t n, float *out);

/* Variants that also fill err (may be NULL) with a message on failure,
 * e.g. "row length 172 is not a multiple of the q8_0 block size 32". */
kr_status kr_dequantize_row_e(kr_dtype t, const void *src, float *dst, size_t n, kr_err *err);
kr_status kr_quantize_row_e(kr_dtype t, const float *src, void *dst, size_t n, kr_err *err);
kr_status kr_vec_dot_row_e(kr_dtype t, const void *row, const float *x, size_t n, float *out,
                           kr_err *err);

#endif
