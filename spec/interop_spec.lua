-- Descriptors of other Lua libraries travel between two processes and are
-- adopted there by the same library: LuaSocket (getfd, fdpass.luasocket),
-- cqueues (pollfd, cqueues.socket.fdopen), luv (fileno, handle:open) and
-- Lua io files. Each test does real I/O on the adopted object, the child
-- reports its own descriptor count, and every descriptor a library adopted
-- is shown to be closed exactly once (a pipe put on its number afterwards
-- survives a garbage collection).
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local codec = require "fdpass.codec"
local net = require "fdpass.net"
local fos = require "fdpass.os"

local LUA = rawget(_G, "jit") and rawget(_G, "jit").version or _VERSION

-- A library, or nil and why not: a test that needs it skips with the reason.
local function try(name)
  local ok, m = pcall(require, name)
  if ok then return m end
  local why = tostring(m):match("[^\n]*"):gsub(":%s*$", "")
  return nil, ("%s is not installed for %s: %s"):format(name, LUA, why)
end
local socket, no_socket = try "socket"
local cqueues, no_cqueues = try "cqueues"
local cs = cqueues and require "cqueues.socket"
local uv, no_luv = try "luv"

local function need(lib, why)
  if not lib then lu.skip(why) end
end

-- What both sides use, as source: the child loads it after `fdpass`
-- exists, this process loads it here.
local SHARED = [==[
local loop = require "fdpass.loop"
local fos = require "fdpass.os"
local fdpass = ...
local lib = {}

function lib.settle()
  collectgarbage()
  collectgarbage()
end

-- Descriptor n must be closed now, and nothing may close it again: a pipe
-- put on n survives a collection (a stale owner's __gc would close it).
function lib.closed_once(n)
  local gone, _, code = fdpass.info(n)
  assert(gone == nil and code == "EBADF", "descriptor " .. n .. " is still open")
  local r, w = assert(fos.pipe())
  -- n is free, so the pipe may have landed on it: move that end off
  local function off(x)
    if x:fileno() ~= n then return x end
    local moved = assert(fdpass.dup(x))
    x:close()
    return moved
  end
  r, w = off(r), off(w)
  assert(fos.dup2(r, n))
  local sentinel = fdpass.fd(n)
  lib.settle()
  assert(w:write("s") == 1)
  assert(sentinel:read(1) == "s", "descriptor " .. n .. " was closed twice")
  sentinel:close()
  r:close()
  w:close()
end

-- libuv opens a descriptor of its own (its reserve for EMFILE) at the
-- first listen and keeps it: make it exist before anything is counted.
function lib.warm_luv(uv)
  local t = uv.new_tcp()
  assert(t:bind("127.0.0.1", 0))
  assert(t:listen(1, function() end))
  t:close()
  uv.run("nowait")
end

-- A timer that ends uv.run after `seconds` whatever happens, closing
-- `handles` (a table filled as they are made); cancel() before success.
function lib.uv_deadline(uv, seconds, handles)
  local timer = uv.new_timer()
  local fired = false
  timer:start(math.floor(seconds * 1000), 0, function()
    fired = true
    for _, h in pairs(handles) do
      if not h:is_closing() then h:close() end
    end
    timer:close()
  end)
  return {
    cancel = function() if not timer:is_closing() then timer:close() end end,
    fired = function() return fired end,
  }
end

-- Lines from a non-blocking fd object (fdpass.net.tcp_connect/accept).
function lib.lines(fd)
  local buf = ""
  return function(timeout)
    local deadline = fos.monotonic() + (timeout or 10)
    while not buf:find("\n", 1, true) do
      local left = deadline - fos.monotonic()
      if left <= 0 then return nil, "timed out, have " .. ("%q"):format(buf) end
      loop.poll({ fd }, nil, left)
      local data, err, code = fd:read()
      if data then
        buf = buf .. data
      elseif code == "EOF" then
        return nil, "EOF"
      elseif code ~= "EAGAIN" then
        return nil, err
      end
    end
    local line, rest = buf:match("^(.-)\n(.*)$")
    buf = rest
    return line
  end
end

function lib.write_all(fd, data, timeout)
  local deadline = fos.monotonic() + (timeout or 10)
  local i = 1
  while i <= #data do
    local n, err, code = fd:write(data, i)
    if n then
      i = i + n
    elseif code ~= "EAGAIN" then
      return nil, err
    elseif fos.monotonic() > deadline then
      return nil, "timed out"
    else
      loop.poll(nil, { fd }, 0.5)
    end
  end
  return true
end

-- The position of the open file behind x as the kernel keeps it: stdio's
-- ftell answers from its own cache, which another process cannot move.
function lib.position(x)
  local f = assert(io.open("/proc/self/fdinfo/" .. fdpass.info(x).fd))
  local pos = tonumber(f:read("*a"):match("pos:%s*(%d+)"))
  f:close()
  return pos
end

-- fn as a luv callback that cannot end the process: luv exits on an
-- uncaught error, so errors are kept in `errors` instead.
function lib.caught(errors, fn)
  return function(...)
    local ok, err = pcall(fn, ...)
    if not ok then errors[#errors + 1] = tostring(err) end
  end
end

return lib
]==]

local load_chunk = loadstring or load -- luacheck: read globals loadstring
local lib = assert(load_chunk(SHARED))(fdpass)

-- A child with a channel on 3, `lib` (above) and `report(t)`, which sends
-- its last message: t encoded.
local function peer(code)
  return H.peer(("local lib = assert((loadstring or load)(%q))(fdpass)\n"):format(SHARED) .. [[
local codec = require "fdpass.codec"
local function report(t) assert(ch:send(codec.encode(t))) end
]] .. code)
end

local function recv(ch)
  local data, fds = ch:recv(20)
  lu.assertNotNil(data, "the child said nothing: " .. tostring(fds))
  return data, fds
end

-- The child's last message: its descriptor counts, and whatever it found.
local function child_report(ch, proc)
  local r = codec.decode((recv(ch)))
  lu.assertEquals(r.now, r.base, "descriptors the child held after its work")
  ch:close()
  H.expect_exit(proc, 0)
  return r
end

if uv then lib.warm_luv(uv) end

-- ---------------------------------------------------------------- LuaSocket

TestLuaSocket = H.suite {
  test_listener_is_adopted_as_a_server_in_the_child = function()
    need(socket, no_socket)
    local l = assert(socket.bind("127.0.0.1", 0))
    local _, port = l:getsockname()
    local ch, proc = peer [[
local fos = require "fdpass.os"
local socket = require "socket"
local base = fos.fdcount()
local _, fds = assert(ch:recv(10))
local n = fds[1]:fileno()
local s = assert(fdpass.luasocket(fds[1]))
assert(tostring(fds[1]) == "fdpass.fd (closed)", "the fd object still owns it")
fds = nil
assert(tostring(s):match("^tcp{server}"), tostring(s))
assert(s:getfd() == n, "LuaSocket holds another descriptor")
assert(ch:send("adopted"))
s:settimeout(10)
local c = assert(s:accept())
c:settimeout(10)
local line = assert(c:receive("*l"))
assert(c:send("child heard " .. line .. "\n"))
c:close()
s:close()
c, s = nil, nil
lib.closed_once(n)
lib.settle()
report { base = base, now = fos.fdcount() }
]]
    assert(ch:send("listener", { l }))
    l:close() -- from here only the child's copy listens
    lu.assertEquals(recv(ch), "adopted")
    local c = socket.tcp()
    c:settimeout(10)
    assert(c:connect("127.0.0.1", port))
    assert(c:send("hello\n"))
    lu.assertEquals(c:receive("*l"), "child heard hello")
    c:close()
    child_report(ch, proc)
  end,

  test_connection_continues_in_the_child = function()
    need(socket, no_socket)
    local l = assert(socket.bind("127.0.0.1", 0))
    local _, port = l:getsockname()
    local c = socket.tcp()
    c:settimeout(10)
    assert(c:connect("127.0.0.1", port))
    local a = assert(l:accept())
    a:settimeout(10)
    l:close()
    local _, cport = c:getsockname()
    -- a conversation before the handover ...
    assert(c:send("one\n"))
    lu.assertEquals(a:receive("*l"), "one")
    assert(a:send("two\n"))
    lu.assertEquals(c:receive("*l"), "two")
    -- ... and a line in the kernel's buffer, not yet read by c
    assert(a:send("in flight\n"))
    -- LuaSocket's own buffer would stay here: nothing may be in it
    lu.assertFalse(c:dirty())
    local ch, proc = peer [[
local fos = require "fdpass.os"
local socket = require "socket"
local base = fos.fdcount()
local _, fds = assert(ch:recv(10))
local n = fds[1]:fileno()
local s = assert(fdpass.luasocket(fds[1]))
fds = nil
assert(tostring(s):match("^tcp{client}"), tostring(s))
local _, port = s:getsockname()
s:settimeout(10)
local first = assert(s:receive("*l"))
assert(s:send("three after " .. first .. "\n"))
local second = assert(s:receive("*l"))
assert(s:send("five after " .. second .. "\n"))
s:close()
s = nil
lib.closed_once(n)
lib.settle()
report { base = base, now = fos.fdcount(), port = port }
]]
    assert(ch:send("connection", { c }))
    c:close() -- the child's copy carries the connection on
    lu.assertEquals(a:receive("*l"), "three after in flight")
    assert(a:send("four\n"))
    lu.assertEquals(a:receive("*l"), "five after four")
    local r = child_report(ch, proc)
    -- one connection throughout: same local port, and its end is an EOF
    lu.assertEquals(tonumber(r.port), tonumber(cport))
    local _, pport = a:getpeername()
    lu.assertEquals(tonumber(pport), tonumber(cport))
    lu.assertEquals({ a:receive("*l") }, { nil, "closed", "" })
    a:close()
  end,

  test_listener_and_connection_come_back_from_the_child = function()
    need(socket, no_socket)
    local ch, proc = peer [[
local codec = require "fdpass.codec"
local fos = require "fdpass.os"
local socket = require "socket"
local base = fos.fdcount()
local l = assert(socket.bind("127.0.0.1", 0))
local _, port = l:getsockname()
local c = assert(socket.connect("127.0.0.1", port))
c:settimeout(10)
local a = assert(l:accept())
assert(c:send("before the handover\n"))
assert(not a:dirty())
assert(ch:send(codec.encode { port = port }, { l, a }))
l:close()
a:close()
assert(c:receive("*l") == "parent heard before the handover")
assert(c:send("after\n"))
assert(c:receive("*l") == "parent heard after")
c:close()
l, a, c = nil, nil, nil
lib.settle()
report { base = base, now = fos.fdcount() }
]]
    local data, fds = recv(ch)
    local port = codec.decode(data).port
    lu.assertEquals(#fds, 2)
    local ln, cn = fds[1]:fileno(), fds[2]:fileno()
    local server = assert(fdpass.luasocket(fds[1]))
    local conn = assert(fdpass.luasocket(fds[2]))
    fds = nil -- luacheck: ignore
    lu.assertStrMatches(tostring(server), "tcp{server}.*")
    lu.assertStrMatches(tostring(conn), "tcp{client}.*")
    conn:settimeout(10)
    for _ = 1, 2 do
      local line = assert(conn:receive("*l"))
      assert(conn:send("parent heard " .. line .. "\n"))
    end
    -- the adopted listener accepts a new connection
    local extra = socket.tcp()
    extra:settimeout(10)
    assert(extra:connect("127.0.0.1", port))
    server:settimeout(10)
    local accepted = assert(server:accept())
    accepted:settimeout(10)
    assert(extra:send("new\n"))
    lu.assertEquals(accepted:receive("*l"), "new")
    for _, s in ipairs { extra, accepted, conn, server } do s:close() end
    extra, accepted, conn, server = nil, nil, nil, nil -- luacheck: ignore
    lib.closed_once(ln)
    lib.closed_once(cn)
    child_report(ch, proc)
  end,

  -- Why fdpass.luasocket exists: setfd() alone swaps the number and
  -- nothing else, so the object stays a master that cannot accept.
  test_setfd_alone_leaves_a_master = function()
    need(socket, no_socket)
    local l = assert(socket.bind("127.0.0.1", 0))
    local d = assert(fdpass.dup(l))
    local n = d:fileno()
    local s = socket.tcp4 and socket.tcp4() or socket.tcp()
    s:close()
    s:setfd(d:detach())
    lu.assertStrMatches(tostring(s), "tcp{master}.*")
    local ok, err = pcall(s.accept, s)
    lu.assertFalse(ok)
    lu.assertStrContains(tostring(err), "tcp{server} expected")
    s:close()
    l:close()
    s = nil -- luacheck: ignore
    lib.closed_once(n)
  end,

  test_adapter_refuses_what_it_cannot_wrap_and_leaves_it_open = function()
    need(socket, no_socket)
    local r, w = assert(fos.pipe())
    local x, msg, code = fdpass.luasocket(r)
    lu.assertEquals({ x, code }, { nil, "ENOTSOCK" })
    lu.assertStrContains(msg, "luasocket: ")
    lu.assertEquals(r:info().kind, "pipe") -- still the caller's
    local a, b = assert(fdpass.socketpair("stream"))
    local u = assert(fdpass.dup(a))
    lu.assertEquals(select(3, fdpass.luasocket(u)), "EAFNOSUPPORT")
    local udp = assert((socket.udp4 or socket.udp)())
    assert(udp:setsockname("127.0.0.1", 0))
    local dg = assert(fdpass.dup(udp))
    lu.assertEquals(select(3, fdpass.luasocket(dg)), "EPROTOTYPE")
    local bare = assert(socket.tcp4 and socket.tcp4() or socket.tcp())
    local loose = assert(fdpass.dup(bare))
    lu.assertEquals(select(3, fdpass.luasocket(loose)), "ENOTCONN")
    -- an integer is left open as well
    local n = loose:fileno()
    lu.assertEquals(select(3, fdpass.luasocket(n)), "ENOTCONN")
    lu.assertEquals(fdpass.info(n).kind, "socket")
    -- a programming mistake raises
    local wanted = "bad argument #1 to 'luasocket' (fdpass.fd or integer expected, got "
    H.assert_raises(wanted .. "string)", fdpass.luasocket, "3")
    H.assert_raises(wanted .. "userdata)", fdpass.luasocket, bare)
    H.assert_raises(wanted .. "userdata)", fdpass.luasocket, io.stdin)
    H.assert_raises("bad argument #2 to 'luasocket' (number expected, got string)", fdpass.luasocket, loose, "many")
    for _, o in ipairs { r, w, a, b, u, udp, dg, bare, loose } do o:close() end
  end,

  test_adapter_sets_the_nonblocking_mode_luasocket_needs = function()
    need(socket, no_socket)
    local l = assert(socket.bind("127.0.0.1", 0))
    local _, port = l:getsockname()
    local c = assert(socket.connect("127.0.0.1", port))
    local a = assert(l:accept())
    -- a blocking descriptor, given as an integer
    local d = assert(fdpass.dup(a))
    lu.assertEquals(d:nonblock(false), false)
    a:close()
    local n = d:detach()
    lu.assertFalse(fdpass.info(n).nonblock)
    local s = assert(fdpass.luasocket(n))
    lu.assertTrue(fdpass.info(n).nonblock)
    -- so that LuaSocket's timeouts hold
    s:settimeout(0.2)
    local t0 = fos.monotonic()
    lu.assertEquals({ s:receive("*l") }, { nil, "timeout", "" })
    lu.assertTrue(fos.monotonic() - t0 < 5)
    assert(c:send("x\n"))
    s:settimeout(10)
    lu.assertEquals(s:receive("*l"), "x")
    s:close()
    c:close()
    l:close()
    s = nil -- luacheck: ignore
    lib.closed_once(n)
  end,

  test_ipv6_connection = function()
    need(socket, no_socket)
    local l = socket.tcp6 and socket.bind("::1", 0)
    if not l then lu.skip("no IPv6 loopback (::1) here") end
    local _, port = l:getsockname()
    local c = assert(socket.tcp6())
    c:settimeout(10)
    assert(c:connect("::1", port))
    local a = assert(l:accept())
    a:settimeout(10)
    local d = assert(fdpass.dup(c))
    c:close()
    local s = assert(fdpass.luasocket(d))
    lu.assertEquals(s:getfamily(), "inet6")
    s:settimeout(10)
    assert(s:send("six\n"))
    lu.assertEquals(a:receive("*l"), "six")
    for _, o in ipairs { s, a, l } do o:close() end
  end,
}

-- ------------------------------------------------------------------ cqueues

-- Runs fn in a cqueues controller until it is done, at most `timeout` s.
local function cq_run(fn, timeout)
  local cq = cqueues.new()
  local done, failure = false, nil
  cq:wrap(function() fn(); done = true end) -- no pcall: 5.1 cannot yield across it
  local deadline = fos.monotonic() + (timeout or 10)
  while not cq:empty() and fos.monotonic() < deadline do
    local ok, err = cq:step(math.max(0, deadline - fos.monotonic()))
    if not ok then failure = failure or tostring(err); break end
  end
  cq:close()
  lu.assertNil(failure)
  lu.assertTrue(done, "the cqueues loop did not finish in time")
end

local CQ_CHILD = [[
local fos = require "fdpass.os"
local cqueues = require "cqueues"
local cs = require "cqueues.socket"
local function cq_run(fn, timeout)
  local cq = cqueues.new()
  local done = false
  cq:wrap(function() fn(); done = true end)
  local deadline = fos.monotonic() + (timeout or 10)
  while not cq:empty() and fos.monotonic() < deadline do
    assert(cq:step(math.max(0, deadline - fos.monotonic())))
  end
  cq:close()
  assert(done, "the cqueues loop did not finish in time")
end
]]

TestCqueues = H.suite {
  -- fdopen adopts the number it is given (no dup) and sets O_NONBLOCK on
  -- it: on the open file, which other copies share.
  test_fdopen_owns_the_descriptor_and_sets_nonblock = function()
    need(cqueues, no_cqueues)
    local a, b = assert(fdpass.socketpair("stream"))
    local d = assert(fdpass.dup(a))
    lu.assertEquals(d:nonblock(false), false)
    local n = d:fileno()
    local before = fos.fdcount()
    local s = cs.fdopen(d:detach())
    lu.assertEquals(fos.fdcount(), before)
    lu.assertEquals(s:pollfd(), n)
    lu.assertTrue(fdpass.info(n).nonblock)
    lu.assertTrue(fdpass.info(a).nonblock)
    s:close()
    s = nil -- luacheck: ignore
    lib.closed_once(n)
    a:close()
    b:close()
  end,

  test_listener_is_adopted_with_fdopen_in_the_child = function()
    need(cqueues, no_cqueues)
    local l = cs.listen { host = "127.0.0.1", port = 0 }
    assert(l:listen())
    local _, _, port = l:localname()
    local ch, proc = peer(CQ_CHILD .. [[
local fos = require "fdpass.os"
local base = fos.fdcount()
local _, fds = assert(ch:recv(10))
local n = fds[1]:fileno()
local s = cs.fdopen(fds[1]:detach())
fds = nil
assert(s:pollfd() == n)
assert(ch:send("adopted"))
cq_run(function()
  local c = assert(s:accept(10))
  c:setmode("b", "b")
  local line = assert(c:read("*l"))
  assert(c:write("child heard " .. line .. "\n"))
  assert(c:flush())
  c:close()
end)
s:close()
s = nil
lib.closed_once(n)
lib.settle()
report { base = base, now = fos.fdcount() }
]])
    assert(ch:send("listener", { l }))
    l:close()
    lu.assertEquals(recv(ch), "adopted")
    local heard
    cq_run(function()
      local c = cs.connect { host = "127.0.0.1", port = port }
      c:setmode("b", "b")
      assert(c:connect(10))
      assert(c:write("hello\n"))
      assert(c:flush())
      heard = c:read("*l")
      c:close()
    end)
    lu.assertEquals(heard, "child heard hello")
    child_report(ch, proc)
  end,

  test_connection_continues_in_the_child = function()
    need(cqueues, no_cqueues)
    local l = cs.listen { host = "127.0.0.1", port = 0 }
    assert(l:listen())
    local _, _, port = l:localname()
    local c, a
    cq_run(function()
      c = cs.connect { host = "127.0.0.1", port = port }
      c:setmode("b", "b")
      assert(c:connect(10))
      a = assert(l:accept(10))
      a:setmode("b", "b")
      assert(c:write("one\n"))
      assert(c:flush())
      assert(a:read("*l") == "one")
      assert(a:write("two\n"))
      assert(a:flush())
      assert(c:read("*l") == "two")
      assert(a:write("in flight\n"))
      assert(a:flush())
    end)
    l:close()
    -- cqueues' own buffers stay here: both must be empty
    lu.assertEquals({ c:pending() }, { 0, 0 })
    local _, _, cport = c:localname()
    local ch, proc = peer(CQ_CHILD .. [[
local fos = require "fdpass.os"
local base = fos.fdcount()
local _, fds = assert(ch:recv(10))
local n = fds[1]:fileno()
local s = cs.fdopen(fds[1]:detach())
fds = nil
s:setmode("b", "b")
local _, _, port = s:localname()
cq_run(function()
  local first = assert(s:read("*l"))
  assert(s:write("three after " .. first .. "\n"))
  assert(s:flush())
  local second = assert(s:read("*l"))
  assert(s:write("five after " .. second .. "\n"))
  assert(s:flush())
end)
s:close()
s = nil
lib.closed_once(n)
lib.settle()
report { base = base, now = fos.fdcount(), port = port }
]])
    assert(ch:send("connection", { c }))
    c:close()
    local got = {}
    cq_run(function()
      got[1] = a:read("*l")
      assert(a:write("four\n"))
      assert(a:flush())
      got[2] = a:read("*l")
      got[3] = a:read("*l") or "EOF"
    end)
    a:close()
    lu.assertEquals(got, { "three after in flight", "five after four", "EOF" })
    lu.assertEquals(child_report(ch, proc).port, cport)
  end,

  test_sockets_come_back_from_the_child = function()
    need(cqueues, no_cqueues)
    local ch, proc = peer(CQ_CHILD .. [[
local codec = require "fdpass.codec"
local fos = require "fdpass.os"
local base = fos.fdcount()
local l = cs.listen { host = "127.0.0.1", port = 0 }
assert(l:listen())
local _, _, port = l:localname()
cq_run(function()
  local c = cs.connect { host = "127.0.0.1", port = port }
  c:setmode("b", "b")
  assert(c:connect(10))
  local a = assert(l:accept(10))
  assert(c:write("before\n"))
  assert(c:flush())
  assert(ch:send(codec.encode { port = port }, { l, a }))
  a:close()
  assert(c:read("*l") == "parent heard before")
  c:close()
end)
l:close()
lib.settle()
report { base = base, now = fos.fdcount() }
]])
    local data, fds = recv(ch)
    local port = codec.decode(data).port
    local ln, an = fds[1]:fileno(), fds[2]:fileno()
    local l = cs.fdopen(fds[1]:detach())
    local a = cs.fdopen(fds[2]:detach())
    fds = nil -- luacheck: ignore
    a:setmode("b", "b")
    local new
    cq_run(function()
      local line = assert(a:read("*l"))
      assert(a:write("parent heard " .. line .. "\n"))
      assert(a:flush())
      -- the adopted listener takes a new connection
      local c = cs.connect { host = "127.0.0.1", port = port }
      c:setmode("b", "b")
      assert(c:connect(10))
      local b = assert(l:accept(10))
      b:setmode("b", "b")
      assert(c:write("new\n"))
      assert(c:flush())
      new = b:read("*l")
      b:close()
      c:close()
    end)
    lu.assertEquals(new, "new")
    a:close()
    l:close()
    a, l = nil, nil -- luacheck: ignore
    lib.closed_once(ln)
    lib.closed_once(an)
    child_report(ch, proc)
  end,
}

-- ---------------------------------------------------------------------- luv

local LUV_CHILD = [[
local uv = require "luv"
lib.warm_luv(uv)
]]

-- A luv child that takes the one descriptor it is sent into a tcp handle
-- t (its number n; base: the descriptor count before).
local LUV_ADOPT = LUV_CHILD .. [[
local fos = require "fdpass.os"
local base = fos.fdcount()
local _, fds = assert(ch:recv(10))
local n = fds[1]:fileno()
local handles = {}
local t = uv.new_tcp()
handles.t = t
assert(t:open(fds[1]:detach()))
fds = nil
]]

TestLuv = H.suite {
  test_tcp_listener_is_opened_in_the_child = function()
    need(uv, no_luv)
    local t = uv.new_tcp()
    assert(t:bind("127.0.0.1", 0))
    assert(t:listen(16, function() end))
    local port = t:getsockname().port
    local ch, proc = peer(LUV_ADOPT .. [[
local fos = require "fdpass.os"
assert(t:fileno() == n)
assert(ch:send("adopted"))
local deadline = lib.uv_deadline(uv, 10, handles)
local heard
assert(t:listen(16, function(err)
  assert(not err, err)
  local c = uv.new_tcp()
  handles.c = c
  assert(t:accept(c))
  local buf = ""
  c:read_start(function(err2, data)
    assert(not err2, err2)
    buf = buf .. (data or "")
    heard = heard or buf:match("^(.-)\n")
    if heard then
      c:read_stop()
      c:write("child heard " .. heard .. "\n", function()
        c:close()
        t:close()
        deadline.cancel()
      end)
    end
  end)
end))
uv.run()
assert(heard and not deadline.fired(), "no line within 10 s")
t, handles = nil, nil
lib.closed_once(n)
lib.settle()
report { base = base, now = fos.fdcount() }
]])
    assert(ch:send("listener", { t }))
    t:close()
    uv.run("nowait")
    lu.assertEquals(recv(ch), "adopted")
    local c = assert(net.tcp_connect("127.0.0.1", port, 10))
    assert(lib.write_all(c, "hello\n"))
    lu.assertEquals(lib.lines(c)(), "child heard hello")
    c:close()
    child_report(ch, proc)
  end,

  test_tcp_connection_continues_in_the_child = function()
    need(uv, no_luv)
    local l = assert(net.tcp_listen("127.0.0.1", 0))
    local port = tonumber(l:info().addr:match(":(%d+)$"))
    -- the connection is made, and spoken on, by luv
    local handles, errors = {}, {}
    local t = uv.new_tcp()
    handles.t = t
    local deadline = lib.uv_deadline(uv, 10, handles)
    local a, a_lines
    local heard = ""
    assert(t:connect("127.0.0.1", port, lib.caught(errors, function(err)
      assert(not err, err)
      a = assert(net.accept(l))
      a_lines = lib.lines(a)
      t:write("one\n")
      assert(a_lines() == "one")
      t:read_start(lib.caught(errors, function(err2, data)
        assert(not err2, err2)
        heard = heard .. (data or "")
        if heard:find("\n") or not data then
          t:read_stop()
          deadline.cancel()
        end
      end))
      assert(lib.write_all(a, "two\n"))
    end)))
    uv.run()
    lu.assertEquals(errors, {})
    lu.assertEquals(heard, "two\n")
    l:close()
    -- read_stop before this line was sent: it waits in the kernel
    assert(lib.write_all(a, "in flight\n"))
    local cport = t:getsockname().port
    local ch, proc = peer(LUV_ADOPT .. [[
local fos = require "fdpass.os"
local port = t:getsockname().port
local deadline = lib.uv_deadline(uv, 10, handles)
local buf, said = "", 0
t:read_start(function(err, data)
  assert(not err, err)
  if not data then return end
  buf = buf .. data
  local line, rest = buf:match("^(.-)\n(.*)$")
  if not line then return end
  buf = rest
  said = said + 1
  if said == 1 then
    t:write("three after " .. line .. "\n")
  else
    t:write("five after " .. line .. "\n", function()
      t:close()
      deadline.cancel()
    end)
  end
end)
uv.run()
assert(said == 2 and not deadline.fired(), "the conversation did not finish in 10 s")
t, handles = nil, nil
lib.closed_once(n)
lib.settle()
report { base = base, now = fos.fdcount(), port = port }
]])
    assert(ch:send("connection", { t }))
    t:close()
    uv.run("nowait")
    lu.assertEquals(a_lines(), "three after in flight")
    assert(lib.write_all(a, "four\n"))
    lu.assertEquals(a_lines(), "five after four")
    lu.assertEquals({ a_lines() }, { nil, "EOF" })
    a:close()
    lu.assertEquals(child_report(ch, proc).port, cport)
  end,

  -- A pipe from here is opened by luv there, and a pipe made by luv there
  -- is opened by luv here. libuv sets O_NONBLOCK on what it opens: the
  -- flag belongs to the open file, so this side's copy has it too.
  test_pipes_both_ways_and_the_flag_luv_sets = function()
    need(uv, no_luv)
    local r, w = assert(fos.pipe())
    lu.assertFalse(r:info().nonblock)
    local ch, proc = peer(LUV_CHILD .. [[
local codec = require "fdpass.codec"
local fos = require "fdpass.os"
local base = fos.fdcount()
local _, fds = assert(ch:recv(10))
local n = fds[1]:fileno()
local before = fds[1]:info().nonblock
local handles = {}
local p = uv.new_pipe(false)
handles.p = p
assert(p:open(fds[1]:detach()))
fds = nil
local after = fdpass.info(n).nonblock
-- a pipe of our own: luv writes into one end, the parent gets it
local mine_r, mine_w = assert(fos.pipe())
local mn, on = mine_r:fileno(), mine_w:fileno()
local out = uv.new_pipe(false)
assert(out:open(mine_w:detach()))
assert(ch:send(codec.encode { before = before, after = after }, { out }))
out:close()
local back = uv.new_pipe(false)
handles.back = back
assert(back:open(mine_r:detach()))
local deadline = lib.uv_deadline(uv, 10, handles)
local got = {}
local function reader(key, handle)
  return function(err, data)
    assert(not err, err)
    got[key] = (got[key] or "") .. (data or "")
    if not data or got[key]:find("\n") then
      handle:close()
      if p:is_closing() and back:is_closing() then deadline.cancel() end
    end
  end
end
p:read_start(reader("ping", p))
back:read_start(reader("pong", back))
uv.run()
assert(not deadline.fired(), "the pipes were not read in 10 s")
p, back, out, handles = nil, nil, nil, nil
lib.closed_once(n)
lib.closed_once(mn)
lib.closed_once(on)
lib.settle()
report { base = base, now = fos.fdcount(), got = got }
]])
    assert(ch:send("pipe", { r }))
    local data, fds = recv(ch)
    local flags = codec.decode(data)
    lu.assertEquals(flags, { before = false, after = true })
    lu.assertTrue(r:info().nonblock, "the flag is the open file's, and luv set it")
    assert(w:write("ping\n") == 5)
    local h = uv.new_pipe(false)
    local hn = fds[1]:fileno()
    assert(h:open(fds[1]:detach()))
    fds = nil -- luacheck: ignore
    local written
    h:write("pong\n", function(err)
      written = err or true
      h:close()
    end)
    uv.run()
    lu.assertTrue(written)
    h = nil -- luacheck: ignore
    lib.closed_once(hn)
    lu.assertEquals(child_report(ch, proc).got, { ping = "ping\n", pong = "pong\n" })
    r:close()
    w:close()
  end,
}

-- ------------------------------------------------------------------ io files

TestIoFiles = H.suite {
  -- Sent twice, the file arrives as two descriptors of one open file: the
  -- child reads with one and writes with the other, and this side sees
  -- the position move.
  test_file_to_the_child_shares_its_position = function()
    local f = assert(io.tmpfile())
    assert(f:write("0123456789"))
    assert(f:flush())
    lu.assertEquals(f:seek("set", 2), 2)
    local ch, proc = peer [[
local codec = require "fdpass.codec"
local fos = require "fdpass.os"
local base = fos.fdcount()
local _, fds = assert(ch:recv(10))
local rn, wn = fds[1]:fileno(), fds[2]:fileno()
local path = fds[1]:info().path
local r = fds[1]:file("r")
local w = fds[2]:file("w")
fds = nil
assert(io.type(r) == "file" and io.type(w) == "file")
r:setvbuf("no") -- stdio would read ahead and move the shared position
local got = r:read(3)
local pos = lib.position(r)
assert(ch:send(codec.encode { got = got, pos = pos, path = path }))
assert(ch:recv(10) == "write")
assert(w:write("ab"))
assert(w:flush())
local wpos = lib.position(w)
r:close()
w:close()
r, w = nil, nil
lib.closed_once(rn)
lib.closed_once(wn)
lib.settle()
report { base = base, now = fos.fdcount(), wpos = wpos }
]]
    assert(ch:send("file", { f, f }))
    local seen = codec.decode((recv(ch)))
    lu.assertEquals(seen.got, "234")
    lu.assertEquals(seen.pos, 5)
    lu.assertEquals(seen.path, fdpass.info(f).path)
    lu.assertEquals(lib.position(f), 5) -- the child's read moved ours
    assert(ch:send("write"))
    lu.assertEquals(child_report(ch, proc).wpos, 7)
    lu.assertEquals(lib.position(f), 7)
    assert(f:seek("set", 0))
    lu.assertEquals(f:read("*a"), "01234ab789")
    f:close()
  end,

  -- The child turns what it got into an io file with fd:file() and sends
  -- that io file back: three descriptors, one open file.
  test_file_made_by_fd_file_comes_back = function()
    local f = assert(io.tmpfile())
    assert(f:write("0123456789"))
    assert(f:flush())
    assert(f:seek("set", 0))
    local ch, proc = peer [[
local fos = require "fdpass.os"
local base = fos.fdcount()
local _, fds = assert(ch:recv(10))
local n = fds[1]:fileno()
local g = fds[1]:file("r+")
fds = nil
g:setvbuf("no")
assert(g:write("XY"))
assert(ch:send("back", { g }))
assert(ch:recv(10) == "read")
local pos = lib.position(g)
g:close()
g = nil
lib.closed_once(n)
lib.settle()
report { base = base, now = fos.fdcount(), pos = pos }
]]
    assert(ch:send("file", { f }))
    local data, fds = recv(ch)
    lu.assertEquals(data, "back")
    lu.assertEquals(fds[1]:info().kind, "file")
    local h = fds[1]:file("r")
    fds = nil -- luacheck: ignore
    h:setvbuf("no")
    lu.assertEquals(h:read(3), "234") -- after the child's "XY"
    assert(ch:send("read"))
    lu.assertEquals(child_report(ch, proc).pos, 5)
    lu.assertEquals(lib.position(h), 5)
    h:close()
    lu.assertEquals(lib.position(f), 5)
    assert(f:seek("set", 0))
    lu.assertEquals(f:read("*a"), "XY23456789")
    f:close()
  end,
}

H.run()
