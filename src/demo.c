/*
 * demo.c - `engage demo`: the embedded default. Starts librdkafka's mock
 * cluster in-process, produces generated (or given) events, runs the real
 * processor bounded, then the compactor once (bounded), and prints the
 * per-day metrics they emitted: DailyMetrics joined by date with the
 * SessionMetrics (IQR-filtered) fields.
 *
 * The mock cluster keeps only about 5 MB per partition and silently evicts
 * older records, so the demo refuses inputs that would not fit instead of
 * printing quietly wrong numbers.
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "codec.h"
#include "commands.h"
#include "compactor.h"
#include "config.h"
#include "log.h"
#include "timeutil.h"

/* ~5 MB per partition at roughly 100-130 bytes per record, with margin */
#define DEMO_MAX_RECORDS_PER_PARTITION 30000

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int64_t topic_records(rd_kafka_t *rk, const char *topic, int parts) {
    int64_t total = 0;
    for (int i = 0; i < parts; i++) {
        int64_t lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(rk, topic, i, &lo, &hi, 5000) == 0)
            total += hi - lo;
    }
    return total;
}

/* The compactor's records, collected through its on_emit callback. */
typedef struct metrics_list {
    engage_session_metrics_rec_t *r;
    size_t n, cap;
    int oom;
} metrics_list_t;

static void collect_metrics(void *opaque, const engage_session_metrics_rec_t *r) {
    metrics_list_t *l = opaque;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 64;
        engage_session_metrics_rec_t *nr = realloc(l->r, ncap * sizeof(*nr));
        if (!nr) {
            l->oom = 1;
            return;
        }
        l->r = nr;
        l->cap = ncap;
    }
    l->r[l->n++] = *r;
}

static const engage_session_metrics_rec_t *find_metrics(const metrics_list_t *l,
                                                        const char *date) {
    int32_t day;
    if (!date || engage_day_parse(date, &day))
        return NULL;
    for (size_t i = 0; i < l->n; i++)
        if (l->r[i].day == day)
            return &l->r[i];
    return NULL;
}

/* Appends the SessionMetrics fields (same names as the Avro record) to out;
 * all null when the day has no record. */
static void add_metrics_json(json_t *out, const engage_session_metrics_rec_t *m) {
    const char *qnames[] = {"duration_q1",          "duration_q3",
                            "actions_q1",           "actions_q3",
                            "duration_lower_fence", "duration_upper_fence",
                            "actions_lower_fence",  "actions_upper_fence"};
    double qv[8] = {0};
    if (m) {
        double t[8] = {m->duration_q1,          m->duration_q3,          m->actions_q1,
                       m->actions_q3,           m->duration_lower_fence, m->duration_upper_fence,
                       m->actions_lower_fence,  m->actions_upper_fence};
        memcpy(qv, t, sizeof(qv));
    }
    for (int i = 0; i < 8; i++)
        json_object_set_new(out, qnames[i],
                            m && m->has_quartiles ? json_real(qv[i]) : json_null());
    json_object_set_new(out, "valid_sessions", m ? json_integer(m->valid_sessions) : json_null());
    json_object_set_new(out, "valid_users", m ? json_integer(m->valid_users) : json_null());
    json_object_set_new(out, "valid_avg_duration_ms",
                        m ? json_real(m->valid_avg_duration_ms) : json_null());
    json_object_set_new(out, "valid_actions_per_session",
                        m ? json_real(m->valid_actions_per_session) : json_null());
    json_object_set_new(out, "duration_outliers",
                        m ? json_integer(m->duration_outliers) : json_null());
    json_object_set_new(out, "actions_outliers",
                        m ? json_integer(m->actions_outliers) : json_null());
    json_object_set_new(out, "iqr_multiplier", m ? json_real(m->iqr_multiplier) : json_null());
}

/* Reads every daily-metrics record and prints it with the day's session
 * metrics. Returns days printed or -1. */
static int print_daily(const engage_conf_t *conf, const char *bootstraps, int as_json,
                       int64_t *dead, int64_t *late, int parts, const metrics_list_t *ml) {
    char errstr[512];
    rd_kafka_conf_t *kc = rd_kafka_conf_new();
    if (rd_kafka_conf_set(kc, "bootstrap.servers", bootstraps, errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(kc, "group.id", "engage-demo-reader", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(kc, "enable.partition.eof", "true", errstr, sizeof(errstr)) ||
        rd_kafka_conf_set(kc, "isolation.level", "read_committed", errstr, sizeof(errstr))) {
        fprintf(stderr, "engage demo: %s\n", errstr);
        rd_kafka_conf_destroy(kc);
        return -1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, sizeof(errstr));
    if (!rk) {
        fprintf(stderr, "engage demo: %s\n", errstr);
        rd_kafka_conf_destroy(kc);
        return -1;
    }
    *dead = topic_records(rk, conf->topic_dead, parts);
    *late = topic_records(rk, conf->topic_late, parts);
    engage_encoder_t *enc = engage_encoder_new(strcmp(conf->output_format, "confluent") == 0,
                                               (int32_t)conf->output_schema_id_session,
                                               (int32_t)conf->output_schema_id_daily,
                                               (int32_t)conf->output_schema_id_partial, errstr,
                                               sizeof(errstr));
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, conf->topic_daily, 0)->offset =
        RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);
    int days = 0;
    if (!as_json)
        printf("%-10s %8s %8s %8s %9s %9s %12s %16s %9s %12s %11s\n", "date", "DAU", "WAU",
               "MAU", "sessions", "sess.users", "avg_dur_s", "actions/session", "valid",
               "valid_dur_s", "valid_act/s");
    for (int idle = 0; idle < 100;) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
        if (!m) {
            idle++;
            continue;
        }
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            rd_kafka_message_destroy(m);
            break;
        }
        char *js = NULL;
        if (!m->err && enc &&
            engage_codec_to_json(NULL, enc, ENGAGE_KIND_DAILY, m->payload, m->len, &js, errstr,
                                 sizeof(errstr)) == ENGAGE_ERR_OK) {
            json_t *o = json_loads(js, 0, NULL);
            if (o) {
                days++;
                if (as_json) {
                    json_t *out = json_object();
                    const char *keys[] = {"date", "dau", "wau", "mau", "sessions",
                                          "session_users", "avg_duration_ms",
                                          "actions_per_session"};
                    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
                        json_object_set(out, keys[k], json_object_get(o, keys[k]));
                    add_metrics_json(out, find_metrics(ml, json_string_value(
                                                               json_object_get(o, "date"))));
                    char *line = json_dumps(out, JSON_COMPACT | JSON_PRESERVE_ORDER |
                                                     JSON_REAL_PRECISION(17));
                    printf("%s\n", line);
                    free(line);
                    json_decref(out);
                } else {
                    const engage_session_metrics_rec_t *sm =
                        find_metrics(ml, json_string_value(json_object_get(o, "date")));
                    printf("%-10s %8" PRId64 " %8" PRId64 " %8" PRId64 " %9" PRId64
                           " %9" PRId64 " %12.1f %16.2f",
                           json_string_value(json_object_get(o, "date")),
                           (int64_t)json_integer_value(json_object_get(o, "dau")),
                           (int64_t)json_integer_value(json_object_get(o, "wau")),
                           (int64_t)json_integer_value(json_object_get(o, "mau")),
                           (int64_t)json_integer_value(json_object_get(o, "sessions")),
                           (int64_t)json_integer_value(json_object_get(o, "session_users")),
                           json_number_value(json_object_get(o, "avg_duration_ms")) / 1000.0,
                           json_number_value(json_object_get(o, "actions_per_session")));
                    if (sm)
                        printf(" %9" PRId64 " %12.1f %11.2f\n", sm->valid_sessions,
                               sm->valid_avg_duration_ms / 1000.0,
                               sm->valid_actions_per_session);
                    else
                        printf(" %9s %12s %11s\n", "-", "-", "-");
                }
                json_decref(o);
            }
            free(js);
        } else if (m->err) {
            fprintf(stderr, "engage demo: reading %s: %s\n", conf->topic_daily,
                    rd_kafka_message_errstr(m));
        }
        rd_kafka_message_destroy(m);
    }
    engage_encoder_destroy(enc);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return days;
}

static void usage(FILE *fp) {
    fprintf(fp,
            "usage: engage demo [--events FILE.jsonl] [--partitions N] [--json]\n"
            "                   [--users N] [--days N] [--seed N] [-X key=value]...\n"
            "Runs the whole pipeline on an in-process mock Kafka cluster (no broker needed):\n"
            "the processor, then the compactor once, and prints per-day metrics: a table,\n"
            "or with --json one JSON object per day (DailyMetrics fields, then the\n"
            "SessionMetrics fields of docs/COMPACTOR.md).\n");
}

int engage_cmd_demo(int argc, char **argv) {
    char errstr[1024];
    const char *events = NULL;
    int partitions = 4, as_json = 0, rc = 1;
    engage_gen_opts_t gopts;
    engage_gen_defaults(&gopts);
    gopts.users = 1000; /* about 70k events: fits the mock's retention on 4 partitions */
    engage_conf_t *conf = engage_conf_new();
    rd_kafka_t *host = NULL;
    rd_kafka_mock_cluster_t *mc = NULL;
    FILE *in = NULL;
    char statedir[] = "/tmp/engage-demo-XXXXXX";
    int have_dir = 0;
    int rest_argc = 0;
    char **rest = NULL;
    metrics_list_t metrics = {0};

    if (engage_cli_common(conf, argc, argv, &rest_argc, &rest, errstr, sizeof(errstr))) {
        fprintf(stderr, "engage demo: %s\n", errstr);
        goto out;
    }
    for (int i = 1; i < rest_argc; i++) {
        const char *a = rest[i];
        const char *v = i + 1 < rest_argc ? rest[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) {
            as_json = 1;
        } else if (strcmp(a, "--events") == 0 && v) {
            events = v;
            i++;
        } else if (strcmp(a, "--partitions") == 0 && v) {
            partitions = atoi(v);
            i++;
        } else if (strcmp(a, "--users") == 0 && v) {
            gopts.users = atoll(v);
            i++;
        } else if (strcmp(a, "--days") == 0 && v) {
            gopts.days = atoi(v);
            i++;
        } else if (strcmp(a, "--seed") == 0 && v) {
            gopts.seed = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            rc = 0;
            goto out;
        } else {
            usage(stderr);
            rc = 2;
            goto out;
        }
    }
    if (partitions < 1 || partitions > 64) {
        fprintf(stderr, "engage demo: --partitions must be 1..64\n");
        rc = 2;
        goto out;
    }
    gopts.partitions = partitions;

    /* events: a file, or the generator into a temporary file */
    if (events) {
        in = fopen(events, "r");
        if (!in) {
            fprintf(stderr, "engage demo: cannot open %s\n", events);
            goto out;
        }
    } else {
        in = tmpfile();
        if (!in || engage_gen_write(&gopts, in) < 0) {
            fprintf(stderr, "engage demo: cannot write generated events\n");
            goto out;
        }
        rewind(in);
    }
    {
        int64_t lines = 0;
        int ch;
        while ((ch = fgetc(in)) != EOF)
            if (ch == '\n')
                lines++;
        rewind(in);
        if (lines > (int64_t)DEMO_MAX_RECORDS_PER_PARTITION * partitions) {
            fprintf(stderr,
                    "engage demo: %" PRId64 " events do not fit the mock cluster (it keeps "
                    "about 5 MB per partition and silently drops older records); use more "
                    "--partitions (at most %d events each) or a real broker with engage run\n",
                    lines, DEMO_MAX_RECORDS_PER_PARTITION);
            goto out;
        }
    }

    /* the mock cluster lives in a throwaway client instance */
    rd_kafka_conf_t *hc = rd_kafka_conf_new();
    rd_kafka_conf_set(hc, "log_level", "3", NULL, 0);
    host = rd_kafka_new(RD_KAFKA_PRODUCER, hc, errstr, sizeof(errstr));
    if (!host) {
        fprintf(stderr, "engage demo: %s\n", errstr);
        goto out;
    }
    mc = rd_kafka_mock_cluster_new(host, 1);
    if (!mc) {
        fprintf(stderr, "engage demo: cannot start the mock cluster\n");
        goto out;
    }
    const char *bootstraps = rd_kafka_mock_cluster_bootstraps(mc);
    rd_kafka_mock_topic_create(mc, conf->topic_input, partitions, 1);
    rd_kafka_mock_topic_create(mc, conf->topic_sessions, partitions, 1);
    rd_kafka_mock_topic_create(mc, conf->topic_dead, partitions, 1);
    rd_kafka_mock_topic_create(mc, conf->topic_late, partitions, 1);
    rd_kafka_mock_topic_create(mc, conf->topic_daily, 1, 1);
    rd_kafka_mock_topic_create(mc, conf->topic_partials, 1, 1);
    rd_kafka_mock_topic_create(mc, conf->topic_session_metrics, 1, 1);
    /* exactly_once changelogs (names as processor.c derives them from the
     * group id set below). They must exist first: the mock cluster answers a
     * metadata request for a missing topic by creating it with its default
     * partition count, which need not match the input's. */
    rd_kafka_mock_topic_create(mc, "engage-demo-state-changelog", partitions, 1);
    rd_kafka_mock_topic_create(mc, "engage-demo-aggregator-changelog", 1, 1);

    if (!mkdtemp(statedir)) {
        fprintf(stderr, "engage demo: cannot create a state directory\n");
        goto out;
    }
    have_dir = 1;
    if (engage_conf_set(conf, "bootstrap.servers", bootstraps, errstr, sizeof(errstr)) ||
        engage_conf_set(conf, "state.dir", statedir, errstr, sizeof(errstr)) ||
        engage_conf_set(conf, "group.id", "engage-demo", errstr, sizeof(errstr)) ||
        engage_conf_set(conf, "topics.create", "false", errstr, sizeof(errstr)) ||
        engage_conf_set(conf, "kafka.log_level", "3", errstr, sizeof(errstr))) {
        fprintf(stderr, "engage demo: %s\n", errstr);
        goto out;
    }
    conf->until_end = 1;
    engage_log_set_level(ENGAGE_LOG_WARN);

    int64_t produced = 0;
    if (engage_produce_jsonl(conf, in, conf->topic_input, &produced, errstr, sizeof(errstr))) {
        fprintf(stderr, "engage demo: produce: %s\n", errstr);
        goto out;
    }
    volatile sig_atomic_t stop = 0;
    if (engage_processor_run(conf, &stop, errstr, sizeof(errstr))) {
        fprintf(stderr, "engage demo: %s\n", errstr);
        goto out;
    }
    /* the compactor, once over everything the processor emitted */
    engage_compact_opts_t copts;
    engage_compact_opts_default(&copts);
    copts.bounded = 1;
    copts.on_emit = collect_metrics;
    copts.opaque = &metrics;
    if (engage_compactor_run(conf, &copts, &stop, NULL, errstr, sizeof(errstr))) {
        fprintf(stderr, "engage demo: compact: %s\n", errstr);
        goto out;
    }
    if (metrics.oom) {
        fprintf(stderr, "engage demo: out of memory\n");
        goto out;
    }
    int64_t dead = 0, late = 0;
    if (!as_json)
        printf("engage demo: %" PRId64 " events on %d partitions of an in-process mock "
               "cluster\n\n",
               produced, partitions);
    int days = print_daily(conf, bootstraps, as_json, &dead, &late, partitions, &metrics);
    if (days < 0)
        goto out;
    if (!as_json)
        printf("\n%d days; %" PRId64 " dead letters (topic %s), %" PRId64
               " late events (topic %s)\n",
               days, dead, conf->topic_dead, late, conf->topic_late);
    rc = days > 0 ? 0 : 1;
    if (days == 0)
        fprintf(stderr, "engage demo: no daily metrics were emitted\n");
out:
    if (have_dir)
        nftw(statedir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    if (in)
        fclose(in);
    if (mc)
        rd_kafka_mock_cluster_destroy(mc);
    if (host)
        rd_kafka_destroy(host);
    free(rest);
    free(metrics.r);
    engage_conf_destroy(conf);
    return rc;
}
