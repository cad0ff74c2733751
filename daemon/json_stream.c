/*
 * Resumable boundaries of JSON texts in a byte stream; see json_stream.h. All state lives
 * in the scanner so that a call examines only the bytes that arrived since the last one.
 */
#include "json_stream.h"

/* RFC 8259 white space only: a NUL byte is junk, not padding. */
static bool is_white_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* What ends a bare token: nothing valid continues a number or literal with these. */
static bool is_delimiter(char c)
{
    switch (c) {
    case '{':
    case '}':
    case '[':
    case ']':
    case '"':
    case ',':
    case ':':
    case '\0':
        return true;
    default:
        return is_white_space(c);
    }
}

void json_stream_init(struct json_stream_scanner *scanner)
{
    *scanner = (struct json_stream_scanner){.state = JSON_STREAM_BETWEEN_TEXTS};
}

/* The text in progress ends before `end`; the next one starts there. */
static size_t finish_text(struct json_stream_scanner *scanner, size_t end)
{
    scanner->offset = end;
    scanner->text_start = end;
    scanner->depth = 0;
    scanner->in_string = false;
    scanner->escaped = false;
    scanner->state = JSON_STREAM_BETWEEN_TEXTS;
    return end;
}

size_t json_stream_next(struct json_stream_scanner *scanner, const char *buffer, size_t length)
{
    /* Offsets past `length` mean a caller bug; reading nothing is the safe answer. */
    while (scanner->offset < length) {
        char c = buffer[scanner->offset];

        scanner->examined++;
        switch (scanner->state) {
        case JSON_STREAM_BETWEEN_TEXTS:
            if (is_white_space(c)) {
                scanner->offset++;
                break;
            }
            scanner->text_start = scanner->offset;
            if (c == '{' || c == '[') {
                scanner->depth = 1;
                scanner->state = JSON_STREAM_IN_STRUCTURE;
            } else if (c == '"') {
                scanner->in_string = true;
                scanner->state = JSON_STREAM_IN_STRUCTURE;
            } else if (is_delimiter(c)) {
                /* Stray punctuation: hand it over alone for the parser to reject. */
                return finish_text(scanner, scanner->offset + 1);
            } else {
                scanner->state = JSON_STREAM_IN_BARE_TOKEN;
            }
            scanner->offset++;
            break;
        case JSON_STREAM_IN_BARE_TOKEN:
            /* The delimiter is not part of the token: it is where the next text begins. */
            if (is_delimiter(c))
                return finish_text(scanner, scanner->offset);
            scanner->offset++;
            break;
        case JSON_STREAM_IN_STRUCTURE:
            scanner->offset++;
            if (scanner->in_string) {
                if (scanner->escaped)
                    scanner->escaped = false;
                else if (c == '\\')
                    scanner->escaped = true;
                else if (c == '"') {
                    scanner->in_string = false;
                    if (scanner->depth == 0)
                        return finish_text(scanner, scanner->offset);
                }
            } else if (c == '"') {
                scanner->in_string = true;
            } else if (c == '{' || c == '[') {
                scanner->depth++;
            } else if (c == '}' || c == ']') {
                /* depth >= 1 here: only a top-level string runs at depth 0. */
                if (--scanner->depth == 0)
                    return finish_text(scanner, scanner->offset);
            }
            break;
        }
    }
    return 0;
}

void json_stream_consumed(struct json_stream_scanner *scanner, size_t bytes)
{
    size_t examined = scanner->examined;

    if (scanner->state == JSON_STREAM_BETWEEN_TEXTS) {
        /* Skipped white space carries no state: dropping past it just moves the start. */
        scanner->offset = bytes < scanner->offset ? scanner->offset - bytes : 0;
        scanner->text_start = scanner->offset;
        return;
    }
    if (bytes > scanner->text_start) {
        json_stream_init(scanner);
        scanner->examined = examined;
        return;
    }
    scanner->offset -= bytes;
    scanner->text_start -= bytes;
}
