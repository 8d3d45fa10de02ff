--- Upgrades for a copas server (LuaSocket coroutines), in a few lines:
--
--     local ad = require("fdpass.adapters.copas").new { control = "@myapp", pidfile = "/run/myapp.pid" }
--     ad:state(stats)                                   -- a table that survives upgrades
--     local function handler(skt)
--       skt = copas.wrap(skt)
--       while ad:boundary(skt) do                       -- each request starts here
--         local close = ad.draining                     -- answer with Connection: close if true
--         ... read one request, answer it ...
--       end
--     end
--     ad:addserver(ad:listener("http", socket.bind, "127.0.0.1", 8080), handler)
--     ad:loop()                                         -- instead of copas.loop()
--
-- The handler gets a LuaSocket-like object: `receive`, `send`,
-- `settimeout`, `getfd`, `dirty`, and anything else of the socket's. It
-- serves the bytes another process had read before the socket's own, which
-- is how a connection handed over mid-stream continues where it was.
-- `ad:boundary(skt)` marks a request boundary: it returns false when the
-- connection left (handed over to the new copy with what was read of the
-- next request, or closed at the drain deadline) and the handler must
-- return. A connection idle at its boundary when the upgrade commits is
-- handed over at once: its handler wakes and its next `receive` says
-- "closed".
--
-- The upgrader is one of copas' sockets to copas: a copas thread waits on
-- it with `copas.receive` (its `getfd()`), so an upgrade runs inside
-- `copas.step` without polling. Copas 1.1 (Debian's) cannot remove a
-- server, so after the commit the listener's `getfd()` answers -1, which
-- takes it out of `socket.select`; where `copas.removeserver` exists
-- (copas 2 and later) it is used. Nothing else used here differs between
-- copas 1.1 and 4 (`addserver`, `addthread`, `receive`, `step`).
-- @module fdpass.adapters.copas
local copas = require "copas"
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local core = require "fdpass.adapters.core"

local M = {}

local Adapter = {}
Adapter.__index = Adapter

-- LuaSocket makes its sockets without FD_CLOEXEC: every new copy would
-- inherit them (its descriptors grow by the connections of its old
-- process, and each holds the connection open). Set on what we accept
-- and on the listener we make.
local function cloexec(sock)
  local f = fdpass.fd(sock:getfd())
  f:cloexec(true)
  f:detach() -- the descriptor stays LuaSocket's
end

-- ---- a connection: a LuaSocket client with bytes in front of it ------------------

-- An object's methods first, then the socket's own, called on the socket.
local function index_with(methods)
  return function(self, k)
    local m = methods[k]
    if m then return m end
    local sock = rawget(self, "sock")
    local f = sock and sock[k]
    if type(f) == "function" then
      return function(_, ...) return f(sock, ...) end
    end
  end
end

local conn_methods = {}
local Conn = { __index = index_with(conn_methods) }
Conn.__tostring = function(self) return "fdpass.copas.conn{" .. tostring(rawget(self, "sock")) .. "}" end

local function new_conn(ad, sock, prefix, name)
  return setmetatable({ ad = ad, sock = sock, prefix = prefix or "", name = name, boundary = false }, Conn)
end

function conn_methods:getfd()
  return self.sock and self.sock:getfd() or -1
end

-- A connection with bytes of its own, or one that must wake to learn it
-- left, is ready without the kernel: LuaSocket's select returns it at once.
function conn_methods:dirty()
  return self.prefix ~= "" or self.left ~= nil or (self.sock ~= nil and self.sock:dirty())
end

function conn_methods:settimeout(t, m)
  if self.sock then return self.sock:settimeout(t, m) end
  return 1
end

function conn_methods:send(...)
  if not self.sock then return nil, "closed" end
  return self.sock:send(...)
end

-- LuaSocket's receive, the prefix first.
function conn_methods:receive(pattern, part)
  if self.left then
    self:release(self.left)
    return nil, "closed", part
  end
  if not self.sock then return nil, "closed", part end
  pattern = pattern or "*l"
  local have = (part or "") .. self.prefix
  self.prefix = ""
  local data, err, partial
  if have ~= "" and (pattern == "*l" or pattern == "*L") then
    local nl = have:find("\n", 1, true)
    if nl then
      data, self.prefix = have:sub(1, nl - 1):gsub("\r", ""), have:sub(nl + 1)
      if pattern == "*L" then data = data .. "\n" end
    end
  elseif have ~= "" and type(pattern) == "number" and #have >= pattern then
    data, self.prefix = have:sub(1, pattern), have:sub(pattern + 1)
  end
  if not data then data, err, partial = self.sock:receive(pattern, have) end
  -- A line not yet whole keeps a connection at its boundary: copas holds
  -- the partial line and gives it back to the next receive, and a handover
  -- takes it along (self.part).
  local line = pattern == "*l" or pattern == "*L"
  if data or (partial and partial ~= "" and not line) then self.boundary = false end
  self.part = self.boundary and line and partial or nil
  if err == "closed" then self.peer_closed = true end
  return data, err, partial
end

-- Our copy of the socket goes; `why` for the counts.
function conn_methods:release(why)
  if not self.sock then return end
  self.sock:close()
  self.sock = nil
  self.ad.core:remove(self, why)
end

function conn_methods:close()
  if not self.sock then return 1 end
  local c = self.ad.core
  self:release((self.peer_closed or not c.committed) and "peer" or "polite")
  c:check()
  return 1
end

-- At a request boundary: the prefix and whatever the kernel has now are
-- the bytes read of the next request.
function conn_methods:take_buffered()
  local got = (self.part or "") .. self.prefix
  self.part = nil
  self.prefix = ""
  self.sock:settimeout(0)
  local data, err, partial = self.sock:receive(1048576)
  if err == "closed" then return nil end
  return got .. (data or partial or "")
end

-- ---- a listener: LuaSocket's server, out of select once committed ----------------

local listener_methods = setmetatable({}, { __index = conn_methods })
local Listener = { __index = index_with(listener_methods) }
Listener.__tostring = function(self) return "fdpass.copas.listener{" .. tostring(rawget(self, "sock")) .. "}" end

local function new_listener(ad, sock, name)
  return setmetatable({ ad = ad, sock = sock, prefix = "", name = name }, Listener)
end

function listener_methods:getfd()
  if self.ad.core.committed then return -1 end -- copas 1.1 cannot remove a server
  return self.sock:getfd()
end

function listener_methods.dirty() return false end

function listener_methods:accept()
  if self.ad.core.committed then return nil, "closed" end
  local s, err = self.sock:accept()
  if not s then return nil, err end
  cloexec(s)
  local c = new_conn(self.ad, s, "", self.name)
  self.ad.core:add(c, nil, "accepted")
  return c
end

-- ---- the adapter -----------------------------------------------------------------

--- Creates the adapter and the process's upgrader (options of
-- `fdpass.adapters.core.new`: `control`, `pidfile`, `mode`, `drain`, ...);
-- `nil, msg, ERRNAME` when the world refuses (no descriptor left, ...).
function M.new(opts)
  local c, err, code = core.new(opts, "fdpass.adapters.copas.new", 3)
  if not c then return nil, err, code end
  local self = setmetatable({ handlers = {}, listeners = {}, core = c }, Adapter)
  self.generation = c.generation
  self.draining = false
  c.on_commit = function() self:committed() end
  c.on_deadline = function() self:deadline() end
  c.on_connection = function(conn) self:adopt(conn) end
  return self
end

--- Keeps the table `t` across upgrades (counters add up); returns it.
function Adapter:state(t)
  return self.core:state(t)
end

--- Starts an upgrade from Lua (SIGHUP and the control socket do the same).
function Adapter:upgrade()
  return self.core:upgrade()
end

--- The listener called `name`: inherited from the old process, or
-- `make(...)`'s (e.g. `socket.bind, "127.0.0.1", 8080`). Raises if it
-- cannot be made.
function Adapter:listener(name, make, ...)
  local args, n = { ... }, select("#", ...)
  local unpack = table.unpack or unpack -- luacheck: read globals table.unpack unpack
  local sock = self.core:listener(name, function()
    local s, err = make(unpack(args, 1, n))
    if s then cloexec(s) end
    return s, err
  end, function(fd) return fdpass.luasocket(fd) end)
  local l = new_listener(self, sock, name)
  self.listeners[#self.listeners + 1] = l
  return l
end

--- `copas.addserver` for a listener of `listener()`: `handler(skt)` serves
-- each connection, accepted here or handed over by the old process.
function Adapter:addserver(listener, handler, timeout)
  assert(getmetatable(listener) == Listener, "bad argument #1 to 'addserver' (a listener of ad:listener expected)")
  self.handlers[listener.name] = handler
  copas.addserver(listener, handler, timeout)
end

--- Marks a request boundary of `skt` (the handler's socket, copas-wrapped
-- or not): true to go on, false when the connection left this process
-- (the handler returns).
function Adapter:boundary(skt)
  local conn = getmetatable(skt) == Conn and skt or skt.socket
  if not conn.sock then return false end
  local c = self.core
  if c.committed and not c.draining then
    self:hand { conn }
    return false
  end
  if c.draining and c.deadline_passed then
    conn:release("polite")
    c:check()
    return false
  end
  conn.boundary = true
  return true
end

function Adapter:hand(list)
  local batch = {}
  for _, conn in ipairs(list) do
    local buffered = conn:take_buffered()
    if buffered then
      batch[#batch + 1] = { conn = conn, name = conn.name, buffered = buffered }
    else
      conn:release("peer")
    end
  end
  self.core:hand(batch)
  for _, e in ipairs(batch) do
    -- keep the descriptor until the handler wakes (dirty) and hears
    -- "closed": LuaSocket's select skips a socket whose descriptor is gone
    e.conn.left = "handed"
  end
  self.core:check()
end

function Adapter:committed()
  self.draining = self.core.draining
  for _, l in ipairs(self.listeners) do
    if copas.removeserver then copas.removeserver(l, true) end -- copas 2+
  end
  if not self.draining then -- idle ones at their boundary: at once
    local idle = {}
    for conn in self.core:each() do
      if conn.boundary and conn.sock then idle[#idle + 1] = conn end
    end
    self:hand(idle)
  end
end

function Adapter:deadline()
  for conn in self.core:each() do
    if conn.boundary and conn.sock and not conn.left then
      conn.left = "polite" -- wakes, hears "closed", goes
    end
  end
end

-- A live connection from the old process: served by the handler of its
-- listener's name, in a thread of its own.
function Adapter:adopt(got)
  local handler = self.handlers[got.name]
  local sock = handler and fdpass.luasocket(got.fd)
  if not sock then
    if got.fd.close then got.fd:close() end
    return
  end
  sock:settimeout(0)
  local conn = new_conn(self, sock, got.buffered, got.name)
  self.core:add(conn, nil, "adopted")
  copas.addthread(function()
    handler(conn)
    if copas.autoclose ~= false then conn:close() end
  end)
end

-- The upgrader as copas sees it: a "socket" whose receive runs one
-- bounded step of the upgrader and says "timeout", so copas waits on its
-- descriptor again.
local function upgrader_socket(c)
  local fd = c.up:getfd()
  return setmetatable({}, { __index = {
    getfd = function() return fd end,
    dirty = function() return false end,
    settimeout = function() return 1 end,
    receive = function(_, _, part)
      c:pump()
      return nil, "timeout", part
    end,
  }, __tostring = function() return "fdpass.upgrader" end })
end

--- Runs copas with the upgrader until this process has handed over (it
-- exits then): use instead of `copas.loop()`.
function Adapter:loop()
  local c = self.core
  c:settle()
  local up = upgrader_socket(c)
  copas.addthread(function()
    while true do copas.receive(up) end
  end)
  while true do
    local t = c:timeout()
    copas.step(t and math.min(t, 1) or 1)
    if (c:timeout() or 1) <= 0 then c:pump() end -- a deadline passed
  end
end

M.now = fos.monotonic

return M
