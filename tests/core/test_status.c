/* Status codes and the layered error message. */
#include <criterion/criterion.h>

#include "kr_test_leaks.h"
#include <string.h>

#include "kernrun/status.h"


TestSuite(status, .fini = kr_test_leak_check);

Test(status, names_and_messages_match_the_map)
{
    cr_assert_str_eq(kr_status_name(KR_OK), "KR_OK");
    cr_assert_str_eq(kr_status_name(KR_ERR_ABI), "KR_ERR_ABI");
    cr_assert_str_eq(kr_status_str(KR_ERR_NOMEM), "out of memory");
    cr_assert_str_eq(kr_status_name((kr_status)12345), "KR_UNKNOWN");
    cr_assert_str_eq(kr_status_str((kr_status)12345), "unknown status");
}

Test(status, codes_are_negative_and_names_unique)
{
    static const kr_status all[] = {
#define X(name, val, msg) KR_##name,
        KR_STATUS_MAP(X)
#undef X
    };
    size_t n = sizeof all / sizeof all[0];
    cr_assert_eq(all[0], 0);
    for (size_t i = 1; i < n; i++) {
        cr_assert_lt((int)all[i], 0, "%s is not negative", kr_status_name(all[i]));
        for (size_t j = 0; j < i; j++) {
            cr_assert_neq(all[i], all[j]);
            cr_assert_str_neq(kr_status_name(all[i]), kr_status_name(all[j]));
        }
    }
}

Test(status, prefix_builds_outermost_first)
{
    kr_err e;
    kr_err_clear(&e);
    cr_assert_eq(e.code, KR_OK);
    cr_assert_str_empty(e.msg);
    cr_assert_eq(kr_err_set(&e, KR_ERR_FORMAT, "offset %d past end", 1234), KR_ERR_FORMAT);
    cr_assert_eq(kr_err_prefix(&e, "tensor '%s'", "blk.3.attn_q.weight"), KR_ERR_FORMAT);
    kr_err_prefix(&e, "loading %s", "model.gguf");
    cr_assert_str_eq(e.msg, "loading model.gguf: tensor 'blk.3.attn_q.weight': offset 1234 past end");
}

Test(status, prefix_without_message_uses_status_text)
{
    kr_err e;
    kr_err_clear(&e);
    e.code = KR_ERR_IO;
    kr_err_prefix(&e, "reading x");
    cr_assert_str_eq(e.msg, "reading x: input/output error");
}

Test(status, long_messages_are_truncated_not_overflowed)
{
    kr_err e;
    char big[3 * KR_ERR_MSG_MAX];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    kr_err_set(&e, KR_ERR_IO, "%s", big);
    cr_assert_eq(strlen(e.msg), KR_ERR_MSG_MAX - 1);
    kr_err_prefix(&e, "%s", big);
    cr_assert_eq(strlen(e.msg), KR_ERR_MSG_MAX - 1);
    cr_assert_eq(e.code, KR_ERR_IO);
}

Test(status, null_err_is_accepted)
{
    cr_assert_eq(kr_err_set(NULL, KR_ERR_RANGE, "x"), KR_ERR_RANGE);
    cr_assert_eq(kr_err_prefix(NULL, "x"), KR_ERR_INTERNAL);
    cr_assert_str_eq(kr_err_msg(NULL, KR_ERR_RANGE), "value out of range");
    kr_err_clear(NULL);
}
