--- Zero-downtime upgrades: a serving process starts a new copy of itself,
-- hands it its listeners, its state and then its live connections over a
-- channel, and leaves; any failure before the commit rolls back.
--
-- The same script runs in both roles. `up:inherit()` first thing: started
-- by an upgrade, it takes the handover up to the commit and returns what
-- was inherited. The serving process then polls the upgrader from its own
-- loop: everything the upgrade watches (control socket, signals, the new
-- copy's channel, stderr and exit, the connections arriving from the old
-- process) sits behind ONE descriptor, `up:pollfd()`, the same from
-- `new()` to `close()`; `up:step()` never blocks and returns events.
-- docs/UPGRADE.md has the protocol, the events and their order.
-- @module fdpass.upgrade
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local loop = require "fdpass.loop"
local systemd = require "fdpass.systemd"
local P = require "fdpass.upgrade.protocol"
local poller = require "fdpass.upgrade.poller"
local control = require "fdpass.upgrade.control"
local oldside = require "fdpass.upgrade.oldside"
local newcopy = require "fdpass.upgrade.newcopy"
local handover = require "fdpass.upgrade.handover"
local options = require "fdpass.upgrade.options"
local notify = require "fdpass.upgrade.notify"

local M = { PROTOCOL_VERSIONS = P.VERSIONS, request = control.request, protocol = P }

local now = fos.monotonic

local Upgrader = {}
Upgrader.__index = Upgrader

--- Creates the upgrader of this process.
-- @tparam[opt] table opts (unknown keys raise)
--   `argv` how to start a new copy (default: this interpreter, script and
--   arguments); `pidfile` written atomically by whichever copy serves;
--   `lockfile` (default `pidfile .. ".lock"`): one upgrade at a time across
--   processes; `control` an address ("@name" or a path) or a listening
--   AF_UNIX socket: the control socket, served from step() and inherited by
--   every new copy; `signal` a name ("HUP") or list of names that trigger an
--   upgrade; `stats` a function returning the table of the "stats" command;
--   `timeouts` (seconds: hello, handover, ready, commit, kill); `max_state`
--   (bytes, 64 MiB) and `max_fds` (100000) that a new copy accepts; `log` a
--   function(line); `rendezvous = true` to meet the new copy on an abstract
--   socket (pid, uid and a random token checked) instead of descriptor 3;
--   `systemd` (default true: notify when NOTIFY_SOCKET is set; false: never;
--   `{fdstore = true}`: also put every listener in the descriptor store).
-- @return the upgrader, or `nil, msg, code` (no descriptor to spare)
function M.new(opts)
  opts = options.check(opts, 3)
  -- Everything that can raise comes before the first descriptor.
  local argv = opts.argv or M.default_argv()
  local signals = type(opts.signal) == "table" and opts.signal or { opts.signal }
  -- What the world can refuse (at RLIMIT_NOFILE, say) comes next, and
  -- nothing is left open (nor a signal blocked) when it does.
  local a, b, code = fdpass.socketpair() -- our uid as the kernel reports it to a peer
  if not a then return nil, "upgrade.new: " .. tostring(b), code end
  local uid = select(2, a:peercred())
  a:close(); b:close()
  local poll, perr, pcode = poller.new()
  if not poll then return nil, "upgrade.new: " .. tostring(perr), pcode end
  local sigfd, newly
  if opts.signal then
    local ok, s1, s2, s3 = pcall(fos.signals, signals) -- a bad name raises
    if not ok then poll:close(); error(s1, 2) end
    if not s1 then poll:close(); return nil, "upgrade.new: " .. tostring(s2), s3 end
    sigfd, newly = s1, s2
    local wok, werr = pcall(poll.watch, poll, "signal", sigfd, "r")
    if not wok then
      sigfd:close(); fos.unblock(newly); poll:close()
      return nil, "upgrade.new: " .. tostring(werr)
    end
  end
  local self = setmetatable({ _uid = uid, _signals = sigfd, _sig_newly = newly }, Upgrader)
  self.argv = argv
  self.pidfile = opts.pidfile
  self.lockfile = opts.lockfile or (opts.pidfile and opts.pidfile .. ".lock")
  self.rendezvous = opts.rendezvous
  self.timeouts = {}
  for k, v in pairs(options.TIMEOUTS) do self.timeouts[k] = (opts.timeouts or {})[k] or v end
  self.max_state = opts.max_state or 64 * 1024 * 1024
  self.max_fds = opts.max_fds or 100000
  self.log = opts.log or function() end
  --- The generation of this copy: 1 on a fresh start, one more per upgrade
  -- (the new copy's is its old process's + 1). Read-only.
  self.generation = tonumber(os.getenv(P.ENV_GEN) or "") or 1
  self._poll = poll
  self._listeners = {}
  self._state_fn = function() return nil end
  self._queue = { first = 1, last = 0, names = {}, values = {} }
  self._systemd = opts.systemd ~= false and (type(opts.systemd) == "table" and opts.systemd or {})
  self._control_opt, self._stats = opts.control, opts.stats
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

-- ---- setting up -------------------------------------------------------------------

--- Offers a descriptor (anything fdpass sends) to every new copy under `name`.
-- Names need not be unique. The object stays the caller's.
function Upgrader:listener(name, obj)
  if type(name) ~= "string" then
    error("bad argument #1 to 'listener' (string expected, got " .. type(name) .. ")", 2)
  end
  local ok, info, err = pcall(fdpass.info, obj) -- raises now, not in the middle of an upgrade
  if not ok or not info then error(("listener '%s': %s"):format(name, tostring(ok and err or info)), 2) end
  self._listeners[#self._listeners + 1] = { name = name, obj = obj }
  if self._systemd and self._systemd.fdstore then self:_sd("fdstore", name, obj) end
end

--- Sets the function that returns the state handed to a new copy (any
-- value fdpass.codec encodes). Called at the handover and again by finish().
function Upgrader:state(fn)
  if type(fn) ~= "function" then error("bad argument #1 to 'state' (function expected, got " .. type(fn) .. ")", 2) end
  self._state_fn = fn
end

--- Call first thing, in every copy. On a fresh start it writes the pid
-- file and returns nil. Started by an upgrade, it takes the handover up to
-- the commit and returns `{ listeners = { name = { fd, ... } }, state =,
-- unclaimed = { names }, generation = }`; the `inherit(inherited)` hook
-- runs before READY and returns true, or `nil, reason` to refuse. If the
-- handover fails this process exits 1 with the reason on stderr. Either
-- way the control socket (option `control`) is served from here on.
-- Returns `nil, msg, code` (a fresh start returns a lone nil) when the
-- control socket cannot be made (its address in use, say): nothing of it
-- is left open; the upgrader still is, for `close()`.
function Upgrader:inherit(hooks)
  if hooks ~= nil and type(hooks) ~= "table" then
    error("bad argument #1 to 'inherit' (table expected, got " .. type(hooks) .. ")", 2)
  end
  for k in pairs(hooks or {}) do
    if k ~= "inherit" then error(("inherit: unknown hook '%s'"):format(tostring(k)), 2) end
  end
  if self._inherit_done then error("inherit: called twice", 2) end
  self._inherit_done = true
  local inherited = newcopy.inherit(self, hooks or {})
  self._inherited = inherited
  if self._from_old then
    self._from_old:limits { max_payload = self.max_state, max_fds = self.max_fds }
    self._poll:watch("incoming", self._from_old, "r")
  elseif inherited then
    self:_push("done") -- taken over after READY: nothing more comes
  end
  local ok, err, code = self:_serve_control()
  if not ok then return nil, err, code end
  if inherited then self:_sd("ready") end
  return inherited
end

--- The inherited listener `name` (removed from what is inherited), or a
-- new one from `create()`; either way offered to every new copy.
function Upgrader:listen(name, create)
  local got = self._inherited and self._inherited.listeners[name]
  local obj = got and table.remove(got, 1)
  if not obj then
    local err, code
    obj, err, code = create()
    if not obj then return nil, err, code end
  end
  self:listener(name, obj)
  return obj
end

function Upgrader:_serve_control()
  local obj = self._control_obj
  local opt = self._control_opt
  if not obj and opt == nil then return true end
  if not obj then
    if type(opt) == "string" then
      local err, code
      obj, err, code = fdpass.listen(opt)
      if not obj then return nil, "upgrade.inherit: control " .. tostring(err), code end
      self._owns_control = true
    else
      obj = opt
    end
  else
    self._owns_control = true
  end
  self._control_obj = obj
  self:listener(P.CONTROL_NAME, obj)
  self._control = assert(control.server(obj, self._poll, {
    log = self.log,
    upgrade = function(ch) return self:_start(ch) end,
    stats = self._stats or function() return {} end,
    generation = function() return self.generation end,
  }))
  return true
end

-- ---- the pollable protocol ----------------------------------------------------------

--- The descriptor to poll for readability (epoll; never changes, closed
-- only by close()). cqueues: `cqueues.poll(up)`; LuaSocket/copas:
-- `up:getfd()`; luv: `up:fileno()`.
function Upgrader:pollfd() return self._poll:fd() end
Upgrader.getfd = Upgrader.pollfd
Upgrader.fileno = Upgrader.pollfd
function Upgrader:events() return "r" end -- luacheck: ignore 212

--- Seconds until step() has something to do without the descriptor
-- becoming readable (a deadline), 0 when an event waits, or nil.
function Upgrader:timeout()
  if self._queue.first <= self._queue.last then return 0 end
  local soon
  local task = self._task
  if task then
    if task.woken then return 0 end
    soon = task.wake
  end
  if self._sd_pending then soon = math.min(soon or math.huge, self._sd_pending.next) end
  if self._control then
    for _, d in pairs(self._control.clients) do
      if not soon or d < soon then soon = d end
    end
  end
  if not soon then return nil end
  return math.max(0, soon - now())
end

-- Events in two columns (names, values): no table per event, which a
-- batch of 10,000 connections would pay 10,000 times.
function Upgrader:_push(name, value)
  local q = self._queue
  local i = q.last + 1
  q.last, q.names[i], q.values[i] = i, name, value
end

function Upgrader:_pop()
  local q = self._queue
  local i = q.first
  if i > q.last then return nil end
  local name, value = q.names[i], q.values[i]
  q.names[i], q.values[i] = nil, nil
  q.first = i + 1
  return name, value
end

-- A ready key: whose it is, and its bounded piece of work.
function Upgrader:_dispatch(key)
  local ctl = self._control
  if key == "control" then
    if ctl then ctl:accept() end
  elseif ctl and ctl.clients[key] then
    ctl:request(key)
  elseif key == "signal" then
    local got = false
    for _ = 1, P.STEP.messages do
      if not fos.readsignal(self._signals) then break end
      got = true
    end
    if got then
      local ok, why = self:_start(nil)
      if not ok then self.log("upgrade on signal: " .. tostring(why)) end
    end
  elseif key == "incoming" then
    newcopy.receive(self)
  elseif key == "to_new" then
    handover.flush(self)
  elseif self._task then
    self._task:on_ready(key)
  end
end

--- Does what is ready, a bounded amount of it, and never blocks. Returns
-- the next event or nil: "upgraded", info | "failed", failure (old side);
-- "connection", conn | "state", value | "done" (new copy side).
function Upgrader:step()
  local name, value = self:_pop()
  if name then return name, value end
  local keys = self._poll:ready(P.STEP.events)
  for _, key in ipairs(keys) do self:_dispatch(key) end
  if self._control then self._control:expire() end
  local pending = self._sd_pending
  if pending and now() >= pending.next and pending:retry() then self._sd_pending = nil end
  local task = self._task
  if task and task:due(now()) then self:_resume() end
  return self:_pop()
end

-- ---- the old side ---------------------------------------------------------------------

function Upgrader:_start(requester)
  if self._task then return nil, "an upgrade is already running", "EBUSY" end
  if self._committed then return nil, "already handed over", "EBUSY" end
  local task, err, code = oldside.start(self)
  if not task then return nil, err, code end
  self._task, self._requester = task, requester
  self:_sd("reloading")
  return true
end

function Upgrader:_resume()
  local ok, res = self._task:resume()
  if ok == nil then return end
  local requester = self._requester
  self._task, self._requester = nil, nil
  if ok then
    self._to_new, self._new_proc = res.channel, res.process
    res.channel, res.process = nil, nil
    self._committed = true
    self:_sd("committed", res.pid, self.log)
    self.log(("handed over to %d in %.1f ms (spawn %.1f ms)"):format(res.pid, res.handover * 1e3, res.spawn * 1e3))
    if requester then
      control.reply(requester, { ok = true, old = fos.getpid(), new = res.pid, handover = res.handover,
        spawn = res.spawn })
    end
    if self._control then self._control:stop() end -- the new copy serves it now
    self:_push("upgraded", res)
  else
    self:_sd("ready")
    self.log(res.message) -- the one line, whatever the trigger
    if requester then
      control.reply(requester, { ok = false, phase = res.phase, reason = res.reason, message = res.message,
        pid = res.pid, stderr = res.stderr })
    end
    self:_push("failed", res)
  end
end

--- Starts an upgrade and returns at once: true, or `nil, msg, "EBUSY"`
-- (one is running, or this process has handed over already). Progress
-- and the outcome come from step(): "upgraded", info or "failed", failure.
function Upgrader:upgrade()
  return self:_start(nil)
end

--- Runs an upgrade to its end, blocking (scripts, examples, benchmarks):
-- `pid, info` once committed, `nil, failure` after a rollback, or
-- `nil, msg, "EBUSY"`. Events of the other role that come meanwhile stay
-- queued for step().
function Upgrader:run_upgrade()
  local ok, err, code = self:_start(nil)
  if not ok then return nil, err, code end
  local kept = {}
  while true do
    local ev, x = self:step()
    if ev == "upgraded" or ev == "failed" then
      for _, e in ipairs(kept) do self:_push(e[1], e[2]) end
      if ev == "upgraded" then return x.pid, x end
      return nil, x
    elseif ev then
      kept[#kept + 1] = { ev, x }
    else
      loop.poll({ self:pollfd() }, nil, self:timeout() or 1)
    end
  end
end

--- After "upgraded": hands one live connection to the new copy, at a
-- request boundary (`buffered`: bytes read but not handled). Never waits:
-- what the socket cannot take now stays queued (its descriptor duplicated)
-- and step() sends it on. The caller closes its own copy afterwards.
-- Returns true, or `nil, msg, code` when the new copy is gone.
function Upgrader:handoff(name, conn, buffered, meta)
  if not self._to_new then error("handoff: no committed upgrade", 2) end
  return handover.send(self, { { name = name, conn = conn, buffered = buffered, meta = meta } })
end

--- Hands many live connections over in one message, never waiting.
-- `list` = `{ {name =, conn =, buffered =, meta =}, ... }`.
function Upgrader:handoff_all(list)
  if not self._to_new then error("handoff_all: no committed upgrade", 2) end
  if type(list) ~= "table" then
    error("bad argument #1 to 'handoff_all' (table expected, got " .. type(list) .. ")", 2)
  end
  return handover.send(self, list)
end

--- After the last handoff: sends the final state (`final_state`, or what
-- the state function returns now: what changed while draining), then
-- DONE, and waits at most timeouts.handover for them to leave (this is the
-- old process's last act: it serves nothing any more). True when all left.
-- Then up:close() before exiting (under systemd it sees MAINPID= sent).
function Upgrader:finish(final_state)
  return handover.finish(self, final_state)
end

--- The new copy's process after "upgraded", for whoever waits for it.
function Upgrader:new_process() return self._new_proc end

--- Closes the epoll descriptor and everything the upgrader owns. Only
-- when the app has stopped polling it. Under systemd, the old process
-- calls it before it exits: if MAINPID+READY could not be sent yet (the
-- manager's queue full), it waits until it is, at most 10 s after the commit.
function Upgrader:close()
  if self._sd_pending then self._sd_pending:wait(); self._sd_pending = nil end
  if self._control then self._control:stop() end
  if self._owns_control and self._control_obj then self._control_obj:close() end
  if self._from_old then self._poll:unwatch("incoming"); self._from_old:close(); self._from_old = nil end
  if self._to_new then self._poll:unwatch("to_new"); self._to_new:close(); self._to_new = nil end
  if self._signals then
    self._poll:unwatch("signal"); self._signals:close()
    fos.unblock(self._sig_newly) -- the mask as new() found it
  end
  self._poll:close()
end

-- ---- under systemd: fdpass.upgrade.notify says what happens ----------------

function Upgrader:_sd(what, a, b)
  if not self._systemd then return end
  local ok, err, _, pending = notify[what](a, b)
  if pending then
    self._sd_pending = pending -- the queue is full: step() tries again
  elseif ok == nil then
    self.log("systemd " .. what .. ": " .. tostring(err))
  end
end

--- Socket activation on a fresh start: takes the descriptors systemd
-- passed (`fdpass.systemd.listen_fds(opts)`) and offers each to every new
-- copy under its name. Returns `name -> { fd, ... }`; empty when systemd
-- passed nothing; `nil, msg, code` when the environment is malformed.
function Upgrader:systemd_listeners(opts)
  local list, by_name, code = systemd.listen_fds(opts)
  if not list then return nil, by_name, code end
  for _, e in ipairs(list) do self:listener(e.name, e.fd) end
  return by_name
end

return M
