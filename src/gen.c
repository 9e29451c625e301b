/*
 * gen.c - `engage gen`: a deterministic synthetic UserAction workload.
 *
 * The output is JSON lines (docs/JSONL.md) in *arrival order*, ready for
 * `engage produce`. Everything comes from one seeded PRNG (xoshiro256**,
 * seeded through splitmix64); nothing reads the clock or calls rand(), so
 * the same options give the same bytes on every run. (The distributions use
 * libm's exp/log/pow; a libm that rounds differently could, rarely, shift
 * a draw, so compare outputs made by the same build.)
 *
 * The model:
 *  - users u0..uN-1 with Zipf-Mandelbrot activity weights
 *    w(i) = ((1+q)/(i+1+q))^s, q = N/20; user i has on average
 *    sessions_per_user_day * w(i) sessions a day (Poisson; 20% fewer at
 *    weekends), so u0 is the most active and most users are idle most days;
 *  - a session starts uniformly within its day (2% start in the last 20
 *    minutes and tend to cross midnight); its action count is geometric with
 *    the configured mean; gaps are log-uniform 1 s .. 10 min, sometimes
 *    25..29 min, and rarely exactly 30:00.000 or 30:00.001 (the session.gap
 *    boundary);
 *  - each event arrives at timestamp + U[0, jitter_ms] (out of order, but
 *    below the watermark grace); late_rate of events arrive 15 min .. 2 h
 *    after their timestamp instead, and never before their partition has
 *    seen an event more than 10 minutes newer (so they are late under the
 *    default 5-minute grace; one still waiting at the end is dropped);
 *    dup_rate of events arrive a second time up to 30 s after the first
 *    copy; malformed_rate extra records exercise
 *    every dead-letter reason.
 *
 * Streaming: arrival time >= event time for every record, and a day's
 * sessions start inside that day. So after generating day d, every record
 * arriving before the start of day d+1 is final: it is sorted by arrival and
 * written, and the rest carries over. Memory is one day's records (48 bytes
 * each), plus 8 bytes per user for the activity weights.
 *
 * The "expect" hints: "dup" for a second copy, "dead:<reason>" for malformed
 * records, "late" when the partition has already seen an event more than
 * 5 minutes (the default grace) newer. Hints are for humans only.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "codec.h"
#include "commands.h"
#include "timeutil.h"

#define MIN_MS (60 * 1000LL)
#define HINT_GRACE_MS (5 * MIN_MS) /* default watermark.grace.ms */
#define LATE_MARGIN_MS (10 * MIN_MS) /* late events trail their partition by more */
#define LONG_UID_BYTES 300

/* ---- PRNG: xoshiro256** (Blackman & Vigna), seeded with splitmix64 ------ */

typedef struct rng {
    uint64_t s[4];
} rng_t;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void rng_seed(rng_t *r, uint64_t seed) {
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t rng_next(rng_t *r) {
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* Uniform in [0, 1). */
static inline double rng_unif(rng_t *r) { return (double)(rng_next(r) >> 11) * 0x1.0p-53; }

/* Uniform integer in [lo, hi] (hi >= lo; modulo bias is irrelevant here). */
static inline int64_t rng_range(rng_t *r, int64_t lo, int64_t hi) {
    return lo + (int64_t)(rng_next(r) % (uint64_t)(hi - lo + 1));
}

/* Poisson(lambda) by multiplication (Knuth); lambda here is small. For large
 * lambda a normal approximation keeps it O(1). */
static int64_t rng_poisson(rng_t *r, double lambda) {
    if (lambda <= 0)
        return 0;
    if (lambda > 30) {
        double u1 = rng_unif(r), u2 = rng_unif(r);
        double z = sqrt(-2.0 * log(u1 + 1e-300)) * cos(6.283185307179586 * u2);
        double v = floor(lambda + sqrt(lambda) * z + 0.5);
        return v < 0 ? 0 : (int64_t)v;
    }
    double l = exp(-lambda), p = 1.0;
    int64_t k = 0;
    for (;;) {
        p *= rng_unif(r);
        if (p <= l)
            return k;
        k++;
    }
}

/* ---- records ------------------------------------------------------------- */

enum {
    K_EVENT,          /* a normal event */
    K_DUP,            /* second copy of an event */
    K_LATE,           /* event delayed past the grace */
    K_RAW_GARBAGE,    /* random bytes, nonzero first byte */
    K_RAW_MAGIC,      /* valid datum, magic byte 1 */
    K_RAW_SCHEMA,     /* valid datum, schema id 999 */
    K_RAW_TRUNC,      /* valid framing, datum cut short */
    K_UID_EMPTY,      /* user_id "" */
    K_UID_LONG,       /* user_id of 300 bytes */
    K_KEY_MISMATCH,   /* key is another user's id */
    K_TS_OLD,         /* timestamp before 2010 */
    K_TS_FUTURE,      /* timestamp 2 h ahead of the Kafka timestamp */
    K__COUNT,
    K__MALFORMED_FIRST = K_RAW_GARBAGE
};

static const char *const expect_of[K__COUNT] = {
    [K_RAW_GARBAGE] = "dead:bad_framing",
    [K_RAW_MAGIC] = "dead:bad_framing",
    [K_RAW_SCHEMA] = "dead:unknown_schema_id",
    [K_RAW_TRUNC] = "dead:undecodable_avro",
    [K_UID_EMPTY] = "dead:bad_user_id",
    [K_UID_LONG] = "dead:bad_user_id",
    [K_KEY_MISMATCH] = "dead:key_mismatch",
    [K_TS_OLD] = "dead:timestamp_out_of_range",
    [K_TS_FUTURE] = "dead:timestamp_out_of_range",
};

typedef struct gen_rec {
    int64_t key;  /* arrival order (ms); also the Kafka timestamp of malformed records */
    uint64_t seq; /* creation order, breaks ties deterministically */
    int64_t ts;   /* event timestamp */
    uint64_t eid; /* event_id number; shared by an event and its duplicate */
    uint32_t user;
    uint32_t aux; /* other user (key mismatch) or garbage seed */
    uint8_t kind, action, version, pad;
} gen_rec_t;

static const char *const actions[] = {"open",   "view",  "view",        "view",
                                      "click",  "click", "scroll",      "search",
                                      "like",   "share", "add_to_cart", "purchase"};
#define NACTIONS (sizeof(actions) / sizeof(actions[0]))
static const char *const versions[] = {"3.0.0", "3.1.0", "3.1.1", "3.2.0"};

typedef struct recvec {
    gen_rec_t *v;
    size_t n, cap;
} recvec_t;

typedef struct gen {
    engage_gen_opts_t o;
    rng_t rng;
    double *lambda; /* per user: mean sessions per (weekday) day */
    gen_rec_t *recs; /* records not yet written */
    size_t n, cap;
    gen_rec_t *spare; /* second buffer for the carry-over */
    size_t spare_cap;
    struct sort_key *keys, *keys_tmp;
    size_t keys_cap;
    uint64_t seq, eid;
    int64_t *pmax; /* per partition: newest valid event timestamp emitted */
    struct recvec *deferred; /* per partition: late events waiting to be late */
    FILE *out;
    char *obuf;
    size_t olen;
    int64_t lines;
    int io_error;
} gen_t;

#define OBUF_SIZE (1 << 20)
#define LINE_MAX_BYTES 2048

void engage_gen_defaults(engage_gen_opts_t *o) {
    memset(o, 0, sizeof(*o));
    o->seed = 42;
    o->users = 2000;
    o->days = 35;
    o->start_day = 20454; /* 2026-01-01 */
    o->partitions = 4;
    o->zipf_s = 1.1;
    o->sessions_per_user_day = 2.0;
    o->actions_per_session = 8.0;
    o->jitter_ms = 60000;
    o->dup_rate = 0.01;
    o->malformed_rate = 0.001;
    o->late_rate = 0.001;
    o->max_events = 0;
}

static gen_rec_t *push(gen_t *g) {
    if (g->n == g->cap) {
        size_t nc = g->cap ? g->cap * 2 : 4096;
        gen_rec_t *nr = realloc(g->recs, nc * sizeof(*nr));
        if (!nr)
            abort();
        g->recs = nr;
        g->cap = nc;
    }
    gen_rec_t *r = &g->recs[g->n++];
    memset(r, 0, sizeof(*r));
    r->seq = g->seq++;
    return r;
}

/* Writes "u<idx>" into b; returns its length. */
static size_t user_id(uint32_t idx, char *b) {
    char t[16];
    size_t n = 0;
    do {
        t[n++] = (char)('0' + idx % 10);
        idx /= 10;
    } while (idx);
    b[0] = 'u';
    for (size_t i = 0; i < n; i++)
        b[1 + i] = t[n - 1 - i];
    return n + 1;
}

static uint64_t user_hash(uint32_t idx) {
    char b[16];
    size_t n = user_id(idx, b);
    return XXH64(b, n, 0);
}

/* Per-user constants derived from the id hash: platform and app version. */
static const char *user_platform(uint64_t h) {
    static const char *const p[10] = {"ios", "ios",     "ios", "ios", "android",
                                      "android", "android", "web", "web", NULL};
    return p[(h >> 32) % 10];
}

/* A user upgrades once, on a day of their own, to the next version. */
static uint8_t user_version(uint64_t h, int32_t day_index, int32_t days) {
    uint8_t base = (uint8_t)((h >> 40) % 3);
    int32_t upgrade = days > 0 ? (int32_t)((h >> 48) % (uint64_t)days) : 0;
    return (uint8_t)(base + (day_index >= upgrade ? 1 : 0));
}

static int64_t draw_gap(rng_t *r) {
    double u = rng_unif(r);
    if (u < 0.003)
        return 30 * MIN_MS; /* exactly the gap: same session */
    if (u < 0.006)
        return 30 * MIN_MS + 1; /* one ms more: a new session */
    if (u < 0.03)
        return rng_range(r, 25 * MIN_MS, 29 * MIN_MS);
    /* log-uniform 1 s .. 10 min: mostly short, realistic click gaps */
    return (int64_t)exp(log(1000.0) + rng_unif(r) * (log(600000.0) - log(1000.0)));
}

static void add_malformed(gen_t *g, int64_t ts, uint32_t user) {
    rng_t *r = &g->rng;
    gen_rec_t *m = push(g);
    m->kind = (uint8_t)(K__MALFORMED_FIRST + rng_next(r) % (K__COUNT - K__MALFORMED_FIRST));
    m->key = ts + (g->o.jitter_ms > 0 ? rng_range(r, 0, g->o.jitter_ms) : 0);
    m->ts = ts;
    m->eid = g->eid++;
    m->user = user;
    m->aux = (uint32_t)rng_next(r);
    m->action = (uint8_t)(1 + rng_next(r) % (NACTIONS - 1));
    if (m->kind == K_KEY_MISMATCH && g->o.users > 1) {
        uint32_t other = (uint32_t)(rng_next(r) % (uint64_t)(g->o.users - 1));
        m->aux = other >= user ? other + 1 : other;
    } else if (m->kind == K_KEY_MISMATCH) {
        m->kind = K_UID_EMPTY; /* no other user to mismatch with */
    }
    if (m->kind == K_TS_OLD) /* 2000-01-01 .. 2009-12-31 */
        m->ts = rng_range(r, 946684800000LL, 1262303999999LL);
    else if (m->kind == K_TS_FUTURE)
        m->ts = m->key + 2 * 60 * MIN_MS;
}

static void add_event(gen_t *g, uint32_t user, int64_t ts, uint8_t action, uint8_t version) {
    rng_t *r = &g->rng;
    gen_rec_t *e = push(g);
    e->ts = ts;
    e->eid = g->eid++;
    e->user = user;
    e->action = action;
    e->version = version;
    if (g->o.late_rate > 0 && rng_unif(r) < g->o.late_rate) {
        e->kind = K_LATE;
        e->key = ts + rng_range(r, 15 * MIN_MS, 120 * MIN_MS);
    } else {
        e->kind = K_EVENT;
        e->key = ts + (g->o.jitter_ms > 0 ? rng_range(r, 0, g->o.jitter_ms) : 0);
    }
    /* (a late event gets no duplicate: its copy could overtake it) */
    if (g->o.dup_rate > 0 && rng_unif(r) < g->o.dup_rate && e->kind != K_LATE) {
        gen_rec_t orig = *e; /* push may move the array */
        gen_rec_t *d = push(g);
        uint64_t seq = d->seq;
        *d = orig;
        d->seq = seq;
        d->kind = K_DUP;
        d->key = orig.key + rng_range(r, 1, 30000);
    }
    if (g->o.malformed_rate > 0 && rng_unif(r) < g->o.malformed_rate)
        add_malformed(g, ts, user);
}

static void gen_session(gen_t *g, uint32_t user, int32_t day, uint8_t version) {
    rng_t *r = &g->rng;
    int64_t day0 = engage_day_start_ms(day);
    int64_t t;
    if (rng_unif(r) < 0.02)
        t = day0 + ENGAGE_MS_PER_DAY - rng_range(r, 1, 20 * MIN_MS);
    else
        t = day0 + rng_range(r, 0, ENGAGE_MS_PER_DAY - 1);
    /* geometric action count with the configured mean (>= 1), capped */
    double mean = g->o.actions_per_session < 1 ? 1 : g->o.actions_per_session;
    int64_t n = 1;
    if (mean > 1) {
        double p = 1.0 / mean;
        n = 1 + (int64_t)floor(log(1.0 - rng_unif(r)) / log(1.0 - p));
        if (n > (int64_t)(mean * 20))
            n = (int64_t)(mean * 20);
    }
    for (int64_t i = 0; i < n; i++) {
        if (i > 0)
            t += draw_gap(r);
        uint8_t a = i == 0 ? 0 : (uint8_t)(1 + rng_next(r) % (NACTIONS - 1));
        add_event(g, user, t, a, version);
    }
}

/* ---- output ---------------------------------------------------------------- */

static void flush_obuf(gen_t *g) {
    if (g->olen && fwrite(g->obuf, 1, g->olen, g->out) != g->olen)
        g->io_error = 1;
    g->olen = 0;
}

static inline char *put_str(char *p, const char *s) {
    while (*s)
        *p++ = *s++;
    return p;
}

static inline char *put_i64(char *p, int64_t v) {
    char t[24];
    int n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    if (v < 0)
        *p++ = '-';
    do {
        t[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    while (n)
        *p++ = t[--n];
    return p;
}

/* A JSON string. Every string gen writes is printable ASCII already, but
 * escaping keeps the output valid whatever a future change puts here. */
static inline char *put_jstr(char *p, const char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c < 0x20) {
            p = put_str(p, "\\u00");
            *p++ = hex[c >> 4];
            *p++ = hex[c & 15];
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    return p;
}

static char *put_b64(char *p, const unsigned char *d, size_t n) {
    static const char tbl[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    *p++ = '"';
    size_t i = 0;
    for (; i + 2 < n; i += 3) {
        uint32_t v = ((uint32_t)d[i] << 16) | ((uint32_t)d[i + 1] << 8) | d[i + 2];
        *p++ = tbl[v >> 18];
        *p++ = tbl[(v >> 12) & 63];
        *p++ = tbl[(v >> 6) & 63];
        *p++ = tbl[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)d[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)d[i + 1] << 8;
        *p++ = tbl[v >> 18];
        *p++ = tbl[(v >> 12) & 63];
        *p++ = i + 1 < n ? tbl[(v >> 6) & 63] : '=';
        *p++ = '=';
    }
    *p++ = '"';
    return p;
}

static unsigned char *avro_opt_str(unsigned char *p, const char *s) {
    if (!s)
        return engage_avro_put_long(p, 0);
    p = engage_avro_put_long(p, 1);
    return engage_avro_put_string(p, s, strlen(s));
}

static uint32_t partition_of(const gen_t *g, const char *uid, size_t n) {
    return (uint32_t)(XXH64(uid, n, 0) % (uint64_t)g->o.partitions);
}

/* Writes one record as a JSON line into the output buffer. Returns the
 * record's partition. */
static uint32_t emit(gen_t *g, const gen_rec_t *r) {
    if (g->olen + LINE_MAX_BYTES > OBUF_SIZE)
        flush_obuf(g);
    char *p0 = g->obuf + g->olen, *p = p0;
    char uid[LONG_UID_BYTES + 1];
    size_t uidn = user_id(r->user, uid);
    uint64_t h = XXH64(uid, uidn, 0);
    uint32_t part = (uint32_t)(h % (uint64_t)g->o.partitions);
    const char *platform = user_platform(h);
    const char *version = versions[r->version];
    const char *expect = expect_of[r->kind];
    char eid[24];
    eid[0] = 'e';
    size_t eidn = (size_t)(put_i64(eid + 1, (int64_t)r->eid) - eid);

    if (r->kind >= K_RAW_GARBAGE && r->kind <= K_RAW_TRUNC) {
        unsigned char val[LONG_UID_BYTES + 128];
        size_t vn;
        if (r->kind == K_RAW_GARBAGE) {
            rng_t gr;
            rng_seed(&gr, g->o.seed ^ ((uint64_t)r->aux << 20) ^ r->seq);
            vn = (size_t)rng_range(&gr, 1, 40);
            for (size_t i = 0; i < vn; i++)
                val[i] = (unsigned char)rng_next(&gr);
            if (val[0] == 0)
                val[0] = 0xff; /* never a Confluent magic byte */
        } else {
            uint32_t id = r->kind == K_RAW_SCHEMA ? 999 : 1;
            val[0] = r->kind == K_RAW_MAGIC ? 1 : 0;
            val[1] = (unsigned char)(id >> 24);
            val[2] = (unsigned char)(id >> 16);
            val[3] = (unsigned char)(id >> 8);
            val[4] = (unsigned char)id;
            unsigned char *q = val + 5;
            q = engage_avro_put_string(q, eid, eidn);
            q = engage_avro_put_string(q, uid, uidn);
            q = engage_avro_put_long(q, r->ts);
            q = engage_avro_put_string(q, actions[r->action], strlen(actions[r->action]));
            q = avro_opt_str(q, platform);
            q = avro_opt_str(q, version);
            vn = (size_t)(q - val);
            if (r->kind == K_RAW_TRUNC) /* keep 1 .. len-1 datum bytes */
                vn = 5 + 1 + r->aux % (vn - 6);
        }
        p = put_str(p, "{\"raw_value_b64\":");
        p = put_b64(p, val, vn);
        p = put_str(p, ",\"key\":");
        p = put_jstr(p, uid, uidn);
    } else {
        const char *key = NULL;
        char other[16];
        size_t othern = 0;
        if (r->kind == K_UID_EMPTY) {
            uidn = 0;
        } else if (r->kind == K_UID_LONG) {
            memset(uid + uidn, 'x', LONG_UID_BYTES - uidn);
            uidn = LONG_UID_BYTES;
        } else if (r->kind == K_KEY_MISMATCH) {
            othern = user_id(r->aux, other);
            key = other;
        }
        if (r->kind == K_UID_EMPTY || r->kind == K_UID_LONG)
            part = partition_of(g, uid, uidn);
        p = put_str(p, "{\"event_id\":");
        p = put_jstr(p, eid, eidn);
        p = put_str(p, ",\"user_id\":");
        p = put_jstr(p, uid, uidn);
        p = put_str(p, ",\"timestamp\":");
        p = put_i64(p, r->ts);
        p = put_str(p, ",\"action\":\"");
        p = put_str(p, actions[r->action]);
        p = put_str(p, "\",\"platform\":");
        if (platform) {
            *p++ = '"';
            p = put_str(p, platform);
            *p++ = '"';
        } else {
            p = put_str(p, "null");
        }
        p = put_str(p, ",\"app_version\":\"");
        p = put_str(p, version);
        *p++ = '"';
        if (key) {
            p = put_str(p, ",\"key\":");
            p = put_jstr(p, key, othern);
        }
        if (r->kind <= K_LATE) {
            int64_t *pm = &g->pmax[part];
            if (*pm - r->ts > HINT_GRACE_MS)
                expect = "late";
            else if (r->kind == K_DUP)
                expect = "dup";
            if (r->ts > *pm)
                *pm = r->ts;
        }
    }
    if (r->kind >= K__MALFORMED_FIRST && r->kind != K_UID_EMPTY && r->kind != K_UID_LONG &&
        r->kind != K_KEY_MISMATCH) {
        /* raw and timestamp cases carry their own Kafka timestamp: raw ones
         * have none to default to, skewed ones need it to differ */
        p = put_str(p, ",\"kafka_timestamp\":");
        p = put_i64(p, r->key);
    }
    p = put_str(p, ",\"partition\":");
    p = put_i64(p, part);
    if (expect) {
        p = put_str(p, ",\"expect\":\"");
        p = put_str(p, expect);
        *p++ = '"';
    }
    *p++ = '}';
    *p++ = '\n';
    g->olen += (size_t)(p - p0);
    g->lines++;
    return part;
}

static int limit_reached(const gen_t *g) {
    return g->o.max_events > 0 && g->lines >= g->o.max_events;
}

static uint32_t user_partition(const gen_t *g, uint32_t user) {
    return (uint32_t)(user_hash(user) % (uint64_t)g->o.partitions);
}

/* Late events are held back until their partition has seen an event more
 * than LATE_MARGIN_MS newer, so they are late whatever the traffic. Those
 * still waiting when the input ends are dropped: nothing newer will come, so
 * they could not be late. */
static void defer(recvec_t *v, const gen_rec_t *r) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 4;
        v->v = realloc(v->v, v->cap * sizeof(gen_rec_t));
        if (!v->v)
            abort();
    }
    v->v[v->n++] = *r;
}

/* Emits, in the order they were held, the held late events of partition
 * `part` that are now late. */
static void release_deferred(gen_t *g, uint32_t part) {
    recvec_t *v = &g->deferred[part];
    size_t keep = 0;
    for (size_t j = 0; j < v->n; j++) {
        if (!limit_reached(g) && g->pmax[part] - v->v[j].ts > LATE_MARGIN_MS)
            emit(g, &v->v[j]);
        else
            v->v[keep++] = v->v[j];
    }
    v->n = keep;
}

/* Sort keys: arrival time and position in the buffer. The buffer holds the
 * carried-over records (already in arrival order) followed by new ones in
 * creation order, so position order is creation (seq) order among records
 * with equal arrival times, and a stable sort on the time alone gives the
 * (key, seq) order. A plain merge sort on 16-byte pairs is several times
 * faster than qsort() over the 48-byte records. */
typedef struct sort_key {
    int64_t key;
    uint64_t pos;
} sort_key_t;

static void sort_keys(sort_key_t *a, sort_key_t *tmp, size_t n) {
    const size_t run = 16;
    for (size_t lo = 0; lo < n; lo += run) { /* insertion-sort short runs */
        size_t hi = lo + run < n ? lo + run : n;
        for (size_t i = lo + 1; i < hi; i++) {
            sort_key_t v = a[i];
            size_t j = i;
            while (j > lo && a[j - 1].key > v.key) {
                a[j] = a[j - 1];
                j--;
            }
            a[j] = v;
        }
    }
    sort_key_t *src = a, *dst = tmp;
    for (size_t w = run; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                dst[k++] = src[j].key < src[i].key ? src[j++] : src[i++];
            while (i < mid)
                dst[k++] = src[i++];
            while (j < hi)
                dst[k++] = src[j++];
        }
        sort_key_t *t = src;
        src = dst;
        dst = t;
    }
    if (src != a)
        memcpy(a, src, n * sizeof(*a));
}

/* Sorts the buffer and writes every record arriving before `until`
 * (INT64_MAX: all), keeping the rest, in arrival order, for the next day.
 * Stops at max_events. */
static void drain(gen_t *g, int64_t until) {
    if (g->keys_cap < g->n) {
        free(g->keys);
        free(g->keys_tmp);
        g->keys_cap = g->cap;
        g->keys = malloc(g->keys_cap * sizeof(sort_key_t));
        g->keys_tmp = malloc(g->keys_cap * sizeof(sort_key_t));
        if (!g->keys || !g->keys_tmp)
            abort();
    }
    sort_key_t *k = g->keys;
    for (size_t i = 0; i < g->n; i++) {
        k[i].key = g->recs[i].key;
        k[i].pos = i;
    }
    sort_keys(k, g->keys_tmp, g->n);
    size_t i = 0;
    for (; i < g->n && k[i].key < until; i++) {
        if (limit_reached(g))
            break;
        const gen_rec_t *r = &g->recs[k[i].pos];
        if (r->kind == K_LATE) {
            uint32_t part = user_partition(g, r->user);
            if (g->pmax[part] - r->ts <= LATE_MARGIN_MS) {
                defer(&g->deferred[part], r);
                continue;
            }
        }
        uint32_t part = emit(g, r);
        if (r->kind <= K_LATE)
            release_deferred(g, part);
    }
    /* carry the rest over, in arrival order */
    size_t left = g->n - i;
    if (g->spare_cap < left) {
        free(g->spare);
        g->spare_cap = g->cap;
        g->spare = malloc(g->spare_cap * sizeof(gen_rec_t));
        if (!g->spare)
            abort();
    }
    for (size_t j = 0; j < left; j++)
        g->spare[j] = g->recs[k[i + j].pos];
    gen_rec_t *t = g->recs;
    size_t tc = g->cap;
    g->recs = g->spare;
    g->cap = g->spare_cap;
    g->spare = t;
    g->spare_cap = tc;
    g->n = left;
}

int64_t engage_gen_write(const engage_gen_opts_t *opts, FILE *out) {
    gen_t g;
    memset(&g, 0, sizeof(g));
    g.o = *opts;
    g.out = out;
    if (g.o.users < 1 || g.o.users > UINT32_MAX || g.o.partitions < 1 || g.o.days < 0)
        return -1;
    rng_seed(&g.rng, g.o.seed);
    g.lambda = malloc((size_t)g.o.users * sizeof(double));
    g.pmax = malloc((size_t)g.o.partitions * sizeof(int64_t));
    g.obuf = malloc(OBUF_SIZE);
    g.deferred = calloc((size_t)g.o.partitions, sizeof(recvec_t));
    if (!g.lambda || !g.pmax || !g.obuf || !g.deferred)
        abort();
    for (int32_t p = 0; p < g.o.partitions; p++)
        g.pmax[p] = INT64_MIN / 2;
    double q = (double)g.o.users / 20.0;
    for (int64_t i = 0; i < g.o.users; i++)
        g.lambda[i] = g.o.sessions_per_user_day * pow((1.0 + q) / ((double)i + 1.0 + q), g.o.zipf_s);

    for (int32_t di = 0; di < g.o.days; di++) {
        if (g.o.max_events > 0 && g.lines >= g.o.max_events)
            break;
        int32_t day = g.o.start_day + di;
        int dow = (int)(((int64_t)day + 4) % 7); /* 0 = Sunday; day 0 was a Thursday */
        double dayf = (dow == 0 || dow == 6) ? 0.8 : 1.0;
        for (int64_t u = 0; u < g.o.users; u++) {
            int64_t k = rng_poisson(&g.rng, g.lambda[u] * dayf);
            if (!k)
                continue;
            uint8_t ver = user_version(user_hash((uint32_t)u), di, g.o.days);
            for (int64_t s = 0; s < k; s++)
                gen_session(&g, (uint32_t)u, day, ver);
        }
        drain(&g, engage_day_start_ms(day + 1));
        if (g.io_error)
            break;
    }
    if (!g.io_error)
        drain(&g, INT64_MAX);
    flush_obuf(&g);
    if (fflush(out) || ferror(out))
        g.io_error = 1;
    free(g.lambda);
    free(g.pmax);
    for (int32_t p = 0; p < g.o.partitions; p++)
        free(g.deferred[p].v);
    free(g.deferred);
    free(g.obuf);
    free(g.recs);
    free(g.spare);
    free(g.keys);
    free(g.keys_tmp);
    return g.io_error ? -1 : g.lines;
}

/* ---- the command ------------------------------------------------------------ */

typedef enum { GO_U64, GO_I64, GO_I32, GO_DBL, GO_DATE } gen_opt_type_t;

/* One table drives parsing, validation and usage of the gen flags. */
static const struct gen_flag {
    const char *name;
    gen_opt_type_t type;
    size_t off;
    double min, max;
    const char *help;
} gen_flags[] = {
#define GOFF(f) offsetof(engage_gen_opts_t, f)
    {"seed", GO_U64, GOFF(seed), 0, 0, "PRNG seed"},
    {"users", GO_I64, GOFF(users), 1, 4294967295.0, "distinct users u0..uN-1"},
    {"days", GO_I32, GOFF(days), 0, 36500, "days to generate"},
    {"start", GO_DATE, GOFF(start_day), 0, 0, "first day, YYYY-MM-DD"},
    {"partitions", GO_I32, GOFF(partitions), 1, 100000,
     "\"partition\" = XXH64(user_id) % N"},
    {"zipf", GO_DBL, GOFF(zipf_s), 0, 10, "activity power-law exponent"},
    {"sessions-per-day", GO_DBL, GOFF(sessions_per_user_day), 0, 1000,
     "mean sessions a day of the most active user"},
    {"actions-per-session", GO_DBL, GOFF(actions_per_session), 1, 10000,
     "mean actions per session"},
    {"jitter-ms", GO_I64, GOFF(jitter_ms), 0, 86400000, "max arrival displacement"},
    {"dup-rate", GO_DBL, GOFF(dup_rate), 0, 1, "fraction of events sent twice"},
    {"malformed-rate", GO_DBL, GOFF(malformed_rate), 0, 1,
     "extra malformed records per event"},
    {"late-rate", GO_DBL, GOFF(late_rate), 0, 1,
     "fraction of events delayed past the grace"},
    {"max-events", GO_I64, GOFF(max_events), 0, 9e18, "stop after N lines, 0 = no limit"},
#undef GOFF
};
#define NGEN_FLAGS (sizeof(gen_flags) / sizeof(gen_flags[0]))

static void gen_usage(FILE *fp) {
    engage_gen_opts_t d;
    engage_gen_defaults(&d);
    fprintf(fp, "usage: engage gen [options] [-o FILE]\n"
                "Writes a deterministic synthetic workload as JSON lines "
                "(docs/JSONL.md), in arrival order.\n");
    for (size_t i = 0; i < NGEN_FLAGS; i++) {
        const struct gen_flag *f = &gen_flags[i];
        const void *v = (const char *)&d + f->off;
        char def[32];
        switch (f->type) {
        case GO_U64:
            snprintf(def, sizeof(def), "%" PRIu64, *(const uint64_t *)v);
            break;
        case GO_I64:
            snprintf(def, sizeof(def), "%" PRId64, *(const int64_t *)v);
            break;
        case GO_I32:
            snprintf(def, sizeof(def), "%" PRId32, *(const int32_t *)v);
            break;
        case GO_DBL:
            snprintf(def, sizeof(def), "%g", *(const double *)v);
            break;
        case GO_DATE:
            engage_day_format(*(const int32_t *)v, def, sizeof(def));
            break;
        }
        fprintf(fp, "  --%-20s %s (default %s)\n", f->name, f->help, def);
    }
    fprintf(fp, "  -o FILE                output file (default stdout)\n");
}

static int parse_flag(const struct gen_flag *f, const char *v, engage_gen_opts_t *o) {
    char *end = NULL;
    void *field = (char *)o + f->off;
    errno = 0;
    switch (f->type) {
    case GO_U64: {
        if (*v == '-')
            return -1;
        unsigned long long x = strtoull(v, &end, 0);
        if (!*v || *end || errno)
            return -1;
        *(uint64_t *)field = x;
        return 0;
    }
    case GO_I64:
    case GO_I32: {
        long long x = strtoll(v, &end, 10);
        if (!*v || *end || errno || (double)x < f->min || (double)x > f->max)
            return -1;
        if (f->type == GO_I64)
            *(int64_t *)field = x;
        else
            *(int32_t *)field = (int32_t)x;
        return 0;
    }
    case GO_DBL: {
        double x = strtod(v, &end);
        if (!*v || *end || errno || !(x >= f->min && x <= f->max))
            return -1;
        *(double *)field = x;
        return 0;
    }
    case GO_DATE:
        return engage_day_parse(v, (int32_t *)field);
    }
    return -1;
}

int engage_cmd_gen(int argc, char **argv) {
    engage_gen_opts_t o;
    engage_gen_defaults(&o);
    struct option lopts[NGEN_FLAGS + 2];
    for (size_t i = 0; i < NGEN_FLAGS; i++)
        lopts[i] = (struct option){gen_flags[i].name, required_argument, NULL, (int)(256 + i)};
    lopts[NGEN_FLAGS] = (struct option){"help", no_argument, NULL, 'h'};
    lopts[NGEN_FLAGS + 1] = (struct option){NULL, 0, NULL, 0};
    const char *outpath = NULL;
    int c;
    optind = 0; /* glibc: full re-initialisation, so the command can run twice */
    while ((c = getopt_long(argc, argv, "o:h", lopts, NULL)) != -1) {
        if (c == 'o') {
            outpath = optarg;
        } else if (c == 'h') {
            gen_usage(stdout);
            return 0;
        } else if (c >= 256 && c < 256 + (int)NGEN_FLAGS) {
            const struct gen_flag *f = &gen_flags[c - 256];
            if (parse_flag(f, optarg, &o)) {
                fprintf(stderr, "engage gen: invalid value \"%s\" for --%s", optarg, f->name);
                if (f->type != GO_U64 && f->type != GO_DATE)
                    fprintf(stderr, " (range %g .. %g)", f->min, f->max);
                fputc('\n', stderr);
                return 2;
            }
        } else {
            gen_usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "engage gen: unexpected argument \"%s\"\n", argv[optind]);
        gen_usage(stderr);
        return 2;
    }
    FILE *out = stdout;
    if (outpath && strcmp(outpath, "-")) {
        out = fopen(outpath, "w");
        if (!out) {
            fprintf(stderr, "engage gen: %s: %s\n", outpath, strerror(errno));
            return 1;
        }
    }
    int64_t n = engage_gen_write(&o, out);
    int rc = 0;
    if (out != stdout && fclose(out))
        n = -1;
    if (n < 0) {
        fprintf(stderr, "engage gen: write error on %s\n", outpath ? outpath : "stdout");
        rc = 1;
    } else {
        fprintf(stderr, "engage gen: wrote %" PRId64 " lines\n", n);
    }
    return rc;
}
