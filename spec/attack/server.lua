-- A serving process for the attack specs (spec/attack_*_spec.lua) and the
-- loop-gap harness (bench/attack_gaps.lua). It uses fdpass.upgrade the way
-- an app does: one upgrader, a TCP listener offered as "http" (answering
-- HTTP/1.1 keep-alive requests, so that load can be put on it), an upgrade
-- started from its own loop, and the upgrader stepped from that loop. The
-- new copy it starts is whatever follows "--" (a hostile one from
-- spec/attack/newcopy.lua, usually).
--
-- What it measures, from inside: the longest gap between two iterations of
-- its loop while the upgrade runs (the loop wakes at least every 10 ms, so
-- a gap far above that is time the upgrader kept it), its CPU time over
-- the same span (/proc/self/stat), the log lines the upgrader wrote, and
-- the descriptors it holds before the upgrade, the moment the upgrade ends
-- and at the end of the window, counted without running the collector
-- (gc=stop stops it for the whole run, so that a descriptor left to it
-- stays visible).
--
-- usage: lua spec/attack/server.lua out=FILE [key=value ...] -- NEWCOPY ARGV...
--   window=S     seconds the attack runs (default 3); the server exits after
--   hello=S ready=S handover=S commit=S   the upgrader's timeouts
--   rendezvous=1 meet the new copy on an abstract socket
--   gc=stop      stop the collector from the start
--   port=N       the TCP port (default 0: any; the report says which)
--   log=FILE     where the upgrader's log lines go (default /dev/null)
--   control=ADDR a control socket (path or @name) served from the loop
--   systemd=1    let the upgrader notify $NOTIFY_SOCKET (off by default)
--   trigger=none start no upgrade: measure the whole window (control attacks)
--   linger=S     seconds to keep looping after the upgrade ended (default 0.3)
-- Writes FILE once at the end: one "key value" line each (see report()).
--
-- Both faces of fdpass.upgrade are driven: the pollable one of the split
-- (up:upgrade() starts, up:step() advances, up:pollfd()/up:timeout() say
-- when) where fdpass.upgrade.protocol exists, else the task of up:begin().
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local net = require "fdpass.net"
local loop = require "fdpass.loop"
local upgrade = require "fdpass.upgrade"

local now = fos.monotonic
local opts, argv = {}, {}
do
  local i = 1
  while arg[i] and arg[i] ~= "--" do
    local k, v = arg[i]:match("^([%w_]+)=(.*)$")
    assert(k, "bad argument " .. arg[i])
    opts[k] = v
    i = i + 1
  end
  for j = i + 1, #arg do argv[#argv + 1] = arg[j] end
end
assert(opts.out and #argv > 0, "usage: server.lua out=FILE [key=value ...] -- NEWCOPY ARGV...")
local window = tonumber(opts.window or 3)
local linger = tonumber(opts.linger or 0.3)

-- ---- what is measured ----------------------------------------------------

-- Every line goes to the log file (opts.log, default /dev/null), line
-- buffered, as an app's log to its stderr or a file would: writing a line
-- costs what it costs an app.
local logs, log_sample = 0, {}
local logfile = assert(io.open(opts.log or "/dev/null", "a"))
logfile:setvbuf("line")
local function log(line)
  logs = logs + 1
  logfile:write(line, "\n")
  if #log_sample < 5 then log_sample[#log_sample + 1] = line end
  log_sample.last = line
end

local CLK_TCK = 100 -- USER_HZ: what /proc/<pid>/stat counts in on Linux
local function cpu_seconds()
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("*a")
  f:close()
  -- after the command name, in parentheses: state is field 3, utime 14, stime 15
  local rest = s:match("%) (.*)$")
  local fields = {}
  for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
  return (tonumber(fields[12]) + tonumber(fields[13])) / CLK_TCK
end

-- ---- the app ---------------------------------------------------------------

local timeouts = {
  hello = tonumber(opts.hello or 3), handover = tonumber(opts.handover or 2),
  ready = tonumber(opts.ready or 3), commit = tonumber(opts.commit or 2), kill = 1,
}
-- the split's face (CONTRACT.md) comes with its protocol module
local pollable = pcall(require, "fdpass.upgrade.protocol")
local up = upgrade.new { argv = argv, timeouts = timeouts, log = log, rendezvous = opts.rendezvous == "1",
  systemd = opts.systemd == "1", signal = false, control = pollable and opts.control or nil }
if pollable then assert(up.inherit, "upgrader without inherit")(up) else up:start() end

local listener = assert(net.tcp_listen("127.0.0.1", tonumber(opts.port or 0)))
listener:nonblock(true)
up:listener("http", listener)
up:state(function() return { served = 0 } end)
local ctl -- main's controller, for a control socket before the split
if opts.control and not pollable then
  local server = assert(fdpass.listen(opts.control))
  local control = fdpass.dup(server)
  server:close()
  up:listener("control", control)
  ctl = assert(up:controller { listener = control, log = log })
end

local conns = {}
local function serve(fd)
  local data, _, code = fd:read(65536)
  if not data then
    if code ~= "EAGAIN" then conns[fd] = nil; fd:close() end
    return
  end
  local c = conns[fd]
  c.buf = c.buf .. data
  while true do
    local e = c.buf:find("\r\n\r\n", 1, true)
    if not e then break end
    c.buf = c.buf:sub(e + 4)
    fd:write("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n") -- small: the socket buffer takes it
  end
end

collectgarbage()
collectgarbage()
if opts.gc == "stop" then collectgarbage("stop") end
local fd_base = fos.fdcount()

-- ---- the loop ----------------------------------------------------------------

local TICK = 0.01
local started = now()
local trigger_at = opts.trigger ~= "none" and started + 0.2 or math.huge
local fd_peak, fd_sampled = 0, 0
local running, result, reason, ended_at, fd_at_end_of_upgrade
local max_gap, gaps_over_50ms, iterations = 0, 0, 0
local max_step = 0 -- the longest single step of the upgrader (and controller)
local max_step_cpu = 0 -- the most CPU time a single step used
local cpu0, cpu_upgrade = nil, nil
local task
local measured = false -- the upgrade ran during the previous iteration
local last = now()

local function finish_upgrade(ok, why)
  result, reason, ended_at, running = ok and "upgraded" or "failed", why, now(), false
  cpu_upgrade = cpu_seconds() - cpu0
  if ok then
    up:finish() -- nothing to hand over: DONE, and the channel closes
  end
  fd_at_end_of_upgrade = fos.fdcount()
end

while true do
  local t = now()
  local gap = t - last
  last = t
  -- the iteration that ended (or started) the upgrade counts too
  if opts.trigger == "none" then measured = true end
  if t - fd_sampled >= 0.05 then
    fd_sampled = t
    local n = fos.fdcount()
    if n > fd_peak then fd_peak = n end
  end
  if measured then
    iterations = iterations + 1
    if gap > max_gap then max_gap = gap end
    if gap > 0.05 then gaps_over_50ms = gaps_over_50ms + 1 end
  end
  if t >= started + window or (ended_at and t >= ended_at + linger) then break end

  if not running and not result and t >= trigger_at then
    cpu0 = cpu_seconds()
    if pollable then
      assert(up:upgrade())
    else
      task = assert(up:begin())
    end
    running = true
    last = now()
  end

  measured = running
  local readers, writers, timeout = { listener }, {}, TICK
  for fd in pairs(conns) do readers[#readers + 1] = fd end
  if ctl then
    local cr, cw, wake = ctl:pollfds()
    for _, fd in ipairs(cr) do readers[#readers + 1] = fd end
    for _, fd in ipairs(cw) do writers[#writers + 1] = fd end
    timeout = math.max(0, math.min(timeout, wake - now()))
  end
  if pollable and (running or opts.control) then
    readers[#readers + 1] = up:pollfd()
    local left = up:timeout()
    if left and left < timeout then timeout = math.max(0, left) end
  elseif running then
    local tr, tw = task:pollfds()
    for _, fd in ipairs(tr) do readers[#readers + 1] = fd end
    for _, fd in ipairs(tw) do writers[#writers + 1] = fd end
    timeout = math.max(0, math.min(timeout, task:deadline() - now()))
  end
  local r, w = loop.poll(readers, writers, timeout)
  local rs, ws = {}, {}
  for _, fd in ipairs(r or {}) do rs[fd] = true end
  for _, fd in ipairs(w or {}) do ws[fd] = true end
  if rs[listener] then
    for _ = 1, 64 do
      local fd = net.accept(listener)
      if not fd then break end
      fd:nonblock(true)
      conns[fd] = { buf = "" }
    end
  end
  for fd in pairs(conns) do
    if rs[fd] then serve(fd) end
  end
  -- The upgrader is stepped on every iteration while it runs: the most
  -- generous driving there is (no wake-up missed); what a step costs is
  -- what the gap shows.
  if ctl then ctl:step(rs, ws) end
  local step_started, step_cpu = now(), os.clock()
  if pollable and (running or opts.control) then
    local ev, info = up:step()
    if ev == "upgraded" then finish_upgrade(true, info and info.pid)
    elseif ev == "failed" then finish_upgrade(false, tostring(info))
    end
  elseif running then
    local ok, a, b = task:step()
    if ok ~= nil then finish_upgrade(ok, ok and a or (tostring(a) .. ": " .. tostring(b))) end
  end
  if measured then
    local took = now() - step_started
    if took > max_step then max_step = took end
    -- CPU time (os.clock: this process's, to the microsecond): what the
    -- step itself cost, whatever else the CPU ran meanwhile
    local cpu = os.clock() - step_cpu
    if cpu > max_step_cpu then max_step_cpu = cpu end
  end
end

local cpu_total = cpu0 and (cpu_seconds() - cpu0) or 0
local fd_end = fos.fdcount()
local f = assert(io.open(opts.out, "w"))
local function report(k, v) f:write(k, " ", tostring(v):gsub("\n", " "), "\n") end
report("pid", fos.getpid())
report("port", listener:info().addr:match(":(%d+)$"))
report("result", result or "running")
report("reason", reason or "")
report("max_gap_ms", ("%.1f"):format(max_gap * 1e3))
report("max_step_ms", ("%.1f"):format(max_step * 1e3))
report("max_step_cpu_ms", ("%.1f"):format(max_step_cpu * 1e3))
report("gaps_over_50ms", gaps_over_50ms)
report("iterations", iterations)
report("upgrade_s", ("%.3f"):format((ended_at or now()) - trigger_at))
report("cpu_upgrade_s", ("%.3f"):format(cpu_upgrade or cpu_total))
report("cpu_total_s", ("%.3f"):format(cpu_total))
report("logs", logs)
for i, l in ipairs(log_sample) do report("log" .. i, l) end
report("log_last", log_sample.last or "")
report("fd_base", fd_base)
report("fd_after", fd_at_end_of_upgrade or "")
report("fd_end", fd_end)
report("fd_peak", fd_peak)
f:close()
for fd in pairs(conns) do fd:close() end
-- An app's last call; not with systemd on: the systemd spec's notify peer
-- never reads, and close() would wait out the retries (10 s) for it.
if pollable and not running and opts.systemd ~= "1" then up:close() end
if running then
  -- the window closed first: leave no new copy behind (the spec kills by
  -- pid as well)
  if pollable and up.close then up:close() end
  os.exit(3)
end
os.exit(0)
