-- A keep-alive HTTP load for the upgrade demo: CONNS connections each send
-- GET, wait for the whole answer, and send the next, until SIGTERM or
-- MAX_SECONDS. Every connection the server closes or resets is counted:
-- the point of the demo is that none is. An answer that says
-- "Connection: close" is a polite close: counted apart, and a new
-- connection takes its place.
--
-- usage: lua5.4 examples/http_load.lua PORT [CONNS=16] [MAX_SECONDS=300]
-- prints: load: sent=N answered=N failed=N reset=N refused=N inflight=N
--   closed=N (polite closes) worst_us=N (the slowest answer, microseconds)
local loop = require "fdpass.loop"
local net = require "fdpass.net"
local fos = require "fdpass.os"

local port = assert(tonumber(arg[1]), "usage: http_load.lua PORT [CONNS] [MAX_SECONDS]")
local nconns = tonumber(arg[2]) or 16
local max_seconds = tonumber(arg[3]) or 300
local REQUEST = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

local stats = { sent = 0, answered = 0, failed = 0, reset = 0, refused = 0, closed = 0, worst = 0 }
local conns = {}
local stop = assert(fos.signals { "TERM", "INT" })

local function connect()
  local fd, err = net.tcp_connect("127.0.0.1", port, 2)
  if not fd then
    stats.refused = stats.refused + 1
    io.stderr:write("load: ", err, "\n")
    return nil
  end
  local c = { fd = fd, buf = "", out = REQUEST, since = fos.monotonic() }
  conns[fd] = c
  stats.sent = stats.sent + 1
  return c
end

local function drop(c, why)
  conns[c.fd] = nil
  c.fd:close()
  stats.reset = stats.reset + 1
  io.stderr:write("load: connection lost: ", why, "\n")
end

local function flush(c)
  while #c.out > 0 do
    local n, err, code = c.fd:write(c.out)
    if not n then
      if code ~= "EAGAIN" then drop(c, err) end
      return
    end
    c.out = c.out:sub(n + 1)
  end
end

-- A whole answer: status line, headers, Content-Length bytes of body.
local function on_answer(c)
  while true do
    local head_end = c.buf:find("\r\n\r\n", 1, true)
    if not head_end then return end
    local length = tonumber(c.buf:sub(1, head_end):lower():match("\ncontent%-length:%s*(%d+)"))
    if not length or #c.buf < head_end + 3 + length then return end
    local ok = c.buf:match("^HTTP/1%.1 200 ")
    local close = c.buf:sub(1, head_end):lower():find("\nconnection:%s*close") ~= nil
    c.buf = c.buf:sub(head_end + 4 + length)
    if ok then stats.answered = stats.answered + 1 else stats.failed = stats.failed + 1 end
    local t = fos.monotonic()
    stats.worst = math.max(stats.worst, t - c.since)
    if close then -- polite: the server said so; a new connection goes on
      conns[c.fd] = nil
      c.fd:close()
      stats.closed = stats.closed + 1
      local n = connect()
      if n then flush(n) end
      return
    end
    c.out, c.since = REQUEST, t
    stats.sent = stats.sent + 1
    flush(c)
    if not conns[c.fd] then return end
  end
end

for _ = 1, nconns do
  local c = connect()
  if c then flush(c) end
end

local deadline = fos.monotonic() + max_seconds
local running = true
while running and fos.monotonic() < deadline do
  local readers, writers = { stop }, {}
  for fd, c in pairs(conns) do
    if #c.out > 0 then writers[#writers + 1] = fd else readers[#readers + 1] = fd end
  end
  local r, w = loop.poll(readers, writers, 0.5)
  for _, fd in ipairs(w) do
    if conns[fd] then flush(conns[fd]) end
  end
  for _, fd in ipairs(r) do
    if fd == stop then
      running = false
    elseif conns[fd] then
      local c = conns[fd]
      local data, err, code = fd:read(65536)
      if data then
        c.buf = c.buf .. data
        on_answer(c)
      elseif code ~= "EAGAIN" then
        drop(c, err)
        local n = connect() -- keep the load going
        if n then flush(n) end
      end
    end
  end
end

-- The requests still under way when the load stops were sent but are not
-- failures: count them apart.
local inflight = 0
for _, c in pairs(conns) do
  inflight = inflight + 1
  c.fd:close()
end
print(("load: sent=%d answered=%d failed=%d reset=%d refused=%d inflight=%d closed=%d worst_us=%d")
  :format(stats.sent, stats.answered, stats.failed, stats.reset, stats.refused, inflight, stats.closed,
    math.floor(stats.worst * 1e6)))
