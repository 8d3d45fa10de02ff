-- The process nginx asks for descriptors (examples/nginx/fdpass_nginx.lua).
-- It listens on a Unix socket; each client sends one request, an encoded
-- table, and gets one answer, `{ok = true, kind =, pid =}` with one
-- descriptor, or `{ok = false, status =, reason =}` with none:
--   {what = "file", name = N, delay = s}: DIR/N opened for reading, sent
--     after `delay` seconds (a slow companion);
--   {what = "stream", size = n, delay = s}: at once, one end of a stream
--     socket; `delay` seconds later the companion writes n bytes into the
--     other end ("stream from PID " repeated) and closes it.
-- It never blocks on one client: everything runs from one poll loop.
--
-- usage: lua5.4 examples/nginx/companion.lua ADDR DIR
--   ADDR "@name" (a Linux abstract name) or a path
local fdpass = require "fdpass"
local codec = require "fdpass.codec"
local loop = require "fdpass.loop"
local fos = require "fdpass.os"

local addr, dir = arg[1], arg[2]
if not (addr and dir) then
  io.stderr:write("usage: companion.lua ADDR DIR\n")
  os.exit(2)
end
local me = fos.getpid()
local server = assert(fdpass.listen(addr))
local MAX_DELAY, MAX_SIZE = 30, 8 * 1024 * 1024

local clients = {} -- channel -> deadline for its request
local later = {}   -- { at =, run = function } in no particular order
local writers = {} -- fd object -> { data =, pos = }: stream ends being filled

local function reply(ch, msg, fd)
  ch:send(codec.encode(msg), fd and { fd } or nil, 1)
  if fd then fd:close() end
  ch:close()
end

local function fail(ch, status, reason)
  reply(ch, { ok = false, status = status, reason = reason })
end

local function at(delay, fn)
  later[#later + 1] = { at = fos.monotonic() + delay, run = fn }
end

local function handle(ch, req)
  if type(req) ~= "table" then return fail(ch, 400, "bad request") end
  local delay = tonumber(req.delay) or 0
  if delay < 0 or delay > MAX_DELAY then return fail(ch, 400, "delay out of range") end
  if req.what == "file" then
    local name = type(req.name) == "string" and req.name or ""
    if not name:match("^[%w_][%w._-]*$") then return fail(ch, 400, "bad file name") end
    local f = io.open(dir .. "/" .. name, "rb")
    if not f then return fail(ch, 404, "no such file: " .. name) end
    local fd = fdpass.dup(f)
    f:close()
    at(delay, function() reply(ch, { ok = true, kind = "file", pid = me }, fd) end)
  elseif req.what == "stream" then
    local size = tonumber(req.size) or 64
    if size < 0 or size > MAX_SIZE then return fail(ch, 400, "size out of range") end
    local mine, theirs = fdpass.socketpair("stream")
    local w = fdpass.dup(mine) -- an fd object, for write()
    mine:close()
    w:nonblock(true) -- our end alone: the reader has the other one
    reply(ch, { ok = true, kind = "stream", pid = me }, fdpass.dup(theirs))
    theirs:close()
    local unit = ("stream from %d\n"):format(me)
    local data = unit:rep(math.floor(size / #unit) + 1):sub(1, size)
    at(delay, function() writers[w] = { data = data, pos = 1 } end)
  else
    fail(ch, 400, "unknown request")
  end
end

while true do
  local readers, out, wake = { server }, {}, fos.monotonic() + 1
  for ch, deadline in pairs(clients) do
    readers[#readers + 1] = ch
    wake = math.min(wake, deadline)
  end
  for _, job in ipairs(later) do wake = math.min(wake, job.at) end
  for w in pairs(writers) do out[#out + 1] = w end
  local r, wr = loop.poll(readers, out, math.max(0, wake - fos.monotonic()))
  local now = fos.monotonic()

  for _, x in ipairs(r) do
    if x == server then
      for _ = 1, 16 do
        local ch = server:accept(0)
        if not ch then break end
        clients[ch] = now + 2
      end
    elseif clients[x] then
      local data, _, code = x:recv(0)
      if data or code ~= "EAGAIN" then
        clients[x] = nil
        if data then handle(x, codec.decode(data)) else x:close() end
      end
    end
  end
  for ch, deadline in pairs(clients) do
    if now >= deadline then clients[ch] = nil; ch:close() end -- silent client
  end

  local due, keep = {}, {}
  for _, job in ipairs(later) do
    if job.at <= now then due[#due + 1] = job else keep[#keep + 1] = job end
  end
  later = keep
  for _, job in ipairs(due) do job.run() end

  for _, w in ipairs(wr) do
    local job = writers[w]
    local n, _, code = w:write(job.data, job.pos)
    if n then job.pos = job.pos + n end
    if (not n and code ~= "EAGAIN") or job.pos > #job.data then
      writers[w] = nil
      w:close() -- done, or the reader is gone
    end
  end
end
