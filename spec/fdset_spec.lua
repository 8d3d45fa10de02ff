-- fd sets: ch:recv(timeout, "set") and ch:recvmsg(..., "set") give one
-- object that owns every descriptor of a message; and fdpass.close_all.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"
local fos = require "fdpass.os"

-- <close> is Lua 5.4 syntax, compiled there only (H.lua54): a set held in a
-- to-be-closed variable is closed when the block ends.
local CLOSE_SET = H.lua54([[
local fos = require "fdpass.os"
  local lu, fdpass, a, b, files, base = ...
  assert(a:send("m", files))
  do
    local _, s <close> = b:recv(2, "set")
    lu.assertEquals(fos.fdcount(), base + 5)
  end
  lu.assertEquals(fos.fdcount(), base)
]], "fdset_spec.lua: <close> set")

local function same_file(a, b)
  local ia, ib = fdpass.info(a), fdpass.info(b)
  return ia.path == ib.path and ia.kind == ib.kind
end

TestFdSet = H.suite {
  test_a_set_holds_the_message_descriptors_in_order = function()
    local a, b = assert(fdpass.socketpair())
    local files = H.fds(3)
    local pipe_r, pipe_w = assert(fos.pipe())
    assert(a:send("m", { files[1], pipe_r, pipe_w }))
    local data, set = b:recv(2, "set")
    lu.assertEquals(data, "m")
    lu.assertEquals(tostring(set), "fdpass.fdset (3)")
    lu.assertEquals(#set, 3)
    lu.assertTrue(same_file(set[1], files[1]))
    lu.assertEquals(fdpass.info(set[2]).kind, "pipe")
    lu.assertTrue(fdpass.info(set[3]).cloexec)
    lu.assertNil(set[0])
    lu.assertNil(set[4])
    lu.assertEquals(set:close(), 3)
    lu.assertEquals(set:close(), 0) -- nothing left: closing again is harmless
    lu.assertNil(set[1])
    H.close_all(files)
    pipe_r:close(); pipe_w:close(); a:close(); b:close()
  end,

  test_take_hands_one_descriptor_over_as_an_fd_object = function()
    local a, b = assert(fdpass.socketpair("stream"))
    local r, w = assert(fos.pipe())
    assert(a:send("m", { w, w }))
    local _, set = b:recv(2, "set") -- luacheck: ignore 231 (dropped below for the collector)
    local mine = set:take(2)
    lu.assertNil(set[2])
    lu.assertErrorMsgContains("was taken or closed", set.take, set, 2)
    lu.assertErrorMsgContains("index out of range", set.take, set, 3)
    lu.assertEquals(set:close(), 1) -- the taken one is no longer the set's
    assert(mine:write("through"))
    mine:close()
    w:close()
    lu.assertEquals(r:read(), "through")
    r:close(); a:close(); b:close()
  end,

  test_collected_and_to_be_closed_sets_close_what_they_hold = function()
    local a, b = assert(fdpass.socketpair())
    local files = H.fds(5)
    collectgarbage()
    local base = fos.fdcount()
    assert(a:send("m", files))
    local _, set = b:recv(2, "set") -- luacheck: ignore 231
    lu.assertEquals(fos.fdcount(), base + 5)
    set = nil -- drop the only reference: the collector closes the set
    collectgarbage()
    collectgarbage()
    lu.assertEquals(fos.fdcount(), base)
    if not CLOSE_SET then -- the collected half ran; the <close> half cannot here
      H.close_all(files)
      a:close(); b:close()
      H.skip(H.NO_CLOSE)
    end
    CLOSE_SET(lu, fdpass, a, b, files, base)
    H.close_all(files)
    a:close(); b:close()
  end,

  test_recvmsg_gives_a_set_too_and_an_empty_one_without_descriptors = function()
    local a, b = assert(fdpass.socketpair())
    local files = H.fds(253)
    assert(a:sendmsg("raw", files))
    local data, set = b:recvmsg(16, 253, 2, "set")
    lu.assertEquals(data, "raw")
    lu.assertEquals(#set, 253)
    lu.assertEquals(set:close(), 253)
    assert(a:send("no fds"))
    local _, empty = b:recv(2, "set")
    lu.assertEquals(#empty, 0)
    lu.assertEquals(empty:close(), 0)
    lu.assertErrorMsgContains("invalid option 'sets'", b.recv, b, 0, "sets")
    H.close_all(files)
    a:close(); b:close()
  end,

  test_a_5000_descriptor_message_as_one_set = function()
    fos.nofile(select(2, fos.nofile()))
    local a, b = assert(fdpass.socketpair())
    b:limits { max_fds = 5000 }
    local base_file = H.tempfile("x")
    local fds = {}
    for i = 1, 5000 do fds[i] = base_file end
    local sent = a:send("big", fds, 0) -- what the buffer cannot take stays queued
    lu.assertTrue(sent or a:pending() == 1)
    local data, set
    for _ = 1, 100 do
      data, set = b:recv(0.05, "set")
      if data then break end
      a:flush(0)
    end
    lu.assertEquals(data, "big")
    lu.assertEquals(#set, 5000)
    lu.assertEquals(set:close(), 5000)
    base_file:close()
    a:close(); b:close()
  end,

  test_close_all_closes_integers_and_fd_objects = function()
    local files = H.fds(3)
    local n = fdpass.dup(files[1]):detach()
    lu.assertEquals(fdpass.close_all { files[1], n, files[2] }, 3)
    lu.assertErrorMsgContains("attempt to use a closed fdpass.fd", files[1].fileno, files[1])
    lu.assertEquals(fdpass.info(n), nil) -- closed: info fails
    lu.assertEquals(fdpass.close_all { files[1] }, 0) -- already closed: skipped
    lu.assertErrorMsgContains("integers and fdpass.fd objects expected", fdpass.close_all, { "x" })
    files[3]:close()
  end,
}

H.run()
