-- A real new copy for the attack specs: it runs fdpass.upgrade's inherit
-- (up:inherit of the split, up:start before it) exactly as an app does,
-- facing an old side the spec plays by hand. With the collector stopped
-- from the start, it reports on stdout (its stderr becomes the old
-- process's during the handover), one "key value" line each:
--   took_over 1      inherit returned what the old process handed over
--   held N           descriptors held then beyond those it started with
--                    (0, 1, 2 and the channel on 3), uncollected
--   listeners N      descriptors among what it inherited
-- and exits 0; when inherit fails the upgrader exits 1 itself. The first
-- line, "pid N", comes at once (whoever reads may need to kill it).
-- usage: lua spec/attack/app_copy.lua
local fos = require "fdpass.os"
local upgrade = require "fdpass.upgrade"

require "attack.pids"(fos.getpid())
-- APP_COPY_QUIET: report nothing (when its stdout is someone else's)
local out = os.getenv("APP_COPY_QUIET") and assert(io.open("/dev/null", "w")) or io.stdout
out:write(("pid %d\n"):format(fos.getpid()))
out:flush()
collectgarbage()
collectgarbage("stop") -- a descriptor left to the collector stays visible
local base = fos.fdcount()
local up = upgrade.new { argv = { "unused" }, timeouts = { hello = 5, handover = 5, ready = 5, commit = 3 },
  systemd = false, signal = false }
local inherit = up.inherit or up.start
local got = inherit(up, { inherit = function() return true end })
local n = 0
for _, list in pairs(got and got.listeners or {}) do n = n + #list end
out:write(("took_over %d\nheld %d\nlisteners %d\n"):format(got and 1 or 0, fos.fdcount() - base, n))
out:flush()
os.exit(0)
