--- systemd without libsystemd: socket activation (what sd_listen_fds
-- reads), notifications (what sd_notify sends: READY=1, RELOADING=1,
-- STOPPING=1, MAINPID=, STATUS=, WATCHDOG=1) and the file descriptor store
-- (FDSTORE=1 with FDNAME=, descriptors sent along).
--
-- Both protocols are small and stable, so they are spoken here directly:
-- socket activation is three environment variables and descriptors from 3
-- on; a notification is one datagram, with SCM_RIGHTS when descriptors go
-- with it, to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or
-- "@name" for an abstract one). The datagram is sent by
-- `fdpass.net.dgram_send`, from a socket made for that one message.
--
-- Outside systemd nothing fails: `listen_fds()` returns empty lists and
-- the notifications return `false` (nothing to send to), so one script runs
-- both under a unit and from a shell.
-- @module fdpass.systemd
local fdpass = require "fdpass"
local net = require "fdpass.net"
local fos = require "fdpass.os"

local M = {}

local LISTEN_FDS_START = 3 -- SD_LISTEN_FDS_START: the protocol's first descriptor
local FDNAME_MAX = 255     -- systemd refuses longer names
local NOTIFY_TIMEOUT = 5   -- seconds a notification may wait for a full queue
local MAX_FDS = 1048576    -- the kernel's own ceiling on descriptors (fs.nr_open)

-- The three variables of socket activation. Unset after reading (by
-- default) so that a program this process starts does not take them as
-- its own: its pid differs, but a program exec'd in place would not.
local ENV = { "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES" }

-- A decimal number as the variables carry it: digits only, no sign, no
-- spaces, at most `max`. Anything else is systemd's EINVAL, not a guess.
-- Up to 16 digits: room for every `max` used here (1e15; WATCHDOG_USEC of
-- a day already has 11), and what passes `max` is exact in a double.
local function parse_count(s, max)
  if type(s) ~= "string" or not s:match("^%d+$") or #s > 16 then return nil end
  local n = tonumber(s)
  if n > max then return nil end
  return n
end

-- "a::b" -> { "a", "", "b" }: systemd keeps empty names.
local function split_names(s)
  local t = {}
  for piece in (s .. ":"):gmatch("([^:]*):") do t[#t + 1] = piece end
  return t
end

-- Option tables: a misspelt key raises (naming the function and the key)
-- instead of being ignored. Called straight from the public function, so
-- level 3 is its caller's line.
local function check_opts(opts, allowed, fn)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("fdpass.systemd.%s: options must be a table, got %s"):format(fn, type(opts)), 3)
  end
  for k, v in pairs(opts) do
    local want = allowed[k]
    if not want then error(("fdpass.systemd.%s: unknown option '%s'"):format(fn, tostring(k)), 3) end
    if type(v) ~= want then
      error(("fdpass.systemd.%s: option '%s' must be a %s, got %s"):format(fn, k, want, type(v)), 3)
    end
  end
  return opts
end

local TIMEOUT = { timeout = "number" }

local taken = false -- listen_fds() gave the descriptors to fd objects already

--- The descriptors systemd (or systemd-socket-activate, or the fd store)
-- passed to this process.
-- @tparam[opt] table opts `unset_env` (default true) removes LISTEN_PID,
--   LISTEN_FDS and LISTEN_FDNAMES from the environment whatever the outcome,
--   as `sd_listen_fds(1)` does; `cloexec` (default true) marks every
--   descriptor close-on-exec. A boolean is taken as `unset_env`; an unknown
--   key raises.
-- @return `list, by_name`: `list` is `{ {fd = <fd object>, name = "web"}, ... }`
--   in descriptor order (3, 4, ...), `by_name` maps each name to an array of
--   the same fd objects (names need not be unique; without LISTEN_FDNAMES
--   every name is "unknown", as systemd says). Both are empty when this
--   process was not socket-activated, or LISTEN_PID names another process.
--   `nil, msg, "EINVAL"` when the variables are malformed, `"EBADF"` when
--   a descriptor they announce is not open (nothing is adopted then), and
--   `"EALREADY"` when an earlier call (with `unset_env = false`) took them:
--   two fd objects must never own one descriptor.
--
-- FD_CLOEXEC: activated descriptors arrive without it (they crossed an
-- exec). Every other descriptor fdpass makes is close-on-exec, and
-- `fdpass.spawn` (and so every upgrade's new copy) relies on that to pass
-- only what it maps; so, like sd_listen_fds, this sets it, as a documented
-- part of taking them (`cloexec = false` leaves it). The flag belongs to
-- this process's descriptor alone. O_NONBLOCK is never touched: it belongs
-- to the open socket, which systemd holds too.
function M.listen_fds(opts)
  if type(opts) == "boolean" then opts = { unset_env = opts } end
  opts = check_opts(opts, { unset_env = "boolean", cloexec = "boolean" }, "listen_fds")
  local pid_s, fds_s, names_s = os.getenv("LISTEN_PID"), os.getenv("LISTEN_FDS"), os.getenv("LISTEN_FDNAMES")
  if opts.unset_env ~= false then
    for _, name in ipairs(ENV) do fos.setenv(name, nil) end
  end
  local list, by_name = {}, {}
  if not pid_s or not fds_s then return list, by_name end -- not activated
  local pid = parse_count(pid_s, 2147483647)
  if not pid or pid == 0 then
    return nil, ("listen_fds: LISTEN_PID=%q is not a pid"):format(pid_s), "EINVAL"
  end
  if pid ~= fos.getpid() then return list, by_name end -- meant for the process that exec'd us
  local n = parse_count(fds_s, MAX_FDS)
  if not n then
    return nil, ("listen_fds: LISTEN_FDS=%q is not a descriptor count"):format(fds_s), "EINVAL"
  end
  if n == 0 then return list, by_name end
  if taken then
    return nil, "listen_fds: the descriptors were taken by an earlier call", "EALREADY"
  end
  local names = {}
  if names_s then
    names = split_names(names_s)
    if #names ~= n then
      return nil, ("listen_fds: LISTEN_FDNAMES has %d names for %d descriptors"):format(#names, n), "EINVAL"
    end
  else
    for i = 1, n do names[i] = "unknown" end
  end
  -- Every one must be open before any is adopted: an fd object closes what
  -- it owns, and a descriptor that is not ours must never be closed.
  for i = 0, n - 1 do
    local info, err, code = fdpass.info(LISTEN_FDS_START + i)
    if not info then
      return nil, ("listen_fds: descriptor %d of LISTEN_FDS=%d: %s"):format(LISTEN_FDS_START + i, n, err), code
    end
  end
  taken = true
  for i = 1, n do
    local fd = fdpass.fd(LISTEN_FDS_START + i - 1)
    if opts.cloexec ~= false then fd:cloexec(true) end
    list[i] = { fd = fd, name = names[i] }
    by_name[names[i]] = by_name[names[i]] or {}
    table.insert(by_name[names[i]], fd)
  end
  return list, by_name
end

-- ---- notifications ----------------------------------------------------------

--- CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC= carries it.
function M.monotonic_usec()
  return math.floor(fos.monotonic() * 1e6)
end

-- A field's value on the wire: integers without a fraction on any Lua.
local function field_value(v)
  if type(v) == "number" and v == math.floor(v) then return ("%.0f"):format(v) end
  if v == true then return "1" end
  return tostring(v)
end

-- The datagram for a state: a string goes as it is; a table is an array
-- of "KEY=value" lines and/or KEY = value pairs (sorted, so that one state
-- always makes the same message). A newline in a value would start a field
-- of the caller's choosing: a programming mistake, raised.
local function format_state(state, level)
  if type(state) == "string" then
    if state == "" or state:find("%z") then error("notify: empty state or a NUL byte in it", level) end
    return state
  end
  if type(state) ~= "table" then
    error("notify: state must be a string or a table, got " .. type(state), level)
  end
  local lines, keys = {}, {}
  for k, v in pairs(state) do
    if type(k) == "string" then
      if not k:match("^[A-Z_][A-Z0-9_]*$") then error(("notify: bad field name %q"):format(k), level) end
      keys[#keys + 1] = k
    elseif type(k) ~= "number" then
      error("notify: bad field key of type " .. type(k), level)
    end
    if type(v) ~= "string" and type(v) ~= "number" and v ~= true then
      error(("notify: field %s has a %s value"):format(tostring(k), type(v)), level)
    end
  end
  for _, line in ipairs(state) do
    if type(line) ~= "string" or not line:match("^[A-Z_][A-Z0-9_]*=") then
      error(("notify: %q is not a KEY=value line"):format(tostring(line)), level)
    end
    lines[#lines + 1] = line
  end
  table.sort(keys)
  for _, k in ipairs(keys) do lines[#lines + 1] = k .. "=" .. field_value(state[k]) end
  for _, line in ipairs(lines) do
    if line:find("[%z\n]") then error(("notify: newline or NUL in %q"):format(line), level) end
  end
  if #lines == 0 then error("notify: no field to send", level) end
  return table.concat(lines, "\n") .. "\n"
end

--- Where notifications go: $NOTIFY_SOCKET, or nil outside systemd.
function M.notify_socket()
  local addr = os.getenv("NOTIFY_SOCKET")
  if addr == "" then return nil end
  return addr
end

-- Sends msg (a string) to NOTIFY_SOCKET, waiting at most timeout seconds.
local function send(msg, fds, timeout)
  local addr = M.notify_socket()
  if not addr then return false end
  local first = addr:sub(1, 1)
  if first ~= "/" and first ~= "@" then
    return nil, ("notify: NOTIFY_SOCKET=%q is neither an absolute path nor an @abstract name"):format(addr),
      addr:match("^vsock") and "EAFNOSUPPORT" or "EINVAL"
  end
  if timeout == nil then timeout = NOTIFY_TIMEOUT end
  local ok, err, code = net.dgram_send(addr, msg, fds, timeout)
  if not ok then return nil, "notify: " .. err, code end
  return true
end

--- Sends one notification.
-- @param state `"READY=1\nSTATUS=up"`, or a table: `{ READY = 1, STATUS = "up" }`
--   and/or `{ "READY=1", ... }`
-- @tparam[opt] table fds descriptors to send with it (anything `send`
--   takes; at most 253), e.g. for FDSTORE=1
-- @tparam[opt] table opts `timeout` (seconds, default 5): how long to wait
--   while the manager's queue is full; 0 never waits (what an event loop
--   wants). The same for every call below; an unknown key raises.
-- @return `true` when sent; `false` when NOTIFY_SOCKET is not set (not
--   under systemd: like sd_notify's 0, not an error, so a script runs the
--   same outside a unit; test `== nil` for failures, do not `assert()`);
--   `nil, msg, code` when it could not be sent (`ENOENT`, `ECONNREFUSED`:
--   nobody listens there; `EAGAIN`/`ETIMEDOUT`: the queue stayed full;
--   `EAFNOSUPPORT`: a `vsock:` address, which this does not speak).
function M.notify(state, fds, opts)
  opts = check_opts(opts, TIMEOUT, "notify")
  return send(format_state(state, 3), fds, opts.timeout)
end

-- The fixed fields of the calls below: always well formed.
local function notify(fields, fds, opts)
  return send(format_state(fields, 4), fds, opts.timeout)
end

-- STATUS= is one line of free text: control characters (a newline would
-- start another field) become spaces.
local function status_line(text)
  return "STATUS=" .. tostring(text):gsub("%c", " ")
end

local function with_status(fields, status)
  if status ~= nil then fields[#fields + 1] = status_line(status) end
  return fields
end

--- READY=1: start-up (or a reload) is finished. `status` optional.
function M.ready(status, opts)
  opts = check_opts(opts, TIMEOUT, "ready")
  return notify(with_status({ "READY=1" }, status), nil, opts)
end

--- RELOADING=1 with MONOTONIC_USEC=: a reload begins. systemd >= 253
-- needs the timestamp to tell this reload from an earlier one
-- (Type=notify-reload); older ones ignore it. End it with `ready()`.
function M.reloading(status, opts)
  opts = check_opts(opts, TIMEOUT, "reloading")
  return notify(with_status({ "RELOADING=1", "MONOTONIC_USEC=" .. field_value(M.monotonic_usec()) }, status),
    nil, opts)
end

--- STOPPING=1: the service is shutting down.
function M.stopping(status, opts)
  opts = check_opts(opts, TIMEOUT, "stopping")
  return notify(with_status({ "STOPPING=1" }, status), nil, opts)
end

--- STATUS=text (control characters become spaces).
function M.status(text, opts)
  opts = check_opts(opts, TIMEOUT, "status")
  return notify({ status_line(text) }, nil, opts)
end

--- MAINPID=pid: from now on systemd supervises `pid` as the service's main
-- process (it must belong to the service). With `ready = true` READY=1
-- goes in the same datagram, which systemd reads after the new main pid.
function M.mainpid(pid, opts)
  if type(pid) ~= "number" or pid < 1 or pid ~= math.floor(pid) then
    error("mainpid: pid must be a positive integer, got " .. tostring(pid), 2)
  end
  opts = check_opts(opts, { ready = "boolean", timeout = "number" }, "mainpid")
  local fields = { "MAINPID=" .. field_value(pid) }
  if opts.ready then fields[2] = "READY=1" end
  return notify(fields, nil, opts)
end

--- WATCHDOG=1: the keep-alive ping when the unit sets WatchdogSec=.
function M.watchdog(opts)
  opts = check_opts(opts, TIMEOUT, "watchdog")
  return notify({ "WATCHDOG=1" }, nil, opts)
end

--- The watchdog interval in seconds asked of this process (WATCHDOG_USEC,
-- when WATCHDOG_PID is unset or ours), or nil; ping at half of it.
function M.watchdog_interval()
  local usec = parse_count(os.getenv("WATCHDOG_USEC"), 1e15)
  if not usec or usec == 0 then return nil end
  local pid = os.getenv("WATCHDOG_PID")
  if pid and parse_count(pid, 2147483647) ~= fos.getpid() then return nil end
  return usec / 1e6
end

-- systemd's rule for a descriptor name: printable ASCII without ':' (the
-- separator of LISTEN_FDNAMES), at most 255 bytes; it ignores a bad one
-- silently (the descriptor is then stored as "stored"), so it is refused
-- here, where the caller hears of it.
local function check_fdname(name, fn)
  if type(name) ~= "string" then error(fn .. ": name must be a string, got " .. type(name), 3) end
  if #name > FDNAME_MAX then error(("%s: name longer than %d bytes"):format(fn, FDNAME_MAX), 3) end
  if name:find("[^\32-\57\59-\126]") then
    error(("%s: name %q has a ':' or a byte that is not printable ASCII"):format(fn, name), 3)
  end
end

--- FDSTORE=1, FDNAME=name: hands systemd a duplicate of each descriptor
-- to keep while the service restarts; it comes back through `listen_fds()`
-- under `name`. Needs FileDescriptorStoreMax= > 0 in the unit.
-- @string name printable ASCII without ':', at most 255 bytes
-- @param fds one descriptor (anything `send` takes) or an array of them
-- @tparam[opt] table opts `poll = false` sends FDPOLL=0 (systemd then keeps
--   the descriptor even after a hang-up), and `timeout`
function M.fdstore(name, fds, opts)
  check_fdname(name, "fdstore")
  opts = check_opts(opts, { poll = "boolean", timeout = "number" }, "fdstore")
  if type(fds) ~= "table" or getmetatable(fds) ~= nil then fds = { fds } end
  if #fds == 0 then error("fdstore: no descriptor to store", 2) end
  local fields = { "FDSTORE=1", "FDNAME=" .. name }
  if opts.poll == false then fields[3] = "FDPOLL=0" end
  return notify(fields, fds, opts)
end

--- FDSTOREREMOVE=1, FDNAME=name: systemd closes every stored descriptor
-- of that name.
function M.fdstore_remove(name, opts)
  check_fdname(name, "fdstore_remove")
  opts = check_opts(opts, TIMEOUT, "fdstore_remove")
  return notify({ "FDSTOREREMOVE=1", "FDNAME=" .. name }, nil, opts)
end

return M
