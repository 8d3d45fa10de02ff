--- What every stack adapter needs, whatever the event loop: one upgrader,
-- listeners by name (inherited from the old process or made fresh), a
-- state table that survives upgrades, a registry of live connections, and
-- the end of the old process once an upgrade committed: its connections
-- handed over at request boundaries (mode "handover") or drained until a
-- deadline after which the idle rest are closed (mode "drain"), then
-- `up:finish(final state)` and exit.
--
-- The stack adapters (`fdpass.adapters.http`, `.cqueues`, `.copas`,
-- `.luv`) wire this to their loop; an app uses those, not this module.
-- The upgrader is driven only through its pollable side (`pollfd`,
-- `timeout`, `step`), so nothing here blocks the stack's loop.
-- @module fdpass.adapters.core
local fos = require "fdpass.os"
local upgrade = require "fdpass.upgrade"
local options = require "fdpass.upgrade.options"

local M = {}

local Core = {}
Core.__index = Core

-- Keys of `new`'s options that are ours; every other one is the upgrader's
-- (which raises on a key it does not know).
local OWN = { mode = true, drain = true, state = true }
local MODES = { handover = true, drain = true }
local STEPS = 16 -- events taken from the upgrader per pump: the stack's loop gets the rest

local function copy(t)
  local c = {}
  for k, v in pairs(t) do c[k] = v end
  return c
end

--- Creates the glue for one process (one per process: it owns the upgrader).
-- Starts the upgrader, which in a new copy takes over from the old
-- process before this returns (or exits 1 with the reason).
-- @tparam[opt] table opts the upgrader's options (`control`, `pidfile`,
--   `argv`, `timeouts`, `log`, `signal` (default "HUP"), ...) plus:
--   `mode` "handover" (default: live connections go to the new copy at
--   request boundaries with the bytes read but not handled) or "drain"
--   (they stay and are closed after their next answer);
--   `drain` seconds after the commit by which every connection must be
--   gone (default 10): idle ones are closed then, busy ones after the
--   answer in flight, and a connection still busy a `drain` later is cut
--   (counted as such); `state` a table kept across upgrades (see `state`).
-- @tparam[opt] string who the function errors name (a stack adapter's own `new`)
-- @tparam[opt] number level error()'s level for those errors (the app's line)
-- @return core object, or `nil, msg, ERRNAME` when the world refuses
--   (e.g. no descriptor left for the upgrader: EMFILE)
function M.new(opts, who, level)
  -- `who` and `level`: for the stack adapters, whose errors name their own
  -- `new` and point at the app's line (error()'s level, counted from here).
  who, level = who or "fdpass.adapters.core.new", level or 2
  if opts ~= nil and type(opts) ~= "table" then
    error(who .. ": bad argument #1 (table expected, got " .. type(opts) .. ")", level)
  end
  opts = opts or {}
  local mode = opts.mode or "handover"
  if not MODES[mode] then
    error(who .. ": bad option 'mode' (\"handover\" or \"drain\" expected, got " .. tostring(mode) .. ")", level)
  end
  if opts.drain ~= nil and (type(opts.drain) ~= "number" or opts.drain < 0) then
    error(who .. ": bad option 'drain' (seconds expected, got " .. tostring(opts.drain) .. ")", level)
  end
  if opts.state ~= nil and type(opts.state) ~= "table" then
    error(who .. ": bad option 'state' (table expected, got " .. type(opts.state) .. ")", level)
  end
  local me = fos.getpid()
  local upopts = { log = function(line) io.stderr:write(("[%d] %s\n"):format(me, line)) end, signal = "HUP" }
  for k, v in pairs(opts) do
    if not OWN[k] then upopts[k] = v end
  end
  local self = setmetatable({
    mode = mode, drain = opts.drain or 10, log = upopts.log, pid = me,
    conns = {}, nconns = 0, -- the stack's live connections (its objects as keys)
    committed = false, draining = false, deadline = nil,
    counts = { accepted = 0, adopted = 0, handed = 0, polite = 0, peer = 0, cut = 0 },
    listeners = {}, tables = {},
  }, Core)
  options.check(upopts, level + 1, who) -- a misspelt key raises here, naming `who`
  local up, err, code = upgrade.new(upopts)
  if not up then return nil, err, code end
  self.up = up
  local got, ierr, icode = up:inherit { inherit = function(t) return self:check_inherited(t) end }
  if ierr then up:close(); return nil, ierr, icode end
  self.inherited = got
  self.generation = self.up.generation
  -- A new copy stays until its old process is done: what that one still
  -- hands over (connections, the final state) comes through this one.
  self.old_done = not self.inherited
  self.up:state(function() return self:snapshot() end)
  if opts.state ~= nil then self:state(opts.state) end
  return self
end

-- Runs in a new copy before it says READY: every listener the app will ask
-- for is claimed later by name; here only the state is kept.
function Core:check_inherited(got)
  self.got = got
  return true
end

--- The listener called `name`: the inherited descriptor turned into the
-- stack's object by `adopt(fd)` (an fdpass fd object; `adopt` owns it), or,
-- on a fresh start, `make()`'s result. Either way offered to every new copy
-- under `name` (the stack's object must have `getfd`, `pollfd` or `fileno`).
-- Raises if `make` fails: a server without its listener cannot start.
function Core:listener(name, make, adopt)
  assert(type(name) == "string", "bad argument #1 to 'listener' (string expected)")
  local obj
  local got = self.got and self.got.listeners and self.got.listeners[name]
  if got and got[1] then
    obj = assert(adopt(table.remove(got, 1)))
  else
    local ok, err = make()
    obj = assert(ok, ("listener %s: %s"):format(name, tostring(err)))
  end
  self.up:listener(name, obj)
  self.listeners[#self.listeners + 1] = obj
  return obj
end

--- Keeps `t` (a table of plain values) across upgrades: on a takeover its
-- fields are set from the old process's state; its contents go to every new
-- copy at the commit, and once more when the old process is done (what it
-- changed while its last connections finished). Numbers are merged as
-- counters (the new copy adds what the old one counted after the commit);
-- any other field takes the old process's final value unless the new copy
-- changed it. Returns `t`.
function Core:state(t)
  assert(type(t) == "table", "bad argument #1 to 'state' (table expected)")
  local name = "t" .. (#self.tables + 1)
  self.tables[#self.tables + 1] = t
  local inherited = self.got and type(self.got.state) == "table" and self.got.state[name]
  if type(inherited) == "table" then
    for k, v in pairs(inherited) do t[k] = v end
    self.bases = self.bases or {}
    self.bases[name] = copy(inherited)
  end
  return t
end

function Core:snapshot()
  local s = {}
  for i, t in ipairs(self.tables) do s["t" .. i] = copy(t) end
  return s
end

-- The old process's final state arrived: add what it counted after the commit.
function Core:merge(final)
  if type(final) ~= "table" then return end
  for i, t in ipairs(self.tables) do
    local name = "t" .. i
    local f, base = final[name], self.bases and self.bases[name] or {}
    if type(f) == "table" then
      for k, v in pairs(f) do
        if type(v) == "number" and type(base[k]) == "number" and type(t[k]) == "number" then
          t[k] = t[k] + (v - base[k])
        elseif t[k] == base[k] then
          t[k] = v
        end
      end
    end
  end
end

--- Closes the inherited listeners the app did not ask for by name (call
-- once every listener is made: the stack adapters do when their loop
-- starts). Each is logged, none is left open.
function Core:settle()
  local got = self.got and self.got.listeners
  if not got then return end
  for name, list in pairs(got) do
    for _, fd in ipairs(list) do
      if name ~= "control" then self.log("inherited listener " .. name .. " not claimed: closed") end
      fd:close()
    end
  end
  self.got.listeners = nil
end

-- ---- the registry of live connections ------------------------------------------

--- Registers a live connection (any stack object as the key, `info` a
-- table the stack keeps with it). `how` is "accepted" or "adopted".
function Core:add(conn, info, how)
  if not self.conns[conn] then self.nconns = self.nconns + 1 end
  self.conns[conn] = info or true
  self.counts[how or "accepted"] = self.counts[how or "accepted"] + 1
end

--- Forgets a connection: `why` is "handed", "polite" (closed by us at a
-- boundary or after an answer that said so), "peer" (the client closed it
-- or it failed) or "cut" (closed by us with work in flight).
function Core:remove(conn, why)
  if not self.conns[conn] then return end
  self.conns[conn] = nil
  self.nconns = self.nconns - 1
  self.counts[why] = self.counts[why] + 1
end

--- Iterates the registered connections: `for conn, info in core:each() do`.
-- Safe to remove the current one while iterating.
function Core:each()
  return next, self.conns, nil
end

--- Hands connections at request boundaries to the new copy, in one
-- message: `list` = `{ {conn =, name =, buffered =}, ... }`. The stack
-- closes its own copies afterwards, whatever the result (on failure the
-- client sees the connection end: counted as "cut").
function Core:hand(list)
  if #list == 0 then return true end
  local batch = {}
  for i, e in ipairs(list) do
    batch[i] = { name = e.name or "http", conn = e.conn, buffered = e.buffered or "" }
  end
  local ok, err = self.up:handoff_all(batch)
  for _, e in ipairs(list) do self:remove(e.conn, ok and "handed" or "cut") end
  if not ok then self.log("handover of " .. #list .. " connections failed: " .. tostring(err)) end
  return ok, err
end

-- ---- driving the upgrader -------------------------------------------------------

--- The upgrader, for the stack's poller: `pollfd()`, `getfd()`, `fileno()`
-- (one descriptor for the object's whole life), `events()`, `timeout()`.
function Core:pollable() return self.up end

--- Seconds until `pump` must run even if nothing is readable (nil: no
-- deadline): the upgrader's own, the drain deadline, or 0 when the last
-- pump left work.
function Core:timeout()
  if self.busy then return 0 end
  local t = self.up:timeout()
  if self.deadline then
    local left = math.max(0, self.deadline - fos.monotonic())
    t = t and math.min(t, left) or left
  end
  return t
end

--- Does a bounded amount of the upgrader's work (at most 16 of its
-- events) and reacts: "upgraded" calls the stack's `on_commit`; a live
-- connection from the old process goes to `on_connection(conn)` (conn =
-- `{name =, fd =, buffered =}`); the old process's final state is merged.
-- Then checks the drain deadline and whether this process is done.
-- Never blocks. Call it when the upgrader is readable, its timeout has
-- passed, or after the stack's own events while an upgrade ends.
function Core:pump()
  self.busy = false
  for i = 1, STEPS do
    local ev, a = self.up:step()
    if ev == nil then break end
    if ev == "upgraded" then
      self:commit(a)
    elseif ev == "connection" then
      self.on_connection(a)
    elseif ev == "state" then
      self:merge(a)
    elseif ev == "done" then
      self.old_done = true
    elseif ev == "failed" then
      self.failures = (self.failures or 0) + 1 -- the upgrader logged it
    end
    if i == STEPS then self.busy = true end -- more may wait: come back at once
  end
  self:check()
end

function Core:commit(info)
  self.committed = true
  self.draining = self.mode == "drain"
  self.deadline = fos.monotonic() + self.drain
  self.log(("upgraded to %s: %s %d connections"):format(tostring(info and info.pid),
    self.draining and "draining" or "handing over", self.nconns))
  self.on_commit(self.mode)
end

--- After an upgrade committed: at the deadline the stack's `on_deadline()`
-- closes the idle connections left (politely: at a request boundary) and
-- marks the busy ones to close after their answer; a `drain` later what is
-- still open is counted as cut. Once no connection is left, sends the
-- final state and exits.
function Core:check()
  if not self.committed then return end
  local t = fos.monotonic()
  if not self.deadline_passed and t >= self.deadline then
    self.deadline_passed = true
    self.deadline = self.deadline + self.drain -- the last one: cut
    self.on_deadline()
  elseif self.deadline_passed and t >= self.deadline and self.nconns > 0 then
    self.counts.cut = self.counts.cut + self.nconns
    self.conns, self.nconns = {}, 0
  end
  if self.nconns == 0 and self.old_done then self:exit() end
end

--- The old process's end: the final state to the new copy, a summary line,
-- exit 0. Called by `check` once no connection is left.
function Core:exit()
  self.up:finish(self:snapshot())
  local c = self.counts
  self.log(("done: handed %d, closed %d politely, %d by peers, %d cut"):format(c.handed, c.polite, c.peer, c.cut))
  self.on_exit()
  self.up:close()
  os.exit(0)
end

--- Starts an upgrade (as SIGHUP or the control socket do): true, or nil,
-- msg, "EBUSY" when one runs already. Progress comes through `pump`.
function Core:upgrade()
  return self.up:upgrade()
end

-- Hooks a stack adapter sets; defaults do nothing.
function Core.on_commit() end
function Core.on_deadline() end
function Core.on_exit() end
function Core.on_connection(conn) conn.fd:close() end

return M
