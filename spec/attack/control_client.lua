-- A hostile control-socket client for the attack specs: for SECONDS it
-- does one wrong thing to the control socket at ADDR, as fast as it can,
-- then prints "done N" (what it managed) and exits.
-- usage: lua spec/attack/control_client.lua MODE ADDR SECONDS
--   slowloris  opens connections and keeps them all open, saying nothing
--   dribble    opens connections and sends one byte of a request on each, now and then
--   garbage    connects, sends bytes that decode to nothing, reads the answer, again
--   fds        connects, sends {cmd = "stats"} with a descriptor, again
--   flood      connects and closes at once, again (what a stranger does)
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local codec = require "fdpass.codec"
local loop = require "fdpass.loop"

local mode, addr, seconds = arg[1], arg[2], tonumber(arg[3] or 3)
-- (the harness holds it as a child and kills it itself: no pid list,
-- which nobody could not write anyway)
local now = fos.monotonic
local stop_at = now() + seconds
local n, held = 0, {}

while now() < stop_at do
  local ch = fdpass.connect(addr, 0.2)
  if not ch then
    loop.poll({}, nil, 0.005)
  elseif mode == "slowloris" then
    held[#held + 1] = ch
    n = n + 1
    if #held >= 4000 then loop.poll({}, nil, 0.05) end
  elseif mode == "dribble" then
    held[#held + 1] = ch
    ch:sendmsg("F", nil, 0) -- the first byte of a record's magic, and no more
    n = n + 1
    if #held >= 4000 then loop.poll({}, nil, 0.05) end
  elseif mode == "garbage" then
    ch:sendmsg(("\0\255garbage"):rep(8), nil, 0)
    ch:recv(0.5)
    ch:close()
    n = n + 1
  elseif mode == "fds" then
    local null = assert(io.open("/dev/null"))
    local fd = fdpass.dup(null)
    null:close()
    ch:send(codec.encode { cmd = "stats" }, { fd }, 0.5)
    fd:close()
    ch:recv(0.5)
    ch:close()
    n = n + 1
  elseif mode == "flood" then
    ch:close()
    n = n + 1
  else
    error("unknown mode " .. tostring(mode))
  end
end
for _, ch in ipairs(held) do ch:close() end
print("done " .. n)
