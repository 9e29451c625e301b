/*
 * state.h - the RocksDB adapter: one key-value store per task (input
 * partition), with a pending WriteBatch so a batch's state changes and the
 * task's next offset land atomically. RocksDB's char **errptr convention and
 * its allocations stay inside state.c.
 *
 * Writes go through the WAL (not fsync'd per batch): a killed process loses
 * nothing; a power loss can lose the last batches, which are then
 * re-consumed from Kafka (the stored offset moves with the state).
 */
#ifndef ENGAGE_STATE_H
#define ENGAGE_STATE_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct engage_state engage_state_t;

/** Opens (creating if missing, parents included) the store at path.
 *  Returns NULL with errstr on failure. Close with engage_state_close(). */
engage_state_t *engage_state_open(const char *path, char *errstr, size_t errstr_size);

/** Closes the store, discarding any uncommitted batch; NULL allowed. */
void engage_state_close(engage_state_t *st);

/** Reads key. Returns OK with *val malloc'd (caller free()s) and *vlen set,
 *  NOT_FOUND, or STATE with errstr. Does not see the pending batch. */
engage_err_t engage_state_get(engage_state_t *st, const void *key, size_t klen, void **val,
                              size_t *vlen, char *errstr, size_t errstr_size);

/** Iterating callback: return 0 to continue, non-zero to stop. The pointers
 *  are valid only during the call. */
typedef int(engage_state_iter_cb)(void *opaque, const void *key, size_t klen,
                                  const void *val, size_t vlen);

/** Calls cb for every committed key starting with prefix, in key order.
 *  Returns OK, or STATE with errstr. */
engage_err_t engage_state_iterate(engage_state_t *st, const void *prefix, size_t plen,
                                  engage_state_iter_cb *cb, void *opaque, char *errstr,
                                  size_t errstr_size);

/** Adds a put / delete to the pending batch (copied). */
void engage_state_put(engage_state_t *st, const void *key, size_t klen, const void *val,
                      size_t vlen);
void engage_state_delete(engage_state_t *st, const void *key, size_t klen);

/** Mirror callback: called for every put (val non-NULL) and delete (val
 *  NULL) added to the pending batch, e.g. to write the same change to a
 *  changelog topic. Returns 0, or non-zero if the mirror failed (remembered
 *  until engage_state_mirror_failed() is called). Pointers are valid only
 *  during the call. */
typedef int(engage_state_mirror_cb)(void *opaque, const void *key, size_t klen,
                                    const void *val, size_t vlen);

/** Sets (cb non-NULL) or clears the mirror of st. */
void engage_state_set_mirror(engage_state_t *st, engage_state_mirror_cb *cb, void *opaque);

/** Returns 1 if a mirror call failed since the last call, and resets it. */
int engage_state_mirror_failed(engage_state_t *st);

/** Drops the pending batch without writing it. */
void engage_state_discard(engage_state_t *st);

/** Returns the number of operations in the pending batch. */
size_t engage_state_pending(const engage_state_t *st);

/** Writes the pending batch atomically and clears it. Returns OK or STATE. */
engage_err_t engage_state_commit(engage_state_t *st, char *errstr, size_t errstr_size);

/** Returns the approximate on-disk size in bytes (SST + WAL files). */
uint64_t engage_state_disk_size(engage_state_t *st);

/** Removes a store directory (must not be open). Returns OK or IO. */
engage_err_t engage_state_destroy_dir(const char *path, char *errstr, size_t errstr_size);

#endif
