/* Model loading: pick the architecture handler, read and check the
 * hyperparameters, validate the file's tensors against the handler's table,
 * build weight views (and fp32 copies of norm/bias vectors). */
#include "model_internal.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernrun/checked.h"
#include "kernrun/log.h"
#include "kernrun/quant.h"
#ifdef KR_HAVE_REGISTRY
#include "kernrun/registry.h"
#endif

#define KR__LOG "model"
/* Bounds on hyperparameters: far above any released model, low enough that
 * products of a few of them cannot overflow 64 bits. */
#define KR__MAX_DIM (1u << 20)      /* n_embd, n_ff, head_dim * n_head */
#define KR__MAX_LAYERS 4096u
#define KR__MAX_HEADS 4096u
#define KR__MAX_VOCAB (1u << 24)
#define KR__MAX_PROBLEMS 4

kr_model_params kr_model_params_default(void)
{
    kr_model_params p = {0};
    return p;
}

/* ---- metadata accessor over the GGUF reader ---- */

static kr_status kr__meta_get_uint(const void *ctx, const char *key, uint64_t *out, kr_err *err)
{
    const kr_gguf *g = ctx;
    if (kr_gguf_find_key(g, key) < 0)
        return KR_ERR_NOT_FOUND;
    return kr_gguf_get_uint(g, key, out, err);
}

static kr_status kr__meta_get_f32(const void *ctx, const char *key, float *out, kr_err *err)
{
    const kr_gguf *g = ctx;
    if (kr_gguf_find_key(g, key) < 0)
        return KR_ERR_NOT_FOUND;
    return kr_gguf_get_f32(g, key, out, err);
}

static kr_status kr__meta_get_str(const void *ctx, const char *key, const char **s, size_t *len, kr_err *err)
{
    const kr_gguf *g = ctx;
    if (kr_gguf_find_key(g, key) < 0)
        return KR_ERR_NOT_FOUND;
    kr_gguf_str str;
    kr_status st = kr_gguf_get_str(g, key, &str, err);
    if (st != KR_OK)
        return st;
    if (str.len > SIZE_MAX)
        return kr_err_set(err, KR_ERR_RANGE, "key '%s': string too long", key);
    *s = str.ptr;
    *len = (size_t)str.len;
    return KR_OK;
}

static kr_status kr__meta_get_bool(const void *ctx, const char *key, bool *out, kr_err *err)
{
    const kr_gguf *g = ctx;
    if (kr_gguf_find_key(g, key) < 0)
        return KR_ERR_NOT_FOUND;
    return kr_gguf_get_bool(g, key, out, err);
}

/* ---- helpers ---- */

static void kr__fmt_shape(char *buf, size_t cap, uint32_t n_dims, const uint64_t *ne)
{
    size_t off = 0;
    int w = snprintf(buf, cap, "[");
    off = w > 0 ? (size_t)w : 0;
    for (uint32_t i = 0; i < n_dims && off < cap; i++) {
        w = snprintf(buf + off, cap - off, "%s%" PRIu64, i ? ", " : "", ne[i]);
        if (w < 0)
            break;
        off += (size_t)w;
    }
    if (off < cap)
        snprintf(buf + off, cap - off, "]");
}

/* Problem collector: keeps the first few messages, counts the rest. */
typedef struct kr__problems {
    char msg[KR_ERR_MSG_MAX];
    size_t len;
    int count;
    kr_status code;
} kr__problems;

static void kr__problem(kr__problems *p, kr_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void kr__problem(kr__problems *p, kr_status code, const char *fmt, ...)
{
    if (p->count == 0)
        p->code = code;
    p->count++;
    if (p->count > KR__MAX_PROBLEMS)
        return;
    if (p->len > 0 && p->len + 2 < sizeof p->msg) {
        memcpy(p->msg + p->len, "; ", 3);
        p->len += 2;
    }
    if (p->len + 1 >= sizeof p->msg)
        return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(p->msg + p->len, sizeof p->msg - p->len, fmt, ap);
    va_end(ap);
    if (w > 0)
        p->len += (size_t)w;
    if (p->len >= sizeof p->msg)
        p->len = sizeof p->msg - 1;
}

static const kr_arch_iface *kr__find_arch(const kr_model_params *mp, const char *name)
{
    for (size_t i = 0; i < mp->n_archs; i++) {
        const kr_arch_iface *a = mp->archs[i];
        if (a && a->name && strcmp(a->name, name) == 0)
            return a;
    }
#ifdef KR_HAVE_REGISTRY
    if (mp->n_archs == 0 && mp->registry) {
        const kr_arch_entry *e = kr_registry_find_arch(mp->registry, name);
        if (e && e->iface_version == KR_ARCH_IFACE_VERSION && e->iface)
            return e->iface;
    }
#endif
    return NULL;
}

static void kr__known_archs(const kr_model_params *mp, char *buf, size_t cap)
{
    size_t off = 0;
    buf[0] = '\0';
#ifdef KR_HAVE_REGISTRY
    if (mp->n_archs == 0 && mp->registry) {
        size_t n = kr_registry_arch_count(mp->registry);
        for (size_t i = 0; i < n && off < cap; i++) {
            kr_arch_ref r;
            if (!kr_registry_arch_at(mp->registry, i, &r))
                continue;
            int w = snprintf(buf + off, cap - off, "%s%s", off ? ", " : "", r.arch->name);
            if (w > 0)
                off += (size_t)w;
        }
        return;
    }
#endif
    for (size_t i = 0; i < mp->n_archs && off < cap; i++) {
        if (!mp->archs[i] || !mp->archs[i]->name)
            continue;
        int w = snprintf(buf + off, cap - off, "%s%s", off ? ", " : "", mp->archs[i]->name);
        if (w > 0)
            off += (size_t)w;
    }
}

static bool kr__bad_float(float x, float lo, float hi)
{
    return !isfinite(x) || !(x > lo) || !(x <= hi);
}

/* Generic hyperparameter checks (all architectures). */
static kr_status kr__check_hparams(const kr_hparams *hp, kr_err *err)
{
#define KR__RANGE(field, lo, hi)                                                                  \
    if ((uint64_t)hp->field + 1 < (uint64_t)(lo) + 1 || hp->field > (hi))                         \
        return kr_err_set(err, KR_ERR_RANGE, "hyperparameter " #field " = %" PRIu32                \
                          " out of range [%" PRIu32 ", %" PRIu32 "]", hp->field, (uint32_t)(lo),   \
                          (uint32_t)(hi));
    KR__RANGE(n_vocab, 1, KR__MAX_VOCAB)
    KR__RANGE(n_embd, 1, KR__MAX_DIM)
    KR__RANGE(n_layer, 1, KR__MAX_LAYERS)
    KR__RANGE(n_head, 1, KR__MAX_HEADS)
    KR__RANGE(n_head_kv, 1, hp->n_head)
    KR__RANGE(head_dim, 1, KR_OPS_MAX_HEAD_DIM)
    KR__RANGE(n_rot, 0, hp->head_dim)
    KR__RANGE(n_ff, 1, KR__MAX_DIM)
    KR__RANGE(n_ctx_train, 0, (1u << 28))
#undef KR__RANGE
    if (hp->n_head % hp->n_head_kv != 0)
        return kr_err_set(err, KR_ERR_RANGE,
                          "n_head_kv = %" PRIu32 " does not divide n_head = %" PRIu32, hp->n_head_kv,
                          hp->n_head);
    if (hp->n_rot % 2 != 0)
        return kr_err_set(err, KR_ERR_RANGE, "rope dimension count %" PRIu32 " is odd", hp->n_rot);
    if ((uint64_t)hp->n_head * hp->head_dim > KR__MAX_DIM)
        return kr_err_set(err, KR_ERR_RANGE, "n_head * head_dim = %" PRIu64 " too large",
                          (uint64_t)hp->n_head * hp->head_dim);
    if (kr__bad_float(hp->norm_eps, 0.0f, 1.0f))
        return kr_err_set(err, KR_ERR_RANGE, "norm epsilon %g must be in (0, 1]", (double)hp->norm_eps);
    if (kr__bad_float(hp->rope_base, 0.0f, 1e12f))
        return kr_err_set(err, KR_ERR_RANGE, "rope freq_base %g must be finite and > 0", (double)hp->rope_base);
    if (kr__bad_float(hp->rope_freq_scale, 0.0f, 1e6f))
        return kr_err_set(err, KR_ERR_RANGE, "rope freq_scale %g must be finite and > 0",
                          (double)hp->rope_freq_scale);
    if (hp->rope_mode != KR_ROPE_NORMAL && hp->rope_mode != KR_ROPE_NEOX)
        return kr_err_set(err, KR_ERR_RANGE, "unknown rope mode %d", (int)hp->rope_mode);
    return KR_OK;
}

/* n_vocab: <arch>.vocab_size, else rows of token_embd.weight, else the
 * tokenizer's token count. */
static kr_status kr__n_vocab(const kr_gguf *g, const char *arch, uint32_t *out, kr_err *err)
{
    char key[128];
    snprintf(key, sizeof key, "%s.vocab_size", arch);
    uint64_t v = 0;
    if (kr_gguf_find_key(g, key) >= 0) {
        kr_status st = kr_gguf_get_uint(g, key, &v, err);
        if (st != KR_OK)
            return st;
    } else {
        const kr_gguf_tensor *t = kr_gguf_find_tensor(g, "token_embd.weight");
        if (t && t->n_dims == 2) {
            v = t->ne[1];
        } else if (kr_gguf_find_key(g, "tokenizer.ggml.tokens") >= 0) {
            kr_status st = kr_gguf_get_arr(g, "tokenizer.ggml.tokens", KR_GGUF_STRING, &v, err);
            if (st != KR_OK)
                return st;
        } else {
            return kr_err_set(err, KR_ERR_FORMAT,
                              "cannot tell the vocabulary size: no %s, token_embd.weight or tokenizer.ggml.tokens",
                              key);
        }
    }
    if (v == 0 || v > KR__MAX_VOCAB)
        return kr_err_set(err, KR_ERR_RANGE, "vocabulary size %" PRIu64 " out of range [1, %u]", v,
                          KR__MAX_VOCAB);
    *out = (uint32_t)v;
    return KR_OK;
}

/* Validate the file's tensors against the table and build the views. */
static kr_status kr__bind_tensors(kr_model *m, kr_err *err)
{
    kr__problems pr = {0};
    int64_t n_file = kr_gguf_n_tensors(m->gguf);
    if (n_file <= 0)
        return kr_err_set(err, KR_ERR_FORMAT, "the file has no tensors (a vocabulary-only GGUF?)");
    bool *used = calloc(n_file > 0 ? (size_t)n_file : 1, sizeof *used);
    if (!used)
        return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
    char s1[128], s2[128];

    for (size_t i = 0; i < m->n_w; i++) {
        const kr_tensor_spec *sp = &m->specs[i];
        kr_weight *w = &m->w[i];
        w->name = sp->name;
        w->n_dims = sp->n_dims;
        for (int d = 0; d < 4; d++)
            w->ne[d] = sp->ne[d] ? sp->ne[d] : 1;
        const kr_gguf_tensor *t = NULL;
        for (int64_t j = 0; j < n_file; j++) {
            const kr_gguf_tensor *c = kr_gguf_tensor_at(m->gguf, j);
            if (c && strcmp(c->name, sp->name) == 0) {
                t = c;
                if (used[j])
                    kr__problem(&pr, KR_ERR_FORMAT, "tensor '%s' listed twice in the table", sp->name);
                used[j] = true;
                break;
            }
        }
        if (!t) {
            if (!(sp->flags & KR_TS_OPTIONAL)) {
                kr__fmt_shape(s1, sizeof s1, sp->n_dims, sp->ne);
                kr__problem(&pr, KR_ERR_NOT_FOUND, "missing tensor '%s' (expected shape %s)", sp->name, s1);
            }
            continue;
        }
        bool shape_ok = true;
        for (int d = 0; d < 4; d++) {
            uint64_t want = sp->ne[d] ? sp->ne[d] : 1;
            uint64_t have = d < (int)t->n_dims ? t->ne[d] : 1;
            if (want != have)
                shape_ok = false;
        }
        if (!shape_ok) {
            kr__fmt_shape(s1, sizeof s1, sp->n_dims, sp->ne);
            kr__fmt_shape(s2, sizeof s2, t->n_dims, t->ne);
            kr__problem(&pr, KR_ERR_FORMAT, "tensor '%s' has shape %s, expected %s", sp->name, s2, s1);
            continue;
        }
        if (!kr_quant_can_dequantize(t->type)) {
            kr__problem(&pr, KR_ERR_UNSUPPORTED, "tensor '%s': type %s not supported", sp->name,
                        kr_dtype_name(t->type));
            continue;
        }
        uint64_t row_bytes;
        if (!kr_dtype_row_size(t->type, t->ne[0], &row_bytes)) {
            kr__problem(&pr, KR_ERR_FORMAT,
                        "tensor '%s': row of %" PRIu64 " elements is not a multiple of the %s block (%zu)",
                        sp->name, t->ne[0], kr_dtype_name(t->type), kr_dtype_block_size(t->type));
            continue;
        }
        w->type = t->type;
        w->row_bytes = row_bytes;
        w->data = t->data;
        uint64_t sum;
        if (!kr_add_overflow_u64(m->weight_bytes, t->size, &sum))
            m->weight_bytes = sum;
    }
    for (int64_t j = 0; j < n_file; j++) {
        if (used[j])
            continue;
        const kr_gguf_tensor *t = kr_gguf_tensor_at(m->gguf, j);
        kr__fmt_shape(s2, sizeof s2, t->n_dims, t->ne);
        kr__problem(&pr, KR_ERR_FORMAT, "unexpected tensor '%s' %s for architecture %s", t->name, s2,
                    m->arch_name);
    }
    free(used);
    if (pr.count > 0) {
        if (pr.count > KR__MAX_PROBLEMS)
            return kr_err_set(err, pr.code, "%s (and %d more problems)", pr.msg, pr.count - KR__MAX_PROBLEMS);
        return kr_err_set(err, pr.code, "%s", pr.msg);
    }

    /* fp32 copies of the small vectors */
    for (size_t i = 0; i < m->n_w; i++) {
        kr_weight *w = &m->w[i];
        if (!(m->specs[i].flags & KR_TS_TO_F32) || !w->data)
            continue;
        uint64_t n = w->ne[0] * w->ne[1] * w->ne[2] * w->ne[3]; /* small: checked by shape vs hparams */
        if (n > KR__MAX_DIM * 16ull)
            return kr_err_set(err, KR_ERR_RANGE, "tensor '%s': %" PRIu64 " elements is too many for a vector",
                              w->name, n);
        m->f32[i] = malloc((size_t)n * sizeof(float));
        if (!m->f32[i])
            return kr_err_set(err, KR_ERR_NOMEM, "out of memory");
        kr_status st = KR_OK;
        for (uint64_t r = 0; r < n / w->ne[0] && st == KR_OK; r++)
            st = kr_dequantize_row(w->type, (const char *)w->data + r * w->row_bytes, m->f32[i] + r * w->ne[0],
                                   (size_t)w->ne[0]);
        if (st != KR_OK)
            return kr_err_set(err, st, "tensor '%s': cannot convert %s to f32", w->name, kr_dtype_name(w->type));
        w->data = m->f32[i];
        w->type = KR_DTYPE_F32;
        w->row_bytes = w->ne[0] * sizeof(float);
    }
    return KR_OK;
}

kr_status kr_model_load(const char *path, const kr_model_params *params, kr_model **out, kr_err *err)
{
    kr_status st;
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_model_load: out is NULL");
    *out = NULL;
    if (!path || !params)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_model_load: path or params is NULL");
    kr_err local;
    kr_err *e = err ? err : &local;

    kr_model *m = calloc(1, sizeof *m);
    if (!m)
        return kr_err_set(err, KR_ERR_NOMEM, "loading %s: out of memory", path);

    kr_gguf_open_opts oo = {.no_mmap = params->no_mmap};
    st = kr_gguf_open(path, &oo, &m->gguf, e);
    if (st != KR_OK)
        goto err_free;

    if (kr_gguf_n_tensors(m->gguf) <= 0) {
        st = kr_err_set(e, KR_ERR_FORMAT, "the file has no tensors (a vocabulary-only GGUF?)");
        goto err_prefix;
    }
    kr_gguf_str an;
    st = kr_gguf_get_str(m->gguf, "general.architecture", &an, e);
    if (st != KR_OK)
        goto err_prefix;
    if (an.len == 0 || an.len >= sizeof m->arch_name || memchr(an.ptr, '\0', (size_t)an.len)) {
        st = kr_err_set(e, KR_ERR_FORMAT, "general.architecture is empty, too long or contains NUL");
        goto err_prefix;
    }
    memcpy(m->arch_name, an.ptr, (size_t)an.len);
    m->arch_name[an.len] = '\0';

    m->arch = kr__find_arch(params, m->arch_name);
    if (!m->arch) {
        char known[256];
        kr__known_archs(params, known, sizeof known);
        st = kr_err_set(e, KR_ERR_UNSUPPORTED, "unknown architecture '%s' (known: %s)", m->arch_name,
                        known[0] ? known : "none");
        goto err_prefix;
    }
    if (m->arch->version != KR_ARCH_IFACE_VERSION || m->arch->struct_size < sizeof(kr_arch_iface) ||
        !m->arch->load_hparams || !m->arch->tensor_table || !m->arch->scratch_size || !m->arch->forward) {
        st = kr_err_set(e, KR_ERR_ABI, "architecture handler '%s': interface version %" PRIu32
                        " size %" PRIu32 " (want %d, %zu) or a NULL slot", m->arch_name, m->arch->version,
                        m->arch->struct_size, KR_ARCH_IFACE_VERSION, sizeof(kr_arch_iface));
        goto err_prefix;
    }
    m->ops = params->ops;
#ifdef KR_HAVE_REGISTRY
    if (!m->ops && params->registry) {
        const kr_arch_entry *oe = kr_registry_find_arch(params->registry, "ops.cpu");
        if (oe && oe->iface_version == KR_OPS_VERSION)
            m->ops = oe->iface;
    }
#endif
    if (!m->ops || m->ops->version != KR_OPS_VERSION || m->ops->struct_size < sizeof(kr_ops)) {
        st = kr_err_set(e, m->ops ? KR_ERR_ABI : KR_ERR_INVALID_ARG,
                        "no usable op table (give kr_model_params.ops, e.g. kr_cpu_ops(), or a registry with the cpu_ops plugin)");
        goto err_prefix;
    }

    st = kr__n_vocab(m->gguf, m->arch_name, &m->hp.n_vocab, e);
    if (st != KR_OK)
        goto err_prefix;
    kr_meta_i meta = {
        .struct_size = sizeof meta,
        .ctx = m->gguf,
        .get_uint = kr__meta_get_uint,
        .get_f32 = kr__meta_get_f32,
        .get_str = kr__meta_get_str,
        .get_bool = kr__meta_get_bool,
    };
    st = m->arch->load_hparams(&meta, &m->hp, e);
    if (st != KR_OK) {
        kr_err_prefix(e, "%s hyperparameters", m->arch_name);
        goto err_prefix;
    }
    st = kr__check_hparams(&m->hp, e);
    if (st != KR_OK) {
        kr_err_prefix(e, "%s hyperparameters", m->arch_name);
        goto err_prefix;
    }

    /* every layer has tensors: don't build a table the file cannot fill */
    if ((int64_t)m->hp.n_layer > kr_gguf_n_tensors(m->gguf)) {
        st = kr_err_set(e, KR_ERR_FORMAT, "block_count %" PRIu32 " but the file holds only %" PRId64 " tensors",
                        m->hp.n_layer, kr_gguf_n_tensors(m->gguf));
        goto err_prefix;
    }
    size_t n = 0;
    st = m->arch->tensor_table(&m->hp, NULL, 0, &n, e);
    if (st != KR_OK)
        goto err_prefix;
    if (n == 0 || n > 1u << 20) {
        st = kr_err_set(e, KR_ERR_INTERNAL, "handler '%s' returned a tensor table of %zu entries", m->arch_name, n);
        goto err_prefix;
    }
    m->n_w = n;
    m->specs = calloc(n, sizeof *m->specs);
    m->w = calloc(n, sizeof *m->w);
    m->f32 = calloc(n, sizeof *m->f32);
    if (!m->specs || !m->w || !m->f32) {
        st = kr_err_set(e, KR_ERR_NOMEM, "out of memory");
        goto err_prefix;
    }
    size_t n2 = 0;
    st = m->arch->tensor_table(&m->hp, m->specs, n, &n2, e);
    if (st != KR_OK)
        goto err_prefix;
    if (n2 != n) {
        st = kr_err_set(e, KR_ERR_INTERNAL, "handler '%s' tensor table size changed", m->arch_name);
        goto err_prefix;
    }
    st = kr__bind_tensors(m, e);
    if (st != KR_OK)
        goto err_prefix;

    KR_LOGI(KR__LOG, "%s: arch %s, %" PRIu32 " layers, n_embd %" PRIu32 ", heads %" PRIu32 "/%" PRIu32
            ", head_dim %" PRIu32 ", n_ff %" PRIu32 ", vocab %" PRIu32 ", %.1f MiB of weights",
            path, m->arch_name, m->hp.n_layer, m->hp.n_embd, m->hp.n_head, m->hp.n_head_kv, m->hp.head_dim,
            m->hp.n_ff, m->hp.n_vocab, (double)m->weight_bytes / (1024.0 * 1024.0));
    *out = m;
    return KR_OK;

err_prefix:
    kr_err_prefix(e, "loading %s", path);
err_free:
    kr_model_free(m);
    return st;
}

void kr_model_free(kr_model *m)
{
    if (!m)
        return;
    if (m->f32)
        for (size_t i = 0; i < m->n_w; i++)
            free(m->f32[i]);
    free(m->f32);
    free(m->w);
    free(m->specs);
    kr_gguf_close(m->gguf);
    free(m);
}

const char *kr_model_arch(const kr_model *m) { return m->arch_name; }
const kr_hparams *kr_model_hparams(const kr_model *m) { return &m->hp; }
int32_t kr_model_n_vocab(const kr_model *m) { return (int32_t)m->hp.n_vocab; }
uint32_t kr_model_n_ctx_train(const kr_model *m) { return m->hp.n_ctx_train; }
const kr_gguf *kr_model_gguf(const kr_model *m) { return m->gguf; }
uint64_t kr_model_weight_bytes(const kr_model *m) { return m->weight_bytes; }

const kr_weight *kr_model_weights(const kr_model *m, size_t *n)
{
    *n = m->n_w;
    return m->w;
}

const kr_weight *kr_model_weight(const kr_model *m, const char *name)
{
    for (size_t i = 0; i < m->n_w; i++)
        if (m->w[i].data && m->w[i].name && strcmp(m->w[i].name, name) == 0)
            return &m->w[i];
    return NULL;
}
