/*
 * test_compactor_mock.c - the compactor (src/compactor.c) on librdkafka's
 * in-process mock cluster: Session and DailyMetrics records are produced by
 * hand to a multi-partition sessions topic, then `engage compact` runs
 * bounded (all days, a date range, incomplete days) and continuously (skips
 * days already in the output topic, emits new ones as they complete).
 * The statistics themselves are tested in test_iqr.c; here the numbers are
 * checked against engage_iqr_compute() on the same sessions.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "codec.h"
#include "compactor.h"
#include "config.h"
#include "iqr.h"
#include "log.h"
#include "timeutil.h"

#define NPART 4
#define D0 20454 /* 2026-01-01 */

static rd_kafka_t *host;
static rd_kafka_mock_cluster_t *mc;
static char bootstraps[256];
static char errstr[1024];
static int topic_seq;

typedef struct topics {
    char sessions[64], daily[64], metrics[64];
} topics_t;

static int setup(void **s) {
    (void)s;
    char why[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "log_level", "3", why, sizeof(why));
    host = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof(why));
    if (!host)
        return -1;
    mc = rd_kafka_mock_cluster_new(host, 1);
    if (!mc)
        return -1;
    snprintf(bootstraps, sizeof(bootstraps), "%s", rd_kafka_mock_cluster_bootstraps(mc));
    engage_log_set_level(ENGAGE_LOG_WARN);
    return 0;
}

static int teardown(void **s) {
    (void)s;
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(host);
    return 0;
}

static topics_t new_topics(void) {
    topics_t t;
    topic_seq++;
    snprintf(t.sessions, sizeof(t.sessions), "sessions-%d", topic_seq);
    snprintf(t.daily, sizeof(t.daily), "daily-%d", topic_seq);
    snprintf(t.metrics, sizeof(t.metrics), "metrics-%d", topic_seq);
    assert_int_equal(rd_kafka_mock_topic_create(mc, t.sessions, NPART, 1), 0);
    assert_int_equal(rd_kafka_mock_topic_create(mc, t.daily, 1, 1), 0);
    assert_int_equal(rd_kafka_mock_topic_create(mc, t.metrics, 1, 1), 0);
    return t;
}

static engage_conf_t *test_conf(const topics_t *t) {
    engage_conf_t *c = engage_conf_new();
    const char *kv[][2] = {{"bootstrap.servers", bootstraps}, {"kafka.log_level", "3"},
                           {"topic.sessions", t->sessions},  {"topic.daily", t->daily},
                           {"topic.session_metrics", t->metrics}, {"topics.create", "false"},
                           {"output.schema.id.session_metrics", "777"}};
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        assert_int_equal(engage_conf_set(c, kv[i][0], kv[i][1], errstr, sizeof(errstr)), 0);
    return c;
}

/* ---- producing input by hand ------------------------------------------------ */

typedef struct sess {
    const char *user;
    int32_t day;
    int64_t start_off; /* ms after the day's start */
    int64_t duration;
    int32_t actions;
} sess_t;

static rd_kafka_t *producer(void) {
    char why[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, why, sizeof(why));
    rd_kafka_conf_set(c, "log_level", "3", why, sizeof(why));
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof(why));
    assert_non_null(p);
    return p;
}

static void put(rd_kafka_t *p, const char *topic, int32_t part, const char *key, const void *v,
                size_t n) {
    assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(part),
                                       RD_KAFKA_V_KEY(key, strlen(key)),
                                       RD_KAFKA_V_VALUE((void *)v, n),
                                       RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
                     0);
}

static void put_sessions(const topics_t *t, const sess_t *s, size_t n, int dup_every) {
    rd_kafka_t *p = producer();
    engage_encoder_t *e = engage_encoder_new(1, 101, 102, 103, errstr, sizeof(errstr));
    assert_non_null(e);
    for (size_t i = 0; i < n; i++) {
        char sid[32];
        int64_t start = engage_day_start_ms(s[i].day) + s[i].start_off;
        snprintf(sid, sizeof(sid), "%016llx",
                 (unsigned long long)(start * 31 + (int64_t)strlen(s[i].user) * 7 +
                                      (unsigned char)s[i].user[0]));
        engage_session_rec_t r = {.session_id = sid,
                                  .user_id = s[i].user,
                                  .user_id_len = strlen(s[i].user),
                                  .start_ms = start,
                                  .end_ms = start + s[i].duration,
                                  .duration_ms = s[i].duration,
                                  .actions = s[i].actions,
                                  .day = s[i].day};
        const void *b;
        size_t len;
        assert_int_equal(engage_encode_session(e, &r, &b, &len), 0);
        /* a user's sessions stay on one partition, as the processor's do */
        int32_t part = (int32_t)((unsigned char)s[i].user[strlen(s[i].user) - 1] % NPART);
        put(p, t->sessions, part, s[i].user, b, len);
        if (dup_every && i % (size_t)dup_every == 0) /* a crash re-emit */
            put(p, t->sessions, part, s[i].user, b, len);
    }
    assert_int_equal(rd_kafka_flush(p, 10000), 0);
    engage_encoder_destroy(e);
    rd_kafka_destroy(p);
}

static void put_daily(const topics_t *t, int32_t day, int64_t sessions) {
    rd_kafka_t *p = producer();
    engage_encoder_t *e = engage_encoder_new(1, 101, 102, 103, errstr, sizeof(errstr));
    engage_daily_rec_t r = {.day = day, .dau = sessions, .wau = sessions, .mau = sessions,
                            .sessions = sessions, .session_users = sessions};
    const void *b;
    size_t len;
    char key[16];
    assert_int_equal(engage_encode_daily(e, &r, &b, &len), 0);
    put(p, t->daily, 0, engage_day_format(day, key, sizeof(key)), b, len);
    assert_int_equal(rd_kafka_flush(p, 10000), 0);
    engage_encoder_destroy(e);
    rd_kafka_destroy(p);
}

/* ---- reading output ------------------------------------------------------------ */

typedef struct out {
    char key[16];
    unsigned char val[512];
    size_t len;
} out_t;

/* Reads every record of the (1-partition) metrics topic. */
static size_t read_metrics(const topics_t *t, out_t *outs, size_t max) {
    char why[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, why, sizeof(why));
    rd_kafka_conf_set(c, "group.id", "test-reader", why, sizeof(why));
    rd_kafka_conf_set(c, "log_level", "3", why, sizeof(why));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, why, sizeof(why));
    assert_non_null(rk);
    int64_t lo = 0, hi = 0;
    assert_int_equal(rd_kafka_query_watermark_offsets(rk, t->metrics, 0, &lo, &hi, 5000), 0);
    size_t n = 0;
    if (hi > lo) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, t->metrics, 0)->offset = RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_assign(rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        for (int idle = 0; idle < 100 && (int64_t)n < hi - lo;) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
            if (!m) {
                idle++;
                continue;
            }
            if (!m->err) {
                assert_true(n < max);
                assert_true(m->key_len < sizeof(outs[n].key) && m->len <= sizeof(outs[n].val));
                memcpy(outs[n].key, m->key, m->key_len);
                outs[n].key[m->key_len] = '\0';
                memcpy(outs[n].val, m->payload, m->len);
                outs[n].len = m->len;
                n++;
            }
            rd_kafka_message_destroy(m);
        }
        assert_int_equal((int64_t)n, hi - lo);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return n;
}

typedef struct collected {
    pthread_mutex_t mu;
    engage_session_metrics_rec_t recs[64];
    size_t n;
} collected_t;

static void on_emit(void *opaque, const engage_session_metrics_rec_t *r) {
    collected_t *c = opaque;
    pthread_mutex_lock(&c->mu);
    if (c->n < 64)
        c->recs[c->n++] = *r;
    pthread_mutex_unlock(&c->mu);
}

static engage_err_t run_bounded(const engage_conf_t *conf, int32_t from, int32_t to,
                                collected_t *col, engage_compact_stats_t *st) {
    engage_compact_opts_t o;
    engage_compact_opts_default(&o);
    o.bounded = 1;
    o.from_day = from;
    o.to_day = to;
    o.on_emit = on_emit;
    o.opaque = col;
    volatile sig_atomic_t stop = 0;
    return engage_compactor_run(conf, &o, &stop, st, errstr, sizeof(errstr));
}

/* The expected record of a day: engage_iqr_compute over its distinct sessions. */
static void assert_day(const engage_session_metrics_rec_t *r, const sess_t *s, size_t n,
                       int32_t day, double k) {
    engage_iqr_session_t v[64];
    const char *users[64];
    size_t m = 0, nu = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i].day != day)
            continue;
        size_t u = 0;
        while (u < nu && strcmp(users[u], s[i].user))
            u++;
        if (u == nu)
            users[nu++] = s[i].user;
        v[m++] = (engage_iqr_session_t){u, s[i].duration, s[i].actions};
    }
    engage_iqr_stats_t e;
    assert_int_equal(engage_iqr_compute(v, m, k, &e), 0);
    assert_int_equal(r->day, day);
    assert_int_equal(r->sessions, (int64_t)m);
    assert_int_equal(r->has_quartiles, m > 0);
    assert_true(r->duration_q1 == e.duration_q1 && r->duration_q3 == e.duration_q3);
    assert_true(r->actions_q1 == e.actions_q1 && r->actions_q3 == e.actions_q3);
    assert_true(r->duration_lower_fence == e.duration_lower_fence);
    assert_true(r->duration_upper_fence == e.duration_upper_fence);
    assert_true(r->actions_lower_fence == e.actions_lower_fence);
    assert_true(r->actions_upper_fence == e.actions_upper_fence);
    assert_int_equal(r->valid_sessions, e.valid_sessions);
    assert_int_equal(r->valid_users, e.valid_users);
    assert_true(r->valid_avg_duration_ms == e.valid_avg_duration_ms);
    assert_true(r->valid_actions_per_session == e.valid_actions_per_session);
    assert_int_equal(r->duration_outliers, e.duration_outliers);
    assert_int_equal(r->actions_outliers, e.actions_outliers);
    assert_true(r->iqr_multiplier == k);
}

/* Day 0: skewed (a huge duration, a huge action count), users with two
 * sessions; day 1: no sessions; day 2: one session; day 3: all equal. */
static const sess_t SESS[] = {
    {"ann", D0, 1000, 60000, 3},     {"bob", D0, 2000, 120000, 4},
    {"cyd", D0, 3000, 180000, 5},    {"dan", D0, 4000, 240000, 4},
    {"eve", D0, 5000, 300000, 6},    {"ann", D0, 9000000, 90000, 2},
    {"fay", D0, 6000, 72000000, 5},  {"gus", D0, 7000, 200000, 900},
    {"hal", D0, 8000, 150000, 3},    {"bob", D0, 9900000, 100000, 4},
    {"ivy", D0 + 2, 100, 42000, 7},  {"ann", D0 + 3, 100, 300000, 2},
    {"bob", D0 + 3, 200, 300000, 2}, {"cyd", D0 + 3, 300, 300000, 2},
};
#define NSESS ((int64_t)(sizeof(SESS) / sizeof(SESS[0])))

static void put_all(const topics_t *t) {
    put_sessions(t, SESS, NSESS, 3);
    put_daily(t, D0, 10);
    put_daily(t, D0 + 1, 0);
    put_daily(t, D0 + 2, 1);
    put_daily(t, D0 + 3, 3);
    put_daily(t, D0 + 3, 3); /* a re-emitted daily record */
}

static void test_bounded_all_days(void **s) {
    (void)s;
    topics_t t = new_topics();
    engage_conf_t *conf = test_conf(&t);
    put_all(&t);
    collected_t col = {.mu = PTHREAD_MUTEX_INITIALIZER};
    engage_compact_stats_t st;
    if (run_bounded(conf, INT32_MIN, INT32_MAX, &col, &st))
        fail_msg("compact: %s", errstr);
    assert_int_equal(col.n, 4);
    assert_int_equal(st.days_emitted, 4);
    assert_int_equal(st.days_incomplete, 0);
    assert_int_equal(st.sessions_read, NSESS + (NSESS + 2) / 3);
    /* a re-emitted session is counted as a duplicate, or skipped when its day
     * was complete already; so is the second daily record of day 3 */
    assert_true(st.duplicates + st.skipped_records >= (NSESS + 2) / 3);
    assert_true(st.duplicates + st.skipped_records <= (NSESS + 2) / 3 + 1);
    assert_int_equal(st.daily_read, 5);
    for (int d = 0; d < 4; d++)
        assert_day(&col.recs[d], SESS, NSESS, D0 + d, 1.5);
    /* day 0 by hand: durations sorted 60000 90000 100000 120000 150000
     * 180000 200000 240000 300000 72000000: Q1 (h = 2.25) 105000, Q3
     * (h = 6.75) 230000, upper fence 417500 -> fay out; actions sorted
     * 2 3 3 4 4 4 5 5 6 900: Q1 3.25, Q3 5, fences [0.625, 7.625] -> gus out */
    assert_true(col.recs[0].duration_q1 == 105000 && col.recs[0].duration_q3 == 230000);
    assert_true(col.recs[0].duration_upper_fence == 417500);
    assert_true(col.recs[0].actions_q1 == 3.25 && col.recs[0].actions_q3 == 5);
    assert_true(col.recs[0].actions_upper_fence == 7.625);
    assert_int_equal(col.recs[0].duration_outliers, 1);
    assert_int_equal(col.recs[0].actions_outliers, 1);
    assert_int_equal(col.recs[0].valid_sessions, 8);
    assert_int_equal(col.recs[0].valid_users, 6); /* ann, bob twice */
    assert_int_equal(col.recs[1].sessions, 0);
    assert_int_equal(col.recs[1].has_quartiles, 0);
    assert_int_equal(col.recs[3].valid_sessions, 3);

    /* the topic holds the same, keyed by date, in date order, id 777 */
    out_t first[8], second[16];
    size_t n = read_metrics(&t, first, 8);
    assert_int_equal(n, 4);
    engage_encoder_t *e = engage_encoder_new(1, 101, 102, 103, errstr, sizeof(errstr));
    for (size_t i = 0; i < n; i++) {
        char date[16];
        assert_string_equal(first[i].key, engage_day_format(D0 + (int32_t)i, date, 16));
        assert_int_equal(first[i].val[0], 0);
        assert_int_equal((first[i].val[3] << 8) | first[i].val[4], 777);
        engage_session_metrics_rec_t r;
        assert_int_equal(engage_decode_session_metrics(e, first[i].val, first[i].len, &r), 0);
        assert_day(&r, SESS, NSESS, D0 + (int32_t)i, 1.5);
    }
    engage_encoder_destroy(e);

    /* a second run appends byte-identical records */
    collected_t col2 = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(run_bounded(conf, INT32_MIN, INT32_MAX, &col2, &st), 0);
    n = read_metrics(&t, second, 16);
    assert_int_equal(n, 8);
    for (size_t i = 0; i < 4; i++) {
        assert_string_equal(second[4 + i].key, first[i].key);
        assert_int_equal(second[4 + i].len, first[i].len);
        assert_memory_equal(second[4 + i].val, first[i].val, first[i].len);
    }
    engage_conf_destroy(conf);
}

static void test_multiplier_and_range(void **s) {
    (void)s;
    topics_t t = new_topics();
    engage_conf_t *conf = test_conf(&t);
    assert_int_equal(engage_conf_set(conf, "compact.iqr.multiplier", "0.5", errstr,
                                     sizeof(errstr)),
                     0);
    put_all(&t);
    collected_t col = {.mu = PTHREAD_MUTEX_INITIALIZER};
    engage_compact_stats_t st;
    assert_int_equal(run_bounded(conf, D0, D0 + 1, &col, &st), 0);
    assert_int_equal(col.n, 2);
    assert_day(&col.recs[0], SESS, NSESS, D0, 0.5);
    assert_day(&col.recs[1], SESS, NSESS, D0 + 1, 0.5);
    assert_true(st.skipped_records > 0);
    out_t o[4];
    assert_int_equal(read_metrics(&t, o, 4), 2);

    /* an explicit range reaching past the data: those days are incomplete,
     * the others still go out */
    collected_t col2 = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(run_bounded(conf, D0 + 3, D0 + 5, &col2, &st), ENGAGE_ERR_INCOMPLETE);
    assert_int_equal(col2.n, 1);
    assert_int_equal(col2.recs[0].day, D0 + 3);
    assert_int_equal(st.days_incomplete, 2);
    assert_non_null(strstr(errstr, "2026-01-05"));
    engage_conf_destroy(conf);
}

static void test_incomplete_days(void **s) {
    (void)s;
    topics_t t = new_topics();
    engage_conf_t *conf = test_conf(&t);
    put_all(&t);
    static const sess_t more[] = {{"ann", D0 + 5, 0, 1000, 2},
                                  {"bob", D0 + 5, 0, 2000, 2},
                                  {"cyd", D0 + 6, 0, 3000, 2}};
    put_sessions(&t, more, 3, 0);
    put_daily(&t, D0 + 5, 3); /* one session short */
    /* D0 + 6 has a session but no daily record */
    collected_t col = {.mu = PTHREAD_MUTEX_INITIALIZER};
    engage_compact_stats_t st;
    assert_int_equal(run_bounded(conf, INT32_MIN, INT32_MAX, &col, &st),
                     ENGAGE_ERR_INCOMPLETE);
    assert_int_equal(st.days_incomplete, 2);
    assert_int_equal(col.n, 4); /* the complete days are emitted anyway */
    assert_non_null(strstr(errstr, "2 day(s)"));
    assert_non_null(strstr(errstr, "2026-01-06: 2 of 3 sessions"));
    assert_non_null(strstr(errstr, "2026-01-07: 1 session(s) but no DailyMetrics"));
    engage_conf_destroy(conf);
}

static void test_missing_topic(void **s) {
    (void)s;
    topics_t t = new_topics();
    engage_conf_t *conf = test_conf(&t);
    assert_int_equal(engage_conf_set(conf, "topic.sessions", "no-such-topic", errstr,
                                     sizeof(errstr)),
                     0);
    collected_t col = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(run_bounded(conf, INT32_MIN, INT32_MAX, &col, NULL), ENGAGE_ERR_KAFKA);
    assert_non_null(strstr(errstr, "no-such-topic"));
    assert_int_equal(run_bounded(conf, 5, 4, &col, NULL), ENGAGE_ERR_CONFIG);
    engage_conf_destroy(conf);
}

/* ---- continuous ------------------------------------------------------------------ */

typedef struct cont {
    const engage_conf_t *conf;
    collected_t col;
    volatile sig_atomic_t stop;
    engage_err_t err;
    engage_compact_stats_t st;
    char errstr[512];
} cont_t;

static void *cont_main(void *arg) {
    cont_t *c = arg;
    engage_compact_opts_t o;
    engage_compact_opts_default(&o);
    o.on_emit = on_emit;
    o.opaque = &c->col;
    c->err = engage_compactor_run(c->conf, &o, &c->stop, &c->st, c->errstr, sizeof(c->errstr));
    return NULL;
}

static size_t wait_for(collected_t *col, size_t want) {
    for (int i = 0; i < 300; i++) {
        pthread_mutex_lock(&col->mu);
        size_t n = col->n;
        pthread_mutex_unlock(&col->mu);
        if (n >= want)
            return n;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static void test_continuous(void **s) {
    (void)s;
    topics_t t = new_topics();
    engage_conf_t *conf = test_conf(&t);
    put_all(&t);
    /* days 0 and 1 are out already */
    collected_t col0 = {.mu = PTHREAD_MUTEX_INITIALIZER};
    assert_int_equal(run_bounded(conf, D0, D0 + 1, &col0, NULL), 0);

    cont_t *c = calloc(1, sizeof(*c));
    c->conf = conf;
    pthread_mutex_init(&c->col.mu, NULL);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, cont_main, c), 0);
    assert_int_equal(wait_for(&c->col, 2), 2); /* days 2 and 3 */
    /* a new day arrives while it runs: sessions first, the count later */
    static const sess_t more[] = {{"ann", D0 + 4, 0, 1000, 2}, {"bob", D0 + 4, 0, 5000, 9}};
    put_sessions(&t, more, 2, 1);
    put_daily(&t, D0 + 4, 2);
    assert_int_equal(wait_for(&c->col, 3), 3);
    c->stop = 1;
    pthread_join(th, NULL);
    if (c->err)
        fail_msg("continuous compact: %s", c->errstr);
    assert_int_equal(c->st.days_known, 2);
    assert_int_equal(c->col.n, 3);
    int32_t days[3];
    for (int i = 0; i < 3; i++)
        days[i] = c->col.recs[i].day;
    /* days 2 and 3 in either order, then day 4 */
    assert_true((days[0] == D0 + 2 && days[1] == D0 + 3) ||
                (days[0] == D0 + 3 && days[1] == D0 + 2));
    assert_int_equal(days[2], D0 + 4);
    assert_day(&c->col.recs[2], more, 2, D0 + 4, 1.5);
    out_t o[8];
    assert_int_equal(read_metrics(&t, o, 8), 5);

    /* restarted: everything is known, nothing is emitted again */
    memset(&c->col.recs, 0, sizeof(c->col.recs));
    c->col.n = 0;
    c->stop = 0;
    assert_int_equal(pthread_create(&th, NULL, cont_main, c), 0);
    struct timespec ts = {1, 500 * 1000000L};
    nanosleep(&ts, NULL);
    c->stop = 1;
    pthread_join(th, NULL);
    assert_int_equal(c->err, 0);
    assert_int_equal(c->st.days_known, 5);
    assert_int_equal(c->col.n, 0);
    pthread_mutex_destroy(&c->col.mu);
    free(c);
    engage_conf_destroy(conf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bounded_all_days),
        cmocka_unit_test(test_multiplier_and_range),
        cmocka_unit_test(test_incomplete_days),
        cmocka_unit_test(test_missing_topic),
        cmocka_unit_test(test_continuous),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
