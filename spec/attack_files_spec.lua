-- Beyond issue 10's six: the files an upgrader writes. A root server whose
-- pidfile lies in a directory another user owns (the app user's run
-- directory, say) must not be made to write through a link that user
-- planted: the pidfile is written to a temporary name and renamed, and a
-- predictable temporary name (pidfile.<pid>.tmp) lets the owner of the
-- directory point it at any file in advance. The links are made as that
-- user (nobody), in a directory it owns, so the kernel's
-- protected_symlinks (which only guards sticky world-writable
-- directories) does not decide the outcome.
local lu = require "luaunit"
local H = require "helpers"
local A = require "attack.harness"
local fos = require "fdpass.os"
local upgrade = require "fdpass.upgrade"

local T = {}

local function read(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("*a")
  f:close()
  return s
end

function T.test_pidfile_not_written_through_a_planted_link()
  if not A.is_root() then H.skip("needs root to plant links as nobody") end
  local top = A.tmpdir()
  local ok, err = pcall(function()
    local victim = top .. "/victim" -- root's file, outside the app user's directory
    local f = assert(io.open(victim, "w")); f:write("precious\n"); f:close()
    local run = top .. "/run"
    assert(H.execute(("mkdir %s && chown nobody %s"):format(run, run)))
    local pidfile = run .. "/server.pid"
    -- links at every name this process might use for its temporary file
    -- (its pid, the few after it), and at the pidfile itself
    local me = fos.getpid()
    local cmd = { ("ln -s %s %s"):format(victim, pidfile) }
    for pid = me, me + 3 do cmd[#cmd + 1] = ("ln -s %s %s.%d.tmp"):format(victim, pidfile, pid) end
    assert(H.execute(("setpriv --reuid=nobody --regid=nogroup --clear-groups sh -c '%s'")
      :format(table.concat(cmd, " && "))))
    local up = upgrade.new { pidfile = pidfile, argv = { "unused" }, systemd = false, signal = false }
    local inherit = up.inherit or up.start
    local iok, ierr = pcall(inherit, up) -- a fresh start: it writes the pidfile
    lu.assertEquals(read(victim), "precious\n", "the server wrote its pid through a planted link")
    if iok then
      -- it wrote a pidfile of its own, not through the link
      lu.assertEquals(read(pidfile), me .. "\n")
      local p = io.popen("stat -c %F " .. pidfile)
      local kind = p:read("*l")
      p:close()
      lu.assertEquals(kind, "regular file")
    else
      lu.assertStrContains(tostring(ierr), "pid") -- refusing is fine, saying why
    end
    if up.close then up:close() end
  end)
  A.rmdir(top)
  assert(ok, err)
end

TestAttackFiles = H.suite(T)
H.run()
