/*
 * task.h - the per-input-partition processor: validation, watermark and
 * lateness, dictionary, sessionizer, daily bitmaps, finality, persistence.
 *
 * A task knows nothing about Kafka: records come in as engage_input_rec_t,
 * results leave through the engage_emit_t callbacks, and state lives in the
 * task's own RocksDB store (state.h). That keeps the hot path testable
 * without a broker and replayable: output depends only on the input records
 * in partition order, never on batch boundaries or the wall clock.
 *
 * Per record (docs/SEMANTICS.md):
 *   decode -> validate (user id, key, timestamp range) -> late? -> advance
 *   max timestamp -> ordinal -> sessionize (duplicates dropped) -> mark
 *   active on the day -> if the watermark advanced: close due sessions and
 *   emit every day that became final for this partition (a DayPartial).
 *
 * State keys (one store per task): "m" meta (next offset, max timestamp,
 * last day emitted...), "u"+user id -> ordinal and last active day,
 * "o"+ordinal -> open sessions, "b"+day -> day bitmaps and aggregates.
 * engage_task_persist() writes all changes since the last call and the next
 * offset in one batch.
 *
 * Bounded state: whenever the last emitted day E advances, day bitmaps
 * older than E - (30 + retention_margin_days) leave memory and the store,
 * and users whose last counted event is on a day before
 * E - user_retention_days leave the dictionary (their "u" keys are
 * deleted; their ordinals are reused by the next new users). Deletes go
 * through the store like puts, so a changelog mirror sees them too.
 */
#ifndef ENGAGE_TASK_H
#define ENGAGE_TASK_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"
#include "err.h"

/** One consumed record, as the task sees it. Pointers valid during the call. */
typedef struct engage_input_rec {
    const void *key;
    size_t key_len;
    const void *value;
    size_t value_len;
    int32_t partition;
    int64_t offset;
    int64_t kafka_ts; /* record timestamp, or -1 if the record has none */
} engage_input_rec_t;

/** Output callbacks. Each returns 0 on success, non-zero to abort the task's
 *  current call with ENGAGE_ERR_KAFKA (the batch is then not persisted).
 *  Record pointers are valid only during the call. */
typedef struct engage_emit {
    void *opaque;
    int (*session)(void *opaque, const engage_session_rec_t *r);
    int (*partial)(void *opaque, const engage_partial_rec_t *r);
    /** A dead letter: reason is engage_err_dl_reason(), errmsg the detail. */
    int (*dead)(void *opaque, const engage_input_rec_t *rec, const char *reason,
                const char *errmsg);
    /** A late record; watermark is the partition watermark it fell below. */
    int (*late)(void *opaque, const engage_input_rec_t *rec, int64_t watermark);
} engage_emit_t;

/** Semantic settings of a task (copied at creation). */
typedef struct engage_task_conf {
    int64_t gap_ms;
    int64_t grace_ms;
    int64_t max_skew_ms;
    int64_t min_timestamp_ms;
    int64_t max_user_id_bytes;
    int32_t partition_count; /* input partitions, carried in DayPartials */
    /* Bounded state; 0 means the default. engage_task_open() fails with
     * CONFIG unless margin >= 1 and user retention >= 31 + margin. */
    int32_t retention_margin_days; /* state.retention.margin.days, default 5 */
    int32_t user_retention_days;   /* user.retention.days, default 90 */
} engage_task_conf_t;

#define ENGAGE_TASK_DEFAULT_MARGIN_DAYS 5
#define ENGAGE_TASK_DEFAULT_USER_RETENTION_DAYS 90

/** Counters, for logs and tests. */
typedef struct engage_task_stats {
    int64_t records, counted, duplicates, late, dead;
    int64_t sessions_closed, partials_emitted;
    int64_t users_expired; /* dictionary entries removed by user retention */
} engage_task_stats_t;

/** Sizes of the in-memory state (what retention bounds), for logs and tests. */
typedef struct engage_task_memstats {
    uint32_t users;         /* ids in the dictionary */
    uint32_t ordinal_limit; /* every ordinal in use is below this */
    uint32_t free_ordinals; /* unmapped ordinals below ordinal_limit */
    size_t key_bytes;       /* dictionary arena: live keys */
    size_t dead_key_bytes;  /* dictionary arena: removed keys not yet reclaimed */
    int32_t min_day, max_day; /* day records in memory; both INT32_MIN if none */
    size_t open_sessions;
} engage_task_memstats_t;

typedef struct engage_task engage_task_t;

/** Opens the task of `partition` with its store at state_path (created if
 *  missing) and loads its state. dec (shared, not owned) decodes values;
 *  emit is copied. Returns NULL with errstr on failure (including corrupt
 *  state, and retention settings that break the rule in
 *  engage_task_conf_t). Free with engage_task_close(). */
engage_task_t *engage_task_open(int32_t partition, const char *state_path,
                                const engage_task_conf_t *conf, engage_decoder_t *dec,
                                const engage_emit_t *emit, char *errstr,
                                size_t errstr_size);

/** Closes the task, discarding changes not persisted; NULL allowed. */
void engage_task_close(engage_task_t *t);

/** Returns the next offset to consume: the one stored with the state, or -1
 *  when the store is new (consume from the beginning). */
int64_t engage_task_next_offset(const engage_task_t *t);

/** Processes one record (its offset must be >= next offset; smaller ones
 *  are ignored as already applied and return OK). Bad input is a dead letter,
 *  not an error. Returns OK, or KAFKA if an emit callback failed, NOMEM. */
engage_err_t engage_task_process(engage_task_t *t, const engage_input_rec_t *rec,
                                 char *errstr, size_t errstr_size);

/** End of a bounded run's input: closes every open session, emits every
 *  remaining day through the last event day + 29 and then the end marker.
 *  Idempotent (a second call emits nothing). Returns OK or KAFKA. */
engage_err_t engage_task_finish(engage_task_t *t, char *errstr, size_t errstr_size);

/** Idle policy (live runs): raises the partition watermark to wm as if an
 *  event at wm + grace had arrived (no-op if it is not higher), closing due
 *  sessions and emitting the days that become final. A partition without
 *  any data becomes final through the day before wm. Later records below
 *  the raised watermark are late. Returns OK or KAFKA. */
engage_err_t engage_task_advance_watermark(engage_task_t *t, int64_t wm, char *errstr,
                                           size_t errstr_size);

/** Returns 1 once engage_task_finish() has run (persisted with the state). */
int engage_task_finished(const engage_task_t *t);

/** Records that offsets below next_offset were consumed (for records the
 *  consumer skipped, e.g. transaction markers). */
void engage_task_set_next_offset(engage_task_t *t, int64_t next_offset);

/** Writes every state change since the last persist and the next offset in
 *  one atomic batch. Call only after the emitted records are delivered.
 *  Returns OK or STATE with errstr. */
engage_err_t engage_task_persist(engage_task_t *t, char *errstr, size_t errstr_size);

/** Two-step persist for exactly-once: stage() puts every change since the
 *  last persist and the next offset into the store's pending batch (so a
 *  store mirror can copy them to a changelog inside a Kafka transaction);
 *  commit_staged() writes that batch once the transaction committed. After a
 *  failed transaction, close the task and reopen it instead. Both return OK
 *  or STATE/NOMEM with errstr. */
engage_err_t engage_task_stage(engage_task_t *t, char *errstr, size_t errstr_size);
engage_err_t engage_task_commit_staged(engage_task_t *t, char *errstr, size_t errstr_size);

/** Returns the task's store (owned by the task), e.g. to set a mirror. */
struct engage_state *engage_task_store(engage_task_t *t);

/** Returns 1 if there are changes not yet persisted. */
int engage_task_dirty(const engage_task_t *t);

/** Returns the current counters. */
void engage_task_get_stats(const engage_task_t *t, engage_task_stats_t *st);

/** Fills *m with the current sizes of the in-memory state. */
void engage_task_get_memstats(const engage_task_t *t, engage_task_memstats_t *m);

/** Returns the partition watermark (max timestamp - grace), INT64_MIN if no
 *  valid record was seen yet. */
int64_t engage_task_watermark(const engage_task_t *t);

#endif
