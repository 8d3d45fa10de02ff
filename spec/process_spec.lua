-- Processes: spawn without a shell, wait with and without a timeout, exit
-- codes and signals, kill by name or number, env, descriptor mapping, and a
-- receiver that runs into its RLIMIT_NOFILE.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local socket = require "socket"

local now = socket.gettime

-- Runs argv with stdout into a temp file; returns how, n, output.
local function output_of(argv, opts)
  local name = os.tmpname()
  local out = assert(io.open(name, "w"))
  opts = opts or {}
  opts.fds = opts.fds or {}
  opts.fds[1] = out
  local proc = assert(fdpass.spawn(argv, opts))
  out:close()
  local how, n = proc:wait(10)
  if not how then proc:kill("KILL"); proc:wait(5) end
  local f = assert(io.open(name, "r"))
  local text = f:read("*a")
  f:close()
  os.remove(name)
  return how, n, text
end

local function sleeper()
  return assert(fdpass.spawn({ "sleep", "30" }))
end

TestProcess = H.suite {
  test_exit_codes = function()
    lu.assertEquals({ assert(fdpass.spawn({ "true" })):wait(10) }, { "exit", 0 })
    lu.assertEquals({ assert(fdpass.spawn({ "false" })):wait(10) }, { "exit", 1 })
    lu.assertEquals({ assert(fdpass.spawn({ "sh", "-c", "exit 7" })):wait(10) }, { "exit", 7 })
    lu.assertEquals({ assert(fdpass.spawn({ "sh", "-c", "exit 255" })):wait() }, { "exit", 255 })
    -- a Lua child's os.exit code
    H.expect_exit(H.child("os.exit(42)"), 42)
  end,

  test_killed_by_signal = function()
    local p = assert(fdpass.spawn({ "sh", "-c", "kill -TERM $$; sleep 5" }))
    lu.assertEquals({ p:wait(10) }, { "signal", 15 })
    local q = assert(fdpass.spawn({ "sh", "-c", "kill -KILL $$; sleep 5" }))
    lu.assertEquals({ q:wait(10) }, { "signal", 9 })
  end,

  test_wait_timeout_then_kill = function()
    local p = sleeper()
    local t0 = now()
    local how, msg, code = p:wait(0.1)
    local dt = now() - t0
    lu.assertEquals({ how, msg, code }, { nil, "wait: Connection timed out", "ETIMEDOUT" })
    lu.assertTrue(dt >= 0.095 and dt < 2, "waited " .. dt)
    lu.assertEquals({ p:wait(0) }, { nil, "wait: Connection timed out", "ETIMEDOUT" })
    lu.assertEquals(p:kill("KILL"), true)
    lu.assertEquals({ p:wait(5) }, { "signal", 9 })
  end,

  test_wait_returns_when_child_ends = function()
    local p = assert(fdpass.spawn({ "sh", "-c", "sleep 0.2; exit 3" }))
    local t0 = now()
    lu.assertEquals({ p:wait(10) }, { "exit", 3 })
    local dt = now() - t0
    lu.assertTrue(dt >= 0.1 and dt < 3, "wait took " .. dt .. " s for a 0.2 s child")
  end,

  test_wait_twice_raises_and_kill_after_wait_fails = function()
    local p = assert(fdpass.spawn({ "true" }))
    lu.assertEquals({ p:wait(10) }, { "exit", 0 })
    lu.assertErrorMsgContains("already waited", p.wait, p, 1)
    lu.assertEquals({ p:kill("TERM") }, { nil, "kill: No such process", "ESRCH" })
  end,

  test_kill_by_name_and_number = function()
    local cases = {
      { nil, 15 }, { "TERM", 15 }, { "SIGTERM", 15 }, { "USR1", 10 }, { "SIGUSR2", 12 },
      { "ALRM", 14 }, { "KILL", 9 }, { 9, 9 }, { 10, 10 },
    }
    for _, c in ipairs(cases) do
      local p = sleeper()
      lu.assertEquals(p:kill(c[1]), true)
      lu.assertEquals({ p:wait(5) }, { "signal", c[2] }, "kill(" .. tostring(c[1]) .. ")")
    end
    local p = sleeper()
    lu.assertErrorMsgContains("unknown signal 'BOGUS'", p.kill, p, "BOGUS")
    lu.assertErrorMsgContains("unknown signal 'NOPE'", p.kill, p, "SIGNOPE")
    lu.assertEquals({ p:wait(0.05) }, { nil, "wait: Connection timed out", "ETIMEDOUT" })
    p:kill("KILL")
    p:wait(5)
  end,

  test_module_kill = function()
    local p = sleeper()
    lu.assertEquals(fos.kill(p:pid(), 0), true) -- it exists
    lu.assertEquals(fos.kill(p:pid(), "USR2"), true)
    lu.assertEquals({ p:wait(5) }, { "signal", 12 })
    lu.assertErrorMsgContains("pid must be > 0", fos.kill, 0)
    lu.assertErrorMsgContains("pid must be > 0", fos.kill, -1, "KILL")
    lu.assertErrorMsgContains("unknown signal", fos.kill, p:pid(), "WHAT")
    -- a stopped and continued child still ends normally
    local q = sleeper()
    lu.assertEquals(q:kill("STOP"), true)
    lu.assertEquals({ q:wait(0.05) }, { nil, "wait: Connection timed out", "ETIMEDOUT" })
    lu.assertEquals(fos.kill(q:pid(), "CONT"), true)
    lu.assertEquals(q:kill(), true)
    lu.assertEquals({ q:wait(5) }, { "signal", 15 })
  end,

  test_pid_getpid_tostring = function()
    local ch, proc = H.peer([[
local fos = require "fdpass.os"
      assert(ch:send(tostring(fos.getpid()), nil, 5))
      assert(ch:recv(5))
    ]])
    lu.assertTrue(H.is_integer(proc:pid()), "pid: not an integer: " .. tostring(proc:pid()))
    lu.assertTrue(proc:pid() > 0 and proc:pid() ~= fos.getpid())
    lu.assertEquals(tostring(proc), ("fdpass.process (%d)"):format(proc:pid()))
    lu.assertEquals((ch:recv(5)), tostring(proc:pid())) -- no shell in between
    assert(ch:send("bye", nil, 5))
    H.expect_exit(proc, 0)
    ch:close()
  end,

  test_env_replaces_environment = function()
    local how, n, out = output_of({ "sh", "-c", 'echo "${FOO-unset}:${HOME-unset}:${A_B-unset}"' },
      { env = { FOO = "bar baz", A_B = "=x=" } })
    lu.assertEquals({ how, n }, { "exit", 0 })
    lu.assertEquals(out, "bar baz:unset:=x=\n")
    -- exactly these variables, nothing else; PATH lookup still works
    how, n, out = output_of({ "env" }, { env = { FOO = "1", BAR = "two words" } })
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    table.sort(lines)
    lu.assertEquals({ how, n, lines }, { "exit", 0, { "BAR=two words", "FOO=1" } })
    how, n, out = output_of({ "env" }, { env = {} })
    lu.assertEquals({ how, n, out }, { "exit", 0, "" })
  end,

  test_env_inherited_without_option = function()
    local how, n, out = output_of({ "sh", "-c", 'printf %s "$HOME"' })
    lu.assertEquals({ how, n }, { "exit", 0 })
    lu.assertEquals(out, os.getenv("HOME") or "")
  end,

  test_env_bad_values_raise = function()
    lu.assertErrorMsgContains("env must map names to strings",
      fdpass.spawn, { "true" }, { env = { "positional" } })
    lu.assertErrorMsgContains("env must map names to strings",
      fdpass.spawn, { "true" }, { env = { X = {} } })
  end,

  test_fds_mapping = function()
    local a, b = assert(fdpass.socketpair())
    local small = H.tempfile("1")
    local big = H.tempfile("22")
    local c2, p2 = assert(fdpass.socketpair())
    local proc2 = H.child([[
      local ch = fdpass.channel(3)
      local function d(n)
        local i, _, code = fdpass.info(n)
        if not i then return code end
        return (i.kind .. "/" .. (i.family or i.size) .. "/" .. tostring(i.cloexec))
      end
      assert(ch:send(table.concat({ d(4), d(5), d(9), d(6), d(8) }, " "), nil, 5))
    ]], { [3] = p2, [4] = a, [5] = small, [9] = big })
    p2:close()
    lu.assertEquals((c2:recv(5)), "socket/unix/false file/1/false file/2/false EBADF EBADF")
    H.expect_exit(proc2, 0)
    c2:close()
    -- mapping leaves the parent's descriptors as they were
    lu.assertEquals({ small:info().cloexec, big:info().size, fdpass.info(a).cloexec }, { true, 2, true })
    a:close()
    b:close()
    small:close()
    big:close()
  end,

  test_fds_mapping_permutation = function()
    local x = H.tempfile("x")    -- size 1
    local y = H.tempfile("yyy")  -- size 3
    local nx, ny = x:fileno(), y:fileno()
    -- child's nx gets y, child's ny gets x: each source is another's target
    local how, n, out = output_of({ H.lua, "-e", ([[
      local fdpass = require "fdpass"
      io.write(fdpass.info(%d).size, " ", fdpass.info(%d).size)
    ]]):format(nx, ny) }, { fds = { [nx] = y, [ny] = x } })
    lu.assertEquals({ how, n, out }, { "exit", 0, "3 1" })
    x:close()
    y:close()
  end,

  -- LuaSocket opens its sockets without close-on-exec: the child must
  -- still get only 0-2 and the map (a gap below the highest target, and
  -- everything above it), or a connection lives on in a new copy.
  test_spawn_leaves_unmapped_descriptors_behind = function()
    local y = H.tempfile("yyy")
    local first = assert(socket.bind("127.0.0.1", 0))
    local s = assert(socket.bind("127.0.0.1", 0)) -- above 3: a target can be below it
    local n = s:getfd()
    lu.assertTrue(n > 3)
    for _, target in ipairs { 3, n + 7 } do
      local how, code, out = output_of({ H.lua, "-e", ([[
        local fdpass = require "fdpass"
        local _, err = fdpass.info(%d)
        io.write(tostring(err), " ", fdpass.info(%d).size)
      ]]):format(n, target) }, { fds = { [target] = y } })
      lu.assertEquals({ how, code }, { "exit", 0 })
      lu.assertStrContains(out, "Bad file descriptor 3")
    end
    y:close()
    s:close()
    first:close()
  end,

  test_fds_mapping_stdin = function()
    local input = H.tempfile("through stdin\n")
    local how, n, out = output_of({ "cat" }, { fds = { [0] = input } })
    lu.assertEquals({ how, n, out }, { "exit", 0, "through stdin\n" })
    input:close()
  end,

  test_spawn_failures = function()
    local p, msg, code = fdpass.spawn({ "fdpass-no-such-program-xyz" })
    lu.assertNil(p)
    -- a PATH search reports EACCES when some PATH directory was unreadable
    lu.assertTrue(code == "ENOENT" or code == "EACCES", code)
    lu.assertStrContains(msg, "spawn fdpass-no-such-program-xyz: ")
    local q, _, code2 = fdpass.spawn({ "/nonexistent/dir/prog" })
    lu.assertEquals({ q, code2 }, { nil, "ENOENT" })
    local plain = os.tmpname() -- mode 0600: not executable, even for root
    local _, _, code3 = fdpass.spawn({ plain })
    os.remove(plain)
    lu.assertEquals(code3, "EACCES")
    -- programming mistakes raise
    lu.assertErrorMsgContains("argv needs a program", fdpass.spawn, {})
    lu.assertErrorMsgContains("argv[2] must be a string", fdpass.spawn, { "true", 5 })
    lu.assertErrorMsgContains("table expected", fdpass.spawn, "true")
    lu.assertErrorMsgContains("descriptor numbers 0..1023", fdpass.spawn, { "true" }, { fds = { [2000] = 1 } })
    lu.assertErrorMsgContains("descriptor numbers 0..1023", fdpass.spawn, { "true" }, { fds = { x = 1 } })
    lu.assertErrorMsgContains("cannot take a descriptor", fdpass.spawn, { "true" }, { fds = { [3] = "x" } })
  end,

  test_nofile_read_and_set = function()
    local soft, hard = fos.nofile()
    lu.assertTrue(H.is_integer(soft), "soft limit: not an integer: " .. tostring(soft))
    lu.assertTrue(hard >= soft)
    -- set in a child, so that this process keeps its limit
    local ch, proc = H.peer([[
local fos = require "fdpass.os"
      local s0, h0 = fos.nofile()
      local s1, h1 = fos.nofile(64)
      local s2 = fos.nofile()
      assert(ch:send(table.concat({ s1, s2, tostring(h1 == h0) }, " "), nil, 5))
    ]])
    lu.assertEquals((ch:recv(5)), "64 64 true")
    H.expect_exit(proc, 0)
    ch:close()
    lu.assertEquals({ fos.nofile() }, { soft, hard })
    lu.assertErrorMsgContains("limit must be >= 0", fos.nofile, -1)
    local r1, msg, code = fos.nofile(hard + 1)
    -- (5.1 and LuaJIT have no math.maxinteger: their integers are doubles,
    -- exact up to 2^53)
    -- raising above the hard limit needs CAP_SYS_RESOURCE
    if hard < (math.maxinteger or 2 ^ 53) then -- luacheck: read globals math.maxinteger
      if r1 then fos.nofile(soft) end
      lu.assertTrue(r1 ~= nil or code == "EPERM" or code == "EINVAL", tostring(msg))
    end
    lu.assertEquals((fos.nofile()), soft)
  end,

  test_receiver_at_rlimit_nofile_gets_ectrunc = function()
    local code = [[
local fos = require "fdpass.os"
      local ch = fdpass.channel(3)
      local before = fos.fdcount()
      assert(fos.nofile(before + room))
      assert(ch:send("ready", nil, 5))
      local data, fds_or_msg, err = ch:recv(10)
      local after = fos.fdcount()
      if room > 20 then -- the control: enough room for all of them
        if data ~= "ten" or #fds_or_msg ~= 10 then os.exit(10) end
        for _, f in ipairs(fds_or_msg) do f:close() end
        os.exit(fos.fdcount() == before and 0 or 11)
      end
      if data ~= nil then io.stderr:write("received ", #fds_or_msg, " fds\n") os.exit(2) end
      if err ~= "ECTRUNC" then io.stderr:write(tostring(fds_or_msg), "\n") os.exit(3) end
      if after ~= before then io.stderr:write(before, " -> ", after, "\n") os.exit(4) end
      local _, _, again = ch:recv(0)
      if again ~= "EBROKEN" then io.stderr:write("then ", tostring(again), "\n") os.exit(5) end
      os.exit(0)
    ]]
    for _, room in ipairs { 2, 64 } do
      local a, b = assert(fdpass.socketpair())
      local proc = H.child(("local room = %d\n"):format(room) .. code, { [3] = b })
      b:close()
      lu.assertEquals((a:recv(10)), "ready", "room " .. room)
      local ten = H.fds(10)
      assert(a:send("ten", ten, 5))
      H.close_all(ten)
      H.expect_exit(proc, 0)
      a:close()
    end
  end,
}

H.run()
