/*
 * daystore.h - per-day state of one input partition: a Roaring bitmap of
 * the users active that day, a bitmap of the users with a session starting
 * that day, and the day's session aggregates.
 *
 * DAU is a bitmap's cardinality; WAU/MAU are the cardinality of the union of
 * 7/30 daily bitmaps. Partitions hold disjoint users, so the per-partition
 * numbers add up exactly across partitions.
 *
 * Days are persisted individually in a checked format (magic, version,
 * lengths, an xxh64 checksum; each user set in the smallest of portable
 * Roaring - read back with roaring_bitmap_portable_deserialize_safe - and
 * two compact encodings, validated on load; see daystore.c): under a byte
 * per active user-day for both sets of a day on realistic data, where
 * portable Roaring alone took 2 to 3.8 (docs/BENCHMARKS.md, "Profile of
 * the operator").
 *
 * Not thread-safe, not even for readers: the functions that take a const
 * store may still reorganize its memory (they merge pending additions into
 * the bitmaps first).
 */
#ifndef ENGAGE_DAYSTORE_H
#define ENGAGE_DAYSTORE_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

typedef struct engage_daystore engage_daystore_t;

typedef struct engage_day_stats {
    int64_t sessions;        /* sessions that started this day */
    int64_t session_users;   /* distinct users with such a session */
    int64_t sum_duration_ms; /* over those sessions */
    int64_t sum_actions;     /* over those sessions */
} engage_day_stats_t;

/** Returns a new empty store or NULL on OOM. Free with
 *  engage_daystore_destroy(). */
engage_daystore_t *engage_daystore_new(void);
void engage_daystore_destroy(engage_daystore_t *ds);

/** Marks user active on day (idempotent). Marks the day dirty if the bitmap
 *  changed. Returns OK or NOMEM. */
engage_err_t engage_daystore_add_active(engage_daystore_t *ds, int32_t day, uint32_t user);

/** Records a closed session that started on day. Marks the day dirty.
 *  Returns OK or NOMEM. */
engage_err_t engage_daystore_add_session(engage_daystore_t *ds, int32_t day, uint32_t user,
                                         int64_t duration_ms, uint32_t actions);

/** Returns the number of users active on day (0 for unknown days). */
uint64_t engage_daystore_dau(const engage_daystore_t *ds, int32_t day);

/** Returns the number of distinct users active on any day of
 *  [day - ndays + 1, day] (ndays >= 1). */
uint64_t engage_daystore_window(const engage_daystore_t *ds, int32_t day, int ndays);

/** Fills *st with the day's session aggregates (zeros for unknown days). */
void engage_daystore_stats(const engage_daystore_t *ds, int32_t day, engage_day_stats_t *st);

/** Returns 1 and sets the smallest and largest day held, or 0 if empty. */
int engage_daystore_range(const engage_daystore_t *ds, int32_t *min_day, int32_t *max_day);

/** Returns the days changed since the last call, ascending; *days points to
 *  store-owned memory valid until the next call. Clears the dirty set. */
size_t engage_daystore_take_dirty(engage_daystore_t *ds, const int32_t **days);

/** Appends the serialized state of day to out. Returns OK, NOT_FOUND if the
 *  day is not held, NOMEM. */
engage_err_t engage_daystore_serialize_day(const engage_daystore_t *ds, int32_t day,
                                           engage_buf_t *out);

/** Restores a day from bytes made by serialize_day (replacing it). Checks
 *  magic, version, lengths, checksum and the bitmaps (safe
 *  deserialization). CORRUPT with errstr on bad bytes (store unchanged). */
engage_err_t engage_daystore_load_day(engage_daystore_t *ds, int32_t day, const void *buf,
                                      size_t len, char *errstr, size_t errstr_size);

/** Calls fn(user, opaque) for every user active on day, ascending, until
 *  fn returns false; nothing for a day not held. */
void engage_daystore_iterate_active(const engage_daystore_t *ds, int32_t day,
                                    bool (*fn)(uint32_t user, void *opaque), void *opaque);

/** Frees every day < day from memory (not from disk). Returns days freed. */
size_t engage_daystore_drop_before(engage_daystore_t *ds, int32_t day);

#endif
