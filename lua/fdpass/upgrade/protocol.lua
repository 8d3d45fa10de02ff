--- The upgrade handshake without I/O: protocol versions, the messages both
-- sides build and check, version negotiation, the claiming of inherited
-- listeners, and the one failure shape of the module. Both sides and the
-- fuzzer (fuzz/fuzz_handshake.c) use these functions, so what is fuzzed is
-- what runs. Nothing here reads or writes a channel; the only system calls
-- are `info` on descriptors that arrived and `close` on those not wanted.
-- docs/UPGRADE.md draws the conversation.
-- @module fdpass.upgrade.protocol
local codec = require "fdpass.codec"
local fdpass = require "fdpass"

local P = {}

P.VERSIONS = { 1 } -- what this side speaks, newest last
P.ENV_FD, P.ENV_GEN = "FDPASS_UPGRADE_FD", "FDPASS_UPGRADE_GENERATION"
P.ENV_ADDR, P.ENV_TOKEN = "FDPASS_UPGRADE_ADDR", "FDPASS_UPGRADE_TOKEN"
P.CONTROL_NAME = "fdpass.control" -- the control socket, offered to every new copy

--- Limits of one step's work (issue 10): messages read, stderr bytes,
-- connections accepted and refused on the control and rendezvous sockets.
-- After a full batch of strangers on the rendezvous socket, it is left
-- alone for `stranger_pause` seconds (at most 16 refused per 10 ms).
P.STEP = { messages = 16, stderr = 64 * 1024, accepts = 16, events = 64, stranger_pause = 0.01 }

-- How a phase reads in a failure message.
local PHASE_TEXT = {
  spawn = "at spawn", hello = "before HELLO", fds = "in FDS", state = "in STATE",
  ready = "before READY", commit = "before COMMITTED",
}

--- Every descriptor of a list closed now (the collector never sees one).
function P.close_all(fds)
  if fds and #fds > 0 then fdpass.close_all(fds) end
end

--- Decodes one message: a table whose `t` is a string, or `nil, reason`.
-- The caller closes any descriptors that came with it.
function P.decode(data)
  local msg, err = codec.decode(data)
  if type(msg) ~= "table" or type(msg.t) ~= "string" then
    return nil, "undecodable message: " .. tostring(err or "not a table with a type")
  end
  return msg
end

P.encode = codec.encode

--- The version both speak, the newest, or `nil, reason`.
function P.negotiate(ours, theirs)
  local version
  local list = type(theirs) == "table" and theirs or {}
  for _, mine in ipairs(ours) do
    for _, v in ipairs(list) do
      if mine == v then version = mine end
    end
  end
  if version then return version end
  local names = {}
  for _, v in ipairs(list) do names[#names + 1] = tostring(v) end
  return nil, ("no common protocol version (old speaks %s, new speaks %s)")
    :format(table.concat(ours, ","), table.concat(names, ","))
end

--- What identifies a listener across processes (fdpass.info's fields).
function P.identity(info)
  return {
    kind = info.kind, family = info.family, socktype = info.socktype,
    listening = info.listening, addr = info.addr,
  }
end

local ID_KEYS = { "kind", "family", "socktype", "listening", "addr" }

--- Whether `got` (an info table) is what `want` (an identity) claims.
function P.same_identity(got, want)
  if type(got) ~= "table" or type(want) ~= "table" then return false end
  for _, k in ipairs(ID_KEYS) do
    if got[k] ~= want[k] then return false, k end
  end
  return true
end

--- The FDS message for a list of `{name=, obj=}`: message and objects.
function P.fds_message(listeners)
  local names, ids, objs = {}, {}, {}
  for i, l in ipairs(listeners) do
    names[i], ids[i], objs[i] = l.name, P.identity(assert(fdpass.info(l.obj))), l.obj
  end
  return { t = "FDS", names = names, ids = ids }, objs
end

--- Claims the descriptors of an FDS message: each kept under its name if
-- it is what the message says it is, closed otherwise. Returns
-- `listeners` (name -> { fd, ... }), `claimed` and `unclaimed` (names).
function P.claim(msg, fds)
  local listeners, claimed, unclaimed = {}, {}, {}
  local names = type(msg.names) == "table" and msg.names or {}
  local ids = type(msg.ids) == "table" and msg.ids or {}
  for i, fd in ipairs(fds) do
    local name, want = names[i], ids[i]
    local info = fd:info()
    if type(name) == "string" and info and P.same_identity(info, want) then
      listeners[name] = listeners[name] or {}
      table.insert(listeners[name], fd)
      claimed[#claimed + 1] = name
    else
      fd:close() -- not what it claims to be: never trusted, never leaked
      unclaimed[#unclaimed + 1] = tostring(name)
    end
  end
  return listeners, claimed, unclaimed
end

--- A CONNS message in columns, and its descriptors: connection i is
-- descriptor i; its name is `name` when all share one, else
-- `names[name_of[i]]`; `buffered[i]` and `meta[i]` only where there are any.
function P.conns_columns(list)
  local fds, buffered, meta = {}, {}, {}
  local n = #list
  local one = n > 0 and list[1].name
  for i = 1, n do
    local e = list[i]
    fds[i] = e.conn
    local b = e.buffered
    if b and b ~= "" then buffered[i] = b end
    if e.meta ~= nil then meta[i] = e.meta end
    if e.name ~= one then one = nil end
  end
  local msg = { t = "CONNS", n = n, buffered = buffered, meta = meta, name = one }
  if one == nil and n > 0 then
    local names, name_of, index = {}, {}, {}
    for i = 1, n do
      local name = list[i].name
      local k = index[name]
      if not k then
        k = #names + 1
        names[k], index[name] = name, k
      end
      name_of[i] = k
    end
    msg.names, msg.name_of = names, name_of
  end
  return msg, fds
end

--- The live connections of a CONN or CONNS message: a list of
-- `{name=, fd=, buffered=, meta=}`. A descriptor without an entry (or the
-- reverse) is closed at once, never adopted blind.
function P.connections(msg, fds)
  local list = {}
  if msg.t == "CONN" then
    if fds[1] then
      list[1] = { name = msg.name, fd = fds[1], buffered = type(msg.buffered) == "string" and msg.buffered or "",
        meta = msg.meta }
    end
    for i = 2, #fds do fds[i]:close() end
    return list
  end
  if msg.conns == nil and msg.n ~= nil then -- in columns
    local n = #fds
    local buffered = type(msg.buffered) == "table" and msg.buffered or {}
    local meta = type(msg.meta) == "table" and msg.meta or {}
    local names = type(msg.names) == "table" and msg.names or {}
    local name_of = type(msg.name_of) == "table" and msg.name_of or {}
    if msg.n ~= n then -- descriptors and entries disagree: none adopted blind
      for i = 1, n do fds[i]:close() end
      return list
    end
    local one = msg.name
    for i = 1, n do
      local b = buffered[i]
      list[i] = { name = one or names[name_of[i]], fd = fds[i], buffered = type(b) == "string" and b or "",
        meta = meta[i] }
    end
    return list
  end
  local entries = type(msg.conns) == "table" and msg.conns or {}
  for i, fd in ipairs(fds) do
    local e = entries[i]
    if type(e) == "table" then
      list[#list + 1] = { name = e.name, fd = fd, buffered = type(e.buffered) == "string" and e.buffered or "",
        meta = e.meta }
    else
      fd:close()
    end
  end
  return list
end

-- ---- the failure shape ---------------------------------------------------------

--- The line of a new copy's stderr that says why it failed: the one before
-- a Lua traceback, else the last non-empty one, without the interpreter's
-- name ("lua5.4: app.lua:3: ..." -> "app.lua:3: ...").
function P.cause(tail)
  if type(tail) ~= "string" or tail == "" then return nil end
  local lines = {}
  for line in tail:gmatch("[^\n]+") do lines[#lines + 1] = line end
  local pick
  for i, line in ipairs(lines) do
    if line:match("^stack traceback:") then pick = lines[i - 1]; break end
  end
  pick = pick or lines[#lines]
  if not pick then return nil end
  return (pick:gsub("^%s*luajit: ", ""):gsub("^%s*lua[%d.]*: ", ""))
end

local Failure = {}
Failure.__index = Failure
Failure.__tostring = function(self) return self.message end

--- A failure: `{phase=, reason=, pid=, exit={how=, code=}, stderr=, message=}`;
-- tostring() gives `message`, the one line the old process logs.
-- `exited` tells that the copy ended on its own (not stopped by us).
function P.failure(f)
  local pid, phase = f.pid, f.phase or "spawn"
  local where = PHASE_TEXT[phase] or ("in " .. tostring(phase))
  local what, why = "failed", f.reason
  if f.exited and f.exit then
    what = f.exit.how == "signal" and ("killed by signal " .. tostring(f.exit.code))
      or ("exited " .. tostring(f.exit.code))
    why = P.cause(f.stderr) or f.reason
  end
  local self = setmetatable({ phase = phase, reason = tostring(f.reason), pid = pid, exit = f.exit,
    stderr = f.stderr or "" }, Failure)
  if pid then
    self.message = ("new copy %d %s %s: %s"):format(pid, what, where, tostring(why))
  else
    self.message = ("new copy could not start: %s"):format(tostring(f.reason))
  end
  return self
end

--- Whether `x` is a failure object.
function P.is_failure(x)
  return getmetatable(x) == Failure
end

return P
