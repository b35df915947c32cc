#include "kernrun/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static _Atomic int g_level = KR_LOG_WARN;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static kr_log_sink g_sink; /* NULL = stderr */
static void *g_sink_user;

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

void kr_log_set_level(kr_log_level level) { atomic_store(&g_level, (int)level); }
kr_log_level kr_log_get_level(void) { return (kr_log_level)atomic_load(&g_level); }

void kr_log_set_sink(kr_log_sink sink, void *user)
{
    pthread_mutex_lock(&g_lock);
    g_sink = sink;
    g_sink_user = user;
    pthread_mutex_unlock(&g_lock);
}

const char *kr_log_level_name(kr_log_level level)
{
    if ((int)level < 0 || (int)level > KR_LOG_TRACE)
        return "?";
    return level_names[level];
}

kr_status kr_log_level_parse(const char *s, kr_log_level *out)
{
    if (!s || !out)
        return KR_ERR_INVALID_ARG;
    for (int i = 0; i <= KR_LOG_TRACE; i++) {
        if (strcasecmp(s, level_names[i]) == 0 || (s[0] == (char)('0' + i) && s[1] == '\0')) {
            *out = (kr_log_level)i;
            return KR_OK;
        }
    }
    if (strcasecmp(s, "warning") == 0) {
        *out = KR_LOG_WARN;
        return KR_OK;
    }
    return KR_ERR_INVALID_ARG;
}

void kr_logv(kr_log_level level, const char *domain, const char *fmt, va_list ap)
{
    if ((int)level > atomic_load(&g_level))
        return;
    char buf[4096];
    vsnprintf(buf, sizeof buf, fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && buf[n - 1] == '\n')
        buf[--n] = '\0';
    pthread_mutex_lock(&g_lock);
    if (g_sink)
        g_sink(level, domain ? domain : "kernrun", buf, g_sink_user);
    else
        fprintf(stderr, "kernrun: %s: %s%s%s\n", kr_log_level_name(level), domain ? domain : "",
                domain ? ": " : "", buf);
    pthread_mutex_unlock(&g_lock);
}

void kr_log(kr_log_level level, const char *domain, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    kr_logv(level, domain, fmt, ap);
    va_end(ap);
}
