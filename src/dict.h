/*
 * dict.h - user id -> dense uint32 ordinal, for one input partition.
 *
 * CRoaring 0.2.66 offers 32-bit bitmaps only, so every user id gets an
 * ordinal the first time it is seen: the smallest ordinal not mapped to
 * another id (0, 1, 2... while nothing has been removed). The reverse map
 * gives the id back for output records. Ids can be removed (user
 * retention); their ordinals are then reused, smallest first, so ordinals
 * stay dense: every ordinal in use is below the largest number of ids
 * mapped at one time. Which ordinal a new id gets depends only on the set
 * of mapped ordinals, never on the order of earlier calls, so a dictionary
 * restored from state hands out the same ordinals as the one that was saved.
 *
 * Keys are copied into an arena owned by the dictionary (no per-lookup
 * allocation); the arena is rebuilt when removed keys take more than half of
 * it, so key memory stays proportional to the ids mapped.
 */
#ifndef ENGAGE_DICT_H
#define ENGAGE_DICT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

typedef struct engage_dict engage_dict_t;

/** Returns a new empty dictionary or NULL on OOM. Free with
 *  engage_dict_destroy(). */
engage_dict_t *engage_dict_new(void);
void engage_dict_destroy(engage_dict_t *d);

/** Looks id up; if absent, maps it to the smallest unmapped ordinal (a
 *  freed one if any, else engage_dict_count() before the call) and sets
 *  *is_new = 1, else *is_new = 0. Returns 0 and sets *ord, or -1 on OOM or
 *  when 2^32-1 ids are mapped. */
int engage_dict_get_or_add(engage_dict_t *d, const char *id, size_t len, uint32_t *ord,
                           int *is_new);

/** Hint only, no effect on results: starts fetching the table slot that
 *  a lookup of id will read, so the caller can overlap the cache misses of
 *  several events (call it ~16 events ahead of engage_dict_get_or_add()).
 *  Costs one hash of id. */
void engage_dict_prefetch(const engage_dict_t *d, const char *id, size_t len);

/** Returns 1 and sets *ord if id is present, else 0. */
int engage_dict_lookup(const engage_dict_t *d, const char *id, size_t len, uint32_t *ord);

/** Inserts a known mapping while restoring from state. Ordinals may arrive
 *  in any order; unmapped ordinals below the largest one become free (the
 *  next engage_dict_get_or_add() calls take them, smallest first). Returns
 *  OK, CORRUPT if the id or ordinal is already mapped differently, NOMEM. */
engage_err_t engage_dict_insert(engage_dict_t *d, const char *id, size_t len, uint32_t ord);

/** Removes the id mapped to ord; ord becomes free for reuse. May rebuild the
 *  key arena (invalidating every pointer from engage_dict_name()). Returns
 *  OK, or NOT_FOUND if ord is not mapped (nothing changes). */
engage_err_t engage_dict_remove(engage_dict_t *d, uint32_t ord);

/** Returns the id for ord (not NUL-terminated, length in *len), or NULL if
 *  ord is unmapped. The pointer is owned by the dictionary and valid until
 *  the next call that adds or removes an id (get_or_add, insert, remove). */
const char *engage_dict_name(const engage_dict_t *d, uint32_t ord, size_t *len);

/** Returns one more than the largest mapped ordinal (0 when empty): every
 *  ordinal in use is below it. Without removals, the number of ordinals
 *  assigned. */
uint32_t engage_dict_count(const engage_dict_t *d);

/** Returns the number of ids mapped. */
uint32_t engage_dict_size(const engage_dict_t *d);

/** Returns the number of free ordinals below engage_dict_count(). */
uint32_t engage_dict_free_count(const engage_dict_t *d);

/** Sets *live to the arena bytes of mapped keys and *dead to the bytes of
 *  removed keys not yet reclaimed (both include a 4-byte length per key). */
void engage_dict_key_bytes(const engage_dict_t *d, size_t *live, size_t *dead);

#endif
