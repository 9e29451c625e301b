/*
 * sessionizer.h - event-time gap sessions for one input partition.
 *
 * A session is a run of one user's actions where consecutive actions are at
 * most `gap_ms` apart (inclusive). Events may arrive out of order: an event
 * within gap of one or more open sessions of the same user joins them (and
 * may merge two sessions it bridges), so each user has a small sorted list of
 * open sessions. A session is final, and reported through the close
 * callback, once the caller's watermark is strictly greater than its
 * last action + gap: no event at or above the watermark can then join it.
 *
 * Duplicates: each open session keeps the 64-bit hashes of its event ids; an
 * event whose hash is already in any open session of that user is a
 * duplicate and is not counted.
 *
 * Users are dense uint32 ordinals (see dict.h). The sessionizer reads no
 * clock. It tracks which users changed since the last take_dirty call so the
 * caller can persist only those.
 */
#ifndef ENGAGE_SESSIONIZER_H
#define ENGAGE_SESSIONIZER_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"

typedef struct engage_sessionizer engage_sessionizer_t;

/** Called for each closed session, in increasing (last_ms + gap, user,
 *  start_ms) order. duration = last_ms - start_ms. */
typedef void(engage_session_close_cb)(void *opaque, uint32_t user, int64_t start_ms,
                                      int64_t last_ms, uint32_t actions);

/** Returns a new empty sessionizer with the given gap (> 0), or NULL on OOM.
 *  Free with engage_sessionizer_destroy(). */
engage_sessionizer_t *engage_sessionizer_new(int64_t gap_ms);
void engage_sessionizer_destroy(engage_sessionizer_t *s);

/** Adds one event. Returns 1 if counted, 0 if it is a duplicate (same
 *  event_hash in an open session of this user), -1 on OOM. Marks the user
 *  dirty when counted. Amortised O(log n); no allocation in steady state. */
int engage_sessionizer_add(engage_sessionizer_t *s, uint32_t user, int64_t ts_ms,
                           uint64_t event_hash);

/** Hint only, no effect on results: starts fetching the state that
 *  engage_sessionizer_add(s, user, ..., event_hash) will read (the user's
 *  first open session and the hash slot it probes), so the caller can
 *  overlap the cache misses of several events (call it ~8 events ahead).
 *  Unknown users are ignored. */
void engage_sessionizer_prefetch(const engage_sessionizer_t *s, uint32_t user,
                                 uint64_t event_hash);

/** Closes every open session with last_ms + gap < watermark, calling cb for
 *  each (cb may be NULL). Closed sessions' users become dirty. Returns the
 *  number closed. O(k log n) for k closed; O(1) when none are due. */
size_t engage_sessionizer_close(engage_sessionizer_t *s, int64_t watermark,
                                engage_session_close_cb *cb, void *opaque);

/** Closes every open session regardless of time (end of a bounded run), in
 *  the same order as engage_sessionizer_close. Returns the number closed. */
size_t engage_sessionizer_close_all(engage_sessionizer_t *s, engage_session_close_cb *cb,
                                    void *opaque);

/** Returns the smallest start_ms among open sessions, or INT64_MAX if none.
 *  O(1) or O(log n). */
int64_t engage_sessionizer_min_open_start(const engage_sessionizer_t *s);

/** Returns the number of open sessions. */
size_t engage_sessionizer_open_count(const engage_sessionizer_t *s);

/** Returns the users changed (event added or session closed) since the last
 *  call, each once, in ascending order; *users points to sessionizer-owned
 *  memory valid until the next call. Clears the dirty set. */
size_t engage_sessionizer_take_dirty(engage_sessionizer_t *s, const uint32_t **users);

/** Appends the serialized open sessions of `user` to out (a versioned
 *  binary format, including the event hashes). Returns 1 if the user has
 *  open sessions (bytes appended), 0 if none (nothing appended: the caller
 *  deletes the stored entry), -1 on OOM. */
int engage_sessionizer_serialize_user(const engage_sessionizer_t *s, uint32_t user,
                                      engage_buf_t *out);

/** Restores a user's open sessions from bytes made by serialize_user,
 *  replacing any the user has. Validates lengths and version: CORRUPT with
 *  errstr on bad input (state unchanged), NOMEM on OOM. Does not mark dirty. */
engage_err_t engage_sessionizer_load_user(engage_sessionizer_t *s, uint32_t user,
                                          const void *buf, size_t len, char *errstr,
                                          size_t errstr_size);

#endif
