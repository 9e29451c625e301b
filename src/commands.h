/*
 * commands.h - the subcommands of the `engage` binary and the library entry
 * points they share (the demo reuses gen, produce and the processor).
 *
 * Each engage_cmd_* takes the arguments after the subcommand name
 * (argv[0] is the subcommand) and returns the process exit code.
 */
#ifndef ENGAGE_COMMANDS_H
#define ENGAGE_COMMANDS_H

#include <signal.h>
#include <stdint.h>
#include <stdio.h>

#include "config.h"
#include "err.h"

int engage_cmd_run(int argc, char **argv);     /* processor.c */
int engage_cmd_demo(int argc, char **argv);    /* demo.c */
int engage_cmd_gen(int argc, char **argv);     /* gen.c */
int engage_cmd_produce(int argc, char **argv); /* produce.c */
int engage_cmd_dump(int argc, char **argv);    /* dump.c */
int engage_cmd_compact(int argc, char **argv); /* compactor.c */

/** Parses the options common to commands that talk to Kafka:
 *  -c FILE (config file), -X key=value (repeatable), -b BROKERS
 *  (bootstrap.servers). Other options are left for the caller: the function
 *  permutes nothing and returns, in *rest_argv / *rest_argc, the arguments it
 *  did not consume (a malloc'd array the caller free()s; strings are not
 *  copied). Returns OK or CONFIG with errstr. */
engage_err_t engage_cli_common(engage_conf_t *conf, int argc, char **argv, int *rest_argc,
                               char ***rest_argv, char *errstr, size_t errstr_size);

/* ---- gen ---------------------------------------------------------------- */

typedef struct engage_gen_opts {
    uint64_t seed;          /* default 42 */
    int64_t users;          /* distinct users, default 2000 */
    int32_t days;           /* default 35 */
    int32_t start_day;      /* UTC day number of the first day, default 2026-01-01 */
    int32_t partitions;     /* "partition" field = hash(user) % partitions; default 4 */
    double zipf_s;          /* power-law exponent of user activity, default 1.1 */
    double sessions_per_user_day; /* mean for the most active users, default 2 */
    double actions_per_session;   /* mean, default 8 */
    int64_t jitter_ms;      /* max out-of-order displacement, default 60000 (below grace) */
    double dup_rate;        /* fraction of events emitted twice, default 0.01 */
    double malformed_rate;  /* fraction of extra malformed records, default 0.001 */
    double late_rate;       /* fraction of events delayed past grace, default 0.001 */
    int64_t max_events;     /* stop after this many lines (0 = no limit) */
} engage_gen_opts_t;

/** Fills opts with the defaults listed above. */
void engage_gen_defaults(engage_gen_opts_t *opts);

/** Writes the synthetic workload as JSON lines (docs/JSONL.md) to out, in
 *  arrival order. Deterministic for given opts. Returns the number of lines
 *  written, or -1 on write error. */
int64_t engage_gen_write(const engage_gen_opts_t *opts, FILE *out);

/* ---- produce -------------------------------------------------------------- */

/** Reads JSON lines (docs/JSONL.md) from in and produces them, in order, to
 *  topic with an idempotent producer built from conf (kafka.* applied),
 *  encoding values with the input schemas of conf. Waits for every delivery.
 *  Returns OK and *count = records produced, or an error with errstr (a bad
 *  line names its line number). */
engage_err_t engage_produce_jsonl(const engage_conf_t *conf, FILE *in, const char *topic,
                                  int64_t *count, char *errstr, size_t errstr_size);

/* ---- processor -------------------------------------------------------------- */

/** Runs the processor (consumer group member) until *stop becomes non-zero
 *  or, with conf->until_end, until the input end offsets seen at start are
 *  consumed and every day is emitted. Returns OK or an error with errstr. */
engage_err_t engage_processor_run(const engage_conf_t *conf, volatile sig_atomic_t *stop,
                                  char *errstr, size_t errstr_size);

#endif
