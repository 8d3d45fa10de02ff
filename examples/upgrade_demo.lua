-- The main demo: starts examples/http_server.lua on 127.0.0.1, puts
-- keep-alive load on it from examples/http_load.lua, upgrades the server
-- UPGRADES times (default 20) under that load through its control socket,
-- and prints each handover and a summary. Exits 1 if any request failed,
-- any connection was reset, an upgrade failed or a descriptor leaked.
-- SOAK=1 (make soak): upgrades back to back, a line per 100, at most
-- MAX_SECONDS (default 900) of upgrading, and memory must stay flat too.
local fdpass = require "fdpass"
local loop = require "fdpass.loop"
local fos = require "fdpass.os"
local upgrade = require "fdpass.upgrade"

local soak = os.getenv("SOAK") == "1"
local upgrades = tonumber(os.getenv("UPGRADES") or "") or (soak and 1000 or 20)
local max_seconds = tonumber(os.getenv("MAX_SECONDS") or "") or 900
local pause = soak and 0.01 or 0.2
local nconns = tonumber(os.getenv("CONNS") or "") or 16
local lua = os.getenv("FDPASS_LUA") or "lua5.4"
local control = ("@fdpass-demo-%d"):format(fos.getpid())
local pidfile = os.tmpname()

local function sleep(s) loop.poll({}, nil, s) end

local function stats()
  local r, err = upgrade.request(control, "stats", 10)
  assert(r and r.ok, "stats: " .. tostring(err or (r and r.reason)))
  return r
end

-- 1. the server
local server = assert(fdpass.spawn { lua, "examples/http_server.lua", "0", control, pidfile })
local first
for _ = 1, 100 do
  first = upgrade.request(control, "stats", 1)
  if first then break end
  sleep(0.05)
end
assert(first, "the server did not start")
print(("server: pid %d on 127.0.0.1:%d, control %s"):format(first.pid, first.port, control))

-- 2. the load, as a process of its own, its summary through a pipe
local out_r, out_w = assert(fos.pipe())
local load = assert(fdpass.spawn({ lua, "examples/http_load.lua", tostring(first.port),
  tostring(nconns), tostring(max_seconds + 120) }, { fds = { [1] = out_w } }))
out_w:close()
sleep(0.5)
local at_start = stats()
print(("load: %d keep-alive connections; server holds %d descriptors (%d connections)")
  :format(nconns, at_start.fdcount, at_start.conns))

-- 3. the upgrades
local done, times, stop_at = 0, {}, fos.monotonic() + max_seconds
for i = 1, upgrades do
  if fos.monotonic() > stop_at then
    print(("time limit of %d s reached after %d upgrades"):format(max_seconds, i - 1))
    break
  end
  local r, err = upgrade.request(control, "upgrade", 60)
  if r and r.ok then
    done = done + 1
    times[#times + 1] = r.handover * 1e3
    if not soak or i % 100 == 0 then
      print(("upgrade %2d/%d: %d -> %d  handover %.2f ms  (spawn %.1f ms, apart)")
        :format(i, upgrades, r.old, r.new, r.handover * 1e3, r.spawn * 1e3))
    end
  else
    print(("upgrade %2d/%d: FAILED %s"):format(i, upgrades,
      r and (tostring(r.phase) .. ": " .. tostring(r.reason)) or tostring(err)))
  end
  sleep(pause) -- load runs on between upgrades
end
sleep(0.5)
local at_end = stats()

-- 4. stop the load, read its figures, stop the server
load:kill("TERM")
local summary = {}
while true do
  local data = out_r:read(4096)
  if not data then break end
  summary[#summary + 1] = data
end
out_r:close()
load:wait(10)
server:wait(0) -- the first generation left long ago: reap it
fos.kill(at_end.pid, "TERM")
os.remove(pidfile)

local line = table.concat(summary)
local n = {}
for k, v in line:gmatch("(%w+)=(%d+)") do n[k] = tonumber(v) end
table.sort(times)
local median = times[math.max(1, math.floor((#times + 1) / 2))] or 0
-- The server's own descriptors, less one per client connection.
local held_start, held_end = at_start.fdcount - at_start.conns, at_end.fdcount - at_end.conns
print(("\nrequests: sent %d, answered %d, failed %d, reset %d, refused %d (%d under way at the stop)")
  :format(n.sent or 0, n.answered or 0, n.failed or 0, n.reset or 0, n.refused or 0, n.inflight or 0))
print(("upgrades: %d done of %d asked; handover median %.2f ms, worst %.2f ms; served counter %d -> %d")
  :format(done, upgrades, median, times[#times] or 0, at_start.served, at_end.served))
print(("descriptors: server held %d at start (%d connections), %d at end (%d connections)")
  :format(at_start.fdcount, at_start.conns, at_end.fdcount, at_end.conns))
print(("memory: server RSS %d KiB at start, %d KiB at end (Lua heap %.0f -> %.0f KiB)")
  :format(at_start.rss_kb, at_end.rss_kb, at_start.lua_kb, at_end.lua_kb))
print(("failed: %d\nreset: %d"):format((n.failed or 0) + (n.refused or 0), n.reset or 0))
-- Memory is flat when the last generation is within 25% (and 2 MiB) of the
-- first: every generation is a fresh process, so growth would be a leak
-- carried in the state or in what is handed over.
local rss_flat = at_end.rss_kb <= math.max(at_start.rss_kb * 1.25, at_start.rss_kb + 2048)
local ok = n.sent and (n.failed or 1) == 0 and (n.reset or 1) == 0 and (n.refused or 1) == 0
  and done == upgrades and held_start == held_end and (n.answered or 0) > 0 and rss_flat
print(ok and "demo: OK" or "demo: FAILED")
os.exit(ok and 0 or 1)
