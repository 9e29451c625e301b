/* test_dict.c - unit tests for src/dict.c */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dict.h"

static void make_id(char *buf, size_t *len, uint32_t i) {
    *len = (size_t)snprintf(buf, 64, "user-%08u", i);
}

static void test_basic(void **state) {
    (void)state;
    engage_dict_t *d = engage_dict_new();
    assert_non_null(d);
    assert_int_equal(engage_dict_count(d), 0);
    engage_dict_prefetch(d, "alice", 5); /* a hint: no effect */
    uint32_t ord = 99;
    int is_new = -1;
    assert_int_equal(engage_dict_lookup(d, "alice", 5, &ord), 0);
    assert_int_equal(engage_dict_get_or_add(d, "alice", 5, &ord, &is_new), 0);
    assert_int_equal(ord, 0);
    assert_int_equal(is_new, 1);
    assert_int_equal(engage_dict_get_or_add(d, "bob", 3, &ord, &is_new), 0);
    assert_int_equal(ord, 1);
    assert_int_equal(is_new, 1);
    assert_int_equal(engage_dict_get_or_add(d, "alice", 5, &ord, &is_new), 0);
    assert_int_equal(ord, 0);
    assert_int_equal(is_new, 0);
    /* prefixes and lengths matter */
    assert_int_equal(engage_dict_lookup(d, "alic", 4, &ord), 0);
    assert_int_equal(engage_dict_lookup(d, "alicee", 6, &ord), 0);
    assert_int_equal(engage_dict_lookup(d, "bob", 3, &ord), 1);
    assert_int_equal(ord, 1);
    size_t len = 0;
    const char *name = engage_dict_name(d, 1, &len);
    assert_non_null(name);
    assert_int_equal(len, 3);
    assert_memory_equal(name, "bob", 3);
    assert_null(engage_dict_name(d, 2, &len));
    assert_null(engage_dict_name(d, UINT32_MAX, &len));
    assert_int_equal(engage_dict_count(d), 2);
    engage_dict_destroy(d);
    engage_dict_destroy(NULL);
}

static void test_many_ids(void **state) {
    (void)state;
    engage_dict_t *d = engage_dict_new();
    char buf[64];
    size_t len;
    const char **names = malloc(100000 * sizeof(*names));
    for (uint32_t i = 0; i < 100000; i++) {
        make_id(buf, &len, i);
        uint32_t ord;
        int is_new;
        assert_int_equal(engage_dict_get_or_add(d, buf, len, &ord, &is_new), 0);
        assert_int_equal(ord, i);
        assert_int_equal(is_new, 1);
        size_t nl;
        names[i] = engage_dict_name(d, i, &nl);
    }
    assert_int_equal(engage_dict_count(d), 100000);
    for (uint32_t i = 0; i < 100000; i++) {
        make_id(buf, &len, i);
        uint32_t ord;
        int is_new;
        assert_int_equal(engage_dict_lookup(d, buf, len, &ord), 1);
        assert_int_equal(ord, i);
        assert_int_equal(engage_dict_get_or_add(d, buf, len, &ord, &is_new), 0);
        assert_int_equal(is_new, 0);
        assert_int_equal(ord, i);
        /* without removals the arena never moves a key (the contract only
         * promises validity until the next add, but growth must not copy) */
        size_t nl;
        const char *n = engage_dict_name(d, i, &nl);
        assert_ptr_equal(n, names[i]);
        assert_int_equal(nl, len);
        assert_memory_equal(n, buf, len);
    }
    assert_int_equal(engage_dict_lookup(d, "user-00100000", 13, &(uint32_t){0}), 0);
    free(names);
    engage_dict_destroy(d);
}

static void test_long_and_binary_ids(void **state) {
    (void)state;
    engage_dict_t *d = engage_dict_new();
    /* 256-byte ids differing only in the last byte */
    char big[256];
    memset(big, 'x', sizeof(big));
    for (int i = 0; i < 200; i++) {
        big[255] = (char)i;
        uint32_t ord;
        int is_new;
        assert_int_equal(engage_dict_get_or_add(d, big, sizeof(big), &ord, &is_new), 0);
        assert_int_equal(ord, (uint32_t)i);
    }
    /* binary ids with embedded NULs and high bytes; also the empty id */
    const char b1[] = {'\0', 'a', '\0', (char)0xff};
    const char b2[] = {'\0', 'a', '\0', (char)0xfe};
    const char b3[] = {'\0', 'a', '\0'};
    uint32_t o1, o2, o3, o4, o;
    int is_new;
    assert_int_equal(engage_dict_get_or_add(d, b1, sizeof(b1), &o1, &is_new), 0);
    assert_int_equal(engage_dict_get_or_add(d, b2, sizeof(b2), &o2, &is_new), 0);
    assert_int_equal(engage_dict_get_or_add(d, b3, sizeof(b3), &o3, &is_new), 0);
    assert_int_equal(engage_dict_get_or_add(d, "", 0, &o4, &is_new), 0);
    assert_int_equal(is_new, 1);
    assert_true(o1 != o2 && o2 != o3 && o1 != o3 && o4 != o3);
    assert_int_equal(engage_dict_lookup(d, b1, sizeof(b1), &o), 1);
    assert_int_equal(o, o1);
    assert_int_equal(engage_dict_lookup(d, b3, sizeof(b3), &o), 1);
    assert_int_equal(o, o3);
    assert_int_equal(engage_dict_lookup(d, "", 0, &o), 1);
    assert_int_equal(o, o4);
    size_t len;
    const char *n = engage_dict_name(d, o2, &len);
    assert_int_equal(len, sizeof(b2));
    assert_memory_equal(n, b2, sizeof(b2));
    assert_non_null(engage_dict_name(d, o4, &len));
    assert_int_equal(len, 0);
    /* a key larger than an arena chunk */
    size_t hl = 200000;
    char *huge = malloc(hl);
    for (size_t i = 0; i < hl; i++)
        huge[i] = (char)(i * 7);
    assert_int_equal(engage_dict_get_or_add(d, huge, hl, &o, &is_new), 0);
    assert_int_equal(is_new, 1);
    assert_int_equal(engage_dict_get_or_add(d, "after", 5, &o2, &is_new), 0);
    n = engage_dict_name(d, o, &len);
    assert_int_equal(len, hl);
    assert_memory_equal(n, huge, hl);
    big[255] = 7;
    assert_int_equal(engage_dict_lookup(d, big, sizeof(big), &o), 1);
    assert_int_equal(o, 7);
    free(huge);
    engage_dict_destroy(d);
}

static void test_insert_restore(void **state) {
    (void)state;
    engage_dict_t *d = engage_dict_new();
    /* ordinals in any order, with holes */
    assert_int_equal(engage_dict_insert(d, "c", 1, 5), ENGAGE_ERR_OK);
    assert_int_equal(engage_dict_count(d), 6);
    assert_int_equal(engage_dict_insert(d, "a", 1, 0), ENGAGE_ERR_OK);
    assert_int_equal(engage_dict_insert(d, "b", 1, 2), ENGAGE_ERR_OK);
    assert_int_equal(engage_dict_count(d), 6);
    size_t len;
    assert_null(engage_dict_name(d, 1, &len));
    assert_null(engage_dict_name(d, 3, &len));
    assert_memory_equal(engage_dict_name(d, 5, &len), "c", 1);
    /* the same mapping again is fine */
    assert_int_equal(engage_dict_insert(d, "b", 1, 2), ENGAGE_ERR_OK);
    /* conflicts */
    assert_int_equal(engage_dict_insert(d, "b", 1, 3), ENGAGE_ERR_CORRUPT);
    assert_int_equal(engage_dict_insert(d, "z", 1, 2), ENGAGE_ERR_CORRUPT);
    assert_int_equal(engage_dict_insert(d, "z", 1, UINT32_MAX), ENGAGE_ERR_CORRUPT);
    assert_int_equal(engage_dict_count(d), 6);
    uint32_t o;
    assert_int_equal(engage_dict_lookup(d, "z", 1, &o), 0);
    /* the holes 1, 3, 4 are free; a restore may fill one of them */
    assert_int_equal(engage_dict_size(d), 3);
    assert_int_equal(engage_dict_free_count(d), 3);
    assert_int_equal(engage_dict_insert(d, "hole", 4, 3), ENGAGE_ERR_OK);
    assert_memory_equal(engage_dict_name(d, 3, &len), "hole", 4);
    assert_int_equal(engage_dict_free_count(d), 2);
    /* new ids take the smallest free ordinal, then continue at count */
    int is_new;
    assert_int_equal(engage_dict_get_or_add(d, "d", 1, &o, &is_new), 0);
    assert_int_equal(o, 1);
    assert_int_equal(is_new, 1);
    assert_int_equal(engage_dict_get_or_add(d, "b", 1, &o, &is_new), 0);
    assert_int_equal(o, 2);
    assert_int_equal(is_new, 0);
    assert_int_equal(engage_dict_get_or_add(d, "e", 1, &o, &is_new), 0);
    assert_int_equal(o, 4);
    assert_int_equal(engage_dict_get_or_add(d, "f", 1, &o, &is_new), 0);
    assert_int_equal(o, 6);
    assert_int_equal(engage_dict_count(d), 7);
    assert_int_equal(engage_dict_free_count(d), 0);
    engage_dict_destroy(d);
}

static void test_restore_many_shuffled(void **state) {
    (void)state;
    const uint32_t n = 50000;
    uint32_t *perm = malloc(n * sizeof(*perm));
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    srand(11);
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = (uint32_t)rand() % (i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    engage_dict_t *d = engage_dict_new();
    char buf[64];
    size_t len;
    for (uint32_t i = 0; i < n; i++) {
        make_id(buf, &len, perm[i]);
        assert_int_equal(engage_dict_insert(d, buf, len, perm[i] * 2), ENGAGE_ERR_OK);
    }
    assert_int_equal(engage_dict_count(d), 2 * (n - 1) + 1);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t o;
        make_id(buf, &len, i);
        assert_int_equal(engage_dict_lookup(d, buf, len, &o), 1);
        assert_int_equal(o, i * 2);
        assert_null(engage_dict_name(d, i * 2 + 1 < engage_dict_count(d) ? i * 2 + 1 : 1, &len));
    }
    free(perm);
    engage_dict_destroy(d);
}


static void test_remove_basic(void **state) {
    (void)state;
    engage_dict_t *d = engage_dict_new();
    uint32_t o;
    int is_new;
    size_t len;
    const char *ids[] = {"a", "b", "c", "d", "e"};
    for (uint32_t i = 0; i < 5; i++) {
        assert_int_equal(engage_dict_get_or_add(d, ids[i], 1, &o, &is_new), 0);
        assert_int_equal(o, i);
    }
    assert_int_equal(engage_dict_remove(d, 5), ENGAGE_ERR_NOT_FOUND);
    assert_int_equal(engage_dict_remove(d, UINT32_MAX), ENGAGE_ERR_NOT_FOUND);
    assert_int_equal(engage_dict_remove(d, 1), ENGAGE_ERR_OK);
    assert_int_equal(engage_dict_remove(d, 1), ENGAGE_ERR_NOT_FOUND);
    assert_int_equal(engage_dict_remove(d, 3), ENGAGE_ERR_OK);
    assert_int_equal(engage_dict_lookup(d, "b", 1, &o), 0);
    assert_int_equal(engage_dict_lookup(d, "d", 1, &o), 0);
    assert_null(engage_dict_name(d, 1, &len));
    assert_int_equal(engage_dict_size(d), 3);
    assert_int_equal(engage_dict_count(d), 5);
    assert_int_equal(engage_dict_free_count(d), 2);
    /* the others are untouched */
    assert_int_equal(engage_dict_lookup(d, "e", 1, &o), 1);
    assert_int_equal(o, 4);
    assert_memory_equal(engage_dict_name(d, 2, &len), "c", 1);
    /* reuse, smallest first; a removed id comes back as a new one */
    assert_int_equal(engage_dict_get_or_add(d, "d", 1, &o, &is_new), 0);
    assert_int_equal(is_new, 1);
    assert_int_equal(o, 1);
    assert_int_equal(engage_dict_get_or_add(d, "x", 1, &o, &is_new), 0);
    assert_int_equal(o, 3);
    assert_int_equal(engage_dict_get_or_add(d, "y", 1, &o, &is_new), 0);
    assert_int_equal(o, 5);
    /* removing the top ordinals lowers count and forgets holes under them */
    assert_int_equal(engage_dict_remove(d, 3), ENGAGE_ERR_OK);
    assert_int_equal(engage_dict_remove(d, 4), ENGAGE_ERR_OK);
    assert_int_equal(engage_dict_count(d), 6);
    assert_int_equal(engage_dict_remove(d, 5), ENGAGE_ERR_OK);
    assert_int_equal(engage_dict_count(d), 3);
    assert_int_equal(engage_dict_free_count(d), 0);
    assert_int_equal(engage_dict_get_or_add(d, "z", 1, &o, &is_new), 0);
    assert_int_equal(o, 3);
    /* empty again */
    for (uint32_t i = 0; i < 4; i++)
        assert_int_equal(engage_dict_remove(d, i), ENGAGE_ERR_OK);
    assert_int_equal(engage_dict_count(d), 0);
    assert_int_equal(engage_dict_size(d), 0);
    assert_int_equal(engage_dict_get_or_add(d, "a", 1, &o, &is_new), 0);
    assert_int_equal(o, 0);
    engage_dict_destroy(d);
}

/* Random adds and removes against a plain model (id i <-> model[i]); small
 * tables and long probe runs (many colliding home slots) exercise the
 * backward shift, including runs that wrap around the table end. */
static uint64_t rng(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void check_model(const engage_dict_t *d, const int64_t *model, uint32_t nids) {
    char buf[64];
    size_t len, nl;
    uint32_t mapped = 0, maxord1 = 0;
    for (uint32_t i = 0; i < nids; i++) {
        make_id(buf, &len, i);
        uint32_t o;
        int found = engage_dict_lookup(d, buf, len, &o);
        assert_int_equal(found, model[i] >= 0);
        if (!found)
            continue;
        assert_int_equal(o, (uint32_t)model[i]);
        const char *n = engage_dict_name(d, o, &nl);
        assert_non_null(n);
        assert_int_equal(nl, len);
        assert_memory_equal(n, buf, len);
        mapped++;
        if (o + 1 > maxord1)
            maxord1 = o + 1;
    }
    assert_int_equal(engage_dict_size(d), mapped);
    assert_int_equal(engage_dict_count(d), maxord1);
    assert_int_equal(engage_dict_free_count(d), maxord1 - mapped);
}

static void test_remove_random(void **state) {
    (void)state;
    const uint32_t nids = 6000;
    int64_t *model = malloc(nids * sizeof(*model));
    uint8_t *used = calloc(nids, 1); /* ordinal in use, to find the smallest free */
    uint64_t s = 7;
    for (int round = 0; round < 3; round++) {
        engage_dict_t *d = engage_dict_new();
        for (uint32_t i = 0; i < nids; i++)
            model[i] = -1;
        memset(used, 0, nids);
        char buf[64];
        size_t len;
        /* round 0: about 1000 ids alive (the table stays at 2048 slots, load
         * ~0.5); later rounds: bigger populations and growth mid-way */
        uint32_t span = round == 0 ? 2000 : nids;
        for (int step = 0; step < 60000; step++) {
            uint32_t i = (uint32_t)(rng(&s) % span);
            make_id(buf, &len, i);
            if (model[i] < 0) {
                uint32_t o, expect = 0;
                int is_new;
                while (used[expect])
                    expect++;
                assert_int_equal(engage_dict_get_or_add(d, buf, len, &o, &is_new), 0);
                assert_int_equal(is_new, 1);
                assert_int_equal(o, expect);
                model[i] = o;
                used[o] = 1;
            } else {
                assert_int_equal(engage_dict_remove(d, (uint32_t)model[i]), ENGAGE_ERR_OK);
                used[model[i]] = 0;
                model[i] = -1;
            }
            if (step % 5000 == 4999)
                check_model(d, model, nids);
        }
        check_model(d, model, nids);
        /* key memory stays proportional to the live keys */
        size_t live, dead;
        engage_dict_key_bytes(d, &live, &dead);
        assert_int_equal(live, (size_t)engage_dict_size(d) * (4 + 13));
        assert_true(dead <= live || dead < 4096);
        engage_dict_destroy(d);
    }
    free(used);
    free(model);
}

static void test_compaction(void **state) {
    (void)state;
    engage_dict_t *d = engage_dict_new();
    char buf[64];
    size_t len, live, dead;
    const uint32_t n = 20000;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t o;
        int is_new;
        make_id(buf, &len, i);
        assert_int_equal(engage_dict_get_or_add(d, buf, len, &o, &is_new), 0);
    }
    engage_dict_key_bytes(d, &live, &dead);
    assert_int_equal(live, n * 17);
    assert_int_equal(dead, 0);
    /* remove 3 of 4: the arena is rebuilt once dead bytes pass the live */
    int compacted = 0;
    size_t prev_dead = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (i % 4 == 0)
            continue;
        assert_int_equal(engage_dict_remove(d, i), ENGAGE_ERR_OK);
        engage_dict_key_bytes(d, &live, &dead);
        if (dead < prev_dead)
            compacted++;
        prev_dead = dead;
        assert_true(dead <= live || dead < 4096);
    }
    assert_true(compacted >= 1);
    /* every survivor still resolves both ways */
    for (uint32_t i = 0; i < n; i += 4) {
        uint32_t o;
        size_t nl;
        make_id(buf, &len, i);
        assert_int_equal(engage_dict_lookup(d, buf, len, &o), 1);
        assert_int_equal(o, i);
        const char *nm = engage_dict_name(d, i, &nl);
        assert_int_equal(nl, len);
        assert_memory_equal(nm, buf, len);
    }
    /* a key bigger than a chunk survives compaction, and adds continue */
    size_t hl = 100000;
    char *huge = malloc(hl);
    for (size_t i = 0; i < hl; i++)
        huge[i] = (char)(i * 13);
    uint32_t ho, o;
    int is_new;
    assert_int_equal(engage_dict_get_or_add(d, huge, hl, &ho, &is_new), 0);
    assert_int_equal(ho, 1); /* smallest free */
    for (uint32_t i = 0; i < n; i += 4)
        assert_int_equal(engage_dict_remove(d, i), ENGAGE_ERR_OK);
    engage_dict_key_bytes(d, &live, &dead);
    assert_int_equal(live, 4 + hl);
    assert_true(dead <= live);
    size_t nl;
    assert_memory_equal(engage_dict_name(d, ho, &nl), huge, hl);
    assert_int_equal(engage_dict_get_or_add(d, "x", 1, &o, &is_new), 0);
    assert_int_equal(o, 0);
    /* the huge key goes: dead bytes pass the live ones, the arena is rebuilt
     * with the one key left */
    assert_int_equal(engage_dict_remove(d, ho), ENGAGE_ERR_OK);
    engage_dict_key_bytes(d, &live, &dead);
    assert_int_equal(live, 5);
    assert_int_equal(dead, 0);
    assert_memory_equal(engage_dict_name(d, 0, &nl), "x", 1);
    assert_int_equal(engage_dict_remove(d, 0), ENGAGE_ERR_OK);
    engage_dict_key_bytes(d, &live, &dead);
    assert_int_equal(live, 0);
    assert_int_equal(dead, 5); /* too little to be worth a rebuild */
    assert_int_equal(engage_dict_size(d), 0);
    free(huge);
    engage_dict_destroy(d);
}

/* A dictionary rebuilt from its mappings (in any order) hands out the same
 * ordinals as the original, whatever adds and removes led to it. */
static void test_restore_same_ordinals(void **state) {
    (void)state;
    engage_dict_t *d = engage_dict_new();
    char buf[64];
    size_t len;
    uint64_t s = 99;
    uint32_t o;
    int is_new;
    for (uint32_t i = 0; i < 3000; i++) {
        make_id(buf, &len, i);
        assert_int_equal(engage_dict_get_or_add(d, buf, len, &o, &is_new), 0);
        if (rng(&s) % 3 == 0) /* remove some random earlier one */
            engage_dict_remove(d, (uint32_t)(rng(&s) % engage_dict_count(d)));
    }
    for (uint32_t k = 0; k < 50; k++) /* remove a stretch at the top too */
        engage_dict_remove(d, engage_dict_count(d) - 1);
    engage_dict_t *r = engage_dict_new();
    uint32_t n = engage_dict_count(d);
    assert_true(n > 0 && n < 7919);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t ord = (uint32_t)((k * 7919u) % n); /* a permutation: 7919 is prime, n < it */
        size_t nl;
        const char *nm = engage_dict_name(d, ord, &nl);
        if (nm)
            assert_int_equal(engage_dict_insert(r, nm, nl, ord), ENGAGE_ERR_OK);
    }
    assert_int_equal(engage_dict_count(r), engage_dict_count(d));
    assert_int_equal(engage_dict_size(r), engage_dict_size(d));
    assert_int_equal(engage_dict_free_count(r), engage_dict_free_count(d));
    for (uint32_t i = 0; i < 500; i++) {
        uint32_t o1, o2;
        int n1, n2;
        make_id(buf, &len, 100000 + i);
        assert_int_equal(engage_dict_get_or_add(d, buf, len, &o1, &n1), 0);
        assert_int_equal(engage_dict_get_or_add(r, buf, len, &o2, &n2), 0);
        assert_int_equal(o1, o2);
    }
    engage_dict_destroy(r);
    engage_dict_destroy(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_many_ids),
        cmocka_unit_test(test_long_and_binary_ids),
        cmocka_unit_test(test_insert_restore),
        cmocka_unit_test(test_restore_many_shuffled),
        cmocka_unit_test(test_remove_basic),
        cmocka_unit_test(test_remove_random),
        cmocka_unit_test(test_compaction),
        cmocka_unit_test(test_restore_same_ordinals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
