/* Private to plugins/cuda_forward: batched prefill (gpu_prefill.c,
 * docs/PREFILL.md). kr_gpu_forward_eval hands n > 1 tokens to kr__prefill,
 * which runs them in chunks of up to n_batch tokens through tensor-core
 * GEMMs (plugins/cuda_gemm) and flash attention (kr_prefill_ops.h), writes
 * the KV cache so decode continues from it, and leaves the last token's
 * logits in g->logits; or declines (all or the tail of the tokens) and the
 * caller runs those through the token-by-token loop. */
#ifndef KR_GPU_PREFILL_H
#define KR_GPU_PREFILL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/status.h"

struct kr_gpu_forward;
struct kr__gpf; /* prefill state: GEMM and kernel handles, chunk activations (created on first use) */

/* Chunk size when params.n_batch is 0. H200, 2048-token prompt, Q4_0 7B: chunks of 512 12.4k,
 * 1024 13.7k, 2048 14.5k tok/s (docs/PERF.md). The buffers are sized by the evals (grown on demand). */
#define KR__PREFILL_N_BATCH_DEFAULT 2048

/* Tokens (validated by the caller) at positions pos .. pos+n-1, enqueued on
 * g->stream (not synchronised). *n_done = how many of them (from the first)
 * ran batched: 0 (and KR_OK) when the batched path does not support the
 * model / cache / params or its buffers do not fit; fewer than n when a
 * sliding-window ring wraps (the caller runs the rest token by token). The
 * logits of the last token are computed only when *n_done == n. Other errors:
 * device failures (the caller marks g dead). */
kr_status kr__prefill(struct kr_gpu_forward *g, const int32_t *tokens, size_t n, uint32_t pos, size_t *n_done,
                      kr_err *err);
/* Why kr__prefill would decline n tokens at pos (NULL: it would run them). */
const char *kr__prefill_unsupported(const struct kr_gpu_forward *g, size_t n, uint32_t pos);
/* Free g's prefill state (NULL ok); the stream must be idle. */
void kr__prefill_free(struct kr_gpu_forward *g);

#endif
