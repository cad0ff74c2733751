/*
 * The JSON-RPC 2.0 client of vfio-userctl: one UNIX stream connection to the daemon's admin
 * socket, one request at a time, each bounded by a timeout. The daemon answers every
 * request with one compact JSON value followed by a newline (daemon/admin_server.c).
 *
 * The daemon is trusted to be the daemon, not to be well-formed: a reply that is too large,
 * not JSON, not a JSON-RPC 2.0 response or not the answer to the request sent is refused
 * as -EPROTO or -EMSGSIZE rather than shown.
 */
#ifndef VFIO_USERCTL_RPC_CLIENT_H
#define VFIO_USERCTL_RPC_CLIENT_H

#include <stddef.h>
#include <jansson.h>

/* Larger replies are refused; the daemon itself drops a client at 64 MiB of output. */
#define RPC_CLIENT_MAX_REPLY (64u * 1024 * 1024)

struct rpc_client;

/*
 * Connects to the admin socket at `path`. `timeout_ms` (> 0) bounds the connection and then
 * each call. On failure returns a negative errno (-ENOENT, -ECONNREFUSED, -EACCES,
 * -ETIMEDOUT, -ENAMETOOLONG, ...) and writes a sentence saying what went wrong to `problem`.
 */
int rpc_client_connect(const char *path, int timeout_ms, struct rpc_client **client, char *problem,
                       size_t problem_size);

void rpc_client_close(struct rpc_client *client);

/*
 * Calls `method` with `params` (an object, or NULL for none; borrowed). Returns 0 with
 * exactly one of *result (the result value) or *error (the error object, whose code is an
 * integer and message a string) set, both owned by the caller; or a negative errno when no
 * usable answer came (-ETIMEDOUT, -ECONNRESET, -EPROTO, -EMSGSIZE, -ENOMEM, ...), with
 * `problem` filled as above.
 */
int rpc_client_call(struct rpc_client *client, const char *method, json_t *params, json_t **result,
                    json_t **error, char *problem, size_t problem_size);

#endif /* VFIO_USERCTL_RPC_CLIENT_H */
