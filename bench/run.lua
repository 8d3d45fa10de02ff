-- `make bench`: in one run, the floor (a plain C sendmsg/recvmsg loop), the
-- C API, the Lua module on Lua 5.4 and LuaJIT and, where installed, Python's
-- socket.send_fds/recv_fds and cqueues' sendfd/recvfd on the same work:
-- rates and ratios to the floor, callgrind's user-space instructions per
-- round trip and per descriptor, the handover at several sizes against the
-- kernel's floor for passing as many descriptors; then one line per target
-- of issue 14, MET or MISSED. Writes RESULTS.md, fds.svg (gnuplot) and
-- raw.txt (every measurement) under BENCH_OUT (build/bench); `make
-- bench-publish` copies RESULTS.md and fds.svg to bench/.
--
-- Environment: BENCH_RUNS (runs per rate, default 5, median shown),
-- BENCH_SECS (CPU seconds per run, 0.2), BENCH_CG (callgrind iterations for
-- 1 descriptor, 2000; a tenth of it at 253), BENCH_HANDOVER (sizes, "2500
-- 5000 10000 30000 100000"), BENCH_HRUNS (handover runs at 10,000,
-- 5), QUICK=1 (fewer and shorter runs), FDPASS_CBENCH, FDPASS_HBENCH,
-- FDPASS_LUA, FDPASS_LUAJIT_CPATH (where LuaJIT's fdpass/core.so is).
local QUICK = (os.getenv("QUICK") or "") ~= "" and os.getenv("QUICK") ~= "0"
local RUNS = tonumber(os.getenv("BENCH_RUNS") or "") or (QUICK and 3 or 5)
local SECS = tonumber(os.getenv("BENCH_SECS") or "") or (QUICK and 0.1 or 0.2)
local CG = tonumber(os.getenv("BENCH_CG") or "") or (QUICK and 1000 or 2000)
local HSIZES = os.getenv("BENCH_HANDOVER") or (QUICK and "5000 10000" or "2500 5000 10000 30000 100000")
local HRUNS = tonumber(os.getenv("BENCH_HRUNS") or "") or (QUICK and 3 or 5)
local CBENCH = os.getenv("FDPASS_CBENCH") or "build/bench/cbench"
local LIBFDPASS = os.getenv("FDPASS_LIBFDPASS") or "build/libfdpass.so"
local HBENCH = os.getenv("FDPASS_HBENCH") or "build/bench/hbench"
local LUA = os.getenv("FDPASS_LUA") or "lua5.4"
local JIT_CPATH = os.getenv("FDPASS_LUAJIT_CPATH") or "build/luajit/?.so"
local OUT = os.getenv("BENCH_OUT") or "build/bench"
local STATE = 1024 * 1024

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

os.execute("mkdir -p " .. OUT)
local raw = assert(io.open(OUT .. "/raw.txt", "w"))
local function log(...) raw:write(table.concat({ ... }, " "), "\n"); raw:flush() end

local WORKS = {
  { id = "1", label = "1 fd per message", nfds = 1 },
  { id = "253", label = "253 fds per message", nfds = 253 },
  { id = "5000", label = "5,000 fds in one framed message", nfds = 5000 },
  { id = "64k", label = "64 KiB payload, no fds", nfds = 0 },
}

local have_python = ok("python3 -c 'import socket; socket.send_fds'")
-- the interpreter itself, not a wrapper script (pyenv's shim) that
-- callgrind would count instead
local PYTHON = have_python and sh("python3 -c 'import sys; print(sys.executable)'") or "python3"
local have_cqueues = ok(LUA .. " -e 'require \"cqueues.socket\"'")
local JIT_ENV = ("LUA_CPATH='%s;;'"):format(JIT_CPATH) -- before the command: valgrind counts the program it starts
local have_jit = ok(JIT_ENV .. " luajit -e 'require \"fdpass\"'")
local have_cg = ok("valgrind --version")

-- Contenders: how to run one measurement (work id and seconds or =count appended).
local CONTENDERS = {
  { id = "floor", label = "floor: C sendmsg/recvmsg", cmd = CBENCH .. " floor" },
  { id = "craw", label = "C API fdpass_sendmsg/recvmsg", cmd = CBENCH .. " raw" },
  { id = "cframed", label = "C API fdpass_chan_send/recv", cmd = CBENCH .. " framed" },
  { id = "lframed", label = "Lua 5.4 ch:send/recv, fd:close()", cmd = LUA .. " bench/lbench.lua framed" },
  { id = "lraw", label = "Lua 5.4 ch:sendmsg/recvmsg, fd:close()", cmd = LUA .. " bench/lbench.lua raw" },
  { id = "linto", label = "Lua 5.4 ch:recv(nil, into) (one table reused), fd:close()",
    cmd = LUA .. " bench/lbench.lua into" },
  { id = "lset", label = "Lua 5.4 ch:send/recv \"set\", set:close()", cmd = LUA .. " bench/lbench.lua set" },
  { id = "jframed", label = "LuaJIT ch:send/recv, fd:close()", env = JIT_ENV, cmd = "luajit bench/lbench.lua framed",
    missing = not have_jit and "not built (make LUA_VERSION=jit)" },
  { id = "jset", label = "LuaJIT ch:send/recv \"set\", set:close()", env = JIT_ENV, cmd = "luajit bench/lbench.lua set",
    missing = not have_jit and "not built (make LUA_VERSION=jit)" },
  { id = "jffi", label = "LuaJIT FFI over the C API, close(2) (bench/ffibench.lua: no fd objects)",
    cmd = "luajit bench/ffibench.lua " .. LIBFDPASS, missing = not ok("luajit -v") and "luajit not installed" },
  { id = "python", label = "Python socket.send_fds/recv_fds", cmd = PYTHON .. " bench/pybench.py",
    missing = not have_python and "not installed (python3 >= 3.9)" },
  { id = "cqueues", label = "cqueues sendfd/recvfd (1 fd each)", cmd = LUA .. " bench/cqbench.lua",
    missing = not have_cqueues and "not installed (apt-get install lua-cqueues)" },
}
local LABEL = {}
for _, c in ipairs(CONTENDERS) do LABEL[c.id] = c.label end

local function median(t)
  local s = {}
  for i, v in ipairs(t) do s[i] = v end
  table.sort(s)
  local n = #s
  if n == 0 then return nil end
  if n % 2 == 1 then return s[(n + 1) / 2] end
  return (s[n / 2] + s[n / 2 + 1]) / 2
end

-- Runs a command; its output and whether it exited 0 (the shell prints the
-- status: close() of an io.popen file gives it on 5.2+ only).
local function start(cmd)
  return io.popen(("%s 2>&1; printf '\\n#exit %%s\\n' $?"):format(cmd))
end
local function finish(p)
  local all = p:read("*a")
  p:close()
  local out, status = all:match("^(.-)\n#exit (%d+)\n$")
  return out or all, status == "0"
end
-- what to say of a failed run: the error line of a Lua traceback, else the last line
local function last_line(out)
  for line in out:gmatch("[^\n]+") do
    if line:match("^%S+: ") and not line:match("^stack traceback") and not line:match("^hbench: holding") then
      return line:sub(1, 140)
    end
  end
  return (out:match("([^\n]+)\n?$") or "failed"):sub(1, 140)
end

local t0 = os.time()

-- ---- rates ------------------------------------------------------------------

local results = {} -- results[contender][work] = { msgs = {..}, fds = {..}, err = }
for _, c in ipairs(CONTENDERS) do
  results[c.id] = {}
  for _, w in ipairs(WORKS) do results[c.id][w.id] = { msgs = {}, fds = {} } end
end

local function measure(c, w)
  local r = results[c.id][w.id]
  if r.err then return end
  local out, okay = finish(start(("%s timeout 60 %s %s %s"):format(c.env or "", c.cmd, w.id, SECS)))
  local msgs, fds, secs = out:match("(%d+) (%d+) ([%d.]+)%s*$")
  if not okay or not msgs then
    r.err = last_line(out)
    return
  end
  log("rate", c.id, w.id, msgs, fds, secs)
  r.msgs[#r.msgs + 1] = tonumber(msgs) / tonumber(secs)
  r.fds[#r.fds + 1] = tonumber(fds) / tonumber(secs)
end

io.stderr:write(("bench: rates: %d runs of %.2f s per measurement, %d measurements\n")
  :format(RUNS, SECS, #WORKS * #CONTENDERS))
for run = 1, RUNS do
  for _, w in ipairs(WORKS) do
    for _, c in ipairs(CONTENDERS) do
      if not c.missing then measure(c, w) end
    end
  end
  io.stderr:write(("bench: rates: run %d/%d done\n"):format(run, RUNS))
end

-- ---- callgrind: user-space instructions, exact whatever the machine does.
-- A run of N iterations is subtracted from one of 2N: startup cancels. ----

local instr = {} -- instr[contender][work] = instructions per message
local CG_WORKS = {
  { id = "1", count = CG, per = 1 },
  { id = "253", count = math.max(10, math.floor(CG / 10)), per = 253 },
}
if have_cg then
  local jobs = {}
  for _, c in ipairs(CONTENDERS) do
    if not c.missing then
      instr[c.id] = {}
      for _, w in ipairs(CG_WORKS) do
        for _, k in ipairs { 1, 2 } do
          jobs[#jobs + 1] = { c = c, w = w, k = k, n = w.count * k }
        end
      end
    end
  end
  local par = tonumber(sh("nproc") or "") or 1
  io.stderr:write(("bench: callgrind: %d runs, %d at a time\n"):format(#jobs, par))
  local ir = {}
  for i = 1, #jobs, par do
    local running = {}
    for j = i, math.min(#jobs, i + par - 1) do
      local job = jobs[j]
      running[#running + 1] = { job = job, p = start(("%s timeout 300 valgrind --tool=callgrind "
        .. "--callgrind-out-file=/dev/null %s %s =%d"):format(job.c.env or "", job.c.cmd, job.w.id, job.n)) }
    end
    for _, r in ipairs(running) do
      local out, okay = finish(r.p)
      local n = okay and tonumber(out:match("Collected : (%d+)"))
      local key = r.job.c.id .. " " .. r.job.w.id
      if n then
        log("callgrind", r.job.c.id, r.job.w.id, r.job.n, n)
        ir[key] = ir[key] or {}
        ir[key][r.job.k] = n
      else
        ir[key] = { err = last_line(out) }
      end
    end
  end
  for _, c in ipairs(CONTENDERS) do
    for _, w in ipairs(CG_WORKS) do
      local v = ir[c.id .. " " .. w.id]
      if v and v[1] and v[2] then instr[c.id][w.id] = (v[2] - v[1]) / w.count end
    end
  end
else
  io.stderr:write("bench: valgrind not installed: no instruction counts (apt-get install valgrind)\n")
end

-- ---- the handover: bench/handover.lua at each size, the kernel's floor for
-- passing as many descriptors (bench/hbench.c) in the same run ----

local nofile_hard = tonumber(sh("sh -c 'ulimit -Hn'") or "") or 0
local handover = {} -- { n =, runs = { {k = v} }, floor = { ms }, note = }
local function handover_at(n, runs)
  local h = { n = n, runs = {}, floor = {}, floor_cpu = {} }
  handover[#handover + 1] = h
  -- the old side holds n connections and, while handoff_all's message is
  -- queued, a duplicate of each descriptor the socket has not taken yet:
  -- n + 64 is the least it needs (near the limit a run may fail with EMFILE,
  -- which the table then says)
  if n + 64 > nofile_hard then
    h.note = ("not run: the old side needs at least %d descriptors (up to %d with handoff_all's "
      .. "queued duplicates), RLIMIT_NOFILE's hard limit is %d here"):format(n + 64, 2 * n + 64, nofile_hard)
    return
  end
  for _ = 1, runs do
    local out, okay = finish(start(("timeout 300 %s bench/handover.lua %d %d %s"):format(LUA, n, STATE, HBENCH)))
    local r = {}
    for k, v in out:gmatch("([%w_]+)=([%d.]+)") do r[k] = tonumber(v) end
    if not okay or not r.handover_ms then
      h.note, h.failed = "failed: " .. last_line(out), (h.failed or 0) + 1
      log("handover-failed", n, h.note)
    else
      log("handover", out:match("conns=[^\n]*"))
      h.runs[#h.runs + 1] = r
    end
    local fout = finish(start(("timeout 60 %s floor %d 3"):format(HBENCH, n)))
    local f = tonumber(fout:match("floor_ms=([%d.]+)"))
    if f then
      log("hfloor", fout:match("floor_ms=[^\n]*"))
      h.floor[#h.floor + 1] = f
      h.floor_cpu[#h.floor_cpu + 1] = tonumber(fout:match("floor_cpu_ms=([%d.]+)"))
    end
  end
end
for size in HSIZES:gmatch("%d+") do
  local n = tonumber(size)
  io.stderr:write(("bench: handover of %d connections\n"):format(n))
  handover_at(n, n == 10000 and HRUNS or n > 30000 and 1 or (QUICK and 1 or 3))
end

-- per size: medians of the runs
for _, h in ipairs(handover) do
  if #h.runs > 0 then
    local function med(k)
      local t = {}
      for i, r in ipairs(h.runs) do t[i] = r[k] end
      return median(t)
    end
    h.ms, h.floor_ms = med("handover_ms"), median(h.floor)
    h.cpu, h.old_cpu, h.new_cpu, h.floor_cpu = med("cpu_ms"), med("old_cpu_ms"), med("new_cpu_ms"), median(h.floor_cpu)
    h.spawn, h.commit, h.send, h.recv, h.loop = med("spawn_ms"), med("hello_commit_ms"),
      med("commit_handoff_ms"), med("handoff_first_ms"), med("first_last_ms")
    h.old_b = (med("old_hwm_kb") - med("old_base_kb")) * 1024 / h.n
    h.new_b = (med("new_hwm_kb") - med("new_base_kb")) * 1024 / h.n
    h.old_kb, h.new_kb = med("old_hwm_kb"), med("new_hwm_kb")
  end
end

-- ---- the tables ---------------------------------------------------------------

local function si(v)
  if v >= 1e6 then return ("%.2f M"):format(v / 1e6) end
  if v >= 1e3 then return ("%.1f k"):format(v / 1e3) end
  return ("%.0f"):format(v)
end
local function cnt(v) return v and ("%.0f"):format(v) or "-" end

local rows = {
  "| work | contender | messages/s | descriptors/s | vs floor | spread | instructions/msg | per fd |",
  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
}
local plot, ratio = {}, {} -- ratio[contender][work]
for _, w in ipairs(WORKS) do
  local floor = median(results.floor[w.id].msgs)
  for _, c in ipairs(CONTENDERS) do
    local r = results[c.id][w.id]
    local m, f = median(r.msgs), median(r.fds)
    local ins = instr[c.id] and instr[c.id][w.id]
    local cells
    if c.missing then
      cells = { c.missing, "", "", "", "", "" }
    elseif not m then
      cells = { "failed: " .. tostring(r.err), "", "", "", "", "" }
    else
      local q = floor and m / floor
      ratio[c.id] = ratio[c.id] or {}
      ratio[c.id][w.id] = q
      local lo, hi = math.huge, 0
      for _, v in ipairs(r.msgs) do lo, hi = math.min(lo, v), math.max(hi, v) end
      cells = { si(m), w.nfds > 0 and si(f) or "-", q and ("%.2f"):format(q) or "?",
        ("%.0f%%"):format((hi - lo) / m * 100), cnt(ins),
        ins and w.nfds > 1 and ("%.0f"):format(ins / w.nfds) or "" }
      if w.nfds > 0 then
        plot[c.id] = plot[c.id] or {}
        table.insert(plot[c.id], { w.nfds, f })
      end
    end
    rows[#rows + 1] = ("| %s | %s | %s |"):format(w.label, c.label, table.concat(cells, " | "))
  end
end
local tbl = table.concat(rows, "\n")

local hrows = {
  "| connections | handover (median) | kernel floor, same n | ratio | CPU old + new | floor CPU "
    .. "| spawn | HELLO..COMMITTED | CONNS encode+send | ..first conn | ..last conn | marginal CPU µs/conn "
    .. "| peak RSS old / new | bytes/conn old / new | runs |",
  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
}
local prev
for _, h in ipairs(handover) do
  if h.ms then
    -- what one more connection costs, from the CPU time (the wall time
    -- moves too much on a shared machine to difference it)
    h.marginal = prev and (h.cpu - prev.cpu) * 1e3 / (h.n - prev.n)
    local marginal = h.marginal and ("%.2f"):format(h.marginal) or "-"
    hrows[#hrows + 1] = ("| %d | %.1f ms | %s | %s | %.1f + %.1f ms | %s | %.1f ms | %.1f ms | %.1f ms "
      .. "| %.1f ms | %.1f ms | %s | %.1f / %.1f MiB | %.0f / %.0f | %s |")
      :format(h.n, h.ms, h.floor_ms and ("%.2f ms"):format(h.floor_ms) or "?",
        h.floor_ms and ("%.1f×"):format(h.ms / h.floor_ms) or "?", h.old_cpu, h.new_cpu,
        h.floor_cpu and ("%.2f ms"):format(h.floor_cpu) or "?", h.spawn, h.commit, h.send,
        h.recv, h.loop, marginal, h.old_kb / 1024, h.new_kb / 1024, h.old_b, h.new_b,
        h.failed and ("%d (and %d %s)"):format(#h.runs, h.failed, h.note) or tostring(#h.runs))
    prev = h
  else
    hrows[#hrows + 1] = ("| %d | %s | | | | | | | | | | | | | |"):format(h.n, h.note or "?")
  end
end
local htbl = table.concat(hrows, "\n")

-- ---- issue 14's targets -------------------------------------------------------

local verdicts = {}
local function verdict(what, value, fmt, target, le)
  local v
  if value == nil then v = "NOT MEASURED"
  elseif le then v = value <= target and "MET" or "MISSED"
  else v = value >= target and "MET" or "MISSED" end
  verdicts[#verdicts + 1] = ("| %s | %s | %s%s | **%s** |"):format(what,
    value and fmt:format(value) or "-", le and "≤ " or "≥ ", fmt:format(target), v)
end
local li, ji = instr.lframed or {}, instr.jframed or {}
local lr = ratio.lframed or {}
verdict("Lua 5.4 default API: instructions per 1-fd round trip", li["1"], "%.0f", 2000, true)
verdict("Lua 5.4 default API: instructions per fd at 253/message", li["253"] and li["253"] / 253, "%.0f", 400, true)
verdict("Lua 5.4 default API: 1 fd, share of the floor's rate", lr["1"], "%.2f", 0.90)
verdict("Lua 5.4 default API: 253 fds, share of the floor's rate", lr["253"], "%.2f", 0.95)
verdict("Lua 5.4 default API: 64 KiB payload, share of the floor's rate", lr["64k"], "%.2f", 0.90)
verdict("LuaJIT default API: instructions per 1-fd round trip", ji["1"], "%.0f", 1000, true)
verdict("(LuaJIT FFI over libfdpass's C API, a prototype in bench/: instructions per 1-fd round trip)",
  instr.jffi and instr.jffi["1"], "%.0f", 1000, true)
local h10
for _, h in ipairs(handover) do if h.n == 10000 then h10 = h end end
verdict("Handover 10,000 conns + 1 MiB state, times the kernel floor for 10,000 fds (wall)",
  h10 and h10.ms and h10.floor_ms and h10.ms / h10.floor_ms, "%.1f×", 3, true)
verdict("(the same in CPU time of both sides, for reference)",
  h10 and h10.cpu and h10.floor_cpu and h10.cpu / h10.floor_cpu, "%.1f×", 3, true)
local largest, first_m, last_m, steps = nil, nil, nil, 0
for _, h in ipairs(handover) do
  if h.ms then
    largest = h
    if h.marginal then first_m, last_m, steps = first_m or h.marginal, h.marginal, steps + 1 end
  end
end
if steps < 2 then first_m = nil end -- one step says nothing about growth
local h100
for _, h in ipairs(handover) do if h.n == 100000 then h100 = h end end
local lin = first_m and last_m and last_m / first_m
if h100 and h100.ms then
  verdict("Handover 100,000 conns: marginal CPU per conn, last size step over first", lin, "%.2f", 1.5, true)
else
  verdicts[#verdicts + 1] = ("| Handover 100,000 conns, time growing linearly | %s | 100,000 run, "
    .. "marginal CPU ratio ≤ 1.50 | **NOT MET HERE** (%s) |"):format(lin and ("up to %d: marginal CPU ratio %.2f")
      :format(largest.n, lin) or "-", h100 and h100.note or "100,000 not in BENCH_HANDOVER")
end
verdicts[#verdicts + 1] = ("| Peak memory of both sides per connection | %s | reported | **%s** |")
  :format(h10 and h10.old_b and ("10,000: old %.0f B, new %.0f B"):format(h10.old_b, h10.new_b) or "-",
    h10 and h10.old_b and "MET" or "NOT MEASURED")
local counted, installed = {}, 0
for _, c in ipairs(CONTENDERS) do
  if not c.missing then
    installed = installed + 1
    if instr[c.id] and instr[c.id]["1"] then counted[#counted + 1] = c.id end
  end
end
verdicts[#verdicts + 1] = ("| make bench: callgrind instructions beside the rates for every contender, "
  .. "the plot, a verdict per target | instructions for %d of %d installed contenders; plot %s | all | **%s** |")
  :format(#counted, installed, ok("command -v gnuplot") and "drawn" or "not drawn (no gnuplot)",
    #counted == installed and "MET" or "MISSED")
local vtbl = "| target (issue 14) | measured | target | verdict |\n| --- | ---: | ---: | --- |\n"
  .. table.concat(verdicts, "\n")

print(tbl)
print()
print(htbl)
print()
print(vtbl)

-- ---- the machine, RESULTS.md, the plot -----------------------------------------

local cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2") or "?"
local machine = {
  ("- CPU: %s, %s cores online; %s; load average at the end %s"):format(cpu:gsub("^%s+", ""), sh("nproc") or "?",
    sh("uname -srm") or "?", sh("cut -d' ' -f1-3 /proc/loadavg") or "?"),
  ("- OS: Debian %s; %s; %s; %s; %s"):format(sh("cat /etc/debian_version") or "?", sh(LUA .. " -v") or "?",
    sh("luajit -v") or "no LuaJIT", sh("python3 --version") or "python3 not installed", sh("cc --version") or "?"),
  ("- cqueues: %s; %s"):format(have_cqueues and (sh(LUA .. " -e 'print(require\"cqueues\".VERSION)'") or "?")
    or "not installed", sh("valgrind --version") or "no valgrind"),
  ("- %s UTC; %d runs of %.2f s per rate (median; spread = (max - min) / median); callgrind %d and %d "
    .. "iterations (1 fd), %d and %d (253); RLIMIT_NOFILE hard %d; whole run %d s%s")
    :format(os.date("!%Y-%m-%d %H:%M"), RUNS, SECS, CG, 2 * CG, CG_WORKS[2].count, 2 * CG_WORKS[2].count,
      nofile_hard, os.time() - t0, QUICK and " (QUICK=1)" or ""),
}

local gnuplot = ok("command -v gnuplot")
if gnuplot then
  local gp = {
    'set terminal svg size 1000,520 dynamic noenhanced font "sans,11" background "white"',
    ('set output "%s/fds.svg"'):format(OUT),
    'set title "descriptors per second against descriptors per message (one core, socketpair ping)"',
    'set logscale x', 'set xrange [0.7:8000]', 'set xtics ("1" 1, "253" 253, "5000 (framed)" 5000)',
    'set xlabel "descriptors per message"', 'set ylabel "descriptors/s (millions)"',
    'set yrange [0:*]', 'set grid', 'set key outside right top Left reverse',
  }
  local plots = {}
  for _, c in ipairs(CONTENDERS) do
    if plot[c.id] then
      gp[#gp + 1] = ("$%s << EOD"):format(c.id)
      for _, p in ipairs(plot[c.id]) do gp[#gp + 1] = ("%d %.6f"):format(p[1], p[2] / 1e6) end
      gp[#gp + 1] = "EOD"
      plots[#plots + 1] = ('$%s with linespoints lw 2 title "%s"'):format(c.id, LABEL[c.id]:gsub('"', "'"))
    end
  end
  gp[#gp + 1] = "plot " .. table.concat(plots, ", \\\n  ")
  local p = io.popen("gnuplot", "w")
  p:write(table.concat(gp, "\n"), "\n")
  p:close()
else
  io.stderr:write("bench: gnuplot not installed: no fds.svg (apt-get install gnuplot-nox)\n")
end

local notes = ""
local nf = io.open("bench/NOTES.md")
if nf then notes = nf:read("*a"); nf:close() end
local svg = io.open(OUT .. "/fds.svg")
if svg then svg:close() end
local md = io.open(OUT .. "/RESULTS.md", "w")
md:write("# fdpass benchmark results\n\n",
  "Written by `make bench` (bench/run.lua); bench/NOTES.md (appended below) says how each figure\n",
  "is made. Every contender does the same work in one process on one AF_UNIX seqpacket\n",
  "socketpair: send a message with descriptors (copies of one /dev/null descriptor), receive\n",
  "it, close every descriptor that arrived. \"vs floor\" is messages/s (CPU time) over the\n",
  "floor's (a plain C sendmsg/recvmsg loop) on the same work in the same run;\n",
  "\"instructions\" are callgrind's user-space instructions per message (run of 2N minus run\n",
  "of N, over N), \"per fd\" that over the descriptors of a message.\n\n",
  "## Targets\n\n", vtbl, "\n\n## Round trips\n\n", tbl,
  "\n\n## Handover (bench/handover.lua: 1 listener, N live TCP connections, 1 MiB state)\n\n", htbl,
  "\n\n## Machine\n\n", table.concat(machine, "\n"), "\n\n",
  svg and "![descriptors/s against descriptors per message](fds.svg)\n\n" or "",
  notes)
md:close()
raw:close()
io.stderr:write(("bench: wrote %s/RESULTS.md, %s/raw.txt%s in %d s\n"):format(OUT, OUT,
  svg and (" and " .. OUT .. "/fds.svg") or "", os.time() - t0))
