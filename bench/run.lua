-- `make bench`: times the floor (a plain C sendmsg/recvmsg loop), the C API,
-- the Lua module and, where installed, Python's socket.send_fds/recv_fds and
-- cqueues' sendfd/recvfd on the same work; prints one table and writes
-- bench/RESULTS.md and bench/fds.svg (gnuplot).
--
-- Environment: BENCH_RUNS (runs per measurement, default 7: the median is
-- shown), BENCH_SECS (CPU seconds per run, default 0.2), FDPASS_CBENCH (the C
-- program), FDPASS_LUA, BENCH_OUT (where RESULTS.md and fds.svg go: bench/).
-- Every measurement is a process of its own; the runs go round-robin over
-- all of them so that a slow moment of the machine does not fall on one.
local RUNS = tonumber(os.getenv("BENCH_RUNS") or "") or 7
local SECS = tonumber(os.getenv("BENCH_SECS") or "") or 0.2
local CBENCH = os.getenv("FDPASS_CBENCH") or "build/bench/cbench"
local LUA = os.getenv("FDPASS_LUA") or "lua5.4"
local OUT = os.getenv("BENCH_OUT") or "bench"

local function sh(cmd) -- first line of output, or nil
  local p = io.popen(cmd .. " 2>/dev/null")
  local out = p:read("*l")
  p:close()
  return out
end

-- 5.2+ gives true for exit 0; 5.1 and LuaJIT the wait status, 0 then
local function ok(cmd)
  local r = os.execute(cmd .. " >/dev/null 2>&1")
  return r == true or r == 0
end

local WORKS = {
  { id = "1", label = "1 fd per message", nfds = 1 },
  { id = "253", label = "253 fds per message", nfds = 253 },
  { id = "5000", label = "5,000 fds in one framed message", nfds = 5000 },
  { id = "64k", label = "64 KiB payload, no fds", nfds = 0 },
}

local have_python = ok("python3 -c 'import socket; socket.send_fds'")
local have_cqueues = ok(LUA .. " -e 'require \"cqueues.socket\"'")

-- Contenders: how to run one measurement (work id and seconds appended).
local CONTENDERS = {
  { id = "floor", label = "floor: C sendmsg/recvmsg", cmd = CBENCH .. " floor" },
  { id = "craw", label = "C API fdpass_sendmsg/recvmsg", cmd = CBENCH .. " raw", target = 0.97 },
  { id = "cframed", label = "C API fdpass_send/recv", cmd = CBENCH .. " framed", target = 0.97 },
  { id = "lframed", label = "Lua ch:send/recv, fd:close()", cmd = LUA .. " bench/lbench.lua framed",
    target = { ["1"] = 0.85, ["253"] = 0.95 } },
  { id = "lraw", label = "Lua ch:sendmsg/recvmsg, fd:close()", cmd = LUA .. " bench/lbench.lua raw" },
  { id = "lset", label = "Lua ch:send/recv \"set\", set:close()", cmd = LUA .. " bench/lbench.lua set",
    target = { ["1"] = 0.85, ["253"] = 0.95 } },
  { id = "python", label = "Python socket.send_fds/recv_fds", cmd = "python3 bench/pybench.py",
    missing = not have_python and "not installed (python3 >= 3.9)" },
  { id = "cqueues", label = "cqueues sendfd/recvfd (1 fd each)", cmd = LUA .. " bench/cqbench.lua",
    missing = not have_cqueues and "not installed (apt-get install lua-cqueues)" },
}

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) / 2] end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end

-- ---- measuring -----------------------------------------------------------

local results = {} -- results[contender][work] = { msgs = {..}, fds = {..}, err = }
for _, c in ipairs(CONTENDERS) do
  results[c.id] = {}
  for _, w in ipairs(WORKS) do results[c.id][w.id] = { msgs = {}, fds = {} } end
end

local function measure(c, w)
  local r = results[c.id][w.id]
  if r.err then return end
  -- the shell prints the exit status: close() of an io.popen file gives it
  -- on 5.2+ only
  local p = io.popen(("timeout 60 %s %s %s 2>&1; printf '\\n#exit %%s\\n' $?"):format(c.cmd, w.id, SECS))
  local all = p:read("*a")
  p:close()
  local out, status = all:match("^(.-)\n#exit (%d+)\n$")
  local okay = status == "0"
  out = out or all
  local msgs, fds, secs = out:match("(%d+) (%d+) ([%d.]+)%s*$")
  if not okay or not msgs then
    r.err = (out:match("([^\n]+)\n?$") or "failed"):sub(1, 80)
    return
  end
  r.msgs[#r.msgs + 1] = tonumber(msgs) / tonumber(secs)
  r.fds[#r.fds + 1] = tonumber(fds) / tonumber(secs)
end

local t0 = os.time()
io.stderr:write(("bench: %d runs of %.2f s per measurement, %d measurements\n")
  :format(RUNS, SECS, #WORKS * #CONTENDERS))
for run = 1, RUNS do
  for _, w in ipairs(WORKS) do
    for _, c in ipairs(CONTENDERS) do
      if not c.missing then measure(c, w) end
    end
  end
  io.stderr:write(("bench: run %d/%d done\n"):format(run, RUNS))
end

-- ---- the handover: bench/handover.lua, 1 listener, 10,000 live
-- connections, 1 MiB of state; spawn apart; peak memory of both sides ----

local handover = {}
local function measure_handover()
  local runs = {}
  for _ = 1, RUNS do
    local p = assert(io.popen(LUA .. " bench/handover.lua 10000 1048576 2>&1"))
    local out = p:read("*a")
    p:close()
    local r = {}
    for k, v in out:gmatch("([%w_]+)=([%d.]+)") do r[k] = tonumber(v) end
    if not r.handover_ms then
      handover.note = "handover: bench/handover.lua failed: " .. out:gsub("\n", " "):sub(1, 120)
      return
    end
    runs[#runs + 1] = r
  end
  local function med(k)
    local t = {}
    for i, r in ipairs(runs) do t[i] = r[k] end
    return median(t)
  end
  handover.n, handover.spawn, handover.hand = #runs, med("spawn_ms"), med("handover_ms")
  handover.old_mb, handover.new_mb = med("old_hwm_kb") / 1024, med("new_hwm_kb") / 1024
end
local hok, herr = pcall(measure_handover)
if not hok then handover.note = "handover: " .. tostring(herr):sub(1, 100) end

-- ---- the table ---------------------------------------------------------------

local function si(v)
  if v >= 1e6 then return ("%.2f M"):format(v / 1e6) end
  if v >= 1e3 then return ("%.1f k"):format(v / 1e3) end
  return ("%.0f"):format(v)
end

local rows, verdicts = {}, {}
rows[1] = "| work | contender | messages/s | descriptors/s | vs floor | spread |"
rows[2] = "| --- | --- | ---: | ---: | ---: | ---: |"
local plot = {} -- plot[contender] = { {nfds, fds/s}, ... }
for _, w in ipairs(WORKS) do
  local floor = median(results.floor[w.id].msgs)
  for _, c in ipairs(CONTENDERS) do
    local r = results[c.id][w.id]
    local m, f = median(r.msgs), median(r.fds)
    local cells
    if c.missing then
      cells = { c.missing, "", "", "" }
    elseif not m then
      cells = { "failed: " .. tostring(r.err), "", "", "" }
    else
      local ratio = floor and m / floor
      local lo, hi = math.huge, 0
      for _, v in ipairs(r.msgs) do lo, hi = math.min(lo, v), math.max(hi, v) end
      cells = { si(m), w.nfds > 0 and si(f) or "-", ratio and ("%.2f"):format(ratio) or "?",
        ("%.0f%%"):format((hi - lo) / m * 100) }
      local target = type(c.target) == "table" and c.target[w.id] or tonumber(c.target)
      if target and ratio then
        verdicts[#verdicts + 1] = ("- %s, %s: %.3f of the floor, target %.2f: **%s**")
          :format(c.label, w.label, ratio, target, ratio >= target and "met" or "missed")
      end
      if w.nfds > 0 then
        plot[c.id] = plot[c.id] or {}
        table.insert(plot[c.id], { w.nfds, f })
      end
    end
    rows[#rows + 1] = ("| %s | %s | %s |"):format(w.label, c.label, table.concat(cells, " | "))
  end
end
if handover.note then
  rows[#rows + 1] = ("| upgrade | %s | | | | |"):format(handover.note)
else
  rows[#rows + 1] = ("| full handover: 1 listener, 10,000 live connections, 1 MiB state "
    .. "(fdpass.upgrade, median of %d) | spawn %.1f ms (apart) | handover %.1f ms "
    .. "| target < 50 ms: %s | peak RSS old %.1f MiB | new %.1f MiB |")
    :format(handover.n, handover.spawn, handover.hand, handover.hand < 50 and "met" or "MISSED",
      handover.old_mb, handover.new_mb)
end
local tbl = table.concat(rows, "\n")
print(tbl)
print()
print(table.concat(verdicts, "\n"))

-- ---- the machine, RESULTS.md, the plot -----------------------------------------

local cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2") or "?"
local machine = {
  ("- CPU: %s, %s cores online; %s"):format(cpu:gsub("^%s+", ""), sh("nproc") or "?", sh("uname -srm") or "?"),
  ("- OS: Debian %s; %s; %s; %s"):format(sh("cat /etc/debian_version") or "?", sh(LUA .. " -v") or "?",
    sh("python3 --version") or "python3 not installed", sh("cc --version") or "?"),
  ("- cqueues: %s"):format(have_cqueues and (sh(LUA .. " -e 'print(require\"cqueues\".VERSION)'") or "?")
    or "not installed"),
  ("- %s UTC; %d runs of %.2f s per measurement (median shown; spread = (max - min) / median); whole run %d s")
    :format(os.date("!%Y-%m-%d %H:%M"), RUNS, SECS, os.time() - t0),
}

local gnuplot = ok("command -v gnuplot")
if gnuplot then
  local order = { "floor", "craw", "cframed", "lframed", "lraw", "lset", "python", "cqueues" }
  local labels = {}
  for _, c in ipairs(CONTENDERS) do labels[c.id] = c.label end
  local gp = {
    'set terminal svg size 1000,520 dynamic noenhanced font "sans,11" background "white"',
    ('set output "%s/fds.svg"'):format(OUT),
    'set title "descriptors per second against descriptors per message (one core, socketpair ping)"',
    'set logscale x', 'set xrange [0.7:8000]', 'set xtics ("1" 1, "253" 253, "5000 (framed)" 5000)',
    'set xlabel "descriptors per message"', 'set ylabel "descriptors/s (millions)"',
    'set yrange [0:*]', 'set grid', 'set key outside right top Left reverse',
  }
  local plots = {}
  for _, id in ipairs(order) do
    if plot[id] then
      gp[#gp + 1] = ("$%s << EOD"):format(id)
      for _, p in ipairs(plot[id]) do gp[#gp + 1] = ("%d %.6f"):format(p[1], p[2] / 1e6) end
      gp[#gp + 1] = "EOD"
      plots[#plots + 1] = ('$%s with linespoints lw 2 title "%s"'):format(id, labels[id]:gsub('"', "'"))
    end
  end
  gp[#gp + 1] = "plot " .. table.concat(plots, ", \\\n  ")
  local p = io.popen("gnuplot", "w")
  p:write(table.concat(gp, "\n"), "\n")
  p:close()
else
  io.stderr:write("bench: gnuplot not installed: fds.svg not redrawn (apt-get install gnuplot-nox)\n")
end

local notes = ""
local nf = io.open("bench/NOTES.md")
if nf then notes = nf:read("*a"); nf:close() end
local md = io.open(OUT .. "/RESULTS.md", "w")
md:write("# fdpass benchmark results\n\n",
  "Written by `make bench` (bench/run.lua). Every contender does the same work in one\n",
  "process on one AF_UNIX seqpacket socketpair: send a message with descriptors (copies\n",
  "of one /dev/null descriptor), receive it, close every descriptor that arrived.\n",
  "\"vs floor\" is messages/s over the floor's (a plain C sendmsg/recvmsg loop) on the\n",
  "same work; for 5,000 descriptors a message is the whole 5,000: one framed message,\n",
  "20 sendmsg of at most 253 for the floor, the raw calls and Python, 5,000 for cqueues.\n\n",
  tbl, "\n\n## Targets\n\n", table.concat(verdicts, "\n"), "\n\n## Machine\n\n",
  table.concat(machine, "\n"), "\n\n",
  io.open(OUT .. "/fds.svg") and "![descriptors/s against descriptors per message](fds.svg)\n\n" or "",
  notes)
md:close()
io.stderr:write(("bench: wrote %s/RESULTS.md%s\n"):format(OUT, gnuplot and (" and " .. OUT .. "/fds.svg") or ""))
