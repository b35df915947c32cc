/* CPU forward-pass benchmark (not a test): prefill and decode tokens/s.
 *   bench-model -m FILE [-t THREADS] [-p PROMPT_TOKENS] [-n DECODE_TOKENS]
 *   bench-model --synth smollm2 [...]   random weights, SmolLM2-135M shape
 *                                       (Q4_1 blocks, Q8_0 embeddings)
 * Synthetic files are written to $TMPDIR (or /tmp) and removed afterwards. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kernrun/builtin_model.h"
#include "kernrun/gguf.h"
#include "kernrun/model.h"
#include "kernrun/quant.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* process CPU time: with -t 1 a load-independent measure on a busy machine */
static double cpu_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static uint64_t g_s = 88172645463325252ull;
static float frand(void)
{
    g_s ^= g_s << 13;
    g_s ^= g_s >> 7;
    g_s ^= g_s << 17;
    return (float)((g_s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

typedef struct synth_t {
    char name[64];
    uint32_t nd;
    uint64_t ne[2];
    kr_dtype type;
} synth_t;

/* llama-shaped model with random weights, streamed row by row. */
static int write_synth(const char *path, uint32_t V, uint32_t E, uint32_t L, uint32_t H, uint32_t HKV, uint32_t F,
                       kr_dtype wt, kr_dtype et)
{
    kr_gguf_writer *w;
    kr_err err;
    if (kr_gguf_writer_open(path, &w, &err) != KR_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    kr_gguf_writer_set_str(w, "general.architecture", "llama");
    kr_gguf_writer_set_u32(w, "llama.context_length", 2048);
    kr_gguf_writer_set_u32(w, "llama.embedding_length", E);
    kr_gguf_writer_set_u32(w, "llama.block_count", L);
    kr_gguf_writer_set_u32(w, "llama.feed_forward_length", F);
    kr_gguf_writer_set_u32(w, "llama.attention.head_count", H);
    kr_gguf_writer_set_u32(w, "llama.attention.head_count_kv", HKV);
    kr_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    uint32_t D = E / H;
    size_t nt = 2 + (size_t)L * 9, k = 0;
    synth_t *ts = calloc(nt, sizeof *ts);
#define ADD(nm, n, a, b, ty) (snprintf(ts[k].name, 64, "%s", nm), ts[k].nd = n, ts[k].ne[0] = a, ts[k].ne[1] = b, ts[k++].type = ty)
    ADD("token_embd.weight", 2, E, V, et);
    ADD("output_norm.weight", 1, E, 1, KR_DTYPE_F32);
    char nm[64];
    for (uint32_t l = 0; l < L; l++) {
#define LADD(sfx, n, a, b, ty) (snprintf(nm, 64, "blk.%u.%s", l, sfx), ADD(nm, n, a, b, ty))
        LADD("attn_norm.weight", 1, E, 1, KR_DTYPE_F32);
        LADD("attn_q.weight", 2, E, H * D, wt);
        LADD("attn_k.weight", 2, E, HKV * D, wt);
        LADD("attn_v.weight", 2, E, HKV * D, wt);
        LADD("attn_output.weight", 2, H * D, E, wt);
        LADD("ffn_norm.weight", 1, E, 1, KR_DTYPE_F32);
        LADD("ffn_gate.weight", 2, E, F, wt);
        LADD("ffn_up.weight", 2, E, F, wt);
        LADD("ffn_down.weight", 2, F, E, wt);
    }
    for (size_t i = 0; i < nt; i++)
        kr_gguf_writer_add_tensor(w, ts[i].name, ts[i].type, ts[i].nd, ts[i].ne);
    kr_status st = kr_gguf_writer_begin_data(w);
    float *row = malloc(8192 * sizeof *row);
    void *q = malloc(8192 * 4);
    for (size_t i = 0; i < nt && st == KR_OK; i++) {
        uint64_t rb;
        kr_dtype_row_size(ts[i].type, ts[i].ne[0], &rb);
        for (uint64_t r = 0; r < ts[i].ne[1] && st == KR_OK; r++) {
            for (uint64_t c = 0; c < ts[i].ne[0]; c++)
                row[c] = ts[i].nd == 1 ? 1.0f : 0.05f * frand();
            kr_quantize_row(ts[i].type, row, q, ts[i].ne[0]);
            st = kr_gguf_writer_write_data(w, q, rb);
        }
    }
    if (st == KR_OK)
        st = kr_gguf_writer_finish(w);
    if (st != KR_OK)
        fprintf(stderr, "writer: %s\n", kr_gguf_writer_error(w));
    kr_gguf_writer_free(w);
    free(row);
    free(q);
    free(ts);
    return st == KR_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    char synth_path[512] = "";
    int threads = 2, n_prompt = 32, n_decode = 64;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-m") == 0 && i + 1 < argc) {
            path = argv[++i];
        } else if (strcmp(argv[i], "--synth") == 0 && i + 1 < argc) {
            i++;
            const char *dir = getenv("TMPDIR");
            snprintf(synth_path, sizeof synth_path, "%s/kr-bench-synth-%ld.gguf", dir ? dir : "/tmp", (long)getpid());
            double t0 = now();
            if (strcmp(argv[i], "smollm2") != 0) {
                fprintf(stderr, "unknown synth preset '%s' (smollm2)\n", argv[i]);
                return 2;
            }
            if (write_synth(synth_path, 49152, 576, 30, 9, 3, 1536, KR_DTYPE_Q4_1, KR_DTYPE_Q8_0))
                return 1;
            fprintf(stderr, "synthesized %s in %.1f s\n", synth_path, now() - t0);
            path = synth_path;
        } else if (strcmp(argv[i], "-t") == 0 && i + 1 < argc) {
            threads = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-p") == 0 && i + 1 < argc) {
            n_prompt = atoi(argv[++i]);
        } else if (strcmp(argv[i], "-n") == 0 && i + 1 < argc) {
            n_decode = atoi(argv[++i]);
        } else {
            fprintf(stderr, "usage: bench-model (-m FILE | --synth smollm2) [-t N] [-p N] [-n N]\n");
            return 2;
        }
    }
    if (!path || n_prompt < 1 || n_decode < 1) {
        fprintf(stderr, "usage: bench-model (-m FILE | --synth smollm2) [-t N] [-p N] [-n N]\n");
        return 2;
    }
    int rc = 1;
    kr_model_params mp = kr_model_params_default();
    kr_builtin_model_params(&mp);
    kr_model *m = NULL;
    kr_context *c = NULL;
    float *lg = NULL;
    int32_t *prompt = NULL;
    kr_err err;
    kr_err_clear(&err);
    double t0 = now();
    if (kr_model_load(path, &mp, &m, &err) != KR_OK)
        goto fail;
    double t_load = now() - t0;
    kr_context_params cp = kr_context_params_default();
    cp.n_ctx = (uint32_t)(n_prompt + n_decode);
    cp.n_threads = threads;
    if (kr_context_new(m, &cp, &c, &err) != KR_OK)
        goto fail;
    int32_t V = kr_model_n_vocab(m);
    lg = malloc((size_t)V * sizeof *lg);
    prompt = malloc((size_t)n_prompt * sizeof *prompt);
    for (int i = 0; i < n_prompt; i++)
        prompt[i] = (int32_t)((1 + 7 * i) % V);
    t0 = now();
    double c0 = cpu_now();
    if (kr_model_eval(c, prompt, (size_t)n_prompt, 0, lg, &err) != KR_OK)
        goto fail;
    double t_prefill = now() - t0, c_prefill = cpu_now() - c0;
    int32_t tok = 1;
    t0 = now();
    c0 = cpu_now();
    for (int i = 0; i < n_decode; i++) {
        if (kr_model_eval(c, &tok, 1, (uint32_t)(n_prompt + i), lg, &err) != KR_OK)
            goto fail;
        int32_t b = 0;
        for (int32_t j = 1; j < V; j++)
            if (lg[j] > lg[b])
                b = j;
        tok = b;
    }
    double t_decode = now() - t0, c_decode = cpu_now() - c0;
    double gb = (double)kr_model_weight_bytes(m) / 1e9;
    printf("model %s (%s, %.1f MB weights), %d threads\n", path, kr_model_arch(m), gb * 1e3, kr_context_n_threads(c));
    printf("load %.3f s | prefill %d tokens: %.1f tok/s | decode %d tokens: %.1f tok/s (%.2f GB/s of weights)\n",
           t_load, n_prompt, n_prompt / t_prefill, n_decode, n_decode / t_decode, gb * n_decode / t_decode);
    printf("per CPU-second (all threads): prefill %.1f tok/s, decode %.1f tok/s\n", n_prompt / c_prefill,
           n_decode / c_decode);
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "bench-model: %s\n", err.msg);
done:
    free(lg);
    free(prompt);
    kr_context_free(c);
    kr_model_free(m);
    if (synth_path[0])
        unlink(synth_path);
    return rc;
}
