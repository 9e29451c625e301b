/*
 * test_fetchwake.c - the fetch waker (src/fetchwake.h) on librdkafka's mock
 * cluster: a consumer whose queue keeps hitting a small queued.min.messages
 * gets every message exactly once and in order per partition while the
 * waker sends wake-ups, and a consumer whose queue never fills gets none.
 * (How much faster the waker makes a replay is a benchmark figure,
 * docs/BENCHMARKS.md, not asserted here.)
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <inttypes.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "fetchwake.h"

#define TOPIC "w"
#define NPART 2
#define PER_PART 20000

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void set(rd_kafka_conf_t *c, const char *k, const char *v) {
    char why[256];
    if (rd_kafka_conf_set(c, k, v, why, sizeof(why)) != RD_KAFKA_CONF_OK)
        fail_msg("%s=%s: %s", k, v, why);
}

/* Produces PER_PART records "p:i" to each partition of a new mock cluster;
 * returns the producer that hosts the cluster. */
static rd_kafka_t *make_cluster(rd_kafka_mock_cluster_t **mc, char *boot, size_t n) {
    char why[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    set(c, "test.mock.num.brokers", "1");
    set(c, "linger.ms", "5");
    rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof(why));
    assert_non_null(p);
    *mc = rd_kafka_handle_mock_cluster(p);
    assert_non_null(*mc);
    snprintf(boot, n, "%s", rd_kafka_mock_cluster_bootstraps(*mc));
    assert_int_equal(rd_kafka_mock_topic_create(*mc, TOPIC, NPART, 1), 0);
    for (int part = 0; part < NPART; part++)
        for (int i = 0; i < PER_PART; i++) {
            char v[32];
            int len = snprintf(v, sizeof(v), "%d:%d", part, i);
            rd_kafka_resp_err_t e;
            while ((e = rd_kafka_producev(p, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(part),
                                          RD_KAFKA_V_VALUE(v, (size_t)len),
                                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                          RD_KAFKA_V_END)) == RD_KAFKA_RESP_ERR__QUEUE_FULL)
                rd_kafka_poll(p, 10);
            assert_int_equal(e, 0);
        }
    assert_int_equal(rd_kafka_flush(p, 30000), 0);
    return p;
}

/* Consumes everything with the waker on; returns its wake-up count. */
static int64_t consume_all(const char *boot, const char *min_msgs) {
    char why[256];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    set(c, "bootstrap.servers", boot);
    set(c, "group.id", min_msgs);
    set(c, "auto.offset.reset", "earliest");
    set(c, "enable.auto.commit", "false");
    set(c, "queued.min.messages", min_msgs);
    set(c, "max.partition.fetch.bytes", "4096"); /* a few hundred records a fetch */
    set(c, "fetch.wait.max.ms", "10");
    rd_kafka_t *k = rd_kafka_new(RD_KAFKA_CONSUMER, c, why, sizeof(why));
    assert_non_null(k);
    rd_kafka_poll_set_consumer(k);
    rd_kafka_queue_t *q = rd_kafka_queue_get_consumer(k);
    rd_kafka_topic_partition_list_t *s = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(s, TOPIC, RD_KAFKA_PARTITION_UA);
    assert_int_equal(rd_kafka_subscribe(k, s), 0);
    rd_kafka_topic_partition_list_destroy(s);
    engage_fetchwake_t *w = engage_fetchwake_start(k, q, TOPIC);
    assert_non_null(w);

    int next[NPART] = {0};
    int total = 0;
    double deadline = now_s() + 120; /* a hang guard, not a timing assertion */
    while (total < NPART * PER_PART && now_s() < deadline) {
        for (int b = 0; b < 100; b++) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(k, b == 0 ? 100 : 0);
            if (!m)
                break;
            if (!m->err) {
                int part, i;
                char v[32];
                assert_true(m->len < sizeof(v));
                memcpy(v, m->payload, m->len);
                v[m->len] = 0;
                assert_int_equal(sscanf(v, "%d:%d", &part, &i), 2);
                assert_int_equal(part, m->partition);
                assert_int_equal(i, next[part]); /* each once, in order */
                next[part]++;
                total++;
            }
            rd_kafka_message_destroy(m);
        }
        engage_fetchwake_check(w);
    }
    assert_int_equal(total, NPART * PER_PART);
    int64_t wakes = engage_fetchwake_count(w);
    engage_fetchwake_stop(w);
    rd_kafka_queue_destroy(q);
    rd_kafka_consumer_close(k);
    rd_kafka_destroy(k);
    return wakes;
}

static void test_wakes_when_queue_fills(void **state) {
    (void)state;
    rd_kafka_mock_cluster_t *mc;
    char boot[256];
    rd_kafka_t *p = make_cluster(&mc, boot, sizeof(boot));
    int64_t wakes = consume_all(boot, "1000");
    print_message("queued.min.messages=1000: %" PRId64 " wake-ups\n", wakes);
    assert_true(wakes > 0);
    rd_kafka_destroy(p);
}

static void test_no_wakes_when_queue_never_fills(void **state) {
    (void)state;
    rd_kafka_mock_cluster_t *mc;
    char boot[256];
    rd_kafka_t *p = make_cluster(&mc, boot, sizeof(boot));
    /* far more than the topic holds: the queue never reaches 90% of it */
    assert_int_equal(consume_all(boot, "1000000"), 0);
    rd_kafka_destroy(p);
}

static void test_null_is_noop(void **state) {
    (void)state;
    engage_fetchwake_check(NULL);
    assert_int_equal(engage_fetchwake_count(NULL), 0);
    engage_fetchwake_stop(NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wakes_when_queue_fills),
        cmocka_unit_test(test_no_wakes_when_queue_never_fills),
        cmocka_unit_test(test_null_is_noop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
