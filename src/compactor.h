/*
 * compactor.h - `engage compact`: exact per-day IQR session metrics from the
 * processor's output topics (docs/COMPACTOR.md).
 *
 * The compactor reads every partition of the sessions topic (closed Session
 * records) and of the daily-metrics topic (DailyMetrics, whose `sessions`
 * field is the exact number of sessions that started on the day). A day is
 * complete when the number of DISTINCT session_ids seen for it equals that
 * count (a crash can make the processor re-emit byte-identical sessions, so
 * they are deduplicated by id). A complete day's sessions go through
 * engage_iqr_compute() (src/iqr.h) and one SessionMetrics record, keyed by
 * the date, is produced to topic.session_metrics; the day's memory is freed.
 *
 * Because it reads every partition through Kafka, the result is exact
 * however the processor's partitions are spread over pods, and it depends
 * only on the set of sessions of each day: running it twice over the same
 * days produces identical bytes. No wall clock enters the computation.
 *
 * Two modes:
 *  - bounded (opts.bounded, `--until-end`, or a date range): read both topics
 *    from the beginning up to the end offsets seen at start, emit every
 *    complete day in the range in date order, report incomplete days as
 *    ENGAGE_ERR_INCOMPLETE, return. Days already in the output topic are
 *    emitted again (identical bytes; the output is an upsert by date).
 *  - continuous: first read the output topic to learn which days are
 *    already emitted (those are skipped), then follow both topics and emit
 *    each day as it completes, until *stop becomes non-zero.
 */
#ifndef ENGAGE_COMPACTOR_H
#define ENGAGE_COMPACTOR_H

#include <signal.h>
#include <stdint.h>

#include "codec.h"
#include "config.h"
#include "err.h"

typedef struct engage_compact_opts {
    int bounded;      /* 1: stop at the end offsets seen at start */
    int32_t from_day; /* first UTC day number to emit (INT32_MIN: no bound) */
    int32_t to_day;   /* last UTC day number to emit (INT32_MAX: no bound) */
    /* Optional: called for each record after it was handed to the producer,
     * in emission order (the demo folds them into its output). r is only
     * valid during the call. */
    void (*on_emit)(void *opaque, const engage_session_metrics_rec_t *r);
    void *opaque;
} engage_compact_opts_t;

typedef struct engage_compact_stats {
    int64_t sessions_read;   /* Session records consumed */
    int64_t duplicates;      /* of those, repeated session_ids (ignored) */
    int64_t daily_read;      /* DailyMetrics records consumed */
    int64_t skipped_records; /* records of days out of range or already emitted */
    int64_t days_emitted;
    int64_t days_known;      /* continuous: days found in the output topic at start */
    int64_t days_incomplete; /* bounded: days in range that could not be emitted */
} engage_compact_stats_t;

/** Fills opts with: continuous, no date bounds, no callback. */
void engage_compact_opts_default(engage_compact_opts_t *opts);

/** Runs the compactor with conf (bootstrap.servers, topic.sessions,
 *  topic.daily, topic.session_metrics, output.format,
 *  output.schema.id.session_metrics, compact.iqr.multiplier, topics.create,
 *  kafka.*) until done (bounded) or *stop (continuous; bounded runs also
 *  stop early on it). stats may be NULL. Creates the output topic with one
 *  partition when it is missing and topics.create is on.
 *  Returns OK; INCOMPLETE when a bounded run found days in range it could
 *  not complete (every complete day was still emitted; errstr lists the
 *  first ones) or was stopped before reaching its end offsets; KAFKA (including missing input topics), NOMEM or CONFIG with
 *  errstr. */
engage_err_t engage_compactor_run(const engage_conf_t *conf, const engage_compact_opts_t *opts,
                                  volatile sig_atomic_t *stop, engage_compact_stats_t *stats,
                                  char *errstr, size_t errstr_size);

#endif
