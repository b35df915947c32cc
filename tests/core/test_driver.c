/* The kernrun driver as a user runs it: exit statuses and messages of
 * list / help / version, --config errors, plugin pipelines. */
#include <criterion/criterion.h>

#include "kr_test_leaks.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char out[65536];

/* Run `kernrun <args>` (shell words), capture stdout+stderr; returns exit status. */
static int kernrun(const char *args)
{
    const char *exe = getenv("KR_KERNRUN_EXE");
    cr_assert_not_null(exe, "KR_KERNRUN_EXE not set (run through meson test)");
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", exe, args);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = '\0';
    int st = pclose(p);
    cr_assert(WIFEXITED(st), "kernrun %s did not exit normally", args);
    return WEXITSTATUS(st);
}

static void setup(void)
{
    setenv("KERNRUN_NO_SYSTEM_PLUGINS", "1", 1);
    setenv("KERNRUN_RUNTIME_BACKEND", "cpu", 1);
    const char *fx = getenv("KR_FIXTURE_DIR");
    cr_assert_not_null(fx);
    setenv("KERNRUN_PLUGIN_PATH", fx, 1);
}

TestSuite(driver, .init = setup, .fini = kr_test_leak_check);

#define HAS(s) cr_assert(strstr(out, s) != NULL, "output lacks '%s':\n%s", s, out)

Test(driver, version)
{
    cr_assert_eq(kernrun("version"), 0);
    HAS("kernrun " KR_EXPECT_VERSION " (plugin ABI 1)");
    cr_assert_eq(kernrun("--version"), 0);
    HAS("kernrun " KR_EXPECT_VERSION);
}

Test(driver, list_shows_plugins_kernels_and_rejections)
{
    cr_assert_eq(kernrun("list"), 0, "%s", out);
    HAS("backends:");
    HAS("cpu   active");
    HAS("fixture_good");
    HAS("1.2.3");
    HAS("fx_add_f32_cpu");
    HAS("[f32, f32 -> f32]");
    HAS("fx_echo");
    HAS("fxarch");
    HAS("fx_bad_abi.so: plugin ABI version 999");
    HAS("fx_unresolved.so: dlopen failed");
}

Test(driver, help)
{
    cr_assert_eq(kernrun("help"), 0);
    HAS("usage: kernrun");
    HAS("generate");
    HAS("fx_echo");
    cr_assert_eq(kernrun("help list"), 0);
    HAS("usage: kernrun");
    cr_assert_eq(kernrun("help fx_echo"), 0);
    HAS("fx_echo [args]");
    cr_assert_eq(kernrun("help config"), 0);
    HAS("[runtime]");
    HAS("KERNRUN_RUNTIME_BACKEND");
    HAS("now cpu [env KERNRUN_RUNTIME_BACKEND]");
    cr_assert_eq(kernrun("help no_such_pipeline"), 2);
    HAS("unknown pipeline 'no_such_pipeline'");
}

Test(driver, plugin_pipeline_runs_with_its_state)
{
    cr_assert_eq(kernrun("fx_echo a b"), 43);
}

Test(driver, usage_errors_exit_2)
{
    cr_assert_eq(kernrun(""), 2);
    HAS("usage:");
    cr_assert_eq(kernrun("no_such_pipeline"), 2);
    HAS("unknown pipeline 'no_such_pipeline'");
    cr_assert_eq(kernrun("--bogus list"), 2);
    HAS("unknown global flag '--bogus'");
    cr_assert_eq(kernrun("--config"), 2);
    HAS("--config needs a value");
}

Test(driver, bad_config_exits_1_with_location)
{
    char path[] = "/tmp/kr_drv_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char ini[] = "[runtime]\n# comment\nbackend = tpu\n";
    cr_assert_eq(write(fd, ini, sizeof ini - 1), (ssize_t)(sizeof ini - 1));
    close(fd);
    char args[256];
    unsetenv("KERNRUN_RUNTIME_BACKEND");
    snprintf(args, sizeof args, "--config %s list", path);
    cr_assert_eq(kernrun(args), 1);
    char want[128];
    snprintf(want, sizeof want, "%s:3:", path);
    HAS(want);
    HAS("'tpu'");
    unlink(path);
    cr_assert_eq(kernrun("--config /nonexistent/kr.ini list"), 1);
    HAS("/nonexistent/kr.ini");
    /* a bad env value fails too, naming the variable */
    setenv("KERNRUN_RUNTIME_DEVICE", "x", 1);
    cr_assert_eq(kernrun("list"), 1);
    HAS("KERNRUN_RUNTIME_DEVICE");
    unsetenv("KERNRUN_RUNTIME_DEVICE");
    /* --backend overrides the environment */
    setenv("KERNRUN_RUNTIME_BACKEND", "cuda", 1);
    cr_assert_eq(kernrun("--backend cpu list"), 0, "%s", out);
}
