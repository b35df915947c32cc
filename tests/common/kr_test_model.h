/* Helpers shared by the whole-model GPU tests (tests/gpu_forward, tests/gpu_prefill):
 * loading a GGUF with the built-in architectures and CPU ops, and the NMSE of
 * logits against a float reference. */
#ifndef KR_TEST_MODEL_H
#define KR_TEST_MODEL_H

#include <criterion/criterion.h>
#include <math.h>
#include <stddef.h>

#include "kernrun/builtin_model.h"
#include "kernrun/model.h"

/* kr_model_load with kr_builtin_model_params; asserts success. */
static inline kr_model *kr_test_load_model(const char *path)
{
    kr_err err;
    kr_err_clear(&err);
    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    kr_model *m = NULL;
    kr_status st = kr_model_load(path, &mp, &m, &err);
    cr_assert_eq(st, KR_OK, "load %s: %s", path, kr_err_msg(&err, st));
    return m;
}

/* sum (a-b)^2 / sum b^2 in double; non-finite a gives +inf */
static inline double kr_test_nmse_f(const float *a, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(a[i]))
            return INFINITY;
        double d = (double)a[i] - (double)ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

#endif
