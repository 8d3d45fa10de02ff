-- The loop-gap harness of issue 10: runs each attack against
-- spec/attack/server.lua (pinned to one CPU with its new copy, as the
-- issue measured) ROUNDS times and prints the worst gap between two
-- iterations of the serving loop per attack, measured from inside the
-- server, with the control (a new copy that only burns the same CPU).
-- With LOAD=1 (and wrk installed) keep-alive HTTP load runs against the
-- server during each attack, wrk pinned to the same CPU.
--
-- usage: make bench-attack   (or, from the repo root with the Makefile's
--        environment: lua5.4 bench/attack_gaps.lua [ROUNDS] [ATTACK...])
local A = require "attack.harness"
local fdpass = require "fdpass"
local net = require "fdpass.net"

local rounds = tonumber(arg[1] or 3)
local function other_cpu(argv)
  if not A.cpu or A.cpu == 0 then return argv end
  local out = { "taskset", "-c", "0" }
  for _, a in ipairs(argv) do out[#out + 1] = a end
  return out
end
local function pinned(argv) -- wrk on the server's CPU
  if not A.cpu then return argv end
  local out = { "taskset", "-c", tostring(A.cpu) }
  for _, a in ipairs(argv) do out[#out + 1] = a end
  return out
end

local ATTACKS = {
  { "control (copy burns the CPU)", { mode = "burn", seconds = 2, window = 4 } },
  { "junk before HELLO", { mode = "flood_hello", seconds = 2, window = 4 } },
  { "junk instead of READY", { mode = "flood_ready", seconds = 2, window = 4 } },
  -- one writer (several would interleave the records of big messages,
  -- which the old side refuses at once), on another CPU than the server
  { "junk 1 MiB messages, costly to decode", { copy = other_cpu { A.lua, "spec/attack/newcopy.lua",
    "flood_big", "2" }, mode = "flood_big", writers = 1, window = 4 } },
  { "stream on stderr (6 writers, 16 KiB writes, other CPU)", { copy = other_cpu { A.lua,
    "spec/attack/newcopy.lua", "stderr", "2" }, mode = "stderr", writers = 6, window = 4,
    env = { ATTACK_CHUNK = "16384" } } },
  { "closed stderr, hang (CPU share)", { mode = "hang_closed_stderr", seconds = 6, window = 5 } },
  { "2 strangers as nobody on the rendezvous", { mode = "sleep", seconds = 6, window = 4, strangers = 2,
    server = { rendezvous = 1 }, root = true } },
  { "16 fds with HELLO (fds held after)", { mode = "hello_fds", n = 16, window = 3, server = { gc = "stop" } } },
  { "READY+COMMITTED 16 fds each (fds held after)", { mode = "ready_fds", n = 16, window = 3,
    server = { gc = "stop" } } },
}
local only = {}
for i = 2, #arg do only[arg[i]] = true end

local function free_port()
  local l = assert(net.tcp_listen("127.0.0.1", 0))
  local port = tonumber(l:info().addr:match(":(%d+)$"))
  l:close()
  return port
end

local load = os.getenv("LOAD") == "1" and os.execute("command -v wrk >/dev/null 2>&1")
print(("rounds %d, pinned to CPU %s, HTTP load %s, %s"):format(rounds, tostring(A.cpu), load and "on" or "off", A.lua))
print(("%-46s %10s %10s %12s %8s %10s %s"):format("attack", "worst ms", "median ms", "step cpu ms", "cpu %",
  "log lines", "fds base/after"))
for _, a in ipairs(ATTACKS) do
  local name, t = a[1], a[2]
  if (next(only) == nil or only[t.mode]) and (not t.root or A.is_root()) then
    local worst, gaps, cpu, logs, fds, step = 0, {}, 0, 0, "", 0
    for _ = 1, rounds do
      local wrk
      t.server = t.server or {}
      if load then
        local port = free_port()
        t.server.port = port
        local argv = pinned { "wrk", "-t1", "-c8", "-d" .. tostring(t.window) .. "s",
          ("http://127.0.0.1:%d/"):format(port) }
        local null = assert(io.open("/dev/null", "w"))
        wrk = assert(fdpass.spawn(argv, { fds = { [1] = null, [2] = null } }))
        null:close()
      end
      local r = A.run(t)
      if wrk then if not wrk:wait(t.window + 5) then wrk:kill("KILL"); wrk:wait() end end
      local g = tonumber(r.max_gap_ms) or 0
      gaps[#gaps + 1] = g
      if g > worst then worst = g end
      local share = (tonumber(r.cpu_upgrade_s) or 0) / math.max(tonumber(r.upgrade_s) or 1, 0.001)
      if share > cpu then cpu = share end
      if (tonumber(r.logs) or 0) > logs then logs = tonumber(r.logs) end
      if (tonumber(r.max_step_cpu_ms) or 0) > step then step = tonumber(r.max_step_cpu_ms) end
      fds = load and "- (load)" or ("%s/%s"):format(tostring(r.fd_base), tostring(r.fd_after))
    end
    table.sort(gaps)
    print(("%-46s %10.1f %10.1f %12.1f %8.0f %10d %s"):format(name, worst, gaps[math.ceil(#gaps / 2)], step,
      cpu * 100, logs, fds))
  end
end
