--- The process and OS kit around fd passing: process ids and signals, the
-- environment, locks, descriptor limits and counts, a monotonic clock,
-- pipes and dup2. Kept apart so that `fdpass` is about channels and the
-- descriptors they carry.
-- @module fdpass.os
local core = require "fdpass.core"

return {
  getpid = core.getpid, kill = core.kill, signals = core.signals, readsignal = core.readsignal,
  setenv = core.setenv, flock = core.flock, nofile = core.nofile, fdcount = core.fdcount,
  monotonic = core.monotonic, pipe = core.pipe, dup2 = core.dup2,
}
