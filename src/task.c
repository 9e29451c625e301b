/*
 * task.c - one input partition's processing (see task.h for the contract).
 *
 * Why it looks the way it does:
 * - Everything a record changes is in memory (dictionary, open sessions,
 *   recent day bitmaps); RocksDB sees one WriteBatch per persist() call, so
 *   the cost of durability is per batch, not per event.
 * - Sessions are closed and days finalised right after the record that
 *   advanced the watermark, not at batch end, so the order of output records
 *   depends only on the input order: a replay with other batch sizes emits
 *   the same records in the same order.
 * - Dirty tracking (dictionary entries whose ordinal or last active day
 *   changed, users whose open sessions changed, days whose bitmaps changed)
 *   keeps each batch's write set small.
 * - State stays bounded (task.h): old days and long-inactive users are
 *   removed at a point fixed by the input (right after the record that
 *   advanced the last emitted day), never at batch boundaries, because which
 *   ordinal a new user gets - and so the order in which sessions closing at
 *   the same instant are reported - depends on which ordinals are free.
 */
#include "task.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <roaring/roaring.h>
#include <xxhash.h>

#include "buf.h"
#include "daystore.h"
#include "dict.h"
#include "log.h"
#include "sessionizer.h"
#include "state.h"
#include "timeutil.h"

#define META_VERSION 1u
#define META_LEN (4 + 8 + 8 + 4 + 4 + 4 + 8) /* ..., xxh64 of the first 32 */
/* the longest window (MAU): days d-29..d, so a day's bitmap is read until
 * day + 29 has been emitted */
#define LONGEST_WINDOW 30
/* dictionary entry value: ordinal u32 LE, last active day i32 LE (the
 * first version stored the ordinal alone) */
#define DICT_VAL_LEN 8
#define DICT_VAL_LEN_V0 4

struct engage_task {
    int32_t partition;
    engage_task_conf_t conf;
    engage_decoder_t *dec; /* not owned */
    engage_emit_t emit;
    engage_state_t *st;
    engage_dict_t *dict;
    engage_sessionizer_t *sess;
    engage_daystore_t *days;

    int64_t next_offset;     /* -1: new store */
    int64_t max_ts;          /* INT64_MIN: nothing seen */
    int32_t min_day;         /* first event day, INT32_MAX: none */
    int32_t emitted_through; /* last day whose partial was emitted, INT32_MIN: none */
    int32_t finished;
    int meta_dirty;
    int32_t staged_cutoff;  /* days dropped once the staged batch is written */

    /* retention */
    int32_t day_keep;        /* days kept behind the last emitted day: 30 + margin */
    int32_t user_retention;  /* days of inactivity before a user is removed */
    int32_t scanned_through; /* emitted_through at the last expiry scan */
    int32_t *last_day;       /* ordinal -> last day with a counted event */
    size_t last_day_cap;
    int32_t legacy_last_day; /* stands in for it in entries of the first format */
    roaring_bitmap_t *dirty_users; /* ordinals whose "u" entry must be (re)written */
    roaring_bitmap_t *open_keys;   /* ordinals with an "o" entry in the store (staged) */
    engage_buf_t expired;    /* "u" keys of removed users to delete: [u32 len][key]... */

    engage_buf_t buf;
    engage_buf_t key;
    engage_task_stats_t stats;

    /* error raised inside a sessionizer callback */
    int cb_failed;
    char load_err[160];
    char sid[17];
};

/* ---- key encoding ------------------------------------------------------ */

static void key_u32(engage_buf_t *k, char prefix, uint32_t v) {
    unsigned char b[5] = {(unsigned char)prefix, (unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};
    engage_buf_reset(k);
    engage_buf_append(k, b, 5);
}

/* days are signed: flip the sign bit so big-endian byte order sorts */
static uint32_t day_key(int32_t day) { return (uint32_t)day ^ 0x80000000u; }
static int32_t day_unkey(uint32_t v) { return (int32_t)(v ^ 0x80000000u); }

static uint32_t get_be32(const void *p) {
    const unsigned char *s = p;
    return ((uint32_t)s[0] << 24) | ((uint32_t)s[1] << 16) | ((uint32_t)s[2] << 8) | s[3];
}

/* Writes v as 16 lower-case hex digits and a NUL into out[17]: the bytes
 * snprintf("%016" PRIx64) writes, without its cost (it was ~900
 * instructions per closed session). */
static void hex16(char *out, uint64_t v) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, v >>= 4)
        out[i] = digits[v & 15];
    out[16] = '\0';
}

/* ---- emission helpers -------------------------------------------------- */

static int emit_partial_day(engage_task_t *t, int32_t day) {
    engage_partial_rec_t p;
    engage_day_stats_t ds;
    memset(&p, 0, sizeof(p));
    engage_daystore_stats(t->days, day, &ds);
    p.day = day;
    p.partition = t->partition;
    p.partition_count = t->conf.partition_count;
    p.dau = (int64_t)engage_daystore_dau(t->days, day);
    p.wau = (int64_t)engage_daystore_window(t->days, day, 7);
    p.mau = (int64_t)engage_daystore_window(t->days, day, 30);
    p.sessions = ds.sessions;
    p.session_users = ds.session_users;
    p.sum_duration_ms = ds.sum_duration_ms;
    p.sum_actions = ds.sum_actions;
    p.max_event_day = t->max_ts == INT64_MIN ? INT32_MIN : engage_day_of_ms(t->max_ts);
    p.is_end = 0;
    t->stats.partials_emitted++;
    return t->emit.partial ? t->emit.partial(t->emit.opaque, &p) : 0;
}

static void on_close(void *opaque, uint32_t user, int64_t start_ms, int64_t last_ms,
                     uint32_t actions) {
    engage_task_t *t = opaque;
    size_t ulen = 0;
    const char *uid = engage_dict_name(t->dict, user, &ulen);
    int32_t day = engage_day_of_ms(start_ms);
    if (engage_daystore_add_session(t->days, day, user, last_ms - start_ms, actions) !=
        ENGAGE_ERR_OK)
        t->cb_failed = 1;
    t->stats.sessions_closed++;
    if (!t->emit.session || !uid)
        return;
    /* deterministic id: xxh64 over user id bytes and the start time */
    engage_buf_reset(&t->key);
    if (engage_buf_append(&t->key, uid, ulen) || engage_buf_put_u64(&t->key, (uint64_t)start_ms)) {
        t->cb_failed = 1;
        return;
    }
    hex16(t->sid, (uint64_t)XXH64(t->key.p, t->key.len, 0));
    engage_session_rec_t r = {.session_id = t->sid,
                              .user_id = uid,
                              .user_id_len = ulen,
                              .start_ms = start_ms,
                              .end_ms = last_ms,
                              .duration_ms = last_ms - start_ms,
                              .actions = (int32_t)actions,
                              .day = day};
    if (t->emit.session(t->emit.opaque, &r))
        t->cb_failed = 1;
}

/* Emits every day that is final for this partition: the watermark passed
 * its end and no session that started on it (or before) is still open. */
static int emit_final_days(engage_task_t *t, int64_t wm) {
    if (t->min_day == INT32_MAX)
        return 0;
    int32_t d = t->emitted_through == INT32_MIN ? t->min_day : t->emitted_through + 1;
    int64_t min_open = engage_sessionizer_min_open_start(t->sess);
    while (wm >= engage_day_start_ms(d + 1) && min_open >= engage_day_start_ms(d + 1)) {
        if (emit_partial_day(t, d))
            return -1;
        t->emitted_through = d;
        t->meta_dirty = 1;
        d++;
    }
    return 0;
}

/* ---- retention ------------------------------------------------------- */

/* Removes from the dictionary every user whose last counted event is on a
 * day before E - user_retention (E = the last emitted day) and queues the
 * deletion of its "u" key for the next stage. Runs once per advance of E
 * (O(users)), right after the record that advanced it.
 *
 * Why the freed ordinal can be given to a new user at once: the removed
 * user was last active on a day L < E - R <= E - 31 - margin (open() checks
 * R >= 31 + margin), so
 *  - no kept day bitmap holds the ordinal: day bitmaps are kept from
 *    E - 30 - margin on, and the user is in no bitmap after L; older
 *    bitmaps may linger in memory until the next commit, but they are never
 *    read again (a window read for a day still to be emitted, d > E, covers
 *    d - 29 > E - 29 only) and never written (nothing is added to a day that
 *    has been emitted);
 *  - the user has no open session: E is emitted only once every open
 *    session starts after E, so a user with an open session was active
 *    after E;
 *  - no day still to be emitted (> E) holds the user, as L < E.
 * So the ordinal appears nowhere a count can see it: reusing it cannot
 * merge two users. The "u" delete and the day deletes land in the same
 * batch, so restored state never pairs a reused ordinal with an old day. */
static int expire_users(engage_task_t *t) {
    if (t->emitted_through == INT32_MIN || t->emitted_through == t->scanned_through)
        return 0;
    t->scanned_through = t->emitted_through;
    int64_t limit = (int64_t)t->emitted_through - t->user_retention;
    uint32_t n = engage_dict_count(t->dict); /* shrinks as the top goes */
    for (uint32_t o = 0; o < n; o++) {
        size_t len;
        const char *name = engage_dict_name(t->dict, o, &len);
        if (!name || (int64_t)t->last_day[o] >= limit)
            continue;
        uint32_t klen = (uint32_t)len + 1;
        /* copy the key before the removal (it may rebuild the arena) */
        if (engage_buf_append(&t->expired, &klen, sizeof(klen)) ||
            engage_buf_append(&t->expired, "u", 1) ||
            engage_buf_append(&t->expired, name, len))
            return -1;
        engage_dict_remove(t->dict, o);
        roaring_bitmap_remove(t->dirty_users, o);
        t->stats.users_expired++;
    }
    return 0;
}

/* After days were emitted: user retention (see expire_users). */
static engage_err_t after_emit(engage_task_t *t, char *errstr, size_t errstr_size) {
    if (expire_users(t))
        return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size,
                             "partition %d: out of memory", t->partition);
    return ENGAGE_ERR_OK;
}

/* ---- load -------------------------------------------------------------- */

/* Makes last_day hold ordinals below n. Returns 0 or -1 on OOM. */
static int last_day_reserve(engage_task_t *t, uint64_t n) {
    if (n <= t->last_day_cap)
        return 0;
    size_t ncap = t->last_day_cap ? t->last_day_cap : 1024;
    while (ncap < n)
        ncap *= 2;
    int32_t *nl = realloc(t->last_day, ncap * sizeof(*nl));
    if (!nl)
        return -1;
    t->last_day = nl;
    t->last_day_cap = ncap;
    return 0;
}

static int load_dict_cb(void *opaque, const void *k, size_t kl, const void *v, size_t vl) {
    engage_task_t *t = opaque;
    uint32_t ord = vl >= 4 ? engage_get_u32(v) : 0;
    if ((vl != DICT_VAL_LEN && vl != DICT_VAL_LEN_V0) || kl < 2 ||
        engage_dict_insert(t->dict, (const char *)k + 1, kl - 1, ord)) {
        snprintf(t->load_err, sizeof(t->load_err), "bad dictionary entry (%zu bytes)", vl);
        return 1;
    }
    if (last_day_reserve(t, (uint64_t)ord + 1)) {
        snprintf(t->load_err, sizeof(t->load_err), "out of memory");
        return 1;
    }
    if (vl == DICT_VAL_LEN) {
        t->last_day[ord] = (int32_t)engage_get_u32((const char *)v + 4);
    } else {
        /* first format: no last day stored. Assume the newest day the task
         * knows (never expires anyone early) and rewrite the entry in the
         * current format with the next persist, so the assumption is made
         * once rather than moved forward by every restart. */
        t->last_day[ord] = t->legacy_last_day;
        roaring_bitmap_add(t->dirty_users, ord);
    }
    return 0;
}

/* The stored last day of a user ("u" entry) is a lower bound, rewritten
 * only when it would no longer be one that the day records make exact: at
 * open, last_day = max(stored, newest held day whose active set has the
 * user). So when a day record is deleted, each user whose last day it is
 * gets its entry rewritten in the same batch; a user active on a later day
 * is rewritten when that day goes. One write per user and inactivity
 * instead of one per user and active day. */
typedef struct day_users_ctx {
    engage_task_t *t;
    int32_t day;
} day_users_ctx_t;

/* Ordinal o belongs to a user in the dictionary (a day record may still
 * hold an ordinal freed by expiry). */
static int mapped(engage_task_t *t, uint32_t o) {
    size_t len;
    return o < t->last_day_cap && engage_dict_name(t->dict, o, &len) != NULL;
}

static bool mark_if_last_day(uint32_t o, void *opaque) {
    day_users_ctx_t *c = opaque;
    if (mapped(c->t, o) && c->t->last_day[o] == c->day)
        roaring_bitmap_add(c->t->dirty_users, o);
    return true;
}

static bool raise_last_day(uint32_t o, void *opaque) {
    day_users_ctx_t *c = opaque;
    if (mapped(c->t, o) && c->t->last_day[o] < c->day)
        c->t->last_day[o] = c->day;
    return true;
}

/* Calls fn for every user active on each held day of [from, to). */
static void iterate_day_users(engage_task_t *t, int32_t from, int32_t to,
                              bool (*fn)(uint32_t, void *)) {
    for (int32_t d = from; d < to; d++) {
        day_users_ctx_t c = {t, d};
        engage_daystore_iterate_active(t->days, d, fn, &c);
    }
}

static int load_sess_cb(void *opaque, const void *k, size_t kl, const void *v, size_t vl) {
    engage_task_t *t = opaque;
    char err[128];
    if (kl != 5 || engage_sessionizer_load_user(t->sess, get_be32((const char *)k + 1), v, vl,
                                                err, sizeof(err))) {
        snprintf(t->load_err, sizeof(t->load_err), "bad open-session entry: %s",
                 kl != 5 ? "key length" : err);
        return 1;
    }
    roaring_bitmap_add(t->open_keys, get_be32((const char *)k + 1));
    return 0;
}

static int load_day_cb(void *opaque, const void *k, size_t kl, const void *v, size_t vl) {
    engage_task_t *t = opaque;
    char err[128];
    if (kl != 5 || engage_daystore_load_day(t->days, day_unkey(get_be32((const char *)k + 1)),
                                            v, vl, err, sizeof(err))) {
        snprintf(t->load_err, sizeof(t->load_err), "bad day entry: %s",
                 kl != 5 ? "key length" : err);
        return 1;
    }
    return 0;
}

static engage_err_t load_meta(engage_task_t *t, char *errstr, size_t errstr_size) {
    void *v = NULL;
    size_t vl = 0;
    engage_err_t err = engage_state_get(t->st, "m", 1, &v, &vl, errstr, errstr_size);
    if (err == ENGAGE_ERR_NOT_FOUND)
        return ENGAGE_ERR_OK;
    if (err)
        return err;
    const char *p = v;
    if (vl != META_LEN || engage_get_u32(p) != META_VERSION) {
        free(v);
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "task %d: bad meta record (%zu bytes)", t->partition, vl);
    }
    t->next_offset = (int64_t)engage_get_u64(p + 4);
    t->max_ts = (int64_t)engage_get_u64(p + 12);
    t->min_day = (int32_t)engage_get_u32(p + 20);
    t->emitted_through = (int32_t)engage_get_u32(p + 24);
    t->finished = (int32_t)engage_get_u32(p + 28);
    int ok = engage_get_u64(p + 32) == XXH64(p, 32, 0);
    free(v);
    if (!ok)
        return engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size,
                             "task %d: meta checksum mismatch", t->partition);
    return ENGAGE_ERR_OK;
}

engage_task_t *engage_task_open(int32_t partition, const char *state_path,
                                const engage_task_conf_t *conf, engage_decoder_t *dec,
                                const engage_emit_t *emit, char *errstr,
                                size_t errstr_size) {
    engage_task_t *t = calloc(1, sizeof(*t));
    if (!t) {
        engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        return NULL;
    }
    t->partition = partition;
    t->conf = *conf;
    t->dec = dec;
    t->emit = *emit;
    t->next_offset = -1;
    t->max_ts = INT64_MIN;
    t->min_day = INT32_MAX;
    t->emitted_through = INT32_MIN;
    t->staged_cutoff = INT32_MIN;
    int32_t margin = conf->retention_margin_days ? conf->retention_margin_days
                                                 : ENGAGE_TASK_DEFAULT_MARGIN_DAYS;
    int32_t retention = conf->user_retention_days ? conf->user_retention_days
                                                  : ENGAGE_TASK_DEFAULT_USER_RETENTION_DAYS;
    if (margin < 1 || margin > 36500 || retention > 365000 ||
        retention < LONGEST_WINDOW + 1 + margin) {
        engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                      "task %d: user.retention.days (%d) must be at least 31 + "
                      "state.retention.margin.days (%d) = %d, and the margin at least 1: a "
                      "removed user's ordinal is reused, which is safe only once no kept day "
                      "bitmap can hold it",
                      partition, retention, margin, LONGEST_WINDOW + 1 + margin);
        goto fail;
    }
    t->day_keep = LONGEST_WINDOW + margin;
    t->user_retention = retention;
    t->dict = engage_dict_new();
    t->sess = engage_sessionizer_new(conf->gap_ms);
    t->days = engage_daystore_new();
    t->dirty_users = roaring_bitmap_create();
    t->open_keys = roaring_bitmap_create();
    if (!t->dict || !t->sess || !t->days || !t->dirty_users || !t->open_keys) {
        engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        goto fail;
    }
    if (!(t->st = engage_state_open(state_path, errstr, errstr_size)))
        goto fail;
    if (load_meta(t, errstr, errstr_size))
        goto fail;
    t->scanned_through = t->emitted_through; /* the last scan was persisted with it */
    t->legacy_last_day = t->max_ts != INT64_MIN ? engage_day_of_ms(t->max_ts)
                         : t->emitted_through != INT32_MIN ? t->emitted_through
                                                           : 0;
    if (engage_state_iterate(t->st, "u", 1, load_dict_cb, t, errstr, errstr_size) ||
        engage_state_iterate(t->st, "o", 1, load_sess_cb, t, errstr, errstr_size) ||
        engage_state_iterate(t->st, "b", 1, load_day_cb, t, errstr, errstr_size))
        goto fail;
    if (t->load_err[0]) {
        engage_seterr(ENGAGE_ERR_CORRUPT, errstr, errstr_size, "task %d: state at %s: %s",
                      partition, state_path, t->load_err);
        goto fail;
    }
    {
        int32_t lo, hi;
        if (engage_daystore_range(t->days, &lo, &hi))
            iterate_day_users(t, lo, hi + 1, raise_last_day);
    }
    {
        const uint32_t *u;
        const int32_t *d;
        engage_sessionizer_take_dirty(t->sess, &u);
        engage_daystore_take_dirty(t->days, &d);
    }
    /* Days older than the cutoff stay in memory until the next persist,
     * which deletes them from the store (after a smaller margin was
     * configured there are some) and then drops them. */
    return t;
fail:
    engage_task_close(t);
    return NULL;
}

void engage_task_close(engage_task_t *t) {
    if (!t)
        return;
    engage_state_close(t->st);
    engage_dict_destroy(t->dict);
    engage_sessionizer_destroy(t->sess);
    engage_daystore_destroy(t->days);
    if (t->dirty_users)
        roaring_bitmap_free(t->dirty_users);
    if (t->open_keys)
        roaring_bitmap_free(t->open_keys);
    free(t->last_day);
    engage_buf_free(&t->expired);
    engage_buf_free(&t->buf);
    engage_buf_free(&t->key);
    free(t);
}

int64_t engage_task_next_offset(const engage_task_t *t) { return t->next_offset; }

void engage_task_set_next_offset(engage_task_t *t, int64_t next_offset) {
    if (next_offset > t->next_offset) {
        t->next_offset = next_offset;
        t->meta_dirty = 1;
    }
}

int64_t engage_task_watermark(const engage_task_t *t) {
    return t->max_ts == INT64_MIN ? INT64_MIN : t->max_ts - t->conf.grace_ms;
}

static engage_err_t dead(engage_task_t *t, const engage_input_rec_t *rec, engage_err_t why,
                         const char *msg, char *errstr, size_t errstr_size) {
    t->stats.dead++;
    if (t->emit.dead && t->emit.dead(t->emit.opaque, rec, engage_err_dl_reason(why), msg))
        return engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size,
                             "partition %d: dead-letter output failed", t->partition);
    return ENGAGE_ERR_OK;
}

engage_err_t engage_task_process(engage_task_t *t, const engage_input_rec_t *rec,
                                 char *errstr, size_t errstr_size) {
    char msg[256];
    engage_action_t a;
    engage_err_t err;

    if (t->next_offset >= 0 && rec->offset < t->next_offset)
        return ENGAGE_ERR_OK; /* applied before a restart */
    t->next_offset = rec->offset + 1;
    t->meta_dirty = 1;
    t->stats.records++;

    msg[0] = '\0';
    err = engage_decoder_decode(t->dec, rec->value, rec->value_len, &a, msg, sizeof(msg));
    if (err && !engage_err_dl_reason(err)) /* NOMEM etc.: not the record's fault */
        return engage_seterr(err, errstr, errstr_size, "partition %d offset %" PRId64 ": %s",
                             t->partition, rec->offset, msg);
    if (err)
        return dead(t, rec, err, msg, errstr, errstr_size);
    if (a.user_id_len == 0 || (int64_t)a.user_id_len > t->conf.max_user_id_bytes) {
        snprintf(msg, sizeof(msg), "user id is %zu bytes (allowed 1..%" PRId64 ")",
                 a.user_id_len, t->conf.max_user_id_bytes);
        return dead(t, rec, ENGAGE_ERR_BAD_USER_ID, msg, errstr, errstr_size);
    }
    if (!rec->key || rec->key_len != a.user_id_len ||
        memcmp(rec->key, a.user_id, a.user_id_len) != 0) {
        snprintf(msg, sizeof(msg), "record key (%zu bytes) differs from user_id (%zu bytes)",
                 rec->key ? rec->key_len : 0, a.user_id_len);
        return dead(t, rec, ENGAGE_ERR_KEY_MISMATCH, msg, errstr, errstr_size);
    }
    if (a.ts_ms < t->conf.min_timestamp_ms) {
        snprintf(msg, sizeof(msg), "timestamp %" PRId64 " before the floor %" PRId64, a.ts_ms,
                 t->conf.min_timestamp_ms);
        return dead(t, rec, ENGAGE_ERR_TS_RANGE, msg, errstr, errstr_size);
    }
    if (rec->kafka_ts >= 0 && a.ts_ms > rec->kafka_ts + t->conf.max_skew_ms) {
        snprintf(msg, sizeof(msg),
                 "timestamp %" PRId64 " is more than %" PRId64 " ms ahead of the record "
                 "timestamp %" PRId64,
                 a.ts_ms, t->conf.max_skew_ms, rec->kafka_ts);
        return dead(t, rec, ENGAGE_ERR_TS_RANGE, msg, errstr, errstr_size);
    }

    if (t->max_ts != INT64_MIN && a.ts_ms < t->max_ts - t->conf.grace_ms) {
        t->stats.late++;
        if (t->emit.late && t->emit.late(t->emit.opaque, rec, t->max_ts - t->conf.grace_ms))
            return engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size,
                                 "partition %d: late output failed", t->partition);
        return ENGAGE_ERR_OK;
    }
    int advanced = 0;
    if (a.ts_ms > t->max_ts) {
        t->max_ts = a.ts_ms;
        advanced = 1;
    }

    uint32_t ord;
    int is_new;
    if (engage_dict_get_or_add(t->dict, a.user_id, a.user_id_len, &ord, &is_new))
        return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size,
                             "partition %d: user dictionary full or out of memory",
                             t->partition);
    int32_t day = engage_day_of_ms(a.ts_ms);
    if (is_new) {
        if (last_day_reserve(t, (uint64_t)ord + 1))
            return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        t->last_day[ord] = day; /* a new user's first event always counts */
        roaring_bitmap_add(t->dirty_users, ord);
    }
    int r = engage_sessionizer_add(t->sess, ord, a.ts_ms, XXH64(a.event_id, a.event_id_len, 0));
    if (r < 0)
        return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
    if (r == 0) {
        t->stats.duplicates++;
    } else {
        t->stats.counted++;
        if (engage_daystore_add_active(t->days, day, ord))
            return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        if (day < t->min_day)
            t->min_day = day;
        /* not written here: the day bitmaps say the same until this day
         * leaves them (engage_task_stage writes the entry then) */
        if (day > t->last_day[ord])
            t->last_day[ord] = day;
    }
    if (advanced) {
        int64_t wm = t->max_ts - t->conf.grace_ms;
        t->cb_failed = 0;
        engage_sessionizer_close(t->sess, wm, on_close, t);
        if (t->cb_failed || emit_final_days(t, wm))
            return engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size,
                                 "partition %d: output failed", t->partition);
        return after_emit(t, errstr, errstr_size);
    }
    return ENGAGE_ERR_OK;
}

engage_err_t engage_task_advance_watermark(engage_task_t *t, int64_t wm, char *errstr,
                                           size_t errstr_size) {
    if (t->finished || (t->max_ts != INT64_MIN && wm <= t->max_ts - t->conf.grace_ms))
        return ENGAGE_ERR_OK;
    t->max_ts = wm + t->conf.grace_ms;
    t->meta_dirty = 1;
    if (t->min_day == INT32_MAX) /* no data yet: final through the day before */
        t->min_day = engage_day_of_ms(wm) - 1;
    t->cb_failed = 0;
    engage_sessionizer_close(t->sess, wm, on_close, t);
    if (t->cb_failed || emit_final_days(t, wm))
        return engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size,
                             "partition %d: output failed", t->partition);
    return after_emit(t, errstr, errstr_size);
}

engage_err_t engage_task_finish(engage_task_t *t, char *errstr, size_t errstr_size) {
    if (t->finished)
        return ENGAGE_ERR_OK;
    t->cb_failed = 0;
    engage_sessionizer_close_all(t->sess, on_close, t);
    if (t->cb_failed)
        goto fail;
    if (t->min_day != INT32_MAX) {
        int32_t last = engage_day_of_ms(t->max_ts) + 29;
        int32_t d = t->emitted_through == INT32_MIN ? t->min_day : t->emitted_through + 1;
        for (; d <= last; d++) {
            if (emit_partial_day(t, d))
                goto fail;
            t->emitted_through = d;
        }
    }
    engage_partial_rec_t end;
    memset(&end, 0, sizeof(end));
    end.day = t->emitted_through == INT32_MIN ? 0 : t->emitted_through;
    end.partition = t->partition;
    end.partition_count = t->conf.partition_count;
    end.max_event_day = t->max_ts == INT64_MIN ? INT32_MIN : engage_day_of_ms(t->max_ts);
    end.is_end = 1;
    if (t->emit.partial && t->emit.partial(t->emit.opaque, &end))
        goto fail;
    t->finished = 1;
    t->meta_dirty = 1;
    return after_emit(t, errstr, errstr_size);
fail:
    return engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size,
                         "partition %d: output failed while finishing", t->partition);
}

int engage_task_finished(const engage_task_t *t) { return t->finished; }

int engage_task_dirty(const engage_task_t *t) {
    return t->meta_dirty || t->expired.len || !roaring_bitmap_is_empty(t->dirty_users);
}

engage_err_t engage_task_persist(engage_task_t *t, char *errstr, size_t errstr_size) {
    engage_err_t err = engage_task_stage(t, errstr, errstr_size);
    return err ? err : engage_task_commit_staged(t, errstr, errstr_size);
}

engage_state_t *engage_task_store(engage_task_t *t) { return t->st; }

/* roaring_iterate callback: puts the "u" entry of one dirty ordinal. */
static bool put_dict_entry(uint32_t o, void *opaque) {
    engage_task_t *t = opaque;
    size_t len;
    const char *name = engage_dict_name(t->dict, o, &len);
    if (!name) /* removed since (expire_users unmarks, so only defensively) */
        return true;
    unsigned char v[DICT_VAL_LEN];
    uint32_t ld = (uint32_t)t->last_day[o];
    for (int i = 0; i < 4; i++) {
        v[i] = (unsigned char)(o >> (8 * i));
        v[4 + i] = (unsigned char)(ld >> (8 * i));
    }
    engage_buf_reset(&t->key);
    if (engage_buf_append(&t->key, "u", 1) || engage_buf_append(&t->key, name, len)) {
        t->cb_failed = 1;
        return false;
    }
    engage_state_put(t->st, t->key.p, t->key.len, v, sizeof(v));
    return true;
}

/* Cutoff of the day records to delete at the next stage (INT32_MIN: none). */
static int32_t day_cutoff(const engage_task_t *t) {
    return t->emitted_through == INT32_MIN ? INT32_MIN : t->emitted_through - t->day_keep;
}

engage_err_t engage_task_stage(engage_task_t *t, char *errstr, size_t errstr_size) {
    int32_t cutoff = day_cutoff(t);
    int32_t lo, hi;
    int have_days = engage_daystore_range(t->days, &lo, &hi);
    if (cutoff != INT32_MIN && have_days)
        iterate_day_users(t, lo, cutoff <= hi ? cutoff : hi + 1, mark_if_last_day);
    /* dictionary: removed users' keys first, then the entries that changed
     * (a removed id that came back is put again after its delete) */
    for (size_t off = 0; off < t->expired.len;) {
        uint32_t klen;
        memcpy(&klen, t->expired.p + off, sizeof(klen));
        engage_state_delete(t->st, t->expired.p + off + sizeof(klen), klen);
        off += sizeof(klen) + klen;
    }
    engage_buf_reset(&t->expired);
    t->cb_failed = 0;
    roaring_iterate(t->dirty_users, put_dict_entry, t);
    if (t->cb_failed)
        return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
    roaring_bitmap_clear(t->dirty_users);
    /* open sessions of users that changed */
    const uint32_t *users;
    size_t nu = engage_sessionizer_take_dirty(t->sess, &users);
    for (size_t i = 0; i < nu; i++) {
        key_u32(&t->key, 'o', users[i]);
        engage_buf_reset(&t->buf);
        int r = engage_sessionizer_serialize_user(t->sess, users[i], &t->buf);
        if (r < 0)
            return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
        /* Most users' sessions open and close between two checkpoints:
         * their key was never written, so there is nothing to delete (a
         * tombstone would cost a store write and a changelog record). */
        if (r) {
            engage_state_put(t->st, t->key.p, t->key.len, t->buf.p, t->buf.len);
            roaring_bitmap_add(t->open_keys, users[i]);
        } else if (roaring_bitmap_contains(t->open_keys, users[i])) {
            engage_state_delete(t->st, t->key.p, t->key.len);
            roaring_bitmap_remove(t->open_keys, users[i]);
        }
    }
    /* days whose bitmaps or aggregates changed */
    const int32_t *days;
    size_t nd = engage_daystore_take_dirty(t->days, &days);
    for (size_t i = 0; i < nd; i++) {
        key_u32(&t->key, 'b', day_key(days[i]));
        engage_buf_reset(&t->buf);
        engage_err_t e = engage_daystore_serialize_day(t->days, days[i], &t->buf);
        if (e == ENGAGE_ERR_NOT_FOUND)
            continue;
        if (e)
            return engage_seterr(e, errstr, errstr_size, "day serialization failed");
        engage_state_put(t->st, t->key.p, t->key.len, t->buf.p, t->buf.len);
    }
    /* days older than the 30-day window of every day still to be emitted,
     * plus the margin, are dropped from memory at commit; delete them on
     * disk in the same batch so the store (and the work of the next open)
     * stays bounded */
    if (cutoff != INT32_MIN && have_days) {
        for (int32_t d = lo; d < cutoff && d <= hi; d++) {
            key_u32(&t->key, 'b', day_key(d));
            engage_state_delete(t->st, t->key.p, t->key.len);
        }
    }
    /* meta, with the next offset: lands in the same batch */
    engage_buf_reset(&t->buf);
    engage_buf_put_u32(&t->buf, META_VERSION);
    engage_buf_put_u64(&t->buf, (uint64_t)t->next_offset);
    engage_buf_put_u64(&t->buf, (uint64_t)t->max_ts);
    engage_buf_put_u32(&t->buf, (uint32_t)t->min_day);
    engage_buf_put_u32(&t->buf, (uint32_t)t->emitted_through);
    engage_buf_put_u32(&t->buf, (uint32_t)t->finished);
    engage_buf_put_u64(&t->buf, XXH64(t->buf.p, t->buf.len, 0));
    engage_state_put(t->st, "m", 1, t->buf.p, t->buf.len);
    t->staged_cutoff = cutoff;
    return ENGAGE_ERR_OK;
}

engage_err_t engage_task_commit_staged(engage_task_t *t, char *errstr, size_t errstr_size) {
    engage_err_t err = engage_state_commit(t->st, errstr, errstr_size);
    if (err)
        return err;
    t->meta_dirty = 0;
    if (t->staged_cutoff != INT32_MIN)
        engage_daystore_drop_before(t->days, t->staged_cutoff);
    return ENGAGE_ERR_OK;
}

void engage_task_get_stats(const engage_task_t *t, engage_task_stats_t *st) { *st = t->stats; }

void engage_task_get_memstats(const engage_task_t *t, engage_task_memstats_t *m) {
    memset(m, 0, sizeof(*m));
    m->users = engage_dict_size(t->dict);
    m->ordinal_limit = engage_dict_count(t->dict);
    m->free_ordinals = engage_dict_free_count(t->dict);
    engage_dict_key_bytes(t->dict, &m->key_bytes, &m->dead_key_bytes);
    if (!engage_daystore_range(t->days, &m->min_day, &m->max_day))
        m->min_day = m->max_day = INT32_MIN;
    m->open_sessions = engage_sessionizer_open_count(t->sess);
}
