/* Configuration: INI files (inih) validated against registered key tables,
 * with environment overrides KERNRUN_<SECTION>_<KEY> (upper-cased, every
 * character that is not a letter or digit becomes '_'), e.g.
 * KERNRUN_RUNTIME_BACKEND=cpu.
 *
 * A new config object knows the [runtime] keys. Other components register
 * their own section with kr_config_add_keys() before loading a file:
 *
 *     static const kr_config_key sampling_keys[] = {
 *         { .section = "sampling", .key = "temperature", .type = KR_CONFIG_FLOAT,
 *           .def = "0.8", .fmin = 0, .fmax = 100, .help = "softmax temperature" },
 *     };
 *     kr_config_add_keys(cfg, sampling_keys, KR_ARRAY_LEN(sampling_keys), err);
 *
 * Errors are KR_ERR_CONFIG with "file:line: ..." (or "env KERNRUN_X: ...").
 * Unknown keys in a registered section and unknown sections are errors,
 * except sections named "plugin.<name>", which are free-form.
 * Precedence (low to high): defaults < files (later wins) < environment
 * (kr_config_apply_env) < kr_config_set.
 */
#ifndef KERNRUN_CONFIG_H
#define KERNRUN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernrun/export.h"
#include "kernrun/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum kr_config_type {
    KR_CONFIG_STRING = 0,  /* any text */
    KR_CONFIG_INT = 1,     /* decimal integer (int64), range [imin, imax] when imin < imax */
    KR_CONFIG_BOOL = 2,    /* true/false, yes/no, on/off, 1/0 */
    KR_CONFIG_FLOAT = 3,   /* finite double, range [fmin, fmax] when fmin < fmax */
    KR_CONFIG_ENUM = 4,    /* one of choices[] (case-insensitive) */
    KR_CONFIG_PATH = 5,    /* text; "~/" expanded with $HOME by the getter kr_config_get_path */
} kr_config_type;

/* One key of a section. Tables are static const and must outlive every
 * config they are added to. */
typedef struct kr_config_key {
    const char *section;           /* "runtime" */
    const char *key;               /* "backend" */
    kr_config_type type;
    const char *def;               /* default as text; NULL = unset */
    const char *help;              /* one line for docs and messages */
    int64_t imin, imax;            /* INT range (checked when imin < imax) */
    double fmin, fmax;             /* FLOAT range (checked when fmin < fmax) */
    const char *const *choices;    /* ENUM: NULL-terminated list */
    /* (optional) extra check after the type check; fill err (message
     * without location, the parser adds it) and return non-OK to reject */
    kr_status (*validate)(const char *value, kr_err *err);
} kr_config_key;

typedef struct kr_config kr_config;

/* New config with the [runtime] keys registered and defaults set. */
KR_API kr_status kr_config_create(kr_config **out, kr_err *err);
KR_API void kr_config_free(kr_config *cfg); /* NULL ok */

/* Register keys (the table is referenced, not copied). Duplicate
 * section+key -> KR_ERR_EXISTS; a default that fails its own validation ->
 * KR_ERR_INVALID_ARG. Values already set for those keys (free-form
 * plugin.* sections) are validated now. Register before loading files. */
KR_API kr_status kr_config_add_keys(kr_config *cfg, const kr_config_key *keys, size_t n, kr_err *err);

/* Parse an INI file / text; on error nothing of it is applied. `name` is
 * used in messages for text ("<string>" when NULL). */
KR_API kr_status kr_config_load_file(kr_config *cfg, const char *path, kr_err *err);
KR_API kr_status kr_config_load_string(kr_config *cfg, const char *text, const char *name, kr_err *err);
/* Apply KERNRUN_<SECTION>_<KEY> variables for every registered key. */
KR_API kr_status kr_config_apply_env(kr_config *cfg, kr_err *err);
/* Set one value (validated); `origin` ("--backend") is used in messages and kr_config_origin. */
KR_API kr_status kr_config_set(kr_config *cfg, const char *section, const char *key, const char *value,
                               const char *origin, kr_err *err);

/* Value as text (set value, else default), NULL if neither. Works for
 * free-form plugin.* sections too. The string lives until the value changes
 * or the config is freed. */
KR_API const char *kr_config_get(const kr_config *cfg, const char *section, const char *key);
/* Typed getters: KR_ERR_NOT_FOUND when the key is unknown or unset,
 * KR_ERR_TYPE when registered with another type. */
KR_API kr_status kr_config_get_int(const kr_config *cfg, const char *section, const char *key, int64_t *out);
KR_API kr_status kr_config_get_bool(const kr_config *cfg, const char *section, const char *key, bool *out);
KR_API kr_status kr_config_get_float(const kr_config *cfg, const char *section, const char *key, double *out);
/* PATH/STRING value with a leading "~/" expanded; writes a NUL-terminated
 * path into buf (KR_ERR_LIMIT when it does not fit). */
KR_API kr_status kr_config_get_path(const kr_config *cfg, const char *section, const char *key, char *buf,
                                    size_t cap);
/* Where a value came from: "default", "file.ini:12", "env KERNRUN_RUNTIME_DEVICE", an origin
 * given to kr_config_set; NULL when unset. */
KR_API const char *kr_config_origin(const kr_config *cfg, const char *section, const char *key);

/* Iterate registered keys (for `kernrun help config`/docs). */
KR_API size_t kr_config_key_count(const kr_config *cfg);
KR_API const kr_config_key *kr_config_key_at(const kr_config *cfg, size_t i);
/* "integer", "boolean", ... */
KR_API const char *kr_config_type_name(kr_config_type t);

/* The [runtime] keys, for reference:
 *   backend      enum cpu|cuda|auto (default auto)
 *   device       int >= 0 (default 0)
 *   plugin_path  colon-separated directories searched after the built-in ones
 *   cache_dir    path for the JIT cubin cache (default $XDG_CACHE_HOME/kernrun)
 *   log_level    enum error|warn|info|debug|trace (default warn)
 */

#ifdef __cplusplus
}
#endif
#endif
