-- A framed receiver (ch:recv) facing a raw peer that writes hand-made or
-- garbage records with ch:sendmsg: every lie about the magic, version,
-- flags, lengths, descriptor counts and continuation, and floods of
-- unsolicited descriptors. Each gives one exact error code, closes every
-- descriptor that arrived, and leaves the channel answering EBROKEN.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local fos = require "fdpass.os"

local KINDS = { "seqpacket", "stream" }
local F_MORE, F_CONT = 1, 2 -- bits of their own: flags add up as they would OR
local unpack = H.unpack

-- A record header; fields default to a single record that carries
-- everything: hdr{ nfds = 2, len = 5 }.
local function hdr(t)
  local len, nfds = t.len or 0, t.nfds or 0
  return (t.magic or "FDPS") .. H.header_fields(t.version or 1, t.flags or 0,
    nfds, len, t.total_len or len, t.total_fds or nfds)
end

local assert_fails = H.assert_fails

-- The receiver's next recv fails with `code` (its message containing
-- `detail`), every descriptor that came is closed at once (not by the
-- collector), and the channel is broken from then on.
local function expect_broken(b, code, detail, timeout, before)
  collectgarbage()
  before = before or fos.fdcount()
  local msg = assert_fails(code, "recv", b:recv(timeout or 1))
  lu.assertEquals(fos.fdcount(), before, "descriptors left open by a failed recv")
  if detail then lu.assertStrContains(msg, detail) end
  local again = assert_fails("EBROKEN", "recv", b:recv(0))
  lu.assertStrContains(again, "an earlier receive failed")
  assert_fails("EBROKEN", "recv", b:recv(1))
  lu.assertEquals(fos.fdcount(), before)
  return msg
end

-- Sends each of `records` ({bytes, fds}) raw, in full.
local function send_raw(a, records)
  for i, r in ipairs(records) do
    local n, msg = a:sendmsg(r[1], r[2], 2)
    lu.assertEquals(n, #r[1], "record " .. i .. ": " .. tostring(msg))
  end
end

-- A new pair of `kind`; the records make(fds) returns (fds: n fresh
-- descriptors, closed once sent) go raw from one end, and the other's recv
-- must then fail with `code`. prepare(b), if given, first sets up the
-- receiving end.
local function expect_refused(kind, n, make, code, detail, prepare)
  local a, b = assert(fdpass.socketpair(kind))
  if prepare then prepare(b) end
  local fds = H.fds(n)
  send_raw(a, make(fds))
  H.close_all(fds)
  expect_broken(b, code, detail)
  a:close()
  b:close()
end

local T = {}

for _, kind in ipairs(KINDS) do
  local function pair()
    return assert(fdpass.socketpair(kind))
  end

  -- One hostile case: `records` sent raw, then recv must fail with code.
  local function case(name, code, detail, make)
    T[("test_%s_%s"):format(kind, name)] = function()
      expect_refused(kind, 300, make, code, detail)
    end
  end

  -- The hand-made records are right when they tell the truth.
  T["test_" .. kind .. "_handmade_records_accepted"] = function()
    local a, b = pair()
    local fds = H.numbered_fds(300)
    local part = {}
    for i = 1, 253 do part[i] = fds[i] end
    local rest = { unpack(fds, 254, 300) }
    send_raw(a, {
      { hdr { nfds = 2, len = 5 } .. "hello", { fds[1], fds[2] } },
      { hdr { flags = F_MORE, nfds = 253, len = 3, total_len = 6, total_fds = 300 } .. "abc", part },
      { hdr { flags = F_CONT, nfds = 47, len = 3, total_len = 6, total_fds = 300 } .. "def", rest },
      { hdr {}, nil },
    })
    local data, got = b:recv(1)
    lu.assertEquals(data, "hello")
    H.check_numbered(got, 2)
    data, got = b:recv(1)
    lu.assertEquals(data, "abcdef")
    lu.assertEquals(#got, 300)
    for i = 1, 300 do lu.assertEquals(got[i]:info().kind, "file") end
    H.close_all(got)
    lu.assertEquals({ b:recv(1) }, { "", {} })
    assert_fails("EAGAIN", "recv", b:recv(0))
    H.close_all(fds)
    a:close()
    b:close()
  end

  case("garbage_bytes", "EPROTO", "bad magic 47455420", function()
    return { { "GET / HTTP/1.1\r\nHost: example\r\n\r\n", nil } }
  end)

  case("garbage_with_descriptors", "EPROTO", "bad magic", function(fds)
    return { { ("\0"):rep(40), { fds[1], fds[2], fds[3] } } }
  end)

  case("bad_magic", "EPROTO", "not an fdpass record", function(fds)
    return { { hdr { magic = "FDPX", nfds = 1, len = 3 } .. "abc", { fds[1] } } }
  end)

  case("version_2", "EPROTO", "record version 2, this side speaks 1", function(fds)
    return { { hdr { version = 2, nfds = 1, len = 3 } .. "abc", { fds[1] } } }
  end)

  case("unknown_flags", "EPROTO", "unknown record flags", function(fds)
    return { { hdr { flags = 4, nfds = 1, len = 1 } .. "x", { fds[1] } } }
  end)

  case("continuation_first", "EPROTO", "continuation record without a first record", function(fds)
    return { { hdr { flags = F_CONT, nfds = 1, len = 1 } .. "x", { fds[1] } } }
  end)

  case("record_over_64k", "EPROTO", "record announces 65537 bytes", function(fds)
    return { { hdr { len = 65537, nfds = 1 } .. ("x"):rep(100), { fds[1] } } }
  end)

  case("record_over_253_fds", "EPROTO", "254 descriptors", function(fds)
    return { { hdr { nfds = 254, len = 1 } .. "x", { unpack(fds, 1, 253) } } }
  end)

  case("fewer_fds_than_announced", "EFDCOUNT", "record announced 3 descriptors, 2 arrived", function(fds)
    return { { hdr { nfds = 3, len = 2 } .. "ab", { fds[1], fds[2] } } }
  end)

  case("more_fds_than_announced", "EFDCOUNT", "record announced 1 descriptors, 3 arrived", function(fds)
    return { { hdr { nfds = 1, len = 2 } .. "ab", { fds[1], fds[2], fds[3] } } }
  end)

  case("fds_none_announced", "EFDCOUNT", "record announced 0 descriptors, 253 arrived", function(fds)
    return { { hdr { len = 2 } .. "ab", { unpack(fds, 1, 253) } } }
  end)

  case("last_record_short_of_total_fds", "EFDCOUNT", "short of the 5 descriptors it announced", function(fds)
    return { { hdr { nfds = 2, len = 1, total_fds = 5 } .. "x", { fds[1], fds[2] } } }
  end)

  case("last_record_short_of_total_bytes", "EPROTO", "short of the 10 bytes it announced", function(fds)
    return { { hdr { nfds = 1, len = 5, total_len = 10 } .. "hello", { fds[1] } } }
  end)

  case("records_carry_more_than_total", "EPROTO", "more than the message announced", function(fds)
    return {
      { hdr { flags = F_MORE, nfds = 253, len = 1, total_len = 2, total_fds = 300 } .. "a",
        { unpack(fds, 1, 253) } },
      { hdr { flags = F_CONT + F_MORE, nfds = 253, len = 1, total_len = 2, total_fds = 300 } .. "b",
        { unpack(fds, 1, 253) } },
    }
  end)

  case("second_record_not_a_continuation", "EPROTO", "does not continue", function(fds)
    return {
      { hdr { flags = F_MORE, nfds = 2, len = 1, total_len = 2, total_fds = 4 } .. "a", { fds[1], fds[2] } },
      { hdr { nfds = 2, len = 1, total_len = 2, total_fds = 4 } .. "b", { fds[3], fds[4] } },
    }
  end)

  case("continuation_changes_totals", "EPROTO", "does not continue", function(fds)
    return {
      { hdr { flags = F_MORE, nfds = 2, len = 1, total_len = 2, total_fds = 4 } .. "a", { fds[1], fds[2] } },
      { hdr { flags = F_CONT, nfds = 2, len = 1, total_len = 2, total_fds = 3 } .. "b", { fds[3], fds[4] } },
    }
  end)

  case("total_over_payload_limit", "EMSGSIZE", "16777217 bytes, the limit is 16777216", function(fds)
    return { { hdr { flags = F_MORE, nfds = 3, len = 1, total_len = 16 * 1024 * 1024 + 1, total_fds = 3 } .. "x",
               { fds[1], fds[2], fds[3] } } }
  end)

  case("huge_totals", "EMSGSIZE", "4294967295", function(fds)
    return { { hdr { flags = F_MORE, nfds = 1, len = 1, total_len = 0xffffffff, total_fds = 1 } .. "x",
               { fds[1] } } }
  end)

  -- Thousands of descriptors nobody asked for, over several records.
  T["test_" .. kind .. "_flood_announced_over_fd_limit"] = function()
    expect_refused(kind, 253, function(fds)
      local recs = {}
      for i = 1, 20 do -- 5060 descriptors, honestly announced: over 4096
        recs[i] = { hdr { flags = (i > 1 and F_CONT or 0) + (i < 20 and F_MORE or 0), nfds = 253,
                          len = 1, total_len = 20, total_fds = 5060 } .. "x", fds }
      end
      return recs
    end, "EMSGSIZE", "message with 5060 descriptors, the limit is 4096")
  end

  T["test_" .. kind .. "_flood_past_announced_total"] = function()
    -- announces 1000, sends 20 records of 253: refused at the fourth, with
    -- the 759 already taken closed
    expect_refused(kind, 253, function(fds)
      local recs = {}
      for i = 1, 20 do
        recs[i] = { hdr { flags = (i > 1 and F_CONT or 0) + F_MORE, nfds = 253, len = 1,
                          total_len = 20, total_fds = 1000 } .. "x", fds }
      end
      return recs
    end, "EPROTO", "more than the message announced")
  end

  T["test_" .. kind .. "_flood_unannounced"] = function()
    -- records that announce no descriptors and carry 253 each
    expect_refused(kind, 253, function(fds)
      local recs = {}
      for i = 1, 16 do
        recs[i] = { hdr { flags = (i > 1 and F_CONT or 0) + (i < 16 and F_MORE or 0), len = 1,
                          total_len = 16 } .. "x", fds }
      end
      return recs
    end, "EFDCOUNT", "record announced 0 descriptors, 253 arrived")
  end

  T["test_" .. kind .. "_flood_under_a_lowered_limit"] = function()
    expect_refused(kind, 253, function(fds)
      return {
        { hdr { flags = F_MORE, nfds = 253, len = 0, total_len = 0, total_fds = 506 }, fds },
        { hdr { flags = F_CONT, nfds = 253, len = 0, total_len = 0, total_fds = 506 }, fds },
      }
    end, "EMSGSIZE", "message with 506 descriptors, the limit is 500", function(b)
      b:limits({ max_fds = 500 })
    end)
  end

  T["test_" .. kind .. "_hostile_process"] = function()
    -- a real process that sends garbage with descriptors, then keeps
    -- pushing descriptors until the receiver hangs up
    local a, proc = H.peer([[
      local f = assert(io.open("/dev/null"))
      local list = {}
      for i = 1, 200 do list[i] = f end
      assert(ch:sendmsg("NOT A RECORD, JUST NOISE", list, 5))
      for i = 1, 10000 do
        local n, msg, code = ch:sendmsg("more noise", list, 5)
        if not n then os.exit(code == "EPIPE" and 0 or 4) end
      end
      os.exit(5)
    ]], kind)
    expect_broken(a, "EPROTO", "bad magic 4e4f5420", 10)
    a:close()
    H.expect_exit(proc, 0)
  end
end

-- Stream-only: records cut or run together where a seqpacket keeps them
-- whole.

T.test_stream_header_dribbled_byte_by_byte = function()
  local a, b = assert(fdpass.socketpair("stream"))
  local fds = H.numbered_fds(3)
  local rec = hdr { nfds = 3, len = 4 } .. "data"
  a:sendmsg(rec:sub(1, 1), fds)
  H.close_all(fds)
  for i = 2, #rec do
    assert_fails("EAGAIN", "recv", b:recv(0))
    lu.assertEquals(a:sendmsg(rec:sub(i, i)), 1)
  end
  local data, got = b:recv(0)
  lu.assertEquals(data, "data")
  H.check_numbered(got, 3)
  a:close()
  b:close()
end

T.test_stream_peer_closes_inside_header = function()
  local a, b = assert(fdpass.socketpair("stream"))
  local fds = H.fds(2)
  a:sendmsg(hdr({ nfds = 2, len = 1 }):sub(1, 11), fds)
  H.close_all(fds)
  local before = fos.fdcount()
  assert_fails("EAGAIN", "recv", b:recv(0))
  lu.assertEquals(fos.fdcount(), before + 2, "the partial record's descriptors are held")
  a:close()
  expect_broken(b, "ETRUNC", "in the middle of a message", 1, before - 1)
  b:close()
end

T.test_stream_header_promises_more_than_comes = function()
  local a, b = assert(fdpass.socketpair("stream"))
  local fds = H.fds(2)
  send_raw(a, { { hdr { nfds = 2, len = 100 } .. ("z"):rep(10), fds } })
  H.close_all(fds)
  local before = fos.fdcount()
  assert_fails("ETIMEDOUT", "recv", b:recv(0.05)) -- waits for the rest, keeps the part
  lu.assertEquals(fos.fdcount(), before + 2, "the partial record's descriptors are held")
  a:close()
  expect_broken(b, "ETRUNC", "in the middle of a message", 1, before - 1)
  b:close()
end

T.test_stream_payload_longer_than_announced = function()
  -- the extra bytes are taken for the next header
  local a, b = assert(fdpass.socketpair("stream"))
  local fds = H.numbered_fds(1)
  send_raw(a, { { hdr { nfds = 1, len = 5 } .. "hello" .. "world, and more noise", fds } })
  H.close_all(fds)
  local data, got = b:recv(1)
  lu.assertEquals(data, "hello")
  H.check_numbered(got, 1)
  expect_broken(b, "EPROTO", "bad magic 776f726c")
  a:close()
  b:close()
end

T.test_stream_fds_on_two_header_parts_over_room = function()
  -- 253 descriptors on the first half of a header and 253 on the second:
  -- more than one record may carry, the kernel is told to drop the rest
  local h = hdr { nfds = 253, len = 1 }
  expect_refused("stream", 253, function(fds)
    return { { h:sub(1, 10), fds }, { h:sub(11) .. "x", fds } }
  end, "ECTRUNC", "dropped")
end

-- Seqpacket-only: record boundaries make lies about length visible.

T.test_seqpacket_short_record = function()
  expect_refused("seqpacket", 3, function(fds)
    return { { "FDPS\1", fds } }
  end, "EPROTO", "record of 5 bytes is shorter than a header")
end

T.test_seqpacket_less_payload_than_announced = function()
  expect_refused("seqpacket", 1, function(fds)
    return { { hdr { nfds = 1, len = 100 } .. ("z"):rep(10), fds } }
  end, "EPROTO", "record announces 100 bytes, carries 10")
end

T.test_seqpacket_more_payload_than_announced = function()
  expect_refused("seqpacket", 1, function(fds)
    return { { hdr { nfds = 1, len = 5 } .. ("z"):rep(50), fds } }
  end, "EPROTO", "record announces 5 bytes, carries 50")
end

T.test_seqpacket_record_over_receive_buffer = function()
  expect_refused("seqpacket", 2, function(fds)
    return { { hdr { nfds = 2, len = 65536 } .. ("z"):rep(70000), fds } }
  end, "EMSGSIZE", "record larger than")
end

T.test_seqpacket_empty_record_with_fds_from_python = function()
  -- an empty record must not pass for EOF, nor its descriptors leak
  local a, b = assert(fdpass.socketpair("seqpacket"))
  local proc = assert(fdpass.spawn({ "python3", "-c", [[
import socket
s = socket.socket(fileno=3)
s.settimeout(10)
fs = [open("/dev/null") for i in range(5)]
socket.send_fds(s, [b""], [f.fileno() for f in fs])
assert s.recv(10) == b""
]] }, { fds = { [3] = b } }))
  b:close()
  expect_broken(a, "EPROTO", "record of 0 bytes is shorter than a header", 10)
  a:close()
  H.expect_exit(proc, 0)
end

TestHostile = H.suite(T)

H.run()
