/*
 * bench_operator.c - micro-benchmark of the per-event operator path:
 * engage_dict_get_or_add + engage_sessionizer_add + engage_daystore_add_active,
 * with engage_sessionizer_close every batch (as the processor does).
 * No Kafka, no decoding, no RocksDB: this is the in-memory ceiling.
 *
 * Build and run (not part of the CMake build):
 *   gcc -std=c11 -O2 -D_GNU_SOURCE -Isrc bench/bench_operator.c src/dict.c \
 *       src/sessionizer.c src/daystore.c src/err.c -lroaring -lxxhash -o bench_operator
 *   ./bench_operator [events=1000000] [users=100000] [batch=10000]
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

static size_t closed_sessions;
static void on_close(void *opaque, uint32_t user, int64_t start, int64_t last,
                     uint32_t actions) {
    engage_daystore_t *ds = opaque;
    int32_t day = (int32_t)(start / MS_PER_DAY);
    engage_daystore_add_session(ds, day, user, last - start, actions);
    closed_sessions++;
}

int main(int argc, char **argv) {
    size_t nev = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    uint32_t nusers = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 100000;
    size_t batch = argc > 3 ? strtoull(argv[3], NULL, 10) : 10000;

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

    engage_dict_t *d = engage_dict_new();
    engage_sessionizer_t *s = engage_sessionizer_new(GAP_MS);
    engage_daystore_t *ds = engage_daystore_new();
    size_t counted = 0;
    int64_t max_ts = INT64_MIN;

    double start = now_s();
    for (size_t i = 0; i < nev; i++) {
        const ev_t *e = &evs[i];
        uint32_t ord;
        int is_new;
        if (engage_dict_get_or_add(d, text + e->id_off, e->id_len, &ord, &is_new))
            return 1;
        int r = engage_sessionizer_add(s, ord, e->ts, e->h);
        if (r < 0)
            return 1;
        if (r) {
            counted++;
            engage_daystore_add_active(ds, (int32_t)(e->ts / MS_PER_DAY), ord);
        }
        if (e->ts > max_ts)
            max_ts = e->ts;
        if ((i + 1) % batch == 0)
            engage_sessionizer_close(s, max_ts - GRACE_MS, on_close, ds);
    }
    double mid = now_s();
    size_t open_at_end = engage_sessionizer_open_count(s);
    engage_sessionizer_close_all(s, on_close, ds);
    double end = now_s();

    double secs = mid - start;
    printf("events %zu  users %u  counted %zu  open-at-end %zu  closed %zu\n", nev,
           engage_dict_count(d), counted, open_at_end, closed_sessions);
    printf("operator path: %.3f s  %.2f M events/s  (%.0f ns/event)\n", secs,
           (double)nev / secs / 1e6, secs * 1e9 / (double)nev);
    printf("close_all at end: %.3f s\n", end - mid);

    engage_daystore_destroy(ds);
    engage_sessionizer_destroy(s);
    engage_dict_destroy(d);
    free(evs);
    free(text);
    free(off);
    free(len);
    return 0;
}
