/* The whole decode forward pass on a CUDA backend (llama / mistral / falcon).
 *
 *   kr_gpu_forward_params gp = kr_gpu_forward_params_default();
 *   gp.n_ctx = 2048;
 *   kr_gpu_forward *g;
 *   kr_gpu_forward_new(model, cuda_backend, &gp, &g, &err);   // uploads the weights
 *   kr_gpu_forward_eval(g, prompt, n_prompt, 0, logits, &err);  // prefill (token by token)
 *   kr_gpu_forward_eval(g, &next, 1, n_prompt, logits, &err);   // decode
 *   kr_gpu_forward_free(g);                                     // before the model and backend
 *
 * Weights are uploaded once at creation (pinned staging buffers, async
 * copies on two streams overlapping the reads from the mapped file);
 * activations and the KV cache (f16 or q8_0, sequence slots, sliding-window
 * ring, context shift: gpu_kvcache.c, docs/KVCACHE.md) stay on the device; per token only the
 * logits come back. Every op is a kr_dec launcher (plugins/cuda_decode). The
 * decode step is captured once as a CUDA graph whose token id and position
 * live in device memory, and replayed; a capture failure falls back to eager
 * launches (params.no_graph or KERNRUN_NO_GRAPH=1 turn graphs off).
 * Prefill runs the prompt through the same decode step one token at a time.
 *
 * Layering: models/ knows nothing of CUDA. This static library sits beside
 * the plugins, uses the model library's public weight table
 * (kr_model_weights) and the backend vtable, and is linked by tools and
 * tests that choose the CUDA path. See docs/GPU-FORWARD.md.
 *
 * Thread safety: one kr_gpu_forward is used by one thread at a time.
 */
#ifndef KERNRUN_GPU_FORWARD_H
#define KERNRUN_GPU_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/backend.h"
#include "kernrun/model.h"
#include "kernrun/status.h"

typedef struct kr_gpu_forward kr_gpu_forward; /* opaque: device weights, KV cache, activations, graph */

typedef struct kr_gpu_forward_params {
    uint32_t n_ctx;   /* KV cache positions; 0: min(n_ctx_train, 4096) (n_ctx_train 0: 4096) */
    bool no_graph;    /* eager launches only (also when the env KERNRUN_NO_GRAPH=1) */
    bool no_q8;       /* fp32 activations for every matvec (default: 8-bit activations for Q4_0/Q8_0) */
    bool no_fuse;     /* separate q/k/v and gate/up matvecs (default: one matvec each where the types match) */
    bool no_repack;   /* keep GGML's Q4_0/Q8_0 block layout and use kr_dec_matvec_q8 (also with the env
                         KERNRUN_NO_REPACK=1); default: repacked on the device for 16-byte loads */
    bool no_fused_ops; /* separate add / rmsnorm / quantize and swiglu / quantize launches
                          (default: kernels/forward/step_fused.cu) */
    int attn_splits;  /* split-K chunks of the decode attention; 0: kr_dec_attention_default_splits */
    /* KV cache (docs/KVCACHE.md; plugins/cuda_forward/gpu_kvcache.c) */
    kr_dtype kv_type; /* KR_DTYPE_F16 (default) or KR_DTYPE_Q8_0; F32 is refused (KR_ERR_UNSUPPORTED) */
    uint32_t n_seq;   /* sequence slots (0 = 1; kr_gpu_forward_seq_use) */
    kr_kv_full kv_full; /* at n_ctx: KR_KV_FULL_STOP (error, default) or KR_KV_FULL_SHIFT */
    uint32_t n_keep;  /* positions an automatic context shift keeps at the start */
    bool kv_no_ring;  /* sliding-window models: n_ctx rows + window mask instead of a window-row ring */
    uint64_t mem_limit; /* device bytes the fit check plans against; 0: free device memory at creation */
    /* batched prefill (docs/PREFILL.md; plugins/cuda_forward/gpu_prefill.c) */
    bool no_batch_prefill; /* prompts token by token through the decode step (also env KERNRUN_NO_BATCH_PREFILL=1) */
    uint32_t n_batch;      /* tokens per prefill chunk at most; 0: 2048 */
    /* weight storage (docs/PREFILL.md, "Weight storage and precision") */
    kr_dtype weights;      /* KR_DTYPE_F32 (0, default): every weight as in the file; KR_DTYPE_F16: every
                              matrix the forward pass multiplies with (layer matrices, the output matrix,
                              token_embd when it is the output) converted to fp16 at load (on the device;
                              types it cannot read, e.g. Q5_K, on the host), so decode runs the F16 matvec
                              and prefill the F16 GEMM; an untied token_embd (unless the device cannot read
                              it), norms and biases stay as in the file. Others: KR_ERR_UNSUPPORTED */
} kr_gpu_forward_params;

/* "native" -> KR_DTYPE_F32 (as in the file), "f16" -> KR_DTYPE_F16 (case-insensitive; the values of
 * `--weights` and the [runtime] weights config key); else KR_ERR_INVALID_ARG naming the choices. */
kr_status kr_gpu_forward_weights_parse(const char *s, kr_dtype *out, kr_err *err);

kr_gpu_forward_params kr_gpu_forward_params_default(void);

/* KR_OK when the model can run on the CUDA path (arch llama, mistral or
 * falcon (7B: one LayerNorm per layer; 40B: attn_norm_2 for the attention);
 * every matrix of a kr_dec_matvec type with a supported shape; head_dim even
 * and <= 256); else KR_ERR_UNSUPPORTED with the reason. Needs no GPU. */
kr_status kr_gpu_forward_check(const kr_model *m, kr_err *err);
/* As kr_gpu_forward_check for the params p (NULL: defaults): with p->weights F16, matrices (and an
 * untied token_embd) of the types the device cannot read but models/quant dequantizes (Q5_0, Q5_1,
 * Q2_K, Q3_K, Q5_K, BF16, ...) pass too: kr_gpu_forward_new converts them to fp16 on the host. */
kr_status kr_gpu_forward_check_params(const kr_model *m, const kr_gpu_forward_params *p, kr_err *err);

/* Upload m's weights to be (a CUDA backend) and allocate the KV cache and
 * activations. m and be must outlive the result. Before any upload, weights +
 * KV cache + activations are checked against the free device memory
 * (KR_ERR_LIMIT naming needed vs free bytes). Errors: unsupported model or
 * cache type (KR_ERR_UNSUPPORTED), device memory (KR_ERR_LIMIT / KR_ERR_NOMEM
 * with the sizes), JIT. */
kr_status kr_gpu_forward_new(const kr_model *m, kr_backend *be, const kr_gpu_forward_params *p,
                             kr_gpu_forward **out, kr_err *err);
void kr_gpu_forward_free(kr_gpu_forward *g); /* NULL ok */

/* As kr_model_eval: tokens at positions pos .. pos+n-1 of the current
 * sequence (pos <= n_past; an earlier pos rewinds), logits of the last token
 * into logits_last (n_vocab floats) unless NULL. With kv_full SHIFT and
 * pos == n_past, a full context is shifted first and the tokens go to the
 * new kr_gpu_forward_n_past(). Errors: ids outside [0, n_vocab),
 * pos + n > n_ctx (KR_ERR_RANGE, "context full ..."), pos > n_past
 * (KR_ERR_STATE); after a device failure every later call fails with KR_ERR_STATE. */
kr_status kr_gpu_forward_eval(kr_gpu_forward *g, const int32_t *tokens, size_t n, uint32_t pos,
                              float *logits_last, kr_err *err);

/* ---- KV cache: sequences and context shift (as kr_context_seq_* / kr_context_shift, kernrun/kvcache.h) ---- */

/* Make sequence seq_id (>= 0) current: a cached one resumes at its n_past; a
 * new one takes a free slot or evicts the least recently used unpinned one
 * (logged); KR_ERR_LIMIT when every slot holds a pinned sequence (the current
 * one stays). Each slot gets its own captured step graph. */
kr_status kr_gpu_forward_seq_use(kr_gpu_forward *g, int32_t seq_id, kr_err *err);
int32_t kr_gpu_forward_seq_current(const kr_gpu_forward *g);   /* 0 after creation (-1 for NULL) */
bool kr_gpu_forward_seq_cached(const kr_gpu_forward *g, int32_t seq_id);
/* Pinned sequences are never evicted. KR_ERR_NOT_FOUND if not cached. */
kr_status kr_gpu_forward_seq_pin(kr_gpu_forward *g, int32_t seq_id, bool pinned, kr_err *err);
/* Free the slot of seq_id (no-op if not cached); the current one stays current, empty. */
void kr_gpu_forward_seq_drop(kr_gpu_forward *g, int32_t seq_id);
/* Context shift of the current sequence on the device: keep [0, n_keep), drop
 * n_discard = (n_past - n_keep) / 2 after them, move the rest down and
 * re-rotate the moved keys by -n_discard (kernels/forward/kv_shift.cu);
 * n_past -= n_discard (*n_discarded, may be NULL). KR_ERR_UNSUPPORTED on a
 * ring, KR_ERR_RANGE when nothing can be dropped. Synchronous. */
kr_status kr_gpu_forward_shift(kr_gpu_forward *g, uint32_t n_keep, uint32_t *n_discarded, kr_err *err);
/* The cached K and V rows (kv_dim floats each, dequantized; k or v may be
 * NULL) of the current sequence at pos (< n_past; inside the ring) of layer.
 * Synchronises the stream. For tests and tools. */
kr_status kr_gpu_forward_kv_read(kr_gpu_forward *g, uint32_t layer, uint32_t pos, float *k, float *v, kr_err *err);

/* Choose the decode-step variant (for measurements; docs/GPU-FORWARD.md):
 * spec is "key=value,..." with pdl=0|1 (programmatic dependent launch),
 * mv4=v1|r1p4|r2p4|r4p2|r2p8 and mv8=v1|r1p4|r2p2|r2p4|r4p2 (repacked Q4_0 /
 * Q8_0 matvec kernel), resid=0|1 (attn_output / ffn_down add into the
 * residual), norm=sb|mb (single- or multi-block rmsnorm), nf=0|1 (norms
 * folded into the matvecs), oq=0|1 and sw=0|1 (with nf: attention-output
 * quantize / SwiGLU folded into the matvecs), gus=0|1, l2pf=MiB, skip=[anm]
 * (timing experiments only: wrong logits), or the words "default" / "old"
 * (the step before PDL). Applied on top of the current variant; the env
 * KERNRUN_GF_TUNING is applied the same way at creation. Drops the captured
 * graphs (the next step captures again). Errors: KR_ERR_INVALID_ARG (bad
 * spec, with the accepted keys), JIT failures. */
kr_status kr_gpu_forward_set_tuning(kr_gpu_forward *g, const char *spec, kr_err *err);

/* Where weight `name` (a model tensor name) is stored on the device: its type there (F16 when it
 * was converted at load, else the file's), device address and bytes per row. For tests and tools.
 * KR_ERR_NOT_FOUND when the model has no such tensor or it is not on the device. */
kr_status kr_gpu_forward_weight(const kr_gpu_forward *g, const char *name, kr_dtype *type, const void **dev,
                                size_t *row_stride, kr_err *err);

uint32_t kr_gpu_forward_n_ctx(const kr_gpu_forward *g);
uint32_t kr_gpu_forward_n_past(const kr_gpu_forward *g);
void kr_gpu_forward_reset(kr_gpu_forward *g); /* forget the cached positions */

typedef struct kr_gpu_forward_stats {
    uint64_t weight_bytes;       /* bytes of weights on the device */
    uint64_t step_weight_bytes;  /* weight bytes one decode step reads (matrices, norms, one embedding row) */
    uint64_t kv_bytes_per_pos;   /* K+V bytes of one cached position over all layers (attention reads these) */
    uint32_t launches_per_token; /* kernel launches of one decode step (0 before the first step) */
    bool graph;                  /* steps replay a captured CUDA graph */
    bool graph_failed;           /* capture was tried and failed (eager fallback) */
    double upload_s;             /* seconds spent uploading the weights */
    uint32_t batched_tokens;     /* tokens of the last eval that ran as a batched prefill (gpu_prefill.c) */
    uint64_t kv_bytes;           /* device KV cache: K and V, all layers and slots */
    uint32_t kv_rows;            /* cache rows per sequence slot (n_ctx, or the window with a ring) */
    uint32_t kv_n_seq;           /* sequence slots */
    kr_dtype kv_type;            /* F16 or Q8_0 */
    kr_dtype weights;            /* params.weights in use: F32 (as in the file) or F16 (converted at load) */
    uint32_t n_converted;        /* weights converted to fp16 at load */
} kr_gpu_forward_stats;

void kr_gpu_forward_get_stats(const kr_gpu_forward *g, kr_gpu_forward_stats *out);

/* One op of a profiled decode step: the launches with one label. */
typedef struct kr_gpu_forward_prof_op {
    char name[64];   /* kernel, e.g. "layernorm", "attention", "matvec attn_qkv Q4_0 q8 repacked" */
    uint32_t calls;  /* launches per step */
    double ms;       /* GPU time per step (CUDA events around each launch), averaged over the steps */
} kr_gpu_forward_prof_op;

/* Run the tokens at positions pos .. pos+n-1 (as kr_gpu_forward_eval; they
 * enter the KV cache) as EAGER launches, each bracketed by CUDA events, and
 * report the per-label time of one step averaged over the n steps, sorted by
 * time (largest first). Up to cap ops are written (*n_ops gets the number
 * of distinct labels, which may exceed cap); *step_ms the average time from
 * the first to the last event of a step (includes the gaps between
 * launches that the CUDA graph removes). Errors as kr_gpu_forward_eval. */
kr_status kr_gpu_forward_profile(kr_gpu_forward *g, const int32_t *tokens, size_t n, uint32_t pos,
                                 kr_gpu_forward_prof_op *ops, size_t cap, size_t *n_ops, double *step_ms,
                                 kr_err *err);

/* Device address of the logits of the last evaluated token: (n_vocab) fp32,
 * valid after a successful kr_gpu_forward_eval (with or without logits_last)
 * until the next eval or free. Written on kr_gpu_forward_stream(g); eval has
 * synchronised that stream when it returns. For on-device sampling. */
const float *kr_gpu_forward_logits_device(const kr_gpu_forward *g);
/* The stream every step runs on (owned by g). */
kr_stream *kr_gpu_forward_stream(const kr_gpu_forward *g);

#endif
