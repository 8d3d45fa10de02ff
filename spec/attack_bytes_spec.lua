-- Issue 10: one step of the old side is bounded in bytes, not only in
-- messages. A new copy sends only small messages (HELLO, NAK, READY,
-- COMMITTED): the old side takes at most 4 KiB before HELLO and 64 KiB
-- after, refusing a bigger message by its header (nothing decoded; the
-- upgrade rolls back at once), and decodes at most 64 KiB of messages (plus one) per
-- step. Before, it took 1 MiB messages, 16 a step: junk that costs ~21 ms
-- a message to decode held the serving loop 72-244 ms per step (bench
-- attack_gaps, "junk 1 MiB messages"). Measured as attack_stall_spec.lua
-- does (spec/attack/server.lua, the same 250 ms bound on the loop's worst
-- gap, the one timing assertion the issue asks for).
local lu = require "luaunit"
local H = require "helpers"
local A = require "attack.harness"

local MAX_GAP_MS = 250
local SHORT = { hello = 2, ready = 2 }
local T = {}

local function attack(mode, size, writers)
  local copy = { A.lua, "spec/upgrade/junk_copy.lua", mode, tostring(size), "1.5" }
  local r, gaps = A.best_of({ copy = copy, writers = writers, window = 3, server = SHORT }, MAX_GAP_MS)
  lu.assertNotNil(r.max_gap_ms, "no report from the server (" .. A.summary(r) .. ")")
  lu.assertTrue(r.max_gap_ms < MAX_GAP_MS, ("%s of %d bytes: the serving loop stalled %s ms (bound %d ms): %s")
    :format(mode, size, table.concat(gaps, ", "), MAX_GAP_MS, A.summary(r)))
  lu.assertEquals(r.result, "failed", A.summary(r))
  lu.assertEquals(r.exit, "exit:0", A.summary(r))
  return r
end

-- 1 MiB messages are refused by their header: a rollback at once, not at
-- the phase deadline.
function T.test_big_junk_before_hello_is_refused_at_once()
  local r = attack("before_hello", 1024 * 1024 - 16, 1)
  lu.assertStrContains(r.reason, "limit is 4096", A.summary(r))
end

function T.test_big_junk_instead_of_ready_is_refused_at_once()
  local r = attack("instead_of_ready", 1024 * 1024 - 16, 1)
  lu.assertStrContains(r.reason, "limit is 65536", A.summary(r))
end

-- Junk just under the limit, as costly to decode as it can be, from 3
-- writers until the READY deadline: each step decodes 128 KiB at most
-- (64 KiB and the message that crosses it).
function T.test_costly_junk_under_the_limit_keeps_the_loop_turning()
  local r = attack("instead_of_ready", 64 * 1024, 3)
  lu.assertStrContains(r.reason, "timed out waiting for READY", A.summary(r))
end

TestAttackBytes = H.suite(T)
H.run()
