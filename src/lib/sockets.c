/* AF_UNIX sockets to carry descriptors: pairs, listeners on a path or an
 * abstract name, connections with a timeout, the peer's credentials. */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "internal.h"

static int check_type(int type)
{
    return type == SOCK_STREAM || type == SOCK_SEQPACKET ? 0 : -EPROTOTYPE;
}

int fdpass_socketpair(int type, int sv[2])
{
    int r = check_type(type);
    if (r < 0)
        return r;
    return socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) < 0 ? -errno : 0;
}

/* "@name" is abstract (no NUL terminator, length counts), else a path. */
int unix_addr(const char *addr, struct sockaddr_un *sa, socklen_t *len)
{
    size_t n = addr ? strlen(addr) : 0;
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    if (n == 0 || (addr[0] == '@' && n == 1))
        return -EINVAL;
    /* A path needs room for its NUL; "@name" maps to "\0name", no NUL. */
    if (n > sizeof sa->sun_path || (addr[0] != '@' && n == sizeof sa->sun_path))
        return -ENAMETOOLONG;
    memcpy(sa->sun_path, addr, n);
    if (addr[0] == '@') {
        sa->sun_path[0] = '\0';
        *len = offsetof(struct sockaddr_un, sun_path) + n;
    } else {
        *len = offsetof(struct sockaddr_un, sun_path) + n + 1;
    }
    return 0;
}

/* A socket file that nobody answers on is left over from a dead process:
 * it may go. Anything else at the path stays. */
static int clear_stale(const char *path, const struct sockaddr_un *sa, socklen_t len)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (!S_ISSOCK(st.st_mode))
        return -EEXIST;
    /* A datagram probe: any live socket bound there answers EPROTOTYPE (or
     * accepts it, if it is a datagram one) and nothing lands in a live
     * listener's accept queue; only a dead file says ECONNREFUSED. */
    int probe = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (probe < 0)
        return -errno;
    int r = connect(probe, (const struct sockaddr *)sa, len);
    int e = errno;
    close(probe);
    if (r == 0 || e == EAGAIN || e == EPROTOTYPE)
        return -EADDRINUSE; /* someone listens (or the backlog is full) */
    if (e != ECONNREFUSED)
        return -e;
    return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

/* The checks listen and connect share: a kind fdpass carries, an address. */
static int prepare(const char *addr, int type, struct sockaddr_un *sa, socklen_t *len)
{
    int r = check_type(type);
    return r < 0 ? r : unix_addr(addr, sa, len);
}

int unix_bind(const char *addr, int type, unsigned mode)
{
    struct sockaddr_un sa;
    socklen_t len;
    int r = unix_addr(addr, &sa, &len);
    if (r < 0)
        return r;
    int path = addr[0] != '@';
    if (path && (r = clear_stale(addr, &sa, len)) < 0)
        return r;
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    /* The file gets its mode at bind time from the umask (fchmod before bind
     * is ignored on Linux): set the umask around bind only. */
    mode_t old = 0;
    if (path)
        old = umask(~(mode ? mode : 0600) & 0777);
    r = bind(fd, (struct sockaddr *)&sa, len);
    int e = errno;
    if (path)
        umask(old);
    if (r < 0) {
        close(fd);
        return -e;
    }
    return fd;
}

int fdpass_listen(const char *addr, int type, int backlog, unsigned mode)
{
    int r = check_type(type);
    if (r < 0)
        return r;
    int fd = unix_bind(addr, type, mode);
    if (fd < 0)
        return fd;
    if (listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0)
        return unix_unbind(fd, addr, errno);
    return fd;
}

int unix_unbind(int fd, const char *addr, int err)
{
    if (addr[0] != '@')
        unlink(addr);
    close(fd);
    return -err;
}

int fdpass_accept(int listener, int timeout_ms)
{
    deadline d = deadline_from(timeout_ms);
    if (d.mode < 0) /* our listeners are non-blocking: "no timeout" waits */
        d.mode = DEADLINE_FOREVER;
    for (;;) {
        /* poll first: the listener may be blocking, and another process
         * sharing it may take the connection we were woken for. */
        if (d.mode != 0) {
            int w = deadline_wait(&d, listener, POLLIN);
            if (w < 0)
                return w;
        } else if (poll(&(struct pollfd){ .fd = listener, .events = POLLIN }, 1, 0) == 0) {
            return -EAGAIN; /* a blocking listener must not block "never wait" */
        }
        int fd = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            return fd;
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno != EAGAIN || d.mode == 0)
            return -errno;
    }
}

int fdpass_connect(const char *addr, int type, int timeout_ms)
{
    struct sockaddr_un sa;
    socklen_t len;
    int r = prepare(addr, type, &sa, &len);
    if (r < 0)
        return r;
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* An AF_UNIX connect waits only while the listener's backlog is full,
     * and it honours SO_SNDTIMEO for that wait: the socket is new and ours,
     * so set it for the connect and clear it again. */
    if (timeout_ms >= 0) {
        int ms = timeout_ms ? timeout_ms : 1;
        struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    }
    do
        r = connect(fd, (struct sockaddr *)&sa, len);
    while (r < 0 && errno == EINTR);
    if (r < 0 && errno == EISCONN) /* an interrupted connect that completed */
        r = 0;
    int e = errno;
    if (timeout_ms >= 0) {
        struct timeval zero = { 0, 0 };
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &zero, sizeof zero);
    }
    if (r < 0) {
        close(fd);
        if (e == EAGAIN || e == EINPROGRESS) /* the backlog stayed full */
            return timeout_ms == 0 ? -EAGAIN : -ETIMEDOUT;
        return -e;
    }
    return fd;
}

int fdpass_peercred(int sock, pid_t *pid, uid_t *uid, gid_t *gid)
{
    struct ucred cr;
    socklen_t len = sizeof cr;
    if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0)
        return -errno;
    if (pid) *pid = cr.pid;
    if (uid) *uid = cr.uid;
    if (gid) *gid = cr.gid;
    return 0;
}
