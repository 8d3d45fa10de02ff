--- Upgrades for a lua-http server (`http.server` on cqueues), in three
-- lines: the app keeps its `onstream` handler and its `server:loop()`.
--
--     local ad = require("fdpass.adapters.http").new { control = "@myapp", pidfile = "/run/myapp.pid" }
--     local stats = ad:state { served = 0 }     -- survives upgrades
--     local server = ad:listen { host = "127.0.0.1", port = 8080, onstream = onstream }
--     assert(server:loop())
--
-- `ad:listen` takes `http.server.listen`'s options and returns its kind of
-- server object; the listener is inherited from the old process (by the
-- name "http", or `name`) or made fresh. SIGHUP, the control socket
-- (`bin/fdpass-upgrade ADDR`) or `ad:upgrade()` start an upgrade; once the
-- new copy committed this process stops accepting and, by `mode`:
--
-- * "handover" (default): each keep-alive connection goes to the new copy
--   at its next request boundary (no stream in flight), with the bytes
--   lua-http had read of the next request; idle ones at once.
-- * "drain": each connection's next answer says `Connection: close` and
--   the connection closes after it; at the `drain` deadline (seconds,
--   default 10) idle ones are closed.
--
-- Then the old process sends its final state and exits. Limits: HTTP/1.x
-- without TLS (a TLS session cannot change process; HTTP/2 connections are
-- not accepted here); connections are served one stream at a time
-- (pipelined requests are answered in order, as lua-http's h1 does).
-- @module fdpass.adapters.http
local cqueues = require "cqueues"
local cc = require "cqueues.condition"
local ce = require "cqueues.errno"
local cs = require "cqueues.socket"
local http_server = require "http.server"
local h1_connection = require "http.h1_connection"
local http_util = require "http.util"
local cqa = require "fdpass.adapters.cqueues"

local M = {}

local Adapter = {}
Adapter.__index = Adapter

local LISTEN_KEYS = { host = true, port = true, path = true, family = true, reuseaddr = true, reuseport = true,
  v6only = true, mode = true, mask = true, unlink = true }

--- Creates the adapter and the process's upgrader (options of
-- `fdpass.adapters.core.new`: `control`, `pidfile`, `mode`, `drain`, `log`,
-- ...; `cq` a cqueues controller to run in). `nil, msg, ERRNAME` when the
-- world refuses (no descriptor left, ...).
function M.new(opts)
  local self = setmetatable({}, Adapter)
  local a, err, code = cqa.new(opts, "fdpass.adapters.http.new", 4)
  if not a then return nil, err, code end
  self.cqa = a
  self.core = self.cqa.core
  self.cq = self.cqa.cq
  self.generation = self.core.generation
  self.wake = cc.new() -- signalled when idle connections must look again
  -- `ad.draining`, as in the copas and luv adapters: true once an upgrade
  -- committed in "drain" mode (answers then say `Connection: close`, set
  -- for you on every stream).
  self.draining = false
  self.core.on_commit = function()
    self.draining = self.core.draining
    self.wake:signal()
  end
  self.core.on_deadline = function() self.wake:signal() end
  return self
end

--- Keeps the table `t` across upgrades (counters add up): see
-- `fdpass.adapters.core`'s `state`.
function Adapter:state(t)
  return self.core:state(t)
end

--- Starts an upgrade from Lua (SIGHUP and the control socket do the same).
function Adapter:upgrade()
  return self.core:upgrade()
end


--- Like `http.server.listen(opts)`, with the listener inherited or made:
-- `opts.onstream(server, stream)` answers each request; `opts.name` the
-- listener's name ("http"). TLS is off (`tls` must not be true). Returns
-- the `http.server` object, whose `loop()` (or `step()`, or the `cq` it
-- runs in) serves.
function Adapter:listen(opts)
  assert(type(opts) == "table", "bad argument #1 to 'listen' (table expected)")
  assert(type(opts.onstream) == "function", "bad argument #1 to 'listen' (onstream function expected)")
  if opts.tls then error("bad option 'tls' to 'listen' (TLS connections cannot be handed over)", 2) end
  local name = opts.name or "http"
  local listener = self.cqa:listener(name, function()
    local lo = {}
    for k in pairs(LISTEN_KEYS) do lo[k] = opts[k] end
    local s, err = cs.listen(lo)
    if not s then return nil, err end
    local ok, lerr = s:listen() -- bind now: a busy port fails here, not in the loop
    if not ok then s:close(); return nil, ce.strerror(lerr) end
    return s
  end)
  local so = {}
  for k, v in pairs(opts) do
    if not LISTEN_KEYS[k] and k ~= "name" then so[k] = v end
  end
  so.cq, so.tls = self.cq, false
  local server = http_server.new(so) -- no socket: its accept loop is ours
  self.server = server
  listener:onerror(function(_, _, why) return why end)
  self.cqa.on_connection = function(sock, n) self:serve(sock, n, "adopted") end
  self.cq:wrap(function() self:accept_loop(listener, name) end)
  self.cqa:watch()
  return server
end

function Adapter:accept_loop(listener, name)
  local c = self.core
  while not c.committed do
    local sock, errno = listener:accept({ nodelay = true }, 0)
    if sock then
      self:serve(sock, name, "accepted")
    elseif errno == ce.ETIMEDOUT then
      cqueues.poll(listener, self.wake)
    elseif errno == ce.EMFILE or errno == ce.ENFILE then
      cqueues.poll(self.wake, 0.05) -- until a connection ends
    else
      self.core.log("accept: " .. tostring(ce.strerror(errno)))
      cqueues.poll(self.wake, 0.05)
    end
  end
  -- Committed: the new copy accepts on the same socket; what is queued
  -- stays queued for it.
  cqueues.cancel(listener:pollfd())
end

function Adapter:serve(sock, name, how)
  self.core:add(sock, name, how)
  self.cq:wrap(function() self:serve_conn(sock, name) end)
end

-- Hands the connection to the new copy at a request boundary, with the
-- bytes read but not handled.
function Adapter:hand(conn, sock, name)
  local buffered = ""
  local n = sock:pending()
  if n and n > 0 then buffered = sock:xread(n, "b", 0) or "" end
  self.core:hand { { conn = sock, name = name, buffered = buffered } }
  conn:take_socket() -- lua-http lets go of it (no shutdown: the socket lives on)
  sock:close()
  self.core:check()
end

-- At a request boundary: whether a whole request head is buffered (lua-http
-- then reads it without waiting), and how many bytes are. Until then the
-- connection stays at the boundary, so that an upgrade takes it with the
-- half-sent head.
local MAX_PEEK = 65536
local function head_ready(sock)
  local n = sock:pending()
  if n == 0 then return false, 0 end
  local data = sock:xread(n, "b", 0) or ""
  sock:unget(data)
  return n > MAX_PEEK or data:find("\r\n\r\n", 1, true) ~= nil, n
end

-- One connection, one stream at a time; between two streams it is at a
-- request boundary, where an upgrade takes it.
function Adapter:serve_conn(sock, name)
  local c, server = self.core, self.server
  local conn = h1_connection.new(sock, "server", 1.1)
  local why = "peer"
  local idle_until = cqueues.monotime() + server.intra_stream_timeout
  while true do
    if c.committed and not c.draining then
      self:hand(conn, sock, name)
      return
    end
    local ready, n = head_ready(sock)
    if c.draining and c.deadline_passed and n == 0 then
      why = "polite" -- idle at the deadline: closed between requests
      break
    end
    if not ready then
      local ok, _, errno = sock:fill(n + 1, 0)
      if not ok then
        if errno ~= ce.ETIMEDOUT then break end -- closed or failed
        local left = idle_until - cqueues.monotime()
        if left <= 0 then why = n == 0 and "polite" or "peer"; break end -- keep-alive timeout
        cqueues.poll(sock, self.wake, left)
      end
    else
      local stream = conn:get_next_incoming_stream(0)
      if not stream then break end
      if c.draining then stream.close_when_done = true end -- lua-http adds Connection: close
      local sok, err = http_util.yieldable_pcall(server.onstream, server, stream)
      stream:shutdown()
      if not sok then server:onerror()(server, stream, "onstream", err) end
      if stream.close_when_done or sock:eof("w") then
        why = c.draining and "polite" or "peer"
        break
      end
      idle_until = cqueues.monotime() + server.intra_stream_timeout
    end
  end
  conn:close()
  c:remove(sock, why)
  c:check()
end

return M
