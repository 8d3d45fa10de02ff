/* libFuzzer target: fdpass.codec.decode on untrusted bytes, and the round trip.
 *
 * Each input gets a fresh lua_State with fdpass.core loaded (the binding
 * and libfdpass are compiled into this binary). decode(input) must return
 * a value or nil, message, "EPROTO", and never raise. When it decodes:
 * encode(value) must not raise, must decode again, every strict prefix of
 * it must be refused (the format is self-delimiting), and the value decoded
 * from it must be the same value: same canonical form (tables compared by
 * their sorted pairs, numbers by subtype and bits) and encoding of the same
 * length. */
#include "fuzz_common.h"
#include <stdint.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>

int luaopen_fdpass_core(lua_State *L);

/* Upvalues of check(): 1 encode, 2 decode. */
#define ENCODE lua_upvalueindex(1)
#define DECODE lua_upvalueindex(2)

static void push_u32(lua_State *L, size_t v)
{
    unsigned char p[4] = { (unsigned char)v, (unsigned char)(v >> 8),
                           (unsigned char)(v >> 16), (unsigned char)(v >> 24) };
    lua_pushlstring(L, (const char *)p, 4);
}

typedef struct {
    const char *s;
    size_t n;
} piece;

static int piece_cmp(const void *a, const void *b)
{
    const piece *x = a, *y = b;
    int c = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Pushes a string that equals for equal values and differs otherwise. */
static void canon(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 10, "canon");
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        lua_pushliteral(L, "n");
        return;
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, idx) ? "t" : "f");
        return;
    case LUA_TNUMBER: {
        char b[9];
        if (lua_isinteger(L, idx)) {
            lua_Integer i = lua_tointeger(L, idx);
            b[0] = 'i';
            memcpy(b + 1, &i, 8);
        } else {
            lua_Number d = lua_tonumber(L, idx);
            b[0] = 'd';
            memcpy(b + 1, &d, 8);
        }
        lua_pushlstring(L, b, 9);
        return;
    }
    case LUA_TSTRING:
        lua_pushliteral(L, "s");
        push_u32(L, lua_rawlen(L, idx));
        lua_pushvalue(L, idx);
        lua_concat(L, 3);
        return;
    case LUA_TTABLE:
        break;
    default:
        luaL_error(L, "decoded a %s", luaL_typename(L, idx));
    }
    /* Each pair as len(key) key value, sorted, so the order of pairs()
     * does not matter. */
    lua_newtable(L);
    int arr = lua_gettop(L);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        int v = lua_gettop(L), k = v - 1;
        canon(L, k);
        lua_pushinteger(L, (lua_Integer)lua_rawlen(L, -1));
        lua_insert(L, -2);
        canon(L, v);
        lua_concat(L, 3);
        lua_rawseti(L, arr, (lua_Integer)++n);
        lua_pop(L, 1);
    }
    piece *ps = lua_newuserdatauv(L, (n ? n : 1) * sizeof *ps, 0);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, arr, (lua_Integer)i + 1);
        ps[i].s = lua_tolstring(L, -1, &ps[i].n); /* anchored in arr */
        lua_pop(L, 1);
    }
    qsort(ps, n, sizeof *ps, piece_cmp);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addchar(&b, 'T');
    for (size_t i = 0; i < n; i++) {
        unsigned char len[4] = { (unsigned char)ps[i].n, (unsigned char)(ps[i].n >> 8),
                                 (unsigned char)(ps[i].n >> 16), (unsigned char)(ps[i].n >> 24) };
        luaL_addlstring(&b, (const char *)len, 4);
        luaL_addlstring(&b, ps[i].s, ps[i].n);
    }
    luaL_pushresult(&b);
    lua_replace(L, arr);
    lua_settop(L, arr);
}

/* decode(s) in protected mode: 1 and the value, or 0 (refused). Raising
 * is a finding. */
static int decode(lua_State *L, const char *s, size_t n)
{
    lua_pushvalue(L, DECODE);
    lua_pushlstring(L, s, n);
    if (lua_pcall(L, 1, 3, 0) != LUA_OK)
        fuzz_fail("decode raised: %s", lua_tostring(L, -1));
    if (lua_isnil(L, -3) && !lua_isnil(L, -2)) {
        if (!lua_isstring(L, -2) || !lua_isstring(L, -1) || strcmp(lua_tostring(L, -1), "EPROTO") != 0)
            fuzz_fail("decode failed without a message and EPROTO");
        lua_pop(L, 3);
        return 0;
    }
    if (!lua_isnil(L, -2) || !lua_isnil(L, -1))
        fuzz_fail("decode returned more than a value");
    lua_pop(L, 2);
    return 1;
}

static void encode(lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    lua_pushvalue(L, ENCODE);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        fuzz_fail("encode raised on a decoded value: %s", lua_tostring(L, -1));
    if (!lua_isstring(L, -1))
        fuzz_fail("encode returned no string");
}

static int check(lua_State *L)
{
    size_t len;
    const char *in = lua_tolstring(L, 1, &len);
    if (!decode(L, in, len))
        return 0;
    int v1 = lua_gettop(L);
    encode(L, v1);
    int e1 = lua_gettop(L);
    size_t n1;
    const char *s1 = lua_tolstring(L, e1, &n1);
    if (n1 > len)
        fuzz_fail("encoding of %zu bytes grew to %zu", len, n1);
    for (size_t cut = 0; cut < n1; cut += 1 + cut / 4) /* strict prefixes */
        if (decode(L, s1, cut)) {
            fuzz_fail("a %zu-byte prefix of a %zu-byte encoding decodes", cut, n1);
        }
    if (!decode(L, s1, n1))
        fuzz_fail("encode's output does not decode");
    int v2 = lua_gettop(L);
    encode(L, v2);
    if (lua_rawlen(L, -1) != n1)
        fuzz_fail("re-encoding gave %zu bytes, the first %zu", (size_t)lua_rawlen(L, -1), n1);
    canon(L, v1);
    canon(L, v2);
    if (!lua_rawequal(L, -1, -2))
        fuzz_fail("decode(encode(v)) is not v");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lua_State *L = luaL_newstate();
    if (!L)
        fuzz_fail("no lua_State");
    luaL_requiref(L, "fdpass.core", luaopen_fdpass_core, 0);
    lua_getfield(L, -1, "encode");
    lua_getfield(L, -2, "decode");
    lua_pushcclosure(L, check, 2);
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK)
        fuzz_fail("%s", lua_tostring(L, -1));
    lua_close(L);
    return 0;
}
