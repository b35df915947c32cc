/* CUDA backend: the Driver API loaded at run time with dlopen("libcuda.so.1"),
 * NVRTC JIT (jit.c) for kernels, cuRAND loaded on first use.
 *
 * Fault model: an error that leaves the context unusable (illegal address,
 * launch failure, ...) marks this backend dead; every later call returns
 * KR_ERR_DEVICE_LOST with the original reason, and nothing trusts a later
 * "success" from the driver. */
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda.h>

#include "../backend_internal.h"
#include "kernrun/config.h"
#include "kernrun/checked.h"
#include "kernrun/jit.h"
#include "kernrun/log.h"

#define KR__DOM "cuda"

/* ---- the Driver API table -------------------------------------------------
 * Field names and types come from cuda.h, macros included, so `cuMemAlloc`
 * becomes the field cuMemAlloc_v2 of type `&cuMemAlloc_v2`, and dlsym looks
 * up exactly the versioned symbol the header means. */
#define KR__CU_FUNCS(X)          \
    X(cuInit)                    \
    X(cuDriverGetVersion)        \
    X(cuDeviceGetCount)          \
    X(cuDeviceGet)               \
    X(cuDeviceGetName)           \
    X(cuDeviceGetAttribute)      \
    X(cuDeviceTotalMem)          \
    X(cuDevicePrimaryCtxRetain)  \
    X(cuDevicePrimaryCtxRelease) \
    X(cuCtxSetCurrent)           \
    X(cuCtxGetCurrent)           \
    X(cuCtxSynchronize)          \
    X(cuMemGetInfo)              \
    X(cuMemAlloc)                \
    X(cuMemFree)                 \
    X(cuMemAllocHost)            \
    X(cuMemFreeHost)             \
    X(cuMemcpyHtoD)              \
    X(cuMemcpyDtoH)              \
    X(cuMemcpyDtoD)              \
    X(cuMemcpyHtoDAsync)         \
    X(cuMemcpyDtoHAsync)         \
    X(cuMemcpyDtoDAsync)         \
    X(cuMemsetD8Async)           \
    X(cuModuleLoadData)          \
    X(cuModuleUnload)            \
    X(cuModuleGetFunction)       \
    X(cuFuncSetAttribute)        \
    X(cuLaunchKernel)            \
    X(cuStreamCreate)            \
    X(cuStreamDestroy)           \
    X(cuStreamSynchronize)       \
    X(cuEventCreate)             \
    X(cuEventRecord)             \
    X(cuStreamWaitEvent)         \
    X(cuEventSynchronize)        \
    X(cuEventElapsedTime)        \
    X(cuEventDestroy)            \
    X(cuStreamBeginCapture)      \
    X(cuStreamEndCapture)        \
    X(cuGraphInstantiate)        \
    X(cuGraphLaunch)             \
    X(cuGraphExecDestroy)        \
    X(cuGraphDestroy)            \
    X(cuGetErrorString)          \
    X(cuGetErrorName)

typedef struct kr__cu_api {
#define KR__CU_FIELD(fn) __typeof__(&fn) fn;
    KR__CU_FUNCS(KR__CU_FIELD)
#undef KR__CU_FIELD
} kr__cu_api;

#define KR__STR(x) #x
#define KR__XSTR(x) KR__STR(x)

/* Loaded once per process; never unloaded (the driver is process-wide). */
static struct {
    pthread_once_t once;
    kr_status status;     /* result of loading + cuInit */
    char reason[512];     /* why CUDA is unavailable, when status != OK */
    void *lib;
    kr__cu_api api;
    int driver_version;
    /* optional entry points (NULL when the driver lacks them) */
    __typeof__(&cuLaunchKernelEx) launch_ex; /* programmatic dependent launch (KR_LAUNCH_PDL) */
} kr__drv = {.once = PTHREAD_ONCE_INIT};

static const char *kr__cu_errstr(const kr__cu_api *cu, CUresult r)
{
    const char *s = NULL;
    if (cu->cuGetErrorString && cu->cuGetErrorString(r, &s) == CUDA_SUCCESS && s)
        return s;
    return "unknown CUDA error";
}

static const char *kr__cu_errname(const kr__cu_api *cu, CUresult r)
{
    const char *s = NULL;
    if (cu->cuGetErrorName && cu->cuGetErrorName(r, &s) == CUDA_SUCCESS && s)
        return s;
    return "CUDA_ERROR_?";
}

static void kr__drv_load(void)
{
    kr__drv.status = KR_ERR_NO_DEVICE;
    kr__drv.lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!kr__drv.lib) {
        const char *de = dlerror();
        snprintf(kr__drv.reason, sizeof kr__drv.reason, "no CUDA driver (libcuda.so.1: %s)",
                 de ? de : "not found");
        return;
    }
#define KR__CU_SYM(fn)                                                                     \
    {                                                                                      \
        void *p = dlsym(kr__drv.lib, KR__XSTR(fn));                                        \
        if (!p) {                                                                          \
            snprintf(kr__drv.reason, sizeof kr__drv.reason,                                \
                     "CUDA driver too old: libcuda.so.1 lacks %s (update the NVIDIA driver)", \
                     KR__XSTR(fn));                                                        \
            goto err_close;                                                                \
        }                                                                                  \
        memcpy(&kr__drv.api.fn, &p, sizeof p);                                             \
    }
    KR__CU_FUNCS(KR__CU_SYM)
#undef KR__CU_SYM
    CUresult r = kr__drv.api.cuInit(0);
    if (r != CUDA_SUCCESS) {
        snprintf(kr__drv.reason, sizeof kr__drv.reason, "cuInit failed: %s (%s)",
                 kr__cu_errstr(&kr__drv.api, r), kr__cu_errname(&kr__drv.api, r));
        goto err_close;
    }
    if (kr__drv.api.cuDriverGetVersion(&kr__drv.driver_version) != CUDA_SUCCESS)
        kr__drv.driver_version = 0;
    {
        void *p = dlsym(kr__drv.lib, KR__XSTR(cuLaunchKernelEx));
        if (p)
            memcpy(&kr__drv.launch_ex, &p, sizeof p);
    }
    kr__drv.status = KR_OK;
    return;

err_close:
    dlclose(kr__drv.lib);
    kr__drv.lib = NULL;
    memset(&kr__drv.api, 0, sizeof kr__drv.api);
}

static kr_status kr__drv_get(const kr__cu_api **out, kr_err *err)
{
    pthread_once(&kr__drv.once, kr__drv_load);
    if (kr__drv.status != KR_OK)
        return kr_err_set(err, kr__drv.status, "%s", kr__drv.reason);
    *out = &kr__drv.api;
    return KR_OK;
}

kr_status kr__cuda_device_count(int *n, kr_err *err)
{
    const kr__cu_api *cu;
    *n = 0;
    kr_status st = kr__drv_get(&cu, err);
    if (st != KR_OK)
        return st;
    int c = 0;
    CUresult r = cu->cuDeviceGetCount(&c);
    if (r != CUDA_SUCCESS)
        return kr_err_set(err, KR_ERR_NO_DEVICE, "cuDeviceGetCount failed: %s", kr__cu_errstr(cu, r));
    if (c <= 0)
        return kr_err_set(err, KR_ERR_NO_DEVICE, "CUDA driver present but no CUDA devices");
    *n = c;
    return KR_OK;
}

/* ---- backend state ----------------------------------------------------------- */

/* One JIT-compiled module (cubin loaded into the context). */
typedef struct kr__module {
    uint8_t key[32];     /* JIT cache key of the image */
    CUmodule mod;
} kr__module;

/* get_function results, keyed by the caller's static kr_kernel_source. */
typedef struct kr__func {
    const kr_kernel_source *src;  /* identity of the plugin's static record */
    char *entry;                  /* copy of src->entry at lookup time */
    CUfunction fn;
    size_t dyn_smem;              /* dynamic shared bytes opted in (0: the default 48 KiB) */
} kr__func;

typedef struct kr__curand kr__curand;

/* JIT settings taken from the config at creation. */
typedef struct kr__cuda_opts {
    const char *cache_dir;  /* NULL: XDG default */
    bool no_cache;          /* compile in memory only */
} kr__cuda_opts;

typedef struct kr__cuda {
    kr_backend be;           /* public part; be.impl points back here */
    const kr__cu_api *cu;    /* process-wide driver table */
    CUdevice dev;
    CUcontext ctx;           /* retained primary context */
    kr_device_info info;
    int arch;                /* cc_major*10 + cc_minor */
    kr__cuda_opts opts;      /* strings copied */
    bool pdl;                /* KR_LAUNCH_PDL honoured: cuLaunchKernelEx present, sm_90+, no KERNRUN_NO_PDL=1 */
    char *cache_dir;         /* owned copy of opts.cache_dir */

    pthread_mutex_t dead_lock; /* guards dead + dead_reason only (taken inside `lock` too) */
    bool dead;               /* sticky fault seen */
    char dead_reason[512];

    pthread_mutex_t lock;    /* guards everything below */
    kr_jit *jit;             /* created on first get_function */
    kr_status jit_status;    /* KR_OK, or why the JIT is unavailable (sticky) */
    char jit_reason[KR_ERR_MSG_MAX];
    kr__module *mods;        /* (n_mods,) */
    size_t n_mods, cap_mods;
    kr__func *funcs;         /* (n_funcs,) */
    size_t n_funcs, cap_funcs;
    kr__curand *rng;         /* lazily loaded cuRAND */
} kr__cuda;

static kr__cuda *kr__cb(kr_backend *be) { return (kr__cuda *)be->impl; }

/* Errors after which the context cannot be trusted again. */
static bool kr__cu_sticky(CUresult r)
{
    switch (r) {
    case CUDA_ERROR_ILLEGAL_ADDRESS:
    case CUDA_ERROR_LAUNCH_FAILED:
    case CUDA_ERROR_ILLEGAL_INSTRUCTION:
    case CUDA_ERROR_MISALIGNED_ADDRESS:
    case CUDA_ERROR_INVALID_ADDRESS_SPACE:
    case CUDA_ERROR_INVALID_PC:
    case CUDA_ERROR_HARDWARE_STACK_ERROR:
    case CUDA_ERROR_LAUNCH_TIMEOUT:
    case CUDA_ERROR_ECC_UNCORRECTABLE:
    case CUDA_ERROR_ASSERT:
    case CUDA_ERROR_CONTEXT_IS_DESTROYED:
        return true;
    default:
        return false;
    }
}

/* Turn a failed driver call into a status + message; marks the backend dead
 * on sticky errors. Used through KR__CU_TRY. */
static kr_status kr__cu_fail(kr__cuda *cb, CUresult r, const char *expr, const char *func, const char *file,
                             int line, kr_err *err)
{
    const kr__cu_api *cu = cb->cu;
    if (kr__cu_sticky(r)) {
        pthread_mutex_lock(&cb->dead_lock);
        if (!cb->dead) {
            cb->dead = true;
            snprintf(cb->dead_reason, sizeof cb->dead_reason, "%s: %s (%s) in %s at %s:%d", expr,
                     kr__cu_errstr(cu, r), kr__cu_errname(cu, r), func, file, line);
            KR_LOGE(KR__DOM, "device %d is unusable from now on: %s", cb->be.device, cb->dead_reason);
        }
        pthread_mutex_unlock(&cb->dead_lock);
        return kr_err_set(err, KR_ERR_DEVICE_LOST, "%s: %s (%s) in %s at %s:%d", expr, kr__cu_errstr(cu, r),
                          kr__cu_errname(cu, r), func, file, line);
    }
    kr_status st = (r == CUDA_ERROR_OUT_OF_MEMORY) ? KR_ERR_NOMEM : KR_ERR_DRIVER;
    return kr_err_set(err, st, "%s: %s (%s) in %s at %s:%d", expr, kr__cu_errstr(cu, r), kr__cu_errname(cu, r),
                      func, file, line);
}

/* Call a driver function; on failure set `st` and jump to `label`. */
#define KR__CU_TRY(cb, expr, err, label)                                                  \
    do {                                                                                   \
        CUresult kr__r = (expr);                                                           \
        if (kr__r != CUDA_SUCCESS) {                                                       \
            st = kr__cu_fail((cb), kr__r, #expr, __func__, __FILE__, __LINE__, (err));     \
            goto label;                                                                    \
        }                                                                                  \
    } while (0)

/* Entry check of every operation: dead context -> KR_ERR_DEVICE_LOST, else
 * make our context current on this thread. */
static kr_status kr__enter(kr__cuda *cb, kr_err *err)
{
    pthread_mutex_lock(&cb->dead_lock);
    bool dead = cb->dead;
    char reason[sizeof cb->dead_reason];
    if (dead)
        memcpy(reason, cb->dead_reason, sizeof reason);
    pthread_mutex_unlock(&cb->dead_lock);
    if (dead)
        return kr_err_set(err, KR_ERR_DEVICE_LOST, "CUDA device %d is unusable after an earlier fault: %s",
                          cb->be.device, reason);
    kr_status st = KR_OK;
    CUcontext cur = NULL;
    if (cb->cu->cuCtxGetCurrent(&cur) == CUDA_SUCCESS && cur == cb->ctx)
        return KR_OK;
    KR__CU_TRY(cb, cb->cu->cuCtxSetCurrent(cb->ctx), err, out);
out:
    return st;
}

#define KR__ENTER(cb, err)                          \
    do {                                            \
        kr_status kr__st = kr__enter((cb), (err));  \
        if (kr__st != KR_OK)                        \
            return kr__st;                          \
    } while (0)

static CUdeviceptr kr__dptr(const void *p) { return (CUdeviceptr)(uintptr_t)p; }
static CUstream kr__stream(kr_stream *s) { return (CUstream)(void *)s; }

/* ---- cuRAND (dlopen'ed on first use) ----------------------------------------
 * Only the few host-API functions we need, declared here by hand: the
 * toolkit's curand.h is not required to build. */
typedef int kr__curand_status;        /* curandStatus_t; 0 = success */
typedef struct kr__curand_gen *kr__curand_generator;
/* curand.h: CURAND_RNG_PSEUDO_PHILOX4_32_10 = 161. (A wrong value here was
 * rejected with CURAND_STATUS_TYPE_ERROR on an H200; checked against the
 * header below whenever the toolkit has it.) */
#define KR__CURAND_RNG_PSEUDO_PHILOX4_32_10 161
#if defined(__has_include)
#if __has_include(<curand.h>)
#include <curand.h>
_Static_assert(CURAND_RNG_PSEUDO_PHILOX4_32_10 == KR__CURAND_RNG_PSEUDO_PHILOX4_32_10,
               "cuRAND Philox generator id");
_Static_assert(CURAND_STATUS_SUCCESS == 0, "cuRAND success status");
#endif
#endif

struct kr__curand {
    void *lib;
    kr__curand_generator gen;
    kr__curand_status (*create)(kr__curand_generator *g, int type);
    kr__curand_status (*destroy)(kr__curand_generator g);
    kr__curand_status (*set_seed)(kr__curand_generator g, unsigned long long seed);
    kr__curand_status (*set_offset)(kr__curand_generator g, unsigned long long offset);
    kr__curand_status (*set_stream)(kr__curand_generator g, CUstream s);
    kr__curand_status (*uniform)(kr__curand_generator g, float *out, size_t n);
};

static void kr__curand_free(kr__curand *r)
{
    if (!r)
        return;
    if (r->gen && r->destroy)
        r->destroy(r->gen);
    if (r->lib)
        dlclose(r->lib);
    free(r);
}

static kr_status kr__curand_load(kr__cuda *cb, kr_err *err)
{
    if (cb->rng)
        return KR_OK;
    kr__curand *r = calloc(1, sizeof *r);
    if (!r)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    static const char *const names[] = {"libcurand.so", "libcurand.so.10", "/usr/local/cuda/lib64/libcurand.so"};
    for (size_t i = 0; i < sizeof names / sizeof names[0] && !r->lib; i++)
        r->lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!r->lib) {
        const char *de = dlerror();
        kr__curand_free(r);
        return kr_err_set(err, KR_ERR_NOT_FOUND,
                          "cuRAND not found (%s); install the CUDA toolkit's libcurand or add its lib64 "
                          "to LD_LIBRARY_PATH",
                          de ? de : "libcurand.so");
    }
    struct {
        const char *name;
        void *slot;
    } syms[] = {
        {"curandCreateGenerator", &r->create},
        {"curandDestroyGenerator", &r->destroy},
        {"curandSetPseudoRandomGeneratorSeed", &r->set_seed},
        {"curandSetGeneratorOffset", &r->set_offset},
        {"curandSetStream", &r->set_stream},
        {"curandGenerateUniform", &r->uniform},
    };
    for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
        void *p = dlsym(r->lib, syms[i].name);
        if (!p) {
            kr__curand_free(r);
            return kr_err_set(err, KR_ERR_NOT_FOUND, "libcurand lacks %s", syms[i].name);
        }
        memcpy(syms[i].slot, &p, sizeof p);
    }
    int cs = r->create(&r->gen, KR__CURAND_RNG_PSEUDO_PHILOX4_32_10);
    if (cs != 0) {
        r->gen = NULL;
        kr__curand_free(r);
        return kr_err_set(err, KR_ERR_DRIVER, "curandCreateGenerator(PHILOX4_32_10) failed (curandStatus %d)", cs);
    }
    cb->rng = r;
    return KR_OK;
}

/* ---- vtable implementation --------------------------------------------------- */

static void kr__cuda_destroy(kr_backend *be);

static const kr_device_info *kr__cuda_device_info(kr_backend *be) { return &kr__cb(be)->info; }

static kr_status kr__cuda_mem_info(kr_backend *be, uint64_t *free_b, uint64_t *total_b, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    size_t f = 0, t = 0;
    KR__CU_TRY(cb, cb->cu->cuMemGetInfo(&f, &t), err, out);
    if (free_b)
        *free_b = f;
    if (total_b)
        *total_b = t;
out:
    return st;
}

static kr_status kr__cuda_buffer_alloc(kr_backend *be, size_t size, kr_buffer **out, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "buffer_alloc: out is NULL");
    *out = NULL;
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    kr_buffer *b = calloc(1, sizeof *b);
    if (!b)
        return kr_err_set(err, KR_ERR_NOMEM, "out of host memory for a buffer record");
    b->backend = be;
    b->size = size;
    if (size) {
        CUdeviceptr p = 0;
        KR__CU_TRY(cb, cb->cu->cuMemAlloc(&p, size), err, err_free);
        b->ptr = (void *)(uintptr_t)p;
    }
    *out = b;
    return KR_OK;

err_free:
    free(b);
    kr_err_prefix(err, "allocating %zu bytes on CUDA device %d", size, be->device);
    return st;
}

static kr_status kr__cuda_host_alloc(kr_backend *be, size_t size, kr_buffer **out, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "host_alloc: out is NULL");
    *out = NULL;
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    kr_buffer *b = calloc(1, sizeof *b);
    if (!b)
        return kr_err_set(err, KR_ERR_NOMEM, "out of host memory for a buffer record");
    b->backend = be;
    b->size = size;
    b->flags = KR_BUFFER_HOST_ACCESSIBLE | KR_BUFFER_PINNED;
    if (size)
        KR__CU_TRY(cb, cb->cu->cuMemAllocHost(&b->ptr, size), err, err_free);
    *out = b;
    return KR_OK;

err_free:
    free(b);
    kr_err_prefix(err, "allocating %zu bytes of pinned host memory", size);
    return st;
}

static void kr__cuda_buffer_free(kr_backend *be, kr_buffer *buf)
{
    kr__cuda *cb = kr__cb(be);
    if (!buf)
        return;
    /* Freeing is attempted even on a dead context (the driver tolerates it);
     * errors are only logged: there is nobody to return them to. */
    if (buf->ptr && cb->cu->cuCtxSetCurrent(cb->ctx) == CUDA_SUCCESS) {
        CUresult r = (buf->flags & KR_BUFFER_PINNED) ? cb->cu->cuMemFreeHost(buf->ptr)
                                                     : cb->cu->cuMemFree(kr__dptr(buf->ptr));
        if (r != CUDA_SUCCESS)
            KR_LOGD(KR__DOM, "freeing a %zu-byte buffer: %s", buf->size, kr__cu_errstr(cb->cu, r));
    }
    free(buf);
}

static kr_status kr__cuda_h2d(kr_backend *be, void *dst, const void *src, size_t n, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    if (n)
        KR__CU_TRY(cb, cb->cu->cuMemcpyHtoD(kr__dptr(dst), src, n), err, out);
out:
    return st;
}

static kr_status kr__cuda_d2h(kr_backend *be, void *dst, const void *src, size_t n, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    if (n)
        KR__CU_TRY(cb, cb->cu->cuMemcpyDtoH(dst, kr__dptr(src), n), err, out);
out:
    return st;
}

static kr_status kr__cuda_d2d(kr_backend *be, void *dst, const void *src, size_t n, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    if (n)
        KR__CU_TRY(cb, cb->cu->cuMemcpyDtoD(kr__dptr(dst), kr__dptr(src), n), err, out);
out:
    return st;
}

static kr_status kr__cuda_h2d_async(kr_backend *be, void *dst, const void *src, size_t n, kr_stream *s, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    if (n)
        KR__CU_TRY(cb, cb->cu->cuMemcpyHtoDAsync(kr__dptr(dst), src, n, kr__stream(s)), err, out);
out:
    return st;
}

static kr_status kr__cuda_d2h_async(kr_backend *be, void *dst, const void *src, size_t n, kr_stream *s, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    if (n)
        KR__CU_TRY(cb, cb->cu->cuMemcpyDtoHAsync(dst, kr__dptr(src), n, kr__stream(s)), err, out);
out:
    return st;
}

static kr_status kr__cuda_d2d_async(kr_backend *be, void *dst, const void *src, size_t n, kr_stream *s, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    if (n)
        KR__CU_TRY(cb, cb->cu->cuMemcpyDtoDAsync(kr__dptr(dst), kr__dptr(src), n, kr__stream(s)), err, out);
out:
    return st;
}

static kr_status kr__cuda_memset(kr_backend *be, void *dst, int value, size_t n, kr_stream *s, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    if (n)
        KR__CU_TRY(cb, cb->cu->cuMemsetD8Async(kr__dptr(dst), (unsigned char)value, n, kr__stream(s)), err, out);
out:
    return st;
}

static kr_status kr__cuda_stream_create(kr_backend *be, kr_stream **out, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "stream_create: out is NULL");
    *out = NULL;
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    CUstream s = NULL;
    /* Blocking w.r.t. the legacy default stream: work on NULL and on created
     * streams stays ordered, which is what callers mixing the two expect. */
    KR__CU_TRY(cb, cb->cu->cuStreamCreate(&s, CU_STREAM_DEFAULT), err, out);
    *out = (kr_stream *)(void *)s;
out:
    return st;
}

static void kr__cuda_stream_destroy(kr_backend *be, kr_stream *s)
{
    kr__cuda *cb = kr__cb(be);
    if (s && cb->cu->cuCtxSetCurrent(cb->ctx) == CUDA_SUCCESS)
        cb->cu->cuStreamDestroy(kr__stream(s));
}

static kr_status kr__cuda_stream_sync(kr_backend *be, kr_stream *s, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    if (s)
        KR__CU_TRY(cb, cb->cu->cuStreamSynchronize(kr__stream(s)), err, out);
    else
        KR__CU_TRY(cb, cb->cu->cuCtxSynchronize(), err, out);
out:
    return st;
}

static kr_status kr__cuda_event_create(kr_backend *be, kr_event **out, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "event_create: out is NULL");
    *out = NULL;
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    CUevent ev = NULL;
    KR__CU_TRY(cb, cb->cu->cuEventCreate(&ev, CU_EVENT_DEFAULT), err, out);
    *out = (kr_event *)(void *)ev;
out:
    return st;
}

static kr_status kr__cuda_event_record(kr_backend *be, kr_event *ev, kr_stream *s, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    KR__CU_TRY(cb, cb->cu->cuEventRecord((CUevent)(void *)ev, kr__stream(s)), err, out);
out:
    return st;
}

static kr_status kr__cuda_stream_wait_event(kr_backend *be, kr_stream *s, kr_event *ev, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    if (!ev)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "stream_wait_event: event is NULL");
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    KR__CU_TRY(cb, cb->cu->cuStreamWaitEvent(kr__stream(s), (CUevent)(void *)ev, 0), err, out);
out:
    return st;
}

static kr_status kr__cuda_event_elapsed(kr_backend *be, kr_event *a, kr_event *b, float *ms, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    KR__CU_TRY(cb, cb->cu->cuEventSynchronize((CUevent)(void *)b), err, out);
    KR__CU_TRY(cb, cb->cu->cuEventElapsedTime(ms, (CUevent)(void *)a, (CUevent)(void *)b), err, out);
out:
    return st;
}

static void kr__cuda_event_destroy(kr_backend *be, kr_event *ev)
{
    kr__cuda *cb = kr__cb(be);
    if (ev && cb->cu->cuCtxSetCurrent(cb->ctx) == CUDA_SUCCESS)
        cb->cu->cuEventDestroy((CUevent)(void *)ev);
}

/* Create the JIT once; a failure (no NVRTC) is remembered and reported on
 * every get_function. Called with cb->lock held. */
static kr_status kr__jit_locked(kr__cuda *cb, kr_err *err)
{
    if (cb->jit)
        return KR_OK;
    if (cb->jit_status != KR_OK)
        return kr_err_set(err, cb->jit_status, "%s", cb->jit_reason);
    kr_jit_config cfg = {
        .cache_dir = cb->cache_dir,
        .no_cache = cb->opts.no_cache,
        .driver_version = cb->info.driver_version,
    };
    kr_err e;
    kr_err_clear(&e);
    kr_status st = kr_jit_create(&cfg, &cb->jit, &e);
    if (st != KR_OK) {
        cb->jit_status = st;
        snprintf(cb->jit_reason, sizeof cb->jit_reason, "%s", kr_err_msg(&e, st));
        return kr_err_set(err, st, "%s", cb->jit_reason);
    }
    cb->info.nvrtc_version = kr_jit_nvrtc_version(cb->jit);
    return KR_OK;
}

static bool kr__grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return true;
    size_t ncap = *cap ? *cap * 2 : 8, bytes;
    if (ncap < need)
        ncap = need;
    if (kr_mul_overflow_size(ncap, elem, &bytes))
        return false;
    void *p = realloc(*arr, bytes);
    if (!p)
        return false;
    *arr = p;
    *cap = ncap;
    return true;
}

/* JIT (through the cache) and load src, then fetch src->entry. Results are
 * remembered per kr_kernel_source record (plugins keep them static const),
 * so later calls are a lookup. */
static kr_status kr__cuda_get_function(kr_backend *be, const kr_kernel_source *src, kr_function **fn, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    if (!src || !fn || !src->name || !src->entry || !src->code)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "get_function: kernel source, name, code and entry are required");
    *fn = NULL;
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    kr_jit_image img = {0};
    pthread_mutex_lock(&cb->lock);
    for (size_t i = 0; i < cb->n_funcs; i++) {
        if (cb->funcs[i].src == src && strcmp(cb->funcs[i].entry, src->entry) == 0) {
            *fn = (kr_function *)(void *)cb->funcs[i].fn;
            goto unlock;
        }
    }
    st = kr__jit_locked(cb, err);
    if (st != KR_OK)
        goto unlock;
    kr_jit_source js = {
        .name = src->name,
        .src = src->code,
        .len = src->len,
        .options = src->options,
        .n_options = src->n_options > 0 ? (size_t)src->n_options : 0,
    };
    if (src->n_options > 0 && !src->options) {
        st = kr_err_set(err, KR_ERR_INVALID_ARG, "kernel '%s': n_options %d but options is NULL", src->name,
                        src->n_options);
        goto unlock;
    }
    st = kr_jit_compile(cb->jit, &js, cb->arch, KR_JIT_CUBIN, &img, err);
    if (st != KR_OK)
        goto unlock;
    CUmodule mod = NULL;
    for (size_t i = 0; i < cb->n_mods; i++)
        if (memcmp(cb->mods[i].key, img.key, 32) == 0)
            mod = cb->mods[i].mod;
    if (!mod) {
        if (!kr__grow((void **)&cb->mods, &cb->cap_mods, cb->n_mods + 1, sizeof *cb->mods)) {
            st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
            goto unlock;
        }
        KR__CU_TRY(cb, cb->cu->cuModuleLoadData(&mod, img.data), err, unlock);
        memcpy(cb->mods[cb->n_mods].key, img.key, 32);
        cb->mods[cb->n_mods].mod = mod;
        cb->n_mods++;
    }
    CUfunction f = NULL;
    KR__CU_TRY(cb, cb->cu->cuModuleGetFunction(&f, mod, src->entry), err, unlock);
    if (!kr__grow((void **)&cb->funcs, &cb->cap_funcs, cb->n_funcs + 1, sizeof *cb->funcs)) {
        st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
        goto unlock;
    }
    char *entry = strdup(src->entry);
    if (!entry) {
        st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
        goto unlock;
    }
    cb->funcs[cb->n_funcs++] = (kr__func){.src = src, .entry = entry, .fn = f};
    *fn = (kr_function *)(void *)f;
unlock:
    pthread_mutex_unlock(&cb->lock);
    kr_jit_image_free(&img);
    if (st != KR_OK)
        kr_err_prefix(err, "kernel %s:%s on CUDA device %d", src->name, src->entry, be->device);
    return st;
}

/* Dynamic shared memory above 48 KiB must be opted into per function
 * (CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES); done once per function
 * and size, before the first launch that needs it (also inside a graph capture:
 * setting a function attribute is not a stream operation). */
#define KR__SMEM_DEFAULT ((size_t)48 * 1024)

static kr_status kr__smem_optin(kr__cuda *cb, kr_function *fn, size_t shmem, kr_err *err)
{
    kr_status st = KR_OK;
    pthread_mutex_lock(&cb->lock);
    kr__func *f = NULL;
    for (size_t i = 0; i < cb->n_funcs; i++)
        if ((void *)cb->funcs[i].fn == (void *)fn) {
            f = &cb->funcs[i];
            break;
        }
    if (f && f->dyn_smem >= shmem)
        goto unlock;
    CUresult r = cb->cu->cuFuncSetAttribute((CUfunction)(void *)fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                            (int)shmem);
    if (r != CUDA_SUCCESS) {
        const char *name = NULL;
        if (cb->cu->cuGetErrorName(r, &name) != CUDA_SUCCESS)
            name = NULL;
        st = kr_err_set(err, KR_ERR_RANGE, "launch%s%s: %zu bytes of dynamic shared memory refused (%s; the kernel's "
                        "static shared memory counts too)", f ? " of " : "", f ? f->entry : "", shmem,
                        name ? name : "unknown CUDA error");
        goto unlock;
    }
    if (f)
        f->dyn_smem = shmem;
unlock:
    pthread_mutex_unlock(&cb->lock);
    return st;
}

static kr_status kr__cuda_launch_ex(kr_backend *be, kr_function *fn, const uint32_t grid[3],
                                    const uint32_t block[3], size_t shmem, kr_stream *s, void **args, uint32_t flags,
                                    kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    if (!fn || !grid || !block)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "launch: function, grid and block are required");
    uint64_t threads = (uint64_t)block[0] * block[1] * block[2];
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || threads == 0)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "launch: empty grid (%u,%u,%u) or block (%u,%u,%u)", grid[0],
                          grid[1], grid[2], block[0], block[1], block[2]);
    if (grid[0] > 0x7fffffffu || grid[1] > 65535u || grid[2] > 65535u)
        return kr_err_set(err, KR_ERR_RANGE, "launch: grid (%u,%u,%u) exceeds (2^31-1, 65535, 65535)", grid[0],
                          grid[1], grid[2]);
    if (threads > (uint64_t)cb->info.max_threads_per_block || block[2] > 64)
        return kr_err_set(err, KR_ERR_RANGE, "launch: block (%u,%u,%u) exceeds %d threads", block[0], block[1],
                          block[2], cb->info.max_threads_per_block);
    if (shmem > cb->info.max_shared_per_block)
        return kr_err_set(err, KR_ERR_RANGE, "launch: %zu bytes of shared memory exceed %zu", shmem,
                          cb->info.max_shared_per_block);
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    if (shmem > KR__SMEM_DEFAULT && (st = kr__smem_optin(cb, fn, shmem, err)) != KR_OK)
        return st;
    if ((flags & KR_LAUNCH_PDL) && cb->pdl) {
        /* programmatic dependent launch: may start before the previous
         * kernel on s completes; the kernel waits in griddepcontrol.wait */
        CUlaunchAttribute attr;
        memset(&attr, 0, sizeof attr);
        attr.id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        CUlaunchConfig cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.gridDimX = grid[0];
        cfg.gridDimY = grid[1];
        cfg.gridDimZ = grid[2];
        cfg.blockDimX = block[0];
        cfg.blockDimY = block[1];
        cfg.blockDimZ = block[2];
        cfg.sharedMemBytes = (unsigned)shmem;
        cfg.hStream = kr__stream(s);
        cfg.attrs = &attr;
        cfg.numAttrs = 1;
        KR__CU_TRY(cb, kr__drv.launch_ex(&cfg, (CUfunction)(void *)fn, args, NULL), err, out);
        return KR_OK;
    }
    KR__CU_TRY(cb,
               cb->cu->cuLaunchKernel((CUfunction)(void *)fn, grid[0], grid[1], grid[2], block[0], block[1], block[2],
                                      (unsigned)shmem, kr__stream(s), args, NULL),
               err, out);
out:
    return st;
}

static kr_status kr__cuda_launch(kr_backend *be, kr_function *fn, const uint32_t grid[3], const uint32_t block[3],
                                 size_t shmem, kr_stream *s, void **args, kr_err *err)
{
    return kr__cuda_launch_ex(be, fn, grid, block, shmem, s, args, 0, err);
}

static kr_status kr__cuda_graph_begin(kr_backend *be, kr_stream *s, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    if (!s)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "graph capture needs a created stream, not the default stream");
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    KR__CU_TRY(cb, cb->cu->cuStreamBeginCapture(kr__stream(s), CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), err, out);
out:
    return st;
}

static kr_status kr__cuda_graph_end(kr_backend *be, kr_stream *s, kr_graph **out, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    if (!s || !out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "graph_end: stream and out are required");
    *out = NULL;
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    CUgraph g = NULL;
    CUgraphExec ex = NULL;
    KR__CU_TRY(cb, cb->cu->cuStreamEndCapture(kr__stream(s), &g), err, done);
    KR__CU_TRY(cb, cb->cu->cuGraphInstantiate(&ex, g, 0), err, err_graph);
    *out = (kr_graph *)(void *)ex;
err_graph:
    cb->cu->cuGraphDestroy(g);
done:
    return st;
}

static kr_status kr__cuda_graph_launch(kr_backend *be, kr_graph *g, kr_stream *s, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    if (!g)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "graph_launch: graph is NULL");
    KR__ENTER(cb, err);
    kr_status st = KR_OK;
    KR__CU_TRY(cb, cb->cu->cuGraphLaunch((CUgraphExec)(void *)g, kr__stream(s)), err, out);
out:
    return st;
}

static void kr__cuda_graph_destroy(kr_backend *be, kr_graph *g)
{
    kr__cuda *cb = kr__cb(be);
    if (g && cb->cu->cuCtxSetCurrent(cb->ctx) == CUDA_SUCCESS)
        cb->cu->cuGraphExecDestroy((CUgraphExec)(void *)g);
}

/* cuRAND's uniform floats lie in (0, 1]; the generator is Philox4x32-10,
 * seeded by `seed`, starting at `offset`. */
static kr_status kr__cuda_rng_uniform(kr_backend *be, float *dst, size_t n, uint64_t seed, uint64_t offset,
                                      kr_stream *s, kr_err *err)
{
    kr__cuda *cb = kr__cb(be);
    KR__ENTER(cb, err);
    if (n == 0)
        return KR_OK;
    pthread_mutex_lock(&cb->lock);
    kr_status st = kr__curand_load(cb, err);
    if (st == KR_OK) {
        kr__curand *r = cb->rng;
        int cs = r->set_stream(r->gen, kr__stream(s));
        if (cs == 0)
            cs = r->set_seed(r->gen, seed);
        if (cs == 0)
            cs = r->set_offset(r->gen, offset);
        if (cs == 0)
            cs = r->uniform(r->gen, dst, n);
        if (cs != 0)
            st = kr_err_set(err, KR_ERR_DRIVER, "cuRAND uniform generation of %zu floats failed (status %d)", n, cs);
    }
    pthread_mutex_unlock(&cb->lock);
    return st;
}

static const kr_backend_i kr__cuda_iface = {
    .struct_size = sizeof(kr_backend_i),
    .name = "cuda",
    .destroy = kr__cuda_destroy,
    .device_info = kr__cuda_device_info,
    .mem_info = kr__cuda_mem_info,
    .buffer_alloc = kr__cuda_buffer_alloc,
    .buffer_free = kr__cuda_buffer_free,
    .host_alloc = kr__cuda_host_alloc,
    .memcpy_h2d = kr__cuda_h2d,
    .memcpy_d2h = kr__cuda_d2h,
    .memcpy_d2d = kr__cuda_d2d,
    .memcpy_h2d_async = kr__cuda_h2d_async,
    .memcpy_d2h_async = kr__cuda_d2h_async,
    .memcpy_d2d_async = kr__cuda_d2d_async,
    .memset = kr__cuda_memset,
    .stream_create = kr__cuda_stream_create,
    .stream_destroy = kr__cuda_stream_destroy,
    .stream_sync = kr__cuda_stream_sync,
    .event_create = kr__cuda_event_create,
    .event_record = kr__cuda_event_record,
    .event_elapsed = kr__cuda_event_elapsed,
    .event_destroy = kr__cuda_event_destroy,
    .get_function = kr__cuda_get_function,
    .launch = kr__cuda_launch,
    .graph_begin = kr__cuda_graph_begin,
    .graph_end = kr__cuda_graph_end,
    .graph_launch = kr__cuda_graph_launch,
    .graph_destroy = kr__cuda_graph_destroy,
    .rng_uniform = kr__cuda_rng_uniform,
    .launch_ex = kr__cuda_launch_ex,
    .stream_wait_event = kr__cuda_stream_wait_event,
};

/* ---- create / destroy -------------------------------------------------------- */

static void kr__cuda_destroy(kr_backend *be)
{
    if (!be)
        return;
    kr__cuda *cb = kr__cb(be);
    if (cb->ctx && cb->cu->cuCtxSetCurrent(cb->ctx) == CUDA_SUCCESS) {
        if (!cb->dead)
            cb->cu->cuCtxSynchronize();
        for (size_t i = 0; i < cb->n_mods; i++)
            cb->cu->cuModuleUnload(cb->mods[i].mod);
    }
    kr__curand_free(cb->rng);
    for (size_t i = 0; i < cb->n_funcs; i++)
        free(cb->funcs[i].entry);
    free(cb->funcs);
    free(cb->mods);
    kr_jit_free(cb->jit);
    if (cb->ctx) {
        cb->cu->cuCtxSetCurrent(NULL);
        cb->cu->cuDevicePrimaryCtxRelease(cb->dev);
    }
    free(cb->cache_dir);
    pthread_mutex_destroy(&cb->lock);
    pthread_mutex_destroy(&cb->dead_lock);
    free(cb);
}

static int kr__attr(kr__cuda *cb, CUdevice_attribute a)
{
    int v = 0;
    if (cb->cu->cuDeviceGetAttribute(&v, a, cb->dev) != CUDA_SUCCESS)
        return 0;
    return v;
}

kr_status kr__cuda_backend_create(int device, kr_backend **out, kr_err *err)
{
    return kr__cuda_backend_create_opts(device, NULL, out, err);
}

/* [runtime] cache_dir from the config, if any; "none" disables the cache. */
static kr_status kr__opts_from_config(const kr__backend_opts *bo, kr__cuda_opts *o, char *buf, size_t cap,
                                      kr_err *err)
{
    memset(o, 0, sizeof *o);
    if (!bo || !bo->config || !kr_config_get(bo->config, "runtime", "cache_dir"))
        return KR_OK;
    kr_status st = kr_config_get_path(bo->config, "runtime", "cache_dir", buf, cap);
    if (st != KR_OK)
        return kr_err_set(err, st, "[runtime] cache_dir: path too long or invalid");
    if (strcmp(buf, "none") == 0)
        o->no_cache = true;
    else if (buf[0])
        o->cache_dir = buf;
    return KR_OK;
}

kr_status kr__cuda_backend_create_opts(int device, const kr__backend_opts *bopts, kr_backend **out, kr_err *err)
{
    char cache_buf[4096];
    kr__cuda_opts opts_v;
    const kr__cuda_opts *opts = &opts_v;
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr__cuda_backend_create: out is NULL");
    *out = NULL;
    kr_status st = kr__opts_from_config(bopts, &opts_v, cache_buf, sizeof cache_buf, err);
    if (st != KR_OK)
        return st;
    int n = 0;
    st = kr__cuda_device_count(&n, err);
    if (st != KR_OK)
        return st;
    if (device < 0 || device >= n)
        return kr_err_set(err, KR_ERR_RANGE, "CUDA device %d requested but %d device(s) present", device, n);
    kr__cuda *cb = calloc(1, sizeof *cb);
    if (!cb)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory for the CUDA backend");
    if (pthread_mutex_init(&cb->lock, NULL) != 0) {
        free(cb);
        return kr_err_set(err, KR_ERR_INTERNAL, "pthread_mutex_init failed");
    }
    if (pthread_mutex_init(&cb->dead_lock, NULL) != 0) {
        pthread_mutex_destroy(&cb->lock);
        free(cb);
        return kr_err_set(err, KR_ERR_INTERNAL, "pthread_mutex_init failed");
    }
    cb->cu = &kr__drv.api;
    cb->be.iface = &kr__cuda_iface;
    cb->be.kind = KR_BACKEND_CUDA;
    cb->be.device = device;
    cb->be.impl = cb;
    cb->opts = *opts;
    if (opts->cache_dir && opts->cache_dir[0]) {
        cb->cache_dir = strdup(opts->cache_dir);
        if (!cb->cache_dir) {
            st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
            goto err_destroy;
        }
    }
    cb->opts.cache_dir = cb->cache_dir;
    KR__CU_TRY(cb, cb->cu->cuDeviceGet(&cb->dev, device), err, err_destroy);
    KR__CU_TRY(cb, cb->cu->cuDevicePrimaryCtxRetain(&cb->ctx, cb->dev), err, err_destroy);
    KR__CU_TRY(cb, cb->cu->cuCtxSetCurrent(cb->ctx), err, err_destroy);

    kr_device_info *in = &cb->info;
    in->struct_size = sizeof *in;
    in->kind = KR_BACKEND_CUDA;
    in->index = device;
    KR__CU_TRY(cb, cb->cu->cuDeviceGetName(in->name, (int)sizeof in->name, cb->dev), err, err_destroy);
    in->name[sizeof in->name - 1] = '\0';
    size_t total = 0, free_b = 0;
    KR__CU_TRY(cb, cb->cu->cuDeviceTotalMem(&total, cb->dev), err, err_destroy);
    KR__CU_TRY(cb, cb->cu->cuMemGetInfo(&free_b, &total), err, err_destroy);
    in->total_memory = total;
    in->free_memory = free_b;
    in->sm_count = kr__attr(cb, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
    in->cc_major = kr__attr(cb, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
    in->cc_minor = kr__attr(cb, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
    in->driver_version = kr__drv.driver_version;
    in->warp_size = kr__attr(cb, CU_DEVICE_ATTRIBUTE_WARP_SIZE);
    in->max_threads_per_block = kr__attr(cb, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK);
    int shm = kr__attr(cb, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
    if (shm <= 0)
        shm = kr__attr(cb, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK);
    in->max_shared_per_block = shm > 0 ? (size_t)shm : 0;
    in->l2_cache_bytes = kr__attr(cb, CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE);
    in->memory_bus_width = kr__attr(cb, CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH);
    in->memory_clock_khz = kr__attr(cb, CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE);
    cb->arch = in->cc_major * 10 + in->cc_minor;
    if (in->max_threads_per_block <= 0)
        in->max_threads_per_block = 1024;
    {
        const char *np = getenv("KERNRUN_NO_PDL");
        cb->pdl = kr__drv.launch_ex != NULL && in->cc_major >= 9 && !(np && strcmp(np, "1") == 0);
    }
    KR_LOGD(KR__DOM, "device %d: %s, sm_%d, %d SMs, %.1f GiB, driver %d, PDL %s", device, in->name, cb->arch,
            in->sm_count, (double)total / (1024.0 * 1024.0 * 1024.0), in->driver_version, cb->pdl ? "on" : "off");
    *out = &cb->be;
    return KR_OK;

err_destroy:
    kr__cuda_destroy(&cb->be);
    kr_err_prefix(err, "opening CUDA device %d", device);
    return st;
}
