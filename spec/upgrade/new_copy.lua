-- A real new copy for spec/upgrade_spec.lua: it runs fdpass.upgrade's
-- up:inherit() like an app would, with the inherit hook that arg[1] names,
-- and reports on stderr, one "key value" line each, what it saw:
--   pid N            first thing, so the spec can check the process is gone
--   hook_fds N       descriptors held in the hook beyond those at startup
--   claimed_fds N    descriptors among inherited.listeners
--   claimed NAMES    / unclaimed NAMES (comma-separated, sorted)
--   state S          inherited.state.served
--   after_fds N      descriptors held after inherit() returned, beyond startup
--   served BY        after answering one TCP client on listener "good"
--   conn NAME "BUF"  each live connection the old side handed over
--   final_state S    the final state's served (up:finish()), after the conns
--   final_fds N      descriptors held after DONE, beyond startup
-- usage: lua5.4 spec/upgrade/new_copy.lua MODE [serve]
--   MODE: ok | exit5 | nak | raise | hang | slow (the hook takes 0.3 s)
local loop = require "fdpass.loop"
local net = require "fdpass.net"
local fos = require "fdpass.os"
local upgrade = require "fdpass.upgrade"

local mode, serve = arg[1] or "ok", arg[2] == "serve"
-- SPEC_REPORT_FILE: the reports also go there (after the commit this
-- copy's stderr is its old process's own)
local report_file = os.getenv("SPEC_REPORT_FILE")
local function report(k, v)
  local line = ("%s %s\n"):format(k, tostring(v))
  io.stderr:write(line)
  if report_file then
    local f = assert(io.open(report_file, "a"))
    f:write(line)
    f:close()
  end
end
local up = upgrade.new {
  argv = { "unused" },
  timeouts = { handover = 5, commit = 5 },
  log = function(msg) report("log", msg) end,
}
collectgarbage("stop") -- descriptors are counted without the collector: one it
-- would close is one fdpass.upgrade left behind
local base = fos.fdcount() -- 0, 1, 2, the channel on 3 and the upgrader's epoll
report("pid", fos.getpid())

local function names(list)
  table.sort(list)
  return table.concat(list, ",")
end

local function describe(got)
  local n, claimed = 0, {}
  for name, fds in pairs(got.listeners) do
    claimed[#claimed + 1] = name
    n = n + #fds
  end
  report("hook_fds", fos.fdcount() - base)
  report("claimed_fds", n)
  report("claimed", names(claimed))
  report("unclaimed", names({ (table.unpack or unpack)(got.unclaimed) })) -- luacheck: read globals table.unpack unpack
  report("state", type(got.state) == "table" and got.state.served)
end

local hooks = {
  ok = function(got) describe(got); return true end,
  exit5 = function() report("inherit", "exits 5"); os.exit(5) end,
  nak = function() return nil, "bad config" end,
  raise = function() error("kaboom in the hook") end,
  hang = function() report("inherit", "hangs"); loop.poll({}, nil, 10); return true end,
  slow = function(got) describe(got); loop.poll({}, nil, 0.3); return true end,
}
assert(hooks[mode], "unknown mode " .. tostring(mode))

local inherited = up:inherit { inherit = hooks[mode] }
if not inherited then
  report("fresh", "start")
  os.exit(0)
end
report("after_fds", fos.fdcount() - base)
if serve then
  local l = assert(inherited.listeners.good and inherited.listeners.good[1], "no listener good")
  assert(#loop.poll({ l }, nil, 5) == 1, "nobody connected")
  local c = assert(net.accept(l))
  c:write(("served by %d\n"):format(fos.getpid()))
  c:close()
  report("served", fos.getpid())
end
-- live connections from the old side until DONE (or its end closes)
local deadline, finished = fos.monotonic() + 5, false
while not finished and fos.monotonic() < deadline do
  local ev, got = up:step()
  if ev == "connection" then
    report("conn", ("%s %q"):format(got.name, got.buffered))
    got.fd:close()
  elseif ev == "state" then
    report("final_state", type(got) == "table" and got.served)
  elseif ev == "done" then
    finished = true
  elseif not ev then
    loop.poll({ up }, nil, up:timeout() or 0.5)
  end
end
report("final_fds", fos.fdcount() - base)
os.exit(0)
