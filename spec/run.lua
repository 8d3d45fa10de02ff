-- Runs every spec (spec/*_spec.lua with luaunit, and the C tests) each in a
-- process of its own, and ends with the line "N passed, N failed". A skipped
-- test counts in neither: the line before says "N skipped", after the
-- reasons ("SKIPPED file: why").
-- Environment (set by the Makefile): FDPASS_LUA, FDPASS_CTESTS,
-- FDPASS_CTEST_ENV; SPEC=name runs only the specs whose file name has it;
-- FDPASS_WRAP prefixes every spec's command (make valgrind).
local lua = os.getenv("FDPASS_LUA") or "lua5.4"
local wrap = os.getenv("FDPASS_WRAP") or ""
local only = os.getenv("SPEC")
local TIME_LIMIT = 600 -- seconds per spec file: a hung peer must not hang CI
-- 5.1 and LuaJIT: the global unpack
local unpack = table.unpack or unpack -- luacheck: read globals table.unpack unpack
-- The shell prints the command's exit status after its output: close() of
-- an io.popen file gives the status on 5.2+ only (5.1 and LuaJIT: true).
local EXIT_MARK = "#fdpass-run-exit "

local function list_specs()
  local files = {}
  local p = assert(io.popen("ls spec/*_spec.lua 2>/dev/null"))
  for f in p:lines() do files[#files + 1] = f end
  p:close()
  for c in (os.getenv("FDPASS_CTESTS") or ""):gmatch("%S+") do files[#files + 1] = c end
  return files
end

local totals = { passed = 0, failed = 0, skipped = 0 }
local failures = {}
local skips, skip_order = {}, {} -- "file: why" -> count, in order of first sight

local function run(file)
  local cmd
  if file:match("%.lua$") then
    cmd = string.format("timeout %d %s %s %s -o tap 2>&1", TIME_LIMIT, wrap, lua, file)
  else
    cmd = string.format("timeout %d env %s %s %s 2>&1", TIME_LIMIT, os.getenv("FDPASS_CTEST_ENV") or "", wrap, file)
  end
  -- the newline first: output that does not end in one cannot hide the mark
  cmd = string.format("%s; printf '\\n%s%%s\\n' $?", cmd, EXIT_MARK)
  local planned, seen, passed, failed, skipped = nil, 0, 0, 0, 0
  local last_failure
  local out = {}
  local status
  local p = assert(io.popen(cmd))
  for line in p:lines() do
    if line:sub(1, #EXIT_MARK) == EXIT_MARK then
      status = tonumber(line:sub(#EXIT_MARK + 1))
      if out[#out] == "" then out[#out] = nil end -- the mark's own newline
      line = ""
    else
      out[#out + 1] = line
    end
    local n = line:match("^1%.%.(%d+)")
    if n then planned = tonumber(n) end
    if line:match("^ok%s+%d+%s+# SKIP") then
      seen, skipped = seen + 1, skipped + 1
      local key = file .. ": " .. (line:match("# SKIP%s*(.-)%s*$") or "")
      if not skips[key] then skip_order[#skip_order + 1] = key end
      skips[key] = (skips[key] or 0) + 1
    elseif line:match("^ok%s") then
      seen, passed = seen + 1, passed + 1
    elseif line:match("^not ok%s") then
      seen, failed = seen + 1, failed + 1
      last_failure = #failures + 1
      failures[last_failure] = { file = file, name = line:gsub("^not ok%s+%d+%s*-?%s*", ""), lines = {} }
    elseif line:match("^#") and last_failure and failures[last_failure] then
      local l = failures[last_failure].lines
      if #l < 12 then l[#l + 1] = line end
    end
  end
  p:close()
  local problem
  if not planned or seen < planned then
    problem = string.format("stopped after %d of %s tests (exit status %s)", seen, planned or "?",
      tostring(status))
    failed = failed + math.max(1, (planned or 0) - seen)
  elseif status ~= 0 and failed == 0 then
    -- 124: the time limit; above 128: a signal (128 + its number)
    problem = string.format("exited with status %s though every test passed", tostring(status))
    failed = failed + 1
  end
  if problem then
    failures[#failures + 1] = { file = file, name = problem, lines = { unpack(out, math.max(1, #out - 15)) } }
  end
  totals.passed, totals.failed, totals.skipped =
    totals.passed + passed, totals.failed + failed, totals.skipped + skipped
  print(string.format("%-40s %3d passed, %d failed%s", file, passed, failed,
    skipped > 0 and (", " .. skipped .. " skipped") or ""))
end

for _, f in ipairs(list_specs()) do
  if not only or f:find(only, 1, true) then run(f) end
end

for _, f in ipairs(failures) do
  print(("\nFAILED %s: %s"):format(f.file, f.name))
  for _, l in ipairs(f.lines) do print("  " .. l) end
end
if totals.skipped > 0 then
  print("")
  for _, k in ipairs(skip_order) do
    print(("SKIPPED %s%s"):format(k, skips[k] > 1 and (" (" .. skips[k] .. " tests)") or ""))
  end
  print(("%d skipped"):format(totals.skipped))
end
print(string.format("%d passed, %d failed", totals.passed, totals.failed))
os.exit(totals.failed == 0 and totals.passed > 0 and 0 or 1)
