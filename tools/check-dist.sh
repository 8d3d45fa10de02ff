#!/bin/sh
# Checks a release made by `make dist` as its users would meet it:
#  - both rockspecs pass `luarocks lint`; the rockspec's md5 is the tarball's;
#  - the source rock installs offline (no network: unshare -n when root)
#    into an empty tree on every Lua of LUAS that is installed (5.1, 5.3,
#    5.4, LuaJIT: LuaRocks' 5.1 with LUA_INCDIR=/usr/include/luajit-2.1),
#    and `require "fdpass"` and every module then work from /;
#  - `luarocks pack` makes the same source rock from the rockspec (its
#    url pointed at the local tarball), and a binary rock of the install;
#  - the tarball alone builds with make, and `luarocks make` of the scm
#    rockspec works in it.
# Usage: tools/check-dist.sh [DIST_DIR (default dist)]
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
dist=$(cd "${1:-$root/dist}" && pwd)
version=$("$root/tools/version.sh")
name=fdpass-$version
tarball=$dist/$name.tar.gz rockspec=$dist/$name-1.rockspec rock=$dist/$name-1.src.rock
LUAS=${LUAS:-5.1 5.3 5.4 jit}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
fail() { echo "check-dist: $*" >&2; exit 1; }
for f in "$tarball" "$rockspec" "$rock"; do [ -f "$f" ] || fail "$f is missing (make dist)"; done
offline=""
if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then offline="unshare -n"; fi

luarocks lint "$rockspec" || fail "luarocks lint $rockspec"
luarocks lint "$root/rockspec/fdpass-scm-1.rockspec" || fail "luarocks lint rockspec/fdpass-scm-1.rockspec"
md5=$(md5sum "$tarball" | cut -d' ' -f1)
grep -q "md5 = \"$md5\"" "$rockspec" || fail "the rockspec's md5 is not the tarball's ($md5)"
echo "check-dist: luarocks lint clean on both rockspecs; md5 $md5 matches"

# What every module of the rock is called, from the rockspec itself.
mods=$(sed -n 's/^ *\[\{0,1\}"\{0,1\}\([a-z_.]*\)"\{0,1\}\]\{0,1\} = [{"].*/\1/p' "$rockspec" | grep '^fdpass' | tr '\n' ' ')
[ -n "$mods" ] || fail "no module found in $rockspec"
# The adapters need their stack (cqueues, lua-http, copas, luv), which is
# no part of the rock: they load in a second step, with the system's paths
# after the tree's; a stack this Lua lacks is named, anything else fails.
adapters=$(echo "$mods" | tr ' ' '\n' | grep '^fdpass\.adapters\.' | tr '\n' ' ')
mods=$(echo "$mods" | tr ' ' '\n' | grep -v '^fdpass\.adapters\.' | tr '\n' ' ')

# luarocks and lua for one entry of LUAS; sets abi, lua, extra
pick() {
  case "$1" in
    jit) abi=5.1 lua=luajit extra="LUA_INCDIR=/usr/include/luajit-2.1" ;;
    *) abi=$1 lua=lua$1 extra="" ;;
  esac
}
# require every module of the rock from /, with only the tree on the paths
try_tree() { # tree label
  sfx=$(echo "$abi" | tr . _) lpath="$1/share/lua/$abi/?.lua;$1/share/lua/$abi/?/init.lua" cpath="$1/lib/lua/$abi/?.so"
  (cd / && env "LUA_PATH_$sfx=$lpath" "LUA_CPATH_$sfx=$cpath" LUA_PATH="$lpath" LUA_CPATH="$cpath" \
    FDPASS_MODULES="$mods" "$lua" -e '
    local fdpass = require "fdpass"
    for m in os.getenv("FDPASS_MODULES"):gmatch("%S+") do require(m) end
    local a, b = assert(fdpass.socketpair())
    local r = assert(io.open("/dev/null"))
    assert(a:send("x", { fdpass.dup(r) }, 2))
    local data, fds = assert(b:recv(2))
    assert(data == "x" and #fds == 1)
    fds[1]:close(); r:close(); a:close(); b:close()
    io.write(fdpass._VERSION, " ", (package.searchpath and package.searchpath("fdpass.core", package.cpath)) or "")') ||
    fail "$2: require \"fdpass\" from / failed"
  (cd / && env "LUA_PATH_$sfx=$lpath;;" "LUA_CPATH_$sfx=$cpath;;" LUA_PATH="$lpath;;" LUA_CPATH="$cpath;;" \
    FDPASS_MODULES="$adapters" "$lua" -e '
    local lacks = {}
    for m in os.getenv("FDPASS_MODULES"):gmatch("%S+") do
      local ok, err = pcall(require, m)
      local missing = not ok and tostring(err):match("module .([%w_.]+). not found")
      if not ok and not (missing and not missing:find("^fdpass")) then error(m .. ": " .. tostring(err), 0) end
      if missing then lacks[#lacks + 1] = m:match("[^.]+$") .. " (no " .. missing .. ")" end
    end
    io.write(#lacks > 0 and "; adapters without their stack here: " .. table.concat(lacks, ", ") or "; every adapter loads", "\n")') ||
    fail "$2: an adapter failed to load from the tree"
}

n=0
for v in $LUAS; do
  pick "$v"
  command -v "$lua" >/dev/null || { echo "check-dist: $lua not installed, skipped"; continue; }
  tree=$tmp/tree-$v
  (cd "$tmp" && $offline luarocks --lua-version="$abi" --tree="$tree" install "$rock" $extra) \
    > "$tmp/install-$v.log" 2>&1 || { cat "$tmp/install-$v.log" >&2; fail "luarocks install $rock on $lua failed"; }
  got=$(try_tree "$tree" "$lua")
  echo "check-dist: $lua: luarocks install ./$(basename "$rock")${offline:+ (offline)} into an empty tree; require from /: $got"
  n=$((n + 1))
done
[ $n -gt 0 ] || fail "no Lua of LUAS ($LUAS) is installed"

# luarocks pack from the rockspec: the same two files as the source rock
mkdir "$tmp/pack"
sed "s|^  url = .*|  url = \"file://$tarball\",|" "$rockspec" > "$tmp/pack/$name-1.rockspec"
(cd "$tmp/pack" && $offline luarocks pack "$name-1.rockspec") > "$tmp/pack.log" 2>&1 ||
  { cat "$tmp/pack.log" >&2; fail "luarocks pack $name-1.rockspec failed"; }
packed=$(unzip -Z1 "$tmp/pack/$name-1.src.rock" | sort | tr '\n' ' ')
ours=$(unzip -Z1 "$rock" | sort | tr '\n' ' ')
[ "$packed" = "$ours" ] || fail "luarocks pack makes a rock of [$packed], make dist [$ours]"
pick 5.4
if command -v lua5.4 >/dev/null; then
  (cd "$tmp" && luarocks --lua-version=5.4 --tree="$tmp/tree-5.4" pack fdpass "$version-1") > "$tmp/bpack.log" 2>&1 ||
    { cat "$tmp/bpack.log" >&2; fail "luarocks pack fdpass $version-1 (binary rock) failed"; }
  echo "check-dist: luarocks pack: source rock [$packed], binary rock $(cd "$tmp" && ls fdpass-*.rock | grep -v src)"
fi

# The tarball stands alone: make builds it, luarocks make of the scm rockspec works in it.
tar -C "$tmp" -xzf "$tarball"
src=$tmp/$name
for f in VERSION LICENSE CHANGELOG.md rockspec/fdpass-scm-1.rockspec; do
  [ -f "$src/$f" ] || fail "the tarball has no $f"
done
make -C "$src" -j4 > "$tmp/make.log" 2>&1 || { tail -20 "$tmp/make.log" >&2; fail "make in the unpacked tarball failed"; }
(cd "$src" && $offline luarocks --lua-version=5.4 --tree="$tmp/tree-make" make rockspec/fdpass-scm-1.rockspec) \
  > "$tmp/make-rock.log" 2>&1 || { cat "$tmp/make-rock.log" >&2; fail "luarocks make rockspec/fdpass-scm-1.rockspec failed"; }
pick 5.4
got=$(try_tree "$tmp/tree-make" "luarocks make")
echo "check-dist: the tarball builds with make, and luarocks make rockspec/fdpass-scm-1.rockspec in it: $got"
echo "check-dist: ok ($name: $n Luas)"
