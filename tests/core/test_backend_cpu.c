/* CPU backend through the public inline wrappers. */
#include <criterion/criterion.h>

#include "kr_test_leaks.h"
#include <stdint.h>
#include <string.h>

#include "kernrun/backend.h"

static kr_backend *be;

static void setup(void)
{
    kr_err e;
    cr_assert_eq(kr_backend_create(KR_BACKEND_CPU, 0, &be, &e), KR_OK);
}
static void teardown(void)
{
    kr_backend_destroy(be);
    kr_test_leak_check();
}

TestSuite(backend_cpu, .init = setup, .fini = teardown);

Test(backend_cpu, identity)
{
    cr_assert_eq(be->kind, KR_BACKEND_CPU);
    cr_assert_str_eq(be->iface->name, "cpu");
    const kr_device_info *di = kr_backend_device_info(be);
    cr_assert_not_null(di);
    cr_assert_eq(di->struct_size, sizeof(kr_device_info));
    cr_assert_eq(di->kind, KR_BACKEND_CPU);
    cr_assert_gt(strlen(di->name), 0);
    cr_assert_geq(di->sm_count, 1);
    cr_assert_gt(di->total_memory, 0);
    uint64_t fr = 0, tot = 0;
    cr_assert_eq(kr_backend_mem_info(be, &fr, &tot, NULL), KR_OK);
    cr_assert_eq(tot, di->total_memory);
    cr_assert_leq(fr, tot);
    int n = 0;
    cr_assert_eq(kr_backend_count_devices(KR_BACKEND_CPU, &n, NULL), KR_OK);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(kr_backend_kind_name(KR_BACKEND_CUDA), "cuda");
    kr_backend_kind k;
    cr_assert_eq(kr_backend_kind_parse("CUDA", &k), KR_OK);
    cr_assert_eq(k, KR_BACKEND_CUDA);
    cr_assert_eq(kr_backend_kind_parse("metal", &k), KR_ERR_INVALID_ARG);
}

Test(backend_cpu, buffers_and_copies)
{
    kr_buffer *a, *b;
    kr_err e;
    cr_assert_eq(kr_backend_alloc(be, 1000, &a, &e), KR_OK);
    cr_assert_eq(kr_backend_alloc(be, 1000, &b, &e), KR_OK);
    cr_assert_eq((uintptr_t)a->ptr % 64, 0);
    cr_assert_eq(a->size, 1000);
    cr_assert(a->flags & KR_BUFFER_HOST_ACCESSIBLE);
    cr_assert_eq(a->backend, be);
    unsigned char src[1000], dst[1000];
    for (int i = 0; i < 1000; i++)
        src[i] = (unsigned char)(i * 7);
    cr_assert_eq(kr_backend_h2d(be, a->ptr, src, 1000, NULL, &e), KR_OK);
    cr_assert_eq(kr_backend_d2d(be, b->ptr, a->ptr, 1000, NULL, &e), KR_OK);
    cr_assert_eq(kr_backend_memset(be, (char *)b->ptr + 10, 0xAB, 5, NULL, &e), KR_OK);
    cr_assert_eq(kr_backend_d2h(be, dst, b->ptr, 1000, NULL, &e), KR_OK);
    for (int i = 0; i < 1000; i++) {
        unsigned char want = (i >= 10 && i < 15) ? 0xAB : (unsigned char)(i * 7);
        cr_assert_eq(dst[i], want, "byte %d", i);
    }
    kr_backend_free(be, a);
    kr_backend_free(be, b);
    kr_buffer *z;
    cr_assert_eq(kr_backend_alloc(be, 0, &z, &e), KR_OK);
    cr_assert_null(z->ptr);
    kr_backend_free(be, z);
    cr_assert_eq(kr_backend_alloc(be, SIZE_MAX - 8, &z, &e), KR_ERR_OVERFLOW);
}

Test(backend_cpu, streams_events_and_unsupported_slots)
{
    kr_err e;
    kr_stream *s;
    cr_assert_eq(kr_backend_stream_create(be, &s, &e), KR_OK);
    kr_event *t0, *t1;
    cr_assert_eq(kr_backend_event_create(be, &t0, &e), KR_OK);
    cr_assert_eq(kr_backend_event_create(be, &t1, &e), KR_OK);
    cr_assert_eq(kr_backend_event_record(be, t0, s, &e), KR_OK);
    cr_assert_eq(kr_backend_event_record(be, t1, s, &e), KR_OK);
    float ms = -1;
    cr_assert_eq(kr_backend_event_elapsed(be, t0, t1, &ms, &e), KR_OK);
    cr_assert_geq(ms, 0.0f);
    cr_assert_eq(kr_backend_sync(be, s, &e), KR_OK);
    kr_backend_event_destroy(be, t0);
    kr_backend_event_destroy(be, t1);
    kr_backend_stream_destroy(be, s);

    kr_kernel_source src = {.name = "k.cu", .code = "", .len = 0, .entry = "k"};
    kr_function *fn = NULL;
    kr_err_clear(&e);
    cr_assert_eq(kr_backend_get_function(be, &src, &fn, &e), KR_ERR_UNSUPPORTED);
    cr_assert(strstr(e.msg, "cpu backend") && strstr(e.msg, "not supported"), "%s", e.msg);
    cr_assert_eq(kr_backend_graph_begin(be, NULL, &e), KR_ERR_UNSUPPORTED);
    cr_assert_eq(kr_backend_rng_uniform(be, NULL, 0, 1, 0, NULL, &e), KR_ERR_UNSUPPORTED);
    cr_assert_not(KR_BACKEND_HAS(be, launch));
    cr_assert(KR_BACKEND_HAS(be, memset));
}

Test(backend_cpu, wrappers_respect_struct_size)
{
    /* a vtable from an "older" implementation that stops before memset */
    kr_backend_i old = *be->iface;
    old.struct_size = (uint32_t)offsetof(kr_backend_i, memset);
    kr_backend fake = *be;
    fake.iface = &old;
    cr_assert_not(KR_BACKEND_HAS(&fake, memset));
    cr_assert(KR_BACKEND_HAS(&fake, memcpy_d2d_async));
    char x[4];
    cr_assert_eq(kr_backend_memset(&fake, x, 0, 4, NULL, NULL), KR_ERR_UNSUPPORTED);
}

Test(backend_cpu, bad_arguments)
{
    kr_backend *b2;
    kr_err e;
    cr_assert_eq(kr_backend_create(KR_BACKEND_CPU, 1, &b2, &e), KR_ERR_RANGE);
    cr_assert_null(b2);
    cr_assert_eq(kr_backend_create((kr_backend_kind)9, 0, &b2, &e), KR_ERR_INVALID_ARG);
    cr_assert_eq(kr_backend_create(KR_BACKEND_CUDA, -1, &b2, &e), KR_ERR_RANGE);
    cr_assert_eq(kr_backend_h2d(be, NULL, "x", 1, NULL, &e), KR_ERR_INVALID_ARG);
    kr_backend_destroy(NULL);
}
