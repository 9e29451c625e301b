/*
 * compactor.c - `engage compact`: gathers each day's closed sessions from
 * every partition of the sessions topic, waits until the day is complete
 * (as many distinct session ids as DailyMetrics.sessions says), computes the
 * exact IQR statistics (iqr.c) and produces one SessionMetrics record.
 *
 * Why this shape (docs/COMPACTOR.md has the costs):
 *  - Exact quartiles need every value of the day; mergeable histograms
 *    would be exact only at their resolution. Sessions are already on Kafka,
 *    keyed by user, so one reader of all partitions sees every session of a
 *    day no matter which pod closed it.
 *  - Completeness is decided by data, not time: the processor emits a day's
 *    DailyMetrics only once every session of the day is closed, and its
 *    `sessions` field is the exact count. Counting DISTINCT session ids makes
 *    re-emitted duplicates (crash recovery) harmless.
 *  - A day's statistics depend only on the set of its sessions (sorted
 *    quartiles, integer sums, a distinct count), so neither the interleaving
 *    of partitions nor a re-run changes a byte of the output.
 *
 * Memory: only pending days are held (their sessions, session ids and user
 * ids); a completed day is reduced to its record and freed. The user ids of a
 * day are interned to dense ordinals so valid_users is an exact distinct
 * count, not a hash estimate.
 *
 * One consumer with manual assignment (no group membership, no commits: a
 * restart re-reads from the beginning, which is what makes the result
 * independent of any stored position) and one idempotent producer.
 */
#include "compactor.h"

#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <librdkafka/rdkafka.h>
#include <xxhash.h>

#include "buf.h"
#include "commands.h"
#include "iqr.h"
#include "log.h"
#include "timeutil.h"

#define META_TIMEOUT_MS 30000
#define POLL_MS 100
#define MAX_REPORTED_DAYS 20

/* ---- strtab: exact interning of byte strings to dense ordinals ------------ */

typedef struct strent {
    uint64_t hash;
    size_t off;   /* into the arena */
    uint32_t len;
    uint32_t ord1; /* ordinal + 1; 0 = empty slot */
} strent_t;

typedef struct strtab {
    strent_t *ents;
    size_t mask; /* capacity - 1 (capacity a power of two), 0 when unallocated */
    size_t count;
    engage_buf_t arena;
} strtab_t;

static int strtab_grow(strtab_t *t) {
    size_t ncap = t->ents ? (t->mask + 1) * 2 : 64;
    strent_t *ne = calloc(ncap, sizeof(*ne));
    if (!ne)
        return -1;
    for (size_t i = 0; t->ents && i <= t->mask; i++) {
        if (!t->ents[i].ord1)
            continue;
        size_t j = (size_t)t->ents[i].hash & (ncap - 1);
        while (ne[j].ord1)
            j = (j + 1) & (ncap - 1);
        ne[j] = t->ents[i];
    }
    free(t->ents);
    t->ents = ne;
    t->mask = ncap - 1;
    return 0;
}

/* Returns the ordinal of s[0..n), adding it when new (*added = 1); -1 on OOM
 * or overflow. */
static int64_t strtab_intern(strtab_t *t, const char *s, size_t n, int *added) {
    *added = 0;
    if (n > UINT32_MAX || t->count >= UINT32_MAX - 1)
        return -1;
    if (!t->ents || (t->count + 1) * 2 > t->mask + 1) {
        if (strtab_grow(t))
            return -1;
    }
    uint64_t h = XXH64(s, n, 0x656e67616765ULL);
    size_t i = (size_t)h & t->mask;
    while (t->ents[i].ord1) {
        strent_t *e = &t->ents[i];
        if (e->hash == h && e->len == n && memcmp(t->arena.p + e->off, s, n) == 0)
            return (int64_t)e->ord1 - 1;
        i = (i + 1) & t->mask;
    }
    size_t off = t->arena.len;
    if (engage_buf_append(&t->arena, s, n))
        return -1;
    t->ents[i] = (strent_t){.hash = h, .off = off, .len = (uint32_t)n,
                            .ord1 = (uint32_t)(t->count + 1)};
    *added = 1;
    return (int64_t)t->count++;
}

static void strtab_free(strtab_t *t) {
    free(t->ents);
    engage_buf_free(&t->arena);
    memset(t, 0, sizeof(*t));
}

/* ---- pending days -------------------------------------------------------- */

typedef struct pday {
    int32_t day;
    int have_daily;
    int inconsistent; /* more distinct sessions than DailyMetrics.sessions */
    int64_t expected; /* DailyMetrics.sessions */
    strtab_t ids;     /* distinct session ids */
    strtab_t users;   /* user id -> ordinal within the day */
    engage_iqr_session_t *s;
    size_t n, cap;
} pday_t;

static void pday_free(pday_t *d) {
    if (!d)
        return;
    strtab_free(&d->ids);
    strtab_free(&d->users);
    free(d->s);
    free(d);
}

typedef struct comp comp_t;

/* A topic read to its end offsets (bounded) or followed (continuous). */
typedef struct treader {
    const char *topic;
    int32_t nparts;
    int64_t *end; /* per partition; -1 = no end (continuous) */
    int *done;    /* per partition (bounded) */
    int (*handle)(comp_t *c, const rd_kafka_message_t *m);
} treader_t;

struct comp {
    const engage_conf_t *conf;
    const engage_compact_opts_t *opts;
    volatile sig_atomic_t *stop;
    rd_kafka_t *producer;
    rd_kafka_t *consumer;
    engage_encoder_t *enc;
    pday_t **days; /* pending, sorted by day */
    size_t ndays, days_cap;
    int32_t *done; /* days emitted (or found emitted), sorted */
    size_t ndone, done_cap;
    engage_session_metrics_rec_t *results; /* bounded: emitted at the end */
    size_t nres, res_cap;
    engage_compact_stats_t st;
    volatile int delivery_failed;
    int fatal; /* the engage_err_t of the first failure, 0 while none */
    char errmsg[1024];
};

static int fail(comp_t *c, engage_err_t err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(comp_t *c, engage_err_t err, const char *fmt, ...) {
    if (!c->fatal) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
        va_end(ap);
        c->fatal = (int)err;
    }
    return -1;
}

/* Index of the first pending day >= day. */
static size_t days_lower(const comp_t *c, int32_t day) {
    size_t lo = 0, hi = c->ndays;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->days[mid]->day < day)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static pday_t *day_get(comp_t *c, int32_t day) {
    size_t i = days_lower(c, day);
    if (i < c->ndays && c->days[i]->day == day)
        return c->days[i];
    if (c->ndays == c->days_cap) {
        size_t ncap = c->days_cap ? c->days_cap * 2 : 16;
        pday_t **nd = realloc(c->days, ncap * sizeof(*nd));
        if (!nd)
            return NULL;
        c->days = nd;
        c->days_cap = ncap;
    }
    pday_t *d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->day = day;
    memmove(&c->days[i + 1], &c->days[i], (c->ndays - i) * sizeof(*c->days));
    c->days[i] = d;
    c->ndays++;
    return d;
}

static void day_remove(comp_t *c, pday_t *d) {
    size_t i = days_lower(c, d->day);
    memmove(&c->days[i], &c->days[i + 1], (c->ndays - i - 1) * sizeof(*c->days));
    c->ndays--;
    pday_free(d);
}

static int done_has(const comp_t *c, int32_t day) {
    size_t lo = 0, hi = c->ndone;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->done[mid] == day)
            return 1;
        if (c->done[mid] < day)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int done_add(comp_t *c, int32_t day) {
    if (done_has(c, day))
        return 0;
    if (c->ndone == c->done_cap) {
        size_t ncap = c->done_cap ? c->done_cap * 2 : 64;
        int32_t *nd = realloc(c->done, ncap * sizeof(*nd));
        if (!nd)
            return -1;
        c->done = nd;
        c->done_cap = ncap;
    }
    size_t i = c->ndone;
    while (i > 0 && c->done[i - 1] > day) {
        c->done[i] = c->done[i - 1];
        i--;
    }
    c->done[i] = day;
    c->ndone++;
    return 0;
}

static int in_range(const comp_t *c, int32_t day) {
    return day >= c->opts->from_day && day <= c->opts->to_day;
}

/* ---- output ----------------------------------------------------------------- */

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    comp_t *c = opaque;
    if (m->err) {
        c->delivery_failed = 1;
        LOG_ERROR("delivery to %s failed: %s", rd_kafka_topic_name(m->rkt),
                  rd_kafka_err2str(m->err));
    }
}

static int emit(comp_t *c, const engage_session_metrics_rec_t *r) {
    const void *buf;
    size_t len;
    char key[16];
    if (engage_encode_session_metrics(c->enc, r, &buf, &len))
        return fail(c, ENGAGE_ERR_BAD_AVRO, "cannot encode the SessionMetrics record");
    engage_day_format(r->day, key, sizeof(key));
    for (;;) {
        rd_kafka_resp_err_t err = rd_kafka_producev(
            c->producer, RD_KAFKA_V_TOPIC(c->conf->topic_session_metrics),
            RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *)buf, len),
            RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
        if (!err)
            break;
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL)
            return fail(c, ENGAGE_ERR_KAFKA, "produce to %s: %s",
                        c->conf->topic_session_metrics, rd_kafka_err2str(err));
        rd_kafka_poll(c->producer, 50);
    }
    c->st.days_emitted++;
    LOG_INFO("%s: %" PRId64 " sessions, %" PRId64 " valid, %" PRId64 " duration / %" PRId64
             " action outliers",
             key, r->sessions, r->valid_sessions, r->duration_outliers, r->actions_outliers);
    if (c->opts->on_emit)
        c->opts->on_emit(c->opts->opaque, r);
    return 0;
}

/* The day is complete: compute, emit (continuous) or keep (bounded), free. */
static int finish_day(comp_t *c, pday_t *d) {
    engage_iqr_stats_t s;
    engage_err_t err = engage_iqr_compute(d->s, d->n, c->conf->iqr_multiplier, &s);
    if (err)
        return fail(c, err, "IQR computation for day %" PRId32 ": %s", d->day,
                    engage_err2str(err));
    engage_session_metrics_rec_t r = {
        .day = d->day,
        .sessions = s.sessions,
        .has_quartiles = s.has_quartiles,
        .duration_q1 = s.duration_q1,
        .duration_q3 = s.duration_q3,
        .actions_q1 = s.actions_q1,
        .actions_q3 = s.actions_q3,
        .duration_lower_fence = s.duration_lower_fence,
        .duration_upper_fence = s.duration_upper_fence,
        .actions_lower_fence = s.actions_lower_fence,
        .actions_upper_fence = s.actions_upper_fence,
        .valid_sessions = s.valid_sessions,
        .valid_users = s.valid_users,
        .valid_avg_duration_ms = s.valid_avg_duration_ms,
        .valid_actions_per_session = s.valid_actions_per_session,
        .duration_outliers = s.duration_outliers,
        .actions_outliers = s.actions_outliers,
        .iqr_multiplier = s.multiplier,
    };
    if (done_add(c, d->day))
        return fail(c, ENGAGE_ERR_NOMEM, "out of memory");
    day_remove(c, d);
    if (!c->opts->bounded)
        return emit(c, &r);
    if (c->nres == c->res_cap) {
        size_t ncap = c->res_cap ? c->res_cap * 2 : 64;
        engage_session_metrics_rec_t *nr = realloc(c->results, ncap * sizeof(*nr));
        if (!nr)
            return fail(c, ENGAGE_ERR_NOMEM, "out of memory");
        c->results = nr;
        c->res_cap = ncap;
    }
    c->results[c->nres++] = r;
    return 0;
}

static int check_complete(comp_t *c, pday_t *d) {
    if (!d->have_daily)
        return 0;
    if ((int64_t)d->n == d->expected)
        return finish_day(c, d);
    if ((int64_t)d->n > d->expected && !d->inconsistent) {
        char date[16];
        d->inconsistent = 1;
        LOG_ERROR("%s: %zu distinct sessions but DailyMetrics.sessions = %" PRId64
                  " (topics of different pipelines?); the day is not emitted",
                  engage_day_format(d->day, date, sizeof(date)), d->n, d->expected);
    }
    return 0;
}

/* ---- input handlers ------------------------------------------------------------ */

static void undecodable(const rd_kafka_message_t *m, const char *what) {
    LOG_ERROR("%s [%" PRId32 "] offset %" PRId64 ": not a %s record; skipped (its day "
              "cannot complete if it was one)",
              rd_kafka_topic_name(m->rkt), m->partition, m->offset, what);
}

static int on_session(comp_t *c, const rd_kafka_message_t *m) {
    engage_session_rec_t r;
    c->st.sessions_read++;
    if (engage_decode_session(c->enc, m->payload, m->len, &r)) {
        undecodable(m, "Session");
        return 0;
    }
    if (!in_range(c, r.day) || done_has(c, r.day)) {
        c->st.skipped_records++;
        return 0;
    }
    pday_t *d = day_get(c, r.day);
    int added;
    if (!d || strtab_intern(&d->ids, r.session_id, strlen(r.session_id), &added) < 0)
        return fail(c, ENGAGE_ERR_NOMEM, "out of memory");
    if (!added) {
        c->st.duplicates++;
        return 0;
    }
    int64_t ord = strtab_intern(&d->users, r.user_id, r.user_id_len, &added);
    if (ord < 0)
        return fail(c, ENGAGE_ERR_NOMEM, "out of memory");
    if (d->n == d->cap) {
        size_t ncap = d->cap ? d->cap * 2 : 64;
        engage_iqr_session_t *ns = realloc(d->s, ncap * sizeof(*ns));
        if (!ns)
            return fail(c, ENGAGE_ERR_NOMEM, "out of memory");
        d->s = ns;
        d->cap = ncap;
    }
    d->s[d->n++] = (engage_iqr_session_t){(uint64_t)ord, r.duration_ms, r.actions};
    return check_complete(c, d);
}

static int on_daily(comp_t *c, const rd_kafka_message_t *m) {
    engage_daily_rec_t r;
    c->st.daily_read++;
    if (engage_decode_daily(c->enc, m->payload, m->len, &r)) {
        undecodable(m, "DailyMetrics");
        return 0;
    }
    if (!in_range(c, r.day) || done_has(c, r.day)) {
        c->st.skipped_records++;
        return 0;
    }
    pday_t *d = day_get(c, r.day);
    if (!d)
        return fail(c, ENGAGE_ERR_NOMEM, "out of memory");
    if (d->have_daily) {
        if (d->expected != r.sessions) {
            char date[16];
            LOG_ERROR("%s: two DailyMetrics records disagree on sessions (%" PRId64
                      " and %" PRId64 "); keeping the first",
                      engage_day_format(r.day, date, sizeof(date)), d->expected, r.sessions);
        }
        return 0;
    }
    if (r.sessions < 0) {
        undecodable(m, "valid DailyMetrics");
        return 0;
    }
    d->have_daily = 1;
    d->expected = r.sessions;
    return check_complete(c, d);
}

/* Continuous start-up: which days does the output topic already hold? */
static int on_known(comp_t *c, const rd_kafka_message_t *m) {
    engage_session_metrics_rec_t r;
    int32_t day;
    char key[16];
    if (engage_decode_session_metrics(c->enc, m->payload, m->len, &r) == ENGAGE_ERR_OK) {
        day = r.day;
    } else if (m->key && m->key_len == 10) {
        memcpy(key, m->key, 10);
        key[10] = '\0';
        if (engage_day_parse(key, &day)) {
            undecodable(m, "SessionMetrics");
            return 0;
        }
    } else {
        undecodable(m, "SessionMetrics");
        return 0;
    }
    if (!done_has(c, day)) {
        if (done_add(c, day))
            return fail(c, ENGAGE_ERR_NOMEM, "out of memory");
        c->st.days_known++;
    }
    return 0;
}

/* ---- Kafka plumbing ---------------------------------------------------------- */

static int kset(rd_kafka_conf_t *kc, const char *k, const char *v, char *errstr, size_t n) {
    return rd_kafka_conf_set(kc, k, v, errstr, n) != RD_KAFKA_CONF_OK;
}

static int user_sets(const engage_conf_t *conf, const char *name) {
    for (int i = 0; i < conf->kafka_cnt; i++)
        if (!strcmp(conf->kafka_keys[i], name))
            return 1;
    return 0;
}

/* Partition count of topic: > 0, 0 when it does not exist, -1 on error.
 * Asks for all topics: a request naming the topic could auto-create it. */
static int32_t topic_partitions(comp_t *c, rd_kafka_t *rk, const char *topic) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, META_TIMEOUT_MS);
    if (err)
        return fail(c, ENGAGE_ERR_KAFKA, "metadata for %s: %s", topic, rd_kafka_err2str(err));
    int32_t cnt = 0;
    for (int i = 0; i < md->topic_cnt; i++) {
        if (strcmp(md->topics[i].topic, topic))
            continue;
        if (!md->topics[i].err)
            cnt = md->topics[i].partition_cnt;
        else if (md->topics[i].err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            cnt = fail(c, ENGAGE_ERR_KAFKA, "metadata for %s: %s", topic,
                       rd_kafka_err2str(md->topics[i].err));
        break;
    }
    rd_kafka_metadata_destroy(md);
    return cnt;
}

static int create_topic(comp_t *c, const char *topic) {
    char why[512] = "";
    for (int attempt = 0; attempt < 2; attempt++) {
        /* the broker's default replication first, then 1 (a single broker) */
        rd_kafka_NewTopic_t *nt =
            rd_kafka_NewTopic_new(topic, 1, attempt == 0 ? -1 : 1, why, sizeof(why));
        if (!nt)
            break;
        rd_kafka_queue_t *q = rd_kafka_queue_new(c->producer);
        rd_kafka_CreateTopics(c->producer, &nt, 1, NULL, q);
        rd_kafka_event_t *ev = rd_kafka_queue_poll(q, META_TIMEOUT_MS);
        rd_kafka_NewTopic_destroy(nt);
        int ok = 0;
        if (ev) {
            const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
            size_t cnt = 0;
            const rd_kafka_topic_result_t **tr =
                res ? rd_kafka_CreateTopics_result_topics(res, &cnt) : NULL;
            rd_kafka_resp_err_t err = rd_kafka_event_error(ev);
            if (!err && cnt == 1)
                err = rd_kafka_topic_result_error(tr[0]);
            ok = !err || err == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS;
            if (!ok)
                snprintf(why, sizeof(why), "%s", rd_kafka_err2str(err));
            rd_kafka_event_destroy(ev);
        } else {
            snprintf(why, sizeof(why), "timed out");
        }
        rd_kafka_queue_destroy(q);
        if (ok) {
            LOG_INFO("created topic %s with 1 partition", topic);
            for (int i = 0; i < 50; i++) { /* metadata propagates asynchronously */
                int32_t n = topic_partitions(c, c->producer, topic);
                if (n != 0)
                    return n > 0 ? 0 : -1;
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
            }
            return fail(c, ENGAGE_ERR_KAFKA, "topic %s not visible after creation", topic);
        }
    }
    return fail(c, ENGAGE_ERR_KAFKA, "create topic %s: %s", topic, why);
}

static int setup(comp_t *c) {
    const engage_conf_t *conf = c->conf;
    char why[512];
    c->enc = engage_encoder_new(!strcmp(conf->output_format, "confluent"),
                                (int32_t)conf->output_schema_id_session,
                                (int32_t)conf->output_schema_id_daily,
                                (int32_t)conf->output_schema_id_partial, why, sizeof(why));
    if (!c->enc)
        return fail(c, ENGAGE_ERR_CONFIG, "%s", why);
    if (engage_encoder_set_schema_id(c->enc, ENGAGE_KIND_SESSION_METRICS,
                                     (int32_t)conf->output_schema_id_session_metrics))
        return fail(c, ENGAGE_ERR_CONFIG, "bad output.schema.id.session_metrics");

    rd_kafka_conf_t *pc = engage_conf_kafka(conf, why, sizeof(why));
    if (!pc)
        return fail(c, ENGAGE_ERR_CONFIG, "%s", why);
    if (kset(pc, "enable.idempotence", "true", why, sizeof(why)) ||
        (!user_sets(conf, "partitioner") &&
         kset(pc, "partitioner", "murmur2_random", why, sizeof(why))) ||
        (!user_sets(conf, "linger.ms") && kset(pc, "linger.ms", "5", why, sizeof(why)))) {
        rd_kafka_conf_destroy(pc);
        return fail(c, ENGAGE_ERR_CONFIG, "producer: %s", why);
    }
    rd_kafka_conf_set_dr_msg_cb(pc, dr_cb);
    rd_kafka_conf_set_opaque(pc, c);
    if (!(c->producer = rd_kafka_new(RD_KAFKA_PRODUCER, pc, why, sizeof(why)))) {
        rd_kafka_conf_destroy(pc);
        return fail(c, ENGAGE_ERR_KAFKA, "cannot create producer: %s", why);
    }

    /* assign() needs a group.id, but nothing joins the group or commits */
    char gid[600];
    snprintf(gid, sizeof(gid), "%s-compact", conf->group_id);
    rd_kafka_conf_t *cc = engage_conf_kafka(conf, why, sizeof(why));
    if (!cc)
        return fail(c, ENGAGE_ERR_CONFIG, "%s", why);
    if ((!user_sets(conf, "group.id") && kset(cc, "group.id", gid, why, sizeof(why))) ||
        kset(cc, "isolation.level", "read_committed", why, sizeof(why)) ||
        kset(cc, "enable.auto.commit", "false", why, sizeof(why)) ||
        kset(cc, "enable.auto.offset.store", "false", why, sizeof(why)) ||
        kset(cc, "enable.partition.eof", "true", why, sizeof(why)) ||
        kset(cc, "auto.offset.reset", "earliest", why, sizeof(why))) {
        rd_kafka_conf_destroy(cc);
        return fail(c, ENGAGE_ERR_CONFIG, "consumer: %s", why);
    }
    if (!(c->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cc, why, sizeof(why)))) {
        rd_kafka_conf_destroy(cc);
        return fail(c, ENGAGE_ERR_KAFKA, "cannot create consumer: %s", why);
    }
    rd_kafka_poll_set_consumer(c->consumer);

    int32_t n = topic_partitions(c, c->producer, conf->topic_session_metrics);
    if (n < 0)
        return -1;
    if (n == 0) {
        if (!conf->topics_create)
            return fail(c, ENGAGE_ERR_KAFKA,
                        "topic %s does not exist (and topics.create is off)",
                        conf->topic_session_metrics);
        if (create_topic(c, conf->topic_session_metrics))
            return -1;
    }
    return 0;
}

static void reader_free(treader_t *r) {
    free(r->end);
    free(r->done);
    r->end = NULL;
    r->done = NULL;
}

/* Looks the topic up and, for bounded reads, takes each partition's end
 * offset now: records produced later are not read. */
static int reader_init(comp_t *c, treader_t *r, const char *topic, int bounded,
                       int (*handle)(comp_t *, const rd_kafka_message_t *)) {
    memset(r, 0, sizeof(*r));
    r->topic = topic;
    r->handle = handle;
    int32_t n = topic_partitions(c, c->consumer, topic);
    if (n < 0)
        return -1;
    if (n == 0)
        return fail(c, ENGAGE_ERR_KAFKA, "topic %s does not exist", topic);
    r->nparts = n;
    r->end = calloc((size_t)n, sizeof(*r->end));
    r->done = calloc((size_t)n, sizeof(*r->done));
    if (!r->end || !r->done)
        return fail(c, ENGAGE_ERR_NOMEM, "out of memory");
    for (int32_t p = 0; p < n; p++) {
        r->end[p] = -1;
        if (!bounded)
            continue;
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(c->consumer, topic, p, &lo, &hi, META_TIMEOUT_MS);
        if (err)
            return fail(c, ENGAGE_ERR_KAFKA, "end offset of %s [%" PRId32 "]: %s", topic, p,
                        rd_kafka_err2str(err));
        r->end[p] = hi;
        r->done[p] = hi <= lo; /* nothing (left) to read */
    }
    return 0;
}

static int readers_done(const treader_t *rs, int nr) {
    for (int i = 0; i < nr; i++)
        for (int32_t p = 0; p < rs[i].nparts; p++)
            if (!rs[i].done[p])
                return 0;
    return 1;
}

/* Reads the readers' topics from the beginning: bounded to their end
 * offsets, or until *stop. */
static int read_topics(comp_t *c, treader_t *rs, int nr, int bounded) {
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(16);
    for (int i = 0; i < nr; i++)
        for (int32_t p = 0; p < rs[i].nparts; p++)
            if (!rs[i].done[p])
                rd_kafka_topic_partition_list_add(l, rs[i].topic, p)->offset =
                    RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_resp_err_t err = l->cnt ? rd_kafka_assign(c->consumer, l) : 0;
    rd_kafka_topic_partition_list_destroy(l);
    if (err)
        return fail(c, ENGAGE_ERR_KAFKA, "assign: %s", rd_kafka_err2str(err));

    while (!c->fatal && !*c->stop && !(bounded && readers_done(rs, nr))) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(c->consumer, POLL_MS);
        rd_kafka_poll(c->producer, 0);
        if (c->delivery_failed)
            fail(c, ENGAGE_ERR_KAFKA, "a SessionMetrics record could not be delivered");
        if (!m)
            continue;
        treader_t *r = NULL;
        if (m->rkt) {
            const char *t = rd_kafka_topic_name(m->rkt);
            for (int i = 0; i < nr && !r; i++)
                if (!strcmp(t, rs[i].topic))
                    r = &rs[i];
        }
        int known = r && m->partition >= 0 && m->partition < r->nparts;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* under read_committed an EOF below the end means an open
             * transaction: its outcome is still to come */
            if (known && bounded && m->offset >= r->end[m->partition])
                r->done[m->partition] = 1;
        } else if (m->err) {
            if (m->err == RD_KAFKA_RESP_ERR__FATAL ||
                m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                m->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
                m->err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
                fail(c, ENGAGE_ERR_KAFKA, "consumer: %s", rd_kafka_message_errstr(m));
            else
                LOG_WARN("consumer: %s", rd_kafka_message_errstr(m));
        } else if (known) {
            int32_t p = m->partition;
            if (bounded && m->offset >= r->end[p]) {
                r->done[p] = 1; /* produced after we started: not ours */
            } else {
                r->handle(c, m);
                if (bounded && m->offset + 1 >= r->end[p])
                    r->done[p] = 1;
            }
        }
        rd_kafka_message_destroy(m);
    }
    rd_kafka_assign(c->consumer, NULL);
    return c->fatal ? -1 : 0;
}

static int cmp_res(const void *a, const void *b) {
    int32_t x = ((const engage_session_metrics_rec_t *)a)->day;
    int32_t y = ((const engage_session_metrics_rec_t *)b)->day;
    return (x > y) - (x < y);
}

/* Bounded runs: every day in range that is neither complete nor emittable.
 * With both ends of the range given, a day without any record counts too.
 * Returns the number of such days. */
static int64_t report_incomplete(comp_t *c, char *first, size_t first_size) {
    int64_t bad = 0;
    size_t used = 0;
    char date[16], line[256];
    first[0] = '\0';
#define REPORT(...)                                                                    \
    do {                                                                               \
        snprintf(line, sizeof(line), __VA_ARGS__);                                     \
        if (bad < MAX_REPORTED_DAYS)                                                   \
            LOG_ERROR("incomplete day %s", line);                                      \
        if (bad < 3 && used + strlen(line) + 3 < first_size)                           \
            used += (size_t)snprintf(first + used, first_size - used, "%s%s",          \
                                     bad ? "; " : "", line);                           \
        bad++;                                                                         \
    } while (0)
    const engage_compact_opts_t *o = c->opts;
    int explicit_range = o->from_day != INT32_MIN && o->to_day != INT32_MAX;
    size_t di = 0;
    for (int64_t day = explicit_range ? o->from_day : INT64_MAX;
         explicit_range && day <= o->to_day; day++) {
        while (di < c->ndays && c->days[di]->day < day)
            di++;
        if (done_has(c, (int32_t)day) || (di < c->ndays && c->days[di]->day == day))
            continue;
        REPORT("%s: no sessions and no DailyMetrics record",
               engage_day_format((int32_t)day, date, sizeof(date)));
    }
    for (size_t i = 0; i < c->ndays; i++) {
        pday_t *d = c->days[i];
        engage_day_format(d->day, date, sizeof(date));
        if (!d->have_daily)
            REPORT("%s: %zu session(s) but no DailyMetrics record", date, d->n);
        else
            REPORT("%s: %zu of %" PRId64 " sessions", date, d->n, d->expected);
    }
#undef REPORT
    if (bad > MAX_REPORTED_DAYS)
        LOG_ERROR("... and %" PRId64 " more incomplete days", bad - MAX_REPORTED_DAYS);
    return bad;
}

void engage_compact_opts_default(engage_compact_opts_t *opts) {
    memset(opts, 0, sizeof(*opts));
    opts->from_day = INT32_MIN;
    opts->to_day = INT32_MAX;
}

engage_err_t engage_compactor_run(const engage_conf_t *conf, const engage_compact_opts_t *opts,
                                  volatile sig_atomic_t *stop, engage_compact_stats_t *stats,
                                  char *errstr, size_t errstr_size) {
    static volatile sig_atomic_t never;
    engage_compact_opts_t defaults;
    comp_t C, *c = &C;
    treader_t rs[2];
    engage_err_t ret = ENGAGE_ERR_OK;
    memset(c, 0, sizeof(*c));
    memset(rs, 0, sizeof(rs));
    if (!opts) {
        engage_compact_opts_default(&defaults);
        opts = &defaults;
    }
    c->conf = conf;
    c->opts = opts;
    c->stop = stop ? stop : &never;
    if (opts->from_day > opts->to_day) {
        ret = engage_seterr(ENGAGE_ERR_CONFIG, errstr, errstr_size,
                            "empty date range (from is after to)");
        goto out;
    }
    if (setup(c))
        goto out;

    if (!opts->bounded) {
        /* which days are out already: read the output topic to its end */
        treader_t known;
        if (reader_init(c, &known, conf->topic_session_metrics, 1, on_known) == 0)
            read_topics(c, &known, 1, 1);
        reader_free(&known);
        if (c->fatal)
            goto out;
        LOG_INFO("%s holds %" PRId64 " day(s) already; following %s and %s",
                 conf->topic_session_metrics, c->st.days_known, conf->topic_sessions,
                 conf->topic_daily);
    }
    if (reader_init(c, &rs[0], conf->topic_sessions, opts->bounded, on_session) ||
        reader_init(c, &rs[1], conf->topic_daily, opts->bounded, on_daily))
        goto out;
    if (read_topics(c, rs, 2, opts->bounded))
        goto out;

    if (opts->bounded && *c->stop) {
        ret = engage_seterr(ENGAGE_ERR_INCOMPLETE, errstr, errstr_size,
                            "stopped before the end offsets were reached; nothing emitted");
    } else if (opts->bounded) {
        char first[512];
        c->st.days_incomplete = report_incomplete(c, first, sizeof(first));
        qsort(c->results, c->nres, sizeof(*c->results), cmp_res);
        for (size_t i = 0; i < c->nres && !c->fatal; i++)
            emit(c, &c->results[i]);
        if (c->st.days_incomplete && !c->fatal)
            ret = engage_seterr(ENGAGE_ERR_INCOMPLETE, errstr, errstr_size,
                                "%" PRId64 " day(s) in range incomplete: %s%s",
                                c->st.days_incomplete, first,
                                c->st.days_incomplete > 3 ? "; ..." : "");
    }

out:
    if (c->producer) {
        while (!c->fatal && rd_kafka_outq_len(c->producer) > 0) {
            rd_kafka_resp_err_t err = rd_kafka_flush(c->producer, 10000);
            if (err == RD_KAFKA_RESP_ERR__TIMED_OUT)
                LOG_WARN("still waiting for %d SessionMetrics records to be delivered",
                         rd_kafka_outq_len(c->producer));
            else if (err)
                fail(c, ENGAGE_ERR_KAFKA, "flush: %s", rd_kafka_err2str(err));
        }
        if (c->delivery_failed)
            fail(c, ENGAGE_ERR_KAFKA, "a SessionMetrics record could not be delivered");
    }
    if (c->fatal)
        ret = engage_seterr((engage_err_t)c->fatal, errstr, errstr_size, "%s", c->errmsg);
    if (stats)
        *stats = c->st;
    reader_free(&rs[0]);
    reader_free(&rs[1]);
    if (c->consumer) {
        rd_kafka_consumer_close(c->consumer);
        rd_kafka_destroy(c->consumer);
    }
    if (c->producer)
        rd_kafka_destroy(c->producer);
    engage_encoder_destroy(c->enc);
    for (size_t i = 0; i < c->ndays; i++)
        pday_free(c->days[i]);
    free(c->days);
    free(c->done);
    free(c->results);
    return ret;
}

/* ---- `engage compact` ---------------------------------------------------------- */

static volatile sig_atomic_t compact_stop;
static void on_signal(int sig) {
    (void)sig;
    compact_stop = 1;
}

static void usage(FILE *fp) {
    fprintf(fp,
            "usage: engage compact [-c FILE] [-X key=value]... [-b BROKERS]\n"
            "                      [--from YYYY-MM-DD] [--to YYYY-MM-DD] [--until-end]\n"
            "Computes exact per-day IQR session metrics from the sessions and daily-metrics\n"
            "topics and produces them to topic.session_metrics (docs/COMPACTOR.md).\n"
            "With --until-end or a date range: reads both topics up to their end offsets at\n"
            "start, emits every complete day in range in date order, exits 1 if a day in\n"
            "range is incomplete. Otherwise runs until SIGTERM, skipping days the output\n"
            "topic already holds and emitting each day as it completes.\n");
}

int engage_cmd_compact(int argc, char **argv) {
    char errstr[1024];
    engage_conf_t *conf = engage_conf_new();
    engage_compact_opts_t opts;
    engage_compact_opts_default(&opts);
    int rest_argc = 0, rc = 2;
    char **rest = NULL;
    if (engage_cli_common(conf, argc, argv, &rest_argc, &rest, errstr, sizeof(errstr))) {
        fprintf(stderr, "engage compact: %s\n", errstr);
        goto out;
    }
    for (int i = 1; i < rest_argc; i++) {
        const char *a = rest[i];
        if (!strcmp(a, "--until-end")) {
            opts.bounded = 1;
        } else if ((!strcmp(a, "--from") || !strcmp(a, "--to")) && i + 1 < rest_argc) {
            int32_t *dst = !strcmp(a, "--from") ? &opts.from_day : &opts.to_day;
            if (engage_day_parse(rest[++i], dst)) {
                fprintf(stderr, "engage compact: %s: bad date \"%s\" (want YYYY-MM-DD)\n", a,
                        rest[i]);
                goto out;
            }
            opts.bounded = 1;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            rc = 0;
            goto out;
        } else {
            fprintf(stderr, "engage compact: unknown argument %s\n", a);
            usage(stderr);
            goto out;
        }
    }
    if (opts.from_day > opts.to_day) {
        fprintf(stderr, "engage compact: --from is after --to\n");
        goto out;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    engage_compact_stats_t st;
    engage_err_t err = engage_compactor_run(conf, &opts, &compact_stop, &st, errstr,
                                            sizeof(errstr));
    fprintf(stderr,
            "engage compact: %" PRId64 " day(s) emitted to %s; read %" PRId64
            " sessions (%" PRId64 " duplicates) and %" PRId64 " daily records\n",
            st.days_emitted, conf->topic_session_metrics, st.sessions_read, st.duplicates,
            st.daily_read);
    if (err) {
        fprintf(stderr, "engage compact: %s\n", errstr);
        rc = 1;
        goto out;
    }
    rc = 0;
out:
    free(rest);
    engage_conf_destroy(conf);
    return rc;
}
