/* GPU tests: the example plugin through the real loader on the CUDA backend,
 * compared with its CPU code and with an independent double-precision
 * computation; backend copies, streams, events, graph capture (and its
 * fallback), cuRAND, and the dead-context rule.
 *
 * Without a GPU every test skips with the reason; with KERNRUN_REQUIRE_GPU=1
 * they fail instead. KERNRUN_SKIP_FAULT_TESTS=1 skips the deliberate
 * illegal-address test (used under compute-sanitizer, which would report it). */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernrun/backend.h"
#include "kernrun/config.h"
#include "kernrun/registry.h"
#include "kernrun/runtime.h"

#include "example.h"
#include "kr_test_leaks.h"

/* ---- helpers --------------------------------------------------------------- */

static bool require_gpu(void)
{
    const char *r = getenv("KERNRUN_REQUIRE_GPU");
    return r && strcmp(r, "1") == 0;
}

/* Skip (or fail under KERNRUN_REQUIRE_GPU=1) when no CUDA device is usable. */
static void gpu_or_skip(void)
{
    kr_err e;
    kr_err_clear(&e);
    int n = 0;
    kr_status st = kr_backend_count_devices(KR_BACKEND_CUDA, &n, &e);
    if (st == KR_OK && n > 0)
        return;
    if (require_gpu())
        cr_assert_fail("KERNRUN_REQUIRE_GPU=1 but no usable GPU: %s", kr_err_msg(&e, st));
    cr_skip_test("no usable GPU: %s", kr_err_msg(&e, st));
}

static char g_cache_dir[256];
static kr_config *g_cfg;

/* Runtime on CUDA with a private kernel cache; asserts the example plugin loaded. */
static kr_runtime *open_cuda_runtime(void)
{
    gpu_or_skip();
    kr_err e;
    kr_err_clear(&e);
    cr_assert_eq(kr_config_create(&g_cfg, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_config_set(g_cfg, "runtime", "backend", "cuda", "test", &e), KR_OK, "%s", e.msg);
    snprintf(g_cache_dir, sizeof g_cache_dir, "/tmp/kr-gpu-test-XXXXXX");
    cr_assert_not_null(mkdtemp(g_cache_dir));
    cr_assert_eq(kr_config_set(g_cfg, "runtime", "cache_dir", g_cache_dir, "test", &e), KR_OK, "%s", e.msg);
    kr_runtime *rt = NULL;
    kr_status st = kr_runtime_open(g_cfg, &rt, &e);
    cr_assert_eq(st, KR_OK, "kr_runtime_open(backend=cuda): %s", kr_err_msg(&e, st));
    bool found = false;
    for (size_t i = 0; i < kr_runtime_plugin_count(rt); i++) {
        kr_plugin_info pi;
        if (kr_runtime_plugin_at(rt, i, &pi) && strcmp(pi.name, "example") == 0)
            found = true;
    }
    if (!found) {
        for (size_t i = 0; i < kr_runtime_plugin_failure_count(rt); i++) {
            kr_plugin_failure f;
            if (kr_runtime_plugin_failure_at(rt, i, &f))
                cr_log_error("plugin %s rejected: %s", f.path, f.reason);
        }
    }
    cr_assert(found, "the example plugin was not loaded (KERNRUN_PLUGIN_PATH=%s)",
              getenv("KERNRUN_PLUGIN_PATH") ? getenv("KERNRUN_PLUGIN_PATH") : "(unset)");
    kr_backend *be = kr_runtime_backend(rt);
    cr_assert_eq(be->kind, KR_BACKEND_CUDA);
    return rt;
}

static void close_runtime(kr_runtime *rt)
{
    kr_runtime_close(rt);
    kr_config_free(g_cfg);
    g_cfg = NULL;
    /* remove the private cache */
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_cache_dir);
    if (system(cmd) != 0)
        cr_log_warn("could not remove %s", g_cache_dir);
}

/* Fresh seed each run (logged, so a failure can be replayed via KR_TEST_SEED). */
static uint64_t fresh_seed(void)
{
    const char *s = getenv("KR_TEST_SEED");
    if (s && s[0])
        return strtoull(s, NULL, 0);
    uint64_t seed = 0;
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd >= 0) {
        if (read(fd, &seed, sizeof seed) != (ssize_t)sizeof seed)
            seed = 0;
        close(fd);
    }
    if (!seed)
        seed = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull;
    return seed | 1;
}

static uint64_t xs_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545f4914f6cdd1dull;
}

/* uniform in [-1, 1) */
static float xs_float(uint64_t *s) { return (float)((double)(xs_next(s) >> 11) * 0x1.0p-52 - 1.0); }

/* normalised MSE: sum (a-b)^2 / sum b^2 (b the reference); 0 when both are 0 */
static double nmse(const float *a, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
    }
    return den > 0 ? num / den : num;
}

/* Per-element check of out = a*x + y against the double value: fp32 with at
 * most two roundings (product, sum) is within 2^-23 * (|a*x| + |y|) of it.
 * Unlike NMSE this is meaningful at n = 1 where a*x + y may cancel. Returns
 * the number of elements outside the bound (first one logged). */
static size_t count_outside_bound(const float *out, const float *x, const float *y, float a, const double *ref,
                                  size_t n, const char *what)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double bound = 0x1.0p-23 * (fabs((double)a * x[i]) + fabs((double)y[i])) + 1e-30;
        double err = fabs((double)out[i] - ref[i]);
        if (!(err <= bound)) {
            if (!bad)
                cr_log_error("%s: element %zu: got %.9g, want %.9g (|err| %.3g > bound %.3g)", what, i,
                             (double)out[i], ref[i], err, bound);
            bad++;
        }
    }
    return bad;
}

static kr_tensor vec_tensor(int64_t n, void *data, kr_buffer *buf)
{
    kr_tensor t;
    cr_assert_eq(kr_tensor_init(&t, KR_DTYPE_F32, n, 1, 1, 1), KR_OK);
    t.data = data;
    t.buf = buf;
    return t;
}

#define POISON_PAD 64 /* floats after the vector, poisoned, must stay untouched */

/* Run vec_scale_add for n elements on the GPU (through dispatch) and on the
 * CPU (through dispatch with host tensors) and compare both with a double
 * computation. */
static void check_vec_scale_add(kr_runtime *rt, int64_t n, uint64_t *rng)
{
    kr_backend *be = kr_runtime_backend(rt);
    kr_err e;
    kr_err_clear(&e);
    size_t nn = (size_t)n, total = nn + POISON_PAD;
    float *x = malloc(nn * sizeof *x + 1), *y = malloc(nn * sizeof *y + 1);
    float *y_cpu = malloc(nn * sizeof *y_cpu + 1), *y_gpu = malloc(total * sizeof *y_gpu);
    double *ref = malloc(nn * sizeof *ref + 1);
    cr_assert(x && y && y_cpu && y_gpu && ref);
    const float a = xs_float(rng) * 4.0f + (xs_float(rng) < 0 ? -0.5f : 0.5f); /* |a| >= ~0.5 */
    for (size_t i = 0; i < nn; i++) {
        x[i] = xs_float(rng);
        y[i] = xs_float(rng);
        ref[i] = (double)a * x[i] + y[i];
    }
    memcpy(y_cpu, y, nn * sizeof *y);
    kr_example_vec_scale_add_params p = {.a = a};

    /* GPU: poison the whole output buffer (NaN bytes), then upload y */
    kr_buffer *dx = NULL, *dy = NULL;
    cr_assert_eq(kr_backend_alloc(be, nn * sizeof(float), &dx, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_alloc(be, total * sizeof(float), &dy, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_memset(be, dy->ptr, 0xff, total * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_h2d(be, dx->ptr, x, nn * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_h2d(be, dy->ptr, y, nn * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);
    kr_tensor tx = vec_tensor(n, dx->ptr, dx), ty = vec_tensor(n, dy->ptr, dy);
    const kr_tensor *srcs[] = {&tx};
    kr_kernel_args args = {.op = KR_EXAMPLE_OP_VEC_SCALE_ADD, .src = srcs, .n_src = 1, .dst = &ty,
                           .params = &p, .params_size = sizeof p};
    kr_kernel_ref ref_k;
    cr_assert_eq(kr_registry_dispatch(kr_runtime_registry(rt), NULL, &args, KR_BACKEND_CUDA,
                                      kr_backend_device_info(be), NULL, &ref_k, &e),
                 KR_OK, "dispatch: %s", e.msg);
    cr_expect_str_eq(ref_k.kernel->name, "vec_scale_add_f32_cuda", "device tensors not given to the CUDA kernel");
    kr_status st = kr_runtime_run_op(rt, &args, NULL, &e);
    cr_assert_eq(st, KR_OK, "n=%lld: run_op on CUDA: %s", (long long)n, kr_err_msg(&e, st));
    cr_assert_eq(kr_backend_sync(be, NULL, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_d2h(be, y_gpu, dy->ptr, total * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);

    /* CPU: host tensors make dispatch fall back to the plugin's C code */
    kr_tensor hx = vec_tensor(n, x, NULL), hy = vec_tensor(n, y_cpu, NULL);
    const kr_tensor *hsrcs[] = {&hx};
    kr_kernel_args hargs = args;
    hargs.src = hsrcs;
    hargs.dst = &hy;
    st = kr_runtime_run_op(rt, &hargs, NULL, &e);
    cr_assert_eq(st, KR_OK, "n=%lld: run_op on CPU: %s", (long long)n, kr_err_msg(&e, st));

    for (size_t i = 0; i < POISON_PAD; i++) {
        uint32_t bits;
        memcpy(&bits, &y_gpu[nn + i], 4);
        cr_assert_eq(bits, 0xffffffffu, "n=%lld: element %zu past the end was written", (long long)n, nn + i);
    }
    size_t bad = 0;
    for (size_t i = 0; i < nn; i++)
        if (!isfinite(y_gpu[i]))
            bad++;
    cr_assert_eq(bad, 0, "n=%lld: %zu output elements unwritten or non-finite", (long long)n, bad);
    /* y was overwritten on the host side only in y_cpu; y still holds the input */
    cr_expect_eq(count_outside_bound(y_gpu, x, y, a, ref, nn, "GPU"), 0, "n=%lld: GPU result off", (long long)n);
    cr_expect_eq(count_outside_bound(y_cpu, x, y, a, ref, nn, "CPU"), 0, "n=%lld: CPU result off", (long long)n);
    if (nn >= 256) { /* NMSE is a stable summary only over many elements */
        double *cpu_as_ref = malloc(nn * sizeof *cpu_as_ref);
        for (size_t i = 0; i < nn; i++)
            cpu_as_ref[i] = y_cpu[i];
        double e_gpu = nmse(y_gpu, ref, nn), e_cg = nmse(y_gpu, cpu_as_ref, nn);
        cr_expect_leq(e_gpu, 1e-12, "n=%lld: GPU NMSE %g vs double reference", (long long)n, e_gpu);
        cr_expect_leq(e_cg, 1e-6, "n=%lld: GPU vs CPU NMSE %g", (long long)n, e_cg);
        free(cpu_as_ref);
    }

    kr_backend_free(be, dx);
    kr_backend_free(be, dy);
    free(x);
    free(y);
    free(y_cpu);
    free(y_gpu);
    free(ref);
}

/* ---- tests -------------------------------------------------------------------- */

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(gpu, .fini = kr_test_leak_check);
TestSuite(example, .fini = kr_test_leak_check);

Test(gpu, device_info, .timeout = 120)
{
    kr_runtime *rt = open_cuda_runtime();
    const kr_device_info *d = kr_backend_device_info(kr_runtime_backend(rt));
    cr_assert_not_null(d);
    cr_log_info("device: %s, sm_%d%d, %d SMs, %.1f GiB, driver %d", d->name, d->cc_major, d->cc_minor, d->sm_count,
                (double)d->total_memory / (1 << 30), d->driver_version);
    cr_expect_gt(strlen(d->name), 0);
    cr_expect_geq(d->cc_major, 5);
    cr_expect_gt(d->sm_count, 0);
    cr_expect_gt(d->total_memory, 0);
    cr_expect_eq(d->warp_size, 32);
    cr_expect_geq(d->max_threads_per_block, 256);
    cr_expect_gt(d->driver_version, 0);
    uint64_t fr = 0, to = 0;
    kr_err e;
    cr_expect_eq(kr_backend_mem_info(kr_runtime_backend(rt), &fr, &to, &e), KR_OK);
    cr_expect(fr > 0 && fr <= to);
    close_runtime(rt);
}

Test(gpu, vec_scale_add_matches_cpu, .timeout = 300)
{
    kr_runtime *rt = open_cuda_runtime();
    uint64_t seed = fresh_seed(), rng = seed;
    cr_log_info("seed 0x%llx (replay: KR_TEST_SEED=0x%llx)", (unsigned long long)seed, (unsigned long long)seed);
    const int64_t sizes[] = {1, 7, 31, 255, 256, 257, 4097, 65535, 1000003, (1 << 22) + 13};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        check_vec_scale_add(rt, sizes[i], &rng);
    /* a few random odd sizes */
    for (int i = 0; i < 4; i++)
        check_vec_scale_add(rt, (int64_t)(xs_next(&rng) % 200000) | 1, &rng);
    close_runtime(rt);
}

Test(gpu, copies_memset_streams_events, .timeout = 120)
{
    kr_runtime *rt = open_cuda_runtime();
    kr_backend *be = kr_runtime_backend(rt);
    kr_err e;
    kr_err_clear(&e);
    enum { N = 1 << 20 };
    uint8_t *h = malloc(N), *back = malloc(N);
    for (size_t i = 0; i < N; i++)
        h[i] = (uint8_t)(i * 131u + 7u);
    kr_buffer *a = NULL, *b = NULL, *pin = NULL;
    cr_assert_eq(kr_backend_alloc(be, N, &a, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_alloc(be, N, &b, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_host_alloc(be, N, &pin, &e), KR_OK, "%s", e.msg);
    cr_expect(pin->flags & KR_BUFFER_HOST_ACCESSIBLE);
    kr_stream *s = NULL;
    cr_assert_eq(kr_backend_stream_create(be, &s, &e), KR_OK, "%s", e.msg);
    kr_event *e0 = NULL, *e1 = NULL;
    cr_assert_eq(kr_backend_event_create(be, &e0, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_event_create(be, &e1, &e), KR_OK, "%s", e.msg);

    memcpy(pin->ptr, h, N);
    cr_assert_eq(kr_backend_event_record(be, e0, s, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_h2d(be, a->ptr, pin->ptr, N, s, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_d2d(be, b->ptr, a->ptr, N, s, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_memset(be, (uint8_t *)b->ptr + 100, 0x5a, 1000, s, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_sync(be, s, &e), KR_OK, "%s", e.msg); /* h2d read pin: done before reuse */
    memset(pin->ptr, 0, N);
    cr_assert_eq(kr_backend_d2h(be, pin->ptr, b->ptr, N, s, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_event_record(be, e1, s, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_sync(be, s, &e), KR_OK, "%s", e.msg);
    memcpy(back, pin->ptr, N);
    memset(h + 100, 0x5a, 1000);
    cr_expect_eq(memcmp(back, h, N), 0, "h2d -> d2d -> memset -> d2h round trip differs");
    float ms = -1;
    cr_assert_eq(kr_backend_event_elapsed(be, e0, e1, &ms, &e), KR_OK, "%s", e.msg);
    cr_expect(ms >= 0 && ms < 10000, "elapsed %f ms", ms);

    /* zero-size allocation is valid */
    kr_buffer *z = NULL;
    cr_expect_eq(kr_backend_alloc(be, 0, &z, &e), KR_OK);
    cr_expect_null(z ? z->ptr : (void *)1);
    kr_backend_free(be, z);

    /* impossible allocation: an error, and the backend stays usable (a
     * planted fault: compute-sanitizer reports the driver's OOM, so skipped there) */
    const char *skip_faults = getenv("KERNRUN_SKIP_FAULT_TESTS");
    if (!(skip_faults && strcmp(skip_faults, "1") == 0)) {
        kr_buffer *huge = NULL;
        kr_status st = kr_backend_alloc(be, (size_t)1 << 50, &huge, &e);
        cr_expect_eq(st, KR_ERR_NOMEM, "1 PiB alloc: %s", kr_err_msg(&e, st));
        cr_expect_null(huge);
        cr_expect_eq(kr_backend_alloc(be, 4096, &z, &e), KR_OK, "alloc after a failed one: %s", e.msg);
        kr_backend_free(be, z);
    }

    kr_backend_event_destroy(be, e0);
    kr_backend_event_destroy(be, e1);
    kr_backend_stream_destroy(be, s);
    kr_backend_free(be, a);
    kr_backend_free(be, b);
    kr_backend_free(be, pin);
    free(h);
    free(back);
    close_runtime(rt);
}

/* Capture two launches into a graph, replay it, compare with eager runs;
 * then show the fallback: capture on the default stream is refused and the
 * same work run eagerly gives identical output. */
Test(gpu, graph_capture_and_fallback, .timeout = 120)
{
    kr_runtime *rt = open_cuda_runtime();
    kr_backend *be = kr_runtime_backend(rt);
    kr_err e;
    kr_err_clear(&e);
    enum { N = 100003 };
    uint64_t rng = fresh_seed();
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    float *r_graph = malloc(N * sizeof(float)), *r_eager = malloc(N * sizeof(float));
    for (int i = 0; i < N; i++) {
        x[i] = xs_float(&rng);
        y[i] = xs_float(&rng);
    }
    kr_example_vec_scale_add_params p = {.a = 0.75f};
    kr_buffer *dx = NULL, *dy = NULL;
    cr_assert_eq(kr_backend_alloc(be, N * sizeof(float), &dx, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_alloc(be, N * sizeof(float), &dy, &e), KR_OK, "%s", e.msg);
    kr_tensor tx = vec_tensor(N, dx->ptr, dx), ty = vec_tensor(N, dy->ptr, dy);
    const kr_tensor *srcs[] = {&tx};
    kr_kernel_args args = {.op = KR_EXAMPLE_OP_VEC_SCALE_ADD, .src = srcs, .n_src = 1, .dst = &ty,
                           .params = &p, .params_size = sizeof p};
    kr_stream *s = NULL;
    cr_assert_eq(kr_backend_stream_create(be, &s, &e), KR_OK, "%s", e.msg);

    /* eager reference: two applications */
    cr_assert_eq(kr_backend_h2d(be, dx->ptr, x, N * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_h2d(be, dy->ptr, y, N * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);
    /* warm-up compile outside the capture */
    for (int k = 0; k < 2; k++)
        cr_assert_eq(kr_runtime_run_op(rt, &args, s, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_sync(be, s, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_d2h(be, r_eager, dy->ptr, N * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);

    /* graph: capture two applications, replay once on fresh y */
    cr_assert_eq(kr_backend_h2d(be, dy->ptr, y, N * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_graph_begin(be, s, &e), KR_OK, "graph_begin: %s", e.msg);
    for (int k = 0; k < 2; k++)
        cr_assert_eq(kr_runtime_run_op(rt, &args, s, &e), KR_OK, "during capture: %s", e.msg);
    kr_graph *g = NULL;
    cr_assert_eq(kr_backend_graph_end(be, s, &g, &e), KR_OK, "graph_end: %s", e.msg);
    cr_assert_not_null(g);
    cr_assert_eq(kr_backend_graph_launch(be, g, s, &e), KR_OK, "graph_launch: %s", e.msg);
    cr_assert_eq(kr_backend_sync(be, s, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_d2h(be, r_graph, dy->ptr, N * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);
    cr_expect_eq(memcmp(r_graph, r_eager, N * sizeof(float)), 0, "graph replay differs from eager execution");

    /* capture refused (default stream): fall back to eager, same bytes */
    cr_assert_eq(kr_backend_h2d(be, dy->ptr, y, N * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);
    kr_status st = kr_backend_graph_begin(be, NULL, &e);
    cr_expect_neq(st, KR_OK, "capture on the default stream should be refused");
    for (int k = 0; k < 2; k++)
        cr_assert_eq(kr_runtime_run_op(rt, &args, NULL, &e), KR_OK, "eager fallback: %s", e.msg);
    cr_assert_eq(kr_backend_sync(be, NULL, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_d2h(be, r_graph, dy->ptr, N * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);
    cr_expect_eq(memcmp(r_graph, r_eager, N * sizeof(float)), 0, "eager fallback differs");

    kr_backend_graph_destroy(be, g);
    kr_backend_stream_destroy(be, s);
    kr_backend_free(be, dx);
    kr_backend_free(be, dy);
    free(x);
    free(y);
    free(r_graph);
    free(r_eager);
    close_runtime(rt);
}

Test(gpu, curand_uniform, .timeout = 120)
{
    kr_runtime *rt = open_cuda_runtime();
    kr_backend *be = kr_runtime_backend(rt);
    kr_err e;
    kr_err_clear(&e);
    enum { N = 1 << 20 };
    kr_buffer *d = NULL;
    cr_assert_eq(kr_backend_alloc(be, N * sizeof(float), &d, &e), KR_OK, "%s", e.msg);
    float *h1 = malloc(N * sizeof(float)), *h2 = malloc(N * sizeof(float)), *h3 = malloc(N * sizeof(float));
    kr_status st = kr_backend_rng_uniform(be, d->ptr, N, 1234, 0, NULL, &e);
    if (st == KR_ERR_NOT_FOUND && !require_gpu())
        cr_skip_test("cuRAND unavailable: %s", e.msg);
    cr_assert_eq(st, KR_OK, "rng_uniform: %s", kr_err_msg(&e, st));
    cr_assert_eq(kr_backend_d2h(be, h1, d->ptr, N * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_rng_uniform(be, d->ptr, N, 1234, 0, NULL, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_d2h(be, h2, d->ptr, N * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_rng_uniform(be, d->ptr, N, 99, 0, NULL, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_backend_d2h(be, h3, d->ptr, N * sizeof(float), NULL, &e), KR_OK, "%s", e.msg);
    double sum = 0;
    size_t out_of_range = 0;
    for (size_t i = 0; i < N; i++) {
        if (!(h1[i] > 0.0f && h1[i] <= 1.0f))
            out_of_range++;
        sum += h1[i];
    }
    cr_expect_eq(out_of_range, 0, "%zu values outside (0, 1]", out_of_range);
    /* mean of N uniforms: sd = sqrt(1/12/N) ~ 2.8e-4; allow ~18 sd */
    cr_expect(fabs(sum / N - 0.5) < 5e-3, "mean %f", sum / N);
    cr_expect_eq(memcmp(h1, h2, N * sizeof(float)), 0, "same seed gave different numbers");
    cr_expect_neq(memcmp(h1, h3, N * sizeof(float)), 0, "different seeds gave the same numbers");
    kr_backend_free(be, d);
    free(h1);
    free(h2);
    free(h3);
    close_runtime(rt);
}

/* Dynamic shared memory above the default 48 KiB: the backend opts the
 * function in. Each thread writes its stripe of a 160 KiB buffer, the block
 * syncs, and thread t sums the stripe of thread (t + 1) % n: the result shows
 * that every byte was really there (and distinct). Also a request above the
 * device's opt-in maximum is refused with a range error, not a crash. */
Test(gpu, dynamic_shared_memory_above_48k, .timeout = 120)
{
    kr_runtime *rt = open_cuda_runtime();
    kr_backend *be = kr_runtime_backend(rt);
    kr_err e;
    kr_err_clear(&e);
    static const char src_txt[] =
        "extern \"C\" __global__ void kr_test_big_smem(unsigned *out, int words, unsigned seed)\n"
        "{\n"
        "    extern __shared__ unsigned sm[];\n"
        "    const int t = threadIdx.x, n = blockDim.x, per = words / n;\n"
        "    for (int i = 0; i < per; i++) sm[t * per + i] = seed * (unsigned)(t * per + i + 1) + blockIdx.x;\n"
        "    __syncthreads();\n"
        "    const int u = (t + 1) % n;\n"
        "    unsigned acc = 0;\n"
        "    for (int i = 0; i < per; i++) acc = acc * 31u + sm[u * per + i];\n"
        "    out[blockIdx.x * n + t] = acc;\n"
        "}\n";
    static const kr_kernel_source src = {
        .name = "test/big_smem.cu", .code = src_txt, .len = sizeof src_txt - 1, .entry = "kr_test_big_smem"};
    const kr_device_info *info = kr_backend_device_info(be);
    cr_assert_not_null(info);
    enum { NT = 256, NB = 3 };
    size_t bytes = 160 * 1024;
    if (info->max_shared_per_block < bytes)
        cr_skip_test("device opts into %zu bytes of shared memory per block only", info->max_shared_per_block);
    int words = (int)(bytes / 4);
    uint64_t rng = fresh_seed();
    unsigned seed = (unsigned)(rng | 1u);
    kr_function *fn = NULL;
    cr_assert_eq(kr_backend_get_function(be, &src, &fn, &e), KR_OK, "%s", e.msg);
    kr_buffer *d = NULL;
    cr_assert_eq(kr_backend_alloc(be, NB * NT * sizeof(unsigned), &d, &e), KR_OK, "%s", e.msg);
    void *out = d->ptr;
    void *args[] = {&out, &words, &seed};
    uint32_t grid[3] = {NB, 1, 1}, block[3] = {NT, 1, 1};
    cr_assert_eq(kr_backend_launch(be, fn, grid, block, bytes, NULL, args, &e), KR_OK, "160 KiB launch: %s", e.msg);
    cr_assert_eq(kr_backend_sync(be, NULL, &e), KR_OK, "%s", e.msg);
    unsigned got[NB * NT];
    cr_assert_eq(kr_backend_d2h(be, got, d->ptr, sizeof got, NULL, &e), KR_OK, "%s", e.msg);
    int per = words / NT, bad = 0;
    for (int b = 0; b < NB; b++)
        for (int t = 0; t < NT; t++) {
            int u = (t + 1) % NT;
            unsigned acc = 0;
            for (int i = 0; i < per; i++)
                acc = acc * 31u + (seed * (unsigned)(u * per + i + 1) + (unsigned)b);
            bad += got[b * NT + t] != acc;
        }
    cr_expect_eq(bad, 0, "%d of %d sums differ from the host's", bad, NB * NT);
    kr_status st = kr_backend_launch(be, fn, grid, block, info->max_shared_per_block + 1024, NULL, args, &e);
    cr_expect_eq(st, KR_ERR_RANGE, "oversized shared memory: %s", kr_err_msg(&e, st));
    kr_backend_free(be, d);
    close_runtime(rt);
}

/* A deliberately broken kernel (store to an unmapped address) marks the
 * context dead; every later call returns KR_ERR_DEVICE_LOST naming the
 * original fault. */
Test(gpu, illegal_address_marks_context_dead, .timeout = 120)
{
    const char *skip = getenv("KERNRUN_SKIP_FAULT_TESTS");
    if (skip && strcmp(skip, "1") == 0)
        cr_skip_test("KERNRUN_SKIP_FAULT_TESTS=1 (the planted fault would be reported by compute-sanitizer)");
    kr_runtime *rt = open_cuda_runtime();
    kr_backend *be = kr_runtime_backend(rt);
    kr_err e;
    kr_err_clear(&e);
    static const char bad_src[] =
        "extern \"C\" __global__ void kr_test_bad_store(float v)\n"
        "{ *(volatile float *)(unsigned long long)(0x10 + threadIdx.x * 4) = v; }\n";
    static const kr_kernel_source bad = {
        .name = "test/bad_store.cu", .code = bad_src, .len = sizeof bad_src - 1, .entry = "kr_test_bad_store"};
    kr_function *fn = NULL;
    cr_assert_eq(kr_backend_get_function(be, &bad, &fn, &e), KR_OK, "%s", e.msg);
    float v = 1.0f;
    void *args[] = {&v};
    uint32_t grid[3] = {1, 1, 1}, block[3] = {32, 1, 1};
    kr_status st = kr_backend_launch(be, fn, grid, block, 0, NULL, args, &e);
    if (st == KR_OK)
        st = kr_backend_sync(be, NULL, &e);
    cr_assert_eq(st, KR_ERR_DEVICE_LOST, "fault not detected as device loss: %s", kr_err_msg(&e, st));
    char first[KR_ERR_MSG_MAX];
    snprintf(first, sizeof first, "%s", e.msg);
    cr_log_info("fault: %s", first);

    kr_buffer *b = NULL;
    kr_err_clear(&e);
    st = kr_backend_alloc(be, 1024, &b, &e);
    cr_expect_eq(st, KR_ERR_DEVICE_LOST, "alloc after the fault returned %s", kr_status_name(st));
    cr_expect_null(b);
    cr_expect(strstr(e.msg, "ILLEGAL_ADDRESS") != NULL || strstr(e.msg, "illegal") != NULL,
              "later error does not carry the original reason: %s", e.msg);
    kr_err_clear(&e);
    st = kr_backend_sync(be, NULL, &e);
    cr_expect_eq(st, KR_ERR_DEVICE_LOST);
    kr_function *fn2 = NULL;
    st = kr_backend_get_function(be, &bad, &fn2, &e);
    cr_expect_eq(st, KR_ERR_DEVICE_LOST, "get_function after the fault returned %s", kr_status_name(st));
    close_runtime(rt); /* teardown of a dead context must not crash */
}

/* No GPU needed: the example plugin through the real loader on the CPU
 * backend, against a double-precision computation. Runs everywhere (CI). */
Test(example, cpu_kernel_through_loader, .timeout = 60)
{
    kr_err e;
    kr_err_clear(&e);
    kr_config *cfg = NULL;
    cr_assert_eq(kr_config_create(&cfg, &e), KR_OK, "%s", e.msg);
    cr_assert_eq(kr_config_set(cfg, "runtime", "backend", "cpu", "test", &e), KR_OK, "%s", e.msg);
    kr_runtime *rt = NULL;
    cr_assert_eq(kr_runtime_open(cfg, &rt, &e), KR_OK, "%s", e.msg);
    bool found = false;
    for (size_t i = 0; i < kr_runtime_plugin_count(rt); i++) {
        kr_plugin_info pi;
        if (kr_runtime_plugin_at(rt, i, &pi) && strcmp(pi.name, "example") == 0) {
            found = true;
            cr_expect_eq(pi.n_kernels, 2);
            cr_expect_str_eq(pi.version, "1.0.0");
        }
    }
    cr_assert(found, "example plugin not loaded");
    kr_kernel_ref refs[4];
    size_t nk = kr_registry_find_kernels(kr_runtime_registry(rt), KR_EXAMPLE_OP_VEC_SCALE_ADD, refs, 4);
    cr_expect_eq(nk, 2, "vec_scale_add should have a CPU and a CUDA kernel");

    uint64_t rng = fresh_seed();
    const int64_t sizes[] = {0, 1, 3, 1001, 65537};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t n = (size_t)sizes[k];
        float *x = malloc(n * sizeof *x + 4), *y = malloc(n * sizeof *y + 4), *y0 = malloc(n * sizeof *y0 + 4);
        double *ref = malloc(n * sizeof *ref + 8);
        const float a = 1.5f + xs_float(&rng);
        for (size_t i = 0; i < n; i++) {
            x[i] = xs_float(&rng);
            y[i] = y0[i] = xs_float(&rng);
            ref[i] = (double)a * x[i] + y[i];
        }
        kr_example_vec_scale_add_params p = {.a = a};
        kr_tensor tx = vec_tensor((int64_t)n, x, NULL), ty = vec_tensor((int64_t)n, y, NULL);
        const kr_tensor *srcs[] = {&tx};
        kr_kernel_args args = {.op = KR_EXAMPLE_OP_VEC_SCALE_ADD, .src = srcs, .n_src = 1, .dst = &ty,
                               .params = &p, .params_size = sizeof p};
        kr_status st = kr_runtime_run_op(rt, &args, NULL, &e);
        cr_assert_eq(st, KR_OK, "n=%zu: %s", n, kr_err_msg(&e, st));
        cr_expect_eq(count_outside_bound(y, x, y0, a, ref, n, "CPU"), 0, "n=%zu: CPU result off", n);
        if (n >= 256)
            cr_expect_leq(nmse(y, ref, n), 1e-12, "n=%zu: NMSE %g", n, nmse(y, ref, n));
        /* wrong params size: refused by supports(), so no kernel */
        args.params_size = 1;
        cr_expect_neq(kr_runtime_run_op(rt, &args, NULL, &e), KR_OK, "bad params_size accepted");
        free(x);
        free(y);
        free(y0);
        free(ref);
    }
    kr_runtime_close(rt);
    kr_config_free(cfg);
}
