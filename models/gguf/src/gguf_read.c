/* GGUF v2/v3 reader: mmap (or caller memory), validate everything up front.
 *
 * Every read is checked against the bytes left; every size computed from the
 * file goes through kernrun/checked.h. Counts read from the file are bounded
 * by the bytes left (each item has a minimum encoded size) before anything is
 * allocated, so no allocation exceeds a small constant times the file size.
 * The data section is never read here: tensor infos are checked against the
 * file length only.
 */
#include "gguf_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernrun/checked.h"

typedef struct kr__kv {
    char *key;              /* NUL-terminated copy (no NUL inside, 1..64 KiB) */
    kr_gguf_type type;      /* value type */
    kr_gguf_type arr_type;  /* element type when type == ARRAY, else KR_GGUF_TYPE_COUNT */
    uint64_t arr_n;         /* element count when type == ARRAY, else 1 */
    const uint8_t *raw;     /* encoded value in the file (after the type field) */
    uint64_t raw_size;      /* bytes of the encoded value */
    const uint8_t *elems;   /* first element: the value itself for scalars/strings */
    const uint8_t **strs;   /* (arr_n) length prefix of each string of a string array */
} kr__kv;

/* Open-addressing hash table from a name to its index in an array (keys,
 * tensors); the names themselves live in that array. */
typedef struct kr__names {
    uint64_t cap;           /* slots (power of two) */
    int64_t *slots;         /* (cap) index + 1, 0 = empty */
} kr__names;

struct kr_gguf {
    const uint8_t *base;    /* (file_size) the whole file */
    uint64_t file_size;
    void *map;              /* mmap'ed region, or NULL */
    void *owned;            /* malloc'ed copy (no_mmap), or NULL */
    uint32_t version;
    uint64_t alignment;
    uint64_t data_offset;   /* file offset of the data section (aligned) */
    int64_t n_kv;
    kr__kv *kv;             /* (n_kv) */
    kr__names kv_names;     /* key -> index into kv */
    int64_t n_tensors;
    kr_gguf_tensor *tensors;      /* (n_tensors) */
    char (*names)[KR__GGUF_MAX_NAME_LEN + 1]; /* (n_tensors) name storage */
    kr__names t_names;      /* name -> index into tensors */
};

/* ---- cursor ---------------------------------------------------------- */

typedef struct kr__cur {
    const uint8_t *base;
    uint64_t size;
    uint64_t pos;
} kr__cur;

static uint64_t cur_left(const kr__cur *c) { return c->size - c->pos; }

static kr_status cur_need(const kr__cur *c, uint64_t n, const char *what, kr_err *err)
{
    if (n > cur_left(c))
        return kr_err_set(err, KR_ERR_FORMAT,
                          "%s: needs %" PRIu64 " bytes at offset %" PRIu64 " but only %" PRIu64
                          " remain (file size %" PRIu64 ")",
                          what, n, c->pos, cur_left(c), c->size);
    return KR_OK;
}

static kr_status cur_u32(kr__cur *c, uint32_t *v, const char *what, kr_err *err)
{
    kr_status st = cur_need(c, 4, what, err);
    if (st)
        return st;
    *v = kr__rd_u32(c->base + c->pos);
    c->pos += 4;
    return KR_OK;
}

static kr_status cur_u64(kr__cur *c, uint64_t *v, const char *what, kr_err *err)
{
    kr_status st = cur_need(c, 8, what, err);
    if (st)
        return st;
    *v = kr__rd_u64(c->base + c->pos);
    c->pos += 8;
    return KR_OK;
}

/* Length-prefixed string; the bytes stay in the file. */
static kr_status cur_str(kr__cur *c, kr_gguf_str *s, const char *what, kr_err *err)
{
    uint64_t len;
    kr_status st = cur_u64(c, &len, what, err);
    if (st)
        return st;
    if (len > cur_left(c))
        return kr_err_set(err, KR_ERR_FORMAT,
                          "%s: length %" PRIu64 " exceeds the %" PRIu64 " bytes left at offset %" PRIu64
                          " (file size %" PRIu64 ")",
                          what, len, cur_left(c), c->pos, c->size);
    s->ptr = (const char *)(c->base + c->pos);
    s->len = len;
    c->pos += len;
    return KR_OK;
}

/* ---- helpers --------------------------------------------------------- */

static const char *const g_type_names[KR_GGUF_TYPE_COUNT] = {
    [KR_GGUF_UINT8] = "u8",     [KR_GGUF_INT8] = "i8",     [KR_GGUF_UINT16] = "u16",
    [KR_GGUF_INT16] = "i16",    [KR_GGUF_UINT32] = "u32",  [KR_GGUF_INT32] = "i32",
    [KR_GGUF_FLOAT32] = "f32",  [KR_GGUF_BOOL] = "bool",   [KR_GGUF_STRING] = "string",
    [KR_GGUF_ARRAY] = "array",  [KR_GGUF_UINT64] = "u64",  [KR_GGUF_INT64] = "i64",
    [KR_GGUF_FLOAT64] = "f64",
};

const char *kr_gguf_type_name(kr_gguf_type t)
{
    if ((unsigned)t < KR_GGUF_TYPE_COUNT)
        return g_type_names[t];
    return "?";
}

uint64_t kr__gguf_type_size(kr_gguf_type t)
{
    switch (t) {
    case KR_GGUF_UINT8: case KR_GGUF_INT8: case KR_GGUF_BOOL: return 1;
    case KR_GGUF_UINT16: case KR_GGUF_INT16: return 2;
    case KR_GGUF_UINT32: case KR_GGUF_INT32: case KR_GGUF_FLOAT32: return 4;
    case KR_GGUF_UINT64: case KR_GGUF_INT64: case KR_GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* FNV-1a over n bytes. */
static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* Slots for a table of n entries: power of two >= 2n, at least 16. The caller
 * has bounded n by the file size, so this cannot overflow on 64-bit. */
static uint64_t hash_cap(uint64_t n)
{
    uint64_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    return cap;
}

/* Slots for n names; false when out of memory. */
static bool names_init(kr__names *t, uint64_t n)
{
    t->cap = hash_cap(n);
    t->slots = calloc((size_t)t->cap, sizeof *t->slots);
    return t->slots != NULL;
}

/* Index of the name key[0..len) or -1; name_at(g, i) gives entry i's name. */
static int64_t names_find(const kr__names *t, const kr_gguf *g, const char *(*name_at)(const kr_gguf *, int64_t),
                          const char *key, size_t len)
{
    if (!t->slots)
        return -1;
    uint64_t mask = t->cap - 1;
    for (uint64_t h = hash_bytes(key, len) & mask;; h = (h + 1) & mask) {
        int64_t v = t->slots[h];
        if (v == 0)
            return -1;
        const char *k = name_at(g, v - 1);
        if (strlen(k) == len && memcmp(k, key, len) == 0)
            return v - 1;
    }
}

/* Record entry idx under name (not already present; the table has room). */
static void names_add(kr__names *t, const char *name, int64_t idx)
{
    uint64_t mask = t->cap - 1;
    uint64_t h = hash_bytes(name, strlen(name)) & mask;
    while (t->slots[h] != 0)
        h = (h + 1) & mask;
    t->slots[h] = idx + 1;
}

/* Print a name from the file for messages: at most 64 bytes, non-printables as '?'. */
static void safe_name(char out[80], const char *p, uint64_t len)
{
    uint64_t n = len > 64 ? 64 : len;
    for (uint64_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        out[i] = (ch >= 0x20 && ch < 0x7f) ? (char)ch : '?';
    }
    if (len > 64) {
        memcpy(out + n, "...", 4);
        return;
    }
    out[n] = '\0';
}

/* ---- metadata -------------------------------------------------------- */

static kr_status parse_bools(const uint8_t *p, uint64_t n, kr_err *err)
{
    for (uint64_t j = 0; j < n; j++)
        if (p[j] > 1) {
            if (n == 1)
                return kr_err_set(err, KR_ERR_FORMAT, "bool value %u is not 0 or 1", p[j]);
            return kr_err_set(err, KR_ERR_FORMAT, "bool element %" PRIu64 " has value %u, not 0 or 1",
                              j, p[j]);
        }
    return KR_OK;
}

static kr_status parse_value(kr__cur *c, kr__kv *kv, kr_err *err)
{
    kr_status st;
    uint64_t start = c->pos;
    kv->arr_type = KR_GGUF_TYPE_COUNT;
    kv->arr_n = 1;
    if (kv->type == KR_GGUF_STRING) {
        kr_gguf_str s;
        if ((st = cur_str(c, &s, "string value", err)))
            return st;
        kv->elems = c->base + start;
    } else if (kv->type == KR_GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        if ((st = cur_u32(c, &et, "array element type", err)))
            return st;
        if (et == KR_GGUF_ARRAY)
            return kr_err_set(err, KR_ERR_FORMAT, "arrays of arrays are not supported");
        if (et >= KR_GGUF_TYPE_COUNT)
            return kr_err_set(err, KR_ERR_FORMAT, "unknown array element type %" PRIu32
                              " (valid: 0..%d)", et, KR_GGUF_TYPE_COUNT - 1);
        if ((st = cur_u64(c, &n, "array count", err)))
            return st;
        kv->arr_type = (kr_gguf_type)et;
        kv->arr_n = n;
        kv->elems = c->base + c->pos;
        if (et == KR_GGUF_STRING) {
            if (n > cur_left(c) / KR__GGUF_MIN_STR_BYTES)
                return kr_err_set(err, KR_ERR_FORMAT,
                                  "array of %" PRIu64 " strings cannot fit in the %" PRIu64
                                  " bytes left (at least 8 bytes each)",
                                  n, cur_left(c));
            if (n > 0) {
                kv->strs = malloc((size_t)n * sizeof *kv->strs);
                if (!kv->strs)
                    return kr_err_set(err, KR_ERR_NOMEM, "array of %" PRIu64 " strings", n);
            }
            for (uint64_t j = 0; j < n; j++) {
                kr_gguf_str s;
                kv->strs[j] = c->base + c->pos;
                if ((st = cur_str(c, &s, "string", err)))
                    return kr_err_prefix(err, "array element %" PRIu64, j);
            }
        } else {
            uint64_t esz = kr__gguf_type_size((kr_gguf_type)et), bytes;
            if (kr_mul_overflow_u64(n, esz, &bytes))
                return kr_err_set(err, KR_ERR_FORMAT,
                                  "array count %" PRIu64 " x element size %" PRIu64 " overflows", n, esz);
            if (bytes > cur_left(c))
                return kr_err_set(err, KR_ERR_FORMAT,
                                  "array of %" PRIu64 " %s (%" PRIu64 " bytes) exceeds the %" PRIu64
                                  " bytes left at offset %" PRIu64,
                                  n, kr_gguf_type_name((kr_gguf_type)et), bytes, cur_left(c), c->pos);
            if (et == KR_GGUF_BOOL && (st = parse_bools(c->base + c->pos, n, err)))
                return st;
            c->pos += bytes;
        }
    } else {
        uint64_t esz = kr__gguf_type_size(kv->type);
        if ((st = cur_need(c, esz, "value", err)))
            return st;
        if (kv->type == KR_GGUF_BOOL && (st = parse_bools(c->base + c->pos, 1, err)))
            return st;
        kv->elems = c->base + c->pos;
        c->pos += esz;
    }
    kv->raw = c->base + start;
    kv->raw_size = c->pos - start;
    return KR_OK;
}

static const char *kv_name(const kr_gguf *g, int64_t i) { return g->kv[i].key; }

static int64_t kv_lookup(const kr_gguf *g, const char *key, size_t len)
{
    return names_find(&g->kv_names, g, kv_name, key, len);
}

static kr_status parse_kvs(kr_gguf *g, kr__cur *c, uint64_t n_kv, kr_err *err)
{
    kr_status st;
    if (n_kv == 0)
        return KR_OK;
    g->kv = calloc((size_t)n_kv, sizeof *g->kv);
    if (!names_init(&g->kv_names, n_kv) || !g->kv)
        return kr_err_set(err, KR_ERR_NOMEM, "metadata table for %" PRIu64 " keys", n_kv);
    for (uint64_t i = 0; i < n_kv; i++) {
        kr__kv *kv = &g->kv[i];
        uint64_t at = c->pos;
        uint64_t len;
        if ((st = cur_u64(c, &len, "key length", err)))
            return kr_err_prefix(err, "metadata key #%" PRIu64, i);
        if (len == 0)
            return kr_err_set(err, KR_ERR_FORMAT, "metadata key #%" PRIu64 " (offset %" PRIu64 "): empty key",
                              i, at);
        if (len > KR__GGUF_MAX_KEY_LEN)
            return kr_err_set(err, KR_ERR_FORMAT,
                              "metadata key #%" PRIu64 " (offset %" PRIu64 "): key length %" PRIu64
                              " exceeds the limit %u",
                              i, at, len, KR__GGUF_MAX_KEY_LEN);
        if (len > cur_left(c))
            return kr_err_set(err, KR_ERR_FORMAT,
                              "metadata key #%" PRIu64 " (offset %" PRIu64 "): key length %" PRIu64
                              " exceeds the %" PRIu64 " bytes left (file size %" PRIu64 ")",
                              i, at, len, cur_left(c), c->size);
        const char *kp = (const char *)(c->base + c->pos);
        char shown[80];
        safe_name(shown, kp, len);
        if (memchr(kp, '\0', (size_t)len))
            return kr_err_set(err, KR_ERR_FORMAT, "metadata key #%" PRIu64 " '%s': key contains a NUL byte",
                              i, shown);
        int64_t dup = kv_lookup(g, kp, (size_t)len);
        if (dup >= 0)
            return kr_err_set(err, KR_ERR_FORMAT,
                              "metadata key #%" PRIu64 " '%s': duplicate of key #%" PRId64, i, shown, dup);
        kv->key = malloc((size_t)len + 1);
        if (!kv->key)
            return kr_err_set(err, KR_ERR_NOMEM, "metadata key #%" PRIu64, i);
        memcpy(kv->key, kp, (size_t)len);
        kv->key[len] = '\0';
        c->pos += len;
        g->n_kv = (int64_t)i + 1; /* from here the entry is owned by g */
        names_add(&g->kv_names, kv->key, (int64_t)i);

        uint32_t type;
        if ((st = cur_u32(c, &type, "value type", err)))
            return kr_err_prefix(err, "metadata key '%s'", shown);
        if (type >= KR_GGUF_TYPE_COUNT)
            return kr_err_set(err, KR_ERR_FORMAT, "metadata key '%s': unknown value type %" PRIu32
                              " (valid: 0..%d)", shown, type, KR_GGUF_TYPE_COUNT - 1);
        kv->type = (kr_gguf_type)type;
        if ((st = parse_value(c, kv, err)))
            return kr_err_prefix(err, "metadata key '%s'", shown);
    }
    return KR_OK;
}

static kr_status check_alignment(kr_gguf *g, kr_err *err)
{
    g->alignment = KR_GGUF_DEFAULT_ALIGNMENT;
    int64_t i = kv_lookup(g, "general.alignment", strlen("general.alignment"));
    if (i < 0)
        return KR_OK;
    const kr__kv *kv = &g->kv[i];
    if (kv->type != KR_GGUF_UINT32)
        return kr_err_set(err, KR_ERR_FORMAT, "general.alignment has type %s, expected u32",
                          kr_gguf_type_name(kv->type));
    uint32_t a = kr__rd_u32(kv->elems);
    if (!kr_is_pow2_u64(a))
        return kr_err_set(err, KR_ERR_FORMAT, "general.alignment %" PRIu32 " is not a non-zero power of two", a);
    g->alignment = a;
    return KR_OK;
}

/* ---- tensor infos ----------------------------------------------------- */

static const char *tensor_name(const kr_gguf *g, int64_t i) { return g->tensors[i].name; }

static int64_t tensor_lookup(const kr_gguf *g, const char *name, size_t len)
{
    return names_find(&g->t_names, g, tensor_name, name, len);
}

static kr_status parse_tensor_info(kr_gguf *g, kr__cur *c, uint64_t i, kr_err *err)
{
    kr_status st;
    kr_gguf_tensor *t = &g->tensors[i];
    kr_gguf_str nm;
    uint64_t at = c->pos;
    if ((st = cur_str(c, &nm, "name", err)))
        return kr_err_prefix(err, "tensor #%" PRIu64, i);
    char shown[80];
    safe_name(shown, nm.ptr, nm.len);
    if (nm.len == 0)
        return kr_err_set(err, KR_ERR_FORMAT, "tensor #%" PRIu64 " (offset %" PRIu64 "): empty name", i, at);
    if (nm.len > KR__GGUF_MAX_NAME_LEN)
        return kr_err_set(err, KR_ERR_FORMAT, "tensor #%" PRIu64 " '%s': name length %" PRIu64
                          " exceeds the limit %u", i, shown, nm.len, KR__GGUF_MAX_NAME_LEN);
    if (memchr(nm.ptr, '\0', (size_t)nm.len))
        return kr_err_set(err, KR_ERR_FORMAT, "tensor #%" PRIu64 " '%s': name contains a NUL byte", i, shown);
    int64_t dup = tensor_lookup(g, nm.ptr, (size_t)nm.len);
    if (dup >= 0)
        return kr_err_set(err, KR_ERR_FORMAT, "tensor #%" PRIu64 " '%s': duplicate name (also tensor #%" PRId64 ")",
                          i, shown, dup);
    memcpy(g->names[i], nm.ptr, (size_t)nm.len);
    g->names[i][nm.len] = '\0';
    t->name = g->names[i];
    names_add(&g->t_names, t->name, (int64_t)i);

    uint32_t n_dims;
    if ((st = cur_u32(c, &n_dims, "n_dims", err)))
        return kr_err_prefix(err, "tensor '%s'", shown);
    if (n_dims < 1 || n_dims > KR_GGUF_MAX_DIMS)
        return kr_err_set(err, KR_ERR_FORMAT, "tensor '%s': n_dims %" PRIu32 " out of range 1..%d",
                          shown, n_dims, KR_GGUF_MAX_DIMS);
    t->n_dims = n_dims;
    for (uint32_t d = 0; d < KR_GGUF_MAX_DIMS; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
        if ((st = cur_u64(c, &t->ne[d], "dimension", err)))
            return kr_err_prefix(err, "tensor '%s'", shown);
        if (t->ne[d] == 0)
            return kr_err_set(err, KR_ERR_FORMAT, "tensor '%s': ne[%" PRIu32 "] is 0", shown, d);
        if (t->ne[d] > (uint64_t)INT64_MAX)
            return kr_err_set(err, KR_ERR_FORMAT, "tensor '%s': ne[%" PRIu32 "] = %" PRId64 " is negative",
                              shown, d, (int64_t)t->ne[d]);
    }
    uint32_t type;
    if ((st = cur_u32(c, &type, "type", err)))
        return kr_err_prefix(err, "tensor '%s'", shown);
    if (!kr_dtype_valid((int)type)) {
        if (type < (uint32_t)KR_DTYPE_COUNT && strcmp(kr_dtype_name((int)type), "?") != 0)
            return kr_err_set(err, KR_ERR_UNSUPPORTED, "tensor '%s': type %" PRIu32 " (%s) is not supported",
                              shown, type, kr_dtype_name((int)type));
        return kr_err_set(err, KR_ERR_FORMAT, "tensor '%s': unknown type id %" PRIu32, shown, type);
    }
    t->type = (kr_dtype)type;
    if ((st = cur_u64(c, &t->offset, "data offset", err)))
        return kr_err_prefix(err, "tensor '%s'", shown);

    uint64_t nel, row_bytes, size;
    if (kr_mul_overflow_u64(t->ne[0], t->ne[1], &nel) || kr_mul3_overflow_u64(nel, t->ne[2], t->ne[3], &nel) ||
        nel > (uint64_t)INT64_MAX)
        return kr_err_set(err, KR_ERR_FORMAT,
                          "tensor '%s': element count %" PRIu64 " x %" PRIu64 " x %" PRIu64 " x %" PRIu64
                          " overflows",
                          shown, t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    size_t bs = kr_dtype_block_size(t->type);
    if (t->ne[0] % bs != 0)
        return kr_err_set(err, KR_ERR_FORMAT,
                          "tensor '%s': row length ne[0] = %" PRIu64 " is not a multiple of the %s block size %zu",
                          shown, t->ne[0], kr_dtype_name((int)t->type), bs);
    if (!kr_dtype_row_size(t->type, t->ne[0], &row_bytes) ||
        kr_mul_overflow_u64(row_bytes, t->ne[1], &size) || kr_mul3_overflow_u64(size, t->ne[2], t->ne[3], &size))
        return kr_err_set(err, KR_ERR_FORMAT,
                          "tensor '%s': byte size of %s [%" PRIu64 ", %" PRIu64 ", %" PRIu64 ", %" PRIu64 "] overflows",
                          shown, kr_dtype_name((int)t->type), t->ne[0], t->ne[1], t->ne[2], t->ne[3]);
    t->size = size;
    return KR_OK;
}

/* Heap sort of tensor indices by offset (qsort has no context argument and
 * the reader keeps no globals). */
static void sift_down(const kr_gguf_tensor *t, int64_t *idx, int64_t root, int64_t n)
{
    for (;;) {
        int64_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && t[idx[child + 1]].offset > t[idx[child]].offset)
            child++;
        if (t[idx[root]].offset >= t[idx[child]].offset)
            return;
        int64_t tmp = idx[root];
        idx[root] = idx[child];
        idx[child] = tmp;
        root = child;
    }
}

static void sort_by_offset(const kr_gguf_tensor *t, int64_t *idx, int64_t n)
{
    for (int64_t start = n / 2; start-- > 0;)
        sift_down(t, idx, start, n);
    for (int64_t end = n - 1; end > 0; end--) {
        int64_t tmp = idx[0];
        idx[0] = idx[end];
        idx[end] = tmp;
        sift_down(t, idx, 0, end);
    }
}

static kr_status check_tensor_data(kr_gguf *g, kr_err *err)
{
    uint64_t data_size = g->file_size > g->data_offset ? g->file_size - g->data_offset : 0;
    if (g->n_tensors > 0 && g->data_offset > g->file_size)
        return kr_err_set(err, KR_ERR_FORMAT,
                          "data section starts at offset %" PRIu64 ", past the end of the file (size %" PRIu64
                          "); the file looks truncated",
                          g->data_offset, g->file_size);
    for (int64_t i = 0; i < g->n_tensors; i++) {
        kr_gguf_tensor *t = &g->tensors[i];
        uint64_t end;
        if (t->offset % g->alignment != 0)
            return kr_err_set(err, KR_ERR_FORMAT,
                              "tensor '%s': offset %" PRIu64 " is not a multiple of the alignment %" PRIu64,
                              t->name, t->offset, g->alignment);
        if (kr_add_overflow_u64(t->offset, t->size, &end))
            return kr_err_set(err, KR_ERR_FORMAT, "tensor '%s': offset %" PRIu64 " + size %" PRIu64 " overflows",
                              t->name, t->offset, t->size);
        if (end > data_size)
            return kr_err_set(err, KR_ERR_FORMAT,
                              "tensor '%s': offset %" PRIu64 " + size %" PRIu64 " past end of data (size %" PRIu64
                              ", file size %" PRIu64 "); the file looks truncated",
                              t->name, t->offset, t->size, data_size, g->file_size);
        t->data = g->base + g->data_offset + t->offset;
    }
    if (g->n_tensors < 2)
        return KR_OK;
    int64_t *idx = malloc((size_t)g->n_tensors * sizeof *idx);
    if (!idx)
        return kr_err_set(err, KR_ERR_NOMEM, "sorting %" PRId64 " tensors", g->n_tensors);
    for (int64_t i = 0; i < g->n_tensors; i++)
        idx[i] = i;
    sort_by_offset(g->tensors, idx, g->n_tensors);
    kr_status st = KR_OK;
    for (int64_t k = 0; k + 1 < g->n_tensors; k++) {
        const kr_gguf_tensor *a = &g->tensors[idx[k]], *b = &g->tensors[idx[k + 1]];
        if (a->offset + a->size > b->offset) { /* no overflow: checked above */
            st = kr_err_set(err, KR_ERR_FORMAT,
                            "tensor '%s' (offset %" PRIu64 ", size %" PRIu64 ") overlaps tensor '%s' (offset %" PRIu64 ")",
                            a->name, a->offset, a->size, b->name, b->offset);
            break;
        }
    }
    free(idx);
    return st;
}

/* ---- open / close ----------------------------------------------------- */

static kr_status check_header(kr__cur *c, uint32_t *version, kr_err *err)
{
    if (c->size == 0)
        return kr_err_set(err, KR_ERR_FORMAT, "file is empty");
    if (c->size < 4)
        return kr_err_set(err, KR_ERR_FORMAT, "file too small for the GGUF magic (size %" PRIu64 ")", c->size);
    if (memcmp(c->base, KR__GGUF_MAGIC, 4) != 0) {
        uint32_t m = kr__rd_u32(c->base);
        /* Magics of the pre-GGUF formats (written as little-endian u32). */
        if (m == 0x67676d6cu || m == 0x67676d66u || m == 0x67676a74u)
            return kr_err_set(err, KR_ERR_UNSUPPORTED,
                              "legacy GGML/GGMF/GGJT file (magic 0x%08" PRIx32 "); convert it to GGUF", m);
        /* Common non-model downloads. */
        const char *hint = "";
        static const char lfs[] = "version https://git-lfs";
        if (c->size >= sizeof lfs - 1 && memcmp(c->base, lfs, sizeof lfs - 1) == 0)
            hint = " (this is a Git LFS pointer file: fetch the real file with git lfs pull)";
        else if (c->base[0] == '<' || (c->size >= 4 && memcmp(c->base, "\xef\xbb\xbf<", 4) == 0))
            hint = " (this looks like an HTML/XML page: a failed download?)";
        else if (c->base[0] == '{' || c->base[0] == '[')
            hint = " (this looks like JSON: a tokenizer/config file, not a model?)";
        return kr_err_set(err, KR_ERR_FORMAT,
                          "bad magic %02x %02x %02x %02x (expected \"GGUF\" = 47 47 55 46); not a GGUF file%s",
                          c->base[0], c->base[1], c->base[2], c->base[3], hint);
    }
    c->pos = 4;
    uint32_t v;
    kr_status st = cur_u32(c, &v, "header version", err);
    if (st)
        return st;
    if (v == 0)
        return kr_err_set(err, KR_ERR_FORMAT, "GGUF version 0 is invalid");
    if (v == 1)
        return kr_err_set(err, KR_ERR_UNSUPPORTED, "GGUF v1 is no longer supported; convert the file");
    if ((v & 0xffffu) == 0) {
        uint32_t sw = __builtin_bswap32(v);
        if (sw >= 1 && sw <= 0xffu)
            return kr_err_set(err, KR_ERR_UNSUPPORTED,
                              "version field 0x%08" PRIx32 " looks byte-swapped: this is a big-endian GGUF v%" PRIu32
                              " file; only little-endian files are supported",
                              v, sw);
    }
    if (v > KR__GGUF_VERSION_MAX)
        return kr_err_set(err, KR_ERR_UNSUPPORTED,
                          "GGUF version %" PRIu32 " is newer than supported (%u..%u); update kernrun", v,
                          KR__GGUF_VERSION_MIN, KR__GGUF_VERSION_MAX);
    *version = v;
    return KR_OK;
}

static kr_status parse(kr_gguf *g, kr_err *err)
{
    kr_status st;
    kr__cur c = {.base = g->base, .size = g->file_size, .pos = 0};
    if ((st = check_header(&c, &g->version, err)))
        return st;
    uint64_t n_tensors, n_kv;
    if ((st = cur_u64(&c, &n_tensors, "header tensor count", err)) ||
        (st = cur_u64(&c, &n_kv, "header metadata count", err)))
        return st;
    if (n_kv > cur_left(&c) / KR__GGUF_MIN_KV_BYTES)
        return kr_err_set(err, KR_ERR_FORMAT,
                          "metadata count %" PRIu64 " cannot fit in the %" PRIu64
                          " bytes left (each key/value takes at least %u bytes)",
                          n_kv, cur_left(&c), KR__GGUF_MIN_KV_BYTES);
    if (n_tensors > cur_left(&c) / KR__GGUF_MIN_TINFO_BYTES)
        return kr_err_set(err, KR_ERR_FORMAT,
                          "tensor count %" PRIu64 " cannot fit in the %" PRIu64
                          " bytes left (each tensor info takes at least %u bytes)",
                          n_tensors, cur_left(&c), KR__GGUF_MIN_TINFO_BYTES);
    if ((st = parse_kvs(g, &c, n_kv, err)))
        return st;
    if ((st = check_alignment(g, err)))
        return st;
    if (n_tensors > cur_left(&c) / KR__GGUF_MIN_TINFO_BYTES)
        return kr_err_set(err, KR_ERR_FORMAT,
                          "tensor count %" PRIu64 " cannot fit in the %" PRIu64
                          " bytes left after the metadata (each tensor info takes at least %u bytes)",
                          n_tensors, cur_left(&c), KR__GGUF_MIN_TINFO_BYTES);
    if (n_tensors > 0) {
        g->tensors = calloc((size_t)n_tensors, sizeof *g->tensors);
        g->names = calloc((size_t)n_tensors, sizeof *g->names);
        if (!names_init(&g->t_names, n_tensors) || !g->tensors || !g->names)
            return kr_err_set(err, KR_ERR_NOMEM, "tensor table for %" PRIu64 " tensors", n_tensors);
        for (uint64_t i = 0; i < n_tensors; i++) {
            g->n_tensors = (int64_t)i; /* only fully parsed infos are visible */
            if ((st = parse_tensor_info(g, &c, i, err)))
                return st;
        }
        g->n_tensors = (int64_t)n_tensors;
    }
    if (kr_align_up_u64(c.pos, g->alignment, &g->data_offset))
        return kr_err_set(err, KR_ERR_FORMAT, "data offset %" PRIu64 " aligned to %" PRIu64 " overflows", c.pos,
                          g->alignment);
    return check_tensor_data(g, err);
}

void kr_gguf_close(kr_gguf *g)
{
    if (!g)
        return;
    for (int64_t i = 0; g->kv && i < g->n_kv; i++) {
        free(g->kv[i].key);
        free(g->kv[i].strs);
    }
    free(g->kv);
    free(g->kv_names.slots);
    free(g->tensors);
    free(g->names);
    free(g->t_names.slots);
    if (g->map)
        munmap(g->map, (size_t)g->file_size);
    free(g->owned);
    free(g);
}

static kr_status open_common(kr_gguf *g, kr_gguf **out, kr_err *err)
{
    kr_status st = parse(g, err);
    if (st) {
        kr_gguf_close(g);
        return st;
    }
    *out = g;
    return KR_OK;
}

kr_status kr_gguf_open_memory(const void *data, size_t size, kr_gguf **out, kr_err *err)
{
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_gguf_open_memory: out is NULL");
    *out = NULL;
    if (!data && size > 0)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_gguf_open_memory: data is NULL");
    kr_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return kr_err_set(err, KR_ERR_NOMEM, "GGUF reader");
    g->base = data;
    g->file_size = size;
    return open_common(g, out, err);
}

kr_status kr_gguf_open(const char *path, const kr_gguf_open_opts *opts, kr_gguf **out, kr_err *err)
{
    kr_status st;
    if (!out || !path)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_gguf_open: NULL argument");
    *out = NULL;
    bool no_mmap = opts && opts->no_mmap;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kr_err_set(err, errno == ENOENT ? KR_ERR_NOT_FOUND : KR_ERR_IO, "%s: cannot open: %s", path,
                          strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        st = kr_err_set(err, KR_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
        goto err_close_fd;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = kr_err_set(err, KR_ERR_IO, "%s: not a regular file", path);
        goto err_close_fd;
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        st = kr_err_set(err, KR_ERR_LIMIT, "%s: file size %lld exceeds the address space", path,
                        (long long)sb.st_size);
        goto err_close_fd;
    }
    kr_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        st = kr_err_set(err, KR_ERR_NOMEM, "%s: GGUF reader", path);
        goto err_close_fd;
    }
    g->file_size = (uint64_t)sb.st_size;
    if (g->file_size > 0 && !no_mmap) {
        void *m = mmap(NULL, (size_t)g->file_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            st = kr_err_set(err, KR_ERR_IO, "%s: mmap of %" PRIu64 " bytes failed: %s", path, g->file_size,
                            strerror(errno));
            goto err_free_g;
        }
        g->map = m;
        g->base = m;
    } else if (g->file_size > 0) {
        g->owned = malloc((size_t)g->file_size);
        if (!g->owned) {
            st = kr_err_set(err, KR_ERR_NOMEM, "%s: reading %" PRIu64 " bytes", path, g->file_size);
            goto err_free_g;
        }
        uint64_t got = 0;
        while (got < g->file_size) {
            ssize_t r = read(fd, (char *)g->owned + got, (size_t)(g->file_size - got));
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0) {
                st = kr_err_set(err, KR_ERR_IO, "%s: read failed at %" PRIu64 " of %" PRIu64 " bytes: %s", path,
                                got, g->file_size, r < 0 ? strerror(errno) : "unexpected end of file");
                goto err_free_g;
            }
            got += (uint64_t)r;
        }
        g->base = g->owned;
    }
    close(fd);
    st = open_common(g, out, err);
    if (st)
        return kr_err_prefix(err, "%s", path);
    return KR_OK;

err_free_g:
    kr_gguf_close(g);
err_close_fd:
    close(fd);
    return st;
}

/* ---- accessors ------------------------------------------------------- */

uint32_t kr_gguf_version(const kr_gguf *g) { return g ? g->version : 0; }
uint64_t kr_gguf_alignment(const kr_gguf *g) { return g ? g->alignment : 0; }
uint64_t kr_gguf_data_offset(const kr_gguf *g) { return g ? g->data_offset : 0; }
uint64_t kr_gguf_file_size(const kr_gguf *g) { return g ? g->file_size : 0; }
int64_t kr_gguf_n_kv(const kr_gguf *g) { return g ? g->n_kv : 0; }
int64_t kr_gguf_n_tensors(const kr_gguf *g) { return g ? g->n_tensors : 0; }

int64_t kr_gguf_find_key(const kr_gguf *g, const char *key)
{
    if (!g || !key)
        return -1;
    return kv_lookup(g, key, strlen(key));
}

static const kr__kv *kv_at(const kr_gguf *g, int64_t i)
{
    if (!g || i < 0 || i >= g->n_kv)
        return NULL;
    return &g->kv[i];
}

const char *kr_gguf_key(const kr_gguf *g, int64_t i)
{
    const kr__kv *kv = kv_at(g, i);
    return kv ? kv->key : NULL;
}

kr_gguf_type kr_gguf_kv_type(const kr_gguf *g, int64_t i)
{
    const kr__kv *kv = kv_at(g, i);
    return kv ? kv->type : KR_GGUF_TYPE_COUNT;
}

kr_gguf_type kr_gguf_arr_type(const kr_gguf *g, int64_t i)
{
    const kr__kv *kv = kv_at(g, i);
    return kv && kv->type == KR_GGUF_ARRAY ? kv->arr_type : KR_GGUF_TYPE_COUNT;
}

uint64_t kr_gguf_arr_n(const kr_gguf *g, int64_t i)
{
    const kr__kv *kv = kv_at(g, i);
    return kv && kv->type == KR_GGUF_ARRAY ? kv->arr_n : 0;
}

kr_status kr__gguf_kv_raw(const kr_gguf *g, int64_t i, kr_gguf_type *type, const uint8_t **ptr, uint64_t *size)
{
    const kr__kv *kv = kv_at(g, i);
    if (!kv)
        return KR_ERR_RANGE;
    *type = kv->type;
    *ptr = kv->raw;
    *size = kv->raw_size;
    return KR_OK;
}

/* Decode element idx of entry kv (the value itself when not an array). */
static void decode(const kr__kv *kv, uint64_t idx, kr_gguf_value *out)
{
    kr_gguf_type t = kv->type == KR_GGUF_ARRAY ? kv->arr_type : kv->type;
    memset(out, 0, sizeof *out);
    out->type = t;
    if (t == KR_GGUF_STRING) {
        const uint8_t *p = kv->type == KR_GGUF_ARRAY ? kv->strs[idx] : kv->elems;
        out->s.len = kr__rd_u64(p);
        out->s.ptr = (const char *)p + 8;
        return;
    }
    const uint8_t *p = kv->elems + idx * kr__gguf_type_size(t); /* in bounds: checked at open */
    switch (t) {
    case KR_GGUF_UINT8: out->u = p[0]; break;
    case KR_GGUF_INT8: out->i = (int8_t)p[0]; break;
    case KR_GGUF_UINT16: out->u = (uint16_t)(p[0] | p[1] << 8); break;
    case KR_GGUF_INT16: out->i = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
    case KR_GGUF_UINT32: out->u = kr__rd_u32(p); break;
    case KR_GGUF_INT32: out->i = (int32_t)kr__rd_u32(p); break;
    case KR_GGUF_UINT64: out->u = kr__rd_u64(p); break;
    case KR_GGUF_INT64: out->i = (int64_t)kr__rd_u64(p); break;
    case KR_GGUF_BOOL: out->b = p[0] != 0; break;
    case KR_GGUF_FLOAT32: {
        uint32_t b = kr__rd_u32(p);
        float f;
        memcpy(&f, &b, 4);
        out->f = f;
        break;
    }
    case KR_GGUF_FLOAT64: {
        uint64_t b = kr__rd_u64(p);
        memcpy(&out->f, &b, 8);
        break;
    }
    default: break;
    }
}

kr_status kr_gguf_kv_value(const kr_gguf *g, int64_t i, uint64_t idx, kr_gguf_value *out, kr_err *err)
{
    const kr__kv *kv = kv_at(g, i);
    if (!kv || !out)
        return kr_err_set(err, KR_ERR_RANGE, "metadata index %" PRId64 " out of range (%" PRId64 " keys)", i,
                          g ? g->n_kv : 0);
    if (idx >= kv->arr_n)
        return kr_err_set(err, KR_ERR_RANGE, "key '%s': element %" PRIu64 " out of range (%" PRIu64 " elements)",
                          kv->key, idx, kv->arr_n);
    decode(kv, idx, out);
    return KR_OK;
}

/* Find key and check its type; on success *kvp is set. */
static kr_status get_typed(const kr_gguf *g, const char *key, kr_gguf_type want, const kr__kv **kvp, kr_err *err)
{
    int64_t i = kr_gguf_find_key(g, key);
    if (i < 0)
        return kr_err_set(err, KR_ERR_NOT_FOUND, "key '%s' not found", key ? key : "(null)");
    const kr__kv *kv = &g->kv[i];
    if (kv->type != want)
        return kr_err_set(err, KR_ERR_TYPE, "key '%s': expected %s, found %s", key, kr_gguf_type_name(want),
                          kr_gguf_type_name(kv->type));
    *kvp = kv;
    return KR_OK;
}

#define KR__GETTER(fn, ctype, gtype, field)                                                 \
    kr_status fn(const kr_gguf *g, const char *key, ctype *out, kr_err *err)                \
    {                                                                                       \
        const kr__kv *kv;                                                                   \
        kr_status st = get_typed(g, key, gtype, &kv, err);                                  \
        if (st)                                                                             \
            return st;                                                                      \
        kr_gguf_value v;                                                                    \
        decode(kv, 0, &v);                                                                  \
        *out = (ctype)v.field;                                                              \
        return KR_OK;                                                                       \
    }

KR__GETTER(kr_gguf_get_u32, uint32_t, KR_GGUF_UINT32, u)
KR__GETTER(kr_gguf_get_i32, int32_t, KR_GGUF_INT32, i)
KR__GETTER(kr_gguf_get_u64, uint64_t, KR_GGUF_UINT64, u)
KR__GETTER(kr_gguf_get_i64, int64_t, KR_GGUF_INT64, i)
KR__GETTER(kr_gguf_get_f32, float, KR_GGUF_FLOAT32, f)
KR__GETTER(kr_gguf_get_f64, double, KR_GGUF_FLOAT64, f)
KR__GETTER(kr_gguf_get_bool, bool, KR_GGUF_BOOL, b)
#undef KR__GETTER

kr_status kr_gguf_get_str(const kr_gguf *g, const char *key, kr_gguf_str *out, kr_err *err)
{
    const kr__kv *kv;
    kr_status st = get_typed(g, key, KR_GGUF_STRING, &kv, err);
    if (st)
        return st;
    kr_gguf_value v;
    decode(kv, 0, &v);
    *out = v.s;
    return KR_OK;
}

kr_status kr_gguf_get_uint(const kr_gguf *g, const char *key, uint64_t *out, kr_err *err)
{
    int64_t i = kr_gguf_find_key(g, key);
    if (i < 0)
        return kr_err_set(err, KR_ERR_NOT_FOUND, "key '%s' not found", key ? key : "(null)");
    const kr__kv *kv = &g->kv[i];
    kr_gguf_value v;
    switch (kv->type) {
    case KR_GGUF_UINT8: case KR_GGUF_UINT16: case KR_GGUF_UINT32: case KR_GGUF_UINT64:
        decode(kv, 0, &v);
        *out = v.u;
        return KR_OK;
    case KR_GGUF_INT8: case KR_GGUF_INT16: case KR_GGUF_INT32: case KR_GGUF_INT64:
        decode(kv, 0, &v);
        if (v.i < 0)
            return kr_err_set(err, KR_ERR_RANGE, "key '%s': value %" PRId64 " is negative", key, v.i);
        *out = (uint64_t)v.i;
        return KR_OK;
    default:
        return kr_err_set(err, KR_ERR_TYPE, "key '%s': expected an integer, found %s", key,
                          kr_gguf_type_name(kv->type));
    }
}

static kr_status get_arr_kv(const kr_gguf *g, const char *key, kr_gguf_type elem_type, const kr__kv **kvp,
                            kr_err *err)
{
    kr_status st = get_typed(g, key, KR_GGUF_ARRAY, kvp, err);
    if (st)
        return st;
    if ((*kvp)->arr_type != elem_type)
        return kr_err_set(err, KR_ERR_TYPE, "key '%s': expected array of %s, found array of %s", key,
                          kr_gguf_type_name(elem_type), kr_gguf_type_name((*kvp)->arr_type));
    return KR_OK;
}

kr_status kr_gguf_get_arr(const kr_gguf *g, const char *key, kr_gguf_type elem_type, uint64_t *n, kr_err *err)
{
    const kr__kv *kv;
    kr_status st = get_arr_kv(g, key, elem_type, &kv, err);
    if (st)
        return st;
    *n = kv->arr_n;
    return KR_OK;
}

kr_status kr_gguf_arr_str(const kr_gguf *g, const char *key, uint64_t idx, kr_gguf_str *out, kr_err *err)
{
    const kr__kv *kv;
    kr_status st = get_arr_kv(g, key, KR_GGUF_STRING, &kv, err);
    if (st)
        return st;
    if (idx >= kv->arr_n)
        return kr_err_set(err, KR_ERR_RANGE, "key '%s': index %" PRIu64 " out of range (%" PRIu64 " strings)",
                          key, idx, kv->arr_n);
    kr_gguf_value v;
    decode(kv, idx, &v);
    *out = v.s;
    return KR_OK;
}

kr_status kr_gguf_arr_data(const kr_gguf *g, const char *key, kr_gguf_type elem_type, const void **data,
                           uint64_t *n, kr_err *err)
{
    if (elem_type == KR_GGUF_STRING || kr__gguf_type_size(elem_type) == 0)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "key '%s': arr_data needs a numeric element type, not %s",
                          key ? key : "(null)", kr_gguf_type_name(elem_type));
    const kr__kv *kv;
    kr_status st = get_arr_kv(g, key, elem_type, &kv, err);
    if (st)
        return st;
    *data = kv->elems;
    *n = kv->arr_n;
    return KR_OK;
}

const kr_gguf_tensor *kr_gguf_tensor_at(const kr_gguf *g, int64_t i)
{
    if (!g || i < 0 || i >= g->n_tensors)
        return NULL;
    return &g->tensors[i];
}

const kr_gguf_tensor *kr_gguf_find_tensor(const kr_gguf *g, const char *name)
{
    if (!g || !name)
        return NULL;
    int64_t i = tensor_lookup(g, name, strlen(name));
    return i < 0 ? NULL : &g->tensors[i];
}
