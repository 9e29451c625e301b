/* test_state.c - unit tests for src/state.c (a real RocksDB in a temp dir) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "state.h"

typedef struct fixture {
    char root[256]; /* mkdtemp dir */
    char path[512]; /* nested db path (parents created by open) */
} fixture_t;

static int setup(void **state) {
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->root, sizeof(f->root), "/tmp/engage-test-state-XXXXXX");
    if (!mkdtemp(f->root))
        return -1;
    snprintf(f->path, sizeof(f->path), "%s/a/b/task-0", f->root);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fixture_t *f = *state;
    engage_state_destroy_dir(f->root, NULL, 0);
    free(f);
    return 0;
}

static void assert_stored(engage_state_t *st, const char *key, const char *val) {
    void *v = NULL;
    size_t vl = 0;
    char err[256];
    assert_int_equal(engage_state_get(st, key, strlen(key), &v, &vl, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(vl, strlen(val));
    assert_memory_equal(v, val, vl);
    free(v);
}

static void assert_missing(engage_state_t *st, const char *key) {
    void *v = NULL;
    size_t vl = 0;
    char err[256];
    assert_int_equal(engage_state_get(st, key, strlen(key), &v, &vl, err, sizeof(err)),
                     ENGAGE_ERR_NOT_FOUND);
}

static void test_put_get_delete(void **state) {
    fixture_t *f = *state;
    char err[256] = "";
    engage_state_t *st = engage_state_open(f->path, err, sizeof(err));
    assert_non_null(st);
    assert_missing(st, "k1");
    engage_state_put(st, "k1", 2, "v1", 2);
    engage_state_put(st, "k2", 2, "value-two", 9);
    engage_state_put(st, "empty", 5, "", 0);
    assert_int_equal(engage_state_pending(st), 3);
    /* nothing is visible before commit */
    assert_missing(st, "k1");
    assert_missing(st, "k2");
    assert_int_equal(engage_state_commit(st, err, sizeof(err)), ENGAGE_ERR_OK);
    assert_int_equal(engage_state_pending(st), 0);
    assert_stored(st, "k1", "v1");
    assert_stored(st, "k2", "value-two");
    assert_stored(st, "empty", "");
    /* overwrite and delete in one batch: last write wins */
    engage_state_put(st, "k1", 2, "v1b", 3);
    engage_state_delete(st, "k2", 2);
    engage_state_put(st, "k3", 2, "x", 1);
    engage_state_delete(st, "k3", 2);
    assert_stored(st, "k2", "value-two");
    assert_int_equal(engage_state_commit(st, err, sizeof(err)), ENGAGE_ERR_OK);
    assert_stored(st, "k1", "v1b");
    assert_missing(st, "k2");
    assert_missing(st, "k3");
    /* an empty commit is fine */
    assert_int_equal(engage_state_commit(st, err, sizeof(err)), ENGAGE_ERR_OK);
    /* binary keys and values */
    const char bk[] = {0, 1, 2, (char)0xff};
    const char bv[] = {(char)0xff, 0, 0, 7};
    engage_state_put(st, bk, sizeof(bk), bv, sizeof(bv));
    assert_int_equal(engage_state_commit(st, err, sizeof(err)), ENGAGE_ERR_OK);
    void *v;
    size_t vl;
    assert_int_equal(engage_state_get(st, bk, sizeof(bk), &v, &vl, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(vl, sizeof(bv));
    assert_memory_equal(v, bv, vl);
    free(v);
    assert_true(engage_state_disk_size(st) > 0);
    engage_state_close(st);
    engage_state_close(NULL);
}

typedef struct collect {
    char keys[64][16];
    size_t klen[64];
    int n;
    int stop_after;
} collect_t;

static int collect_cb(void *opaque, const void *key, size_t klen, const void *val,
                      size_t vlen) {
    collect_t *c = opaque;
    assert_true(klen < 16);
    /* values are the key reversed-ish: first byte of key */
    assert_true(vlen == 1);
    assert_int_equal(((const char *)val)[0], ((const char *)key)[klen - 1]);
    memcpy(c->keys[c->n], key, klen);
    c->klen[c->n] = klen;
    c->n++;
    return c->stop_after && c->n >= c->stop_after;
}

static void put_k(engage_state_t *st, const char *k, size_t kl) {
    engage_state_put(st, k, kl, k + kl - 1, 1);
}

static void assert_key(const collect_t *c, int i, const char *k, size_t kl) {
    assert_int_equal(c->klen[i], kl);
    assert_memory_equal(c->keys[i], k, kl);
}

static void test_iterate_prefix(void **state) {
    fixture_t *f = *state;
    char err[256];
    engage_state_t *st = engage_state_open(f->path, err, sizeof(err));
    assert_non_null(st);
    put_k(st, "o\xff", 2);
    put_k(st, "p", 1);
    put_k(st, "p\x00", 2);
    put_k(st, "p\xff", 2);
    put_k(st, "pa", 2);
    put_k(st, "pb", 2);
    put_k(st, "q", 1);
    put_k(st, "\xff\xff\x01", 3);
    put_k(st, "\xff\xff", 2);
    put_k(st, "\xff\xfe", 2);
    assert_int_equal(engage_state_commit(st, err, sizeof(err)), ENGAGE_ERR_OK);
    put_k(st, "pz", 2); /* pending: not iterated */

    collect_t c = {0};
    assert_int_equal(engage_state_iterate(st, "p", 1, collect_cb, &c, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(c.n, 5);
    assert_key(&c, 0, "p", 1);
    assert_key(&c, 1, "p\x00", 2);
    assert_key(&c, 2, "pa", 2);
    assert_key(&c, 3, "pb", 2);
    assert_key(&c, 4, "p\xff", 2);

    memset(&c, 0, sizeof(c));
    assert_int_equal(engage_state_iterate(st, "\xff\xff", 2, collect_cb, &c, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(c.n, 2);
    assert_key(&c, 0, "\xff\xff", 2);
    assert_key(&c, 1, "\xff\xff\x01", 3);

    memset(&c, 0, sizeof(c));
    assert_int_equal(engage_state_iterate(st, "pc", 2, collect_cb, &c, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(c.n, 0);
    memset(&c, 0, sizeof(c));
    assert_int_equal(engage_state_iterate(st, "zzz", 3, collect_cb, &c, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(c.n, 0);

    /* empty prefix: everything, in key order */
    memset(&c, 0, sizeof(c));
    assert_int_equal(engage_state_iterate(st, "", 0, collect_cb, &c, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(c.n, 10);
    assert_key(&c, 0, "o\xff", 2);
    assert_key(&c, 9, "\xff\xff\x01", 3);

    memset(&c, 0, sizeof(c));
    assert_int_equal(engage_state_iterate(st, NULL, 0, collect_cb, &c, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(c.n, 10);

    /* the callback stops the walk */
    memset(&c, 0, sizeof(c));
    c.stop_after = 2;
    assert_int_equal(engage_state_iterate(st, "p", 1, collect_cb, &c, err, sizeof(err)),
                     ENGAGE_ERR_OK);
    assert_int_equal(c.n, 2);
    engage_state_close(st);
}

static void test_reopen_persistence(void **state) {
    fixture_t *f = *state;
    char err[256];
    engage_state_t *st = engage_state_open(f->path, err, sizeof(err));
    assert_non_null(st);
    char key[32], val[64];
    for (int i = 0; i < 1000; i++) {
        snprintf(key, sizeof(key), "key-%04d", i);
        snprintf(val, sizeof(val), "value-%d-%s", i, "xxxxxxxxxxxxxxxxxxxx");
        engage_state_put(st, key, strlen(key), val, strlen(val));
    }
    assert_int_equal(engage_state_commit(st, err, sizeof(err)), ENGAGE_ERR_OK);
    engage_state_put(st, "uncommitted", 11, "x", 1);
    engage_state_close(st); /* discards the pending batch */

    /* a second handle on an open store fails with a message */
    st = engage_state_open(f->path, err, sizeof(err));
    assert_non_null(st);
    err[0] = '\0';
    assert_null(engage_state_open(f->path, err, sizeof(err)));
    assert_true(err[0] != '\0');
    assert_missing(st, "uncommitted");
    for (int i = 0; i < 1000; i += 37) {
        snprintf(key, sizeof(key), "key-%04d", i);
        snprintf(val, sizeof(val), "value-%d-%s", i, "xxxxxxxxxxxxxxxxxxxx");
        assert_stored(st, key, val);
    }
    engage_state_close(st);
}

/* Checks that key "k%05d" (i = 0..n-1) reads back as the newest value the
 * round wrote: deleted when i % 7 == 3, "r<round>-<i>" when i % 3 == 0,
 * else "r0-<i>"; and that a scan returns the live keys in key order. */
typedef struct scan {
    int next;   /* next expected i */
    int n;      /* keys scanned */
    int rounds; /* newest round */
    int bad;
} scan_t;

static int scan_cb(void *opaque, const void *key, size_t klen, const void *val, size_t vlen) {
    scan_t *c = opaque;
    char want_key[16], want_val[32];
    while (c->next % 7 == 3)
        c->next++;
    snprintf(want_key, sizeof(want_key), "k%05d", c->next);
    snprintf(want_val, sizeof(want_val), "r%d-%d", c->next % 3 == 0 ? c->rounds : 0, c->next);
    if (klen != strlen(want_key) || memcmp(key, want_key, klen) != 0 ||
        vlen != strlen(want_val) || memcmp(val, want_val, vlen) != 0)
        c->bad++;
    c->next++;
    c->n++;
    return 0;
}

static int live_count(int n) {
    int live = 0;
    for (int i = 0; i < n; i++)
        live += i % 7 != 3;
    return live;
}

/* Keys written out of order, overwritten and deleted across batches read
 * back in key order with their newest values, before and after a reopen
 * (replayed from the WAL): guards any change of the memtable's type. */
static void test_overwrites_in_memtable(void **state) {
    fixture_t *f = *state;
    char err[256], key[16], val[32];
    const int n = 5000, rounds = 4;
    engage_state_t *st = engage_state_open(f->path, err, sizeof(err));
    assert_non_null(st);
    for (int r = 0; r <= rounds; r++) {
        for (int j = 0; j < n; j++) {
            int i = (j * 7919) % n; /* 7919 is prime to n: a permutation, out of order */
            if (r > 0 && (i % 3 != 0 || i % 7 == 3))
                continue;
            snprintf(key, sizeof(key), "k%05d", i);
            snprintf(val, sizeof(val), "r%d-%d", r, i);
            engage_state_put(st, key, strlen(key), val, strlen(val));
        }
        if (r == 1)
            for (int i = 3; i < n; i += 7) {
                snprintf(key, sizeof(key), "k%05d", i);
                engage_state_delete(st, key, strlen(key));
            }
        assert_int_equal(engage_state_commit(st, err, sizeof(err)), ENGAGE_ERR_OK);
    }
    for (int pass = 0; pass < 2; pass++) {
        scan_t c = {.rounds = rounds};
        assert_int_equal(engage_state_iterate(st, "k", 1, scan_cb, &c, err, sizeof(err)),
                         ENGAGE_ERR_OK);
        assert_int_equal(c.bad, 0);
        assert_int_equal(c.n, live_count(n));
        assert_stored(st, "k00000", "r4-0");
        assert_stored(st, "k00001", "r0-1");
        assert_missing(st, "k00003");
        engage_state_close(st);
        st = engage_state_open(f->path, err, sizeof(err));
        assert_non_null(st);
    }
    engage_state_close(st);
}

static void test_destroy_dir(void **state) {
    fixture_t *f = *state;
    char err[256];
    engage_state_t *st = engage_state_open(f->path, err, sizeof(err));
    assert_non_null(st);
    engage_state_put(st, "k", 1, "v", 1);
    assert_int_equal(engage_state_commit(st, err, sizeof(err)), ENGAGE_ERR_OK);
    engage_state_close(st);
    /* a stray file in the directory goes too */
    char stray[600];
    snprintf(stray, sizeof(stray), "%s/stray.txt", f->path);
    FILE *fp = fopen(stray, "w");
    assert_non_null(fp);
    fputs("hello", fp);
    fclose(fp);
    assert_int_equal(engage_state_destroy_dir(f->path, err, sizeof(err)), ENGAGE_ERR_OK);
    struct stat sb;
    assert_int_not_equal(stat(f->path, &sb), 0);
    /* destroying a missing directory is fine */
    assert_int_equal(engage_state_destroy_dir(f->path, err, sizeof(err)), ENGAGE_ERR_OK);
    /* a fresh open is empty */
    st = engage_state_open(f->path, err, sizeof(err));
    assert_non_null(st);
    assert_missing(st, "k");
    engage_state_close(st);
}

static void test_open_failure(void **state) {
    fixture_t *f = *state;
    char file[600], err[256] = "";
    snprintf(file, sizeof(file), "%s/plainfile", f->root);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_null(engage_state_open(file, err, sizeof(err)));
    assert_true(err[0] != '\0');
    char below[700];
    snprintf(below, sizeof(below), "%s/sub", file);
    err[0] = '\0';
    assert_null(engage_state_open(below, err, sizeof(err)));
    assert_true(err[0] != '\0');
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_iterate_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_persistence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overwrites_in_memtable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_destroy_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_failure, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
