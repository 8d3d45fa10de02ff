-- fdpass.adapters.core on its own: what its options accept, and the
-- state table's merge of the old process's final state (the specs under
-- load check the same end to end: spec/adapters_*_spec.lua).
local lu = require "luaunit"
local H = require "helpers"
local core = require "fdpass.adapters.core"

local function raises(pattern, fn)
  local ok, err = pcall(fn)
  lu.assertFalse(ok, "did not raise")
  lu.assertStrContains(tostring(err), pattern)
end

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
