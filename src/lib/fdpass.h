/*
 * libfdpass: pass open file descriptors between processes over AF_UNIX
 * sockets (SCM_RIGHTS), with framing, timeouts and socket helpers.
 *
 * Conventions that hold for every function here:
 *  - A result < 0 is a negated error code: -errno for a system error, or one
 *    of the FDPASS_E* codes below. fdpass_strerror()/fdpass_errname() name it.
 *  - timeout_ms < 0 follows the socket's own mode (a blocking socket waits,
 *    a non-blocking one answers -EAGAIN); 0 never waits (-EAGAIN); > 0 waits
 *    at most that long (-ETIMEDOUT). No call ever changes O_NONBLOCK or any
 *    other flag of a socket or of a passed descriptor.
 *  - Received descriptors are close-on-exec (MSG_CMSG_CLOEXEC) and belong to
 *    the caller. On any error, every descriptor that did arrive with the
 *    failed message has been closed: nothing leaks, nothing is half-delivered.
 *  - EINTR is retried; sends use MSG_NOSIGNAL (a gone peer is -EPIPE).
 */
#ifndef FDPASS_H
#define FDPASS_H

#include <stddef.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The release, as in the VERSION file at the top of the source tree (the one
 * place it is written: `tools/version.sh set X.Y.Z` rewrites these lines, and
 * the build and spec/version_spec.lua fail when they disagree with it). */
#define FDPASS_VERSION_MAJOR 0
#define FDPASS_VERSION_MINOR 1
#define FDPASS_VERSION_PATCH 0
#define FDPASS_VERSION "0.1.0"

#if defined(FDPASS_BUILD) && defined(__GNUC__)
#define FDPASS_API __attribute__((visibility("default")))
#else
#define FDPASS_API
#endif

/* The kernel's SCM_MAX_FD: descriptors one sendmsg may carry. */
#define FDPASS_MAX_FDS_PER_SENDMSG 253

/* fdpass-specific errors, beyond errno's range. */
enum {
    FDPASS_EOF      = -4096 - 1, /* peer closed at a message boundary */
    FDPASS_ETRUNC   = -4096 - 2, /* peer closed in the middle of a message */
    FDPASS_ECTRUNC  = -4096 - 3, /* kernel dropped descriptors (MSG_CTRUNC) */
    FDPASS_EFDCOUNT = -4096 - 4, /* descriptors differ from what was announced */
    FDPASS_EBROKEN  = -4096 - 5, /* channel desynchronised by an earlier error */
};

FDPASS_API const char *fdpass_strerror(int err); /* "descriptors were truncated ..." */
FDPASS_API const char *fdpass_errname(int err);  /* "ECTRUNC", "EAGAIN", ... */

/* ---- raw messages: exactly one sendmsg / one recvmsg, any SCM_RIGHTS peer */

/* Sends len > 0 bytes and nfds (<= 253) descriptors in one sendmsg.
 * Returns the number of bytes sent (on a stream it may be short: the
 * descriptors went with the first part). An empty payload is refused
 * (-EINVAL): the kernel would drop the descriptors on a stream. */
FDPASS_API ssize_t fdpass_sendmsg(int sock, const void *data, size_t len,
                       const int *fds, size_t nfds, int timeout_ms);

/* Receives one message into buf (cap bytes) and up to maxfds descriptors.
 * Returns the byte count and sets *nfds. A peer that sent more descriptors
 * than maxfds, or a receiver at RLIMIT_NOFILE, gives FDPASS_ECTRUNC; a
 * record larger than cap on a seqpacket/datagram socket gives -EMSGSIZE; in
 * both cases every descriptor that arrived is closed. A return of 0 bytes
 * with no descriptor is FDPASS_EOF. */
FDPASS_API ssize_t fdpass_recvmsg(int sock, void *buf, size_t cap, int *fds,
                       size_t maxfds, size_t *nfds, int timeout_ms);

/* ---- framed messages: any payload size, any number of descriptors -------
 *
 * A message travels as one or more records. Each record is one sendmsg of a
 * 20-byte header (magic "FDPS", version, flags, this record's descriptor
 * count and length, the message's total length and descriptor count) and up
 * to FDPASS_RECORD_MAX bytes, with at most 253 descriptors attached to its
 * first byte. The header is never empty, so descriptors never ride alone. */

#define FDPASS_RECORD_MAX 65536
#define FDPASS_HEADER_SIZE 20
#define FDPASS_PROTOCOL 1

typedef struct fdpass_limits {
    size_t max_payload; /* bytes in one received message (default 16 MiB) */
    size_t max_fds;     /* descriptors in one received message (default 4096) */
} fdpass_limits;

/* A channel holds the framing state of one socket (partial records in
 * either direction). It does not own the socket. */
typedef struct fdpass_chan fdpass_chan;

typedef struct fdpass_msg {
    const void *data; /* valid until the next fdpass_chan_recv on the channel */
    size_t      len;
    int        *fds;  /* the array is the channel's, the descriptors yours */
    size_t      nfds;
} fdpass_msg;

/* Returns NULL with errno set (ENOTSOCK, ENOMEM, ...). lim may be NULL. */
FDPASS_API fdpass_chan *fdpass_chan_new(int sock, const fdpass_limits *lim);
/* Closes descriptors still held in partial state and frees the channel. */
FDPASS_API void fdpass_chan_free(fdpass_chan *c);
/* Reads the limits into *get and/or replaces them with *set (either NULL). */
FDPASS_API void fdpass_chan_limits(fdpass_chan *c, fdpass_limits *get, const fdpass_limits *set);
/* What went wrong in the last failed call, in words ("bad magic", "record
 * announces 5000 descriptors, the limit is 4096"), or NULL. */
FDPASS_API const char *fdpass_chan_detail(const fdpass_chan *c);

/* Sends one framed message. 0 when it is all in the kernel. -EAGAIN or
 * -ETIMEDOUT: the message is queued in the channel (its descriptors
 * duplicated if they were not sent yet) and fdpass_chan_flush() finishes it;
 * a later fdpass_chan_send() flushes it first. Other errors break the channel. */
FDPASS_API int fdpass_chan_send(fdpass_chan *c, const void *data, size_t len,
                const int *fds, size_t nfds, int timeout_ms);
FDPASS_API int fdpass_chan_flush(fdpass_chan *c, int timeout_ms);
FDPASS_API size_t fdpass_chan_pending(const fdpass_chan *c); /* messages queued, 0 when flushed */

/* Receives one framed message. 0 and *msg filled; -EAGAIN/-ETIMEDOUT with
 * the partial message kept for the next call; FDPASS_EOF at a message
 * boundary; FDPASS_ETRUNC, -EPROTO, -EMSGSIZE, FDPASS_ECTRUNC,
 * FDPASS_EFDCOUNT on a broken or hostile peer, after which the channel
 * answers FDPASS_EBROKEN. */
FDPASS_API int fdpass_chan_recv(fdpass_chan *c, fdpass_msg *msg, int timeout_ms);

/* ---- sockets ------------------------------------------------------------ */

/* type: SOCK_SEQPACKET or SOCK_STREAM. Both ends close-on-exec, blocking. */
FDPASS_API int fdpass_socketpair(int type, int sv[2]);

/* addr: "@name" for a Linux abstract name, anything else is a path. A path
 * socket gets exactly `mode` (0600 when mode is 0), whatever the umask; an
 * existing socket file nobody listens on is replaced, a live one gives
 * -EADDRINUSE, anything that is not a socket -EEXIST. The listener is
 * non-blocking and close-on-exec. Returns the descriptor. */
FDPASS_API int fdpass_listen(const char *addr, int type, int backlog, unsigned mode);
/* Returns a blocking, close-on-exec connection or -error. timeout_ms < 0
 * waits until one comes, even on a non-blocking listener. */
FDPASS_API int fdpass_accept(int listener, int timeout_ms);
FDPASS_API int fdpass_connect(const char *addr, int type, int timeout_ms);

FDPASS_API int fdpass_peercred(int sock, pid_t *pid, uid_t *uid, gid_t *gid);

/* ---- datagrams: one message to an address, no connection ----------------
 *
 * What sd_notify speaks: one AF_UNIX SOCK_DGRAM message, with descriptors,
 * to a socket named by a path or "@name", from a process that holds no
 * socket of its own between messages. */

/* The sender of a datagram, as the kernel vouches for it (SCM_CREDENTIALS):
 * pid 0 when the receiving socket did not ask for it (SO_PASSCRED). */
typedef struct fdpass_cred {
    pid_t pid;
    uid_t uid;
    gid_t gid;
} fdpass_cred;

/* A datagram socket bound on addr (as for fdpass_listen: "@name" or a path
 * that gets exactly `mode`, 0600 when 0), non-blocking, close-on-exec, with
 * SO_PASSCRED on so that every datagram says who sent it. */
FDPASS_API int fdpass_dgram_bind(const char *addr, unsigned mode);

/* Sends len > 0 bytes and nfds (<= 253) descriptors as one datagram to
 * addr, through a socket of its own made for this one message. Returns len,
 * or -ENOENT / -ECONNREFUSED when nobody is bound there, -EMSGSIZE when it
 * is larger than a datagram may be; timeout_ms bounds the wait while the
 * receiver's queue is full (< 0: as long as it stays full). */
FDPASS_API ssize_t fdpass_dgram_send(const char *addr, const void *data, size_t len,
                          const int *fds, size_t nfds, int timeout_ms);

/* Receives one datagram as fdpass_recvmsg does (a larger one than cap is
 * -EMSGSIZE, its descriptors closed), and its sender in *cred (may be
 * NULL). An empty datagram is a return of 0, never an end of file.
 * timeout_ms < 0 waits for one whatever the socket's mode, as
 * fdpass_accept does: the socket fdpass_dgram_bind makes is non-blocking. */
FDPASS_API ssize_t fdpass_dgram_recv(int sock, void *buf, size_t cap, int *fds,
                          size_t maxfds, size_t *nfds, fdpass_cred *cred,
                          int timeout_ms);

/* ---- what a descriptor is ----------------------------------------------- */

typedef struct fdpass_fdinfo {
    const char *kind;     /* "file", "dir", "pipe", "socket", "char", "block",
                             "symlink", "unknown" */
    int   cloexec, nonblock;
    /* sockets */
    const char *family;   /* "unix", "inet", "inet6", "netlink", "other" */
    const char *socktype; /* "stream", "dgram", "seqpacket", "raw", "other" */
    int   listening;
    char  addr[128], peer[128];  /* this end's and the peer's: "127.0.0.1:80",
                                    "[::1]:80", "@name", "/path", "" when
                                    unnamed or unconnected */
    /* everything else */
    long long size;       /* regular files */
    char  path[4096];     /* what /proc/self/fd says, "" if unknown */
} fdpass_fdinfo;

FDPASS_API int fdpass_fdinfo_get(int fd, fdpass_fdinfo *info);

/* ---- processes ---------------------------------------------------------- */

/* Starts the program `file` (looked up in PATH when it has no '/', as
 * execvp does) with argv and envp (NULL: this environment), without a
 * shell. map[i] = { child_fd, parent_fd }: parent_fd appears in the child as
 * child_fd (not close-on-exec there). The child holds 0, 1, 2 and the
 * mapped descriptors, nothing else: every other descriptor above 2 stays
 * behind, close-on-exec or not. Returns 0 and *pid. */
FDPASS_API int fdpass_spawn(pid_t *pid, const char *file, char *const argv[],
                 char *const envp[], const int (*map)[2], size_t nmap);

/* Waits at most timeout_ms (< 0: forever) for pid to exit. 0 and *status
 * (as from waitpid) when it did, -ETIMEDOUT when it did not. */
FDPASS_API int fdpass_wait(pid_t pid, int timeout_ms, int *status);

#ifdef __cplusplus
}
#endif
#endif
