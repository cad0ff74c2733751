/*
 * The device host's sandbox; see sandbox.h. sandbox_apply() gives up what the process holds
 * (resource headroom, capabilities, the daemon's account, the right to regain privileges
 * through exec, and dumpability); sandbox_install_seccomp() then refuses the system calls a
 * device model has no use for and an attacker who took over a plugin would reach for.
 *
 * Capabilities are handled with the raw capget/capset system calls and prctl(), so the
 * host needs no libcap; the filter is libseccomp's.
 */
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "sandbox.h"

/* AddressSanitizer reserves terabytes of private shadow mappings, which RLIMIT_DATA counts
 * (since Linux 4.7 it covers every private writable mapping, not only the heap), so a
 * sanitizer build cannot run under any useful RLIMIT_DATA. GCC says so with
 * __SANITIZE_ADDRESS__, older clang only through __has_feature. */
#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_UNDER_ASAN 1
#endif
#endif
#ifndef SANDBOX_UNDER_ASAN
#define SANDBOX_UNDER_ASAN 0
#endif

/* Capabilities are numbered below 64 on every kernel (kernel_cap_t is 64 bits); the
 * bounding set loop stops earlier, at the first number this kernel does not know. */
#define SANDBOX_MAX_CAPABILITIES 64

/* Writes "STEP: strerror" into `error` and returns `ret` (a negative errno). */
__attribute__((format(printf, 4, 5))) static int fail(char *error, size_t error_size, int ret,
                                                      const char *format, ...)
{
    va_list args;
    int length;

    if (error == NULL || error_size == 0)
        return ret;
    va_start(args, format);
    length = vsnprintf(error, error_size, format, args);
    va_end(args);
    if (length >= 0 && (size_t)length < error_size)
        snprintf(error + length, error_size - (size_t)length, ": %s", strerror(-ret));
    return ret;
}

/* Capabilities and uids are per thread in the kernel (glibc only broadcasts the set*id
 * calls), and no_new_privs is too: a second thread would keep what this one gives up. */
static int count_threads(void)
{
    FILE *status = fopen("/proc/self/status", "re");
    char line[256];
    int threads = -ENOENT;

    if (status == NULL)
        return -errno;
    while (fgets(line, sizeof(line), status) != NULL) {
        if (strncmp(line, "Threads:", 8) == 0) {
            threads = atoi(line + 8);
            break;
        }
    }
    fclose(status);
    return threads;
}

static int set_limit(int resource, const char *name, uint64_t value, char *error, size_t error_size)
{
    struct rlimit limit = {.rlim_cur = (rlim_t)value, .rlim_max = (rlim_t)value};

    if ((uint64_t)limit.rlim_cur != value)
        return fail(error, error_size, -ERANGE, "setrlimit(%s, %llu)", name,
                    (unsigned long long)value);
    /* Soft and hard alike: the plugin must not be able to raise it back. */
    if (setrlimit(resource, &limit) < 0)
        return fail(error, error_size, -errno, "setrlimit(%s, %llu)", name,
                    (unsigned long long)value);
    return 0;
}

static int apply_limits(const struct sandbox_policy *policy, char *error, size_t error_size)
{
    int ret;

    /* A crashed plugin's core holds guest memory and the device's state: it is the guest's
     * data, and must not land on the host's disk. (Non-dumpable, set last, already stops
     * the kernel's own dump; this also tells a core_pattern pipe such as systemd-coredump,
     * which honours the limit, to keep nothing.) */
    ret = set_limit(RLIMIT_CORE, "RLIMIT_CORE", 0, error, error_size);
    if (ret < 0)
        goto out;
    if (policy->memory_limit != 0 && !SANDBOX_UNDER_ASAN) {
        ret = set_limit(RLIMIT_DATA, "RLIMIT_DATA", policy->memory_limit, error, error_size);
        if (ret < 0)
            goto out;
    }
    if (policy->files_limit != 0) {
        ret = set_limit(RLIMIT_NOFILE, "RLIMIT_NOFILE", policy->files_limit, error, error_size);
        if (ret < 0)
            goto out;
    }
    /* RLIMIT_NPROC is counted per user, across every process of the account: one device
     * host cannot set it for itself without limiting all the others. */
out:
    return ret;
}

static int read_capabilities(struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3])
{
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3};

    return syscall(SYS_capget, &header, data) < 0 ? -errno : 0;
}

static int has_effective_capability(unsigned int capability, bool *has)
{
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    int ret = read_capabilities(data);

    if (ret == 0)
        *has = (data[capability / 32].effective & (1u << (capability % 32))) != 0;
    return ret;
}

/* The bounding set limits what any later exec can grant, a set-uid-root binary included. */
static int drop_bounding_set(char *error, size_t error_size)
{
    int ret = 0;

    for (unsigned long capability = 0; capability < SANDBOX_MAX_CAPABILITIES; capability++) {
        if (prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) == 0)
            continue;
        /* EINVAL: past the last capability this kernel has (cap_last_cap), so done. */
        if (errno == EINVAL && capability > 0)
            break;
        ret = fail(error, error_size, -errno,
                   "dropping capability %lu from the bounding set (needs CAP_SETPCAP)", capability);
        goto out;
    }
out:
    return ret;
}

static int change_account(const struct sandbox_policy *policy, char *error, size_t error_size)
{
    int ret = 0;

    /* Groups before the group, the group before the user: each step needs the privilege
     * that the next one gives up. */
    if (setgroups(0, NULL) < 0) {
        ret = fail(error, error_size, -errno, "setgroups(0)");
        goto out;
    }
    if (setresgid(policy->gid, policy->gid, policy->gid) < 0) {
        ret = fail(error, error_size, -errno, "setresgid(%u)", (unsigned int)policy->gid);
        goto out;
    }
    /* With real, effective and saved uid all non-zero, the kernel also clears the
     * permitted, effective and ambient sets. */
    if (setresuid(policy->uid, policy->uid, policy->uid) < 0) {
        ret = fail(error, error_size, -errno, "setresuid(%u)", (unsigned int)policy->uid);
        goto out;
    }
out:
    return ret;
}

/* Trust, but check: a change that half-happened must not go unnoticed. */
static int verify_account(const struct sandbox_policy *policy, char *error, size_t error_size)
{
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;
    int ret = 0;

    if (getresuid(&ruid, &euid, &suid) < 0 || getresgid(&rgid, &egid, &sgid) < 0) {
        ret = fail(error, error_size, -errno, "reading back the account");
        goto out;
    }
    if (ruid != policy->uid || euid != policy->uid || suid != policy->uid || rgid != policy->gid ||
        egid != policy->gid || sgid != policy->gid) {
        ret = fail(error, error_size, -EPERM,
                   "account is uids %u/%u/%u gids %u/%u/%u after changing to %u:%u",
                   (unsigned int)ruid, (unsigned int)euid, (unsigned int)suid, (unsigned int)rgid,
                   (unsigned int)egid, (unsigned int)sgid, (unsigned int)policy->uid,
                   (unsigned int)policy->gid);
        goto out;
    }
    if (getgroups(0, NULL) != 0) {
        ret = fail(error, error_size, -EPERM, "supplementary groups remain after setgroups(0)");
        goto out;
    }
    if (policy->uid != 0 && setresuid(0, 0, 0) == 0) {
        ret = fail(error, error_size, -EPERM, "setresuid(0) still succeeds after the change");
        goto out;
    }
    if (policy->gid != 0 && setresgid(0, 0, 0) == 0) {
        ret = fail(error, error_size, -EPERM, "setresgid(0) still succeeds after the change");
        goto out;
    }
out:
    return ret;
}

static int drop_capabilities(const struct sandbox_policy *policy, char *error, size_t error_size)
{
    struct __user_cap_header_struct header = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    bool can_drop_bounding = policy->change_user;
    int ret;

    /* Ambient capabilities would survive an exec of an ordinary binary. */
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0) {
        ret = fail(error, error_size, -errno, "clearing the ambient capabilities");
        goto out;
    }
    /* Changing the account needs CAP_SETPCAP, and fails loudly without it. Staying on the
     * account, a process without CAP_SETPCAP cannot drop the bounding set; it holds no
     * capabilities either way, and no_new_privs keeps an exec from gaining any. */
    if (!can_drop_bounding) {
        ret = has_effective_capability(CAP_SETPCAP, &can_drop_bounding);
        if (ret < 0) {
            fail(error, error_size, ret, "capget");
            goto out;
        }
    }
    if (can_drop_bounding) {
        ret = drop_bounding_set(error, error_size);
        if (ret < 0)
            goto out;
    }
    if (policy->change_user) {
        ret = change_account(policy, error, error_size);
        if (ret < 0)
            goto out;
    }
    /* Empty permitted, effective and inheritable sets in both cases: staying on the account
     * keeps them otherwise (a root daemon without a user to change to), and after a change
     * to uid 0 the kernel would not have cleared them. */
    memset(data, 0, sizeof(data));
    if (syscall(SYS_capset, &header, data) < 0) {
        ret = fail(error, error_size, -errno, "capset to empty sets");
        goto out;
    }
    ret = read_capabilities(data);
    if (ret < 0) {
        fail(error, error_size, ret, "capget");
        goto out;
    }
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
        if (data[i].effective != 0 || data[i].permitted != 0 || data[i].inheritable != 0) {
            ret = fail(error, error_size, -EPERM, "capabilities remain after capset");
            goto out;
        }
    }
    if (policy->change_user) {
        ret = verify_account(policy, error, error_size);
        if (ret < 0)
            goto out;
    }
out:
    return ret;
}

int sandbox_apply(const struct sandbox_policy *policy, char *error, size_t error_size)
{
    /* Without /proc the count is unknown (negative); the host calls this first thing in
     * main(), before it could start a thread, so that alone is no reason to refuse. */
    int ret = count_threads();

    if (ret > 1) {
        ret = fail(error, error_size, -EBUSY,
                   "%d threads running: the sandbox applies to one thread only", ret);
        goto out;
    }
    ret = apply_limits(policy, error, error_size);
    if (ret < 0)
        goto out;
    ret = drop_capabilities(policy, error, error_size);
    if (ret < 0)
        goto out;
    /* No exec from here on can gain privileges: set-uid bits and file capabilities are
     * ignored, and seccomp filters may be installed without CAP_SYS_ADMIN. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
        ret = fail(error, error_size, -errno, "prctl(PR_SET_NO_NEW_PRIVS)");
        goto out;
    }
    /* Non-dumpable: no core, and no ptrace or /proc/PID/mem access from other processes of
     * the same uid without CAP_SYS_PTRACE. Device hosts commonly share one account, and
     * this keeps a host a plugin took over from reading or writing another device's guest
     * memory. It must come after the account change, which resets the flag to the
     * fs.suid_dumpable sysctl. (The process still reads its own /proc/self; only other
     * processes' access to /proc/PID changes: its entries become root's.) */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0) {
        ret = fail(error, error_size, -errno, "prctl(PR_SET_DUMPABLE, 0)");
        goto out;
    }
    ret = 0;
out:
    return ret;
}

/*
 * Refused outright, with SANDBOX_REFUSED_ERRNO. A name this libseccomp does not know is
 * skipped (the kernel may still lack it too); one that exists only on the i386 table
 * (umount, stime, ...) still reaches the i386 part of the filter, added below.
 */
static const char *const refused_syscalls[] = {
    /* The file system tree: mounts, the new mount API, and changing root. */
    "mount",
    "umount",
    "umount2",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "pivot_root",
    "chroot",
    /* Namespaces; clone() with namespace flags is handled apart. */
    "unshare",
    "setns",
    /* Kernel code and the machine as a whole. */
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "vhangup",
    "sethostname",
    "setdomainname",
    "syslog",
    /* The clock every other process reads. */
    "settimeofday",
    "stime",
    "clock_settime",
    "clock_settime64",
    "clock_adjtime",
    "clock_adjtime64",
    "adjtimex",
    /* Raw port I/O and the x86 segment tables. */
    "iopl",
    "ioperm",
    "modify_ldt",
    "vm86",
    "vm86old",
    /* Other processes: their memory, their descriptors. A host shares its uid with other
     * hosts (and possibly the daemon), so these matter even without privileges. */
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    /* Large kernel interfaces no device model needs, each a history of exploits. */
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    /* Files by handle bypass the path walk and its permission checks. */
    "open_by_handle_at",
    "name_to_handle_at",
    /* Obsolete, and only attack surface by now. */
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
    "_sysctl",
};

/* clone() with any of these creates a namespace. CLONE_NEWTIME is not among them: it lies
 * in clone()'s exit-signal byte (CSIGNAL), so only clone3() and unshare() can ask for it,
 * and both are refused whole. */
static const unsigned long namespace_flags[] = {
    CLONE_NEWNS,  CLONE_NEWUTS, CLONE_NEWIPC,    CLONE_NEWUSER,
    CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP,
};

/* Adds `rule` for `name`; a name this libseccomp or this arch lacks is not an error. */
static int refuse(scmp_filter_ctx filter, const char *name, uint32_t action, unsigned int count,
                  const struct scmp_arg_cmp *comparisons, char *error, size_t error_size)
{
    int number = seccomp_syscall_resolve_name(name);
    int ret;

    if (number == __NR_SCMP_ERROR)
        return 0;
    ret = seccomp_rule_add_array(filter, action, number, count, comparisons);
    /* A pseudo-syscall number (negative) that none of the filter's arches resolves. */
    if (ret == -EFAULT || ret == -EDOM)
        ret = 0;
    if (ret < 0)
        fail(error, error_size, ret, "seccomp rule for %s", name);
    return ret;
}

static int add_arches(scmp_filter_ctx filter, char *error, size_t error_size)
{
    int ret = 0;

#if defined(__x86_64__) && !defined(__ILP32__)
    /* An x86_64 process can still enter the kernel through the i386 table (int $0x80), and
     * with a default of allow, a filter for the native table alone would let i386 mount()
     * through. Adding the i386 arch makes every rule apply there too, under i386's own
     * numbers. The x32 ABI is not added: nothing of ours uses it, so every x32 call (a
     * native number with bit 30 set) takes the bad-arch action below and ends the
     * process, rather than being vetted rule by rule. */
    ret = seccomp_arch_add(filter, SCMP_ARCH_X86);
    if (ret < 0 && ret != -EEXIST) {
        fail(error, error_size, ret, "seccomp_arch_add(i386)");
        goto out;
    }
    ret = 0;
#endif
    /* A call from an arch the filter does not list is an exploit's, not a plugin's: end the
     * whole process, not one thread of it (kernels before 4.14 only know the thread). */
    if (seccomp_attr_set(filter, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) < 0)
        seccomp_attr_set(filter, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL);
#if defined(__x86_64__) && !defined(__ILP32__)
out:
#endif
    return ret;
}

static int add_rules(scmp_filter_ctx filter, char *error, size_t error_size)
{
    const uint32_t refused = SCMP_ACT_ERRNO(SANDBOX_REFUSED_ERRNO);
    struct scmp_arg_cmp comparison;
    int ret = 0;

    for (size_t i = 0; i < sizeof(refused_syscalls) / sizeof(refused_syscalls[0]); i++) {
        ret = refuse(filter, refused_syscalls[i], refused, 0, NULL, error, error_size);
        if (ret < 0)
            goto out;
    }
    /* New namespaces go (processes go altogether, below). Flags are clone()'s first argument on x86
     * and arm64, its second on s390. */
    for (size_t i = 0; i < sizeof(namespace_flags) / sizeof(namespace_flags[0]); i++) {
#if defined(__s390__)
        comparison = SCMP_A1(SCMP_CMP_MASKED_EQ, namespace_flags[i], namespace_flags[i]);
#else
        comparison = SCMP_A0(SCMP_CMP_MASKED_EQ, namespace_flags[i], namespace_flags[i]);
#endif
        ret = refuse(filter, "clone", refused, 1, &comparison, error, error_size);
        if (ret < 0)
            goto out;
    }
    /*
     * No new processes, only threads: a child of a host would outlive it when the daemon
     * kills the host (keeping the device's listening socket, and whatever the plugin left
     * in it), and would escape the daemon's watch. fork() and vfork() go, and clone()
     * without CLONE_THREAD; threads (pthread_create) stay.
     */
    ret = refuse(filter, "fork", refused, 0, NULL, error, error_size);
    if (ret == 0)
        ret = refuse(filter, "vfork", refused, 0, NULL, error, error_size);
    if (ret < 0)
        goto out;
#if defined(__s390__)
    comparison = SCMP_A1(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0);
#else
    comparison = SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0);
#endif
    ret = refuse(filter, "clone", refused, 1, &comparison, error, error_size);
    if (ret < 0)
        goto out;
    /*
     * Signals to this process only: every device host of a daemon runs as the same account,
     * so without this one subverted host could kill, stop or flood the others (and any
     * process of that account). The process's own id is known now, and never changes.
     */
    comparison = SCMP_A0(SCMP_CMP_NE, (scmp_datum_t)getpid());
    ret = refuse(filter, "kill", refused, 1, &comparison, error, error_size);
    if (ret == 0)
        ret = refuse(filter, "tgkill", refused, 1, &comparison, error, error_size);
    if (ret == 0)
        ret = refuse(filter, "rt_sigqueueinfo", refused, 1, &comparison, error, error_size);
    if (ret == 0)
        ret = refuse(filter, "rt_tgsigqueueinfo", refused, 1, &comparison, error, error_size);
    if (ret == 0)
        ret = refuse(filter, "tkill", refused, 0, NULL, error, error_size);
    if (ret == 0)
        ret = refuse(filter, "pidfd_open", refused, 0, NULL, error, error_size);
    if (ret == 0)
        ret = refuse(filter, "pidfd_send_signal", refused, 0, NULL, error, error_size);
    if (ret < 0)
        goto out;
    /* clone3() passes its flags in memory, where a filter cannot look. ENOSYS, as from a
     * kernel before 5.3, makes glibc fall back to clone(), which the rules above vet. */
    ret = refuse(filter, "clone3", SCMP_ACT_ERRNO(ENOSYS), 0, NULL, error, error_size);
    if (ret < 0)
        goto out;
    /* personality() can ask the next exec to map page zero (MMAP_PAGE_ZERO, a way around
     * vm.mmap_min_addr), to make all readable memory executable (READ_IMPLIES_EXEC) or to
     * turn off address randomization. Only PER_LINUX, the default, is allowed; a filter
     * can compare an argument only once per rule, so the query value 0xffffffff is refused
     * as well: nothing a device model does needs it. */
    comparison = SCMP_A0(SCMP_CMP_NE, PER_LINUX);
    ret = refuse(filter, "personality", refused, 1, &comparison, error, error_size);
    if (ret < 0)
        goto out;
out:
    return ret;
}

int sandbox_install_seccomp(char *error, size_t error_size)
{
    scmp_filter_ctx filter = seccomp_init(SCMP_ACT_ALLOW);
    int ret;

    if (filter == NULL) {
        ret = fail(error, error_size, -ENOMEM, "seccomp_init");
        goto out;
    }
    /* No thread synchronisation (SCMP_FLTATR_CTL_TSYNC): the host installs the filter while
     * it has one thread (sandbox_apply() refuses more), and every later thread inherits it.
     * Under a service manager's own filter, libseccomp cannot probe the kernel for TSYNC
     * and would refuse it. */
    /* The kernel's own errno from seccomp_load(), not libseccomp's -ECANCELED. */
    seccomp_attr_set(filter, SCMP_FLTATR_API_SYSRAWRC, 1);
    ret = add_arches(filter, error, error_size);
    if (ret < 0)
        goto out;
    ret = add_rules(filter, error, error_size);
    if (ret < 0)
        goto out;
    ret = seccomp_load(filter);
    if (ret < 0) {
        fail(error, error_size, ret, "loading the seccomp filter");
        goto out;
    }
out:
    if (filter != NULL)
        seccomp_release(filter);
    return ret;
}
