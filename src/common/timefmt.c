/* timefmt.c - UTC time formatting and strict parsing; see timefmt.h. */
#include "timefmt.h"

#include <stdbool.h>
#include <time.h>

/* Days since 1970-01-01 for a civil date (Howard Hinnant's algorithm). It is
 * exact for the proleptic Gregorian calendar and needs no timezone state,
 * unlike timegm(). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    const int64_t era = (y >= 0 ? y : y - 399) / 400;
    const int64_t yoe = y - era * 400;
    const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const int64_t doe = z - era * 146097;
    const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

void ferry_time_split(int64_t t, ferry_tm *out)
{
    int64_t days = t / 86400;
    int64_t secs = t % 86400;
    if (secs < 0) {
        secs += 86400;
        days -= 1;
    }
    civil_from_days(days, &out->year, &out->month, &out->day);
    out->hour = (int)(secs / 3600);
    out->minute = (int)(secs / 60 % 60);
    out->second = (int)(secs % 60);
}

int64_t ferry_time_join(const ferry_tm *tm)
{
    return days_from_civil(tm->year, tm->month, tm->day) * 86400 + tm->hour * 3600 +
           tm->minute * 60 + tm->second;
}

/* Writes v as exactly n decimal digits (the fields are range-checked by
 * construction: ferry_time_split never yields out-of-range values). */
static char *put_digits(char *out, int v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        out[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return out + n;
}

static void format_time(int64_t t, char *out, bool separators, bool with_time)
{
    ferry_tm tm;
    ferry_time_split(t, &tm);
    char *p = put_digits(out, tm.year % 10000, 4);
    if (separators)
        *p++ = '-';
    p = put_digits(p, tm.month, 2);
    if (separators)
        *p++ = '-';
    p = put_digits(p, tm.day, 2);
    if (with_time) {
        *p++ = 'T';
        p = put_digits(p, tm.hour, 2);
        if (separators)
            *p++ = ':';
        p = put_digits(p, tm.minute, 2);
        if (separators)
            *p++ = ':';
        p = put_digits(p, tm.second, 2);
        *p++ = 'Z';
    }
    *p = '\0';
}

void ferry_time_iso8601(int64_t t, char out[FERRY_ISO8601_LEN + 1])
{
    format_time(t, out, true, true);
}

void ferry_time_amz_datetime(int64_t t, char out[FERRY_AMZ_DATETIME_LEN + 1])
{
    format_time(t, out, false, true);
}

void ferry_time_amz_date(int64_t t, char out[FERRY_AMZ_DATE_LEN + 1])
{
    format_time(t, out, false, false);
}

/* Reads exactly n decimal digits. */
static int read_digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return 0;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 1;
}

static int expect(const char **p, char c)
{
    if (**p != c)
        return 0;
    (*p)++;
    return 1;
}

static int is_leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static ferry_err check_fields(const ferry_tm *tm, int64_t *out)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (tm->year < 1970 || tm->month < 1 || tm->month > 12 || tm->day < 1)
        return FERRY_ERR_INVALID;
    int dim = mdays[tm->month - 1] + (tm->month == 2 && is_leap(tm->year));
    if (tm->day > dim || tm->hour > 23 || tm->minute > 59 || tm->second > 59)
        return FERRY_ERR_INVALID;
    *out = ferry_time_join(tm);
    return FERRY_OK;
}

ferry_err ferry_time_parse_amz_datetime(const char *s, int64_t *out)
{
    ferry_tm tm;
    const char *p = s;
    if (!read_digits(&p, 4, &tm.year) || !read_digits(&p, 2, &tm.month) ||
        !read_digits(&p, 2, &tm.day) || !expect(&p, 'T') || !read_digits(&p, 2, &tm.hour) ||
        !read_digits(&p, 2, &tm.minute) || !read_digits(&p, 2, &tm.second) || !expect(&p, 'Z') ||
        *p != '\0')
        return FERRY_ERR_INVALID;
    return check_fields(&tm, out);
}

ferry_err ferry_time_parse_iso8601(const char *s, int64_t *out)
{
    ferry_tm tm;
    const char *p = s;
    if (!read_digits(&p, 4, &tm.year) || !expect(&p, '-') || !read_digits(&p, 2, &tm.month) ||
        !expect(&p, '-') || !read_digits(&p, 2, &tm.day) || !expect(&p, 'T') ||
        !read_digits(&p, 2, &tm.hour) || !expect(&p, ':') || !read_digits(&p, 2, &tm.minute) ||
        !expect(&p, ':') || !read_digits(&p, 2, &tm.second))
        return FERRY_ERR_INVALID;
    if (*p == '.') {
        p++;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && digits < 9) {
            p++;
            digits++;
        }
        if (digits == 0)
            return FERRY_ERR_INVALID;
    }
    if (!expect(&p, 'Z') || *p != '\0')
        return FERRY_ERR_INVALID;
    return check_fields(&tm, out);
}

int64_t ferry_time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec;
}

struct timespec ferry_time_mono_deadline(int64_t ns)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (ns < 0)
        ns = 0;
    t.tv_sec += (time_t)(ns / 1000000000);
    t.tv_nsec += (long)(ns % 1000000000);
    if (t.tv_nsec >= 1000000000L) {
        t.tv_sec++;
        t.tv_nsec -= 1000000000L;
    }
    return t;
}

int64_t ferry_time_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
