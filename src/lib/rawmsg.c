/* One sendmsg / one recvmsg with descriptors: the fast path under
 * everything else, and the whole of the raw API. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>
#include "internal.h"

#ifndef SCM_PIDFD
#define SCM_PIDFD 0x04 /* Linux 6.5: the sender's pidfd, an fd we must close */
#endif

typedef union {
    struct cmsghdr align;
    char buf[CMSG_ROOM];
} cmsg_buf;

ssize_t raw_send(int sock, const struct iovec *iov, int iovcnt,
                 const int *fds, size_t nfds, int flags)
{
    cmsg_buf cb;
    struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = iovcnt };
    if (nfds > 0) {
        size_t bytes = nfds * sizeof(int);
        memset(cb.buf, 0, CMSG_SPACE(bytes));
        m.msg_control = cb.buf;
        m.msg_controllen = CMSG_SPACE(bytes);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(bytes);
        memcpy(CMSG_DATA(c), fds, bytes);
    }
    for (;;) {
        ssize_t r = sendmsg(sock, &m, flags | MSG_NOSIGNAL);
        if (r >= 0)
            return r;
        /* AF_UNIX says ECONNRESET once when the peer closed with data unread:
         * a gone peer all the same, EPIPE as every later call says. */
        if (errno == ECONNRESET)
            return -EPIPE;
        if (errno != EINTR)
            return -errno;
    }
}

/* Takes the descriptors of one SCM_RIGHTS message: as many as fit, the rest
 * closed. Returns how many were closed for want of room. */
static size_t take_fds(const struct cmsghdr *c, int *fds, size_t maxfds, size_t *nfds)
{
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int), dropped = 0;
    const unsigned char *p = CMSG_DATA(c);
    for (size_t i = 0; i < n; i++) {
        int fd;
        memcpy(&fd, p + i * sizeof(int), sizeof fd); /* CMSG_DATA may be unaligned */
        if (*nfds < maxfds)
            fds[(*nfds)++] = fd;
        else {
            close(fd);
            dropped++;
        }
    }
    return dropped;
}

ssize_t raw_recv(int sock, const struct iovec *iov, int iovcnt, int *fds,
                 size_t maxfds, size_t *nfds, int flags, int *truncated)
{
    return raw_recv_cred(sock, iov, iovcnt, fds, maxfds, nfds, flags, truncated, NULL);
}

ssize_t raw_recv_cred(int sock, const struct iovec *iov, int iovcnt, int *fds,
                      size_t maxfds, size_t *nfds, int flags, int *truncated,
                      struct ucred *cred)
{
    cmsg_buf cb;
    struct msghdr m = { .msg_iov = (struct iovec *)iov, .msg_iovlen = iovcnt,
                        .msg_control = cb.buf, .msg_controllen = sizeof cb.buf };
    ssize_t r;
    *nfds = 0;
    for (;;) {
        r = recvmsg(sock, &m, flags | MSG_CMSG_CLOEXEC);
        if (r >= 0)
            break;
        /* ECONNRESET: a one-shot note (now cleared) that the peer closed with
         * our data unread; what it sent is still queued, then EOF. */
        if (errno != EINTR && errno != ECONNRESET)
            return -errno;
    }
    size_t dropped = 0;
    /* Walk every control message: credentials may come before the rights. */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET)
            continue;
        if (c->cmsg_type == SCM_RIGHTS)
            dropped += take_fds(c, fds, maxfds, nfds);
        else if (c->cmsg_type == SCM_CREDENTIALS && cred &&
                 c->cmsg_len >= CMSG_LEN(sizeof(struct ucred)))
            memcpy(cred, CMSG_DATA(c), sizeof *cred);
        else if (c->cmsg_type == SCM_PIDFD && c->cmsg_len >= CMSG_LEN(sizeof(int))) {
            int pidfd;
            memcpy(&pidfd, CMSG_DATA(c), sizeof pidfd);
            close(pidfd);
        }
    }
    if (truncated)
        *truncated = (m.msg_flags & MSG_TRUNC) != 0;
    if (dropped || (m.msg_flags & MSG_CTRUNC)) {
        close_all(fds, *nfds);
        *nfds = 0;
        return FDPASS_ECTRUNC;
    }
    return r;
}

ssize_t fdpass_sendmsg(int sock, const void *data, size_t len,
                       const int *fds, size_t nfds, int timeout_ms)
{
    if (len == 0 || nfds > FDPASS_MAX_FDS_PER_SENDMSG || (nfds && !fds) || !data)
        return -EINVAL;
    deadline d = deadline_from(timeout_ms);
    struct iovec iov = { (void *)data, len };
    for (;;) {
        ssize_t r = raw_send(sock, &iov, 1, fds, nfds, deadline_flags(&d));
        if (r != -EAGAIN)
            return r;
        int w = deadline_wait(&d, sock, POLLOUT);
        if (w < 0)
            return w;
    }
}

ssize_t fdpass_recvmsg(int sock, void *buf, size_t cap, int *fds,
                       size_t maxfds, size_t *nfds, int timeout_ms)
{
    size_t got = 0;
    if (!nfds)
        nfds = &got;
    *nfds = 0;
    if (cap == 0 || !buf || (maxfds && !fds))
        return -EINVAL;
    deadline d = deadline_from(timeout_ms);
    ssize_t r = raw_recv_until(sock, buf, cap, fds, maxfds, nfds, &d, NULL);
    if (r == 0 && *nfds == 0)
        return FDPASS_EOF;
    return r;
}

ssize_t raw_recv_until(int sock, void *buf, size_t cap, int *fds, size_t maxfds,
                       size_t *nfds, const deadline *d, struct ucred *cred)
{
    struct iovec iov = { buf, cap };
    for (;;) {
        int truncated = 0;
        ssize_t r = raw_recv_cred(sock, &iov, 1, fds, maxfds, nfds, deadline_flags(d),
                                  &truncated, cred);
        if (r == -EAGAIN) {
            int w = deadline_wait(d, sock, POLLIN);
            if (w < 0)
                return w;
            continue;
        }
        if (r < 0)
            return r;
        if (truncated) {
            close_all(fds, *nfds);
            *nfds = 0;
            return -EMSGSIZE;
        }
        return r;
    }
}
