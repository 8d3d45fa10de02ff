/* The raw API: fdpass_sendmsg / fdpass_recvmsg, one sendmsg and one
 * recvmsg each, against the real kernel. */
#include "testutil.h"
#include <grp.h>

#ifndef SO_PASSPIDFD
#define SO_PASSPIDFD 76
#endif

/* Sends n tagged descriptors (tags base..base+n-1) with "x"; closes ours. */
static ssize_t send_tagged(int sock, size_t n, int base, int timeout_ms)
{
    int fds[300];
    for (size_t i = 0; i < n; i++)
        fds[i] = tagged_fd(base + (int)i);
    ssize_t r = fdpass_sendmsg(sock, "x", 1, fds, n, timeout_ms);
    close_fds(fds, n);
    return r;
}

static void raw_no_fds(void)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_SEQPACKET, sv), 0);
    CHECK_EQ(fdpass_sendmsg(sv[0], "hello", 5, NULL, 0, 1000), 5);
    char buf[64];
    int fds[4] = { -7, -7, -7, -7 };
    size_t nfds = 99;
    CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, fds, 4, &nfds, 1000), 5);
    CHECK_EQ(nfds, 0);
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK_EQ(fds[0], -7);
    close(sv[0]);
    close(sv[1]);
}

static void raw_one_fd_is_same_file(void)
{
    int sv[2], p[2];
    CHECK_EQ(fdpass_socketpair(SOCK_SEQPACKET, sv), 0);
    CHECK_EQ(pipe(p), 0); /* not close-on-exec here: the received one must be */
    CHECK_EQ(write(p[1], "through", 7), 7);
    CHECK_EQ(fdpass_sendmsg(sv[0], "a", 1, &p[0], 1, 1000), 1);
    long long ino = ino_of(p[0]);
    close(p[0]);
    char buf[8];
    int fd = -1;
    size_t nfds = 0;
    CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, &fd, 1, &nfds, 1000), 1);
    CHECK_EQ(nfds, 1);
    CHECK(fd >= 0);
    CHECK_EQ(ino_of(fd), ino);
    CHECK_EQ(getfdflags(fd) & FD_CLOEXEC, FD_CLOEXEC);
    CHECK_EQ(read(fd, buf, sizeof buf), 7);
    CHECK(memcmp(buf, "through", 7) == 0);
    close(fd);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
}

static void raw_253_fds_in_order(void)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_SEQPACKET, sv), 0);
    CHECK_EQ(send_tagged(sv[0], 253, 1000, 1000), 1);
    int fds[260];
    size_t nfds = 0;
    char buf[4];
    CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, fds, 260, &nfds, 1000), 1);
    CHECK_EQ(nfds, 253);
    int ok = 1;
    for (size_t i = 0; i < nfds; i++)
        if (tag_of(fds[i]) != 1000 + (int)i || !(getfdflags(fds[i]) & FD_CLOEXEC))
            ok = 0;
    close_fds(fds, nfds);
    CHECK(ok);
    close(sv[0]);
    close(sv[1]);
}

/* A stream carries them as well, on the first byte. */
static void raw_stream_fds(void)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_STREAM, sv), 0);
    CHECK_EQ(send_tagged(sv[0], 3, 7, 1000), 1);
    int fds[8];
    size_t nfds = 0;
    char buf[4];
    CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, fds, 8, &nfds, 1000), 1);
    CHECK_EQ(nfds, 3);
    int t0 = tag_of(fds[0]), t1 = tag_of(fds[1]), t2 = tag_of(fds[2]);
    close_fds(fds, nfds);
    CHECK_EQ(t0, 7);
    CHECK_EQ(t1, 8);
    CHECK_EQ(t2, 9);
    close(sv[0]);
    close(sv[1]);
}

static void raw_254_fds_einval(void)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_SEQPACKET, sv), 0);
    int before = ctest_fdcount();
    CHECK_EQ(send_tagged(sv[0], 254, 0, 1000), -EINVAL);
    CHECK_EQ(ctest_fdcount(), before);
    char buf[4];
    int fds[4];
    size_t nfds = 9;
    /* nothing went out */
    CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, fds, 4, &nfds, 0), -EAGAIN);
    CHECK_EQ(nfds, 0);
    close(sv[0]);
    close(sv[1]);
}

static void raw_empty_payload_einval(void)
{
    int sv[2], p[2];
    CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
    for (int t = 0; t < 2; t++) {
        CHECK_EQ(fdpass_socketpair(t ? SOCK_STREAM : SOCK_SEQPACKET, sv), 0);
        CHECK_EQ(fdpass_sendmsg(sv[0], "", 0, &p[0], 1, 1000), -EINVAL);
        CHECK_EQ(fdpass_sendmsg(sv[0], "", 0, NULL, 0, 1000), -EINVAL);
        char buf[4];
        CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, NULL, 0, NULL, 0), -EAGAIN);
        close(sv[0]);
        close(sv[1]);
    }
    /* and a receive buffer of no bytes */
    CHECK_EQ(fdpass_socketpair(SOCK_SEQPACKET, sv), 0);
    char b;
    CHECK_EQ(fdpass_recvmsg(sv[1], &b, 0, NULL, 0, NULL, 0), -EINVAL);
    close(sv[0]);
    close(sv[1]);
    close(p[0]);
    close(p[1]);
}

/* More descriptors than the receiver takes: the data byte is gone, so is
 * every descriptor; a distinct error, nothing in our table. */
static void raw_ctrunc_closes_all(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(t ? SOCK_STREAM : SOCK_SEQPACKET, sv), 0);
        for (size_t maxfds = 0; maxfds < 5; maxfds += 2) {
            CHECK_EQ(send_tagged(sv[0], 5, 0, 1000), 1);
            int before = ctest_fdcount();
            int fds[8] = { -1, -1, -1, -1, -1, -1, -1, -1 };
            size_t nfds = 77;
            char buf[4];
            CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, fds, maxfds, &nfds, 1000), FDPASS_ECTRUNC);
            CHECK_EQ(nfds, 0);
            CHECK_EQ(ctest_fdcount(), before);
        }
        /* the channel still works for the next message */
        CHECK_EQ(send_tagged(sv[0], 2, 40, 1000), 1);
        int fds[2];
        size_t nfds = 0;
        char buf[4];
        CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, fds, 2, &nfds, 1000), 1);
        CHECK_EQ(nfds, 2);
        int t0 = tag_of(fds[0]);
        close_fds(fds, 2);
        CHECK_EQ(t0, 40);
        close(sv[0]);
        close(sv[1]);
    }
}

static void raw_emsgsize_closes_all(void)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_SEQPACKET, sv), 0);
    char big[100];
    memset(big, 'b', sizeof big);
    int fds[3];
    for (int i = 0; i < 3; i++)
        fds[i] = tagged_fd(i);
    CHECK_EQ(fdpass_sendmsg(sv[0], big, sizeof big, fds, 3, 1000), 100);
    close_fds(fds, 3);
    int before = ctest_fdcount();
    char small[10];
    int got[8];
    size_t nfds = 5;
    CHECK_EQ(fdpass_recvmsg(sv[1], small, sizeof small, got, 8, &nfds, 1000), -EMSGSIZE);
    CHECK_EQ(nfds, 0);
    CHECK_EQ(ctest_fdcount(), before);
    /* the record is gone */
    CHECK_EQ(fdpass_recvmsg(sv[1], small, sizeof small, got, 8, &nfds, 0), -EAGAIN);
    close(sv[0]);
    close(sv[1]);
}

/* A child at its RLIMIT_NOFILE with room for a single descriptor receives 10:
 * one is installed, nine are dropped; the one must be closed too. */
static int child_at_rlimit(int sock, int framed)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 10;
    int hi = highest_fd();
    for (int fd = 0; fd < hi; fd++) /* fill the holes: 0..hi all open */
        if (fcntl(fd, F_GETFD) < 0 && dup2(sock, fd) != fd)
            return 11;
    int before = ctest_fdcount();
    rl.rlim_cur = (rlim_t)hi + 2; /* exactly one slot free */
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 12;
    int r;
    if (framed) {
        fdpass_chan *c = fdpass_chan_new(sock, NULL);
        if (!c)
            return 13;
        fdpass_msg m;
        r = fdpass_chan_recv(c, &m, 5000);
        int again = fdpass_chan_recv(c, &m, 0);
        fdpass_chan_free(c);
        if (r == FDPASS_ECTRUNC && again != FDPASS_EBROKEN)
            return 14;
    } else {
        char buf[8];
        int fds[16];
        size_t nfds = 9;
        r = (int)fdpass_recvmsg(sock, buf, sizeof buf, fds, 16, &nfds, 5000);
        if (nfds != 0)
            return 15;
    }
    if (r != FDPASS_ECTRUNC)
        return 16;
    if (ctest_fdcount() != before)
        return 17;
    /* nothing was installed beyond the limit either: the slot is free */
    int probe = dup(0);
    if (probe != hi + 1)
        return 18;
    close(probe);
    return 0;
}

static void rlimit_case(int type, int framed)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(type, sv), 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(sv[0]);
        _exit(child_at_rlimit(sv[1], framed));
    }
    close(sv[1]);
    int fds[10];
    for (int i = 0; i < 10; i++)
        fds[i] = tagged_fd(i);
    int r;
    if (framed) {
        fdpass_chan *c = fdpass_chan_new(sv[0], NULL);
        CHECK(c);
        r = fdpass_chan_send(c, "ten", 3, fds, 10, 2000);
        fdpass_chan_free(c);
    } else {
        r = (int)fdpass_sendmsg(sv[0], "t", 1, fds, 10, 2000);
    }
    close_fds(fds, 10);
    int code = wait_child(pid);
    close(sv[0]);
    CHECK_EQ(r, framed ? 0 : 1);
    CHECK_EQ(code, 0);
}

static void raw_rlimit_ctrunc(void) { rlimit_case(SOCK_SEQPACKET, 0); }
static void raw_rlimit_ctrunc_stream(void) { rlimit_case(SOCK_STREAM, 0); }
static void framed_rlimit_ctrunc(void) { rlimit_case(SOCK_SEQPACKET, 1); }
static void framed_rlimit_ctrunc_stream(void) { rlimit_case(SOCK_STREAM, 1); }

/* SO_PASSCRED puts SCM_CREDENTIALS before SCM_RIGHTS. */
static void raw_credentials_first(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2], on = 1;
        CHECK_EQ(fdpass_socketpair(t ? SOCK_STREAM : SOCK_SEQPACKET, sv), 0);
        CHECK_EQ(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof on), 0);
        CHECK_EQ(send_tagged(sv[0], 253, 500, 1000), 1);
        int fds[253];
        size_t nfds = 0;
        char buf[4];
        CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, fds, 253, &nfds, 1000), 1);
        CHECK_EQ(nfds, 253);
        int first = tag_of(fds[0]), last = tag_of(fds[252]);
        close_fds(fds, nfds);
        CHECK_EQ(first, 500);
        CHECK_EQ(last, 752);
        /* and the error path closes them behind the credentials too */
        CHECK_EQ(send_tagged(sv[0], 4, 0, 1000), 1);
        int before = ctest_fdcount();
        CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, fds, 2, &nfds, 1000), FDPASS_ECTRUNC);
        CHECK_EQ(ctest_fdcount(), before);
        close(sv[0]);
        close(sv[1]);
    }
}

/* SO_PASSPIDFD (Linux 6.5) adds an SCM_PIDFD descriptor: it must be closed,
 * and the descriptors found. */
static void raw_pidfd_closed(void)
{
    int sv[2], on = 1;
    CHECK_EQ(fdpass_socketpair(SOCK_SEQPACKET, sv), 0);
    if (setsockopt(sv[1], SOL_SOCKET, SO_PASSPIDFD, &on, sizeof on) < 0) {
        printf("# SO_PASSPIDFD not supported here (%s): only the plain path ran\n", strerror(errno));
    }
    CHECK_EQ(send_tagged(sv[0], 2, 60, 1000), 1);
    int before = ctest_fdcount();
    int fds[4];
    size_t nfds = 0;
    char buf[4];
    CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, fds, 4, &nfds, 1000), 1);
    CHECK_EQ(nfds, 2);
    CHECK_EQ(ctest_fdcount(), before + 2); /* no pidfd left over */
    int t0 = tag_of(fds[0]), t1 = tag_of(fds[1]);
    close_fds(fds, 2);
    CHECK_EQ(t0, 60);
    CHECK_EQ(t1, 61);
    close(sv[0]);
    close(sv[1]);
}

/* O_NONBLOCK lives in the open file description, shared by sender and
 * receiver: nothing may change it, and no timeout may either. */
static void raw_flags_unchanged(void)
{
    int sv[2], p[2];
    CHECK_EQ(fdpass_socketpair(SOCK_SEQPACKET, sv), 0);
    CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
    CHECK_EQ(set_nonblock(p[0], 1), 0);          /* read end non-blocking */
    CHECK_EQ(set_nonblock(sv[0], 1), 0);         /* sending socket non-blocking */
    int fl_p0 = getfl(p[0]), fl_p1 = getfl(p[1]);
    int fl_s0 = getfl(sv[0]), fl_s1 = getfl(sv[1]);
    CHECK(fl_p0 & O_NONBLOCK);
    CHECK(!(fl_p1 & O_NONBLOCK));
    CHECK(!(fl_s1 & O_NONBLOCK));
    CHECK_EQ(fdpass_sendmsg(sv[0], "ab", 2, p, 2, 100), 2);
    CHECK_EQ(fdpass_sendmsg(sv[0], "cd", 2, p, 2, -1), 2);
    CHECK_EQ(fdpass_sendmsg(sv[0], "ef", 2, p, 2, 0), 2);
    int fds[6];
    size_t n = 0;
    char buf[4];
    CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, fds, 2, &n, 100), 2);
    CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, fds + 2, 2, &n, 0), 2);
    CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, fds + 4, 2, &n, -1), 2);
    /* timeouts on the blocking receiver, and would-block on both */
    CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, NULL, 0, NULL, 0), -EAGAIN);
    CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, NULL, 0, NULL, 20), -ETIMEDOUT);
    CHECK_EQ(fdpass_recvmsg(sv[0], buf, sizeof buf, NULL, 0, NULL, 20), -ETIMEDOUT);
    int ok = 1;
    for (int i = 0; i < 6; i += 2) {
        if (getfl(fds[i]) != fl_p0 || getfl(fds[i + 1]) != fl_p1)
            ok = 0;
        if (!(getfdflags(fds[i]) & FD_CLOEXEC) || !(getfdflags(fds[i + 1]) & FD_CLOEXEC))
            ok = 0;
    }
    close_fds(fds, 6);
    CHECK(ok);
    CHECK_EQ(getfl(p[0]), fl_p0);
    CHECK_EQ(getfl(p[1]), fl_p1);
    CHECK_EQ(getfl(sv[0]), fl_s0);
    CHECK_EQ(getfl(sv[1]), fl_s1);
    close_fds(p, 2);
    close_fds(sv, 2);
}

/* Received descriptors are close-on-exec even when the sent one is not. */
static void raw_received_cloexec(void)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_STREAM, sv), 0);
    int fd = open("/dev/null", O_RDONLY); /* no O_CLOEXEC */
    CHECK(fd >= 0);
    CHECK_EQ(getfdflags(fd) & FD_CLOEXEC, 0);
    CHECK_EQ(fdpass_sendmsg(sv[0], "n", 1, &fd, 1, 1000), 1);
    int got = -1;
    size_t n = 0;
    char b;
    CHECK_EQ(fdpass_recvmsg(sv[1], &b, 1, &got, 1, &n, 1000), 1);
    CHECK_EQ(n, 1);
    int flags = getfdflags(got);
    close(got);
    close(fd);
    close_fds(sv, 2);
    CHECK_EQ(flags & FD_CLOEXEC, FD_CLOEXEC);
}

/* A child that sends one message with a tagged fd after delay_ms. */
static pid_t sender_after(int sock, int delay_ms, int tag)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        sleep_ms(delay_ms);
        int fd = tagged_fd(tag);
        _exit(fdpass_sendmsg(sock, "late", 4, &fd, 1, 5000) == 4 ? 0 : 1);
    }
    return pid;
}

static void eintr_case(int timeout_ms)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_SEQPACKET, sv), 0);
    pid_t pid = sender_after(sv[0], 300, 31);
    CHECK(pid > 0);
    struct sigaction old;
    long long t0 = now_ms();
    alarm_every(50, 50, &old); /* several signals before the message */
    char buf[8];
    int fd = -1;
    size_t n = 0;
    ssize_t r = fdpass_recvmsg(sv[1], buf, sizeof buf, &fd, 1, &n, timeout_ms);
    alarm_off(&old);
    long long took = now_ms() - t0;
    int seen = alarms;
    int code = wait_child(pid);
    int tag = n == 1 ? tag_of(fd) : -1;
    if (n == 1)
        close(fd);
    close_fds(sv, 2);
    CHECK_EQ(r, 4);
    CHECK_EQ(n, 1);
    CHECK_EQ(tag, 31);
    CHECK(seen >= 2);
    CHECK(took >= 250 && took < 3000);
    CHECK_EQ(code, 0);
}

static void raw_eintr_blocking(void) { eintr_case(-1); }
static void raw_eintr_with_timeout(void) { eintr_case(5000); }

static long long recv_nothing(void *sock, int timeout_ms)
{
    char buf[4];
    return fdpass_recvmsg(*(int *)sock, buf, sizeof buf, NULL, 0, NULL, timeout_ms);
}

/* Signals every 20 ms must not stretch a 300 ms timeout. */
static void raw_eintr_deadline_kept(void)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_SEQPACKET, sv), 0);
    check_deadline_under_signals(recv_nothing, &sv[1]);
    close_fds(sv, 2);
}

static void raw_recv_wouldblock_and_timeout(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(t ? SOCK_STREAM : SOCK_SEQPACKET, sv), 0);
        char buf[4];
        long long t0 = now_ms();
        CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, NULL, 0, NULL, 0), -EAGAIN);
        CHECK(now_ms() - t0 < 20);
        t0 = now_ms();
        CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, NULL, 0, NULL, 50), -ETIMEDOUT);
        long long took = now_ms() - t0;
        CHECK(took >= 50);
        CHECK(took < 1000);
        close_fds(sv, 2);
    }
}

/* Fills the sending side with timeout-0 sends; returns how many went. */
static int fill(int sock)
{
    static char chunk[4096];
    for (int i = 0; i < 100000; i++) {
        ssize_t r = fdpass_sendmsg(sock, chunk, sizeof chunk, NULL, 0, 0);
        if (r == -EAGAIN)
            return i;
        if (r < 0)
            return -1;
    }
    return -1;
}

static void raw_send_wouldblock_and_timeout(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(t ? SOCK_STREAM : SOCK_SEQPACKET, sv), 0);
        int fl = getfl(sv[0]);
        CHECK(fill(sv[0]) > 0);
        int p = tagged_fd(1);
        int before = ctest_fdcount();
        CHECK_EQ(fdpass_sendmsg(sv[0], "z", 1, &p, 1, 0), -EAGAIN);
        long long t0 = now_ms();
        CHECK_EQ(fdpass_sendmsg(sv[0], "z", 1, &p, 1, 50), -ETIMEDOUT);
        long long took = now_ms() - t0;
        CHECK_EQ(ctest_fdcount(), before);
        close(p);
        CHECK(took >= 50);
        CHECK(took < 1000);
        CHECK_EQ(getfl(sv[0]), fl);
        close_fds(sv, 2);
    }
}

/* timeout < 0 follows the socket's mode: a non-blocking socket answers
 * -EAGAIN at once. Run in a child: a wrong implementation blocks forever. */
static void raw_nonblocking_socket_own_mode(void)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_SEQPACKET, sv), 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        char buf[4];
        set_nonblock(sv[1], 1);
        if (fdpass_recvmsg(sv[1], buf, sizeof buf, NULL, 0, NULL, -1) != -EAGAIN)
            _exit(1);
        set_nonblock(sv[0], 1);
        if (fill(sv[0]) <= 0)
            _exit(2);
        if (fdpass_sendmsg(sv[0], "z", 1, NULL, 0, -1) != -EAGAIN)
            _exit(3);
        _exit(0);
    }
    int code = wait_child_ms(pid, 3000);
    close_fds(sv, 2);
    CHECK_EQ(code, 0);
}

static void raw_eof(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(t ? SOCK_STREAM : SOCK_SEQPACKET, sv), 0);
        CHECK_EQ(fdpass_sendmsg(sv[0], "last", 4, NULL, 0, 1000), 4);
        close(sv[0]);
        char buf[8];
        int fd;
        size_t n = 3;
        CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, &fd, 1, &n, 1000), 4);
        CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, &fd, 1, &n, 1000), FDPASS_EOF);
        CHECK_EQ(n, 0);
        CHECK_EQ(fdpass_recvmsg(sv[1], buf, sizeof buf, &fd, 1, &n, -1), FDPASS_EOF);
        close(sv[1]);
    }
}

/* A gone peer is -EPIPE, not a SIGPIPE: in a child with the default
 * disposition, so that a SIGPIPE would kill only the child. */
static void raw_epipe_no_sigpipe(void)
{
    pid_t pid = fork_with_sigpipe();
    CHECK(pid >= 0);
    if (pid == 0) {
        for (int t = 0; t < 2; t++) {
            int sv[2];
            if (fdpass_socketpair(t ? SOCK_STREAM : SOCK_SEQPACKET, sv) < 0)
                _exit(2);
            close(sv[1]);
            int fd = tagged_fd(0);
            if (fdpass_sendmsg(sv[0], "p", 1, &fd, 1, 1000) != -EPIPE)
                _exit(3);
            if (fdpass_sendmsg(sv[0], "p", 1, NULL, 0, -1) != -EPIPE)
                _exit(4);
            close(fd);
            close(sv[0]);
        }
        _exit(0);
    }
    CHECK_EQ(wait_child(pid), 0);
}

/* ETOOMANYREFS: an unprivileged sender cannot have more descriptors in
 * flight than its RLIMIT_NOFILE (root is exempt: the child becomes nobody
 * when we are root). The error comes back as it is, nothing leaks. */
static void raw_etoomanyrefs_unprivileged(void)
{
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        if (geteuid() == 0 && (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0))
            _exit(2);
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        rl.rlim_cur = 64;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) /* new fds stay low: lowest free */
            _exit(3);
        int sv[2];
        if (fdpass_socketpair(SOCK_SEQPACKET, sv) < 0)
            _exit(4);
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        int before = ctest_fdcount();
        ssize_t r = 0;
        int sent = 0;
        while (sent < 500 && (r = fdpass_sendmsg(sv[0], "r", 1, &fd, 1, 0)) == 1)
            sent++;
        if (r != -ETOOMANYREFS)
            _exit(5);
        if (sent < 60 || sent > 70) /* about the limit of 64 */
            _exit(6);
        if (ctest_fdcount() != before)
            _exit(7);
        if (strcmp(fdpass_errname((int)r), "ETOOMANYREFS") != 0)
            _exit(8);
        _exit(0);
    }
    CHECK_EQ(wait_child(pid), 0);
}

/* What a receive answers on a peer it cannot use. */
static void raw_bad_socket(void)
{
    char buf[4];
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    CHECK(fd >= 0);
    CHECK_EQ(fdpass_recvmsg(fd, buf, sizeof buf, NULL, 0, NULL, 0), -ENOTSOCK);
    CHECK_EQ(fdpass_sendmsg(fd, "x", 1, NULL, 0, 0), -ENOTSOCK);
    close(fd);
    CHECK_EQ(fdpass_recvmsg(fd, buf, sizeof buf, NULL, 0, NULL, 0), -EBADF);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN(raw_no_fds);
    RUN(raw_one_fd_is_same_file);
    RUN(raw_253_fds_in_order);
    RUN(raw_stream_fds);
    RUN(raw_254_fds_einval);
    RUN(raw_empty_payload_einval);
    RUN(raw_ctrunc_closes_all);
    RUN(raw_emsgsize_closes_all);
    RUN(raw_rlimit_ctrunc);
    RUN(raw_rlimit_ctrunc_stream);
    RUN(framed_rlimit_ctrunc);
    RUN(framed_rlimit_ctrunc_stream);
    RUN(raw_credentials_first);
    RUN(raw_pidfd_closed);
    RUN(raw_flags_unchanged);
    RUN(raw_received_cloexec);
    RUN(raw_eintr_blocking);
    RUN(raw_eintr_with_timeout);
    RUN(raw_eintr_deadline_kept);
    RUN(raw_recv_wouldblock_and_timeout);
    RUN(raw_send_wouldblock_and_timeout);
    RUN(raw_nonblocking_socket_own_mode);
    RUN(raw_eof);
    RUN(raw_epipe_no_sigpipe);
    RUN(raw_etoomanyrefs_unprivileged);
    RUN(raw_bad_socket);
    CTEST_END();
}
