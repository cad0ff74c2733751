/*
 * Framing of a byte stream that carries JSON texts back to back (the admin socket): finds
 * where each text ends without parsing it, resuming where the previous call stopped, so a
 * client that trickles a large text byte by byte costs work linear in what it sends.
 *
 * Only brackets, strings and escapes are tracked; the caller hands each text to a real
 * parser (jansson), which reports anything malformed. The boundaries are:
 *   - white space (space, tab, CR, LF) before a text is skipped and belongs to that text;
 *   - an object or array ends at its matching close bracket, brackets inside strings ignored
 *     (mismatched kinds, as in "[}", still close: the parser rejects them);
 *   - a string at the top level ends at its closing quote;
 *   - anything else is a bare token (number, literal or junk) that ends before the next
 *     white space, bracket, quote, comma, colon or NUL byte; one of those where a text should
 *     start (",", "}", a NUL byte) is a one-byte text of its own, which the parser rejects.
 * A bare token at the very end of the stream is not complete until a byte follows it.
 *
 * Alongside the framing, every byte is checked once against the JSON grammar (RFC 8259:
 * tokens, nesting, string escapes, control characters and UTF-8), so that input which can no
 * longer become valid JSON, such as `{"method": garbage`, is known at its first wrong byte
 * rather than when its brackets balance, which may be never. The first such byte sets
 * `error`; it stays set, and framing carries on regardless. Nesting deeper than
 * JSON_STREAM_MAX_DEPTH is an error too, since the parser refuses it. Two things only the
 * parser judges, when the text is complete: a \u escape that is half a surrogate pair, and
 * \u0000.
 */
#ifndef VFIO_USERD_JSON_STREAM_H
#define VFIO_USERD_JSON_STREAM_H

#include <stdbool.h>
#include <stddef.h>

/* jansson's own nesting limit: deeper texts are refused by the parser anyway. */
#define JSON_STREAM_MAX_DEPTH 2048

enum json_stream_state {
    JSON_STREAM_BETWEEN_TEXTS, /* skipping white space before the next text */
    JSON_STREAM_IN_BARE_TOKEN,
    JSON_STREAM_IN_STRUCTURE, /* an object, an array or a top-level string */
};

/*
 * All offsets count from the start of the caller's buffer. The fields are public so tests
 * and callers can inspect them; only the functions below change them.
 */
struct json_stream_scanner {
    size_t offset;     /* next byte to examine */
    size_t text_start; /* first byte (after white space) of the text in progress */
    size_t depth;      /* open brackets of the text in progress */
    size_t examined;   /* bytes looked at since json_stream_init, to prove the work linear */
    enum json_stream_state state;
    bool in_string;
    bool escaped; /* the previous byte was a backslash inside a string */

    /* The grammar check: what it found, then its own state. */
    const char *error;   /* NULL, or why the stream cannot be valid JSON (static text) */
    size_t error_offset; /* where: the offending byte, counted like `offset` */
    size_t validated;    /* next byte the grammar check looks at */
    size_t valid_depth;  /* open containers, innermost last in `containers` */
    unsigned char containers[JSON_STREAM_MAX_DEPTH / 8]; /* one bit per level: 1 = object */
    unsigned char expect; /* what the grammar allows next, and the token in progress; */
    unsigned char token;  /* private to json_stream.c */
    unsigned char token_index;
    unsigned char utf8_low, utf8_high; /* range of the next UTF-8 continuation byte */
    bool in_key;
};

void json_stream_init(struct json_stream_scanner *scanner);

/*
 * End (exclusive, counted from the start of `buffer`) of the next complete text, or 0 when
 * more bytes are needed. The text starts where the previous one ended (or at the buffer's
 * start): the caller keeps that position. Between calls the caller may only append to the
 * buffer, or drop a prefix and say so with json_stream_consumed(); bytes already examined
 * must not change. Each byte is examined once, the delimiter after a bare token twice.
 */
size_t json_stream_next(struct json_stream_scanner *scanner, const char *buffer, size_t length);

/*
 * The caller removed the first `bytes` bytes of its buffer: texts it has handled, possibly
 * with white space or bytes not yet examined after them. Dropping the start of a text in
 * progress leaves nothing to resume: the scanner then restarts at the new buffer start.
 * `examined` keeps counting.
 */
void json_stream_consumed(struct json_stream_scanner *scanner, size_t bytes);

/*
 * The stream ended (the peer will send nothing more) at `length`, after json_stream_next()
 * returned 0 for it. Returns `length` when a bare token was waiting for its delimiter and
 * is now complete; 0 otherwise, and then `error` is set if a text was left unfinished.
 */
size_t json_stream_end(struct json_stream_scanner *scanner, size_t length);

#endif
