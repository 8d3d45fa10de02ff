--- The control socket: its server, run from the upgrader's step(), and the
-- client (`request`) that bin/fdpass-upgrade uses.
-- A request is one message `{cmd = "upgrade" | "stats"}`; the answer one
-- message, then the server closes the connection. The caller's uid must be
-- ours or root (SO_PEERCRED: an abstract name has no permissions). Each
-- step accepts or refuses at most P.STEP.accepts connections; a client
-- that says nothing, or dribbles, holds its own slot until its deadline;
-- at most MAX_CLIENTS wait at once, and strangers are logged as a count.
-- @module fdpass.upgrade.control
local codec = require "fdpass.codec"
local fdpass = require "fdpass"
local net = require "fdpass.net"
local fos = require "fdpass.os"
local P = require "fdpass.upgrade.protocol"
local poller = require "fdpass.upgrade.poller"

local now = fos.monotonic
local MAX_CLIENTS = 64

local Server = {}
Server.__index = Server

local M = {}

local function my_uid()
  local a, b, code = fdpass.socketpair()
  if not a then return nil, b, code end
  local _, uid = a:peercred()
  a:close()
  b:close()
  return uid
end

--- A server on `listener` (watched in `poll`, a poller). `handlers`:
-- `upgrade(ch)` starts an upgrade whose answer goes to `ch` later (returns
-- true, or false and a reason); `stats()` a table; `log(line)`.
function M.server(listener, poll, handlers)
  local uid, err, code = my_uid()
  if not uid then return nil, "control: " .. tostring(err), code end
  local self = setmetatable({ listener = listener, poll = poll, h = handlers, uid = uid, clients = {},
    nclients = 0, limit = handlers.deadline or 2 }, Server)
  self.refused = poller.counted(handlers.log, "control: refused %s connections (wrong uid or too many)")
  poll:watch("control", listener, "r")
  return self
end

--- Sends a one-message answer without waiting (a fresh socket's buffer
-- holds it) and closes the connection.
function M.reply(ch, msg)
  ch:send(P.encode(msg), nil, 0)
  ch:close()
end

function Server:forget(ch)
  if self.clients[ch] then
    self.clients[ch] = nil
    self.nclients = self.nclients - 1
    self.poll:unwatch(ch)
  end
end

--- Accepts what is waiting, at most P.STEP.accepts connections.
function Server:accept()
  for _ = 1, P.STEP.accepts do
    local fd = net.accept(self.listener)
    if not fd then return end
    local ch = fdpass.channel(fd)
    if not ch then fd:close(); return end -- out of memory: the client is let go, not leaked
    ch:limits { max_payload = 4096, max_fds = 1 }
    local _, uid = ch:peercred()
    if (uid ~= self.uid and uid ~= 0) or self.nclients >= MAX_CLIENTS then
      self.refused.bump()
      M.reply(ch, { ok = false, phase = "control",
        reason = self.nclients >= MAX_CLIENTS and "too many clients" or "permission denied" })
    else
      self.clients[ch] = now() + self.limit
      self.nclients = self.nclients + 1
      self.poll:watch(ch, ch, "r")
    end
  end
end

--- One readable client: its request, or nothing yet (a partial one stays).
function Server:request(ch)
  local data, fds, code = ch:recv(0)
  if not data and code == "EAGAIN" then return end
  -- No request carries descriptors: one that came is closed now.
  if data then P.close_all(fds) end
  self:forget(ch)
  local req = data and codec.decode(data)
  if type(req) ~= "table" then
    return M.reply(ch, { ok = false, phase = "control", reason = "bad request" })
  end
  if req.cmd == "upgrade" then
    local ok, why = self.h.upgrade(ch)
    if not ok then M.reply(ch, { ok = false, phase = "control", reason = tostring(why) }) end
    return
  end
  if req.cmd == "stats" then
    local ok, t = pcall(self.h.stats)
    if not ok or type(t) ~= "table" then
      local why = "stats: " .. (ok and "the stats function gave no table" or tostring(t))
      self.h.log(why)
      return M.reply(ch, { ok = false, phase = "control", reason = why })
    end
    t.ok, t.pid = true, fos.getpid()
    if t.generation == nil then t.generation = self.h.generation() end
    return M.reply(ch, t)
  end
  M.reply(ch, { ok = false, phase = "control", reason = "unknown command" })
end

--- Closes the clients past their deadline; returns the next deadline.
function Server:expire()
  self.refused.tick()
  local t, soon = now(), nil
  local late = {}
  for ch, deadline in pairs(self.clients) do
    if t >= deadline then late[#late + 1] = ch
    elseif not soon or deadline < soon then soon = deadline end
  end
  for _, ch in ipairs(late) do
    self:forget(ch)
    ch:close() -- too slow or silent
  end
  return soon
end

--- Stops serving: the listener leaves the poll set (it stays open: it is
-- the new copy's now, or the app's), every waiting client is closed.
function Server:stop()
  self.refused.flush()
  self.poll:unwatch("control")
  for ch in pairs(self.clients) do
    self:forget(ch)
    ch:close()
  end
end

-- ---- the client ------------------------------------------------------------------

--- Asks a server's control socket for `cmd` ("upgrade", "stats") and waits
-- at most `timeout` seconds (default 120) for the answer, a table:
-- `{ok = true, old =, new =, handover =, spawn =}` for an upgrade (seconds),
-- `{ok = false, phase =, reason =, message =, stderr =}` for a failure, or
-- `nil, msg, code` when the server could not be asked.
function M.request(addr, cmd, timeout)
  if type(addr) ~= "string" then
    error("bad argument #1 to 'request' (address expected, got " .. type(addr) .. ")", 2)
  end
  local ch, err, code = fdpass.connect(addr, 5)
  if not ch then return nil, err, code end
  local ok, serr, scode = ch:send(P.encode { cmd = cmd }, nil, 5)
  -- A server that refuses us may answer and close before our request is
  -- in: its answer is still there to read.
  if not ok and scode ~= "EPIPE" then ch:close(); return nil, serr, scode end
  local data, fds, rcode = ch:recv(timeout or 120)
  ch:close()
  if not data then return nil, fds, rcode end
  P.close_all(fds)
  local answer, derr = codec.decode(data)
  if type(answer) ~= "table" then return nil, "request: " .. tostring(derr), "EPROTO" end
  return answer
end

return M
