/*
 * codec.h - Avro encoding and decoding (the only module that touches avro-c).
 *
 * Input: engage.v1.UserAction records, in the Confluent wire format (byte 0
 * magic 0x00, bytes 1-4 big-endian schema id, then the Avro binary datum) or
 * plain Avro binary. Writer schemas are looked up by id from configuration
 * ("ID=path,ID=path"); each is resolved against the reader schema compiled in
 * from schemas/user_action.avsc, so records written with a compatible evolved
 * schema (a field added with a default, an optional field removed) decode.
 *
 * Output: Session, DailyMetrics, DayPartial and SessionMetrics records
 * (schemas/<name>.avsc, compiled in), deterministic bytes for deterministic
 * input. Session, DailyMetrics, DayPartial and SessionMetrics values can be
 * decoded again (the aggregator and the compactor read them back).
 *
 * avro-c reference counting stays inside codec.c.
 */
#ifndef ENGAGE_CODEC_H
#define ENGAGE_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "err.h"

/* ---- input ------------------------------------------------------------ */

/** A decoded UserAction. String pointers are views, not NUL-terminated
 *  (use the lengths; a string may hold NUL bytes), into either the caller's
 *  input buffer (the zero-copy path, see engage_decoder_decode()) or
 *  decoder-owned memory. Treat them as valid only until the next decode call
 *  on the same decoder (or its destruction) AND while the input buffer
 *  passed to that decode is alive and unchanged. platform/app_version are
 *  NULL when null; other strings are never NULL after a successful decode. */
typedef struct engage_action {
    const char *event_id;
    size_t event_id_len;
    const char *user_id;
    size_t user_id_len;
    int64_t ts_ms;
    const char *action;
    size_t action_len;
    const char *platform;
    size_t platform_len;
    const char *app_version;
    size_t app_version_len;
} engage_action_t;

typedef struct engage_decoder engage_decoder_t;

/** Creates a UserAction decoder.
 *  confluent: 1 = Confluent framing, schemas from schema_map
 *             ("1=schemas/user_action.avsc,7=/etc/engage/v2.avsc");
 *  0 = plain Avro written with the schema in plain_schema_path.
 *  Every writer schema is parsed and resolved against the reader schema now;
 *  a file that is missing or not compatible is an error.
 *  Returns NULL on failure with a message in errstr. Free with
 *  engage_decoder_destroy(). */
engage_decoder_t *engage_decoder_new(int confluent, const char *schema_map,
                                     const char *plain_schema_path, char *errstr,
                                     size_t errstr_size);

/** Decodes one record value into *out (cleared on failure).
 *  Returns OK, or BAD_FRAMING (too short / wrong magic byte), UNKNOWN_SCHEMA
 *  (id not configured), BAD_AVRO (datum does not decode, or bytes left over),
 *  with a message in errstr. Never crashes on arbitrary input.
 *  A record whose writer schema is field for field the compiled-in reader
 *  schema (names, order and types, as schemas/user_action.avsc) is decoded
 *  in one pass without allocating, its string views pointing into buf; other
 *  (evolved) writer schemas go through avro-c's schema resolution and their
 *  views point into decoder memory. Both give the same results and errors. */
engage_err_t engage_decoder_decode(engage_decoder_t *dec, const void *buf, size_t len,
                                   engage_action_t *out, char *errstr, size_t errstr_size);

/** Switches the zero-copy path of engage_decoder_decode() on (the default)
 *  or off (every record through avro-c), for tests and benchmarks that
 *  compare the two. NULL dec is ignored. */
void engage_decoder_set_fast_path(engage_decoder_t *dec, int on);

/** Frees dec; NULL allowed. */
void engage_decoder_destroy(engage_decoder_t *dec);

/** Returns the first schema id of the decoder's schema map (the default
 *  writer for `engage produce` when an event names no schema_id), or 0 for a
 *  plain-Avro decoder (which has one schema and ignores ids). */
int32_t engage_decoder_default_schema_id(const engage_decoder_t *dec);

/** Encodes an event given as a JSON object text (field names of the writer
 *  schema with id `schema_id` from schema_map; missing optional fields take
 *  their defaults; unknown JSON members ignored) into a malloc'd buffer in
 *  Confluent framing (confluent=1) or plain Avro. Used by `engage produce`.
 *  Returns OK and sets *buf (caller frees with free()) and *len, or an error
 *  with errstr. */
engage_err_t engage_codec_encode_action_json(engage_decoder_t *dec, int confluent,
                                             int32_t schema_id, const char *json,
                                             void **buf, size_t *len, char *errstr,
                                             size_t errstr_size);

/* ---- output ----------------------------------------------------------- */

/** A closed session (schemas/session.avsc). */
typedef struct engage_session_rec {
    const char *session_id; /* NUL-terminated */
    const char *user_id;    /* not NUL-terminated */
    size_t user_id_len;
    int64_t start_ms;
    int64_t end_ms;
    int64_t duration_ms;
    int32_t actions;
    int32_t day; /* UTC day number of start; encoded as date string too */
} engage_session_rec_t;

/** Daily metrics (schemas/daily_metrics.avsc). IQR fields are encoded as
 *  null unless has_iqr is set (the compactor fills them). */
typedef struct engage_daily_rec {
    int32_t day;
    int64_t dau, wau, mau;
    int64_t sessions, session_users;
    double avg_duration_ms;     /* 0 when sessions == 0 */
    double actions_per_session; /* 0 when sessions == 0 */
    int has_iqr;
    double duration_q1, duration_q3, actions_q1, actions_q3;
    double duration_lower_fence, duration_upper_fence;
    double actions_lower_fence, actions_upper_fence;
    int64_t valid_sessions, valid_users;
    double valid_avg_duration_ms, valid_actions_per_session;
    int64_t duration_outliers, actions_outliers;
} engage_daily_rec_t;

/** One input partition's contribution to a day (schemas/day_partial.avsc),
 *  sent through the internal partials topic. is_end marks the end-of-input
 *  marker of a bounded run (day is then ignored). */
typedef struct engage_partial_rec {
    int32_t day;
    int32_t partition;
    int32_t partition_count;
    int64_t dau, wau, mau;
    int64_t sessions, session_users;
    int64_t sum_duration_ms, sum_actions;
    int32_t max_event_day; /* largest event day this partition has seen */
    int32_t is_end;
} engage_partial_rec_t;

/** IQR-filtered session metrics of one day (schemas/session_metrics.avsc),
 *  written by the compactor. The eight quartile and fence fields are encoded
 *  as null unless has_quartiles is set (it is 0 for a day without sessions). */
typedef struct engage_session_metrics_rec {
    int32_t day;
    int64_t sessions;
    int has_quartiles;
    double duration_q1, duration_q3, actions_q1, actions_q3;
    double duration_lower_fence, duration_upper_fence;
    double actions_lower_fence, actions_upper_fence;
    int64_t valid_sessions, valid_users;
    double valid_avg_duration_ms, valid_actions_per_session;
    int64_t duration_outliers, actions_outliers;
    double iqr_multiplier;
} engage_session_metrics_rec_t;

typedef struct engage_encoder engage_encoder_t;

/** Creates an encoder for the output records. confluent=1 prefixes each
 *  value with magic 0 and the given schema id (SessionMetrics values get
 *  104, the default of output.schema.id.session_metrics, until
 *  engage_encoder_set_schema_id() says otherwise). Returns NULL on failure
 *  (errstr). Free with engage_encoder_destroy(). */
engage_encoder_t *engage_encoder_new(int confluent, int32_t session_schema_id,
                                     int32_t daily_schema_id, int32_t partial_schema_id,
                                     char *errstr, size_t errstr_size);
void engage_encoder_destroy(engage_encoder_t *enc);

/** Encode functions: on OK, *buf and *len point into encoder-owned memory valid
 *  until the next encode call on the same encoder (copy or produce with
 *  RD_KAFKA_MSG_F_COPY). Output bytes depend only on the record. */
engage_err_t engage_encode_session(engage_encoder_t *enc, const engage_session_rec_t *r,
                                   const void **buf, size_t *len);
/** The same bytes as engage_encode_session(), built through avro-c's value
 *  API: the reference the direct encoder is tested against. */
engage_err_t engage_encode_session_generic(engage_encoder_t *enc, const engage_session_rec_t *r,
                                           const void **buf, size_t *len);
engage_err_t engage_encode_daily(engage_encoder_t *enc, const engage_daily_rec_t *r,
                                 const void **buf, size_t *len);
engage_err_t engage_encode_partial(engage_encoder_t *enc, const engage_partial_rec_t *r,
                                   const void **buf, size_t *len);
engage_err_t engage_encode_session_metrics(engage_encoder_t *enc,
                                           const engage_session_metrics_rec_t *r,
                                           const void **buf, size_t *len);

/** Decodes a DayPartial value produced by engage_encode_partial (same
 *  framing setting). Returns OK, BAD_FRAMING or BAD_AVRO. */
engage_err_t engage_decode_partial(engage_encoder_t *enc, const void *buf, size_t len,
                                   engage_partial_rec_t *out);

/** Which output schema a value holds, for `engage dump`. */
typedef enum {
    ENGAGE_KIND_USER_ACTION,
    ENGAGE_KIND_SESSION,
    ENGAGE_KIND_DAILY,
    ENGAGE_KIND_PARTIAL,
    ENGAGE_KIND_SESSION_METRICS
} engage_kind_t;

/** Sets the Confluent schema id written in front of values of an output
 *  kind (SESSION, DAILY, PARTIAL or SESSION_METRICS). Returns OK or
 *  INVALID_ARG (another kind, or a negative id). */
engage_err_t engage_encoder_set_schema_id(engage_encoder_t *enc, engage_kind_t kind,
                                          int32_t id);

/** Decodes a Session value (same framing setting as the encoder; the schema
 *  id is not checked). session_id is NUL-terminated, user_id is not (use
 *  user_id_len); both point into encoder-owned memory valid until the next
 *  decode on enc. day is parsed from the record's date. Returns OK,
 *  BAD_FRAMING or BAD_AVRO (also for a date that is not YYYY-MM-DD). */
engage_err_t engage_decode_session(engage_encoder_t *enc, const void *buf, size_t len,
                                   engage_session_rec_t *out);

/** Decodes a DailyMetrics value; has_iqr is set when the IQR fields are
 *  present (non-null). Returns OK, BAD_FRAMING or BAD_AVRO. */
engage_err_t engage_decode_daily(engage_encoder_t *enc, const void *buf, size_t len,
                                 engage_daily_rec_t *out);

/** Decodes a SessionMetrics value. Returns OK, BAD_FRAMING or BAD_AVRO. */
engage_err_t engage_decode_session_metrics(engage_encoder_t *enc, const void *buf, size_t len,
                                           engage_session_metrics_rec_t *out);

/** Renders a value of the given kind as a compact JSON object (Avro field
 *  names; null unions as JSON null, not wrapped). For USER_ACTION the decoder
 *  `dec` is used (may be NULL for other kinds); for the others the encoder
 *  `enc`'s framing setting applies. Returns OK with *json malloc'd (caller
 *  frees), or an error with errstr. */
/*  Rendering details: fields in schema order; doubles with 17 significant
 *  digits (NaN and infinities, which JSON lacks, as null); strings that are
 *  not valid UTF-8 get U+FFFD for each offending byte (NUL bytes stay, as
 *  \u0000); a USER_ACTION shows the reader schema's fields, with the reader
 *  default for fields its writer schema lacks. For USER_ACTION this is a
 *  decode on `dec`: views from an earlier engage_decoder_decode() on the
 *  same decoder become invalid. The schema id in the framing of output kinds
 *  is not checked (their schemas are compiled in). */
engage_err_t engage_codec_to_json(engage_decoder_t *dec, engage_encoder_t *enc,
                                  engage_kind_t kind, const void *buf, size_t len,
                                  char **json, char *errstr, size_t errstr_size);

/** Avro binary writers for hand-built records (the Session encoder, the
 *  generator's payloads): a long or int as a zig-zag varint (at most 10
 *  bytes), a string as its length then its bytes. Write at p, which must
 *  have room; return the byte after what was written. */
static inline unsigned char *engage_avro_put_long(unsigned char *p, int64_t v) {
    uint64_t z = ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
    while (z > 0x7f) {
        *p++ = (unsigned char)((z & 0x7f) | 0x80);
        z >>= 7;
    }
    *p++ = (unsigned char)z;
    return p;
}

static inline unsigned char *engage_avro_put_string(unsigned char *p, const char *s, size_t n) {
    p = engage_avro_put_long(p, (int64_t)n);
    if (n)
        memcpy(p, s, n);
    return p + n;
}

#endif
