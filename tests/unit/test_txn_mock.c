/*
 * test_txn_mock.c - the exactly_once transaction error paths of the processor
 * on librdkafka's in-process mock cluster, with errors a real broker will not
 * produce on demand (rd_kafka_mock_push_request_errors):
 *
 *   retriable (EndTxn COORDINATOR_LOAD_IN_PROGRESS / NOT_COORDINATOR,
 *   AddOffsetsToTxn and AddPartitionsToTxn CONCURRENT_TRANSACTIONS)
 *       -> retried; the bounded run completes with every day and session;
 *   abortable (TxnOffsetCommit ILLEGAL_GENERATION / UNKNOWN_MEMBER_ID,
 *   AddOffsetsToTxn GROUP_AUTHORIZATION_FAILED)
 *       -> the transaction is aborted, the tasks rewound, the run completes;
 *   fatal (EndTxn PRODUCER_FENCED, AddPartitionsToTxn INVALID_PRODUCER_EPOCH)
 *       -> the producer is replaced in-process (a new one with the same
 *          transactional.id), the tasks rewound, the run completes;
 *   fatal again and again (more than MAX_PRODUCER_RESETS without a commit)
 *       -> engage_processor_run returns an error naming the transaction,
 *          promptly (no hang), nothing is committed after the failure, and
 *          the next incarnation completes.
 *
 * Classification (librdkafka 2.x rdkafka_txnmgr.c): EndTxn retries
 * COORDINATOR_LOAD_IN_PROGRESS, CONCURRENT_TRANSACTIONS, NOT_COORDINATOR and
 * COORDINATOR_NOT_AVAILABLE and treats INVALID_PRODUCER_EPOCH /
 * PRODUCER_FENCED as fatal; TxnOffsetCommit ILLEGAL_GENERATION,
 * UNKNOWN_MEMBER_ID and FENCED_INSTANCE_ID and AddOffsetsToTxn
 * GROUP_AUTHORIZATION_FAILED are "permanent", i.e. abortable;
 * AddPartitionsToTxn INVALID_PRODUCER_EPOCH / PRODUCER_FENCED are fatal.
 *
 * The mock's read_committed consumers still receive records of aborted
 * transactions, so after an abort only completion, the set of distinct
 * output records and the log are asserted here; exactness after aborts is
 * proven on the real broker (tests/e2e/test_faults.py).
 *
 * Each test gets its own mock cluster and state directory. Needs schemas/
 * (run from the repository root, as ctest does).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "commands.h"
#include "config.h"

#define GROUP "txg"
#define NPART 2
#define NUSERS 24
#define NDAYS 3
#define D0_MS ((int64_t)1767225600000LL) /* 2026-01-01T00:00:00Z */
#define DAY_MS ((int64_t)86400000LL)

/* Kafka protocol API keys (rdkafka_protocol.h is not installed) */
#define API_ADD_PARTITIONS_TO_TXN 24
#define API_ADD_OFFSETS_TO_TXN 25
#define API_END_TXN 26
#define API_TXN_OFFSET_COMMIT 28

typedef struct fx {
    rd_kafka_t *host;
    rd_kafka_mock_cluster_t *mc;
    char bootstraps[256];
    char dir[64];
    char logpath[128];
    engage_conf_t *conf;
} fx_t;

static const char *TOPICS[][2] = {
    {"topic.input", "in"},          {"topic.sessions", "sessions"}, {"topic.daily", "daily"},
    {"topic.dead_letters", "dead"}, {"topic.late", "late"},         {"topic.partials", "partials"},
};

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* NUSERS users (user i on partition i % NPART), each with one session of
 * four actions at noon of each of NDAYS days: NUSERS * NDAYS sessions and
 * NDAYS daily records. Plus a duplicate per user and one dead letter. */
static char *input_jsonl(size_t *len) {
    char *buf = NULL;
    FILE *fp = open_memstream(&buf, len);
    assert_non_null(fp);
    for (int d = 0; d < NDAYS; d++)
        for (int a = 0; a < 4; a++)
            for (int u = 0; u < NUSERS; u++) {
                int64_t ts = D0_MS + d * DAY_MS + 12 * (int64_t)3600000 + a * (int64_t)60000 + u * (int64_t)1000;
                fprintf(fp,
                        "{\"event_id\":\"e-%d-%d-%d\",\"user_id\":\"user-%02d\",\"timestamp\":"
                        "%" PRId64 ",\"action\":\"view\",\"platform\":\"ios\",\"partition\":%d}\n",
                        u, d, a, u, ts, u % NPART);
                if (a == 1) /* re-sent copy: counted once */
                    fprintf(fp,
                            "{\"event_id\":\"e-%d-%d-%d\",\"user_id\":\"user-%02d\","
                            "\"timestamp\":%" PRId64
                            ",\"action\":\"view\",\"platform\":\"ios\",\"partition\":%d}\n",
                            u, d, a, u, ts, u % NPART);
            }
    fprintf(fp, "{\"raw_value_b64\":\"AAAAA+cB\",\"key\":\"junk\",\"partition\":1,"
                "\"kafka_timestamp\":%" PRId64 "}\n",
            D0_MS + DAY_MS);
    fclose(fp);
    return buf;
}

static int setup(void **state) {
    char why[512], errstr[512];
    fx_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "log_level", "3", why, sizeof(why));
    f->host = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof(why));
    assert_non_null(f->host);
    f->mc = rd_kafka_mock_cluster_new(f->host, 1);
    assert_non_null(f->mc);
    snprintf(f->bootstraps, sizeof(f->bootstraps), "%s", rd_kafka_mock_cluster_bootstraps(f->mc));
    for (size_t i = 0; i < sizeof(TOPICS) / sizeof(TOPICS[0]); i++) {
        int parts = (!strcmp(TOPICS[i][1], "daily") || !strcmp(TOPICS[i][1], "partials")) ? 1
                                                                                          : NPART;
        assert_int_equal(rd_kafka_mock_topic_create(f->mc, TOPICS[i][1], parts, 1), 0);
    }
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, GROUP "-state-changelog", NPART, 1), 0);
    assert_int_equal(rd_kafka_mock_topic_create(f->mc, GROUP "-aggregator-changelog", 1, 1), 0);

    snprintf(f->dir, sizeof(f->dir), "/tmp/engage-txn-mock-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->logpath, sizeof(f->logpath), "%s.log", f->dir);

    f->conf = engage_conf_new();
    assert_non_null(f->conf);
    char state_dir[128];
    snprintf(state_dir, sizeof(state_dir), "%s/state", f->dir);
    const char *kv[][2] = {
        {"bootstrap.servers", f->bootstraps},
        {"group.id", GROUP},
        {"state.dir", state_dir},
        {"topics.create", "false"},
        {"processing.guarantee", "exactly_once"},
        /* many small transactions, so the injected errors hit mid-run */
        {"batch.size", "25"},
        {"checkpoint.records", "25"},
        {"batch.timeout.ms", "20"},
        {"kafka.log_level", "4"},
    };
    for (size_t i = 0; i < sizeof(kv) / sizeof(kv[0]); i++)
        assert_int_equal(engage_conf_set(f->conf, kv[i][0], kv[i][1], errstr, sizeof(errstr)),
                         0);
    for (size_t i = 0; i < sizeof(TOPICS) / sizeof(TOPICS[0]); i++)
        assert_int_equal(
            engage_conf_set(f->conf, TOPICS[i][0], TOPICS[i][1], errstr, sizeof(errstr)), 0);
    f->conf->until_end = 1;
    /* TXN_MOCK_DEBUG=eos,cgrp,... turns on librdkafka debug logs (debugging) */
    if (getenv("TXN_MOCK_DEBUG"))
        assert_int_equal(engage_conf_set(f->conf, "kafka.debug", getenv("TXN_MOCK_DEBUG"),
                                         errstr, sizeof(errstr)),
                         0);

    size_t len = 0;
    char *text = input_jsonl(&len);
    FILE *in = fmemopen(text, len, "r");
    assert_non_null(in);
    int64_t n = 0;
    engage_err_t e = engage_produce_jsonl(f->conf, in, "in", &n, errstr, sizeof(errstr));
    fclose(in);
    free(text);
    if (e)
        fail_msg("produce: %s", errstr);
    assert_int_equal(n, NUSERS * NDAYS * 5 + 1);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx_t *f = *state;
    engage_conf_destroy(f->conf);
    rd_kafka_mock_cluster_destroy(f->mc);
    rd_kafka_destroy(f->host);
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    remove(f->logpath);
    free(f);
    return 0;
}

/* ---- running the processor with stderr captured ------------------------- */

typedef struct run_result {
    engage_err_t err;
    char errstr[1024];
    double seconds;
    char *log; /* everything written to stderr during the run (engage + librdkafka) */
} run_result_t;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char *slurp(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return strdup("");
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, fp);
    s[got] = '\0';
    fclose(fp);
    return s;
}

static void run(fx_t *f, run_result_t *r) {
    memset(r, 0, sizeof(*r));
    fflush(stderr);
    int saved = dup(2);
    int fd = open(f->logpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    volatile sig_atomic_t stop = 0;
    double t0 = now_s();
    r->err = engage_processor_run(f->conf, &stop, r->errstr, sizeof(r->errstr));
    r->seconds = now_s() - t0;
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    r->log = slurp(f->logpath);
    /* shown by ctest --output-on-failure */
    fprintf(stderr, "---- processor log (%.2f s, %s%s) ----\n%s---- end of log ----\n",
            r->seconds, r->err ? "error: " : "ok", r->err ? r->errstr : "", r->log);
}

/* ---- reading the outputs back -------------------------------------------- */

typedef struct kv {
    char *key;
    size_t klen;
    void *val;
    size_t vlen;
} kv_t;

typedef struct outputs {
    kv_t *recs;
    int n;
} outputs_t;

/* Every record of the daily (1 partition), sessions and dead-letter topics
 * (NPART partitions each), read to their end offsets by one consumer. */
#define NREAD (1 + 2 * NPART)
static void read_outputs(fx_t *f, outputs_t *daily, outputs_t *sessions, outputs_t *dead) {
    char why[512];
    const char *topic[NREAD];
    int32_t part[NREAD];
    outputs_t *dst[NREAD];
    int pending[NREAD], left = 0, k = 0;
    topic[k] = "daily", part[k] = 0, dst[k++] = daily;
    for (int p = 0; p < NPART; p++) {
        topic[k] = "sessions", part[k] = p, dst[k++] = sessions;
        topic[k] = "dead", part[k] = p, dst[k++] = dead;
    }
    memset(daily, 0, sizeof(*daily));
    memset(sessions, 0, sizeof(*sessions));
    memset(dead, 0, sizeof(*dead));
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", f->bootstraps, why, sizeof(why));
    rd_kafka_conf_set(c, "group.id", "txn-test-reader", why, sizeof(why));
    rd_kafka_conf_set(c, "enable.auto.commit", "false", why, sizeof(why));
    rd_kafka_conf_set(c, "enable.partition.eof", "true", why, sizeof(why));
    rd_kafka_conf_set(c, "isolation.level", "read_committed", why, sizeof(why));
    rd_kafka_conf_set(c, "log_level", "3", why, sizeof(why));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, why, sizeof(why));
    assert_non_null(rk);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(NREAD);
    for (int i = 0; i < NREAD; i++) {
        int64_t lo = 0, hi = 0;
        assert_int_equal(rd_kafka_query_watermark_offsets(rk, topic[i], part[i], &lo, &hi, 10000),
                         0);
        pending[i] = hi > lo;
        left += pending[i];
        rd_kafka_topic_partition_list_add(l, topic[i], part[i])->offset =
            RD_KAFKA_OFFSET_BEGINNING;
    }
    assert_int_equal(rd_kafka_assign(rk, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    int idle = 0;
    while (left > 0 && idle < 40) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 250);
        if (!m) {
            idle++;
            continue;
        }
        int i = 0;
        while (i < NREAD && (strcmp(rd_kafka_topic_name(m->rkt), topic[i]) ||
                             part[i] != m->partition))
            i++;
        assert_true(i < NREAD);
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (pending[i]) {
                pending[i] = 0;
                left--;
            }
        } else if (!m->err) {
            outputs_t *o = dst[i];
            o->recs = realloc(o->recs, (size_t)(o->n + 1) * sizeof(*o->recs));
            kv_t *r = &o->recs[o->n++];
            r->klen = m->key_len;
            r->key = malloc(m->key_len + 1);
            memcpy(r->key, m->key, m->key_len);
            r->key[m->key_len] = '\0';
            r->vlen = m->len;
            r->val = malloc(m->len ? m->len : 1);
            memcpy(r->val, m->payload, m->len);
        }
        rd_kafka_message_destroy(m);
    }
    assert_int_equal(left, 0);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
}

static void free_outputs(outputs_t *o) {
    for (int i = 0; i < o->n; i++) {
        free(o->recs[i].key);
        free(o->recs[i].val);
    }
    free(o->recs);
}

static int kv_same(const kv_t *a, const kv_t *b) {
    return a->klen == b->klen && a->vlen == b->vlen && !memcmp(a->key, b->key, a->klen) &&
           !memcmp(a->val, b->val, a->vlen);
}

/* Distinct (key, value) records, and distinct keys. */
static void distinct(const outputs_t *o, int *records, int *keys) {
    *records = 0;
    *keys = 0;
    for (int i = 0; i < o->n; i++) {
        int same_rec = 0, same_key = 0;
        for (int j = 0; j < i; j++) {
            if (kv_same(&o->recs[i], &o->recs[j]))
                same_rec = 1;
            if (o->recs[i].klen == o->recs[j].klen &&
                !memcmp(o->recs[i].key, o->recs[j].key, o->recs[i].klen))
                same_key = 1;
        }
        *records += !same_rec;
        *keys += !same_key;
    }
}

/* The outputs of a completed run. exact: no aborted transaction happened,
 * so every record is there exactly once (the mock would show aborted
 * records too). */
static void check_outputs(fx_t *f, int exact) {
    outputs_t daily, sessions, dead;
    read_outputs(f, &daily, &sessions, &dead);
    int drec, dkeys, srec, skeys, xrec, xkeys;
    distinct(&daily, &drec, &dkeys);
    distinct(&sessions, &srec, &skeys);
    distinct(&dead, &xrec, &xkeys);
    fprintf(stderr,
            "outputs: daily %d records (%d distinct, %d dates); sessions %d (%d distinct, %d "
            "users); dead letters %d (%d distinct)\n",
            daily.n, drec, dkeys, sessions.n, srec, skeys, dead.n, xrec);
    /* the days, sessions and dead letter are all there, each with one value */
    assert_int_equal(dkeys, NDAYS);
    assert_int_equal(drec, NDAYS);
    assert_int_equal(skeys, NUSERS);
    assert_int_equal(srec, NUSERS * NDAYS);
    assert_int_equal(xrec, 1);
    for (int d = 0; d < NDAYS; d++) {
        char date[16];
        snprintf(date, sizeof(date), "2026-01-%02d", d + 1);
        int found = 0;
        for (int i = 0; i < daily.n; i++)
            found |= daily.recs[i].klen == strlen(date) && !memcmp(daily.recs[i].key, date, 10);
        if (!found)
            fail_msg("no daily record for %s", date);
    }
    if (exact) {
        assert_int_equal(daily.n, NDAYS);
        assert_int_equal(sessions.n, NUSERS * NDAYS);
        assert_int_equal(dead.n, 1);
    }
    free_outputs(&daily);
    free_outputs(&sessions);
    free_outputs(&dead);
}

static int log_has(const run_result_t *r, const char *s) {
    return r->log && strstr(r->log, s) != NULL;
}

static int count_in_log(const run_result_t *r, const char *s) {
    int n = 0;
    for (const char *p = r->log; p && (p = strstr(p, s)); p += strlen(s))
        n++;
    return n;
}

/* ---- baseline --------------------------------------------------------------- */

static void test_no_faults(void **state) {
    fx_t *f = *state;
    run_result_t r;
    run(f, &r);
    if (r.err)
        fail_msg("run failed: %s", r.errstr);
    assert_false(log_has(&r, "transaction aborted"));
    check_outputs(f, 1);
    free(r.log);
}

/* ---- (a) retriable ---------------------------------------------------------- */

static void test_endtxn_retriable(void **state) {
    fx_t *f = *state;
    /* the first commits meet a loading / moved coordinator */
    rd_kafka_mock_push_request_errors(f->mc, API_END_TXN, 6,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                                      RD_KAFKA_RESP_ERR_NOT_COORDINATOR,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                                      RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE);
    run_result_t r;
    run(f, &r);
    if (r.err)
        fail_msg("run failed: %s", r.errstr);
    /* retried (by librdkafka or by engage), never aborted, never fatal */
    assert_false(log_has(&r, "transaction aborted"));
    assert_false(log_has(&r, "transaction failed, exiting"));
    check_outputs(f, 1);
    free(r.log);
}

static void test_addoffsets_addparts_retriable(void **state) {
    fx_t *f = *state;
    rd_kafka_mock_push_request_errors(f->mc, API_ADD_OFFSETS_TO_TXN, 3,
                                      RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                                      RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS);
    rd_kafka_mock_push_request_errors(f->mc, API_ADD_PARTITIONS_TO_TXN, 2,
                                      RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS);
    rd_kafka_mock_push_request_errors(f->mc, API_TXN_OFFSET_COMMIT, 2,
                                      RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS,
                                      RD_KAFKA_RESP_ERR_CONCURRENT_TRANSACTIONS);
    run_result_t r;
    run(f, &r);
    if (r.err)
        fail_msg("run failed: %s", r.errstr);
    assert_false(log_has(&r, "transaction aborted"));
    check_outputs(f, 1);
    free(r.log);
}

/* ---- (b) abortable ---------------------------------------------------------- */

/* The run completed, without a fatal exit, with every day and session
 * (distinct records), after logging sign at least min times. */
static void check_completed_after(fx_t *f, run_result_t *r, const char *sign, int min) {
    if (r->err)
        fail_msg("run failed: %s", r->errstr);
    int n = count_in_log(r, sign);
    fprintf(stderr, "\"%s\" logged %d times\n", sign, n);
    assert_true(n >= min);
    assert_false(log_has(r, "transaction failed, exiting"));
    check_outputs(f, 0);
}

static void check_aborted_and_completed(fx_t *f, run_result_t *r, int min_aborts) {
    check_completed_after(f, r, "transaction aborted; re-processing", min_aborts);
}

static void test_txn_offset_commit_abortable(void **state) {
    fx_t *f = *state;
    /* what a zombie gets from the group coordinator (KIP-447): its
     * generation is stale */
    rd_kafka_mock_push_request_errors(f->mc, API_TXN_OFFSET_COMMIT, 1,
                                      RD_KAFKA_RESP_ERR_ILLEGAL_GENERATION);
    run_result_t r;
    run(f, &r);
    check_aborted_and_completed(f, &r, 1);
    free(r.log);
}

static void test_abortable_twice(void **state) {
    fx_t *f = *state;
    /* two different abortable errors, in two transactions */
    rd_kafka_mock_push_request_errors(f->mc, API_TXN_OFFSET_COMMIT, 1,
                                      RD_KAFKA_RESP_ERR_UNKNOWN_MEMBER_ID);
    rd_kafka_mock_push_request_errors(f->mc, API_ADD_OFFSETS_TO_TXN, 2,
                                      RD_KAFKA_RESP_ERR_NO_ERROR,
                                      RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED);
    run_result_t r;
    run(f, &r);
    check_aborted_and_completed(f, &r, 2);
    free(r.log);
}

/* ---- (c) fatal -------------------------------------------------------------- */

static void check_recovered(fx_t *f, run_result_t *r, int min_resets) {
    check_completed_after(f, r, "WARN engage: producer failed (", min_resets);
}

static void check_fatal(fx_t *f, run_result_t *r) {
    (void)f;
    if (!r->err)
        fail_msg("run succeeded despite repeated fatal transactional errors");
    fprintf(stderr, "returned error: %s\n", r->errstr);
    /* names the transaction and the cause; came back promptly */
    assert_non_null(strstr(r->errstr, "transaction"));
    assert_non_null(strstr(r->errstr, "without a commit in between"));
    assert_true(r->seconds < 45.0);
    /* nothing was committed after the failures: the producer was replaced
     * (no abort), and the run gave up after the last replacement */
    assert_false(log_has(r, "transaction aborted; re-processing"));
    assert_int_equal(count_in_log(r, "WARN engage: producer failed ("), 3);
}

static void test_endtxn_fenced(void **state) {
    fx_t *f = *state;
    rd_kafka_mock_push_request_errors(f->mc, API_END_TXN, 1, RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
    run_result_t r;
    run(f, &r);
    check_recovered(f, &r, 1);
    assert_true(log_has(&r, "fenced") || log_has(&r, "Fenced") || log_has(&r, "FENCED"));
    free(r.log);
}

static void test_endtxn_invalid_epoch_later(void **state) {
    fx_t *f = *state;
    /* fenced on the third commit: two transactions are already committed */
    rd_kafka_mock_push_request_errors(f->mc, API_END_TXN, 3, RD_KAFKA_RESP_ERR_NO_ERROR,
                                      RD_KAFKA_RESP_ERR_NO_ERROR,
                                      RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH);
    run_result_t r;
    run(f, &r);
    check_recovered(f, &r, 1);
    free(r.log);
}

static void test_addpartitions_fenced(void **state) {
    fx_t *f = *state;
    rd_kafka_mock_push_request_errors(f->mc, API_ADD_PARTITIONS_TO_TXN, 1,
                                      RD_KAFKA_RESP_ERR_INVALID_PRODUCER_EPOCH);
    run_result_t r;
    run(f, &r);
    check_recovered(f, &r, 1);
    free(r.log);
}

/* Fenced on every commit (another live instance with this transactional.id
 * would do that): after MAX_PRODUCER_RESETS replacements without a commit in
 * between the run gives up; the next incarnation (same state.dir, hence the
 * same transactional.id) starts cleanly and completes. */
static void test_fenced_repeatedly_then_restart(void **state) {
    fx_t *f = *state;
    char errstr[256];
    /* the 2.0.2 mock group coordinator makes the next member's JoinGroup wait
     * one session timeout after the previous member left: keep it short */
    assert_int_equal(
        engage_conf_set(f->conf, "kafka.session.timeout.ms", "6000", errstr, sizeof(errstr)), 0);
    rd_kafka_mock_push_request_errors(f->mc, API_END_TXN, 5, RD_KAFKA_RESP_ERR_NO_ERROR,
                                      RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
                                      RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
                                      RD_KAFKA_RESP_ERR_PRODUCER_FENCED,
                                      RD_KAFKA_RESP_ERR_PRODUCER_FENCED);
    run_result_t r;
    run(f, &r);
    check_fatal(f, &r);
    free(r.log);
    run(f, &r);
    if (r.err)
        fail_msg("restart after fencing failed: %s", r.errstr);
    check_outputs(f, 0);
    free(r.log);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_no_faults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endtxn_retriable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addoffsets_addparts_retriable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_txn_offset_commit_abortable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abortable_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endtxn_fenced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_endtxn_invalid_epoch_later, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addpartitions_fenced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fenced_repeatedly_then_restart, setup, teardown),
    };
    /* TXN_MOCK_ONLY=test_name runs one test (debugging) */
    if (getenv("TXN_MOCK_ONLY"))
        cmocka_set_test_filter(getenv("TXN_MOCK_ONLY"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
