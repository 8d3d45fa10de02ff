-- The new copy of bench/handover.lua: takes the handover, then every live
-- connection, and writes to the file arg[2] when (CLOCK_MONOTONIC) it
-- started the handshake, came out of it, got the first and held the last
-- connection, and its peak memory.
local fos = require "fdpass.os"
local loop = require "fdpass.loop"
local upgrade = require "fdpass.upgrade"

local now = fos.monotonic
local want = tonumber(arg[1])
fos.nofile(select(2, fos.nofile()))
local function hwm_kb()
  local f = assert(io.open("/proc/self/status"))
  local kb = tonumber(f:read("*a"):match("VmHWM:%s*(%d+)"))
  f:close()
  return kb
end
local base_kb = hwm_kb()

local up = upgrade.new { max_fds = want + 16, max_state = 64 * 1024 * 1024 }
local hello_at, cpu0 = now(), os.clock()
-- up:inherit after the API split, up:start before
local got = assert((up.inherit or up.start)(up, { inherit = function(g) return g.listeners.http ~= nil end }))
local inherited_at = now()
assert(#got.state >= 0)
local held, first_at, last_at, cpu = {}, nil, nil, 0
local give_up = now() + 60
if up.receive then -- before the API split
  while true do
    local c = up:receive(5)
    if c == "done" or c == nil then break end
    first_at = first_at or now()
    held[#held + 1] = c.fd
    if #held == want then last_at, cpu = now(), os.clock() - cpu0 end
  end
else -- as an app's loop does: step() until nothing is ready, then poll
  while now() < give_up do
    local ev, c = up:step()
    if ev == "done" then break end
    if ev == "connection" then
      first_at = first_at or now()
      held[#held + 1] = c.fd
      if #held == want then last_at, cpu = now(), os.clock() - cpu0 end
    elseif not ev then
      loop.poll({ up:pollfd() }, nil, up:timeout() or 5)
    end
  end
end
local out = assert(io.open(arg[2], "w"))
out:write(("hello_at=%.6f inherited_at=%.6f first_at=%.6f last_at=%.6f held=%d cpu=%.6f hwm_kb=%d base_kb=%d\n")
  :format(hello_at, inherited_at, first_at or 0, last_at or 0, #held, cpu, hwm_kb(), base_kb))
out:close()
os.exit(0)
