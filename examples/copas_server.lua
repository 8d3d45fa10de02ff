-- A copas keep-alive HTTP server: every answer names the serving pid and
-- counts the requests served. copas_plain.lua is the plain server;
-- copas_server.lua is the same server upgrading itself with fdpass: on SIGHUP
-- or `bin/fdpass-upgrade CONTROL_ADDR` a new copy takes over its listener,
-- its counter and its keep-alive connections. UPGRADE_MODE=drain: they are
-- closed politely instead (idle ones after UPGRADE_DRAIN seconds).
-- `diff copas_plain.lua copas_server.lua` shows what it takes.
--
-- usage: lua5.1 examples/copas_plain.lua PORT
--        lua5.1 examples/copas_server.lua PORT CONTROL_ADDR [PIDFILE]
local copas = require "copas"
local socket = require "socket"

local port = assert(tonumber(arg[1]), "usage: " .. arg[0] .. " PORT [CONTROL_ADDR [PIDFILE]]")
local pid = io.open("/proc/self/stat"):read("*n")
local stats = { served = 0 }
local ad = require("fdpass.adapters.copas").new { control = arg[2], pidfile = arg[3], state = stats,
  mode = os.getenv("UPGRADE_MODE"), drain = tonumber(os.getenv("UPGRADE_DRAIN") or "") }

-- One connection: a request line, headers up to an empty line, a body of
-- Content-Length bytes; answered, and the next one read.
local function handler(skt)
  skt = copas.wrap(skt)
  while ad:boundary(skt) do
    local line = skt:receive("*l")
    if not line then return end
    local close, length = ad.draining, 0
    repeat
      local h = skt:receive("*l")
      if not h then return end
      local lower = h:lower()
      if lower:match("^connection:%s*close") then close = true end
      length = tonumber(lower:match("^content%-length:%s*(%d+)")) or length
    until h == ""
    if length > 0 and not skt:receive(length) then return end
    stats.served = stats.served + 1
    local body = ("%d served %d\n"):format(pid, stats.served)
    skt:send(("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s")
      :format(#body, close and "Connection: close\r\n" or "", body))
    if close then return end
  end
end

ad:addserver(ad:listener("http", socket.bind, "127.0.0.1", port), handler)
ad:loop()
