-- The upgrade path of `make bench`: one full handover with 1 listener,
-- CONNS (10,000) live connections and 1 MiB of state, spawn timed apart.
-- This process is the old side; bench/handover_new.lua the new copy; a
-- third process holds the client ends of the connections.
-- usage: lua5.4 bench/handover.lua [CONNS] [STATE_BYTES]
-- prints: conns=N state=B spawn_ms=S handover_ms=H old_hwm_kb=A new_hwm_kb=B
local fdpass = require "fdpass"
local upgrade = require "fdpass.upgrade"

local nconns = tonumber(arg[1]) or 10000
local state_bytes = tonumber(arg[2]) or 1024 * 1024
local lua = os.getenv("FDPASS_LUA") or "lua5.4"
local now = fdpass.monotonic
fdpass.nofile(select(2, fdpass.nofile()))

local function hwm_kb()
  local f = assert(io.open("/proc/self/status"))
  local kb = tonumber(f:read("*a"):match("VmHWM:%s*(%d+)"))
  f:close()
  return kb
end

-- the listener, and the clients in a process of their own
local l = assert(fdpass.tcp_listen("127.0.0.1", 0, 4096))
local port = tonumber(fdpass.info(l).addr:match(":(%d+)$"))
local hold_r, hold_w = assert(fdpass.pipe())
local clients = assert(fdpass.spawn({ lua, "-e", ([[
  local fdpass = require "fdpass"
  fdpass.nofile(select(2, fdpass.nofile()))
  local held = {}
  for i = 1, %d do held[i] = assert(fdpass.tcp_connect("127.0.0.1", %d, 5)) end
  fdpass.poll({ fdpass.fd(0) }, nil, 600) -- until the bench closes our stdin
]]):format(nconns, port) }, { fds = { [0] = hold_r } }))
hold_r:close()

local conns = {}
local deadline = now() + 60
while #conns < nconns and now() < deadline do
  fdpass.poll({ l }, nil, 1)
  while true do
    local c = fdpass.accept(l)
    if not c then break end
    conns[#conns + 1] = { name = "http", conn = c, buffered = "" }
  end
end
assert(#conns == nconns, ("only %d of %d connections came"):format(#conns, nconns))

local state = string.rep("s", state_bytes)
local report = os.tmpname()
local up = upgrade.new { argv = { lua, "bench/handover_new.lua", tostring(nconns), report },
  max_fds = nconns + 16 }
up:listener("http", l)
up:state(function() return state end)
collectgarbage()

local started = now()
local pid, timings = up:run_upgrade()
assert(pid, tostring(timings))
assert(up:handoff_all(conns))
up:finish()
for _, e in ipairs(conns) do e.conn:close() end
l:close()

-- the new copy writes when it held the last connection (CLOCK_MONOTONIC
-- is one clock for every process) and its peak memory to a file
local new = up:new_process()
local how = new:wait(60)
assert(how == "exit", "the new copy did not finish")
local f = assert(io.open(report))
local line = f:read("*a")
f:close()
os.remove(report)
local last_at, new_hwm = line:match("last_at=([%d.]+) hwm_kb=(%d+)")
assert(last_at, "no report from the new copy: " .. line)
local hello_at = started + timings.spawn
hold_w:close() -- the clients let go
clients:wait(30)
print(("conns=%d state=%d spawn_ms=%.2f handover_ms=%.2f old_hwm_kb=%d new_hwm_kb=%d")
  :format(nconns, state_bytes, timings.spawn * 1e3, (tonumber(last_at) - hello_at) * 1e3,
    hwm_kb(), tonumber(new_hwm)))
