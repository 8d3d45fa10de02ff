/* fd objects: one owned descriptor, closed by close(), __close or __gc,
 * given away by detach() or file(); all their methods, and the module
 * functions that make or close them (fd, dup, info, close_all). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "base.h"

/* The open fd object at 1; raises for a closed one or anything else. */
static fdp_fd *check_open(lua_State *L)
{
    fdp_fd *f = to_object(L, 1, UV_FD);
    if (f && f->fd >= 0)
        return f;
    if (f)
        luaL_error(L, "attempt to use a closed fdpass.fd");
    return check_object(L, 1, UV_FD); /* raises */
}

/* Either kind of fd object, open or closed. */
static fdp_fd *check_any_fd(lua_State *L)
{
    return check_object(L, 1, UV_FD);
}

static int fd_fileno(lua_State *L)
{
    lua_pushinteger(L, check_open(L)->fd);
    return 1;
}

/* The hot path of every received descriptor: one comparison of
 * metatables, the close, and the object's metatable swapped for one
 * without __gc, so that the collector has nothing left to do for it. */
static int fd_close(lua_State *L)
{
    fdp_fd *f = check_open(L);
    int fd = f->fd;
    fd_closed(L, 1, f);
    /* Linux frees the descriptor even when close() reports EINTR or EIO:
     * never retry, or another thread's new descriptor could be closed. */
    if (close(fd) < 0 && errno != EINTR)
        return push_error(L, "close", -errno, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* __gc and __close of an open object. */
static int fd_gc(lua_State *L)
{
    fdp_fd *f = to_object(L, 1, UV_FD);
    if (f && f->fd >= 0) {
        int fd = f->fd;
        fd_closed(L, 1, f);
        close(fd);
    }
    return 0;
}

/* __close of a closed object: <close> needs one to be there. */
static int fd_noop(lua_State *L)
{
    (void)L;
    return 0;
}

static int fd_detach(lua_State *L)
{
    fdp_fd *f = check_open(L);
    lua_pushinteger(L, f->fd);
    fd_closed(L, 1, f);
    return 1;
}

static int fd_tostring(lua_State *L)
{
    fdp_fd *f = check_any_fd(L);
    if (f->fd < 0)
        lua_pushliteral(L, "fdpass.fd (closed)");
    else
        lua_pushfstring(L, "fdpass.fd (%d)", f->fd);
    return 1;
}

static void set_string(lua_State *L, const char *k, const char *v)
{
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void set_bool(lua_State *L, const char *k, int v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, k);
}

/* Shared by fd:info() and fdpass.info(any). */
static int push_info(lua_State *L, int fd)
{
    fdpass_fdinfo in;
    int r = fdpass_fdinfo_get(fd, &in);
    if (r < 0)
        return push_error(L, "info", r, NULL);
    lua_createtable(L, 0, 12);
    lua_pushinteger(L, fd);
    lua_setfield(L, -2, "fd");
    set_string(L, "kind", in.kind);
    set_bool(L, "cloexec", in.cloexec);
    set_bool(L, "nonblock", in.nonblock);
    if (in.path[0])
        set_string(L, "path", in.path);
    if (in.size >= 0) {
        lua_pushinteger(L, in.size);
        lua_setfield(L, -2, "size");
    }
    if (in.family) {
        set_string(L, "family", in.family);
        set_string(L, "socktype", in.socktype);
        set_bool(L, "listening", in.listening);
        if (in.addr[0])
            set_string(L, "addr", in.addr);
        if (in.peer[0])
            set_string(L, "peer", in.peer);
    }
    return 1;
}

static int fd_info(lua_State *L)
{
    return push_info(L, check_open(L)->fd);
}

/* The descriptor becomes a Lua io file, which owns it from now on. */
static int fd_file(lua_State *L)
{
    fdp_fd *fo = check_open(L);
    int fd = fo->fd;
    const char *mode = opt_string(L, 2, "r");
    /* as io.open: [rwa]%+?b* */
    size_t ml = mode[0] && strchr("rwa", mode[0]) ? 1 : 0;
    ml += ml && mode[ml] == '+';
    arg_check(L, ml && strspn(mode + ml, "b") == strlen(mode + ml), 2, "invalid mode");
    /* glibc's fdopen makes "a" set O_APPEND on the open file, which every
     * holder of it shares (the sender's copy too): "a" only where it is set. */
    if (mode[0] == 'a') {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0)
            return push_error(L, "file", -errno, NULL);
        if (!(fl & O_APPEND))
            return push_error(L, "file", -EINVAL, "mode \"a\" needs a descriptor opened with O_APPEND "
                              "(fdopen would set it on the open file, for every holder)");
    }
    if (!compat_newfile(L))
        return push_error(L, "file", -errno, NULL);
    FILE *f = fdopen(fd, mode);
    int err = errno;
    compat_setfile(L, -1, f);
    if (!f)
        return push_error(L, "file", -err, NULL);
    fd_closed(L, 1, fo);
    return 1;
}

/* fd:read([max=65536]) -> data | nil, msg, "EAGAIN" | "EOF" | ... */
static int fd_read(lua_State *L)
{
    int fd = check_open(L)->fd;
    lua_Integer max = opt_integer(L, 2, 65536);
    arg_check(L, max > 0 && max <= (1 << 30), 2, "size must be 1 .. 2^30");
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
    int fd = check_open(L)->fd;
    size_t len;
    const char *data = check_lstring(L, 2, &len);
    lua_Integer i = opt_integer(L, 3, 1);
    arg_check(L, i >= 1 && (size_t)i <= len + 1, 3, "position out of range");
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

/* fd:nonblock([on]) / fd:cloexec([on]): reads one flag (fcntl's get and
 * set commands, its bit) and sets or clears it when the argument is given;
 * returns whether it is set now. The only calls in fdpass that change a
 * flag, and only when asked: O_NONBLOCK belongs to the open file, which
 * other processes may share; FD_CLOEXEC is this process's own. */
static int fd_flag(lua_State *L, const char *what, int get, int set, int bit)
{
    int fd = check_open(L)->fd;
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

static int fd_cloexec(lua_State *L)
{
    return fd_flag(L, "cloexec", F_GETFD, F_SETFD, FD_CLOEXEC);
}

/* ---- module functions ----------------------------------------------------- */

/* fdpass.close_all(list): closes every entry of an array of integers (which
 * the caller owns, e.g. from fd:detach()) and fd objects (closed ones are
 * skipped) in one call; returns how many it closed. */
static int l_close_all(lua_State *L)
{
    check_table(L, 1);
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1), closed = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, (int)i);
        int fd = -1;
        fdp_fd *f;
        if (lua_type(L, -1) == LUA_TNUMBER) {
            int isint;
            lua_Integer v = lua_tointegerx(L, -1, &isint);
            arg_check(L, isint && v >= 0 && v <= INT32_MAX, 1, "descriptor must be a non-negative integer");
            fd = (int)v;
        } else if ((f = to_object(L, -1, UV_FD))) {
            fd = f->fd;
            if (fd >= 0)
                fd_closed(L, -1, f);
        } else {
            return arg_error(L, 1, "integers and fdpass.fd objects expected");
        }
        lua_pop(L, 1);
        if (fd >= 0) {
            close(fd); /* as fd:close(): never retried */
            closed++;
        }
    }
    lua_pushinteger(L, closed);
    return 1;
}

/* fdpass.fd(n): take ownership of descriptor n. */
static int l_adopt(lua_State *L)
{
    int ok;
    lua_Integer n = lua_tointegerx(L, 1, &ok);
    arg_check(L, lua_type(L, 1) == LUA_TNUMBER && ok && n >= 0 && n <= INT32_MAX, 1,
              "descriptor must be a non-negative integer");
    fdp_fd *f = new_fd(L);
    set_fd(L, -1, f, (int)n);
    return 1;
}

/* fdpass.dup(x): an fd object owning a new descriptor for the same file. */
static int l_dup(lua_State *L)
{
    int fd = check_fd(L, 1);
    fdp_fd *f = new_fd(L);
    int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (d < 0)
        return push_error(L, "dup", -errno, NULL);
    set_fd(L, -1, f, d);
    return 1;
}

static int l_info(lua_State *L)
{
    return push_info(L, check_fd(L, 1));
}

int open_fd(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "fileno", fd_fileno }, { "close", fd_close },       { "detach", fd_detach },
        { "info", fd_info },     { "file", fd_file },         { "read", fd_read },
        { "write", fd_write },   { "nonblock", fd_nonblock }, { "cloexec", fd_cloexec },
        { NULL, NULL } };
    static const luaL_Reg meta[] = {
        { "__gc", fd_gc }, { "__close", fd_gc }, { "__tostring", fd_tostring }, { NULL, NULL } };
    static const luaL_Reg closed_meta[] = {
        { "__close", fd_noop }, { "__tostring", fd_tostring }, { NULL, NULL } };
    static const luaL_Reg funcs[] = {
        { "fd", l_adopt }, { "dup", l_dup }, { "info", l_info }, { "close_all", l_close_all },
        { NULL, NULL } };
    set_class(L, FD_MT, methods, meta);
    /* the closed objects' metatable: the same methods, no __gc */
    luaL_getmetatable(L, FD_CLOSED_MT);
    set_funcs(L, closed_meta, "fd:");
    luaL_getmetatable(L, FD_MT);
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -3, "__index");
    lua_pop(L, 2);
    set_funcs(L, funcs, "");
    return 0;
}
