/* test_retention.c - bounded state of a task (src/task.c, src/dict.c):
 * old day bitmaps and long-inactive users leave memory, the store and (by
 * the same deletes) the changelog, while every metric stays exact.
 *
 * Kafka-free: a real task with a real RocksDB store in a temp directory,
 * fed through engage_task_process() with a capturing emit. Every emitted
 * partial is compared with a brute-force set computation over the generated
 * events, every emitted session with gap splits of each user's events, and
 * a run with restarts (persist, close, reopen; and a crash that loses an
 * unpersisted stretch) must emit exactly what a run without them emits.
 *
 * The churn test prints the state size at day marks (run the binary to see
 * it): live keys by prefix (exact) and engage_state_disk_size() (RocksDB
 * compacts lazily, so disk bytes lag behind deletes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <dirent.h>
#include <ftw.h>
#include <inttypes.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aggregator.h"
#include "buf.h"
#include "codec.h"
#include "state.h"
#include "task.h"
#include "timeutil.h"

#define MIN_MS (60 * 1000LL)
#define GAP (30 * MIN_MS)
#define GRACE (5 * MIN_MS)
#define D0 19723 /* 2024-01-01 */
#define DAYMS ENGAGE_MS_PER_DAY
#define T0 ((int64_t)D0 * DAYMS)

/* ---- generated input --------------------------------------------------- */

typedef struct ev {
    uint32_t user; /* index; the id is "u%06u" */
    int64_t ts;
    void *val; /* encoded UserAction */
    size_t val_len;
} ev_t;

typedef struct gen {
    ev_t *ev;
    size_t n, cap;
    uint32_t nusers; /* user indexes are below this */
    int32_t ndays;
    size_t *day_start; /* [ndays + 1]: index of the first event of each day */
} gen_t;

static void uid(char *buf, uint32_t u) { snprintf(buf, 16, "u%06u", u); }

static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static int64_t rnd(uint64_t *s, int64_t n) { return (int64_t)(rng_next(s) % (uint64_t)n); }

static int cmp_ev_ts(const void *a, const void *b) {
    const ev_t *x = a, *y = b;
    if (x->ts != y->ts)
        return x->ts < y->ts ? -1 : 1;
    return x->user < y->user ? -1 : x->user > y->user;
}

static void gen_push(gen_t *g, uint32_t user, int64_t ts) {
    if (g->n == g->cap) {
        g->cap = g->cap ? g->cap * 2 : 4096;
        g->ev = realloc(g->ev, g->cap * sizeof(*g->ev));
        assert_non_null(g->ev);
    }
    g->ev[g->n].user = user;
    g->ev[g->n].ts = ts;
    g->ev[g->n].val = NULL;
    g->n++;
    if (user + 1 > g->nusers)
        g->nusers = user + 1;
}

/* One session of 1..3 events a few minutes apart, between 01:00 and 23:00. */
static void gen_session(gen_t *g, uint64_t *s, uint32_t user, int32_t day) {
    int64_t t = T0 + (int64_t)day * DAYMS + 60 * MIN_MS + rnd(s, 22 * 60 * MIN_MS - 30 * MIN_MS);
    int k = 1 + (int)rnd(s, 3);
    for (int i = 0; i < k; i++) {
        gen_push(g, user, t);
        t += MIN_MS + rnd(s, 9 * MIN_MS);
    }
}

/* Sorts each day's events by time (so nothing is late) and encodes them. */
static void gen_finish(gen_t *g, engage_decoder_t *dec, int32_t ndays) {
    g->ndays = ndays;
    g->day_start = calloc((size_t)ndays + 1, sizeof(*g->day_start));
    assert_non_null(g->day_start);
    qsort(g->ev, g->n, sizeof(*g->ev), cmp_ev_ts);
    size_t i = 0;
    for (int32_t d = 0; d <= ndays; d++) {
        while (i < g->n && engage_day_of_ms(g->ev[i].ts) - D0 < d)
            i++;
        g->day_start[d] = i;
    }
    char json[256], id[16], err[512];
    for (size_t k = 0; k < g->n; k++) {
        uid(id, g->ev[k].user);
        snprintf(json, sizeof(json),
                 "{\"event_id\":\"e%zu\",\"user_id\":\"%s\",\"timestamp\":%" PRId64
                 ",\"action\":\"view\"}",
                 k, id, g->ev[k].ts);
        if (engage_codec_encode_action_json(dec, 1, 1, json, &g->ev[k].val, &g->ev[k].val_len,
                                            err, sizeof(err)))
            fail_msg("encode: %s", err);
    }
}

static void gen_free(gen_t *g) {
    for (size_t k = 0; k < g->n; k++)
        free(g->ev[k].val);
    free(g->ev);
    free(g->day_start);
    memset(g, 0, sizeof(*g));
}

/* The churn population: on day d the users about are [d*NEW, d*NEW+WIN),
 * ACTIVE of them act (one session each), so a user is around for WIN/NEW =
 * 30 days and then never again - except RET users a day who come back long
 * after their retention ran out. Users seen in total grow with the days;
 * users active in any 30 + R day stretch do not. */
#define NEW 20
#define WIN 600
#define ACTIVE 300
#define RET 2

static void gen_churn(gen_t *g, engage_decoder_t *dec, int32_t ndays, uint64_t seed) {
    uint64_t s = seed;
    uint32_t *pick = malloc(WIN * sizeof(*pick));
    assert_non_null(pick);
    for (int32_t d = 0; d < ndays; d++) {
        uint32_t base = (uint32_t)d * NEW;
        for (uint32_t i = 0; i < WIN; i++)
            pick[i] = base + i;
        for (uint32_t i = 0; i < ACTIVE; i++) { /* partial Fisher-Yates */
            uint32_t j = i + (uint32_t)rnd(&s, WIN - i);
            uint32_t t = pick[i];
            pick[i] = pick[j];
            pick[j] = t;
            gen_session(g, &s, pick[i], d);
        }
        if (base > 80 * NEW) /* returners: gone for 50+ days */
            for (int r = 0; r < RET; r++)
                gen_session(g, &s, (uint32_t)rnd(&s, base - 80 * NEW), d);
    }
    free(pick);
    gen_finish(g, dec, ndays);
}

/* ---- capture ------------------------------------------------------------- */

typedef struct sess {
    uint32_t user;
    int64_t start, end;
    int32_t actions, day;
} sess_t;

typedef struct cap {
    engage_partial_rec_t *p;
    size_t np, capp;
    sess_t *s;
    size_t ns, caps;
    char **log; /* every output as a line, in emission order */
    size_t nlog, caplog;
    int64_t other; /* dead letters and late records: must stay 0 */
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
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    GROW(c->log, c->nlog, c->caplog);
    c->log[c->nlog] = strdup(line);
    assert_non_null(c->log[c->nlog]);
    c->nlog++;
}

static void cap_truncate(cap_t *c, size_t nlog, size_t np, size_t ns) {
    while (c->nlog > nlog)
        free(c->log[--c->nlog]);
    c->np = np;
    c->ns = ns;
}

static void cap_free(cap_t *c) {
    cap_truncate(c, 0, 0, 0);
    free(c->log);
    free(c->p);
    free(c->s);
    memset(c, 0, sizeof(*c));
}

static int cb_session(void *opaque, const engage_session_rec_t *r) {
    cap_t *c = opaque;
    char id[16];
    unsigned u = 0;
    assert_true(r->user_id_len == 7 && r->user_id[0] == 'u');
    memcpy(id, r->user_id, 7);
    id[7] = '\0';
    assert_int_equal(sscanf(id + 1, "%u", &u), 1);
    GROW(c->s, c->ns, c->caps);
    c->s[c->ns++] = (sess_t){.user = u,
                             .start = r->start_ms,
                             .end = r->end_ms,
                             .actions = r->actions,
                             .day = r->day};
    cap_log(c, "S %s %s %" PRId64 " %" PRId64 " %d", r->session_id, id, r->start_ms,
            r->end_ms, r->actions);
    return 0;
}

static int cb_partial(void *opaque, const engage_partial_rec_t *r) {
    cap_t *c = opaque;
    GROW(c->p, c->np, c->capp);
    c->p[c->np++] = *r;
    cap_log(c,
            "P %d %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64 " %" PRId64
            " %" PRId64 " %d %d",
            r->day, r->dau, r->wau, r->mau, r->sessions, r->session_users, r->sum_duration_ms,
            r->sum_actions, r->max_event_day, r->is_end);
    return 0;
}

static int cb_dead(void *opaque, const engage_input_rec_t *rec, const char *reason,
                   const char *errmsg) {
    (void)rec;
    (void)reason;
    (void)errmsg;
    ((cap_t *)opaque)->other++;
    return 0;
}

static int cb_late(void *opaque, const engage_input_rec_t *rec, int64_t watermark) {
    (void)rec;
    (void)watermark;
    ((cap_t *)opaque)->other++;
    return 0;
}

/* ---- fixture ------------------------------------------------------------- */

typedef struct fx {
    char dir[64];
    char path[128];
    engage_decoder_t *dec;
    engage_task_conf_t conf;
    engage_emit_t emit;
    cap_t cap;
    engage_task_t *t;
} fx_t;

static int rm_cb(const char *p, const struct stat *sb, int flag, struct FTW *f) {
    (void)sb;
    (void)flag;
    (void)f;
    return remove(p);
}

static engage_task_t *try_open(fx_t *f, char *err, size_t errlen) {
    return engage_task_open(0, f->path, &f->conf, f->dec, &f->emit, err, errlen);
}

static void task_open(fx_t *f) {
    char err[512] = "";
    f->t = try_open(f, err, sizeof(err));
    if (!f->t)
        fail_msg("engage_task_open: %s", err);
}

static void persist(fx_t *f) {
    char err[512] = "";
    if (engage_task_persist(f->t, err, sizeof(err)))
        fail_msg("persist: %s", err);
}

static void task_restart(fx_t *f) {
    persist(f);
    engage_task_close(f->t);
    f->t = NULL;
    task_open(f);
}

/* Closes the task and deletes its store: the next run starts afresh. */
static void task_reset(fx_t *f) {
    char err[512] = "";
    engage_task_close(f->t);
    f->t = NULL;
    assert_int_equal(engage_state_destroy_dir(f->path, err, sizeof(err)), ENGAGE_ERR_OK);
    cap_free(&f->cap);
    task_open(f);
}

static int setup(void **state) {
    fx_t *f = calloc(1, sizeof(*f));
    char err[512] = "";
    assert_non_null(f);
    snprintf(f->dir, sizeof(f->dir), "/tmp/engage-test-ret-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/p0", f->dir);
    f->dec = engage_decoder_new(1, "1=schemas/user_action.avsc", NULL, err, sizeof(err));
    if (!f->dec)
        fail_msg("engage_decoder_new: %s", err);
    f->conf.gap_ms = GAP;
    f->conf.grace_ms = GRACE;
    f->conf.max_skew_ms = 60 * MIN_MS;
    f->conf.min_timestamp_ms = T0;
    f->conf.max_user_id_bytes = 256;
    f->conf.partition_count = 1;
    f->emit.opaque = &f->cap;
    f->emit.session = cb_session;
    f->emit.partial = cb_partial;
    f->emit.dead = cb_dead;
    f->emit.late = cb_late;
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

static void feed(fx_t *f, const gen_t *g, size_t i) {
    char err[512] = "";
    char id[16];
    uid(id, g->ev[i].user);
    engage_input_rec_t r = {.key = id,
                            .key_len = strlen(id),
                            .value = g->ev[i].val,
                            .value_len = g->ev[i].val_len,
                            .partition = 0,
                            .offset = (int64_t)i,
                            .kafka_ts = g->ev[i].ts};
    if (engage_task_process(f->t, &r, err, sizeof(err)))
        fail_msg("process offset %zu: %s", i, err);
}

static void finish(fx_t *f) {
    char err[512] = "";
    assert_int_equal(engage_task_finish(f->t, err, sizeof(err)), ENGAGE_ERR_OK);
}

/* ---- the brute-force oracle -------------------------------------------- */

typedef struct oracle {
    int32_t ndays; /* days 0 .. ndays - 1 relative to D0 */
    size_t words;  /* per day bitset of active users */
    uint64_t *active;
    int64_t *actions, *dur, *sessions, *susers;
    sess_t *s;
    size_t ns;
} oracle_t;

static int cmp_sess(const void *a, const void *b) {
    const sess_t *x = a, *y = b;
    if (x->user != y->user)
        return x->user < y->user ? -1 : 1;
    return x->start < y->start ? -1 : x->start > y->start;
}

static int cmp_ev_user(const void *a, const void *b) {
    const ev_t *x = a, *y = b;
    if (x->user != y->user)
        return x->user < y->user ? -1 : 1;
    return x->ts < y->ts ? -1 : x->ts > y->ts;
}

static void oracle_build(const gen_t *g, oracle_t *o) {
    memset(o, 0, sizeof(*o));
    o->ndays = g->ndays + 30; /* the tail a finished task emits */
    o->words = (g->nusers + 63) / 64;
    o->active = calloc((size_t)o->ndays * o->words, sizeof(uint64_t));
    o->actions = calloc((size_t)o->ndays, sizeof(int64_t));
    o->dur = calloc((size_t)o->ndays, sizeof(int64_t));
    o->sessions = calloc((size_t)o->ndays, sizeof(int64_t));
    o->susers = calloc((size_t)o->ndays, sizeof(int64_t));
    o->s = calloc(g->n, sizeof(sess_t));
    uint64_t *sbits = calloc((size_t)o->ndays * o->words, sizeof(uint64_t));
    ev_t *byu = malloc(g->n * sizeof(*byu));
    assert_true(o->active && o->actions && o->dur && o->sessions && o->susers && o->s && sbits &&
                byu);
    memcpy(byu, g->ev, g->n * sizeof(*byu));
    qsort(byu, g->n, sizeof(*byu), cmp_ev_user);
    for (size_t i = 0; i < g->n; i++) {
        int32_t d = engage_day_of_ms(byu[i].ts) - D0;
        o->active[(size_t)d * o->words + byu[i].user / 64] |= 1ull << (byu[i].user % 64);
    }
    for (size_t i = 0; i < g->n;) { /* sessions: gap splits per user */
        size_t j = i;
        while (j + 1 < g->n && byu[j + 1].user == byu[i].user && byu[j + 1].ts - byu[j].ts <= GAP)
            j++;
        int32_t d = engage_day_of_ms(byu[i].ts) - D0;
        o->s[o->ns++] = (sess_t){.user = byu[i].user,
                                 .start = byu[i].ts,
                                 .end = byu[j].ts,
                                 .actions = (int32_t)(j - i + 1),
                                 .day = d + D0};
        o->sessions[d]++;
        o->dur[d] += byu[j].ts - byu[i].ts;
        o->actions[d] += (int64_t)(j - i + 1);
        sbits[(size_t)d * o->words + byu[i].user / 64] |= 1ull << (byu[i].user % 64);
        i = j + 1;
    }
    for (int32_t d = 0; d < o->ndays; d++)
        for (size_t w = 0; w < o->words; w++)
            o->susers[d] += __builtin_popcountll(sbits[(size_t)d * o->words + w]);
    qsort(o->s, o->ns, sizeof(*o->s), cmp_sess);
    free(sbits);
    free(byu);
}

static void oracle_free(oracle_t *o) {
    free(o->active);
    free(o->actions);
    free(o->dur);
    free(o->sessions);
    free(o->susers);
    free(o->s);
}

/* distinct users active on days d-n+1 .. d (relative to D0) */
static int64_t window(const oracle_t *o, int32_t d, int n) {
    int64_t c = 0;
    for (size_t w = 0; w < o->words; w++) {
        uint64_t m = 0;
        for (int32_t k = d - n + 1; k <= d; k++)
            if (k >= 0 && k < o->ndays)
                m |= o->active[(size_t)k * o->words + w];
        c += __builtin_popcountll(m);
    }
    return c;
}

/* Every partial and every session of a finished run against the oracle. */
static void check_oracle(const cap_t *c, const oracle_t *o, int32_t first_day,
                         int32_t last_day) {
    assert_int_equal(c->other, 0);
    int32_t ndays = last_day + 29 - first_day + 1;
    assert_int_equal(c->np, (size_t)ndays + 1);
    for (int32_t i = 0; i < ndays; i++) {
        const engage_partial_rec_t *p = &c->p[i];
        int32_t d = first_day + i;
        assert_int_equal(p->day, D0 + d);
        assert_int_equal(p->is_end, 0);
        if (p->dau != window(o, d, 1) || p->wau != window(o, d, 7) || p->mau != window(o, d, 30))
            fail_msg("day %d: dau/wau/mau %" PRId64 "/%" PRId64 "/%" PRId64
                     ", expected %" PRId64 "/%" PRId64 "/%" PRId64,
                     d, p->dau, p->wau, p->mau, window(o, d, 1), window(o, d, 7),
                     window(o, d, 30));
        assert_int_equal(p->sessions, o->sessions[d]);
        assert_int_equal(p->session_users, o->susers[d]);
        assert_int_equal(p->sum_duration_ms, o->dur[d]);
        assert_int_equal(p->sum_actions, o->actions[d]);
    }
    assert_int_equal(c->p[ndays].is_end, 1);
    /* sessions: the same set, each under the right user id */
    assert_int_equal(c->ns, o->ns);
    sess_t *got = malloc(c->ns * sizeof(*got));
    assert_non_null(got);
    memcpy(got, c->s, c->ns * sizeof(*got));
    qsort(got, c->ns, sizeof(*got), cmp_sess);
    for (size_t i = 0; i < c->ns; i++) {
        const sess_t *a = &got[i], *b = &o->s[i];
        if (a->user != b->user || a->start != b->start || a->end != b->end ||
            a->actions != b->actions || a->day != b->day)
            fail_msg("session %zu: user %u start %" PRId64 " actions %d, expected user %u "
                     "start %" PRId64 " actions %d",
                     i, a->user, a->start, a->actions, b->user, b->start, b->actions);
    }
    free(got);
}

static void assert_same_log(const cap_t *a, const cap_t *b, const char *what) {
    if (a->nlog != b->nlog)
        fail_msg("%s: %zu outputs, reference %zu", what, a->nlog, b->nlog);
    for (size_t k = 0; k < a->nlog; k++)
        if (strcmp(a->log[k], b->log[k]) != 0)
            fail_msg("%s: output %zu differs:\n got: %s\n ref: %s", what, k, a->log[k],
                     b->log[k]);
}

/* ---- store inspection ------------------------------------------------------ */

typedef struct keycount {
    size_t m, u, o, b, other;
    size_t bytes; /* keys + values */
    int32_t min_b, max_b;
} keycount_t;

static int count_cb(void *opaque, const void *k, size_t kl, const void *v, size_t vl) {
    keycount_t *c = opaque;
    (void)v;
    const unsigned char *s = k;
    c->bytes += kl + vl;
    switch (kl ? s[0] : 0) {
    case 'm': c->m++; break;
    case 'u': c->u++; break;
    case 'o': c->o++; break;
    case 'b': {
        c->b++;
        assert_int_equal(kl, 5);
        int32_t d = (int32_t)((((uint32_t)s[1] << 24) | ((uint32_t)s[2] << 16) |
                               ((uint32_t)s[3] << 8) | s[4]) ^ 0x80000000u);
        if (d < c->min_b)
            c->min_b = d;
        if (d > c->max_b)
            c->max_b = d;
        break;
    }
    default: c->other++;
    }
    return 0;
}

static void count_keys(fx_t *f, keycount_t *c) {
    char err[512] = "";
    memset(c, 0, sizeof(*c));
    c->min_b = INT32_MAX;
    c->max_b = INT32_MIN;
    assert_int_equal(engage_state_iterate(engage_task_store(f->t), "", 0, count_cb, c, err,
                                          sizeof(err)),
                     ENGAGE_ERR_OK);
}

/* SST + WAL bytes only: engage_state_disk_size() also counts RocksDB's
 * info logs, which pile up one per open. */
static uint64_t sst_wal_bytes(const char *path) {
    DIR *d = opendir(path);
    uint64_t total = 0;
    struct dirent *e;
    char sub[512];
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 4 || (strcmp(e->d_name + n - 4, ".sst") && strcmp(e->d_name + n - 4, ".log")))
            continue;
        struct stat sb;
        snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
        if (stat(sub, &sb) == 0)
            total += (uint64_t)sb.st_size;
    }
    closedir(d);
    return total;
}

/* Reads the "u" entry of user index u: returns 1 and its ordinal and last
 * day, or 0 if there is none. */
static int dict_entry(fx_t *f, uint32_t u, uint32_t *ord, int32_t *last_day) {
    char key[16], err[512] = "";
    key[0] = 'u';
    uid(key + 1, u);
    void *v = NULL;
    size_t vl = 0;
    engage_err_t e = engage_state_get(engage_task_store(f->t), key, strlen(key), &v, &vl, err,
                                      sizeof(err));
    if (e == ENGAGE_ERR_NOT_FOUND)
        return 0;
    assert_int_equal(e, ENGAGE_ERR_OK);
    assert_int_equal(vl, 8);
    const unsigned char *s = v;
    *ord = (uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 | (uint32_t)s[3] << 24;
    *last_day = (int32_t)((uint32_t)s[4] | (uint32_t)s[5] << 8 | (uint32_t)s[6] << 16 |
                          (uint32_t)s[7] << 24);
    free(v);
    return 1;
}

/* ---- tests ------------------------------------------------------------------- */

static void test_settings_checked(void **state) {
    fx_t *f = *state;
    char err[512] = "";
    f->conf.retention_margin_days = 5;
    f->conf.user_retention_days = 35; /* < 31 + 5 */
    assert_null(try_open(f, err, sizeof(err)));
    assert_non_null(strstr(err, "user.retention.days (35)"));
    assert_non_null(strstr(err, "state.retention.margin.days (5)"));
    assert_non_null(strstr(err, "36"));
    f->conf.user_retention_days = 36;
    task_open(f);
    engage_task_close(f->t);
    f->t = NULL;
    f->conf.retention_margin_days = 0; /* default 5 */
    f->conf.user_retention_days = 35;
    err[0] = '\0';
    assert_null(try_open(f, err, sizeof(err)));
    assert_non_null(strstr(err, "user.retention.days"));
    f->conf.retention_margin_days = 60;
    f->conf.user_retention_days = 0; /* default 90 < 91 */
    assert_null(try_open(f, err, sizeof(err)));
    assert_non_null(strstr(err, "(90)"));
    f->conf.retention_margin_days = -1;
    f->conf.user_retention_days = 100;
    assert_null(try_open(f, err, sizeof(err)));
    f->conf.retention_margin_days = 0;
    f->conf.user_retention_days = 0; /* both defaults */
    task_open(f);
}

#define CHURN_DAYS 150
#define CHURN_MARGIN 5
#define CHURN_RETENTION 40
#define PERSIST_EVERY 1500

typedef struct mark {
    int32_t day;
    keycount_t k;
    uint64_t disk, sst_wal;
    engage_task_memstats_t mem;
    uint32_t seen; /* distinct users seen so far */
} mark_t;

/* Run with a restart every 10 days (the measurement points: persist, close,
 * reopen, so RocksDB has flushed and may have compacted), two restarts in
 * the middle of a day, and a crash that loses an unpersisted stretch. */
static void churn_run_measured(fx_t *f, const gen_t *g, mark_t *marks, size_t *nmarks) {
    const size_t mid1 = g->day_start[47] + 123, mid2 = g->day_start[101] + 77;
    const size_t crash = g->day_start[73] + 200;
    uint8_t *seen = calloc(g->nusers, 1);
    uint32_t nseen = 0;
    assert_non_null(seen);
    *nmarks = 0;
    int32_t day = 0;
    for (size_t i = 0; i < g->n; i++) {
        while (day < g->ndays && i == g->day_start[day + 1]) {
            day++;
            if (day % 10 == 0) {
                task_restart(f);
                mark_t *m = &marks[(*nmarks)++];
                m->day = day;
                count_keys(f, &m->k);
                m->disk = engage_state_disk_size(engage_task_store(f->t));
                m->sst_wal = sst_wal_bytes(f->path);
                engage_task_get_memstats(f->t, &m->mem);
                m->seen = nseen;
                /* the store holds exactly what memory holds */
                assert_int_equal(m->k.u, m->mem.users);
                assert_int_equal(m->k.m, 1);
                assert_int_equal(m->k.other, 0);
                assert_true(m->k.o <= m->mem.open_sessions);
                /* day bitmaps: none older than the last emitted day - 30 - margin */
                int32_t emitted = f->cap.np ? f->cap.p[f->cap.np - 1].day : INT32_MIN;
                if (emitted != INT32_MIN && emitted - 30 - CHURN_MARGIN >= D0)
                    assert_int_equal(m->k.min_b, emitted - 30 - CHURN_MARGIN);
                assert_true(m->k.b <= 30 + CHURN_MARGIN + 1 + 2);
            }
        }
        if (i == mid1 || i == mid2)
            task_restart(f);
        if (i == crash) { /* persist, go on, lose it, replay */
            persist(f);
            size_t nlog = f->cap.nlog, np = f->cap.np, ns = f->cap.ns;
            for (size_t j = i; j < i + 2500 && j < g->n; j++)
                feed(f, g, j);
            engage_task_close(f->t);
            f->t = NULL;
            task_open(f);
            assert_int_equal(engage_task_next_offset(f->t), (int64_t)i);
            cap_truncate(&f->cap, nlog, np, ns);
        }
        if (!seen[g->ev[i].user]) {
            seen[g->ev[i].user] = 1;
            nseen++;
        }
        feed(f, g, i);
        if (i % PERSIST_EVERY == PERSIST_EVERY - 1)
            persist(f);
    }
    task_restart(f);
    finish(f);
    task_restart(f);
    free(seen);
}

static void test_churn_bounded_and_exact(void **state) {
    fx_t *f = *state;
    gen_t g;
    memset(&g, 0, sizeof(g));
    gen_churn(&g, f->dec, CHURN_DAYS, 12345);
    oracle_t o;
    oracle_build(&g, &o);
    f->conf.retention_margin_days = CHURN_MARGIN;
    f->conf.user_retention_days = CHURN_RETENTION;

    /* reference: straight through, persisting now and then */
    task_open(f);
    for (size_t i = 0; i < g.n; i++) {
        feed(f, &g, i);
        if (i % PERSIST_EVERY == PERSIST_EVERY - 1)
            persist(f);
    }
    finish(f);
    persist(f);
    check_oracle(&f->cap, &o, 0, CHURN_DAYS - 1);
    engage_task_stats_t st;
    engage_task_get_stats(f->t, &st);
    assert_int_equal(st.counted, (int64_t)g.n);
    assert_true(st.users_expired > 1000);
    cap_t ref = f->cap;
    memset(&f->cap, 0, sizeof(f->cap));

    /* measured, with restarts and a crash: identical outputs */
    task_reset(f);
    mark_t marks[CHURN_DAYS / 10 + 1];
    size_t nmarks = 0;
    churn_run_measured(f, &g, marks, &nmarks);
    assert_same_log(&f->cap, &ref, "churn with restarts");
    check_oracle(&f->cap, &o, 0, CHURN_DAYS - 1);

    print_message("events %zu, distinct users %u, retention %d days, margin %d days\n", g.n,
                  g.nusers, CHURN_RETENTION, CHURN_MARGIN);
    print_message("%5s %6s %6s %5s %4s %4s %8s %8s %8s %6s %7s %5s %9s\n", "day", "seen",
                  "keys", "u", "b", "o", "live_B", "disk_B", "sst+wal", "users", "ord_lim",
                  "free", "key_bytes");
    const mark_t *m60 = NULL, *m120 = NULL;
    for (size_t k = 0; k < nmarks; k++) {
        const mark_t *m = &marks[k];
        size_t keys = m->k.m + m->k.u + m->k.o + m->k.b;
        print_message("%5d %6u %6zu %5zu %4zu %4zu %8zu %8" PRIu64 " %8" PRIu64
                      " %6u %7u %5u %9zu\n",
                      m->day, m->seen, keys, m->k.u, m->k.b, m->k.o, m->k.bytes, m->disk,
                      m->sst_wal, m->mem.users, m->mem.ordinal_limit, m->mem.free_ordinals,
                      m->mem.key_bytes + m->mem.dead_key_bytes);
        if (m->day == 60)
            m60 = m;
        if (m->day == 120)
            m120 = m;
    }
    assert_non_null(m60);
    assert_non_null(m120);
    /* levelled off: users seen keep growing, state does not */
    assert_true(m120->seen > m60->seen + 1000);
    size_t keys60 = m60->k.m + m60->k.u + m60->k.o + m60->k.b;
    size_t keys120 = m120->k.m + m120->k.u + m120->k.o + m120->k.b;
    assert_true(keys120 * 10 <= keys60 * 12);
    assert_true(m120->mem.users * 10 <= m60->mem.users * 12);
    assert_true(m120->k.b <= m60->k.b + 1);
    assert_true(m120->k.bytes * 10 <= m60->k.bytes * 13);
    for (size_t k = 0; k < nmarks; k++) { /* ordinals stay dense and bounded */
        assert_true(marks[k].mem.ordinal_limit <= 2000);
        assert_true(marks[k].mem.key_bytes + marks[k].mem.dead_key_bytes <=
                    2 * marks[k].mem.key_bytes + 4096);
    }
    assert_true(marks[nmarks - 1].mem.ordinal_limit * 2 < g.nusers);

    cap_free(&ref);
    oracle_free(&o);
    gen_free(&g);
}

typedef struct find_ord {
    uint32_t ord;
    int found;
    unsigned user;
} find_ord_t;

static int find_ord_cb(void *opaque, const void *k, size_t kl, const void *v, size_t vl) {
    find_ord_t *fo = opaque;
    char id[16];
    assert_int_equal(vl, 8);
    assert_int_equal(kl, 8);
    if (engage_get_u32(v) != fo->ord)
        return 0;
    memcpy(id, (const char *)k + 2, 6);
    id[6] = '\0';
    fo->user = (unsigned)atoi(id);
    fo->found++;
    return 0;
}

/* One user active on day 0 only comes back on day 60, long after the
 * retention (36 days) removed it and a newcomer took its ordinal. */
static void test_returning_user(void **state) {
    fx_t *f = *state;
    gen_t g;
    memset(&g, 0, sizeof(g));
    uint64_t s = 5;
    const int32_t ndays = 70;
    gen_session(&g, &s, 0, 0); /* u000000: the returner */
    gen_session(&g, &s, 1, 0);
    gen_session(&g, &s, 2, 0);
    for (int32_t d = 1; d < ndays; d++) {
        gen_session(&g, &s, 2 + (uint32_t)d, d); /* one newcomer a day, never seen again */
        if (d < 10)
            gen_session(&g, &s, 1, d); /* u000001 stays a little longer */
    }
    gen_session(&g, &s, 0, 60);
    gen_finish(&g, f->dec, ndays);
    oracle_t o;
    oracle_build(&g, &o);
    f->conf.retention_margin_days = 5;
    f->conf.user_retention_days = 36;

    task_open(f);
    uint32_t ord0 = UINT32_MAX, ord = 0;
    int32_t last = 0;
    int32_t day = 0;
    int expired_seen = 0, reused_seen = 0;
    for (size_t i = 0; i < g.n; i++) {
        feed(f, &g, i);
        persist(f);
        int32_t d = engage_day_of_ms(g.ev[i].ts) - D0;
        if (d == day)
            continue;
        day = d;
        /* the first event of each day: check the store */
        int present = dict_entry(f, 0, &ord, &last);
        if (day <= 37) { /* final through day 36 at most: 0 >= 36 - 36 */
            assert_int_equal(present, 1);
            assert_int_equal(last, D0);
            ord0 = ord;
        } else if (day < 60) {
            /* day 37 is final: 0 < 37 - 36, removed with its "u" key */
            assert_int_equal(present, 0);
            expired_seen = 1;
            if (day == 41) { /* a newcomer took the freed ordinal */
                find_ord_t fo = {.ord = ord0};
                char err[512] = "";
                assert_int_equal(engage_state_iterate(engage_task_store(f->t), "u", 1,
                                                      find_ord_cb, &fo, err, sizeof(err)),
                                 ENGAGE_ERR_OK);
                assert_int_equal(fo.found, 1);
                assert_true(fo.user >= 2 + 38 && fo.user <= 2 + 41);
                reused_seen = 1;
            }
        } else if (day == 60) {
            assert_int_equal(present, 1);
            assert_int_equal(last, D0 + 60);
        }
        engage_task_memstats_t m;
        engage_task_get_memstats(f->t, &m);
        assert_true(m.ordinal_limit <= 45); /* one newcomer a day, ~37 days kept */
    }
    assert_true(expired_seen && reused_seen);
    finish(f);
    check_oracle(&f->cap, &o, 0, ndays - 1);
    /* the returner's two sessions, both under its own id */
    int n0 = 0;
    for (size_t i = 0; i < f->cap.ns; i++)
        n0 += f->cap.s[i].user == 0;
    assert_int_equal(n0, 2);
    cap_t ref = f->cap;
    memset(&f->cap, 0, sizeof(f->cap));

    /* restarts at every day boundary around the expiry and the reuse, and
     * right after the record that removed the user */
    task_reset(f);
    for (size_t i = 0; i < g.n; i++) {
        int32_t d = engage_day_of_ms(g.ev[i].ts) - D0;
        if (i > 0 && d != engage_day_of_ms(g.ev[i - 1].ts) - D0 && d >= 35 && d <= 62)
            task_restart(f);
        feed(f, &g, i);
        if (d == 38 && engage_day_of_ms(g.ev[i - 1].ts) - D0 == 37)
            task_restart(f);
    }
    finish(f);
    assert_same_log(&f->cap, &ref, "returning user with restarts");
    cap_free(&ref);
    oracle_free(&o);
    gen_free(&g);
}

static int rewrite_v0_cb(void *opaque, const void *k, size_t kl, const void *v, size_t vl) {
    engage_state_t *st = opaque;
    assert_int_equal(vl, 8);
    engage_state_put(st, k, kl, v, 4); /* the first format: the ordinal alone */
    return 0;
}

typedef struct v0check {
    size_t n;
    int32_t expect_last;
} v0check_t;

static int check_v8_cb(void *opaque, const void *k, size_t kl, const void *v, size_t vl) {
    v0check_t *c = opaque;
    (void)k;
    (void)kl;
    assert_int_equal(vl, 8);
    const unsigned char *s = v;
    int32_t last = (int32_t)((uint32_t)s[4] | (uint32_t)s[5] << 8 | (uint32_t)s[6] << 16 |
                             (uint32_t)s[7] << 24);
    if (c->expect_last != INT32_MIN)
        assert_int_equal(last, c->expect_last);
    c->n++;
    return 0;
}

/* Dictionary entries of the first format (4-byte ordinal) still load; they
 * are rewritten with a last day (the newest day the task knows) and expire
 * from there. Also a margin of 1 (the old fixed 31 days behind). */
static void test_old_dict_format(void **state) {
    fx_t *f = *state;
    char err[512] = "";
    gen_t g;
    memset(&g, 0, sizeof(g));
    uint64_t s = 77;
    const int32_t ndays = 90;
    for (int32_t d = 0; d < ndays; d++)
        for (int k = 0; k < 40; k++)
            gen_session(&g, &s, (uint32_t)(d * 3 + (int)rnd(&s, 60)), d);
    gen_finish(&g, f->dec, ndays);
    oracle_t o;
    oracle_build(&g, &o);
    f->conf.retention_margin_days = 1;
    f->conf.user_retention_days = 32;
    task_open(f);
    size_t half = g.day_start[20];
    for (size_t i = 0; i < half; i++)
        feed(f, &g, i);
    persist(f);
    int32_t max_day = engage_day_of_ms(g.ev[half - 1].ts);
    engage_task_close(f->t);
    f->t = NULL;

    engage_state_t *st = engage_state_open(f->path, err, sizeof(err));
    assert_non_null(st);
    assert_int_equal(engage_state_iterate(st, "u", 1, rewrite_v0_cb, st, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(engage_state_commit(st, err, sizeof(err)), ENGAGE_ERR_OK);
    engage_state_close(st);

    task_open(f);
    assert_int_equal(engage_task_dirty(f->t), 1); /* the entries to rewrite */
    persist(f);
    v0check_t c = {.n = 0, .expect_last = max_day};
    assert_int_equal(engage_state_iterate(engage_task_store(f->t), "u", 1, check_v8_cb, &c, err,
                                          sizeof(err)),
                     ENGAGE_ERR_OK);
    engage_task_memstats_t m;
    engage_task_get_memstats(f->t, &m);
    assert_int_equal(c.n, m.users);
    assert_true(c.n > 50);

    for (size_t i = half; i < g.n; i++) {
        feed(f, &g, i);
        if (i % 500 == 0)
            task_restart(f);
    }
    finish(f);
    persist(f);
    check_oracle(&f->cap, &o, 0, ndays - 1);
    /* margin 1: days from the last emitted day - 31 on */
    keycount_t k;
    count_keys(f, &k);
    assert_int_equal(k.min_b, f->cap.p[f->cap.np - 2].day - 31);
    engage_task_stats_t sts;
    engage_task_get_stats(f->t, &sts);
    assert_true(sts.users_expired > 100);
    c.n = 0;
    c.expect_last = INT32_MIN;
    assert_int_equal(engage_state_iterate(engage_task_store(f->t), "u", 1, check_v8_cb, &c, err,
                                          sizeof(err)),
                     ENGAGE_ERR_OK);
    oracle_free(&o);
    gen_free(&g);
}


static int agg_count_cb(void *opaque, const void *k, size_t kl, const void *v, size_t vl) {
    (void)k;
    (void)kl;
    (void)v;
    (void)vl;
    (*(size_t *)opaque)++;
    return 0;
}

static int daily_cb(void *opaque, const engage_daily_rec_t *r) {
    (void)r;
    (*(int *)opaque)++;
    return 0;
}

/* The aggregator store: a bounded run's partials through the last event day
 * + 29 (each partition's WAU/MAU tail) must not stay behind once every day
 * through the last event day is out. */
static void test_aggregator_drops_tail(void **state) {
    fx_t *f = *state;
    char err[512] = "", apath[160];
    gen_t g;
    memset(&g, 0, sizeof(g));
    uint64_t s = 3;
    for (int32_t d = 0; d < 10; d++)
        for (uint32_t u = 0; u < 5; u++)
            gen_session(&g, &s, u + (uint32_t)d, d);
    gen_finish(&g, f->dec, 10);
    task_open(f);
    for (size_t i = 0; i < g.n; i++)
        feed(f, &g, i);
    finish(f);
    assert_int_equal(f->cap.np, 10 + 29 + 1);

    snprintf(apath, sizeof(apath), "%s/agg", f->dir);
    int daily = 0;
    engage_aggregator_t *a = engage_aggregator_open(apath, daily_cb, &daily, err, sizeof(err));
    assert_non_null(a);
    size_t half = f->cap.np / 2;
    for (size_t i = 0; i < f->cap.np; i++) {
        assert_int_equal(engage_aggregator_add(a, &f->cap.p[i], (int64_t)i, err, sizeof(err)),
                         ENGAGE_ERR_OK);
        if (i == half) /* persisted mid-way: tail partials are in the store */
            assert_int_equal(engage_aggregator_persist(a, err, sizeof(err)), ENGAGE_ERR_OK);
    }
    assert_int_equal(engage_aggregator_done(a), 1);
    assert_int_equal(daily, 10);
    assert_int_equal(engage_aggregator_persist(a, err, sizeof(err)), ENGAGE_ERR_OK);
    engage_aggregator_close(a);
    engage_state_t *st = engage_state_open(apath, err, sizeof(err));
    assert_non_null(st);
    size_t nd = 0, np = 0;
    assert_int_equal(engage_state_iterate(st, "d", 1, agg_count_cb, &nd, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(engage_state_iterate(st, "p", 1, agg_count_cb, &np, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    engage_state_close(st);
    assert_int_equal(nd, 0);
    assert_int_equal(np, 1);
    /* reopened: still done, nothing more emitted */
    a = engage_aggregator_open(apath, daily_cb, &daily, err, sizeof(err));
    assert_non_null(a);
    assert_int_equal(engage_aggregator_done(a), 1);
    engage_aggregator_close(a);
    assert_int_equal(daily, 10);
    gen_free(&g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_settings_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_churn_bounded_and_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_returning_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_old_dict_format, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aggregator_drops_tail, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
