/*
 * log.h — leveled logging to stderr for the C node. One line per event:
 * "synod_cnode LEVEL message". Never given secrets (the cookie is not logged).
 *
 * Input from other nodes that is dropped or refused is logged through
 * log_limited: at most LOG_BURST lines per kind in each LOG_WINDOW_MS window,
 * so a flood of junk cannot flood the log. What was held back is counted and
 * reported in one line per kind once its window has ended ("suppressed N
 * similar lines (kind)").
 */
#ifndef SYNOD_CNODE_LOG_H
#define SYNOD_CNODE_LOG_H

typedef enum log_level { LOG_ERROR = 0, LOG_WARN = 1, LOG_INFO = 2, LOG_DEBUG = 3 } log_level;

void log_set_level(log_level level);
/* Parses "error", "warn", "info" or "debug"; returns -1 for anything else. */
int log_parse_level(const char *name);
void log_msg(log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Kinds of dropped or refused input, each with its own budget. */
typedef enum log_kind {
    LOGK_TOO_LARGE,     /* a message over its size limit */
    LOGK_TOO_DEEP,      /* a term nested deeper than the limit */
    LOGK_MALFORMED,     /* not one well-formed term */
    LOGK_NOT_A_CALL,    /* sent to a name, but not a GenServer call */
    LOGK_NOT_AN_ANSWER, /* sent to the node's pid, but no answer it waits for */
    LOGK_BAD_REQUEST,   /* a call answered {error, {bad_request, _}} */
    LOGK_COUNT
} log_kind;

#define LOG_BURST 5
#define LOG_WINDOW_MS 1000

/* One kind's budget. Pure: time comes in as an argument. */
typedef struct log_limit {
    long long window_start_ms;
    unsigned logged;          /* lines printed in this window */
    unsigned long suppressed; /* lines held back in this window */
} log_limit;

/* Whether a line may be printed at now_ms (1) or is held back and counted
 * (0). When this starts a new window, *ended receives the count held back in
 * the window before it (else 0). */
int log_limit_admit(log_limit *l, long long now_ms, unsigned long *ended);
/* Ends the window if it is over at now_ms; returns the count held back in
 * it (0 if none, or if the window is still open). */
unsigned long log_limit_expire(log_limit *l, long long now_ms);

/* log_msg for dropped or refused input of one kind, within its budget. */
void log_limited(log_kind kind, log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reports, once per kind, the lines held back in windows that have ended.
 * The event loop calls it on every turn. */
void log_flush_suppressed(void);

/* CLOCK_MONOTONIC in milliseconds. */
long long monotonic_ms(void);

#define LOG_E(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define LOG_W(...) log_msg(LOG_WARN, __VA_ARGS__)
#define LOG_I(...) log_msg(LOG_INFO, __VA_ARGS__)
#define LOG_D(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
