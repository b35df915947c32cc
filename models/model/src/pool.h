/* Thread pool implementing kr_exec (private to the model library). */
#ifndef KERNRUN_MODEL_POOL_H
#define KERNRUN_MODEL_POOL_H

#include "kernrun/ops.h"
#include "kernrun/status.h"

typedef struct kr_pool kr_pool;

/* n_threads counts the caller; 1 = no workers. If some workers cannot be
 * started the pool runs with fewer (exec->n_threads tells). */
kr_status kr_pool_new(int n_threads, kr_pool **out);
void kr_pool_free(kr_pool *p);
const kr_exec *kr_pool_exec(const kr_pool *p);

#endif
