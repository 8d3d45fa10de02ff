-- The Lua side of `make bench`: the fdpass module doing the floor's work.
-- usage: lua5.4 bench/lbench.lua framed|raw|set|into 1|253|5000|64k SECONDS|=COUNT
-- prints "messages descriptors seconds".
--
-- One process, one seqpacket socketpair: send a message, receive it, close
-- every fd object that arrived with fd:close(), as a user would. The
-- descriptors sent are one fd object (on /dev/null) repeated. framed is
-- ch:send/ch:recv (5000 descriptors: one ch:send); raw is
-- ch:sendmsg/ch:recvmsg (5000: 20 sendmsg of at most 253); set is
-- ch:send of descriptor numbers and ch:recv(nil, "set"), one fdpass.fdset
-- per message closed with set:close(), instead of an object per descriptor;
-- into is framed with ch:recv(nil, into): one table refilled every time.
local fdpass = require "fdpass"

local mode, work, secs = arg[1], arg[2], tonumber(arg[3])
local count = tonumber((arg[3] or ""):match("^=(%d+)$")) -- exact iterations, no warm-up (callgrind)
secs = secs or count
local nfds = work == "64k" and 0 or tonumber(work)
assert((mode == "framed" or mode == "raw" or mode == "set" or mode == "into") and nfds and secs,
  "usage: lbench.lua framed|raw|set|into 1|253|5000|64k SECONDS|=COUNT")
local fos = require "fdpass.os"
fos.nofile(select(2, fos.nofile()))

local null
do
  local f = assert(io.open("/dev/null"))
  null = fdpass.dup(f) -- an fd object, as a user would send
  f:close()
end
local a, b = assert(fdpass.socketpair())
b:limits { max_fds = 5000 }
local payload = nfds == 0 and string.rep("x", 65536) or "x"
local MAXF = 253

local function chunk(n)
  local t = {}
  for i = 1, n do t[i] = mode == "set" and null:fileno() or null end
  return t
end

local iter
if mode == "set" then
  local fds = chunk(nfds)
  iter = function()
    assert(a:send(payload, fds))
    local _, got = b:recv(nil, "set")
    return got:close()
  end
elseif mode == "into" then
  local fds, into = chunk(nfds), {}
  iter = function()
    assert(a:send(payload, fds))
    local _, got = b:recv(nil, into)
    for i = 1, #got do got[i]:close() end
    return #got
  end
elseif mode == "framed" then
  local fds = chunk(nfds)
  iter = function()
    assert(a:send(payload, fds))
    local _, got = b:recv()
    for i = 1, #got do got[i]:close() end
    return #got
  end
else
  local parts = {}
  if nfds <= MAXF then
    parts[1] = chunk(nfds)
  else
    for off = 0, nfds - 1, MAXF do parts[#parts + 1] = chunk(math.min(MAXF, nfds - off)) end
  end
  local np = #parts
  iter = function()
    for p = 1, np do assert(a:sendmsg(payload, parts[p])) end
    local n = 0
    for _ = 1, np do
      local _, got = b:recvmsg()
      for i = 1, #got do got[i]:close() end
      n = n + #got
    end
    return n
  end
end

if count then
  local fds, start = 0, os.clock()
  for _ = 1, count do fds = fds + iter() end
  print(("%d %d %.6f"):format(count, fds, os.clock() - start))
  os.exit(0)
end
local batch = nfds == 5000 and 1 or nfds >= MAXF and 8 or nfds > 0 and 128 or 64
local now = os.clock -- CPU time of the process (user + system), as in cbench.c
local warm = now() + 0.05
while now() < warm do
  for _ = 1, batch do iter() end
end
local msgs, fds, start = 0, 0, now()
local t
repeat
  for _ = 1, batch do fds = fds + iter() end
  msgs = msgs + batch
  t = now()
until t - start >= secs
assert(fds == msgs * nfds, "descriptor count")
print(("%d %d %.6f"):format(msgs, fds, t - start))
