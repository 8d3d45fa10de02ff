/* The bottom of the binding: every other file of src/lua uses these, and
 * this file uses none of them. */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include "base.h"

#ifndef LUA_FILEHANDLE
#define LUA_FILEHANDLE "FILE*" /* 5.1 and LuaJIT name io files so too */
#endif

/* ---- errors ------------------------------------------------------------- */

int push_error(lua_State *L, const char *what, int err, const char *detail)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, detail ? detail : fdpass_strerror(err));
    lua_pushstring(L, fdpass_errname(err));
    return 3;
}

static const char *function_name(lua_State *L)
{
    const char *name = lua_tostring(L, lua_upvalueindex(UV_NAME));
    return name ? name : "?";
}

int arg_error(lua_State *L, int arg, const char *msg)
{
    const char *name = function_name(L);
    if (strchr(name, ':')) { /* a method: self is not counted */
        if (arg == 1)
            return luaL_error(L, "bad self to '%s' (%s)", name, msg);
        arg--;
    }
    return luaL_error(L, "bad argument #%d to '%s' (%s)", arg, name, msg);
}

/* What a value is, for "got ...": an object's class name rather than
 * "userdata". */
static const char *type_of(lua_State *L, int arg)
{
    const char *t = luaL_typename(L, arg);
    if (lua_type(L, arg) == LUA_TUSERDATA && luaL_getmetafield(L, arg, "__name")) {
        if (lua_type(L, -1) == LUA_TSTRING)
            t = lua_tostring(L, -1); /* the metatable keeps the string alive */
        lua_pop(L, 1);
    }
    return t;
}

int type_error(lua_State *L, int arg, const char *expected)
{
    return arg_error(L, arg, lua_pushfstring(L, "%s expected, got %s", expected, type_of(L, arg)));
}

lua_Integer check_integer(lua_State *L, int arg)
{
    int ok;
    lua_Integer n = lua_tointegerx(L, arg, &ok);
    if (ok)
        return n;
    if (lua_type(L, arg) == LUA_TNUMBER && lua_tonumber(L, arg) == 0)
        return 0; /* -0.0, which 5.1's compat keeps a float for the codec */
    if (lua_isnumber(L, arg))
        return arg_error(L, arg, "number has no integer representation");
    return type_error(L, arg, "number");
}

lua_Integer opt_integer(lua_State *L, int arg, lua_Integer def)
{
    return lua_isnoneornil(L, arg) ? def : check_integer(L, arg);
}

lua_Number check_number(lua_State *L, int arg)
{
    if (!lua_isnumber(L, arg))
        type_error(L, arg, "number");
    return lua_tonumber(L, arg);
}

const char *check_lstring(lua_State *L, int arg, size_t *len)
{
    const char *s = lua_tolstring(L, arg, len);
    if (!s)
        type_error(L, arg, "string");
    return s;
}

const char *opt_string(lua_State *L, int arg, const char *def)
{
    return lua_isnoneornil(L, arg) ? def : check_lstring(L, arg, NULL);
}

void check_table(lua_State *L, int arg)
{
    if (lua_type(L, arg) != LUA_TTABLE)
        type_error(L, arg, "table");
}

int check_option(lua_State *L, int arg, const char *def, const char *const names[])
{
    const char *s = def && lua_isnoneornil(L, arg) ? def : check_lstring(L, arg, NULL);
    for (int i = 0; names[i]; i++)
        if (strcmp(names[i], s) == 0)
            return i;
    return arg_error(L, arg, lua_pushfstring(L, "invalid option '%s'", s));
}

int check_options(lua_State *L, int arg, const char *const names[])
{
    if (lua_isnoneornil(L, arg))
        return 0;
    check_table(L, arg);
    lua_pushnil(L);
    while (lua_next(L, arg)) {
        lua_pop(L, 1);
        int known = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (int i = 0; names[i] && !known; i++)
                known = strcmp(names[i], lua_tostring(L, -1)) == 0;
        if (!known) {
            if (lua_type(L, -1) == LUA_TSTRING)
                return arg_error(L, arg, lua_pushfstring(L, "unknown option '%s'", lua_tostring(L, -1)));
            return arg_error(L, arg, lua_pushfstring(L, "unknown option (a %s key)", luaL_typename(L, -1)));
        }
    }
    return 1;
}

int check_timeout(lua_State *L, int arg)
{
    if (lua_isnoneornil(L, arg))
        return -1;
    lua_Number t = check_number(L, arg);
    arg_check(L, t >= 0, arg, "timeout must be nil or >= 0 seconds");
    lua_Number ms = ceil(t * 1000);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

/* ---- classes -------------------------------------------------------------- */

/* In upvalue order, UV_FD first. */
static const char *const class_names[] = {
    FD_MT, FD_CLOSED_MT, FDSET_MT, CHANNEL_MT, SERVER_MT, PROCESS_MT, EPOLL_MT, NULL };

void new_classes(lua_State *L)
{
    for (int i = 0; class_names[i]; i++) {
        luaL_newmetatable(L, class_names[i]);
        /* a closed fd object is still an fdpass.fd to tostring and to
         * code that reads __name */
        lua_pushstring(L, i + 1 == UV_FD_CLOSED ? FD_MT : class_names[i]);
        lua_setfield(L, -2, "__name");
        lua_pop(L, 1);
    }
}

void set_funcs(lua_State *L, const luaL_Reg *l, const char *prefix)
{
    luaL_checkstack(L, UV_COUNT + 2, "set_funcs");
    for (; l->name; l++) {
        for (int i = 0; class_names[i]; i++)
            luaL_getmetatable(L, class_names[i]);
        lua_pushfstring(L, "%s%s", prefix, l->name);
        lua_pushcclosure(L, l->func, UV_COUNT);
        lua_setfield(L, -2, l->name);
    }
}

void set_class(lua_State *L, const char *name, const luaL_Reg *methods, const luaL_Reg *meta)
{
    const char *dot = strchr(name, '.');
    const char *prefix = lua_pushfstring(L, "%s:", dot ? dot + 1 : name);
    luaL_getmetatable(L, name);
    set_funcs(L, meta, prefix);
    lua_newtable(L);
    set_funcs(L, methods, prefix);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 2);
}

const char fdp_classes[UV_COUNT + 1];

void *to_object(lua_State *L, int idx, int uv)
{
    const void **p = lua_touserdata(L, idx);
    if (p && lua_rawlen(L, idx) >= sizeof *p && *p == CLASS_TAG(uv))
        return p; /* a light userdata has no length */
    return NULL;
}

void *check_object(lua_State *L, int idx, int uv)
{
    void *p = to_object(L, idx, uv);
    if (!p)
        type_error(L, idx, class_names[uv == UV_FD_CLOSED ? 0 : uv - 1]);
    return p;
}

/* ---- fd objects ----------------------------------------------------------- */

fdp_fd *new_fd(lua_State *L)
{
    fdp_fd *f = compat_newuserdata(L, sizeof *f);
    f->cls = CLASS_TAG(UV_FD);
    f->fd = -1;
    lua_pushvalue(L, lua_upvalueindex(UV_FD_CLOSED));
    lua_setmetatable(L, -2);
    return f;
}

void set_fd(lua_State *L, int idx, fdp_fd *f, int fd)
{
    idx = lua_absindex(L, idx);
    f->fd = fd; /* setting a metatable allocates nothing: this cannot fail */
    lua_pushvalue(L, lua_upvalueindex(UV_FD));
    lua_setmetatable(L, idx);
}

void fd_closed(lua_State *L, int idx, fdp_fd *f)
{
    idx = lua_absindex(L, idx);
    f->fd = -1;
    lua_pushvalue(L, lua_upvalueindex(UV_FD_CLOSED));
    lua_setmetatable(L, idx);
}

static int fd_number(lua_State *L, int idx, int arg)
{
    int ok;
    lua_Integer n = lua_tointegerx(L, idx, &ok);
    if (!ok || n < 0 || n > INT32_MAX)
        return arg_error(L, arg, "descriptor must be a non-negative integer");
    return (int)n;
}

/* LuaSocket's getfd(), cqueues' pollfd(), luv's fileno(); -1 for none. */
static int fd_from_method(lua_State *L, int idx)
{
    static const char *const names[] = { "getfd", "pollfd", "fileno", NULL };
    if (lua_type(L, idx) == LUA_TUSERDATA) {
        if (!luaL_getmetafield(L, idx, "__index"))
            return -1;
        lua_pop(L, 1);
    }
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

/* check_fd for the value at idx, reported as argument arg. */
int check_fd_at(lua_State *L, int idx, int arg)
{
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TNUMBER:
        return fd_number(L, idx, arg);
    case LUA_TUSERDATA: {
        void *p;
        int uv = 0, fd = -1;
        if ((p = to_object(L, idx, UV_FD)))
            uv = UV_FD, fd = ((fdp_fd *)p)->fd;
        else if ((p = to_object(L, idx, UV_CHANNEL)))
            uv = UV_CHANNEL, fd = ((fdp_channel *)p)->fd;
        else if ((p = to_object(L, idx, UV_SERVER)))
            uv = UV_SERVER, fd = ((fdp_server *)p)->fd;
        else if ((p = to_object(L, idx, UV_EPOLL)))
            uv = UV_EPOLL, fd = ((fdp_epoll *)p)->fd;
        if (uv && fd >= 0)
            return fd;
        if (uv)
            luaL_error(L, "attempt to use a closed %s", class_names[uv - 1]);
        FILE *f;
        if (compat_tofile(L, idx, &f)) {
            if (!f)
                luaL_error(L, "attempt to use a closed file");
            return fileno(f);
        }
    } /* FALLTHROUGH: a foreign object */
    /* FALLTHROUGH */
    case LUA_TTABLE: {
        int fd = fd_from_method(L, idx);
        if (fd >= 0)
            return fd;
    } /* FALLTHROUGH */
    default:
        if (idx != arg) { /* type_error describes the value at arg */
            lua_pushvalue(L, idx);
            lua_replace(L, arg);
        }
        return arg_error(L, arg, lua_pushfstring(L, "cannot take a descriptor from a %s value (an fdpass.fd, "
                         "integer, io file or object with getfd/pollfd/fileno expected)", type_of(L, arg)));
    }
}

int check_fd(lua_State *L, int arg)
{
    return check_fd_at(L, arg, arg);
}

/* ---- io files ----------------------------------------------------------------
 * Every version keeps the FILE * first in the userdata of an io file
 * (5.1: FILE **; LuaJIT: IOFileUD; 5.2+: luaL_Stream), under the registry
 * name "FILE*". */


/* The io file at idx: 1 and its FILE * in *f (NULL when it is closed), or
 * 0 when the value is no io file. */
/* The userdata at idx if it is an io file (by its metatable), else NULL. */
static void *to_iofile(lua_State *L, int idx)
{
    void *p = lua_touserdata(L, idx);
    if (!p || !lua_getmetatable(L, idx))
        return NULL;
    luaL_getmetatable(L, LUA_FILEHANDLE);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? p : NULL;
}

int compat_tofile(lua_State *L, int idx, FILE **f)
{
#if LUA_VERSION_NUM >= 503
    luaL_Stream *s = to_iofile(L, idx);
    if (s)
        *f = s->closef ? s->f : NULL;
    return s != NULL;
#else
    FILE **p = to_iofile(L, idx);
    if (p)
        *f = *p;
    return p != NULL;
#endif
}

#if LUA_VERSION_NUM >= 503
static int compat_io_fclose(lua_State *L)
{
    luaL_Stream *s = luaL_checkudata(L, 1, LUA_FILEHANDLE);
    return luaL_fileresult(L, fclose(s->f) == 0, NULL);
}
#endif

/* Pushes an io file that is closed until compat_setfile gives it a FILE *,
 * or returns 0 with errno set and nothing pushed.
 * 5.1 and LuaJIT have no API to make one (LuaJIT's io only accepts its own
 * userdata type), so there the io library opens it, on /dev/null, and
 * compat_setfile exchanges that FILE * for the caller's. */
int compat_newfile(lua_State *L)
{
#if LUA_VERSION_NUM >= 503
    luaL_Stream *s = compat_newuserdata(L, sizeof *s);
    s->f = NULL;
    s->closef = NULL;
    luaL_setmetatable(L, LUA_FILEHANDLE);
    return 1;
#else
    lua_getfield(L, LUA_REGISTRYINDEX, "_LOADED");
    lua_getfield(L, -1, "io");
    if (!lua_istable(L, -1)) {
        lua_pop(L, 2);
        errno = ENOSYS; /* the io library is not loaded */
        return 0;
    }
    lua_getfield(L, -1, "open");
    lua_replace(L, -3);
    lua_pop(L, 1);
    lua_pushliteral(L, "/dev/null");
    lua_pushliteral(L, "r");
    lua_call(L, 2, 3);
    if (!to_iofile(L, -3)) {
        int err = (int)lua_tointeger(L, -1); /* io.open's nil, msg, errno */
        lua_pop(L, 3);
        errno = err > 0 ? err : EIO;
        return 0;
    }
    lua_pop(L, 2);
    return 1;
#endif
}

/* Gives the io file at idx (from compat_newfile) its FILE *, or with
 * f == NULL closes it again (a failed fdopen). */
void compat_setfile(lua_State *L, int idx, FILE *f)
{
#if LUA_VERSION_NUM >= 503
    luaL_Stream *s = lua_touserdata(L, idx);
    s->f = f;
    s->closef = f ? compat_io_fclose : NULL;
#else
    FILE **p = lua_touserdata(L, idx);
    fclose(*p);
    *p = f; /* NULL: a closed file to io and to its __gc */
#endif
}


/* ---- clock ------------------------------------------------------------------ */

int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- signals ------------------------------------------------------------------ */

static const struct { const char *name; int sig; } signals[] = {
    { "HUP", SIGHUP },   { "INT", SIGINT },     { "QUIT", SIGQUIT },   { "ILL", SIGILL },
    { "TRAP", SIGTRAP }, { "ABRT", SIGABRT },   { "BUS", SIGBUS },     { "FPE", SIGFPE },
    { "KILL", SIGKILL }, { "USR1", SIGUSR1 },   { "SEGV", SIGSEGV },   { "USR2", SIGUSR2 },
    { "PIPE", SIGPIPE }, { "ALRM", SIGALRM },   { "TERM", SIGTERM },   { "CHLD", SIGCHLD },
    { "CONT", SIGCONT }, { "STOP", SIGSTOP },   { "TSTP", SIGTSTP },   { "TTIN", SIGTTIN },
    { "TTOU", SIGTTOU }, { "URG", SIGURG },     { "XCPU", SIGXCPU },   { "XFSZ", SIGXFSZ },
    { "VTALRM", SIGVTALRM }, { "PROF", SIGPROF }, { "WINCH", SIGWINCH }, { "IO", SIGIO },
    { "PWR", SIGPWR },   { "SYS", SIGSYS },     { NULL, 0 } };

int check_signal(lua_State *L, int idx, int arg, int def)
{
    if (def > 0 && lua_isnoneornil(L, idx))
        return def;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        int ok;
        lua_Integer n = lua_tointegerx(L, idx, &ok);
        arg_check(L, ok && n >= 0 && n <= 64, arg, "signal number must be 0 .. 64");
        return (int)n;
    }
    const char *name = lua_tostring(L, idx);
    if (!name)
        return arg_error(L, arg, lua_pushfstring(L, "signal name or number expected, got %s", luaL_typename(L, idx)));
    if (strncmp(name, "SIG", 3) == 0)
        name += 3;
    for (int i = 0; signals[i].name; i++)
        if (strcmp(signals[i].name, name) == 0)
            return signals[i].sig;
    return arg_error(L, arg, lua_pushfstring(L, "unknown signal '%s'", name));
}

const char *signal_name(int sig)
{
    for (int i = 0; signals[i].name; i++)
        if (signals[i].sig == sig)
            return signals[i].name;
    return NULL;
}

/* ---- received descriptors into objects ------------------------------------ */

/* Moves *slot into a new fd object on top, leaving -1 behind: whatever
 * raises before the move leaves the descriptor where its owner closes it. */
static void push_owned(lua_State *L, int *slot)
{
    fdp_fd *f = compat_newuserdata(L, sizeof *f);
    f->cls = CLASS_TAG(UV_FD);
    f->fd = *slot;
    *slot = -1;
    lua_pushvalue(L, lua_upvalueindex(UV_FD)); /* cannot fail: nothing allocated */
    lua_setmetatable(L, -2);
}

void push_fd_list(lua_State *L, int *fds, size_t n, int into)
{
    if (into) {
        lua_pushvalue(L, into);
    } else {
        lua_createtable(L, (int)n, 0);
    }
    for (size_t i = 0; i < n; i++) {
        push_owned(L, &fds[i]);
        lua_rawseti(L, -2, (int)i + 1);
    }
    if (into) /* what an earlier message left beyond n */
        for (int i = (int)n + 1;; i++) {
            lua_rawgeti(L, -1, i);
            int end = lua_isnil(L, -1);
            lua_pop(L, 1);
            if (end)
                break;
            lua_pushnil(L);
            lua_rawseti(L, -2, i);
        }
}

fdp_fdset *new_fdset(lua_State *L, size_t cap)
{
    fdp_fdset *s = compat_newuserdata(L, sizeof *s + (cap ? cap : 1) * sizeof(int));
    s->cls = CLASS_TAG(UV_FDSET);
    s->n = 0;
    lua_pushvalue(L, lua_upvalueindex(UV_FDSET));
    lua_setmetatable(L, -2);
    return s;
}

void push_fd_set(lua_State *L, int *fds, size_t n)
{
    fdp_fdset *s = new_fdset(L, n); /* holds nothing until the copy: a raise leaves fds to the caller */
    for (size_t i = 0; i < n; i++) {
        s->fds[i] = fds[i];
        fds[i] = -1;
    }
    s->n = n;
}

void push_fd_take(lua_State *L, int *slot)
{
    push_owned(L, slot);
}

/* ---- channels ------------------------------------------------------------- */

fdp_channel *new_channel(lua_State *L)
{
    fdp_channel *c = compat_newuserdata(L, sizeof *c);
    c->cls = CLASS_TAG(UV_CHANNEL);
    c->fd = -1;
    c->chan = NULL;
    c->handoff = NULL;
    c->handoff_n = 0;
    c->rbuf = NULL;
    c->rcap = 0;
    lua_pushvalue(L, lua_upvalueindex(UV_CHANNEL));
    lua_setmetatable(L, -2);
    return c;
}

int open_channel_on(fdp_channel *c, int fd)
{
    c->chan = fdpass_chan_new(fd, NULL);
    if (!c->chan)
        return -errno;
    c->fd = fd;
    return 0;
}
