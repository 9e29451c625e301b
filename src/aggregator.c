/*
 * aggregator.c - DayPartials -> DailyMetrics (see aggregator.h).
 *
 * The pending days are few (days not yet final on every partition), so a
 * small array sorted by day is enough; each holds one slot per input
 * partition so a re-sent partial overwrites instead of adding twice.
 */
#include "aggregator.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "buf.h"
#include "log.h"
#include "state.h"
#include "timeutil.h"

#define AGG_VERSION 1u

typedef struct agg_part {
    int32_t seen;          /* sent anything */
    int32_t ended;         /* sent its end marker */
    int32_t first_day;     /* first partial day, INT32_MAX: none */
    int32_t final_day;     /* largest partial day, INT32_MIN: none */
    int32_t max_event_day; /* INT32_MIN: none */
} agg_part_t;

typedef struct agg_day {
    int32_t day;
    int dirty;
    engage_partial_rec_t *slots; /* partition_count entries; partition -1 = absent */
} agg_day_t;

struct engage_aggregator {
    engage_state_t *st;
    engage_daily_cb *cb;
    void *opaque;
    int64_t next_offset;
    int32_t nparts; /* 0 until the first partial */
    agg_part_t *parts;
    agg_day_t *days;
    size_t ndays, capdays;
    int32_t emitted_through;
    int32_t max_event_day;
    int dirty;
    int32_t *deleted; /* days emitted since the last persist */
    size_t ndeleted, capdeleted;
    engage_buf_t buf, key;
    char load_err[160];
};

/* ---- helpers ------------------------------------------------------------- */

static void put_be32(unsigned char *b, uint32_t v) {
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}
static uint32_t get_be32(const void *p) {
    const unsigned char *s = p;
    return ((uint32_t)s[0] << 24) | ((uint32_t)s[1] << 16) | ((uint32_t)s[2] << 8) | s[3];
}

static int set_parts(engage_aggregator_t *a, int32_t n) {
    if (n <= 0 || n > 1 << 20)
        return -1;
    a->parts = calloc((size_t)n, sizeof(*a->parts));
    if (!a->parts)
        return -1;
    a->nparts = n;
    for (int32_t i = 0; i < n; i++) {
        a->parts[i].first_day = INT32_MAX;
        a->parts[i].final_day = INT32_MIN;
        a->parts[i].max_event_day = INT32_MIN;
    }
    return 0;
}

static agg_day_t *find_day(engage_aggregator_t *a, int32_t day, int create) {
    size_t lo = 0, hi = a->ndays;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (a->days[mid].day < day)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < a->ndays && a->days[lo].day == day)
        return &a->days[lo];
    if (!create)
        return NULL;
    if (a->ndays == a->capdays) {
        size_t nc = a->capdays ? a->capdays * 2 : 16;
        agg_day_t *nd = realloc(a->days, nc * sizeof(*nd));
        if (!nd)
            return NULL;
        a->days = nd;
        a->capdays = nc;
    }
    engage_partial_rec_t *slots = malloc((size_t)a->nparts * sizeof(*slots));
    if (!slots)
        return NULL;
    for (int32_t i = 0; i < a->nparts; i++)
        slots[i].partition = -1;
    memmove(&a->days[lo + 1], &a->days[lo], (a->ndays - lo) * sizeof(*a->days));
    a->ndays++;
    a->days[lo].day = day;
    a->days[lo].dirty = 0;
    a->days[lo].slots = slots;
    return &a->days[lo];
}

/* Removes the first pending day, remembering it so stage() deletes its
 * partials from the store. Returns 0 or -1 on OOM (nothing removed). */
static int remove_first_day(engage_aggregator_t *a) {
    if (a->ndeleted == a->capdeleted) {
        size_t nc = a->capdeleted ? a->capdeleted * 2 : 16;
        int32_t *nd = realloc(a->deleted, nc * sizeof(*nd));
        if (!nd)
            return -1;
        a->deleted = nd;
        a->capdeleted = nc;
    }
    a->deleted[a->ndeleted++] = a->days[0].day;
    free(a->days[0].slots);
    memmove(&a->days[0], &a->days[1], (a->ndays - 1) * sizeof(*a->days));
    a->ndays--;
    return 0;
}

static void encode_partial(engage_buf_t *b, const engage_partial_rec_t *p) {
    engage_buf_put_u32(b, (uint32_t)p->day);
    engage_buf_put_u32(b, (uint32_t)p->partition);
    engage_buf_put_u64(b, (uint64_t)p->dau);
    engage_buf_put_u64(b, (uint64_t)p->wau);
    engage_buf_put_u64(b, (uint64_t)p->mau);
    engage_buf_put_u64(b, (uint64_t)p->sessions);
    engage_buf_put_u64(b, (uint64_t)p->session_users);
    engage_buf_put_u64(b, (uint64_t)p->sum_duration_ms);
    engage_buf_put_u64(b, (uint64_t)p->sum_actions);
}
#define PARTIAL_LEN (8 + 7 * 8)

static void decode_partial(const char *s, engage_partial_rec_t *p) {
    p->day = (int32_t)engage_get_u32(s);
    p->partition = (int32_t)engage_get_u32(s + 4);
    p->dau = (int64_t)engage_get_u64(s + 8);
    p->wau = (int64_t)engage_get_u64(s + 16);
    p->mau = (int64_t)engage_get_u64(s + 24);
    p->sessions = (int64_t)engage_get_u64(s + 32);
    p->session_users = (int64_t)engage_get_u64(s + 40);
    p->sum_duration_ms = (int64_t)engage_get_u64(s + 48);
    p->sum_actions = (int64_t)engage_get_u64(s + 56);
}

/* ---- emission -------------------------------------------------------------- */

static int all_seen(const engage_aggregator_t *a) {
    if (a->nparts == 0)
        return 0;
    for (int32_t i = 0; i < a->nparts; i++)
        if (!a->parts[i].seen)
            return 0;
    return 1;
}

static int try_emit(engage_aggregator_t *a) {
    if (!all_seen(a))
        return 0;
    for (;;) {
        int32_t d;
        if (a->emitted_through == INT32_MIN) {
            d = INT32_MAX;
            for (int32_t i = 0; i < a->nparts; i++)
                if (a->parts[i].first_day < d)
                    d = a->parts[i].first_day;
            if (d == INT32_MAX)
                return 0; /* nobody has data yet */
        } else {
            d = a->emitted_through + 1;
        }
        if (a->max_event_day == INT32_MIN || d > a->max_event_day)
            return 0;
        for (int32_t i = 0; i < a->nparts; i++)
            if (!a->parts[i].ended && a->parts[i].final_day < d)
                return 0;
        engage_daily_rec_t r;
        memset(&r, 0, sizeof(r));
        r.day = d;
        int64_t sum_dur = 0, sum_act = 0;
        agg_day_t *ad = find_day(a, d, 0);
        if (ad) {
            for (int32_t i = 0; i < a->nparts; i++) {
                const engage_partial_rec_t *p = &ad->slots[i];
                if (p->partition < 0)
                    continue;
                r.dau += p->dau;
                r.wau += p->wau;
                r.mau += p->mau;
                r.sessions += p->sessions;
                r.session_users += p->session_users;
                sum_dur += p->sum_duration_ms;
                sum_act += p->sum_actions;
            }
        }
        if (r.sessions > 0) {
            r.avg_duration_ms = (double)sum_dur / (double)r.sessions;
            r.actions_per_session = (double)sum_act / (double)r.sessions;
        }
        if (a->cb && a->cb(a->opaque, &r))
            return -1;
        a->emitted_through = d;
        a->dirty = 1;
        if (ad) {
            /* days are sorted and d is the smallest pending one */
            while (a->ndays && a->days[0].day <= d)
                if (remove_first_day(a))
                    return -1;
        }
    }
}

/* ---- load / persist ---------------------------------------------------------- */

static int load_part_cb(void *opaque, const void *k, size_t kl, const void *v, size_t vl) {
    engage_aggregator_t *a = opaque;
    if (kl != 5 || vl != 20) {
        snprintf(a->load_err, sizeof(a->load_err), "bad partition entry");
        return 1;
    }
    uint32_t i = get_be32((const char *)k + 1);
    if ((int32_t)i >= a->nparts) {
        snprintf(a->load_err, sizeof(a->load_err), "partition %u out of range", i);
        return 1;
    }
    const char *s = v;
    agg_part_t *p = &a->parts[i];
    p->seen = (int32_t)engage_get_u32(s);
    p->ended = (int32_t)engage_get_u32(s + 4);
    p->first_day = (int32_t)engage_get_u32(s + 8);
    p->final_day = (int32_t)engage_get_u32(s + 12);
    p->max_event_day = (int32_t)engage_get_u32(s + 16);
    return 0;
}

static int load_day_cb(void *opaque, const void *k, size_t kl, const void *v, size_t vl) {
    engage_aggregator_t *a = opaque;
    (void)k;
    if (kl != 9 || vl != PARTIAL_LEN) {
        snprintf(a->load_err, sizeof(a->load_err), "bad day entry");
        return 1;
    }
    engage_partial_rec_t p;
    memset(&p, 0, sizeof(p));
    decode_partial(v, &p);
    if (p.partition < 0 || p.partition >= a->nparts) {
        snprintf(a->load_err, sizeof(a->load_err), "day entry partition out of range");
        return 1;
    }
    /* the key repeats day and partition: a mismatch means a damaged entry */
    if (get_be32((const char *)k + 1) != ((uint32_t)p.day ^ 0x80000000u) ||
        get_be32((const char *)k + 5) != (uint32_t)p.partition) {
        snprintf(a->load_err, sizeof(a->load_err), "day entry key does not match its value");
        return 1;
    }
    agg_day_t *d = find_day(a, p.day, 1);
    if (!d) {
        snprintf(a->load_err, sizeof(a->load_err), "out of memory");
        return 1;
    }
    d->slots[p.partition] = p;
    return 0;
}

engage_aggregator_t *engage_aggregator_open(const char *state_path, engage_daily_cb *cb,
                                            void *opaque, char *errstr,
                                            size_t errstr_size) {
    engage_aggregator_t *a = calloc(1, sizeof(*a));
    void *v = NULL;
    size_t vl = 0;
    if (!a) {
        engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    a->cb = cb;
    a->opaque = opaque;
    a->next_offset = -1;
    a->emitted_through = INT32_MIN;
    a->max_event_day = INT32_MIN;
    if (!(a->st = engage_state_open(state_path, errstr, errstr_size)))
        goto fail;
    engage_err_t err = engage_state_get(a->st, "m", 1, &v, &vl, errstr, errstr_size);
    if (err == ENGAGE_ERR_OK) {
        const char *s = v;
        if (vl != 32 || engage_get_u32(s) != AGG_VERSION ||
            engage_get_u64(s + 24) != XXH64(s, 24, 0)) {
            engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                          "aggregator state at %s: bad meta record", state_path);
            goto fail;
        }
        a->next_offset = (int64_t)engage_get_u64(s + 4);
        int32_t n = (int32_t)engage_get_u32(s + 12);
        a->emitted_through = (int32_t)engage_get_u32(s + 16);
        a->max_event_day = (int32_t)engage_get_u32(s + 20);
        if (n > 0 && set_parts(a, n)) {
            engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size, "bad partition count %d", n);
            goto fail;
        }
    } else if (err != ENGAGE_ERR_NOT_FOUND) {
        goto fail;
    }
    free(v);
    v = NULL;
    if (a->nparts > 0 &&
        (engage_state_iterate(a->st, "p", 1, load_part_cb, a, errstr, errstr_size) ||
         engage_state_iterate(a->st, "d", 1, load_day_cb, a, errstr, errstr_size)))
        goto fail;
    if (a->load_err[0]) {
        engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size, "aggregator state at %s: %s",
                      state_path, a->load_err);
        goto fail;
    }
    return a;
fail:
    free(v);
    engage_aggregator_close(a);
    return NULL;
}

void engage_aggregator_close(engage_aggregator_t *a) {
    if (!a)
        return;
    engage_state_close(a->st);
    for (size_t i = 0; i < a->ndays; i++)
        free(a->days[i].slots);
    free(a->days);
    free(a->parts);
    free(a->deleted);
    engage_buf_free(&a->buf);
    engage_buf_free(&a->key);
    free(a);
}

int64_t engage_aggregator_next_offset(const engage_aggregator_t *a) { return a->next_offset; }

void engage_aggregator_set_next_offset(engage_aggregator_t *a, int64_t next_offset) {
    if (next_offset > a->next_offset) {
        a->next_offset = next_offset;
        a->dirty = 1;
    }
}

int32_t engage_aggregator_emitted_through(const engage_aggregator_t *a) {
    return a->emitted_through;
}

int engage_aggregator_done(const engage_aggregator_t *a) {
    if (a->nparts == 0)
        return 0;
    for (int32_t i = 0; i < a->nparts; i++)
        if (!a->parts[i].ended)
            return 0;
    if (a->max_event_day == INT32_MIN)
        return 1; /* no data anywhere */
    return a->emitted_through != INT32_MIN && a->emitted_through >= a->max_event_day;
}

engage_err_t engage_aggregator_add(engage_aggregator_t *a, const engage_partial_rec_t *p,
                                   int64_t offset, char *errstr, size_t errstr_size) {
    if (a->next_offset >= 0 && offset < a->next_offset)
        return ENGAGE_ERR_OK;
    a->next_offset = offset + 1;
    a->dirty = 1;
    if (a->nparts == 0 && set_parts(a, p->partition_count))
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "partial at offset %lld: bad partition count %d",
                             (long long)offset, p->partition_count);
    if (p->partition_count != a->nparts || p->partition < 0 || p->partition >= a->nparts)
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "partial at offset %lld: partition %d of %d, expected %d "
                             "partitions (did the input topic's partition count change? "
                             "reset the aggregator state)",
                             (long long)offset, p->partition, p->partition_count, a->nparts);
    agg_part_t *pt = &a->parts[p->partition];
    pt->seen = 1;
    if (p->max_event_day > pt->max_event_day)
        pt->max_event_day = p->max_event_day;
    if (p->max_event_day > a->max_event_day)
        a->max_event_day = p->max_event_day;
    if (p->is_end) {
        pt->ended = 1;
    } else if (a->emitted_through == INT32_MIN || p->day > a->emitted_through) {
        agg_day_t *d = find_day(a, p->day, 1);
        if (!d)
            return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        d->slots[p->partition] = *p;
        d->dirty = 1;
        if (p->day > pt->final_day)
            pt->final_day = p->day;
        if (p->day < pt->first_day)
            pt->first_day = p->day;
    }
    if (try_emit(a))
        return engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size, "daily output failed");
    /* A complete bounded run: partitions send partials through their last
     * event day + 29 (the WAU/MAU tail), but only days through the last
     * event day of all partitions are emitted. The rest would stay in the
     * store for good; drop them. */
    if (engage_aggregator_done(a))
        while (a->ndays)
            if (remove_first_day(a))
                return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
    return ENGAGE_ERR_OK;
}

engage_err_t engage_aggregator_persist(engage_aggregator_t *a, char *errstr,
                                       size_t errstr_size) {
    engage_err_t err = engage_aggregator_stage(a, errstr, errstr_size);
    return err ? err : engage_aggregator_commit_staged(a, errstr, errstr_size);
}

engage_state_t *engage_aggregator_store(engage_aggregator_t *a) { return a->st; }

int engage_aggregator_dirty(const engage_aggregator_t *a) {
    if (a->dirty || a->ndeleted)
        return 1;
    for (size_t i = 0; i < a->ndays; i++)
        if (a->days[i].dirty)
            return 1;
    return 0;
}

engage_err_t engage_aggregator_commit_staged(engage_aggregator_t *a, char *errstr,
                                             size_t errstr_size) {
    engage_err_t err = engage_state_commit(a->st, errstr, errstr_size);
    if (!err)
        a->dirty = 0;
    return err;
}

engage_err_t engage_aggregator_stage(engage_aggregator_t *a, char *errstr,
                                     size_t errstr_size) {
    (void)errstr;
    (void)errstr_size;
    unsigned char k[9];
    for (size_t i = 0; i < a->ndeleted; i++) {
        k[0] = 'd';
        put_be32(k + 1, (uint32_t)a->deleted[i] ^ 0x80000000u);
        for (int32_t p = 0; p < a->nparts; p++) {
            put_be32(k + 5, (uint32_t)p);
            engage_state_delete(a->st, k, 9);
        }
    }
    a->ndeleted = 0;
    for (size_t i = 0; i < a->ndays; i++) {
        agg_day_t *d = &a->days[i];
        if (!d->dirty)
            continue;
        for (int32_t p = 0; p < a->nparts; p++) {
            if (d->slots[p].partition < 0)
                continue;
            k[0] = 'd';
            put_be32(k + 1, (uint32_t)d->day ^ 0x80000000u);
            put_be32(k + 5, (uint32_t)p);
            engage_buf_reset(&a->buf);
            encode_partial(&a->buf, &d->slots[p]);
            engage_state_put(a->st, k, 9, a->buf.p, a->buf.len);
        }
        d->dirty = 0;
    }
    if (!a->dirty && !engage_state_pending(a->st))
        return ENGAGE_ERR_OK;
    for (int32_t p = 0; p < a->nparts; p++) {
        const agg_part_t *pt = &a->parts[p];
        k[0] = 'p';
        put_be32(k + 1, (uint32_t)p);
        engage_buf_reset(&a->buf);
        engage_buf_put_u32(&a->buf, (uint32_t)pt->seen);
        engage_buf_put_u32(&a->buf, (uint32_t)pt->ended);
        engage_buf_put_u32(&a->buf, (uint32_t)pt->first_day);
        engage_buf_put_u32(&a->buf, (uint32_t)pt->final_day);
        engage_buf_put_u32(&a->buf, (uint32_t)pt->max_event_day);
        engage_state_put(a->st, k, 5, a->buf.p, a->buf.len);
    }
    engage_buf_reset(&a->buf);
    engage_buf_put_u32(&a->buf, AGG_VERSION);
    engage_buf_put_u64(&a->buf, (uint64_t)a->next_offset);
    engage_buf_put_u32(&a->buf, (uint32_t)a->nparts);
    engage_buf_put_u32(&a->buf, (uint32_t)a->emitted_through);
    engage_buf_put_u32(&a->buf, (uint32_t)a->max_event_day);
    engage_buf_put_u64(&a->buf, XXH64(a->buf.p, a->buf.len, 0));
    engage_state_put(a->st, "m", 1, a->buf.p, a->buf.len);
    return ENGAGE_ERR_OK;
}
