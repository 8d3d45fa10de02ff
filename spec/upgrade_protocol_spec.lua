-- The pieces under fdpass.upgrade: the pure protocol module (what the
-- fuzzer runs too), the poller's counted log, and the C epoll and pidfd
-- bindings (fdpass.loop.epoll, fdpass.os.pidfd_open), against the kernel.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local net = require "fdpass.net"
local loop = require "fdpass.loop"
local P = require "fdpass.upgrade.protocol"
local poller = require "fdpass.upgrade.poller"

local T = {}

-- ---- protocol ----------------------------------------------------------------------

T.test_negotiate_takes_the_newest_common_version_or_says_why = function()
  lu.assertEquals(P.negotiate({ 1 }, { 1, 2 }), 1)
  lu.assertEquals(P.negotiate({ 1, 2 }, { 2, 1 }), 2)
  local v, why = P.negotiate({ 1 }, { 99, "x" })
  lu.assertNil(v)
  lu.assertEquals(why, "no common protocol version (old speaks 1, new speaks 99,x)")
  lu.assertNil((P.negotiate({ 1 }, "junk")))
end

T.test_decode_wants_a_table_with_a_type = function()
  lu.assertEquals(P.decode(P.encode { t = "HELLO", pid = 3 }), { t = "HELLO", pid = 3 })
  for _, bad in ipairs { P.encode "HELLO", P.encode { t = 1 }, "garbage" } do
    local msg, why = P.decode(bad)
    lu.assertNil(msg)
    lu.assertStrContains(why, "undecodable message")
  end
end

T.test_claim_keeps_what_is_what_it_claims_and_closes_the_rest_at_once = function()
  local good = assert(net.tcp_listen("127.0.0.1", 0))
  local other = assert(net.tcp_listen("127.0.0.1", 0))
  local msg = P.fds_message { { name = "http", obj = good } }
  local id = msg.ids[1]
  local fds = { fdpass.dup(good), fdpass.dup(other), fdpass.dup(good) }
  collectgarbage("stop")
  local before = fos.fdcount()
  local listeners, claimed, unclaimed = P.claim({ names = { "http", "http", 7 }, ids = { id, id, id } }, fds)
  local after = fos.fdcount()
  collectgarbage("restart")
  lu.assertEquals(after, before - 2, "the two liars are not closed")
  lu.assertEquals(claimed, { "http" })
  lu.assertEquals(unclaimed, { "http", "7" })
  lu.assertEquals(#listeners.http, 1)
  lu.assertEquals(fdpass.info(listeners.http[1]).addr, fdpass.info(good).addr)
  listeners.http[1]:close()
  good:close()
  other:close()
end

T.test_connections_pair_entries_with_descriptors_and_close_the_unpaired = function()
  local ends, fds = {}, {}
  for i = 1, 3 do ends[i], fds[i] = assert(fdpass.socketpair("stream")) end
  local list = P.connections({ t = "CONNS", conns = { { name = "a", buffered = "x" }, { name = "b", buffered = 5 } } },
    fds)
  lu.assertEquals(#list, 2)
  lu.assertEquals({ list[1].name, list[1].buffered, list[2].name, list[2].buffered }, { "a", "x", "b", "" })
  lu.assertEquals(select(3, ends[3]:recvmsg(16, 0, 2)), "EOF") -- closed at once, not by the collector
  local x, y = assert(fdpass.socketpair("stream"))
  local one = P.connections({ t = "CONN", name = "c" }, { y, list[1].fd })
  lu.assertEquals({ #one, one[1].name, one[1].buffered }, { 1, "c", "" })
  lu.assertEquals(select(3, ends[1]:recvmsg(16, 0, 2)), "EOF") -- the extra one of CONN
  one[1].fd:close()
  list[2].fd:close()
  x:close()
  H.close_all(ends)
end

-- CONNS in columns (what handoff_all sends): names shared or per
-- connection, buffered and meta only where there are any; through the
-- codec and back. A count that disagrees with the descriptors closes them all.
T.test_conns_in_columns_round_trip_and_a_wrong_count_closes_every_descriptor = function()
  collectgarbage("stop")
  local before = fos.fdcount()
  local function pairs_of(n)
    local mine, theirs = {}, {}
    for i = 1, n do mine[i], theirs[i] = assert(fdpass.socketpair("stream")) end
    return mine, theirs
  end
  local mine, theirs = pairs_of(3)
  local list = { { name = "http", conn = theirs[1], buffered = "GET /" }, { name = "http", conn = theirs[2] },
    { name = "http", conn = theirs[3], meta = { id = 7 } } }
  local msg, fds = P.conns_columns(list)
  lu.assertEquals(msg.name, "http")
  lu.assertNil(msg.names)
  lu.assertEquals(#fds, 3)
  local got = P.connections(P.decode(P.encode(msg)), fds)
  lu.assertEquals(#got, 3)
  lu.assertEquals({ got[1].name, got[1].buffered, got[2].buffered, got[3].meta.id }, { "http", "GET /", "", 7 })
  list[2].name = "admin"
  msg = P.conns_columns(list)
  lu.assertNil(msg.name)
  got = P.connections(P.decode(P.encode(msg)), { theirs[1], theirs[2], theirs[3] })
  lu.assertEquals({ got[1].name, got[2].name, got[3].name }, { "http", "admin", "http" })
  -- the count says 3, two descriptors came: none adopted, both closed now
  local d1, d2 = fdpass.dup(theirs[1]), fdpass.dup(theirs[2])
  local during = fos.fdcount()
  lu.assertEquals(P.connections(P.decode(P.encode(msg)), { d1, d2 }), {})
  lu.assertEquals(fos.fdcount(), during - 2)
  for i = 1, 3 do mine[i]:close(); theirs[i]:close() end
  lu.assertEquals(fos.fdcount(), before)
  collectgarbage("restart")
end

T.test_cause_is_the_line_before_the_traceback_without_the_interpreter = function()
  lu.assertEquals(P.cause("lua5.4: app.lua:136: unexpected symbol near '='\nstack traceback:\n\t[C]: in ?\n"),
    "app.lua:136: unexpected symbol near '='")
  lu.assertEquals(P.cause("starting\nluajit: x.lua:1: boom\nstack traceback:\n"), "x.lua:1: boom")
  lu.assertEquals(P.cause("one\ntwo\n\n"), "two")
  lu.assertNil(P.cause(""))
  lu.assertNil(P.cause(nil))
end

T.test_one_failure_shape_and_its_line = function()
  local f = P.failure { phase = "hello", reason = "recv: peer closed the channel", pid = 1234,
    exit = { how = "exit", code = 1 }, exited = true,
    stderr = "lua5.4: app.lua:136: unexpected symbol near '='\nstack traceback:\n\t[C]: in ?\n" }
  lu.assertEquals(tostring(f), "new copy 1234 exited 1 before HELLO: app.lua:136: unexpected symbol near '='")
  lu.assertEquals({ f.phase, f.pid, f.exit.how, f.exit.code, f.reason },
    { "hello", 1234, "exit", 1, "recv: peer closed the channel" })
  lu.assertTrue(P.is_failure(f))
  lu.assertEquals(tostring(P.failure { phase = "ready", reason = "new copy refused: bad config", pid = 7,
    exit = { how = "signal", code = 15 } }), "new copy 7 failed before READY: new copy refused: bad config")
  lu.assertEquals(tostring(P.failure { phase = "commit", reason = "x", pid = 7, exited = true,
    exit = { how = "signal", code = 9 } }), "new copy 7 killed by signal 9 before COMMITTED: x")
  lu.assertEquals(tostring(P.failure { phase = "spawn", reason = "spawn: No such file or directory" }),
    "new copy could not start: spawn: No such file or directory")
end

-- ---- the counted log ----------------------------------------------------------------

T.test_a_repeated_line_is_written_once_then_as_a_count = function()
  local lines = {}
  local c = poller.counted(function(l) lines[#lines + 1] = l end, "refused %s strangers")
  for _ = 1, 27628 do c.bump() end
  lu.assertTrue(#lines <= 3, #lines .. " lines for one repeated event")
  lu.assertEquals(lines[1], "refused 1 strangers")
  c.flush()
  lu.assertEquals(lines[#lines], "refused 27,628 strangers")
  local n = #lines
  c.flush()
  lu.assertEquals(#lines, n, "a flush with nothing new wrote a line")
end

-- ---- epoll and pidfd ------------------------------------------------------------------

T.test_epoll_returns_the_keys_of_what_is_ready = function()
  local ep = assert(loop.epoll())
  local a, b = assert(fdpass.socketpair())
  local r, w = assert(fos.pipe())
  assert(ep:add(a, "a"))
  assert(ep:add(r, { name = "pipe" }))
  assert(ep:add(b, "b", "w"))
  local keys, events = ep:wait(0)
  lu.assertEquals({ keys, events }, { { "b" }, { "w" } })
  assert(ep:del(b))
  assert(b:send("x"))
  keys, events = ep:wait(0)
  lu.assertEquals({ keys, events }, { { "a" }, { "r" } })
  assert(ep:mod(a, "rw"))
  lu.assertEquals(select(2, ep:wait(0)), { "rw" })
  assert(ep:del(a))
  lu.assertEquals(#ep:wait(0.05), 0)
  w:close() -- end of file: readable
  keys = ep:wait(1)
  lu.assertEquals(keys[1].name, "pipe")
  local ok, err, code = ep:add(r, "again")
  lu.assertEquals({ ok, code }, { nil, "EEXIST" }, tostring(err))
  lu.assertErrorMsgContains("a key", ep.add, ep, a, nil)
  lu.assertErrorMsgContains("events must be", ep.add, ep, a, "k", "x")
  local fd = ep:getfd()
  lu.assertEquals({ ep:pollfd(), ep:fileno() }, { fd, fd })
  ep:close()
  lu.assertErrorMsgContains("closed fdpass.epoll", ep.wait, ep, 0)
  H.close_all { a, b, r }
end

T.test_a_pidfd_is_readable_once_the_process_is_a_zombie = function()
  local p = assert(fdpass.spawn { "sleep", "0.2" })
  local pidfd, err, code = fos.pidfd_open(p:pid())
  if code == "ENOSYS" then -- before Linux 5.3, or under valgrind: the documented answer
    lu.assertStrContains(err, "pidfd_open")
    p:wait()
    H.skip("pidfd_open: ENOSYS here (the upgrade falls back to a bounded /proc wait)")
  end
  assert(pidfd, err)
  lu.assertTrue(fdpass.info(pidfd).cloexec)
  lu.assertEquals(#loop.poll({ pidfd }, nil, 0), 0, "readable while it runs")
  lu.assertEquals(#loop.poll({ pidfd }, nil, 5), 1, "not readable after it exited")
  lu.assertTrue(p:kill(0), "reaped already?") -- a zombie: still there, and the pidfd says gone
  lu.assertEquals({ p:wait(1) }, { "exit", 0 })
  pidfd:close()
  local unused = 4194303 -- the highest pid Linux can give (pid_max 2^22)
  if not fos.kill(unused, 0) then
    local none, _, ecode = fos.pidfd_open(unused)
    lu.assertEquals({ none, ecode }, { nil, "ESRCH" })
  end
end

TestUpgradeProtocol = H.suite(T)

H.run()
