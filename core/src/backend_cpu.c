/* CPU backend: buffers are aligned host memory, copies are memcpy, streams
 * and events are trivial (work is synchronous), no kernel launch (CPU
 * kernels are plain C functions called by the registry). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "backend_internal.h"
#include "kernrun/checked.h"

#define KR__CPU_ALIGN 64

typedef struct cpu_state {
    kr_device_info info;
} cpu_state;

/* Events record a monotonic timestamp. */
struct kr_event {
    struct timespec ts;
};

/* The default stream is NULL; created streams are a dummy token. */
struct kr_stream {
    int unused;
};

static void cpu_destroy(kr_backend *be)
{
    free(be->impl);
    free(be);
}

static const kr_device_info *cpu_device_info(kr_backend *be) { return &((cpu_state *)be->impl)->info; }

static uint64_t phys_bytes(long pages_name)
{
    long pages = sysconf((int)pages_name), page = sysconf(_SC_PAGESIZE);
    uint64_t out;
    if (pages <= 0 || page <= 0 || kr_mul_overflow_u64((uint64_t)pages, (uint64_t)page, &out))
        return 0;
    return out;
}

static kr_status cpu_mem_info(kr_backend *be, uint64_t *free_b, uint64_t *total_b, kr_err *err)
{
    (void)be;
    (void)err;
    if (free_b)
        *free_b = phys_bytes(_SC_AVPHYS_PAGES);
    if (total_b)
        *total_b = phys_bytes(_SC_PHYS_PAGES);
    return KR_OK;
}

static kr_status cpu_buffer_alloc(kr_backend *be, size_t size, kr_buffer **out, kr_err *err)
{
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "cpu buffer_alloc: out is NULL");
    *out = NULL;
    kr_buffer *b = calloc(1, sizeof *b);
    if (!b)
        return kr_err_set(err, KR_ERR_NOMEM, "cpu backend: out of memory allocating a buffer header");
    if (size > 0) {
        size_t rounded;
        if (kr_add_overflow_size(size, KR__CPU_ALIGN - 1, &rounded)) {
            free(b);
            return kr_err_set(err, KR_ERR_OVERFLOW, "cpu backend: buffer of %zu bytes is too large", size);
        }
        rounded &= ~(size_t)(KR__CPU_ALIGN - 1);
        b->ptr = aligned_alloc(KR__CPU_ALIGN, rounded);
        if (!b->ptr) {
            free(b);
            return kr_err_set(err, KR_ERR_NOMEM, "cpu backend: out of memory allocating %zu bytes", size);
        }
    }
    b->backend = be;
    b->size = size;
    b->flags = KR_BUFFER_HOST_ACCESSIBLE;
    *out = b;
    return KR_OK;
}

static void cpu_buffer_free(kr_backend *be, kr_buffer *buf)
{
    (void)be;
    if (!buf)
        return;
    free(buf->ptr);
    free(buf);
}

static kr_status cpu_copy(kr_backend *be, void *dst, const void *src, size_t n, kr_err *err)
{
    (void)be;
    if (n == 0)
        return KR_OK;
    if (!dst || !src)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "cpu backend: copy of %zu bytes with a NULL pointer", n);
    memmove(dst, src, n);
    return KR_OK;
}

static kr_status cpu_copy_async(kr_backend *be, void *dst, const void *src, size_t n, kr_stream *s, kr_err *err)
{
    (void)s;
    return cpu_copy(be, dst, src, n, err);
}

static kr_status cpu_memset(kr_backend *be, void *dst, int value, size_t n, kr_stream *s, kr_err *err)
{
    (void)be;
    (void)s;
    if (n == 0)
        return KR_OK;
    if (!dst)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "cpu backend: memset of %zu bytes at NULL", n);
    memset(dst, value, n);
    return KR_OK;
}

static kr_status cpu_stream_create(kr_backend *be, kr_stream **out, kr_err *err)
{
    (void)be;
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "cpu stream_create: out is NULL");
    *out = calloc(1, sizeof **out);
    if (!*out)
        return kr_err_set(err, KR_ERR_NOMEM, "cpu backend: out of memory creating a stream");
    return KR_OK;
}

static void cpu_stream_destroy(kr_backend *be, kr_stream *s)
{
    (void)be;
    free(s);
}

static kr_status cpu_stream_sync(kr_backend *be, kr_stream *s, kr_err *err)
{
    (void)be;
    (void)s;
    (void)err;
    return KR_OK; /* all CPU work is synchronous */
}

static kr_status cpu_event_create(kr_backend *be, kr_event **out, kr_err *err)
{
    (void)be;
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "cpu event_create: out is NULL");
    *out = calloc(1, sizeof **out);
    if (!*out)
        return kr_err_set(err, KR_ERR_NOMEM, "cpu backend: out of memory creating an event");
    return KR_OK;
}

static kr_status cpu_event_record(kr_backend *be, kr_event *ev, kr_stream *s, kr_err *err)
{
    (void)be;
    (void)s;
    if (!ev)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "cpu event_record: event is NULL");
    clock_gettime(CLOCK_MONOTONIC, &ev->ts);
    return KR_OK;
}

static kr_status cpu_event_elapsed(kr_backend *be, kr_event *a, kr_event *b, float *ms, kr_err *err)
{
    (void)be;
    if (!a || !b || !ms)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "cpu event_elapsed: NULL argument");
    double d = (double)(b->ts.tv_sec - a->ts.tv_sec) * 1e3 + (double)(b->ts.tv_nsec - a->ts.tv_nsec) / 1e6;
    *ms = (float)d;
    return KR_OK;
}

static void cpu_event_destroy(kr_backend *be, kr_event *ev)
{
    (void)be;
    free(ev);
}

static const kr_backend_i cpu_iface = {
    .struct_size = sizeof(kr_backend_i),
    .name = "cpu",
    .destroy = cpu_destroy,
    .device_info = cpu_device_info,
    .mem_info = cpu_mem_info,
    .buffer_alloc = cpu_buffer_alloc,
    .buffer_free = cpu_buffer_free,
    .host_alloc = cpu_buffer_alloc,
    .memcpy_h2d = cpu_copy,
    .memcpy_d2h = cpu_copy,
    .memcpy_d2d = cpu_copy,
    .memcpy_h2d_async = cpu_copy_async,
    .memcpy_d2h_async = cpu_copy_async,
    .memcpy_d2d_async = cpu_copy_async,
    .memset = cpu_memset,
    .stream_create = cpu_stream_create,
    .stream_destroy = cpu_stream_destroy,
    .stream_sync = cpu_stream_sync,
    .event_create = cpu_event_create,
    .event_record = cpu_event_record,
    .event_elapsed = cpu_event_elapsed,
    .event_destroy = cpu_event_destroy,
    /* get_function, launch, graph_*, rng_uniform: not on CPU */
};

/* First "model name" line of /proc/cpuinfo, else "cpu". */
static void cpu_name(char *buf, size_t cap)
{
    snprintf(buf, cap, "cpu");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f)
        return;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *colon = strchr(line, ':');
            if (colon) {
                colon++;
                while (*colon == ' ' || *colon == '\t')
                    colon++;
                size_t n = strcspn(colon, "\n");
                snprintf(buf, cap, "%.*s", (int)(n < cap ? n : cap - 1), colon);
            }
            break;
        }
    }
    fclose(f);
}

kr_status kr__cpu_backend_create(kr_backend **out, kr_err *err)
{
    kr_backend *be = calloc(1, sizeof *be);
    if (!be)
        goto err_nomem;
    cpu_state *st = calloc(1, sizeof *st);
    if (!st)
        goto err_free_backend;
    st->info.struct_size = sizeof st->info;
    st->info.kind = KR_BACKEND_CPU;
    st->info.index = 0;
    cpu_name(st->info.name, sizeof st->info.name);
    st->info.total_memory = phys_bytes(_SC_PHYS_PAGES);
    st->info.free_memory = phys_bytes(_SC_AVPHYS_PAGES);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    st->info.sm_count = cores > 0 ? (int)cores : 1;
    st->info.warp_size = 1;
    st->info.max_threads_per_block = 1;
    be->iface = &cpu_iface;
    be->kind = KR_BACKEND_CPU;
    be->device = 0;
    be->impl = st;
    *out = be;
    return KR_OK;

err_free_backend:
    free(be);
err_nomem:
    return kr_err_set(err, KR_ERR_NOMEM, "cpu backend: out of memory");
}
