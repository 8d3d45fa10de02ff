-- Writes PREFIX/nginx.conf from examples/nginx/nginx.conf.in, and the
-- temp directories it names, for `nginx -p PREFIX -c PREFIX/nginx.conf`.
--
-- usage: lua5.4 examples/nginx/conf.lua PREFIX PORT COMPANION CONTROL
--   PREFIX    an absolute directory (created if missing) for everything nginx writes
--   PORT      nginx listens on 127.0.0.1:PORT
--   COMPANION where examples/nginx/companion.lua listens ("@name" or a path)
--   CONTROL   the control socket of an app run with fdpass.upgrade
--             (examples/http_server.lua), which /upgrade upgrades
-- Environment: NGINX_MODULES (default /usr/lib/nginx/modules, Debian's).
local prefix, port, companion, control = arg[1], tonumber(arg[2]), arg[3], arg[4]
if not (prefix and prefix:sub(1, 1) == "/" and port and companion and control) then
  io.stderr:write("usage: conf.lua /ABSOLUTE/PREFIX PORT COMPANION CONTROL\n")
  os.exit(2)
end

local function sh(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*l")
  p:close()
  return out
end

-- The tree holding this script: the handlers and the module come from it.
local script = arg[0]
if script:sub(1, 1) ~= "/" then script = sh("pwd") .. "/" .. script end
local root = script:match("^(.*)/examples/nginx/[^/]*$")
if not root then
  io.stderr:write("conf.lua: run it as .../examples/nginx/conf.lua\n")
  os.exit(2)
end

-- Started as root, nginx would run its workers as nobody; a control socket
-- answers only its own uid (and root), so workers take the uid that runs
-- the app. Not root, nginx cannot switch and keeps ours.
local user = "# workers keep the uid nginx is started with"
if sh("id -u") == "0" then user = "user root root;  # the uid that runs the app: its control socket takes no other" end

local vars = {
  PREFIX = prefix, PORT = tostring(port), COMPANION = companion, CONTROL = control,
  ROOT = root, MODULES = os.getenv("NGINX_MODULES") or "/usr/lib/nginx/modules", USER = user,
}
local f = assert(io.open(root .. "/examples/nginx/nginx.conf.in"))
local text = f:read("*a")
f:close()
text = text:gsub("%${([%w_]+)}", function(name)
  return vars[name] or error("nginx.conf.in: unknown ${" .. name .. "}")
end)

local function q(s) return "'" .. s:gsub("'", "'\\''") .. "'" end
for _, d in ipairs { "", "/tmp", "/tmp/body", "/tmp/proxy", "/tmp/fastcgi", "/tmp/uwsgi", "/tmp/scgi" } do
  os.execute("mkdir -p " .. q(prefix .. d))
end
local out = assert(io.open(prefix .. "/nginx.conf", "w"))
out:write(text)
out:close()
print(prefix .. "/nginx.conf")
