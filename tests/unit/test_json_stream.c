/*
 * Unit tests for daemon/json_stream.c: the boundaries it finds for valid, malformed and
 * hostile streams must not depend on how the bytes were split across reads or whether the
 * caller dropped handled texts in between, must match the rescanning framer it replaced, and
 * the work must stay linear when a client trickles a large text one byte at a time.
 */
#include <check.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json_stream.h"
#include "test_runner.h"

#define MAX_TEXTS 64

struct boundaries {
    size_t ends[MAX_TEXTS];
    size_t count;
};

/* A stream with '|' after each complete text; sizeof keeps embedded NUL bytes. */
struct marked_stream {
    const char *marked;
    size_t marked_length;
};

#define MARKED(text)                                                                               \
    {                                                                                              \
        text, sizeof(text) - 1                                                                     \
    }

static const struct marked_stream marked_streams[] = {
    /* Objects, arrays, nesting. */
    MARKED("{}|"),
    MARKED("[]|"),
    MARKED("{\"a\":1}|"),
    MARKED("[1,2,3]|"),
    MARKED("{\"a\":[1,{\"b\":[[],{}]}],\"c\":{\"d\":null}}|"),
    MARKED("[[[[[[[[[[]]]]]]]]]]|"),
    /* Strings inside structures: escaped quotes, backslashes, brackets. */
    MARKED("{\"k\":\"a\\\"}]\\\\\"}|"),
    MARKED("[\"[[[\",\"{{{\"]|"),
    MARKED("{\"}\":\"]\",\"\\\\\":\"\\\\\\\"\"}|"),
    MARKED("[\"\\u005d\\\"]\"]|"),
    /* Top-level strings. */
    MARKED("\"abc\"|"),
    MARKED("\"a\\\"b\"|"),
    MARKED("\"a\\\\\"|"),
    MARKED("\"\\\\\\\"\"|"),
    MARKED("\"{[\"|"),
    MARKED("\"\"|"),
    /* Bare numbers and literals end before a delimiter; at the end they are incomplete. */
    MARKED("42| "),
    MARKED("-1.5e+3|]|"),
    MARKED("true|\n"),
    MARKED("null|,|"),
    MARKED("false|{}|"),
    MARKED("1|\"s\"|"),
    MARKED("1|:|2|\t"),
    MARKED("42"),
    MARKED("1|,|2"),
    /* Several texts back to back, with and without white space. */
    MARKED("{}|[]|\"x\"|{}|"),
    MARKED(" {}| \n [ ]|\t\"x\"|\r\n7| "),
    MARKED("{\"id\":1}|\n{\"id\":2}|\n  {\"id\":3}|\n"),
    MARKED("[1]|{\"a\":\"]\"}|\"}\"|null| [ ]|"),
    /* Malformed: stray punctuation is a one-byte text, mismatched brackets still close. */
    MARKED("}|"),
    MARKED("]|]|]|"),
    MARKED(",|:|"),
    MARKED("[}|"),
    MARKED("[]|]|"),
    MARKED("{]|}|"),
    MARKED("abc|{}|"),
    MARKED("tr|\"ue"),
    MARKED("\\|,|"),
    MARKED("a\x01"
           "b|,|"),
    MARKED("\xff|{}|"),
    /* NUL is junk, neither white space nor part of a token. */
    MARKED("\0|"),
    MARKED("  \0| "),
    MARKED("1|\0|2| "),
    MARKED("\"a\0b\"|"),
    /* Unfinished: nothing is complete. */
    MARKED(""),
    MARKED(" \t\r\n"),
    MARKED("{\"a\" "),
    MARKED("\"unterminated"),
    MARKED("[\"\\"),
    MARKED("[\"\\\"]"),
    MARKED("{}|[[[]]"),
    MARKED("\"\\\\\\\""),
};

#define STREAM_COUNT (sizeof(marked_streams) / sizeof(marked_streams[0]))

/* Splits a marked stream into its bytes (caller frees) and the expected text ends. */
static char *unmark(const struct marked_stream *stream, size_t *length, struct boundaries *ends)
{
    char *input = malloc(stream->marked_length + 1);

    ck_assert_ptr_nonnull(input);
    *length = 0;
    ends->count = 0;
    for (size_t i = 0; i < stream->marked_length; i++) {
        if (stream->marked[i] == '|') {
            ck_assert_uint_lt(ends->count, MAX_TEXTS);
            ends->ends[ends->count++] = *length;
        } else {
            input[(*length)++] = stream->marked[i];
        }
    }
    return input;
}

/*
 * check logs every assertion that passes; the helpers below run millions of times, so they
 * test first and only call into check on failure.
 */
static void record(struct boundaries *found, size_t end)
{
    if (found->count == MAX_TEXTS)
        ck_abort_msg("more than %d texts", MAX_TEXTS);
    if (found->count > 0 && end <= found->ends[found->count - 1])
        ck_abort_msg("text end %zu does not follow %zu", end, found->ends[found->count - 1]);
    found->ends[found->count++] = end;
}

/*
 * Feeds `input` to a fresh scanner in pieces ending at `cuts` (then the rest), the way the
 * admin server receives it. The buffer is reallocated to exactly the bytes received so that
 * AddressSanitizer catches any read past `length`. With `drop_handled`, handled texts are
 * removed after each piece, as the admin server does. Ends are counted from the stream start.
 */
static void feed_in_pieces(const char *input, size_t length, const size_t *cuts, size_t cut_count,
                           bool drop_handled, struct boundaries *found)
{
    struct json_stream_scanner scanner;
    char *buffer = NULL;
    size_t buffered = 0, fed = 0, dropped = 0, handled = 0;

    json_stream_init(&scanner);
    found->count = 0;
    for (size_t piece = 0; piece <= cut_count; piece++) {
        size_t until = piece < cut_count ? cuts[piece] : length;
        size_t end;
        char *grown;

        if (until < fed)
            ck_abort_msg("cuts go backwards");
        grown = realloc(buffer, buffered + (until - fed) > 0 ? buffered + (until - fed) : 1);
        if (grown == NULL)
            ck_abort_msg("out of memory");
        buffer = grown;
        memcpy(buffer + buffered, input + fed, until - fed);
        buffered += until - fed;
        fed = until;
        while ((end = json_stream_next(&scanner, buffer, buffered)) != 0) {
            if (end <= handled || end > buffered)
                ck_abort_msg("end %zu outside (%zu, %zu]", end, handled, buffered);
            record(found, dropped + end);
            handled = end;
        }
        if (scanner.offset > buffered)
            ck_abort_msg("offset %zu past the %zu bytes buffered", scanner.offset, buffered);
        if (drop_handled && handled > 0) {
            memmove(buffer, buffer + handled, buffered - handled);
            buffered -= handled;
            dropped += handled;
            json_stream_consumed(&scanner, handled);
            handled = 0;
        }
    }
    free(buffer);
}

static void assert_same_boundaries(const struct boundaries *found,
                                   const struct boundaries *expected, size_t stream_index,
                                   const char *how)
{
    if (found->count != expected->count)
        ck_abort_msg("stream %zu fed %s: %zu texts, expected %zu", stream_index, how, found->count,
                     expected->count);
    for (size_t i = 0; i < expected->count; i++)
        if (found->ends[i] != expected->ends[i])
            ck_abort_msg("stream %zu fed %s: text %zu ends at %zu, expected %zu", stream_index, how,
                         i, found->ends[i], expected->ends[i]);
}

START_TEST(boundaries_fed_whole)
{
    for (size_t s = 0; s < STREAM_COUNT; s++) {
        struct boundaries expected, found;
        size_t length;
        char *input = unmark(&marked_streams[s], &length, &expected);

        feed_in_pieces(input, length, NULL, 0, false, &found);
        assert_same_boundaries(&found, &expected, s, "whole");
        feed_in_pieces(input, length, NULL, 0, true, &found);
        assert_same_boundaries(&found, &expected, s, "whole, dropping");
        free(input);
    }
}
END_TEST

START_TEST(boundaries_fed_byte_by_byte)
{
    for (size_t s = 0; s < STREAM_COUNT; s++) {
        struct boundaries expected, found;
        size_t length;
        char *input = unmark(&marked_streams[s], &length, &expected);
        size_t *cuts = malloc((length + 1) * sizeof(*cuts));

        ck_assert_ptr_nonnull(cuts);
        for (size_t i = 0; i < length; i++)
            cuts[i] = i + 1;
        feed_in_pieces(input, length, cuts, length, false, &found);
        assert_same_boundaries(&found, &expected, s, "byte by byte");
        feed_in_pieces(input, length, cuts, length, true, &found);
        assert_same_boundaries(&found, &expected, s, "byte by byte, dropping");
        free(cuts);
        free(input);
    }
}
END_TEST

START_TEST(boundaries_split_at_every_position)
{
    for (size_t s = 0; s < STREAM_COUNT; s++) {
        struct boundaries expected, found;
        size_t length;
        char *input = unmark(&marked_streams[s], &length, &expected);

        for (size_t cut = 0; cut <= length; cut++) {
            feed_in_pieces(input, length, &cut, 1, false, &found);
            assert_same_boundaries(&found, &expected, s, "in two");
            feed_in_pieces(input, length, &cut, 1, true, &found);
            assert_same_boundaries(&found, &expected, s, "in two, dropping");
        }
        free(input);
    }
}
END_TEST

/*
 * The framer the admin server used before, rescanning from the start of the unhandled
 * bytes each time; kept as an oracle. Its one accidental quirk, a NUL byte counting as
 * white space (strchr finds the terminator), is replaced by the documented rule.
 */
static bool reference_is_white_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static size_t reference_text_length(const char *buffer, size_t length)
{
    size_t i = 0, depth = 0;
    bool in_string = false, escaped = false;

    while (i < length && reference_is_white_space(buffer[i]))
        i++;
    if (i == length)
        return 0;
    if (buffer[i] != '{' && buffer[i] != '[' && buffer[i] != '"') {
        for (size_t start = i; i < length; i++)
            if (reference_is_white_space(buffer[i]) || buffer[i] == '\0' ||
                memchr("{}[]\",:", buffer[i], 7) != NULL)
                return i > start ? i : i + 1;
        return 0;
    }
    for (; i < length; i++) {
        char c = buffer[i];
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
            if (!in_string && depth == 0)
                return i + 1;
            continue;
        }
        if (c == '"')
            in_string = true;
        else if (c == '{' || c == '[')
            depth++;
        else if ((c == '}' || c == ']') && --depth == 0)
            return i + 1;
    }
    return 0;
}

static void reference_boundaries(const char *input, size_t length, struct boundaries *found)
{
    size_t handled = 0, text_length;

    found->count = 0;
    while ((text_length = reference_text_length(input + handled, length - handled)) != 0) {
        handled += text_length;
        record(found, handled);
    }
}

/* A small deterministic generator: the test must fail the same way every run. */
static uint32_t next_random(uint32_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return *state;
}

START_TEST(random_streams_match_the_rescanning_framer)
{
    static const char alphabet[] = "{}[]\"\\,: \n1a\0";
    uint32_t state = 0x2545f491;
    char input[48];

    for (int round = 0; round < 20000; round++) {
        size_t length = next_random(&state) % sizeof(input);
        struct boundaries expected, found;
        size_t cuts[3];

        for (size_t i = 0; i < length; i++)
            input[i] = alphabet[next_random(&state) % (sizeof(alphabet) - 1)];
        reference_boundaries(input, length, &expected);
        feed_in_pieces(input, length, NULL, 0, false, &found);
        assert_same_boundaries(&found, &expected, (size_t)round, "whole (random)");
        for (size_t i = 0; i < 3; i++)
            cuts[i] = length > 0 ? next_random(&state) % (length + 1) : 0;
        /* Cuts must not go backwards. */
        for (size_t i = 1; i < 3; i++)
            if (cuts[i] < cuts[i - 1])
                cuts[i] = cuts[i - 1];
        feed_in_pieces(input, length, cuts, 3, round % 2 == 0, &found);
        assert_same_boundaries(&found, &expected, (size_t)round, "in pieces (random)");
    }
}
END_TEST

START_TEST(deep_nesting_and_long_strings)
{
    size_t depth = 100000, length = 2 * depth + 1;
    char *input = malloc(length);
    struct boundaries found;

    ck_assert_ptr_nonnull(input);
    memset(input, '[', depth);
    memset(input + depth, ']', depth);
    input[2 * depth] = ']';
    feed_in_pieces(input, length, NULL, 0, false, &found);
    ck_assert_uint_eq(found.count, 2);
    ck_assert_uint_eq(found.ends[0], 2 * depth);
    ck_assert_uint_eq(found.ends[1], length);
    /* One closer short: not complete, however long it waits. */
    feed_in_pieces(input, 2 * depth - 1, NULL, 0, false, &found);
    ck_assert_uint_eq(found.count, 0);
    free(input);
}
END_TEST

START_TEST(consumed_keeps_offsets_right)
{
    struct json_stream_scanner scanner;
    char buffer[16];

    json_stream_init(&scanner);
    memcpy(buffer, "{} [1,", 6);
    ck_assert_uint_eq(json_stream_next(&scanner, buffer, 6), 2);
    ck_assert_uint_eq(json_stream_next(&scanner, buffer, 6), 0);
    ck_assert_uint_eq(scanner.text_start, 3);
    ck_assert_uint_eq(scanner.offset, 6);
    /* The caller drops the handled text; the one in progress moves with the buffer. */
    memmove(buffer, buffer + 2, 4);
    json_stream_consumed(&scanner, 2);
    ck_assert_uint_eq(scanner.text_start, 1);
    ck_assert_uint_eq(scanner.offset, 4);
    memcpy(buffer + 4, "2]", 2);
    ck_assert_uint_eq(json_stream_next(&scanner, buffer, 6), 6);

    /* Between texts, dropping skipped or unexamined bytes only moves the start. */
    json_stream_init(&scanner);
    memcpy(buffer, "   ", 3);
    ck_assert_uint_eq(json_stream_next(&scanner, buffer, 3), 0);
    json_stream_consumed(&scanner, 5);
    ck_assert_uint_eq(scanner.offset, 0);
    memcpy(buffer, "[]", 2);
    ck_assert_uint_eq(json_stream_next(&scanner, buffer, 2), 2);
}
END_TEST

START_TEST(consumed_into_the_text_in_progress_restarts)
{
    struct json_stream_scanner scanner;
    char buffer[8];
    size_t examined;

    json_stream_init(&scanner);
    memcpy(buffer, "[\"1,", 4);
    ck_assert_uint_eq(json_stream_next(&scanner, buffer, 4), 0);
    examined = scanner.examined;
    /* The string's opening quote is gone: what is left is scanned as a new stream. */
    memmove(buffer, buffer + 2, 2);
    json_stream_consumed(&scanner, 2);
    ck_assert_int_eq(scanner.state, JSON_STREAM_BETWEEN_TEXTS);
    ck_assert_uint_eq(scanner.offset, 0);
    ck_assert_uint_eq(scanner.examined, examined);
    ck_assert_uint_eq(json_stream_next(&scanner, buffer, 2), 1);
    ck_assert_uint_eq(json_stream_next(&scanner, buffer, 2), 2);
}
END_TEST

START_TEST(shorter_buffer_than_reached_reads_nothing)
{
    struct json_stream_scanner scanner;
    const char *text = "[1,2";
    size_t examined;

    json_stream_init(&scanner);
    ck_assert_uint_eq(json_stream_next(&scanner, text, 4), 0);
    examined = scanner.examined;
    ck_assert_uint_eq(json_stream_next(&scanner, text, 2), 0);
    ck_assert_uint_eq(json_stream_next(&scanner, text, 0), 0);
    ck_assert_uint_eq(scanner.examined, examined);
    ck_assert_uint_eq(scanner.offset, 4);
}
END_TEST

/*
 * Feeds `length` bytes one at a time without dropping anything, as the admin server does
 * while a request is unfinished; returns the bytes examined. Every call but the last must
 * find nothing; the last must find the whole stream. (Mismatches are counted, then asserted
 * once: see record().)
 */
static size_t examined_feeding_byte_by_byte(const char *input, size_t length)
{
    struct json_stream_scanner scanner;
    size_t early_ends = 0;

    json_stream_init(&scanner);
    /* A quadratic scanner stops early instead of running for minutes. */
    for (size_t received = 1; received < length && scanner.examined < 3 * length; received++)
        if (json_stream_next(&scanner, input, received) != 0)
            early_ends++;
    ck_assert_uint_lt(scanner.examined, 3 * length);
    ck_assert_uint_eq(early_ends, 0);
    ck_assert_uint_eq(json_stream_next(&scanner, input, length), length);
    ck_assert_uint_eq(json_stream_next(&scanner, input, length), 0);
    return scanner.examined;
}

START_TEST(work_is_linear_for_a_trickled_string)
{
    size_t length = 1 << 20;
    char *input = malloc(length);
    size_t examined;

    ck_assert_ptr_nonnull(input);
    /* ["...": an unfinished string, a client trickling bytes into it, then closed. */
    memset(input, 'a', length);
    input[0] = '[';
    input[1] = '"';
    input[length - 2] = '"';
    input[length - 1] = ']';
    examined = examined_feeding_byte_by_byte(input, length);
    ck_assert_uint_ge(examined, length);
    ck_assert_uint_lt(examined, 3 * length);
    free(input);
}
END_TEST

START_TEST(work_is_linear_for_trickled_escapes_and_brackets)
{
    static const char pattern[] = "\\\"{[\\\\]}";
    size_t length = 1 << 20;
    char *input = malloc(length);
    size_t examined;

    ck_assert_ptr_nonnull(input);
    /* A top-level string full of escapes and brackets, then a deep array around it. */
    input[0] = '"';
    for (size_t i = 1; i < length / 2; i++)
        input[i] = pattern[(i - 1) % (sizeof(pattern) - 1)];
    /* Wherever the pattern was cut, a plain byte before the closing quote leaves it unescaped. */
    input[length / 2 - 1] = 'x';
    input[length / 2] = '"';
    examined = examined_feeding_byte_by_byte(input, length / 2 + 1);
    ck_assert_uint_lt(examined, 3 * (length / 2 + 1));

    memset(input, '[', length / 2);
    memset(input + length / 2, ']', length / 2);
    examined = examined_feeding_byte_by_byte(input, length);
    ck_assert_uint_ge(examined, length);
    ck_assert_uint_lt(examined, 3 * length);
    free(input);
}
END_TEST

START_TEST(work_is_linear_for_many_small_texts)
{
    size_t length = 1 << 20, texts = 0, wrong_ends = 0, handled = 0, end;
    char *input = malloc(length);
    struct json_stream_scanner scanner;

    ck_assert_ptr_nonnull(input);
    /* "1,1,...": every delimiter ends a token and is then a junk text of its own. */
    for (size_t i = 0; i < length; i++)
        input[i] = i % 2 == 0 ? '1' : ',';
    json_stream_init(&scanner);
    for (size_t received = 1; received <= length; received++) {
        while ((end = json_stream_next(&scanner, input + handled, received - handled)) != 0) {
            if (end != 1)
                wrong_ends++;
            texts++;
            handled += end;
            json_stream_consumed(&scanner, end);
        }
    }
    /* Every token and every comma, the last comma included. */
    ck_assert_uint_eq(wrong_ends, 0);
    ck_assert_uint_eq(texts, length);
    ck_assert_uint_lt(scanner.examined, 3 * length);
    free(input);
}
END_TEST

/* --- The grammar check --------------------------------------------------------------- */

struct grammar_case {
    const char *text;
    size_t length;
    long error_at; /* offset of the first byte that cannot be valid JSON, or -1 */
};

#define GRAMMAR(text, at)                                                                          \
    {                                                                                              \
        text, sizeof(text) - 1, at                                                                 \
    }

static const struct grammar_case grammar_cases[] = {
    /* Valid, including prefixes that may still become valid. */
    GRAMMAR("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon_status\",\"params\":{}}", -1),
    GRAMMAR("[1,-0,0.5,-1.5e+3,2E-2,10e9,true,false,null,\"\",{},[]] \"x\" 42 ", -1),
    GRAMMAR("{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD83D\\uDE00\"}", -1),
    GRAMMAR("[\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xed\x9f\xbf\xf4\x8f\xbf\xbf\"]", -1),
    GRAMMAR("{\"method\": tr", -1),
    GRAMMAR("{\"method\": \"daemon_st", -1),
    GRAMMAR("[1, 2, {\"a\" :", -1),
    GRAMMAR("{}{}[]\"a\"\"b\"", -1),
    GRAMMAR("-", -1),
    GRAMMAR("1.", -1),
    /* Invalid: the offset of the first byte that shows it. */
    GRAMMAR("{\"method\": garbage", 11),
    GRAMMAR("{\"method\" \"x\"}", 10),
    GRAMMAR("{\"a\":1 \"b\":2}", 7),
    GRAMMAR("{1:2}", 1),
    GRAMMAR("{\"a\":1,}", 7),
    GRAMMAR("[1,]", 3),
    GRAMMAR("[,1]", 1),
    GRAMMAR("[}", 1),
    GRAMMAR("{\"a\":[}", 6),
    GRAMMAR("}", 0),
    GRAMMAR(",", 0),
    GRAMMAR("{} ]", 3),
    GRAMMAR("[01]", 2),
    GRAMMAR("01", 1),
    GRAMMAR("[1.e3]", 3),
    GRAMMAR("[1e]", 3),
    GRAMMAR("[-a]", 2),
    GRAMMAR("[+1]", 1),
    GRAMMAR("[.5]", 1),
    GRAMMAR("[trUe]", 3),
    GRAMMAR("truex", 4),
    GRAMMAR("[nul]", 4),
    GRAMMAR("[\"a\\x\"]", 4),
    GRAMMAR("[\"\\u12g4\"]", 6),
    GRAMMAR("[\"a\nb\"]", 3),
    GRAMMAR("[\"a\0b\"]", 3),
    GRAMMAR("[\"\xc3\"]", 3),
    GRAMMAR("[\"\xc0\xaf\"]", 2),
    GRAMMAR("[\"\xe0\x80\xaf\"]", 3),
    GRAMMAR("[\"\xed\xa0\x80\"]", 3),
    GRAMMAR("[\"\xf4\x90\x80\x80\"]", 3),
    GRAMMAR("[\"\xff\"]", 2),
    GRAMMAR("\xef\xbb\xbf{}", 0),
    GRAMMAR("{\"a\":1}\0", 7),
    GRAMMAR("'a'", 0),
};

#define GRAMMAR_COUNT (sizeof(grammar_cases) / sizeof(grammar_cases[0]))

/* Feeds `text` one byte more per call; the error offset found, or -1. */
static long grammar_error(const char *text, size_t length, size_t step)
{
    struct json_stream_scanner scanner;

    json_stream_init(&scanner);
    for (size_t received = step < length ? step : length;; received += step) {
        if (received > length)
            received = length;
        while (json_stream_next(&scanner, text, received) != 0)
            ;
        if (scanner.error != NULL || received == length)
            break;
    }
    return scanner.error != NULL ? (long)scanner.error_offset : -1;
}

START_TEST(grammar_errors_are_found_at_their_first_byte)
{
    for (size_t i = 0; i < GRAMMAR_COUNT; i++) {
        const struct grammar_case *c = &grammar_cases[i];
        long whole = grammar_error(c->text, c->length, c->length > 0 ? c->length : 1);
        long trickled = grammar_error(c->text, c->length, 1);
        ck_assert_msg(whole == c->error_at, "case %zu: error at %ld, expected %ld", i, whole,
                      c->error_at);
        ck_assert_msg(trickled == c->error_at, "case %zu trickled: error at %ld, expected %ld", i,
                      trickled, c->error_at);
    }
}
END_TEST

START_TEST(grammar_check_follows_dropped_texts)
{
    struct json_stream_scanner scanner;
    char buffer[64];

    /* The caller drops each handled text: offsets stay relative to its buffer. */
    json_stream_init(&scanner);
    memcpy(buffer, "{\"a\":1} 12 {\"b\":", 16);
    ck_assert_uint_eq(json_stream_next(&scanner, buffer, 16), 7);
    ck_assert_uint_eq(json_stream_next(&scanner, buffer, 16), 10);
    ck_assert_uint_eq(json_stream_next(&scanner, buffer, 16), 0);
    memmove(buffer, buffer + 10, 6);
    json_stream_consumed(&scanner, 10);
    ck_assert_ptr_null(scanner.error);
    memcpy(buffer + 6, " x}", 3);
    /* Framing still closes the text; the error says it is no JSON, and where. */
    ck_assert_uint_eq(json_stream_next(&scanner, buffer, 9), 9);
    ck_assert_ptr_nonnull(scanner.error);
    ck_assert_uint_eq(scanner.error_offset, 7);
}
END_TEST

START_TEST(end_of_stream_completes_or_fails_the_last_text)
{
    static const struct {
        const char *text;
        size_t end;  /* what json_stream_end returns */
        bool failed; /* whether it leaves an error */
    } cases[] = {
        {"", 0, false},          {"  \n", 0, false},  {"42", 2, false},   {"-0.5e3", 6, false},
        {"{\"a\":1}", 0, false}, {"1.", 2, true},     {"-", 1, true},     {"tru", 3, true},
        {"{\"a\"", 0, true},     {"[1,2", 0, true},   {"\"abc", 0, true}, {"true", 4, false},
        {"null", 4, false},      {"false", 5, false},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct json_stream_scanner scanner;
        size_t length = strlen(cases[i].text);
        json_stream_init(&scanner);
        while (json_stream_next(&scanner, cases[i].text, length) != 0)
            ;
        ck_assert_msg(json_stream_end(&scanner, length) == cases[i].end, "case %zu: end", i);
        ck_assert_msg((scanner.error != NULL) == cases[i].failed, "case %zu: error %s", i,
                      scanner.error != NULL ? scanner.error : "none");
    }
}
END_TEST

static Suite *json_stream_suite(void)
{
    Suite *suite = suite_create("json_stream");
    TCase *tcase = tcase_create("core");

    tcase_set_timeout(tcase, 60);
    tcase_add_test(tcase, boundaries_fed_whole);
    tcase_add_test(tcase, boundaries_fed_byte_by_byte);
    tcase_add_test(tcase, boundaries_split_at_every_position);
    tcase_add_test(tcase, random_streams_match_the_rescanning_framer);
    tcase_add_test(tcase, deep_nesting_and_long_strings);
    tcase_add_test(tcase, consumed_keeps_offsets_right);
    tcase_add_test(tcase, consumed_into_the_text_in_progress_restarts);
    tcase_add_test(tcase, shorter_buffer_than_reached_reads_nothing);
    tcase_add_test(tcase, work_is_linear_for_a_trickled_string);
    tcase_add_test(tcase, work_is_linear_for_trickled_escapes_and_brackets);
    tcase_add_test(tcase, work_is_linear_for_many_small_texts);
    tcase_add_test(tcase, grammar_errors_are_found_at_their_first_byte);
    tcase_add_test(tcase, grammar_check_follows_dropped_texts);
    tcase_add_test(tcase, end_of_stream_completes_or_fails_the_last_text);
    suite_add_tcase(suite, tcase);
    return suite;
}

int main(void)
{
    return test_run_suite(json_stream_suite());
}
