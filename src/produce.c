/*
 * produce.c - `engage produce`: JSON lines (docs/JSONL.md) to Kafka.
 *
 * Each line becomes one record, in file order: the event fields are encoded
 * to Avro by the codec (with the writer schema the line names, or the first
 * configured one), or `raw_value_b64` is sent verbatim; `partition`,
 * `kafka_timestamp`, `key` and `key_b64` control the record itself. The
 * producer is idempotent (no duplicates or reordering from retries), so a
 * file produced once is exactly what the processor reads, which the
 * end-to-end tests rely on.
 *
 * Settings engage picks for throughput (linger, batch sizes) and for
 * Java-compatible key partitioning (murmur2_random) are applied only when
 * the configuration does not set them through kafka.*; delivery failures
 * are counted in the delivery-report callback and make the whole call fail.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "codec.h"
#include "commands.h"
#include "log.h"

typedef struct dr_state {
    int64_t delivered;
    int64_t failed;
    char first_error[512];
} dr_state_t;

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    dr_state_t *st = opaque;
    if (m->err) {
        if (!st->failed)
            snprintf(st->first_error, sizeof(st->first_error), "delivery to %s [%" PRId32
                     "] failed: %s", rd_kafka_topic_name(m->rkt), m->partition,
                     rd_kafka_err2str(m->err));
        st->failed++;
    } else {
        st->delivered++;
    }
}

/* Decodes standard base64 (padding optional, no whitespace). Returns a
 * malloc'd buffer (caller frees; never NULL on success, even for 0 bytes) and
 * *len, or NULL if s is not valid base64. */
static unsigned char *b64_decode(const char *s, size_t *len) {
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return NULL;
    unsigned char *out = malloc(n / 4 * 3 + 3);
    if (!out)
        return NULL;
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        int v;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+')
            v = 62;
        else if (c == '/')
            v = 63;
        else {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *len = o;
    return out;
}

/* True when the configuration sets librdkafka property `name` itself. */
static int user_sets(const engage_conf_t *conf, const char *name) {
    for (int i = 0; i < conf->kafka_cnt; i++)
        if (!strcmp(conf->kafka_keys[i], name))
            return 1;
    return 0;
}

static rd_kafka_t *producer_new(const engage_conf_t *conf, dr_state_t *st, char *errstr,
                                size_t errstr_size) {
    static const char *const defaults[][2] = {
        {"enable.idempotence", "true"},
        {"partitioner", "murmur2_random"},
        {"linger.ms", "5"},
        {"batch.num.messages", "10000"},
        {"batch.size", "1000000"},
        {"queue.buffering.max.messages", "1000000"},
        {"queue.buffering.max.kbytes", "1048576"},
    };
    char why[512];
    rd_kafka_conf_t *rc = engage_conf_kafka(conf, errstr, errstr_size);
    if (!rc)
        return NULL;
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++) {
        if (user_sets(conf, defaults[i][0]))
            continue;
        if (rd_kafka_conf_set(rc, defaults[i][0], defaults[i][1], why, sizeof(why)) !=
            RD_KAFKA_CONF_OK) {
            engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "%s: %s", defaults[i][0],
                          why);
            rd_kafka_conf_destroy(rc);
            return NULL;
        }
    }
    rd_kafka_conf_set_dr_msg_cb(rc, dr_msg_cb);
    rd_kafka_conf_set_opaque(rc, st);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, rc, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(rc); /* rd_kafka_new only takes it on success */
        engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size, "cannot create producer: %s",
                      why);
        return NULL;
    }
    return rk;
}

/* Reads an optional integer member. Returns 0 if absent (*present = 0),
 * 0 with *v if an integer, -1 if present but not an integer. */
static int get_int(json_t *obj, const char *name, int64_t *v, int *present) {
    json_t *j = json_object_get(obj, name);
    *present = 0;
    if (!j || json_is_null(j))
        return 0;
    if (!json_is_integer(j))
        return -1;
    *present = 1;
    *v = (int64_t)json_integer_value(j);
    return 0;
}

/* One JSON line (NUL-terminated at line[linelen]) to one record. Returns
 * OK, or an error with errstr (without the line number, which the caller
 * adds). */
static engage_err_t produce_line(rd_kafka_t *rk, engage_decoder_t *dec, int confluent,
                                 const char *topic, const char *line, size_t linelen,
                                 char *errstr, size_t errstr_size) {
    json_error_t jerr;
    void *value = NULL;
    size_t value_len = 0;
    unsigned char *key_owned = NULL;
    const void *key = NULL;
    size_t key_len = 0;
    engage_err_t err = ENGAGE_ERR_OK;

    json_t *obj = json_loadb(line, linelen, JSON_REJECT_DUPLICATES, &jerr);
    if (!obj)
        return engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                             "invalid JSON: %s", jerr.text);
    if (!json_is_object(obj)) {
        err = engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                            "not a JSON object");
        goto done;
    }

    int64_t partition = RD_KAFKA_PARTITION_UA, kts = 0, v = 0;
    int present;
    if (get_int(obj, "partition", &v, &present) || (present && (v < 0 || v > INT32_MAX))) {
        err = engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                            "\"partition\" must be a non-negative integer");
        goto done;
    }
    if (present)
        partition = v;
    if (get_int(obj, "kafka_timestamp", &v, &present) || (present && v < 0)) {
        err = engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                            "\"kafka_timestamp\" must be a non-negative integer");
        goto done;
    }
    int has_kts = present;
    kts = v;

    json_t *raw = json_object_get(obj, "raw_value_b64");
    json_t *uid = json_object_get(obj, "user_id");
    if (raw && !json_is_null(raw)) {
        if (!json_is_string(raw) ||
            !(value = b64_decode(json_string_value(raw), &value_len))) {
            err = engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                                "\"raw_value_b64\" is not a base64 string");
            goto done;
        }
    } else {
        static const char *const req[] = {"event_id", "user_id", "action"};
        for (size_t i = 0; i < 3; i++) {
            if (!json_is_string(json_object_get(obj, req[i]))) {
                err = engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                                    "missing or non-string \"%s\"", req[i]);
                goto done;
            }
        }
        if (!json_is_integer(json_object_get(obj, "timestamp"))) {
            err = engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                                "missing or non-integer \"timestamp\"");
            goto done;
        }
        int64_t sid = engage_decoder_default_schema_id(dec);
        if (get_int(obj, "schema_id", &v, &present) ||
            (present && (v < 0 || v > INT32_MAX))) {
            err = engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                                "\"schema_id\" must be a non-negative integer");
            goto done;
        }
        if (present)
            sid = v;
        /* the codec reads the line itself (NUL-terminated by getline):
         * jansson parses it once more there, which keeps produce
         * independent of the schema's fields */
        err = engage_codec_encode_action_json(dec, confluent, (int32_t)sid, line, &value,
                                              &value_len, errstr, errstr_size);
        if (err)
            goto done;
    }
    /* the record timestamp defaults to the event's own timestamp (also for
     * raw values, whose line may still carry it), as docs/JSONL.md says */
    if (!has_kts && json_is_integer(json_object_get(obj, "timestamp")))
        kts = (int64_t)json_integer_value(json_object_get(obj, "timestamp"));

    /* key: key_b64 > key > user_id > none */
    json_t *kb = json_object_get(obj, "key_b64");
    json_t *ks = json_object_get(obj, "key");
    if (kb && !json_is_null(kb)) {
        if (!json_is_string(kb) || !(key_owned = b64_decode(json_string_value(kb), &key_len))) {
            err = engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                                "\"key_b64\" is not a base64 string");
            goto done;
        }
        key = key_owned;
    } else if (ks && !json_is_null(ks)) {
        if (!json_is_string(ks)) {
            err = engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                                "\"key\" must be a string");
            goto done;
        }
        key = json_string_value(ks);
        key_len = json_string_length(ks);
    } else if (json_is_string(uid)) {
        key = json_string_value(uid);
        key_len = json_string_length(uid);
    }

    for (;;) {
        rd_kafka_resp_err_t kerr = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION((int32_t)partition),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE(value, value_len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_TIMESTAMP(kts),
            RD_KAFKA_V_END);
        if (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(rk, 100); /* serve delivery reports to make room */
            continue;
        }
        if (kerr)
            err = engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size, "produce failed: %s",
                                rd_kafka_err2str(kerr));
        break;
    }
    rd_kafka_poll(rk, 0);

done:
    free(value);
    free(key_owned);
    json_decref(obj);
    return err;
}

static int blank(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

engage_err_t engage_produce_jsonl(const engage_conf_t *conf, FILE *in, const char *topic,
                                  int64_t *count, char *errstr, size_t errstr_size) {
    dr_state_t st;
    memset(&st, 0, sizeof(st));
    engage_err_t err = ENGAGE_ERR_OK;
    rd_kafka_t *rk = NULL;
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int64_t lineno = 0;
    int confluent = !strcmp(conf->input_format, "confluent");
    *count = 0;

    engage_decoder_t *dec = engage_decoder_new(confluent, conf->input_schemas,
                                               conf->input_plain_schema, errstr, errstr_size);
    if (!dec)
        return ENGAGE_ERR_CONFIG;
    rk = producer_new(conf, &st, errstr, errstr_size);
    if (!rk) {
        err = ENGAGE_ERR_KAFKA;
        goto fail;
    }
    while ((n = getline(&line, &cap, in)) >= 0) {
        lineno++;
        if (blank(line, (size_t)n))
            continue;
        char why[512] = "";
        err = produce_line(rk, dec, confluent, topic, line, (size_t)n, why, sizeof(why));
        if (err) {
            engage_seterr(err, errstr, errstr_size, "line %" PRId64 ": %s", lineno, why);
            break;
        }
        if (st.failed)
            break; /* no point producing more */
    }
    if (!err && ferror(in))
        err = engage_seterr(ENGAGE_ERR_IO, errstr, errstr_size, "read error: %s",
                            strerror(errno));
    /* Wait for every delivery report, also after an error, so the records
     * already handed to librdkafka are accounted for. */
    while (rd_kafka_outq_len(rk) > 0)
        rd_kafka_flush(rk, 1000);
    if (!err && st.failed)
        err = engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size,
                            "%" PRId64 " record(s) not delivered; first: %s", st.failed,
                            st.first_error);
    if (!err) {
        char fatal[512];
        rd_kafka_resp_err_t ferr = rd_kafka_fatal_error(rk, fatal, sizeof(fatal));
        if (ferr)
            err = engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size,
                                "fatal producer error: %s", fatal);
    }
    *count = st.delivered;
fail:
    free(line);
    if (rk) /* rd_kafka_destroy does not accept NULL */
        rd_kafka_destroy(rk);
    engage_decoder_destroy(dec);
    return err;
}

static void produce_usage(FILE *fp) {
    fprintf(fp, "usage: engage produce --jsonl FILE|- [-t TOPIC] [-c FILE] "
                "[-X name=value]... [-b BROKERS]\n"
                "Produces JSON lines (docs/JSONL.md) to TOPIC (default: topic.input),\n"
                "Avro-encoded with the input.* schemas, with an idempotent producer.\n");
}

int engage_cmd_produce(int argc, char **argv) {
    char errstr[1024];
    engage_conf_t *conf = engage_conf_new();
    int rest_argc = 0, rc = 0;
    char **rest_argv = NULL;
    const char *path = NULL, *topic = NULL;
    FILE *in = NULL;

    if (engage_cli_common(conf, argc, argv, &rest_argc, &rest_argv, errstr, sizeof(errstr))) {
        fprintf(stderr, "engage produce: %s\n", errstr);
        rc = 2;
        goto done;
    }
    static const struct option lopts[] = {{"jsonl", required_argument, NULL, 'j'},
                                          {"topic", required_argument, NULL, 't'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    int c;
    optind = 0;
    while ((c = getopt_long(rest_argc, rest_argv, "t:h", lopts, NULL)) != -1) {
        if (c == 'j') {
            path = optarg;
        } else if (c == 't') {
            topic = optarg;
        } else if (c == 'h') {
            produce_usage(stdout);
            goto done;
        } else {
            produce_usage(stderr);
            rc = 2;
            goto done;
        }
    }
    if (!path || optind < rest_argc) {
        produce_usage(stderr);
        rc = 2;
        goto done;
    }
    if (!topic)
        topic = conf->topic_input;
    in = strcmp(path, "-") ? fopen(path, "r") : stdin;
    if (!in) {
        fprintf(stderr, "engage produce: %s: %s\n", path, strerror(errno));
        rc = 1;
        goto done;
    }
    int64_t count = 0;
    engage_err_t err = engage_produce_jsonl(conf, in, topic, &count, errstr, sizeof(errstr));
    if (err) {
        fprintf(stderr, "engage produce: %s%s%s\n", strcmp(path, "-") ? path : "",
                strcmp(path, "-") ? ": " : "", errstr);
        rc = 1;
    }
    fprintf(stderr, "produced %" PRId64 " records to %s\n", count, topic);
done:
    if (in && in != stdin)
        fclose(in);
    free(rest_argv);
    engage_conf_destroy(conf);
    return rc;
}
