/* A compact binary encoding of Lua values (nil, booleans, integers,
 * floats, strings, tables of those) for the upgrade handshake and app
 * state. The decoder reads untrusted bytes: every length is checked
 * against what is left, nesting is bounded, and a bad input is an error
 * value, never a crash or a raise (short of running out of memory).
 *
 *   0x00 nil   0x01 false   0x02 true
 *   0x03 integer: 8 bytes little-endian two's complement
 *   0x04 float: 8 bytes IEEE 754 little-endian
 *   0x05 string: u32 length, bytes
 *   0x06 table: u32 pair count, then key, value for each pair
 * An encoded value starts with the byte 0xFD and the format version 1.
 * Decoding costs memory in proportion to the bytes read: a table's pair
 * count is a claim, not a proof, so no slot is made before its pair has
 * arrived (a `false = nil` pair is 2 bytes and makes nothing). */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "base.h"

#define CODEC_MAGIC 0xFD
#define CODEC_VERSION 1
#define MAX_DEPTH 64

enum { T_NIL, T_FALSE, T_TRUE, T_INT, T_FLOAT, T_STRING, T_TABLE };

/* The encoder's output: a growing block owned by a userdata, so that a
 * raised error (a function inside the value) frees it through __gc. A
 * luaL_Buffer cannot be used: encoding walks tables on the stack between
 * additions, which luaL_Buffer forbids. */
typedef struct {
    char *p;
    size_t len, cap;
} obuf;

#define OBUF_MT "fdpass.codec.buffer"

static int obuf_gc(lua_State *L)
{
    obuf *b = lua_touserdata(L, 1);
    free(b->p);
    b->p = NULL;
    return 0;
}

static void add(lua_State *L, obuf *b, const void *data, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            luaL_error(L, "encode: out of memory");
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void add_byte(lua_State *L, obuf *b, int c)
{
    unsigned char u = (unsigned char)c;
    add(L, b, &u, 1);
}

static void put_u64(lua_State *L, obuf *b, uint64_t v)
{
    unsigned char p[8];
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (8 * i));
    add(L, b, p, 8);
}

static void put_u32(lua_State *L, obuf *b, uint32_t v)
{
    unsigned char p[4] = { (unsigned char)v, (unsigned char)(v >> 8),
                           (unsigned char)(v >> 16), (unsigned char)(v >> 24) };
    add(L, b, p, 4);
}

/* The value at stack index idx (absolute); the buffer sits below it. */
static void encode_value(lua_State *L, obuf *b, int idx, int depth)
{
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        add_byte(L, b, T_NIL);
        break;
    case LUA_TBOOLEAN:
        add_byte(L, b, lua_toboolean(L, idx) ? T_TRUE : T_FALSE);
        break;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) {
            add_byte(L, b, T_INT);
            put_u64(L, b, (uint64_t)lua_tointeger(L, idx));
        } else {
            double d = lua_tonumber(L, idx);
            uint64_t u;
            memcpy(&u, &d, 8);
            add_byte(L, b, T_FLOAT);
            put_u64(L, b, u);
        }
        break;
    case LUA_TSTRING: {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        if (len > 0xffffffffu)
            luaL_error(L, "encode: string over 4 GiB");
        add_byte(L, b, T_STRING);
        put_u32(L, b, (uint32_t)len);
        add(L, b, s, len);
        break;
    }
    case LUA_TTABLE: {
        if (depth >= MAX_DEPTH)
            luaL_error(L, "encode: tables nested deeper than %d (a cycle?)", MAX_DEPTH);
        luaL_checkstack(L, 4, "encode");
        uint32_t n = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            n++;
            lua_pop(L, 1);
        }
        add_byte(L, b, T_TABLE);
        put_u32(L, b, n);
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            int top = lua_gettop(L);
            encode_value(L, b, top - 1, depth + 1);
            encode_value(L, b, top, depth + 1);
            lua_pop(L, 1);
        }
        break;
    }
    default:
        luaL_error(L, "encode: cannot encode a %s", luaL_typename(L, idx));
    }
}

/* fdpass.codec.encode(value) -> string */
static int l_encode(lua_State *L)
{
    if (lua_isnone(L, 1))
        arg_error(L, 1, "value expected");
    lua_settop(L, 1);
    obuf *b = compat_newuserdata(L, sizeof *b);
    memset(b, 0, sizeof *b);
    luaL_getmetatable(L, OBUF_MT);
    lua_setmetatable(L, -2);
    add_byte(L, b, CODEC_MAGIC);
    add_byte(L, b, CODEC_VERSION);
    encode_value(L, b, 1, 0);
    lua_pushlstring(L, b->p, b->len);
    free(b->p);
    b->p = NULL;
    return 1;
}

typedef struct {
    const unsigned char *p, *end;
    const char *error;
} reader;

static int need(reader *r, size_t n)
{
    if ((size_t)(r->end - r->p) < n) {
        r->error = "truncated input";
        return 0;
    }
    return 1;
}

static uint64_t get_u64(reader *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += 8;
    return v;
}

static uint32_t get_u32(reader *r)
{
    uint32_t v = r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
                 (uint32_t)r->p[3] << 24;
    r->p += 4;
    return v;
}

/* Pushes one value, or sets r->error and returns 0 (the stack may hold
 * partial tables, which the caller drops). */
static int decode_value(lua_State *L, reader *r, int depth)
{
    if (!need(r, 1))
        return 0;
    if (!lua_checkstack(L, 3)) {
        r->error = "too deep";
        return 0;
    }
    switch (*r->p++) {
    case T_NIL: lua_pushnil(L); return 1;
    case T_FALSE: lua_pushboolean(L, 0); return 1;
    case T_TRUE: lua_pushboolean(L, 1); return 1;
    case T_INT:
        if (!need(r, 8))
            return 0;
        lua_pushinteger(L, (lua_Integer)get_u64(r));
        return 1;
    case T_FLOAT: {
        if (!need(r, 8))
            return 0;
        uint64_t u = get_u64(r);
        double d;
        memcpy(&d, &u, 8);
        lua_pushnumber(L, d);
        return 1;
    }
    case T_STRING: {
        if (!need(r, 4))
            return 0;
        uint32_t len = get_u32(r);
        if (!need(r, len))
            return 0;
        lua_pushlstring(L, (const char *)r->p, len);
        r->p += len;
        return 1;
    }
    case T_TABLE: {
        if (depth >= MAX_DEPTH) {
            r->error = "tables nested too deep";
            return 0;
        }
        if (!need(r, 4))
            return 0;
        uint32_t n = get_u32(r);
        if (n > (size_t)(r->end - r->p) / 2) { /* each pair takes >= 2 bytes */
            r->error = "table count larger than the input";
            return 0;
        }
        lua_newtable(L); /* grows with what arrives, never with what was announced */
        for (uint32_t i = 0; i < n; i++) {
            if (!decode_value(L, r, depth + 1) || !decode_value(L, r, depth + 1))
                return 0;
            int kt = lua_type(L, -2);
            if (kt == LUA_TNIL || (kt == LUA_TNUMBER && lua_tonumber(L, -2) != lua_tonumber(L, -2))) {
                r->error = "nil or NaN table key";
                return 0;
            }
            lua_rawset(L, -3);
        }
        return 1;
    }
    default:
        r->error = "unknown type tag";
        return 0;
    }
}

/* fdpass.codec.decode(string) -> value | nil, msg, "EPROTO" */
static int l_decode(lua_State *L)
{
    size_t len;
    const char *s = check_lstring(L, 1, &len);
    reader r = { (const unsigned char *)s, (const unsigned char *)s + len, NULL };
    lua_settop(L, 1);
    if (len < 2 || r.p[0] != CODEC_MAGIC)
        r.error = "not an fdpass encoding";
    else if (r.p[1] != CODEC_VERSION)
        r.error = "unknown encoding version";
    else {
        r.p += 2;
        if (decode_value(L, &r, 0) && r.p != r.end)
            r.error = "trailing bytes";
    }
    if (r.error) {
        lua_settop(L, 1);
        return push_error(L, "decode", -EPROTO, r.error);
    }
    return 1;
}

int open_codec(lua_State *L)
{
    static const luaL_Reg funcs[] = { { "encode", l_encode }, { "decode", l_decode }, { NULL, NULL } };
    set_funcs(L, funcs, "");
    /* encode's buffer frees its block when a raise leaves it to the collector */
    luaL_newmetatable(L, OBUF_MT);
    lua_pushcfunction(L, obuf_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    return 0;
}
