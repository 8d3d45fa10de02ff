-- A hostile new copy for spec/attack_bytes_spec.lua: it floods the old
-- side with well-formed junk that is costly to decode (each pair of the
-- table is `true = {}`: 6 bytes on the wire, one table made and dropped)
-- instead of HELLO ("before_hello") or instead of READY ("instead_of_ready",
-- after taking WELCOME, FDS and STATE), each message SIZE bytes, for
-- SECONDS, in $ATTACK_WRITERS processes sharing the channel.
-- usage: lua spec/upgrade/junk_copy.lua MODE SIZE SECONDS
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local codec = require "fdpass.codec"
local loop = require "fdpass.loop"

local mode, size, seconds = arg[1], tonumber(arg[2]), tonumber(arg[3] or 1.5)
require "attack.pids"(fos.getpid())
local now = fos.monotonic
local stop_at = now() + seconds

local function le32(x)
  return string.char(x % 256, math.floor(x / 256) % 256, math.floor(x / 65536) % 256, math.floor(x / 16777216))
end
local function str(x) return "\5" .. le32(#x) .. x end
-- { t = "JUNK", pad = { [true] = {}, ... } } in fdpass.codec's format by hand
local pairs_n = math.floor((size - 64) / 6)
local junk = "\253\1\6" .. le32(2) .. str("t") .. str("JUNK") .. str("pad") .. "\6" .. le32(pairs_n)
  .. ("\2\6\0\0\0\0"):rep(pairs_n)
assert(type(codec.decode(junk)) == "table" and #junk <= size)

local function flood(ch)
  while now() < stop_at do
    local ok, _, code = ch:send(junk, nil, 0)
    if not ok and code == "EAGAIN" then
      loop.poll({}, { ch }, 0.05)
      ch:flush(0)
    elseif not ok then
      return -- the old side is gone
    end
  end
end

if mode == "helper" then
  flood(fdpass.channel(3))
  os.exit(0)
end

local ch = fdpass.channel(assert(tonumber(os.getenv("FDPASS_UPGRADE_FD") or ""), "no channel"))
if mode == "instead_of_ready" then
  assert(ch:send(codec.encode { t = "HELLO", versions = { 1 }, pid = fos.getpid() }, nil, 5))
  for _, want in ipairs { "WELCOME", "FDS", "STATE" } do
    local data, fds = assert(ch:recv(5))
    assert(codec.decode(data).t == want, "expected " .. want)
    fdpass.close_all(fds)
  end
end
local helpers = {}
local lua = os.getenv("FDPASS_LUA") or "lua5.4"
for _ = 2, tonumber(os.getenv("ATTACK_WRITERS") or "3") do
  helpers[#helpers + 1] = assert(fdpass.spawn({ lua, arg[0], "helper", tostring(size), tostring(stop_at - now()) },
    { fds = { [2] = 2, [3] = ch } }))
end
flood(ch)
for _, p in ipairs(helpers) do
  if not p:wait(2) then p:kill("KILL"); p:wait() end
end
loop.poll({}, nil, 5) -- until the old side stops us
