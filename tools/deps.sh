#!/bin/sh
# Makes sure the Debian packages that building and testing need are here:
# installs them when run as root, otherwise prints the exact command.
# Usage: tools/deps.sh LUA_VERSION [extra packages...]
set -eu
v=${1:-5.4}
shift || true
# LuaJIT is OpenResty's luajit2 build: the one Debian's nginx Lua module
# (libnginx-mod-http-lua) links, so one machine runs both. It conflicts
# with Debian's plain luajit packages: a machine has one or the other.
case "$v" in
  jit) lua="luajit2 libluajit2-5.1-dev" ;;
  5.1) lua="lua5.1 liblua5.1-0-dev" ;;
  *)   lua="lua$v liblua$v-dev" ;;
esac
# lua-cqueues and lua-luv: spec/interop_spec.lua adopts their sockets (for every Lua)
pkgs="gcc make pkg-config $lua lua-unit lua-socket lua-cqueues lua-luv python3 util-linux $*"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "deps: installing$missing"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null
  fi
else
  echo "deps: missing packages:$missing" >&2
  echo "deps: run: sudo apt-get install -y$missing" >&2
  exit 1
fi
