/* Thread pool behind kr_exec: n_threads - 1 workers plus the calling thread.
 * A job is published by bumping the generation in `claim`; workers spin
 * briefly on it (ops come in quick succession during a forward pass) and
 * then sleep on a condvar. */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Waiting: KR__POOL_SPIN_HOT polls, then polls with sched_yield() (gives the
 * core away on an oversubscribed machine) up to KR__POOL_SPIN, then a condvar. */
#define KR__POOL_SPIN_HOT 256
#define KR__POOL_SPIN 4096
#define KR__CHUNKS_PER_THREAD 4

/* A job is split into n_chunks chunks that participants claim one at a time
 * from `claim` = generation << 32 | n_chunks << 16 | next chunk, so a worker
 * the OS has descheduled delays nothing: the others take its chunks. The
 * caller waits for `done` (chunks finished) to reach n_chunks. Generation and
 * count live in the same word as the index, so a worker still looking at an
 * old job can never claim a chunk of the next one. */
#define KR__MAX_CHUNKS 0xffffu
struct kr_pool {
    int n_threads;                 /* workers + caller */
    pthread_t *threads;            /* (n_threads - 1) */
    int n_started;                 /* workers actually created */
    pthread_mutex_t mu;
    pthread_cond_t cv_work;        /* claim's generation changed, or stop */
    pthread_cond_t cv_done;        /* done reached n_chunks */
    _Atomic uint64_t claim;        /* gen << 32 | n_chunks << 16 | next chunk */
    _Atomic uint32_t done;         /* chunks finished in the current job */
    _Atomic bool stop;
    /* current job (written before claim publishes the new generation) */
    kr_par_fn fn;
    void *arg;
    size_t n;
    uint32_t n_chunks;             /* of the current job (caller's copy) */
    kr_exec exec;
};

typedef struct kr__worker_arg {
    kr_pool *pool;
    int tid;
} kr__worker_arg;

/* Claim and run chunks of job generation gen until none are left. */
static void kr__work(kr_pool *p, uint32_t gen, int tid)
{
    for (;;) {
        uint64_t c = atomic_load(&p->claim);
        uint32_t i = (uint32_t)c & 0xffffu, nc = (uint32_t)(c >> 16) & 0xffffu;
        if ((uint32_t)(c >> 32) != gen || i >= nc)
            return;
        if (!atomic_compare_exchange_weak(&p->claim, &c, c + 1))
            continue;
        /* chunk i of job gen is ours; that job cannot end before we report it */
        size_t b = p->n * i / nc, e = p->n * (i + 1) / nc;
        if (b < e)
            p->fn(p->arg, b, e, tid);
        if (atomic_fetch_add(&p->done, 1) + 1 == nc) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *kr__worker(void *varg)
{
    kr__worker_arg wa = *(kr__worker_arg *)varg;
    free(varg);
    kr_pool *p = wa.pool;
    uint32_t seen = 0;
    for (;;) {
        uint32_t g = (uint32_t)(atomic_load(&p->claim) >> 32);
        for (int i = 0; g == seen && i < KR__POOL_SPIN && !atomic_load(&p->stop); i++) {
            if (i >= KR__POOL_SPIN_HOT)
                sched_yield();
            g = (uint32_t)(atomic_load(&p->claim) >> 32);
        }
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = (uint32_t)(atomic_load(&p->claim) >> 32)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv_work, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop))
            break;
        seen = g;
        kr__work(p, g, wa.tid);
    }
    return NULL;
}

static void kr__pool_parallel_for(void *vp, size_t n, size_t min_chunk, kr_par_fn fn, void *arg)
{
    kr_pool *p = vp;
    if (n == 0)
        return;
    if (min_chunk == 0)
        min_chunk = 1;
    size_t max_chunks = (n + min_chunk - 1) / min_chunk;
    size_t n_chunks = (size_t)(p->n_started + 1) * KR__CHUNKS_PER_THREAD;
    if (n_chunks > max_chunks)
        n_chunks = max_chunks;
    if (n_chunks > KR__MAX_CHUNKS)
        n_chunks = KR__MAX_CHUNKS;
    if (n_chunks <= 1 || p->n_started == 0) {
        fn(arg, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->n_chunks = (uint32_t)n_chunks;
    atomic_store(&p->done, 0);
    uint32_t gen = (uint32_t)(atomic_load(&p->claim) >> 32) + 1;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->claim, (uint64_t)gen << 32 | (uint64_t)n_chunks << 16);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);

    kr__work(p, gen, p->n_started); /* the caller's tid is the one no worker has */
    int spins = 0;
    while (atomic_load(&p->done) < p->n_chunks && spins < KR__POOL_SPIN)
        if (++spins >= KR__POOL_SPIN_HOT)
            sched_yield();
    if (atomic_load(&p->done) < p->n_chunks) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->done) < p->n_chunks)
            pthread_cond_wait(&p->cv_done, &p->mu);
        pthread_mutex_unlock(&p->mu);
    }
}

kr_status kr_pool_new(int n_threads, kr_pool **out)
{
    *out = NULL;
    if (n_threads < 1)
        n_threads = 1;
    kr_pool *p = calloc(1, sizeof *p);
    if (!p)
        return KR_ERR_NOMEM;
    p->n_threads = n_threads;
    if (pthread_mutex_init(&p->mu, NULL) != 0)
        goto err_free;
    if (pthread_cond_init(&p->cv_work, NULL) != 0)
        goto err_mutex;
    if (pthread_cond_init(&p->cv_done, NULL) != 0)
        goto err_cv_work;
    if (n_threads > 1) {
        p->threads = calloc((size_t)n_threads - 1, sizeof *p->threads);
        if (!p->threads)
            goto err_cv_done;
    }
    for (int i = 0; i < n_threads - 1; i++) {
        kr__worker_arg *wa = malloc(sizeof *wa);
        if (!wa)
            break;
        wa->pool = p;
        wa->tid = i;
        if (pthread_create(&p->threads[i], NULL, kr__worker, wa) != 0) {
            free(wa);
            break;
        }
        p->n_started++;
    }
    p->exec.struct_size = sizeof p->exec;
    p->exec.n_threads = p->n_started + 1;
    p->exec.pool = p;
    p->exec.parallel_for = kr__pool_parallel_for;
    *out = p;
    return KR_OK;

err_cv_done:
    pthread_cond_destroy(&p->cv_done);
err_cv_work:
    pthread_cond_destroy(&p->cv_work);
err_mutex:
    pthread_mutex_destroy(&p->mu);
err_free:
    free(p);
    return KR_ERR_NOMEM;
}

void kr_pool_free(kr_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_started; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_cond_destroy(&p->cv_done);
    pthread_cond_destroy(&p->cv_work);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

const kr_exec *kr_pool_exec(const kr_pool *p)
{
    return &p->exec;
}
