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
-- @string[opt="seqpacket"] kind "seqpacket" (message boundaries kept) or "stream"
-- @return channel, channel
fdpass.socketpair = core.socketpair

--- Listen on `addr`: "@name" for a Linux abstract name, anything else a path.
-- @string addr
-- @tparam[opt] table|string opts a kind, or `{kind=, mode=0600, backlog=}`;
--   a path socket gets exactly `mode` whatever the umask
-- @return server
function fdpass.listen(addr, opts)
  if type(opts) == "string" then opts = { kind = opts } end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'listen' (table or kind expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  return core.listen(addr, opts.kind, opts.mode, opts.backlog)
end

--- Connect to a server.
-- @string addr as for `listen`
-- @number[opt] timeout seconds (nil: wait as long as it takes)
-- @string[opt="seqpacket"] kind
-- @return channel
fdpass.connect = core.connect

--- Wrap a connected socket (an integer, which is adopted, or an fd object,
-- which hands its descriptor over) as a channel.
fdpass.channel = core.channel

--- An fd object that owns descriptor `n` from now on.
fdpass.fd = core.fd

--- An fd object owning a new descriptor (close-on-exec) for the same open
-- file as `x` (anything `send` accepts). `x` is left as it is.
fdpass.dup = core.dup

--- What a descriptor is: `{kind=, family=, socktype=, listening=, addr=, peer=, ...}`.
fdpass.info = core.info

--- `fdpass.close_all(list)`: closes an array of integers and fd objects;
-- returns how many it closed. (`ch:recv(timeout, "set")` gives an fd set:
-- `#set`, `set[i]`, `set:take(i)`, `set:close()`.)
fdpass.close_all = core.close_all

--- How many descriptors this process holds.
fdpass.fdcount = core.fdcount

--- RLIMIT_NOFILE: returns soft, hard; sets the soft limit when given.
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
function fdpass.spawn(argv, opts)
  opts = opts or {}
  return core.spawn(argv, opts.fds, opts.env, opts.setenv)
end

--- This process's pid; `fdpass.kill(pid, [signal="TERM"])` signals another.
fdpass.getpid = core.getpid
fdpass.kill = core.kill

--- An exclusive lock on `path` (created 0600), held by the returned fd
-- object until it is closed or the process dies;
-- `nil, msg, "EAGAIN"` while another process holds it.
fdpass.flock = core.flock

--- Wait for readiness: `readable, writable = fdpass.poll(readers, writers, [timeout])`,
-- both arrays of anything `send` accepts; hang-ups count as readable.
fdpass.poll = core.poll

--- Non-blocking TCP for loops without an event library:
-- `fdpass.tcp_listen(host, port, [backlog])`, `fdpass.tcp_connect(host, port, [timeout])`,
-- `fdpass.accept(listener)` give fd objects with `read([max])` and `write(data, [i])`.
fdpass.tcp_listen = core.tcp_listen

--- Signals as a descriptor: `fdpass.signals{"HUP", "USR2"}` blocks them and
-- returns an fd object that polls readable when one arrives;
-- `fdpass.readsignal(fd)` returns its name ("HUP").
fdpass.signals = core.signals

--- `fdpass.encode(value)` -> string and `fdpass.decode(string)` -> value:
-- nil, booleans, numbers, strings and tables of them; decode checks every
-- byte (it reads what another process sent).
fdpass.encode = core.encode

return fdpass
