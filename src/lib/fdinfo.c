/* What a descriptor is, read without changing anything about it: what a
 * process that inherited descriptors checks before it trusts them. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "internal.h"

static const char *kind_of(mode_t m)
{
    if (S_ISREG(m)) return "file";
    if (S_ISDIR(m)) return "dir";
    if (S_ISFIFO(m)) return "pipe";
    if (S_ISSOCK(m)) return "socket";
    if (S_ISCHR(m)) return "char";
    if (S_ISBLK(m)) return "block";
    if (S_ISLNK(m)) return "symlink";
    return "unknown";
}

static const char *family_name(int f)
{
    switch (f) {
    case AF_UNIX: return "unix";
    case AF_INET: return "inet";
    case AF_INET6: return "inet6";
    case AF_NETLINK: return "netlink";
    default: return "other";
    }
}

static const char *type_name(int t)
{
    switch (t) {
    case SOCK_STREAM: return "stream";
    case SOCK_DGRAM: return "dgram";
    case SOCK_SEQPACKET: return "seqpacket";
    case SOCK_RAW: return "raw";
    default: return "other";
    }
}

static void format_addr(const struct sockaddr_storage *ss, socklen_t len, char *out, size_t cap)
{
    char host[INET6_ADDRSTRLEN];
    out[0] = 0;
    if (ss->ss_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *in = (const void *)ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, cap, "%s:%u", host, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *in6 = (const void *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, cap, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else if (ss->ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)ss;
        size_t n = len > offsetof(struct sockaddr_un, sun_path)
                       ? len - offsetof(struct sockaddr_un, sun_path) : 0;
        if (n == 0)
            return; /* unnamed */
        if (un->sun_path[0] == '\0') { /* abstract: written "@name" */
            size_t k = n - 1 < cap - 2 ? n - 1 : cap - 2;
            out[0] = '@';
            memcpy(out + 1, un->sun_path + 1, k);
            out[k + 1] = 0;
        } else {
            snprintf(out, cap, "%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
        }
    }
}

int fdpass_fdinfo_get(int fd, fdpass_fdinfo *info)
{
    struct stat st;
    memset(info, 0, sizeof *info);
    if (fstat(fd, &st) < 0)
        return -errno;
    int fdflags = fcntl(fd, F_GETFD), flflags = fcntl(fd, F_GETFL);
    info->kind = kind_of(st.st_mode);
    info->cloexec = fdflags >= 0 && (fdflags & FD_CLOEXEC);
    info->nonblock = flflags >= 0 && (flflags & O_NONBLOCK);
    info->size = S_ISREG(st.st_mode) ? (long long)st.st_size : -1;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, info->path, sizeof info->path - 1);
    info->path[n > 0 ? n : 0] = 0;
    if (!S_ISSOCK(st.st_mode))
        return 0;
    int v;
    socklen_t vl = sizeof v;
    info->family = getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &vl) == 0 ? family_name(v) : "other";
    vl = sizeof v;
    info->socktype = getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &vl) == 0 ? type_name(v) : "other";
    vl = sizeof v;
    info->listening = getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &vl) == 0 && v;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        format_addr(&ss, sl, info->addr, sizeof info->addr);
    sl = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
        format_addr(&ss, sl, info->peer, sizeof info->peer);
    return 0;
}
