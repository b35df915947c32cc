/* Quantization block formats (as ggml defines them) — CPU reference code.
 * Layouts and formulas: docs/QUANTS.md. Depends only on core headers, so the
 * static library can be linked into plugins as well as models/. */
#ifndef KERNRUN_QUANT_H
#define KERNRUN_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/dtype.h"
#include "kernrun/status.h"

/* Dequantize n elements (n a multiple of the block size) of type t from src
 * to dst (fp32). Types: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K,
 * Q3_K, Q4_K, Q5_K, Q6_K. Returns KR_ERR_UNSUPPORTED for other types and
 * KR_ERR_INVALID_ARG when n is not a multiple of the block size. */
kr_status kr_dequantize_row(kr_dtype t, const void *src, float *dst, size_t n);

/* Quantize n fp32 values into dst (kr_dtype_row_size(t, n) bytes). Types:
 * F32, F16, BF16, Q8_0, Q4_0, Q4_1 (more may be added). */
kr_status kr_quantize_row(kr_dtype t, const float *src, void *dst, size_t n);

/* True when kr_dequantize_row / kr_quantize_row handle t. */
bool kr_quant_can_dequantize(kr_dtype t);
bool kr_quant_can_quantize(kr_dtype t);

/* Dot product of one quantized row (n elements of type t) with fp32 x —
 * the CPU matvec building block; no temporary row needed. */
kr_status kr_vec_dot_row(kr_dtype t, const void *row, const float *x, size_t n, float *out);

#endif
