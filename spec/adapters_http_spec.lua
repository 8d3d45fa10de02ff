-- The http adapter (fdpass.adapters.http) with its example server
-- (examples/lua_http_server.lua) under keep-alive load: spec/stackload.lua.
local lu = require "luaunit"
local H = require "helpers"
local S = require "stackload"

TestAdaptersHttp = H.suite(S.tests(lu, "http", "lua_http"))

H.run()
