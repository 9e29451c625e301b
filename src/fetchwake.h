/*
 * fetchwake.h - keeps a librdkafka 2.0.x consumer fetching while the
 * application drains its queue.
 *
 * librdkafka before 2.2 stops fetching a partition once the consumer's
 * local queue holds queued.min.messages messages (or queued.max.messages.
 * kbytes), and its broker thread looks again only when something wakes it,
 * at the latest after one second (librdkafka issue #2879; 2.2 added
 * fetch.queue.backoff.ms for it). A consumer that processes more than
 * queued.min.messages records a second therefore drains the queue and then
 * waits for the rest of that second: at the default 100,000 messages this
 * capped `engage run` at ~130k records/s, idle half the time. Raising
 * queued.min.messages helps at ~330 bytes of memory per queued message.
 *
 * The waker instead wakes the broker threads when the queue has drained
 * below half of queued.min.messages after having been (nearly) full: a
 * helper thread sends a ListOffsets request (rd_kafka_query_watermark_
 * offsets) for the assigned partitions of the input topic, which every
 * broker thread leading one of them serves, re-checking its fetch queue and
 * fetching again. It only ever asks for watermarks; it changes no consumer
 * state, and wakes nothing while the consumer is caught up (the queue never
 * fills). Disable with fetch.wakeup=false.
 */
#ifndef ENGAGE_FETCHWAKE_H
#define ENGAGE_FETCHWAKE_H

#include <stddef.h>
#include <stdint.h>

#include <librdkafka/rdkafka.h>

typedef struct engage_fetchwake engage_fetchwake_t;

/** Starts the waker for consumer rk, whose consumer queue (all fetched
 *  partitions forwarded to it) is q, for the assigned partitions of topic
 *  (copied). Reads queued.min.messages from rk's configuration. Returns the
 *  waker, or NULL if its thread could not be started (the consumer works as
 *  without it). rk and q stay the caller's; stop the waker with
 *  engage_fetchwake_stop() before destroying either. */
engage_fetchwake_t *engage_fetchwake_start(rd_kafka_t *rk, rd_kafka_queue_t *q,
                                           const char *topic);

/** Called by the consuming thread after each batch (cheap: one queue length
 *  read). Signals the helper thread when the queue has fallen below half of
 *  queued.min.messages since it was last at 90% or more. NULL is a no-op. */
void engage_fetchwake_check(engage_fetchwake_t *w);

/** Wake-ups sent so far (0 for NULL). */
int64_t engage_fetchwake_count(engage_fetchwake_t *w);

/** Stops and joins the helper thread (waits for a request in flight, at
 *  most a few seconds) and frees the waker. NULL is a no-op. */
void engage_fetchwake_stop(engage_fetchwake_t *w);

#endif
