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
-- starts without our WATCHDOG_PID. Notifications do not block the serving
-- loop (timeout 0, except MAINPID+READY, which may wait up to 1 s for a
-- full queue); one that cannot be sent is logged, and the upgrade goes on.
-- @module fdpass.upgrade.notify
local systemd = require "fdpass.systemd"

local NO_WAIT = { timeout = 0 }
return {
  ready = function() return systemd.ready(nil, NO_WAIT) end,
  reloading = function() return systemd.reloading(nil, NO_WAIT) end,
  committed = function(pid) return systemd.mainpid(pid, { ready = true, timeout = 1 }) end,
  fdstore = function(name, obj) return systemd.fdstore(name, obj, NO_WAIT) end,
}
