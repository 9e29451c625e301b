/*
 * sessionizer.c - event-time gap sessions with out-of-order events.
 *
 * The per-event cost is dominated by cache misses on the state of users
 * last seen thousands of events ago, so the layout keeps the chain of
 * dependent loads in engage_sessionizer_add() to two:
 *  1. uhead[user]: a tagged reference to the user's first open session -
 *     the block address with the block's size class in the low 5 bits;
 *  2. the session block: a header {start, last, actions, next...} followed
 *     by an open-addressing set of the session's event hashes (power-of-two
 *     size, load <= 1/2; 0 marks an empty slot, a real hash of 0 is a flag).
 *     Since the reference carries the size class, the probed slot is known
 *     before the block arrives, so header and slot are fetched in parallel.
 * Blocks of small size classes are recycled through per-class free lists,
 * so steady state allocates nothing. A user's open sessions form a list
 * (linked by tagged references) sorted by start. They never come within gap
 * of each other (an event that would bridge two merges them), so the list
 * is short - almost always one element.
 *
 * Closing. Every open session also has a dense id (sid) and an entry
 * sref[sid] = {block, generation}. A 4-ary min-heap holds close entries
 * (sid, generation) keyed by (last + gap, user, start); a second one holds
 * start entries for engage_sessionizer_min_open_start(). Both are lazy.
 * Extending a session (the common case: an event at its end) only raises
 * its key, so the heap is not touched: an entry's key may be lower than the
 * session's real key, never higher. When such an entry reaches the top and
 * is due, it is re-pushed with the real key. The top entry whose key equals
 * its session's real key is then the true minimum, which keeps the close
 * order exact. Only a lowered key (an out-of-order event moving start
 * backwards) pushes new entries; the generation is bumped so older entries
 * are skipped when popped. Closing and merging bump the generation too. The
 * start heap is cleaned of stale entries at its top after every change, so
 * reading the minimum is O(1) and needs no mutation.
 *
 * The close callback must not call back into the sessionizer.
 */
#include "sessionizer.h"

#include <stdlib.h>
#include <string.h>

#define NIL UINT32_MAX
#define SET_MIN_SLOTS 8u
#define SET_MAX_CLS 28 /* 8 << 28 = 2^31 slots */
#define BLK_ALIGN 32u  /* frees the low 5 bits of a block address */
#define CLS_MASK ((uintptr_t)(BLK_ALIGN - 1))
/* Blocks up to this size class (8 << 5 = 256 slots, 2 KiB) are recycled;
 * larger ones (a rare very long session) go back to malloc. */
#define KEEP_CLS 5
#define HEAP_D 4

#define SER_MAGIC0 'E'
#define SER_MAGIC1 'S'
#define SER_MAGIC2 'N'
#define SER_VERSION 1
#define SER_HDR 8   /* magic[3] version[1] nsess u32 */
#define SER_SESS 24 /* start i64, last i64, actions u32, nhashes u32 */

/* A tagged block reference: address | size class; 0 = none. */
typedef uintptr_t sref_tag_t;

typedef struct sblock {
    int64_t start;
    int64_t last;
    sref_tag_t next;  /* the user's next session, or 0 */
    uint32_t nset;    /* non-zero hashes in slots */
    uint32_t actions; /* counted events */
    uint32_t user;
    uint32_t sid;
    uint8_t has_zero;
    uint8_t cls;
    uint64_t slots[]; /* SET_MIN_SLOTS << cls; a free block links in [0] */
} sblock_t;

typedef struct sref {
    sblock_t *b;  /* NULL when the sid is free */
    uint32_t gen; /* bumped when heap entries must be invalidated */
    uint32_t next_free;
} sref_t;

typedef struct close_ent {
    int64_t due; /* last + gap as of the push (<= the real value) */
    int64_t start;
    uint32_t user;
    uint32_t sid;
    uint32_t gen;
} close_ent_t;

typedef struct start_ent {
    int64_t start;
    uint32_t sid;
    uint32_t gen;
} start_ent_t;

struct engage_sessionizer {
    int64_t gap;
    size_t nopen;

    sref_t *sref;
    uint32_t sref_len;
    size_t sref_cap;
    uint32_t free_sid;
    sblock_t *free_blk[KEEP_CLS + 1];

    /* per user; dirty and taken have the same capacity so marking a user
     * dirty never allocates */
    sref_tag_t *uhead;
    uint8_t *udirty;
    uint32_t *dirty;
    uint32_t *taken;
    size_t ucap, ndirty;

    close_ent_t *ch;
    size_t ch_len, ch_cap;
    start_ent_t *sh;
    size_t sh_len, sh_cap;
};

/* ---- small helpers ------------------------------------------------------ */

static inline int64_t sat_add(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_add_overflow(a, b, &r))
        return b > 0 ? INT64_MAX : INT64_MIN;
    return r;
}

static inline int64_t sat_sub(int64_t a, int64_t b) {
    int64_t r;
    if (__builtin_sub_overflow(a, b, &r))
        return b > 0 ? INT64_MIN : INT64_MAX;
    return r;
}

static int grow_array(void **p, size_t *cap, size_t need, size_t elsz, size_t min) {
    if (need <= *cap)
        return 0;
    size_t ncap = *cap ? *cap : min;
    while (ncap < need)
        ncap *= 2;
    void *np = realloc(*p, ncap * elsz);
    if (!np)
        return -1;
    *p = np;
    *cap = ncap;
    return 0;
}

static inline sblock_t *tag_blk(sref_tag_t t) { return (sblock_t *)(t & ~CLS_MASK); }
static inline uint32_t tag_cls(sref_tag_t t) { return (uint32_t)(t & CLS_MASK); }
static inline sref_tag_t blk_tag(const sblock_t *b) { return (uintptr_t)b | b->cls; }

/* ---- blocks and their hash sets ----------------------------------------- */

static inline uint32_t cls_cap(uint32_t cls) { return SET_MIN_SLOTS << cls; }

static inline uint32_t set_slot(uint64_t h, uint32_t mask) {
    /* Event hashes are usually good already; the multiply guards against
     * callers whose hashes differ only in high bits. */
    return (uint32_t)((h * 0x9E3779B97F4A7C15ULL) >> 32) & mask;
}

static inline int set_contains(const sblock_t *b, uint32_t cls, uint64_t h) {
    if (h == 0)
        return b->has_zero;
    uint32_t mask = cls_cap(cls) - 1;
    for (uint32_t i = set_slot(h, mask);; i = (i + 1) & mask) {
        uint64_t v = b->slots[i];
        if (v == h)
            return 1;
        if (v == 0)
            return 0;
    }
}

static inline void set_put_raw(uint64_t *slots, uint32_t mask, uint64_t h) {
    uint32_t i = set_slot(h, mask);
    while (slots[i])
        i = (i + 1) & mask;
    slots[i] = h;
}

/* Inserts h, known to be absent, with room reserved. */
static inline void set_insert(sblock_t *b, uint64_t h) {
    if (h == 0) {
        b->has_zero = 1;
        return;
    }
    set_put_raw(b->slots, cls_cap(b->cls) - 1, h);
    b->nset++;
}

static inline size_t blk_bytes(uint32_t cls) {
    size_t n = sizeof(sblock_t) + (size_t)cls_cap(cls) * sizeof(uint64_t);
    return (n + BLK_ALIGN - 1) & ~(size_t)(BLK_ALIGN - 1);
}

/* Returns a zeroed block of class cls, or NULL on OOM. */
static sblock_t *blk_get(engage_sessionizer_t *s, uint32_t cls) {
    size_t bytes = blk_bytes(cls);
    sblock_t *b = NULL;
    if (cls <= KEEP_CLS && s->free_blk[cls]) {
        b = s->free_blk[cls];
        s->free_blk[cls] = (sblock_t *)(uintptr_t)b->slots[0];
    } else {
        b = aligned_alloc(BLK_ALIGN, bytes);
        if (!b)
            return NULL;
    }
    memset(b, 0, bytes);
    b->cls = (uint8_t)cls;
    return b;
}

static void blk_put(engage_sessionizer_t *s, sblock_t *b) {
    if (b->cls > KEEP_CLS) {
        free(b);
        return;
    }
    b->slots[0] = (uint64_t)(uintptr_t)s->free_blk[b->cls];
    s->free_blk[b->cls] = b;
}

/* Makes room for n non-zero hashes in block ob (load <= 1/2). The block
 * may move: sref is updated, the caller fixes the list link (relink).
 * Returns the (new) block or NULL on OOM (session unchanged). */
static sblock_t *set_reserve(engage_sessionizer_t *s, sblock_t *ob, uint64_t n) {
    uint32_t cls = ob->cls;
    if (n * 2 <= cls_cap(cls))
        return ob;
    uint32_t ncls = cls;
    while (n * 2 > cls_cap(ncls)) {
        if (++ncls > SET_MAX_CLS)
            return NULL;
    }
    sblock_t *nb = blk_get(s, ncls);
    if (!nb)
        return NULL;
    memcpy(nb, ob, sizeof(*nb));
    nb->cls = (uint8_t)ncls;
    uint32_t ocap = cls_cap(cls), nmask = cls_cap(ncls) - 1;
    for (uint32_t i = 0; i < ocap; i++)
        if (ob->slots[i])
            set_put_raw(nb->slots, nmask, ob->slots[i]);
    blk_put(s, ob);
    s->sref[nb->sid].b = nb;
    return nb;
}

/* Points whatever referenced block ob (in user's list) at nb instead. */
static void relink(engage_sessionizer_t *s, uint32_t user, const sblock_t *ob, sblock_t *nb) {
    sref_tag_t *link = &s->uhead[user];
    while (tag_blk(*link) != ob)
        link = &tag_blk(*link)->next;
    *link = blk_tag(nb);
}

/* ---- heaps (4-ary: half the depth of a binary heap, and the children of
 * a node share a cache line or two) ---------------------------------------- */

static inline int close_less(const close_ent_t *a, const close_ent_t *b) {
    if (a->due != b->due)
        return a->due < b->due;
    if (a->user != b->user)
        return a->user < b->user;
    return a->start < b->start;
}

/* Capacity is reserved by the caller. */
static void close_push(engage_sessionizer_t *s, close_ent_t e) {
    size_t i = s->ch_len++;
    while (i > 0) {
        size_t p = (i - 1) / HEAP_D;
        if (!close_less(&e, &s->ch[p]))
            break;
        s->ch[i] = s->ch[p];
        i = p;
    }
    s->ch[i] = e;
}

static void close_pop(engage_sessionizer_t *s) {
    close_ent_t e = s->ch[--s->ch_len];
    size_t n = s->ch_len, i = 0;
    if (!n)
        return;
    for (;;) {
        size_t c = HEAP_D * i + 1;
        if (c >= n)
            break;
        size_t end = c + HEAP_D < n ? c + HEAP_D : n, m = c;
        for (size_t j = c + 1; j < end; j++)
            if (close_less(&s->ch[j], &s->ch[m]))
                m = j;
        if (!close_less(&s->ch[m], &e))
            break;
        s->ch[i] = s->ch[m];
        i = m;
    }
    s->ch[i] = e;
}

static void start_push(engage_sessionizer_t *s, start_ent_t e) {
    size_t i = s->sh_len++;
    while (i > 0) {
        size_t p = (i - 1) / HEAP_D;
        if (s->sh[p].start <= e.start)
            break;
        s->sh[i] = s->sh[p];
        i = p;
    }
    s->sh[i] = e;
}

static void start_pop(engage_sessionizer_t *s) {
    start_ent_t e = s->sh[--s->sh_len];
    size_t n = s->sh_len, i = 0;
    if (!n)
        return;
    for (;;) {
        size_t c = HEAP_D * i + 1;
        if (c >= n)
            break;
        size_t end = c + HEAP_D < n ? c + HEAP_D : n, m = c;
        for (size_t j = c + 1; j < end; j++)
            if (s->sh[j].start < s->sh[m].start)
                m = j;
        if (s->sh[m].start >= e.start)
            break;
        s->sh[i] = s->sh[m];
        i = m;
    }
    s->sh[i] = e;
}

static inline int ent_valid(const engage_sessionizer_t *s, uint32_t sid, uint32_t gen) {
    return s->sref[sid].b && s->sref[sid].gen == gen;
}

/* Drops stale entries from the top of the start heap. */
static void start_clean(engage_sessionizer_t *s) {
    while (s->sh_len && !ent_valid(s, s->sh[0].sid, s->sh[0].gen))
        start_pop(s);
}

static int heaps_reserve(engage_sessionizer_t *s, size_t n) {
    if (grow_array((void **)&s->ch, &s->ch_cap, s->ch_len + n, sizeof(*s->ch), 1024))
        return -1;
    if (grow_array((void **)&s->sh, &s->sh_cap, s->sh_len + n, sizeof(*s->sh), 1024))
        return -1;
    return 0;
}

/* Pushes fresh entries for block b in both heaps (room reserved). */
static void push_entries(engage_sessionizer_t *s, const sblock_t *b) {
    uint32_t gen = s->sref[b->sid].gen;
    close_ent_t ce = {sat_add(b->last, s->gap), b->start, b->user, b->sid, gen};
    start_ent_t se = {b->start, b->sid, gen};
    close_push(s, ce);
    start_push(s, se);
}

/* ---- sessions ----------------------------------------------------------- */

/* Returns a new, unlinked session of user with an empty block of the
 * smallest class able to hold nhash hashes, or NULL on OOM. */
static sblock_t *sess_alloc(engage_sessionizer_t *s, uint32_t user, uint64_t nhash) {
    uint32_t cls = 0;
    while (nhash * 2 > cls_cap(cls)) {
        if (++cls > SET_MAX_CLS)
            return NULL;
    }
    uint32_t sid = s->free_sid;
    if (sid == NIL) {
        if (s->sref_len == NIL ||
            grow_array((void **)&s->sref, &s->sref_cap, (size_t)s->sref_len + 1,
                       sizeof(*s->sref), 256))
            return NULL;
        sid = s->sref_len;
        s->sref[sid] = (sref_t){NULL, 0, NIL};
    }
    sblock_t *b = blk_get(s, cls);
    if (!b)
        return NULL;
    if (sid == s->sref_len)
        s->sref_len++;
    else
        s->free_sid = s->sref[sid].next_free;
    b->user = user;
    b->sid = sid;
    s->sref[sid].b = b;
    s->nopen++;
    return b;
}

/* Frees the session of block b (already unlinked from its user's list). */
static void sess_release(engage_sessionizer_t *s, sblock_t *b) {
    sref_t *r = &s->sref[b->sid];
    r->b = NULL;
    r->gen++;
    r->next_free = s->free_sid;
    s->free_sid = b->sid;
    blk_put(s, b);
    s->nopen--;
}

/* ---- users and dirty tracking ------------------------------------------- */

static int users_reserve(engage_sessionizer_t *s, uint32_t user) {
    size_t need = (size_t)user + 1;
    if (need <= s->ucap)
        return 0;
    size_t ncap = s->ucap ? s->ucap : 1024;
    while (ncap < need)
        ncap *= 2;
    sref_tag_t *h = realloc(s->uhead, ncap * sizeof(*h));
    if (!h)
        return -1;
    s->uhead = h;
    memset(h + s->ucap, 0, (ncap - s->ucap) * sizeof(*h));
    uint8_t *f = realloc(s->udirty, ncap);
    if (!f)
        return -1;
    s->udirty = f;
    memset(f + s->ucap, 0, ncap - s->ucap);
    uint32_t *d = realloc(s->dirty, ncap * sizeof(*d));
    if (!d)
        return -1;
    s->dirty = d;
    uint32_t *t = realloc(s->taken, ncap * sizeof(*t));
    if (!t)
        return -1;
    s->taken = t;
    s->ucap = ncap;
    return 0;
}

static inline void mark_dirty(engage_sessionizer_t *s, uint32_t user) {
    if (!s->udirty[user]) {
        s->udirty[user] = 1;
        s->dirty[s->ndirty++] = user;
    }
}

/* ---- public API --------------------------------------------------------- */

engage_sessionizer_t *engage_sessionizer_new(int64_t gap_ms) {
    if (gap_ms <= 0)
        return NULL;
    engage_sessionizer_t *s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->gap = gap_ms;
    s->free_sid = NIL;
    return s;
}

void engage_sessionizer_destroy(engage_sessionizer_t *s) {
    if (!s)
        return;
    for (uint32_t i = 0; i < s->sref_len; i++)
        free(s->sref[i].b);
    for (int c = 0; c <= KEEP_CLS; c++) {
        sblock_t *b = s->free_blk[c];
        while (b) {
            sblock_t *n = (sblock_t *)(uintptr_t)b->slots[0];
            free(b);
            b = n;
        }
    }
    free(s->sref);
    free(s->uhead);
    free(s->udirty);
    free(s->dirty);
    free(s->taken);
    free(s->ch);
    free(s->sh);
    free(s);
}

int engage_sessionizer_add(engage_sessionizer_t *s, uint32_t user, int64_t ts_ms,
                           uint64_t event_hash) {
    if (users_reserve(s, user) || heaps_reserve(s, 1))
        return -1;

    /* One pass: duplicate check against every open session of the user,
     * and the run of sessions within gap of ts (contiguous, since the list
     * is sorted and the sessions are disjoint). */
    sblock_t *t = NULL;
    uint32_t nmatch = 0;
    uint64_t nhash = 1;
    for (sref_tag_t r = s->uhead[user]; r;) {
        sblock_t *b = tag_blk(r);
        if (set_contains(b, tag_cls(r), event_hash))
            return 0;
        if (sat_sub(b->start, s->gap) <= ts_ms && ts_ms <= sat_add(b->last, s->gap)) {
            if (!t)
                t = b;
            nmatch++;
            nhash += b->nset;
        }
        r = b->next;
    }

    if (!t) {
        sblock_t *b = sess_alloc(s, user, 1);
        if (!b)
            return -1;
        b->start = b->last = ts_ms;
        b->actions = 1;
        set_insert(b, event_hash);
        /* link in start order: after the last session starting before ts */
        sref_tag_t *link = &s->uhead[user];
        while (*link && tag_blk(*link)->start < ts_ms)
            link = &tag_blk(*link)->next;
        b->next = *link;
        *link = blk_tag(b);
        push_entries(s, b);
        mark_dirty(s, user);
        return 1;
    }

    sblock_t *nt = set_reserve(s, t, nhash);
    if (!nt)
        return -1;
    if (nt != t) {
        relink(s, user, t, nt);
        t = nt;
    }
    /* Merge the following matched sessions into the first one. The first
     * has the lowest start, so its heap entries stay valid unless ts moves
     * the start back. */
    for (uint32_t k = 1; k < nmatch; k++) {
        sblock_t *o = tag_blk(t->next);
        uint32_t ocap = cls_cap(o->cls);
        for (uint32_t i = 0; i < ocap; i++)
            if (o->slots[i])
                set_insert(t, o->slots[i]);
        t->has_zero |= o->has_zero;
        uint64_t a = (uint64_t)t->actions + o->actions;
        t->actions = a > UINT32_MAX ? UINT32_MAX : (uint32_t)a;
        if (o->last > t->last)
            t->last = o->last;
        t->next = o->next;
        sess_release(s, o);
    }
    set_insert(t, event_hash);
    if (t->actions < UINT32_MAX)
        t->actions++;
    if (ts_ms > t->last)
        t->last = ts_ms;
    int stale = nmatch > 1;
    if (ts_ms < t->start) {
        t->start = ts_ms;
        s->sref[t->sid].gen++;
        push_entries(s, t);
        stale = 1;
    }
    if (stale)
        start_clean(s);
    mark_dirty(s, user);
    return 1;
}

/* Pops due sessions in key order; all != 0 ignores the watermark. */
static size_t close_due(engage_sessionizer_t *s, int64_t watermark, int all,
                        engage_session_close_cb *cb, void *opaque) {
    size_t n = 0;
    while (s->ch_len) {
        close_ent_t e = s->ch[0];
        if (!all && e.due >= watermark)
            break;
        close_pop(s);
        if (!ent_valid(s, e.sid, e.gen))
            continue;
        sblock_t *b = s->sref[e.sid].b;
        int64_t due = sat_add(b->last, s->gap);
        if (due != e.due) {
            /* extended since the push: re-key (room exists: just popped) */
            e.due = due;
            close_push(s, e);
            continue;
        }
        if (cb)
            cb(opaque, b->user, b->start, b->last, b->actions);
        uint32_t user = b->user;
        sref_tag_t *link = &s->uhead[user];
        while (tag_blk(*link) != b)
            link = &tag_blk(*link)->next;
        *link = b->next;
        sess_release(s, b);
        mark_dirty(s, user);
        n++;
    }
    start_clean(s);
    return n;
}

size_t engage_sessionizer_close(engage_sessionizer_t *s, int64_t watermark,
                                engage_session_close_cb *cb, void *opaque) {
    return close_due(s, watermark, 0, cb, opaque);
}

size_t engage_sessionizer_close_all(engage_sessionizer_t *s, engage_session_close_cb *cb,
                                    void *opaque) {
    return close_due(s, 0, 1, cb, opaque);
}

int64_t engage_sessionizer_min_open_start(const engage_sessionizer_t *s) {
    return s->sh_len ? s->sh[0].start : INT64_MAX;
}

size_t engage_sessionizer_open_count(const engage_sessionizer_t *s) { return s->nopen; }

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

size_t engage_sessionizer_take_dirty(engage_sessionizer_t *s, const uint32_t **users) {
    /* Swap buffers so the returned list survives later adds. */
    uint32_t *out = s->dirty;
    size_t n = s->ndirty;
    s->dirty = s->taken;
    s->taken = out;
    s->ndirty = 0;
    for (size_t i = 0; i < n; i++)
        s->udirty[out[i]] = 0;
    if (n > 1)
        qsort(out, n, sizeof(*out), cmp_u32);
    *users = out;
    return n;
}

/*
 * Serialized form (little-endian):
 *   "ESN" version(1 byte) | nsess u32 |
 *   nsess x { start i64 | last i64 | actions u32 | nhashes u32 | hashes u64... }
 * Sessions in start order; hashes in table order.
 */
int engage_sessionizer_serialize_user(const engage_sessionizer_t *s, uint32_t user,
                                      engage_buf_t *out) {
    if (user >= s->ucap || !s->uhead[user])
        return 0;
    size_t need = SER_HDR;
    uint32_t nsess = 0;
    for (sref_tag_t r = s->uhead[user]; r; r = tag_blk(r)->next) {
        const sblock_t *b = tag_blk(r);
        need += SER_SESS + 8 * ((size_t)b->nset + b->has_zero);
        nsess++;
    }
    if (engage_buf_reserve(out, need))
        return -1;
    const char hdr[4] = {SER_MAGIC0, SER_MAGIC1, SER_MAGIC2, SER_VERSION};
    engage_buf_append(out, hdr, 4);
    engage_buf_put_u32(out, nsess);
    for (sref_tag_t r = s->uhead[user]; r; r = tag_blk(r)->next) {
        const sblock_t *b = tag_blk(r);
        uint32_t cap = cls_cap(b->cls);
        engage_buf_put_u64(out, (uint64_t)b->start);
        engage_buf_put_u64(out, (uint64_t)b->last);
        engage_buf_put_u32(out, b->actions);
        engage_buf_put_u32(out, b->nset + b->has_zero);
        if (b->has_zero)
            engage_buf_put_u64(out, 0);
        for (uint32_t i = 0; i < cap; i++)
            if (b->slots[i])
                engage_buf_put_u64(out, b->slots[i]);
    }
    return 1;
}

engage_err_t engage_sessionizer_load_user(engage_sessionizer_t *s, uint32_t user,
                                          const void *buf, size_t len, char *errstr,
                                          size_t errstr_size) {
    const unsigned char *p = buf;
    if (!buf || len < SER_HDR)
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "session state: %zu bytes, too short", len);
    if (p[0] != SER_MAGIC0 || p[1] != SER_MAGIC1 || p[2] != SER_MAGIC2)
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "session state: bad magic");
    if (p[3] != SER_VERSION)
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "session state: unsupported version %u", p[3]);
    uint32_t nsess = engage_get_u32(p + 4);
    if (nsess == 0 || nsess > (len - SER_HDR) / SER_SESS)
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "session state: bad session count %u", nsess);

    /* Pass 1: structure only, no allocation. */
    size_t off = SER_HDR;
    int64_t prev_last = 0;
    for (uint32_t k = 0; k < nsess; k++) {
        if (len - off < SER_SESS)
            return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                                 "session state: truncated session %u", k);
        int64_t start = (int64_t)engage_get_u64(p + off);
        int64_t last = (int64_t)engage_get_u64(p + off + 8);
        uint32_t actions = engage_get_u32(p + off + 16);
        uint32_t nh = engage_get_u32(p + off + 20);
        off += SER_SESS;
        if (start > last || actions == 0 || nh == 0 || nh > actions ||
            (k > 0 && start <= prev_last))
            return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                                 "session state: inconsistent session %u", k);
        if ((len - off) / 8 < nh)
            return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                                 "session state: truncated hashes in session %u", k);
        off += (size_t)nh * 8;
        prev_last = last;
    }
    if (off != len)
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "session state: %zu trailing bytes", len - off);

    /* Pass 2: build a detached list (blocks sized up front, so they never
     * move once linked); on failure give it back. */
    if (users_reserve(s, user) || heaps_reserve(s, nsess))
        return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
    sref_tag_t head = 0;
    sref_tag_t *tail = &head;
    engage_err_t err = ENGAGE_ERR_OK;
    off = SER_HDR;
    for (uint32_t k = 0; k < nsess && !err; k++) {
        uint32_t nh = engage_get_u32(p + off + 20);
        sblock_t *b = sess_alloc(s, user, nh);
        if (!b) {
            err = ENGAGE_ERR_NOMEM;
            break;
        }
        *tail = blk_tag(b);
        tail = &b->next;
        b->start = (int64_t)engage_get_u64(p + off);
        b->last = (int64_t)engage_get_u64(p + off + 8);
        b->actions = engage_get_u32(p + off + 16);
        off += SER_SESS;
        for (uint32_t i = 0; i < nh; i++, off += 8) {
            uint64_t h = engage_get_u64(p + off);
            for (sref_tag_t r = head; r; r = tag_blk(r)->next) {
                if (set_contains(tag_blk(r), tag_cls(r), h)) {
                    err = ENGAGE_ERR_CORRUPT;
                    break;
                }
            }
            if (err)
                break;
            set_insert(b, h);
        }
    }
    if (err) {
        while (head) {
            sblock_t *b = tag_blk(head);
            head = b->next;
            sess_release(s, b);
        }
        if (err == ENGAGE_ERR_CORRUPT)
            return engage_seterr(err, errstr, errstr_size,
                                 "session state: duplicate event hash");
        return engage_seterr(err, errstr, errstr_size, "out of memory");
    }

    /* Commit: replace the user's sessions. */
    sref_tag_t old = s->uhead[user];
    while (old) {
        sblock_t *b = tag_blk(old);
        old = b->next;
        sess_release(s, b);
    }
    s->uhead[user] = head;
    for (sref_tag_t r = head; r; r = tag_blk(r)->next)
        push_entries(s, tag_blk(r));
    start_clean(s);
    return ENGAGE_ERR_OK;
}
