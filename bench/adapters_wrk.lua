-- wrk against each adapter's example server through 10 upgrades
-- (alternating SIGHUP and the control socket), on every Lua the stack has
-- and fdpass.core is built for: requests, socket errors, non-2xx, p99.
-- The figures of issue 11's closing note. About 10 s per stack and Lua.
-- usage (from the top directory, after `make` for each Lua wanted):
--   LUA_PATH="lua/?.lua;spec/?.lua;;" LUA_CPATH="build/lua5.4/?.so;;" lua5.4 bench/adapters_wrk.lua [CONNS=20]
local S = require "stackload"

local conns = tonumber(arg[1]) or 20
local STACKS = {
  { "http", "examples/lua_http_server.lua", { "lua5.1", "luajit" } },
  { "copas", "examples/copas_server.lua", { "lua5.1", "luajit" } },
  { "luv", "examples/luv_server.lua", { "lua5.1", "lua5.3", "lua5.4", "luajit" } },
}
local DIR = { ["lua5.1"] = "lua5.1", ["lua5.3"] = "lua5.3", ["lua5.4"] = "lua5.4", luajit = "luajit" }

print(("| stack | Lua | upgrades | requests | errors | non-2xx | p99 ms | handed over, cut |"))
print("|---|---|---|---|---|---|---|---|")
for _, st in ipairs(STACKS) do
  for _, lua in ipairs(st[3]) do
    local built = io.open(("%s/%s/fdpass/core.so"):format(S.build, DIR[lua]))
    if built then
      built:close()
      S.lua_for = function() return lua end
      local r = S.run(st[1], st[2], { upgrades = 10, conns = 0, wrk = conns, pause = 0.5 })
      local handed, cut = 0, 0
      for _, d in ipairs(r.done) do handed, cut = handed + d.handed, cut + d.cut end
      print(("| %s | %s | %d | %d | %d | %d | %.2f | %d, %d |%s"):format(st[1], lua, #r.pids - 1, r.wrk.requests,
        r.wrk.errors, r.wrk.non2xx, r.wrk.p99_ms, handed, cut, r.failure and (" " .. r.failure) or ""))
    end
  end
end
