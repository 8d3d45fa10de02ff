/* epoll objects: what lets the upgrader sit behind one descriptor in
 * someone else's event loop. An epoll object's own descriptor is the one
 * an app polls; it stays the same until close(). Each watched descriptor
 * carries a Lua key (any value but nil), which wait() returns instead of a
 * number, so that the caller never has to map numbers back to its objects.
 * The keys live in a table referenced from the registry, indexed by
 * descriptor number: a descriptor is in the set at most once, as epoll
 * itself wants. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <unistd.h>
#include "base.h"

#define EPOLL_MAX_EVENTS 1024

static fdp_epoll *check_open(lua_State *L)
{
    fdp_epoll *e = check_object(L, 1, UV_EPOLL);
    if (e->fd < 0)
        luaL_error(L, "attempt to use a closed " EPOLL_MT);
    return e;
}

/* "r", "w" or "rw" -> epoll interest; raises on anything else. */
static uint32_t check_events(lua_State *L, int arg)
{
    const char *s = opt_string(L, arg, "r");
    uint32_t ev = 0;
    for (const char *p = s; *p; p++) {
        if (*p == 'r')
            ev |= EPOLLIN | EPOLLRDHUP;
        else if (*p == 'w')
            ev |= EPOLLOUT;
        else
            arg_error(L, arg, "events must be \"r\", \"w\" or \"rw\"");
    }
    arg_check(L, ev, arg, "events must be \"r\", \"w\" or \"rw\"");
    return ev;
}

static int ctl(lua_State *L, fdp_epoll *e, int op, int fd, uint32_t ev, const char *what)
{
    struct epoll_event event = { .events = ev, .data.fd = fd };
    if (epoll_ctl(e->fd, op, fd, &event) < 0)
        return push_error(L, what, -errno, NULL);
    return 0;
}

/* ep:add(x, key, [events]) -> true: watch x (anything fdpass.dup accepts). */
static int ep_add(lua_State *L)
{
    fdp_epoll *e = check_open(L);
    int fd = check_fd(L, 2);
    arg_check(L, !lua_isnoneornil(L, 3), 3, "a key (any value but nil) expected");
    uint32_t ev = check_events(L, 4);
    int r = ctl(L, e, EPOLL_CTL_ADD, fd, ev, "epoll add");
    if (r)
        return r;
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->keys);
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, fd);
    lua_pushboolean(L, 1);
    return 1;
}

/* ep:mod(x, events) -> true: change what x is watched for. */
static int ep_mod(lua_State *L)
{
    fdp_epoll *e = check_open(L);
    int fd = check_fd(L, 2);
    int r = ctl(L, e, EPOLL_CTL_MOD, fd, check_events(L, 3), "epoll mod");
    if (r)
        return r;
    lua_pushboolean(L, 1);
    return 1;
}

/* ep:del(x) -> true: stop watching x (do it before closing x: a closed
 * descriptor that another one still shares stays in the set). */
static int ep_del(lua_State *L)
{
    fdp_epoll *e = check_open(L);
    int fd = check_fd(L, 2);
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->keys);
    lua_pushnil(L);
    lua_rawseti(L, -2, fd);
    lua_pop(L, 1);
    int r = ctl(L, e, EPOLL_CTL_DEL, fd, 0, "epoll del");
    if (r)
        return r;
    lua_pushboolean(L, 1);
    return 1;
}

/* ep:wait([timeout], [max=64]) -> keys, events: the keys of the ready
 * descriptors and, at the same index, "r", "w" or "rw" (a hang-up or an
 * error counts as both). nil timeout: as long as it takes. */
static int ep_wait(lua_State *L)
{
    fdp_epoll *e = check_open(L);
    int timeout = check_timeout(L, 2);
    lua_Integer max = opt_integer(L, 3, 64);
    arg_check(L, max >= 1 && max <= EPOLL_MAX_EVENTS, 3, "max must be 1 to 1024");
    struct epoll_event events[EPOLL_MAX_EVENTS];
    int64_t deadline = timeout < 0 ? 0 : now_ms() + timeout;
    int n;
    while ((n = epoll_wait(e->fd, events, (int)max, timeout)) < 0 && errno == EINTR) {
        if (timeout > 0) {
            int64_t left = deadline - now_ms();
            timeout = left > 0 ? (int)left : 0;
        }
    }
    if (n < 0)
        return push_error(L, "epoll wait", -errno, NULL);
    lua_rawgeti(L, LUA_REGISTRYINDEX, e->keys);
    int keys = lua_gettop(L);
    lua_createtable(L, n, 0);
    lua_createtable(L, n, 0);
    int out = 0;
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, keys, events[i].data.fd);
        if (lua_isnil(L, -1)) { /* deleted by an earlier key's handler: skip */
            lua_pop(L, 1);
            continue;
        }
        uint32_t ev = events[i].events;
        int r = (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
        int w = (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
        out++;
        lua_rawseti(L, keys + 1, out);
        lua_pushstring(L, r && w ? "rw" : w ? "w" : "r");
        lua_rawseti(L, keys + 2, out);
    }
    return 2;
}

static int ep_getfd(lua_State *L)
{
    lua_pushinteger(L, check_open(L)->fd);
    return 1;
}

static int ep_close(lua_State *L)
{
    fdp_epoll *e = check_object(L, 1, UV_EPOLL);
    if (e->fd >= 0)
        close(e->fd); /* never retried: the descriptor is gone either way */
    e->fd = -1;
    luaL_unref(L, LUA_REGISTRYINDEX, e->keys); /* LUA_NOREF: nothing */
    e->keys = LUA_NOREF;
    return 0;
}

static int ep_tostring(lua_State *L)
{
    fdp_epoll *e = check_object(L, 1, UV_EPOLL);
    if (e->fd < 0)
        lua_pushliteral(L, EPOLL_MT " (closed)");
    else
        lua_pushfstring(L, EPOLL_MT " (%d)", e->fd);
    return 1;
}

/* fdpass.loop.epoll() -> epoll object (close-on-exec). */
static int l_epoll(lua_State *L)
{
    fdp_epoll *e = compat_newuserdata(L, sizeof *e);
    e->cls = CLASS_TAG(UV_EPOLL);
    e->fd = -1;
    e->keys = LUA_NOREF;
    lua_pushvalue(L, lua_upvalueindex(UV_EPOLL));
    lua_setmetatable(L, -2);
    lua_newtable(L);
    e->keys = luaL_ref(L, LUA_REGISTRYINDEX);
    e->fd = epoll_create1(EPOLL_CLOEXEC);
    if (e->fd < 0)
        return push_error(L, "epoll", -errno, NULL);
    return 1;
}

int open_epoll(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "add", ep_add },       { "mod", ep_mod },         { "del", ep_del },
        { "wait", ep_wait },     { "getfd", ep_getfd },     { "pollfd", ep_getfd },
        { "fileno", ep_getfd },  { "close", ep_close },     { NULL, NULL },
    };
    static const luaL_Reg meta[] = {
        { "__gc", ep_close }, { "__close", ep_close }, { "__tostring", ep_tostring }, { NULL, NULL },
    };
    static const luaL_Reg funcs[] = { { "epoll", l_epoll }, { NULL, NULL } };
    set_class(L, EPOLL_MT, methods, meta);
    set_funcs(L, funcs, "");
    return 0;
}
