/*
 * The admin socket: a UNIX stream socket (socket-activated by systemd, or created here)
 * carrying JSON-RPC 2.0 as a stream of JSON values, each reply followed by a newline.
 *
 * Every connection is non-blocking and bounded: a request larger than ADMIN_MAX_REQUEST,
 * malformed JSON, more than ADMIN_MAX_CONNECTIONS clients or ADMIN_IDLE_SECONDS of silence
 * end that connection, never the daemon or another client.
 */
#ifndef VFIO_USERD_ADMIN_SERVER_H
#define VFIO_USERD_ADMIN_SERVER_H

#include <stddef.h>

#define ADMIN_MAX_REQUEST     (1024 * 1024)
#define ADMIN_MAX_CONNECTIONS 64
#define ADMIN_IDLE_SECONDS    60
/* A client that lets this much output pile up unread is dropped. */
#define ADMIN_MAX_OUTPUT (64 * 1024 * 1024)

struct daemon;
struct admin_server;

/*
 * Takes the socket systemd passed with FileDescriptorName=admin (or the only one passed),
 * else creates `daemon->settings`' admin socket with its mode and group.
 */
int admin_server_start(struct daemon *daemon, struct admin_server **server);

/* Closes every connection; unlinks the socket if this process created it. */
void admin_server_stop(struct admin_server *server);

size_t admin_server_connection_count(const struct admin_server *server);

#endif /* VFIO_USERD_ADMIN_SERVER_H */
