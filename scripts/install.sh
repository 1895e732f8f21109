#!/usr/bin/env bash
# `make install` and `make uninstall`: medlb as a systemd service (docs/install.md).
#
#   scripts/install.sh install | uninstall
#
# install lays out:
#   /opt/medlb/                          a virtual environment of the system's /usr/bin/python3 holding medlb
#   /usr/local/bin/medlb                 -> /opt/medlb/bin/medlb
#   /etc/medlb/medlb.yaml                from packaging/medlb.yaml, only if missing
#   /etc/medlb/token                     a new admin API token, only if missing
#   /var/lib/medlb/                      state: operator states, audit, the admin certificate
#   /usr/local/lib/systemd/system/medlb.service
# uninstall removes all of it but /etc/medlb and /var/lib/medlb.
#
# DESTDIR stages everything under another root (for packaging, and the tests): nothing
# outside it is touched and systemd is not told. The environment is built inside
# DESTDIR and its paths are then rewritten to where it will run.
# SYSTEM_PYTHON overrides /usr/bin/python3.
set -euo pipefail
cd "$(dirname "$0")/.."

DESTDIR=${DESTDIR:-}
SYSTEM_PYTHON=${SYSTEM_PYTHON:-/usr/bin/python3}
PREFIX=/opt/medlb
BINDIR=/usr/local/bin
UNITDIR=/usr/local/lib/systemd/system
CONFDIR=/etc/medlb
STATEDIR=/var/lib/medlb

say() { echo "medlb install: $*"; }
die() { echo "medlb install: $*" >&2; exit 1; }

# Tell systemd only on a real install, on a machine that runs it.
systemd_running() { [ -z "$DESTDIR" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; }

install_medlb() {
  local venv="$DESTDIR$PREFIX"
  [ -x "$SYSTEM_PYTHON" ] || die "$SYSTEM_PYTHON is missing (apt install python3 python3-venv)"
  "$SYSTEM_PYTHON" -c 'import ensurepip, venv' 2>/dev/null || die "$SYSTEM_PYTHON has no venv (apt install python3-venv)"
  [ -n "$DESTDIR" ] || [ "$(id -u)" -eq 0 ] || die "run it as root (or stage it with DESTDIR=...)"

  say "building $PREFIX with $SYSTEM_PYTHON"
  "$SYSTEM_PYTHON" -m venv --clear "$venv"
  # --no-compile, then compiled below with the paths it will run from: under
  # ProtectSystem=strict nothing can write .pyc files later.
  # Built from a copy: setuptools builds in ./build, where files of an older checkout
  # would linger and be installed too.
  source_copy=$(mktemp -d)
  trap 'rm -rf "$source_copy"' EXIT
  cp -r pyproject.toml README.md src "$source_copy/"
  rm -rf "$source_copy"/src/*.egg-info
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-compile "$source_copy"
  if [ -n "$DESTDIR" ]; then
    # Scripts' #! lines, activate and pyvenv.cfg name the staging path: point them at PREFIX.
    grep -rlIF --null "$venv" "$venv/bin" "$venv/pyvenv.cfg" | xargs -0 -r sed -i "s|$venv|$PREFIX|g"
  fi
  "$venv/bin/python" -m compileall -f -q -s "${DESTDIR:-/}" -p / "$venv/lib" >/dev/null

  install -d "$DESTDIR$BINDIR"
  ln -sfn "$PREFIX/bin/medlb" "$DESTDIR$BINDIR/medlb"

  install -d -m 0750 "$DESTDIR$CONFDIR" "$DESTDIR$STATEDIR"
  if [ -e "$DESTDIR$CONFDIR/medlb.yaml" ]; then
    say "kept $CONFDIR/medlb.yaml (it exists)"
  else
    install -m 0640 packaging/medlb.yaml "$DESTDIR$CONFDIR/medlb.yaml"
    say "wrote $CONFDIR/medlb.yaml: one service on loopback; replace it with yours"
  fi
  if [ -e "$DESTDIR$CONFDIR/token" ]; then
    say "kept $CONFDIR/token (it exists)"
  else
    (umask 077 && "$SYSTEM_PYTHON" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$DESTDIR$CONFDIR/token")
    say "wrote a new admin API token to $CONFDIR/token"
  fi

  install -D -m 0644 packaging/medlb.service "$DESTDIR$UNITDIR/medlb.service"
  if systemd_running; then
    systemctl daemon-reload
    say "installed; start it with: systemctl enable --now medlb"
  else
    say "installed under ${DESTDIR:-/}; systemd is not running here, so it was not told"
  fi
}

uninstall_medlb() {
  if systemd_running; then
    systemctl disable --now medlb 2>/dev/null || true
  fi
  rm -f "$DESTDIR$UNITDIR/medlb.service"
  if [ "$(readlink "$DESTDIR$BINDIR/medlb" 2>/dev/null)" = "$PREFIX/bin/medlb" ]; then
    rm -f "$DESTDIR$BINDIR/medlb"
  fi
  rm -rf "${DESTDIR}${PREFIX:?}"
  if systemd_running; then
    systemctl daemon-reload
  fi
  say "removed; kept $CONFDIR (config, token) and $STATEDIR (operator states, audit): remove them yourself if wanted"
}

case "${1:-}" in
  install) install_medlb ;;
  uninstall) uninstall_medlb ;;
  *) die "usage: $0 install | uninstall" ;;
esac
