/* Harness shared by the gpu_decode tests (test_decode.c, test_kv_attn.c):
 * a CUDA backend with its kr_dec, and the NMSE used against double
 * references. Include after kr_test_gpu.h and kr_test_rng.h. */
#ifndef KR_TEST_DEC_H
#define KR_TEST_DEC_H

#include <math.h>

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

#endif
