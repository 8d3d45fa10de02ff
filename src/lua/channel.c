/* Channels (a connected AF_UNIX socket with its framing state) and servers
 * (a listening one). */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "binding.h"

typedef struct {
    int fd;              /* first: check_fd reads it */
    fdpass_chan *chan;
    int *handoff;        /* received descriptors not yet in fd objects */
    size_t handoff_n;
    char *rbuf;          /* recvmsg's buffer, kept up to 64 KiB: a new one */
    size_t rcap;         /* per call cost more than the recvmsg (bench/) */
    int raw[FDPASS_MAX_FDS_PER_SENDMSG];
} lchannel;

typedef struct {
    int fd;              /* first: check_fd reads it */
    int type;
    dev_t dev;           /* the socket file we created, for unlink() */
    ino_t ino;
    char addr[108];
} lserver;

static const char *const kind_names[] = { "seqpacket", "stream", NULL };
static const int kind_types[] = { SOCK_SEQPACKET, SOCK_STREAM };

static int check_kind(lua_State *L, int idx)
{
    return kind_types[luaL_checkoption(L, idx, "seqpacket", kind_names)];
}

/* Descriptors that a raised error kept from reaching an fd object. */
static void close_handoff(lchannel *c)
{
    for (size_t i = 0; i < c->handoff_n; i++)
        if (c->handoff[i] >= 0)
            close(c->handoff[i]);
    c->handoff_n = 0;
}

/* recv's and recvmsg's last argument: "objects" (an fd object per
 * descriptor, the default) or "set" (one fdpass.fdset holding them all:
 * an object per descriptor costs more than the system call, see
 * bench/RESULTS.md). */
static int check_as(lua_State *L, int idx)
{
    static const char *const names[] = { "objects", "set", NULL };
    return luaL_checkoption(L, idx, "objects", names);
}

static void hand_over(lua_State *L, lchannel *c, int *fds, size_t n, int as_set)
{
    c->handoff = fds;
    c->handoff_n = n; /* a raise on the way leaves the rest to close_handoff */
    if (as_set)
        push_fd_set(L, fds, n);
    else
        push_fd_list(L, fds, n);
    c->handoff_n = 0;
}

static lchannel *check_channel(lua_State *L, int idx)
{
    lchannel *c = luaL_checkudata(L, idx, CHANNEL_MT);
    if (c->fd < 0)
        luaL_error(L, "attempt to use a closed fdpass.channel");
    close_handoff(c);
    return c;
}

/* Wraps a connected socket; on failure it is closed and an error pushed. */
static int push_channel(lua_State *L, int fd, const char *what)
{
    lchannel *c = compat_newuserdata(L, sizeof *c);
    c->fd = -1;
    c->chan = NULL;
    c->handoff_n = 0;
    c->rbuf = NULL;
    c->rcap = 0;
    luaL_setmetatable(L, CHANNEL_MT);
    c->chan = fdpass_chan_new(fd, NULL);
    if (!c->chan) {
        int e = -errno;
        close(fd);
        return push_error(L, what, e, NULL);
    }
    c->fd = fd;
    return 1;
}

static void release_channel(lchannel *c)
{
    close_handoff(c);
    fdpass_chan_free(c->chan);
    c->chan = NULL;
    free(c->rbuf);
    c->rbuf = NULL;
    c->rcap = 0;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

/* The descriptors of a send: a stack array for one sendmsg's worth, a
 * userdata (collected, so a raised error leaks nothing) beyond that. */
static int *collect_fds(lua_State *L, int idx, int *small, size_t *n)
{
    *n = 0;
    if (lua_isnoneornil(L, idx))
        return small;
    luaL_checktype(L, idx, LUA_TTABLE);
    size_t len = (size_t)luaL_len(L, idx);
    int *fds = small;
    if (len > FDPASS_MAX_FDS_PER_SENDMSG)
        fds = compat_newuserdata(L, len * sizeof(int)); /* stays on the stack */
    luaL_getmetatable(L, FD_MT); /* stays too */
    int mt = lua_gettop(L);
    for (size_t i = 0; i < len; i++) {
        lua_geti(L, idx, (lua_Integer)i + 1);
        fds[i] = check_fd_in(L, -1, mt);
        lua_pop(L, 1);
    }
    *n = len;
    return fds;
}

static int ch_send(lua_State *L)
{
    lchannel *c = check_channel(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    int timeout = check_timeout(L, 4);
    int small[FDPASS_MAX_FDS_PER_SENDMSG];
    size_t n;
    int *fds = collect_fds(L, 3, small, &n);
    int r = fdpass_send(c->chan, data, len, fds, n, timeout);
    if (r < 0)
        return push_error(L, "send", r, fdpass_chan_detail(c->chan));
    lua_pushboolean(L, 1);
    return 1;
}

static int ch_flush(lua_State *L)
{
    lchannel *c = check_channel(L, 1);
    int r = fdpass_flush(c->chan, check_timeout(L, 2));
    if (r < 0)
        return push_error(L, "flush", r, fdpass_chan_detail(c->chan));
    lua_pushboolean(L, 1);
    return 1;
}

static int ch_pending(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)fdpass_pending(check_channel(L, 1)->chan));
    return 1;
}

static int ch_recv(lua_State *L)
{
    lchannel *c = check_channel(L, 1);
    int timeout = check_timeout(L, 2);
    int as_set = check_as(L, 3);
    fdpass_msg m;
    int r = fdpass_recv(c->chan, &m, timeout);
    if (r < 0)
        return push_error(L, "recv", r, fdpass_chan_detail(c->chan));
    /* Hand the descriptors over before anything else can raise. */
    c->handoff = m.fds;
    c->handoff_n = m.nfds;
    lua_pushlstring(L, m.data, m.len);
    hand_over(L, c, m.fds, m.nfds, as_set);
    return 2;
}

static int ch_sendmsg(lua_State *L)
{
    lchannel *c = check_channel(L, 1);
    size_t len;
    const char *data = luaL_checklstring(L, 2, &len);
    int timeout = check_timeout(L, 4);
    int small[FDPASS_MAX_FDS_PER_SENDMSG];
    size_t n;
    int *fds = collect_fds(L, 3, small, &n);
    if (n > FDPASS_MAX_FDS_PER_SENDMSG)
        return luaL_error(L, "sendmsg: at most %d descriptors in one message (send() splits)",
                          FDPASS_MAX_FDS_PER_SENDMSG);
    luaL_argcheck(L, len > 0, 2, "empty payload (the kernel would drop descriptors)");
    ssize_t r = fdpass_sendmsg(c->fd, data, len, fds, n, timeout);
    if (r < 0)
        return push_error(L, "sendmsg", (int)r, NULL);
    lua_pushinteger(L, r);
    return 1;
}

static int ch_recvmsg(lua_State *L)
{
    lchannel *c = check_channel(L, 1);
    lua_Integer cap = luaL_optinteger(L, 2, 65536);
    lua_Integer maxfds = luaL_optinteger(L, 3, FDPASS_MAX_FDS_PER_SENDMSG);
    int timeout = check_timeout(L, 4);
    int as_set = check_as(L, 5);
    luaL_argcheck(L, cap > 0 && cap <= (1 << 30), 2, "size must be 1 .. 2^30");
    luaL_argcheck(L, maxfds >= 0 && maxfds <= FDPASS_MAX_FDS_PER_SENDMSG, 3,
                  "maxfds must be 0 .. 253");
    if ((size_t)cap > c->rcap) {
        char *buf = realloc(c->rbuf, (size_t)cap);
        if (!buf)
            return luaL_error(L, "not enough memory");
        c->rbuf = buf;
        c->rcap = (size_t)cap;
    }
    size_t nfds = 0;
    ssize_t r = fdpass_recvmsg(c->fd, c->rbuf, (size_t)cap, c->raw, (size_t)maxfds, &nfds, timeout);
    if (r < 0)
        return push_error(L, "recvmsg", (int)r, NULL);
    c->handoff = c->raw;
    c->handoff_n = nfds;
    lua_pushlstring(L, c->rbuf, (size_t)r);
    if (c->rcap > 65536) { /* do not keep a large one */
        free(c->rbuf);
        c->rbuf = NULL;
        c->rcap = 0;
    }
    hand_over(L, c, c->raw, nfds, as_set);
    return 2;
}

static int ch_peercred(lua_State *L)
{
    lchannel *c = check_channel(L, 1);
    pid_t pid;
    uid_t uid;
    gid_t gid;
    int r = fdpass_peercred(c->fd, &pid, &uid, &gid);
    if (r < 0)
        return push_error(L, "peercred", r, NULL);
    lua_pushinteger(L, pid);
    lua_pushinteger(L, uid);
    lua_pushinteger(L, gid);
    return 3;
}

static int ch_getfd(lua_State *L)
{
    lua_pushinteger(L, check_channel(L, 1)->fd);
    return 1;
}

static int ch_kind(lua_State *L)
{
    lchannel *c = check_channel(L, 1);
    int type;
    socklen_t tl = sizeof type;
    getsockopt(c->fd, SOL_SOCKET, SO_TYPE, &type, &tl);
    lua_pushstring(L, type == SOCK_STREAM ? "stream" : "seqpacket");
    return 1;
}

/* ch:limits([{max_payload=, max_fds=}]) -> the limits in force. */
static int ch_limits(lua_State *L)
{
    lchannel *c = check_channel(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        fdpass_limits set = { 0, 0 };
        lua_getfield(L, 2, "max_payload");
        lua_getfield(L, 2, "max_fds");
        lua_Integer mp = luaL_optinteger(L, -2, 0), mf = luaL_optinteger(L, -1, 0);
        /* 0 would silently mean "unchanged" below: refuse it, as the text says */
        luaL_argcheck(L, (mp > 0 || lua_isnil(L, -2)) && (mf > 0 || lua_isnil(L, -1)), 2,
                      "limits must be positive integers");
        set.max_payload = (size_t)mp;
        set.max_fds = (size_t)mf;
        fdpass_chan_limits(c->chan, NULL, &set);
        lua_pop(L, 2);
    }
    fdpass_limits got;
    fdpass_chan_limits(c->chan, &got, NULL);
    lua_createtable(L, 0, 2);
    lua_pushinteger(L, (lua_Integer)got.max_payload);
    lua_setfield(L, -2, "max_payload");
    lua_pushinteger(L, (lua_Integer)got.max_fds);
    lua_setfield(L, -2, "max_fds");
    return 1;
}

static int ch_close(lua_State *L)
{
    lchannel *c = check_channel(L, 1);
    release_channel(c);
    lua_pushboolean(L, 1);
    return 1;
}

static int ch_gc(lua_State *L)
{
    release_channel(luaL_checkudata(L, 1, CHANNEL_MT));
    return 0;
}

static int ch_tostring(lua_State *L)
{
    lchannel *c = luaL_checkudata(L, 1, CHANNEL_MT);
    if (c->fd < 0)
        lua_pushliteral(L, "fdpass.channel (closed)");
    else
        lua_pushfstring(L, "fdpass.channel (%d)", c->fd);
    return 1;
}

/* ---- module functions -------------------------------------------------- */

static int l_socketpair(lua_State *L)
{
    int type = check_kind(L, 1), sv[2];
    int r = fdpass_socketpair(type, sv);
    if (r < 0)
        return push_error(L, "socketpair", r, NULL);
    if (push_channel(L, sv[0], "socketpair") != 1) {
        close(sv[1]);
        return 3;
    }
    if (push_channel(L, sv[1], "socketpair") != 1)
        return 3; /* the first channel is collected */
    return 2;
}

/* fdpass.channel(x): a channel owning a connected socket. An fd object
 * hands its descriptor over; an integer is adopted. */
static int l_channel(lua_State *L)
{
    int fd;
    if (luaL_testudata(L, 1, FD_MT)) {
        lua_getfield(L, 1, "detach");
        lua_pushvalue(L, 1);
        lua_call(L, 1, 1);
        fd = (int)lua_tointeger(L, -1);
    } else {
        luaL_checktype(L, 1, LUA_TNUMBER);
        fd = check_fd(L, 1);
    }
    return push_channel(L, fd, "channel");
}

static int l_connect(lua_State *L)
{
    const char *addr = luaL_checkstring(L, 1);
    int timeout = check_timeout(L, 2);
    int type = check_kind(L, 3);
    int fd = fdpass_connect(addr, type, timeout);
    if (fd < 0)
        return push_error(L, lua_pushfstring(L, "connect %s", addr), fd, NULL);
    return push_channel(L, fd, "connect");
}

/* ---- servers ----------------------------------------------------------- */

static lserver *check_server(lua_State *L, int idx)
{
    lserver *s = luaL_checkudata(L, idx, SERVER_MT);
    if (s->fd < 0)
        luaL_error(L, "attempt to use a closed fdpass.server");
    return s;
}

/* core.listen(addr, kind, mode, backlog) */
static int l_listen(lua_State *L)
{
    const char *addr = luaL_checkstring(L, 1);
    int type = check_kind(L, 2);
    lua_Integer mode = luaL_optinteger(L, 3, 0600);
    lua_Integer backlog = luaL_optinteger(L, 4, 0);
    luaL_argcheck(L, mode > 0 && mode <= 0777, 3, "mode must be 1 .. 0777");
    lserver *s = compat_newuserdata(L, sizeof *s);
    memset(s, 0, sizeof *s);
    s->fd = -1;
    luaL_setmetatable(L, SERVER_MT);
    int fd = fdpass_listen(addr, type, (int)backlog, (unsigned)mode);
    if (fd < 0)
        return push_error(L, lua_pushfstring(L, "listen %s", addr), fd, NULL);
    s->fd = fd;
    s->type = type;
    snprintf(s->addr, sizeof s->addr, "%s", addr);
    struct stat st;
    if (addr[0] != '@' && stat(addr, &st) == 0) {
        s->dev = st.st_dev;
        s->ino = st.st_ino;
    }
    return 1;
}

static int sv_accept(lua_State *L)
{
    lserver *s = check_server(L, 1);
    int fd = fdpass_accept(s->fd, check_timeout(L, 2));
    if (fd < 0)
        return push_error(L, "accept", fd, NULL);
    return push_channel(L, fd, "accept");
}

static int sv_getfd(lua_State *L)
{
    lua_pushinteger(L, check_server(L, 1)->fd);
    return 1;
}

static int sv_address(lua_State *L)
{
    lua_pushstring(L, check_server(L, 1)->addr);
    return 1;
}

/* Removes the socket file, if it is still the one this server created:
 * after an upgrade the path may belong to a newer process. */
static int sv_unlink(lua_State *L)
{
    lserver *s = luaL_checkudata(L, 1, SERVER_MT);
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
    lserver *s = check_server(L, 1);
    close(s->fd);
    s->fd = -1;
    lua_pushboolean(L, 1);
    return 1;
}

static int sv_gc(lua_State *L)
{
    lserver *s = luaL_checkudata(L, 1, SERVER_MT);
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    return 0;
}

static int sv_tostring(lua_State *L)
{
    lserver *s = luaL_checkudata(L, 1, SERVER_MT);
    if (s->fd < 0)
        lua_pushliteral(L, "fdpass.server (closed)");
    else
        lua_pushfstring(L, "fdpass.server (%s)", s->addr);
    return 1;
}

int open_channel(lua_State *L)
{
    static const luaL_Reg ch_methods[] = {
        { "send", ch_send },       { "recv", ch_recv },         { "flush", ch_flush },
        { "pending", ch_pending }, { "sendmsg", ch_sendmsg },   { "recvmsg", ch_recvmsg },
        { "peercred", ch_peercred }, { "getfd", ch_getfd },     { "kind", ch_kind },
        { "limits", ch_limits },   { "close", ch_close },       { NULL, NULL } };
    static const luaL_Reg ch_meta[] = {
        { "__gc", ch_gc }, { "__close", ch_gc }, { "__tostring", ch_tostring }, { NULL, NULL } };
    static const luaL_Reg sv_methods[] = {
        { "accept", sv_accept }, { "getfd", sv_getfd }, { "address", sv_address },
        { "unlink", sv_unlink }, { "close", sv_close }, { NULL, NULL } };
    static const luaL_Reg sv_meta[] = {
        { "__gc", sv_gc }, { "__close", sv_gc }, { "__tostring", sv_tostring }, { NULL, NULL } };
    static const luaL_Reg funcs[] = {
        { "socketpair", l_socketpair }, { "listen", l_listen }, { "connect", l_connect },
        { "channel", l_channel },       { NULL, NULL } };
    new_class(L, CHANNEL_MT, ch_methods, ch_meta);
    new_class(L, SERVER_MT, sv_methods, sv_meta);
    luaL_setfuncs(L, funcs, 0);
    return 0;
}
