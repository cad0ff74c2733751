/*
 * The JSON-RPC 2.0 layer of the admin socket: request validation, batches and
 * notifications, the standard error codes, and the methods (device_list, device_get,
 * device_add, device_remove, device_reset, plugin_list, daemon_status, daemon_reload,
 * rpc_get_methods). Transport lives in admin_server.c.
 */
#ifndef VFIO_USERD_ADMIN_METHODS_H
#define VFIO_USERD_ADMIN_METHODS_H

#include <jansson.h>
#include <stdbool.h>
#include <sys/socket.h>

struct daemon;

/* JSON-RPC 2.0 codes, and this daemon's application codes (documented in vfio-userd(8)). */
enum admin_error {
    ADMIN_PARSE_ERROR = -32700,
    ADMIN_INVALID_REQUEST = -32600,
    ADMIN_METHOD_NOT_FOUND = -32601,
    ADMIN_INVALID_PARAMS = -32602,
    ADMIN_INTERNAL_ERROR = -32603,
    ADMIN_DEVICE_NOT_FOUND = -32001, /* no device of that name */
    ADMIN_DEVICE_EXISTS = -32002,    /* device_add of a name in use */
    ADMIN_PLUGIN_NOT_FOUND = -32003, /* device_add with an unknown plugin */
    ADMIN_PERSIST_FAILED = -32004,   /* the drop-in could not be written or deleted */
    ADMIN_OPERATION_FAILED = -32005, /* e.g. the socket path is in use */
    ADMIN_DEVICE_STUCK = -32006,     /* the device's worker is stuck in plugin code */
};

/* Who sent a request, for the log line of every change. */
struct admin_peer {
    struct ucred credentials;
};

/*
 * Handles one parsed JSON value: a request, a notification or a batch. Returns the reply
 * (an object or an array) or NULL when nothing is to be sent back.
 */
json_t *admin_handle(struct daemon *daemon, const struct admin_peer *peer, json_t *message);

/*
 * admin_handle() of one request in two halves, so that the device_add requests a client
 * pipelines start on their workers together, before the daemon waits for the first.
 *
 * admin_start() carries out `request` whole and sets `*reply` (NULL: nothing to send
 * back), or, for a device_add, begins the device and sets `*started`: admin_finish() then
 * waits for it and returns the reply. With `others_started` (requests started and not yet
 * finished), it returns -EAGAIN, changing nothing, for a request whose outcome could depend
 * on theirs: any method but device_add, a device_add that persists, or one whose name or
 * socket path a device still starting holds. Finish those, in order, and call it again;
 * that way every reply is what the requests carried out one by one would have given.
 * Every started request must be finished before the control plane does anything else.
 */
struct admin_started;
int admin_start(struct daemon *daemon, const struct admin_peer *peer, json_t *request,
                bool others_started, json_t **reply, struct admin_started **started);
json_t *admin_finish(struct daemon *daemon, struct admin_started *started);

/* An error response with a null id, for input that could not even be parsed. */
json_t *admin_error_response(json_t *id, int code, const char *message, json_t *data);

#endif /* VFIO_USERD_ADMIN_METHODS_H */
