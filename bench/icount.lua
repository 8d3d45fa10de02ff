-- Instructions per round trip, for callgrind: run as
--   valgrind --tool=callgrind --callgrind-out-file=/dev/null LUA bench/icount.lua NFDS N
-- for N and for 0 and divide the difference by N (bench/icount.sh does).
-- One round trip is what a user writes: ch:send(payload, fds),
-- ch:recv(), fd:close() on each fd object received. A third argument
-- "into" passes one table for recv to fill again each time.
local fdpass = require "fdpass"
local nfds, n, into = tonumber(arg[1]), tonumber(arg[2]), arg[3] == "into" and {} or nil
local null = fdpass.dup(io.stdin)
local a, b = assert(fdpass.socketpair())
local fds = {}
for i = 1, nfds do fds[i] = null end
local function iter()
  assert(a:send("x", fds))
  local _, got = b:recv(nil, into)
  for i = 1, #got do got[i]:close() end
end
for _ = 1, 50 do iter() end -- warm-up: same in both runs
for _ = 1, n do iter() end
