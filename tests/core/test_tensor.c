/* Tensor helpers. Expected strides/sizes come from the GGML block formats:
 * f32 4 bytes; f16 2 bytes; q4_0 blocks of 32 elements in 18 bytes
 * (fp16 scale + 16 bytes of nibbles); q8_0 32 elements in 34 bytes. */
#include <criterion/criterion.h>

#include "kr_test_leaks.h"
#include <stdint.h>

#include "kernrun/tensor.h"


TestSuite(tensor, .fini = kr_test_leak_check);

Test(tensor, init_packs_strides_f32)
{
    kr_tensor t;
    cr_assert_eq(kr_tensor_init(&t, KR_DTYPE_F32, 5, 3, 2, 1), KR_OK);
    cr_assert_eq(t.nb[0], 4);
    cr_assert_eq(t.nb[1], 20);
    cr_assert_eq(t.nb[2], 60);
    cr_assert_eq(t.nb[3], 120);
    cr_assert_eq(kr_tensor_nelements(&t), 30);
    cr_assert_eq(kr_tensor_nrows(&t), 6);
    size_t n;
    cr_assert(kr_tensor_nbytes(&t, &n));
    cr_assert_eq(n, 120);
    cr_assert(kr_tensor_span(&t, &n));
    cr_assert_eq(n, 120);
    cr_assert(kr_tensor_is_contiguous(&t));
    cr_assert_null(t.data);
    cr_assert_null(t.buf);
}

Test(tensor, init_quantized_rows)
{
    kr_tensor t;
    cr_assert_eq(kr_tensor_init(&t, KR_DTYPE_Q4_0, 64, 3, 1, 1), KR_OK);
    cr_assert_eq(t.nb[0], 18);
    cr_assert_eq(t.nb[1], 36);
    size_t n;
    cr_assert(kr_tensor_nbytes(&t, &n));
    cr_assert_eq(n, 108);
    cr_assert_eq(kr_tensor_init(&t, KR_DTYPE_Q8_0, 96, 1, 1, 1), KR_OK);
    cr_assert(kr_tensor_nbytes(&t, &n));
    cr_assert_eq(n, 102);
    /* row length not a multiple of the 32-element block */
    cr_assert_eq(kr_tensor_init(&t, KR_DTYPE_Q4_0, 33, 1, 1, 1), KR_ERR_INVALID_ARG);
}

Test(tensor, init_rejects_bad_input)
{
    kr_tensor t;
    cr_assert_eq(kr_tensor_init(&t, (kr_dtype)4, 32, 1, 1, 1), KR_ERR_INVALID_ARG); /* removed q4_2 */
    cr_assert_eq(kr_tensor_init(&t, KR_DTYPE_F32, -1, 1, 1, 1), KR_ERR_INVALID_ARG);
    cr_assert_eq(kr_tensor_init(&t, KR_DTYPE_F32, INT64_MAX / 2, 4, 4, 1), KR_ERR_OVERFLOW);
}

Test(tensor, transposed_view_is_not_contiguous)
{
    kr_tensor t;
    cr_assert_eq(kr_tensor_init(&t, KR_DTYPE_F16, 4, 3, 1, 1), KR_OK);
    /* swap dims 0 and 1 */
    int64_t ne0 = t.ne[0];
    size_t nb0 = t.nb[0];
    t.ne[0] = t.ne[1];
    t.nb[0] = t.nb[1];
    t.ne[1] = ne0;
    t.nb[1] = nb0;
    cr_assert_not(kr_tensor_is_contiguous(&t));
    size_t span;
    cr_assert(kr_tensor_span(&t, &span));
    /* last element at (2,3): 2*8 + 3*2 = 22, plus 2 bytes */
    cr_assert_eq(span, 24);
}

Test(tensor, overflowing_shapes_are_detected)
{
    kr_tensor t = {.type = KR_DTYPE_F32, .ne = {INT64_MAX, 2, 1, 1}, .nb = {4, 4, 4, 4}};
    cr_assert_eq(kr_tensor_nelements(&t), -1);
    size_t n;
    cr_assert_not(kr_tensor_nbytes(&t, &n));
    cr_assert_not(kr_tensor_span(&t, &n));
    t.ne[0] = -3;
    cr_assert_eq(kr_tensor_nelements(&t), -1);
}

Test(tensor, empty_tensor)
{
    kr_tensor t;
    cr_assert_eq(kr_tensor_init(&t, KR_DTYPE_F32, 8, 0, 1, 1), KR_OK);
    size_t n = 99;
    cr_assert(kr_tensor_span(&t, &n));
    cr_assert_eq(n, 0);
    cr_assert(kr_tensor_nbytes(&t, &n));
    cr_assert_eq(n, 0);
    cr_assert_eq(kr_tensor_nelements(&t), 0);
}

Test(tensor, inline_sizes_match_library)
{
    for (int id = 0; id < KR_DTYPE_COUNT; id++) {
        cr_assert_eq(kr_tensor_type_block_size((kr_dtype)id), kr_dtype_block_size((kr_dtype)id), "type %d", id);
        cr_assert_eq(kr_tensor_type_size((kr_dtype)id), kr_dtype_type_size((kr_dtype)id), "type %d", id);
    }
}
