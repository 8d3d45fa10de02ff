-- Run through LUA_INIT by every copy of a server an attack spec starts:
-- in a new copy of an upgrade (FDPASS_UPGRADE_FD set) while the file
-- EVIL_FLAG exists, it floods what the old process reads (its stderr, and
-- junk frames on the upgrade channel) for EVIL_SECONDS, then hangs, never
-- saying HELLO. It writes its pid to EVIL_FLAG first so the spec can end it.
local flag = os.getenv("EVIL_FLAG")
local fdnum = tonumber(os.getenv("FDPASS_UPGRADE_FD") or "")
if not (flag and fdnum) then return end
local f = io.open(flag, "r+")
if not f then return end -- the attack is over: a normal copy
local fdpass = require "fdpass"
local loop = require "fdpass.loop"
local fos = require "fdpass.os"
f:write(tostring(fos.getpid()), "\n")
f:close()
local ch = fdpass.fd(fdnum)
ch:nonblock(true)
local junk = string.rep("junk-not-a-frame ", 256)
local stop = fos.monotonic() + (tonumber(os.getenv("EVIL_SECONDS") or "") or 3)
while fos.monotonic() < stop do
  io.stderr:write(junk, "\n")
  ch:write(junk)
end
while true do loop.poll({}, nil, 3600) end -- hangs
