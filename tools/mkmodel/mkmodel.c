/* Synthetic GGUF models: presets, tensor plan, synthetic vocabulary and the
 * threaded generate -> quantize -> write pipeline. See docs/QUANTS.md
 * ("kernrun mkmodel"). */
#include "mkmodel.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kernrun/checked.h"
#include "kernrun/gguf.h"
#include "kernrun/quant.h"

#define KR__MK_CHUNK_BYTES (16u << 20) /* target output bytes per chunk (threads start per chunk) */
#define KR__MK_MAX_THREADS 64

/* ---- presets ---------------------------------------------------------- */

typedef struct kr__mk_preset {
    const char *arch, *preset;
    kr_mkmodel_hparams hp;
} kr__mk_preset;

/* {arch, n_ctx, n_embd, n_layer, n_ff, n_head, n_head_kv, n_rot, n_vocab, sliding_window, eps, rope_base} */
static const kr__mk_preset g_presets[] = {
    {"llama", "tiny", {"llama", 512, 64, 2, 128, 4, 2, 16, 256, 0, 1e-5f, 10000.0f}},
    {"mistral", "tiny", {"mistral", 512, 64, 2, 128, 4, 2, 16, 256, 64, 1e-5f, 10000.0f}},
    {"falcon", "tiny", {"falcon", 512, 64, 2, 128, 4, 2, 16, 256, 0, 1e-5f, 10000.0f}},
    /* TinyLlama-1.1B shapes for every arch */
    {"llama", "1b", {"llama", 2048, 2048, 22, 5632, 32, 4, 64, 32000, 0, 1e-5f, 10000.0f}},
    {"mistral", "1b", {"mistral", 2048, 2048, 22, 5632, 32, 4, 64, 32000, 1024, 1e-5f, 10000.0f}},
    {"falcon", "1b", {"falcon", 2048, 2048, 22, 5632, 32, 4, 64, 32000, 0, 1e-5f, 10000.0f}},
    /* llama-2-7b, mistral-7b-v0.1, falcon-7b */
    {"llama", "7b", {"llama", 4096, 4096, 32, 11008, 32, 32, 128, 32000, 0, 1e-5f, 10000.0f}},
    {"mistral", "7b", {"mistral", 32768, 4096, 32, 14336, 32, 8, 128, 32000, 4096, 1e-5f, 10000.0f}},
    {"falcon", "7b", {"falcon", 2048, 4544, 32, 18176, 71, 1, 64, 65024, 0, 1e-5f, 10000.0f}},
};

kr_status kr_mkmodel_preset(const char *arch, const char *preset, kr_mkmodel_hparams *hp, kr_err *err)
{
    if (!arch || !preset || !hp)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "preset: NULL argument");
    bool arch_known = false;
    for (size_t i = 0; i < sizeof g_presets / sizeof g_presets[0]; i++) {
        if (strcmp(g_presets[i].arch, arch) != 0)
            continue;
        arch_known = true;
        if (strcmp(g_presets[i].preset, preset) == 0) {
            *hp = g_presets[i].hp;
            return KR_OK;
        }
    }
    if (!arch_known)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "unknown architecture '%s' (llama, mistral, falcon)", arch);
    return kr_err_set(err, KR_ERR_INVALID_ARG, "unknown preset '%s' (tiny, 1b, 7b)", preset);
}

int kr_mkmodel_file_type(kr_dtype t)
{
    switch (t) {
    case KR_DTYPE_F32: return 0;
    case KR_DTYPE_F16: return 1;
    case KR_DTYPE_Q4_0: return 2;
    case KR_DTYPE_Q4_1: return 3;
    case KR_DTYPE_Q8_0: return 7;
    case KR_DTYPE_Q5_0: return 8;
    case KR_DTYPE_Q5_1: return 9;
    case KR_DTYPE_Q4_K: return 14; /* MOSTLY_Q4_K_S: every weight q4_k */
    case KR_DTYPE_Q5_K: return 16; /* MOSTLY_Q5_K_S */
    case KR_DTYPE_Q6_K: return 18; /* MOSTLY_Q6_K */
    case KR_DTYPE_BF16: return 32;
    default: return -1;
    }
}

/* ---- tensor plan ------------------------------------------------------ */

typedef enum kr__mk_kind {
    KR__MK_WEIGHT, /* uniform, std 0.02 */
    KR__MK_NORM,   /* 1 + uniform(-0.1, 0.1) */
    KR__MK_BIAS,   /* uniform(-0.02, 0.02) */
} kr__mk_kind;

typedef struct kr__mk_tensor {
    char name[64];
    kr_dtype type;
    uint32_t n_dims;
    uint64_t ne[2];         /* ne[0] = row length, ne[1] = rows (1 for 1-D) */
    uint64_t row_bytes;
    kr__mk_kind kind;
} kr__mk_tensor;

typedef struct kr__mk_plan {
    kr__mk_tensor *t;       /* (n) */
    size_t n, cap;
} kr__mk_plan;

static kr_status plan_add(kr__mk_plan *p, kr_dtype type, kr__mk_kind kind, uint64_t ne0, uint64_t ne1, kr_err *err,
                          const char *fmt, ...) __attribute__((format(printf, 7, 8)));

static kr_status plan_add(kr__mk_plan *p, kr_dtype type, kr__mk_kind kind, uint64_t ne0, uint64_t ne1, kr_err *err,
                          const char *fmt, ...)
{
    if (p->n == p->cap) {
        size_t nc = p->cap ? 2 * p->cap : 64;
        kr__mk_tensor *t = realloc(p->t, nc * sizeof *t);
        if (!t)
            return kr_err_set(err, KR_ERR_NOMEM, "tensor plan of %zu entries", nc);
        p->t = t;
        p->cap = nc;
    }
    kr__mk_tensor *t = &p->t[p->n];
    memset(t, 0, sizeof *t);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->name, sizeof t->name, fmt, ap);
    va_end(ap);
    t->type = type;
    t->kind = kind;
    t->n_dims = ne1 == 0 ? 1 : 2;
    t->ne[0] = ne0;
    t->ne[1] = ne1 == 0 ? 1 : ne1;
    kr_status st = kr_quant_row_size(type, ne0, &t->row_bytes, err);
    if (st != KR_OK)
        return kr_err_prefix(err, "tensor '%s'", t->name);
    p->n++;
    return KR_OK;
}

static kr_status build_plan(const kr_mkmodel_hparams *hp, kr_dtype wt, kr__mk_plan *p, kr_err *err)
{
    const uint64_t E = hp->n_embd, F = hp->n_ff, V = hp->n_vocab;
    const uint64_t hd = hp->n_embd / hp->n_head;
    const uint64_t QD = (uint64_t)hp->n_head * hd, KVD = (uint64_t)hp->n_head_kv * hd;
    const bool falcon = strcmp(hp->arch, "falcon") == 0;
    const kr_dtype f32 = KR_DTYPE_F32;
    kr_status st;
#define KR__ADD(...)                                  \
    if ((st = plan_add(p, __VA_ARGS__)) != KR_OK)      \
        return st;
    KR__ADD(wt, KR__MK_WEIGHT, E, V, err, "token_embd.weight")
    for (uint32_t l = 0; l < hp->n_layer; l++) {
        KR__ADD(f32, KR__MK_NORM, E, 0, err, "blk.%u.attn_norm.weight", l)
        if (falcon) {
            KR__ADD(f32, KR__MK_BIAS, E, 0, err, "blk.%u.attn_norm.bias", l)
            KR__ADD(wt, KR__MK_WEIGHT, E, QD + 2 * KVD, err, "blk.%u.attn_qkv.weight", l)
            KR__ADD(wt, KR__MK_WEIGHT, QD, E, err, "blk.%u.attn_output.weight", l)
            KR__ADD(wt, KR__MK_WEIGHT, E, F, err, "blk.%u.ffn_up.weight", l)
            KR__ADD(wt, KR__MK_WEIGHT, F, E, err, "blk.%u.ffn_down.weight", l)
        } else {
            KR__ADD(wt, KR__MK_WEIGHT, E, QD, err, "blk.%u.attn_q.weight", l)
            KR__ADD(wt, KR__MK_WEIGHT, E, KVD, err, "blk.%u.attn_k.weight", l)
            KR__ADD(wt, KR__MK_WEIGHT, E, KVD, err, "blk.%u.attn_v.weight", l)
            KR__ADD(wt, KR__MK_WEIGHT, QD, E, err, "blk.%u.attn_output.weight", l)
            KR__ADD(f32, KR__MK_NORM, E, 0, err, "blk.%u.ffn_norm.weight", l)
            KR__ADD(wt, KR__MK_WEIGHT, E, F, err, "blk.%u.ffn_gate.weight", l)
            KR__ADD(wt, KR__MK_WEIGHT, E, F, err, "blk.%u.ffn_up.weight", l)
            KR__ADD(wt, KR__MK_WEIGHT, F, E, err, "blk.%u.ffn_down.weight", l)
        }
    }
    KR__ADD(f32, KR__MK_NORM, E, 0, err, "output_norm.weight")
    if (falcon) {
        KR__ADD(f32, KR__MK_BIAS, E, 0, err, "output_norm.bias")
    }
    KR__ADD(wt, KR__MK_WEIGHT, E, V, err, "output.weight")
#undef KR__ADD
    return KR_OK;
}

/* ---- random values ---------------------------------------------------- */

static uint64_t splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

/* 32-bit avalanche mixer (xorshift-multiply); a bijection on uint32. */
static inline uint32_t mix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    return h;
}

/* Row `row` of tensor `ti`: counter-based (element i depends only on seed,
 * tensor, row and i), so the file is independent of chunking and threads,
 * and the loop has no carried state (it vectorizes). */
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__)
/* AVX2 has the 8 x 32-bit multiplies the mixer needs; SSE2 does not */
#define KR__MK_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KR__MK_CLONES
#endif

KR__MK_CLONES static void gen_row(uint64_t seed, size_t ti, uint64_t row, kr__mk_kind kind, float *x, uint64_t n)
{
    const uint64_t k = splitmix64(seed ^ splitmix64(((uint64_t)ti << 40) ^ row));
    const uint32_t k1 = (uint32_t)k, k2 = (uint32_t)(k >> 32);
    /* uniform(-a, a) has std a / sqrt(3): a = 0.02 * sqrt(3) gives std 0.02 */
    const float a = kind == KR__MK_WEIGHT ? 0.034641016f : kind == KR__MK_NORM ? 0.1f : 0.02f;
    const float off = kind == KR__MK_NORM ? 1.0f : 0.0f;
    const float scale = 2.0f * a / 16777216.0f;
    for (uint64_t i = 0; i < n; i++) {
        const uint32_t h = mix32(mix32((uint32_t)i ^ k1) + k2);
        x[i] = (float)(int32_t)(h >> 8) * scale - a + off;
    }
}

/* ---- synthetic SPM vocabulary ---------------------------------------- */

typedef struct kr__mk_vocab {
    char **tok;      /* (n) NUL-terminated */
    float *score;    /* (n) */
    int32_t *type;   /* (n) GGUF token types: 1 normal, 2 unknown, 3 control, 6 byte */
    uint32_t n;
} kr__mk_vocab;

static void vocab_free(kr__mk_vocab *v)
{
    if (v->tok)
        for (uint32_t i = 0; i < v->n; i++)
            free(v->tok[i]);
    free(v->tok);
    free(v->score);
    free(v->type);
    memset(v, 0, sizeof *v);
}

static kr_status vocab_push(kr__mk_vocab *v, uint32_t cap, const char *s, int32_t type, kr_err *err)
{
    if (v->n >= cap)
        return KR_OK; /* full: callers stop generating */
    char *c = strdup(s);
    if (!c)
        return kr_err_set(err, KR_ERR_NOMEM, "vocabulary token %u", v->n);
    v->tok[v->n] = c;
    v->type[v->n] = type;
    v->score[v->n] = type == 1 ? -(float)v->n : 0.0f; /* earlier pieces merge first */
    v->n++;
    return KR_OK;
}

/* <unk> <s> </s>, the 256 byte tokens <0xXX> when there is room for them
 * plus some pieces (n >= 260), then "▁", printable ASCII, "▁"+letter/digit,
 * "▁"+two letters, two letters, then "▁tok<N>" until n tokens. */
static kr_status vocab_synth(kr__mk_vocab *v, uint32_t n, kr_err *err)
{
    static const char sp[] = "\xe2\x96\x81"; /* U+2581 ▁ */
    static const char alnum[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    char buf[32];
    kr_status st = KR_OK;
    memset(v, 0, sizeof *v);
    v->tok = calloc(n, sizeof *v->tok);
    v->score = calloc(n, sizeof *v->score);
    v->type = calloc(n, sizeof *v->type);
    if (!v->tok || !v->score || !v->type) {
        st = kr_err_set(err, KR_ERR_NOMEM, "vocabulary of %u tokens", n);
        goto err_free;
    }
#define KR__PUSH(s, ty)                                               \
    if ((st = vocab_push(v, n, (s), (ty), err)) != KR_OK)             \
        goto err_free;
    KR__PUSH("<unk>", 2)
    KR__PUSH("<s>", 3)
    KR__PUSH("</s>", 3)
    if (n >= 260)
        for (int b = 0; b < 256; b++) {
            snprintf(buf, sizeof buf, "<0x%02X>", b);
            KR__PUSH(buf, 6)
        }
    KR__PUSH(sp, 1)
    for (int c = 0x21; c < 0x7f; c++) {
        buf[0] = (char)c;
        buf[1] = 0;
        KR__PUSH(buf, 1)
    }
    for (size_t i = 0; alnum[i]; i++) {
        snprintf(buf, sizeof buf, "%s%c", sp, alnum[i]);
        KR__PUSH(buf, 1)
    }
    for (int pre = 1; pre >= 0; pre--)
        for (int a = 0; a < 26 && v->n < n; a++)
            for (int b = 0; b < 26 && v->n < n; b++) {
                snprintf(buf, sizeof buf, "%s%c%c", pre ? sp : "", 'a' + a, 'a' + b);
                KR__PUSH(buf, 1)
            }
    for (uint32_t k = 0; v->n < n; k++) {
        snprintf(buf, sizeof buf, "%stok%u", sp, k);
        KR__PUSH(buf, 1)
    }
#undef KR__PUSH
    return KR_OK;
err_free:
    vocab_free(v);
    return st;
}

/* ---- threaded generate + quantize ------------------------------------ */

typedef struct kr__mk_chunk {
    size_t ti;           /* tensor index */
    uint64_t r0, nr;     /* rows [r0, r0 + nr) */
    uint8_t *buf;        /* (nr * row_bytes) output */
} kr__mk_chunk;

typedef struct kr__mk_ctx {
    const kr__mk_plan *plan;
    uint64_t seed;
    int n_threads;
    float *scratch;      /* (n_threads, max_row) fp32 rows */
    uint64_t max_row;
} kr__mk_ctx;

typedef struct kr__mk_job {
    const kr__mk_ctx *c;
    const kr__mk_chunk *ch;
    uint64_t r0, r1;     /* rows of the chunk this job does (relative) */
    float *x;            /* (max_row) scratch */
    kr_status st;
    pthread_t th;
    bool started;
} kr__mk_job;

static void run_job(kr__mk_job *j)
{
    const kr__mk_tensor *t = &j->c->plan->t[j->ch->ti];
    j->st = KR_OK;
    for (uint64_t r = j->r0; r < j->r1; r++) {
        gen_row(j->c->seed, j->ch->ti, j->ch->r0 + r, t->kind, j->x, t->ne[0]);
        kr_status st = kr_quantize_row(t->type, j->x, j->ch->buf + r * t->row_bytes, t->ne[0]);
        if (st != KR_OK) {
            j->st = st;
            return;
        }
    }
}

static void *job_thread(void *arg)
{
    run_job(arg);
    return NULL;
}

/* Start the jobs of one chunk (threads where possible, else inline). */
static void chunk_start(const kr__mk_ctx *c, const kr__mk_chunk *ch, kr__mk_job *jobs)
{
    for (int i = 0; i < c->n_threads; i++) {
        kr__mk_job *j = &jobs[i];
        j->c = c;
        j->ch = ch;
        j->r0 = ch->nr * (uint64_t)i / (uint64_t)c->n_threads;
        j->r1 = ch->nr * (uint64_t)(i + 1) / (uint64_t)c->n_threads;
        j->x = c->scratch + (size_t)i * c->max_row;
        j->st = KR_OK;
        j->started = false;
        if (j->r0 == j->r1)
            continue;
        if (c->n_threads > 1 && pthread_create(&j->th, NULL, job_thread, j) == 0)
            j->started = true;
        else
            run_job(j); /* single thread, or no thread available: do it here */
    }
}

static kr_status chunk_join(const kr__mk_ctx *c, kr__mk_job *jobs, kr_err *err)
{
    kr_status st = KR_OK;
    for (int i = 0; i < c->n_threads; i++) {
        if (jobs[i].started)
            pthread_join(jobs[i].th, NULL);
        jobs[i].started = false;
        if (jobs[i].st != KR_OK && st == KR_OK)
            st = kr_err_set(err, jobs[i].st, "quantizing tensor '%s' to %s failed", c->plan->t[jobs[i].ch->ti].name,
                            kr_dtype_name(c->plan->t[jobs[i].ch->ti].type));
    }
    return st;
}

/* Next chunk after *ch (ch->nr == 0: the first); false when done. */
static bool chunk_next(const kr__mk_plan *p, kr__mk_chunk *ch)
{
    size_t ti = ch->ti;
    uint64_t r0 = ch->r0 + ch->nr;
    if (ch->nr == 0) {
        ti = 0;
        r0 = 0;
    }
    while (ti < p->n && r0 >= p->t[ti].ne[1]) {
        ti++;
        r0 = 0;
    }
    if (ti >= p->n)
        return false;
    const kr__mk_tensor *t = &p->t[ti];
    uint64_t per = KR__MK_CHUNK_BYTES / t->row_bytes;
    if (per == 0)
        per = 1;
    ch->ti = ti;
    ch->r0 = r0;
    ch->nr = t->ne[1] - r0 < per ? t->ne[1] - r0 : per;
    return true;
}

static kr_status write_tensors(kr_gguf_writer *w, const kr__mk_plan *p, uint64_t seed, int n_threads, kr_err *err)
{
    kr_status st = KR_OK;
    kr__mk_ctx c = {.plan = p, .seed = seed, .n_threads = n_threads};
    uint64_t max_bytes = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (p->t[i].ne[0] > c.max_row)
            c.max_row = p->t[i].ne[0];
        uint64_t per = KR__MK_CHUNK_BYTES / p->t[i].row_bytes;
        uint64_t b = (per ? per : 1) * p->t[i].row_bytes;
        if (b > max_bytes)
            max_bytes = b;
    }
    uint8_t *bufs[2] = {malloc(max_bytes), malloc(max_bytes)};
    c.scratch = malloc((size_t)n_threads * c.max_row * sizeof(float));
    kr__mk_job *jobs[2] = {calloc((size_t)n_threads, sizeof(kr__mk_job)), calloc((size_t)n_threads, sizeof(kr__mk_job))};
    if (!bufs[0] || !bufs[1] || !c.scratch || !jobs[0] || !jobs[1]) {
        st = kr_err_set(err, KR_ERR_NOMEM, "chunk buffers (%" PRIu64 " bytes each)", max_bytes);
        goto out_free;
    }
    /* Pipeline: compute chunk k+1 on the workers while the main thread
     * writes chunk k. The scratch rows are per worker slot and a chunk's
     * jobs are joined before the next chunk starts, so one scratch set is
     * enough. */
    kr__mk_chunk iter = {0}, prev = {0}, cur = {0};
    bool have_prev = false;
    int slot = 0;
    for (;;) {
        const bool got = chunk_next(p, &iter);
        if (got) {
            cur = iter;
            cur.buf = bufs[slot];
            chunk_start(&c, &cur, jobs[slot]);
        }
        if (have_prev) {
            const kr__mk_tensor *t = &p->t[prev.ti];
            if ((st = kr_gguf_writer_write_data(w, prev.buf, (size_t)(prev.nr * t->row_bytes))) != KR_OK) {
                kr_err_set(err, st, "writing tensor '%s': %s", t->name, kr_gguf_writer_error(w));
                if (got)
                    chunk_join(&c, jobs[slot], NULL);
                goto out_free;
            }
        }
        if (!got)
            break;
        if ((st = chunk_join(&c, jobs[slot], err)) != KR_OK)
            goto out_free;
        prev = cur;
        have_prev = true;
        slot ^= 1;
    }
out_free:
    free(jobs[0]);
    free(jobs[1]);
    free(c.scratch);
    free(bufs[0]);
    free(bufs[1]);
    return st;
}

/* ---- metadata --------------------------------------------------------- */

static kr_status write_meta(kr_gguf_writer *w, const kr_mkmodel_hparams *hp, const kr_mkmodel_opts *o)
{
    kr_status st;
    char key[96], name[96];
#define KR__CHK(call)                 \
    if ((st = (call)) != KR_OK)       \
        return st;
#define KR__AKEY(sfx) (snprintf(key, sizeof key, "%s.%s", hp->arch, sfx), key)
    KR__CHK(kr_gguf_writer_set_str(w, "general.architecture", hp->arch))
    snprintf(name, sizeof name, "kernrun synthetic %s %s %s seed %" PRIu64, hp->arch, o->preset,
             kr_dtype_name(o->type), o->seed);
    KR__CHK(kr_gguf_writer_set_str(w, "general.name", name))
    KR__CHK(kr_gguf_writer_set_u32(w, "general.file_type", (uint32_t)kr_mkmodel_file_type(o->type)))
    KR__CHK(kr_gguf_writer_set_u32(w, "general.quantization_version", 2))
    KR__CHK(kr_gguf_writer_set_u32(w, KR__AKEY("context_length"), hp->n_ctx))
    KR__CHK(kr_gguf_writer_set_u32(w, KR__AKEY("embedding_length"), hp->n_embd))
    KR__CHK(kr_gguf_writer_set_u32(w, KR__AKEY("block_count"), hp->n_layer))
    KR__CHK(kr_gguf_writer_set_u32(w, KR__AKEY("feed_forward_length"), hp->n_ff))
    KR__CHK(kr_gguf_writer_set_u32(w, KR__AKEY("attention.head_count"), hp->n_head))
    KR__CHK(kr_gguf_writer_set_u32(w, KR__AKEY("attention.head_count_kv"), hp->n_head_kv))
    KR__CHK(kr_gguf_writer_set_u32(w, KR__AKEY("rope.dimension_count"), hp->n_rot))
    KR__CHK(kr_gguf_writer_set_f32(w, KR__AKEY("rope.freq_base"), hp->rope_base))
    if (strcmp(hp->arch, "falcon") == 0) {
        KR__CHK(kr_gguf_writer_set_f32(w, KR__AKEY("attention.layer_norm_epsilon"), hp->norm_eps))
    } else {
        KR__CHK(kr_gguf_writer_set_f32(w, KR__AKEY("attention.layer_norm_rms_epsilon"), hp->norm_eps))
    }
    if (hp->sliding_window) {
        KR__CHK(kr_gguf_writer_set_u32(w, KR__AKEY("attention.sliding_window"), hp->sliding_window))
    }
    KR__CHK(kr_gguf_writer_set_u32(w, KR__AKEY("vocab_size"), hp->n_vocab))
#undef KR__AKEY
#undef KR__CHK
    return KR_OK;
}

static kr_status write_synth_vocab(kr_gguf_writer *w, uint32_t n, kr_err *err)
{
    kr__mk_vocab v;
    kr_status st = vocab_synth(&v, n, err);
    if (st != KR_OK)
        return st;
    if ((st = kr_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama")) ||
        (st = kr_gguf_writer_set_arr(w, "tokenizer.ggml.tokens", KR_GGUF_STRING, v.tok, v.n)) ||
        (st = kr_gguf_writer_set_arr(w, "tokenizer.ggml.scores", KR_GGUF_FLOAT32, v.score, v.n)) ||
        (st = kr_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", KR_GGUF_INT32, v.type, v.n)) ||
        (st = kr_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0)) ||
        (st = kr_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1)) ||
        (st = kr_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2)) ||
        (st = kr_gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true)) ||
        (st = kr_gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false)))
        kr_err_set(err, st, "synthetic vocabulary: %s", kr_gguf_writer_error(w));
    vocab_free(&v);
    return st;
}

/* Copy every tokenizer.* key of the vocab file. */
static kr_status copy_vocab(kr_gguf_writer *w, const kr_gguf *g, const char *path, kr_err *err)
{
    for (int64_t i = 0; i < kr_gguf_n_kv(g); i++) {
        const char *k = kr_gguf_key(g, i);
        if (strncmp(k, "tokenizer.", 10) != 0)
            continue;
        kr_status st = kr_gguf_writer_copy_kv(w, g, i);
        if (st != KR_OK)
            return kr_err_set(err, st, "copying '%s' from %s: %s", k, path, kr_gguf_writer_error(w));
    }
    return KR_OK;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

kr_status kr_mkmodel_write(const kr_mkmodel_opts *o, kr_mkmodel_stats *stats, kr_err *err)
{
    kr_status st;
    kr_mkmodel_hparams hp;
    kr_gguf *vg = NULL;
    kr_gguf_writer *w = NULL;
    kr__mk_plan plan = {0};
    const double t0 = now_s();

    if (!o || !o->out_path)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "mkmodel: no output file");
    if ((st = kr_mkmodel_preset(o->arch, o->preset, &hp, err)) != KR_OK)
        return st;
    if (kr_mkmodel_file_type(o->type) < 0 || !kr_quant_can_quantize(o->type))
        return kr_err_set(err, KR_ERR_UNSUPPORTED,
                          "weight type '%s' is not supported (f16, q8_0, q4_0, q4_1; also f32, bf16, q5_0, q5_1, q4_k, q5_k, q6_k)",
                          kr_dtype_name(o->type));
    if (o->n_layer > 0)
        hp.n_layer = o->n_layer;
    int n_threads = o->n_threads;
    if (n_threads <= 0) { /* one CPU stays with the writing thread */
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = nc > 1 ? (int)nc - 1 : 1;
    }
    if (n_threads > KR__MK_MAX_THREADS)
        n_threads = KR__MK_MAX_THREADS;

    if (o->vocab_from) {
        if ((st = kr_gguf_open(o->vocab_from, NULL, &vg, err)) != KR_OK)
            return kr_err_prefix(err, "vocabulary file %s", o->vocab_from);
        uint64_t nv = 0;
        if (kr_gguf_find_key(vg, "tokenizer.ggml.tokens") < 0 ||
            kr_gguf_kv_type(vg, kr_gguf_find_key(vg, "tokenizer.ggml.tokens")) != KR_GGUF_ARRAY ||
            (nv = kr_gguf_arr_n(vg, kr_gguf_find_key(vg, "tokenizer.ggml.tokens"))) == 0 || nv > UINT32_MAX) {
            st = kr_err_set(err, KR_ERR_FORMAT, "vocabulary file %s: no usable tokenizer.ggml.tokens array",
                            o->vocab_from);
            goto err_close_vocab;
        }
        hp.n_vocab = (uint32_t)nv;
    }
    if ((st = build_plan(&hp, o->type, &plan, err)) != KR_OK)
        goto err_free_plan;

    if ((st = kr_gguf_writer_open(o->out_path, &w, err)) != KR_OK) {
        kr_err_prefix(err, "creating %s", o->out_path);
        goto err_free_plan;
    }
    if ((st = write_meta(w, &hp, o)) != KR_OK) {
        kr_err_set(err, st, "metadata: %s", kr_gguf_writer_error(w));
        goto err_free_writer;
    }
    if ((st = vg ? copy_vocab(w, vg, o->vocab_from, err) : write_synth_vocab(w, hp.n_vocab, err)) != KR_OK)
        goto err_free_writer;
    uint64_t n_params = 0;
    for (size_t i = 0; i < plan.n; i++) {
        const kr__mk_tensor *t = &plan.t[i];
        if ((st = kr_gguf_writer_add_tensor(w, t->name, t->type, t->n_dims, t->ne)) != KR_OK) {
            kr_err_set(err, st, "declaring tensor '%s': %s", t->name, kr_gguf_writer_error(w));
            goto err_free_writer;
        }
        n_params += t->ne[0] * t->ne[1];
    }
    if ((st = kr_gguf_writer_begin_data(w)) != KR_OK) {
        kr_err_set(err, st, "writing the header: %s", kr_gguf_writer_error(w));
        goto err_free_writer;
    }
    if ((st = write_tensors(w, &plan, o->seed, n_threads, err)) != KR_OK)
        goto err_free_writer;
    if ((st = kr_gguf_writer_finish(w)) != KR_OK) {
        kr_err_set(err, st, "finishing: %s", kr_gguf_writer_error(w));
        goto err_free_writer;
    }
    if (stats) {
        struct stat sb;
        memset(stats, 0, sizeof *stats);
        stats->file_bytes = stat(o->out_path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
        stats->n_params = n_params;
        stats->n_tensors = (uint32_t)plan.n;
        stats->seconds = now_s() - t0;
    }
    st = KR_OK;

err_free_writer:
    kr_gguf_writer_free(w); /* removes the file unless finished */
err_free_plan:
    free(plan.t);
err_close_vocab:
    kr_gguf_close(vg);
    if (st != KR_OK)
        kr_err_prefix(err, "mkmodel %s", o->out_path);
    return st;
}
