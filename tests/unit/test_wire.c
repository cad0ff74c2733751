/*
 * Unit tests for the vfio-user wire helpers (lib/wire.c): the header's byte layout and the
 * checks a transport relies on, the VERSION capability JSON as hostile clients may send it
 * (wrong types, out-of-range numbers, embedded NULs, oversize documents) and the spec's
 * negotiation rules (minor version, capability subset, page sizes, twin socket), and the
 * decoding of the client's replies to server-to-client DMA in the spec's layout and QEMU's.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <check.h>
#include <jansson.h>

#include "wire.h"
#include "test_runner.h"

/* A JSON document in a heap buffer of exactly its length, so reads past it are caught. */
static char *exact_copy(const char *text, size_t length)
{
    char *copy = malloc(length > 0 ? length : 1);

    ck_assert_ptr_nonnull(copy);
    memcpy(copy, text, length);
    return copy;
}

/* Parses `text` (its bytes without the NUL the C literal adds) into `capabilities`. */
static int parse(const char *text, struct vu_capabilities *capabilities)
{
    char *copy = exact_copy(text, strlen(text));
    int ret = vu_wire_parse_capabilities(copy, strlen(text), capabilities);

    free(copy);
    return ret;
}

/* Parses {"capabilities": {<members>}}. */
static int parse_members(const char *members, struct vu_capabilities *capabilities)
{
    char text[512];

    snprintf(text, sizeof(text), "{\"capabilities\":{%s}}", members);
    return parse(text, capabilities);
}

static void assert_defaults(const struct vu_capabilities *capabilities)
{
    ck_assert_uint_eq(capabilities->max_msg_fds, 1);
    ck_assert_uint_eq(capabilities->max_data_xfer_size, 1048576);
    ck_assert_uint_eq(capabilities->max_dma_maps, 65535);
    ck_assert_uint_eq(capabilities->pgsizes, 4096);
    ck_assert(!capabilities->write_multiple);
    ck_assert(!capabilities->twin_socket);
}

static void assert_same(const struct vu_capabilities *a, const struct vu_capabilities *b)
{
    ck_assert_uint_eq(a->max_msg_fds, b->max_msg_fds);
    ck_assert_uint_eq(a->max_data_xfer_size, b->max_data_xfer_size);
    ck_assert_uint_eq(a->max_dma_maps, b->max_dma_maps);
    ck_assert_uint_eq(a->pgsizes, b->pgsizes);
    ck_assert_int_eq(a->write_multiple, b->write_multiple);
    ck_assert_int_eq(a->twin_socket, b->twin_socket);
}

static void poison(struct vu_capabilities *capabilities)
{
    memset(capabilities, 0x5a, sizeof(*capabilities));
}

/* ---------------------------------------------------------------------------------------
 * Header.
 */

static void put_header_bytes(uint8_t *bytes, uint16_t id, uint16_t command, uint32_t size,
                             uint32_t flags, uint32_t error)
{
    /* The spec's offsets, written byte by byte in host (little-endian here) order. */
    memcpy(bytes + 0, &id, 2);
    memcpy(bytes + 2, &command, 2);
    memcpy(bytes + 4, &size, 4);
    memcpy(bytes + 8, &flags, 4);
    memcpy(bytes + 12, &error, 4);
}

START_TEST(test_header_decode_fields)
{
    uint8_t bytes[VU_HEADER_SIZE + 1];
    struct vu_header header;

    /* At an odd address: decoding must not assume alignment. */
    put_header_bytes(bytes + 1, 0xbeef, VU_COMMAND_REGION_WRITE, 0x12345678,
                     VU_FLAGS_TYPE_REPLY | VU_FLAGS_ERROR, 0xfeedface);
    ck_assert_int_eq(vu_wire_decode_header(bytes + 1, VU_HEADER_SIZE, &header), 0);
    ck_assert_uint_eq(header.message_id, 0xbeef);
    ck_assert_uint_eq(header.command, VU_COMMAND_REGION_WRITE);
    ck_assert_uint_eq(header.message_size, 0x12345678);
    ck_assert_uint_eq(header.flags, VU_FLAGS_TYPE_REPLY | VU_FLAGS_ERROR);
    ck_assert_uint_eq(header.error, 0xfeedface);
}
END_TEST

START_TEST(test_header_decode_short_buffer)
{
    uint8_t bytes[VU_HEADER_SIZE];
    struct vu_header header;

    put_header_bytes(bytes, 1, VU_COMMAND_VERSION, VU_HEADER_SIZE, 0, 0);
    ck_assert_int_eq(vu_wire_decode_header(bytes, VU_HEADER_SIZE - 1, &header), -EINVAL);
    ck_assert_int_eq(vu_wire_decode_header(bytes, 0, &header), -EINVAL);
    /* Longer buffers are fine: only the first 16 bytes are the header. */
    ck_assert_int_eq(vu_wire_decode_header(bytes, VU_HEADER_SIZE, &header), 0);
}
END_TEST

START_TEST(test_header_message_size_floor)
{
    uint8_t bytes[VU_HEADER_SIZE];
    struct vu_header header;

    for (uint32_t size = 0; size < VU_HEADER_SIZE; size++) {
        put_header_bytes(bytes, 1, VU_COMMAND_VERSION, size, 0, 0);
        ck_assert_int_eq(vu_wire_decode_header(bytes, sizeof(bytes), &header), -EINVAL);
        /* The transport reads message_size even on failure to decide it cannot resync. */
        ck_assert_uint_eq(header.message_size, size);
    }
    put_header_bytes(bytes, 1, VU_COMMAND_DEVICE_RESET, VU_HEADER_SIZE, 0, 0);
    ck_assert_int_eq(vu_wire_decode_header(bytes, sizeof(bytes), &header), 0);
    put_header_bytes(bytes, 1, VU_COMMAND_REGION_WRITE, UINT32_MAX, 0, 0);
    ck_assert_int_eq(vu_wire_decode_header(bytes, sizeof(bytes), &header), 0);
    ck_assert_uint_eq(header.message_size, UINT32_MAX);
}
END_TEST

START_TEST(test_header_types)
{
    uint8_t bytes[VU_HEADER_SIZE];
    struct vu_header header;

    for (uint32_t type = 0; type <= VU_FLAGS_TYPE_MASK; type++) {
        int expected = type == VU_FLAGS_TYPE_COMMAND || type == VU_FLAGS_TYPE_REPLY ? 0 : -EPROTO;
        put_header_bytes(bytes, 7, VU_COMMAND_REGION_READ, 32, type, 0);
        ck_assert_int_eq(vu_wire_decode_header(bytes, sizeof(bytes), &header), expected);
        /* Still decoded, so the body can be skipped and the message answered. */
        ck_assert_uint_eq(header.message_id, 7);
        ck_assert_uint_eq(header.message_size, 32);
    }
}
END_TEST

START_TEST(test_header_flag_bits)
{
    uint8_t bytes[VU_HEADER_SIZE];
    struct vu_header header;

    put_header_bytes(bytes, 1, VU_COMMAND_REGION_WRITE, 40, VU_FLAGS_NO_REPLY, 0);
    ck_assert_int_eq(vu_wire_decode_header(bytes, sizeof(bytes), &header), 0);
    put_header_bytes(bytes, 1, VU_COMMAND_DMA_READ, 16, VU_FLAGS_TYPE_REPLY | VU_FLAGS_ERROR, 5);
    ck_assert_int_eq(vu_wire_decode_header(bytes, sizeof(bytes), &header), 0);
    /* Every reserved bit, one at a time. */
    for (uint32_t bit = 6; bit < 32; bit++) {
        put_header_bytes(bytes, 1, VU_COMMAND_REGION_WRITE, 40, 1u << bit, 0);
        ck_assert_int_eq(vu_wire_decode_header(bytes, sizeof(bytes), &header), -EPROTO);
    }
}
END_TEST

START_TEST(test_header_encode)
{
    uint8_t bytes[VU_HEADER_SIZE + 2], expected[VU_HEADER_SIZE];
    struct vu_header header;

    memset(bytes, 0xcc, sizeof(bytes));
    vu_wire_encode_header(bytes + 1, 0x1234, VU_COMMAND_DMA_MAP, 48,
                          VU_FLAGS_TYPE_REPLY | VU_FLAGS_ERROR, 17);
    put_header_bytes(expected, 0x1234, VU_COMMAND_DMA_MAP, 48, VU_FLAGS_TYPE_REPLY | VU_FLAGS_ERROR,
                     17);
    ck_assert_mem_eq(bytes + 1, expected, VU_HEADER_SIZE);
    /* Exactly 16 bytes written. */
    ck_assert_uint_eq(bytes[0], 0xcc);
    ck_assert_uint_eq(bytes[VU_HEADER_SIZE + 1], 0xcc);

    ck_assert_int_eq(vu_wire_decode_header(bytes + 1, VU_HEADER_SIZE, &header), 0);
    ck_assert_uint_eq(header.message_id, 0x1234);
    ck_assert_uint_eq(header.command, VU_COMMAND_DMA_MAP);
    ck_assert_uint_eq(header.error, 17);
}
END_TEST

START_TEST(test_command_names)
{
    ck_assert_str_eq(vu_wire_command_name(VU_COMMAND_VERSION), "VERSION");
    ck_assert_str_eq(vu_wire_command_name(VU_COMMAND_REGION_READ), "REGION_READ");
    ck_assert_str_eq(vu_wire_command_name(VU_COMMAND_REGION_WRITE_MULTI), "REGION_WRITE_MULTI");
    ck_assert_str_eq(vu_wire_command_name(VU_COMMAND_MIG_DATA_WRITE), "MIG_DATA_WRITE");
    /* 0 and 14 are holes in the numbering; 19 and up are past the end. */
    ck_assert_str_eq(vu_wire_command_name(0), "unknown");
    ck_assert_str_eq(vu_wire_command_name(14), "unknown");
    ck_assert_str_eq(vu_wire_command_name(VU_COMMAND_MAX + 1), "unknown");
    ck_assert_str_eq(vu_wire_command_name(UINT16_MAX), "unknown");
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Capability parsing.
 */

START_TEST(test_defaults)
{
    struct vu_capabilities capabilities;

    poison(&capabilities);
    vu_capabilities_defaults(&capabilities);
    assert_defaults(&capabilities);
}
END_TEST

START_TEST(test_parse_absent_json)
{
    static const char nuls[4] = {0, 0, 0, 0};
    struct vu_capabilities capabilities;

    /* No JSON at all, an empty one, only terminators: the spec's defaults. */
    poison(&capabilities);
    ck_assert_int_eq(vu_wire_parse_capabilities(nuls, 0, &capabilities), 0);
    assert_defaults(&capabilities);
    poison(&capabilities);
    ck_assert_int_eq(vu_wire_parse_capabilities(nuls, 1, &capabilities), 0);
    assert_defaults(&capabilities);
    poison(&capabilities);
    ck_assert_int_eq(vu_wire_parse_capabilities(nuls, sizeof(nuls), &capabilities), 0);
    assert_defaults(&capabilities);
}
END_TEST

START_TEST(test_parse_empty_objects)
{
    struct vu_capabilities capabilities;

    poison(&capabilities);
    ck_assert_int_eq(parse("{}", &capabilities), 0);
    assert_defaults(&capabilities);
    poison(&capabilities);
    ck_assert_int_eq(parse("{\"capabilities\":{}}", &capabilities), 0);
    assert_defaults(&capabilities);
    /* Whitespace JSON allows around tokens. */
    poison(&capabilities);
    ck_assert_int_eq(parse(" \n\t{ \"capabilities\" : { } }\r\n", &capabilities), 0);
    assert_defaults(&capabilities);
}
END_TEST

START_TEST(test_parse_each_capability)
{
    struct vu_capabilities capabilities;

    ck_assert_int_eq(parse_members("\"max_msg_fds\":16", &capabilities), 0);
    ck_assert_uint_eq(capabilities.max_msg_fds, 16);
    ck_assert_uint_eq(capabilities.max_data_xfer_size, 1048576); /* others keep defaults */

    ck_assert_int_eq(parse_members("\"max_data_xfer_size\":4096", &capabilities), 0);
    ck_assert_uint_eq(capabilities.max_data_xfer_size, 4096);
    ck_assert_uint_eq(capabilities.max_msg_fds, 1);

    ck_assert_int_eq(parse_members("\"max_dma_maps\":7", &capabilities), 0);
    ck_assert_uint_eq(capabilities.max_dma_maps, 7);

    ck_assert_int_eq(parse_members("\"pgsizes\":2101248", &capabilities), 0);
    ck_assert_uint_eq(capabilities.pgsizes, 4096 | (2u << 20));

    ck_assert_int_eq(parse_members("\"write_multiple\":true", &capabilities), 0);
    ck_assert(capabilities.write_multiple);
    ck_assert_int_eq(parse_members("\"write_multiple\":false", &capabilities), 0);
    ck_assert(!capabilities.write_multiple);

    ck_assert_int_eq(parse_members("\"twin_socket\":{\"supported\":true}", &capabilities), 0);
    ck_assert(capabilities.twin_socket);
    ck_assert_int_eq(parse_members("\"twin_socket\":{\"supported\":false}", &capabilities), 0);
    ck_assert(!capabilities.twin_socket);
    /* "supported" is optional and defaults to false; fd_index belongs to replies. */
    ck_assert_int_eq(parse_members("\"twin_socket\":{}", &capabilities), 0);
    ck_assert(!capabilities.twin_socket);
    ck_assert_int_eq(
        parse_members("\"twin_socket\":{\"supported\":true,\"fd_index\":0}", &capabilities), 0);
    ck_assert(capabilities.twin_socket);
}
END_TEST

START_TEST(test_parse_qemu_proposal)
{
    /* What QEMU 10.2 sends, NUL included. */
    static const char proposal[] =
        "{\"capabilities\":{\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,"
        "\"pgsizes\":4096,\"max_dma_maps\":65535,\"migration\":{\"max_bitmap_size\":"
        "268435456,\"pgsize\":4096},\"write_multiple\":true}}";
    struct vu_capabilities capabilities;
    char *copy = exact_copy(proposal, sizeof(proposal));

    poison(&capabilities);
    ck_assert_int_eq(vu_wire_parse_capabilities(copy, sizeof(proposal), &capabilities), 0);
    ck_assert_uint_eq(capabilities.max_msg_fds, 16);
    ck_assert_uint_eq(capabilities.max_data_xfer_size, 1048576);
    ck_assert_uint_eq(capabilities.max_dma_maps, 65535);
    ck_assert_uint_eq(capabilities.pgsizes, 4096);
    ck_assert(capabilities.write_multiple);
    ck_assert(!capabilities.twin_socket);
    free(copy);
}
END_TEST

START_TEST(test_parse_ignores_unknown)
{
    struct vu_capabilities capabilities;

    ck_assert_int_eq(parse("{\"capabilities\":{\"future\":[1,\"x\",null],\"max_msg_fds\":3},"
                           "\"vendor\":{\"anything\":true}}",
                           &capabilities),
                     0);
    ck_assert_uint_eq(capabilities.max_msg_fds, 3);
    ck_assert_uint_eq(capabilities.pgsizes, 4096);
    /* Names are case-sensitive: this is an unknown capability, not write_multiple. */
    ck_assert_int_eq(parse_members("\"Write_Multiple\":true", &capabilities), 0);
    ck_assert(!capabilities.write_multiple);
}
END_TEST

START_TEST(test_parse_wrong_types)
{
    static const char *const members[] = {
        "\"max_msg_fds\":\"16\"",
        "\"max_msg_fds\":16.0",
        "\"max_msg_fds\":true",
        "\"max_msg_fds\":null",
        "\"max_data_xfer_size\":[4096]",
        "\"max_dma_maps\":{}",
        "\"pgsizes\":4096.5",
        "\"pgsizes\":\"4096\"",
        "\"write_multiple\":1",
        "\"write_multiple\":\"true\"",
        "\"write_multiple\":null",
        "\"twin_socket\":true",
        "\"twin_socket\":[]",
        "\"twin_socket\":{\"supported\":1}",
        "\"twin_socket\":{\"supported\":\"yes\"}",
    };
    struct vu_capabilities capabilities;

    for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++)
        ck_assert_msg(parse_members(members[i], &capabilities) == -EINVAL, "accepted %s",
                      members[i]);

    ck_assert_int_eq(parse("{\"capabilities\":[]}", &capabilities), -EINVAL);
    ck_assert_int_eq(parse("{\"capabilities\":null}", &capabilities), -EINVAL);
    ck_assert_int_eq(parse("{\"capabilities\":\"all\"}", &capabilities), -EINVAL);
    /* The document itself must be an object. */
    ck_assert_int_eq(parse("[]", &capabilities), -EINVAL);
    ck_assert_int_eq(parse("[{\"capabilities\":{}}]", &capabilities), -EINVAL);
    ck_assert_int_eq(parse("null", &capabilities), -EINVAL);
    ck_assert_int_eq(parse("42", &capabilities), -EINVAL);
    ck_assert_int_eq(parse("\"capabilities\"", &capabilities), -EINVAL);
}
END_TEST

START_TEST(test_parse_ranges)
{
    struct vu_capabilities capabilities;

    ck_assert_int_eq(parse_members("\"max_msg_fds\":-1", &capabilities), -EINVAL);
    ck_assert_int_eq(parse_members("\"max_msg_fds\":4294967296", &capabilities), -EINVAL);
    ck_assert_int_eq(parse_members("\"max_msg_fds\":4294967295", &capabilities), 0);
    ck_assert_uint_eq(capabilities.max_msg_fds, UINT32_MAX);
    ck_assert_int_eq(parse_members("\"max_msg_fds\":0", &capabilities), 0);
    ck_assert_uint_eq(capabilities.max_msg_fds, 0);

    ck_assert_int_eq(parse_members("\"max_data_xfer_size\":4294967296", &capabilities), -EINVAL);
    ck_assert_int_eq(parse_members("\"max_data_xfer_size\":-4096", &capabilities), -EINVAL);
    ck_assert_int_eq(parse_members("\"max_dma_maps\":4294967296", &capabilities), -EINVAL);
    ck_assert_int_eq(parse_members("\"max_dma_maps\":-1", &capabilities), -EINVAL);

    ck_assert_int_eq(parse_members("\"pgsizes\":-4096", &capabilities), -EINVAL);
    ck_assert_int_eq(parse_members("\"pgsizes\":9223372036854775807", &capabilities), 0);
    ck_assert_uint_eq(capabilities.pgsizes, INT64_MAX);
    /* Beyond what a JSON integer holds here: refused, not wrapped. */
    ck_assert_int_eq(parse_members("\"pgsizes\":9223372036854775808", &capabilities), -EINVAL);
    ck_assert_int_eq(parse_members("\"pgsizes\":18446744073709551616", &capabilities), -EINVAL);
}
END_TEST

START_TEST(test_parse_nul_handling)
{
    static const char terminated[] = "{\"capabilities\":{\"max_msg_fds\":9}}";
    static const char two_documents[] = "{}\0{\"capabilities\":{\"max_msg_fds\":9}}";
    static const char nul_in_key[] = "{\"capabilities\":{\"max_msg\0_fds\":9}}";
    static const char nul_in_value[] = "{\"capabilities\":{\"max_msg_fds\":9\0}}";
    struct vu_capabilities capabilities;
    char padded[sizeof(terminated) + 8];
    char *copy;

    /* Unterminated, exactly its length: the parser reads no byte past it. */
    copy = exact_copy(terminated, sizeof(terminated) - 1);
    ck_assert_int_eq(vu_wire_parse_capabilities(copy, sizeof(terminated) - 1, &capabilities), 0);
    ck_assert_uint_eq(capabilities.max_msg_fds, 9);
    free(copy);

    /* One terminator, and several. */
    ck_assert_int_eq(vu_wire_parse_capabilities(terminated, sizeof(terminated), &capabilities), 0);
    ck_assert_uint_eq(capabilities.max_msg_fds, 9);
    memset(padded, 0, sizeof(padded));
    memcpy(padded, terminated, sizeof(terminated) - 1);
    ck_assert_int_eq(vu_wire_parse_capabilities(padded, sizeof(padded), &capabilities), 0);
    ck_assert_uint_eq(capabilities.max_msg_fds, 9);

    /* A NUL anywhere but at the end hides bytes from a C-string reader: refused. */
    ck_assert_int_eq(
        vu_wire_parse_capabilities(two_documents, sizeof(two_documents) - 1, &capabilities),
        -EINVAL);
    ck_assert_int_eq(vu_wire_parse_capabilities(nul_in_key, sizeof(nul_in_key) - 1, &capabilities),
                     -EINVAL);
    ck_assert_int_eq(
        vu_wire_parse_capabilities(nul_in_value, sizeof(nul_in_value) - 1, &capabilities), -EINVAL);
    /* Bytes after the terminator are not JSON either. */
    memcpy(padded, terminated, sizeof(terminated));
    padded[sizeof(terminated)] = ' ';
    ck_assert_int_eq(vu_wire_parse_capabilities(padded, sizeof(terminated) + 1, &capabilities),
                     -EINVAL);
}
END_TEST

START_TEST(test_parse_malformed)
{
    struct vu_capabilities capabilities;

    ck_assert_int_eq(parse("{", &capabilities), -EINVAL);
    ck_assert_int_eq(parse("{\"capabilities\":{\"max_msg_fds\":1}", &capabilities), -EINVAL);
    ck_assert_int_eq(parse("{} {}", &capabilities), -EINVAL);
    ck_assert_int_eq(parse("{}x", &capabilities), -EINVAL);
    ck_assert_int_eq(parse("{'capabilities':{}}", &capabilities), -EINVAL);
    ck_assert_int_eq(parse("{\"\xff\xfe\":1}", &capabilities), -EINVAL); /* not UTF-8 */
    /* A repeated member is ambiguous: which one the client meant is unknowable. */
    ck_assert_int_eq(parse_members("\"max_msg_fds\":1,\"max_msg_fds\":16", &capabilities), -EINVAL);
    ck_assert_int_eq(parse("{\"capabilities\":{},\"capabilities\":{}}", &capabilities), -EINVAL);
}
END_TEST

START_TEST(test_parse_size_limit)
{
    static const char body[] = "{\"capabilities\":{\"max_dma_maps\":5}}";
    struct vu_capabilities capabilities;
    size_t length = VU_VERSION_JSON_MAX;
    char *text = malloc(VU_VERSION_JSON_MAX + 2);

    ck_assert_ptr_nonnull(text);
    /* Exactly the limit (whitespace-padded), then with its terminator: accepted. */
    memset(text, ' ', VU_VERSION_JSON_MAX + 1);
    memcpy(text, body, sizeof(body) - 1);
    ck_assert_int_eq(vu_wire_parse_capabilities(text, length, &capabilities), 0);
    ck_assert_uint_eq(capabilities.max_dma_maps, 5);
    text[length] = '\0';
    ck_assert_int_eq(vu_wire_parse_capabilities(text, length + 1, &capabilities), 0);
    /* One byte more: refused before any parsing. */
    text[length] = ' ';
    text[length + 1] = '\0';
    ck_assert_int_eq(vu_wire_parse_capabilities(text, length + 1, &capabilities), -EINVAL);
    ck_assert_int_eq(vu_wire_parse_capabilities(text, length + 2, &capabilities), -EINVAL);
    free(text);
}
END_TEST

/* `depth` nested arrays as the value of an unknown capability. */
static size_t nested_document(char *text, int depth)
{
    size_t length = (size_t)sprintf(text, "{\"capabilities\":{\"x\":");

    for (int i = 0; i < depth; i++)
        text[length++] = '[';
    for (int i = 0; i < depth; i++)
        text[length++] = ']';
    text[length++] = '}';
    text[length++] = '}';
    return length;
}

START_TEST(test_parse_deep_nesting)
{
    struct vu_capabilities capabilities;
    char *text = malloc(64 + 2 * 2100);
    size_t length;

    ck_assert_ptr_nonnull(text);
    /* Deep but within the size limit: parsed (and ignored) without exhausting the stack. */
    length = nested_document(text, 1000);
    ck_assert_int_le(length, VU_VERSION_JSON_MAX);
    ck_assert_int_eq(vu_wire_parse_capabilities(text, length, &capabilities), 0);
    assert_defaults(&capabilities);
    /* The size limit is what bounds the depth. */
    length = nested_document(text, 2100);
    ck_assert_int_gt(length, VU_VERSION_JSON_MAX);
    ck_assert_int_eq(vu_wire_parse_capabilities(text, length, &capabilities), -EINVAL);
    free(text);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Formatting.
 */

START_TEST(test_format_round_trip)
{
    const struct vu_capabilities all = {
        .max_msg_fds = 16,
        .max_data_xfer_size = UINT32_MAX,
        .max_dma_maps = 0,
        .pgsizes = 4096 | (1ull << 30),
        .write_multiple = true,
        .twin_socket = true,
    };
    struct vu_capabilities defaults, parsed;
    char *text;

    vu_capabilities_defaults(&defaults);
    text = vu_wire_format_capabilities(&defaults, -1);
    ck_assert_ptr_nonnull(text);
    ck_assert_int_eq(vu_wire_parse_capabilities(text, strlen(text) + 1, &parsed), 0);
    assert_same(&parsed, &defaults);
    ck_assert_ptr_null(strstr(text, "twin_socket"));
    free(text);

    text = vu_wire_format_capabilities(&all, -1);
    ck_assert_ptr_nonnull(text);
    poison(&parsed);
    ck_assert_int_eq(vu_wire_parse_capabilities(text, strlen(text), &parsed), 0);
    assert_same(&parsed, &all);
    ck_assert_ptr_null(strstr(text, "fd_index"));
    free(text);
}
END_TEST

START_TEST(test_format_twin_fd_index)
{
    const struct vu_capabilities twin = {
        .max_msg_fds = 1, .max_data_xfer_size = 4096, .pgsizes = 4096, .twin_socket = true};
    const struct vu_capabilities no_twin = {
        .max_msg_fds = 1, .max_data_xfer_size = 4096, .pgsizes = 4096, .twin_socket = false};
    json_t *root, *member;
    char *text;

    text = vu_wire_format_capabilities(&twin, 2);
    ck_assert_ptr_nonnull(text);
    root = json_loads(text, 0, NULL);
    ck_assert_ptr_nonnull(root);
    member = json_object_get(json_object_get(json_object_get(root, "capabilities"), "twin_socket"),
                             "fd_index");
    ck_assert(json_is_integer(member));
    ck_assert_int_eq(json_integer_value(member), 2);
    ck_assert(json_is_true(json_object_get(
        json_object_get(json_object_get(root, "capabilities"), "twin_socket"), "supported")));
    json_decref(root);
    free(text);

    /* Without the capability there is no socket to point at. */
    text = vu_wire_format_capabilities(&no_twin, 0);
    ck_assert_ptr_nonnull(text);
    ck_assert_ptr_null(strstr(text, "twin_socket"));
    ck_assert_ptr_null(strstr(text, "fd_index"));
    free(text);
}
END_TEST

/* ---------------------------------------------------------------------------------------
 * Negotiation.
 */

static const struct vu_capabilities server_limits = {
    .max_msg_fds = VU_SERVER_MAX_MSG_FDS,
    .max_data_xfer_size = VU_SERVER_MAX_DATA_XFER_SIZE,
    .max_dma_maps = VU_SERVER_MAX_DMA_MAPS,
    .pgsizes = 4096 | (2u << 20),
    .write_multiple = true,
    .twin_socket = true,
};

struct negotiation {
    int ret;
    struct vu_capabilities session;
    struct vu_capabilities reply; /* the reply JSON, parsed back */
    uint16_t reply_minor;
    char *reply_json;
    json_t *reply_root;
};

static struct negotiation outcome;

static void negotiation_teardown(void)
{
    free(outcome.reply_json);
    json_decref(outcome.reply_root);
    memset(&outcome, 0, sizeof(outcome));
}

/* Negotiates `members` as {"capabilities": {members}} (NULL: no JSON at all). */
static int negotiate_full(uint16_t major, uint16_t minor, const char *members,
                          const struct vu_capabilities *limits, bool twin_offered)
{
    char text[512] = "";
    size_t length = 0;
    char *copy;

    negotiation_teardown();
    outcome.reply_minor = 0xeeee;
    if (members != NULL)
        length = (size_t)snprintf(text, sizeof(text), "{\"capabilities\":{%s}}", members) + 1;
    copy = exact_copy(text, length);
    outcome.ret =
        vu_wire_negotiate_version(major, minor, copy, length, limits, twin_offered,
                                  &outcome.session, &outcome.reply_minor, &outcome.reply_json);
    free(copy);
    if (outcome.ret == 0) {
        ck_assert_ptr_nonnull(outcome.reply_json);
        ck_assert_int_eq(vu_wire_parse_capabilities(outcome.reply_json,
                                                    strlen(outcome.reply_json) + 1, &outcome.reply),
                         0);
        outcome.reply_root = json_loads(outcome.reply_json, 0, NULL);
        ck_assert_ptr_nonnull(outcome.reply_root);
    }
    return outcome.ret;
}

static int negotiate(const char *members)
{
    return negotiate_full(VU_VERSION_MAJOR, 0, members, &server_limits, true);
}

static json_t *reply_capability(const char *name)
{
    return json_object_get(json_object_get(outcome.reply_root, "capabilities"), name);
}

START_TEST(test_negotiate_major_mismatch)
{
    ck_assert_int_eq(negotiate_full(1, 0, "", &server_limits, true), -ENOTSUP);
    ck_assert_ptr_null(outcome.reply_json);
    ck_assert_uint_eq(outcome.reply_minor, 0xeeee);
    ck_assert_int_eq(negotiate_full(UINT16_MAX, 1, NULL, &server_limits, true), -ENOTSUP);
    /* The version is checked first: bad JSON from a foreign major is still -ENOTSUP. */
    ck_assert_int_eq(negotiate_full(2, 0, "\"max_msg_fds\":\"x\"", &server_limits, true), -ENOTSUP);
}
END_TEST

START_TEST(test_negotiate_minor)
{
    ck_assert_int_eq(negotiate_full(VU_VERSION_MAJOR, 0, NULL, &server_limits, true), 0);
    ck_assert_uint_eq(outcome.reply_minor, 0);
    ck_assert_int_eq(negotiate_full(VU_VERSION_MAJOR, VU_VERSION_MINOR, NULL, &server_limits, true),
                     0);
    ck_assert_uint_eq(outcome.reply_minor, VU_VERSION_MINOR);
    /* A newer client gets the newest minor this server speaks, never more than proposed. */
    ck_assert_int_eq(negotiate_full(VU_VERSION_MAJOR, 7, NULL, &server_limits, true), 0);
    ck_assert_uint_eq(outcome.reply_minor, VU_VERSION_MINOR);
    ck_assert_int_eq(negotiate_full(VU_VERSION_MAJOR, UINT16_MAX, NULL, &server_limits, true), 0);
    ck_assert_uint_eq(outcome.reply_minor, VU_VERSION_MINOR);
}
END_TEST

START_TEST(test_negotiate_no_json)
{
    /* A client that sent no JSON gets the spec's defaults wherever it has a say. */
    ck_assert_int_eq(negotiate(NULL), 0);
    ck_assert_uint_eq(outcome.session.max_msg_fds, 1);
    ck_assert_uint_eq(outcome.session.max_data_xfer_size, 1048576);
    ck_assert_uint_eq(outcome.session.max_dma_maps, VU_SERVER_MAX_DMA_MAPS);
    ck_assert_uint_eq(outcome.session.pgsizes, 4096);
    ck_assert(!outcome.session.write_multiple);
    ck_assert(!outcome.session.twin_socket);
    ck_assert(!outcome.reply.write_multiple);
    ck_assert(!outcome.reply.twin_socket);
    ck_assert_uint_eq(outcome.reply.pgsizes, 4096);
}
END_TEST

START_TEST(test_negotiate_receive_limits)
{
    /* max_msg_fds and max_data_xfer_size say what the *sender* can receive: the session
     * keeps the client's (bounding what we send), the reply states ours. */
    ck_assert_int_eq(negotiate("\"max_msg_fds\":3,\"max_data_xfer_size\":8192"), 0);
    ck_assert_uint_eq(outcome.session.max_msg_fds, 3);
    ck_assert_uint_eq(outcome.session.max_data_xfer_size, 8192);
    ck_assert_uint_eq(outcome.reply.max_msg_fds, VU_SERVER_MAX_MSG_FDS);
    ck_assert_uint_eq(outcome.reply.max_data_xfer_size, VU_SERVER_MAX_DATA_XFER_SIZE);

    ck_assert_int_eq(negotiate("\"max_msg_fds\":0"), 0);
    ck_assert_uint_eq(outcome.session.max_msg_fds, 0);
    /* A client that can receive no data at all cannot be served. */
    ck_assert_int_eq(negotiate("\"max_data_xfer_size\":0"), -EINVAL);
    ck_assert_ptr_null(outcome.reply_json);
}
END_TEST

START_TEST(test_negotiate_dma_maps)
{
    ck_assert_int_eq(negotiate("\"max_dma_maps\":10"), 0);
    ck_assert_uint_eq(outcome.session.max_dma_maps, 10);
    ck_assert_uint_eq(outcome.reply.max_dma_maps, 10);
    ck_assert_int_eq(negotiate("\"max_dma_maps\":65535"), 0);
    ck_assert_uint_eq(outcome.session.max_dma_maps, VU_SERVER_MAX_DMA_MAPS);
    ck_assert_uint_eq(outcome.reply.max_dma_maps, VU_SERVER_MAX_DMA_MAPS);
}
END_TEST

START_TEST(test_negotiate_pgsizes)
{
    /* The intersection, in the session and in the reply. */
    ck_assert_int_eq(negotiate("\"pgsizes\":2166784"), 0); /* 4K | 64K | 2M */
    ck_assert_uint_eq(outcome.session.pgsizes, 4096 | (2u << 20));
    ck_assert_uint_eq(outcome.reply.pgsizes, 4096 | (2u << 20));
    ck_assert_int_eq(negotiate("\"pgsizes\":2097152"), 0); /* 2M only */
    ck_assert_uint_eq(outcome.session.pgsizes, 2u << 20);
    /* Nothing in common: no page size to map with. */
    ck_assert_int_eq(negotiate("\"pgsizes\":65536"), -EINVAL);
    ck_assert_ptr_null(outcome.reply_json);
    ck_assert_int_eq(negotiate("\"pgsizes\":0"), -EINVAL);

    /* A server without 4 KiB pages and a client that left pgsizes at its 4 KiB default. */
    struct vu_capabilities huge_only = server_limits;
    huge_only.pgsizes = 2u << 20;
    ck_assert_int_eq(negotiate_full(VU_VERSION_MAJOR, 0, "", &huge_only, true), -EINVAL);
}
END_TEST

START_TEST(test_negotiate_write_multiple)
{
    struct vu_capabilities no_multi = server_limits;

    no_multi.write_multiple = false;
    ck_assert_int_eq(negotiate("\"write_multiple\":true"), 0);
    ck_assert(outcome.session.write_multiple);
    ck_assert(json_is_true(reply_capability("write_multiple")));
    ck_assert_int_eq(negotiate("\"write_multiple\":false"), 0);
    ck_assert(!outcome.session.write_multiple);
    ck_assert(!json_is_true(reply_capability("write_multiple")));
    ck_assert_int_eq(negotiate(""), 0);
    ck_assert(!outcome.session.write_multiple);
    ck_assert(!json_is_true(reply_capability("write_multiple")));
    ck_assert_int_eq(
        negotiate_full(VU_VERSION_MAJOR, 0, "\"write_multiple\":true", &no_multi, true), 0);
    ck_assert(!outcome.session.write_multiple);
    ck_assert(!json_is_true(reply_capability("write_multiple")));
}
END_TEST

START_TEST(test_negotiate_twin_socket)
{
    json_t *twin;

    /* Both sides: supported, with fd_index 0 naming the socket in the reply. */
    ck_assert_int_eq(negotiate("\"twin_socket\":{\"supported\":true}"), 0);
    ck_assert(outcome.session.twin_socket);
    twin = reply_capability("twin_socket");
    ck_assert(json_is_true(json_object_get(twin, "supported")));
    ck_assert(json_is_integer(json_object_get(twin, "fd_index")));
    ck_assert_int_eq(json_integer_value(json_object_get(twin, "fd_index")), 0);

    /* The server does not offer it: absent or not supported, and no fd_index. */
    ck_assert_int_eq(negotiate_full(VU_VERSION_MAJOR, 0, "\"twin_socket\":{\"supported\":true}",
                                    &server_limits, false),
                     0);
    ck_assert(!outcome.session.twin_socket);
    twin = reply_capability("twin_socket");
    ck_assert(!json_is_true(json_object_get(twin, "supported")));
    ck_assert_ptr_null(json_object_get(twin, "fd_index"));

    /* The client did not ask: never enabled (the spec: if and only if the client asked). */
    ck_assert_int_eq(negotiate(""), 0);
    ck_assert(!outcome.session.twin_socket);
    ck_assert(!json_is_true(json_object_get(reply_capability("twin_socket"), "supported")));
    ck_assert_int_eq(negotiate("\"twin_socket\":{\"supported\":false}"), 0);
    ck_assert(!outcome.session.twin_socket);
    ck_assert_ptr_null(json_object_get(reply_capability("twin_socket"), "fd_index"));
}
END_TEST

START_TEST(test_negotiate_reply_is_subset)
{
    /* Everything the reply enables was proposed; its JSON is NUL-terminated text. */
    ck_assert_int_eq(negotiate("\"max_msg_fds\":16,\"max_data_xfer_size\":1048576,"
                               "\"pgsizes\":4096,\"max_dma_maps\":65535,"
                               "\"migration\":{\"pgsize\":4096},\"write_multiple\":true"),
                     0);
    ck_assert_uint_eq(outcome.reply.pgsizes & ~(uint64_t)4096, 0);
    ck_assert_uint_le(outcome.reply.max_dma_maps, 65535);
    ck_assert(outcome.reply.write_multiple);
    ck_assert(!outcome.reply.twin_socket);
    /* Migration is not offered yet, so the reply does not echo it. */
    ck_assert_ptr_null(reply_capability("migration"));
    ck_assert_uint_eq(strlen(outcome.reply_json), strnlen(outcome.reply_json, 4096));
}
END_TEST

START_TEST(test_negotiate_bad_json)
{
    ck_assert_int_eq(negotiate("\"max_msg_fds\":-1"), -EINVAL);
    ck_assert_ptr_null(outcome.reply_json);
    ck_assert_int_eq(negotiate("\"write_multiple\":\"yes\""), -EINVAL);
    ck_assert_ptr_null(outcome.reply_json);
}
END_TEST

/* --- Replies to the server's DMA_READ and DMA_WRITE -------------------------------- */

#define DMA_ADDRESS 0x123456789000ull
#define DMA_COUNT   64u

/*
 * A reply payload in a heap buffer of exactly its length, so a read past it is caught:
 * the address, a count of `count_size` bytes (8, or 4 as QEMU writes it), `data_length`
 * bytes of `data` and `padding` zero bytes.
 */
static uint8_t *dma_payload(uint64_t address, uint64_t count, size_t count_size,
                            const uint8_t *data, size_t data_length, size_t padding, size_t *length)
{
    uint8_t *payload;

    *length = 8 + count_size + data_length + padding;
    payload = calloc(1, *length);
    ck_assert_ptr_nonnull(payload);
    memcpy(payload, &address, 8);
    memcpy(payload + 8, &count, count_size);
    if (data_length > 0)
        memcpy(payload + 8 + count_size, data, data_length);
    return payload;
}

/* Decodes a DMA_READ reply of DMA_COUNT bytes at DMA_ADDRESS; on success checks that the
 * data read is `data`. */
static int decode_read(const uint8_t *payload, size_t length, enum vu_dma_layout known,
                       const uint8_t *data, struct vu_dma_reply *reply)
{
    int ret =
        vu_wire_decode_dma_reply(false, payload, length, DMA_ADDRESS, DMA_COUNT, known, reply);

    if (ret == 0) {
        ck_assert_uint_le(reply->data_offset + DMA_COUNT, length);
        ck_assert_mem_eq(payload + reply->data_offset, data, DMA_COUNT);
    } else {
        ck_assert_int_eq(ret, -EPROTO);
        ck_assert_ptr_nonnull(reply->problem);
    }
    return ret;
}

/* Bytes none of which is zero, so a shift by four shows. */
static void fill_pattern(uint8_t *data, size_t length)
{
    for (size_t i = 0; i < length; i++)
        data[i] = (uint8_t)(i * 7 + 1) | 1;
}

START_TEST(test_dma_read_reply_spec_layout)
{
    uint8_t data[DMA_COUNT];
    struct vu_dma_reply reply;
    size_t length;
    uint8_t *payload;

    fill_pattern(data, sizeof(data));
    payload = dma_payload(DMA_ADDRESS, DMA_COUNT, 8, data, sizeof(data), 0, &length);
    ck_assert_uint_eq(length, 16 + DMA_COUNT);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_UNKNOWN, data, &reply), 0);
    ck_assert_int_eq(reply.layout, VU_DMA_LAYOUT_COUNT64);
    ck_assert_uint_eq(reply.data_offset, 16);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_COUNT64, data, &reply), 0);
    /* A client that answered with a 32-bit count before does not switch. */
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_COUNT32, data, &reply), -EPROTO);
    free(payload);
}
END_TEST

/* QEMU's: a 32-bit count, the data at 12, and its structure's 4 bytes of padding. */
START_TEST(test_dma_read_reply_qemu_layout)
{
    uint8_t data[DMA_COUNT];
    struct vu_dma_reply reply;
    size_t length;
    uint8_t *payload;

    fill_pattern(data, sizeof(data));
    payload = dma_payload(DMA_ADDRESS, DMA_COUNT, 4, data, sizeof(data), 4, &length);
    ck_assert_uint_eq(length, 16 + DMA_COUNT);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_UNKNOWN, data, &reply), 0);
    ck_assert_int_eq(reply.layout, VU_DMA_LAYOUT_COUNT32);
    ck_assert_uint_eq(reply.data_offset, 12);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_COUNT32, data, &reply), 0);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_COUNT64, data, &reply), -EPROTO);
    /* Padding that is not zero is no padding: neither layout fits. */
    payload[length - 1] = 1;
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_UNKNOWN, data, &reply), -EPROTO);
    free(payload);

    /* Without the padding: 12 + count bytes. */
    payload = dma_payload(DMA_ADDRESS, DMA_COUNT, 4, data, sizeof(data), 0, &length);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_UNKNOWN, data, &reply), 0);
    ck_assert_int_eq(reply.layout, VU_DMA_LAYOUT_COUNT32);
    ck_assert_uint_eq(reply.data_offset, 12);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_COUNT64, data, &reply), -EPROTO);
    free(payload);
}
END_TEST

/*
 * Data that starts with four zero bytes, in QEMU's layout: the 64-bit count reads right
 * too (its upper half is the zeros), and so does the padding. Either reading is a whole
 * reply, so only the client's earlier replies can tell which it is.
 */
START_TEST(test_dma_read_reply_ambiguous)
{
    uint8_t data[DMA_COUNT];
    struct vu_dma_reply reply;
    size_t length;
    uint8_t *payload;

    fill_pattern(data, sizeof(data));
    memset(data, 0, 4);
    payload = dma_payload(DMA_ADDRESS, DMA_COUNT, 4, data, sizeof(data), 4, &length);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_UNKNOWN, data, &reply), -EPROTO);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_COUNT32, data, &reply), 0);
    ck_assert_int_eq(reply.layout, VU_DMA_LAYOUT_COUNT32);
    ck_assert_uint_eq(reply.data_offset, 12);
    /* Read as the spec's, the same bytes are other data. */
    ck_assert_int_eq(vu_wire_decode_dma_reply(false, payload, length, DMA_ADDRESS, DMA_COUNT,
                                              VU_DMA_LAYOUT_COUNT64, &reply),
                     0);
    ck_assert_uint_eq(reply.data_offset, 16);
    free(payload);

    /* The spec's layout with data that ends in four zero bytes: the same question. */
    fill_pattern(data, sizeof(data));
    memset(data + DMA_COUNT - 4, 0, 4);
    payload = dma_payload(DMA_ADDRESS, DMA_COUNT, 8, data, sizeof(data), 0, &length);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_UNKNOWN, data, &reply), -EPROTO);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_COUNT64, data, &reply), 0);
    ck_assert_uint_eq(reply.data_offset, 16);
    free(payload);

    /* Data both readings agree on needs no answer. */
    memset(data, 0, sizeof(data));
    payload = dma_payload(DMA_ADDRESS, DMA_COUNT, 4, data, sizeof(data), 4, &length);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_UNKNOWN, data, &reply), 0);
    ck_assert_int_eq(reply.layout, VU_DMA_LAYOUT_UNKNOWN);
    free(payload);
}
END_TEST

START_TEST(test_dma_read_reply_wrong_fields)
{
    uint8_t data[DMA_COUNT + 8];
    struct vu_dma_reply reply;
    size_t length;
    uint8_t *payload;

    fill_pattern(data, sizeof(data));
    /* Another address, in both layouts. */
    payload = dma_payload(DMA_ADDRESS + 4, DMA_COUNT, 8, data, DMA_COUNT, 0, &length);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_UNKNOWN, data, &reply), -EPROTO);
    ck_assert_str_eq(reply.problem, "names another address");
    free(payload);
    payload = dma_payload(DMA_ADDRESS - 1, DMA_COUNT, 4, data, DMA_COUNT, 4, &length);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_UNKNOWN, data, &reply), -EPROTO);
    free(payload);
    /* Another count with the length of the one asked for, in both layouts. */
    payload = dma_payload(DMA_ADDRESS, DMA_COUNT - 4, 8, data, DMA_COUNT, 0, &length);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_UNKNOWN, data, &reply), -EPROTO);
    ck_assert_str_eq(reply.problem, "names another count");
    free(payload);
    payload = dma_payload(DMA_ADDRESS, DMA_COUNT + 4, 4, data, DMA_COUNT, 4, &length);
    ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_COUNT32, data, &reply), -EPROTO);
    free(payload);
    /* A count and data both shorter (or longer) than asked: the length gives it away. */
    for (size_t count = DMA_COUNT - 8; count <= DMA_COUNT + 8; count += 16) {
        payload = dma_payload(DMA_ADDRESS, count, 8, data, count, 0, &length);
        ck_assert_int_eq(decode_read(payload, length, VU_DMA_LAYOUT_UNKNOWN, data, &reply),
                         -EPROTO);
        ck_assert_str_eq(reply.problem, "has a length no layout gives");
        free(payload);
    }
    /* Lengths no layout gives: none, the header alone, one byte more or less. */
    payload = dma_payload(DMA_ADDRESS, DMA_COUNT, 8, data, DMA_COUNT, 1, &length);
    for (size_t cut = 0; cut <= length; cut++) {
        if (cut == 12 + DMA_COUNT || cut == 16 + DMA_COUNT)
            continue;
        uint8_t *exact = malloc(cut > 0 ? cut : 1);
        memcpy(exact, payload, cut);
        ck_assert_int_eq(vu_wire_decode_dma_reply(false, exact, cut, DMA_ADDRESS, DMA_COUNT,
                                                  VU_DMA_LAYOUT_UNKNOWN, &reply),
                         -EPROTO);
        free(exact);
    }
    free(payload);
}
END_TEST

/* DMA_READ and DMA_WRITE requests are as long in either layout; only where a DMA_WRITE's
 * count ends and its data starts differs. */
START_TEST(test_dma_access_encoding)
{
    uint8_t data[DMA_COUNT], payload[sizeof(struct vu_dma_access) + DMA_COUNT + 8];
    uint64_t address, count64;
    uint32_t count32;

    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i + 1);
    for (int layout = VU_DMA_LAYOUT_UNKNOWN; layout <= VU_DMA_LAYOUT_COUNT32; layout++) {
        /* A DMA_READ: the spec's 16 bytes, which a 32-bit-count client reads alike. */
        memset(payload, 0xee, sizeof(payload));
        vu_wire_encode_dma_access(payload, DMA_ADDRESS, DMA_COUNT, NULL, layout);
        memcpy(&address, payload, 8);
        memcpy(&count64, payload + 8, 8);
        ck_assert_uint_eq(address, DMA_ADDRESS);
        ck_assert_uint_eq(count64, DMA_COUNT);
        ck_assert_uint_eq(payload[16], 0xee);

        memset(payload, 0xee, sizeof(payload));
        vu_wire_encode_dma_access(payload, DMA_ADDRESS, DMA_COUNT, data, layout);
        memcpy(&address, payload, 8);
        ck_assert_uint_eq(address, DMA_ADDRESS);
        if (layout == VU_DMA_LAYOUT_COUNT32) {
            memcpy(&count32, payload + 8, 4);
            ck_assert_uint_eq(count32, DMA_COUNT);
            ck_assert_mem_eq(payload + 12, data, DMA_COUNT);
            ck_assert_mem_eq(payload + 12 + DMA_COUNT, "\0\0\0\0", 4);
        } else {
            memcpy(&count64, payload + 8, 8);
            ck_assert_uint_eq(count64, DMA_COUNT);
            ck_assert_mem_eq(payload + 16, data, DMA_COUNT);
        }
        /* Nothing past the 16 + count bytes is touched. */
        ck_assert_uint_eq(payload[16 + DMA_COUNT], 0xee);
    }
}
END_TEST

START_TEST(test_dma_write_reply)
{
    struct vu_dma_reply reply;
    size_t length;
    uint8_t *payload;

    /* QEMU's bare header. */
    ck_assert_int_eq(vu_wire_decode_dma_reply(true, NULL, 0, DMA_ADDRESS, DMA_COUNT,
                                              VU_DMA_LAYOUT_UNKNOWN, &reply),
                     0);
    /* The spec's 32-bit count and the request's 64-bit one, whatever the DMA_READ layout. */
    for (size_t count_size = 4; count_size <= 8; count_size += 4) {
        for (int known = VU_DMA_LAYOUT_UNKNOWN; known <= VU_DMA_LAYOUT_COUNT32; known++) {
            payload = dma_payload(DMA_ADDRESS, DMA_COUNT, count_size, NULL, 0, 0, &length);
            ck_assert_int_eq(vu_wire_decode_dma_reply(true, payload, length, DMA_ADDRESS, DMA_COUNT,
                                                      known, &reply),
                             0);
            free(payload);
        }
        payload = dma_payload(DMA_ADDRESS, DMA_COUNT / 2, count_size, NULL, 0, 0, &length);
        ck_assert_int_eq(vu_wire_decode_dma_reply(true, payload, length, DMA_ADDRESS, DMA_COUNT,
                                                  VU_DMA_LAYOUT_UNKNOWN, &reply),
                         -EPROTO);
        ck_assert_str_eq(reply.problem, "names another count");
        free(payload);
        payload = dma_payload(DMA_ADDRESS + DMA_COUNT, DMA_COUNT, count_size, NULL, 0, 0, &length);
        ck_assert_int_eq(vu_wire_decode_dma_reply(true, payload, length, DMA_ADDRESS, DMA_COUNT,
                                                  VU_DMA_LAYOUT_UNKNOWN, &reply),
                         -EPROTO);
        ck_assert_str_eq(reply.problem, "names another address");
        free(payload);
    }
    /* A 64-bit count whose upper half is set is not the count asked for. */
    payload = dma_payload(DMA_ADDRESS, DMA_COUNT | (1ull << 32), 8, NULL, 0, 0, &length);
    ck_assert_int_eq(vu_wire_decode_dma_reply(true, payload, length, DMA_ADDRESS, DMA_COUNT,
                                              VU_DMA_LAYOUT_UNKNOWN, &reply),
                     -EPROTO);
    free(payload);
    /* Other lengths, including the data echoed back. */
    for (size_t padding = 1; padding <= DMA_COUNT; padding += DMA_COUNT - 1) {
        payload = dma_payload(DMA_ADDRESS, DMA_COUNT, 8, NULL, 0, padding, &length);
        ck_assert_int_eq(vu_wire_decode_dma_reply(true, payload, length, DMA_ADDRESS, DMA_COUNT,
                                                  VU_DMA_LAYOUT_UNKNOWN, &reply),
                         -EPROTO);
        ck_assert_str_eq(reply.problem, "has a length no layout gives");
        free(payload);
    }
    payload = dma_payload(DMA_ADDRESS, 0, 0, NULL, 0, 0, &length);
    ck_assert_int_eq(vu_wire_decode_dma_reply(true, payload, length, DMA_ADDRESS, DMA_COUNT,
                                              VU_DMA_LAYOUT_UNKNOWN, &reply),
                     -EPROTO);
    free(payload);
}
END_TEST

static Suite *wire_suite(void)
{
    Suite *suite = suite_create("wire");
    TCase *header = tcase_create("header");
    TCase *parsing = tcase_create("capabilities");
    TCase *formatting = tcase_create("format");
    TCase *negotiation = tcase_create("negotiation");
    TCase *dma = tcase_create("dma_reply");

    tcase_add_test(header, test_header_decode_fields);
    tcase_add_test(header, test_header_decode_short_buffer);
    tcase_add_test(header, test_header_message_size_floor);
    tcase_add_test(header, test_header_types);
    tcase_add_test(header, test_header_flag_bits);
    tcase_add_test(header, test_header_encode);
    tcase_add_test(header, test_command_names);
    suite_add_tcase(suite, header);

    tcase_add_test(parsing, test_defaults);
    tcase_add_test(parsing, test_parse_absent_json);
    tcase_add_test(parsing, test_parse_empty_objects);
    tcase_add_test(parsing, test_parse_each_capability);
    tcase_add_test(parsing, test_parse_qemu_proposal);
    tcase_add_test(parsing, test_parse_ignores_unknown);
    tcase_add_test(parsing, test_parse_wrong_types);
    tcase_add_test(parsing, test_parse_ranges);
    tcase_add_test(parsing, test_parse_nul_handling);
    tcase_add_test(parsing, test_parse_malformed);
    tcase_add_test(parsing, test_parse_size_limit);
    tcase_add_test(parsing, test_parse_deep_nesting);
    suite_add_tcase(suite, parsing);

    tcase_add_test(formatting, test_format_round_trip);
    tcase_add_test(formatting, test_format_twin_fd_index);
    suite_add_tcase(suite, formatting);

    tcase_add_checked_fixture(negotiation, NULL, negotiation_teardown);
    tcase_add_test(negotiation, test_negotiate_major_mismatch);
    tcase_add_test(negotiation, test_negotiate_minor);
    tcase_add_test(negotiation, test_negotiate_no_json);
    tcase_add_test(negotiation, test_negotiate_receive_limits);
    tcase_add_test(negotiation, test_negotiate_dma_maps);
    tcase_add_test(negotiation, test_negotiate_pgsizes);
    tcase_add_test(negotiation, test_negotiate_write_multiple);
    tcase_add_test(negotiation, test_negotiate_twin_socket);
    tcase_add_test(negotiation, test_negotiate_reply_is_subset);
    tcase_add_test(negotiation, test_negotiate_bad_json);
    suite_add_tcase(suite, negotiation);

    tcase_add_test(dma, test_dma_read_reply_spec_layout);
    tcase_add_test(dma, test_dma_read_reply_qemu_layout);
    tcase_add_test(dma, test_dma_read_reply_ambiguous);
    tcase_add_test(dma, test_dma_read_reply_wrong_fields);
    tcase_add_test(dma, test_dma_write_reply);
    tcase_add_test(dma, test_dma_access_encoding);
    suite_add_tcase(suite, dma);
    return suite;
}

int main(void)
{
    return test_run_suite(wire_suite());
}
