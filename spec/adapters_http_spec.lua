-- The lua-http adapter (fdpass.adapters.http) with its example server
-- (examples/lua_http_server.lua) under keep-alive load: spec/stackload.lua.
-- And two regressions: TCP_NODELAY on a handed-over connection, and the
-- cqueues outage (cqueues watching a descriptor fdpass closed).
local lu = require "luaunit"
local H = require "helpers"
local S = require "stackload"

local REQ = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"

-- Two answers on one keep-alive connection of the nodelay app, an
-- upgrade between them: the bodies.
local function nodelay_across_an_upgrade(naive)
  local srv = S.start("http", "spec/adapters/http_nodelay_app.lua", { NAIVE = naive and "1" or nil })
  return S.guard(srv, function()
    local fd = assert(require("fdpass.net").tcp_connect("127.0.0.1", srv.port, 2))
    assert(fd:write(REQ))
    local _, before = S.read_answer(fd)
    local new, err = S.upgrade(srv, "control")
    assert(fd:write(REQ))
    local _, after = S.read_answer(fd)
    fd:close()
    return before, after, new, err
  end)
end

TestAdaptersHttp = H.suite(S.tests(lu, "http", "lua_http", {
  test_tcp_nodelay_survives_the_handover_of_a_connection = function()
    local log, before, after, new, err = nodelay_across_an_upgrade(false)
    lu.assertNotNil(new, tostring(err) .. "\n" .. log)
    lu.assertStrMatches(before or "", "%d+ nodelay=true\n")
    lu.assertEquals(after, new .. " nodelay=true\n", log)
  end,

  -- The check can fail: cqueues' own fdopen turns TCP_NODELAY off.
  test_the_naive_fdopen_loses_tcp_nodelay = function()
    local log, _, after, new, err = nodelay_across_an_upgrade(true)
    lu.assertNotNil(new, tostring(err) .. "\n" .. log)
    lu.assertEquals(after, new .. " nodelay=false\n", log)
  end,

  -- Issue 11: fed to cqueues.poll, descriptors that fdpass closed after an
  -- upgrade took both processes down ("unable to update event
  -- disposition"). Three upgrades back to back, a keep-alive connection
  -- answered by each new copy, each old one leaving cleanly.
  test_three_upgrades_in_a_row_under_cqueues_leave_both_sides_alive = function()
    local pids, answers, status = {}, {}, nil
    local log = S.guard(S.start("http", "examples/lua_http_server.lua"), function(srv)
      local fd = assert(require("fdpass.net").tcp_connect("127.0.0.1", srv.port, 2))
      pids[1] = S.pid_of(srv)
      for i = 1, 3 do
        pids[i + 1] = S.upgrade(srv, "control") or false
        assert(fd:write(REQ))
        answers[i] = select(2, S.read_answer(fd))
      end
      fd:close()
      S.sleep(0.3)
      status = S.get(srv.port)
    end)
    for i = 1, 3 do
      lu.assertTrue(pids[i + 1] ~= false, ("upgrade %d failed\n%s"):format(i, log))
      lu.assertStrMatches(answers[i] or "", pids[i + 1] .. " served %d+\n")
      lu.assertTrue(H.gone_or_zombie(pids[i]), "old process " .. pids[i] .. " left")
    end
    lu.assertEquals(status, 200, log)
    lu.assertNil(log:find("event disposition", 1, true), log)
    lu.assertNil(log:find("traceback", 1, true), log)
    local _, done = log:gsub("done: handed %d+, closed 0 politely, %d+ by peers, 0 cut", "")
    lu.assertEquals(done, 3, log)
  end,
}))

H.run()
