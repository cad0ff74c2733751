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

/*
 * Applies `policy` to the calling process, which must be single-threaded (capabilities and
 * no_new_privs belong to each thread; a second one would keep them): -EBUSY otherwise.
 * RLIMIT_CORE becomes 0, RLIMIT_DATA memory_limit (not under AddressSanitizer, whose shadow
 * memory counts against it), RLIMIT_NOFILE files_limit, soft and hard alike. Ambient,
 * permitted, effective and inheritable capabilities are emptied in every case, and the
 * bounding set too when changing the account or when the process holds CAP_SETPCAP.
 * A change of account is read back and checked (setresuid(0) must then fail). Last come
 * no_new_privs and non-dumpable; the latter keeps other processes of the same uid from
 * ptrace and /proc/PID/mem, and no core is written.
 *
 * Changing the account clears the parent-death signal: set PR_SET_PDEATHSIG afterwards.
 * Staying on the account as root leaves uid 0's ownership of files (root-owned files stay
 * writable without any capability): change_user should be set whenever the daemon is root.
 */
int sandbox_apply(const struct sandbox_policy *policy, char *error, size_t error_size);

/* The errno a refused system call fails with. */
#define SANDBOX_REFUSED_ERRNO EPERM

/*
 * Installs the seccomp filter on every thread of the process. Everything is allowed except
 * the refused calls (sandbox.c lists them), which fail with SANDBOX_REFUSED_ERRNO; clone3()
 * fails with ENOSYS so that glibc falls back to clone(), whose flags the filter can see and
 * which is refused when it would create a namespace. On x86_64 the rules cover i386 calls
 * (int $0x80) as well, and an x32 call ends the process.
 *
 * Under LeakSanitizer, the leak check at exit() stops the process's threads with ptrace,
 * which the filter refuses: a sanitizer build of the host should leave through _exit() or
 * run with detect_leaks=0.
 */
int sandbox_install_seccomp(char *error, size_t error_size);

#endif /* VFIO_USERD_SANDBOX_H */
