-- The copas adapter (fdpass.adapters.copas) with its example server
-- (examples/copas_server.lua) under keep-alive load: spec/stackload.lua.
local lu = require "luaunit"
local H = require "helpers"
local S = require "stackload"

TestAdaptersCopas = H.suite(S.tests(lu, "copas", "copas"))

H.run()
