--- One epoll descriptor and the deadlines of an upgrader (internal).
-- Everything both sides watch is registered here under a key; the app's
-- loop sees only the epoll descriptor, which stays the same from new() to
-- close(). A descriptor is always removed from the set before it is closed
-- (`drop`), and one at end-of-file is removed at once, so that the epoll
-- descriptor is readable only while there is work to do.
-- @module fdpass.upgrade.poller
local loop = require "fdpass.loop"
local fos = require "fdpass.os"

local now = fos.monotonic

local Poller = {}
Poller.__index = Poller

local M = {}

function M.new()
  local ep, err, code = loop.epoll()
  if not ep then return nil, err, code end
  return setmetatable({ ep = ep, objs = {}, events = {}, deadlines = {} }, Poller)
end

function Poller:fd() return self.ep:getfd() end

--- Watches `obj` under `key` for `events` ("r", "w", "rw"); changes the
-- events if it is watched already.
function Poller:watch(key, obj, events)
  events = events or "r"
  local have = self.objs[key]
  if have == obj then
    if self.events[key] ~= events then
      assert(self.ep:mod(obj, events))
      self.events[key] = events
    end
    return
  end
  if have then self:unwatch(key) end
  assert(self.ep:add(obj, key, events))
  self.objs[key], self.events[key] = obj, events
end

function Poller:watching(key) return self.objs[key] end

--- Stops watching `key` (the object stays open).
function Poller:unwatch(key)
  local obj = self.objs[key]
  if not obj then return end
  self.ep:del(obj)
  self.objs[key], self.events[key] = nil, nil
end

--- Stops watching `key` and closes its object.
function Poller:drop(key)
  local obj = self.objs[key]
  self:unwatch(key)
  if obj then obj:close() end
end

--- The keys ready now (never waits), with their events.
function Poller:ready(max)
  local keys, events = self.ep:wait(0, max or 64)
  if not keys then return {}, {} end
  return keys, events
end

function Poller:deadline(name, t) self.deadlines[name] = t end

--- The earliest deadline, or nil.
function Poller:next_deadline()
  local soon
  for _, t in pairs(self.deadlines) do
    if not soon or t < soon then soon = t end
  end
  return soon
end

function Poller:close()
  for key in pairs(self.objs) do self:unwatch(key) end
  self.ep:close()
end

--- A log line that repeats is written once, then at most once a second as
-- a count: `counted(log, "refused %s strangers")` gives `bump()`,
-- `tick()` (the count, a second after the last line) and `flush()` (what is
-- left, now). Counts print with thousands separators.
function M.counted(log, fmt)
  local n, written, last = 0, 0, -math.huge
  local function commas(x)
    local s = tostring(x)
    while true do
      local t, k = s:gsub("^(%d+)(%d%d%d)", "%1,%2")
      s = t
      if k == 0 then return s end
    end
  end
  local c = {}
  function c.flush()
    if n > written then
      log(fmt:format(commas(n)))
      written, last = n, now()
    end
  end
  function c.bump()
    n = n + 1
    if n == 1 or now() - last >= 1 then c.flush() end
  end
  function c.tick() -- what is left, once a second has passed (called every step)
    if n > written and now() - last >= 1 then c.flush() end
  end
  function c.count() return n end
  return c
end

return M
