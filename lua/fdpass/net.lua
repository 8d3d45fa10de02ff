--- The socket kit around fd passing: TCP listeners and connections, a
-- non-blocking accept, and AF_UNIX datagrams (with descriptors and sender
-- credentials, as systemd's notify socket speaks them).
-- @module fdpass.net
local core = require "fdpass.core"

return {
  tcp_listen = core.tcp_listen, tcp_connect = core.tcp_connect, accept = core.accept,
  dgram_send = core.dgram_send, dgram_bind = core.dgram_bind, dgram_recv = core.dgram_recv,
}
