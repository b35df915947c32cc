/* Header-only kr_err formatting for code that must not link libkernrun:
 * plugins (which reach the core only through the host table) and the static
 * libraries they link (quant, cuda_decode, cuda_gemm). Same results as
 * kr_err_set() / kr_err_prefix() in libkernrun. */
#ifndef KERNRUN_ERR_LOCAL_H
#define KERNRUN_ERR_LOCAL_H

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "kernrun/status.h"

/* Set code + printf-style message; returns code. e may be NULL. */
static inline kr_status kr_err_set_local(kr_err *e, kr_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline kr_status kr_err_set_local(kr_err *e, kr_status code, const char *fmt, ...)
{
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        e->code = code;
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Prefix e->msg with "what: ", keeping the inner message, and set code. When
 * the inner call left no message for this code, the text is "what: failed". */
static inline kr_status kr_err_prefix_local(kr_err *e, kr_status code, const char *what)
{
    if (e) {
        if (e->code != code || !e->msg[0])
            snprintf(e->msg, sizeof e->msg, "failed");
        size_t w = strlen(what), m = strlen(e->msg);
        if (w + 2 < sizeof e->msg) {
            if (w + 2 + m >= sizeof e->msg)
                m = sizeof e->msg - w - 3;
            memmove(e->msg + w + 2, e->msg, m);
            memcpy(e->msg, what, w);
            e->msg[w] = ':';
            e->msg[w + 1] = ' ';
            e->msg[w + 2 + m] = '\0';
        }
        e->code = code;
    }
    return code;
}

#endif
