-- A server for spec/systemd_spec.lua: fdpass.upgrade in an app's own loop,
-- as it runs under systemd. On a fresh start it takes its "http" listener
-- from socket activation (up:systemd_listeners()) or makes one, serves its
-- control socket (upgrade.new's `control`) and says READY=1; a copy an
-- upgrade started inherits both. Every TCP connection on "http" is
-- answered with "PID GENERATION\n" and closed.
-- usage: lua spec/systemd/server.lua CONTROL_ADDR
-- environment: SPEC_SYSTEMD = "off" (upgrade.new{systemd = false}) or
--   "fdstore" ({fdstore = true}); SPEC_REFUSE_FILE: while that file exists,
--   a new copy refuses the handover (its inherit hook says no).
local loop = require "fdpass.loop"
local net = require "fdpass.net"
local fos = require "fdpass.os"
local upgrade = require "fdpass.upgrade"
local systemd = require "fdpass.systemd"

local control_addr = assert(arg[1], "usage: server.lua CONTROL_ADDR")
local me = fos.getpid()
local function log(msg) io.stderr:write(("[%d] %s\n"):format(me, msg)) end

local mode = os.getenv("SPEC_SYSTEMD")
local sd_opt
if mode == "off" then sd_opt = false elseif mode == "fdstore" then sd_opt = { fdstore = true } end
local http, port
local up = upgrade.new { log = log, systemd = sd_opt, control = control_addr,
  timeouts = { hello = 10, handover = 5, ready = 5, commit = 5, kill = 1 },
  stats = function()
    return { port = port, fdcount = fos.fdcount(), watchdog = systemd.watchdog_interval() or "none" }
  end }

local inherited = up:inherit {
  inherit = function(got)
    local refuse = os.getenv("SPEC_REFUSE_FILE")
    local f = refuse and io.open(refuse)
    if f then
      f:close()
      return nil, "refused by the spec"
    end
    http = got.listeners.http and got.listeners.http[1]
    if not http then return nil, "expected an http listener" end
    return true
  end,
}
if inherited then
  up:listener("http", http)
else
  local activated = assert(up:systemd_listeners()) -- offers each to new copies itself
  http = activated.http and activated.http[1]
  if not http then
    http = assert(net.tcp_listen("127.0.0.1", 0))
    up:listener("http", http)
  end
end
-- Activated sockets arrive as systemd made them (blocking). Old and new
-- copy poll the same listener around the handover, and an accept that
-- loses the race for a connection must not block: made non-blocking here,
-- explicitly (listen_fds never changes it).
http:nonblock(true)
if not inherited then systemd.ready() end -- a new copy's READY=1 is up:inherit()'s

port = tonumber(http:info().addr:match(":(%d+)$"))

while true do
  local r = loop.poll({ up, http }, nil, math.min(1, up:timeout() or 1))
  repeat
    local ev = up:step()
    if ev == "upgraded" then
      up:finish() -- no live connections to hand over: each is answered at once
      up:close() -- not before systemd has MAINPID= (a full queue is retried)
      os.exit(0)
    end
  until not ev
  if #r > 0 then
    local c = net.accept(http)
    if c then
      c:write(("%d %d\n"):format(me, up.generation))
      c:close()
    end
  end
end
