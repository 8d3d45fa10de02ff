/* Servers: a listening AF_UNIX socket that accepts channels; all their
 * methods, and the functions that make one: listen, and server, which
 * adopts a listening socket this process was handed (an upgrade's new copy,
 * socket activation). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include "base.h"

static const char *const kind_names[] = { "seqpacket", "stream", NULL };
static const int kind_types[] = { SOCK_SEQPACKET, SOCK_STREAM };

static fdp_server *check_server(lua_State *L)
{
    fdp_server *s = check_object(L, 1, UV_SERVER);
    if (s->fd < 0)
        luaL_error(L, "attempt to use a closed fdpass.server");
    return s;
}

/* A closed server object, on top. */
static fdp_server *new_server(lua_State *L)
{
    fdp_server *s = compat_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->cls = CLASS_TAG(UV_SERVER);
    s->fd = -1;
    lua_pushvalue(L, lua_upvalueindex(UV_SERVER));
    lua_setmetatable(L, -2);
    return s;
}

/* Remembers which file the path names now, so that unlink() removes that
 * one and no other. */
static void note_file(fdp_server *s)
{
    struct stat st;
    if (s->addr[0] && s->addr[0] != '@' && stat(s->addr, &st) == 0 && S_ISSOCK(st.st_mode)) {
        s->dev = st.st_dev;
        s->ino = st.st_ino;
    }
}

/* fdpass.listen(addr, [kind | {kind=, mode=, backlog=}]) */
static int l_listen(lua_State *L)
{
    static const char *const names[] = { "kind", "mode", "backlog", NULL };
    const char *addr = check_string(L, 1);
    lua_settop(L, 2);
    if (lua_type(L, 2) == LUA_TSTRING) {
        lua_pushvalue(L, 2);
        lua_pushnil(L);
        lua_pushnil(L);
    } else if (!lua_isnil(L, 2) && !lua_istable(L, 2)) {
        return type_error(L, 2, "table or kind");
    } else if (check_options(L, 2, names)) {
        lua_getfield(L, 2, "kind");
        lua_getfield(L, 2, "mode");
        lua_getfield(L, 2, "backlog");
    } else {
        lua_settop(L, 5);
    }
    /* the options are at 3, 4, 5, but errors name them as argument 2 */
    int type = SOCK_SEQPACKET;
    if (!lua_isnil(L, 3)) {
        const char *k = lua_tostring(L, 3);
        int i = 0;
        while (k && kind_names[i] && strcmp(kind_names[i], k) != 0)
            i++;
        if (!k || !kind_names[i])
            return arg_error(L, 2, lua_pushfstring(L, "invalid option '%s'", k ? k : luaL_typename(L, 3)));
        type = kind_types[i];
    }
    int ok = 1;
    lua_Integer mode = lua_isnil(L, 4) ? 0600 : lua_tointegerx(L, 4, &ok);
    arg_check(L, ok && mode > 0 && mode <= 0777, 2, "mode must be 1 .. 0777");
    lua_Integer backlog = lua_isnil(L, 5) ? 0 : lua_tointegerx(L, 5, &ok);
    arg_check(L, ok && backlog >= 0 && backlog <= 65535, 2, "backlog must be 0 .. 65535");
    fdp_server *s = new_server(L);
    int fd = fdpass_listen(addr, type, (int)backlog, (unsigned)mode);
    if (fd < 0)
        return push_error(L, lua_pushfstring(L, "listen %s", addr), fd, NULL);
    s->fd = fd;
    s->type = type;
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    note_file(s);
    return 1;
}

/* The address a bound AF_UNIX socket has, as listen takes it. */
static void socket_address(int fd, char *out, size_t cap)
{
    struct sockaddr_un sa;
    socklen_t len = sizeof sa;
    out[0] = '\0';
    if (getsockname(fd, (struct sockaddr *)&sa, &len) < 0 || len <= offsetof(struct sockaddr_un, sun_path))
        return;
    size_t n = len - offsetof(struct sockaddr_un, sun_path);
    if (sa.sun_path[0] == '\0') /* abstract: "@" and exactly n - 1 bytes */
        snprintf(out, cap, "@%.*s", (int)(n - 1), sa.sun_path + 1);
    else
        snprintf(out, cap, "%.*s", (int)strnlen(sa.sun_path, n), sa.sun_path);
}

/* fdpass.server(x) -> server: adopts a listening AF_UNIX socket. An fd
 * object hands its descriptor over, an integer is adopted; anything else
 * (not a socket, not AF_UNIX, not listening) is refused and left as it was. */
static int l_server(lua_State *L)
{
    fdp_fd *f = to_object(L, 1, UV_FD);
    int fd = check_fd(L, 1); /* raises for a closed fd object */
    arg_check(L, f || lua_type(L, 1) == LUA_TNUMBER, 1, "fdpass.fd or integer expected");
    fdp_server *s = new_server(L);
    int domain, type, listening;
    socklen_t len = sizeof domain;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) < 0)
        return push_error(L, "server", -errno, NULL);
    if (domain != AF_UNIX)
        return push_error(L, "server", -EAFNOSUPPORT, "not an AF_UNIX socket");
    len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
        return push_error(L, "server", -errno, NULL);
    if (type != SOCK_SEQPACKET && type != SOCK_STREAM)
        return push_error(L, "server", -EPROTOTYPE, "neither a seqpacket nor a stream socket");
    len = sizeof listening;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0)
        return push_error(L, "server", -errno, NULL);
    if (!listening)
        return push_error(L, "server", -EINVAL, "not a listening socket");
    s->fd = fd;
    s->type = type;
    socket_address(fd, s->addr, sizeof s->addr);
    note_file(s);
    if (f)
        fd_closed(L, 1, f);
    return 1;
}

static int sv_accept(lua_State *L)
{
    fdp_server *s = check_server(L);
    int timeout = check_timeout(L, 2);
    fdp_channel *c = new_channel(L);
    int fd = fdpass_accept(s->fd, timeout);
    if (fd < 0)
        return push_error(L, "accept", fd, NULL);
    int r = open_channel_on(c, fd);
    if (r < 0) {
        close(fd);
        return push_error(L, "accept", r, NULL);
    }
    return 1;
}

static int sv_getfd(lua_State *L)
{
    lua_pushinteger(L, check_server(L)->fd);
    return 1;
}

static int sv_address(lua_State *L)
{
    lua_pushstring(L, check_server(L)->addr);
    return 1;
}

/* Removes the socket file, if it is still the one this server created or
 * adopted: after an upgrade the path may belong to a newer process. */
static int sv_unlink(lua_State *L)
{
    fdp_server *s = check_object(L, 1, UV_SERVER);
    struct stat st;
    if (s->addr[0] == '@' || !s->ino || stat(s->addr, &st) < 0 ||
        st.st_dev != s->dev || st.st_ino != s->ino) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (unlink(s->addr) < 0)
        return push_error(L, "unlink", -errno, NULL);
    s->ino = 0;
    lua_pushboolean(L, 1);
    return 1;
}

static int sv_close(lua_State *L)
{
    fdp_server *s = check_server(L);
    close(s->fd);
    s->fd = -1;
    lua_pushboolean(L, 1);
    return 1;
}

static int sv_gc(lua_State *L)
{
    fdp_server *s = check_object(L, 1, UV_SERVER);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    return 0;
}

static int sv_tostring(lua_State *L)
{
    fdp_server *s = check_object(L, 1, UV_SERVER);
    if (s->fd < 0)
        lua_pushliteral(L, "fdpass.server (closed)");
    else
        lua_pushfstring(L, "fdpass.server (%s)", s->addr);
    return 1;
}

int open_server(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "accept", sv_accept }, { "getfd", sv_getfd }, { "address", sv_address },
        { "unlink", sv_unlink }, { "close", sv_close }, { NULL, NULL } };
    static const luaL_Reg meta[] = {
        { "__gc", sv_gc }, { "__close", sv_gc }, { "__tostring", sv_tostring }, { NULL, NULL } };
    static const luaL_Reg funcs[] = { { "listen", l_listen }, { "server", l_server }, { NULL, NULL } };
    set_class(L, SERVER_MT, methods, meta);
    set_funcs(L, funcs, "");
    return 0;
}
