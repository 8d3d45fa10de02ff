-- fdpass.upgrade's face: checked options, the pollable protocol (one
-- descriptor for the object's life, step() never blocking), the final
-- state that carries what the old side changed while it drained, and the
-- one failure line an operator reads, logged once whatever the trigger.
-- The old side is this process; new copies are real processes
-- (spec/upgrade/new_copy.lua) or impostors speaking the protocol by hand.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local codec = require "fdpass.codec"
local fos = require "fdpass.os"
local net = require "fdpass.net"
local loop = require "fdpass.loop"
local upgrade = require "fdpass.upgrade"

local now = fos.monotonic
local NEW_COPY = "spec/upgrade/new_copy.lua"

local timeouts = H.upgrade_timeouts

-- Steps `up` until "upgraded" or "failed" (polling its one descriptor);
-- returns the event and its value, and how many times poll woke up.
local function drive(up, limit)
  local deadline, wakeups = now() + (limit or 20), 0
  while now() < deadline do
    local ev, x = up:step()
    if ev == "upgraded" or ev == "failed" then return ev, x, wakeups end
    if not ev then
      if #loop.poll({ up }, nil, math.min(up:timeout() or 1, deadline - now())) > 0 then wakeups = wakeups + 1 end
    end
  end
  lu.fail("the upgrade never ended")
end

local function read_file(path)
  local f = io.open(path)
  if not f then return "" end
  local s = f:read("*a")
  f:close()
  return s
end

local T = {}

-- ---- options -----------------------------------------------------------------------

T.test_unknown_options_raise_naming_the_key = function()
  local function raises(opts, want)
    local ok, err = pcall(upgrade.new, opts)
    lu.assertFalse(ok, "accepted " .. want)
    lu.assertStrContains(tostring(err), want)
  end
  raises({ argv = { "x" }, pidfle = "/tmp/x" }, "unknown option 'pidfle'")
  raises({ argv = { "x" }, timeouts = { helo = 1 } }, "unknown option 'timeouts.helo'")
  raises({ argv = { "x" }, timeouts = { hello = -1 } }, "'timeouts.hello' must be a number >= 0")
  raises({ argv = "x" }, "option 'argv' must be a table")
  raises({ argv = { "x" }, signal = 1 }, "option 'signal'")
  raises({ argv = { "x" }, control = {} }, "option 'control' must be an address or a listening socket")
  local a, b = assert(fdpass.socketpair())
  a:close()
  raises({ argv = { "x" }, control = a },
    "option 'control' must be an address or a listening socket: attempt to use a closed")
  b:close()
  local up = upgrade.new { argv = { "x" } }
  local ok, err = pcall(up.listener, up, "http", 12345678)
  lu.assertFalse(ok)
  lu.assertStrContains(tostring(err), "listener 'http'")
  ok, err = pcall(up.inherit, up, { inhert = function() end })
  lu.assertFalse(ok)
  lu.assertStrContains(tostring(err), "unknown hook 'inhert'")
  up:close()
end

local function sigblk() -- read whole and closed: io.lines left early stays open on 5.1
  return read_file("/proc/self/status"):match("\nSigBlk:%s*(%x+)")
end

-- What raises (no argv to be found, a bad signal name) is found before any
-- descriptor is taken: nothing open, no signal left blocked.
T.test_new_that_raises_takes_nothing = function()
  collectgarbage()
  collectgarbage("stop")
  local fds, blk = fos.fdcount(), sigblk()
  local saved = _G.arg
  _G.arg = nil
  local ok, err = pcall(upgrade.new, { signal = "HUP" })
  _G.arg = saved
  lu.assertFalse(ok)
  lu.assertStrContains(tostring(err), "pass argv")
  ok, err = pcall(upgrade.new, { argv = { "x" }, signal = "NOPE" })
  lu.assertFalse(ok)
  lu.assertStrContains(tostring(err), "NOPE")
  lu.assertEquals(fos.fdcount(), fds)
  lu.assertEquals(sigblk(), blk)
  collectgarbage("restart")
end

-- A control address in use: inherit() says so (nil, msg, code), holds no
-- control socket, and close() gives back every descriptor and the mask.
T.test_inherit_with_a_busy_control_address_returns_the_failure = function()
  local addr = "@fdpass-busy-" .. fos.getpid()
  local busy = assert(fdpass.listen(addr))
  collectgarbage()
  collectgarbage("stop")
  local fds, blk = fos.fdcount(), sigblk()
  local up = assert(upgrade.new { argv = { "x" }, control = addr, signal = "WINCH" })
  lu.assertNotEquals(sigblk(), blk) -- WINCH taken (no other spec takes it)
  local got, msg, code = up:inherit()
  lu.assertNil(got)
  lu.assertStrContains(tostring(msg), "Address already in use")
  lu.assertEquals(code, "EADDRINUSE")
  up:close()
  lu.assertEquals(fos.fdcount(), fds)
  lu.assertEquals(sigblk(), blk)
  collectgarbage("restart")
  busy:close()
end

T.test_listen_creates_on_a_fresh_start_and_close_releases_everything = function()
  collectgarbage()
  collectgarbage("stop")
  local before = fos.fdcount()
  local control = ("@fdpass-spec-api-close-%d"):format(fos.getpid())
  local up = upgrade.new { argv = { "unused" }, control = control, signal = "USR1" }
  lu.assertNil(up:inherit())
  local made = 0
  local l = assert(up:listen("http", function() made = made + 1; return net.tcp_listen("127.0.0.1", 0) end))
  lu.assertEquals(made, 1)
  lu.assertTrue(fdpass.info(l).listening)
  -- a stats request, answered from step()
  local ch = assert(fdpass.connect(control, 2))
  assert(ch:send(codec.encode { cmd = "stats" }, nil, 2))
  local deadline, answer = now() + 5
  repeat
    loop.poll({ up }, nil, 0.1)
    up:step()
    answer = ch:recv(0)
  until answer or now() > deadline
  ch:close()
  lu.assertEquals(codec.decode(answer or "").generation, 1, "the control socket is not served")
  up:close()
  l:close()
  local after = fos.fdcount()
  collectgarbage("restart")
  lu.assertEquals(after, before, "close() left descriptors")
  lu.assertNil(fdpass.connect(control, 1), "the control socket still listens")
end

-- ---- the pollable protocol --------------------------------------------------------

T.test_one_descriptor_for_the_whole_life_and_no_busy_loop = function()
  local l = assert(net.tcp_listen("127.0.0.1", 0))
  -- a copy that closes its stderr and hangs before HELLO: a pipe at EOF
  -- must leave the poll set, or the loop spins until the deadline
  local up = upgrade.new { argv = { H.lua, "-e", "io.stderr:close(); require('fdpass.loop').poll({}, nil, 10)" },
    timeouts = timeouts { hello = 1, kill = 0.5 } }
  up:listener("http", l)
  local fd = up:pollfd()
  lu.assertEquals({ up:getfd(), up:fileno(), up:events() }, { fd, fd, "r" })
  lu.assertNil(up:timeout(), "nothing to wait for yet")
  lu.assertEquals(fdpass.info(fd).kind, "unknown")
  assert(up:upgrade())
  lu.assertEquals(up:timeout(), 0, "a started upgrade wants a step now")
  local ev, err, wakeups = drive(up)
  lu.assertEquals(ev, "failed")
  lu.assertEquals(err.phase, "hello")
  lu.assertStrContains(err.reason, "timed out waiting for HELLO")
  -- a second of waiting: a few wake-ups (spawn, EOF, exit), not thousands
  lu.assertTrue(wakeups < 20, wakeups .. " wake-ups while nothing happened: a busy loop")
  lu.assertEquals(up:pollfd(), fd, "the descriptor changed")
  lu.assertNil(up:step())
  up:close()
  l:close()
end

-- cqueues takes the upgrader as a pollable as it is (pollfd, events,
-- timeout): an upgrade runs to its end inside a cqueue, the loop never
-- blocked by it, and the descriptor is the same afterwards.
T.test_cqueues_polls_the_upgrader_as_it_is = function()
  local ok, cqueues = pcall(require, "cqueues")
  if not ok then H.skip("cqueues is not installed for this Lua") end
  local up = upgrade.new { argv = { H.lua, "-e", "io.stderr:write('bye\\n') os.exit(7)" }, timeouts = timeouts() }
  local fd = up:pollfd()
  local cq = cqueues.new()
  local ev, err, ticks = nil, nil, 0
  cq:wrap(function()
    assert(up:upgrade())
    repeat
      ev, err = up:step()
      if not ev then cqueues.poll(up) end
    until ev
  end)
  cq:wrap(function() -- another task of the same loop keeps running
    while not ev do ticks = ticks + 1; cqueues.sleep(0.01) end
  end)
  assert(cq:loop(20))
  lu.assertEquals(ev, "failed")
  lu.assertStrMatches(tostring(err), "new copy %d+ exited 7 before HELLO: bye")
  lu.assertTrue(ticks > 0, "the other task never ran")
  lu.assertEquals(up:pollfd(), fd)
  up:close()
end

T.test_descriptors_sent_with_hello_are_closed_at_once = function()
  local up = upgrade.new { argv = { H.lua, "-e", [[
local codec = require "fdpass.codec"
local fos = require "fdpass.os"
    local fdpass = require "fdpass"
    local ch = fdpass.channel(3)
    local junk = {}
    for i = 1, 16 do junk[i] = fdpass.dup(0) end
    ch:send(codec.encode { t = "JUNK" }, junk, 5)
    ch:send(codec.encode { t = "HELLO", versions = { 99 }, pid = fos.getpid() }, junk, 5)
    os.exit(0)
  ]] }, timeouts = timeouts() }
  collectgarbage()
  collectgarbage("stop") -- counted without the collector's help
  local before = fos.fdcount()
  assert(up:upgrade())
  local ev, err = drive(up)
  local after = fos.fdcount()
  collectgarbage("restart")
  lu.assertEquals(ev, "failed")
  lu.assertStrContains(err.reason, "no common protocol version")
  lu.assertEquals(after, before, "descriptors of the copy's messages are still held")
  up:close()
end

T.test_descriptors_sent_with_ready_and_committed_are_closed_at_once = function()
  local up = upgrade.new { argv = { H.lua, "-e", [[
local codec = require "fdpass.codec"
local fos = require "fdpass.os"
    local fdpass = require "fdpass"
    local ch = fdpass.channel(3)
    local function send(msg, fds) assert(ch:send(codec.encode(msg), fds, 5)) end
    local junk = {}
    for i = 1, 16 do junk[i] = fdpass.dup(0) end
    send({ t = "HELLO", versions = { 1 }, pid = fos.getpid() }, junk)
    for _, want in ipairs { "WELCOME", "FDS", "STATE" } do
      local data, fds = assert(ch:recv(5))
      assert(codec.decode(data).t == want)
      fdpass.close_all(fds)
    end
    send({ t = "NEWS" }, junk)
    send({ t = "READY", claimed = {}, unclaimed = {} }, junk)
    assert(codec.decode((assert(ch:recv(5)))).t == "COMMIT")
    send({ t = "COMMITTED", pid = fos.getpid() }, junk)
    repeat -- the final STATE, then DONE
      local data = ch:recv(5)
    until not data or codec.decode(data).t == "DONE"
  ]] }, timeouts = timeouts() }
  collectgarbage()
  collectgarbage("stop") -- counted without the collector's help
  local before = fos.fdcount()
  assert(up:upgrade())
  local ev, info = drive(up)
  lu.assertEquals(ev, "upgraded", tostring(info))
  local during = fos.fdcount()
  lu.assertTrue(up:finish())
  local after = fos.fdcount()
  collectgarbage("restart")
  lu.assertEquals(during, before + 1, "beyond the channel to the new copy, descriptors are held")
  lu.assertEquals(after, before)
  H.expect_exit(up:new_process(), 0, 5)
  up:close()
end

-- ---- no state lost --------------------------------------------------------------------

T.test_final_state_reaches_the_new_copy_after_its_connections = function()
  local report = os.tmpname()
  assert(fos.setenv("SPEC_REPORT_FILE", report))
  local l = assert(net.tcp_listen("127.0.0.1", 0))
  local served = 0
  local up = upgrade.new { argv = { H.lua, NEW_COPY, "slow" }, timeouts = timeouts() }
  up:listener("good", l)
  up:state(function() return { served = served } end)
  assert(up:upgrade())
  local ev, info
  while true do
    served = served + 1 -- the loop serves a request each turn, the upgrade running
    ev, info = up:step()
    if ev == "upgraded" or ev == "failed" then break end
    loop.poll({ up }, nil, math.min(0.005, up:timeout() or 0.005))
  end
  fos.setenv("SPEC_REPORT_FILE", nil)
  lu.assertEquals(ev, "upgraded", tostring(info))
  lu.assertTrue(served > 10, "the hook's 0.3 s should have seen many requests: " .. served)
  -- a slow request in flight at the commit finishes now, then a handover
  served = served + 1
  local x, y = assert(fdpass.socketpair("stream"))
  assert(up:handoff("http", y, "GET /"))
  y:close()
  lu.assertTrue(up:finish())
  H.expect_exit(up:new_process(), 0, 5)
  x:close()
  local text = read_file(report)
  os.remove(report)
  local handed = tonumber(text:match("state (%d+)"))
  lu.assertTrue(handed < served, "the handover state already had every request")
  local final = tonumber(text:match("final_state (%d+)"))
  lu.assertEquals(final, served, text)
  -- the order: the connection, then the final state, then DONE (final_fds)
  local conn_at, state_at, done_at = text:find("conn http"), text:find("final_state"), text:find("final_fds")
  lu.assertTrue(conn_at < state_at and state_at < done_at, text)
  up:close()
  l:close()
end

-- ---- one failure line, once, whatever the trigger ----------------------------------------

T.test_a_broken_new_copy_is_logged_once_per_trigger_with_its_cause = function()
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write("local ok = true\nlocal x = = 1\n")
  f:close()
  local lines = {}
  local control = ("@fdpass-spec-api-%d"):format(fos.getpid())
  local up = upgrade.new { argv = { H.lua, script }, signal = "HUP", control = control,
    timeouts = timeouts(), log = function(line) lines[#lines + 1] = line end }
  lu.assertNil(up:inherit())
  local want = "^new copy (%d+) exited 1 before HELLO: " .. script:gsub("%p", "%%%0") ..
    ":2: unexpected symbol near '='$"
  local function one_failure(trigger)
    lines = {}
    trigger()
    local ev, err = drive(up)
    lu.assertEquals(ev, "failed")
    lu.assertEquals(#lines, 1, table.concat(lines, "\n"))
    local pid = tonumber(lines[1]:match(want))
    lu.assertNotNil(pid, lines[1])
    lu.assertEquals({ err.pid, err.phase, err.exit.how, err.exit.code, err.message },
      { pid, "hello", "exit", 1, lines[1] })
    lu.assertStrContains(err.stderr, "unexpected symbol")
    return err
  end
  one_failure(function() fos.kill(fos.getpid(), "HUP") end)
  one_failure(function() assert(up:upgrade()) end)
  -- the control socket: a client in another process gets the same line
  local out_r, out_w = assert(fos.pipe())
  local client = H.child(([[
    local r = require("fdpass.upgrade").request(%q, "upgrade", 10)
    io.stdout:write(tostring(r and r.message))
  ]]):format(control), { [1] = out_w })
  out_w:close()
  local err = one_failure(function() end)
  H.expect_exit(client, 0, 10)
  out_r:nonblock(false)
  lu.assertEquals(out_r:read(), err.message)
  out_r:close()
  os.remove(script)
  up:close()
end

-- ---- strangers on the control socket ----------------------------------------------------

T.test_strangers_on_the_control_socket_are_refused_a_step_at_a_time_and_counted = function()
  local nobody = H.as_nobody() -- skips, saying why, when no peer can run as another uid
  local lines = {}
  local control = ("@fdpass-spec-api-strangers-%d"):format(fos.getpid())
  local up = upgrade.new { argv = { "unused" }, control = control,
    log = function(line) lines[#lines + 1] = line end }
  lu.assertNil(up:inherit())
  -- 200 connections from another uid, all queued before we look
  local p = H.child(([[
local loop = require "fdpass.loop"
    local held = {}
    for i = 1, 200 do held[i] = assert(fdpass.connect(%q, 5)) end
    loop.poll({ fdpass.fd(0) }, nil, 20)
  ]]):format(control), nil, nil, { prefix = nobody })
  local steps, deadline = 0, now() + 20
  while #lines == 0 or not lines[#lines]:find("200") do
    lu.assertTrue(now() < deadline, "not all refused: " .. table.concat(lines, "; "))
    if #loop.poll({ up }, nil, 0.1) > 0 then steps = steps + 1 end
    up:step() -- the count comes a second after the first line
  end
  lu.assertTrue(steps >= 200 / 16, steps .. " steps for 200 strangers: more than 16 per step")
  lu.assertTrue(#lines <= 3, table.concat(lines, "\n"))
  lu.assertEquals(lines[1], "control: refused 1 connections (wrong uid or too many)")
  lu.assertEquals(lines[#lines], "control: refused 200 connections (wrong uid or too many)")
  p:kill("TERM")
  p:wait(5)
  up:close()
end

-- ---- systemd: MAINPID+READY on a full notify queue -------------------------------------

-- A notify socket whose queue is full (systemd slow, or filled by anyone:
-- /run/systemd/notify is world-writable). Returns the socket and its path.
local function full_notify_socket()
  local path = os.tmpname()
  os.remove(path)
  local s = assert(net.dgram_bind(path))
  local n = 0
  while net.dgram_send(path, "x", nil, 0) do n = n + 1; assert(n < 100000) end
  return s, path
end

-- A new copy speaking the protocol by hand, quietly committing.
local COMMITTING_COPY = [[
local codec = require "fdpass.codec"
local fos = require "fdpass.os"
  local fdpass = require "fdpass"
  local ch = fdpass.channel(3)
  local function send(msg) assert(ch:send(codec.encode(msg), nil, 5)) end
  send({ t = "HELLO", versions = { 1 }, pid = fos.getpid() })
  for _, want in ipairs { "WELCOME", "FDS", "STATE" } do
    local data, fds = assert(ch:recv(5))
    assert(codec.decode(data).t == want)
    fdpass.close_all(fds)
  end
  send({ t = "READY", claimed = {}, unclaimed = {} })
  assert(codec.decode((assert(ch:recv(5)))).t == "COMMIT")
  send({ t = "COMMITTED", pid = fos.getpid() })
  repeat local data = ch:recv(5) until not data or codec.decode(data).t == "DONE"
]]

local function upgrade_on_full_queue(logs)
  local s, path = full_notify_socket()
  assert(fos.setenv("NOTIFY_SOCKET", path))
  local up = upgrade.new { argv = { H.lua, "-e", COMMITTING_COPY }, timeouts = timeouts(),
    log = function(line) logs[#logs + 1] = line end }
  assert(up:upgrade())
  local ev, info = drive(up)
  lu.assertEquals(ev, "upgraded", tostring(info))
  return up, s, path, info.pid
end

-- Drains the datagrams queued on `s`; returns those that are not "x".
local function drain(s)
  local got = {}
  while true do
    local data = net.dgram_recv(s, 4096, 0, 0)
    if not data then return got end
    if data ~= "x" then got[#got + 1] = data end
  end
end

T.test_mainpid_on_a_full_notify_queue_is_sent_from_step_once_it_drains = function()
  local logs = {}
  local up, s, path, pid = upgrade_on_full_queue(logs)
  -- not sent, kept: step() is due again soon
  local left = up:timeout()
  lu.assertNotNil(left, "nothing pending after the commit")
  lu.assertTrue(left <= 0.05, "retried only in " .. tostring(left) .. " s")
  lu.assertEquals(drain(s), {}) -- RELOADING=1 was refused too (logged), nothing else queued
  local got
  for _ = 1, 100 do
    loop.poll({ up }, nil, up:timeout() or 0.05)
    up:step()
    got = drain(s)
    if #got > 0 then break end
  end
  lu.assertEquals(got, { "MAINPID=" .. pid .. "\nREADY=1\n" })
  lu.assertNil(up:timeout(), "still pending once sent")
  lu.assertTrue(up:finish())
  up:close()
  H.expect_exit(up:new_process(), 0, 5)
  fos.setenv("NOTIFY_SOCKET", nil)
  s:close()
  os.remove(path)
  for _, line in ipairs(logs) do lu.assertNotStrContains(line, "MAINPID") end
end

T.test_mainpid_never_sent_is_waited_for_by_close_then_logged_once = function()
  local notify = require "fdpass.upgrade.notify"
  local give_up = notify.GIVE_UP
  notify.GIVE_UP = 0.3
  local logs = {}
  local ok, err = pcall(function()
    local up, s, path = upgrade_on_full_queue(logs)
    lu.assertTrue(up:finish())
    H.expect_exit(up:new_process(), 0, 5)
    up:close() -- waits out what is left of GIVE_UP, retrying
    local said = 0
    for _, line in ipairs(logs) do
      if line:find("MAINPID=%d+ READY=1 not sent") then said = said + 1 end
    end
    lu.assertEquals(said, 1, table.concat(logs, "\n"))
    lu.assertEquals(drain(s), {})
    s:close()
    os.remove(path)
  end)
  notify.GIVE_UP = give_up
  fos.setenv("NOTIFY_SOCKET", nil)
  assert(ok, err)
end

-- The rendezvous name is world-readable (/proc/net/unix): it shows
-- nothing of the token that the new copy proves itself with.
T.test_rendezvous_name_shows_nothing_of_the_token = function()
  local report = os.tmpname()
  local up = upgrade.new { rendezvous = true, timeouts = timeouts { hello = 2 }, argv = { H.lua, "-e", ([[
    local f = assert(io.open(%q, "w"))
    f:write(os.getenv("FDPASS_UPGRADE_ADDR"), "\n", os.getenv("FDPASS_UPGRADE_TOKEN"), "\n")
    f:close()
    os.exit(1)
  ]]):format(report) } }
  assert(up:upgrade())
  local ev = drive(up)
  lu.assertEquals(ev, "failed")
  up:close()
  local addr, token = read_file(report):match("^(%S+)\n(%x+)\n$")
  os.remove(report)
  lu.assertNotNil(addr, "the copy did not report its address and token")
  lu.assertEquals(#token, 32)
  for i = 1, #token - 5 do
    lu.assertNil(addr:find(token:sub(i, i + 5), 1, true), ("the name %s shows the token's %s"):format(addr,
      token:sub(i, i + 5)))
  end
end

TestUpgradeApi = H.suite(T)

H.run()
