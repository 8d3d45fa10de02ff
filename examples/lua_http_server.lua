-- A lua-http keep-alive HTTP server: every answer names the serving pid and
-- counts the requests served. lua_http_plain.lua is the plain server;
-- lua_http_server.lua is the same server upgrading itself with fdpass: on
-- SIGHUP or `bin/fdpass-upgrade CONTROL_ADDR` a new copy takes over its
-- listener, its counter and its keep-alive connections. UPGRADE_MODE=drain:
-- they are closed politely instead (idle ones after UPGRADE_DRAIN seconds).
-- `diff lua_http_plain.lua lua_http_server.lua` shows what it takes.
--
-- usage: lua5.1 examples/lua_http_plain.lua PORT
--        lua5.1 examples/lua_http_server.lua PORT CONTROL_ADDR [PIDFILE]
local http_headers = require "http.headers"

local port = assert(tonumber(arg[1]), "usage: " .. arg[0] .. " PORT [CONTROL_ADDR [PIDFILE]]")
local pid = io.open("/proc/self/stat"):read("*n")
local stats = { served = 0 }
local ad = require("fdpass.adapters.http").new { control = arg[2], pidfile = arg[3], state = stats,
  mode = os.getenv("UPGRADE_MODE"), drain = tonumber(os.getenv("UPGRADE_DRAIN") or "") }

local function onstream(_, stream)
  assert(stream:get_headers())
  stats.served = stats.served + 1
  local body = ("%d served %d\n"):format(pid, stats.served)
  local headers = http_headers.new()
  headers:append(":status", "200")
  headers:append("content-type", "text/plain")
  headers:append("content-length", tostring(#body))
  stream:write_headers(headers, false)
  stream:write_chunk(body, true)
end

local server = assert(ad:listen { host = "127.0.0.1", port = port, tls = false, onstream = onstream })
assert(server:loop())
