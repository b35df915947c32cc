/* The runtime: config + registry + loaded plugins + backends, in one object
 * the driver and models use.
 *
 * kr_runtime_open:
 *   1. reads [runtime] from the config (NULL = defaults + environment),
 *      sets the log level;
 *   2. creates the CPU backend, and the CUDA backend when backend=cuda
 *      (failure is an error) or backend=auto (failure logged at info, CPU used);
 *   3. loads plugins from, in order: the build tree (KR_BUILD_PLUGIN_DIR) and
 *      the install dir (both skipped when KERNRUN_NO_SYSTEM_PLUGINS=1),
 *      KERNRUN_PLUGIN_PATH (colon list), config plugin_path (colon list).
 *      Each directory and its immediate subdirectories are scanned for *.so.
 *      A plugin that fails any check is reported (file name + reason) and
 *      skipped; it never makes open fail.
 */
#ifndef KERNRUN_RUNTIME_H
#define KERNRUN_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>

#include "kernrun/backend.h"
#include "kernrun/config.h"
#include "kernrun/export.h"
#include "kernrun/plugin.h"
#include "kernrun/registry.h"
#include "kernrun/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kr_runtime kr_runtime;

/* A loaded plugin. */
typedef struct kr_plugin_info {
    const char *name;        /* desc->name */
    const char *version;     /* desc->version */
    const char *description; /* desc->description ("" if none) */
    const char *path;        /* file it was loaded from */
    size_t n_kernels, n_pipelines, n_archs;
} kr_plugin_info;

/* A plugin file that was rejected. */
typedef struct kr_plugin_failure {
    const char *path;        /* file */
    kr_status code;          /* KR_ERR_ABI, KR_ERR_PLUGIN, ... */
    const char *reason;      /* "wrong ABI version 7 (core has 1)" */
} kr_plugin_failure;

/* cfg is copied by reference: it must outlive the runtime (may be NULL:
 * then the runtime owns a default config with env overrides applied). */
KR_API kr_status kr_runtime_open(const kr_config *cfg, kr_runtime **out, kr_err *err);
KR_API void kr_runtime_close(kr_runtime *rt); /* NULL ok */

/* Load one plugin file explicitly (tests, --plugin). On failure the reason
 * is returned in err and also recorded as a failure; the runtime stays usable. */
KR_API kr_status kr_runtime_load_plugin(kr_runtime *rt, const char *path, kr_err *err);
/* Scan one directory (and its immediate subdirectories) like open does.
 * Returns KR_ERR_IO/KR_ERR_CONFIG for an unreadable or unsafe (group/
 * world-writable) directory; individual plugin failures are only recorded. */
KR_API kr_status kr_runtime_load_plugin_dir(kr_runtime *rt, const char *dir, kr_err *err);

KR_API const kr_config *kr_runtime_config(const kr_runtime *rt);
KR_API kr_registry *kr_runtime_registry(kr_runtime *rt);
KR_API const kr_host *kr_runtime_host(const kr_runtime *rt);
/* Active backend: CUDA when configured and available, else CPU. */
KR_API kr_backend *kr_runtime_backend(kr_runtime *rt);
KR_API kr_backend *kr_runtime_cpu_backend(kr_runtime *rt);
/* Why CUDA is not active ("" when it is, or when backend=cpu). */
KR_API const char *kr_runtime_cuda_status(const kr_runtime *rt);

KR_API size_t kr_runtime_plugin_count(const kr_runtime *rt);
KR_API bool kr_runtime_plugin_at(const kr_runtime *rt, size_t i, kr_plugin_info *out);
KR_API size_t kr_runtime_plugin_failure_count(const kr_runtime *rt);
KR_API bool kr_runtime_plugin_failure_at(const kr_runtime *rt, size_t i, kr_plugin_failure *out);
/* Directories refused or unreadable during scanning, with reasons (same record type; path = dir). */
KR_API size_t kr_runtime_dir_failure_count(const kr_runtime *rt);
KR_API bool kr_runtime_dir_failure_at(const kr_runtime *rt, size_t i, kr_plugin_failure *out);

/* Dispatch args->op (see kr_registry_dispatch) on the active backend and run
 * it on stream s (of the backend chosen; NULL = default). */
KR_API kr_status kr_runtime_run_op(kr_runtime *rt, const kr_kernel_args *args, kr_stream *s, kr_err *err);
/* Run a registered pipeline by name; returns its exit status, or -1 when not found. */
KR_API int kr_runtime_run_pipeline(kr_runtime *rt, const char *name, int argc, char **argv);

#ifdef __cplusplus
}
#endif
#endif
