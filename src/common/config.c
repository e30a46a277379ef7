/*
 * config.c - table-driven INI loader; see config.h.
 *
 * libinih does the INI syntax. Debian builds it without line numbers in the
 * handler, so the loader feeds it through ini_parse_stream() with a reader
 * that counts lines: inih reads one line, then calls the handler for it, so
 * the count is the line of the value being handled. The reader also refuses
 * lines longer than inih's buffer instead of letting them be split.
 */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_MAX_STRING 4096

typedef struct load_state {
    const ferry_cfg_table *table;
    void *target;
    const char *path;
    FILE *file;
    int line;
    int *set_on_line; /* per option: line where the file set it, 0 if not */
    bool line_too_long;
    ferry_cfg_section_fn on_unknown_section;
    void *ctx;
    char *err;
    size_t err_size;
    bool failed;
} load_state;

static void errf(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void errf(char *err, size_t err_size, const char *fmt, ...)
{
    if (err == NULL || err_size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

ferry_err ferry_parse_int(const char *s, int64_t *out)
{
    char *end;
    if (*s == '\0' || (*s != '-' && (*s < '0' || *s > '9')))
        return FERRY_ERR_INVALID;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return FERRY_ERR_RANGE;
    if (*end != '\0')
        return FERRY_ERR_INVALID;
    *out = (int64_t)v;
    return FERRY_OK;
}

/* Parses "<digits><suffix>" where suffix is looked up in units; a bare number
 * uses bare_multiplier. */
typedef struct unit {
    const char *suffix;
    int64_t multiplier;
} unit;

static ferry_err parse_with_units(const char *s, const unit *units, size_t n_units,
                                  int64_t bare_multiplier, int64_t *out)
{
    if (*s < '0' || *s > '9')
        return FERRY_ERR_INVALID;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE || v > INT64_MAX)
        return FERRY_ERR_RANGE;
    int64_t mult = 0;
    if (*end == '\0') {
        mult = bare_multiplier;
    } else {
        for (size_t i = 0; i < n_units; i++) {
            if (strcmp(end, units[i].suffix) == 0) {
                mult = units[i].multiplier;
                break;
            }
        }
        if (mult == 0)
            return FERRY_ERR_INVALID;
    }
    if ((int64_t)v > INT64_MAX / mult)
        return FERRY_ERR_RANGE;
    *out = (int64_t)v * mult;
    return FERRY_OK;
}

ferry_err ferry_parse_size(const char *s, int64_t *bytes)
{
    static const unit units[] = {
        {"B", 1},
        {"K", 1024},
        {"k", 1024},
        {"KiB", 1024},
        {"M", 1024 * 1024},
        {"MiB", 1024 * 1024},
        {"G", 1024LL * 1024 * 1024},
        {"GiB", 1024LL * 1024 * 1024},
        {"T", 1024LL * 1024 * 1024 * 1024},
        {"TiB", 1024LL * 1024 * 1024 * 1024},
    };
    return parse_with_units(s, units, sizeof units / sizeof units[0], 1, bytes);
}

ferry_err ferry_parse_duration_ms(const char *s, int64_t *ms)
{
    static const unit units[] = {
        {"ms", 1}, {"s", 1000}, {"m", 60 * 1000}, {"h", 3600 * 1000}, {"d", 86400 * 1000},
    };
    return parse_with_units(s, units, sizeof units / sizeof units[0], 1000, ms);
}

ferry_err ferry_parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return FERRY_OK;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return FERRY_OK;
        }
    }
    return FERRY_ERR_INVALID;
}

static const char *type_name(ferry_cfg_type type)
{
    switch (type) {
    case FERRY_CFG_STRING:
        return "string";
    case FERRY_CFG_INT:
        return "integer";
    case FERRY_CFG_BOOL:
        return "boolean";
    case FERRY_CFG_SIZE:
        return "size";
    case FERRY_CFG_DURATION:
        return "duration";
    case FERRY_CFG_ENUM:
        return "one of";
    }
    return "value";
}

static void format_bound(const ferry_cfg_option *opt, int64_t v, char *out, size_t out_size)
{
    if (opt->type == FERRY_CFG_DURATION && v % 1000 == 0)
        snprintf(out, out_size, "%" PRId64 "s", v / 1000);
    else if (opt->type == FERRY_CFG_DURATION)
        snprintf(out, out_size, "%" PRId64 "ms", v);
    else
        snprintf(out, out_size, "%" PRId64, v);
}

static int enum_index(const char *choices, const char *value)
{
    size_t vlen = strlen(value);
    int idx = 0;
    for (const char *p = choices; *p != '\0'; idx++) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == vlen && strncmp(p, value, len) == 0)
            return idx;
        if (bar == NULL)
            break;
        p = bar + 1;
    }
    return -1;
}

/* Converts value and stores it; on error writes "[section] name: reason". */
static ferry_err store_value(const ferry_cfg_option *opt, void *target, const char *value,
                             char *err, size_t err_size)
{
    char *field = (char *)target + opt->offset;
    const char *shown = (opt->flags & FERRY_CFG_SECRET) ? "(secret)" : value;
    int64_t n = 0;
    ferry_err e = FERRY_OK;

    switch (opt->type) {
    case FERRY_CFG_STRING: {
        size_t max = opt->max > 0 ? (size_t)opt->max : DEFAULT_MAX_STRING;
        size_t len = strlen(value);
        if (len > max) {
            errf(err, err_size, "[%s] %s: value is %zu bytes long, the limit is %zu", opt->section,
                 opt->name, len, max);
            return FERRY_ERR_RANGE;
        }
        if (opt->min > 0 && len < (size_t)opt->min) {
            errf(err, err_size, "[%s] %s: value must be at least %" PRId64 " bytes long",
                 opt->section, opt->name, opt->min);
            return FERRY_ERR_RANGE;
        }
        char *copy = strdup(value);
        if (copy == NULL)
            return FERRY_ERR_NOMEM;
        char **slot = (char **)(void *)field;
        free(*slot);
        *slot = copy;
        return FERRY_OK;
    }
    case FERRY_CFG_BOOL: {
        bool b;
        if (ferry_parse_bool(value, &b) != FERRY_OK) {
            errf(err, err_size, "[%s] %s: \"%s\" is not a boolean (true/false, yes/no, on/off)",
                 opt->section, opt->name, shown);
            return FERRY_ERR_INVALID;
        }
        *(bool *)(void *)field = b;
        return FERRY_OK;
    }
    case FERRY_CFG_ENUM: {
        int idx = enum_index(opt->choices, value);
        if (idx < 0) {
            errf(err, err_size, "[%s] %s: \"%s\" is not one of %s", opt->section, opt->name, shown,
                 opt->choices);
            return FERRY_ERR_INVALID;
        }
        *(int *)(void *)field = idx;
        return FERRY_OK;
    }
    case FERRY_CFG_INT:
        e = ferry_parse_int(value, &n);
        break;
    case FERRY_CFG_SIZE:
        e = ferry_parse_size(value, &n);
        break;
    case FERRY_CFG_DURATION:
        e = ferry_parse_duration_ms(value, &n);
        break;
    }
    if (e == FERRY_ERR_INVALID) {
        static const char *const hint[] = {
            [FERRY_CFG_INT] = "an integer",
            [FERRY_CFG_SIZE] = "a size (e.g. 512, 64K, 5M, 2G)",
            [FERRY_CFG_DURATION] = "a duration (e.g. 250ms, 30s, 15m, 1h, 7d)",
        };
        errf(err, err_size, "[%s] %s: \"%s\" is not %s", opt->section, opt->name, shown,
             hint[opt->type]);
        return e;
    }
    if (e != FERRY_OK || n < opt->min || n > opt->max) {
        char lo[32], hi[32];
        format_bound(opt, opt->min, lo, sizeof lo);
        format_bound(opt, opt->max, hi, sizeof hi);
        errf(err, err_size, "[%s] %s: \"%s\" is out of range (%s to %s)", opt->section, opt->name,
             shown, lo, hi);
        return FERRY_ERR_RANGE;
    }
    *(int64_t *)(void *)field = n;
    return FERRY_OK;
}

static const ferry_cfg_option *find_option(const ferry_cfg_table *table, const char *section,
                                           const char *name, size_t *index)
{
    for (size_t i = 0; i < table->count; i++) {
        const ferry_cfg_option *opt = &table->options[i];
        if (strcmp(opt->section, section) == 0 && strcmp(opt->name, name) == 0) {
            if (index)
                *index = i;
            return opt;
        }
    }
    return NULL;
}

static bool section_known(const ferry_cfg_table *table, const char *section)
{
    for (size_t i = 0; i < table->count; i++)
        if (strcmp(table->options[i].section, section) == 0)
            return true;
    return false;
}

ferry_err ferry_cfg_defaults(const ferry_cfg_table *table, void *target, char *err, size_t err_size)
{
    for (size_t i = 0; i < table->count; i++) {
        const ferry_cfg_option *opt = &table->options[i];
        if (opt->default_value == NULL)
            continue;
        ferry_err e = store_value(opt, target, opt->default_value, err, err_size);
        if (e)
            return e; /* a bug in the table, reported like a file error */
    }
    return FERRY_OK;
}

ferry_err ferry_cfg_set(const ferry_cfg_table *table, void *target, const char *section,
                        const char *name, const char *value, char *err, size_t err_size)
{
    const ferry_cfg_option *opt = find_option(table, section, name, NULL);
    if (opt == NULL) {
        errf(err, err_size, "[%s] %s: unknown option", section, name);
        return FERRY_ERR_CONFIG;
    }
    return store_value(opt, target, value, err, err_size);
}

static char *counting_reader(char *str, int num, void *stream)
{
    load_state *st = stream;
    char *line = fgets(str, num, st->file);
    if (line == NULL)
        return NULL;
    st->line++;
    size_t len = strlen(line);
    if (len > 0 && line[len - 1] != '\n' && !feof(st->file)) {
        /* The line did not fit in inih's buffer: refuse it rather than let
         * inih read the rest as another line. */
        st->line_too_long = true;
        return NULL;
    }
    return line;
}

static int on_value(void *user, const char *section, const char *name, const char *value)
{
    load_state *st = user;
    if (st->failed)
        return 0;
    char msg[512];
    size_t idx;
    const ferry_cfg_option *opt = find_option(st->table, section, name, &idx);
    if (opt == NULL) {
        if (!section_known(st->table, section) && st->on_unknown_section != NULL) {
            msg[0] = '\0';
            if (st->on_unknown_section(st->ctx, section, name, value, msg, sizeof msg) == 0)
                return 1;
        } else if (section_known(st->table, section)) {
            snprintf(msg, sizeof msg, "[%s] %s: unknown option", section, name);
        } else {
            snprintf(msg, sizeof msg, "[%s]: unknown section", section);
        }
        errf(st->err, st->err_size, "%s:%d: %s", st->path, st->line, msg);
        st->failed = true;
        return 0;
    }
    if (st->set_on_line[idx] != 0) {
        errf(st->err, st->err_size, "%s:%d: [%s] %s: set twice (first on line %d)", st->path,
             st->line, section, name, st->set_on_line[idx]);
        st->failed = true;
        return 0;
    }
    st->set_on_line[idx] = st->line;
    if (store_value(opt, st->target, value, msg, sizeof msg) != FERRY_OK) {
        errf(st->err, st->err_size, "%s:%d: %s", st->path, st->line, msg);
        st->failed = true;
        return 0;
    }
    return 1;
}

ferry_err ferry_cfg_load(const ferry_cfg_table *table, void *target, const char *path,
                         ferry_cfg_section_fn on_unknown_section, void *ctx, char *err,
                         size_t err_size)
{
    ferry_err result = FERRY_OK;
    load_state st = {
        .table = table,
        .target = target,
        .path = path,
        .on_unknown_section = on_unknown_section,
        .ctx = ctx,
        .err = err,
        .err_size = err_size,
    };
    char msg[512];

    if (ferry_cfg_defaults(table, target, msg, sizeof msg) != FERRY_OK) {
        errf(err, err_size, "built-in default: %s", msg);
        return FERRY_ERR_INTERNAL;
    }
    st.set_on_line = calloc(table->count ? table->count : 1, sizeof *st.set_on_line);
    if (st.set_on_line == NULL)
        return FERRY_ERR_NOMEM;
    st.file = fopen(path, "r");
    if (st.file == NULL) {
        errf(err, err_size, "%s: cannot open: %s", path, strerror(errno));
        result = FERRY_ERR_CONFIG;
        goto out;
    }
    int rc = ini_parse_stream(counting_reader, &st, on_value, &st);
    if (st.failed) {
        result = FERRY_ERR_CONFIG;
        goto out;
    }
    if (st.line_too_long) {
        errf(err, err_size, "%s:%d: line too long", path, st.line);
        result = FERRY_ERR_CONFIG;
        goto out;
    }
    if (ferror(st.file)) {
        errf(err, err_size, "%s: read error", path);
        result = FERRY_ERR_CONFIG;
        goto out;
    }
    if (rc != 0) {
        errf(err, err_size, "%s:%d: syntax error (expected [section] or name = value)", path, rc);
        result = FERRY_ERR_CONFIG;
        goto out;
    }
    for (size_t i = 0; i < table->count; i++) {
        const ferry_cfg_option *opt = &table->options[i];
        if (!(opt->flags & FERRY_CFG_REQUIRED))
            continue;
        bool missing = st.set_on_line[i] == 0 && opt->default_value == NULL;
        if (opt->type == FERRY_CFG_STRING) {
            const char *s = *(char **)(void *)((char *)target + opt->offset);
            missing = s == NULL || *s == '\0';
        }
        if (missing) {
            errf(err, err_size, "%s: [%s] %s: required option is not set", path, opt->section,
                 opt->name);
            result = FERRY_ERR_CONFIG;
            goto out;
        }
    }
out:
    if (st.file != NULL)
        fclose(st.file);
    free(st.set_on_line);
    return result;
}

void ferry_cfg_free(const ferry_cfg_table *table, void *target)
{
    if (target == NULL)
        return;
    for (size_t i = 0; i < table->count; i++) {
        const ferry_cfg_option *opt = &table->options[i];
        if (opt->type != FERRY_CFG_STRING)
            continue;
        char **slot = (char **)(void *)((char *)target + opt->offset);
        free(*slot);
        *slot = NULL;
    }
}

void ferry_cfg_write_reference(const ferry_cfg_table *table, FILE *out)
{
    const char *section = NULL;
    for (size_t i = 0; i < table->count; i++) {
        const ferry_cfg_option *opt = &table->options[i];
        if (section == NULL || strcmp(section, opt->section) != 0) {
            section = opt->section;
            fprintf(out, "%s### [%s]\n\n", i ? "\n" : "", section);
            fprintf(out, "| option | type | default | allowed | description |\n");
            fprintf(out, "| --- | --- | --- | --- | --- |\n");
        }
        char allowed[128] = "";
        if (opt->type == FERRY_CFG_INT || opt->type == FERRY_CFG_SIZE ||
            opt->type == FERRY_CFG_DURATION) {
            char lo[32], hi[32];
            format_bound(opt, opt->min, lo, sizeof lo);
            format_bound(opt, opt->max, hi, sizeof hi);
            snprintf(allowed, sizeof allowed, "%s to %s", lo, hi);
        } else if (opt->type == FERRY_CFG_ENUM) {
            /* '|' would end the Markdown table cell: write it escaped. */
            size_t o = 0;
            allowed[o++] = '`';
            for (const char *c = opt->choices; *c && o + 4 < sizeof allowed; c++) {
                if (*c == '|')
                    allowed[o++] = '\\';
                allowed[o++] = *c;
            }
            allowed[o++] = '`';
            allowed[o] = '\0';
        } else if (opt->type == FERRY_CFG_BOOL) {
            snprintf(allowed, sizeof allowed, "true, false");
        }
        const char *def = opt->default_value;
        fprintf(out, "| `%s` | %s | %s%s%s | %s | %s%s |\n", opt->name, type_name(opt->type),
                def && !(opt->flags & FERRY_CFG_SECRET) ? "`" : "",
                def && !(opt->flags & FERRY_CFG_SECRET) ? def : "—",
                def && !(opt->flags & FERRY_CFG_SECRET) ? "`" : "", allowed,
                (opt->flags & FERRY_CFG_REQUIRED) ? "**Required.** " : "", opt->help);
    }
}
