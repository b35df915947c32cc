/* Seeded test RNG (xorshift64) for randomized tests: the seed comes from
 * KR_TEST_SEED=n when set (to replay a failure), else from time, pid and
 * clock; tests print kr_test_seed() in failure messages. One generator per
 * test executable (header-only, static state). */
#ifndef KR_TEST_RNG_H
#define KR_TEST_RNG_H

#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static uint64_t kr_test_rng_state;
static uint64_t kr_test_rng_seed_value;

/* (Re)seed; call at the start of every test that draws numbers. */
static inline void kr_test_rng_seed(void)
{
    const char *s = getenv("KR_TEST_SEED");
    kr_test_rng_seed_value =
        s ? strtoull(s, NULL, 0) : ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid() ^ (uint64_t)clock();
    kr_test_rng_state = kr_test_rng_seed_value * 0x9E3779B97F4A7C15ull + 1;
}

/* The seed of the current test (for KR_TEST_SEED=n in failure messages). */
static inline uint64_t kr_test_seed(void) { return kr_test_rng_seed_value; }

static inline uint64_t kr_test_rng_u64(void)
{
    kr_test_rng_state ^= kr_test_rng_state << 13;
    kr_test_rng_state ^= kr_test_rng_state >> 7;
    kr_test_rng_state ^= kr_test_rng_state << 17;
    return kr_test_rng_state;
}

/* uniform in [lo, hi) */
static inline float kr_test_rng_f(float lo, float hi)
{
    return lo + (hi - lo) * (float)((kr_test_rng_u64() >> 40) * 0x1p-24);
}

#endif
