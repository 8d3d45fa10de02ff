--- The loop kit: poll(2) over fdpass objects and integers, and waits that
-- yield to a host loop's sleep (`loop.waiter`, e.g. ngx.sleep) instead of
-- blocking it; and `epoll()`, one descriptor standing for many (each
-- watched with a Lua key, which `wait` returns), what the upgrader hands
-- to a host loop.
-- @module fdpass.loop
local core = require "fdpass.core"

local M = {}

--- Wait for readiness; hang-ups count as readable.
-- @function poll
-- @tparam table readers an array of anything `fdpass.dup` accepts
-- @tparam table writers the same
-- @number[opt] timeout seconds (nil: as long as it takes)
-- @return readable, writable: the same objects, those ready
M.poll = core.poll

--- What `wait_readable` and `wait_writable` sleep through: nil (the
-- default) makes them block in poll(2); a function(seconds) that yields to
-- the caller's event loop (in nginx's Lua module, `ngx.sleep`) makes them
-- poll without waiting and sleep through it between tries, 1 ms first,
-- doubling up to 16 ms, never past the timeout. A loop that can watch a
-- descriptor itself (cqueues, luv) should rather do that.
M.waiter = nil

local function wait_for(x, writable, timeout, what)
  local set = { x }
  local readers, writers = (not writable) and set or nil, writable and set or nil
  local function ready(t)
    local r, w, code = core.poll(readers, writers, t)
    if not r then return nil, w, code end
    return #(writable and w or r) > 0
  end
  local waiter = M.waiter
  if not waiter then
    local ok, err, code = ready(timeout)
    if ok then return true end
    if ok == nil then return nil, err, code end
    return nil, what .. ": timed out", "ETIMEDOUT"
  end
  local deadline = timeout and core.monotonic() + timeout
  local pause = 0.001
  while true do
    local ok, err, code = ready(0)
    if ok then return true end
    if ok == nil then return nil, err, code end
    local left = deadline and deadline - core.monotonic()
    if left and left <= 0 then return nil, what .. ": timed out", "ETIMEDOUT" end
    waiter(left and math.min(pause, left) or pause)
    pause = math.min(pause * 2, 0.016)
  end
end

--- An epoll object: one descriptor (its `getfd`/`pollfd`/`fileno`) that
-- stands for many, what the upgrader hands to a host loop.
-- `ep:add(x, key, [events="r"])` watches anything `fdpass.dup` accepts
-- under a Lua key (any value but nil), `ep:mod(x, events)`, `ep:del(x)`
-- (before closing x), `ep:wait([timeout], [max=64])` -> keys, events ("r",
-- "w" or "rw" at the same index; a hang-up or an error counts as both),
-- `ep:close()`.
-- @function epoll
-- @return epoll object (close-on-exec)
M.epoll = core.epoll

--- Waits until `x` is readable (a hang-up counts), through `loop.waiter`
-- when one is set.
-- @param x anything `fdpass.dup` accepts
-- @number[opt] timeout seconds (nil: as long as it takes)
-- @return true, or `nil, msg, "ETIMEDOUT"`
function M.wait_readable(x, timeout)
  return wait_for(x, false, timeout, "wait_readable")
end

--- Waits until `x` is writable, as `wait_readable` does.
-- @param x anything `fdpass.dup` accepts
-- @number[opt] timeout seconds
-- @return true, or `nil, msg, "ETIMEDOUT"`
function M.wait_writable(x, timeout)
  return wait_for(x, true, timeout, "wait_writable")
end

return M
