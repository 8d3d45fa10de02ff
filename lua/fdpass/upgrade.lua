--- Zero-downtime upgrades: a serving process starts a new copy of itself,
-- hands it its listeners, its state and then its live connections over a
-- channel, and leaves; any failure before the commit rolls back.
--
-- The same script runs in both roles. At startup `up:start()` finds out
-- whether an upgrade started this copy: if so it receives, verifies and
-- adopts what the old process offers, and answers READY only once the
-- app's `inherit` hook has succeeded. The serving process calls
-- `up:upgrade()` (or drives `up:begin()` from its own event loop), then
-- hands its connections over one by one at request boundaries with
-- `up:handoff()`, and `up:finish()`es. docs/UPGRADE.md has the protocol.
-- @module fdpass.upgrade
local fdpass = require "fdpass"
local systemd = require "fdpass.systemd"

local PROTOCOL_VERSIONS = { 1 } -- what this side speaks, newest last
local ENV_FD, ENV_GEN = "FDPASS_UPGRADE_FD", "FDPASS_UPGRADE_GENERATION"
local ENV_ADDR, ENV_TOKEN = "FDPASS_UPGRADE_ADDR", "FDPASS_UPGRADE_TOKEN"

local M = { PROTOCOL_VERSIONS = PROTOCOL_VERSIONS }

local DEFAULT_TIMEOUTS = {
  hello = 10,   -- spawn to HELLO: the new copy's interpreter and script start
  handover = 10, -- each message of descriptors and state
  ready = 30,   -- state sent to READY: the app's inherit hook runs here
  commit = 10,  -- COMMIT to COMMITTED, and READY to COMMIT on the new side
  kill = 2,     -- TERM to KILL when a new copy is stopped
}

local Upgrader = {}
Upgrader.__index = Upgrader

-- os.clock is CPU time and os.time whole seconds: deadlines need this.
local now = fdpass.monotonic
local unpack = table.unpack or unpack -- luacheck: read globals table.unpack unpack (5.1 and LuaJIT have the global)

--- Creates the upgrader of this process.
-- @tparam[opt] table opts
--   `argv` how to start a new copy (default: this interpreter, script and
--   arguments); `pidfile` written atomically by whichever copy serves;
--   `lockfile` (default `pidfile .. ".lock"`) so that one upgrade runs at a
--   time across processes; `timeouts` (seconds, see DEFAULT_TIMEOUTS);
--   `max_state` (bytes, 64 MiB) and `max_fds` (100000) that a new copy accepts;
--   `log` a function(message); `rendezvous = true` to meet the new copy on
--   an abstract socket (pid, uid and a random token checked) instead of
--   handing it descriptor 3; `systemd` (default true: notify when
--   NOTIFY_SOCKET is set; false: never; `{fdstore = true}`: also put every
--   listener in systemd's descriptor store), see "under systemd" below.
function M.new(opts)
  opts = opts or {}
  local self = setmetatable({}, Upgrader)
  self.argv = opts.argv or M.default_argv()
  self.pidfile = opts.pidfile
  self.lockfile = opts.lockfile or (opts.pidfile and opts.pidfile .. ".lock")
  self.rendezvous = opts.rendezvous -- meet on an abstract socket instead of fd 3
  self.timeouts = {}
  for k, v in pairs(DEFAULT_TIMEOUTS) do self.timeouts[k] = (opts.timeouts or {})[k] or v end
  self.max_state = opts.max_state or 64 * 1024 * 1024
  self.max_fds = opts.max_fds or 100000
  self.log = opts.log or function() end
  self.listeners = {} -- { {name=, obj=} }: what a new copy inherits
  self.state_fn = function() return nil end
  self.generation = tonumber(os.getenv(ENV_GEN) or "") or 1
  self.systemd = opts.systemd ~= false and (type(opts.systemd) == "table" and opts.systemd or {})
  return self
end

--- The command line that started this script, `arg[-n]` to `arg[#arg]`.
function M.default_argv()
  local argv, i = {}, -1
  while arg and arg[i - 1] do i = i - 1 end
  while arg and arg[i] ~= nil do
    argv[#argv + 1] = arg[i]
    i = i + 1
  end
  assert(#argv > 0, "fdpass.upgrade: cannot tell how this script was started; pass argv")
  return argv
end

--- Offers a descriptor (anything fdpass sends) to every new copy under `name`.
-- Names need not be unique. The object stays the caller's.
function Upgrader:listener(name, obj)
  assert(type(name) == "string", "listener name must be a string")
  fdpass.info(obj) -- raises now, not in the middle of an upgrade, if obj is no descriptor
  self.listeners[#self.listeners + 1] = { name = name, obj = obj }
  if self.systemd and self.systemd.fdstore then self:sd_notify("fdstore", name, obj) end
end

--- Sets the function that returns the state handed to a new copy: any value
-- fdpass.encode takes (a string, a table of strings and numbers, ...).
function Upgrader:state(fn)
  self.state_fn = fn
end

-- ---- messages ---------------------------------------------------------------

local function send(ch, msg, fds, timeout)
  return ch:send(fdpass.encode(msg), fds, timeout)
end

-- Receives the next message of one of the `want` types before `deadline`;
-- messages of other types are logged and skipped: old and new copies are
-- different versions of a program by definition. `wait(ch, deadline)`
-- blocks or yields until the channel is readable.
local function expect(self, ch, want, deadline, wait)
  while true do
    local left = deadline - now()
    if left <= 0 then return nil, "timed out waiting for " .. table.concat(want, " or ") end
    local data, fds, code = ch:recv(0)
    if data then
      local msg, err = fdpass.decode(data)
      if type(msg) ~= "table" or type(msg.t) ~= "string" then
        for _, f in ipairs(fds) do f:close() end
        return nil, "undecodable message: " .. tostring(err or "not a table")
      end
      for _, t in ipairs(want) do
        if msg.t == t then return msg, fds end
      end
      for _, f in ipairs(fds) do f:close() end
      self.log("ignoring message " .. msg.t)
    elseif code == "EAGAIN" then
      wait(ch, deadline)
    else
      return nil, fds, code -- fds is the error message here
    end
  end
end

-- Blocking wait for a plain script; a driven upgrade yields instead.
local function block_until_readable(ch, deadline, extra)
  local readers = { ch }
  if extra then readers[2] = extra end
  local left = deadline - now()
  if left > 0 then fdpass.poll(readers, nil, left) end
end

local function identity(obj)
  local info = assert(fdpass.info(obj))
  return {
    kind = info.kind, family = info.family, socktype = info.socktype,
    listening = info.listening, addr = info.addr,
  }
end

local function same_identity(got, want)
  if type(want) ~= "table" then return false end
  for _, k in ipairs { "kind", "family", "socktype", "listening", "addr" } do
    if got[k] ~= want[k] then return false, k end
  end
  return true
end

local function write_pidfile(path)
  if not path then return true end
  local tmp = ("%s.%d.tmp"):format(path, fdpass.getpid())
  local f, err = io.open(tmp, "w")
  if not f then return nil, err end
  f:write(fdpass.getpid(), "\n")
  f:close()
  return os.rename(tmp, path)
end

-- ---- the new copy -------------------------------------------------------------

--- Call first thing, in every copy. On a fresh start (no upgrade started
-- this process) it writes the pid file and returns nil. Started by an
-- upgrade, it takes the handover up to the commit and returns what was
-- inherited: `{ listeners = { name = { fd, ... } }, state = value,
-- unclaimed = { names }, generation = n }`. The app's
-- `inherit(inherited)` hook runs before READY: it returns true, or
-- `nil, reason` to refuse (NAK), after which this process exits 1.
-- If the old process rolls back, this process exits 1 with the reason on
-- stderr. Live connections arrive afterwards through `up:receive()`.
-- @tparam[opt] table hooks `{ inherit = function(inherited) ... end }`
function Upgrader:start(hooks)
  hooks = hooks or {}
  local fdnum = tonumber(os.getenv(ENV_FD) or "")
  local addr = os.getenv(ENV_ADDR)
  if not fdnum and not addr then
    assert(write_pidfile(self.pidfile))
    return nil
  end
  local ok, inherited_or_err, why = pcall(self.take_over, self, fdnum or addr, hooks)
  if not ok or not inherited_or_err then
    io.stderr:write(("fdpass.upgrade: new copy %d gives up: %s\n")
      :format(fdpass.getpid(), tostring(ok and why or inherited_or_err)))
    os.exit(1, true)
  end
  self:sd_notify("ready")
  return inherited_or_err
end

function Upgrader:take_over(where, hooks)
  local t, wait = self.timeouts, block_until_readable
  local function deadline(s) return now() + s end
  local ch
  if type(where) == "number" then -- inherited: nobody else can reach it
    ch = fdpass.channel(where)
  else -- a rendezvous socket: the old side checks our pid, uid and token
    local err
    ch, err = fdpass.connect(where, t.handover)
    if not ch then return nil, err end
  end
  ch:limits { max_payload = self.max_state, max_fds = self.max_fds }

  assert(send(ch, { t = "HELLO", versions = PROTOCOL_VERSIONS, pid = fdpass.getpid(),
    token = os.getenv(ENV_TOKEN) }))
  local welcome, wfds, err = expect(self, ch, { "WELCOME", "REFUSE" }, deadline(t.handover), wait)
  if not welcome then return nil, "no WELCOME: " .. tostring(wfds or err) end
  if welcome.t == "REFUSE" then return nil, "refused: " .. tostring(welcome.reason) end
  local stderr = wfds[1]
  local old_pid = welcome.pid

  local fdsmsg, fds, e2 = expect(self, ch, { "FDS" }, deadline(t.handover), wait)
  if not fdsmsg then return nil, "no descriptors: " .. tostring(fds or e2) end
  local inherited = { listeners = {}, unclaimed = {}, generation = welcome.generation }
  local claimed = {}
  for i, fd in ipairs(fds) do
    local name = type(fdsmsg.names) == "table" and fdsmsg.names[i]
    local want = type(fdsmsg.ids) == "table" and fdsmsg.ids[i]
    local info = fd:info()
    if type(name) == "string" and info and same_identity(info, want) then
      inherited.listeners[name] = inherited.listeners[name] or {}
      table.insert(inherited.listeners[name], fd)
      claimed[#claimed + 1] = name
    else
      fd:close() -- not what it claims to be: never trusted, never leaked
      inherited.unclaimed[#inherited.unclaimed + 1] = tostring(name)
    end
  end

  local statemsg, e3, c3 = expect(self, ch, { "STATE" }, deadline(t.handover), wait)
  if not statemsg then return nil, "no state: " .. tostring(e3 or c3) end
  inherited.state = statemsg.state

  local hook_ok, accepted, reason = true, true, nil
  if hooks.inherit then hook_ok, accepted, reason = pcall(hooks.inherit, inherited) end
  if not hook_ok or not accepted then
    local why = hook_ok and (reason or "inherit hook refused") or ("inherit hook failed: " .. tostring(accepted))
    send(ch, { t = "NAK", reason = why }, nil, 1)
    return nil, why
  end
  assert(send(ch, { t = "READY", claimed = claimed, unclaimed = inherited.unclaimed }))

  local commit, e4, c4 = expect(self, ch, { "COMMIT", "ABORT" }, deadline(t.commit), wait)
  if not commit then
    -- The old process went away after READY: this copy holds every
    -- listener and the state, so it serves (its live connections died with
    -- it). Anything else (an abort, a timeout with the old one alive) stops.
    local old_alive = old_pid and fdpass.kill(old_pid, 0)
    if c4 ~= "EOF" or old_alive then return nil, "no COMMIT: " .. tostring(e4 or c4) end
    self.log("old process gone after READY: taking over")
  elseif commit.t == "ABORT" then
    return nil, "old process aborted: " .. tostring(commit.reason)
  end
  -- Our stderr goes back to the old process's own before COMMITTED: once
  -- the old side hears it, it closes the pipe it read our stderr from.
  if stderr then
    fdpass.dup2(stderr, 2)
    stderr:close()
  end
  if commit then send(ch, { t = "COMMITTED", pid = fdpass.getpid() }, nil, t.commit) end
  assert(write_pidfile(self.pidfile))
  self.from_old = commit and ch or nil
  if not commit then ch:close() end
  self.generation = inherited.generation or self.generation
  return inherited
end

--- The channel on which live connections arrive after a takeover (poll it
-- for readability), or nil once DONE came or on a fresh start.
function Upgrader:incoming()
  return self.from_old
end

--- The next live connection from the old process: a table of `name`,
-- `fd`, `buffered` (bytes it had read but not handled) and `meta`, or "done"
-- when no more will come; `nil, msg, "EAGAIN"` when none is there yet.
function Upgrader:receive(timeout)
  local queued = self.queued_conns
  if queued and queued.next <= #queued then
    local got = queued[queued.next]
    queued[queued.next] = false
    queued.next = queued.next + 1
    return got
  end
  local ch = self.from_old
  if not ch then return "done" end
  local data, fds, code = ch:recv(timeout or 0)
  if not data then
    if code == "EAGAIN" or code == "ETIMEDOUT" then return nil, fds, code end
    ch:close()
    self.from_old = nil
    return "done" -- the old process is gone: nothing more can come
  end
  local msg = fdpass.decode(data)
  if type(msg) == "table" and msg.t == "CONN" and fds[1] then
    for i = 2, #fds do fds[i]:close() end
    return { name = msg.name, fd = fds[1], buffered = msg.buffered or "", meta = msg.meta }
  end
  if type(msg) == "table" and msg.t == "CONNS" and type(msg.conns) == "table" then
    -- A batch: one entry per descriptor, in order; a descriptor without an
    -- entry (or the reverse) is closed, never adopted blind.
    local list = { next = 1 }
    for i, fd in ipairs(fds) do
      local e = msg.conns[i]
      if type(e) == "table" then
        list[#list + 1] = { name = e.name, fd = fd, buffered = e.buffered or "", meta = e.meta }
      else
        fd:close()
      end
    end
    self.queued_conns = list
    return self:receive(0)
  end
  for _, f in ipairs(fds) do f:close() end
  if type(msg) == "table" and msg.t == "DONE" then
    ch:close()
    self.from_old = nil
    return "done"
  end
  return self:receive(0) -- unknown message: skipped
end

-- ---- the serving process ---------------------------------------------------

local Task = {}
Task.__index = Task

--- Starts an upgrade without waiting: returns a task for the caller's event
-- loop: poll `readers, writers = task:pollfds()` until `task:deadline()`, then
-- call `task:step()`, which returns nothing while the upgrade runs, then
-- `true, pid, timings` or `false, phase, reason, stderr_tail`.
-- Returns `nil, "busy", reason` if an upgrade is already running.
function Upgrader:begin()
  if self.running then return nil, "busy", "an upgrade is already running" end
  local lock
  if self.lockfile then
    local l, err = fdpass.flock(self.lockfile)
    if not l then return nil, "busy", err end
    lock = l
  end
  self.running = true
  self:sd_notify("reloading")
  local task = setmetatable({ up = self, lock = lock, waiting = {}, waiting_out = {}, wake = math.huge,
    tail = "" }, Task)
  task.co = coroutine.create(function() return task:run() end)
  return task
end

function Task:pollfds() return self.waiting, self.waiting_out end
function Task:deadline() return self.wake end

function Task:step()
  if self.result then return unpack(self.result, 1, 4) end
  local ok, a, b, c, d = coroutine.resume(self.co)
  if not ok and not self.rolling_back then
    -- A raised error (a bug, a bad argument) still rolls back, in a
    -- coroutine of its own: the run is not wrapped in pcall, because
    -- Lua 5.1 cannot yield across one.
    self.rolling_back = true
    local err = a
    self.co = coroutine.create(function()
      return self:rollback(self.phase or "spawn", "error: " .. tostring(err))
    end)
    return self:step()
  end
  if not ok then a, b, c, d = false, self.phase or "internal", tostring(a), self.tail end
  if coroutine.status(self.co) == "dead" then
    self.result = { a, b, c, d }
    self.up.running = false
    if a then self.up:sd_notify("committed", b) else self.up:sd_notify("ready") end
    if self.lock then self.lock:close() end
    return a, b, c, d
  end
end

-- Waits for the channel (and the copy's stderr) from inside the coroutine.
function Task:wait(ch, deadline)
  self.waiting = { ch, self.stderr_r }
  self.wake = deadline
  coroutine.yield()
  self:read_stderr()
end

-- Sends without blocking the serving loop: what the kernel cannot take at
-- once stays queued in the channel (descriptors included) and is flushed
-- as the channel becomes writable, until the deadline. A table is encoded.
function Task:send(ch, msg, fds, deadline)
  local data = type(msg) == "table" and fdpass.encode(msg) or msg
  local ok, err, code = ch:send(data, fds, 0)
  while not ok and code == "EAGAIN" do
    if now() >= deadline then return nil, "send: timed out", "ETIMEDOUT" end
    self.waiting, self.waiting_out, self.wake = { self.stderr_r }, { ch }, deadline
    coroutine.yield()
    self.waiting_out = {}
    self:read_stderr()
    ok, err, code = ch:flush(0)
  end
  return ok, err, code
end

function Task:sleep(seconds)
  self.waiting = { self.stderr_r }
  self.wake = now() + seconds
  coroutine.yield()
  self:read_stderr()
end

function Task:read_stderr()
  if not self.stderr_r then return end
  while true do
    local data = self.stderr_r:read(4096)
    if not data then return end
    self.tail = (self.tail .. data):sub(-4096)
  end
end

-- Stops a new copy that will not take over: ABORT, then TERM, then KILL.
function Task:rollback(phase, reason)
  local up = self.up
  if self.ch then
    send(self.ch, { t = "ABORT", reason = phase .. ": " .. reason }, nil, 0)
    self.ch:close()
  end
  if self.proc then
    -- TERM, then KILL; the serving loop keeps running meanwhile.
    self.proc:kill("TERM")
    local give_up = now() + up.timeouts.kill
    while not self.proc:wait(0) do
      if now() >= give_up then
        self.proc:kill("KILL")
        self.proc:wait()
        break
      end
      self:sleep(0.01)
    end
  end
  self:read_stderr()
  if self.stderr_r then self.stderr_r:close() end
  up.log(("upgrade rolled back in %s: %s"):format(phase, reason))
  return false, phase, reason, self.tail
end

local function random_token()
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(16)
  f:close()
  return (bytes:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end))
end

local function my_uid()
  local a, b = fdpass.socketpair()
  local _, uid = a:peercred()
  a:close()
  b:close()
  return uid
end

-- Waits on a rendezvous socket for the copy we started: its pid and uid
-- (SO_PEERCRED: an abstract name has no permissions) and the token from
-- its environment must all match. Anyone else is turned away, and the
-- wait goes on. Returns the channel and the HELLO.
function Task:meet(rendezvous, token, deadline)
  local want_pid, want_uid = self.proc:pid(), my_uid()
  while now() < deadline do
    local ch = rendezvous:accept(0)
    if ch then
      local pid, uid = ch:peercred()
      local hello
      if pid == want_pid and uid == want_uid then
        ch:limits { max_payload = 1024 * 1024, max_fds = 16 }
        hello = expect(self.up, ch, { "HELLO" }, math.min(deadline, now() + 1),
          function(c, d) return self:wait(c, d) end)
      end
      if hello and hello.token == token then return ch, hello end
      self.rejected = (self.rejected or 0) + 1
      self.up.log(("rendezvous: turned away pid %s uid %s"):format(tostring(pid), tostring(uid)))
      ch:close()
    else
      self:wait(rendezvous, deadline)
    end
  end
  return nil, nil, "timed out waiting for the new copy on the rendezvous socket" ..
    (self.rejected and (" (" .. self.rejected .. " wrong peers turned away)") or "")
end

function Task:run()
  local up, t = self.up, self.up.timeouts
  local function wait(ch, deadline) return self:wait(ch, deadline) end
  local function fail(reason, code) -- a failed send says why only in its code
    return self:rollback(self.phase, code and ("%s (%s)"):format(reason, code) or reason)
  end

  self.phase = "spawn"
  local started = now()
  local r, w, perr = fdpass.pipe()
  if not r then return fail(w, perr) end -- at RLIMIT_NOFILE, say
  r:nonblock(true) -- our own new pipe end: read as far as it goes
  self.stderr_r = r
  local env = { [ENV_GEN] = tostring(up.generation + 1) }
  -- Once MAINPID= names the new copy, systemd's watchdog waits for its
  -- pings: our WATCHDOG_PID must not tell it they are not its to send.
  if up.systemd and tonumber(os.getenv("WATCHDOG_PID") or "") == fdpass.getpid() then env.WATCHDOG_PID = false end
  local fds = { [2] = w }
  local mine, theirs, rendezvous, token
  if up.rendezvous then
    token = random_token()
    local lerr, lcode
    rendezvous, lerr, lcode = fdpass.listen(("@fdpass-upgrade-%d-%s"):format(fdpass.getpid(), token:sub(1, 12)))
    if not rendezvous then w:close(); return fail(lerr, lcode) end
    env[ENV_ADDR], env[ENV_TOKEN] = rendezvous:address(), token
  else
    local scode
    mine, theirs, scode = fdpass.socketpair()
    if not mine then w:close(); return fail(theirs, scode) end
    env[ENV_FD], fds[3] = "3", theirs
  end
  local proc, err = fdpass.spawn(up.argv, { fds = fds, setenv = env })
  if theirs then theirs:close() end
  w:close()
  self.ch = mine
  if not proc then
    if rendezvous then rendezvous:close() end
    return fail(err)
  end
  self.proc = proc

  self.phase = "hello"
  local hello, e, c
  if rendezvous then
    mine, hello, e = self:meet(rendezvous, token, started + t.hello)
    rendezvous:close()
    self.ch = mine
    if not mine then return fail(e) end
  else
    mine:limits { max_payload = 1024 * 1024, max_fds = 16 } -- the copy sends little
    hello, e, c = expect(up, mine, { "HELLO" }, started + t.hello, wait)
    if not hello then return fail(tostring(e or c)) end
  end
  local spawned = now()
  local version
  for _, ours in ipairs(PROTOCOL_VERSIONS) do
    for _, theirs_v in ipairs(type(hello.versions) == "table" and hello.versions or {}) do
      if ours == theirs_v then version = ours end
    end
  end
  if not version then
    local theirs_list = {}
    for _, v in ipairs(type(hello.versions) == "table" and hello.versions or {}) do
      theirs_list[#theirs_list + 1] = tostring(v)
    end
    local reason = ("no common protocol version (old speaks %s, new speaks %s)")
      :format(table.concat(PROTOCOL_VERSIONS, ","), table.concat(theirs_list, ","))
    send(mine, { t = "REFUSE", reason = reason }, nil, 0)
    return fail(reason)
  end
  local ok, serr, scode = self:send(mine, { t = "WELCOME", version = version,
    generation = up.generation + 1, pid = fdpass.getpid() }, { 2 }, now() + t.handover)
  if not ok then return fail(serr, scode) end

  self.phase = "fds"
  local names, ids, objs = {}, {}, {}
  for i, l in ipairs(up.listeners) do
    names[i], ids[i], objs[i] = l.name, identity(l.obj), l.obj
  end
  ok, serr, scode = self:send(mine, { t = "FDS", names = names, ids = ids }, objs, now() + t.handover)
  if not ok then return fail(serr, scode) end

  self.phase = "state"
  local sok, state = pcall(up.state_fn)
  if not sok then return fail("state function failed: " .. tostring(state)) end
  local eok, encoded = pcall(fdpass.encode, { t = "STATE", state = state })
  if not eok then return fail(tostring(encoded)) end
  ok, serr, scode = self:send(mine, encoded, nil, now() + t.handover)
  if not ok then return fail(serr, scode) end

  self.phase = "ready"
  local ready, re, rc = expect(up, mine, { "READY", "NAK" }, now() + t.ready, wait)
  if not ready then return fail(tostring(re or rc)) end
  if ready.t == "NAK" then return fail("new copy refused: " .. tostring(ready.reason)) end

  self.phase = "commit"
  ok, serr, scode = self:send(mine, { t = "COMMIT" }, nil, now() + t.commit)
  if not ok then return fail(serr, scode) end
  local committed, ce, cc = expect(up, mine, { "COMMITTED" }, now() + t.commit, wait)
  if not committed then return fail(tostring(ce or cc)) end

  -- Committed: the new copy serves. Its stderr is its own again.
  self.stderr_r:close()
  self.stderr_r = nil
  up.to_new, up.new_proc = mine, proc
  local done = now()
  return true, proc:pid(), { spawn = spawned - started, handover = done - spawned, total = done - started }
end

--- Runs an upgrade to the end, blocking: `pid, timings` on success, or
-- `nil, phase, reason, stderr_tail` (the old process still serves).
function Upgrader:upgrade()
  local task, phase, reason = self:begin()
  if not task then return nil, phase, reason end
  while true do
    local ok, a, b, c = task:step()
    if ok ~= nil then
      if ok then return a, b end
      return nil, a, b, c
    end
    local left = task:deadline() - now()
    if left > 0 then
      local readers, writers = task:pollfds()
      fdpass.poll(readers, writers, left)
    end
  end
end

--- After a successful upgrade: hands one live connection to the new copy
-- (at a request boundary: `buffered` = the bytes read but not handled).
-- The caller closes its own copy afterwards.
function Upgrader:handoff(name, conn, buffered, meta, timeout)
  assert(self.to_new, "handoff: no committed upgrade")
  return send(self.to_new, { t = "CONN", name = name, buffered = buffered or "", meta = meta },
    { conn }, timeout or self.timeouts.handover)
end

--- Hands many live connections over in one message, any number (the
-- framing splits it). `list` = `{ {name =, conn =, buffered =, meta =}, ... }`,
-- each at a request boundary. What 10,000 connections need to move in a
-- few milliseconds rather than one message each.
function Upgrader:handoff_all(list, timeout)
  assert(self.to_new, "handoff_all: no committed upgrade")
  local entries, fds = {}, {}
  for i, e in ipairs(list) do
    entries[i] = { name = e.name, buffered = e.buffered or "", meta = e.meta }
    fds[i] = e.conn
  end
  return send(self.to_new, { t = "CONNS", conns = entries }, fds, timeout or self.timeouts.handover)
end

--- After the last handoff: tells the new copy that nothing more comes.
function Upgrader:finish()
  if not self.to_new then return true end
  send(self.to_new, { t = "DONE" }, nil, self.timeouts.handover)
  self.to_new:close()
  self.to_new = nil
  return true
end

--- The new copy's process (after a successful upgrade), for whoever waits.
function Upgrader:new_process()
  return self.new_proc
end

-- ---- the serving side of the triggers: a controller for the app's loop ----

local Controller = {}
Controller.__index = Controller

--- Serves a control socket and runs the upgrades it (or a signal) asks
-- for, from the app's own loop, without ever blocking it.
-- @tparam table opts `listener` (a listening AF_UNIX socket, e.g. from
--   fdpass.listen; offered to every new copy under the name "control" by
--   the app like any listener), `stats` (a function returning a table for
--   the "stats" command), `deadline` (seconds a client may take to send its
--   request: 2), `log`.
-- Each request is checked: the caller's uid must be ours or root
-- (SO_PEERCRED: an abstract name has no permissions). A client that says
-- nothing, or dribbles, holds only its own slot until its deadline.
-- @return controller: `readers, writers, deadline = ctl:pollfds()`, then
--   `ctl:step(readable, writable)` with the sets (object -> true) of what
--   poll found ready; `ctl:upgrade()` starts one (a signal's trigger).
--   `step` returns "committed" once an upgrade succeeded: the app then
--   stops accepting and hands its connections over.
function Upgrader:controller(opts)
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #1 to 'controller' (table expected, got " .. type(opts) .. ")", 2)
  end
  opts = opts or {}
  local uid
  do -- our own uid as the kernel reports it to a peer (SO_PEERCRED)
    local a, b, code = fdpass.socketpair()
    if not a then return nil, "controller: " .. b, code end
    uid = select(2, a:peercred())
    a:close(); b:close()
  end
  return setmetatable({ up = self, listener = opts.listener, stats = opts.stats or function() return {} end,
    limit = opts.deadline or 2, log = opts.log or self.log, uid = uid, clients = {} }, Controller)
end

local function reply(ch, msg)
  ch:send(fdpass.encode(msg), nil, 1)
  ch:close()
end

function Controller:pollfds()
  local readers, writers, wake = {}, {}, math.huge
  if self.listener and not self.committed then readers[1] = self.listener end
  for ch, deadline in pairs(self.clients) do
    readers[#readers + 1] = ch
    wake = math.min(wake, deadline)
  end
  if self.task then
    local tr, tw = self.task:pollfds()
    for _, fd in ipairs(tr) do readers[#readers + 1] = fd end
    for _, fd in ipairs(tw) do writers[#writers + 1] = fd end
    wake = math.min(wake, self.task:deadline())
  end
  return readers, writers, wake
end

--- Starts an upgrade; `requester` (a channel) gets the answer when it ends.
-- Returns false, "busy" or "committed" when none can start.
function Controller:upgrade(requester)
  local refuse
  if self.committed then refuse = "already handed over"
  elseif self.task then refuse = "an upgrade is already running" end
  local task, phase, reason
  if not refuse then
    task, phase, reason = self.up:begin()
    if not task then refuse = reason end
  end
  if refuse then
    if requester then reply(requester, { ok = false, phase = phase or "control", reason = refuse }) end
    return false, refuse
  end
  self.task, self.requester = task, requester
  return self:step_task()
end

function Controller:step_task()
  local ok, a, b, c = self.task:step()
  if ok == nil then return true end
  self.task = nil
  local requester = self.requester
  self.requester = nil
  if ok then
    self.log(("handed over to %d in %.1f ms (spawn %.1f ms)"):format(a, b.handover * 1e3, b.spawn * 1e3))
    if requester then
      reply(requester, { ok = true, old = fdpass.getpid(), new = a, handover = b.handover, spawn = b.spawn })
    end
    self.committed = true
    for ch in pairs(self.clients) do ch:close() end
    self.clients = {}
    return "committed"
  end
  self.log(("upgrade failed in %s: %s"):format(a, b))
  if requester then reply(requester, { ok = false, phase = a, reason = b, stderr = c }) end
  return false, b
end

function Controller:accept()
  for _ = 1, 16 do
    local fd = fdpass.accept(self.listener)
    if not fd then return end
    local ch = fdpass.channel(fd)
    ch:limits { max_payload = 4096, max_fds = 1 }
    local _, uid = ch:peercred()
    if uid ~= self.uid and uid ~= 0 then
      reply(ch, { ok = false, phase = "control", reason = "permission denied" })
    else
      self.clients[ch] = now() + self.limit
    end
  end
end

function Controller:request(ch)
  local data, fds, code = ch:recv(0)
  if not data and code == "EAGAIN" then return end -- a partial request stays
  -- No request carries descriptors: one that came is closed now, not
  -- whenever the collector runs.
  if data then fdpass.close_all(fds) end
  self.clients[ch] = nil
  local req = data and fdpass.decode(data)
  if type(req) ~= "table" then
    return reply(ch, { ok = false, phase = "control", reason = "bad request" })
  end
  if req.cmd == "upgrade" then return self:upgrade(ch) end
  if req.cmd == "stats" then
    local ok, t = pcall(self.stats)
    if not ok or type(t) ~= "table" then
      local why = "stats: " .. (ok and "the stats function gave no table" or tostring(t))
      self.log(why)
      return reply(ch, { ok = false, phase = "control", reason = why })
    end
    t.ok, t.pid, t.generation = true, fdpass.getpid(), self.up.generation
    return reply(ch, t)
  end
  reply(ch, { ok = false, phase = "control", reason = "unknown command" })
end

function Controller:step(readable, writable)
  readable, writable = readable or {}, writable or {}
  local result
  if self.listener and not self.committed and readable[self.listener] then self:accept() end
  -- Collect first: a request may commit an upgrade, which closes the
  -- other clients and replaces the table being walked.
  local ready = {}
  for ch in pairs(self.clients) do
    if readable[ch] then ready[#ready + 1] = ch end
  end
  for _, ch in ipairs(ready) do
    if self.clients[ch] and self:request(ch) == "committed" then result = "committed" end
  end
  local t = now()
  for ch, deadline in pairs(self.clients) do
    if t >= deadline then
      self.clients[ch] = nil
      ch:close() -- too slow or silent
    end
  end
  if self.task then
    local due = t >= self.task:deadline()
    local tr, tw = self.task:pollfds()
    for _, fd in ipairs(tr) do due = due or readable[fd] end
    for _, fd in ipairs(tw) do due = due or writable[fd] end
    if due and self:step_task() == "committed" then result = "committed" end
  end
  return result
end

-- ---- under systemd ------------------------------------------------------------
-- With NOTIFY_SOCKET set (and `systemd` not false), an upgrade tells the
-- service manager what happens, so that a unit of Type=notify-reload (or
-- notify) sees it as a reload and then supervises the new copy:
--   old copy, at begin():        RELOADING=1, MONOTONIC_USEC=now
--   old copy, once COMMITTED:    MAINPID=<new pid> and READY=1, one datagram
--   old copy, after a rollback:  READY=1 (the reload is over; it still serves)
--   new copy, when start() took over: READY=1
-- MAINPID and READY go together from the old copy because it is still the
-- main process when it sends them: with the default NotifyAccess=main,
-- systemd accepts only the main process's messages, and reads MAINPID=
-- before READY=1 in one datagram. The new copy's own READY=1 may reach
-- systemd before that datagram does; NotifyAccess=main then drops it with
-- a warning in the journal, harmlessly (NotifyAccess=all accepts it).
-- The old copy sends nothing after the commit (not STOPPING=1: it would
-- stop the service it just handed over). The new copy starts without our
-- WATCHDOG_PID, so that `systemd.watchdog_interval()` is its own there. The new copy is a child of the
-- old one, so it is in the unit's cgroup, which systemd requires of a main
-- pid. Notifications do not block the serving loop (timeout 0, except
-- MAINPID+READY, which may wait up to 1 s for a full queue); one that
-- cannot be sent is logged, and the upgrade goes on.

local NO_WAIT = { timeout = 0 }
local SD = {
  ready = function() return systemd.ready(nil, NO_WAIT) end,
  reloading = function() return systemd.reloading(nil, NO_WAIT) end,
  -- The one that may wait (a second at most, and only if systemd's queue
  -- is full): lost, it would make systemd take the old copy's exit for the
  -- end of the service.
  committed = function(pid) return systemd.mainpid(pid, { ready = true, timeout = 1 }) end,
  fdstore = function(name, obj) return systemd.fdstore(name, obj, NO_WAIT) end,
}

function Upgrader:sd_notify(what, a, b)
  if not self.systemd then return end
  local ok, err = SD[what](a, b)
  if ok == nil then self.log("systemd " .. what .. ": " .. tostring(err)) end
end

--- Socket activation on a fresh start: takes the descriptors systemd
-- passed (`fdpass.systemd.listen_fds(opts)`) and offers each to every new
-- copy under its name (FileDescriptorName= in the .socket unit, or
-- FDNAME= from the descriptor store). Returns `name -> { fd, ... }`, the
-- shape of `inherited.listeners`; empty when systemd passed nothing (or
-- in a copy an upgrade started: its listeners come from the old one);
-- `nil, msg, code` when the environment is malformed.
function Upgrader:systemd_listeners(opts)
  local list, by_name, code = systemd.listen_fds(opts)
  if not list then return nil, by_name, code end
  for _, e in ipairs(list) do self:listener(e.name, e.fd) end
  return by_name
end

-- ---- the control socket's client -----------------------------------------------

--- Asks a server's control socket for `cmd` ("upgrade", "stats") and waits
-- at most `timeout` seconds (default 120) for the answer, a table:
-- `{ok = true, old =, new =, handover =, spawn =}` for an upgrade,
-- `{ok = false, phase =, reason =, stderr =}` for a failure, or
-- `nil, msg, code` when the server could not be asked.
function M.request(addr, cmd, timeout)
  local ch, err, code = fdpass.connect(addr, 5)
  if not ch then return nil, err, code end
  local ok, serr, scode = ch:send(fdpass.encode { cmd = cmd }, nil, 5)
  -- A server that refuses us may answer and close before our request is
  -- in: its answer is still there to read.
  if not ok and scode ~= "EPIPE" then ch:close(); return nil, serr, scode end
  local data, rerr, rcode = ch:recv(timeout or 120)
  ch:close()
  if not data then return nil, rerr, rcode end
  local answer, derr = fdpass.decode(data)
  if type(answer) ~= "table" then return nil, "request: " .. tostring(derr), "EPROTO" end
  return answer
end

return M
