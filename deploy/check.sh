#!/usr/bin/env bash
# Checks what ships (run by .ci/run): the unit files lint clean, the .deb holds
# every file the unit expects where it expects it, and install.sh stages the
# same layout. Builds the .deb first (needs cargo-deb).
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "deploy/check.sh: $*" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "-- systemd-analyze verify (any output fails: unknown keys only warn)"
cargo build --release --locked -q -p ferryd -p ferry
mkdir -p "$work/units"
for unit in ferryd.service ferry-healthcheck.service ferry-healthcheck.timer; do
  sed -e "s|/usr/bin/ferryd|$PWD/target/release/ferryd|g" \
      -e "s|/usr/bin/ferry |$PWD/target/release/ferry |g" "deploy/$unit" > "$work/units/$unit"
done
out=$(cd "$work/units" && systemd-analyze verify --man=no ferryd.service ferry-healthcheck.service ferry-healthcheck.timer 2>&1) \
  || fail "systemd-analyze verify failed: $out"
[ -z "$out" ] || fail "systemd-analyze verify printed: $out"
echo "-- systemd-analyze security --offline=yes ferryd.service"
(cd "$work/units" && systemd-analyze security --offline=yes --threshold=20 ferryd.service | tail -1)

echo "-- the Debian package"
deploy/build-deb.sh >/dev/null
deb=$(ls target/debian/ferry_*.deb | tail -1)
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' > "$work/contents"
for want in /usr/bin/ferryd /usr/bin/ferry /etc/ferry/ferryd.toml \
    /usr/lib/systemd/system/ferryd.service /usr/lib/systemd/system/ferry-healthcheck.service \
    /usr/lib/systemd/system/ferry-healthcheck.timer /usr/share/man/man8/ferryd.8.gz \
    /usr/share/man/man1/ferry.1.gz /usr/share/man/man8/ferryd-check-config.8.gz \
    /usr/share/man/man1/ferry-send.1.gz /usr/share/bash-completion/completions/ferry \
    /usr/share/doc/ferry/DEPLOY.md /usr/share/doc/ferry/copyright; do
  grep -qx "$want" "$work/contents" || fail "$deb lacks $want"
done
# Not `dpkg-deb | grep -q`: grep's early exit would SIGPIPE dpkg-deb and fail the pipeline.
info=$(dpkg-deb -I "$deb")
grep -q "postinst" <<<"$info" || fail "$deb has no postinst to enable the units"
dpkg-deb -f "$deb" Conffiles >/dev/null
echo "   $(wc -l < "$work/contents") entries, all expected paths present"

echo "-- extracted into a scratch root, every path the unit names exists"
dpkg -x "$deb" "$work/root"
unit="$work/root/usr/lib/systemd/system/ferryd.service"
for path in $(grep -E '^Exec' "$unit" | grep -oE '/(usr|etc)/[^ ]+' | sort -u); do
  [ -e "$work/root$path" ] || fail "the unit names $path, which the package does not install"
done
"$work/root/usr/bin/ferryd" check-config "$work/root/etc/ferry/ferryd.toml" >/dev/null \
  || fail "the shipped /etc/ferry/ferryd.toml does not pass check-config"
page=$(zcat "$work/root/usr/share/man/man8/ferryd-check-config.8.gz")
grep -q "EX_CONFIG" <<<"$page" || fail "ferryd-check-config(8) is not the right page"
echo "   ok"

if [ "${CI:-}" = "true" ] && [ "$(id -u)" = 0 ] && ! dpkg -s ferry >/dev/null 2>&1; then
  echo "-- dpkg -i on this machine, then purge"
  dpkg -i "$deb" >/dev/null
  /usr/bin/ferryd check-config /etc/ferry/ferryd.toml
  [ -L /etc/systemd/system/multi-user.target.wants/ferryd.service ] || fail "ferryd.service was not enabled"
  dpkg --purge ferry >/dev/null
  [ ! -e /usr/bin/ferryd ] || fail "purge left /usr/bin/ferryd"
fi

echo "-- install.sh into a staging root"
DESTDIR="$work/stage" PREFIX=/usr/local SKIP_BUILD=1 deploy/install.sh >/dev/null
for want in /usr/local/bin/ferryd /usr/local/bin/ferry /etc/ferry/ferryd.toml /etc/systemd/system/ferryd.service \
    /usr/local/share/man/man8/ferryd.8; do
  [ -e "$work/stage$want" ] || fail "install.sh did not install $want"
done
grep -q "ExecStart=/usr/local/bin/ferryd " "$work/stage/etc/systemd/system/ferryd.service" \
  || fail "install.sh did not point the unit at /usr/local/bin"
echo "deploy/check.sh: all good"
