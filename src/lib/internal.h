/* Shared by the library's own files; not installed. */
#ifndef FDPASS_INTERNAL_H
#define FDPASS_INTERNAL_H

#include <stdint.h>
#include <sys/socket.h>
#include "fdpass.h"

/* A deadline derived from a timeout: computed once, so that retries after
 * EINTR or a spurious wake-up never extend the total wait. */
typedef struct deadline {
    int     mode;   /* < 0: socket's own mode, 0: never wait, 1: until `at`,
                       DEADLINE_FOREVER: poll without end */
    int64_t at_ms;  /* CLOCK_MONOTONIC */
} deadline;

#define DEADLINE_FOREVER 2
deadline deadline_from(int timeout_ms);
/* Monotonic milliseconds: the one clock every deadline reads. */
int64_t deadline_now_ms(void);
/* Waits for `events` on fd until the deadline. 0 when ready, -EAGAIN when
 * the deadline is "never wait", -ETIMEDOUT when it passed. */
int deadline_wait(const deadline *d, int fd, short events);
/* MSG_DONTWAIT unless the socket's own mode decides. */
int deadline_flags(const deadline *d);

/* Closes fds[0..n) and keeps errno. */
void close_all(const int *fds, size_t n);

/* Room for one full batch of descriptors plus the messages that may precede
 * it (SCM_CREDENTIALS, SCM_PIDFD): every control message is walked. */
#define CMSG_ROOM (CMSG_SPACE(sizeof(int) * FDPASS_MAX_FDS_PER_SENDMSG) + \
                   CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int)) + 64)

/* One sendmsg with descriptors, MSG_NOSIGNAL, EINTR retried; flags adds
 * MSG_DONTWAIT. Returns bytes or -errno. */
ssize_t raw_send(int sock, const struct iovec *iov, int iovcnt,
                 const int *fds, size_t nfds, int flags);
/* One recvmsg, MSG_CMSG_CLOEXEC, EINTR retried; every SCM_RIGHTS message is
 * collected into fds (room for maxfds), anything beyond is closed and makes
 * the result FDPASS_ECTRUNC, as does MSG_CTRUNC. *truncated reports
 * MSG_TRUNC. On error every received descriptor is closed. */
ssize_t raw_recv(int sock, const struct iovec *iov, int iovcnt, int *fds,
                 size_t maxfds, size_t *nfds, int flags, int *truncated);
struct ucred;
/* raw_recv that also reports the sender's SCM_CREDENTIALS (present when
 * the socket has SO_PASSCRED) in *cred, or leaves it untouched. */
ssize_t raw_recv_cred(int sock, const struct iovec *iov, int iovcnt, int *fds,
                      size_t maxfds, size_t *nfds, int flags, int *truncated,
                      struct ucred *cred);

/* One whole message into buf (cap bytes) until the deadline: raw_recv_cred
 * retried while it would block. A message larger than buf is -EMSGSIZE
 * with every descriptor that came closed. The bytes, or an error. */
ssize_t raw_recv_until(int sock, void *buf, size_t cap, int *fds, size_t maxfds,
                       size_t *nfds, const deadline *d, struct ucred *cred);

struct sockaddr_un;
/* "@name" (abstract) or a path into *sa; -EINVAL, -ENAMETOOLONG. */
int unix_addr(const char *addr, struct sockaddr_un *sa, socklen_t *len);
/* A bound, non-blocking, close-on-exec AF_UNIX socket of `type` on addr: a
 * path gets exactly `mode` (0600 when 0) and replaces a dead socket file,
 * never a live one (-EADDRINUSE) or anything else (-EEXIST). */
int unix_bind(const char *addr, int type, unsigned mode);
/* Undoes unix_bind after a later step failed with errno `err`: closes fd
 * and removes the socket file it made. Returns -err. */
int unix_unbind(int fd, const char *addr, int err);

#endif
