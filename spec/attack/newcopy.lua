-- A hostile new copy for the attack specs: started by the upgrader of
-- spec/attack/server.lua in place of a real one, it speaks the upgrade
-- protocol by hand (channel on FDPASS_UPGRADE_FD, or the rendezvous at
-- FDPASS_UPGRADE_ADDR) and does one wrong thing. It appends its pid to
-- $ATTACK_PIDFILE first, so that the spec can kill it on every path, and
-- it never lives longer than SECONDS + 5 on its own.
--
-- usage: lua spec/attack/newcopy.lua MODE [SECONDS] [N]
--   burn        control: burns the CPU for SECONDS (in $ATTACK_WRITERS processes),
--               never says HELLO
--   flood_hello junk messages, as fast as they go, for SECONDS, before any HELLO
--   flood_ready HELLO, takes WELCOME/FDS/STATE, then junk instead of READY
--   flood_big   like flood_hello, each junk message just under 1 MiB and costly
--               to decode (174,000 tables made and dropped)
--   stderr      writes to its stderr as fast as it goes for SECONDS
--   hang_closed_stderr  closes its stderr, then hangs SECONDS before HELLO
--   hello_fds   HELLO with N descriptors, then exits 1 at once (a dying copy)
--   nak_fds     the handover, then NAK with N descriptors
--   ready_fds   the handover, READY with N descriptors, then COMMITTED with N
--   sleep       says nothing for SECONDS
-- The floods (flood_hello, flood_ready, stderr) and burn run in $ATTACK_WRITERS
-- processes (default 3: this one and helpers it starts sharing the same
-- channel or pipe), as an attacker would, so that the writers outpace the
-- one reader whatever else runs on the machine.
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local codec = require "fdpass.codec"
local loop = require "fdpass.loop"

local mode, seconds, n = arg[1], tonumber(arg[2] or 2), tonumber(arg[3] or 16)
local O = require "attack.oldside"
require "attack.pids"(fos.getpid())
local now = fos.monotonic
local stop_at = now() + seconds

local function channel()
  local fd = tonumber(os.getenv("FDPASS_UPGRADE_FD") or "")
  if fd then return fdpass.channel(fd) end
  return assert(fdpass.connect(assert(os.getenv("FDPASS_UPGRADE_ADDR"), "no channel"), 5))
end

local function hello(ch, fds)
  return ch:send(codec.encode { t = "HELLO", versions = { 1 }, pid = fos.getpid(),
    token = os.getenv("FDPASS_UPGRADE_TOKEN") }, fds, 5)
end


-- WELCOME, FDS and STATE, closing what they carry (stderr among it).
local function take_handover(ch)
  for _, want in ipairs { "WELCOME", "FDS", "STATE" } do
    local m, fds = O.recv(ch)
    assert(type(m) == "table" and m.t == want, "expected " .. want)
    fdpass.close_all(fds)
  end
end


-- Junk: well-formed messages of a type no version speaks, as fast as the
-- channel takes them, until stop_at.
local function flood(ch, big)
  local junk = codec.encode { t = "JUNK", pad = ("x"):rep(64) }
  if big then
    -- { t = "JUNK", pad = P } by hand: P announces n pairs, each true = {}
    -- (6 bytes on the wire, a table made and dropped at once: the most
    -- decoding work per byte), under the 1 MiB a message may have.
    local function le32(x)
      return string.char(x % 256, math.floor(x / 256) % 256, math.floor(x / 65536) % 256, math.floor(x / 16777216))
    end
    local function str(x) return "\5" .. le32(#x) .. x end
    local pairs_n = math.floor((1024 * 1024 - 64) / 6)
    junk = "\253\1\6" .. le32(2) .. str("t") .. str("JUNK") .. str("pad") .. "\6" .. le32(pairs_n)
      .. ("\2\6\0\0\0\0"):rep(pairs_n)
    assert(type(codec.decode(junk)) == "table")
  end
  while now() < stop_at do
    local ok, _, code = ch:send(junk, nil, 0)
    if not ok and code == "EAGAIN" then
      loop.poll({}, { ch }, 0.05)
      ch:flush(0)
    elseif not ok then
      break -- the old side is gone
    end
  end
end

-- Until the old side closes the channel, or the time is up.
local function linger(ch, extra)
  local limit = now() + (extra or 5)
  while now() < limit do
    local data, _, code = ch:recv(0.2)
    if not data and code ~= "ETIMEDOUT" and code ~= "EAGAIN" then return end
  end
end

-- Starts the helpers of a flood: copies of this script in mode `helper`
-- with descriptor 3 (the channel) and 2 (stderr) mapped.
local helpers = {}
local function start_helpers(helper_mode, ch)
  local writers = tonumber(os.getenv("ATTACK_WRITERS") or "3")
  local lua = os.getenv("FDPASS_LUA") or "lua5.4"
  for _ = 2, writers do
    helpers[#helpers + 1] = assert(fdpass.spawn({ lua, arg[0], helper_mode, tostring(stop_at - now()) },
      { fds = { [2] = 2, [3] = ch } }))
  end
end
local function reap_helpers()
  for _, p in ipairs(helpers) do
    if not p:wait(2) then p:kill("KILL"); p:wait() end
  end
end

if mode == "burn" or mode == "burn_helper" then
  -- as many burning processes as a flood has writers: the same
  -- competition for the CPU, and nothing else
  if mode == "burn" then start_helpers("burn_helper") end
  local x = 0
  while now() < stop_at do x = x + 1 end
  reap_helpers()
  if mode == "burn" then loop.poll({}, nil, 5) end
elseif mode == "sleep" then
  loop.poll({}, nil, seconds)
elseif mode == "hang_closed_stderr" then
  fdpass.fd(2):close()
  loop.poll({}, nil, seconds)
elseif mode == "flood_helper" or mode == "flood_big_helper" then
  flood(fdpass.channel(3), mode == "flood_big_helper")
elseif mode == "flood_big" then
  local ch = channel()
  start_helpers("flood_big_helper", ch)
  flood(ch, true)
  reap_helpers()
  linger(ch)
elseif mode == "stderr" or mode == "stderr_helper" then
  if mode == "stderr" then start_helpers("stderr_helper") end
  -- ATTACK_CHUNK: bytes a write (default 65536); small writes from several
  -- writers keep the pipe from ever being empty for long
  local chunk = ("e"):rep(tonumber(os.getenv("ATTACK_CHUNK") or "65536"))
  local err = fdpass.fd(2)
  while now() < stop_at do
    local w, _, code = err:write(chunk)
    if not w and code ~= "EAGAIN" and code ~= "EINTR" then break end
  end
  reap_helpers()
  if mode == "stderr" then loop.poll({}, nil, 5) end
elseif mode == "flood_hello" then
  local ch = channel()
  start_helpers("flood_helper", ch)
  flood(ch)
  reap_helpers()
  linger(ch)
elseif mode == "flood_ready" then
  local ch = channel()
  assert(hello(ch))
  take_handover(ch)
  start_helpers("flood_helper", ch)
  flood(ch)
  reap_helpers()
  linger(ch)
elseif mode == "hello_fds" then
  local ch = channel()
  assert(hello(ch, O.extras(n)))
  os.exit(1)
elseif mode == "nak_fds" then
  local ch = channel()
  assert(hello(ch))
  take_handover(ch)
  assert(ch:send(codec.encode { t = "NAK", reason = "nak with descriptors" }, O.extras(n), 5))
  linger(ch)
  os.exit(1)
elseif mode == "ready_fds" then
  local ch = channel()
  assert(hello(ch))
  take_handover(ch)
  assert(ch:send(codec.encode { t = "READY", claimed = { "http" }, unclaimed = {} }, O.extras(n), 5))
  local m, fds = O.recv(ch)
  assert(type(m) == "table" and m.t == "COMMIT", "expected COMMIT")
  fdpass.close_all(fds)
  assert(ch:send(codec.encode { t = "COMMITTED", pid = fos.getpid() }, O.extras(n), 5))
  linger(ch)
else
  error("unknown mode " .. tostring(mode))
end
os.exit(0)
