-- What luacheck lets through but Lua 5.1 and LuaJIT reject or misread:
-- syntax only newer versions parse (goto, //, bit operators, <close>,
-- hex floats), and the "\x.." "\u{..}" "\z" escapes, which 5.1 reads as
-- plain letters without a word. Run with lua5.1 (`make lint` does):
--   lua5.1 tools/lint-syntax.lua FILE...
-- Prints one line per problem and exits 1 if there is any.

local problems = 0
local function report(file, line, msg)
  io.stderr:write(("%s:%d: %s\n"):format(file, line, msg))
  problems = problems + 1
end

local function lineof(src, pos)
  local n = 1
  for _ in src:sub(1, pos):gmatch("\n") do n = n + 1 end
  return n
end

-- Skips comments and long strings, whose text no escape reaches, and
-- looks at the escapes of every short string.
local function check_escapes(file, src)
  local i, len = 1, #src
  if src:sub(1, 1) == "#" then i = (src:find("\n") or len) + 1 end
  while i <= len do
    local c = src:sub(i, i)
    local long = src:match("^%-%-%[(=*)%[", i) or src:match("^%[(=*)%[", i)
    if long then
      local close = src:find("]" .. long .. "]", i, true)
      i = (close or len) + #long + 2
    elseif src:sub(i, i + 1) == "--" then
      i = (src:find("\n", i, true) or len) + 1
    elseif c == '"' or c == "'" then
      local j = i + 1
      while j <= len do
        local d = src:sub(j, j)
        if d == c or d == "\n" then break end
        if d == "\\" then
          local e = src:sub(j + 1, j + 1)
          if e == "x" or e == "z" or src:sub(j + 1, j + 2) == "u{" then
            report(file, lineof(src, j), ("escape \\%s in a string: Lua 5.1 reads it as a plain letter; "
              .. "use decimal escapes (\\253)"):format(e))
          end
          j = j + 1
        end
        j = j + 1
      end
      i = j + 1
    else
      i = i + 1
    end
  end
end

for _, file in ipairs(arg) do
  local ok, err = loadfile(file) -- compiles without running
  if not ok then
    io.stderr:write(err, "\n")
    problems = problems + 1
  end
  local f = assert(io.open(file, "rb"))
  local src = f:read("*a")
  f:close()
  check_escapes(file, src)
end
if problems > 0 then
  io.stderr:write(("lint-syntax: %d problem(s) for Lua 5.1 / LuaJIT\n"):format(problems))
  os.exit(1)
end
print(("lint-syntax: %d files parse as Lua 5.1"):format(#arg))
