-- The new copy of bench/handover.lua: takes the handover, then every live
-- connection, and writes to the file arg[2] when it held the last one, and
-- its peak memory.
local fdpass = require "fdpass"
local upgrade = require "fdpass.upgrade"

local want = tonumber(arg[1])
fdpass.nofile(select(2, fdpass.nofile()))
local up = upgrade.new { max_fds = want + 16 }
local got = assert(up:inherit { inherit = function(g) return g.listeners.http ~= nil end })
assert(#got.state >= 0)
local held, last_at = {}, nil
local give_up = fdpass.monotonic() + 60
while fdpass.monotonic() < give_up do
  local ev, c = up:step()
  if ev == "done" then break end
  if ev == "connection" then
    held[#held + 1] = c.fd
    if #held == want then last_at = fdpass.monotonic() end
  elseif not ev then
    fdpass.poll({ up }, nil, up:timeout() or 5)
  end
end
local f = assert(io.open("/proc/self/status"))
local hwm = tonumber(f:read("*a"):match("VmHWM:%s*(%d+)"))
f:close()
local out = assert(io.open(arg[2], "w"))
out:write(("last_at=%.6f hwm_kb=%d held=%d\n"):format(last_at or 0, hwm, #held))
out:close()
os.exit(0)
