/*
 * kafka_compat.c - checks that the system librdkafka works against a real
 * Kafka broker: Admin API, compressed produce (lz4, zstd), a consumer group
 * with cooperative-sticky assignment and commits, and transactions
 * (commit with send_offsets_to_transaction, abort) seen by a read_committed
 * consumer.
 *
 *   kafka_compat BOOTSTRAP        e.g. kafka_compat 127.0.0.1:19092
 *
 * Prints one line per check and "compat: N passed, M failed"; exit 0 only
 * when nothing failed. Build: tests/compat/run.sh.
 */
#define _DEFAULT_SOURCE
#define _POSIX_C_SOURCE 200809L
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NMSG 200            /* per compression codec */
#define TMO_MS 30000

static const char *bootstrap;
static int passed, failed;
static char topic_in[128], topic_out[128], group_id[128], txn_group[128],
    txn_id[128];

static void check(int ok, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        printf("%s: ", ok ? "PASS" : "FAIL");
        vprintf(fmt, ap);
        printf("\n");
        fflush(stdout);
        va_end(ap);
        if (ok)
                passed++;
        else
                failed++;
}

static void on_alarm(int sig) {
        (void)sig;
        static const char m[] = "FAIL: kafka_compat timed out (alarm)\n";
        if (write(2, m, sizeof(m) - 1) < 0) { /* nothing to do */
        }
        _exit(3);
}

static int64_t now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static rd_kafka_conf_t *base_conf(void) {
        char err[512];
        rd_kafka_conf_t *c = rd_kafka_conf_new();
        if (rd_kafka_conf_set(c, "bootstrap.servers", bootstrap, err,
                              sizeof(err)) != RD_KAFKA_CONF_OK) {
                fprintf(stderr, "conf: %s\n", err);
                exit(2);
        }
        return c;
}

static void set(rd_kafka_conf_t *c, const char *k, const char *v) {
        char err[512];
        if (rd_kafka_conf_set(c, k, v, err, sizeof(err)) != RD_KAFKA_CONF_OK) {
                fprintf(stderr, "conf %s=%s: %s\n", k, v, err);
                exit(2);
        }
}

static rd_kafka_t *mk(rd_kafka_type_t type, rd_kafka_conf_t *c) {
        char err[512];
        rd_kafka_t *rk = rd_kafka_new(type, c, err, sizeof(err));
        if (!rk) {
                fprintf(stderr, "rd_kafka_new: %s\n", err);
                exit(2);
        }
        return rk;
}

/* ---------------------------------------------------------------- admin */

static int admin_create_topics(void) {
        rd_kafka_t *rk = mk(RD_KAFKA_PRODUCER, base_conf());
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        const char *names[2] = {topic_in, topic_out};
        rd_kafka_NewTopic_t *nt[2];
        char err[512];
        int ok = 1;

        for (int i = 0; i < 2; i++) {
                nt[i] = rd_kafka_NewTopic_new(names[i], 1, 1, err, sizeof(err));
                if (!nt[i]) {
                        fprintf(stderr, "NewTopic: %s\n", err);
                        exit(2);
                }
        }
        rd_kafka_AdminOptions_t *o =
            rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
        rd_kafka_AdminOptions_set_operation_timeout(o, TMO_MS, err,
                                                    sizeof(err));
        rd_kafka_CreateTopics(rk, nt, 2, o, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, TMO_MS + 5000);
        if (!ev || rd_kafka_event_error(ev)) {
                check(0, "admin CreateTopics request: %s",
                      ev ? rd_kafka_event_error_string(ev) : "timeout");
                ok = 0;
        } else {
                size_t n;
                const rd_kafka_topic_result_t **tr =
                    rd_kafka_CreateTopics_result_topics(
                        rd_kafka_event_CreateTopics_result(ev), &n);
                for (size_t i = 0; i < n; i++) {
                        rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[i]);
                        check(e == RD_KAFKA_RESP_ERR_NO_ERROR,
                              "admin CreateTopics %s: %s",
                              rd_kafka_topic_result_name(tr[i]),
                              e ? rd_kafka_topic_result_error_string(tr[i])
                                : "ok");
                        ok &= e == RD_KAFKA_RESP_ERR_NO_ERROR;
                }
                if (n != 2) {
                        check(0, "admin CreateTopics returned %zu results", n);
                        ok = 0;
                }
        }
        if (ev)
                rd_kafka_event_destroy(ev);
        rd_kafka_AdminOptions_destroy(o);
        for (int i = 0; i < 2; i++)
                rd_kafka_NewTopic_destroy(nt[i]);

        /* The new topics must show up in metadata with a leader. */
        int seen = 0;
        int64_t end = now_ms() + 15000;
        while (ok && seen < 2 && now_ms() < end) {
                const struct rd_kafka_metadata *md;
                seen = 0;
                if (rd_kafka_metadata(rk, 1, NULL, &md, 5000) ==
                    RD_KAFKA_RESP_ERR_NO_ERROR) {
                        for (int i = 0; i < md->topic_cnt; i++)
                                for (int j = 0; j < 2; j++)
                                        if (!strcmp(md->topics[i].topic,
                                                    names[j]) &&
                                            md->topics[i].partition_cnt == 1 &&
                                            md->topics[i].partitions[0].leader >= 0)
                                                seen++;
                        rd_kafka_metadata_destroy(md);
                }
                if (seen < 2)
                        usleep(100000);
        }
        if (ok)
                check(seen == 2, "metadata shows both new topics with a leader");
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
        return ok && seen == 2;
}

static void admin_delete_topics(void) {
        rd_kafka_t *rk = mk(RD_KAFKA_PRODUCER, base_conf());
        rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
        rd_kafka_DeleteTopic_t *dt[2] = {rd_kafka_DeleteTopic_new(topic_in),
                                         rd_kafka_DeleteTopic_new(topic_out)};
        rd_kafka_DeleteTopics(rk, dt, 2, NULL, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, TMO_MS);
        int ok = ev && !rd_kafka_event_error(ev);
        if (ok) {
                size_t n;
                const rd_kafka_topic_result_t **tr =
                    rd_kafka_DeleteTopics_result_topics(
                        rd_kafka_event_DeleteTopics_result(ev), &n);
                ok = n == 2;
                for (size_t i = 0; i < n; i++)
                        ok &= !rd_kafka_topic_result_error(tr[i]);
        }
        check(ok, "admin DeleteTopics");
        if (ev)
                rd_kafka_event_destroy(ev);
        rd_kafka_DeleteTopic_destroy_array(dt, 2);
        rd_kafka_queue_destroy(q);
        rd_kafka_destroy(rk);
}

/* -------------------------------------------------------------- produce */

static int dr_ok, dr_fail;
static rd_kafka_resp_err_t dr_last_err;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *op) {
        (void)rk;
        (void)op;
        if (m->err) {
                dr_fail++;
                dr_last_err = m->err;
        } else
                dr_ok++;
}

static void produce_compressed(const char *codec, int idempotent, int base) {
        rd_kafka_conf_t *c = base_conf();
        set(c, "compression.codec", codec);
        set(c, "linger.ms", "20");
        if (idempotent)
                set(c, "enable.idempotence", "true");
        rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
        rd_kafka_t *rk = mk(RD_KAFKA_PRODUCER, c);
        dr_ok = dr_fail = 0;
        /* Compressible payload. */
        char val[512];
        for (int i = 0; i < NMSG; i++) {
                int n = snprintf(val, sizeof(val), "msg-%06d|", base + i);
                while (n < 300)
                        val[n++] = 'a' + (i % 7);
                char key[32];
                snprintf(key, sizeof(key), "k%d", base + i);
                rd_kafka_resp_err_t e = rd_kafka_producev(
                    rk, RD_KAFKA_V_TOPIC(topic_in),
                    RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(val, n),
                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
                if (e) {
                        check(0, "produce %s: %s", codec, rd_kafka_err2str(e));
                        rd_kafka_destroy(rk);
                        return;
                }
                rd_kafka_poll(rk, 0);
        }
        rd_kafka_resp_err_t fe = rd_kafka_flush(rk, TMO_MS);
        check(!fe && dr_ok == NMSG && dr_fail == 0,
              "produce %d msgs with compression.codec=%s%s (delivered %d, "
              "failed %d%s%s)",
              NMSG, codec, idempotent ? " + idempotence" : "", dr_ok, dr_fail,
              dr_fail ? ", last: " : "",
              dr_fail ? rd_kafka_err2str(dr_last_err) : "");
        rd_kafka_destroy(rk);
}

/* ------------------------------------------------------- consumer group */

static int rb_assigned, rb_cooperative = -1;

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *op) {
        (void)op;
        int coop = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
        rb_cooperative = coop;
        rd_kafka_error_t *e = NULL;
        if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
                rb_assigned += parts->cnt;
                if (coop)
                        e = rd_kafka_incremental_assign(rk, parts);
                else
                        rd_kafka_assign(rk, parts);
        } else {
                if (coop)
                        e = rd_kafka_incremental_unassign(rk, parts);
                else
                        rd_kafka_assign(rk, NULL);
        }
        if (e) {
                fprintf(stderr, "rebalance: %s\n", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
        }
}

static rd_kafka_t *group_consumer(const char *group, const char *isolation) {
        rd_kafka_conf_t *c = base_conf();
        set(c, "group.id", group);
        set(c, "partition.assignment.strategy", "cooperative-sticky");
        set(c, "enable.auto.commit", "false");
        set(c, "auto.offset.reset", "earliest");
        set(c, "enable.partition.eof", "true");
        set(c, "isolation.level", isolation);
        rd_kafka_conf_set_rebalance_cb(c, rebalance_cb);
        rd_kafka_t *rk = mk(RD_KAFKA_CONSUMER, c);
        rd_kafka_poll_set_consumer(rk);
        rd_kafka_topic_partition_list_t *t = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(t, topic_in, RD_KAFKA_PARTITION_UA);
        rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, t);
        rd_kafka_topic_partition_list_destroy(t);
        if (e) {
                check(0, "subscribe: %s", rd_kafka_err2str(e));
                exit(1);
        }
        return rk;
}

static int64_t committed_offset(rd_kafka_t *rk, const char *topic) {
        rd_kafka_topic_partition_list_t *p = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(p, topic, 0);
        int64_t off = -1000;
        rd_kafka_resp_err_t e = rd_kafka_committed(rk, p, TMO_MS);
        if (!e && !p->elems[0].err)
                off = p->elems[0].offset;
        else
                fprintf(stderr, "committed(): %s\n",
                        rd_kafka_err2str(e ? e : p->elems[0].err));
        rd_kafka_topic_partition_list_destroy(p);
        return off;
}

static void consumer_group_test(void) {
        rb_assigned = 0;
        rb_cooperative = -1;
        rd_kafka_t *rk = group_consumer(group_id, "read_committed");
        int got = 0, bad = 0, next = 0, eof = 0;
        int64_t last_off = -1, end = now_ms() + TMO_MS;
        while (!eof && now_ms() < end) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
                if (!m)
                        continue;
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                        if (got >= 2 * NMSG)
                                eof = 1;
                } else if (m->err) {
                        fprintf(stderr, "consume: %s\n",
                                rd_kafka_message_errstr(m));
                        bad++;
                } else {
                        char want[32];
                        int n = snprintf(want, sizeof(want), "msg-%06d|", next);
                        if (m->len < (size_t)n || memcmp(m->payload, want, n))
                                bad++;
                        next++;
                        got++;
                        last_off = m->offset;
                }
                rd_kafka_message_destroy(m);
        }
        check(rb_cooperative == 1 && rb_assigned == 1,
              "consumer group: cooperative-sticky rebalance (protocol %s, "
              "%d partition(s) assigned)",
              rb_cooperative == 1 ? "COOPERATIVE"
                                  : rb_cooperative == 0 ? "EAGER" : "none",
              rb_assigned);
        check(got == 2 * NMSG && bad == 0,
              "consumer group: consumed %d/%d lz4+zstd msgs in order, %d bad",
              got, 2 * NMSG, bad);
        rd_kafka_resp_err_t ce = rd_kafka_commit(rk, NULL, 0 /* sync */);
        check(!ce, "consumer group: synchronous commit (%s)",
              rd_kafka_err2str(ce));
        int64_t co = committed_offset(rk, topic_in);
        check(co == last_off + 1, "consumer group: committed offset %lld == %lld",
              (long long)co, (long long)(last_off + 1));
        rd_kafka_resp_err_t cle = rd_kafka_consumer_close(rk);
        check(!cle, "consumer group: close (%s)", rd_kafka_err2str(cle));
        rd_kafka_destroy(rk);

        /* A fresh member of the same group sees the committed offset. */
        rd_kafka_conf_t *c = base_conf();
        set(c, "group.id", group_id);
        rd_kafka_t *rk2 = mk(RD_KAFKA_CONSUMER, c);
        int64_t co2 = committed_offset(rk2, topic_in);
        check(co2 == 2 * NMSG,
              "consumer group: new consumer reads committed offset %lld",
              (long long)co2);
        rd_kafka_destroy(rk2);
}

/* --------------------------------------------------------- transactions */

static int txn_call(rd_kafka_error_t *e, const char *what) {
        if (e) {
                check(0, "txn %s: %s%s%s%s", what, rd_kafka_error_string(e),
                      rd_kafka_error_is_retriable(e) ? " [retriable]" : "",
                      rd_kafka_error_txn_requires_abort(e) ? " [abortable]" : "",
                      rd_kafka_error_is_fatal(e) ? " [fatal]" : "");
                rd_kafka_error_destroy(e);
                return 0;
        }
        return 1;
}

static int txn_produce(rd_kafka_t *p, const char *val) {
        rd_kafka_resp_err_t e = rd_kafka_producev(
            p, RD_KAFKA_V_TOPIC(topic_out), RD_KAFKA_V_PARTITION(0),
            RD_KAFKA_V_VALUE((void *)val, strlen(val)),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (e)
                check(0, "txn produce %s: %s", val, rd_kafka_err2str(e));
        return !e;
}

/* Reads topic_out partition 0 from the start with the given isolation until
 * EOF; returns values joined by ',' and the offsets. */
static void read_out(const char *isolation, char *vals, size_t vsz,
                     char *offs, size_t osz) {
        rd_kafka_conf_t *c = base_conf();
        set(c, "group.id", "compat-reader-unused");
        set(c, "enable.partition.eof", "true");
        set(c, "enable.auto.commit", "false");
        set(c, "isolation.level", isolation);
        rd_kafka_t *rk = mk(RD_KAFKA_CONSUMER, c);
        rd_kafka_topic_partition_list_t *a = rd_kafka_topic_partition_list_new(1);
        rd_kafka_topic_partition_list_add(a, topic_out, 0)->offset =
            RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_assign(rk, a);
        rd_kafka_topic_partition_list_destroy(a);
        vals[0] = offs[0] = 0;
        int64_t end = now_ms() + TMO_MS;
        while (now_ms() < end) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 500);
                if (!m)
                        continue;
                int stop = m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF;
                if (m->err && !stop)
                        fprintf(stderr, "read_out: %s\n",
                                rd_kafka_message_errstr(m));
                else if (!m->err) {
                        size_t l = strlen(vals);
                        snprintf(vals + l, vsz - l, "%s%.*s", l ? "," : "",
                                 (int)m->len, (const char *)m->payload);
                        l = strlen(offs);
                        snprintf(offs + l, osz - l, "%s%lld", l ? "," : "",
                                 (long long)m->offset);
                }
                rd_kafka_message_destroy(m);
                if (stop)
                        break;
        }
        rd_kafka_consumer_close(rk);
        rd_kafka_destroy(rk);
}

static void transactions_test(void) {
        /* Input side: a group consumer takes the first 5 input records. */
        rb_assigned = 0;
        rd_kafka_t *cons = group_consumer(txn_group, "read_committed");
        int got = 0;
        int64_t end = now_ms() + TMO_MS, next_off = -1;
        while (got < 5 && now_ms() < end) {
                rd_kafka_message_t *m = rd_kafka_consumer_poll(cons, 500);
                if (!m)
                        continue;
                if (!m->err) {
                        got++;
                        next_off = m->offset + 1;
                }
                rd_kafka_message_destroy(m);
        }
        check(got == 5, "txn: input consumer read %d/5 records", got);

        rd_kafka_conf_t *c = base_conf();
        set(c, "transactional.id", txn_id);
        set(c, "transaction.timeout.ms", "60000");
        rd_kafka_conf_set_dr_msg_cb(c, dr_cb);
        rd_kafka_t *p = mk(RD_KAFKA_PRODUCER, c);
        dr_ok = dr_fail = 0;

        int ok = txn_call(rd_kafka_init_transactions(p, TMO_MS), "init");
        if (ok)
                check(1, "txn: init_transactions");
        /* 1: committed, with the consumer's offsets. */
        ok = ok && txn_call(rd_kafka_begin_transaction(p), "begin #1");
        ok = ok && txn_produce(p, "committed-1");
        if (ok) {
                rd_kafka_topic_partition_list_t *offs =
                    rd_kafka_topic_partition_list_new(1);
                rd_kafka_topic_partition_list_add(offs, topic_in, 0)->offset =
                    next_off;
                rd_kafka_consumer_group_metadata_t *gm =
                    rd_kafka_consumer_group_metadata(cons);
                ok = txn_call(rd_kafka_send_offsets_to_transaction(p, offs, gm,
                                                                   TMO_MS),
                              "send_offsets_to_transaction");
                if (ok)
                        check(1, "txn: send_offsets_to_transaction (offset %lld)",
                              (long long)next_off);
                rd_kafka_consumer_group_metadata_destroy(gm);
                rd_kafka_topic_partition_list_destroy(offs);
        }
        ok = ok && txn_call(rd_kafka_commit_transaction(p, TMO_MS), "commit #1");
        if (ok)
                check(1, "txn: commit_transaction #1");
        /* 2: aborted. Flush first so the record is really on the broker. */
        ok = ok && txn_call(rd_kafka_begin_transaction(p), "begin #2");
        ok = ok && txn_produce(p, "aborted-2");
        if (ok)
                rd_kafka_flush(p, TMO_MS);
        ok = ok && txn_call(rd_kafka_abort_transaction(p, TMO_MS), "abort #2");
        if (ok)
                check(1, "txn: abort_transaction #2");
        /* 3: committed again, so the LSO moves past the aborted batch. */
        ok = ok && txn_call(rd_kafka_begin_transaction(p), "begin #3");
        ok = ok && txn_produce(p, "committed-3");
        ok = ok && txn_call(rd_kafka_commit_transaction(p, TMO_MS), "commit #3");
        if (ok)
                check(1, "txn: commit_transaction #3");
        /* The aborted record was flushed (acked) before the abort, so all
         * three records get a successful delivery report. */
        check(dr_ok == 3 && dr_fail == 0,
              "txn: delivery reports: %d ok, %d failed (want 3 ok, 0 failed)",
              dr_ok, dr_fail);
        rd_kafka_destroy(p);
        rd_kafka_consumer_close(cons);
        rd_kafka_destroy(cons);
        if (!ok)
                return;

        char vals[1024], offs[256];
        read_out("read_committed", vals, sizeof(vals), offs, sizeof(offs));
        check(!strcmp(vals, "committed-1,committed-3"),
              "txn: read_committed sees [%s] at offsets [%s] "
              "(want committed-1,committed-3)",
              vals, offs);
        read_out("read_uncommitted", vals, sizeof(vals), offs, sizeof(offs));
        check(!strcmp(vals, "committed-1,aborted-2,committed-3") &&
                  !strcmp(offs, "0,2,4"),
              "txn: read_uncommitted sees [%s] at offsets [%s] (want "
              "committed-1,aborted-2,committed-3 at 0,2,4: markers take "
              "offsets)",
              vals, offs);

        /* The offsets sent in transaction #1 are the group's commit. */
        rd_kafka_conf_t *cc = base_conf();
        set(cc, "group.id", txn_group);
        rd_kafka_t *rk = mk(RD_KAFKA_CONSUMER, cc);
        int64_t co = committed_offset(rk, topic_in);
        check(co == next_off,
              "txn: group %s committed offset %lld == %lld (from the txn)",
              txn_group, (long long)co, (long long)next_off);
        rd_kafka_destroy(rk);
}

int main(int argc, char **argv) {
        if (argc != 2) {
                fprintf(stderr, "usage: %s BOOTSTRAP (e.g. 127.0.0.1:19092)\n",
                        argv[0]);
                return 2;
        }
        bootstrap = argv[1];
        signal(SIGALRM, on_alarm);
        alarm(240);
        char ver[32];
        snprintf(ver, sizeof(ver), "%s", rd_kafka_version_str());
        printf("librdkafka %s, bootstrap %s\n", ver, bootstrap);

        unsigned tag = (unsigned)getpid() ^ (unsigned)time(NULL);
        snprintf(topic_in, sizeof(topic_in), "compat-in-%08x", tag);
        snprintf(topic_out, sizeof(topic_out), "compat-out-%08x", tag);
        snprintf(group_id, sizeof(group_id), "compat-group-%08x", tag);
        snprintf(txn_group, sizeof(txn_group), "compat-txn-group-%08x", tag);
        snprintf(txn_id, sizeof(txn_id), "compat-txn-%08x", tag);

        if (admin_create_topics()) {
                produce_compressed("lz4", 0, 0);
                produce_compressed("zstd", 1, NMSG);
                consumer_group_test();
                transactions_test();
                admin_delete_topics();
        }
        printf("compat: %d passed, %d failed\n", passed, failed);
        return failed ? 1 : 0;
}
