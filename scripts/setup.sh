#!/usr/bin/env bash
# Idempotent host set-up for ftorch on Debian 12: system packages (QEMU 10.0 from
# bookworm-backports, the rest from bookworm) and the Python venv at .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '%s setup: %s\n' "$(date -u +%FT%TZ)" "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "setup: must run as root (it installs Debian packages)" >&2; exit 2
fi
if ! grep -q '^12' /etc/debian_version 2>/dev/null; then
  echo "setup: needs Debian 12 (bookworm); found $(cat /etc/debian_version 2>/dev/null || echo unknown)" >&2; exit 2
fi

BACKPORTS=/etc/apt/sources.list.d/ftorch-bookworm-backports.sources
if [ ! -f "$BACKPORTS" ]; then
  log "adding the bookworm-backports apt source"
  cat > "$BACKPORTS" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  rm -f /var/lib/ftorch-apt-stamp
fi

SYSTEM_PKGS=(libvirt-daemon-system libvirt-dev pkg-config busybox-static linux-image-amd64
             iproute2 gcc make cpio xz-utils kmod python3-venv python3-dev tini
             openssh-server openssh-client prometheus ansible ansible-lint nftables systemd
             nfs-ganesha nfs-ganesha-vfs libnfs13)
QEMU_PKGS=(qemu-system-x86 qemu-utils)
missing() {
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done
}
qemu_ok() { dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null | grep -q '^1:10\.0'; }

need=$(missing "${SYSTEM_PKGS[@]}")
if [ -n "$need" ] || ! qemu_ok; then
  log "installing Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # shellcheck disable=SC2086
  [ -z "$need" ] || apt-get install -y -q --no-install-recommends $need
  # A separate transaction: mixing suites in one install leaves QEMU's deps unresolvable.
  qemu_ok || apt-get install -y -q --no-install-recommends -t bookworm-backports "${QEMU_PKGS[@]}"
fi
qemu_ok || { echo "setup: QEMU 10.0 from bookworm-backports did not install" >&2; exit 1; }

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.ftorch-deps-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  log "installing Python dependencies into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.ftorch-deps-*; touch "$stamp"
fi
log "ready: $(qemu-system-x86_64 --version | head -1)"
