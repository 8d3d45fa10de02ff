-- Issue 10, item 5: "the new copy takes over if the old one dies after
-- READY", with an old process that exits the way a real one does: its
-- exit closes the channel, and its parent reaps it only afterwards (here:
-- once the new copy has decided). The decision must come from the kernel
-- (a zombie is gone), not from a race: 20 times out of 20.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local net = require "fdpass.net"
local loop = require "fdpass.loop"

local T = {}

-- The decoy old process: the handover up to READY (spec/attack/oldside.lua),
-- then `after` (Lua code) runs: an exit, or a close and a long life.
local function decoy(after)
  return [[
local O = require "attack.oldside"
local ch = fdpass.channel(3)
local listener = fdpass.fd(4)
O.handover(ch, listener, fdpass.dup(2), 0)
]] .. after
end

-- One try: returns how the new copy ended and what it reported.
local function try(after)
  local a, b = assert(fdpass.socketpair())
  local l = assert(net.tcp_listen("127.0.0.1", 0))
  local old = H.child(decoy(after), { [3] = a, [4] = l })
  local r, w = assert(fos.pipe())
  local new = assert(fdpass.spawn({ H.lua, "spec/attack/app_copy.lua" },
    { fds = { [1] = w, [3] = b }, setenv = { FDPASS_UPGRADE_FD = "3", FDPASS_UPGRADE_GENERATION = "2" } }))
  a:close(); b:close(); w:close(); l:close()
  -- the new copy first; the old one stays unreaped (a zombie once it
  -- exited) until the new one has decided
  local how, code = new:wait(15)
  if not how then new:kill("KILL"); new:wait(); how = "killed" end
  local out = ""
  while #loop.poll({ r }, nil, 0) > 0 do
    local data = r:read(4096)
    if not data then break end
    out = out .. data
  end
  r:close()
  old:kill("KILL")
  old:wait()
  return how == "exit" and code == 0 and out:match("took_over 1") ~= nil, ("%s:%s %q"):format(how, tostring(code), out)
end

function T.test_old_exits_after_ready_new_takes_over_20_of_20()
  local took, last = 0, nil
  for _ = 1, 20 do
    local ok, what = try("os.exit(0)\n")
    if ok then took = took + 1 else last = what end
  end
  lu.assertEquals(took, 20, ("the new copy took over %d times out of 20 (last failure: %s)"):format(took, tostring(last)))
end

-- The other side of the decision: an old process that closes the channel
-- after READY but lives on (past the copy's commit deadline) is not gone:
-- the new copy must not take over beside it.
function T.test_old_alive_after_closing_channel_no_takeover()
  for _ = 1, 2 do
    local ok, what = try("ch:close()\nfdpass.poll({}, nil, 6)\n")
    lu.assertFalse(ok, "the new copy took over beside a live old process: " .. what)
  end
end

TestAttackTakeover = H.suite(T)
H.run()
