--- The loop kit: poll(2) over fdpass objects and integers, and waits that
-- yield to a host loop's sleep (`loop.waiter`, e.g. ngx.sleep) instead of
-- blocking it; and `epoll()`, one descriptor standing for many (each
-- watched with a Lua key, which `wait` returns), what the upgrader hands
-- to a host loop.
-- @module fdpass.loop
local fdpass = require "fdpass"

local M = { poll = fdpass.poll, wait_readable = fdpass.wait_readable, wait_writable = fdpass.wait_writable,
  epoll = require("fdpass.core").epoll }

-- `waiter` lives on fdpass until the wait functions move here.
setmetatable(M, {
  __index = function(_, k) if k == "waiter" then return fdpass.waiter end end,
  __newindex = function(t, k, v) if k == "waiter" then fdpass.waiter = v else rawset(t, k, v) end end,
})
return M
