/* Logging with levels and a settable sink (default: stderr). Thread-safe. */
#ifndef KERNRUN_LOG_H
#define KERNRUN_LOG_H

#include <stdarg.h>
#include "kernrun/export.h"
#include "kernrun/status.h"

typedef enum kr_log_level {
    KR_LOG_ERROR = 0,
    KR_LOG_WARN = 1,
    KR_LOG_INFO = 2,
    KR_LOG_DEBUG = 3,
    KR_LOG_TRACE = 4,
} kr_log_level;

/* sink(level, domain, message, user): message has no trailing newline. */
typedef void (*kr_log_sink)(kr_log_level level, const char *domain, const char *msg, void *user);

KR_API void kr_log_set_level(kr_log_level level);
KR_API kr_log_level kr_log_get_level(void);
/* NULL restores the stderr sink. */
KR_API void kr_log_set_sink(kr_log_sink sink, void *user);
/* "error","warn","info","debug","trace" (or 0..4) -> level. */
KR_API kr_status kr_log_level_parse(const char *s, kr_log_level *out);
KR_API const char *kr_log_level_name(kr_log_level level);

KR_API void kr_log(kr_log_level level, const char *domain, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
KR_API void kr_logv(kr_log_level level, const char *domain, const char *fmt, va_list ap);

#define KR_LOGE(dom, ...) kr_log(KR_LOG_ERROR, dom, __VA_ARGS__)
#define KR_LOGW(dom, ...) kr_log(KR_LOG_WARN, dom, __VA_ARGS__)
#define KR_LOGI(dom, ...) kr_log(KR_LOG_INFO, dom, __VA_ARGS__)
#define KR_LOGD(dom, ...) kr_log(KR_LOG_DEBUG, dom, __VA_ARGS__)

#endif
