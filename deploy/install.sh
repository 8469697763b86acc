#!/usr/bin/env bash
# Installs ferry on a host without Debian packaging (on Debian, use the .deb).
#
#   sudo deploy/install.sh                # builds (as the user who ran sudo), installs under /usr/local
#   PREFIX=/usr sudo deploy/install.sh    # or under /usr
#   DESTDIR=/tmp/stage deploy/install.sh  # stage into a directory (packaging, tests)
#   SKIP_BUILD=1 ...                      # use the binaries already in target/release
#
# Installs ferryd and ferry, the systemd units (paths adjusted to PREFIX), the
# example /etc/ferry/ferryd.toml (never over an existing one), man pages,
# shell completions, and the docs with the Prometheus alert rules.
# Enable with: systemctl enable --now ferryd ferry-healthcheck.timer
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
build=(cargo build --release --locked -p ferryd -p ferry)
if [ -z "${SKIP_BUILD:-}" ]; then
  if [ "$(id -u)" = 0 ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
    # Built as the user who ran sudo: their rustup, their target/, no
    # root-owned files left in the tree. A login shell finds ~/.cargo/bin.
    echo "building as $SUDO_USER: ${build[*]}"
    sudo -u "$SUDO_USER" -H bash -lc "cd '$PWD' && ${build[*]}" || {
      echo "install.sh: the build as $SUDO_USER failed; build first as yourself (${build[*]}), then run: sudo SKIP_BUILD=1 deploy/install.sh" >&2
      exit 1
    }
  elif command -v cargo >/dev/null 2>&1; then
    "${build[@]}"
  else
    echo "install.sh: no cargo on this PATH; build first as yourself (${build[*]}), then run: sudo SKIP_BUILD=1 deploy/install.sh" >&2
    exit 1
  fi
fi
bin=target/release
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
"$bin/ferryd" generate-docs "$stage"
"$bin/ferry" generate-docs "$stage"

install -Dm755 "$bin/ferryd" "$DESTDIR$PREFIX/bin/ferryd"
install -Dm755 "$bin/ferry" "$DESTDIR$PREFIX/bin/ferry"
# udp_upload's receive buffer (see the file); applied now unless staging.
install -Dm644 deploy/60-ferry.conf "$DESTDIR/etc/sysctl.d/60-ferry.conf"
if [ -z "${DESTDIR:-}" ] && command -v sysctl >/dev/null 2>&1; then
  sysctl -q -p /etc/sysctl.d/60-ferry.conf || true
fi
for unit in ferryd.service ferry-healthcheck.service ferry-healthcheck.timer; do
  install -d "$DESTDIR/etc/systemd/system"
  sed -e "s|/usr/bin/ferry|$PREFIX/bin/ferry|g" "deploy/$unit" > "$DESTDIR/etc/systemd/system/$unit"
  chmod 644 "$DESTDIR/etc/systemd/system/$unit"
done
if [ ! -e "$DESTDIR/etc/ferry/ferryd.toml" ]; then
  install -Dm644 deploy/ferryd.toml "$DESTDIR/etc/ferry/ferryd.toml"
else
  echo "kept the existing /etc/ferry/ferryd.toml (the new example is deploy/ferryd.toml)"
fi
for page in "$stage"/man/man8/*.8; do install -Dm644 "$page" "$DESTDIR$PREFIX/share/man/man8/$(basename "$page")"; done
for page in "$stage"/man/man1/*.1; do install -Dm644 "$page" "$DESTDIR$PREFIX/share/man/man1/$(basename "$page")"; done
install -Dm644 "$stage/completions/ferryd.bash" "$DESTDIR$PREFIX/share/bash-completion/completions/ferryd"
install -Dm644 "$stage/completions/ferry.bash" "$DESTDIR$PREFIX/share/bash-completion/completions/ferry"
install -Dm644 "$stage/completions/_ferryd" "$DESTDIR$PREFIX/share/zsh/site-functions/_ferryd"
install -Dm644 "$stage/completions/_ferry" "$DESTDIR$PREFIX/share/zsh/site-functions/_ferry"
install -Dm644 "$stage/completions/ferryd.fish" "$DESTDIR$PREFIX/share/fish/vendor_completions.d/ferryd.fish"
install -Dm644 "$stage/completions/ferry.fish" "$DESTDIR$PREFIX/share/fish/vendor_completions.d/ferry.fish"
install -Dm644 docs/DEPLOY.md "$DESTDIR$PREFIX/share/doc/ferry/DEPLOY.md"
install -Dm644 docs/PROTOCOLS.md "$DESTDIR$PREFIX/share/doc/ferry/PROTOCOLS.md"
install -Dm644 deploy/ferry-alerts.yml "$DESTDIR$PREFIX/share/doc/ferry/ferry-alerts.yml"

if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  echo "installed; start with: systemctl enable --now ferryd ferry-healthcheck.timer"
else
  echo "installed into ${DESTDIR:-/}"
fi
