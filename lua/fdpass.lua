--- fdpass: pass open file descriptors between processes over Unix sockets.
-- The C core (`fdpass.core`) does the system calls; this face fills in
-- defaults and options, and is where Lua users read what a call does.
-- Failures of the world return `nil, "what: why", "ERRNAME"`; a wrong
-- argument raises.
-- @module fdpass
local core = require "fdpass.core"

local fdpass = {
  _VERSION = core._VERSION,
  MAX_FDS_PER_SENDMSG = core.MAX_FDS_PER_SENDMSG,
}

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

--- How many descriptors this process holds.
fdpass.fdcount = core.fdcount

--- RLIMIT_NOFILE: returns soft, hard; sets the soft limit when given.
fdpass.nofile = core.nofile

--- Start a program without a shell.
-- @tparam table argv program and arguments; the program is looked up in PATH
-- @tparam[opt] table opts `{fds = {[3] = ch, ...}, env = {NAME = "value"}}`:
--   `fds` maps descriptor numbers in the child to anything `send` accepts
--   (0, 1 and 2 are inherited unless mapped); `env` replaces the environment
-- @return process with `pid()`, `wait([timeout])` -> "exit"|"signal", n,
--   and `kill([signal])`
function fdpass.spawn(argv, opts)
  opts = opts or {}
  return core.spawn(argv, opts.fds, opts.env)
end

fdpass.getpid = core.getpid
fdpass.kill = core.kill

return fdpass
