-- Issue 10, beyond the six: fdpass.systemd's NOTIFY_SOCKET handling when
-- what it names is hostile or broken: missing, not a socket, a stream
-- socket, an abstract name nobody binds, names too long, a peer whose
-- queue is full. Each notification returns nil, msg, code (never raises,
-- never waits longer than asked: timeout 0 does not wait) and holds no
-- descriptor afterwards, counted without the collector. Then an upgrade
-- whose NOTIFY_SOCKET peer never reads: the serving loop keeps turning.
local lu = require "luaunit"
local H = require "helpers"
local A = require "attack.harness"
local fos = require "fdpass.os"
local net = require "fdpass.net"
local systemd = require "fdpass.systemd"

local now = fos.monotonic
local T = {}

local dir
local function tmpdir()
  dir = A.tmpdir()
  return dir
end
local function cleanup()
  A.rmdir(dir)
  dir = nil
end

-- A datagram socket at `path` whose queue is full: it never reads.
local function full_peer(path)
  local s = assert(net.dgram_bind(path))
  local n = 0
  while net.dgram_send(path, "x", nil, 0) do n = n + 1; assert(n < 100000) end
  return s, n
end

-- Notifies with NOTIFY_SOCKET = addr and timeout 0; asserts a failure of
-- the world (nil, "notify: ...", code), no wait, no descriptor held.
local function refused(addr, codes)
  fos.setenv("NOTIFY_SOCKET", addr)
  collectgarbage("stop")
  local before = fos.fdcount()
  local t0 = now()
  local ok, msg, code = systemd.ready("attack", { timeout = 0 })
  local took = now() - t0
  local fds = fos.fdcount()
  local ok2, _, code2 = systemd.fdstore("web", { 0 }, { timeout = 0 })
  local fds2 = fos.fdcount()
  collectgarbage("restart")
  fos.setenv("NOTIFY_SOCKET", nil)
  lu.assertNil(ok, addr .. ": notify succeeded")
  lu.assertNil(ok2, addr .. ": fdstore succeeded")
  lu.assertEquals(type(msg), "string")
  lu.assertTrue(codes[code] ~= nil, ("%s: code %s (%s)"):format(addr, tostring(code), tostring(msg)))
  lu.assertEquals(code2, code)
  lu.assertEquals(fds, before, addr .. ": descriptors held after a failed notify")
  lu.assertEquals(fds2, before, addr .. ": descriptors held after a failed fdstore")
  lu.assertTrue(took < 0.5, ("%s: timeout 0 waited %.3f s"):format(addr, took))
end

function T.test_missing_socket()
  refused(tmpdir() .. "/nothing", { ENOENT = true })
  cleanup()
end

function T.test_not_a_socket()
  local d = tmpdir()
  local f = assert(io.open(d .. "/file", "w")); f:close()
  refused(d .. "/file", { ECONNREFUSED = true })
  assert(H.execute("mkfifo " .. d .. "/fifo"))
  refused(d .. "/fifo", { ECONNREFUSED = true })
  cleanup()
end

function T.test_stream_socket()
  local d = tmpdir()
  local fdpass = require "fdpass"
  local l = assert(fdpass.listen(d .. "/stream"))
  refused(d .. "/stream", { EPROTOTYPE = true })
  l:close()
  cleanup()
end

function T.test_abstract_name_nobody_binds()
  refused(("@fdpass-attack-notify-%d-%d"):format(fos.getpid(), os.time()), { ECONNREFUSED = true })
  refused("@", { ECONNREFUSED = true, EINVAL = true }) -- the empty abstract name
end

function T.test_names_too_long_or_odd()
  refused("/" .. ("x"):rep(200), { ENAMETOOLONG = true, EINVAL = true })
  refused("@" .. ("x"):rep(200), { ENAMETOOLONG = true, EINVAL = true })
  refused("relative/path", { EINVAL = true })
  refused("vsock:2:1234", { EAFNOSUPPORT = true })
end

function T.test_full_queue_timeout_zero_does_not_wait()
  local d = tmpdir()
  local s = full_peer(d .. "/notify")
  refused(d .. "/notify", { EAGAIN = true })
  -- a bounded wait is bounded
  fos.setenv("NOTIFY_SOCKET", d .. "/notify")
  local t0 = now()
  local ok, _, code = systemd.ready(nil, { timeout = 0.2 })
  local took = now() - t0
  fos.setenv("NOTIFY_SOCKET", nil)
  lu.assertNil(ok)
  lu.assertEquals(code, "ETIMEDOUT")
  lu.assertTrue(took < 1, ("a 0.2 s timeout waited %.3f s"):format(took))
  s:close()
  cleanup()
end

-- An upgrade under systemd whose notify peer never reads (a service
-- manager that is slow, or a socket an attacker filled): RELOADING=1 and
-- MAINPID=+READY=1 must not hold the serving loop (bound as in
-- attack_stall_spec.lua), and the upgrade still completes.
function T.test_upgrade_with_a_full_notify_queue_keeps_the_loop_turning()
  local d = tmpdir()
  local s = full_peer(d .. "/notify")
  local ok, r = pcall(A.best_of, { mode = "ready_fds", n = 0, window = 3, server = { systemd = 1 },
    env = { NOTIFY_SOCKET = d .. "/notify" } }, 250)
  s:close()
  cleanup()
  assert(ok, r)
  lu.assertEquals(r.result, "upgraded", A.summary(r))
  lu.assertTrue(r.max_gap_ms < 250, ("the serving loop stalled %.1f ms on a full notify queue: %s")
    :format(r.max_gap_ms, A.summary(r)))
end

TestAttackSystemd = H.suite(T)
H.run()
