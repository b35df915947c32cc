/* Test helper: tiny random-weight llama / mistral / falcon models kept in
 * memory (fp32, the values the file holds after rounding to the weight
 * type), written as GGUF with the project's writer, plus a naive forward
 * pass in double precision written independently of the ops under test. */
#ifndef KR_TEST_TINY_MODEL_H
#define KR_TEST_TINY_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "kernrun/dtype.h"
#include "kernrun/status.h"

#define TM_MAX_TENSORS 128

typedef struct tm_tensor {
    char name[64];
    uint32_t nd;
    uint64_t ne[2];
    float *data;            /* (ne[1], ne[0]) row-major; values as stored in the file */
} tm_tensor;

typedef struct tm_model {
    char arch[16];          /* "llama", "mistral", "falcon" */
    uint32_t V, E, L, H, HKV, F, ctx, window, n_rot;
    float eps, base, rope_scale; /* rope_scale: linear factor (1 = none) */
    bool tied;              /* no output.weight */
    bool norm2;             /* falcon-40B attn_norm_2 */
    bool rope_freqs;        /* llama rope_freqs.weight */
    bool hf_rope;           /* tm_forward: llama with Hugging Face rotate_half RoPE (unpermuted Q/K) */
    kr_dtype wtype;         /* type of the 2-D weights in the file */
    tm_tensor t[TM_MAX_TENSORS];
    int nt;
} tm_model;

/* Metadata override applied when writing (for validation tests). */
typedef struct tm_tweak {
    const char *skip;       /* tensor not written */
    const char *reshape;    /* tensor written with ne[0] + 32 (data random) */
    const char *extra;      /* extra 1-D tensor written */
    const char *omit_key;   /* metadata key not written (suffix after "<arch>.") */
    const char *u32_key;    /* metadata key (full) written as u32 u32_val (replaces) */
    uint32_t u32_val;
    const char *f32_key;    /* metadata key (full) written as f32 f32_val (replaces) */
    float f32_val;
    const char *str_key;    /* metadata key (full) written as string str_val (replaces) */
    const char *str_val;
} tm_tweak;

/* Fill a model with random weights (seeded). */
void tm_init(tm_model *m, const char *arch, uint32_t V, uint32_t E, uint32_t L, uint32_t H, uint32_t HKV,
             uint32_t F, uint64_t seed);
/* Create tensors (after setting the flags / sizes in *m) and round them to wtype. */
void tm_build(tm_model *m, uint64_t seed);
void tm_free(tm_model *m);
const float *tm_get(const tm_model *m, const char *name);
/* Permute attn_q / attn_k rows as llama.cpp's HF converter does
 * (per head: row 2i+j <- row j*D/2 + i), turning HF layout into GGUF layout. */
void tm_permute_qk(tm_model *m);
/* Write the GGUF; returns KR_OK or the writer's status. */
kr_status tm_write(const tm_model *m, const char *path, const tm_tweak *tw);
/* Naive forward: logits (T, V) for tokens[0..T) at positions 0..T-1. */
void tm_forward(const tm_model *m, const int32_t *tokens, int T, double *logits);
/* A temp file path unique to this process (static buffer per call slot). */
const char *tm_tmp_path(const char *tag);

#endif
