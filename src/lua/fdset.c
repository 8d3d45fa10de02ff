/* fd sets: many received descriptors in one object, what
 * ch:recv(timeout, "set") gives: one allocation for a whole message instead
 * of an object per descriptor. The set owns what it holds: closed by
 * set:close(), __close or __gc; set:take(i) hands one out as an fd object;
 * set[i] is the number, still the set's. */
#include <unistd.h>
#include "base.h"

static fdp_fdset *check_set(lua_State *L)
{
    return check_object(L, 1, UV_FDSET);
}

static size_t check_slot(lua_State *L, fdp_fdset *s, int arg)
{
    lua_Integer i = check_integer(L, arg);
    arg_check(L, i >= 1 && (size_t)i <= s->n, arg, "index out of range");
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
    fdp_fdset *s = check_set(L);
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
    fdp_fdset *s = check_set(L);
    size_t i = check_slot(L, s, 2);
    if (s->fds[i] < 0)
        return luaL_error(L, "descriptor %d of the set was taken or closed", (int)i + 1);
    push_fd_take(L, &s->fds[i]);
    return 1;
}

/* set:close() -> how many it closed; what was taken is not the set's. */
static int set_close(lua_State *L)
{
    fdp_fdset *s = check_set(L);
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

int open_fdset(lua_State *L)
{
    static const luaL_Reg methods[] = { { "take", set_take }, { "close", set_close }, { NULL, NULL } };
    static const luaL_Reg meta[] = {
        { "__index", set_index }, { "__len", set_len }, { "__gc", set_close },
        { "__close", set_close }, { "__tostring", set_tostring }, { NULL, NULL } };
    luaL_getmetatable(L, FDSET_MT);
    set_funcs(L, meta, "fdset:");
    lua_newtable(L);
    set_funcs(L, methods, "fdset:");
    lua_setfield(L, -2, "methods");
    lua_pop(L, 1);
    return 0;
}
