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
local fdpass = require "fdpass"
local upgrade = require "fdpass.upgrade"
local systemd = require "fdpass.systemd"

local port, control_addr, pidfile = tonumber(arg[1]), arg[2], arg[3]
assert(port and control_addr, "usage: http_server.lua PORT CONTROL_ADDR [PIDFILE]")
local me = fdpass.getpid()
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
local up = upgrade.new { pidfile = pidfile, log = log }
local listener, control -- fd objects
local served = 0
local inherited = up:start {
  -- Runs in a new copy before it says READY: check what came, or refuse.
  inherit = function(got)
    if not config then return nil, config_err end
    local http, ctl = got.listeners.http, got.listeners.control
    if not (http and http[1] and ctl and ctl[1]) then
      return nil, "expected one http and one control listener"
    end
    local info = http[1]:info()
    if not (info.listening and info.family == "inet") then return nil, "http is not a TCP listener" end
    listener, control = http[1], ctl[1]
    served = type(got.state) == "table" and tonumber(got.state.served) or 0
    return true
  end,
}
if not inherited then
  assert(config, config_err)
  -- Under systemd's socket activation (FileDescriptorName=http, and
  -- optionally control) the sockets are systemd's; otherwise our own.
  local _, activated = assert(systemd.listen_fds())
  if activated.http then
    listener = activated.http[1]
    listener:nonblock(true) -- the accept loop drains the queue without blocking
  else
    listener = assert(fdpass.tcp_listen("127.0.0.1", port))
  end
  if activated.control then
    control = activated.control[1]
  else
    local server = assert(fdpass.listen(control_addr))
    control = fdpass.dup(server) -- one kind of object whether made or inherited
    server:close()
  end
  systemd.ready() -- false, and nothing sent, outside systemd
end
up:listener("http", listener)
up:listener("control", control)
up:state(function() return { served = served } end)
local signals = assert(fdpass.signals { "HUP", "USR2" })

-- ---- HTTP ---------------------------------------------------------------------

local conns = {} -- fd object -> { fd =, buf = unhandled bytes, out = pending bytes }
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

-- ---- control requests and upgrades ------------------------------------------

local draining = false
local function stats()
  local n = 0
  for _ in pairs(conns) do n = n + 1 end
  collectgarbage() -- count what is held, not what waits for the collector
  local status = io.open("/proc/self/status")
  local rss = status and tonumber(status:read("*a"):match("VmRSS:%s*(%d+)")) or 0
  if status then status:close() end
  return { served = served, conns = n, fdcount = fdpass.fdcount(), rss_kb = rss,
    lua_kb = collectgarbage("count"), port = tonumber(listener:info().addr:match(":(%d+)$")) }
end
-- The control socket and the upgrades it asks for, run from this loop.
local ctl = assert(up:controller { listener = control, stats = stats, log = log })

-- ---- the loop -------------------------------------------------------------------

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

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
      up:finish()
      os.exit(0)
    end
  end

  local readers, writers, wake = ctl:pollfds()
  readers[#readers + 1] = signals
  if not draining then readers[#readers + 1] = listener end
  for _, c in pairs(conns) do
    if #c.out > 0 then writers[#writers + 1] = c.fd
    elseif not draining then readers[#readers + 1] = c.fd end
  end
  local incoming = up:incoming()
  if incoming then readers[#readers + 1] = incoming end
  local timeout = math.max(0, math.min(draining and 0.05 or 1, wake - fdpass.monotonic()))

  local r, w = fdpass.poll(readers, writers, timeout)
  local rs, ws = set_of(r), set_of(w)

  if rs[signals] then
    fdpass.readsignal(signals)
    if not draining and ctl:upgrade() == "committed" then draining = true end
  end
  -- Committed: stop accepting (the new copy accepts on the same sockets, so
  -- nothing queued is lost), then hand each connection over.
  if ctl:step(rs, ws) == "committed" then draining = true end
  if rs[listener] and not draining then
    for _ = 1, 64 do
      local fd = fdpass.accept(listener)
      if not fd then break end
      add_conn(fd)
    end
  end
  if incoming and rs[incoming] then
    while true do -- a batch comes in one message: take all of it
      local got = up:receive(0)
      if got == "done" or got == nil then break end
      add_conn(got.fd, got.buffered)
      handle(conns[got.fd])
      flush(conns[got.fd])
    end
  end
  for fd, c in pairs(conns) do
    if ws[fd] then flush(c) end
    if rs[fd] and conns[fd] then on_readable(c) end
  end
end
