/* Operand checks for kernel supports() callbacks (header-only, so plugins
 * use them without importing libkernrun symbols). Cheap and side-effect free.
 *
 *   static bool my_f32(const kr_tensor *t) { ... backend-specific limits ... }
 *   static bool ew_supports(const kr_kernel_args *a, const kr_device_info *d)
 *   { return kr_operand_elementwise(a, my_f32); }
 */
#ifndef KERNRUN_OPERAND_H
#define KERNRUN_OPERAND_H

#include <stdbool.h>

#include "kernrun/registry.h"
#include "kernrun/tensor.h"

/* src[i], or NULL when a has fewer sources. */
static inline const kr_tensor *kr_operand_src(const kr_kernel_args *a, int i)
{
    return a->src && i >= 0 && i < a->n_src ? a->src[i] : NULL;
}

static inline bool kr_operand_same_shape(const kr_tensor *a, const kr_tensor *b)
{
    for (int i = 0; i < KR_MAX_DIMS; i++)
        if (a->ne[i] != b->ne[i])
            return false;
    return true;
}

/* Element-wise op: dst and every source pass ok() and hold as many elements
 * as src[0] (which must exist). */
static inline bool kr_operand_elementwise(const kr_kernel_args *a, bool (*ok)(const kr_tensor *))
{
    const kr_tensor *x = kr_operand_src(a, 0);
    if (!ok(x) || !ok(a->dst) || kr_tensor_nelements(x) != kr_tensor_nelements(a->dst))
        return false;
    for (int i = 1; i < a->n_src; i++)
        if (!ok(kr_operand_src(a, i)) || kr_tensor_nelements(kr_operand_src(a, i)) != kr_tensor_nelements(x))
            return false;
    return true;
}

#endif
