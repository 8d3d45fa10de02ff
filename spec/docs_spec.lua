-- Every fenced code block of README.md and docs/*.md is run or checked
-- here, so that what the documentation shows is what the code does. A new
-- page under docs/ is covered as soon as it exists. Every relative link of
-- those pages must name a file of the tree (and a heading of it), README
-- must link each page, and no code block may be indented instead of fenced.
--
-- What happens to a block depends on its language, and on an optional
-- marker: an HTML comment (invisible once rendered) on the line right
-- before the opening fence,
--
--   <!-- docs_spec: KEY[=VALUE]; KEY[=VALUE] -->
--
--   ```lua   written to a file in a fresh temporary directory and run there
--            with the suite's Lua (FDPASS_LUA) and the tree's LUA_PATH and
--            LUA_CPATH (inherited from `make test`); it must exit 0, so a
--            block states what it shows with assert().
--   ```c     compiled with -std=gnu11 -Wall -Wextra -Werror against
--            src/lib/fdpass.h, linked with the built libfdpass, and run in a
--            temporary directory; it must exit 0.
--   ```sh    checked: every `make` target named exists in the Makefile,
--            every command is on PATH (or a file of the tree), and every
--            argument that names a file under a directory of the tree
--            exists. With `run` it is run instead, by sh -e from the top of
--            the tree (only for quick and harmless commands).
--   ```ini   a systemd unit, given a name with `unit=NAME.service`:
--            `systemd-analyze verify` must accept it without a warning
--            (the page's other units lie beside it: a socket's service).
--   ```text  output or a diagram: not code; counted, never run.
--   any language with `excerpt=FILE`: every line of the block (less
--            blank ones and `-- ...`, which marks lines left out) is a line
--            of FILE, in the same order (a shortened quotation of an
--            example's configuration or code).
--   anything else must carry `skip`.
--
-- Keys:
--   setup=NAME   (lua) runs the prelude NAME of PRELUDES below first: a
--                block that shows one call may need a channel to call it on
--   continue     (lua, c) the previous block of the same language on the
--                same page runs first, in the same program: a walk-through
--   expect=TEXT  the block's output must contain TEXT
--   lua=5.4      (lua) 5.4 syntax (<close>): skipped, and counted, on others
--   skip=WHY     not run: reported as a skip with WHY, never as a pass
--   run          (sh) run rather than check
--   unit=NAME    (ini) the file name the unit is verified under
--   excerpt=FILE the block quotes FILE (see above), whatever its language
--
-- Standalone: make && LUA_PATH=... lua5.4 spec/docs_spec.lua (or `SPEC=docs
-- make test`); it ends with a line counting what was run, checked, skipped.
local lu = require "luaunit"
local H = require "helpers"

local PRELUDES = {
  -- a connected pair: `ch` is ours, `peer` the other end
  channel = 'local fdpass = require "fdpass"\nlocal ch, peer = assert(fdpass.socketpair())\n',
}

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local function write(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function sh_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- Runs a shell command; returns ok (exit 0), its output (stdout and stderr).
local MARK = "#docsspecexit "
local function shell(cmd)
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; printf '\\n" .. MARK .. "%s\\n' $?"))
  local out = p:read("*a")
  p:close()
  local body, status = out:match("^(.*)\n" .. MARK .. "(%d+)\n$")
  return tonumber(status) == 0, body or out
end

local ROOT = (function()
  local p = assert(io.popen("pwd"))
  local d = p:read("*l")
  p:close()
  return d
end)()

local function tmpdir()
  local ok, out = shell("mktemp -d /tmp/docs_spec.XXXXXX")
  assert(ok, out)
  return (out:gsub("%s+$", ""))
end

-- ---- the pages and their blocks ----------------------------------------

local function pages()
  local list = { "README.md" }
  local p = assert(io.popen("ls docs/*.md 2>/dev/null"))
  for f in p:lines() do list[#list + 1] = f end
  p:close()
  return list
end

local function parse_marker(line)
  local body = line and line:match("^%s*<!%-%-%s*docs_spec:(.-)%-%->%s*$")
  if not body then return nil end
  local m = {}
  for item in body:gmatch("[^;]+") do
    local k, v = item:match("^%s*([%w%.]+)%s*=%s*(.-)%s*$")
    if k then m[k] = v
    else
      k = item:match("^%s*([%w%.]+)%s*$")
      assert(k, "bad docs_spec marker item: " .. item)
      m[k] = true
    end
  end
  return m
end

-- { page=, line=, lang=, code=, marker={} } for each fenced block
local function blocks(page)
  local list = {}
  local lines = {}
  for l in (read(page) .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
  local i = 1
  while i <= #lines do
    local fence, lang = lines[i]:match("^(```+)%s*([%w%-_+]*)")
    if fence then
      local start = i
      local body = {}
      i = i + 1
      while i <= #lines and not lines[i]:match("^" .. fence .. "%s*$") do
        body[#body + 1] = lines[i]
        i = i + 1
      end
      assert(i <= #lines, page .. ":" .. start .. ": unclosed code block")
      list[#list + 1] = {
        page = page, line = start, lang = lang ~= "" and lang or "none",
        code = table.concat(body, "\n") .. "\n", marker = parse_marker(lines[start - 1]) or {},
      }
    end
    i = i + 1
  end
  return list
end

-- ---- how each kind of block is run or checked -----------------------------

local counts = { ["lua run"] = 0, ["c compiled and run"] = 0, ["sh checked"] = 0, ["sh run"] = 0,
  ["ini verified"] = 0, ["excerpts checked"] = 0, ["text (not code)"] = 0, skipped = 0 }
local skipped_why = {}

local function skip(b, why)
  counts.skipped = counts.skipped + 1
  skipped_why[#skipped_why + 1] = ("%s:%d (%s): %s"):format(b.page, b.line, b.lang, why)
  lu.skip(why)
end

local function expect(b, out)
  if b.marker.expect then
    lu.assertStrContains(out, b.marker.expect, false,
      ("%s:%d: output lacks %q:\n%s"):format(b.page, b.line, b.marker.expect, out))
  end
end

local function run_lua(b, previous)
  if b.marker.lua == "5.4" and _VERSION ~= "Lua 5.4" then
    return skip(b, "Lua 5.4 syntax, this is " .. _VERSION)
  end
  local code = b.code
  if b.marker.continue then
    assert(previous, b.page .. ":" .. b.line .. ": `continue` with no lua block before it")
    code = previous .. code
  end
  if b.marker.setup then
    local prelude = PRELUDES[b.marker.setup]
    assert(prelude, b.page .. ":" .. b.line .. ": unknown setup " .. b.marker.setup)
    code = prelude .. code
  end
  local dir = tmpdir()
  write(dir .. "/block.lua", code)
  local ok, out = shell(("cd %s && timeout 60 %s block.lua"):format(sh_quote(dir), sh_quote(H.lua)))
  shell("rm -rf " .. sh_quote(dir))
  lu.assertTrue(ok, ("%s:%d: the lua block failed:\n%s"):format(b.page, b.line, out))
  expect(b, out)
  counts["lua run"] = counts["lua run"] + 1
  return code
end

-- the build directory of the C library the suite tests (make sanitize: build-san)
local function build_dir()
  local ctest = (os.getenv("FDPASS_CTESTS") or ""):match("%S+")
  local dir = ctest and ctest:match("^(.*)/ctest/[^/]*$") or "build"
  if dir:sub(1, 1) ~= "/" then dir = ROOT .. "/" .. dir end
  return dir
end

local function run_c(b, previous)
  local code = b.code
  if b.marker.continue then
    assert(previous, b.page .. ":" .. b.line .. ": `continue` with no c block before it")
    code = previous .. code
  end
  local build = build_dir()
  local san = shell("nm -D " .. sh_quote(build .. "/libfdpass.so") .. " | grep -q __asan_init")
  local dir = tmpdir()
  write(dir .. "/block.c", code)
  local cc = ("cd %s && ${CC:-cc} -std=gnu11 -Wall -Wextra -Werror %s -I%s block.c -o block"
    .. " -L%s -lfdpass -Wl,-rpath,%s"):format(sh_quote(dir), san and "-fsanitize=address,undefined" or "",
      sh_quote(ROOT .. "/src/lib"), sh_quote(build), sh_quote(build))
  local ok, out = shell(cc)
  if ok then
    ok, out = shell(("cd %s && timeout 60 env %s ./block"):format(sh_quote(dir),
      os.getenv("FDPASS_CTEST_ENV") or ""))
    if not ok then out = "the program failed:\n" .. out end
  else
    out = "it does not compile:\n" .. out
  end
  shell("rm -rf " .. sh_quote(dir))
  lu.assertTrue(ok, ("%s:%d: c block: %s"):format(b.page, b.line, out))
  expect(b, out)
  counts["c compiled and run"] = counts["c compiled and run"] + 1
  return code
end

local make_targets
local function known_targets()
  if not make_targets then
    make_targets = {}
    -- make's database without running a recipe
    local _, out = shell("make -pRrq -f Makefile : 2>/dev/null")
    for t in out:gmatch("\n([%w_%.%-]+):") do make_targets[t] = true end
  end
  return make_targets
end

local TREE_DIRS = { "bench", "bin", "docs", "examples", "fuzz", "lua", "rockspec", "spec", "src", "tools" }

-- The problems of one shell command (a list of words), or nil.
local function check_command(words, problems, where)
  local i = 1
  -- VAR=value before it, and the commands that run the next word (as root, ...)
  local prefix = { sudo = true, env = true, exec = true, nohup = true, time = true }
  while words[i] and (words[i]:match("^[%a_][%w_]*=") or prefix[words[i]] or (words[i]:match("^%-") and i > 1)) do
    i = i + 1
  end
  local cmd = words[i]
  if not cmd then return end
  if cmd:find("/", 1, true) then
    if cmd:sub(1, 1) ~= "/" and not io.open(cmd) then problems[#problems + 1] = where .. "no file " .. cmd end
  elseif not shell("command -v " .. sh_quote(cmd)) then
    problems[#problems + 1] = where .. "no command " .. cmd
  end
  for j = i + 1, #words do
    local w = words[j]
    if cmd == "make" and not w:match("^%-") and not w:match("=") and (j == i + 1 or words[j - 1] ~= "-C") then
      if not known_targets()[w] then problems[#problems + 1] = where .. "no make target " .. w end
    end
    local top = w:match("^%./?([%w_%-]+)/") or w:match("^([%w_%-]+)/")
    if top then
      for _, d in ipairs(TREE_DIRS) do
        if top == d and not w:find("[%*%$%?]") and not io.open((w:gsub("^%./", ""))) then
          problems[#problems + 1] = where .. "no file " .. w
        end
      end
    end
  end
end

-- The commands of one shell line, each a list of words: quotes kept
-- together (and removed), split at unquoted ; & | and a comment dropped.
local function split_commands(line)
  local commands, words, word, quote = {}, {}, nil, nil
  local function end_word()
    if word then words[#words + 1] = word; word = nil end
  end
  local function end_command()
    end_word()
    if #words > 0 then commands[#commands + 1] = words; words = {} end
  end
  for i = 1, #line do
    local c = line:sub(i, i)
    if quote then
      if c == quote then quote = nil else word = word .. c end
    elseif c == "'" or c == '"' then
      quote, word = c, word or ""
    elseif c == "#" and not word then
      break
    elseif c:match("%s") then
      end_word()
    elseif c == ";" or c == "&" or c == "|" then
      end_command()
    else
      word = (word or "") .. c
    end
  end
  end_command()
  return commands
end

local function check_sh(b)
  if b.marker.run then
    local ok, out = shell("timeout 120 sh -e -c " .. sh_quote(b.code))
    lu.assertTrue(ok, ("%s:%d: the sh block failed:\n%s"):format(b.page, b.line, out))
    expect(b, out)
    counts["sh run"] = counts["sh run"] + 1
    return
  end
  local problems = {}
  local n = 0
  for line in (b.code:gsub("\\\n", " ")):gmatch("[^\n]+") do
    n = n + 1
    for _, words in ipairs(split_commands(line)) do
      check_command(words, problems, ("%s:%d: "):format(b.page, b.line + n))
    end
  end
  lu.assertEquals(problems, {}, "sh block checked against the tree")
  counts["sh checked"] = counts["sh checked"] + 1
end

local function check_ini(b)
  local unit = b.marker.unit
  assert(unit and unit:match("^[%w_%-@]+%.%a+$"), b.page .. ":" .. b.line .. ": an ini block needs unit=NAME.service")
  if not shell("command -v systemd-analyze") then return skip(b, "no systemd-analyze on this machine") end
  local dir = tmpdir()
  for _, other in ipairs(b.units) do -- a socket unit needs its service beside it
    write(dir .. "/" .. other.marker.unit, other.code)
  end
  local _, out = shell(("cd %s && timeout 60 systemd-analyze verify ./%s"):format(sh_quote(dir), unit))
  shell("rm -rf " .. sh_quote(dir))
  local _, version = shell("systemd-analyze --version")
  version = tonumber(version:match("systemd (%d+)")) or 0
  local bad = {}
  for l in out:gmatch("[^\n]+") do
    if l:find(unit, 1, true) and not l:find("Command .* is not executable") -- the app's own path
      and not (version < 253 and l:find("Failed to parse service type, ignoring: notify%-reload")) then
      bad[#bad + 1] = l
    end
  end
  lu.assertEquals(bad, {}, ("%s:%d: systemd-analyze verify %s"):format(b.page, b.line, unit))
  counts["ini verified"] = counts["ini verified"] + 1
end

local function check_excerpt(b)
  local file = b.marker.excerpt
  local lines = {}
  for l in read(file):gmatch("[^\n]*") do lines[#lines + 1] = (l:gsub("^%s+", ""):gsub("%s+$", "")) end
  local at, missing = 1, {}
  for l in b.code:gmatch("[^\n]+") do
    l = l:gsub("^%s+", ""):gsub("%s+$", "")
    if l ~= "" and not l:match("^%-%- %.%.%.") then
      local found
      for i = at, #lines do
        if lines[i] == l then found = i; break end
      end
      if found then at = found + 1 else missing[#missing + 1] = l end
    end
  end
  lu.assertEquals(missing, {}, ("%s:%d: lines not in %s (in this order)"):format(b.page, b.line, file))
  counts["excerpts checked"] = counts["excerpts checked"] + 1
end

-- ---- the tests: one per block, plus the links -----------------------------

local tests = {}

for _, page in ipairs(pages()) do
  local previous = {}
  local units = {}
  for _, b in ipairs(blocks(page)) do
    if b.lang == "ini" and b.marker.unit then units[#units + 1] = b end
    b.units = units
    local name = ("test_%s_L%04d_%s"):format(page:gsub("[^%w]", "_"), b.line, b.lang)
    tests[name] = function()
      if b.marker.skip then
        return skip(b, b.marker.skip == true and "(no reason given)" or b.marker.skip)
      elseif b.marker.excerpt then
        check_excerpt(b)
      elseif b.lang == "lua" then
        previous.lua = run_lua(b, previous.lua)
      elseif b.lang == "c" then
        previous.c = run_c(b, previous.c)
      elseif b.lang == "sh" then
        check_sh(b)
      elseif b.lang == "ini" then
        check_ini(b)
      elseif b.lang == "text" then
        counts["text (not code)"] = counts["text (not code)"] + 1
      else
        lu.fail(("%s:%d: a ```%s block is neither run nor checked: give it a language this spec knows, or"
          .. " <!-- docs_spec: skip=WHY -->"):format(b.page, b.line, b.lang))
      end
    end
  end
end

-- The anchors GitHub makes of a page's headings: lower case, punctuation
-- dropped, spaces as dashes.
local function anchors(path)
  local set = {}
  local text = read(path):gsub("\n```.-\n```", "")
  for h in text:gmatch("\n#+%s+([^\n]+)") do
    set[(h:lower():gsub("[^%w%s%-_]", ""):gsub("%s", "-"))] = true
  end
  return set
end

-- luaunit runs tests in name order: the blocks of a page in page order,
-- which `continue` relies on.
function tests.test_links_name_files_of_the_tree_and_readme_links_every_page()
  local missing = {}
  local readme = read("README.md")
  for _, page in ipairs(pages()) do
    local dir = page:match("^(.*)/") or "."
    local text = read(page):gsub("\n```.-\n```", "")
    for target in text:gmatch("%]%(([^%)%s]+)%)") do
      local file = target:gsub("#.*", "")
      local anchor = target:match("#(.*)$")
      if not file:match("^%a+:") then
        local path = file == "" and page or (dir == "." and file or (dir .. "/" .. file))
        if not io.open(path) then
          missing[#missing + 1] = page .. ": " .. target
        elseif anchor and path:match("%.md$") and not anchors(path)[anchor] then
          missing[#missing + 1] = page .. ": " .. target .. " (no such heading)"
        end
      end
    end
    if page ~= "README.md" and not readme:find("](" .. page .. ")", 1, true) then
      missing[#missing + 1] = "README.md does not link " .. page
    end
  end
  lu.assertEquals(missing, {})
end

-- An indented code block would escape the blocks above: each must be fenced.
-- One is four spaces in after a blank line whose paragraph before it is
-- neither a list item nor indented itself (a list's continuation).
function tests.test_every_code_block_is_fenced()
  local found = {}
  for _, page in ipairs(pages()) do
    local lines, fence, prev_blank, last_text = {}, nil, true, ""
    for l in (read(page) .. "\n"):gmatch("(.-)\n") do lines[#lines + 1] = l end
    for i, l in ipairs(lines) do
      local f = l:match("^%s*(```+)")
      if fence then
        if f and #f >= #fence then fence = nil end
      elseif f then
        fence = f
      elseif l:match("^    +%S") and prev_blank and not last_text:match("^%s*[%-%*+]%s")
        and not last_text:match("^%s*%d+[%.%)]%s") and not last_text:match("^%s") then
        found[#found + 1] = ("%s:%d: an indented code block: fence it (```sh, ```lua, ...)"):format(page, i)
      end
      if l:match("%S") then
        if not (l:match("^    +%S") and prev_blank) then last_text = l end
        prev_blank = false
      else
        prev_blank = true
      end
    end
  end
  lu.assertEquals(found, {})
end

function tests.test_readme_is_a_page_or_two()
  local n = select(2, read("README.md"):gsub("\n", ""))
  lu.assertTrue(n <= 150, "README.md has " .. n .. " lines: what does not fit in two pages goes to docs/")
end

function tests.test_zz_summary()
  local parts = {}
  for _, k in ipairs { "lua run", "c compiled and run", "sh run", "sh checked", "ini verified",
    "excerpts checked", "text (not code)", "skipped" } do
    parts[#parts + 1] = counts[k] .. " " .. k
  end
  io.stderr:write("docs_spec: ", table.concat(parts, ", "), "\n")
  for _, w in ipairs(skipped_why) do io.stderr:write("  skipped ", w, "\n") end
end

TestDocs = H.suite(tests)

H.run()
