/*
 * cli.c - options shared by every subcommand that talks to Kafka.
 *
 * `-c FILE` loads a configuration file, `-X name=value` sets one property
 * (repeatable), `-b BROKERS` sets bootstrap.servers. Files are applied first,
 * in the order given, then -X/-b in the order given, so the command line
 * always overrides the file no matter where -c appears (kcat's habit).
 * Everything else is handed back untouched, in order, for the subcommand's
 * own parser. log.level takes effect here, so every command honours it.
 */
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "log.h"

/* If argv[*i] is option `opt` ("-c"), returns its value ("-cFILE" or the next
 * argument, advancing *i) and sets *missing when the value is absent;
 * returns NULL if argv[*i] is not that option. */
static const char *opt_value(int argc, char **argv, int *i, const char *opt, int *missing) {
    const char *a = argv[*i];
    size_t n = strlen(opt);
    if (strncmp(a, opt, n))
        return NULL;
    if (a[n])
        return a + n;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    (*i)++;
    return argv[*i];
}

static engage_log_level_t level_of(const char *s) {
    if (!strcmp(s, "debug"))
        return ENGAGE_LOG_DEBUG;
    if (!strcmp(s, "warn"))
        return ENGAGE_LOG_WARN;
    if (!strcmp(s, "error"))
        return ENGAGE_LOG_ERROR;
    return ENGAGE_LOG_INFO;
}

engage_err_t engage_cli_common(engage_conf_t *conf, int argc, char **argv, int *rest_argc,
                               char ***rest_argv, char *errstr, size_t errstr_size) {
    *rest_argc = 0;
    *rest_argv = NULL;
    char **rest = calloc((size_t)argc + 1, sizeof(char *));
    if (!rest)
        return engage_seterr(ENGAGE_ERR_NOMEM, errstr, errstr_size, "out of memory");
    int nrest = 0;
    engage_err_t err = ENGAGE_ERR_OK;

    /* Pass 1: configuration files. */
    for (int i = 1; i < argc && !err; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        int missing = 0;
        const char *v;
        if ((v = opt_value(argc, argv, &i, "-c", &missing)))
            err = engage_conf_load_file(conf, v, errstr, errstr_size);
        else if (missing)
            err = engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                                "option %s needs an argument", argv[i]);
        else if (!strncmp(argv[i], "-X", 2) || !strncmp(argv[i], "-b", 2))
            i += argv[i][2] ? 0 : 1; /* skip the value, handled in pass 2 */
    }

    /* Pass 2: -X / -b overrides, and collection of what is not ours. */
    if (argc > 0)
        rest[nrest++] = argv[0];
    int i = 1;
    for (; i < argc && !err; i++) {
        if (!strcmp(argv[i], "--"))
            break;
        int missing = 0;
        const char *v;
        if ((v = opt_value(argc, argv, &i, "-c", &missing))) {
            /* loaded in pass 1 */
        } else if (!missing && (v = opt_value(argc, argv, &i, "-X", &missing))) {
            err = engage_conf_set_kv(conf, v, errstr, errstr_size);
        } else if (!missing && (v = opt_value(argc, argv, &i, "-b", &missing))) {
            err = engage_conf_set(conf, "bootstrap.servers", v, errstr, errstr_size);
        } else if (missing) {
            err = engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                                "option %s needs an argument", argv[i]);
        } else {
            rest[nrest++] = argv[i];
        }
    }
    /* "--" and everything after it belong to the caller. */
    for (; i < argc && !err; i++)
        rest[nrest++] = argv[i];

    if (err) {
        free(rest);
        return err;
    }
    engage_log_set_level(level_of(conf->log_level));
    rest[nrest] = NULL;
    *rest_argc = nrest;
    *rest_argv = rest;
    return ENGAGE_ERR_OK;
}
