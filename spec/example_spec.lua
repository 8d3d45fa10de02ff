-- README's example is examples/handover.lua, word for word, and it runs.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"

local function read(path)
  local f = assert(io.open(path))
  local s = f:read("*a")
  f:close()
  return s
end

TestExample = H.suite {
  test_readme_shows_the_example_verbatim = function()
    local readme, example = read("README.md"), read("examples/handover.lua")
    lu.assertNotNil(readme:find("```lua\n" .. example .. "```", 1, true),
      "README.md must contain examples/handover.lua in a ```lua block")
  end,

  test_example_hands_over_and_the_new_copy_serves = function()
    local r, w = assert(fdpass.socketpair("stream"))
    local proc = assert(fdpass.spawn({ H.lua, "examples/handover.lua" }, { fds = { [1] = w } }))
    w:close()
    local out = {}
    repeat
      local data = r:recvmsg(4096, 0, 10)
      out[#out + 1] = data
    until not data
    r:close()
    H.expect_exit(proc, 0)
    local text = table.concat(out)
    lu.assertStrContains(text, "client got: visits=42")
    lu.assertStrMatches(text, ".*old %d+: handed over to %d+.*")
  end,
}

H.run()
