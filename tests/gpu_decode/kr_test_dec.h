/* Harness shared by the gpu_decode tests (test_decode.c, test_kv_attn.c,
 * test_kv_fattn.c): a CUDA backend with its kr_dec, the NMSE used against
 * double references, and the host reference of the device KV cache rows
 * (kr_decode_kv.h layout: f16, or q8_0 quants then fp16 scales).
 * Include after kr_test_gpu.h and kr_test_rng.h. */
#ifndef KR_TEST_DEC_H
#define KR_TEST_DEC_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "kernrun/half.h"

#include "kr_decode.h"
#include "kr_test_gpu.h"
#include "kr_test_rng.h"

typedef struct gpu {
    kr_backend *be;
    kr_dec *dec;
} gpu;

/* Opens the GPU (skips or fails the test without one, kr_test_gpu.h) and seeds the RNG. */
static inline void gpu_open(gpu *g)
{
    kr_err err;
    kr_err_clear(&err);
    kr_test_rng_seed();
    g->dec = NULL;
    g->be = kr_test_gpu_backend();
    kr_status st = kr_dec_create(g->be, &g->dec, &err);
    cr_assert_eq(st, KR_OK, "kr_dec_create: %s", kr_err_msg(&err, st));
}

static inline void gpu_close(gpu *g)
{
    kr_dec_free(g->dec);
    kr_backend_destroy(g->be);
}

/* sum (a-b)^2 / sum b^2; NaN anywhere in a gives +inf */
static inline double nmse(const float *a, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

/* ---- device KV cache rows on the host ---- */

static inline size_t ref_row_bytes(kr_dtype t, int kv_dim)
{
    size_t n = t == KR_DTYPE_F16 ? 2 * (size_t)kv_dim : (size_t)kv_dim + (size_t)kv_dim / 32 * 2;
    return (n + 15) / 16 * 16;
}

/* GGML q8_0 of 32 values: d = amax/127, q = round-half-away(x * (1/d)), d as fp16 */
static inline void ref_q8_block(const float *x, int8_t *q, uint16_t *d)
{
    float amax = 0;
    for (int i = 0; i < 32; i++)
        amax = fmaxf(amax, fabsf(x[i]));
    const float dd = amax / 127.0f;
    const float id = dd != 0.0f ? 1.0f / dd : 0.0f;
    for (int i = 0; i < 32; i++)
        q[i] = (int8_t)roundf(x[i] * id);
    *d = kr_fp32_to_fp16(dd);
}

static inline void ref_pack_row(kr_dtype t, const float *x, int kv_dim, uint8_t *row)
{
    if (t == KR_DTYPE_F16) {
        for (int i = 0; i < kv_dim; i++) {
            uint16_t h = kr_fp32_to_fp16(x[i]);
            memcpy(row + 2 * i, &h, 2);
        }
        return;
    }
    for (int b = 0; b < kv_dim / 32; b++) {
        uint16_t d;
        ref_q8_block(x + 32 * b, (int8_t *)row + 32 * b, &d);
        memcpy(row + kv_dim + 2 * b, &d, 2);
    }
}

static inline double ref_value(kr_dtype t, const uint8_t *row, int kv_dim, int i)
{
    uint16_t h;
    if (t == KR_DTYPE_F16) {
        memcpy(&h, row + 2 * i, 2);
        return kr_fp16_to_fp32(h);
    }
    memcpy(&h, row + kv_dim + 2 * (i / 32), 2);
    return (double)((const int8_t *)row)[i] * kr_fp16_to_fp32(h);
}

/* every row NaN: f16 NaN halves; q8_0 random quants with NaN scales */
static inline void poison_rows(kr_dtype t, uint8_t *c, int rows, size_t row_bytes, int kv_dim)
{
    for (int r = 0; r < rows; r++) {
        uint8_t *row = c + (size_t)r * row_bytes;
        memset(row, 0x5a, row_bytes);
        if (t == KR_DTYPE_F16) {
            for (int i = 0; i < kv_dim; i++)
                memcpy(row + 2 * i, &(uint16_t){0x7e00}, 2);
        } else {
            for (int i = 0; i < kv_dim; i++)
                row[i] = (uint8_t)kr_test_rng_u64();
            for (int b = 0; b < kv_dim / 32; b++)
                memcpy(row + kv_dim + 2 * b, &(uint16_t){0x7e00}, 2);
        }
    }
}

#endif
