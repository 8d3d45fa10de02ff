--- The process and OS kit around fd passing: process ids and signals, the
-- environment, locks, descriptor limits and counts, a monotonic clock,
-- pipes and dup2, pidfd_open. Kept apart so that `fdpass` is about channels and the
-- descriptors they carry. Failures of the world return
-- `nil, "what: why", "ERRNAME"`; a wrong argument raises.
-- @module fdpass.os
local core = require "fdpass.core"

local M = {}

--- This process's pid.
-- @function getpid
-- @treturn int
M.getpid = core.getpid

--- Signals another process (one this process did not start; a started
-- one has `proc:kill`).
-- @function kill
-- @int pid
-- @param[opt="TERM"] signal a name ("KILL", "HUP", "SIGPIPE", ...: the same
--   names as `signals` and `proc:kill`) or a number (0 only checks)
-- @return true, or `nil, msg, code` ("ESRCH", "EPERM")
M.kill = core.kill

--- Signals as a descriptor: `signals{"HUP", "USR2"}` blocks them and
-- returns an fd object that polls readable when one arrives (signalfd).
-- When the descriptor cannot be made (`EMFILE`), the signal mask is left
-- as it was. SIGKILL and SIGSTOP cannot be caught: asking for them raises.
-- Closing the descriptor leaves the mask alone: `unblock(newly)` gives
-- back what this call blocked.
-- @function signals
-- @tparam table names
-- @return fd object, and `newly`: the names this call blocked (those not
--   blocked before)
M.signals = core.signals

--- Unblocks the signals named (`signals`' second result, given back).
-- @function unblock
-- @tparam table names
-- @return true
M.unblock = core.unblock

--- The name of the next signal of a `signals` descriptor ("HUP").
-- @function readsignal
-- @param fd
-- @treturn string the name, or `nil, msg, "EAGAIN"` when none is pending
M.readsignal = core.readsignal

--- Sets (or with nil, removes) a variable of this process's environment,
-- which the processes it starts inherit. A name with '=' or a NUL byte, or
-- a value with a NUL byte, raises.
-- @function setenv
-- @string name
-- @tparam ?string value
-- @return true, or `nil, msg, code`
M.setenv = core.setenv

--- An exclusive lock on `path` (created 0600), held by the returned fd
-- object until it is closed or the process dies;
-- `nil, msg, "EWOULDBLOCK"` while another process holds it.
-- @function flock
-- @string path
-- @return fd object
M.flock = core.flock

--- RLIMIT_NOFILE, the soft limit set first when `soft` is given.
-- @function nofile
-- @int[opt] soft
-- @return soft, hard
M.nofile = core.nofile

--- How many descriptors this process holds (what leak checks compare).
-- @function fdcount
-- @treturn int
M.fdcount = core.fdcount

--- Seconds on CLOCK_MONOTONIC: what deadlines are measured with.
-- @function monotonic
-- @treturn number
M.monotonic = core.monotonic

--- A pipe, both ends close-on-exec and blocking.
-- @function pipe
-- @return r, w: fd objects
M.pipe = core.pipe

--- Makes descriptor `n` refer to `x`'s open file (not close-on-exec),
-- for example to put an inherited stderr back on 2.
-- @function dup2
-- @param x anything `fdpass.dup` accepts
-- @int n
M.dup2 = core.dup2

--- A descriptor that polls readable once process `pid` has exited (a
-- zombie counts): what a loop waits on instead of polling `kill(pid, 0)`.
-- @function pidfd_open
-- @int pid
-- @return fd object, or `nil, msg, "ENOSYS"` before Linux 5.3, `"ESRCH"`
--   when there is no such process
M.pidfd_open = core.pidfd_open

return M
