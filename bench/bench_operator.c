/*
 * bench_operator.c - benchmark of the per-event operator path, from records
 * in memory to counted, sessionized, persisted state; no Kafka.
 *
 * Modes (-m, comma-separated; default "core,pipe,dcore,task"):
 *   core       dictionary + sessionizer + day bitmaps, one event at a time,
 *              from pre-decoded events (event-id hashes precomputed);
 *              due sessions closed whenever the watermark advances, as the
 *              task does (-b N: every N events instead); the in-memory
 *              ceiling
 *   pipe       the same with engage_dict_prefetch() / engage_sessionizer_
 *              prefetch() run ahead, so several events' cache misses overlap
 *   dcore      core plus decoding: each Confluent-framed value is decoded
 *              (engage_decoder_decode), its event id hashed (XXH64), then core
 *   decode     decoding alone
 *   task       the real per-partition task (src/task.h): engage_task_process()
 *              for every record (decode, validation, lateness, dictionary,
 *              sessionizer, bitmaps, closing sessions, final days) and
 *              engage_task_persist() every -k records into a fresh RocksDB
 *              store, with no-op emit callbacks (-o: encode every emitted
 *              session and partial as the processor would)
 *   dcore-avro, decode-avro, task-avro
 *              the same with the decoder's zero-copy fast path switched off
 *              (avro-c's resolved reader for every record), for comparison
 * Results of the modes are cross-checked (counted events, sessions).
 *
 * Input: the synthetic workload below (-u users, -e events), or an
 * `engage gen` JSON-lines file (-j FILE), pre-encoded into Confluent-framed
 * values (schema id 1) before timing. -P P keeps the records of partition P
 * of -N (default 8) by `engage gen`'s rule (XXH64 of the key); -e N keeps
 * the first N records. -c FILE caches the encoded records: loaded if FILE
 * exists, else written after encoding (JSON parsing is slow, and slower
 * still under valgrind).
 *
 * -B (with a core mode) prints the bytes per active user-day of the day
 * records as engage_daystore_serialize_day() writes them, at the end of the
 * first core run.
 *
 * Timing: CPU time of this process, all threads (RocksDB's background
 * flushes count; the machine may be shared, and wall time would charge
 * other processes' time to the operator), best of -r runs, each on fresh
 * structures. Under valgrind --tool=callgrind --instr-atstart=no only the
 * timed loops are instrumented: instruction counts are the measure that
 * stays repeatable on a busy machine.
 *
 * Build (after building the library in build/):
 *   gcc -std=c11 -O2 -g -D_GNU_SOURCE -Isrc -Ibuild/gen bench/bench_operator.c \
 *       build/libengage_core.a $(pkg-config --libs rdkafka avro-c jansson) \
 *       -lrocksdb -lroaring -lxxhash -lm -lpthread -o build/bench_operator
 * Examples:
 *   build/bench_operator -u 100000 -e 2000000
 *   engage gen --users 100000 --days 35 > g.jsonl
 *   build/bench_operator -j g.jsonl -c g.bin -m task,task-avro -r 3
 *   build/bench_operator -c g.bin -P 0 -N 4 -m core -r 1 -B
 *   valgrind --tool=callgrind --instr-atstart=no build/bench_operator \
 *       -c g.bin -m task -r 1
 * A library without engage_decoder_set_fast_path() (before the zero-copy
 * decoder) needs -DENGAGE_BENCH_NO_FAST_TOGGLE; the -avro modes then run
 * the library's only decoder.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <valgrind/callgrind.h>
#include <xxhash.h>

#include "codec.h"
#include "daystore.h"
#include "dict.h"
#include "sessionizer.h"
#include "state.h"
#include "task.h"
#include "timeutil.h"

#define GAP_MS (30 * 60 * 1000LL)
#define GRACE_MS (5 * 60 * 1000LL)
#define SKEW_MS (60 * 60 * 1000LL)
#define MIN_TS_MS 1262304000000LL
#define MAX_UID 256

/* ---- records ------------------------------------------------------------ */

/* One input record: key and value bytes in the pool. */
typedef struct rec {
    uint64_t key_off, val_off;
    uint32_t key_len, val_len;
    int64_t kafka_ts;
} rec_t;

/* One pre-decoded event for the core modes (valid records only). */
typedef struct ev {
    uint64_t uid_off; /* into the pool: the record key, equal to the user id */
    uint32_t uid_len;
    int64_t ts;
    uint64_t h;
} ev_t;

typedef struct data {
    char *pool;
    size_t plen, pcap;
    rec_t *recs;
    size_t nrec, rcap;
    ev_t *evs;
    size_t nev;
} data_t;

static void die(const char *fmt, const char *arg) {
    fprintf(stderr, "bench_operator: ");
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    exit(1);
}

static void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n);
    if (!q)
        die("%s", "out of memory");
    return q;
}

static uint64_t pool_add(data_t *d, const void *b, size_t n) {
    if (d->plen + n > d->pcap) {
        size_t nc = d->pcap ? d->pcap : 1 << 20;
        while (nc < d->plen + n)
            nc *= 2;
        d->pool = xrealloc(d->pool, nc);
        d->pcap = nc;
    }
    memcpy(d->pool + d->plen, b, n);
    d->plen += n;
    return d->plen - n;
}

static void add_rec(data_t *d, const void *key, size_t kl, const void *val, size_t vl,
                    int64_t kts) {
    if (d->nrec == d->rcap) {
        d->rcap = d->rcap ? d->rcap * 2 : 1 << 16;
        d->recs = xrealloc(d->recs, d->rcap * sizeof(*d->recs));
    }
    rec_t *r = &d->recs[d->nrec++];
    r->key_off = pool_add(d, key, kl);
    r->key_len = (uint32_t)kl;
    r->val_off = pool_add(d, val, vl);
    r->val_len = (uint32_t)vl;
    r->kafka_ts = kts;
}

/* Avro binary, Confluent framing, schema id 1 = schemas/user_action.avsc. */
static unsigned char *avro_long(unsigned char *p, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (z > 0x7f) {
        *p++ = (unsigned char)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    *p++ = (unsigned char)z;
    return p;
}

static unsigned char *avro_str(unsigned char *p, const char *s, size_t n) {
    p = avro_long(p, (int64_t)n);
    memcpy(p, s, n);
    return p + n;
}

static size_t encode_action(unsigned char *out, const char *eid, size_t eidn, const char *uid,
                            size_t uidn, int64_t ts, const char *action, const char *platform,
                            const char *version) {
    unsigned char *p = out;
    *p++ = 0;
    *p++ = 0;
    *p++ = 0;
    *p++ = 0;
    *p++ = 1;
    p = avro_str(p, eid, eidn);
    p = avro_str(p, uid, uidn);
    p = avro_long(p, ts);
    p = avro_str(p, action, strlen(action));
    if (platform) {
        p = avro_long(p, 1);
        p = avro_str(p, platform, strlen(platform));
    } else {
        p = avro_long(p, 0);
    }
    if (version) {
        p = avro_long(p, 1);
        p = avro_str(p, version, strlen(version));
    } else {
        p = avro_long(p, 0);
    }
    return (size_t)(p - out);
}

/* The original synthetic workload: user ids "user-<n>" drawn with a skew (a
 * quarter of the users produce most events), event time advancing ~10 ms per
 * event with up to 60 s of disorder, 1% of events re-delivered. */
static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void make_synthetic(data_t *d, size_t nev, uint32_t nusers) {
    int64_t t0 = 1767225600000LL; /* 2026-01-01 */
    static const char *actions[] = {"open", "view", "click", "purchase"};
    unsigned char val[512];
    for (size_t i = 0; i < nev; i++) {
        if (i > 0 && rng() % 100 == 0) {
            rec_t r = d->recs[d->nrec - 1 - rng() % (d->nrec < 50 ? d->nrec : 50)];
            add_rec(d, d->pool + r.key_off, r.key_len, d->pool + r.val_off, r.val_len,
                    r.kafka_ts);
            continue;
        }
        uint32_t u = (rng() % 4 == 0) ? (uint32_t)(rng() % nusers)
                                       : (uint32_t)(rng() % (nusers / 4 + 1));
        int64_t ts = t0 + (int64_t)(i * 10) - (int64_t)(rng() % 60000);
        char uid[32], eid[32];
        size_t un = (size_t)sprintf(uid, "user-%u", u);
        size_t en = (size_t)sprintf(eid, "e%zu", i);
        size_t vl = encode_action(val, eid, en, uid, un, ts, actions[u % 4], "ios", "3.1.0");
        add_rec(d, uid, un, val, vl, t0 + (int64_t)(i * 10));
    }
}

static int b64val(int c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    return c == '+' ? 62 : c == '/' ? 63 : -1;
}

static size_t b64dec(const char *s, unsigned char *out, size_t cap) {
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; *s && *s != '='; s++) {
        int v = b64val((unsigned char)*s);
        if (v < 0)
            continue;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n < cap)
                out[n++] = (unsigned char)(acc >> bits);
        }
    }
    return n;
}

static const char *jstr(json_t *o, const char *k, size_t *n) {
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v))
        return NULL;
    *n = json_string_length(v);
    return json_string_value(v);
}

/* Reads `engage gen` JSON lines (docs/JSONL.md) and encodes each record. */
static void load_jsonl(data_t *d, const char *path, size_t maxrec) {
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f)
        die("cannot open %s", path);
    char *line = NULL;
    size_t cap = 0;
    unsigned char val[4096];
    while (getline(&line, &cap, f) > 0 && (!maxrec || d->nrec < maxrec)) {
        json_t *o = json_loads(line, JSON_ALLOW_NUL, NULL);
        if (!json_is_object(o))
            die("bad line in %s", path);
        size_t kn = 0, un = 0, en = 0, an = 0, pn, vn;
        const char *uid = jstr(o, "user_id", &un);
        const char *key = jstr(o, "key", &kn);
        json_t *jts = json_object_get(o, "timestamp");
        json_t *jkts = json_object_get(o, "kafka_timestamp");
        int64_t kts = json_is_integer(jkts) ? json_integer_value(jkts)
                      : json_is_integer(jts) ? json_integer_value(jts)
                                              : -1;
        const char *raw = json_string_value(json_object_get(o, "raw_value_b64"));
        size_t vl;
        if (raw) {
            vl = b64dec(raw, val, sizeof(val));
        } else {
            const char *eid = jstr(o, "event_id", &en), *act = jstr(o, "action", &an);
            const char *pl = jstr(o, "platform", &pn), *ver = jstr(o, "app_version", &vn);
            if (!eid || !uid || !act || !json_is_integer(jts) || un > 1024 || en > 1024)
                die("incomplete event in %s", path);
            vl = encode_action(val, eid, en, uid, un, json_integer_value(jts), act, pl, ver);
        }
        if (!key) {
            key = uid ? uid : "";
            kn = uid ? un : 0;
        }
        add_rec(d, key, kn, val, vl, kts);
        json_decref(o);
    }
    free(line);
    if (f != stdin)
        fclose(f);
}

#define CACHE_MAGIC "EGBENCH1"

static void save_cache(const data_t *d, const char *path) {
    FILE *f = fopen(path, "wb");
    if (!f)
        die("cannot write %s", path);
    uint64_t n[2] = {d->nrec, d->plen};
    if (fwrite(CACHE_MAGIC, 8, 1, f) != 1 || fwrite(n, sizeof(n), 1, f) != 1 ||
        fwrite(d->recs, sizeof(*d->recs), d->nrec, f) != d->nrec ||
        fwrite(d->pool, 1, d->plen, f) != d->plen || fclose(f))
        die("cannot write %s", path);
}

/* Keeps the records of partition part of nparts, by `engage gen`'s rule
 * (XXH64 of the key modulo the partition count), then the first maxrec. */
static void keep_partition(data_t *d, long part, long nparts, size_t maxrec) {
    size_t k = 0;
    for (size_t i = 0; i < d->nrec; i++) {
        const rec_t *r = &d->recs[i];
        if (part < 0 || XXH64(d->pool + r->key_off, r->key_len, 0) % (uint64_t)nparts ==
                            (uint64_t)part)
            d->recs[k++] = *r;
    }
    d->nrec = maxrec && k > maxrec ? maxrec : k;
}

static int load_cache(data_t *d, const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f)
        return 0;
    char magic[8];
    uint64_t n[2];
    if (fread(magic, 8, 1, f) != 1 || memcmp(magic, CACHE_MAGIC, 8) ||
        fread(n, sizeof(n), 1, f) != 1)
        die("bad cache %s", path);
    d->recs = xrealloc(NULL, (n[0] ? n[0] : 1) * sizeof(*d->recs));
    d->pool = xrealloc(NULL, n[1] ? n[1] : 1);
    if (fread(d->recs, sizeof(*d->recs), n[0], f) != n[0] || fread(d->pool, 1, n[1], f) != n[1])
        die("truncated cache %s", path);
    fclose(f);
    d->nrec = d->rcap = n[0];
    d->plen = d->pcap = n[1];
    return 1;
}

/* Decodes every record once (untimed) into the core modes' events: the
 * records the task would count or drop as duplicates (valid, not late). */
static void predecode(data_t *d, engage_decoder_t *dec) {
    d->evs = xrealloc(NULL, (d->nrec ? d->nrec : 1) * sizeof(*d->evs));
    int64_t max_ts = INT64_MIN;
    for (size_t i = 0; i < d->nrec; i++) {
        const rec_t *r = &d->recs[i];
        engage_action_t a;
        if (engage_decoder_decode(dec, d->pool + r->val_off, r->val_len, &a, NULL, 0))
            continue;
        if (a.user_id_len == 0 || a.user_id_len > MAX_UID || a.user_id_len != r->key_len ||
            memcmp(a.user_id, d->pool + r->key_off, r->key_len) || a.ts_ms < MIN_TS_MS ||
            (r->kafka_ts >= 0 && a.ts_ms > r->kafka_ts + SKEW_MS))
            continue;
        if (max_ts != INT64_MIN && a.ts_ms < max_ts - GRACE_MS)
            continue; /* late */
        if (a.ts_ms > max_ts)
            max_ts = a.ts_ms;
        ev_t *e = &d->evs[d->nev++];
        e->uid_off = r->key_off; /* equal to the user id (checked above) */
        e->uid_len = (uint32_t)a.user_id_len;
        e->ts = a.ts_ms;
        e->h = XXH64(a.event_id, a.event_id_len, 0);
    }
}

/* ---- timed runs ----------------------------------------------------------- */

/* CPU time of this process (see the top comment). */
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

typedef struct run {
    double secs;
    size_t items; /* what the rate is per: records or events */
    size_t counted, closed, users;
    uint64_t check; /* mode-specific checksum */
} run_t;

#define PF_DICT 16
#define PF_SESS 8

typedef struct core {
    engage_dict_t *d;
    engage_sessionizer_t *s;
    engage_daystore_t *ds;
    size_t closed;
} core_t;

static void core_on_close(void *opaque, uint32_t user, int64_t start, int64_t last,
                          uint32_t actions) {
    core_t *c = opaque;
    engage_daystore_add_session(c->ds, engage_day_of_ms(start), user, last - start, actions);
    c->closed++;
}

static void core_init(core_t *c) {
    c->d = engage_dict_new();
    c->s = engage_sessionizer_new(GAP_MS);
    c->ds = engage_daystore_new();
    c->closed = 0;
    if (!c->d || !c->s || !c->ds)
        die("%s", "out of memory");
}

/* Bytes per active user-day of the serialized days (engage_daystore_
 * serialize_day(); the layout is in daystore.c: 32 fixed bytes, u32 length
 * and the active-user bitmap, u32 length and the session-user bitmap, an
 * 8-byte checksum). Days not complete at the end of the input are counted
 * too. */
static int report_bytes;

static void day_bytes(engage_daystore_t *ds) {
    int32_t lo, hi;
    engage_buf_t b = {0};
    uint64_t users = 0, susers = 0, la = 0, lu = 0, total = 0;
    if (!engage_daystore_range(ds, &lo, &hi))
        return;
    for (int32_t day = lo; day <= hi; day++) {
        engage_day_stats_t st;
        engage_buf_reset(&b);
        if (engage_daystore_serialize_day(ds, day, &b))
            continue;
        engage_daystore_stats(ds, day, &st);
        uint32_t a = engage_get_u32(b.p + 32);
        la += a;
        lu += engage_get_u32(b.p + 36 + a);
        total += b.len;
        users += engage_daystore_dau(ds, day);
        susers += (uint64_t)st.session_users;
    }
    printf("days %d..%d: %" PRIu64 " active user-days, %" PRIu64 " session user-days; "
           "bytes per active user-day: active bitmap %.3f, session-user bitmap %.3f, "
           "whole day records %.3f\n",
           lo, hi, users, susers, (double)la / (double)users, (double)lu / (double)users,
           (double)total / (double)users);
    engage_buf_free(&b);
}

static void core_done(core_t *c, run_t *res) {
    engage_sessionizer_close_all(c->s, core_on_close, c);
    if (report_bytes) {
        day_bytes(c->ds);
        report_bytes = 0;
    }
    res->closed = c->closed;
    res->users = engage_dict_count(c->d);
    engage_daystore_destroy(c->ds);
    engage_sessionizer_destroy(c->s);
    engage_dict_destroy(c->d);
}

/* The per-event step after the ordinal is known. */
static inline void core_step(core_t *c, uint32_t ord, int64_t ts, uint64_t h, size_t k,
                             size_t batch, int64_t *max_ts, run_t *res) {
    int r = engage_sessionizer_add(c->s, ord, ts, h);
    if (r < 0)
        die("%s", "sessionizer: out of memory");
    if (r) {
        res->counted++;
        if (engage_daystore_add_active(c->ds, engage_day_of_ms(ts), ord))
            die("%s", "daystore: out of memory");
    }
    if (batch) {
        if (ts > *max_ts)
            *max_ts = ts;
        if ((k + 1) % batch == 0)
            engage_sessionizer_close(c->s, *max_ts - GRACE_MS, core_on_close, c);
    } else if (ts > *max_ts) { /* as the task: whenever the watermark advances */
        *max_ts = ts;
        engage_sessionizer_close(c->s, ts - GRACE_MS, core_on_close, c);
    }
}

static run_t run_core(const data_t *d, size_t batch, int pipelined) {
    core_t c;
    run_t res = {0};
    int64_t max_ts = INT64_MIN;
    uint32_t ring[2 * PF_SESS];
    const ev_t *evs = d->evs;
    size_t nev = d->nev;
    const char *pool = d->pool;
    core_init(&c);
    CALLGRIND_START_INSTRUMENTATION;
    double t0 = now_s();
    if (!pipelined) {
        for (size_t k = 0; k < nev; k++) {
            uint32_t ord;
            int is_new;
            if (engage_dict_get_or_add(c.d, pool + evs[k].uid_off, evs[k].uid_len, &ord,
                                       &is_new))
                die("%s", "dict: out of memory");
            core_step(&c, ord, evs[k].ts, evs[k].h, k, batch, &max_ts, &res);
        }
    } else {
        for (size_t i = 0; i < nev + PF_SESS; i++) {
            if (i + PF_DICT < nev)
                engage_dict_prefetch(c.d, pool + evs[i + PF_DICT].uid_off,
                                     evs[i + PF_DICT].uid_len);
            if (i < nev) {
                int is_new;
                uint32_t *o = &ring[i % (2 * PF_SESS)];
                if (engage_dict_get_or_add(c.d, pool + evs[i].uid_off, evs[i].uid_len, o,
                                           &is_new))
                    die("%s", "dict: out of memory");
                engage_sessionizer_prefetch(c.s, *o, evs[i].h);
            }
            if (i < PF_SESS)
                continue;
            size_t k = i - PF_SESS;
            core_step(&c, ring[k % (2 * PF_SESS)], evs[k].ts, evs[k].h, k, batch, &max_ts,
                      &res);
        }
    }
    res.secs = now_s() - t0;
    CALLGRIND_STOP_INSTRUMENTATION;
    res.items = nev;
    core_done(&c, &res);
    return res;
}

/* Decoding (and for dcore the core step) over all records; the same
 * validity and lateness filter as predecode(). */
static run_t run_decode(const data_t *d, engage_decoder_t *dec, size_t batch, int with_core) {
    core_t c;
    run_t res = {0};
    int64_t max_ts = INT64_MIN, fmax = INT64_MIN;
    size_t k = 0;
    char msg[256];
    if (with_core)
        core_init(&c);
    CALLGRIND_START_INSTRUMENTATION;
    double t0 = now_s();
    for (size_t i = 0; i < d->nrec; i++) {
        const rec_t *r = &d->recs[i];
        engage_action_t a;
        if (engage_decoder_decode(dec, d->pool + r->val_off, r->val_len, &a, msg, sizeof(msg)))
            continue;
        res.check += (uint64_t)a.ts_ms + a.user_id_len + a.event_id_len + a.action_len +
                     a.platform_len + a.app_version_len + (a.platform != NULL);
        if (!with_core)
            continue;
        if (a.user_id_len == 0 || a.user_id_len > MAX_UID || a.user_id_len != r->key_len ||
            memcmp(a.user_id, d->pool + r->key_off, r->key_len) || a.ts_ms < MIN_TS_MS ||
            (r->kafka_ts >= 0 && a.ts_ms > r->kafka_ts + SKEW_MS))
            continue;
        if (fmax != INT64_MIN && a.ts_ms < fmax - GRACE_MS)
            continue;
        if (a.ts_ms > fmax)
            fmax = a.ts_ms;
        uint32_t ord;
        int is_new;
        if (engage_dict_get_or_add(c.d, a.user_id, a.user_id_len, &ord, &is_new))
            die("%s", "dict: out of memory");
        core_step(&c, ord, a.ts_ms, XXH64(a.event_id, a.event_id_len, 0), k++, batch, &max_ts,
                  &res);
    }
    res.secs = now_s() - t0;
    CALLGRIND_STOP_INSTRUMENTATION;
    res.items = d->nrec;
    if (with_core)
        core_done(&c, &res);
    return res;
}

typedef struct sink {
    engage_encoder_t *enc; /* NULL: emit nothing */
    size_t sessions, partials, bytes;
    uint64_t check;
} sink_t;

static int sink_session(void *opaque, const engage_session_rec_t *r) {
    sink_t *s = opaque;
    s->sessions++;
    s->check += (uint64_t)r->start_ms * 31 + (uint64_t)r->actions;
    if (s->enc) {
        const void *b;
        size_t n;
        if (engage_encode_session(s->enc, r, &b, &n))
            return 1;
        s->bytes += n;
    }
    return 0;
}

static int sink_partial(void *opaque, const engage_partial_rec_t *r) {
    sink_t *s = opaque;
    s->partials++;
    s->check += (uint64_t)r->dau * 7 + (uint64_t)r->mau * 13 + (uint64_t)r->sessions;
    if (s->enc) {
        const void *b;
        size_t n;
        if (engage_encode_partial(s->enc, r, &b, &n))
            return 1;
        s->bytes += n;
    }
    return 0;
}

static int sink_dead(void *opaque, const engage_input_rec_t *rec, const char *reason,
                     const char *errmsg) {
    (void)opaque, (void)rec, (void)reason, (void)errmsg;
    return 0;
}

static int sink_late(void *opaque, const engage_input_rec_t *rec, int64_t wm) {
    (void)opaque, (void)rec, (void)wm;
    return 0;
}

static run_t run_task(const data_t *d, engage_decoder_t *dec, const char *dir, size_t every,
                      int encode, uint64_t *disk_bytes) {
    char err[512];
    run_t res = {0};
    sink_t sink = {0};
    if (encode && !(sink.enc = engage_encoder_new(1, 101, 102, 103, err, sizeof(err))))
        die("encoder: %s", err);
    if (engage_state_destroy_dir(dir, err, sizeof(err)))
        die("%s", err);
    engage_emit_t emit = {&sink, sink_session, sink_partial, sink_dead, sink_late};
    engage_task_conf_t conf = {.gap_ms = GAP_MS,
                               .grace_ms = GRACE_MS,
                               .max_skew_ms = SKEW_MS,
                               .min_timestamp_ms = MIN_TS_MS,
                               .max_user_id_bytes = MAX_UID,
                               .partition_count = 1};
    engage_task_t *t = engage_task_open(0, dir, &conf, dec, &emit, err, sizeof(err));
    if (!t)
        die("task: %s", err);
    CALLGRIND_START_INSTRUMENTATION;
    double t0 = now_s();
    for (size_t i = 0; i < d->nrec; i++) {
        const rec_t *r = &d->recs[i];
        engage_input_rec_t in = {.key = d->pool + r->key_off,
                                 .key_len = r->key_len,
                                 .value = d->pool + r->val_off,
                                 .value_len = r->val_len,
                                 .partition = 0,
                                 .offset = (int64_t)i,
                                 .kafka_ts = r->kafka_ts};
        if (engage_task_process(t, &in, err, sizeof(err)))
            die("process: %s", err);
        if ((i + 1) % every == 0 && engage_task_persist(t, err, sizeof(err)))
            die("persist: %s", err);
    }
    if (engage_task_persist(t, err, sizeof(err)))
        die("persist: %s", err);
    res.secs = now_s() - t0;
    CALLGRIND_STOP_INSTRUMENTATION;
    res.items = d->nrec;
    /* untimed: close what is still open, so the session count is complete */
    if (engage_task_finish(t, err, sizeof(err)))
        die("finish: %s", err);
    engage_task_stats_t st;
    engage_task_get_stats(t, &st);
    res.counted = (size_t)st.counted;
    res.closed = (size_t)st.sessions_closed;
    res.check = sink.check;
    *disk_bytes = engage_state_disk_size(engage_task_store(t));
    engage_task_close(t);
    engage_encoder_destroy(sink.enc);
    engage_state_destroy_dir(dir, err, sizeof(err));
    return res;
}

/* ---- main ----------------------------------------------------------------- */

static int has_mode(const char *list, const char *m) {
    size_t n = strlen(m);
    for (const char *p = list; (p = strstr(p, m)); p += n)
        if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return 1;
    return 0;
}

static void usage(void) {
    fprintf(stderr,
            "usage: bench_operator [-j FILE.jsonl] [-c CACHE] [-P partition [-N partitions]] [-u users] "
            "[-e records]\n"
            "                      [-b close_every] [-k persist_every] [-r reps] [-m modes] "
            "[-s dir] [-o] [-B]\n"
            "modes: core,pipe,dcore,decode,task,dcore-avro,decode-avro,task-avro\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *jsonl = NULL, *cache = NULL, *modes = "core,pipe,dcore,task";
    char dirbuf[256];
    const char *dir = NULL;
    size_t nrec = 0, batch = 0, every = 100000;
    uint32_t nusers = 100000;
    long part = -1, nparts = 8;
    int reps = 3, encode = 0, opt;
    while ((opt = getopt(argc, argv, "j:P:N:c:u:e:b:k:r:m:s:oB")) != -1) {
        switch (opt) {
        case 'j': jsonl = optarg; break;
        case 'P': part = strtol(optarg, NULL, 10); break;
        case 'N': nparts = strtol(optarg, NULL, 10); break;
        case 'c': cache = optarg; break;
        case 'u': nusers = (uint32_t)strtoul(optarg, NULL, 10); break;
        case 'e': nrec = strtoull(optarg, NULL, 10); break;
        case 'b': batch = strtoull(optarg, NULL, 10); break;
        case 'k': every = strtoull(optarg, NULL, 10); break;
        case 'r': reps = atoi(optarg); break;
        case 'm': modes = optarg; break;
        case 's': dir = optarg; break;
        case 'o': encode = 1; break;
        case 'B': report_bytes = 1; break;
        default: usage();
        }
    }
    if (nusers < 4 || every == 0 || reps < 1 || nparts < 1 || part >= nparts ||
        optind != argc)
        usage();
    if (!dir) {
        snprintf(dirbuf, sizeof(dirbuf), "/tmp/bench_operator.%d", (int)getpid());
        dir = dirbuf;
    }

    data_t d = {0};
    if (!cache || !load_cache(&d, cache)) {
        if (jsonl)
            load_jsonl(&d, jsonl, part < 0 ? nrec : 0);
        else
            make_synthetic(&d, nrec ? nrec : 1000000, nusers);
        if (cache)
            save_cache(&d, cache);
    }
    keep_partition(&d, part, nparts, nrec);
    char err[512];
    engage_decoder_t *dec = engage_decoder_new(1, "1=builtin", NULL, err, sizeof(err));
    if (!dec)
        die("decoder: %s", err);
    predecode(&d, dec);
    size_t vbytes = 0;
    for (size_t i = 0; i < d.nrec; i++)
        vbytes += d.recs[i].val_len;
    printf("records %zu (%.1f MB of values), valid events %zu\n", d.nrec, (double)vbytes / 1e6,
           d.nev);

    static const char *all[] = {"core",       "pipe",        "dcore",     "decode", "task",
                                "dcore-avro", "decode-avro", "task-avro", NULL};
    run_t ref[4];
    int have[4] = {0}, have_counts = 0;
    size_t counted = 0, closed = 0;
    for (int m = 0; all[m]; m++) {
        const char *mode = all[m];
        if (!has_mode(modes, mode))
            continue;
        int avro = strstr(mode, "-avro") != NULL;
#ifndef ENGAGE_BENCH_NO_FAST_TOGGLE
        engage_decoder_set_fast_path(dec, !avro);
#else
        if (!avro && strncmp(mode, "core", 4) && strncmp(mode, "pipe", 4))
            fprintf(stderr, "note: library without the fast-path switch\n");
#endif
        run_t best = {0};
        uint64_t disk = 0;
        for (int r = 0; r < reps; r++) {
            run_t x;
            if (!strcmp(mode, "core") || !strcmp(mode, "pipe"))
                x = run_core(&d, batch, mode[0] == 'p');
            else if (!strncmp(mode, "dcore", 5))
                x = run_decode(&d, dec, batch, 1);
            else if (!strncmp(mode, "decode", 6))
                x = run_decode(&d, dec, batch, 0);
            else
                x = run_task(&d, dec, dir, every, encode, &disk);
            if (r == 0 || x.secs < best.secs)
                best = x;
        }
        /* cross-checks: variants of a mode compute the same thing, and
         * every mode that counts counts the same events and sessions */
        int g = !strncmp(mode, "task", 4)     ? 3
                : !strncmp(mode, "decode", 6) ? 2
                : !strncmp(mode, "dcore", 5)  ? 1
                                              : 0;
        if (have[g] && best.check != ref[g].check)
            die("mode %s computed something else than its reference", mode);
        if (g != 2) {
            if (have_counts && (best.counted != counted || best.closed != closed))
                die("mode %s counted other events or sessions than the modes before", mode);
            counted = best.counted;
            closed = best.closed;
            have_counts = 1;
        }
        if (!have[g]) {
            ref[g] = best;
            have[g] = 1;
        }
        printf("%-11s: %.3f s  %6.2f M/s  %6.0f ns per %s  (counted %zu, sessions %zu",
               mode, best.secs, (double)best.items / best.secs / 1e6,
               best.secs * 1e9 / (double)best.items,
               !strcmp(mode, "core") || !strcmp(mode, "pipe") ? "event" : "record",
               best.counted, best.closed);
        if (disk)
            printf(", store %.1f MB", (double)disk / 1e6);
        printf("; CPU time, best of %d)\n", reps);
        fflush(stdout);
    }
    engage_decoder_destroy(dec);
    free(d.pool);
    free(d.recs);
    free(d.evs);
    return 0;
}
