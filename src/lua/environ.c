/* What a process hands on when it execs: its environment and the
 * descriptors that are not close-on-exec. Socket activation arrives through
 * both (LISTEN_FDS and descriptors 3 ...), and lua/fdpass/systemd.lua must
 * be able to keep them from reaching the programs this one starts.
 *   fdpass.setenv(name, value) / fdpass.setenv(name, nil) unsets
 *   fd:cloexec([on]) -> whether FD_CLOEXEC is set, after setting it if asked */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include "binding.h"

static int l_setenv(lua_State *L)
{
    size_t nlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    /* "A\0B" would set A: another variable than the one named */
    luaL_argcheck(L, name[0] && !strchr(name, '=') && strlen(name) == nlen, 1,
                  "a name, without '=' or a NUL byte");
    int r;
    if (lua_isnoneornil(L, 2)) {
        r = unsetenv(name);
    } else {
        size_t len;
        const char *value = luaL_checklstring(L, 2, &len);
        luaL_argcheck(L, strlen(value) == len, 2, "value contains a NUL byte");
        r = setenv(name, value, 1);
    }
    if (r < 0)
        return push_error(L, "setenv", -errno, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* The descriptor flag is this process's own (unlike O_NONBLOCK, which the
 * open file shares with every holder): changing it affects nobody else.
 * Still only changed when asked, like fd:nonblock(). */
static int fd_cloexec(lua_State *L)
{
    return fd_flag(L, "cloexec", F_GETFD, F_SETFD, FD_CLOEXEC);
}

int open_environ(lua_State *L) /* after open_fd: adds an fd method */
{
    static const luaL_Reg methods[] = { { "cloexec", fd_cloexec }, { NULL, NULL } };
    static const luaL_Reg funcs[] = { { "setenv", l_setenv }, { NULL, NULL } };
    add_fd_methods(L, methods);
    luaL_setfuncs(L, funcs, 0);
    return 0;
}
