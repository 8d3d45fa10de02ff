/* fd objects: one owned descriptor, closed by close(), __close or __gc,
 * given away by detach() or file(); and turning any Lua value that names a
 * descriptor into its number. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <lualib.h>
#include <stdint.h>
#include "binding.h"

typedef struct { int fd; } lfd;

static lfd *check_lfd(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, FD_MT);
}

static int open_lfd(lua_State *L, int idx)
{
    lfd *f = check_lfd(L, idx);
    if (f->fd < 0)
        luaL_error(L, "attempt to use a closed fdpass.fd");
    return f->fd;
}

void push_fd(lua_State *L, int fd)
{
    lfd *f = compat_newuserdata(L, sizeof *f);
    f->fd = fd;
    luaL_setmetatable(L, FD_MT);
}

void push_fd_list(lua_State *L, int *fds, size_t n)
{
    lua_createtable(L, (int)n, 0);
    luaL_getmetatable(L, FD_MT); /* once per list, not once per descriptor */
    for (size_t i = 0; i < n; i++) {
        lfd *f = compat_newuserdata(L, sizeof *f);
        f->fd = -1;
        lua_pushvalue(L, -2);
        lua_setmetatable(L, -2);
        f->fd = fds[i];
        fds[i] = -1;
        lua_rawseti(L, -3, (lua_Integer)i + 1);
    }
    lua_pop(L, 1);
}

static int fd_from_number(lua_State *L, int idx, int arg)
{
    int ok;
    lua_Integer n = lua_tointegerx(L, idx, &ok);
    if (!ok || n < 0 || n > INT32_MAX)
        return luaL_argerror(L, arg, "descriptor must be a non-negative integer");
    return (int)n;
}

/* LuaSocket's getfd(), cqueues' pollfd(), luv's fileno(). */
static int fd_from_method(lua_State *L, int idx)
{
    static const char *const names[] = { "getfd", "pollfd", "fileno", NULL };
    if (lua_type(L, idx) == LUA_TUSERDATA && !luaL_getmetafield(L, idx, "__index"))
        return -1;
    if (lua_type(L, idx) == LUA_TUSERDATA)
        lua_pop(L, 1);
    for (int i = 0; names[i]; i++) {
        lua_getfield(L, idx, names[i]);
        if (lua_isfunction(L, -1)) {
            lua_pushvalue(L, idx);
            lua_call(L, 1, 1);
            int ok;
            lua_Integer n = lua_tointegerx(L, -1, &ok);
            lua_pop(L, 1);
            if (!ok || n < 0 || n > INT32_MAX)
                luaL_error(L, "%s() gave no open descriptor (closed object?)", names[i]);
            return (int)n;
        }
        lua_pop(L, 1);
    }
    return -1;
}

int check_fd(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        return fd_from_number(L, idx, idx);
    case LUA_TUSERDATA: {
        void *p;
        if ((p = luaL_testudata(L, idx, FD_MT))) {
            if (((lfd *)p)->fd < 0)
                luaL_error(L, "attempt to use a closed fdpass.fd");
            return ((lfd *)p)->fd;
        }
        if ((p = luaL_testudata(L, idx, CHANNEL_MT)) || (p = luaL_testudata(L, idx, SERVER_MT))) {
            int fd = *(int *)p; /* both start with their descriptor */
            if (fd < 0)
                luaL_error(L, "attempt to use a closed %s", p == luaL_testudata(L, idx, SERVER_MT)
                                                            ? SERVER_MT : CHANNEL_MT);
            return fd;
        }
        FILE *f;
        if (compat_tofile(L, idx, &f)) {
            if (!f)
                luaL_error(L, "attempt to use a closed file");
            return fileno(f);
        }
    } /* fall through: a foreign object */
    /* FALLTHROUGH */
    case LUA_TTABLE: {
        int fd = fd_from_method(L, idx);
        if (fd >= 0)
            return fd;
    } /* FALLTHROUGH */
    default:
        return luaL_error(L, "cannot take a descriptor from a %s value "
                             "(integer, fdpass object, io file, or getfd/pollfd/fileno)",
                          luaL_typename(L, idx));
    }
}

/* check_fd for one element of a list, with the fd metatable at stack index
 * mt: an fd object costs a comparison instead of a lookup by name. */
int check_fd_in(lua_State *L, int idx, int mt)
{
    idx = lua_absindex(L, idx);
    lfd *f = lua_touserdata(L, idx);
    if (f && lua_getmetatable(L, idx)) {
        int same = lua_rawequal(L, -1, mt);
        lua_pop(L, 1);
        if (same) {
            if (f->fd < 0)
                luaL_error(L, "attempt to use a closed fdpass.fd");
            return f->fd;
        }
    }
    return check_fd(L, idx);
}

static int fd_fileno(lua_State *L)
{
    lua_pushinteger(L, open_lfd(L, 1));
    return 1;
}

static int fd_close(lua_State *L)
{
    lfd *f = check_lfd(L, 1); /* one check: this runs once per descriptor */
    int fd = f->fd;
    if (fd < 0)
        return luaL_error(L, "attempt to use a closed fdpass.fd");
    f->fd = -1;
    /* Linux frees the descriptor even when close() reports EINTR or EIO:
     * never retry, or another thread's new descriptor could be closed. */
    if (close(fd) < 0 && errno != EINTR)
        return push_error(L, "close", -errno, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int fd_gc(lua_State *L)
{
    lfd *f = check_lfd(L, 1);
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    return 0;
}

static int fd_detach(lua_State *L)
{
    int fd = open_lfd(L, 1);
    check_lfd(L, 1)->fd = -1;
    lua_pushinteger(L, fd);
    return 1;
}

static int fd_tostring(lua_State *L)
{
    lfd *f = check_lfd(L, 1);
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
        if (in.local[0])
            set_string(L, "addr", in.local);
        if (in.peer[0])
            set_string(L, "peer", in.peer);
    }
    return 1;
}

static int fd_info(lua_State *L)
{
    return push_info(L, open_lfd(L, 1));
}

/* The descriptor becomes a Lua io file, which owns it from now on. */
static int fd_file(lua_State *L)
{
    int fd = open_lfd(L, 1);
    const char *mode = luaL_optstring(L, 2, "r");
    /* as io.open: [rwa]%+?b* */
    size_t ml = mode[0] && strchr("rwa", mode[0]) ? 1 : 0;
    ml += ml && mode[ml] == '+';
    luaL_argcheck(L, ml && strspn(mode + ml, "b") == strlen(mode + ml), 2, "invalid mode");
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
    check_lfd(L, 1)->fd = -1;
    return 1;
}

/* ---- fd sets: many received descriptors in one object -------------------
 * What ch:recv(timeout, "set") gives: one allocation for a whole message
 * instead of an object per descriptor, which costs more than the system
 * call that brought it (bench/RESULTS.md). The set owns what it holds:
 * closed by set:close(), __close or __gc; set:take(i) hands one out as an
 * fd object; set[i] is the number, still the set's. */

typedef struct {
    size_t n;
    int fds[];
} lfdset;

void push_fd_set(lua_State *L, int *fds, size_t n)
{
    lfdset *s = compat_newuserdata(L, sizeof *s + (n ? n : 1) * sizeof(int));
    s->n = 0; /* holds nothing until the copy below: a raise leaves fds to the caller */
    luaL_setmetatable(L, FDSET_MT);
    for (size_t i = 0; i < n; i++) {
        s->fds[i] = fds[i];
        fds[i] = -1;
    }
    s->n = n;
}

static lfdset *check_set(lua_State *L)
{
    return luaL_checkudata(L, 1, FDSET_MT);
}

static size_t check_slot(lua_State *L, lfdset *s, int idx)
{
    lua_Integer i = luaL_checkinteger(L, idx);
    luaL_argcheck(L, i >= 1 && (size_t)i <= s->n, idx, "index out of range");
    return (size_t)i - 1;
}

static int set_len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_set(L)->n);
    return 1;
}

/* set[i] -> the descriptor number (nil once taken or closed); set.name -> method */
static int set_index(lua_State *L)
{
    lfdset *s = check_set(L);
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer i = lua_tointeger(L, 2);
        if (i >= 1 && (size_t)i <= s->n && s->fds[i - 1] >= 0)
            lua_pushinteger(L, s->fds[i - 1]);
        else
            lua_pushnil(L);
        return 1;
    }
    lua_getmetatable(L, 1);
    lua_getfield(L, -1, "methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

/* set:take(i) -> an fd object that owns descriptor i from now on */
static int set_take(lua_State *L)
{
    lfdset *s = check_set(L);
    size_t i = check_slot(L, s, 2);
    if (s->fds[i] < 0)
        return luaL_error(L, "descriptor %d of the set was taken or closed", (int)i + 1);
    lfd *f = compat_newuserdata(L, sizeof *f);
    f->fd = -1;
    luaL_setmetatable(L, FD_MT);
    f->fd = s->fds[i];
    s->fds[i] = -1;
    return 1;
}

/* set:close() -> how many it closed; what was taken is not the set's. */
static int set_close(lua_State *L)
{
    lfdset *s = check_set(L);
    lua_Integer closed = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->fds[i] >= 0) {
            close(s->fds[i]);
            s->fds[i] = -1;
            closed++;
        }
    lua_pushinteger(L, closed);
    return 1;
}

static int set_tostring(lua_State *L)
{
    lua_pushfstring(L, "fdpass.fdset (%d)", (int)check_set(L)->n);
    return 1;
}

/* fdpass.close_all(list): closes every entry of an array of integers (which
 * the caller owns, e.g. from fd:detach()) and fd objects (closed
 * ones are skipped) in one call; returns how many it closed. */
static int l_close_all(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 1), closed = 0;
    luaL_getmetatable(L, FD_MT);
    int mt = lua_gettop(L);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        int fd, isint;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (isint && lua_type(L, -1) == LUA_TNUMBER) {
            luaL_argcheck(L, v >= 0 && v <= INT32_MAX, 1, "descriptor must be a non-negative integer");
            fd = (int)v;
        } else {
            lfd *f = lua_touserdata(L, -1);
            int same = 0;
            if (f && lua_getmetatable(L, -1)) {
                same = lua_rawequal(L, -1, mt);
                lua_pop(L, 1);
            }
            if (!same)
                return luaL_argerror(L, 1, "integers and fdpass.fd objects expected");
            fd = f->fd;
            f->fd = -1;
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
    push_fd(L, fd_from_number(L, 1, 1));
    return 1;
}

/* fdpass.dup(x): an fd object owning a new descriptor for the same file. */
static int l_dup(lua_State *L)
{
    int fd = check_fd(L, 1);
    lfd *f = compat_newuserdata(L, sizeof *f);
    f->fd = -1;
    luaL_setmetatable(L, FD_MT);
    if ((f->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
        return push_error(L, "dup", -errno, NULL);
    return 1;
}

/* fdpass.dup2(x, n): makes descriptor n refer to x's file (not
 * close-on-exec), e.g. to put an inherited stderr back on 2. */
static int l_dup2(lua_State *L)
{
    int fd = check_fd(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0 && n <= INT32_MAX, 2, "descriptor must be >= 0");
    int r;
    do
        r = dup2(fd, (int)n);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return push_error(L, "dup2", -errno, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_info(lua_State *L)
{
    return push_info(L, check_fd(L, 1));
}

/* Descriptors open in this process: what leak checks compare. */
static int l_fdcount(lua_State *L)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return push_error(L, "fdcount", -errno, NULL);
    lua_Integer n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    lua_pushinteger(L, n - 1); /* the directory's own descriptor */
    return 1;
}

/* fdpass.nofile([soft]) -> soft, hard: RLIMIT_NOFILE, read or set. */
static int l_nofile(lua_State *L)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return push_error(L, "nofile", -errno, NULL);
    if (!lua_isnoneornil(L, 1)) {
        lua_Integer soft = luaL_checkinteger(L, 1);
        luaL_argcheck(L, soft >= 0, 1, "limit must be >= 0");
        rl.rlim_cur = (rlim_t)soft;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            return push_error(L, "nofile", -errno, NULL);
    }
    lua_pushinteger(L, (lua_Integer)rl.rlim_cur);
    lua_pushinteger(L, (lua_Integer)rl.rlim_max);
    return 2;
}

int open_fd(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "fileno", fd_fileno }, { "close", fd_close }, { "detach", fd_detach },
        { "info", fd_info },     { "file", fd_file },   { NULL, NULL } };
    static const luaL_Reg meta[] = {
        { "__gc", fd_gc }, { "__close", fd_gc }, { "__tostring", fd_tostring }, { NULL, NULL } };
    static const luaL_Reg funcs[] = {
        { "fd", l_adopt }, { "dup", l_dup }, { "close_all", l_close_all }, { "dup2", l_dup2 }, { "info", l_info },
        { "fdcount", l_fdcount }, { "nofile", l_nofile }, { NULL, NULL } };
    new_class(L, FD_MT, methods, meta);
    static const luaL_Reg set_methods[] = {
        { "take", set_take }, { "close", set_close }, { NULL, NULL } };
    static const luaL_Reg set_meta[] = {
        { "__index", set_index }, { "__len", set_len }, { "__gc", set_close },
        { "__close", set_close }, { "__tostring", set_tostring }, { NULL, NULL } };
    luaL_newmetatable(L, FDSET_MT);
    luaL_setfuncs(L, set_meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, set_methods, 0);
    lua_setfield(L, -2, "methods");
    lua_pop(L, 1);
    luaL_setfuncs(L, funcs, 0);
    return 0;
}
