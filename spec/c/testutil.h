/* Helpers shared by the C specs (spec/c/test_*.c): clocks, children with a
 * bounded wait, descriptors whose identity a receiver can check. */
#ifndef TESTUTIL_H
#define TESTUTIL_H
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include "fdpass.h"
#include "ctest.h"

#define CHECK_STR(a, b) do { const char *sa_ = (a), *sb_ = (b); \
    if (!sa_ || !sb_ || strcmp(sa_, sb_) != 0) { \
        printf("# %s:%d: %s == \"%s\", expected \"%s\"\n", __FILE__, __LINE__, \
               #a, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)"); \
        ctest_case_failed = 1; return; } } while (0)

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static inline long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* A memfd holding the int `tag` at offset 0: its identity survives passing. */
static inline int tagged_fd(int tag)
{
    int fd = memfd_create("fdpass-ctest", MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (pwrite(fd, &tag, sizeof tag, 0) != (ssize_t)sizeof tag) {
        close(fd);
        return -1;
    }
    return fd;
}

/* The tag of a tagged_fd, or INT32_MIN when it is not one. */
static inline int tag_of(int fd)
{
    int tag;
    if (pread(fd, &tag, sizeof tag, 0) != (ssize_t)sizeof tag)
        return INT32_MIN;
    return tag;
}

static inline long long ino_of(int fd)
{
    struct stat st;
    return fstat(fd, &st) < 0 ? -1 : (long long)st.st_ino;
}

static inline int getfl(int fd) { return fcntl(fd, F_GETFL); }
static inline int getfdflags(int fd) { return fcntl(fd, F_GETFD); }

static inline int set_nonblock(int fd, int on)
{
    int fl = fcntl(fd, F_GETFL);
    return fcntl(fd, F_SETFL, on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK);
}

static inline void close_fds(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (fds[i] >= 0)
            close(fds[i]);
}

/* Waits at most limit_ms for a child. Returns its exit code, 1000 + signal
 * when it was killed by one, or -1 when it had to be killed for hanging. */
static inline int wait_child_ms(pid_t pid, int limit_ms)
{
    long long until = now_ms() + limit_ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st);
        if (r < 0 && errno != EINTR)
            return -2;
        if (now_ms() > until) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
            return -1;
        }
        sleep_ms(2);
    }
}

static inline int wait_child(pid_t pid) { return wait_child_ms(pid, 20000); }

/* Soft RLIMIT_NOFILE up to the hard limit, for the tests with thousands of
 * descriptors. */
static inline int raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    return rl.rlim_cur >= want ? 0 : -1;
}

/* The highest descriptor number in use. */
static inline int highest_fd(void)
{
    int hi = -1;
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int self = d ? dirfd(d) : -1;
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') {
            int n = atoi(e->d_name);
            if (n != self && n > hi)
                hi = n;
        }
    if (d)
        closedir(d);
    return hi;
}

/* SIGALRM without SA_RESTART: a blocking system call returns EINTR. */
static volatile sig_atomic_t alarms __attribute__((unused));
/* At most 100 signals: a call that restarts its timeout on every EINTR
 * then ends (and fails its test) instead of hanging. */
static inline void on_alarm(int sig)
{
    (void)sig;
    if (++alarms >= 100) {
        struct itimerval off;
        memset(&off, 0, sizeof off);
        setitimer(ITIMER_REAL, &off, NULL);
    }
}

static inline void alarm_every(int first_ms, int every_ms, struct sigaction *old)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; /* no SA_RESTART */
    sigaction(SIGALRM, &sa, old);
    alarms = 0;
    struct itimerval it = { { every_ms / 1000, (every_ms % 1000) * 1000 },
                            { first_ms / 1000, (first_ms % 1000) * 1000 } };
    setitimer(ITIMER_REAL, &it, NULL);
}

static inline void alarm_off(const struct sigaction *old)
{
    struct itimerval it;
    memset(&it, 0, sizeof it);
    setitimer(ITIMER_REAL, &it, NULL);
    /* A signal the timer sent may still be pending (valgrind delivers them
     * late): take it before the old action (SIG_DFL: death) comes back. */
    sigset_t s, prev;
    sigemptyset(&s);
    sigaddset(&s, SIGALRM);
    sigprocmask(SIG_BLOCK, &s, &prev);
    struct timespec zero = { 0, 0 };
    while (sigtimedwait(&s, NULL, &zero) == SIGALRM)
        ;
    sigaction(SIGALRM, old, NULL);
    sigprocmask(SIG_SETMASK, &prev, NULL);
}

/* Runs op(arg, 300) while SIGALRM comes every 20 ms: signals must not
 * stretch the 300 ms timeout, nor end the wait early. */
static inline void check_deadline_under_signals(long long (*op)(void *arg, int timeout_ms), void *arg)
{
    struct sigaction old;
    alarm_every(20, 20, &old);
    long long t0 = now_ms();
    long long r = op(arg, 300);
    long long took = now_ms() - t0;
    alarm_off(&old);
    int seen = alarms;
    CHECK_EQ(r, -ETIMEDOUT);
    CHECK(seen >= 5);
    CHECK(took >= 300);
    CHECK(took < 900);
}

/* Bytes with a pattern that catches reordering and shifts. */
static inline void fill_pattern(unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)((i * 131u + (i >> 8) * 7u + seed * 17u) & 0xff);
}

static inline int check_pattern(const unsigned char *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)((i * 131u + (i >> 8) * 7u + seed * 17u) & 0xff))
            return 0;
    return 1;
}

/* Reads up to cap-1 bytes until EOF, at most limit_ms; NUL-terminates. */
static inline ssize_t read_all_ms(int fd, char *buf, size_t cap, int limit_ms)
{
    size_t got = 0;
    long long until = now_ms() + limit_ms;
    while (got + 1 < cap) {
        long long left = until - now_ms();
        if (left <= 0)
            break;
        struct pollfd p = { .fd = fd, .events = POLLIN };
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        ssize_t n = read(fd, buf + got, cap - 1 - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    buf[got] = 0;
    return (ssize_t)got;
}

/* A private directory for path sockets, made in main before the tests. */
static inline int make_tmpdir(char *dir, size_t cap)
{
    snprintf(dir, cap, "/tmp/fdpass-ctest-XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return -1;
    }
    return 0;
}

/* Removes make_tmpdir's directory and whatever a test left in it. */
static inline void remove_tmpdir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[400];
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
    if (d)
        closedir(d);
    rmdir(dir);
}

/* A child where SIGPIPE has its default disposition and is not blocked,
 * so that a SIGPIPE the library let through would kill it. stdout is
 * flushed first so that the child does not print the parent's output
 * again. */
static inline pid_t fork_with_sigpipe(void)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
    }
    return pid;
}

#endif
