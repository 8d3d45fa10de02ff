#!/bin/sh
# make dist: a release of the committed tree (HEAD, or DIST_REF), in DIST_DIR
# (default dist/):
#   fdpass-X.Y.Z.tar.gz        git archive of the tree, top directory fdpass-X.Y.Z/
#   fdpass-X.Y.Z-1.rockspec    rockspec/fdpass-scm-1.rockspec with the release's
#                              version and source: url DIST_URL, its md5, dir, tag
#   fdpass-X.Y.Z-1.src.rock    that rockspec and the tarball, as `luarocks pack`
#                              makes it: `luarocks install ./fdpass-X.Y.Z-1.src.rock`
#                              builds offline
# DIST_URL is where the tarball will be downloadable from (the rockspec's
# source.url; luarocks checks the md5 of what it downloads), by default the
# GitHub release asset https://github.com/fdpass/fdpass/releases/download/
# vX.Y.Z/fdpass-X.Y.Z.tar.gz. X.Y.Z is the VERSION file of that tree.
# Uncommitted changes are not in the release: it warns about them.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ref=${DIST_REF:-HEAD}
out=${DIST_DIR:-dist}
git rev-parse --verify -q "$ref^{commit}" >/dev/null ||
  { echo "dist: $ref is not a commit of this repository (make dist needs a git checkout)" >&2; exit 1; }
version=$(git show "$ref:VERSION" | tr -d ' \n')
echo "$version" | grep -Eq '^[0-9]+\.[0-9]+\.[0-9]+$' ||
  { echo "dist: VERSION at $ref is '$version', not MAJOR.MINOR.PATCH" >&2; exit 1; }
header=$(git show "$ref:src/lib/fdpass.h" | sed -n 's/^#define FDPASS_VERSION "\(.*\)"$/\1/p')
[ "$header" = "$version" ] ||
  { echo "dist: VERSION says $version, fdpass.h at $ref says $header (tools/version.sh set $version)" >&2; exit 1; }
git show "$ref:CHANGELOG.md" | grep -q "^## $version" ||
  echo "dist: warning: CHANGELOG.md at $ref has no '## $version' entry" >&2
[ "$ref" != HEAD ] || git diff --quiet HEAD -- ||
  echo "dist: warning: uncommitted changes are not in the release (it is HEAD, $(git rev-parse --short HEAD))" >&2

name=fdpass-$version
url=${DIST_URL:-}
url=${url:-https://github.com/fdpass/fdpass/releases/download/v$version/$name.tar.gz}
mkdir -p "$out"
out=$(cd "$out" && pwd)
tarball=$out/$name.tar.gz
rockspec=$out/$name-1.rockspec
rock=$out/$name-1.src.rock

# gzip -n: no name or time in the header, so the same tree gives the same md5
git archive --format=tar --prefix="$name/" "$ref" | gzip -n -9 > "$tarball"
md5=$(md5sum "$tarball" | cut -d' ' -f1)

# The scm rockspec's version line and source table, replaced.
git show "$ref:rockspec/fdpass-scm-1.rockspec" | awk -v v="$version-1" -v url="$url" -v md5="$md5" \
  -v dir="$name" -v tag="v$version" '
  /^version = / { print "version = \"" v "\""; next }
  /^source = \{/ { skip = 1
    print "source = {"
    print "  url = \"" url "\","
    print "  md5 = \"" md5 "\","
    print "  dir = \"" dir "\","
    print "  tag = \"" tag "\","
    print "}"
    next }
  skip && /^\}/ { skip = 0; next }
  skip { next }
  /^-- The development rock/ { comment = 1 }
  comment && /^--/ { next }
  { comment = 0; print }' > "$rockspec"
grep -q "^version = \"$version-1\"" "$rockspec" && grep -q "md5 = \"$md5\"" "$rockspec" ||
  { echo "dist: could not make $rockspec from rockspec/fdpass-scm-1.rockspec" >&2; exit 1; }

# A source rock is a zip of the rockspec and the source file under the
# name it has in source.url (luarocks looks it up by that name).
command -v zip >/dev/null || { echo "dist: zip is missing (apt-get install zip)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
cp "$rockspec" "$tmp/"
cp "$tarball" "$tmp/$(basename "$url")"
rm -f "$rock"
(cd "$tmp" && zip -q -X "$rock" "$(basename "$rockspec")" "$(basename "$url")")

echo "dist: $name from $(git rev-parse --short "$ref") (source.url $url)"
for f in "$tarball" "$rockspec" "$rock"; do
  echo "  ${f#"$root"/}  $(wc -c < "$f") bytes"
done
