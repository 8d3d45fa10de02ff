--- The socket kit around fd passing: TCP listeners and connections and a
-- non-blocking accept, for loops without an event library; and AF_UNIX
-- datagrams with descriptors and the sender's credentials, as systemd's
-- notify socket speaks them. Ports are 0 .. 65535 (anything else raises);
-- addresses are numeric.
-- @module fdpass.net
local core = require "fdpass.core"

local M = {}

--- A non-blocking TCP listener: `accept` takes its connections, and fd
-- objects have `read([max])` and `write(data, [i])`.
-- @function tcp_listen
-- @string host a numeric address
-- @int port 0 picks one (see `fd:info().addr`)
-- @int[opt=SOMAXCONN] backlog
-- @return fd object
M.tcp_listen = core.tcp_listen

--- A non-blocking TCP connection.
-- @function tcp_connect
-- @string host a numeric address
-- @int port
-- @number[opt] timeout seconds
-- @return fd object
M.tcp_connect = core.tcp_connect

--- The next connection of a `tcp_listen` listener.
-- @function accept
-- @param listener
-- @return fd object (non-blocking), or `nil, msg, "EAGAIN"` when none is waiting
M.accept = core.accept

--- One datagram with descriptors to a named AF_UNIX datagram socket (what
-- sd_notify sends to NOTIFY_SOCKET), from a socket made for it.
-- @function dgram_send
-- @string addr a path or "@name"
-- @string data
-- @tparam[opt] table fds anything `fdpass.dup` accepts
-- @number[opt] timeout seconds a full queue may be waited for
-- @treturn int bytes sent, or `nil, msg, code` ("EAGAIN", "ETIMEDOUT", "ECONNREFUSED", ...)
M.dgram_send = core.dgram_send

--- A datagram socket bound on `addr` (non-blocking, SO_PASSCRED): the
-- receiving end of `dgram_send`.
-- @function dgram_bind
-- @string addr a path or "@name"
-- @int[opt=0600] mode of a path socket, whatever the umask
-- @return fd object, or `nil, msg, code`
M.dgram_bind = core.dgram_bind

--- The next datagram of a `dgram_bind` socket.
-- @function dgram_recv
-- @param sock
-- @int[opt] maxbytes
-- @int[opt] maxfds
-- @number[opt] timeout seconds (nil: wait)
-- @return data, fds, pid, uid, gid (the sender, as the kernel vouches for
--   it), or `nil, msg, code`
M.dgram_recv = core.dgram_recv

return M
