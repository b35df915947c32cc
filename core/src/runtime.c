/* The runtime: config + registry + plugins + backends, and the host table
 * handed to plugins. The plugin loader lives here too (plugin_load_file). */
#include "kernrun/runtime.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "backend_internal.h"
#include "kernrun/checked.h"
#include "kernrun/log.h"
#include "registry_internal.h"

#define KR__LOG "runtime"
#define KR__PLUGIN_MAX_ENTRIES 65536u /* per table; a plugin with more is corrupt */
#define KR__PLUGIN_MAX_FILES 4096u    /* per directory scan */

typedef struct loaded_plugin {
    void *handle;                 /* dlopen handle */
    const kr_plugin_desc *desc;   /* plugin's descriptor (read only the v1 prefix) */
    void *state;                  /* from init */
    char *path;                   /* file it came from */
    char *real;                   /* realpath, for de-duplication */
    size_t n_kernels, n_pipelines, n_archs;
} loaded_plugin;

typedef struct failure {
    char *path;
    kr_status code;
    char *reason;
} failure;

struct kr_runtime {
    const kr_config *cfg;         /* config in use (owned_cfg or the caller's) */
    kr_config *owned_cfg;         /* default config when opened with NULL */
    kr_registry *reg;
    kr_backend *cpu;              /* always present */
    kr_backend *cuda;             /* NULL unless CUDA is active */
    kr_backend *active;           /* cuda or cpu */
    char cuda_status[KR_ERR_MSG_MAX]; /* why CUDA is not active */
    kr_host host;                 /* table given to plugins; host.ctx = this */
    loaded_plugin *plugins;       /* (n_plugins,) load order */
    size_t n_plugins, cap_plugins;
    failure *fails;               /* (n_fails,) rejected plugin files */
    size_t n_fails, cap_fails;
    failure *dir_fails;           /* (n_dir_fails,) refused/unreadable directories */
    size_t n_dir_fails, cap_dir_fails;
};

static char *dup_str(const char *s)
{
    if (!s)
        s = "";
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* Append to a growable array of `elem`-byte items. */
static bool push(void **arr, size_t *n, size_t *cap, const void *item, size_t elem)
{
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8, bytes;
        if (kr_mul_overflow_size(ncap, elem, &bytes))
            return false;
        void *p = realloc(*arr, bytes);
        if (!p)
            return false;
        *arr = p;
        *cap = ncap;
    }
    memcpy((char *)*arr + *n * elem, item, elem);
    (*n)++;
    return true;
}

static void record_failure(failure **arr, size_t *n, size_t *cap, const char *path, kr_status code,
                           const char *reason)
{
    failure f = {.path = dup_str(path), .code = code, .reason = dup_str(reason)};
    if (!f.path || !f.reason || !push((void **)arr, n, cap, &f, sizeof f)) {
        free(f.path);
        free(f.reason);
    }
}

/* ---- host table ---- */

static kr_runtime *host_rt(const kr_host *host) { return (kr_runtime *)host->ctx; }

static void host_log(const kr_host *host, kr_log_level level, const char *domain, const char *fmt, ...)
{
    (void)host;
    va_list ap;
    va_start(ap, fmt);
    kr_logv(level, domain, fmt, ap);
    va_end(ap);
}

static void *host_alloc(const kr_host *host, size_t size)
{
    (void)host;
    return malloc(size ? size : 1);
}

static void *host_calloc(const kr_host *host, size_t n, size_t size)
{
    (void)host;
    size_t total;
    if (kr_mul_overflow_size(n, size, &total))
        return NULL;
    return calloc(total ? n : 1, total ? size : 1);
}

static void host_free(const kr_host *host, void *p)
{
    (void)host;
    free(p);
}

static kr_status host_run_op(const kr_host *host, const kr_kernel_args *args, kr_stream *s, kr_err *err)
{
    return kr_runtime_run_op(host_rt(host), args, s, err);
}

static kr_status host_find_op(const kr_host *host, const kr_kernel_args *args, kr_kernel_ref *out, kr_err *err)
{
    kr_runtime *rt = host_rt(host);
    return kr_registry_dispatch(rt->reg, NULL, args, rt->active->kind, kr_backend_device_info(rt->active),
                                kr_backend_device_info(rt->cpu), out, err);
}

static const kr_arch_entry *host_find_arch(const kr_host *host, const char *name)
{
    return kr_registry_find_arch(host_rt(host)->reg, name);
}

static kr_backend *host_backend(const kr_host *host) { return host_rt(host)->active; }
static kr_backend *host_cpu_backend(const kr_host *host) { return host_rt(host)->cpu; }
static const kr_device_info *host_device_info(const kr_host *host)
{
    return kr_backend_device_info(host_rt(host)->active);
}

static kr_status host_get_function(const kr_host *host, const kr_kernel_source *src, kr_function **fn, kr_err *err)
{
    return kr_backend_get_function(host_rt(host)->active, src, fn, err);
}

static kr_status host_launch(const kr_host *host, kr_function *fn, const uint32_t grid[3], const uint32_t block[3],
                             size_t shmem, kr_stream *s, void **args, kr_err *err)
{
    return kr_backend_launch(host_rt(host)->active, fn, grid, block, shmem, s, args, err);
}

static kr_status host_rng_uniform(const kr_host *host, float *dst, size_t n, uint64_t seed, uint64_t offset,
                                  kr_stream *s, kr_err *err)
{
    return kr_backend_rng_uniform(host_rt(host)->active, dst, n, seed, offset, s, err);
}

static const char *host_config_get(const kr_host *host, const char *section, const char *key)
{
    return kr_config_get(host_rt(host)->cfg, section, key);
}

static void host_init(kr_runtime *rt)
{
    rt->host = (kr_host){
        .abi_version = KR_PLUGIN_ABI_VERSION,
        .struct_size = sizeof(kr_host),
        .ctx = rt,
        .log = host_log,
        .err_set = kr_err_set,
        .err_prefix = kr_err_prefix,
        .status_str = kr_status_str,
        .alloc = host_alloc,
        .calloc = host_calloc,
        .free = host_free,
        .run_op = host_run_op,
        .find_op = host_find_op,
        .find_arch = host_find_arch,
        .backend = host_backend,
        .cpu_backend = host_cpu_backend,
        .device_info = host_device_info,
        .get_function = host_get_function,
        .launch = host_launch,
        .rng_uniform = host_rng_uniform,
        .config_get = host_config_get,
    };
}

/* ---- plugin loading ---- */

static bool plugin_name_ok(const char *s)
{
    if (!s || !*s || strlen(s) > 64)
        return false;
    for (const char *c = s; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '_' ||
              *c == '-' || *c == '.'))
            return false;
    return true;
}

/* ABI checks on the descriptor: nothing in the plugin runs here. */
static kr_status check_desc(const kr_plugin_desc *d, kr_err *err)
{
    if (d->abi_version != KR_PLUGIN_ABI_VERSION)
        return kr_err_set(err, KR_ERR_ABI, "plugin ABI version %u, this kernrun supports %u (rebuild the plugin)",
                          d->abi_version, KR_PLUGIN_ABI_VERSION);
    if (d->desc_size < KR_PLUGIN_DESC_V1_SIZE)
        return kr_err_set(err, KR_ERR_ABI, "descriptor size %u is smaller than the ABI v1 size %zu", d->desc_size,
                          (size_t)KR_PLUGIN_DESC_V1_SIZE);
    if (d->host_size < offsetof(kr_host, config_get) + sizeof(void *) || d->host_size > sizeof(kr_host))
        return kr_err_set(err, KR_ERR_ABI,
                          "plugin expects a host table of %u bytes, this kernrun provides %zu (%s)", d->host_size,
                          sizeof(kr_host), d->host_size > sizeof(kr_host) ? "plugin is newer" : "corrupt size");
    if (d->n_kernels && (d->kernel_size < KR_KERNEL_V1_SIZE || d->kernel_size > sizeof(kr_kernel)))
        return kr_err_set(err, KR_ERR_ABI, "kernel record size %u not supported (this kernrun accepts %zu..%zu)",
                          d->kernel_size, (size_t)KR_KERNEL_V1_SIZE, sizeof(kr_kernel));
    if (d->n_pipelines && d->pipeline_size != sizeof(kr_pipeline))
        return kr_err_set(err, KR_ERR_ABI, "pipeline record size %u, this kernrun expects %zu", d->pipeline_size,
                          sizeof(kr_pipeline));
    if (d->n_archs && d->arch_size != sizeof(kr_arch_entry))
        return kr_err_set(err, KR_ERR_ABI, "arch record size %u, this kernrun expects %zu", d->arch_size,
                          sizeof(kr_arch_entry));
    if (!plugin_name_ok(d->name))
        return kr_err_set(err, KR_ERR_PLUGIN, "plugin name missing or invalid (want [A-Za-z0-9_.-]{1,64})");
    if (!d->version)
        return kr_err_set(err, KR_ERR_PLUGIN, "plugin '%s' has no version string", d->name);
    if (d->n_kernels > KR__PLUGIN_MAX_ENTRIES || d->n_pipelines > KR__PLUGIN_MAX_ENTRIES ||
        d->n_archs > KR__PLUGIN_MAX_ENTRIES)
        return kr_err_set(err, KR_ERR_PLUGIN, "plugin '%s': implausible table sizes (%u kernels, %u pipelines, %u archs)",
                          d->name, d->n_kernels, d->n_pipelines, d->n_archs);
    if ((d->n_kernels && !d->kernels) || (d->n_pipelines && !d->pipelines) || (d->n_archs && !d->archs))
        return kr_err_set(err, KR_ERR_PLUGIN, "plugin '%s': a table count is set but its pointer is NULL", d->name);
    return KR_OK;
}

static const loaded_plugin *find_plugin(const kr_runtime *rt, const char *name)
{
    for (size_t i = 0; i < rt->n_plugins; i++)
        if (strcmp(rt->plugins[i].desc->name, name) == 0)
            return &rt->plugins[i];
    return NULL;
}

/* Load one file. On failure, err says why (without the path). *skipped is
 * set when the file was already loaded (not an error). */
static kr_status plugin_load_file(kr_runtime *rt, const char *path, bool *skipped, kr_err *err)
{
    *skipped = false;
    char real[PATH_MAX];
    struct stat sb;
    if (stat(path, &sb) != 0)
        return kr_err_set(err, KR_ERR_IO, "cannot stat: %s", strerror(errno));
    if (!S_ISREG(sb.st_mode))
        return kr_err_set(err, KR_ERR_PLUGIN, "not a regular file");
    if (sb.st_mode & S_IWOTH)
        return kr_err_set(err, KR_ERR_PLUGIN, "refusing a world-writable plugin file (mode %03o)",
                          (unsigned)(sb.st_mode & 0777));
    if (!realpath(path, real))
        return kr_err_set(err, KR_ERR_IO, "cannot resolve path: %s", strerror(errno));
    for (size_t i = 0; i < rt->n_plugins; i++) {
        if (strcmp(rt->plugins[i].real, real) == 0) {
            *skipped = true;
            return KR_OK;
        }
    }

    /* RTLD_NOW: unresolved symbols fail here, not mid-run. RTLD_LOCAL: the
     * plugin's symbols never interpose on the host or other plugins. */
    dlerror();
    void *h = dlopen(real, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        return kr_err_set(err, KR_ERR_PLUGIN, "dlopen failed: %s", why ? why : "unknown reason");
    }
    kr_status st;
    dlerror();
    void *sym = dlsym(h, KR_PLUGIN_ENTRY_SYMBOL);
    if (!sym) {
        st = kr_err_set(err, KR_ERR_PLUGIN, "no entry symbol '%s' (not a kernrun plugin, or built without "
                                            "KR_PLUGIN_DEFINE)", KR_PLUGIN_ENTRY_SYMBOL);
        goto err_dlclose;
    }
    kr_plugin_entry_fn entry;
    memcpy(&entry, &sym, sizeof entry); /* object -> function pointer without a pedantic cast warning */
    const kr_plugin_desc *d = entry();
    if (!d) {
        st = kr_err_set(err, KR_ERR_PLUGIN, "%s() returned NULL", KR_PLUGIN_ENTRY_SYMBOL);
        goto err_dlclose;
    }
    st = check_desc(d, err);
    if (st != KR_OK)
        goto err_dlclose;
    const loaded_plugin *dup = find_plugin(rt, d->name);
    if (dup) {
        st = kr_err_set(err, KR_ERR_EXISTS, "a plugin named '%s' is already loaded from %s", d->name, dup->path);
        goto err_dlclose;
    }

    /* Register before init so every record is validated before plugin code
     * runs; state is patched in after init. */
    st = kr_registry_add_kernels(rt->reg, d->name, NULL, d->kernels, d->n_kernels, d->kernel_size, err);
    if (st == KR_OK)
        st = kr_registry_add_pipelines(rt->reg, d->name, NULL, d->pipelines, d->n_pipelines, err);
    if (st == KR_OK)
        st = kr_registry_add_archs(rt->reg, d->name, NULL, d->archs, d->n_archs, err);
    if (st != KR_OK) {
        kr_err_prefix(err, "plugin '%s'", d->name);
        goto err_unregister;
    }

    void *state = NULL;
    if (d->init) {
        kr_err ierr;
        kr_err_clear(&ierr);
        kr_status ist = d->init(&rt->host, &state, &ierr);
        if (ist != KR_OK) {
            st = kr_err_set(err, KR_ERR_PLUGIN, "plugin '%s': init failed: %s", d->name, kr_err_msg(&ierr, ist));
            goto err_unregister;
        }
    }
    kr__registry_set_state(rt->reg, d->name, state);

    loaded_plugin lp = {
        .handle = h, .desc = d, .state = state, .path = dup_str(path), .real = dup_str(real),
        .n_kernels = d->n_kernels, .n_pipelines = d->n_pipelines, .n_archs = d->n_archs,
    };
    if (!lp.path || !lp.real || !push((void **)&rt->plugins, &rt->n_plugins, &rt->cap_plugins, &lp, sizeof lp)) {
        free(lp.path);
        free(lp.real);
        st = kr_err_set(err, KR_ERR_NOMEM, "out of memory");
        goto err_fini;
    }
    KR_LOGI(KR__LOG, "loaded plugin '%s' %s from %s (%u kernels, %u pipelines, %u archs)", d->name, d->version,
            path, d->n_kernels, d->n_pipelines, d->n_archs);
    return KR_OK;

err_fini:
    if (d->fini)
        d->fini(&rt->host, state);
err_unregister:
    kr__registry_remove_plugin(rt->reg, d->name);
err_dlclose:
    dlclose(h);
    return st;
}

kr_status kr_runtime_load_plugin(kr_runtime *rt, const char *path, kr_err *err)
{
    if (!rt || !path)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_runtime_load_plugin: NULL argument");
    /* dlopen searches the library path for names without a slash */
    char buf[PATH_MAX];
    if (!strchr(path, '/')) {
        int n = snprintf(buf, sizeof buf, "./%s", path);
        if (n < 0 || (size_t)n >= sizeof buf)
            return kr_err_set(err, KR_ERR_LIMIT, "plugin %s: path too long", path);
        path = buf;
    }
    kr_err local;
    kr_err_clear(&local);
    bool skipped;
    kr_status st = plugin_load_file(rt, path, &skipped, &local);
    if (st != KR_OK) {
        KR_LOGW(KR__LOG, "skipping plugin %s: %s", path, kr_err_msg(&local, st));
        record_failure(&rt->fails, &rt->n_fails, &rt->cap_fails, path, st, kr_err_msg(&local, st));
        return kr_err_set(err, st, "plugin %s: %s", path, kr_err_msg(&local, st));
    }
    return KR_OK;
}

static bool has_so_suffix(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, ".so") == 0;
}

/* Directory usable as a plugin source? Not world-writable (anyone could
 * drop code into it). */
static kr_status dir_check(const char *dir, kr_err *err)
{
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return kr_err_set(err, KR_ERR_IO, "cannot open plugin directory: %s", strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        return kr_err_set(err, KR_ERR_IO, "not a directory");
    if (sb.st_mode & S_IWOTH)
        return kr_err_set(err, KR_ERR_CONFIG, "refusing world-writable plugin directory (mode %03o)",
                          (unsigned)(sb.st_mode & 0777));
    return KR_OK;
}

static kr_status scan_dir(kr_runtime *rt, const char *dir, int depth, kr_err *err)
{
    kr_status st = dir_check(dir, err);
    if (st != KR_OK) {
        record_failure(&rt->dir_fails, &rt->n_dir_fails, &rt->cap_dir_fails, dir, st, kr_err_msg(err, st));
        KR_LOGW(KR__LOG, "plugin directory %s: %s", dir, kr_err_msg(err, st));
        return st;
    }
    struct dirent **names = NULL;
    int n = scandir(dir, &names, NULL, alphasort);
    if (n < 0) {
        st = kr_err_set(err, KR_ERR_IO, "cannot read plugin directory: %s", strerror(errno));
        record_failure(&rt->dir_fails, &rt->n_dir_fails, &rt->cap_dir_fails, dir, st, kr_err_msg(err, st));
        return st;
    }
    for (int i = 0; i < n; i++) {
        const char *nm = names[i]->d_name;
        if (nm[0] == '.' || (unsigned)i >= KR__PLUGIN_MAX_FILES)
            continue;
        char path[PATH_MAX];
        int len = snprintf(path, sizeof path, "%s/%s", dir, nm);
        if (len < 0 || (size_t)len >= sizeof path)
            continue;
        struct stat sb;
        if (stat(path, &sb) != 0)
            continue;
        if (S_ISDIR(sb.st_mode)) {
            if (depth == 0) {
                kr_err sub;
                kr_err_clear(&sub);
                (void)scan_dir(rt, path, 1, &sub); /* failures recorded inside */
            }
        } else if (S_ISREG(sb.st_mode) && has_so_suffix(nm)) {
            (void)kr_runtime_load_plugin(rt, path, NULL); /* failures recorded inside */
        }
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return KR_OK;
}

kr_status kr_runtime_load_plugin_dir(kr_runtime *rt, const char *dir, kr_err *err)
{
    if (!rt || !dir)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_runtime_load_plugin_dir: NULL argument");
    kr_status st = scan_dir(rt, dir, 0, err);
    if (st != KR_OK)
        return kr_err_prefix(err, "%s", dir);
    return KR_OK;
}

/* Scan every directory of a colon-separated list. Missing directories are
 * reported when `warn_missing`. */
static void scan_path_list(kr_runtime *rt, const char *list, bool warn_missing)
{
    if (!list)
        return;
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ":");
        if (n > 0 && n < PATH_MAX) {
            char dir[PATH_MAX];
            memcpy(dir, p, n);
            dir[n] = '\0';
            struct stat sb;
            if (!warn_missing && stat(dir, &sb) != 0) {
                KR_LOGD(KR__LOG, "plugin directory %s does not exist; skipped", dir);
            } else {
                kr_err e;
                kr_err_clear(&e);
                (void)scan_dir(rt, dir, 0, &e);
            }
        }
        p += n;
        if (*p == ':')
            p++;
    }
}

/* True when this libkernrun is the one in the build tree (then the build
 * tree's plugins are used instead of the installed ones). */
static bool running_from_build_tree(void)
{
#ifdef KR_BUILD_PLUGIN_DIR
    Dl_info info;
    if (!dladdr((void *)(uintptr_t)&kr_runtime_open, &info) || !info.dli_fname)
        return false;
    char lib[PATH_MAX], root[PATH_MAX];
    if (!realpath(info.dli_fname, lib))
        return false;
    char build[PATH_MAX];
    int n = snprintf(build, sizeof build, "%s/..", KR_BUILD_PLUGIN_DIR);
    if (n < 0 || (size_t)n >= sizeof build || !realpath(build, root))
        return false;
    size_t rl = strlen(root);
    return strncmp(lib, root, rl) == 0 && lib[rl] == '/';
#else
    return false;
#endif
}

static void load_all_plugins(kr_runtime *rt)
{
    const char *nosys = getenv("KERNRUN_NO_SYSTEM_PLUGINS");
    if (!(nosys && strcmp(nosys, "1") == 0)) {
#ifdef KR_BUILD_PLUGIN_DIR
        if (running_from_build_tree())
            scan_path_list(rt, KR_BUILD_PLUGIN_DIR, false);
        else
#endif
        {
#ifdef KR_INSTALL_PLUGIN_DIR
            scan_path_list(rt, KR_INSTALL_PLUGIN_DIR, false);
#endif
        }
    }
    scan_path_list(rt, getenv("KERNRUN_PLUGIN_PATH"), true);
    scan_path_list(rt, kr_config_get(rt->cfg, "runtime", "plugin_path"), true);
}

/* ---- open / close ---- */

static kr_status open_backends(kr_runtime *rt, kr_err *err)
{
    kr_status st = kr_backend_create(KR_BACKEND_CPU, 0, &rt->cpu, err);
    if (st != KR_OK)
        return kr_err_prefix(err, "creating the CPU backend");
    rt->active = rt->cpu;
    const char *want = kr_config_get(rt->cfg, "runtime", "backend");
    if (!want || strcasecmp(want, "cpu") == 0)
        return KR_OK;
    int64_t dev = 0;
    if (kr_config_get_int(rt->cfg, "runtime", "device", &dev) != KR_OK)
        dev = 0;
    kr__backend_opts opts = {.config = rt->cfg};
    kr_err cerr;
    kr_err_clear(&cerr);
    st = kr__cuda_backend_create_opts((int)dev, &opts, &rt->cuda, &cerr);
    if (st == KR_OK) {
        rt->active = rt->cuda;
        return KR_OK;
    }
    snprintf(rt->cuda_status, sizeof rt->cuda_status, "%s", kr_err_msg(&cerr, st));
    if (strcasecmp(want, "cuda") == 0)
        return kr_err_set(err, st, "backend=cuda requested (%s): %s", kr_config_origin(rt->cfg, "runtime", "backend"),
                          rt->cuda_status);
    KR_LOGI(KR__LOG, "CUDA not available, using the CPU backend: %s", rt->cuda_status);
    return KR_OK;
}

kr_status kr_runtime_open(const kr_config *cfg, kr_runtime **out, kr_err *err)
{
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_runtime_open: out is NULL");
    *out = NULL;
    kr_status st;
    kr_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return kr_err_set(err, KR_ERR_NOMEM, "runtime: out of memory");
    if (!cfg) {
        st = kr_config_create(&rt->owned_cfg, err);
        if (st == KR_OK)
            st = kr_config_apply_env(rt->owned_cfg, err);
        if (st != KR_OK)
            goto err_close;
        cfg = rt->owned_cfg;
    }
    rt->cfg = cfg;
    kr_log_level lvl;
    const char *lvl_s = kr_config_get(cfg, "runtime", "log_level");
    if (lvl_s && kr_log_level_parse(lvl_s, &lvl) == KR_OK)
        kr_log_set_level(lvl);
    host_init(rt);
    st = kr_registry_create(&rt->reg, err);
    if (st != KR_OK)
        goto err_close;
    st = open_backends(rt, err);
    if (st != KR_OK)
        goto err_close;
    load_all_plugins(rt);
    *out = rt;
    return KR_OK;

err_close:
    kr_runtime_close(rt);
    return st;
}

void kr_runtime_close(kr_runtime *rt)
{
    if (!rt)
        return;
    /* fini in reverse load order, while backends still exist */
    for (size_t i = rt->n_plugins; i-- > 0;) {
        loaded_plugin *p = &rt->plugins[i];
        if (p->desc->fini)
            p->desc->fini(&rt->host, p->state);
    }
    kr_registry_free(rt->reg);      /* points into plugin memory: before dlclose */
    kr_backend_destroy(rt->cuda);   /* may hold modules built from plugin sources */
    kr_backend_destroy(rt->cpu);
    for (size_t i = rt->n_plugins; i-- > 0;) {
        dlclose(rt->plugins[i].handle);
        free(rt->plugins[i].path);
        free(rt->plugins[i].real);
    }
    free(rt->plugins);
    for (size_t i = 0; i < rt->n_fails; i++) {
        free(rt->fails[i].path);
        free(rt->fails[i].reason);
    }
    free(rt->fails);
    for (size_t i = 0; i < rt->n_dir_fails; i++) {
        free(rt->dir_fails[i].path);
        free(rt->dir_fails[i].reason);
    }
    free(rt->dir_fails);
    kr_config_free(rt->owned_cfg);
    free(rt);
}

/* ---- accessors ---- */

const kr_config *kr_runtime_config(const kr_runtime *rt) { return rt ? rt->cfg : NULL; }
kr_registry *kr_runtime_registry(kr_runtime *rt) { return rt ? rt->reg : NULL; }
const kr_host *kr_runtime_host(const kr_runtime *rt) { return rt ? &rt->host : NULL; }
kr_backend *kr_runtime_backend(kr_runtime *rt) { return rt ? rt->active : NULL; }
kr_backend *kr_runtime_cpu_backend(kr_runtime *rt) { return rt ? rt->cpu : NULL; }
const char *kr_runtime_cuda_status(const kr_runtime *rt) { return rt ? rt->cuda_status : ""; }
size_t kr_runtime_plugin_count(const kr_runtime *rt) { return rt ? rt->n_plugins : 0; }
size_t kr_runtime_plugin_failure_count(const kr_runtime *rt) { return rt ? rt->n_fails : 0; }
size_t kr_runtime_dir_failure_count(const kr_runtime *rt) { return rt ? rt->n_dir_fails : 0; }

bool kr_runtime_plugin_at(const kr_runtime *rt, size_t i, kr_plugin_info *out)
{
    if (!rt || i >= rt->n_plugins || !out)
        return false;
    const loaded_plugin *p = &rt->plugins[i];
    *out = (kr_plugin_info){
        .name = p->desc->name,
        .version = p->desc->version,
        .description = p->desc->description ? p->desc->description : "",
        .path = p->path,
        .n_kernels = p->n_kernels,
        .n_pipelines = p->n_pipelines,
        .n_archs = p->n_archs,
    };
    return true;
}

bool kr_runtime_plugin_failure_at(const kr_runtime *rt, size_t i, kr_plugin_failure *out)
{
    if (!rt || i >= rt->n_fails || !out)
        return false;
    *out = (kr_plugin_failure){.path = rt->fails[i].path, .code = rt->fails[i].code, .reason = rt->fails[i].reason};
    return true;
}

bool kr_runtime_dir_failure_at(const kr_runtime *rt, size_t i, kr_plugin_failure *out)
{
    if (!rt || i >= rt->n_dir_fails || !out)
        return false;
    *out = (kr_plugin_failure){
        .path = rt->dir_fails[i].path, .code = rt->dir_fails[i].code, .reason = rt->dir_fails[i].reason};
    return true;
}

/* ---- running ---- */

kr_status kr_runtime_run_op(kr_runtime *rt, const kr_kernel_args *args, kr_stream *s, kr_err *err)
{
    if (!rt || !args)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_runtime_run_op: NULL argument");
    kr_kernel_ref ref;
    kr_status st = kr_registry_dispatch(rt->reg, NULL, args, rt->active->kind, kr_backend_device_info(rt->active),
                                        kr_backend_device_info(rt->cpu), &ref, err);
    if (st != KR_OK)
        return st;
    kr_backend *be = ref.kernel->backend == KR_BACKEND_CPU ? rt->cpu : rt->active;
    if (be->kind != ref.kernel->backend)
        return kr_err_set(err, KR_ERR_INTERNAL, "op '%s': kernel '%s' is for %s but that backend is not active",
                          args->op, ref.kernel->name, kr_backend_kind_name(ref.kernel->backend));
    if (be != rt->active) {
        /* CPU fallback on host-accessible memory the device may still be writing */
        st = kr_backend_sync(rt->active, s, err);
        if (st != KR_OK)
            return kr_err_prefix(err, "op '%s': waiting for the device before the CPU fallback", args->op);
        s = NULL;
    }
    kr_kernel_call call = {
        .host = &rt->host,
        .kernel = ref.kernel,
        .plugin_state = ref.plugin_state,
        .backend = be,
        .stream = s,
        .args = args,
    };
    st = ref.kernel->run(&call, err);
    if (st != KR_OK)
        return kr_err_prefix(err, "op '%s' (kernel %s)", args->op, ref.kernel->name);
    return KR_OK;
}

int kr_runtime_run_pipeline(kr_runtime *rt, const char *name, int argc, char **argv)
{
    kr_pipeline_ref ref;
    if (!rt || !kr_registry_find_pipeline(rt->reg, name, &ref))
        return -1;
    return ref.pipeline->run(&rt->host, ref.plugin_state, argc, argv);
}
