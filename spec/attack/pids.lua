-- The processes an attack starts list their pids in $ATTACK_PIDFILE, so
-- that spec/attack/harness.lua can kill every one of them on every path.
return function(pid)
  local list = os.getenv("ATTACK_PIDFILE")
  local f = list and io.open(list, "a")
  if f then
    f:write(pid, "\n")
    f:close()
  end
end
