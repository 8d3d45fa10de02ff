--- Upgrades for a cqueues program: the upgrader watched by a coroutine of
-- the app's controller through cqueues' pollable protocol
-- (`cqueues.poll(up)`: one descriptor for the upgrader's whole life, so
-- cqueues never watches a descriptor that fdpass closed), listeners by
-- name, and sockets adopted from the old process with their options.
--
--     local adapter = require "fdpass.adapters.cqueues"
--     local ad = adapter.new { control = "@myapp", pidfile = "/run/myapp.pid" }
--     local listener = ad:listener("http", function()
--       return require("cqueues.socket").listen("127.0.0.1", 8080) end)
--     ad.on_connection = function(sock, name) ... end -- handed-over sockets
--     ad:watch()   -- adds the upgrader's coroutine to ad.cq
--
-- On its own this module hands over nothing: the app registers its
-- connections with `ad.core` (see `fdpass.adapters.http` for a complete
-- use, with connections handed over at request boundaries).
--
-- **TCP_NODELAY**: `cqueues.socket.fdopen` applies cqueues' default socket
-- options, which turn TCP_NODELAY off on a descriptor that had it. `fdopen`
-- here passes `nodelay = true` (what lua-http's server sets on every
-- connection it accepts) unless told otherwise.
-- @module fdpass.adapters.cqueues
local cqueues = require "cqueues"
local cs = require "cqueues.socket"
local core = require "fdpass.adapters.core"

local M = {}

local Adapter = {}
Adapter.__index = Adapter

--- Creates the adapter (and the process's upgrader: see
-- `fdpass.adapters.core.new` for `opts`), plus `opts.cq`: the controller to
-- run in (default a new one, `ad.cq`). `nil, msg, ERRNAME` when the world
-- refuses (see `core.new`). `who`, `level`: for fdpass.adapters.http,
-- whose errors name its own `new` (see `core.new`).
function M.new(opts, who, level)
  opts = opts or {}
  local cq = opts.cq
  local rest = {}
  for k, v in pairs(opts) do
    if k ~= "cq" then rest[k] = v end
  end
  local c, err, code = core.new(rest, who or "fdpass.adapters.cqueues.new", level or 3)
  if not c then return nil, err, code end
  local self = setmetatable({ cq = cq or cqueues.new(), core = c }, Adapter)
  self.core.on_connection = function(conn) self:adopt_conn(conn) end
  self.core.on_exit = function() cqueues.cancel(self.core.up:pollfd()) end
  return self
end

--- Wraps a descriptor (an fdpass fd object, which this takes over) as a
-- cqueues socket, keeping TCP_NODELAY on: `opts` are cqueues' fdopen
-- options (default `{nodelay = true}`).
function M.fdopen(fd, opts)
  local o = { nodelay = true }
  for k, v in pairs(opts or {}) do o[k] = v end
  o.fd = fd:detach()
  return cs.fdopen(o)
end

--- The listener called `name` (a cqueues socket): inherited, or `make()`'s.
function Adapter:listener(name, make)
  return self.core:listener(name, make, function(fd) return M.fdopen(fd) end)
end

--- The upgrader's poll target for `cqueues.poll`: `pollfd` and `events` of
-- the upgrader, `timeout` the core's (the upgrader's deadlines and the
-- drain deadline).
function Adapter:pollable()
  if not self.pollable_ then
    local c = self.core
    self.pollable_ = {
      pollfd = c.up:pollfd(),
      events = function() return "r" end,
      timeout = function() return c:timeout() end,
    }
  end
  return self.pollable_
end

--- Adds the coroutine that drives the upgrader to `ad.cq` (once).
function Adapter:watch()
  if self.watching then return end
  self.watching = true
  local target, c = self:pollable(), self.core
  c:settle()
  self.cq:wrap(function()
    while true do
      cqueues.poll(target)
      c:pump()
    end
  end)
end

-- A live connection from the old process: a cqueues socket, with the bytes
-- the old process had read put back in front of it, to the app.
function Adapter:adopt_conn(conn)
  local sock = M.fdopen(conn.fd)
  if conn.buffered and #conn.buffered > 0 then sock:unget(conn.buffered) end
  if self.on_connection then
    self.on_connection(sock, conn.name)
  else
    sock:close() -- nobody takes it: never left open
  end
end

--- Starts an upgrade (a Lua trigger, as SIGHUP and the control socket are).
function Adapter:upgrade()
  return self.core:upgrade()
end

return M
