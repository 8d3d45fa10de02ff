-- A new copy started in rendezvous mode that first sends strangers to the
-- rendezvous socket, each with the right token (stolen from this process's
-- environment, the worst case): one of another uid (as nobody, when this
-- runs as root) and one of our uid but another pid. Each stranger exits 0
-- if it was turned away, 1 if it got a WELCOME. Then, unless arg[1] is
-- "strangers-only", this process joins as the real copy.
-- Reports on stderr: "pid N", "stranger KIND EXIT", "joined yes"; exits 1
-- if a stranger was let in.
local fdpass = require "fdpass"
local loop = require "fdpass.loop"
local fos = require "fdpass.os"
local upgrade = require "fdpass.upgrade"
local other_uid = require "other_uid"

local function report(k, v) io.stderr:write(("%s %s\n"):format(k, tostring(v))) end
report("pid", fos.getpid())

local lua = os.getenv("FDPASS_LUA") or "lua5.4"
local STRANGER = [[
local codec = require "fdpass.codec"
local fos = require "fdpass.os"
  local fdpass = require "fdpass"
  local ch = assert(fdpass.connect(os.getenv("FDPASS_UPGRADE_ADDR"), 5))
  ch:send(codec.encode { t = "HELLO", versions = { 1 }, pid = fos.getpid(),
    token = os.getenv("FDPASS_UPGRADE_TOKEN") }, nil, 5)
  local data = ch:recv(5)
  os.exit(data and 1 or 0)
]]
local strangers = { { "same-uid-other-pid", { lua, "-e", STRANGER } } }
-- as nobody, from a copy of the modules it can read (spec/other_uid.lua)
local as_nobody, why = other_uid.prefix()
local let_in = 0
if as_nobody then
  local argv = {}
  for i, a in ipairs(as_nobody) do argv[i] = a end
  for _, a in ipairs { lua, "-e", STRANGER } do argv[#argv + 1] = a end
  table.insert(strangers, 1, { "other-uid", argv })
elseif other_uid.possible() then -- root, yet no copy for nobody: a failure, not a smaller test
  report("stranger", "other-uid not-started:" .. tostring(why):gsub("%s", "_"))
  let_in = let_in + 1
end
for _, s in ipairs(strangers) do
  local p = assert(fdpass.spawn(s[2]))
  local how, code = p:wait(10)
  report("stranger", s[1] .. " " .. tostring(how) .. ":" .. tostring(code))
  if how ~= "exit" or code ~= 0 then let_in = let_in + 1 end
end
other_uid.cleanup()
if arg[1] == "strangers-only" then
  loop.poll({}, nil, 30) -- the old side gives up first
  os.exit(0)
end

local up = upgrade.new { argv = { "unused" }, timeouts = { handover = 5, commit = 5 } }
local inherited = up:inherit { inherit = function(got) return got.listeners.http ~= nil end }
report("joined", inherited and "yes" or "no")
local deadline = fos.monotonic() + 10
while fos.monotonic() < deadline do
  local ev = up:step()
  if ev == "done" then break end
  if not ev then loop.poll({ up }, nil, up:timeout() or 1) end
end
os.exit(let_in == 0 and 0 or 1) -- 1: a stranger got in
