/*
 * test_gen.c - the synthetic workload generator: determinism, line format,
 * partitions, bounded disorder, duplicate / malformed / late fractions,
 * session-gap boundary cases, midnight crossings, and streaming a large run.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <xxhash.h>

#include "commands.h"
#include "timeutil.h"

static char *gen_to_mem(const engage_gen_opts_t *o, size_t *len, int64_t *lines) {
    char *buf = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&buf, &n);
    assert_non_null(mem);
    *lines = engage_gen_write(o, mem);
    fclose(mem);
    *len = n;
    return buf;
}

static void small_opts(engage_gen_opts_t *o) {
    engage_gen_defaults(o);
    o->users = 300;
    o->days = 5;
}

static void test_defaults(void **s) {
    (void)s;
    engage_gen_opts_t o;
    engage_gen_defaults(&o);
    assert_int_equal(o.seed, 42);
    assert_int_equal(o.users, 2000);
    assert_int_equal(o.days, 35);
    char d[16];
    assert_string_equal(engage_day_format(o.start_day, d, sizeof(d)), "2026-01-01");
    assert_int_equal(o.partitions, 4);
    assert_int_equal(o.jitter_ms, 60000);
    assert_int_equal(o.max_events, 0);
}

static void test_determinism(void **s) {
    (void)s;
    engage_gen_opts_t o;
    small_opts(&o);
    size_t l1, l2, l3;
    int64_t n1, n2, n3;
    char *a = gen_to_mem(&o, &l1, &n1);
    char *b = gen_to_mem(&o, &l2, &n2);
    assert_true(n1 > 1000);
    assert_int_equal(n1, n2);
    assert_int_equal(l1, l2);
    assert_memory_equal(a, b, l1);
    o.seed = 43;
    char *c = gen_to_mem(&o, &l3, &n3);
    assert_true(l3 != l1 || memcmp(a, c, l1) != 0);
    /* line count matches the newlines */
    int64_t nl = 0;
    for (size_t i = 0; i < l1; i++)
        nl += a[i] == '\n';
    assert_int_equal(nl, n1);
    free(a);
    free(b);
    free(c);
}

static void test_max_events(void **s) {
    (void)s;
    engage_gen_opts_t o;
    small_opts(&o);
    o.max_events = 777;
    size_t l;
    int64_t n;
    char *a = gen_to_mem(&o, &l, &n);
    assert_int_equal(n, 777);
    int64_t nl = 0;
    for (size_t i = 0; i < l; i++)
        nl += a[i] == '\n';
    assert_int_equal(nl, 777);
    /* a prefix of the unlimited output */
    o.max_events = 0;
    size_t lf;
    int64_t nf;
    char *f = gen_to_mem(&o, &lf, &nf);
    assert_true(lf > l);
    assert_memory_equal(a, f, l);
    free(a);
    free(f);
}

static unsigned char *b64dec(const char *s, size_t *len) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = strlen(s);
    unsigned char *out = malloc(n);
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n && s[i] != '='; i++) {
        const char *p = strchr(tbl, s[i]);
        assert_non_null(p);
        acc = (acc << 6) | (uint32_t)(p - tbl);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    *len = o;
    return out;
}

typedef struct ev {
    int64_t user, ts;
} ev_t;

static int ev_cmp(const void *a, const void *b) {
    const ev_t *x = a, *y = b;
    if (x->user != y->user)
        return x->user < y->user ? -1 : 1;
    return (x->ts > y->ts) - (x->ts < y->ts);
}

/* Parses every line and checks the contract of docs/JSONL.md plus the
 * generator's promises. */
static void test_content(void **s) {
    (void)s;
    engage_gen_opts_t o;
    engage_gen_defaults(&o);
    o.users = 1000;
    o.days = 20;
    o.partitions = 6;
    o.dup_rate = 0.05;
    o.malformed_rate = 0.02;
    o.late_rate = 0.01;
    size_t len;
    int64_t lines;
    char *out = gen_to_mem(&o, &len, &lines);
    assert_true(lines > 20000);

    int64_t events = 0, dups = 0, dead = 0, late = 0, plain = 0;
    int64_t dead_kinds[16] = {0};
    static const char *const reasons[] = {"dead:bad_framing",     "dead:unknown_schema_id",
                                          "dead:undecodable_avro", "dead:bad_user_id",
                                          "dead:key_mismatch",    "dead:timestamp_out_of_range"};
    int64_t max_ts = INT64_MIN / 2;
    int64_t pmax[6];
    for (int i = 0; i < 6; i++)
        pmax[i] = INT64_MIN / 2;
    int64_t *user_events = calloc((size_t)o.users, sizeof(int64_t));
    ev_t *evs = malloc(sizeof(ev_t) * (size_t)lines);
    size_t nev = 0;
    /* event_id -> timestamp for duplicate checks (ids are "e<n>", dense) */
    size_t idcap = (size_t)lines * 2;
    int64_t *id_ts = malloc(sizeof(int64_t) * idcap);
    for (size_t i = 0; i < idcap; i++)
        id_ts[i] = INT64_MIN;

    char *line = out;
    while (line < out + len) {
        char *nl = memchr(line, '\n', (size_t)(out + len - line));
        assert_non_null(nl);
        json_error_t jerr;
        json_t *j = json_loadb(line, (size_t)(nl - line), 0, &jerr);
        if (!j)
            fail_msg("line does not parse: %s: %.*s", jerr.text, (int)(nl - line), line);
        assert_true(json_is_object(j));
        const char *expect = json_string_value(json_object_get(j, "expect"));
        json_t *jp = json_object_get(j, "partition");
        assert_true(json_is_integer(jp));
        int64_t part = json_integer_value(jp);
        assert_true(part >= 0 && part < o.partitions);
        json_t *raw = json_object_get(j, "raw_value_b64");
        if (raw) {
            assert_non_null(expect);
            assert_true(json_is_integer(json_object_get(j, "kafka_timestamp")));
            size_t vn;
            unsigned char *v = b64dec(json_string_value(raw), &vn);
            assert_true(vn >= 1);
            if (!strcmp(expect, "dead:bad_framing")) {
                assert_true(v[0] != 0 || vn < 5);
            } else if (!strcmp(expect, "dead:unknown_schema_id")) {
                assert_true(vn > 5 && v[0] == 0 && v[1] == 0 && v[2] == 0 && v[3] == 3 &&
                            v[4] == 0xe7); /* 999 */
            } else {
                assert_string_equal(expect, "dead:undecodable_avro");
                assert_true(vn > 5 && v[0] == 0 && v[4] == 1);
            }
            free(v);
        } else {
            const char *eid = json_string_value(json_object_get(j, "event_id"));
            const char *uid = json_string_value(json_object_get(j, "user_id"));
            const char *act = json_string_value(json_object_get(j, "action"));
            json_t *jts = json_object_get(j, "timestamp");
            assert_non_null(eid);
            assert_non_null(uid);
            assert_non_null(act);
            assert_true(json_is_integer(jts));
            json_t *pl = json_object_get(j, "platform");
            assert_true(json_is_null(pl) || json_is_string(pl));
            assert_true(json_is_string(json_object_get(j, "app_version")));
            int64_t ts = json_integer_value(jts);
            size_t ulen = strlen(uid);
            /* partition = XXH64(user_id) % partitions, for every line */
            assert_int_equal(part, (int64_t)(XXH64(uid, ulen, 0) % (uint64_t)o.partitions));
            int is_dead = expect && !strncmp(expect, "dead:", 5);
            if (is_dead) {
                if (!strcmp(expect, "dead:bad_user_id"))
                    assert_true(ulen == 0 || ulen == 300);
                else if (!strcmp(expect, "dead:key_mismatch"))
                    assert_string_not_equal(json_string_value(json_object_get(j, "key")), uid);
                else if (!strcmp(expect, "dead:timestamp_out_of_range")) {
                    json_t *kt = json_object_get(j, "kafka_timestamp");
                    assert_true(json_is_integer(kt));
                    assert_true(ts < 1262304000000LL ||
                                ts - json_integer_value(kt) == 2 * 3600 * 1000);
                } else
                    fail_msg("unexpected reason %s", expect);
            } else {
                assert_true(ulen > 1 && uid[0] == 'u');
                int64_t uidx = strtoll(uid + 1, NULL, 10);
                assert_true(uidx >= 0 && uidx < o.users);
                assert_null(json_object_get(j, "kafka_timestamp"));
                assert_null(json_object_get(j, "key"));
                int64_t id = strtoll(eid + 1, NULL, 10);
                assert_true(id >= 0 && (size_t)id < idcap);
                int is_dup = expect && !strcmp(expect, "dup");
                int is_late = expect && !strcmp(expect, "late");
                if (id_ts[id] != INT64_MIN) {
                    /* a second copy (marked dup, or late if it came too late) */
                    assert_true(is_dup || is_late);
                    assert_int_equal(id_ts[id], ts);
                    dups++;
                } else {
                    assert_false(is_dup);
                    events++;
                    user_events[uidx]++;
                    evs[nev].user = uidx;
                    evs[nev].ts = ts;
                    nev++;
                }
                id_ts[id] = ts;
                if (is_late) {
                    /* the partition has seen a newer event beyond the grace */
                    assert_true(pmax[part] - ts > 300000);
                    late++;
                } else if (!is_dup) {
                    /* bounded disorder: nothing earlier is newer than jitter */
                    if (ts < max_ts - o.jitter_ms)
                        fail_msg("displaced beyond jitter: %.*s", (int)(nl - line), line);
                    plain++;
                }
                if (ts > max_ts)
                    max_ts = ts;
                if (ts > pmax[part])
                    pmax[part] = ts;
            }
        }
        if (expect && !strncmp(expect, "dead:", 5)) {
            dead++;
            for (int k = 0; k < 6; k++)
                if (!strcmp(expect, reasons[k]))
                    dead_kinds[k]++;
        }
        json_decref(j);
        line = nl + 1;
    }
    assert_int_equal(events + dups + dead, lines);
    /* fractions roughly as configured */
    double fd = (double)dups / (double)events, fm = (double)dead / (double)events,
           fl = (double)late / (double)events;
    print_message("events %lld dups %.4f dead %.4f late %.4f\n", (long long)events, fd, fm, fl);
    assert_true(fd > 0.04 && fd < 0.06);
    assert_true(fm > 0.015 && fm < 0.025);
    assert_true(fl > 0.007 && fl < 0.013);
    for (int k = 0; k < 6; k++)
        assert_true(dead_kinds[k] > 0);
    /* power law: u0 is far more active than the median user */
    assert_true(user_events[0] > 5 * user_events[o.users / 2]);

    /* per user in time order: the 30:00.000 / 30:00.001 boundary gaps and
     * sessions crossing midnight all occur */
    qsort(evs, nev, sizeof(ev_t), ev_cmp);
    int64_t exact = 0, plus1 = 0, midnight = 0, long_gaps = 0;
    for (size_t i = 1; i < nev; i++) {
        if (evs[i].user != evs[i - 1].user)
            continue;
        int64_t gap = evs[i].ts - evs[i - 1].ts;
        exact += gap == 1800000;
        plus1 += gap == 1800001;
        long_gaps += gap >= 25 * 60000 && gap <= 29 * 60000;
        if (gap <= 1800000 && engage_day_of_ms(evs[i].ts) != engage_day_of_ms(evs[i - 1].ts))
            midnight++;
    }
    print_message("gaps: 30:00.000 %lld, 30:00.001 %lld, 25-29 min %lld, midnight %lld\n",
                  (long long)exact, (long long)plus1, (long long)long_gaps,
                  (long long)midnight);
    assert_true(exact > 0 && plus1 > 0 && long_gaps > 0 && midnight > 0);

    free(id_ts);
    free(evs);
    free(user_events);
    free(out);
}

/* 1M lines in bounded memory: just completes (the output goes nowhere). */
static void test_streaming_1m(void **s) {
    (void)s;
    engage_gen_opts_t o;
    engage_gen_defaults(&o);
    o.users = 100000;
    o.days = 30;
    o.max_events = 1000000;
    FILE *devnull = fopen("/dev/null", "w");
    assert_non_null(devnull);
    assert_int_equal(engage_gen_write(&o, devnull), 1000000);
    fclose(devnull);
}

static void test_cmd(void **s) {
    (void)s;
    char path[] = "/tmp/engage_test_gen_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char *argv[] = {"gen", "--users", "50", "--days", "2", "--start", "2024-02-28",
                    "--seed", "7", "-o", path, NULL};
    assert_int_equal(engage_cmd_gen(11, argv), 0);
    FILE *fp = fopen(path, "r");
    char buf[4096];
    assert_non_null(fgets(buf, sizeof(buf), fp));
    json_t *j = json_loads(buf, 0, NULL);
    assert_non_null(j);
    int64_t ts = json_integer_value(json_object_get(j, "timestamp"));
    int32_t d0;
    assert_int_equal(engage_day_parse("2024-02-28", &d0), 0);
    assert_true(engage_day_of_ms(ts) >= d0 && engage_day_of_ms(ts) <= d0 + 2);
    json_decref(j);
    fclose(fp);
    unlink(path);

    char *bad[] = {"gen", "--users", "0", NULL};
    assert_int_equal(engage_cmd_gen(3, bad), 2);
    char *bad2[] = {"gen", "--start", "2024-02-30", NULL};
    assert_int_equal(engage_cmd_gen(3, bad2), 2);
    char *bad3[] = {"gen", "--dup-rate", "1.5", NULL};
    assert_int_equal(engage_cmd_gen(3, bad3), 2);
    char *bad4[] = {"gen", "--no-such-flag", NULL};
    assert_int_equal(engage_cmd_gen(2, bad4), 2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),   cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_max_events), cmocka_unit_test(test_content),
        cmocka_unit_test(test_cmd),        cmocka_unit_test(test_streaming_1m),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
