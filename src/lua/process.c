/* Child processes started without a shell, with the descriptors the caller
 * maps into them (how an upgrade starts its new copy, and how the specs
 * start their peers): spawn and the process objects' methods. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include "base.h"

/* A NULL-terminated array of the strings of the Lua array at idx, in a
 * userdata; what names the array in errors of argument arg. */
static char **string_array(lua_State *L, int idx, int arg, const char *what)
{
    size_t n = (size_t)lua_rawlen(L, idx);
    char **v = compat_newuserdata(L, (n + 1) * sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, idx, (int)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            arg_error(L, arg, lua_pushfstring(L, "%s[%d] must be a string", what, (int)i + 1));
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
            lua_rawseti(L, list, (int)++n);
        }
    }
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING ||
            !(lua_isstring(L, -1) || (merge && lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1))))
            arg_error(L, 2, merge ? "setenv must map names to strings or false" : "env must map names to strings");
        if (lua_isstring(L, -1)) {
            lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
            lua_rawseti(L, list, (int)++n);
        }
        lua_pop(L, 1);
    }
    return string_array(L, list, 2, "env");
}

/* fdpass.spawn(argv, [{fds=, env=, setenv=}]) -> process. fds =
 * { [childfd] = object }; env replaces the environment, setenv adds to
 * (or, with false, removes from) this one. */
static int l_spawn(lua_State *L)
{
    static const char *const names[] = { "fds", "env", "setenv", NULL };
    check_table(L, 1);
    arg_check(L, lua_rawlen(L, 1) > 0, 1, "argv needs a program");
    lua_settop(L, 2);
    if (check_options(L, 2, names)) {
        lua_getfield(L, 2, "fds");
        lua_getfield(L, 2, "env");
        lua_getfield(L, 2, "setenv");
    } else {
        lua_settop(L, 5);
    }
    for (int i = 3; i <= 5; i++)
        if (!lua_isnil(L, i) && lua_type(L, i) != LUA_TTABLE)
            arg_error(L, 2, lua_pushfstring(L, "%s must be a table", names[i - 3]));
    char **argv = string_array(L, 1, 1, "argv");
    size_t nmap = 0;
    int (*map)[2] = NULL;
    if (!lua_isnil(L, 3)) {
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            nmap++;
            lua_pop(L, 1);
        }
        map = compat_newuserdata(L, (nmap ? nmap : 1) * sizeof *map);
        size_t i = 0;
        lua_pushnil(L);
        while (lua_next(L, 3)) {
            int ok;
            lua_Integer child = lua_tointegerx(L, -2, &ok);
            if (!ok || child < 0 || child > 1023)
                arg_error(L, 2, "fds keys must be descriptor numbers 0..1023");
            map[i][0] = (int)child;
            map[i][1] = check_fd_at(L, -1, 2);
            i++;
            lua_pop(L, 1);
        }
    }
    char **envp = NULL;
    if (!lua_isnil(L, 4))
        envp = env_array(L, 4, 0);
    else if (!lua_isnil(L, 5))
        envp = env_array(L, 5, 1);
    fdp_process *p = compat_newuserdata(L, sizeof *p);
    p->cls = CLASS_TAG(UV_PROCESS);
    p->pid = 0;
    p->reaped = 1;
    lua_pushvalue(L, lua_upvalueindex(UV_PROCESS));
    lua_setmetatable(L, -2);
    int r = fdpass_spawn(&p->pid, argv[0], argv, envp, (const int (*)[2])map, nmap);
    if (r < 0)
        return push_error(L, lua_pushfstring(L, "spawn %s", argv[0]), r, NULL);
    p->reaped = 0;
    return 1;
}

static fdp_process *check_process(lua_State *L)
{
    return check_object(L, 1, UV_PROCESS);
}

static int pr_pid(lua_State *L)
{
    lua_pushinteger(L, check_process(L)->pid);
    return 1;
}

/* p:wait([timeout]) -> "exit", code | "signal", signo | nil, msg, code */
static int pr_wait(lua_State *L)
{
    fdp_process *p = check_process(L);
    int timeout = check_timeout(L, 2);
    if (p->reaped)
        return luaL_error(L, "wait: process %d was already waited for", (int)p->pid);
    int status;
    int r = fdpass_wait(p->pid, timeout, &status);
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

/* p:kill([signal="TERM"]): the names of fdpass.os.signals and kill. */
static int pr_kill(lua_State *L)
{
    fdp_process *p = check_process(L);
    int sig = check_signal(L, 2, 2, SIGTERM);
    if (p->reaped) /* its pid may belong to someone else by now */
        return push_error(L, "kill", -ESRCH, NULL);
    if (kill(p->pid, sig) < 0)
        return push_error(L, "kill", -errno, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

static int pr_gc(lua_State *L)
{
    fdp_process *p = check_process(L);
    if (!p->reaped) /* reap it if it is gone; a live one is left alone */
        waitpid(p->pid, NULL, WNOHANG);
    return 0;
}

static int pr_tostring(lua_State *L)
{
    lua_pushfstring(L, "fdpass.process (%d)", (int)check_process(L)->pid);
    return 1;
}

int open_process(lua_State *L)
{
    static const luaL_Reg methods[] = {
        { "pid", pr_pid }, { "wait", pr_wait }, { "kill", pr_kill }, { NULL, NULL } };
    static const luaL_Reg meta[] = {
        { "__gc", pr_gc }, { "__tostring", pr_tostring }, { NULL, NULL } };
    static const luaL_Reg funcs[] = { { "spawn", l_spawn }, { NULL, NULL } };
    set_class(L, PROCESS_MT, methods, meta);
    set_funcs(L, funcs, "");
    return 0;
}
