/*
 * changelog.h - state stores backed by compacted Kafka changelog topics.
 *
 * Under processing.guarantee=exactly_once every change a task writes to its
 * RocksDB store is also produced, inside the same Kafka transaction as the
 * batch's outputs and input offsets, to partition p of the changelog topic
 * (key = store key, value = store value, tombstone = delete). Local RocksDB
 * is then only a cache: when it is missing or does not match the offset the
 * group committed, it is rebuilt from the changelog, read with
 * isolation.level=read_committed so state written by an aborted transaction
 * is never served.
 */
#ifndef ENGAGE_CHANGELOG_H
#define ENGAGE_CHANGELOG_H

#include <stdint.h>

#include <librdkafka/rdkafka.h>

#include "config.h"
#include "err.h"

/** Rebuilds the store at state_path from partition `partition` of topic:
 *  removes the directory, then applies every committed record from the
 *  beginning to the end (puts and tombstones) in batches. A temporary
 *  consumer built from conf (kafka.* applied) reads the topic. Sets
 *  *records to the number of changelog records applied. Returns OK, or
 *  KAFKA / STATE with errstr. */
engage_err_t engage_changelog_restore(const engage_conf_t *conf, const char *topic,
                                      int32_t partition, const char *state_path,
                                      int64_t *records, char *errstr, size_t errstr_size);

#endif
