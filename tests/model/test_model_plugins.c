/* The arch_llama, arch_falcon and cpu_ops plugins load through the runtime
 * (from the build tree: KERNRUN_PLUGIN_PATH set by tests/meson.build) and
 * a model loads and runs with handlers and ops found in the registry only. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/model.h"
#include "kernrun/runtime.h"
#include "kr_test_leaks.h"

static char g_path[4096];
static const char *td(const char *rel)
{
    const char *dir = getenv("KR_TESTDATA");
    snprintf(g_path, sizeof g_path, "%s/%s", dir ? dir : "../shared/testdata", rel);
    return g_path;
}

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(plugins, .fini = kr_test_leak_check);

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

/* ---- the CPU kernels through registry dispatch (kr_runtime_run_op) ---- */

#include "kernrun/cpu_ops.h"
#include "kernrun/quant.h"

static void host_tensor(kr_tensor *t, kr_dtype type, int64_t ne0, int64_t ne1, void *data)
{
    cr_assert_eq(kr_tensor_init(t, type, ne0, ne1, 1, 1), KR_OK);
    t->data = data;
}

Test(plugins, cpu_kernels_dispatch)
{
    kr_runtime *rt = NULL;
    kr_err err;
    kr_err_clear(&err);
    cr_assert_eq(kr_runtime_open(NULL, &rt, &err), KR_OK, "%s", err.msg);
    kr_registry *reg = kr_runtime_registry(rt);
    const char *ops[] = {"matmul", "get_rows", "rms_norm", "layer_norm", "rope", "attention", "swiglu", "gelu",
                         "add", "softmax", "add_bias", "store_kv"};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        kr_kernel_ref refs[8];
        size_t n = kr_registry_find_kernels(reg, ops[i], refs, 8);
        bool cpu = false;
        for (size_t j = 0; j < n && j < 8; j++)
            cpu |= refs[j].kernel->backend == KR_BACKEND_CPU && strcmp(refs[j].plugin, "cpu_ops") == 0;
        cr_expect(cpu, "no cpu_ops kernel for op %s", ops[i]);
    }
    const kr_exec ex1 = {.struct_size = sizeof ex1, .n_threads = 1};
    const kr_ops *o = kr_cpu_ops();

    /* matmul, Q8_0 weights (64 x 5), 3 tokens: same numbers as the table's op */
    enum { K = 64, M = 5, N = 3 };
    float wf[M * K], x[N * K], y[N * M], yref[N * M];
    for (int i = 0; i < M * K; i++)
        wf[i] = (float)((i * 37) % 19) / 19.0f - 0.5f;
    for (int i = 0; i < N * K; i++)
        x[i] = (float)((i * 11) % 13) / 13.0f - 0.5f;
    uint8_t wq[M * 68];
    for (int r = 0; r < M; r++)
        cr_assert_eq(kr_quantize_row(KR_DTYPE_Q8_0, wf + r * K, wq + r * 68, K), KR_OK);
    kr_tensor tw, tx, ty;
    host_tensor(&tw, KR_DTYPE_Q8_0, K, M, wq);
    host_tensor(&tx, KR_DTYPE_F32, K, N, x);
    host_tensor(&ty, KR_DTYPE_F32, M, N, y);
    const kr_tensor *src[3] = {&tw, &tx, NULL};
    kr_kernel_args a = {.op = "matmul", .src = src, .n_src = 2, .dst = &ty};
    cr_assert_eq(kr_runtime_run_op(rt, &a, NULL, &err), KR_OK, "%s", err.msg);
    kr_weight w = {.name = "w", .type = KR_DTYPE_Q8_0, .n_dims = 2, .ne = {K, M, 1, 1}, .row_bytes = 68, .data = wq};
    cr_assert_eq(o->matmul(&ex1, &w, x, N, yref, &err), KR_OK);
    cr_expect_arr_eq(y, yref, sizeof y);
    /* mismatched shapes: no kernel supports it */
    host_tensor(&ty, KR_DTYPE_F32, M + 1, N, y);
    cr_expect_neq(kr_runtime_run_op(rt, &a, NULL, &err), KR_OK);
    cr_expect(strstr(err.msg, "matmul") != NULL, "%s", err.msg);

    /* rms_norm with weight, params eps */
    float nw[K], nref[N * K];
    for (int i = 0; i < K; i++)
        nw[i] = 1.0f + (float)i / K;
    float eps = 1e-5f, nout[N * K];
    kr_tensor tn, tnw, tno;
    host_tensor(&tn, KR_DTYPE_F32, K, N, x);
    host_tensor(&tnw, KR_DTYPE_F32, K, 1, nw);
    host_tensor(&tno, KR_DTYPE_F32, K, N, nout);
    const kr_tensor *nsrc[2] = {&tn, &tnw};
    kr_kernel_args na = {.op = "rms_norm", .src = nsrc, .n_src = 2, .dst = &tno, .params = &eps,
                         .params_size = sizeof eps};
    cr_assert_eq(kr_runtime_run_op(rt, &na, NULL, &err), KR_OK, "%s", err.msg);
    o->rms_norm(&ex1, x, nw, N, K, eps, nref);
    cr_expect_arr_eq(nout, nref, sizeof nout);

    /* attention through params (fp32 cache of 4 positions, GQA 4/2, head_dim 8) */
    float q[2 * 32], kc[4 * 16], vc[4 * 16], ao[2 * 32], aref[2 * 32];
    for (int i = 0; i < 64; i++)
        q[i] = (float)((i * 7) % 11) / 11.0f - 0.5f;
    for (int i = 0; i < 64; i++) {
        kc[i] = (float)((i * 5) % 9) / 9.0f - 0.5f;
        vc[i] = (float)((i * 3) % 7) / 7.0f - 0.5f;
    }
    kr_attn_args at = {.struct_size = sizeof at, .q = q, .k = kc, .v = vc, .kv_type = KR_DTYPE_F32, .out = ao,
                       .n_tok = 2, .n_head = 4, .n_head_kv = 2, .head_dim = 8, .pos0 = 2, .n_ctx = 4, .window = 0,
                       .scale = 0.35f};
    kr_kernel_args aa = {.op = "attention", .params = &at, .params_size = sizeof at};
    cr_assert_eq(kr_runtime_run_op(rt, &aa, NULL, &err), KR_OK, "%s", err.msg);
    at.out = aref;
    cr_assert_eq(o->attention(&ex1, &at, &err), KR_OK);
    cr_expect_arr_eq(ao, aref, sizeof ao);

    /* softmax in place, add_bias, store_kv to f16 */
    float sm[8] = {1, 2, 3, 4, -1, 0, 1, 2}, smref[8];
    memcpy(smref, sm, sizeof sm);
    kr_tensor ts;
    host_tensor(&ts, KR_DTYPE_F32, 4, 2, sm);
    const kr_tensor *ssrc[1] = {&ts};
    kr_kernel_args sa = {.op = "softmax", .src = ssrc, .n_src = 1, .dst = &ts};
    cr_assert_eq(kr_runtime_run_op(rt, &sa, NULL, &err), KR_OK, "%s", err.msg);
    o->softmax(&ex1, smref, 2, 4);
    cr_expect_arr_eq(sm, smref, sizeof sm);
    float bias[4] = {1, 2, 3, 4}, xb[8] = {0};
    kr_tensor tb, txb;
    host_tensor(&tb, KR_DTYPE_F32, 4, 1, bias);
    host_tensor(&txb, KR_DTYPE_F32, 4, 2, xb);
    const kr_tensor *bsrc[1] = {&tb};
    kr_kernel_args ba = {.op = "add_bias", .src = bsrc, .n_src = 1, .dst = &txb};
    cr_assert_eq(kr_runtime_run_op(rt, &ba, NULL, &err), KR_OK, "%s", err.msg);
    cr_expect(xb[0] == 1 && xb[3] == 4 && xb[4] == 1 && xb[7] == 4);
    uint16_t h[8];
    kr_tensor th;
    host_tensor(&th, KR_DTYPE_F16, 4, 2, h);
    kr_kernel_args ka = {.op = "store_kv", .src = bsrc, .n_src = 1, .dst = &th};
    host_tensor(&th, KR_DTYPE_F16, 4, 1, h);
    cr_assert_eq(kr_runtime_run_op(rt, &ka, NULL, &err), KR_OK, "%s", err.msg);
    cr_expect(h[0] == 0x3c00 && h[1] == 0x4000 && h[3] == 0x4400, "%04x %04x %04x", h[0], h[1], h[3]);
    kr_runtime_close(rt);
}
