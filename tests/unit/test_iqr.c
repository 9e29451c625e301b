/*
 * test_iqr.c - type-7 quantiles and the per-day IQR statistics (src/iqr.c).
 *
 * Every expected number here is worked out by hand in the comments (and
 * agrees with numpy.percentile's default, see tests/oracle/test_oracle.py).
 * Doubles are compared exactly: for these inputs every step is exact.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "iqr.h"

#define assert_dbl(actual, expected)                                                       \
    do {                                                                                   \
        double a_ = (actual), e_ = (expected);                                             \
        if (!(a_ == e_))                                                                   \
            fail_msg("%s = %.17g, expected %.17g", #actual, a_, e_);                        \
    } while (0)

static double q(const int64_t *x, size_t n, double p) { return engage_iqr_quantile(x, n, p); }

/* ---- engage_iqr_quantile ---------------------------------------------------- */

static void test_quantile_n1(void **st) {
    (void)st;
    int64_t x[] = {7};
    /* h = 0 * p = 0 for every p: the only value */
    assert_dbl(q(x, 1, 0.0), 7);
    assert_dbl(q(x, 1, 0.25), 7);
    assert_dbl(q(x, 1, 0.5), 7);
    assert_dbl(q(x, 1, 0.75), 7);
    assert_dbl(q(x, 1, 1.0), 7);
}

static void test_quantile_n2(void **st) {
    (void)st;
    int64_t x[] = {10, 20};
    /* h = 0.25: 10 + 0.25 * 10; h = 0.75: 10 + 0.75 * 10 */
    assert_dbl(q(x, 2, 0.25), 12.5);
    assert_dbl(q(x, 2, 0.5), 15);
    assert_dbl(q(x, 2, 0.75), 17.5);
    assert_dbl(q(x, 2, 0.0), 10);
    assert_dbl(q(x, 2, 1.0), 20);
}

static void test_quantile_n3(void **st) {
    (void)st;
    int64_t x[] = {1, 2, 10};
    /* h = 0.5: 1 + 0.5 * 1 = 1.5; h = 1.5: 2 + 0.5 * 8 = 6 */
    assert_dbl(q(x, 3, 0.25), 1.5);
    assert_dbl(q(x, 3, 0.5), 2);
    assert_dbl(q(x, 3, 0.75), 6);
}

static void test_quantile_n4(void **st) {
    (void)st;
    int64_t x[] = {1, 2, 3, 4};
    /* h = 0.75: 1 + 0.75 = 1.75; h = 2.25: 3 + 0.25 = 3.25; median 2.5 */
    assert_dbl(q(x, 4, 0.25), 1.75);
    assert_dbl(q(x, 4, 0.5), 2.5);
    assert_dbl(q(x, 4, 0.75), 3.25);
}

static void test_quantile_n5_odd(void **st) {
    (void)st;
    int64_t x[] = {1, 2, 3, 4, 5};
    /* h = 1 and 3 exactly: closest ranks, no interpolation */
    assert_dbl(q(x, 5, 0.25), 2);
    assert_dbl(q(x, 5, 0.5), 3);
    assert_dbl(q(x, 5, 0.75), 4);
}

static void test_quantile_n6_even(void **st) {
    (void)st;
    int64_t x[] = {0, 10, 20, 30, 40, 50};
    /* h = 1.25: 10 + 0.25 * 10 = 12.5; h = 3.75: 30 + 0.75 * 10 = 37.5 */
    assert_dbl(q(x, 6, 0.25), 12.5);
    assert_dbl(q(x, 6, 0.5), 25);
    assert_dbl(q(x, 6, 0.75), 37.5);
}

static void test_quantile_ties(void **st) {
    (void)st;
    int64_t x[] = {5, 5, 5, 7, 9};
    assert_dbl(q(x, 5, 0.25), 5); /* x[1] */
    assert_dbl(q(x, 5, 0.75), 7); /* x[3] */
    int64_t y[] = {3, 3, 3, 3};
    assert_dbl(q(y, 4, 0.25), 3);
    assert_dbl(q(y, 4, 0.75), 3);
    int64_t z[] = {1, 4, 4, 4, 4, 4, 100};
    /* h = 1.5: 4; h = 4.5: 4 */
    assert_dbl(q(z, 7, 0.25), 4);
    assert_dbl(q(z, 7, 0.75), 4);
}

static void test_quantile_large_and_negative(void **st) {
    (void)st;
    /* 2^50 + small: still exact */
    int64_t x[] = {(1LL << 50), (1LL << 50) + 4};
    assert_dbl(q(x, 2, 0.25), (double)((1LL << 50) + 1));
    assert_dbl(q(x, 2, 0.75), (double)((1LL << 50) + 3));
    int64_t y[] = {-8, -4, 0, 4};
    /* h = 0.75: -8 + 0.75 * 4 = -5; h = 2.25: 0 + 0.25 * 4 = 1 */
    assert_dbl(q(y, 4, 0.25), -5);
    assert_dbl(q(y, 4, 0.75), 1);
}

static void test_quantile_bad_args(void **st) {
    (void)st;
    int64_t x[] = {1, 2};
    assert_true(isnan(q(x, 0, 0.5)));
    assert_true(isnan(q(NULL, 2, 0.5)));
    assert_true(isnan(q(x, 2, -0.1)));
    assert_true(isnan(q(x, 2, 1.1)));
    assert_true(isnan(q(x, 2, NAN)));
}

/* ---- engage_iqr_compute ------------------------------------------------------- */

static engage_iqr_stats_t compute(const engage_iqr_session_t *s, size_t n, double k) {
    engage_iqr_stats_t r;
    assert_int_equal(engage_iqr_compute(s, n, k, &r), ENGAGE_ERR_OK);
    return r;
}

static void test_no_sessions(void **st) {
    (void)st;
    engage_iqr_stats_t r = compute(NULL, 0, 1.5);
    assert_int_equal(r.sessions, 0);
    assert_int_equal(r.has_quartiles, 0);
    assert_int_equal(r.valid_sessions, 0);
    assert_int_equal(r.valid_users, 0);
    assert_dbl(r.valid_avg_duration_ms, 0);
    assert_dbl(r.valid_actions_per_session, 0);
    assert_int_equal(r.duration_outliers, 0);
    assert_int_equal(r.actions_outliers, 0);
    assert_dbl(r.multiplier, 1.5);
}

static void test_one_session(void **st) {
    (void)st;
    engage_iqr_session_t s[] = {{1, 1000, 3}};
    engage_iqr_stats_t r = compute(s, 1, 1.5);
    assert_int_equal(r.sessions, 1);
    assert_int_equal(r.has_quartiles, 1);
    assert_dbl(r.duration_q1, 1000);
    assert_dbl(r.duration_q3, 1000);
    assert_dbl(r.duration_lower_fence, 1000);
    assert_dbl(r.duration_upper_fence, 1000);
    assert_dbl(r.actions_q1, 3);
    assert_dbl(r.actions_q3, 3);
    assert_dbl(r.actions_lower_fence, 3);
    assert_dbl(r.actions_upper_fence, 3);
    assert_int_equal(r.valid_sessions, 1);
    assert_int_equal(r.valid_users, 1);
    assert_dbl(r.valid_avg_duration_ms, 1000);
    assert_dbl(r.valid_actions_per_session, 3);
    assert_int_equal(r.duration_outliers, 0);
    assert_int_equal(r.actions_outliers, 0);
}

static void test_two_sessions(void **st) {
    (void)st;
    engage_iqr_session_t s[] = {{1, 20, 4}, {2, 10, 2}};
    engage_iqr_stats_t r = compute(s, 2, 1.5);
    /* durations [10, 20]: 12.5, 17.5, IQR 5, fences [5, 25];
     * actions [2, 4]: 2.5, 3.5, IQR 1, fences [1, 5] */
    assert_dbl(r.duration_q1, 12.5);
    assert_dbl(r.duration_q3, 17.5);
    assert_dbl(r.duration_lower_fence, 5);
    assert_dbl(r.duration_upper_fence, 25);
    assert_dbl(r.actions_q1, 2.5);
    assert_dbl(r.actions_q3, 3.5);
    assert_dbl(r.actions_lower_fence, 1);
    assert_dbl(r.actions_upper_fence, 5);
    assert_int_equal(r.valid_sessions, 2);
    assert_int_equal(r.valid_users, 2);
    assert_dbl(r.valid_avg_duration_ms, 15);
    assert_dbl(r.valid_actions_per_session, 3);
}

static void test_three_and_four_sessions(void **st) {
    (void)st;
    /* n = 3, durations [1, 2, 10]: Q1 1.5, Q3 6, IQR 4.5, fences [-5.25, 12.75] */
    engage_iqr_session_t s3[] = {{1, 10, 1}, {1, 1, 1}, {1, 2, 1}};
    engage_iqr_stats_t r = compute(s3, 3, 1.5);
    assert_dbl(r.duration_q1, 1.5);
    assert_dbl(r.duration_q3, 6);
    assert_dbl(r.duration_lower_fence, -5.25);
    assert_dbl(r.duration_upper_fence, 12.75);
    assert_int_equal(r.valid_sessions, 3);
    assert_int_equal(r.valid_users, 1); /* one user, three sessions */
    assert_dbl(r.valid_avg_duration_ms, 13.0 / 3.0);
    /* n = 4, durations [1, 2, 3, 40]: Q1 1.75, Q3 = 3 + 0.25 * 37 = 12.25,
     * IQR 10.5, upper fence 12.25 + 15.75 = 28: 40 is an outlier */
    engage_iqr_session_t s4[] = {{1, 1, 2}, {2, 2, 2}, {3, 3, 2}, {4, 40, 2}};
    r = compute(s4, 4, 1.5);
    assert_dbl(r.duration_q1, 1.75);
    assert_dbl(r.duration_q3, 12.25);
    assert_dbl(r.duration_upper_fence, 28);
    assert_int_equal(r.valid_sessions, 3);
    assert_int_equal(r.valid_users, 3);
    assert_int_equal(r.duration_outliers, 1);
    assert_int_equal(r.actions_outliers, 0);
    assert_dbl(r.valid_avg_duration_ms, 2);
    assert_dbl(r.valid_actions_per_session, 2);
}

static void test_all_equal(void **st) {
    (void)st;
    engage_iqr_session_t s[5];
    for (int i = 0; i < 5; i++)
        s[i] = (engage_iqr_session_t){(uint64_t)i, 300000, 2};
    engage_iqr_stats_t r = compute(s, 5, 1.5);
    assert_dbl(r.duration_q1, 300000);
    assert_dbl(r.duration_q3, 300000);
    assert_dbl(r.duration_lower_fence, 300000);
    assert_dbl(r.duration_upper_fence, 300000);
    assert_dbl(r.actions_lower_fence, 2);
    assert_dbl(r.actions_upper_fence, 2);
    assert_int_equal(r.valid_sessions, 5);
    assert_int_equal(r.valid_users, 5);
    assert_int_equal(r.duration_outliers, 0);
    assert_int_equal(r.actions_outliers, 0);
}

/* IQR = 0 although not every session is equal: the fences collapse onto the
 * common value and only sessions equal to it are valid. */
static void test_iqr_zero_only_equal_valid(void **st) {
    (void)st;
    engage_iqr_session_t s[11];
    for (int i = 0; i < 9; i++)
        s[i] = (engage_iqr_session_t){(uint64_t)(i % 8), 300000, 2}; /* users 0..7 */
    s[9] = (engage_iqr_session_t){20, 300001, 2};                    /* 1 ms longer */
    s[10] = (engage_iqr_session_t){21, 300000, 3};                   /* one more action */
    /* n = 11: h = 2.5 and 7.5; sorted durations have 300000 at 0..9 and
     * 300001 at 10; actions 2 at 0..9, 3 at 10 -> both IQRs 0 */
    engage_iqr_stats_t r = compute(s, 11, 1.5);
    assert_dbl(r.duration_q1, 300000);
    assert_dbl(r.duration_q3, 300000);
    assert_dbl(r.duration_lower_fence, 300000);
    assert_dbl(r.duration_upper_fence, 300000);
    assert_dbl(r.actions_q1, 2);
    assert_dbl(r.actions_q3, 2);
    assert_int_equal(r.valid_sessions, 9);
    assert_int_equal(r.valid_users, 8);
    assert_int_equal(r.duration_outliers, 1);
    assert_int_equal(r.actions_outliers, 1);
    assert_dbl(r.valid_avg_duration_ms, 300000);
    assert_dbl(r.valid_actions_per_session, 2);
    /* whatever k is, a zero IQR stays a point */
    r = compute(s, 11, 1000);
    assert_int_equal(r.valid_sessions, 9);
}

/* Fences are inclusive: a value exactly on a fence is valid. */
static void test_fence_boundary_inclusive(void **st) {
    (void)st;
    /* actions [1, 4, 4, 6, 9]: Q1 4, Q3 6, IQR 2, fences [1, 9]: both ends on
     * a fence. durations = (actions - 1) minutes: [0, 3, 3, 5, 8] min:
     * Q1 180000, Q3 300000, IQR 120000, fences [0, 480000]: both ends too. */
    engage_iqr_session_t s[] = {{1, 0, 1},      {2, 180000, 4}, {3, 180000, 4},
                                {4, 300000, 6}, {5, 480000, 9}};
    engage_iqr_stats_t r = compute(s, 5, 1.5);
    assert_dbl(r.actions_lower_fence, 1);
    assert_dbl(r.actions_upper_fence, 9);
    assert_dbl(r.duration_lower_fence, 0);
    assert_dbl(r.duration_upper_fence, 480000);
    assert_int_equal(r.valid_sessions, 5);
    assert_int_equal(r.duration_outliers, 0);
    assert_int_equal(r.actions_outliers, 0);
    assert_dbl(r.valid_avg_duration_ms, 228000); /* 1140000 / 5 */
    assert_dbl(r.valid_actions_per_session, 4.8);

    /* one step past the upper fences: same quartiles (x[1], x[3]), so the
     * same fences, and the last session is out on both counts */
    s[4].duration_ms = 480001;
    s[4].actions = 10;
    r = compute(s, 5, 1.5);
    assert_dbl(r.duration_upper_fence, 480000);
    assert_dbl(r.actions_upper_fence, 9);
    assert_int_equal(r.valid_sessions, 4);
    assert_int_equal(r.valid_users, 4);
    assert_int_equal(r.duration_outliers, 1);
    assert_int_equal(r.actions_outliers, 1);
    assert_dbl(r.valid_avg_duration_ms, 165000); /* 660000 / 4 */
    assert_dbl(r.valid_actions_per_session, 3.75);

    /* an outlier on one count only still makes the session invalid */
    s[4].duration_ms = 480000;
    s[4].actions = 10;
    r = compute(s, 5, 1.5);
    assert_int_equal(r.valid_sessions, 4);
    assert_int_equal(r.duration_outliers, 0);
    assert_int_equal(r.actions_outliers, 1);
}

static void test_skewed_with_huge_outliers(void **st) {
    (void)st;
    /* durations sorted [100..700, 1e9]: h = 1.75 -> 275, h = 5.25 -> 625,
     * IQR 350, fences [-250, 1150].
     * actions sorted [2, 3, 3, 4, 4, 5, 6, 5000]: h = 1.75 -> 3,
     * h = 5.25 -> 5.25, IQR 2.25, fences [-0.375, 8.625]. */
    engage_iqr_session_t s[] = {
        {1, 100, 2}, {2, 200, 3}, {3, 300, 5000}, {4, 400, 3},
        {5, 500, 4}, {1, 600, 5}, {6, 700, 6},    {7, 1000000000, 4},
    };
    engage_iqr_stats_t r = compute(s, 8, 1.5);
    assert_dbl(r.duration_q1, 275);
    assert_dbl(r.duration_q3, 625);
    assert_dbl(r.duration_lower_fence, -250);
    assert_dbl(r.duration_upper_fence, 1150);
    assert_dbl(r.actions_q1, 3);
    assert_dbl(r.actions_q3, 5.25);
    assert_dbl(r.actions_lower_fence, -0.375);
    assert_dbl(r.actions_upper_fence, 8.625);
    assert_int_equal(r.valid_sessions, 6);
    assert_int_equal(r.valid_users, 5); /* user 1 twice */
    assert_int_equal(r.duration_outliers, 1);
    assert_int_equal(r.actions_outliers, 1);
    assert_dbl(r.valid_avg_duration_ms, 2500.0 / 6.0);
    assert_dbl(r.valid_actions_per_session, 23.0 / 6.0);
}

/* Sums beyond int64 (kept in 128 bits) do not overflow. */
static void test_huge_values(void **st) {
    (void)st;
    engage_iqr_session_t s[4];
    for (int i = 0; i < 4; i++)
        s[i] = (engage_iqr_session_t){(uint64_t)i, 4000000000000000000LL, 2000000000};
    engage_iqr_stats_t r = compute(s, 4, 1.5);
    assert_int_equal(r.valid_sessions, 4);
    assert_dbl(r.valid_avg_duration_ms, 4e18);
    assert_dbl(r.valid_actions_per_session, 2e9);
}

static void test_multiplier(void **st) {
    (void)st;
    /* durations [1, 2, 3, 4, 5] s: Q1 2, Q3 4, IQR 2 */
    engage_iqr_session_t s[] = {{1, 1000, 1}, {2, 2000, 1}, {3, 3000, 1}, {4, 4000, 1},
                                {5, 5000, 1}};
    engage_iqr_stats_t r = compute(s, 5, 0); /* fences = [Q1, Q3] */
    assert_dbl(r.duration_lower_fence, 2000);
    assert_dbl(r.duration_upper_fence, 4000);
    assert_int_equal(r.valid_sessions, 3);
    assert_int_equal(r.duration_outliers, 2);
    assert_dbl(r.multiplier, 0);
    r = compute(s, 5, 0.5); /* [1000, 5000]: inclusive, all valid */
    assert_dbl(r.duration_lower_fence, 1000);
    assert_dbl(r.duration_upper_fence, 5000);
    assert_int_equal(r.valid_sessions, 5);
    r = compute(s, 5, 0.25); /* [1500, 4500] */
    assert_int_equal(r.valid_sessions, 3);
    assert_dbl(r.multiplier, 0.25);
}

static void test_order_independent(void **st) {
    (void)st;
    enum { N = 501 };
    engage_iqr_session_t *s = malloc(N * sizeof(*s));
    uint64_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int64_t d = (int64_t)((x >> 33) % 3600000);
        if (i % 50 == 0)
            d *= 100; /* a few huge ones */
        s[i] = (engage_iqr_session_t){(x >> 20) % 97, d, (int64_t)((x >> 40) % 30) + 1};
    }
    engage_iqr_stats_t a = compute(s, N, 1.5);
    for (int i = N - 1; i > 0; i--) { /* deterministic shuffle */
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int j = (int)((x >> 33) % (uint64_t)(i + 1));
        engage_iqr_session_t t = s[i];
        s[i] = s[j];
        s[j] = t;
    }
    engage_iqr_stats_t b = compute(s, N, 1.5);
    assert_int_equal(a.sessions, b.sessions);
    assert_int_equal(a.has_quartiles, b.has_quartiles);
    assert_dbl(a.duration_q1, b.duration_q1);
    assert_dbl(a.duration_q3, b.duration_q3);
    assert_dbl(a.actions_q1, b.actions_q1);
    assert_dbl(a.actions_q3, b.actions_q3);
    assert_dbl(a.duration_lower_fence, b.duration_lower_fence);
    assert_dbl(a.duration_upper_fence, b.duration_upper_fence);
    assert_dbl(a.actions_lower_fence, b.actions_lower_fence);
    assert_dbl(a.actions_upper_fence, b.actions_upper_fence);
    assert_int_equal(a.valid_sessions, b.valid_sessions);
    assert_int_equal(a.valid_users, b.valid_users);
    assert_dbl(a.valid_avg_duration_ms, b.valid_avg_duration_ms);
    assert_dbl(a.valid_actions_per_session, b.valid_actions_per_session);
    assert_int_equal(a.duration_outliers, b.duration_outliers);
    assert_int_equal(a.actions_outliers, b.actions_outliers);
    assert_true(a.duration_outliers > 0);
    assert_true(a.valid_sessions > 0 && a.valid_sessions < N);
    free(s);
}

static void test_bad_args(void **st) {
    (void)st;
    engage_iqr_session_t s[] = {{1, 1, 1}};
    engage_iqr_stats_t r;
    assert_int_equal(engage_iqr_compute(s, 1, -1, &r), ENGAGE_ERR_INVALID_ARG);
    assert_int_equal(engage_iqr_compute(s, 1, NAN, &r), ENGAGE_ERR_INVALID_ARG);
    assert_int_equal(engage_iqr_compute(s, 1, INFINITY, &r), ENGAGE_ERR_INVALID_ARG);
    assert_int_equal(engage_iqr_compute(s, 1, 1.5, NULL), ENGAGE_ERR_INVALID_ARG);
    assert_int_equal(engage_iqr_compute(NULL, 1, 1.5, &r), ENGAGE_ERR_INVALID_ARG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantile_n1),
        cmocka_unit_test(test_quantile_n2),
        cmocka_unit_test(test_quantile_n3),
        cmocka_unit_test(test_quantile_n4),
        cmocka_unit_test(test_quantile_n5_odd),
        cmocka_unit_test(test_quantile_n6_even),
        cmocka_unit_test(test_quantile_ties),
        cmocka_unit_test(test_quantile_large_and_negative),
        cmocka_unit_test(test_quantile_bad_args),
        cmocka_unit_test(test_no_sessions),
        cmocka_unit_test(test_one_session),
        cmocka_unit_test(test_two_sessions),
        cmocka_unit_test(test_three_and_four_sessions),
        cmocka_unit_test(test_all_equal),
        cmocka_unit_test(test_iqr_zero_only_equal_valid),
        cmocka_unit_test(test_fence_boundary_inclusive),
        cmocka_unit_test(test_skewed_with_huge_outliers),
        cmocka_unit_test(test_huge_values),
        cmocka_unit_test(test_multiplier),
        cmocka_unit_test(test_order_independent),
        cmocka_unit_test(test_bad_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
