/* test_aggregator.c - unit tests for src/aggregator.c (DayPartials ->
 * DailyMetrics), with a real RocksDB store in a temp directory. */
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

#include "aggregator.h"
#include "codec.h"
#include "state.h"
#include "task.h"

/* ---- capture ----------------------------------------------------------- */

typedef struct cap {
    engage_daily_rec_t *r;
    size_t n, cap;
    char **log;
    size_t nlog, caplog;
    int fail;
} cap_t;

static int cb_daily(void *opaque, const engage_daily_rec_t *r) {
    cap_t *c = opaque;
    if (c->fail)
        return 1;
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 64;
        c->r = realloc(c->r, c->cap * sizeof(*c->r));
        assert_non_null(c->r);
    }
    c->r[c->n++] = *r;
    if (c->nlog == c->caplog) {
        c->caplog = c->caplog ? c->caplog * 2 : 64;
        c->log = realloc(c->log, c->caplog * sizeof(*c->log));
        assert_non_null(c->log);
    }
    char line[256];
    snprintf(line, sizeof(line),
             "%d %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %.17g %.17g %d",
             r->day, r->dau, r->wau, r->mau, r->sessions, r->session_users, r->avg_duration_ms,
             r->actions_per_session, r->has_iqr);
    c->log[c->nlog] = strdup(line);
    assert_non_null(c->log[c->nlog]);
    c->nlog++;
    return 0;
}

static void cap_truncate(cap_t *c, size_t n) {
    while (c->nlog > n)
        free(c->log[--c->nlog]);
    if (c->n > n)
        c->n = n;
}

static void cap_free(cap_t *c) {
    cap_truncate(c, 0);
    free(c->log);
    free(c->r);
    memset(c, 0, sizeof(*c));
}

/* ---- fixture ------------------------------------------------------------- */

typedef struct fx {
    char dir[64];
    char path[128];
    engage_aggregator_t *a;
    cap_t cap;
    int64_t off;
} fx_t;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static void agg_open(fx_t *f) {
    char err[512] = "";
    f->a = engage_aggregator_open(f->path, cb_daily, &f->cap, err, sizeof(err));
    if (!f->a)
        fail_msg("engage_aggregator_open: %s", err);
}

static void agg_restart(fx_t *f) {
    char err[512] = "";
    assert_int_equal(engage_aggregator_persist(f->a, err, sizeof(err)), ENGAGE_ERR_OK);
    engage_aggregator_close(f->a);
    f->a = NULL;
    agg_open(f);
}

static void agg_fresh(fx_t *f) {
    char err[512] = "";
    engage_aggregator_close(f->a);
    f->a = NULL;
    assert_int_equal(engage_state_destroy_dir(f->path, err, sizeof(err)), ENGAGE_ERR_OK);
    cap_free(&f->cap);
    f->off = 0;
    agg_open(f);
}

static int setup(void **state) {
    fx_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/engage-test-agg-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/agg", f->dir);
    agg_open(f);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx_t *f = *state;
    engage_aggregator_close(f->a);
    cap_free(&f->cap);
    nftw(f->dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static engage_partial_rec_t P(int32_t day, int32_t part, int32_t count, int64_t dau, int64_t wau,
                              int64_t mau, int64_t sessions, int64_t susers, int64_t dur,
                              int64_t act, int32_t maxday) {
    engage_partial_rec_t p;
    memset(&p, 0, sizeof(p));
    p.day = day;
    p.partition = part;
    p.partition_count = count;
    p.dau = dau;
    p.wau = wau;
    p.mau = mau;
    p.sessions = sessions;
    p.session_users = susers;
    p.sum_duration_ms = dur;
    p.sum_actions = act;
    p.max_event_day = maxday;
    return p;
}

static engage_partial_rec_t END(int32_t part, int32_t count, int32_t maxday) {
    engage_partial_rec_t p;
    memset(&p, 0, sizeof(p));
    p.day = 12345; /* ignored for end markers */
    p.partition = part;
    p.partition_count = count;
    p.max_event_day = maxday;
    p.is_end = 1;
    return p;
}

static engage_err_t add_at(fx_t *f, engage_partial_rec_t p, int64_t off) {
    char err[512] = "";
    engage_err_t e = engage_aggregator_add(f->a, &p, off, err, sizeof(err));
    if (e != ENGAGE_ERR_OK)
        assert_true(err[0] != '\0');
    return e;
}

static void add(fx_t *f, engage_partial_rec_t p) {
    assert_int_equal(add_at(f, p, f->off++), ENGAGE_ERR_OK);
}

static void assert_daily(const engage_daily_rec_t *r, int32_t day, int64_t dau, int64_t wau,
                         int64_t mau, int64_t sessions, int64_t susers, int64_t sum_dur,
                         int64_t sum_act) {
    assert_int_equal(r->day, day);
    assert_int_equal(r->dau, dau);
    assert_int_equal(r->wau, wau);
    assert_int_equal(r->mau, mau);
    assert_int_equal(r->sessions, sessions);
    assert_int_equal(r->session_users, susers);
    double avg = sessions ? (double)sum_dur / (double)sessions : 0.0;
    double aps = sessions ? (double)sum_act / (double)sessions : 0.0;
    if (r->avg_duration_ms != avg || r->actions_per_session != aps)
        fail_msg("day %d: avg %.17g / aps %.17g, expected %.17g / %.17g", day,
                 r->avg_duration_ms, r->actions_per_session, avg, aps);
    assert_int_equal(r->has_iqr, 0);
}

/* ---- tests ---------------------------------------------------------------- */

static void test_three_partitions(void **state) {
    fx_t *f = *state;
    assert_int_equal(engage_aggregator_next_offset(f->a), -1);
    assert_int_equal(engage_aggregator_emitted_through(f->a), INT32_MIN);
    assert_int_equal(engage_aggregator_done(f->a), 0);

    add(f, P(100, 0, 3, 3, 5, 8, 4, 3, 4000, 10, 101));
    add(f, P(100, 1, 3, 2, 2, 7, 2, 2, 1000, 3, 101));
    assert_int_equal(f->cap.n, 0); /* partition 2 not final through 100 */
    add(f, P(100, 2, 3, 1, 4, 4, 1, 1, 500, 2, 101));
    assert_int_equal(f->cap.n, 1);
    /* 5500 ms over 7 sessions, 15 actions over 7 sessions */
    assert_daily(&f->cap.r[0], 100, 6, 11, 19, 7, 6, 5500, 15);
    assert_true(f->cap.r[0].avg_duration_ms > 785.714 && f->cap.r[0].avg_duration_ms < 785.715);
    assert_int_equal(engage_aggregator_emitted_through(f->a), 100);

    add(f, P(101, 0, 3, 1, 5, 8, 0, 0, 0, 0, 101));
    add(f, P(101, 1, 3, 0, 2, 7, 0, 0, 0, 0, 101));
    assert_int_equal(f->cap.n, 1);
    /* partition 2 ends without a partial for 101: it contributes zeros */
    add(f, END(2, 3, 101));
    assert_int_equal(f->cap.n, 2);
    assert_daily(&f->cap.r[1], 101, 1, 7, 15, 0, 0, 0, 0);
    assert_true(f->cap.r[1].avg_duration_ms == 0.0 && f->cap.r[1].actions_per_session == 0.0);
    assert_int_equal(engage_aggregator_done(f->a), 0);

    /* partials past the last event day (the tasks send through +29) are
     * not emitted */
    add(f, P(102, 0, 3, 0, 1, 8, 0, 0, 0, 0, 101));
    add(f, END(1, 3, 101));
    assert_int_equal(engage_aggregator_done(f->a), 0);
    add(f, END(0, 3, 101));
    assert_int_equal(f->cap.n, 2);
    assert_int_equal(engage_aggregator_done(f->a), 1);
    assert_int_equal(engage_aggregator_emitted_through(f->a), 101);
    assert_int_equal(engage_aggregator_next_offset(f->a), 9);
}

static void test_missing_early_days(void **state) {
    fx_t *f = *state;
    /* partition 1's first day is 7 and it speaks first; partition 0 starts
     * at day 5: output starts at 5, with zeros from partition 1 */
    add(f, P(7, 1, 2, 4, 4, 4, 2, 2, 300, 5, 7));
    assert_int_equal(f->cap.n, 0);
    add(f, P(5, 0, 2, 2, 2, 2, 1, 1, 100, 1, 7));
    assert_int_equal(f->cap.n, 1);
    assert_daily(&f->cap.r[0], 5, 2, 2, 2, 1, 1, 100, 1);
    add(f, P(6, 0, 2, 0, 2, 2, 0, 0, 0, 0, 7));
    assert_int_equal(f->cap.n, 2);
    assert_daily(&f->cap.r[1], 6, 0, 2, 2, 0, 0, 0, 0);
    add(f, P(7, 0, 2, 1, 3, 3, 1, 1, 60, 3, 7));
    assert_int_equal(f->cap.n, 3);
    assert_daily(&f->cap.r[2], 7, 5, 7, 7, 3, 3, 360, 8);
    add(f, END(0, 2, 7));
    add(f, END(1, 2, 7));
    assert_int_equal(f->cap.n, 3);
    assert_int_equal(engage_aggregator_done(f->a), 1);
}

static void test_resent_partial(void **state) {
    fx_t *f = *state;
    engage_partial_rec_t p0 = P(10, 0, 2, 3, 3, 3, 2, 2, 1000, 4, 10);
    assert_int_equal(add_at(f, p0, 0), ENGAGE_ERR_OK);
    /* re-sent after a producer crash, at a new offset: overwrites */
    assert_int_equal(add_at(f, p0, 1), ENGAGE_ERR_OK);
    /* offsets below the next offset are ignored, whatever they carry */
    engage_partial_rec_t bogus = P(10, 0, 2, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 10);
    assert_int_equal(add_at(f, bogus, 0), ENGAGE_ERR_OK);
    assert_int_equal(add_at(f, bogus, 1), ENGAGE_ERR_OK);
    assert_int_equal(engage_aggregator_next_offset(f->a), 2);
    /* a re-sent partial survives a restart as one slot, not two */
    agg_restart(f);
    assert_int_equal(add_at(f, P(10, 1, 2, 1, 1, 1, 1, 1, 500, 2, 10), 2), ENGAGE_ERR_OK);
    assert_int_equal(f->cap.n, 1);
    assert_daily(&f->cap.r[0], 10, 4, 4, 4, 3, 3, 1500, 6);
    /* re-sent after its day went out: ignored, nothing emitted again */
    assert_int_equal(add_at(f, p0, 3), ENGAGE_ERR_OK);
    assert_int_equal(add_at(f, P(10, 1, 2, 1, 1, 1, 1, 1, 500, 2, 10), 4), ENGAGE_ERR_OK);
    agg_restart(f);
    assert_int_equal(add_at(f, p0, 5), ENGAGE_ERR_OK);
    assert_int_equal(add_at(f, p0, 6), ENGAGE_ERR_OK);
    assert_int_equal(f->cap.n, 1);
    assert_int_equal(add_at(f, END(0, 2, 10), 7), ENGAGE_ERR_OK);
    assert_int_equal(add_at(f, END(1, 2, 10), 8), ENGAGE_ERR_OK);
    assert_int_equal(add_at(f, END(1, 2, 10), 9), ENGAGE_ERR_OK); /* end re-sent */
    assert_int_equal(f->cap.n, 1);
    assert_int_equal(engage_aggregator_done(f->a), 1);
}

static void test_bad_partition(void **state) {
    fx_t *f = *state;
    /* a first partial with no partition count */
    assert_int_equal(add_at(f, P(1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 1), 0), ENGAGE_ERR_CORRUPT);
    assert_int_equal(add_at(f, P(1, 0, -2, 1, 1, 1, 0, 0, 0, 0, 1), 1), ENGAGE_ERR_CORRUPT);
    /* the count is fixed by the first good partial */
    assert_int_equal(add_at(f, P(1, 0, 2, 1, 1, 1, 0, 0, 0, 0, 1), 2), ENGAGE_ERR_OK);
    assert_int_equal(add_at(f, P(1, 2, 2, 1, 1, 1, 0, 0, 0, 0, 1), 3), ENGAGE_ERR_CORRUPT);
    assert_int_equal(add_at(f, P(1, -1, 2, 1, 1, 1, 0, 0, 0, 0, 1), 4), ENGAGE_ERR_CORRUPT);
    assert_int_equal(add_at(f, P(1, 1, 3, 1, 1, 1, 0, 0, 0, 0, 1), 5), ENGAGE_ERR_CORRUPT);
    assert_int_equal(add_at(f, END(5, 2, 1), 6), ENGAGE_ERR_CORRUPT);
    assert_int_equal(f->cap.n, 0);
    /* the rejected ones left no trace */
    assert_int_equal(add_at(f, P(1, 1, 2, 2, 2, 2, 0, 0, 0, 0, 1), 7), ENGAGE_ERR_OK);
    assert_int_equal(f->cap.n, 1);
    assert_daily(&f->cap.r[0], 1, 3, 3, 3, 0, 0, 0, 0);
    /* and the count is remembered across a restart */
    agg_restart(f);
    assert_int_equal(add_at(f, P(2, 1, 3, 1, 1, 1, 0, 0, 0, 0, 2), 8), ENGAGE_ERR_CORRUPT);
}

static void test_done_bounded(void **state) {
    fx_t *f = *state;
    char err[512];
    /* no data anywhere: done once every partition ended, nothing emitted */
    add(f, END(0, 2, INT32_MIN));
    assert_int_equal(engage_aggregator_done(f->a), 0);
    add(f, END(1, 2, INT32_MIN));
    assert_int_equal(engage_aggregator_done(f->a), 1);
    assert_int_equal(f->cap.n, 0);
    assert_int_equal(engage_aggregator_emitted_through(f->a), INT32_MIN);
    agg_restart(f);
    assert_int_equal(engage_aggregator_done(f->a), 1);

    /* a failing output: KAFKA, not done; after a restart from the last
     * persisted state the same input completes the run */
    agg_fresh(f);
    add(f, P(3, 0, 2, 1, 1, 1, 1, 1, 10, 1, 4));
    add(f, P(4, 0, 2, 1, 1, 1, 1, 1, 20, 1, 4));
    add(f, END(0, 2, 4));
    assert_int_equal(engage_aggregator_persist(f->a, err, sizeof(err)), ENGAGE_ERR_OK);
    f->cap.fail = 1;
    assert_int_equal(add_at(f, END(1, 2, 2), 3), ENGAGE_ERR_KAFKA);
    assert_int_equal(engage_aggregator_done(f->a), 0);
    engage_aggregator_close(f->a); /* not persisted */
    f->a = NULL;
    f->cap.fail = 0;
    agg_open(f);
    assert_int_equal(engage_aggregator_next_offset(f->a), 3);
    assert_int_equal(engage_aggregator_done(f->a), 0);
    assert_int_equal(add_at(f, END(1, 2, 2), 3), ENGAGE_ERR_OK);
    assert_int_equal(f->cap.n, 2);
    assert_daily(&f->cap.r[0], 3, 1, 1, 1, 1, 1, 10, 1);
    assert_daily(&f->cap.r[1], 4, 1, 1, 1, 1, 1, 20, 1);
    assert_int_equal(engage_aggregator_done(f->a), 1);

    /* set_next_offset moves forward only and is persisted */
    engage_aggregator_set_next_offset(f->a, 10);
    engage_aggregator_set_next_offset(f->a, 7);
    assert_int_equal(engage_aggregator_next_offset(f->a), 10);
    agg_restart(f);
    assert_int_equal(engage_aggregator_next_offset(f->a), 10);
    assert_int_equal(engage_aggregator_done(f->a), 1);
    assert_int_equal(engage_aggregator_emitted_through(f->a), 4);
}

static void test_corrupt_meta(void **state) {
    fx_t *f = *state;
    char err[512] = "";
    add(f, P(1, 0, 2, 1, 1, 1, 0, 0, 0, 0, 1));
    agg_restart(f);
    engage_aggregator_close(f->a);
    f->a = NULL;
    engage_state_t *st = engage_state_open(f->path, err, sizeof(err));
    assert_non_null(st);
    engage_state_put(st, "m", 1, "garbage", 7);
    assert_int_equal(engage_state_commit(st, err, sizeof(err)), ENGAGE_ERR_OK);
    engage_state_close(st);
    err[0] = '\0';
    assert_null(engage_aggregator_open(f->path, cb_daily, &f->cap, err, sizeof(err)));
    assert_true(err[0] != '\0');
    agg_fresh(f);
}

/* ---- persistence: a generated stream, split everywhere ------------------ */

#define NP 3
#define FIRST 100
#define LAST 112 /* last event day */

typedef struct stream {
    engage_partial_rec_t *v;
    size_t n;
} stream_t;

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Partition p has data from day FIRST+2p and sends partials through
 * LAST+29 (as the tasks do), then its end marker; the partitions'
 * streams are interleaved at random, with some partials sent twice. The
 * expected daily sums are accumulated in want[]. */
static void make_stream(uint64_t seed, stream_t *s, engage_daily_rec_t *want, int64_t *dur,
                        int64_t *act) {
    engage_partial_rec_t per[NP][64];
    size_t n[NP] = {0}, pos[NP] = {0};
    uint64_t r = seed;
    memset(want, 0, (LAST - FIRST + 1) * sizeof(*want));
    memset(dur, 0, (LAST - FIRST + 1) * sizeof(*dur));
    memset(act, 0, (LAST - FIRST + 1) * sizeof(*act));
    for (int p = 0; p < NP; p++) {
        for (int32_t d = FIRST + 2 * p; d <= LAST + 29; d++) {
            int64_t dau = (int64_t)(rng_next(&r) % 50), ses = (int64_t)(rng_next(&r) % 20);
            engage_partial_rec_t x =
                P(d, p, NP, dau, dau + 7, dau + 30, ses, ses / 2, ses * 1000 + 7, ses * 3 + 1,
                  d < LAST ? d + 1 : LAST);
            per[p][n[p]++] = x;
            if (d <= LAST) {
                engage_daily_rec_t *w = &want[d - FIRST];
                w->day = d;
                w->dau += x.dau;
                w->wau += x.wau;
                w->mau += x.mau;
                w->sessions += x.sessions;
                w->session_users += x.session_users;
                dur[d - FIRST] += x.sum_duration_ms;
                act[d - FIRST] += x.sum_actions;
            }
        }
        per[p][n[p]++] = END(p, NP, LAST);
    }
    for (int32_t d = FIRST; d <= LAST; d++)
        want[d - FIRST].day = d;
    s->v = calloc(3 * NP * 64, sizeof(*s->v));
    assert_non_null(s->v);
    s->n = 0;
    for (;;) {
        int left = 0;
        for (int p = 0; p < NP; p++)
            left += pos[p] < n[p];
        if (!left)
            break;
        int p = (int)(rng_next(&r) % NP);
        if (pos[p] == n[p])
            continue;
        s->v[s->n++] = per[p][pos[p]];
        if (rng_next(&r) % 8 == 0) /* re-sent (a producer retry) */
            s->v[s->n++] = per[p][pos[p]];
        pos[p]++;
    }
}

static void test_persist_reopen(void **state) {
    fx_t *f = *state;
    char err[512];
    engage_daily_rec_t want[LAST - FIRST + 1];
    int64_t dur[LAST - FIRST + 1], act[LAST - FIRST + 1];
    stream_t s;

    for (uint64_t seed = 1; seed <= 3; seed++) {
        make_stream(seed, &s, want, dur, act);
        /* reference: one go */
        agg_fresh(f);
        for (size_t i = 0; i < s.n; i++)
            add(f, s.v[i]);
        assert_int_equal(f->cap.n, LAST - FIRST + 1);
        for (int32_t d = FIRST; d <= LAST; d++) {
            const engage_daily_rec_t *w = &want[d - FIRST];
            assert_daily(&f->cap.r[d - FIRST], d, w->dau, w->wau, w->mau, w->sessions,
                         w->session_users, dur[d - FIRST], act[d - FIRST]);
        }
        assert_int_equal(engage_aggregator_done(f->a), 1);
        cap_t ref = f->cap;
        memset(&f->cap, 0, sizeof(f->cap));

        /* split at every point: persist, close, reopen (and re-deliver the
         * previous few records, which must be ignored); every third split is
         * a crash that loses a few unpersisted records and replays them
         * (RocksDB opens dominate the run time, hence the sampling) */
        size_t step = seed == 1 ? 2 : 11; /* dense, then sparse samples */
        for (size_t k = seed - 1; k <= s.n; k += step) {
            agg_fresh(f);
            for (size_t i = 0; i < k; i++)
                add(f, s.v[i]);
            assert_int_equal(engage_aggregator_persist(f->a, err, sizeof(err)), ENGAGE_ERR_OK);
            size_t kept = f->cap.nlog;
            if (k % 3 == 2) {
                for (size_t i = k; i < k + 5 && i < s.n; i++)
                    add(f, s.v[i]);
                engage_aggregator_close(f->a);
                f->a = NULL;
                agg_open(f);
                cap_truncate(&f->cap, kept);
                f->off = (int64_t)k;
            } else {
                agg_restart(f);
            }
            assert_int_equal(engage_aggregator_next_offset(f->a), k ? (int64_t)k : -1);
            for (size_t i = k >= 4 ? k - 4 : 0; i < k; i++)
                assert_int_equal(add_at(f, s.v[i], (int64_t)i), ENGAGE_ERR_OK);
            assert_int_equal(f->cap.nlog, kept);
            for (size_t i = k; i < s.n; i++)
                add(f, s.v[i]);
            assert_int_equal(engage_aggregator_done(f->a), 1);
            assert_int_equal(f->cap.nlog, ref.nlog);
            for (size_t i = 0; i < ref.nlog; i++)
                if (strcmp(f->cap.log[i], ref.log[i]) != 0)
                    fail_msg("seed %" PRIu64 " split %zu: output %zu: %s, expected %s", seed,
                             k, i, f->cap.log[i], ref.log[i]);
        }
        cap_free(&ref);
        free(s.v);
    }
}

/* ---- end to end: real tasks feeding the aggregator ---------------------- */

typedef struct pipe {
    fx_t *f;
    int64_t off; /* offset on the (simulated) partials topic */
} pipe_t;

static int pipe_partial(void *opaque, const engage_partial_rec_t *r) {
    pipe_t *pp = opaque;
    char err[512] = "";
    engage_err_t e = engage_aggregator_add(pp->f->a, r, pp->off++, err, sizeof(err));
    if (e)
        fail_msg("aggregator_add: %s", err);
    return 0;
}

#define NTASKS 4
#define DAY0 19723
#define NOON(d) (((int64_t)DAY0 + (d)) * 86400000LL + 43200000LL)

static void task_feed(engage_task_t *t, engage_decoder_t *dec, const char *user, const char *eid,
                      int64_t ts, int64_t off) {
    char json[256], err[512] = "";
    void *v;
    size_t vl;
    snprintf(json, sizeof(json),
             "{\"event_id\":\"%s\",\"user_id\":\"%s\",\"timestamp\":%" PRId64
             ",\"action\":\"view\"}",
             eid, user, ts);
    if (engage_codec_encode_action_json(dec, 1, 1, json, &v, &vl, err, sizeof(err)))
        fail_msg("encode: %s", err);
    engage_input_rec_t r = {.key = user,
                            .key_len = strlen(user),
                            .value = v,
                            .value_len = vl,
                            .offset = off,
                            .kafka_ts = ts};
    assert_int_equal(engage_task_process(t, &r, err, sizeof(err)), ENGAGE_ERR_OK);
    free(v);
}

/* Four partitions (the last one empty), users a | b | c, d:
 *   day 0: a, c, d   day 1: b (two events, 10 min apart)   day 2: a
 * Per-partition WAU/MAU add up to the global ones because partitions hold
 * disjoint users. */
static void test_from_tasks(void **state) {
    fx_t *f = *state;
    char err[512] = "", path[200];
    pipe_t pp = {f, 0};
    engage_decoder_t *dec =
        engage_decoder_new(1, "1=schemas/user_action.avsc", NULL, err, sizeof(err));
    if (!dec)
        fail_msg("decoder: %s", err);
    engage_task_conf_t conf = {.gap_ms = 30 * 60000LL,
                               .grace_ms = 5 * 60000LL,
                               .max_skew_ms = 3600000LL,
                               .min_timestamp_ms = 1262304000000LL,
                               .max_user_id_bytes = 256,
                               .partition_count = NTASKS};
    engage_emit_t emit = {.opaque = &pp, .partial = pipe_partial};
    engage_task_t *t[NTASKS];
    for (int i = 0; i < NTASKS; i++) {
        snprintf(path, sizeof(path), "%s/task%d", f->dir, i);
        t[i] = engage_task_open(i, path, &conf, dec, &emit, err, sizeof(err));
        if (!t[i])
            fail_msg("task_open: %s", err);
    }
    task_feed(t[0], dec, "a", "1", NOON(0), 0);
    task_feed(t[2], dec, "c", "2", NOON(0), 0);
    task_feed(t[2], dec, "d", "3", NOON(0), 1);
    task_feed(t[1], dec, "b", "4", NOON(1), 0);
    task_feed(t[1], dec, "b", "5", NOON(1) + 600000, 1);
    task_feed(t[0], dec, "a", "6", NOON(2), 1);
    /* partition 2 is not final through day 0 yet, partition 3 never spoke */
    assert_int_equal(f->cap.n, 0);
    for (int i = 0; i < NTASKS; i++) {
        assert_int_equal(engage_task_finish(t[i], err, sizeof(err)), ENGAGE_ERR_OK);
        assert_int_equal(engage_aggregator_done(f->a), i == NTASKS - 1);
    }
    assert_int_equal(f->cap.n, 3);
    assert_daily(&f->cap.r[0], DAY0, 3, 3, 3, 3, 3, 0, 3);
    assert_daily(&f->cap.r[1], DAY0 + 1, 1, 4, 4, 1, 1, 600000, 2);
    assert_daily(&f->cap.r[2], DAY0 + 2, 1, 4, 4, 1, 1, 0, 1);
    for (int i = 0; i < NTASKS; i++)
        engage_task_close(t[i]);
    engage_decoder_destroy(dec);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_three_partitions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_early_days, setup, teardown),
        cmocka_unit_test_setup_teardown(test_resent_partial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_partition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_done_bounded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_meta, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persist_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_from_tasks, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
