#!/bin/sh
# Makes sure clang and its libFuzzer runtime are here: installs them when
# run as root (Debian's libclang-rt-<version>-dev), otherwise prints the
# apt-get command. Usage: fuzz/deps.sh [clang]
set -eu
cc=${1:-clang}
rt_ok() {
  f=$("$cc" -print-file-name=libclang_rt.fuzzer-x86_64.a 2>/dev/null) || return 1
  [ -f "$f" ]
}
command -v "$cc" >/dev/null 2>&1 && rt_ok && exit 0
if command -v "$cc" >/dev/null 2>&1; then
  v=$("$cc" -dumpversion | cut -d. -f1)
  pkgs="libclang-rt-$v-dev"
else
  pkgs="clang libclang-rt-dev"
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "fuzz: installing $pkgs"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $pkgs >/dev/null
  fi
  command -v "$cc" >/dev/null 2>&1 && rt_ok && exit 0
  echo "fuzz: $cc has no libFuzzer runtime even after installing $pkgs" >&2
  exit 1
fi
echo "fuzz: $cc or its libFuzzer runtime is missing" >&2
echo "fuzz: run: sudo apt-get install -y $pkgs" >&2
exit 1
