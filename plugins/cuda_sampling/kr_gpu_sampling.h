/* Token sampling on a CUDA backend (kernels/sampling/sampling.cu).
 *
 * Same stages, order and random numbers as the CPU sampler (kernrun/sampling.h,
 * docs/SAMPLING.md): given the same parameters, history and draw index, the GPU
 * picks the same token from the same logits (up to double rounding when u * total
 * lands within ~1e-12 of a boundary between two tokens). The penalty history and
 * the draw counter live in device memory, so a sampling step needs no host
 * data and can sit inside a captured CUDA graph (kr_gpu_sampler_sample_async +
 * kr_gpu_sampler_accept_device). kr_gpu_sampler_sample copies back only the
 * 4-byte token id.
 *
 * One launch of one 1024-thread block per step; the vocabulary (<= 2^31 - 1
 * entries; tested up to 256k) is read from L2 a few times. Top-k/top-p use a
 * radix selection on the logits' bits, not a sort of the vocabulary.
 *
 * Not thread-safe per sampler: one sampler per generation stream. The
 * backend must be CUDA and outlive the sampler. Pointers named d_* are device
 * addresses of that backend; stream NULL = the backend's default stream.
 */
#ifndef KERNRUN_PLUGIN_CUDA_SAMPLING_H
#define KERNRUN_PLUGIN_CUDA_SAMPLING_H

#include <stdint.h>

#include "kernrun/backend.h"
#include "kernrun/sampling.h"
#include "kernrun/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kr_gpu_sampler kr_gpu_sampler; /* opaque */

/* Validates p (kr_sampler_params_validate: same messages as the CPU), copies
 * it (logit bias included) and allocates device state: n_vocab floats of
 * scratch, the history ring (repeat_last_n ints), the bias table. History
 * empty, draw counter 0. Does not compile the kernel (first use does; see
 * kr_gpu_sampler_prepare). */
kr_status kr_gpu_sampler_create(kr_backend *be, const kr_sampler_params *p, int32_t n_vocab, kr_gpu_sampler **out,
                                kr_err *err);
void kr_gpu_sampler_free(kr_gpu_sampler *s); /* NULL ok */

/* JIT-compile (or load from the cubin cache) the kernels now. */
kr_status kr_gpu_sampler_prepare(kr_gpu_sampler *s, kr_err *err);

/* Forget the history and restart the random stream at draw 0 (ordered on stream). */
kr_status kr_gpu_sampler_reset(kr_gpu_sampler *s, kr_stream *stream, kr_err *err);

/* Append a token (prompt or generated) to the penalty history. Host value:
 * checked here (KR_ERR_RANGE outside [0, n_vocab)). */
kr_status kr_gpu_sampler_accept(kr_gpu_sampler *s, kr_stream *stream, int32_t token, kr_err *err);
/* Same with the token read from device memory when the work runs (e.g. the
 * output of sample_async); a value outside [0, n_vocab) is ignored. */
kr_status kr_gpu_sampler_accept_device(kr_gpu_sampler *s, kr_stream *stream, const int32_t *d_token, kr_err *err);

/* Enqueue one sampling step: d_logits (n_vocab,) fp32 (not modified) ->
 * *d_token (device int32): the token id, or -1 when every logit is -inf/NaN
 * after penalties and bias. Nothing is synchronised; the history is not
 * changed (accept does that). */
kr_status kr_gpu_sampler_sample_async(kr_gpu_sampler *s, kr_stream *stream, const float *d_logits,
                                      int32_t *d_token, kr_err *err);
/* sample_async into the sampler's own slot, then a 4-byte copy to the host and
 * a wait on stream. -1 becomes KR_ERR_RANGE ("all logits are -inf or NaN"). */
kr_status kr_gpu_sampler_sample(kr_gpu_sampler *s, kr_stream *stream, const float *d_logits, int32_t *token,
                                kr_err *err);

/* Random draws made so far (reads the device counter; synchronises stream). */
kr_status kr_gpu_sampler_draws(kr_gpu_sampler *s, kr_stream *stream, uint64_t *draws, kr_err *err);

#ifdef __cplusplus
}
#endif
#endif
