/*
 * test_codec.c - unit tests of the Avro codec (src/codec.c).
 *
 * Runs from the repository root (fixture paths are relative to it).
 * Covers: JSON -> Avro -> engage_action_t round trips in both framings,
 * schema evolution through resolution (v2 adds a field, v0 lacks one),
 * every decode error class, fuzzed garbage, encoder determinism, the
 * DayPartial round trip and JSON rendering (including invalid UTF-8).
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

#include "codec.h"
#include "timeutil.h"

#define MAP "1=schemas/user_action.avsc,2=tests/fixtures/user_action_v2.avsc," \
            "3=tests/fixtures/user_action_v0.avsc"

static char errstr[512];

static engage_decoder_t *new_conf(void) {
    engage_decoder_t *d = engage_decoder_new(1, MAP, NULL, errstr, sizeof(errstr));
    if (!d)
        fail_msg("decoder: %s", errstr);
    return d;
}

static engage_decoder_t *new_plain(void) {
    engage_decoder_t *d =
        engage_decoder_new(0, NULL, "schemas/user_action.avsc", errstr, sizeof(errstr));
    if (!d)
        fail_msg("decoder: %s", errstr);
    return d;
}

static void enc_json(engage_decoder_t *d, int confluent, int32_t id, const char *json,
                     void **buf, size_t *len) {
    engage_err_t err =
        engage_codec_encode_action_json(d, confluent, id, json, buf, len, errstr, sizeof(errstr));
    if (err)
        fail_msg("encode %s: %s (%s)", json, engage_err_name(err), errstr);
}

static void assert_view(const char *p, size_t n, const char *want) {
    assert_non_null(p);
    assert_int_equal(n, strlen(want));
    assert_memory_equal(p, want, n);
}

/* ---- hand-built Avro --------------------------------------------------- */

typedef struct {
    unsigned char b[4096];
    size_t n;
} bytes_t;

static void put_varint(bytes_t *o, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (z & ~0x7fULL) {
        o->b[o->n++] = (unsigned char)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    o->b[o->n++] = (unsigned char)z;
}

static void put_str(bytes_t *o, const char *s, size_t n) {
    put_varint(o, (int64_t)n);
    memcpy(o->b + o->n, s, n);
    o->n += n;
}

static void put_hdr(bytes_t *o, int32_t id) {
    o->b[o->n++] = 0;
    o->b[o->n++] = (unsigned char)((uint32_t)id >> 24);
    o->b[o->n++] = (unsigned char)((uint32_t)id >> 16);
    o->b[o->n++] = (unsigned char)((uint32_t)id >> 8);
    o->b[o->n++] = (unsigned char)id;
}

/* ---- round trips --------------------------------------------------------- */

static void test_roundtrip_confluent(void **state) {
    (void)state;
    engage_decoder_t *d = new_conf();
    void *buf;
    size_t len;
    enc_json(d, 1, 1,
             "{\"event_id\":\"e-1\",\"user_id\":\"u-42\",\"timestamp\":1700000000123,"
             "\"action\":\"click\",\"platform\":\"ios\",\"app_version\":\"1.2.3\","
             "\"unknown_member\":[1,2]}",
             &buf, &len);
    const unsigned char *p = buf;
    assert_true(len > 5);
    assert_int_equal(p[0], 0);
    assert_int_equal(p[1] | p[2] | p[3], 0);
    assert_int_equal(p[4], 1);

    engage_action_t a;
    assert_int_equal(engage_decoder_decode(d, buf, len, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_view(a.event_id, a.event_id_len, "e-1");
    assert_view(a.user_id, a.user_id_len, "u-42");
    assert_view(a.action, a.action_len, "click");
    assert_view(a.platform, a.platform_len, "ios");
    assert_view(a.app_version, a.app_version_len, "1.2.3");
    assert_int_equal(a.ts_ms, 1700000000123LL);
    assert_int_equal(engage_decoder_default_schema_id(d), 1);
    free(buf);
    engage_decoder_destroy(d);
}

static void test_roundtrip_plain(void **state) {
    (void)state;
    engage_decoder_t *d = new_plain();
    void *buf;
    size_t len;
    enc_json(d, 0, 0,
             "{\"event_id\":\"e\",\"user_id\":\"u\",\"timestamp\":-5,\"action\":\"view\","
             "\"platform\":\"web\"}",
             &buf, &len);
    /* plain: datum starts with the event_id string: length 1 (zig-zag 2) */
    assert_int_equal(((unsigned char *)buf)[0], 2);
    engage_action_t a;
    assert_int_equal(engage_decoder_decode(d, buf, len, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_view(a.event_id, a.event_id_len, "e");
    assert_view(a.user_id, a.user_id_len, "u");
    assert_view(a.action, a.action_len, "view");
    assert_view(a.platform, a.platform_len, "web");
    assert_null(a.app_version);
    assert_int_equal(a.ts_ms, -5);
    assert_int_equal(engage_decoder_default_schema_id(d), 0);
    free(buf);
    engage_decoder_destroy(d);
}

static void test_null_platform(void **state) {
    (void)state;
    engage_decoder_t *d = new_conf();
    void *buf;
    size_t len;
    enc_json(d, 1, 1,
             "{\"event_id\":\"e\",\"user_id\":\"u\",\"timestamp\":0,\"action\":\"a\","
             "\"platform\":null}",
             &buf, &len);
    engage_action_t a;
    assert_int_equal(engage_decoder_decode(d, buf, len, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_null(a.platform);
    assert_int_equal(a.platform_len, 0);
    assert_null(a.app_version);
    free(buf);
    engage_decoder_destroy(d);
}

static void test_unicode_and_long_user_id(void **state) {
    (void)state;
    engage_decoder_t *d = new_conf();
    const char *uni = "用户-ü-\xf0\x9f\x98\x80";
    char json[1024], longid[257];
    void *buf;
    size_t len;
    engage_action_t a;

    snprintf(json, sizeof(json),
             "{\"event_id\":\"e\",\"user_id\":\"%s\",\"timestamp\":1,\"action\":\"a\"}", uni);
    enc_json(d, 1, 1, json, &buf, &len);
    assert_int_equal(engage_decoder_decode(d, buf, len, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_view(a.user_id, a.user_id_len, uni);
    free(buf);

    for (int i = 0; i < 256; i++)
        longid[i] = (char)('a' + i % 26);
    longid[256] = '\0';
    snprintf(json, sizeof(json),
             "{\"event_id\":\"e\",\"user_id\":\"%s\",\"timestamp\":1,\"action\":\"a\"}", longid);
    enc_json(d, 1, 1, json, &buf, &len);
    assert_int_equal(engage_decoder_decode(d, buf, len, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_int_equal(a.user_id_len, 256);
    assert_memory_equal(a.user_id, longid, 256);
    free(buf);
    engage_decoder_destroy(d);
}

/* ---- schema evolution ---------------------------------------------------- */

static void test_evolved_v2(void **state) {
    (void)state;
    engage_decoder_t *d = new_conf();
    void *b1, *b2, *b3;
    size_t l1, l2, l3;
    engage_action_t a;
    enc_json(d, 1, 2,
             "{\"event_id\":\"e2\",\"user_id\":\"u2\",\"timestamp\":77,\"action\":\"buy\","
             "\"platform\":\"android\",\"app_version\":\"9\",\"session_hint\":\"hint!\"}",
             &b1, &l1);
    assert_int_equal(((unsigned char *)b1)[4], 2);
    assert_int_equal(engage_decoder_decode(d, b1, l1, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_view(a.event_id, a.event_id_len, "e2");
    assert_view(a.user_id, a.user_id_len, "u2");
    assert_view(a.action, a.action_len, "buy");
    assert_view(a.platform, a.platform_len, "android");
    assert_view(a.app_version, a.app_version_len, "9");
    assert_int_equal(a.ts_ms, 77);

    /* session_hint missing -> its default "" is written */
    enc_json(d, 1, 2,
             "{\"event_id\":\"e2\",\"user_id\":\"u2\",\"timestamp\":77,\"action\":\"buy\"}",
             &b2, &l2);
    enc_json(d, 1, 2,
             "{\"event_id\":\"e2\",\"user_id\":\"u2\",\"timestamp\":77,\"action\":\"buy\","
             "\"platform\":null,\"app_version\":null,\"session_hint\":\"\"}",
             &b3, &l3);
    assert_int_equal(l2, l3);
    assert_memory_equal(b2, b3, l2);
    assert_int_equal(((unsigned char *)b2)[l2 - 1], 0); /* empty string: length 0 */
    assert_int_equal(engage_decoder_decode(d, b2, l2, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_null(a.platform);
    free(b1);
    free(b2);
    free(b3);
    engage_decoder_destroy(d);
}

static void test_evolved_v0(void **state) {
    (void)state;
    engage_decoder_t *d = new_conf();
    void *buf;
    size_t len;
    engage_action_t a;
    /* app_version is not in v0: the member is ignored, the reader default
     * (null) applies */
    enc_json(d, 1, 3,
             "{\"event_id\":\"e0\",\"user_id\":\"u0\",\"timestamp\":5,\"action\":\"open\","
             "\"platform\":\"tv\",\"app_version\":\"ignored\"}",
             &buf, &len);
    assert_int_equal(((unsigned char *)buf)[4], 3);
    assert_int_equal(engage_decoder_decode(d, buf, len, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_view(a.event_id, a.event_id_len, "e0");
    assert_view(a.user_id, a.user_id_len, "u0");
    assert_view(a.action, a.action_len, "open");
    assert_view(a.platform, a.platform_len, "tv");
    assert_null(a.app_version);
    assert_int_equal(a.ts_ms, 5);

    char *js = NULL;
    assert_int_equal(engage_codec_to_json(d, NULL, ENGAGE_KIND_USER_ACTION, buf, len, &js,
                                          errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_string_equal(js, "{\"event_id\":\"e0\",\"user_id\":\"u0\",\"timestamp\":5,"
                            "\"action\":\"open\",\"platform\":\"tv\",\"app_version\":null}");
    free(js);
    free(buf);
    engage_decoder_destroy(d);
}

/* A writer with one branch the reader cannot take decodes the others. */
static char tmp_schema_path[64];

static const char *write_tmp_schema(const char *text) {
    strcpy(tmp_schema_path, "/tmp/engage_codec_XXXXXX.avsc");
    int fd = mkstemps(tmp_schema_path, 5);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return tmp_schema_path;
}

static void test_incompatible_schemas(void **state) {
    (void)state;
    static const char *const bad[] = {
        /* timestamp as string */
        "{\"type\":\"record\",\"name\":\"UserAction\",\"fields\":["
        "{\"name\":\"event_id\",\"type\":\"string\"},{\"name\":\"user_id\",\"type\":\"string\"},"
        "{\"name\":\"timestamp\",\"type\":\"string\"},{\"name\":\"action\",\"type\":\"string\"}]}",
        /* lacks event_id (no default in the reader); this case crashes
         * avro-c 1.11.1's avro_resolved_reader_new if it is ever called */
        "{\"type\":\"record\",\"name\":\"UserAction\",\"fields\":["
        "{\"name\":\"user_id\",\"type\":\"string\"},{\"name\":\"timestamp\",\"type\":\"long\"},"
        "{\"name\":\"action\",\"type\":\"string\"},"
        "{\"name\":\"platform\",\"type\":[\"null\",\"string\"]}]}",
        /* platform as int */
        "{\"type\":\"record\",\"name\":\"UserAction\",\"fields\":["
        "{\"name\":\"event_id\",\"type\":\"string\"},{\"name\":\"user_id\",\"type\":\"string\"},"
        "{\"name\":\"timestamp\",\"type\":\"long\"},{\"name\":\"action\",\"type\":\"string\"},"
        "{\"name\":\"platform\",\"type\":\"int\"}]}",
        /* another record name */
        "{\"type\":\"record\",\"name\":\"Other\",\"fields\":["
        "{\"name\":\"event_id\",\"type\":\"string\"},{\"name\":\"user_id\",\"type\":\"string\"},"
        "{\"name\":\"timestamp\",\"type\":\"long\"},{\"name\":\"action\",\"type\":\"string\"}]}",
        /* not a record */
        "\"string\"",
        /* not JSON */
        "{\"type\":",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char map[128];
        snprintf(map, sizeof(map), "1=schemas/user_action.avsc, 9=%s", write_tmp_schema(bad[i]));
        errstr[0] = '\0';
        engage_decoder_t *d = engage_decoder_new(1, map, NULL, errstr, sizeof(errstr));
        unlink(tmp_schema_path);
        if (d)
            fail_msg("schema %zu accepted", i);
        assert_true(strlen(errstr) > 0);
    }

    /* a compatible one with int timestamp (promoted) and string platform */
    char map[128];
    snprintf(map, sizeof(map), "4=%s",
             write_tmp_schema(
                 "{\"type\":\"record\",\"name\":\"UserAction\",\"fields\":["
                 "{\"name\":\"event_id\",\"type\":\"string\"},"
                 "{\"name\":\"user_id\",\"type\":\"string\"},"
                 "{\"name\":\"timestamp\",\"type\":\"int\"},"
                 "{\"name\":\"action\",\"type\":\"string\"},"
                 "{\"name\":\"platform\",\"type\":\"string\"}]}"));
    engage_decoder_t *d = engage_decoder_new(1, map, NULL, errstr, sizeof(errstr));
    unlink(tmp_schema_path);
    if (!d)
        fail_msg("promoting schema rejected: %s", errstr);
    void *buf;
    size_t len;
    engage_action_t a;
    enc_json(d, 1, 4,
             "{\"event_id\":\"e\",\"user_id\":\"u\",\"timestamp\":-7,\"action\":\"a\","
             "\"platform\":\"p\"}",
             &buf, &len);
    assert_int_equal(engage_decoder_decode(d, buf, len, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_int_equal(a.ts_ms, -7);
    assert_view(a.platform, a.platform_len, "p");
    assert_null(a.app_version);
    free(buf);
    engage_decoder_destroy(d);
}

static void test_decoder_config_errors(void **state) {
    (void)state;
    const char *maps[] = {"",
                          "1",
                          "x=schemas/user_action.avsc",
                          "-1=schemas/user_action.avsc",
                          "1=",
                          "1=schemas/user_action.avsc,1=schemas/user_action.avsc",
                          "1=/nonexistent/file.avsc",
                          "99999999999=schemas/user_action.avsc"};
    for (size_t i = 0; i < sizeof(maps) / sizeof(maps[0]); i++) {
        errstr[0] = '\0';
        assert_null(engage_decoder_new(1, maps[i], NULL, errstr, sizeof(errstr)));
        assert_true(strlen(errstr) > 0);
    }
    assert_null(engage_decoder_new(1, NULL, NULL, errstr, sizeof(errstr)));
    assert_null(engage_decoder_new(0, NULL, NULL, errstr, sizeof(errstr)));
    assert_null(engage_decoder_new(0, NULL, "/nonexistent.avsc", errstr, sizeof(errstr)));
    engage_decoder_destroy(NULL);
    engage_encoder_destroy(NULL);

    /* spaces around entries are fine */
    engage_decoder_t *d =
        engage_decoder_new(1, " 7 = schemas/user_action.avsc , 8=tests/fixtures/user_action_v0.avsc",
                           NULL, errstr, sizeof(errstr));
    if (!d)
        fail_msg("%s", errstr);
    assert_int_equal(engage_decoder_default_schema_id(d), 7);
    engage_decoder_destroy(d);
}

static void test_encode_json_errors(void **state) {
    (void)state;
    engage_decoder_t *d = new_conf();
    void *buf = (void *)1;
    size_t len = 1;
    static const char *const bad[] = {
        "{\"user_id\":\"u\",\"timestamp\":1,\"action\":\"a\"}",            /* no event_id */
        "{\"event_id\":\"e\",\"user_id\":\"u\",\"action\":\"a\"}",         /* no timestamp */
        "{\"event_id\":\"e\",\"user_id\":\"u\",\"timestamp\":\"1\",\"action\":\"a\"}",
        "{\"event_id\":\"e\",\"user_id\":\"u\",\"timestamp\":1.5,\"action\":\"a\"}",
        "{\"event_id\":\"e\",\"user_id\":null,\"timestamp\":1,\"action\":\"a\"}",
        "{\"event_id\":\"e\",\"user_id\":\"u\",\"timestamp\":1,\"action\":\"a\",\"platform\":3}",
        "[1,2]",
        "{\"event_id\":",
        "",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        errstr[0] = '\0';
        assert_int_equal(engage_codec_encode_action_json(d, 1, 1, bad[i], &buf, &len, errstr,
                                                         sizeof(errstr)),
                         ENGAGE_ERR_INVALID_ARG);
        assert_null(buf);
        assert_true(strlen(errstr) > 0);
    }
    assert_int_equal(engage_codec_encode_action_json(
                         d, 1, 42, "{\"event_id\":\"e\",\"user_id\":\"u\",\"timestamp\":1,"
                                   "\"action\":\"a\"}",
                         &buf, &len, errstr, sizeof(errstr)),
                     ENGAGE_ERR_UNKNOWN_SCHEMA);
    /* wrapped union form is accepted */
    enc_json(d, 1, 1,
             "{\"event_id\":\"e\",\"user_id\":\"u\",\"timestamp\":1,\"action\":\"a\","
             "\"platform\":{\"string\":\"w\"}}",
             &buf, &len);
    engage_action_t a;
    assert_int_equal(engage_decoder_decode(d, buf, len, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_view(a.platform, a.platform_len, "w");
    free(buf);
    engage_decoder_destroy(d);
}

/* ---- decode errors ------------------------------------------------------- */

static engage_err_t dec(engage_decoder_t *d, const void *b, size_t n) {
    engage_action_t a;
    memset(&a, 0x5a, sizeof(a));
    engage_err_t err = engage_decoder_decode(d, b, n, &a, errstr, sizeof(errstr));
    if (err) {
        assert_null(a.event_id); /* cleared on failure */
        assert_true(strlen(errstr) > 0);
    }
    return err;
}

static void test_framing_errors(void **state) {
    (void)state;
    engage_decoder_t *d = new_conf();
    const unsigned char z[8] = {0};
    assert_int_equal(dec(d, NULL, 0), ENGAGE_ERR_BAD_FRAMING);
    assert_int_equal(dec(d, z, 0), ENGAGE_ERR_BAD_FRAMING);
    for (size_t n = 1; n <= 4; n++)
        assert_int_equal(dec(d, z, n), ENGAGE_ERR_BAD_FRAMING);
    const unsigned char magic[] = {1, 0, 0, 0, 1, 2, 'e'};
    assert_int_equal(dec(d, magic, sizeof(magic)), ENGAGE_ERR_BAD_FRAMING);
    const unsigned char unknown[] = {0, 0, 0, 0, 5, 2, 'e'};
    assert_int_equal(dec(d, unknown, sizeof(unknown)), ENGAGE_ERR_UNKNOWN_SCHEMA);
    const unsigned char neg[] = {0, 0xff, 0xff, 0xff, 0xff, 2, 'e'};
    assert_int_equal(dec(d, neg, sizeof(neg)), ENGAGE_ERR_UNKNOWN_SCHEMA);
    /* header only: empty datum */
    const unsigned char hdr[] = {0, 0, 0, 0, 1};
    assert_int_equal(dec(d, hdr, sizeof(hdr)), ENGAGE_ERR_BAD_AVRO);
    engage_decoder_destroy(d);

    d = new_plain();
    assert_int_equal(dec(d, z, 0), ENGAGE_ERR_BAD_AVRO);
    assert_int_equal(dec(d, NULL, 0), ENGAGE_ERR_BAD_AVRO);
    engage_decoder_destroy(d);
}

static void test_truncated_every_length(void **state) {
    (void)state;
    for (int confluent = 0; confluent <= 1; confluent++) {
        engage_decoder_t *d = confluent ? new_conf() : new_plain();
        void *buf;
        size_t len;
        enc_json(d, confluent, 1,
                 "{\"event_id\":\"event-123\",\"user_id\":\"user-456\","
                 "\"timestamp\":1700000000000,\"action\":\"purchase\","
                 "\"platform\":\"ios\",\"app_version\":\"3.1\"}",
                 &buf, &len);
        for (size_t n = 0; n < len; n++) {
            /* a fresh heap copy of exactly n bytes so ASan sees over-reads */
            void *cut = malloc(n ? n : 1);
            memcpy(cut, buf, n);
            engage_err_t want = confluent && n < 5 ? ENGAGE_ERR_BAD_FRAMING : ENGAGE_ERR_BAD_AVRO;
            if (dec(d, cut, n) != want)
                fail_msg("confluent=%d len %zu/%zu: %s", confluent, n, len, errstr);
            free(cut);
        }
        assert_int_equal(dec(d, buf, len), ENGAGE_ERR_OK);

        /* trailing bytes */
        unsigned char *more = malloc(len + 3);
        memcpy(more, buf, len);
        memcpy(more + len, "xyz", 3);
        for (size_t extra = 1; extra <= 3; extra++)
            assert_int_equal(dec(d, more, len + extra), ENGAGE_ERR_BAD_AVRO);
        assert_non_null(strstr(errstr, "trailing"));
        free(more);
        free(buf);
        engage_decoder_destroy(d);
    }
}

static void test_malformed_datums(void **state) {
    (void)state;
    engage_decoder_t *d = new_conf();
    bytes_t o;

    /* huge length prefix: avro-c 1.11.1 would malloc it before reading */
    o.n = 0;
    put_hdr(&o, 1);
    put_varint(&o, 1LL << 40);
    memcpy(o.b + o.n, "abc", 3);
    o.n += 3;
    assert_int_equal(dec(d, o.b, o.n), ENGAGE_ERR_BAD_AVRO);

    o.n = 0;
    put_hdr(&o, 1);
    put_varint(&o, INT64_MAX);
    assert_int_equal(dec(d, o.b, o.n), ENGAGE_ERR_BAD_AVRO);

    /* negative lengths */
    int64_t negs[] = {-1, -2, -1000, INT64_MIN};
    for (size_t i = 0; i < sizeof(negs) / sizeof(negs[0]); i++) {
        o.n = 0;
        put_hdr(&o, 1);
        put_varint(&o, negs[i]);
        memset(o.b + o.n, 'a', 16);
        o.n += 16;
        assert_int_equal(dec(d, o.b, o.n), ENGAGE_ERR_BAD_AVRO);
        assert_non_null(strstr(errstr, "negative"));
    }

    /* varint of 11 bytes */
    o.n = 0;
    put_hdr(&o, 1);
    memset(o.b + o.n, 0x81, 11);
    o.n += 11;
    o.b[o.n++] = 0x01;
    assert_int_equal(dec(d, o.b, o.n), ENGAGE_ERR_BAD_AVRO);

    /* bad union index for platform, then for app_version */
    int64_t idx[] = {2, 3, -1, 1000000};
    for (size_t i = 0; i < sizeof(idx) / sizeof(idx[0]); i++) {
        for (int which = 0; which < 2; which++) {
            o.n = 0;
            put_hdr(&o, 1);
            put_str(&o, "e", 1);
            put_str(&o, "u", 1);
            put_varint(&o, 123);
            put_str(&o, "a", 1);
            if (which)
                put_varint(&o, 0); /* platform null */
            put_varint(&o, idx[i]);
            put_str(&o, "p", 1);
            if (!which)
                put_varint(&o, 0);
            assert_int_equal(dec(d, o.b, o.n), ENGAGE_ERR_BAD_AVRO);
            assert_non_null(strstr(errstr, "union"));
        }
    }

    /* the same record with valid indices decodes */
    o.n = 0;
    put_hdr(&o, 1);
    put_str(&o, "e", 1);
    put_str(&o, "u", 1);
    put_varint(&o, 123);
    put_str(&o, "a", 1);
    put_varint(&o, 1); /* string branch */
    put_str(&o, "p", 1);
    put_varint(&o, 0);
    engage_action_t a;
    assert_int_equal(engage_decoder_decode(d, o.b, o.n, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_int_equal(a.ts_ms, 123);
    assert_view(a.platform, a.platform_len, "p");

    /* embedded NUL in a string survives (length-delimited) */
    o.n = 0;
    put_hdr(&o, 1);
    put_str(&o, "e", 1);
    put_str(&o, "u\0v", 3);
    put_varint(&o, 1);
    put_str(&o, "a", 1);
    put_varint(&o, 0);
    put_varint(&o, 0);
    assert_int_equal(engage_decoder_decode(d, o.b, o.n, &a, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_int_equal(a.user_id_len, 3);
    assert_memory_equal(a.user_id, "u\0v", 3);
    engage_decoder_destroy(d);
}

/* xorshift64*: fixed seed, so failures reproduce */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rng(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static void check_action_sane(const engage_action_t *a) {
    /* views must be readable; touching every byte lets ASan check it */
    volatile unsigned sum = 0;
    const char *p[] = {a->event_id, a->user_id, a->action, a->platform, a->app_version};
    size_t n[] = {a->event_id_len, a->user_id_len, a->action_len, a->platform_len,
                  a->app_version_len};
    for (int i = 0; i < 5; i++) {
        if (!p[i]) {
            assert_true(i >= 3);
            continue;
        }
        for (size_t k = 0; k < n[i]; k++)
            sum += (unsigned char)p[i][k];
    }
    (void)sum;
}

static void test_garbage_fuzz(void **state) {
    (void)state;
    engage_decoder_t *dc = new_conf(), *dp = new_plain();
    void *valid;
    size_t vlen;
    enc_json(dc, 1, 2,
             "{\"event_id\":\"ev\",\"user_id\":\"us\",\"timestamp\":99,\"action\":\"ac\","
             "\"platform\":\"pl\",\"app_version\":\"av\",\"session_hint\":\"sh\"}",
             &valid, &vlen);
    int ok = 0;
    for (int iter = 0; iter < 6000; iter++) {
        size_t n = (size_t)(rng() % 48);
        unsigned char *b = malloc(n ? n : 1);
        int mode = (int)(rng() % 3);
        if (mode == 2 && n > 0) {
            /* mutate a valid record: flip a few bytes, keep or cut length */
            n = n % (vlen + 1);
            memcpy(b, valid, n);
            for (int k = 0; k < 3 && n > 5; k++)
                b[5 + rng() % (n - 5)] = (unsigned char)rng();
        } else {
            for (size_t i = 0; i < n; i++)
                b[i] = (unsigned char)rng();
            if (mode == 1 && n >= 5) { /* valid header, random body */
                b[0] = 0;
                b[1] = b[2] = b[3] = 0;
                b[4] = (unsigned char)(1 + rng() % 3);
            }
        }
        engage_action_t a;
        for (int which = 0; which < 2; which++) {
            engage_decoder_t *d = which ? dp : dc;
            engage_err_t err = engage_decoder_decode(d, b, n, &a, errstr, sizeof(errstr));
            if (err == ENGAGE_ERR_OK) {
                ok++;
                check_action_sane(&a);
            } else {
                assert_true(err == ENGAGE_ERR_BAD_FRAMING || err == ENGAGE_ERR_UNKNOWN_SCHEMA ||
                            err == ENGAGE_ERR_BAD_AVRO);
            }
            char *js = NULL;
            err = engage_codec_to_json(d, NULL, ENGAGE_KIND_USER_ACTION, b, n, &js, errstr,
                                       sizeof(errstr));
            if (err == ENGAGE_ERR_OK) {
                json_t *j = json_loads(js, JSON_ALLOW_NUL, NULL);
                assert_non_null(j); /* always valid JSON, even for bad UTF-8 */
                json_decref(j);
            }
            free(js);
        }
        free(b);
    }
    assert_true(ok > 0); /* some mutants stay valid: the OK path was fuzzed too */
    free(valid);
    engage_decoder_destroy(dc);
    engage_decoder_destroy(dp);
}

/* ---- output records ------------------------------------------------------ */

static engage_encoder_t *new_enc(int confluent) {
    engage_encoder_t *e = engage_encoder_new(confluent, 11, 12, 13, errstr, sizeof(errstr));
    if (!e)
        fail_msg("encoder: %s", errstr);
    return e;
}

static engage_session_rec_t sample_session(void) {
    static const char uid[] = "user-1XXXX"; /* not NUL-terminated at len 6 */
    engage_session_rec_t s = {.session_id = "00c0ffee12345678",
                              .user_id = uid,
                              .user_id_len = 6,
                              .start_ms = 1709251200000LL + 1000,
                              .end_ms = 1709251200000LL + 61000,
                              .duration_ms = 60000,
                              .actions = 7,
                              .day = engage_day_of_ms(1709251200000LL + 1000)};
    return s;
}

static engage_daily_rec_t sample_daily(int has_iqr) {
    engage_daily_rec_t r = {.day = 19783,
                            .dau = 100,
                            .wau = 400,
                            .mau = 1000,
                            .sessions = 150,
                            .session_users = 90,
                            .avg_duration_ms = 12345.678901234567,
                            .actions_per_session = 0.1,
                            .has_iqr = has_iqr,
                            .duration_q1 = 1.5,
                            .duration_q3 = 2.25,
                            .actions_q1 = 3,
                            .actions_q3 = 4,
                            .duration_lower_fence = -0.375,
                            .duration_upper_fence = 4.125,
                            .actions_lower_fence = 1.5,
                            .actions_upper_fence = 5.5,
                            .valid_sessions = 140,
                            .valid_users = 88,
                            .valid_avg_duration_ms = 1.0 / 3.0,
                            .valid_actions_per_session = 2.5,
                            .duration_outliers = 10,
                            .actions_outliers = 4};
    return r;
}

static engage_partial_rec_t sample_partial(void) {
    engage_partial_rec_t p = {.day = 19783,
                              .partition = 3,
                              .partition_count = 8,
                              .dau = 11,
                              .wau = 22,
                              .mau = 33,
                              .sessions = 44,
                              .session_users = 10,
                              .sum_duration_ms = 1LL << 40,
                              .sum_actions = 99,
                              .max_event_day = 19784,
                              .is_end = 0};
    return p;
}

/* ---- the direct Session encoder against avro-c ------------------------- */

static uint64_t xs64(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void test_session_encoder_matches_avro(void **state) {
    (void)state;
    static const int64_t edges[] = {0, 1, -1, 63, 64, -64, -65, 127, 128, 8191, 8192,
                                    INT32_MAX, INT32_MIN, (int64_t)INT32_MAX + 1,
                                    1767225600000LL, INT64_MAX, INT64_MIN, INT64_MIN + 1};
    static const size_t id_lens[] = {0, 1, 63, 64, 65, 127, 128, 300, 8191, 8192, 20000};
    char *uid = malloc(20001);
    assert_non_null(uid);
    uint64_t seed = 0x9e3779b97f4a7c15ULL;
    for (int confluent = 0; confluent <= 1; confluent++) {
        engage_encoder_t *e = new_enc(confluent);
        for (int i = 0; i < 60000; i++) {
            engage_session_rec_t r;
            memset(&r, 0, sizeof(r));
            size_t ne = sizeof(edges) / sizeof(edges[0]);
            int edge = i < 2000;
            r.start_ms = edge ? edges[xs64(&seed) % ne] : (int64_t)xs64(&seed);
            r.end_ms = edge ? edges[xs64(&seed) % ne] : r.start_ms + (int64_t)(xs64(&seed) % 7200000);
            r.duration_ms = edge ? edges[xs64(&seed) % ne] : r.end_ms - r.start_ms;
            r.actions = edge ? (int32_t)edges[xs64(&seed) % 13] : (int32_t)(xs64(&seed) % 5000);
            r.day = (int32_t)(xs64(&seed) % 6000000) - 1000000; /* years < 0 and > 9999 too */
            size_t ul = edge ? id_lens[xs64(&seed) % (sizeof(id_lens) / sizeof(id_lens[0]))]
                             : (size_t)(xs64(&seed) % 40);
            for (size_t j = 0; j < ul; j++)
                uid[j] = (char)(' ' + xs64(&seed) % 95);
            r.user_id = ul ? uid : (xs64(&seed) & 1 ? uid : NULL);
            r.user_id_len = ul;
            char sid[17];
            snprintf(sid, sizeof(sid), "%016llx", (unsigned long long)xs64(&seed));
            r.session_id = sid;
            const void *b1, *b2;
            size_t n1, n2;
            assert_int_equal(engage_encode_session(e, &r, &b1, &n1), ENGAGE_ERR_OK);
            unsigned char *copy = malloc(n1);
            assert_non_null(copy);
            memcpy(copy, b1, n1);
            assert_int_equal(engage_encode_session_generic(e, &r, &b2, &n2), ENGAGE_ERR_OK);
            if (n1 != n2 || memcmp(copy, b2, n1) != 0)
                fail_msg("record %d (confluent %d): direct %zu bytes, avro-c %zu bytes differ", i,
                         confluent, n1, n2);
            free(copy);
        }
        engage_session_rec_t bad = sample_session();
        const void *b;
        size_t n;
        bad.session_id = NULL;
        assert_int_equal(engage_encode_session(e, &bad, &b, &n), ENGAGE_ERR_INVALID_ARG);
        bad = sample_session();
        bad.user_id = NULL;
        bad.user_id_len = 3;
        assert_int_equal(engage_encode_session(e, &bad, &b, &n), ENGAGE_ERR_INVALID_ARG);
        engage_encoder_destroy(e);
    }
    free(uid);
}

static void test_day_format_matches_snprintf(void **state) {
    (void)state;
    /* years -100 to 10100 (clamped to 0000 and 9999) */
    int32_t lo, hi;
    assert_int_equal(engage_day_parse("0001-01-01", &lo), 0);
    assert_int_equal(engage_day_parse("9999-12-31", &hi), 0);
    /* every day of 1900..2200, and every 37th beyond */
    for (int32_t day = -756000; day <= 2970000; day += (day >= -25567 && day <= 84000) ? 1 : 37) {
        char a[16], want[16];
        engage_day_format(day, a, sizeof(a));
        int32_t back;
        if (day >= lo && day <= hi) { /* not clamped: round-trips */
            assert_int_equal(engage_day_parse(a, &back), 0);
            assert_int_equal(back, day);
        }
        /* the reference format, from the parsed fields */
        int y;
        unsigned m, d;
        assert_int_equal(sscanf(a, "%4d-%2u-%2u", &y, &m, &d), 3);
        snprintf(want, sizeof(want), "%04d-%02u-%02u", y, m, d);
        assert_string_equal(a, want);
        if (day % 1000 == 0) { /* shorter buffers are cut like snprintf */
            for (size_t sz = 1; sz <= 11; sz++) {
                char c[16];
                memset(c, 'x', sizeof(c));
                engage_day_format(day, c, sz);
                assert_int_equal(strlen(c), sz - 1);
                assert_memory_equal(c, a, sz - 1);
            }
        }
    }
}

static void test_encoder_determinism(void **state) {
    (void)state;
    for (int confluent = 0; confluent <= 1; confluent++) {
        engage_encoder_t *e1 = new_enc(confluent), *e2 = new_enc(confluent);
        engage_session_rec_t s = sample_session();
        engage_daily_rec_t dl = sample_daily(1), dn = sample_daily(0);
        engage_partial_rec_t p = sample_partial();
        const void *b;
        size_t n;
        unsigned char first[3][512];
        size_t flen[3];

        for (int round = 0; round < 3; round++) {
            engage_encoder_t *e = round == 2 ? e2 : e1;
            for (int kind = 0; kind < 3; kind++) {
                engage_err_t err = kind == 0   ? engage_encode_session(e, &s, &b, &n)
                                   : kind == 1 ? engage_encode_daily(e, &dl, &b, &n)
                                               : engage_encode_partial(e, &p, &b, &n);
                assert_int_equal(err, ENGAGE_ERR_OK);
                assert_true(n < sizeof(first[0]));
                if (confluent) {
                    const unsigned char *u = b;
                    assert_int_equal(u[0], 0);
                    assert_int_equal(u[4], 11 + kind);
                }
                if (round == 0) {
                    memcpy(first[kind], b, n);
                    flen[kind] = n;
                } else {
                    assert_int_equal(n, flen[kind]);
                    assert_memory_equal(b, first[kind], n);
                }
                /* something different in between must not leak into the next */
                assert_int_equal(engage_encode_daily(e, &dn, &b, &n), ENGAGE_ERR_OK);
            }
        }
        /* null IQR drops 10 doubles (8 bytes) and 4 varint longs
         * (140, 88 take 2 bytes; 10, 4 take 1); union indexes stay */
        assert_int_equal(engage_encode_daily(e1, &dn, &b, &n), ENGAGE_ERR_OK);
        assert_int_equal(n, flen[1] - (10 * 8 + 2 + 2 + 1 + 1));
        engage_encoder_destroy(e1);
        engage_encoder_destroy(e2);
    }
}

static void test_partial_roundtrip(void **state) {
    (void)state;
    for (int confluent = 0; confluent <= 1; confluent++) {
        engage_encoder_t *e = new_enc(confluent);
        engage_partial_rec_t p = sample_partial(), q;
        const void *b;
        size_t n;
        for (int end = 0; end <= 1; end++) {
            p.is_end = end;
            p.dau = -5 + end;
            assert_int_equal(engage_encode_partial(e, &p, &b, &n), ENGAGE_ERR_OK);
            memset(&q, 0x77, sizeof(q));
            assert_int_equal(engage_decode_partial(e, b, n, &q), ENGAGE_ERR_OK);
            assert_int_equal(q.day, p.day);
            assert_int_equal(q.partition, p.partition);
            assert_int_equal(q.partition_count, p.partition_count);
            assert_int_equal(q.dau, p.dau);
            assert_int_equal(q.wau, p.wau);
            assert_int_equal(q.mau, p.mau);
            assert_int_equal(q.sessions, p.sessions);
            assert_int_equal(q.session_users, p.session_users);
            assert_int_equal(q.sum_duration_ms, p.sum_duration_ms);
            assert_int_equal(q.sum_actions, p.sum_actions);
            assert_int_equal(q.max_event_day, p.max_event_day);
            assert_int_equal(q.is_end, p.is_end);
        }
        /* truncations and trailing bytes */
        unsigned char copy[256];
        memcpy(copy, b, n);
        for (size_t k = 0; k < n; k++) {
            engage_err_t want =
                confluent && k < 5 ? ENGAGE_ERR_BAD_FRAMING : ENGAGE_ERR_BAD_AVRO;
            void *cut = malloc(k ? k : 1);
            memcpy(cut, copy, k);
            assert_int_equal(engage_decode_partial(e, cut, k, &q), want);
            free(cut);
        }
        copy[n] = 0;
        assert_int_equal(engage_decode_partial(e, copy, n + 1, &q), ENGAGE_ERR_BAD_AVRO);
        if (confluent) {
            copy[0] = 7;
            assert_int_equal(engage_decode_partial(e, copy, n, &q), ENGAGE_ERR_BAD_FRAMING);
        }
        engage_encoder_destroy(e);
    }
}

static json_t *to_json(engage_encoder_t *e, engage_kind_t kind, const void *b, size_t n) {
    char *js = NULL;
    engage_err_t err = engage_codec_to_json(NULL, e, kind, b, n, &js, errstr, sizeof(errstr));
    if (err)
        fail_msg("to_json: %s %s", engage_err_name(err), errstr);
    json_error_t jerr;
    json_t *j = json_loads(js, JSON_ALLOW_NUL, &jerr);
    if (!j)
        fail_msg("not JSON (%s): %s", jerr.text, js);
    assert_null(strchr(js, ' ')); /* compact */
    free(js);
    return j;
}

static void assert_jint(json_t *o, const char *k, long long v) {
    json_t *m = json_object_get(o, k);
    if (!json_is_integer(m) || json_integer_value(m) != v)
        fail_msg("field %s: want %lld", k, v);
}

static void assert_jreal(json_t *o, const char *k, double v) {
    json_t *m = json_object_get(o, k);
    if (!json_is_real(m) || json_real_value(m) != v) /* exact: 17 digits */
        fail_msg("field %s: want %.17g got %.17g", k, v, json_real_value(m));
}

static void assert_jstr(json_t *o, const char *k, const char *v) {
    json_t *m = json_object_get(o, k);
    if (!json_is_string(m) || strcmp(json_string_value(m), v) != 0)
        fail_msg("field %s: want %s", k, v);
}

static void test_to_json_outputs(void **state) {
    (void)state;
    engage_encoder_t *e = new_enc(1);
    const void *b;
    size_t n;

    engage_session_rec_t s = sample_session();
    assert_int_equal(engage_encode_session(e, &s, &b, &n), ENGAGE_ERR_OK);
    json_t *j = to_json(e, ENGAGE_KIND_SESSION, b, n);
    assert_int_equal(json_object_size(j), 7);
    assert_jstr(j, "session_id", "00c0ffee12345678");
    assert_jstr(j, "user_id", "user-1");
    assert_jint(j, "start_ms", s.start_ms);
    assert_jint(j, "end_ms", s.end_ms);
    assert_jint(j, "duration_ms", 60000);
    assert_jint(j, "actions", 7);
    assert_jstr(j, "date", "2024-03-01");
    /* schema order */
    const char *order[] = {"session_id", "user_id",  "start_ms", "end_ms",
                           "duration_ms", "actions", "date"};
    void *it = json_object_iter(j);
    for (int i = 0; i < 7; i++, it = json_object_iter_next(j, it))
        assert_string_equal(json_object_iter_key(it), order[i]);
    json_decref(j);

    engage_daily_rec_t d = sample_daily(1);
    assert_int_equal(engage_encode_daily(e, &d, &b, &n), ENGAGE_ERR_OK);
    j = to_json(e, ENGAGE_KIND_DAILY, b, n);
    assert_int_equal(json_object_size(j), 22);
    assert_jstr(j, "date", "2024-03-01");
    assert_jint(j, "dau", 100);
    assert_jint(j, "wau", 400);
    assert_jint(j, "mau", 1000);
    assert_jint(j, "sessions", 150);
    assert_jint(j, "session_users", 90);
    assert_jreal(j, "avg_duration_ms", 12345.678901234567);
    assert_jreal(j, "actions_per_session", 0.1);
    assert_jreal(j, "duration_q1", 1.5);
    assert_jreal(j, "duration_q3", 2.25);
    assert_jreal(j, "actions_q1", 3);
    assert_jreal(j, "actions_q3", 4);
    assert_jreal(j, "duration_lower_fence", -0.375);
    assert_jreal(j, "duration_upper_fence", 4.125);
    assert_jreal(j, "actions_lower_fence", 1.5);
    assert_jreal(j, "actions_upper_fence", 5.5);
    assert_jint(j, "valid_sessions", 140);
    assert_jint(j, "valid_users", 88);
    assert_jreal(j, "valid_avg_duration_ms", 1.0 / 3.0);
    assert_jreal(j, "valid_actions_per_session", 2.5);
    assert_jint(j, "duration_outliers", 10);
    assert_jint(j, "actions_outliers", 4);
    json_decref(j);

    d = sample_daily(0);
    assert_int_equal(engage_encode_daily(e, &d, &b, &n), ENGAGE_ERR_OK);
    j = to_json(e, ENGAGE_KIND_DAILY, b, n);
    const char *iqr[] = {"duration_q1",         "duration_q3",          "actions_q1",
                         "actions_q3",          "duration_lower_fence", "duration_upper_fence",
                         "actions_lower_fence", "actions_upper_fence",  "valid_sessions",
                         "valid_users",         "valid_avg_duration_ms",
                         "valid_actions_per_session", "duration_outliers", "actions_outliers"};
    for (size_t i = 0; i < sizeof(iqr) / sizeof(iqr[0]); i++)
        assert_true(json_is_null(json_object_get(j, iqr[i])));
    assert_jint(j, "dau", 100);
    json_decref(j);

    engage_partial_rec_t p = sample_partial();
    assert_int_equal(engage_encode_partial(e, &p, &b, &n), ENGAGE_ERR_OK);
    j = to_json(e, ENGAGE_KIND_PARTIAL, b, n);
    assert_int_equal(json_object_size(j), 12);
    assert_jint(j, "day", 19783);
    assert_jint(j, "partition", 3);
    assert_jint(j, "partition_count", 8);
    assert_jint(j, "dau", 11);
    assert_jint(j, "wau", 22);
    assert_jint(j, "mau", 33);
    assert_jint(j, "sessions", 44);
    assert_jint(j, "session_users", 10);
    assert_jint(j, "sum_duration_ms", 1LL << 40);
    assert_jint(j, "sum_actions", 99);
    assert_jint(j, "max_event_day", 19784);
    assert_jint(j, "is_end", 0);
    json_decref(j);

    /* errors */
    char *js = (char *)1;
    assert_int_equal(engage_codec_to_json(NULL, e, ENGAGE_KIND_SESSION, "\0\0\0\0\1", 5, &js,
                                          errstr, sizeof(errstr)),
                     ENGAGE_ERR_BAD_AVRO);
    assert_null(js);
    assert_int_equal(engage_codec_to_json(NULL, e, ENGAGE_KIND_SESSION, "\1", 1, &js, errstr,
                                          sizeof(errstr)),
                     ENGAGE_ERR_BAD_FRAMING);
    assert_int_equal(engage_codec_to_json(NULL, e, ENGAGE_KIND_USER_ACTION, b, n, &js, errstr,
                                          sizeof(errstr)),
                     ENGAGE_ERR_INVALID_ARG);
    assert_int_equal(engage_codec_to_json(NULL, NULL, ENGAGE_KIND_DAILY, b, n, &js, errstr,
                                          sizeof(errstr)),
                     ENGAGE_ERR_INVALID_ARG);
    engage_encoder_destroy(e);
}

static void test_to_json_action_and_bad_utf8(void **state) {
    (void)state;
    engage_decoder_t *d = new_conf();
    void *buf;
    size_t len;
    enc_json(d, 1, 2,
             "{\"event_id\":\"e\\\"q\",\"user_id\":\"ü\",\"timestamp\":-1,\"action\":\"a\","
             "\"app_version\":\"2\",\"session_hint\":\"x\"}",
             &buf, &len);
    char *js;
    assert_int_equal(engage_codec_to_json(d, NULL, ENGAGE_KIND_USER_ACTION, buf, len, &js, errstr,
                                          sizeof(errstr)),
                     ENGAGE_ERR_OK);
    /* reader fields only, in reader order; the v2 extra field is dropped */
    assert_string_equal(js, "{\"event_id\":\"e\\\"q\",\"user_id\":\"ü\",\"timestamp\":-1,"
                            "\"action\":\"a\",\"platform\":null,\"app_version\":\"2\"}");
    free(js);
    free(buf);

    /* invalid UTF-8 in a user id: bytes replaced by U+FFFD, still JSON */
    bytes_t o = {.n = 0};
    put_hdr(&o, 1);
    put_str(&o, "e", 1);
    put_str(&o, "a\xff\xc3(b\xed\xa0\x80\0z", 10);
    put_varint(&o, 1);
    put_str(&o, "a", 1);
    put_varint(&o, 1);
    put_str(&o, "\xc0\xaf", 2); /* overlong '/' */
    put_varint(&o, 0);
    assert_int_equal(engage_codec_to_json(d, NULL, ENGAGE_KIND_USER_ACTION, o.b, o.n, &js,
                                          errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    json_t *j = json_loads(js, JSON_ALLOW_NUL, NULL);
    assert_non_null(j);
    json_t *u = json_object_get(j, "user_id");
    const char want[] = "a\xef\xbf\xbd\xef\xbf\xbd(b\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\0z";
    assert_int_equal(json_string_length(u), sizeof(want) - 1);
    assert_memory_equal(json_string_value(u), want, sizeof(want) - 1);
    assert_jstr(j, "platform", "\xef\xbf\xbd\xef\xbf\xbd");
    assert_true(json_is_null(json_object_get(j, "app_version")));
    json_decref(j);
    free(js);

    /* the same through the session encoder */
    engage_encoder_t *e = new_enc(0);
    engage_session_rec_t s = sample_session();
    s.user_id = "\x80\x81ok";
    s.user_id_len = 4;
    const void *b;
    size_t n;
    assert_int_equal(engage_encode_session(e, &s, &b, &n), ENGAGE_ERR_OK);
    j = to_json(e, ENGAGE_KIND_SESSION, b, n);
    assert_jstr(j, "user_id", "\xef\xbf\xbd\xef\xbf\xbdok");
    json_decref(j);
    engage_encoder_destroy(e);
    engage_decoder_destroy(d);
}

/* ---- reading outputs back (the compactor), SessionMetrics ------------------- */

static void assert_daily_equal(const engage_daily_rec_t *a, const engage_daily_rec_t *b) {
    assert_int_equal(a->day, b->day);
    assert_int_equal(a->dau, b->dau);
    assert_int_equal(a->wau, b->wau);
    assert_int_equal(a->mau, b->mau);
    assert_int_equal(a->sessions, b->sessions);
    assert_int_equal(a->session_users, b->session_users);
    assert_true(a->avg_duration_ms == b->avg_duration_ms);
    assert_true(a->actions_per_session == b->actions_per_session);
    assert_int_equal(a->has_iqr, b->has_iqr);
    assert_true(a->duration_q1 == b->duration_q1 && a->duration_q3 == b->duration_q3);
    assert_true(a->actions_q1 == b->actions_q1 && a->actions_q3 == b->actions_q3);
    assert_true(a->duration_lower_fence == b->duration_lower_fence);
    assert_true(a->duration_upper_fence == b->duration_upper_fence);
    assert_true(a->actions_lower_fence == b->actions_lower_fence);
    assert_true(a->actions_upper_fence == b->actions_upper_fence);
    assert_int_equal(a->valid_sessions, b->valid_sessions);
    assert_int_equal(a->valid_users, b->valid_users);
    assert_true(a->valid_avg_duration_ms == b->valid_avg_duration_ms);
    assert_true(a->valid_actions_per_session == b->valid_actions_per_session);
    assert_int_equal(a->duration_outliers, b->duration_outliers);
    assert_int_equal(a->actions_outliers, b->actions_outliers);
}

static void assert_metrics_equal(const engage_session_metrics_rec_t *a,
                                 const engage_session_metrics_rec_t *b) {
    assert_int_equal(a->day, b->day);
    assert_int_equal(a->sessions, b->sessions);
    assert_int_equal(a->has_quartiles, b->has_quartiles);
    assert_true(a->duration_q1 == b->duration_q1 && a->duration_q3 == b->duration_q3);
    assert_true(a->actions_q1 == b->actions_q1 && a->actions_q3 == b->actions_q3);
    assert_true(a->duration_lower_fence == b->duration_lower_fence);
    assert_true(a->duration_upper_fence == b->duration_upper_fence);
    assert_true(a->actions_lower_fence == b->actions_lower_fence);
    assert_true(a->actions_upper_fence == b->actions_upper_fence);
    assert_int_equal(a->valid_sessions, b->valid_sessions);
    assert_int_equal(a->valid_users, b->valid_users);
    assert_true(a->valid_avg_duration_ms == b->valid_avg_duration_ms);
    assert_true(a->valid_actions_per_session == b->valid_actions_per_session);
    assert_int_equal(a->duration_outliers, b->duration_outliers);
    assert_int_equal(a->actions_outliers, b->actions_outliers);
    assert_true(a->iqr_multiplier == b->iqr_multiplier);
}

static void test_session_and_daily_decode(void **state) {
    (void)state;
    for (int confluent = 0; confluent <= 1; confluent++) {
        engage_encoder_t *e = new_enc(confluent);
        const void *b;
        size_t n;
        engage_session_rec_t s = sample_session(), sd;
        assert_int_equal(engage_encode_session(e, &s, &b, &n), ENGAGE_ERR_OK);
        memset(&sd, 0x55, sizeof(sd));
        assert_int_equal(engage_decode_session(e, b, n, &sd), ENGAGE_ERR_OK);
        assert_string_equal(sd.session_id, s.session_id);
        assert_int_equal(sd.user_id_len, 6);
        assert_memory_equal(sd.user_id, "user-1", 6);
        assert_int_equal(sd.start_ms, s.start_ms);
        assert_int_equal(sd.end_ms, s.end_ms);
        assert_int_equal(sd.duration_ms, s.duration_ms);
        assert_int_equal(sd.actions, s.actions);
        assert_int_equal(sd.day, s.day);
        /* a daily value is not a session */
        engage_daily_rec_t dl = sample_daily(1), dn = sample_daily(0), dd;
        assert_int_equal(engage_encode_daily(e, &dl, &b, &n), ENGAGE_ERR_OK);
        assert_int_not_equal(engage_decode_session(e, b, n, &sd), ENGAGE_ERR_OK);
        memset(&dd, 0x55, sizeof(dd));
        assert_int_equal(engage_decode_daily(e, b, n, &dd), ENGAGE_ERR_OK);
        assert_daily_equal(&dd, &dl);
        assert_int_equal(engage_encode_daily(e, &dn, &b, &n), ENGAGE_ERR_OK);
        assert_int_equal(engage_decode_daily(e, b, n, &dd), ENGAGE_ERR_OK);
        assert_int_equal(dd.has_iqr, 0);
        assert_int_equal(dd.sessions, dn.sessions);
        assert_true(dd.avg_duration_ms == dn.avg_duration_ms);
        assert_true(dd.duration_q1 == 0 && dd.valid_sessions == 0);
        /* truncations fail cleanly */
        unsigned char copy[512];
        memcpy(copy, b, n);
        for (size_t k = 0; k < n; k++)
            assert_int_not_equal(engage_decode_daily(e, copy, k, &dd), ENGAGE_ERR_OK);
        engage_encoder_destroy(e);
    }
}

static engage_session_metrics_rec_t sample_metrics(int has) {
    engage_session_metrics_rec_t r = {.day = 20454,
                                      .sessions = 12,
                                      .has_quartiles = has,
                                      .duration_q1 = 180000,
                                      .duration_q3 = 300000.25,
                                      .actions_q1 = 4,
                                      .actions_q3 = 6.75,
                                      .duration_lower_fence = -0.5,
                                      .duration_upper_fence = 480000,
                                      .actions_lower_fence = 1,
                                      .actions_upper_fence = 9,
                                      .valid_sessions = 10,
                                      .valid_users = 9,
                                      .valid_avg_duration_ms = 1.0 / 3.0,
                                      .valid_actions_per_session = 4.8,
                                      .duration_outliers = 1,
                                      .actions_outliers = 2,
                                      .iqr_multiplier = 1.5};
    if (!has) {
        r.duration_q1 = r.duration_q3 = r.actions_q1 = r.actions_q3 = 0;
        r.duration_lower_fence = r.duration_upper_fence = 0;
        r.actions_lower_fence = r.actions_upper_fence = 0;
    }
    return r;
}

static void test_session_metrics_roundtrip(void **state) {
    (void)state;
    for (int confluent = 0; confluent <= 1; confluent++) {
        engage_encoder_t *e = new_enc(confluent), *e2 = new_enc(confluent);
        const void *b;
        size_t n;
        unsigned char first[512];
        size_t flen;
        engage_session_metrics_rec_t r = sample_metrics(1), q;
        assert_int_equal(engage_encode_session_metrics(e, &r, &b, &n), ENGAGE_ERR_OK);
        assert_true(n < sizeof(first));
        memcpy(first, b, n);
        flen = n;
        if (confluent) { /* default id 104 until set */
            assert_int_equal(((const unsigned char *)b)[4], 104);
            assert_int_equal(engage_encoder_set_schema_id(e, ENGAGE_KIND_SESSION_METRICS, 321),
                             ENGAGE_ERR_OK);
            assert_int_equal(engage_encode_session_metrics(e, &r, &b, &n), ENGAGE_ERR_OK);
            const unsigned char *u = b;
            assert_int_equal((u[3] << 8) | u[4], 321);
            assert_memory_equal((const unsigned char *)b + 5, first + 5, n - 5);
        }
        /* deterministic across encoders and after other records */
        engage_session_metrics_rec_t rn = sample_metrics(0);
        assert_int_equal(engage_encode_session_metrics(e2, &rn, &b, &n), ENGAGE_ERR_OK);
        assert_int_equal(engage_encode_session_metrics(e2, &r, &b, &n), ENGAGE_ERR_OK);
        assert_int_equal(n, flen);
        if (confluent)
            assert_memory_equal((const unsigned char *)b + 5, first + 5, n - 5);
        else
            assert_memory_equal(b, first, n);
        memset(&q, 0x55, sizeof(q));
        assert_int_equal(engage_decode_session_metrics(e2, b, n, &q), ENGAGE_ERR_OK);
        assert_metrics_equal(&q, &r);
        /* null quartiles: 8 doubles fewer */
        assert_int_equal(engage_encode_session_metrics(e2, &rn, &b, &n), ENGAGE_ERR_OK);
        assert_int_equal(n, flen - 8 * 8);
        assert_int_equal(engage_decode_session_metrics(e2, b, n, &q), ENGAGE_ERR_OK);
        assert_metrics_equal(&q, &rn);
        json_t *j = to_json(e2, ENGAGE_KIND_SESSION_METRICS, b, n);
        assert_int_equal(json_object_size(j), 17);
        assert_true(json_is_null(json_object_get(j, "duration_q1")));
        assert_true(json_is_null(json_object_get(j, "actions_upper_fence")));
        json_decref(j);
        /* truncated and trailing bytes, wrong kind */
        unsigned char copy[520];
        memcpy(copy, b, n);
        for (size_t k = 0; k < n; k++)
            assert_int_not_equal(engage_decode_session_metrics(e2, copy, k, &q), ENGAGE_ERR_OK);
        copy[n] = 0;
        assert_int_equal(engage_decode_session_metrics(e2, copy, n + 1, &q), ENGAGE_ERR_BAD_AVRO);
        engage_partial_rec_t p = sample_partial();
        assert_int_equal(engage_encode_partial(e2, &p, &b, &n), ENGAGE_ERR_OK);
        assert_int_not_equal(engage_decode_session_metrics(e2, b, n, &q), ENGAGE_ERR_OK);
        assert_int_equal(engage_encoder_set_schema_id(e2, ENGAGE_KIND_USER_ACTION, 1),
                         ENGAGE_ERR_INVALID_ARG);
        assert_int_equal(engage_encoder_set_schema_id(e2, ENGAGE_KIND_DAILY, -1),
                         ENGAGE_ERR_INVALID_ARG);
        engage_encoder_destroy(e);
        engage_encoder_destroy(e2);
    }
    /* JSON field names and values */
    engage_encoder_t *e = new_enc(1);
    const void *b;
    size_t n;
    engage_session_metrics_rec_t r = sample_metrics(1);
    assert_int_equal(engage_encode_session_metrics(e, &r, &b, &n), ENGAGE_ERR_OK);
    json_t *j = to_json(e, ENGAGE_KIND_SESSION_METRICS, b, n);
    assert_jstr(j, "date", "2026-01-01");
    assert_jint(j, "sessions", 12);
    assert_jreal(j, "duration_q3", 300000.25);
    assert_jreal(j, "actions_q3", 6.75);
    assert_jreal(j, "duration_lower_fence", -0.5);
    assert_jint(j, "valid_sessions", 10);
    assert_jint(j, "valid_users", 9);
    assert_jreal(j, "valid_avg_duration_ms", 1.0 / 3.0);
    assert_jreal(j, "valid_actions_per_session", 4.8);
    assert_jint(j, "duration_outliers", 1);
    assert_jint(j, "actions_outliers", 2);
    assert_jreal(j, "iqr_multiplier", 1.5);
    json_decref(j);
    engage_encoder_destroy(e);
}


/* ---- zero-copy path vs avro-c ------------------------------------------- */

/* A varint padded with k redundant 0x80 continuation groups (still at most
 * 10 bytes): valid Avro that minimal encoders never write. */
static void put_varint_padded(bytes_t *o, int64_t v, int pad) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    int n = 0;
    do {
        o->b[o->n++] = (unsigned char)((z & 0x7f) | 0x80);
        z >>= 7;
        n++;
    } while (z);
    while (pad-- > 0 && n < 10) {
        o->b[o->n++] = 0x80;
        n++;
    }
    o->b[o->n - 1] &= 0x7f;
}

static void put_rand_str(bytes_t *o, int pad) {
    static const char alpha[] = "abcxyz-_0123456789\0\xff\xc3\xa9";
    size_t n = rng() % 4 == 0 ? (size_t)(rng() % 200) : (size_t)(rng() % 12);
    put_varint_padded(o, (int64_t)n, pad);
    for (size_t i = 0; i < n; i++)
        o->b[o->n++] = (unsigned char)alpha[rng() % (sizeof(alpha) - 1)];
}

static int64_t rand_ts(void) {
    static const int64_t edge[] = {0, -1, 1, 63, 64, -64, -65, INT64_MAX, INT64_MIN,
                                   INT32_MAX, (int64_t)INT32_MIN - 1, 1767225600000LL};
    switch (rng() % 4) {
    case 0:
        return edge[rng() % (sizeof(edge) / sizeof(edge[0]))];
    case 1:
        return (int64_t)rng();
    default:
        return 1700000000000LL + (int64_t)(rng() % 100000000000ULL);
    }
}

/* A random valid datum of schemas/user_action.avsc (framing optional). */
static void gen_valid(bytes_t *o, int confluent) {
    int pad = rng() % 8 == 0 ? (int)(rng() % 4) : 0;
    o->n = 0;
    if (confluent)
        put_hdr(o, 1);
    put_rand_str(o, pad);
    put_rand_str(o, pad);
    put_varint_padded(o, rand_ts(), pad);
    put_rand_str(o, pad);
    for (int k = 0; k < 2; k++) {
        if (rng() % 3 == 0) {
            put_varint_padded(o, 0, pad);
        } else {
            put_varint_padded(o, 1, pad);
            put_rand_str(o, pad);
        }
    }
}

/* Mutates o in place: byte flips, cuts, insertions, deletions, or a
 * rewritten varint; keeps within the buffer. */
static void mutate(bytes_t *o, size_t keep) {
    int rounds = 1 + (int)(rng() % 3);
    for (int r = 0; r < rounds; r++) {
        size_t lo = keep < o->n ? keep : o->n;
        size_t at = o->n > lo ? lo + (size_t)(rng() % (o->n - lo)) : lo;
        switch (rng() % 6) {
        case 0: /* flip a byte */
            if (at < o->n)
                o->b[at] = (unsigned char)rng();
            break;
        case 1: /* cut */
            o->n = at;
            break;
        case 2: /* insert a byte */
            if (o->n < sizeof(o->b) - 1) {
                memmove(o->b + at + 1, o->b + at, o->n - at);
                o->b[at] = (unsigned char)rng();
                o->n++;
            }
            break;
        case 3: /* delete a byte */
            if (at < o->n) {
                memmove(o->b + at, o->b + at + 1, o->n - at - 1);
                o->n--;
            }
            break;
        case 4: /* append garbage */
            for (int k = (int)(rng() % 4); k >= 0 && o->n < sizeof(o->b); k--)
                o->b[o->n++] = (unsigned char)rng();
            break;
        default: /* a small or extreme varint at `at` (union indices, lengths) */
            if (at < o->n && o->n < sizeof(o->b) - 16) {
                static const int64_t v[] = {-1, 0, 1, 2, 3, 1000, INT64_MAX, INT64_MIN};
                bytes_t t = {.n = 0};
                put_varint(&t, v[rng() % 8]);
                memmove(o->b + at + t.n, o->b + at + 1, o->n - at - 1);
                memcpy(o->b + at, t.b, t.n);
                o->n = o->n - 1 + t.n;
            }
            break;
        }
    }
}

static int points_into(const char *p, const void *buf, size_t len) {
    const char *b = buf;
    return p >= b && p <= b + len;
}

static void assert_same_view(const char *a, size_t an, const char *b, size_t bn) {
    assert_int_equal(an, bn);
    assert_int_equal(a == NULL, b == NULL);
    if (a && an)
        assert_memory_equal(a, b, an);
}

/* Decodes b[0..n) (a fresh heap copy, so ASan sees over-reads) with both
 * decoders and checks identical results or errors. Returns the error. */
static engage_err_t diff_decode(engage_decoder_t *fast, engage_decoder_t *slow,
                                const unsigned char *b, size_t n, int expect_fast) {
    unsigned char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, b, n);
    char e1[512] = "", e2[512] = "";
    engage_action_t x, y;
    engage_err_t r1 = engage_decoder_decode(fast, copy, n, &x, e1, sizeof(e1));
    engage_err_t r2 = engage_decoder_decode(slow, copy, n, &y, e2, sizeof(e2));
    if (r1 != r2 || strcmp(e1, e2) != 0)
        fail_msg("len %zu: zero-copy %s \"%s\", avro-c %s \"%s\"", n, engage_err_name(r1), e1,
                 engage_err_name(r2), e2);
    if (r1 == ENGAGE_ERR_OK) {
        check_action_sane(&x);
        assert_same_view(x.event_id, x.event_id_len, y.event_id, y.event_id_len);
        assert_same_view(x.user_id, x.user_id_len, y.user_id, y.user_id_len);
        assert_same_view(x.action, x.action_len, y.action, y.action_len);
        assert_same_view(x.platform, x.platform_len, y.platform, y.platform_len);
        assert_same_view(x.app_version, x.app_version_len, y.app_version, y.app_version_len);
        assert_int_equal(x.ts_ms, y.ts_ms);
        /* the zero-copy path points into the input, avro-c never does */
        assert_int_equal(points_into(x.user_id, copy, n), expect_fast);
        assert_false(points_into(y.user_id, copy, n));
    } else {
        assert_null(x.event_id);
        assert_null(x.user_id);
        assert_null(x.platform);
        assert_int_equal(x.ts_ms, 0);
    }
    free(copy);
    return r1;
}

static void test_fast_path_differential(void **state) {
    (void)state;
    for (int confluent = 0; confluent <= 1; confluent++) {
        engage_decoder_t *fast = confluent ? new_conf() : new_plain();
        engage_decoder_t *slow = confluent ? new_conf() : new_plain();
        engage_decoder_set_fast_path(slow, 0);
        engage_decoder_set_fast_path(NULL, 0); /* ignored */
        int ok = 0, bad = 0;
        bytes_t o;
        for (int iter = 0; iter < 20000; iter++) {
            gen_valid(&o, confluent);
            assert_int_equal(diff_decode(fast, slow, o.b, o.n, 1), ENGAGE_ERR_OK);
            ok++;
            for (int m = 0; m < 3; m++) {
                bytes_t mu = o;
                mutate(&mu, confluent ? 5 : 0);
                if (diff_decode(fast, slow, mu.b, mu.n, 1) != ENGAGE_ERR_OK)
                    bad++;
            }
        }
        assert_true(ok > 0 && bad > 1000);

        /* evolved writers (ids 2 and 3) never take the zero-copy path */
        if (confluent) {
            static const char *const ev[] = {
                "{\"event_id\":\"e\",\"user_id\":\"u\",\"timestamp\":1,\"action\":\"a\","
                "\"platform\":\"p\",\"session_hint\":\"h\"}",
                "{\"event_id\":\"e\",\"user_id\":\"u\",\"timestamp\":1,\"action\":\"a\"}"};
            for (int id = 2; id <= 3; id++) {
                void *buf;
                size_t len;
                enc_json(fast, 1, id, ev[id - 2], &buf, &len);
                assert_int_equal(diff_decode(fast, slow, buf, len, 0), ENGAGE_ERR_OK);
                free(buf);
            }
        }
        engage_decoder_destroy(fast);
        engage_decoder_destroy(slow);
    }
}

/* Writer schemas that resolve but are not the reader field for field
 * (reordered fields, a union in the other order) go through avro-c. */
static void test_fast_path_only_for_identical_writer(void **state) {
    (void)state;
    static const char *const near[] = {
        "{\"type\":\"record\",\"name\":\"UserAction\",\"namespace\":\"engage.v1\",\"fields\":["
        "{\"name\":\"user_id\",\"type\":\"string\"},{\"name\":\"event_id\",\"type\":\"string\"},"
        "{\"name\":\"timestamp\",\"type\":\"long\"},{\"name\":\"action\",\"type\":\"string\"},"
        "{\"name\":\"platform\",\"type\":[\"null\",\"string\"],\"default\":null},"
        "{\"name\":\"app_version\",\"type\":[\"null\",\"string\"],\"default\":null}]}",
        "{\"type\":\"record\",\"name\":\"UserAction\",\"namespace\":\"engage.v1\",\"fields\":["
        "{\"name\":\"event_id\",\"type\":\"string\"},{\"name\":\"user_id\",\"type\":\"string\"},"
        "{\"name\":\"timestamp\",\"type\":\"long\"},{\"name\":\"action\",\"type\":\"string\"},"
        "{\"name\":\"platform\",\"type\":[\"string\",\"null\"]},"
        "{\"name\":\"app_version\",\"type\":[\"null\",\"string\"],\"default\":null}]}",
        /* identical but written without the logical type: still the reader */
        "{\"type\":\"record\",\"name\":\"UserAction\",\"namespace\":\"engage.v1\",\"fields\":["
        "{\"name\":\"event_id\",\"type\":\"string\"},{\"name\":\"user_id\",\"type\":\"string\"},"
        "{\"name\":\"timestamp\",\"type\":\"long\"},{\"name\":\"action\",\"type\":\"string\"},"
        "{\"name\":\"platform\",\"type\":[\"null\",\"string\"],\"default\":null},"
        "{\"name\":\"app_version\",\"type\":[\"null\",\"string\"],\"default\":null}]}"};
    for (int k = 0; k < 3; k++) {
        const char *path = write_tmp_schema(near[k]);
        engage_decoder_t *fast = engage_decoder_new(0, NULL, path, errstr, sizeof(errstr));
        engage_decoder_t *slow = engage_decoder_new(0, NULL, path, errstr, sizeof(errstr));
        unlink(path);
        assert_non_null(fast);
        assert_non_null(slow);
        engage_decoder_set_fast_path(slow, 0);
        void *buf;
        size_t len;
        enc_json(fast, 0, 0,
                 "{\"event_id\":\"ev\",\"user_id\":\"us\",\"timestamp\":42,\"action\":\"ac\","
                 "\"platform\":\"pl\",\"app_version\":null}",
                 &buf, &len);
        assert_int_equal(diff_decode(fast, slow, buf, len, k == 2), ENGAGE_ERR_OK);
        engage_action_t a;
        assert_int_equal(engage_decoder_decode(fast, buf, len, &a, errstr, sizeof(errstr)),
                         ENGAGE_ERR_OK);
        assert_view(a.event_id, a.event_id_len, "ev");
        assert_view(a.user_id, a.user_id_len, "us");
        assert_view(a.platform, a.platform_len, "pl");
        assert_null(a.app_version);
        free(buf);
        engage_decoder_destroy(fast);
        engage_decoder_destroy(slow);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_confluent),
        cmocka_unit_test(test_roundtrip_plain),
        cmocka_unit_test(test_null_platform),
        cmocka_unit_test(test_unicode_and_long_user_id),
        cmocka_unit_test(test_evolved_v2),
        cmocka_unit_test(test_evolved_v0),
        cmocka_unit_test(test_incompatible_schemas),
        cmocka_unit_test(test_decoder_config_errors),
        cmocka_unit_test(test_encode_json_errors),
        cmocka_unit_test(test_framing_errors),
        cmocka_unit_test(test_truncated_every_length),
        cmocka_unit_test(test_malformed_datums),
        cmocka_unit_test(test_garbage_fuzz),
        cmocka_unit_test(test_fast_path_differential),
        cmocka_unit_test(test_fast_path_only_for_identical_writer),
        cmocka_unit_test(test_encoder_determinism),
        cmocka_unit_test(test_partial_roundtrip),
        cmocka_unit_test(test_to_json_outputs),
        cmocka_unit_test(test_to_json_action_and_bad_utf8),
        cmocka_unit_test(test_session_and_daily_decode),
        cmocka_unit_test(test_session_metrics_roundtrip),
        cmocka_unit_test(test_session_encoder_matches_avro),
        cmocka_unit_test(test_day_format_matches_snprintf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
