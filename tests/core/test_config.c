/* Config: INI parsing and validation (file:line messages), registered
 * sections, env overrides, typed getters. */
#include <criterion/criterion.h>

#include "kr_test_leaks.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernrun/config.h"
#include "kernrun/plugin.h"

static kr_config *cfg;
static kr_err e;

static void setup(void)
{
    unsetenv("KERNRUN_RUNTIME_BACKEND");
    unsetenv("KERNRUN_RUNTIME_DEVICE");
    unsetenv("KERNRUN_SAMPLING_TEMPERATURE");
    kr_err_clear(&e);
    cr_assert_eq(kr_config_create(&cfg, &e), KR_OK);
}
static void teardown(void)
{
    kr_config_free(cfg);
    kr_test_leak_check();
}

TestSuite(config, .init = setup, .fini = teardown);

#define ASSERT_MSG(substr) cr_assert(strstr(e.msg, substr) != NULL, "message '%s' lacks '%s'", e.msg, substr)

Test(config, defaults)
{
    cr_assert_str_eq(kr_config_get(cfg, "runtime", "backend"), "auto");
    cr_assert_str_eq(kr_config_origin(cfg, "runtime", "backend"), "default");
    int64_t dev = -1;
    cr_assert_eq(kr_config_get_int(cfg, "runtime", "device", &dev), KR_OK);
    cr_assert_eq(dev, 0);
    cr_assert_null(kr_config_get(cfg, "runtime", "plugin_path"));
    cr_assert_null(kr_config_origin(cfg, "runtime", "plugin_path"));
    cr_assert_null(kr_config_get(cfg, "nosuch", "key"));
    cr_assert_geq(kr_config_key_count(cfg), 5);
}

Test(config, valid_file_text)
{
    const char *ini = "; comment\n"
                      "# another\n"
                      "[runtime]\n"
                      "backend = cpu\n"
                      "device=3\n"
                      "log_level = DEBUG ; inline comment\n"
                      "plugin_path = /a:/b\n";
    cr_assert_eq(kr_config_load_string(cfg, ini, "t.ini", &e), KR_OK, "%s", e.msg);
    cr_assert_str_eq(kr_config_get(cfg, "runtime", "backend"), "cpu");
    cr_assert_str_eq(kr_config_origin(cfg, "runtime", "backend"), "t.ini:4");
    int64_t dev;
    cr_assert_eq(kr_config_get_int(cfg, "runtime", "device", &dev), KR_OK);
    cr_assert_eq(dev, 3);
    cr_assert_str_eq(kr_config_get(cfg, "runtime", "log_level"), "DEBUG");
    cr_assert_str_eq(kr_config_get(cfg, "runtime", "plugin_path"), "/a:/b");
}

Test(config, unknown_key_names_line_and_key)
{
    const char *ini = "[runtime]\nbackend = cpu\n\nbakcend = cuda\n";
    cr_assert_eq(kr_config_load_string(cfg, ini, "my.ini", &e), KR_ERR_CONFIG);
    ASSERT_MSG("my.ini:4:");
    ASSERT_MSG("unknown key 'bakcend'");
    ASSERT_MSG("[runtime]");
    ASSERT_MSG("backend"); /* lists the known keys */
    /* nothing from the failed text was applied */
    cr_assert_str_eq(kr_config_get(cfg, "runtime", "backend"), "auto");
}

Test(config, unknown_section)
{
    cr_assert_eq(kr_config_load_string(cfg, "[runtime]\ndevice = 1\n[gpu]\nfoo = 1\n", "x.ini", &e), KR_ERR_CONFIG);
    ASSERT_MSG("x.ini:4:");
    ASSERT_MSG("unknown section [gpu]");
}

Test(config, bad_values_name_key_value_and_line)
{
    cr_assert_eq(kr_config_load_string(cfg, "[runtime]\nbackend = opencl\n", "a.ini", &e), KR_ERR_CONFIG);
    ASSERT_MSG("a.ini:2:");
    ASSERT_MSG("'opencl'");
    ASSERT_MSG("auto, cpu, cuda");

    kr_err_clear(&e);
    cr_assert_eq(kr_config_load_string(cfg, "[runtime]\n\n\ndevice = two\n", "b.ini", &e), KR_ERR_CONFIG);
    ASSERT_MSG("b.ini:4:");
    ASSERT_MSG("'two' is not an integer");

    kr_err_clear(&e);
    cr_assert_eq(kr_config_load_string(cfg, "[runtime]\ndevice = -1\n", "c.ini", &e), KR_ERR_CONFIG);
    ASSERT_MSG("c.ini:2:");
    ASSERT_MSG("out of range");

    kr_err_clear(&e);
    cr_assert_eq(kr_config_load_string(cfg, "[runtime]\ndevice = 99999999999999999999\n", "d.ini", &e),
                 KR_ERR_CONFIG);
    ASSERT_MSG("d.ini:2:");

    kr_err_clear(&e);
    cr_assert_eq(kr_config_load_string(cfg, "[runtime]\ndevice = 1x\n", "e.ini", &e), KR_ERR_CONFIG);
    ASSERT_MSG("e.ini:2:");
}

Test(config, syntax_errors_have_line_numbers)
{
    cr_assert_eq(kr_config_load_string(cfg, "[runtime]\nbackend = cpu\nthis line is junk\n", "s.ini", &e),
                 KR_ERR_CONFIG);
    ASSERT_MSG("s.ini:3:");
    ASSERT_MSG("syntax error");

    kr_err_clear(&e);
    cr_assert_eq(kr_config_load_string(cfg, "backend = cpu\n", "n.ini", &e), KR_ERR_CONFIG);
    ASSERT_MSG("n.ini:1:");
    ASSERT_MSG("outside of any [section]");

    kr_err_clear(&e);
    cr_assert_eq(kr_config_load_string(cfg, "[runtime]\nbackend = cpu\nbackend = cuda\n", "d.ini", &e),
                 KR_ERR_CONFIG);
    ASSERT_MSG("d.ini:3:");
    ASSERT_MSG("first set on line 2");

    kr_err_clear(&e);
    cr_assert_eq(kr_config_load_string(cfg, "[runtime]\nplugin_path = /a\n   /b\n", "m.ini", &e), KR_ERR_CONFIG);
    ASSERT_MSG("m.ini:3:");
}

Test(config, overlong_line_is_an_error_not_a_split)
{
    char ini[1024];
    int n = snprintf(ini, sizeof ini, "[runtime]\nplugin_path = ");
    memset(ini + n, 'x', 600);
    strcpy(ini + n + 600, "\ndevice = 1\n");
    cr_assert_eq(kr_config_load_string(cfg, ini, "long.ini", &e), KR_ERR_CONFIG);
    ASSERT_MSG("long.ini:2:");
    ASSERT_MSG("longer than");
}

Test(config, env_overrides_file)
{
    cr_assert_eq(kr_config_load_string(cfg, "[runtime]\nbackend = cuda\ndevice = 2\n", "f.ini", &e), KR_OK);
    setenv("KERNRUN_RUNTIME_BACKEND", "cpu", 1);
    cr_assert_eq(kr_config_apply_env(cfg, &e), KR_OK, "%s", e.msg);
    cr_assert_str_eq(kr_config_get(cfg, "runtime", "backend"), "cpu");
    cr_assert_str_eq(kr_config_origin(cfg, "runtime", "backend"), "env KERNRUN_RUNTIME_BACKEND");
    cr_assert_str_eq(kr_config_get(cfg, "runtime", "device"), "2"); /* untouched */
}

Test(config, bad_env_value_names_the_variable)
{
    setenv("KERNRUN_RUNTIME_DEVICE", "gpu0", 1);
    cr_assert_eq(kr_config_apply_env(cfg, &e), KR_ERR_CONFIG);
    ASSERT_MSG("KERNRUN_RUNTIME_DEVICE");
    ASSERT_MSG("'gpu0'");
}

static kr_status even_only(const char *v, kr_err *err)
{
    return atoi(v) % 2 == 0 ? KR_OK : kr_err_set(err, KR_ERR_CONFIG, "must be even");
}

static const char *const modes[] = {"greedy", "sample", NULL};
static const kr_config_key sampling_keys[] = {
    {.section = "sampling", .key = "temperature", .type = KR_CONFIG_FLOAT, .def = "0.8", .fmin = 0, .fmax = 100},
    {.section = "sampling", .key = "top-k", .type = KR_CONFIG_INT, .def = "40", .imin = 0, .imax = 1000,
     .validate = even_only},
    {.section = "sampling", .key = "stream", .type = KR_CONFIG_BOOL, .def = "yes"},
    {.section = "sampling", .key = "mode", .type = KR_CONFIG_ENUM, .def = "sample", .choices = modes},
};

Test(config, registered_section)
{
    cr_assert_eq(kr_config_add_keys(cfg, sampling_keys, KR_ARRAY_LEN(sampling_keys), &e), KR_OK, "%s", e.msg);
    double t;
    cr_assert_eq(kr_config_get_float(cfg, "sampling", "temperature", &t), KR_OK);
    cr_assert_float_eq(t, 0.8, 1e-12);
    bool b = false;
    cr_assert_eq(kr_config_get_bool(cfg, "sampling", "stream", &b), KR_OK);
    cr_assert(b);
    cr_assert_eq(kr_config_load_string(cfg, "[sampling]\ntemperature = 0.25\nstream = off\ntop-k = 8\n", "s", &e),
                 KR_OK, "%s", e.msg);
    cr_assert_eq(kr_config_get_float(cfg, "sampling", "temperature", &t), KR_OK);
    cr_assert_float_eq(t, 0.25, 1e-12);
    cr_assert_eq(kr_config_get_bool(cfg, "sampling", "stream", &b), KR_OK);
    cr_assert_not(b);
    /* env name: non-alphanumerics become '_' */
    setenv("KERNRUN_SAMPLING_TOP_K", "12", 1);
    cr_assert_eq(kr_config_apply_env(cfg, &e), KR_OK, "%s", e.msg);
    int64_t k;
    cr_assert_eq(kr_config_get_int(cfg, "sampling", "top-k", &k), KR_OK);
    cr_assert_eq(k, 12);
    unsetenv("KERNRUN_SAMPLING_TOP_K");
    /* type mismatch on a getter */
    cr_assert_eq(kr_config_get_int(cfg, "sampling", "temperature", &k), KR_ERR_TYPE);
    cr_assert_eq(kr_config_get_int(cfg, "sampling", "nokey", &k), KR_ERR_NOT_FOUND);
}

Test(config, registered_validators_and_ranges)
{
    cr_assert_eq(kr_config_add_keys(cfg, sampling_keys, KR_ARRAY_LEN(sampling_keys), &e), KR_OK);
    cr_assert_eq(kr_config_load_string(cfg, "[sampling]\ntop-k = 7\n", "v.ini", &e), KR_ERR_CONFIG);
    ASSERT_MSG("v.ini:2:");
    ASSERT_MSG("must be even");
    kr_err_clear(&e);
    cr_assert_eq(kr_config_load_string(cfg, "[sampling]\ntemperature = 101\n", "v.ini", &e), KR_ERR_CONFIG);
    ASSERT_MSG("out of range");
    kr_err_clear(&e);
    cr_assert_eq(kr_config_load_string(cfg, "[sampling]\ntemperature = nan\n", "v.ini", &e), KR_ERR_CONFIG);
    kr_err_clear(&e);
    cr_assert_eq(kr_config_load_string(cfg, "[sampling]\nstream = maybe\n", "v.ini", &e), KR_ERR_CONFIG);
    ASSERT_MSG("not a boolean");
    cr_assert_eq(kr_config_set(cfg, "sampling", "mode", "beam", "--mode", &e), KR_ERR_CONFIG);
    ASSERT_MSG("--mode");
    cr_assert_eq(kr_config_set(cfg, "sampling", "mode", "GREEDY", "--mode", &e), KR_OK);
    cr_assert_str_eq(kr_config_origin(cfg, "sampling", "mode"), "--mode");
    /* registering twice, or a bad table */
    cr_assert_eq(kr_config_add_keys(cfg, sampling_keys, 1, &e), KR_ERR_EXISTS);
    static const kr_config_key bad_def[] = {{.section = "x", .key = "y", .type = KR_CONFIG_INT, .def = "abc"}};
    cr_assert_eq(kr_config_add_keys(cfg, bad_def, 1, &e), KR_ERR_INVALID_ARG);
    static const kr_config_key bad_name[] = {{.section = "x y", .key = "y", .type = KR_CONFIG_INT}};
    cr_assert_eq(kr_config_add_keys(cfg, bad_name, 1, &e), KR_ERR_INVALID_ARG);
    static const kr_config_key no_choices[] = {{.section = "x", .key = "y", .type = KR_CONFIG_ENUM}};
    cr_assert_eq(kr_config_add_keys(cfg, no_choices, 1, &e), KR_ERR_INVALID_ARG);
}

Test(config, plugin_sections_are_free_form)
{
    cr_assert_eq(kr_config_load_string(cfg, "[plugin.example]\nanything = goes here\n", "p.ini", &e), KR_OK, "%s",
                 e.msg);
    cr_assert_str_eq(kr_config_get(cfg, "plugin.example", "anything"), "goes here");
    /* a later registration validates what was loaded */
    static const kr_config_key k[] = {{.section = "plugin.example", .key = "anything", .type = KR_CONFIG_INT}};
    cr_assert_eq(kr_config_add_keys(cfg, k, 1, &e), KR_ERR_CONFIG);
    ASSERT_MSG("p.ini:2");
    cr_assert_eq(kr_config_set(cfg, "nosuch", "k", "v", "--x", &e), KR_ERR_CONFIG);
}

Test(config, get_path_expands_home)
{
    setenv("HOME", "/home/tester", 1);
    cr_assert_eq(kr_config_set(cfg, "runtime", "cache_dir", "~/kc", NULL, &e), KR_OK);
    char buf[64];
    cr_assert_eq(kr_config_get_path(cfg, "runtime", "cache_dir", buf, sizeof buf), KR_OK);
    cr_assert_str_eq(buf, "/home/tester/kc");
    char tiny[4];
    cr_assert_eq(kr_config_get_path(cfg, "runtime", "cache_dir", tiny, sizeof tiny), KR_ERR_LIMIT);
    cr_assert_eq(kr_config_get_path(cfg, "runtime", "device", buf, sizeof buf), KR_ERR_TYPE);
}

Test(config, files_and_nul_bytes)
{
    char path[] = "/tmp/kr_cfg_XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    const char text[] = "[runtime]\nbackend = cpu\nlog_level = loud\n";
    cr_assert_eq(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
    close(fd);
    cr_assert_eq(kr_config_load_file(cfg, path, &e), KR_ERR_CONFIG);
    char want[64];
    snprintf(want, sizeof want, "%s:3:", path);
    ASSERT_MSG(want);
    ASSERT_MSG("'loud'");

    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fwrite("[runtime]\nbackend = c\0pu\n", 1, 25, f);
    fclose(f);
    kr_err_clear(&e);
    cr_assert_eq(kr_config_load_file(cfg, path, &e), KR_ERR_CONFIG);
    ASSERT_MSG(":2:");
    ASSERT_MSG("NUL");
    unlink(path);

    kr_err_clear(&e);
    cr_assert_eq(kr_config_load_file(cfg, "/nonexistent/kr.ini", &e), KR_ERR_IO);
    ASSERT_MSG("/nonexistent/kr.ini");
    cr_assert_eq(kr_config_load_file(cfg, "/tmp", &e), KR_ERR_IO);
}
