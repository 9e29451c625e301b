/*
 * config.h - engage's configuration, declared once as a table.
 *
 * The table in config.c (name, type, default, range, description, offset into
 * engage_conf_t) drives parsing of key=value files and -X overrides,
 * validation, `engage --help`, and docs/CONFIGURATION.md
 * (`engage config --markdown`). Keys starting with "kafka." are passed
 * through (prefix stripped) to librdkafka; a property librdkafka rejects is a
 * fatal error.
 */
#ifndef ENGAGE_CONFIG_H
#define ENGAGE_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include <librdkafka/rdkafka.h>

#include "err.h"

typedef struct engage_conf {
    /* Kafka connectivity */
    char *bootstrap_servers; /* bootstrap.servers (also given to librdkafka) */
    char *group_id;          /* group.id, default "engage" */
    /* topics */
    char *topic_input;    /* topic.input, default "user-actions" */
    char *topic_sessions; /* topic.sessions, default "sessions" */
    char *topic_daily;    /* topic.daily, default "daily-metrics" */
    char *topic_dead;     /* topic.dead_letters, default "dead-letters" */
    char *topic_late;     /* topic.late, default "late-events" */
    char *topic_partials; /* topic.partials, default "engage-day-partials" */
    char *topic_session_metrics; /* topic.session_metrics, default "session-metrics" */
    int topics_create;    /* topics.create (bool), default 1 */
    /* input decoding */
    char *input_format;   /* input.format: "confluent" | "plain", default confluent */
    char *input_schemas;  /* input.schemas: "ID=path[,ID=path...]",
                             default "1=schemas/user_action.avsc" */
    char *input_plain_schema; /* input.plain.schema: writer schema path for
                                 plain Avro, default schemas/user_action.avsc */
    /* output encoding */
    char *output_format;  /* output.format: "confluent" | "plain" */
    int64_t output_schema_id_session; /* output.schema.id.session, default 101 */
    int64_t output_schema_id_daily;   /* output.schema.id.daily, default 102 */
    int64_t output_schema_id_partial; /* output.schema.id.partial, default 103 */
    int64_t output_schema_id_session_metrics; /* output.schema.id.session_metrics, 104 */
    /* semantics */
    int64_t session_gap_ms;   /* session.gap.ms, default 1800000 */
    int64_t grace_ms;         /* watermark.grace.ms, default 300000 */
    int64_t max_skew_ms;      /* timestamp.max.skew.ms, default 3600000 */
    int64_t min_timestamp_ms; /* timestamp.min.ms, default 1262304000000 (2010-01-01) */
    int64_t max_user_id_bytes;/* user_id.max.bytes, default 256 */
    /* processing */
    char *state_dir;          /* state.dir, default "./engage-state" */
    int64_t batch_size;       /* batch.size, default 10000 */
    int64_t batch_timeout_ms; /* batch.timeout.ms, default 100 */
    int64_t checkpoint_records; /* checkpoint.records, default 100000 */
    int fetch_wakeup;         /* fetch.wakeup (bool), default 1 */
    char *processing_guarantee; /* processing.guarantee: exactly_once | at_least_once */
    char *transactional_id;     /* transactional.id, default "" = derived */
    int64_t idle_timeout_ms;    /* idle.timeout.ms, default 60000, 0 = off */
    int until_end;            /* run.until_end (bool), default 0; --until-end */
    char *log_level;          /* log.level: debug|info|warn|error, default info */
    /* bounded state (task.h) */
    int64_t retention_margin_days; /* state.retention.margin.days, default 5 */
    int64_t user_retention_days;   /* user.retention.days, default 90 */
    /* compactor (engage compact) */
    double iqr_multiplier;    /* compact.iqr.multiplier, default 1.5 */

    /* kafka.* pass-through properties, in the order given (prefix stripped) */
    char **kafka_keys;
    char **kafka_vals;
    int kafka_cnt;
} engage_conf_t;

/** Returns a new configuration holding every default. Never NULL (aborts on
 *  OOM). Free with engage_conf_destroy(). */
engage_conf_t *engage_conf_new(void);

/** Frees conf and all its strings; NULL is allowed. */
void engage_conf_destroy(engage_conf_t *conf);

/** Sets one property. "kafka.X" is stored for librdkafka as "X". Unknown keys,
 *  bad values and out-of-range numbers return ENGAGE_ERR_CONFIG with a message
 *  in errstr. Strings are copied. */
engage_err_t engage_conf_set(engage_conf_t *conf, const char *name, const char *value,
                             char *errstr, size_t errstr_size);

/** Parses "name=value" (as given to -X) and calls engage_conf_set(). */
engage_err_t engage_conf_set_kv(engage_conf_t *conf, const char *kv, char *errstr,
                                size_t errstr_size);

/** Loads a key=value file: '#' starts a comment, blank lines ignored,
 *  whitespace around keys and values trimmed. Errors name file and line. */
engage_err_t engage_conf_load_file(engage_conf_t *conf, const char *path, char *errstr,
                                   size_t errstr_size);

/** Returns a new librdkafka configuration with bootstrap.servers and every
 *  kafka.* property applied; librdkafka rejecting one is ENGAGE_ERR_CONFIG
 *  (returns NULL, message in errstr). The caller owns the result (passes it to
 *  rd_kafka_new, which takes ownership on success, or destroys it). */
rd_kafka_conf_t *engage_conf_kafka(const engage_conf_t *conf, char *errstr, size_t errstr_size);

/** Prints every property with type, default and description (for --help). */
void engage_conf_print_help(FILE *fp);

/** Prints docs/CONFIGURATION.md content generated from the table. */
void engage_conf_print_markdown(FILE *fp);

#endif
