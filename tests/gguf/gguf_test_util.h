/* Shared helpers for the GGUF test suite. */
#ifndef KR_TEST_GGUF_UTIL_H
#define KR_TEST_GGUF_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "gguf_builder.h"
#include "kernrun/gguf.h"
/* every suite here runs kr_test_leak_check (tests/common) as .fini */
#include "kr_test_leaks.h"

/* Path of a file in the shared test data ($KR_TESTDATA or ../shared/testdata). */
const char *tu_testdata(const char *rel, char *buf, size_t cap);

/* When $KR_GGUF_SEED_DIR is set, save the bytes there as "<tag>.gguf" (used
 * by tools/fuzz-gguf to seed the fuzzer with the malformed files). */
void tu_dump(const char *tag, const void *data, size_t n);

/* Parse an exact-size heap copy of b (so ASan sees any over-read); assert the
 * parse fails with `code` and a message containing every non-NULL needle. */
void tu_expect_reject(const char *tag, const gb *b, int code, const char *needle1, const char *needle2);
/* Parse an exact-size heap copy; assert success; caller closes. The copy is
 * returned in *copy and must be freed after kr_gguf_close. */
kr_gguf *tu_expect_ok(const char *tag, const gb *b, void **copy);

/* The reference valid file (see tu_build_valid in test_util.c for contents). */
void tu_build_valid(gb *b);
#define TU_VALID_DATA_BYTES 134u

#endif
