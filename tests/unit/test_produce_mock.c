/*
 * test_produce_mock.c - `engage produce` and `engage dump` against
 * librdkafka's in-process mock cluster: partitions, keys (override, base64,
 * default user id), Kafka timestamps, raw values and Avro encoding are
 * checked by consuming everything back; then the same topic is dumped.
 * Needs codec.c and schemas/ (run from the repo root).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "codec.h"
#include "commands.h"

#define TOPIC "ua"
#define NPART 3
#define T0 1767225600000LL /* 2026-01-01 */

static rd_kafka_t *host;
static rd_kafka_mock_cluster_t *mc;
static char bootstraps[256];
static char errstr[1024];

static int setup(void **s) {
    (void)s;
    char why[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "log_level", "3", why, sizeof(why));
    host = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof(why));
    if (!host)
        return -1;
    mc = rd_kafka_mock_cluster_new(host, 3);
    if (!mc)
        return -1;
    snprintf(bootstraps, sizeof(bootstraps), "%s", rd_kafka_mock_cluster_bootstraps(mc));
    if (rd_kafka_mock_topic_create(mc, TOPIC, NPART, 1))
        return -1;
    if (rd_kafka_mock_topic_create(mc, "ua2", NPART, 1))
        return -1;
    if (rd_kafka_mock_topic_create(mc, "empty", NPART, 1))
        return -1;
    if (rd_kafka_mock_topic_create(mc, "txn", 2, 1))
        return -1;
    return 0;
}

static int teardown(void **s) {
    (void)s;
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(host);
    return 0;
}

static engage_conf_t *test_conf(void) {
    engage_conf_t *c = engage_conf_new();
    assert_int_equal(engage_conf_set(c, "bootstrap.servers", bootstraps, errstr, sizeof(errstr)),
                     0);
    assert_int_equal(engage_conf_set(c, "kafka.log_level", "3", errstr, sizeof(errstr)), 0);
    return c;
}

static FILE *mem_in(const char *text) {
    FILE *fp = fmemopen((void *)text, strlen(text), "r");
    assert_non_null(fp);
    return fp;
}

/* Consumes every record of topic (expecting `want`) into msgs, ordered by
 * partition then offset. */
static int consume_all(const char *topic, rd_kafka_message_t **msgs, int want) {
    char why[512];
    rd_kafka_conf_t *c = rd_kafka_conf_new();
    rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, why, sizeof(why));
    rd_kafka_conf_set(c, "group.id", "test", why, sizeof(why));
    rd_kafka_conf_set(c, "enable.auto.commit", "false", why, sizeof(why));
    rd_kafka_conf_set(c, "log_level", "3", why, sizeof(why));
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, c, why, sizeof(why));
    assert_non_null(rk);
    rd_kafka_poll_set_consumer(rk);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(NPART);
    for (int p = 0; p < NPART; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    assert_int_equal(rd_kafka_assign(rk, l), 0);
    rd_kafka_topic_partition_list_destroy(l);
    int n = 0, idle = 0;
    while (n < want && idle < 60) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (!m) {
            idle++;
            continue;
        }
        if (m->err) {
            rd_kafka_message_destroy(m);
            continue;
        }
        msgs[n++] = m;
    }
    /* order by partition, offset */
    for (int i = 1; i < n; i++) {
        for (int j = i; j > 0; j--) {
            rd_kafka_message_t *a = msgs[j - 1], *b = msgs[j];
            if (a->partition > b->partition ||
                (a->partition == b->partition && a->offset > b->offset)) {
                msgs[j - 1] = b;
                msgs[j] = a;
            }
        }
    }
    rd_kafka_consumer_close(rk);
    /* messages keep a reference to rk: the caller destroys them first */
    msgs[n] = (rd_kafka_message_t *)(void *)rk;
    return n;
}

static void release_all(rd_kafka_message_t **msgs, int n) {
    rd_kafka_t *rk = (rd_kafka_t *)(void *)msgs[n];
    for (int i = 0; i < n; i++)
        rd_kafka_message_destroy(msgs[i]);
    rd_kafka_destroy(rk);
}

static rd_kafka_message_t *find_key(rd_kafka_message_t **msgs, int n, const void *key,
                                    size_t klen) {
    for (int i = 0; i < n; i++)
        if (msgs[i]->key_len == klen && !memcmp(msgs[i]->key, key, klen))
            return msgs[i];
    return NULL;
}

static const char *INPUT =
    "{\"event_id\":\"e1\",\"user_id\":\"u1\",\"timestamp\":1767225600001,\"action\":\"open\","
    "\"platform\":\"ios\",\"app_version\":\"1.2.3\",\"partition\":2}\n"
    "\n"
    "{\"event_id\":\"e2\",\"user_id\":\"u2\",\"timestamp\":1767225600002,\"action\":\"view\","
    "\"platform\":null,\"partition\":0,\"kafka_timestamp\":1767225699999,\"expect\":\"x\"}\n"
    "{\"raw_value_b64\":\"AAAAA+cB\",\"key\":\"kraw\",\"partition\":1,"
    "\"kafka_timestamp\":1767225800000}\n"
    "{\"event_id\":\"e3\",\"user_id\":\"u3\",\"timestamp\":1767225600003,\"action\":\"click\","
    "\"key\":\"someone-else\",\"partition\":1}\n"
    "{\"event_id\":\"e4\",\"user_id\":\"u4\",\"timestamp\":1767225600004,\"action\":\"click\","
    "\"key_b64\":\"/wA=\",\"key\":\"ignored\",\"partition\":1}\n"
    "{\"event_id\":\"e5\",\"user_id\":\"u5\",\"timestamp\":1767225600005,\"action\":\"a\"}\n"
    "{\"event_id\":\"e6\",\"user_id\":\"u5\",\"timestamp\":1767225600006,\"action\":\"b\"}\n";
#define NREC 7

static void test_produce_consume(void **s) {
    (void)s;
    engage_conf_t *conf = test_conf();
    FILE *in = mem_in(INPUT);
    int64_t count = -1;
    engage_err_t err = engage_produce_jsonl(conf, in, TOPIC, &count, errstr, sizeof(errstr));
    fclose(in);
    if (err)
        fail_msg("produce: %s", errstr);
    assert_int_equal(count, NREC);

    rd_kafka_message_t *msgs[NREC + 2];
    int n = consume_all(TOPIC, msgs, NREC);
    assert_int_equal(n, NREC);

    engage_decoder_t *dec = engage_decoder_new(1, conf->input_schemas, NULL, errstr,
                                               sizeof(errstr));
    assert_non_null(dec);
    engage_action_t a;
    rd_kafka_timestamp_type_t tt;

    /* e1: partition 2, key = user id, timestamp = event time, Avro value */
    rd_kafka_message_t *m = find_key(msgs, n, "u1", 2);
    assert_non_null(m);
    assert_int_equal(m->partition, 2);
    assert_int_equal(rd_kafka_message_timestamp(m, &tt), 1767225600001LL);
    assert_int_equal(tt, RD_KAFKA_TIMESTAMP_CREATE_TIME);
    assert_int_equal(engage_decoder_decode(dec, m->payload, m->len, &a, errstr, sizeof(errstr)),
                     0);
    assert_int_equal(((const unsigned char *)m->payload)[0], 0); /* Confluent magic */
    assert_int_equal(a.ts_ms, 1767225600001LL);
    assert_memory_equal(a.event_id, "e1", 2);
    assert_int_equal(a.user_id_len, 2);
    assert_memory_equal(a.user_id, "u1", 2);
    assert_int_equal(a.action_len, 4);
    assert_memory_equal(a.action, "open", 4);
    assert_non_null(a.platform);
    assert_memory_equal(a.platform, "ios", 3);
    assert_non_null(a.app_version);
    assert_memory_equal(a.app_version, "1.2.3", 5);

    /* e2: explicit Kafka timestamp, null platform, absent app_version */
    m = find_key(msgs, n, "u2", 2);
    assert_non_null(m);
    assert_int_equal(m->partition, 0);
    assert_int_equal(rd_kafka_message_timestamp(m, &tt), 1767225699999LL);
    assert_int_equal(engage_decoder_decode(dec, m->payload, m->len, &a, errstr, sizeof(errstr)),
                     0);
    assert_int_equal(a.ts_ms, 1767225600002LL);
    assert_null(a.platform);
    assert_null(a.app_version);

    /* raw bytes verbatim: 00 00 00 03 e7 01 (schema id 999) */
    m = find_key(msgs, n, "kraw", 4);
    assert_non_null(m);
    assert_int_equal(m->partition, 1);
    assert_int_equal(m->len, 6);
    assert_memory_equal(m->payload, "\x00\x00\x00\x03\xe7\x01", 6);
    assert_int_equal(rd_kafka_message_timestamp(m, &tt), 1767225800000LL);
    assert_int_equal(engage_decoder_decode(dec, m->payload, m->len, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_UNKNOWN_SCHEMA);

    /* key override and key_b64 (wins over key) */
    m = find_key(msgs, n, "someone-else", 12);
    assert_non_null(m);
    assert_int_equal(m->partition, 1);
    assert_int_equal(engage_decoder_decode(dec, m->payload, m->len, &a, errstr, sizeof(errstr)),
                     0);
    assert_memory_equal(a.user_id, "u3", 2);
    m = find_key(msgs, n, "\xff\x00", 2);
    assert_non_null(m);
    assert_int_equal(m->partition, 1);

    /* no partition given: the key decides, the same for the same key */
    rd_kafka_message_t *m5 = NULL, *m6 = NULL;
    for (int i = 0; i < n; i++) {
        if (msgs[i]->key_len == 2 && !memcmp(msgs[i]->key, "u5", 2)) {
            if (!m5)
                m5 = msgs[i];
            else
                m6 = msgs[i];
        }
    }
    assert_non_null(m5);
    assert_non_null(m6);
    assert_int_equal(m5->partition, m6->partition);
    assert_true(m5->offset < m6->offset); /* file order kept */
    assert_int_equal(engage_decoder_decode(dec, m5->payload, m5->len, &a, errstr,
                                           sizeof(errstr)),
                     0);
    assert_memory_equal(a.event_id, "e5", 2);

    engage_decoder_destroy(dec);
    release_all(msgs, n);
    engage_conf_destroy(conf);
}

static void test_produce_errors(void **s) {
    (void)s;
    engage_conf_t *conf = test_conf();
    int64_t count;
    static const struct {
        const char *input, *want;
    } cases[] = {
        {"{\"event_id\":\"e1\",\"user_id\":\"u1\",\"timestamp\":1,\"action\":\"a\"}\nnot json\n",
         "line 2"},
        {"[1,2]\n", "line 1: not a JSON object"},
        {"{\"event_id\":\"e1\",\"timestamp\":1,\"action\":\"a\"}\n", "user_id"},
        {"{\"event_id\":\"e1\",\"user_id\":\"u1\",\"timestamp\":\"x\",\"action\":\"a\"}\n",
         "timestamp"},
        {"{\"raw_value_b64\":\"!!!\"}\n", "raw_value_b64"},
        {"{\"raw_value_b64\":\"AA==\",\"partition\":-1}\n", "partition"},
        {"{\"event_id\":\"e1\",\"user_id\":\"u1\",\"timestamp\":1,\"action\":\"a\","
         "\"schema_id\":5}\n",
         "line 1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        FILE *in = mem_in(cases[i].input);
        errstr[0] = '\0';
        engage_err_t err = engage_produce_jsonl(conf, in, "ua2", &count, errstr, sizeof(errstr));
        fclose(in);
        assert_int_not_equal(err, ENGAGE_ERR_OK);
        if (!strstr(errstr, cases[i].want))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, errstr, cases[i].want);
    }
    /* a partition the topic does not have: the delivery fails */
    FILE *in = mem_in("{\"raw_value_b64\":\"AA==\",\"partition\":7}\n");
    assert_int_equal(engage_produce_jsonl(conf, in, "ua2", &count, errstr, sizeof(errstr)),
                     ENGAGE_ERR_KAFKA);
    fclose(in);
    engage_conf_destroy(conf);

    /* librdkafka rejecting a pass-through property is fatal */
    conf = test_conf();
    conf->kafka_keys = realloc(conf->kafka_keys, sizeof(char *) * 2);
    conf->kafka_vals = realloc(conf->kafka_vals, sizeof(char *) * 2);
    conf->kafka_keys[1] = strdup("no.such.prop");
    conf->kafka_vals[1] = strdup("1");
    conf->kafka_cnt = 2;
    in = mem_in("{\"raw_value_b64\":\"AA==\"}\n");
    assert_int_not_equal(engage_produce_jsonl(conf, in, "ua2", &count, errstr, sizeof(errstr)),
                         ENGAGE_ERR_OK);
    assert_non_null(strstr(errstr, "no.such.prop"));
    fclose(in);
    engage_conf_destroy(conf);
}

/* Runs `engage dump` with stdout captured; returns the output (malloc'd). */
static char *run_dump(char **argv, int argc, int *rc) {
    char path[] = "/tmp/engage_test_dump_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    fflush(stdout);
    int saved = dup(1);
    dup2(fd, 1);
    *rc = engage_cmd_dump(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    off_t n = lseek(fd, 0, SEEK_END);
    lseek(fd, 0, SEEK_SET);
    char *out = calloc(1, (size_t)n + 1);
    assert_int_equal(read(fd, out, (size_t)n), n);
    close(fd);
    unlink(path);
    return out;
}

static void test_dump(void **s) {
    (void)s;
    /* the records of test_produce_consume are in TOPIC */
    char *argv[] = {"dump", TOPIC, "-b", bootstraps, "--kind", "action", "-X",
                    "kafka.log_level=3", NULL};
    int rc;
    char *out = run_dump(argv, 8, &rc);
    assert_int_equal(rc, 0);
    int lines = 0, last_part = -1, errors = 0;
    int64_t last_off = -1;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        json_error_t jerr;
        json_t *j = json_loads(line, 0, &jerr);
        if (!j)
            fail_msg("dump line does not parse: %s: %s", jerr.text, line);
        assert_string_equal(json_string_value(json_object_get(j, "topic")), TOPIC);
        int part = (int)json_integer_value(json_object_get(j, "partition"));
        int64_t off = json_integer_value(json_object_get(j, "offset"));
        assert_true(part > last_part || (part == last_part && off > last_off));
        last_part = part;
        last_off = off;
        assert_true(json_is_integer(json_object_get(j, "timestamp")));
        assert_true(json_is_object(json_object_get(j, "headers")));
        json_t *key = json_object_get(j, "key");
        json_t *v = json_object_get(j, "value");
        if (json_is_null(key)) {
            /* the non-UTF-8 key 0xff 0x00 */
            assert_string_equal(json_string_value(json_object_get(j, "key_b64")), "/wA=");
        }
        if (json_object_get(j, "error")) {
            errors++; /* the schema-999 raw record */
            assert_true(json_is_null(v));
            assert_string_equal(json_string_value(json_object_get(j, "value_b64")), "AAAAA+cB");
        } else {
            assert_true(json_is_object(v));
            assert_true(json_is_string(json_object_get(v, "event_id")));
            if (!strcmp(json_string_value(json_object_get(v, "event_id")), "e1")) {
                assert_string_equal(json_string_value(key), "u1");
                assert_int_equal(json_integer_value(json_object_get(v, "timestamp")),
                                 1767225600001LL);
                assert_string_equal(json_string_value(json_object_get(v, "platform")), "ios");
            }
        }
        json_decref(j);
        lines++;
    }
    assert_int_equal(lines, NREC);
    assert_int_equal(errors, 1);
    free(out);

    /* raw kind and --max */
    char *argv2[] = {"dump", TOPIC, "-b", bootstraps, "--kind", "raw", "--max", "2", NULL};
    out = run_dump(argv2, 8, &rc);
    assert_int_equal(rc, 0);
    lines = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n")) {
        json_t *j = json_loads(line, 0, NULL);
        assert_non_null(j);
        assert_true(json_is_string(json_object_get(j, "value_b64")));
        assert_null(json_object_get(j, "value"));
        json_decref(j);
        lines++;
    }
    assert_int_equal(lines, 2);
    free(out);

    /* an empty topic dumps nothing and ends */
    char *argv3[] = {"dump", "empty", "-b", bootstraps, NULL};
    out = run_dump(argv3, 4, &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "");
    free(out);

    /* transactions: the last offsets are commit markers, never delivered;
     * dump must still see the end */
    {
        char why[512];
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        rd_kafka_conf_set(c, "bootstrap.servers", bootstraps, why, sizeof(why));
        rd_kafka_conf_set(c, "transactional.id", "test-txn", why, sizeof(why));
        rd_kafka_conf_set(c, "log_level", "3", why, sizeof(why));
        rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, c, why, sizeof(why));
        assert_non_null(p);
        assert_null(rd_kafka_init_transactions(p, 10000));
        for (int t = 0; t < 2; t++) {
            assert_null(rd_kafka_begin_transaction(p));
            for (int i = 0; i < 3; i++) {
                char v[8];
                snprintf(v, sizeof(v), "t%d-%d", t, i);
                assert_int_equal(rd_kafka_producev(p, RD_KAFKA_V_TOPIC("txn"),
                                                   RD_KAFKA_V_PARTITION(i % 2),
                                                   RD_KAFKA_V_VALUE(v, strlen(v)),
                                                   RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                                   RD_KAFKA_V_END),
                                 0);
            }
            assert_null(rd_kafka_commit_transaction(p, 10000));
        }
        rd_kafka_destroy(p);
    }
    char *argv5[] = {"dump", "txn", "-b", bootstraps, "--kind", "raw", NULL};
    out = run_dump(argv5, 6, &rc);
    assert_int_equal(rc, 0);
    lines = 0;
    for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
        lines++;
    assert_int_equal(lines, 6);
    free(out);

    /* usage errors */
    char *argv4[] = {"dump", "-b", bootstraps, NULL};
    out = run_dump(argv4, 3, &rc);
    assert_int_equal(rc, 2);
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_produce_consume),
        cmocka_unit_test(test_produce_errors),
        cmocka_unit_test(test_dump),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
