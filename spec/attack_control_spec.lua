-- Issue 10, beyond the six: the same classes of fault against the control
-- socket (spec/attack/server.lua serving one from its loop, no upgrade
-- running), by clients of spec/attack/control_client.lua: a client that
-- opens connections and says nothing (slowloris), garbage, requests that
-- carry descriptors, and strangers as nobody on an abstract name and on a
-- path. Bounds: the loop gap and the CPU time of one step (see
-- attack_stall_spec.lua for why 250 ms and 50 ms),
-- the descriptors held at any time (at most 64 waiting clients and one
-- step's accepts), none held afterwards (collector stopped), and
-- rate-limited log lines.
local lu = require "luaunit"
local H = require "helpers"
local A = require "attack.harness"

local MAX_GAP_MS = 250
local MAX_HELD = 64 + 16 -- waiting clients at once + one step's accepts
local T = {}

-- The clients stop 0.8 s before the server's window ends, so that what it
-- holds at the end is what it kept, not a request still on its way.
local function attack(client, gc)
  client.seconds = 1.2
  local dir = not client.addr and A.tmpdir()
  local addr = client.addr or (dir .. "/control")
  local ok, r = pcall(A.best_of, { mode = "sleep", seconds = 1, window = 2,
    server = { control = addr, trigger = "none", gc = gc }, clients = { client } }, MAX_GAP_MS)
  A.rmdir(dir or nil)
  assert(ok, r)
  lu.assertEquals(r.exit, "exit:0", A.summary(r))
  lu.assertTrue(r.max_gap_ms < MAX_GAP_MS, ("%s: the serving loop stalled %.1f ms: %s")
    :format(client.mode, r.max_gap_ms, A.summary(r)))
  lu.assertTrue(r.max_step_cpu_ms < 50, ("%s: one step took %.1f ms of CPU: %s")
    :format(client.mode, r.max_step_cpu_ms, A.summary(r)))
  return r
end

function T.test_slowloris_holds_bounded_descriptors()
  local r = attack { mode = "slowloris", count = 2 }
  lu.assertTrue(r.connects > MAX_HELD, "the clients hardly connected: " .. r.connects)
  lu.assertTrue(r.fd_peak - r.fd_base <= MAX_HELD,
    ("%d silent clients made the server hold %d descriptors at once (bound %d)"):format(
      r.connects, r.fd_peak - r.fd_base, MAX_HELD))
end

function T.test_garbage_requests()
  local r = attack { mode = "garbage", count = 2 }
  lu.assertTrue(r.connects > 100, "the clients hardly connected: " .. r.connects)
  lu.assertEquals(r.fd_end, r.fd_base, A.summary(r))
end

function T.test_requests_with_descriptors_closed_at_once()
  local r = attack({ mode = "fds", count = 2 }, "stop")
  lu.assertTrue(r.connects > 100, "the clients hardly connected: " .. r.connects)
  lu.assertEquals(r.fd_end, r.fd_base, "descriptors sent with requests still held: " .. A.summary(r))
  lu.assertTrue(r.fd_peak - r.fd_base <= MAX_HELD, A.summary(r))
end

function T.test_strangers_on_an_abstract_control_name()
  if not A.is_root() then H.skip("needs root to run strangers as nobody") end
  local r = attack { mode = "flood", count = 2, nobody = true, addr = ("@fdpass-attack-%d"):format(os.time()) }
  lu.assertTrue(r.connects > 100, "the strangers hardly connected: " .. r.connects)
  lu.assertEquals(r.fd_end, r.fd_base, A.summary(r))
  lu.assertTrue(r.logs <= 20, ("%d log lines for %d strangers (rate-limited lines wanted)"):format(r.logs, r.connects))
end

function T.test_strangers_cannot_reach_a_path_control_socket()
  if not A.is_root() then H.skip("needs root to run strangers as nobody") end
  -- the directory is open to all: only the socket's own mode (0600) keeps nobody out
  local r = attack { mode = "flood", count = 1, nobody = true }
  lu.assertEquals(r.reported, 1, "the stranger did not run to the end")
  lu.assertEquals(r.connects, 0, "nobody connected to a path control socket")
end

TestAttackControl = H.suite(T)
H.run()
