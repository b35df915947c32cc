/* Thread pool behind kr_exec: n_threads - 1 workers plus the calling thread.
 * A job is published by bumping `gen`; workers spin briefly on it (ops come
 * in quick succession during a forward pass) and then sleep on a condvar. */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define KR__POOL_SPIN 20000

struct kr_pool {
    int n_threads;                 /* workers + caller */
    pthread_t *threads;            /* (n_threads - 1) */
    int n_started;                 /* workers actually created */
    pthread_mutex_t mu;
    pthread_cond_t cv_work;        /* gen changed or stop */
    pthread_cond_t cv_done;        /* remaining reached 0 */
    _Atomic uint64_t gen;          /* job counter */
    _Atomic int remaining;         /* workers still busy with the current job */
    _Atomic bool stop;
    /* current job (written before gen is bumped) */
    kr_par_fn fn;
    void *arg;
    size_t n;
    int n_chunks;
    kr_exec exec;
};

typedef struct kr__worker_arg {
    kr_pool *pool;
    int tid;
} kr__worker_arg;

/* Workers run chunks 0 .. n_chunks-2; the caller runs the last one. */
static void kr__run_chunk(kr_pool *p, int c)
{
    if (c >= p->n_chunks - 1)
        return;
    size_t b = p->n * (size_t)c / (size_t)p->n_chunks;
    size_t e = p->n * (size_t)(c + 1) / (size_t)p->n_chunks;
    if (b < e)
        p->fn(p->arg, b, e, c);
}

static void *kr__worker(void *varg)
{
    kr__worker_arg wa = *(kr__worker_arg *)varg;
    free(varg);
    kr_pool *p = wa.pool;
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = atomic_load(&p->gen);
        for (int i = 0; g == seen && i < KR__POOL_SPIN && !atomic_load(&p->stop); i++)
            g = atomic_load(&p->gen);
        if (g == seen) {
            pthread_mutex_lock(&p->mu);
            while ((g = atomic_load(&p->gen)) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv_work, &p->mu);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop))
            break;
        seen = g;
        kr__run_chunk(p, wa.tid);
        if (atomic_fetch_sub(&p->remaining, 1) == 1) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
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
    int n_chunks = p->n_started + 1;
    if ((size_t)n_chunks > max_chunks)
        n_chunks = (int)max_chunks;
    if (n_chunks <= 1) {
        fn(arg, 0, n, 0);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    p->n = n;
    p->n_chunks = n_chunks;
    atomic_store(&p->remaining, p->n_started);
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);

    /* the caller runs the last chunk, with the one tid no worker has */
    p->fn(p->arg, p->n * (size_t)(n_chunks - 1) / (size_t)n_chunks, p->n, p->n_started);
    int spins = 0;
    while (atomic_load(&p->remaining) > 0 && spins < KR__POOL_SPIN)
        spins++;
    if (atomic_load(&p->remaining) > 0) {
        pthread_mutex_lock(&p->mu);
        while (atomic_load(&p->remaining) > 0)
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
