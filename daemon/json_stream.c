/*
 * Resumable boundaries of JSON texts in a byte stream; see json_stream.h. All state lives
 * in the scanner so that a call examines only the bytes that arrived since the last one.
 */
#include <string.h>

#include "json_stream.h"

/* What the grammar allows next (scanner->expect). */
enum expect {
    EXPECT_TEXT,           /* between top-level texts: white space or a value */
    EXPECT_DELIMITER,      /* after a top-level number or literal, which ends at one */
    EXPECT_VALUE,          /* after ':' or after ',' in an array */
    EXPECT_VALUE_OR_CLOSE, /* after '[' */
    EXPECT_KEY,            /* after ',' in an object */
    EXPECT_KEY_OR_CLOSE,   /* after '{' */
    EXPECT_COLON,          /* after a key */
    EXPECT_COMMA_OR_CLOSE, /* after a value inside a container */
};

/* The token in progress (scanner->token). */
enum token {
    TOKEN_NONE,
    TOKEN_STRING,
    TOKEN_ESCAPE,     /* after a backslash */
    TOKEN_UNICODE,    /* in the four hex digits of \u; token_index counts them */
    TOKEN_UTF8,       /* in a multi-byte character; token_index counts the bytes still due */
    TOKEN_LITERAL,    /* true, false or null; token_index is the byte matched next */
    TOKEN_MINUS,      /* "-": a digit must follow */
    TOKEN_ZERO,       /* "0" or "-0": no more integer digits */
    TOKEN_INTEGER,    /* integer digits */
    TOKEN_POINT,      /* "1.": a digit must follow */
    TOKEN_FRACTION,   /* fraction digits */
    TOKEN_EXPONENT,   /* "1e": a sign or a digit must follow */
    TOKEN_EXP_SIGN,   /* "1e+": a digit must follow */
    TOKEN_EXP_DIGITS, /* exponent digits */
};

static const char *const literals[] = {"true", "false", "null"};

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

/* --- The grammar check: one byte at a time, each byte once. --- */

static bool invalid(struct json_stream_scanner *scanner, const char *why)
{
    scanner->error = why;
    scanner->error_offset = scanner->validated;
    return false;
}

static bool is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex_digit(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A value (scalar or container) just ended. */
static void value_done(struct json_stream_scanner *scanner)
{
    bool bare = scanner->token >= TOKEN_LITERAL;

    scanner->token = TOKEN_NONE;
    scanner->expect = scanner->valid_depth > 0 ? EXPECT_COMMA_OR_CLOSE
                      : bare                   ? EXPECT_DELIMITER
                                               : EXPECT_TEXT;
}

static bool innermost_is_object(const struct json_stream_scanner *scanner)
{
    size_t level = scanner->valid_depth - 1;
    return (scanner->containers[level / 8] >> (level % 8)) & 1;
}

static bool open_container(struct json_stream_scanner *scanner, bool object)
{
    size_t level = scanner->valid_depth;
    unsigned char bit = (unsigned char)(1u << (level % 8));

    if (level == JSON_STREAM_MAX_DEPTH)
        return invalid(scanner, "nested too deeply");
    if (object)
        scanner->containers[level / 8] |= bit;
    else
        scanner->containers[level / 8] &= (unsigned char)~bit;
    scanner->valid_depth++;
    scanner->expect = object ? EXPECT_KEY_OR_CLOSE : EXPECT_VALUE_OR_CLOSE;
    return true;
}

/* Inside a string: escapes, control characters, UTF-8. */
static bool check_string_byte(struct json_stream_scanner *scanner, unsigned char c)
{
    switch (scanner->token) {
    case TOKEN_ESCAPE:
        if (c == 'u') {
            scanner->token = TOKEN_UNICODE;
            scanner->token_index = 0;
            return true;
        }
        if (strchr("\"\\/bfnrt", c) == NULL || c == '\0')
            return invalid(scanner, "invalid escape in a string");
        scanner->token = TOKEN_STRING;
        return true;
    case TOKEN_UNICODE:
        if (!is_hex_digit(c))
            return invalid(scanner, "invalid \\u escape in a string");
        if (++scanner->token_index == 4)
            scanner->token = TOKEN_STRING;
        return true;
    case TOKEN_UTF8:
        if (c < scanner->utf8_low || c > scanner->utf8_high)
            return invalid(scanner, "invalid UTF-8 in a string");
        scanner->utf8_low = 0x80;
        scanner->utf8_high = 0xbf;
        if (--scanner->token_index == 0)
            scanner->token = TOKEN_STRING;
        return true;
    default:
        break;
    }
    if (c == '"') {
        bool key = scanner->in_key;
        scanner->in_key = false;
        if (key) {
            scanner->token = TOKEN_NONE;
            scanner->expect = EXPECT_COLON;
        } else {
            value_done(scanner);
        }
        return true;
    }
    if (c == '\\') {
        scanner->token = TOKEN_ESCAPE;
        return true;
    }
    if (c < 0x20)
        return invalid(scanner, "control character in a string");
    if (c < 0x80)
        return true;
    /* RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF. */
    scanner->utf8_low = 0x80;
    scanner->utf8_high = 0xbf;
    if (c >= 0xc2 && c <= 0xdf)
        scanner->token_index = 1;
    else if (c >= 0xe0 && c <= 0xef) {
        scanner->token_index = 2;
        if (c == 0xe0)
            scanner->utf8_low = 0xa0;
        else if (c == 0xed)
            scanner->utf8_high = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        scanner->token_index = 3;
        if (c == 0xf0)
            scanner->utf8_low = 0x90;
        else if (c == 0xf4)
            scanner->utf8_high = 0x8f;
    } else {
        return invalid(scanner, "invalid UTF-8 in a string");
    }
    scanner->token = TOKEN_UTF8;
    return true;
}

/*
 * Inside a number: true when `c` continues it. Otherwise the number ends before `c` (if it
 * may end there) and `c` is left to the caller, or the stream is invalid (*bad).
 */
static bool continues_number(struct json_stream_scanner *scanner, unsigned char c, bool *bad)
{
    enum token next = TOKEN_NONE;

    switch (scanner->token) {
    case TOKEN_MINUS:
        next = c == '0' ? TOKEN_ZERO : is_digit(c) ? TOKEN_INTEGER : TOKEN_NONE;
        break;
    case TOKEN_ZERO:
    case TOKEN_INTEGER:
        if (is_digit(c) && scanner->token == TOKEN_INTEGER)
            next = TOKEN_INTEGER;
        else if (c == '.')
            next = TOKEN_POINT;
        else if (c == 'e' || c == 'E')
            next = TOKEN_EXPONENT;
        break;
    case TOKEN_POINT:
    case TOKEN_FRACTION:
        if (is_digit(c))
            next = TOKEN_FRACTION;
        else if ((c == 'e' || c == 'E') && scanner->token == TOKEN_FRACTION)
            next = TOKEN_EXPONENT;
        break;
    case TOKEN_EXPONENT:
        next = c == '+' || c == '-' ? TOKEN_EXP_SIGN : is_digit(c) ? TOKEN_EXP_DIGITS : TOKEN_NONE;
        break;
    case TOKEN_EXP_SIGN:
    case TOKEN_EXP_DIGITS:
        next = is_digit(c) ? TOKEN_EXP_DIGITS : TOKEN_NONE;
        break;
    default:
        break;
    }
    if (next != TOKEN_NONE) {
        scanner->token = (unsigned char)next;
        return true;
    }
    /* Where a number may end: after a digit. */
    if (scanner->token == TOKEN_ZERO || scanner->token == TOKEN_INTEGER ||
        scanner->token == TOKEN_FRACTION || scanner->token == TOKEN_EXP_DIGITS)
        value_done(scanner);
    else
        *bad = !invalid(scanner, "invalid number");
    return false;
}

/* Outside any token: white space, structure, or the start of a value. */
static bool check_structure_byte(struct json_stream_scanner *scanner, unsigned char c)
{
    enum expect expect = scanner->expect;

    if (expect == EXPECT_DELIMITER) {
        /* The framer reads "01" or "truex" as one token: one text, and not a valid one. */
        if (!is_delimiter((char)c))
            return invalid(scanner, "unexpected character after a value");
        expect = scanner->expect = EXPECT_TEXT;
    }
    if (is_white_space((char)c))
        return true;
    switch (c) {
    case '}':
    case ']':
        if (expect == EXPECT_COMMA_OR_CLOSE || (c == '}' && expect == EXPECT_KEY_OR_CLOSE) ||
            (c == ']' && expect == EXPECT_VALUE_OR_CLOSE)) {
            if (innermost_is_object(scanner) != (c == '}'))
                return invalid(scanner, "mismatched bracket");
            scanner->valid_depth--;
            value_done(scanner);
            return true;
        }
        return invalid(scanner, "unexpected closing bracket");
    case ',':
        if (expect != EXPECT_COMMA_OR_CLOSE)
            return invalid(scanner, "unexpected ','");
        scanner->expect = innermost_is_object(scanner) ? EXPECT_KEY : EXPECT_VALUE;
        return true;
    case ':':
        if (expect != EXPECT_COLON)
            return invalid(scanner, "unexpected ':'");
        scanner->expect = EXPECT_VALUE;
        return true;
    case '"':
        if (expect == EXPECT_KEY || expect == EXPECT_KEY_OR_CLOSE)
            scanner->in_key = true;
        else if (expect == EXPECT_COLON || expect == EXPECT_COMMA_OR_CLOSE)
            return invalid(scanner, "unexpected string");
        scanner->token = TOKEN_STRING;
        return true;
    default:
        break;
    }
    if (expect == EXPECT_KEY || expect == EXPECT_KEY_OR_CLOSE)
        return invalid(scanner, "an object key must be a string");
    if (expect == EXPECT_COLON)
        return invalid(scanner, "expected ':' after an object key");
    if (expect == EXPECT_COMMA_OR_CLOSE)
        return invalid(scanner, "expected ',' or a closing bracket");
    if (c == '{' || c == '[')
        return open_container(scanner, c == '{');
    if (c == '-' || is_digit(c)) {
        scanner->token = c == '-' ? TOKEN_MINUS : c == '0' ? TOKEN_ZERO : TOKEN_INTEGER;
        return true;
    }
    for (unsigned char i = 0; i < sizeof(literals) / sizeof(literals[0]); i++) {
        if (c == (unsigned char)literals[i][0]) {
            scanner->token = TOKEN_LITERAL;
            scanner->token_index = (unsigned char)(i << 4 | 1);
            return true;
        }
    }
    return invalid(scanner, "unexpected character");
}

/* Checks the byte at scanner->validated; false once the stream cannot be valid JSON. */
static bool check_byte(struct json_stream_scanner *scanner, unsigned char c)
{
    bool bad = false;

    switch (scanner->token) {
    case TOKEN_STRING:
    case TOKEN_ESCAPE:
    case TOKEN_UNICODE:
    case TOKEN_UTF8:
        return check_string_byte(scanner, c);
    case TOKEN_LITERAL: {
        /* token_index: the literal in the high nibble, the next position in the low one. */
        const char *literal = literals[scanner->token_index >> 4];
        size_t position = scanner->token_index & 0xf;
        if (c != (unsigned char)literal[position])
            return invalid(scanner, "invalid literal (true, false or null)");
        scanner->token_index++;
        if (literal[position + 1] == '\0')
            value_done(scanner);
        return true;
    }
    case TOKEN_NONE:
        return check_structure_byte(scanner, c);
    default:
        if (continues_number(scanner, c, &bad) || bad)
            return !bad;
        return check_structure_byte(scanner, c);
    }
}

static void check_up_to(struct json_stream_scanner *scanner, const char *buffer, size_t end)
{
    while (scanner->error == NULL && scanner->validated < end) {
        if (!check_byte(scanner, (unsigned char)buffer[scanner->validated]))
            return;
        scanner->validated++;
    }
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

        /* The grammar check sees each byte once, the delimiter after a bare token too. */
        if (scanner->validated <= scanner->offset)
            check_up_to(scanner, buffer, scanner->offset + 1);
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
        scanner->validated = bytes < scanner->validated ? scanner->validated - bytes : 0;
        scanner->error_offset = bytes < scanner->error_offset ? scanner->error_offset - bytes : 0;
        return;
    }
    if (bytes > scanner->text_start) {
        json_stream_init(scanner);
        scanner->examined = examined;
        return;
    }
    scanner->offset -= bytes;
    scanner->text_start -= bytes;
    scanner->validated -= bytes;
    scanner->error_offset = bytes < scanner->error_offset ? scanner->error_offset - bytes : 0;
}

size_t json_stream_end(struct json_stream_scanner *scanner, size_t length)
{
    bool number_may_end = scanner->token == TOKEN_ZERO || scanner->token == TOKEN_INTEGER ||
                          scanner->token == TOKEN_FRACTION || scanner->token == TOKEN_EXP_DIGITS;
    /* A literal is whole once matched, and only waits for a delimiter. */
    bool literal_ended = scanner->token == TOKEN_NONE && scanner->expect == EXPECT_DELIMITER;

    if (scanner->offset != length || scanner->state == JSON_STREAM_BETWEEN_TEXTS)
        return 0;
    if (scanner->error == NULL &&
        !(scanner->valid_depth == 0 && (number_may_end || literal_ended))) {
        scanner->error = "the input ended inside a value";
        scanner->error_offset = length;
    }
    if (scanner->state == JSON_STREAM_IN_BARE_TOKEN) {
        if (scanner->error == NULL)
            value_done(scanner);
        return finish_text(scanner, length);
    }
    return 0;
}
