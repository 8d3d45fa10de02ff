-- Raw messages (ch:sendmsg / ch:recvmsg: one sendmsg, one recvmsg) on both
-- kinds: counts, truncation of descriptors (ECTRUNC) and of records
-- (EMSGSIZE), short writes on a stream, EOF, would-block, timeouts, EPIPE,
-- argument checks; the framed records as raw bytes; and interop with a peer
-- that is not fdpass: Python's socket.send_fds / recv_fds, a framed writer
-- and reader written in Python, and control messages that come before the
-- descriptors (SO_PASSCRED, SO_PASSPIDFD).
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local socket = require "socket"

local now = socket.gettime
local KINDS = { "seqpacket", "stream" }

local assert_fails, assert_raises = H.assert_fails, H.assert_raises

-- The 20-byte record header, as framing.c lays it out: "<c4BBI2I4I4I4".
local function unpack_header(s)
  local t, pos = { magic = s:sub(1, 4) }, 5
  for _, field in ipairs { { "version", 1 }, { "flags", 1 }, { "nfds", 2 }, { "len", 4 },
                           { "total_len", 4 }, { "total_fds", 4 } } do
    t[field[1]], pos = H.read_le(s, pos, field[2])
  end
  lu.assertEquals(pos, 21)
  return t
end

-- Starts `python3 -c code` with descriptors mapped (the socket on 3).
local function python(code, fds)
  local prelude = "import os, socket, struct, sys, tempfile, array\n" ..
                  "s = socket.socket(fileno=3)\ns.settimeout(10)\n"
  return assert(fdpass.spawn({ "python3", "-c", prelude .. code }, { fds = fds }))
end

local function py_peer(code, kind)
  local a, b = assert(fdpass.socketpair(kind))
  local proc = python(code, { [3] = b })
  b:close()
  return a, proc
end

-- Python that makes 5 files of its own, "py 1".."py 5".
local PY_SEND_FILES = [[
n, data = 5, b"from python"
files = []
for i in range(n):
    f = tempfile.TemporaryFile()
    f.write(b"py %d\n" % (i + 1))
    f.seek(0)
    files.append(f)
]]

local T = {}

for _, kind in ipairs(KINDS) do
  local function pair()
    return assert(fdpass.socketpair(kind))
  end

  for _, n in ipairs({ 0, 1, 253 }) do
    T[("test_%s_raw_%d_fds"):format(kind, n)] = function()
      local a, b = pair()
      local fds = H.numbered_fds(n)
      local data = "raw\0" .. n
      lu.assertEquals(a:sendmsg(data, fds), #data)
      H.close_all(fds)
      local got, gfds = b:recvmsg()
      lu.assertEquals(got, data)
      H.check_numbered(gfds, n)
      assert_fails("EAGAIN", "recvmsg", b:recvmsg(nil, nil, 0))
      a:close()
      b:close()
    end
  end

  T["test_" .. kind .. "_recvmsg_fewer_fds_than_sent_is_ectrunc"] = function()
    local a, b = pair()
    local fds = H.numbered_fds(10)
    assert(a:sendmsg("ten", fds))
    assert(a:sendmsg("none"))
    assert(a:sendmsg("one", { fds[1] }))
    assert(a:sendmsg("after"))
    H.close_all(fds)
    local msg = assert_fails("ECTRUNC", "recvmsg", b:recvmsg(100, 4, 1))
    lu.assertStrContains(msg, "dropped")
    -- the bytes went with it; the next message is whole (a stream would
    -- run on into the next one's bytes and descriptors: read exactly 4)
    lu.assertEquals({ b:recvmsg(4, 4, 1) }, { "none", {} })
    -- maxfds 0 refuses any descriptor
    assert_fails("ECTRUNC", "recvmsg", b:recvmsg(100, 0, 1))
    lu.assertEquals({ b:recvmsg(100, 0, 1) }, { "after", {} })
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_recvmsg_eof_and_timeouts"] = function()
    local a, b = pair()
    assert_fails("EAGAIN", "recvmsg", b:recvmsg(10, 1, 0))
    local t0 = now()
    assert_fails("ETIMEDOUT", "recvmsg", b:recvmsg(10, 1, 0.05))
    local dt = now() - t0
    lu.assertTrue(dt >= 0.045 and dt < 2, "waited " .. dt)
    assert(a:sendmsg("bye"))
    a:close()
    lu.assertEquals({ b:recvmsg(10, 1, 1) }, { "bye", {} })
    local msg = assert_fails("EOF", "recvmsg", b:recvmsg(10, 1, 1))
    lu.assertEquals(msg, "recvmsg: peer closed the channel")
    assert_fails("EOF", "recvmsg", b:recvmsg())
    b:close()
  end

  T["test_" .. kind .. "_sendmsg_to_closed_peer_is_epipe"] = function()
    local a, b = pair()
    b:close()
    local f = H.numbered_fds(1)
    assert_fails("EPIPE", "sendmsg", a:sendmsg("x", f))
    assert_fails("EPIPE", "sendmsg", a:sendmsg("x", nil, 0))
    H.close_all(f)
    a:close()
  end

  T["test_" .. kind .. "_sendmsg_would_block"] = function()
    local a, b = pair()
    local chunk = ("w"):rep(60000)
    local sent = 0
    for _ = 1, 1000 do
      local n, msg, code = a:sendmsg(chunk, nil, 0)
      if not n then
        lu.assertEquals(code, "EAGAIN", msg)
        break
      end
      sent = sent + n
    end
    lu.assertTrue(sent > 0 and sent < 60000 * 1000)
    local t0 = now()
    assert_fails("ETIMEDOUT", "sendmsg", a:sendmsg(chunk, nil, 0.05))
    local dt = now() - t0
    lu.assertTrue(dt >= 0.045 and dt < 2, "waited " .. dt)
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_framed_records_as_raw_bytes"] = function()
    local a, b = pair()
    local fds = H.numbered_fds(300)
    assert(a:send("hello", fds))
    H.close_all(fds)
    -- 253 descriptors with the first record, the rest with the second
    local r1, f1 = b:recvmsg(nil, nil, 1)
    local h1 = unpack_header(r1:sub(1, 20))
    lu.assertEquals(h1, { magic = "FDPS", version = 1, flags = 1, nfds = 253, len = 5,
                          total_len = 5, total_fds = 300 })
    lu.assertEquals(r1:sub(21), "hello")
    H.check_numbered(f1, 253)
    local r2, f2 = b:recvmsg(nil, nil, 1)
    lu.assertEquals(#r2, 20)
    lu.assertEquals(unpack_header(r2), { magic = "FDPS", version = 1, flags = 2, nfds = 47,
                                         len = 0, total_len = 5, total_fds = 300 })
    lu.assertEquals(#f2, 47)
    H.close_all(f2)
    -- an empty message is one header-only record
    assert(a:send(""))
    local r3, f3 = b:recvmsg(nil, nil, 1)
    lu.assertEquals(unpack_header(r3), { magic = "FDPS", version = 1, flags = 0, nfds = 0,
                                         len = 0, total_len = 0, total_fds = 0 })
    lu.assertEquals(f3, {})
    a:close()
    b:close()
  end

  T["test_" .. kind .. "_python_sends_files"] = function()
    local a, proc = py_peer(PY_SEND_FILES .. [[
n2 = socket.send_fds(s, [data], [f.fileno() for f in files])
assert n2 == len(data), n2
# two SCM_RIGHTS control messages in one sendmsg: one list for the receiver
fds = [f.fileno() for f in files]
s.sendmsg([b"two lists"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds[:2])),
                            (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds[2:]))])
assert s.recv(10) == b""
]], kind)
    local data, fds = a:recvmsg(100, 253, 10)
    lu.assertEquals(data, "from python")
    H.check_numbered(fds, 5, "py ")
    data, fds = a:recvmsg(100, 253, 10)
    lu.assertEquals(data, "two lists")
    lu.assertEquals(#fds, 5)
    for i, fd in ipairs(fds) do
      lu.assertEquals(fd:info().kind, "file", "descriptor " .. i)
      lu.assertTrue(fd:info().cloexec)
      fd:close()
    end
    a:close()
    H.expect_exit(proc, 0)
  end

  T["test_" .. kind .. "_python_receives_files"] = function()
    local a, proc = py_peer([[
msg, fds, flags, addr = socket.recv_fds(s, 100, 253)
assert flags & socket.MSG_CTRUNC == 0, flags
lines = [os.read(fd, 100).split(b"\n")[0] for fd in fds]
for fd in fds:
    os.close(fd)
s.sendall(msg + b"|" + b",".join(lines))
]], kind)
    local fds = H.numbered_fds(7)
    lu.assertEquals(a:sendmsg("to python", fds, 10), 9)
    H.close_all(fds)
    local got = a:recvmsg(1000, 0, 10)
    lu.assertEquals(got, "to python|file 1,file 2,file 3,file 4,file 5,file 6,file 7")
    H.expect_exit(proc, 0)
    assert_fails("EOF", "recvmsg", a:recvmsg(10, 0, 5))
    a:close()
  end

  T["test_" .. kind .. "_python_sends_more_fds_than_taken"] = function()
    local a, proc = py_peer([[
fs = [open("/dev/null") for i in range(40)]
socket.send_fds(s, [b"forty"], [f.fileno() for f in fs])
assert s.recv(10) == b"next"
socket.send_fds(s, [b"one"], [fs[0].fileno()])
assert s.recv(10) == b""
]], kind)
    local before = fos.fdcount()
    local msg = assert_fails("ECTRUNC", "recvmsg", a:recvmsg(100, 10, 10))
    lu.assertStrContains(msg, "dropped")
    lu.assertEquals(fos.fdcount(), before, "the 10 that fitted were closed too")
    assert(a:sendmsg("next"))
    local data, fds = a:recvmsg(100, 10, 10)
    lu.assertEquals(data, "one")
    lu.assertEquals(fds[1]:info().path, "/dev/null")
    fds[1]:close()
    a:close()
    H.expect_exit(proc, 0)
  end

  T["test_" .. kind .. "_python_framed_writer_and_reader"] = function()
    -- a framed peer written from the header layout alone
    local a, proc = py_peer([[
HDR = struct.Struct("<4sBBHIII")
def send_message(data, fds):
    off_d = off_f = 0
    first = True
    while first or off_d < len(data) or off_f < len(fds):
        d = data[off_d:off_d + 65536]
        f = fds[off_f:off_f + 253]
        more = off_d + len(d) < len(data) or off_f + len(f) < len(fds)
        flags = (0 if first else 2) | (1 if more else 0)
        rec = HDR.pack(b"FDPS", 1, flags, len(f), len(d), len(data), len(fds)) + d
        if f:
            socket.send_fds(s, [rec], f)
        else:
            s.sendall(rec)
        off_d += len(d); off_f += len(f); first = False

def recv_exact(n, maxfds):
    buf, fds = b"", []
    while len(buf) < n:
        m, f, flags, _ = socket.recv_fds(s, n - len(buf), maxfds)
        assert flags & socket.MSG_CTRUNC == 0
        assert m, "EOF"
        buf += m; fds += f
    return buf, fds

def recv_message():
    data, fds = b"", []
    while True:
        if s.type == socket.SOCK_SEQPACKET:
            rec, f, flags, _ = socket.recv_fds(s, 20 + 65536, 253)
            h, body = rec[:20], rec[20:]
        else:
            h, f = recv_exact(20, 253)
        magic, ver, flags, nfds, ln, tl, tf = HDR.unpack(h)
        assert magic == b"FDPS" and ver == 1, (magic, ver)
        if s.type != socket.SOCK_SEQPACKET:
            body, f2 = recv_exact(ln, 253) if ln else (b"", [])
            f += f2
        assert len(body) == ln and len(f) == nfds, (len(body), ln, len(f), nfds)
        data += body; fds += f
        if not flags & 1:
            assert len(data) == tl and len(fds) == tf
            return data, fds

data, fds = recv_message()
lines = [os.read(fd, 100).split(b"\n")[0] for fd in fds]
files = []
for i in range(300):
    f = tempfile.TemporaryFile(); f.write(b"py %d\n" % (i + 1)); f.seek(0); files.append(f)
reply = data[::-1] + b"|" + b",".join(lines[:2] + lines[-1:])
send_message(reply, [f.fileno() for f in files])
for fd in fds:
    os.close(fd)
]], kind)
    local data = ("\0abc\255"):rep(30000) -- 150000 bytes: three records
    local fds = H.numbered_fds(260)
    assert(a:send(data, fds, 10))
    H.close_all(fds)
    local reply, got = a:recv(10)
    lu.assertEquals(reply, data:reverse() .. "|file 1,file 2,file 260")
    H.check_numbered(got, 300, "py ")
    H.expect_exit(proc, 0)
    assert_fails("EOF", "recv", a:recv(5))
    a:close()
  end

  T["test_" .. kind .. "_credentials_and_pidfd_before_descriptors"] = function()
    -- python turns on SO_PASSCRED (and SO_PASSPIDFD where the kernel has
    -- it) on our end through a duplicate of it, then sends descriptors: the
    -- credentials message comes first, the pidfd one must be closed
    local a, b = pair()
    local proc = python([[
mine = socket.socket(fileno=4)
mine.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
try:
    mine.setsockopt(socket.SOL_SOCKET, 76, 1)  # SO_PASSPIDFD, Linux 6.5
    pidfd = b"pidfd"
except OSError:
    pidfd = b"nopidfd"
mine.close()
s.sendall(pidfd)
assert s.recv(1) == b"k"  # read apart: a stream would glue the next send to it
fs = [open("/dev/null") for i in range(3)]
socket.send_fds(s, [b"raw"], [f.fileno() for f in fs])
HDR = struct.Struct("<4sBBHIII")
socket.send_fds(s, [HDR.pack(b"FDPS", 1, 0, 3, 6, 6, 3) + b"framed"], [f.fileno() for f in fs])
assert s.recv(10) == b""
]], { [3] = b, [4] = a })
    b:close()
    local mode = a:recvmsg(100, 0, 10)
    lu.assertTrue(mode == "pidfd" or mode == "nopidfd", tostring(mode))
    assert(a:sendmsg("k"))
    local before = fos.fdcount()
    local data, fds = a:recvmsg(100, 3, 10)
    lu.assertEquals(data, "raw")
    lu.assertEquals(#fds, 3)
    for _, f in ipairs(fds) do lu.assertEquals(f:info().path, "/dev/null") end
    H.close_all(fds)
    lu.assertEquals(fos.fdcount(), before, "a pidfd was left open")
    data, fds = a:recv(10)
    lu.assertEquals(data, "framed")
    lu.assertEquals(#fds, 3)
    for _, f in ipairs(fds) do lu.assertEquals(f:info().path, "/dev/null") end
    H.close_all(fds)
    lu.assertEquals(fos.fdcount(), before, "a pidfd was left open")
    a:close()
    H.expect_exit(proc, 0)
  end

  T["test_" .. kind .. "_raw_across_processes"] = function()
    local a, b = pair()
    local proc = H.child([[
      local ch = fdpass.channel(3)
      local data, fds = assert(ch:recvmsg(100, 5, 10))
      local w = fds[1]:file("w")
      w:write(data:upper())
      w:close()
      assert(ch:sendmsg(tostring(#fds), nil, 10))
      os.exit(0)
    ]], { [3] = b })
    b:close()
    local c, d = assert(fdpass.socketpair("stream"))
    assert(a:sendmsg("shout", { c }, 10))
    c:close()
    lu.assertEquals({ a:recvmsg(10, 0, 10) }, { "1", {} })
    H.expect_exit(proc, 0)
    lu.assertEquals({ d:recvmsg(100, 0, 5) }, { "SHOUT", {} })
    assert_fails("EOF", "recvmsg", d:recvmsg(100, 0, 5))
    d:close()
    a:close()
  end
end

T.test_seqpacket_recvmsg_small_buffer_is_emsgsize = function()
  local a, b = fdpass.socketpair("seqpacket")
  local fds = H.numbered_fds(3)
  assert(a:sendmsg(("r"):rep(100), fds))
  assert(a:sendmsg("next", { fds[2] }))
  H.close_all(fds)
  assert_fails("EMSGSIZE", "recvmsg", b:recvmsg(99, 10, 1))
  local data, got = b:recvmsg(99, 10, 1)
  lu.assertEquals(data, "next")
  lu.assertEquals(#got, 1)
  local f = got[1]:file("r")
  lu.assertEquals(f:read("*l"), "file 2")
  f:close()
  a:close()
  b:close()
end

T.test_stream_recvmsg_small_buffer_reads_part = function()
  local a, b = fdpass.socketpair("stream")
  local fds = H.numbered_fds(2)
  assert(a:sendmsg("hello world", fds))
  H.close_all(fds)
  -- a stream has no records: the descriptors come with the first part
  local d1, f1 = b:recvmsg(5, 10, 1)
  lu.assertEquals(d1, "hello")
  H.check_numbered(f1, 2)
  lu.assertEquals({ b:recvmsg(100, 10, 1) }, { " world", {} })
  a:close()
  b:close()
end

T.test_stream_sendmsg_short_write_carries_fds_with_first_part = function()
  local a, b = fdpass.socketpair("stream")
  local big = ("s"):rep(4 * 1024 * 1024)
  local fds = H.numbered_fds(4)
  local n = a:sendmsg(big, fds, 0)
  H.close_all(fds)
  lu.assertTrue(H.is_integer(n), "not an integer: " .. tostring(n))
  lu.assertTrue(n > 0 and n < #big, "sent " .. tostring(n))
  local got, total, with_fds = nil, 0, 0
  for _ = 1, 10000 do
    local data, f = b:recvmsg(1024 * 1024, 253, 0)
    if not data then
      lu.assertEquals(select(3, b:recvmsg(1, 0, 0)), "EAGAIN")
      break
    end
    if #f > 0 then
      lu.assertEquals(total, 0, "descriptors came after the first byte")
      with_fds = with_fds + 1
      got = f
    end
    total = total + #data
  end
  lu.assertEquals(total, n)
  lu.assertEquals(with_fds, 1)
  H.check_numbered(got, 4)
  a:close()
  b:close()
end

T.test_python_zero_length_seqpacket_with_fds = function()
  -- on a seqpacket socket an empty record can carry descriptors: it is
  -- not EOF, and the descriptors are delivered
  local a, proc = py_peer([[
f = open("/dev/null")
socket.send_fds(s, [b""], [f.fileno()])
assert s.recv(10) == b""
]], "seqpacket")
  local data, fds = a:recvmsg(100, 5, 10)
  lu.assertEquals(data, "")
  lu.assertEquals(#fds, 1)
  lu.assertEquals(fds[1]:info().path, "/dev/null")
  fds[1]:close()
  a:close()
  H.expect_exit(proc, 0)
end

T.test_sendmsg_argument_checks = function()
  local a, b = fdpass.socketpair()
  local fds = H.fds(254)
  assert_raises("at most 253 descriptors", a.sendmsg, a, "x", fds)
  H.close_all(fds)
  assert_raises("empty payload", a.sendmsg, a, "")
  local f = H.numbered_fds(1)
  assert_raises("empty payload", a.sendmsg, a, "", f)
  assert_raises("string expected", a.sendmsg, a, nil, f)
  assert_raises("cannot take a descriptor from a string", a.sendmsg, a, "x", { f[1], "3" })
  assert_raises("table expected", a.sendmsg, a, "x", f[1])
  assert_raises("timeout must be nil or >= 0", a.sendmsg, a, "x", nil, -1)
  H.close_all(f)
  assert_fails("EAGAIN", "recvmsg", b:recvmsg(10, 10, 0)) -- nothing went out
  a:close()
  b:close()
end

T.test_recvmsg_argument_checks = function()
  local a, b = fdpass.socketpair()
  assert(a:sendmsg("kept", H.numbered_fds(1)))
  assert_raises("maxfds must be 0 .. 253", b.recvmsg, b, 100, 300)
  assert_raises("maxfds must be 0 .. 253", b.recvmsg, b, 100, 254)
  assert_raises("maxfds must be 0 .. 253", b.recvmsg, b, 100, -1)
  assert_raises("size must be 1 .. 2^30", b.recvmsg, b, 0)
  assert_raises("size must be 1 .. 2^30", b.recvmsg, b, 2 ^ 31)
  assert_raises("number has no integer representation", b.recvmsg, b, 1.5)
  assert_raises("number expected", b.recvmsg, b, 10, "all")
  assert_raises("timeout must be nil or >= 0", b.recvmsg, b, 10, 1, -1)
  assert_raises("fdpass.channel expected", b.recvmsg, "b")
  -- nothing was consumed by the refused calls
  local data, fds = b:recvmsg(100, 253, 1)
  lu.assertEquals(data, "kept")
  H.check_numbered(fds, 1)
  a:close()
  b:close()
end

TestRaw = H.suite(T)

H.run()
