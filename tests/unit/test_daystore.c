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


/* ---- encodings of the day record ------------------------------------------ */

#include <roaring/roaring.h>

/* A record with the given raw sections and a valid checksum. */
static void make_record(engage_buf_t *b, const void *act, size_t la, const void *su, size_t lu,
                        int64_t sessions) {
    engage_buf_reset(b);
    engage_buf_append(b, "EGD1", 4);
    engage_buf_put_u32(b, 1);
    engage_buf_put_u64(b, (uint64_t)sessions);
    engage_buf_put_u64(b, (uint64_t)sessions * 10); /* as build_day() adds them */
    engage_buf_put_u64(b, (uint64_t)sessions * 2);
    engage_buf_put_u32(b, (uint32_t)la);
    engage_buf_append(b, act, la);
    engage_buf_put_u32(b, (uint32_t)lu);
    engage_buf_append(b, su, lu);
    engage_buf_put_u64(b, XXH64(b->p, b->len, 0));
}

/* The portable Roaring bytes of the set v[0..n) (the first releases'
 * only encoding). */
static void roaring_bytes(engage_buf_t *b, const uint32_t *v, size_t n) {
    roaring_bitmap_t *r = roaring_bitmap_of_ptr(n, v);
    roaring_bitmap_run_optimize(r);
    engage_buf_reset(b);
    engage_buf_reserve(b, roaring_bitmap_portable_size_in_bytes(r));
    b->len = roaring_bitmap_portable_serialize(r, b->p);
    roaring_bitmap_free(r);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

/* Sorts and dedups v[0..n); returns the new n. */
static size_t sort_unique(uint32_t *v, size_t n) {
    qsort(v, n, sizeof(*v), cmp_u32);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || v[i] != v[k - 1])
            v[k++] = v[i];
    return k;
}

typedef struct shape {
    uint32_t *act, *su;
    size_t nact, nsu;
} shape_t;

/* Shapes that make the writer choose each encoding. */
static void make_shape(int kind, shape_t *sh) {
    size_t cap = 250000;
    sh->act = malloc(cap * sizeof(uint32_t));
    sh->su = malloc(cap * sizeof(uint32_t));
    sh->nact = sh->nsu = 0;
    switch (kind) {
    case 0: /* sparse: gaps */
        for (int i = 0; i < 3000; i++)
            sh->act[sh->nact++] = (uint32_t)(rng() % 200000);
        break;
    case 1: /* 40% of a range: bits */
        for (uint32_t u = 1000; u < 60000; u++)
            if (rng() % 5 < 2)
                sh->act[sh->nact++] = u;
        break;
    case 2: /* dense range: Roaring run containers */
        for (uint32_t u = 0; u < 200000; u++)
            sh->act[sh->nact++] = u;
        break;
    case 3: /* nothing active, sessions only (all extras) */
        break;
    case 4: /* extremes of the ordinal range */
        sh->act[sh->nact++] = 0;
        sh->act[sh->nact++] = 1;
        sh->act[sh->nact++] = UINT32_MAX - 1;
        sh->act[sh->nact++] = UINT32_MAX;
        break;
    default: /* small random */
        for (int i = 0, n = (int)(rng() % 40); i < n; i++)
            sh->act[sh->nact++] = (uint32_t)rng();
        break;
    }
    sh->nact = sort_unique(sh->act, sh->nact);
    /* session users: most active users, some extras */
    for (size_t i = 0; i < sh->nact; i++)
        if (rng() % 50 != 0)
            sh->su[sh->nsu++] = sh->act[i];
    for (int i = 0, n = kind == 3 ? 20 : (int)(rng() % 3); i < n; i++)
        sh->su[sh->nsu++] = (uint32_t)rng();
    sh->nsu = sort_unique(sh->su, sh->nsu);
}

static void build_day(engage_daystore_t *ds, int32_t day, const shape_t *sh) {
    for (size_t i = 0; i < sh->nact; i++)
        assert_int_equal(engage_daystore_add_active(ds, day, sh->act[i]), ENGAGE_ERR_OK);
    for (size_t i = 0; i < sh->nsu; i++)
        assert_int_equal(engage_daystore_add_session(ds, day, sh->su[i], 10, 2), ENGAGE_ERR_OK);
}

static void test_encodings(void **state) {
    (void)state;
    const unsigned char want_act[] = {0xE1, 0xE2, 0x3B, 0xE1, 0xE1};
    for (int kind = 0; kind < 12; kind++) {
        shape_t sh;
        make_shape(kind, &sh);
        engage_daystore_t *ds = engage_daystore_new(), *re = engage_daystore_new();
        build_day(ds, 100, &sh);
        engage_buf_t b = {0}, c = {0}, ra = {0}, rs = {0}, legacy = {0};
        char err[256];
        assert_int_equal(engage_daystore_serialize_day(ds, 100, &b), ENGAGE_ERR_OK);
        /* the chosen encodings */
        uint32_t la = engage_get_u32(b.p + 32);
        if (kind < 5)
            assert_int_equal((unsigned char)b.p[36], want_act[kind]);
        if (kind < 2) /* ranks; dense runs and tiny sets may be smaller as themselves */
            assert_int_equal((unsigned char)b.p[36 + la + 4], 0xE3);
        /* every encoding is smaller than Roaring alone */
        roaring_bytes(&ra, sh.act, sh.nact);
        roaring_bytes(&rs, sh.su, sh.nsu);
        assert_true(la <= ra.len);
        make_record(&legacy, ra.p, ra.len, rs.p, rs.len, (int64_t)sh.nsu);
        if (sh.nsu > 100)
            assert_true(b.len <= legacy.len);
        if (kind == 0)
            assert_true(b.len * 2 < legacy.len);
        /* the first releases' records read, and give the same sets */
        assert_int_equal(engage_daystore_load_day(re, 100, legacy.p, legacy.len, err,
                                                  sizeof(err)),
                         ENGAGE_ERR_OK);
        assert_int_equal(engage_daystore_serialize_day(re, 100, &c), ENGAGE_ERR_OK);
        assert_int_equal(c.len, b.len);
        assert_memory_equal(c.p, b.p, b.len);
        /* the new encodings read back to the same sets (load + serialize is
         * the identity; equal bytes mean equal sets) */
        assert_int_equal(engage_daystore_load_day(re, 101, b.p, b.len, err, sizeof(err)),
                         ENGAGE_ERR_OK);
        engage_buf_reset(&c);
        assert_int_equal(engage_daystore_serialize_day(re, 101, &c), ENGAGE_ERR_OK);
        assert_int_equal(c.len, b.len);
        assert_memory_equal(c.p + 8, b.p + 8, b.len - 16); /* the day is not in the bytes */
        assert_int_equal(engage_daystore_dau(re, 101), sh.nact);
        assert_int_equal(engage_daystore_window(re, 101, 2), sh.nact); /* 100 and 101 equal */
        engage_day_stats_t st;
        engage_daystore_stats(re, 101, &st);
        assert_int_equal(st.session_users, (int64_t)sh.nsu);
        assert_int_equal(st.sessions, (int64_t)sh.nsu);
        engage_buf_free(&b);
        engage_buf_free(&c);
        engage_buf_free(&ra);
        engage_buf_free(&rs);
        engage_buf_free(&legacy);
        engage_daystore_destroy(ds);
        engage_daystore_destroy(re);
        free(sh.act);
        free(sh.su);
    }
}

/* Loads a record made of raw sections; returns the result. */
static engage_err_t load_raw(const void *act, size_t la, const void *su, size_t lu,
                             int64_t sessions) {
    engage_daystore_t *t = engage_daystore_new();
    engage_buf_t b = {0};
    char err[256] = "";
    make_record(&b, act, la, su, lu, sessions);
    engage_err_t e = engage_daystore_load_day(t, 5, b.p, b.len, err, sizeof(err));
    if (e != ENGAGE_ERR_OK) {
        assert_int_equal(e, ENGAGE_ERR_CORRUPT);
        assert_true(err[0] != '\0');
        assert_int_equal(engage_daystore_range(t, &(int32_t){0}, &(int32_t){0}), 0);
    }
    engage_buf_free(&b);
    engage_daystore_destroy(t);
    return e;
}

static void test_forged_encodings(void **state) {
    (void)state;
    /* an empty set as gaps, and sessions-only day sections */
    const unsigned char none[] = {0xE1, 0, 0, 0, 0};
    const unsigned char ranks_none[] = {0xE3, 5, 0, 0, 0, 0xE1, 0, 0, 0, 0,
                                        5,    0, 0, 0, 0xE1, 0, 0, 0, 0};
    assert_int_equal(load_raw(none, 5, ranks_none, sizeof(ranks_none), 0), ENGAGE_ERR_OK);
    assert_int_equal(load_raw(none, 5, none, 5, 0), ENGAGE_ERR_OK);

    /* gaps */
    const unsigned char g_ok[] = {0xE1, 3, 0, 0, 0, 5, 0, 0x81, 0x01}; /* 5, 6, 136 */
    assert_int_equal(load_raw(g_ok, sizeof(g_ok), none, 5, 0), ENGAGE_ERR_OK);
    const unsigned char g_more[] = {0xE1, 4, 0, 0, 0, 5, 0, 0x81, 0x01};
    const unsigned char g_less[] = {0xE1, 2, 0, 0, 0, 5, 0, 0x81, 0x01};
    const unsigned char g_huge[] = {0xE1, 0xff, 0xff, 0xff, 0xff, 5};
    const unsigned char g_overlong[] = {0xE1, 1, 0, 0, 0, 0x85, 0x00};
    const unsigned char g_trunc[] = {0xE1, 1, 0, 0, 0, 0x85};
    const unsigned char g_6bytes[] = {0xE1, 1, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x81, 0x01};
    const unsigned char g_over32[] = {0xE1, 1, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x10};
    const unsigned char g_wrap[] = {0xE1, 2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0};
    const unsigned char g_max[] = {0xE1, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f};
    assert_int_equal(load_raw(g_max, sizeof(g_max), none, 5, 0), ENGAGE_ERR_OK);
    const struct {
        const unsigned char *p;
        size_t n;
    } bad[] = {{g_more, sizeof(g_more)},         {g_less, sizeof(g_less)},
               {g_huge, sizeof(g_huge)},         {g_overlong, sizeof(g_overlong)},
               {g_trunc, sizeof(g_trunc)},       {g_6bytes, sizeof(g_6bytes)},
               {g_over32, sizeof(g_over32)},     {g_wrap, sizeof(g_wrap)},
               {(const unsigned char *)"\xE1", 1}, {(const unsigned char *)"", 0}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (load_raw(bad[i].p, bad[i].n, none, 5, 0) != ENGAGE_ERR_CORRUPT)
            fail_msg("gaps case %zu loaded", i);

    /* bits: base 7, 10 bits, members 7, 9, 16 */
    const unsigned char b_ok[] = {0xE2, 7, 0, 0, 0, 10, 0, 0, 0, 0x05, 0x02};
    assert_int_equal(load_raw(b_ok, sizeof(b_ok), none, 5, 0), ENGAGE_ERR_OK);
    const unsigned char b_zero[] = {0xE2, 7, 0, 0, 0, 0, 0, 0, 0};
    const unsigned char b_first[] = {0xE2, 7, 0, 0, 0, 10, 0, 0, 0, 0x04, 0x02};
    const unsigned char b_last[] = {0xE2, 7, 0, 0, 0, 10, 0, 0, 0, 0x05, 0x00};
    const unsigned char b_stray[] = {0xE2, 7, 0, 0, 0, 10, 0, 0, 0, 0x05, 0x06};
    const unsigned char b_short[] = {0xE2, 7, 0, 0, 0, 10, 0, 0, 0, 0x05};
    const unsigned char b_long[] = {0xE2, 7, 0, 0, 0, 10, 0, 0, 0, 0x05, 0x02, 0};
    const unsigned char b_wrap[] = {0xE2, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0x03};
    const unsigned char b_hdr[] = {0xE2, 7, 0, 0, 0, 10, 0, 0};
    const struct {
        const unsigned char *p;
        size_t n;
    } badb[] = {{b_zero, sizeof(b_zero)},   {b_first, sizeof(b_first)},
                {b_last, sizeof(b_last)},   {b_stray, sizeof(b_stray)},
                {b_short, sizeof(b_short)}, {b_long, sizeof(b_long)},
                {b_wrap, sizeof(b_wrap)},   {b_hdr, sizeof(b_hdr)}};
    for (size_t i = 0; i < sizeof(badb) / sizeof(badb[0]); i++)
        if (load_raw(badb[i].p, badb[i].n, none, 5, 0) != ENGAGE_ERR_CORRUPT)
            fail_msg("bits case %zu loaded", i);

    /* ranks over the active set {5, 6, 136} */
    const unsigned char r_ok[] = {0xE3, 7, 0, 0, 0, 0xE1, 2, 0, 0, 0, 0, 1, /* ranks 0, 2 */
                                  6,    0, 0, 0, 0xE1, 1, 0, 0, 0, 9};    /* extra 9 */
    assert_int_equal(load_raw(g_ok, sizeof(g_ok), r_ok, sizeof(r_ok), 3), ENGAGE_ERR_OK);
    /* 3 session users need 3 sessions */
    assert_int_equal(load_raw(g_ok, sizeof(g_ok), r_ok, sizeof(r_ok), 2), ENGAGE_ERR_CORRUPT);
    unsigned char m[sizeof(r_ok)];
    /* a rank past the active users (rank 3 of 3) */
    memcpy(m, r_ok, sizeof(m));
    m[11] = 2; /* ranks 0, 3 */
    assert_int_equal(load_raw(g_ok, sizeof(g_ok), m, sizeof(m), 3), ENGAGE_ERR_CORRUPT);
    /* an extra that is active */
    memcpy(m, r_ok, sizeof(m));
    m[sizeof(m) - 1] = 6;
    assert_int_equal(load_raw(g_ok, sizeof(g_ok), m, sizeof(m), 3), ENGAGE_ERR_CORRUPT);
    /* lengths that do not fill the section */
    memcpy(m, r_ok, sizeof(m));
    m[1] = 6;
    assert_int_equal(load_raw(g_ok, sizeof(g_ok), m, sizeof(m), 3), ENGAGE_ERR_CORRUPT);
    memcpy(m, r_ok, sizeof(m));
    m[12] = 7;
    assert_int_equal(load_raw(g_ok, sizeof(g_ok), m, sizeof(m), 3), ENGAGE_ERR_CORRUPT);
    assert_int_equal(load_raw(g_ok, sizeof(g_ok), r_ok, sizeof(r_ok) - 1, 3),
                     ENGAGE_ERR_CORRUPT);
    assert_int_equal(load_raw(g_ok, sizeof(g_ok), r_ok, 3, 3), ENGAGE_ERR_CORRUPT);
    /* ranks are for session users only, and do not nest */
    assert_int_equal(load_raw(r_ok, sizeof(r_ok), none, 5, 0), ENGAGE_ERR_CORRUPT);
    unsigned char nest[5 + 4 + sizeof(r_ok) + 4 + 5];
    size_t k = 0;
    nest[k++] = 0xE3;
    nest[k++] = (unsigned char)sizeof(r_ok), nest[k++] = 0, nest[k++] = 0, nest[k++] = 0;
    memcpy(nest + k, r_ok, sizeof(r_ok));
    k += sizeof(r_ok);
    nest[k++] = 5, nest[k++] = 0, nest[k++] = 0, nest[k++] = 0;
    memcpy(nest + k, none, 5);
    k += 5;
    assert_int_equal(load_raw(g_ok, sizeof(g_ok), nest, k, 3), ENGAGE_ERR_CORRUPT);
    /* an unknown tag */
    const unsigned char unk[] = {0xE4, 0, 0, 0, 0};
    assert_int_equal(load_raw(unk, sizeof(unk), none, 5, 0), ENGAGE_ERR_CORRUPT);
    assert_int_equal(load_raw(none, 5, unk, sizeof(unk), 0), ENGAGE_ERR_CORRUPT);

    /* random mutations of a valid record of each encoding never crash */
    for (int kind = 0; kind < 5; kind++) {
        shape_t sh;
        make_shape(kind == 2 ? 5 : kind, &sh);
        engage_daystore_t *ds = engage_daystore_new();
        build_day(ds, 9, &sh);
        engage_buf_t b = {0};
        assert_int_equal(engage_daystore_serialize_day(ds, 9, &b), ENGAGE_ERR_OK);
        unsigned char *x = malloc(b.len);
        for (int i = 0; i < 300; i++) {
            memcpy(x, b.p, b.len);
            for (int f = 1 + (int)(rng() % 4); f > 0; f--)
                x[32 + rng() % (b.len - 40)] ^= (unsigned char)(1 + rng() % 255);
            reseal(x, b.len);
            engage_daystore_t *t = engage_daystore_new();
            engage_err_t e = engage_daystore_load_day(t, 9, x, b.len, NULL, 0);
            assert_true(e == ENGAGE_ERR_OK || e == ENGAGE_ERR_CORRUPT);
            engage_daystore_destroy(t);
        }
        free(x);
        engage_buf_free(&b);
        engage_daystore_destroy(ds);
        free(sh.act);
        free(sh.su);
    }
}

/* The seen-bitsets of hot days: repeats do not dirty, a replaced or dropped
 * day starts over, more days than HOT_MAX and huge ordinals work. */
static void test_hot_days(void **state) {
    (void)state;
    enum { DAYS = 12, USERS = 5000 };
    static uint8_t in[DAYS][USERS];
    memset(in, 0, sizeof(in));
    engage_daystore_t *ds = engage_daystore_new();
    const int32_t *days;
    for (int i = 0; i < 60000; i++) {
        /* mostly the newest days, sometimes an old one */
        int d = rng() % 8 == 0 ? (int)(rng() % DAYS) : (int)((i / 5000 + rng() % 2) % DAYS);
        uint32_t u = (uint32_t)(rng() % USERS);
        uint32_t ord = u < 10 ? (uint32_t)(1u << 30) + u : u * 7; /* some beyond 2^24 */
        engage_daystore_take_dirty(ds, &days);
        assert_int_equal(engage_daystore_add_active(ds, 500 + d, ord), ENGAGE_ERR_OK);
        size_t nd = engage_daystore_take_dirty(ds, &days);
        assert_int_equal(nd, in[d][u] ? 0 : 1); /* dirty exactly when new */
        in[d][u] = 1;
    }
    for (int d = 0; d < DAYS; d++) {
        uint64_t n = 0;
        for (int u = 0; u < USERS; u++)
            n += in[d][u];
        assert_int_equal(engage_daystore_dau(ds, 500 + d), n);
    }
    /* replace a hot day with a copy of a day holding fewer users: its old
     * members count as new again */
    engage_daystore_t *other = engage_daystore_new();
    engage_buf_t b = {0};
    assert_int_equal(engage_daystore_add_active(other, 1, 7), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_serialize_day(other, 1, &b), ENGAGE_ERR_OK);
    int32_t hot = 500 + (60000 / 5000) % DAYS; /* recently written */
    hot = 500 + DAYS - 1;
    assert_int_equal(engage_daystore_load_day(ds, hot, b.p, b.len, NULL, 0), ENGAGE_ERR_OK);
    engage_daystore_take_dirty(ds, &days);
    assert_int_equal(engage_daystore_add_active(ds, hot, 7), ENGAGE_ERR_OK); /* user 1 */
    assert_int_equal(engage_daystore_take_dirty(ds, &days), 0);
    assert_int_equal(engage_daystore_add_active(ds, hot, 14), ENGAGE_ERR_OK); /* user 2 */
    assert_int_equal(engage_daystore_take_dirty(ds, &days), 1);
    assert_int_equal(engage_daystore_dau(ds, hot), 2);
    /* dropped days come back empty */
    assert_int_equal(engage_daystore_drop_before(ds, 500 + DAYS), DAYS);
    assert_int_equal(engage_daystore_add_active(ds, 500, 14), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_take_dirty(ds, &days), 1);
    assert_int_equal(engage_daystore_dau(ds, 500), 1);
    /* the largest ordinal */
    assert_int_equal(engage_daystore_add_active(ds, 500, UINT32_MAX), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_add_active(ds, 500, UINT32_MAX), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_dau(ds, 500), 2);
    engage_buf_free(&b);
    engage_daystore_destroy(other);
    engage_daystore_destroy(ds);
}

/* Pending additions: more first adds and session users than one pending
 * list holds (a flush in between), reads between adds, a day cooled while
 * it has pending users; every read and the serialized bytes see them all. */
static void test_pending(void **state) {
    (void)state;
    enum { USERS = 200000 };
    static uint8_t act[USERS], su[USERS];
    memset(act, 0, sizeof(act));
    memset(su, 0, sizeof(su));
    engage_daystore_t *ds = engage_daystore_new();
    uint64_t nact = 0, nsu = 0;
    int64_t nsess = 0;
    for (int i = 0; i < 400000; i++) {
        uint32_t u = (uint32_t)(rng() % USERS);
        assert_int_equal(engage_daystore_add_active(ds, 100, u), ENGAGE_ERR_OK);
        nact += !act[u];
        act[u] = 1;
        if (i % 2 == 0) {
            assert_int_equal(engage_daystore_add_session(ds, 100, u, 10, 1), ENGAGE_ERR_OK);
            nsu += !su[u];
            su[u] = 1;
            nsess++;
        }
        if (i % 199999 == 0) { /* a pending list fills in between */
            assert_int_equal(engage_daystore_dau(ds, 100), nact);
            assert_int_equal(engage_daystore_window(ds, 100, 7), nact);
        }
    }
    /* newer days take the hot slots: day 100 cools with users pending */
    for (int d = 101; d <= 105; d++) {
        uint32_t u = USERS + 10 + (uint32_t)d;
        assert_int_equal(engage_daystore_add_active(ds, d, u), ENGAGE_ERR_OK);
    }
    assert_int_equal(engage_daystore_add_active(ds, 100, USERS + 1), ENGAGE_ERR_OK);
    nact++;
    assert_int_equal(engage_daystore_dau(ds, 100), nact);
    assert_int_equal(engage_daystore_window(ds, 105, 6), nact + 5);
    engage_day_stats_t st;
    engage_daystore_stats(ds, 100, &st);
    assert_int_equal(st.sessions, nsess);
    assert_int_equal(st.session_users, nsu);
    engage_buf_t b = {0}, b2 = {0};
    assert_int_equal(engage_daystore_serialize_day(ds, 100, &b), ENGAGE_ERR_OK);
    engage_daystore_t *t = engage_daystore_new();
    assert_int_equal(engage_daystore_load_day(t, 100, b.p, b.len, NULL, 0), ENGAGE_ERR_OK);
    assert_int_equal(engage_daystore_dau(t, 100), nact);
    engage_daystore_stats(t, 100, &st);
    assert_int_equal(st.session_users, nsu);
    assert_int_equal(engage_daystore_serialize_day(t, 100, &b2), ENGAGE_ERR_OK);
    assert_int_equal(b2.len, b.len);
    assert_memory_equal(b2.p, b.p, b.len);
    engage_buf_free(&b);
    engage_buf_free(&b2);
    engage_daystore_destroy(t);
    engage_daystore_destroy(ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_model),
        cmocka_unit_test(test_window_edges),
        cmocka_unit_test(test_dirty),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_corruption),
        cmocka_unit_test(test_encodings),
        cmocka_unit_test(test_forged_encodings),
        cmocka_unit_test(test_hot_days),
        cmocka_unit_test(test_pending),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
