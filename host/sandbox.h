/*
 * The sandbox of a device host (vfio-userd-device-host): what it gives up before it loads a
 * plugin, which parses data a guest controls.
 *
 * sandbox_apply() runs first thing in the host, while it is still the daemon's user: rlimits
 * on data memory and descriptors, the capability bounding set emptied, the account changed
 * (supplementary groups, group, then user, so that none of the daemon's stays), and
 * no_new_privs, so that no exec can give any of it back. sandbox_install_seccomp() then
 * refuses the system calls a device model never needs and an attacker would want: mount,
 * modules, reboot, swap, raw I/O, ptrace, kexec, bpf, namespaces and the like.
 *
 * Errors are negative errno values with one line in `error`.
 */
#ifndef VFIO_USERD_SANDBOX_H
#define VFIO_USERD_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct sandbox_policy {
    bool change_user; /* false: stay the daemon's user (a daemon that is not root cannot) */
    uid_t uid;
    gid_t gid;
    uint64_t memory_limit; /* RLIMIT_DATA in bytes; 0: none */
    uint64_t files_limit;  /* RLIMIT_NOFILE; 0: leave as inherited */
};

int sandbox_apply(const struct sandbox_policy *policy, char *error, size_t error_size);

/* The errno a refused system call fails with. */
#define SANDBOX_REFUSED_ERRNO EPERM

int sandbox_install_seccomp(char *error, size_t error_size);

#endif /* VFIO_USERD_SANDBOX_H */
