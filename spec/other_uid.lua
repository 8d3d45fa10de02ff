-- Running a child as another uid (nobody) from any checkout. The checkout
-- may sit where nobody cannot read it (a clone under root's 0700 home, a
-- mktemp directory), so the child runs from a copy of its own: the Lua
-- modules and the fdpass.core this process loaded, in a 0755 directory
-- under /tmp, one per process, removed by cleanup(). Plain Lua (no
-- luaunit): spec/helpers.lua and the programs the specs start use it.
local M = {}

local dir -- this process's copy, made on first use

local function sh(cmd) -- first line of its output
  local p = assert(io.popen(cmd))
  local line = p:read("*l")
  p:close()
  return line
end

local function quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- package.searchpath, which Lua 5.1 lacks: the file `name` loads from.
local function search(name, path)
  local file = name:gsub("%.", "/")
  for template in path:gmatch("[^;]+") do
    local f = template:gsub("%?", file)
    local h = io.open(f)
    if h then h:close() return f end
  end
  return nil
end

--- True when this process can start one as nobody (it is root).
function M.possible()
  return sh("id -u") == "0"
end

--- The argv prefix that runs a command as nobody:nogroup, in the copy's
-- directory, with only the copy on its Lua paths; or nil and why not.
function M.prefix()
  if not M.possible() then return nil, "needs root to run a peer as nobody" end
  if not dir then
    local lua_file = search("fdpass", package.path)
    local core = search("fdpass.core", package.cpath)
    if not lua_file or not core then return nil, "fdpass or fdpass.core not found on this process's paths" end
    local lua_dir = lua_file:gsub("/?fdpass%.lua$", "")
    if lua_dir == "" then lua_dir = "." end
    local d = sh("mktemp -d /tmp/fdpass-other-uid.XXXXXX")
    if not d then return nil, "mktemp -d failed" end
    local q = quote(d)
    local ok = os.execute(("mkdir -p %s/lib/fdpass && cp -R %s %s/lua && cp %s %s/lib/fdpass/core.so"
      .. " && chmod -R a+rX %s"):format(q, quote(lua_dir), q, quote(core), q, q))
    if ok ~= true and ok ~= 0 then
      os.execute("rm -rf " .. quote(d))
      return nil, "could not copy the modules for nobody into " .. d
    end
    dir = d
  end
  local lpath, cpath = dir .. "/lua/?.lua;" .. dir .. "/lua/?/init.lua", dir .. "/lib/?.so"
  local prefix = { "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "env", "-C", dir,
    "LUA_PATH=" .. lpath, "LUA_CPATH=" .. cpath }
  local v = _VERSION:match("^Lua 5%.(%d)$")
  if v and v ~= "1" then -- 5.2+ read LUA_PATH_5_x first: the suite's point at the checkout
    prefix[#prefix + 1] = ("LUA_PATH_5_%s=%s"):format(v, lpath)
    prefix[#prefix + 1] = ("LUA_CPATH_5_%s=%s"):format(v, cpath)
  end
  return prefix
end

--- Removes this process's copy (safe to call when there is none).
function M.cleanup()
  if dir then os.execute("rm -rf " .. quote(dir)) end
  dir = nil
end

return M
