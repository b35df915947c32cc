/* GGUF v3 writer. Metadata and tensor declarations are kept in memory (small);
 * tensor data is streamed straight to the file, so writing a 7B model needs
 * only a buffer's worth of RAM. */
#include "gguf_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernrun/checked.h"

#define KR__W_IOBUF (1u << 20)

typedef struct kr__wtensor {
    char name[KR__GGUF_MAX_NAME_LEN + 1]; /* NUL-terminated */
    kr_dtype type;
    uint32_t n_dims;                      /* 1..4 */
    uint64_t ne[KR_GGUF_MAX_DIMS];        /* unused dims = 1 */
    uint64_t size;                        /* bytes */
    uint64_t offset;                      /* relative to the data section */
} kr__wtensor;

typedef enum kr__wstate {
    KR__W_DECLARE, /* metadata and tensor declarations */
    KR__W_DATA,    /* header written, streaming tensor data */
    KR__W_DONE,    /* finished: file complete and closed */
    KR__W_FAILED,  /* an I/O error happened; only free() is useful */
} kr__wstate;

struct kr_gguf_writer {
    FILE *f;
    char *path;
    bool remove_on_fail;   /* path is a regular file this writer truncated */
    char *iobuf;           /* (KR__W_IOBUF) stdio buffer */
    kr_err err;            /* last error */
    kr__wstate state;
    uint8_t *meta;         /* (meta_len) encoded key/value pairs */
    size_t meta_len, meta_cap;
    char **keys;           /* (n_kv) copies, for duplicate checks */
    size_t n_kv, keys_cap;
    kr__wtensor *t;        /* (n_t) declared tensors */
    size_t n_t, t_cap;
    uint64_t alignment;
    uint64_t pos;          /* bytes written to the file so far */
    uint64_t data_start;   /* file offset of the data section */
    size_t cur;            /* tensor receiving data */
    uint64_t cur_done;     /* bytes of it written */
};

/* ---- small helpers ---------------------------------------------------- */

static kr_status grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return KR_OK;
    size_t nc = *cap ? *cap : 16, bytes;
    while (nc < need) {
        if (kr_mul_overflow_size(nc, 2, &nc))
            return KR_ERR_OVERFLOW;
    }
    if (kr_mul_overflow_size(nc, elem, &bytes))
        return KR_ERR_OVERFLOW;
    void *np = realloc(*p, bytes);
    if (!np)
        return KR_ERR_NOMEM;
    *p = np;
    *cap = nc;
    return KR_OK;
}

static kr_status meta_put(kr_gguf_writer *w, const void *src, size_t n)
{
    size_t need;
    if (kr_add_overflow_size(w->meta_len, n, &need))
        return kr_err_set(&w->err, KR_ERR_OVERFLOW, "metadata size overflows");
    kr_status st = grow((void **)&w->meta, &w->meta_cap, need, 1);
    if (st)
        return kr_err_set(&w->err, st, "metadata buffer of %zu bytes", need);
    if (n)
        memcpy(w->meta + w->meta_len, src, n);
    w->meta_len = need;
    return KR_OK;
}

static void le32(uint8_t b[4], uint32_t v)
{
    for (int i = 0; i < 4; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}
static void le64(uint8_t b[8], uint64_t v)
{
    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (8 * i));
}

static kr_status meta_u32(kr_gguf_writer *w, uint32_t v)
{
    uint8_t b[4];
    le32(b, v);
    return meta_put(w, b, 4);
}
static kr_status meta_u64(kr_gguf_writer *w, uint64_t v)
{
    uint8_t b[8];
    le64(b, v);
    return meta_put(w, b, 8);
}
static kr_status meta_str(kr_gguf_writer *w, const char *s, size_t n)
{
    kr_status st = meta_u64(w, n);
    return st ? st : meta_put(w, s, n);
}

static kr_status check_declaring(kr_gguf_writer *w, const char *what)
{
    if (!w)
        return KR_ERR_INVALID_ARG;
    if (w->state != KR__W_DECLARE)
        return kr_err_set(&w->err, KR_ERR_STATE, "%s: metadata and tensors must be declared before begin_data", what);
    return KR_OK;
}

/* Validate key and write "key, type"; the caller appends the value. */
static kr_status begin_kv(kr_gguf_writer *w, const char *key, kr_gguf_type type)
{
    kr_status st = check_declaring(w, "set metadata");
    if (st)
        return st;
    if (!key || !key[0])
        return kr_err_set(&w->err, KR_ERR_INVALID_ARG, "metadata key is empty");
    size_t len = strlen(key);
    if (len > KR__GGUF_MAX_KEY_LEN)
        return kr_err_set(&w->err, KR_ERR_INVALID_ARG, "metadata key of %zu bytes exceeds the limit %u", len,
                          KR__GGUF_MAX_KEY_LEN);
    for (size_t i = 0; i < w->n_kv; i++)
        if (strcmp(w->keys[i], key) == 0)
            return kr_err_set(&w->err, KR_ERR_EXISTS, "metadata key '%s' set twice", key);
    if (strcmp(key, "general.alignment") == 0 && type != KR_GGUF_UINT32)
        return kr_err_set(&w->err, KR_ERR_TYPE, "general.alignment must be u32, not %s", kr_gguf_type_name(type));
    if ((st = grow((void **)&w->keys, &w->keys_cap, w->n_kv + 1, sizeof *w->keys)))
        return kr_err_set(&w->err, st, "metadata key table");
    char *copy = strdup(key);
    if (!copy)
        return kr_err_set(&w->err, KR_ERR_NOMEM, "metadata key '%s'", key);
    size_t mark = w->meta_len;
    if ((st = meta_str(w, key, len)) || (st = meta_u32(w, (uint32_t)type))) {
        w->meta_len = mark;
        free(copy);
        return st;
    }
    w->keys[w->n_kv++] = copy;
    return KR_OK;
}

/* Undo the last begin_kv after its value failed to encode. */
static void abort_kv(kr_gguf_writer *w, size_t mark)
{
    w->meta_len = mark;
    free(w->keys[--w->n_kv]);
}

/* ---- open / metadata -------------------------------------------------- */

kr_status kr_gguf_writer_open(const char *path, kr_gguf_writer **out, kr_err *err)
{
    if (!path || !out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_gguf_writer_open: NULL argument");
    *out = NULL;
    kr_gguf_writer *w = calloc(1, sizeof *w);
    if (!w)
        return kr_err_set(err, KR_ERR_NOMEM, "%s: GGUF writer", path);
    w->alignment = KR_GGUF_DEFAULT_ALIGNMENT;
    w->path = strdup(path);
    w->iobuf = malloc(KR__W_IOBUF);
    if (!w->path || !w->iobuf) {
        kr_gguf_writer_free(w);
        return kr_err_set(err, KR_ERR_NOMEM, "%s: GGUF writer", path);
    }
    w->f = fopen(path, "wb");
    if (!w->f) {
        kr_status st = kr_err_set(err, KR_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        free(w->path);
        w->path = NULL; /* nothing to unlink */
        kr_gguf_writer_free(w);
        return st;
    }
    setvbuf(w->f, w->iobuf, _IOFBF, KR__W_IOBUF);
    /* Only a regular file is deleted when writing fails (never /dev/..., a FIFO ...). */
    struct stat sb;
    w->remove_on_fail = fstat(fileno(w->f), &sb) == 0 && S_ISREG(sb.st_mode);
    *out = w;
    return KR_OK;
}

kr_status kr_gguf_writer_set_scalar(kr_gguf_writer *w, const char *key, kr_gguf_type type, const void *v)
{
    uint64_t esz = kr__gguf_type_size(type);
    if (!w)
        return KR_ERR_INVALID_ARG;
    if (esz == 0 || !v)
        return kr_err_set(&w->err, KR_ERR_INVALID_ARG, "key '%s': set_scalar needs a fixed-size type, not %s",
                          key ? key : "(null)", kr_gguf_type_name(type));
    uint8_t b[8];
    switch (type) {
    case KR_GGUF_UINT8: b[0] = *(const uint8_t *)v; break;
    case KR_GGUF_INT8: b[0] = (uint8_t)*(const int8_t *)v; break;
    case KR_GGUF_BOOL: b[0] = *(const bool *)v ? 1 : 0; break;
    case KR_GGUF_UINT16: { uint16_t x = *(const uint16_t *)v; b[0] = (uint8_t)x; b[1] = (uint8_t)(x >> 8); break; }
    case KR_GGUF_INT16: { uint16_t x = (uint16_t)*(const int16_t *)v; b[0] = (uint8_t)x; b[1] = (uint8_t)(x >> 8); break; }
    case KR_GGUF_UINT32: le32(b, *(const uint32_t *)v); break;
    case KR_GGUF_INT32: le32(b, (uint32_t)*(const int32_t *)v); break;
    case KR_GGUF_FLOAT32: { uint32_t x; memcpy(&x, v, 4); le32(b, x); break; }
    case KR_GGUF_UINT64: le64(b, *(const uint64_t *)v); break;
    case KR_GGUF_INT64: le64(b, (uint64_t)*(const int64_t *)v); break;
    case KR_GGUF_FLOAT64: { uint64_t x; memcpy(&x, v, 8); le64(b, x); break; }
    default: return KR_ERR_INTERNAL;
    }
    if (key && type == KR_GGUF_UINT32 && strcmp(key, "general.alignment") == 0) {
        uint32_t a = *(const uint32_t *)v;
        if (!kr_is_pow2_u64(a))
            return kr_err_set(&w->err, KR_ERR_INVALID_ARG, "general.alignment %" PRIu32
                              " is not a non-zero power of two", a);
    }
    size_t mark = w->meta_len;
    kr_status st = begin_kv(w, key, type);
    if (st)
        return st;
    if ((st = meta_put(w, b, (size_t)esz))) {
        abort_kv(w, mark);
        return st;
    }
    if (type == KR_GGUF_UINT32 && strcmp(key, "general.alignment") == 0)
        w->alignment = *(const uint32_t *)v;
    return KR_OK;
}

kr_status kr_gguf_writer_set_u32(kr_gguf_writer *w, const char *key, uint32_t v)
{
    return kr_gguf_writer_set_scalar(w, key, KR_GGUF_UINT32, &v);
}
kr_status kr_gguf_writer_set_i32(kr_gguf_writer *w, const char *key, int32_t v)
{
    return kr_gguf_writer_set_scalar(w, key, KR_GGUF_INT32, &v);
}
kr_status kr_gguf_writer_set_u64(kr_gguf_writer *w, const char *key, uint64_t v)
{
    return kr_gguf_writer_set_scalar(w, key, KR_GGUF_UINT64, &v);
}
kr_status kr_gguf_writer_set_f32(kr_gguf_writer *w, const char *key, float v)
{
    return kr_gguf_writer_set_scalar(w, key, KR_GGUF_FLOAT32, &v);
}
kr_status kr_gguf_writer_set_bool(kr_gguf_writer *w, const char *key, bool v)
{
    return kr_gguf_writer_set_scalar(w, key, KR_GGUF_BOOL, &v);
}

kr_status kr_gguf_writer_set_str(kr_gguf_writer *w, const char *key, const char *v)
{
    if (!w)
        return KR_ERR_INVALID_ARG;
    if (!v)
        return kr_err_set(&w->err, KR_ERR_INVALID_ARG, "key '%s': NULL string", key ? key : "(null)");
    size_t mark = w->meta_len;
    kr_status st = begin_kv(w, key, KR_GGUF_STRING);
    if (st)
        return st;
    if ((st = meta_str(w, v, strlen(v))))
        abort_kv(w, mark);
    return st;
}

kr_status kr_gguf_writer_set_arr(kr_gguf_writer *w, const char *key, kr_gguf_type elem_type, const void *data,
                                 uint64_t n)
{
    if (!w)
        return KR_ERR_INVALID_ARG;
    if (elem_type == KR_GGUF_ARRAY || (unsigned)elem_type >= KR_GGUF_TYPE_COUNT)
        return kr_err_set(&w->err, KR_ERR_INVALID_ARG, "key '%s': invalid array element type %d",
                          key ? key : "(null)", (int)elem_type);
    if (n > 0 && !data)
        return kr_err_set(&w->err, KR_ERR_INVALID_ARG, "key '%s': NULL array data", key ? key : "(null)");
    size_t mark = w->meta_len;
    kr_status st = begin_kv(w, key, KR_GGUF_ARRAY);
    if (st)
        return st;
    if ((st = meta_u32(w, (uint32_t)elem_type)) || (st = meta_u64(w, n)))
        goto err_abort;
    if (elem_type == KR_GGUF_STRING) {
        const char *const *s = data;
        for (uint64_t j = 0; j < n; j++) {
            if (!s[j]) {
                st = kr_err_set(&w->err, KR_ERR_INVALID_ARG, "key '%s': string %" PRIu64 " is NULL", key, j);
                goto err_abort;
            }
            if ((st = meta_str(w, s[j], strlen(s[j]))))
                goto err_abort;
        }
        return KR_OK;
    }
    uint64_t esz = kr__gguf_type_size(elem_type), bytes;
    if (kr_mul_overflow_u64(n, esz, &bytes) || bytes > SIZE_MAX) {
        st = kr_err_set(&w->err, KR_ERR_OVERFLOW, "key '%s': %" PRIu64 " elements overflow", key, n);
        goto err_abort;
    }
    if (elem_type == KR_GGUF_BOOL) {
        const bool *b = data;
        for (uint64_t j = 0; j < n; j++) {
            uint8_t x = b[j] ? 1 : 0;
            if ((st = meta_put(w, &x, 1)))
                goto err_abort;
        }
        return KR_OK;
    }
    /* Encode little-endian element by element (host order may differ). */
    const uint8_t *src = data;
    for (uint64_t j = 0; j < n; j++) {
        uint8_t b[8];
        uint64_t x = 0;
        switch (esz) {
        case 1: x = src[j]; break;
        case 2: { uint16_t y; memcpy(&y, src + 2 * j, 2); x = y; break; }
        case 4: { uint32_t y; memcpy(&y, src + 4 * j, 4); x = y; break; }
        default: memcpy(&x, src + 8 * j, 8); break;
        }
        le64(b, x);
        if ((st = meta_put(w, b, (size_t)esz)))
            goto err_abort;
    }
    return KR_OK;

err_abort:
    abort_kv(w, mark);
    return st;
}

kr_status kr_gguf_writer_copy_kv(kr_gguf_writer *w, const kr_gguf *src, int64_t idx)
{
    if (!w)
        return KR_ERR_INVALID_ARG;
    kr_gguf_type type;
    const uint8_t *raw;
    uint64_t size;
    if (!src || kr__gguf_kv_raw(src, idx, &type, &raw, &size) != KR_OK)
        return kr_err_set(&w->err, KR_ERR_RANGE, "copy_kv: metadata index %" PRId64 " out of range", idx);
    const char *key = kr_gguf_key(src, idx);
    if (type == KR_GGUF_UINT32 && strcmp(key, "general.alignment") == 0)
        return kr_gguf_writer_set_u32(w, key, kr__rd_u32(raw));
    size_t mark = w->meta_len;
    kr_status st = begin_kv(w, key, type);
    if (st)
        return st;
    if (size > SIZE_MAX || (st = meta_put(w, raw, (size_t)size))) {
        abort_kv(w, mark);
        return st ? st : KR_ERR_OVERFLOW;
    }
    return KR_OK;
}

kr_status kr_gguf_writer_add_tensor(kr_gguf_writer *w, const char *name, kr_dtype type, uint32_t n_dims,
                                    const uint64_t *ne)
{
    kr_status st = check_declaring(w, "add_tensor");
    if (st)
        return st;
    if (!name || !name[0])
        return kr_err_set(&w->err, KR_ERR_INVALID_ARG, "tensor name is empty");
    size_t len = strlen(name);
    if (len > KR__GGUF_MAX_NAME_LEN)
        return kr_err_set(&w->err, KR_ERR_INVALID_ARG, "tensor '%.64s...': name of %zu bytes exceeds the limit %u",
                          name, len, KR__GGUF_MAX_NAME_LEN);
    for (size_t i = 0; i < w->n_t; i++)
        if (strcmp(w->t[i].name, name) == 0)
            return kr_err_set(&w->err, KR_ERR_EXISTS, "tensor '%s' declared twice", name);
    if (!kr_dtype_valid((int)type))
        return kr_err_set(&w->err, KR_ERR_INVALID_ARG, "tensor '%s': invalid type %d", name, (int)type);
    if (n_dims < 1 || n_dims > KR_GGUF_MAX_DIMS || !ne)
        return kr_err_set(&w->err, KR_ERR_INVALID_ARG, "tensor '%s': n_dims %" PRIu32 " out of range 1..%d", name,
                          n_dims, KR_GGUF_MAX_DIMS);
    kr__wtensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}};
    memcpy(t.name, name, len + 1);
    for (uint32_t d = 0; d < n_dims; d++) {
        if (ne[d] == 0 || ne[d] > (uint64_t)INT64_MAX)
            return kr_err_set(&w->err, KR_ERR_INVALID_ARG, "tensor '%s': ne[%" PRIu32 "] = %" PRIu64 " out of range",
                              name, d, ne[d]);
        t.ne[d] = ne[d];
    }
    uint64_t row;
    if (!kr_dtype_row_size(type, t.ne[0], &row))
        return kr_err_set(&w->err, KR_ERR_INVALID_ARG,
                          "tensor '%s': row length %" PRIu64 " is not a multiple of the %s block size %zu", name,
                          t.ne[0], kr_dtype_name((int)type), kr_dtype_block_size(type));
    if (kr_mul_overflow_u64(row, t.ne[1], &t.size) || kr_mul3_overflow_u64(t.size, t.ne[2], t.ne[3], &t.size))
        return kr_err_set(&w->err, KR_ERR_OVERFLOW, "tensor '%s': byte size overflows", name);
    if ((st = grow((void **)&w->t, &w->t_cap, w->n_t + 1, sizeof *w->t)))
        return kr_err_set(&w->err, st, "tensor table");
    w->t[w->n_t++] = t;
    return KR_OK;
}

/* ---- data phase ------------------------------------------------------- */

static kr_status fail_io(kr_gguf_writer *w, const char *what)
{
    w->state = KR__W_FAILED;
    return kr_err_set(&w->err, KR_ERR_IO, "%s: %s at offset %" PRIu64 ": %s", w->path, what, w->pos,
                      strerror(errno));
}

static kr_status put(kr_gguf_writer *w, const void *p, size_t n)
{
    if (n && fwrite(p, 1, n, w->f) != n)
        return fail_io(w, "write failed");
    w->pos += n;
    return KR_OK;
}

static kr_status pad_to(kr_gguf_writer *w, uint64_t target)
{
    static const uint8_t zeros[256];
    while (w->pos < target) {
        uint64_t n = target - w->pos;
        kr_status st = put(w, zeros, n > sizeof zeros ? sizeof zeros : (size_t)n);
        if (st)
            return st;
    }
    return KR_OK;
}

/* After the current tensor is complete: pad and move on to the next. */
static kr_status advance(kr_gguf_writer *w)
{
    while (w->cur < w->n_t && w->cur_done == w->t[w->cur].size) {
        uint64_t end = w->data_start + w->t[w->cur].offset + w->t[w->cur].size, next;
        if (kr_align_up_u64(end, w->alignment, &next))
            return kr_err_set(&w->err, KR_ERR_OVERFLOW, "file size overflows");
        kr_status st = pad_to(w, next);
        if (st)
            return st;
        w->cur++;
        w->cur_done = 0;
    }
    return KR_OK;
}

kr_status kr_gguf_writer_begin_data(kr_gguf_writer *w)
{
    kr_status st = check_declaring(w, "begin_data");
    if (st)
        return st;
    uint8_t hdr[24];
    memcpy(hdr, KR__GGUF_MAGIC, 4);
    le32(hdr + 4, 3);
    le64(hdr + 8, w->n_t);
    le64(hdr + 16, w->n_kv);
    w->state = KR__W_DATA;
    if ((st = put(w, hdr, sizeof hdr)) || (st = put(w, w->meta, w->meta_len)))
        return st;
    uint64_t off = 0;
    for (size_t i = 0; i < w->n_t; i++) {
        kr__wtensor *t = &w->t[i];
        uint8_t b[8];
        size_t len = strlen(t->name);
        if (kr_align_up_u64(off, w->alignment, &t->offset) || kr_add_overflow_u64(t->offset, t->size, &off)) {
            w->state = KR__W_FAILED;
            return kr_err_set(&w->err, KR_ERR_OVERFLOW, "tensor '%s': data offset overflows", t->name);
        }
        le64(b, len);
        if ((st = put(w, b, 8)) || (st = put(w, t->name, len)))
            return st;
        le32(b, t->n_dims);
        if ((st = put(w, b, 4)))
            return st;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            le64(b, t->ne[d]);
            if ((st = put(w, b, 8)))
                return st;
        }
        le32(b, (uint32_t)t->type);
        if ((st = put(w, b, 4)))
            return st;
        le64(b, t->offset);
        if ((st = put(w, b, 8)))
            return st;
    }
    if (kr_align_up_u64(w->pos, w->alignment, &w->data_start)) {
        w->state = KR__W_FAILED;
        return kr_err_set(&w->err, KR_ERR_OVERFLOW, "data offset overflows");
    }
    if ((st = pad_to(w, w->data_start)))
        return st;
    w->cur = 0;
    w->cur_done = 0;
    return advance(w);
}

kr_status kr_gguf_writer_write_data(kr_gguf_writer *w, const void *data, size_t n)
{
    if (!w)
        return KR_ERR_INVALID_ARG;
    if (w->state != KR__W_DATA)
        return kr_err_set(&w->err, KR_ERR_STATE, "write_data: call begin_data first (or the writer failed: %s)",
                          w->err.msg);
    const uint8_t *p = data;
    while (n > 0) {
        if (w->cur >= w->n_t)
            return kr_err_set(&w->err, KR_ERR_RANGE, "write_data: %zu bytes more than the declared tensors hold", n);
        uint64_t room = w->t[w->cur].size - w->cur_done;
        size_t k = room < n ? (size_t)room : n;
        kr_status st = put(w, p, k);
        if (st)
            return st;
        p += k;
        n -= k;
        w->cur_done += k;
        if ((st = advance(w)))
            return st;
    }
    return KR_OK;
}

kr_status kr_gguf_writer_finish(kr_gguf_writer *w)
{
    if (!w)
        return KR_ERR_INVALID_ARG;
    kr_status st;
    if (w->state == KR__W_DECLARE && (st = kr_gguf_writer_begin_data(w)))
        return st;
    if (w->state != KR__W_DATA)
        return kr_err_set(&w->err, KR_ERR_STATE, "finish: writer is not writing data (%s)", w->err.msg);
    if (w->cur < w->n_t)
        return kr_err_set(&w->err, KR_ERR_STATE,
                          "finish: tensor '%s' has %" PRIu64 " of %" PRIu64 " bytes (%zu of %zu tensors complete)",
                          w->t[w->cur].name, w->cur_done, w->t[w->cur].size, w->cur, w->n_t);
    FILE *f = w->f;
    w->f = NULL;
    if (fflush(f) != 0 || ferror(f)) {
        fclose(f);
        return fail_io(w, "flush failed");
    }
    if (fclose(f) != 0)
        return fail_io(w, "close failed");
    w->state = KR__W_DONE;
    return KR_OK;
}

const char *kr_gguf_writer_error(const kr_gguf_writer *w)
{
    if (!w)
        return "no writer";
    return w->err.msg[0] ? w->err.msg : kr_status_str(w->err.code);
}

void kr_gguf_writer_free(kr_gguf_writer *w)
{
    if (!w)
        return;
    if (w->f)
        fclose(w->f);
    if (w->state != KR__W_DONE && w->path && w->remove_on_fail)
        unlink(w->path); /* never leave a partial file behind */
    for (size_t i = 0; i < w->n_kv; i++)
        free(w->keys[i]);
    free(w->keys);
    free(w->meta);
    free(w->t);
    free(w->iobuf);
    free(w->path);
    free(w);
}
