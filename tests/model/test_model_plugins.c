/* The arch_llama, arch_falcon and cpu_ops plugins load through the runtime
 * (from the build tree: KERNRUN_PLUGIN_PATH set by tests/meson.build) and
 * a model loads and runs with handlers and ops found in the registry only. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/model.h"
#include "kernrun/runtime.h"

static char g_path[4096];
static const char *td(const char *rel)
{
    const char *dir = getenv("KR_TESTDATA");
    snprintf(g_path, sizeof g_path, "%s/%s", dir ? dir : "../shared/testdata", rel);
    return g_path;
}

Test(plugins, model_through_registry)
{
    kr_runtime *rt = NULL;
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(kr_runtime_open(NULL, &rt, &err), KR_OK, "%s", err.msg);
    for (size_t i = 0; i < kr_runtime_plugin_failure_count(rt); i++) {
        kr_plugin_failure f;
        if (kr_runtime_plugin_failure_at(rt, i, &f) &&
            (strstr(f.path, "arch_") || strstr(f.path, "cpu_ops")))
            cr_expect_fail("plugin %s failed: %s", f.path, f.reason);
    }
    kr_registry *reg = kr_runtime_registry(rt);
    const char *names[] = {"llama", "mistral", "falcon", "ops.cpu"};
    for (int i = 0; i < 4; i++)
        cr_expect_not_null(kr_registry_find_arch(reg, names[i]), "%s not registered", names[i]);

    kr_model_params mp = kr_model_params_default();
    mp.registry = reg;
    kr_model *m = NULL;
    cr_assert_eq(kr_model_load(td("models/stories260K-f32.gguf"), &mp, &m, &err), KR_OK, "%s", err.msg);
    kr_context_params cp = kr_context_params_default();
    cp.n_ctx = 16;
    cp.n_threads = 2;
    kr_context *c = NULL;
    cr_assert_eq(kr_context_new(m, &cp, &c, &err), KR_OK, "%s", err.msg);
    float lg[512];
    int32_t tok = 1;
    cr_assert_eq(kr_model_eval(c, &tok, 1, 0, lg, &err), KR_OK, "%s", err.msg);
    int b = 0;
    for (int j = 1; j < 512; j++)
        if (lg[j] > lg[b])
            b = j;
    cr_expect_eq(b, 403); /* first greedy token after BOS (testdata/README.md) */
    kr_context_free(c);
    kr_model_free(m);

    /* an architecture nobody registered is named, with the known ones */
    mp.registry = NULL;
    cr_expect_neq(kr_model_load(td("models/stories260K-f32.gguf"), &mp, &m, &err), KR_OK);
    cr_expect(strstr(err.msg, "unknown architecture 'llama'") != NULL, "%s", err.msg);
    kr_runtime_close(rt);
}
