-- An old process that dies the way a real one does, right after READY:
-- it starts spec/upgrade/new_copy.lua (mode "ok serve") as an upgrade
-- would, hands it a TCP listener "good" and the state { served = 41 },
-- waits for READY, prints "port N" and "copy PID" on stdout, and exits 0.
-- Its end of the channel is closed by that exit, and the process is reaped
-- only afterwards, by the spec (its parent): the order a real exit has.
-- usage: lua5.4 spec/upgrade/dying_old.lua
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local net = require "fdpass.net"
local codec = require "fdpass.codec"

local lua = os.getenv("FDPASS_LUA") or "lua5.4"
local l = assert(net.tcp_listen("127.0.0.1", 0))
local mine, theirs = assert(fdpass.socketpair())
local copy = assert(fdpass.spawn({ lua, "spec/upgrade/new_copy.lua", "ok", "serve" }, {
  fds = { [3] = theirs },
  setenv = { FDPASS_UPGRADE_FD = "3", FDPASS_UPGRADE_GENERATION = "7" },
}))
theirs:close()
local function send(msg, fds) assert(mine:send(codec.encode(msg), fds, 5)) end
local function recv()
  local data = assert(mine:recv(5))
  return codec.decode(data)
end
assert(recv().t == "HELLO")
send({ t = "WELCOME", version = 1, generation = 7, pid = fos.getpid() }, { 2 })
local i = fdpass.info(l)
send({ t = "FDS", names = { "good" }, ids = { { kind = i.kind, family = i.family, socktype = i.socktype,
  listening = i.listening, addr = i.addr } } }, { l })
send { t = "STATE", state = { served = 41 } }
assert(recv().t == "READY")
io.stdout:write(("port %d\ncopy %d\n"):format(tonumber(i.addr:match(":(%d+)$")), copy:pid()))
io.stdout:flush()
os.exit(0) -- no COMMIT: the channel closes with this exit
