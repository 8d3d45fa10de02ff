/* The Lua C API differences between 5.1 (and LuaJIT 2.1), 5.3 and 5.4, in
 * one place: the binding's files are written against 5.4 and this header
 * maps what older versions lack. Nothing here changes behaviour on 5.4.
 *
 * Two things cannot be mapped and are documented instead (README, "Lua
 * versions"): `<close>` is 5.4 syntax (older Lua closes with :close() or
 * __gc), and on 5.1/LuaJIT every number is a double, so the codec sends an
 * integral number as an integer and integers beyond 2^53 lose precision. */
#ifndef FDPASS_LUA_COMPAT_H
#define FDPASS_LUA_COMPAT_H

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#if LUA_VERSION_NUM < 501 || LUA_VERSION_NUM == 502 || LUA_VERSION_NUM > 504
#error "fdpass.core builds for Lua 5.1, LuaJIT 2.1, Lua 5.3 and Lua 5.4"
#endif

/* ---- userdata ----------------------------------------------------------- */

#if LUA_VERSION_NUM >= 504
#define compat_newuserdata(L, size) lua_newuserdatauv((L), (size), 0)
#else
#define compat_newuserdata(L, size) lua_newuserdata((L), (size))
#endif

/* ---- what 5.1 and LuaJIT lack (LuaJIT has a few of these, with slightly
 * different semantics; both get ours so that they behave alike) --------- */

#if LUA_VERSION_NUM == 501

#define lua_absindex(L, i) ((i) > 0 || (i) <= LUA_REGISTRYINDEX ? (i) : lua_gettop(L) + (i) + 1)
#define lua_rawlen(L, i) lua_objlen((L), (i))

/* An integer is a number with no fraction that fits lua_Integer; anything
 * else (a float, a numeric string) is not, as on 5.3+. */
static inline lua_Integer compat_tointegerx(lua_State *L, int idx, int *isint)
{
    int ok = lua_type(L, idx) == LUA_TNUMBER;
    lua_Number n = ok ? lua_tonumber(L, idx) : 0;
    /* -0.0 stays a float, so that the codec keeps its sign */
    ok = ok && n == floor(n) && n >= -9223372036854775808.0 && n < 9223372036854775808.0 &&
         !(n == 0 && signbit(n));
    if (isint)
        *isint = ok;
    return ok ? (lua_Integer)n : 0;
}
#define lua_tointegerx compat_tointegerx
static inline int compat_isinteger(lua_State *L, int idx)
{
    int ok;
    compat_tointegerx(L, idx, &ok);
    return ok;
}
#define lua_isinteger compat_isinteger

/* 5.1's luaL_Buffer has a fixed-size block: a large read goes into a
 * userdata instead, turned into the string at the end. luaL_buffinit
 * pushes nothing, so the userdata is on top when the result is made. */
static inline char *compat_buffinitsize(lua_State *L, luaL_Buffer *b, size_t size)
{
    luaL_buffinit(L, b);
    return lua_newuserdata(L, size ? size : 1);
}
static inline void compat_pushresultsize(luaL_Buffer *b, size_t n)
{
    lua_State *L = b->L;
    lua_pushlstring(L, lua_touserdata(L, -1), n);
    lua_remove(L, -2);
}
#define luaL_buffinitsize compat_buffinitsize
#define luaL_pushresultsize compat_pushresultsize
#endif

#endif
