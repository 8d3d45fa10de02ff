-- What the specs share: a suite constructor that checks every test leaves
-- no descriptor behind, and child processes that run Lua with descriptors
-- mapped into them.
local lu = require "luaunit"
local fdpass = require "fdpass"

local H = {}
H.lua = os.getenv("FDPASS_LUA") or "lua5.4"

local function settle()
  collectgarbage()
  collectgarbage()
end

--- A luaunit class whose test_* functions each assert that the process
-- holds exactly as many descriptors afterwards as before, and that reports
-- SKIP (reason: FDPASS_SKIP_WHY) for the tests named in
-- FDPASS_SKIP, which `make valgrind` sets.
function H.suite(tests)
  local class = {}
  local skip = {}
  for n in (os.getenv("FDPASS_SKIP") or ""):gmatch("%S+") do skip[n] = true end
  for name, fn in pairs(tests) do
    if type(fn) == "function" and skip[name] then
      class[name] = function() lu.skip(os.getenv("FDPASS_SKIP_WHY") or "in FDPASS_SKIP") end
    elseif type(fn) == "function" and name:match("^test") then
      class[name] = function(...)
        settle()
        local before = fdpass.fdcount()
        fn(...)
        settle()
        lu.assertEquals(fdpass.fdcount(), before, "descriptors leaked by " .. name)
      end
    else
      class[name] = fn
    end
  end
  return class
end

--- Starts `lua -e code` with `fds` mapped ({[3] = ch, ...}). The code sees
-- `fdpass` and `arg` (extra args). Its stderr is the test's stderr.
function H.child(code, fds, args, opts)
  -- /dev/null stands as the script so that the extra args land in `arg`.
  local argv = { H.lua, "-e", "fdpass = require 'fdpass'\n" .. code, "/dev/null" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  if opts and opts.prefix then -- e.g. { "setpriv", "--reuid=nobody", ... }
    for i = #opts.prefix, 1, -1 do table.insert(argv, 1, opts.prefix[i]) end
  end
  return assert(fdpass.spawn(argv, { fds = fds }))
end

--- Waits for a child and asserts how it ended.
function H.expect_exit(proc, code, timeout)
  local how, n = proc:wait(timeout or 20)
  if how == nil then proc:kill("KILL"); proc:wait() end
  lu.assertEquals({ how, n }, { "exit", code or 0 }, "child ended unexpectedly")
end

--- Runs a child with a channel on descriptor 3 and returns our end and the
-- process: the common shape of a cross-process test.
function H.peer(code, kind)
  local a, b = assert(fdpass.socketpair(kind))
  local proc = H.child("local ch = fdpass.channel(3)\n" .. code, { [3] = b })
  b:close()
  return a, proc
end

--- A regular file with `content`, opened for reading, as an fd object.
function H.tempfile(content)
  local name = os.tmpname()
  local f = assert(io.open(name, "w"))
  f:write(content)
  f:close()
  local r = assert(io.open(name, "r"))
  os.remove(name)
  local fd = fdpass.dup(r)
  r:close()
  return fd
end

--- n descriptors: duplicates of one temp file, each its own fd object.
function H.fds(n)
  local base = H.tempfile("x")
  local t = {}
  for i = 1, n do t[i] = fdpass.dup(base) end
  base:close()
  return t
end

function H.close_all(list)
  for _, f in ipairs(list) do f:close() end
end

function H.run()
  os.exit(lu.LuaUnit.run("-o", "tap", table.unpack(arg or {})))
end

-- ---- framed/raw/hostile specs ------------------------------------------

--- n fd objects, each an open file description of its own (opened
-- separately, so with its own read position) on one temp file whose lines
-- are prefix .. i (prefix defaults to "file "): object i is positioned at
-- line i, so reading a line from it tells which one it is.
function H.numbered_fds(n, prefix)
  prefix = prefix or "file "
  local name = os.tmpname()
  local w = assert(io.open(name, "w"))
  local offsets, pos = {}, 0
  for i = 1, n do
    local line = prefix .. i .. "\n"
    offsets[i] = pos
    pos = pos + #line
    w:write(line)
  end
  w:close()
  local t = {}
  for i = 1, n do
    local r = assert(io.open(name, "r"))
    assert(r:seek("set", offsets[i]))
    t[i] = fdpass.dup(r)
    r:close()
  end
  os.remove(name)
  return t
end

--- Asserts that `fds` are exactly n fd objects that read as prefix .. i in
-- order (as made by H.numbered_fds, or any file holding that line at its
-- read position), and closes them all.
function H.check_numbered(fds, n, prefix)
  prefix = prefix or "file "
  lu.assertEquals(#fds, n, "descriptor count")
  local bad = {}
  for i, fd in ipairs(fds) do
    lu.assertEquals(getmetatable(fd).__name, "fdpass.fd")
    local f = fd:file("r")
    local got = f:read("l")
    f:close()
    if got ~= prefix .. i and #bad < 5 then
      bad[#bad + 1] = ("#%d is %q"):format(i, tostring(got))
    end
  end
  lu.assertEquals(bad, {}, "descriptors out of place")
end

return H
