--- The options of `fdpass.upgrade.new` (internal): the default timeouts
-- and the checks that make a misspelt key raise instead of being ignored.
-- @module fdpass.upgrade.options
local fdpass = require "fdpass"

local M = {}

M.TIMEOUTS = {
  hello = 10,    -- spawn to HELLO: the new copy's interpreter and script start
  handover = 10, -- each message of descriptors and state; finish()'s flush
  ready = 30,    -- state sent to READY: the app's inherit hook runs here
  commit = 10,   -- COMMIT to COMMITTED, and READY to COMMIT on the new side
  kill = 2,      -- TERM to KILL; how long a new copy waits for a dead old one
}

local OPTIONS = {
  argv = "table", pidfile = "string", lockfile = "string", control = "any", timeouts = "table",
  max_state = "number", max_fds = "number", log = "function", rendezvous = "boolean",
  systemd = "any", signal = "any", stats = "function",
}

--- Checks upgrade.new's options: unknown keys (timeouts' too) and wrong
-- types raise at `level` (error()'s, counted from here), naming the key
-- and `who` (default "fdpass.upgrade.new"). Returns the table (or {}).
function M.check(opts, level, who)
  who = who or "fdpass.upgrade.new"
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error("bad argument #1 to 'new' (table expected, got " .. type(opts) .. ")", level)
  end
  for k, v in pairs(opts) do
    local want = OPTIONS[k]
    if not want then error((who .. ": unknown option '%s'"):format(tostring(k)), level) end
    if want ~= "any" and type(v) ~= want then
      error((who .. ": option '%s' must be a %s, got %s"):format(k, want, type(v)), level)
    end
  end
  for k, v in pairs(opts.timeouts or {}) do
    if not M.TIMEOUTS[k] then
      error((who .. ": unknown option 'timeouts.%s'"):format(tostring(k)), level)
    end
    if type(v) ~= "number" or v < 0 then
      error((who .. ": option 'timeouts.%s' must be a number >= 0"):format(k), level)
    end
  end
  local sig = opts.signal
  if sig ~= nil and sig ~= false and type(sig) ~= "string" and type(sig) ~= "table" then
    error(who .. ": option 'signal' must be a signal name, a list of them or false", level)
  end
  local c = opts.control
  if c ~= nil and type(c) ~= "string" then -- raises now if no descriptor, naming the option
    local ok, err = pcall(fdpass.info, c)
    if not ok then
      error((who .. ": option 'control' must be an address or a listening socket: %s")
        :format(tostring(err):gsub("^.-: ", "", 1)), level)
    end
  end
  return opts
end

return M
