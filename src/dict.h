/*
 * dict.h - user id -> dense uint32 ordinal, for one input partition.
 *
 * CRoaring 0.2.66 offers 32-bit bitmaps only, so every user id gets the next
 * ordinal (0, 1, 2...) the first time it is seen; the reverse map gives the
 * id back for output records. Keys are copied into an arena owned by the
 * dictionary (no per-lookup allocation).
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

/** Looks id up; if absent, assigns the next ordinal (engage_dict_count()
 *  before the call) and sets *is_new = 1, else *is_new = 0. Returns 0 and
 *  sets *ord, or -1 on OOM or when 2^32-1 ids are exhausted. */
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
 *  in any order; count becomes max(ord)+1. Returns OK, CORRUPT if the id or
 *  ordinal is already mapped differently, NOMEM. */
engage_err_t engage_dict_insert(engage_dict_t *d, const char *id, size_t len, uint32_t ord);

/** Returns the id for ord (not NUL-terminated, length in *len), valid for
 *  the dictionary's lifetime, or NULL if ord is unmapped. */
const char *engage_dict_name(const engage_dict_t *d, uint32_t ord, size_t *len);

/** Returns the number of ordinals assigned (the next ordinal). */
uint32_t engage_dict_count(const engage_dict_t *d);

#endif
