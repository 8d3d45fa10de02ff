-- Framed messages (ch:send / ch:recv): any number of descriptors (0, 1, 253,
-- 254, 5000) and any payload (empty, binary, 1 MiB), on both kinds of
-- socket; order; real processes; limits; would-block and timeouts, with the
-- pending queue and flush; EOF, EPIPE, a peer dying mid-message; closed
-- objects and wrong arguments.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local socket = require "socket"

local now = socket.gettime
local KINDS = { "seqpacket", "stream" }

local assert_fails, assert_raises = H.assert_fails, H.assert_raises

-- Every byte value, NULs included, repeated to n bytes.
local function binary(n)
  local t = {}
  for i = 0, 255 do t[#t + 1] = string.char(i) end
  local block = table.concat(t) .. "\0\0\0end\0"
  return block:rep(math.floor(n / #block) + 1):sub(1, n)
end

-- In one process: sends with timeout 0 and, while the kernel buffer is
-- full, alternates recv(0) and flush(0) until the message is whole.
-- Returns what recv returned and how many times the send had to wait.
local function pump(a, b, data, fds)
  local ok, msg, code = a:send(data, fds, 0)
  local waits = 0
  if not ok then
    lu.assertEquals(code, "EAGAIN", msg)
    lu.assertEquals(a:pending(), 1)
  end
  for _ = 1, 100000 do
    local got, gfds, gcode = b:recv(0)
    if got then
      lu.assertEquals(a:pending(), 0)
      return got, gfds, waits
    end
    lu.assertEquals(gcode, "EAGAIN", gfds)
    if a:pending() > 0 then
      waits = waits + 1
      local fok, fmsg, fcode = a:flush(0)
      if not fok then lu.assertEquals(fcode, "EAGAIN", fmsg) end
    end
  end
  lu.fail("message never completed")
end

local T = {}

for _, kind in ipairs(KINDS) do
  local function pair()
    local a, b = assert(fdpass.socketpair(kind))
    lu.assertEquals(a:socktype(), kind)
    return a, b
  end

  -- n descriptors and a payload in one message, each file in its place.
  local function round_trip(n)
    local a, b = pair()
    local fds = H.numbered_fds(n)
    local payload = ("message with %d descriptors"):format(n)
    lu.assertEquals(a:send(payload, fds), true)
    lu.assertEquals(a:pending(), 0)
    H.close_all(fds)
    local data, got = b:recv(5)
    lu.assertEquals(data, payload)
    if n > 0 then
      local info = got[1]:info()
      lu.assertTrue(info.cloexec, "received descriptors are close-on-exec")
      lu.assertEquals(info.kind, "file")
    end
    H.check_numbered(got, n)
    -- nothing else came
    assert_fails("EAGAIN", "recv", b:recv(0))
    a:close()
    b:close()
  end

  for _, n in ipairs({ 0, 1, 253, 254 }) do
    T[("test_%s_%d_fds"):format(kind, n)] = function() round_trip(n) end
  end

  T["test_" .. kind .. "_5000_fds"] = function()
    local soft, hard = fos.nofile()
    assert(fos.nofile(hard))
    local ok, err = pcall(function()
      local need = 5000 * 2 + fos.fdcount() + 64
      lu.assertTrue(hard >= need, "hard RLIMIT_NOFILE " .. hard .. " < " .. need)
      local a, b = pair()
      lu.assertEquals(b:limits({ max_fds = 5000 }).max_fds, 5000)
      local fds = H.numbered_fds(5000)
      -- in-process: records pile up in the socket, so never wait on it
      local data, got = pump(a, b, "five thousand", fds)
      H.close_all(fds)
      lu.assertEquals(data, "five thousand")
      H.check_numbered(got, 5000)
      a:close()
      b:close()
    end)
    fos.nofile(soft)
    if not ok then error(err, 0) end
  end

  T["test_" .. kind .. "_5000_fds_over_default_limit"] = function()
    local a, b = pair()
    lu.assertEquals(b:limits().max_fds, 4096)
    local fds = H.fds(5000)
    lu.assertEquals(a:send("too many", fds, 0), true)
    H.close_all(fds)
    local msg = assert_fails("EMSGSIZE", "recv", b:recv(0))
    lu.assertStrContains(msg, "5000")
    lu.assertStrContains(msg, "4096")
    assert_fails("EBROKEN", "recv", b:recv(0))
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_empty_payload"] = function()
    local a, b = pair()
    lu.assertEquals(a:send(""), true)
    local data, fds = b:recv(2)
    lu.assertEquals(data, "")
    lu.assertEquals(fds, {})
    -- empty with descriptors: the header carries them
    local f = H.numbered_fds(2)
    lu.assertEquals(a:send("", f), true)
    H.close_all(f)
    data, fds = b:recv(2)
    lu.assertEquals(data, "")
    H.check_numbered(fds, 2)
    -- an empty message is not EOF
    lu.assertEquals(a:send("", {}), true)
    lu.assertEquals({ b:recv(2) }, { "", {} })
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_binary_payload_with_nuls"] = function()
    local a, b = pair()
    local data = binary(1000) .. "FDPS\1\0\0\0" -- a header's bytes inside a payload
    local f = H.numbered_fds(3)
    lu.assertEquals(a:send(data, f), true)
    lu.assertEquals(a:send("\0"), true)
    H.close_all(f)
    local got, fds = b:recv(2)
    lu.assertEquals(#got, #data)
    lu.assertTrue(got == data, "payload differs")
    H.check_numbered(fds, 3)
    lu.assertEquals({ b:recv(2) }, { "\0", {} })
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_1mib_with_fds_in_one_process"] = function()
    local a, b = pair()
    local data = binary(1024 * 1024)
    local f = H.numbered_fds(600)
    local got, fds, waits = pump(a, b, data, f)
    H.close_all(f)
    lu.assertTrue(waits > 0, "1 MiB fitted in the socket buffer: the queue was not exercised")
    assert_fails("EAGAIN", "recv", b:recv(0))
    lu.assertEquals(#got, #data)
    lu.assertTrue(got == data, "payload differs")
    H.check_numbered(fds, 600)
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_message_order"] = function()
    local a, b = pair()
    local sent = {}
    -- different sizes and descriptor counts, small enough not to block
    for i = 1, 60 do
      local n = i % 4
      local fds = H.numbered_fds(n, "m" .. i .. "/")
      local data = ("%d:"):format(i) .. ("x"):rep((i * 37) % 300)
      assert(a:send(data, fds, 2))
      H.close_all(fds)
      sent[i] = { data, n }
    end
    for i = 1, 60 do
      local data, fds = b:recv(2)
      lu.assertEquals(data, sent[i][1], "message " .. i)
      H.check_numbered(fds, sent[i][2], "m" .. i .. "/")
    end
    assert_fails("EAGAIN", "recv", b:recv(0))
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_mixed_descriptor_sources"] = function()
    local a, b = pair()
    local name = os.tmpname()
    local w = assert(io.open(name, "w"))
    w:write("io file")
    w:close()
    local iof = assert(io.open(name, "r"))
    os.remove(name)
    local c, d = pair()
    local own = H.numbered_fds(1)[1]
    -- an io file, a channel, an fd object and a plain integer
    assert(a:send("mixed", { iof, c, own, own:fileno() }))
    local _, fds = b:recv(2)
    lu.assertEquals(#fds, 4)
    local f1 = fds[1]:file("r")
    lu.assertEquals(f1:read("*a"), "io file")
    f1:close()
    lu.assertEquals(fds[2]:info().socktype, kind)
    local ch = fdpass.channel(fds[2]) -- the received end works as c did
    assert(ch:send("via copy"))
    lu.assertEquals((d:recv(2)), "via copy")
    local f3, f4 = fds[3]:file("r"), fds[4]:file("r")
    lu.assertEquals(f3:read("*l"), "file 1")
    f4:seek("set", 0) -- the same open file as the third: it has moved on
    lu.assertEquals(f4:read("*l"), "file 1")
    f3:close()
    f4:close()
    -- the sender's objects are untouched
    lu.assertEquals(io.type(iof), "file")
    lu.assertEquals(own:info().kind, "file")
    iof:close()
    own:close()
    ch:close()
    for _, x in ipairs({ a, b, c, d }) do x:close() end
  end

  T["test_" .. kind .. "_would_block_and_timeout"] = function()
    local a, b = pair()
    local t0 = now()
    local msg = assert_fails("EAGAIN", "recv", b:recv(0))
    lu.assertStrContains(msg, "recv: ")
    lu.assertTrue(now() - t0 < 0.5)
    t0 = now()
    assert_fails("ETIMEDOUT", "recv", b:recv(0.05))
    local dt = now() - t0
    lu.assertTrue(dt >= 0.045 and dt < 2, "waited " .. dt)
    -- the channel still works afterwards
    assert(a:send("late"))
    lu.assertEquals((b:recv(0)), "late")
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_partial_message_survives_timeouts"] = function()
    -- a receiver that times out in the middle of a message keeps what it
    -- has: nothing is lost, duplicated or leaked
    local a, b = pair()
    local data = binary(300000)
    local f = H.numbered_fds(300)
    local ok, _, code = a:send(data, f, 0)
    lu.assertNil(ok)
    lu.assertEquals(code, "EAGAIN")
    H.close_all(f) -- the queue holds its own copies
    assert_fails("ETIMEDOUT", "recv", b:recv(0.02)) -- part of it read
    assert_fails("EAGAIN", "recv", b:recv(0))
    a:flush(0)
    local got, fds
    for _ = 1, 1000 do
      got, fds = b:recv(0)
      if got then break end
      a:flush(0)
    end
    lu.assertTrue(got == data, "payload differs")
    H.check_numbered(fds, 300)
    lu.assertEquals(a:pending(), 0)
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_full_buffer_pending_then_flush"] = function()
    local a, b = pair()
    local big = binary(1024 * 1024)
    local f = H.numbered_fds(5)
    assert_fails("EAGAIN", "send", a:send(big, f, 0))
    lu.assertEquals(a:pending(), 1)
    -- a second message queues behind the first, in order
    local t0 = now()
    local g = H.numbered_fds(1, "second ")
    assert_fails("ETIMEDOUT", "send", a:send("second", g, 0.05))
    g[1]:close()
    local dt = now() - t0
    lu.assertTrue(dt >= 0.045 and dt < 2, "waited " .. dt)
    lu.assertEquals(a:pending(), 2)
    assert_fails("ETIMEDOUT", "flush", a:flush(0.02))
    lu.assertEquals(a:pending(), 2)
    H.close_all(f)
    -- a receiver in another process reads both and reports what it got
    local r = H.child([[
      local ch = fdpass.channel(3)
      for i = 1, 2 do
        local data, fds = ch:recv(20)
        if not data then io.stderr:write(fds, "\n") os.exit(2) end
        local parts = { #data, data:sub(1, 8):byte(1, -1) }
        for _, fd in ipairs(fds) do
          local fh = fd:file("r"); parts[#parts + 1] = fh:read("*l"); fh:close()
        end
        assert(ch:send(table.concat(parts, ",")))
      end
      -- exactly those two: nothing duplicated behind them
      local _, _, code = ch:recv(0.2)
      assert(ch:send(tostring(code)))
      os.exit(0)
    ]], { [3] = b })
    b:close()
    lu.assertEquals(a:flush(20), true)
    lu.assertEquals(a:pending(), 0)
    lu.assertEquals((a:recv(20)), "1048576,0,1,2,3,4,5,6,7,file 1,file 2,file 3,file 4,file 5")
    lu.assertEquals((a:recv(20)), "6,115,101,99,111,110,100,second 1")
    lu.assertEquals((a:recv(20)), "ETIMEDOUT")
    H.expect_exit(r, 0)
    assert_fails("EOF", "recv", a:recv(5))
    a:close()
  end

  T["test_" .. kind .. "_send_after_pending_flushes_first"] = function()
    local a, b = pair()
    local big = binary(400000)
    assert_fails("EAGAIN", "send", a:send(big, nil, 0))
    lu.assertEquals(a:pending(), 1)
    local r = H.child([[
      local ch = fdpass.channel(3)
      local one = assert(ch:recv(20))
      local two = assert(ch:recv(20))
      assert(ch:send(#one .. "/" .. two))
      os.exit(0)
    ]], { [3] = b })
    b:close()
    -- a blocking send finishes the queue before its own message
    lu.assertEquals(a:send("after", nil, 20), true)
    lu.assertEquals(a:pending(), 0)
    lu.assertEquals((a:recv(20)), "400000/after")
    H.expect_exit(r, 0)
    a:close()
  end

  T["test_" .. kind .. "_eof_on_clean_close"] = function()
    local a, b = pair()
    assert(a:send("last words", H.fds(0)))
    a:close()
    lu.assertEquals((b:recv(2)), "last words")
    local msg = assert_fails("EOF", "recv", b:recv(2))
    lu.assertEquals(msg, "recv: peer closed the channel")
    -- EOF is not a protocol error: it stays EOF
    assert_fails("EOF", "recv", b:recv(0))
    b:close()
  end

  T["test_" .. kind .. "_peer_closes_with_our_messages_unread"] = function()
    -- the kernel reports ECONNRESET once to the survivor of a socket closed
    -- with data unread in it; for a channel that is still the peer closing
    local a, b = pair()
    assert(b:send("its last words", H.numbered_fds(1)))
    assert(a:send("never read", H.numbered_fds(2)))
    b:close()
    local data, fds = a:recv(1) -- what it sent first
    lu.assertEquals(data, "its last words")
    H.check_numbered(fds, 1)
    assert_fails("EOF", "recv", a:recv(1))
    assert_fails("EOF", "recv", a:recv(1))
    a:close()
    -- in the middle of a message: ETRUNC, as for any close there
    a, b = pair()
    local f = H.fds(2)
    assert(b:sendmsg(("FDPS" .. H.header_fields(1, 1, 2, 1, 2, 2)) .. "x", f))
    H.close_all(f)
    assert(a:send("never read"))
    b:close()
    assert_fails("ETRUNC", "recv", a:recv(1))
    a:close()
    -- raw: EOF too
    a, b = pair()
    assert(a:sendmsg("never read"))
    b:close()
    assert_fails("EOF", "recvmsg", a:recvmsg(100, 0, 1))
    a:close()
    -- and sending to it: EPIPE, every time
    for _, raw in ipairs({ false, true }) do
      a, b = pair()
      assert(a:send("never read"))
      b:close()
      if raw then
        assert_fails("EPIPE", "sendmsg", a:sendmsg("x", nil, 1))
        assert_fails("EPIPE", "sendmsg", a:sendmsg("x", nil, 1))
      else
        assert_fails("EPIPE", "send", a:send("x", nil, 1))
        assert_fails("EBROKEN", "send", a:send("x", nil, 1))
      end
      a:close()
    end
  end

  T["test_" .. kind .. "_send_to_closed_peer_is_epipe"] = function()
    local a, b = pair()
    b:close()
    assert_fails("EPIPE", "send", a:send("anyone?", H.numbered_fds(1)))
    -- still alive (no SIGPIPE); the send direction is broken for good
    assert_fails("EBROKEN", "send", a:send("again"))
    assert_fails("EBROKEN", "flush", a:flush())
    -- and a child that does the same is not killed by SIGPIPE
    local c, d = pair()
    local p = H.child([[
      local ch = fdpass.channel(3)
      assert(ch:recv(10))
      assert(select(3, ch:recv(10)) == "EOF") -- the parent has closed its end
      local ok, msg, code = ch:send("x")
      local ok2, msg2, code2 = ch:send("y")
      os.exit(code == "EPIPE" and code2 == "EBROKEN" and 0 or 3)
    ]], { [3] = d })
    d:close()
    assert(c:send("go"))
    c:close()
    H.expect_exit(p, 0)
    a:close()
  end

  T["test_" .. kind .. "_peer_gone_with_message_queued"] = function()
    local a, b = pair()
    local f = H.numbered_fds(300)
    assert_fails("EAGAIN", "send", a:send(binary(1024 * 1024), f, 0))
    H.close_all(f)
    lu.assertEquals(a:pending(), 1)
    b:close() -- with records unread in it
    assert_fails("EPIPE", "flush", a:flush(1))
    lu.assertEquals(a:pending(), 0, "the queue and its duplicates are dropped")
    assert_fails("EBROKEN", "flush", a:flush(1))
    assert_fails("EBROKEN", "send", a:send("x"))
    a:close()
  end

  T["test_" .. kind .. "_child_fills_a_pipe_it_received"] = function()
    -- a FIFO opened read-write is a pipe we hold both ends of
    local name = os.tmpname()
    os.remove(name)
    assert(H.execute("mkfifo -m 0600 '" .. name .. "'"))
    local fifo = assert(io.open(name, "r+"))
    os.remove(name)
    local a, proc = H.peer([[
local fos = require "fdpass.os"
      local data, fds = assert(ch:recv(10))
      local info = fds[1]:info()
      local w = fds[1]:file("w")
      w:write(data, " from ", info.kind, " pid ", fos.getpid())
      w:close()
      assert(ch:send("written", nil, 10))
      os.exit(0)
    ]], kind)
    assert(a:send("hello", { fifo }, 10))
    lu.assertEquals({ a:recv(10) }, { "written", {} })
    H.expect_exit(proc, 0)
    local line = fifo:read(#"hello from pipe pid ")
    lu.assertEquals(line, "hello from pipe pid ")
    fifo:close()
    a:close()
  end

  T["test_" .. kind .. "_child_sends_files_and_echoes"] = function()
    local a, proc = H.peer([[
      -- receives 300 files, answers with their contents, then sends 260 of its own
      local data, fds = assert(ch:recv(10))
      local parts = {}
      for i, fd in ipairs(fds) do
        local f = fd:file("r"); parts[i] = f:read("*l"); f:close()
      end
      assert(ch:send(data .. "|" .. table.concat(parts, ","), nil, 10))
      local mine = {}
      for i = 1, 260 do
        local name = os.tmpname()
        local f = assert(io.open(name, "w")); f:write("child " .. i); f:close()
        mine[i] = assert(io.open(name, "r")); os.remove(name)
      end
      assert(ch:send("from child", mine, 10))
      for _, f in ipairs(mine) do f:close() end
      assert(select(3, ch:recv(10)) == "EOF")
      os.exit(0)
    ]], kind)
    local fds = H.numbered_fds(300)
    assert(a:send("three hundred", fds, 10))
    H.close_all(fds)
    local expect = {}
    for i = 1, 300 do expect[i] = "file " .. i end
    lu.assertEquals((a:recv(10)), "three hundred|" .. table.concat(expect, ","))
    local data, got = a:recv(10)
    lu.assertEquals(data, "from child")
    H.check_numbered(got, 260, "child ")
    a:close()
    H.expect_exit(proc, 0)
  end

  T["test_" .. kind .. "_1mib_across_processes"] = function()
    local a, proc = H.peer([[
      local data, fds = assert(ch:recv(20))
      assert(ch:send(data:reverse(), fds, 20))
      for _, f in ipairs(fds) do f:close() end
      os.exit(0)
    ]], kind)
    local data = binary(1024 * 1024 + 7)
    local fds = H.numbered_fds(254)
    assert(a:send(data, fds, 20))
    H.close_all(fds)
    local back, got = a:recv(20)
    lu.assertTrue(back == data:reverse(), "payload differs")
    H.check_numbered(got, 254)
    H.expect_exit(proc, 0)
    a:close()
  end

  T["test_" .. kind .. "_payload_limit_is_emsgsize"] = function()
    local a, b = pair()
    lu.assertEquals(b:limits({ max_payload = 100 }), { max_payload = 100, max_fds = 4096 })
    local f = H.numbered_fds(3)
    assert(a:send(("y"):rep(100), f)) -- exactly the limit passes
    H.check_numbered(select(2, b:recv(2)), 3)
    assert(a:send(("y"):rep(101), f))
    H.close_all(f)
    local msg = assert_fails("EMSGSIZE", "recv", b:recv(2))
    lu.assertStrContains(msg, "101")
    -- the stream of records is out of step now: the channel says so
    local msg2 = assert_fails("EBROKEN", "recv", b:recv(2))
    lu.assertStrContains(msg2, "recv: ")
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_fd_limit_is_emsgsize"] = function()
    local a, b = pair()
    b:limits({ max_fds = 2 })
    lu.assertEquals(b:limits().max_fds, 2)
    lu.assertEquals(b:limits().max_payload, 16 * 1024 * 1024)
    local f = H.numbered_fds(3)
    assert(a:send("two", { f[1], f[2] }))
    assert(a:send("three", f))
    H.close_all(f)
    H.check_numbered(select(2, b:recv(2)), 2)
    assert_fails("EMSGSIZE", "recv", b:recv(2))
    assert_fails("EBROKEN", "recv", b:recv(2))
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_peer_dies_mid_message"] = function()
    -- the child writes a header announcing 100 bytes and 1 descriptor,
    -- then only 10 of the bytes, and exits
    local a, proc = H.peer([[
      local f = assert(io.open("/dev/null"))
      local head = "FDPS" .. require("helpers").header_fields(1, 0, 1, 100, 100, 1)
      local n = assert(ch:sendmsg(head .. ("z"):rep(10), { f }, 5))
      os.exit(n == 30 and 0 or 5)
    ]], kind)
    H.expect_exit(proc, 0)
    if kind == "stream" then
      assert_fails("ETRUNC", "recv", a:recv(5))
    else
      -- one seqpacket record that carries less than it announces
      assert_fails("EPROTO", "recv", a:recv(5))
    end
    assert_fails("EBROKEN", "recv", a:recv(0))
    a:close()
  end

  T["test_" .. kind .. "_peer_dies_between_records"] = function()
    -- a first record that says more follow, then the peer is gone
    local a, proc = H.peer([[
      local f = assert(io.open("/dev/null"))
      local head = "FDPS" .. require("helpers").header_fields(1, 1, 1, 5, 10, 2)
      assert(ch:sendmsg(head .. "hello", { f }, 5))
      os.exit(0)
    ]], kind)
    H.expect_exit(proc, 0)
    assert_fails("ETRUNC", "recv", a:recv(5))
    assert_fails("EBROKEN", "recv", a:recv(0))
    a:close()
  end

  T["test_" .. kind .. "_wrong_arguments_raise"] = function()
    local a, b = pair()
    assert_raises("bad self to 'channel:send' (fdpass.channel expected, got number)", a.send, 123, "x")
    assert_raises("fdpass.channel expected", a.send, {}, "x")
    assert_raises("string expected", a.send, a, {})
    assert_raises("string expected", a.send, a, nil)
    assert_raises("table expected", a.send, a, "x", 5)
    assert_raises("cannot take a descriptor from a string", a.send, a, "x", { "stdin" })
    assert_raises("descriptor must be a non-negative integer", a.send, a, "x", { -1 })
    assert_raises("descriptor must be a non-negative integer", a.send, a, "x", { 1.5 })
    local f = H.numbered_fds(1)[1]
    f:close()
    assert_raises("closed fdpass.fd", a.send, a, "x", { f })
    -- a bad element after 300 good ones: raised, nothing sent, nothing leaked
    local many = H.fds(300)
    many[301] = {}
    assert_raises("cannot take a descriptor from a table", a.send, a, "x", many)
    many[301] = nil
    H.close_all(many)
    assert_raises("timeout must be nil or >= 0", a.send, a, "x", nil, -1)
    assert_raises("number expected", a.send, a, "x", nil, "soon")
    assert_raises("number expected", a.recv, b, "soon")
    assert_raises("timeout must be nil or >= 0", a.recv, b, -0.5)
    assert_raises("timeout must be nil or >= 0", a.flush, a, -1)
    assert_raises("table expected", a.limits, a, 5)
    assert_raises("limits must be positive", a.limits, a, { max_fds = -1 })
    assert_raises("number has no integer representation", a.limits, a, { max_fds = 1.5 })
    -- 0 is not "no limit" nor "no descriptors": it is refused, not ignored
    assert_raises("limits must be positive", a.limits, a, { max_fds = 0 })
    assert_raises("limits must be positive", a.limits, a, { max_payload = 0 })
    lu.assertEquals(a:limits({}), { max_payload = 16 * 1024 * 1024, max_fds = 4096 })
    local closed = assert(io.open("/dev/null"))
    closed:close()
    assert_raises("attempt to use a closed file", a.send, a, "x", { closed })
    assert_raises("invalid option 'dgram'", fdpass.socketpair, "dgram")
    -- nothing went out
    assert_fails("EAGAIN", "recv", b:recv(0))
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_closed_channel_raises"] = function()
    local a, b = pair()
    lu.assertEquals(a:close(), true)
    lu.assertEquals(tostring(a), "fdpass.channel (closed)")
    for _, m in ipairs({ "send", "recv", "flush", "pending", "sendmsg", "recvmsg",
                         "peercred", "getfd", "socktype", "limits", "close" }) do
      assert_raises("attempt to use a closed fdpass.channel", a[m], a, "x")
    end
    -- as a descriptor to send, too
    assert_raises("attempt to use a closed fdpass.channel", b.send, b, "x", { a })
    -- and a received fd object once closed
    local c, d = pair()
    assert(c:send("one", H.numbered_fds(1)))
    local _, fds = d:recv(2)
    fds[1]:close()
    assert_raises("attempt to use a closed fdpass.fd", fds[1].fileno, fds[1])
    assert_raises("attempt to use a closed fdpass.fd", fds[1].file, fds[1], "r")
    b:close()
    c:close()
    d:close()
  end

  T["test_" .. kind .. "_receiver_dropped_mid_message_leaks_nothing"] = function()
    for _, how in ipairs({ "close", "gc" }) do
      local a, b = pair()
      local f = H.fds(300)
      assert_fails("EAGAIN", "send", a:send(binary(400000), f, 0))
      H.close_all(f)
      local before = fos.fdcount()
      assert_fails("EAGAIN", "recv", b:recv(0)) -- takes the first records
      lu.assertTrue(fos.fdcount() >= before + 253, how .. ": descriptors held in the partial message")
      if how == "close" then b:close() else b = nil end -- luacheck: ignore
      collectgarbage()
      collectgarbage()
      lu.assertEquals(fos.fdcount(), before - 1, how)
      a:close()
    end
  end

  T["test_" .. kind .. "_nonblocking_socket_follows_its_mode"] = function()
    -- O_NONBLOCK belongs to the open file: a process holding a duplicate
    -- of our end sets it there, and fdpass must neither wait on its own
    -- when told nothing nor change the flag back
    local a, b = pair()
    local p = assert(fdpass.spawn({ "python3", "-c",
      "import fcntl, os; fcntl.fcntl(3, fcntl.F_SETFL, fcntl.fcntl(3, fcntl.F_GETFL) | os.O_NONBLOCK)" },
      { fds = { [3] = b } }))
    lu.assertEquals({ p:wait(10) }, { "exit", 0 })
    lu.assertTrue(fdpass.info(b).nonblock)
    lu.assertFalse(fdpass.info(a).nonblock)
    local t0 = now()
    assert_fails("EAGAIN", "recv", b:recv()) -- nil: the socket's mode, which says do not wait
    lu.assertTrue(now() - t0 < 0.5)
    t0 = now()
    assert_fails("ETIMEDOUT", "recv", b:recv(0.05)) -- a timeout still waits
    lu.assertTrue(now() - t0 >= 0.045)
    assert_fails("ETIMEDOUT", "recvmsg", b:recvmsg(10, 1, 0.05))
    -- sending from the non-blocking end into a full buffer queues
    assert_fails("EAGAIN", "send", b:send(binary(1024 * 1024), H.numbered_fds(2)))
    lu.assertEquals(b:pending(), 1)
    assert_fails("EAGAIN", "flush", b:flush())
    local got, fds
    for _ = 1, 10000 do
      got, fds = a:recv(0)
      if got then break end
      b:flush(0)
    end
    lu.assertEquals(#got, 1024 * 1024)
    H.check_numbered(fds, 2)
    lu.assertEquals(b:pending(), 0)
    lu.assertTrue(fdpass.info(b).nonblock, "O_NONBLOCK changed behind our back")
    lu.assertFalse(fdpass.info(a).nonblock)
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_close_with_queued_message_leaks_nothing"] = function()
    local a, b = pair()
    local f = H.numbered_fds(300)
    assert_fails("EAGAIN", "send", a:send(binary(500000), f, 0))
    H.close_all(f)
    lu.assertEquals(a:pending(), 1)
    -- a half-read message on the other side too
    assert_fails("EAGAIN", "recv", b:recv(0))
    a:close() -- drops the queue and its duplicates
    assert_fails("ETRUNC", "recv", b:recv(2))
    b:close()
  end
end

T.test_channel_on_a_non_socket = function()
  local f = H.tempfile("not a socket")
  local ch, msg, code = fdpass.channel(f) -- refused: f keeps its descriptor
  lu.assertEquals({ ch, msg, code }, { nil, "channel: Socket operation on non-socket", "ENOTSOCK" })
  lu.assertEquals(f:info().kind, "file")
  f:close()
end

T.test_gc_of_unreceived_fd_list_closes = function()
  local a, b = fdpass.socketpair()
  assert(a:send("x", H.numbered_fds(10)))
  do
    local _, fds = b:recv(2)
    lu.assertEquals(#fds, 10)
  end -- dropped without closing: the collector must close them
  a:close()
  b:close()
end

TestChannel = H.suite(T)

H.run()
