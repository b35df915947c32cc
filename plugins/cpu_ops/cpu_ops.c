/* CPU reference implementations of the forward-pass ops (kernrun/ops.h).
 * Plain C, threads through the executor where the work is large enough to
 * pay for the hand-off. Math per op is stated above each function. */
#include "kernrun/cpu_ops.h"

#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/arch.h"
#include "kernrun/half.h"
#include "kernrun/quant.h"

/* Below this many multiply-adds per chunk, threading costs more than it saves. */
#define KR__MIN_WORK 16384

static size_t kr__min_chunk(size_t work_per_item)
{
    if (work_per_item == 0)
        return KR__MIN_WORK;
    size_t c = KR__MIN_WORK / work_per_item;
    return c ? c : 1;
}

static void kr__par(const kr_exec *ex, size_t n, size_t min_chunk, kr_par_fn fn, void *arg)
{
    if (ex && ex->parallel_for)
        ex->parallel_for(ex->pool, n, min_chunk, fn, arg);
    else
        fn(arg, 0, n, 0);
}

/* sum_i a[i] * b[i], 8 independent accumulators (fixed order) */
static float kr__dot_f32(const float *a, const float *b, size_t n)
{
    float acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            acc[j] += a[i + j] * b[i + j];
    float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* ---- matmul: out (n, M) = x (n, K) @ W^T, W (M rows of K) ---- */

typedef float kr__v8f __attribute__((vector_size(32)));

/* x86-64: an AVX2 clone picked at load time (ifunc, glibc/ELF). */
#if defined(__x86_64__) && defined(__ELF__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__)
#define KR__CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define KR__CLONES
#endif

/* (vectors are passed by pointer / loaded by memcpy: a 32-byte vector by
 * value changes the ABI between the clones, which GCC warns about) */
#define KR__LD8(v, p) memcpy(&(v), (p), sizeof(kr__v8f))

static inline float kr__hsum8(const kr__v8f *a)
{
    return (((*a)[0] + (*a)[4]) + ((*a)[1] + (*a)[5])) + (((*a)[2] + (*a)[6]) + ((*a)[3] + (*a)[7]));
}

/* out[t*ldo + i] = rows[i] . x[t]   for i < nr (<= 4), t < n; K floats each.
 * Register block: 4 rows x 2 tokens of 8-lane accumulators. */
KR__CLONES static void kr__gemm4(const float *const rows[4], size_t nr, const float *x, size_t n, size_t K,
                                 float *out, size_t ldo)
{
    size_t K8 = K & ~(size_t)7;
    for (size_t t = 0; t < n; t += 2) {
        const float *x0 = x + t * K, *x1 = t + 1 < n ? x0 + K : x0;
        kr__v8f a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};
        for (size_t k = 0; k < K8; k += 8) {
            kr__v8f v0, v1, w;
            KR__LD8(v0, x0 + k);
            KR__LD8(v1, x1 + k);
            KR__LD8(w, rows[0] + k);
            a00 += w * v0;
            a01 += w * v1;
            KR__LD8(w, rows[1] + k);
            a10 += w * v0;
            a11 += w * v1;
            KR__LD8(w, rows[2] + k);
            a20 += w * v0;
            a21 += w * v1;
            KR__LD8(w, rows[3] + k);
            a30 += w * v0;
            a31 += w * v1;
        }
        float s[4][2] = {{kr__hsum8(&a00), kr__hsum8(&a01)}, {kr__hsum8(&a10), kr__hsum8(&a11)},
                         {kr__hsum8(&a20), kr__hsum8(&a21)}, {kr__hsum8(&a30), kr__hsum8(&a31)}};
        for (size_t k = K8; k < K; k++)
            for (int i = 0; i < 4; i++) {
                s[i][0] += rows[i][k] * x0[k];
                s[i][1] += rows[i][k] * x1[k];
            }
        for (size_t i = 0; i < nr; i++) {
            out[t * ldo + i] = s[i][0];
            if (t + 1 < n)
                out[(t + 1) * ldo + i] = s[i][1];
        }
    }
}


typedef struct kr__mm_job {
    const kr_weight *w;
    const float *x;
    size_t n, K, M;
    float *out;
    _Atomic int status;       /* first failure */
} kr__mm_job;

static void kr__mm_rows(void *arg, size_t r0, size_t r1, int tid)
{
    (void)tid;
    kr__mm_job *j = arg;
    const char *base = j->w->data;
    if (j->n == 1) {
        for (size_t r = r0; r < r1; r++) {
            kr_status st = kr_vec_dot_row(j->w->type, base + r * j->w->row_bytes, j->x, j->K, &j->out[r]);
            if (st != KR_OK) {
                int z = KR_OK;
                atomic_compare_exchange_strong(&j->status, &z, (int)st);
                return;
            }
        }
        return;
    }
    /* prefill: 4 weight rows at a time (dequantized once) against all tokens */
    float *tmp = NULL;
    if (j->w->type != KR_DTYPE_F32) {
        tmp = malloc(4 * j->K * sizeof *tmp);
        if (!tmp) {
            int z = KR_OK;
            atomic_compare_exchange_strong(&j->status, &z, (int)KR_ERR_NOMEM);
            return;
        }
    }
    for (size_t r = r0; r < r1; r += 4) {
        size_t nr = r1 - r < 4 ? r1 - r : 4;
        const float *rows[4];
        for (size_t i = 0; i < 4; i++) {
            size_t ri = r + (i < nr ? i : 0);
            rows[i] = (const float *)(const void *)(base + ri * j->w->row_bytes);
            if (tmp && i < nr) {
                kr_status st = kr_dequantize_row(j->w->type, base + ri * j->w->row_bytes, tmp + i * j->K, j->K);
                if (st != KR_OK) {
                    int z = KR_OK;
                    atomic_compare_exchange_strong(&j->status, &z, (int)st);
                    free(tmp);
                    return;
                }
            }
            if (tmp)
                rows[i] = tmp + (i < nr ? i : 0) * j->K;
        }
        kr__gemm4(rows, nr, j->x, j->n, j->K, j->out + r, j->M);
    }
    free(tmp);
}

static kr_status kr__matmul(const kr_exec *ex, const kr_weight *w, const float *x, size_t n, float *out,
                            kr_err *err)
{
    if (!w || !w->data || w->n_dims > 2)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "matmul: weight '%s' absent or not 2-D",
                           w && w->name ? w->name : "?");
    if (!kr_quant_can_dequantize(w->type))
        return kr_err_set_local(err, KR_ERR_UNSUPPORTED, "matmul: weight '%s' has unsupported type %d",
                           w->name ? w->name : "?", (int)w->type);
    kr__mm_job j = {.w = w, .x = x, .n = n, .K = (size_t)w->ne[0], .M = (size_t)w->ne[1], .out = out};
    atomic_init(&j.status, KR_OK);
    kr__par(ex, j.M, kr__min_chunk(j.K * n), kr__mm_rows, &j);
    int st = atomic_load(&j.status);
    if (st != KR_OK)
        return kr_err_set_local(err, (kr_status)st, "matmul with '%s' failed (status %d)", w->name ? w->name : "?", st);
    return KR_OK;
}

/* ---- get_rows: out (n, K) = W[ids[i]] ---- */

static kr_status kr__get_rows(const kr_exec *ex, const kr_weight *w, const int32_t *ids, size_t n, float *out,
                              kr_err *err)
{
    (void)ex;
    if (!w || !w->data)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG, "get_rows: weight absent");
    size_t K = (size_t)w->ne[0];
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint64_t)ids[i] >= w->ne[1])
            return kr_err_set_local(err, KR_ERR_RANGE, "get_rows: id %" PRId32 " outside [0, %" PRIu64 ") of '%s'",
                               ids[i], w->ne[1], w->name ? w->name : "?");
        kr_status st = kr_dequantize_row(w->type, (const char *)w->data + (size_t)ids[i] * w->row_bytes,
                                         out + i * K, K);
        if (st != KR_OK)
            return kr_err_set_local(err, st, "get_rows: cannot dequantize a row of '%s'", w->name ? w->name : "?");
    }
    return KR_OK;
}

/* ---- norms ---- */

/* out = x * (1 / sqrt(mean(x^2) + eps)) * w  (sum of squares in double) */
static void kr__rms_norm(const kr_exec *ex, const float *x, const float *w, size_t n, size_t dim, float eps,
                         float *out)
{
    (void)ex;
    for (size_t t = 0; t < n; t++) {
        const float *xi = x + t * dim;
        float *o = out + t * dim;
        double ss = 0.0;
        for (size_t i = 0; i < dim; i++)
            ss += (double)xi[i] * (double)xi[i];
        float scale = 1.0f / sqrtf((float)(ss / (double)dim) + eps);
        for (size_t i = 0; i < dim; i++)
            o[i] = w ? (xi[i] * scale) * w[i] : xi[i] * scale;
    }
}

/* out = (x - mean) / sqrt(var + eps) * w + b  (population variance, sums in double) */
static void kr__layer_norm(const kr_exec *ex, const float *x, const float *w, const float *b, size_t n,
                           size_t dim, float eps, float *out)
{
    (void)ex;
    for (size_t t = 0; t < n; t++) {
        const float *xi = x + t * dim;
        float *o = out + t * dim;
        double s = 0.0;
        for (size_t i = 0; i < dim; i++)
            s += xi[i];
        float mean = (float)(s / (double)dim);
        double s2 = 0.0;
        for (size_t i = 0; i < dim; i++) {
            float d = xi[i] - mean;
            s2 += (double)d * (double)d;
        }
        float scale = 1.0f / sqrtf((float)(s2 / (double)dim) + eps);
        for (size_t i = 0; i < dim; i++) {
            float y = (xi[i] - mean) * scale;
            if (w)
                y *= w[i];
            if (b)
                y += b[i];
            o[i] = y;
        }
    }
}

/* ---- RoPE ----
 * theta_i = pos * freq_scale * base^(-2i/n_rot) / ff[i], i in [0, n_rot/2)
 * normal: (x[2i], x[2i+1]);  neox: (x[i], x[i + n_rot/2])
 * (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos) */
static void kr__rope(const kr_exec *ex, const kr_rope_args *a)
{
    (void)ex;
    size_t half = a->n_rot / 2;
    for (size_t t = 0; t < a->n_tok; t++) {
        double p = (double)a->pos[t];
        for (size_t i = 0; i < half; i++) {
            double theta = p * (double)a->freq_scale * pow((double)a->base, -2.0 * (double)i / (double)a->n_rot);
            if (a->freq_factors)
                theta /= (double)a->freq_factors[i];
            float c = (float)cos(theta), s = (float)sin(theta);
            for (size_t h = 0; h < a->n_head; h++) {
                float *v = a->x + (t * a->n_head + h) * a->head_dim;
                size_t i0 = a->mode == KR_ROPE_NEOX ? i : 2 * i;
                size_t i1 = a->mode == KR_ROPE_NEOX ? i + half : 2 * i + 1;
                float x0 = v[i0], x1 = v[i1];
                v[i0] = x0 * c - x1 * s;
                v[i1] = x0 * s + x1 * c;
            }
        }
    }
}

/* ---- attention ---- */

typedef struct kr__attn_job {
    const kr_attn_args *a;
    _Atomic int status;
} kr__attn_job;

static void kr__kv_row(const void *cache, kr_dtype type, size_t row, size_t off, size_t n, float *dst)
{
    if (type == KR_DTYPE_F32) {
        memcpy(dst, (const float *)cache + row + off, n * sizeof *dst);
    } else {
        const uint16_t *h = (const uint16_t *)cache + row + off;
        for (size_t i = 0; i < n; i++)
            dst[i] = kr_fp16_to_fp32(h[i]);
    }
}

/* item = token * n_head + head */
static void kr__attn_items(void *arg, size_t b, size_t e, int tid)
{
    (void)tid;
    kr__attn_job *j = arg;
    const kr_attn_args *a = j->a;
    size_t D = a->head_dim, kv_dim = (size_t)a->n_head_kv * D, q_dim = (size_t)a->n_head * D;
    size_t group = a->n_head / a->n_head_kv;
    size_t n_keys = (size_t)a->pos0 + a->n_tok;
    float *sc = malloc((n_keys + 2 * D) * sizeof *sc);
    if (!sc) {
        int z = KR_OK;
        atomic_compare_exchange_strong(&j->status, &z, (int)KR_ERR_NOMEM);
        return;
    }
    float *kv = sc + n_keys;   /* (D) one converted key/value row */
    float *acc = kv + D;       /* (D) output accumulator */
    for (size_t it = b; it < e; it++) {
        size_t t = it / a->n_head, h = it % a->n_head, hk = h / group;
        size_t p = (size_t)a->pos0 + t;
        size_t j0 = (a->window && p + 1 > a->window) ? p + 1 - a->window : 0;
        const float *q = a->q + t * q_dim + h * D;
        float mx = -INFINITY;
        for (size_t k = j0; k <= p; k++) {
            const float *kr = kv;
            if (a->kv_type == KR_DTYPE_F32)
                kr = (const float *)a->k + k * kv_dim + hk * D;
            else
                kr__kv_row(a->k, a->kv_type, k * kv_dim, hk * D, D, kv);
            float s = kr__dot_f32(q, kr, D) * a->scale;
            sc[k] = s;
            if (s > mx)
                mx = s;
        }
        double sum = 0.0;
        for (size_t k = j0; k <= p; k++) {
            float ev = expf(sc[k] - mx);
            sc[k] = ev;
            sum += ev;
        }
        float inv = (float)(1.0 / sum);
        for (size_t d = 0; d < D; d++)
            acc[d] = 0.0f;
        for (size_t k = j0; k <= p; k++) {
            const float *vr = kv;
            if (a->kv_type == KR_DTYPE_F32)
                vr = (const float *)a->v + k * kv_dim + hk * D;
            else
                kr__kv_row(a->v, a->kv_type, k * kv_dim, hk * D, D, kv);
            float wgt = sc[k] * inv;
            for (size_t d = 0; d < D; d++)
                acc[d] += wgt * vr[d];
        }
        memcpy(a->out + t * q_dim + h * D, acc, D * sizeof *acc);
    }
    free(sc);
}

static kr_status kr__attention(const kr_exec *ex, const kr_attn_args *a, kr_err *err)
{
    if (!a || a->struct_size < sizeof *a)
        return kr_err_set_local(err, KR_ERR_ABI, "attention: args struct too small");
    if (a->n_head == 0 || a->n_head_kv == 0 || a->n_head % a->n_head_kv != 0 || a->head_dim == 0 ||
        a->head_dim > KR_OPS_MAX_HEAD_DIM || (uint64_t)a->pos0 + a->n_tok > a->n_ctx)
        return kr_err_set_local(err, KR_ERR_INVALID_ARG,
                           "attention: bad shape (heads %" PRIu32 "/%" PRIu32 ", head_dim %" PRIu32 ", pos0 %" PRIu32
                           ", n_tok %" PRIu32 ", n_ctx %" PRIu32 ")",
                           a->n_head, a->n_head_kv, a->head_dim, a->pos0, a->n_tok, a->n_ctx);
    if (a->kv_type != KR_DTYPE_F32 && a->kv_type != KR_DTYPE_F16)
        return kr_err_set_local(err, KR_ERR_UNSUPPORTED, "attention: KV type %d not supported", (int)a->kv_type);
    kr__attn_job j = {.a = a};
    atomic_init(&j.status, KR_OK);
    size_t items = (size_t)a->n_tok * a->n_head;
    size_t work = ((size_t)a->pos0 + a->n_tok) * a->head_dim * 2;
    kr__par(ex, items, kr__min_chunk(work), kr__attn_items, &j);
    int st = atomic_load(&j.status);
    if (st != KR_OK)
        return kr_err_set_local(err, (kr_status)st, "attention: out of memory");
    return KR_OK;
}

/* ---- elementwise ---- */

/* silu(g) * u, silu(g) = g / (1 + e^-g) */
static void kr__swiglu(const kr_exec *ex, const float *gate, const float *up, size_t n, float *out)
{
    (void)ex;
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        out[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
static void kr__gelu(const kr_exec *ex, const float *x, size_t n, float *out)
{
    (void)ex;
    const float c = 0.79788456080286535588f; /* sqrt(2/pi) */
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        out[i] = 0.5f * v * (1.0f + tanhf(c * v * (1.0f + 0.044715f * v * v)));
    }
}

static void kr__add(const kr_exec *ex, float *acc, const float *x, size_t n)
{
    (void)ex;
    for (size_t i = 0; i < n; i++)
        acc[i] += x[i];
}

static void kr__add_bias(const kr_exec *ex, float *x, const float *b, size_t rows, size_t dim)
{
    (void)ex;
    for (size_t r = 0; r < rows; r++)
        for (size_t i = 0; i < dim; i++)
            x[r * dim + i] += b[i];
}

/* x_i <- e^(x_i - max) / sum_j e^(x_j - max), per row */
static void kr__softmax(const kr_exec *ex, float *x, size_t rows, size_t dim)
{
    (void)ex;
    for (size_t r = 0; r < rows; r++) {
        float *v = x + r * dim;
        float mx = -INFINITY;
        for (size_t i = 0; i < dim; i++)
            if (v[i] > mx)
                mx = v[i];
        double sum = 0.0;
        for (size_t i = 0; i < dim; i++) {
            v[i] = expf(v[i] - mx);
            sum += v[i];
        }
        float inv = (float)(1.0 / sum);
        for (size_t i = 0; i < dim; i++)
            v[i] *= inv;
    }
}

static kr_status kr__store_kv(const kr_exec *ex, const float *src, size_t rows, size_t dim, kr_dtype type,
                              void *dst, kr_err *err)
{
    (void)ex;
    size_t n = rows * dim;
    if (type == KR_DTYPE_F32) {
        memcpy(dst, src, n * sizeof *src);
        return KR_OK;
    }
    if (type == KR_DTYPE_F16) {
        uint16_t *h = dst;
        for (size_t i = 0; i < n; i++)
            h[i] = kr_fp32_to_fp16(src[i]);
        return KR_OK;
    }
    return kr_err_set_local(err, KR_ERR_UNSUPPORTED, "store_kv: type %d not supported", (int)type);
}

const kr_ops kr_cpu_ops_table = {
    .version = KR_OPS_VERSION,
    .struct_size = sizeof(kr_ops),
    .name = "cpu",
    .matmul = kr__matmul,
    .get_rows = kr__get_rows,
    .rms_norm = kr__rms_norm,
    .layer_norm = kr__layer_norm,
    .rope = kr__rope,
    .attention = kr__attention,
    .swiglu = kr__swiglu,
    .gelu = kr__gelu,
    .add = kr__add,
    .add_bias = kr__add_bias,
    .softmax = kr__softmax,
    .store_kv = kr__store_kv,
};

const kr_ops *kr_cpu_ops(void)
{
    return &kr_cpu_ops_table;
}
