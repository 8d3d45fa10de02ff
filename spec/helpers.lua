-- What the specs share: a suite constructor that checks every test leaves
-- no descriptor behind, and child processes that run Lua with descriptors
-- mapped into them.
local lu = require "luaunit"
local fdpass = require "fdpass"
local net = require "fdpass.net"
local fos = require "fdpass.os"
local other_uid = require "other_uid"

local H = {}
H.lua = os.getenv("FDPASS_LUA") or "lua5.4"

-- ---- what differs between Lua 5.1, 5.3, 5.4 and LuaJIT 2.1 ---------------
-- The specs run unchanged on all four: these stand in for what only some
-- of them have (string.pack, math.type, table.pack, <close>, os.execute's
-- exit status).

-- 5.1 and LuaJIT: the global unpack
local unpack = table.unpack or unpack -- luacheck: read globals table.unpack unpack
H.unpack = unpack

--- table.pack (5.2+): the values and their count n, nils included.
function H.pack(...)
  return { n = select("#", ...), ... }
end

-- n as `width` bytes, least significant first: string.pack("<I" .. width)
-- in arithmetic, so the same bytes on every Lua; out of range raises, as
-- string.pack does.
local function le(n, width)
  assert(type(n) == "number" and n >= 0 and n < 256 ^ width and n == math.floor(n),
    "unsigned " .. width .. "-byte integer out of range: " .. tostring(n))
  local bytes = {}
  for i = 1, width do
    bytes[i] = n % 256
    n = (n - bytes[i]) / 256
  end
  return string.char(unpack(bytes))
end

--- string.pack("<B", n), ("<I2", n) and ("<I4", n).
function H.u8(n) return le(n, 1) end
function H.le16(n) return le(n, 2) end
function H.le32(n) return le(n, 4) end

--- The bytes of string.pack("<BBI2I4I4I4", ...): a framed record header
-- after its 4-byte magic (framing.c's layout).
function H.header_fields(version, flags, nfds, len, total_len, total_fds)
  return H.u8(version) .. H.u8(flags) .. H.le16(nfds) .. H.le32(len) .. H.le32(total_len) .. H.le32(total_fds)
end

--- string.unpack("<I" .. width, s, pos): the unsigned little-endian integer
-- at pos and the position after it; a string too short raises, as
-- string.unpack does.
function H.read_le(s, pos, width)
  assert(#s >= pos + width - 1, "data string too short")
  local n = 0
  for i = pos + width - 1, pos, -1 do n = n * 256 + s:byte(i) end
  return n, pos + width
end

-- math.type is 5.3+: nil on 5.1 and LuaJIT
local math_type = math.type -- luacheck: read globals math.type
--- math.type(v) == "integer" where Lua has integers (5.3+: strict, a float
-- such as 3.0 is not one); on 5.1 and LuaJIT, where every number is a
-- double, a number with no fraction within the 2^53 a double holds exactly.
function H.is_integer(v)
  if math_type then return math_type(v) == "integer" end
  return type(v) == "number" and v == math.floor(v) and v >= -2 ^ 53 and v <= 2 ^ 53
end

--- os.execute(cmd) succeeded, i.e. exited 0: 5.2+ returns true, "exit", 0;
-- 5.1 and LuaJIT return the wait status, 0 on success (any number is true,
-- so assert(os.execute(...)) alone would never fail there).
function H.execute(cmd)
  local a, how, code = os.execute(cmd)
  if type(a) == "number" then return a == 0 end
  return a == true and (how == nil or how == "exit") and (code == nil or code == 0)
end

--- Why the tests of `<close>` variables skip on older Lua.
H.NO_CLOSE = "<close> is Lua 5.4 syntax; older Lua closes with fd:close() or __gc"

--- Compiles `src`, a chunk in Lua 5.4 syntax (to-be-closed variables), on
-- Lua 5.4 only: older Lua cannot even parse it, so it stays in a string
-- there and this returns nil. The chunk gets what it needs as `...`.
function H.lua54(src, name)
  if _VERSION ~= "Lua 5.4" then return nil end
  return assert(load(src, "=" .. name))
end

--- Runs a chunk from H.lua54 with the arguments, or, where it could not be
-- compiled, skips the test (a skip, never a pass).
function H.run54(chunk, ...)
  if not chunk then H.skip(H.NO_CLOSE) end
  return chunk(...)
end

local function settle()
  collectgarbage()
  collectgarbage()
end

local current -- the running test of an H.suite: its name, its descriptor count before

--- Skips the running test: a test that skips after running a part (the
-- rest needs Lua 5.4) is checked for leaks all the same.
function H.skip(reason)
  if current then
    local name, before = current.name, current.before
    current = nil
    settle()
    lu.assertEquals(fos.fdcount(), before, "descriptors leaked by " .. name)
  end
  lu.skip(reason)
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
        local before = fos.fdcount()
        current = { name = name, before = before }
        fn(...)
        current = nil
        settle()
        lu.assertEquals(fos.fdcount(), before, "descriptors leaked by " .. name)
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
  -- /dev/null stands as the script so that the extra args land in `arg`;
  -- Lua 5.1 makes `arg` only for the script, after -e has run, so the code
  -- also carries them as literals for when it finds no `arg`.
  local literal = { '[0] = "/dev/null"' }
  for _, a in ipairs(args or {}) do literal[#literal + 1] = ("%q"):format(a) end
  local prelude = "fdpass = require 'fdpass'; arg = arg or { " .. table.concat(literal, ", ") .. " }\n"
  local argv = { H.lua, "-e", prelude .. code, "/dev/null" }
  for _, a in ipairs(args or {}) do argv[#argv + 1] = a end
  if opts and opts.prefix then -- e.g. H.as_nobody()
    for i = #opts.prefix, 1, -1 do table.insert(argv, 1, opts.prefix[i]) end
  end
  return assert(fdpass.spawn(argv, { fds = fds }))
end

--- Short upgrade timeouts for specs (seconds), `over` replacing some.
function H.upgrade_timeouts(over)
  local t = { hello = 5, handover = 5, ready = 5, commit = 5, kill = 1 }
  for k, v in pairs(over or {}) do t[k] = v end
  return t
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

--- The argv prefix (for H.child's opts.prefix) that runs a child as
-- nobody from a copy of the modules nobody can read, wherever the checkout
-- is (spec/other_uid.lua); when that cannot be (not root), skips the test.
function H.as_nobody()
  local prefix, why = other_uid.prefix()
  if not prefix then H.skip(why) end
  return prefix
end

function H.run()
  local status = lu.LuaUnit.run("-o", "tap", unpack(arg or {}))
  other_uid.cleanup()
  os.exit(status)
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
    local got = f:read("*l") -- "*l": 5.1 knows no "l"
    f:close()
    if got ~= prefix .. i and #bad < 5 then
      bad[#bad + 1] = ("#%d is %q"):format(i, tostring(got))
    end
  end
  lu.assertEquals(bad, {}, "descriptors out of place")
end

--- Asserts a failure result: nil, "what: ...", code, and nothing after.
-- H.assert_fails(code, what, f(...)): the call's results come last so that
-- none is cut off. Returns the message.
function H.assert_fails(code, what, ok, msg, got, extra)
  lu.assertNil(ok, "expected " .. code .. ", got a result")
  lu.assertEquals(got, code, msg)
  lu.assertEquals(type(msg), "string")
  lu.assertNil(extra)
  lu.assertEquals(msg:sub(1, #what + 2), what .. ": ")
  return msg
end

--- Asserts that fn(...) raises an error whose text contains `text` (plain).
function H.assert_raises(text, fn, ...)
  local ok, err = pcall(fn, ...)
  lu.assertFalse(ok, "expected an error matching " .. text)
  lu.assertStrContains(tostring(err), text)
end

-- ---- servers and processes ------------------------------------------------

--- A TCP port on 127.0.0.1 that was free a moment ago (for a server that
-- must be told its port before it binds).
function H.free_port()
  local l = assert(net.tcp_listen("127.0.0.1", 0))
  local port = tonumber(l:info().addr:match(":(%d+)$"))
  l:close()
  return port
end

--- Gone, or a zombie nobody reaps yet (a process that is not our child).
function H.gone_or_zombie(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return true end
  local stat = f:read("*a")
  f:close()
  return stat:match("^%d+ %b() (%u)") == "Z"
end

return H
