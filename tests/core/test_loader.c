/* Plugin loader and runtime: each broken fixture is rejected with its
 * reason and the process carries on; the good one registers its kernel,
 * pipeline and arch, and runs through dispatch. */
#include <criterion/criterion.h>

#include "kr_test_leaks.h"
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernrun/runtime.h"

static kr_runtime *rt;
static kr_config *cfg;
static char fixture_dir[1024];

static void fixture_path(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/fx_%s.so", fixture_dir, name);
}

static void setup(void)
{
    const char *d = getenv("KR_FIXTURE_DIR");
    cr_assert_not_null(d, "KR_FIXTURE_DIR not set (run through meson test)");
    snprintf(fixture_dir, sizeof fixture_dir, "%s", d);
    setenv("KERNRUN_NO_SYSTEM_PLUGINS", "1", 1);
    unsetenv("KERNRUN_PLUGIN_PATH");
    unsetenv("KR_FIXTURE_INIT_RAN");
    kr_err e;
    cr_assert_eq(kr_config_create(&cfg, &e), KR_OK);
    cr_assert_eq(kr_config_set(cfg, "runtime", "backend", "cpu", "test", &e), KR_OK);
    cr_assert_eq(kr_runtime_open(cfg, &rt, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_runtime_plugin_count(rt), 0);
}

static void teardown(void)
{
    kr_runtime_close(rt);
    kr_config_free(cfg);
    kr_test_leak_check();
}

TestSuite(loader, .init = setup, .fini = teardown);

/* Load a fixture expecting failure `code` with `reason` in the message. */
static void expect_reject(const char *name, kr_status code, const char *reason)
{
    char p[1200];
    fixture_path(p, sizeof p, name);
    kr_err e;
    kr_err_clear(&e);
    size_t nfail = kr_runtime_plugin_failure_count(rt);
    kr_status st = kr_runtime_load_plugin(rt, p, &e);
    cr_assert_eq(st, code, "%s: got %s (%s)", name, kr_status_name(st), e.msg);
    cr_assert(strstr(e.msg, reason), "%s: message '%s' lacks '%s'", name, e.msg, reason);
    cr_assert(strstr(e.msg, p), "%s: message '%s' does not name the file", name, e.msg);
    cr_assert_eq(kr_runtime_plugin_failure_count(rt), nfail + 1);
    kr_plugin_failure f;
    cr_assert(kr_runtime_plugin_failure_at(rt, nfail, &f));
    cr_assert_str_eq(f.path, p);
    cr_assert_eq(f.code, code);
    cr_assert(strstr(f.reason, reason));
    cr_assert_eq(kr_runtime_plugin_count(rt), 0);
    cr_assert_null(getenv("KR_FIXTURE_INIT_RAN"), "%s: plugin code ran before the checks", name);
}

Test(loader, no_entry_symbol) { expect_reject("no_entry", KR_ERR_PLUGIN, "no entry symbol 'kr_plugin_entry'"); }
Test(loader, entry_returns_null) { expect_reject("null_entry", KR_ERR_PLUGIN, "returned NULL"); }
Test(loader, wrong_abi_version) { expect_reject("bad_abi", KR_ERR_ABI, "ABI version 999, this kernrun supports 1"); }
Test(loader, wrong_kernel_struct_size) { expect_reject("bad_size", KR_ERR_ABI, "kernel record size 12"); }
Test(loader, wrong_descriptor_size) { expect_reject("bad_desc_size", KR_ERR_ABI, "descriptor size 16"); }
Test(loader, host_table_too_new) { expect_reject("big_host", KR_ERR_ABI, "plugin is newer"); }
Test(loader, unresolved_symbol)
{
    expect_reject("unresolved", KR_ERR_PLUGIN, "kr_fixture_symbol_that_does_not_exist");
}
Test(loader, null_required_callback) { expect_reject("null_run", KR_ERR_INVALID_ARG, "has no run function"); }

Test(loader, init_failure_skips_plugin_and_its_kernels)
{
    expect_reject("init_fail", KR_ERR_PLUGIN, "init failed: fixture needs hardware");
    cr_assert_eq(kr_registry_kernel_count(kr_runtime_registry(rt)), 0);
}

Test(loader, missing_file)
{
    kr_err e;
    cr_assert_eq(kr_runtime_load_plugin(rt, "/nonexistent/x.so", &e), KR_ERR_IO);
    cr_assert(strstr(e.msg, "/nonexistent/x.so"), "%s", e.msg);
}

static void load_good(void)
{
    char p[1200];
    fixture_path(p, sizeof p, "good");
    kr_err e;
    cr_assert_eq(kr_runtime_load_plugin(rt, p, &e), KR_OK, "%s", e.msg);
}

Test(loader, good_plugin_registers_and_runs)
{
    load_good();
    cr_assert_eq(kr_runtime_plugin_count(rt), 1);
    kr_plugin_info info;
    cr_assert(kr_runtime_plugin_at(rt, 0, &info));
    cr_assert_str_eq(info.name, "fixture_good");
    cr_assert_str_eq(info.version, "1.2.3");
    cr_assert_eq(info.n_kernels, 1);
    cr_assert_eq(info.n_pipelines, 1);
    cr_assert_eq(info.n_archs, 1);

    /* op through the runtime: 1.5*i + 2 */
    float xa[5], xb[5], out[5];
    for (int i = 0; i < 5; i++) {
        xa[i] = 1.5f * (float)i;
        xb[i] = 2.0f;
        out[i] = -1e30f;
    }
    kr_tensor a, b, c;
    kr_tensor_init(&a, KR_DTYPE_F32, 5, 1, 1, 1);
    kr_tensor_init(&b, KR_DTYPE_F32, 5, 1, 1, 1);
    kr_tensor_init(&c, KR_DTYPE_F32, 5, 1, 1, 1);
    a.data = xa;
    b.data = xb;
    c.data = out;
    const kr_tensor *src[] = {&a, &b};
    kr_kernel_args args = {.op = "fx_add", .src = src, .n_src = 2, .dst = &c};
    kr_err e;
    cr_assert_eq(kr_runtime_run_op(rt, &args, NULL, &e), KR_OK, "%s", e.msg);
    for (int i = 0; i < 5; i++)
        cr_assert_float_eq(out[i], 1.5f * (float)i + 2.0f, 0, "element %d", i);

    /* the same op through the host table, as a plugin would call it */
    const kr_host *h = kr_runtime_host(rt);
    cr_assert_eq(h->abi_version, KR_PLUGIN_ABI_VERSION);
    cr_assert_eq(h->struct_size, sizeof(kr_host));
    xb[0] = 10.0f;
    cr_assert_eq(h->run_op(h, &args, NULL, &e), KR_OK);
    cr_assert_float_eq(out[0], 10.0f, 0);

    /* supports() says no to a shape mismatch */
    kr_tensor c2;
    kr_tensor_init(&c2, KR_DTYPE_F32, 4, 1, 1, 1);
    c2.data = out;
    args.dst = &c2;
    cr_assert_eq(kr_runtime_run_op(rt, &args, NULL, &e), KR_ERR_UNSUPPORTED);

    /* pipeline sees its plugin state */
    char *argv[] = {"fx_echo", "a", "b", NULL};
    cr_assert_eq(kr_runtime_run_pipeline(rt, "fx_echo", 3, argv), 43);
    cr_assert_eq(kr_runtime_run_pipeline(rt, "nope", 1, argv), -1);

    const kr_arch_entry *arch = h->find_arch(h, "fxarch");
    cr_assert_not_null(arch);
    cr_assert_eq(arch->iface_version, 3);
    cr_assert_eq(*(const int *)arch->iface, 7);
    cr_assert_eq(h->backend(h), kr_runtime_cpu_backend(rt));
}

Test(loader, duplicates)
{
    load_good();
    /* same file again: silently skipped */
    load_good();
    cr_assert_eq(kr_runtime_plugin_count(rt), 1);
    /* another file with the same plugin name: refused */
    char p[1200];
    fixture_path(p, sizeof p, "zdup_name");
    kr_err e;
    cr_assert_eq(kr_runtime_load_plugin(rt, p, &e), KR_ERR_EXISTS);
    cr_assert(strstr(e.msg, "already loaded"), "%s", e.msg);
    cr_assert_eq(kr_runtime_plugin_count(rt), 1);
}

Test(loader, scanning_the_fixture_dir_loads_only_the_good_one)
{
    kr_err e;
    cr_assert_eq(kr_runtime_load_plugin_dir(rt, fixture_dir, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_runtime_plugin_count(rt), 1);
    kr_plugin_info info;
    cr_assert(kr_runtime_plugin_at(rt, 0, &info));
    cr_assert_str_eq(info.name, "fixture_good");
    /* every other fixture is a recorded failure */
    cr_assert_eq(kr_runtime_plugin_failure_count(rt), 10);
    cr_assert_null(getenv("KR_FIXTURE_INIT_RAN"));
}

static void copy_file(const char *from, const char *to, mode_t mode)
{
    FILE *in = fopen(from, "rb");
    cr_assert_not_null(in);
    int fd = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    cr_assert_geq(fd, 0);
    char buf[8192];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        cr_assert_eq(write(fd, buf, n), (ssize_t)n);
    fclose(in);
    close(fd);
    cr_assert_eq(chmod(to, mode), 0);
}

Test(loader, world_writable_dir_and_file_refused)
{
    char dir[] = "/tmp/kr_plugdir_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char src[1200], dst[1200];
    fixture_path(src, sizeof src, "good");
    snprintf(dst, sizeof dst, "%s/good.so", dir);
    copy_file(src, dst, 0755);

    cr_assert_eq(chmod(dir, 0777), 0);
    kr_err e;
    cr_assert_eq(kr_runtime_load_plugin_dir(rt, dir, &e), KR_ERR_CONFIG);
    cr_assert(strstr(e.msg, "world-writable") && strstr(e.msg, dir), "%s", e.msg);
    cr_assert_eq(kr_runtime_plugin_count(rt), 0);
    cr_assert_eq(kr_runtime_dir_failure_count(rt), 1);

    /* safe dir, but the file itself is world-writable */
    cr_assert_eq(chmod(dir, 0755), 0);
    cr_assert_eq(chmod(dst, 0666), 0);
    cr_assert_eq(kr_runtime_load_plugin_dir(rt, dir, &e), KR_OK);
    cr_assert_eq(kr_runtime_plugin_count(rt), 0);
    kr_plugin_failure f;
    cr_assert(kr_runtime_plugin_failure_at(rt, 0, &f));
    cr_assert(strstr(f.reason, "world-writable"), "%s", f.reason);

    /* fixed: loads */
    cr_assert_eq(chmod(dst, 0755), 0);
    cr_assert_eq(kr_runtime_load_plugin_dir(rt, dir, &e), KR_OK);
    cr_assert_eq(kr_runtime_plugin_count(rt), 1);
    unlink(dst);
    rmdir(dir);
}

Test(loader, plugin_path_env_and_config_are_scanned_at_open)
{
    kr_runtime_close(rt);
    rt = NULL;
    setenv("KERNRUN_PLUGIN_PATH", "/nonexistent-kr-dir", 1);
    kr_err e;
    cr_assert_eq(kr_config_set(cfg, "runtime", "plugin_path", fixture_dir, "test", &e), KR_OK);
    cr_assert_eq(kr_runtime_open(cfg, &rt, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_runtime_plugin_count(rt), 1);
    cr_assert_eq(kr_runtime_plugin_failure_count(rt), 10);
    cr_assert_eq(kr_runtime_dir_failure_count(rt), 1); /* the missing env dir, reported */
    kr_plugin_failure f;
    cr_assert(kr_runtime_dir_failure_at(rt, 0, &f));
    cr_assert_str_eq(f.path, "/nonexistent-kr-dir");
}

Test(loader, backend_cuda_required_and_auto)
{
    int n = 0;
    bool have_gpu = kr_backend_count_devices(KR_BACKEND_CUDA, &n, NULL) == KR_OK && n > 0;
    kr_runtime_close(rt);
    rt = NULL;
    kr_err e;
    cr_assert_eq(kr_config_set(cfg, "runtime", "backend", "cuda", "--backend", &e), KR_OK);
    kr_status st = kr_runtime_open(cfg, &rt, &e);
    if (have_gpu) {
        /* a GPU machine: cuda must come up and be the active backend */
        cr_assert_eq(st, KR_OK, "%s", e.msg);
        cr_assert_eq(kr_runtime_backend(rt)->kind, KR_BACKEND_CUDA);
        cr_assert_neq(kr_runtime_cpu_backend(rt), kr_runtime_backend(rt));
        kr_runtime_close(rt);
        rt = NULL;
    } else {
        cr_assert_neq(st, KR_OK);
        cr_assert_null(rt);
        cr_assert(strstr(e.msg, "backend=cuda requested (--backend)"), "%s", e.msg);
    }
    /* auto: CUDA when present, else CPU with a reason */
    cr_assert_eq(kr_config_set(cfg, "runtime", "backend", "auto", "test", &e), KR_OK);
    cr_assert_eq(kr_runtime_open(cfg, &rt, &e), KR_OK, "%s", e.msg);
    if (have_gpu) {
        cr_assert_eq(kr_runtime_backend(rt)->kind, KR_BACKEND_CUDA);
        cr_assert_str_empty(kr_runtime_cuda_status(rt));
    } else {
        cr_assert_eq(kr_runtime_backend(rt)->kind, KR_BACKEND_CPU);
        cr_assert_gt(strlen(kr_runtime_cuda_status(rt)), 0);
    }
}
