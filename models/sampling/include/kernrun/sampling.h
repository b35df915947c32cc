/* Token sampler (CPU reference).
 *
 * One call turns a logits vector (n_vocab floats) into a token id. Stages run
 * in this fixed order; each is optional (off at its neutral value):
 *
 *   1. repetition penalty   over the last repeat_last_n accepted tokens: a
 *                           token seen there has its logit divided by
 *                           repeat_penalty when > 0, multiplied when <= 0
 *                           (llama.cpp semantics); 1.0 = off
 *   2. presence/frequency   logit -= frequency_penalty * count
 *                                  + presence_penalty * (count > 0),
 *                           count = occurrences in the same window; 0 = off
 *   3. logit bias           logit += bias[id] (-INFINITY bans a token)
 *   -- greedy (greedy flag or temperature <= 0): argmax here, lowest id wins
 *      ties; no random number is consumed.
 *   4. top-k                keep the k largest logits (ties: lower id first);
 *                           0 = off. Partial selection (heap), no full sort.
 *   5. top-p (nucleus)      softmax over the survivors, keep the smallest
 *                           prefix of probability-sorted tokens whose mass is
 *                           >= top_p; 1.0 = off
 *   6. min-p                keep tokens with p >= min_p * p_max; 0 = off
 *   7. temperature          logits / temperature, softmax over the survivors
 *   8. draw                 one uniform u from Philox4x32-10 (see below); the
 *                           survivors are walked in ascending token id, the
 *                           first whose running sum of weights exceeds
 *                           u * total is chosen.
 *
 * Random numbers (reproducible on the GPU with cuRAND): draw number t (0, 1,
 * 2, ... counted since create/reset, greedy steps excluded) uses
 *   x = Philox4x32-10(key = {seed lo32, seed hi32},
 *                     counter = {(t/4) lo32, (t/4) hi32, 0, 0})[t % 4]
 *   u = (float)x * 2^-32 + 2^-33      (a float in (0, 1])
 * which is exactly what cuRAND gives for curand_init(seed, 0, t, &st);
 * curand_uniform(&st) with curandStatePhilox4_32_10_t.
 *
 * Non-finite logits: NaN counts as -INFINITY, +INFINITY as FLT_MAX. If every
 * logit is -INFINITY the call fails with KR_ERR_RANGE.
 */
#ifndef KERNRUN_SAMPLING_H
#define KERNRUN_SAMPLING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kr_logit_bias {
    int32_t token; /* id in [0, n_vocab) */
    float bias;    /* added to the logit; -INFINITY bans the token; never NaN */
} kr_logit_bias;

typedef struct kr_sampler_params {
    float temperature;       /* >= 0; <= 0 (i.e. 0) means greedy. default 0.8 */
    int32_t top_k;           /* >= 0; 0 = off. default 40 */
    float top_p;             /* (0, 1]; 1 = off. default 0.95 */
    float min_p;             /* [0, 1]; 0 = off. default 0.05 */
    float repeat_penalty;    /* > 0; 1 = off. default 1.0 */
    int32_t repeat_last_n;   /* >= 0 tokens of history; 0 = no penalties. default 64 */
    float presence_penalty;  /* finite; 0 = off. default 0 */
    float frequency_penalty; /* finite; 0 = off. default 0 */
    uint64_t seed;           /* Philox key. default 0 (callers pick their own) */
    bool greedy;             /* argmax after stages 1-3 regardless of temperature */
    const kr_logit_bias *logit_bias; /* (n_logit_bias,) copied at create; may be NULL */
    size_t n_logit_bias;
} kr_sampler_params;

typedef struct kr_sampler kr_sampler; /* opaque */

/* llama.cpp's defaults (see the field comments). */
void kr_sampler_params_default(kr_sampler_params *p);
/* Checks every field; n_vocab > 0 bounds the logit-bias ids. The message names
 * the parameter and its value ("top_p = 1.5: must be in (0, 1]"). */
kr_status kr_sampler_params_validate(const kr_sampler_params *p, int32_t n_vocab, kr_err *err);

kr_status kr_sampler_create(const kr_sampler_params *p, int32_t n_vocab, kr_sampler **out, kr_err *err);
void kr_sampler_free(kr_sampler *s);
/* Forget the token history and restart the random stream at draw 0. */
void kr_sampler_reset(kr_sampler *s);
/* Append a token (prompt or generated) to the penalty history. */
kr_status kr_sampler_accept(kr_sampler *s, int32_t token, kr_err *err);
/* Pick the next token from logits (n_vocab,) (not modified). */
kr_status kr_sampler_sample(kr_sampler *s, const float *logits, int32_t *out_token, kr_err *err);
/* Stages 1-3 only (with the non-finite mapping): out (n_vocab,) receives the
 * adjusted logits. For tests and for checking a GPU implementation. */
kr_status kr_sampler_adjust_logits(kr_sampler *s, const float *logits, float *out, kr_err *err);
/* Number of random draws made so far (the t of the next draw). */
uint64_t kr_sampler_draws(const kr_sampler *s);

/* Philox4x32-10 block function: out = philox(ctr, key). */
void kr_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* The uniform of draw t for seed (see above): equals cuRAND's curand_uniform
 * after curand_init(seed, 0, t, &st). In (0, 1]. */
float kr_philox_uniform(uint64_t seed, uint64_t t);

#ifdef __cplusplus
}
#endif
#endif
