-- Runs one attack for the specs and bench/attack_gaps.lua: starts
-- spec/attack/server.lua (pinned to one CPU with its new copy, as issue 10
-- measured) with a hostile new copy from spec/attack/newcopy.lua, and
-- optionally strangers as `nobody`; waits for its report; kills every
-- process the attack started, on every path; returns the report.
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local other_uid = require "other_uid"

local A = {}
A.lua = os.getenv("FDPASS_LUA") or "lua5.4"
local ROOT = os.getenv("ATTACK_ROOT") or "."

local function sh_ok(cmd)
  local a, how, code = os.execute(cmd)
  if type(a) == "number" then return a == 0 end
  return a == true and (how == nil or how == "exit") and (code == nil or code == 0)
end

--- The CPU the specs pin to (the last one), or nil without taskset.
A.cpu = (function()
  if not sh_ok("command -v taskset >/dev/null 2>&1") then return nil end
  local p = io.popen("nproc 2>/dev/null")
  local n = tonumber(p and p:read("*l") or "") or 1
  if p then p:close() end
  return n - 1
end)()

function A.is_root()
  local p = io.popen("id -u")
  local uid = p:read("*l")
  p:close()
  return uid == "0"
end

local function read_report(path)
  local f = io.open(path)
  if not f then return nil end
  local r = {}
  for line in f:lines() do
    local k, v = line:match("^(%S+) ?(.*)$")
    if k then r[k] = tonumber(v) or v end
  end
  f:close()
  return r
end

-- Kills what the attack started: the pids the hostile copies wrote, each
-- only if it still runs one of our scripts (never a recycled pid).
local function kill_listed(pidfile)
  local f = io.open(pidfile)
  if not f then return end
  for line in f:lines() do
    local pid = tonumber(line)
    local c = pid and io.open("/proc/" .. pid .. "/cmdline")
    if c then
      local cmd = c:read("*a") or ""
      c:close()
      if cmd:find("spec/attack/", 1, true) then fos.kill(pid, "KILL") end
    end
  end
  f:close()
end

local function pin(argv)
  if not A.cpu then return argv end
  local out = { "taskset", "-c", tostring(A.cpu) }
  for _, a in ipairs(argv) do out[#out + 1] = a end
  return out
end

-- A script of spec/attack run as nobody: other_uid's prefix (setpriv, a
-- 0755 copy of the modules), the script's source passed with -e (the
-- checkout may not be readable by nobody) after its `arg`.
local function as_nobody(script, args)
  local prefix = assert(other_uid.prefix())
  local f = assert(io.open(ROOT .. "/spec/attack/" .. script))
  local source = f:read("*a")
  f:close()
  local literal = { ("[0] = %q"):format(script) }
  for _, a in ipairs(args) do literal[#literal + 1] = ("%q"):format(a) end
  local argv = {}
  for _, p in ipairs(prefix) do argv[#argv + 1] = p end
  argv[#argv + 1] = A.lua
  argv[#argv + 1] = "-e"
  argv[#argv + 1] = "arg = { " .. table.concat(literal, ", ") .. " }\n" .. source
  return argv
end

--- Runs one attack. `t`: `mode` (newcopy.lua's), `seconds` (how long the
-- copy floods or hangs), `n` (descriptors), `writers`, `window` and the
-- server's other options in `server` (a table of key = value), `strangers`
-- (a count of stranger processes run as nobody; needs root), `clients`
-- (`{ {mode =, count =, nobody =, seconds =}, ... }`: control_client.lua
-- processes against `server.control`), `env` (more environment for the
-- server).
-- Returns the server's report (see server.lua), with `exit` (how it ended)
-- and `connects` (the strangers' total).
function A.run(t)
  local pidfile, out, log = os.tmpname(), os.tmpname(), os.tmpname()
  os.remove(out)
  local argv = pin { A.lua, ROOT .. "/spec/attack/server.lua", "out=" .. out, "log=" .. log,
    "window=" .. tostring(t.window or 3) }
  for k, v in pairs(t.server or {}) do argv[#argv + 1] = k .. "=" .. tostring(v) end
  argv[#argv + 1] = "--"
  for _, a in ipairs(t.copy or { A.lua, ROOT .. "/spec/attack/newcopy.lua", t.mode,
    tostring(t.seconds or 2), tostring(t.n or 16) }) do argv[#argv + 1] = a end
  local env = { ATTACK_PIDFILE = pidfile, ATTACK_WRITERS = tostring(t.writers or 3) }
  for k, v in pairs(t.env or {}) do env[k] = v end
  local server = assert(fdpass.spawn(argv, { setenv = env }))
  local strangers = {}
  -- Strangers and control clients run on any CPU: the attacker's
  -- processes are not confined with the server.
  local function attacker(script_args, nobody)
    local argv2
    if nobody then
      local args = {}
      for i = 2, #script_args do args[#args + 1] = script_args[i] end
      argv2 = as_nobody(script_args[1], args)
    else
      argv2 = { A.lua, ROOT .. "/spec/attack/" .. script_args[1] }
      for i = 2, #script_args do argv2[#argv2 + 1] = script_args[i] end
    end
    local r, w = assert(fos.pipe())
    strangers[#strangers + 1] = { proc = assert(fdpass.spawn(argv2, { fds = { [1] = w },
      setenv = { ATTACK_PIDFILE = pidfile } })), out = r }
    w:close()
  end
  local ok, err = pcall(function()
    for _ = 1, t.strangers or 0 do
      attacker({ "stranger.lua", tostring(server:pid()), tostring((t.window or 3) + 0.5) }, true)
    end
    for _, c in ipairs(t.clients or {}) do
      for _ = 1, c.count or 1 do
        attacker({ "control_client.lua", c.mode, t.server.control, tostring(c.seconds or t.window or 3) }, c.nobody)
      end
    end
  end)
  local how, code = server:wait((t.window or 3) + 20)
  if not how then server:kill("KILL"); server:wait(); how = "killed" end
  local connects, reported = 0, 0 -- the attackers' total, and how many said it
  for _, s in ipairs(strangers) do
    if not s.proc:wait(5) then s.proc:kill("KILL"); s.proc:wait() end
    local text = s.out:read(4096) or ""
    s.out:close()
    local n = tonumber(text:match("connects (%d+)") or text:match("done (%d+)"))
    if n then reported = reported + 1 end
    connects = connects + (n or 0)
  end
  kill_listed(pidfile)
  other_uid.cleanup() -- the copy of the modules for nobody, if one was made
  local report = read_report(out) or {}
  os.remove(pidfile); os.remove(out); os.remove(log)
  assert(ok, err)
  report.exit = tostring(how) .. ":" .. tostring(code)
  report.connects, report.reported = connects, reported
  return report
end

--- A new empty directory (0755: open to all, so that only what is in it
-- guards its contents), and its removal.
function A.tmpdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(sh_ok("mkdir -p " .. dir .. " && chmod 755 " .. dir), "cannot make " .. dir)
  return dir
end

function A.rmdir(dir)
  if dir then sh_ok("rm -rf '" .. dir .. "'") end
end

--- Runs attack `t` until one run's worst gap is under `bound_ms`, at most
-- `tries` (5) runs: on a machine shared with other work a burst of load
-- can only lengthen a gap, never shorten one, so one run under the bound
-- shows the upgrader did not hold the loop, while a stall the upgrader
-- causes (seconds, every time, before issue 10's fix) exceeds it in every
-- run. Returns the last report and the list of worst gaps seen.
function A.best_of(t, bound_ms, tries)
  local gaps, r = {}, nil
  for _ = 1, tries or 5 do
    r = A.run(t)
    gaps[#gaps + 1] = tonumber(r.max_gap_ms) or math.huge
    if gaps[#gaps] < bound_ms then break end
  end
  return r, gaps
end

--- A one-line summary of a report, for failure messages and the bench.
function A.summary(r)
  return ("result=%s gap=%sms step=%sms (cpu %sms) over50=%s cpu=%ss logs=%s fds %s/%s/%s exit=%s reason=%s"):format(
    tostring(r.result), tostring(r.max_gap_ms), tostring(r.max_step_ms), tostring(r.max_step_cpu_ms),
    tostring(r.gaps_over_50ms),
    tostring(r.cpu_upgrade_s), tostring(r.logs), tostring(r.fd_base), tostring(r.fd_after), tostring(r.fd_end),
    tostring(r.exit),
    tostring(r.reason))
end

return A
