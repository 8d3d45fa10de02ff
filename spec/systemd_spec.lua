-- fdpass.systemd against the real protocol, with no systemd to lean on:
-- socket activation by the real systemd-socket-activate (which makes the
-- sockets, sets LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES and execs the Lua
-- child in place), and notifications received here, on a datagram socket
-- this spec binds and names in the child's NOTIFY_SOCKET, with the
-- kernel's word (SCM_CREDENTIALS) on which process sent each one. Then
-- fdpass.upgrade under that NOTIFY_SOCKET: a server (spec/systemd/server.lua)
-- upgraded through its control socket must say RELOADING, hand systemd
-- the new main pid and READY, or READY again after a failed upgrade.
-- Every test runs through H.suite (no descriptor left behind here); the
-- children report their own descriptor counts where they can.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local codec = require "fdpass.codec"
local loop = require "fdpass.loop"
local net = require "fdpass.net"
local fos = require "fdpass.os"
local upgrade = require "fdpass.upgrade"

local now = fos.monotonic
local ACTIVATE = "/usr/bin/systemd-socket-activate"
local SERVER = "spec/systemd/server.lua"

local DIR -- a private directory for path sockets, removed at the end
do
  local p = assert(io.popen("mktemp -d /tmp/fdpass-systemd-spec-XXXXXX"))
  DIR = p:read("*l")
  p:close()
  assert(DIR and DIR ~= "", "mktemp -d failed")
end

local MY_UID
do
  local a, b = assert(fdpass.socketpair())
  MY_UID = select(2, a:peercred())
  a:close()
  b:close()
end

local seq = 0
local function unique(tag)
  seq = seq + 1
  return ("%s-%d-%d"):format(tag, fos.getpid(), seq)
end

-- The children's environment: nothing of socket activation, notification
-- or an upgrade leaks in from whoever runs the specs.
local CLEAN = { "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC",
  "WATCHDOG_PID", "FDPASS_UPGRADE_FD", "FDPASS_UPGRADE_ADDR", "FDPASS_UPGRADE_TOKEN",
  "FDPASS_UPGRADE_GENERATION", "SPEC_SYSTEMD", "SPEC_REFUSE_FILE" }
local function env(extra)
  local e = {}
  for _, k in ipairs(CLEAN) do e[k] = false end
  for k, v in pairs(extra or {}) do e[k] = v end
  return e
end

-- Reads a pipe to its end, at most `timeout` seconds.
local function read_all(r, timeout)
  local out, deadline = {}, now() + (timeout or 10)
  while true do
    local left = deadline - now()
    if left <= 0 then return table.concat(out), "timeout" end
    if #loop.poll({ r }, nil, left) > 0 then
      local data, _, code = r:read(65536)
      if not data then return table.concat(out), code end
      out[#out + 1] = data
    end
  end
end

-- A Lua child's code starts with these: globals fdpass, systemd, unpack,
-- and report(t), which writes t to its stdout (the spec's pipe).
local PRELUDE = [[
local codec = require "fdpass.codec"
fdpass = require "fdpass"
systemd = require "fdpass.systemd"
unpack = table.unpack or unpack
function report(t) io.stdout:write(codec.encode(t)); io.stdout:flush() end
function unhex(s) return codec.decode((s:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))) end
]]

-- Arguments are C strings: an encoded table goes as hex (unhex() above).
local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

-- Runs `code` in a Lua child with `setenv` (over a clean environment) and
-- `fds` mapped; returns the process and the read end of its stdout.
local function start(code, setenv, fds, args)
  local r, w = assert(fos.pipe())
  local map = { [1] = w }
  for k, v in pairs(fds or {}) do map[k] = v end
  -- Lua 5.1 makes `arg` only for a script, after -e ran: the arguments go
  -- in the code as literals too (as H.child does).
  local literal = {}
  for i, a in ipairs(args or {}) do literal[i] = ("%q"):format(a) end
  local argv = { H.lua, "-e", "arg = arg or { " .. table.concat(literal, ", ") .. " }\n" .. PRELUDE .. code,
    "/dev/null" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  local proc = assert(fdpass.spawn(argv, { fds = map, setenv = env(setenv) }))
  w:close()
  return proc, r
end

-- The child's report, once it has exited 0.
local function finish(proc, r, timeout)
  local out = read_all(r, timeout)
  r:close()
  H.expect_exit(proc, 0, 10)
  local t, err = codec.decode(out)
  lu.assertEquals(type(t), "table", "the child's report: " .. tostring(err) .. ": " .. ("%q"):format(out))
  return t
end

-- ---- the notification socket: what systemd would listen on ------------------

local function notify_socket(kind)
  local addr = kind == "abstract" and "@" .. unique("fdpass-spec-notify") or DIR .. "/" .. unique("notify")
  return addr, assert(net.dgram_bind(addr))
end

local function close_notify(addr, sock)
  sock:close()
  if addr:sub(1, 1) == "/" then os.remove(addr) end
end

-- The next notification: its text, its descriptors and who sent it.
local function next_msg(sock, timeout)
  local data, fds, pid, uid = net.dgram_recv(sock, nil, nil, timeout or 10)
  if not data then lu.fail("no notification came: " .. tostring(fds)) end
  return data, fds, pid, uid
end

local function expect_msg(sock, text, pid, timeout)
  local data, fds, from = next_msg(sock, timeout)
  fdpass.close_all(fds)
  lu.assertEquals(data, text)
  lu.assertEquals(from, pid, "sender of " .. data)
end

local function expect_silence(sock, seconds)
  local data, fds, code = net.dgram_recv(sock, nil, nil, seconds or 0.3)
  if data then fdpass.close_all(fds) end
  lu.assertEquals(code, "ETIMEDOUT", "an unexpected notification: " .. tostring(data))
end

-- n notifications as { text =, fds =, pid = }, in arrival order.
local function collect(sock, n, timeout)
  local list = {}
  for i = 1, n do
    local data, fds, pid = next_msg(sock, timeout)
    list[i] = { text = data, fds = fds, pid = pid }
  end
  return list
end

-- The texts each sender sent, in its order: pid -> { text, ... }.
local function by_sender(list)
  local t = {}
  for _, m in ipairs(list) do
    t[m.pid] = t[m.pid] or {}
    table.insert(t[m.pid], m.text)
  end
  return t
end

local function reloading_usec(text)
  return tonumber(text:match("^RELOADING=1\nMONOTONIC_USEC=(%d+)\n$"))
end

-- ---- socket activation through systemd-socket-activate ------------------------

local free_port = H.free_port

-- What the activated child needs from our environment: the activator
-- passes on only what it is told (-E), LISTEN_* and nothing else.
local PASS = { "LUA_PATH", "LUA_CPATH", "LUA_PATH_5_1", "LUA_CPATH_5_1", "LUA_PATH_5_3",
  "LUA_CPATH_5_3", "LUA_PATH_5_4", "LUA_CPATH_5_4", "FDPASS_LUA", "LD_PRELOAD", "ASAN_OPTIONS",
  "UBSAN_OPTIONS", "LSAN_OPTIONS" }

-- Starts `argv` under systemd-socket-activate listening on `ntcp` TCP
-- ports of 127.0.0.1 (free ones, picked here: it refuses port 0; tried
-- again when one was taken meanwhile) and on `more` addresses, with
-- --fdname=`fdnames` and `setenv` (passed with -E). Connects to the first
-- port, which makes it exec the child; returns the process (the child:
-- the activator execs it in place), that connection, the ports, and the
-- read ends of the child's stdout and stderr.
local function activate(ntcp, more, fdnames, setenv, argv)
  local f = io.open(ACTIVATE)
  if not f then H.skip(ACTIVATE .. " is not installed (Debian: systemd)") end
  f:close()
  for _ = 1, 5 do
    local ports, cmd = {}, { ACTIVATE }
    for i = 1, ntcp do
      ports[i] = free_port()
      cmd[#cmd + 1] = "--listen=127.0.0.1:" .. ports[i]
    end
    for _, a in ipairs(more or {}) do cmd[#cmd + 1] = "--listen=" .. a end
    if fdnames then cmd[#cmd + 1] = "--fdname=" .. fdnames end
    for _, k in ipairs(PASS) do
      if os.getenv(k) then cmd[#cmd + 1] = "--setenv=" .. k end
    end
    for k, v in pairs(setenv or {}) do cmd[#cmd + 1] = "--setenv=" .. k .. "=" .. v end
    cmd[#cmd + 1] = "--"
    for _, a in ipairs(argv) do cmd[#cmd + 1] = a end
    local out_r, out_w = assert(fos.pipe())
    local err_r, err_w = assert(fos.pipe())
    local proc = assert(fdpass.spawn(cmd, { fds = { [1] = out_w, [2] = err_w }, setenv = env() }))
    out_w:close()
    err_w:close()
    local conn, exited
    local deadline = now() + 5
    repeat
      conn = net.tcp_connect("127.0.0.1", ports[1], 1)
      if not conn then
        exited = proc:wait(0)
        if not exited then loop.poll({}, nil, 0.02) end
      end
    until conn or exited or now() > deadline
    if conn then return proc, conn, ports, out_r, err_r end
    if not exited then
      proc:kill("KILL")
      proc:wait(5)
    end
    local log = read_all(err_r, 2)
    out_r:close()
    err_r:close()
    if not log:find("Address already in use", 1, true) then
      lu.fail("systemd-socket-activate did not listen:\n" .. log)
    end
  end
  lu.fail("no free ports for systemd-socket-activate in 5 attempts")
end

-- Reads what a server wrote to a TCP connection before closing it.
local function answer(conn, timeout)
  local text, code = read_all(conn, timeout or 5)
  conn:close()
  lu.assertEquals(code, "EOF", "the connection was not answered: " .. ("%q"):format(text))
  return text
end

-- The child of the activation tests: takes its descriptors with
-- listen_fds(), reports what it got, serves the connection that activated
-- it on "web", closes everything and counts its descriptors.
local ACTIVATED = [=[
local loop = require "fdpass.loop"
local net = require "fdpass.net"
local fos = require "fdpass.os"
local info3 = fdpass.info(3)
collectgarbage()
local out = { pid = fos.getpid(), cloexec_before = info3.cloexec, fdcount_before = fos.fdcount(),
  names = {}, entries = {} }
local list, by_name = systemd.listen_fds()
out.env_after = { os.getenv("LISTEN_PID"), os.getenv("LISTEN_FDS"), os.getenv("LISTEN_FDNAMES") }
for i, e in ipairs(list) do
  local info = e.fd:info()
  out.names[i] = e.name
  out.entries[i] = { fileno = e.fd:fileno(), addr = info.addr, family = info.family, socktype = info.socktype,
    listening = info.listening, cloexec = info.cloexec, nonblock = info.nonblock,
    indexed = by_name[e.name][1] == e.fd }
end
local web = assert(by_name.web and by_name.web[1], "no descriptor named web")
assert(#loop.poll({ web }, nil, 5) == 1, "nobody connected")
local c = assert(net.accept(web))
c:write("served by " .. fos.getpid() .. "\n")
c:close()
out.again = #systemd.listen_fds()
for _, e in ipairs(list) do e.fd:close() end
collectgarbage()
collectgarbage()
out.fdcount_after = fos.fdcount()
report(out)
]=]

local T = {}

T.test_socket_activation_by_systemd_socket_activate_keeps_names_and_serves = function()
  local path = DIR .. "/" .. unique("activated")
  local proc, conn, ports, out_r, err_r = activate(2, { path }, "web:admin:ctl", nil,
    { H.lua, "-e", PRELUDE .. ACTIVATED })
  local served = answer(conn)
  local ok, report = pcall(finish, proc, out_r)
  local log = read_all(err_r, 2)
  err_r:close()
  os.remove(path)
  if not ok then error(tostring(report) .. "\nactivator log:\n" .. log, 0) end
  -- LISTEN_PID named the activator, which exec'd the child in place
  lu.assertEquals(report.pid, proc:pid())
  lu.assertEquals(served, "served by " .. proc:pid() .. "\n")
  lu.assertEquals(report.names, { "web", "admin", "ctl" })
  local want = {
    { fileno = 3, addr = "127.0.0.1:" .. ports[1], family = "inet", socktype = "stream" },
    { fileno = 4, addr = "127.0.0.1:" .. ports[2], family = "inet", socktype = "stream" },
    { fileno = 5, addr = path, family = "unix", socktype = "stream" },
  }
  for i, w in ipairs(want) do
    -- listening, close-on-exec now (it came without), O_NONBLOCK as the
    -- activator made it (blocking): listen_fds never touches that flag
    w.listening, w.cloexec, w.nonblock, w.indexed = true, true, false, true
    lu.assertEquals(report.entries[i], w, "descriptor " .. i)
  end
  lu.assertFalse(report.cloexec_before, "activated descriptors arrive without FD_CLOEXEC")
  lu.assertEquals(report.env_after, {}, "LISTEN_* must be gone from the environment")
  lu.assertEquals(report.again, 0, "a second call finds nothing (the variables are gone)")
  lu.assertEquals(report.fdcount_after, report.fdcount_before - 3, "the child leaked")
end

T.test_activation_without_names_says_unknown_and_opts_keep_env_and_flags = function()
  local proc, conn, ports, out_r, err_r = activate(1, nil, nil, nil, { H.lua, "-e", PRELUDE .. [=[
local net = require "fdpass.net"
local fos = require "fdpass.os"
local list, by_name = systemd.listen_fds { unset_env = false, cloexec = false }
local out = { n = #list, name = list[1] and list[1].name, unknown = by_name.unknown and #by_name.unknown,
  cloexec = list[1] and list[1].fd:info().cloexec,
  env = { os.getenv("LISTEN_PID") == tostring(fos.getpid()), os.getenv("LISTEN_FDS"), os.getenv("LISTEN_FDNAMES") } }
local again, msg, code = systemd.listen_fds { unset_env = false }
out.again = { again == nil, code }
local c = assert(net.accept(list[1].fd))
c:write("ok\n")
c:close()
list[1].fd:close()
report(out)
]=] })
  lu.assertEquals(answer(conn), "ok\n")
  local report = finish(proc, out_r)
  read_all(err_r, 1)
  err_r:close()
  lu.assertNotNil(ports[1])
  lu.assertEquals({ report.n, report.name, report.unknown, report.cloexec },
    { 1, "unknown", 1, false })
  lu.assertEquals(report.env, { true, "1" }, "unset_env = false keeps LISTEN_PID and LISTEN_FDS")
  lu.assertEquals(report.again, { true, "EALREADY" }, "the descriptors are not handed out twice")
end

-- The variables as systemd sets them, one case after another in one child
-- that holds a TCP listener on 3 and a pipe on 4 (LISTEN_PID "self" is
-- the child's own pid). What came back, and whether 3 and 4 are still open
-- afterwards: a malformed environment adopts (and so closes) nothing.
T.test_listen_fds_reads_the_environment_strictly = function()
  local l = assert(net.tcp_listen("127.0.0.1", 0))
  local r, w = assert(fos.pipe())
  local cases = {
    { name = "nothing set" },
    { name = "for another pid", LISTEN_PID = "1", LISTEN_FDS = "2" },
    { name = "pid without fds", LISTEN_PID = "self" },
    { name = "count not a number", LISTEN_PID = "self", LISTEN_FDS = "two" },
    { name = "negative count", LISTEN_PID = "self", LISTEN_FDS = "-1" },
    { name = "count with a space", LISTEN_PID = "self", LISTEN_FDS = " 2" },
    { name = "huge count", LISTEN_PID = "self", LISTEN_FDS = "99999999999" },
    { name = "pid not a number", LISTEN_PID = "12x", LISTEN_FDS = "2" },
    { name = "pid 0", LISTEN_PID = "0", LISTEN_FDS = "2" },
    { name = "names do not match the count", LISTEN_PID = "self", LISTEN_FDS = "2", LISTEN_FDNAMES = "a:b:c" },
    { name = "a closed descriptor", LISTEN_PID = "self", LISTEN_FDS = "3" },
    { name = "zero", LISTEN_PID = "self", LISTEN_FDS = "0" },
    { name = "kept", LISTEN_PID = "self", LISTEN_FDS = "2", LISTEN_FDNAMES = ":pipe",
      opts = { unset_env = false, cloexec = false } },
    { name = "again", LISTEN_PID = "self", LISTEN_FDS = "2", LISTEN_FDNAMES = ":pipe" },
  }
  local proc, out = start([=[
local fos = require "fdpass.os"
local cases = unhex(arg[1])
local results = {}
assert(not fdpass.info(5), "descriptor 5 must be closed for the EBADF case")
for i, c in ipairs(cases) do
  for _, k in ipairs { "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES" } do
    local v = c[k]
    if v == "self" then v = tostring(fos.getpid()) end
    fos.setenv(k, v)
  end
  local list, by_name, code = systemd.listen_fds(c.opts)
  local res = { ok = list ~= nil, code = code, msg = not list and by_name or nil,
    env = { os.getenv("LISTEN_PID") ~= nil, os.getenv("LISTEN_FDS") ~= nil } }
  if list then
    res.n, res.names = #list, {}
    for j, e in ipairs(list) do
      res.names[j] = e.name
      res.cloexec = e.fd:info().cloexec
      res.same = by_name[e.name][#by_name[e.name]] == e.fd
      e.fd:detach() -- the next cases need 3 and 4 open
    end
  end
  res.open = { fdpass.info(3) ~= nil, fdpass.info(4) ~= nil }
  results[i] = res
end
report(results)
]=], nil, { [3] = l, [4] = r }, { hex(codec.encode(cases)) })
  l:close()
  r:close()
  w:close()
  local got = finish(proc, out)
  local function expect(i, fields)
    local res = got[i]
    for k, v in pairs(fields) do
      lu.assertEquals(res[k], v, ("case %q: %s (%s)"):format(cases[i].name, k, tostring(res.msg)))
    end
    lu.assertEquals(res.open, { true, true }, ("case %q closed a descriptor"):format(cases[i].name))
  end
  expect(1, { ok = true, n = 0 })
  expect(2, { ok = true, n = 0, env = { false, false } }) -- not ours, and unset all the same
  expect(3, { ok = true, n = 0 })
  for i = 4, 10 do expect(i, { ok = false, code = "EINVAL", env = { false, false } }) end
  expect(11, { ok = false, code = "EBADF" })
  lu.assertStrContains(got[11].msg, "descriptor 5")
  expect(12, { ok = true, n = 0 })
  expect(13, { ok = true, n = 2, names = { "", "pipe" }, cloexec = false, same = true, env = { true, true } })
  expect(14, { ok = false, code = "EALREADY" })
end

-- setenv raises for a name or value it could not set as given (a NUL byte
-- would set another variable, or a shorter value), and sets nothing then.
T.test_setenv_refuses_what_it_cannot_set_as_given = function()
  local proc, out = start([=[
local fos = require "fdpass.os"
local raised = {}
for i, nv in ipairs { { "", "x" }, { "FDPASS_SPEC_A=B", "x" }, { "FDPASS_SPEC_A\0B", "x" },
  { "FDPASS_SPEC_A", "x\0y" } } do
  raised[i] = select(2, pcall(fos.setenv, nv[1], nv[2]))
end
local set = { os.getenv("FDPASS_SPEC_A") or "unset" }
set[2] = fos.setenv("FDPASS_SPEC_A", "v")
set[3] = os.getenv("FDPASS_SPEC_A")
set[4] = fos.setenv("FDPASS_SPEC_A", nil)
set[5] = os.getenv("FDPASS_SPEC_A") or "unset"
report { raised = raised, set = set }
]=])
  lu.assertEquals(finish(proc, out),
    { raised = { "bad argument #1 to 'setenv' (a name, without '=' or a NUL byte)",
                 "bad argument #1 to 'setenv' (a name, without '=' or a NUL byte)",
                 "bad argument #1 to 'setenv' (a name, without '=' or a NUL byte)",
                 "bad argument #2 to 'setenv' (value contains a NUL byte)" },
      set = { "unset", true, "v", true, "unset" } })
end

-- ---- notifications --------------------------------------------------------------

T.test_notifications_arrive_with_exact_fields_from_the_sender = function()
  local addr, sock = notify_socket("path")
  local t0 = now()
  local proc, out = start([=[
local r = {}
r[1] = { systemd.ready("started") }
r[2] = { systemd.reloading() }
r[3] = { systemd.stopping() }
r[4] = { systemd.mainpid(4242) }
r[5] = { systemd.status("two\nlines\tand a tab") }
r[6] = { systemd.watchdog() }
r[7] = { systemd.notify { STATUS = "from a table", READY = 1, "X_SPEC=first" } }
r[8] = { systemd.notify("EXTEND_TIMEOUT_USEC=1000000") }
r[9] = { systemd.mainpid(4243, { ready = true }) }
report { results = r, socket = systemd.notify_socket() }
]=], { NOTIFY_SOCKET = addr })
  local report = finish(proc, out)
  local t1 = now()
  local pid = proc:pid()
  lu.assertEquals(report.socket, addr)
  for i = 1, 9 do lu.assertEquals(report.results[i], { true }, "call " .. i) end
  local texts = {}
  for i = 1, 9 do
    local data, fds, from, uid = next_msg(sock)
    lu.assertEquals({ #fds, from, uid }, { 0, pid, MY_UID })
    texts[i] = data
  end
  expect_silence(sock)
  close_notify(addr, sock)
  lu.assertEquals(texts[1], "READY=1\nSTATUS=started\n")
  local usec = reloading_usec(texts[2])
  lu.assertNotNil(usec, texts[2])
  lu.assertTrue(usec >= math.floor(t0 * 1e6) and usec <= math.floor(t1 * 1e6) + 1,
    ("MONOTONIC_USEC=%s is not between %.0f and %.0f"):format(tostring(usec), t0 * 1e6, t1 * 1e6))
  lu.assertEquals({ texts[3], texts[4], texts[5], texts[6], texts[7], texts[8], texts[9] }, {
    "STOPPING=1\n", "MAINPID=4242\n", "STATUS=two lines and a tab\n", "WATCHDOG=1\n",
    "X_SPEC=first\nREADY=1\nSTATUS=from a table\n", "EXTEND_TIMEOUT_USEC=1000000",
    "MAINPID=4243\nREADY=1\n" })
end

T.test_fdstore_sends_the_descriptor_itself_to_an_abstract_socket = function()
  local addr, sock = notify_socket("abstract")
  local proc, out = start([=[
local fos = require "fdpass.os"
local r, w = fos.pipe()
local ok = {}
ok[1] = systemd.fdstore("pipe-w", w)
w:close() -- from now on, only the stored copy can write to r
local a, b = fos.pipe()
ok[2] = systemd.fdstore("two", { a, b }, { poll = false })
a:close()
b:close()
ok[3] = systemd.fdstore_remove("pipe-w")
ok[4] = systemd.fdstore_remove(("n"):rep(255))
local refused = {}
for i, name in ipairs { "a:b", ("n"):rep(256), "new\nline", "tab\there", "del\127", "\200" } do
  refused[i] = (tostring(select(2, pcall(systemd.fdstore, name, r))):gsub("^[^\n]-:%d+: ", ""))
end
local raised = {}
for i, f in ipairs {
  function() systemd.notify {} end,
  function() systemd.notify { STATUS = "a\nMAINPID=1" } end,
  function() systemd.notify { "STATUS=a", "MAINPID=1\nREADY=1" } end,
  function() systemd.notify { ["bad key"] = 1 } end,
  function() systemd.notify("") end,
  function() systemd.notify(42) end,
  function() systemd.mainpid(0) end,
  function() systemd.mainpid("12") end,
  function() systemd.fdstore("none", {}) end,
} do raised[i] = (tostring(select(2, pcall(f))):gsub("^[^\n]-:%d+: ", "")) end
local f = r:file("r")
local came = f:read("*a") -- until every writer is closed: ours is, the store's copy next
f:close()
report { ok = ok, refused = refused, raised = raised, came = came }
]=], { NOTIFY_SOCKET = addr })
  local pid = proc:pid()
  local data, fds, from = next_msg(sock)
  lu.assertEquals({ data, #fds, from }, { "FDSTORE=1\nFDNAME=pipe-w\n", 1, pid })
  local stored = fds[1]
  lu.assertEquals(stored:info().kind, "pipe")
  -- the same pipe: what goes in here comes out in the child
  assert(stored:write("through the store\n"))
  stored:close()
  data, fds, from = next_msg(sock)
  lu.assertEquals({ data, #fds, from }, { "FDSTORE=1\nFDNAME=two\nFDPOLL=0\n", 2, pid })
  lu.assertEquals({ fds[1]:info().kind, fds[2]:info().kind }, { "pipe", "pipe" })
  fdpass.close_all(fds)
  expect_msg(sock, "FDSTOREREMOVE=1\nFDNAME=pipe-w\n", pid)
  expect_msg(sock, "FDSTOREREMOVE=1\nFDNAME=" .. ("n"):rep(255) .. "\n", pid)
  local report = finish(proc, out)
  expect_silence(sock) -- nothing went out for a refused name or a raised state
  close_notify(addr, sock)
  lu.assertEquals(report.ok, { true, true, true, true })
  -- (the name is quoted with %q, which differs between Lua versions)
  for i, msg in ipairs(report.refused) do
    if i == 2 then
      lu.assertEquals(msg, "fdstore: name longer than 255 bytes")
    else
      lu.assertStrMatches(msg, "fdstore: name \".+\" has a ':' or a byte that is not printable ASCII")
    end
  end
  lu.assertEquals(#report.refused, 6)
  lu.assertEquals(report.raised, {
    "notify: no field to send",
    "notify: newline or NUL in \"STATUS=a\\\nMAINPID=1\"",
    "notify: newline or NUL in \"MAINPID=1\\\nREADY=1\"",
    "notify: bad field name \"bad key\"",
    "notify: empty state or a NUL byte in it",
    "notify: state must be a string or a table, got number",
    "mainpid: pid must be a positive integer, got 0",
    "mainpid: pid must be a positive integer, got 12",
    "fdstore: no descriptor to store" })
  lu.assertEquals(report.came, "through the store\n")
end

-- A misspelt option raises, naming the function, the key and the caller's
-- line (this file), before anything is read or sent.
T.test_misspelt_options_raise_naming_the_function_and_the_key = function()
  local systemd = require "fdpass.systemd"
  local function raises(want, fn, ...)
    local ok, err = pcall(fn, ...)
    lu.assertFalse(ok, "accepted: " .. want)
    lu.assertStrContains(tostring(err), want)
    lu.assertStrContains(tostring(err), "systemd_spec.lua:")
  end
  raises("fdpass.systemd.notify: unknown option 'timout'",
    function() systemd.notify("READY=1", nil, { timout = 1 }) end)
  raises("fdpass.systemd.ready: unknown option 'timout'", function() systemd.ready(nil, { timout = 1 }) end)
  raises("fdpass.systemd.watchdog: unknown option 'timout'", function() systemd.watchdog({ timout = 1 }) end)
  raises("fdpass.systemd.listen_fds: unknown option 'cloexc'", function() systemd.listen_fds({ cloexc = false }) end)
  raises("fdpass.systemd.mainpid: unknown option 'redy'", function() systemd.mainpid(1, { redy = true }) end)
  raises("fdpass.systemd.fdstore: unknown option 'pol'", function() systemd.fdstore("web", { 0 }, { pol = false }) end)
  raises("fdpass.systemd.status: option 'timeout' must be a number",
    function() systemd.status("x", { timeout = "1" }) end)
  raises("fdpass.systemd.stopping: options must be a table", function() systemd.stopping(nil, 5) end)
end

T.test_outside_systemd_notify_is_false_and_a_missing_manager_is_an_error = function()
  local dead = DIR .. "/" .. unique("dead")
  local s = assert(net.dgram_bind(dead))
  s:close() -- its file stays, with nobody behind it
  local cases = {
    { false, "ready" }, { "", "ready" }, { false, "fdstore" },
    { DIR .. "/nobody", "ready" }, { dead, "ready" }, { "@" .. unique("fdpass-spec-nobody"), "stopping" },
    { "vsock:2:1234", "ready" }, { "relative/notify", "ready" },
  }
  local proc, out = start([=[
local fos = require "fdpass.os"
local results = {}
collectgarbage()
local before = fos.fdcount()
for i, c in ipairs(unhex(arg[1])) do
  fos.setenv("NOTIFY_SOCKET", c[1] or nil)
  if c[2] == "fdstore" then
    local r, w = fos.pipe()
    results[i] = { systemd.fdstore("x", w) }
    r:close()
    w:close()
  else
    results[i] = { systemd[c[2]]() }
  end
end
collectgarbage()
report { results = results, leaked = fos.fdcount() - before }
]=], nil, nil, { hex(codec.encode(cases)) })
  local report = finish(proc, out)
  os.remove(dead)
  local r = report.results
  lu.assertEquals({ r[1], r[2], r[3] }, { { false }, { false }, { false } }, "not under systemd: false")
  local want = { nil, nil, nil, "ENOENT", "ECONNREFUSED", "ECONNREFUSED", "EAFNOSUPPORT", "EINVAL" }
  for i = 4, 8 do
    lu.assertNil(r[i][1], "case " .. i)
    lu.assertEquals(r[i][3], want[i], r[i][2])
    lu.assertStrContains(r[i][2], "notify: ")
  end
  lu.assertEquals(report.leaked, 0)
end

T.test_a_full_queue_never_blocks_a_notification_longer_than_asked = function()
  local addr, sock = notify_socket("abstract")
  local proc, out = start([=[
local fos = require "fdpass.os"
local sent, r = 0, {}
repeat
  r = { systemd.watchdog { timeout = 0 } }
  if r[1] then sent = sent + 1 end
until not r[1] or sent >= 100000
local t0 = fos.monotonic()
local late = { systemd.status("late", { timeout = 0.2 }) }
report { sent = sent, full = r[3], late = late[3], waited = fos.monotonic() - t0 }
]=], { NOTIFY_SOCKET = addr })
  local report = finish(proc, out)
  lu.assertEquals({ report.full, report.late }, { "EAGAIN", "ETIMEDOUT" })
  lu.assertTrue(report.sent > 0 and report.sent < 100000, "sent " .. report.sent)
  lu.assertTrue(report.waited >= 0.19 and report.waited < 2, "waited " .. report.waited)
  for _ = 1, report.sent do expect_msg(sock, "WATCHDOG=1\n", proc:pid()) end
  expect_silence(sock, 0.05)
  close_notify(addr, sock)
end

-- dgram_recv without a timeout waits for the next datagram (the socket
-- dgram_bind makes is non-blocking, yet nil is not "never wait"), 0 never
-- waits.
T.test_dgram_recv_without_timeout_waits_for_the_next_datagram = function()
  local addr, sock = notify_socket("abstract")
  local data, _, code = net.dgram_recv(sock, nil, nil, 0)
  lu.assertEquals({ data, code }, { nil, "EAGAIN" })
  local proc, out = start([=[
local loop = require "fdpass.loop"
loop.poll({}, nil, 0.15)
report { systemd.ready() }
]=], { NOTIFY_SOCKET = addr })
  local t0 = now()
  local fds, pid
  data, fds, pid = net.dgram_recv(sock)
  local waited = now() - t0
  lu.assertEquals(finish(proc, out), { true })
  lu.assertEquals({ data, #fds, pid }, { "READY=1\n", 0, proc:pid() })
  lu.assertTrue(waited >= 0.1, "waited " .. waited)
  lu.assertTrue(sock:info().nonblock, "waited by poll: the socket keeps O_NONBLOCK")
  close_notify(addr, sock)
end

T.test_watchdog_interval_reads_usec_for_this_pid_only = function()
  local proc, out = start([=[
local fos = require "fdpass.os"
local function with(usec, pid)
  fos.setenv("WATCHDOG_USEC", usec)
  fos.setenv("WATCHDOG_PID", pid == "self" and tostring(fos.getpid()) or pid)
  return systemd.watchdog_interval() or "none"
end
report { with("2500000"), with("2500000", "self"), with("2500000", "1"), with(nil, "self"),
  with("soon"), with("0"), with("86400000000", "self"), with("99999999999999999", "self") }
]=])
  -- WatchdogSec=1d is 11 digits of microseconds: still a watchdog to ping;
  -- beyond 1e15 (31 years) is none
  lu.assertEquals(finish(proc, out), { 2.5, 2.5, "none", "none", "none", "none", 86400, "none" })
end

-- ---- fdpass.upgrade under systemd -------------------------------------------------

local gone_or_zombie = H.gone_or_zombie

local function stop(pid)
  if gone_or_zombie(pid) then return end
  fos.kill(pid, "TERM")
  local deadline = now() + 3
  while not gone_or_zombie(pid) and now() < deadline do loop.poll({}, nil, 0.02) end
  if not gone_or_zombie(pid) then fos.kill(pid, "KILL") end
end

-- "PID GENERATION" from the server on port.
local function ask(port)
  local c = assert(net.tcp_connect("127.0.0.1", port, 2))
  local pid, gen = answer(c):match("^(%d+) (%d+)\n$")
  return tonumber(pid), tonumber(gen)
end

local function stats_when_up(ctl)
  local deadline, stats = now() + 10
  repeat
    stats = upgrade.request(ctl, "stats", 2)
    if not stats then loop.poll({}, nil, 0.02) end
  until stats or now() > deadline
  lu.assertNotNil(stats, "the server never answered on its control socket")
  return stats
end

-- The server's descriptor count once it holds nothing from a handover.
local function settled_fdcount(ctl, want)
  local deadline, stats = now() + 3
  repeat
    stats = assert(upgrade.request(ctl, "stats", 2))
    if want == nil or stats.fdcount == want then break end
    loop.poll({}, nil, 0.02)
  until now() > deadline
  return stats.fdcount
end

-- Runs fn(sock, ...) around a server, and stops every pid it names in
-- `pids` (the first is our child) whatever happens.
local function with_server(pids, fn, log_r)
  local ok, err = pcall(fn)
  for i = #pids, 1, -1 do stop(pids[i]) end
  local log = log_r and read_all(log_r, 2) or ""
  if log_r then log_r:close() end
  if not ok then error(tostring(err) .. "\nserver log:\n" .. log, 0) end
end

T.test_an_upgrade_says_reloading_then_hands_systemd_the_new_main_pid = function()
  local addr, sock = notify_socket("path")
  local ctl = "@" .. unique("fdpass-spec-sd-control")
  local refuse = DIR .. "/" .. unique("refuse")
  local log_r, log_w = assert(fos.pipe())
  -- as systemd starts a unit with WatchdogSec=30: WATCHDOG_PID is the main
  -- process's own pid (the shell's, which exec keeps)
  local first = assert(fdpass.spawn({ "/bin/sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"', H.lua, SERVER, ctl },
    { fds = { [2] = log_w }, setenv = env { NOTIFY_SOCKET = addr, SPEC_REFUSE_FILE = refuse,
      WATCHDOG_USEC = "30000000" } }))
  log_w:close()
  local old = first:pid()
  local pids = { old }
  with_server(pids, function()
    expect_msg(sock, "READY=1\n", old) -- the app's own, at its fresh start
    local stats = stats_when_up(ctl)
    lu.assertEquals(stats.watchdog, 30, "the first copy is the watchdog's")
    local port = stats.port
    lu.assertEquals({ ask(port) }, { old, 1 })
    local fdcount = settled_fdcount(ctl)

    local t0 = now()
    local rep = assert(upgrade.request(ctl, "upgrade", 30))
    local t1 = now()
    lu.assertTrue(rep.ok, ("upgrade failed in %s: %s"):format(tostring(rep.phase), tostring(rep.reason)))
    local new = rep.new
    pids[#pids + 1] = new
    local sent = by_sender(collect(sock, 3))
    lu.assertEquals(#sent[old], 2, "the old copy sends two notifications")
    local usec = reloading_usec(sent[old][1])
    lu.assertNotNil(usec, sent[old][1])
    lu.assertTrue(usec >= math.floor(t0 * 1e6) and usec <= math.floor(t1 * 1e6) + 1, "MONOTONIC_USEC")
    lu.assertEquals(sent[old][2], ("MAINPID=%d\nREADY=1\n"):format(new))
    lu.assertEquals(sent[new], { "READY=1\n" }, "the new copy says READY once it took over")
    H.expect_exit(first, 0, 5)
    expect_silence(sock) -- and the old one says nothing more (no STOPPING=1) as it leaves
    lu.assertEquals({ ask(port) }, { new, 2 })
    lu.assertEquals(settled_fdcount(ctl, fdcount), fdcount, "the new copy holds what the first one held")
    -- the new main process pings the watchdog now: WATCHDOG_PID must not
    -- name the old copy in its environment
    lu.assertEquals(stats_when_up(ctl).watchdog, 30, "the new main process is the watchdog's")

    -- a failed upgrade: RELOADING, then READY from the copy that still serves
    local f = assert(io.open(refuse, "w"))
    f:close()
    rep = assert(upgrade.request(ctl, "upgrade", 30))
    os.remove(refuse)
    lu.assertEquals({ rep.ok, rep.phase }, { false, "ready" })
    local texts = by_sender(collect(sock, 2))
    lu.assertNotNil(reloading_usec(texts[new] and texts[new][1] or ""), "RELOADING=1 from " .. new)
    lu.assertEquals(texts[new][2], "READY=1\n")
    expect_silence(sock) -- no MAINPID, and nothing from the refused copy
    lu.assertEquals({ ask(port) }, { new, 2 })
  end, log_r)
  close_notify(addr, sock)
end

T.test_a_socket_activated_server_upgrades_and_keeps_its_descriptors_in_the_store = function()
  local addr, sock = notify_socket("abstract")
  local ctl = "@" .. unique("fdpass-spec-sd-control")
  local proc, conn, ports, out_r, err_r = activate(1, nil, "http",
    { NOTIFY_SOCKET = addr, SPEC_SYSTEMD = "fdstore" }, { H.lua, SERVER, ctl })
  out_r:close()
  local first = proc:pid()
  local pids = { first }
  with_server(pids, function()
    lu.assertEquals(answer(conn), ("%d 1\n"):format(first))
    -- the first copy: its listeners into the store, then READY
    local function check_stored(m, name, from)
      lu.assertEquals({ m.text, #m.fds, m.pid }, { ("FDSTORE=1\nFDNAME=%s\n"):format(name), 1, from })
      local info = m.fds[1]:info()
      m.fds[1]:close()
      return info
    end
    -- (the control socket first: inherit() serves it, under the name
    -- fdpass.upgrade gives it, before the app offers its listeners)
    local msgs = collect(sock, 3)
    local control = check_stored(msgs[1], "fdpass.control", first)
    lu.assertEquals({ control.addr, control.listening }, { ctl, true })
    local http = check_stored(msgs[2], "http", first)
    lu.assertEquals({ http.addr, http.listening }, { "127.0.0.1:" .. ports[1], true })
    lu.assertEquals({ msgs[3].text, msgs[3].pid }, { "READY=1\n", first })

    local rep = assert(upgrade.request(ctl, "upgrade", 30))
    lu.assertTrue(rep.ok, ("upgrade failed in %s: %s"):format(tostring(rep.phase), tostring(rep.reason)))
    local new = rep.new
    pids[#pids + 1] = new
    msgs = collect(sock, 5)
    local from_old, from_new = {}, {}
    for _, m in ipairs(msgs) do
      if m.pid == first then from_old[#from_old + 1] = m else from_new[#from_new + 1] = m end
    end
    lu.assertEquals(#from_old, 2)
    lu.assertNotNil(reloading_usec(from_old[1].text), from_old[1].text)
    lu.assertEquals(from_old[2].text, ("MAINPID=%d\nREADY=1\n"):format(new))
    lu.assertEquals({ #from_new, from_new[2].text, from_new[2].pid }, { 3, "READY=1\n", new })
    -- the new copy stores the same sockets again (systemd keeps one of each)
    lu.assertEquals(check_stored(from_new[1], "fdpass.control", new).addr, ctl)
    lu.assertEquals(check_stored(from_new[3], "http", new).addr, http.addr)
    -- the socket systemd-socket-activate made is served by the new copy now
    lu.assertEquals({ ask(ports[1]) }, { new, 2 })
    H.expect_exit(proc, 0, 5)
    expect_silence(sock)
  end, err_r)
  close_notify(addr, sock)
end

T.test_systemd_false_keeps_an_upgrade_silent = function()
  local addr, sock = notify_socket("path")
  local ctl = "@" .. unique("fdpass-spec-sd-control")
  local log_r, log_w = assert(fos.pipe())
  local first = assert(fdpass.spawn({ H.lua, SERVER, ctl },
    { fds = { [2] = log_w }, setenv = env { NOTIFY_SOCKET = addr, SPEC_SYSTEMD = "off" } }))
  log_w:close()
  local pids = { first:pid() }
  with_server(pids, function()
    expect_msg(sock, "READY=1\n", first:pid()) -- the app's own call still goes
    stats_when_up(ctl)
    local rep = assert(upgrade.request(ctl, "upgrade", 30))
    lu.assertTrue(rep.ok, tostring(rep.reason))
    pids[#pids + 1] = rep.new
    H.expect_exit(first, 0, 5)
    expect_silence(sock, 0.5)
  end, log_r)
  close_notify(addr, sock)
end

TestSystemd = H.suite(T)

local status = lu.LuaUnit.run("-o", "tap", H.unpack(arg or {}))
H.execute("rm -rf '" .. DIR .. "'") -- what a failed test left there too
os.exit(status)
