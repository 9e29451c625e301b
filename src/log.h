/*
 * log.h - minimal leveled logging to stderr.
 * Log lines are for operators; they never feed back into processing.
 */
#ifndef ENGAGE_LOG_H
#define ENGAGE_LOG_H

typedef enum { ENGAGE_LOG_DEBUG, ENGAGE_LOG_INFO, ENGAGE_LOG_WARN, ENGAGE_LOG_ERROR } engage_log_level_t;

/** Sets the minimum level printed (default INFO). */
void engage_log_set_level(engage_log_level_t lvl);

/** Prints "LEVEL engage: message" to stderr if lvl is enabled; with the
 *  environment variable ENGAGE_LOG_TIME set (not "0"), each line starts with
 *  the UTC wall-clock time "HH:MM:SS.mmm ". Returns nothing; owns nothing. */
void engage_log(engage_log_level_t lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_DEBUG(...) engage_log(ENGAGE_LOG_DEBUG, __VA_ARGS__)
#define LOG_INFO(...) engage_log(ENGAGE_LOG_INFO, __VA_ARGS__)
#define LOG_WARN(...) engage_log(ENGAGE_LOG_WARN, __VA_ARGS__)
#define LOG_ERROR(...) engage_log(ENGAGE_LOG_ERROR, __VA_ARGS__)

#endif
