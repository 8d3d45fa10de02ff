/* Channels: a connected AF_UNIX socket with its framing state; all their
 * methods, and the functions that make one (socketpair, connect, channel).
 * Every constructor makes the object before it acquires the socket, so a
 * memory error leaves nothing open. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>
#include "base.h"

static const char *const kind_names[] = { "seqpacket", "stream", NULL };
static const int kind_types[] = { SOCK_SEQPACKET, SOCK_STREAM };

/* Descriptors that a raised error kept from reaching an fd object. */
static void close_handoff(fdp_channel *c)
{
    for (size_t i = 0; i < c->handoff_n; i++)
        if (c->handoff[i] >= 0)
            close(c->handoff[i]);
    c->handoff_n = 0;
}

static fdp_channel *check_channel(lua_State *L)
{
    fdp_channel *c = to_object(L, 1, UV_CHANNEL);
    if (!c)
        c = check_object(L, 1, UV_CHANNEL);
    if (c->fd < 0)
        luaL_error(L, "attempt to use a closed fdpass.channel");
    if (c->handoff_n)
        close_handoff(c);
    return c;
}

static void release_channel(fdp_channel *c)
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

/* The descriptors of a send, from the list at arg: a stack array for one
 * sendmsg's worth, a userdata (collected, so a raised error leaks nothing)
 * beyond that. */
static int *collect_fds(lua_State *L, int arg, int *small, size_t *n)
{
    *n = 0;
    if (lua_isnoneornil(L, arg))
        return small;
    check_table(L, arg);
    size_t len = (size_t)lua_rawlen(L, arg);
    int *fds = small;
    if (len > FDPASS_MAX_FDS_PER_SENDMSG)
        fds = compat_newuserdata(L, len * sizeof(int)); /* stays on the stack */
    for (size_t i = 0; i < len; i++) {
        lua_rawgeti(L, arg, (int)i + 1);
        fdp_fd *f = to_object(L, -1, UV_FD);
        fds[i] = f && f->fd >= 0 ? f->fd : check_fd_at(L, -1, arg);
        lua_pop(L, 1);
    }
    *n = len;
    return fds;
}

static int ch_send(lua_State *L)
{
    fdp_channel *c = check_channel(L);
    size_t len;
    const char *data = check_lstring(L, 2, &len);
    int timeout = lua_isnoneornil(L, 4) ? -1 : check_timeout(L, 4);
    int small[FDPASS_MAX_FDS_PER_SENDMSG];
    size_t n;
    int *fds = collect_fds(L, 3, small, &n);
    int r = fdpass_chan_send(c->chan, data, len, fds, n, timeout);
    if (r < 0)
        return push_error(L, "send", r, fdpass_chan_detail(c->chan));
    lua_pushboolean(L, 1);
    return 1;
}

static int ch_flush(lua_State *L)
{
    fdp_channel *c = check_channel(L);
    int r = fdpass_chan_flush(c->chan, check_timeout(L, 2));
    if (r < 0)
        return push_error(L, "flush", r, fdpass_chan_detail(c->chan));
    lua_pushboolean(L, 1);
    return 1;
}

static int ch_pending(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)fdpass_chan_pending(check_channel(L)->chan));
    return 1;
}

/* recv's and recvmsg's last argument: "objects" (an fd object per
 * descriptor in a new table, the default), a table to fill with them
 * instead (reused from message to message), or "set" (one fdpass.fdset
 * holding them all). Returns 0 for a new table, -1 for a set, or the
 * table's stack index. */
static int check_as(lua_State *L, int arg)
{
    static const char *const names[] = { "objects", "set", NULL };
    if (lua_type(L, arg) == LUA_TTABLE)
        return arg;
    return check_option(L, arg, "objects", names) ? -1 : 0;
}

/* Pushes the received descriptors as `as` says; a raise on the way leaves
 * those not yet in an object to close_handoff. */
static void hand_over(lua_State *L, fdp_channel *c, int *fds, size_t n, int as)
{
    c->handoff = fds;
    c->handoff_n = n;
    if (as < 0)
        push_fd_set(L, fds, n);
    else
        push_fd_list(L, fds, n, as);
    c->handoff_n = 0;
}

static int ch_recv(lua_State *L)
{
    fdp_channel *c = check_channel(L);
    int timeout = lua_isnoneornil(L, 2) ? -1 : check_timeout(L, 2);
    int as = lua_isnoneornil(L, 3) ? 0 : check_as(L, 3);
    fdpass_msg m;
    int r = fdpass_chan_recv(c->chan, &m, timeout);
    if (r < 0)
        return push_error(L, "recv", r, fdpass_chan_detail(c->chan));
    /* the descriptors are the channel's to close until an object has them */
    c->handoff = m.fds;
    c->handoff_n = m.nfds;
    lua_pushlstring(L, m.data, m.len);
    hand_over(L, c, m.fds, m.nfds, as);
    return 2;
}

static int ch_sendmsg(lua_State *L)
{
    fdp_channel *c = check_channel(L);
    size_t len;
    const char *data = check_lstring(L, 2, &len);
    int timeout = check_timeout(L, 4);
    int small[FDPASS_MAX_FDS_PER_SENDMSG];
    size_t n;
    int *fds = collect_fds(L, 3, small, &n);
    if (n > FDPASS_MAX_FDS_PER_SENDMSG)
        return arg_error(L, 3, "at most 253 descriptors in one message (send() splits)");
    arg_check(L, len > 0, 2, "empty payload (the kernel would drop descriptors)");
    ssize_t r = fdpass_sendmsg(c->fd, data, len, fds, n, timeout);
    if (r < 0)
        return push_error(L, "sendmsg", (int)r, NULL);
    lua_pushinteger(L, r);
    return 1;
}

static int ch_recvmsg(lua_State *L)
{
    fdp_channel *c = check_channel(L);
    lua_Integer cap = opt_integer(L, 2, 65536);
    lua_Integer maxfds = opt_integer(L, 3, FDPASS_MAX_FDS_PER_SENDMSG);
    int timeout = check_timeout(L, 4);
    int as = check_as(L, 5);
    arg_check(L, cap > 0 && cap <= (1 << 30), 2, "size must be 1 .. 2^30");
    arg_check(L, maxfds >= 0 && maxfds <= FDPASS_MAX_FDS_PER_SENDMSG, 3, "maxfds must be 0 .. 253");
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
    hand_over(L, c, c->raw, nfds, as);
    return 2;
}

static int ch_peercred(lua_State *L)
{
    fdp_channel *c = check_channel(L);
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
    lua_pushinteger(L, check_channel(L)->fd);
    return 1;
}

/* ch:socktype() -> "seqpacket" | "stream" (a socket type: info().kind is
 * a file type). */
static int ch_socktype(lua_State *L)
{
    fdp_channel *c = check_channel(L);
    int type;
    socklen_t tl = sizeof type;
    if (getsockopt(c->fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0)
        return push_error(L, "socktype", -errno, NULL);
    lua_pushstring(L, type == SOCK_STREAM ? "stream" : type == SOCK_SEQPACKET ? "seqpacket" : "other");
    return 1;
}

/* ch:limits([{max_payload=, max_fds=}]) -> the limits in force. */
static int ch_limits(lua_State *L)
{
    static const char *const names[] = { "max_payload", "max_fds", NULL };
    fdp_channel *c = check_channel(L);
    if (check_options(L, 2, names)) {
        fdpass_limits set = { 0, 0 };
        lua_getfield(L, 2, "max_payload");
        lua_getfield(L, 2, "max_fds");
        int mp_nil = lua_isnil(L, -2), mf_nil = lua_isnil(L, -1);
        /* 0 would silently mean "unchanged" below: refuse it, as the text says */
        lua_Integer mp = 0, mf = 0;
        int ok;
        if (!mp_nil) {
            mp = lua_tointegerx(L, -2, &ok);
            arg_check(L, ok, 2, "number has no integer representation");
            arg_check(L, mp > 0, 2, "limits must be positive integers");
        }
        if (!mf_nil) {
            mf = lua_tointegerx(L, -1, &ok);
            arg_check(L, ok, 2, "number has no integer representation");
            arg_check(L, mf > 0, 2, "limits must be positive integers");
        }
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
    release_channel(check_channel(L));
    lua_pushboolean(L, 1);
    return 1;
}

static int ch_gc(lua_State *L)
{
    release_channel(check_object(L, 1, UV_CHANNEL));
    return 0;
}

static int ch_tostring(lua_State *L)
{
    fdp_channel *c = check_object(L, 1, UV_CHANNEL);
    if (c->fd < 0)
        lua_pushliteral(L, "fdpass.channel (closed)");
    else
        lua_pushfstring(L, "fdpass.channel (%d)", c->fd);
    return 1;
}

/* ---- module functions ---------------------------------------------------- */

static int l_socketpair(lua_State *L)
{
    int type = kind_types[check_option(L, 1, "seqpacket", kind_names)];
    fdp_channel *a = new_channel(L), *b = new_channel(L);
    int sv[2];
    int r = fdpass_socketpair(type, sv);
    if (r < 0)
        return push_error(L, "socketpair", r, NULL);
    if ((r = open_channel_on(a, sv[0])) < 0) {
        close(sv[0]);
        close(sv[1]);
        return push_error(L, "socketpair", r, NULL);
    }
    if ((r = open_channel_on(b, sv[1])) < 0) {
        close(sv[1]);
        release_channel(a);
        return push_error(L, "socketpair", r, NULL);
    }
    return 2;
}

/* fdpass.channel(x): a channel owning a connected socket. An fd object
 * hands its descriptor over, an integer is adopted; when that fails
 * (not a socket), x is left as it was. */
static int l_channel(lua_State *L)
{
    fdp_fd *f = to_object(L, 1, UV_FD);
    int fd;
    if (f) {
        fd = check_fd(L, 1); /* raises for a closed one */
    } else if (lua_type(L, 1) == LUA_TNUMBER) {
        fd = check_fd(L, 1);
    } else {
        return type_error(L, 1, "fdpass.fd or integer");
    }
    fdp_channel *c = new_channel(L);
    int r = open_channel_on(c, fd);
    if (r < 0)
        return push_error(L, "channel", r, NULL);
    if (f)
        fd_closed(L, 1, f);
    return 1;
}

static int l_connect(lua_State *L)
{
    const char *addr = check_string(L, 1);
    int timeout = check_timeout(L, 2);
    int type = kind_types[check_option(L, 3, "seqpacket", kind_names)];
    fdp_channel *c = new_channel(L);
    int fd = fdpass_connect(addr, type, timeout);
    if (fd < 0)
        return push_error(L, lua_pushfstring(L, "connect %s", addr), fd, NULL);
    int r = open_channel_on(c, fd);
    if (r < 0) {
        close(fd);
        return push_error(L, "connect", r, NULL);
    }
    return 1;
}

int open_channel(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "send", ch_send },         { "recv", ch_recv },       { "flush", ch_flush },
        { "pending", ch_pending },   { "sendmsg", ch_sendmsg }, { "recvmsg", ch_recvmsg },
        { "peercred", ch_peercred }, { "getfd", ch_getfd },     { "socktype", ch_socktype },
        { "limits", ch_limits },     { "close", ch_close },     { NULL, NULL } };
    static const luaL_Reg meta[] = {
        { "__gc", ch_gc }, { "__close", ch_gc }, { "__tostring", ch_tostring }, { NULL, NULL } };
    static const luaL_Reg funcs[] = {
        { "socketpair", l_socketpair }, { "connect", l_connect }, { "channel", l_channel },
        { NULL, NULL } };
    set_class(L, CHANNEL_MT, methods, meta);
    set_funcs(L, funcs, "");
    return 0;
}
