/*
 * The control channel between the daemon (the supervisor) and a device host: one
 * SOCK_SEQPACKET socketpair per device host, carrying one JSON object per packet, each with
 * a "type". Packets keep their boundaries, so neither side frames or reassembles anything,
 * and a packet larger than CONTROL_MESSAGE_MAX is refused rather than read in part.
 *
 *   supervisor -> host   start {name, plugin, params, settings}, ping {seq},
 *                        status {seq}, reset {seq}, stop, open {seq, errno} + descriptor
 *   host -> supervisor   ready {pid}, error {errno, field, message}, pong {seq},
 *                        status {seq, ...snapshot}, reset {seq, errno},
 *                        open {seq, path, flags, mode} (a plugin's open_file())
 *
 * The host is started with its device's listening socket at CONTROL_LISTEN_FD, its end of
 * the socketpair at CONTROL_CHANNEL_FD, its plugin at CONTROL_PLUGIN_FD and its liveness page
 * (liveness.h) at CONTROL_LIVENESS_FD; everything else it gets through "start". A ping goes
 * only to a host whose page says nothing (its waits are not marked). Both sides
 * send without blocking: a peer that stops reading cannot stall the other.
 */
#ifndef VFIO_USERD_CONTROL_H
#define VFIO_USERD_CONTROL_H

#include <stdbool.h>
#include <stdint.h>
#include <jansson.h>

#include "device.h"

#define CONTROL_LISTEN_FD  3
#define CONTROL_CHANNEL_FD 4
/* The plugin's file, opened by the daemon: the host loads it from /proc/self/fd, so that it
 * needs no right to the plugin directory, and loads the very file the daemon checked. */
#define CONTROL_PLUGIN_FD 5
/* The memfd of the page where the host's loop marks its waits (liveness.h). */
#define CONTROL_LIVENESS_FD 6

/* The largest packet either side sends or accepts (a device's parameters must fit). Well
 * under a socket's default send buffer (208 KiB), which a packet must fit whole. */
#define CONTROL_MESSAGE_MAX (64 * 1024)

/* A SOCK_SEQPACKET socketpair, close-on-exec and non-blocking on both ends. */
int control_socketpair(int fds[2]);

/* Sends `message` as one packet: 0, -EAGAIN when the peer's queue is full, -EMSGSIZE,
 * -EPIPE when the peer is gone, -ENOMEM. With `passed_fd` >= 0, that descriptor goes along
 * (SCM_RIGHTS); the caller keeps its own. */
int control_send_fd(int fd, const json_t *message, int passed_fd);
int control_send(int fd, const json_t *message);

/*
 * Receives one packet: 1 with `*message` set (an object with a string "type"), 0 at the end
 * of the stream (the peer is gone), -EAGAIN when nothing is waiting, -EBADMSG for a packet
 * that is not such an object or was cut short, or another negative errno.
 */
int control_receive(int fd, json_t **message);

/* control_receive() that also hands over a descriptor that came with the packet, or -1;
 * a packet with more than one is refused (-EBADMSG, all of them closed). */
int control_receive_fd(int fd, json_t **message, int *received_fd);

/* The message's "type", or "" when it has none. */
const char *control_type(const json_t *message);

/* A message's "seq", or 0. */
uint64_t control_sequence(const json_t *message);

/* A device's counters as the "status" message carries them, and back (all or nothing:
 * -EBADMSG for a malformed object, leaving `statistics` zeroed). */
json_t *control_statistics_to_json(const struct vu_device_statistics *statistics);
int control_statistics_from_json(const json_t *object, struct vu_device_statistics *statistics);

#endif /* VFIO_USERD_CONTROL_H */
