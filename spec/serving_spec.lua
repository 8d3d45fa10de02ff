-- The serving process against hostile peers and resource limits: the
-- example server (examples/http_server.lua) is attacked on its control
-- socket and pushed to its limits during a handover, and after each attack
-- it must still answer HTTP, upgrade cleanly, and hold no more descriptors
-- than before.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local codec = require "fdpass.codec"
local loop = require "fdpass.loop"
local net = require "fdpass.net"
local fos = require "fdpass.os"
local upgrade = require "fdpass.upgrade"

local server, control, port
local started = 0

local function sleep(s) loop.poll({}, nil, s) end

local function stats()
  local r, err = upgrade.request(control, "stats", 5)
  lu.assertNotNil(r, err)
  lu.assertTrue(r.ok)
  return r
end

-- One keep-alive HTTP exchange on `c`, or on a fresh connection that is
-- closed afterwards.
local function get(c)
  if not c then
    local fresh = assert(net.tcp_connect("127.0.0.1", port, 2))
    local _, answer = get(fresh)
    fresh:close()
    return nil, answer
  end
  assert(c:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
  local buf, deadline = "", fos.monotonic() + 5
  while not buf:find("\r\n\r\n.*\n$") and fos.monotonic() < deadline do
    loop.poll({ c }, nil, 0.5)
    local data = c:read()
    if data then buf = buf .. data end
  end
  lu.assertStrMatches(buf, "HTTP/1%.1 200 OK\r\n.*")
  return c, buf
end

-- Waits until the server's descriptor count is back at `n` (closing a
-- peer's end reaches the server through its next poll).
local function assert_fdcount_returns(n)
  local s
  for _ = 1, 50 do
    s = stats()
    if s.fdcount == n then return end
    sleep(0.1)
  end
  lu.assertEquals(s.fdcount, n, "the server kept descriptors of the attack")
end

local function start_server(extra_env)
  started = started + 1 -- a fresh name: a killed generation may not be gone yet
  control = ("@fdpass-serving-spec-%d-%d"):format(fos.getpid(), started)
  server = assert(fdpass.spawn({ H.lua, "examples/http_server.lua", "0", control },
    { setenv = extra_env }))
  for _ = 1, 100 do
    local r = upgrade.request(control, "stats", 1)
    if r then port = r.port; return end
    sleep(0.05)
  end
  error("the server did not start")
end

local function stop_server()
  local s = upgrade.request(control, "stats", 2)
  if s then fos.kill(s.pid, "KILL") end
  server:kill("KILL")
  server:wait(5)
end

TestServing = H.suite {
  setUp = function() start_server() end,
  tearDown = function() stop_server() end,

  test_silent_peers_hold_nothing_but_their_slot = function()
    local base = stats().fdcount
    local silent = {}
    for i = 1, 40 do silent[i] = assert(fdpass.connect(control, 2)) end
    local t0 = fos.monotonic()
    get()
    lu.assertTrue(stats().ok)
    lu.assertTrue(fos.monotonic() - t0 < 1, "silent peers slowed the server down")
    -- after the control deadline (2 s) every silent peer was dropped
    for _, ch in ipairs(silent) do
      lu.assertEquals(select(3, ch:recv(4)), "EOF")
      ch:close()
    end
    assert_fdcount_returns(base)
  end,

  test_a_control_peer_dribbling_bytes_is_refused_at_once = function()
    -- On a seqpacket control socket every write is a record of its own: a
    -- request sent a byte at a time is a run of one-byte records, each too
    -- short to be one. The server says so and moves on.
    local base = stats().fdcount
    local slow = assert(fdpass.connect(control, 2))
    local ok = slow:sendmsg("F", nil, 1)
    lu.assertEquals(ok, 1)
    local data = slow:recv(3)
    lu.assertNotNil(data, "no answer to a one-byte record")
    local r = codec.decode(data)
    lu.assertEquals({ r.ok, r.reason }, { false, "bad request" })
    slow:close()
    get()
    assert_fdcount_returns(base)
  end,

  test_an_http_client_sending_a_byte_at_a_time_stalls_nobody = function()
    local slow = assert(net.tcp_connect("127.0.0.1", port, 2))
    local request = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    local t0 = fos.monotonic()
    for i = 1, #request do
      assert(slow:write(request:sub(i, i)))
      if i % 8 == 0 then
        local g0 = fos.monotonic()
        get() -- others are answered at once meanwhile
        lu.assertTrue(fos.monotonic() - g0 < 0.5, "a slow client stalled the server")
      end
      sleep(0.02)
    end
    local _, answer = get(slow) -- its own request, completed, is answered too
    lu.assertStrContains(answer, "HTTP/1.1 200 OK")
    lu.assertTrue(fos.monotonic() - t0 < 10)
    slow:close()
  end,

  test_garbage_and_lies_on_the_control_socket = function()
    local base = stats().fdcount
    local payloads = {
      "not fdpass at all",
      "FDPS\9\0\0\0" .. H.le32(4) .. H.le32(4) .. H.le32(0) .. "abcd",          -- version 9
      "FDPS\1\0\0\0" .. H.le32(4) .. H.le32(1073741824) .. H.le32(0) .. "abcd", -- 1 GiB (2^30) announced
      "FDPS\1\0\0\0" .. H.le32(3) .. H.le32(3) .. H.le32(0) .. "\253\1\9",      -- undecodable value
    }
    for _, p in ipairs(payloads) do
      local ch = assert(fdpass.connect(control, 2))
      ch:sendmsg(p, nil, 1)
      local data = ch:recv(3)
      if data then -- the server may answer "bad request" before closing
        lu.assertFalse(codec.decode(data).ok)
      end
      ch:close()
      get()
    end
    -- descriptors nobody asked for, by the hundred
    local ch = assert(fdpass.connect(control, 2))
    local junk = H.fds(200)
    ch:send(codec.encode { cmd = "stats" }, junk, 2)
    H.close_all(junk)
    local reply = ch:recv(3)
    lu.assertNil(reply and codec.decode(reply).ok and true or nil, "a request carrying 200 descriptors was served")
    ch:close()
    assert_fdcount_returns(base)
    get()
  end,

  test_another_uid_is_refused_on_the_control_socket = function()
    local as_nobody = H.as_nobody()
    local code = ([[
      local upgrade = require "fdpass.upgrade"
      local r = upgrade.request(%q, "upgrade", 5)
      os.exit(r and r.ok == false and r.reason == "permission denied" and 0 or 1)
    ]]):format(control)
    local p = H.child(code, nil, nil, { prefix = as_nobody })
    H.expect_exit(p, 0)
    lu.assertEquals(stats().generation, 1, "a stranger's request upgraded the server")
    get()
  end,

  test_a_keepalive_connection_survives_upgrades_and_a_large_state = function()
    local c = assert(net.tcp_connect("127.0.0.1", port, 2))
    get(c)
    for _ = 1, 3 do
      local r = upgrade.request(control, "upgrade", 30)
      lu.assertTrue(r and r.ok, r and r.reason)
      get(c)
    end
    c:close()
  end,
}

-- Limits during a handover: the new copy at its RLIMIT_NOFILE must make
-- the upgrade roll back with nothing half-done.
TestLimits = H.suite {
  test_new_copy_at_its_descriptor_limit_rolls_back = function()
    local l = assert(net.tcp_listen("127.0.0.1", 0))
    local many = H.fds(300)
    -- prlimit caps the new copy at 64 descriptors; 300 listeners cannot all arrive
    local up = upgrade.new { argv = { "prlimit", "--nofile=64", H.lua, "spec/upgrade/new_copy.lua", "ok" },
      timeouts = { hello = 5, handover = 5, ready = 5, commit = 5, kill = 1 } }
    up:listener("http", l)
    for _, f in ipairs(many) do up:listener("extra", f) end
    local pid, err = up:run_upgrade()
    up:close()
    lu.assertNil(pid)
    lu.assertTrue(err.phase == "fds" or err.phase == "state" or err.phase == "ready", tostring(err))
    lu.assertEquals(type(err.reason), "string")
    -- the old side still holds and serves its listener
    lu.assertTrue(fdpass.info(l).listening)
    local c = assert(net.tcp_connect("127.0.0.1", tonumber(fdpass.info(l).addr:match(":(%d+)$")), 2))
    lu.assertEquals(#loop.poll({ l }, nil, 2), 1)
    local s = assert(net.accept(l))
    s:close(); c:close(); l:close()
    H.close_all(many)
  end,

  test_old_side_at_its_descriptor_limit_fails_in_spawn_and_keeps_everything = function()
    local l = assert(net.tcp_listen("127.0.0.1", 0))
    local up = upgrade.new { argv = { H.lua, "spec/upgrade/new_copy.lua", "ok" } }
    up:listener("http", l)
    collectgarbage()
    local soft, hard = fos.nofile()
    fos.nofile(fos.fdcount() + 1) -- one more descriptor, and not two
    local pid, err = up:run_upgrade()
    fos.nofile(soft)
    up:close()
    lu.assertNil(pid)
    lu.assertEquals(err.phase, "spawn")
    lu.assertStrContains(err.reason, "EMFILE")
    lu.assertTrue(fdpass.info(l).listening)
    l:close()
    lu.assertNotNil(hard)
  end,

  test_a_state_larger_than_the_socket_buffer_goes_through_without_blocking = function()
    local l = assert(net.tcp_listen("127.0.0.1", 0))
    local up = upgrade.new { argv = { H.lua, "spec/upgrade/new_copy.lua", "ok" } }
    up:listener("http", l)
    local big = string.rep("0123456789abcdef", 512 * 1024) -- 8 MiB
    up:state(function() return big end)
    assert(up:upgrade())
    local steps, longest = 0, 0
    local result
    while true do
      local t0 = fos.monotonic()
      local ev, x = up:step()
      longest = math.max(longest, fos.monotonic() - t0)
      steps = steps + 1
      if ev == "upgraded" or ev == "failed" then result = { ev, x } break end
      loop.poll({ up }, nil, up:timeout() or 1)
    end
    lu.assertEquals(result[1], "upgraded", tostring(result[2]))
    lu.assertTrue(steps > 3, "the 8 MiB state went in one step: the loop was blocked")
    up:finish()
    up:new_process():wait(10)
    up:close()
    l:close()
  end,
}

H.run()
