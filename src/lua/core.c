/* fdpass.core: the Lua binding of libfdpass. This file holds what every
 * class shares and the module's entry point; each class has its own file. */
#include <limits.h>
#include <math.h>
#include "binding.h"

int push_error(lua_State *L, const char *what, int err, const char *detail)
{
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", what, detail ? detail : fdpass_strerror(err));
    lua_pushstring(L, fdpass_errname(err));
    return 3;
}

int check_timeout(lua_State *L, int idx)
{
    if (lua_isnoneornil(L, idx))
        return -1;
    lua_Number t = luaL_checknumber(L, idx);
    luaL_argcheck(L, t >= 0, idx, "timeout must be nil or >= 0 seconds");
    lua_Number ms = ceil(t * 1000);
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

void new_class(lua_State *L, const char *name, const luaL_Reg *methods,
               const luaL_Reg *meta)
{
    luaL_newmetatable(L, name); /* sets __name, which luaL_tolstring shows */
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

void add_fd_methods(lua_State *L, const luaL_Reg *methods)
{
    luaL_getmetatable(L, FD_MT);
    lua_getfield(L, -1, "__index");
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 2);
}

int luaopen_fdpass_core(lua_State *L)
{
    lua_newtable(L);
    open_fd(L);
    open_channel(L);
    open_process(L);
    open_netio(L);
    open_codec(L);
    open_dgram(L);
    open_environ(L);
    open_epoll(L);
    lua_pushliteral(L, FDPASS_VERSION);
    lua_setfield(L, -2, "_VERSION");
    lua_pushinteger(L, FDPASS_MAX_FDS_PER_SENDMSG);
    lua_setfield(L, -2, "MAX_FDS_PER_SENDMSG");
    lua_pushinteger(L, FDPASS_RECORD_MAX);
    lua_setfield(L, -2, "RECORD_MAX");
    return 1;
}
