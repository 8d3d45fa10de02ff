/* fdpass.core: the Lua binding of libfdpass, a table of opens. Each class
 * (fd.c, fdset.c, channel.c, server.c, process.c, epoll.c) and each kit (os.c,
 * net.c, loop.c, codec.c) adds its functions to the module table; base.c
 * is what they share. lua/fdpass.lua and lua/fdpass/{os,net,loop,codec}.lua
 * are the faces users require. */
#include "base.h"

int open_fd(lua_State *L);
int open_fdset(lua_State *L);
int open_channel(lua_State *L);
int open_server(lua_State *L);
int open_process(lua_State *L);
int open_os(lua_State *L);
int open_net(lua_State *L);
int open_loop(lua_State *L);
int open_codec(lua_State *L);
int open_epoll(lua_State *L);

static const lua_CFunction opens[] = {
    open_fd, open_fdset, open_channel, open_server, open_process,
    open_epoll, open_os, open_net, open_loop, open_codec, NULL };

int luaopen_fdpass_core(lua_State *L)
{
    new_classes(L);
    lua_newtable(L);
    for (int i = 0; opens[i]; i++)
        opens[i](L);
    lua_pushliteral(L, FDPASS_VERSION);
    lua_setfield(L, -2, "_VERSION");
    lua_pushinteger(L, FDPASS_MAX_FDS_PER_SENDMSG);
    lua_setfield(L, -2, "MAX_FDS_PER_SENDMSG");
    lua_pushinteger(L, FDPASS_RECORD_MAX);
    lua_setfield(L, -2, "RECORD_MAX");
    return 1;
}
