-- Issue 10, item 5: "the new copy takes over if the old one dies after
-- READY", with an old process that exits the way a real one does: its
-- exit closes the channel, and its parent reaps it only afterwards (here:
-- once the new copy has decided). The decision must come from the kernel
-- (a zombie is gone), not from a race: 20 times out of 20.
local lu = require "luaunit"
local H = require "helpers"
local fos = require "fdpass.os"
local net = require "fdpass.net"
local loop = require "fdpass.loop"

local now = fos.monotonic
local T = {}

-- The decoy old process, a child of this one: it makes the socket pair
-- and starts the new copy itself (so the copy's peer is the decoy, as in a
-- real upgrade: SO_PEERCRED names who made the pair), hands over up to
-- READY (spec/attack/oldside.lua), then `after` (Lua code) runs: an exit,
-- or a close and a long life. The copy's stdout is the pipe on our fd 4.
local function decoy(after)
  return [[
local O = require "attack.oldside"
local listener, report = fdpass.fd(3), fdpass.fd(4)
local ch, theirs = assert(fdpass.socketpair())
local new = assert(fdpass.spawn({ os.getenv("FDPASS_LUA") or "lua5.4", "spec/attack/app_copy.lua" },
  { fds = { [1] = report, [3] = theirs }, setenv = { FDPASS_UPGRADE_FD = "3", FDPASS_UPGRADE_GENERATION = "2" } }))
theirs:close(); report:close()
O.handover(ch, listener, fdpass.dup(2), 0)
]] .. after
end

-- One try: whether the new copy took over, and what it reported.
local function try(after)
  local l = assert(net.tcp_listen("127.0.0.1", 0))
  local r, w = assert(fos.pipe())
  local old = H.child(decoy(after), { [3] = l, [4] = w })
  w:close(); l:close()
  -- the new copy's report to its end (it exits); the old one stays
  -- unreaped (a zombie once it exited) until then
  local out, limit = "", now() + 15
  while now() < limit do
    if #loop.poll({ r }, nil, 0.5) > 0 then
      local data = r:read(4096)
      if not data then break end
      out = out .. data
    end
  end
  r:close()
  local pid = tonumber(out:match("pid (%d+)"))
  if now() >= limit and pid then -- still running: never left behind
    local c = io.open("/proc/" .. pid .. "/cmdline")
    if c and c:read("*a"):find("app_copy.lua", 1, true) then fos.kill(pid, "KILL") end
    if c then c:close() end
  end
  old:kill("KILL")
  old:wait()
  return out:match("took_over 1") ~= nil, ("%q"):format(out)
end

function T.test_old_exits_after_ready_new_takes_over_20_of_20()
  local took, last = 0, nil
  for _ = 1, 20 do
    local ok, what = try("os.exit(0)\n")
    if ok then took = took + 1 else last = what end
  end
  lu.assertEquals(took, 20,
    ("the new copy took over %d times out of 20 (last failure: %s)"):format(took, tostring(last)))
end

-- The other side of the decision: an old process that closes the channel
-- after READY but lives on (past the copy's commit deadline) is not gone:
-- the new copy must not take over beside it.
function T.test_old_alive_after_closing_channel_no_takeover()
  for _ = 1, 2 do
    local ok, what = try("ch:close()\nrequire('fdpass.loop').poll({}, nil, 6)\n")
    lu.assertFalse(ok, "the new copy took over beside a live old process: " .. what)
  end
end

TestAttackTakeover = H.suite(T)
H.run()
