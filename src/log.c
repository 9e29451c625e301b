/* log.c - stderr logger. Kept deliberately tiny. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static engage_log_level_t min_level = ENGAGE_LOG_INFO;
static int with_time = -1; /* -1: not read from the environment yet */

void engage_log_set_level(engage_log_level_t lvl) { min_level = lvl; }

void engage_log(engage_log_level_t lvl, const char *fmt, ...) {
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (lvl < min_level)
        return;
    if (with_time < 0) {
        const char *e = getenv("ENGAGE_LOG_TIME");
        with_time = e && *e && strcmp(e, "0") != 0;
    }
    if (with_time) {
        /* wall-clock time for the reader of the log only */
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        fprintf(stderr, "%02d:%02d:%02d.%03ld ", tm.tm_hour, tm.tm_min, tm.tm_sec,
                ts.tv_nsec / 1000000L);
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s engage: ", names[lvl]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
