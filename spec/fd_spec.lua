-- fd objects (ownership, <close>, __gc, detach, file, info), fdpass.fd and
-- fdpass.dup for every kind of value, close-on-exec and O_NONBLOCK of
-- descriptors that travel.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local socket = require "socket"

-- A file with `content` that stays on disk; returns its name.
local function named_file(content)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(content)
  f:close()
  return name
end

local function assert_ebadf(n)
  local ok, msg, code = fdpass.info(n)
  lu.assertNil(ok, "descriptor " .. n .. " is still open")
  lu.assertEquals(code, "EBADF")
  lu.assertStrContains(msg, "info: ")
end

local function assert_raises(pattern, fn, ...)
  local ok, err = pcall(fn, ...)
  lu.assertFalse(ok, "expected an error matching " .. pattern)
  lu.assertStrMatches(tostring(err), ".*" .. pattern .. ".*")
end

-- <close> is Lua 5.4 syntax, compiled there only (H.lua54); elsewhere the
-- tests that use it skip.
local CLOSE_AT_SCOPE_END = H.lua54([[
  local lu, H, fdpass, assert_ebadf, assert_raises = ...
  local outer, n
  do
    local f <close> = H.tempfile("abc")
    outer, n = f, f:fileno()
    lu.assertEquals(fdpass.info(n).kind, "file")
  end
  -- closed by the scope, not by the collector: outer still references it
  assert_ebadf(n)
  lu.assertEquals(tostring(outer), "fdpass.fd (closed)")
  assert_raises("closed", outer.fileno, outer)
]], "fd_spec.lua: <close> at scope end")

local CLOSE_ON_ERROR = H.lua54([[
  local lu, H, fdpass, assert_ebadf = ...
  local n, outer
  local ok, err = pcall(function()
    local f <close> = H.tempfile("abc")
    n, outer = f:fileno(), f
    error("boom", 0)
  end)
  lu.assertFalse(ok)
  lu.assertEquals(err, "boom")
  assert_ebadf(n)
  lu.assertEquals(tostring(outer), "fdpass.fd (closed)")
]], "fd_spec.lua: <close> on error")

TestFd = H.suite {
  -- ownership ---------------------------------------------------------------

  test_gc_closes = function()
    local before = fos.fdcount()
    local f = H.tempfile("abc")
    local n = f:fileno()
    lu.assertEquals(fos.fdcount(), before + 1)
    lu.assertEquals(fdpass.info(n).kind, "file")
    f = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    lu.assertEquals(fos.fdcount(), before)
    assert_ebadf(n)
  end,

  test_close_variable_closes_at_scope_end = function()
    H.run54(CLOSE_AT_SCOPE_END, lu, H, fdpass, assert_ebadf, assert_raises)
  end,

  test_close_variable_closes_on_error = function()
    H.run54(CLOSE_ON_ERROR, lu, H, fdpass, assert_ebadf)
  end,

  test_detach_leaves_descriptor_open = function()
    local f = H.tempfile("abcd")
    local n = f:fileno()
    local m = f:detach()
    lu.assertEquals(m, n)
    lu.assertTrue(H.is_integer(m), "not an integer: " .. tostring(m))
    lu.assertEquals(tostring(f), "fdpass.fd (closed)")
    assert_raises("closed", f.fileno, f)
    assert_raises("closed", f.detach, f)
    f = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    local info = assert(fdpass.info(m)) -- the collector did not close it
    lu.assertEquals(info.kind, "file")
    lu.assertEquals(info.size, 4)
    local g = fdpass.fd(m)
    lu.assertEquals(g:fileno(), m)
    lu.assertEquals(g:close(), true)
    assert_ebadf(m)
  end,

  test_close_twice_and_use_after_close_raise = function()
    local f = H.tempfile("abc")
    local n = f:fileno()
    lu.assertEquals(f:close(), true)
    assert_ebadf(n)
    assert_raises("closed fdpass.fd", f.close, f)
    assert_raises("closed fdpass.fd", f.fileno, f)
    assert_raises("closed fdpass.fd", f.info, f)
    assert_raises("closed fdpass.fd", f.file, f, "r")
    assert_raises("closed fdpass.fd", f.detach, f)
    assert_raises("closed fdpass.fd", fdpass.dup, f)
    assert_raises("closed fdpass.fd", fdpass.info, f)
    local a, b = assert(fdpass.socketpair())
    assert_raises("closed fdpass.fd", a.send, a, "x", { f })
    a:close()
    b:close()
  end,

  test_tostring = function()
    local f = H.tempfile("abc")
    lu.assertEquals(tostring(f), ("fdpass.fd (%d)"):format(f:fileno()))
    f:close()
    lu.assertEquals(tostring(f), "fdpass.fd (closed)")
  end,

  -- info --------------------------------------------------------------------

  test_info_regular_file = function()
    local name = named_file("hello world")
    local h = assert(io.open(name, "r"))
    local f = fdpass.dup(h)
    local info = f:info()
    lu.assertEquals(info.kind, "file")
    lu.assertEquals(info.size, 11)
    lu.assertEquals(info.path, name)
    lu.assertEquals(info.fd, f:fileno())
    lu.assertEquals(info.cloexec, true)   -- dup is close-on-exec
    lu.assertEquals(info.nonblock, false)
    lu.assertNil(info.family)
    lu.assertNil(info.listening)
    -- fopen does not set close-on-exec: info reports what is, not a default
    lu.assertEquals(fdpass.info(h).cloexec, false)
    lu.assertEquals(fdpass.info(h).path, name)
    f:close()
    h:close()
    os.remove(name)
  end,

  test_info_pipe = function()
    local p = assert(io.popen("exit 0", "r"))
    local f = fdpass.dup(p)
    local info = f:info()
    lu.assertEquals(info.kind, "pipe")
    lu.assertStrMatches(info.path, "pipe:%[%d+%]")
    lu.assertNil(info.size)
    lu.assertNil(info.family)
    f:close()
    p:close()
  end,

  test_info_unix_listener_abstract = function()
    local name = ("@fdpass-fd-spec-%d-listen"):format(fos.getpid())
    local srv = assert(fdpass.listen(name))
    local info = assert(fdpass.info(srv))
    lu.assertEquals(info.kind, "socket")
    lu.assertEquals(info.family, "unix")
    lu.assertEquals(info.socktype, "seqpacket")
    lu.assertEquals(info.listening, true)
    lu.assertEquals(info.addr, name)
    lu.assertNil(info.peer)
    lu.assertEquals(info.nonblock, true)
    lu.assertEquals(info.cloexec, true)
    -- the connected ends: not listening, names on the right sides
    local c = assert(fdpass.connect(name, 2))
    local s = assert(srv:accept(2))
    local ci, si = fdpass.info(c), fdpass.info(s)
    lu.assertEquals({ ci.listening, ci.peer, ci.addr }, { false, name, nil })
    lu.assertEquals({ si.listening, si.addr, si.peer }, { false, name, nil })
    lu.assertEquals(si.socktype, "seqpacket")
    c:close()
    s:close()
    srv:close()
  end,

  test_info_unix_stream_listener = function()
    local name = ("@fdpass-fd-spec-%d-stream"):format(fos.getpid())
    local srv = assert(fdpass.listen(name, "stream"))
    local f = fdpass.dup(srv)
    local info = f:info()
    lu.assertEquals({ info.family, info.socktype, info.listening, info.addr },
                    { "unix", "stream", true, name })
    f:close()
    srv:close()
  end,

  test_info_tcp_listener_luasocket = function()
    local tcp = assert(socket.bind("127.0.0.1", 0))
    local _, port = tcp:getsockname()
    local info = assert(fdpass.info(tcp))
    lu.assertEquals(info.kind, "socket")
    lu.assertEquals(info.family, "inet")
    lu.assertEquals(info.socktype, "stream")
    lu.assertEquals(info.listening, true)
    lu.assertEquals(info.addr, "127.0.0.1:" .. port)
    lu.assertNil(info.peer)
    local f = fdpass.dup(tcp)
    lu.assertEquals(f:info().addr, "127.0.0.1:" .. port)
    f:close()
    tcp:close()
  end,

  test_info_tcp_connection_peer = function()
    local tcp = assert(socket.bind("127.0.0.1", 0))
    local _, port = tcp:getsockname()
    local c = assert(socket.connect("127.0.0.1", port))
    tcp:settimeout(2)
    local s = assert(tcp:accept())
    local _, cport = c:getsockname()
    local ci, si = fdpass.info(c), fdpass.info(s)
    lu.assertEquals({ ci.listening, ci.peer }, { false, "127.0.0.1:" .. port })
    lu.assertEquals({ si.addr, si.peer }, { "127.0.0.1:" .. port, "127.0.0.1:" .. cport })
    c:close()
    s:close()
    tcp:close()
  end,

  -- file(mode) ---------------------------------------------------------------

  test_file_reads_file_from_other_process = function()
    local content = "line one\nline two\n" .. string.rep("z", 5000)
    local name = named_file(content)
    local ch, proc = H.peer(([[
      local h = assert(io.open(%q, "r"))
      assert(ch:send("here", { h }, 5))
      h:close()
      assert(ch:recv(5) == "done")
    ]]):format(name))
    local data, fds = ch:recv(5)
    lu.assertEquals(data, "here")
    lu.assertEquals(#fds, 1)
    local f = fds[1]
    lu.assertEquals(f:info().path, name)
    local h = f:file("r")
    lu.assertEquals(io.type(h), "file")
    assert_raises("closed fdpass.fd", f.fileno, f) -- the io file owns it now
    lu.assertEquals(tostring(f), "fdpass.fd (closed)")
    lu.assertEquals(h:read("*l"), "line one")
    lu.assertEquals(h:read("*a"), "line two\n" .. string.rep("z", 5000))
    lu.assertEquals(h:close(), true)
    assert(ch:send("done", nil, 5))
    H.expect_exit(proc, 0)
    ch:close()
    os.remove(name)
  end,

  test_file_write_mode = function()
    local name = named_file("")
    local h = assert(io.open(name, "w"))
    local f = fdpass.dup(h)
    h:close()
    local w = f:file("w")
    w:write("written through fd:file")
    w:close()
    local r = assert(io.open(name, "r"))
    lu.assertEquals(r:read("*a"), "written through fd:file")
    r:close()
    os.remove(name)
  end,

  -- glibc's fdopen(fd, "a") sets O_APPEND on the open file, which the
  -- sender's copy shares: "a" is taken only where the flag is already set.
  test_file_append_mode_never_sets_o_append = function()
    local name = named_file("abc")
    local function append_flag(x)
      local h = assert(io.open("/proc/self/fdinfo/" .. fdpass.info(x).fd))
      local flags = tonumber(h:read("*a"):match("flags:%s*(%d+)"), 8)
      h:close()
      return math.floor(flags / 1024) % 2 == 1 -- O_APPEND, 02000
    end
    local plain = assert(io.open(name, "r+"))
    local f = fdpass.dup(plain)
    local h, msg, code = f:file("a")
    lu.assertNil(h)
    lu.assertEquals(code, "EINVAL")
    lu.assertStrContains(msg, "O_APPEND")
    lu.assertFalse(append_flag(plain), "the sender's open file became append-only")
    lu.assertEquals(f:info().kind, "file") -- still f's
    f:close()
    plain:close()
    local appending = assert(io.open(name, "a"))
    f = fdpass.dup(appending)
    appending:close()
    h = assert(f:file("a"))
    h:write("def")
    h:close()
    local r = assert(io.open(name))
    lu.assertEquals(r:read("*a"), "abcdef")
    r:close()
    os.remove(name)
  end,

  test_file_mismatched_mode_keeps_ownership = function()
    local f = H.tempfile("abc") -- opened read-only
    local n = f:fileno()
    local h, msg, code = f:file("w")
    lu.assertNil(h)
    lu.assertStrContains(msg, "file")
    lu.assertEquals(code, "EINVAL") -- a name, like every fdpass failure
    lu.assertEquals(f:fileno(), n) -- still ours, still open
    lu.assertEquals(f:info().kind, "file")
    assert_raises("invalid mode", f.file, f, "x")
    assert_raises("invalid mode", f.file, f, "rw")
    lu.assertEquals(f:fileno(), n)
    f:close()
  end,

  test_file_modes_follow_io_open = function()
    for _, mode in ipairs { "r", "rb" } do
      local f = H.tempfile("m")
      local h = f:file(mode)
      lu.assertEquals(h:read("*a"), "m", mode)
      h:close()
    end
    local f = H.tempfile("m")
    for _, mode in ipairs { "", "x", "rw", "r+w", "br", "r++", "wr" } do
      assert_raises("invalid mode", f.file, f, mode)
    end
    lu.assertEquals(f:info().kind, "file") -- a refused mode keeps it ours
    f:close()
  end,

  -- fdpass.fd / fdpass.dup ---------------------------------------------------

  test_fd_adopts_integer = function()
    local name = named_file("12345")
    local h = assert(io.open(name, "r"))
    local n = fdpass.dup(h):detach()
    h:close()
    local f = fdpass.fd(n)
    lu.assertEquals(f:fileno(), n)
    lu.assertEquals(f:info().size, 5)
    f = nil -- luacheck: ignore
    collectgarbage()
    collectgarbage()
    assert_ebadf(n) -- adopted means owned: the collector closed it
    assert_raises("non%-negative integer", fdpass.fd, -1)
    assert_raises("non%-negative integer", fdpass.fd, 1.5)
    assert_raises("non%-negative integer", fdpass.fd, nil)
    assert_raises("non%-negative integer", fdpass.fd, {})
    os.remove(name)
  end,

  test_dup_shares_open_file_description = function()
    local f1 = H.tempfile("shared offset")
    local f2 = fdpass.dup(f1)
    lu.assertNotEquals(f2:fileno(), f1:fileno())
    local r1 = f1:file("r")
    lu.assertEquals(r1:read("*a"), "shared offset")
    local r2 = f2:file("r")
    lu.assertEquals(r2:read("*a"), "") -- same offset: at the end
    r1:close()
    r2:close()
  end,

  test_dup_every_accepted_kind = function()
    local base = H.tempfile("0123456")
    local n = base:fileno()
    local function check(x, label, expect)
      local d = fdpass.dup(x)
      lu.assertEquals(getmetatable(d).__name, "fdpass.fd", label)
      local info = d:info()
      lu.assertNotEquals(info.fd, n, label)
      lu.assertEquals(info.cloexec, true, label)
      for k, v in pairs(expect) do lu.assertEquals(info[k], v, label .. " " .. k) end
      d:close()
    end
    check(n, "integer", { kind = "file", size = 7 })
    check(base, "fd object", { kind = "file", size = 7 })
    local name = named_file("xy")
    local h = assert(io.open(name, "r"))
    check(h, "io file", { kind = "file", size = 2 })
    h:close()
    os.remove(name)
    local a, b = assert(fdpass.socketpair())
    check(a, "channel", { family = "unix", socktype = "seqpacket", listening = false })
    local srv = assert(fdpass.listen(("@fdpass-fd-spec-%d-dup"):format(fos.getpid())))
    check(srv, "server", { family = "unix", listening = true })
    local tcp = assert(socket.bind("127.0.0.1", 0))
    local _, port = tcp:getsockname()
    check(tcp, "luasocket", { family = "inet", listening = true, addr = "127.0.0.1:" .. port })
    check({ pollfd = function() return n end }, "pollfd", { size = 7 })
    check({ fileno = function() return n end }, "fileno", { size = 7 })
    check({ getfd = function() return n + 0.0 end }, "getfd", { size = 7 })
    local obj = setmetatable({ fd = n }, { __index = { fileno = function(self) return self.fd end } })
    check(obj, "method via __index", { size = 7 })
    -- the source is left as it was
    lu.assertEquals(base:fileno(), n)
    lu.assertEquals(base:info().cloexec, true)
    lu.assertEquals(fdpass.info(a).family, "unix")
    lu.assertEquals(fdpass.info(tcp).listening, true)
    tcp:close()
    srv:close()
    a:close()
    b:close()
    base:close()
  end,

  test_dup_bad_values_raise = function()
    local f = H.tempfile("x")
    assert_raises("cannot take a descriptor from a string", fdpass.dup, tostring(f:fileno()))
    assert_raises("cannot take a descriptor from a table", fdpass.dup, {})
    assert_raises("cannot take a descriptor from a table", fdpass.dup, { fd = 3 })
    assert_raises("cannot take a descriptor from a nil", fdpass.dup, nil)
    assert_raises("cannot take a descriptor from a boolean", fdpass.dup, true)
    assert_raises("cannot take a descriptor", fdpass.dup, print)
    assert_raises("non%-negative integer", fdpass.dup, -1)
    assert_raises("non%-negative integer", fdpass.dup, 2.5)
    local name = named_file("y")
    local h = assert(io.open(name, "r"))
    h:close()
    assert_raises("closed file", fdpass.dup, h)
    os.remove(name)
    local tcp = assert(socket.bind("127.0.0.1", 0))
    tcp:close()
    assert_raises("getfd%(%) gave no open descriptor", fdpass.dup, tcp)
    assert_raises("fileno%(%) gave no open descriptor", fdpass.dup, { fileno = function() return nil end })
    local a, b = assert(fdpass.socketpair())
    a:close()
    assert_raises("closed fdpass.channel", fdpass.dup, a)
    b:close()
    -- a well-formed number that names no descriptor is a failure, not a raise
    local d, msg, code = fdpass.dup(1000000)
    lu.assertNil(d)
    lu.assertStrContains(msg, "dup: ")
    lu.assertEquals(code, "EBADF")
    f:close()
  end,

  -- close-on-exec ------------------------------------------------------------

  test_received_fd_is_cloexec = function()
    local name = named_file("abc")
    local h = assert(io.open(name, "r"))
    lu.assertEquals(fdpass.info(h).cloexec, false)
    local a, b = assert(fdpass.socketpair())
    assert(a:send("x", { h }, 2))
    local _, fds = assert(b:recv(2))
    lu.assertEquals(fds[1]:info().cloexec, true)
    lu.assertEquals(fds[1]:info().size, 3)
    lu.assertEquals(fdpass.info(h).cloexec, false) -- the sender's is untouched
    fds[1]:close()
    h:close()
    a:close()
    b:close()
    os.remove(name)
  end,

  test_received_fd_not_inherited_by_child = function()
    local name = named_file("abc")
    -- not close-on-exec, and still not in the child: spawn gives a child
    -- 0-2 and its map only
    local ctl = assert(io.open(name, "r"))
    local a, b = assert(fdpass.socketpair())
    local src = H.tempfile("payload")
    assert(a:send("x", { src }, 2))
    src:close()
    local _, fds = assert(b:recv(2))
    local r = fds[1]
    lu.assertEquals(r:info().cloexec, true)
    local rn, cn = r:fileno(), fdpass.info(ctl).fd
    lu.assertNotEquals(rn, 100)
    local proc = H.child(("local rn, cn = %d, %d\n"):format(rn, cn) .. [[
      local ok, _, code = fdpass.info(rn)
      if ok ~= nil or code ~= "EBADF" then
        io.stderr:write("received descriptor leaked into the child\n") os.exit(1)
      end
      local c, _, ccode = fdpass.info(cn)
      if c ~= nil or ccode ~= "EBADF" then os.exit(2) end
      local m = fdpass.info(100)
      if not m or m.kind ~= "file" or m.size ~= 7 or m.cloexec ~= false then os.exit(3) end
      os.exit(0)
    ]], { [100] = r })
    H.expect_exit(proc, 0)
    lu.assertEquals(r:info().cloexec, true) -- mapping does not change ours
    r:close()
    ctl:close()
    a:close()
    b:close()
    os.remove(name)
  end,

  -- FD_CLOEXEC and O_NONBLOCK: read freely, changed only when asked --------------

  test_cloexec_reads_and_switches_this_descriptor_only = function()
    local r, w = assert(fos.pipe())
    local other = assert(fdpass.dup(r)) -- the same open file, another descriptor
    lu.assertEquals(r:cloexec(), true) -- received and made descriptors are close-on-exec
    lu.assertEquals(r:nonblock(), false)
    lu.assertEquals(r:cloexec(false), false)
    lu.assertEquals(r:info().cloexec, false)
    lu.assertEquals(other:info().cloexec, true) -- a descriptor flag: the twin keeps its own
    lu.assertEquals(r:nonblock(), false) -- and the open file's flags are untouched
    lu.assertEquals(r:cloexec(true), true)
    lu.assertEquals(r:info().cloexec, true)
    r:close()
    local ok, err = pcall(r.cloexec, r)
    lu.assertFalse(ok)
    lu.assertStrContains(tostring(err), "closed")
    other:close()
    w:close()
  end,

  test_nonblock_reads_and_switches_the_open_file = function()
    local r, w = assert(fos.pipe())
    local other = assert(fdpass.dup(r))
    lu.assertEquals(r:nonblock(true), true)
    lu.assertEquals(other:nonblock(), true) -- a status flag: every holder sees it
    lu.assertEquals(r:nonblock(false), false)
    lu.assertEquals(other:info().nonblock, false)
    lu.assertEquals(r:cloexec(), true)
    r:close(); other:close(); w:close()
  end,


  test_nonblock_unchanged_across_processes = function()
    local tcp = assert(socket.bind("127.0.0.1", 0)) -- LuaSocket: non-blocking
    local file = H.tempfile("x")                     -- blocking
    lu.assertEquals(fdpass.info(tcp).nonblock, true)
    lu.assertEquals(file:info().nonblock, false)
    local ch, proc = H.peer([[
      local before = fdpass.info(ch).nonblock
      local _, fds = assert(ch:recv(5))
      local t, f = fds[1]:info(), fds[2]:info()
      assert(ch:send(table.concat({ tostring(before), tostring(fdpass.info(ch).nonblock),
        tostring(t.nonblock), tostring(t.listening), tostring(f.nonblock) }, ","), nil, 5))
      assert(ch:recv(5) == "bye")
    ]])
    lu.assertEquals(fdpass.info(ch).nonblock, false)
    assert(ch:send("fds", { tcp, file }, 5))
    local report = assert(ch:recv(5))
    lu.assertEquals(report, "false,false,true,true,false")
    lu.assertEquals(fdpass.info(tcp).nonblock, true)
    lu.assertEquals(file:info().nonblock, false)
    lu.assertEquals(fdpass.info(ch).nonblock, false) -- timeouts do not flip it
    assert(ch:send("bye", nil, 5))
    H.expect_exit(proc, 0)
    ch:close()
    file:close()
    tcp:close()
  end,

  test_nonblock_channel_stays_nonblocking = function()
    local unix = require "socket.unix"
    local dir = os.tmpname()
    os.remove(dir)
    assert(H.execute("mkdir -m 0700 " .. dir))
    local path = dir .. "/s"
    local srv = assert(fdpass.listen(path, "stream"))
    local u = unix.stream()
    assert(u:connect(path))
    local ch = fdpass.channel(fdpass.dup(u)) -- shares LuaSocket's O_NONBLOCK
    u:close()
    local s = assert(srv:accept(2))
    lu.assertEquals(fdpass.info(ch).nonblock, true)
    lu.assertEquals(fdpass.info(s).nonblock, false)
    local blocking = H.tempfile("b")
    local tcp = assert(socket.bind("127.0.0.1", 0))
    assert(ch:send("one", { blocking, tcp }, 2))
    local data, fds = assert(s:recv(2))
    lu.assertEquals(data, "one")
    lu.assertEquals({ fds[1]:info().nonblock, fds[2]:info().nonblock }, { false, true })
    assert(s:send("two", { fds[1] }, 2))
    local d2, f2 = assert(ch:recv(2))
    lu.assertEquals({ d2, f2[1]:info().nonblock }, { "two", false })
    local none, _, code = ch:recv(0.02)
    lu.assertEquals({ none, code }, { nil, "ETIMEDOUT" })
    lu.assertEquals(fdpass.info(ch).nonblock, true)
    lu.assertEquals(fdpass.info(s).nonblock, false)
    lu.assertEquals(blocking:info().nonblock, false)
    lu.assertEquals(fdpass.info(tcp).nonblock, true)
    H.close_all(fds)
    H.close_all(f2)
    tcp:close()
    blocking:close()
    ch:close()
    s:close()
    srv:close()
    os.execute("rm -rf " .. dir)
  end,
}

H.run()
