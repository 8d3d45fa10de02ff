-- luacheck configuration, read by `make lint` (which runs `luacheck .`).
--
-- Every Lua file here runs unchanged on Lua 5.1, 5.3, 5.4 and LuaJIT, so
-- the standard is "min": only what all of them define. A 5.3-only library
-- call (string.pack, math.type, table.move, utf8) or a 5.1-only one
-- (unpack, setfenv, loadstring) is flagged where it is used. A use guarded
-- at run time says so on its own line, which leaves every other use of the
-- same name checked:
--   local unpack = table.unpack or unpack -- luacheck: read globals table.unpack unpack
-- Syntax that only newer versions parse (goto, //, bit operators, <close>)
-- is luacheck's blind spot: `make lint` compiles every file with luac5.1
-- for that (tools/lint-syntax.sh).
std = "min"

-- What `luacheck .` looks at: Lua sources, the scripts without an
-- extension, the rockspec and the tools' own configuration files.
include_files = { "**/*.lua", "bin/*", "rockspec/*.rockspec", ".luacheckrc", "config.ld" }
-- Build outputs and local LuaRocks trees are not ours.
exclude_files = { "build*/**", "lua_modules/**", "luarocks/**", "fdpass/**", ".luarocks/**" }

-- luaunit finds the test classes by their global names (Test...), and the
-- spec files set nothing else global: setting any other is still flagged.
-- luacheck's built-in default adds busted's globals to *_spec.lua; these
-- specs use luaunit, so that is taken back.
files["spec/**/*_spec.lua"] = { std = "min", ignore = { "111/Test%u.*" } }

-- Handlers run inside nginx (OpenResty), which is LuaJIT with `ngx`.
files["examples/nginx/**/*.lua"] = { std = "ngx_lua" }

-- LDoc's configuration sets its options as globals.
files["config.ld"] = { std = "min+ldoc" }
