#!/bin/sh
# What `make install` gives a user, checked in a staging tree: a DESTDIR
# install with PREFIX=/usr, a C program compiled and linked (shared and
# static) with `pkg-config --define-prefix` against it and run, the Lua
# module required from / out of it, then `make uninstall`, which must leave
# no file behind.
# Usage: tools/check-install.sh [LUA_VERSION: 5.4 (default), 5.3, 5.1, jit]
set -eu
v=${1:-5.4}
abi=$v lua=lua$v
[ "$v" = jit ] && abi=5.1 lua=luajit
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
dest=$tmp/dest
fail() { echo "check-install: $*" >&2; exit 1; }
m() { make -C "$root" --no-print-directory LUA_VERSION="$v" PREFIX=/usr DESTDIR="$dest" "$@"; }

m install > "$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "make install failed"; }
version=$("$root/tools/version.sh")
pc=$(find "$dest" -name fdpass.pc)
[ -n "$pc" ] || fail "no fdpass.pc installed"
export PKG_CONFIG_PATH="$(dirname "$pc")"
libdir=$(pkg-config --define-prefix --variable=libdir fdpass)
echo "check-install: installed $(find "$dest" ! -type d | wc -l) files; pkg-config file ${pc#"$dest"}"
grep -q '^libdir=${prefix}/' "$pc" && grep -q '^includedir=${prefix}/' "$pc" ||
  fail "fdpass.pc has absolute paths: $(grep dir= "$pc" | tr '\n' ' ')"
case "${libdir#"$dest"}" in
  /usr/lib/*-*-*) [ -f "$libdir/libfdpass.so.$version" ] || fail "pkg-config --define-prefix says libdir=$libdir: no libfdpass there" ;;
  *) [ ! -f /etc/debian_version ] || fail "LIBDIR ${libdir#"$dest"} is not the multiarch directory" ;;
esac

# A C program, as its author would build it: only pkg-config knows where.
cat > "$tmp/app.c" <<'C'
#include <fdpass.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    int sv[2], in = -1;
    size_t n = 0;
    char buf[8];
    (void)argc;
    if (strcmp(FDPASS_VERSION, argv[1]) != 0)
        return fprintf(stderr, "header says %s\n", FDPASS_VERSION), 1;
    if (fdpass_socketpair(SOCK_SEQPACKET, sv) != 0)
        return 2;
    int out = STDOUT_FILENO;
    if (fdpass_sendmsg(sv[0], "hi", 2, &out, 1, 1000) != 2)
        return 3;
    if (fdpass_recvmsg(sv[1], buf, sizeof buf, &in, 1, &n, 1000) != 2 || n != 1)
        return 4;
    dprintf(in, "passed a descriptor with libfdpass %s\n", FDPASS_VERSION);
    close(in);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
C
flags=$(pkg-config --define-prefix --cflags --libs fdpass) || fail "pkg-config --define-prefix fdpass failed"
echo "check-install: pkg-config --define-prefix --cflags --libs fdpass: $flags"
[ "$(pkg-config --modversion fdpass)" = "$version" ] || fail "pkg-config says $(pkg-config --modversion fdpass), VERSION $version"
cc -Wall -Wextra -Werror "$tmp/app.c" -o "$tmp/app" $flags || fail "the C program did not build with pkg-config's flags"
LD_LIBRARY_PATH="$libdir" "$tmp/app" "$version" || fail "the C program failed"
ldd_out=$(LD_LIBRARY_PATH="$libdir" ldd "$tmp/app" | grep libfdpass) || true
case "$ldd_out" in *"$dest"*) ;; *) fail "the program did not link the installed libfdpass.so: $ldd_out" ;; esac
cc -Wall -Wextra -Werror "$tmp/app.c" -o "$tmp/app-static" $(pkg-config --define-prefix --cflags fdpass) \
  "$libdir/libfdpass.a" || fail "the C program did not link libfdpass.a"
"$tmp/app-static" "$version" >/dev/null || fail "the statically linked program failed"

# The Lua modules, from / and only from the staging tree.
lmod=$(find "$dest" -name fdpass.lua -path "*/lua/$abi/*")
cmod=$(find "$dest" -name core.so -path "*/lua/$abi/fdpass/*")
[ -n "$lmod" ] && [ -n "$cmod" ] || fail "no Lua module installed for Lua $abi"
sfx=$(echo "$abi" | tr . _) lpath="$(dirname "$lmod")/?.lua" cpath="$(dirname "$(dirname "$cmod")")/?.so"
(cd / && env "LUA_PATH_$sfx=$lpath" "LUA_CPATH_$sfx=$cpath" LUA_PATH="$lpath" LUA_CPATH="$cpath" "$lua" -e '
  local fdpass = require "fdpass"
  for _, m in ipairs { "fdpass.os", "fdpass.net", "fdpass.loop", "fdpass.codec", "fdpass.upgrade", "fdpass.systemd" } do
    require(m)
  end
  assert(package.loaded["fdpass.core"])
  local a, b = assert(fdpass.socketpair())
  a:close(); b:close()
  print("check-install: " .. _VERSION .. ": require \"fdpass\" " .. fdpass._VERSION .. " from the install")') ||
  fail "the installed Lua modules do not load"

# The CLI, run through its own #! line: it names the Lua of LUA_VERSION
# (bin/ says lua5.4) and loads the installed modules. --help needs no
# module; asking an address nobody listens on needs them all, and must fail
# as a missing server (exit 2), not as a module that does not load.
cli=$(find "$dest" -path '*/bin/fdpass-upgrade')
[ -n "$cli" ] || fail "no fdpass-upgrade installed"
[ "$(head -n 1 "$cli")" = "#!/usr/bin/env $lua" ] || fail "fdpass-upgrade starts with $(head -n 1 "$cli"), not #!/usr/bin/env $lua"
[ -x "$cli" ] || fail "fdpass-upgrade is not executable"
run_cli() { (cd / && env "LUA_PATH_$sfx=$lpath" "LUA_CPATH_$sfx=$cpath" LUA_PATH="$lpath" LUA_CPATH="$cpath" "$cli" "$@"); }
out=$(run_cli --help) || fail "fdpass-upgrade --help failed: $out"
case "$out" in "usage: fdpass-upgrade ADDR"*) ;; *) fail "fdpass-upgrade --help printed: $out" ;; esac
rc=0
out=$(run_cli "@fdpass-check-install-nobody-$$" 2>&1) || rc=$?
case "$rc:$out" in
  "2:fdpass-upgrade: connect @fdpass-check-install-nobody-$$: Connection refused") ;;
  *) fail "fdpass-upgrade with the installed modules (exit $rc): $out" ;;
esac
echo "check-install: ${cli#"$dest"}: $(head -n 1 "$cli"), --help and a request with the installed modules"

m uninstall > "$tmp/uninstall.log" 2>&1 || { cat "$tmp/uninstall.log" >&2; fail "make uninstall failed"; }
left=$(find "$dest" ! -type d)
[ -z "$left" ] || fail "make uninstall left: $left"
echo "check-install: make uninstall removed every file make install put"
