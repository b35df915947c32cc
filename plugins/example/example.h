/* Public contract of the example plugin's op, for callers and tests.
 *
 * op "vec_scale_add":  y (n,) = a * x (n,) + y (n,)      fp32, any n
 *   args.src[0] = x   (F32, contiguous, n elements)
 *   args.dst    = y   (F32, contiguous, n elements; read and written)
 *   args.params = kr_example_vec_scale_add_params, params_size = its sizeof
 */
#ifndef KERNRUN_PLUGIN_EXAMPLE_H
#define KERNRUN_PLUGIN_EXAMPLE_H

#define KR_EXAMPLE_OP_VEC_SCALE_ADD "vec_scale_add"

typedef struct kr_example_vec_scale_add_params {
    float a; /* scale applied to x */
} kr_example_vec_scale_add_params;

#endif
