/* GPU test harness shared by the GPU suites (Criterion): open the CUDA
 * backend or skip the test with the reason, except that with
 * KERNRUN_REQUIRE_GPU=1 (tools/gpu-check sets it) a missing GPU fails the
 * test; device buffer helpers that assert on every error. */
#ifndef KR_TEST_GPU_H
#define KR_TEST_GPU_H

#include <criterion/criterion.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/backend.h"

/* KERNRUN_REQUIRE_GPU=1: a missing GPU is a failure, not a skip. */
static inline bool kr_test_require_gpu(void)
{
    const char *r = getenv("KERNRUN_REQUIRE_GPU");
    return r && strcmp(r, "1") == 0;
}

/* CUDA backend on device 0; skips the test (or fails it, see above) when
 * there is none. Caller destroys it. */
static inline kr_backend *kr_test_gpu_backend(void)
{
    kr_err err;
    kr_err_clear(&err);
    kr_backend *be = NULL;
    kr_status st = kr_backend_create(KR_BACKEND_CUDA, 0, &be, &err);
    if (st != KR_OK) {
        if (kr_test_require_gpu())
            cr_assert_fail("KERNRUN_REQUIRE_GPU=1 but no CUDA backend: %s", kr_err_msg(&err, st));
        cr_skip_test("no CUDA device: %s", kr_err_msg(&err, st));
    }
    return be;
}

/* Device buffer of `bytes` (16 when 0); returns its device pointer. */
static inline void *kr_test_dalloc(kr_backend *be, size_t bytes, kr_buffer **buf)
{
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_backend_alloc(be, bytes ? bytes : 16, buf, &err);
    cr_assert_eq(st, KR_OK, "alloc %zu: %s", bytes, kr_err_msg(&err, st));
    return (*buf)->ptr;
}

/* Device copy of `bytes` host bytes. */
static inline void *kr_test_dupload(kr_backend *be, const void *host, size_t bytes, kr_buffer **buf)
{
    void *d = kr_test_dalloc(be, bytes, buf);
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_backend_h2d(be, d, host, bytes, NULL, &err);
    cr_assert_eq(st, KR_OK, "h2d: %s", kr_err_msg(&err, st));
    return d;
}

/* Device buffer of n floats filled with NaN (unwritten outputs show). */
static inline float *kr_test_dpoisoned(kr_backend *be, size_t n, kr_buffer **buf)
{
    float *h = malloc(n * sizeof *h);
    cr_assert_not_null(h);
    for (size_t i = 0; i < n; i++)
        h[i] = NAN;
    float *d = kr_test_dupload(be, h, n * sizeof *h, buf);
    free(h);
    return d;
}

/* Synchronise the default stream, then copy `bytes` device bytes to host. */
static inline void kr_test_download(kr_backend *be, void *host, const void *dev, size_t bytes)
{
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_backend_sync(be, NULL, &err);
    cr_assert_eq(st, KR_OK, "sync: %s", kr_err_msg(&err, st));
    st = kr_backend_d2h(be, host, dev, bytes, NULL, &err);
    cr_assert_eq(st, KR_OK, "d2h: %s", kr_err_msg(&err, st));
}

#endif
