/* The C side of `make bench`: the floor (plain sendmsg/recvmsg with
 * SCM_RIGHTS, nothing else) and libfdpass's C API, on the same work.
 *
 * usage: cbench CONTENDER WORKLOAD SECONDS|=COUNT
 *   CONTENDER  floor | raw (fdpass_sendmsg/recvmsg) | framed (fdpass_chan_send/recv)
 *   WORKLOAD   1 | 253 | 5000 | 64k
 * prints "messages descriptors seconds" (CPU seconds) on one line.
 * "=COUNT" runs exactly COUNT iterations and no warm-up: what callgrind
 * counts (bench/run.lua subtracts a run of COUNT from one of 2*COUNT, so
 * that startup cancels).
 *
 * Every contender runs the same loop in one process over a SOCK_SEQPACKET
 * socketpair: send one message, receive it, close every descriptor that
 * arrived. The descriptors sent are copies of one /dev/null descriptor.
 * "5000" is one message of 5000 descriptors: framed, that is one
 * fdpass_chan_send; raw and floor, 20 sendmsg of at most 253 (all sent, then all
 * received). "64k" is one message of 65536 bytes and no descriptor. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "fdpass.h"

#define MAXF 253
#define PAYLOAD 65536

static unsigned char sbuf[PAYLOAD], rbuf[PAYLOAD];
static int sfds[5000];

/* CPU time of this process (user + system): the loop never blocks, so on an
 * idle machine it is the wall time, and on a busy one other processes'
 * time stays out of the figure. */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what, long r)
{
    fprintf(stderr, "cbench: %s: %s\n", what, r < 0 ? fdpass_strerror((int)r) : "short");
    exit(1);
}

/* ---- the floor: what any C program has to do, and nothing more ---------- */

static void floor_send(int s, const void *data, size_t len, const int *fds, size_t n)
{
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * MAXF)]; } cb;
    struct iovec iov = { (void *)data, len };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (n) {
        m.msg_control = cb.buf;
        m.msg_controllen = CMSG_SPACE(n * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(n * sizeof(int));
        memcpy(CMSG_DATA(c), fds, n * sizeof(int));
    }
    if (sendmsg(s, &m, MSG_NOSIGNAL) != (ssize_t)len)
        die("sendmsg", -errno);
}

/* Receives one message and closes what came; returns the descriptor count. */
static size_t floor_recv_close(int s)
{
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * MAXF)]; } cb;
    struct iovec iov = { rbuf, sizeof rbuf };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = cb.buf, .msg_controllen = sizeof cb.buf };
    if (recvmsg(s, &m, MSG_CMSG_CLOEXEC) <= 0)
        die("recvmsg", -errno);
    size_t got = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[MAXF];
        memcpy(fds, CMSG_DATA(c), n * sizeof(int));
        for (size_t i = 0; i < n; i++)
            close(fds[i]);
        got += n;
    }
    return got;
}

/* ---- one iteration of each contender; returns descriptors received ------- */

static size_t iter_floor(int a, int b, size_t nfds, size_t len)
{
    size_t got = 0;
    if (nfds <= MAXF) {
        floor_send(a, sbuf, len, sfds, nfds);
        return floor_recv_close(b);
    }
    for (size_t off = 0; off < nfds; off += MAXF) /* 20 sendmsg for 5000 */
        floor_send(a, sbuf, 1, sfds + off, nfds - off < MAXF ? nfds - off : MAXF);
    for (size_t off = 0; off < nfds; off += MAXF)
        got += floor_recv_close(b);
    return got;
}

static void raw_send_one(int s, const void *data, size_t len, const int *fds, size_t n)
{
    ssize_t r = fdpass_sendmsg(s, data, len, fds, n, -1);
    if (r < 0)
        die("fdpass_sendmsg", r);
}

static size_t raw_recv_close(int s)
{
    int fds[MAXF];
    size_t n;
    ssize_t r = fdpass_recvmsg(s, rbuf, sizeof rbuf, fds, MAXF, &n, -1);
    if (r < 0)
        die("fdpass_recvmsg", r);
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    return n;
}

/* The same loop as iter_floor, through the raw C API. */
static size_t iter_raw(int a, int b, size_t nfds, size_t len)
{
    size_t got = 0;
    if (nfds <= MAXF) {
        raw_send_one(a, sbuf, len, sfds, nfds);
        return raw_recv_close(b);
    }
    for (size_t off = 0; off < nfds; off += MAXF)
        raw_send_one(a, sbuf, 1, sfds + off, nfds - off < MAXF ? nfds - off : MAXF);
    for (size_t off = 0; off < nfds; off += MAXF)
        got += raw_recv_close(b);
    return got;
}

static fdpass_chan *ca, *cb;

static size_t iter_framed(int a, int b, size_t nfds, size_t len)
{
    (void)a; (void)b;
    fdpass_msg m;
    int r = fdpass_chan_send(ca, sbuf, len, sfds, nfds, -1);
    if (r < 0)
        die("fdpass_chan_send", r);
    r = fdpass_chan_recv(cb, &m, -1);
    if (r < 0)
        die("fdpass_chan_recv", r);
    for (size_t i = 0; i < m.nfds; i++)
        close(m.fds[i]);
    return m.nfds;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: cbench floor|raw|framed 1|253|5000|64k SECONDS|=COUNT\n");
        return 2;
    }
    size_t (*iter)(int, int, size_t, size_t) =
        !strcmp(argv[1], "floor") ? iter_floor : !strcmp(argv[1], "raw") ? iter_raw :
        !strcmp(argv[1], "framed") ? iter_framed : NULL;
    size_t nfds = !strcmp(argv[2], "64k") ? 0 : strtoul(argv[2], NULL, 10);
    size_t len = nfds ? 1 : PAYLOAD;
    long count = argv[3][0] == '=' ? atol(argv[3] + 1) : 0;
    double secs = count ? 1 : atof(argv[3]);
    if (!iter || (nfds == 0 && strcmp(argv[2], "64k")) || nfds > 5000 || secs <= 0) {
        fprintf(stderr, "cbench: bad arguments\n");
        return 2;
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    memset(sbuf, 'x', sizeof sbuf);
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    for (size_t i = 0; i < nfds; i++)
        sfds[i] = null;
    int sv[2];
    if (fdpass_socketpair(SOCK_SEQPACKET, sv) < 0)
        die("socketpair", -errno);
    ca = fdpass_chan_new(sv[0], NULL);
    cb = fdpass_chan_new(sv[1], NULL);
    fdpass_limits lim = { 1u << 20, 5000 };
    fdpass_chan_limits(cb, NULL, &lim);

    if (count) {
        size_t fds = 0;
        double start = now();
        for (long i = 0; i < count; i++)
            fds += iter(sv[0], sv[1], nfds, len);
        printf("%ld %zu %.6f\n", count, fds, now() - start);
        return 0;
    }
    /* Batches of about a millisecond between clock reads. */
    size_t batch = nfds == 5000 ? 1 : nfds >= MAXF ? 8 : nfds ? 128 : 64;
    double t0 = now(), warm = t0 + 0.05;
    while (now() < warm)
        for (size_t i = 0; i < batch; i++)
            iter(sv[0], sv[1], nfds, len);
    size_t msgs = 0, fds = 0;
    double start = now(), t;
    do {
        for (size_t i = 0; i < batch; i++)
            fds += iter(sv[0], sv[1], nfds, len);
        msgs += batch;
    } while ((t = now()) - start < secs);
    if (fds != msgs * nfds)
        die("descriptor count", 1);
    printf("%zu %zu %.6f\n", msgs, fds, t - start);
    return 0;
}
