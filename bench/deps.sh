#!/bin/sh
# The peers `make bench` compares with, and gnuplot for its plot: installed
# when run as root, otherwise the command is printed and the bench goes on
# (a missing peer's rows say "not installed").
pkgs="lua-cqueues gnuplot-nox"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "bench: installing$missing" >&2
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1; then
    apt-get update -q >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null 2>&1 ||
      echo "bench: could not install$missing; going on without" >&2
  fi
else
  echo "bench: not installed:$missing (run: sudo apt-get install -y$missing); going on without" >&2
fi
exit 0
