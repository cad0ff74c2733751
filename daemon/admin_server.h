/*
 * The admin socket: a UNIX stream socket (socket-activated by systemd, or created here)
 * carrying JSON-RPC 2.0 as a stream of JSON values, each reply followed by a newline.
 *
 * Every connection is non-blocking and bounded, and a client that hits a bound is told so
 * with a JSON-RPC error before anything closes: a request larger than ADMIN_MAX_REQUEST or
 * input that can no longer be valid JSON ends that connection; a batch longer than
 * ADMIN_MAX_BATCH is refused whole, and once a batch's replies reach ADMIN_MAX_BATCH_REPLY
 * its remaining requests are answered ADMIN_LIMIT_EXCEEDED without being carried out. A
 * connection that sends no complete request within ADMIN_FIRST_REQUEST_SECONDS, or none for
 * ADMIN_IDLE_SECONDS after that, is closed. At most ADMIN_MAX_CONNECTIONS are open, the last
 * ADMIN_RESERVED_CONNECTIONS of them only for root and the daemon's own user, and any other
 * user holds at most ADMIN_MAX_CONNECTIONS_PER_UID. Nothing a client does ends the daemon or
 * stalls another client for long: requests are carried out a few at a time
 * (ADMIN_REQUESTS_PER_TURN), with the rest of the daemon served in between. Within such a
 * turn, consecutive device_adds of the stream are started together and finished at its end
 * (admin_start), their replies and those behind them sent in request order.
 */
#ifndef VFIO_USERD_ADMIN_SERVER_H
#define VFIO_USERD_ADMIN_SERVER_H

#include <stddef.h>

#define ADMIN_MAX_REQUEST             (1024 * 1024)
#define ADMIN_MAX_BATCH               256
#define ADMIN_MAX_BATCH_REPLY         (1024 * 1024)
#define ADMIN_MAX_CONNECTIONS         64
#define ADMIN_RESERVED_CONNECTIONS    8
#define ADMIN_MAX_CONNECTIONS_PER_UID 16
#define ADMIN_FIRST_REQUEST_SECONDS   5
#define ADMIN_IDLE_SECONDS            60
#define ADMIN_REQUESTS_PER_TURN       16
/* A client that lets this much output pile up unread is dropped. */
#define ADMIN_MAX_OUTPUT (64 * 1024 * 1024)

/*
 * The error of a request refused by a limit of the admin socket (a connection too many, a
 * batch's reply budget spent); in the server range of JSON-RPC, after admin_methods.h's.
 */
#define ADMIN_LIMIT_EXCEEDED (-32010)

_Static_assert(ADMIN_RESERVED_CONNECTIONS < ADMIN_MAX_CONNECTIONS,
               "some connections must be open to everyone");
_Static_assert(ADMIN_MAX_BATCH_REPLY < ADMIN_MAX_OUTPUT,
               "a batch's replies must fit in what a connection may queue");

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
