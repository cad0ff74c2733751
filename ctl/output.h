/*
 * vfio-userctl's output: aligned tables and "Label: value" blocks for people, pretty JSON
 * for scripts, and the escaping that keeps text from the daemon or a device (paths, plugin
 * descriptions, error messages) from driving the terminal.
 */
#ifndef VFIO_USERCTL_OUTPUT_H
#define VFIO_USERCTL_OUTPUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <jansson.h>

struct output_column {
    const char *title;
    bool right_aligned; /* numbers */
};

struct output_table;

/* A table with `count` columns; NULL when out of memory. */
struct output_table *output_table_new(const struct output_column *columns, size_t count);
void output_table_free(struct output_table *table);

/* Adds a row of one cell per column (NULL prints as "-"); the cells are copied, escaped. */
int output_table_add_row(struct output_table *table, const char *const *cells);

/*
 * Prints the header and the rows, each column as wide as its widest cell, two spaces
 * apart; the last column is not padded, so lines carry no trailing blanks.
 */
int output_table_print(const struct output_table *table, FILE *stream);

/* `value` indented by two spaces, keys in the order they have, and a newline. */
int output_json(FILE *stream, const json_t *value);

/* "LABEL:" padded to `width` columns, then the value; the value is escaped. */
void output_field(FILE *stream, int width, const char *label, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

/* `text` with control characters written as \xNN; cut with "..." to fit. Returns buffer. */
char *output_escape(char *buffer, size_t size, const char *text);

/* Columns `text` takes on a terminal: UTF-8 sequences count once. */
size_t output_text_width(const char *text);

/* A byte count as people write it: "4 KiB", "1 MiB", "1536 B" (exact, never rounded). */
char *output_size(char *buffer, size_t size, uint64_t bytes);

/* "3d 4h 5m 6s", leading zero units left out. */
char *output_duration(char *buffer, size_t size, uint64_t seconds);

#endif /* VFIO_USERCTL_OUTPUT_H */
