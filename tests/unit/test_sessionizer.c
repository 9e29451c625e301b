/* test_sessionizer.c - unit tests for src/sessionizer.c */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sessionizer.h"

#define GAP (30 * 60 * 1000LL)

typedef struct closed {
    uint32_t user;
    int64_t start, last;
    uint32_t actions;
} closed_t;

typedef struct sink {
    closed_t *v;
    size_t n, cap;
    int64_t gap;
} sink_t;

static void sink_cb(void *opaque, uint32_t user, int64_t start_ms, int64_t last_ms,
                    uint32_t actions) {
    sink_t *k = opaque;
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 64;
        k->v = realloc(k->v, k->cap * sizeof(*k->v));
        assert_non_null(k->v);
    }
    closed_t c = {user, start_ms, last_ms, actions};
    k->v[k->n++] = c;
}

/* key order of the close callback: (last + gap, user, start) */
static int key_cmp(const closed_t *a, const closed_t *b, int64_t gap) {
    int64_t da = a->last + gap, db = b->last + gap;
    if (da != db)
        return da < db ? -1 : 1;
    if (a->user != b->user)
        return a->user < b->user ? -1 : 1;
    if (a->start != b->start)
        return a->start < b->start ? -1 : 1;
    return 0;
}

static void assert_closed(const closed_t *c, uint32_t user, int64_t start, int64_t last,
                          uint32_t actions) {
    assert_int_equal(c->user, user);
    assert_int_equal(c->start, start);
    assert_int_equal(c->last, last);
    assert_int_equal(c->actions, actions);
}

static void test_exact_gap_edge(void **state) {
    (void)state;
    engage_sessionizer_t *s = engage_sessionizer_new(GAP);
    assert_non_null(s);
    assert_int_equal(engage_sessionizer_add(s, 1, 0, 11), 1);
    /* exactly gap later (30:00.000): same session */
    assert_int_equal(engage_sessionizer_add(s, 1, GAP, 12), 1);
    assert_int_equal(engage_sessionizer_open_count(s), 1);
    /* gap + 1 ms after the last action (30:00.001): new session */
    assert_int_equal(engage_sessionizer_add(s, 1, 2 * GAP + 1, 13), 1);
    assert_int_equal(engage_sessionizer_open_count(s), 2);
    /* backwards: exactly gap before a start continues it */
    assert_int_equal(engage_sessionizer_add(s, 2, 10 * GAP, 21), 1);
    assert_int_equal(engage_sessionizer_add(s, 2, 9 * GAP, 22), 1);
    assert_int_equal(engage_sessionizer_add(s, 2, 8 * GAP - 1, 23), 1);
    assert_int_equal(engage_sessionizer_open_count(s), 4);

    sink_t k = {0};
    assert_int_equal(engage_sessionizer_close_all(s, sink_cb, &k), 4);
    assert_closed(&k.v[0], 1, 0, GAP, 2);
    assert_closed(&k.v[1], 1, 2 * GAP + 1, 2 * GAP + 1, 1);
    assert_closed(&k.v[2], 2, 8 * GAP - 1, 8 * GAP - 1, 1);
    assert_closed(&k.v[3], 2, 9 * GAP, 10 * GAP, 2);
    assert_int_equal(engage_sessionizer_open_count(s), 0);
    assert_int_equal(engage_sessionizer_min_open_start(s), INT64_MAX);
    free(k.v);
    engage_sessionizer_destroy(s);
}

static void test_out_of_order_extends_start(void **state) {
    (void)state;
    engage_sessionizer_t *s = engage_sessionizer_new(GAP);
    assert_int_equal(engage_sessionizer_add(s, 7, 5000000, 1), 1);
    assert_int_equal(engage_sessionizer_min_open_start(s), 5000000);
    assert_int_equal(engage_sessionizer_add(s, 7, 4000000, 2), 1);
    assert_int_equal(engage_sessionizer_min_open_start(s), 4000000);
    assert_int_equal(engage_sessionizer_add(s, 7, 3000000, 3), 1);
    assert_int_equal(engage_sessionizer_add(s, 7, 4500000, 4), 1);
    assert_int_equal(engage_sessionizer_open_count(s), 1);
    assert_int_equal(engage_sessionizer_min_open_start(s), 3000000);
    /* the session must not close before last + gap has passed */
    sink_t k = {0};
    assert_int_equal(engage_sessionizer_close(s, 5000000 + GAP, sink_cb, &k), 0);
    assert_int_equal(engage_sessionizer_close(s, 5000000 + GAP + 1, sink_cb, &k), 1);
    assert_closed(&k.v[0], 7, 3000000, 5000000, 4);
    free(k.v);
    engage_sessionizer_destroy(s);
}

static void test_bridge_merges(void **state) {
    (void)state;
    engage_sessionizer_t *s = engage_sessionizer_new(GAP);
    assert_int_equal(engage_sessionizer_add(s, 3, 0, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 3, 100, 2), 1);
    assert_int_equal(engage_sessionizer_add(s, 3, 2 * GAP + 100, 3), 1);
    assert_int_equal(engage_sessionizer_add(s, 3, 2 * GAP + 200, 4), 1);
    assert_int_equal(engage_sessionizer_add(s, 3, 2 * GAP + 300, 5), 1);
    assert_int_equal(engage_sessionizer_open_count(s), 2);
    /* a third session far away stays separate */
    assert_int_equal(engage_sessionizer_add(s, 3, 10 * GAP, 6), 1);
    assert_int_equal(engage_sessionizer_open_count(s), 3);
    /* GAP + 100 is within gap of both the first (last 100) and the second
     * (start 2*GAP + 100): one session */
    assert_int_equal(engage_sessionizer_add(s, 3, GAP + 100, 7), 1);
    assert_int_equal(engage_sessionizer_open_count(s), 2);
    /* duplicates of events from either former session are still caught */
    assert_int_equal(engage_sessionizer_add(s, 3, 0, 1), 0);
    assert_int_equal(engage_sessionizer_add(s, 3, 2 * GAP + 300, 5), 0);
    assert_int_equal(engage_sessionizer_add(s, 3, GAP + 100, 7), 0);
    assert_int_equal(engage_sessionizer_add(s, 3, 10 * GAP, 6), 0);
    /* the merged session closes once, with everything */
    sink_t k = {0};
    assert_int_equal(engage_sessionizer_close(s, 3 * GAP + 301, sink_cb, &k), 1);
    assert_closed(&k.v[0], 3, 0, 2 * GAP + 300, 6);
    assert_int_equal(engage_sessionizer_min_open_start(s), 10 * GAP);
    assert_int_equal(engage_sessionizer_close_all(s, sink_cb, &k), 1);
    assert_closed(&k.v[1], 3, 10 * GAP, 10 * GAP, 1);
    free(k.v);
    engage_sessionizer_destroy(s);
}

static void test_bridge_start_moves_back(void **state) {
    (void)state;
    /* one event both merges two sessions and is the earliest of neither:
     * then a merge where the bridging event extends nothing but actions */
    engage_sessionizer_t *s = engage_sessionizer_new(1000);
    assert_int_equal(engage_sessionizer_add(s, 1, 5000, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 1, 3000, 2), 1);
    assert_int_equal(engage_sessionizer_add(s, 1, 1500, 3), 1); /* 1500 + 1000 < 3000 */
    assert_int_equal(engage_sessionizer_open_count(s), 3);
    assert_int_equal(engage_sessionizer_min_open_start(s), 1500);
    assert_int_equal(engage_sessionizer_add(s, 1, 4000, 4), 1); /* bridges 3000 and 5000 */
    assert_int_equal(engage_sessionizer_open_count(s), 2);
    assert_int_equal(engage_sessionizer_add(s, 1, 2500, 5), 1); /* bridges 1500 and 3000 */
    assert_int_equal(engage_sessionizer_open_count(s), 1);
    assert_int_equal(engage_sessionizer_add(s, 1, 500, 6), 1); /* start moves back */
    assert_int_equal(engage_sessionizer_min_open_start(s), 500);
    sink_t k = {0};
    assert_int_equal(engage_sessionizer_close(s, 6000, sink_cb, &k), 0);
    assert_int_equal(engage_sessionizer_close(s, 6001, sink_cb, &k), 1);
    assert_closed(&k.v[0], 1, 500, 5000, 6);
    free(k.v);
    engage_sessionizer_destroy(s);
}

static void test_duplicates(void **state) {
    (void)state;
    engage_sessionizer_t *s = engage_sessionizer_new(GAP);
    assert_int_equal(engage_sessionizer_add(s, 1, 1000, 42), 1);
    assert_int_equal(engage_sessionizer_add(s, 1, 1000, 42), 0);
    assert_int_equal(engage_sessionizer_add(s, 1, 2000, 42), 0); /* same id, other ts */
    assert_int_equal(engage_sessionizer_add(s, 2, 1000, 42), 1); /* other user */
    /* a hash of 0 is a valid hash */
    assert_int_equal(engage_sessionizer_add(s, 1, 1500, 0), 1);
    assert_int_equal(engage_sessionizer_add(s, 1, 1600, 0), 0);
    /* many hashes (table growth), all caught again */
    for (uint64_t h = 100; h < 5100; h++)
        assert_int_equal(engage_sessionizer_add(s, 1, 3000 + (int64_t)h, h * 0x100000000ULL), 1);
    for (uint64_t h = 100; h < 5100; h++)
        assert_int_equal(engage_sessionizer_add(s, 1, 3000, h * 0x100000000ULL), 0);
    /* a duplicate in a separate open session of the user is caught too */
    assert_int_equal(engage_sessionizer_add(s, 1, 100 * GAP, 43), 1);
    assert_int_equal(engage_sessionizer_open_count(s), 3);
    assert_int_equal(engage_sessionizer_add(s, 1, 1000, 43), 0);
    assert_int_equal(engage_sessionizer_add(s, 1, 100 * GAP, 42), 0);
    sink_t k = {0};
    /* after the first session closes, its ids are forgotten */
    assert_int_equal(engage_sessionizer_close(s, 8100 + GAP + 1, sink_cb, &k), 2);
    assert_closed(&k.v[0], 2, 1000, 1000, 1);
    assert_closed(&k.v[1], 1, 1000, 8099, 5002);
    assert_int_equal(engage_sessionizer_add(s, 1, 99 * GAP, 42), 1);
    assert_int_equal(engage_sessionizer_close_all(s, sink_cb, &k), 1);
    assert_closed(&k.v[2], 1, 99 * GAP, 100 * GAP, 2);
    free(k.v);
    engage_sessionizer_destroy(s);
}

static void test_close_order(void **state) {
    (void)state;
    engage_sessionizer_t *s = engage_sessionizer_new(100);
    /* user 1 starts first but is extended (its heap entry goes stale) */
    assert_int_equal(engage_sessionizer_add(s, 1, 0, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 2, 10, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 1, 50, 2), 1);
    /* equal due: lower user first */
    assert_int_equal(engage_sessionizer_add(s, 9, 20, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 4, 20, 1), 1);
    /* same user, two sessions, same-ish due region */
    assert_int_equal(engage_sessionizer_add(s, 5, 300, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 5, 50, 2), 1);
    assert_int_equal(engage_sessionizer_open_count(s), 6);
    sink_t k = {0};
    assert_int_equal(engage_sessionizer_close(s, 110, sink_cb, &k), 0);
    assert_int_equal(engage_sessionizer_close(s, 111, sink_cb, &k), 1);
    assert_closed(&k.v[0], 2, 10, 10, 1);
    /* due 120 for users 4 and 9, due 150 for user 1 (extended) and user 5's
     * earlier session: ties broken by user */
    assert_int_equal(engage_sessionizer_close(s, 151, sink_cb, &k), 4);
    assert_closed(&k.v[1], 4, 20, 20, 1);
    assert_closed(&k.v[2], 9, 20, 20, 1);
    assert_closed(&k.v[3], 1, 0, 50, 2);
    assert_closed(&k.v[4], 5, 50, 50, 1);
    assert_int_equal(engage_sessionizer_close_all(s, sink_cb, &k), 1);
    assert_closed(&k.v[5], 5, 300, 300, 1);
    for (size_t i = 1; i < k.n; i++)
        assert_true(key_cmp(&k.v[i - 1], &k.v[i], 100) < 0);
    free(k.v);
    engage_sessionizer_destroy(s);
}

static void test_close_watermark_strict(void **state) {
    (void)state;
    engage_sessionizer_t *s = engage_sessionizer_new(GAP);
    assert_int_equal(engage_sessionizer_add(s, 1, 1000, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 2, 2000, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 3, 3000, 1), 1);
    sink_t k = {0};
    assert_int_equal(engage_sessionizer_close(s, 1000 + GAP, sink_cb, &k), 0);
    assert_int_equal(engage_sessionizer_min_open_start(s), 1000);
    assert_int_equal(engage_sessionizer_close(s, 1000 + GAP + 1, sink_cb, &k), 1);
    assert_int_equal(engage_sessionizer_min_open_start(s), 2000);
    assert_int_equal(engage_sessionizer_open_count(s), 2);
    assert_int_equal(engage_sessionizer_close(s, 1000 + GAP + 1, sink_cb, &k), 0);
    assert_int_equal(engage_sessionizer_close(s, 3000 + GAP + 1, sink_cb, &k), 2);
    assert_int_equal(engage_sessionizer_min_open_start(s), INT64_MAX);
    assert_int_equal(k.n, 3);
    /* cb may be NULL */
    assert_int_equal(engage_sessionizer_add(s, 1, 9000000, 1), 1);
    assert_int_equal(engage_sessionizer_close(s, INT64_MAX, NULL, NULL), 1);
    free(k.v);
    engage_sessionizer_destroy(s);
}

static void test_min_open_start(void **state) {
    (void)state;
    engage_sessionizer_t *s = engage_sessionizer_new(10);
    assert_int_equal(engage_sessionizer_min_open_start(s), INT64_MAX);
    assert_int_equal(engage_sessionizer_add(s, 1, 100, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 2, 50, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 3, 70, 1), 1);
    assert_int_equal(engage_sessionizer_min_open_start(s), 50);
    assert_int_equal(engage_sessionizer_add(s, 2, 200, 2), 1); /* new session */
    assert_int_equal(engage_sessionizer_close(s, 61, NULL, NULL), 1); /* user 2 @50 */
    assert_int_equal(engage_sessionizer_min_open_start(s), 70);
    assert_int_equal(engage_sessionizer_close(s, 81, NULL, NULL), 1);
    assert_int_equal(engage_sessionizer_min_open_start(s), 100);
    assert_int_equal(engage_sessionizer_add(s, 1, 95, 2), 1); /* moves back */
    assert_int_equal(engage_sessionizer_min_open_start(s), 95);
    assert_int_equal(engage_sessionizer_close(s, 111, NULL, NULL), 1);
    assert_int_equal(engage_sessionizer_min_open_start(s), 200);
    engage_sessionizer_destroy(s);
}

static void test_dirty(void **state) {
    (void)state;
    engage_sessionizer_t *s = engage_sessionizer_new(10);
    const uint32_t *u;
    assert_int_equal(engage_sessionizer_take_dirty(s, &u), 0);
    assert_int_equal(engage_sessionizer_add(s, 5000, 1, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 3, 1, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 77, 1, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 3, 2, 2), 1);
    assert_int_equal(engage_sessionizer_add(s, 3, 2, 2), 0);
    size_t n = engage_sessionizer_take_dirty(s, &u);
    assert_int_equal(n, 3);
    assert_int_equal(u[0], 3);
    assert_int_equal(u[1], 77);
    assert_int_equal(u[2], 5000);
    /* the list survives later adds until the next take */
    assert_int_equal(engage_sessionizer_add(s, 1, 3, 3), 1);
    assert_int_equal(u[0], 3);
    assert_int_equal(u[2], 5000);
    /* duplicates do not mark dirty; closes do */
    assert_int_equal(engage_sessionizer_add(s, 77, 1, 1), 0);
    n = engage_sessionizer_take_dirty(s, &u);
    assert_int_equal(n, 1);
    assert_int_equal(u[0], 1);
    assert_int_equal(engage_sessionizer_close(s, 13, NULL, NULL), 3);
    n = engage_sessionizer_take_dirty(s, &u);
    assert_int_equal(n, 3);
    assert_int_equal(u[0], 3);
    assert_int_equal(u[1], 77);
    assert_int_equal(u[2], 5000);
    assert_int_equal(engage_sessionizer_take_dirty(s, &u), 0);
    engage_sessionizer_destroy(s);
}

/* Feeds the same tail of events to two sessionizers and checks they
 * behave identically. */
static void assert_same_behaviour(engage_sessionizer_t *a, engage_sessionizer_t *b,
                                  uint32_t user, uint64_t seed) {
    srand((unsigned)seed);
    for (int i = 0; i < 300; i++) {
        int64_t ts = rand() % (40 * GAP);
        uint64_t h = (uint64_t)(rand() % 400);
        int ra = engage_sessionizer_add(a, user, ts, h);
        int rb = engage_sessionizer_add(b, user, ts, h);
        assert_int_equal(ra, rb);
        assert_int_equal(engage_sessionizer_open_count(a), engage_sessionizer_open_count(b));
        assert_int_equal(engage_sessionizer_min_open_start(a),
                         engage_sessionizer_min_open_start(b));
    }
    sink_t ka = {0}, kb = {0};
    engage_sessionizer_close_all(a, sink_cb, &ka);
    engage_sessionizer_close_all(b, sink_cb, &kb);
    assert_int_equal(ka.n, kb.n);
    for (size_t i = 0; i < ka.n; i++)
        assert_closed(&kb.v[i], ka.v[i].user, ka.v[i].start, ka.v[i].last, ka.v[i].actions);
    free(ka.v);
    free(kb.v);
}

static engage_sessionizer_t *build_sample(void) {
    engage_sessionizer_t *s = engage_sessionizer_new(GAP);
    assert_int_equal(engage_sessionizer_add(s, 9, 0, 0), 1); /* hash 0 */
    for (uint64_t h = 1; h < 40; h++)
        assert_int_equal(engage_sessionizer_add(s, 9, (int64_t)h * 1000, h), 1);
    assert_int_equal(engage_sessionizer_add(s, 9, 5 * GAP, 1000), 1);
    assert_int_equal(engage_sessionizer_add(s, 9, 5 * GAP - 7, 1001), 1);
    assert_int_equal(engage_sessionizer_add(s, 10, 20, 5), 1);
    return s;
}

static void test_serialize_roundtrip(void **state) {
    (void)state;
    engage_sessionizer_t *a = build_sample();
    engage_buf_t b = {0};
    assert_int_equal(engage_sessionizer_serialize_user(a, 9, &b), 1);
    assert_int_equal(engage_sessionizer_serialize_user(a, 12345, &b), 0); /* none */
    size_t len9 = b.len;
    engage_sessionizer_t *c = engage_sessionizer_new(GAP);
    char err[256] = "";
    assert_int_equal(engage_sessionizer_load_user(c, 9, b.p, b.len, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(engage_sessionizer_open_count(c), 2);
    assert_int_equal(engage_sessionizer_min_open_start(c), 0);
    const uint32_t *u;
    assert_int_equal(engage_sessionizer_take_dirty(c, &u), 0); /* load is clean */
    /* re-serialization has the same size and the same sessions */
    engage_buf_t b2 = {0};
    assert_int_equal(engage_sessionizer_serialize_user(c, 9, &b2), 1);
    assert_int_equal(b2.len, len9);
    /* duplicates survive the round trip */
    assert_int_equal(engage_sessionizer_add(c, 9, 10, 0), 0);
    assert_int_equal(engage_sessionizer_add(c, 9, 10, 39), 0);
    assert_int_equal(engage_sessionizer_add(c, 9, 10, 1001), 0);
    /* load replaces: loading user 10's bytes over user 9 on a copy */
    engage_buf_t b10 = {0};
    assert_int_equal(engage_sessionizer_serialize_user(a, 10, &b10), 1);
    engage_sessionizer_t *d = engage_sessionizer_new(GAP);
    assert_int_equal(engage_sessionizer_load_user(d, 9, b.p, b.len, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(engage_sessionizer_load_user(d, 9, b10.p, b10.len, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(engage_sessionizer_open_count(d), 1);
    assert_int_equal(engage_sessionizer_min_open_start(d), 20);
    engage_sessionizer_destroy(d);

    /* same behaviour on a random tail of events */
    engage_sessionizer_t *e = engage_sessionizer_new(GAP);
    assert_int_equal(engage_sessionizer_load_user(e, 9, b.p, b.len, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(engage_sessionizer_load_user(e, 10, b10.p, b10.len, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_same_behaviour(a, e, 9, 7);

    engage_buf_free(&b);
    engage_buf_free(&b2);
    engage_buf_free(&b10);
    engage_sessionizer_destroy(a);
    engage_sessionizer_destroy(c);
    engage_sessionizer_destroy(e);
}

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static void expect_corrupt(engage_sessionizer_t *s, const void *p, size_t len,
                           const engage_buf_t *before) {
    char err[256] = "";
    assert_int_equal(engage_sessionizer_load_user(s, 9, p, len, err, sizeof(err)),
                     ENGAGE_ERR_CORRUPT);
    assert_true(err[0] != '\0');
    engage_buf_t now = {0};
    assert_int_equal(engage_sessionizer_serialize_user(s, 9, &now), 1);
    assert_int_equal(now.len, before->len);
    assert_memory_equal(now.p, before->p, now.len);
    engage_buf_free(&now);
    assert_int_equal(engage_sessionizer_open_count(s), 3); /* 2 of user 9 + user 10 */
}

static void test_load_corrupt(void **state) {
    (void)state;
    engage_sessionizer_t *a = build_sample();
    engage_buf_t good = {0}, before = {0};
    assert_int_equal(engage_sessionizer_serialize_user(a, 9, &good), 1);
    assert_int_equal(engage_sessionizer_serialize_user(a, 9, &before), 1);
    unsigned char *m = malloc(good.len + 16);

    /* every truncation */
    for (size_t n = 0; n < good.len; n++)
        expect_corrupt(a, good.p, n, &before);
    /* trailing bytes */
    memcpy(m, good.p, good.len);
    m[good.len] = 0;
    expect_corrupt(a, m, good.len + 1, &before);
    /* bad magic / version */
    memcpy(m, good.p, good.len);
    m[0] = 'X';
    expect_corrupt(a, m, good.len, &before);
    memcpy(m, good.p, good.len);
    m[3] = 2;
    expect_corrupt(a, m, good.len, &before);
    /* zero and huge session counts */
    memcpy(m, good.p, good.len);
    put_u32(m + 4, 0);
    expect_corrupt(a, m, good.len, &before);
    put_u32(m + 4, 0xFFFFFFFFu);
    expect_corrupt(a, m, good.len, &before);
    /* start > last in the first session */
    memcpy(m, good.p, good.len);
    put_u64(m + 8, (uint64_t)INT64_MAX);
    expect_corrupt(a, m, good.len, &before);
    /* actions 0; hash count above actions; hash count huge */
    memcpy(m, good.p, good.len);
    put_u32(m + 24, 0);
    expect_corrupt(a, m, good.len, &before);
    memcpy(m, good.p, good.len);
    put_u32(m + 28, engage_get_u32(m + 24) + 1);
    expect_corrupt(a, m, good.len, &before);
    memcpy(m, good.p, good.len);
    put_u32(m + 28, 0x7FFFFFFFu);
    put_u32(m + 24, 0x7FFFFFFFu);
    expect_corrupt(a, m, good.len, &before);
    /* duplicate hash: copy the first hash over the second */
    memcpy(m, good.p, good.len);
    memcpy(m + 40, m + 32, 8);
    expect_corrupt(a, m, good.len, &before);
    /* duplicate hash across sessions: last hash of the file = first hash */
    memcpy(m, good.p, good.len);
    memcpy(m + good.len - 8, m + 32, 8);
    expect_corrupt(a, m, good.len, &before);
    /* sessions out of order: second session's start before first's last */
    memcpy(m, good.p, good.len);
    {
        uint32_t nh0 = engage_get_u32(m + 28);
        size_t s1 = 8 + 24 + (size_t)nh0 * 8;
        put_u64(m + s1, 10);
        expect_corrupt(a, m, good.len, &before);
    }
    /* NULL buffer */
    expect_corrupt(a, NULL, 0, &before);

    /* random byte flips never crash; a load either succeeds or leaves the
     * user's state as it was */
    srand(3);
    for (int i = 0; i < 3000; i++) {
        memcpy(m, good.p, good.len);
        int nflip = 1 + rand() % 3;
        for (int f = 0; f < nflip; f++)
            m[rand() % good.len] ^= (unsigned char)(1 + rand() % 255);
        engage_sessionizer_t *x = engage_sessionizer_new(GAP);
        char err[128];
        engage_err_t e = engage_sessionizer_load_user(x, 1, m, good.len, err, sizeof(err));
        assert_true(e == ENGAGE_ERR_OK || e == ENGAGE_ERR_CORRUPT);
        if (e != ENGAGE_ERR_OK)
            assert_int_equal(engage_sessionizer_open_count(x), 0);
        engage_sessionizer_close_all(x, NULL, NULL);
        engage_sessionizer_destroy(x);
    }
    free(m);
    engage_buf_free(&good);
    engage_buf_free(&before);
    engage_sessionizer_destroy(a);
}

/* ---- randomized comparison with a batch reference ----------------------- */

typedef struct ev {
    uint32_t user;
    int64_t ts;
    uint64_t h;
    int64_t arrival; /* sort key */
} ev_t;

static int ev_by_arrival(const void *a, const void *b) {
    const ev_t *x = a, *y = b;
    if (x->arrival != y->arrival)
        return x->arrival < y->arrival ? -1 : 1;
    return x->h < y->h ? -1 : x->h > y->h;
}

static int ev_by_user_ts(const void *a, const void *b) {
    const ev_t *x = a, *y = b;
    if (x->user != y->user)
        return x->user < y->user ? -1 : 1;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->h < y->h ? -1 : x->h > y->h;
}

static int closed_cmp(const void *a, const void *b) {
    const closed_t *x = a, *y = b;
    if (x->user != y->user)
        return x->user < y->user ? -1 : 1;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    if (x->last != y->last)
        return x->last < y->last ? -1 : 1;
    return (x->actions > y->actions) - (x->actions < y->actions);
}

static uint64_t rng_state;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Reference: sort each user's unique events by time; split where the
 * distance to the previous action exceeds gap. */
static void reference(ev_t *evs, size_t n, int64_t gap, sink_t *out) {
    ev_t *v = malloc(n * sizeof(*v));
    memcpy(v, evs, n * sizeof(*v));
    qsort(v, n, sizeof(*v), ev_by_user_ts);
    size_t i = 0;
    while (i < n) {
        closed_t c = {v[i].user, v[i].ts, v[i].ts, 1};
        size_t j = i + 1;
        for (; j < n && v[j].user == c.user; j++) {
            if (v[j].h == v[j - 1].h && v[j].ts == v[j - 1].ts)
                continue; /* duplicate delivery */
            if (v[j].ts - c.last > gap) {
                sink_cb(out, c.user, c.start, c.last, c.actions);
                c.start = v[j].ts;
                c.actions = 0;
            }
            c.last = v[j].ts;
            c.actions++;
        }
        sink_cb(out, c.user, c.start, c.last, c.actions);
        i = j;
    }
    free(v);
}

/* Checks open_count and min_open_start against the serialized sessions. */
static void check_open_view(engage_sessionizer_t *s, uint32_t nusers) {
    engage_buf_t b = {0};
    size_t total = 0;
    int64_t mn = INT64_MAX;
    for (uint32_t u = 0; u < nusers; u++) {
        engage_buf_reset(&b);
        int r = engage_sessionizer_serialize_user(s, u, &b);
        if (r == 0)
            continue;
        uint32_t ns = engage_get_u32(b.p + 4);
        size_t off = 8;
        for (uint32_t k = 0; k < ns; k++) {
            int64_t st = (int64_t)engage_get_u64(b.p + off);
            if (st < mn)
                mn = st;
            off += 24 + 8 * (size_t)engage_get_u32(b.p + off + 20);
        }
        total += ns;
    }
    engage_buf_free(&b);
    assert_int_equal(total, engage_sessionizer_open_count(s));
    assert_int_equal(mn, engage_sessionizer_min_open_start(s));
}

/* Serializes every user into a fresh sessionizer (a restart). */
static engage_sessionizer_t *restart(engage_sessionizer_t *s, uint32_t nusers, int64_t gap) {
    engage_sessionizer_t *t = engage_sessionizer_new(gap);
    engage_buf_t b = {0};
    char err[128];
    for (uint32_t u = 0; u < nusers; u++) {
        engage_buf_reset(&b);
        if (engage_sessionizer_serialize_user(s, u, &b) == 1)
            assert_int_equal(engage_sessionizer_load_user(t, u, b.p, b.len, err, sizeof(err)),
                             ENGAGE_ERR_OK);
    }
    engage_buf_free(&b);
    assert_int_equal(engage_sessionizer_open_count(t), engage_sessionizer_open_count(s));
    assert_int_equal(engage_sessionizer_min_open_start(t),
                     engage_sessionizer_min_open_start(s));
    engage_sessionizer_destroy(s);
    return t;
}

static void run_random(uint64_t seed, uint32_t nusers, int per_user, int64_t gap,
                       int64_t grace, int do_restart) {
    rng_state = seed * 0x9E3779B97F4A7C15ULL + 1;
    size_t cap = (size_t)nusers * (size_t)per_user * 2 + 16, n = 0;
    ev_t *evs = malloc(cap * sizeof(*evs));
    uint64_t hseq = 1;
    for (uint32_t u = 0; u < nusers; u++) {
        int64_t t = (int64_t)(rng() % (uint64_t)(20 * gap));
        for (int k = 0; k < per_user; k++) {
            switch (rng() % 8) {
            case 0: t += 0; break;
            case 1: t += gap; break;
            case 2: t += gap + 1; break;
            case 3: t += gap - 1; break;
            case 4: t += gap + (int64_t)(rng() % (uint64_t)(2 * gap)); break;
            default: t += (int64_t)(rng() % (uint64_t)(gap / 3 + 1)); break;
            }
            ev_t e = {u, t, (rng() % 8 == 0) ? 0 : hseq, 0};
            if (e.h == 0 && k > 0)
                e.h = hseq; /* at most one zero hash, the user's first */
            hseq++;
            e.arrival = t + (int64_t)(rng() % (uint64_t)grace);
            evs[n++] = e;
            if (rng() % 16 == 0) { /* duplicate delivery */
                e.arrival = t + (int64_t)(rng() % (uint64_t)grace);
                evs[n++] = e;
            }
        }
    }
    qsort(evs, n, sizeof(*evs), ev_by_arrival);

    sink_t ref = {0}, got = {0};
    reference(evs, n, gap, &ref);

    engage_sessionizer_t *s = engage_sessionizer_new(gap);
    int64_t max_seen = INT64_MIN, wm = INT64_MIN;
    size_t counted = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(evs[i].ts >= wm); /* generator keeps events on time */
        int r = engage_sessionizer_add(s, evs[i].user, evs[i].ts, evs[i].h);
        assert_true(r == 0 || r == 1);
        counted += (size_t)r;
        if (evs[i].ts > max_seen)
            max_seen = evs[i].ts;
        if (rng() % 4 == 0) {
            wm = max_seen - grace;
            engage_sessionizer_close(s, wm, sink_cb, &got);
        }
        if (i % 97 == 0)
            check_open_view(s, nusers);
        if (do_restart && i == n / 2)
            s = restart(s, nusers, gap);
    }
    engage_sessionizer_close_all(s, sink_cb, &got);
    assert_int_equal(engage_sessionizer_open_count(s), 0);

    /* closing happened in global key order */
    for (size_t i = 1; i < got.n; i++)
        assert_true(key_cmp(&got.v[i - 1], &got.v[i], gap) < 0);

    size_t ref_actions = 0;
    for (size_t i = 0; i < ref.n; i++)
        ref_actions += ref.v[i].actions;
    assert_int_equal(counted, ref_actions);

    qsort(ref.v, ref.n, sizeof(*ref.v), closed_cmp);
    qsort(got.v, got.n, sizeof(*got.v), closed_cmp);
    assert_int_equal(got.n, ref.n);
    for (size_t i = 0; i < ref.n; i++)
        assert_closed(&got.v[i], ref.v[i].user, ref.v[i].start, ref.v[i].last,
                      ref.v[i].actions);
    free(ref.v);
    free(got.v);
    free(evs);
    engage_sessionizer_destroy(s);
}

static void test_random_vs_reference(void **state) {
    (void)state;
    for (uint64_t seed = 1; seed <= 40; seed++)
        run_random(seed, 1 + (uint32_t)(seed % 37), 60, 1000, 700, 0);
    run_random(99, 300, 100, GAP, 5 * 60 * 1000, 0);
    run_random(100, 50, 400, 100, 99, 0);
    run_random(101, 5, 2000, 1000, 999, 0);
}

static void test_random_with_restart(void **state) {
    (void)state;
    for (uint64_t seed = 200; seed < 220; seed++)
        run_random(seed, 20, 80, 1000, 700, 1);
}

/* One user's session never ends (the oldest start stays put) while many
 * short sessions of other users come and go: stale queue entries must be
 * dropped (compaction) without disturbing order or min_open_start. */
static void test_long_session_and_churn(void **state) {
    (void)state;
    const int64_t gap = 1000;
    engage_sessionizer_t *s = engage_sessionizer_new(gap);
    sink_t k = {0};
    uint64_t h = 1;
    size_t expect_closed = 0;
    for (int64_t t = 0; t < 400000; t += 50) {
        if (t % 500 == 0)
            assert_int_equal(engage_sessionizer_add(s, 0, t, h++), 1);
        uint32_t u = 1 + (uint32_t)((t / 50) % 5000);
        assert_int_equal(engage_sessionizer_add(s, u, t, h++), 1);
        size_t before = k.n;
        engage_sessionizer_close(s, t - 10, sink_cb, &k);
        for (size_t i = before; i < k.n; i++)
            assert_true(k.v[i].user != 0);
        assert_int_equal(engage_sessionizer_min_open_start(s), 0);
        /* sessions of users != 0 are single events closed gap + 10 later */
        expect_closed = (size_t)(t >= gap + 10 ? (t - gap - 10) / 50 : 0);
        if (t > 2 * gap)
            assert_true(k.n + 2 >= expect_closed);
    }
    assert_int_equal(engage_sessionizer_open_count(s), 1 + 1010 / 50 + 1);
    for (size_t i = 1; i < k.n; i++)
        assert_true(key_cmp(&k.v[i - 1], &k.v[i], gap) < 0);
    size_t n = engage_sessionizer_close_all(s, sink_cb, &k);
    assert_int_equal(n, 1 + 1010 / 50 + 1);
    assert_int_equal(engage_sessionizer_min_open_start(s), INT64_MAX);
    int found = 0;
    for (size_t i = k.n - n; i < k.n; i++) {
        if (k.v[i].user == 0) {
            assert_closed(&k.v[i], 0, 0, 399500, 800);
            found = 1;
        }
    }
    assert_true(found);
    /* reusable after everything closed, with times far in the past */
    assert_int_equal(engage_sessionizer_add(s, 3, -5000000, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 4, 7000000000LL, 1), 1);
    assert_int_equal(engage_sessionizer_min_open_start(s), -5000000);
    size_t before = k.n;
    assert_int_equal(engage_sessionizer_close(s, 0, sink_cb, &k), 1);
    assert_closed(&k.v[before], 3, -5000000, -5000000, 1);
    assert_int_equal(engage_sessionizer_min_open_start(s), 7000000000LL);
    free(k.v);
    engage_sessionizer_destroy(s);
}

static void test_extreme_timestamps(void **state) {
    (void)state;
    engage_sessionizer_t *s = engage_sessionizer_new(GAP);
    assert_int_equal(engage_sessionizer_add(s, 1, INT64_MAX - 5, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 1, INT64_MAX, 2), 1);
    assert_int_equal(engage_sessionizer_add(s, 2, INT64_MIN, 1), 1);
    assert_int_equal(engage_sessionizer_add(s, 2, INT64_MIN + 7, 2), 1);
    assert_int_equal(engage_sessionizer_open_count(s), 2);
    assert_int_equal(engage_sessionizer_min_open_start(s), INT64_MIN);
    sink_t k = {0};
    /* user 2 is due at INT64_MIN + 7 + GAP; user 1 saturates at INT64_MAX */
    assert_int_equal(engage_sessionizer_close(s, INT64_MAX, sink_cb, &k), 1);
    assert_closed(&k.v[0], 2, INT64_MIN, INT64_MIN + 7, 2);
    assert_int_equal(engage_sessionizer_close_all(s, sink_cb, &k), 1);
    assert_closed(&k.v[1], 1, INT64_MAX - 5, INT64_MAX, 2);
    free(k.v);
    engage_sessionizer_destroy(s);
}

static void test_prefetch_is_harmless(void **state) {
    (void)state;
    engage_sessionizer_t *s = engage_sessionizer_new(GAP);
    engage_sessionizer_prefetch(s, 0, 1);          /* nothing allocated yet */
    engage_sessionizer_prefetch(s, UINT32_MAX, 1); /* unknown user */
    assert_int_equal(engage_sessionizer_add(s, 4, 100, 9), 1);
    engage_sessionizer_prefetch(s, 4, 9);
    engage_sessionizer_prefetch(s, 4, 0);
    engage_sessionizer_prefetch(s, 3, 9);
    assert_int_equal(engage_sessionizer_add(s, 4, 100, 9), 0);
    assert_int_equal(engage_sessionizer_open_count(s), 1);
    engage_sessionizer_destroy(s);
}

static void test_new_rejects_bad_gap(void **state) {
    (void)state;
    assert_null(engage_sessionizer_new(0));
    assert_null(engage_sessionizer_new(-5));
    engage_sessionizer_destroy(NULL);
}

/* Many dirty users, ordinals spread over three bytes: the list comes back
 * sorted, each user once, for sizes around the insertion-sort cut-off. */
static void test_dirty_many(void **state) {
    (void)state;
    static uint8_t want[1 << 20];
    uint64_t x = 12345;
    const size_t sizes[] = {0, 1, 2, 31, 32, 33, 100, 5000, 200000};
    engage_sessionizer_t *s = engage_sessionizer_new(10);
    int64_t ts = 0;
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        memset(want, 0, sizeof(want));
        size_t distinct = 0;
        for (size_t i = 0; i < sizes[k]; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            uint32_t u = (uint32_t)(x % (sizes[k] < 100 ? 300 : (1u << 20)));
            if (i % 3 == 0)
                u = (uint32_t)(i % 70000); /* a dense part */
            assert_int_equal(engage_sessionizer_add(s, u, ts, x | 1), 1);
            distinct += !want[u];
            want[u] = 1;
        }
        const uint32_t *u;
        size_t n = engage_sessionizer_take_dirty(s, &u);
        assert_int_equal(n, distinct);
        for (size_t i = 0; i < n; i++) {
            assert_true(want[u[i]]);
            if (i)
                assert_true(u[i - 1] < u[i]);
        }
        /* everything closes before the next round */
        ts += 1000;
        engage_sessionizer_close(s, ts, NULL, NULL);
        engage_sessionizer_take_dirty(s, &u);
    }
    engage_sessionizer_destroy(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_gap_edge),
        cmocka_unit_test(test_out_of_order_extends_start),
        cmocka_unit_test(test_bridge_merges),
        cmocka_unit_test(test_bridge_start_moves_back),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_close_order),
        cmocka_unit_test(test_close_watermark_strict),
        cmocka_unit_test(test_min_open_start),
        cmocka_unit_test(test_dirty),
        cmocka_unit_test(test_dirty_many),
        cmocka_unit_test(test_serialize_roundtrip),
        cmocka_unit_test(test_load_corrupt),
        cmocka_unit_test(test_random_vs_reference),
        cmocka_unit_test(test_random_with_restart),
        cmocka_unit_test(test_long_session_and_churn),
        cmocka_unit_test(test_extreme_timestamps),
        cmocka_unit_test(test_prefetch_is_harmless),
        cmocka_unit_test(test_new_rejects_bad_gap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
