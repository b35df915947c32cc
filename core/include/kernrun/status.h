/* kernrun — status codes and error context.
 *
 * Every fallible function returns kr_status (0 = ok, negative = error) and,
 * where it can say more, fills a caller-provided kr_err with a message. Each
 * layer prefixes its own context with kr_err_prefix(), so a message reads
 * outermost-first: "loading model.gguf: tensor 'blk.3.attn_q.weight': offset
 * 1234 past end of file (size 1000)".
 *
 * Library code never calls exit()/abort() on its input.
 */
#ifndef KERNRUN_STATUS_H
#define KERNRUN_STATUS_H

#include <stdarg.h>
#include <stddef.h>

#include "kernrun/export.h"

#ifdef __cplusplus
extern "C" {
#endif

/* X(NAME, value, message) — append new codes at the end (values are ABI). */
#define KR_STATUS_MAP(X)                                                     \
    X(OK, 0, "success")                                                      \
    X(ERR_INVALID_ARG, -1, "invalid argument")                               \
    X(ERR_NOMEM, -2, "out of memory")                                        \
    X(ERR_IO, -3, "input/output error")                                      \
    X(ERR_FORMAT, -4, "malformed input")                                     \
    X(ERR_UNSUPPORTED, -5, "not supported")                                  \
    X(ERR_NOT_FOUND, -6, "not found")                                        \
    X(ERR_OVERFLOW, -7, "size arithmetic overflow")                          \
    X(ERR_TYPE, -8, "wrong type")                                            \
    X(ERR_RANGE, -9, "value out of range")                                   \
    X(ERR_ABI, -10, "plugin ABI mismatch")                                   \
    X(ERR_PLUGIN, -11, "plugin failed")                                      \
    X(ERR_NO_DEVICE, -12, "no usable GPU device")                            \
    X(ERR_DRIVER, -13, "GPU driver error")                                   \
    X(ERR_JIT, -14, "kernel compilation failed")                             \
    X(ERR_DEVICE_LOST, -15, "GPU context is unusable after an earlier fault") \
    X(ERR_CONFIG, -16, "invalid configuration")                              \
    X(ERR_LIMIT, -17, "resource limit exceeded")                             \
    X(ERR_EXISTS, -18, "already exists")                                     \
    X(ERR_STATE, -19, "invalid state for this operation")                    \
    X(ERR_INTERNAL, -20, "internal error")

typedef enum kr_status {
#define KR__STATUS_ENUM(name, val, msg) KR_##name = (val),
    KR_STATUS_MAP(KR__STATUS_ENUM)
#undef KR__STATUS_ENUM
} kr_status;

/* "KR_ERR_IO" style name; "KR_UNKNOWN" for values outside the map. */
KR_API const char *kr_status_name(kr_status s);
/* Human message for the code alone ("input/output error"). */
KR_API const char *kr_status_str(kr_status s);

#define KR_ERR_MSG_MAX 1024

/* Error context filled by fallible calls. May be NULL wherever a kr_err* is
 * accepted; then only the status is reported. */
typedef struct kr_err {
    kr_status code;             /* last error code set (KR_OK when clear) */
    char msg[KR_ERR_MSG_MAX];   /* NUL-terminated message, outermost context first */
} kr_err;

KR_API void kr_err_clear(kr_err *e);
/* Set code + printf-style message; returns code (so `return kr_err_set(...)`). */
KR_API kr_status kr_err_set(kr_err *e, kr_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
KR_API kr_status kr_err_setv(kr_err *e, kr_status code, const char *fmt, va_list ap);
/* Prefix the existing message with "<context>: "; returns e->code (or
 * KR_ERR_INTERNAL when e is NULL). */
KR_API kr_status kr_err_prefix(kr_err *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Message if set, else the status string of `code`. Never NULL. */
KR_API const char *kr_err_msg(const kr_err *e, kr_status code);

#ifdef __cplusplus
}
#endif
#endif
