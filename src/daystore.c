/*
 * daystore.c - per-day Roaring bitmaps and session aggregates.
 *
 * A partition holds a few dozen days (the 30-day window plus slack), so the
 * days live in a small array sorted by day number. The per-event call,
 * engage_daystore_add_active(), almost always hits the day it hit last
 * time, so that index is cached and the lookup is a compare.
 *
 * Serialized day (little-endian):
 *   "EGD1" | version u32 | sessions i64 | sum_duration_ms i64 |
 *   sum_actions i64 | len u32 | active bitmap (portable) |
 *   len u32 | session-user bitmap (portable) | xxh64 of all preceding bytes
 * The checksum is verified before any bitmap byte is parsed; the bitmaps
 * are then read with roaring_bitmap_portable_deserialize_safe() and must
 * consume exactly their stated length.
 */
#include "daystore.h"

#include <stdlib.h>
#include <string.h>

#include <roaring/roaring.h>
#include <xxhash.h>

#define DAY_MAGIC "EGD1"
#define DAY_VERSION 1u
#define DAY_FIXED (4 + 4 + 3 * 8) /* magic, version, aggregates */

typedef struct day_rec {
    int32_t day;
    uint8_t dirty;
    roaring_bitmap_t *active;
    roaring_bitmap_t *susers;
    int64_t sessions;
    int64_t sum_duration_ms;
    int64_t sum_actions;
} day_rec_t;

struct engage_daystore {
    day_rec_t *days; /* sorted by day */
    size_t n, cap;
    size_t hint; /* index of the last day looked up */
    int32_t *taken;
    size_t taken_cap;
};

engage_daystore_t *engage_daystore_new(void) { return calloc(1, sizeof(engage_daystore_t)); }

static void rec_free(day_rec_t *r) {
    if (r->active)
        roaring_bitmap_free(r->active);
    if (r->susers)
        roaring_bitmap_free(r->susers);
}

void engage_daystore_destroy(engage_daystore_t *ds) {
    if (!ds)
        return;
    for (size_t i = 0; i < ds->n; i++)
        rec_free(&ds->days[i]);
    free(ds->days);
    free(ds->taken);
    free(ds);
}

/* Returns the index of day, or the insertion point with *found = 0. */
static size_t day_index(const engage_daystore_t *ds, int32_t day, int *found) {
    size_t h = ds->hint;
    if (h < ds->n && ds->days[h].day == day) {
        *found = 1;
        return h;
    }
    size_t lo = 0, hi = ds->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ds->days[mid].day < day)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = lo < ds->n && ds->days[lo].day == day;
    return lo;
}

static const day_rec_t *day_find(const engage_daystore_t *ds, int32_t day) {
    int found;
    size_t i = day_index(ds, day, &found);
    return found ? &ds->days[i] : NULL;
}

/* Inserts rec (taking its bitmaps) at index i. Returns 0 or -1 on OOM. */
static int day_insert_at(engage_daystore_t *ds, size_t i, const day_rec_t *rec) {
    if (ds->n == ds->cap) {
        size_t ncap = ds->cap ? ds->cap * 2 : 64;
        day_rec_t *nd = realloc(ds->days, ncap * sizeof(*nd));
        if (!nd)
            return -1;
        ds->days = nd;
        ds->cap = ncap;
    }
    memmove(&ds->days[i + 1], &ds->days[i], (ds->n - i) * sizeof(*ds->days));
    ds->days[i] = *rec;
    ds->n++;
    return 0;
}

/* Returns the record for day, creating an empty one; NULL on OOM. */
static day_rec_t *day_get(engage_daystore_t *ds, int32_t day) {
    int found;
    size_t i = day_index(ds, day, &found);
    if (!found) {
        day_rec_t r = {.day = day};
        r.active = roaring_bitmap_create();
        r.susers = roaring_bitmap_create();
        if (!r.active || !r.susers || day_insert_at(ds, i, &r)) {
            rec_free(&r);
            return NULL;
        }
    }
    ds->hint = i;
    return &ds->days[i];
}

engage_err_t engage_daystore_add_active(engage_daystore_t *ds, int32_t day, uint32_t user) {
    day_rec_t *r = day_get(ds, day);
    if (!r)
        return ENGAGE_ERR_NOMEM;
    if (roaring_bitmap_add_checked(r->active, user))
        r->dirty = 1;
    return ENGAGE_ERR_OK;
}

engage_err_t engage_daystore_add_session(engage_daystore_t *ds, int32_t day, uint32_t user,
                                         int64_t duration_ms, uint32_t actions) {
    day_rec_t *r = day_get(ds, day);
    if (!r)
        return ENGAGE_ERR_NOMEM;
    roaring_bitmap_add(r->susers, user);
    r->sessions++;
    r->sum_duration_ms += duration_ms;
    r->sum_actions += actions;
    r->dirty = 1;
    return ENGAGE_ERR_OK;
}

uint64_t engage_daystore_dau(const engage_daystore_t *ds, int32_t day) {
    const day_rec_t *r = day_find(ds, day);
    return r ? roaring_bitmap_get_cardinality(r->active) : 0;
}

uint64_t engage_daystore_window(const engage_daystore_t *ds, int32_t day, int ndays) {
    if (ndays < 1)
        return 0;
    int64_t lo_day = (int64_t)day - ndays + 1;
    int found;
    size_t lo = lo_day < INT32_MIN ? 0 : day_index(ds, (int32_t)lo_day, &found);
    size_t hi = lo;
    while (hi < ds->n && ds->days[hi].day <= day)
        hi++;
    size_t k = hi - lo;
    if (k == 0)
        return 0;
    if (k == 1)
        return roaring_bitmap_get_cardinality(ds->days[lo].active);
    if (k == 2)
        return roaring_bitmap_or_cardinality(ds->days[lo].active, ds->days[lo + 1].active);
    const roaring_bitmap_t *stackv[64];
    const roaring_bitmap_t **v = k <= 64 ? stackv : malloc(k * sizeof(*v));
    if (!v)
        return 0;
    for (size_t i = 0; i < k; i++)
        v[i] = ds->days[lo + i].active;
    roaring_bitmap_t *u = roaring_bitmap_or_many(k, v);
    uint64_t card = 0;
    if (u) {
        card = roaring_bitmap_get_cardinality(u);
        roaring_bitmap_free(u);
    }
    if (v != stackv)
        free(v);
    return card;
}

void engage_daystore_stats(const engage_daystore_t *ds, int32_t day, engage_day_stats_t *st) {
    memset(st, 0, sizeof(*st));
    const day_rec_t *r = day_find(ds, day);
    if (!r)
        return;
    st->sessions = r->sessions;
    st->session_users = (int64_t)roaring_bitmap_get_cardinality(r->susers);
    st->sum_duration_ms = r->sum_duration_ms;
    st->sum_actions = r->sum_actions;
}

int engage_daystore_range(const engage_daystore_t *ds, int32_t *min_day, int32_t *max_day) {
    if (!ds->n)
        return 0;
    *min_day = ds->days[0].day;
    *max_day = ds->days[ds->n - 1].day;
    return 1;
}

size_t engage_daystore_take_dirty(engage_daystore_t *ds, const int32_t **days) {
    size_t k = 0;
    for (size_t i = 0; i < ds->n; i++)
        k += ds->days[i].dirty;
    if (k > ds->taken_cap) {
        int32_t *t = realloc(ds->taken, k * sizeof(*t));
        if (!t) {
            /* Keep the days dirty: a later call will report them. */
            *days = NULL;
            return 0;
        }
        ds->taken = t;
        ds->taken_cap = k;
    }
    k = 0;
    for (size_t i = 0; i < ds->n; i++) {
        if (ds->days[i].dirty) {
            ds->taken[k++] = ds->days[i].day;
            ds->days[i].dirty = 0;
        }
    }
    *days = ds->taken;
    return k;
}

engage_err_t engage_daystore_serialize_day(const engage_daystore_t *ds, int32_t day,
                                           engage_buf_t *out) {
    const day_rec_t *r = day_find(ds, day);
    if (!r)
        return ENGAGE_ERR_NOT_FOUND;
    /* Run containers make dense ordinal ranges far smaller on disk. This
     * changes the representation, not the content, of the bitmaps (which
     * the store owns; only the record array is const here). */
    roaring_bitmap_run_optimize(r->active);
    roaring_bitmap_run_optimize(r->susers);
    size_t la = roaring_bitmap_portable_size_in_bytes(r->active);
    size_t lu = roaring_bitmap_portable_size_in_bytes(r->susers);
    if (la > UINT32_MAX || lu > UINT32_MAX)
        return ENGAGE_ERR_NOMEM;
    size_t start = out->len;
    if (engage_buf_reserve(out, DAY_FIXED + 4 + la + 4 + lu + 8))
        return ENGAGE_ERR_NOMEM;
    engage_buf_append(out, DAY_MAGIC, 4);
    engage_buf_put_u32(out, DAY_VERSION);
    engage_buf_put_u64(out, (uint64_t)r->sessions);
    engage_buf_put_u64(out, (uint64_t)r->sum_duration_ms);
    engage_buf_put_u64(out, (uint64_t)r->sum_actions);
    engage_buf_put_u32(out, (uint32_t)la);
    out->len += roaring_bitmap_portable_serialize(r->active, out->p + out->len);
    engage_buf_put_u32(out, (uint32_t)lu);
    out->len += roaring_bitmap_portable_serialize(r->susers, out->p + out->len);
    engage_buf_put_u64(out, XXH64(out->p + start, out->len - start, 0));
    return ENGAGE_ERR_OK;
}

/* Reads one length-prefixed bitmap at *off; NULL if malformed. */
static roaring_bitmap_t *read_bitmap(const char *p, size_t end, size_t *off) {
    if (end - *off < 4)
        return NULL;
    size_t bl = engage_get_u32(p + *off);
    *off += 4;
    if (bl > end - *off)
        return NULL;
    /* The bitmap must fill its stated length exactly. */
    if (roaring_bitmap_portable_deserialize_size(p + *off, bl) != bl)
        return NULL;
    roaring_bitmap_t *b = roaring_bitmap_portable_deserialize_safe(p + *off, bl);
    *off += bl;
    return b;
}

engage_err_t engage_daystore_load_day(engage_daystore_t *ds, int32_t day, const void *buf,
                                      size_t len, char *errstr, size_t errstr_size) {
    const char *p = buf;
    if (!buf || len < DAY_FIXED + 4 + 4 + 8)
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "day %d: %zu bytes, too short", day, len);
    if (memcmp(p, DAY_MAGIC, 4) != 0)
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size, "day %d: bad magic",
                             day);
    uint32_t ver = engage_get_u32(p + 4);
    if (ver != DAY_VERSION)
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "day %d: unsupported version %u", day, ver);
    size_t end = len - 8;
    if (XXH64(p, end, 0) != engage_get_u64(p + end))
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "day %d: checksum mismatch", day);
    day_rec_t r = {.day = day};
    r.sessions = (int64_t)engage_get_u64(p + 8);
    r.sum_duration_ms = (int64_t)engage_get_u64(p + 16);
    r.sum_actions = (int64_t)engage_get_u64(p + 24);
    size_t off = DAY_FIXED;
    r.active = read_bitmap(p, end, &off);
    r.susers = r.active ? read_bitmap(p, end, &off) : NULL;
    if (!r.active || !r.susers || off != end) {
        rec_free(&r);
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "day %d: malformed bitmap section", day);
    }
    if (r.sessions < 0 || r.sum_duration_ms < 0 || r.sum_actions < 0 ||
        roaring_bitmap_get_cardinality(r.susers) > (uint64_t)r.sessions) {
        rec_free(&r);
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "day %d: inconsistent aggregates", day);
    }
    int found;
    size_t i = day_index(ds, day, &found);
    if (found) {
        rec_free(&ds->days[i]);
        ds->days[i] = r;
    } else if (day_insert_at(ds, i, &r)) {
        rec_free(&r);
        return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    return ENGAGE_ERR_OK;
}

size_t engage_daystore_drop_before(engage_daystore_t *ds, int32_t day) {
    size_t k = 0;
    while (k < ds->n && ds->days[k].day < day)
        rec_free(&ds->days[k++]);
    if (k) {
        memmove(ds->days, ds->days + k, (ds->n - k) * sizeof(*ds->days));
        ds->n -= k;
        ds->hint = 0;
    }
    return k;
}
