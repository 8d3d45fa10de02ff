-- The luv adapter (fdpass.adapters.luv) with its example server
-- (examples/luv_server.lua) under keep-alive load: spec/stackload.lua.
local lu = require "luaunit"
local H = require "helpers"
local S = require "stackload"

TestAdaptersLuv = H.suite(S.tests(lu, "luv", "luv"))

H.run()
