/*
 * main.c - the `engage` binary: dispatches to a subcommand.
 *
 * All real work lives in engage_core (the subcommands are library functions
 * so tests and the demo can call them); this file only routes argv and
 * prints the overall usage, which includes the configuration table so
 * `engage --help` is the complete reference.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "commands.h"
#include "config.h"

#ifndef ENGAGE_VERSION
#define ENGAGE_VERSION "0.1.0"
#endif

static void usage(FILE *fp) {
    fputs("usage: engage COMMAND [options]\n"
          "\n"
          "Sessionizes a Kafka topic of Avro UserAction events and computes exact\n"
          "daily, weekly and monthly active users.\n"
          "\n"
          "Commands:\n"
          "  run      [-c FILE] [-X name=value]... [-b BROKERS] [--until-end]\n"
          "           Run the stream processor (consumer group member).\n"
          "  compact  [-c FILE] [-X name=value]... [-b BROKERS] [--from YYYY-MM-DD]\n"
          "           [--to YYYY-MM-DD] [--until-end]\n"
          "           Exact per-day IQR session metrics from the sessions and\n"
          "           daily-metrics topics, to topic.session_metrics; with --until-end\n"
          "           or a date range once, else continuously (docs/COMPACTOR.md).\n"
          "  demo     [options]\n"
          "           Generate a workload, produce it, process it and show the\n"
          "           metrics (see `engage demo --help`).\n"
          "  gen      [--seed N] [--users N] [--days N] [--start YYYY-MM-DD]\n"
          "           [--partitions N] [--zipf S] [--sessions-per-day X]\n"
          "           [--actions-per-session X] [--jitter-ms N] [--dup-rate F]\n"
          "           [--malformed-rate F] [--late-rate F] [--max-events N] [-o FILE]\n"
          "           Write a deterministic synthetic workload as JSON lines\n"
          "           (docs/JSONL.md) to FILE or stdout.\n"
          "  produce  --jsonl FILE|- [-t TOPIC] [-c FILE] [-X name=value]... [-b BROKERS]\n"
          "           Produce JSON lines to TOPIC (default topic.input), Avro-encoded.\n"
          "  dump     TOPIC [--kind session|daily|partial|action|raw|metrics] [--max N]\n"
          "           [-c FILE] [-X name=value]... [-b BROKERS]\n"
          "           Print a topic's committed records as JSON lines.\n"
          "  config   [--help | --markdown | --check [-c FILE] [-X name=value]...]\n"
          "           Describe the configuration (--markdown writes\n"
          "           docs/CONFIGURATION.md); --check validates a configuration.\n"
          "  help     Show this text.   --version  Show versions.\n"
          "\n",
          fp);
    engage_conf_print_help(fp);
}

/* `engage config ...` */
static int cmd_config(int argc, char **argv) {
    if (argc == 2 && !strcmp(argv[1], "--markdown")) {
        engage_conf_print_markdown(stdout);
        return fflush(stdout) ? 1 : 0;
    }
    if (argc == 1 || (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")))) {
        engage_conf_print_help(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--check")) {
        /* Loads everything the way `run` would, including the librdkafka
         * configuration, and reports the first error. */
        char errstr[512];
        engage_conf_t *conf = engage_conf_new();
        int rest_argc = 0;
        char **rest_argv = NULL;
        int rc = 0;
        argv[1] = argv[0]; /* let cli_common see the options after --check */
        if (engage_cli_common(conf, argc - 1, argv + 1, &rest_argc, &rest_argv, errstr,
                              sizeof(errstr))) {
            fprintf(stderr, "engage config: %s\n", errstr);
            rc = 1;
        } else if (rest_argc > 1) {
            fprintf(stderr, "engage config: unexpected argument \"%s\"\n", rest_argv[1]);
            rc = 2;
        } else {
            rd_kafka_conf_t *rc_conf = engage_conf_kafka(conf, errstr, sizeof(errstr));
            if (!rc_conf) {
                fprintf(stderr, "engage config: %s\n", errstr);
                rc = 1;
            } else {
                rd_kafka_conf_destroy(rc_conf);
                fprintf(stderr, "configuration OK\n");
            }
        }
        free(rest_argv);
        engage_conf_destroy(conf);
        return rc;
    }
    fprintf(stderr, "usage: engage config [--help | --markdown | --check [-c FILE] "
                    "[-X name=value]...]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    /* Subcommands see their own name as argv[0]. */
    int sargc = argc - 1;
    char **sargv = argv + 1;

    if (!strcmp(cmd, "run"))
        return engage_cmd_run(sargc, sargv);
    if (!strcmp(cmd, "compact"))
        return engage_cmd_compact(sargc, sargv);
    if (!strcmp(cmd, "demo"))
        return engage_cmd_demo(sargc, sargv);
    if (!strcmp(cmd, "gen"))
        return engage_cmd_gen(sargc, sargv);
    if (!strcmp(cmd, "produce"))
        return engage_cmd_produce(sargc, sargv);
    if (!strcmp(cmd, "dump"))
        return engage_cmd_dump(sargc, sargv);
    if (!strcmp(cmd, "config"))
        return cmd_config(sargc, sargv);
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "version")) {
        printf("engage %s (librdkafka %s)\n", ENGAGE_VERSION, rd_kafka_version_str());
        return 0;
    }
    fprintf(stderr, "engage: unknown command \"%s\"\n\n", cmd);
    usage(stderr);
    return 2;
}
