#include "kernrun/status.h"

#include <stdio.h>
#include <string.h>

const char *kr_status_name(kr_status s)
{
    switch (s) {
#define KR__STATUS_NAME(name, val, msg) case KR_##name: return "KR_" #name;
        KR_STATUS_MAP(KR__STATUS_NAME)
#undef KR__STATUS_NAME
    }
    return "KR_UNKNOWN";
}

const char *kr_status_str(kr_status s)
{
    switch (s) {
#define KR__STATUS_MSG(name, val, msg) case KR_##name: return msg;
        KR_STATUS_MAP(KR__STATUS_MSG)
#undef KR__STATUS_MSG
    }
    return "unknown status";
}

void kr_err_clear(kr_err *e)
{
    if (!e)
        return;
    e->code = KR_OK;
    e->msg[0] = '\0';
}

kr_status kr_err_setv(kr_err *e, kr_status code, const char *fmt, va_list ap)
{
    if (!e)
        return code;
    e->code = code;
    if (!fmt) {
        snprintf(e->msg, sizeof e->msg, "%s", kr_status_str(code));
        return code;
    }
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    return code;
}

kr_status kr_err_set(kr_err *e, kr_status code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kr_err_setv(e, code, fmt, ap);
    va_end(ap);
    return code;
}

kr_status kr_err_prefix(kr_err *e, const char *fmt, ...)
{
    if (!e)
        return KR_ERR_INTERNAL;
    char ctx[KR_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    const char *tail = e->msg[0] ? e->msg : kr_status_str(e->code);
    char old[KR_ERR_MSG_MAX];
    size_t tl = strnlen(tail, sizeof old - 1);
    memcpy(old, tail, tl);
    old[tl] = '\0';
    /* "<ctx>: <old>", truncated to the buffer */
    size_t cl = strnlen(ctx, sizeof e->msg - 1);
    memcpy(e->msg, ctx, cl);
    size_t pos = cl;
    for (const char *p = ": "; *p && pos + 1 < sizeof e->msg; p++)
        e->msg[pos++] = *p;
    size_t room = sizeof e->msg - 1 - pos;
    size_t n = tl < room ? tl : room;
    memcpy(e->msg + pos, old, n);
    e->msg[pos + n] = '\0';
    return e->code;
}

const char *kr_err_msg(const kr_err *e, kr_status code)
{
    if (e && e->msg[0])
        return e->msg;
    return kr_status_str(code);
}
