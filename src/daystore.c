/*
 * daystore.c - per-day Roaring bitmaps and session aggregates.
 *
 * A partition holds a few dozen days (the 30-day window plus slack), so the
 * days live in a small array sorted by day number. The per-event call,
 * engage_daystore_add_active(), almost always hits the day it hit last
 * time, so that index is cached and the lookup is a compare.
 *
 * Most events are not a user's first of the day (a session has several
 * actions), and for those the Roaring add is pure cost: a search of the
 * container keys, then a binary search inside an array container. So the
 * newest days ("hot" days, at most HOT_MAX) also keep a plain bitset of
 * their users, one bit per ordinal (125 KB per day for a million
 * ordinals), filled from the bitmap when the day turns hot: a repeat costs
 * one load. And a first add costs an append: new users (and the users of
 * closed sessions) wait in a per-day pending list, merged into the bitmap
 * in one sorted pass (flush) before anything reads the day, or when the
 * list is long. Inserting them one at a time into array containers moved
 * half a container with every insert.
 *
 * Serialized day (little-endian):
 *   "EGD1" | version u32 | sessions i64 | sum_duration_ms i64 |
 *   sum_actions i64 | len u32 | active-user section |
 *   len u32 | session-user section | xxh64 of all preceding bytes
 * A section is a set of uint32 ordinals in one of these encodings, told
 * apart by the first byte:
 *   0x3A / 0x3B  a portable Roaring bitmap (its cookie's first byte; the
 *                only encoding of the first releases, still read and written)
 *   0xE1  gaps:  count u32, then count LEB128 varints: the first value, then
 *                each value minus the previous minus 1 (strictly increasing)
 *   0xE2  bits:  base u32, nbits u32, ceil(nbits/8) bytes: bit i (LSB
 *                first) = base + i is in the set; bits 0 and nbits-1 are set
 *   0xE3  ranks (session-user section only): len u32 | section R | len u32 |
 *                section X: the session users are { i-th active user : i in
 *                R } plus X, the ones not active that day (normally none).
 *                A session's user was active on the day it started, so R is
 *                nearly every rank and costs a fraction of a byte per user.
 * The writer picks the smallest encoding for each set (ties: Roaring, gaps,
 * bits), a function of the set alone, so the bytes are deterministic and
 * load + serialize is the identity. With ordinals dense per partition and a
 * day's users a fraction of them, gaps take about a byte per active user
 * and bits 1/(8 x density) bytes, where Roaring's array containers take 2.
 * Older records (Roaring only) read unchanged; binaries that predate the
 * other encodings reject them as malformed rather than misread them.
 *
 * The checksum is verified before any section byte is parsed; Roaring
 * sections are read with roaring_bitmap_portable_deserialize_safe() and
 * must consume exactly their stated length, the others are decoded with
 * bounds checks and must be canonical (strictly increasing values, no
 * trailing bytes, bit ranges that start and end with a member).
 */
#include "daystore.h"
#include "sortu32.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <roaring/roaring.h>
#include <xxhash.h>

#define DAY_MAGIC "EGD1"
#define DAY_VERSION 1u
#define DAY_FIXED (4 + 4 + 3 * 8) /* magic, version, aggregates */

#define ENC_GAPS 0xE1
#define ENC_BITS 0xE2
#define ENC_RANKS 0xE3

#define HOT_MAX 4                       /* days with a seen-bitset */
#define HOT_MAX_WORDS ((size_t)1 << 18) /* ordinals below 2^24 (2 MiB a day) */
#define HOT_MIN_WORDS ((size_t)1024)
#define PEND_MAX (1u << 16) /* pending ordinals that trigger a flush */

/* Ordinals not yet merged into a bitmap. */
typedef struct pend {
    uint32_t *v;
    uint32_t n, cap;
} pend_t;

typedef struct day_rec {
    int32_t day;
    uint8_t dirty;
    roaring_bitmap_t *active;
    roaring_bitmap_t *susers;
    /* hot days: for u < 64 * seen_words, bit u set <=> u is in active or
     * pa; NULL for other days */
    uint64_t *seen;
    size_t seen_words;
    pend_t pa; /* active users to add (distinct; hot days only) */
    pend_t ps; /* session users to add (may repeat) */
    int64_t sessions;
    int64_t sum_duration_ms;
    int64_t sum_actions;
} day_rec_t;

struct engage_daystore {
    day_rec_t *days; /* sorted by day */
    size_t n, cap;
    size_t hint; /* index of the last day looked up */
    size_t nhot; /* records with a seen-bitset */
    int32_t *taken;
    size_t taken_cap;
};

engage_daystore_t *engage_daystore_new(void) { return calloc(1, sizeof(engage_daystore_t)); }

/* Appends u. Returns 0, or -1 on OOM. */
static int pend_push(pend_t *p, uint32_t u) {
    if (p->n == p->cap) {
        uint32_t ncap = p->cap ? p->cap * 2 : 256;
        uint32_t *nv = realloc(p->v, (size_t)ncap * sizeof(*nv));
        if (!nv)
            return -1;
        p->v = nv;
        p->cap = ncap;
    }
    p->v[p->n++] = u;
    return 0;
}

/* Merges p into b: sorted, the values become one bitmap of appends, then
 * one union. */
static void pend_flush(pend_t *p, roaring_bitmap_t *b) {
    if (!p->n)
        return;
    uint32_t *tmp = malloc((size_t)p->n * sizeof(*tmp));
    roaring_bitmap_t *add = NULL;
    if (tmp) {
        engage_sort_u32(p->v, tmp, p->n);
        add = roaring_bitmap_of_ptr(p->n, p->v);
    }
    if (add) {
        roaring_bitmap_or_inplace(b, add);
        roaring_bitmap_free(add);
    } else {
        roaring_bitmap_add_many(b, p->n, p->v); /* no memory for the fast way */
    }
    free(tmp);
    p->n = 0;
}

/* Brings r's bitmaps up to date. Readers call it on const records: this
 * changes the representation of the day, not its content (the bitmaps are
 * the store's; only the record array is const there). */
static void rec_flush(const day_rec_t *cr) {
    day_rec_t *r = (day_rec_t *)cr;
    pend_flush(&r->pa, r->active);
    pend_flush(&r->ps, r->susers);
}

static void rec_cool(engage_daystore_t *ds, day_rec_t *r) {
    if (r->seen) {
        pend_flush(&r->pa, r->active); /* cold days add to the bitmap directly */
        free(r->pa.v);
        r->pa = (pend_t){0};
        free(r->seen);
        r->seen = NULL;
        r->seen_words = 0;
        ds->nhot--;
    }
}

/* Frees r's bitmaps; ds (may be NULL for a record not in a store) keeps
 * count of hot days. */
static void rec_free(engage_daystore_t *ds, day_rec_t *r) {
    if (ds && r->seen)
        ds->nhot--;
    if (r->active)
        roaring_bitmap_free(r->active);
    if (r->susers)
        roaring_bitmap_free(r->susers);
    free(r->seen);
    free(r->pa.v);
    free(r->ps.v);
    r->seen = NULL;
    r->pa.v = r->ps.v = NULL;
}

void engage_daystore_destroy(engage_daystore_t *ds) {
    if (!ds)
        return;
    for (size_t i = 0; i < ds->n; i++)
        rec_free(ds, &ds->days[i]);
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
            rec_free(NULL, &r);
            return NULL;
        }
    }
    ds->hint = i;
    return &ds->days[i];
}

static bool set_seen(uint32_t u, void *seen) {
    ((uint64_t *)seen)[u >> 6] |= (uint64_t)1 << (u & 63);
    return true;
}

/* Makes r's seen-bitset cover word w, making r hot if it is not: taking the
 * bitset of the oldest hot day if HOT_MAX days are hot and that day is
 * older than r, and setting the bits of the users already in r. Returns 0,
 * or -1 if r stays cold (an ordinal too large, an old day, no memory: the
 * caller adds to the bitmap directly). */
static int seen_reserve(engage_daystore_t *ds, day_rec_t *r, size_t w) {
    size_t need = w + 1;
    if (!r->seen && !roaring_bitmap_is_empty(r->active)) {
        size_t top = (size_t)(roaring_bitmap_maximum(r->active) >> 6) + 1;
        if (top > need)
            need = top;
    }
    if (need > HOT_MAX_WORDS)
        return -1;
    if (!r->seen && ds->nhot >= HOT_MAX) {
        day_rec_t *old = NULL;
        for (size_t i = 0; i < ds->n && !old; i++)
            if (ds->days[i].seen)
                old = &ds->days[i]; /* days are sorted: the first is the oldest */
        if (!old || old->day > r->day)
            return -1;
        rec_cool(ds, old);
    }
    size_t nw = r->seen_words ? r->seen_words : HOT_MIN_WORDS;
    while (nw < need)
        nw *= 2;
    uint64_t *ns = realloc(r->seen, nw * sizeof(*ns));
    if (!ns)
        return -1;
    memset(ns + r->seen_words, 0, (nw - r->seen_words) * sizeof(*ns));
    if (!r->seen) {
        ds->nhot++;
        roaring_iterate(r->active, set_seen, ns); /* pa is empty: r was cold */
    }
    r->seen = ns;
    r->seen_words = nw;
    return 0;
}

engage_err_t engage_daystore_add_active(engage_daystore_t *ds, int32_t day, uint32_t user) {
    day_rec_t *r = ds->hint < ds->n ? &ds->days[ds->hint] : NULL;
    if (!r || r->day != day) {
        if (!(r = day_get(ds, day)))
            return ENGAGE_ERR_NOMEM;
    }
    size_t w = user >> 6;
    uint64_t bit = (uint64_t)1 << (user & 63);
    if (w >= r->seen_words && seen_reserve(ds, r, w)) {
        if (roaring_bitmap_add_checked(r->active, user)) /* cold */
            r->dirty = 1;
        return ENGAGE_ERR_OK;
    }
    if (r->seen[w] & bit)
        return ENGAGE_ERR_OK; /* a repeat */
    if (pend_push(&r->pa, user))
        return ENGAGE_ERR_NOMEM;
    r->seen[w] |= bit;
    r->dirty = 1;
    if (r->pa.n >= PEND_MAX)
        pend_flush(&r->pa, r->active);
    return ENGAGE_ERR_OK;
}

engage_err_t engage_daystore_add_session(engage_daystore_t *ds, int32_t day, uint32_t user,
                                         int64_t duration_ms, uint32_t actions) {
    day_rec_t *r = day_get(ds, day);
    if (!r || pend_push(&r->ps, user))
        return ENGAGE_ERR_NOMEM;
    if (r->ps.n >= PEND_MAX)
        pend_flush(&r->ps, r->susers);
    r->sessions++;
    r->sum_duration_ms += duration_ms;
    r->sum_actions += actions;
    r->dirty = 1;
    return ENGAGE_ERR_OK;
}

void engage_daystore_iterate_active(const engage_daystore_t *ds, int32_t day,
                                    bool (*fn)(uint32_t user, void *opaque), void *opaque) {
    const day_rec_t *r = day_find(ds, day);
    if (!r)
        return;
    rec_flush(r);
    roaring_iterate(r->active, fn, opaque);
}

uint64_t engage_daystore_dau(const engage_daystore_t *ds, int32_t day) {
    const day_rec_t *r = day_find(ds, day);
    if (!r)
        return 0;
    rec_flush(r);
    return roaring_bitmap_get_cardinality(r->active);
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
    for (size_t i = lo; i < hi; i++)
        rec_flush(&ds->days[i]);
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
    rec_flush(r);
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

/* ---- set encodings (see the top of the file) ------------------------------ */

typedef struct u32vec {
    uint32_t *v;
    size_t n;
} u32vec_t;

/* The members of b as a sorted array (malloc'd). Returns 0 or -1. */
static int to_array(const roaring_bitmap_t *b, u32vec_t *out) {
    out->n = (size_t)roaring_bitmap_get_cardinality(b);
    out->v = malloc((out->n ? out->n : 1) * sizeof(*out->v));
    if (!out->v)
        return -1;
    roaring_bitmap_to_uint32_array(b, out->v);
    return 0;
}

static size_t varint_len(uint32_t x) {
    size_t n = 1;
    while (x >= 0x80) {
        x >>= 7;
        n++;
    }
    return n;
}

static size_t gaps_size(const uint32_t *v, size_t n) {
    size_t sz = 1 + 4;
    for (size_t i = 0; i < n; i++)
        sz += varint_len(i ? v[i] - v[i - 1] - 1 : v[0]);
    return sz;
}

static size_t bits_size(const uint32_t *v, size_t n) {
    if (!n)
        return SIZE_MAX; /* an empty set is never encoded as bits */
    return 1 + 4 + 4 + ((size_t)(v[n - 1] - v[0]) + 8) / 8;
}

/* Returns the size of the smallest encoding of the set v[0..n), also held
 * as the Roaring bitmap b (run-optimized), and sets *enc to it (0 for
 * Roaring). */
static size_t set_size(const roaring_bitmap_t *b, const uint32_t *v, size_t n, int *enc) {
    size_t r = roaring_bitmap_portable_size_in_bytes(b), g = gaps_size(v, n),
           t = bits_size(v, n);
    *enc = 0;
    if (g < r && g <= t) {
        *enc = ENC_GAPS;
        return g;
    }
    if (t < r && t < g) {
        *enc = ENC_BITS;
        return t;
    }
    return r;
}

/* Appends the set in encoding enc; room was reserved for its set_size(). */
static void put_set(engage_buf_t *out, const roaring_bitmap_t *b, const uint32_t *v, size_t n,
                    int enc) {
    unsigned char *p = (unsigned char *)out->p + out->len;
    if (enc == ENC_GAPS) {
        *p++ = ENC_GAPS;
        for (int k = 0; k < 4; k++)
            *p++ = (unsigned char)(n >> (8 * k));
        for (size_t i = 0; i < n; i++) {
            uint32_t x = i ? v[i] - v[i - 1] - 1 : v[0];
            while (x >= 0x80) {
                *p++ = (unsigned char)(x | 0x80);
                x >>= 7;
            }
            *p++ = (unsigned char)x;
        }
    } else if (enc == ENC_BITS) {
        uint32_t base = v[0], nbits = v[n - 1] - v[0] + 1;
        size_t nbytes = ((size_t)nbits + 7) / 8;
        *p++ = ENC_BITS;
        for (int k = 0; k < 4; k++)
            *p++ = (unsigned char)(base >> (8 * k));
        for (int k = 0; k < 4; k++)
            *p++ = (unsigned char)(nbits >> (8 * k));
        memset(p, 0, nbytes);
        for (size_t i = 0; i < n; i++) {
            uint32_t o = v[i] - base;
            p[o >> 3] |= (unsigned char)(1u << (o & 7));
        }
        p += nbytes;
    } else {
        p += roaring_bitmap_portable_serialize(b, (char *)p);
    }
    out->len = (size_t)((char *)p - out->p);
}

/* Appends "len u32 | section" for one set. */
static int put_section(engage_buf_t *out, const roaring_bitmap_t *b, const uint32_t *v,
                       size_t n) {
    int enc;
    size_t sz = set_size(b, v, n, &enc);
    if (sz > UINT32_MAX || engage_buf_reserve(out, 4 + sz))
        return -1;
    engage_buf_put_u32(out, (uint32_t)sz);
    put_set(out, b, v, n, enc);
    return 0;
}

/* The session-user section: ranks of the session users among the active
 * users (R) plus the session users not active (X), or the set itself if
 * that is not larger. */
static int put_susers(engage_buf_t *out, const roaring_bitmap_t *sb, const u32vec_t *act,
                      const u32vec_t *su) {
    u32vec_t rk = {malloc((su->n ? su->n : 1) * sizeof(uint32_t)), 0};
    u32vec_t ex = {malloc((su->n ? su->n : 1) * sizeof(uint32_t)), 0};
    roaring_bitmap_t *rb = NULL, *xb = NULL;
    int rc = -1;
    if (!rk.v || !ex.v)
        goto out;
    for (size_t i = 0, a = 0; i < su->n; i++) {
        while (a < act->n && act->v[a] < su->v[i])
            a++;
        if (a < act->n && act->v[a] == su->v[i])
            rk.v[rk.n++] = (uint32_t)a;
        else
            ex.v[ex.n++] = su->v[i];
    }
    rb = roaring_bitmap_of_ptr(rk.n, rk.v);
    xb = roaring_bitmap_of_ptr(ex.n, ex.v);
    if (!rb || !xb)
        goto out;
    roaring_bitmap_run_optimize(rb);
    roaring_bitmap_run_optimize(xb);
    int er, ex_enc;
    size_t lr = set_size(rb, rk.v, rk.n, &er), lx = set_size(xb, ex.v, ex.n, &ex_enc);
    size_t sz = 1 + 4 + lr + 4 + lx;
    int ed;
    if (set_size(sb, su->v, su->n, &ed) <= sz) {
        rc = put_section(out, sb, su->v, su->n);
        goto out;
    }
    if (sz > UINT32_MAX || engage_buf_reserve(out, 4 + sz))
        goto out;
    engage_buf_put_u32(out, (uint32_t)sz);
    out->p[out->len++] = (char)ENC_RANKS;
    engage_buf_put_u32(out, (uint32_t)lr);
    put_set(out, rb, rk.v, rk.n, er);
    engage_buf_put_u32(out, (uint32_t)lx);
    put_set(out, xb, ex.v, ex.n, ex_enc);
    rc = 0;
out:
    if (rb)
        roaring_bitmap_free(rb);
    if (xb)
        roaring_bitmap_free(xb);
    free(rk.v);
    free(ex.v);
    return rc;
}

engage_err_t engage_daystore_serialize_day(const engage_daystore_t *ds, int32_t day,
                                           engage_buf_t *out) {
    const day_rec_t *r = day_find(ds, day);
    if (!r)
        return ENGAGE_ERR_NOT_FOUND;
    rec_flush(r);
    /* Run containers make dense ordinal ranges far smaller. This changes
     * the representation, not the content, of the bitmaps (which the store
     * owns; only the record array is const here). */
    roaring_bitmap_run_optimize(r->active);
    roaring_bitmap_run_optimize(r->susers);
    u32vec_t act = {0}, su = {0};
    engage_err_t err = ENGAGE_ERR_NOMEM;
    size_t start = out->len;
    if (to_array(r->active, &act) || to_array(r->susers, &su) ||
        engage_buf_reserve(out, DAY_FIXED))
        goto out;
    engage_buf_append(out, DAY_MAGIC, 4);
    engage_buf_put_u32(out, DAY_VERSION);
    engage_buf_put_u64(out, (uint64_t)r->sessions);
    engage_buf_put_u64(out, (uint64_t)r->sum_duration_ms);
    engage_buf_put_u64(out, (uint64_t)r->sum_actions);
    if (put_section(out, r->active, act.v, act.n) || put_susers(out, r->susers, &act, &su) ||
        engage_buf_put_u64(out, XXH64(out->p + start, out->len - start, 0))) {
        out->len = start;
        goto out;
    }
    err = ENGAGE_ERR_OK;
out:
    free(act.v);
    free(su.v);
    return err;
}

/* Decodes a gaps or bits section into a new bitmap; NULL if malformed. */
static roaring_bitmap_t *read_packed(const unsigned char *p, size_t len) {
    uint32_t *v = NULL;
    size_t n = 0;
    roaring_bitmap_t *b = NULL;
    if (len >= 5 && p[0] == ENC_GAPS) {
        size_t cnt = engage_get_u32(p + 1), off = 5;
        if (cnt > len - 5 || !(v = malloc((cnt ? cnt : 1) * sizeof(*v))))
            return NULL; /* each value takes a byte at least */
        uint64_t next = 0; /* smallest value allowed next */
        for (; n < cnt; n++) {
            uint64_t x = 0;
            int shift = 0;
            for (;;) {
                if (off >= len || shift > 28)
                    goto bad;
                unsigned char c = p[off++];
                x |= (uint64_t)(c & 0x7f) << shift;
                shift += 7;
                if (!(c & 0x80))
                    break;
            }
            if (shift > 7 && !(p[off - 1])) /* canonical: no zero top group */
                goto bad;
            x += next;
            if (x > UINT32_MAX)
                goto bad;
            v[n] = (uint32_t)x;
            next = x + 1;
        }
        if (off != len)
            goto bad;
    } else if (len >= 9 && p[0] == ENC_BITS) {
        uint32_t base = engage_get_u32(p + 1), nbits = engage_get_u32(p + 5);
        size_t nbytes = ((size_t)nbits + 7) / 8;
        if (nbits == 0 || (uint64_t)base + nbits - 1 > UINT32_MAX || len - 9 != nbytes)
            goto bad;
        const unsigned char *bits = p + 9;
        if (!(bits[0] & 1) || !(bits[(nbits - 1) >> 3] & (1u << ((nbits - 1) & 7))) ||
            (nbits & 7 && bits[nbytes - 1] >> (nbits & 7)))
            goto bad;
        size_t cnt = 0;
        for (size_t i = 0; i < nbytes; i++)
            cnt += (size_t)__builtin_popcount(bits[i]);
        if (!(v = malloc(cnt * sizeof(*v))))
            return NULL;
        for (size_t i = 0; i < nbytes; i++)
            for (unsigned c = bits[i]; c; c &= c - 1)
                v[n++] = base + (uint32_t)(i * 8) + (uint32_t)__builtin_ctz(c);
    } else {
        return NULL;
    }
    b = roaring_bitmap_of_ptr(n, v);
bad:
    free(v);
    return b;
}

/* Reads one section of length len at p: any encoding but ranks. NULL if
 * malformed. */
static roaring_bitmap_t *read_set(const char *p, size_t len) {
    if (len == 0)
        return NULL;
    unsigned char tag = (unsigned char)p[0];
    if (tag == ENC_GAPS || tag == ENC_BITS)
        return read_packed((const unsigned char *)p, len);
    /* Roaring: it must fill the section exactly. */
    if (roaring_bitmap_portable_deserialize_size(p, len) != len)
        return NULL;
    return roaring_bitmap_portable_deserialize_safe(p, len);
}

/* Reads "len u32 | section" at *off; ranks are resolved against active
 * (NULL for the active section itself, where ranks are not allowed).
 * NULL if malformed. */
static roaring_bitmap_t *read_section(const char *p, size_t end, size_t *off,
                                      const roaring_bitmap_t *active) {
    if (end - *off < 4)
        return NULL;
    size_t bl = engage_get_u32(p + *off);
    *off += 4;
    if (bl > end - *off)
        return NULL;
    const char *q = p + *off;
    *off += bl;
    if (!active || bl == 0 || (unsigned char)q[0] != ENC_RANKS)
        return read_set(q, bl);
    /* ranks | extras */
    size_t o = 1, qe = bl;
    roaring_bitmap_t *rk = NULL, *ex = NULL, *out = NULL;
    uint32_t *av = NULL;
    if (qe - o < 4)
        return NULL;
    size_t lr = engage_get_u32(q + o);
    o += 4;
    if (lr > qe - o || !(rk = read_set(q + o, lr)))
        return NULL;
    o += lr;
    if (qe - o < 4)
        goto done;
    size_t lx = engage_get_u32(q + o);
    o += 4;
    if (lx != qe - o || !(ex = read_set(q + o, lx)))
        goto done;
    uint64_t na = roaring_bitmap_get_cardinality(active);
    if (roaring_bitmap_intersect(ex, active))
        goto done; /* not canonical: an extra that is active */
    if (!(av = malloc((na ? na : 1) * sizeof(*av))))
        goto done;
    roaring_bitmap_to_uint32_array(active, av);
    out = ex; /* the extras, plus the ranked active users */
    ex = NULL;
    roaring_uint32_iterator_t it;
    uint32_t buf[256];
    roaring_init_iterator(rk, &it);
    for (uint32_t got; (got = roaring_read_uint32_iterator(&it, buf, 256)) > 0;) {
        for (uint32_t i = 0; i < got; i++) {
            /* each rank is checked: a forged Roaring section need not be
             * sorted, so its maximum proves nothing */
            if (buf[i] >= na) {
                roaring_bitmap_free(out);
                out = NULL;
                goto done;
            }
            buf[i] = av[buf[i]];
        }
        roaring_bitmap_add_many(out, got, buf);
    }
done:
    if (rk)
        roaring_bitmap_free(rk);
    if (ex)
        roaring_bitmap_free(ex);
    free(av);
    return out;
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
    r.active = read_section(p, end, &off, NULL);
    r.susers = r.active ? read_section(p, end, &off, r.active) : NULL;
    if (!r.active || !r.susers || off != end) {
        rec_free(NULL, &r);
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "day %d: malformed bitmap section", day);
    }
    if (r.sessions < 0 || r.sum_duration_ms < 0 || r.sum_actions < 0 ||
        roaring_bitmap_get_cardinality(r.susers) > (uint64_t)r.sessions) {
        rec_free(NULL, &r);
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "day %d: inconsistent aggregates", day);
    }
    int found;
    size_t i = day_index(ds, day, &found);
    if (found) {
        rec_free(ds, &ds->days[i]);
        ds->days[i] = r;
    } else if (day_insert_at(ds, i, &r)) {
        rec_free(NULL, &r);
        return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
    }
    return ENGAGE_ERR_OK;
}

size_t engage_daystore_drop_before(engage_daystore_t *ds, int32_t day) {
    size_t k = 0;
    while (k < ds->n && ds->days[k].day < day)
        rec_free(ds, &ds->days[k++]);
    if (k) {
        memmove(ds->days, ds->days + k, (ds->n - k) * sizeof(*ds->days));
        ds->n -= k;
        ds->hint = 0;
    }
    return k;
}
