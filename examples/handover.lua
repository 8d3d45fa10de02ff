-- The seed's scenario in one file: a serving process starts a new copy of
-- itself, hands it the listening socket and its state over a channel, the
-- copy checks what it got and answers "ready", and the old one leaves.
-- Run: lua5.4 examples/handover.lua
local fdpass = require "fdpass"
local getpid = require("fdpass.os").getpid
local socket = require "socket" -- LuaSocket, for the TCP side

if arg[1] ~= "--new-copy" then -- the old process
  local listener = assert(socket.bind("127.0.0.1", 0))
  local host, port = listener:getsockname()
  local state = "visits=42"

  local mine, theirs = assert(fdpass.socketpair())
  local lua = os.getenv("FDPASS_LUA") or "lua5.4"
  local new = assert(fdpass.spawn({ lua, arg[0], "--new-copy" }, { fds = { [3] = theirs } }))
  theirs:close()                               -- the copy has it on descriptor 3
  assert(mine:send(state, { listener }, 5))
  local answer, _, err = mine:recv(5)
  if answer ~= "ready" then                    -- roll back: keep serving
    print("old: upgrade failed: " .. tostring(err or answer))
    new:kill("KILL"); new:wait()
    os.exit(1)
  end
  listener:close()                             -- the copy serves from now on
  print(("old %d: handed over to %d"):format(getpid(), new:pid()))

  local client = assert(socket.connect(host, port))
  print("client got: " .. assert(client:receive("*l")))
  client:close()
  assert(new:wait(5) == "exit")
else -- the new copy
  local ch = fdpass.channel(3)
  local state, fds = assert(ch:recv(5))
  local info = fds[1]:info()
  assert(info.family == "inet" and info.listening, "not a TCP listener")
  local server = socket.tcp()                  -- LuaSocket adopts the descriptor
  server:close()
  server:setfd(fds[1]:detach())
  server:listen(32)                            -- makes the object a server
  assert(ch:send("ready"))
  print(("new %d: serving on %s with %s"):format(getpid(), info.addr, state))
  local client = assert(server:accept())
  client:send(state .. "\n")
  client:close()
  server:close()
end
