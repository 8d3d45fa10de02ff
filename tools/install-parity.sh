#!/bin/sh
# `make install` and the rockspec must install the same Lua modules, C
# modules and scripts: a new lua/fdpass/*.lua, src/*/*.c or bin/ script
# added to one and not the other fails here, with the difference.
# The C library, its header and pkg-config file are `make install` only by
# design: the rock's fdpass.core carries libfdpass inside it.
# Both installs run on a copy of the tree, so that the objects LuaRocks
# leaves in src/ never land in the checkout (or in someone's build).
# Usage: tools/install-parity.sh [LUA_VERSION: 5.1, 5.3, 5.4 (default) or jit]
# (KEEP=1 leaves the temporary directory with both installs and logs.)
# A module file lua/a/b.lua (or lua/a/b/init.lua) is module a.b: the rockspec
# needs the line ["a.b"] = "lua/a/b.lua", which this prints when it is missing.
set -eu
v=${1:-5.4}
abi=$v lua=lua$v
[ "$v" = jit ] && abi=5.1 lua=luajit
root=$(cd "$(dirname "$0")/.." && pwd)
rockspec=rockspec/fdpass-scm-1.rockspec
tmp=$(mktemp -d)
[ -z "${KEEP:-}" ] || echo "install-parity: working in $tmp"
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT INT TERM

# First, without building anything: every Lua file under lua/ (any depth)
# must be a module of the rockspec's build.modules (LuaRocks needs the list
# written out), and every Lua entry there a file. Says the exact lines.
(cd "$root/lua" && find . -type f -name '*.lua' | sed 's|^\./||') | while read -r f; do
  m=$(echo "$f" | sed -e 's|/init\.lua$||' -e 's|\.lua$||' | tr / .)
  echo "$m lua/$f"
done | sort > "$tmp/tree-modules"
sed -n 's/^ *\[\{0,1\}"\{0,1\}\([A-Za-z0-9_.]*\)"\{0,1\}\]\{0,1\} = "\(lua\/[^"]*\)".*/\1 \2/p' \
  "$root/$rockspec" | sort > "$tmp/rock-modules"
if ! cmp -s "$tmp/tree-modules" "$tmp/rock-modules"; then
  missing=$(comm -23 "$tmp/tree-modules" "$tmp/rock-modules")
  extra=$(comm -13 "$tmp/tree-modules" "$tmp/rock-modules")
  if [ -n "$missing" ]; then
    echo "install-parity: lua/ has modules that $rockspec does not list; add to its build.modules:" >&2
    echo "$missing" | while read -r m f; do echo "    [\"$m\"] = \"$f\"," >&2; done
  fi
  if [ -n "$extra" ]; then
    echo "install-parity: $rockspec lists modules with no such file under lua/; remove:" >&2
    echo "$extra" | while read -r m f; do echo "    [\"$m\"] = \"$f\"," >&2; done
  fi
  exit 1
fi

mkdir "$tmp/src"
tar -C "$root" --exclude=./.git --exclude='./build*' --exclude=./lua_modules \
  --exclude=./luarocks --exclude=./fdpass --exclude=./dist -cf - . | tar -C "$tmp/src" -xf -

# What the rock compiles into fdpass.core, against what the Makefile does.
grep -o '"src/[^"]*\.c"' "$root/$rockspec" | tr -d '"' | sort > "$tmp/rock-sources"
(cd "$root" && ls src/lib/*.c src/lua/*.c) | sort > "$tmp/make-sources"

if ! make -C "$tmp/src" --no-print-directory LUA_VERSION="$v" install \
     DESTDIR="$tmp/make" PREFIX=/usr/local > "$tmp/make.log" 2>&1; then
  cat "$tmp/make.log" >&2
  echo "install-parity: make install failed" >&2
  exit 1
fi
if ! (cd "$tmp/src" && luarocks --lua-version="$abi" --tree="$tmp/rock" make "$rockspec") \
     > "$tmp/rock.log" 2>&1; then
  cat "$tmp/rock.log" >&2
  echo "install-parity: luarocks make failed" >&2
  exit 1
fi

# One line per installed file, relative to where Lua looks for it
# (.../lua/5.4/, wherever pkg-config or LuaRocks put that) or to bin/:
# "lua fdpass/upgrade.lua", "c fdpass/core.so", "bin fdpass-upgrade".
list() { # tree bindir
  { find "$1" -path "*/lua/$abi/*" -name '*.lua' | sed "s|.*/lua/$abi/|lua |"
    find "$1" -path "*/lua/$abi/*" -name '*.so' | sed "s|.*/lua/$abi/|c |"
    [ ! -d "$2" ] || (cd "$2" && find . ! -type d) | sed 's|^\./|bin |'
  } | sort
}
list "$tmp/make" "$tmp/make/usr/local/bin" > "$tmp/make-files"
list "$tmp/rock" "$tmp/rock/bin" > "$tmp/rock-files"

status=0
if ! diff -u "$tmp/make-files" "$tmp/rock-files" > "$tmp/files.diff"; then
  echo "install-parity: make install (-) and the rockspec (+) install different files:" >&2
  sed '1,2d' "$tmp/files.diff" >&2
  status=1
fi
if ! diff -u "$tmp/make-sources" "$tmp/rock-sources" > "$tmp/sources.diff"; then
  echo "install-parity: fdpass.core's sources differ between the Makefile (-) and $rockspec (+):" >&2
  sed '1,2d' "$tmp/sources.diff" >&2
  status=1
fi
[ -s "$tmp/make-files" ] || { echo "install-parity: make install installed no Lua file" >&2; status=1; }

# Every module of the rock loads from the rock alone (a C source missing
# from the rockspec shows as an undefined symbol here).
# The adapters (fdpass.adapters.*) need their stack (lua-http, copas,
# luv), which is no part of the rock: they load in a second step, with the
# system's paths after the rock's, where their stack is installed.
mods=$(sed -n -e 's|^lua \(.*\)\.lua$|\1|p' -e 's|^c \(.*\)\.so$|\1|p' "$tmp/rock-files" | tr / . \
  | grep -v '^fdpass\.adapters\.')
adapters=$(sed -n 's|^lua \(fdpass/adapters/.*\)\.lua$|\1|p' "$tmp/rock-files" | tr / .)
sfx=$(echo "$abi" | tr . _) lpath="$tmp/rock/share/lua/$abi/?.lua;$tmp/rock/share/lua/$abi/?/init.lua" cpath="$tmp/rock/lib/lua/$abi/?.so"
if ! (cd / && env "LUA_PATH_$sfx=$lpath" "LUA_CPATH_$sfx=$cpath" LUA_PATH="$lpath" LUA_CPATH="$cpath" \
       FDPASS_MODULES="$mods" "$lua" -e 'for m in os.getenv("FDPASS_MODULES"):gmatch("%S+") do require(m) end') \
     2> "$tmp/load.err"; then
  echo "install-parity: the rock's modules do not load from the rock:" >&2
  cat "$tmp/load.err" >&2
  status=1
fi
if ! (cd / && env "LUA_PATH_$sfx=$lpath;;" "LUA_CPATH_$sfx=$cpath;;" LUA_PATH="$lpath;;" LUA_CPATH="$cpath;;" \
       FDPASS_MODULES="$adapters" "$lua" -e '
         local stack = { ["fdpass.adapters.http"] = "http.server", ["fdpass.adapters.cqueues"] = "cqueues",
           ["fdpass.adapters.copas"] = "copas", ["fdpass.adapters.luv"] = "luv" }
         for m in os.getenv("FDPASS_MODULES"):gmatch("%S+") do
           if not stack[m] or pcall(require, stack[m]) then require(m) end
         end') 2> "$tmp/load-adapters.err"; then
  echo "install-parity: the rock's adapters do not load (with their stacks from the system):" >&2
  cat "$tmp/load-adapters.err" >&2
  status=1
fi
[ $status = 0 ] && echo "install-parity: make install and $rockspec install the same $(wc -l < "$tmp/make-files") files, and they load ($(tr '\n' ' ' < "$tmp/make-files" | sed 's/ $//'))"
exit $status
