/*
 * The device host's sandbox: what the seccomp filter refuses and what it still allows, the
 * account change, and the rlimits. A sandbox cannot be undone, so every case runs in a
 * child of its own and reports through its exit status; a failed check names its line on
 * stderr. Control cases show that a refused call would have worked without the filter.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sandbox.h"
#include "test_process.h"
#include "test_runner.h"

/* A path that does not exist: mount() fails with ENOENT there unless the filter refuses it
 * first, and nothing is mounted either way. */
#define MISSING_PATH "/nonexistent-vfio-userd-sandbox-test"

/* In a child: on failure, say which check and leave with status 1. */
#define CHILD_CHECK(condition)                                                                     \
    do {                                                                                           \
        if (!(condition)) {                                                                        \
            fprintf(stderr, "%s:%d: failed: %s (errno %d: %s)\n", __FILE__, __LINE__, #condition,  \
                    errno, strerror(errno));                                                       \
            _exit(1);                                                                              \
        }                                                                                          \
    } while (0)

#define CHILD_FAILS_WITH(call, expected_errno)                                                     \
    do {                                                                                           \
        errno = 0;                                                                                 \
        CHILD_CHECK((call) == -1 && errno == (expected_errno));                                    \
    } while (0)

static void install_seccomp_or_exit(void)
{
    char error[256] = "";

    if (sandbox_install_seccomp(error, sizeof(error)) < 0) {
        fprintf(stderr, "sandbox_install_seccomp: %s\n", error);
        _exit(2);
    }
}

static void apply_or_exit(const struct sandbox_policy *policy)
{
    char error[256] = "";

    if (sandbox_apply(policy, error, sizeof(error)) < 0) {
        fprintf(stderr, "sandbox_apply: %s\n", error);
        _exit(2);
    }
}

static void check_status_field(const char *field, const char *expected)
{
    char value[256];

    CHILD_CHECK(test_proc_status(0, field, value, sizeof(value)) == 0);
    if (strcmp(value, expected) != 0) {
        fprintf(stderr, "/proc/self/status %s is \"%s\", expected \"%s\"\n", field, value,
                expected);
        _exit(1);
    }
}

/* ---- the filter ---- */

static void refused_calls_work_without_filter(void)
{
    /* clone3 with a size of 0 is invalid: EINVAL from the kernel, never a new process. */
    CHILD_FAILS_WITH(syscall(SYS_clone3, NULL, 0), EINVAL);
    /* Root gets past the capability check to the path; others fail there with EPERM. */
    if (geteuid() == 0)
        CHILD_FAILS_WITH(mount("none", MISSING_PATH, "tmpfs", 0, NULL), ENOENT);
    CHILD_CHECK(ptrace(PTRACE_TRACEME, 0, NULL, NULL) == 0);
}

START_TEST(control_without_filter)
{
    test_assert_child_passed(refused_calls_work_without_filter);
}
END_TEST

static void *thread_body(void *argument)
{
    return argument;
}

static void filter_refuses_and_allows(void)
{
    char buffer[4096];
    int fds[2], fd;
    pthread_t thread;
    void *result = NULL, *memory;
    pid_t child;
    int status;
    long ret;

    install_seccomp_or_exit();

    /* Refused. */
    CHILD_FAILS_WITH(ptrace(PTRACE_TRACEME, 0, NULL, NULL), EPERM);
    CHILD_FAILS_WITH(unshare(CLONE_NEWUSER), EPERM);
    CHILD_FAILS_WITH(mount("none", MISSING_PATH, "tmpfs", 0, NULL), EPERM);
    CHILD_FAILS_WITH(umount2(MISSING_PATH, 0), EPERM);
    /* A wrong magic number: without the filter EINVAL, and nothing reboots either way. */
    CHILD_FAILS_WITH(syscall(SYS_reboot, 0, 0, 0, NULL), EPERM);
    CHILD_FAILS_WITH(syscall(SYS_clone3, NULL, 0), ENOSYS);
    CHILD_FAILS_WITH(syscall(SYS_bpf, 0, NULL, 0), EPERM);
    CHILD_FAILS_WITH(syscall(SYS_setns, -1, 0), EPERM);
    CHILD_FAILS_WITH(syscall(SYS_init_module, NULL, 0, ""), EPERM);
    CHILD_FAILS_WITH(syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0), EPERM);
    CHILD_FAILS_WITH(personality(READ_IMPLIES_EXEC), EPERM);
    CHILD_FAILS_WITH(personality(MMAP_PAGE_ZERO), EPERM);
    /* clone() creating a namespace; should it pass anyway, the new child leaves at once. */
    errno = 0;
    ret = syscall(SYS_clone, CLONE_NEWNET | SIGCHLD, 0, NULL, NULL, 0);
    if (ret == 0)
        _exit(0);
    CHILD_CHECK(ret == -1 && errno == EPERM);

    /* Allowed. */
    CHILD_CHECK(getpid() > 0);
    CHILD_CHECK(personality(PER_LINUX) >= 0);
    fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    CHILD_CHECK(fd >= 0);
    CHILD_CHECK(read(fd, buffer, sizeof(buffer)) > 0);
    close(fd);
    CHILD_CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) == 0);
    CHILD_CHECK(write(fds[0], "x", 1) == 1 && read(fds[1], buffer, 1) == 1);
    close(fds[0]);
    close(fds[1]);
    memory = mmap(NULL, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHILD_CHECK(memory != MAP_FAILED);
    memset(memory, 0x5a, 1 << 20);
    munmap(memory, 1 << 20);
    /* glibc tries clone3 first and falls back to clone on ENOSYS. */
    CHILD_CHECK(pthread_create(&thread, NULL, thread_body, buffer) == 0);
    CHILD_CHECK(pthread_join(thread, &result) == 0 && result == buffer);
    /* Signals to itself only. */
    CHILD_CHECK(kill(getpid(), 0) == 0);
    CHILD_CHECK(raise(0) == 0);
    CHILD_FAILS_WITH(kill(getppid(), 0), EPERM);
    CHILD_FAILS_WITH(kill(0, 0), EPERM);
    CHILD_FAILS_WITH(kill(-1, 0), EPERM);
    CHILD_FAILS_WITH(syscall(SYS_tgkill, getppid(), getppid(), 0), EPERM);
    CHILD_FAILS_WITH(syscall(SYS_tkill, getpid(), 0), EPERM);
    CHILD_FAILS_WITH(syscall(SYS_pidfd_open, getppid(), 0), EPERM);
    /* No processes: should one start anyway, it leaves at once with a telling status. */
    errno = 0;
    child = fork();
    if (child == 0)
        _exit(7);
    CHILD_CHECK(child == -1 && errno == EPERM);
    errno = 0;
    ret = syscall(SYS_clone, SIGCHLD, 0, NULL, NULL, 0);
    if (ret == 0)
        _exit(7);
    CHILD_CHECK(ret == -1 && errno == EPERM);
    CHILD_CHECK(waitpid(-1, &status, WNOHANG) == -1 && errno == ECHILD);
}

START_TEST(filter_refuses_and_allows_calls)
{
    test_assert_child_passed(filter_refuses_and_allows);
}
END_TEST

#if defined(__x86_64__) && !defined(__ILP32__)
/* A system call through the i386 table, as a 64-bit process can still make one. */
static long int80_syscall(long number, long a, long b, long c)
{
    long ret;

    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "a"(number), "b"(a), "c"(b), "d"(c), "S"(0L), "D"(0L)
                     : "memory", "r8", "r9", "r10", "r11");
    return ret;
}

#define I386_NR_GETPID 20
#define I386_NR_MOUNT  21
#define I386_NR_UMOUNT 22

static void probe_int80(void)
{
    CHILD_CHECK(int80_syscall(I386_NR_GETPID, 0, 0, 0) == getpid());
}

static void int80_mount_refused(void)
{
    /* Without the filter, root's mount(NULL, NULL, NULL) fails with EFAULT. */
    install_seccomp_or_exit();
    CHILD_CHECK(int80_syscall(I386_NR_MOUNT, 0, 0, 0) == -EPERM);
    CHILD_CHECK(int80_syscall(I386_NR_UMOUNT, 0, 0, 0) == -EPERM);
    CHILD_CHECK(int80_syscall(I386_NR_GETPID, 0, 0, 0) == getpid());
}

START_TEST(i386_calls_are_filtered_too)
{
    int status = test_run_child(probe_int80);

    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        fprintf(stderr, "i386_calls_are_filtered_too: skipped, this kernel has no i386 "
                        "system calls for 64-bit processes\n");
        return;
    }
    test_assert_child_passed(int80_mount_refused);
}
END_TEST

static void x32_call(void)
{
    install_seccomp_or_exit();
    /* A native number with the x32 bit: the filter's bad-arch action, whether or not this
     * kernel was built with x32. */
    syscall(0x40000000 | SYS_getpid);
    _exit(1);
}

START_TEST(x32_calls_end_the_process)
{
    int status = test_run_child(x32_call);

    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS, "child status %#x", status);
}
END_TEST
#endif

/* ---- sandbox_apply ---- */

static void apply_then_filter(void)
{
    struct sandbox_policy policy = {0};
    struct rlimit limit;

    apply_or_exit(&policy);
    install_seccomp_or_exit();
    check_status_field("Seccomp", "2");
    check_status_field("NoNewPrivs", "1");
    /* Staying on the account (here root) still empties every set it can. */
    check_status_field("CapEff", "0000000000000000");
    check_status_field("CapPrm", "0000000000000000");
    check_status_field("CapInh", "0000000000000000");
    check_status_field("CapAmb", "0000000000000000");
    if (getuid() == 0)
        check_status_field("CapBnd", "0000000000000000");
    CHILD_CHECK(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0);
    CHILD_CHECK(getrlimit(RLIMIT_CORE, &limit) == 0 && limit.rlim_cur == 0 && limit.rlim_max == 0);
}

START_TEST(status_shows_filter_and_no_new_privs)
{
    test_assert_child_passed(apply_then_filter);
}
END_TEST

static void become_nobody(void)
{
    struct passwd *nobody = getpwnam("nobody");
    struct group *shadow = getgrnam("shadow");
    gid_t groups[2] = {0, 0};
    struct sandbox_policy policy = {.change_user = true};
    uid_t ruid, euid, suid;
    gid_t rgid, egid, sgid;

    CHILD_CHECK(nobody != NULL);
    policy.uid = nobody->pw_uid;
    policy.gid = nobody->pw_gid;
    /* Supplementary groups to lose, shadow's among them: kept, it would open /etc/shadow. */
    if (shadow != NULL)
        groups[0] = shadow->gr_gid;
    CHILD_CHECK(setgroups(2, groups) == 0);
    apply_or_exit(&policy);
    install_seccomp_or_exit();

    CHILD_CHECK(getresuid(&ruid, &euid, &suid) == 0);
    CHILD_CHECK(ruid == policy.uid && euid == policy.uid && suid == policy.uid);
    CHILD_CHECK(getresgid(&rgid, &egid, &sgid) == 0);
    CHILD_CHECK(rgid == policy.gid && egid == policy.gid && sgid == policy.gid);
    CHILD_CHECK(getgroups(0, NULL) == 0);
    check_status_field("Groups", "");
    check_status_field("CapEff", "0000000000000000");
    check_status_field("CapPrm", "0000000000000000");
    check_status_field("CapInh", "0000000000000000");
    check_status_field("CapBnd", "0000000000000000");
    check_status_field("CapAmb", "0000000000000000");
    check_status_field("NoNewPrivs", "1");
    CHILD_FAILS_WITH(setuid(0), EPERM);
    CHILD_FAILS_WITH(setgid(0), EPERM);
    CHILD_FAILS_WITH(open("/etc/shadow", O_RDONLY | O_CLOEXEC), EACCES);
}

START_TEST(change_user_drops_everything)
{
    if (geteuid() != 0) {
        fprintf(stderr, "change_user_drops_everything: skipped, needs root\n");
        return;
    }
    test_assert_child_passed(become_nobody);
}
END_TEST

#define MEMORY_LIMIT (64u << 20)

static void limit_memory(void)
{
    struct sandbox_policy policy = {.memory_limit = MEMORY_LIMIT};
    struct rlimit before, after;
    char *memory;

    CHILD_CHECK(getrlimit(RLIMIT_DATA, &before) == 0);
    apply_or_exit(&policy);
    CHILD_CHECK(getrlimit(RLIMIT_DATA, &after) == 0);
    if (TEST_UNDER_ASAN) {
        /* Left alone on purpose: ASan's shadow memory counts as data. */
        CHILD_CHECK(after.rlim_cur == before.rlim_cur && after.rlim_max == before.rlim_max);
        return;
    }
    CHILD_CHECK(after.rlim_cur == MEMORY_LIMIT && after.rlim_max == MEMORY_LIMIT);
    memory = malloc(2 * MEMORY_LIMIT);
    if (memory != NULL)
        memset(memory, 1, 2 * MEMORY_LIMIT); /* not refused: would it at least fit? */
    CHILD_CHECK(memory == NULL);
    /* Raising it back is not possible either. */
    after.rlim_cur = after.rlim_max = 2 * MEMORY_LIMIT;
    CHILD_FAILS_WITH(setrlimit(RLIMIT_DATA, &after), EPERM);
}

START_TEST(memory_limit_applies)
{
    test_assert_child_passed(limit_memory);
}
END_TEST

#define FILES_LIMIT 16

static void limit_files(void)
{
    struct sandbox_policy policy = {.files_limit = FILES_LIMIT};
    struct rlimit limit;
    int fd, last = -1;

    apply_or_exit(&policy);
    CHILD_CHECK(getrlimit(RLIMIT_NOFILE, &limit) == 0);
    CHILD_CHECK(limit.rlim_cur == FILES_LIMIT && limit.rlim_max == FILES_LIMIT);
    for (int i = 0; i <= FILES_LIMIT; i++) {
        fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            break;
        last = fd;
    }
    CHILD_CHECK(fd == -1 && errno == EMFILE);
    CHILD_CHECK(last == FILES_LIMIT - 1);
}

START_TEST(files_limit_applies)
{
    test_assert_child_passed(limit_files);
}
END_TEST

/* ---- what cannot be done is reported ---- */

static void files_limit_above_nr_open(void)
{
    struct sandbox_policy policy = {0};
    unsigned long long nr_open = 0;
    char error[256] = "";
    FILE *file = fopen("/proc/sys/fs/nr_open", "re");

    CHILD_CHECK(file != NULL && fscanf(file, "%llu", &nr_open) == 1);
    fclose(file);
    /* The kernel refuses a descriptor limit above fs.nr_open, even to root. */
    policy.files_limit = nr_open + 1;
    CHILD_CHECK(sandbox_apply(&policy, error, sizeof(error)) == -EPERM);
    CHILD_CHECK(strstr(error, "RLIMIT_NOFILE") != NULL);
    fprintf(stderr, "reported as expected: %s\n", error);
}

START_TEST(impossible_files_limit_is_reported)
{
    test_assert_child_passed(files_limit_above_nr_open);
}
END_TEST

static void change_user_without_privileges(void)
{
    struct sandbox_policy unprivileged = {0};
    struct sandbox_policy change = {.change_user = true, .uid = 65534, .gid = 65534};
    char error[256] = "";

    /* First give up every capability, as a daemon that is not root has none. */
    apply_or_exit(&unprivileged);
    CHILD_CHECK(sandbox_apply(&change, error, sizeof(error)) == -EPERM);
    CHILD_CHECK(strstr(error, "bounding set") != NULL);
    fprintf(stderr, "reported as expected: %s\n", error);
}

START_TEST(change_user_without_privileges_is_reported)
{
    test_assert_child_passed(change_user_without_privileges);
}
END_TEST

static void *wait_forever(void *argument)
{
    for (;;)
        pause();
    return argument;
}

static void apply_with_a_thread(void)
{
    struct sandbox_policy policy = {0};
    char error[256] = "";
    pthread_t thread;

    CHILD_CHECK(pthread_create(&thread, NULL, wait_forever, NULL) == 0);
    CHILD_CHECK(sandbox_apply(&policy, error, sizeof(error)) == -EBUSY);
    CHILD_CHECK(strstr(error, "threads") != NULL);
    /* Nothing was given up. */
    CHILD_CHECK(prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 0);
}

START_TEST(second_thread_is_refused)
{
    test_assert_child_passed(apply_with_a_thread);
}
END_TEST

int main(void)
{
    Suite *suite = suite_create("sandbox");
    TCase *filter = tcase_create("seccomp");
    TCase *apply = tcase_create("apply");

    tcase_add_test(filter, control_without_filter);
    tcase_add_test(filter, filter_refuses_and_allows_calls);
#if defined(__x86_64__) && !defined(__ILP32__)
    tcase_add_test(filter, i386_calls_are_filtered_too);
    tcase_add_test(filter, x32_calls_end_the_process);
#endif
    tcase_add_test(apply, status_shows_filter_and_no_new_privs);
    tcase_add_test(apply, change_user_drops_everything);
    tcase_add_test(apply, memory_limit_applies);
    tcase_add_test(apply, files_limit_applies);
    tcase_add_test(apply, impossible_files_limit_is_reported);
    tcase_add_test(apply, change_user_without_privileges_is_reported);
    tcase_add_test(apply, second_thread_is_refused);
    suite_add_tcase(suite, filter);
    suite_add_tcase(suite, apply);
    return test_run_suite(suite);
}
