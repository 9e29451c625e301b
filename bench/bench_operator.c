/*
 * bench_operator.c - micro-benchmark of the per-event operator path:
 * engage_dict_get_or_add + engage_sessionizer_add + engage_daystore_add_active,
 * with engage_sessionizer_close every batch (as the processor does).
 * No Kafka, no decoding, no RocksDB: this is the in-memory ceiling.
 *
 * Build and run (not part of the CMake build):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Isrc bench/bench_operator.c src/dict.c \
 *       src/sessionizer.c src/daystore.c src/err.c -lroaring -lxxhash -o bench_operator
 *   ./bench_operator [events=1000000] [users=100000] [batch=10000] [reps=3]
 *
 * Two loops are timed, each on fresh structures, best of reps:
 *  - plain: one event at a time, as written in the obvious way;
 *  - pipelined: engage_dict_prefetch() PF_DICT events ahead, the dictionary
 *    lookup and engage_sessionizer_prefetch() PF_SESS events ahead, so the
 *    cache misses of several events overlap. Same results, in the same
 *    order (checked).
 *
 * Workload: user ids "user-<n>" drawn with a skew (a quarter of the users
 * produce most events), event times advancing ~1 s of event time per 100
 * events with up to 60 s of disorder, random 64-bit event hashes, 1% of
 * events re-delivered. Ids and hashes are generated before timing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "daystore.h"
#include "dict.h"
#include "sessionizer.h"

#define GAP_MS (30 * 60 * 1000LL)
#define GRACE_MS (5 * 60 * 1000LL)
#define MS_PER_DAY 86400000LL

typedef struct ev {
    uint32_t id_off; /* into the id text */
    uint16_t id_len;
    int64_t ts;
    uint64_t h;
} ev_t;

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* CPU time of this process: the machine may be shared, and a wall clock
 * would charge other processes' time to the operator. */
static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

#define PF_DICT 16
#define PF_SESS 8

static size_t closed_sessions;
static void on_close(void *opaque, uint32_t user, int64_t start, int64_t last,
                     uint32_t actions) {
    engage_daystore_t *ds = opaque;
    int32_t day = (int32_t)(start / MS_PER_DAY);
    engage_daystore_add_session(ds, day, user, last - start, actions);
    closed_sessions++;
}

typedef struct run {
    double secs;
    size_t counted, open_at_end, closed;
    uint32_t users;
} run_t;

static run_t run_once(const ev_t *evs, size_t nev, const char *text, size_t batch,
                      int pipelined) {
    engage_dict_t *d = engage_dict_new();
    engage_sessionizer_t *s = engage_sessionizer_new(GAP_MS);
    engage_daystore_t *ds = engage_daystore_new();
    run_t res = {0};
    int64_t max_ts = INT64_MIN;
    uint32_t ring[2 * PF_SESS];
    closed_sessions = 0;

    double start = now_s();
    size_t lead = pipelined ? PF_SESS : 0;
    for (size_t i = 0; i < nev + lead; i++) {
        uint32_t ord;
        if (pipelined) {
            if (i + PF_DICT < nev)
                engage_dict_prefetch(d, text + evs[i + PF_DICT].id_off,
                                     evs[i + PF_DICT].id_len);
            if (i < nev) {
                int is_new;
                uint32_t *o = &ring[i % (2 * PF_SESS)];
                if (engage_dict_get_or_add(d, text + evs[i].id_off, evs[i].id_len, o,
                                           &is_new))
                    exit(1);
                engage_sessionizer_prefetch(s, *o, evs[i].h);
            }
            if (i < PF_SESS)
                continue;
            ord = ring[(i - PF_SESS) % (2 * PF_SESS)];
        } else {
            int is_new;
            if (engage_dict_get_or_add(d, text + evs[i].id_off, evs[i].id_len, &ord, &is_new))
                exit(1);
        }
        size_t k = i - lead;
        const ev_t *e = &evs[k];
        int r = engage_sessionizer_add(s, ord, e->ts, e->h);
        if (r < 0)
            exit(1);
        if (r) {
            res.counted++;
            engage_daystore_add_active(ds, (int32_t)(e->ts / MS_PER_DAY), ord);
        }
        if (e->ts > max_ts)
            max_ts = e->ts;
        if ((k + 1) % batch == 0)
            engage_sessionizer_close(s, max_ts - GRACE_MS, on_close, ds);
    }
    res.secs = now_s() - start;
    res.open_at_end = engage_sessionizer_open_count(s);
    engage_sessionizer_close_all(s, on_close, ds);
    res.closed = closed_sessions;
    res.users = engage_dict_count(d);
    engage_daystore_destroy(ds);
    engage_sessionizer_destroy(s);
    engage_dict_destroy(d);
    return res;
}

int main(int argc, char **argv) {
    size_t nev = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    uint32_t nusers = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 100000;
    size_t batch = argc > 3 ? strtoull(argv[3], NULL, 10) : 10000;
    int reps = argc > 4 ? atoi(argv[4]) : 3;
    if (nev == 0 || nusers < 4 || batch == 0 || reps < 1) {
        fprintf(stderr, "usage: bench_operator [events] [users>=4] [batch] [reps]\n");
        return 2;
    }

    char *text = malloc((size_t)nusers * 16);
    uint32_t *off = malloc(nusers * sizeof(*off));
    uint16_t *len = malloc(nusers * sizeof(*len));
    size_t tl = 0;
    for (uint32_t u = 0; u < nusers; u++) {
        off[u] = (uint32_t)tl;
        len[u] = (uint16_t)sprintf(text + tl, "user-%u", u);
        tl += len[u];
    }
    ev_t *evs = malloc(nev * sizeof(*evs));
    int64_t t0 = 1767225600000LL; /* 2026-01-01 */
    for (size_t i = 0; i < nev; i++) {
        uint32_t u = (rng() % 4 == 0) ? (uint32_t)(rng() % nusers)
                                       : (uint32_t)(rng() % (nusers / 4 + 1));
        int64_t ts = t0 + (int64_t)(i * 10) - (int64_t)(rng() % 60000);
        if (i > 0 && rng() % 100 == 0) {
            evs[i] = evs[i - 1 - rng() % (i < 50 ? i : 50)]; /* re-delivery */
            continue;
        }
        evs[i] = (ev_t){off[u], len[u], ts, rng()};
    }

    const char *names[2] = {"plain", "pipelined"};
    run_t first = {0};
    for (int mode = 0; mode < 2; mode++) {
        run_t best = {0};
        for (int r = 0; r < reps; r++) {
            run_t x = run_once(evs, nev, text, batch, mode);
            if (r == 0 || x.secs < best.secs)
                best = x;
        }
        if (mode == 0) {
            first = best;
            printf("events %zu  users %u  counted %zu  open at end %zu  sessions %zu\n", nev,
                   best.users, best.counted, best.open_at_end, best.closed);
        } else if (best.counted != first.counted || best.closed != first.closed ||
                   best.open_at_end != first.open_at_end) {
            fprintf(stderr, "pipelined run differs from plain run\n");
            return 1;
        }
        printf("%-9s: %.3f s  %.2f M events/s  (%.0f ns/event, CPU time, best of %d)\n",
               names[mode], best.secs, (double)nev / best.secs / 1e6,
               best.secs * 1e9 / (double)nev, reps);
    }
    free(evs);
    free(text);
    free(off);
    free(len);
    return 0;
}
