/*
 * fetchwake.c - see fetchwake.h. One helper thread per consumer, idle on a
 * condition variable until the consuming thread signals it.
 */
#include "fetchwake.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* partitions asked per wake-up: enough to reach every leader of a typical
 * assignment, bounded so one wake-up stays a few round trips */
#define WAKE_MAX_PARTS 32
#define WAKE_TIMEOUT_MS 5000

struct engage_fetchwake {
    rd_kafka_t *rk;
    rd_kafka_queue_t *q;
    char *topic;
    size_t arm_len;  /* queue length that arms the waker (90% of min) */
    size_t wake_len; /* armed and below this: wake (50% of min) */
    int armed;       /* consuming thread only */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int pending, stop;
    int rr;          /* next partition index of the assignment to ask */
    int64_t wakes;   /* under mu */
};

static void wake_brokers(engage_fetchwake_t *w) {
    rd_kafka_topic_partition_list_t *a = NULL;
    if (rd_kafka_assignment(w->rk, &a) || !a)
        return;
    int n = 0;
    for (int k = 0; k < a->cnt && n < WAKE_MAX_PARTS; k++) {
        const rd_kafka_topic_partition_t *tp = &a->elems[(w->rr + k) % a->cnt];
        if (strcmp(tp->topic, w->topic) != 0)
            continue;
        int64_t lo, hi;
        /* the answer is not needed: the request itself wakes the leader's
         * broker thread, which then re-checks its fetch queue */
        (void)rd_kafka_query_watermark_offsets(w->rk, tp->topic, tp->partition, &lo, &hi,
                                               WAKE_TIMEOUT_MS);
        n++;
    }
    if (a->cnt > 0)
        w->rr = (w->rr + n) % a->cnt;
    rd_kafka_topic_partition_list_destroy(a);
}

static void *run(void *arg) {
    engage_fetchwake_t *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->pending && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop)
            break;
        w->pending = 0;
        w->wakes++;
        pthread_mutex_unlock(&w->mu);
        wake_brokers(w);
        pthread_mutex_lock(&w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

engage_fetchwake_t *engage_fetchwake_start(rd_kafka_t *rk, rd_kafka_queue_t *q,
                                           const char *topic) {
    char buf[64];
    size_t sz = sizeof(buf);
    long min_msgs = 100000; /* librdkafka's default */
    if (rd_kafka_conf_get(rd_kafka_conf(rk), "queued.min.messages", buf, &sz) ==
        RD_KAFKA_CONF_OK)
        min_msgs = strtol(buf, NULL, 10);
    if (min_msgs < 2)
        return NULL; /* nothing to wake for */
    engage_fetchwake_t *w = calloc(1, sizeof(*w));
    if (!w)
        return NULL;
    w->rk = rk;
    w->q = q;
    w->topic = strdup(topic);
    w->arm_len = (size_t)min_msgs / 10 * 9;
    w->wake_len = (size_t)min_msgs / 2;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (!w->topic || pthread_create(&w->thread, NULL, run, w) != 0) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w->topic);
        free(w);
        return NULL;
    }
    return w;
}

void engage_fetchwake_check(engage_fetchwake_t *w) {
    if (!w)
        return;
    size_t len = rd_kafka_queue_length(w->q);
    if (len >= w->arm_len) {
        w->armed = 1;
    } else if (w->armed && len < w->wake_len) {
        w->armed = 0;
        pthread_mutex_lock(&w->mu);
        w->pending = 1;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
    }
}

int64_t engage_fetchwake_count(engage_fetchwake_t *w) {
    if (!w)
        return 0;
    pthread_mutex_lock(&w->mu);
    int64_t n = w->wakes;
    pthread_mutex_unlock(&w->mu);
    return n;
}

void engage_fetchwake_stop(engage_fetchwake_t *w) {
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->topic);
    free(w);
}
