/* Kernel / pipeline / architecture registry and dispatch. */
#include "kernrun/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/checked.h"
#include "kernrun/plugin.h"
#include "registry_internal.h"

typedef struct kernel_slot {
    kr_kernel kernel;      /* zero-extended copy of the plugin's record */
    void *state;
    char *plugin;
} kernel_slot;

typedef struct pipeline_slot {
    kr_pipeline pipeline;
    void *state;
    char *plugin;
} pipeline_slot;

typedef struct arch_slot {
    kr_arch_entry arch;
    void *state;
    char *plugin;
} arch_slot;

struct kr_registry {
    kernel_slot *kernels;     /* (n_kernels,) registration order */
    size_t n_kernels, cap_kernels;
    pipeline_slot *pipes;     /* (n_pipes,) */
    size_t n_pipes, cap_pipes;
    arch_slot *archs;         /* (n_archs,) */
    size_t n_archs, cap_archs;
};

kr_status kr_registry_create(kr_registry **out, kr_err *err)
{
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_registry_create: out is NULL");
    *out = calloc(1, sizeof **out);
    if (!*out)
        return kr_err_set(err, KR_ERR_NOMEM, "registry: out of memory");
    return KR_OK;
}

void kr_registry_free(kr_registry *reg)
{
    if (!reg)
        return;
    for (size_t i = 0; i < reg->n_kernels; i++)
        free(reg->kernels[i].plugin);
    for (size_t i = 0; i < reg->n_pipes; i++)
        free(reg->pipes[i].plugin);
    for (size_t i = 0; i < reg->n_archs; i++)
        free(reg->archs[i].plugin);
    free(reg->kernels);
    free(reg->pipes);
    free(reg->archs);
    free(reg);
}

/* Make room for `more` elements of `elem` bytes in *arr (capacity *cap). */
static kr_status grow(void **arr, size_t *cap, size_t n, size_t more, size_t elem, kr_err *err)
{
    size_t need;
    if (kr_add_overflow_size(n, more, &need))
        return kr_err_set(err, KR_ERR_OVERFLOW, "registry: too many entries");
    if (need <= *cap)
        return KR_OK;
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (kr_mul_overflow_size(ncap, 2, &ncap))
            return kr_err_set(err, KR_ERR_OVERFLOW, "registry: too many entries");
    }
    size_t bytes;
    if (kr_mul_overflow_size(ncap, elem, &bytes))
        return kr_err_set(err, KR_ERR_OVERFLOW, "registry: too many entries");
    void *p = realloc(*arr, bytes);
    if (!p)
        return kr_err_set(err, KR_ERR_NOMEM, "registry: out of memory");
    *arr = p;
    *cap = ncap;
    return KR_OK;
}

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

static const kernel_slot *find_kernel_slot(const kr_registry *reg, const char *name)
{
    for (size_t i = 0; i < reg->n_kernels; i++)
        if (strcmp(reg->kernels[i].kernel.name, name) == 0)
            return &reg->kernels[i];
    return NULL;
}

kr_status kr_registry_add_kernels(kr_registry *reg, const char *plugin, void *plugin_state,
                                  const kr_kernel *kernels, size_t n, size_t kernel_size, kr_err *err)
{
    if (!reg || (n > 0 && !kernels))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "registry: add_kernels: NULL argument");
    if (n == 0)
        return KR_OK;
    if (kernel_size < KR_KERNEL_V1_SIZE || kernel_size > sizeof(kr_kernel))
        return kr_err_set(err, KR_ERR_ABI, "kernel record size %zu not supported (core accepts %zu..%zu)",
                          kernel_size, (size_t)KR_KERNEL_V1_SIZE, sizeof(kr_kernel));
    kr_status st = grow((void **)&reg->kernels, &reg->cap_kernels, reg->n_kernels, n, sizeof(kernel_slot), err);
    if (st != KR_OK)
        return st;

    /* Validate everything before adding anything. */
    const unsigned char *base = (const unsigned char *)kernels;
    for (size_t i = 0; i < n; i++) {
        kr_kernel k;
        memset(&k, 0, sizeof k);
        memcpy(&k, base + i * kernel_size, kernel_size);
        if (!k.name || !k.name[0])
            return kr_err_set(err, KR_ERR_INVALID_ARG, "kernel #%zu has no name", i);
        if (!k.op || !k.op[0])
            return kr_err_set(err, KR_ERR_INVALID_ARG, "kernel '%s' has no op", k.name);
        if (!k.run)
            return kr_err_set(err, KR_ERR_INVALID_ARG, "kernel '%s' has no run function", k.name);
        if ((int)k.backend < 0 || k.backend >= KR_BACKEND_KIND_COUNT)
            return kr_err_set(err, KR_ERR_INVALID_ARG, "kernel '%s' has unknown backend %d", k.name,
                              (int)k.backend);
        if (k.n_dtypes < 0 || k.n_dtypes > KR_KERNEL_MAX_DTYPES)
            return kr_err_set(err, KR_ERR_INVALID_ARG, "kernel '%s' has n_dtypes %d (max %d)", k.name,
                              k.n_dtypes, KR_KERNEL_MAX_DTYPES);
        for (int d = 0; d < k.n_dtypes; d++)
            if (!kr_dtype_valid((int)k.dtypes[d]))
                return kr_err_set(err, KR_ERR_INVALID_ARG, "kernel '%s' dtypes[%d] = %d is not a valid type",
                                  k.name, d, (int)k.dtypes[d]);
        if (k.cuda && (!k.cuda->code || !k.cuda->entry || !k.cuda->name))
            return kr_err_set(err, KR_ERR_INVALID_ARG, "kernel '%s': CUDA source lacks name, code or entry",
                              k.name);
        if (find_kernel_slot(reg, k.name))
            return kr_err_set(err, KR_ERR_EXISTS, "kernel '%s' is already registered", k.name);
        for (size_t j = 0; j < i; j++) {
            const kr_kernel *o = (const kr_kernel *)(const void *)(base + j * kernel_size);
            if (strcmp(o->name, k.name) == 0)
                return kr_err_set(err, KR_ERR_EXISTS, "kernel '%s' appears twice in the table", k.name);
        }
    }
    char **names = calloc(n, sizeof *names);
    if (!names)
        return kr_err_set(err, KR_ERR_NOMEM, "registry: out of memory");
    for (size_t i = 0; i < n; i++) {
        names[i] = dup_str(plugin);
        if (!names[i]) {
            for (size_t j = 0; j < i; j++)
                free(names[j]);
            free(names);
            return kr_err_set(err, KR_ERR_NOMEM, "registry: out of memory");
        }
    }
    for (size_t i = 0; i < n; i++) {
        kernel_slot *s = &reg->kernels[reg->n_kernels++];
        memset(&s->kernel, 0, sizeof s->kernel);
        memcpy(&s->kernel, base + i * kernel_size, kernel_size);
        s->state = plugin_state;
        s->plugin = names[i];
    }
    free(names);
    return KR_OK;
}

kr_status kr_registry_add_pipelines(kr_registry *reg, const char *plugin, void *plugin_state,
                                    const kr_pipeline *pipes, size_t n, kr_err *err)
{
    if (!reg || (n > 0 && !pipes))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "registry: add_pipelines: NULL argument");
    for (size_t i = 0; i < n; i++) {
        if (!pipes[i].name || !pipes[i].name[0] || !pipes[i].run)
            return kr_err_set(err, KR_ERR_INVALID_ARG, "pipeline #%zu lacks a name or run function", i);
        if (kr_registry_find_pipeline(reg, pipes[i].name, NULL))
            return kr_err_set(err, KR_ERR_EXISTS, "pipeline '%s' is already registered", pipes[i].name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(pipes[j].name, pipes[i].name) == 0)
                return kr_err_set(err, KR_ERR_EXISTS, "pipeline '%s' appears twice in the table", pipes[i].name);
    }
    kr_status st = grow((void **)&reg->pipes, &reg->cap_pipes, reg->n_pipes, n, sizeof(pipeline_slot), err);
    if (st != KR_OK)
        return st;
    size_t first = reg->n_pipes;
    for (size_t i = 0; i < n; i++) {
        pipeline_slot *s = &reg->pipes[reg->n_pipes];
        s->pipeline = pipes[i];
        s->state = plugin_state;
        s->plugin = dup_str(plugin);
        if (!s->plugin) {
            while (reg->n_pipes > first)
                free(reg->pipes[--reg->n_pipes].plugin);
            return kr_err_set(err, KR_ERR_NOMEM, "registry: out of memory");
        }
        reg->n_pipes++;
    }
    return KR_OK;
}

kr_status kr_registry_add_archs(kr_registry *reg, const char *plugin, void *plugin_state,
                                const kr_arch_entry *archs, size_t n, kr_err *err)
{
    if (!reg || (n > 0 && !archs))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "registry: add_archs: NULL argument");
    for (size_t i = 0; i < n; i++) {
        if (!archs[i].name || !archs[i].name[0] || !archs[i].iface)
            return kr_err_set(err, KR_ERR_INVALID_ARG, "architecture #%zu lacks a name or interface", i);
        if (kr_registry_find_arch(reg, archs[i].name))
            return kr_err_set(err, KR_ERR_EXISTS, "architecture '%s' is already registered", archs[i].name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(archs[j].name, archs[i].name) == 0)
                return kr_err_set(err, KR_ERR_EXISTS, "architecture '%s' appears twice in the table",
                                  archs[i].name);
    }
    kr_status st = grow((void **)&reg->archs, &reg->cap_archs, reg->n_archs, n, sizeof(arch_slot), err);
    if (st != KR_OK)
        return st;
    size_t first = reg->n_archs;
    for (size_t i = 0; i < n; i++) {
        arch_slot *s = &reg->archs[reg->n_archs];
        s->arch = archs[i];
        s->state = plugin_state;
        s->plugin = dup_str(plugin);
        if (!s->plugin) {
            while (reg->n_archs > first)
                free(reg->archs[--reg->n_archs].plugin);
            return kr_err_set(err, KR_ERR_NOMEM, "registry: out of memory");
        }
        reg->n_archs++;
    }
    return KR_OK;
}

size_t kr_registry_kernel_count(const kr_registry *reg) { return reg ? reg->n_kernels : 0; }
size_t kr_registry_pipeline_count(const kr_registry *reg) { return reg ? reg->n_pipes : 0; }
size_t kr_registry_arch_count(const kr_registry *reg) { return reg ? reg->n_archs : 0; }

static void kernel_ref(const kernel_slot *s, kr_kernel_ref *out)
{
    out->kernel = &s->kernel;
    out->plugin_state = s->state;
    out->plugin = s->plugin;
}

bool kr_registry_kernel_at(const kr_registry *reg, size_t i, kr_kernel_ref *out)
{
    if (!reg || i >= reg->n_kernels || !out)
        return false;
    kernel_ref(&reg->kernels[i], out);
    return true;
}

bool kr_registry_pipeline_at(const kr_registry *reg, size_t i, kr_pipeline_ref *out)
{
    if (!reg || i >= reg->n_pipes || !out)
        return false;
    out->pipeline = &reg->pipes[i].pipeline;
    out->plugin_state = reg->pipes[i].state;
    out->plugin = reg->pipes[i].plugin;
    return true;
}

bool kr_registry_arch_at(const kr_registry *reg, size_t i, kr_arch_ref *out)
{
    if (!reg || i >= reg->n_archs || !out)
        return false;
    out->arch = &reg->archs[i].arch;
    out->plugin_state = reg->archs[i].state;
    out->plugin = reg->archs[i].plugin;
    return true;
}

/* Order: higher priority first, then registration order (stable). */
static bool ranks_before(const kernel_slot *a, size_t ia, const kernel_slot *b, size_t ib)
{
    if (a->kernel.priority != b->kernel.priority)
        return a->kernel.priority > b->kernel.priority;
    return ia < ib;
}

size_t kr_registry_find_kernels(const kr_registry *reg, const char *op, kr_kernel_ref *out, size_t cap)
{
    if (!reg || !op)
        return 0;
    size_t total = 0;
    for (size_t i = 0; i < reg->n_kernels; i++)
        if (strcmp(reg->kernels[i].kernel.op, op) == 0)
            total++;
    if (!out || cap == 0 || total == 0)
        return total;
    /* Keep the best `cap` so far, sorted (insertion into a bounded list). */
    size_t *idx = malloc((cap < total ? cap : total) * sizeof *idx);
    if (!idx)
        return 0;
    size_t kept = 0, lim = cap < total ? cap : total;
    for (size_t i = 0; i < reg->n_kernels; i++) {
        if (strcmp(reg->kernels[i].kernel.op, op) != 0)
            continue;
        size_t pos = kept;
        while (pos > 0 && ranks_before(&reg->kernels[i], i, &reg->kernels[idx[pos - 1]], idx[pos - 1]))
            pos--;
        if (pos >= lim)
            continue;
        size_t end = kept < lim ? kept : lim - 1;
        memmove(idx + pos + 1, idx + pos, (end - pos) * sizeof *idx);
        idx[pos] = i;
        if (kept < lim)
            kept++;
    }
    for (size_t j = 0; j < kept; j++)
        kernel_ref(&reg->kernels[idx[j]], &out[j]);
    free(idx);
    return total;
}

bool kr_registry_find_kernel_by_name(const kr_registry *reg, const char *name, kr_kernel_ref *out)
{
    if (!reg || !name)
        return false;
    const kernel_slot *s = find_kernel_slot(reg, name);
    if (!s)
        return false;
    if (out)
        kernel_ref(s, out);
    return true;
}

bool kr_registry_find_pipeline(const kr_registry *reg, const char *name, kr_pipeline_ref *out)
{
    if (!reg || !name)
        return false;
    for (size_t i = 0; i < reg->n_pipes; i++) {
        if (strcmp(reg->pipes[i].pipeline.name, name) == 0) {
            if (out)
                kr_registry_pipeline_at(reg, i, out);
            return true;
        }
    }
    return false;
}

const kr_arch_entry *kr_registry_find_arch(const kr_registry *reg, const char *name)
{
    if (!reg || !name)
        return NULL;
    for (size_t i = 0; i < reg->n_archs; i++)
        if (strcmp(reg->archs[i].arch.name, name) == 0)
            return &reg->archs[i].arch;
    return NULL;
}

/* ---- dispatch ---- */

static bool dtypes_match(const kr_kernel *k, const kr_kernel_args *args)
{
    if (k->n_dtypes == 0)
        return true;
    int want = args->n_src + (args->dst ? 1 : 0);
    if (k->n_dtypes != want)
        return false;
    for (int i = 0; i < args->n_src; i++)
        if (!args->src[i] || args->src[i]->type != k->dtypes[i])
            return false;
    if (args->dst && args->dst->type != k->dtypes[args->n_src])
        return false;
    return true;
}

static bool tensor_host_ok(const kr_tensor *t)
{
    return !t || !t->buf || (t->buf->flags & KR_BUFFER_HOST_ACCESSIBLE);
}

static bool args_host_accessible(const kr_kernel_args *args)
{
    for (int i = 0; i < args->n_src; i++)
        if (!tensor_host_ok(args->src[i]))
            return false;
    return tensor_host_ok(args->dst);
}

/* A kernel of a non-CPU backend may only see tensors that live in that
 * backend's memory: plain host memory (buf NULL) or another backend's buffer
 * would be dereferenced as a device address. Checked here, once, rather than
 * in every plugin's supports(). */
static bool tensor_on_kind(const kr_tensor *t, kr_backend_kind kind)
{
    return !t || (t->buf && t->buf->backend && t->buf->backend->kind == kind);
}

static bool args_on_kind(const kr_kernel_args *args, kr_backend_kind kind)
{
    if (kind == KR_BACKEND_CPU)
        return args_host_accessible(args);
    for (int i = 0; i < args->n_src; i++)
        if (!tensor_on_kind(args->src[i], kind))
            return false;
    return tensor_on_kind(args->dst, kind);
}

/* Best candidate on `kind`; returns NULL when none. */
static const kernel_slot *best_on(const kr_registry *reg, const char *op, const kr_kernel_args *args,
                                  kr_backend_kind kind, const kr_device_info *dev, size_t *n_on_kind)
{
    const kernel_slot *best = NULL;
    size_t ibest = 0;
    *n_on_kind = 0;
    for (size_t i = 0; i < reg->n_kernels; i++) {
        const kernel_slot *s = &reg->kernels[i];
        if (s->kernel.backend != kind || strcmp(s->kernel.op, op) != 0)
            continue;
        (*n_on_kind)++;
        if (best && !ranks_before(s, i, best, ibest))
            continue;
        if (!dtypes_match(&s->kernel, args) || !args_on_kind(args, kind))
            continue;
        if (s->kernel.supports && !s->kernel.supports(args, dev))
            continue;
        best = s;
        ibest = i;
    }
    return best;
}

/* "f32, f32 -> f16" */
static void describe_types(const kr_kernel_args *args, char *buf, size_t cap)
{
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < args->n_src && off < cap; i++) {
        int n = snprintf(buf + off, cap - off, "%s%s", i ? ", " : "",
                         args->src[i] ? kr_dtype_name((int)args->src[i]->type) : "null");
        if (n < 0)
            return;
        off += (size_t)n;
    }
    if (args->dst && off < cap)
        snprintf(buf + off, cap - off, " -> %s", kr_dtype_name((int)args->dst->type));
}

kr_status kr_registry_dispatch(const kr_registry *reg, const char *op, const kr_kernel_args *args,
                               kr_backend_kind preferred, const kr_device_info *pref_dev,
                               const kr_device_info *cpu_dev, kr_kernel_ref *out, kr_err *err)
{
    if (!reg || !args || !out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "dispatch: NULL argument");
    if (!op)
        op = args->op;
    if (!op)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "dispatch: no op name");
    if (args->n_src < 0 || (args->n_src > 0 && !args->src))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "dispatch '%s': bad source list (n_src %d)", op, args->n_src);
    out->kernel = NULL;
    out->plugin_state = NULL;
    out->plugin = NULL;

    size_t n_pref = 0, n_cpu = 0;
    const kernel_slot *s = best_on(reg, op, args, preferred, pref_dev, &n_pref);
    bool host_ok = args_host_accessible(args);
    if (!s && preferred != KR_BACKEND_CPU && host_ok)
        s = best_on(reg, op, args, KR_BACKEND_CPU, cpu_dev, &n_cpu);
    else if (!s && preferred != KR_BACKEND_CPU)
        (void)best_on(reg, op, args, KR_BACKEND_CPU, cpu_dev, &n_cpu);
    if (s) {
        kernel_ref(s, out);
        return KR_OK;
    }
    char types[256];
    describe_types(args, types, sizeof types);
    if (n_pref == 0 && n_cpu == 0 && kr_registry_find_kernels(reg, op, NULL, 0) == 0)
        return kr_err_set(err, KR_ERR_NOT_FOUND, "no kernel registered for op '%s' (%s)", op, types);
    if (preferred != KR_BACKEND_CPU && !host_ok && n_cpu > 0)
        return kr_err_set(err, KR_ERR_UNSUPPORTED,
                          "op '%s' (%s): no %s kernel supports these arguments (%zu tried), and the CPU "
                          "fallback cannot run because the data is in device memory",
                          op, types, kr_backend_kind_name(preferred), n_pref);
    if (preferred == KR_BACKEND_CPU)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "op '%s' (%s): none of the %zu cpu kernels supports these arguments",
                          op, types, n_pref);
    return kr_err_set(err, KR_ERR_UNSUPPORTED,
                      "op '%s' (%s): none of the %zu %s and %zu cpu kernels supports these arguments", op, types,
                      n_pref, kr_backend_kind_name(preferred), n_cpu);
}

/* ---- loader support ---- */


void kr__registry_remove_plugin(kr_registry *reg, const char *plugin)
{
    if (!reg || !plugin)
        return;
    size_t w = 0;
    for (size_t i = 0; i < reg->n_kernels; i++) {
        if (strcmp(reg->kernels[i].plugin, plugin) == 0)
            free(reg->kernels[i].plugin);
        else
            reg->kernels[w++] = reg->kernels[i];
    }
    reg->n_kernels = w;
    w = 0;
    for (size_t i = 0; i < reg->n_pipes; i++) {
        if (strcmp(reg->pipes[i].plugin, plugin) == 0)
            free(reg->pipes[i].plugin);
        else
            reg->pipes[w++] = reg->pipes[i];
    }
    reg->n_pipes = w;
    w = 0;
    for (size_t i = 0; i < reg->n_archs; i++) {
        if (strcmp(reg->archs[i].plugin, plugin) == 0)
            free(reg->archs[i].plugin);
        else
            reg->archs[w++] = reg->archs[i];
    }
    reg->n_archs = w;
}

void kr__registry_set_state(kr_registry *reg, const char *plugin, void *state)
{
    if (!reg || !plugin)
        return;
    for (size_t i = 0; i < reg->n_kernels; i++)
        if (strcmp(reg->kernels[i].plugin, plugin) == 0)
            reg->kernels[i].state = state;
    for (size_t i = 0; i < reg->n_pipes; i++)
        if (strcmp(reg->pipes[i].plugin, plugin) == 0)
            reg->pipes[i].state = state;
    for (size_t i = 0; i < reg->n_archs; i++)
        if (strcmp(reg->archs[i].plugin, plugin) == 0)
            reg->archs[i].state = state;
}
