-- What a LuaJIT FFI path over libfdpass's C API could cost (issue 14 asks
-- for at most 1,000 instructions per 1-descriptor round trip on LuaJIT):
-- the same loop as bench/lbench.lua "framed", calling fdpass_chan_send and
-- fdpass_chan_recv through the FFI and close(2) on each received
-- descriptor, with no fd objects. A measurement, not an API: it keeps the
-- C API's rules (the received descriptors are the caller's, all closed
-- here at once) but none of the binding's objects or Lua errors.
-- usage: luajit bench/ffibench.lua LIBFDPASS 1|253|5000|64k SECONDS|=COUNT
-- prints "messages descriptors seconds".
local ffi = require "ffi"
ffi.cdef [[
typedef struct fdpass_chan fdpass_chan;
typedef struct fdpass_msg { const void *data; size_t len; int *fds; size_t nfds; } fdpass_msg;
typedef struct fdpass_limits { size_t max_payload; size_t max_fds; } fdpass_limits;
fdpass_chan *fdpass_chan_new(int sock, const fdpass_limits *lim);
int fdpass_chan_send(fdpass_chan *c, const void *data, size_t len, const int *fds, size_t nfds, int timeout_ms);
int fdpass_chan_recv(fdpass_chan *c, fdpass_msg *msg, int timeout_ms);
int fdpass_socketpair(int type, int sv[2]);
int open(const char *path, int flags, ...);
int close(int fd);
]]
local lib = ffi.load(arg[1])
local work = arg[2]
local count = tonumber((arg[3] or ""):match("^=(%d+)$"))
local secs = tonumber(arg[3]) or count
local nfds = work == "64k" and 0 or tonumber(work)
assert(nfds and secs, "usage: ffibench.lua LIBFDPASS 1|253|5000|64k SECONDS|=COUNT")

local SOCK_SEQPACKET, O_RDONLY_CLOEXEC = 5, 0x80000
local sv = ffi.new("int[2]")
assert(lib.fdpass_socketpair(SOCK_SEQPACKET, sv) == 0, "socketpair")
local lim = ffi.new("fdpass_limits", { 1024 * 1024, 5000 })
local a, b = lib.fdpass_chan_new(sv[0], nil), lib.fdpass_chan_new(sv[1], lim)
local null = ffi.C.open("/dev/null", O_RDONLY_CLOEXEC)
local fds = ffi.new("int[?]", math.max(nfds, 1))
for i = 0, nfds - 1 do fds[i] = null end
local payload = nfds == 0 and string.rep("x", 65536) or "x"
local msg = ffi.new("fdpass_msg")
local close = ffi.C.close

local function iter()
  if lib.fdpass_chan_send(a, payload, #payload, fds, nfds, -1) < 0 then error("send failed") end
  if lib.fdpass_chan_recv(b, msg, -1) < 0 then error("recv failed") end
  local n = tonumber(msg.nfds)
  for i = 0, n - 1 do close(msg.fds[i]) end
  return n
end

if count then
  local got, start = 0, os.clock()
  for _ = 1, count do got = got + iter() end
  print(("%d %d %.6f"):format(count, got, os.clock() - start))
  os.exit(0)
end
local batch = nfds == 5000 and 1 or nfds >= 253 and 8 or nfds > 0 and 128 or 64
local now = os.clock -- CPU time of the process, as in cbench.c
local warm = now() + 0.05
while now() < warm do
  for _ = 1, batch do iter() end
end
local msgs, got, start = 0, 0, now()
local t
repeat
  for _ = 1, batch do got = got + iter() end
  msgs = msgs + batch
  t = now()
until t - start >= secs
assert(got == msgs * nfds, "descriptor count")
print(("%d %d %.6f"):format(msgs, got, t - start))
