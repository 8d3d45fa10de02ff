-- Listeners and connections: abstract names and paths, kinds, modes and the
-- umask, stale and live socket files, timeouts, unlink, peer credentials,
-- and a TCP listener that keeps serving in another process.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local socket = require "socket"

local seq = 0
local function abstract(tag)
  seq = seq + 1
  return ("@fdpass-socket-spec-%d-%s-%d"):format(fos.getpid(), tag, seq)
end

local function tmpdir()
  local d = os.tmpname()
  os.remove(d)
  assert(H.execute("mkdir -m 0700 '" .. d .. "'"))
  return d
end

local function rmtree(d)
  assert(H.execute("rm -rf '" .. d .. "'"))
end

-- `stat -c fmt path`, or nil when the path is gone.
local function stat(fmt, path)
  local p = assert(io.popen(("stat -c '%s' '%s' 2>/dev/null"):format(fmt, path)))
  local s = p:read("*l")
  p:close()
  return s
end

local function exists(path)
  return stat("%F", path) ~= nil
end

-- Asserts one connection round trip through srv on addr.
local function round_trip(srv, addr, kind)
  local c = assert(fdpass.connect(addr, 2, kind))
  local s = assert(srv:accept(2))
  assert(c:send("ping", nil, 2))
  lu.assertEquals((s:recv(2)), "ping")
  assert(s:send("pong", nil, 2))
  lu.assertEquals((c:recv(2)), "pong")
  local kc, ks = c:socktype(), s:socktype()
  c:close()
  s:close()
  return kc, ks
end

local function assert_fails(code, ok, msg, got)
  lu.assertNil(ok, "expected " .. code)
  lu.assertEquals(got, code, msg)
  return msg
end

TestSocket = H.suite {
  test_abstract_default_kind = function()
    local name = abstract("default")
    local srv = assert(fdpass.listen(name))
    lu.assertEquals(srv:address(), name)
    lu.assertEquals(tostring(srv), "fdpass.server (" .. name .. ")")
    lu.assertTrue(H.is_integer(srv:getfd()), "getfd: not an integer")
    lu.assertEquals(fdpass.info(srv).socktype, "seqpacket")
    local kc, ks = round_trip(srv, name)
    lu.assertEquals({ kc, ks }, { "seqpacket", "seqpacket" })
    lu.assertEquals(srv:close(), true)
    lu.assertEquals(tostring(srv), "fdpass.server (closed)")
    -- nobody listens any more
    assert_fails("ECONNREFUSED", fdpass.connect(name, 1))
  end,

  test_abstract_stream = function()
    local name = abstract("stream")
    local srv = assert(fdpass.listen(name, "stream"))
    lu.assertEquals(fdpass.info(srv).socktype, "stream")
    local kc, ks = round_trip(srv, name, "stream")
    lu.assertEquals({ kc, ks }, { "stream", "stream" })
    -- the table form of the same option
    local srv2 = assert(fdpass.listen(abstract("stream2"), { kind = "stream" }))
    lu.assertEquals(fdpass.info(srv2).socktype, "stream")
    srv2:close()
    srv:close()
  end,

  test_abstract_name_in_use = function()
    local name = abstract("busy")
    local srv = assert(fdpass.listen(name))
    local msg = assert_fails("EADDRINUSE", fdpass.listen(name))
    lu.assertEquals(msg:sub(1, #name + 9), "listen " .. name .. ": ")
    round_trip(srv, name) -- the first one still serves
    srv:close()
    local again = assert(fdpass.listen(name)) -- free once closed
    again:close()
  end,

  test_path_default_mode_0600 = function()
    local dir = tmpdir()
    local path = dir .. "/ctl.sock"
    local srv = assert(fdpass.listen(path))
    lu.assertEquals(stat("%F", path), "socket")
    lu.assertEquals(stat("%a", path), "600")
    lu.assertEquals(fdpass.info(srv).addr, path)
    local kc = round_trip(srv, path)
    lu.assertEquals(kc, "seqpacket")
    srv:close()
    lu.assertTrue(exists(path)) -- close does not remove the file
    rmtree(dir)
  end,

  test_path_stream_mode_0660 = function()
    local dir = tmpdir()
    local path = dir .. "/s"
    local srv = assert(fdpass.listen(path, { kind = "stream", mode = 432 }))
    lu.assertEquals(stat("%a", path), "660")
    local kc, ks = round_trip(srv, path, "stream")
    lu.assertEquals({ kc, ks }, { "stream", "stream" })
    srv:close()
    -- and a wide one: the umask of this process does not narrow it
    local path2 = dir .. "/wide"
    local srv2 = assert(fdpass.listen(path2, { mode = tonumber("777", 8) }))
    lu.assertEquals(stat("%a", path2), "777")
    srv2:close()
    rmtree(dir)
  end,

  test_path_mode_ignores_umask_000 = function()
    local dir = tmpdir()
    local sock, plain = dir .. "/u.sock", dir .. "/plain"
    local code = ([[
      local fdpass = require "fdpass"
      local srv = assert(fdpass.listen(%q))
      local f = assert(io.open(%q, "w")) -- made after listen: the umask is back
      f:close()
      srv:close()
    ]]):format(sock, plain)
    local proc = assert(fdpass.spawn({ "sh", "-c", 'umask 000; exec "$0" -e "$1"', H.lua, code }))
    H.expect_exit(proc, 0)
    lu.assertEquals(stat("%a", plain), "666") -- proves the child ran with umask 000
    lu.assertEquals(stat("%F", sock), "socket")
    lu.assertEquals(stat("%a", sock), "600")
    rmtree(dir)
  end,

  test_stale_socket_of_killed_process_is_replaced = function()
    local dir = tmpdir()
    local path = dir .. "/stale.sock"
    local ch, proc = H.peer(([[
      local srv = assert(fdpass.listen(%q))
      assert(ch:send("listening", nil, 5))
      ch:recv(30) -- killed while waiting here
    ]]):format(path))
    lu.assertEquals((ch:recv(5)), "listening")
    assert_fails("EADDRINUSE", fdpass.listen(path)) -- alive: refused
    assert(proc:kill("KILL"))
    lu.assertEquals({ proc:wait(5) }, { "signal", 9 })
    ch:close()
    lu.assertEquals(stat("%F", path), "socket") -- left behind
    assert_fails("ECONNREFUSED", fdpass.connect(path, 1))
    local srv = assert(fdpass.listen(path))
    lu.assertEquals(stat("%a", path), "600")
    round_trip(srv, path)
    lu.assertEquals(srv:unlink(), true)
    srv:close()
    rmtree(dir)
  end,

  test_live_socket_gives_eaddrinuse = function()
    local dir = tmpdir()
    local path = dir .. "/live.sock"
    local srv = assert(fdpass.listen(path, "stream"))
    local ino = stat("%i", path)
    local msg = assert_fails("EADDRINUSE", fdpass.listen(path, "stream"))
    lu.assertStrContains(msg, "listen " .. path .. ": ")
    -- a listener of the other kind is just as alive
    assert_fails("EADDRINUSE", fdpass.listen(path))
    lu.assertEquals(stat("%i", path), ino) -- not replaced
    -- the liveness probe is a datagram connect: it never lands in the
    -- live listener's accept queue
    assert_fails("EAGAIN", srv:accept(0))
    round_trip(srv, path, "stream")
    srv:close()
    rmtree(dir)
  end,

  test_regular_file_gives_eexist_and_stays = function()
    local dir = tmpdir()
    local path = dir .. "/not-a-socket"
    local f = assert(io.open(path, "w"))
    f:write("precious")
    f:close()
    local msg = assert_fails("EEXIST", fdpass.listen(path))
    lu.assertStrContains(msg, "listen " .. path)
    f = assert(io.open(path, "r"))
    lu.assertEquals(f:read("*a"), "precious")
    f:close()
    lu.assertEquals(stat("%F", path), "regular file")
    -- a directory stays too
    assert(H.execute("mkdir '" .. dir .. "/d'"))
    assert_fails("EEXIST", fdpass.listen(dir .. "/d"))
    rmtree(dir)
  end,

  test_accept_timeout = function()
    local srv = assert(fdpass.listen(abstract("timeout")))
    local t0 = socket.gettime()
    local ok, msg, code = srv:accept(0.05)
    local dt = socket.gettime() - t0
    lu.assertEquals({ ok, msg, code }, { nil, "accept: Connection timed out", "ETIMEDOUT" })
    lu.assertTrue(dt >= 0.045 and dt < 1, "accept waited " .. dt)
    assert_fails("EAGAIN", srv:accept(0)) -- 0 never waits
    srv:close()
  end,

  test_connect_timeout_on_full_backlog = function()
    local name = abstract("backlog")
    local srv = assert(fdpass.listen(name, { backlog = 1 }))
    local held, failed, dt = {}, nil, nil
    for _ = 1, 5 do
      local t0 = socket.gettime()
      local c, _, code = fdpass.connect(name, 0.1)
      if not c then
        failed, dt = code, socket.gettime() - t0
        break
      end
      held[#held + 1] = c
    end
    lu.assertEquals(failed, "ETIMEDOUT")
    lu.assertTrue(dt >= 0.09 and dt < 1, "connect waited " .. dt)
    lu.assertTrue(#held >= 1 and #held <= 3, #held .. " connections before the backlog filled")
    local s = assert(srv:accept(1)) -- room again
    local c = assert(fdpass.connect(name, 1))
    c:close()
    s:close()
    H.close_all(held)
    srv:close()
  end,

  test_connect_missing = function()
    local dir = tmpdir()
    local msg = assert_fails("ENOENT", fdpass.connect(dir .. "/nothing", 1))
    lu.assertEquals(msg, "connect " .. dir .. "/nothing: No such file or directory")
    assert_fails("ENOENT", fdpass.connect("/nonexistent-dir-fdpass/x.sock"))
    assert_fails("ECONNREFUSED", fdpass.connect(abstract("nobody"), 1))
    rmtree(dir)
  end,

  test_bad_addresses_fail = function()
    assert_fails("EINVAL", fdpass.listen(""))
    assert_fails("EINVAL", fdpass.listen("@"))
    assert_fails("ENAMETOOLONG", fdpass.listen("/tmp/" .. string.rep("a", 120)))
    assert_fails("EINVAL", fdpass.connect("", 1))
    assert_fails("ENAMETOOLONG", fdpass.connect("/tmp/" .. string.rep("b", 120), 1))
  end,

  test_bad_arguments_raise = function()
    lu.assertErrorMsgContains("string expected", fdpass.listen, nil)
    lu.assertErrorMsgContains("table or kind expected", fdpass.listen, "@x", 5)
    lu.assertErrorMsgContains("invalid option 'dgram'", fdpass.listen, "@x", "dgram")
    lu.assertErrorMsgContains("mode must be", fdpass.listen, "@x", { mode = 0 })
    lu.assertErrorMsgContains("mode must be", fdpass.listen, "@x", { mode = 4096 })
    lu.assertErrorMsgContains("timeout must be", fdpass.connect, "@x", -1)
    lu.assertErrorMsgContains("invalid option", fdpass.connect, "@x", 1, "raw")
    lu.assertErrorMsgContains("invalid option", fdpass.socketpair, "dgram")
    local srv = assert(fdpass.listen(abstract("args")))
    lu.assertErrorMsgContains("timeout must be", srv.accept, srv, -0.5)
    lu.assertErrorMsgContains("number expected", srv.accept, srv, "soon")
    srv:close()
    lu.assertErrorMsgContains("closed fdpass.server", srv.accept, srv, 0)
    lu.assertErrorMsgContains("closed fdpass.server", srv.close, srv)
    lu.assertErrorMsgContains("closed fdpass.server", srv.getfd, srv)
  end,

  test_unlink = function()
    local dir = tmpdir()
    local path = dir .. "/u.sock"
    local srv = assert(fdpass.listen(path))
    lu.assertEquals(srv:unlink(), true)
    lu.assertFalse(exists(path))
    lu.assertEquals(srv:unlink(), false) -- nothing left to remove
    assert_fails("ENOENT", fdpass.connect(path, 1))
    -- a newer server at the same path is not ours to remove
    local newer = assert(fdpass.listen(path))
    lu.assertEquals(srv:unlink(), false)
    lu.assertTrue(exists(path))
    round_trip(newer, path)
    srv:close()
    lu.assertEquals(newer:unlink(), true)
    newer:close()
    -- abstract names have no file
    local a = assert(fdpass.listen(abstract("unlink")))
    lu.assertEquals(a:unlink(), false)
    a:close()
    rmtree(dir)
  end,

  test_peercred_same_process = function()
    local a, b = assert(fdpass.socketpair())
    local pid, uid, gid = a:peercred()
    lu.assertEquals(pid, fos.getpid())
    lu.assertTrue(H.is_integer(uid), "uid: not an integer: " .. tostring(uid))
    lu.assertTrue(H.is_integer(gid), "gid: not an integer: " .. tostring(gid))
    lu.assertEquals({ b:peercred() }, { pid, uid, gid })
    a:close()
    b:close()
  end,

  test_peercred_across_processes = function()
    local name = abstract("cred")
    local srv = assert(fdpass.listen(name))
    local a, b = assert(fdpass.socketpair())
    local _, myuid, mygid = a:peercred()
    a:close()
    b:close()
    local proc = H.child(([[
local fos = require "fdpass.os"
      local c = assert(fdpass.connect(%q, 5))
      local pid = c:peercred() -- the server's pid
      assert(c:send(tostring(pid) .. " " .. fos.getpid(), nil, 5))
      assert(c:recv(5) == "bye")
    ]]):format(name))
    local c = assert(srv:accept(5))
    local pid, uid, gid = c:peercred()
    lu.assertEquals(pid, proc:pid())
    lu.assertEquals({ uid, gid }, { myuid, mygid })
    lu.assertEquals((c:recv(5)), fos.getpid() .. " " .. proc:pid())
    assert(c:send("bye", nil, 5))
    H.expect_exit(proc, 0)
    c:close()
    srv:close()
  end,

  test_peercred_other_uid = function()
    local as_nobody = H.as_nobody()
    local name = abstract("nobody")
    local srv = assert(fdpass.listen(name))
    local proc = H.child(([[
      local c = assert(fdpass.connect(%q, 5))
      assert(c:send("hello", nil, 5))
      assert(c:recv(5) == "bye")
    ]]):format(name), nil, nil, { prefix = as_nobody })
    local c, msg = srv:accept(5)
    if not c then
      proc:kill("KILL")
      proc:wait(5)
      lu.fail("no connection from the child running as nobody: " .. tostring(msg))
    end
    local pid, uid, gid = c:peercred()
    lu.assertEquals({ pid, uid, gid }, { proc:pid(), 65534, 65534 })
    lu.assertEquals((c:recv(5)), "hello")
    assert(c:send("bye", nil, 5))
    H.expect_exit(proc, 0)
    c:close()
    srv:close()
  end,

  test_tcp_listener_serves_in_other_process = function()
    local tcp = assert(socket.bind("127.0.0.1", 0))
    local _, port = tcp:getsockname()
    local ch, proc = H.peer([[
      local socket = require "socket"
      local _, fds = assert(ch:recv(5))
      local info = fds[1]:info()
      assert(info.family == "inet" and info.listening, "not a listener")
      local s = socket.tcp()
      s:setfd(fds[1]:detach())
      assert(s:listen()) -- master -> server; the socket already listens
      s:settimeout(10)
      assert(ch:send("adopted " .. info.addr, nil, 5))
      local c = assert(s:accept())
      c:settimeout(10)
      local line = assert(c:receive("*l"))
      assert(c:send(line == "ping" and "pong\n" or ("got " .. line .. "\n")))
      c:close()
      s:close()
    ]])
    assert(ch:send("listener", { tcp }, 5))
    tcp:close() -- from now on only the child holds it
    lu.assertEquals((ch:recv(5)), "adopted 127.0.0.1:" .. port)
    local c = assert(socket.connect("127.0.0.1", port))
    c:settimeout(10)
    assert(c:send("ping\n"))
    lu.assertEquals(c:receive("*l"), "pong")
    c:close()
    H.expect_exit(proc, 0)
    ch:close()
    -- and nobody listens once the child is gone
    local gone = socket.connect("127.0.0.1", port)
    lu.assertNil(gone)
  end,

}

H.run()
