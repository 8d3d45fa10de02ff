/* Child processes started without a shell, with the descriptors the caller
 * maps into them: how an upgrade starts its new copy, and how the specs
 * start their peers. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "binding.h"

typedef struct {
    pid_t pid;
    int reaped;
} lprocess;

static const struct { const char *name; int sig; } signals[] = {
    { "HUP", SIGHUP }, { "INT", SIGINT }, { "QUIT", SIGQUIT }, { "KILL", SIGKILL },
    { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "PIPE", SIGPIPE }, { "ALRM", SIGALRM },
    { "TERM", SIGTERM }, { "CHLD", SIGCHLD }, { "CONT", SIGCONT }, { "STOP", SIGSTOP },
    { NULL, 0 } };

static int check_signal(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER)
        return (int)luaL_checkinteger(L, idx);
    const char *name = luaL_optstring(L, idx, "TERM");
    if (strncmp(name, "SIG", 3) == 0)
        name += 3;
    for (int i = 0; signals[i].name; i++)
        if (strcmp(signals[i].name, name) == 0)
            return signals[i].sig;
    return luaL_argerror(L, idx, lua_pushfstring(L, "unknown signal '%s'", name));
}

/* A NULL-terminated array of strings from a Lua array, in a userdata. */
static char **string_array(lua_State *L, int idx, const char *what)
{
    size_t n = (size_t)luaL_len(L, idx);
    char **v = compat_newuserdata(L, (n + 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        lua_geti(L, idx, (lua_Integer)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "spawn: %s[%d] must be a string", what, (int)i + 1);
        v[i] = (char *)lua_tostring(L, -1);
        lua_pop(L, 1); /* the string stays alive in the table */
    }
    v[n] = NULL;
    return v;
}

extern char **environ;

/* env = { NAME = "value", ... } into "NAME=value" strings; with `merge`,
 * over this process's environment (a name mapped to false is removed). */
static char **env_array(lua_State *L, int idx, int merge)
{
    lua_newtable(L);
    int list = lua_gettop(L);
    lua_Integer n = 0;
    for (char **e = merge ? environ : NULL; e && *e; e++) {
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        lua_pushlstring(L, *e, (size_t)(eq - *e));
        lua_rawget(L, idx);
        int overridden = !lua_isnil(L, -1);
        lua_pop(L, 1);
        if (!overridden) {
            lua_pushstring(L, *e);
            lua_rawseti(L, list, ++n);
        }
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING ||
            !(lua_isstring(L, -1) || (merge && lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))))
            luaL_error(L, "spawn: env must map names to strings");
        if (lua_isstring(L, -1)) {
            lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
            lua_rawseti(L, list, ++n);
        }
        lua_pop(L, 1);
    }
    return string_array(L, list, "env");
}

/* core.spawn(argv, fds, env, setenv) -> process. fds = { [childfd] = object };
 * env replaces the environment, setenv adds to (or, with false, removes
 * from) this one. */
static int l_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_argcheck(L, luaL_len(L, 1) > 0, 1, "argv needs a program");
    char **argv = string_array(L, 1, "argv");
    size_t nmap = 0;
    int (*map)[2] = NULL;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            nmap++;
            lua_pop(L, 1);
        }
        map = compat_newuserdata(L, (nmap ? nmap : 1) * sizeof *map);
        size_t i = 0;
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            int ok;
            lua_Integer child = lua_tointegerx(L, -2, &ok);
            if (!ok || child < 0 || child > 1023)
                luaL_error(L, "spawn: fds keys must be descriptor numbers 0..1023");
            map[i][0] = (int)child;
            map[i][1] = check_fd(L, -1);
            i++;
            lua_pop(L, 1);
        }
    }
    char **envp = NULL;
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        envp = env_array(L, 3, 0);
    } else if (!lua_isnoneornil(L, 4)) {
        luaL_checktype(L, 4, LUA_TTABLE);
        envp = env_array(L, 4, 1);
    }
    lprocess *p = compat_newuserdata(L, sizeof *p);
    p->pid = 0;
    p->reaped = 1;
    luaL_setmetatable(L, PROCESS_MT);
    int r = fdpass_spawn(&p->pid, argv[0], argv, envp, (const int (*)[2])map, nmap);
    if (r < 0)
        return push_error(L, lua_pushfstring(L, "spawn %s", argv[0]), r, NULL);
    p->reaped = 0;
    return 1;
}

static lprocess *check_process(lua_State *L)
{
    return luaL_checkudata(L, 1, PROCESS_MT);
}

static int pr_pid(lua_State *L)
{
    lua_pushinteger(L, check_process(L)->pid);
    return 1;
}

/* p:wait([timeout]) -> "exit", code | "signal", signo | nil, msg, code */
static int pr_wait(lua_State *L)
{
    lprocess *p = check_process(L);
    if (p->reaped)
        return luaL_error(L, "wait: process %d was already waited for", (int)p->pid);
    int status;
    int r = fdpass_wait(p->pid, check_timeout(L, 2), &status);
    if (r < 0)
        return push_error(L, "wait", r, NULL);
    p->reaped = 1;
    if (WIFSIGNALED(status)) {
        lua_pushliteral(L, "signal");
        lua_pushinteger(L, WTERMSIG(status));
    } else {
        lua_pushliteral(L, "exit");
        lua_pushinteger(L, WEXITSTATUS(status));
    }
    return 2;
}

static int pr_kill(lua_State *L)
{
    lprocess *p = check_process(L);
    int sig = check_signal(L, 2);
    if (p->reaped) /* its pid may belong to someone else by now */
        return push_error(L, "kill", -ESRCH, NULL);
    if (kill(p->pid, sig) < 0)
        return push_error(L, "kill", -errno, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int pr_gc(lua_State *L)
{
    lprocess *p = check_process(L);
    if (!p->reaped) /* reap it if it is gone; a live one is left alone */
        waitpid(p->pid, NULL, WNOHANG);
    return 0;
}

static int pr_tostring(lua_State *L)
{
    lua_pushfstring(L, "fdpass.process (%d)", (int)check_process(L)->pid);
    return 1;
}

static int l_getpid(lua_State *L)
{
    lua_pushinteger(L, getpid());
    return 1;
}

/* fdpass.kill(pid, [signal]) for processes this one did not start. */
static int l_kill(lua_State *L)
{
    lua_Integer pid = luaL_checkinteger(L, 1);
    luaL_argcheck(L, pid > 0, 1, "pid must be > 0");
    if (kill((pid_t)pid, check_signal(L, 2)) < 0)
        return push_error(L, "kill", -errno, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* fdpass.flock(path) -> fd object holding an exclusive lock on path
 * (created 0600 if missing) | nil, msg, "EWOULDBLOCK" when another holds
 * it. The kernel drops the lock when the holder closes it or dies. */
static int l_flock(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    push_fd(L, -1);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return push_error(L, lua_pushfstring(L, "flock %s", path), -errno, NULL);
    int r;
    do
        r = flock(fd, LOCK_EX | LOCK_NB);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        int e = errno;
        close(fd);
        return push_error(L, lua_pushfstring(L, "flock %s", path), -e,
                          e == EWOULDBLOCK ? "held by another process" : NULL);
    }
    *(int *)lua_touserdata(L, -1) = fd;
    return 1;
}

int open_process(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "pid", pr_pid }, { "wait", pr_wait }, { "kill", pr_kill }, { NULL, NULL } };
    static const luaL_Reg meta[] = {
        { "__gc", pr_gc }, { "__tostring", pr_tostring }, { NULL, NULL } };
    static const luaL_Reg funcs[] = {
        { "spawn", l_spawn }, { "getpid", l_getpid }, { "kill", l_kill },
        { "flock", l_flock }, { NULL, NULL } };
    new_class(L, PROCESS_MT, methods, meta);
    luaL_setfuncs(L, funcs, 0);
    return 0;
}
