/*
 * processor.c - `engage run`: the consumer-group member that drives tasks.
 *
 * One main loop (STYLE.md rule 7): consume a batch from the consumer queue,
 * hand each record to its partition's task (or the partials record to the
 * aggregator), then checkpoint: wait until every record produced so far is
 * delivered, then write each changed task's state together with its next
 * offset, then commit the offsets to Kafka (informational: a restart resumes
 * from the offset stored with the state, which is what makes the state and
 * the position agree). A crash between delivery and state write re-processes
 * the batch and re-emits byte-identical records.
 *
 * Partition ownership follows the group (cooperative-sticky): on assign a
 * task opens its store and the partition is positioned at the stored offset;
 * on revoke the task is checkpointed and closed first.
 *
 * With run.until_end the end offsets are taken when a partition is assigned;
 * records past them are left alone, and a task whose input is exhausted
 * closes all its sessions and days (engage_task_finish).
 */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <xxhash.h>

#include <librdkafka/rdkafka.h>

#include "aggregator.h"
#include "changelog.h"
#include "codec.h"
#include "commands.h"
#include "config.h"
#include "fetchwake.h"
#include "log.h"
#include "state.h"
#include "task.h"
#include "timeutil.h"

typedef struct ptask {
    engage_task_t *task;
    int64_t end_offset; /* bounded runs: stop here */
    int64_t group_end;  /* bounded runs: end offset read at start, for the group check */
    int paused;
    double idle_since;  /* monotonic time the partition reached its end (EOF), 0 = busy */
} ptask_t;

struct proc;
typedef struct mirror_ctx {
    struct proc *p;
    const char *topic;
    int32_t partition;
} mirror_ctx_t;

typedef struct proc {
    const engage_conf_t *conf;
    rd_kafka_t *producer;
    rd_kafka_t *consumer;
    rd_kafka_queue_t *cq;
    engage_decoder_t *dec;
    engage_encoder_t *enc;
    int32_t nparts;      /* input partitions */
    int32_t dead_parts;  /* dead-letter topic partitions */
    int32_t late_parts;  /* late topic partitions */
    ptask_t *tasks;      /* [nparts] */
    engage_aggregator_t *agg;
    int64_t agg_end_offset;
    engage_task_conf_t tconf;
    engage_emit_t emit;
    volatile int delivery_failed;
    int64_t purged; /* output records dropped by aborted transactions */
    int fatal;
    char fatal_msg[1100];
    int owned_any;
    int64_t days_emitted;
    /* exactly-once */
    int eos;
    int in_txn;
    char changelog[300];     /* state changelog topic, partitioned like the input */
    char agg_changelog[300]; /* aggregator changelog topic, one partition */
    struct mirror_ctx *mctx; /* [nparts] */
    struct mirror_ctx *agg_mctx;
    int64_t restored_records;
    double restore_seconds;
    void *txn_cgmd;           /* serialized group metadata when the transaction began */
    size_t txn_cgmd_size;
    int closing;             /* the loop has ended: take no new partitions */
    int assigned_once;       /* the group has given this member an assignment */
    double next_group_check; /* bounded runs: monotonic time of the next group check */
    double waiting_since;    /* bounded runs: own work done since (0 = not done) */
    /* idle policy (live runs) */
    rd_kafka_t *progress;       /* reads the partials topic: the group's final days */
    int32_t group_final_day;    /* latest day any partition made final, INT32_MIN */
    engage_task_stats_t total; /* of closed tasks */
    /* main loop accounting, logged at the end (monotonic seconds) */
    int64_t checkpoints;      /* checkpoints that wrote something */
    double checkpoint_seconds;
    double poll_seconds;      /* in consume_batch: waiting for / taking input */
    double wait_seconds;      /* of which in polls that could block */
    double commit_seconds;    /* of checkpoint_seconds: flush / send offsets + commit */
    double process_seconds;   /* handing each batch's records to tasks / the aggregator */
    int64_t batches;          /* non-empty batches */
    engage_fetchwake_t *wake; /* fetch.wakeup, NULL when off */
    int64_t fetch_wakeups;
    /* producer topic handles, by name (saves a topic lookup per record) */
    struct {
        const char *name;
        rd_kafka_topic_t *rkt;
    } rkts[8];
    int nrkts;
    int producer_resets;        /* in a row, without a commit in between */
} proc_t;

/* A producer that failed fatally is replaced at most this many times in a
 * row without a successful commit in between (producer_reset()). */
#define MAX_PRODUCER_RESETS 3

static int producer_open(proc_t *p, int announce, char *errstr, size_t n);
static void on_assign(proc_t *p, rd_kafka_topic_partition_list_t *parts);

static double mono_seconds(void) {
    /* for timeouts, the idle policy and the log's accounting; never used
     * by processing (event time only) */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void set_fatal(proc_t *p, const char *fmt, const char *msg) {
    if (p->fatal)
        return;
    p->fatal = 1;
    snprintf(p->fatal_msg, sizeof(p->fatal_msg), fmt, msg);
    LOG_ERROR("%s", p->fatal_msg);
}

/* ---- output ---------------------------------------------------------------- */

static int begin_txn(proc_t *p) {
    if (!p->eos || p->in_txn)
        return 0;
    rd_kafka_error_t *e = rd_kafka_begin_transaction(p->producer);
    if (e) {
        set_fatal(p, "begin_transaction: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
        return -1;
    }
    p->in_txn = 1;
    /* remember the group generation this transaction's work was done under */
    free(p->txn_cgmd);
    p->txn_cgmd = NULL;
    rd_kafka_consumer_group_metadata_t *md = rd_kafka_consumer_group_metadata(p->consumer);
    if (md) {
        rd_kafka_error_t *we =
            rd_kafka_consumer_group_metadata_write(md, &p->txn_cgmd, &p->txn_cgmd_size);
        if (we)
            rd_kafka_error_destroy(we);
        rd_kafka_consumer_group_metadata_destroy(md);
    }
    return 0;
}

/* The producer's handle of topic, created on first use; NULL on error
 * (rd_kafka_last_error()). Freed by producer_topics_destroy(). */
static rd_kafka_topic_t *producer_topic(proc_t *p, const char *topic, int *owned) {
    *owned = 0;
    for (int i = 0; i < p->nrkts; i++)
        if (p->rkts[i].name == topic || strcmp(p->rkts[i].name, topic) == 0)
            return p->rkts[i].rkt;
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(p->producer, topic, NULL);
    if (rkt && p->nrkts < (int)(sizeof(p->rkts) / sizeof(p->rkts[0]))) {
        p->rkts[p->nrkts].name = rd_kafka_topic_name(rkt);
        p->rkts[p->nrkts++].rkt = rkt;
    } else if (rkt) {
        *owned = 1; /* no slot left: the caller destroys it after use */
    }
    return rkt;
}

static void producer_topics_destroy(proc_t *p) {
    for (int i = 0; i < p->nrkts; i++)
        rd_kafka_topic_destroy(p->rkts[i].rkt);
    p->nrkts = 0;
}

static int produce(proc_t *p, const char *topic, int32_t partition, const void *key,
                   size_t klen, const void *val, size_t vlen, rd_kafka_headers_t *hdrs) {
    if (begin_txn(p)) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        return -1;
    }
    int owned;
    rd_kafka_topic_t *rkt = producer_topic(p, topic, &owned);
    if (!rkt) {
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        LOG_ERROR("produce to %s failed: %s", topic, rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    for (;;) {
        /* the RD_KAFKA_V_* macros expand to several arguments: no ?: here */
        rd_kafka_resp_err_t err;
        if (hdrs)
            err = rd_kafka_producev(p->producer, RD_KAFKA_V_RKT(rkt),
                                    RD_KAFKA_V_PARTITION(partition), RD_KAFKA_V_KEY(key, klen),
                                    RD_KAFKA_V_VALUE((void *)val, vlen),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                    RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
        else
            err = rd_kafka_producev(p->producer, RD_KAFKA_V_RKT(rkt),
                                    RD_KAFKA_V_PARTITION(partition), RD_KAFKA_V_KEY(key, klen),
                                    RD_KAFKA_V_VALUE((void *)val, vlen),
                                    RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            rd_kafka_poll(p->producer, 50);
            continue;
        }
        if (owned)
            rd_kafka_topic_destroy(rkt);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR)
            return 0;
        if (hdrs)
            rd_kafka_headers_destroy(hdrs);
        LOG_ERROR("produce to %s failed: %s", topic, rd_kafka_err2str(err));
        return -1;
    }
}

static int emit_session(void *opaque, const engage_session_rec_t *r) {
    proc_t *p = opaque;
    const void *buf;
    size_t len;
    if (engage_encode_session(p->enc, r, &buf, &len))
        return -1;
    return produce(p, p->conf->topic_sessions, RD_KAFKA_PARTITION_UA, r->user_id,
                   r->user_id_len, buf, len, NULL);
}

static int emit_partial(void *opaque, const engage_partial_rec_t *r) {
    proc_t *p = opaque;
    const void *buf;
    size_t len;
    char key[32];
    if (engage_encode_partial(p->enc, r, &buf, &len))
        return -1;
    if (r->is_end)
        snprintf(key, sizeof(key), "end");
    else
        engage_day_format(r->day, key, sizeof(key));
    return produce(p, p->conf->topic_partials, 0, key, strlen(key), buf, len, NULL);
}

static int emit_daily(void *opaque, const engage_daily_rec_t *r) {
    proc_t *p = opaque;
    const void *buf;
    size_t len;
    char key[16];
    if (engage_encode_daily(p->enc, r, &buf, &len))
        return -1;
    engage_day_format(r->day, key, sizeof(key));
    p->days_emitted++;
    return produce(p, p->conf->topic_daily, RD_KAFKA_PARTITION_UA, key, strlen(key), buf, len,
                   NULL);
}

static rd_kafka_headers_t *source_headers(proc_t *p, const engage_input_rec_t *rec,
                                          const char *reason) {
    char num[32];
    rd_kafka_headers_t *h = rd_kafka_headers_new(6);
    rd_kafka_header_add(h, "engage.reason", -1, reason, -1);
    rd_kafka_header_add(h, "engage.source.topic", -1, p->conf->topic_input, -1);
    snprintf(num, sizeof(num), "%" PRId32, rec->partition);
    rd_kafka_header_add(h, "engage.source.partition", -1, num, -1);
    snprintf(num, sizeof(num), "%" PRId64, rec->offset);
    rd_kafka_header_add(h, "engage.source.offset", -1, num, -1);
    return h;
}

static int emit_dead(void *opaque, const engage_input_rec_t *rec, const char *reason,
                     const char *errmsg) {
    proc_t *p = opaque;
    rd_kafka_headers_t *h = source_headers(p, rec, reason);
    rd_kafka_header_add(h, "engage.error", -1, errmsg, -1);
    return produce(p, p->conf->topic_dead, rec->partition % p->dead_parts, rec->key,
                   rec->key_len, rec->value, rec->value_len, h);
}

static int emit_late(void *opaque, const engage_input_rec_t *rec, int64_t watermark) {
    proc_t *p = opaque;
    char num[32];
    rd_kafka_headers_t *h = source_headers(p, rec, "late");
    snprintf(num, sizeof(num), "%" PRId64, watermark);
    rd_kafka_header_add(h, "engage.watermark", -1, num, -1);
    rd_kafka_header_add(h, "engage.error", -1, "event time below the partition watermark", -1);
    return produce(p, p->conf->topic_late, rec->partition % p->late_parts, rec->key,
                   rec->key_len, rec->value, rec->value_len, h);
}

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    proc_t *p = opaque;
    if (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
        /* records of an aborted transaction: expected, counted, and said
         * once by rewind_all() instead of once per record */
        p->purged++;
    } else if (m->err) {
        p->delivery_failed = 1;
        LOG_ERROR("delivery to %s failed: %s", rd_kafka_topic_name(m->rkt),
                  rd_kafka_err2str(m->err));
    }
}

/* Copies each state change into the changelog, inside the transaction. */
static int mirror_cb(void *opaque, const void *key, size_t klen, const void *val, size_t vlen) {
    mirror_ctx_t *c = opaque;
    return produce(c->p, c->topic, c->partition, key, klen, val, val ? vlen : 0, NULL);
}

static void state_path(proc_t *p, const char *topic, int32_t part, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s-%" PRId32, p->conf->state_dir, topic, part);
}

/* Opens partition i's task from local state, with its changelog mirror. */
static engage_task_t *open_task(proc_t *p, int32_t i, char *errstr, size_t n) {
    char path[1024];
    state_path(p, p->conf->topic_input, i, path, sizeof(path));
    engage_task_t *t = engage_task_open(i, path, &p->tconf, p->dec, &p->emit, errstr, n);
    if (t && p->eos)
        engage_state_set_mirror(engage_task_store(t), mirror_cb, &p->mctx[i]);
    return t;
}

static engage_aggregator_t *open_agg(proc_t *p, char *errstr, size_t n) {
    char path[1024];
    state_path(p, p->conf->topic_partials, 0, path, sizeof(path));
    engage_aggregator_t *a = engage_aggregator_open(path, emit_daily, p, errstr, n);
    if (a && p->eos)
        engage_state_set_mirror(engage_aggregator_store(a), mirror_cb, p->agg_mctx);
    return a;
}

/* ---- checkpoint ------------------------------------------------------------ */

/* Test-only fault points (ENGAGE_TEST_CRASH="point:n"): the process kills
 * itself with SIGKILL the n-th time it reaches `point`, so the fault suite
 * can crash it at exact places of the transaction protocol. Points:
 * before_send_offsets (outputs and changelog produced), before_commit
 * (offsets sent), during_commit (a thread kills the process 1 ms into
 * commit_transaction), after_commit (committed, local cache not written). */
static const char *crash_point;
static long crash_countdown;

static void *crash_thread(void *arg) {
    (void)arg;
    struct timespec ts = {0, 1000000L};
    nanosleep(&ts, NULL);
    raise(SIGKILL);
    return NULL;
}

static void maybe_crash(const char *point) {
    if (!crash_point || strncmp(crash_point, point, strlen(point)) != 0 ||
        crash_point[strlen(point)] != ':')
        return;
    if (--crash_countdown > 0)
        return;
    LOG_WARN("ENGAGE_TEST_CRASH: killing the process at %s", point);
    if (strcmp(point, "during_commit") == 0) {
        pthread_t th;
        pthread_create(&th, NULL, crash_thread, NULL);
        pthread_detach(th);
        return;
    }
    raise(SIGKILL);
}

static void pause_partition(proc_t *p, const char *topic, int32_t part) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, part);
    rd_kafka_pause_partitions(p->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
}

static void resume_partition(proc_t *p, const char *topic, int32_t part) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, topic, part);
    rd_kafka_resume_partitions(p->consumer, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* After an aborted transaction: serves the purged records' reports and
 * says how many were dropped. */
static void drop_aborted_output(proc_t *p) {
    rd_kafka_poll(p->producer, 0);
    if (p->purged)
        LOG_WARN("the aborted transaction's %" PRId64 " queued output records were dropped "
                 "(they are produced again from the committed state)",
                 p->purged);
    p->purged = 0;
    p->delivery_failed = 0;
}

/* After an aborted or abandoned transaction: every owned task and the
 * aggregator are reopened as on a new assignment (on_assign()): from the
 * local store when it is at the group's committed offset (the local store is
 * only written after a commit), else from the changelog (a commit that
 * succeeded although the failed producer could not report it). The consumer
 * is repositioned to match; bounded runs keep their end offsets. */
static void rewind_all(proc_t *p) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(p->nparts + 1);
    ptask_t *was = calloc((size_t)p->nparts, sizeof(*was));
    if (!was) {
        set_fatal(p, "%s", "out of memory");
        rd_kafka_topic_partition_list_destroy(l);
        return;
    }
    for (int32_t i = 0; i < p->nparts; i++) {
        ptask_t *pt = &p->tasks[i];
        if (!pt->task)
            continue;
        was[i] = *pt;
        engage_task_close(pt->task);
        pt->task = NULL;
        rd_kafka_topic_partition_list_add(l, p->conf->topic_input, i);
    }
    if (p->agg) {
        engage_aggregator_close(p->agg);
        p->agg = NULL;
        rd_kafka_topic_partition_list_add(l, p->conf->topic_partials, 0);
    }
    if (l->cnt > 0 && !p->fatal && !p->closing) {
        on_assign(p, l);
        for (int i = 0; i < l->cnt && !p->fatal; i++) {
            rd_kafka_topic_partition_t *tp = &l->elems[i];
            if (strcmp(tp->topic, p->conf->topic_input) != 0)
                continue;
            ptask_t *pt = &p->tasks[tp->partition];
            pt->end_offset = was[tp->partition].end_offset;
            if (was[tp->partition].paused) {
                if (pt->task && engage_task_finished(pt->task))
                    pt->paused = 1; /* stays paused in the consumer */
                else
                    resume_partition(p, tp->topic, tp->partition);
            }
        }
        if (!p->fatal) {
            rd_kafka_error_t *e = rd_kafka_seek_partitions(p->consumer, l, 30000);
            if (e) {
                set_fatal(p, "seek after abort: %s", rd_kafka_error_string(e));
                rd_kafka_error_destroy(e);
            }
        }
    }
    free(was);
    rd_kafka_topic_partition_list_destroy(l);
}

/* The producer can no longer be used: a fatal error, such as being fenced
 * after the coordinator timed its transaction out (a broker outage or a
 * stall longer than transaction.timeout.ms), or an invalid transaction state
 * after a rebalance. As Kafka Streams does on a TaskMigrated error: drop it
 * with its open transaction, start a new producer with the same
 * transactional.id (its init_transactions bumps the epoch and completes what
 * was open) and, with rewind, reopen every owned task at its committed
 * state. This is safe because commits are checked against the group
 * generation (KIP-447) and local state only ever holds committed state.
 * Gives up after MAX_PRODUCER_RESETS resets without a commit in between
 * (another live instance with the same transactional.id would otherwise
 * fence this one in a loop). Returns 0, or -1 (fatal set). */
static int producer_reset(proc_t *p, const char *why, int rewind) {
    char errstr[512];
    if (++p->producer_resets > MAX_PRODUCER_RESETS) {
        set_fatal(p, "producer failed again without a commit in between, exiting: %s", why);
        return -1;
    }
    LOG_WARN("producer failed (%s): starting a new producer, the open transaction is "
             "abandoned and re-processed from the last committed state",
             why);
    rd_kafka_purge(p->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    drop_aborted_output(p);
    producer_topics_destroy(p);
    rd_kafka_destroy(p->producer);
    p->producer = NULL;
    p->in_txn = 0;
    if (producer_open(p, 0, errstr, sizeof(errstr))) {
        set_fatal(p, "starting a new producer: %s", errstr);
        return -1;
    }
    if (rewind)
        rewind_all(p);
    return p->fatal ? -1 : 0;
}

/* Aborts the open transaction, retrying retriable errors; when the abort
 * fails otherwise, replaces the producer (producer_reset()). With rewind,
 * every owned task then goes back to its committed state (rewind_all());
 * without (the assignment is being dropped), the caller closes them.
 * Returns 0, or -1 (fatal set). */
static int abort_txn(proc_t *p, int rewind) {
    char m[512] = "abort_transaction kept failing";
    for (int t = 0; t < 10; t++) {
        rd_kafka_error_t *ae = rd_kafka_abort_transaction(p->producer, 60000);
        if (!ae) {
            p->in_txn = 0;
            drop_aborted_output(p);
            if (rewind)
                rewind_all(p);
            return p->fatal ? -1 : 0;
        }
        int retry = rd_kafka_error_is_retriable(ae) && !rd_kafka_error_is_fatal(ae);
        snprintf(m, sizeof(m), "abort_transaction: %s", rd_kafka_error_string(ae));
        rd_kafka_error_destroy(ae);
        LOG_WARN("%s%s", m, retry ? " (retriable)" : "");
        if (!retry)
            break;
    }
    return producer_reset(p, m, rewind);
}

/* Handles a failed transactional call. Returns 1 to retry the call, 0 when
 * the transaction was aborted and state rewound, -1 on a fatal error. */
static int txn_failed(proc_t *p, const char *what, rd_kafka_error_t *e, int *tries) {
    LOG_WARN("%s: %s%s%s", what, rd_kafka_error_string(e),
             rd_kafka_error_is_retriable(e) ? " (retriable)" : "",
             rd_kafka_error_txn_requires_abort(e) ? " (aborting)" : "");
    if (rd_kafka_error_is_retriable(e) && !rd_kafka_error_is_fatal(e) && ++*tries < 10) {
        rd_kafka_error_destroy(e);
        return 1;
    }
    if (rd_kafka_error_txn_requires_abort(e)) {
        rd_kafka_error_destroy(e);
        if (abort_txn(p, 1))
            return -1;
        LOG_WARN("transaction aborted; re-processing from the last committed state");
        return 0;
    }
    char m[600];
    snprintf(m, sizeof(m), "%s: %s", what, rd_kafka_error_string(e));
    int fatal = rd_kafka_error_is_fatal(e);
    rd_kafka_error_destroy(e);
    if (fatal) /* fencing included: this producer never commits again */
        return producer_reset(p, m, 1) ? -1 : 0;
    set_fatal(p, "transaction failed, exiting: %s", m); /* retries exhausted, or unclassified */
    return -1;
}

/* Offsets committed for a finished task or a done aggregator carry this
 * metadata: it is how the members of a bounded run learn that the group's
 * job is done (group_done()); a live run's commits carry none, so they clear
 * it. */
#define DONE_MARK "engage:done"

static void add_offset(rd_kafka_topic_partition_list_t *l, const char *topic, int32_t part,
                       int64_t offset, int done) {
    rd_kafka_topic_partition_t *tp = rd_kafka_topic_partition_list_add(l, topic, part);
    tp->offset = offset;
    if (done && (tp->metadata = malloc(sizeof(DONE_MARK) - 1)) != NULL) {
        memcpy(tp->metadata, DONE_MARK, sizeof(DONE_MARK) - 1);
        tp->metadata_size = sizeof(DONE_MARK) - 1; /* freed by the list */
    }
}

static int is_done_mark(const rd_kafka_topic_partition_t *tp) {
    return tp->metadata && tp->metadata_size == sizeof(DONE_MARK) - 1 &&
           memcmp(tp->metadata, DONE_MARK, sizeof(DONE_MARK) - 1) == 0;
}

/* exactly_once checkpoint: state changes to the changelogs, input offsets
 * and the batch's outputs commit together in one transaction; only then is
 * the local cache written. Returns 0 (committed, or aborted and rewound) or
 * -1 (fatal). */
static int checkpoint_eos(proc_t *p) {
    char errstr[512];
    int any = p->in_txn;
    for (int32_t i = 0; i < p->nparts && !any; i++)
        if (p->tasks[i].task && engage_task_dirty(p->tasks[i].task))
            any = 1;
    if (p->agg && engage_aggregator_dirty(p->agg))
        any = 1;
    if (!any)
        return 0;
    p->checkpoints++;
    if (begin_txn(p))
        return -1;
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(p->nparts + 1);
    int staged_fail = 0;
    for (int32_t i = 0; i < p->nparts; i++) {
        engage_task_t *t = p->tasks[i].task;
        if (!t)
            continue;
        if (engage_task_stage(t, errstr, sizeof(errstr))) {
            set_fatal(p, "staging state: %s", errstr);
            staged_fail = 1;
            break;
        }
        if (engage_state_mirror_failed(engage_task_store(t)))
            staged_fail = 2;
        if (engage_task_next_offset(t) >= 0)
            add_offset(offs, p->conf->topic_input, i, engage_task_next_offset(t),
                       engage_task_finished(t));
    }
    if (p->agg && !staged_fail) {
        if (engage_aggregator_stage(p->agg, errstr, sizeof(errstr))) {
            set_fatal(p, "staging aggregator state: %s", errstr);
            staged_fail = 1;
        } else {
            if (engage_state_mirror_failed(engage_aggregator_store(p->agg)))
                staged_fail = 2;
            if (engage_aggregator_next_offset(p->agg) >= 0)
                add_offset(offs, p->conf->topic_partials, 0,
                           engage_aggregator_next_offset(p->agg),
                           engage_aggregator_done(p->agg));
        }
    }
    if (staged_fail == 1) {
        rd_kafka_topic_partition_list_destroy(offs);
        return -1;
    }
    int rc = 0, tries = 0;
    if (staged_fail == 2) {
        /* a changelog record could not be queued: abort, never commit */
        rd_kafka_topic_partition_list_destroy(offs);
        return abort_txn(p, 1);
    }
    maybe_crash("before_send_offsets");
    /* Zombie guard: if the member's assignment was lost, or the group moved
     * to another generation while this transaction's records were processed
     * (the background thread can rejoin before the main thread polls), the
     * broker would accept these offsets under the new generation although
     * the work was done on a stale assignment. Abort instead. */
    int stale = rd_kafka_assignment_lost(p->consumer);
    if (!stale && p->txn_cgmd) {
        rd_kafka_consumer_group_metadata_t *cur = rd_kafka_consumer_group_metadata(p->consumer);
        void *buf = NULL;
        size_t sz = 0;
        rd_kafka_error_t *we = cur ? rd_kafka_consumer_group_metadata_write(cur, &buf, &sz) : NULL;
        if (we)
            rd_kafka_error_destroy(we);
        if (!buf || sz != p->txn_cgmd_size || memcmp(buf, p->txn_cgmd, sz) != 0)
            stale = 1;
        free(buf);
        if (cur)
            rd_kafka_consumer_group_metadata_destroy(cur);
    }
    if (stale) {
        LOG_WARN("group generation changed during the transaction: aborting it");
        rd_kafka_topic_partition_list_destroy(offs);
        return abort_txn(p, 1);
    }
    double w0 = mono_seconds();
    if (offs->cnt > 0) {
        rd_kafka_consumer_group_metadata_t *md = rd_kafka_consumer_group_metadata(p->consumer);
        for (;;) {
            rd_kafka_error_t *e = rd_kafka_send_offsets_to_transaction(p->producer, offs, md, -1);
            if (!e)
                break;
            int r = txn_failed(p, "send_offsets_to_transaction", e, &tries);
            if (r == 1)
                continue;
            rc = r;
            break;
        }
        rd_kafka_consumer_group_metadata_destroy(md);
    }
    rd_kafka_topic_partition_list_destroy(offs);
    if (rc == -1 || (rc == 0 && !p->in_txn))
        return rc; /* fatal, or aborted and rewound */
    tries = 0;
    maybe_crash("before_commit");
    maybe_crash("during_commit");
    for (;;) {
        rd_kafka_error_t *e = rd_kafka_commit_transaction(p->producer, -1);
        if (!e) {
            p->in_txn = 0;
            p->producer_resets = 0;
            p->commit_seconds += mono_seconds() - w0;
            break;
        }
        int r = txn_failed(p, "commit_transaction", e, &tries);
        if (r == 1)
            continue;
        return r;
    }
    maybe_crash("after_commit");
    /* committed in Kafka: bring the local cache up to date */
    for (int32_t i = 0; i < p->nparts; i++)
        if (p->tasks[i].task &&
            engage_task_commit_staged(p->tasks[i].task, errstr, sizeof(errstr))) {
            set_fatal(p, "local state write failed: %s", errstr);
            return -1;
        }
    if (p->agg && engage_aggregator_commit_staged(p->agg, errstr, sizeof(errstr))) {
        set_fatal(p, "local aggregator state write failed: %s", errstr);
        return -1;
    }
    return 0;
}

/* Waits for every produced record, then persists tasks and aggregator. */
static int checkpoint(proc_t *p) {
    if (p->eos)
        return checkpoint_eos(p);
    int any = 0;
    for (int32_t i = 0; i < p->nparts; i++)
        if (p->tasks[i].task && engage_task_dirty(p->tasks[i].task))
            any = 1;
    if (p->agg)
        any = 1;
    if (!any && rd_kafka_outq_len(p->producer) == 0)
        return 0;
    p->checkpoints++;
    double w0 = mono_seconds();
    while (rd_kafka_outq_len(p->producer) > 0) {
        rd_kafka_resp_err_t err = rd_kafka_flush(p->producer, 10000);
        if (err && err != RD_KAFKA_RESP_ERR__TIMED_OUT) {
            set_fatal(p, "flush failed: %s", rd_kafka_err2str(err));
            return -1;
        }
        if (err == RD_KAFKA_RESP_ERR__TIMED_OUT)
            LOG_WARN("still waiting for %d output records to be delivered",
                     rd_kafka_outq_len(p->producer));
    }
    p->commit_seconds += mono_seconds() - w0;
    if (p->delivery_failed) {
        set_fatal(p, "%s", "an output record could not be delivered; state not persisted");
        return -1;
    }
    char errstr[512];
    rd_kafka_topic_partition_list_t *offs = rd_kafka_topic_partition_list_new(p->nparts + 1);
    for (int32_t i = 0; i < p->nparts; i++) {
        engage_task_t *t = p->tasks[i].task;
        if (!t)
            continue;
        if (engage_task_dirty(t)) {
            if (engage_task_persist(t, errstr, sizeof(errstr))) {
                set_fatal(p, "state write failed: %s", errstr);
                rd_kafka_topic_partition_list_destroy(offs);
                return -1;
            }
        }
        if (engage_task_next_offset(t) >= 0)
            add_offset(offs, p->conf->topic_input, i, engage_task_next_offset(t),
                       engage_task_finished(t));
    }
    if (p->agg) {
        if (engage_aggregator_persist(p->agg, errstr, sizeof(errstr))) {
            set_fatal(p, "aggregator state write failed: %s", errstr);
            rd_kafka_topic_partition_list_destroy(offs);
            return -1;
        }
        if (engage_aggregator_next_offset(p->agg) >= 0)
            add_offset(offs, p->conf->topic_partials, 0, engage_aggregator_next_offset(p->agg),
                       engage_aggregator_done(p->agg));
    }
    if (offs->cnt > 0) {
        rd_kafka_resp_err_t err = rd_kafka_commit(p->consumer, offs, 1);
        if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
            LOG_WARN("offset commit: %s (positions are kept with the state)",
                     rd_kafka_err2str(err));
    }
    rd_kafka_topic_partition_list_destroy(offs);
    return 0;
}

/* ---- assignment ------------------------------------------------------------ */

static int64_t end_offset(proc_t *p, const char *topic, int32_t part) {
    int64_t lo = 0, hi = 0;
    rd_kafka_resp_err_t err =
        rd_kafka_query_watermark_offsets(p->consumer, topic, part, &lo, &hi, 30000);
    if (err) {
        char m[256];
        snprintf(m, sizeof(m), "%s [%d]: %s", topic, part, rd_kafka_err2str(err));
        set_fatal(p, "cannot read end offset of %s", m);
        return -1;
    }
    return hi;
}

/* exactly_once: is the local store current? It is when its stored next
 * offset equals the offset the group committed in the last transaction. If
 * not (missing, behind after a crash, or from another run), rebuild it from
 * the changelog. Returns the store's next offset afterwards (-1: empty). */
static int64_t ensure_current(proc_t *p, const char *topic, int32_t part,
                              const char *changelog, int32_t clpart, int64_t local,
                              int64_t committed, char *errstr, size_t n) {
    char path[1024];
    if (committed >= 0 && local == committed)
        return local; /* clean and current: no restore */
    /* otherwise restore; with nothing committed and nothing local the
     * changelog may still hold state (the group's offsets expired), so look */
    state_path(p, topic, part, path, sizeof(path));
    int64_t records = 0;
    double t0 = mono_seconds();
    if (engage_changelog_restore(p->conf, changelog, clpart, path, &records, errstr, n))
        return -2;
    double dt = mono_seconds() - t0;
    p->restored_records += records;
    p->restore_seconds += dt;
    LOG_INFO("restored %s [%d] from %s [%d]: %" PRId64 " records in %.3f s (%.0f records/s); "
             "local offset was %" PRId64 ", committed %" PRId64,
             topic, part, changelog, clpart, records, dt, dt > 0 ? (double)records / dt : 0.0,
             local, committed);
    return 0;
}

static void on_assign(proc_t *p, rd_kafka_topic_partition_list_t *parts) {
    char errstr[512];
    rd_kafka_topic_partition_list_t *committed = NULL;
    if (p->closing || p->fatal) {
        /* leaving the group: another member's exit can still hand partitions
         * to this one; the close revokes them right away, so do not open or
         * restore anything for them */
        for (int i = 0; i < parts->cnt; i++)
            LOG_INFO("assigned %s [%d] while leaving: not taken", parts->elems[i].topic,
                     parts->elems[i].partition);
        return;
    }
    if (p->eos && p->in_txn) {
        /* End the open transaction first: the wait below can outlast
         * transaction.timeout.ms, and the coordinator would abort a
         * transaction left open that long (the next commit or abort then
         * fails fatally). Its work was done under the previous generation,
         * so the zombie guard aborts it and the owned tasks rewind. */
        checkpoint_eos(p);
        if (p->fatal)
            return;
    }
    if (p->eos) {
        committed = rd_kafka_topic_partition_list_copy(parts);
        /* KIP-447: while another producer's transaction holds offsets for
         * these partitions, OffsetFetch (require_stable) cannot answer. Wait
         * for that transaction to end (commit or abort, at most
         * transaction.timeout.ms): processing from older state meanwhile
         * would duplicate what it commits. */
        rd_kafka_resp_err_t err;
        double t0 = mono_seconds();
        while ((err = rd_kafka_committed(p->consumer, committed, 10000)) ==
                   RD_KAFKA_RESP_ERR__TIMED_OUT &&
               mono_seconds() - t0 < 180)
            LOG_WARN("reading committed offsets: %s (a transaction with offsets for these "
                     "partitions is still open?); waiting",
                     rd_kafka_err2str(err));
        if (err) {
            set_fatal(p, "reading committed offsets: %s", rd_kafka_err2str(err));
            rd_kafka_topic_partition_list_destroy(committed);
            return;
        }
    }
    for (int i = 0; i < parts->cnt && !p->fatal; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        int64_t k = committed ? committed->elems[i].offset : -1;
        tp->offset = RD_KAFKA_OFFSET_BEGINNING;
        if (strcmp(tp->topic, p->conf->topic_input) == 0) {
            if (tp->partition >= p->nparts) {
                set_fatal(p, "%s", "input topic gained partitions while running; restart");
                continue;
            }
            ptask_t *pt = &p->tasks[tp->partition];
            if (!pt->task && !(pt->task = open_task(p, tp->partition, errstr, sizeof(errstr)))) {
                set_fatal(p, "cannot open task state: %s", errstr);
                continue;
            }
            if (p->eos) {
                int64_t local = engage_task_next_offset(pt->task);
                if (!(k >= 0 && local == k)) {
                    engage_task_close(pt->task);
                    pt->task = NULL;
                    if (ensure_current(p, tp->topic, tp->partition, p->changelog, tp->partition,
                                       local, k, errstr, sizeof(errstr)) < -1 ||
                        !(pt->task = open_task(p, tp->partition, errstr, sizeof(errstr)))) {
                        set_fatal(p, "restoring task state: %s", errstr);
                        continue;
                    }
                    if (k >= 0 && engage_task_next_offset(pt->task) != k)
                        LOG_WARN("%s [%d]: changelog state is at offset %" PRId64
                                 " but the group committed %" PRId64
                                 " (offsets reset or changelog truncated?); continuing "
                                 "from the changelog's offset",
                                 tp->topic, tp->partition, engage_task_next_offset(pt->task),
                                 k);
                }
            }
            if (engage_task_next_offset(pt->task) >= 0)
                tp->offset = engage_task_next_offset(pt->task);
            pt->end_offset = p->conf->until_end ? end_offset(p, tp->topic, tp->partition) : -1;
            pt->paused = 0;
            LOG_INFO("assigned %s [%d] from offset %" PRId64 "%s", tp->topic, tp->partition,
                     engage_task_next_offset(pt->task),
                     engage_task_next_offset(pt->task) < 0 ? " (new state: beginning)" : "");
        } else if (strcmp(tp->topic, p->conf->topic_partials) == 0 && tp->partition == 0) {
            if (!p->agg && !(p->agg = open_agg(p, errstr, sizeof(errstr)))) {
                set_fatal(p, "cannot open aggregator state: %s", errstr);
                continue;
            }
            if (p->eos) {
                int64_t local = engage_aggregator_next_offset(p->agg);
                if (!(k >= 0 && local == k)) {
                    engage_aggregator_close(p->agg);
                    p->agg = NULL;
                    if (ensure_current(p, tp->topic, 0, p->agg_changelog, 0, local, k, errstr,
                                       sizeof(errstr)) < -1 ||
                        !(p->agg = open_agg(p, errstr, sizeof(errstr)))) {
                        set_fatal(p, "restoring aggregator state: %s", errstr);
                        continue;
                    }
                }
            }
            if (engage_aggregator_next_offset(p->agg) >= 0)
                tp->offset = engage_aggregator_next_offset(p->agg);
            LOG_INFO("assigned %s [0] (aggregator) from offset %" PRId64, tp->topic,
                     engage_aggregator_next_offset(p->agg));
        }
        p->owned_any = 1;
    }
    if (committed)
        rd_kafka_topic_partition_list_destroy(committed);
}

static void on_revoke(proc_t *p, rd_kafka_topic_partition_list_t *parts, int lost) {
    if (!p->fatal) {
        if (lost && p->eos) {
            /* someone else may own these already: never commit for them */
            if (p->in_txn) {
                LOG_WARN("assignment lost (session timed out or fenced): aborting the open "
                         "transaction");
                abort_txn(p, 0); /* the tasks are closed below */
            }
        } else {
            /* finish the open transaction before giving partitions up */
            checkpoint(p);
        }
    }
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        if (strcmp(tp->topic, p->conf->topic_input) == 0 && tp->partition < p->nparts) {
            ptask_t *pt = &p->tasks[tp->partition];
            if (pt->task) {
                engage_task_stats_t st;
                engage_task_get_stats(pt->task, &st);
                p->total.records += st.records;
                p->total.counted += st.counted;
                p->total.duplicates += st.duplicates;
                p->total.late += st.late;
                p->total.dead += st.dead;
                p->total.sessions_closed += st.sessions_closed;
                p->total.partials_emitted += st.partials_emitted;
            }
            engage_task_close(pt->task);
            pt->task = NULL;
            LOG_INFO("revoked %s [%d]", tp->topic, tp->partition);
        } else if (strcmp(tp->topic, p->conf->topic_partials) == 0) {
            engage_aggregator_close(p->agg);
            p->agg = NULL;
            LOG_INFO("revoked %s [0] (aggregator)", tp->topic);
        }
    }
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    proc_t *p = opaque;
    rd_kafka_error_t *e = NULL;
    int cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        p->assigned_once = 1;
        on_assign(p, parts);
        if (cooperative)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            rd_kafka_assign(rk, parts);
    } else {
        on_revoke(p, parts, rd_kafka_assignment_lost(rk));
        if (cooperative)
            e = rd_kafka_incremental_unassign(rk, parts);
        else
            rd_kafka_assign(rk, NULL);
    }
    if (e) {
        LOG_ERROR("rebalance: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    }
}

/* ---- setup ----------------------------------------------------------------- */

static int has_kafka_key(const engage_conf_t *c, const char *k) {
    for (int i = 0; i < c->kafka_cnt; i++)
        if (strcmp(c->kafka_keys[i], k) == 0)
            return 1;
    return 0;
}

static int kset(rd_kafka_conf_t *kc, const char *k, const char *v, char *errstr, size_t n) {
    return rd_kafka_conf_set(kc, k, v, errstr, n) != RD_KAFKA_CONF_OK;
}

/* Looks the topic up in the full metadata: asking for one named topic can
 * auto-create it (brokers with auto.create.topics.enable, the mock cluster)
 * with the wrong partition count. Returns its partition count, 0 if it does
 * not exist, -1 on error. */
static int32_t topic_partitions(proc_t *p, const char *topic, char *errstr, size_t n) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(p->producer, 1, NULL, &md, 30000);
    if (err) {
        snprintf(errstr, n, "metadata for %s: %s", topic, rd_kafka_err2str(err));
        return -1;
    }
    int32_t cnt = 0;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic) != 0)
            continue;
        if (md->topics[i].err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            cnt = md->topics[i].partition_cnt;
        } else if (md->topics[i].err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
            snprintf(errstr, n, "metadata for %s: %s", topic,
                     rd_kafka_err2str(md->topics[i].err));
            cnt = -1;
        }
        break;
    }
    rd_kafka_metadata_destroy(md);
    return cnt;
}

static int create_topic(proc_t *p, const char *topic, int32_t parts, int compact,
                        char *errstr, size_t n) {
    for (int attempt = 0; attempt < 2; attempt++) {
        int rf = attempt == 0 ? -1 : 1;
        rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, parts, rf, errstr, n);
        if (!nt)
            return -1;
        if (compact)
            rd_kafka_NewTopic_set_config(nt, "cleanup.policy", "compact");
        rd_kafka_queue_t *q = rd_kafka_queue_new(p->producer);
        rd_kafka_CreateTopics(p->producer, &nt, 1, NULL, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
        rd_kafka_NewTopic_destroy(nt);
        int rc = -1;
        if (ev) {
            const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
            size_t cnt = 0;
            const rd_kafka_topic_result_t **tr =
                res ? rd_kafka_CreateTopics_result_topics(res, &cnt) : NULL;
            rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
            if (!err && cnt == 1)
                err = rd_kafka_topic_result_error(tr[0]);
            if (!err || err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS)
                rc = 0;
            else
                snprintf(errstr, n, "create topic %s: %s", topic,
                         cnt == 1 && rd_kafka_topic_result_error_string(tr[0])
                             ? rd_kafka_topic_result_error_string(tr[0])
                             : rd_kafka_err2str(err));
            rd_kafka_event_destroy(ev);
        } else {
            snprintf(errstr, n, "create topic %s: timed out", topic);
        }
        rd_kafka_queue_destroy(q);
        if (rc == 0) {
            LOG_INFO("created topic %s with %d partitions", topic, parts);
            return 0;
        }
    }
    return -1;
}

/* Returns the partition count of topic, creating it with `want` partitions
 * if it is missing and topics.create is on. */
static int32_t ensure_topic_ex(proc_t *p, const char *topic, int32_t want, int compact,
                               char *errstr, size_t n) {
    int32_t cnt = topic_partitions(p, topic, errstr, n);
    if (cnt < 0)
        return -1;
    if (cnt > 0)
        return cnt;
    if (!p->conf->topics_create) {
        snprintf(errstr, n, "topic %s does not exist (and topics.create is off)", topic);
        return -1;
    }
    if (create_topic(p, topic, want, compact, errstr, n))
        return -1;
    for (int i = 0; i < 50; i++) { /* metadata propagates asynchronously */
        cnt = topic_partitions(p, topic, errstr, n);
        if (cnt != 0)
            return cnt;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    snprintf(errstr, n, "topic %s not visible after creation", topic);
    return -1;
}

static int32_t ensure_topic(proc_t *p, const char *topic, int32_t want, char *errstr,
                            size_t n) {
    return ensure_topic_ex(p, topic, want, 0, errstr, n);
}

static int mkdir_p(const char *path) {
    char tmp[1024];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *s = tmp + 1; *s; s++) {
        if (*s == '/') {
            *s = '\0';
            if (mkdir(tmp, 0755) && errno != EEXIST)
                return -1;
            *s = '/';
        }
    }
    if (mkdir(tmp, 0755) && errno != EEXIST)
        return -1;
    return 0;
}

/* Stable for one instance (same group.instance.id, or same host and
 * state.dir) across restarts, so a restarted instance fences its previous
 * incarnation at once; distinct between instances. */
static void derive_transactional_id(const engage_conf_t *c, char *buf, size_t n) {
    if (c->transactional_id && *c->transactional_id) {
        snprintf(buf, n, "%s", c->transactional_id);
        return;
    }
    for (int i = 0; i < c->kafka_cnt; i++)
        if (strcmp(c->kafka_keys[i], "group.instance.id") == 0 && *c->kafka_vals[i]) {
            snprintf(buf, n, "engage-%s-%s", c->group_id, c->kafka_vals[i]);
            return;
        }
    char host[256] = "host", real[4096];
    gethostname(host, sizeof(host) - 1);
    const char *dir = realpath(c->state_dir, real) ? real : c->state_dir;
    snprintf(buf, n, "engage-%s-%s-%016" PRIx64, c->group_id, host,
             (uint64_t)XXH64(dir, strlen(dir), 0));
}

/* Creates p->producer (idempotent; transactional under exactly_once, its
 * transactions initialized) from the configuration; announce logs the
 * transactional.id. Returns 0, or -1 with errstr set (p->producer may then
 * be set and is destroyed by the caller's cleanup). */
static int producer_open(proc_t *p, int announce, char *errstr, size_t n) {
    const engage_conf_t *c = p->conf;
    rd_kafka_conf_t *pc = engage_conf_kafka(c, errstr, n);
    if (!pc)
        return -1;
    if (kset(pc, "enable.idempotence", "true", errstr, n) ||
        (!has_kafka_key(c, "partitioner") &&
         kset(pc, "partitioner", "murmur2_random", errstr, n)) ||
        (!has_kafka_key(c, "linger.ms") && kset(pc, "linger.ms", "5", errstr, n)) ||
        (!has_kafka_key(c, "compression.type") &&
         kset(pc, "compression.type", "lz4", errstr, n))) {
        rd_kafka_conf_destroy(pc);
        return -1;
    }
    if (p->eos) {
        char txid[512];
        derive_transactional_id(c, txid, sizeof(txid));
        if (kset(pc, "transactional.id", txid, errstr, n) ||
            (!has_kafka_key(c, "transaction.timeout.ms") &&
             kset(pc, "transaction.timeout.ms", "10000", errstr, n))) {
            rd_kafka_conf_destroy(pc);
            return -1;
        }
        if (announce)
            LOG_INFO("exactly_once: transactional.id %s", txid);
    }
    /* dr_cb acts on failed deliveries only: reports of delivered records
     * would be ~8M callbacks of nothing in the 1M-user replay (each queued
     * by the broker thread and served by rd_kafka_poll) */
    if (!has_kafka_key(c, "delivery.report.only.error") &&
        kset(pc, "delivery.report.only.error", "true", errstr, n)) {
        rd_kafka_conf_destroy(pc);
        return -1;
    }
    rd_kafka_conf_set_dr_msg_cb(pc, dr_cb);
    rd_kafka_conf_set_opaque(pc, p);
    p->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, n);
    if (!p->producer) {
        rd_kafka_conf_destroy(pc);
        return -1;
    }
    if (p->eos) {
        /* also fences a previous incarnation with the same id and aborts
         * its open transaction */
        rd_kafka_error_t *e = rd_kafka_init_transactions(p->producer, 60000);
        if (e) {
            snprintf(errstr, n, "init_transactions: %s", rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
            return -1;
        }
    }
    return 0;
}

static int setup(proc_t *p, char *errstr, size_t n) {
    const engage_conf_t *c = p->conf;
    int confluent_in = strcmp(c->input_format, "confluent") == 0;
    int confluent_out = strcmp(c->output_format, "confluent") == 0;
    if (mkdir_p(c->state_dir)) {
        snprintf(errstr, n, "cannot create state.dir %s: %s", c->state_dir, strerror(errno));
        return -1;
    }
    p->dec = engage_decoder_new(confluent_in, c->input_schemas, c->input_plain_schema, errstr, n);
    if (!p->dec)
        return -1;
    p->enc = engage_encoder_new(confluent_out, (int32_t)c->output_schema_id_session,
                                (int32_t)c->output_schema_id_daily,
                                (int32_t)c->output_schema_id_partial, errstr, n);
    if (!p->enc)
        return -1;

    p->eos = strcmp(c->processing_guarantee, "exactly_once") == 0;
    if (producer_open(p, 1, errstr, n))
        return -1;

    /* topics */
    p->nparts = topic_partitions(p, c->topic_input, errstr, n);
    if (p->nparts < 0)
        return -1;
    if (p->nparts == 0) {
        snprintf(errstr, n, "input topic %s does not exist", c->topic_input);
        return -1;
    }
    if (ensure_topic(p, c->topic_sessions, p->nparts, errstr, n) < 0 ||
        ensure_topic(p, c->topic_daily, 1, errstr, n) < 0)
        return -1;
    if ((p->dead_parts = ensure_topic(p, c->topic_dead, p->nparts, errstr, n)) < 0 ||
        (p->late_parts = ensure_topic(p, c->topic_late, p->nparts, errstr, n)) < 0)
        return -1;
    int32_t pp = ensure_topic(p, c->topic_partials, 1, errstr, n);
    if (pp < 0)
        return -1;
    if (pp != 1) {
        snprintf(errstr, n,
                 "the partials topic %s must have exactly 1 partition (has %d): one "
                 "aggregator sees every partition's days",
                 c->topic_partials, pp);
        return -1;
    }
    if (p->eos) {
        snprintf(p->changelog, sizeof(p->changelog), "%s-state-changelog", c->group_id);
        snprintf(p->agg_changelog, sizeof(p->agg_changelog), "%s-aggregator-changelog",
                 c->group_id);
        int32_t cl = ensure_topic_ex(p, p->changelog, p->nparts, 1, errstr, n);
        if (cl < 0)
            return -1;
        if (cl != p->nparts) {
            snprintf(errstr, n, "changelog %s has %d partitions, the input %d", p->changelog,
                     cl, p->nparts);
            return -1;
        }
        if (ensure_topic_ex(p, p->agg_changelog, 1, 1, errstr, n) < 0)
            return -1;
        p->mctx = calloc((size_t)p->nparts, sizeof(*p->mctx));
        p->agg_mctx = calloc(1, sizeof(*p->agg_mctx));
        for (int32_t i = 0; i < p->nparts; i++) {
            p->mctx[i].p = p;
            p->mctx[i].topic = p->changelog;
            p->mctx[i].partition = i;
        }
        p->agg_mctx->p = p;
        p->agg_mctx->topic = p->agg_changelog;
        p->agg_mctx->partition = 0;
    }
    p->tasks = calloc((size_t)p->nparts, sizeof(*p->tasks));
    p->tconf.gap_ms = c->session_gap_ms;
    p->tconf.grace_ms = c->grace_ms;
    p->tconf.max_skew_ms = c->max_skew_ms;
    p->tconf.min_timestamp_ms = c->min_timestamp_ms;
    p->tconf.max_user_id_bytes = c->max_user_id_bytes;
    p->tconf.partition_count = p->nparts;
    p->tconf.retention_margin_days = (int32_t)c->retention_margin_days;
    p->tconf.user_retention_days = (int32_t)c->user_retention_days;
    p->emit.opaque = p;
    p->emit.session = emit_session;
    p->emit.partial = emit_partial;
    p->emit.dead = emit_dead;
    p->emit.late = emit_late;

    /* consumer */
    rd_kafka_conf_t *cc = engage_conf_kafka(c, errstr, n);
    if (!cc)
        return -1;
    if (kset(cc, "group.id", c->group_id, errstr, n) ||
        (!has_kafka_key(c, "partition.assignment.strategy") &&
         kset(cc, "partition.assignment.strategy", "cooperative-sticky", errstr, n)) ||
        kset(cc, "enable.auto.commit", "false", errstr, n) ||
        kset(cc, "enable.auto.offset.store", "false", errstr, n) ||
        kset(cc, "auto.offset.reset", "earliest", errstr, n) ||
        kset(cc, "isolation.level", "read_committed", errstr, n) ||
        kset(cc, "enable.partition.eof", "true", errstr, n) ||
        /* ~330 bytes a queued message: 50,000 (librdkafka: 100,000) keep
         * ~16 MB, enough with fetch.wakeup (fetchwake.h) */
        (!has_kafka_key(c, "queued.min.messages") &&
         kset(cc, "queued.min.messages", "50000", errstr, n))) {
        rd_kafka_conf_destroy(cc);
        return -1;
    }
    rd_kafka_conf_set_rebalance_cb(cc, rebalance_cb);
    rd_kafka_conf_set_opaque(cc, p);
    p->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cc, errstr, n);
    if (!p->consumer) {
        rd_kafka_conf_destroy(cc);
        return -1;
    }
    rd_kafka_poll_set_consumer(p->consumer);
    p->cq = rd_kafka_queue_get_consumer(p->consumer);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(2);
    rd_kafka_topic_partition_list_add(subs, c->topic_input, RD_KAFKA_PARTITION_UA);
    rd_kafka_topic_partition_list_add(subs, c->topic_partials, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(p->consumer, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (err) {
        snprintf(errstr, n, "subscribe: %s", rd_kafka_err2str(err));
        return -1;
    }
    if (c->fetch_wakeup) {
        p->wake = engage_fetchwake_start(p->consumer, p->cq, c->topic_input);
        if (!p->wake)
            LOG_WARN("fetch.wakeup: helper thread not started; fetching may pause for up to "
                     "1 s whenever queued.min.messages is reached");
    }
    if (c->until_end)
        for (int32_t i = 0; i < p->nparts; i++) {
            int64_t lo = 0, hi = 0;
            err = rd_kafka_query_watermark_offsets(p->consumer, c->topic_input, i, &lo, &hi,
                                                   30000);
            if (err) {
                snprintf(errstr, n, "end offset of %s [%d]: %s", c->topic_input, i,
                         rd_kafka_err2str(err));
                return -1;
            }
            p->tasks[i].group_end = hi;
        }
    return 0;
}

/* ---- the loop ---------------------------------------------------------------- */

static void handle_input(proc_t *p, rd_kafka_message_t *m) {
    int32_t part = m->partition;
    if (part < 0 || part >= p->nparts || !p->tasks[part].task)
        return; /* revoked meanwhile: the new owner re-reads it */
    ptask_t *pt = &p->tasks[part];
    pt->idle_since = 0;
    if (pt->end_offset >= 0 && m->offset >= pt->end_offset)
        return; /* bounded run: past the end seen at start */
    if (engage_task_finished(pt->task))
        return;
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(m, &tstype);
    engage_input_rec_t rec = {.key = m->key,
                              .key_len = m->key_len,
                              .value = m->payload,
                              .value_len = m->len,
                              .partition = part,
                              .offset = m->offset,
                              .kafka_ts = tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts};
    char errstr[512];
    if (engage_task_process(pt->task, &rec, errstr, sizeof(errstr)))
        set_fatal(p, "processing failed: %s", errstr);
}

static void handle_partial(proc_t *p, rd_kafka_message_t *m) {
    if (!p->agg || m->partition != 0)
        return;
    engage_partial_rec_t r;
    char errstr[512];
    if (engage_decode_partial(p->enc, m->payload, m->len, &r)) {
        /* not ours: skip it but say so loudly, never guess */
        LOG_ERROR("partials topic %s offset %" PRId64 ": undecodable record skipped",
                  p->conf->topic_partials, m->offset);
        engage_aggregator_set_next_offset(p->agg, m->offset + 1);
        return;
    }
    if (engage_aggregator_add(p->agg, &r, m->offset, errstr, sizeof(errstr)))
        set_fatal(p, "aggregation failed: %s", errstr);
}

static void handle_eof(proc_t *p, rd_kafka_message_t *m) {
    const char *topic = rd_kafka_topic_name(m->rkt);
    if (strcmp(topic, p->conf->topic_input) == 0 && m->partition >= 0 &&
        m->partition < p->nparts && p->tasks[m->partition].task) {
        ptask_t *pt = &p->tasks[m->partition];
        /* skipped control records (transaction markers) also count as consumed */
        if (pt->end_offset >= 0 && m->offset <= pt->end_offset)
            engage_task_set_next_offset(pt->task, m->offset);
        if (pt->idle_since == 0)
            pt->idle_since = mono_seconds();
    } else if (strcmp(topic, p->conf->topic_partials) == 0 && p->agg) {
        engage_aggregator_set_next_offset(p->agg, m->offset);
    }
}

/* Idle policy, live runs only. Opens an assign()-ed reader of the partials
 * topic (every member runs one, wherever the aggregator is) to learn the
 * latest day any partition has made final. */
static int progress_open(proc_t *p, char *errstr, size_t n) {
    rd_kafka_conf_t *kc = engage_conf_kafka(p->conf, errstr, n);
    if (!kc)
        return -1;
    if (kset(kc, "group.id", "engage-progress", errstr, n) ||
        kset(kc, "enable.auto.commit", "false", errstr, n) ||
        kset(kc, "isolation.level", "read_committed", errstr, n)) {
        rd_kafka_conf_destroy(kc);
        return -1;
    }
    if (!(p->progress = rd_kafka_new(RD_KAFKA_CONSUMER, kc, errstr, n))) {
        rd_kafka_conf_destroy(kc);
        return -1;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, p->conf->topic_partials, 0)->offset =
        RD_KAFKA_OFFSET_TAIL(10000);
    rd_kafka_assign(p->progress, l);
    rd_kafka_topic_partition_list_destroy(l);
    return 0;
}

static void idle_policy(proc_t *p) {
    for (int i = 0; i < 1000; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(p->progress, 0);
        if (!m)
            break;
        engage_partial_rec_t r;
        if (!m->err && engage_decode_partial(p->enc, m->payload, m->len, &r) == ENGAGE_ERR_OK &&
            !r.is_end && r.day > p->group_final_day)
            p->group_final_day = r.day;
        rd_kafka_message_destroy(m);
    }
    if (p->group_final_day == INT32_MIN || p->conf->idle_timeout_ms <= 0)
        return;
    double now = mono_seconds();
    int64_t target = engage_day_start_ms(p->group_final_day + 1);
    for (int32_t i = 0; i < p->nparts; i++) {
        ptask_t *pt = &p->tasks[i];
        if (!pt->task || pt->idle_since == 0 ||
            (now - pt->idle_since) * 1000.0 < (double)p->conf->idle_timeout_ms)
            continue;
        int64_t wm = engage_task_watermark(pt->task);
        if (wm != INT64_MIN && wm >= target)
            continue;
        char errstr[512];
        char date[16];
        engage_day_format(p->group_final_day, date, sizeof(date));
        LOG_INFO("partition %d idle for %.0f s: its watermark follows the group past %s", i,
                 now - pt->idle_since, date);
        if (engage_task_advance_watermark(pt->task, target, errstr, sizeof(errstr)))
            set_fatal(p, "idle policy: %s", errstr);
    }
}

/* Bounded runs: finish tasks whose input is exhausted. Returns 1 when this
 * member has nothing left to do. */
static int bounded_progress(proc_t *p) {
    char errstr[512];
    int owned = 0, all_done = 1;
    for (int32_t i = 0; i < p->nparts; i++) {
        ptask_t *pt = &p->tasks[i];
        if (!pt->task)
            continue;
        owned++;
        if (!engage_task_finished(pt->task)) {
            int64_t next = engage_task_next_offset(pt->task);
            if (pt->end_offset == 0 || (next >= 0 && next >= pt->end_offset)) {
                /* an empty partition still commits a position (0), which is
                 * how the other members learn that it is done */
                if (pt->end_offset == 0)
                    engage_task_set_next_offset(pt->task, 0);
                if (engage_task_finish(pt->task, errstr, sizeof(errstr))) {
                    set_fatal(p, "finishing failed: %s", errstr);
                    return 0;
                }
                if (!pt->paused) {
                    pause_partition(p, p->conf->topic_input, i);
                    pt->paused = 1;
                }
                LOG_INFO("partition %d: input exhausted at offset %" PRId64, i,
                         pt->end_offset);
            } else {
                all_done = 0;
            }
        }
    }
    if (p->agg) {
        owned++;
        if (!engage_aggregator_done(p->agg))
            all_done = 0;
    }
    (void)owned;
    return all_done;
}

/* Bounded runs: is the whole group's job done? It is when the group has
 * committed, for every input partition, an offset at or past the end offset
 * this member read at start by a task that had finished (DONE_MARK: a live
 * run's commits at the end do not count, its last days are still open), and
 * the aggregator, done, has committed a position at or past the end of the
 * partials topic (read after the input check, so every partial is in it). A
 * member whose own partitions are done keeps its place in the group until
 * then: partitions still held by a member that died are reassigned to it
 * when the group evicts that member, instead of being left unprocessed by a
 * run that reports success. Checked at most
 * every 500 ms; a failed or timed-out lookup means "not yet". */
static int group_done(proc_t *p) {
    double now = mono_seconds();
    /* this member holds every partition and has finished them all: nobody
     * else can hold any work (and no lookup is needed, which also keeps
     * single-member runs on the librdkafka mock cluster working: it does
     * not store transactional offset commits) */
    int all_here = p->agg && engage_aggregator_done(p->agg);
    for (int32_t i = 0; i < p->nparts && all_here; i++)
        if (!p->tasks[i].task || !engage_task_finished(p->tasks[i].task))
            all_here = 0;
    if (all_here)
        return 1;
    /* librdkafka 2.0.2 asserts when a cooperative-sticky consumer is closed
     * before its first assignment (librdkafka #4312): wait for one */
    if (!p->assigned_once || now < p->next_group_check)
        return 0;
    p->next_group_check = now + 0.5;
    if (p->waiting_since == 0)
        p->waiting_since = now;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(p->nparts + 1);
    for (int32_t i = 0; i < p->nparts; i++)
        rd_kafka_topic_partition_list_add(l, p->conf->topic_input, i);
    rd_kafka_topic_partition_list_add(l, p->conf->topic_partials, 0);
    rd_kafka_resp_err_t err = rd_kafka_committed(p->consumer, l, 5000);
    int done = !err, behind = -1;
    for (int32_t i = 0; i < p->nparts && done; i++)
        if (l->elems[i].offset < 0 || l->elems[i].offset < p->tasks[i].group_end ||
            !is_done_mark(&l->elems[i])) {
            done = 0;
            behind = i;
        }
    int64_t lo = 0, hi = 0, agg_at = l->elems[p->nparts].offset;
    if (done) {
        err = rd_kafka_query_watermark_offsets(p->consumer, p->conf->topic_partials, 0, &lo,
                                               &hi, 10000);
        /* the aggregator's owner knows it has emitted every day (its state
         * was committed by the checkpoint before this check) */
        int agg_here = p->agg && engage_aggregator_done(p->agg);
        if (err || (!agg_here && ((hi > 0 && agg_at < hi) ||
                                  !is_done_mark(&l->elems[p->nparts]))))
            done = 0;
    }
    rd_kafka_topic_partition_list_destroy(l);
    if (!done && now - p->waiting_since >= 10.0) {
        p->waiting_since = now;
        if (err)
            LOG_INFO("own partitions done; group progress unknown (%s); waiting",
                     rd_kafka_err2str(err));
        else if (behind >= 0)
            LOG_INFO("own partitions done; waiting for the group: %s [%d] not yet committed "
                     "to its end",
                     p->conf->topic_input, behind);
        else
            LOG_INFO("own partitions done; waiting for the aggregator (partials committed "
                     "at %" PRId64 " of %" PRId64 ")",
                     agg_at, hi);
    }
    return done;
}

/* True when every owned, unfinished input partition has reached its end
 * since its last record: librdkafka's PARTITION_EOF (at the last stable
 * offset under read_committed, so an open or committed transaction on the
 * input does not count as "more to read") sets idle_since, a record clears
 * it. A short batch alone is not enough: with a small consumer queue the
 * fetcher can be briefly behind. */
static int caught_up(proc_t *p) {
    for (int32_t i = 0; i < p->nparts; i++) {
        engage_task_t *t = p->tasks[i].task;
        if (!t || engage_task_finished(t))
            continue;
        if (p->tasks[i].end_offset >= 0 && engage_task_next_offset(t) >= p->tasks[i].end_offset)
            continue; /* bounded run: at its end, whatever came after */
        if (p->tasks[i].idle_since == 0)
            return 0;
    }
    return 1;
}

/* rd_kafka_consume_batch_queue() of librdkafka < 2.1.0 skips messages when a
 * partition is paused/resumed while it runs, which librdkafka itself does on
 * every cooperative rebalance (assignment pause, "incremental rebalance").
 * One message at a time through rd_kafka_consumer_poll() is not affected. */
static ssize_t consume_batch(proc_t *p, int timeout_ms, rd_kafka_message_t **msgs, size_t max) {
    size_t n = 0;
    double deadline = mono_seconds() + timeout_ms / 1000.0;
    while (n < max) {
        int wait = 0;
        if (n == 0) {
            double left = deadline - mono_seconds();
            if (left <= 0)
                break;
            wait = (int)(left * 1000.0) + 1;
        }
        double w0 = wait ? mono_seconds() : 0;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(p->consumer, wait);
        if (wait)
            p->wait_seconds += mono_seconds() - w0;
        if (!m) {
            if (n > 0)
                break;
            continue;
        }
        msgs[n++] = m;
    }
    return (ssize_t)n;
}

/* Leaves the group and destroys the consumer, serving the revoke callback
 * meanwhile, but waits at most limit_s seconds: rd_kafka_consumer_close()
 * can wait forever for a coordinator that does not answer (a broker
 * outage), and a process that neither works nor exits is worse than one
 * that exits. Giving up is safe: the group notices the departure after
 * session.timeout.ms and nothing uncommitted is ever kept. */
static void consumer_close(proc_t *p, double limit_s) {
    int closed = 0;
    rd_kafka_queue_t *q = rd_kafka_queue_new(p->consumer);
    rd_kafka_error_t *e = rd_kafka_consumer_close_queue(p->consumer, q);
    if (e) {
        LOG_WARN("leaving the group: %s", rd_kafka_error_string(e));
        rd_kafka_error_destroy(e);
    } else {
        double end = mono_seconds() + limit_s;
        while (!(closed = rd_kafka_consumer_closed(p->consumer)) && mono_seconds() < end) {
            /* events, not callbacks: the queue also gets fetched messages,
             * which only the event API may drop */
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
            if (ev && rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                rebalance_cb(p->consumer, rd_kafka_event_error(ev),
                             rd_kafka_event_topic_partition_list(ev), p);
            rd_kafka_event_destroy(ev);
        }
        if (!closed)
            LOG_WARN("leaving the group took more than %.0f s: closing without it", limit_s);
    }
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy_flags(p->consumer, closed ? 0 : RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    p->consumer = NULL;
}

engage_err_t engage_processor_run(const engage_conf_t *conf, volatile sig_atomic_t *stop,
                                  char *errstr, size_t errstr_size) {
    proc_t P;
    proc_t *p = &P;
    memset(p, 0, sizeof(*p));
    p->conf = conf;
    engage_err_t ret = ENGAGE_ERR_OK;
    rd_kafka_message_t **msgs = NULL;
    size_t batch = (size_t)conf->batch_size;

    crash_point = getenv("ENGAGE_TEST_CRASH");
    if (crash_point) {
        const char *colon = strchr(crash_point, ':');
        crash_countdown = colon ? atol(colon + 1) : 1;
        LOG_WARN("ENGAGE_TEST_CRASH=%s is set: this process will kill itself (tests only)",
                 crash_point);
    }
    if (setup(p, errstr, errstr_size)) {
        ret = ENGAGE_ERR_KAFKA;
        goto out;
    }
    msgs = calloc(batch, sizeof(*msgs));
    p->group_final_day = INT32_MIN;
    if (!conf->until_end && conf->idle_timeout_ms > 0 &&
        progress_open(p, errstr, errstr_size)) {
        ret = ENGAGE_ERR_KAFKA;
        goto out;
    }
    LOG_INFO("running: input %s (%d partitions), group %s, state %s%s", conf->topic_input,
             p->nparts, conf->group_id, conf->state_dir,
             conf->until_end ? ", until end" : "");
    int done = 0;
    int64_t since_checkpoint = 0;
    while (!*stop && !p->fatal && !done) {
        double t0 = mono_seconds();
        ssize_t n = consume_batch(p, (int)conf->batch_timeout_ms, msgs, batch);
        p->poll_seconds += mono_seconds() - t0;
        if (n < 0) {
            set_fatal(p, "consume: %s", rd_kafka_err2str(rd_kafka_last_error()));
            break;
        }
        t0 = mono_seconds();
        p->batches += n > 0;
        for (ssize_t i = 0; i < n; i++) {
            rd_kafka_message_t *m = msgs[i];
            if (!p->fatal) {
                if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
                    handle_eof(p, m);
                } else if (m->err) {
                    LOG_WARN("consumer: %s", rd_kafka_message_errstr(m));
                    if (m->err == RD_KAFKA_RESP_ERR__FATAL)
                        set_fatal(p, "consumer fatal error: %s", rd_kafka_message_errstr(m));
                } else if (strcmp(rd_kafka_topic_name(m->rkt), conf->topic_input) == 0) {
                    handle_input(p, m);
                } else {
                    handle_partial(p, m);
                }
            }
            rd_kafka_message_destroy(m);
        }
        p->process_seconds += mono_seconds() - t0;
        if (p->fatal)
            break;
        engage_fetchwake_check(p->wake);
        since_checkpoint += n;
        int own_done = 0;
        if (conf->until_end)
            own_done = bounded_progress(p);
        else if (p->progress)
            idle_policy(p);
        if (p->fatal)
            break;
        /* Checkpoints wait for the broker, so take them every
         * checkpoint.records records, and whenever the consumer is caught up
         * (a short batch, and every owned partition at its end: caught_up())
         * or this member's work is done. */
        if (since_checkpoint >= conf->checkpoint_records ||
            ((size_t)n < batch && caught_up(p)) || own_done) {
            double c0 = mono_seconds();
            if (checkpoint(p))
                break;
            p->checkpoint_seconds += mono_seconds() - c0;
            since_checkpoint = 0;
        }
        if (p->fatal)
            break;
        if (own_done)
            done = group_done(p);
        else
            p->waiting_since = 0;
        rd_kafka_poll(p->producer, 0);
    }
    if (!p->fatal)
        checkpoint(p);
    p->closing = 1;

out:
    if (p->consumer) {
        /* leaves the group; the revoke callback checkpoints and closes tasks */
        if (p->fatal) {
            if (p->eos && p->in_txn) {
                /* best effort: if fenced, the broker aborts it anyway */
                rd_kafka_error_t *e = rd_kafka_abort_transaction(p->producer, 10000);
                if (e)
                    rd_kafka_error_destroy(e);
                p->in_txn = 0;
            }
            /* do not persist anything after a failure: close without the
             * callback's checkpoint by dropping tasks first */
            for (int32_t i = 0; p->tasks && i < p->nparts; i++) {
                engage_task_close(p->tasks[i].task);
                p->tasks[i].task = NULL;
            }
            engage_aggregator_close(p->agg);
            p->agg = NULL;
        }
        p->fetch_wakeups = engage_fetchwake_count(p->wake);
        engage_fetchwake_stop(p->wake);
        p->wake = NULL;
        rd_kafka_queue_destroy(p->cq);
        consumer_close(p, p->fatal ? 30 : 120);
    }
    if (p->progress) {
        rd_kafka_consumer_close(p->progress);
        rd_kafka_destroy(p->progress);
    }
    if (p->producer) {
        rd_kafka_flush(p->producer, 30000);
        producer_topics_destroy(p);
        rd_kafka_destroy(p->producer);
    }
    if (p->fatal && ret == ENGAGE_ERR_OK) {
        snprintf(errstr, errstr_size, "%s", p->fatal_msg);
        ret = ENGAGE_ERR_KAFKA;
    }
    if (ret == ENGAGE_ERR_OK) {
        engage_task_stats_t *t = &p->total;
        LOG_INFO("done: %" PRId64 " records, %" PRId64 " counted, %" PRId64
                 " duplicates, %" PRId64 " late, %" PRId64 " dead letters, %" PRId64
                 " sessions, %" PRId64 " days",
                 t->records, t->counted, t->duplicates, t->late, t->dead, t->sessions_closed,
                 p->days_emitted);
        LOG_INFO("main loop: %" PRId64 " checkpoints (%.1f s, %.1f s of it waiting for the "
                 "broker), %.1f s taking input "
                 "(%.1f s of it waiting for the first record of a batch), %.1f s processing "
                 "%" PRId64 " batches, %" PRId64 " fetch wake-ups",
                 p->checkpoints, p->checkpoint_seconds, p->commit_seconds, p->poll_seconds,
                 p->wait_seconds, p->process_seconds, p->batches,
                 p->fetch_wakeups);
        if (p->restored_records)
            LOG_INFO("restored %" PRId64 " changelog records in %.3f s", p->restored_records,
                     p->restore_seconds);
    }
    for (int32_t i = 0; p->tasks && i < p->nparts; i++)
        engage_task_close(p->tasks[i].task);
    free(p->tasks);
    free(p->mctx);
    free(p->agg_mctx);
    free(p->txn_cgmd);
    engage_aggregator_close(p->agg);
    engage_decoder_destroy(p->dec);
    engage_encoder_destroy(p->enc);
    free(msgs);
    return ret;
}

/* ---- `engage run` ------------------------------------------------------------ */

static volatile sig_atomic_t run_stop;
static void on_signal(int sig) {
    (void)sig;
    run_stop = 1;
}

int engage_cmd_run(int argc, char **argv) {
    char errstr[1024];
    engage_conf_t *conf = engage_conf_new();
    int rest_argc = 0;
    char **rest = NULL;
    int rc = 1;
    if (engage_cli_common(conf, argc, argv, &rest_argc, &rest, errstr, sizeof(errstr))) {
        fprintf(stderr, "engage run: %s\n", errstr);
        goto out;
    }
    for (int i = 1; i < rest_argc; i++) {
        if (strcmp(rest[i], "--until-end") == 0) {
            conf->until_end = 1;
        } else if (strcmp(rest[i], "-h") == 0 || strcmp(rest[i], "--help") == 0) {
            printf("usage: engage run [-c FILE] [-X key=value]... [-b BROKERS] [--until-end]\n\n");
            engage_conf_print_help(stdout);
            rc = 0;
            goto out;
        } else {
            fprintf(stderr, "engage run: unknown argument %s (see engage run --help)\n", rest[i]);
            rc = 2;
            goto out;
        }
    }
    if (strcmp(conf->log_level, "debug") == 0)
        engage_log_set_level(ENGAGE_LOG_DEBUG);
    else if (strcmp(conf->log_level, "warn") == 0)
        engage_log_set_level(ENGAGE_LOG_WARN);
    else if (strcmp(conf->log_level, "error") == 0)
        engage_log_set_level(ENGAGE_LOG_ERROR);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (engage_processor_run(conf, &run_stop, errstr, sizeof(errstr))) {
        fprintf(stderr, "engage run: %s\n", errstr);
        goto out;
    }
    rc = 0;
out:
    free(rest);
    engage_conf_destroy(conf);
    return rc;
}
