/* kernrun — the driver: `kernrun [global flags] <pipeline> [flags]`.
 * Built-in pipelines come from pipelines.h; plugins add more through the
 * registry. list, help and version live here. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "kernrun/backend.h"
#include "kernrun/config.h"
#include "kernrun/log.h"
#include "kernrun/plugin.h"
#include "kernrun/registry.h"
#include "kernrun/runtime.h"
#include "pipelines.h"

struct kr_app {
    const char *config_path;   /* --config FILE, NULL if none */
    const char *backend;       /* --backend, NULL if none */
    const char *log_level;     /* --log-level, NULL if none */
    kr_config *cfg;            /* built by kr_app_config */
    kr_runtime *rt;            /* opened by kr_app_runtime */
    bool cfg_failed, rt_failed;
};

static const kr_cli_pipeline *const g_pipelines[] = {
#define KR__PIPE_REF(n) &kr_pipe_##n,
    KR_CLI_PIPELINES(KR__PIPE_REF)
#undef KR__PIPE_REF
};
#define KR__N_PIPES (sizeof g_pipelines / sizeof g_pipelines[0])

static const kr_cli_pipeline *builtin(const char *name)
{
    for (size_t i = 0; i < KR__N_PIPES; i++)
        if (strcmp(g_pipelines[i]->name, name) == 0)
            return g_pipelines[i];
    return NULL;
}

/* ---- app accessors ---- */

const char *kr_app_config_path(const kr_app *app) { return app ? app->config_path : NULL; }

kr_config *kr_app_config(kr_app *app)
{
    if (app->cfg || app->cfg_failed)
        return app->cfg;
    kr_err e;
    kr_err_clear(&e);
    kr_config *cfg = NULL;
    kr_status st = kr_config_create(&cfg, &e);
    for (size_t i = 0; st == KR_OK && i < KR__N_PIPES; i++) {
        const kr_cli_pipeline *p = g_pipelines[i];
        if (!p->config_keys || p->n_config_keys == 0)
            continue;
        bool seen = false; /* two pipelines may share one table */
        for (size_t j = 0; j < i; j++)
            if (g_pipelines[j]->config_keys == p->config_keys)
                seen = true;
        if (!seen && (st = kr_config_add_keys(cfg, p->config_keys, p->n_config_keys, &e)) != KR_OK)
            kr_err_prefix(&e, "config keys of pipeline '%s'", p->name);
    }
    if (st == KR_OK && app->config_path)
        st = kr_config_load_file(cfg, app->config_path, &e);
    if (st == KR_OK)
        st = kr_config_apply_env(cfg, &e);
    if (st == KR_OK && app->backend)
        st = kr_config_set(cfg, "runtime", "backend", app->backend, "--backend", &e);
    if (st == KR_OK && app->log_level)
        st = kr_config_set(cfg, "runtime", "log_level", app->log_level, "--log-level", &e);
    if (st != KR_OK) {
        fprintf(stderr, "kernrun: configuration: %s\n", kr_err_msg(&e, st));
        kr_config_free(cfg);
        app->cfg_failed = true;
        return NULL;
    }
    app->cfg = cfg;
    return cfg;
}

kr_runtime *kr_app_runtime(kr_app *app)
{
    if (app->rt || app->rt_failed)
        return app->rt;
    kr_config *cfg = kr_app_config(app);
    if (!cfg) {
        app->rt_failed = true;
        return NULL;
    }
    kr_err e;
    kr_err_clear(&e);
    kr_status st = kr_runtime_open(cfg, &app->rt, &e);
    if (st != KR_OK) {
        fprintf(stderr, "kernrun: starting the runtime: %s\n", kr_err_msg(&e, st));
        app->rt_failed = true;
        app->rt = NULL;
    }
    return app->rt;
}

/* ---- list ---- */

static void print_bytes(uint64_t b)
{
    if (b >= (1ull << 30))
        printf("%.1f GiB", (double)b / (double)(1ull << 30));
    else
        printf("%.1f MiB", (double)b / (double)(1ull << 20));
}

static void print_device(const kr_device_info *di)
{
    if (!di)
        return;
    printf("%s", di->name);
    if (di->kind == KR_BACKEND_CUDA) {
        printf(" (sm_%d%d, %d SMs, ", di->cc_major, di->cc_minor, di->sm_count);
        print_bytes(di->total_memory);
        printf(", driver %d.%d", di->driver_version / 1000, (di->driver_version % 1000) / 10);
        if (di->nvrtc_version)
            printf(", NVRTC %d.%d", di->nvrtc_version / 1000, (di->nvrtc_version % 1000) / 10);
        printf(")");
    } else {
        printf(" (%d cores, ", di->sm_count);
        print_bytes(di->total_memory);
        printf(")");
    }
}

static void print_dtypes(const kr_kernel *k)
{
    if (k->n_dtypes == 0) {
        printf("any");
        return;
    }
    for (int i = 0; i < k->n_dtypes; i++) {
        const char *sep = i == 0 ? "" : (i == k->n_dtypes - 1 ? " -> " : ", ");
        printf("%s%s", sep, kr_dtype_name((int)k->dtypes[i]));
    }
}

static int list_run(kr_app *app, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            puts(kr_pipe_list.usage);
            return 0;
        }
        fprintf(stderr, "kernrun list: unknown argument '%s'\n", argv[i]);
        return 2;
    }
    kr_runtime *rt = kr_app_runtime(app);
    if (!rt)
        return 1;
    kr_registry *reg = kr_runtime_registry(rt);
    kr_backend *active = kr_runtime_backend(rt);

    puts("backends:");
    printf("  cpu   %s  ", active->kind == KR_BACKEND_CPU ? "active   " : "available");
    print_device(kr_backend_device_info(kr_runtime_cpu_backend(rt)));
    putchar('\n');
    if (active->kind == KR_BACKEND_CUDA) {
        printf("  cuda  active     device %d: ", active->device);
        print_device(kr_backend_device_info(active));
        putchar('\n');
        int n = 0;
        if (kr_backend_count_devices(KR_BACKEND_CUDA, &n, NULL) == KR_OK && n > 1)
            printf("                   (%d CUDA devices; select with [runtime] device)\n", n);
    } else {
        int n = 0;
        kr_err e;
        kr_err_clear(&e);
        kr_status st = kr_backend_count_devices(KR_BACKEND_CUDA, &n, &e);
        const char *why = kr_runtime_cuda_status(rt);
        if (st != KR_OK)
            printf("  cuda  unavailable  %s\n", kr_err_msg(&e, st));
        else if (why && why[0])
            printf("  cuda  unavailable  %d device(s), but: %s\n", n, why);
        else
            printf("  cuda  not selected  %d device(s) ([runtime] backend = cpu)\n", n);
    }

    size_t np = kr_runtime_plugin_count(rt);
    printf("plugins (%zu):\n", np);
    for (size_t i = 0; i < np; i++) {
        kr_plugin_info pi;
        if (!kr_runtime_plugin_at(rt, i, &pi))
            continue;
        printf("  %-14s %-8s %s\n", pi.name, pi.version, pi.description);
        printf("  %-14s %-8s %s (%zu kernels, %zu pipelines, %zu archs)\n", "", "", pi.path, pi.n_kernels,
               pi.n_pipelines, pi.n_archs);
    }
    size_t nf = kr_runtime_plugin_failure_count(rt), nd = kr_runtime_dir_failure_count(rt);
    if (nf + nd > 0) {
        printf("rejected (%zu):\n", nf + nd);
        kr_plugin_failure f;
        for (size_t i = 0; i < nd; i++)
            if (kr_runtime_dir_failure_at(rt, i, &f))
                printf("  %s: %s\n", f.path, f.reason);
        for (size_t i = 0; i < nf; i++)
            if (kr_runtime_plugin_failure_at(rt, i, &f))
                printf("  %s: %s\n", f.path, f.reason);
    }

    size_t nk = kr_registry_kernel_count(reg);
    printf("kernels (%zu):\n", nk);
    for (int kind = 0; kind < KR_BACKEND_KIND_COUNT; kind++) {
        bool header = false;
        for (size_t i = 0; i < nk; i++) {
            kr_kernel_ref r;
            if (!kr_registry_kernel_at(reg, i, &r) || (int)r.kernel->backend != kind)
                continue;
            if (!header) {
                printf("  %s:\n", kr_backend_kind_name((kr_backend_kind)kind));
                header = true;
            }
            printf("    %-22s %-30s prio %-3d [", r.kernel->op, r.kernel->name, r.kernel->priority);
            print_dtypes(r.kernel);
            printf("]  (%s)\n", r.plugin);
        }
    }

    puts("pipelines:");
    for (size_t i = 0; i < KR__N_PIPES; i++)
        printf("  %-12s %s\n", g_pipelines[i]->name, g_pipelines[i]->summary ? g_pipelines[i]->summary : "");
    for (size_t i = 0; i < kr_registry_pipeline_count(reg); i++) {
        kr_pipeline_ref r;
        if (kr_registry_pipeline_at(reg, i, &r))
            printf("  %-12s %s  (%s)%s\n", r.pipeline->name, r.pipeline->summary ? r.pipeline->summary : "",
                   r.plugin, builtin(r.pipeline->name) ? " [shadowed by the built-in]" : "");
    }

    size_t na = kr_registry_arch_count(reg);
    printf("architectures (%zu):\n", na);
    for (size_t i = 0; i < na; i++) {
        kr_arch_ref r;
        if (kr_registry_arch_at(reg, i, &r))
            printf("  %-12s interface v%u  (%s)\n", r.arch->name, r.arch->iface_version, r.plugin);
    }
    return 0;
}

const kr_cli_pipeline kr_pipe_list = {
    .name = "list",
    .summary = "show backends, devices, plugins, kernels, pipelines and architectures",
    .usage = "usage: kernrun [--config FILE] [--backend auto|cpu|cuda] list\n"
             "Loads the plugins and prints what the runtime found: backends and devices,\n"
             "plugins with versions (and the files that were rejected, with reasons),\n"
             "kernels per backend, pipelines and model architectures.",
    .run = list_run,
};

/* ---- version ---- */

static int version_run(kr_app *app, int argc, char **argv)
{
    (void)app;
    (void)argc;
    (void)argv;
    printf("kernrun %s (plugin ABI %u)\n", KR_VERSION, KR_PLUGIN_ABI_VERSION);
    return 0;
}

const kr_cli_pipeline kr_pipe_version = {
    .name = "version",
    .summary = "print the version",
    .usage = "usage: kernrun version\nPrints the kernrun version and the plugin ABI version.",
    .run = version_run,
};

/* ---- help ---- */

static void print_global_usage(FILE *f)
{
    fprintf(f, "usage: kernrun [global flags] <pipeline> [flags]\n"
               "global flags:\n"
               "  --config FILE        INI configuration (see docs/CONFIG.md)\n"
               "  --backend B          auto, cpu or cuda (overrides [runtime] backend)\n"
               "  --log-level L        error, warn, info, debug or trace\n"
               "  -h, --help           this help; `kernrun help PIPELINE` for one pipeline,\n"
               "                       `kernrun help config` for the configuration keys\n"
               "  --version            same as `kernrun version`\n");
}

/* `kernrun help config`: every registered key with type, default, env name. */
static int help_config(kr_app *app)
{
    kr_config *cfg = kr_app_config(app);
    if (!cfg)
        return 1;
    printf("configuration keys (INI [section] key = value; env KERNRUN_<SECTION>_<KEY>):\n");
    const char *section = NULL;
    for (size_t i = 0; i < kr_config_key_count(cfg); i++) {
        const kr_config_key *k = kr_config_key_at(cfg, i);
        if (!section || strcmp(section, k->section) != 0) {
            printf("[%s]\n", k->section);
            section = k->section;
        }
        char env[300];
        int n = snprintf(env, sizeof env, "KERNRUN_%s_%s", k->section, k->key);
        for (int j = 8; j < n && env[j]; j++)
            env[j] = (env[j] >= 'a' && env[j] <= 'z') ? (char)(env[j] - 'a' + 'A')
                     : ((env[j] >= 'A' && env[j] <= 'Z') || (env[j] >= '0' && env[j] <= '9')) ? env[j] : '_';
        const char *cur = kr_config_get(cfg, k->section, k->key);
        const char *origin = kr_config_origin(cfg, k->section, k->key);
        printf("  %-14s %-8s default %-8s now %s%s%s%s  (%s)\n", k->key, kr_config_type_name(k->type),
               k->def ? k->def : "-", cur ? cur : "-", origin ? " [" : "", origin ? origin : "", origin ? "]" : "",
               env);
        if (k->help)
            printf("  %-14s %s\n", "", k->help);
    }
    return 0;
}

static int help_run(kr_app *app, int argc, char **argv)
{
    if (argc > 2) {
        fprintf(stderr, "usage: kernrun help [PIPELINE]\n");
        return 2;
    }
    if (argc == 2 && strcmp(argv[1], "config") == 0 && !builtin("config"))
        return help_config(app);
    if (argc == 2) {
        const kr_cli_pipeline *p = builtin(argv[1]);
        if (p) {
            puts(p->usage && p->usage[0] ? p->usage : p->summary);
            return 0;
        }
        kr_runtime *rt = kr_app_runtime(app);
        kr_pipeline_ref r;
        if (rt && kr_registry_find_pipeline(kr_runtime_registry(rt), argv[1], &r)) {
            puts(r.pipeline->usage && r.pipeline->usage[0] ? r.pipeline->usage : r.pipeline->summary);
            return 0;
        }
        fprintf(stderr, "kernrun help: unknown pipeline '%s' (try `kernrun help`)\n", argv[1]);
        return 2;
    }
    print_global_usage(stdout);
    puts("pipelines:");
    for (size_t i = 0; i < KR__N_PIPES; i++)
        printf("  %-12s %s\n", g_pipelines[i]->name, g_pipelines[i]->summary ? g_pipelines[i]->summary : "");
    /* pipelines from plugins, quietly: help must work even when plugins or
     * the config are broken */
    kr_runtime *rt = kr_app_runtime(app);
    if (rt) {
        kr_registry *reg = kr_runtime_registry(rt);
        for (size_t i = 0; i < kr_registry_pipeline_count(reg); i++) {
            kr_pipeline_ref r;
            if (kr_registry_pipeline_at(reg, i, &r) && !builtin(r.pipeline->name))
                printf("  %-12s %s  (plugin %s)\n", r.pipeline->name, r.pipeline->summary ? r.pipeline->summary : "",
                       r.plugin);
        }
    }
    return 0;
}

const kr_cli_pipeline kr_pipe_help = {
    .name = "help",
    .summary = "list pipelines, or show one pipeline's usage",
    .usage = "usage: kernrun help [PIPELINE | config]\n"
             "Without an argument: global flags and all pipelines. `help config`: every\n"
             "configuration key with its type, default, current value and environment name.",
    .run = help_run,
};

/* ---- main ---- */

/* Parse global flags; returns the index of the pipeline name, argc when
 * none, or -1 on a usage error (message printed). */
static int parse_globals(kr_app *app, int argc, char **argv)
{
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        const char *flag = NULL;
        if (a[0] != '-')
            break;
        if (strcmp(a, "--config") == 0 || strncmp(a, "--config=", 9) == 0)
            slot = &app->config_path, flag = "--config";
        else if (strcmp(a, "--backend") == 0 || strncmp(a, "--backend=", 10) == 0)
            slot = &app->backend, flag = "--backend";
        else if (strcmp(a, "--log-level") == 0 || strncmp(a, "--log-level=", 12) == 0)
            slot = &app->log_level, flag = "--log-level";
        else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return -2;
        else if (strcmp(a, "--version") == 0)
            return -3;
        else {
            fprintf(stderr, "kernrun: unknown global flag '%s'\n", a);
            return -1;
        }
        const char *eq = strchr(a, '=');
        if (eq) {
            *slot = eq + 1;
        } else if (i + 1 < argc) {
            *slot = argv[++i];
        } else {
            fprintf(stderr, "kernrun: %s needs a value\n", flag);
            return -1;
        }
    }
    return i;
}

static int run_pipeline(kr_app *app, int argc, char **argv)
{
    const kr_cli_pipeline *p = builtin(argv[0]);
    if (p)
        return p->run(app, argc, argv);
    /* a pipeline from a plugin? */
    kr_runtime *rt = kr_app_runtime(app);
    if (!rt)
        return 1;
    kr_pipeline_ref r;
    if (!kr_registry_find_pipeline(kr_runtime_registry(rt), argv[0], &r)) {
        fprintf(stderr, "kernrun: unknown pipeline '%s' (see `kernrun help`)\n", argv[0]);
        return 2;
    }
    return r.pipeline->run(kr_runtime_host(rt), r.plugin_state, argc, argv);
}

int main(int argc, char **argv)
{
    kr_app app = {0};
    int rc;
    int at = parse_globals(&app, argc, argv);
    if (at == -1) {
        print_global_usage(stderr);
        return 2;
    }
    if (at == -2)
        return help_run(&app, 1, (char *[]){"help", NULL});
    if (at == -3)
        return version_run(&app, 1, (char *[]){"version", NULL});
    if (at >= argc) {
        print_global_usage(stderr);
        fprintf(stderr, "(run `kernrun help` for the list of pipelines)\n");
        return 2;
    }
    rc = run_pipeline(&app, argc - at, argv + at);
    kr_runtime_close(app.rt);
    kr_config_free(app.cfg);
    return rc;
}
