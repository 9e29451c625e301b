/*
 * aggregator.h - combines the DayPartials of every input partition into
 * one DailyMetrics record per day.
 *
 * Partials arrive through a one-partition internal topic, so exactly one
 * member of the consumer group runs the aggregator, wherever the input
 * partitions live. A partial (day d, partition p) also says "p is final
 * through d"; an end marker says "p is final for good". Day d is emitted
 * once every partition is final through d, in day order, from the first day
 * any partition has data to the last event day seen. A partition without a
 * partial for d contributes zeros. Partials are stored per (day, partition)
 * and overwritten, so a partial re-sent after a crash is counted once.
 *
 * Kafka-free like task.h: input via engage_aggregator_add(), output via a
 * callback, state in its own store, persisted with its next offset.
 */
#ifndef ENGAGE_AGGREGATOR_H
#define ENGAGE_AGGREGATOR_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "err.h"

typedef int(engage_daily_cb)(void *opaque, const engage_daily_rec_t *r);

typedef struct engage_aggregator engage_aggregator_t;

/** Opens the aggregator with its store at state_path and loads its state.
 *  cb is called for each final day (return non-zero to fail with KAFKA).
 *  Returns NULL with errstr on failure. Free with engage_aggregator_close(). */
engage_aggregator_t *engage_aggregator_open(const char *state_path, engage_daily_cb *cb,
                                            void *opaque, char *errstr,
                                            size_t errstr_size);
void engage_aggregator_close(engage_aggregator_t *a);

/** Next offset to consume from the partials partition, -1 if new. */
int64_t engage_aggregator_next_offset(const engage_aggregator_t *a);

/** Applies one partial consumed at offset (smaller than next offset:
 *  ignored) and emits every day that became final. Returns OK, KAFKA if cb
 *  failed, CORRUPT if the partial contradicts earlier ones (partition_count
 *  changed), NOMEM. */
engage_err_t engage_aggregator_add(engage_aggregator_t *a, const engage_partial_rec_t *p,
                                   int64_t offset, char *errstr, size_t errstr_size);

/** Marks offsets below next_offset as consumed. */
void engage_aggregator_set_next_offset(engage_aggregator_t *a, int64_t next_offset);

/** Returns 1 when every partition sent its end marker and every day through
 *  the last event day was emitted (a bounded run is complete). */
int engage_aggregator_done(const engage_aggregator_t *a);

/** Returns the last day emitted, or INT32_MIN if none. */
int32_t engage_aggregator_emitted_through(const engage_aggregator_t *a);

/** Persists changes and the next offset atomically. Returns OK or STATE. */
engage_err_t engage_aggregator_persist(engage_aggregator_t *a, char *errstr,
                                       size_t errstr_size);

/** Two-step persist for exactly-once (see engage_task_stage): stage() puts
 *  the changes and next offset into the store's pending batch;
 *  commit_staged() writes it after the Kafka transaction committed. */
engage_err_t engage_aggregator_stage(engage_aggregator_t *a, char *errstr,
                                     size_t errstr_size);
engage_err_t engage_aggregator_commit_staged(engage_aggregator_t *a, char *errstr,
                                             size_t errstr_size);

/** Returns 1 if there are changes not yet persisted. */
int engage_aggregator_dirty(const engage_aggregator_t *a);

/** Returns the aggregator's store (owned by it), e.g. to set a mirror. */
struct engage_state *engage_aggregator_store(engage_aggregator_t *a);

#endif
