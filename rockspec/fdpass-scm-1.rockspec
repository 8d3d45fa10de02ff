rockspec_format = "3.0"
package = "fdpass"
version = "scm-1"
source = {
  url = "git+file:///dev/null", -- built from a checkout: luarocks make rockspec/fdpass-scm-1.rockspec
}
description = {
  summary = "Pass open file descriptors between processes over Unix sockets",
  detailed = [[
    SCM_RIGHTS over AF_UNIX with framing, timeouts, peer credentials and
    descriptor objects that close themselves; the base of zero-downtime
    upgrades scripted in Lua. Linux only.
  ]],
  license = "MIT",
  labels = { "unix", "socket", "fd", "scm_rights", "upgrade" },
}
supported_platforms = { "linux" }
dependencies = { "lua >= 5.1, < 5.5" } -- 5.1 (and LuaJIT), 5.3, 5.4
build = {
  type = "builtin",
  modules = {
    fdpass = "lua/fdpass.lua",
    ["fdpass.upgrade"] = "lua/fdpass/upgrade.lua",
    ["fdpass.upgrade.protocol"] = "lua/fdpass/upgrade/protocol.lua",
    ["fdpass.upgrade.poller"] = "lua/fdpass/upgrade/poller.lua",
    ["fdpass.upgrade.control"] = "lua/fdpass/upgrade/control.lua",
    ["fdpass.upgrade.oldside"] = "lua/fdpass/upgrade/oldside.lua",
    ["fdpass.upgrade.newcopy"] = "lua/fdpass/upgrade/newcopy.lua",
    ["fdpass.upgrade.handover"] = "lua/fdpass/upgrade/handover.lua",
    ["fdpass.upgrade.notify"] = "lua/fdpass/upgrade/notify.lua",
    ["fdpass.upgrade.options"] = "lua/fdpass/upgrade/options.lua",
    ["fdpass.systemd"] = "lua/fdpass/systemd.lua",
    ["fdpass.os"] = "lua/fdpass/os.lua",
    ["fdpass.net"] = "lua/fdpass/net.lua",
    ["fdpass.loop"] = "lua/fdpass/loop.lua",
    ["fdpass.codec"] = "lua/fdpass/codec.lua",
    ["fdpass.adapters.core"] = "lua/fdpass/adapters/core.lua",
    ["fdpass.adapters.cqueues"] = "lua/fdpass/adapters/cqueues.lua",
    ["fdpass.adapters.http"] = "lua/fdpass/adapters/http.lua",
    ["fdpass.adapters.copas"] = "lua/fdpass/adapters/copas.lua",
    ["fdpass.adapters.luv"] = "lua/fdpass/adapters/luv.lua",
    ["fdpass.core"] = {
      -- the binding carries libfdpass inside it: nothing else to install.
      -- Every src/lua/*.c and src/lib/*.c, as the Makefile builds it:
      -- `make lint` (tools/install-parity.sh) fails when one is missing.
      sources = {
        "src/lua/core.c", "src/lua/fd.c", "src/lua/channel.c", "src/lua/process.c",
        "src/lua/netio.c", "src/lua/codec.c", "src/lua/dgram.c", "src/lua/environ.c",
        "src/lua/epoll.c",
        "src/lib/deadline.c", "src/lib/dgram.c", "src/lib/errors.c", "src/lib/fdinfo.c",
        "src/lib/framing.c", "src/lib/rawmsg.c", "src/lib/sockets.c", "src/lib/spawn.c",
      },
      incdirs = { "src/lib", "src/lua" },
    },
  },
  install = {
    bin = { ["fdpass-upgrade"] = "bin/fdpass-upgrade" },
  },
}
