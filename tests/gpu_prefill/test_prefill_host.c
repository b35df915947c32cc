/* Prefill kernels without a GPU: every kernel record (flash attention per
 * head_dim, the batched ops) NVRTC-compiles to a cubin for sm_90 holding its
 * entry symbol; launcher argument checks that need no device. */
#include <criterion/criterion.h>
#include <stdbool.h>
#include <string.h>

#include "kernrun/jit.h"
#include "kr_prefill_ops.h"

Test(prefill_host, all_kernels_compile_sm90)
{
    kr_err err;
    kr_err_clear(&err);
    kr_jit_config cfg = {.no_cache = true, .kernel_dir = ""};
    kr_jit *jit = NULL;
    kr_status st = kr_jit_create(&cfg, &jit, &err);
    if (st == KR_ERR_NOT_FOUND)
        cr_skip_test("no NVRTC: %s", err.msg);
    cr_assert_eq(st, KR_OK, "%s", err.msg);
    size_t n = kr_pf_source_count();
    cr_assert_eq(n, 30, "7 flash attention head dims x (f16, q8_0, f16 pipelined) + 9 batched ops, got %zu records", n);
    cr_expect_null(kr_pf_source_at(n));
    for (size_t i = 0; i < n; i++) {
        const kr_kernel_source *ks = kr_pf_source_at(i);
        cr_assert_not_null(ks);
        kr_jit_source js = {.name = ks->name, .src = ks->code, .len = ks->len,
                            .options = ks->options, .n_options = (size_t)ks->n_options};
        kr_jit_image img;
        memset(&img, 0, sizeof img);
        kr_err_clear(&err);
        st = kr_jit_compile(jit, &js, 90, KR_JIT_CUBIN, &img, &err);
        cr_expect_eq(st, KR_OK, "%s %s: %s", ks->entry, ks->n_options ? ks->options[0] : "", err.msg);
        if (st == KR_OK) {
            size_t L = strlen(ks->entry);
            bool found = false;
            for (size_t p = 0; p + L <= img.size && !found; p++)
                found = memcmp((const char *)img.data + p, ks->entry, L) == 0;
            cr_expect(found, "%s not in the cubin", ks->entry);
            kr_jit_image_free(&img);
        }
    }
    kr_jit_free(jit);
}

Test(prefill_host, supports_and_null)
{
    static const int ok[] = {16, 32, 64, 80, 96, 128, 256}, bad[] = {0, 2, 8, 48, 72, 112, 130, 512};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        cr_expect(kr_pf_flash_attn_supports(ok[i]), "%d", ok[i]);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_expect(!kr_pf_flash_attn_supports(bad[i]), "%d", bad[i]);
    kr_err err;
    kr_err_clear(&err);
    kr_pf *p = (kr_pf *)1;
    cr_expect_eq(kr_pf_create(NULL, &p, &err), KR_ERR_INVALID_ARG);
    cr_expect_null(p);
    cr_expect_eq(kr_pf_flash_attn(NULL, NULL, NULL, 0, NULL, NULL, KR_DTYPE_F16, 0, 1, NULL, 0, 1, 0, 1, 1, 128, 0, 1.0f, &err),
                 KR_ERR_INVALID_ARG);
    kr_pf_free(NULL);
}
