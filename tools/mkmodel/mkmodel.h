/* Synthetic model writer behind `kernrun mkmodel`: a valid GGUF with random
 * weights (deterministic in the seed), llama.cpp tensor names and shapes and
 * the architecture's metadata, for benchmarks and tests without real
 * weights. Tensor data is generated and quantized in chunks by worker
 * threads while the previous chunk is being written (RAM: a few chunks). */
#ifndef KERNRUN_MKMODEL_H
#define KERNRUN_MKMODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "kernrun/dtype.h"
#include "kernrun/status.h"

typedef struct kr_mkmodel_hparams {
    char arch[16];            /* "llama", "mistral", "falcon" */
    uint32_t n_ctx;           /* <arch>.context_length */
    uint32_t n_embd;          /* embedding_length */
    uint32_t n_layer;         /* block_count */
    uint32_t n_ff;            /* feed_forward_length */
    uint32_t n_head;          /* attention.head_count */
    uint32_t n_head_kv;       /* attention.head_count_kv */
    uint32_t n_rot;           /* rope.dimension_count (= head dim) */
    uint32_t n_vocab;         /* rows of token_embd / output */
    uint32_t sliding_window;  /* mistral: attention.sliding_window; 0 otherwise */
    float norm_eps;           /* layer_norm_rms_epsilon (falcon: layer_norm_epsilon) */
    float rope_base;          /* rope.freq_base */
} kr_mkmodel_hparams;

/* Shapes of a preset: arch "llama" | "mistral" | "falcon", preset "tiny" |
 * "1b" | "7b". n_vocab is the preset's default (tiny: 256); a vocab file
 * overrides it. */
kr_status kr_mkmodel_preset(const char *arch, const char *preset, kr_mkmodel_hparams *hp, kr_err *err);

typedef struct kr_mkmodel_opts {
    const char *arch;         /* "llama" | "mistral" | "falcon" */
    const char *preset;       /* "tiny" | "1b" | "7b" */
    kr_dtype type;            /* type of the 2-D weights: F16, Q8_0, Q4_0, Q4_1 (also F32, BF16, Q5_0,
                               * Q5_1, and Q4_K, Q5_K, Q6_K where every row length is a multiple of 256) */
    const char *out_path;     /* file to write (replaced; removed again on failure) */
    const char *vocab_from;   /* GGUF whose tokenizer.* keys are copied; NULL: synthetic SPM vocab */
    uint64_t seed;            /* same seed, same file (independent of n_threads) */
    int n_threads;            /* worker threads; <= 0: online CPUs - 1 (the main thread writes) */
    uint32_t n_layer;         /* > 0: override the preset's block_count (smaller test files) */
} kr_mkmodel_opts;

typedef struct kr_mkmodel_stats {
    uint64_t file_bytes;      /* size of the written file */
    uint64_t n_params;        /* elements in all tensors */
    uint32_t n_tensors;
    double seconds;           /* wall time of the whole write */
} kr_mkmodel_stats;

/* Write the model. stats may be NULL. */
kr_status kr_mkmodel_write(const kr_mkmodel_opts *o, kr_mkmodel_stats *stats, kr_err *err);

/* llama.cpp's general.file_type value for a weight type (F32 0, F16 1,
 * Q4_0 2, Q4_1 3, Q8_0 7, Q5_0 8, Q5_1 9, Q4_K 14, Q5_K 16, Q6_K 18,
 * BF16 32); -1 when none. */
int kr_mkmodel_file_type(kr_dtype t);

#endif
