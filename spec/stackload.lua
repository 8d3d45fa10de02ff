-- The adapters' specs share this driver: it starts an example server of a
-- stack (lua-http, copas, luv) on 127.0.0.1 under one interpreter, puts
-- keep-alive load on it from the bundled client (examples/http_load.lua)
-- and from wrk at once, upgrades it N times alternating SIGHUP and the
-- control socket, and returns what it saw: the clients' figures, every
-- old process's closing line, the counter before and after, descriptors
-- and RSS of the first and the last generation. The specs assert.
local fdpass = require "fdpass"
local net = require "fdpass.net"
local fos = require "fdpass.os"
local loop = require "fdpass.loop"
local upgrade = require "fdpass.upgrade"
local H = require "helpers"

local S = {}

local function sleep(s) loop.poll({}, nil, s) end
S.sleep = sleep

local function readall(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

S.root = sh("pwd"):gsub("%s+$", "")
-- The build the suite runs from (make test: build/, make sanitize:
-- build-san/), from the C path the Makefile set.
S.build = (os.getenv("LUA_CPATH") or ""):match("^(/[^;]-)/lua[^/;]*/%?%.so") or (S.root .. "/build")

-- ---- which Lua runs which stack ---------------------------------------------------

-- Debian ships lua-http and copas for 5.1 only (LuaJIT runs them); luv for all.
local STACK_LUAS = {
  http = { "lua5.1", "luajit" }, copas = { "lua5.1", "luajit" },
  luv = { "lua5.1", "lua5.3", "lua5.4", "luajit" },
}
local BUILD_DIR = { ["lua5.1"] = "lua5.1", ["lua5.3"] = "lua5.3", ["lua5.4"] = "lua5.4", luajit = "luajit" }

--- The interpreter a stack's spec runs its servers on: the one running the
-- specs if the stack exists for it, else the stack's first.
function S.lua_for(stack)
  local own = H.lua
  for _, l in ipairs(STACK_LUAS[stack]) do
    if l == own then return own end
  end
  return STACK_LUAS[stack][1]
end

--- The environment of a child running `lua`: our module trees and that
-- interpreter's build of fdpass.core (make builds it), plus `extra`.
function S.env(lua, extra)
  local b = assert(BUILD_DIR[lua], "no build for " .. tostring(lua))
  local core = ("%s/%s/fdpass/core.so"):format(S.build, b)
  assert(io.open(core), "fdpass.core is not built for " .. lua .. " (" .. core .. "): make builds it")
    :close()
  local env = {
    PATH = os.getenv("PATH"), HOME = os.getenv("HOME") or "/tmp",
    LUA_PATH = ("%s/lua/?.lua;%s/lua/?/init.lua;%s/spec/?.lua;;"):format(S.root, S.root, S.root),
    LUA_CPATH = ("%s/%s/?.so;;"):format(S.build, b),
  }
  -- make sanitize preloads the sanitizers' runtime: the children too
  for _, k in ipairs { "LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS" } do env[k] = os.getenv(k) end
  for k, v in pairs(extra or {}) do env[k] = v end
  return env
end

-- ---- processes ------------------------------------------------------------------

function S.fds(pid)
  return tonumber((sh(("ls /proc/%d/fd 2>/dev/null | wc -l"):format(pid)):match("%d+"))) or 0
end

function S.rss(pid)
  local s = readall(("/proc/%d/status"):format(pid)) or ""
  return tonumber(s:match("VmRSS:%s*(%d+)")) or 0
end

function S.pid_of(srv)
  local s = readall(srv.pidfile)
  return s and tonumber(s:match("%d+"))
end

--- One request on a connection of its own ("Connection: close"): the
-- status line's code and the body, or nil, why.
function S.get(port, timeout)
  local fd, err = net.tcp_connect("127.0.0.1", port, timeout or 2)
  if not fd then return nil, err end
  local req = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
  local ok, werr = fd:write(req)
  if not ok then fd:close(); return nil, werr end
  local got, deadline = "", fos.monotonic() + (timeout or 2)
  while fos.monotonic() < deadline do
    loop.poll({ fd }, nil, 0.1)
    local data, _, code = fd:read(65536)
    if data then got = got .. data elseif code ~= "EAGAIN" then break end
  end
  fd:close()
  local status = got:match("^HTTP/1%.1 (%d+)")
  if not status then return nil, "no answer: " .. ("%q"):format(got:sub(1, 200)) end
  return tonumber(status), got:match("\r\n\r\n(.*)$")
end

--- Starts `script` (an example server) with `lua` on a free port; waits
-- until it answers. `env` extra variables (UPGRADE_MODE, LUA_INIT, ...).
function S.start(stack, script, env)
  local lua = S.lua_for(stack)
  local port = H.free_port()
  local srv = {
    lua = lua, port = port, control = ("@fdpass-ad-%s-%d-%d"):format(stack, fos.getpid(), port),
    pidfile = os.tmpname(), errfile = os.tmpname(), script = script,
  }
  os.remove(srv.pidfile)
  local err = assert(io.open(srv.errfile, "w"))
  srv.proc = assert(fdpass.spawn({ lua, script, tostring(port), srv.control, srv.pidfile },
    { env = S.env(lua, env), fds = { [2] = err } }))
  err:close()
  for _ = 1, 100 do
    if S.pid_of(srv) and S.get(port, 0.5) then return srv end
    sleep(0.05)
  end
  error(("%s did not start on %s: %s"):format(script, lua, readall(srv.errfile) or ""))
end

--- Stops the serving copy and reaps the first; the server's stderr.
function S.stop(srv)
  local pid = S.pid_of(srv)
  if pid then fos.kill(pid, "TERM") end
  for _ = 1, 100 do
    if not pid or H.gone_or_zombie(pid) then break end
    sleep(0.02)
  end
  srv.proc:wait(2)
  local log = readall(srv.errfile) or ""
  os.remove(srv.errfile)
  os.remove(srv.pidfile)
  os.remove(srv.pidfile .. ".lock")
  return log
end

--- Runs `fn(srv)` and stops the server whatever happens: its result and
-- the server's log, or the error raised again with the log after it (a
-- failed assertion leaves no server running).
function S.guard(srv, fn)
  local ok, a, b, c = pcall(fn, srv)
  local log = S.stop(srv)
  if not ok then error(tostring(a) .. "\n" .. log, 0) end
  return log, a, b, c
end

--- One upgrade by `how` ("signal" or "control"): the new pid, or nil, why.
function S.upgrade(srv, how)
  local old = S.pid_of(srv)
  if how == "signal" then
    fos.kill(old, "HUP")
    local deadline = fos.monotonic() + 20
    while fos.monotonic() < deadline do
      local pid = S.pid_of(srv)
      if pid and pid ~= old then return pid end
      sleep(0.01)
    end
    return nil, "no new copy within 20 s of SIGHUP"
  end
  local r, err = upgrade.request(srv.control, "upgrade", 30)
  if not (r and r.ok) then return nil, tostring(r and (r.message or r.reason) or err) end
  return r.new
end

-- ---- load ---------------------------------------------------------------------------

local function spawn_reader(argv, env)
  local r, w = assert(fos.pipe())
  local proc = assert(fdpass.spawn(argv, { env = env, fds = { [1] = w } }))
  w:close()
  return { proc = proc, out = r }
end

local function collect(p, sig)
  p.proc:kill(sig)
  local parts = {}
  while true do
    local data = p.out:read(4096)
    if not data or data == "" then break end
    parts[#parts + 1] = data
  end
  p.out:close()
  p.proc:wait(10)
  return table.concat(parts)
end

--- The bundled client: `conns` keep-alive connections until stopped.
function S.load(port, conns)
  return spawn_reader({ H.lua, "examples/http_load.lua", tostring(port), tostring(conns), "120" },
    S.env(H.lua))
end

function S.load_result(p)
  local out = collect(p, "TERM")
  local n = { text = out }
  for k, v in out:gmatch("([%w_]+)=(%d+)") do n[k] = tonumber(v) end
  return n
end

--- wrk, bounded: -t1 -c`conns` for at most `seconds`; stopped by SIGINT
-- (it prints its summary then).
function S.wrk(port, conns, seconds)
  return spawn_reader({ "wrk", "-t1", "-c" .. conns, "-d" .. seconds .. "s", "--latency",
    ("http://127.0.0.1:%d/"):format(port) }, { PATH = os.getenv("PATH") })
end

local UNIT = { us = 1e-3, ms = 1, s = 1e3 }
function S.wrk_result(p)
  local out = collect(p, "INT")
  local r = { text = out, requests = tonumber(out:match("(%d+) requests in")) or -1, errors = 0, non2xx = 0 }
  local c, rd, w, t = out:match("Socket errors: connect (%d+), read (%d+), write (%d+), timeout (%d+)")
  if c then r.errors = tonumber(c) + tonumber(rd) + tonumber(w) + tonumber(t) end
  r.non2xx = tonumber(out:match("Non%-2xx or 3xx responses: (%d+)")) or 0
  local v, u = out:match("\n%s*99%%%s+([%d%.]+)(%a+)")
  r.p99_ms = v and tonumber(v) * (UNIT[u] or 0) or -1
  return r
end

-- ---- the scenario -------------------------------------------------------------------

--- Runs `script` of `stack` under load through `upgrades` upgrades.
-- opts: `mode` ("handover"/"drain"), `conns` (bundled client), `wrk`
-- (wrk connections, 0: none), `pause` between upgrades, `env`. `conns`
-- 0: wrk alone (bench/adapters_wrk.lua).
function S.run(stack, script, opts)
  opts = opts or {}
  local upgrades = opts.upgrades or 10
  local conns, wrk_conns = opts.conns or 16, opts.wrk or 20
  local env = { UPGRADE_MODE = opts.mode }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  local srv = S.start(stack, script, env)
  local r = { lua = srv.lua, stack = stack, pids = {}, handovers = {} }
  local _, body = S.get(srv.port)
  r.first_body = body
  local first = S.pid_of(srv)
  sleep(0.1)
  r.fds_start = S.fds(first)
  local load = conns > 0 and S.load(srv.port, conns) or nil
  local wrk = wrk_conns > 0 and S.wrk(srv.port, wrk_conns, 60) or nil
  sleep(0.5)
  -- Every client connection accepted before the first upgrade (a loaded
  -- machine may take longer than the pause): one still in the backlog goes
  -- with the listener, not as a handed-over connection. Bounded.
  local settled = fos.monotonic() + 5
  while S.fds(first) < r.fds_start + conns + wrk_conns and fos.monotonic() < settled do sleep(0.05) end
  r.rss_start = S.rss(first)
  r.pids[1] = first
  local t0 = fos.monotonic()
  for i = 1, upgrades do
    local how = i % 2 == 1 and "signal" or "control"
    local pid, err = S.upgrade(srv, how)
    if not pid then
      r.failure = ("upgrade %d (%s): %s"):format(i, how, tostring(err))
      break
    end
    r.pids[#r.pids + 1] = pid
    sleep(opts.pause or 0.15)
  end
  r.upgrade_seconds = fos.monotonic() - t0
  sleep(0.3)
  local last = S.pid_of(srv)
  r.rss_end = S.rss(last)
  r.wrk = wrk and S.wrk_result(wrk)
  r.load = load and S.load_result(load) or { text = "" }
  -- every old process gone (drain mode: after its deadline)
  local deadline = fos.monotonic() + (opts.linger or 5)
  for _, pid in ipairs(r.pids) do
    while pid ~= last and not H.gone_or_zombie(pid) and fos.monotonic() < deadline do sleep(0.02) end
    if pid ~= last and not H.gone_or_zombie(pid) then r.lingering = (r.lingering or 0) + 1 end
  end
  local status, final = S.get(srv.port)
  r.final_status, r.final_body = status, final
  r.final_count = final and tonumber(final:match("served (%d+)"))
  -- the connections of the load are gone: the last copy holds what the
  -- first held before the load
  for _ = 1, 50 do
    r.fds_end = S.fds(last)
    if r.fds_end <= r.fds_start then break end
    sleep(0.05)
  end
  r.log = S.stop(srv)
  r.done = {}
  for h, p, peer, cut in r.log:gmatch("done: handed (%d+), closed (%d+) politely, (%d+) by peers, (%d+) cut") do
    r.done[#r.done + 1] = { handed = tonumber(h), polite = tonumber(p), peer = tonumber(peer), cut = tonumber(cut) }
  end
  return r
end

--- The one-line summary a spec prints (the closing note's figures).
function S.summary(r)
  local w = r.wrk or { requests = 0, errors = 0, p99_ms = 0, non2xx = 0 }
  return ("%s on %s: %d upgrades in %.1f s; load answered %d (failed %d, reset %d, closed politely %d, worst %.1f ms); "
    .. "wrk %d requests, %d errors, %d non-2xx, p99 %.2f ms; fds %d -> %d; RSS %d -> %d KiB")
    :format(r.stack, r.lua, #r.pids - 1, r.upgrade_seconds or 0, r.load.answered or 0, r.load.failed or 0,
      r.load.reset or 0, r.load.closed or 0, (r.load.worst_us or 0) / 1e3, w.requests, w.errors, w.non2xx,
      w.p99_ms, r.fds_start or 0, r.fds_end or 0, r.rss_start or 0, r.rss_end or 0)
end

-- ---- what the specs assert -----------------------------------------------------------

--- Asserts what issue 11 asks of a run under load: every upgrade done, 0
-- failed requests and 0 resets in both clients, every connection of every
-- old process handed over or closed politely (none cut), every old process
-- gone, the counter equal to the requests served, descriptors and RSS flat.
function S.check(lu, r, opts)
  opts = opts or {}
  local conns, wrk_conns = opts.conns or 16, opts.wrk or 20
  local why = "\n" .. S.summary(r) .. "\n" .. r.log:sub(-3000)
  lu.assertNil(r.failure, why)
  lu.assertEquals(#r.pids - 1, opts.upgrades or 10, why)
  lu.assertEquals(r.load.failed, 0, "failed requests" .. why)
  lu.assertEquals(r.load.reset, 0, "connections lost" .. why)
  lu.assertEquals(r.load.refused, 0, "connections refused" .. why)
  lu.assertTrue((r.load.answered or 0) > 0, why)
  if r.wrk then
    lu.assertTrue(r.wrk.requests > 0, "wrk: " .. r.wrk.text)
    lu.assertEquals(r.wrk.errors, 0, "wrk socket errors: " .. r.wrk.text .. why)
    lu.assertEquals(r.wrk.non2xx, 0, "wrk: " .. r.wrk.text)
  end
  lu.assertEquals(#r.done, opts.upgrades or 10, "one closing line per old process" .. why)
  for i, d in ipairs(r.done) do
    lu.assertEquals(d.cut, 0, ("old process %d cut connections"):format(i) .. why)
    if opts.mode == "drain" then
      lu.assertEquals(d.handed, 0, why)
    else
      lu.assertEquals(d.polite, 0, why)
    end
  end
  lu.assertNil(r.lingering, "old processes still there" .. why)
  -- The counter: every request answered was counted once, across every
  -- generation, plus the two probes; the requests under way when the
  -- clients stopped were counted by the server and not by the clients.
  local answered = (r.load.answered or 0) + (r.wrk and r.wrk.requests or 0) + 2
  lu.assertEquals(r.final_status, 200, why)
  lu.assertNotNil(r.final_count, tostring(r.final_body))
  lu.assertTrue(r.final_count >= answered, ("counter %d < %d answered"):format(r.final_count, answered) .. why)
  lu.assertTrue(r.final_count <= answered + 2 * (conns + wrk_conns),
    ("counter %d > %d answered + those under way"):format(r.final_count, answered) .. why)
  lu.assertTrue(r.fds_end <= r.fds_start, ("descriptors %d -> %d"):format(r.fds_start, r.fds_end) .. why)
  -- Under AddressSanitizer (make sanitize) freed memory waits in its
  -- quarantine: RSS then grows with every connection made, and says
  -- nothing of a leak. Everywhere else it must stay flat.
  if not (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) then
    lu.assertTrue(r.rss_end <= math.max(r.rss_start * 1.25, r.rss_start + 2048),
      ("RSS %d -> %d KiB"):format(r.rss_start, r.rss_end) .. why)
  end
  lu.assertNil(r.log:find("unable to update event disposition", 1, true), why)
end

--- Every line of `diff plain server` that differs, comments too: what a
-- reader comparing the two files has to read (issue 11: at most 10).
function S.diff_lines(plain, server)
  local out = sh(("diff %s %s"):format(plain, server))
  local n, lines = 0, {}
  for line in out:gmatch("[^\n]+") do
    if line:match("^[<>]") then
      n = n + 1
      lines[#lines + 1] = line
    end
  end
  return n, table.concat(lines, "\n")
end

-- A keep-alive connection of our own, driven by hand.
local function raw_conn(port)
  local fd = assert(net.tcp_connect("127.0.0.1", port, 2))
  return fd
end

local function read_answer(fd, timeout)
  local got, deadline = "", fos.monotonic() + (timeout or 5)
  while fos.monotonic() < deadline do
    local head_end = got:find("\r\n\r\n", 1, true)
    if head_end then
      local length = tonumber(got:sub(1, head_end):lower():match("\ncontent%-length:%s*(%d+)")) or 0
      if #got >= head_end + 3 + length then
        return got:sub(1, head_end + 3 + length), got:sub(head_end + 4, head_end + 3 + length)
      end
    end
    loop.poll({ fd }, nil, 0.1)
    local data, err, code = fd:read(65536)
    if data then got = got .. data elseif code ~= "EAGAIN" then return nil, err, got end
  end
  return nil, "timeout", got
end
S.read_answer = read_answer

--- A keep-alive connection with half a request sent when the upgrade
-- commits: the rest goes after it; the answer must come from the new copy,
-- on the same connection (the old process's bytes went along). Returns
-- the pids that answered before and after, the new pid, and the log.
function S.buffered(stack, script, env)
  local b = {}
  b.log = S.guard(S.start(stack, script, env), function(srv)
    local fd = raw_conn(srv.port)
    assert(fd:write("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"))
    b.body1 = select(2, read_answer(fd))
    assert(fd:write("GET /2 HT")) -- not even a whole line
    sleep(0.2) -- read by the old process's stack
    b.new, b.err = S.upgrade(srv, "control")
    sleep(0.2)
    assert(fd:write("TP/1.1\r\nHost: x\r\n\r\n"))
    b.full, b.body2 = read_answer(fd)
    -- and the connection lives on: one more request
    assert(fd:write("GET /3 HTTP/1.1\r\nHost: x\r\n\r\n"))
    b.body3 = select(2, read_answer(fd))
    fd:close()
  end)
  return b
end

--- Drain with a deadline: after an upgrade in "drain" mode (UPGRADE_DRAIN=1)
-- a connection that asks again is answered by the old process with
-- "Connection: close" and closed; an idle one is closed at the deadline
-- (an end of file, no reset). Returns what each saw and the log.
function S.idle_drain(stack, script)
  local r = {}
  r.log = S.guard(S.start(stack, script, { UPGRADE_MODE = "drain", UPGRADE_DRAIN = "1" }), function(srv)
    local old = S.pid_of(srv)
    r.old = old
    local idle, busy = raw_conn(srv.port), raw_conn(srv.port)
    for _, fd in ipairs { idle, busy } do
      assert(fd:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
      assert(read_answer(fd))
    end
    local t0 = fos.monotonic()
    r.new, r.err = S.upgrade(srv, "control")
    assert(busy:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
    r.busy_answer, r.busy_body = read_answer(busy)
    r.busy_after = select(3, read_answer(busy, 2)) -- then the end: nothing more
    busy:close()
    -- the idle one: nothing until the end of file at the deadline
    local got, deadline = "", fos.monotonic() + 5
    while fos.monotonic() < deadline do
      loop.poll({ idle }, nil, 0.1)
      local data, err, code = idle:read(4096)
      if data then got = got .. data elseif code ~= "EAGAIN" then r.idle_end = code or err; break end
    end
    r.idle_seconds = fos.monotonic() - t0
    r.idle_got = got
    idle:close()
    for _ = 1, 100 do
      if H.gone_or_zombie(old) then break end
      sleep(0.02)
    end
    r.old_gone = H.gone_or_zombie(old)
  end)
  return r
end

--- Attacks while the stack serves under the bundled client's load: a
-- stranger floods the control socket and a new copy floods the old
-- process's stderr and channel, then hangs (never HELLO), until the spec
-- kills it. Returns the load's figures (worst answer), the log, and
-- whether a normal upgrade works afterwards.
function S.attack(stack, script, opts)
  opts = opts or {}
  local flag = os.tmpname()
  local srv = S.start(stack, script, {
    LUA_INIT = "@" .. S.root .. "/spec/adapters/evil_copy.lua", EVIL_FLAG = flag, EVIL_SECONDS = "3",
  })
  local r = { lua = srv.lua }
  r.log = S.guard(srv, function()
    local load = S.load(srv.port, opts.conns or 8)
    sleep(0.3)
    local stranger = spawn_reader({ srv.lua, "spec/adapters/stranger.lua", srv.control, "2.5" }, S.env(srv.lua))
    fos.kill(S.pid_of(srv), "HUP") -- the new copy is the evil one
    sleep(2.7)
    r.stranger = collect(stranger, "TERM")
    local f = io.open(flag)
    local evil = f and tonumber(f:read("*a"):match("%d+"))
    if f then f:close() end
    os.remove(flag) -- from now on a new copy is a normal one
    r.evil = evil
    if evil then fos.kill(evil, "KILL") end
    sleep(0.5)
    r.load = S.load_result(load)
    r.pid_during = S.pid_of(srv)
    r.after, r.after_err = S.upgrade(srv, "control")
    r.status, r.body = S.get(srv.port)
  end)
  return r
end

--- The tests every stack's spec has: the diff from its plain server, the
-- handover and the drain under load, the bytes of a half-read request,
-- the attacks. `stack`, `name` (the examples' prefix), `extra` tests.
function S.tests(lu, stack, name, extra)
  local plain, server = ("examples/%s_plain.lua"):format(name), ("examples/%s_server.lua"):format(name)
  local t = {
    test_the_diff_from_the_plain_server_is_at_most_10_lines = function()
      local n, lines = S.diff_lines(plain, server)
      lu.assertTrue(n <= 10, ("%d lines:\n%s"):format(n, lines))
      lu.assertTrue(n > 0, "the same file?")
    end,

    test_handover_under_load_through_10_upgrades_by_signal_and_control = function()
      local r = S.run(stack, server, { upgrades = 10 })
      print("# " .. S.summary(r))
      S.check(lu, r, { upgrades = 10 })
      lu.assertTrue(r.done[1].handed >= 36, "the clients' connections were handed over")
    end,

    test_drain_under_load_closes_politely = function()
      local r = S.run(stack, server, { upgrades = 4, mode = "drain", pause = 0.3 })
      print("# " .. S.summary(r))
      S.check(lu, r, { upgrades = 4, mode = "drain" })
      lu.assertTrue((r.load.closed or 0) > 0, "no polite close seen by the client")
    end,

    test_a_half_read_request_goes_with_its_connection = function()
      local b = S.buffered(stack, server)
      lu.assertNotNil(b.new, tostring(b.err))
      local pid1 = tonumber(tostring(b.body1):match("^(%d+) "))
      local pid2 = tonumber(tostring(b.body2):match("^(%d+) "))
      lu.assertNotNil(pid1, tostring(b.body1))
      lu.assertEquals(pid2, b.new, "the rest of the request was answered by the new copy: " .. tostring(b.full)
        .. "\n" .. b.log)
      lu.assertStrMatches(b.body2, "%d+ served 3\n") -- the start probe was 1
      lu.assertStrMatches(b.body3, b.new .. " served 4\n")
    end,

    test_the_loop_keeps_answering_under_attack = function()
      local r = S.attack(stack, server)
      local worst = (r.load.worst_us or 0) / 1e3
      print(("# %s on %s under attack: %d answered, worst %.1f ms; %s; evil copy %s")
        :format(stack, r.lua, r.load.answered or 0, worst, r.stranger:gsub("%s+$", ""), tostring(r.evil)))
      local why = "\n" .. r.load.text .. "\n" .. r.log:sub(-2000)
      lu.assertNotNil(r.evil, "the evil copy never ran" .. why)
      lu.assertEquals(r.load.failed, 0, why)
      lu.assertEquals(r.load.reset, 0, why)
      lu.assertTrue((r.load.answered or 0) > 100, why)
      -- the stall bound (issue 10's one timing assert): a step of the
      -- upgrader costs the stack's loop milliseconds, not seconds
      lu.assertTrue(worst < 1000, ("worst answer %.1f ms"):format(worst) .. why)
      lu.assertNotNil(r.after, "a normal upgrade after the attack: " .. tostring(r.after_err) .. why)
      lu.assertEquals(r.status, 200, why)
      lu.assertStrContains(r.body, tostring(r.after) .. " served", false)
      -- the old process logged why the evil copy failed, once
      local _, n = r.log:gsub("new copy " .. r.evil .. " ", "")
      lu.assertEquals(n, 1, why)
    end,

    test_drain_closes_the_idle_at_the_deadline_and_the_busy_after_their_answer = function()
      local r = S.idle_drain(stack, server)
      local why = "\n" .. r.log
      lu.assertNotNil(r.new, tostring(r.err) .. why)
      lu.assertNotNil((r.busy_body or ""):match("^" .. r.old .. " served %d+\n$"), tostring(r.busy_body) .. why)
      lu.assertStrContains(r.busy_answer:lower(), "connection: close", false)
      lu.assertEquals(r.busy_after, "", "nothing after the last answer")
      lu.assertEquals(r.idle_got, "", "the idle connection got nothing but its end")
      lu.assertEquals(r.idle_end, "EOF", "an end of file, not a reset" .. why)
      lu.assertTrue(r.idle_seconds >= 0.9,
        ("closed %.2f s after the commit, before the deadline"):format(r.idle_seconds))
      lu.assertTrue(r.old_gone, "the old process left after its deadline" .. why)
      local polite, cut = r.log:match("%[" .. r.old
        .. "%] done: handed 0, closed (%d+) politely, %d+ by peers, (%d+) cut")
      lu.assertEquals(tonumber(polite), 2, why)
      lu.assertEquals(tonumber(cut), 0, why)
    end,
  }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

return S
