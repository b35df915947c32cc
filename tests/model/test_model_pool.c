/* Thread pool behind kr_exec: every index covered exactly once, chunk
 * bounds respected, tids in range, many back-to-back jobs (the decode loop
 * pattern), jobs smaller than min_chunk stay on the caller. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "pool.h"
#include "kr_test_leaks.h"

typedef struct job {
    _Atomic int *hits;     /* (n) */
    size_t min_chunk;
    int n_threads;
    _Atomic int bad;       /* chunk smaller than min_chunk (except the last) or bad tid */
    pthread_t caller;
    _Atomic int off_caller;
} job;

static void body(void *arg, size_t b, size_t e, int tid)
{
    job *j = arg;
    if (tid < 0 || tid >= j->n_threads || b >= e)
        atomic_fetch_add(&j->bad, 1);
    if (!pthread_equal(pthread_self(), j->caller))
        atomic_fetch_add(&j->off_caller, 1);
    for (size_t i = b; i < e; i++)
        atomic_fetch_add(&j->hits[i], 1);
}

/* per-test leak check under ASan (tests/common/kr_test_leaks.h) */
TestSuite(pool, .fini = kr_test_leak_check);

Test(pool, covers_each_index_once)
{
    for (int nt = 1; nt <= 4; nt++) {
        kr_pool *p;
        cr_assert_eq(kr_pool_new(nt, &p), KR_OK);
        const kr_exec *ex = kr_pool_exec(p);
        cr_assert_eq(ex->n_threads, nt);
        cr_assert_eq(ex->struct_size, sizeof(kr_exec));
        size_t sizes[] = {1, 2, 3, 7, 64, 1000, 4099};
        for (int rep = 0; rep < 3000; rep++) {
            size_t n = sizes[rep % 7];
            _Atomic int *hits = calloc(n, sizeof *hits);
            job j = {.hits = hits, .min_chunk = (size_t)(rep % 5), .n_threads = nt, .caller = pthread_self()};
            ex->parallel_for(ex->pool, n, j.min_chunk, body, &j);
            for (size_t i = 0; i < n; i++)
                cr_assert_eq(atomic_load(&hits[i]), 1, "threads %d n %zu index %zu hit %d times", nt, n, i,
                             atomic_load(&hits[i]));
            cr_assert_eq(atomic_load(&j.bad), 0);
            if (nt == 1)
                cr_assert_eq(atomic_load(&j.off_caller), 0);
            free(hits);
        }
        /* n below min_chunk: runs on the caller only */
        _Atomic int hits[10] = {0};
        job j = {.hits = hits, .n_threads = nt, .caller = pthread_self()};
        ex->parallel_for(ex->pool, 10, 100, body, &j);
        cr_expect_eq(atomic_load(&j.off_caller), 0);
        for (int i = 0; i < 10; i++)
            cr_expect_eq(atomic_load(&hits[i]), 1);
        kr_pool_free(p);
    }
}

Test(pool, zero_items_and_idle_free)
{
    kr_pool *p;
    cr_assert_eq(kr_pool_new(3, &p), KR_OK);
    const kr_exec *ex = kr_pool_exec(p);
    job j = {.hits = NULL, .n_threads = 3, .caller = pthread_self()};
    ex->parallel_for(ex->pool, 0, 1, body, &j);
    cr_expect_eq(atomic_load(&j.bad), 0);
    kr_pool_free(p); /* workers idle: must join without a job */
    cr_assert_eq(kr_pool_new(0, &p), KR_OK); /* clamps to 1 */
    cr_expect_eq(kr_pool_exec(p)->n_threads, 1);
    kr_pool_free(p);
    kr_pool_free(NULL);
}
