/* Registry: validation, lookup, ordering, dispatch and CPU fallback. */
#include <criterion/criterion.h>

#include "kr_test_leaks.h"
#include <string.h>

#include "kernrun/plugin.h"
#include "kernrun/registry.h"

static kr_status run_ok(const kr_kernel_call *c, kr_err *e)
{
    (void)c; (void)e;
    return KR_OK;
}

/* CUDA "vectorised" kernel: only when ne[0] is a multiple of 4 */
static bool sup_mult4(const kr_kernel_args *a, const kr_device_info *dev)
{
    (void)dev;
    return a->dst && a->dst->ne[0] % 4 == 0;
}
/* CUDA generic kernel: needs compute capability 8+ */
static bool sup_sm80(const kr_kernel_args *a, const kr_device_info *dev)
{
    (void)a;
    return dev && dev->cc_major >= 8;
}

static const kr_kernel kernels[] = {
    {.name = "add_cpu", .op = "add", .backend = KR_BACKEND_CPU, .n_dtypes = 3,
     .dtypes = {KR_DTYPE_F32, KR_DTYPE_F32, KR_DTYPE_F32}, .run = run_ok},
    {.name = "add_cuda_vec4", .op = "add", .backend = KR_BACKEND_CUDA, .priority = 10, .n_dtypes = 3,
     .dtypes = {KR_DTYPE_F32, KR_DTYPE_F32, KR_DTYPE_F32}, .supports = sup_mult4, .run = run_ok},
    {.name = "add_cuda_generic", .op = "add", .backend = KR_BACKEND_CUDA, .priority = 5, .n_dtypes = 3,
     .dtypes = {KR_DTYPE_F32, KR_DTYPE_F32, KR_DTYPE_F32}, .supports = sup_sm80, .run = run_ok},
    {.name = "add_cuda_f16", .op = "add", .backend = KR_BACKEND_CUDA, .priority = 1, .n_dtypes = 3,
     .dtypes = {KR_DTYPE_F16, KR_DTYPE_F16, KR_DTYPE_F16}, .run = run_ok},
    {.name = "scale_cuda", .op = "scale", .backend = KR_BACKEND_CUDA, .run = run_ok},
};

static kr_registry *reg;

static void setup(void)
{
    kr_err e;
    cr_assert_eq(kr_registry_create(&reg, &e), KR_OK);
    cr_assert_eq(kr_registry_add_kernels(reg, "p1", (void *)0x1234, kernels, KR_ARRAY_LEN(kernels),
                                         sizeof(kr_kernel), &e), KR_OK, "%s", e.msg);
}
static void teardown(void)
{
    kr_registry_free(reg);
    kr_test_leak_check();
}

TestSuite(registry, .init = setup, .fini = teardown);

/* A stand-in CUDA backend and one of its (device, not host-accessible) buffers. */
static kr_backend fake_cuda = {.kind = KR_BACKEND_CUDA};
static kr_buffer dev_buf = {.backend = &fake_cuda, .flags = 0};

static kr_tensor mk(kr_dtype t, int64_t n, kr_buffer *buf)
{
    kr_tensor x;
    cr_assert_eq(kr_tensor_init(&x, t, n, 1, 1, 1), KR_OK);
    x.buf = buf;
    return x;
}

Test(registry, counts_and_lookup)
{
    cr_assert_eq(kr_registry_kernel_count(reg), 5);
    kr_kernel_ref r;
    cr_assert(kr_registry_kernel_at(reg, 1, &r));
    cr_assert_str_eq(r.kernel->name, "add_cuda_vec4");
    cr_assert_str_eq(r.plugin, "p1");
    cr_assert_eq(r.plugin_state, (void *)0x1234);
    cr_assert_not(kr_registry_kernel_at(reg, 5, &r));
    cr_assert(kr_registry_find_kernel_by_name(reg, "scale_cuda", &r));
    cr_assert_str_eq(r.kernel->op, "scale");
    cr_assert_not(kr_registry_find_kernel_by_name(reg, "nope", &r));
}

Test(registry, find_kernels_orders_by_priority)
{
    kr_kernel_ref refs[8];
    size_t n = kr_registry_find_kernels(reg, "add", refs, 8);
    cr_assert_eq(n, 4);
    cr_assert_str_eq(refs[0].kernel->name, "add_cuda_vec4");
    cr_assert_str_eq(refs[1].kernel->name, "add_cuda_generic");
    cr_assert_str_eq(refs[2].kernel->name, "add_cuda_f16");
    cr_assert_str_eq(refs[3].kernel->name, "add_cpu");
    /* counting only, and a short buffer */
    cr_assert_eq(kr_registry_find_kernels(reg, "add", NULL, 0), 4);
    cr_assert_eq(kr_registry_find_kernels(reg, "add", refs, 2), 4);
    cr_assert_str_eq(refs[0].kernel->name, "add_cuda_vec4");
    cr_assert_str_eq(refs[1].kernel->name, "add_cuda_generic");
}

Test(registry, dispatch_prefers_highest_supported_on_preferred_backend)
{
    kr_tensor a = mk(KR_DTYPE_F32, 8, &dev_buf), b = mk(KR_DTYPE_F32, 8, &dev_buf), c = mk(KR_DTYPE_F32, 8, &dev_buf);
    const kr_tensor *src[] = {&a, &b};
    kr_kernel_args args = {.op = "add", .src = src, .n_src = 2, .dst = &c};
    kr_device_info h100 = {.cc_major = 9};
    kr_kernel_ref r;
    kr_err e;
    cr_assert_eq(kr_registry_dispatch(reg, NULL, &args, KR_BACKEND_CUDA, &h100, NULL, &r, &e), KR_OK, "%s", e.msg);
    cr_assert_str_eq(r.kernel->name, "add_cuda_vec4");

    /* ne0 = 7: vec4 declines, generic takes it on sm_90 */
    a = mk(KR_DTYPE_F32, 7, &dev_buf), b = mk(KR_DTYPE_F32, 7, &dev_buf), c = mk(KR_DTYPE_F32, 7, &dev_buf);
    cr_assert_eq(kr_registry_dispatch(reg, NULL, &args, KR_BACKEND_CUDA, &h100, NULL, &r, &e), KR_OK);
    cr_assert_str_eq(r.kernel->name, "add_cuda_generic");

    /* on an sm_75 card neither CUDA kernel fits and the data is on the
     * device: no CPU fallback, clear message naming op and types */
    kr_device_info t4 = {.cc_major = 7, .cc_minor = 5};
    kr_err_clear(&e);
    cr_assert_eq(kr_registry_dispatch(reg, NULL, &args, KR_BACKEND_CUDA, &t4, NULL, &r, &e), KR_ERR_UNSUPPORTED);
    cr_assert_null(r.kernel);
    cr_assert(strstr(e.msg, "'add'") && strstr(e.msg, "f32, f32 -> f32") && strstr(e.msg, "device memory"), "%s",
              e.msg);
}

Test(registry, dispatch_falls_back_to_cpu_for_host_memory)
{
    kr_buffer pinned = {.flags = KR_BUFFER_HOST_ACCESSIBLE};
    kr_tensor a = mk(KR_DTYPE_F32, 7, NULL), b = mk(KR_DTYPE_F32, 7, &pinned), c = mk(KR_DTYPE_F32, 7, NULL);
    const kr_tensor *src[] = {&a, &b};
    kr_kernel_args args = {.op = "add", .src = src, .n_src = 2, .dst = &c};
    kr_device_info t4 = {.cc_major = 7};
    kr_kernel_ref r;
    kr_err e;
    cr_assert_eq(kr_registry_dispatch(reg, NULL, &args, KR_BACKEND_CUDA, &t4, NULL, &r, &e), KR_OK, "%s", e.msg);
    cr_assert_str_eq(r.kernel->name, "add_cpu");
    /* host tensors never reach a CUDA kernel, even one that supports the
     * shape on this card (it would dereference host addresses as device ones) */
    kr_device_info h100 = {.cc_major = 9};
    a = mk(KR_DTYPE_F32, 8, NULL), b = mk(KR_DTYPE_F32, 8, NULL), c = mk(KR_DTYPE_F32, 8, NULL);
    cr_assert_eq(kr_registry_dispatch(reg, NULL, &args, KR_BACKEND_CUDA, &h100, NULL, &r, &e), KR_OK, "%s", e.msg);
    cr_assert_str_eq(r.kernel->name, "add_cpu");
    /* nor does a mix of host and device tensors */
    b = mk(KR_DTYPE_F32, 8, &dev_buf);
    cr_assert_eq(kr_registry_dispatch(reg, NULL, &args, KR_BACKEND_CUDA, &h100, NULL, &r, &e), KR_ERR_UNSUPPORTED);
    b = mk(KR_DTYPE_F32, 8, NULL);
    /* preferring CPU never picks a CUDA kernel */
    a = mk(KR_DTYPE_F32, 8, NULL), c = mk(KR_DTYPE_F32, 8, NULL);
    cr_assert_eq(kr_registry_dispatch(reg, NULL, &args, KR_BACKEND_CPU, NULL, NULL, &r, &e), KR_OK);
    cr_assert_str_eq(r.kernel->name, "add_cpu");
}

Test(registry, dispatch_filters_dtypes)
{
    kr_tensor a = mk(KR_DTYPE_F16, 8, &dev_buf), b = mk(KR_DTYPE_F16, 8, &dev_buf), c = mk(KR_DTYPE_F16, 8, &dev_buf);
    const kr_tensor *src[] = {&a, &b};
    kr_kernel_args args = {.op = "add", .src = src, .n_src = 2, .dst = &c};
    kr_kernel_ref r;
    kr_err e;
    cr_assert_eq(kr_registry_dispatch(reg, NULL, &args, KR_BACKEND_CUDA, NULL, NULL, &r, &e), KR_OK);
    cr_assert_str_eq(r.kernel->name, "add_cuda_f16");
    /* no f16 CPU kernel: CPU preference fails, naming the types */
    a = mk(KR_DTYPE_F16, 8, NULL), b = mk(KR_DTYPE_F16, 8, NULL), c = mk(KR_DTYPE_F16, 8, NULL);
    cr_assert_eq(kr_registry_dispatch(reg, NULL, &args, KR_BACKEND_CPU, NULL, NULL, &r, &e), KR_ERR_UNSUPPORTED);
    cr_assert(strstr(e.msg, "f16, f16 -> f16"), "%s", e.msg);
    /* mixed types match nothing */
    a = mk(KR_DTYPE_F16, 8, &dev_buf), b = mk(KR_DTYPE_F16, 8, &dev_buf), c = mk(KR_DTYPE_F32, 8, &dev_buf);
    cr_assert_eq(kr_registry_dispatch(reg, NULL, &args, KR_BACKEND_CUDA, NULL, NULL, &r, &e), KR_ERR_UNSUPPORTED);
}

Test(registry, dispatch_unknown_op_is_not_found)
{
    kr_tensor c = mk(KR_DTYPE_F32, 8, &dev_buf);
    kr_kernel_args args = {.op = "softmax", .dst = &c};
    kr_kernel_ref r;
    kr_err e;
    cr_assert_eq(kr_registry_dispatch(reg, NULL, &args, KR_BACKEND_CPU, NULL, NULL, &r, &e), KR_ERR_NOT_FOUND);
    cr_assert(strstr(e.msg, "'softmax'"), "%s", e.msg);
    /* op given explicitly overrides args->op */
    args.op = NULL;
    cr_assert_eq(kr_registry_dispatch(reg, "scale", &args, KR_BACKEND_CUDA, NULL, NULL, &r, &e), KR_OK);
    cr_assert_str_eq(r.kernel->name, "scale_cuda");
    cr_assert_eq(kr_registry_dispatch(reg, NULL, &args, KR_BACKEND_CPU, NULL, NULL, &r, &e), KR_ERR_INVALID_ARG);
}

Test(registry, invalid_tables_are_rejected_atomically)
{
    kr_err e;
    kr_kernel bad[] = {
        {.name = "ok_one", .op = "x", .backend = KR_BACKEND_CPU, .run = run_ok},
        {.name = "no_run", .op = "x", .backend = KR_BACKEND_CPU},
    };
    cr_assert_eq(kr_registry_add_kernels(reg, "p2", NULL, bad, 2, sizeof(kr_kernel), &e), KR_ERR_INVALID_ARG);
    cr_assert(strstr(e.msg, "no_run") && strstr(e.msg, "run"), "%s", e.msg);
    cr_assert_eq(kr_registry_kernel_count(reg), 5);
    cr_assert_not(kr_registry_find_kernel_by_name(reg, "ok_one", NULL));

    kr_kernel dup[] = {{.name = "add_cpu", .op = "x", .backend = KR_BACKEND_CPU, .run = run_ok}};
    cr_assert_eq(kr_registry_add_kernels(reg, "p2", NULL, dup, 1, sizeof(kr_kernel), &e), KR_ERR_EXISTS);

    kr_kernel twice[] = {{.name = "t", .op = "x", .run = run_ok}, {.name = "t", .op = "y", .run = run_ok}};
    cr_assert_eq(kr_registry_add_kernels(reg, "p2", NULL, twice, 2, sizeof(kr_kernel), &e), KR_ERR_EXISTS);

    kr_kernel badbe[] = {{.name = "b", .op = "x", .backend = (kr_backend_kind)7, .run = run_ok}};
    cr_assert_eq(kr_registry_add_kernels(reg, "p2", NULL, badbe, 1, sizeof(kr_kernel), &e), KR_ERR_INVALID_ARG);

    kr_kernel badty[] = {{.name = "b", .op = "x", .n_dtypes = 1, .dtypes = {(kr_dtype)5}, .run = run_ok}};
    cr_assert_eq(kr_registry_add_kernels(reg, "p2", NULL, badty, 1, sizeof(kr_kernel), &e), KR_ERR_INVALID_ARG);

    kr_kernel_source nosrc = {.name = "k.cu", .code = NULL, .entry = "k"};
    kr_kernel badsrc[] = {{.name = "b", .op = "x", .backend = KR_BACKEND_CUDA, .cuda = &nosrc, .run = run_ok}};
    cr_assert_eq(kr_registry_add_kernels(reg, "p2", NULL, badsrc, 1, sizeof(kr_kernel), &e), KR_ERR_INVALID_ARG);

    cr_assert_eq(kr_registry_add_kernels(reg, "p2", NULL, bad, 1, 12, &e), KR_ERR_ABI);
    cr_assert_eq(kr_registry_kernel_count(reg), 5);
}

static int pipe_run(const kr_host *h, void *st, int argc, char **argv)
{
    (void)h; (void)st; (void)argv;
    return argc;
}

Test(registry, pipelines_and_archs)
{
    kr_err e;
    static const kr_pipeline pipes[] = {{.name = "bench2", .summary = "s", .run = pipe_run}};
    static const int iface = 1;
    static const kr_arch_entry archs[] = {{.name = "llama", .iface_version = 2, .iface = &iface}};
    cr_assert_eq(kr_registry_add_pipelines(reg, "p3", (void *)0x9, pipes, 1, &e), KR_OK);
    cr_assert_eq(kr_registry_add_archs(reg, "p3", NULL, archs, 1, &e), KR_OK);
    kr_pipeline_ref pr;
    cr_assert(kr_registry_find_pipeline(reg, "bench2", &pr));
    cr_assert_eq(pr.plugin_state, (void *)0x9);
    cr_assert_eq(pr.pipeline->run(NULL, NULL, 3, NULL), 3);
    cr_assert_not(kr_registry_find_pipeline(reg, "bench3", &pr));
    const kr_arch_entry *a = kr_registry_find_arch(reg, "llama");
    cr_assert_not_null(a);
    cr_assert_eq(a->iface, &iface);
    cr_assert_eq(a->iface_version, 2);
    cr_assert_null(kr_registry_find_arch(reg, "falcon"));
    /* duplicates refused */
    cr_assert_eq(kr_registry_add_pipelines(reg, "p4", NULL, pipes, 1, &e), KR_ERR_EXISTS);
    cr_assert_eq(kr_registry_add_archs(reg, "p4", NULL, archs, 1, &e), KR_ERR_EXISTS);
    static const kr_pipeline noname[] = {{.name = NULL, .run = pipe_run}};
    cr_assert_eq(kr_registry_add_pipelines(reg, "p4", NULL, noname, 1, &e), KR_ERR_INVALID_ARG);
    static const kr_arch_entry noiface[] = {{.name = "x"}};
    cr_assert_eq(kr_registry_add_archs(reg, "p4", NULL, noiface, 1, &e), KR_ERR_INVALID_ARG);
    cr_assert_eq(kr_registry_pipeline_count(reg), 1);
    cr_assert_eq(kr_registry_arch_count(reg), 1);
    kr_arch_ref ar;
    cr_assert(kr_registry_arch_at(reg, 0, &ar));
    cr_assert_str_eq(ar.plugin, "p3");
}
