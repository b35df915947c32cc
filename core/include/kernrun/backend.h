/* Backends (executors): memory, copies, streams, events, kernel launch and
 * optional graph capture, behind one vtable per backend kind.
 *
 * A kr_backend is created by the core (kr_backend_create) and used by
 * plugins through the static inline wrappers below, which go through the
 * vtable; plugins never link libkernrun. Optional slots may be NULL: the
 * wrappers then return KR_ERR_UNSUPPORTED (or fall back, where noted).
 *
 * Addresses: a "device address" is a void * in the backend's address space
 * (host pointer on CPU; CUdeviceptr cast to void * on CUDA). A NULL
 * kr_stream * means the backend's default stream.
 */
#ifndef KERNRUN_BACKEND_H
#define KERNRUN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/export.h"
#include "kernrun/status.h"
#include "kernrun/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kr_backend_kind {
    KR_BACKEND_CPU = 0,
    KR_BACKEND_CUDA = 1,
    KR_BACKEND_KIND_COUNT = 2,
} kr_backend_kind;

typedef struct kr_backend kr_backend;
typedef struct kr_backend_i kr_backend_i;
typedef struct kr_stream kr_stream;     /* opaque: CUstream on CUDA */
typedef struct kr_event kr_event;       /* opaque: CUevent on CUDA */
typedef struct kr_graph kr_graph;       /* opaque: backend-owned executable graph */
typedef struct kr_function kr_function; /* opaque: CUfunction on CUDA; owned by the backend */

/* A CUDA C++ source to JIT-compile (NVRTC) and the kernel to fetch from it.
 * Plugins embed `code` at build time; KERNRUN_KERNEL_DIR may override it. */
typedef struct kr_kernel_source {
    const char *name;                /* file name, "vecadd.cu": cache key part, override lookup */
    const char *code;                /* source text (need not be NUL-terminated) */
    size_t len;                      /* bytes of code */
    const char *entry;               /* extern "C" kernel symbol to fetch */
    const char *const *options;      /* (n_options,) extra NVRTC options, e.g. "-DBLOCK=256"; may be NULL */
    int n_options;                   /* count of options */
} kr_kernel_source;

/* Device description, owned by the backend, filled at creation. Grows only
 * at the end; check struct_size before reading fields added later. */
typedef struct kr_device_info {
    uint32_t struct_size;           /* sizeof(kr_device_info) of the core that filled it */
    kr_backend_kind kind;           /* backend kind */
    int index;                      /* device ordinal within the kind (0 for CPU) */
    char name[256];                 /* "NVIDIA H100 80GB HBM3", or the CPU model */
    uint64_t total_memory;          /* bytes of device memory (host RAM for CPU) */
    uint64_t free_memory;           /* bytes free at creation; see kr_backend_mem_info for now */
    int sm_count;                   /* streaming multiprocessors (CPU: online cores) */
    int cc_major;                   /* compute capability major (9 on H100); 0 on CPU */
    int cc_minor;                   /* compute capability minor; 0 on CPU */
    int driver_version;             /* cuDriverGetVersion (13000 = 13.0); 0 on CPU */
    int nvrtc_version;              /* major*1000 + minor*10, 0 when NVRTC is unavailable */
    int warp_size;                  /* 32 on NVIDIA; 1 on CPU */
    int max_threads_per_block;      /* launch limit */
    size_t max_shared_per_block;    /* bytes of shared memory per block (opt-in maximum) */
    int l2_cache_bytes;             /* L2 size in bytes; 0 if unknown */
    int memory_bus_width;           /* bits; 0 if unknown */
    int memory_clock_khz;           /* kHz; 0 if unknown */
} kr_device_info;

/* Flags of a kr_buffer. */
enum {
    KR_BUFFER_HOST_ACCESSIBLE = 1u << 0, /* ptr may be dereferenced by the CPU (host, pinned/managed) */
    KR_BUFFER_PINNED = 1u << 1,          /* page-locked host memory (fast async copies) */
};

/* A block of backend memory. Allocated and freed through the backend. */
struct kr_buffer {
    kr_backend *backend;  /* owner */
    void *ptr;            /* base device address */
    size_t size;          /* bytes */
    uint32_t flags;       /* KR_BUFFER_* */
    void *impl;           /* backend-private */
};

/* The vtable. Grows only at the end; struct_size tells how many slots the
 * implementation knows (the wrappers check it). Every slot receives the
 * backend first; fallible slots take a kr_err * (may be NULL). */
struct kr_backend_i {
    uint32_t struct_size;  /* sizeof(kr_backend_i) the implementation was built with */
    const char *name;      /* "cpu", "cuda" */

    void (*destroy)(kr_backend *be);
    const kr_device_info *(*device_info)(kr_backend *be);
    /* (optional) current free/total memory in bytes */
    kr_status (*mem_info)(kr_backend *be, uint64_t *free_bytes, uint64_t *total_bytes, kr_err *err);

    /* Device memory; size 0 gives a valid buffer with ptr NULL. */
    kr_status (*buffer_alloc)(kr_backend *be, size_t size, kr_buffer **out, kr_err *err);
    void (*buffer_free)(kr_backend *be, kr_buffer *buf);
    /* (optional) page-locked host memory for staging (flags HOST_ACCESSIBLE|PINNED) */
    kr_status (*host_alloc)(kr_backend *be, size_t size, kr_buffer **out, kr_err *err);

    /* Synchronous copies (complete on return). */
    kr_status (*memcpy_h2d)(kr_backend *be, void *dst, const void *src, size_t n, kr_err *err);
    kr_status (*memcpy_d2h)(kr_backend *be, void *dst, const void *src, size_t n, kr_err *err);
    kr_status (*memcpy_d2d)(kr_backend *be, void *dst, const void *src, size_t n, kr_err *err);
    /* (optional) asynchronous copies ordered on a stream; the wrappers fall
     * back to the synchronous copy when absent. */
    kr_status (*memcpy_h2d_async)(kr_backend *be, void *dst, const void *src, size_t n, kr_stream *s, kr_err *err);
    kr_status (*memcpy_d2h_async)(kr_backend *be, void *dst, const void *src, size_t n, kr_stream *s, kr_err *err);
    kr_status (*memcpy_d2d_async)(kr_backend *be, void *dst, const void *src, size_t n, kr_stream *s, kr_err *err);
    /* Set n bytes at dst to `value` (ordered on s). */
    kr_status (*memset)(kr_backend *be, void *dst, int value, size_t n, kr_stream *s, kr_err *err);

    kr_status (*stream_create)(kr_backend *be, kr_stream **out, kr_err *err);
    void (*stream_destroy)(kr_backend *be, kr_stream *s);
    /* Wait until all work on s is done (s NULL: the whole device). */
    kr_status (*stream_sync)(kr_backend *be, kr_stream *s, kr_err *err);

    /* (optional) timing events */
    kr_status (*event_create)(kr_backend *be, kr_event **out, kr_err *err);
    kr_status (*event_record)(kr_backend *be, kr_event *ev, kr_stream *s, kr_err *err);
    /* milliseconds between two recorded events (waits for `end`) */
    kr_status (*event_elapsed)(kr_backend *be, kr_event *start, kr_event *end, float *ms, kr_err *err);
    void (*event_destroy)(kr_backend *be, kr_event *ev);

    /* (optional) JIT-compile src (via the cubin cache) and fetch src->entry.
     * The function stays valid until the backend is destroyed. */
    kr_status (*get_function)(kr_backend *be, const kr_kernel_source *src, kr_function **fn, kr_err *err);
    /* (optional) launch fn with grid x block threads; args as for cuLaunchKernel. */
    kr_status (*launch)(kr_backend *be, kr_function *fn, const uint32_t grid[3], const uint32_t block[3],
                        size_t shmem, kr_stream *s, void **args, kr_err *err);

    /* (optional) graph capture of the work submitted to s between begin and end */
    kr_status (*graph_begin)(kr_backend *be, kr_stream *s, kr_err *err);
    kr_status (*graph_end)(kr_backend *be, kr_stream *s, kr_graph **out, kr_err *err);
    kr_status (*graph_launch)(kr_backend *be, kr_graph *g, kr_stream *s, kr_err *err);
    void (*graph_destroy)(kr_backend *be, kr_graph *g);

    /* (optional) fill n floats at dst with uniform [0,1) values from a
     * counter-based generator (seed, offset); cuRAND on CUDA. */
    kr_status (*rng_uniform)(kr_backend *be, float *dst, size_t n, uint64_t seed, uint64_t offset,
                             kr_stream *s, kr_err *err);

    /* (optional) launch with KR_LAUNCH_* flags. Flags are hints: a backend
     * that cannot honour one launches normally. KR_LAUNCH_PDL only for
     * kernels that execute griddepcontrol.wait (KR_PDL_WAIT) before their
     * first global memory access (docs/KERNELS.md, PDL). */
    kr_status (*launch_ex)(kr_backend *be, kr_function *fn, const uint32_t grid[3], const uint32_t block[3],
                           size_t shmem, kr_stream *s, void **args, uint32_t flags, kr_err *err);
    /* (optional) later work on s waits until ev (recorded on another stream) has
     * happened; with graph capture this forks/joins captured streams. */
    kr_status (*stream_wait_event)(kr_backend *be, kr_stream *s, kr_event *ev, kr_err *err);
};

/* Flags of kr_backend_launch_ex. */
enum {
    KR_LAUNCH_PDL = 1u << 0, /* programmatic dependent launch (CUDA sm_90+; ignored elsewhere or with KERNRUN_NO_PDL=1) */
};

/* A backend instance. Created only by the core; fields are read-only for
 * everyone else. */
struct kr_backend {
    const kr_backend_i *iface; /* vtable */
    kr_backend_kind kind;      /* which backend */
    int device;                /* device ordinal */
    void *impl;                /* backend-private state */
};

/* ---- core API (libkernrun) ---- */

KR_API const char *kr_backend_kind_name(kr_backend_kind kind); /* "cpu", "cuda", "?" */
/* "cpu" / "cuda" (case-insensitive) -> kind; KR_ERR_INVALID_ARG otherwise. */
KR_API kr_status kr_backend_kind_parse(const char *s, kr_backend_kind *out);
/* Devices of a kind: CPU always 1; CUDA 0.. (KR_ERR_NO_DEVICE with a reason
 * when the driver or toolkit is missing; *n is then 0). */
KR_API kr_status kr_backend_count_devices(kr_backend_kind kind, int *n, kr_err *err);
KR_API kr_status kr_backend_create(kr_backend_kind kind, int device_index, kr_backend **out, kr_err *err);
KR_API void kr_backend_destroy(kr_backend *be); /* NULL ok */

/* ---- inline wrappers (usable from plugins) ---- */

/* True when the implementation has the slot and it is non-NULL. */
#define KR_BACKEND_HAS(be, slot)                                                              \
    ((be) != NULL && (be)->iface != NULL &&                                                   \
     (be)->iface->struct_size >= offsetof(kr_backend_i, slot) + sizeof((be)->iface->slot) && \
     (be)->iface->slot != NULL)

static inline kr_status kr__backend_missing(kr_backend *be, const char *what, kr_err *err)
{
    if (err) {
        err->code = KR_ERR_UNSUPPORTED;
        /* no printf here: header is used by plugins without libkernrun */
        size_t i = 0;
        const char *parts[] = {be && be->iface && be->iface->name ? be->iface->name : "backend",
                               " backend: ", what, " not supported"};
        for (size_t p = 0; p < sizeof parts / sizeof parts[0]; p++)
            for (const char *c = parts[p]; *c && i + 1 < sizeof err->msg; c++)
                err->msg[i++] = *c;
        err->msg[i] = '\0';
    }
    return KR_ERR_UNSUPPORTED;
}

static inline const kr_device_info *kr_backend_device_info(kr_backend *be)
{
    return KR_BACKEND_HAS(be, device_info) ? be->iface->device_info(be) : NULL;
}
static inline kr_status kr_backend_mem_info(kr_backend *be, uint64_t *free_b, uint64_t *total_b, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, mem_info))
        return kr__backend_missing(be, "mem_info", err);
    return be->iface->mem_info(be, free_b, total_b, err);
}
static inline kr_status kr_backend_alloc(kr_backend *be, size_t size, kr_buffer **out, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, buffer_alloc))
        return kr__backend_missing(be, "buffer_alloc", err);
    return be->iface->buffer_alloc(be, size, out, err);
}
/* (optional) pinned host memory; free with kr_backend_free. */
static inline kr_status kr_backend_host_alloc(kr_backend *be, size_t size, kr_buffer **out, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, host_alloc))
        return kr__backend_missing(be, "host_alloc", err);
    return be->iface->host_alloc(be, size, out, err);
}
static inline void kr_backend_free(kr_backend *be, kr_buffer *buf)
{
    if (buf && KR_BACKEND_HAS(be, buffer_free))
        be->iface->buffer_free(be, buf);
}
static inline kr_status kr_backend_h2d(kr_backend *be, void *dst, const void *src, size_t n, kr_stream *s, kr_err *err)
{
    if (s && KR_BACKEND_HAS(be, memcpy_h2d_async))
        return be->iface->memcpy_h2d_async(be, dst, src, n, s, err);
    if (!KR_BACKEND_HAS(be, memcpy_h2d))
        return kr__backend_missing(be, "memcpy_h2d", err);
    return be->iface->memcpy_h2d(be, dst, src, n, err);
}
static inline kr_status kr_backend_d2h(kr_backend *be, void *dst, const void *src, size_t n, kr_stream *s, kr_err *err)
{
    if (s && KR_BACKEND_HAS(be, memcpy_d2h_async))
        return be->iface->memcpy_d2h_async(be, dst, src, n, s, err);
    if (!KR_BACKEND_HAS(be, memcpy_d2h))
        return kr__backend_missing(be, "memcpy_d2h", err);
    return be->iface->memcpy_d2h(be, dst, src, n, err);
}
static inline kr_status kr_backend_d2d(kr_backend *be, void *dst, const void *src, size_t n, kr_stream *s, kr_err *err)
{
    if (s && KR_BACKEND_HAS(be, memcpy_d2d_async))
        return be->iface->memcpy_d2d_async(be, dst, src, n, s, err);
    if (!KR_BACKEND_HAS(be, memcpy_d2d))
        return kr__backend_missing(be, "memcpy_d2d", err);
    return be->iface->memcpy_d2d(be, dst, src, n, err);
}
static inline kr_status kr_backend_memset(kr_backend *be, void *dst, int value, size_t n, kr_stream *s, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, memset))
        return kr__backend_missing(be, "memset", err);
    return be->iface->memset(be, dst, value, n, s, err);
}
static inline kr_status kr_backend_stream_create(kr_backend *be, kr_stream **out, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, stream_create))
        return kr__backend_missing(be, "stream_create", err);
    return be->iface->stream_create(be, out, err);
}
static inline void kr_backend_stream_destroy(kr_backend *be, kr_stream *s)
{
    if (s && KR_BACKEND_HAS(be, stream_destroy))
        be->iface->stream_destroy(be, s);
}
static inline kr_status kr_backend_sync(kr_backend *be, kr_stream *s, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, stream_sync))
        return kr__backend_missing(be, "stream_sync", err);
    return be->iface->stream_sync(be, s, err);
}
static inline kr_status kr_backend_event_create(kr_backend *be, kr_event **out, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, event_create))
        return kr__backend_missing(be, "event_create", err);
    return be->iface->event_create(be, out, err);
}
static inline kr_status kr_backend_event_record(kr_backend *be, kr_event *ev, kr_stream *s, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, event_record))
        return kr__backend_missing(be, "event_record", err);
    return be->iface->event_record(be, ev, s, err);
}
static inline kr_status kr_backend_event_elapsed(kr_backend *be, kr_event *a, kr_event *b, float *ms, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, event_elapsed))
        return kr__backend_missing(be, "event_elapsed", err);
    return be->iface->event_elapsed(be, a, b, ms, err);
}
static inline void kr_backend_event_destroy(kr_backend *be, kr_event *ev)
{
    if (ev && KR_BACKEND_HAS(be, event_destroy))
        be->iface->event_destroy(be, ev);
}
static inline kr_status kr_backend_get_function(kr_backend *be, const kr_kernel_source *src, kr_function **fn,
                                                kr_err *err)
{
    if (!KR_BACKEND_HAS(be, get_function))
        return kr__backend_missing(be, "get_function (JIT)", err);
    return be->iface->get_function(be, src, fn, err);
}
static inline kr_status kr_backend_launch(kr_backend *be, kr_function *fn, const uint32_t grid[3],
                                          const uint32_t block[3], size_t shmem, kr_stream *s, void **args,
                                          kr_err *err)
{
    if (!KR_BACKEND_HAS(be, launch))
        return kr__backend_missing(be, "launch", err);
    return be->iface->launch(be, fn, grid, block, shmem, s, args, err);
}
/* As kr_backend_launch with KR_LAUNCH_* flags; a backend without launch_ex
 * launches normally (flags are hints). */
static inline kr_status kr_backend_launch_ex(kr_backend *be, kr_function *fn, const uint32_t grid[3],
                                             const uint32_t block[3], size_t shmem, kr_stream *s, void **args,
                                             uint32_t flags, kr_err *err)
{
    if (flags && KR_BACKEND_HAS(be, launch_ex))
        return be->iface->launch_ex(be, fn, grid, block, shmem, s, args, flags, err);
    return kr_backend_launch(be, fn, grid, block, shmem, s, args, err);
}
static inline kr_status kr_backend_stream_wait_event(kr_backend *be, kr_stream *s, kr_event *ev, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, stream_wait_event))
        return kr__backend_missing(be, "stream_wait_event", err);
    return be->iface->stream_wait_event(be, s, ev, err);
}
static inline kr_status kr_backend_graph_begin(kr_backend *be, kr_stream *s, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, graph_begin))
        return kr__backend_missing(be, "graph capture", err);
    return be->iface->graph_begin(be, s, err);
}
static inline kr_status kr_backend_graph_end(kr_backend *be, kr_stream *s, kr_graph **out, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, graph_end))
        return kr__backend_missing(be, "graph capture", err);
    return be->iface->graph_end(be, s, out, err);
}
static inline kr_status kr_backend_graph_launch(kr_backend *be, kr_graph *g, kr_stream *s, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, graph_launch))
        return kr__backend_missing(be, "graph launch", err);
    return be->iface->graph_launch(be, g, s, err);
}
static inline void kr_backend_graph_destroy(kr_backend *be, kr_graph *g)
{
    if (g && KR_BACKEND_HAS(be, graph_destroy))
        be->iface->graph_destroy(be, g);
}
static inline kr_status kr_backend_rng_uniform(kr_backend *be, float *dst, size_t n, uint64_t seed,
                                               uint64_t offset, kr_stream *s, kr_err *err)
{
    if (!KR_BACKEND_HAS(be, rng_uniform))
        return kr__backend_missing(be, "rng_uniform", err);
    return be->iface->rng_uniform(be, dst, n, seed, offset, s, err);
}

#ifdef __cplusplus
}
#endif
#endif
