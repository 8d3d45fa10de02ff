-- A stranger on the control socket (an attack spec runs it): for SECONDS
-- it connects again and again, sends junk, holds up to 64 connections open
-- and closes the oldest; it prints how many connections it made.
-- usage: lua spec/adapters/stranger.lua CONTROL_ADDR SECONDS
local fdpass = require "fdpass"
local fos = require "fdpass.os"
local addr, seconds = arg[1], tonumber(arg[2]) or 2
local held, made = {}, 0
local stop = fos.monotonic() + seconds
while fos.monotonic() < stop do
  local ch = fdpass.connect(addr, 0.2)
  if ch then
    made = made + 1
    ch:send(string.rep("\255", 100), nil, 0)
    held[#held + 1] = ch
    if #held > 64 then table.remove(held, 1):close() end
  end
end
for _, ch in ipairs(held) do ch:close() end
print("stranger: connections=" .. made)
