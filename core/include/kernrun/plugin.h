/* Plugin ABI.
 *
 * A plugin is a shared object exporting exactly one symbol, kr_plugin_entry,
 * which returns a pointer to a const kr_plugin_desc. Write it with
 * KR_PLUGIN_DEFINE:
 *
 *     static const kr_kernel kernels[] = {
 *         { .name = "vec_scale_add_f32_cpu", .op = "vec_scale_add", ... },
 *     };
 *     KR_PLUGIN_DEFINE(
 *         .name = "example", .version = "1.0.0",
 *         .description = "scaled vector add",
 *         .kernels = kernels, .n_kernels = KR_ARRAY_LEN(kernels))
 *
 * The core checks abi_version and the struct sizes before calling anything
 * else in the plugin (init included). Plugins never link libkernrun: every
 * service comes through the kr_host table passed to init() and found in
 * every kr_kernel_call. Plugins keep no mutable globals: state lives in what
 * init() returns (freed by fini()).
 *
 * ABI rules: kr_plugin_desc, kr_host, kr_kernel only grow at the end; a
 * change to an existing field bumps KR_PLUGIN_ABI_VERSION.
 */
#ifndef KERNRUN_PLUGIN_H
#define KERNRUN_PLUGIN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/backend.h"
#include "kernrun/log.h"
#include "kernrun/registry.h"
#include "kernrun/status.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KR_PLUGIN_ABI_VERSION 1u
#define KR_PLUGIN_ENTRY_SYMBOL "kr_plugin_entry"
#define KR_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* The table of services the core gives a plugin. Grows only at the end;
 * a plugin built against a larger kr_host than the core provides is
 * refused at load (desc->host_size > host->struct_size). Every slot takes
 * the host first. */
struct kr_host {
    uint32_t abi_version;          /* KR_PLUGIN_ABI_VERSION of the core */
    uint32_t struct_size;          /* sizeof(kr_host) of the core */
    void *ctx;                     /* core-private (the runtime) */

    /* logging through the core's sink; domain is usually the plugin name */
    void (*log)(const kr_host *host, kr_log_level level, const char *domain, const char *fmt, ...)
        __attribute__((format(printf, 4, 5)));
    /* error helpers (plugins cannot call libkernrun's kr_err_set) */
    kr_status (*err_set)(kr_err *err, kr_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
    kr_status (*err_prefix)(kr_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
    const char *(*status_str)(kr_status s);

    /* host memory (malloc family); calloc checks n*size for overflow */
    void *(*alloc)(const kr_host *host, size_t size);
    void *(*calloc)(const kr_host *host, size_t n, size_t size);
    void (*free)(const kr_host *host, void *p);

    /* registry: dispatch an op on the active backend (CPU fallback as in
     * kr_registry_dispatch) and run it on stream s */
    kr_status (*run_op)(const kr_host *host, const kr_kernel_args *args, kr_stream *s, kr_err *err);
    /* choose without running (out->kernel NULL when none) */
    kr_status (*find_op)(const kr_host *host, const kr_kernel_args *args, kr_kernel_ref *out, kr_err *err);
    const kr_arch_entry *(*find_arch)(const kr_host *host, const char *name);

    /* backends: the active one (CUDA when configured and present, else CPU) and the CPU one */
    kr_backend *(*backend)(const kr_host *host);
    kr_backend *(*cpu_backend)(const kr_host *host);
    const kr_device_info *(*device_info)(const kr_host *host); /* of the active backend */

    /* JIT + launch on the active backend (KR_ERR_UNSUPPORTED on CPU) */
    kr_status (*get_function)(const kr_host *host, const kr_kernel_source *src, kr_function **fn, kr_err *err);
    kr_status (*launch)(const kr_host *host, kr_function *fn, const uint32_t grid[3], const uint32_t block[3],
                        size_t shmem, kr_stream *s, void **args, kr_err *err);
    /* uniform [0,1) floats into device memory (cuRAND on CUDA); KR_ERR_UNSUPPORTED where unavailable */
    kr_status (*rng_uniform)(const kr_host *host, float *dst, size_t n, uint64_t seed, uint64_t offset,
                             kr_stream *s, kr_err *err);

    /* configuration value as text (after env overrides), NULL when unset.
     * Sections named "plugin.<name>" are free-form for plugins. */
    const char *(*config_get)(const kr_host *host, const char *section, const char *key);
};

/* What kr_plugin_entry returns. */
typedef struct kr_plugin_desc {
    uint32_t abi_version;          /* KR_PLUGIN_ABI_VERSION the plugin was built with */
    uint32_t desc_size;            /* sizeof(kr_plugin_desc) as built */
    uint32_t host_size;            /* sizeof(kr_host) the plugin expects */
    uint32_t kernel_size;          /* sizeof(kr_kernel): stride of kernels[] */
    uint32_t pipeline_size;        /* sizeof(kr_pipeline): stride of pipelines[] */
    uint32_t arch_size;            /* sizeof(kr_arch_entry): stride of archs[] */

    const char *name;              /* unique plugin name, "example" */
    const char *version;           /* "1.0.0" */
    const char *description;       /* one line */

    /* (optional) called once after the ABI checks; *state is handed back in
     * every kr_kernel_call / pipeline run and to fini. Non-OK -> plugin skipped. */
    kr_status (*init)(const kr_host *host, void **state, kr_err *err);
    /* (optional) release state; called before dlclose */
    void (*fini)(const kr_host *host, void *state);

    const kr_kernel *kernels;      /* (n_kernels,) */
    uint32_t n_kernels;
    const kr_pipeline *pipelines;  /* (n_pipelines,) */
    uint32_t n_pipelines;
    const kr_arch_entry *archs;    /* (n_archs,) */
    uint32_t n_archs;
} kr_plugin_desc;

typedef const kr_plugin_desc *(*kr_plugin_entry_fn)(void);

/* Tripwires: these offsets are the ABI. If one fires, you changed the
 * layout of a plugin-visible struct: append instead, or bump the ABI. */
_Static_assert(offsetof(kr_plugin_desc, abi_version) == 0, "abi_version must stay first");
_Static_assert(offsetof(kr_plugin_desc, desc_size) == 4, "kr_plugin_desc layout changed");
_Static_assert(offsetof(kr_plugin_desc, host_size) == 8, "kr_plugin_desc layout changed");
_Static_assert(offsetof(kr_plugin_desc, kernel_size) == 12, "kr_plugin_desc layout changed");
_Static_assert(offsetof(kr_plugin_desc, name) == 24, "kr_plugin_desc layout changed");
_Static_assert(offsetof(kr_host, abi_version) == 0 && offsetof(kr_host, struct_size) == 4,
               "kr_host header layout changed");
_Static_assert(sizeof(void *) == 8, "kernrun's plugin ABI is defined for 64-bit targets");
_Static_assert(offsetof(kr_plugin_desc, n_archs) == 104, "kr_plugin_desc v1 layout changed");
_Static_assert(offsetof(kr_host, config_get) == 144, "kr_host v1 layout changed");
_Static_assert(offsetof(kr_kernel, description) == 72, "kr_kernel v1 layout changed");

/* Minimal sizes the loader accepts (the v1 layouts). */
#define KR_PLUGIN_DESC_V1_SIZE (offsetof(kr_plugin_desc, n_archs) + sizeof(uint32_t))
#define KR_KERNEL_V1_SIZE (offsetof(kr_kernel, description) + sizeof(const char *))
#define KR_PIPELINE_V1_SIZE sizeof(kr_pipeline)
#define KR_ARCH_V1_SIZE sizeof(kr_arch_entry)

#if defined(__GNUC__)
#define KR_PLUGIN_EXPORT __attribute__((visibility("default")))
#else
#define KR_PLUGIN_EXPORT
#endif

/* Define the plugin's descriptor and its exported entry point. Arguments
 * are designated initializers of kr_plugin_desc (name, version, ...); the
 * ABI fields are filled in for you. Use once per plugin, at file scope,
 * WITHOUT a trailing semicolon (it expands to a function definition; a stray
 * ';' is an -Wpedantic warning). */
#define KR_PLUGIN_DEFINE(...)                                               \
    static const kr_plugin_desc kr__plugin_desc = {                         \
        .abi_version = KR_PLUGIN_ABI_VERSION,                               \
        .desc_size = (uint32_t)sizeof(kr_plugin_desc),                      \
        .host_size = (uint32_t)sizeof(kr_host),                             \
        .kernel_size = (uint32_t)sizeof(kr_kernel),                         \
        .pipeline_size = (uint32_t)sizeof(kr_pipeline),                     \
        .arch_size = (uint32_t)sizeof(kr_arch_entry),                       \
        __VA_ARGS__};                                                       \
    KR_PLUGIN_EXPORT const kr_plugin_desc *kr_plugin_entry(void);           \
    KR_PLUGIN_EXPORT const kr_plugin_desc *kr_plugin_entry(void) { return &kr__plugin_desc; }

#ifdef __cplusplus
}
#endif
#endif
