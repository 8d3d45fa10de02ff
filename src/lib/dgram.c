/* Datagrams with descriptors to a named AF_UNIX socket: the transport of
 * systemd's sd_notify protocol (NOTIFY_SOCKET), and its receiving end for
 * whoever plays the service manager (the specs do). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sys/un.h>
#include <unistd.h>
#include "internal.h"

int fdpass_dgram_bind(const char *addr, unsigned mode)
{
    int fd = unix_bind(addr, SOCK_DGRAM, mode);
    if (fd < 0)
        return fd;
    /* After bind: SO_PASSCRED on an unbound socket makes the kernel give it
     * an autobound name on its first send. */
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) < 0)
        return unix_unbind(fd, addr, errno);
    return fd;
}

ssize_t fdpass_dgram_send(const char *addr, const void *data, size_t len,
                          const int *fds, size_t nfds, int timeout_ms)
{
    if (len == 0 || !data || nfds > FDPASS_MAX_FDS_PER_SENDMSG || (nfds && !fds))
        return -EINVAL;
    struct sockaddr_un sa;
    socklen_t sl;
    int r = unix_addr(addr, &sa, &sl);
    if (r < 0)
        return r;
    deadline d = deadline_from(timeout_ms);
    int sock = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return -errno;
    /* Connected rather than sendto(): a missing receiver is told at once,
     * and a full receiving queue makes the socket poll unwritable, so the
     * wait below can be bounded (an unconnected sender could only spin). */
    do
        r = connect(sock, (const struct sockaddr *)&sa, sl);
    while (r < 0 && errno == EINTR);
    ssize_t n = r < 0 ? -errno : 0;
    struct iovec iov = { (void *)data, len };
    while (r == 0) {
        n = raw_send(sock, &iov, 1, fds, nfds, deadline_flags(&d));
        if (n != -EAGAIN)
            break;
        int w = deadline_wait(&d, sock, POLLOUT); /* -EAGAIN itself when it may not wait */
        if (w < 0) {
            n = w;
            break;
        }
    }
    close(sock);
    return n;
}

ssize_t fdpass_dgram_recv(int sock, void *buf, size_t cap, int *fds, size_t maxfds,
                          size_t *nfds, fdpass_cred *cred, int timeout_ms)
{
    size_t got = 0;
    if (!nfds)
        nfds = &got;
    *nfds = 0;
    if (cred)
        *cred = (fdpass_cred){ 0, 0, 0 };
    if (cap == 0 || !buf || (maxfds && !fds))
        return -EINVAL;
    deadline d = deadline_from(timeout_ms);
    if (d.mode < 0) /* our datagram sockets are non-blocking: "no timeout" waits, as accept does */
        d.mode = DEADLINE_FOREVER;
    struct ucred uc = { 0, 0, 0 };
    ssize_t r = raw_recv_until(sock, buf, cap, fds, maxfds, nfds, &d, &uc);
    if (r >= 0 && cred)
        *cred = (fdpass_cred){ uc.pid, uc.uid, uc.gid };
    return r;
}
