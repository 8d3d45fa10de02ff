-- fdpass inside nginx's Lua module (Debian's nginx + libnginx-mod-http-lua,
-- its own LuaJIT): the configuration of examples/nginx/ on 127.0.0.1, with
-- the companion that sends descriptors (examples/nginx/companion.lua) and
-- an app run with fdpass.upgrade (examples/http_server.lua) that nginx's
-- timer upgrades. Real HTTP requests check what nginx serves, that its one
-- worker never blocks, that requests leave no descriptor behind in it, and
-- how it answers when the companion is gone or talks nonsense.
-- Skipped, with the reason, where nginx or its Lua module is not installed.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local loop = require "fdpass.loop"
local net = require "fdpass.net"
local fos = require "fdpass.os"
local upgrade = require "fdpass.upgrade"

local MODULES = os.getenv("NGINX_MODULES") or "/usr/lib/nginx/modules"
local CORE = "build/luajit/fdpass/core.so" -- what nginx's LuaJIT loads

local function sleep(s) loop.poll({}, nil, s) end

local function exists(path)
  local f = io.open(path)
  if f then f:close() end
  return f ~= nil
end

local function shell_ok(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0 -- 5.1 returns the status, later ones true
end

local function read_file(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local function write_file(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- Runs argv, returns its exit code and what it printed (bounded).
local function run(argv, timeout, setenv)
  local r, w = assert(fos.pipe())
  local p = assert(fdpass.spawn(argv, { fds = { [1] = w, [2] = w }, setenv = setenv }))
  w:close()
  local out, deadline = {}, fos.monotonic() + timeout
  while fos.monotonic() < deadline do
    loop.poll({ r }, nil, math.max(0, deadline - fos.monotonic()))
    local data, _, code = r:read(65536)
    if data then out[#out + 1] = data elseif code ~= "EAGAIN" then break end
  end
  r:close()
  local how, code = p:wait(math.max(1, deadline - fos.monotonic()))
  if not how then p:kill("KILL"); p:wait(5); return -1, table.concat(out) .. "\n(killed: too slow)" end
  return how == "exit" and code or -1, table.concat(out)
end

-- ---- what this machine has: checked once ------------------------------------

local NGINX, why_not
local function check_machine()
  if NGINX or why_not then return why_not end
  NGINX = os.getenv("NGINX")
  if not NGINX then
    for _, p in ipairs { "/usr/sbin/nginx", "/usr/bin/nginx" } do
      if exists(p) then NGINX = p; break end
    end
  end
  if not NGINX then
    why_not = "nginx is not installed (make nginx-deps installs nginx-light libnginx-mod-http-lua)"
    return why_not
  end
  for _, m in ipairs { "ndk_http_module.so", "ngx_http_lua_module.so" } do
    if not exists(MODULES .. "/" .. m) then
      why_not = MODULES .. "/" .. m .. " is missing: nginx's Lua module is not installed (make nginx-deps)"
      return why_not
    end
  end
  if not shell_ok("pkg-config --exists luajit") then
    why_not = "luajit2's headers (libluajit2-5.1-dev) are missing: " .. CORE .. " cannot be built for nginx's LuaJIT"
    return why_not
  end
  -- Always through make, so that nginx loads the core of this source; not
  -- with the variables of the make that runs the suite (make sanitize's
  -- BUILD would put it elsewhere: make exports its command-line variables
  -- into the environment, so they are overridden here, not only unset).
  local code, out = run({ "make", "--no-print-directory", "-s", "LUA_VERSION=jit", "BUILD=build", "SANFLAGS=",
    CORE }, 300, { MAKEFLAGS = false, MFLAGS = false, MAKELEVEL = false, BUILD = false, SANFLAGS = false })
  if code ~= 0 then error("building " .. CORE .. " for nginx failed:\n" .. out) end
  return nil
end

-- ---- HTTP, by hand ------------------------------------------------------------

local function send_request(conn, method, path, close)
  local req = ("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n%s\r\n")
    :format(method, path, close and "Connection: close\r\n" or "")
  local i, deadline = 1, fos.monotonic() + 5
  while i <= #req do
    local n, err, code = conn:write(req, i)
    if n then i = i + n
    elseif code ~= "EAGAIN" or fos.monotonic() > deadline then error("send: " .. err)
    else loop.poll({}, { conn }, 0.1) end
  end
end

-- One response: {status=, headers= (lower-case names), body=}, or nil, why.
local function read_response(conn, timeout)
  local buf, deadline = "", fos.monotonic() + (timeout or 10)
  while true do
    local head_end = buf:find("\r\n\r\n", 1, true)
    if head_end then
      local head = buf:sub(1, head_end + 1)
      local len = tonumber(head:lower():match("\ncontent%-length:%s*(%d+)"))
      if len and #buf >= head_end + 3 + len then
        local res = { status = tonumber(head:match("^HTTP/1%.%d (%d+)")), headers = {},
          body = buf:sub(head_end + 4, head_end + 3 + len) }
        for k, v in head:gmatch("\n([^:\r\n]+):%s*([^\r\n]*)") do res.headers[k:lower()] = v end
        return res
      end
    end
    local left = deadline - fos.monotonic()
    if left <= 0 then return nil, "no complete response in time; got " .. ("%q"):format(buf) end
    loop.poll({ conn }, nil, left)
    local data, _, code = conn:read(65536)
    if data then buf = buf .. data
    elseif code ~= "EAGAIN" then return nil, "connection ended (" .. code .. "); got " .. ("%q"):format(buf) end
  end
end

-- A request on `conn` (kept alive), or on a fresh connection to port `conn`.
local function http(conn, method, path, timeout)
  local fresh = type(conn) == "number"
  if fresh then conn = assert(net.tcp_connect("127.0.0.1", conn, 2)) end
  send_request(conn, method, path, fresh)
  local res, err = read_response(conn, timeout)
  if fresh then conn:close() end
  lu.assertNotNil(res, err)
  return res
end

local function kv(body)
  local t = {}
  for k, v in body:gmatch("([%w_]+)=([^\n]*)") do t[k] = v end
  return t
end

-- ---- the processes ---------------------------------------------------------------

local n = 0
local env -- this test's: dir, port, companion, control, and the processes

local function start_companion()
  env.companion_proc = assert(fdpass.spawn({ H.lua, "examples/nginx/companion.lua", env.companion,
    env.dir .. "/files" }))
  for _ = 1, 100 do
    local ch = fdpass.connect(env.companion, 1)
    if ch then ch:close(); return end
    sleep(0.05)
  end
  error("the companion did not start")
end

local function stop_companion()
  if not env.companion_proc then return end
  env.companion_proc:kill("KILL")
  env.companion_proc:wait(5)
  env.companion_proc = nil
end

local function start_app()
  env.app_proc = assert(fdpass.spawn({ H.lua, "examples/http_server.lua", "0", env.control }))
  for _ = 1, 100 do
    local s = upgrade.request(env.control, "stats", 1)
    if s then env.app_port = s.port; return end
    sleep(0.05)
  end
  error("the app did not start")
end

local function stop_app()
  local s = env.control and upgrade.request(env.control, "stats", 2)
  if s then fos.kill(s.pid, "KILL") end -- an upgraded copy is no child of ours
  if not env.app_proc then return end
  env.app_proc:kill("KILL")
  env.app_proc:wait(5)
  env.app_proc = nil
end

local free_port = H.free_port

-- KILLs nginx's master, then its workers, which would outlive it: they
-- are listed first (by their parent pid in /proc), and killed only after
-- the master, which would otherwise start new ones at once.
local function kill_nginx(proc)
  local master, workers = proc:pid(), {}
  local p = io.popen("ls /proc")
  for pid in p:lines() do
    if pid:match("^%d+$") then
      local stat = read_file("/proc/" .. pid .. "/stat")
      -- the parent pid follows the command, which is in parentheses
      if tonumber(stat:match("%) %S+ (%d+)")) == master then workers[#workers + 1] = tonumber(pid) end
    end
  end
  p:close()
  proc:kill("KILL")
  proc:wait(5)
  for _, pid in ipairs(workers) do fos.kill(pid, "KILL") end
end

local function start_nginx()
  local log = env.dir .. "/error.log"
  for _ = 1, 5 do -- another process may take the free port first: then again
    env.port = free_port()
    local code, out = run({ H.lua, "examples/nginx/conf.lua", env.dir, tostring(env.port), env.companion,
      env.control }, 10)
    lu.assertEquals(code, 0, out)
    os.remove(log)
    env.nginx = assert(fdpass.spawn({ NGINX, "-p", env.dir, "-c", env.dir .. "/nginx.conf", "-e", log,
      "-g", "daemon off;" },
      -- not make sanitize's runtime; and not the suite's module paths, which
      -- ";;" in lua_package_cpath would take in (another Lua's core.so)
      { setenv = { LD_PRELOAD = false, LUA_PATH = false, LUA_CPATH = false } }))
    local deadline = fos.monotonic() + 15
    while fos.monotonic() < deadline do
      local c = net.tcp_connect("127.0.0.1", env.port, 1)
      if c then
        send_request(c, "GET", "/fdcount", true)
        local res = read_response(c, 5)
        c:close()
        if res and res.status == 200 then
          env.worker = tonumber(res.headers["x-worker-pid"])
          return
        end
      end
      if env.nginx:wait(0) then break end -- it exited: see its log
      -- A worker that could not load fdpass answers every request with
      -- 500 until the deadline: stop at the first sign of it.
      local text = read_file(log) or ""
      if text:find("init_worker_by_lua error", 1, true) or text:find("error loading module", 1, true) then
        break
      end
      sleep(0.05)
    end
    if not env.nginx:wait(0) then kill_nginx(env.nginx) end
    env.nginx = nil
    if not read_file(log):find("Address already in use", 1, true) then
      error("nginx did not start:\n" .. read_file(log))
    end
  end
  error("nginx found no free port")
end

-- QUIT (graceful), then KILL; the worker too if the master could not take it.
local function stop_nginx()
  if not env.nginx then return end
  env.nginx:kill("QUIT")
  local how, code = env.nginx:wait(10)
  if not how then kill_nginx(env.nginx) end
  env.nginx = nil
  env.nginx_end = { how, code }
end

-- Stops nginx and checks how it ended and what it logged: nothing at
-- error level or worse, no worker that died.
local function stop_and_check_log()
  stop_nginx()
  lu.assertEquals(env.nginx_end, { "exit", 0 }, "nginx ended badly")
  local bad = {}
  for line in read_file(env.dir .. "/error.log"):gmatch("[^\n]+") do
    if line:find("%[error%]") or line:find("%[crit%]") or line:find("%[alert%]") or line:find("%[emerg%]")
      or line:find("exited on signal", 1, true) then
      bad[#bad + 1] = line
    end
  end
  lu.assertEquals(bad, {}, "nginx's error.log")
  return read_file(env.dir .. "/error.log")
end

local function worker_fdcount(conn)
  local res = http(conn, "GET", "/fdcount")
  lu.assertEquals(res.status, 200)
  lu.assertEquals(tonumber(res.headers["x-worker-pid"]), env.worker, "the worker changed: it died")
  return tonumber(res.body)
end

local function skip_unless_ready()
  if why_not then lu.skip(why_not) end
end

TestNginx = H.suite {
  setUp = function()
    env = {}
    if check_machine() then return end
    n = n + 1
    local tag = ("fdpass-nginx-spec-%d-%d"):format(fos.getpid(), n)
    env.companion, env.control = "@" .. tag .. "-companion", "@" .. tag .. "-app"
    env.dir = os.tmpname()
    os.remove(env.dir)
    assert(shell_ok("mkdir -p '" .. env.dir .. "/files'"))
    write_file(env.dir .. "/files/hello.txt", "hello from a descriptor\n")
    env.big = ("0123456789abcdef"):rep(20000) -- 320,000 bytes: many reads
    write_file(env.dir .. "/files/big.bin", env.big)
    start_companion()
    start_app()
    start_nginx()
  end,

  tearDown = function()
    if not env.dir then return end
    stop_nginx()
    stop_companion()
    stop_app()
    os.execute("rm -rf '" .. env.dir .. "'")
  end,

  test_serves_what_the_companion_put_in_the_descriptor = function()
    skip_unless_ready()
    local pid = env.companion_proc:pid()
    local res = http(env.port, "GET", "/file/hello.txt")
    lu.assertEquals(res.status, 200, res.body)
    lu.assertEquals(res.body, "hello from a descriptor\n")
    lu.assertEquals(res.headers["x-fdpass-kind"], "file")
    lu.assertEquals(tonumber(res.headers["x-fdpass-pid"]), pid)
    res = http(env.port, "GET", "/file/big.bin")
    lu.assertEquals(res.status, 200)
    lu.assertTrue(res.body == env.big, "big.bin came back different: " .. #res.body .. " bytes")
    -- a socket the companion writes into after it sent it
    res = http(env.port, "GET", "/stream?size=200000&delay=0.2")
    lu.assertEquals(res.status, 200, res.body)
    lu.assertEquals(res.headers["x-fdpass-kind"], "stream")
    local unit = ("stream from %d\n"):format(pid)
    lu.assertEquals(#res.body, 200000)
    lu.assertTrue(res.body == unit:rep(math.floor(200000 / #unit) + 1):sub(1, 200000), "stream content")
    -- what the companion refuses comes back as its status
    res = http(env.port, "GET", "/file/no-such-file")
    lu.assertEquals(res.status, 404)
    lu.assertEquals(res.body, "fdpass: companion: no such file: no-such-file\n")
    stop_and_check_log()
  end,

  test_a_slow_companion_does_not_hold_up_the_worker = function()
    skip_unless_ready()
    -- the first request waits 1.5 s for its descriptor, the second one
    -- 1 s for the data of its socket ...
    local slow = assert(net.tcp_connect("127.0.0.1", env.port, 2))
    local slow_stream = assert(net.tcp_connect("127.0.0.1", env.port, 2))
    local t0 = fos.monotonic()
    send_request(slow, "GET", "/file/hello.txt?delay=1.5", true)
    send_request(slow_stream, "GET", "/stream?size=100&delay=1", true)
    sleep(0.1)
    -- ... meanwhile the one worker answers others at once
    for _ = 1, 5 do
      local t = fos.monotonic()
      local res = http(env.port, "GET", "/file/hello.txt")
      lu.assertEquals(res.body, "hello from a descriptor\n")
      lu.assertTrue(fos.monotonic() - t < 0.5, "a quick request waited behind the slow ones")
    end
    lu.assertEquals(loop.poll({ slow, slow_stream }, nil, 0), {}, "the slow requests were answered early")
    local res = read_response(slow_stream, 5)
    lu.assertNotNil(res)
    lu.assertEquals(res.status, 200)
    lu.assertEquals(#res.body, 100)
    lu.assertTrue(fos.monotonic() - t0 >= 0.9, "the stream was served before its data came")
    res = read_response(slow, 5)
    lu.assertNotNil(res)
    lu.assertEquals(res.body, "hello from a descriptor\n")
    lu.assertTrue(fos.monotonic() - t0 >= 1.4, "the file was served before the companion sent it")
    slow:close()
    slow_stream:close()
    -- twenty slow requests at once take as long as one
    local conns = {}
    t0 = fos.monotonic()
    for i = 1, 20 do
      conns[i] = assert(net.tcp_connect("127.0.0.1", env.port, 2))
      send_request(conns[i], "GET", "/file/hello.txt?delay=1", true)
    end
    for i = 1, 20 do
      res = read_response(conns[i], 10)
      conns[i]:close()
      lu.assertNotNil(res)
      lu.assertEquals(res.body, "hello from a descriptor\n")
    end
    local took = fos.monotonic() - t0
    lu.assertTrue(took < 4, ("20 requests waiting 1 s each took %.1f s: they waited in turn"):format(took))
    stop_and_check_log()
  end,

  test_no_descriptor_stays_in_the_worker = function()
    skip_unless_ready()
    local conn = assert(net.tcp_connect("127.0.0.1", env.port, 2))
    local before = worker_fdcount(conn)
    -- counted after every request, not just at the end: the collector
    -- would close what a handler forgot, but only some time later
    local counts = {}
    for i = 1, 40 do
      lu.assertEquals(http(env.port, "GET", "/file/hello.txt").status, 200)
      counts[#counts + 1] = worker_fdcount(conn)
      lu.assertEquals(http(env.port, "GET", "/stream?size=" .. (i * 1000)).status, 200)
      counts[#counts + 1] = worker_fdcount(conn)
      lu.assertEquals(http(env.port, "GET", "/file/nothing-" .. i).status, 404)
      counts[#counts + 1] = worker_fdcount(conn)
    end
    local off = {}
    for i, c in ipairs(counts) do
      if c ~= before then off[#off + 1] = ("after request %d: %d"):format(i, c) end
    end
    lu.assertEquals(off, {}, "the worker held " .. before .. " descriptors before the requests")
    -- timed out with the descriptor still on its way: 504, and the
    -- companion's late answer finds the channel closed
    for _ = 1, 3 do
      local res = http(env.port, "GET", "/quick/hello.txt?delay=1")
      lu.assertEquals(res.status, 504, res.body)
      lu.assertStrContains(res.body, " did not answer in time: wait_readable: timed out")
    end
    sleep(1.2) -- the late answers go, and find no one
    lu.assertEquals(worker_fdcount(conn), before, "descriptors left in the nginx worker")
    conn:close()
    stop_and_check_log()
  end,

  test_the_timer_upgrades_the_app_which_serves_on_without_dropping_a_connection = function()
    skip_unless_ready()
    local before = upgrade.request(env.control, "stats", 2)
    local client = assert(net.tcp_connect("127.0.0.1", env.app_port, 2))
    local res = http(client, "GET", "/")
    lu.assertStrMatches(res.body, before.pid .. " 1 served %d+\n")

    res = http(env.port, "POST", "/upgrade")
    lu.assertEquals(res.status, 202)
    lu.assertEquals(res.body, "asked=1\n")
    local t
    local deadline = fos.monotonic() + 30
    repeat
      sleep(0.05)
      t = kv(http(env.port, "GET", "/upgrade").body)
    until t.done == "1" or fos.monotonic() > deadline
    lu.assertEquals(t.done, "1", "the timer did not finish the upgrade in time")
    lu.assertEquals(t.ok, "true", "upgrade failed: " .. tostring(t.phase) .. ": " .. tostring(t.reason))
    lu.assertEquals(tonumber(t.old), before.pid)
    lu.assertNotEquals(tonumber(t.new), before.pid)

    local after = upgrade.request(env.control, "stats", 2)
    lu.assertEquals(after.pid, tonumber(t.new))
    lu.assertEquals(after.port, before.port, "the app moved to another port")
    -- the connection made before the upgrade is the new copy's now
    res = http(client, "GET", "/")
    lu.assertStrMatches(res.body, after.pid .. " 2 served %d+\n")
    client:close()
    -- the old copy is gone
    local how = env.app_proc:wait(10)
    env.app_proc = nil
    lu.assertEquals(how, "exit")
    local log = stop_and_check_log()
    lu.assertStrContains(log, ("fdpass: upgraded %s: %d -> %d"):format(env.control, before.pid, after.pid))
  end,

  test_no_companion_gives_503_and_no_app_a_failed_upgrade = function()
    skip_unless_ready()
    local conn = assert(net.tcp_connect("127.0.0.1", env.port, 2))
    local before = worker_fdcount(conn)
    stop_companion()
    for _ = 1, 3 do
      local t = fos.monotonic()
      local res = http(env.port, "GET", "/file/hello.txt")
      lu.assertEquals(res.status, 503)
      lu.assertEquals(res.body, ("fdpass: companion %s is not there: connect %s: Connection refused\n")
        :format(env.companion, env.companion))
      lu.assertTrue(fos.monotonic() - t < 1, "a missing companion is no reason to wait")
    end
    stop_app()
    lu.assertEquals(http(env.port, "POST", "/upgrade").status, 202)
    local t
    local deadline = fos.monotonic() + 10
    repeat
      sleep(0.05)
      t = kv(http(env.port, "GET", "/upgrade").body)
    until t.done == "1" or fos.monotonic() > deadline
    lu.assertEquals(t.ok, "false")
    lu.assertEquals(t.phase, "request")
    lu.assertEquals(t.reason, ("connect %s: Connection refused"):format(env.control))
    lu.assertEquals(worker_fdcount(conn), before, "descriptors left in the nginx worker")
    conn:close()
    local log = stop_and_check_log()
    lu.assertStrContains(log, "[warn]")
    lu.assertStrContains(log, "fdpass: companion " .. env.companion .. " is not there")
  end,

  test_a_companion_that_talks_nonsense_gives_502 = function()
    skip_unless_ready()
    local conn = assert(net.tcp_connect("127.0.0.1", env.port, 2))
    local before = worker_fdcount(conn)
    stop_companion()
    -- in its place: one answer that is no encoded table, then one with
    -- two descriptors where one was asked for, then one closed unanswered
    local ready_r, ready_w = assert(fos.pipe())
    local fake = H.child([[
local codec = require "fdpass.codec"
local fos = require "fdpass.os"
      local server = assert(fdpass.listen(arg[1]))
      local ready = fdpass.fd(3)
      ready:write("x")
      ready:close()
      local r, w = assert(fos.pipe())
      local answers = {
        function(ch) ch:send("not an encoded table", nil, 1) end,
        function(ch) ch:send(codec.encode { ok = true, kind = "file" }, { r, w }, 1) end,
        function(ch) end,
      }
      for i = 1, 3 do
        local ch = assert(server:accept(10))
        assert(ch:recv(5))
        answers[i](ch)
        ch:close()
      end
    ]], { [3] = ready_w }, { env.companion })
    ready_w:close()
    loop.poll({ ready_r }, nil, 10)
    lu.assertEquals(ready_r:read(1), "x", "the fake companion did not start")
    ready_r:close()
    local res = http(env.port, "GET", "/file/hello.txt")
    lu.assertEquals(res.status, 502)
    lu.assertStrContains(res.body, "fdpass: companion " .. env.companion .. ": answer: ")
    res = http(env.port, "GET", "/file/hello.txt")
    lu.assertEquals(res.status, 502)
    lu.assertEquals(res.body, "fdpass: companion sent 2 descriptors, expected 1\n")
    res = http(env.port, "GET", "/file/hello.txt")
    lu.assertEquals(res.status, 502)
    lu.assertStrContains(res.body, "fdpass: companion " .. env.companion .. ": ")
    H.expect_exit(fake, 0, 10)
    lu.assertEquals(worker_fdcount(conn), before, "descriptors left in the nginx worker")
    conn:close()
    stop_and_check_log()
  end,
}

-- The hook the handlers wait through, in this process: what nginx's
-- worker does with ngx.sleep, here with a waiter that records its naps.
local naps
TestWaiter = H.suite {
  setUp = function() naps = {} end,
  tearDown = function() loop.waiter = nil end,

  test_without_a_waiter_it_blocks_in_poll_until_ready_or_the_timeout = function()
    local r, w = assert(fos.pipe())
    local t = fos.monotonic()
    lu.assertEquals({ loop.wait_readable(r, 0.1) }, { nil, "wait_readable: timed out", "ETIMEDOUT" })
    lu.assertTrue(fos.monotonic() - t >= 0.09)
    lu.assertTrue(loop.wait_writable(w, 0))
    local writer = H.child("require('fdpass.loop').poll({}, nil, 0.1); fdpass.fd(3):write('x')", { [3] = w })
    w:close()
    lu.assertTrue(loop.wait_readable(r, 10))
    lu.assertEquals(r:read(), "x")
    H.expect_exit(writer, 0)
    r:close()
  end,

  test_a_waiter_gets_growing_naps_that_end_at_the_timeout = function()
    loop.waiter = function(s)
      naps[#naps + 1] = s
      sleep(s)
    end
    local r, w = assert(fos.pipe())
    lu.assertTrue(loop.wait_writable(w, 1))
    lu.assertEquals(naps, {}, "a ready descriptor needs no nap")
    local t = fos.monotonic()
    lu.assertEquals({ loop.wait_readable(r, 0.1) }, { nil, "wait_readable: timed out", "ETIMEDOUT" })
    local took = fos.monotonic() - t
    lu.assertTrue(took >= 0.095 and took < 0.5, ("took %.3f s"):format(took))
    lu.assertEquals({ naps[1], naps[2], naps[3], naps[4], naps[5] }, { 0.001, 0.002, 0.004, 0.008, 0.016 })
    local total = 0
    for _, s in ipairs(naps) do
      lu.assertTrue(s > 0 and s <= 0.016, "nap of " .. s)
      total = total + s
    end
    lu.assertTrue(total <= 0.1 + 1e-9, "napped past the timeout: " .. total)
    -- ready while napping: seen at the next try
    naps = {}
    local writer = H.child("require('fdpass.loop').poll({}, nil, 0.05); fdpass.fd(3):write('x')", { [3] = w })
    w:close()
    lu.assertTrue(loop.wait_readable(r, 10))
    lu.assertTrue(#naps >= 3, "it did not nap while waiting")
    lu.assertEquals(r:read(), "x")
    H.expect_exit(writer, 0)
    r:close()
  end,
}

H.run()
