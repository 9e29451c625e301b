/*
 * dump.c - `engage dump TOPIC`: a topic's committed records as JSON lines.
 *
 * Reads every partition from the beginning up to the high watermark queried
 * at start, with isolation.level=read_committed, without joining or
 * committing to a group, and prints one JSON object per record ordered by
 * partition, then offset:
 *
 *   {"topic":..,"partition":..,"offset":..,"timestamp":..,"key":..,
 *    "headers":{"name":"value",...},"value":{...decoded Avro...}}
 *
 * Partitions are read one at a time, which gives that order without
 * buffering a whole topic. The end of a partition is known from the
 * consumer's own EOF events (enable.partition.eof), not from seeing the
 * record at high-1: under transactions the last offset is often a commit
 * marker that is never delivered.
 *
 * Bytes that are not text are never mangled: a key that is not valid UTF-8
 * is printed as "key":null plus "key_b64", a header value as {"b64":..}, and
 * raw records (dead letters, late events) as "value_b64".
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "codec.h"
#include "commands.h"
#include "log.h"

#define META_TIMEOUT_MS 10000

typedef enum {
    DK_SESSION,
    DK_DAILY,
    DK_PARTIAL,
    DK_ACTION,
    DK_RAW,
    DK_METRICS,
    DK__COUNT
} dump_kind_t;
static const char *const kind_names[DK__COUNT] = {"session", "daily", "partial",
                                                  "action",  "raw",   "metrics"};

/* ---- JSON output helpers ------------------------------------------------- */

/* Returns 1 if s[0..n) is well-formed UTF-8 (no overlongs, no surrogates,
 * nothing above U+10FFFF). */
static int utf8_valid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (n - i <= need)
            return 0;
        for (size_t k = 1; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += need + 1;
    }
    return 1;
}

static int put(engage_buf_t *b, const char *s) { return engage_buf_append(b, s, strlen(s)); }

/* Appends s (valid UTF-8) as a JSON string. */
static int put_jstr(engage_buf_t *b, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    if (engage_buf_reserve(b, n * 6 + 2))
        return -1;
    char *p = b->p + b->len;
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c < 0x20) {
            memcpy(p, "\\u00", 4);
            p += 4;
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    b->len = (size_t)(p - b->p);
    return 0;
}

static int put_b64(engage_buf_t *b, const void *data, size_t n) {
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *d = data;
    if (engage_buf_reserve(b, (n + 2) / 3 * 4 + 2))
        return -1;
    char *p = b->p + b->len;
    *p++ = '"';
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = ((uint32_t)d[i] << 16) | ((uint32_t)d[i + 1] << 8) | d[i + 2];
        *p++ = tbl[v >> 18];
        *p++ = tbl[(v >> 12) & 63];
        *p++ = tbl[(v >> 6) & 63];
        *p++ = tbl[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)d[i + 1] << 8;
        *p++ = tbl[v >> 18];
        *p++ = tbl[(v >> 12) & 63];
        *p++ = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        *p++ = '=';
    }
    *p++ = '"';
    b->len = (size_t)(p - b->p);
    return 0;
}

static int put_i64(engage_buf_t *b, int64_t v) {
    char t[32];
    int n = snprintf(t, sizeof(t), "%" PRId64, v);
    return engage_buf_append(b, t, (size_t)n);
}

/* ---- one record ---------------------------------------------------------- */

typedef struct dumper {
    dump_kind_t kind;
    engage_decoder_t *dec;
    engage_encoder_t *enc;
    engage_buf_t line;
    FILE *out;
} dumper_t;

/* Renders m as one JSON line. Returns 0, or -1 on OOM / write error. */
static int dump_record(dumper_t *d, const rd_kafka_message_t *m) {
    engage_buf_t *b = &d->line;
    int rc = 0;
    engage_buf_reset(b);
    rc |= put(b, "{\"topic\":");
    const char *topic = rd_kafka_topic_name(m->rkt);
    rc |= put_jstr(b, topic, strlen(topic));
    rc |= put(b, ",\"partition\":");
    rc |= put_i64(b, m->partition);
    rc |= put(b, ",\"offset\":");
    rc |= put_i64(b, m->offset);
    rc |= put(b, ",\"timestamp\":");
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(m, &tstype);
    rc |= tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? put(b, "null") : put_i64(b, ts);

    rc |= put(b, ",\"key\":");
    if (!m->key) {
        rc |= put(b, "null");
    } else if (utf8_valid(m->key, m->key_len)) {
        rc |= put_jstr(b, m->key, m->key_len);
    } else {
        rc |= put(b, "null,\"key_b64\":");
        rc |= put_b64(b, m->key, m->key_len);
    }

    rc |= put(b, ",\"headers\":{");
    rd_kafka_headers_t *hdrs = NULL;
    if (rd_kafka_message_headers(m, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *val;
        size_t size;
        for (size_t i = 0; !rd_kafka_header_get_all(hdrs, i, &name, &val, &size); i++) {
            if (i)
                rc |= put(b, ",");
            rc |= put_jstr(b, name, strlen(name));
            rc |= put(b, ":");
            if (!val) {
                rc |= put(b, "null");
            } else if (utf8_valid(val, size)) {
                rc |= put_jstr(b, val, size);
            } else {
                rc |= put(b, "{\"b64\":");
                rc |= put_b64(b, val, size);
                rc |= put(b, "}");
            }
        }
    }
    rc |= put(b, "}");

    if (!m->payload) {
        rc |= put(b, ",\"value\":null");
    } else if (d->kind == DK_RAW) {
        rc |= put(b, ",\"value_b64\":");
        rc |= put_b64(b, m->payload, m->len);
    } else {
        static const engage_kind_t ck[DK__COUNT] = {
            [DK_SESSION] = ENGAGE_KIND_SESSION, [DK_DAILY] = ENGAGE_KIND_DAILY,
            [DK_PARTIAL] = ENGAGE_KIND_PARTIAL, [DK_ACTION] = ENGAGE_KIND_USER_ACTION,
            [DK_METRICS] = ENGAGE_KIND_SESSION_METRICS};
        char *json = NULL;
        char why[512] = "";
        if (engage_codec_to_json(d->dec, d->enc, ck[d->kind], m->payload, m->len, &json, why,
                                 sizeof(why))) {
            /* keep going: one undecodable record should not hide the rest */
            rc |= put(b, ",\"value\":null,\"value_b64\":");
            rc |= put_b64(b, m->payload, m->len);
            rc |= put(b, ",\"error\":");
            rc |= put_jstr(b, why, strlen(why));
        } else {
            rc |= put(b, ",\"value\":");
            rc |= put(b, json);
        }
        free(json);
    }
    rc |= put(b, "}\n");
    if (rc)
        return -1;
    return fwrite(b->p, 1, b->len, d->out) == b->len ? 0 : -1;
}

/* ---- the command ---------------------------------------------------------- */

static int kind_parse(const char *s, dump_kind_t *k) {
    for (int i = 0; i < DK__COUNT; i++) {
        if (!strcmp(s, kind_names[i])) {
            *k = (dump_kind_t)i;
            return 0;
        }
    }
    return -1;
}

/* The kind of a topic: its configured role first, then its name. */
static dump_kind_t kind_of_topic(const engage_conf_t *c, const char *t) {
    if (!strcmp(t, c->topic_sessions))
        return DK_SESSION;
    if (!strcmp(t, c->topic_daily))
        return DK_DAILY;
    if (!strcmp(t, c->topic_partials))
        return DK_PARTIAL;
    if (!strcmp(t, c->topic_session_metrics))
        return DK_METRICS;
    if (!strcmp(t, c->topic_input))
        return DK_ACTION;
    if (!strcmp(t, c->topic_dead) || !strcmp(t, c->topic_late))
        return DK_RAW;
    if (strstr(t, "partial"))
        return DK_PARTIAL;
    if (strstr(t, "session-metrics") || strstr(t, "session_metrics"))
        return DK_METRICS;
    if (strstr(t, "session"))
        return DK_SESSION;
    if (strstr(t, "daily"))
        return DK_DAILY;
    return DK_RAW; /* unknown: never fails to print */
}

static void dump_usage(FILE *fp) {
    fprintf(fp, "usage: engage dump TOPIC [--kind session|daily|partial|action|raw|metrics]\n"
                "                   [--max N] [-c FILE] [-X name=value]... [-b BROKERS]\n"
                "Prints TOPIC's committed records (up to the end offsets at start) as JSON\n"
                "lines, by partition then offset. --kind defaults from the topic's role in\n"
                "the configuration (topic.sessions -> session, topic.daily -> daily,\n"
                "topic.partials -> partial, topic.session_metrics -> metrics, topic.input ->\n"
                "action, dead letters and late events -> raw, i.e. value_b64).\n");
}

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int user_sets(const engage_conf_t *conf, const char *name) {
    for (int i = 0; i < conf->kafka_cnt; i++)
        if (!strcmp(conf->kafka_keys[i], name))
            return 1;
    return 0;
}

static rd_kafka_t *consumer_new(const engage_conf_t *conf, char *errstr, size_t errstr_size) {
    char why[512], gid[512];
    rd_kafka_conf_t *rc = engage_conf_kafka(conf, errstr, errstr_size);
    if (!rc)
        return NULL;
    /* assign() needs a group.id, but nothing joins the group or commits */
    snprintf(gid, sizeof(gid), "%s-dump", conf->group_id);
    const char *const settings[][2] = {
        {"group.id", gid},
        {"isolation.level", "read_committed"},
        {"enable.auto.commit", "false"},
        {"enable.auto.offset.store", "false"},
        {"enable.partition.eof", "true"},
    };
    for (size_t i = 0; i < sizeof(settings) / sizeof(settings[0]); i++) {
        if (i < 2 && user_sets(conf, settings[i][0]))
            continue; /* the user may choose these two */
        if (rd_kafka_conf_set(rc, settings[i][0], settings[i][1], why, sizeof(why)) !=
            RD_KAFKA_CONF_OK) {
            engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "%s: %s", settings[i][0], why);
            rd_kafka_conf_destroy(rc);
            return NULL;
        }
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, rc, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(rc);
        engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size, "cannot create consumer: %s", why);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* Reads partition `part` of topic from the beginning until offset `end`.
 * Returns 0, 1 when --max was reached, or -1 with errstr. */
static int dump_partition(rd_kafka_t *rk, dumper_t *d, const char *topic, int32_t part,
                          int64_t end, int64_t max, int64_t *count, char *errstr,
                          size_t errstr_size) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, part)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t kerr = rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    if (kerr) {
        engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size, "assign %s [%" PRId32 "]: %s",
                      topic, part, rd_kafka_err2str(kerr));
        return -1;
    }
    int ret = 0;
    for (;;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
        if (!m)
            continue;
        int done = 0;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* under read_committed an EOF below `end` means a transaction
             * is still open: wait for its outcome */
            done = m->partition == part && m->offset >= end;
        } else if (m->err) {
            if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                m->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
                m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED ||
                m->err == RD_KAFKA_RESP_ERR__FATAL) {
                engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size, "%s [%" PRId32 "]: %s",
                              topic, part, rd_kafka_message_errstr(m));
                ret = -1;
                done = 1;
            } else {
                LOG_WARN("dump: %s", rd_kafka_message_errstr(m));
            }
        } else if (m->partition == part) {
            if (dump_record(d, m)) {
                engage_seterr(ENGAGE_ERR_IO, errstr, errstr_size, "write error");
                ret = -1;
                done = 1;
            } else {
                (*count)++;
                if (max > 0 && *count >= max) {
                    ret = 1;
                    done = 1;
                } else if (m->offset + 1 >= end) {
                    done = 1;
                }
            }
        }
        rd_kafka_message_destroy(m);
        if (done)
            break;
    }
    rd_kafka_assign(rk, NULL);
    return ret;
}

int engage_cmd_dump(int argc, char **argv) {
    char errstr[1024];
    engage_conf_t *conf = engage_conf_new();
    int rest_argc = 0, rc = 0;
    char **rest_argv = NULL;
    const char *topic = NULL, *kind_arg = NULL;
    int64_t max = 0, count = 0;
    rd_kafka_t *rk = NULL;
    rd_kafka_topic_t *rkt = NULL;
    const struct rd_kafka_metadata *md = NULL;
    int32_t *parts = NULL;
    int64_t *ends = NULL;
    dumper_t d;
    memset(&d, 0, sizeof(d));
    d.out = stdout;

    if (engage_cli_common(conf, argc, argv, &rest_argc, &rest_argv, errstr, sizeof(errstr))) {
        fprintf(stderr, "engage dump: %s\n", errstr);
        rc = 2;
        goto done;
    }
    static const struct option lopts[] = {{"kind", required_argument, NULL, 'k'},
                                          {"max", required_argument, NULL, 'm'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    int c;
    optind = 0;
    while ((c = getopt_long(rest_argc, rest_argv, "h", lopts, NULL)) != -1) {
        if (c == 'k') {
            kind_arg = optarg;
        } else if (c == 'm') {
            char *end;
            max = strtoll(optarg, &end, 10);
            if (!*optarg || *end || max < 0) {
                fprintf(stderr, "engage dump: invalid --max \"%s\"\n", optarg);
                rc = 2;
                goto done;
            }
        } else if (c == 'h') {
            dump_usage(stdout);
            goto done;
        } else {
            dump_usage(stderr);
            rc = 2;
            goto done;
        }
    }
    if (optind != rest_argc - 1) {
        dump_usage(stderr);
        rc = 2;
        goto done;
    }
    topic = rest_argv[optind];
    d.kind = kind_of_topic(conf, topic);
    if (kind_arg && kind_parse(kind_arg, &d.kind)) {
        fprintf(stderr, "engage dump: unknown --kind \"%s\"\n", kind_arg);
        rc = 2;
        goto done;
    }
    if (d.kind == DK_ACTION) {
        d.dec = engage_decoder_new(!strcmp(conf->input_format, "confluent"),
                                   conf->input_schemas, conf->input_plain_schema, errstr,
                                   sizeof(errstr));
        if (!d.dec)
            goto fail;
    } else if (d.kind != DK_RAW) {
        d.enc = engage_encoder_new(!strcmp(conf->output_format, "confluent"),
                                   (int32_t)conf->output_schema_id_session,
                                   (int32_t)conf->output_schema_id_daily,
                                   (int32_t)conf->output_schema_id_partial, errstr,
                                   sizeof(errstr));
        if (!d.enc)
            goto fail;
    }
    if (!(rk = consumer_new(conf, errstr, sizeof(errstr))))
        goto fail;

    rkt = rd_kafka_topic_new(rk, topic, NULL);
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, rkt, &md, META_TIMEOUT_MS);
    if (!kerr)
        kerr = md->topic_cnt == 1 ? md->topics[0].err : RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC;
    if (kerr) {
        engage_seterr(ENGAGE_ERR_KAFKA, errstr, sizeof(errstr), "topic %s: %s", topic,
                      rd_kafka_err2str(kerr));
        goto fail;
    }
    int pcnt = md->topics[0].partition_cnt;
    parts = calloc((size_t)pcnt + 1, sizeof(*parts));
    ends = calloc((size_t)pcnt + 1, sizeof(*ends));
    if (!parts || !ends)
        abort();
    for (int i = 0; i < pcnt; i++)
        parts[i] = md->topics[0].partitions[i].id;
    qsort(parts, (size_t)pcnt, sizeof(*parts), cmp_i32);
    /* the end of the dump is fixed now; records produced later are not shown */
    for (int i = 0; i < pcnt; i++) {
        int64_t lo = 0, hi = 0;
        kerr = rd_kafka_query_watermark_offsets(rk, topic, parts[i], &lo, &hi, META_TIMEOUT_MS);
        if (kerr) {
            engage_seterr(ENGAGE_ERR_KAFKA, errstr, sizeof(errstr),
                          "watermarks of %s [%" PRId32 "]: %s", topic, parts[i],
                          rd_kafka_err2str(kerr));
            goto fail;
        }
        ends[i] = hi > lo ? hi : -1; /* -1: nothing to read */
    }
    for (int i = 0; i < pcnt; i++) {
        if (ends[i] < 0)
            continue;
        int r = dump_partition(rk, &d, topic, parts[i], ends[i], max, &count, errstr,
                               sizeof(errstr));
        if (r < 0)
            goto fail;
        if (r > 0)
            break;
    }
    if (fflush(stdout)) {
        engage_seterr(ENGAGE_ERR_IO, errstr, sizeof(errstr), "write error on stdout");
        goto fail;
    }
    fprintf(stderr, "dumped %" PRId64 " records from %s (kind %s)\n", count, topic,
            kind_names[d.kind]);
    goto done;
fail:
    fprintf(stderr, "engage dump: %s\n", errstr);
    rc = 1;
done:
    free(parts);
    free(ends);
    if (md)
        rd_kafka_metadata_destroy(md);
    if (rkt)
        rd_kafka_topic_destroy(rkt);
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    engage_decoder_destroy(d.dec);
    engage_encoder_destroy(d.enc);
    engage_buf_free(&d.line);
    free(rest_argv);
    engage_conf_destroy(conf);
    return rc;
}
