/* log.c - stderr logger. Kept deliberately tiny. */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>

static engage_log_level_t min_level = ENGAGE_LOG_INFO;

void engage_log_set_level(engage_log_level_t lvl) { min_level = lvl; }

void engage_log(engage_log_level_t lvl, const char *fmt, ...) {
    static const char *names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (lvl < min_level)
        return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s engage: ", names[lvl]);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}
