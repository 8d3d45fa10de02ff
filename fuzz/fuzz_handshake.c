/* libFuzzer target: an upgrade handshake message as the new copy gets it.
 *
 * The input is a mode byte and a payload (what fdpass.codec.encode would make of
 * a HELLO, FDS, STATE, CONN ... table). The payload is wrapped in valid
 * records (this file writes the 20-byte headers itself), with /dev/null
 * descriptors on them, and written into a socketpair; then, in Lua, the
 * binding's ch:recv() reads it (fdpass_chan_recv underneath) and
 * fdpass.upgrade.protocol (decode, claim, connections, negotiate, failure)
 * handles it as both sides of an upgrade do.
 *
 *   mode: bit 0     SOCK_SEQPACKET (else SOCK_STREAM)
 *         bits 1-3  record payload size: 65536, 1, 2, 3, 7, 20, 64, 255
 *                   (at least payload / 64: at most 64 records)
 *         bits 4-6  descriptors: 0 .. 7
 *         bit 7     one descriptor per record from the first (the rest on
 *                   the last), else all on the first record
 *
 * Checked: the message arrives whole (same bytes, same descriptor count,
 * each a /dev/null) and alone; decode returns a value or nil, msg, EPROTO;
 * the message handling raises nothing and loses no descriptor; a decoded
 * value encodes and decodes again; no descriptor is left open after the
 * state is closed. */
#include "fuzz_common.h"
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>
#include "fdpass.h"

int luaopen_fdpass_core(lua_State *L);

/* The checks are fdpass.upgrade.protocol's own (lua/, found through
 * FDPASS_LUA_DIR): what is fuzzed is what both sides run. */
static const char SCRIPT[] =
    "local core, fd, payload, nfds = ...\n"
    "local P = require 'fdpass.upgrade.protocol'\n"
    "local ch = core.channel(fd)\n"
    "ch:limits { max_payload = 1 << 20, max_fds = 64 }\n"
    "local data, fds, code = ch:recv(5)\n"
    "if not data then error('recv: ' .. tostring(fds) .. ' ' .. tostring(code)) end\n"
    "if data ~= payload then error('payload changed in transit') end\n"
    "if #fds ~= nfds then error(('%d descriptors sent, %d came'):format(nfds, #fds)) end\n"
    "local extra, _, c2 = ch:recv(0)\n"
    "if extra or c2 ~= 'EOF' then error('after the message: ' .. tostring(c2)) end\n"
    "for _, f in ipairs(fds) do\n"
    "  local info = f:info()\n"
    "  if info.kind ~= 'char' or not info.cloexec then error('not a close-on-exec char device') end\n"
    "end\n"
    "local value, err, ecode = core.decode(data)\n"
    "if value == nil and err ~= nil then\n"
    "  if type(err) ~= 'string' or ecode ~= 'EPROTO' then error('decode failed without EPROTO') end\n"
    "end\n"
    /* What the old side and the new copy do with a message. */
    "local msg, why = P.decode(data)\n"
    "if not msg and type(why) ~= 'string' then error('P.decode gave no reason') end\n"
    "if msg then\n"
    "  local t = msg.t\n"
    "  if t == 'FDS' then\n"
    "    local listeners, claimed, unclaimed = P.claim(msg, fds)\n"
    "    local n = 0\n"
    "    for _, list in pairs(listeners) do n = n + #list end\n"
    "    if n ~= #claimed or n + #unclaimed ~= #fds then error('claim lost a descriptor') end\n"
    "  elseif t == 'CONN' or t == 'CONNS' then\n"
    "    local list = P.connections(msg, fds)\n"
    "    for _, c in ipairs(list) do\n"
    "      if type(c.buffered) ~= 'string' then error('buffered is no string') end\n"
    "    end\n"
    "  elseif t == 'HELLO' then\n"
    "    local v, reason = P.negotiate(P.VERSIONS, msg.versions)\n"
    "    if not v and type(reason) ~= 'string' then error('negotiate gave no reason') end\n"
    "  end\n"
    "  local f = P.failure { phase = type(msg.phase) == 'string' and msg.phase or 'hello', pid = 1234,\n"
    "    reason = msg.reason, stderr = type(msg.stderr) == 'string' and msg.stderr or nil, exited = true,\n"
    "    exit = { how = 'exit', code = 1 } }\n"
    "  if type(tostring(f)) ~= 'string' then error('a failure without a message') end\n"
    "end\n"
    "if value ~= nil then\n"
    "  local again = core.decode(core.encode(value))\n"
    "  if type(again) ~= type(value) then error('round trip changed the type') end\n"
    "end\n"
    "for _, f in ipairs(fds) do pcall(f.close, f) end\n"
    "ch:close()\n";

static const unsigned SPLIT[8] = { 65536, 1, 2, 3, 7, 20, 64, 255 };

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24;
}

/* One record: header and payload in one sendmsg, its descriptors on it. */
static int send_record(int sock, unsigned flags, const uint8_t *data, size_t len,
                       size_t nfds, size_t total_len, size_t total_fds)
{
    unsigned char hdr[FDPASS_HEADER_SIZE] = { 'F', 'D', 'P', 'S', FDPASS_PROTOCOL };
    hdr[5] = flags;
    hdr[6] = nfds;
    hdr[7] = nfds >> 8;
    put32(hdr + 8, len);
    put32(hdr + 12, total_len);
    put32(hdr + 16, total_fds);
    struct iovec iov[2] = { { hdr, sizeof hdr }, { (void *)data, len } };
    union {
        struct cmsghdr align;
        char b[CMSG_SPACE(sizeof(int) * 8)];
    } cb;
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = len ? 2 : 1 };
    if (nfds) {
        int fds[8];
        for (size_t i = 0; i < nfds; i++)
            fds[i] = fuzz_devnull();
        memset(&cb, 0, sizeof cb);
        m.msg_control = cb.b;
        m.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t w = sendmsg(sock, &m, MSG_DONTWAIT | MSG_NOSIGNAL);
    return w == (ssize_t)(sizeof hdr + len) ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > (1u << 20))
        return 0;
    fuzz_devnull();
    int before = fuzz_fdcount();
    unsigned mode = data[0];
    const uint8_t *payload = data + 1;
    size_t len = size - 1, nfds = (mode >> 4) & 7, split = SPLIT[(mode >> 1) & 7];
    if (split < (len + 63) / 64)
        split = (len + 63) / 64;
    int spread = mode & 128;

    int sv[2];
    int e = fdpass_socketpair(mode & 1 ? SOCK_SEQPACKET : SOCK_STREAM, sv);
    if (e < 0)
        fuzz_fail("socketpair: %s", fdpass_strerror(e));
    int bufsize = 8 << 20;
    if (setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &bufsize, sizeof bufsize) < 0)
        setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &bufsize, sizeof bufsize);

    size_t records = len ? (len + split - 1) / split : 1, off = 0, fds_left = nfds;
    int sent = 0;
    for (size_t i = 0; i < records; i++) {
        size_t n = len - off < split ? len - off : split;
        size_t f = spread ? (i + 1 == records ? fds_left : fds_left > 0) : (i == 0 ? nfds : 0);
        unsigned flags = (i ? 2 : 0) | (i + 1 < records ? 1 : 0); /* CONT, MORE */
        if (send_record(sv[0], flags, payload + off, n, f, len, nfds) < 0)
            break; /* the socket would not take it: nothing to learn */
        off += n;
        fds_left -= f;
        sent = i + 1 == records;
    }
    close(sv[0]);
    if (!sent) {
        close(sv[1]);
        return 0;
    }

    lua_State *L = luaL_newstate();
    if (!L)
        fuzz_fail("no lua_State");
    luaL_openlibs(L);
    /* fdpass.core is linked in; the Lua modules come from the tree */
    lua_getglobal(L, "package");
    lua_pushliteral(L, FDPASS_LUA_DIR "/?.lua");
    lua_setfield(L, -2, "path");
    lua_getfield(L, -1, "preload");
    lua_pushcfunction(L, luaopen_fdpass_core);
    lua_setfield(L, -2, "fdpass.core");
    lua_settop(L, 0);
    if (luaL_loadbuffer(L, SCRIPT, sizeof SCRIPT - 1, "=fuzz_handshake") != LUA_OK)
        fuzz_fail("script: %s", lua_tostring(L, -1));
    lua_getglobal(L, "require");
    lua_pushliteral(L, "fdpass.core");
    lua_call(L, 1, 1);
    lua_pushinteger(L, sv[1]); /* the channel adopts it */
    lua_pushlstring(L, (const char *)payload, len);
    lua_pushinteger(L, (lua_Integer)nfds);
    if (lua_pcall(L, 4, 0, 0) != LUA_OK)
        fuzz_fail("%s", lua_tostring(L, -1));
    lua_close(L);
    int after = fuzz_fdcount();
    if (after != before)
        fuzz_fail("descriptors before %d, after %d", before, after);
    return 0;
}
