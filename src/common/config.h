/*
 * config.h - the INI configuration loader, driven by one table of options.
 *
 * A program describes every option once: section, name, type, where it is
 * stored, its default, its bounds and a line of help. The loader applies the
 * defaults, reads the file (libinih), converts and bounds-checks every value
 * and checks required options, all at start-up. Any error stops the load
 * with one message naming the file, the line and the option:
 *   ferryd.ini:12: [store] max_object_size: "9Z" is not a size
 * The same table prints the reference documentation (docs/operations.md).
 *
 * Storage by type: STRING -> char * (owned by the target; freed by
 * ferry_cfg_free), INT -> int64_t, BOOL -> bool, SIZE -> int64_t bytes
 * (suffixes K, M, G, T; powers of 1024), DURATION -> int64_t milliseconds
 * (suffixes ms, s, m, h, d; a bare number is seconds), ENUM -> int (the
 * index in the '|'-separated choices).
 */
#ifndef FERRY_COMMON_CONFIG_H
#define FERRY_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "ferry/ferry_error.h"

typedef enum ferry_cfg_type {
    FERRY_CFG_STRING,
    FERRY_CFG_INT,
    FERRY_CFG_BOOL,
    FERRY_CFG_SIZE,
    FERRY_CFG_DURATION,
    FERRY_CFG_ENUM,
} ferry_cfg_type;

enum {
    FERRY_CFG_REQUIRED = 1u << 0, /* must be set (by default or file) */
    FERRY_CFG_SECRET = 1u << 1,   /* value never printed (help shows no default) */
};

typedef struct ferry_cfg_option {
    const char *section; /* INI section; "" for options before any section */
    const char *name;
    ferry_cfg_type type;
    size_t offset;             /* offsetof() the field in the target struct */
    const char *default_value; /* parsed like a file value; NULL: none */
    int64_t min, max;          /* INT/SIZE/DURATION(ms): inclusive bounds;
                                  STRING: max length (0 means 4096) */
    const char *choices;       /* ENUM: "a|b|c" */
    unsigned flags;
    const char *help;
} ferry_cfg_option;

typedef struct ferry_cfg_table {
    const ferry_cfg_option *options;
    size_t count;
} ferry_cfg_table;

/* Called for a section that no option of the table names (e.g. one
 * [target.NAME] section per event target). Returns 0 to accept the value,
 * or non-zero after writing a message (without file:line) into err. */
typedef int (*ferry_cfg_section_fn)(void *ctx, const char *section, const char *name,
                                    const char *value, char *err, size_t err_size);

/* Applies every default to target; target must be zeroed first. */
__attribute__((warn_unused_result)) ferry_err
ferry_cfg_defaults(const ferry_cfg_table *table, void *target, char *err, size_t err_size);

/* Defaults, then the file, then the required check. On error, err holds one
 * line and target may hold a partial configuration: free it. */
__attribute__((warn_unused_result)) ferry_err
ferry_cfg_load(const ferry_cfg_table *table, void *target, const char *path,
               ferry_cfg_section_fn on_unknown_section, void *ctx, char *err, size_t err_size);

/* Sets one option from text as if it came from a file (for overrides). */
__attribute__((warn_unused_result)) ferry_err ferry_cfg_set(const ferry_cfg_table *table,
                                                            void *target, const char *section,
                                                            const char *name, const char *value,
                                                            char *err, size_t err_size);

/* Frees the strings the loader allocated in target. Safe on a zeroed target. */
void ferry_cfg_free(const ferry_cfg_table *table, void *target);

/* Writes the reference of every option as a Markdown table. */
void ferry_cfg_write_reference(const ferry_cfg_table *table, FILE *out);

/* Value parsers, exposed for callers with their own syntax. */
__attribute__((warn_unused_result)) ferry_err ferry_parse_size(const char *s, int64_t *bytes);
__attribute__((warn_unused_result)) ferry_err ferry_parse_duration_ms(const char *s, int64_t *ms);
__attribute__((warn_unused_result)) ferry_err ferry_parse_bool(const char *s, bool *out);
__attribute__((warn_unused_result)) ferry_err ferry_parse_int(const char *s, int64_t *out);

#endif
