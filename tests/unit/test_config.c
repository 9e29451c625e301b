/*
 * test_config.c - the configuration table: defaults, validation, file and -X
 * parsing, librdkafka pass-through, and that docs/CONFIGURATION.md and
 * config/engage.conf.example match the table (run from the repo root).
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

#include "commands.h"
#include "config.h"

static char errstr[1024];

/* Reads a whole file into a malloc'd NUL-terminated string (NULL if missing). */
static char *slurp(const char *path, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, fp), (size_t)n);
    s[n] = '\0';
    fclose(fp);
    if (len)
        *len = (size_t)n;
    return s;
}

static char *write_tmp(const char *content) {
    static char path[64];
    strcpy(path, "/tmp/engage_test_conf_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *fp = fdopen(fd, "w");
    fputs(content, fp);
    fclose(fp);
    return path;
}

static void assert_conf_equal(const engage_conf_t *a, const engage_conf_t *b) {
#define S_(f) assert_string_equal(a->f, b->f)
#define I_(f) assert_int_equal(a->f, b->f)
    S_(bootstrap_servers); S_(group_id); S_(topic_input); S_(topic_sessions);
    S_(topic_daily); S_(topic_dead); S_(topic_late); S_(topic_partials); I_(topics_create);
    S_(input_format); S_(input_schemas); S_(input_plain_schema); S_(output_format);
    I_(output_schema_id_session); I_(output_schema_id_daily); I_(output_schema_id_partial);
    I_(session_gap_ms); I_(grace_ms); I_(max_skew_ms); I_(min_timestamp_ms);
    I_(max_user_id_bytes); S_(state_dir); I_(batch_size); I_(batch_timeout_ms);
    I_(until_end); S_(log_level); S_(topic_session_metrics);
    I_(output_schema_id_session_metrics);
    assert_true(a->iqr_multiplier == b->iqr_multiplier);
    I_(retention_margin_days); I_(user_retention_days);
#undef S_
#undef I_
}

static void test_defaults(void **s) {
    (void)s;
    engage_conf_t *c = engage_conf_new();
    assert_string_equal(c->bootstrap_servers, "localhost:9092");
    assert_string_equal(c->group_id, "engage");
    assert_string_equal(c->topic_input, "user-actions");
    assert_string_equal(c->topic_sessions, "sessions");
    assert_string_equal(c->topic_daily, "daily-metrics");
    assert_string_equal(c->topic_dead, "dead-letters");
    assert_string_equal(c->topic_late, "late-events");
    assert_string_equal(c->topic_partials, "engage-day-partials");
    assert_int_equal(c->topics_create, 1);
    assert_string_equal(c->input_format, "confluent");
    assert_string_equal(c->input_schemas, "1=builtin");
    assert_string_equal(c->input_plain_schema, "builtin");
    assert_string_equal(c->output_format, "confluent");
    assert_int_equal(c->output_schema_id_session, 101);
    assert_int_equal(c->output_schema_id_daily, 102);
    assert_int_equal(c->output_schema_id_partial, 103);
    assert_int_equal(c->session_gap_ms, 1800000);
    assert_int_equal(c->grace_ms, 300000);
    assert_int_equal(c->max_skew_ms, 3600000);
    assert_int_equal(c->min_timestamp_ms, 1262304000000LL);
    assert_int_equal(c->max_user_id_bytes, 256);
    assert_string_equal(c->state_dir, "./engage-state");
    assert_int_equal(c->batch_size, 10000);
    assert_int_equal(c->batch_timeout_ms, 100);
    assert_int_equal(c->checkpoint_records, 100000);
    assert_int_equal(c->until_end, 0);
    assert_string_equal(c->log_level, "info");
    assert_string_equal(c->topic_session_metrics, "session-metrics");
    assert_int_equal(c->output_schema_id_session_metrics, 104);
    assert_true(c->iqr_multiplier == 1.5);
    assert_int_equal(c->retention_margin_days, 5);
    assert_int_equal(c->user_retention_days, 90);
    assert_int_equal(c->kafka_cnt, 0);
    engage_conf_destroy(c);
    engage_conf_destroy(NULL);
}

static void test_set_and_validate(void **s) {
    (void)s;
    engage_conf_t *c = engage_conf_new();
    assert_int_equal(engage_conf_set(c, "batch.size", "500", errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_int_equal(c->batch_size, 500);
    /* range errors name the property and the range */
    assert_int_equal(engage_conf_set(c, "batch.size", "0", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_non_null(strstr(errstr, "batch.size"));
    assert_non_null(strstr(errstr, "out of range"));
    assert_int_equal(c->batch_size, 500); /* unchanged */
    /* retention: ranges here, the cross-check (retention >= 31 + margin) at
     * task open (test_retention.c) */
    assert_int_equal(engage_conf_set(c, "user.retention.days", "40", errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_int_equal(c->user_retention_days, 40);
    assert_int_equal(engage_conf_set(c, "user.retention.days", "31", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_int_equal(engage_conf_set(c, "state.retention.margin.days", "0", errstr,
                                     sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_int_equal(engage_conf_set(c, "state.retention.margin.days", "1", errstr,
                                     sizeof(errstr)),
                     ENGAGE_ERR_OK);
    assert_int_equal(c->retention_margin_days, 1);
    assert_int_equal(engage_conf_set(c, "session.gap.ms", "-5", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_int_equal(engage_conf_set(c, "session.gap.ms", "12abc", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_int_equal(engage_conf_set(c, "session.gap.ms", "", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_int_equal(engage_conf_set(c, "timestamp.min.ms", "99999999999999999999", errstr,
                                     sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    /* bools */
    assert_int_equal(engage_conf_set(c, "topics.create", "false", errstr, sizeof(errstr)), 0);
    assert_int_equal(c->topics_create, 0);
    assert_int_equal(engage_conf_set(c, "topics.create", "1", errstr, sizeof(errstr)), 0);
    assert_int_equal(c->topics_create, 1);
    assert_int_equal(engage_conf_set(c, "run.until_end", "true", errstr, sizeof(errstr)), 0);
    assert_int_equal(c->until_end, 1);
    assert_int_equal(engage_conf_set(c, "run.until_end", "yes", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    /* enums */
    assert_int_equal(engage_conf_set(c, "input.format", "plain", errstr, sizeof(errstr)), 0);
    assert_string_equal(c->input_format, "plain");
    assert_int_equal(engage_conf_set(c, "input.format", "json", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_non_null(strstr(errstr, "confluent|plain"));
    assert_int_equal(engage_conf_set(c, "log.level", "trace", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    /* strings: topic names and schema maps are checked */
    assert_int_equal(engage_conf_set(c, "topic.input", "in", errstr, sizeof(errstr)), 0);
    assert_string_equal(c->topic_input, "in");
    assert_int_equal(engage_conf_set(c, "topic.input", "bad topic", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_int_equal(engage_conf_set(c, "topic.input", "", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_int_equal(engage_conf_set(c, "input.schemas", "1=a.avsc,7=/x/b.avsc", errstr,
                                     sizeof(errstr)),
                     0);
    assert_int_equal(engage_conf_set(c, "input.schemas", "a.avsc", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_int_equal(engage_conf_set(c, "input.schemas", "1=a.avsc,", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_int_equal(engage_conf_set(c, "input.schemas", "x=a.avsc", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    /* doubles: finite, in range, nothing after the number */
    assert_int_equal(engage_conf_set(c, "compact.iqr.multiplier", "3", errstr, sizeof(errstr)),
                     0);
    assert_true(c->iqr_multiplier == 3.0);
    assert_int_equal(engage_conf_set(c, "compact.iqr.multiplier", "0.25", errstr,
                                     sizeof(errstr)),
                     0);
    assert_true(c->iqr_multiplier == 0.25);
    assert_int_equal(engage_conf_set(c, "compact.iqr.multiplier", "0", errstr, sizeof(errstr)),
                     0);
    assert_true(c->iqr_multiplier == 0.0);
    const char *bad_doubles[] = {"-0.5", "101", "1.5x", "", " 1", "nan", "inf", "1e999"};
    for (size_t i = 0; i < sizeof(bad_doubles) / sizeof(bad_doubles[0]); i++) {
        assert_int_equal(engage_conf_set(c, "compact.iqr.multiplier", bad_doubles[i], errstr,
                                         sizeof(errstr)),
                         ENGAGE_ERR_CONFIG);
        assert_non_null(strstr(errstr, "compact.iqr.multiplier"));
    }
    assert_true(c->iqr_multiplier == 0.0); /* unchanged by the failures */
    assert_int_equal(engage_conf_set(c, "topic.session_metrics", "sm", errstr, sizeof(errstr)),
                     0);
    assert_string_equal(c->topic_session_metrics, "sm");
    assert_int_equal(engage_conf_set(c, "topic.session_metrics", "s m", errstr,
                                     sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    engage_conf_destroy(c);
}

static void test_unknown_key(void **s) {
    (void)s;
    engage_conf_t *c = engage_conf_new();
    assert_int_equal(engage_conf_set(c, "sesion.gap.ms", "1", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_non_null(strstr(errstr, "sesion.gap.ms"));
    assert_int_equal(engage_conf_set(c, "kafka.", "1", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    engage_conf_destroy(c);
}

static void test_kv(void **s) {
    (void)s;
    engage_conf_t *c = engage_conf_new();
    assert_int_equal(engage_conf_set_kv(c, "watermark.grace.ms=1000", errstr, sizeof(errstr)),
                     0);
    assert_int_equal(c->grace_ms, 1000);
    assert_int_equal(engage_conf_set_kv(c, " group.id = g1 ", errstr, sizeof(errstr)), 0);
    assert_string_equal(c->group_id, "g1");
    /* value may contain '=' */
    assert_int_equal(engage_conf_set_kv(c, "kafka.sasl.password=a=b", errstr, sizeof(errstr)),
                     0);
    assert_int_equal(c->kafka_cnt, 1);
    assert_string_equal(c->kafka_keys[0], "sasl.password");
    assert_string_equal(c->kafka_vals[0], "a=b");
    assert_int_equal(engage_conf_set_kv(c, "batch.size", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_int_equal(engage_conf_set_kv(c, "=5", errstr, sizeof(errstr)), ENGAGE_ERR_CONFIG);
    /* kafka.* keep their order; a repeated key is replaced in place */
    assert_int_equal(engage_conf_set_kv(c, "kafka.client.id=x", errstr, sizeof(errstr)), 0);
    assert_int_equal(engage_conf_set_kv(c, "kafka.sasl.password=c", errstr, sizeof(errstr)), 0);
    assert_int_equal(c->kafka_cnt, 2);
    assert_string_equal(c->kafka_keys[0], "sasl.password");
    assert_string_equal(c->kafka_vals[0], "c");
    assert_string_equal(c->kafka_keys[1], "client.id");
    engage_conf_destroy(c);
}

static void test_file(void **s) {
    (void)s;
    engage_conf_t *c = engage_conf_new();
    const char *path = write_tmp("# a comment\n"
                                 "\n"
                                 "   batch.size = 42   # trailing comment\n"
                                 "topic.input=events\r\n"
                                 "\t# indented comment\n"
                                 "kafka.client.id=engage-test\n");
    assert_int_equal(engage_conf_load_file(c, path, errstr, sizeof(errstr)), 0);
    assert_int_equal(c->batch_size, 42);
    assert_string_equal(c->topic_input, "events");
    assert_int_equal(c->kafka_cnt, 1);
    assert_string_equal(c->kafka_keys[0], "client.id");
    assert_string_equal(c->kafka_vals[0], "engage-test");
    unlink(path);

    /* errors name the file and line */
    path = write_tmp("batch.size=1\n\nnot.a.key=1\n");
    assert_int_equal(engage_conf_load_file(c, path, errstr, sizeof(errstr)), ENGAGE_ERR_CONFIG);
    char want[128];
    snprintf(want, sizeof(want), "%s:3:", path);
    assert_non_null(strstr(errstr, want));
    assert_non_null(strstr(errstr, "not.a.key"));
    unlink(path);
    path = write_tmp("batch.size\n");
    assert_int_equal(engage_conf_load_file(c, path, errstr, sizeof(errstr)), ENGAGE_ERR_CONFIG);
    unlink(path);
    assert_int_equal(engage_conf_load_file(c, "/nonexistent/engage.conf", errstr,
                                           sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    engage_conf_destroy(c);
}

static void test_cli_common(void **s) {
    (void)s;
    engage_conf_t *c = engage_conf_new();
    const char *path = write_tmp("batch.size=7\ngroup.id=fromfile\n");
    char *argv[] = {"dump",      "sessions", "-X",    "group.id=fromcli", "--max",
                    "5",         "-b",       "h1:1",  "-c",               (char *)path,
                    "-Xkafka.client.id=c1", "--", "-X", NULL};
    int argc = 13, rargc = 0;
    char **rargv = NULL;
    assert_int_equal(engage_cli_common(c, argc, argv, &rargc, &rargv, errstr, sizeof(errstr)),
                     ENGAGE_ERR_OK);
    /* the file is applied first even though -c comes last */
    assert_int_equal(c->batch_size, 7);
    assert_string_equal(c->group_id, "fromcli");
    assert_string_equal(c->bootstrap_servers, "h1:1");
    assert_int_equal(c->kafka_cnt, 1);
    assert_string_equal(c->kafka_vals[0], "c1");
    /* the rest, in order, including "--" and what follows it */
    assert_int_equal(rargc, 6);
    assert_string_equal(rargv[0], "dump");
    assert_string_equal(rargv[1], "sessions");
    assert_string_equal(rargv[2], "--max");
    assert_string_equal(rargv[3], "5");
    assert_string_equal(rargv[4], "--");
    assert_string_equal(rargv[5], "-X");
    assert_null(rargv[6]);
    free(rargv);

    char *bad1[] = {"run", "-X", NULL};
    assert_int_equal(engage_cli_common(c, 2, bad1, &rargc, &rargv, errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_null(rargv);
    char *bad2[] = {"run", "-X", "nope=1", NULL};
    assert_int_equal(engage_cli_common(c, 3, bad2, &rargc, &rargv, errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_non_null(strstr(errstr, "nope"));
    unlink(path);
    engage_conf_destroy(c);
}

static void test_kafka_conf(void **s) {
    (void)s;
    engage_conf_t *c = engage_conf_new();
    assert_int_equal(engage_conf_set(c, "bootstrap.servers", "b1:9092,b2:9092", errstr,
                                     sizeof(errstr)),
                     0);
    assert_int_equal(engage_conf_set(c, "kafka.client.id", "engage-x", errstr, sizeof(errstr)),
                     0);
    rd_kafka_conf_t *rc = engage_conf_kafka(c, errstr, sizeof(errstr));
    assert_non_null(rc);
    char v[256];
    size_t vn = sizeof(v);
    assert_int_equal(rd_kafka_conf_get(rc, "bootstrap.servers", v, &vn), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "b1:9092,b2:9092");
    vn = sizeof(v);
    assert_int_equal(rd_kafka_conf_get(rc, "client.id", v, &vn), RD_KAFKA_CONF_OK);
    assert_string_equal(v, "engage-x");
    rd_kafka_conf_destroy(rc);

    /* a property librdkafka rejects is an error, at set time ... */
    assert_int_equal(engage_conf_set(c, "kafka.no.such.prop", "1", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    assert_non_null(strstr(errstr, "no.such.prop"));
    assert_int_equal(engage_conf_set(c, "kafka.linger.ms", "-3", errstr, sizeof(errstr)),
                     ENGAGE_ERR_CONFIG);
    /* ... and when building the librdkafka configuration (a list filled by
     * hand, bypassing engage_conf_set) */
    c->kafka_keys = realloc(c->kafka_keys, sizeof(char *) * 2);
    c->kafka_vals = realloc(c->kafka_vals, sizeof(char *) * 2);
    c->kafka_keys[1] = strdup("no.such.prop");
    c->kafka_vals[1] = strdup("1");
    c->kafka_cnt = 2;
    errstr[0] = '\0';
    assert_null(engage_conf_kafka(c, errstr, sizeof(errstr)));
    assert_non_null(strstr(errstr, "kafka.no.such.prop"));
    engage_conf_destroy(c);
}

static void test_docs_current(void **s) {
    (void)s;
    char *gen = NULL;
    size_t genlen = 0;
    FILE *mem = open_memstream(&gen, &genlen);
    engage_conf_print_markdown(mem);
    fclose(mem);
    size_t doclen = 0;
    char *doc = slurp("docs/CONFIGURATION.md", &doclen);
    if (!doc)
        fail_msg("docs/CONFIGURATION.md missing (run tests from the repo root)");
    if (doclen != genlen || memcmp(doc, gen, genlen))
        fail_msg("docs/CONFIGURATION.md is stale: run "
                 "`engage config --markdown > docs/CONFIGURATION.md`");
    free(doc);

    /* --help output mentions every property too */
    char *help = NULL;
    size_t helplen = 0;
    mem = open_memstream(&help, &helplen);
    engage_conf_print_help(mem);
    fclose(mem);

    /* config/engage.conf.example: loads cleanly, holds only defaults, and
     * names every property of the table (taken from the markdown rows) */
    char *ex = slurp("config/engage.conf.example", NULL);
    assert_non_null(ex);
    engage_conf_t *c = engage_conf_new(), *d = engage_conf_new();
    assert_int_equal(engage_conf_load_file(c, "config/engage.conf.example", errstr,
                                           sizeof(errstr)),
                     0);
    int checked = 0;
    for (char *row = strstr(gen, "\n| `"); row; row = strstr(row + 1, "\n| `")) {
        char name[128];
        if (sscanf(row, "\n| `%127[^`]`", name) != 1)
            continue;
        char key[160];
        snprintf(key, sizeof(key), "\n%s=", name);
        if (!strstr(ex, key))
            fail_msg("config/engage.conf.example lacks %s", name);
        if (!strstr(help, name))
            fail_msg("--help lacks %s", name);
        checked++;
    }
    assert_true(checked >= 26);
    assert_conf_equal(c, d); /* the example holds the defaults */
    assert_int_equal(c->kafka_cnt, 0);
    engage_conf_destroy(c);
    engage_conf_destroy(d);
    free(ex);
    free(help);
    free(gen);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),    cmocka_unit_test(test_set_and_validate),
        cmocka_unit_test(test_unknown_key), cmocka_unit_test(test_kv),
        cmocka_unit_test(test_file),        cmocka_unit_test(test_cli_common),
        cmocka_unit_test(test_kafka_conf),  cmocka_unit_test(test_docs_current),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
