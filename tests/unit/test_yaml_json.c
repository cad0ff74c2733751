/*
 * Unit tests for config/yaml_json.c: scalar resolution, source positions, the refusals that
 * keep configuration files simple, the emitter's round trip, and hostile input.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "yaml_json.h"
#include "test_runner.h"

static struct yaml_json_document *parse(const char *text, char *error, size_t error_size)
{
    struct yaml_json_document *document = NULL;
    int ret = yaml_json_parse_buffer("t.yaml", text, strlen(text), &document, error, error_size);

    ck_assert_msg(ret == 0, "parse failed (%d): %s", ret, error);
    return document;
}

/* Parses `text`, expects failure `expected_ret` with exactly `expected_error`. */
static void expect_error(const char *text, int expected_ret, const char *expected_error)
{
    struct yaml_json_document *document = (void *)1;
    char error[512] = "";
    int ret = yaml_json_parse_buffer("t.yaml", text, strlen(text), &document, error, sizeof(error));

    ck_assert_msg(ret == expected_ret, "for %s: got %d (%s)", text, ret, error);
    ck_assert_ptr_null(document);
    ck_assert_str_eq(error, expected_error);
}

/* Parses "v: SCALAR" and compares the value's JSON encoding. */
static void expect_scalar(const char *yaml_value, const char *expected_json)
{
    char text[256];
    char error[512] = "";
    struct yaml_json_document *document;
    char *encoded;

    snprintf(text, sizeof(text), "v: %s\n", yaml_value);
    document = parse(text, error, sizeof(error));
    encoded = json_dumps(json_object_get(yaml_json_root(document), "v"), JSON_ENCODE_ANY);
    ck_assert_msg(strcmp(encoded, expected_json) == 0, "v: %s gave %s, expected %s", yaml_value,
                  encoded, expected_json);
    free(encoded);
    yaml_json_free(document);
}

START_TEST(test_scalar_resolution)
{
    expect_scalar("42", "42");
    expect_scalar("-7", "-7");
    expect_scalar("+7", "7");
    expect_scalar("0660", "660");
    expect_scalar("0x1F", "31");
    expect_scalar("0x7fffffffffffffff", "9223372036854775807");
    expect_scalar("9223372036854775807", "9223372036854775807");
    expect_scalar("-9223372036854775808", "-9223372036854775808");
    expect_scalar("0X1F", "\"0X1F\"");
    expect_scalar("0x", "\"0x\"");
    expect_scalar("+", "\"+\"");
    expect_scalar("-x", "\"-x\"");
    expect_scalar("1.5", "\"1.5\"");
    expect_scalar("1M", "\"1M\"");
    expect_scalar("12abc", "\"12abc\"");
    expect_scalar("true", "true");
    expect_scalar("True", "true");
    expect_scalar("TRUE", "true");
    expect_scalar("false", "false");
    expect_scalar("FALSE", "false");
    expect_scalar("tRUE", "\"tRUE\"");
    expect_scalar("yes", "\"yes\"");
    expect_scalar("no", "\"no\"");
    expect_scalar("on", "\"on\"");
    expect_scalar("~", "null");
    expect_scalar("null", "null");
    expect_scalar("NULL", "null");
    expect_scalar("", "null");
    expect_scalar("\"42\"", "\"42\"");
    expect_scalar("'true'", "\"true\"");
    expect_scalar("\"\"", "\"\"");
    expect_scalar("!!str 42", "\"42\"");
    expect_scalar("!!str", "\"\"");
    expect_scalar("hello world", "\"hello world\"");
    expect_scalar("\"caf\\u00e9\"", "\"caf\xc3\xa9\"");
    expect_scalar("[1, a, ~]", "[1, \"a\", null]");
    expect_scalar("{}", "{}");
    expect_scalar("|\n  a\n  b\n", "\"a\\nb\\n\"");
}
END_TEST

START_TEST(test_root_kinds)
{
    char error[512] = "";
    struct yaml_json_document *document;

    document = parse("", error, sizeof(error));
    ck_assert(json_is_null(yaml_json_root(document)));
    yaml_json_free(document);

    document = parse("# only a comment\n", error, sizeof(error));
    ck_assert(json_is_null(yaml_json_root(document)));
    yaml_json_free(document);

    document = parse("- a\n- 2\n", error, sizeof(error));
    ck_assert(json_is_array(yaml_json_root(document)));
    ck_assert_uint_eq(json_array_size(yaml_json_root(document)), 2);
    yaml_json_free(document);

    /* An explicit document start and end, and a version directive, are one document. */
    document = parse("%YAML 1.2\n---\na: 1\n...\n", error, sizeof(error));
    ck_assert_int_eq(json_integer_value(json_object_get(yaml_json_root(document), "a")), 1);
    ck_assert_str_eq(yaml_json_name(document), "t.yaml");
    yaml_json_free(document);
}
END_TEST

static void expect_position(const struct yaml_json_document *document, const char *path,
                            unsigned int key_line, unsigned int key_column, unsigned int value_line,
                            unsigned int value_column)
{
    struct yaml_json_position position;

    ck_assert_msg(yaml_json_position(document, path, &position) == 0, "no position for %s", path);
    ck_assert_msg(position.key.line == key_line && position.key.column == key_column &&
                      position.value.line == value_line && position.value.column == value_column,
                  "%s: key %u:%u value %u:%u, expected %u:%u %u:%u", path, position.key.line,
                  position.key.column, position.value.line, position.value.column, key_line,
                  key_column, value_line, value_column);
}

START_TEST(test_positions)
{
    static const char text[] = "# a device\n"
                               "name: tdev0\n"
                               "socket:\n"
                               "  mode: \"0660\"\n"
                               "params:\n"
                               "  ram_size: 1M\n"
                               "  list: [1, 0x10, \"x\"]\n"
                               "  nested:\n"
                               "    - a: 1\n"
                               "    - b\n"
                               "  é: 5\n"
                               "  ü: ä\n";
    struct yaml_json_position position;
    char error[512] = "";
    struct yaml_json_document *document = parse(text, error, sizeof(error));

    expect_position(document, "", 2, 1, 2, 1);
    expect_position(document, "name", 2, 1, 2, 7);
    expect_position(document, "socket", 3, 1, 4, 3);
    expect_position(document, "socket.mode", 4, 3, 4, 9);
    expect_position(document, "params.ram_size", 6, 3, 6, 13);
    expect_position(document, "params.list", 7, 3, 7, 9);
    expect_position(document, "params.list[0]", 7, 10, 7, 10);
    expect_position(document, "params.list[2]", 7, 19, 7, 19);
    expect_position(document, "params.nested[0].a", 9, 7, 9, 10);
    expect_position(document, "params.nested[1]", 10, 7, 10, 7);
    /* Columns count characters, not bytes. */
    expect_position(document, "params.ü", 12, 3, 12, 6);

    ck_assert_int_eq(yaml_json_position(document, "missing", &position), -ENOENT);
    ck_assert_int_eq(yaml_json_position(document, "params.list[3]", &position), -ENOENT);
    ck_assert_int_eq(yaml_json_position(document, "params..list", &position), -ENOENT);
    ck_assert_int_eq(yaml_json_position(document, "params.", &position), -ENOENT);
    ck_assert_int_eq(yaml_json_position(document, "params.list[", &position), -ENOENT);
    ck_assert_int_eq(yaml_json_position(document, "params.list[x]", &position), -ENOENT);
    ck_assert_int_eq(yaml_json_position(document, "params.list[-1]", &position), -ENOENT);
    ck_assert_int_eq(
        yaml_json_position(document, "params.list[99999999999999999999999]", &position), -ENOENT);
    ck_assert_int_eq(yaml_json_position(document, "name.x", &position), -ENOENT);
    ck_assert_int_eq(yaml_json_position(document, "[0]", &position), -ENOENT);
    yaml_json_free(document);

    /* An empty document has no nodes at all. */
    document = parse("", error, sizeof(error));
    ck_assert_int_eq(yaml_json_position(document, "", &position), -ENOENT);
    yaml_json_free(document);
}
END_TEST

START_TEST(test_line_endings_and_bom)
{
    char error[512] = "";
    struct yaml_json_document *document;

    document = parse("\xef\xbb\xbf"
                     "a: 1\r\nb: x\r\n",
                     error, sizeof(error));
    expect_position(document, "a", 1, 1, 1, 4);
    expect_position(document, "b", 2, 1, 2, 4);
    ck_assert_str_eq(json_string_value(json_object_get(yaml_json_root(document), "b")), "x");
    yaml_json_free(document);

    /* A NULL buffer of size 0 is an empty document. */
    ck_assert_int_eq(yaml_json_parse_buffer("empty", NULL, 0, &document, error, sizeof(error)), 0);
    ck_assert(json_is_null(yaml_json_root(document)));
    yaml_json_free(document);
}
END_TEST

START_TEST(test_syntax_errors)
{
    expect_error("a: 1\nb: [1, 2\nc: 3\n", -EINVAL,
                 "t.yaml:3:2: did not find expected ',' or ']' (while parsing a flow sequence "
                 "at line 2, column 4)");
    expect_error("a: 1\n  b: 2\n", -EINVAL,
                 "t.yaml:2:4: mapping values are not allowed in this context");
    expect_error("a: \"open\n", -EINVAL,
                 "t.yaml:2:1: found unexpected end of stream (while scanning a quoted scalar "
                 "at line 1, column 4)");
    expect_error("a:\n\tb: 1\n", -EINVAL,
                 "t.yaml:2:1: found character that cannot start any token (while scanning for "
                 "the next token at line 2, column 1)");
    /* Invalid UTF-8: libyaml gives a byte offset, reported as line and column. */
    expect_error("x: 1\na: \xff\n", -EINVAL, "t.yaml:2:4: invalid leading UTF-8 octet (byte 0xff)");
}
END_TEST

START_TEST(test_refusals)
{
    expect_error("a: 1\nb: 2\na: 3\n", -EINVAL,
                 "t.yaml:3:1: duplicate key \"a\" (first defined at line 1, column 1)");
    expect_error("p:\n  x: 1\n  y: 2\n  \"x\": 3\n", -EINVAL,
                 "t.yaml:4:3: duplicate key \"x\" (first defined at line 2, column 3)");
    /* The same key in different mappings is fine; see test_positions. */
    expect_error("a: &anchor 1\n", -EINVAL,
                 "t.yaml:1:4: anchors and aliases are not supported (anchor \"anchor\"); write "
                 "the value out");
    expect_error("a: 1\nb: *anchor\n", -EINVAL,
                 "t.yaml:2:4: anchors and aliases are not supported (alias \"anchor\"); write "
                 "the value out");
    expect_error("a: 1\n---\nb: 2\n", -EINVAL,
                 "t.yaml:2:1: a second YAML document; a file holds exactly one");
    expect_error("? [1, 2]\n: x\n", -EINVAL,
                 "t.yaml:1:3: a key must be a plain string, not a list");
    expect_error("{a: 1}: x\n", -EINVAL, "t.yaml:1:1: a key must be a plain string, not a mapping");
    expect_error("a: !!int 3\n", -EINVAL, "t.yaml:1:4: tags are not supported (tag \"!!int\")");
    expect_error("a: !custom 3\n", -EINVAL, "t.yaml:1:4: tags are not supported (tag \"!custom\")");
    expect_error("a: \"x\\0y\"\n", -EINVAL, "t.yaml:1:4: NUL characters are not allowed in values");
    expect_error("\"a\\0b\": 1\n", -EINVAL, "t.yaml:1:1: NUL characters are not allowed in keys");
    expect_error("a: 9223372036854775808\n", -ERANGE,
                 "t.yaml:1:4: integer 9223372036854775808 is out of range; quote it to keep it "
                 "as a string");
    expect_error("a: -9223372036854775809\n", -ERANGE,
                 "t.yaml:1:4: integer -9223372036854775809 is out of range; quote it to keep it "
                 "as a string");
    expect_error("a: 0x8000000000000000\n", -ERANGE,
                 "t.yaml:1:4: integer 0x8000000000000000 is out of range; quote it to keep it "
                 "as a string");
}
END_TEST

START_TEST(test_depth_limit)
{
    char text[256];
    char error[512] = "";
    struct yaml_json_document *document;
    size_t length = 0;
    int i;

    /* 32 levels are accepted... */
    for (i = 0; i < YAML_JSON_MAX_DEPTH; i++) {
        text[length++] = '[';
    }
    for (i = 0; i < YAML_JSON_MAX_DEPTH; i++) {
        text[length++] = ']';
    }
    text[length] = '\0';
    document = parse(text, error, sizeof(error));
    yaml_json_free(document);

    /* ...33 are not, and the error points at the 33rd. */
    memmove(text + 1, text, length + 1);
    text[0] = '[';
    strcat(text, "]");
    expect_error(text, -EINVAL, "t.yaml:1:33: nested more than 32 levels deep");

    /* Block mappings count the same way. */
    {
        char *deep = calloc(1, 8192);
        size_t used = 0;
        ck_assert_ptr_nonnull(deep);
        for (i = 0; i < YAML_JSON_MAX_DEPTH + 1; i++) {
            used += (size_t)snprintf(deep + used, 8192 - used, "%*sk:\n", i, "");
        }
        expect_error(deep, -EINVAL, "t.yaml:33:33: nested more than 32 levels deep");
        free(deep);
    }
}
END_TEST

START_TEST(test_size_limit)
{
    size_t size = YAML_JSON_MAX_SIZE + 1;
    struct yaml_json_document *document = NULL;
    char path[] = "/tmp/yaml-json-XXXXXX";
    char *data = malloc(size);
    char error[512] = "";
    char expected[600];
    int fd;

    ck_assert_ptr_nonnull(data);
    memset(data, ' ', size);
    data[0] = '#';
    ck_assert_int_eq(
        yaml_json_parse_buffer("big.yaml", data, size, &document, error, sizeof(error)), -EFBIG);
    ck_assert_str_eq(error, "big.yaml: larger than 1048576 bytes");
    /* Exactly the limit is fine. */
    ck_assert_int_eq(
        yaml_json_parse_buffer("big.yaml", data, size - 1, &document, error, sizeof(error)), 0);
    yaml_json_free(document);

    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, data, size), (ssize_t)size);
    close(fd);
    ck_assert_int_eq(yaml_json_parse_file(path, &document, error, sizeof(error)), -EFBIG);
    snprintf(expected, sizeof(expected), "%s: larger than 1048576 bytes", path);
    ck_assert_str_eq(error, expected);
    unlink(path);
    free(data);
}
END_TEST

START_TEST(test_parse_file)
{
    char directory[] = "/tmp/yaml-json-XXXXXX";
    struct yaml_json_document *document = NULL;
    char error[512] = "";
    char expected[600];
    char path[256];
    FILE *file;

    ck_assert_ptr_nonnull(mkdtemp(directory));
    snprintf(path, sizeof(path), "%s/missing.yaml", directory);
    ck_assert_int_eq(yaml_json_parse_file(path, &document, error, sizeof(error)), -ENOENT);
    snprintf(expected, sizeof(expected), "%s: cannot open: No such file or directory", path);
    ck_assert_str_eq(error, expected);

    ck_assert_int_eq(yaml_json_parse_file(directory, &document, error, sizeof(error)), -EINVAL);
    snprintf(expected, sizeof(expected), "%s: not a regular file", directory);
    ck_assert_str_eq(error, expected);

    snprintf(path, sizeof(path), "%s/ok.yaml", directory);
    file = fopen(path, "w");
    ck_assert_ptr_nonnull(file);
    fputs("a:\n  b: [x]\n", file);
    fclose(file);
    ck_assert_int_eq(yaml_json_parse_file(path, &document, error, sizeof(error)), 0);
    ck_assert_str_eq(yaml_json_name(document), path);
    ck_assert_str_eq(json_string_value(json_array_get(
                         json_object_get(json_object_get(yaml_json_root(document), "a"), "b"), 0)),
                     "x");
    yaml_json_free(document);

    /* Errors inside a file name the file. */
    file = fopen(path, "w");
    ck_assert_ptr_nonnull(file);
    fputs("a: 1\na: 2\n", file);
    fclose(file);
    ck_assert_int_eq(yaml_json_parse_file(path, &document, error, sizeof(error)), -EINVAL);
    snprintf(expected, sizeof(expected),
             "%s:2:1: duplicate key \"a\" (first defined at line 1, "
             "column 1)",
             path);
    ck_assert_str_eq(error, expected);
    unlink(path);
    rmdir(directory);

    /* A NULL error buffer is allowed. */
    ck_assert_int_eq(yaml_json_parse_buffer("x", "[", 1, &document, NULL, 0), -EINVAL);
}
END_TEST

/*
 * Only regular files are read, and finding something else never blocks: a FIFO without a
 * writer (a drop-in swapped for one after the directory scan) is refused at once, a device
 * node too, while a symlink to a regular file is followed.
 */
START_TEST(test_parse_file_refuses_fifo_without_blocking)
{
    char directory[] = "/tmp/yaml-json-XXXXXX";
    struct yaml_json_document *document = NULL;
    char error[512] = "", expected[600], path[256], link_path[256];
    FILE *file;

    ck_assert_ptr_nonnull(mkdtemp(directory));
    snprintf(path, sizeof(path), "%s/fifo.yaml", directory);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    /* Blocking in open() would end this test by SIGALRM. */
    alarm(5);
    ck_assert_int_eq(yaml_json_parse_file(path, &document, error, sizeof(error)), -EINVAL);
    alarm(0);
    snprintf(expected, sizeof(expected), "%s: not a regular file", path);
    ck_assert_str_eq(error, expected);
    ck_assert_ptr_null(document);
    unlink(path);

    ck_assert_int_eq(yaml_json_parse_file("/dev/null", &document, error, sizeof(error)), -EINVAL);
    ck_assert_str_eq(error, "/dev/null: not a regular file");

    snprintf(path, sizeof(path), "%s/target.yaml", directory);
    snprintf(link_path, sizeof(link_path), "%s/link.yaml", directory);
    file = fopen(path, "w");
    ck_assert_ptr_nonnull(file);
    fputs("a: 1\n", file);
    fclose(file);
    ck_assert_int_eq(symlink(path, link_path), 0);
    ck_assert_int_eq(yaml_json_parse_file(link_path, &document, error, sizeof(error)), 0);
    ck_assert_int_eq(json_integer_value(json_object_get(yaml_json_root(document), "a")), 1);
    yaml_json_free(document);
    unlink(link_path);
    unlink(path);
    rmdir(directory);
}
END_TEST

static void expect_round_trip(const char *json_text)
{
    json_error_t json_error;
    json_t *value = json_loads(json_text, JSON_DECODE_ANY, &json_error);
    struct yaml_json_document *document = NULL;
    char error[512] = "";
    char *text = NULL;

    ck_assert_msg(value != NULL, "bad test JSON: %s", json_error.text);
    ck_assert_int_eq(yaml_json_emit(value, &text), 0);
    ck_assert_msg(
        yaml_json_parse_buffer("emitted", text, strlen(text), &document, error, sizeof(error)) == 0,
        "emitted YAML does not parse: %s\n%s", error, text);
    ck_assert_msg(json_equal(value, yaml_json_root(document)), "round trip changed %s into:\n%s",
                  json_text, text);
    yaml_json_free(document);
    free(text);
    json_decref(value);
}

START_TEST(test_emit_round_trip)
{
    char *text = NULL;
    json_t *value;

    expect_round_trip("{\"name\": \"tdev0\", \"enabled\": true, \"n\": -5, \"z\": null}");
    expect_round_trip("{\"strings\": [\"true\", \"False\", \"\", \"0660\", \"0x10\", \"yes\", "
                      "\"No\", \"on\", \"~\", \"null\", \"1.5\", \"-3\", \"+3\", \"1M\", "
                      "\".5\", \"a: b\", \"#x\", \"- x\", \"[x]\", \"{x}\", \"*x\", \"&x\", "
                      "\"!x\", \"%x\", \"@x\", \"`x\", \"'x'\", \"\\\"x\\\"\", \"x #y\", "
                      "\" lead\", \"trail \", \"multi\\nline\", \"tab\\there\", "
                      "\"caf\\u00e9 \\u4e2d\", \"\\u0001ctl\", \"back\\\\slash\"]}");
    expect_round_trip("{\"true\": 1, \"\": 2, \"a b\": 3, \"- k\": 4, \"0x1\": 5}");
    expect_round_trip("{\"empty_map\": {}, \"empty_list\": [], \"nested\": [[1, [2]], {\"a\": "
                      "{\"b\": [{}]}}]}");
    expect_round_trip("[\"a\\n\\nb\", \"end\\n\\n\", \" lead\\nx\", \"x\\n \", \"\\n\", "
                      "\"crlf\\r\\n\", \"# not a comment\\nx\"]");
    expect_round_trip("[1, \"two\", false]");
    expect_round_trip("\"just a string\"");
    expect_round_trip("42");
    expect_round_trip("null");
    expect_round_trip("{\"max\": 9223372036854775807, \"min\": -9223372036854775808}");

    /* A value nested deeper than the parser accepts is refused rather than written. */
    value = json_array();
    {
        json_t *inner = value;
        int i;
        for (i = 0; i < YAML_JSON_MAX_DEPTH; i++) {
            json_t *next = json_array();
            json_array_append_new(inner, next);
            inner = next;
        }
    }
    ck_assert_int_eq(yaml_json_emit(value, &text), -EINVAL);
    ck_assert_ptr_null(text);
    json_decref(value);

    /* A string with a NUL cannot be written. */
    value = json_stringn("a\0b", 3);
    ck_assert_int_eq(yaml_json_emit(value, &text), -EINVAL);
    json_decref(value);

    /* Strings that mean something else to YAML are quoted; plain ones are not. */
    value = json_pack("{s:s, s:s, s:s}", "a", "0660", "b", "tdev0", "c", "yes");
    ck_assert_int_eq(yaml_json_emit(value, &text), 0);
    ck_assert_str_eq(text, "a: \"0660\"\nb: tdev0\nc: \"yes\"\n");
    free(text);
    json_decref(value);
}
END_TEST

/* Random strings over YAML's special characters must all come back unchanged. */
START_TEST(test_emit_random_strings)
{
    static const char alphabet[] = "a0 -:#'\"\\\n\t[]{},&*!|>%@`~?.+\x01\xc3\xa9";
    uint32_t state = 777;
    int round;

    for (round = 0; round < 3000; round++) {
        char text[16];
        size_t length;
        size_t i;
        json_t *value;
        char *yaml = NULL;
        char error[512] = "";
        struct yaml_json_document *document = NULL;

        state = state * 1103515245u + 12345u;
        length = (state >> 16) % sizeof(text);
        for (i = 0; i < length; i++) {
            state = state * 1103515245u + 12345u;
            text[i] = alphabet[(state >> 16) % (sizeof(alphabet) - 1)];
        }
        text[length] = '\0';
        /* Only valid UTF-8 reaches the emitter: jansson refuses the rest. */
        value = json_pack("{s:s, s:[s]}", text, text, "list", text);
        if (value == NULL) {
            continue;
        }
        ck_assert_int_eq(yaml_json_emit(value, &yaml), 0);
        ck_assert_msg(yaml_json_parse_buffer("emitted", yaml, strlen(yaml), &document, error,
                                             sizeof(error)) == 0,
                      "emitted YAML does not parse: %s\n%s", error, yaml);
        ck_assert_msg(json_equal(value, yaml_json_root(document)), "round trip changed:\n%s", yaml);
        yaml_json_free(document);
        free(yaml);
        json_decref(value);
    }
}
END_TEST

START_TEST(test_quote)
{
    char buffer[64];
    char small[12];
    size_t size;

    ck_assert_str_eq(yaml_json_quote(buffer, sizeof(buffer), "plain"), "\"plain\"");
    ck_assert_str_eq(yaml_json_quote(buffer, sizeof(buffer), "a\"b\\c\n\x1b\x7f"),
                     "\"a\\\"b\\\\c\\x0a\\x1b\\x7f\"");
    ck_assert_str_eq(yaml_json_quote(buffer, sizeof(buffer), "caf\xc3\xa9"), "\"caf\xc3\xa9\"");
    /* A broken UTF-8 sequence is escaped, not copied. */
    ck_assert_str_eq(yaml_json_quote(buffer, sizeof(buffer), "x\xc3("), "\"x\\xc3(\"");
    ck_assert_str_eq(yaml_json_quote(buffer, sizeof(buffer), ""), "\"\"");
    /* Exactly fitting text is not shortened; one byte more is. */
    ck_assert_str_eq(yaml_json_quote(small, sizeof(small), "123456789"), "\"123456789\"");
    ck_assert_str_eq(yaml_json_quote(small, sizeof(small), "1234567890"), "\"123456...\"");
    /* Never splits a character or an escape. */
    ck_assert_str_eq(yaml_json_quote(small, sizeof(small), "12345\xc3\xa9xyz"), "\"12345...\"");
    ck_assert_str_eq(yaml_json_quote(small, sizeof(small), "12345\nxyz"), "\"12345...\"");
    ck_assert_str_eq(yaml_json_quote(small, 5, "abc"), "");
    for (size = 6; size < sizeof(buffer); size++) {
        yaml_json_quote(buffer, size, "\x01\x02\xe4\xb8\xad\"abcdefghijklmnopqrstuvwxyz0123456789");
        ck_assert_uint_lt(strlen(buffer), size);
        ck_assert_int_eq(buffer[strlen(buffer) - 1], '"');
    }
}
END_TEST

/* Random and mutated input must fail cleanly or parse; ASan and valgrind watch the rest. */
START_TEST(test_hostile_input)
{
    static const char seed[] = "name: tdev0\nplugin: testdev\nsocket:\n  mode: \"0660\"\n"
                               "params: {a: [1, 2, {b: c}], 'd': \"e\"}\nlist:\n  - x\n  - y\n";
    static const char alphabet[] = "ab:-? \n\t\"'[]{},&*!|>#%@`~0x\\\xff\xc3";
    struct yaml_json_document *document;
    char buffer[sizeof(seed) + 16];
    char error[512];
    uint32_t state = 12345;
    int round;

    for (round = 0; round < 20000; round++) {
        size_t length = sizeof(seed) - 1;
        int edits = 1 + (int)(state % 4);
        int ret;

        memcpy(buffer, seed, sizeof(seed));
        while (edits-- > 0) {
            state = state * 1103515245u + 12345u;
            buffer[(state >> 8) % length] = alphabet[(state >> 20) % (sizeof(alphabet) - 1)];
        }
        if (round % 7 == 0) {
            state = state * 1103515245u + 12345u;
            length = (state >> 8) % length;
        }
        error[0] = '\0';
        document = NULL;
        ret = yaml_json_parse_buffer("fuzz", buffer, length, &document, error, sizeof(error));
        if (ret == 0) {
            ck_assert_ptr_nonnull(yaml_json_root(document));
            yaml_json_free(document);
        } else {
            ck_assert_ptr_null(document);
            ck_assert_msg(strncmp(error, "fuzz:", 5) == 0, "error without location: %s", error);
        }
    }
}
END_TEST

static Suite *yaml_json_suite(void)
{
    Suite *suite = suite_create("yaml_json");
    TCase *tcase = tcase_create("core");

    tcase_set_timeout(tcase, 60);
    tcase_add_test(tcase, test_scalar_resolution);
    tcase_add_test(tcase, test_root_kinds);
    tcase_add_test(tcase, test_positions);
    tcase_add_test(tcase, test_line_endings_and_bom);
    tcase_add_test(tcase, test_syntax_errors);
    tcase_add_test(tcase, test_refusals);
    tcase_add_test(tcase, test_depth_limit);
    tcase_add_test(tcase, test_size_limit);
    tcase_add_test(tcase, test_parse_file);
    tcase_add_test(tcase, test_parse_file_refuses_fifo_without_blocking);
    tcase_add_test(tcase, test_emit_round_trip);
    tcase_add_test(tcase, test_emit_random_strings);
    tcase_add_test(tcase, test_quote);
    tcase_add_test(tcase, test_hostile_input);
    suite_add_tcase(suite, tcase);
    return suite;
}

int main(void)
{
    return test_run_suite(yaml_json_suite());
}
