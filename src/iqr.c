/*
 * iqr.c - type-7 quartiles, inclusive IQR fences and the filtered means of
 * one day's sessions.
 *
 * Everything is computed from integers (durations, action counts, sums) and
 * a handful of double operations in a fixed order, so the result depends
 * only on the multiset of sessions: the compactor can gather a day's sessions
 * from any number of partitions in any order and still emit identical bytes.
 * Sums are kept in 128 bits, so no realistic day overflows them.
 */
#include "iqr.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double engage_iqr_quantile(const int64_t *sorted, size_t n, double p) {
    if (n == 0 || !sorted || !(p >= 0.0 && p <= 1.0))
        return NAN;
    double h = (double)(n - 1) * p;
    double jf = floor(h);
    size_t j = (size_t)jf;
    if (j >= n - 1)
        return (double)sorted[n - 1];
    double lo = (double)sorted[j], hi = (double)sorted[j + 1];
    return lo + (h - jf) * (hi - lo);
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* ---- a set of uint64 (open addressing, linear probing) -------------------- */

typedef struct u64set {
    uint64_t *keys;
    unsigned char *used;
    size_t mask;
    size_t count;
} u64set_t;

static uint64_t mix64(uint64_t x) { /* splitmix64 finalizer */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

/* Room for up to n keys at a load factor of at most 1/2. */
static int u64set_init(u64set_t *s, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    s->keys = malloc(cap * sizeof(*s->keys));
    s->used = calloc(cap, 1);
    s->mask = cap - 1;
    s->count = 0;
    return s->keys && s->used ? 0 : -1;
}

static void u64set_add(u64set_t *s, uint64_t k) {
    size_t i = (size_t)mix64(k) & s->mask;
    while (s->used[i]) {
        if (s->keys[i] == k)
            return;
        i = (i + 1) & s->mask;
    }
    s->used[i] = 1;
    s->keys[i] = k;
    s->count++;
}

static void u64set_free(u64set_t *s) {
    free(s->keys);
    free(s->used);
}

/* ---- the day ---------------------------------------------------------------- */

/* Inside [lo, hi], comparing exactly for |v| < 2^53 (all real durations). */
static int inside(int64_t v, double lo, double hi) {
    double d = (double)v;
    return d >= lo && d <= hi;
}

engage_err_t engage_iqr_compute(const engage_iqr_session_t *s, size_t n, double k,
                                engage_iqr_stats_t *out) {
    if (!out || !isfinite(k) || k < 0 || (n && !s))
        return ENGAGE_ERR_INVALID_ARG;
    memset(out, 0, sizeof(*out));
    out->multiplier = k;
    out->sessions = (int64_t)n;
    if (n == 0)
        return ENGAGE_ERR_OK;

    int64_t *dur = malloc(n * sizeof(*dur));
    int64_t *act = malloc(n * sizeof(*act));
    u64set_t users = {0};
    engage_err_t err = ENGAGE_ERR_OK;
    if (!dur || !act || u64set_init(&users, n)) {
        err = ENGAGE_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        dur[i] = s[i].duration_ms;
        act[i] = s[i].actions;
    }
    qsort(dur, n, sizeof(*dur), cmp_i64);
    qsort(act, n, sizeof(*act), cmp_i64);
    out->has_quartiles = 1;
    out->duration_q1 = engage_iqr_quantile(dur, n, 0.25);
    out->duration_q3 = engage_iqr_quantile(dur, n, 0.75);
    out->actions_q1 = engage_iqr_quantile(act, n, 0.25);
    out->actions_q3 = engage_iqr_quantile(act, n, 0.75);
    double diqr = out->duration_q3 - out->duration_q1;
    double aiqr = out->actions_q3 - out->actions_q1;
    out->duration_lower_fence = out->duration_q1 - k * diqr;
    out->duration_upper_fence = out->duration_q3 + k * diqr;
    out->actions_lower_fence = out->actions_q1 - k * aiqr;
    out->actions_upper_fence = out->actions_q3 + k * aiqr;

    __int128 sum_dur = 0, sum_act = 0;
    for (size_t i = 0; i < n; i++) {
        int dok = inside(s[i].duration_ms, out->duration_lower_fence, out->duration_upper_fence);
        int aok = inside(s[i].actions, out->actions_lower_fence, out->actions_upper_fence);
        out->duration_outliers += !dok;
        out->actions_outliers += !aok;
        if (dok && aok) {
            out->valid_sessions++;
            sum_dur += s[i].duration_ms;
            sum_act += s[i].actions;
            u64set_add(&users, s[i].user);
        }
    }
    out->valid_users = (int64_t)users.count;
    if (out->valid_sessions > 0) {
        out->valid_avg_duration_ms = (double)sum_dur / (double)out->valid_sessions;
        out->valid_actions_per_session = (double)sum_act / (double)out->valid_sessions;
    }
out:
    free(dur);
    free(act);
    u64set_free(&users);
    return err;
}
