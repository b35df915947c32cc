/* NVRTC JIT with an on-disk cache. See kernrun/jit.h for the contract and
 * docs/CUDA.md for the cache format and the decisions behind it. */
#include "kernrun/jit.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <nvrtc.h>

#include "kernrun/checked.h"
#include "kernrun/log.h"

#define KR__DOM "jit"
#define KR__MAX_SOURCE_FILE ((off_t)16 << 20) /* KERNRUN_KERNEL_DIR files */
#define KR__MAX_NAME 256

/* NVRTC entry points, typed from nvrtc.h so a signature change fails to
 * compile instead of crashing. */
#define KR__NVRTC_FUNCS(X)          \
    X(nvrtcVersion)                 \
    X(nvrtcGetErrorString)          \
    X(nvrtcCreateProgram)           \
    X(nvrtcDestroyProgram)          \
    X(nvrtcCompileProgram)          \
    X(nvrtcGetProgramLogSize)       \
    X(nvrtcGetProgramLog)           \
    X(nvrtcGetPTXSize)              \
    X(nvrtcGetPTX)                  \
    X(nvrtcGetCUBINSize)            \
    X(nvrtcGetCUBIN)

typedef struct kr__nvrtc_api {
#define KR__NVRTC_FIELD(fn) __typeof__(&fn) fn;
    KR__NVRTC_FUNCS(KR__NVRTC_FIELD)
#undef KR__NVRTC_FIELD
} kr__nvrtc_api;

struct kr_jit {
    void *lib;               /* dlopen handle of libnvrtc */
    kr__nvrtc_api api;       /* resolved entry points */
    int nvrtc_version;       /* major*1000 + minor*10 */
    int driver_version;      /* from the config; part of the key */
    char *cache_dir;         /* NULL: compile in memory only */
    char *kernel_dir;        /* NULL: no KERNRUN_KERNEL_DIR override */
    pthread_mutex_t lock;    /* guards stats */
    kr_jit_stats stats;
};

/* ---- error helpers ------------------------------------------------------ */

static const char *kr__nvrtc_str(const kr_jit *jit, nvrtcResult r)
{
    const char *s = jit->api.nvrtcGetErrorString ? jit->api.nvrtcGetErrorString(r) : NULL;
    return s ? s : "unknown NVRTC error";
}

static kr_status kr__nvrtc_fail(const kr_jit *jit, nvrtcResult r, const char *expr, const char *func,
                                const char *file, int line, kr_err *err)
{
    return kr_err_set(err, KR_ERR_JIT, "%s failed: %s (%d) in %s at %s:%d", expr,
                      kr__nvrtc_str(jit, r), (int)r, func, file, line);
}

/* Evaluate an NVRTC call; on failure set st + err and jump to label. */
#define KR__NVRTC_TRY(jit, expr, err, label)                                                  \
    do {                                                                                       \
        nvrtcResult kr__r = (expr);                                                            \
        if (kr__r != NVRTC_SUCCESS) {                                                          \
            st = kr__nvrtc_fail((jit), kr__r, #expr, __func__, __FILE__, __LINE__, (err));     \
            goto label;                                                                        \
        }                                                                                      \
    } while (0)

static void kr__stat_inc(kr_jit *jit, uint64_t *field)
{
    pthread_mutex_lock(&jit->lock);
    (*field)++;
    pthread_mutex_unlock(&jit->lock);
}

/* ---- NVRTC loading ------------------------------------------------------- */

static kr_status kr__nvrtc_load(kr_jit *jit, const char *explicit_path, kr_err *err)
{
    char paths[8][PATH_MAX];
    size_t n = 0;
    if (explicit_path && explicit_path[0]) {
        snprintf(paths[n++], PATH_MAX, "%s", explicit_path);
    } else {
        snprintf(paths[n++], PATH_MAX, "libnvrtc.so");
        snprintf(paths[n++], PATH_MAX, "libnvrtc.so.13");
        snprintf(paths[n++], PATH_MAX, "libnvrtc.so.12");
        const char *cp = getenv("CUDA_PATH");
        if (cp && cp[0])
            snprintf(paths[n++], PATH_MAX, "%s/lib64/libnvrtc.so", cp);
#ifdef KR_CUDA_TOOLKIT_DIR
        snprintf(paths[n++], PATH_MAX, "%s/lib64/libnvrtc.so", KR_CUDA_TOOLKIT_DIR);
#endif
        snprintf(paths[n++], PATH_MAX, "/usr/local/cuda/lib64/libnvrtc.so");
    }
    char first_err[512] = "";
    for (size_t i = 0; i < n && !jit->lib; i++) {
        /* NODELETE: NVRTC keeps process-wide state (its C++ runtime pools);
         * unmapping it on kr_jit_free would orphan that. */
        jit->lib = dlopen(paths[i], RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
        if (!jit->lib && !first_err[0]) {
            const char *de = dlerror();
            snprintf(first_err, sizeof first_err, "%.500s", de ? de : paths[i]);
        }
    }
    if (!jit->lib)
        return kr_err_set(err, KR_ERR_NOT_FOUND,
                          "NVRTC not found (%s); install the CUDA toolkit's NVRTC "
                          "(e.g. cuda-nvrtc-13-0) or set CUDA_PATH / LD_LIBRARY_PATH to its lib64",
                          first_err);
#define KR__NVRTC_SYM(fn)                                                                  \
    do {                                                                                   \
        void *kr__p = dlsym(jit->lib, #fn);                                                \
        if (!kr__p)                                                                        \
            return kr_err_set(err, KR_ERR_NOT_FOUND, "NVRTC lacks symbol %s (too old?)", #fn); \
        memcpy(&jit->api.fn, &kr__p, sizeof kr__p);                                        \
    } while (0);
    KR__NVRTC_FUNCS(KR__NVRTC_SYM)
#undef KR__NVRTC_SYM
    int major = 0, minor = 0;
    kr_status st = KR_OK;
    KR__NVRTC_TRY(jit, jit->api.nvrtcVersion(&major, &minor), err, fail);
    jit->nvrtc_version = major * 1000 + minor * 10;
    return KR_OK;
fail:
    return st;
}

/* ---- cache dir ------------------------------------------------------------ */

/* mkdir -p with mode 0700 for every component we create. */
static int kr__mkdirs(const char *path)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* Pick and vet the cache dir; leaves jit->cache_dir NULL (in-memory only)
 * when there is none or it is unsafe. Never fails. */
static void kr__cache_dir_init(kr_jit *jit, const char *configured)
{
    char path[PATH_MAX];
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (configured && configured[0])
        snprintf(path, sizeof path, "%s", configured);
    else if (xdg && xdg[0] == '/')
        snprintf(path, sizeof path, "%s/kernrun", xdg);
    else if (home && home[0] == '/')
        snprintf(path, sizeof path, "%s/.cache/kernrun", home);
    else {
        KR_LOGI(KR__DOM, "no cache dir (HOME and XDG_CACHE_HOME unset); compiling in memory");
        return;
    }
    if (kr__mkdirs(path) != 0) {
        KR_LOGW(KR__DOM, "cannot create kernel cache dir %s (%s); compiling in memory", path,
                strerror(errno));
        return;
    }
    struct stat sb;
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        KR_LOGW(KR__DOM, "kernel cache dir %s is not a directory; compiling in memory", path);
        return;
    }
    if (sb.st_mode & (S_IWGRP | S_IWOTH)) {
        KR_LOGW(KR__DOM,
                "kernel cache dir %s is group/world-writable (mode %03o); refusing it, compiling "
                "in memory (fix: chmod 700 %s)",
                path, (unsigned)(sb.st_mode & 0777), path);
        return;
    }
    if (sb.st_uid != geteuid()) {
        KR_LOGW(KR__DOM, "kernel cache dir %s is owned by uid %u, not us (%u); compiling in memory",
                path, (unsigned)sb.st_uid, (unsigned)geteuid());
        return;
    }
    jit->cache_dir = strdup(path);
    if (!jit->cache_dir)
        KR_LOGW(KR__DOM, "out of memory for cache dir path; compiling in memory");
}

/* ---- create / free ------------------------------------------------------- */

kr_status kr_jit_create(const kr_jit_config *cfg, kr_jit **out, kr_err *err)
{
    kr_jit_config defaults = {0};
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_jit_create: out is NULL");
    *out = NULL;
    if (!cfg)
        cfg = &defaults;
    kr_jit *jit = calloc(1, sizeof *jit);
    if (!jit)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory for the JIT");
    if (pthread_mutex_init(&jit->lock, NULL) != 0) {
        free(jit);
        return kr_err_set(err, KR_ERR_INTERNAL, "pthread_mutex_init failed");
    }
    jit->driver_version = cfg->driver_version;
    kr_status st = kr__nvrtc_load(jit, cfg->nvrtc_path, err);
    if (st != KR_OK)
        goto err_free;
    const char *kd = cfg->kernel_dir ? cfg->kernel_dir : getenv("KERNRUN_KERNEL_DIR");
    if (kd && kd[0]) {
        jit->kernel_dir = strdup(kd);
        if (!jit->kernel_dir) {
            st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
            goto err_free;
        }
        KR_LOGI(KR__DOM, "kernel sources are read from %s when present (KERNRUN_KERNEL_DIR)", kd);
    }
    if (!cfg->no_cache)
        kr__cache_dir_init(jit, cfg->cache_dir);
    KR_LOGD(KR__DOM, "NVRTC %d.%d loaded; cache %s", jit->nvrtc_version / 1000,
            (jit->nvrtc_version % 1000) / 10, jit->cache_dir ? jit->cache_dir : "(memory only)");
    *out = jit;
    return KR_OK;

err_free:
    kr_jit_free(jit);
    return st;
}

void kr_jit_free(kr_jit *jit)
{
    if (!jit)
        return;
    if (jit->lib)
        dlclose(jit->lib);
    free(jit->cache_dir);
    free(jit->kernel_dir);
    pthread_mutex_destroy(&jit->lock);
    free(jit);
}

int kr_jit_nvrtc_version(const kr_jit *jit) { return jit ? jit->nvrtc_version : 0; }

const char *kr_jit_cache_dir(const kr_jit *jit) { return jit ? jit->cache_dir : NULL; }

void kr_jit_get_stats(kr_jit *jit, kr_jit_stats *out)
{
    if (!jit || !out)
        return;
    pthread_mutex_lock(&jit->lock);
    *out = jit->stats;
    pthread_mutex_unlock(&jit->lock);
}

void kr_jit_image_free(kr_jit_image *img)
{
    if (!img)
        return;
    free(img->data);
    img->data = NULL;
    img->size = 0;
}

/* ---- resolved sources (after KERNRUN_KERNEL_DIR) -------------------------- */

/* Text of the source and each header, each NUL-terminated, owned. */
typedef struct kr__resolved {
    char *src;            /* NUL-terminated source */
    size_t src_len;
    size_t n_headers;
    char **hdr;           /* (n_headers,) NUL-terminated header texts */
    size_t *hdr_len;      /* (n_headers,) */
} kr__resolved;

static void kr__resolved_free(kr__resolved *r)
{
    free(r->src);
    if (r->hdr)
        for (size_t i = 0; i < r->n_headers; i++)
            free(r->hdr[i]);
    free(r->hdr);
    free(r->hdr_len);
    memset(r, 0, sizeof *r);
}

static bool kr__name_ok(const char *name)
{
    if (!name || !name[0] || name[0] == '/' || strlen(name) >= KR__MAX_NAME || strstr(name, ".."))
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-' || c == '.' || c == '/'))
            return false;
    }
    return true;
}

static char *kr__dup_text(const char *s, size_t len)
{
    size_t n;
    if (kr_add_overflow_size(len, 1, &n))
        return NULL;
    char *d = malloc(n);
    if (!d)
        return NULL;
    if (len)
        memcpy(d, s, len);
    d[len] = '\0';
    return d;
}

/* Read a whole file into a NUL-terminated buffer. Returns KR_ERR_NOT_FOUND
 * when it does not exist (so the embedded copy is used). */
static kr_status kr__read_text_file(const char *path, char **out, size_t *out_len, kr_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return KR_ERR_NOT_FOUND;
        return kr_err_set(err, KR_ERR_IO, "open %s: %s", path, strerror(errno));
    }
    kr_status st = KR_OK;
    char *buf = NULL;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = kr_err_set(err, KR_ERR_IO, "%s is not a regular file", path);
        goto err_close;
    }
    if (sb.st_size > KR__MAX_SOURCE_FILE) {
        st = kr_err_set(err, KR_ERR_LIMIT, "%s is %lld bytes, more than the %lld allowed", path,
                        (long long)sb.st_size, (long long)KR__MAX_SOURCE_FILE);
        goto err_close;
    }
    size_t len = (size_t)sb.st_size;
    buf = malloc(len + 1);
    if (!buf) {
        st = kr_err_set(err, KR_ERR_NOMEM, "out of memory reading %s", path);
        goto err_close;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            st = kr_err_set(err, KR_ERR_IO, "read %s: %s", path, r < 0 ? strerror(errno) : "short read");
            goto err_free;
        }
        got += (size_t)r;
    }
    buf[len] = '\0';
    close(fd);
    *out = buf;
    *out_len = len;
    return KR_OK;

err_free:
    free(buf);
err_close:
    close(fd);
    return st;
}

static kr_status kr__resolve(const kr_jit *jit, const kr_jit_source *s, kr__resolved *r, kr_err *err)
{
    memset(r, 0, sizeof *r);
    if (!s || !kr__name_ok(s->name))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kernel source name '%s' is invalid",
                          s && s->name ? s->name : "(null)");
    if ((!s->src && s->len) || (s->n_headers && !s->headers) || (s->n_options && !s->options))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kernel '%s': NULL array with non-zero length",
                          s->name);
    char path[PATH_MAX];
    kr_status st;
    if (jit->kernel_dir) {
        snprintf(path, sizeof path, "%s/%s", jit->kernel_dir, s->name);
        st = kr__read_text_file(path, &r->src, &r->src_len, err);
        if (st == KR_OK)
            KR_LOGD(KR__DOM, "kernel '%s' from %s", s->name, path);
        else if (st != KR_ERR_NOT_FOUND)
            goto err_free;
    }
    if (!r->src) {
        if (!s->src)
            return kr_err_set(err, KR_ERR_NOT_FOUND, "kernel '%s' has no embedded source", s->name);
        r->src = kr__dup_text(s->src, s->len);
        r->src_len = s->len;
        if (!r->src)
            return kr_err_set(err, KR_ERR_NOMEM, "out of memory copying kernel '%s'", s->name);
    }
    r->n_headers = s->n_headers;
    if (s->n_headers) {
        r->hdr = calloc(s->n_headers, sizeof *r->hdr);
        r->hdr_len = calloc(s->n_headers, sizeof *r->hdr_len);
        if (!r->hdr || !r->hdr_len) {
            st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
            goto err_free;
        }
    }
    for (size_t i = 0; i < s->n_headers; i++) {
        const kr_jit_header *h = &s->headers[i];
        if (!kr__name_ok(h->name) || (!h->src && h->len)) {
            st = kr_err_set(err, KR_ERR_INVALID_ARG, "kernel '%s': header %zu name '%s' is invalid",
                            s->name, i, h->name ? h->name : "(null)");
            goto err_free;
        }
        if (jit->kernel_dir) {
            snprintf(path, sizeof path, "%s/%s", jit->kernel_dir, h->name);
            st = kr__read_text_file(path, &r->hdr[i], &r->hdr_len[i], err);
            if (st != KR_OK && st != KR_ERR_NOT_FOUND)
                goto err_free;
        }
        if (!r->hdr[i]) {
            r->hdr[i] = kr__dup_text(h->src ? h->src : "", h->len);
            r->hdr_len[i] = h->len;
            if (!r->hdr[i]) {
                st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
                goto err_free;
            }
        }
    }
    return KR_OK;

err_free:
    kr__resolved_free(r);
    return st;
}

/* ---- key -------------------------------------------------------------------- */

static void kr__hash_u64(kr_sha256_ctx *c, uint64_t v)
{
    uint8_t b[8];
    for (unsigned i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
    kr_sha256_update(c, b, sizeof b);
}

/* Length-prefixed, so ("ab","c") and ("a","bc") differ. */
static void kr__hash_bytes(kr_sha256_ctx *c, const void *p, size_t n)
{
    kr__hash_u64(c, n);
    kr_sha256_update(c, p, n);
}

static void kr__hash_str(kr_sha256_ctx *c, const char *s) { kr__hash_bytes(c, s, strlen(s)); }

static void kr__key(const kr_jit *jit, const kr_jit_source *s, const kr__resolved *r, int arch,
                    kr_jit_target target, uint8_t key[32])
{
    kr_sha256_ctx c;
    kr_sha256_init(&c);
    kr__hash_str(&c, "kernrun-jit-key-v1");
    kr__hash_str(&c, s->name);
    kr__hash_bytes(&c, r->src, r->src_len);
    kr__hash_u64(&c, r->n_headers);
    for (size_t i = 0; i < r->n_headers; i++) {
        kr__hash_str(&c, s->headers[i].name);
        kr__hash_bytes(&c, r->hdr[i], r->hdr_len[i]);
    }
    kr__hash_u64(&c, s->n_options);
    for (size_t i = 0; i < s->n_options; i++)
        kr__hash_str(&c, s->options[i] ? s->options[i] : "");
    kr__hash_u64(&c, (uint64_t)(int64_t)arch);
    kr__hash_u64(&c, (uint64_t)target);
    kr__hash_u64(&c, (uint64_t)(int64_t)jit->nvrtc_version);
    kr__hash_u64(&c, (uint64_t)(int64_t)jit->driver_version);
    kr_sha256_final(&c, key);
}

static kr_status kr__check_args(const kr_jit *jit, int arch, kr_jit_target target, kr_err *err)
{
    if (!jit)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "JIT handle is NULL");
    if (arch < 30 || arch > 999)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "GPU architecture %d is not sm_30..sm_999", arch);
    if (target != KR_JIT_CUBIN && target != KR_JIT_PTX)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "unknown JIT target %d", (int)target);
    return KR_OK;
}

kr_status kr_jit_key(kr_jit *jit, const kr_jit_source *src, int arch, kr_jit_target target,
                     uint8_t key[32], kr_err *err)
{
    kr_status st = kr__check_args(jit, arch, target, err);
    if (st != KR_OK)
        return st;
    kr__resolved r;
    st = kr__resolve(jit, src, &r, err);
    if (st != KR_OK)
        return st;
    kr__key(jit, src, &r, arch, target, key);
    kr__resolved_free(&r);
    return KR_OK;
}

static void kr__hex(const uint8_t key[32], char out[65])
{
    static const char d[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = d[key[i] >> 4];
        out[2 * i + 1] = d[key[i] & 15];
    }
    out[64] = '\0';
}

kr_status kr_jit_cache_path(const kr_jit *jit, const uint8_t key[32], char *buf, size_t bufsize)
{
    if (!jit || !key || !buf)
        return KR_ERR_INVALID_ARG;
    if (!jit->cache_dir)
        return KR_ERR_STATE;
    char hex[65];
    kr__hex(key, hex);
    int n = snprintf(buf, bufsize, "%s/%s.krc", jit->cache_dir, hex);
    if (n < 0 || (size_t)n >= bufsize)
        return KR_ERR_RANGE;
    return KR_OK;
}

/* ---- cache entries ------------------------------------------------------- */

static void kr__put_u32(uint8_t *p, uint32_t v)
{
    for (unsigned i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static void kr__put_u64(uint8_t *p, uint64_t v)
{
    for (unsigned i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t kr__get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (unsigned i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t kr__get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static int kr__read_full(int fd, void *buf, size_t n)
{
    uint8_t *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int kr__write_full(int fd, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Try to load a verified entry. Returns true and fills img on success;
 * false when absent or bad (bad entries are counted and logged). */
static bool kr__cache_read(kr_jit *jit, const uint8_t key[32], kr_jit_target target, kr_jit_image *img)
{
    char path[PATH_MAX];
    if (kr_jit_cache_path(jit, key, path, sizeof path) != KR_OK)
        return false;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno != ENOENT)
            KR_LOGD(KR__DOM, "cache entry %s unreadable: %s", path, strerror(errno));
        return false;
    }
    const char *why = NULL;
    uint8_t *payload = NULL;
    uint8_t hdr[KR_JIT_CACHE_HEADER_SIZE];
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        why = "not a regular file";
        goto bad;
    }
    if ((uint64_t)sb.st_size < KR_JIT_CACHE_HEADER_SIZE) {
        why = "shorter than its header";
        goto bad;
    }
    if (kr__read_full(fd, hdr, sizeof hdr) != 0) {
        why = "header read failed";
        goto bad;
    }
    if (memcmp(hdr, KR_JIT_CACHE_MAGIC, 8) != 0) {
        why = "bad magic";
        goto bad;
    }
    if (kr__get_u32(hdr + 8) != KR_JIT_CACHE_VERSION) {
        why = "unknown format version";
        goto bad;
    }
    if (kr__get_u32(hdr + 12) != (uint32_t)target) {
        why = "other target";
        goto bad;
    }
    if (memcmp(hdr + 16, key, 32) != 0) {
        why = "entry is for another key";
        goto bad;
    }
    uint64_t psize = kr__get_u64(hdr + 48);
    if (psize == 0 || psize > KR_JIT_CACHE_MAX_PAYLOAD ||
        psize != (uint64_t)sb.st_size - KR_JIT_CACHE_HEADER_SIZE) {
        why = "payload size does not match the file size (truncated?)";
        goto bad;
    }
    payload = malloc((size_t)psize);
    if (!payload) {
        why = "out of memory";
        goto bad;
    }
    if (kr__read_full(fd, payload, (size_t)psize) != 0) {
        why = "payload read failed";
        goto bad;
    }
    uint8_t sum[32];
    kr_sha256(payload, (size_t)psize, sum);
    if (memcmp(sum, hdr + 56, 32) != 0) {
        why = "checksum mismatch";
        goto bad;
    }
    if (target == KR_JIT_PTX && payload[psize - 1] != '\0') {
        why = "PTX not NUL-terminated";
        goto bad;
    }
    close(fd);
    img->data = payload;
    img->size = (size_t)psize;
    img->from_cache = true;
    kr__stat_inc(jit, &jit->stats.cache_hits);
    return true;

bad:
    free(payload);
    close(fd);
    kr__stat_inc(jit, &jit->stats.cache_rejects);
    KR_LOGW(KR__DOM, "kernel cache entry %s rejected (%s); recompiling", path, why);
    return false;
}

/* Write an entry atomically: temp file in the same dir, then rename. Any
 * failure is logged and counted, never fatal. */
static void kr__cache_write(kr_jit *jit, const uint8_t key[32], kr_jit_target target,
                            const void *data, size_t size)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    if (kr_jit_cache_path(jit, key, path, sizeof path) != KR_OK)
        return;
    char hex[65];
    kr__hex(key, hex);
    int n = snprintf(tmp, sizeof tmp, "%s/.%s.tmp.XXXXXX", jit->cache_dir, hex);
    if (n < 0 || (size_t)n >= sizeof tmp)
        goto fail;
    uint8_t hdr[KR_JIT_CACHE_HEADER_SIZE];
    memcpy(hdr, KR_JIT_CACHE_MAGIC, 8);
    kr__put_u32(hdr + 8, KR_JIT_CACHE_VERSION);
    kr__put_u32(hdr + 12, (uint32_t)target);
    memcpy(hdr + 16, key, 32);
    kr__put_u64(hdr + 48, (uint64_t)size);
    kr_sha256(data, size, hdr + 56);
    int fd = mkstemp(tmp);
    if (fd < 0)
        goto fail;
    if (kr__write_full(fd, hdr, sizeof hdr) != 0 || kr__write_full(fd, data, size) != 0) {
        close(fd);
        goto err_unlink;
    }
    if (close(fd) != 0)
        goto err_unlink;
    if (rename(tmp, path) != 0)
        goto err_unlink;
    kr__stat_inc(jit, &jit->stats.cache_writes);
    return;

err_unlink:
    unlink(tmp);
fail:
    kr__stat_inc(jit, &jit->stats.write_failures);
    KR_LOGD(KR__DOM, "could not write kernel cache entry %s (%s); kept in memory only", path,
            strerror(errno));
}

/* ---- compile ----------------------------------------------------------------- */

static kr_status kr__nvrtc_compile(kr_jit *jit, const kr_jit_source *s, const kr__resolved *r,
                                   int arch, kr_jit_target target, kr_jit_image *img, kr_err *err)
{
    kr_status st = KR_OK;
    nvrtcProgram prog = NULL;
    const char **inc_names = NULL;
    const char **opts = NULL;
    char *log = NULL;
    char progname[KR__MAX_NAME];
    char archname[24];
    char archopt[48];
    snprintf(progname, sizeof progname, "%s", s->name);
    snprintf(archname, sizeof archname, "%s_%d", target == KR_JIT_CUBIN ? "sm" : "compute", arch);
    snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", archname);

    if (r->n_headers) {
        inc_names = calloc(r->n_headers, sizeof *inc_names);
        if (!inc_names) {
            st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < r->n_headers; i++)
            inc_names[i] = s->headers[i].name;
    }
    /* -lineinfo: source lines in compute-sanitizer / ncu reports; no run-time cost */
    static const char *const base_opts[] = {"--std=c++17", "-lineinfo"};
    size_t n_base = sizeof base_opts / sizeof base_opts[0];
    size_t n_opts = n_base + 1 + s->n_options;
    opts = calloc(n_opts, sizeof *opts);
    if (!opts) {
        st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n_base; i++)
        opts[i] = base_opts[i];
    opts[n_base] = archopt;
    for (size_t i = 0; i < s->n_options; i++)
        opts[n_base + 1 + i] = s->options[i] ? s->options[i] : "";

    KR__NVRTC_TRY(jit,
                  jit->api.nvrtcCreateProgram(&prog, r->src, progname, (int)r->n_headers,
                                              (const char *const *)r->hdr, inc_names),
                  err, out);
    kr__stat_inc(jit, &jit->stats.compiles);
    nvrtcResult cres = jit->api.nvrtcCompileProgram(prog, (int)n_opts, opts);
    /* The log first: it is what the user needs when the compile failed. */
    size_t log_size = 0;
    KR__NVRTC_TRY(jit, jit->api.nvrtcGetProgramLogSize(prog, &log_size), err, out);
    if (log_size > 1) {
        log = malloc(log_size);
        if (!log) {
            st = kr_err_set(err, KR_ERR_NOMEM, "out of memory for the NVRTC log");
            goto out;
        }
        KR__NVRTC_TRY(jit, jit->api.nvrtcGetProgramLog(prog, log), err, out);
        log[log_size - 1] = '\0';
    }
    if (cres != NVRTC_SUCCESS) {
        KR_LOGE(KR__DOM, "compiling %s for %s failed:\n%s", progname, archname,
                log ? log : "(no log)");
        st = kr_err_set(err, KR_ERR_JIT, "NVRTC: %s for %s: %s\n%s", progname, archname,
                        kr__nvrtc_str(jit, cres), log ? log : "(no log)");
        goto out;
    }
    if (log)
        KR_LOGD(KR__DOM, "%s: NVRTC log:\n%s", progname, log);
    size_t size = 0;
    if (target == KR_JIT_CUBIN)
        KR__NVRTC_TRY(jit, jit->api.nvrtcGetCUBINSize(prog, &size), err, out);
    else
        KR__NVRTC_TRY(jit, jit->api.nvrtcGetPTXSize(prog, &size), err, out);
    if (size == 0 || size > KR_JIT_CACHE_MAX_PAYLOAD) {
        st = kr_err_set(err, KR_ERR_JIT, "NVRTC returned a %zu-byte image for %s", size, progname);
        goto out;
    }
    img->data = malloc(size);
    if (!img->data) {
        st = kr_err_set(err, KR_ERR_NOMEM, "out of memory for a %zu-byte image", size);
        goto out;
    }
    if (target == KR_JIT_CUBIN)
        KR__NVRTC_TRY(jit, jit->api.nvrtcGetCUBIN(prog, img->data), err, err_image);
    else
        KR__NVRTC_TRY(jit, jit->api.nvrtcGetPTX(prog, img->data), err, err_image);
    img->size = size;
    goto out;

err_image:
    free(img->data);
    img->data = NULL;
out:
    if (prog)
        jit->api.nvrtcDestroyProgram(&prog);
    free(log);
    free(opts);
    free(inc_names);
    return st;
}

kr_status kr_jit_compile(kr_jit *jit, const kr_jit_source *src, int arch, kr_jit_target target,
                         kr_jit_image *out, kr_err *err)
{
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_jit_compile: out is NULL");
    memset(out, 0, sizeof *out);
    kr_status st = kr__check_args(jit, arch, target, err);
    if (st != KR_OK)
        return st;
    kr__resolved r;
    st = kr__resolve(jit, src, &r, err);
    if (st != KR_OK)
        return st;
    out->target = target;
    kr__key(jit, src, &r, arch, target, out->key);
    if (jit->cache_dir && kr__cache_read(jit, out->key, target, out))
        goto done;
    st = kr__nvrtc_compile(jit, src, &r, arch, target, out, err);
    if (st != KR_OK) {
        kr_err_prefix(err, "JIT-compiling kernel '%s'", src->name);
        goto done;
    }
    if (jit->cache_dir)
        kr__cache_write(jit, out->key, target, out->data, out->size);
done:
    kr__resolved_free(&r);
    return st;
}
