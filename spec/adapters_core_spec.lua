-- fdpass.adapters.core on its own: what its options accept, and the
-- state table's merge of the old process's final state (the specs under
-- load check the same end to end: spec/adapters_*_spec.lua).
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local core = require "fdpass.adapters.core"

-- The stack adapters this Lua has (copas and lua-http: 5.1 and LuaJIT).
local STACKS = {}
for _, name in ipairs { "copas", "http", "cqueues", "luv" } do
  local ok, mod = pcall(require, "fdpass.adapters." .. name)
  if ok then STACKS[name] = mod end
end
STACKS.core = core

local function sigblk()
  local f = assert(io.open("/proc/self/status"))
  local s = f:read("*a")
  f:close()
  return s:match("\nSigBlk:%s*(%x+)")
end

local function raises(pattern, fn)
  local ok, err = pcall(fn)
  lu.assertFalse(ok, "did not raise")
  lu.assertStrContains(tostring(err), pattern)
end

local T = {}

-- A control address in use is the world's failure: every adapter's new()
-- returns nil, msg, "EADDRINUSE", with nothing left open or blocked.
for name, mod in pairs(STACKS) do
  T["test_" .. name .. "_new_with_a_busy_control_address_returns_the_failure"] = function()
    local addr = "@fdpass-busy-" .. name .. "-" .. fos.getpid()
    local busy = assert(fdpass.listen(addr))
    collectgarbage()
    collectgarbage("stop")
    local fds, blk = fos.fdcount(), sigblk()
    local got, msg, code = mod.new { control = addr, argv = { "x" } }
    local after_fds, after_blk = fos.fdcount(), sigblk()
    collectgarbage("restart")
    busy:close()
    lu.assertNil(got)
    lu.assertStrContains(tostring(msg), "Address already in use")
    lu.assertEquals(code, "EADDRINUSE")
    lu.assertEquals(after_fds, fds)
    lu.assertEquals(after_blk, blk)
  end

  -- A misspelt key or a bad mode names the adapter's own new() and the
  -- app's line (this file), not core.lua's.
  T["test_" .. name .. "_new_typos_raise_naming_the_adapter_at_the_callers_line"] = function()
    local who = "fdpass.adapters." .. name .. ".new"
    local function raises_here(opts, want)
      local ok, err = pcall(function() mod.new(opts) end)
      lu.assertFalse(ok, "accepted " .. want)
      lu.assertStrContains(tostring(err), who .. ": " .. want)
      lu.assertStrContains(tostring(err), "adapters_core_spec.lua:")
    end
    raises_here({ contrl = "@x", signal = false }, "unknown option 'contrl'")
    raises_here({ mode = "bogus", signal = false }, "bad option 'mode'")
    raises_here({ timeouts = { helo = 1 }, signal = false }, "unknown option 'timeouts.helo'")
  end
end

TestAdaptersErrors = H.suite(T)

TestAdaptersCore = H.suite {
  test_bad_options_raise_naming_the_option = function()
    raises("'mode'", function() core.new { mode = "drop", signal = false } end)
    raises("'drain'", function() core.new { drain = -1, signal = false } end)
    raises("'drain'", function() core.new { drain = "5", signal = false } end)
    raises("'state'", function() core.new { state = 7, signal = false } end)
    raises("'bogus'", function() core.new { bogus = true, signal = false } end)
    raises("table expected", function() core.new("handover") end)
  end,

  test_a_fresh_start_has_nothing_inherited_and_one_descriptor_to_poll = function()
    local c = core.new { signal = false }
    lu.assertNil(c.inherited)
    lu.assertEquals(c.generation, 1)
    local fd = c:pollable():pollfd()
    lu.assertEquals(c:pollable():getfd(), fd)
    lu.assertNil(c:timeout())
    c:pump() -- nothing to do: returns at once
    lu.assertFalse(c.committed)
    c.up:close()
  end,

  -- Numbers add what the old process counted after the commit; other
  -- values take its final value unless this copy changed them.
  test_the_final_state_merges_counters_and_keeps_what_this_copy_changed = function()
    local c = core.new { signal = false }
    local t = c:state { served = 0, greeting = "hi", mood = "calm" }
    -- as if inherited at the commit: served 100, and the same strings
    c.bases = { t1 = { served = 100, greeting = "hi", mood = "calm" } }
    t.served, t.mood = 130, "busy" -- this copy served 30 and changed mood
    c:merge { t1 = { served = 104, greeting = "hello", mood = "tired" } }
    lu.assertEquals(t.served, 134)
    lu.assertEquals(t.greeting, "hello")
    lu.assertEquals(t.mood, "busy")
    c.up:close()
  end,
}

H.run()
