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
 * Every open session also has a dense id (sid) and an entry
 * sref[sid] = {block, generation}. Two queues hold entries (sid,
 * generation): the close queue keyed by (last + gap, user, start), the
 * start queue keyed by start (for engage_sessionizer_min_open_start()).
 *
 * Both queues are lazy. Extending a session (the common case: an event at
 * its end) only raises its close key, so the queue is not touched: an
 * entry's key may be lower than the session's real key, never higher. When
 * such an entry reaches the front and is due, it is re-queued with the real
 * key. The front entry whose key equals its session's real key is then the
 * true minimum, which keeps the close order exact. Only a lowered key (an
 * out-of-order event moving start backwards) queues new entries; the
 * generation is bumped so older entries are dropped when they surface.
 * Closing and merging bump the generation too.
 *
 * Queue structure (a two-level bucket queue). Keys are cut into slots of
 * 2^wshift ms. Entries whose slot is below a moving front slot sit in a
 * small 4-ary heap ("near"); all others are appended to a ring of 2^Q_RBITS
 * buckets indexed by slot (an entry more than one ring turn ahead waits in
 * its bucket until the front comes round to its slot). When near runs
 * empty, the front advances to the next non-empty bucket (found through a
 * bitmap) and moves that bucket's entries for the front slot into near,
 * dropping stale ones. Pushing is then an append, popping works on a heap
 * the size of one slot's worth of entries, so neither touches a big
 * structure in random places; a binary heap over all open sessions cost
 * several cache misses per session at a million users. Stale entries are
 * bounded: a queue holding more than twice as many entries as there are
 * open sessions (plus slack) is compacted in place.
 *
 * A close-queue entry is pushed about gap + grace ahead of the front. If a
 * ring turn were shorter than that, the front would pass its bucket once
 * before its slot, copying it over as "a later turn" (with 64 ms slots a
 * turn is 17.5 minutes: a third of the close path went there). So the close
 * queue's slots are as wide as needed for a turn of at least twice the gap
 * (256 ms for the default 30 minutes); only the near heap gets a little
 * larger. The start queue, whose entries wait as long as their session
 * lasts, gets the same width.
 *
 * The close callback must not call back into the sessionizer.
 */
#include "sessionizer.h"
#include "sortu32.h"

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

#define Q_WSHIFT 6  /* 64 ms per slot, at least */
#define Q_RBITS 14  /* 16384 buckets (256 KiB): one ring turn is ~17 minutes */
#define Q_R (1u << Q_RBITS)
#define Q_MASK (Q_R - 1)
#define Q_D 4             /* near heap arity */
#define Q_SLACK 1024      /* stale entries tolerated before compaction */

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
    uint32_t gen; /* bumped when queue entries must be invalidated */
    uint32_t next_free;
} sref_t;

/* A queue entry. Close queue: key = last + gap as of queueing (<= the real
 * value), ties broken by (user, start). Start queue: key = start, user and
 * start 0. */
typedef struct qent {
    int64_t key;
    int64_t start;
    uint32_t user;
    uint32_t sid;
    uint32_t gen;
} qent_t;

typedef struct qvec {
    qent_t *v;
    uint32_t len, cap;
} qvec_t;

typedef struct lbq {
    qent_t *near; /* heap of entries with slot < front */
    size_t nlen, ncap;
    qvec_t *ring;       /* Q_R buckets, allocated on first use */
    uint64_t *nonempty; /* Q_R bits: bucket holds entries */
    uint64_t *hascap;   /* Q_R bits: bucket owns memory */
    size_t nring;       /* entries in the ring */
    uint64_t front;     /* slot number */
    unsigned wshift;    /* a slot is 2^wshift ms */
} lbq_t;

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

    lbq_t cq; /* close queue */
    lbq_t sq; /* start queue */
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

static inline int ent_valid(const engage_sessionizer_t *s, uint32_t sid, uint32_t gen) {
    return s->sref[sid].b && s->sref[sid].gen == gen;
}

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

/* Points whatever references block ob in user's list at nb instead. */
static void relink(engage_sessionizer_t *s, uint32_t user, const sblock_t *ob, sblock_t *nb) {
    sref_tag_t *link = &s->uhead[user];
    while (tag_blk(*link) != ob)
        link = &tag_blk(*link)->next;
    *link = blk_tag(nb);
}

/* Makes room for n non-zero hashes in the linked block ob (load <= 1/2).
 * The block may move; list link and sref follow. Returns the (new) block,
 * or NULL on OOM (session unchanged). */
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
    relink(s, ob->user, ob, nb);
    s->sref[nb->sid].b = nb;
    blk_put(s, ob);
    return nb;
}

/* ---- the bucket queue --------------------------------------------------- */

/* Maps a key to its slot, order-preserving over all of int64. */
static inline uint64_t qslot(const lbq_t *q, int64_t key) {
    return ((uint64_t)key ^ ((uint64_t)1 << 63)) >> q->wshift;
}

static inline int qless(const qent_t *a, const qent_t *b) {
    if (a->key != b->key)
        return a->key < b->key;
    if (a->user != b->user)
        return a->user < b->user;
    return a->start < b->start;
}

static void near_sift_down(lbq_t *q, size_t i, qent_t e) {
    size_t n = q->nlen;
    for (;;) {
        size_t c = Q_D * i + 1;
        if (c >= n)
            break;
        size_t end = c + Q_D < n ? c + Q_D : n, m = c;
        for (size_t j = c + 1; j < end; j++)
            if (qless(&q->near[j], &q->near[m]))
                m = j;
        if (!qless(&q->near[m], &e))
            break;
        q->near[i] = q->near[m];
        i = m;
    }
    q->near[i] = e;
}

static void near_push(lbq_t *q, const qent_t *e) {
    size_t i = q->nlen++;
    while (i > 0) {
        size_t p = (i - 1) / Q_D;
        if (!qless(e, &q->near[p]))
            break;
        q->near[i] = q->near[p];
        i = p;
    }
    q->near[i] = *e;
}

static void near_pop(lbq_t *q) {
    qent_t e = q->near[--q->nlen];
    if (q->nlen)
        near_sift_down(q, 0, e);
}

static void near_heapify(lbq_t *q) {
    if (q->nlen < 2)
        return;
    for (size_t i = (q->nlen - 2) / Q_D + 1; i-- > 0;)
        near_sift_down(q, i, q->near[i]);
}

static void lbq_free(lbq_t *q) {
    if (q->ring)
        for (uint32_t w = 0; w < Q_R / 64; w++)
            for (uint64_t bits = q->hascap[w]; bits; bits &= bits - 1)
                free(q->ring[(w << 6) | (uint32_t)__builtin_ctzll(bits)].v);
    free(q->ring);
    free(q->nonempty);
    free(q->hascap);
    free(q->near);
}

/* Where a push of key would go: 1 = near, 0 = ring. */
static inline int lbq_goes_near(const lbq_t *q, uint64_t sl) {
    /* an empty queue restarts at the new entry's slot */
    return !(q->nlen == 0 && q->nring == 0) && sl < q->front;
}

/* Makes room for one push of key. Near is kept at least as large as the
 * largest bucket, so moving a bucket into the (empty) near heap never
 * allocates. Returns 0 or -1 on OOM. */
static int lbq_reserve(lbq_t *q, int64_t key) {
    uint64_t sl = qslot(q, key);
    if (lbq_goes_near(q, sl))
        return grow_array((void **)&q->near, &q->ncap, q->nlen + 1, sizeof(qent_t), 256);
    if (!q->ring) {
        q->ring = calloc(Q_R, sizeof(*q->ring));
        q->nonempty = calloc(Q_R / 64, sizeof(*q->nonempty));
        q->hascap = calloc(Q_R / 64, sizeof(*q->hascap));
        if (!q->ring || !q->nonempty || !q->hascap) {
            free(q->ring);
            free(q->nonempty);
            free(q->hascap);
            q->ring = NULL;
            q->nonempty = q->hascap = NULL;
            return -1;
        }
    }
    uint32_t bi = (uint32_t)(sl & Q_MASK);
    qvec_t *b = &q->ring[bi];
    if (b->len == b->cap) {
        if (b->cap >= UINT32_MAX / 2)
            return -1;
        uint32_t ncap = b->cap ? b->cap * 2 : 8;
        qent_t *nv = realloc(b->v, ncap * sizeof(*nv));
        if (!nv)
            return -1;
        b->v = nv;
        b->cap = ncap;
        q->hascap[bi >> 6] |= (uint64_t)1 << (bi & 63);
    }
    return grow_array((void **)&q->near, &q->ncap, b->cap, sizeof(qent_t), 256);
}

/* Queues e; room was reserved by lbq_reserve(q, e->key). */
static void lbq_push(lbq_t *q, const qent_t *e) {
    uint64_t sl = qslot(q, e->key);
    if (lbq_goes_near(q, sl)) {
        near_push(q, e);
        return;
    }
    if (q->nlen == 0 && q->nring == 0)
        q->front = sl;
    uint32_t bi = (uint32_t)(sl & Q_MASK);
    qvec_t *b = &q->ring[bi];
    b->v[b->len++] = *e;
    q->nonempty[bi >> 6] |= (uint64_t)1 << (bi & 63);
    q->nring++;
}

/* Returns the distance from bucket bi to the next non-empty bucket
 * (cyclic, 0 if bi itself). The ring must hold an entry. */
static uint32_t lbq_next_dist(const lbq_t *q, uint32_t bi) {
    uint32_t w = bi >> 6;
    uint64_t bits = q->nonempty[w] & (~(uint64_t)0 << (bi & 63));
    for (uint32_t k = 0; k <= Q_R / 64; k++) {
        if (bits) {
            uint32_t at = ((w << 6) | (uint32_t)__builtin_ctzll(bits));
            return (at - bi) & Q_MASK;
        }
        w = (w + 1) & (Q_R / 64 - 1);
        bits = q->nonempty[w];
    }
    return 0; /* not reached */
}

/* Returns the smallest slot in the ring (which must hold an entry). */
static uint64_t lbq_ring_min(const lbq_t *q) {
    uint64_t m = UINT64_MAX;
    for (uint32_t w = 0; w < Q_R / 64; w++) {
        for (uint64_t bits = q->nonempty[w]; bits; bits &= bits - 1) {
            const qvec_t *b = &q->ring[(w << 6) | (uint32_t)__builtin_ctzll(bits)];
            for (uint32_t i = 0; i < b->len; i++) {
                uint64_t sl = qslot(q, b->v[i].key);
                if (sl < m)
                    m = sl;
            }
        }
    }
    return m;
}

/* Moves the valid entries of the front slot from its bucket into near
 * (which is empty, and large enough), then advances the front. */
static void lbq_drain(const engage_sessionizer_t *s, lbq_t *q) {
    uint32_t bi = (uint32_t)(q->front & Q_MASK);
    qvec_t *b = &q->ring[bi];
    uint32_t keep = 0;
    for (uint32_t i = 0; i < b->len; i++) {
        qent_t e = b->v[i];
        if (qslot(q, e.key) != q->front) {
            b->v[keep++] = e; /* a later turn of the ring */
            continue;
        }
        q->nring--;
        if (ent_valid(s, e.sid, e.gen))
            q->near[q->nlen++] = e;
    }
    b->len = keep;
    if (!keep)
        q->nonempty[bi >> 6] &= ~((uint64_t)1 << (bi & 63));
    q->front++;
    near_heapify(q);
}

/* Refills an empty near heap from the ring, if the ring holds a valid
 * entry. */
static void lbq_settle(const engage_sessionizer_t *s, lbq_t *q) {
    uint64_t walked = 0;
    while (q->nlen == 0 && q->nring > 0) {
        if (walked >= Q_R) {
            /* a whole turn found only later turns: jump */
            q->front = lbq_ring_min(q);
            walked = 0;
        }
        uint32_t d = lbq_next_dist(q, (uint32_t)(q->front & Q_MASK));
        q->front += d;
        walked += (uint64_t)d + 1;
        lbq_drain(s, q);
    }
}

/* Drops stale entries everywhere; no allocation. */
static void lbq_compact(const engage_sessionizer_t *s, lbq_t *q) {
    size_t k = 0;
    for (size_t i = 0; i < q->nlen; i++)
        if (ent_valid(s, q->near[i].sid, q->near[i].gen))
            q->near[k++] = q->near[i];
    q->nlen = k;
    near_heapify(q);
    if (!q->ring)
        return;
    for (uint32_t w = 0; w < Q_R / 64; w++) {
        for (uint64_t bits = q->nonempty[w]; bits; bits &= bits - 1) {
            uint32_t bi = (w << 6) | (uint32_t)__builtin_ctzll(bits);
            qvec_t *b = &q->ring[bi];
            uint32_t keep = 0;
            for (uint32_t i = 0; i < b->len; i++)
                if (ent_valid(s, b->v[i].sid, b->v[i].gen))
                    b->v[keep++] = b->v[i];
            q->nring -= b->len - keep;
            b->len = keep;
            if (!keep)
                q->nonempty[w] &= ~((uint64_t)1 << (bi & 63));
        }
    }
}

static void lbq_maybe_compact(const engage_sessionizer_t *s, lbq_t *q) {
    if (q->nlen + q->nring > 2 * s->nopen + Q_SLACK)
        lbq_compact(s, q);
}

/* Keeps the start queue's front entry valid, so min_open_start() is a read. */
static void start_clean(engage_sessionizer_t *s) {
    lbq_t *q = &s->sq;
    for (;;) {
        lbq_settle(s, q);
        if (!q->nlen || ent_valid(s, q->near[0].sid, q->near[0].gen))
            return;
        near_pop(q);
    }
}

/* After sessions went away: bounds stale entries, then restores the start
 * queue's valid front (compaction may empty the near heap). */
static void queues_tidy(engage_sessionizer_t *s) {
    lbq_maybe_compact(s, &s->cq);
    lbq_maybe_compact(s, &s->sq);
    start_clean(s);
}

/* Makes room to queue a session with close key due and start start. */
static int entries_reserve(engage_sessionizer_t *s, int64_t due, int64_t start) {
    return lbq_reserve(&s->cq, due) || lbq_reserve(&s->sq, start) ? -1 : 0;
}

/* Queues fresh entries for block b (room reserved). */
static void push_entries(engage_sessionizer_t *s, const sblock_t *b) {
    uint32_t gen = s->sref[b->sid].gen;
    qent_t ce = {sat_add(b->last, s->gap), b->start, b->user, b->sid, gen};
    qent_t se = {b->start, 0, 0, b->sid, gen};
    lbq_push(&s->cq, &ce);
    lbq_push(&s->sq, &se);
    if (!s->sq.nlen)
        start_clean(s); /* the queue was empty: bring the entry to the front */
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
    s->cq.wshift = Q_WSHIFT;
    while (s->cq.wshift < 40 && ((uint64_t)Q_R << s->cq.wshift) < 2 * (uint64_t)gap_ms)
        s->cq.wshift++;
    s->sq.wshift = s->cq.wshift;
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
    lbq_free(&s->cq);
    lbq_free(&s->sq);
    free(s->sref);
    free(s->uhead);
    free(s->udirty);
    free(s->dirty);
    free(s->taken);
    free(s);
}

void engage_sessionizer_prefetch(const engage_sessionizer_t *s, uint32_t user,
                                 uint64_t event_hash) {
    if (user >= s->ucap)
        return;
    sref_tag_t r = s->uhead[user];
    if (!r)
        return;
    const sblock_t *b = tag_blk(r);
    __builtin_prefetch(b);
    if (event_hash)
        __builtin_prefetch(&b->slots[set_slot(event_hash, cls_cap(tag_cls(r)) - 1)]);
}

int engage_sessionizer_add(engage_sessionizer_t *s, uint32_t user, int64_t ts_ms,
                           uint64_t event_hash) {
    if (user >= s->ucap && users_reserve(s, user))
        return -1;

    /* One pass: duplicate check against every open session of the user,
     * and the run of sessions within gap of ts (contiguous, since the list
     * is sorted and the sessions are disjoint). */
    sblock_t *t = NULL;
    uint32_t nmatch = 0;
    uint64_t nhash = 1;
    int64_t last = ts_ms;
    for (sref_tag_t r = s->uhead[user]; r;) {
        sblock_t *b = tag_blk(r);
        if (set_contains(b, tag_cls(r), event_hash))
            return 0;
        if (sat_sub(b->start, s->gap) <= ts_ms && ts_ms <= sat_add(b->last, s->gap)) {
            if (!t)
                t = b;
            nmatch++;
            nhash += b->nset;
            if (b->last > last)
                last = b->last;
        }
        r = b->next;
    }

    if (!t) {
        if (entries_reserve(s, sat_add(ts_ms, s->gap), ts_ms))
            return -1;
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

    /* Everything that can fail comes before the first change. */
    int moves_start = ts_ms < t->start;
    if (moves_start && entries_reserve(s, sat_add(last, s->gap), ts_ms))
        return -1;
    t = set_reserve(s, t, nhash);
    if (!t)
        return -1;
    /* Merge the following matched sessions into the first one. The first
     * has the lowest start, so its queue entries stay valid unless ts moves
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
        t->next = o->next;
        sess_release(s, o);
    }
    set_insert(t, event_hash);
    if (t->actions < UINT32_MAX)
        t->actions++;
    t->last = last;
    if (moves_start) {
        t->start = ts_ms;
        s->sref[t->sid].gen++;
        push_entries(s, t);
    }
    if (nmatch > 1 || moves_start)
        queues_tidy(s);
    mark_dirty(s, user);
    return 1;
}

/* Closes due sessions in key order; all != 0 ignores the watermark. Stops
 * early (leaving sessions open for a later call) only if re-queueing an
 * extended session runs out of memory. */
static size_t close_due(engage_sessionizer_t *s, int64_t watermark, int all,
                        engage_session_close_cb *cb, void *opaque) {
    lbq_t *q = &s->cq;
    size_t n = 0;
    for (;;) {
        if (!q->nlen)
            lbq_settle(s, q);
        if (!q->nlen)
            break;
        qent_t e = q->near[0];
        if (!all && e.key >= watermark)
            break;
        if (!ent_valid(s, e.sid, e.gen)) {
            near_pop(q);
            continue;
        }
        sblock_t *b = s->sref[e.sid].b;
        int64_t due = sat_add(b->last, s->gap);
        if (due != e.key) {
            /* extended since it was queued: re-queue with the real key */
            e.key = due;
            if (qslot(q, due) < q->front) {
                near_sift_down(q, 0, e);
            } else {
                if (lbq_reserve(q, due))
                    break;
                near_pop(q);
                lbq_push(q, &e);
            }
            continue;
        }
        near_pop(q);
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
    if (n)
        queues_tidy(s);
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
    return s->sq.nlen ? s->sq.near[0].key : INT64_MAX;
}

size_t engage_sessionizer_open_count(const engage_sessionizer_t *s) { return s->nopen; }

size_t engage_sessionizer_take_dirty(engage_sessionizer_t *s, const uint32_t **users) {
    /* Swap buffers so the returned list survives later adds. */
    uint32_t *out = s->dirty;
    size_t n = s->ndirty;
    s->dirty = s->taken;
    s->taken = out;
    s->ndirty = 0;
    for (size_t i = 0; i < n; i++)
        s->udirty[out[i]] = 0;
    engage_sort_u32(out, s->dirty, n); /* the new dirty list is empty: scratch */
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
     * move) and queue it; on failure release it, which turns its queue
     * entries stale, and the user's old sessions are untouched. */
    if (users_reserve(s, user))
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
    for (sref_tag_t r = head; r && !err; r = tag_blk(r)->next) {
        const sblock_t *b = tag_blk(r);
        if (entries_reserve(s, sat_add(b->last, s->gap), b->start))
            err = ENGAGE_ERR_NOMEM;
        else
            push_entries(s, b);
    }
    if (err) {
        while (head) {
            sblock_t *b = tag_blk(head);
            head = b->next;
            sess_release(s, b);
        }
        queues_tidy(s);
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
    queues_tidy(s);
    return ENGAGE_ERR_OK;
}
