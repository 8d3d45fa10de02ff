-- Issue 10, item 4: a descriptor that arrives with a handshake message
-- where none is wanted is closed at once, on both sides, in every phase.
-- Counted without running the collector: the processes that count stop it
-- from the start, so a descriptor left to it stays visible. Each case is
-- compared with the same run carrying no descriptor, so that what the
-- upgrader rightly holds (the channel to a committed copy, say) does not
-- enter into it.
local lu = require "luaunit"
local H = require "helpers"
local A = require "attack.harness"
local O = require "attack.oldside"
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local net = require "fdpass.net"
local loop = require "fdpass.loop"

local T = {}

-- ---- the old side: a hostile new copy sends descriptors -----------------

local function old_side(mode, want)
  local clean = A.run { mode = mode, n = 0, window = 3, server = { gc = "stop" } }
  local dirty = A.run { mode = mode, n = 16, window = 3, server = { gc = "stop" } }
  lu.assertEquals(clean.result, want, "without descriptors: " .. A.summary(clean))
  lu.assertEquals(dirty.result, want, "with 16 descriptors: " .. A.summary(dirty))
  lu.assertEquals(dirty.fd_base, clean.fd_base)
  lu.assertEquals(dirty.fd_after, clean.fd_after,
    ("%s: the server held %d descriptors when the upgrade ended, %d without the 16 sent")
      :format(mode, dirty.fd_after, clean.fd_after))
  lu.assertEquals(dirty.fd_end, clean.fd_end, mode .. ": still held at the end of the window: " .. A.summary(dirty))
  return clean, dirty
end

function T.test_old_side_hello_with_fds_from_a_dying_copy()
  local clean = old_side("hello_fds", "failed")
  -- a rollback gives back everything the upgrade opened
  lu.assertEquals(clean.fd_after, clean.fd_base)
end

function T.test_old_side_nak_with_fds()
  local clean = old_side("nak_fds", "failed")
  lu.assertEquals(clean.fd_after, clean.fd_base)
end

function T.test_old_side_ready_and_committed_with_fds()
  old_side("ready_fds", "upgraded")
end

-- ---- the new copy: a hostile old side sends extra descriptors --------------

-- A real new copy (spec/attack/app_copy.lua) inherits from this process,
-- which sends `extra` descriptors more than wanted with WELCOME, FDS,
-- STATE and COMMIT each. Returns what the copy reported.
local function new_copy_side(extra)
  local a, b = assert(fdpass.socketpair())
  local r, w = assert(fos.pipe())
  local listener = assert(net.tcp_listen("127.0.0.1", 0))
  local stderr = fdpass.dup(2)
  local proc = assert(fdpass.spawn({ H.lua, "spec/attack/app_copy.lua" },
    { fds = { [1] = w, [3] = b }, setenv = { FDPASS_UPGRADE_FD = "3", FDPASS_UPGRADE_GENERATION = "2" } }))
  b:close()
  w:close()
  local ok, err = pcall(function()
    O.handover(a, listener, stderr, extra)
    local c = O.extras(extra)
    O.send(a, { t = "COMMIT" }, c)
    H.close_all(c)
    local m, fds = O.recv(a)
    if type(fds) == "table" then fdpass.close_all(fds) end
    assert(type(m) == "table" and m.t == "COMMITTED", "expected COMMITTED")
  end)
  local out = ""
  local limit = fos.monotonic() + 10
  while fos.monotonic() < limit and #loop.poll({ r }, nil, 1) > 0 do
    local data = r:read(4096)
    if not data then break end
    out = out .. data
  end
  a:close()
  if not proc:wait(5) then proc:kill("KILL"); proc:wait() end
  r:close(); listener:close(); stderr:close()
  assert(ok, err)
  local report = {}
  for k, v in out:gmatch("(%S+) (%S+)") do report[k] = tonumber(v) end
  return report, out
end

function T.test_new_copy_closes_extras_of_welcome_fds_state_commit()
  local clean, cout = new_copy_side(0)
  local dirty, dout = new_copy_side(10)
  lu.assertEquals(clean.took_over, 1, cout)
  lu.assertEquals(dirty.took_over, 1, dout)
  lu.assertEquals(clean.listeners, 1)
  lu.assertEquals(dirty.listeners, 1)
  lu.assertEquals(dirty.held, clean.held, ("the new copy held %d descriptors after inherit, %d without the 40 extras")
    :format(dirty.held or -1, clean.held or -1))
end

TestAttackFds = H.suite(T)
H.run()
