/* KV cache: sizing, memory limits, sequences, sliding-window ring, context
 * shift, f32/f16/q8_0 storage (CPU path; docs/KVCACHE.md).
 *
 * Sizing and the fit check are backend-neutral (the GPU path passes free
 * device memory as `available`):
 *
 *   kr_kv_plan pl;
 *   kr_kv_plan_make(hp, &(kr_kv_plan_params){.n_ctx = 4096, .n_seq = 1,
 *                   .type = KR_DTYPE_F16}, &pl, &err);      // checked math
 *   kr_kv_check_fit(&pl, free_bytes, "GPU memory", &err);  // needed vs available
 *
 * A host context (kernrun/model.h) owns one cache; the kr_context_* calls
 * below drive it:
 *
 *   cp.n_seq = 4;  cp.kv_type = KR_DTYPE_Q8_0;  kr_context_new(m, &cp, &c, &err);
 *   kr_context_seq_use(c, 17, &err);     // sequence 17 current (LRU slot, may evict)
 *   kr_model_eval(c, toks, n, kr_context_n_past(c), logits, &err);
 *   if (kr_context_n_past(c) + 1 > kr_context_n_ctx(c))
 *       kr_context_shift(c, n_keep, NULL, &err);   // or stop
 */
#ifndef KERNRUN_KVCACHE_H
#define KERNRUN_KVCACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "kernrun/arch.h"
#include "kernrun/dtype.h"
#include "kernrun/status.h"

struct kr_context;

/* What kr_model_eval does when a sequence would pass n_ctx. */
typedef enum kr_kv_full {
    KR_KV_FULL_STOP = 0,    /* KR_ERR_RANGE, message names n_past, n and n_ctx (default) */
    KR_KV_FULL_SHIFT = 1,   /* context shift (kr_context_shift with the context's n_keep) first */
} kr_kv_full;

/* Row format. BLOCKS (host cache): f32/f16 rows packed, Q8_0 as GGML's
 * 34-byte blocks (fp16 scale + 32 int8), row_bytes = 34*kv_dim/32. SPLIT (the
 * CUDA cache): Q8_0 row = kv_dim int8 quants, then kv_dim/32 fp16 scales;
 * rows padded to 16 bytes: Q8_0 round_up(kv_dim + 2*(kv_dim/32), 16), F16
 * round_up(2*kv_dim, 16) (docs/KVCACHE.md). */
typedef enum kr_kv_layout {
    KR_KV_LAYOUT_BLOCKS = 0,
    KR_KV_LAYOUT_SPLIT = 1,
} kr_kv_layout;

typedef struct kr_kv_plan_params {
    uint32_t n_ctx;         /* positions per sequence (> 0) */
    uint32_t n_seq;         /* sequence slots (0 = 1) */
    uint32_t window;        /* sliding window of the model (0 = none) */
    bool ring;              /* with window < n_ctx: keep only `window` rows per sequence */
    kr_dtype type;          /* F32, F16 or Q8_0 (Q8_0: n_head_kv*head_dim a multiple of 32) */
    kr_kv_layout layout;    /* row format of Q8_0 (F32/F16 rows are the same in both) */
} kr_kv_plan_params;

typedef struct kr_kv_plan {
    uint32_t n_layer;
    uint32_t n_seq;
    uint32_t n_ctx;         /* position limit per sequence */
    uint32_t rows;          /* cache rows per sequence: n_ctx, or window with a ring */
    uint32_t kv_dim;        /* n_head_kv * head_dim */
    kr_dtype type;
    uint64_t row_bytes;     /* bytes of one row of kv_dim elements of type */
    uint64_t layer_bytes;   /* K (or V) of one layer: n_seq * rows * row_bytes */
    uint64_t bytes;         /* all of it: 2 * n_layer * layer_bytes */
} kr_kv_plan;

/* Fill *pl with checked arithmetic; KR_ERR_OVERFLOW names the factors,
 * KR_ERR_UNSUPPORTED a type or a q8_0 row that is not whole blocks. */
kr_status kr_kv_plan_make(const kr_hparams *hp, const kr_kv_plan_params *p, kr_kv_plan *pl, kr_err *err);
/* KR_ERR_LIMIT when needed > available: "KV cache needs N MiB (...) but only
 * M MiB of <what> are available". */
kr_status kr_kv_check_fit(uint64_t needed, uint64_t available, const char *what, kr_err *err);
/* "f32", "f16" or "q8_0" (a --kv-type value) to the dtype; KR_ERR_INVALID_ARG
 * naming the value and the choices otherwise. */
kr_status kr_kv_type_parse(const char *s, kr_dtype *out, kr_err *err);
/* Physical RAM in bytes (sysconf), 0 if unknown: the default host limit. */
uint64_t kr_kv_host_ram(void);

/* ---- sequence slots: bookkeeping shared by the host cache and the CUDA
 * path (plugins/cuda_forward/gpu_kvcache.c) ---- */

typedef struct kr_kv_seq {
    int32_t id;             /* sequence id; valid when used */
    bool used;
    bool pinned;
    uint64_t stamp;         /* last use (clock) for LRU */
    uint32_t n_past;        /* positions evaluated */
} kr_kv_seq;

typedef struct kr_kv_slots {
    kr_kv_seq *seq;         /* (n_seq) */
    uint32_t n_seq;
    uint32_t cur;           /* current slot */
    uint64_t clock;
} kr_kv_slots;

/* n_seq slots (0 = 1); sequence 0 is current in slot 0. */
kr_status kr_kv_slots_init(kr_kv_slots *s, uint32_t n_seq, kr_err *err);
void kr_kv_slots_fini(kr_kv_slots *s);
/* Slot of sequence id, or -1. */
int64_t kr_kv_slots_find(const kr_kv_slots *s, int32_t id);
/* As kr_context_seq_use: make id current (resume, free slot, or evict the
 * least recently used unpinned sequence, logged under `domain`).
 * *evicted (may be NULL) gets the evicted id or -1. On error the current
 * sequence stays. */
kr_status kr_kv_slots_use(kr_kv_slots *s, int32_t id, int32_t *evicted, const char *domain, kr_err *err);
/* Mark the current sequence used now (LRU). */
void kr_kv_slots_touch(kr_kv_slots *s);
kr_status kr_kv_slots_pin(kr_kv_slots *s, int32_t id, bool pinned, kr_err *err);
/* As kr_context_seq_drop. */
void kr_kv_slots_drop(kr_kv_slots *s, int32_t id);

/* n_discard of a context shift: (n_past - n_keep) / 2; KR_ERR_UNSUPPORTED on
 * a ring (message), KR_ERR_RANGE when nothing can be dropped. */
kr_status kr_kv_shift_count(uint32_t n_past, uint32_t n_keep, bool ring, uint32_t *n_discard, kr_err *err);
/* KR_OK when evaluating at pos (<= n_past) on a cache of plan pl (ring when
 * pl->rows < pl->n_ctx, attention window `window`) keeps every key it needs;
 * else KR_ERR_STATE naming the positions. */
kr_status kr_kv_rewind_check(const kr_kv_plan *pl, uint32_t window, uint32_t n_past, uint32_t pos, kr_err *err);
/* The "context full" error of an eval of n tokens at pos past n_ctx
 * (KR_ERR_RANGE; names n, pos, n_ctx and whether context shift is off). */
kr_status kr_kv_full_error(size_t n, uint32_t pos, uint32_t n_ctx, bool shift_on, kr_err *err);

/* ---- the host context's cache (kr_context from kernrun/model.h) ---- */

/* Bytes the context's KV cache holds (K and V, all layers and slots). */
uint64_t kr_context_kv_bytes(const struct kr_context *c);
/* Cache rows per sequence (n_ctx, or the window with a ring). */
uint32_t kr_context_kv_rows(const struct kr_context *c);
kr_dtype kr_context_kv_type(const struct kr_context *c);

/* Make sequence `seq_id` (>= 0) current. A cached one resumes at its n_past;
 * a new one takes a free slot, else the least recently used unpinned
 * sequence's slot (that one is evicted, logged); KR_ERR_LIMIT when every
 * slot holds a pinned sequence. */
kr_status kr_context_seq_use(struct kr_context *c, int32_t seq_id, kr_err *err);
/* The current sequence id (0 after kr_context_new). */
int32_t kr_context_seq_current(const struct kr_context *c);
/* True when seq_id holds a slot. */
bool kr_context_seq_cached(const struct kr_context *c, int32_t seq_id);
/* Pinned sequences are never evicted. KR_ERR_NOT_FOUND if not cached. */
kr_status kr_context_seq_pin(struct kr_context *c, int32_t seq_id, bool pinned, kr_err *err);
/* Free the slot of seq_id (no-op if not cached). Dropping the current
 * sequence leaves it current and empty (n_past 0). */
void kr_context_seq_drop(struct kr_context *c, int32_t seq_id);

/* Context shift of the current sequence: keep positions [0, n_keep), drop
 * n_discard = (n_past - n_keep) / 2 after them, move the rest down and
 * re-rotate their keys by -n_discard (RoPE of the model's mode). n_past
 * becomes n_past - n_discard. *n_discarded (may be NULL) gets n_discard.
 * KR_ERR_UNSUPPORTED on a ring cache (it never fills). */
kr_status kr_context_shift(struct kr_context *c, uint32_t n_keep, uint32_t *n_discarded, kr_err *err);

/* Copy the cached key and value rows (kv_dim floats each, dequantized) of the
 * current sequence at position pos (< n_past, inside the ring when there is
 * one) of layer `layer`. k or v may be NULL. For tests and tools. */
kr_status kr_context_kv_read(const struct kr_context *c, uint32_t layer, uint32_t pos, float *k, float *v,
                             kr_err *err);

#endif
