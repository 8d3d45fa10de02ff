/* The few Lua C API differences between versions, in one place. Only 5.4
 * is built today; older versions are added here, not with #ifdefs in the
 * binding's files. */
#ifndef FDPASS_LUA_COMPAT_H
#define FDPASS_LUA_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if LUA_VERSION_NUM < 504
#error "fdpass.core: Lua 5.4 is required for now"
#endif

/* A userdata with no user values. */
#define compat_newuserdata(L, size) lua_newuserdatauv((L), (size), 0)

#endif
