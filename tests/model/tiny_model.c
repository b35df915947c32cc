#include "tiny_model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernrun/gguf.h"
#include "kernrun/quant.h"

static uint64_t g_s;
static float tm_rand(void) /* uniform [-1, 1) */
{
    g_s ^= g_s << 13;
    g_s ^= g_s >> 7;
    g_s ^= g_s << 17;
    return (float)((g_s >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

void tm_init(tm_model *m, const char *arch, uint32_t V, uint32_t E, uint32_t L, uint32_t H, uint32_t HKV,
             uint32_t F, uint64_t seed)
{
    memset(m, 0, sizeof *m);
    snprintf(m->arch, sizeof m->arch, "%s", arch);
    m->V = V;
    m->E = E;
    m->L = L;
    m->H = H;
    m->HKV = HKV;
    m->F = F;
    m->ctx = 64;
    m->n_rot = E / H;
    m->eps = 1e-5f;
    m->base = 10000.0f;
    m->rope_scale = 1.0f;
    m->wtype = KR_DTYPE_F32;
    g_s = seed | 1;
}

static void add(tm_model *m, const char *name, uint32_t nd, uint64_t ne0, uint64_t ne1, float scale, float offset)
{
    tm_tensor *t = &m->t[m->nt++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->nd = nd;
    t->ne[0] = ne0;
    t->ne[1] = nd > 1 ? ne1 : 1;
    size_t n = (size_t)t->ne[0] * t->ne[1];
    t->data = malloc(n * sizeof *t->data);
    for (size_t i = 0; i < n; i++)
        t->data[i] = offset + scale * tm_rand();
    if (nd == 2 && m->wtype != KR_DTYPE_F32) { /* round through the file type */
        uint64_t rb;
        kr_dtype_row_size(m->wtype, ne0, &rb);
        void *tmp = malloc(rb);
        for (uint64_t r = 0; r < t->ne[1]; r++) {
            kr_quantize_row(m->wtype, t->data + r * ne0, tmp, ne0);
            kr_dequantize_row(m->wtype, tmp, t->data + r * ne0, ne0);
        }
        free(tmp);
    }
}

void tm_build(tm_model *m, uint64_t seed)
{
    g_s = seed | 1;
    uint32_t D = m->E / m->H, QD = m->H * D, KVD = m->HKV * D;
    float ws = 0.5f / sqrtf((float)m->E);
    char nm[64];
    bool falcon = strcmp(m->arch, "falcon") == 0;
    add(m, "token_embd.weight", 2, m->E, m->V, 1.0f, 0.0f);
    add(m, "output_norm.weight", 1, m->E, 1, 0.2f, 1.0f);
    if (falcon)
        add(m, "output_norm.bias", 1, m->E, 1, 0.1f, 0.0f);
    if (!m->tied)
        add(m, "output.weight", 2, m->E, m->V, ws * 4, 0.0f);
    if (m->rope_freqs)
        add(m, "rope_freqs.weight", 1, m->n_rot / 2, 1, 1.0f, 3.0f);
    for (uint32_t l = 0; l < m->L; l++) {
#define T(sfx, nd, a, b, sc, off) snprintf(nm, sizeof nm, "blk.%u.%s", l, sfx), add(m, nm, nd, a, b, sc, off)
        if (falcon) {
            T("attn_norm.weight", 1, m->E, 1, 0.2f, 1.0f);
            T("attn_norm.bias", 1, m->E, 1, 0.1f, 0.0f);
            if (m->norm2) {
                T("attn_norm_2.weight", 1, m->E, 1, 0.2f, 1.0f);
                T("attn_norm_2.bias", 1, m->E, 1, 0.1f, 0.0f);
            }
            T("attn_qkv.weight", 2, m->E, QD + 2 * KVD, ws * 4, 0.0f);
            T("attn_output.weight", 2, QD, m->E, ws, 0.0f);
            T("ffn_up.weight", 2, m->E, m->F, ws * 4, 0.0f);
            T("ffn_down.weight", 2, m->F, m->E, ws, 0.0f);
        } else {
            T("attn_norm.weight", 1, m->E, 1, 0.2f, 1.0f);
            T("attn_q.weight", 2, m->E, QD, ws * 4, 0.0f);
            T("attn_k.weight", 2, m->E, KVD, ws * 4, 0.0f);
            T("attn_v.weight", 2, m->E, KVD, ws * 4, 0.0f);
            T("attn_output.weight", 2, QD, m->E, ws, 0.0f);
            T("ffn_norm.weight", 1, m->E, 1, 0.2f, 1.0f);
            T("ffn_gate.weight", 2, m->E, m->F, ws * 4, 0.0f);
            T("ffn_up.weight", 2, m->E, m->F, ws * 4, 0.0f);
            T("ffn_down.weight", 2, m->F, m->E, ws, 0.0f);
        }
#undef T
    }
}

void tm_free(tm_model *m)
{
    for (int i = 0; i < m->nt; i++)
        free(m->t[i].data);
    m->nt = 0;
}

const float *tm_get(const tm_model *m, const char *name)
{
    for (int i = 0; i < m->nt; i++)
        if (strcmp(m->t[i].name, name) == 0)
            return m->t[i].data;
    return NULL;
}

static void permute_rows(float *w, uint32_t n_head, uint32_t D, uint64_t in)
{
    float *tmp = malloc((size_t)n_head * D * in * sizeof *tmp);
    for (uint32_t h = 0; h < n_head; h++)
        for (uint32_t i = 0; i < D / 2; i++)
            for (uint32_t j = 0; j < 2; j++)
                memcpy(tmp + ((size_t)h * D + 2 * i + j) * in, w + ((size_t)h * D + j * (D / 2) + i) * in,
                       in * sizeof *tmp);
    memcpy(w, tmp, (size_t)n_head * D * in * sizeof *tmp);
    free(tmp);
}

void tm_permute_qk(tm_model *m)
{
    uint32_t D = m->E / m->H;
    char nm[64];
    for (uint32_t l = 0; l < m->L; l++) {
        snprintf(nm, sizeof nm, "blk.%u.attn_q.weight", l);
        permute_rows((float *)tm_get(m, nm), m->H, D, m->E);
        snprintf(nm, sizeof nm, "blk.%u.attn_k.weight", l);
        permute_rows((float *)tm_get(m, nm), m->HKV, D, m->E);
    }
}

const char *tm_tmp_path(const char *tag)
{
    static char buf[8][256];
    static int slot;
    char *p = buf[slot++ % 8];
    const char *dir = getenv("TMPDIR");
    snprintf(p, 256, "%s/kr-model-test-%ld-%s.gguf", dir ? dir : "/tmp", (long)getpid(), tag);
    return p;
}

#define W_OK_OR_FAIL(expr)            \
    do {                              \
        st = (expr);                  \
        if (st != KR_OK)              \
            goto done;                \
    } while (0)

kr_status tm_write(const tm_model *m, const char *path, const tm_tweak *tw)
{
    static const tm_tweak none = {0};
    if (!tw)
        tw = &none;
    kr_gguf_writer *w = NULL;
    kr_err err;
    kr_status st = kr_gguf_writer_open(path, &w, &err);
    if (st != KR_OK)
        return st;
    char key[128];
    const char *a = m->arch;
    W_OK_OR_FAIL(kr_gguf_writer_set_str(w, "general.architecture", a));
    struct { const char *sfx; uint32_t v; } u32s[] = {
        {"context_length", m->ctx},      {"embedding_length", m->E},
        {"block_count", m->L},           {"feed_forward_length", m->F},
        {"attention.head_count", m->H},  {"attention.head_count_kv", m->HKV},
        {"rope.dimension_count", m->n_rot},
        {"attention.sliding_window", m->window},
    };
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++) {
        if (tw->omit_key && strcmp(tw->omit_key, u32s[i].sfx) == 0)
            continue;
        if (strcmp(u32s[i].sfx, "attention.sliding_window") == 0 && m->window == 0)
            continue;
        snprintf(key, sizeof key, "%s.%s", a, u32s[i].sfx);
        if ((tw->u32_key && strcmp(tw->u32_key, key) == 0) || (tw->f32_key && strcmp(tw->f32_key, key) == 0) ||
            (tw->str_key && strcmp(tw->str_key, key) == 0))
            continue;
        W_OK_OR_FAIL(kr_gguf_writer_set_u32(w, key, u32s[i].v));
    }
    bool falcon = strcmp(a, "falcon") == 0;
    snprintf(key, sizeof key, "%s.attention.%s", a, falcon ? "layer_norm_epsilon" : "layer_norm_rms_epsilon");
    if (!(tw->f32_key && strcmp(tw->f32_key, key) == 0))
        W_OK_OR_FAIL(kr_gguf_writer_set_f32(w, key, m->eps));
    snprintf(key, sizeof key, "%s.rope.freq_base", a);
    if (!(tw->f32_key && strcmp(tw->f32_key, key) == 0))
        W_OK_OR_FAIL(kr_gguf_writer_set_f32(w, key, m->base));
    if (m->rope_scale != 1.0f) {
        snprintf(key, sizeof key, "%s.rope.scaling.type", a);
        if (!(tw->str_key && strcmp(tw->str_key, key) == 0))
            W_OK_OR_FAIL(kr_gguf_writer_set_str(w, key, "linear"));
        snprintf(key, sizeof key, "%s.rope.scaling.factor", a);
        W_OK_OR_FAIL(kr_gguf_writer_set_f32(w, key, m->rope_scale));
    }
    if (tw->u32_key)
        W_OK_OR_FAIL(kr_gguf_writer_set_u32(w, tw->u32_key, tw->u32_val));
    if (tw->f32_key)
        W_OK_OR_FAIL(kr_gguf_writer_set_f32(w, tw->f32_key, tw->f32_val));
    if (tw->str_key)
        W_OK_OR_FAIL(kr_gguf_writer_set_str(w, tw->str_key, tw->str_val));

    /* tensor infos */
    for (int i = 0; i < m->nt; i++) {
        const tm_tensor *t = &m->t[i];
        if (tw->skip && strcmp(tw->skip, t->name) == 0)
            continue;
        uint64_t ne[2] = {t->ne[0], t->ne[1]};
        if (tw->reshape && strcmp(tw->reshape, t->name) == 0)
            ne[0] += 32;
        kr_dtype ty = t->nd == 2 ? m->wtype : KR_DTYPE_F32;
        W_OK_OR_FAIL(kr_gguf_writer_add_tensor(w, t->name, ty, t->nd, ne));
    }
    if (tw->extra) {
        uint64_t ne[1] = {m->E};
        W_OK_OR_FAIL(kr_gguf_writer_add_tensor(w, tw->extra, KR_DTYPE_F32, 1, ne));
    }
    W_OK_OR_FAIL(kr_gguf_writer_begin_data(w));
    for (int i = 0; i < m->nt; i++) {
        const tm_tensor *t = &m->t[i];
        if (tw->skip && strcmp(tw->skip, t->name) == 0)
            continue;
        uint64_t ne0 = t->ne[0];
        bool reshape = tw->reshape && strcmp(tw->reshape, t->name) == 0;
        if (reshape)
            ne0 += 32;
        kr_dtype ty = t->nd == 2 ? m->wtype : KR_DTYPE_F32;
        uint64_t rb;
        kr_dtype_row_size(ty, ne0, &rb);
        void *row = malloc(rb);
        float *src = malloc(ne0 * sizeof *src);
        for (uint64_t r = 0; r < t->ne[1]; r++) {
            for (uint64_t c = 0; c < ne0; c++)
                src[c] = c < t->ne[0] ? t->data[r * t->ne[0] + c] : 0.5f;
            kr_quantize_row(ty, src, row, ne0);
            st = kr_gguf_writer_write_data(w, row, rb);
            if (st != KR_OK)
                break;
        }
        free(row);
        free(src);
        if (st != KR_OK)
            goto done;
    }
    if (tw->extra) {
        float *z = calloc(m->E, sizeof *z);
        st = kr_gguf_writer_write_data(w, z, m->E * sizeof *z);
        free(z);
        if (st != KR_OK)
            goto done;
    }
    st = kr_gguf_writer_finish(w);
done:
    if (st != KR_OK)
        fprintf(stderr, "tm_write: %s\n", kr_gguf_writer_error(w));
    kr_gguf_writer_free(w);
    return st;
}

/* ---- naive forward, double precision ---- */

static void mv(const float *W, uint64_t in, uint64_t out, const double *x, double *y) /* y = W x */
{
    for (uint64_t r = 0; r < out; r++) {
        double s = 0;
        for (uint64_t c = 0; c < in; c++)
            s += (double)W[r * in + c] * x[c];
        y[r] = s;
    }
}

static void rmsn(const double *x, const float *w, uint32_t n, double eps, double *y)
{
    double ss = 0;
    for (uint32_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    double s = 1.0 / sqrt(ss / n + eps);
    for (uint32_t i = 0; i < n; i++)
        y[i] = x[i] * s * w[i];
}

static void lnorm(const double *x, const float *w, const float *b, uint32_t n, double eps, double *y)
{
    double mu = 0, var = 0;
    for (uint32_t i = 0; i < n; i++)
        mu += x[i];
    mu /= n;
    for (uint32_t i = 0; i < n; i++)
        var += (x[i] - mu) * (x[i] - mu);
    var /= n;
    for (uint32_t i = 0; i < n; i++)
        y[i] = (x[i] - mu) / sqrt(var + eps) * w[i] + b[i];
}

static void rope1(double *v, uint32_t D, uint32_t n_rot, bool neox, int pos, double base, double fscale,
                  const float *ff)
{
    for (uint32_t i = 0; i < n_rot / 2; i++) {
        double th = pos * fscale * pow(base, -2.0 * i / n_rot);
        if (ff)
            th /= ff[i];
        uint32_t a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
        double x0 = v[a], x1 = v[b];
        v[a] = x0 * cos(th) - x1 * sin(th);
        v[b] = x0 * sin(th) + x1 * cos(th);
    }
    (void)D;
}

#define NAME(buf, l, sfx) (snprintf(buf, sizeof buf, "blk.%d.%s", l, sfx), buf)

void tm_forward(const tm_model *m, const int32_t *tok, int T, double *logits)
{
    bool falcon = strcmp(m->arch, "falcon") == 0;
    uint32_t E = m->E, D = E / m->H, QD = m->H * D, KVD = m->HKV * D, F = m->F, V = m->V;
    double *x = calloc((size_t)T * E, sizeof *x), *h = malloc(E * sizeof *h), *h2 = malloc(E * sizeof *h2);
    double *q = malloc((size_t)T * QD * sizeof *q), *k = malloc((size_t)T * KVD * sizeof *k);
    double *v = malloc((size_t)T * KVD * sizeof *v), *att = malloc(QD * sizeof *att);
    double *qkv = malloc((QD + 2 * KVD) * sizeof *qkv), *o = malloc(E * sizeof *o), *o2 = malloc(E * sizeof *o2);
    double *g = malloc(F * sizeof *g), *u = malloc(F * sizeof *u), *sc = malloc((size_t)T * sizeof *sc);
    double *hs = malloc((size_t)T * E * sizeof *hs); /* attn_norm outputs (falcon MLP input) */
    char nm[64];
    const float *emb = tm_get(m, "token_embd.weight");
    for (int t = 0; t < T; t++)
        for (uint32_t i = 0; i < E; i++)
            x[(size_t)t * E + i] = emb[(size_t)tok[t] * E + i];
    const float *ff = m->rope_freqs ? tm_get(m, "rope_freqs.weight") : NULL;
    double fscale = 1.0 / m->rope_scale;
    for (uint32_t l = 0; l < m->L; l++) {
        int li = (int)l;
        for (int t = 0; t < T; t++) {
            double *xt = x + (size_t)t * E;
            if (falcon) {
                lnorm(xt, tm_get(m, NAME(nm, li, "attn_norm.weight")), tm_get(m, NAME(nm, li, "attn_norm.bias")), E,
                      m->eps, hs + (size_t)t * E);
                const double *ain = hs + (size_t)t * E;
                if (m->norm2) {
                    lnorm(xt, tm_get(m, NAME(nm, li, "attn_norm_2.weight")),
                          tm_get(m, NAME(nm, li, "attn_norm_2.bias")), E, m->eps, h2);
                    ain = h2;
                }
                mv(tm_get(m, NAME(nm, li, "attn_qkv.weight")), E, QD + 2 * KVD, ain, qkv);
                memcpy(q + (size_t)t * QD, qkv, QD * sizeof *q);
                memcpy(k + (size_t)t * KVD, qkv + QD, KVD * sizeof *k);
                memcpy(v + (size_t)t * KVD, qkv + QD + KVD, KVD * sizeof *v);
            } else {
                rmsn(xt, tm_get(m, NAME(nm, li, "attn_norm.weight")), E, m->eps, h);
                mv(tm_get(m, NAME(nm, li, "attn_q.weight")), E, QD, h, q + (size_t)t * QD);
                mv(tm_get(m, NAME(nm, li, "attn_k.weight")), E, KVD, h, k + (size_t)t * KVD);
                mv(tm_get(m, NAME(nm, li, "attn_v.weight")), E, KVD, h, v + (size_t)t * KVD);
            }
            for (uint32_t hh = 0; hh < m->H; hh++)
                rope1(q + (size_t)t * QD + hh * D, D, m->n_rot, falcon || m->hf_rope, t, m->base, fscale, ff);
            for (uint32_t hh = 0; hh < m->HKV; hh++)
                rope1(k + (size_t)t * KVD + hh * D, D, m->n_rot, falcon || m->hf_rope, t, m->base, fscale, ff);
        }
        double *xnew = malloc((size_t)T * E * sizeof *xnew);
        for (int t = 0; t < T; t++) {
            /* attention for query t over keys j <= t (window) */
            for (uint32_t hh = 0; hh < m->H; hh++) {
                uint32_t hk = hh / (m->H / m->HKV);
                double mx = -INFINITY;
                for (int j = 0; j <= t; j++) {
                    if (m->window && t - j >= (int)m->window) {
                        sc[j] = -INFINITY;
                        continue;
                    }
                    double s = 0;
                    for (uint32_t d = 0; d < D; d++)
                        s += q[(size_t)t * QD + hh * D + d] * k[(size_t)j * KVD + hk * D + d];
                    sc[j] = s / sqrt((double)D);
                    if (sc[j] > mx)
                        mx = sc[j];
                }
                double sum = 0;
                for (int j = 0; j <= t; j++) {
                    sc[j] = sc[j] == -INFINITY ? 0 : exp(sc[j] - mx);
                    sum += sc[j];
                }
                for (uint32_t d = 0; d < D; d++) {
                    double acc = 0;
                    for (int j = 0; j <= t; j++)
                        acc += sc[j] / sum * v[(size_t)j * KVD + hk * D + d];
                    att[hh * D + d] = acc;
                }
            }
            double *xt = x + (size_t)t * E, *xn = xnew + (size_t)t * E;
            mv(tm_get(m, NAME(nm, li, "attn_output.weight")), QD, E, att, o);
            if (falcon) {
                mv(tm_get(m, NAME(nm, li, "ffn_up.weight")), E, F, hs + (size_t)t * E, u);
                for (uint32_t i = 0; i < F; i++)
                    u[i] = 0.5 * u[i] * (1.0 + tanh(sqrt(2.0 / M_PI) * (u[i] + 0.044715 * u[i] * u[i] * u[i])));
                mv(tm_get(m, NAME(nm, li, "ffn_down.weight")), F, E, u, o2);
                for (uint32_t i = 0; i < E; i++)
                    xn[i] = xt[i] + o[i] + o2[i];
            } else {
                for (uint32_t i = 0; i < E; i++)
                    xn[i] = xt[i] + o[i];
                rmsn(xn, tm_get(m, NAME(nm, li, "ffn_norm.weight")), E, m->eps, h);
                mv(tm_get(m, NAME(nm, li, "ffn_gate.weight")), E, F, h, g);
                mv(tm_get(m, NAME(nm, li, "ffn_up.weight")), E, F, h, u);
                for (uint32_t i = 0; i < F; i++)
                    g[i] = g[i] / (1.0 + exp(-g[i])) * u[i];
                mv(tm_get(m, NAME(nm, li, "ffn_down.weight")), F, E, g, o);
                for (uint32_t i = 0; i < E; i++)
                    xn[i] += o[i];
            }
        }
        memcpy(x, xnew, (size_t)T * E * sizeof *x);
        free(xnew);
    }
    const float *outw = m->tied ? emb : tm_get(m, "output.weight");
    for (int t = 0; t < T; t++) {
        if (falcon)
            lnorm(x + (size_t)t * E, tm_get(m, "output_norm.weight"), tm_get(m, "output_norm.bias"), E, m->eps, h);
        else
            rmsn(x + (size_t)t * E, tm_get(m, "output_norm.weight"), E, m->eps, h);
        mv(outw, E, V, h, logits + (size_t)t * V);
    }
    free(x);
    free(h);
    free(h2);
    free(q);
    free(k);
    free(v);
    free(att);
    free(qkv);
    free(o);
    free(o2);
    free(g);
    free(u);
    free(sc);
    free(hs);
}
