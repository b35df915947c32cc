/* Internal interface between the core and its backends. Not installed. */
#ifndef KERNRUN_BACKEND_INTERNAL_H
#define KERNRUN_BACKEND_INTERNAL_H

#include "kernrun/backend.h"
#include "kernrun/config.h"

/* CPU backend (backend_cpu.c). */
kr_status kr__cpu_backend_create(kr_backend **out, kr_err *err);

/* CUDA backend (core/src/cuda/). Without CUDA support compiled in, both
 * return KR_ERR_NO_DEVICE with "built without CUDA". */
kr_status kr__cuda_backend_create(int device, kr_backend **out, kr_err *err);
kr_status kr__cuda_device_count(int *n, kr_err *err);

/* Settings the CUDA backend reads at creation (cache_dir etc.); set by the
 * runtime before kr_backend_create, NULL = defaults. Not thread-safe with
 * concurrent backend creation. */
typedef struct kr__backend_opts {
    const kr_config *config; /* may be NULL */
} kr__backend_opts;

kr_status kr__cuda_backend_create_opts(int device, const kr__backend_opts *opts, kr_backend **out, kr_err *err);

#endif
