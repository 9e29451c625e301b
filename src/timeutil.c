/* timeutil.c - civil date conversions (Howard Hinnant's algorithms, which
 * are exact for the proleptic Gregorian calendar and need no libc tz). */
#include "timeutil.h"

#include <stdio.h>
#include <string.h>

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const unsigned yoe = (unsigned)(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const unsigned doe = (unsigned)(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

char *engage_day_format(int32_t day, char *buf, size_t size) {
    int64_t y;
    unsigned m, d;
    civil_from_days(day, &y, &m, &d);
    if (y < 0)
        y = 0;
    if (y > 9999)
        y = 9999;
    /* the bytes of "%04d-%02u-%02u" without snprintf (once per emitted
     * session), cut to size like snprintf */
    char t[11];
    unsigned yy = (unsigned)y;
    t[0] = (char)('0' + yy / 1000);
    t[1] = (char)('0' + yy / 100 % 10);
    t[2] = (char)('0' + yy / 10 % 10);
    t[3] = (char)('0' + yy % 10);
    t[4] = '-';
    t[5] = (char)('0' + m / 10);
    t[6] = (char)('0' + m % 10);
    t[7] = '-';
    t[8] = (char)('0' + d / 10);
    t[9] = (char)('0' + d % 10);
    t[10] = 0;
    if (size) {
        size_t n = size - 1 < 10 ? size - 1 : 10;
        memcpy(buf, t, n);
        buf[n] = 0;
    }
    return buf;
}

int engage_day_parse(const char *s, int32_t *day) {
    int y;
    unsigned m, d;
    char tail;
    if (!s || strlen(s) != 10 || sscanf(s, "%4d-%2u-%2u%c", &y, &m, &d, &tail) != 3)
        return -1;
    if (m < 1 || m > 12 || d < 1 || d > 31)
        return -1;
    int64_t z = days_from_civil(y, m, d);
    /* reject 2023-02-31 and friends by round-tripping */
    int64_t yy;
    unsigned mm, dd;
    civil_from_days(z, &yy, &mm, &dd);
    if (yy != y || mm != m || dd != d)
        return -1;
    *day = (int32_t)z;
    return 0;
}
