/*
 * The tests' side of the daemon's admin socket: JSON-RPC 2.0, one request and one
 * newline-terminated reply at a time. Integration tests drive the real daemon through it
 * (device_add, device_get, daemon_status, ...), so that each does not carry its own copy.
 *
 * Every failure fails the test (check's ck_assert): a test that cannot talk to the daemon
 * has nothing else to do. test_admin.c, which tests the socket's framing itself, keeps its
 * own reader and uses only admin_client_connect().
 */
#ifndef ADMIN_CLIENT_H
#define ADMIN_CLIENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct admin_client {
    int fd;              /* -1 while not connected */
    int next_id;         /* the id of the next request */
    uint64_t bound_ms;   /* 0, or how long one call may take before the test fails */
    uint64_t slowest_ms; /* the slowest call since admin_client_open() */
    size_t buffered;     /* bytes in `buffer`: what the daemon sent past the last reply */
    char buffer[1 << 20];
};

/* For a static client before its first admin_client_open(): not connected. */
#define ADMIN_CLIENT_INIT                                                                          \
    {                                                                                              \
        .fd = -1                                                                                   \
    }

/* A connected socket to `path`. No refusal is retried: the daemon's socket file appears
 * only once it listens. */
int admin_client_connect(const char *path);

/*
 * Connects `client` to `path` with an empty buffer and slowest call, and ids from 1;
 * `bound_ms` (0: none) is asserted on every call.
 */
void admin_client_open(struct admin_client *client, const char *path, uint64_t bound_ms);

/* Closes the connection, if any; harmless to repeat. */
void admin_client_close(struct admin_client *client);

/* Calls `method` with `params` (JSON text or NULL); returns the whole response (owned). */
json_t *admin_client_call(struct admin_client *client, const char *method, const char *params);

/* The result of a call that must succeed (owned by the caller). */
json_t *admin_client_call_ok(struct admin_client *client, const char *method, const char *params);

#endif /* ADMIN_CLIENT_H */
