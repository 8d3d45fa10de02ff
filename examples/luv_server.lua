-- A luv (libuv) keep-alive HTTP server: every answer names the serving pid
-- and counts the requests served. luv_plain.lua is the plain server;
-- luv_server.lua is the same server upgrading itself with fdpass: on SIGHUP
-- or `bin/fdpass-upgrade CONTROL_ADDR` a new copy takes over its listener,
-- its counter and its keep-alive connections. UPGRADE_MODE=drain: they are
-- closed politely instead (idle ones after UPGRADE_DRAIN seconds).
-- `diff luv_plain.lua luv_server.lua` shows what it takes.
--
-- usage: lua5.4 examples/luv_plain.lua PORT
--        lua5.4 examples/luv_server.lua PORT CONTROL_ADDR [PIDFILE]
local uv = require "luv"

local port = assert(tonumber(arg[1]), "usage: " .. arg[0] .. " PORT [CONTROL_ADDR [PIDFILE]]")
local pid = io.open("/proc/self/stat"):read("*n")
local stats = { served = 0 }
local ad = require("fdpass.adapters.luv").new { control = arg[2], pidfile = arg[3], state = stats,
  mode = os.getenv("UPGRADE_MODE"), drain = tonumber(os.getenv("UPGRADE_DRAIN") or "") }

-- Answers every complete request at the start of buf; returns the rest
-- (a request not yet complete), or nil once the connection is closing.
local function answer(tcp, buf)
  while true do
    local head_end = buf:find("\r\n\r\n", 1, true)
    if not head_end then return buf end
    local head = buf:sub(1, head_end):lower()
    local length = tonumber(head:match("\ncontent%-length:%s*(%d+)")) or 0
    if #buf < head_end + 3 + length then return buf end
    buf = buf:sub(head_end + 4 + length)
    local close = ad.draining or head:find("\nconnection:%s*close") ~= nil
    stats.served = stats.served + 1
    local body = ("%d served %d\n"):format(pid, stats.served)
    tcp:write(("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s")
      :format(#body, close and "Connection: close\r\n" or "", body))
    if close then
      tcp:read_stop()
      tcp:shutdown(function() tcp:close() end)
      return nil
    end
  end
end

-- One connection; buf: bytes of it read but not answered yet.
local function serve(tcp, buf)
  ad:track(tcp, function() return buf end)
  buf = answer(tcp, buf)
  tcp:read_start(function(err, data)
    if err or not data then
      tcp:read_stop()
      if not tcp:is_closing() then tcp:close() end
    elseif buf then
      buf = answer(tcp, buf .. data)
    end
  end)
end

ad:on_connection(serve)
local server = ad:listener("http", "127.0.0.1", port)
assert(server:listen(128, function()
  local tcp = uv.new_tcp()
  if server:accept(tcp) then serve(tcp, "") else tcp:close() end
end))
uv.run()
