/* Registry of kernels, pipelines and model architectures, filled from the
 * static const tables of plugins.
 *
 * Kernels: several implementations of one op may exist (per backend, per
 * dtype, per shape class). Dispatch asks each candidate's supports() and
 * picks the highest priority on the preferred backend, else the CPU
 * implementation when every tensor is host-accessible, else fails with
 * KR_ERR_UNSUPPORTED naming the op and the dtypes.
 *
 * The registry copies the kernel/pipeline/arch records it is given but not
 * the strings, sources or interface tables they point to: those must stay
 * valid while the registry lives (plugins keep them in static storage and
 * stay loaded until the runtime closes).
 */
#ifndef KERNRUN_REGISTRY_H
#define KERNRUN_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/backend.h"
#include "kernrun/dtype.h"
#include "kernrun/export.h"
#include "kernrun/status.h"
#include "kernrun/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kr_host kr_host; /* host table, see plugin.h */

#define KR_KERNEL_MAX_DTYPES 4

/* The operands of one op invocation. */
typedef struct kr_kernel_args {
    const char *op;                /* op name, "vec_scale_add" */
    const kr_tensor *const *src;   /* (n_src,) inputs */
    int n_src;                     /* number of inputs */
    kr_tensor *dst;                /* output (may be NULL for in-place ops that write a src) */
    const void *params;            /* op-specific parameter struct (defined by the op's owner), may be NULL */
    size_t params_size;            /* sizeof *params, for validation */
} kr_kernel_args;

typedef struct kr_kernel kr_kernel;

/* Everything a kernel's run() gets. */
typedef struct kr_kernel_call {
    const kr_host *host;           /* services (log, JIT, ...) */
    const kr_kernel *kernel;       /* the selected kernel record */
    void *plugin_state;            /* what the plugin's init() returned (NULL if none) */
    kr_backend *backend;           /* backend to run on (its kind == kernel->backend) */
    kr_stream *stream;             /* stream to order work on (NULL = default) */
    const kr_kernel_args *args;    /* operands */
} kr_kernel_call;

/* One kernel implementation. Plugins declare an array of these with
 * designated initializers. Grows only at the end. */
struct kr_kernel {
    const char *name;              /* unique kernel name, "vec_scale_add_f32_cuda" */
    const char *op;                /* op it implements, "vec_scale_add" */
    kr_backend_kind backend;       /* where it runs: KR_BACKEND_CPU or KR_BACKEND_CUDA */
    int n_dtypes;                  /* how many of dtypes[] are set; 0 = no dtype filter */
    kr_dtype dtypes[KR_KERNEL_MAX_DTYPES]; /* (n_dtypes,) src[0..n_src-1] types then dst type;
                                              dispatch skips the kernel when they differ */
    int priority;                  /* higher wins among supported candidates (default 0) */
    const kr_kernel_source *cuda;  /* CUDA source + entry (NULL for CPU kernels) */
    /* (optional) can this kernel run these args (shapes, strides, params)?
     * dev is the device it would run on. NULL = supports everything that
     * passes the dtype filter. Must be cheap and side-effect free. */
    bool (*supports)(const kr_kernel_args *args, const kr_device_info *dev);
    /* Do the work. Only called after supports() said yes. */
    kr_status (*run)(const kr_kernel_call *call, kr_err *err);
    const char *description;       /* (optional) one line for `kernrun list` */
};

/* A named entry point of the driver: `kernrun NAME [args]`. */
typedef struct kr_pipeline {
    const char *name;              /* "bench" */
    const char *summary;           /* one line for `kernrun help` */
    const char *usage;             /* full text for `kernrun help NAME` (may be NULL) */
    /* argv[0] is the pipeline name; returns a process exit status (0 ok). */
    int (*run)(const kr_host *host, void *plugin_state, int argc, char **argv);
} kr_pipeline;

/* A model architecture handler; core stores and looks up only. */
typedef struct kr_arch_entry {
    const char *name;              /* general.architecture value, "llama" */
    uint32_t iface_version;        /* version of the interface struct below (models/ defines it) */
    const void *iface;             /* interface table, opaque to core */
} kr_arch_entry;

typedef struct kr_registry kr_registry;

/* A registered record plus where it came from. */
typedef struct kr_kernel_ref {
    const kr_kernel *kernel;       /* registry's copy of the record */
    void *plugin_state;            /* owning plugin's state */
    const char *plugin;            /* owning plugin's name ("" for built-ins) */
} kr_kernel_ref;

typedef struct kr_pipeline_ref {
    const kr_pipeline *pipeline;
    void *plugin_state;
    const char *plugin;
} kr_pipeline_ref;

typedef struct kr_arch_ref {
    const kr_arch_entry *arch;
    void *plugin_state;
    const char *plugin;
} kr_arch_ref;

KR_API kr_status kr_registry_create(kr_registry **out, kr_err *err);
KR_API void kr_registry_free(kr_registry *reg); /* NULL ok */

/* Add a plugin's table. kernel_size is sizeof(kr_kernel) as the plugin was
 * compiled (older, smaller records are accepted and zero-extended).
 * Validates every record first (name, op, run set; backend known;
 * n_dtypes in range) and adds nothing on error. Duplicate kernel names ->
 * KR_ERR_EXISTS. `plugin` is copied. */
KR_API kr_status kr_registry_add_kernels(kr_registry *reg, const char *plugin, void *plugin_state,
                                         const kr_kernel *kernels, size_t n, size_t kernel_size, kr_err *err);
KR_API kr_status kr_registry_add_pipelines(kr_registry *reg, const char *plugin, void *plugin_state,
                                           const kr_pipeline *pipes, size_t n, kr_err *err);
KR_API kr_status kr_registry_add_archs(kr_registry *reg, const char *plugin, void *plugin_state,
                                       const kr_arch_entry *archs, size_t n, kr_err *err);

/* Iteration in registration order (for `kernrun list`). */
KR_API size_t kr_registry_kernel_count(const kr_registry *reg);
KR_API bool kr_registry_kernel_at(const kr_registry *reg, size_t i, kr_kernel_ref *out);
KR_API size_t kr_registry_pipeline_count(const kr_registry *reg);
KR_API bool kr_registry_pipeline_at(const kr_registry *reg, size_t i, kr_pipeline_ref *out);
KR_API size_t kr_registry_arch_count(const kr_registry *reg);
KR_API bool kr_registry_arch_at(const kr_registry *reg, size_t i, kr_arch_ref *out);

/* All kernels of an op, highest priority first. Writes up to cap refs and
 * returns the total number found (call with cap 0 to count). */
KR_API size_t kr_registry_find_kernels(const kr_registry *reg, const char *op, kr_kernel_ref *out, size_t cap);
KR_API bool kr_registry_find_kernel_by_name(const kr_registry *reg, const char *name, kr_kernel_ref *out);
KR_API bool kr_registry_find_pipeline(const kr_registry *reg, const char *name, kr_pipeline_ref *out);
KR_API const kr_arch_entry *kr_registry_find_arch(const kr_registry *reg, const char *name);

/* Choose the kernel for args->op (op may be NULL to use args->op):
 *  1. highest-priority kernel on `preferred` whose dtypes match and whose
 *     supports(args, pref_dev) is true;
 *  2. else, when every tensor's data is host-accessible (buf NULL or
 *     KR_BUFFER_HOST_ACCESSIBLE), the best such CPU kernel;
 *  3. else KR_ERR_UNSUPPORTED ("no kernel for op 'x' (f32, f32 -> f16) on
 *     cuda: ...") or KR_ERR_NOT_FOUND when no kernel has that op at all.
 * pref_dev / cpu_dev are passed to supports() (may be NULL). */
KR_API kr_status kr_registry_dispatch(const kr_registry *reg, const char *op, const kr_kernel_args *args,
                                      kr_backend_kind preferred, const kr_device_info *pref_dev,
                                      const kr_device_info *cpu_dev, kr_kernel_ref *out, kr_err *err);

#ifdef __cplusplus
}
#endif
#endif
