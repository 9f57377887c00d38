/* log.c — see log.h. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static log_level current = LOG_INFO;
static const char *const names[] = {"error", "warn", "info", "debug"};

void log_set_level(log_level level)
{
    current = level;
}

int log_parse_level(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

static void log_line(log_level level, const char *fmt, va_list ap)
{
    fprintf(stderr, "synod_cnode %s ", names[level]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void log_msg(log_level level, const char *fmt, ...)
{
    if (level > current)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, fmt, ap);
    va_end(ap);
}

long long monotonic_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

unsigned long log_limit_expire(log_limit *l, long long now_ms)
{
    if (now_ms - l->window_start_ms < LOG_WINDOW_MS)
        return 0;
    unsigned long held = l->suppressed;
    l->window_start_ms = now_ms;
    l->logged = 0;
    l->suppressed = 0;
    return held;
}

int log_limit_admit(log_limit *l, long long now_ms, unsigned long *ended)
{
    *ended = log_limit_expire(l, now_ms);
    if (l->logged < LOG_BURST) {
        l->logged++;
        return 1;
    }
    l->suppressed++;
    return 0;
}

static const char *const kind_names[LOGK_COUNT] = {
    "too_large", "too_deep", "bad_term", "not_a_call", "not_an_answer", "bad_request",
};
static log_limit limits[LOGK_COUNT];
static log_level limit_levels[LOGK_COUNT];

static void report_suppressed(log_kind kind, unsigned long held)
{
    if (held > 0)
        log_msg(limit_levels[kind], "suppressed %lu similar lines (%s) in %d ms", held,
                kind_names[kind], LOG_WINDOW_MS);
}

void log_limited(log_kind kind, log_level level, const char *fmt, ...)
{
    if (level > current)
        return;
    unsigned long ended;
    int admit = log_limit_admit(&limits[kind], monotonic_ms(), &ended);
    report_suppressed(kind, ended);
    limit_levels[kind] = level;
    if (!admit)
        return;
    va_list ap;
    va_start(ap, fmt);
    log_line(level, fmt, ap);
    va_end(ap);
}

void log_flush_suppressed(void)
{
    long long now = monotonic_ms();
    for (int k = 0; k < LOGK_COUNT; k++)
        if (limits[k].suppressed > 0)
            report_suppressed((log_kind)k, log_limit_expire(&limits[k], now));
}
