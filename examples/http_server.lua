-- An HTTP/1.1 keep-alive server that upgrades itself with fdpass.upgrade:
-- on SIGHUP or SIGUSR2, or on a request to its control socket
-- (bin/fdpass-upgrade), it starts a new copy of itself, hands over its
-- listeners, its state (the request counter) and then every live
-- connection at a request boundary, and leaves. No client notices.
--
-- usage: lua5.4 examples/http_server.lua PORT CONTROL_ADDR [PIDFILE]
--   PORT 0 picks a free port; CONTROL_ADDR "@name" or a path.
-- Every request is answered with "pid GENERATION GREETING N" (GREETING is
-- "served" unless HTTP_SERVER_CONFIG names a file that says otherwise).
local fos = require "fdpass.os"
local net = require "fdpass.net"
local loop = require "fdpass.loop"
local upgrade = require "fdpass.upgrade"
local systemd = require "fdpass.systemd"

local port, control_addr, pidfile = tonumber(arg[1]), arg[2], arg[3]
assert(port and control_addr, "usage: http_server.lua PORT CONTROL_ADDR [PIDFILE]")
local me = fos.getpid()
local function log(msg) io.stderr:write(("[%d] %s\n"):format(me, msg)) end

-- Configuration, read at every start: a new copy with a broken one refuses
-- the handover (NAK) and the old process goes on serving with its own.
-- HTTP_SERVER_CONFIG names a file of "greeting = text" lines (optional).
local function load_config()
  local path = os.getenv("HTTP_SERVER_CONFIG")
  if not path then return { greeting = "served" } end
  local f, err = io.open(path)
  if not f then return nil, "config: " .. err end
  local text = f:read("*a")
  f:close()
  local greeting = text:match("^%s*greeting%s*=%s*(%S+)%s*$")
  if not greeting then return nil, "config: " .. path .. ": expected one line 'greeting = word'" end
  return { greeting = greeting }
end

local config, config_err = load_config()
local listener -- fd object
local served, handed = 0, 0 -- requests served; the count the handover state carried
local conns = {} -- fd object -> { fd =, buf = unhandled bytes, out = pending bytes }

local function stats() -- the control socket's "stats" command
  local n = 0
  for _ in pairs(conns) do n = n + 1 end
  collectgarbage() -- count what is held, not what waits for the collector
  local status = io.open("/proc/self/status")
  local rss = status and tonumber(status:read("*a"):match("VmRSS:%s*(%d+)")) or 0
  if status then status:close() end
  return { served = served, conns = n, fdcount = fos.fdcount(), rss_kb = rss,
    lua_kb = collectgarbage("count"), port = tonumber(listener:info().addr:match(":(%d+)$")) }
end

-- Under systemd's socket activation (FileDescriptorName=http, and
-- optionally control) the sockets are systemd's; otherwise our own. A copy
-- an upgrade started inherits both.
local _, activated = assert(systemd.listen_fds())
local up = upgrade.new { pidfile = pidfile, log = log, signal = { "HUP", "USR2" }, stats = stats,
  control = activated.control and activated.control[1] or control_addr }
local inherited = up:inherit {
  -- Runs in a new copy before it says READY: check what came, or refuse.
  inherit = function(got)
    if not config then return nil, config_err end
    local http = got.listeners.http
    if not (http and http[1]) then return nil, "expected one http listener" end
    local info = http[1]:info()
    if not (info.listening and info.family == "inet") then return nil, "http is not a TCP listener" end
    listener = http[1]
    served = type(got.state) == "table" and tonumber(got.state.served) or 0
    handed = served
    return true
  end,
}
if not inherited then
  assert(config, config_err)
  if activated.http then
    listener = activated.http[1]
    listener:nonblock(true) -- the accept loop drains the queue without blocking
  else
    listener = assert(net.tcp_listen("127.0.0.1", port))
  end
  systemd.ready() -- false, and nothing sent, outside systemd
end
up:listener("http", listener)
-- Called at the handover and again by up:finish(): what the old process
-- served while it drained reaches the new copy as a "state" event.
up:state(function() return { served = served } end)

-- ---- HTTP ---------------------------------------------------------------------

local function add_conn(fd, buffered)
  fd:nonblock(true) -- ours alone: accepted here or handed over, never shared while in use
  conns[fd] = { fd = fd, buf = buffered or "", out = "" }
end

local function close_conn(c)
  conns[c.fd] = nil
  c.fd:close()
end

local function flush(c)
  while #c.out > 0 do
    local n, _, code = c.fd:write(c.out)
    if not n then
      if code ~= "EAGAIN" then close_conn(c) end
      return
    end
    c.out = c.out:sub(n + 1)
  end
end

-- Answers every complete request in the buffer; keeps a partial one.
local function handle(c)
  while true do
    local head_end = c.buf:find("\r\n\r\n", 1, true)
    if not head_end then return end
    local head = c.buf:sub(1, head_end + 3)
    local length = tonumber(head:lower():match("\ncontent%-length:%s*(%d+)")) or 0
    if #c.buf < head_end + 3 + length then return end
    c.buf = c.buf:sub(head_end + 4 + length)
    served = served + 1
    local body = ("%d %d %s %d\n"):format(me, up.generation, config.greeting, served)
    local close = head:lower():find("\nconnection:%s*close") ~= nil
    c.out = c.out .. ("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s")
      :format(#body, close and "Connection: close\r\n" or "", body)
    c.close_after = close
  end
end

local function on_readable(c)
  local data, _, code = c.fd:read(65536)
  if not data then
    if code ~= "EAGAIN" then close_conn(c) end
    return
  end
  c.buf = c.buf .. data
  handle(c)
  flush(c)
  if c.close_after and #c.out == 0 and conns[c.fd] then close_conn(c) end
end

-- ---- the loop -------------------------------------------------------------------

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local draining = false
while true do
  if draining then
    local batch = {}
    for _, c in pairs(conns) do
      if #c.out == 0 then -- a request boundary: what is buffered goes along
        batch[#batch + 1] = { name = "http", conn = c.fd, buffered = c.buf }
      end
    end
    if #batch > 0 then
      up:handoff_all(batch)
      for _, e in ipairs(batch) do close_conn(conns[e.conn]) end
    end
    if next(conns) == nil then
      up:finish() -- the final state (what we served while draining), then DONE
      up:close() -- under systemd: waits until it has heard of the new copy
      os.exit(0)
    end
  end

  -- The upgrader is one descriptor among ours (signals, control socket,
  -- the upgrade itself and the connections an old process hands over).
  local readers, writers = { up }, {}
  if not draining then readers[#readers + 1] = listener end
  for _, c in pairs(conns) do
    if #c.out > 0 then writers[#writers + 1] = c.fd
    elseif not draining then readers[#readers + 1] = c.fd end
  end
  local timeout = draining and 0.05 or 1
  local due = up:timeout()
  if due and due < timeout then timeout = due end
  local r, w = loop.poll(readers, writers, timeout)
  local rs, ws = set_of(r), set_of(w)

  repeat
    local ev, x = up:step()
    if ev == "upgraded" then
      -- Committed: stop accepting (the new copy accepts on the same
      -- sockets, so nothing queued is lost), then hand each connection over.
      draining = true
    elseif ev == "connection" then
      add_conn(x.fd, x.buffered)
      handle(conns[x.fd])
      flush(conns[x.fd])
    elseif ev == "state" and type(x) == "table" then
      served = served + (tonumber(x.served) or handed) - handed -- what the old one served meanwhile
    end
  until not ev
  if rs[listener] and not draining then
    for _ = 1, 64 do
      local fd = net.accept(listener)
      if not fd then break end
      add_conn(fd)
    end
  end
  for fd, c in pairs(conns) do
    if ws[fd] then flush(c) end
    if rs[fd] and conns[fd] then on_readable(c) end
  end
end
