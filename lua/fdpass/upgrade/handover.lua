--- The old side after the commit (internal): live connections, the final
-- state and DONE to the new copy, without ever waiting inside the app's
-- loop (finish() excepted: the old process's last act, bounded by
-- timeouts.handover). What the socket cannot take at once stays queued in
-- the channel, descriptors duplicated, and the upgrader's step() flushes it
-- as the channel becomes writable ("to_new" in the poll set).
-- @module fdpass.upgrade.handover
local P = require "fdpass.upgrade.protocol"
local fos = require "fdpass.os"

local now = fos.monotonic

local M = {}

--- One CONN, or one CONNS for several, to the new copy. CONNS goes in
-- columns (P.conns_columns): a table per connection cost more to encode
-- and decode than the kernel takes to pass its descriptor (bench/NOTES.md).
function M.send(up, list)
  local ch = up._to_new
  local msg, fds
  if #list == 1 then
    local e = list[1]
    msg, fds = { t = "CONN", name = e.name, buffered = e.buffered or "", meta = e.meta }, { e.conn }
  else
    msg, fds = P.conns_columns(list)
  end
  local ok, err, code = ch:send(P.encode(msg), fds, 0)
  if not ok and code == "EAGAIN" then
    up._poll:watch("to_new", ch, "w")
    return true
  end
  return ok, err, code
end

--- What step() does when the channel is writable: sends what is queued.
function M.flush(up)
  local ok, err, code = up._to_new:flush(0)
  if ok then
    up._poll:unwatch("to_new")
  elseif code ~= "EAGAIN" then
    up._poll:unwatch("to_new")
    up.log("handoff: " .. tostring(err))
  end
end

--- The final STATE (`final_state`, or the state function's value now) and
-- DONE; waits at most timeouts.handover for them to leave; closes.
function M.finish(up, final_state)
  local ch = up._to_new
  if not ch then return true end
  local deadline = now() + up.timeouts.handover
  local function left() return math.max(0, deadline - now()) end
  -- The connections still queued go first: the new copy takes them in
  -- while the final state is made and encoded here. Then the state and
  -- DONE are sent waiting (this is the last act), not queued: no copy.
  local ok, err = ch:flush(left())
  if ok then
    if final_state == nil then
      local sok, st = pcall(up._state_fn)
      if sok then final_state = st else up.log("finish: state function failed: " .. tostring(st)) end
    end
    local eok, encoded = pcall(P.encode, { t = "STATE", final = true, state = final_state })
    if eok then ok, err = ch:send(encoded, nil, left()) else up.log("finish: " .. tostring(encoded)) end
    if ok then ok, err = ch:send(P.encode { t = "DONE" }, nil, left()) end
  end
  if not ok then up.log("finish: " .. tostring(err)) end
  up._poll:unwatch("to_new")
  ch:close()
  up._to_new = nil
  return ok ~= nil
end

return M
