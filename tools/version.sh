#!/bin/sh
# The one version string is the VERSION file at the top of the tree. This
# prints it, checks that src/lib/fdpass.h says the same, or sets a new one.
# Usage: tools/version.sh          prints VERSION (e.g. 0.1.0)
#        tools/version.sh check    fails, saying what differs, when fdpass.h
#                                  disagrees with VERSION (the build runs it)
#        tools/version.sh set X.Y.Z  writes VERSION and fdpass.h's macros
set -eu
root=$(cd "${0%/*}/.." && pwd)
header=$root/src/lib/fdpass.h
version=$(tr -d ' \n' < "$root/VERSION")

valid() {
  echo "$1" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+$' ||
    { echo "version: '$1' is not MAJOR.MINOR.PATCH" >&2; exit 1; }
}
macro() { sed -n "s/^#define FDPASS_VERSION$1 \\(.*\\)\$/\\1/p" "$header"; }

case "${1:-}" in
  "")
    valid "$version"
    echo "$version" ;;
  check)
    valid "$version"
    said="$(macro _MAJOR).$(macro _MINOR).$(macro _PATCH)"
    string=$(macro "" | tr -d '"')
    if [ "$said" != "$version" ] || [ "$string" != "$version" ]; then
      echo "version: VERSION says $version, src/lib/fdpass.h says $said (FDPASS_VERSION \"$string\"):" >&2
      echo "version: run tools/version.sh set $version" >&2
      exit 1
    fi ;;
  set)
    new=${2:-}
    valid "$new"
    major=${new%%.*} rest=${new#*.}
    minor=${rest%%.*} patch=${rest#*.}
    sed -i -e "s/^#define FDPASS_VERSION_MAJOR .*/#define FDPASS_VERSION_MAJOR $major/" \
           -e "s/^#define FDPASS_VERSION_MINOR .*/#define FDPASS_VERSION_MINOR $minor/" \
           -e "s/^#define FDPASS_VERSION_PATCH .*/#define FDPASS_VERSION_PATCH $patch/" \
           -e "s/^#define FDPASS_VERSION \".*\"/#define FDPASS_VERSION \"$new\"/" "$header"
    echo "$new" > "$root/VERSION"
    echo "version: $new (VERSION, src/lib/fdpass.h); add its CHANGELOG.md entry" ;;
  *)
    echo "usage: tools/version.sh [check | set X.Y.Z]" >&2
    exit 2 ;;
esac
