--- The new copy's side: HELLO .. READY .. COMMITTED at startup (blocking:
-- the copy serves nothing yet), then the live connections, the final state
-- and DONE from the old process, read from the upgrader's step() a bounded
-- number of messages at a time. Every descriptor that arrives where none is
-- wanted is closed at once.
-- @module fdpass.upgrade.newcopy
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local loop = require "fdpass.loop"
local P = require "fdpass.upgrade.protocol"

local now = fos.monotonic

local M = {}

local function send(ch, msg, fds, timeout)
  return ch:send(P.encode(msg), fds, timeout)
end

-- The next message of one of the `want` types before `deadline`, blocking.
-- `keep` names the types whose descriptors the caller takes; any other
-- message's descriptors are closed here. Other types are skipped.
local function expect(up, ch, want, deadline, keep)
  while true do
    local left = deadline - now()
    if left <= 0 then return nil, "timed out waiting for " .. table.concat(want, " or ") end
    local data, fds, code = ch:recv(left)
    if not data then
      if code == "ETIMEDOUT" then return nil, "timed out waiting for " .. table.concat(want, " or ") end
      return nil, fds, code -- fds is the error message here
    end
    local msg, err = P.decode(data)
    if not msg then
      P.close_all(fds)
      return nil, err
    end
    local wanted = false
    for _, t in ipairs(want) do wanted = wanted or msg.t == t end
    if not (wanted and keep and keep[msg.t]) then P.close_all(fds); fds = {} end
    if wanted then return msg, fds end
    up.log("ignoring message " .. msg.t)
  end
end

-- Whether process `pid` is gone, a zombie counting as gone: what the
-- pidfd says, or without one (Linux < 5.3) /proc and kill(pid, 0).
local function gone(pid, pidfd, timeout)
  if pidfd then return #loop.poll({ pidfd }, nil, timeout) > 0 end
  local deadline = now() + timeout
  repeat
    local f = io.open(("/proc/%d/stat"):format(pid))
    local stat = f and f:read("*l")
    if f then f:close() end
    if not stat or stat:match("^%d+ %b() Z") or not fos.kill(pid, 0) then return true end
    loop.poll({}, nil, 0.01)
  until now() >= deadline
  return false
end

-- Written to a temporary name, then renamed over the pid file. The name is
-- unguessable (16 random bytes): in a directory others may write to, a
-- link planted at a predictable name would make io.open write through it
-- (to any file we may write); at a fresh name it can only create.
local function write_pidfile(path)
  if not path then return true end
  local rnd = assert(io.open("/dev/urandom", "rb"))
  local bytes = rnd:read(16)
  rnd:close()
  local tmp = ("%s.%s.tmp"):format(path, bytes:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
  local f, err = io.open(tmp, "w")
  if not f then return nil, err end
  f:write(fos.getpid(), "\n")
  f:close()
  return os.rename(tmp, path)
end
M.write_pidfile = write_pidfile

-- The handshake; returns what was inherited, or nil and why.
local function take_over(up, where, hooks)
  local t = up.timeouts
  local function deadline(s) return now() + s end
  local ch, old_pidfd
  local ok, res, why = pcall(function()
    if type(where) == "number" then -- inherited: nobody else can reach it
      ch = fdpass.channel(where)
    else -- a rendezvous socket: the old side checks our pid, uid and token
      local err
      ch, err = fdpass.connect(where, t.handover)
      if not ch then return nil, err end
    end
    ch:limits { max_payload = up.max_state, max_fds = up.max_fds }
    -- The old process as the kernel knows it (whoever made the socket pair,
    -- or accepted us): its pidfd decides a takeover after READY.
    local old_pid = ch:peercred()
    assert(send(ch, { t = "HELLO", versions = P.VERSIONS, pid = fos.getpid(), token = os.getenv(P.ENV_TOKEN) }))
    local welcome, wfds, err = expect(up, ch, { "WELCOME", "REFUSE" }, deadline(t.handover), { WELCOME = true })
    if not welcome then return nil, "no WELCOME: " .. tostring(wfds or err) end
    if welcome.t == "REFUSE" then return nil, "refused: " .. tostring(welcome.reason) end
    local stderr = wfds[1]
    for i = 2, #wfds do wfds[i]:close() end
    if old_pid then old_pidfd = fos.pidfd_open(old_pid) end

    local fdsmsg, fds, e2 = expect(up, ch, { "FDS" }, deadline(t.handover), { FDS = true })
    if not fdsmsg then
      if stderr then stderr:close() end
      return nil, "no descriptors: " .. tostring(fds or e2)
    end
    local listeners, claimed, unclaimed = P.claim(fdsmsg, fds)
    local control = listeners[P.CONTROL_NAME]
    listeners[P.CONTROL_NAME] = nil
    if control then
      for i = 2, #control do control[i]:close() end
      up._control_obj = control[1]
    end
    local inherited = { listeners = listeners, unclaimed = unclaimed, generation = welcome.generation }

    local statemsg, e3, c3 = expect(up, ch, { "STATE" }, deadline(t.handover))
    if not statemsg then return nil, "no state: " .. tostring(e3 or c3) end
    inherited.state = statemsg.state

    local hook_ok, accepted, reason = true, true, nil
    if hooks.inherit then hook_ok, accepted, reason = pcall(hooks.inherit, inherited) end
    if not hook_ok or not accepted then
      local nak = hook_ok and (reason or "inherit hook refused") or ("inherit hook failed: " .. tostring(accepted))
      send(ch, { t = "NAK", reason = nak }, nil, 1)
      return nil, nak
    end
    assert(send(ch, { t = "READY", claimed = claimed, unclaimed = unclaimed }))

    local commit, e4, c4 = expect(up, ch, { "COMMIT", "ABORT" }, deadline(t.commit))
    if not commit then
      -- The channel closed after READY: this copy holds every listener and
      -- the state, so it serves if the old process is gone (its live
      -- connections died with it). The kernel decides: the channel closes
      -- as the old process exits, a moment before it is a zombie, so its
      -- pidfd is given timeouts.kill to become readable.
      if (c4 ~= "EOF" and c4 ~= "ETRUNC") or not old_pid or not gone(old_pid, old_pidfd, t.kill) then
        return nil, "no COMMIT: " .. tostring(e4 or c4) .. (c4 == "EOF" and " (the old process is still there)" or "")
      end
      up.log("old process gone after READY: taking over")
    elseif commit.t == "ABORT" then
      return nil, "old process aborted: " .. tostring(commit.reason)
    end
    -- Our stderr goes back to the old process's own before COMMITTED: once
    -- the old side hears it, it closes the pipe it read our stderr from.
    if stderr then
      fos.dup2(stderr, 2)
      stderr:close()
    end
    if commit then send(ch, { t = "COMMITTED", pid = fos.getpid() }, nil, t.commit) end
    assert(write_pidfile(up.pidfile))
    inherited.committed = commit ~= nil
    return inherited
  end)
  if old_pidfd then old_pidfd:close() end
  if not ok or not res then
    if ch then ch:close() end
    return nil, ok and why or res
  end
  if res.committed then
    up._from_old = ch
  else
    ch:close()
  end
  res.committed = nil
  return res
end

--- Called by up:inherit(): nil on a fresh start (the pid file written);
-- what was inherited when an upgrade started this process; exits 1 with
-- the reason on stderr when the handover fails.
function M.inherit(up, hooks)
  local fdnum = tonumber(os.getenv(P.ENV_FD) or "")
  local addr = os.getenv(P.ENV_ADDR)
  if not fdnum and not addr then
    assert(write_pidfile(up.pidfile))
    return nil
  end
  local inherited, why = take_over(up, fdnum or addr, hooks)
  if not inherited then
    io.stderr:write(("fdpass.upgrade: new copy %d gives up: %s\n"):format(fos.getpid(), tostring(why)))
    os.exit(1, true)
  end
  up.generation = inherited.generation or up.generation
  return inherited
end

-- The channel from the old process is over: out of the set, closed.
local function finish_incoming(up)
  up._poll:drop("incoming")
  up._from_old = nil
  up:_push("done")
end

--- Reads what the old process sent after the commit, at most
-- P.STEP.messages messages or STEP_BYTES (and the message that crosses
-- it), into the upgrader's event queue: "connection" (each), "state" (the
-- final state), "done". The connections of a CONNS thus reach the app
-- before a big final state behind them is decoded.
local STEP_BYTES = 64 * 1024
function M.receive(up)
  local ch, bytes = up._from_old, 0
  for _ = 1, P.STEP.messages do
    if not ch or bytes >= STEP_BYTES then return end
    local data, fds, code = ch:recv(0)
    if not data then
      if code ~= "EAGAIN" then finish_incoming(up) end
      return
    end
    bytes = bytes + #data
    local msg = P.decode(data)
    if msg and (msg.t == "CONN" or msg.t == "CONNS") then
      for _, c in ipairs(P.connections(msg, fds)) do up:_push("connection", c) end
    else
      P.close_all(fds)
      if msg and msg.t == "STATE" then
        up:_push("state", msg.state)
      elseif msg and msg.t == "DONE" then
        return finish_incoming(up)
      end
    end
  end
end

return M
