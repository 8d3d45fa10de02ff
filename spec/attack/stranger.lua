-- A stranger for the attack specs: any local user can read the abstract
-- names in /proc/net/unix, so this one finds the rendezvous socket of the
-- upgrade that process PID runs and connects to it again and again, as
-- fast as it can, saying nothing, for SECONDS. Run as another user
-- (nobody). Prints "connects N" at the end.
-- usage: lua spec/attack/stranger.lua PID SECONDS
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local loop = require "fdpass.loop"

local pid, seconds = assert(arg[1], "usage: stranger.lua PID SECONDS"), tonumber(arg[2] or 3)
local now = fos.monotonic
local stop_at = now() + seconds

-- "@fdpass-upgrade-<pid>-..." as the old side names it; any abstract
-- "@fdpass..." name with the pid in it will do.
local function find()
  local f = io.open("/proc/net/unix")
  if not f then return nil end
  local found
  for line in f:lines() do
    local name = line:match("%s(@fdpass%S*)$")
    if name and name:find("%f[%d]" .. pid .. "%f[%D]") then found = name end
  end
  f:close()
  return found
end

local addr
while not addr and now() < stop_at do
  addr = find()
  if not addr then loop.poll({}, nil, 0.01) end
end
local connects = 0
while addr and now() < stop_at do
  local ch = fdpass.connect(addr, 0.2)
  if ch then
    connects = connects + 1
    ch:close()
  else
    loop.poll({}, nil, 0.001) -- gone, or the backlog is full
    local again = find()
    if again then addr = again end
  end
end
print("connects " .. connects)
