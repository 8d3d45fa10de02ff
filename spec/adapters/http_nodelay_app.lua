-- A lua-http server on fdpass.adapters.http for the TCP_NODELAY spec: each
-- answer says which process served it and whether TCP_NODELAY is on for
-- the connection it came on ("PID nodelay=true"). NAIVE=1 adopts handed-over
-- connections the naive way, cqueues.socket.fdopen(fd:detach()), which
-- the spec must see fail.
-- usage: lua5.1 spec/adapters/http_nodelay_app.lua PORT CONTROL_ADDR PIDFILE
local http_headers = require "http.headers"
local socket = require "socket"
local fdpass = require "fdpass"
local cqa = require "fdpass.adapters.cqueues"

if os.getenv("NAIVE") == "1" then
  local cs = require "cqueues.socket"
  cqa.fdopen = function(fd) return cs.fdopen(fd:detach()) end
end

local pid = io.open("/proc/self/stat"):read("*n")
local ad = require("fdpass.adapters.http").new { control = arg[2], pidfile = arg[3] }

-- TCP_NODELAY of a descriptor, read through a LuaSocket object on a copy.
local function nodelay(n)
  local s = socket.tcp()
  s:close()
  s:setfd(fdpass.dup(n):detach())
  local v = s:getoption("tcp-nodelay")
  s:close()
  return v
end

local function onstream(_, stream)
  stream:get_headers()
  local body = ("%d nodelay=%s\n"):format(pid, tostring(nodelay(stream.connection.socket:pollfd())))
  local headers = http_headers.new()
  headers:append(":status", "200")
  headers:append("content-length", tostring(#body))
  stream:write_headers(headers, false)
  stream:write_chunk(body, true)
end

local server = assert(ad:listen { host = "127.0.0.1", port = tonumber(arg[1]), onstream = onstream })
assert(server:loop())
