/* The C side of the handover bench (bench/handover.lua).
 *
 * usage: hbench floor N REPS
 *   The kernel's floor for handing N descriptors to another process: a
 *   child receives them over a SOCK_SEQPACKET socketpair (at most 253 per
 *   sendmsg, 1 byte each, as plain sendmsg/recvmsg with SCM_RIGHTS) and
 *   keeps them all, as a new copy keeps its connections. Timed from the
 *   first sendmsg to the child holding the last descriptor (CLOCK_MONOTONIC,
 *   one clock for both processes), and the CPU time of both (the sender's
 *   sending, the child's receiving); prints the medians of REPS runs:
 *   "floor_ms=F floor_cpu_ms=C n=N".
 *
 * usage: hbench hold PORT N
 *   The clients of the handover bench: N TCP connections to 127.0.0.1:PORT,
 *   held until stdin reaches EOF. Past ~25,000 connections one source
 *   address runs out of ephemeral ports, so connection i comes from
 *   127.0.0.(2 + i / 25000).
 *
 * Both raise RLIMIT_NOFILE's soft limit to the hard one. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXF 253

static double mono(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "hbench: %s: %s\n", what, strerror(errno));
    exit(1);
}

static double cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void send_fds(int s, const int *fds, size_t n)
{
    union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * MAXF)]; } cb;
    char byte = 'x';
    struct iovec iov = { &byte, 1 };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.buf,
                        .msg_controllen = CMSG_SPACE(n * sizeof(int)) };
    struct cmsghdr *c = CMSG_FIRSTHDR(&m);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(n * sizeof(int));
    memcpy(CMSG_DATA(c), fds, n * sizeof(int));
    ssize_t r;
    do
        r = sendmsg(s, &m, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r != 1)
        die("sendmsg");
}

/* The receiving process: keeps every descriptor, answers with the time it
 * held the last one. */
static void floor_child(int s, size_t n, const int *fds, int *kept)
{
    for (size_t i = 0; i < n; i++) /* the parent's copies: not ours to hold */
        close(fds[i]);
    char ready = 'r';
    if (write(s, &ready, 1) != 1)
        die("write");
    size_t got = 0;
    double c0 = cpu();
    while (got < n) {
        union { struct cmsghdr align; char buf[CMSG_SPACE(sizeof(int) * MAXF)]; } cb;
        char byte;
        struct iovec iov = { &byte, 1 };
        struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cb.buf,
                            .msg_controllen = sizeof cb.buf };
        ssize_t r = recvmsg(s, &m, MSG_CMSG_CLOEXEC);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0 || (m.msg_flags & MSG_CTRUNC))
            die("recvmsg (RLIMIT_NOFILE?)");
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            if (got + k > n)
                die("too many descriptors");
            memcpy(kept + got, CMSG_DATA(c), k * sizeof(int));
            got += k;
        }
    }
    double t[2] = { mono(), cpu() - c0 };
    if (write(s, t, sizeof t) != sizeof t)
        die("write");
    _exit(0);
}

/* Returns the wall time; *cpu_s gets both processes' CPU time. */
static double floor_once(size_t n, const int *fds, int *kept, double *cpu_s)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
        die("socketpair");
    pid_t pid = fork();
    if (pid < 0)
        die("fork");
    if (pid == 0) {
        close(sv[0]);
        floor_child(sv[1], n, fds, kept);
    }
    close(sv[1]);
    char ready;
    if (read(sv[0], &ready, 1) != 1)
        die("read");
    double t0 = mono(), c0 = cpu(), t1[2];
    for (size_t off = 0; off < n; off += MAXF)
        send_fds(sv[0], fds + off, n - off < MAXF ? n - off : MAXF);
    double sent = cpu() - c0;
    ssize_t r;
    do
        r = read(sv[0], t1, sizeof t1);
    while (r < 0 && errno == EINTR);
    if (r != sizeof t1)
        die("read");
    *cpu_s = sent + t1[1];
    close(sv[0]);
    int st;
    waitpid(pid, &st, 0);
    return t1[0] - t0;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int floor_main(size_t n, int reps)
{
    /* N descriptors to send: N distinct TCP sockets, as N connections
     * are (copies of one descriptor would pass faster: one file, one
     * cache line). */
    int *fds = malloc(n * sizeof *fds), *kept = malloc(n * sizeof *kept);
    double *t = malloc((size_t)reps * sizeof *t), *c = malloc((size_t)reps * sizeof *c);
    if (!fds || !kept || !t || !c)
        die("malloc");
    for (size_t i = 0; i < n; i++)
        if ((fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
            die("socket");
    for (int i = 0; i < reps; i++)
        t[i] = floor_once(n, fds, kept, &c[i]);
    qsort(t, (size_t)reps, sizeof *t, cmp);
    qsort(c, (size_t)reps, sizeof *c, cmp);
    printf("floor_ms=%.3f floor_cpu_ms=%.3f n=%zu\n", t[reps / 2] * 1e3, c[reps / 2] * 1e3, n);
    for (size_t i = 0; i < n; i++)
        close(fds[i]);
    free(fds);
    free(kept);
    free(t);
    free(c);
    return 0;
}

static int hold_main(int port, size_t n)
{
    struct sockaddr_in to = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int *held = malloc(n * sizeof *held);
    if (!held)
        die("malloc");
    for (size_t i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (s < 0)
            die("socket");
        if (n > 25000) {
            int one = 1;
            setsockopt(s, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
            struct sockaddr_in from = { .sin_family = AF_INET };
            from.sin_addr.s_addr = htonl(INADDR_LOOPBACK + 1 + (uint32_t)(i / 25000));
            if (bind(s, (struct sockaddr *)&from, sizeof from) < 0)
                die("bind");
        }
        int r;
        do
            r = connect(s, (struct sockaddr *)&to, sizeof to);
        while (r < 0 && errno == EINTR);
        if (r < 0)
            die("connect");
        held[i] = s;
    }
    fprintf(stderr, "hbench: holding %zu connections\n", n);
    char buf[64];
    for (;;) {
        ssize_t r = read(0, buf, sizeof buf);
        if (r == 0 || (r < 0 && errno != EINTR))
            break;
    }
    for (size_t i = 0; i < n; i++)
        close(held[i]);
    free(held);
    return 0;
}

int main(int argc, char **argv)
{
    raise_nofile();
    if (argc == 4 && !strcmp(argv[1], "floor"))
        return floor_main(strtoul(argv[2], NULL, 10), atoi(argv[3]) > 0 ? atoi(argv[3]) : 1);
    if (argc == 4 && !strcmp(argv[1], "hold"))
        return hold_main(atoi(argv[2]), strtoul(argv[3], NULL, 10));
    fprintf(stderr, "usage: hbench floor N REPS | hbench hold PORT N\n");
    return 2;
}
