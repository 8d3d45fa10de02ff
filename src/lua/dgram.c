/* Datagrams with descriptors to a named AF_UNIX socket: what the sd_notify
 * protocol (lua/fdpass/systemd.lua) travels on, and the receiving end for
 * whoever plays the service manager (the specs, a supervisor).
 *   fdpass.dgram_send(addr, data, [fds], [timeout]) -> bytes
 *   fdpass.dgram_bind(addr, [mode]) -> fd object (SO_PASSCRED on)
 *   fdpass.dgram_recv(sock, [maxbytes], [maxfds], [timeout]) -> data, fds, pid, uid, gid */
#define _GNU_SOURCE
#include <unistd.h>
#include "binding.h"

#define PENDING_MT "fdpass.dgram.pending"

/* Received descriptors on their way into fd objects: a raise (out of
 * memory) between the two leaves them to this userdata's __gc. */
typedef struct {
    size_t n;
    int fds[FDPASS_MAX_FDS_PER_SENDMSG];
} pending;

static int pending_gc(lua_State *L)
{
    pending *p = luaL_checkudata(L, 1, PENDING_MT);
    for (size_t i = 0; i < p->n; i++)
        if (p->fds[i] >= 0)
            close(p->fds[i]);
    p->n = 0;
    return 0;
}

static int l_dgram_send(lua_State *L)
{
    const char *addr = luaL_checkstring(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    int timeout = check_timeout(L, 4);
    int fds[FDPASS_MAX_FDS_PER_SENDMSG];
    size_t n = 0;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        lua_Integer want = luaL_len(L, 3);
        luaL_argcheck(L, want <= FDPASS_MAX_FDS_PER_SENDMSG, 3, "at most 253 descriptors in a datagram");
        luaL_getmetatable(L, FD_MT);
        int mt = lua_gettop(L);
        for (lua_Integer i = 1; i <= want; i++) {
            lua_geti(L, 3, i);
            fds[n++] = check_fd_in(L, -1, mt);
            lua_pop(L, 1);
        }
    }
    luaL_argcheck(L, len > 0, 2, "empty datagram");
    ssize_t r = fdpass_dgram_send(addr, data, len, fds, n, timeout);
    if (r < 0)
        return push_error(L, lua_pushfstring(L, "send to %s", addr), (int)r, NULL);
    lua_pushinteger(L, (lua_Integer)r);
    return 1;
}

static int l_dgram_bind(lua_State *L)
{
    const char *addr = luaL_checkstring(L, 1);
    lua_Integer mode = luaL_optinteger(L, 2, 0600);
    luaL_argcheck(L, mode > 0 && mode <= 0777, 2, "mode must be 1 .. 0777");
    push_fd(L, -1); /* before the socket exists: a memory error leaks nothing */
    int fd = fdpass_dgram_bind(addr, (unsigned)mode);
    if (fd < 0)
        return push_error(L, lua_pushfstring(L, "bind %s", addr), fd, NULL);
    *(int *)lua_touserdata(L, -1) = fd;
    return 1;
}

static int l_dgram_recv(lua_State *L)
{
    int sock = check_fd(L, 1);
    lua_Integer cap = luaL_optinteger(L, 2, 65536);
    lua_Integer maxfds = luaL_optinteger(L, 3, FDPASS_MAX_FDS_PER_SENDMSG);
    int timeout = check_timeout(L, 4);
    luaL_argcheck(L, cap > 0 && cap <= (1 << 30), 2, "size must be 1 .. 2^30");
    luaL_argcheck(L, maxfds >= 0 && maxfds <= FDPASS_MAX_FDS_PER_SENDMSG, 3,
                  "maxfds must be 0 .. 253");
    pending *p = compat_newuserdata(L, sizeof *p);
    p->n = 0;
    luaL_setmetatable(L, PENDING_MT);
    char *buf = compat_newuserdata(L, (size_t)cap);
    fdpass_cred cred;
    size_t nfds = 0;
    ssize_t r = fdpass_dgram_recv(sock, buf, (size_t)cap, p->fds, (size_t)maxfds, &nfds,
                                  &cred, timeout);
    if (r < 0)
        return push_error(L, "recv", (int)r, NULL);
    p->n = nfds;
    lua_pushlstring(L, buf, (size_t)r);
    push_fd_list(L, p->fds, nfds); /* marks each taken one -1 */
    p->n = 0;
    if (cred.pid > 0) {
        lua_pushinteger(L, cred.pid);
        lua_pushinteger(L, cred.uid);
        lua_pushinteger(L, cred.gid);
        return 5;
    }
    return 2;
}

int open_dgram(lua_State *L)
{
    static const luaL_Reg pending_meta[] = { { "__gc", pending_gc }, { NULL, NULL } };
    static const luaL_Reg funcs[] = {
        { "dgram_send", l_dgram_send }, { "dgram_bind", l_dgram_bind },
        { "dgram_recv", l_dgram_recv }, { NULL, NULL } };
    luaL_newmetatable(L, PENDING_MT);
    luaL_setfuncs(L, pending_meta, 0);
    lua_pop(L, 1);
    luaL_setfuncs(L, funcs, 0);
    return 0;
}
