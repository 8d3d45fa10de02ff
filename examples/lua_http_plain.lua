-- A plain lua-http keep-alive server: every answer names the serving pid
-- and counts the requests served. Compare with lua_http_server.lua, the
-- same server upgrading itself with fdpass (`diff` them).
--
-- usage: lua5.1 examples/lua_http_plain.lua PORT
local http_server = require "http.server"
local http_headers = require "http.headers"

local port = assert(tonumber(arg[1]), "usage: " .. arg[0] .. " PORT [CONTROL_ADDR [PIDFILE]]")
local pid = io.open("/proc/self/stat"):read("*n")
local stats = { served = 0 }

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

local server = assert(http_server.listen { host = "127.0.0.1", port = port, tls = false, onstream = onstream })
assert(server:loop())
