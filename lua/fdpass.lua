--- fdpass: pass open file descriptors between processes over Unix sockets.
-- The C core (`fdpass.core`) does the system calls; this face fills in
-- defaults and options, and is where Lua users read what a call does.
-- Failures of the world return `nil, "what: why", "ERRNAME"`; a wrong
-- argument raises.
-- @module fdpass
local core = require "fdpass.core"

local fdpass = {}
-- Everything the core offers is fdpass's too; the entries below document
-- it, and wrap the calls whose options are easier to fill in from Lua.
for k, v in pairs(core) do fdpass[k] = v end

--- A connected pair of channels.
-- @function socketpair
-- @string[opt="seqpacket"] kind "seqpacket" (message boundaries kept) or "stream"
-- @return channel, channel
fdpass.socketpair = core.socketpair

--- Listen on `addr`: "@name" for a Linux abstract name, anything else a path.
-- @string addr
-- @tparam[opt] table|string opts a kind, or `{kind=, mode=0600, backlog=}`;
--   a path socket gets exactly `mode` whatever the umask
-- @return server
-- @function listen
fdpass.listen = core.listen

--- Adopt a listening AF_UNIX socket this process was handed (an upgrade's
-- new copy, socket activation) as a server.
-- @function server
-- @param x an fd object, which hands its descriptor over, or an integer,
--   which is adopted; either is left as it was when it is refused
-- @return server, or `nil, msg, code`: `ENOTSOCK`, `EAFNOSUPPORT` (not
--   AF_UNIX), `EPROTOTYPE`, `EINVAL` (not listening)
fdpass.server = core.server

--- Connect to a server.
-- @function connect
-- @string addr as for `listen`
-- @number[opt] timeout seconds (nil: wait as long as it takes)
-- @string[opt="seqpacket"] kind
-- @return channel
fdpass.connect = core.connect

--- Wrap a connected socket as a channel.
-- @function channel
-- @param x an integer, which is adopted, or an fd object, which hands its
--   descriptor over
-- @return channel
fdpass.channel = core.channel

--- An fd object that owns descriptor `n` from now on.
-- @function fd
-- @int n
-- @return fd object
fdpass.fd = core.fd

--- An fd object owning a new descriptor (close-on-exec) for the same open
-- file as `x`. `x` is left as it is.
-- @function dup
-- @param x anything `send` accepts
-- @return fd object
fdpass.dup = core.dup

--- Makes descriptor `n` refer to `x`'s open file (not close-on-exec),
-- for example to put an inherited stderr back on 2.
-- @function dup2
-- @param x anything `send` accepts
-- @int n
fdpass.dup2 = core.dup2

--- A pipe, both ends close-on-exec.
-- @function pipe
-- @return r, w: fd objects
fdpass.pipe = core.pipe

--- What a descriptor is, read without changing it.
-- @function info
-- @param x anything `send` accepts
-- @treturn table `{fd=, kind=, cloexec=, nonblock=, path=, size=}`, and
--   for a socket `family=, socktype=, listening=, addr=, peer=`
fdpass.info = core.info

--- Closes an array of integers and fd objects.
-- (`ch:recv(timeout, "set")` gives an fd set: `#set`, `set[i]`,
-- `set:take(i)`, `set:close()`.)
-- @function close_all
-- @tparam table list
-- @treturn int how many it closed
fdpass.close_all = core.close_all

--- How many descriptors this process holds.
-- @function fdcount
-- @treturn int
fdpass.fdcount = core.fdcount

--- RLIMIT_NOFILE, the soft limit set first when `soft` is given.
-- @function nofile
-- @int[opt] soft
-- @return soft, hard
fdpass.nofile = core.nofile

--- Start a program without a shell.
-- @tparam table argv program and arguments; the program is looked up in PATH
-- @tparam[opt] table opts `{fds = {[3] = ch, ...}, env = {NAME = "value"},
--   setenv = {NAME = "value" or false}}`: `fds` maps descriptor numbers in
--   the child to anything `send` accepts (0, 1 and 2 are inherited unless
--   mapped; every other descriptor of ours is close-on-exec); `env`
--   replaces the environment, `setenv` changes this one for the child.
--   The child starts with no signal blocked.
-- @return process with `pid()`, `wait([timeout])` -> "exit"|"signal", n,
--   and `kill([signal])`
-- @function spawn
fdpass.spawn = core.spawn

--- This process's pid.
-- @function getpid
-- @treturn int
fdpass.getpid = core.getpid

--- Signals another process.
-- @function kill
-- @int pid
-- @param[opt="TERM"] signal a name ("KILL", "HUP", ...) or a number
fdpass.kill = core.kill

--- An exclusive lock on `path` (created 0600), held by the returned fd
-- object until it is closed or the process dies;
-- `nil, msg, "EAGAIN"` while another process holds it.
-- @function flock
-- @string path
-- @return fd object
fdpass.flock = core.flock

--- Wait for readiness; hang-ups count as readable.
-- @function poll
-- @tparam table readers an array of anything `send` accepts
-- @tparam table writers the same
-- @number[opt] timeout seconds (nil: as long as it takes)
-- @return readable, writable: the same objects, those ready
fdpass.poll = core.poll

--- What `wait_readable` and `wait_writable` sleep through: nil (the
-- default) makes them block in poll(2); a function(seconds) that yields to
-- the caller's event loop (in nginx's Lua module, `ngx.sleep`) makes them
-- poll without waiting and sleep through it between tries, 1 ms first,
-- doubling up to 16 ms, never past the timeout. A loop that can watch a
-- descriptor itself (cqueues, luv) should rather do that.
fdpass.waiter = nil

local function wait_for(x, writable, timeout, what)
  local set = { x }
  local readers, writers = (not writable) and set or nil, writable and set or nil
  local function ready(t)
    local r, w, code = core.poll(readers, writers, t)
    if not r then return nil, w, code end
    return #(writable and w or r) > 0
  end
  local waiter = fdpass.waiter
  if not waiter then
    local ok, err, code = ready(timeout)
    if ok then return true end
    if ok == nil then return nil, err, code end
    return nil, what .. ": timed out", "ETIMEDOUT"
  end
  local deadline = timeout and core.monotonic() + timeout
  local pause = 0.001
  while true do
    local ok, err, code = ready(0)
    if ok then return true end
    if ok == nil then return nil, err, code end
    local left = deadline and deadline - core.monotonic()
    if left and left <= 0 then return nil, what .. ": timed out", "ETIMEDOUT" end
    waiter(left and math.min(pause, left) or pause)
    pause = math.min(pause * 2, 0.016)
  end
end

--- Waits until `x` is readable (a hang-up counts), through `fdpass.waiter`
-- when one is set.
-- @param x anything `send` accepts
-- @number[opt] timeout seconds (nil: as long as it takes)
-- @return true, or `nil, msg, "ETIMEDOUT"`
function fdpass.wait_readable(x, timeout)
  return wait_for(x, false, timeout, "wait_readable")
end

--- Waits until `x` is writable, as `wait_readable` does.
-- @param x anything `send` accepts
-- @number[opt] timeout seconds
-- @return true, or `nil, msg, "ETIMEDOUT"`
function fdpass.wait_writable(x, timeout)
  return wait_for(x, true, timeout, "wait_writable")
end

--- A non-blocking TCP listener (numeric addresses), for loops without an
-- event library: `accept` takes its connections, and fd objects have
-- `read([max])` and `write(data, [i])`.
-- @function tcp_listen
-- @string host
-- @int port
-- @int[opt] backlog
-- @return fd object
fdpass.tcp_listen = core.tcp_listen

--- A non-blocking TCP connection (numeric addresses).
-- @function tcp_connect
-- @string host
-- @int port
-- @number[opt] timeout seconds
-- @return fd object
fdpass.tcp_connect = core.tcp_connect

--- The next connection of a `tcp_listen` listener.
-- @function accept
-- @param listener
-- @return fd object, or `nil, msg, "EAGAIN"` when none is waiting
fdpass.accept = core.accept

--- Signals as a descriptor: `fdpass.signals{"HUP", "USR2"}` blocks them and
-- returns an fd object that polls readable when one arrives.
-- @function signals
-- @tparam table names
-- @return fd object
fdpass.signals = core.signals

--- The name of the next signal of a `signals` descriptor ("HUP").
-- @function readsignal
-- @param fd
-- @treturn string the name, or `nil, msg, "EAGAIN"` when none is pending
fdpass.readsignal = core.readsignal

--- Seconds on CLOCK_MONOTONIC: what deadlines are measured with.
-- @function monotonic
-- @treturn number
fdpass.monotonic = core.monotonic

--- A binary encoding of nil, booleans, numbers, strings and tables of them.
-- @function encode
-- @param value
-- @treturn string
fdpass.encode = core.encode

--- The value `encode` made of `s`. Checks every byte (it reads what another
-- process sent): `nil, msg, "EPROTO"` on anything else.
-- @function decode
-- @string s
-- @return value
fdpass.decode = core.decode

--- One datagram with descriptors to a named AF_UNIX datagram socket (what
-- sd_notify sends to NOTIFY_SOCKET), from a socket made for it.
-- @function dgram_send
-- @string addr a path or "@name"
-- @string data
-- @tparam[opt] table fds anything `send` accepts
-- @number[opt] timeout seconds a full queue may be waited for
-- @treturn int bytes sent, or `nil, msg, code` ("EAGAIN", "ETIMEDOUT", "ECONNREFUSED", ...)
fdpass.dgram_send = core.dgram_send

--- A datagram socket bound on `addr` (non-blocking, SO_PASSCRED): the
-- receiving end of `dgram_send`.
-- @function dgram_bind
-- @string addr a path or "@name"
-- @int[opt=0600] mode of a path socket, whatever the umask
-- @return fd object, or `nil, msg, code`
fdpass.dgram_bind = core.dgram_bind

--- The next datagram of a `dgram_bind` socket.
-- @function dgram_recv
-- @param sock
-- @int[opt] maxbytes
-- @int[opt] maxfds
-- @number[opt] timeout seconds (nil: wait)
-- @return data, fds, pid, uid, gid (the sender, as the kernel vouches for
--   it), or `nil, msg, code`
fdpass.dgram_recv = core.dgram_recv

--- Sets (or with nil, removes) a variable of this process's environment,
-- which the processes it starts inherit.
-- @function setenv
-- @string name
-- @tparam ?string value
-- @return true, or `nil, msg, code`
fdpass.setenv = core.setenv

-- LuaSocket's setfd() only swaps the number inside an object: it closes
-- nothing, sets no flag and leaves the object's class as it was, and a
-- fresh socket.tcp() is a "master" on which accept(), send() and receive()
-- raise. The only public ways to a server or a client are listen() and
-- connect(), so the adapter calls them on the adopted socket: listen(2)
-- again on a listener only sets its queue length; connect(2) on a connected
-- socket fails with EISCONN (or completes a non-blocking connect), and
-- LuaSocket makes the object a client either way. socket.tcp4/tcp6 rather
-- than socket.tcp: LuaSocket 3's tcp() has no family yet, and its connect()
-- would close the adopted descriptor to make a socket of its own.
local function luasocket_error(what, msg)
  msg = tostring(msg)
  local name = msg:lower():find("too many open files", 1, true) and "EMFILE" or "EIO"
  return nil, "luasocket: " .. what .. ": " .. msg, name
end

--- A LuaSocket object (LuaSocket 3) for a received TCP socket: a
-- `tcp{server}` for a listener, a `tcp{client}` for a connection.
-- The descriptor is the LuaSocket object's from then on (an fd object is
-- detached, an integer adopted): its `close()` closes it, once. Sets
-- O_NONBLOCK if it is not set, as LuaSocket does on every socket it makes
-- (its timeouts rely on it); the flag belongs to the open file, so the
-- sender's copy has it too. Bytes a LuaSocket object had already read into
-- its own buffer stay with the sender: send a connection only when its
-- `dirty()` is false.
-- @param x an fd object or an integer: a TCP socket, listening or connected
-- @int[opt] backlog a listener is put through listen() again, which sets
--   its queue length: this one, or the system's maximum (net.core.somaxconn)
-- @return the LuaSocket object, or `nil, msg, ERRNAME`: `ENOTSOCK`,
--   `EAFNOSUPPORT` (not IPv4/IPv6), `EPROTOTYPE` (not a stream), `ENOTCONN`
--   (neither listening nor connected) leave `x` as it was; `EMFILE` or
--   `EIO` when LuaSocket fails, after which the descriptor is closed if it
--   had been handed over
function fdpass.luasocket(x, backlog)
  local object = type(x) == "userdata" and getmetatable(x) and getmetatable(x).__name == "fdpass.fd"
  if type(x) ~= "number" and not object then
    error("bad argument #1 to 'luasocket' (fdpass.fd or integer expected, got " .. type(x) .. ")", 2)
  end
  if backlog ~= nil and type(backlog) ~= "number" then
    error("bad argument #2 to 'luasocket' (number expected, got " .. type(backlog) .. ")", 2)
  end
  local info, msg, code = core.info(x)
  if not info then return nil, "luasocket: " .. msg, code end
  if info.kind ~= "socket" then
    return nil, "luasocket: not a socket but a " .. info.kind, "ENOTSOCK"
  elseif info.family ~= "inet" and info.family ~= "inet6" then
    return nil, "luasocket: not an IPv4 or IPv6 socket but " .. info.family, "EAFNOSUPPORT"
  elseif info.socktype ~= "stream" then
    return nil, "luasocket: not a stream socket but " .. info.socktype, "EPROTOTYPE"
  end
  local host, port
  if not info.listening then
    if not info.peer then return nil, "luasocket: neither listening nor connected", "ENOTCONN" end
    host, port = info.peer:match("^%[(.*)%]:(%d+)$")
    if not host then host, port = info.peer:match("^(.*):(%d+)$") end
  end
  local socket = require "socket"
  local make = socket.tcp4 or socket.tcp
  if info.family == "inet6" then make = socket.tcp6 end
  if not make then return nil, "luasocket: this LuaSocket has no IPv6", "EAFNOSUPPORT" end
  local s, err = make()
  if not s then return luasocket_error("tcp", err) end
  s:close() -- the descriptor LuaSocket made for it: setfd would leak it
  local f = object and x or core.fd(x)
  if not info.nonblock then
    local ok, why, name = f:nonblock(true)
    if not ok then
      if not object then f:detach() end -- the caller's integer, as it was
      return nil, "luasocket: " .. why, name
    end
  end
  s:setfd(f:detach())
  local ok, why
  if info.listening then
    ok, why = s:listen(backlog or 65535) -- the kernel caps it at somaxconn
  else
    ok, why = s:connect(host, port)
    if not ok and why == "already connected" then ok = true end
  end
  local class = info.listening and "tcp{server}" or "tcp{client}"
  if not ok or tostring(s):sub(1, #class) ~= class then
    s:close()
    return luasocket_error(info.listening and "listen" or "connect", why or ("not a " .. class))
  end
  return s
end

return fdpass
