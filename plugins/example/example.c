/* The example plugin: one op, "vec_scale_add" (y = a*x + y, fp32), with a
 * CPU implementation and a CUDA one. It is the template for new plugins:
 * copy this folder, rename, keep the shape.
 *
 * Shape of a plugin:
 *   1. Kernel sources live in kernels/<plugin>/ and are embedded at build
 *      time (kernels/meson.build -> kr_kernel_embed[...], a generated header
 *      included below). The .so is self-contained; KERNRUN_KERNEL_DIR may
 *      override the embedded copy while iterating on a kernel.
 *   2. Each implementation is a kr_kernel record in ONE static const table
 *      (designated initializers, a comment per field). The core copies the
 *      records at load; nothing here is mutable.
 *   3. supports() answers "can you run these args?" cheaply and without side
 *      effects. The dispatcher asks it before run(), so run() never has to
 *      refuse work half-way and the core can fall back to the CPU.
 *   4. run() gets everything through kr_kernel_call: the backend to use,
 *      the stream, the operands and the host table (log, errors, ...).
 *      Plugins never link libkernrun and keep no globals.
 *   5. KR_PLUGIN_DEFINE exports the one entry symbol with the ABI header.
 */
#include <stdint.h>

#include "kernrun/plugin.h"

#include "example.h"
/* Generated from kernels/example/vec_scale_add.cu by tools/embed. */
#include "kr_kernel_example_vec_scale_add_cu.h"

#define VSA_BLOCK 256u

/* ---- shared checks ---------------------------------------------------------- */

/* Operands as the op contract says, with n = element count. Checks only
 * what both implementations need; backend placement is checked per kernel. */
static bool vsa_shape_ok(const kr_kernel_args *a, int64_t *n)
{
    if (a->n_src != 1 || !a->src || !a->src[0] || !a->dst)
        return false;
    if (!a->params || a->params_size != sizeof(kr_example_vec_scale_add_params))
        return false;
    const kr_tensor *x = a->src[0], *y = a->dst;
    if (x->type != KR_DTYPE_F32 || y->type != KR_DTYPE_F32)
        return false;
    if (!kr_tensor_is_contiguous(x) || !kr_tensor_is_contiguous(y))
        return false;
    int64_t nx = kr_tensor_nelements(x), ny = kr_tensor_nelements(y);
    if (nx < 0 || nx != ny)
        return false;
    if (nx > 0 && (!x->data || !y->data))
        return false;
    *n = nx;
    return true;
}

/* Data the CPU may dereference: plain host memory or a host-accessible buffer. */
static bool on_host(const kr_tensor *t)
{
    return !t->buf || (t->buf->flags & KR_BUFFER_HOST_ACCESSIBLE);
}

/* Data in CUDA device memory. */
static bool on_cuda(const kr_tensor *t)
{
    return t->buf && t->buf->backend && t->buf->backend->kind == KR_BACKEND_CUDA &&
           !(t->buf->flags & KR_BUFFER_PINNED);
}

/* ---- CPU implementation (also the reference the GPU is tested against) ----- */

static bool vsa_cpu_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    (void)dev;
    int64_t n;
    return vsa_shape_ok(a, &n) && on_host(a->src[0]) && on_host(a->dst);
}

/* y (n,) = a * x (n,) + y (n,) */
static kr_status vsa_cpu_run(const kr_kernel_call *call, kr_err *err)
{
    (void)err;
    const kr_kernel_args *a = call->args;
    int64_t n = 0;
    if (!vsa_shape_ok(a, &n)) /* cannot happen after supports(); never trust it blindly */
        return call->host->err_set(err, KR_ERR_INVALID_ARG, "vec_scale_add: bad operands");
    const float *x = a->src[0]->data;
    float *y = a->dst->data;
    const float s = ((const kr_example_vec_scale_add_params *)a->params)->a;
    for (int64_t i = 0; i < n; i++)
        y[i] = s * x[i] + y[i];
    return KR_OK;
}

/* ---- CUDA implementation -------------------------------------------------- */

/* The kernel source record: static, so the backend can cache the compiled
 * function by its address. name is the path under kernels/. */
static const kr_kernel_source vsa_cuda_src = {
    .name = "example/vec_scale_add.cu",                        /* cache key part + override path */
    .code = (const char *)kr_kernel_example_vec_scale_add_cu,   /* embedded text */
    .len = kr_kernel_example_vec_scale_add_cu_LEN,              /* bytes */
    .entry = "kr_vec_scale_add_f32",                            /* extern "C" symbol */
};

static bool vsa_cuda_supports(const kr_kernel_args *a, const kr_device_info *dev)
{
    int64_t n;
    if (!vsa_shape_ok(a, &n))
        return false;
    if (!dev || dev->kind != KR_BACKEND_CUDA)
        return false;
    return n == 0 || (on_cuda(a->src[0]) && on_cuda(a->dst));
}

static kr_status vsa_cuda_run(const kr_kernel_call *call, kr_err *err)
{
    const kr_host *h = call->host;
    const kr_kernel_args *a = call->args;
    int64_t n = 0;
    if (!vsa_shape_ok(a, &n))
        return h->err_set(err, KR_ERR_INVALID_ARG, "vec_scale_add: bad operands");
    if (n == 0)
        return KR_OK;
    kr_function *fn = NULL;
    kr_status st = kr_backend_get_function(call->backend, &vsa_cuda_src, &fn, err);
    if (st != KR_OK)
        return st;
    /* Enough blocks to fill the GPU a few times over; the kernel's
     * grid-stride loop covers any n beyond that. */
    const kr_device_info *dev = kr_backend_device_info(call->backend);
    uint64_t want = ((uint64_t)n + VSA_BLOCK - 1) / VSA_BLOCK;
    uint64_t cap = (dev && dev->sm_count > 0) ? (uint64_t)dev->sm_count * 32u : 4096u;
    uint32_t grid[3] = {(uint32_t)(want < cap ? want : cap), 1, 1};
    uint32_t block[3] = {VSA_BLOCK, 1, 1};
    void *y = a->dst->data;
    const void *x = a->src[0]->data;
    float s = ((const kr_example_vec_scale_add_params *)a->params)->a;
    unsigned long long n64 = (unsigned long long)n;
    void *kargs[] = {&y, &x, &s, &n64}; /* order and types of the kernel's parameters */
    return kr_backend_launch(call->backend, fn, grid, block, 0, call->stream, kargs, err);
}

/* ---- the table ------------------------------------------------------------ */

static const kr_kernel example_kernels[] = {
    {
        .name = "vec_scale_add_f32_cpu",                   /* unique across all plugins */
        .op = KR_EXAMPLE_OP_VEC_SCALE_ADD,                 /* what it computes */
        .backend = KR_BACKEND_CPU,                         /* where it runs */
        .n_dtypes = 2,                                     /* src[0] type, then dst type */
        .dtypes = {KR_DTYPE_F32, KR_DTYPE_F32},
        .priority = 0,                                     /* only one CPU candidate */
        .cuda = NULL,                                      /* CPU: no kernel source */
        .supports = vsa_cpu_supports,
        .run = vsa_cpu_run,
        .description = "y = a*x + y, fp32, plain C loop (reference)",
    },
    {
        .name = "vec_scale_add_f32_cuda",
        .op = KR_EXAMPLE_OP_VEC_SCALE_ADD,
        .backend = KR_BACKEND_CUDA,
        .n_dtypes = 2,
        .dtypes = {KR_DTYPE_F32, KR_DTYPE_F32},
        .priority = 10,                                    /* preferred over slower variants */
        .cuda = &vsa_cuda_src,                             /* JIT-compiled on first use */
        .supports = vsa_cuda_supports,
        .run = vsa_cuda_run,
        .description = "y = a*x + y, fp32, grid-stride CUDA kernel",
    },
};

/* No semicolon after it: the macro ends with a function body. */
KR_PLUGIN_DEFINE(
    .name = "example",
    .version = "1.0.0",
    .description = "template plugin: scaled vector add (y = a*x + y) on CPU and CUDA",
    .kernels = example_kernels,
    .n_kernels = KR_ARRAY_LEN(example_kernels))
