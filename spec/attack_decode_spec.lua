-- Issue 10, item 6: decoding costs memory in proportion to the bytes read.
-- A hostile 16 MiB state (under the default 64 MiB max_state) made of
-- tables that each announce 1,024 pairs and carry `false = nil` pairs (2
-- bytes each, storing nothing) must not raise the heap by 4x its size.
-- The heap is Lua's own count with the collector stopped around the call:
-- everything decode allocated and still holds (a table that grows frees
-- its old part at once, which can only hide one table's old part).
local lu = require "luaunit"
local H = require "helpers"
local codec = require "fdpass.codec"

local T = {}

local MiB = 1024 * 1024

-- 0xFD 1, then a table of `count` pairs: integer key i -> a table that
-- announces 1,024 pairs, each false = nil.
local function hostile_state(size)
  local sub = "\6" .. H.le32(1024) .. ("\1\0"):rep(1024)
  local per = 9 + #sub
  local count = math.floor((size - 7) / per)
  local parts = { "\253\1\6", H.le32(count) }
  for i = 1, count do parts[#parts + 1] = "\3" .. H.le32(i) .. H.le32(0) .. sub end
  return table.concat(parts), count
end

local function heap_of_decode(s)
  collectgarbage()
  collectgarbage()
  local before = collectgarbage("count")
  collectgarbage("stop")
  local v, err = codec.decode(s)
  local grew = (collectgarbage("count") - before) * 1024
  collectgarbage("restart")
  return grew, v, err
end

function T.test_hostile_16mib_state_costs_under_4x()
  local s, count = hostile_state(16 * MiB)
  lu.assertTrue(#s > 15 * MiB and #s <= 16 * MiB)
  local grew, _, err = heap_of_decode(s)
  lu.assertTrue(grew < 4 * #s,
    ("decoding %.1f MiB (%d tables announcing 1,024 pairs) raised the heap by %.1f MiB (%.1fx; bound 4x)%s"):format(
      #s / MiB, count, grew / MiB, grew / #s, err and (": " .. err) or ""))
end

-- The honest case still decodes: a table of as many pairs as it announces.
function T.test_honest_table_decodes()
  local t = {}
  for i = 1, 5000 do t["k" .. i] = i end
  local v = assert(codec.decode(codec.encode(t)))
  lu.assertEquals(v.k4999, 4999)
end

TestAttackDecode = H.suite(T)
H.run()
