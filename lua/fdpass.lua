--- fdpass: pass open file descriptors between processes over Unix sockets.
-- The C core (`fdpass.core`) does the system calls; this face fills in
-- defaults and options, and is where Lua users read what a call does.
-- Failures of the world return `nil, "what: why", "ERRNAME"`; a wrong
-- argument raises.
-- @module fdpass
local core = require "fdpass.core"

local fdpass = {
  _VERSION = core._VERSION,
  --- Descriptors one sendmsg may carry (the kernel's SCM_MAX_FD, 253).
  MAX_FDS_PER_SENDMSG = core.MAX_FDS_PER_SENDMSG,
  --- Payload bytes in one framed record.
  RECORD_MAX = core.RECORD_MAX,
}

--- A connected pair of channels.
-- @function socketpair
-- @string[opt="seqpacket"] kind "seqpacket" (message boundaries kept) or "stream"
-- @return channel, channel
fdpass.socketpair = core.socketpair

--- Listen on `addr`: "@name" for a Linux abstract name, anything else a path.
-- @function listen
-- @string addr
-- @tparam[opt] table|string opts a kind, or `{kind=, mode=0600, backlog=}`
--   (another key raises, naming it); a path socket gets exactly `mode`
--   whatever the umask
-- @return server
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
--   descriptor over; either is left as it was when it is refused
-- @return channel, or `nil, msg, code` ("ENOTSOCK", ...)
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

--- Start a program without a shell.
-- @function spawn
-- @tparam table argv program and arguments; the program is looked up in PATH
-- @tparam[opt] table opts `{fds = {[3] = ch, ...}, env = {NAME = "value"},
--   setenv = {NAME = "value" or false}}`: `fds` maps descriptor numbers in
--   the child to anything `send` accepts (0, 1 and 2 are inherited unless
--   mapped; every other descriptor of ours is close-on-exec); `env`
--   replaces the environment, `setenv` changes this one for the child.
--   The child starts with no signal blocked.
-- @return process with `pid()`, `wait([timeout])` -> "exit"|"signal", n,
--   and `kill([signal])` (the signal names of `fdpass.os.signals`); an
--   unknown key in opts raises, naming it
fdpass.spawn = core.spawn

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

-- The kits' functions moved to fdpass.os, fdpass.net, fdpass.loop and
-- fdpass.codec: asking fdpass for one says where it went, rather than
-- giving nil to call.
do
  local moved = {}
  for _, kit in ipairs { "os", "net", "loop", "codec" } do
    for k in pairs(require("fdpass." .. kit)) do moved[k] = kit end
  end
  moved.waiter = "loop"
  setmetatable(fdpass, {
    __index = function(_, k)
      if moved[k] then error(("fdpass.%s moved: it is fdpass.%s.%s"):format(k, moved[k], k), 2) end
    end,
    __newindex = function(t, k, v)
      if moved[k] then error(("fdpass.%s moved: set fdpass.%s.%s"):format(k, moved[k], k), 2) end
      rawset(t, k, v)
    end,
  })
end

return fdpass
