#!/usr/bin/env bash
# `make install` / `make uninstall`: puts moongate in place like a server.
#   BINDIR/moongate                   the binary
#   DATADIR/moongate/lua/moongate/    its Lua library (found from the binary's
#                                     directory as ../share/moongate/lua, no LUA_PATH)
#   DATADIR/moongate/examples/        the examples (`moongate run` alone runs the demo)
#   DOCDIR/                           README.md and docs/
#   SYSCONFDIR/moongate/gateway.lua   an example config (kept if it exists)
#   SYSCONFDIR/logrotate.d/moongate   log rotation (SIGUSR1)
#   UNITDIR/moongate.service          the systemd unit
#   SYSUSERSDIR/moongate.conf         the `moongate` user (systemd-sysusers)
# Everything under DESTDIR when it is set (packaging).
set -euo pipefail
cd "$(dirname "$0")/.."
action=${1:-install}
: "${DESTDIR:=}" "${PREFIX:=/usr/local}" "${BINDIR:=$PREFIX/bin}" "${DATADIR:=$PREFIX/share}"
: "${DOCDIR:=$DATADIR/doc/moongate}" "${SYSCONFDIR:=$PREFIX/etc}"
: "${UNITDIR:=$PREFIX/lib/systemd/system}" "${SYSUSERSDIR:=$PREFIX/lib/sysusers.d}"
: "${INSTALL_BIN:=build/moongate}"
D=$DESTDIR
pkg=scripts/packaging

case "$action" in
install)
    [ -x "$INSTALL_BIN" ] || { echo "install: $INSTALL_BIN is not built (make all)" >&2; exit 1; }
    install -d "$D$BINDIR" "$D$DATADIR/moongate/lua" "$D$DATADIR/moongate/examples" \
        "$D$DOCDIR" "$D$SYSCONFDIR/moongate" "$D$SYSCONFDIR/logrotate.d" "$D$UNITDIR" \
        "$D$SYSUSERSDIR"
    install -m 755 "$INSTALL_BIN" "$D$BINDIR/moongate"
    rm -rf "$D$DATADIR/moongate/lua/moongate"
    cp -R lua/moongate "$D$DATADIR/moongate/lua/"
    for ex in examples/*/; do
        rm -rf "$D$DATADIR/moongate/$ex"
        cp -R "$ex" "$D$DATADIR/moongate/examples/"
        find "$D$DATADIR/moongate/$ex" -name .gitignore -delete
    done
    install -m 644 README.md docs/*.md "$D$DOCDIR/"
    if [ -e "$D$SYSCONFDIR/moongate/gateway.lua" ]; then
        echo "install: keeping $D$SYSCONFDIR/moongate/gateway.lua"
    else
        install -m 644 "$pkg/gateway.lua" "$D$SYSCONFDIR/moongate/gateway.lua"
    fi
    install -m 644 "$pkg/logrotate" "$D$SYSCONFDIR/logrotate.d/moongate"
    sed -e "s|@BINDIR@|$BINDIR|g" -e "s|@SYSCONFDIR@|$SYSCONFDIR|g" -e "s|@DOCDIR@|$DOCDIR|g" \
        "$pkg/moongate.service.in" >"$D$UNITDIR/moongate.service"
    chmod 644 "$D$UNITDIR/moongate.service"
    install -m 644 "$pkg/sysusers.conf" "$D$SYSUSERSDIR/moongate.conf"
    echo "installed moongate in ${D:-}$PREFIX (config: $SYSCONFDIR/moongate/gateway.lua)"
    if [ -z "$D" ]; then
        echo "next: systemd-sysusers && systemctl daemon-reload && systemctl enable --now moongate"
    fi
    ;;
uninstall)
    rm -f "$D$BINDIR/moongate" "$D$UNITDIR/moongate.service" "$D$SYSUSERSDIR/moongate.conf" \
        "$D$SYSCONFDIR/logrotate.d/moongate"
    rm -rf "$D$DATADIR/moongate" "$D$DOCDIR"
    echo "uninstalled moongate (kept $SYSCONFDIR/moongate/gateway.lua and the logs)"
    ;;
*)
    echo "usage: scripts/install.sh install|uninstall" >&2
    exit 2
    ;;
esac
