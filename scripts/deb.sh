#!/usr/bin/env bash
# `make deb`: builds build/moongate_<version>-1_<arch>.deb with dpkg-deb (no
# debhelper): the binary built with Debian's hardening flags, the files of
# `make install` with PREFIX=/usr, a config in /etc/moongate/gateway.lua (a
# conffile), the systemd unit, a logrotate snippet and the `moongate` user.
# Runtime dependencies come from dpkg-shlibdeps; lintian checks the result
# and the script fails on any E: line.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^#define MG_VERSION "\(.*\)"/\1/p' src/version.h)-1
arch=$(dpkg --print-architecture)
pkg=scripts/packaging
stage=build/deb/moongate
out=build/moongate_${version}_${arch}.deb

echo "deb: building the binary (dpkg-buildflags)"
make --no-print-directory build/pkg/moongate >/dev/null
rm -rf build/deb
DESTDIR=$stage PREFIX=/usr SYSCONFDIR=/etc UNITDIR=/lib/systemd/system \
    SYSUSERSDIR=/usr/lib/sysusers.d INSTALL_BIN=build/pkg/moongate \
    bash scripts/install.sh install >/dev/null
# debug info out, the dynamic symbols (mg_ffi_* for LuaJIT's ffi.C) stay
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/moongate"
doc=$stage/usr/share/doc/moongate
install -m 644 "$pkg/debian/copyright" "$doc/copyright"
sed -e "s|@VERSION@|$version|" -e "s|@DATE@|$(date -R -u -d @"${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}")|" \
    "$pkg/debian/changelog.in" | gzip -9n >"$doc/changelog.Debian.gz"
chmod 644 "$doc/changelog.Debian.gz"

# runtime library dependencies of the binary
shl=$(mktemp -d)
mkdir "$shl/debian"
printf 'Source: moongate\n\nPackage: moongate\nArchitecture: any\n' >"$shl/debian/control"
shlibs=$(cd "$shl" && dpkg-shlibdeps -O -e"$OLDPWD/$stage/usr/bin/moongate" 2>/dev/null |
         sed -n 's/^shlibs:Depends=//p')
rm -rf "$shl"
[ -n "$shlibs" ] || { echo "deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

mkdir -p "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s#@VERSION@#$version#" -e "s#@ARCH@#$arch#" -e "s#@SIZE@#$size#" \
    -e "s#@SHLIBS@#$shlibs#" "$pkg/debian/control.in" >"$stage/DEBIAN/control"
install -m 644 "$pkg/debian/conffiles" "$stage/DEBIAN/conffiles"
install -m 755 "$pkg/debian/postinst" "$pkg/debian/postrm" "$stage/DEBIAN/"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 644 "$stage/DEBIAN/md5sums"
find "$stage" -type d -exec chmod 755 {} +

dpkg-deb --root-owner-group -Zxz --build "$stage" "$out" >/dev/null
echo "deb: $out"
echo "deb: lintian (a minute)"
report=$(lintian --tag-display-limit 0 "$out" 2>&1 || true)
[ -n "$report" ] && echo "$report"
if echo "$report" | grep -q '^E:'; then
    echo "deb: lintian reports errors" >&2
    exit 1
fi
echo "deb: lintian: no errors"
