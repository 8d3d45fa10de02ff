/* libFuzzer target: an upgrade handshake message as the new copy gets it.
 *
 * The input is a mode byte and a payload (what fdpass.encode would make of
 * a HELLO, FDS, STATE, CONN ... table). The payload is wrapped in valid
 * records (this file writes the 20-byte headers itself), with /dev/null
 * descriptors on them, and written into a socketpair; then, in Lua, the
 * binding's ch:recv() reads it (fdpass_chan_recv underneath) and fdpass.decode
 * and the checks of lua/fdpass/upgrade.lua's new-copy side look at it.
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
 * the message handling raises nothing; a decoded value encodes and decodes
 * again; no descriptor is left open after the state is closed. */
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

static const char SCRIPT[] =
    "local core, fd, payload, nfds = ...\n"
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
    "local msg, err, ecode = core.decode(data)\n"
    "if msg == nil and err ~= nil then\n"
    "  if type(err) ~= 'string' or ecode ~= 'EPROTO' then error('decode failed without EPROTO') end\n"
    "end\n"
    /* What upgrade.lua's expect(), take_over() and receive() do with it. */
    "local function same_identity(got, want)\n"
    "  if type(want) ~= 'table' then return false end\n"
    "  for _, k in ipairs { 'kind', 'family', 'socktype', 'listening', 'addr' } do\n"
    "    if got[k] ~= want[k] then return false, k end\n"
    "  end\n"
    "  return true\n"
    "end\n"
    "if type(msg) == 'table' and type(msg.t) == 'string' then\n"
    "  local t = msg.t\n"
    "  if t == 'WELCOME' or t == 'REFUSE' then\n"
    "    local _ = tostring(msg.reason), msg.pid, msg.generation, fds[1]\n"
    "  elseif t == 'FDS' then\n"
    "    local listeners, unclaimed, claimed = {}, {}, {}\n"
    "    for i, f in ipairs(fds) do\n"
    "      local name = type(msg.names) == 'table' and msg.names[i]\n"
    "      local want = type(msg.ids) == 'table' and msg.ids[i]\n"
    "      local info = f:info()\n"
    "      if type(name) == 'string' and info and same_identity(info, want) then\n"
    "        listeners[name] = listeners[name] or {}\n"
    "        table.insert(listeners[name], f)\n"
    "        claimed[#claimed + 1] = name\n"
    "      else\n"
    "        f:close()\n"
    "        unclaimed[#unclaimed + 1] = tostring(name)\n"
    "      end\n"
    "    end\n"
    "    local _ = table.concat(claimed, ',') .. table.concat(unclaimed, ',')\n"
    "  elseif t == 'CONN' and fds[1] then\n"
    "    local _ = { name = msg.name, fd = fds[1], buffered = msg.buffered or '', meta = msg.meta }\n"
    "  elseif t == 'HELLO' then\n"
    "    local v = msg.versions\n"
    "    if type(v) == 'table' then for _, x in ipairs(v) do local _ = x == 1 end end\n"
    "    local _ = msg.pid, msg.token == 'x'\n"
    "  end\n"
    "end\n"
    "if msg ~= nil then\n"
    "  local again = core.decode(core.encode(msg))\n"
    "  if type(again) ~= type(msg) then error('round trip changed the type') end\n"
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
    luaL_requiref(L, "_G", luaopen_base, 1);
    luaL_requiref(L, LUA_TABLIBNAME, luaopen_table, 1);
    luaL_requiref(L, LUA_STRLIBNAME, luaopen_string, 1);
    lua_settop(L, 0);
    if (luaL_loadbuffer(L, SCRIPT, sizeof SCRIPT - 1, "=fuzz_handshake") != LUA_OK)
        fuzz_fail("script: %s", lua_tostring(L, -1));
    luaL_requiref(L, "fdpass.core", luaopen_fdpass_core, 0);
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
