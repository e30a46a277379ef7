/*
 * timefmt.h - UTC time formatting and strict parsing.
 *
 * All times are UTC seconds since the epoch (int64_t). The formats are the
 * ones Ferry's protocols use: ISO 8601 ("2026-11-25T12:45:00Z", in grants,
 * receipts and POST policies) and AWS's basic format ("20261125T124500Z" in
 * X-Amz-Date, "20261125" in credential scopes). Parsers accept exactly the
 * format and nothing around it, and check every field's range.
 */
#ifndef FERRY_COMMON_TIMEFMT_H
#define FERRY_COMMON_TIMEFMT_H

#include <stdint.h>
#include <time.h>

#include "ferry/ferry_error.h"

#define FERRY_ISO8601_LEN      20 /* "YYYY-MM-DDTHH:MM:SSZ" */
#define FERRY_AMZ_DATETIME_LEN 16 /* "YYYYMMDDTHHMMSSZ" */
#define FERRY_AMZ_DATE_LEN     8  /* "YYYYMMDD" */

typedef struct ferry_tm {
    int year, month, day, hour, minute, second;
} ferry_tm;

/* Broken-down UTC time; valid for years 1970..9999. */
void ferry_time_split(int64_t t, ferry_tm *out);
/* Seconds since the epoch for a UTC date; fields must already be in range. */
int64_t ferry_time_join(const ferry_tm *tm);

/* Formatters write exactly *_LEN characters plus a NUL. */
void ferry_time_iso8601(int64_t t, char out[FERRY_ISO8601_LEN + 1]);
void ferry_time_amz_datetime(int64_t t, char out[FERRY_AMZ_DATETIME_LEN + 1]);
void ferry_time_amz_date(int64_t t, char out[FERRY_AMZ_DATE_LEN + 1]);

/* "YYYYMMDDTHHMMSSZ" exactly. */
__attribute__((warn_unused_result)) ferry_err ferry_time_parse_amz_datetime(const char *s,
                                                                            int64_t *out);
/* "YYYY-MM-DDTHH:MM:SSZ", optionally with fractional seconds before the Z
 * ("…:00.000Z", as boto3 writes policy expirations); fractions are dropped. */
__attribute__((warn_unused_result)) ferry_err ferry_time_parse_iso8601(const char *s, int64_t *out);

/* Wall clock, UTC seconds; and a monotonic clock in nanoseconds. */
int64_t ferry_time_now(void);
int64_t ferry_time_mono_ns(void);
/* CLOCK_MONOTONIC now + ns (negative: now), as a timespec: the deadline of
 * a pthread_cond_timedwait on a condition set to that clock. */
struct timespec ferry_time_mono_deadline(int64_t ns);

#endif
