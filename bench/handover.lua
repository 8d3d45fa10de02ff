-- The upgrade path of `make bench`: one full handover with 1 listener,
-- CONNS live connections and STATE_BYTES of state. This process is the old
-- side; bench/handover_new.lua the new copy; `hbench hold` (bench/hbench.c)
-- holds the client ends of the connections.
-- usage: lua5.4 bench/handover.lua CONNS STATE_BYTES HBENCH
-- prints one line of key=value: conns, the phases in ms (one CLOCK_MONOTONIC
-- for every process), handover_ms (the new copy's HELLO to it holding the
-- last connection), cpu_ms (CPU time of the old side from the upgrade's start
-- to handoff_all's return plus the new copy's from HELLO to the last
-- connection) and both sides' peak RSS (VmHWM, KiB).
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local net = require "fdpass.net"
local loop = require "fdpass.loop"
local upgrade = require "fdpass.upgrade"

local nconns = tonumber(arg[1]) or 10000
local state_bytes = tonumber(arg[2]) or 1024 * 1024
local hbench = arg[3] or "build/bench/hbench"
local lua = os.getenv("FDPASS_LUA") or "lua5.4"
local now = fos.monotonic
fos.nofile(select(2, fos.nofile()))

local function hwm_kb()
  local f = assert(io.open("/proc/self/status"))
  local kb = tonumber(f:read("*a"):match("VmHWM:%s*(%d+)"))
  f:close()
  return kb
end
local base_hwm = hwm_kb() -- the interpreter and fdpass, before any connection

-- the listener, and the clients in a process of their own
local l = assert(net.tcp_listen("127.0.0.1", 0, 4096))
local port = tonumber(fdpass.info(l).addr:match(":(%d+)$"))
local hold_r, hold_w = assert(fos.pipe())
local clients = assert(fdpass.spawn({ hbench, "hold", tostring(port), tostring(nconns) },
  { fds = { [0] = hold_r } }))
hold_r:close()

local conns = {}
local deadline = now() + 120
while #conns < nconns and now() < deadline do
  loop.poll({ l }, nil, 1)
  while true do
    local c = net.accept(l)
    if not c then break end
    conns[#conns + 1] = { name = "http", conn = c, buffered = "" }
  end
end
assert(#conns == nconns, ("only %d of %d connections came"):format(#conns, nconns))

local state = string.rep("s", state_bytes)
local report = os.tmpname()
local up = upgrade.new { argv = { lua, "bench/handover_new.lua", tostring(nconns), report },
  max_fds = nconns + 16, max_state = state_bytes + 65536 }
up:listener("http", l)
up:state(function() return state end)
collectgarbage()
collectgarbage()

-- the blocking form: up:upgrade() before the API split, run_upgrade after
local run = up.run_upgrade or up.upgrade_wait or up.upgrade
local started, cpu0 = now(), os.clock()
local pid, timings = run(up)
assert(pid, tostring(timings))
local committed = now()
assert(up:handoff_all(conns))
local handed, old_cpu = now(), os.clock() - cpu0
up:finish()
for _, e in ipairs(conns) do e.conn:close() end
l:close()

-- the new copy writes its timestamps and peak memory to a file
local new = up:new_process()
assert(new:wait(120) == "exit", "the new copy did not finish")
local f = assert(io.open(report))
local line = f:read("*a")
f:close()
os.remove(report)
local r = {}
for k, v in line:gmatch("([%w_]+)=([%d.]+)") do r[k] = tonumber(v) end
assert(r.last_at and r.held == nconns, "no full report from the new copy: " .. line)
hold_w:close() -- the clients let go
clients:wait(30)
local ms = function(a, b) return (b - a) * 1e3 end
print(("conns=%d state=%d spawn_ms=%.3f handover_ms=%.3f hello_commit_ms=%.3f "
  .. "commit_handoff_ms=%.3f handoff_first_ms=%.3f first_last_ms=%.3f old_upgrade_ms=%.3f "
  .. "cpu_ms=%.3f old_cpu_ms=%.3f new_cpu_ms=%.3f old_hwm_kb=%d new_hwm_kb=%d old_base_kb=%d new_base_kb=%d")
  :format(nconns, state_bytes, ms(started, r.hello_at), ms(r.hello_at, r.last_at),
    ms(r.hello_at, r.inherited_at), ms(committed, handed), ms(handed, r.first_at),
    ms(r.first_at, r.last_at), ms(started, committed), (old_cpu + r.cpu) * 1e3, old_cpu * 1e3, r.cpu * 1e3,
    hwm_kb(), r.hwm_kb, base_hwm, r.base_kb))
