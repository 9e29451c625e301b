/* test_daystore.c - unit tests for src/daystore.c */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "daystore.h"

#define NDAYS 50
#define NUSERS 3000
#define DAY0 20000 /* any base: days are plain numbers */

static uint64_t rng_state = 88172645463325252ULL;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

typedef struct model {
    uint8_t active[NDAYS][NUSERS];
    uint8_t suser[NDAYS][NUSERS];
    int64_t sessions[NDAYS], dur[NDAYS], actions[NDAYS];
} model_t;

static uint64_t model_window(const model_t *m, int day, int n) {
    uint64_t c = 0;
    for (int u = 0; u < NUSERS; u++) {
        for (int d = day - n + 1; d <= day; d++) {
            if (d >= 0 && d < NDAYS && m->active[d][u]) {
                c++;
                break;
            }
        }
    }
    return c;
}

static void fill_random(engage_daystore_t *ds, model_t *m, int skip_every) {
    memset(m, 0, sizeof(*m));
    for (int d = 0; d < NDAYS; d++) {
        if (skip_every && d % skip_every == 3)
            continue; /* days with no data at all */
        /* a per-day density, some users dense ranges (run containers) */
        int n = (int)(rng() % 1500);
        for (int k = 0; k < n; k++) {
            uint32_t u = (uint32_t)(rng() % NUSERS);
            if (rng() % 4 == 0)
                u = (uint32_t)(k % NUSERS); /* dense prefix */
            assert_int_equal(engage_daystore_add_active(ds, DAY0 + d, u), ENGAGE_ERR_OK);
            m->active[d][u] = 1;
            if (rng() % 5 == 0) {
                int64_t dur = (int64_t)(rng() % 100000);
                uint32_t act = 1 + (uint32_t)(rng() % 50);
                assert_int_equal(engage_daystore_add_session(ds, DAY0 + d, u, dur, act),
                                 ENGAGE_ERR_OK);
                m->suser[d][u] = 1;
                m->sessions[d]++;
                m->dur[d] += dur;
                m->actions[d] += act;
            }
        }
    }
}

static void check_against_model(const engage_daystore_t *ds, const model_t *m) {
    for (int d = 0; d < NDAYS; d++) {
        uint64_t dau = 0, su = 0;
        for (int u = 0; u < NUSERS; u++) {
            dau += m->active[d][u];
            su += m->suser[d][u];
        }
        assert_int_equal(engage_daystore_dau(ds, DAY0 + d), dau);
        assert_int_equal(engage_daystore_window(ds, DAY0 + d, 1), dau);
        assert_int_equal(engage_daystore_window(ds, DAY0 + d, 7), model_window(m, d, 7));
        assert_int_equal(engage_daystore_window(ds, DAY0 + d, 30), model_window(m, d, 30));
        int n = 1 + (int)(rng() % 70);
        assert_int_equal(engage_daystore_window(ds, DAY0 + d, n), model_window(m, d, n));
        engage_day_stats_t st;
        engage_daystore_stats(ds, DAY0 + d, &st);
        assert_int_equal(st.sessions, m->sessions[d]);
        assert_int_equal(st.session_users, (int64_t)su);
        assert_int_equal(st.sum_duration_ms, m->dur[d]);
        assert_int_equal(st.sum_actions, m->actions[d]);
    }
}

static void test_vs_model(void **state) {
    (void)state;
    model_t *m = malloc(sizeof(*m));
    for (int round = 0; round < 3; round++) {
        engage_daystore_t *ds = engage_daystore_new();
        assert_non_null(ds);
        fill_random(ds, m, round == 1 ? 5 : 0);
        check_against_model(ds, m);
        /* windows past the held range */
        assert_int_equal(engage_daystore_window(ds, DAY0 + NDAYS + 5, 7),
                         model_window(m, NDAYS + 5, 7));
        assert_int_equal(engage_daystore_window(ds, DAY0 + NDAYS + 40, 30), 0);
        assert_int_equal(engage_daystore_window(ds, DAY0 - 1, 30), 0);
        assert_int_equal(engage_daystore_window(ds, DAY0 + 10, 0), 0);
        assert_int_equal(engage_daystore_window(ds, INT32_MIN + 3, 30), 0);
        engage_daystore_destroy(ds);
    }
    free(m);
    engage_daystore_destroy(NULL);
}

static void test_window_edges(void **state) {
    (void)state;
    engage_daystore_t *ds = engage_daystore_new();
    const int32_t d = 19000;
    assert_int_equal(engage_daystore_add_active(ds, d - 30, 1), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_add_active(ds, d - 29, 2), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_add_active(ds, d - 7, 3), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_add_active(ds, d - 6, 4), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_add_active(ds, d, 5), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_add_active(ds, d, 2), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_add_active(ds, d + 1, 6), ENGAGE_ERR_OK);
    /* MAU: day-29 included, day-30 excluded; user 2 counted once */
    assert_int_equal(engage_daystore_window(ds, d, 30), 4); /* 2,3,4,5 */
    /* WAU: day-6 included, day-7 excluded */
    assert_int_equal(engage_daystore_window(ds, d, 7), 3); /* 4,5,2 */
    assert_int_equal(engage_daystore_dau(ds, d), 2);
    assert_int_equal(engage_daystore_dau(ds, d - 1), 0);
    assert_int_equal(engage_daystore_window(ds, d, 31), 5);
    int32_t lo, hi;
    assert_int_equal(engage_daystore_range(ds, &lo, &hi), 1);
    assert_int_equal(lo, d - 30);
    assert_int_equal(hi, d + 1);
    /* drop_before frees days < d - 29 */
    assert_int_equal(engage_daystore_drop_before(ds, d - 29), 1);
    assert_int_equal(engage_daystore_window(ds, d, 31), 4);
    assert_int_equal(engage_daystore_range(ds, &lo, &hi), 1);
    assert_int_equal(lo, d - 29);
    assert_int_equal(engage_daystore_drop_before(ds, d - 29), 0);
    assert_int_equal(engage_daystore_drop_before(ds, d + 100), 5);
    assert_int_equal(engage_daystore_range(ds, &lo, &hi), 0);
    assert_int_equal(engage_daystore_window(ds, d, 30), 0);
    /* usable again after being emptied */
    assert_int_equal(engage_daystore_add_active(ds, d, 5), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_dau(ds, d), 1);
    engage_daystore_destroy(ds);
}

static void test_dirty(void **state) {
    (void)state;
    engage_daystore_t *ds = engage_daystore_new();
    const int32_t *days;
    assert_int_equal(engage_daystore_take_dirty(ds, &days), 0);
    assert_int_equal(engage_daystore_add_active(ds, 12, 1), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_add_active(ds, 10, 1), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_add_session(ds, 11, 1, 5, 2), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_take_dirty(ds, &days), 3);
    assert_int_equal(days[0], 10);
    assert_int_equal(days[1], 11);
    assert_int_equal(days[2], 12);
    /* an already active user does not dirty the day */
    assert_int_equal(engage_daystore_add_active(ds, 12, 1), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_take_dirty(ds, &days), 0);
    assert_int_equal(engage_daystore_add_active(ds, 12, 2), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_add_session(ds, 10, 2, 5, 2), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_take_dirty(ds, &days), 2);
    assert_int_equal(days[0], 10);
    assert_int_equal(days[1], 12);
    /* loading does not dirty */
    engage_buf_t b = {0};
    assert_int_equal(engage_daystore_serialize_day(ds, 10, &b), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_load_day(ds, 13, b.p, b.len, NULL, 0), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_take_dirty(ds, &days), 0);
    assert_int_equal(engage_daystore_serialize_day(ds, 99, &b), ENGAGE_ERR_NOT_FOUND);
    engage_buf_free(&b);
    engage_daystore_destroy(ds);
}

static void test_roundtrip(void **state) {
    (void)state;
    model_t *m = malloc(sizeof(*m));
    engage_daystore_t *ds = engage_daystore_new();
    fill_random(ds, m, 7);
    /* a dense day: run containers after run_optimize */
    for (uint32_t u = 0; u < 200000; u++)
        engage_daystore_add_active(ds, DAY0 + NDAYS + 1, u);
    engage_daystore_t *re = engage_daystore_new();
    engage_buf_t b = {0};
    char err[256];
    for (int d = 0; d < NDAYS + 2; d++) {
        engage_buf_reset(&b);
        engage_err_t e = engage_daystore_serialize_day(ds, DAY0 + d, &b);
        if (e == ENGAGE_ERR_NOT_FOUND)
            continue;
        assert_int_equal(e, ENGAGE_ERR_OK);
        assert_memory_equal(b.p, "EGD1", 4);
        assert_int_equal(engage_daystore_load_day(re, DAY0 + d, b.p, b.len, err, sizeof(err)),
                         ENGAGE_ERR_OK);
    }
    check_against_model(re, m);
    assert_int_equal(engage_daystore_dau(re, DAY0 + NDAYS + 1), 200000);
    /* run-optimized dense bitmap is small */
    engage_buf_reset(&b);
    assert_int_equal(engage_daystore_serialize_day(ds, DAY0 + NDAYS + 1, &b), ENGAGE_ERR_OK);
    assert_true(b.len < 1000);
    /* serialization is deterministic and load/serialize is the identity */
    for (int d = 0; d < NDAYS; d++) {
        engage_buf_t x = {0}, y = {0};
        if (engage_daystore_serialize_day(ds, DAY0 + d, &x) != ENGAGE_ERR_OK)
            continue;
        assert_int_equal(engage_daystore_serialize_day(re, DAY0 + d, &y), ENGAGE_ERR_OK);
        assert_int_equal(x.len, y.len);
        assert_memory_equal(x.p, y.p, x.len);
        engage_buf_free(&x);
        engage_buf_free(&y);
    }
    /* serialize appends */
    engage_buf_reset(&b);
    engage_buf_append(&b, "prefix", 6);
    assert_int_equal(engage_daystore_serialize_day(ds, DAY0, &b), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_load_day(re, DAY0 + 500, b.p + 6, b.len - 6, err,
                                              sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_dau(re, DAY0 + 500), engage_daystore_dau(ds, DAY0));
    /* load replaces an existing day */
    assert_int_equal(engage_daystore_add_active(re, DAY0 + 600, 4000000), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_load_day(re, DAY0 + 600, b.p + 6, b.len - 6, err,
                                              sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_dau(re, DAY0 + 600), engage_daystore_dau(ds, DAY0));
    engage_buf_free(&b);
    engage_daystore_destroy(ds);
    engage_daystore_destroy(re);
    free(m);
}

/* Asserts a failed load left day `day` of ds as before. */
static void expect_corrupt(engage_daystore_t *ds, int32_t day, const void *p, size_t len,
                           uint64_t dau_before, int64_t sessions_before) {
    char err[256] = "";
    assert_int_equal(engage_daystore_load_day(ds, day, p, len, err, sizeof(err)),
                     ENGAGE_ERR_CORRUPT);
    assert_true(err[0] != '\0');
    assert_int_equal(engage_daystore_dau(ds, day), dau_before);
    engage_day_stats_t st;
    engage_daystore_stats(ds, day, &st);
    assert_int_equal(st.sessions, sessions_before);
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void reseal(unsigned char *p, size_t len) {
    put_u64(p + len - 8, XXH64(p, len - 8, 0));
}

static void test_corruption(void **state) {
    (void)state;
    engage_daystore_t *ds = engage_daystore_new();
    for (uint32_t u = 0; u < 5000; u += 3)
        engage_daystore_add_active(ds, 7, u);
    for (uint32_t u = 70000; u < 72000; u++)
        engage_daystore_add_active(ds, 7, u);
    engage_daystore_add_session(ds, 7, 3, 1000, 4);
    engage_daystore_add_session(ds, 7, 3, 2000, 5);
    engage_daystore_add_session(ds, 7, 6, 10, 1);
    engage_buf_t b = {0};
    assert_int_equal(engage_daystore_serialize_day(ds, 7, &b), ENGAGE_ERR_OK);
    size_t len = b.len;
    unsigned char *m = malloc(len + 16);

    /* the target store holds a different day 7 that must survive */
    engage_daystore_t *t = engage_daystore_new();
    engage_daystore_add_active(t, 7, 1);
    engage_daystore_add_session(t, 7, 1, 5, 5);

    /* every bit of every byte */
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            memcpy(m, b.p, len);
            m[i] ^= (unsigned char)(1u << bit);
            expect_corrupt(t, 7, m, len, 1, 1);
        }
    }
    /* every truncation */
    for (size_t n = 0; n < len; n++)
        expect_corrupt(t, 7, b.p, n, 1, 1);
    /* extra byte */
    memcpy(m, b.p, len);
    m[len] = 0;
    expect_corrupt(t, 7, m, len + 1, 1, 1);
    expect_corrupt(t, 7, NULL, 0, 1, 1);

    /* Forged bytes with a valid checksum are still validated. */
    const size_t off_la = 32;
    uint32_t la = engage_get_u32(b.p + off_la);
    /* bitmap length pointing past the end */
    memcpy(m, b.p, len);
    put_u32(m + off_la, (uint32_t)len);
    reseal(m, len);
    expect_corrupt(t, 7, m, len, 1, 1);
    /* bitmap length one short / one long of the real bitmap */
    memcpy(m, b.p, len);
    put_u32(m + off_la, la - 1);
    reseal(m, len);
    expect_corrupt(t, 7, m, len, 1, 1);
    memcpy(m, b.p, len);
    put_u32(m + off_la, la + 1);
    reseal(m, len);
    expect_corrupt(t, 7, m, len, 1, 1);
    /* garbage inside the bitmap (cookie) */
    memcpy(m, b.p, len);
    memset(m + off_la + 4, 0xA5, 8);
    reseal(m, len);
    expect_corrupt(t, 7, m, len, 1, 1);
    /* negative sessions; fewer sessions than session users */
    memcpy(m, b.p, len);
    put_u64(m + 8, (uint64_t)-1);
    reseal(m, len);
    expect_corrupt(t, 7, m, len, 1, 1);
    memcpy(m, b.p, len);
    put_u64(m + 8, 1);
    reseal(m, len);
    expect_corrupt(t, 7, m, len, 1, 1);
    /* wrong version with a valid checksum */
    memcpy(m, b.p, len);
    put_u32(m + 4, 2);
    reseal(m, len);
    expect_corrupt(t, 7, m, len, 1, 1);

    /* random garbage with valid checksums never crashes */
    for (int i = 0; i < 2000; i++) {
        memcpy(m, b.p, len);
        int nflip = 1 + (int)(rng() % 8);
        for (int f = 0; f < nflip; f++) {
            size_t pos = 8 + (size_t)(rng() % (len - 16));
            m[pos] ^= (unsigned char)(1 + rng() % 255);
        }
        reseal(m, len);
        char err[128];
        engage_err_t e = engage_daystore_load_day(t, 8, m, len, err, sizeof(err));
        assert_true(e == ENGAGE_ERR_OK || e == ENGAGE_ERR_CORRUPT);
    }

    /* the original still loads */
    assert_int_equal(engage_daystore_load_day(t, 7, b.p, len, NULL, 0), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_dau(t, 7), engage_daystore_dau(ds, 7));
    engage_day_stats_t st;
    engage_daystore_stats(t, 7, &st);
    assert_int_equal(st.sessions, 3);
    assert_int_equal(st.session_users, 2);
    assert_int_equal(st.sum_duration_ms, 3010);
    assert_int_equal(st.sum_actions, 10);
    free(m);
    engage_buf_free(&b);
    engage_daystore_destroy(ds);
    engage_daystore_destroy(t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_model),
        cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_dirty),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_corruption),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
