--- The old side of an upgrade: starts the new copy, hands it the
-- listeners and the state, commits or rolls back. It runs as a coroutine
-- that the upgrader's step() resumes once per step when what it waits for
-- is ready (or its deadline passed); each resume does a bounded amount of
-- work (P.STEP: messages read, strangers turned away) and yields back to
-- the app's loop. The new copy's stderr and exit (a pidfd) are watched the
-- whole time, so that a failure can say how the copy ended and what it said.
-- @module fdpass.upgrade.oldside
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local P = require "fdpass.upgrade.protocol"
local poller = require "fdpass.upgrade.poller"

local now = fos.monotonic
local TAIL = 4096 -- bytes of the copy's stderr kept for the failure
-- What a new copy may send: it only ever sends small messages (HELLO, NAK,
-- READY with the listeners' names, COMMITTED); a bigger one is refused by
-- its header (EMSGSIZE: its payload never read, nothing decoded) and the
-- upgrade rolls back. One step decodes at most STEP_BYTES (plus one
-- message): junk that is costly to decode holds the loop a few ms at most.
local MAX_BEFORE_HELLO, MAX_MESSAGE = 4096, 64 * 1024
local STEP_BYTES = 64 * 1024

local Task = {}
Task.__index = Task

local M = {}

local function random_hex(n)
  local f = assert(io.open("/dev/urandom", "rb"))
  local bytes = f:read(n)
  f:close()
  return (bytes:gsub(".", function(ch) return ("%02x"):format(ch:byte()) end))
end

--- A new upgrade task for upgrader `up` (its private fields: poll, argv,
-- timeouts, listeners, state_fn, generation, log, rendezvous, systemd).
function M.start(up)
  local lock
  if up.lockfile then
    local l, err = fos.flock(up.lockfile)
    if not l then return nil, err, "EBUSY" end
    lock = l
  end
  local task = setmetatable({ up = up, poll = up._poll, lock = lock, tail = "", wake = now(), woken = true,
    phase = "spawn" }, Task)
  task.co = coroutine.create(function() return task:run() end)
  return task
end

-- ---- what step() calls --------------------------------------------------------

--- Called by step() for a ready key of ours; says whether it is ours.
function Task:on_ready(key)
  if key == "task.stderr" then self:read_stderr(); return true end
  if key == "task.exit" then
    -- readable: exited. Out of the set either way, so that a pidfd whose
    -- process someone else reaped cannot make the loop spin.
    if not self:reap() then self.poll:drop("task.exit") end
    self.woken = true
    return true
  end
  if key == "task.ch" or key == "task.rdv" then self.woken = true; return true end
  return false
end

function Task:due(t)
  if self.refused then self.refused.tick() end
  if self.skipped then self.skipped.tick() end
  return self.woken or t >= self.wake
end

--- One resume. Returns nothing while the upgrade runs; then `true, info`
-- or `false, failure` (once).
function Task:resume()
  self.woken = false
  local ok, a, b = coroutine.resume(self.co)
  if not ok and not self.rolling_back then
    -- A raised error (a bug, a bad listener) still rolls back, in a
    -- coroutine of its own: Lua 5.1 cannot yield across pcall.
    self.rolling_back = true
    local err = a
    self.co = coroutine.create(function() return self:rollback("error: " .. tostring(err)) end)
    return self:resume()
  end
  if not ok then a, b = false, P.failure { phase = self.phase, reason = tostring(a), pid = self.pid } end
  if coroutine.status(self.co) ~= "dead" then return end
  if self.skipped then self.skipped.flush() end
  if self.lock then self.lock:close() end
  return a, b
end

-- ---- waiting, from inside the coroutine ---------------------------------------

function Task:wait_for(key, obj, events, deadline)
  if obj then self.poll:watch(key, obj, events) end
  self.wake = deadline
  coroutine.yield()
end

function Task:read_stderr()
  local r = self.poll:watching("task.stderr")
  if not r then return end
  for _ = 1, P.STEP.stderr / 4096 do
    local data, _, code = r:read(4096)
    if not data then
      if code ~= "EAGAIN" then self.poll:drop("task.stderr") end -- EOF: out of the set
      return
    end
    self.tail = (self.tail .. data):sub(-TAIL)
  end
end

-- Reaps the copy if it has exited; the pidfd leaves the set then.
function Task:reap()
  if self.exit or not self.proc then return self.exit end
  local how, code = self.proc:wait(0)
  if how then
    self.exit = { how = how, code = code }
    self.poll:drop("task.exit")
  end
  return self.exit
end

-- Sends without blocking the loop: what the kernel cannot take at once
-- stays queued in the channel and is flushed as it becomes writable.
function Task:send(msg, fds, deadline)
  local ch = self.ch
  local data = type(msg) == "table" and P.encode(msg) or msg
  local ok, err, code = ch:send(data, fds, 0)
  while not ok and code == "EAGAIN" do
    if now() >= deadline then return nil, "send: timed out", "ETIMEDOUT" end
    self:wait_for("task.ch", ch, "w", deadline)
    ok, err, code = ch:flush(0)
  end
  return ok, err, code
end

-- The next message of one of the `want` types before `deadline`. Other
-- types are skipped (old and new copies are different versions of a
-- program); every descriptor the copy sends is closed at once (none is
-- wanted from it); after P.STEP.messages messages the loop gets a turn.
function Task:expect(want, deadline)
  local ch, n, bytes = self.ch, 0, 0
  while true do
    if now() >= deadline then return nil, "timed out waiting for " .. table.concat(want, " or ") end
    local data, fds, code = ch:recv(0)
    if data then
      P.close_all(fds)
      local msg, err = P.decode(data)
      if not msg then return nil, err end
      for _, t in ipairs(want) do
        if msg.t == t then return msg end
      end
      self.skipped = self.skipped or poller.counted(self.up.log, "upgrade: ignored %s unexpected messages")
      self.skipped.bump()
      n, bytes = n + 1, bytes + #data
      if n >= P.STEP.messages or bytes >= STEP_BYTES then
        n, bytes = 0, 0
        self:wait_for("task.ch", ch, "r", deadline)
      end
    elseif code == "EAGAIN" then
      self:wait_for("task.ch", ch, "r", deadline)
    else
      return nil, fds, code -- fds is the error message here
    end
  end
end

-- ---- the run ----------------------------------------------------------------------

function Task:fail(reason, code)
  return self:rollback(code and ("%s (%s)"):format(reason, code) or reason)
end

-- Meets the copy we started on a rendezvous socket: the first connection
-- from its pid and our uid (SO_PEERCRED: the abstract name is open to
-- everyone) becomes the channel; anyone else is closed at once and
-- counted. At most P.STEP.accepts connections per step.
function Task:meet(rdv, deadline)
  local want_pid, want_uid = self.pid, self.up._uid
  local refused = poller.counted(self.up.log, "rendezvous: refused %s strangers")
  self.refused = refused
  while now() < deadline do
    local n = 0
    for _ = 1, P.STEP.accepts do
      local ch = rdv:accept(0)
      if not ch then break end
      local pid, uid = ch:peercred()
      if pid == want_pid and uid == want_uid then
        refused.flush()
        return ch
      end
      ch:close()
      refused.bump()
      n = n + 1
    end
    if n < P.STEP.accepts then
      self:wait_for("task.rdv", rdv, "r", deadline)
    else
      -- A full batch of strangers: more are queued. Turning them away as
      -- fast as they come would give them the serving process's CPU (and
      -- the scheduler's latency with it): the next batch after a pause.
      self.poll:unwatch("task.rdv")
      self:wait_for(nil, nil, nil, math.min(deadline, now() + P.STEP.stranger_pause))
    end
  end
  refused.flush()
  return nil, "timed out waiting for the new copy on the rendezvous socket" ..
    (refused.count() > 0 and (" (%d wrong peers turned away)"):format(refused.count()) or "")
end

function Task:spawn()
  local up = self.up
  local r, w, perr = fos.pipe()
  if not r then return nil, w, perr end -- at RLIMIT_NOFILE, say
  r:nonblock(true) -- our own new pipe end: read as far as it goes
  self.poll:watch("task.stderr", r, "r")
  local env = { [P.ENV_GEN] = tostring(up.generation + 1) }
  -- Once MAINPID= names the new copy, systemd's watchdog waits for its
  -- pings: our WATCHDOG_PID must not tell it they are not its to send.
  if up._systemd and tonumber(os.getenv("WATCHDOG_PID") or "") == fos.getpid() then env.WATCHDOG_PID = false end
  local fds = { [2] = w }
  local theirs, rdv
  if up.rendezvous then
    self.token = random_hex(16)
    -- The name is world-readable (/proc/net/unix): a random part of its
    -- own, nothing of the token.
    local lerr, lcode
    -- A short backlog: strangers queued ahead of the copy are turned away
    -- a batch per pause, so fewer of them means a shorter wait for it.
    rdv, lerr, lcode = fdpass.listen(("@fdpass-upgrade-%d-%s"):format(fos.getpid(), random_hex(6)), { backlog = 64 })
    if not rdv then w:close(); return nil, lerr, lcode end
    self.rdv = rdv
    env[P.ENV_ADDR], env[P.ENV_TOKEN] = rdv:address(), self.token
  else
    local scode
    self.ch, theirs, scode = fdpass.socketpair()
    if not self.ch then w:close(); return nil, theirs, scode end
    env[P.ENV_FD], fds[3] = "3", theirs
  end
  local proc, err, code = fdpass.spawn(up.argv, { fds = fds, setenv = env })
  if theirs then theirs:close() end
  w:close()
  if not proc then return nil, err, code end
  self.proc, self.pid = proc, proc:pid()
  local pidfd = fos.pidfd_open(self.pid)
  if pidfd then self.poll:watch("task.exit", pidfd, "r") end
  return true
end

function Task:run()
  local up, t = self.up, self.up.timeouts
  local started = now()
  local ok, err, code = self:spawn()
  if not ok then return self:fail(err, code) end

  self.phase = "hello"
  local hello
  if self.rdv then
    local ch, merr = self:meet(self.rdv, started + t.hello)
    self.poll:unwatch("task.rdv")
    self.rdv:close()
    self.rdv = nil
    if not ch then return self:fail(merr) end
    self.ch = ch
  end
  self.ch:limits { max_payload = MAX_BEFORE_HELLO, max_fds = 16 } -- the copy sends little
  local e, c
  hello, e, c = self:expect({ "HELLO" }, started + t.hello)
  if not hello then return self:fail(tostring(e or c)) end
  self.ch:limits { max_payload = MAX_MESSAGE }
  if self.token and hello.token ~= self.token then return self:fail("wrong rendezvous token") end
  local spawned = now()
  local version, verr = P.negotiate(P.VERSIONS, hello.versions)
  if not version then
    self.ch:send(P.encode { t = "REFUSE", reason = verr }, nil, 0)
    return self:fail(verr)
  end
  ok, err, code = self:send({ t = "WELCOME", version = version, generation = up.generation + 1,
    pid = fos.getpid() }, { 2 }, now() + t.handover)
  if not ok then return self:fail(err, code) end

  self.phase = "fds"
  local fdsmsg, objs = P.fds_message(up._listeners)
  ok, err, code = self:send(fdsmsg, objs, now() + t.handover)
  if not ok then return self:fail(err, code) end

  self.phase = "state"
  local sok, state = pcall(up._state_fn)
  if not sok then return self:fail("state function failed: " .. tostring(state)) end
  local eok, encoded = pcall(P.encode, { t = "STATE", state = state })
  if not eok then return self:fail(tostring(encoded)) end
  ok, err, code = self:send(encoded, nil, now() + t.handover)
  if not ok then return self:fail(err, code) end

  self.phase = "ready"
  local ready, re, rc = self:expect({ "READY", "NAK" }, now() + t.ready)
  if not ready then return self:fail(tostring(re or rc)) end
  if ready.t == "NAK" then return self:fail("new copy refused: " .. tostring(ready.reason)) end

  self.phase = "commit"
  ok, err, code = self:send({ t = "COMMIT" }, nil, now() + t.commit)
  if not ok then return self:fail(err, code) end
  local committed, ce, cc = self:expect({ "COMMITTED" }, now() + t.commit)
  if not committed then return self:fail(tostring(ce or cc)) end

  -- Committed: the new copy serves. Its stderr is its own again; its exit
  -- is no longer ours to watch (it outlives us).
  self.poll:drop("task.stderr")
  self.poll:drop("task.exit")
  self.poll:unwatch("task.ch")
  local done = now()
  return true, { pid = self.pid, generation = up.generation + 1, channel = self.ch, process = self.proc,
    spawn = spawned - started, handover = done - spawned, total = done - started }
end

-- Waits (yielding) until the copy has exited or `deadline`; true if it has.
function Task:wait_exit(deadline)
  while not self:reap() do
    if now() >= deadline then return false end
    -- with a pidfd its readiness wakes us; without, look every 10 ms
    local pidfd = self.poll:watching("task.exit")
    self:wait_for(nil, nil, nil, pidfd and deadline or math.min(deadline, now() + 0.01))
  end
  return true
end

-- Stops a new copy that will not take over: ABORT; a copy that closed the
-- channel is given a moment to exit on its own (so that its own exit
-- status is what the failure reports); then TERM, then KILL.
function Task:rollback(reason)
  local kill = self.up.timeouts.kill
  local exited_first = false
  if self.ch then
    self.ch:send(P.encode { t = "ABORT", reason = self.phase .. ": " .. reason }, nil, 0)
    self.poll:unwatch("task.ch")
    self.ch:close()
    self.ch = nil
  end
  if self.rdv then
    self.poll:unwatch("task.rdv")
    self.rdv:close()
    self.rdv = nil
  end
  if self.proc then
    exited_first = self:reap() ~= nil
    if not exited_first and reason:find("peer closed", 1, true) then
      exited_first = self:wait_exit(now() + math.min(kill, 1))
    end
    if not self.exit then
      self.proc:kill("TERM")
      if not self:wait_exit(now() + kill) then
        self.proc:kill("KILL")
        if not self:wait_exit(now() + 5) then -- KILL cannot be refused; a bound all the same
          local how, code = self.proc:wait()
          self.exit = { how = how, code = code }
        end
      end
    end
    self.poll:drop("task.exit")
  end
  -- What the copy wrote before it went: until EOF, a step's worth at a
  -- time, for a moment at most (a grandchild may hold the pipe open).
  local give_up = now() + 0.2
  while self.poll:watching("task.stderr") and now() < give_up do
    self:read_stderr()
    if self.poll:watching("task.stderr") then self:wait_for(nil, nil, nil, math.min(give_up, now() + 0.01)) end
  end
  self.poll:drop("task.stderr")
  return false, P.failure { phase = self.phase, reason = reason, pid = self.pid, exit = self.exit,
    exited = exited_first, stderr = self.tail }
end

return M
