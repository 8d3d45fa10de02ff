-- Issue 10, items 1-3: whatever a new copy or a stranger does, the serving
-- loop keeps turning. Each test runs spec/attack/server.lua (an app that
-- upgrades itself from its own loop and measures, from inside, the
-- longest gap between two iterations of that loop while the upgrade runs)
-- against one attack, the server and the hostile copy pinned to one CPU
-- as the issue measured them (spec/attack/harness.lua).
--
-- The bound: a worst gap under 250 ms. The loop wakes every 10 ms at
-- least; the upgrader's bounded step (a few messages, 64 KiB of stderr, 16
-- strangers) costs a few milliseconds; the rest of the margin is for a
-- 2-core machine shared with other work, where the control run (a new
-- copy that only burns the same CPU) shows tens of milliseconds. Before
-- the fix these attacks held the loop for one to several seconds (up to
-- the phase deadline), so the bound tells the two apart with room on both
-- sides. These are the only timing assertions in the suite, as the issue
-- asks.
local lu = require "luaunit"
local H = require "helpers"
local A = require "attack.harness"

local MAX_GAP_MS = 250
-- The CPU time of one step of the upgrader (os.clock around up:step()):
-- what the step itself did, whatever else ran on the machine meanwhile, so
-- a bound as sharp as the issue's "a few milliseconds per step" holds in
-- any weather. 50 ms: room for one message of the largest size a new copy
-- may send (1 MiB) built to be costly to decode (20-27 ms measured),
-- against 244-500 ms before the fix.
local MAX_STEP_CPU_MS = 50
-- the phase deadlines the attacks run into: the floods last 1.5 s
local SHORT = { hello = 2, ready = 2 }
local T = {}

-- Runs attack `t` (A.best_of: up to 5 runs, the first under the bound
-- counts) and asserts the bound, the rollback and the server's survival.
local function assert_bounded(t, what)
  local r, gaps = A.best_of(t, MAX_GAP_MS)
  lu.assertNotNil(r.max_gap_ms, what .. ": no report from the server (" .. A.summary(r) .. ")")
  lu.assertTrue(r.iterations > 0, what .. ": the upgrade never ran")
  lu.assertTrue(r.max_gap_ms < MAX_GAP_MS,
    ("%s: the serving loop stalled %s ms in %d runs (bound %d ms): %s")
      :format(what, table.concat(gaps, ", "), #gaps, MAX_GAP_MS, A.summary(r)))
  lu.assertTrue(r.max_step_cpu_ms < MAX_STEP_CPU_MS, ("%s: one step took %.1f ms of CPU (bound %d ms): %s")
    :format(what, r.max_step_cpu_ms, MAX_STEP_CPU_MS, A.summary(r)))
  -- the attack ends the upgrade (a rollback at the latest at its
  -- deadline) and the server goes on: it exits 0 after its window
  lu.assertEquals(r.result, "failed", what .. ": " .. A.summary(r))
  lu.assertEquals(r.exit, "exit:0", what .. ": " .. A.summary(r))
  return r
end

-- The control: a new copy that only burns a CPU (the same one) and never
-- says HELLO. If this fails, the machine is too busy for the bound, not
-- the upgrader at fault.
function T.test_control_burning_copy()
  assert_bounded({ mode = "burn", seconds = 1.5, window = 3, server = SHORT }, "control")
end

-- 1. A flooding new copy: junk before HELLO, junk instead of READY, a
-- stream on its stderr (three writers each: the copy may fork).
function T.test_flood_before_hello()
  assert_bounded({ mode = "flood_hello", seconds = 1.5, window = 3, server = SHORT }, "junk before HELLO")
end

function T.test_flood_instead_of_ready()
  assert_bounded({ mode = "flood_ready", seconds = 1.5, window = 3, server = SHORT }, "junk instead of READY")
end

-- The stream comes from 6 writers of 16 KiB on the other CPU (if there
-- is one): what kept the pipe from ever being empty for long enough
-- before the fix (82-366 ms; not every run past the bound, so this test
-- guards the fix more than it could show the fault).
function T.test_stderr_stream()
  local copy = { A.lua, "spec/attack/newcopy.lua", "stderr", "1.5" }
  if A.cpu and A.cpu > 0 then copy = { "taskset", "-c", "0", A.lua, "spec/attack/newcopy.lua", "stderr", "1.5" } end
  assert_bounded({ copy = copy, mode = "stderr", writers = 6, window = 3, server = SHORT,
    env = { ATTACK_CHUNK = "16384" } }, "stderr stream")
end

-- 2. Strangers as `nobody` connecting to the rendezvous abstract name
-- (anyone can read it in /proc/net/unix) while the real copy has not come
-- yet: the loop keeps turning and the log says it in a few counted lines,
-- not one line per stranger.
function T.test_strangers_on_rendezvous()
  if not A.is_root() then H.skip("needs root to run strangers as nobody") end
  local r = assert_bounded({ mode = "sleep", seconds = 5, window = 3, strangers = 2,
    server = { rendezvous = 1, hello = 2 } }, "strangers")
  lu.assertTrue(r.connects >= 100, "the strangers hardly connected: " .. r.connects)
  lu.assertTrue(r.logs <= 20, ("%d log lines for %d strangers' connections (rate-limited lines wanted): %s")
    :format(r.logs, r.connects, tostring(r.log1)))
end

-- ... and the real copy still gets through them: the strangers find the
-- name as soon as it exists and queue connections ahead of it.
function T.test_real_copy_gets_through_strangers()
  if not A.is_root() then H.skip("needs root to run strangers as nobody") end
  local r = A.best_of({ copy = { A.lua, "spec/attack/app_copy.lua" }, strangers = 4, window = 5,
    server = { rendezvous = 1, hello = 4 }, env = { APP_COPY_QUIET = "1" } }, MAX_GAP_MS)
  lu.assertEquals(r.result, "upgraded", A.summary(r))
  lu.assertTrue(r.max_gap_ms < MAX_GAP_MS, A.summary(r))
end

-- 3. A new copy that closed its stderr and hangs before HELLO: the pipe at
-- end-of-file leaves the poll set, so waiting for the deadline costs the
-- serving process next to no CPU (not a busy loop).
function T.test_closed_stderr_hang_costs_no_cpu()
  local r = A.run { mode = "hang_closed_stderr", seconds = 5, window = 3.5, server = { hello = 2 } }
  lu.assertNotNil(r.upgrade_s, A.summary(r))
  local share = r.cpu_upgrade_s / r.upgrade_s
  lu.assertTrue(r.upgrade_s >= 1.8, "the wait ended early: " .. A.summary(r))
  lu.assertTrue(share < 0.2, ("the server used %.0f%% of a CPU while the copy hung: %s")
    :format(share * 100, A.summary(r)))
  lu.assertEquals(r.result, "failed", A.summary(r))
end

TestAttackStall = H.suite(T)
H.run()
