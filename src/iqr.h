/*
 * iqr.h - exact per-day IQR outlier statistics over closed sessions
 * (Kafka-free; the compactor feeds it, docs/COMPACTOR.md).
 *
 * Quartiles are Hyndman-Fan type 7 (linear interpolation between closest
 * ranks, the default of numpy.percentile and Spark's exact `percentile`):
 * for sorted x[0..n), p in [0, 1], h = (n - 1) * p, j = floor(h),
 * q = x[j] + (h - j) * (x[j+1] - x[j])   (q = x[n-1] when j = n - 1).
 * For p = 0.25 and 0.75 every step is exact in IEEE doubles while the values
 * stay below 2^51, so the quartiles are exact, not approximations.
 *
 * Fences, with k the multiplier (default 1.5) and IQR = Q3 - Q1:
 * lower = Q1 - k * IQR, upper = Q3 + k * IQR, both inclusive. A session is
 * valid when its duration lies inside the duration fences AND its action
 * count inside the action fences. When IQR = 0 (at least half the middle of
 * the distribution is one value) the fences collapse onto it and only
 * sessions equal to it are valid.
 */
#ifndef ENGAGE_IQR_H
#define ENGAGE_IQR_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define ENGAGE_IQR_DEFAULT_MULTIPLIER 1.5

/** One session of a day, as the statistics need it. */
typedef struct engage_iqr_session {
    uint64_t user;       /* identifies the user within the day: valid_users counts
                            distinct values, so it is exact when these are
                            ordinals (the compactor's), approximate for hashes */
    int64_t duration_ms; /* end_ms - start_ms */
    int64_t actions;
} engage_iqr_session_t;

/** A day's statistics. With sessions == 0, has_quartiles is 0 and the eight
 *  quartile and fence fields are 0 (the record encodes them as null); every
 *  count and mean is then 0 too. */
typedef struct engage_iqr_stats {
    int64_t sessions;
    int has_quartiles;
    double duration_q1, duration_q3, actions_q1, actions_q3;
    double duration_lower_fence, duration_upper_fence;
    double actions_lower_fence, actions_upper_fence;
    int64_t valid_sessions;
    int64_t valid_users;
    double valid_avg_duration_ms;     /* 0 when valid_sessions == 0 */
    double valid_actions_per_session; /* 0 when valid_sessions == 0 */
    int64_t duration_outliers;        /* duration outside its fences */
    int64_t actions_outliers;         /* actions outside their fences */
    double multiplier;                /* k */
} engage_iqr_stats_t;

/** Type-7 quantile p (0 <= p <= 1) of sorted[0..n) (ascending). Returns NaN
 *  when n == 0 or p is outside [0, 1] or NaN. */
double engage_iqr_quantile(const int64_t *sorted, size_t n, double p);

/** Computes the statistics of the n sessions s[0..n) (any order; the result
 *  does not depend on it) with fence multiplier k (finite, >= 0) into *out.
 *  s may be NULL when n == 0. Allocates O(n) scratch memory, freed before
 *  returning. Returns OK, INVALID_ARG (bad k, NULL out) or NOMEM. */
engage_err_t engage_iqr_compute(const engage_iqr_session_t *s, size_t n, double k,
                                engage_iqr_stats_t *out);

#endif
