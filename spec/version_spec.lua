-- One version string: the VERSION file. The Lua module, the C header (its
-- string and its MAJOR/MINOR/PATCH), the rockspecs and the installed
-- pkg-config file all say what it says. Run from the top of the tree.
local lu = require "luaunit"
local H = require "helpers"
local fdpass = require "fdpass"

local function read(name)
  local f = assert(io.open(name))
  local s = f:read("*a")
  f:close()
  return s
end

local VERSION = read("VERSION"):match("^%s*(.-)%s*$")

TestVersion = H.suite {
  test_version_file_is_major_minor_patch = function()
    lu.assertStrMatches(VERSION, "%d+%.%d+%.%d+")
  end,

  test_the_lua_module_says_the_version = function()
    lu.assertEquals(fdpass._VERSION, VERSION)
    lu.assertEquals(require("fdpass.core")._VERSION, VERSION)
  end,

  test_the_c_header_says_the_version = function()
    local h = read("src/lib/fdpass.h")
    lu.assertEquals(h:match('\n#define FDPASS_VERSION "([^"]*)"'), VERSION)
    local parts = {
      h:match("\n#define FDPASS_VERSION_MAJOR (%d+)"),
      h:match("\n#define FDPASS_VERSION_MINOR (%d+)"),
      h:match("\n#define FDPASS_VERSION_PATCH (%d+)"),
    }
    lu.assertEquals(table.concat(parts, "."), VERSION)
  end,

  test_the_built_pkg_config_file_says_the_version = function()
    local build = os.getenv("BUILD") or "build"
    local f = io.open(build .. "/fdpass.pc")
    if not f then H.skip("no " .. build .. "/fdpass.pc: make builds it") end
    local pc = f:read("*a")
    f:close()
    lu.assertEquals(pc:match("\nVersion: (%S+)"), VERSION)
    -- relocatable: the directories follow ${prefix}
    lu.assertStrContains(pc, "\nlibdir=${prefix}/")
    lu.assertStrContains(pc, "\nincludedir=${prefix}/")
  end,

  test_the_changelog_has_an_entry_for_the_version = function()
    lu.assertStrContains(read("CHANGELOG.md"), "\n## " .. VERSION .. " ")
  end,

  test_the_scm_rockspec_is_the_development_rock = function()
    local spec = read("rockspec/fdpass-scm-1.rockspec")
    lu.assertStrContains(spec, '\nversion = "scm-1"')
    lu.assertStrMatches(spec:match('\n  url = "([^"]*)"'), "git%+https://.+%.git")
  end,
}

H.run()
