/* test_task.c - unit tests for src/task.c (one input partition's processing)
 *
 * Every test drives a real task (real codec, sessionizer, daystore and
 * RocksDB store in a temp directory) through engage_task_process() and
 * captures what it emits. Expected values are worked out by hand from
 * docs/SEMANTICS.md; the randomised test checks the restart property and
 * compares the partials with an independent in-test oracle.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <ftw.h>
#include <inttypes.h>
#include <unistd.h>
#include <xxhash.h>

#include "buf.h"
#include "codec.h"
#include "state.h"
#include "task.h"
#include "timeutil.h"

#define MIN_MS (60 * 1000LL)
#define GAP (30 * MIN_MS)
#define GRACE (5 * MIN_MS)
#define SKEW (60 * MIN_MS)
#define D0 19723 /* 2024-01-01 */
#define DAYMS ENGAGE_MS_PER_DAY
#define T0 ((int64_t)D0 * DAYMS)
#define NOON(d) (T0 + (int64_t)(d)*DAYMS + 12 * 60 * MIN_MS)
#define MIN_TS T0 /* timestamp floor used by these tests */
#define MAX_UID 256

/* ---- capture of everything a task emits ------------------------------- */

typedef struct cap_sess {
    char sid[17];
    char user[300];
    size_t ulen;
    int64_t start, end, dur;
    int32_t actions, day;
} cap_sess_t;

typedef struct cap_dead {
    int64_t offset;
    char reason[64];
    int has_msg;
    size_t key_len, value_len;
} cap_dead_t;

typedef struct cap_late {
    int64_t offset, wm;
} cap_late_t;

typedef struct cap {
    cap_sess_t *s;
    size_t ns, caps;
    engage_partial_rec_t *p;
    size_t np, capp;
    cap_dead_t *d;
    size_t nd, capd;
    cap_late_t *l;
    size_t nl, capl;
    char **log; /* every output, rendered as one line, in emission order */
    size_t nlog, caplog;
    int fail; /* callbacks return non-zero when set */
} cap_t;

#define GROW(arr, n, cap)                                                     \
    do {                                                                      \
        if ((n) == (cap)) {                                                   \
            (cap) = (cap) ? (cap)*2 : 64;                                     \
            (arr) = realloc((arr), (cap) * sizeof(*(arr)));                   \
            assert_non_null(arr);                                             \
        }                                                                     \
    } while (0)

static void cap_log(cap_t *c, const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    GROW(c->log, c->nlog, c->caplog);
    c->log[c->nlog] = strdup(line);
    assert_non_null(c->log[c->nlog]);
    c->nlog++;
}

/* Drops log lines past n (outputs of a batch that is re-done after a crash). */
static void cap_truncate_log(cap_t *c, size_t n) {
    while (c->nlog > n)
        free(c->log[--c->nlog]);
}

static void cap_free(cap_t *c) {
    cap_truncate_log(c, 0);
    free(c->log);
    free(c->s);
    free(c->p);
    free(c->d);
    free(c->l);
    memset(c, 0, sizeof(*c));
}

static int cb_session(void *opaque, const engage_session_rec_t *r) {
    cap_t *c = opaque;
    if (c->fail)
        return 1;
    GROW(c->s, c->ns, c->caps);
    cap_sess_t *x = &c->s[c->ns++];
    memset(x, 0, sizeof(*x));
    assert_int_equal(strlen(r->session_id), 16);
    memcpy(x->sid, r->session_id, 17);
    assert_true(r->user_id_len < sizeof(x->user));
    memcpy(x->user, r->user_id, r->user_id_len);
    x->ulen = r->user_id_len;
    x->start = r->start_ms;
    x->end = r->end_ms;
    x->dur = r->duration_ms;
    x->actions = r->actions;
    x->day = r->day;
    cap_log(c, "S %s %s %" PRId64 " %" PRId64 " %" PRId64 " %d %d", x->sid, x->user, x->start,
            x->end, x->dur, x->actions, x->day);
    return 0;
}

static int cb_partial(void *opaque, const engage_partial_rec_t *r) {
    cap_t *c = opaque;
    if (c->fail)
        return 1;
    GROW(c->p, c->np, c->capp);
    c->p[c->np++] = *r;
    cap_log(c,
            "P %d %d %d %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
            " %" PRId64 " %d %d",
            r->day, r->partition, r->partition_count, r->dau, r->wau, r->mau, r->sessions,
            r->session_users, r->sum_duration_ms, r->sum_actions, r->max_event_day, r->is_end);
    return 0;
}

static int cb_dead(void *opaque, const engage_input_rec_t *rec, const char *reason,
                   const char *errmsg) {
    cap_t *c = opaque;
    if (c->fail)
        return 1;
    assert_non_null(reason);
    GROW(c->d, c->nd, c->capd);
    cap_dead_t *x = &c->d[c->nd++];
    memset(x, 0, sizeof(*x));
    x->offset = rec->offset;
    snprintf(x->reason, sizeof(x->reason), "%s", reason);
    x->has_msg = errmsg && errmsg[0];
    x->key_len = rec->key_len;
    x->value_len = rec->value_len;
    cap_log(c, "D %" PRId64 " %s", rec->offset, reason);
    return 0;
}

static int cb_late(void *opaque, const engage_input_rec_t *rec, int64_t watermark) {
    cap_t *c = opaque;
    if (c->fail)
        return 1;
    GROW(c->l, c->nl, c->capl);
    c->l[c->nl].offset = rec->offset;
    c->l[c->nl].wm = watermark;
    c->nl++;
    cap_log(c, "L %" PRId64 " %" PRId64, rec->offset, watermark);
    return 0;
}

/* ---- fixture ----------------------------------------------------------- */

typedef struct fx {
    char dir[64];
    char path[128];
    engage_decoder_t *dec;
    engage_task_conf_t conf;
    engage_emit_t emit;
    cap_t cap;
    engage_task_t *t;
    int64_t off; /* next offset handed out by feed() */
} fx_t;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static void task_open(fx_t *f) {
    char err[512] = "";
    f->t = engage_task_open(0, f->path, &f->conf, f->dec, &f->emit, err, sizeof(err));
    if (!f->t)
        fail_msg("engage_task_open: %s", err);
}

/* persist + close + reopen: the restart the property is about */
static void task_restart(fx_t *f) {
    char err[512] = "";
    assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
    engage_task_close(f->t);
    f->t = NULL;
    task_open(f);
}

static int setup(void **state) {
    fx_t *f = calloc(1, sizeof(*f));
    char err[512] = "";
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/engage-test-task-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/p0", f->dir);
    f->dec = engage_decoder_new(1, "1=schemas/user_action.avsc", NULL, err, sizeof(err));
    if (!f->dec)
        fail_msg("engage_decoder_new: %s", err);
    f->conf.gap_ms = GAP;
    f->conf.grace_ms = GRACE;
    f->conf.max_skew_ms = SKEW;
    f->conf.min_timestamp_ms = MIN_TS;
    f->conf.max_user_id_bytes = MAX_UID;
    f->conf.partition_count = 1;
    f->emit.opaque = &f->cap;
    f->emit.session = cb_session;
    f->emit.partial = cb_partial;
    f->emit.dead = cb_dead;
    f->emit.late = cb_late;
    task_open(f);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx_t *f = *state;
    engage_task_close(f->t);
    engage_decoder_destroy(f->dec);
    cap_free(&f->cap);
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* Encodes a UserAction; caller frees *buf. */
static void encode(fx_t *f, const char *user, const char *eid, int64_t ts, void **buf,
                   size_t *len) {
    char json[1024], err[512] = "";
    snprintf(json, sizeof(json),
             "{\"event_id\":\"%s\",\"user_id\":\"%s\",\"timestamp\":%" PRId64
             ",\"action\":\"click\"}",
             eid, user, ts);
    if (engage_codec_encode_action_json(f->dec, 1, 1, json, buf, len, err, sizeof(err)))
        fail_msg("encode: %s", err);
}

static engage_err_t feed_raw(fx_t *f, const void *key, size_t key_len, const void *val,
                             size_t val_len, int64_t kafka_ts) {
    char err[512] = "";
    engage_input_rec_t r = {.key = key,
                            .key_len = key_len,
                            .value = val,
                            .value_len = val_len,
                            .partition = 0,
                            .offset = f->off++,
                            .kafka_ts = kafka_ts};
    return engage_task_process(f->t, &r, err, sizeof(err));
}

/* One well-formed event, keyed by its user, produced "now" (kafka_ts = ts). */
static void feed(fx_t *f, const char *user, const char *eid, int64_t ts) {
    void *v;
    size_t vl;
    encode(f, user, eid, ts, &v, &vl);
    assert_int_equal(feed_raw(f, user, strlen(user), v, vl, ts), ENGAGE_ERR_OK);
    free(v);
}

static void finish(fx_t *f) {
    char err[512] = "";
    assert_int_equal(engage_task_finish(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
}

static void expected_sid(const char *user, int64_t start, char out[17]) {
    unsigned char b[300];
    size_t n = strlen(user);
    memcpy(b, user, n);
    for (int i = 0; i < 8; i++)
        b[n + (size_t)i] = (unsigned char)((uint64_t)start >> (8 * i));
    snprintf(out, 17, "%016" PRIx64, (uint64_t)XXH64(b, n + 8, 0));
}

static void assert_session(const cap_sess_t *s, const char *user, int64_t start, int64_t end,
                           int32_t actions) {
    char sid[17];
    assert_int_equal(s->ulen, strlen(user));
    assert_memory_equal(s->user, user, s->ulen);
    assert_int_equal(s->start, start);
    assert_int_equal(s->end, end);
    assert_int_equal(s->dur, end - start);
    assert_int_equal(s->actions, actions);
    assert_int_equal(s->day, engage_day_of_ms(start));
    expected_sid(user, start, sid);
    assert_string_equal(s->sid, sid);
}

static void assert_partial(const engage_partial_rec_t *p, int32_t day, int64_t dau, int64_t wau,
                           int64_t mau, int64_t sessions, int64_t susers, int64_t sum_dur,
                           int64_t sum_act) {
    assert_int_equal(p->day, day);
    assert_int_equal(p->partition, 0);
    assert_int_equal(p->partition_count, 1);
    assert_int_equal(p->is_end, 0);
    assert_int_equal(p->dau, dau);
    assert_int_equal(p->wau, wau);
    assert_int_equal(p->mau, mau);
    assert_int_equal(p->sessions, sessions);
    assert_int_equal(p->session_users, susers);
    assert_int_equal(p->sum_duration_ms, sum_dur);
    assert_int_equal(p->sum_actions, sum_act);
}

/* ---- validation -------------------------------------------------------- */

static void test_dead_letters(void **state) {
    fx_t *f = *state;
    void *v;
    size_t vl;
    char big[MAX_UID + 2];
    engage_task_stats_t st;

    /* a valid first record at exactly the floor: counted */
    feed(f, "alice", "a0", MIN_TS);
    assert_int_equal(engage_task_watermark(f->t), MIN_TS - GRACE);

    encode(f, "alice", "a1", MIN_TS + 1000, &v, &vl);
    unsigned char *raw = malloc(vl + 1);
    assert_non_null(raw);

    /* bad_framing: shorter than the 5-byte header; wrong magic byte */
    assert_int_equal(feed_raw(f, "alice", 5, v, 4, MIN_TS), ENGAGE_ERR_OK); /* off 1 */
    memcpy(raw, v, vl);
    raw[0] = 0x01;
    assert_int_equal(feed_raw(f, "alice", 5, raw, vl, MIN_TS), ENGAGE_ERR_OK); /* off 2 */
    /* unknown_schema_id: id 99 */
    memcpy(raw, v, vl);
    raw[1] = raw[2] = raw[3] = 0;
    raw[4] = 99;
    assert_int_equal(feed_raw(f, "alice", 5, raw, vl, MIN_TS), ENGAGE_ERR_OK); /* off 3 */
    /* undecodable_avro: truncated datum; trailing garbage after a whole datum */
    assert_int_equal(feed_raw(f, "alice", 5, v, 7, MIN_TS), ENGAGE_ERR_OK); /* off 4 */
    memcpy(raw, v, vl);
    raw[vl] = 0x02;
    assert_int_equal(feed_raw(f, "alice", 5, raw, vl + 1, MIN_TS), ENGAGE_ERR_OK); /* off 5 */
    free(raw);
    free(v);

    /* bad_user_id: empty (even with a matching empty key); 257 bytes */
    encode(f, "", "e", MIN_TS, &v, &vl);
    assert_int_equal(feed_raw(f, "", 0, v, vl, MIN_TS), ENGAGE_ERR_OK); /* off 6 */
    free(v);
    memset(big, 'x', MAX_UID + 1);
    big[MAX_UID + 1] = '\0';
    encode(f, big, "e", MIN_TS, &v, &vl);
    assert_int_equal(feed_raw(f, big, MAX_UID + 1, v, vl, MIN_TS), ENGAGE_ERR_OK); /* off 7 */
    free(v);
    /* exactly 256 bytes is fine */
    big[MAX_UID] = '\0';
    feed(f, big, "b256", MIN_TS + 1); /* off 8 */

    /* key_mismatch: other key, a prefix, a longer key, no key at all */
    encode(f, "alice", "k", MIN_TS + 2, &v, &vl);
    assert_int_equal(feed_raw(f, "bob", 3, v, vl, MIN_TS), ENGAGE_ERR_OK);    /* off 9 */
    assert_int_equal(feed_raw(f, "alic", 4, v, vl, MIN_TS), ENGAGE_ERR_OK);   /* off 10 */
    assert_int_equal(feed_raw(f, "alice!", 6, v, vl, MIN_TS), ENGAGE_ERR_OK); /* off 11 */
    assert_int_equal(feed_raw(f, NULL, 0, v, vl, MIN_TS), ENGAGE_ERR_OK);     /* off 12 */
    free(v);

    /* timestamp_out_of_range: 1 ms below the floor; 1 ms over the skew */
    encode(f, "alice", "t1", MIN_TS - 1, &v, &vl);
    assert_int_equal(feed_raw(f, "alice", 5, v, vl, MIN_TS), ENGAGE_ERR_OK); /* off 13 */
    free(v);
    int64_t kts = MIN_TS + 3 * DAYMS;
    encode(f, "alice", "t2", kts + SKEW + 1, &v, &vl);
    assert_int_equal(feed_raw(f, "alice", 5, v, vl, kts), ENGAGE_ERR_OK); /* off 14 */
    free(v);
    /* dead letters never move the watermark */
    assert_int_equal(engage_task_watermark(f->t), MIN_TS + 1 - GRACE);

    /* the first failing check wins: empty user id + wrong key -> bad_user_id;
     * wrong key + timestamp below the floor -> key_mismatch */
    encode(f, "", "o1", MIN_TS, &v, &vl);
    assert_int_equal(feed_raw(f, "bob", 3, v, vl, MIN_TS), ENGAGE_ERR_OK); /* off 15 */
    free(v);
    encode(f, "alice", "o2", MIN_TS - 5, &v, &vl);
    assert_int_equal(feed_raw(f, "bob", 3, v, vl, MIN_TS), ENGAGE_ERR_OK); /* off 16 */
    free(v);

    /* exactly at the skew limit is valid, and with no record timestamp
     * (-1) the skew check does not apply */
    encode(f, "alice", "t3", MIN_TS + 10 * MIN_MS + SKEW, &v, &vl);
    assert_int_equal(feed_raw(f, "alice", 5, v, vl, MIN_TS + 10 * MIN_MS), ENGAGE_ERR_OK);
    free(v);
    assert_int_equal(engage_task_watermark(f->t), MIN_TS + 10 * MIN_MS + SKEW - GRACE);
    encode(f, "alice", "t4", MIN_TS + 5 * DAYMS, &v, &vl);
    assert_int_equal(feed_raw(f, "alice", 5, v, vl, -1), ENGAGE_ERR_OK);
    free(v);
    assert_int_equal(engage_task_watermark(f->t), MIN_TS + 5 * DAYMS - GRACE);

    static const struct {
        int64_t off;
        const char *reason;
    } want[] = {{1, "bad_framing"},        {2, "bad_framing"},
                {3, "unknown_schema_id"},  {4, "undecodable_avro"},
                {5, "undecodable_avro"},   {6, "bad_user_id"},
                {7, "bad_user_id"},        {9, "key_mismatch"},
                {10, "key_mismatch"},      {11, "key_mismatch"},
                {12, "key_mismatch"},      {13, "timestamp_out_of_range"},
                {14, "timestamp_out_of_range"}, {15, "bad_user_id"},
                {16, "key_mismatch"}};
    size_t nw = sizeof(want) / sizeof(want[0]);
    assert_int_equal(f->cap.nd, nw);
    for (size_t i = 0; i < nw; i++) {
        assert_int_equal(f->cap.d[i].offset, want[i].off);
        assert_string_equal(f->cap.d[i].reason, want[i].reason);
        assert_true(f->cap.d[i].has_msg);
    }
    /* the original record is handed to the dead-letter output */
    assert_int_equal(f->cap.d[0].value_len, 4);
    assert_int_equal(f->cap.d[0].key_len, 5);
    assert_int_equal(f->cap.d[8].key_len, 4); /* offset 10, key "alic" */
    assert_int_equal(f->cap.d[10].key_len, 0); /* offset 12, no key */
    /* the reasons are err.h's third column */
    assert_string_equal(engage_err_dl_reason(ENGAGE_ERR_TS_RANGE), "timestamp_out_of_range");

    engage_task_get_stats(f->t, &st);
    assert_int_equal(st.records, 19);
    assert_int_equal(st.dead, (int64_t)nw);
    assert_int_equal(st.counted, 4);
    assert_int_equal(st.late, 0);
    assert_int_equal(f->cap.nl, 0);

    /* the valid records are the only activity: alice and the 256-byte user */
    finish(f);
    int found = 0;
    for (size_t i = 0; i < f->cap.np; i++)
        if (f->cap.p[i].day == D0 && !f->cap.p[i].is_end) {
            assert_int_equal(f->cap.p[i].dau, 2);
            found = 1;
        }
    assert_true(found);
}

static void test_late_boundary(void **state) {
    fx_t *f = *state;
    int64_t T = NOON(0);
    engage_task_stats_t st;

    assert_int_equal(engage_task_watermark(f->t), INT64_MIN);
    /* the first record is never late, however old */
    feed(f, "a", "e0", T); /* off 0 */
    assert_int_equal(engage_task_watermark(f->t), T - GRACE);
    /* ts == watermark: not late */
    feed(f, "a", "e1", T - GRACE); /* off 1 */
    /* 1 ms below: late, reported with the watermark it fell below */
    feed(f, "a", "e2", T - GRACE - 1); /* off 2 */
    /* a new user's late record is not counted either */
    feed(f, "b", "f1", T - 2 * GRACE); /* off 3 */
    /* late records do not move the watermark (they are all older anyway) */
    assert_int_equal(engage_task_watermark(f->t), T - GRACE);

    assert_int_equal(f->cap.nl, 2);
    assert_int_equal(f->cap.l[0].offset, 2);
    assert_int_equal(f->cap.l[0].wm, T - GRACE);
    assert_int_equal(f->cap.l[1].offset, 3);
    assert_int_equal(f->cap.l[1].wm, T - GRACE);
    assert_int_equal(f->cap.nd, 0);
    engage_task_get_stats(f->t, &st);
    assert_int_equal(st.late, 2);
    assert_int_equal(st.counted, 2);

    finish(f);
    assert_int_equal(f->cap.ns, 1);
    assert_session(&f->cap.s[0], "a", T - GRACE, T, 2);
    assert_partial(&f->cap.p[0], D0, 1, 1, 1, 1, 1, GRACE, 2);
}

/* Session ids are 16 lower-case hex digits of XXH64(user id, start LE64),
 * zero-padded: many sessions, so ids with leading zeros (1 in 16) and
 * every digit occur. */
static void test_session_ids(void **state) {
    fx_t *f = *state;
    char user[32], eid[32];
    for (int i = 0; i < 300; i++) {
        snprintf(user, sizeof(user), "user-%d", i);
        snprintf(eid, sizeof(eid), "e%d", i);
        feed(f, user, eid, NOON(0) + i);
    }
    finish(f);
    assert_int_equal(f->cap.ns, 300);
    int leading_zero = 0, seen[16] = {0};
    for (size_t k = 0; k < f->cap.ns; k++) {
        const cap_sess_t *s = &f->cap.s[k];
        int i = atoi(s->user + 5);
        snprintf(user, sizeof(user), "user-%d", i);
        assert_session(s, user, NOON(0) + i, NOON(0) + i, 1);
        leading_zero += s->sid[0] == '0';
        for (int j = 0; j < 16; j++) {
            const char *d = strchr("0123456789abcdef", s->sid[j]);
            assert_non_null(d);
            seen[d - "0123456789abcdef"] = 1;
        }
    }
    assert_true(leading_zero > 0);
    for (int j = 0; j < 16; j++)
        assert_true(seen[j]);
}

static void test_gap_edges(void **state) {
    fx_t *f = *state;
    int64_t T = NOON(0);

    feed(f, "a", "e1", T);
    feed(f, "a", "e2", T + GAP);         /* exactly 30:00.000 later: same session */
    feed(f, "a", "e3", T + 2 * GAP + 1); /* 30:00.001 after e2: a new session */
    /* the first session closes once the watermark is strictly above
     * last + gap = T + 2*GAP */
    feed(f, "z", "z1", T + 2 * GAP + GRACE); /* watermark == T + 2*GAP */
    assert_int_equal(engage_task_watermark(f->t), T + 2 * GAP);
    assert_int_equal(f->cap.ns, 0);
    feed(f, "z", "z2", T + 2 * GAP + GRACE + 1); /* watermark T + 2*GAP + 1 */
    assert_int_equal(f->cap.ns, 1);
    assert_session(&f->cap.s[0], "a", T, T + GAP, 2);

    finish(f);
    assert_int_equal(f->cap.ns, 3);
    /* close order is (last + gap, user ordinal, start): a's second session
     * ends before z's */
    assert_session(&f->cap.s[1], "a", T + 2 * GAP + 1, T + 2 * GAP + 1, 1);
    assert_session(&f->cap.s[2], "z", T + 2 * GAP + GRACE, T + 2 * GAP + GRACE + 1, 2);
    assert_partial(&f->cap.p[0], D0, 2, 2, 2, 3, 2, GAP + 1, 5);
    engage_task_stats_t st;
    engage_task_get_stats(f->t, &st);
    assert_int_equal(st.sessions_closed, 3);
}

static void test_midnight(void **state) {
    fx_t *f = *state;
    int64_t mid = T0 + DAYMS; /* 00:00 of D0+1 */

    feed(f, "a", "a1", mid - 10 * MIN_MS); /* 23:50 on D0 */
    feed(f, "a", "a2", mid + 10 * MIN_MS); /* 00:10 on D0+1: same session */
    feed(f, "b", "b1", mid + 20 * MIN_MS); /* watermark 00:15: past the day's end */
    assert_int_equal(f->cap.np, 0);        /* but a's session started on D0 is open */
    feed(f, "b", "b2", mid + 45 * MIN_MS); /* watermark 00:40 == a's last + gap */
    assert_int_equal(f->cap.ns, 0);
    assert_int_equal(f->cap.np, 0);
    feed(f, "b", "b3", mid + 46 * MIN_MS); /* watermark 00:41: a closes, D0 final */
    assert_int_equal(f->cap.ns, 1);
    assert_session(&f->cap.s[0], "a", mid - 10 * MIN_MS, mid + 10 * MIN_MS, 2);
    assert_int_equal(f->cap.s[0].day, D0);
    assert_int_equal(f->cap.np, 1);
    /* the session counts on its start day only */
    assert_partial(&f->cap.p[0], D0, 1, 1, 1, 1, 1, 20 * MIN_MS, 2);
    assert_int_equal(f->cap.p[0].max_event_day, D0 + 1);

    finish(f);
    assert_int_equal(f->cap.ns, 2);
    assert_session(&f->cap.s[1], "b", mid + 20 * MIN_MS, mid + 46 * MIN_MS, 3);
    /* D0 .. D0+1+29, then the end marker */
    assert_int_equal(f->cap.np, 32);
    /* a is active on both days */
    assert_partial(&f->cap.p[1], D0 + 1, 2, 2, 2, 1, 1, 26 * MIN_MS, 3);
    assert_partial(&f->cap.p[2], D0 + 2, 0, 2, 2, 0, 0, 0, 0);
    assert_partial(&f->cap.p[7], D0 + 7, 0, 2, 2, 0, 0, 0, 0);
    assert_partial(&f->cap.p[8], D0 + 8, 0, 0, 2, 0, 0, 0, 0);
    assert_partial(&f->cap.p[30], D0 + 30, 0, 0, 2, 0, 0, 0, 0);
    assert_int_equal(f->cap.p[31].is_end, 1);
}

static void test_out_of_order(void **state) {
    fx_t *f = *state;
    int64_t T = NOON(0);

    feed(f, "a", "a1", T);
    feed(f, "a", "a2", T + 33 * MIN_MS); /* 33 min later: a second open session */
    /* watermark T+28: an event at T+29 is within gap of both and bridges them */
    feed(f, "a", "a3", T + 29 * MIN_MS);
    /* b's session starts at T+33; an event at the watermark (T+28) moves its
     * start back */
    feed(f, "b", "b1", T + 33 * MIN_MS);
    feed(f, "b", "b2", T + 28 * MIN_MS);
    /* and 1 ms below the watermark is late */
    feed(f, "b", "b3", T + 28 * MIN_MS - 1);
    assert_int_equal(f->cap.nl, 1);
    assert_int_equal(f->cap.l[0].wm, T + 28 * MIN_MS);
    assert_int_equal(f->cap.ns, 0);

    finish(f);
    assert_int_equal(f->cap.ns, 2);
    assert_session(&f->cap.s[0], "a", T, T + 33 * MIN_MS, 3);
    assert_session(&f->cap.s[1], "b", T + 28 * MIN_MS, T + 33 * MIN_MS, 2);
    assert_partial(&f->cap.p[0], D0, 2, 2, 2, 2, 2, 38 * MIN_MS, 5);
}

static void test_duplicates(void **state) {
    fx_t *f = *state;
    int64_t T = NOON(0);
    engage_task_stats_t st;

    feed(f, "a", "e1", T);
    feed(f, "a", "e2", T + MIN_MS);
    feed(f, "a", "e1", T + 2 * MIN_MS); /* duplicate: not counted, does not extend */
    feed(f, "b", "e1", T + 2 * MIN_MS); /* same id, other user: counted */
    engage_task_get_stats(f->t, &st);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.counted, 3);
    /* the open sessions' event ids survive a restart */
    task_restart(f);
    feed(f, "a", "e2", T + 3 * MIN_MS);
    engage_task_get_stats(f->t, &st);
    assert_int_equal(st.duplicates, 1);
    assert_int_equal(st.counted, 0);

    finish(f);
    assert_int_equal(f->cap.ns, 2);
    assert_session(&f->cap.s[0], "a", T, T + MIN_MS, 2);
    assert_session(&f->cap.s[1], "b", T + 2 * MIN_MS, T + 2 * MIN_MS, 1);
    assert_partial(&f->cap.p[0], D0, 2, 2, 2, 2, 2, MIN_MS, 3);
}

typedef struct day_keys {
    int32_t *days;
    size_t *n;
} day_keys_t;

/* state iterator: collects the day numbers of "b" keys (5 bytes, big-endian
 * day with the sign bit flipped) */
static int collect_day_keys(void *opaque, const void *k, size_t kl, const void *v, size_t vl) {
    day_keys_t *dk = opaque;
    const unsigned char *p = k;
    (void)v;
    (void)vl;
    assert_int_equal(kl, 5);
    assert_true(*dk->n < 8);
    uint32_t u = ((uint32_t)p[1] << 24) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 8) | p[4];
    dk->days[(*dk->n)++] = (int32_t)(u ^ 0x80000000u);
    return 0;
}

/* Multi-day scenario, worked out by hand:
 *   day 0: u1, u2   day 1: u1 (two events 10 min apart)   day 3: u3
 *   day 6: u4       day 31: u5
 * dau/wau/mau for every day 0..60, incl. day d-29 inside the MAU window and
 * d-30 outside, and the empty days 7..30 and 32..60. */
static void test_partials_by_hand(void **state) {
    fx_t *f = *state;

    feed(f, "u1", "1", NOON(0));
    feed(f, "u2", "2", NOON(0));
    assert_int_equal(f->cap.np, 0);
    feed(f, "u1", "3", NOON(1)); /* watermark 11:55 on day 1: day 0 final */
    assert_int_equal(f->cap.np, 1);
    assert_partial(&f->cap.p[0], D0, 2, 2, 2, 2, 2, 0, 2);
    assert_int_equal(f->cap.p[0].max_event_day, D0 + 1);
    feed(f, "u1", "4", NOON(1) + 10 * MIN_MS);
    assert_int_equal(f->cap.np, 1);
    feed(f, "u3", "5", NOON(3)); /* days 1, 2 */
    assert_int_equal(f->cap.np, 3);
    feed(f, "u4", "6", NOON(6)); /* days 3..5 */
    assert_int_equal(f->cap.np, 6);
    feed(f, "u5", "7", NOON(31)); /* days 6..30 */
    assert_int_equal(f->cap.np, 31);
    assert_int_equal(f->cap.ns, 5);
    finish(f);
    assert_int_equal(f->cap.ns, 6);
    assert_int_equal(f->cap.np, 62);

    static const int64_t wau[61] = {2, 2, 2, 3, 3, 3, 4, 3, 2, 2, 1, 1, 1, 0, 0, 0,
                                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                                    1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                                    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (int d = 0; d <= 60; d++) {
        const engage_partial_rec_t *p = &f->cap.p[d];
        int64_t dau = (d == 0) ? 2 : (d == 1 || d == 3 || d == 6 || d == 31) ? 1 : 0;
        int64_t mau;
        if (d <= 2)
            mau = 2;
        else if (d <= 5)
            mau = 3;
        else if (d <= 29) /* day 0 (= d-29 at d=29) still inside */
            mau = 4;
        else if (d <= 32) /* d=30: u2 (day 0 = d-30) out; d=31: u1 out, u5 in */
            mau = 3;
        else if (d <= 35) /* d=33: u3 (day 3) out */
            mau = 2;
        else /* d=36: u4 (day 6) out; u5 (day 31) stays through d=60 */
            mau = 1;
        int64_t sessions = (d == 0) ? 2 : dau ? 1 : 0;
        int64_t dur = (d == 1) ? 10 * MIN_MS : 0;
        int64_t act = (d == 0 || d == 1) ? 2 : sessions;
        assert_partial(p, D0 + d, dau, wau[d], mau, sessions, sessions, dur, act);
        /* the partition's max event day when the partial went out */
        int32_t med = d == 0 ? D0 + 1 : d <= 2 ? D0 + 3 : d <= 5 ? D0 + 6 : D0 + 31;
        assert_int_equal(p->max_event_day, med);
    }
    /* end marker */
    const engage_partial_rec_t *e = &f->cap.p[61];
    assert_int_equal(e->is_end, 1);
    assert_int_equal(e->partition, 0);
    assert_int_equal(e->partition_count, 1);
    assert_int_equal(e->max_event_day, D0 + 31);
    engage_task_stats_t st;
    engage_task_get_stats(f->t, &st);
    assert_int_equal(st.partials_emitted, 61);
    assert_int_equal(st.sessions_closed, 6);

    /* persisted state keeps only days a later partial could still need:
     * after day 60 went out, days 0..6 are gone and day 31 stays */
    task_restart(f);
    engage_task_close(f->t);
    f->t = NULL;
    char err[512] = "";
    engage_state_t *s = engage_state_open(f->path, err, sizeof(err));
    assert_non_null(s);
    int32_t days[8];
    size_t nd = 0;
    assert_int_equal(engage_state_iterate(s, "b", 1, collect_day_keys, &(day_keys_t){days, &nd},
                                          err, sizeof(err)),
                     ENGAGE_ERR_OK);
    engage_state_close(s);
    assert_int_equal(nd, 1);
    assert_int_equal(days[0], D0 + 31);
    task_open(f);
    assert_int_equal(engage_task_finished(f->t), 1);
}

static void test_finish(void **state) {
    fx_t *f = *state;
    char err[512];

    /* empty partition: only the end marker */
    finish(f);
    assert_int_equal(f->cap.np, 1);
    assert_int_equal(f->cap.p[0].is_end, 1);
    assert_int_equal(f->cap.p[0].max_event_day, INT32_MIN);
    assert_int_equal(engage_task_finished(f->t), 1);
    finish(f); /* idempotent */
    assert_int_equal(f->cap.np, 1);
    task_restart(f);
    assert_int_equal(engage_task_finished(f->t), 1);
    finish(f);
    assert_int_equal(f->cap.np, 1);

    /* a partition with one event: its open session closes, days D0..D0+29 */
    engage_task_close(f->t);
    f->t = NULL;
    assert_int_equal(engage_state_destroy_dir(f->path, err, sizeof(err)), ENGAGE_ERR_OK);
    cap_free(&f->cap);
    f->off = 0;
    task_open(f);
    assert_int_equal(engage_task_finished(f->t), 0);
    feed(f, "a", "1", NOON(0));
    feed(f, "a", "2", NOON(0) + 20 * MIN_MS);
    assert_int_equal(f->cap.ns, 0);
    finish(f);
    assert_int_equal(f->cap.ns, 1);
    assert_session(&f->cap.s[0], "a", NOON(0), NOON(0) + 20 * MIN_MS, 2);
    assert_int_equal(f->cap.np, 31);
    assert_partial(&f->cap.p[0], D0, 1, 1, 1, 1, 1, 20 * MIN_MS, 2);
    for (int d = 1; d < 30; d++)
        assert_partial(&f->cap.p[d], D0 + d, 0, d < 7 ? 1 : 0, 1, 0, 0, 0, 0);
    assert_int_equal(f->cap.p[30].is_end, 1);
    assert_int_equal(f->cap.p[30].max_event_day, D0);
    /* the finished state persists; nothing is emitted twice */
    task_restart(f);
    assert_int_equal(engage_task_finished(f->t), 1);
    finish(f);
    assert_int_equal(f->cap.np, 31);
    assert_int_equal(f->cap.ns, 1);
}

/* Offsets, persistence, dirty flag, re-delivered records. */
static void test_offsets_and_resume(void **state) {
    fx_t *f = *state;
    char err[512];
    assert_int_equal(engage_task_next_offset(f->t), -1);
    assert_int_equal(engage_task_dirty(f->t), 0);
    f->off = 10;
    feed(f, "a", "1", NOON(0));
    feed(f, "a", "2", NOON(0) + MIN_MS);
    assert_int_equal(engage_task_next_offset(f->t), 12);
    assert_int_equal(engage_task_dirty(f->t), 1);
    assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
    assert_int_equal(engage_task_dirty(f->t), 0);
    /* not persisted: lost on close */
    feed(f, "a", "3", NOON(0) + 2 * MIN_MS);
    engage_task_close(f->t);
    f->t = NULL;
    task_open(f);
    assert_int_equal(engage_task_next_offset(f->t), 12);
    /* records below the next offset are ignored */
    f->off = 10;
    feed(f, "a", "1", NOON(0));
    feed(f, "b", "x", NOON(5)); /* offset 11: would have closed everything */
    engage_task_stats_t st;
    engage_task_get_stats(f->t, &st);
    assert_int_equal(st.records, 0);
    assert_int_equal(f->cap.nlog, 0);
    assert_int_equal(engage_task_watermark(f->t), NOON(0) + MIN_MS - GRACE);
    /* skipped offsets (e.g. transaction markers) */
    engage_task_set_next_offset(f->t, 20);
    engage_task_set_next_offset(f->t, 15); /* never moves back */
    assert_int_equal(engage_task_next_offset(f->t), 20);
    assert_int_equal(engage_task_dirty(f->t), 1);
    task_restart(f);
    assert_int_equal(engage_task_next_offset(f->t), 20);
    f->off = 20;
    feed(f, "a", "3", NOON(0) + 2 * MIN_MS);
    finish(f);
    assert_int_equal(f->cap.ns, 1);
    assert_session(&f->cap.s[0], "a", NOON(0), NOON(0) + 2 * MIN_MS, 3);
}

static void test_corrupt_meta(void **state) {
    fx_t *f = *state;
    char err[512] = "";
    feed(f, "a", "1", NOON(0));
    assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
    engage_task_close(f->t);
    f->t = NULL;

    /* read the good meta record, then damage it in three ways */
    engage_state_t *st = engage_state_open(f->path, err, sizeof(err));
    assert_non_null(st);
    void *good = NULL;
    size_t glen = 0;
    assert_int_equal(engage_state_get(st, "m", 1, &good, &glen, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    engage_state_close(st);

    for (int k = 0; k < 3; k++) {
        unsigned char bad[64];
        size_t blen;
        if (k == 0) { /* garbage */
            memcpy(bad, "garbage!", 8);
            blen = 8;
        } else if (k == 1) { /* right length, one flipped bit: checksum */
            assert_true(glen <= sizeof(bad));
            memcpy(bad, good, glen);
            bad[6] ^= 0x10;
            blen = glen;
        } else { /* unknown version */
            memcpy(bad, good, glen);
            bad[0] = 0x7f;
            blen = glen;
        }
        st = engage_state_open(f->path, err, sizeof(err));
        assert_non_null(st);
        engage_state_put(st, "m", 1, bad, blen);
        assert_int_equal(engage_state_commit(st, err, sizeof(err)), ENGAGE_ERR_OK);
        engage_state_close(st);
        err[0] = '\0';
        engage_task_t *t =
            engage_task_open(0, f->path, &f->conf, f->dec, &f->emit, err, sizeof(err));
        assert_null(t);
        assert_non_null(strstr(err, "meta"));
    }
    /* the good record back: opens again */
    st = engage_state_open(f->path, err, sizeof(err));
    assert_non_null(st);
    engage_state_put(st, "m", 1, good, glen);
    assert_int_equal(engage_state_commit(st, err, sizeof(err)), ENGAGE_ERR_OK);
    engage_state_close(st);
    free(good);
    task_open(f);
    assert_int_equal(engage_task_next_offset(f->t), 1);
}

static void test_emit_failure(void **state) {
    fx_t *f = *state;
    char err[512] = "";
    void *v;
    size_t vl;
    f->cap.fail = 1;
    encode(f, "a", "1", NOON(0), &v, &vl);
    assert_int_equal(feed_raw(f, "b", 1, v, vl, NOON(0)), ENGAGE_ERR_KAFKA); /* dead */
    free(v);
    f->cap.fail = 0;
    feed(f, "a", "1", NOON(0));
    f->cap.fail = 1;
    assert_int_equal(engage_task_finish(f->t, err, sizeof(err)), ENGAGE_ERR_KAFKA);
    assert_true(err[0] != '\0');
    assert_int_equal(engage_task_finished(f->t), 0);
}

/* ---- the restart property, randomised ----------------------------------- */

typedef struct grec {
    char key[16];
    size_t key_len;
    void *val;
    size_t val_len;
    int64_t kafka_ts;
    /* for the oracle: */
    int user; /* -1 unless a well-formed record with a matching key */
    int64_t ts;
    int original; /* first copy of its event id */
} grec_t;

static uint64_t rng_next(uint64_t *s) {
    /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int64_t rnd(uint64_t *s, int64_t n) { return (int64_t)(rng_next(s) % (uint64_t)n); }

#define NUSERS 50

static grec_t *gen_records(fx_t *f, uint64_t seed, size_t n) {
    grec_t *g = calloc(n, sizeof(*g));
    assert_non_null(g);
    uint64_t s = seed;
    int64_t cur = NOON(0) - 4 * 60 * MIN_MS;
    int active[5] = {0, 1, 2, 3, 4};
    char uid[16], eid[32];
    for (size_t i = 0; i < n; i++) {
        grec_t *r = &g[i];
        cur += rnd(&s, 10 * MIN_MS);
        if (rnd(&s, 100) == 0)
            cur += rnd(&s, 2 * DAYMS); /* quiet stretches, empty days */
        /* the population drifts: around day k users k..k+11 are about, so
         * users come and go and the WAU/MAU windows really move */
        int base = (int)((cur - T0) / DAYMS);
        if (rnd(&s, 20) == 0)
            active[rnd(&s, 5)] = (base + (int)rnd(&s, 8)) % NUSERS;
        int64_t k = rnd(&s, 100);
        r->kafka_ts = cur;
        r->user = -1;
        if (k < 4 && i > 0) { /* re-sent copy of a recent record */
            const grec_t *o = &g[i - 1 - (size_t)rnd(&s, i < 3 ? (int64_t)i : 3)];
            memcpy(r->key, o->key, sizeof(r->key));
            r->key_len = o->key_len;
            r->val = malloc(o->val_len);
            assert_non_null(r->val);
            memcpy(r->val, o->val, o->val_len);
            r->val_len = o->val_len;
            r->user = o->user;
            r->ts = o->ts;
            continue;
        }
        int u = rnd(&s, 5) ? active[rnd(&s, 5)] : (base + (int)rnd(&s, 12)) % NUSERS;
        snprintf(uid, sizeof(uid), "user%02d", u);
        snprintf(eid, sizeof(eid), "ev%zu", i);
        r->ts = cur - rnd(&s, GRACE); /* jitter below grace: never late */
        if (k < 8) /* below grace: late, unless the maximum lags behind */
            r->ts = cur - GRACE - 1 - rnd(&s, 3 * 60 * MIN_MS);
        encode(f, uid, eid, r->ts, &r->val, &r->val_len);
        r->key_len = (size_t)snprintf(r->key, sizeof(r->key), "%s", uid);
        if (k >= 8 && k < 10) { /* dead letter: wrong key or bad bytes */
            if (k & 1)
                r->key_len = (size_t)snprintf(r->key, sizeof(r->key), "user%02d", (u + 1) % 100);
            else
                ((unsigned char *)r->val)[0] = 0x07;
            continue;
        }
        r->user = u;
        r->original = 1;
    }
    return g;
}

static void feed_g(fx_t *f, const grec_t *g, size_t i) {
    char err[512] = "";
    engage_input_rec_t r = {.key = g[i].key,
                            .key_len = g[i].key_len,
                            .value = g[i].val,
                            .value_len = g[i].val_len,
                            .partition = 0,
                            .offset = (int64_t)i,
                            .kafka_ts = g[i].kafka_ts};
    engage_err_t e = engage_task_process(f->t, &r, err, sizeof(err));
    if (e)
        fail_msg("process offset %zu: %s", i, err);
}

/* Independent expectations from the generated records: which are counted
 * (valid, not late against the running maximum, first copy of the id),
 * per-day user masks, and sessions as gap splits of each user's counted
 * timestamps (final sessions do not depend on arrival order). */
typedef struct oracle {
    int32_t first_day, last_day;
    uint64_t mask[400];
    int64_t sessions[400], susers_mask[400], dur[400], act[400];
} oracle_t;

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void oracle_build(const grec_t *g, size_t n, oracle_t *o) {
    memset(o, 0, sizeof(*o));
    int64_t max_ts = INT64_MIN;
    int64_t *ts[NUSERS];
    size_t nts[NUSERS] = {0};
    for (int u = 0; u < NUSERS; u++) {
        ts[u] = malloc(n * sizeof(int64_t));
        assert_non_null(ts[u]);
    }
    o->first_day = INT32_MAX;
    o->last_day = INT32_MIN;
    for (size_t i = 0; i < n; i++) {
        if (g[i].user < 0)
            continue;
        if (max_ts != INT64_MIN && g[i].ts < max_ts - GRACE)
            continue; /* late */
        if (g[i].ts > max_ts)
            max_ts = g[i].ts;
        if (!g[i].original)
            continue; /* a copy: duplicate (its session is open) or late */
        int32_t d = engage_day_of_ms(g[i].ts);
        if (d < o->first_day)
            o->first_day = d;
        if (d > o->last_day)
            o->last_day = d;
        assert_true(d - D0 >= 0 && d - D0 < 400);
        o->mask[d - D0] |= 1ull << g[i].user;
        ts[g[i].user][nts[g[i].user]++] = g[i].ts;
    }
    for (int u = 0; u < NUSERS; u++) {
        qsort(ts[u], nts[u], sizeof(int64_t), cmp_i64);
        for (size_t i = 0; i < nts[u];) {
            size_t j = i;
            while (j + 1 < nts[u] && ts[u][j + 1] - ts[u][j] <= GAP)
                j++;
            int32_t d = engage_day_of_ms(ts[u][i]) - D0;
            o->sessions[d]++;
            o->susers_mask[d] |= (int64_t)(1ull << u);
            o->dur[d] += ts[u][j] - ts[u][i];
            o->act[d] += (int64_t)(j - i + 1);
            i = j + 1;
        }
        free(ts[u]);
    }
}

static int64_t window_card(const oracle_t *o, int d, int ndays) {
    uint64_t m = 0;
    for (int k = d - ndays + 1; k <= d; k++)
        if (k >= 0 && k < 400)
            m |= o->mask[k];
    return __builtin_popcountll(m);
}

static void check_oracle(const cap_t *c, const oracle_t *o) {
    int32_t expect_days = o->last_day + 29 - o->first_day + 1;
    assert_int_equal(c->np, (size_t)expect_days + 1);
    for (int32_t i = 0; i < expect_days; i++) {
        const engage_partial_rec_t *p = &c->p[i];
        int d = o->first_day + i - D0;
        assert_int_equal(p->day, o->first_day + i);
        assert_int_equal(p->dau, __builtin_popcountll(o->mask[d]));
        assert_int_equal(p->wau, window_card(o, d, 7));
        assert_int_equal(p->mau, window_card(o, d, 30));
        assert_int_equal(p->sessions, o->sessions[d]);
        assert_int_equal(p->session_users, __builtin_popcountll((uint64_t)o->susers_mask[d]));
        assert_int_equal(p->sum_duration_ms, o->dur[d]);
        assert_int_equal(p->sum_actions, o->act[d]);
    }
    assert_int_equal(c->p[expect_days].is_end, 1);
    assert_int_equal(c->p[expect_days].max_event_day, o->last_day);
}

static void restart_run(fx_t *f, uint64_t seed, size_t n) {
    char err[512];
    grec_t *g = gen_records(f, seed, n);
    oracle_t *o = malloc(sizeof(*o));
    assert_non_null(o);
    oracle_build(g, n, o);

    /* the reference: one go, never persisted */
    for (size_t i = 0; i < n; i++)
        feed_g(f, g, i);
    finish(f);
    engage_task_stats_t st;
    engage_task_get_stats(f->t, &st);
    /* the generator exercises every path */
    if (!(st.late > 10 && st.dead > 10 && st.duplicates > 10 && st.counted > (int64_t)n / 2))
        fail_msg("generator too tame: late %" PRId64 " dead %" PRId64 " dup %" PRId64
                 " counted %" PRId64,
                 st.late, st.dead, st.duplicates, st.counted);
    assert_true(f->cap.ns > 100 && f->cap.np > 40);
    int multi = 0;
    for (size_t i = 0; i < f->cap.ns; i++)
        multi += f->cap.s[i].actions > 1;
    assert_true(multi > 50);
    check_oracle(&f->cap, o);
    cap_t ref = f->cap;
    memset(&f->cap, 0, sizeof(f->cap));

    /* split at random points: a clean restart, or a crash (persist, go on
     * without persisting, lose it, replay from the stored offset); after
     * each reopen old offsets are re-delivered and must be ignored */
    engage_task_close(f->t);
    f->t = NULL;
    assert_int_equal(engage_state_destroy_dir(f->path, err, sizeof(err)), ENGAGE_ERR_OK);
    task_open(f);
    uint64_t s = seed ^ 0xabcdef;
    size_t i = 0;
    int restarts = 0;
    while (i < n) {
        size_t next = i + 1 + (size_t)rnd(&s, (int64_t)(n / 6));
        if (next > n)
            next = n;
        for (; i < next; i++)
            feed_g(f, g, i);
        if (i == n)
            break;
        int64_t mode = rnd(&s, 4);
        if (mode == 3) { /* persist and go on: a batch boundary without restart */
            assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
            continue;
        }
        if (mode == 2) { /* crash after a persisted prefix */
            assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
            size_t kept = f->cap.nlog;
            size_t lost = i + 1 + (size_t)rnd(&s, 200);
            for (size_t j = i; j < lost && j < n; j++)
                feed_g(f, g, j);
            engage_task_close(f->t); /* unpersisted changes are discarded */
            f->t = NULL;
            task_open(f);
            cap_truncate_log(&f->cap, kept); /* the downstream aborted them too */
        } else {
            if (mode == 1) /* an extra persist without restart changes nothing */
                assert_int_equal(engage_task_persist(f->t, err, sizeof(err)),
                                 ENGAGE_ERR_OK);
            task_restart(f);
        }
        restarts++;
        assert_int_equal(engage_task_next_offset(f->t), (int64_t)i);
        size_t nlog = f->cap.nlog;
        for (size_t j = i > 100 ? i - 100 : 0; j < i; j++)
            feed_g(f, g, j); /* re-delivered: ignored */
        assert_int_equal(f->cap.nlog, nlog);
    }
    assert_true(restarts >= 3);
    task_restart(f);
    finish(f);
    task_restart(f);
    finish(f); /* finished state survives; nothing more */

    assert_int_equal(f->cap.nlog, ref.nlog);
    for (size_t k = 0; k < ref.nlog; k++)
        if (strcmp(f->cap.log[k], ref.log[k]) != 0)
            fail_msg("seed %" PRIu64 ": output %zu differs:\n split:   %s\n unsplit: %s", seed,
                     k, f->cap.log[k], ref.log[k]);

    cap_free(&ref);
    cap_free(&f->cap);
    for (size_t k = 0; k < n; k++)
        free(g[k].val);
    free(g);
    free(o);
    engage_task_close(f->t);
    f->t = NULL;
    assert_int_equal(engage_state_destroy_dir(f->path, err, sizeof(err)), ENGAGE_ERR_OK);
    task_open(f);
}

static void test_restart_property(void **state) {
    fx_t *f = *state;
    static const uint64_t seeds[] = {1, 42, 20240101, 0xfeedface};
    for (size_t k = 0; k < sizeof(seeds) / sizeof(seeds[0]); k++)
        restart_run(f, seeds[k], 3000);
}


/* ---- dictionary entries: written when they change, deleted on expiry --- */

typedef struct mirror_log {
    int u_puts, u_deletes, b_deletes;
    char last_u[64];
    unsigned char last_val[16];
    size_t last_vlen;
} mirror_log_t;

static int mirror_cb(void *opaque, const void *key, size_t klen, const void *val, size_t vlen) {
    mirror_log_t *m = opaque;
    const char *k = key;
    if (klen && k[0] == 'u') {
        if (val) {
            m->u_puts++;
            snprintf(m->last_u, sizeof(m->last_u), "%.*s", (int)klen - 1, k + 1);
            assert_true(vlen <= sizeof(m->last_val));
            memcpy(m->last_val, val, vlen);
            m->last_vlen = vlen;
        } else {
            m->u_deletes++;
        }
    } else if (klen && k[0] == 'b' && !val) {
        m->b_deletes++;
    }
    return 0;
}

static void test_dict_entries_when_changed(void **state) {
    fx_t *f = *state;
    char err[512] = "";
    mirror_log_t m;
    memset(&m, 0, sizeof(m));
    engage_task_close(f->t); /* reopen with the shortest retention allowed */
    f->conf.retention_margin_days = 1;
    f->conf.user_retention_days = 32;
    task_open(f);
    engage_state_set_mirror(engage_task_store(f->t), mirror_cb, &m);
    feed(f, "a", "1", NOON(0));
    feed(f, "b", "2", NOON(0));
    assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
    assert_int_equal(m.u_puts, 2); /* two new users */
    assert_int_equal(m.last_vlen, 8); /* ordinal, last day */
    feed(f, "a", "3", NOON(0) + MIN_MS);
    feed(f, "b", "4", NOON(0) + 2 * MIN_MS);
    assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
    assert_int_equal(m.u_puts, 2); /* same day: nothing changed */
    feed(f, "a", "5", NOON(1));
    assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
    assert_int_equal(m.u_puts, 2); /* a's last day moved: day 1's record says so */
    uint32_t ord_b = UINT32_MAX;
    {
        void *v = NULL;
        size_t vl = 0;
        assert_int_equal(engage_state_get(engage_task_store(f->t), "ub", 2, &v, &vl, err,
                                          sizeof(err)),
                         ENGAGE_ERR_OK);
        assert_int_equal(vl, 8);
        ord_b = engage_get_u32(v);
        free(v);
    }
    /* a stays active; b (last day 0) expires once day 33 is final, since
     * 0 < 33 - 32, along with the day bitmaps older than 33 - 31 */
    for (int d = 2; d <= 33; d++)
        feed(f, "a", "x", NOON(d) + d); /* new ids each day: distinct events */
    assert_int_equal(m.u_deletes, 0);
    feed(f, "a", "y", NOON(34)); /* day 33 final */
    engage_task_stats_t st;
    engage_task_get_stats(f->t, &st);
    assert_int_equal(st.users_expired, 1);
    int puts_before = m.u_puts;
    assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
    assert_int_equal(m.u_deletes, 1); /* a tombstone for the changelog too */
    /* days 0 and 1 leave the store: b, whose last day is 0, is gone; a's
     * last day is 34, held by the day records */
    assert_int_equal(m.u_puts, puts_before);
    assert_true(m.b_deletes >= 2);            /* days 0 and 1 */
    void *v = NULL;
    size_t vl = 0;
    assert_int_equal(engage_state_get(engage_task_store(f->t), "ub", 2, &v, &vl, err,
                                      sizeof(err)),
                     ENGAGE_ERR_NOT_FOUND);
    /* b comes back: the freed ordinal, a new entry */
    feed(f, "b", "z", NOON(34) + MIN_MS);
    assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
    assert_string_equal(m.last_u, "b");
    assert_int_equal(engage_get_u32(m.last_val), ord_b);
    assert_int_equal(engage_get_u32(m.last_val + 4), (uint32_t)(D0 + 34));
    engage_task_memstats_t ms;
    engage_task_get_memstats(f->t, &ms);
    assert_int_equal(ms.users, 2);
    assert_int_equal(ms.ordinal_limit, 2);
    assert_int_equal(ms.min_day, D0 + 33 - 31);
    engage_state_set_mirror(engage_task_store(f->t), NULL, NULL);
    finish(f);
}

/* ---- last days: exact after a restart, written once per inactivity ----- */

/* Feeds a every day 0..ndays-1 and b on days 0..2, persisting after every
 * day; with restart, also reopens. Returns the first day after whose
 * persist b's entry is gone (expired), counting "u" writes in *m. */
static int expiry_day(fx_t *f, int ndays, int restart, mirror_log_t *m) {
    char err[512] = "";
    engage_task_close(f->t);
    f->t = NULL;
    assert_int_equal(engage_state_destroy_dir(f->path, err, sizeof(err)), ENGAGE_ERR_OK);
    /* day records are kept 32 days, users 40: b's last day leaves the
     * records 8 days before b expires */
    f->conf.retention_margin_days = 1;
    f->conf.user_retention_days = 40;
    task_open(f);
    int day = -1;
    for (int d = 0; d < ndays && day < 0; d++) {
        char eid[32];
        snprintf(eid, sizeof(eid), "a%d", d);
        feed(f, "a", eid, NOON(d));
        if (d <= 2) {
            snprintf(eid, sizeof(eid), "b%d", d);
            feed(f, "b", eid, NOON(d) + MIN_MS);
        }
        engage_state_set_mirror(engage_task_store(f->t), mirror_cb, m);
        assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
        engage_state_set_mirror(engage_task_store(f->t), NULL, NULL);
        if (restart)
            task_restart(f);
        void *v = NULL;
        size_t vl = 0;
        engage_err_t e =
            engage_state_get(engage_task_store(f->t), "ub", 2, &v, &vl, err, sizeof(err));
        free(v);
        if (e == ENGAGE_ERR_NOT_FOUND)
            day = d;
        else
            assert_int_equal(e, ENGAGE_ERR_OK);
    }
    return day;
}

static void test_last_day_exact_after_restarts(void **state) {
    fx_t *f = *state;
    mirror_log_t ref, rs;
    memset(&ref, 0, sizeof(ref));
    memset(&rs, 0, sizeof(rs));
    int d_ref = expiry_day(f, 70, 0, &ref);
    int d_rs = expiry_day(f, 70, 1, &rs);
    print_message("expiry day %d / %d, b puts %d last %s\n", d_ref, d_rs, rs.u_puts, rs.last_u);
    /* b's last day is 2: it expires when day 2 + 40 + 1 = 43 is final,
     * i.e. after the first event of day 44 */
    assert_int_equal(d_ref, 44);
    assert_int_equal(d_rs, d_ref); /* its last day survived every reopen */
    /* two new users, then b once: when day 2 left the store (a's last day
     * is always the newest day, never a dropped one) */
    assert_int_equal(rs.u_puts, 3);
    assert_string_equal(rs.last_u, "b");
    assert_int_equal(engage_get_u32(rs.last_val + 4), (uint32_t)(D0 + 2));
    assert_int_equal(rs.u_deletes, 1);
    finish(f);
}

/* ---- open-session entries: written for open sessions only ------------- */

typedef struct open_log {
    int puts[8], deletes[8]; /* by ordinal */
} open_log_t;

static int open_mirror_cb(void *opaque, const void *key, size_t klen, const void *val,
                          size_t vlen) {
    open_log_t *m = opaque;
    const unsigned char *k = key;
    (void)vlen;
    if (klen == 5 && k[0] == 'o') {
        uint32_t o = (uint32_t)k[1] << 24 | (uint32_t)k[2] << 16 | (uint32_t)k[3] << 8 | k[4];
        assert_true(o < 8);
        if (val)
            m->puts[o]++;
        else
            m->deletes[o]++;
    }
    return 0;
}

static void test_open_entries_only_when_needed(void **state) {
    fx_t *f = *state;
    char err[512] = "";
    open_log_t m;
    memset(&m, 0, sizeof(m));
    engage_state_set_mirror(engage_task_store(f->t), open_mirror_cb, &m);
    feed(f, "a", "1", NOON(0)); /* ordinal 0, open at the checkpoint */
    assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
    assert_int_equal(m.puts[0], 1);
    /* b (1) opens and closes between two checkpoints: no entry, no
     * tombstone; a's session closes: its entry is deleted; c (2) is open */
    feed(f, "b", "2", NOON(0) + MIN_MS);
    feed(f, "c", "3", NOON(0) + 180 * MIN_MS);
    assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
    assert_int_equal(m.deletes[0], 1);
    assert_int_equal(m.puts[1] + m.deletes[1], 0);
    assert_int_equal(m.puts[2], 1);
    /* after a restart the entries found in the store are known: c's session
     * closing deletes its entry; d (3) opens and closes unseen */
    engage_state_set_mirror(engage_task_store(f->t), NULL, NULL);
    engage_task_close(f->t);
    task_open(f);
    engage_state_set_mirror(engage_task_store(f->t), open_mirror_cb, &m);
    feed(f, "d", "4", NOON(0) + 181 * MIN_MS);
    feed(f, "a", "5", NOON(0) + 400 * MIN_MS);
    assert_int_equal(engage_task_persist(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
    assert_int_equal(m.deletes[2], 1);
    assert_int_equal(m.puts[3] + m.deletes[3], 0);
    assert_int_equal(m.puts[0], 2); /* a is open again */
    assert_int_equal(m.deletes[0], 1);
    engage_state_set_mirror(engage_task_store(f->t), NULL, NULL);
    finish(f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_dead_letters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_boundary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gap_edges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_ids, setup, teardown),
        cmocka_unit_test_setup_teardown(test_midnight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_out_of_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partials_by_hand, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offsets_and_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_meta, setup, teardown),
        cmocka_unit_test_setup_teardown(test_emit_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_property, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dict_entries_when_changed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_entries_only_when_needed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_last_day_exact_after_restarts, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
