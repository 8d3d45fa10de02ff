/* libFuzzer target: hostile bytes and descriptors into fdpass_chan_recv.
 *
 * The input is written into one end of a socketpair and fdpass_chan_recv reads
 * the other end until it reports an error or end of file. Layout:
 *
 *   byte 0, mode:  bit 0     SOCK_SEQPACKET (else SOCK_STREAM)
 *                  bit 1     receive (timeout 0) after every write, so that
 *                            partial records are resumed; else all at the end
 *                  bits 2-3  receive limits: default, {100 B, 3 fds},
 *                            {1 B, 1 fd}, {300000 B, 600 fds}
 *                  bit 4     SO_PASSCRED and SO_PASSPIDFD on the receiver
 *                            (control messages before the rights, a pidfd
 *                            that the library must close)
 *                  bit 5     RLIMIT_NOFILE lowered to 16 descriptors over
 *                            what the process holds (the kernel truncates)
 *   then writes, each one sendmsg (one record on a seqpacket socket):
 *     ctl:         bits 0-1  descriptors attached: 0, 1, 2, or 3 = the next
 *                            byte says (0..255; over 253 the kernel refuses)
 *                  bit 2     fill: a u16 follows, that many bytes of
 *                            (ctl >> 4) * 17 after the literal bytes
 *                  bit 3     the literal length is a u16 (else one byte)
 *     [count] [fill u16] len, literal bytes (as many as the input has left)
 *
 * Attached descriptors are /dev/null. A write the socket does not take at
 * once (full buffer, partial stream write) ends the writing. Checked for
 * every input: every delivered message is within the limits and carries
 * new close-on-exec /dev/null descriptors; every failure is one of the
 * documented codes and leaves the channel answering EBROKEN (or EOF again);
 * and the process holds exactly the descriptors it held before. */
#include "fuzz_common.h"
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include "fdpass.h"

static const fdpass_limits LIMITS[4] = {
    { 16u << 20, 4096 }, { 100, 3 }, { 1, 1 }, { 300000, 600 } };

typedef struct {
    const uint8_t *p;
    size_t n;
} input;

static int get8(input *in, unsigned *v)
{
    if (in->n < 1)
        return 0;
    *v = in->p[0];
    in->p++, in->n--;
    return 1;
}

static int get16(input *in, unsigned *v)
{
    if (in->n < 2)
        return 0;
    *v = in->p[0] | (unsigned)in->p[1] << 8;
    in->p += 2, in->n -= 2;
    return 1;
}

typedef struct {
    fdpass_chan *c;
    fdpass_limits lim;
    int done;      /* a final result came: stop */
    int last;      /* that result */
    size_t msgs;
} receiver;

static void take_message(receiver *r, const fdpass_msg *m)
{
    if (m->len > r->lim.max_payload || m->nfds > r->lim.max_fds)
        fuzz_fail("message of %zu bytes and %zu fds passed limits %zu/%zu",
                  m->len, m->nfds, r->lim.max_payload, r->lim.max_fds);
    if (m->len && !m->data)
        fuzz_fail("message of %zu bytes without data", m->len);
    if (m->len) {
        volatile unsigned char sum = 0; /* ASan checks that all of it is readable */
        for (size_t i = 0; i < m->len; i++)
            sum ^= ((const unsigned char *)m->data)[i];
        (void)sum;
    }
    for (size_t i = 0; i < m->nfds; i++) {
        fuzz_check_devnull(m->fds[i]);
        if (close(m->fds[i]) < 0)
            fuzz_fail("closing received descriptor %d: %s", m->fds[i], strerror(errno));
    }
    r->msgs++;
}

static int expected_failure(int e)
{
    return e == FDPASS_EOF || e == FDPASS_ETRUNC || e == FDPASS_ECTRUNC ||
           e == FDPASS_EFDCOUNT || e == -EPROTO || e == -EMSGSIZE;
}

/* Receives until nothing more is there (timeout 0) or a final result. */
static void drain(receiver *r, int timeout_ms, size_t eof_budget)
{
    size_t eofs = 0;
    while (!r->done) {
        fdpass_msg m;
        memset(&m, 0, sizeof m);
        int e = fdpass_chan_recv(r->c, &m, timeout_ms);
        if (e == 0) {
            take_message(r, &m);
            continue;
        }
        if (e == -EAGAIN && timeout_ms == 0)
            return;
        if (!expected_failure(e))
            fuzz_fail("fdpass_chan_recv returned %d (%s): %s", e, fdpass_errname(e),
                      fdpass_chan_detail(r->c) ? fdpass_chan_detail(r->c) : "");
        if (e == FDPASS_EOF) {
            /* An empty seqpacket record reads as end of file too: go on
             * while the writes could account for it. */
            if (++eofs <= eof_budget)
                continue;
            if (timeout_ms == 0)
                return;
        }
        r->done = 1;
        r->last = e;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int devnull = fuzz_devnull();
    int before = fuzz_fdcount();
    input in = { data + 1, size - 1 };
    unsigned mode = data[0];
    int type = mode & 1 ? SOCK_SEQPACKET : SOCK_STREAM;
    int interleave = mode & 2;
    receiver r = { .lim = LIMITS[(mode >> 2) & 3] };

    struct rlimit saved;
    getrlimit(RLIMIT_NOFILE, &saved);
    if (mode & 32) {
        struct rlimit low = { (rlim_t)before + 16, saved.rlim_max };
        setrlimit(RLIMIT_NOFILE, &low);
    }
    int sv[2];
    int e = fdpass_socketpair(type, sv);
    if (e < 0)
        fuzz_fail("socketpair: %s", fdpass_strerror(e));
    if (mode & 16) {
        int one = 1;
        setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &one, sizeof one);
        setsockopt(sv[1], SOL_SOCKET, 76 /* SO_PASSPIDFD, Linux 6.5 */, &one, sizeof one);
    }
    r.c = fdpass_chan_new(sv[1], &r.lim);
    if (!r.c)
        fuzz_fail("fdpass_chan_new: %s", strerror(errno));
    fdpass_chan_limits(r.c, &r.lim, NULL);

    static uint8_t buf[2 * 65536];
    int fds[255];
    for (size_t i = 0; i < 255; i++)
        fds[i] = devnull;
    size_t writes = 0;
    unsigned ctl;
    while (!r.done && get8(&in, &ctl)) {
        unsigned nfds = ctl & 3, fill = 0, len;
        if (nfds == 3 && !get8(&in, &nfds))
            break;
        if ((ctl & 4) && !get16(&in, &fill))
            break;
        if (!((ctl & 8) ? get16(&in, &len) : get8(&in, &len)))
            break;
        if (len > in.n)
            len = (unsigned)in.n;
        memcpy(buf, in.p, len);
        in.p += len, in.n -= len;
        memset(buf + len, (int)(ctl >> 4) * 17, fill);
        size_t total = len + fill;

        union {
            struct cmsghdr align;
            char b[CMSG_SPACE(sizeof(int) * 255)];
        } cb;
        struct iovec iov = { buf, total };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (nfds) {
            memset(&cb, 0, sizeof cb);
            msg.msg_control = cb.b;
            msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
            struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_RIGHTS;
            c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
            memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
        }
        ssize_t w = sendmsg(sv[0], &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w < 0 && errno == EINVAL && nfds > 253)
            continue; /* over SCM_MAX_FD: nothing was sent */
        if (w < 0 || (size_t)w != total)
            break;
        writes++;
        if (interleave)
            drain(&r, 0, writes);
    }
    close(sv[0]); /* the receiver sees end of file after what was written */
    drain(&r, -1, writes);

    /* After a failure the channel stays broken; end of file stays. */
    fdpass_msg m;
    e = fdpass_chan_recv(r.c, &m, 0);
    if (r.last == FDPASS_EOF ? e != FDPASS_EOF : e != FDPASS_EBROKEN)
        fuzz_fail("after %s, fdpass_chan_recv returned %s", fdpass_errname(r.last), fdpass_errname(e));

    fdpass_chan_free(r.c);
    close(sv[1]);
    setrlimit(RLIMIT_NOFILE, &saved);
    if (fcntl(devnull, F_GETFD) < 0)
        fuzz_fail("the sender's /dev/null was closed");
    int after = fuzz_fdcount();
    if (after != before)
        fuzz_fail("descriptors before %d, after %d", before, after);
    return 0;
}
