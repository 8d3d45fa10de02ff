-- fdpass.upgrade under fault injection. The old side is this process
-- (upgrade.new with short timeouts, a TCP listener offered as "http"); the
-- new copy is either a real one (spec/upgrade/new_copy.lua, which runs
-- up:start with the inherit hook its first argument names) or an impostor
-- that speaks the protocol by hand. Each failure asserts what the caller
-- of up:upgrade() was told (nil, phase, reason, stderr tail), that the old
-- side still serves (its listener accepts here), that the copy is gone and
-- reaped, and (H.suite) that no descriptor leaked here. The new copy's
-- side is checked from its own reports where it survives. Then the other
-- way round: this process plays the old side by hand against a real new
-- copy (forged descriptors, an old process dying mid-handshake), and
-- finally examples/http_server.lua upgrades itself several times in a row.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local codec = require "fdpass.codec"
local loop = require "fdpass.loop"
local net = require "fdpass.net"
local fos = require "fdpass.os"
local upgrade = require "fdpass.upgrade"

local now = fos.monotonic
local NEW_COPY = "spec/upgrade/new_copy.lua"

-- ---- the old side ---------------------------------------------------------------

local timeouts = H.upgrade_timeouts

local function real_copy(mode, ...)
  return { H.lua, NEW_COPY, mode, ... }
end

-- An impostor: `lua -e` whose code sees globals fdpass, ch (the channel on
-- descriptor 3), send(msg, [fds]), recv([timeout]) -> msg, fds, hello() and
-- ready() (takes WELCOME, FDS and STATE, closing what they carry, and
-- answers READY claiming "http"); it has already written "pid N" to its
-- stderr.
local PRELUDE = [[
local codec = require "fdpass.codec"
local fos = require "fdpass.os"
fdpass = require "fdpass"
io.stderr:write(("pid %d\n"):format(fos.getpid()))
ch = fdpass.channel(3)
function send(msg, fds) return assert(ch:send(codec.encode(msg), fds, 5)) end
function recv(timeout)
  local data, fds, code = ch:recv(timeout or 5)
  if not data then return nil, fds, code end
  return codec.decode(data), fds
end
function hello() send { t = "HELLO", versions = { 1 }, pid = fos.getpid() } end
function ready()
  for _, want in ipairs { "WELCOME", "FDS", "STATE" } do
    local m, fds = assert(recv())
    assert(m.t == want, m.t)
    for _, f in ipairs(fds) do f:close() end
  end
  send { t = "READY", claimed = { "http" }, unclaimed = {} }
end
]]
local function impostor(code)
  return { H.lua, "-e", PRELUDE .. code }
end

-- A serving old side: an upgrader whose copies start with `argv`, offering
-- a fresh TCP listener as "http" and the state { served = 41 }.
local function serving(argv, over)
  local l = assert(net.tcp_listen("127.0.0.1", 0))
  local up = upgrade.new { argv = argv, timeouts = timeouts(over) }
  up:listener("http", l)
  up:state(function() return { served = 41 } end)
  return up, l
end

local function port_of(l)
  return tonumber(fdpass.info(l).addr:match(":(%d+)$"))
end

-- The old side still serves: its listener takes a connection here, and
-- bytes go through it. Closes the listener afterwards.
local function assert_serves(l)
  lu.assertTrue(fdpass.info(l).listening, "the listener is no longer listening")
  local c = assert(net.tcp_connect("127.0.0.1", port_of(l), 2))
  lu.assertEquals(#loop.poll({ l }, nil, 2), 1, "the listener did not see the connection")
  local s = assert(net.accept(l))
  assert(s:write("still here"))
  lu.assertEquals(#loop.poll({ c }, nil, 2), 1)
  lu.assertEquals(c:read(), "still here")
  s:close()
  c:close()
  l:close()
end

-- Runs up:upgrade() and asserts it failed in `phase` with a reason that
-- contains `reason_has`, and that the copy, which wrote "pid N" first thing
-- to its stderr, is gone and reaped (a zombie still answers kill(pid, 0))
-- when upgrade() returns. The collector is off meanwhile: the rollback must
-- stop the copy, not the collector closing a channel dropped on the floor.
-- Returns the reason, the stderr tail and the time it took.
local function assert_upgrade_fails(up, phase, reason_has)
  collectgarbage("stop")
  local started = now()
  local ok, err = up:run_upgrade()
  local took = now() - started
  local tail = type(err) == "table" and err.stderr
  local pid = tonumber(tostring(tail):match("pid (%d+)"))
  local alive = pid and { fos.kill(pid, 0) }
  collectgarbage("restart")
  lu.assertNil(ok, "the upgrade succeeded: new pid " .. tostring(ok))
  lu.assertEquals(type(err), "table", tostring(err))
  lu.assertEquals(err.phase, phase, ("reason: %s\nstderr: %s"):format(tostring(err.reason), tostring(tail)))
  lu.assertEquals(type(err.reason), "string")
  lu.assertEquals(type(tail), "string")
  lu.assertEquals(tostring(err), err.message)
  if reason_has then lu.assertStrContains(err.reason, reason_has) end
  if phase ~= "spawn" then
    lu.assertNotNil(pid, "the copy's stderr tail has no pid: " .. tail)
    lu.assertEquals(err.pid, pid)
    lu.assertEquals({ alive[1], alive[3] }, { nil, "ESRCH" }, ("copy %d still exists (not reaped?)"):format(pid))
  end
  up:close()
  return err.reason, tail, took, err
end

-- Steps an upgrade started with up:upgrade() to its end, polling the
-- upgrader's one descriptor as an app's loop would.
local function drive(up)
  local deadline = now() + 20
  while now() < deadline do
    local ev, x = up:step()
    if ev == "upgraded" then return true, x end
    if ev == "failed" then return false, x.phase, x end
    if not ev then loop.poll({ up }, nil, math.min(up:timeout() or 1, deadline - now())) end
  end
  lu.fail("the upgrade never ended")
end

-- RLIMIT_NOFILE raised for fn, restored afterwards.
local function with_nofile(n, fn)
  local soft, hard = fos.nofile()
  assert(fos.nofile(math.min(hard, math.max(soft, n))))
  local res = H.pack(pcall(fn))
  fos.nofile(soft)
  if not res[1] then error(res[2], 0) end
  return H.unpack(res, 2, res.n)
end

-- ---- this process as the old side, by hand --------------------------------------

local function encode_send(ch, msg, fds)
  local ok, err, code = ch:send(codec.encode(msg), fds, 5)
  return assert(ok, tostring(err) .. " (" .. tostring(code) .. ")")
end

local function decode_recv(ch, timeout)
  local data, fds, code = ch:recv(timeout or 5)
  if not data then return nil, fds, code end
  return codec.decode(data), fds
end

local function identity(obj)
  local i = fdpass.info(obj)
  return { kind = i.kind, family = i.family, socktype = i.socktype, listening = i.listening, addr = i.addr }
end

-- Starts a real new copy as an upgrade would (FDPASS_UPGRADE_FD=3), with
-- its stderr on a pipe. Returns our end of the channel, the process, the
-- pipe's read end and its write end (to send as WELCOME's stderr; close it
-- after that).
local function spawn_new_copy(...)
  local mine, theirs = assert(fdpass.socketpair())
  local r, w = assert(fos.pipe())
  local proc = assert(fdpass.spawn(real_copy(...), {
    fds = { [3] = theirs, [2] = w },
    setenv = { FDPASS_UPGRADE_FD = "3", FDPASS_UPGRADE_GENERATION = "7" },
  }))
  theirs:close()
  return mine, proc, r, w
end

-- Everything a pipe gives until EOF (bounded).
local function read_to_eof(r, timeout)
  r:nonblock(true)
  local out, deadline = {}, now() + (timeout or 5)
  while true do
    local data, _, code = r:read()
    if data then
      out[#out + 1] = data
    elseif code == "EAGAIN" then
      local left = deadline - now()
      if left <= 0 then break end
      loop.poll({ r }, nil, left)
    else
      break
    end
  end
  return table.concat(out)
end

-- The "key value" lines that new_copy.lua reported.
local function reports(text)
  local t = {}
  for k, v in text:gmatch("(%S+) ([^\n]*)\n") do
    if t[k] == nil then t[k] = v end
  end
  return t
end

-- HELLO from the copy, then WELCOME (announcing `old_pid`) with `w` as the
-- stderr the copy adopts on commit.
local function welcome(ch, w, old_pid)
  local hello = decode_recv(ch)
  lu.assertEquals(type(hello), "table")
  lu.assertEquals(hello.t, "HELLO")
  lu.assertEquals(hello.versions, { 1 })
  encode_send(ch, { t = "WELCOME", version = 1, generation = 7, pid = old_pid or fos.getpid() }, { w })
  return hello
end

local function send_fds(ch, list) -- list: { {name, obj, id}, ... }
  local names, ids, objs = {}, {}, {}
  for i, e in ipairs(list) do names[i], objs[i], ids[i] = e[1], e[2], e[3] or identity(e[2]) end
  encode_send(ch, { t = "FDS", names = names, ids = ids }, objs)
end

-- ---- the tests ------------------------------------------------------------------

local T = {}

T.test_spawn_fails_phase_spawn = function()
  local up, l = serving({ "/nonexistent/fdpass-new-copy" })
  local _, tail = assert_upgrade_fails(up, "spawn", "No such file")
  lu.assertEquals(tail, "")
  assert_serves(l)
end

T.test_dies_before_hello_phase_hello = function()
  local up, l = serving(impostor [[
    io.stderr:write("dying before HELLO, on purpose\n")
    os.exit(3)
  ]])
  local _, tail = assert_upgrade_fails(up, "hello", "peer closed the channel")
  lu.assertStrContains(tail, "dying before HELLO, on purpose")
  assert_serves(l)
end

-- 600 descriptors under names of 2000 bytes: FDS is 1.2 MB in many
-- records, far more than a socket buffer holds, so the old side is inside
-- that send, blocked, when the copy takes one record (253 descriptors) and
-- dies: the failure is in "fds" every time.
local function mid_fds(after_one_record, over)
  return with_nofile(4096, function()
    local up, l = serving(impostor(([[
      hello()
      local w = assert(recv())
      assert(w.t == "WELCOME", w.t)
      local data, fds = assert(ch:recvmsg(65536 + 64, 253, 5))
      io.stderr:write(("first FDS record: %%d bytes, %%d descriptors\n"):format(#data, #fds))
      %s
    ]]):format(after_one_record)), over)
    local name = ("n"):rep(2000)
    local dups = {}
    for i = 1, 600 do
      dups[i] = fdpass.dup(l)
      up:listener(name .. i, dups[i])
    end
    local reason, tail, took = assert_upgrade_fails(up, "fds")
    lu.assertStrMatches(tail, ".*first FDS record: %d+ bytes, 253 descriptors\n.*")
    H.close_all(dups)
    assert_serves(l)
    return reason, took
  end)
end

T.test_dies_in_the_middle_of_fds_phase_fds = function()
  local reason = mid_fds("os.exit(4)")
  lu.assertStrContains(reason, "(EPIPE)")
end

T.test_hangs_in_the_middle_of_fds_times_out_phase_fds = function()
  local reason, took = mid_fds("require('fdpass.loop').poll({}, nil, 10)", { handover = 0.5 })
  lu.assertStrContains(reason, "(ETIMEDOUT)")
  lu.assertTrue(took < 3, "took " .. took)
end

T.test_offered_listener_closed_before_upgrade_phase_fds = function()
  local up, l = serving(real_copy("ok"))
  local gone = assert(net.tcp_listen("127.0.0.1", 0))
  up:listener("closed-since", gone)
  gone:close()
  local reason = assert_upgrade_fails(up, "fds", "closed fdpass.fd")
  lu.assertStrContains(reason, "error: ") -- raised inside the task, rolled back all the same
  assert_serves(l)
end

T.test_state_function_fails_phase_state = function()
  local up, l = serving(real_copy("ok"))
  up:state(function() error("state exploded") end)
  assert_upgrade_fails(up, "state", "state exploded")
  assert_serves(l)
end

T.test_state_not_encodable_phase_state = function()
  local up, l = serving(real_copy("ok"))
  up:state(function() return { f = print } end)
  assert_upgrade_fails(up, "state", "cannot encode a function")
  assert_serves(l)
end

T.test_dies_before_ready_in_inherit_phase_ready = function()
  local up, l = serving(real_copy("exit5"))
  local _, tail = assert_upgrade_fails(up, "ready", "peer closed the channel")
  lu.assertStrContains(tail, "inherit exits 5")
  assert_serves(l)
end

T.test_nak_from_inherit_phase_ready = function()
  local up, l = serving(real_copy("nak"))
  local reason = assert_upgrade_fails(up, "ready", "bad config")
  lu.assertStrContains(reason, "new copy refused")
  assert_serves(l)
end

T.test_inherit_raises_phase_ready = function()
  local up, l = serving(real_copy("raise"))
  local reason = assert_upgrade_fails(up, "ready", "kaboom in the hook")
  lu.assertStrContains(reason, "inherit hook failed")
  assert_serves(l)
end

T.test_dies_after_ready_before_commit_phase_commit = function()
  local up, l = serving(impostor [[
    hello()
    ready()
    io.stderr:write("READY sent, leaving\n")
    os.exit(0)
  ]])
  local _, tail = assert_upgrade_fails(up, "commit")
  lu.assertStrContains(tail, "READY sent, leaving")
  assert_serves(l)
end

T.test_never_says_committed_deadline_phase_commit = function()
  local up, l = serving(impostor [[
local loop = require "fdpass.loop"
    hello()
    ready()
    local m = assert(recv())
    io.stderr:write(("got %s, not answering\n"):format(m.t))
    loop.poll({}, nil, 10)
  ]], { commit = 0.5 })
  local _, tail, took = assert_upgrade_fails(up, "commit", "timed out waiting for COMMITTED")
  lu.assertStrContains(tail, "got COMMIT, not answering")
  lu.assertTrue(took < 3, "took " .. took)
  assert_serves(l)
end

T.test_never_says_hello_deadline_then_term_phase_hello = function()
  local up, l = serving(impostor "require('fdpass.loop').poll({}, nil, 10)", { hello = 0.5, kill = 3 })
  local _, _, took = assert_upgrade_fails(up, "hello", "timed out waiting for HELLO")
  lu.assertTrue(took >= 0.5 and took < 2.5, "took " .. took .. " s: TERM did not stop it?")
  assert_serves(l)
end

T.test_blocks_term_then_kill_phase_hello = function()
  local up, l = serving(impostor [[
local loop = require "fdpass.loop"
local fos = require "fdpass.os"
    local s = fos.signals { "TERM" }
    io.stderr:write("TERM blocked\n")
    local give_up = fos.monotonic() + 10 -- bounded, should KILL never come
    while fos.monotonic() < give_up do
      if #loop.poll({ s }, nil, 1) > 0 then
        io.stderr:write(fos.readsignal(s) .. " ignored\n")
      end
    end
  ]], { hello = 0.5, kill = 0.5 })
  local _, tail, took = assert_upgrade_fails(up, "hello", "timed out waiting for HELLO")
  lu.assertStrContains(tail, "TERM blocked")
  lu.assertStrContains(tail, "TERM ignored") -- TERM came first, then KILL
  lu.assertTrue(took >= 1 and took < 3, "took " .. took)
  assert_serves(l)
end

T.test_hangs_in_inherit_deadline_phase_ready = function()
  local up, l = serving(real_copy("hang"), { ready = 0.5 })
  local _, tail, took = assert_upgrade_fails(up, "ready", "timed out waiting for READY")
  lu.assertStrContains(tail, "inherit hangs")
  lu.assertTrue(took < 3, "took " .. took)
  assert_serves(l)
end

T.test_unknown_version_refused_phase_hello = function()
  -- TERM blocked, so that the impostor lives to tell what it received.
  local up, l = serving(impostor [[
local fos = require "fdpass.os"
    local s = fos.signals { "TERM" }
    send { t = "HELLO", versions = { 99 }, pid = fos.getpid() }
    local m = recv()
    io.stderr:write(("received %s: %s\n"):format(tostring(m and m.t), tostring(m and m.reason)))
    os.exit(0)
  ]])
  local reason, tail = assert_upgrade_fails(up, "hello", "no common protocol version")
  lu.assertStrContains(reason, "old speaks 1")
  lu.assertStrContains(reason, "new speaks 99")
  lu.assertStrContains(tail, "received REFUSE: no common protocol version")
  assert_serves(l)
end

T.test_second_upgrade_while_one_runs_is_busy = function()
  -- a copy that never says HELLO, and leaves when its channel closes
  local up, l = serving(impostor "ch:recv(10)", { hello = 0.3 })
  lu.assertEquals(up:upgrade(), true)
  lu.assertNil(up:step(), "the first step spawns the copy and waits for it")
  lu.assertEquals({ up:upgrade() }, { nil, "an upgrade is already running", "EBUSY" })
  local ok, phase = drive(up)
  lu.assertEquals({ ok, phase }, { false, "hello" })
  -- finished: the next one may start (and fails the same way)
  lu.assertEquals(up:upgrade(), true)
  local ok2, phase2 = drive(up)
  lu.assertEquals({ ok2, phase2 }, { false, "hello" })
  up:close()
  assert_serves(l)
end

T.test_second_upgrader_on_the_same_lockfile_is_busy = function()
  local lock = os.tmpname()
  local up1 = upgrade.new { argv = impostor "os.exit(3)", lockfile = lock, timeouts = timeouts() }
  local up2 = upgrade.new { argv = impostor "os.exit(3)", lockfile = lock, timeouts = timeouts() }
  assert(up1:upgrade())
  local t2, reason, code = up2:upgrade()
  lu.assertEquals({ t2, code }, { nil, "EBUSY" })
  lu.assertStrContains(reason, "flock")
  lu.assertEquals(drive(up1), false)
  assert(up2:upgrade(), "the lock was not released")
  lu.assertEquals(drive(up2), false)
  up1:close()
  up2:close()
  os.remove(lock)
end

-- ---- a real new copy against this process playing the old side -------------------

T.test_new_copy_closes_and_reports_descriptors_whose_identity_lies = function()
  local good = assert(net.tcp_listen("127.0.0.1", 0))
  local other = assert(net.tcp_listen("127.0.0.1", 0))
  local file = H.tempfile("not a socket")
  local ua, ub = assert(fdpass.socketpair())
  local ch, proc, r, w = spawn_new_copy("ok", "serve")
  welcome(ch, w)
  w:close()
  local id = identity(good)
  send_fds(ch, {
    { "good", good },
    { "wrong-port", other, id }, -- a listener, but not the one it claims to be
    { "file", file, id },        -- a file claimed as that listener
    { "unix", ua, id },          -- a unix socket claimed as that listener
    { 42, good },                -- the right descriptor under no valid name
    { "no-id", good, "?" },      -- no identity to check against
  })
  encode_send(ch, { t = "STATE", state = { served = 41 } })
  local ready = decode_recv(ch)
  lu.assertEquals(ready.t, "READY")
  lu.assertEquals(ready.claimed, { "good" })
  lu.assertEquals(ready.unclaimed, { "wrong-port", "file", "unix", "42", "no-id" })
  encode_send(ch, { t = "COMMIT" })
  local committed = decode_recv(ch)
  lu.assertEquals(committed.t, "COMMITTED")
  lu.assertEquals(committed.pid, proc:pid())
  -- the new copy serves on the listener it kept
  local c = assert(net.tcp_connect("127.0.0.1", port_of(good), 2))
  lu.assertEquals(#loop.poll({ c }, nil, 5), 1)
  lu.assertEquals(c:read(), ("served by %d\n"):format(proc:pid()))
  c:close()
  -- then a live connection, and the end of them
  local x, y = assert(fdpass.socketpair("stream"))
  encode_send(ch, { t = "CONN", name = "http", buffered = "GET /" }, { y })
  y:close()
  encode_send(ch, { t = "DONE" })
  ch:close()
  H.expect_exit(proc, 0, 5)
  x:close()
  local rep = reports(read_to_eof(r))
  r:close()
  lu.assertEquals(rep.conn, 'http "GET /"')
  lu.assertEquals(rep.claimed, "good")
  lu.assertEquals(rep.unclaimed, "42,file,no-id,unix,wrong-port")
  lu.assertEquals(rep.state, "41")
  -- on the new side: in the hook, WELCOME's stderr, the old process's
  -- pidfd and the one claimed listener beyond startup (the five liars
  -- closed); after the commit
  -- the listener only (stderr moved onto 2, the channel kept for CONNs)
  lu.assertEquals(rep.claimed_fds, "1")
  lu.assertEquals(rep.hook_fds, "3")
  lu.assertEquals(rep.after_fds, "1")
  lu.assertEquals(rep.final_fds, "0") -- the channel closed after DONE
  H.close_all { good, other, file, ua, ub }
end

-- Descriptors where none is wanted: beyond WELCOME's one, with an unknown
-- message, STATE, COMMIT, the final STATE and DONE. The copy counts its
-- descriptors with the collector stopped: each must be closed at once.
T.test_new_copy_closes_descriptors_that_come_where_none_is_wanted = function()
  local good = assert(net.tcp_listen("127.0.0.1", 0))
  local junk = H.fds(10)
  local ch, proc, r, w = spawn_new_copy("ok")
  lu.assertEquals(decode_recv(ch).t, "HELLO")
  encode_send(ch, { t = "WELCOME", version = 1, generation = 7, pid = fos.getpid() },
    { w, junk[1], junk[2], junk[3], junk[4], junk[5] })
  w:close()
  send_fds(ch, { { "good", good } })
  encode_send(ch, { t = "NEWS" }, junk)
  encode_send(ch, { t = "STATE", state = { served = 1 } }, junk)
  lu.assertEquals(decode_recv(ch).t, "READY")
  encode_send(ch, { t = "COMMIT" }, junk)
  lu.assertEquals(decode_recv(ch).t, "COMMITTED")
  encode_send(ch, { t = "STATE", final = true, state = { served = 2 } }, junk)
  encode_send(ch, { t = "DONE" }, junk)
  ch:close()
  H.close_all(junk)
  H.expect_exit(proc, 0, 5)
  local rep = reports(read_to_eof(r))
  r:close()
  -- WELCOME's stderr, the old process's pidfd and the listener; then the
  -- listener; then the listener without the channel
  lu.assertEquals({ rep.hook_fds, rep.after_fds, rep.final_fds, rep.final_state }, { "3", "1", "0", "2" })
  good:close()
end

T.test_a_batch_of_connections_arrives_in_order_and_entries_without_a_descriptor_pair_are_closed = function()
  local good = assert(net.tcp_listen("127.0.0.1", 0))
  local ch, proc, r, w = spawn_new_copy("ok")
  welcome(ch, w)
  w:close()
  send_fds(ch, { { "good", good } })
  encode_send(ch, { t = "STATE", state = { served = 1 } })
  lu.assertEquals(decode_recv(ch).t, "READY")
  encode_send(ch, { t = "COMMIT" })
  lu.assertEquals(decode_recv(ch).t, "COMMITTED")
  -- three connections, entries for the first two only: the third is closed
  local pairs_ = {}
  for i = 1, 3 do pairs_[i] = { assert(fdpass.socketpair("stream")) } end
  encode_send(ch, { t = "CONNS", conns = {
    { name = "http", buffered = "one" }, { name = "http", buffered = "two" },
  } }, { pairs_[1][2], pairs_[2][2], pairs_[3][2] })
  for i = 1, 3 do pairs_[i][2]:close() end
  encode_send(ch, { t = "DONE" })
  ch:close()
  H.expect_exit(proc, 0, 5)
  local text = read_to_eof(r)
  r:close()
  local seen = {}
  for line in text:gmatch("conn ([^\n]*)") do seen[#seen + 1] = line end
  lu.assertEquals(seen, { 'http "one"', 'http "two"' })
  -- the copy held none of them at the end: the third was never adopted
  lu.assertEquals(reports(text).final_fds, "0")
  -- and our ends see the copy's ends closed
  for i = 1, 3 do
    lu.assertEquals(select(3, pairs_[i][1]:recvmsg(16, 0, 2)), "EOF")
    pairs_[i][1]:close()
  end
  good:close()
end

-- The old process goes away before READY: the copy gives up, exit 1.
local function old_dies_before_ready(after)
  local l = assert(net.tcp_listen("127.0.0.1", 0))
  local ch, proc, r, w = spawn_new_copy("ok")
  welcome(ch, w)
  w:close()
  if after ~= "WELCOME" then
    send_fds(ch, { { "good", l } })
    encode_send(ch, { t = "STATE", state = { served = 1 } })
  end
  ch:close()
  H.expect_exit(proc, 1, 5)
  local text = read_to_eof(r)
  r:close()
  lu.assertStrContains(text, "fdpass.upgrade: new copy " .. proc:pid() .. " gives up")
  lu.assertNotStrContains(text, "traceback")
  assert_serves(l)
  return text
end

T.test_old_dies_after_welcome_new_copy_exits_1 = function()
  lu.assertStrContains(old_dies_before_ready("WELCOME"), "no descriptors")
end

T.test_old_dies_after_state_before_ready_new_copy_exits_1 = function()
  old_dies_before_ready("STATE")
end

-- READY sent, then the channel closes. `old` is the process WELCOME named.
local function channel_closes_after_ready(old_pid)
  local l = assert(net.tcp_listen("127.0.0.1", 0))
  local ch, proc, r, w = spawn_new_copy("ok", "serve")
  welcome(ch, w, old_pid)
  w:close()
  send_fds(ch, { { "good", l } })
  encode_send(ch, { t = "STATE", state = { served = 41 } })
  local ready = decode_recv(ch)
  lu.assertEquals(ready.t, "READY")
  return l, ch, proc, r
end

-- The takeover after READY is decided by the kernel: the new copy holds
-- a pidfd of the old process (taken at WELCOME) and takes over only once
-- it is readable (a zombie counts as gone). The old process here exits for
-- real after READY, and is reaped by us only afterwards: 20 times out of 20.
T.test_old_dies_after_ready_new_copy_takes_over_20_of_20 = function()
  for round = 1, 20 do
    local out_r, out_w = assert(fos.pipe())
    local err_r, err_w = assert(fos.pipe())
    local old = assert(fdpass.spawn({ H.lua, "spec/upgrade/dying_old.lua" }, { fds = { [1] = out_w, [2] = err_w } }))
    out_w:close()
    err_w:close()
    -- both lines (the copy inherits this stdout: no EOF while it runs)
    out_r:nonblock(true)
    local out, deadline = "", now() + 10
    while not out:find("copy %d+\n") and now() < deadline do
      loop.poll({ out_r }, nil, 0.5)
      out = out .. (out_r:read() or "")
    end
    out_r:close()
    local port, copy = tonumber(out:match("port (%d+)")), tonumber(out:match("copy (%d+)"))
    lu.assertNotNil(port, "round " .. round .. ": " .. out)
    local c = assert(net.tcp_connect("127.0.0.1", port, 2))
    lu.assertEquals(#loop.poll({ c }, nil, 10), 1, "round " .. round .. ": nobody served")
    lu.assertEquals(c:read(), ("served by %d\n"):format(copy), "round " .. round)
    c:close()
    local rep = reports(read_to_eof(err_r, 10))
    err_r:close()
    H.expect_exit(old, 0, 5) -- reaped only now
    lu.assertEquals(rep.log, "old process gone after READY: taking over", "round " .. round)
    lu.assertEquals(rep.state, "41")
    lu.assertEquals(rep.final_fds, "0")
  end
end

T.test_channel_closes_after_ready_old_alive_new_copy_exits_1 = function()
  local l, ch, proc, r = channel_closes_after_ready(fos.getpid())
  ch:close()
  H.expect_exit(proc, 1, 5)
  local text = read_to_eof(r)
  r:close()
  lu.assertStrContains(text, "gives up: no COMMIT: recv: peer closed the channel (the old process is still there)")
  assert_serves(l)
end

T.test_abort_after_ready_new_copy_exits_1 = function()
  local l, ch, proc, r = channel_closes_after_ready(fos.getpid())
  encode_send(ch, { t = "ABORT", reason = "changed my mind" })
  H.expect_exit(proc, 1, 5)
  ch:close()
  lu.assertStrContains(read_to_eof(r), "gives up: old process aborted: changed my mind")
  r:close()
  assert_serves(l)
end

-- ---- examples/http_server.lua, upgraded again and again ----------------------

-- One HTTP GET on a keep-alive connection: pid, generation, served.
local function get(c)
  assert(c:write("GET / HTTP/1.1\r\nHost: spec\r\n\r\n"))
  local buf, deadline = "", now() + 5
  while true do
    local head_end = buf:find("\r\n\r\n", 1, true)
    if head_end then
      local len = tonumber(buf:sub(1, head_end):match("Content%-Length: (%d+)"))
      local body = buf:sub(head_end + 4, head_end + 3 + len)
      if #body == len then
        lu.assertEquals(#buf, head_end + 3 + len, "more than one answer")
        local pid, gen, served = body:match("^(%d+) (%d+) served (%d+)\n$")
        return tonumber(pid), tonumber(gen), tonumber(served)
      end
    end
    local left = deadline - now()
    if left <= 0 then lu.fail("no answer in time; got " .. ("%q"):format(buf)) end
    loop.poll({ c }, nil, left)
    local data, msg, code = c:read()
    if not data and code ~= "EAGAIN" then lu.fail("the keep-alive connection broke: " .. msg) end
    buf = buf .. (data or "")
  end
end

-- a generation after the first is not our child: it may stay a zombie
local gone_or_zombie = H.gone_or_zombie

local function wait_gone(pid, timeout)
  local deadline = now() + (timeout or 5)
  while not gone_or_zombie(pid) do
    if now() > deadline then return false end
    loop.poll({}, nil, 0.02)
  end
  return true
end

-- The server's stats once it is quiet: one connection (ours) and, when
-- `fdcount` is given, that many descriptors (a connection we closed or a
-- channel from the old generation may take a moment to go).
local function settled_stats(addr, fdcount)
  local deadline, stats = now() + 3
  repeat
    stats = assert(upgrade.request(addr, "stats", 5))
    if stats.conns == 1 and (fdcount == nil or stats.fdcount == fdcount) then break end
    loop.poll({}, nil, 0.02)
  until now() > deadline
  return stats
end

T.test_http_server_upgrades_several_times_in_a_row = function()
  local addr = ("@fdpass-spec-%d"):format(fos.getpid())
  local r, w = assert(fos.pipe())
  local first = assert(fdpass.spawn({ H.lua, "examples/http_server.lua", "0", addr }, { fds = { [2] = w } }))
  w:close()
  local pids = { first:pid() }
  local conn
  local ok, err = pcall(function()
    local stats
    local deadline = now() + 5
    repeat
      stats = upgrade.request(addr, "stats", 2)
      if not stats then loop.poll({}, nil, 0.02) end
    until stats or now() > deadline
    lu.assertNotNil(stats, "the server never answered on its control socket")
    lu.assertEquals({ stats.ok, stats.pid, stats.generation, stats.served },
      { true, first:pid(), 1, 0 })
    conn = assert(net.tcp_connect("127.0.0.1", stats.port, 2))
    lu.assertEquals({ get(conn) }, { first:pid(), 1, 1 })
    -- what a fresh start holds with one connection: every generation after
    -- it must hold the same (nothing left over from its handover)
    local fdcount = settled_stats(addr).fdcount
    local served = 1
    for gen = 2, 4 do
      local old = pids[#pids]
      local rep = assert(upgrade.request(addr, "upgrade", 30))
      lu.assertTrue(rep.ok, ("upgrade to generation %d failed in %s: %s\n%s"):format(
        gen, tostring(rep.phase), tostring(rep.reason), tostring(rep.stderr)))
      lu.assertEquals(rep.old, old)
      lu.assertNotEquals(rep.new, old)
      pids[#pids + 1] = rep.new
      -- the connection opened before the first upgrade is answered by the new one
      lu.assertEquals({ get(conn) }, { rep.new, gen, served + 1 })
      served = served + 1
      -- and so is a new connection
      local fresh = assert(net.tcp_connect("127.0.0.1", stats.port, 2))
      lu.assertEquals({ get(fresh) }, { rep.new, gen, served + 1 })
      fresh:close()
      served = served + 1
      -- the old one has left
      if old == first:pid() then
        H.expect_exit(first, 0, 5)
      else
        lu.assertTrue(wait_gone(old), ("generation %d (%d) is still running"):format(gen - 1, old))
      end
      stats = settled_stats(addr, fdcount)
      lu.assertEquals({ stats.pid, stats.generation, stats.served, stats.conns, stats.fdcount },
        { rep.new, gen, served, 1, fdcount })
    end
  end)
  if conn then conn:close() end
  -- the last generation (and any other still there) is stopped
  for i = #pids, 2, -1 do
    if not gone_or_zombie(pids[i]) then
      fos.kill(pids[i], "TERM")
      if not wait_gone(pids[i], 3) then fos.kill(pids[i], "KILL"); wait_gone(pids[i], 3) end
    end
  end
  if first:kill(0) then first:kill("KILL") end
  pcall(first.wait, first, 5)
  local log = read_to_eof(r, 2)
  r:close()
  if not ok then error(tostring(err) .. "\nserver log:\n" .. log, 0) end
  for i = 2, #pids do lu.assertTrue(gone_or_zombie(pids[i]), "pid " .. pids[i] .. " survives") end
end

TestUpgrade = H.suite(T)

-- ---- rendezvous mode: the new copy meets the old side on an abstract
-- socket; pid, uid and token are checked, strangers are turned away. ----

local RENDEZVOUS_COPY = "spec/upgrade/rendezvous_copy.lua"

TestRendezvous = H.suite {
  test_strangers_are_turned_away_and_the_real_copy_takes_over = function()
    local l = assert(net.tcp_listen("127.0.0.1", 0))
    local up = upgrade.new { argv = { H.lua, RENDEZVOUS_COPY }, rendezvous = true, timeouts = timeouts() }
    up:listener("http", l)
    local pid, info = up:run_upgrade()
    lu.assertNotNil(pid, tostring(info))
    up:finish()
    lu.assertEquals({ up:new_process():wait(10) }, { "exit", 0 })
    l:close()
  end,

  test_only_strangers_fail_in_hello_and_say_how_many_were_refused = function()
    local l = assert(net.tcp_listen("127.0.0.1", 0))
    local up = upgrade.new { argv = { H.lua, RENDEZVOUS_COPY, "strangers-only" }, rendezvous = true,
      timeouts = timeouts { hello = 3 } }
    up:listener("http", l)
    local reason, tail = assert_upgrade_fails(up, "hello", "wrong peers turned away")
    -- every stranger was refused (exit 0), none got a WELCOME
    local n = 0
    for kind, how in tail:gmatch("stranger (%S+) (%S+)") do
      lu.assertEquals(how, "exit:0", kind .. " was let in")
      n = n + 1
    end
    lu.assertTrue(n >= 1, tail)
    lu.assertStrContains(reason, ("(%d wrong peers turned away)"):format(n))
    assert_serves(l)
  end,
}

H.run()
