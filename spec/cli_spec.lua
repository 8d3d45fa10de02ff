-- bin/fdpass-upgrade against examples/http_server.lua: what a person at a
-- shell sees, and the exit codes a supervisor script relies on. Includes
-- the classic bad reload: a new copy whose configuration is broken refuses
-- the handover, and the old process serves on with its own.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local loop = require "fdpass.loop"
local net = require "fdpass.net"
local fos = require "fdpass.os"
local upgrade = require "fdpass.upgrade"

local function sleep(s) loop.poll({}, nil, s) end

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- Runs the command and returns its exit code and everything it printed.
local function drain(r)
  local out = {}
  while true do
    local data = r:read(4096)
    if not data then break end
    out[#out + 1] = data
  end
  r:close()
  return table.concat(out)
end

-- Runs the command and returns its exit code, what it wrote to stdout and
-- what to stderr. Both pipes are read in turn: the CLI writes a few lines
-- at most, far below a pipe's buffer, so neither write can block.
local function run_split(...)
  local r1, w1 = assert(fos.pipe())
  local r2, w2 = assert(fos.pipe())
  local p = assert(fdpass.spawn({ H.lua, "bin/fdpass-upgrade", ... }, { fds = { [1] = w1, [2] = w2 } }))
  w1:close()
  w2:close()
  local out, err = drain(r1), drain(r2)
  local how, code = p:wait(30)
  lu.assertEquals(how, "exit")
  return code, out, err
end

-- Runs the command and returns its exit code and everything it printed.
local function run(...)
  local r, w = assert(fos.pipe())
  local p = assert(fdpass.spawn({ H.lua, "bin/fdpass-upgrade", ... }, { fds = { [1] = w, [2] = w } }))
  w:close()
  local out = drain(r)
  local how, code = p:wait(30)
  lu.assertEquals(how, "exit")
  return code, out
end

local function http_get(port)
  local c = assert(net.tcp_connect("127.0.0.1", port, 2))
  assert(c:write("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
  local buf = ""
  for _ = 1, 40 do
    loop.poll({ c }, nil, 0.1)
    buf = buf .. (c:read() or "")
    if buf:find("\n$") and buf:find("\r\n\r\n") then break end
  end
  c:close()
  return buf:match("\r\n\r\n(.*)\n$")
end

local server, control, config, n = nil, nil, nil, 0

TestCli = H.suite {
  setUp = function()
    n = n + 1
    control = ("@fdpass-cli-spec-%d-%d"):format(fos.getpid(), n)
    config = os.tmpname()
    write(config, "greeting = hello\n")
    server = assert(fdpass.spawn({ H.lua, "examples/http_server.lua", "0", control },
      { setenv = { HTTP_SERVER_CONFIG = config } }))
    for _ = 1, 100 do
      if upgrade.request(control, "stats", 1) then return end
      sleep(0.05)
    end
    error("the server did not start")
  end,

  tearDown = function()
    local s = upgrade.request(control, "stats", 2)
    if s then fos.kill(s.pid, "KILL") end
    server:kill("KILL")
    server:wait(5)
    os.remove(config)
  end,

  test_upgrade_prints_old_and_new_pid_and_exits_0 = function()
    local before = upgrade.request(control, "stats", 2)
    local code, out = run(control)
    lu.assertEquals(code, 0, out)
    local old, new = out:match("^upgraded: (%d+) %-> (%d+) %(handover [%d.]+ ms, spawn [%d.]+ ms%)\n$")
    lu.assertEquals(tonumber(old), before.pid, out)
    local after = upgrade.request(control, "stats", 2)
    lu.assertEquals(tonumber(new), after.pid)
    lu.assertEquals(after.generation, 2)
  end,

  test_stats_prints_one_key_per_line = function()
    local code, out = run(control, "--stats")
    lu.assertEquals(code, 0, out)
    lu.assertStrMatches(out, ".*\ngeneration=1\n.*")
    lu.assertStrMatches(out, ".*\nok=true\n.*")
    lu.assertStrMatches(out, ".*\nport=%d+\n.*")
  end,

  test_a_broken_config_fails_in_ready_and_the_old_copy_serves_on = function()
    local s = upgrade.request(control, "stats", 2)
    lu.assertEquals(http_get(s.port), ("%d 1 hello %d"):format(s.pid, s.served + 1))
    write(config, "this is not a config\n")
    local code, out = run(control)
    lu.assertEquals(code, 1, out)
    lu.assertStrContains(out, "upgrade failed in ready: new copy refused: config: ")
    lu.assertStrContains(out, "expected one line 'greeting = word'")
    -- the same process answers, with its own configuration
    lu.assertStrMatches(http_get(s.port), ("%d 1 hello %%d+"):format(s.pid))
    -- mended, the next upgrade takes it
    write(config, "greeting = welcome\n")
    code, out = run(control)
    lu.assertEquals(code, 0, out)
    local after = upgrade.request(control, "stats", 2)
    lu.assertStrMatches(http_get(s.port), ("%d 2 welcome %%d+"):format(after.pid))
  end,

  test_nobody_listening_exits_2 = function()
    local code, out = run("@fdpass-cli-spec-nobody-here")
    lu.assertEquals(code, 2)
    lu.assertStrContains(out, "fdpass-upgrade: connect @fdpass-cli-spec-nobody-here: Connection refused")
  end,

  test_bad_usage_exits_2 = function()
    local code, out = run()
    lu.assertEquals(code, 2)
    lu.assertStrContains(out, "usage: fdpass-upgrade ADDR")
    code = run(control, "--frobnicate")
    lu.assertEquals(code, 2)
    -- wrong usage is an error: the usage goes to stderr, nothing to stdout
    local err
    code, out, err = run_split("--frobnicate")
    lu.assertEquals(code, 2)
    lu.assertEquals(out, "")
    lu.assertStrContains(err, "usage: fdpass-upgrade ADDR")
  end,

  test_help_prints_usage_to_stdout_and_exits_0 = function()
    for _, flag in ipairs { "--help", "-h" } do
      local code, out, err = run_split(flag)
      lu.assertEquals(code, 0, flag)
      lu.assertStrContains(out, "usage: fdpass-upgrade ADDR", false, flag)
      lu.assertEquals(err, "", flag)
    end
  end,

  test_a_bare_name_that_is_no_file_hints_at_the_abstract_form = function()
    local name = ("fdpass-cli-spec-no-such-%d"):format(fos.getpid())
    local code, out = run(name)
    lu.assertEquals(code, 2, out)
    lu.assertStrContains(out, "fdpass-upgrade: connect " .. name .. ": No such file or directory")
    lu.assertStrContains(out, "(an abstract name needs a leading @: try @" .. name .. ")")
    -- a path that names no file gets no such hint: it was meant as a path
    code, out = run("./" .. name)
    lu.assertEquals(code, 2, out)
    lu.assertStrContains(out, "No such file or directory")
    lu.assertNotStrContains(out, "abstract")
  end,
}

H.run()
