/* kernrun — CUDA JIT: NVRTC (loaded with dlopen) plus an on-disk cubin cache.
 *
 * A kr_jit compiles CUDA C++ source for one explicit architecture ("sm_90"
 * is arch 90) into a cubin or PTX. No GPU is needed to compile, so the
 * compiler and its cache are usable (and tested) on machines without one.
 *
 * Cache: one file per key in the cache dir (config cache_dir, else
 * $XDG_CACHE_HOME/kernrun, else ~/.cache/kernrun; created with mode 0700).
 * A group- or world-writable dir, or one owned by another user, is refused
 * (we compile in memory and warn). key = SHA-256 over source, headers,
 * options, arch, target, NVRTC version and driver version. Entries are
 * written atomically (temp file + rename) and verified on read (magic,
 * version, key, size, SHA-256 of the payload); a bad entry is recompiled
 * and rewritten. Any cache I/O failure falls back to compiling in memory.
 * File layout: see KR_JIT_CACHE_* below and docs/CUDA.md.
 *
 * KERNRUN_KERNEL_DIR=dir (or kr_jit_config.kernel_dir): the source named
 * "example/vec_scale_add.cu" (its path under kernels/) is read from
 * dir/example/vec_scale_add.cu, and each header "x.cuh" from dir/x.cuh,
 * when those files exist, instead of the embedded copies.
 *
 * Thread-safety: a kr_jit may be used from several threads at once.
 */
#ifndef KERNRUN_JIT_H
#define KERNRUN_JIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/export.h"
#include "kernrun/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- SHA-256 (FIPS 180-4) ------------------------------------------------ */
typedef struct kr_sha256_ctx {
    uint32_t h[8];    /* chaining state */
    uint64_t total;   /* bytes hashed so far */
    uint8_t buf[64];  /* partial block */
    unsigned fill;    /* bytes used in buf */
} kr_sha256_ctx;

KR_API void kr_sha256_init(kr_sha256_ctx *c);
KR_API void kr_sha256_update(kr_sha256_ctx *c, const void *data, size_t len);
KR_API void kr_sha256_final(kr_sha256_ctx *c, uint8_t out[32]);
KR_API void kr_sha256(const void *data, size_t len, uint8_t out[32]);

/* ---- compiler --------------------------------------------------------- */
typedef struct kr_jit kr_jit;

/* A header the source #includes by `name` (as written in the #include). */
typedef struct kr_jit_header {
    const char *name;  /* include name, e.g. "common/kr_math.cuh" */
    const char *src;   /* text; need not be NUL-terminated */
    size_t len;        /* bytes of src */
} kr_jit_header;

typedef struct kr_jit_source {
    const char *name;               /* "example/vec_scale_add.cu" (path under kernels/):
                                       [a-zA-Z0-9_/.-], no ".."; KERNRUN_KERNEL_DIR/<name>
                                       overrides src */
    const char *src;                /* embedded CUDA C++ text; need not be NUL-terminated */
    size_t len;                     /* bytes of src */
    const kr_jit_header *headers;   /* (n_headers,) may be NULL when n_headers is 0 */
    size_t n_headers;
    const char *const *options;     /* (n_options,) extra NVRTC options, e.g. "-DBLOCK=256" */
    size_t n_options;
} kr_jit_source;

typedef enum kr_jit_target {
    KR_JIT_CUBIN = 1, /* SASS for sm_<arch>, loadable with cuModuleLoadData */
    KR_JIT_PTX = 2,   /* PTX text for compute_<arch> (NUL-terminated) */
} kr_jit_target;

typedef struct kr_jit_config {
    const char *cache_dir;    /* NULL or "": default (see above) */
    bool no_cache;            /* true: never touch the disk */
    const char *kernel_dir;   /* NULL: $KERNRUN_KERNEL_DIR; "" disables the override */
    int driver_version;       /* cuDriverGetVersion value (0 = none); part of the key */
    const char *nvrtc_path;   /* NULL: search libnvrtc.so, .so.13, .so.12, $CUDA_PATH/lib64 */
} kr_jit_config;

/* Loads NVRTC and prepares the cache dir. Fails with KR_ERR_NOT_FOUND and an
 * actionable message when libnvrtc cannot be loaded. cfg may be NULL. */
KR_API kr_status kr_jit_create(const kr_jit_config *cfg, kr_jit **out, kr_err *err);
KR_API void kr_jit_free(kr_jit *jit);

/* NVRTC version as major*1000 + minor*10 (13.0 -> 13000), like CUDA_VERSION. */
KR_API int kr_jit_nvrtc_version(const kr_jit *jit);
/* Cache dir in use, or NULL when compiling in memory only. */
KR_API const char *kr_jit_cache_dir(const kr_jit *jit);

typedef struct kr_jit_image {
    void *data;            /* cubin bytes, or PTX text (NUL included in size) */
    size_t size;           /* bytes of data */
    kr_jit_target target;  /* what data holds */
    bool from_cache;       /* true when read from a verified cache entry */
    uint8_t key[32];       /* cache key of this compilation */
} kr_jit_image;

/* Compile `src` for sm_<arch> (arch = major*10 + minor, e.g. 90). On a
 * compile error the NVRTC log is in err (and logged in full). Release the
 * image with kr_jit_image_free. */
KR_API kr_status kr_jit_compile(kr_jit *jit, const kr_jit_source *src, int arch,
                                kr_jit_target target, kr_jit_image *out, kr_err *err);
KR_API void kr_jit_image_free(kr_jit_image *img);

/* The key kr_jit_compile would use (after the KERNRUN_KERNEL_DIR override). */
KR_API kr_status kr_jit_key(kr_jit *jit, const kr_jit_source *src, int arch,
                            kr_jit_target target, uint8_t key[32], kr_err *err);
/* Path of the cache file for `key` into buf; KR_ERR_STATE when no cache. */
KR_API kr_status kr_jit_cache_path(const kr_jit *jit, const uint8_t key[32], char *buf,
                                   size_t bufsize);

typedef struct kr_jit_stats {
    uint64_t compiles;       /* NVRTC compilations run */
    uint64_t cache_hits;     /* verified entries used */
    uint64_t cache_rejects;  /* entries found but bad (corrupt, truncated, wrong key) */
    uint64_t cache_writes;   /* entries written */
    uint64_t write_failures; /* entries that could not be written */
} kr_jit_stats;
KR_API void kr_jit_get_stats(kr_jit *jit, kr_jit_stats *out);

/* Cache file layout (all integers little-endian):
 *   0  magic "KRJITC1\0"           8 bytes
 *   8  u32 format version (1)
 *  12  u32 target (kr_jit_target)
 *  16  key                          32 bytes
 *  48  u64 payload size
 *  56  SHA-256 of payload           32 bytes
 *  88  payload                      (payload size bytes, then end of file)
 * File name: <64 hex chars of key>.krc */
#define KR_JIT_CACHE_MAGIC "KRJITC1"
#define KR_JIT_CACHE_VERSION 1u
#define KR_JIT_CACHE_HEADER_SIZE 88u
#define KR_JIT_CACHE_MAX_PAYLOAD ((uint64_t)256 << 20)

#ifdef __cplusplus
}
#endif
#endif
