-- Writes the seed corpus of the fuzz targets: a handful of small valid
-- inputs each (the layouts are described at the top of each fuzz_*.c).
-- Run from the top directory after `make`: `make fuzz-corpus`.
local core = require "fdpass.core"
local encode = core.encode

local function write(target, name, bytes)
  local dir = "fuzz/corpus/" .. target
  os.execute("mkdir -p " .. dir)
  local f = assert(io.open(dir .. "/" .. name, "wb"))
  f:write(bytes)
  f:close()
end

-- ---- fuzz_records ----------------------------------------------------------

-- `n` as `width` bytes, least significant first (string.pack is 5.3+).
local function le(n, width)
  local out = ""
  for _ = 1, width do
    out = out .. string.char(n % 256)
    n = math.floor(n / 256)
  end
  return out
end

local MORE, CONT = 1, 2
local function header(flags, nfds, len, total_len, total_fds)
  return "FDPS" .. le(1, 1) .. le(flags, 1) .. le(nfds, 2) .. le(len, 4) .. le(total_len, 4) .. le(total_fds, 4)
end
-- One message in one record.
local function record(payload, nfds)
  return header(0, nfds, #payload, #payload, nfds) .. payload
end
-- One write: `nfds` /dev/null attached; `fill` bytes of (ctl >> 4) * 17 after.
-- The bit fields of the control bytes never overlap, so + sets them (the
-- bit operators are 5.3+).
local function write_op(bytes, nfds, fill, fillsel)
  local ctl = (nfds < 3 and nfds or 3) + (fill and 4 or 0) + (#bytes > 255 and 8 or 0) + (fillsel or 0) * 16
  local out = string.char(ctl)
  if nfds >= 3 then out = out .. string.char(nfds) end
  if fill then out = out .. le(fill, 2) end
  out = out .. (#bytes > 255 and le(#bytes, 2) or string.char(#bytes))
  return out .. bytes
end
local STREAM, SEQPACKET, INTERLEAVE, PASSCRED, LOWNOFILE = 0, 1, 2, 16, 32
local function limits(n) return n * 4 end

local R = "fuzz_records"
write(R, "stream-empty", string.char(STREAM) .. write_op(record("", 0), 0))
write(R, "stream-hello-2fds", string.char(STREAM) .. write_op(record("hello", 2), 2))
write(R, "seqpacket-hello-2fds", string.char(SEQPACKET) .. write_op(record("hello", 2), 2))
write(R, "seqpacket-two-records", string.char(SEQPACKET + INTERLEAVE)
  .. write_op(header(MORE, 1, 3, 5, 2) .. "abc", 1)
  .. write_op(header(CONT, 1, 2, 5, 2) .. "de", 1)
  .. write_op(record("next", 0), 0))
local h = header(0, 1, 4, 4, 1)
write(R, "stream-split-header", string.char(STREAM + INTERLEAVE)
  .. write_op(h:sub(1, 7), 1) .. write_op(h:sub(8) .. "da", 0) .. write_op("ta", 0))
write(R, "stream-two-messages", string.char(STREAM)
  .. write_op(record(string.rep("x", 300), 3), 3) .. write_op(record("y", 0), 0))
-- A full-size record: header and one byte, then 65535 filler bytes.
write(R, "seqpacket-full-record", string.char(SEQPACKET)
  .. write_op(header(0, 0, 65536, 65536, 0) .. "z", 0, 65535, 3))
write(R, "seqpacket-oversized-record", string.char(SEQPACKET)
  .. write_op(header(0, 0, 65535, 65535, 0) .. "zz", 0, 65535, 3))
write(R, "stream-bad-magic", string.char(STREAM) .. write_op("FDPX" .. record("", 0):sub(5), 1))
write(R, "seqpacket-over-limits", string.char(SEQPACKET + limits(1)) .. write_op(record(string.rep("q", 120), 4), 4))
write(R, "stream-passcred-limits3", string.char(STREAM + PASSCRED + limits(3))
  .. write_op(header(MORE, 253, 1, 2, 254) .. "a", 253) .. write_op(header(CONT, 1, 1, 2, 254) .. "b", 1))
write(R, "seqpacket-low-nofile", string.char(SEQPACKET + LOWNOFILE) .. write_op(record("many", 40), 40))
write(R, "seqpacket-fdcount-lie", string.char(SEQPACKET) .. write_op(record("ab", 2), 1))
write(R, "seqpacket-empty-records", string.char(SEQPACKET + INTERLEAVE)
  .. write_op("", 0) .. write_op(record("after", 0), 0))

-- ---- fuzz_codec ------------------------------------------------------------

local C = "fuzz_codec"
-- "int" is the smallest 64-bit integer where Lua has integers (5.3+), and
-- the float -2^63 elsewhere.
local values = {
  ["nil"] = nil, ["true"] = true, ["int"] = -9223372036854775807 - 1, ["float"] = -0.0,
  ["nan"] = 0 / 0, ["string"] = "fdpass\0bytes", ["array"] = { 1, 2, 3, "four", 5.5 },
  ["nested"] = { a = { b = { c = { d = {} } } }, [true] = false, [1.5] = "x" },
  ["hello"] = { t = "HELLO", versions = { 1 }, pid = 1234, token = "0123abcd" },
  ["state"] = { t = "STATE", state = { served = 71483, sessions = { "a", "b" } } },
}
write(C, "nil", encode(nil))
for name, v in pairs(values) do write(C, name, encode(v)) end

-- ---- fuzz_handshake ----------------------------------------------------------

local H = "fuzz_handshake"
local function mode(seqpacket, split, nfds, spread)
  return string.char((seqpacket and 1 or 0) + split * 2 + nfds * 16 + (spread and 128 or 0))
end
local char = { kind = "char" }
write(H, "hello", mode(true, 0, 0) .. encode { t = "HELLO", versions = { 1 }, pid = 4321, token = "cafe" })
write(H, "welcome-stderr", mode(false, 0, 1) .. encode { t = "WELCOME", pid = 4320, generation = 3 })
write(H, "refuse", mode(true, 5, 0) .. encode { t = "REFUSE", reason = "bad token" })
write(H, "fds", mode(false, 4, 3, true) .. encode {
  t = "FDS", names = { "http", "http", "admin" }, ids = { char, char, { kind = "socket" } } })
write(H, "state", mode(true, 3, 0) .. encode { t = "STATE", state = { served = 10, note = string.rep("s", 100) } })
write(H, "conn", mode(false, 1, 1)
  .. encode { t = "CONN", name = "http", buffered = "GET / HTTP/1.1\r\n", meta = { id = 7 } })
write(H, "done", mode(true, 0, 0) .. encode { t = "DONE" })
write(H, "commit", mode(false, 7, 0) .. encode { t = "COMMIT" })
write(H, "not-encoded", mode(true, 2, 2, true) .. "plain bytes")
print("corpus written to fuzz/corpus/")
