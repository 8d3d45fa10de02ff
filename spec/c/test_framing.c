/* Framed messages: fdpass_chan_*, fdpass_chan_send / fdpass_chan_recv / fdpass_chan_flush,
 * against the real kernel and against hand-crafted hostile records. */
#include "testutil.h"

static const int TYPES[2] = { SOCK_SEQPACKET, SOCK_STREAM };
#define TYPENAME(t) ((t) == SOCK_STREAM ? "stream" : "seqpacket")

/* ---- a sender in a child: messages with patterned bytes and tagged fds -- */

typedef struct mspec {
    size_t len, nfds;
    unsigned seed; /* bytes fill_pattern(seed), fd i tagged seed * 100000 + i */
} mspec;

/* Sends every message of ms in order from a child; _exit 0 when all went,
 * 10 + index of the first failure otherwise. */
static pid_t child_sender(int sock, int other, const mspec *ms, size_t n, int delay_ms)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    close(other);
    sleep_ms(delay_ms);
    fdpass_chan *c = fdpass_chan_new(sock, NULL);
    if (!c)
        _exit(2);
    for (size_t k = 0; k < n; k++) {
        unsigned char *data = malloc(ms[k].len + 1);
        int *fds = malloc((ms[k].nfds + 1) * sizeof(int));
        if (!data || !fds)
            _exit(3);
        fill_pattern(data, ms[k].len, ms[k].seed);
        for (size_t i = 0; i < ms[k].nfds; i++)
            if ((fds[i] = tagged_fd((int)(ms[k].seed * 100000 + i))) < 0)
                _exit(4);
        int r = fdpass_chan_send(c, data, ms[k].len, fds, ms[k].nfds, 20000);
        close_fds(fds, ms[k].nfds);
        free(data);
        free(fds);
        if (r != 0)
            _exit(10 + (int)k);
    }
    fdpass_chan_free(c);
    _exit(0);
}

/* Checks one received message against its spec; closes its descriptors.
 * Returns 0 or a line number to report. */
static int verify(const fdpass_msg *m, const mspec *s)
{
    int bad = 0;
    if (m->len != s->len)
        bad = __LINE__;
    else if (s->len && !check_pattern(m->data, m->len, s->seed))
        bad = __LINE__;
    else if (m->nfds != s->nfds)
        bad = __LINE__;
    for (size_t i = 0; i < m->nfds; i++) {
        if (!bad && tag_of(m->fds[i]) != (int)(s->seed * 100000 + i))
            bad = __LINE__;
        if (!bad && !(getfdflags(m->fds[i]) & FD_CLOEXEC))
            bad = __LINE__;
        close(m->fds[i]);
    }
    return bad;
}

/* Sends ms from a child over a fresh pair of `type`, receives and verifies
 * them here. Returns 0 or a line number. */
static int roundtrip(int type, const mspec *ms, size_t n, const fdpass_limits *lim)
{
    int sv[2];
    if (fdpass_socketpair(type, sv) < 0)
        return __LINE__;
    pid_t pid = child_sender(sv[0], sv[1], ms, n, 0);
    if (pid < 0)
        return __LINE__;
    fdpass_chan *c = fdpass_chan_new(sv[1], lim);
    int bad = c ? 0 : __LINE__;
    for (size_t k = 0; k < n && !bad; k++) {
        fdpass_msg m;
        int r = fdpass_chan_recv(c, &m, 20000);
        if (r != 0) {
            printf("# %s message %zu: fdpass_chan_recv = %d (%s) %s\n", TYPENAME(type), k, r,
                   fdpass_errname(r), fdpass_chan_detail(c) ? fdpass_chan_detail(c) : "");
            bad = __LINE__;
            break;
        }
        if ((bad = verify(&m, &ms[k])))
            printf("# %s message %zu (%zu bytes, %zu fds): mismatch at line %d\n",
                   TYPENAME(type), k, ms[k].len, ms[k].nfds, bad);
    }
    if (!bad) { /* nothing more: the sender closed at a boundary */
        fdpass_msg m;
        close(sv[0]);
        sv[0] = -1;
        int code = wait_child(pid);
        pid = -1;
        if (code != 0) {
            printf("# sender exited with %d\n", code);
            bad = __LINE__;
        } else if (fdpass_chan_recv(c, &m, 2000) != FDPASS_EOF)
            bad = __LINE__;
    }
    if (pid > 0)
        wait_child(pid);
    fdpass_chan_free(c);
    if (sv[0] >= 0)
        close(sv[0]);
    close(sv[1]);
    return bad;
}

static const fdpass_limits BIG = { 4u << 20, 10000 };

static void framed_fd_counts(void)
{
    CHECK_EQ(raise_nofile(12000), 0);
    static const size_t counts[] = { 0, 1, 253, 254, 5000 };
    for (int t = 0; t < 2; t++)
        for (size_t i = 0; i < NELEM(counts); i++) {
            mspec m = { 3, counts[i], (unsigned)i + 1 };
            int bad = roundtrip(TYPES[t], &m, 1, &BIG);
            if (bad)
                printf("# %s with %zu fds failed (line %d)\n", TYPENAME(TYPES[t]), counts[i], bad);
            CHECK_EQ(bad, 0);
        }
}

static void framed_payload_sizes(void)
{
    static const size_t sizes[] = { 0, 1, 65535, 65536, 65537, 1u << 20 };
    for (int t = 0; t < 2; t++)
        for (size_t i = 0; i < NELEM(sizes); i++) {
            mspec m = { sizes[i], 2, (unsigned)i + 3 };
            int bad = roundtrip(TYPES[t], &m, 1, &BIG);
            if (bad)
                printf("# %s with %zu bytes failed (line %d)\n", TYPENAME(TYPES[t]), sizes[i], bad);
            CHECK_EQ(bad, 0);
        }
}

/* Records of bytes without descriptors and of descriptors with few bytes,
 * interleaved, in a row: the order and the pairing must hold. */
static void framed_order_of_messages(void)
{
    CHECK_EQ(raise_nofile(12000), 0);
    static const mspec ms[] = {
        { 0, 0, 1 }, { 10, 1, 2 }, { 70000, 0, 3 }, { 5, 300, 4 }, { 1, 0, 5 },
        { 0, 2, 6 }, { 200000, 600, 7 }, { 65536, 253, 8 }, { 1u << 20, 5000, 9 }, { 7, 7, 10 },
    };
    for (int t = 0; t < 2; t++) {
        int bad = roundtrip(TYPES[t], ms, NELEM(ms), &BIG);
        if (bad)
            printf("# %s failed (line %d)\n", TYPENAME(TYPES[t]), bad);
        CHECK_EQ(bad, 0);
    }
}

static void framed_empty_message(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
        fdpass_chan *a = fdpass_chan_new(sv[0], NULL), *b = fdpass_chan_new(sv[1], NULL);
        CHECK(a && b);
        CHECK_EQ(fdpass_chan_send(a, NULL, 0, NULL, 0, 1000), 0);
        CHECK_EQ(fdpass_chan_send(a, "x", 1, NULL, 0, 1000), 0);
        fdpass_msg m;
        CHECK_EQ(fdpass_chan_recv(b, &m, 1000), 0);
        CHECK_EQ(m.len, 0);
        CHECK_EQ(m.nfds, 0);
        CHECK_EQ(fdpass_chan_recv(b, &m, 1000), 0);
        CHECK_EQ(m.len, 1);
        CHECK_EQ(((const char *)m.data)[0], 'x');
        CHECK_EQ(fdpass_chan_recv(b, &m, 0), -EAGAIN);
        fdpass_chan_free(a);
        fdpass_chan_free(b);
        close_fds(sv, 2);
    }
}

static void framed_chan_new_and_limits(void)
{
    int p[2];
    CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
    errno = 0;
    CHECK(fdpass_chan_new(p[0], NULL) == NULL);
    CHECK_EQ(errno, ENOTSOCK);
    close_fds(p, 2);
    int d = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    CHECK(d >= 0);
    errno = 0;
    CHECK(fdpass_chan_new(d, NULL) == NULL);
    CHECK_EQ(errno, EPROTOTYPE);
    close(d);
    errno = 0;
    CHECK(fdpass_chan_new(d, NULL) == NULL);
    CHECK_EQ(errno, EBADF);

    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_STREAM, sv), 0);
    fdpass_chan *c = fdpass_chan_new(sv[0], NULL);
    CHECK(c);
    fdpass_limits l;
    fdpass_chan_limits(c, &l, NULL);
    CHECK_EQ(l.max_payload, 16u << 20);
    CHECK_EQ(l.max_fds, 4096);
    CHECK(fdpass_chan_detail(c) == NULL);
    fdpass_limits set = { 0, 10 }; /* 0 keeps the old value */
    fdpass_chan_limits(c, NULL, &set);
    fdpass_chan_limits(c, &l, NULL);
    CHECK_EQ(l.max_payload, 16u << 20);
    CHECK_EQ(l.max_fds, 10);
    fdpass_limits set2 = { 100, 0 };
    fdpass_chan_limits(c, &l, &set2); /* get returns the old ones */
    CHECK_EQ(l.max_fds, 10);
    CHECK_EQ(l.max_payload, 16u << 20);
    fdpass_chan_limits(c, &l, NULL);
    CHECK_EQ(l.max_payload, 100);
    CHECK_EQ(l.max_fds, 10);
    fdpass_chan_free(c);
    fdpass_chan_free(NULL);
    close_fds(sv, 2);
}

/* The receiver's limits: exactly at them passes, one over is -EMSGSIZE with
 * every descriptor closed, and the channel is broken after. */
static void framed_limits_enforced(void)
{
    for (int t = 0; t < 2; t++) {
        for (int over = 0; over < 2; over++) {
            fdpass_limits lim = { 100, 3 };
            mspec ok = { 100, 3, 1 };
            CHECK_EQ(roundtrip(TYPES[t], &ok, 1, &lim), 0);
            mspec big[2] = { { 100 + (over ? 0 : 1), 3 + (over ? 1 : 0), 2 }, { 1, 0, 3 } };
            int sv[2];
            CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
            pid_t pid = child_sender(sv[0], sv[1], big, 2, 0);
            CHECK(pid > 0);
            fdpass_chan *c = fdpass_chan_new(sv[1], &lim);
            CHECK(c);
            int before = ctest_fdcount();
            fdpass_msg m;
            int r = fdpass_chan_recv(c, &m, 5000);
            int after = ctest_fdcount();
            int again = fdpass_chan_recv(c, &m, 0);
            close(sv[1]); /* the sender may be blocked on what we never read */
            wait_child(pid);
            fdpass_chan_free(c);
            close(sv[0]);
            CHECK_EQ(r, -EMSGSIZE);
            CHECK_EQ(after, before);
            CHECK_EQ(again, FDPASS_EBROKEN);
        }
    }
}

/* A receiver with SO_PASSCRED gets SCM_CREDENTIALS before SCM_RIGHTS. */
static void framed_credentials_first(void)
{
    static const mspec ms[] = { { 10, 3, 1 }, { 70000, 300, 2 }, { 0, 1, 3 } };
    for (int t = 0; t < 2; t++) {
        int sv[2], on = 1;
        CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
        CHECK_EQ(setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &on, sizeof on), 0);
        pid_t pid = child_sender(sv[0], sv[1], ms, NELEM(ms), 0);
        CHECK(pid > 0);
        fdpass_chan *c = fdpass_chan_new(sv[1], NULL);
        CHECK(c);
        int bad = 0;
        for (size_t k = 0; k < NELEM(ms) && !bad; k++) {
            fdpass_msg m;
            int r = fdpass_chan_recv(c, &m, 5000);
            if (r != 0) {
                printf("# %s: %s %s\n", TYPENAME(TYPES[t]), fdpass_errname(r),
                       fdpass_chan_detail(c) ? fdpass_chan_detail(c) : "");
                bad = __LINE__;
            } else
                bad = verify(&m, &ms[k]);
        }
        int code = wait_child(pid);
        fdpass_chan_free(c);
        close_fds(sv, 2);
        CHECK_EQ(bad, 0);
        CHECK_EQ(code, 0);
    }
}

/* No flag of the socket or of a passed descriptor changes, timeouts
 * included. */
static void framed_flags_unchanged(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2], p[2];
        CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
        CHECK_EQ(pipe2(p, O_CLOEXEC), 0);
        CHECK_EQ(set_nonblock(p[1], 1), 0);
        CHECK_EQ(set_nonblock(sv[1], 1), 0);
        int fl[4] = { getfl(p[0]), getfl(p[1]), getfl(sv[0]), getfl(sv[1]) };
        fdpass_chan *a = fdpass_chan_new(sv[0], NULL), *b = fdpass_chan_new(sv[1], NULL);
        CHECK(a && b);
        fdpass_msg m;
        CHECK_EQ(fdpass_chan_recv(b, &m, 0), -EAGAIN);
        CHECK_EQ(fdpass_chan_recv(b, &m, 10), -ETIMEDOUT);
        CHECK_EQ(fdpass_chan_recv(a, &m, 10), -ETIMEDOUT);
        CHECK_EQ(fdpass_chan_send(a, "pp", 2, p, 2, 0), 0);
        CHECK_EQ(fdpass_chan_send(b, "qq", 2, p, 2, -1), 0);
        CHECK_EQ(fdpass_chan_recv(b, &m, 1000), 0);
        CHECK_EQ(m.nfds, 2);
        int r0 = m.fds[0], r1 = m.fds[1];
        CHECK_EQ(fdpass_chan_recv(a, &m, -1), 0);
        CHECK_EQ(m.nfds, 2);
        int r2 = m.fds[0], r3 = m.fds[1];
        int ok = getfl(r0) == fl[0] && getfl(r1) == fl[1] && getfl(r2) == fl[0] && getfl(r3) == fl[1];
        int cloexec = (getfdflags(r0) & getfdflags(r1) & getfdflags(r2) & getfdflags(r3) & FD_CLOEXEC) != 0;
        /* the pipe written through the received write end */
        CHECK_EQ(write(r1, "w", 1), 1);
        char ch = 0;
        CHECK_EQ(read(p[0], &ch, 1), 1);
        CHECK_EQ(ch, 'w');
        close(r0); close(r1); close(r2); close(r3);
        CHECK(ok);
        CHECK(cloexec);
        CHECK_EQ(getfl(p[0]), fl[0]);
        CHECK_EQ(getfl(p[1]), fl[1]);
        CHECK_EQ(getfl(sv[0]), fl[2]);
        CHECK_EQ(getfl(sv[1]), fl[3]);
        fdpass_chan_free(a);
        fdpass_chan_free(b);
        close_fds(p, 2);
        close_fds(sv, 2);
    }
}

static void framed_wouldblock_and_timeout(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
        fdpass_chan *c = fdpass_chan_new(sv[1], NULL);
        CHECK(c);
        fdpass_msg m;
        long long t0 = now_ms();
        CHECK_EQ(fdpass_chan_recv(c, &m, 0), -EAGAIN);
        CHECK(now_ms() - t0 < 20);
        t0 = now_ms();
        CHECK_EQ(fdpass_chan_recv(c, &m, 50), -ETIMEDOUT);
        long long took = now_ms() - t0;
        CHECK(took >= 50);
        CHECK(took < 1000);
        /* still usable: a timeout is not an error of the channel */
        CHECK_EQ(fdpass_sendmsg(sv[0], "FDPS\1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20, NULL, 0, 0), 20);
        CHECK_EQ(fdpass_chan_recv(c, &m, 1000), 0);
        CHECK_EQ(m.len, 0);
        fdpass_chan_free(c);
        close_fds(sv, 2);
    }
}

/* The socket's own mode with timeout < 0: a non-blocking socket answers
 * -EAGAIN (receive, and send with the message queued). In a child: a wrong
 * implementation waits forever. */
static void framed_nonblocking_socket_own_mode(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
        fflush(stdout);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            set_nonblock(sv[0], 1);
            set_nonblock(sv[1], 1);
            fdpass_chan *a = fdpass_chan_new(sv[0], NULL), *b = fdpass_chan_new(sv[1], NULL);
            fdpass_msg m;
            if (fdpass_chan_recv(b, &m, -1) != -EAGAIN)
                _exit(1);
            static unsigned char big[65536];
            int r = 0;
            for (int i = 0; i < 1000 && r == 0; i++)
                r = fdpass_chan_send(a, big, sizeof big, NULL, 0, -1);
            if (r != -EAGAIN || fdpass_chan_pending(a) != 1)
                _exit(2);
            fdpass_chan_free(a);
            fdpass_chan_free(b);
            _exit(0);
        }
        int code = wait_child_ms(pid, 5000);
        close_fds(sv, 2);
        CHECK_EQ(code, 0);
    }
}

/* Fills the socket with framed 64 KiB messages, each with a tagged fd
 * (tag = sequence number), until one answers -EAGAIN. Returns how many
 * fdpass_chan_send calls were made (the last one queued). */
static int fill_framed(fdpass_chan *c, int first_seq, int *last_r)
{
    static unsigned char data[65536];
    int r = 0, n = 0;
    for (int seq = first_seq; seq < first_seq + 2000; seq++) {
        fill_pattern(data, sizeof data, (unsigned)seq);
        int fd = tagged_fd((int)(seq * 100000));
        r = fdpass_chan_send(c, data, sizeof data, &fd, 1, 0);
        close(fd);
        n++;
        if (r != 0)
            break;
    }
    *last_r = r;
    return n;
}

/* The receiving child: `count` messages in sequence, 64 KiB of pattern
 * `seq` (or 3 bytes "end" for the last) and fds tagged seq * 100000 + i. */
static pid_t child_drainer(int sock, int count, int delay_ms)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    sleep_ms(delay_ms);
    fdpass_chan *c = fdpass_chan_new(sock, NULL);
    for (int seq = 0; seq < count; seq++) {
        fdpass_msg m;
        int r = fdpass_chan_recv(c, &m, 10000);
        if (r != 0)
            _exit(10);
        int last = seq == count - 1;
        mspec s = { last ? 3 : 65536, last ? 3 : 1, (unsigned)seq };
        if (last && (m.len != 3 || memcmp(m.data, "end", 3) != 0 || m.nfds != 3))
            _exit(11);
        if (last) {
            for (size_t i = 0; i < m.nfds; i++)
                if (tag_of(m.fds[i]) != seq * 100000 + (int)i)
                    _exit(12);
            close_fds(m.fds, m.nfds);
        } else if (verify(&m, &s))
            _exit(13);
    }
    fdpass_msg m;
    if (fdpass_chan_recv(c, &m, 0) != -EAGAIN) /* exactly that many: no duplicate */
        _exit(14);
    fdpass_chan_free(c);
    _exit(0);
}

/* Sends child_drainer's last message, number seq: "end" with 3 fds tagged
 * seq * 100000 + i (our copies closed). Returns what fdpass_chan_send did. */
static int send_end(fdpass_chan *c, int seq, int timeout_ms)
{
    int fds[3];
    for (int i = 0; i < 3; i++)
        fds[i] = tagged_fd(seq * 100000 + i);
    int r = fdpass_chan_send(c, "end", 3, fds, 3, timeout_ms);
    close_fds(fds, 3);
    return r;
}

/* A full stream: fdpass_chan_send answers -EAGAIN with the message queued (and
 * its descriptors duplicated), a later send queues behind it, flush
 * finishes both once a child drains, and the child gets each message once. */
static void framed_queue_and_flush(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
        int base = ctest_fdcount();
        fdpass_chan *c = fdpass_chan_new(sv[0], NULL);
        CHECK(c);
        int r;
        int n = fill_framed(c, 0, &r);
        CHECK_EQ(r, -EAGAIN);
        CHECK(n > 1);
        CHECK_EQ(fdpass_chan_pending(c), 1);
        /* the queued one holds a duplicate of its fd unless a first part
         * of its record (which carried it) went: always on seqpacket */
        int held = ctest_fdcount() - base;
        CHECK(held == 0 || held == 1);
        if (TYPES[t] == SOCK_SEQPACKET)
            CHECK_EQ(held, 1);
        /* a second message behind it: not sent, its 3 fds duplicated */
        CHECK_EQ(send_end(c, n, 0), -EAGAIN);
        CHECK_EQ(fdpass_chan_pending(c), 2);
        CHECK_EQ(ctest_fdcount(), base + held + 3);
        long long t0 = now_ms();
        CHECK_EQ(fdpass_chan_flush(c, 50), -ETIMEDOUT);
        CHECK(now_ms() - t0 >= 50);
        CHECK_EQ(fdpass_chan_pending(c), 2);
        CHECK_EQ(fdpass_chan_flush(c, 0), -EAGAIN);
        pid_t pid = child_drainer(sv[1], n + 1, 100);
        CHECK(pid > 0);
        CHECK_EQ(fdpass_chan_flush(c, 10000), 0);
        CHECK_EQ(fdpass_chan_pending(c), 0);
        CHECK_EQ(ctest_fdcount(), base); /* the duplicates went and were closed */
        CHECK_EQ(fdpass_chan_flush(c, 0), 0);
        int code = wait_child(pid);
        fdpass_chan_free(c);
        close_fds(sv, 2);
        CHECK_EQ(code, 0);
    }
}

/* A send behind a queued message flushes it first, in order. */
static void framed_send_flushes_queue_first(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
        fdpass_chan *c = fdpass_chan_new(sv[0], NULL);
        CHECK(c);
        int r;
        int n = fill_framed(c, 0, &r);
        CHECK_EQ(r, -EAGAIN);
        pid_t pid = child_drainer(sv[1], n + 1, 100);
        CHECK(pid > 0);
        CHECK_EQ(send_end(c, n, 10000), 0);
        CHECK_EQ(fdpass_chan_pending(c), 0);
        int code = wait_child(pid);
        fdpass_chan_free(c);
        close_fds(sv, 2);
        CHECK_EQ(code, 0);
    }
}

/* Descriptors held for a queued message are closed by fdpass_chan_free. */
static void framed_free_closes_queued_fds(void)
{
    CHECK_EQ(raise_nofile(1000), 0);
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
        int base = ctest_fdcount();
        fdpass_chan *c = fdpass_chan_new(sv[0], NULL);
        CHECK(c);
        int r;
        fill_framed(c, 0, &r);
        CHECK_EQ(r, -EAGAIN);
        int held = ctest_fdcount() - base;
        int fds[300];
        for (int i = 0; i < 300; i++)
            fds[i] = tagged_fd(i);
        long long t0 = now_ms();
        CHECK_EQ(fdpass_chan_send(c, "q", 1, fds, 300, 30), -ETIMEDOUT);
        CHECK(now_ms() - t0 >= 30);
        close_fds(fds, 300);
        CHECK_EQ(fdpass_chan_pending(c), 2);
        CHECK_EQ(ctest_fdcount(), base + held + 300);
        fdpass_chan_free(c);
        CHECK_EQ(ctest_fdcount(), base);
        close_fds(sv, 2);
    }
}

/* ---- broken and hostile peers ------------------------------------------ */

enum { F_MORE = 1, F_CONT = 2 };

static void put32le(unsigned char *p, uint32_t v)
{
    p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
}

/* The 20-byte header: "FDPS", version, flags, nfds (16 bits), len,
 * total_len, total_fds, little-endian. */
static void header(unsigned char *p, const char *magic, unsigned version, unsigned flags,
                   unsigned nfds, uint32_t len, uint32_t total_len, uint32_t total_fds)
{
    memcpy(p, magic, 4);
    p[4] = version;
    p[5] = flags;
    p[6] = nfds;
    p[7] = nfds >> 8;
    put32le(p + 8, len);
    put32le(p + 12, total_len);
    put32le(p + 16, total_fds);
}

/* A record as a hostile peer sends it: header + payload, nfds tagged fds
 * attached, in one raw sendmsg. */
static int send_record(int sock, const unsigned char *hdr, size_t payload, size_t nfds)
{
    unsigned char buf[FDPASS_HEADER_SIZE + 70000];
    memcpy(buf, hdr, FDPASS_HEADER_SIZE);
    memset(buf + FDPASS_HEADER_SIZE, 'p', payload);
    int fds[8] = { -1, -1, -1, -1, -1, -1, -1, -1 };
    for (size_t i = 0; i < nfds; i++)
        fds[i] = tagged_fd((int)i);
    ssize_t r = fdpass_sendmsg(sock, buf, FDPASS_HEADER_SIZE + payload, fds, nfds, 1000);
    close_fds(fds, nfds);
    return r == (ssize_t)(FDPASS_HEADER_SIZE + payload) ? 0 : (int)r;
}

typedef struct hostile {
    const char *what;
    const char *magic;
    unsigned version, flags, nfds;
    uint32_t len, total_len, total_fds;
    size_t payload, attach; /* bytes and descriptors actually sent */
    int expect;
    int types; /* 1 seqpacket, 2 stream, 3 both */
} hostile;

static const hostile HOSTILE[] = {
    { "bad magic", "FDPX", 1, 0, 1, 4, 4, 1, 4, 1, -EPROTO, 3 },
    { "lowercase magic", "fdps", 1, 0, 0, 0, 0, 0, 0, 0, -EPROTO, 3 },
    { "version 2", "FDPS", 2, 0, 1, 4, 4, 1, 4, 1, -EPROTO, 3 },
    { "version 0", "FDPS", 0, 0, 0, 1, 1, 0, 1, 0, -EPROTO, 3 },
    { "2 fds announced, 1 sent", "FDPS", 1, 0, 2, 1, 1, 2, 1, 1, FDPASS_EFDCOUNT, 3 },
    { "2 fds announced, 3 sent", "FDPS", 1, 0, 2, 1, 1, 2, 1, 3, FDPASS_EFDCOUNT, 3 },
    { "1 fd announced, none sent", "FDPS", 1, 0, 1, 0, 0, 1, 0, 0, FDPASS_EFDCOUNT, 3 },
    { "none announced, 2 sent", "FDPS", 1, 0, 0, 2, 2, 0, 2, 2, FDPASS_EFDCOUNT, 3 },
    { "last record short of total fds", "FDPS", 1, 0, 2, 1, 1, 3, 1, 2, FDPASS_EFDCOUNT, 3 },
    { "total bytes over the limit", "FDPS", 1, 0, 1, 10, 101, 1, 10, 1, -EMSGSIZE, 3 },
    { "total fds over the limit", "FDPS", 1, 0, 4, 1, 1, 4, 1, 4, -EMSGSIZE, 3 },
    { "huge totals", "FDPS", 1, F_MORE, 1, 1, 0xffffffffu, 0xffffffffu, 1, 1, -EMSGSIZE, 3 },
    { "unknown flag", "FDPS", 1, 0x80, 1, 1, 1, 1, 1, 1, -EPROTO, 3 },
    { "continuation first", "FDPS", 1, F_CONT, 1, 1, 1, 1, 1, 1, -EPROTO, 3 },
    { "record over 64 KiB", "FDPS", 1, 0, 1, 70000, 70000, 1, 10, 1, -EPROTO, 3 },
    { "record over 253 fds", "FDPS", 1, 0, 254, 1, 1, 254, 1, 2, -EPROTO, 3 },
    { "more bytes than the total", "FDPS", 1, F_MORE, 1, 20, 10, 1, 20, 1, -EPROTO, 3 },
    { "seqpacket: shorter than a header", NULL, 0, 0, 0, 0, 0, 0, 0, 1, -EPROTO, 1 },
    { "seqpacket: more payload than announced", "FDPS", 1, 0, 1, 4, 4, 1, 9, 1, -EPROTO, 1 },
    { "seqpacket: less payload than announced", "FDPS", 1, 0, 1, 9, 9, 1, 4, 1, -EPROTO, 1 },
    { "seqpacket: record over the receive buffer", "FDPS", 1, 0, 1, 65536, 65536, 1, 65540, 1, -EMSGSIZE, 1 },
};

static void framed_hostile_peer(void)
{
    for (size_t h = 0; h < NELEM(HOSTILE); h++) {
        const hostile *x = &HOSTILE[h];
        for (int t = 0; t < 2; t++) {
            if (!(x->types & (1 << t)))
                continue;
            int sv[2];
            CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
            fdpass_limits lim = { 100, 3 };
            fdpass_chan *c = fdpass_chan_new(sv[1], &lim);
            CHECK(c);
            unsigned char hb[FDPASS_HEADER_SIZE];
            if (x->magic) {
                header(hb, x->magic, x->version, x->flags, x->nfds, x->len, x->total_len, x->total_fds);
                CHECK_EQ(send_record(sv[0], hb, x->payload, x->attach), 0);
            } else { /* five bytes and a descriptor */
                int fd = tagged_fd(0);
                CHECK_EQ(fdpass_sendmsg(sv[0], "FDPS\1", 5, &fd, 1, 1000), 5);
                close(fd);
            }
            int before = ctest_fdcount();
            fdpass_msg m;
            int r = fdpass_chan_recv(c, &m, 1000);
            int after = ctest_fdcount();
            const char *detail = fdpass_chan_detail(c);
            if (r != x->expect)
                printf("# %s, %s: %s (%s), expected %s\n", x->what, TYPENAME(TYPES[t]),
                       fdpass_errname(r), detail ? detail : "", fdpass_errname(x->expect));
            CHECK_EQ(r, x->expect);
            CHECK(detail != NULL);
            CHECK_EQ(after, before);
            /* a well-formed message now is refused: the channel is broken */
            header(hb, "FDPS", 1, 0, 0, 0, 0, 0);
            send_record(sv[0], hb, 0, 0);
            CHECK_EQ(fdpass_chan_recv(c, &m, 0), FDPASS_EBROKEN);
            CHECK(fdpass_chan_detail(c) != NULL);
            CHECK_EQ(fdpass_chan_recv(c, &m, 0), FDPASS_EBROKEN);
            CHECK_EQ(ctest_fdcount(), before);
            fdpass_chan_free(c);
            close_fds(sv, 2);
        }
    }
}

/* A stream peer dies inside a header, inside a payload (after its record's
 * descriptors arrived), or between records: FDPASS_ETRUNC, nothing leaked,
 * FDPASS_EBROKEN after. */
static void framed_peer_dies_mid_message(void)
{
    for (int where = 0; where < 4; where++) {
        for (int t = 0; t < 2; t++) {
            int type = TYPES[t];
            if (type == SOCK_SEQPACKET && where < 2)
                continue; /* a seqpacket record is whole or absent */
            int sv[2];
            CHECK_EQ(fdpass_socketpair(type, sv), 0);
            fdpass_chan *c = fdpass_chan_new(sv[1], NULL);
            CHECK(c);
            unsigned char hb[FDPASS_HEADER_SIZE];
            int fds[2] = { tagged_fd(0), tagged_fd(1) };
            if (where == 0) {        /* half a header */
                header(hb, "FDPS", 1, 0, 2, 100, 100, 2);
                CHECK_EQ(fdpass_sendmsg(sv[0], hb, 10, fds, 2, 1000), 10);
            } else if (where == 1) { /* half a payload */
                unsigned char rec[FDPASS_HEADER_SIZE + 50];
                header(rec, "FDPS", 1, 0, 2, 100, 100, 2);
                memset(rec + FDPASS_HEADER_SIZE, 'x', 50);
                CHECK_EQ(fdpass_sendmsg(sv[0], rec, sizeof rec, fds, 2, 1000), (ssize_t)sizeof rec);
            } else if (where == 2) { /* a first record announcing more */
                header(hb, "FDPS", 1, F_MORE, 2, 0, 100, 4);
                CHECK_EQ(send_record(sv[0], hb, 0, 2), 0);
            } else {                 /* a full first record of 64 KiB, then none */
                static unsigned char rec[FDPASS_HEADER_SIZE + 65536];
                header(rec, "FDPS", 1, F_MORE, 2, 65536, 65537, 2);
                CHECK_EQ(fdpass_sendmsg(sv[0], rec, sizeof rec, fds, 2, 1000), (ssize_t)sizeof rec);
            }
            close_fds(fds, 2);
            close(sv[0]);
            int before = ctest_fdcount();
            fdpass_msg m;
            int r = fdpass_chan_recv(c, &m, 1000);
            int after = ctest_fdcount();
            if (r != FDPASS_ETRUNC)
                printf("# case %d %s: %s %s\n", where, TYPENAME(type), fdpass_errname(r),
                       fdpass_chan_detail(c) ? fdpass_chan_detail(c) : "");
            CHECK_EQ(r, FDPASS_ETRUNC);
            CHECK_EQ(after, before);
            CHECK_EQ(fdpass_chan_recv(c, &m, 0), FDPASS_EBROKEN);
            fdpass_chan_free(c);
            close(sv[1]);
        }
    }
}

/* A close at a message boundary is FDPASS_EOF, and stays so. */
static void framed_clean_close_is_eof(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
        fdpass_chan *a = fdpass_chan_new(sv[0], NULL), *b = fdpass_chan_new(sv[1], NULL);
        CHECK(a && b);
        int fd = tagged_fd(5);
        CHECK_EQ(fdpass_chan_send(a, "bye", 3, &fd, 1, 1000), 0);
        close(fd);
        fdpass_chan_free(a);
        close(sv[0]);
        fdpass_msg m;
        CHECK_EQ(fdpass_chan_recv(b, &m, 1000), 0);
        CHECK_EQ(m.len, 3);
        CHECK_EQ(m.nfds, 1);
        int tag = tag_of(m.fds[0]);
        close(m.fds[0]);
        CHECK_EQ(tag, 5);
        CHECK_EQ(fdpass_chan_recv(b, &m, 1000), FDPASS_EOF);
        CHECK_EQ(fdpass_chan_recv(b, &m, -1), FDPASS_EOF);
        fdpass_chan_free(b);
        close(sv[1]);
    }
}

/* A header in pieces with timeouts in between: the partial state is kept,
 * and the message comes out whole. */
static void framed_partial_kept_across_timeouts(void)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_STREAM, sv), 0);
    fdpass_chan *c = fdpass_chan_new(sv[1], NULL);
    CHECK(c);
    unsigned char rec[FDPASS_HEADER_SIZE + 6];
    header(rec, "FDPS", 1, 0, 2, 6, 6, 2);
    memcpy(rec + FDPASS_HEADER_SIZE, "abcdef", 6);
    int fds[2] = { tagged_fd(70), tagged_fd(71) };
    fdpass_msg m;
    CHECK_EQ(fdpass_sendmsg(sv[0], rec, 7, fds, 2, 1000), 7);
    close_fds(fds, 2);
    CHECK_EQ(fdpass_chan_recv(c, &m, 0), -EAGAIN);
    CHECK_EQ(write(sv[0], rec + 7, 13), 13);
    CHECK_EQ(fdpass_chan_recv(c, &m, 10), -ETIMEDOUT);
    CHECK_EQ(write(sv[0], rec + 20, 3), 3);
    CHECK_EQ(fdpass_chan_recv(c, &m, 0), -EAGAIN);
    CHECK_EQ(write(sv[0], rec + 23, 3), 3);
    CHECK_EQ(fdpass_chan_recv(c, &m, 0), 0);
    CHECK_EQ(m.len, 6);
    CHECK(memcmp(m.data, "abcdef", 6) == 0);
    CHECK_EQ(m.nfds, 2);
    int t0 = tag_of(m.fds[0]), t1 = tag_of(m.fds[1]);
    close_fds(m.fds, 2);
    CHECK_EQ(t0, 70);
    CHECK_EQ(t1, 71);
    fdpass_chan_free(c);
    close_fds(sv, 2);
}

/* A partial message with descriptors is closed by fdpass_chan_free. */
static void framed_free_closes_partial_rx(void)
{
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
        int base = ctest_fdcount();
        fdpass_chan *c = fdpass_chan_new(sv[1], NULL);
        CHECK(c);
        unsigned char hb[FDPASS_HEADER_SIZE];
        header(hb, "FDPS", 1, F_MORE, 3, 1, 2, 6);
        CHECK_EQ(send_record(sv[0], hb, 1, 3), 0);
        fdpass_msg m;
        CHECK_EQ(fdpass_chan_recv(c, &m, 20), -ETIMEDOUT);
        CHECK_EQ(ctest_fdcount(), base + 3);
        fdpass_chan_free(c);
        CHECK_EQ(ctest_fdcount(), base);
        close_fds(sv, 2);
    }
}

/* A signal without SA_RESTART while fdpass_chan_recv waits (forever, or with a
 * timeout; a stream message arriving in two halves): the message comes. */
static void eintr_case(int type, int timeout_ms)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(type, sv), 0);
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        sleep_ms(250);
        unsigned char rec[FDPASS_HEADER_SIZE + 4];
        header(rec, "FDPS", 1, 0, 1, 4, 4, 1);
        memcpy(rec + FDPASS_HEADER_SIZE, "late", 4);
        int fd = tagged_fd(88);
        if (type == SOCK_STREAM) {
            if (fdpass_sendmsg(sv[0], rec, 9, &fd, 1, 1000) != 9)
                _exit(1);
            sleep_ms(150);
            if (write(sv[0], rec + 9, sizeof rec - 9) != (ssize_t)sizeof rec - 9)
                _exit(2);
        } else if (fdpass_sendmsg(sv[0], rec, sizeof rec, &fd, 1, 1000) != (ssize_t)sizeof rec)
            _exit(3);
        _exit(0);
    }
    fdpass_chan *c = fdpass_chan_new(sv[1], NULL);
    CHECK(c);
    struct sigaction old;
    alarm_every(30, 30, &old);
    long long t0 = now_ms();
    fdpass_msg m;
    int r = fdpass_chan_recv(c, &m, timeout_ms);
    long long took = now_ms() - t0;
    alarm_off(&old);
    int seen = alarms;
    int code = wait_child(pid);
    int tag = r == 0 && m.nfds == 1 ? tag_of(m.fds[0]) : -1;
    if (r == 0)
        close_fds(m.fds, m.nfds);
    fdpass_chan_free(c);
    close_fds(sv, 2);
    CHECK_EQ(r, 0);
    CHECK_EQ(m.len, 4);
    CHECK_EQ(tag, 88);
    CHECK(seen >= 3);
    CHECK(took >= 200 && took < 3000);
    CHECK_EQ(code, 0);
}

static void framed_eintr_blocking(void)
{
    eintr_case(SOCK_SEQPACKET, -1);
    eintr_case(SOCK_STREAM, -1);
}

static void framed_eintr_with_timeout(void)
{
    eintr_case(SOCK_SEQPACKET, 5000);
    eintr_case(SOCK_STREAM, 5000);
}

static long long recv_nothing(void *c, int timeout_ms)
{
    fdpass_msg m;
    return fdpass_chan_recv(c, &m, timeout_ms);
}

/* Signals every 20 ms do not stretch a 300 ms receive timeout. */
static void framed_eintr_deadline_kept(void)
{
    int sv[2];
    CHECK_EQ(fdpass_socketpair(SOCK_STREAM, sv), 0);
    fdpass_chan *c = fdpass_chan_new(sv[1], NULL);
    CHECK(c);
    check_deadline_under_signals(recv_nothing, c);
    fdpass_chan_free(c);
    close_fds(sv, 2);
}

/* A blocking send of 1 MiB + 600 fds, interrupted by signals while the
 * receiver is slow to start: it completes, and the message is whole. */
static void framed_eintr_during_send(void)
{
    CHECK_EQ(raise_nofile(2000), 0);
    for (int t = 0; t < 2; t++) {
        int sv[2];
        CHECK_EQ(fdpass_socketpair(TYPES[t], sv), 0);
        fflush(stdout);
        pid_t pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            sleep_ms(300);
            fdpass_chan *c = fdpass_chan_new(sv[1], NULL);
            fdpass_msg m;
            mspec s = { 1u << 20, 600, 9 };
            int code = fdpass_chan_recv(c, &m, 10000) != 0 ? 1 : verify(&m, &s) ? 2 : 0;
            fdpass_chan_free(c); /* valgrind checks for leaks at _exit */
            _exit(code);
        }
        fdpass_chan *c = fdpass_chan_new(sv[0], NULL);
        CHECK(c);
        unsigned char *data = malloc(1u << 20);
        CHECK(data);
        fill_pattern(data, 1u << 20, 9);
        int fds[600];
        for (int i = 0; i < 600; i++)
            fds[i] = tagged_fd(9 * 100000 + i);
        struct sigaction old;
        alarm_every(10, 10, &old);
        int r = fdpass_chan_send(c, data, 1u << 20, fds, 600, -1);
        alarm_off(&old);
        int seen = alarms;
        close_fds(fds, 600);
        free(data);
        int code = wait_child(pid);
        fdpass_chan_free(c);
        close_fds(sv, 2);
        CHECK_EQ(r, 0);
        CHECK(seen >= 5);
        CHECK_EQ(code, 0);
    }
}

/* A gone peer: -EPIPE, no SIGPIPE (default disposition, in a child), and
 * the channel answers FDPASS_EBROKEN to later sends and flushes. */
static void framed_epipe_no_sigpipe(void)
{
    pid_t pid = fork_with_sigpipe();
    CHECK(pid >= 0);
    if (pid == 0) {
        for (int t = 0; t < 2; t++) {
            int sv[2];
            if (fdpass_socketpair(TYPES[t], sv) < 0)
                _exit(2);
            close(sv[1]);
            fdpass_chan *c = fdpass_chan_new(sv[0], NULL);
            int fd = tagged_fd(0);
            if (fdpass_chan_send(c, "p", 1, &fd, 1, 1000) != -EPIPE)
                _exit(3);
            if (fdpass_chan_send(c, "p", 1, &fd, 1, 1000) != FDPASS_EBROKEN)
                _exit(4);
            if (fdpass_chan_flush(c, 0) != FDPASS_EBROKEN || !fdpass_chan_detail(c))
                _exit(5);
            if (fdpass_chan_pending(c) != 0)
                _exit(6);
            close(fd);
            fdpass_chan_free(c);
            close(sv[0]);
        }
        _exit(0);
    }
    CHECK_EQ(wait_child(pid), 0);
}

/* The peer goes away while a message is queued: the flush says -EPIPE (or
 * -ECONNRESET: the peer left data unread), no SIGPIPE, and the queued
 * descriptors are released. */
static void framed_epipe_while_queued(void)
{
    pid_t pid = fork_with_sigpipe();
    CHECK(pid >= 0);
    if (pid == 0) {
        for (int t = 0; t < 2; t++) {
            int sv[2];
            if (fdpass_socketpair(TYPES[t], sv) < 0)
                _exit(2);
            int base = ctest_fdcount();
            fdpass_chan *c = fdpass_chan_new(sv[0], NULL);
            int r;
            fill_framed(c, 0, &r);
            if (r != -EAGAIN)
                _exit(3);
            int fds[3] = { tagged_fd(0), tagged_fd(1), tagged_fd(2) };
            if (fdpass_chan_send(c, "q", 1, fds, 3, 0) != -EAGAIN)
                _exit(4);
            close_fds(fds, 3);
            close(sv[1]);
            /* a peer closed with unread data: the kernel says ECONNRESET */
            int f = fdpass_chan_flush(c, 1000);
            if (f != -EPIPE && f != -ECONNRESET)
                _exit(5);
            if (fdpass_chan_flush(c, 0) != FDPASS_EBROKEN)
                _exit(8);
            if (fdpass_chan_pending(c) != 0)
                _exit(6);
            if (ctest_fdcount() != base - 1)
                _exit(7);
            fdpass_chan_free(c);
            close(sv[0]);
        }
        _exit(0);
    }
    CHECK_EQ(wait_child(pid), 0);
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    RUN(framed_chan_new_and_limits);
    RUN(framed_empty_message);
    RUN(framed_fd_counts);
    RUN(framed_payload_sizes);
    RUN(framed_order_of_messages);
    RUN(framed_limits_enforced);
    RUN(framed_credentials_first);
    RUN(framed_flags_unchanged);
    RUN(framed_wouldblock_and_timeout);
    RUN(framed_nonblocking_socket_own_mode);
    RUN(framed_queue_and_flush);
    RUN(framed_send_flushes_queue_first);
    RUN(framed_free_closes_queued_fds);
    RUN(framed_hostile_peer);
    RUN(framed_peer_dies_mid_message);
    RUN(framed_clean_close_is_eof);
    RUN(framed_partial_kept_across_timeouts);
    RUN(framed_free_closes_partial_rx);
    RUN(framed_eintr_blocking);
    RUN(framed_eintr_with_timeout);
    RUN(framed_eintr_deadline_kept);
    RUN(framed_eintr_during_send);
    RUN(framed_epipe_no_sigpipe);
    RUN(framed_epipe_while_queued);
    CTEST_END();
}
