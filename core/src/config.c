/* Configuration: INI (inih) validated against registered key tables, env
 * overrides, typed getters. See kernrun/config.h. */
#include "kernrun/config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "kernrun/checked.h"

#define KR__CFG_MAX_FILE (4u << 20) /* bytes; a config is small */
#define KR__CFG_MAX_NAME 128        /* section / key length */

typedef struct cfg_entry {
    char *section;
    char *key;
    char *value;
    char *origin;                  /* "file:12", "env KERNRUN_X", "--flag" */
    const kr_config_key *def;      /* NULL for free-form plugin.* keys */
} cfg_entry;

struct kr_config {
    const kr_config_key **keys;    /* (n_keys,) registered keys, not owned */
    size_t n_keys, cap_keys;
    cfg_entry *entries;            /* (n_entries,) values set */
    size_t n_entries, cap_entries;
};

static const char *const g_backend_choices[] = {"auto", "cpu", "cuda", NULL};
static const char *const g_log_choices[] = {"error", "warn", "warning", "info", "debug", "trace", NULL};
static const char *const g_weights_choices[] = {"native", "f16", NULL};

static const kr_config_key g_runtime_keys[] = {
    {.section = "runtime", .key = "backend", .type = KR_CONFIG_ENUM, .def = "auto",
     .choices = g_backend_choices, .help = "compute backend: auto (CUDA if usable, else CPU), cpu or cuda"},
    {.section = "runtime", .key = "device", .type = KR_CONFIG_INT, .def = "0", .imin = 0, .imax = 1023,
     .help = "CUDA device ordinal"},
    {.section = "runtime", .key = "plugin_path", .type = KR_CONFIG_STRING, .def = NULL,
     .help = "colon-separated plugin directories, searched after the built-in ones"},
    {.section = "runtime", .key = "cache_dir", .type = KR_CONFIG_PATH, .def = NULL,
     .help = "JIT cubin cache directory (default $XDG_CACHE_HOME/kernrun or ~/.cache/kernrun)"},
    {.section = "runtime", .key = "log_level", .type = KR_CONFIG_ENUM, .def = "warn", .choices = g_log_choices,
     .help = "log level: error, warn, info, debug, trace"},
    {.section = "runtime", .key = "weights", .type = KR_CONFIG_ENUM, .def = "native", .choices = g_weights_choices,
     .help = "CUDA forward pass weight storage: native (as in the file) or f16 (every matrix converted to fp16 "
             "at load; docs/PREFILL.md)"},
};

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void entry_free(cfg_entry *e)
{
    free(e->section);
    free(e->key);
    free(e->value);
    free(e->origin);
}

static const kr_config_key *find_key(const kr_config *cfg, const char *section, const char *key)
{
    for (size_t i = 0; i < cfg->n_keys; i++)
        if (strcmp(cfg->keys[i]->section, section) == 0 && strcmp(cfg->keys[i]->key, key) == 0)
            return cfg->keys[i];
    return NULL;
}

static bool section_known(const kr_config *cfg, const char *section)
{
    for (size_t i = 0; i < cfg->n_keys; i++)
        if (strcmp(cfg->keys[i]->section, section) == 0)
            return true;
    return false;
}

static bool section_free_form(const char *section) { return strncmp(section, "plugin.", 7) == 0 && section[7]; }

static cfg_entry *find_entry(const kr_config *cfg, const char *section, const char *key)
{
    for (size_t i = 0; i < cfg->n_entries; i++)
        if (strcmp(cfg->entries[i].section, section) == 0 && strcmp(cfg->entries[i].key, key) == 0)
            return &cfg->entries[i];
    return NULL;
}

static const char *type_name(kr_config_type t)
{
    switch (t) {
    case KR_CONFIG_STRING: return "string";
    case KR_CONFIG_INT: return "integer";
    case KR_CONFIG_BOOL: return "boolean";
    case KR_CONFIG_FLOAT: return "number";
    case KR_CONFIG_ENUM: return "choice";
    case KR_CONFIG_PATH: return "path";
    }
    return "?";
}

static kr_status parse_int(const char *v, int64_t *out)
{
    if (!*v)
        return KR_ERR_FORMAT;
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (*end != '\0' || isspace((unsigned char)v[0]))
        return KR_ERR_FORMAT;
    if (errno == ERANGE)
        return KR_ERR_RANGE;
    *out = (int64_t)x;
    return KR_OK;
}

static kr_status parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return KR_OK;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return KR_OK;
        }
    }
    return KR_ERR_FORMAT;
}

static kr_status parse_float(const char *v, double *out)
{
    if (!*v || isspace((unsigned char)v[0]))
        return KR_ERR_FORMAT;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (*end != '\0')
        return KR_ERR_FORMAT;
    if (errno == ERANGE || !isfinite(x))
        return KR_ERR_RANGE;
    *out = x;
    return KR_OK;
}

/* Check `value` against key k. Message (no location) in err. */
static kr_status validate_value(const kr_config_key *k, const char *value, kr_err *err)
{
    switch (k->type) {
    case KR_CONFIG_STRING:
    case KR_CONFIG_PATH:
        break;
    case KR_CONFIG_INT: {
        int64_t x;
        kr_status st = parse_int(value, &x);
        if (st != KR_OK)
            return kr_err_set(err, KR_ERR_CONFIG, "[%s] %s: '%s' is not %s integer", k->section, k->key, value,
                              st == KR_ERR_RANGE ? "a 64-bit" : "an");
        if (k->imin < k->imax && (x < k->imin || x > k->imax))
            return kr_err_set(err, KR_ERR_CONFIG, "[%s] %s: %lld is out of range [%lld, %lld]", k->section, k->key,
                              (long long)x, (long long)k->imin, (long long)k->imax);
        break;
    }
    case KR_CONFIG_BOOL: {
        bool b;
        if (parse_bool(value, &b) != KR_OK)
            return kr_err_set(err, KR_ERR_CONFIG, "[%s] %s: '%s' is not a boolean (true/false, yes/no, on/off, 1/0)",
                              k->section, k->key, value);
        break;
    }
    case KR_CONFIG_FLOAT: {
        double x;
        if (parse_float(value, &x) != KR_OK)
            return kr_err_set(err, KR_ERR_CONFIG, "[%s] %s: '%s' is not a finite number", k->section, k->key, value);
        if (k->fmin < k->fmax && (x < k->fmin || x > k->fmax))
            return kr_err_set(err, KR_ERR_CONFIG, "[%s] %s: %g is out of range [%g, %g]", k->section, k->key, x,
                              k->fmin, k->fmax);
        break;
    }
    case KR_CONFIG_ENUM: {
        bool ok = false;
        for (const char *const *c = k->choices; c && *c; c++)
            if (strcasecmp(*c, value) == 0)
                ok = true;
        if (!ok) {
            char list[512];
            size_t off = 0;
            list[0] = '\0';
            for (const char *const *c = k->choices; c && *c && off < sizeof list; c++) {
                int n = snprintf(list + off, sizeof list - off, "%s%s", c == k->choices ? "" : ", ", *c);
                if (n < 0)
                    break;
                off += (size_t)n;
            }
            return kr_err_set(err, KR_ERR_CONFIG, "[%s] %s: '%s' is not one of: %s", k->section, k->key, value, list);
        }
        break;
    }
    default:
        return kr_err_set(err, KR_ERR_CONFIG, "[%s] %s: key has unknown type %d", k->section, k->key, (int)k->type);
    }
    if (k->validate) {
        kr_err verr;
        kr_err_clear(&verr);
        if (k->validate(value, &verr) != KR_OK)
            return kr_err_set(err, KR_ERR_CONFIG, "[%s] %s: '%s': %s", k->section, k->key, value,
                              verr.msg[0] ? verr.msg : "rejected by the key's validator");
    }
    return KR_OK;
}

static kr_status add_key_ptr(kr_config *cfg, const kr_config_key *k, kr_err *err)
{
    if (cfg->n_keys == cfg->cap_keys) {
        size_t ncap = cfg->cap_keys ? cfg->cap_keys * 2 : 32, bytes;
        if (kr_mul_overflow_size(ncap, sizeof *cfg->keys, &bytes))
            return kr_err_set(err, KR_ERR_OVERFLOW, "config: too many keys");
        const kr_config_key **p = realloc(cfg->keys, bytes);
        if (!p)
            return kr_err_set(err, KR_ERR_NOMEM, "config: out of memory");
        cfg->keys = p;
        cfg->cap_keys = ncap;
    }
    cfg->keys[cfg->n_keys++] = k;
    return KR_OK;
}

static bool valid_name(const char *s)
{
    if (!s || !*s || strlen(s) > KR__CFG_MAX_NAME)
        return false;
    for (const char *c = s; *c; c++)
        if (!isalnum((unsigned char)*c) && *c != '_' && *c != '.' && *c != '-')
            return false;
    return true;
}

kr_status kr_config_add_keys(kr_config *cfg, const kr_config_key *keys, size_t n, kr_err *err)
{
    if (!cfg || (n && !keys))
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_config_add_keys: NULL argument");
    for (size_t i = 0; i < n; i++) {
        const kr_config_key *k = &keys[i];
        if (!valid_name(k->section) || !valid_name(k->key))
            return kr_err_set(err, KR_ERR_INVALID_ARG, "config key #%zu: section/key must be [A-Za-z0-9_.-]{1,%d}",
                              i, KR__CFG_MAX_NAME);
        if ((int)k->type < KR_CONFIG_STRING || k->type > KR_CONFIG_PATH)
            return kr_err_set(err, KR_ERR_INVALID_ARG, "config key [%s] %s: unknown type %d", k->section, k->key,
                              (int)k->type);
        if (k->type == KR_CONFIG_ENUM && (!k->choices || !k->choices[0]))
            return kr_err_set(err, KR_ERR_INVALID_ARG, "config key [%s] %s: enum without choices", k->section, k->key);
        if (find_key(cfg, k->section, k->key))
            return kr_err_set(err, KR_ERR_EXISTS, "config key [%s] %s is already registered", k->section, k->key);
        for (size_t j = 0; j < i; j++)
            if (strcmp(keys[j].section, k->section) == 0 && strcmp(keys[j].key, k->key) == 0)
                return kr_err_set(err, KR_ERR_EXISTS, "config key [%s] %s appears twice in the table", k->section,
                                  k->key);
        if (k->def) {
            kr_status st = validate_value(k, k->def, err);
            if (st != KR_OK) {
                kr_err_prefix(err, "default value of a registered key");
                if (err)
                    err->code = KR_ERR_INVALID_ARG;
                return KR_ERR_INVALID_ARG;
            }
        }
    }
    /* Free-form values already set for these keys must now validate. */
    for (size_t i = 0; i < n; i++) {
        cfg_entry *e = find_entry(cfg, keys[i].section, keys[i].key);
        if (e) {
            kr_status st = validate_value(&keys[i], e->value, err);
            if (st != KR_OK)
                return kr_err_prefix(err, "%s", e->origin);
        }
    }
    size_t first = cfg->n_keys;
    for (size_t i = 0; i < n; i++) {
        kr_status st = add_key_ptr(cfg, &keys[i], err);
        if (st != KR_OK) {
            cfg->n_keys = first;
            return st;
        }
    }
    for (size_t i = 0; i < n; i++) {
        cfg_entry *e = find_entry(cfg, keys[i].section, keys[i].key);
        if (e)
            e->def = &keys[i];
    }
    return KR_OK;
}

kr_status kr_config_create(kr_config **out, kr_err *err)
{
    if (!out)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_config_create: out is NULL");
    kr_config *cfg = calloc(1, sizeof *cfg);
    if (!cfg)
        return kr_err_set(err, KR_ERR_NOMEM, "config: out of memory");
    kr_status st = kr_config_add_keys(cfg, g_runtime_keys, sizeof g_runtime_keys / sizeof g_runtime_keys[0], err);
    if (st != KR_OK) {
        kr_config_free(cfg);
        return st;
    }
    *out = cfg;
    return KR_OK;
}

void kr_config_free(kr_config *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->n_entries; i++)
        entry_free(&cfg->entries[i]);
    free(cfg->entries);
    free(cfg->keys);
    free(cfg);
}

/* Store (section,key)=value, replacing an existing value. Takes nothing
 * over: copies all strings. */
static kr_status store(kr_config *cfg, const char *section, const char *key, const char *value, const char *origin,
                       const kr_config_key *def, kr_err *err)
{
    char *v = dup_str(value), *o = dup_str(origin);
    if (!v || !o)
        goto err_free_strings;
    cfg_entry *e = find_entry(cfg, section, key);
    if (e) {
        free(e->value);
        free(e->origin);
        e->value = v;
        e->origin = o;
        e->def = def;
        return KR_OK;
    }
    if (cfg->n_entries == cfg->cap_entries) {
        size_t ncap = cfg->cap_entries ? cfg->cap_entries * 2 : 16, bytes;
        if (kr_mul_overflow_size(ncap, sizeof *cfg->entries, &bytes))
            goto err_free_strings;
        cfg_entry *p = realloc(cfg->entries, bytes);
        if (!p)
            goto err_free_strings;
        cfg->entries = p;
        cfg->cap_entries = ncap;
    }
    char *s = dup_str(section), *k = dup_str(key);
    if (!s || !k) {
        free(s);
        free(k);
        goto err_free_strings;
    }
    cfg->entries[cfg->n_entries++] = (cfg_entry){.section = s, .key = k, .value = v, .origin = o, .def = def};
    return KR_OK;

err_free_strings:
    free(v);
    free(o);
    return kr_err_set(err, KR_ERR_NOMEM, "config: out of memory");
}

/* ---- INI parsing ---- */

typedef struct staged {
    char section[KR__CFG_MAX_NAME + 1];
    char key[KR__CFG_MAX_NAME + 1];
    char *value;
    int line;
    const kr_config_key *def;
} staged;

typedef struct parse_ctx {
    const kr_config *cfg;
    const char *name;          /* file name for messages */
    const char *text;          /* whole input */
    size_t len, pos;           /* bytes, read position */
    int line;                  /* line number of the line last handed to inih */
    int err_line;              /* line of the first error we found (0 = none) */
    kr_err err;                /* its message */
    staged *items;             /* (n_items,) accepted values */
    size_t n_items, cap_items;
} parse_ctx;

static void ctx_error(parse_ctx *c, kr_status code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void ctx_error(parse_ctx *c, kr_status code, const char *fmt, ...)
{
    if (c->err_line)
        return; /* keep the first */
    va_list ap;
    va_start(ap, fmt);
    kr_err_setv(&c->err, code, fmt, ap);
    va_end(ap);
    c->err_line = c->line;
}

/* inih reader: hand out one line at a time, tracking the line number. */
static char *reader(char *str, int num, void *stream)
{
    parse_ctx *c = stream;
    if (c->pos >= c->len || num < 4)
        return NULL;
    c->line++;
    const char *start = c->text + c->pos;
    const char *nl = memchr(start, '\n', c->len - c->pos);
    size_t n = nl ? (size_t)(nl - start) + 1 : c->len - c->pos;
    c->pos += n;
    if (memchr(start, '\0', n)) {
        ctx_error(c, KR_ERR_CONFIG, "NUL byte in line");
        str[0] = '\n';
        str[1] = '\0';
        return str;
    }
    if (n > (size_t)num - 1) {
        ctx_error(c, KR_ERR_CONFIG, "line longer than %d characters", num - 3);
        str[0] = '\n';
        str[1] = '\0';
        return str;
    }
    if (n > 1 && (start[0] == ' ' || start[0] == '\t') && strspn(start, " \t\r\n") < n) {
        /* inih would glue an indented line onto the previous value */
        ctx_error(c, KR_ERR_CONFIG, "indented line (multi-line values are not supported)");
        str[0] = '\n';
        str[1] = '\0';
        return str;
    }
    memcpy(str, start, n);
    str[n] = '\0';
    return str;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
    parse_ctx *c = user;
    if (c->err_line)
        return 1; /* already failed; skip quietly */
    if (!section[0]) {
        ctx_error(c, KR_ERR_CONFIG, "key '%s' outside of any [section]", name);
        return 0;
    }
    if (strlen(section) > KR__CFG_MAX_NAME || strlen(name) > KR__CFG_MAX_NAME) {
        ctx_error(c, KR_ERR_CONFIG, "section or key name longer than %d characters", KR__CFG_MAX_NAME);
        return 0;
    }
    if (!value)
        value = "";
    const kr_config_key *k = find_key(c->cfg, section, name);
    if (!k) {
        if (section_free_form(section)) {
            /* accepted as text */
        } else if (section_known(c->cfg, section)) {
            char list[512];
            size_t off = 0;
            list[0] = '\0';
            for (size_t i = 0; i < c->cfg->n_keys && off < sizeof list; i++) {
                if (strcmp(c->cfg->keys[i]->section, section) != 0)
                    continue;
                int n = snprintf(list + off, sizeof list - off, "%s%s", off ? ", " : "", c->cfg->keys[i]->key);
                if (n < 0)
                    break;
                off += (size_t)n;
            }
            ctx_error(c, KR_ERR_CONFIG, "unknown key '%s' in section [%s] (known keys: %s)", name, section, list);
            return 0;
        } else {
            ctx_error(c, KR_ERR_CONFIG, "unknown section [%s] (key '%s')", section, name);
            return 0;
        }
    } else {
        kr_err verr;
        kr_err_clear(&verr);
        if (validate_value(k, value, &verr) != KR_OK) {
            ctx_error(c, KR_ERR_CONFIG, "%s", verr.msg);
            return 0;
        }
    }
    for (size_t i = 0; i < c->n_items; i++) {
        if (strcmp(c->items[i].section, section) == 0 && strcmp(c->items[i].key, name) == 0) {
            ctx_error(c, KR_ERR_CONFIG, "duplicate key '%s' in [%s] (first set on line %d)", name, section,
                      c->items[i].line);
            return 0;
        }
    }
    if (c->n_items == c->cap_items) {
        size_t ncap = c->cap_items ? c->cap_items * 2 : 16, bytes;
        staged *p = NULL;
        if (!kr_mul_overflow_size(ncap, sizeof *p, &bytes))
            p = realloc(c->items, bytes);
        if (!p) {
            ctx_error(c, KR_ERR_NOMEM, "out of memory");
            return 0;
        }
        c->items = p;
        c->cap_items = ncap;
    }
    staged *s = &c->items[c->n_items];
    snprintf(s->section, sizeof s->section, "%s", section);
    snprintf(s->key, sizeof s->key, "%s", name);
    s->value = dup_str(value);
    if (!s->value) {
        ctx_error(c, KR_ERR_NOMEM, "out of memory");
        return 0;
    }
    s->line = c->line;
    s->def = k;
    c->n_items++;
    return 1;
}

static kr_status parse_text(kr_config *cfg, const char *text, size_t len, const char *name, kr_err *err)
{
    parse_ctx c = {.cfg = cfg, .name = name, .text = text, .len = len};
    kr_err_clear(&c.err);
    kr_status st = KR_OK;
    int rc = ini_parse_stream(reader, &c, handler, &c);
    if (rc < 0) {
        st = kr_err_set(err, rc == -2 ? KR_ERR_NOMEM : KR_ERR_IO, "%s: could not be parsed (inih error %d)", name, rc);
        goto out_free_items;
    }
    if (rc > 0 || c.err_line) {
        if (c.err_line && (rc == 0 || c.err_line <= rc))
            st = kr_err_set(err, c.err.code == KR_ERR_NOMEM ? KR_ERR_NOMEM : KR_ERR_CONFIG, "%s:%d: %s", name,
                            c.err_line, c.err.msg);
        else
            st = kr_err_set(err, KR_ERR_CONFIG, "%s:%d: syntax error (expected '[section]', 'key = value' or a comment)",
                            name, rc);
        goto out_free_items;
    }
    for (size_t i = 0; i < c.n_items; i++) {
        char origin[KR__CFG_MAX_NAME + 4096];
        snprintf(origin, sizeof origin, "%s:%d", name, c.items[i].line);
        st = store(cfg, c.items[i].section, c.items[i].key, c.items[i].value, origin, c.items[i].def, err);
        if (st != KR_OK)
            goto out_free_items;
    }

out_free_items:
    for (size_t i = 0; i < c.n_items; i++)
        free(c.items[i].value);
    free(c.items);
    return st;
}

kr_status kr_config_load_string(kr_config *cfg, const char *text, const char *name, kr_err *err)
{
    if (!cfg || !text)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_config_load_string: NULL argument");
    return parse_text(cfg, text, strlen(text), name ? name : "<string>", err);
}

kr_status kr_config_load_file(kr_config *cfg, const char *path, kr_err *err)
{
    if (!cfg || !path)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_config_load_file: NULL argument");
    kr_status st;
    FILE *f = fopen(path, "rb");
    if (!f)
        return kr_err_set(err, KR_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        st = kr_err_set(err, KR_ERR_IO, "%s: not a regular file", path);
        goto out_close;
    }
    if ((uint64_t)sb.st_size > KR__CFG_MAX_FILE) {
        st = kr_err_set(err, KR_ERR_LIMIT, "%s: %lld bytes is too large for a config file (max %u)", path,
                        (long long)sb.st_size, KR__CFG_MAX_FILE);
        goto out_close;
    }
    size_t cap = (size_t)sb.st_size + 1;
    char *buf = malloc(cap);
    if (!buf) {
        st = kr_err_set(err, KR_ERR_NOMEM, "%s: out of memory", path);
        goto out_close;
    }
    size_t n = fread(buf, 1, cap - 1, f);
    if (ferror(f)) {
        st = kr_err_set(err, KR_ERR_IO, "%s: read error", path);
        goto out_free_buf;
    }
    buf[n] = '\0';
    st = parse_text(cfg, buf, n, path, err);

out_free_buf:
    free(buf);
out_close:
    fclose(f);
    return st;
}

/* KERNRUN_<SECTION>_<KEY> */
static void env_name(const kr_config_key *k, char *buf, size_t cap)
{
    snprintf(buf, cap, "KERNRUN_%s_%s", k->section, k->key);
    for (char *p = buf + 8; *p; p++)
        *p = isalnum((unsigned char)*p) ? (char)toupper((unsigned char)*p) : '_';
}

kr_status kr_config_apply_env(kr_config *cfg, kr_err *err)
{
    if (!cfg)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_config_apply_env: cfg is NULL");
    for (size_t i = 0; i < cfg->n_keys; i++) {
        const kr_config_key *k = cfg->keys[i];
        char name[2 * KR__CFG_MAX_NAME + 16];
        env_name(k, name, sizeof name);
        const char *v = getenv(name);
        if (!v)
            continue;
        char origin[sizeof name + 8];
        snprintf(origin, sizeof origin, "env %s", name);
        kr_status st = validate_value(k, v, err);
        if (st != KR_OK)
            return kr_err_prefix(err, "%s", origin);
        st = store(cfg, k->section, k->key, v, origin, k, err);
        if (st != KR_OK)
            return st;
    }
    return KR_OK;
}

kr_status kr_config_set(kr_config *cfg, const char *section, const char *key, const char *value, const char *origin,
                        kr_err *err)
{
    if (!cfg || !section || !key || !value)
        return kr_err_set(err, KR_ERR_INVALID_ARG, "kr_config_set: NULL argument");
    if (!origin)
        origin = "set";
    const kr_config_key *k = find_key(cfg, section, key);
    if (!k && !section_free_form(section))
        return kr_err_set(err, KR_ERR_CONFIG, "%s: unknown config key [%s] %s", origin, section, key);
    if (!k && (!valid_name(section) || !valid_name(key)))
        return kr_err_set(err, KR_ERR_CONFIG, "%s: invalid section or key name", origin);
    if (k) {
        kr_status st = validate_value(k, value, err);
        if (st != KR_OK)
            return kr_err_prefix(err, "%s", origin);
    }
    return store(cfg, section, key, value, origin, k, err);
}

const char *kr_config_get(const kr_config *cfg, const char *section, const char *key)
{
    if (!cfg || !section || !key)
        return NULL;
    const cfg_entry *e = find_entry(cfg, section, key);
    if (e)
        return e->value;
    const kr_config_key *k = find_key(cfg, section, key);
    return k ? k->def : NULL;
}

const char *kr_config_origin(const kr_config *cfg, const char *section, const char *key)
{
    if (!cfg || !section || !key)
        return NULL;
    const cfg_entry *e = find_entry(cfg, section, key);
    if (e)
        return e->origin;
    const kr_config_key *k = find_key(cfg, section, key);
    return k && k->def ? "default" : NULL;
}

static kr_status typed(const kr_config *cfg, const char *section, const char *key, kr_config_type want,
                       const char **value)
{
    if (!cfg || !section || !key)
        return KR_ERR_INVALID_ARG;
    const kr_config_key *k = find_key(cfg, section, key);
    if (k && k->type != want)
        return KR_ERR_TYPE;
    *value = kr_config_get(cfg, section, key);
    return *value ? KR_OK : KR_ERR_NOT_FOUND;
}

kr_status kr_config_get_int(const kr_config *cfg, const char *section, const char *key, int64_t *out)
{
    const char *v;
    kr_status st = typed(cfg, section, key, KR_CONFIG_INT, &v);
    if (st != KR_OK)
        return st;
    return parse_int(v, out) == KR_OK ? KR_OK : KR_ERR_TYPE;
}

kr_status kr_config_get_bool(const kr_config *cfg, const char *section, const char *key, bool *out)
{
    const char *v;
    kr_status st = typed(cfg, section, key, KR_CONFIG_BOOL, &v);
    if (st != KR_OK)
        return st;
    return parse_bool(v, out) == KR_OK ? KR_OK : KR_ERR_TYPE;
}

kr_status kr_config_get_float(const kr_config *cfg, const char *section, const char *key, double *out)
{
    const char *v;
    kr_status st = typed(cfg, section, key, KR_CONFIG_FLOAT, &v);
    if (st != KR_OK)
        return st;
    return parse_float(v, out) == KR_OK ? KR_OK : KR_ERR_TYPE;
}

kr_status kr_config_get_path(const kr_config *cfg, const char *section, const char *key, char *buf, size_t cap)
{
    if (!cfg || !section || !key || !buf || cap == 0)
        return KR_ERR_INVALID_ARG;
    const kr_config_key *k = find_key(cfg, section, key);
    if (k && k->type != KR_CONFIG_PATH && k->type != KR_CONFIG_STRING)
        return KR_ERR_TYPE;
    const char *v = kr_config_get(cfg, section, key);
    if (!v)
        return KR_ERR_NOT_FOUND;
    int n;
    if (v[0] == '~' && (v[1] == '/' || v[1] == '\0')) {
        const char *home = getenv("HOME");
        if (!home || !home[0])
            return KR_ERR_NOT_FOUND;
        n = snprintf(buf, cap, "%s%s", home, v + 1);
    } else {
        n = snprintf(buf, cap, "%s", v);
    }
    return (n < 0 || (size_t)n >= cap) ? KR_ERR_LIMIT : KR_OK;
}

size_t kr_config_key_count(const kr_config *cfg) { return cfg ? cfg->n_keys : 0; }

const kr_config_key *kr_config_key_at(const kr_config *cfg, size_t i)
{
    return cfg && i < cfg->n_keys ? cfg->keys[i] : NULL;
}

const char *kr_config_type_name(kr_config_type t) { return type_name(t); }
