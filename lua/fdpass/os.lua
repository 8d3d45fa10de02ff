--- The process and OS kit around fd passing: process ids and signals, the
-- environment, locks, descriptor limits and counts, a monotonic clock,
-- pipes and dup2, and pidfd_open (a descriptor that polls readable once a
-- process has exited: nil, msg, "ENOSYS" before Linux 5.3). Kept apart so that `fdpass` is about channels and the
-- descriptors they carry.
-- @module fdpass.os
local core = require "fdpass.core"

return {
  getpid = core.getpid, kill = core.kill, signals = core.signals, readsignal = core.readsignal,
  setenv = core.setenv, flock = core.flock, nofile = core.nofile, fdcount = core.fdcount,
  monotonic = core.monotonic, pipe = core.pipe, dup2 = core.dup2, pidfd_open = core.pidfd_open,
}
