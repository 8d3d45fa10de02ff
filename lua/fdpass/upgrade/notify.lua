--- What an upgrade tells systemd (internal). With NOTIFY_SOCKET set (and `systemd` not false), an upgrade tells the
-- service manager what happens, so that a unit of Type=notify-reload (or
-- notify) sees it as a reload and then supervises the new copy:
--   old copy, when an upgrade starts: RELOADING=1, MONOTONIC_USEC=now
--   old copy, once COMMITTED:    MAINPID=<new pid> and READY=1, one datagram
--   old copy, after a rollback:  READY=1 (the reload is over; it still serves)
--   new copy, when inherit() took over: READY=1
-- MAINPID and READY go together from the old copy because it is still the
-- main process when it sends them (NotifyAccess=main). The new copy's own
-- READY=1 may reach systemd first; NotifyAccess=main then drops it with a
-- warning, harmlessly. The old copy sends nothing after the commit (not
-- STOPPING=1: it would stop the service it just handed over). The new copy
-- starts without our WATCHDOG_PID.
--
-- No notification ever waits inside the serving loop (timeout 0). One that
-- cannot be sent is logged and the upgrade goes on, except MAINPID+READY:
-- if systemd took the old copy's exit for the service's end it would stop
-- the new copy with it. When the manager's queue is full (a slow systemd,
-- or anyone filling /run/systemd/notify, which is world-writable) it is
-- kept and sent again from step() every RETRY seconds for GIVE_UP seconds
-- (`pending`); up:close(), the old process's last call, waits for what is
-- left of that, and a notification given up is logged once.
-- @module fdpass.upgrade.notify
local systemd = require "fdpass.systemd"
local fos = require "fdpass.os"
local loop = require "fdpass.loop"

local now = fos.monotonic
local NO_WAIT = { timeout = 0 }
local COMMITTED = { ready = true, timeout = 0 }

local M = {
  RETRY = 0.02,  -- seconds between two tries while the queue is full
  GIVE_UP = 10,  -- seconds after the first try
}

function M.ready() return systemd.ready(nil, NO_WAIT) end
function M.reloading() return systemd.reloading(nil, NO_WAIT) end
function M.fdstore(name, obj) return systemd.fdstore(name, obj, NO_WAIT) end

local Pending = {}
Pending.__index = Pending

--- MAINPID=pid and READY=1, never waiting. Returns true/false (sent / not
-- under systemd), or `nil, msg, code` (logged by the caller), or, when
-- the queue is full, `nil, msg, "EAGAIN", pending`: `pending:retry()` from
-- step() when `pending.next` is due.
function M.committed(pid, log)
  local ok, err, code = systemd.mainpid(pid, COMMITTED)
  if ok == nil and code == "EAGAIN" then
    local t = now()
    return nil, err, code, setmetatable({ pid = pid, log = log, next = t + M.RETRY, give_up = t + M.GIVE_UP,
      tries = 1 }, Pending)
  end
  return ok, err, code
end

--- One more try (never waits). Returns true when the pending notification
-- is over (sent, failed otherwise, or given up: logged once), false while it
-- is still to be sent.
function Pending:retry()
  local ok, err, code = systemd.mainpid(self.pid, COMMITTED)
  self.tries = self.tries + 1
  local t = now()
  if ok ~= nil then return true end
  if code ~= "EAGAIN" or t >= self.give_up then
    self.log(("systemd: MAINPID=%d READY=1 not sent after %d tries in %.1f s: %s"):format(self.pid, self.tries,
      M.GIVE_UP - (self.give_up - t), tostring(err)))
    return true
  end
  self.next = t + M.RETRY
  return false
end

--- Blocks until the notification is sent or given up (the old process's
-- last act: it serves nothing any more).
function Pending:wait()
  repeat
    local left = self.next - now()
    if left > 0 then loop.poll({}, nil, left) end
  until self:retry()
end

return M
