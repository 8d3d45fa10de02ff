/* Just enough non-blocking I/O for a server loop without an event library:
 * poll over any descriptors, TCP listen/connect/accept, read and write on
 * fd objects, and signals as a readable descriptor. The upgrade example and
 * its load client run on these; apps with LuaSocket, cqueues or luv keep
 * using theirs, since fdpass takes their objects as they are. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "binding.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* fdpass.poll(readers, writers, [timeout]) -> readable, writable: the same
 * objects, those that are ready (a hang-up or an error counts as readable,
 * so that the read reports it). No FD_SETSIZE limit. */
static int l_poll(lua_State *L)
{
    size_t nr = lua_isnoneornil(L, 1) ? 0 : (luaL_checktype(L, 1, LUA_TTABLE), (size_t)luaL_len(L, 1));
    size_t nw = lua_isnoneornil(L, 2) ? 0 : (luaL_checktype(L, 2, LUA_TTABLE), (size_t)luaL_len(L, 2));
    int timeout = check_timeout(L, 3);
    size_t n = nr + nw;
    struct pollfd *p = compat_newuserdata(L, (n ? n : 1) * sizeof *p);
    for (size_t i = 0; i < n; i++) {
        int list = i < nr ? 1 : 2;
        lua_geti(L, list, (lua_Integer)(i < nr ? i + 1 : i - nr + 1));
        p[i].fd = check_fd(L, -1);
        p[i].events = i < nr ? POLLIN : POLLOUT;
        p[i].revents = 0;
        lua_pop(L, 1);
    }
    int64_t until = timeout > 0 ? now_ms() + timeout : 0;
    int r;
    for (;;) {
        int wait = timeout;
        if (timeout > 0) {
            int64_t left = until - now_ms();
            wait = left > 0 ? (int)left : 0;
        }
        r = poll(p, (nfds_t)n, wait);
        if (r >= 0 || errno != EINTR)
            break;
    }
    if (r < 0)
        return push_error(L, "poll", -errno, NULL);
    lua_newtable(L);
    lua_newtable(L);
    lua_Integer ri = 0, wi = 0;
    for (size_t i = 0; i < n; i++) {
        if (!p[i].revents)
            continue;
        int list = i < nr ? 1 : 2;
        lua_geti(L, list, (lua_Integer)(i < nr ? i + 1 : i - nr + 1));
        lua_rawseti(L, i < nr ? -3 : -2, i < nr ? ++ri : ++wi);
    }
    return 2;
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

/* fdpass.tcp_listen(host, port, [backlog]) -> fd object (non-blocking):
 * numeric addresses only; port 0 picks one (see fd:info().addr). */
static int l_tcp_listen(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    int backlog = (int)luaL_optinteger(L, 3, SOMAXCONN); /* before the push below */
    const char *port = lua_pushfstring(L, "%d", (int)luaL_checkinteger(L, 2));
    struct addrinfo *ai;
    if (resolve(L, host, port, 1, &ai))
        return 3;
    push_fd(L, -1);
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, backlog) < 0) {
        int e = -errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(ai);
        return push_error(L, lua_pushfstring(L, "listen %s:%s", host, port), e, NULL);
    }
    freeaddrinfo(ai);
    *(int *)lua_touserdata(L, -1) = fd;
    return 1;
}

/* fdpass.tcp_connect(host, port, [timeout]) -> fd object (non-blocking). */
static int l_tcp_connect(lua_State *L)
{
    const char *host = luaL_checkstring(L, 1);
    int timeout = check_timeout(L, 3); /* before the push below */
    const char *port = lua_pushfstring(L, "%d", (int)luaL_checkinteger(L, 2));
    struct addrinfo *ai;
    if (resolve(L, host, port, 0, &ai))
        return 3;
    push_fd(L, -1);
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
    *(int *)lua_touserdata(L, -1) = fd;
    return 1;
}

/* fdpass.accept(listener) -> fd object (non-blocking) | nil, msg, "EAGAIN" */
static int l_accept(lua_State *L)
{
    int lfd = check_fd(L, 1);
    push_fd(L, -1);
    int fd;
    do
        fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    while (fd < 0 && (errno == EINTR || errno == ECONNABORTED));
    if (fd < 0)
        return push_error(L, "accept", -errno, NULL);
    *(int *)lua_touserdata(L, -1) = fd;
    return 1;
}

/* fd:read([max=65536]) -> data | nil, msg, "EAGAIN" | "EOF" | ... */
static int fd_read(lua_State *L)
{
    int fd = check_fd(L, 1);
    lua_Integer max = luaL_optinteger(L, 2, 65536);
    luaL_argcheck(L, max > 0 && max <= (1 << 30), 2, "size must be 1 .. 2^30");
    luaL_Buffer b;
    char *buf = luaL_buffinitsize(L, &b, (size_t)max);
    ssize_t n;
    do
        n = read(fd, buf, (size_t)max);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return push_error(L, "read", -errno, NULL);
    if (n == 0)
        return push_error(L, "read", FDPASS_EOF, "end of file");
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

/* fd:write(data, [i=1]) -> bytes written from position i | nil, msg, code.
 * A socket gets MSG_NOSIGNAL: a gone peer is EPIPE, not a dead process. */
static int fd_write(lua_State *L)
{
    int fd = check_fd(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    lua_Integer i = luaL_optinteger(L, 3, 1);
    luaL_argcheck(L, i >= 1 && (size_t)i <= len + 1, 3, "position out of range");
    data += i - 1;
    len -= (size_t)(i - 1);
    ssize_t n;
    do {
        n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK)
            n = write(fd, data, len);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return push_error(L, "write", -errno, NULL);
    lua_pushinteger(L, n);
    return 1;
}

static const struct { const char *name; int sig; } signames[] = {
    { "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT }, { "USR1", SIGUSR1 },
    { "USR2", SIGUSR2 }, { "TERM", SIGTERM }, { "CHLD", SIGCHLD }, { "ALRM", SIGALRM },
    { NULL, 0 } };

static const char *signame(int sig)
{
    for (int i = 0; signames[i].name; i++)
        if (signames[i].sig == sig)
            return signames[i].name;
    return "?";
}

/* fdpass.signals({"HUP", "USR2"}) -> fd object: those signals are blocked
 * and arrive on this descriptor instead (signalfd), for a poll loop.
 * fdpass.spawn starts children with no signal blocked. */
static int l_signals(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    sigset_t set;
    sigemptyset(&set);
    for (lua_Integer i = 1; i <= luaL_len(L, 1); i++) {
        lua_geti(L, 1, i);
        const char *name = luaL_checkstring(L, -1);
        if (strncmp(name, "SIG", 3) == 0)
            name += 3;
        int j = 0;
        while (signames[j].name && strcmp(signames[j].name, name) != 0)
            j++;
        if (!signames[j].name)
            return luaL_error(L, "signals: unknown signal '%s'", name);
        sigaddset(&set, signames[j].sig);
        lua_pop(L, 1);
    }
    push_fd(L, -1);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return push_error(L, "signals", -errno, NULL);
    int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return push_error(L, "signals", -errno, NULL);
    *(int *)lua_touserdata(L, -1) = fd;
    return 1;
}

/* fdpass.readsignal(fd) -> "HUP" | nil, msg, "EAGAIN" */
static int l_readsignal(lua_State *L)
{
    int fd = check_fd(L, 1);
    struct signalfd_siginfo si;
    ssize_t n;
    do
        n = read(fd, &si, sizeof si);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return push_error(L, "readsignal", -errno, NULL);
    if (n != sizeof si)
        return push_error(L, "readsignal", -EIO, "short read from signalfd");
    lua_pushstring(L, signame((int)si.ssi_signo));
    return 1;
}

/* fdpass.pipe() -> r, w: fd objects, close-on-exec, blocking. */
static int l_pipe(lua_State *L)
{
    push_fd(L, -1);
    push_fd(L, -1);
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return push_error(L, "pipe", -errno, NULL);
    *(int *)lua_touserdata(L, -2) = p[0];
    *(int *)lua_touserdata(L, -1) = p[1];
    return 2;
}

/* fd:nonblock([on]) -> whether O_NONBLOCK is set, after setting it if on is
 * given. The one call in fdpass that changes a flag, and only when asked:
 * the flag belongs to the open file, which other processes may share. */
int fd_flag(lua_State *L, const char *what, int get, int set, int bit)
{
    int fd = check_fd(L, 1);
    int fl = fcntl(fd, get);
    if (fl < 0)
        return push_error(L, what, -errno, NULL);
    if (!lua_isnoneornil(L, 2)) {
        int want = lua_toboolean(L, 2) ? (fl | bit) : (fl & ~bit);
        if (want != fl && fcntl(fd, set, want) < 0)
            return push_error(L, what, -errno, NULL);
        fl = want;
    }
    lua_pushboolean(L, (fl & bit) != 0);
    return 1;
}

static int fd_nonblock(lua_State *L)
{
    return fd_flag(L, "nonblock", F_GETFL, F_SETFL, O_NONBLOCK);
}

/* fdpass.monotonic() -> seconds (a float) on CLOCK_MONOTONIC, for deadlines. */
static int l_monotonic(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec / 1e9);
    return 1;
}

int open_netio(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "read", fd_read }, { "write", fd_write }, { "nonblock", fd_nonblock }, { NULL, NULL } };
    static const luaL_Reg funcs[] = {
        { "poll", l_poll },       { "tcp_listen", l_tcp_listen }, { "tcp_connect", l_tcp_connect },
        { "accept", l_accept },   { "signals", l_signals },       { "readsignal", l_readsignal },
        { "pipe", l_pipe },       { "monotonic", l_monotonic },
        { NULL, NULL } };
    add_fd_methods(L, methods);
    luaL_setfuncs(L, funcs, 0);
    return 0;
}
