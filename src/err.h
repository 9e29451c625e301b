/*
 * err.h - the one error type of engage.
 *
 * Every fallible call returns an engage_err_t and, where a message helps,
 * fills a caller-supplied `char *errstr, size_t errstr_size` buffer.
 * The enum, its human text and the dead-letter reason names are generated
 * from one X-macro table so they never drift apart (libuv's habit).
 */
#ifndef ENGAGE_ERR_H
#define ENGAGE_ERR_H

#include <stddef.h>

/* X(NAME, "human description", "dead-letter reason header value or NULL") */
#define ENGAGE_ERRORS(X)                                                       \
    X(OK, "success", NULL)                                                     \
    X(INVALID_ARG, "invalid argument", NULL)                                   \
    X(NOMEM, "out of memory", NULL)                                            \
    X(CONFIG, "configuration error", NULL)                                     \
    X(IO, "I/O error", NULL)                                                   \
    X(STATE, "state store error", NULL)                                        \
    X(CORRUPT, "corrupt data", NULL)                                           \
    X(KAFKA, "Kafka error", NULL)                                              \
    X(NOT_FOUND, "not found", NULL)                                            \
    X(BAD_FRAMING, "bad framing or magic byte", "bad_framing")                 \
    X(UNKNOWN_SCHEMA, "unknown schema id", "unknown_schema_id")                \
    X(BAD_AVRO, "undecodable Avro", "undecodable_avro")                        \
    X(BAD_USER_ID, "empty user id or user id over the size limit",             \
      "bad_user_id")                                                           \
    X(KEY_MISMATCH, "record key differs from user id", "key_mismatch")         \
    X(TS_RANGE, "timestamp out of range", "timestamp_out_of_range")            \
    X(INCOMPLETE, "input incomplete", NULL)

typedef enum {
#define ENGAGE_ERR_ENUM_(name, desc, reason) ENGAGE_ERR_##name,
    ENGAGE_ERRORS(ENGAGE_ERR_ENUM_)
#undef ENGAGE_ERR_ENUM_
        ENGAGE_ERR__COUNT
} engage_err_t;

/** Returns a static human-readable description of err; never NULL. */
const char *engage_err2str(engage_err_t err);

/** Returns the static enum name without prefix ("BAD_AVRO"); never NULL. */
const char *engage_err_name(engage_err_t err);

/** Returns the static dead-letter reason ("undecodable_avro") for input
 *  validation errors, or NULL for errors that are not dead-letter reasons. */
const char *engage_err_dl_reason(engage_err_t err);

/** snprintf into errstr if errstr != NULL && errstr_size > 0. Returns err so
 *  callers can write `return engage_seterr(ERR, errstr, n, "fmt", ...)`. */
engage_err_t engage_seterr(engage_err_t err, char *errstr, size_t errstr_size,
                           const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
