/*
 * changelog.c - restoring a state store from its changelog partition.
 *
 * The restore consumer is a plain assign()-ed consumer (no group, no
 * commits), read_committed, that stops at the partition's end: the
 * partition-EOF event, which under read_committed arrives at the last stable
 * offset, so records of open or aborted transactions are never applied.
 */
#include "changelog.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "state.h"

#define RESTORE_BATCH 20000

engage_err_t engage_changelog_restore(const engage_conf_t *conf, const char *topic,
                                      int32_t partition, const char *state_path,
                                      int64_t *records, char *errstr, size_t errstr_size) {
    engage_err_t ret = ENGAGE_ERR_OK;
    rd_kafka_t *rk = NULL;
    engage_state_t *st = NULL;
    *records = 0;

    if (engage_state_destroy_dir(state_path, errstr, errstr_size))
        return ENGAGE_ERR_STATE;
    if (!(st = engage_state_open(state_path, errstr, errstr_size)))
        return ENGAGE_ERR_STATE;

    rd_kafka_conf_t *kc = engage_conf_kafka(conf, errstr, errstr_size);
    if (!kc) {
        ret = ENGAGE_ERR_CONFIG;
        goto out;
    }
    if (rd_kafka_conf_set(kc, "group.id", "engage-restore", errstr, errstr_size) ||
        rd_kafka_conf_set(kc, "enable.auto.commit", "false", errstr, errstr_size) ||
        rd_kafka_conf_set(kc, "isolation.level", "read_committed", errstr, errstr_size) ||
        rd_kafka_conf_set(kc, "enable.partition.eof", "true", errstr, errstr_size) ||
        /* the restore ends at the partition-EOF event, which comes after a
         * fetch that returned nothing: do not let that fetch wait the
         * default 500 ms for new data (it cost ~0.5 s per restored store) */
        rd_kafka_conf_set(kc, "fetch.wait.max.ms", "10", errstr, errstr_size)) {
        rd_kafka_conf_destroy(kc);
        ret = ENGAGE_ERR_CONFIG;
        goto out;
    }
    if (!(rk = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, errstr_size))) {
        rd_kafka_conf_destroy(kc);
        ret = ENGAGE_ERR_KAFKA;
        goto out;
    }
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t err =
        rd_kafka_query_watermark_offsets(rk, topic, partition, &lo, &hi, 30000);
    if (err) {
        ret = engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size,
                            "changelog %s [%d]: %s", topic, partition, rd_kafka_err2str(err));
        goto out;
    }
    if (hi > lo) {
        rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(l, topic, partition)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_assign(rk, l);
        rd_kafka_topic_partition_list_destroy(l);
        for (;;) {
            rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 1000);
            if (!m)
                continue;
            if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                rd_kafka_message_destroy(m);
                break;
            }
            if (m->err) {
                ret = engage_seterr(ENGAGE_ERR_KAFKA, errstr, errstr_size,
                                    "changelog %s [%d]: %s", topic, partition,
                                    rd_kafka_message_errstr(m));
                rd_kafka_message_destroy(m);
                goto out;
            }
            if (m->key_len > 0) {
                if (m->payload)
                    engage_state_put(st, m->key, m->key_len, m->payload, m->len);
                else
                    engage_state_delete(st, m->key, m->key_len);
                (*records)++;
            }
            rd_kafka_message_destroy(m);
            if (engage_state_pending(st) >= RESTORE_BATCH &&
                engage_state_commit(st, errstr, errstr_size)) {
                ret = ENGAGE_ERR_STATE;
                goto out;
            }
        }
    }
    if (engage_state_commit(st, errstr, errstr_size))
        ret = ENGAGE_ERR_STATE;
out:
    if (rk) {
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
    }
    engage_state_close(st);
    return ret;
}
