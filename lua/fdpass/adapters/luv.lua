--- Upgrades for a luv (libuv) server, in a few lines:
--
--     local ad = require("fdpass.adapters.luv").new { control = "@myapp", pidfile = "/run/myapp.pid" }
--     ad:state(stats)                                -- a table that survives upgrades
--     local function serve(tcp, buf)                 -- one connection; buf: bytes not yet handled
--       ad:track(tcp, function() return buf end)     -- the adapter may take it at a boundary
--       ... tcp:read_start(...) answering each complete request of buf ...
--     end
--     ad:on_connection(serve)                        -- connections handed over by the old process
--     local server = ad:listener("http", "127.0.0.1", 8080)
--     server:listen(128, function() ... serve(tcp, "") end)
--     uv.run()
--
-- The upgrader is a `uv.new_poll` on its one descriptor (`up:fileno()`),
-- plus a timer for its deadlines; SIGHUP, the control socket and
-- `ad:upgrade()` start an upgrade. Once the new copy committed this process
-- closes its listener handles (the new copy accepts on the same sockets)
-- and, by `mode`:
--
-- * "handover" (default): every tracked connection goes to the new copy at
--   a request boundary, that is when luv has no write of it queued (the
--   app answers a request within its read callback), with the bytes the
--   app had not handled (`buf`, as the function given to `track` returns
--   them); it arrives in the new copy through `on_connection(tcp, buf)`.
-- * "drain": `ad.draining` is true: the app answers with `Connection:
--   close` and closes the connection; at the `drain` deadline the idle
--   ones (nothing queued, nothing unhandled) are closed.
--
-- Then the old process sends its final state and exits. Handed-over
-- handles are opened with `uv.new_tcp():open(fd)`; TCP_NODELAY and the
-- other socket options stay as they were (libuv does not reset them).
-- @module fdpass.adapters.luv
local uv = require "luv"
local core = require "fdpass.adapters.core"

local M = {}

local Adapter = {}
Adapter.__index = Adapter

local SWEEP = 1000 -- ms between sweeps of closed connections while serving

--- Creates the adapter and the process's upgrader (options of
-- `fdpass.adapters.core.new`: `control`, `pidfile`, `mode`, `drain`, ...),
-- and starts watching the upgrader in the default luv loop; `nil, msg,
-- ERRNAME` when the world refuses (no descriptor left, ...).
function M.new(opts)
  local c, err, code = core.new(opts, "fdpass.adapters.luv.new", 3)
  if not c then return nil, err, code end
  local self = setmetatable({ listeners = {}, draining = false, core = c }, Adapter)
  self.generation = c.generation
  c.on_commit = function() self:committed() end
  c.on_deadline = function() self:deadline() end
  c.on_connection = function(conn) self:adopt(conn) end
  c.on_exit = function() self.poll:stop() end
  self.poll = uv.new_poll(c.up:fileno())
  self.timer = uv.new_timer()
  self.poll:start("r", function() self:pump() end)
  -- Before the loop sleeps: the timer for the next deadline.
  self.prepare = uv.new_prepare()
  self.prepare:start(function()
    if not self.settled then self.settled = true; c:settle() end -- every listener asked for by now
    self:arm()
  end)
  -- Closed connections leave the registry now and then while serving, at
  -- every loop turn once an upgrade committed.
  self.sweeper = uv.new_timer()
  self.sweeper:start(SWEEP, SWEEP, function() self:sweep() end)
  self.check = uv.new_check()
  return self
end

function Adapter:arm()
  local t = self.core:timeout()
  self.timer:stop()
  if t then self.timer:start(math.ceil(t * 1000), 0, function() self:pump() end) end
end

function Adapter:pump()
  self.core:pump()
end

--- Keeps the table `t` across upgrades (counters add up); returns it.
function Adapter:state(t)
  return self.core:state(t)
end

--- Starts an upgrade from Lua (SIGHUP and the control socket do the same).
function Adapter:upgrade()
  return self.core:upgrade()
end

--- A TCP handle for the listener called `name`: the inherited socket
-- (opened with `uv.new_tcp():open(fd)`), or a new one bound to `host`,
-- `port`. The app calls its `listen`. Raises if it cannot bind.
function Adapter:listener(name, host, port)
  local tcp = self.core:listener(name, function()
    local t = uv.new_tcp()
    local ok, err = t:bind(host, port)
    if not ok then t:close(); return nil, err end
    return t
  end, function(fd)
    local t = uv.new_tcp()
    local ok, err = t:open(fd:detach())
    if not ok then t:close(); return nil, err end
    return t
  end)
  self.listeners[#self.listeners + 1] = tcp
  return tcp
end

--- The function that serves a connection handed over by the old process:
-- `serve(tcp, buffered)`, the same the app calls for one it accepted
-- (with ""). It must `track` the handle.
function Adapter:on_connection(serve)
  self.serve = serve
end

--- Registers a live connection: `unhandled()` returns the bytes read of
-- it that the app has not answered yet (a request not yet complete), or
-- nil once the app is closing it (it is then left alone).
function Adapter:track(tcp, unhandled)
  self.core:add(tcp, unhandled, self.adopting and "adopted" or "accepted")
end

-- A handle closed by the app leaves the registry.
local function closing(tcp)
  local ok, v = pcall(tcp.is_closing, tcp)
  return not ok or v
end

function Adapter:sweep()
  local c = self.core
  for tcp in c:each() do
    if closing(tcp) then c:remove(tcp, c.draining and "polite" or "peer") end
  end
  c:check()
end

-- Every loop turn after the commit: hand over what is at a boundary.
function Adapter:turn()
  local c = self.core
  local batch = {}
  for tcp, unhandled in c:each() do
    if closing(tcp) then
      c:remove(tcp, c.draining and "polite" or "peer")
    elseif not c.draining and tcp:get_write_queue_size() == 0 then
      local buffered = unhandled()
      if buffered then
        tcp:read_stop()
        batch[#batch + 1] = { conn = tcp, name = "http", buffered = buffered }
      end
    end
  end
  if #batch > 0 then
    c:hand(batch)
    for _, e in ipairs(batch) do e.conn:close() end
  end
  c:check()
end

function Adapter:committed()
  local c = self.core
  for tcp in c:each() do -- closed before the commit, seen only now
    if closing(tcp) then c:remove(tcp, "peer") end
  end
  self.draining = c.draining
  for _, l in ipairs(self.listeners) do
    if not closing(l) then l:close() end -- the new copy accepts on the same socket
  end
  self.check:start(function() self:turn() end)
  self:turn()
end

function Adapter:deadline()
  local c = self.core
  for tcp, unhandled in c:each() do
    if not closing(tcp) and tcp:get_write_queue_size() == 0 and unhandled() == "" then
      tcp:read_stop()
      tcp:close()
      c:remove(tcp, "polite")
    end
  end
end

-- A live connection from the old process, to the app's serve function.
function Adapter:adopt(got)
  local tcp = uv.new_tcp()
  local ok = self.serve and tcp:open(got.fd:detach())
  if not ok then
    if got.fd.close then got.fd:close() end
    tcp:close()
    return
  end
  self.adopting = true
  self.serve(tcp, got.buffered or "")
  self.adopting = false
end

return M
