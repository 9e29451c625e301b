/*
 * config.c - the configuration table and everything driven by it.
 *
 * Each property is declared exactly once, in `props` below: name, type,
 * default, range (or enum values), description and the offset of its field in
 * engage_conf_t. Parsing (files and -X), validation, defaults, `--help` and
 * docs/CONFIGURATION.md are all loops over that table, so adding a property
 * is one line here plus one field in config.h; the docs test
 * (tests/unit/test_config.c) fails until docs/CONFIGURATION.md is
 * regenerated.
 *
 * "kafka.X" keys are kept as an ordered list of pass-through properties.
 * They are checked against librdkafka as soon as they are set (so a typo in a
 * config file is reported with its file and line) and again when
 * engage_conf_kafka() builds the real rd_kafka_conf_t. librdkafka rejecting
 * a property is always an error, never a warning.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

typedef enum { PT_STRING, PT_INT, PT_BOOL, PT_ENUM, PT_DOUBLE } prop_type_t;

/* Extra validation for string properties beyond "non-empty"; returns 0 if ok,
 * else -1 with a message in errstr. */
typedef int(prop_check_fn)(const char *value, char *errstr, size_t errstr_size);

typedef struct prop {
    const char *name;
    prop_type_t type;
    const char *def;   /* default, as text (parsed like user input) */
    int64_t min, max;  /* PT_INT and PT_DOUBLE range (inclusive) */
    const char *enums; /* PT_ENUM: values separated by '|' */
    prop_check_fn *check;
    const char *desc;
    size_t off; /* offset of the field: char * (STRING, ENUM), int64_t (INT),
                   int (BOOL), double (DOUBLE) */
} prop_t;

static prop_check_fn check_topic, check_schema_map;

#define OFF(f) offsetof(engage_conf_t, f)
#define I32MAX 2147483647LL
#define I64MAX INT64_MAX

static const prop_t props[] = {
    /* Kafka connectivity */
    {"bootstrap.servers", PT_STRING, "localhost:9092", 0, 0, NULL, NULL,
     "Kafka brokers (host:port,...); also given to librdkafka. `-b` sets it.",
     OFF(bootstrap_servers)},
    {"group.id", PT_STRING, "engage", 0, 0, NULL, NULL,
     "Consumer group of the processor.",
     OFF(group_id)},
    /* topics */
    {"topic.input", PT_STRING, "user-actions", 0, 0, NULL, check_topic,
     "Input topic of UserAction events.", OFF(topic_input)},
    {"topic.sessions", PT_STRING, "sessions", 0, 0, NULL, check_topic,
     "Output topic of closed sessions (Session records).", OFF(topic_sessions)},
    {"topic.daily", PT_STRING, "daily-metrics", 0, 0, NULL, check_topic,
     "Output topic of daily metrics (DailyMetrics records).", OFF(topic_daily)},
    {"topic.dead_letters", PT_STRING, "dead-letters", 0, 0, NULL, check_topic,
     "Invalid input records, original bytes plus a reason header.", OFF(topic_dead)},
    {"topic.late", PT_STRING, "late-events", 0, 0, NULL, check_topic,
     "Input records that arrived after the watermark passed their timestamp.",
     OFF(topic_late)},
    {"topic.partials", PT_STRING, "engage-day-partials", 0, 0, NULL, check_topic,
     "Internal topic carrying each input partition's contribution to a day.",
     OFF(topic_partials)},
    {"topic.session_metrics", PT_STRING, "session-metrics", 0, 0, NULL, check_topic,
     "Output topic of `engage compact`: one SessionMetrics record (IQR-filtered session "
     "metrics) per UTC day, keyed by date.",
     OFF(topic_session_metrics)},
    {"topics.create", PT_BOOL, "true", 0, 0, NULL, NULL,
     "Create missing topics at start-up (output topics get the input's partition "
     "count).",
     OFF(topics_create)},
    /* input decoding */
    {"input.format", PT_ENUM, "confluent", 0, 0, "confluent|plain", NULL,
     "Framing of input values: Confluent wire format (magic byte, schema id) or "
     "plain Avro binary.",
     OFF(input_format)},
    {"input.schemas", PT_STRING, "1=builtin", 0, 0, NULL,
     check_schema_map,
     "Writer schemas by Confluent schema id: `ID=path[,ID=path...]`; the path "
     "`builtin` is the compiled-in schemas/user_action.avsc. Each must be "
     "resolvable to the built-in UserAction reader schema.",
     OFF(input_schemas)},
    {"input.plain.schema", PT_STRING, "builtin", 0, 0, NULL, NULL,
     "Writer schema of plain Avro input (input.format=plain); `builtin` is the "
     "compiled-in schemas/user_action.avsc.", OFF(input_plain_schema)},
    /* output encoding */
    {"output.format", PT_ENUM, "confluent", 0, 0, "confluent|plain", NULL,
     "Framing of output values (sessions, daily metrics, partials, session metrics).",
     OFF(output_format)},
    {"output.schema.id.session", PT_INT, "101", 0, I32MAX, NULL, NULL,
     "Schema id written in front of Session values (confluent output).",
     OFF(output_schema_id_session)},
    {"output.schema.id.daily", PT_INT, "102", 0, I32MAX, NULL, NULL,
     "Schema id written in front of DailyMetrics values (confluent output).",
     OFF(output_schema_id_daily)},
    {"output.schema.id.partial", PT_INT, "103", 0, I32MAX, NULL, NULL,
     "Schema id written in front of DayPartial values (confluent output).",
     OFF(output_schema_id_partial)},
    {"output.schema.id.session_metrics", PT_INT, "104", 0, I32MAX, NULL, NULL,
     "Schema id written in front of SessionMetrics values (confluent output).",
     OFF(output_schema_id_session_metrics)},
    /* semantics */
    {"session.gap.ms", PT_INT, "1800000", 1, 7 * 86400000LL, NULL, NULL,
     "Inactivity that ends a session: a gap strictly longer than this starts a new "
     "one.",
     OFF(session_gap_ms)},
    {"watermark.grace.ms", PT_INT, "300000", 0, 86400000LL, NULL, NULL,
     "How far behind a partition's newest event time an event may be and still "
     "count; older events go to the late topic.",
     OFF(grace_ms)},
    {"timestamp.max.skew.ms", PT_INT, "3600000", 0, 30 * 86400000LL, NULL, NULL,
     "An event timestamp further than this ahead of the Kafka record timestamp is "
     "a dead letter.",
     OFF(max_skew_ms)},
    {"timestamp.min.ms", PT_INT, "1262304000000", 0, I64MAX, NULL, NULL,
     "Event timestamps before this (ms since epoch; default 2010-01-01) are dead "
     "letters.",
     OFF(min_timestamp_ms)},
    {"user_id.max.bytes", PT_INT, "256", 1, 1048576, NULL, NULL,
     "Longest accepted user id in bytes; empty or longer ids are dead letters.",
     OFF(max_user_id_bytes)},
    /* processing */
    {"state.dir", PT_STRING, "./engage-state", 0, 0, NULL, NULL,
     "Directory of the local state stores (one RocksDB per input partition).",
     OFF(state_dir)},
    {"batch.size", PT_INT, "10000", 1, 10000000, NULL, NULL,
     "Most input records taken from the consumer in one poll.", OFF(batch_size)},
    {"processing.guarantee", PT_ENUM, "exactly_once", 0, 0, "exactly_once|at_least_once",
     NULL,
     "exactly_once: each checkpoint is a Kafka transaction holding the batch's "
     "outputs, its state changes (changelog topics) and its input offsets; local "
     "RocksDB is a cache restored from the changelog when missing or stale. "
     "at_least_once: outputs are flushed, then local state and offsets are "
     "written; a crash may re-emit byte-identical records.",
     OFF(processing_guarantee)},
    {"transactional.id", PT_STRING, "", 0, -1, NULL, NULL,
     "Transactional id of this member's producer (exactly_once). Empty: derived "
     "from kafka.group.instance.id if set, else from group.id, the host name and "
     "state.dir, so it is stable across restarts of one instance and distinct "
     "between instances.",
     OFF(transactional_id)},
    {"idle.timeout.ms", PT_INT, "60000", 0, 86400000LL, NULL, NULL,
     "Live runs: an input partition that is caught up and receives nothing for "
     "this long (wall-clock time) stops holding days back: its watermark follows "
     "the latest day that other partitions have made final (learned from the "
     "partials topic). 0 disables. Bounded runs (--until-end) never use it, so "
     "replays stay deterministic.",
     OFF(idle_timeout_ms)},
    {"checkpoint.records", PT_INT, "100000", 1, 100000000, NULL, NULL,
     "Input records between checkpoints (wait for output delivery, write state "
     "and offsets). A checkpoint also happens whenever the consumer is caught up. "
     "Larger means fewer waits for the broker and more re-processing after a "
     "crash.",
     OFF(checkpoint_records)},
    {"fetch.wakeup", PT_BOOL, "true", 0, 0, NULL, NULL,
     "Wake librdkafka's fetcher when the consumer queue has drained below half "
     "of kafka.queued.min.messages after being full. librdkafka 2.0 otherwise "
     "pauses fetching for up to one second once that many messages are queued "
     "(librdkafka #2879), which capped a replay at ~130k records/s; the wake-up "
     "is one ListOffsets request per assigned input partition (src/fetchwake.h).",
     OFF(fetch_wakeup)},
    {"batch.timeout.ms", PT_INT, "100", 1, 600000, NULL, NULL,
     "Longest wait for a batch to fill before it is processed.", OFF(batch_timeout_ms)},
    {"run.until_end", PT_BOOL, "false", 0, 0, NULL, NULL,
     "Stop after consuming the input end offsets seen at start and emitting every "
     "day (bounded replay). `engage run --until-end` sets it.",
     OFF(until_end)},
    {"log.level", PT_ENUM, "info", 0, 0, "debug|info|warn|error", NULL,
     "Least severe log level printed to stderr.", OFF(log_level)},
    /* bounded state */
    {"state.retention.margin.days", PT_INT, "5", 1, 3650, NULL, NULL,
     "Days of bitmaps kept beyond the 30-day MAU window: a partition's day bitmaps older "
     "than its last emitted day minus (30 + this) are dropped from memory and deleted "
     "from the store and its changelog.",
     OFF(retention_margin_days)},
    {"user.retention.days", PT_INT, "90", 32, 36500, NULL, NULL,
     "A user whose last counted event is more than this many days before the "
     "partition's last emitted day is removed from the user dictionary (store and "
     "changelog); its ordinal is reused. Must be at least 31 + "
     "state.retention.margin.days (checked when a partition's task opens). A user who "
     "comes back later is counted as usual.",
     OFF(user_retention_days)},
    /* compactor */
    {"compact.iqr.multiplier", PT_DOUBLE, "1.5", 0, 100, NULL, NULL,
     "`engage compact`: the IQR fence multiplier k. A session is valid when its duration "
     "and its action count both lie in [Q1 - k*IQR, Q3 + k*IQR] (inclusive) of its day.",
     OFF(iqr_multiplier)},
};

#define NPROPS (sizeof(props) / sizeof(props[0]))
#define KAFKA_PREFIX "kafka."

static char *xstrdup(const char *s) {
    char *d = strdup(s);
    if (!d)
        abort();
    return d;
}

static const char *type_name(const prop_t *p) {
    switch (p->type) {
    case PT_STRING:
        return "string";
    case PT_INT:
        return "int";
    case PT_BOOL:
        return "bool";
    case PT_ENUM:
        return "enum";
    case PT_DOUBLE:
        return "double";
    }
    return "?";
}

/* ---- validators ---------------------------------------------------------- */

/* Kafka's legal topic names: [a-zA-Z0-9._-], at most 249 characters. */
static int check_topic(const char *v, char *errstr, size_t errstr_size) {
    size_t n = strlen(v);
    if (n > 249) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                      "topic name longer than 249 characters");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (!isalnum(c) && c != '.' && c != '_' && c != '-') {
            engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                          "illegal character '%c' in topic name \"%s\"", c, v);
            return -1;
        }
    }
    return 0;
}

/* "ID=path[,ID=path...]" with ID a non-negative 32-bit integer and path
 * non-empty; whether the files exist is the codec's business. */
static int check_schema_map(const char *v, char *errstr, size_t errstr_size) {
    const char *p = v;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        int ok = eq && eq > p && (size_t)(eq - p) < n - 1 && (eq - p) <= 10;
        int64_t id = 0;
        for (const char *q = p; ok && q < eq; q++) {
            if (!isdigit((unsigned char)*q))
                ok = 0;
            else
                id = id * 10 + (*q - '0');
        }
        if (!ok || id > I32MAX) {
            engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                          "bad schema map entry \"%.*s\" (expected ID=path)", (int)n, p);
            return -1;
        }
        p += n;
        if (*p == ',') {
            p++;
            if (!*p) {
                engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                              "schema map ends with ','");
                return -1;
            }
        }
    }
    return 0;
}

/* ---- parsing one value --------------------------------------------------- */

static const prop_t *find_prop(const char *name) {
    for (size_t i = 0; i < NPROPS; i++)
        if (!strcmp(props[i].name, name))
            return &props[i];
    return NULL;
}

static int enum_has(const char *enums, const char *v) {
    size_t vl = strlen(v);
    const char *p = enums;
    while (*p) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == vl && !strncmp(p, v, n))
            return 1;
        p += n + (bar ? 1 : 0);
    }
    return 0;
}

static engage_err_t set_prop(engage_conf_t *conf, const prop_t *p, const char *value,
                             char *errstr, size_t errstr_size) {
    char *field = (char *)conf + p->off;
    switch (p->type) {
    case PT_STRING:
    case PT_ENUM: {
        if (!*value && p->max != -1) /* max -1 marks strings that may be empty */
            return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                                 "%s: empty value", p->name);
        if (p->type == PT_ENUM && !enum_has(p->enums, value))
            return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                                 "%s: invalid value \"%s\" (expected one of %s)", p->name,
                                 value, p->enums);
        if (p->check) {
            char why[256] = "";
            if (p->check(value, why, sizeof(why)))
                return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "%s: %s",
                                     p->name, why);
        }
        char **sp = (char **)(void *)field;
        free(*sp);
        *sp = xstrdup(value);
        return ENGAGE_ERR_OK;
    }
    case PT_INT: {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(value, &end, 10);
        if (!*value || isspace((unsigned char)*value) || *end || errno == ERANGE)
            return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                                 "%s: invalid integer \"%s\"", p->name, value);
        if (v < p->min || v > p->max)
            return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                                 "%s: %lld out of range %" PRId64 "..%" PRId64, p->name, v,
                                 p->min, p->max);
        *(int64_t *)(void *)field = (int64_t)v;
        return ENGAGE_ERR_OK;
    }
    case PT_DOUBLE: {
        char *end = NULL;
        errno = 0;
        double v = strtod(value, &end);
        if (!*value || isspace((unsigned char)*value) || *end || errno == ERANGE ||
            !isfinite(v))
            return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                                 "%s: invalid number \"%s\"", p->name, value);
        if (v < (double)p->min || v > (double)p->max)
            return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                                 "%s: %s out of range %" PRId64 "..%" PRId64, p->name, value,
                                 p->min, p->max);
        *(double *)(void *)field = v;
        return ENGAGE_ERR_OK;
    }
    case PT_BOOL: {
        int b;
        if (!strcmp(value, "true") || !strcmp(value, "1"))
            b = 1;
        else if (!strcmp(value, "false") || !strcmp(value, "0"))
            b = 0;
        else
            return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                                 "%s: invalid boolean \"%s\" (expected true, false, 1 or 0)",
                                 p->name, value);
        *(int *)(void *)field = b;
        return ENGAGE_ERR_OK;
    }
    }
    return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "%s: bad table entry",
                         p->name);
}

/* ---- public API ----------------------------------------------------------- */

engage_conf_t *engage_conf_new(void) {
    engage_conf_t *conf = calloc(1, sizeof(*conf));
    if (!conf)
        abort();
    for (size_t i = 0; i < NPROPS; i++) {
        char errstr[256];
        /* Defaults go through the same validation as user input; a bad
         * default is a programming error caught by the first test run. */
        if (set_prop(conf, &props[i], props[i].def, errstr, sizeof(errstr))) {
            fprintf(stderr, "engage: bad default: %s\n", errstr);
            abort();
        }
    }
    return conf;
}

void engage_conf_destroy(engage_conf_t *conf) {
    if (!conf)
        return;
    for (size_t i = 0; i < NPROPS; i++)
        if (props[i].type == PT_STRING || props[i].type == PT_ENUM)
            free(*(char **)(void *)((char *)conf + props[i].off));
    for (int i = 0; i < conf->kafka_cnt; i++) {
        free(conf->kafka_keys[i]);
        free(conf->kafka_vals[i]);
    }
    free(conf->kafka_keys);
    free(conf->kafka_vals);
    free(conf);
}

/* Asks librdkafka whether it accepts name=value, using a scratch conf.
 * Returns OK or CONFIG with librdkafka's message. */
static engage_err_t rdkafka_check(const char *name, const char *value, char *errstr,
                                  size_t errstr_size) {
    rd_kafka_conf_t *rc = rd_kafka_conf_new();
    char why[512] = "";
    rd_kafka_conf_res_t r = rd_kafka_conf_set(rc, name, value, why, sizeof(why));
    rd_kafka_conf_destroy(rc);
    if (r != RD_KAFKA_CONF_OK)
        return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "kafka.%s: %s", name,
                             why);
    return ENGAGE_ERR_OK;
}

engage_err_t engage_conf_set(engage_conf_t *conf, const char *name, const char *value,
                             char *errstr, size_t errstr_size) {
    if (!conf || !name || !value)
        return engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                             "engage_conf_set: NULL argument");
    if (!strncmp(name, KAFKA_PREFIX, strlen(KAFKA_PREFIX))) {
        const char *k = name + strlen(KAFKA_PREFIX);
        if (!*k)
            return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                                 "\"kafka.\" needs a librdkafka property name after it");
        engage_err_t err = rdkafka_check(k, value, errstr, errstr_size);
        if (err)
            return err;
        /* A repeated key replaces its value in place: the list stays in
         * first-given order and librdkafka sees each property once. */
        for (int i = 0; i < conf->kafka_cnt; i++) {
            if (!strcmp(conf->kafka_keys[i], k)) {
                free(conf->kafka_vals[i]);
                conf->kafka_vals[i] = xstrdup(value);
                return ENGAGE_ERR_OK;
            }
        }
        char **nk = realloc(conf->kafka_keys, sizeof(char *) * (size_t)(conf->kafka_cnt + 1));
        if (!nk)
            abort();
        conf->kafka_keys = nk;
        char **nv = realloc(conf->kafka_vals, sizeof(char *) * (size_t)(conf->kafka_cnt + 1));
        if (!nv)
            abort();
        conf->kafka_vals = nv;
        conf->kafka_keys[conf->kafka_cnt] = xstrdup(k);
        conf->kafka_vals[conf->kafka_cnt] = xstrdup(value);
        conf->kafka_cnt++;
        return ENGAGE_ERR_OK;
    }
    const prop_t *p = find_prop(name);
    if (!p)
        return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                             "unknown configuration property \"%s\" (see `engage config "
                             "--help`; librdkafka properties take a \"kafka.\" prefix)",
                             name);
    return set_prop(conf, p, value, errstr, errstr_size);
}

/* Trims ASCII whitespace at both ends of s in place; returns the new start. */
static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* Splits "name=value" (whitespace around both trimmed) and sets it. The
 * input is copied, so kv is not modified. */
static engage_err_t set_kv(engage_conf_t *conf, const char *kv, char *errstr,
                           size_t errstr_size) {
    const char *eq = strchr(kv, '=');
    if (!eq)
        return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                             "expected name=value, got \"%s\"", kv);
    char *copy = xstrdup(kv);
    copy[eq - kv] = '\0';
    char *name = trim(copy);
    char *value = trim(copy + (eq - kv) + 1);
    engage_err_t err;
    if (!*name)
        err = engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                            "missing property name in \"%s\"", kv);
    else
        err = engage_conf_set(conf, name, value, errstr, errstr_size);
    free(copy);
    return err;
}

engage_err_t engage_conf_set_kv(engage_conf_t *conf, const char *kv, char *errstr,
                                size_t errstr_size) {
    if (!conf || !kv)
        return engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                             "engage_conf_set_kv: NULL argument");
    return set_kv(conf, kv, errstr, errstr_size);
}

engage_err_t engage_conf_load_file(engage_conf_t *conf, const char *path, char *errstr,
                                   size_t errstr_size) {
    if (!conf || !path)
        return engage_seterr(ENGAGE_ERR_INVALID_ARG, errstr, errstr_size,
                             "engage_conf_load_file: NULL argument");
    FILE *fp = fopen(path, "r");
    if (!fp)
        return engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "%s: %s", path,
                             strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int lineno = 0;
    engage_err_t err = ENGAGE_ERR_OK;
    while ((n = getline(&line, &cap, fp)) >= 0) {
        lineno++;
        /* '#' starts a comment anywhere on the line: no value needs a '#'
         * (topic names cannot contain one). */
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (!*s)
            continue;
        char why[512];
        err = set_kv(conf, s, why, sizeof(why));
        if (err) {
            engage_seterr(err, errstr, errstr_size, "%s:%d: %s", path, lineno, why);
            break;
        }
    }
    if (!err && ferror(fp))
        err = engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "%s: read error", path);
    free(line);
    fclose(fp);
    return err;
}

rd_kafka_conf_t *engage_conf_kafka(const engage_conf_t *conf, char *errstr,
                                   size_t errstr_size) {
    rd_kafka_conf_t *rc = rd_kafka_conf_new();
    char why[512];
    if (conf->bootstrap_servers && *conf->bootstrap_servers &&
        rd_kafka_conf_set(rc, "bootstrap.servers", conf->bootstrap_servers, why,
                          sizeof(why)) != RD_KAFKA_CONF_OK) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "bootstrap.servers: %s", why);
        goto fail;
    }
    /* kafka.* comes last so an explicit kafka.bootstrap.servers wins. */
    for (int i = 0; i < conf->kafka_cnt; i++) {
        if (rd_kafka_conf_set(rc, conf->kafka_keys[i], conf->kafka_vals[i], why,
                              sizeof(why)) != RD_KAFKA_CONF_OK) {
            engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size, "kafka.%s: %s",
                          conf->kafka_keys[i], why);
            goto fail;
        }
    }
    return rc;
fail:
    rd_kafka_conf_destroy(rc);
    return NULL;
}

/* ---- help and docs --------------------------------------------------------- */

static void print_range(FILE *fp, const prop_t *p, int markdown) {
    switch (p->type) {
    case PT_INT:
    case PT_DOUBLE:
        fprintf(fp, "%" PRId64 " .. %" PRId64, p->min, p->max);
        break;
    case PT_BOOL:
        fputs(markdown ? "true, false" : "true|false", fp);
        break;
    case PT_ENUM:
        if (markdown) {
            for (const char *c = p->enums; *c; c++) {
                if (*c == '|')
                    fputs(", ", fp);
                else
                    fputc(*c, fp);
            }
        } else {
            fputs(p->enums, fp);
        }
        break;
    case PT_STRING:
        break;
    }
}

void engage_conf_print_help(FILE *fp) {
    fprintf(fp, "Configuration properties (-c FILE with name=value lines, or -X name=value):\n");
    for (size_t i = 0; i < NPROPS; i++) {
        const prop_t *p = &props[i];
        fprintf(fp, "  %-26s %-6s default: %s", p->name, type_name(p), p->def);
        if (p->type != PT_STRING) {
            fputs("  (", fp);
            print_range(fp, p, 0);
            fputc(')', fp);
        }
        fprintf(fp, "\n      %s\n", p->desc);
    }
    fprintf(fp, "  %-26s %-6s any librdkafka property X, passed through "
                "(e.g. -X kafka.security.protocol=ssl)\n",
            "kafka.X", "string");
}

/* Writes s for a Markdown table cell: '|' escaped. */
static void md_cell(FILE *fp, const char *s) {
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", fp);
        else
            fputc(*s, fp);
    }
}

void engage_conf_print_markdown(FILE *fp) {
    fputs("# Configuration\n"
          "\n"
          "<!-- generated by `engage config --markdown` from the table in src/config.c;\n"
          "     do not edit (tests/unit/test_config.c checks it is current) -->\n"
          "\n"
          "engage reads `name=value` lines from the file given with `-c FILE`\n"
          "(`#` starts a comment; blank lines are ignored; whitespace around names\n"
          "and values is trimmed), then applies each `-X name=value` in order;\n"
          "`-b BROKERS` sets `bootstrap.servers`. Unknown names, malformed values\n"
          "and out-of-range numbers are fatal errors. See\n"
          "`config/engage.conf.example` for a commented example.\n"
          "\n"
          "| property | type | default | range / values | description |\n"
          "|---|---|---|---|---|\n",
          fp);
    for (size_t i = 0; i < NPROPS; i++) {
        const prop_t *p = &props[i];
        fprintf(fp, "| `%s` | %s | `%s` | ", p->name, type_name(p), p->def);
        print_range(fp, p, 1);
        fputs(" | ", fp);
        md_cell(fp, p->desc);
        fputs(" |\n", fp);
    }
    fputs("\n"
          "## librdkafka properties (`kafka.*`)\n"
          "\n"
          "Any property starting with `kafka.` is handed to librdkafka with the\n"
          "prefix removed, for every client engage creates (after\n"
          "`bootstrap.servers`, so `kafka.bootstrap.servers` wins). A property\n"
          "librdkafka rejects (unknown name or invalid value) is a fatal error.\n"
          "See librdkafka's CONFIGURATION.md for the list. Examples:\n"
          "\n"
          "```\n"
          "kafka.security.protocol=SASL_SSL\n"
          "kafka.sasl.mechanisms=PLAIN\n"
          "kafka.compression.type=lz4\n"
          "kafka.statistics.interval.ms=60000\n"
          "```\n",
          fp);
}
