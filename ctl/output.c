/*
 * Tables, fields, JSON and escaping for vfio-userctl; see output.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "output.h"

struct output_table {
    const struct output_column *columns;
    size_t column_count;
    char **cells; /* row-major, row_count * column_count */
    size_t row_count;
    size_t row_capacity;
};

struct output_table *output_table_new(const struct output_column *columns, size_t count)
{
    struct output_table *table = calloc(1, sizeof(*table));

    if (table == NULL)
        return NULL;
    table->columns = columns;
    table->column_count = count;
    return table;
}

void output_table_free(struct output_table *table)
{
    if (table == NULL)
        return;
    for (size_t i = 0; i < table->row_count * table->column_count; i++)
        free(table->cells[i]);
    free(table->cells);
    free(table);
}

int output_table_add_row(struct output_table *table, const char *const *cells)
{
    size_t first = table->row_count * table->column_count;
    char escaped[1024];

    if (table->row_count == table->row_capacity) {
        size_t capacity = table->row_capacity ? table->row_capacity * 2 : 16;
        char **grown = reallocarray(table->cells, capacity * table->column_count, sizeof(char *));
        if (grown == NULL)
            return -ENOMEM;
        table->cells = grown;
        table->row_capacity = capacity;
    }
    for (size_t i = 0; i < table->column_count; i++) {
        output_escape(escaped, sizeof(escaped), cells[i] != NULL ? cells[i] : "-");
        table->cells[first + i] = strdup(escaped);
        if (table->cells[first + i] == NULL) {
            for (size_t j = 0; j < i; j++)
                free(table->cells[first + j]);
            return -ENOMEM;
        }
    }
    table->row_count++;
    return 0;
}

static void print_cell(FILE *stream, const char *text, size_t width, bool right_aligned, bool last)
{
    size_t padding = width - output_text_width(text);

    if (right_aligned)
        fprintf(stream, "%*s", (int)padding, "");
    fputs(text, stream);
    if (!right_aligned && !last)
        fprintf(stream, "%*s", (int)padding, "");
    fputs(last ? "\n" : "  ", stream);
}

int output_table_print(const struct output_table *table, FILE *stream)
{
    size_t *width = calloc(table->column_count, sizeof(size_t));

    if (width == NULL)
        return -ENOMEM;
    for (size_t c = 0; c < table->column_count; c++) {
        width[c] = output_text_width(table->columns[c].title);
        for (size_t r = 0; r < table->row_count; r++) {
            size_t cell = output_text_width(table->cells[r * table->column_count + c]);
            if (cell > width[c])
                width[c] = cell;
        }
    }
    for (size_t c = 0; c < table->column_count; c++)
        print_cell(stream, table->columns[c].title, width[c], table->columns[c].right_aligned,
                   c + 1 == table->column_count);
    for (size_t r = 0; r < table->row_count; r++)
        for (size_t c = 0; c < table->column_count; c++)
            print_cell(stream, table->cells[r * table->column_count + c], width[c],
                       table->columns[c].right_aligned, c + 1 == table->column_count);
    free(width);
    return 0;
}

int output_json(FILE *stream, const json_t *value)
{
    if (json_dumpf(value, stream, JSON_INDENT(2) | JSON_ENCODE_ANY) < 0)
        return -EIO;
    return fputc('\n', stream) == EOF ? -EIO : 0;
}

void output_field(FILE *stream, int width, const char *label, const char *format, ...)
{
    char value[2048], escaped[4096];
    va_list arguments;
    int padding;

    va_start(arguments, format);
    vsnprintf(value, sizeof(value), format, arguments);
    va_end(arguments);
    output_escape(escaped, sizeof(escaped), value);
    /* At least one blank, however long the label. */
    padding = width - (int)output_text_width(label);
    fprintf(stream, "%s:%*s%s\n", label, padding > 1 ? padding : 1, "", escaped);
}

char *output_escape(char *buffer, size_t size, const char *text)
{
    size_t used = 0;

    if (size == 0)
        return buffer;
    for (const unsigned char *c = (const unsigned char *)text; *c != '\0'; c++) {
        char piece[5];
        size_t length;

        if (*c < 0x20 || *c == 0x7f)
            snprintf(piece, sizeof(piece), "\\x%02x", *c);
        else
            snprintf(piece, sizeof(piece), "%c", *c);
        length = strlen(piece);
        if (used + length + 1 > size) {
            /* Room for "..." and the NUL, cut where no UTF-8 sequence is split. */
            if (size < 4)
                break;
            if (used + 4 > size) {
                used = size - 4;
                while (used > 0 && ((unsigned char)buffer[used] & 0xc0) == 0x80)
                    used--;
            }
            memcpy(buffer + used, "...", 3);
            used += 3;
            break;
        }
        memcpy(buffer + used, piece, length);
        used += length;
    }
    buffer[used] = '\0';
    return buffer;
}

size_t output_text_width(const char *text)
{
    size_t width = 0;

    for (const unsigned char *c = (const unsigned char *)text; *c != '\0'; c++)
        width += (*c & 0xc0) != 0x80;
    return width;
}

char *output_size(char *buffer, size_t size, uint64_t bytes)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
    size_t unit = 0;
    uint64_t value = bytes;

    if (bytes == 0 || bytes % 1024 != 0) {
        snprintf(buffer, size, "%" PRIu64 " B", bytes);
        return buffer;
    }
    value /= 1024;
    while (value % 1024 == 0 && unit + 1 < sizeof(units) / sizeof(units[0])) {
        value /= 1024;
        unit++;
    }
    snprintf(buffer, size, "%" PRIu64 " %s", value, units[unit]);
    return buffer;
}

char *output_duration(char *buffer, size_t size, uint64_t seconds)
{
    uint64_t days = seconds / 86400, hours = seconds / 3600 % 24, minutes = seconds / 60 % 60;

    if (days > 0)
        snprintf(buffer, size, "%" PRIu64 "d %" PRIu64 "h %" PRIu64 "m %" PRIu64 "s", days, hours,
                 minutes, seconds % 60);
    else if (hours > 0)
        snprintf(buffer, size, "%" PRIu64 "h %" PRIu64 "m %" PRIu64 "s", hours, minutes,
                 seconds % 60);
    else if (minutes > 0)
        snprintf(buffer, size, "%" PRIu64 "m %" PRIu64 "s", minutes, seconds % 60);
    else
        snprintf(buffer, size, "%" PRIu64 "s", seconds);
    return buffer;
}
