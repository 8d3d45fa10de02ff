/* The socket kit (fdpass.net): TCP listeners and connections and a
 * non-blocking accept, for loops without an event library; and AF_UNIX
 * datagrams with descriptors and the sender's credentials, what the
 * sd_notify protocol travels on (lua/fdpass/systemd.lua). */
#define _GNU_SOURCE
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "base.h"

static int check_port(lua_State *L, int arg)
{
    lua_Integer port = check_integer(L, arg);
    arg_check(L, port >= 0 && port <= 65535, arg, "port must be 0 .. 65535");
    return (int)port;
}

static int resolve(lua_State *L, const char *host, const char *port, int passive,
                   struct addrinfo **res)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV |
                                          (passive ? AI_PASSIVE : 0) };
    int r = getaddrinfo(host, port, &hints, res);
    if (r != 0) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s %s: %s", passive ? "listen" : "connect", host, gai_strerror(r));
        lua_pushliteral(L, "EINVAL");
        return 3;
    }
    return 0;
}

/* fdpass.net.tcp_listen(host, port, [backlog]) -> fd object (non-blocking):
 * numeric addresses only; port 0 picks one (see fd:info().addr). */
static int l_tcp_listen(lua_State *L)
{
    const char *host = check_string(L, 1);
    int portn = check_port(L, 2);
    lua_Integer backlog = opt_integer(L, 3, SOMAXCONN);
    arg_check(L, backlog >= 0 && backlog <= 65535, 3, "backlog must be 0 .. 65535");
    const char *port = lua_pushfstring(L, "%d", portn);
    struct addrinfo *ai;
    if (resolve(L, host, port, 1, &ai))
        return 3;
    fdp_fd *f = new_fd(L);
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, (int)backlog) < 0) {
        int e = -errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return push_error(L, lua_pushfstring(L, "listen %s:%s", host, port), e, NULL);
    }
    freeaddrinfo(ai);
    set_fd(L, -1, f, fd);
    return 1;
}

/* fdpass.net.tcp_connect(host, port, [timeout]) -> fd object (non-blocking). */
static int l_tcp_connect(lua_State *L)
{
    const char *host = check_string(L, 1);
    int portn = check_port(L, 2);
    int timeout = check_timeout(L, 3);
    const char *port = lua_pushfstring(L, "%d", portn);
    struct addrinfo *ai;
    if (resolve(L, host, port, 0, &ai))
        return 3;
    fdp_fd *f = new_fd(L);
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), e = 0;
    if (fd < 0)
        e = -errno;
    else if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        e = -errno;
        if (e == -EINPROGRESS) {
            struct pollfd p = { .fd = fd, .events = POLLOUT };
            int r;
            do
                r = poll(&p, 1, timeout);
            while (r < 0 && errno == EINTR);
            socklen_t len = sizeof e;
            if (r == 0)
                e = -ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0)
                e = -e;
            else
                e = -errno;
        }
    }
    freeaddrinfo(ai);
    if (e) {
        if (fd >= 0)
            close(fd);
        return push_error(L, lua_pushfstring(L, "connect %s:%s", host, port), e, NULL);
    }
    int one = 1; /* requests are small: do not let Nagle hold them back */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    set_fd(L, -1, f, fd);
    return 1;
}

/* fdpass.net.accept(listener) -> fd object (non-blocking) | nil, msg, "EAGAIN" */
static int l_accept(lua_State *L)
{
    int lfd = check_fd(L, 1);
    fdp_fd *f = new_fd(L);
    int fd;
    do
        fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
    if (fd < 0)
        return push_error(L, "accept", -errno, NULL);
    set_fd(L, -1, f, fd);
    return 1;
}

/* ---- datagrams ------------------------------------------------------------
 *   dgram_send(addr, data, [fds], [timeout]) -> bytes
 *   dgram_bind(addr, [mode]) -> fd object (SO_PASSCRED on)
 *   dgram_recv(sock, [maxbytes], [maxfds], [timeout]) -> data, fds, pid, uid, gid */

static int l_dgram_send(lua_State *L)
{
    const char *addr = check_string(L, 1);
    size_t len;
    const char *data = check_lstring(L, 2, &len);
    int timeout = check_timeout(L, 4);
    int fds[FDPASS_MAX_FDS_PER_SENDMSG];
    size_t n = 0;
    if (!lua_isnoneornil(L, 3)) {
        check_table(L, 3);
        size_t want = (size_t)lua_rawlen(L, 3);
        arg_check(L, want <= FDPASS_MAX_FDS_PER_SENDMSG, 3, "at most 253 descriptors in a datagram");
        for (size_t i = 1; i <= want; i++) {
            lua_rawgeti(L, 3, (int)i);
            fds[n++] = check_fd_at(L, -1, 3);
            lua_pop(L, 1);
        }
    }
    arg_check(L, len > 0, 2, "empty datagram");
    ssize_t r = fdpass_dgram_send(addr, data, len, fds, n, timeout);
    if (r < 0)
        return push_error(L, lua_pushfstring(L, "send to %s", addr), (int)r, NULL);
    lua_pushinteger(L, (lua_Integer)r);
    return 1;
}

static int l_dgram_bind(lua_State *L)
{
    const char *addr = check_string(L, 1);
    lua_Integer mode = opt_integer(L, 2, 0600);
    arg_check(L, mode > 0 && mode <= 0777, 2, "mode must be 1 .. 0777");
    fdp_fd *f = new_fd(L); /* before the socket exists: a memory error leaks nothing */
    int fd = fdpass_dgram_bind(addr, (unsigned)mode);
    if (fd < 0)
        return push_error(L, lua_pushfstring(L, "bind %s", addr), fd, NULL);
    set_fd(L, -1, f, fd);
    return 1;
}

/* Received descriptors on their way into fd objects: a raise (out of
 * memory) between the two leaves them to this fd set's __gc. */
static int l_dgram_recv(lua_State *L)
{
    int sock = check_fd(L, 1);
    lua_Integer cap = opt_integer(L, 2, 65536);
    lua_Integer maxfds = opt_integer(L, 3, FDPASS_MAX_FDS_PER_SENDMSG);
    int timeout = check_timeout(L, 4);
    arg_check(L, cap > 0 && cap <= (1 << 30), 2, "size must be 1 .. 2^30");
    arg_check(L, maxfds >= 0 && maxfds <= FDPASS_MAX_FDS_PER_SENDMSG, 3, "maxfds must be 0 .. 253");
    fdp_fdset *p = new_fdset(L, FDPASS_MAX_FDS_PER_SENDMSG);
    char *buf = compat_newuserdata(L, (size_t)cap);
    fdpass_cred cred;
    size_t nfds = 0;
    ssize_t r = fdpass_dgram_recv(sock, buf, (size_t)cap, p->fds, (size_t)maxfds, &nfds, &cred, timeout);
    if (r < 0)
        return push_error(L, "recv", (int)r, NULL);
    p->n = nfds;
    lua_pushlstring(L, buf, (size_t)r);
    push_fd_list(L, p->fds, nfds, 0); /* marks each taken one -1 */
    p->n = 0;
    if (cred.pid > 0) {
        lua_pushinteger(L, cred.pid);
        lua_pushinteger(L, cred.uid);
        lua_pushinteger(L, cred.gid);
        return 5;
    }
    return 2;
}

int open_net(lua_State *L)
{
    static const luaL_Reg funcs[] = {
        { "tcp_listen", l_tcp_listen }, { "tcp_connect", l_tcp_connect }, { "accept", l_accept },
        { "dgram_send", l_dgram_send }, { "dgram_bind", l_dgram_bind },   { "dgram_recv", l_dgram_recv },
        { NULL, NULL } };
    set_funcs(L, funcs, "");
    return 0;
}
