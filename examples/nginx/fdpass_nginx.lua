-- fdpass in nginx's Lua module (ngx_lua, OpenResty-style): the handlers
-- that examples/nginx/nginx.conf.in names.
--
-- A worker serves thousands of requests from one thread, so nothing here
-- may block it. Every fdpass call is made with timeout 0 (it returns
-- `nil, msg, "EAGAIN"` instead of waiting) and every wait goes through
-- fdpass.loop.wait_readable / wait_writable with fdpass.loop.waiter = ngx.sleep:
-- they poll the descriptor without waiting and, while it is not ready,
-- ngx.sleep a growing step (1 ms doubling to 16 ms) so the worker serves
-- other requests meanwhile, all bounded by the request's deadline.
-- (ngx_lua 0.10.23 cannot watch a foreign descriptor: cosockets only
-- connect sockets of their own, and Debian's build has no ngx.pipe.)
local fdpass = require "fdpass"
local codec = require "fdpass.codec"
local loop = require "fdpass.loop"
local fos = require "fdpass.os"

loop.waiter = ngx.sleep

local now = fos.monotonic
local M = {}

-- ---- the client side of a Unix socket request ---------------------------

--- Sends `msg` (encoded) to the server at `addr` and returns its answer
-- (a decoded table) and the descriptors that came with it (an array of fd
-- objects, the caller's to close), or `nil, msg, code`. At most `timeout`
-- seconds, never blocking the worker.
function M.call(addr, msg, timeout)
  local deadline = now() + timeout
  local function left() return math.max(0, deadline - now()) end
  local ch, err, code
  local pause = 0.001
  while true do
    -- A Unix connect waits only while the server's backlog is full: 0
    -- makes that EAGAIN (after 1 ms at most), so sleep and retry.
    ch, err, code = fdpass.connect(addr, 0)
    if ch or code ~= "EAGAIN" then break end
    if left() == 0 then return nil, "connect " .. addr .. ": timed out", "ETIMEDOUT" end
    ngx.sleep(math.min(pause, left()))
    pause = math.min(pause * 2, 0.016)
  end
  if not ch then return nil, err, code end

  -- A send that cannot finish stays queued in the channel: flush it as
  -- the socket drains.
  local ok
  ok, err, code = ch:send(codec.encode(msg), nil, 0)
  while not ok and code == "EAGAIN" do
    ok, err, code = loop.wait_writable(ch, left())
    if ok then ok, err, code = ch:flush(0) end
  end
  if not ok and code ~= "EPIPE" then ch:close(); return nil, err, code end
  -- (EPIPE: a server that refuses may answer and close before our
  -- request is in; its answer is still there to read.)

  local data, fds
  while true do
    data, fds, code = ch:recv(0)
    if data or code ~= "EAGAIN" then break end
    ok, err, code = loop.wait_readable(ch, left())
    if not ok then ch:close(); return nil, err, code end
  end
  ch:close()
  if not data then return nil, fds, code end -- fds is the message here
  local answer, derr = codec.decode(data)
  if type(answer) ~= "table" then
    fdpass.close_all(fds)
    return nil, "answer: " .. tostring(derr), "EPROTO"
  end
  return answer, fds
end

--- Everything `fd` reads until its end, at most `max` bytes, by
-- `deadline`. It reads only once poll says so, so that a blocking
-- descriptor (its flags are the sender's too: we leave them) never blocks.
function M.read_all(fd, deadline, max)
  local parts, size = {}, 0
  while true do
    local ok, err, code = loop.wait_readable(fd, math.max(0, deadline - now()))
    if not ok then return nil, "read: " .. err, code end
    local data
    data, err, code = fd:read(65536)
    if not data then
      if code == "EOF" then return table.concat(parts) end
      if code ~= "EAGAIN" then return nil, err, code end
    else
      size = size + #data
      if size > max then return nil, "read: more than " .. max .. " bytes", "EMSGSIZE" end
      parts[#parts + 1] = data
    end
  end
end

-- ---- content handlers --------------------------------------------------------

local function answer(status, body, headers)
  ngx.status = status
  ngx.header["Content-Type"] = "text/plain"
  ngx.header["Content-Length"] = #body
  for k, v in pairs(headers or {}) do ngx.header[k] = v end
  ngx.print(body)
end

local function failed(status, msg)
  ngx.log(status < 500 and ngx.INFO or ngx.WARN, "fdpass: ", msg)
  answer(status, "fdpass: " .. msg .. "\n")
end

--- content_by_lua: asks the companion at `opts.companion` for a
-- descriptor (`opts.what`: "file" names the last part of the URI, "stream"
-- takes ?size=; both take ?delay=) and serves what it reads from it.
-- 503 when the companion is not there, 504 past `opts.timeout`
-- (default 5 s), 502 when it answers nonsense.
function M.serve(opts)
  local timeout = opts.timeout or 5
  local deadline = now() + timeout
  local req = { what = opts.what, delay = tonumber(ngx.var.arg_delay) }
  if opts.what == "file" then req.name = ngx.var.uri:match("([^/]*)$") end
  if opts.what == "stream" then req.size = tonumber(ngx.var.arg_size) end
  local reply, fds, code = M.call(opts.companion, req, timeout)
  if not reply then
    local who = "companion " .. opts.companion
    if code == "ETIMEDOUT" then return failed(504, who .. " did not answer in time: " .. fds) end
    if code == "ECONNREFUSED" or code == "ENOENT" then return failed(503, who .. " is not there: " .. fds) end
    return failed(502, who .. ": " .. fds)
  end
  if not reply.ok then
    fdpass.close_all(fds)
    local status = tonumber(reply.status)
    if not (status and status >= 400 and status < 500) then status = 502 end
    return failed(status, "companion: " .. tostring(reply.reason))
  end
  if #fds ~= 1 then
    fdpass.close_all(fds)
    return failed(502, ("companion sent %d descriptors, expected 1"):format(#fds))
  end
  local fd = fds[1]
  local body, err
  body, err, code = M.read_all(fd, deadline, opts.max or 16 * 1024 * 1024)
  fd:close()
  if not body then return failed(code == "ETIMEDOUT" and 504 or 502, "descriptor: " .. err) end
  answer(200, body, { ["X-Fdpass-Kind"] = tostring(reply.kind), ["X-Fdpass-Pid"] = tostring(reply.pid) })
end

--- content_by_lua: the descriptors this worker holds, to check that
-- requests leave none behind.
function M.fdcount()
  answer(200, fos.fdcount() .. "\n", { ["X-Worker-Pid"] = tostring(ngx.worker.pid()) })
end

-- ---- upgrades of an app run with fdpass.upgrade, driven by a timer ----------

local function render(t)
  local keys, lines = {}, {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do lines[#lines + 1] = k .. "=" .. tostring(t[k]) end
  return table.concat(lines, "\n") .. "\n"
end

--- init_worker_by_lua: in one worker, a timer every `opts.every` seconds
-- (default 1) that, when an upgrade was asked (`upgrade_location`), asks
-- the app's control socket `opts.control` for it, as bin/fdpass-upgrade
-- does but without blocking, and keeps the answer in the shared dict
-- `opts.dict`. One upgrade at a time; `opts.timeout` (default 120 s).
function M.upgrade_timer(opts)
  if (ngx.worker.id() or 0) ~= 0 then return end
  local dict = assert(ngx.shared[opts.dict], "no lua_shared_dict " .. tostring(opts.dict))
  local running = false
  local function tick(premature)
    if premature or running then return end
    local asked = dict:get("asked") or 0
    if asked <= (dict:get("done") or 0) then return end
    running = true
    dict:set("state", "running")
    -- A raised error (a bad option) must not leave the timer "running".
    local called, reply, err = pcall(M.call, opts.control, { cmd = "upgrade" }, opts.timeout or 120)
    if not called then reply, err = nil, reply end
    local result = { asked = asked }
    if not reply then
      result.ok, result.phase, result.reason = false, "request", err
    else
      for _, k in ipairs { "ok", "old", "new", "handover", "spawn", "phase", "reason" } do
        result[k] = reply[k]
      end
    end
    if result.ok then
      ngx.log(ngx.NOTICE, "fdpass: upgraded ", opts.control, ": ", result.old, " -> ", result.new)
    else
      ngx.log(ngx.WARN, "fdpass: upgrade of ", opts.control, " failed in ", tostring(result.phase),
        ": ", tostring(result.reason))
    end
    dict:set("result", codec.encode(result))
    dict:set("done", asked)
    dict:set("state", "idle")
    running = false
  end
  local ok, err = ngx.timer.every(opts.every or 1, tick)
  if not ok then ngx.log(ngx.ERR, "fdpass: upgrade timer: ", err) end
end

--- content_by_lua: POST asks the timer for an upgrade (202, `asked=N`);
-- GET shows `asked`, `state` and the last result as key=value lines.
function M.upgrade_location(opts)
  local dict = ngx.shared[opts.dict]
  if ngx.req.get_method() == "POST" then
    local n = dict:incr("asked", 1, 0)
    return answer(202, "asked=" .. n .. "\n")
  end
  local t = codec.decode(dict:get("result") or codec.encode({}))
  t.asked = nil
  local body = render(t)
  body = "asked=" .. (dict:get("asked") or 0) .. "\nstate=" .. (dict:get("state") or "idle") ..
    "\ndone=" .. (dict:get("done") or 0) .. "\n" .. (next(t) and body or "")
  answer(200, body)
end

return M
