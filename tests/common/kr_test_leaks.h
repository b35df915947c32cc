/* Per-test leak check for Criterion suites under ASan/LSan (shared by all
 * suites; include directory kr_test_common_inc from tests/meson.build).
 *
 * Criterion runs each test in a child process and ignores that child's exit
 * status after the test body, so LeakSanitizer's report at exit is printed
 * but does not fail anything. kr_test_leak_check() runs a leak check inside
 * the test process and aborts it when memory leaked (Criterion then reports
 * a crash and the executable exits non-zero). Use it as the suite's .fini,
 * or call it at the end of an existing .fini or test body:
 *
 *     TestSuite(config, .fini = kr_test_leak_check);
 *
 * A test's own .fini runs before the suite's, so per-test teardowns have
 * freed their state by the time the check runs. LSAN_OPTIONS suppressions
 * apply. Without ASan it does nothing. */
#ifndef KR_TEST_LEAKS_H
#define KR_TEST_LEAKS_H

#include <signal.h>
#include <stdio.h>

#if defined(__SANITIZE_ADDRESS__)
#define KR_TEST_HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KR_TEST_HAVE_LSAN 1
#endif
#endif

#ifdef KR_TEST_HAVE_LSAN
#include <sanitizer/lsan_interface.h>
#endif

static inline void kr_test_leak_check(void)
{
#ifdef KR_TEST_HAVE_LSAN
    if (__lsan_do_recoverable_leak_check()) {
        fputs("kr_test_leak_check: memory leaked in this test (LeakSanitizer report above)\n", stderr);
        raise(SIGABRT);
    }
#endif
}

#endif
