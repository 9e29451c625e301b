/*
 * timeutil.h - event-time helpers: UTC day numbers and dates.
 *
 * A "day" is the number of whole UTC days since 1970-01-01 (floor division,
 * so negative timestamps map correctly). Nothing here reads the wall clock.
 */
#ifndef ENGAGE_TIMEUTIL_H
#define ENGAGE_TIMEUTIL_H

#include <stddef.h>
#include <stdint.h>

#define ENGAGE_MS_PER_DAY 86400000LL

/** Returns the UTC day number containing ms (floor division). */
static inline int32_t engage_day_of_ms(int64_t ms) {
    int64_t d = ms / ENGAGE_MS_PER_DAY;
    if (ms % ENGAGE_MS_PER_DAY < 0)
        d--;
    return (int32_t)d;
}

/** Returns the first millisecond of day. */
static inline int64_t engage_day_start_ms(int32_t day) {
    return (int64_t)day * ENGAGE_MS_PER_DAY;
}

/** Writes day as "YYYY-MM-DD" plus NUL into buf (at least 11 bytes; years
 *  outside 0..9999 are clamped in formatting). Returns buf. */
char *engage_day_format(int32_t day, char *buf, size_t size);

/** Parses "YYYY-MM-DD" into *day. Returns 0 on success, -1 if malformed. */
int engage_day_parse(const char *s, int32_t *day);

#endif
