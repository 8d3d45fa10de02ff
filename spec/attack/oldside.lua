-- The old side played by hand, for the attack specs: a hostile (or
-- dying) old process facing a real new copy (spec/attack/app_copy.lua).
-- Used in the spec's own process and in a decoy process of its own.
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local codec = require "fdpass.codec"

local O = {}

function O.recv(ch, timeout)
  local data, fds, code = ch:recv(timeout or 5)
  if not data then return nil, fds, code end
  return codec.decode(data), fds
end

function O.send(ch, msg, fds)
  return assert(ch:send(codec.encode(msg), fds, 5))
end

-- What the new copy compares a listener with (kind, family, type,
-- listening, address), as the old side announces it.
function O.identity(obj)
  local info = assert(fdpass.info(obj))
  return { kind = info.kind, family = info.family, socktype = info.socktype,
    listening = info.listening, addr = info.addr }
end

--- n descriptors on /dev/null, to send where none is wanted.
function O.extras(n)
  local base = assert(io.open("/dev/null"))
  local t = {}
  for i = 1, n do t[i] = fdpass.dup(base) end
  base:close()
  return t
end

--- The handover up to READY: HELLO in, WELCOME (stderr first, then
-- `extra` more), FDS (the listener and `extra` more than names), STATE
-- (`extra` descriptors with it) out; returns READY (and closes what came
-- with it). Every descriptor sent is closed here afterwards.
function O.handover(ch, listener, stderr, extra)
  local hello, hfds = O.recv(ch)
  assert(type(hello) == "table" and hello.t == "HELLO", "expected HELLO")
  fdpass.close_all(hfds)
  local function with_extras(first)
    local t = O.extras(extra)
    if first then table.insert(t, 1, first) end
    return t
  end
  local w = with_extras(stderr)
  O.send(ch, { t = "WELCOME", version = 1, generation = 2, pid = fos.getpid() }, w)
  local f = with_extras(listener)
  O.send(ch, { t = "FDS", names = { "http" }, ids = { O.identity(listener) } }, f)
  local s = with_extras(nil)
  O.send(ch, { t = "STATE", state = { served = 1 } }, s)
  for _, list in ipairs { w, f, s } do
    for i, fd in ipairs(list) do
      if fd ~= stderr and fd ~= listener then fd:close() end
      list[i] = nil
    end
  end
  local ready, rfds = O.recv(ch)
  if type(rfds) == "table" then fdpass.close_all(rfds) end
  assert(type(ready) == "table" and ready.t == "READY", "expected READY, got " .. tostring(ready and ready.t))
  return ready
end

return O
