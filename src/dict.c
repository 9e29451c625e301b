/*
 * dict.c - user id -> dense ordinal.
 *
 * Layout, chosen for the per-event lookup (a hit costs two dependent cache
 * misses: the slot, then the key bytes):
 *  - an open-addressing table (linear probing, power-of-two size, load
 *    <= 0.7) of 16-byte slots {key pointer, tag, ord+1}: the tag is the
 *    high half of the key's XXH3 hash, so keys are compared only when 32
 *    hash bits agree;
 *  - keys in a chunked arena as [u32 length][bytes], so a key pointer also
 *    gives the length;
 *  - a reverse array ord -> key pointer. Growth rehashes from the keys.
 *
 * Removal (user retention) keeps the table free of tombstones: the slot is
 * emptied by backward-shift deletion (the entries after it in its probe run
 * move back when that keeps them reachable from their home slot), so
 * lookups never probe past dead entries and load is simply nmapped / slots.
 * The home slot of an entry is not stored (the tag is the other half of the
 * hash), so a removal rehashes the keys of the run behind it: a few hashes of
 * short keys, once per removed user.
 *
 * Ordinals have holes after a removal or engage_dict_insert() (restore in
 * any order); a hole has a NULL key pointer and is in the `free` bitmap,
 * which always holds exactly the unmapped ordinals below count. A new id
 * takes the smallest of them (else count), and count drops when the top
 * ordinals are removed, so the ordinal a new id gets is a function of the
 * mapped set alone: the same in a dictionary rebuilt from state as in the
 * one that was saved. The task's outputs depend on that (sessions closing
 * at the same instant are reported in ordinal order).
 *
 * The arena cannot free one key, so removed keys are counted as dead bytes;
 * once they exceed the live ones (half the arena) the live keys are copied
 * into one fresh chunk and the table and reverse array repointed. That is
 * why engage_dict_name() pointers are only valid until the next add or
 * remove. Amortised, each removed byte pays for copying at most one live
 * byte.
 */
#include "dict.h"

#include <stdlib.h>
#include <string.h>

#include <roaring/roaring.h>
#define XXH_INLINE_ALL
#include <xxhash.h>

#define DICT_CHUNK (64 * 1024)
#define DICT_MIN_SLOTS 1024u
/* dead key bytes below this are never worth a compaction */
#define DICT_COMPACT_MIN 4096u

typedef struct dict_slot {
    const char *key; /* arena copy; its u32 length precedes it */
    uint32_t tag;    /* high 32 bits of the hash */
    uint32_t ord1;   /* ordinal + 1; 0 = empty slot */
} dict_slot_t;

typedef struct dict_chunk {
    struct dict_chunk *next;
    size_t used, cap;
    char data[];
} dict_chunk_t;

struct engage_dict {
    dict_slot_t *slots;
    uint32_t mask;    /* slots - 1 */
    uint32_t nmapped; /* ids in the table */
    uint32_t count;   /* max(mapped ord) + 1, 0 when empty */
    const char **rev; /* ord -> key; NULL = ordinal not mapped */
    size_t rev_cap;
    roaring_bitmap_t *free; /* exactly the unmapped ordinals below count */
    dict_chunk_t *chunks;   /* newest first */
    size_t live_bytes, dead_bytes; /* arena bytes of mapped / removed keys */
};

static inline uint64_t dict_hash(const char *id, size_t len) {
    return XXH3_64bits(id, len);
}

static inline uint32_t key_len(const char *key) {
    uint32_t n;
    memcpy(&n, key - sizeof(n), sizeof(n));
    return n;
}

engage_dict_t *engage_dict_new(void) {
    engage_dict_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->slots = calloc(DICT_MIN_SLOTS, sizeof(*d->slots));
    d->free = roaring_bitmap_create();
    if (!d->slots || !d->free) {
        engage_dict_destroy(d);
        return NULL;
    }
    d->mask = DICT_MIN_SLOTS - 1;
    return d;
}

void engage_dict_destroy(engage_dict_t *d) {
    if (!d)
        return;
    dict_chunk_t *c = d->chunks;
    while (c) {
        dict_chunk_t *n = c->next;
        free(c);
        c = n;
    }
    free(d->slots);
    free(d->rev);
    if (d->free)
        roaring_bitmap_free(d->free);
    free(d);
}

/* Returns the slot holding id, or the empty slot where it would go. */
static inline dict_slot_t *dict_find(const engage_dict_t *d, const char *id, size_t len,
                                     uint64_t h) {
    uint32_t tag = (uint32_t)(h >> 32);
    uint32_t i = (uint32_t)h & d->mask;
    for (;;) {
        dict_slot_t *sl = &d->slots[i];
        if (sl->ord1 == 0)
            return sl;
        if (sl->tag == tag && key_len(sl->key) == len &&
            (len == 0 || memcmp(sl->key, id, len) == 0))
            return sl;
        i = (i + 1) & d->mask;
    }
}

/* Doubles the table when one more id would exceed load 0.7. */
static int dict_maybe_grow(engage_dict_t *d) {
    uint64_t nslots = (uint64_t)d->mask + 1;
    if (((uint64_t)d->nmapped + 1) * 10 <= nslots * 7)
        return 0;
    uint64_t ncap = nslots * 2;
    if (ncap > ((uint64_t)1 << 32))
        return -1;
    dict_slot_t *ns = calloc(ncap, sizeof(*ns));
    if (!ns)
        return -1;
    uint32_t nmask = (uint32_t)(ncap - 1);
    for (uint64_t i = 0; i < nslots; i++) {
        dict_slot_t sl = d->slots[i];
        if (!sl.ord1)
            continue;
        uint32_t j = (uint32_t)dict_hash(sl.key, key_len(sl.key)) & nmask;
        while (ns[j].ord1)
            j = (j + 1) & nmask;
        ns[j] = sl;
    }
    free(d->slots);
    d->slots = ns;
    d->mask = nmask;
    return 0;
}

static int dict_rev_reserve(engage_dict_t *d, uint64_t need) {
    if (need <= d->rev_cap)
        return 0;
    size_t ncap = d->rev_cap ? d->rev_cap : 1024;
    while (ncap < need)
        ncap *= 2;
    const char **nr = realloc(d->rev, ncap * sizeof(*nr));
    if (!nr)
        return -1;
    memset(nr + d->rev_cap, 0, (ncap - d->rev_cap) * sizeof(*nr));
    d->rev = nr;
    d->rev_cap = ncap;
    return 0;
}

/* Copies [u32 len][bytes] into the arena; returns the stable copy of the
 * bytes or NULL. */
static const char *dict_arena_copy(engage_dict_t *d, const char *id, size_t len) {
    uint32_t n32 = (uint32_t)len;
    size_t need = sizeof(n32) + len;
    dict_chunk_t *c = d->chunks;
    if (!c || c->cap - c->used < need) {
        size_t cap = need > DICT_CHUNK ? need : DICT_CHUNK;
        c = malloc(sizeof(*c) + cap);
        if (!c)
            return NULL;
        c->cap = cap;
        c->used = 0;
        /* A key bigger than a chunk gets its own chunk, linked behind the
         * current one so the current chunk keeps filling. */
        if (need > DICT_CHUNK && d->chunks) {
            c->next = d->chunks->next;
            d->chunks->next = c;
        } else {
            c->next = d->chunks;
            d->chunks = c;
        }
    }
    char *p = c->data + c->used;
    memcpy(p, &n32, sizeof(n32));
    if (len)
        memcpy(p + sizeof(n32), id, len);
    c->used += need;
    return p + sizeof(n32);
}

/* Adds a mapping known to be absent; sl is the empty slot from dict_find
 * (invalidated by growth, so growth happens before the find). */
static int dict_add(engage_dict_t *d, dict_slot_t *sl, const char *id, size_t len,
                    uint64_t h, uint32_t ord) {
    if (dict_rev_reserve(d, (uint64_t)ord + 1))
        return -1;
    const char *p = dict_arena_copy(d, id, len);
    if (!p)
        return -1;
    d->rev[ord] = p;
    sl->key = p;
    sl->tag = (uint32_t)(h >> 32);
    sl->ord1 = ord + 1;
    d->nmapped++;
    d->live_bytes += sizeof(uint32_t) + len;
    if (ord >= d->count) {
        roaring_bitmap_add_range(d->free, d->count, ord); /* the holes skipped */
        d->count = ord + 1;
    } else {
        roaring_bitmap_remove(d->free, ord);
    }
    return 0;
}

int engage_dict_get_or_add(engage_dict_t *d, const char *id, size_t len, uint32_t *ord,
                           int *is_new) {
    if (len > UINT32_MAX)
        return -1;
    uint64_t h = dict_hash(id, len);
    dict_slot_t *sl = dict_find(d, id, len, h);
    if (sl->ord1) {
        *ord = sl->ord1 - 1;
        *is_new = 0;
        return 0;
    }
    int reuse = !roaring_bitmap_is_empty(d->free);
    if (!reuse && d->count == UINT32_MAX)
        return -1;
    if (((uint64_t)d->nmapped + 1) * 10 > ((uint64_t)d->mask + 1) * 7) {
        if (dict_maybe_grow(d))
            return -1;
        sl = dict_find(d, id, len, h);
    }
    uint32_t o = reuse ? roaring_bitmap_minimum(d->free) : d->count;
    if (dict_add(d, sl, id, len, h, o))
        return -1;
    *ord = o;
    *is_new = 1;
    return 0;
}

int engage_dict_lookup(const engage_dict_t *d, const char *id, size_t len, uint32_t *ord) {
    if (len > UINT32_MAX)
        return 0;
    const dict_slot_t *sl = dict_find(d, id, len, dict_hash(id, len));
    if (!sl->ord1)
        return 0;
    *ord = sl->ord1 - 1;
    return 1;
}

engage_err_t engage_dict_insert(engage_dict_t *d, const char *id, size_t len, uint32_t ord) {
    if (ord == UINT32_MAX || len > UINT32_MAX)
        return ENGAGE_ERR_CORRUPT;
    uint64_t h = dict_hash(id, len);
    dict_slot_t *sl = dict_find(d, id, len, h);
    if (sl->ord1)
        return sl->ord1 - 1 == ord ? ENGAGE_ERR_OK : ENGAGE_ERR_CORRUPT;
    if (ord < d->rev_cap && d->rev[ord])
        return ENGAGE_ERR_CORRUPT; /* ordinal taken by another id */
    if (dict_maybe_grow(d))
        return ENGAGE_ERR_NOMEM;
    sl = dict_find(d, id, len, h);
    if (dict_add(d, sl, id, len, h, ord))
        return ENGAGE_ERR_NOMEM;
    return ENGAGE_ERR_OK;
}

const char *engage_dict_name(const engage_dict_t *d, uint32_t ord, size_t *len) {
    if (ord >= d->count || ord >= d->rev_cap || !d->rev[ord])
        return NULL;
    *len = key_len(d->rev[ord]);
    return d->rev[ord];
}

uint32_t engage_dict_count(const engage_dict_t *d) { return d->count; }

uint32_t engage_dict_size(const engage_dict_t *d) { return d->nmapped; }

uint32_t engage_dict_free_count(const engage_dict_t *d) {
    return (uint32_t)roaring_bitmap_get_cardinality(d->free);
}

void engage_dict_key_bytes(const engage_dict_t *d, size_t *live, size_t *dead) {
    *live = d->live_bytes;
    *dead = d->dead_bytes;
}

/* Copies every live key into one fresh chunk and repoints the reverse
 * array and the table. On OOM nothing changes (the dead bytes stay until a
 * later removal tries again). */
static void dict_compact(engage_dict_t *d) {
    dict_chunk_t *nc = NULL;
    if (d->live_bytes) {
        nc = malloc(sizeof(*nc) + d->live_bytes);
        if (!nc)
            return;
        nc->next = NULL;
        nc->cap = d->live_bytes;
        nc->used = 0;
        for (uint32_t o = 0; o < d->count; o++) {
            const char *k = d->rev[o];
            if (!k)
                continue;
            uint32_t n = key_len(k);
            char *p = nc->data + nc->used;
            memcpy(p, k - sizeof(n), sizeof(n) + n);
            nc->used += sizeof(n) + n;
            d->rev[o] = p + sizeof(n);
        }
    }
    for (uint64_t i = 0; i <= d->mask; i++)
        if (d->slots[i].ord1)
            d->slots[i].key = d->rev[d->slots[i].ord1 - 1];
    dict_chunk_t *c = d->chunks;
    while (c) {
        dict_chunk_t *n = c->next;
        free(c);
        c = n;
    }
    d->chunks = nc;
    d->dead_bytes = 0;
}

engage_err_t engage_dict_remove(engage_dict_t *d, uint32_t ord) {
    if (ord >= d->count || ord >= d->rev_cap || !d->rev[ord])
        return ENGAGE_ERR_NOT_FOUND;
    const char *key = d->rev[ord];
    uint32_t len = key_len(key);
    uint32_t i = (uint32_t)dict_hash(key, len) & d->mask;
    while (d->slots[i].ord1 != ord + 1)
        i = (i + 1) & d->mask;
    /* Backward-shift deletion: i is the hole. Walk the run behind it; an
     * entry whose home slot h is not cyclically in (i, j] can fill the hole
     * (it stays reachable from h), which moves the hole to j. The run ends
     * at an empty slot, which is where the hole finally goes. */
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & d->mask;
        dict_slot_t *sj = &d->slots[j];
        if (!sj->ord1)
            break;
        uint32_t h = (uint32_t)dict_hash(sj->key, key_len(sj->key)) & d->mask;
        int stays = i <= j ? (i < h && h <= j) : (i < h || h <= j);
        if (stays)
            continue;
        d->slots[i] = *sj;
        i = j;
    }
    memset(&d->slots[i], 0, sizeof(d->slots[i]));
    d->rev[ord] = NULL;
    d->nmapped--;
    d->live_bytes -= sizeof(uint32_t) + len;
    d->dead_bytes += sizeof(uint32_t) + len;
    if (ord + 1 == d->count) { /* the top went: drop the holes below it too */
        uint32_t c = ord;
        while (c > 0 && !d->rev[c - 1])
            c--;
        roaring_bitmap_remove_range(d->free, c, d->count);
        d->count = c;
    } else {
        roaring_bitmap_add(d->free, ord);
    }
    if (d->dead_bytes >= DICT_COMPACT_MIN && d->dead_bytes > d->live_bytes)
        dict_compact(d);
    return ENGAGE_ERR_OK;
}

void engage_dict_prefetch(const engage_dict_t *d, const char *id, size_t len) {
    uint64_t h = dict_hash(id, len);
    __builtin_prefetch(&d->slots[(uint32_t)h & d->mask]);
}
