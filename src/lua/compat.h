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
#define luaL_len(L, i) ((lua_Integer)lua_objlen((L), (i)))

static inline void compat_geti(lua_State *L, int idx, lua_Integer i)
{
    idx = lua_absindex(L, idx);
    lua_pushinteger(L, i);
    lua_gettable(L, idx);
}
#define lua_geti compat_geti

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

/* As 5.3+: a number with a fraction is an error, not truncated. */
static inline lua_Integer compat_checkinteger(lua_State *L, int arg)
{
    if (!lua_isnumber(L, arg))
        luaL_argerror(L, arg, lua_pushfstring(L, "number expected, got %s", luaL_typename(L, arg)));
    lua_Number n = lua_tonumber(L, arg);
    if (n != floor(n) || n < -9223372036854775808.0 || n >= 9223372036854775808.0)
        luaL_argerror(L, arg, "number has no integer representation");
    return (lua_Integer)n;
}
static inline lua_Integer compat_optinteger(lua_State *L, int arg, lua_Integer def)
{
    return lua_isnoneornil(L, arg) ? def : compat_checkinteger(L, arg);
}
#undef luaL_checkinteger
#undef luaL_optinteger
#define luaL_checkinteger compat_checkinteger
#define luaL_optinteger compat_optinteger

/* 5.3+ names the metatable (__name), which tostring and the specs read. */
static inline int compat_newmetatable(lua_State *L, const char *tname)
{
    if (!luaL_newmetatable(L, tname))
        return 0;
    lua_pushstring(L, tname);
    lua_setfield(L, -2, "__name");
    return 1;
}
#define luaL_newmetatable compat_newmetatable

static inline void compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    for (; l->name; l++) {
        for (int i = 0; i < nup; i++)
            lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
#define luaL_setfuncs compat_setfuncs

static inline void *compat_testudata(lua_State *L, int idx, const char *tname)
{
    void *p = lua_touserdata(L, idx);
    if (!p || !lua_getmetatable(L, idx))
        return NULL;
    luaL_getmetatable(L, tname);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? p : NULL;
}
#define luaL_testudata compat_testudata

static inline void compat_setmetatable(lua_State *L, const char *tname)
{
    luaL_getmetatable(L, tname);
    lua_setmetatable(L, -2);
}
#define luaL_setmetatable compat_setmetatable

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

/* ---- Lua io files --------------------------------------------------------
 * Every version keeps the FILE * first in the userdata of an io file
 * (5.1: FILE **; LuaJIT: IOFileUD; 5.2+: luaL_Stream), under the registry
 * name "FILE*". */

#ifndef LUA_FILEHANDLE
#define LUA_FILEHANDLE "FILE*"
#endif

/* The io file at idx: 1 and its FILE * in *f (NULL when it is closed), or
 * 0 when the value is no io file. */
static inline int compat_tofile(lua_State *L, int idx, FILE **f)
{
#if LUA_VERSION_NUM >= 503
    luaL_Stream *s = luaL_testudata(L, idx, LUA_FILEHANDLE);
    if (s)
        *f = s->closef ? s->f : NULL;
    return s != NULL;
#else
    FILE **p = luaL_testudata(L, idx, LUA_FILEHANDLE);
    if (p)
        *f = *p;
    return p != NULL;
#endif
}

#if LUA_VERSION_NUM >= 503
static inline int compat_io_fclose(lua_State *L)
{
    luaL_Stream *s = luaL_checkudata(L, 1, LUA_FILEHANDLE);
    errno = 0;
    return luaL_fileresult(L, fclose(s->f) == 0, NULL);
}
#endif

/* Pushes an io file that is closed until compat_setfile gives it a FILE *,
 * or returns 0 with errno set and nothing pushed.
 * 5.1 and LuaJIT have no API to make one (LuaJIT's io only accepts its own
 * userdata type), so there the io library opens it, on /dev/null, and
 * compat_setfile exchanges that FILE * for the caller's. */
static inline int compat_newfile(lua_State *L)
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
    if (!luaL_testudata(L, -3, LUA_FILEHANDLE)) {
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
static inline void compat_setfile(lua_State *L, int idx, FILE *f)
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

#endif
