/* `kernrun inspect FILE [--json]`: everything the GGUF reader knows about a
 * file — header, metadata (long arrays summarised), tensors, totals and the
 * architecture's key hyperparameters. Self-contained: parses its own argv. */
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "kernrun/gguf.h"
#include "pipelines.h"

#define ARR_SHOW_TEXT 8   /* array elements shown in text mode */
#define ARR_SHOW_JSON 16  /* array elements listed in JSON ("values") */
#define STR_SHOW_TEXT 120 /* bytes of a string shown in text mode */

static const char g_usage[] =
    "usage: kernrun inspect FILE [--json]\n"
    "\n"
    "Validate a GGUF file and print its version, alignment, data offset, metadata\n"
    "(arrays longer than " "8" " elements are summarised), tensors (name, type, shape,\n"
    "offset, bytes), totals and the architecture's key hyperparameters.\n"
    "\n"
    "  --json   machine-readable output (one JSON object on stdout)\n"
    "\n"
    "Exit status: 0 ok, 1 the file is invalid or unreadable, 2 usage error.\n";

/* Hyperparameter keys shown for the architecture, as "<arch>.<suffix>". */
static const char *const g_hparams[] = {
    "context_length",
    "embedding_length",
    "block_count",
    "feed_forward_length",
    "attention.head_count",
    "attention.head_count_kv",
    "attention.key_length",
    "attention.value_length",
    "attention.layer_norm_rms_epsilon",
    "attention.layer_norm_epsilon",
    "attention.sliding_window",
    "rope.dimension_count",
    "rope.freq_base",
    "rope.scaling.type",
    "rope.scaling.factor",
    "vocab_size",
    "expert_count",
    "expert_used_count",
};

/* ---- UTF-8 aware escaping -------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (n bytes available), or 0 when the
 * bytes there are not valid UTF-8 (overlong, surrogate, > U+10FFFF, cut). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1fu;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0fu;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07u;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* JSON string: quotes, backslash and control characters escaped; valid UTF-8
 * copied; each byte of invalid UTF-8 written as \u00XX (its Latin-1 reading). */
static void json_str(FILE *o, const char *s, uint64_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', o);
    for (uint64_t i = 0; i < n;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            fputc('\\', o);
            fputc(c, o);
            i++;
        } else if (c == '\n') {
            fputs("\\n", o);
            i++;
        } else if (c == '\t') {
            fputs("\\t", o);
            i++;
        } else if (c == '\r') {
            fputs("\\r", o);
            i++;
        } else if (c < 0x20 || c == 0x7f) {
            fprintf(o, "\\u%04x", c);
            i++;
        } else {
            size_t l = utf8_len(p + i, (size_t)(n - i));
            if (l == 0) {
                fprintf(o, "\\u%04x", c);
                i++;
            } else {
                fwrite(p + i, 1, l, o);
                i += l;
            }
        }
    }
    fputc('"', o);
}

static void json_cstr(FILE *o, const char *s) { json_str(o, s, strlen(s)); }

/* Text: printable/UTF-8 as is, everything else as \n, \t or \xNN; at most
 * `max` bytes, then "..." and the total length. */
static void text_str(FILE *o, const char *s, uint64_t n, uint64_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    uint64_t lim = n > max ? max : n;
    fputc('"', o);
    for (uint64_t i = 0; i < lim;) {
        unsigned char c = p[i];
        size_t l = c >= 0x20 && c != 0x7f ? utf8_len(p + i, (size_t)(n - i)) : 0;
        if (c == '"' || c == '\\') {
            fprintf(o, "\\%c", c);
            i++;
        } else if (c == '\n') {
            fputs("\\n", o);
            i++;
        } else if (c == '\t') {
            fputs("\\t", o);
            i++;
        } else if (l == 0) {
            fprintf(o, "\\x%02x", c);
            i++;
        } else {
            fwrite(p + i, 1, l, o);
            i += l;
        }
    }
    fputc('"', o);
    if (n > lim)
        fprintf(o, "... (%" PRIu64 " bytes)", n);
}

/* ---- values --------------------------------------------------------- */

static void print_value(FILE *o, const kr_gguf_value *v, bool json)
{
    switch (v->type) {
    case KR_GGUF_UINT8: case KR_GGUF_UINT16: case KR_GGUF_UINT32: case KR_GGUF_UINT64:
        fprintf(o, "%" PRIu64, v->u);
        break;
    case KR_GGUF_INT8: case KR_GGUF_INT16: case KR_GGUF_INT32: case KR_GGUF_INT64:
        fprintf(o, "%" PRId64, v->i);
        break;
    case KR_GGUF_FLOAT32: case KR_GGUF_FLOAT64:
        if (!isfinite(v->f))
            fputs(json ? "null" : (isnan(v->f) ? "nan" : (v->f > 0 ? "inf" : "-inf")), o);
        else
            fprintf(o, v->type == KR_GGUF_FLOAT32 ? (json ? "%.9g" : "%.7g") : "%.17g", v->f);
        break;
    case KR_GGUF_BOOL:
        fputs(v->b ? "true" : "false", o);
        break;
    case KR_GGUF_STRING:
        if (json)
            json_str(o, v->s.ptr, v->s.len);
        else
            text_str(o, v->s.ptr, v->s.len, STR_SHOW_TEXT);
        break;
    default:
        fputs(json ? "null" : "?", o);
        break;
    }
}

/* Value of entry i (scalar, or the array summary). */
static int print_kv_value(FILE *o, const kr_gguf *g, int64_t i, bool json)
{
    kr_err err;
    kr_gguf_value v;
    kr_gguf_type t = kr_gguf_kv_type(g, i);
    if (t != KR_GGUF_ARRAY) {
        if (kr_gguf_kv_value(g, i, 0, &v, &err) != KR_OK)
            return -1;
        print_value(o, &v, json);
        return 0;
    }
    uint64_t n = kr_gguf_arr_n(g, i);
    uint64_t show = n > (json ? ARR_SHOW_JSON : ARR_SHOW_TEXT) ? (json ? ARR_SHOW_JSON : ARR_SHOW_TEXT) : n;
    fputc('[', o);
    for (uint64_t j = 0; j < show; j++) {
        if (kr_gguf_kv_value(g, i, j, &v, &err) != KR_OK)
            return -1;
        if (j)
            fputs(", ", o);
        if (json || v.type != KR_GGUF_STRING)
            print_value(o, &v, json);
        else
            text_str(o, v.s.ptr, v.s.len, 40);
    }
    if (!json && show < n)
        fputs(", ...", o);
    fputc(']', o);
    return 0;
}

static void shape_str(char *buf, size_t cap, const kr_gguf_tensor *t)
{
    size_t k = 0;
    k += (size_t)snprintf(buf + k, cap - k, "[");
    for (uint32_t d = 0; d < t->n_dims && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%" PRIu64, d ? ", " : "", t->ne[d]);
    if (k < cap)
        snprintf(buf + k, cap - k, "]");
}

static void human_bytes(char *buf, size_t cap, uint64_t b)
{
    const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double x = (double)b;
    int u = 0;
    while (x >= 1024 && u < 4) {
        x /= 1024;
        u++;
    }
    snprintf(buf, cap, u ? "%.2f %s" : "%.0f %s", x, units[u]);
}

/* ---- output ----------------------------------------------------------- */

typedef struct totals {
    uint64_t bytes;  /* sum of tensor sizes */
    uint64_t params; /* sum of element counts */
} totals;

static totals compute_totals(const kr_gguf *g)
{
    totals t = {0, 0};
    for (int64_t i = 0; i < kr_gguf_n_tensors(g); i++) {
        const kr_gguf_tensor *x = kr_gguf_tensor_at(g, i);
        /* the reader checked each product and all sizes lie within the file */
        t.bytes += x->size;
        t.params += x->ne[0] * x->ne[1] * x->ne[2] * x->ne[3];
    }
    return t;
}

/* "<arch>" from general.architecture, or "" when absent. */
static void arch_of(const kr_gguf *g, char *buf, size_t cap)
{
    kr_gguf_str s;
    buf[0] = '\0';
    if (kr_gguf_get_str(g, "general.architecture", &s, NULL) == KR_OK && s.len < cap &&
        !memchr(s.ptr, '\0', (size_t)s.len)) {
        memcpy(buf, s.ptr, (size_t)s.len);
        buf[s.len] = '\0';
    }
}

static int print_text(FILE *o, const char *path, const kr_gguf *g)
{
    char hb[32];
    fprintf(o, "file:         %s\n", path);
    fprintf(o, "GGUF version: %" PRIu32 "\n", kr_gguf_version(g));
    fprintf(o, "alignment:    %" PRIu64 "\n", kr_gguf_alignment(g));
    fprintf(o, "data offset:  %" PRIu64 "\n", kr_gguf_data_offset(g));
    human_bytes(hb, sizeof hb, kr_gguf_file_size(g));
    fprintf(o, "file size:    %" PRIu64 " (%s)\n", kr_gguf_file_size(g), hb);

    fprintf(o, "\nmetadata (%" PRId64 " keys):\n", kr_gguf_n_kv(g));
    for (int64_t i = 0; i < kr_gguf_n_kv(g); i++) {
        kr_gguf_type t = kr_gguf_kv_type(g, i);
        char tname[48];
        if (t == KR_GGUF_ARRAY)
            snprintf(tname, sizeof tname, "%s[%" PRIu64 "]", kr_gguf_type_name(kr_gguf_arr_type(g, i)),
                     kr_gguf_arr_n(g, i));
        else
            snprintf(tname, sizeof tname, "%s", kr_gguf_type_name(t));
        fputs("  ", o);
        const char *key = kr_gguf_key(g, i);
        bool plain = true;
        for (const char *c = key; *c && plain; c++)
            plain = *c > 0x20 && *c < 0x7f && *c != '"';
        if (plain)
            fputs(key, o);
        else
            text_str(o, key, strlen(key), 200);
        fprintf(o, " %s = ", tname);
        if (print_kv_value(o, g, i, false) != 0)
            return -1;
        fputc('\n', o);
    }

    fprintf(o, "\ntensors (%" PRId64 "):\n", kr_gguf_n_tensors(g));
    if (kr_gguf_n_tensors(g) > 0)
        fprintf(o, "  %-40s %-6s %-24s %14s %14s\n", "name", "type", "shape", "offset", "bytes");
    for (int64_t i = 0; i < kr_gguf_n_tensors(g); i++) {
        const kr_gguf_tensor *t = kr_gguf_tensor_at(g, i);
        char shape[128];
        shape_str(shape, sizeof shape, t);
        fprintf(o, "  %-40s %-6s %-24s %14" PRIu64 " %14" PRIu64 "\n", t->name, kr_dtype_name((int)t->type), shape,
                t->offset, t->size);
    }
    totals tt = compute_totals(g);
    human_bytes(hb, sizeof hb, tt.bytes);
    fprintf(o, "\ntotals: %" PRId64 " tensors, %" PRIu64 " bytes (%s), %" PRIu64 " parameters\n",
            kr_gguf_n_tensors(g), tt.bytes, hb, tt.params);

    char arch[64];
    arch_of(g, arch, sizeof arch);
    if (!arch[0]) {
        fprintf(o, "\nhyperparameters: no general.architecture\n");
        return 0;
    }
    fprintf(o, "\nhyperparameters (%s):\n", arch);
    int shown = 0;
    for (size_t h = 0; h < sizeof g_hparams / sizeof g_hparams[0]; h++) {
        char key[160];
        snprintf(key, sizeof key, "%s.%s", arch, g_hparams[h]);
        int64_t i = kr_gguf_find_key(g, key);
        if (i < 0)
            continue;
        fprintf(o, "  %-34s ", g_hparams[h]);
        if (print_kv_value(o, g, i, false) != 0)
            return -1;
        fputc('\n', o);
        shown++;
    }
    uint64_t n_vocab;
    if (kr_gguf_get_arr(g, "tokenizer.ggml.tokens", KR_GGUF_STRING, &n_vocab, NULL) == KR_OK) {
        fprintf(o, "  %-34s %" PRIu64 " (tokenizer.ggml.tokens)\n", "n_vocab", n_vocab);
        shown++;
    }
    if (!shown)
        fprintf(o, "  (none of the usual %s.* keys present)\n", arch);
    return 0;
}

static int print_json(FILE *o, const char *path, const kr_gguf *g)
{
    fputs("{\"file\": ", o);
    json_cstr(o, path);
    fprintf(o, ", \"version\": %" PRIu32 ", \"alignment\": %" PRIu64 ", \"data_offset\": %" PRIu64
               ", \"file_size\": %" PRIu64 ",\n \"metadata\": [",
            kr_gguf_version(g), kr_gguf_alignment(g), kr_gguf_data_offset(g), kr_gguf_file_size(g));
    for (int64_t i = 0; i < kr_gguf_n_kv(g); i++) {
        kr_gguf_type t = kr_gguf_kv_type(g, i);
        fputs(i ? ",\n  {\"key\": " : "\n  {\"key\": ", o);
        json_cstr(o, kr_gguf_key(g, i));
        fprintf(o, ", \"type\": \"%s\"", kr_gguf_type_name(t));
        if (t == KR_GGUF_ARRAY) {
            uint64_t n = kr_gguf_arr_n(g, i);
            fprintf(o, ", \"elem_type\": \"%s\", \"count\": %" PRIu64 ", \"truncated\": %s, \"values\": ",
                    kr_gguf_type_name(kr_gguf_arr_type(g, i)), n, n > ARR_SHOW_JSON ? "true" : "false");
        } else {
            fputs(", \"value\": ", o);
        }
        if (print_kv_value(o, g, i, true) != 0)
            return -1;
        fputc('}', o);
    }
    fputs("],\n \"tensors\": [", o);
    for (int64_t i = 0; i < kr_gguf_n_tensors(g); i++) {
        const kr_gguf_tensor *t = kr_gguf_tensor_at(g, i);
        fputs(i ? ",\n  {\"name\": " : "\n  {\"name\": ", o);
        json_cstr(o, t->name);
        fprintf(o, ", \"type\": \"%s\", \"shape\": [", kr_dtype_name((int)t->type));
        for (uint32_t d = 0; d < t->n_dims; d++)
            fprintf(o, "%s%" PRIu64, d ? ", " : "", t->ne[d]);
        fprintf(o, "], \"offset\": %" PRIu64 ", \"bytes\": %" PRIu64 "}", t->offset, t->size);
    }
    totals tt = compute_totals(g);
    fprintf(o, "],\n \"totals\": {\"tensors\": %" PRId64 ", \"bytes\": %" PRIu64 ", \"params\": %" PRIu64 "},\n",
            kr_gguf_n_tensors(g), tt.bytes, tt.params);
    char arch[64];
    arch_of(g, arch, sizeof arch);
    fputs(" \"architecture\": ", o);
    if (arch[0])
        json_cstr(o, arch);
    else
        fputs("null", o);
    fputs(",\n \"hparams\": {", o);
    int n = 0;
    for (size_t h = 0; arch[0] && h < sizeof g_hparams / sizeof g_hparams[0]; h++) {
        char key[160];
        snprintf(key, sizeof key, "%s.%s", arch, g_hparams[h]);
        int64_t i = kr_gguf_find_key(g, key);
        if (i < 0 || kr_gguf_kv_type(g, i) == KR_GGUF_ARRAY)
            continue;
        fputs(n++ ? ", " : "", o);
        json_cstr(o, g_hparams[h]);
        fputs(": ", o);
        if (print_kv_value(o, g, i, true) != 0)
            return -1;
    }
    uint64_t n_vocab;
    if (kr_gguf_get_arr(g, "tokenizer.ggml.tokens", KR_GGUF_STRING, &n_vocab, NULL) == KR_OK)
        fprintf(o, "%s\"n_vocab\": %" PRIu64, n++ ? ", " : "", n_vocab);
    fputs("}}\n", o);
    return 0;
}

static int run_inspect(kr_app *app, int argc, char **argv)
{
    (void)app;
    const char *path = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = true;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            fputs(g_usage, stdout);
            return 0;
        } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
            fprintf(stderr, "kernrun inspect: unknown option '%s'\n%s", argv[i], g_usage);
            return 2;
        } else if (path) {
            fprintf(stderr, "kernrun inspect: more than one FILE ('%s', '%s')\n%s", path, argv[i], g_usage);
            return 2;
        } else {
            path = argv[i];
        }
    }
    if (!path) {
        fprintf(stderr, "kernrun inspect: missing FILE\n%s", g_usage);
        return 2;
    }
    kr_gguf *g = NULL;
    kr_err err;
    kr_err_clear(&err);
    kr_status st = kr_gguf_open(path, NULL, &g, &err);
    if (st != KR_OK) {
        fprintf(stderr, "kernrun inspect: %s\n", kr_err_msg(&err, st));
        return 1;
    }
    int rc = json ? print_json(stdout, path, g) : print_text(stdout, path, g);
    kr_gguf_close(g);
    if (rc != 0) {
        fprintf(stderr, "kernrun inspect: %s: internal error while printing metadata\n", path);
        return 1;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "kernrun inspect: error writing output\n");
        return 1;
    }
    return 0;
}

const kr_cli_pipeline kr_pipe_inspect = {
    .name = "inspect",
    .summary = "validate a GGUF file and print its metadata, tensors and hyperparameters",
    .usage = g_usage,
    .run = run_inspect,
};
