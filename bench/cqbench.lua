-- The cqueues peer of `make bench` (Debian's lua-cqueues): sock:sendfd /
-- sock:recvfd doing the floor's work, as a cqueues user would.
-- usage: lua5.4 bench/cqbench.lua 1|253|5000|64k SECONDS|=COUNT
-- prints "messages descriptors seconds".
--
-- cqueues carries exactly one descriptor per message, so N descriptors are
-- N sendfd/recvfd (interleaved: that many messages do not fit in a socket
-- buffer); each received descriptor comes as a socket object, closed with
-- :close(). 64k is xwrite/xread of 65536 bytes on a stream pair (cqueues'
-- buffered reader cuts seqpacket records at its 4 KiB buffer).
local socket = require "cqueues.socket"

local work, secs = arg[1], tonumber(arg[2])
local count = tonumber((arg[2] or ""):match("^=(%d+)$")) -- exact iterations, no warm-up (callgrind)
secs = secs or count
local nfds = work == "64k" and 0 or tonumber(work)
assert(nfds and secs, "usage: cqbench.lua 1|253|5000|64k SECONDS")

local null = assert(io.open("/dev/null"))
local iter
if nfds == 0 then
  local a, b = socket.pair(socket.SOCK_STREAM)
  local payload = string.rep("x", 65536)
  iter = function()
    assert(a:xwrite(payload, "bn"))
    assert(#assert(b:xread(65536, "b")) == 65536)
    return 0
  end
else
  local a, b = socket.pair(socket.SOCK_SEQPACKET)
  iter = function()
    for _ = 1, nfds do
      assert(a:sendfd("x", null))
      local _, fd = b:recvfd()
      fd:close()
    end
    return nfds
  end
end

if count then
  local fds, start = 0, os.clock()
  for _ = 1, count do fds = fds + iter() end
  print(("%d %d %.6f"):format(count, fds, os.clock() - start))
  os.exit(0)
end
local batch = nfds == 5000 and 1 or nfds >= 253 and 8 or nfds > 0 and 128 or 64
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
print(("%d %d %.6f"):format(msgs, fds, t - start))
