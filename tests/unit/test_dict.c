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
        /* pointers handed out earlier stay valid across growth */
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
    /* new ids continue after the highest ordinal */
    int is_new;
    assert_int_equal(engage_dict_get_or_add(d, "d", 1, &o, &is_new), 0);
    assert_int_equal(o, 6);
    assert_int_equal(engage_dict_get_or_add(d, "b", 1, &o, &is_new), 0);
    assert_int_equal(o, 2);
    assert_int_equal(is_new, 0);
    /* a hole may be filled later by a restore */
    assert_int_equal(engage_dict_insert(d, "hole", 4, 1), ENGAGE_ERR_OK);
    assert_memory_equal(engage_dict_name(d, 1, &len), "hole", 4);
    assert_int_equal(engage_dict_count(d), 7);
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basic),
        cmocka_unit_test(test_many_ids),
        cmocka_unit_test(test_long_and_binary_ids),
        cmocka_unit_test(test_insert_restore),
        cmocka_unit_test(test_restore_many_shuffled),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
