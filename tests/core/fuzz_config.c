/* libFuzzer harness for the INI config parser: the input is loaded as text
 * (NUL-terminated copy, through kr_config_load_string) and as a file
 * (through a memfd, so embedded NUL bytes reach the reader), into a config
 * with keys of every type registered; then every key is read back with the
 * typed getters. Any crash, leak or UB is a bug; errors are expected.
 * Built as a libFuzzer binary with -Dfuzz=enabled (clang); the same file is
 * compiled into the regression replayer run by the normal suite. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "kernrun/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const fz_choices[] = {"alpha", "beta", NULL};
static const kr_config_key fz_keys[] = {
    {.section = "s", .key = "str", .type = KR_CONFIG_STRING, .def = "x"},
    {.section = "s", .key = "int", .type = KR_CONFIG_INT, .def = "1", .imin = -5, .imax = 5},
    {.section = "s", .key = "bool", .type = KR_CONFIG_BOOL, .def = "no"},
    {.section = "s", .key = "num", .type = KR_CONFIG_FLOAT, .def = "0.5", .fmin = -1, .fmax = 1},
    {.section = "s", .key = "pick", .type = KR_CONFIG_ENUM, .def = "alpha", .choices = fz_choices},
    {.section = "s", .key = "dir", .type = KR_CONFIG_PATH},
};

static volatile size_t g_sink;

static void read_back(const kr_config *cfg)
{
    for (size_t i = 0; i < kr_config_key_count(cfg); i++) {
        const kr_config_key *k = kr_config_key_at(cfg, i);
        const char *v = kr_config_get(cfg, k->section, k->key);
        const char *o = kr_config_origin(cfg, k->section, k->key);
        g_sink += (v ? strlen(v) : 0) + (o ? strlen(o) : 0);
        int64_t iv;
        bool bv;
        double dv;
        char path[256];
        g_sink += (size_t)kr_config_get_int(cfg, k->section, k->key, &iv);
        g_sink += (size_t)kr_config_get_bool(cfg, k->section, k->key, &bv);
        g_sink += (size_t)kr_config_get_float(cfg, k->section, k->key, &dv);
        g_sink += (size_t)kr_config_get_path(cfg, k->section, k->key, path, sizeof path);
    }
}

static void one(const uint8_t *data, size_t size, bool as_file)
{
    kr_config *cfg = NULL;
    kr_err e;
    if (kr_config_create(&cfg, &e) != KR_OK)
        return;
    if (kr_config_add_keys(cfg, fz_keys, sizeof fz_keys / sizeof fz_keys[0], &e) != KR_OK)
        abort(); /* the table is valid: this must not fail */
    kr_status st;
    if (as_file) {
        int fd = memfd_create("fuzz_config", 0);
        if (fd < 0)
            goto out;
        if (size && write(fd, data, size) != (ssize_t)size) {
            close(fd);
            goto out;
        }
        char p[64];
        snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
        st = kr_config_load_file(cfg, p, &e);
        close(fd);
    } else {
        char *text = malloc(size + 1);
        if (!text)
            goto out;
        memcpy(text, data, size);
        text[size] = '\0';
        st = kr_config_load_string(cfg, text, "fuzz.ini", &e);
        free(text);
    }
    if (st != KR_OK && (st != KR_ERR_CONFIG && st != KR_ERR_NOMEM && st != KR_ERR_IO && st != KR_ERR_LIMIT))
        abort(); /* only documented failure codes */
    if (st != KR_OK && strlen(e.msg) == 0)
        abort(); /* every error has a message */
    read_back(cfg);
out:
    kr_config_free(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    one(data, size, false);
    one(data, size, true);
    return 0;
}
