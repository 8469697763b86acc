#!/usr/bin/env bash
# Checks what ships (run by .ci/run): the unit files lint clean, the .deb holds
# every file the unit expects where it expects it, the man pages and
# completions say what the binaries do, the alert rules are valid and fire
# when they should, a running ferryd exposes every metric the docs name and
# answers `ferryd ping`, and install.sh stages the same layout. Builds the
# .deb first (needs cargo-deb); needs promtool (Debian's `prometheus`), curl.
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "deploy/check.sh: $*" >&2; exit 1; }
work=$(mktemp -d)
daemon=
cleanup() {
  if [ -n "$daemon" ]; then kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
for tool in promtool curl systemd-analyze dpkg-deb; do
  command -v "$tool" >/dev/null || fail "needs $tool (Debian: apt-get install prometheus curl systemd dpkg)"
done

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

echo "-- the alert rules: promtool check rules, promtool test rules"
promtool check rules deploy/ferry-alerts.yml >/dev/null || fail "promtool check rules deploy/ferry-alerts.yml failed"
(cd deploy && promtool test rules ferry-alerts.test.yml >/dev/null) \
  || fail "promtool test rules deploy/ferry-alerts.test.yml failed (run it for the details)"
# docs/DEPLOY.md quotes the rules whole, in a ```yaml block.
awk -v dir="$work" '/^```yaml$/ { n++; f = dir "/quoted-" n ".yml"; inside = 1; next }
  /^```$/ { inside = 0; next } inside { print > f }' docs/DEPLOY.md
found=
for f in "$work"/quoted-*.yml; do
  [ -e "$f" ] && cmp -s "$f" deploy/ferry-alerts.yml && found=1
done
[ -n "$found" ] || fail "docs/DEPLOY.md does not quote deploy/ferry-alerts.yml as it is"
# And its prometheus.yml example loads those rules.
config=$(grep -l '^scrape_configs:' "$work"/quoted-*.yml | sed -n 1p) || fail "docs/DEPLOY.md has no prometheus.yml example"
sed "s|/etc/prometheus/ferry-alerts.yml|$PWD/deploy/ferry-alerts.yml|" "$config" > "$work/prometheus.yml"
promtool check config "$work/prometheus.yml" >/dev/null || fail "the prometheus.yml in docs/DEPLOY.md does not pass promtool check config"
echo "   ok"

echo "-- the Debian package"
deploy/build-deb.sh >/dev/null
deb=$(ls target/debian/ferry_*.deb | tail -1)
dpkg-deb -c "$deb" | awk '{print $6}' | sed 's|^\./|/|' > "$work/contents"
for want in /usr/bin/ferryd /usr/bin/ferry /etc/ferry/ferryd.toml \
    /usr/lib/systemd/system/ferryd.service /usr/lib/systemd/system/ferry-healthcheck.service \
    /usr/lib/systemd/system/ferry-healthcheck.timer /usr/share/man/man8/ferryd.8.gz \
    /usr/share/man/man1/ferry.1.gz /usr/share/man/man8/ferryd-check-config.8.gz \
    /usr/share/man/man8/ferryd-ping.8.gz \
    /usr/share/man/man1/ferry-send.1.gz /usr/share/bash-completion/completions/ferry \
    /usr/share/doc/ferry/DEPLOY.md /usr/share/doc/ferry/copyright \
    /usr/share/doc/ferry/ferry-alerts.yml /usr/lib/sysctl.d/60-ferry.conf; do
  grep -qx "$want" "$work/contents" || fail "$deb lacks $want"
done
# Not `dpkg-deb | grep -q`: grep's early exit would SIGPIPE dpkg-deb and fail the pipeline.
info=$(dpkg-deb -I "$deb")
grep -q "postinst" <<<"$info" || fail "$deb has no postinst to enable the units"
dpkg-deb -f "$deb" Conffiles >/dev/null
echo "   $(wc -l < "$work/contents") entries, all expected paths present"

echo "-- extracted into a scratch root, every path the units name exists"
dpkg -x "$deb" "$work/root"
units="$work/root/usr/lib/systemd/system"
for path in $(cat "$units/ferryd.service" "$units/ferry-healthcheck.service" \
    | grep -E '^(Exec|Environment)' | grep -oE '/(usr|etc)/[^ ]+' | sort -u); do
  [ -e "$work/root$path" ] || fail "a unit names $path, which the package does not install"
done
"$work/root/usr/bin/ferryd" --storage "$work/storage" check-config "$work/root/etc/ferry/ferryd.toml" >/dev/null \
  || fail "the shipped /etc/ferry/ferryd.toml does not pass check-config"
page=$(zcat "$work/root/usr/share/man/man8/ferryd-check-config.8.gz")
grep -q "EX_CONFIG" <<<"$page" || fail "ferryd-check-config(8) is not the right page"
echo "   ok"

echo "-- man pages: ferryd(8) documents the daemon, no page names a page that is not there"
man8="$work/root/usr/share/man/man8"
# Roff source with its hyphens unescaped.
zcat "$man8/ferryd.8.gz" | sed 's/\\-/-/g' > "$work/ferryd.8"
for want in '.SH "CONFIGURATION"' '.SH "SIGNALS"' '.SH "EXIT STATUS"' '.SH "FILES"' '.SH "SEE ALSO"' \
    /etc/ferry/ferryd.toml /var/lib/ferry .ferry-work .ferry-lock .ferry-ledger.jsonl .ferry-ledger.1.jsonl \
    SIGTERM SIGINT SIGHUP EX_TEMPFAIL EX_CONFIG '\fB0\fR' '\fB1\fR' '\fB75\fR' '\fB78\fR'; do
  grep -qF -- "$want" "$work/ferryd.8" || fail "ferryd(8) does not mention $want"
done
# Every table and key ferryd knows is named in its table's entry of CONFIGURATION.
"$work/root/usr/bin/ferryd" print-config | awk '
  /^\[/ { table = $0; next }
  /^[a-z_]+ =/ { split($0, kv, " ="); print (table == "" ? "top level" : table) "|" kv[1] }' \
  > "$work/keys"
[ "$(wc -l < "$work/keys")" -gt 40 ] || fail "ferryd print-config printed too few keys"
while IFS='|' read -r table key; do
  entry=$(grep -A1 -F "\\fB$table\\fR" "$work/ferryd.8" | tail -1)
  grep -qw -- "$key" <<<"$entry" || fail "ferryd(8) does not name $key under $table"
done < "$work/keys"
# Every page a SUBCOMMANDS or SEE ALSO section names is in the package.
for page in "$man8"/*.8.gz "$work/root/usr/share/man/man1"/*.1.gz; do
  zcat "$page" | sed 's/\\-/-/g; s/\\&//g' \
    | awk '/^\.SH/ { keep = ($0 ~ /SUBCOMMANDS|SEE ALSO/); next } keep' \
    | grep -oE '[a-z][a-z0-9-]*\([18]\)' | sort -u > "$work/refs" || true
  while read -r ref; do
    name=${ref%(*}; section=${ref#*(}; section=${section%)}
    grep -qx "/usr/share/man/man$section/$name.$section.gz" "$work/contents" \
      || fail "$(basename "$page" .gz) names $ref, which is not generated"
  done < "$work/refs"
done
echo "   ok"

echo "-- completions offer no hidden subcommand"
for script in $(grep -E 'completions/|vendor_completions.d/|vendor-completions/' "$work/contents" | grep -v '/$'); do
  if grep -q "generate-docs\|generate__subcmd__docs" "$work/root$script"; then
    fail "$script offers the hidden generate-docs"
  fi
done
grep -q "check-config" "$work/root/usr/share/bash-completion/completions/ferryd" \
  || fail "the ferryd completion lost its visible subcommands"
echo "   ok"

if [ "${CI:-}" = "true" ] && [ "$(id -u)" = 0 ] && ! dpkg -s ferry >/dev/null 2>&1; then
  echo "-- dpkg -i on this machine, then purge"
  dpkg -i "$deb" >/dev/null
  /usr/bin/ferryd check-config /etc/ferry/ferryd.toml
  [ -L /etc/systemd/system/multi-user.target.wants/ferryd.service ] || fail "ferryd.service was not enabled"
  dpkg --purge ferry >/dev/null
  [ ! -e /usr/bin/ferryd ] || fail "purge left /usr/bin/ferryd"
fi

echo "-- a running ferryd: /metrics as docs/DEPLOY.md lists it, ferryd ping on the configured port"
ferryd="$PWD/target/release/ferryd"
# Every listener on a port of the kernel's choosing; udp_download answers
# no one here, so a request from loopback counts a refusal.
{
  echo "storage = \"$work/live\""
  for s in udp_upload udp_download udp_sum tcp_upload magic_download signal http; do
    printf '[%s]\nbind = "127.0.0.1:0"\n' "$s"
    [ "$s" = udp_download ] && echo 'allow = ["192.0.2.0/24"]'
  done
} > "$work/live.toml"
"$ferryd" --config "$work/live.toml" 2> "$work/live.log" &
daemon=$!
for _ in $(seq 100); do
  grep -q ' bound ' "$work/live.log" && break
  kill -0 "$daemon" 2>/dev/null || fail "ferryd did not start: $(cat "$work/live.log")"
  sleep 0.1
done
addr() { grep ' bound ' "$work/live.log" | grep -oE " $1=[0-9.]+:[0-9]+" | cut -d= -f2; }
http=$(addr http); signal=$(addr signal); udp_download=$(addr udp_download)
[ -n "$http" ] && [ -n "$signal" ] || fail "no bound addresses in the log: $(cat "$work/live.log")"
printf 'x' > "/dev/udp/${udp_download%:*}/${udp_download#*:}"
printf '[signal]\nbind = "%s"\n' "$signal" > "$work/ping.toml"
"$ferryd" --config "$work/ping.toml" ping --timeout 5s >/dev/null \
  || fail "ferryd ping got no PON from the running ferryd at $signal"
for _ in $(seq 50); do
  curl -sf "http://$http/metrics" > "$work/metrics" || fail "GET http://$http/metrics failed"
  grep -q '^ferry_refusals_total' "$work/metrics" && break
  sleep 0.1
done
promtool check metrics < "$work/metrics" || fail "promtool check metrics found problems in /metrics"
sed -n 's/^# TYPE \([a-z_]*\) .*/\1/p' "$work/metrics" | sort -u > "$work/families"
grep -oE '`ferry_[a-z_]+' docs/DEPLOY.md | tr -d '`' | sort -u > "$work/documented"
for f in $(cat "$work/families"); do
  grep -qx "$f" "$work/documented" || fail "/metrics has $f, which docs/DEPLOY.md does not list"
done
for f in $(cat "$work/documented") $(grep -oE 'ferry_[a-z_]+' deploy/ferry-alerts.yml | sort -u); do
  family=$(sed -E 's/_(bucket|sum|count)$//' <<<"$f")
  grep -qx "$family" "$work/families" || grep -qx "$f" "$work/families" \
    || fail "docs/DEPLOY.md or deploy/ferry-alerts.yml names $f, which /metrics does not have"
done
kill "$daemon"
wait "$daemon" || fail "ferryd did not exit 0 on SIGTERM"
daemon=
if "$ferryd" --config "$work/ping.toml" ping --quiet --timeout 1s; then
  fail "ferryd ping exited 0 with no ferryd running"
fi
echo "   $(wc -l < "$work/families") metric families, all documented; ping ok"

echo "-- install.sh into a staging root"
DESTDIR="$work/stage" PREFIX=/usr/local SKIP_BUILD=1 deploy/install.sh >/dev/null
for want in /usr/local/bin/ferryd /usr/local/bin/ferry /etc/ferry/ferryd.toml /etc/systemd/system/ferryd.service \
    /etc/systemd/system/ferry-healthcheck.service /usr/local/share/man/man8/ferryd.8 \
    /usr/local/share/doc/ferry/ferry-alerts.yml; do
  [ -e "$work/stage$want" ] || fail "install.sh did not install $want"
done
grep -q "ExecStart=/usr/local/bin/ferryd " "$work/stage/etc/systemd/system/ferryd.service" \
  || fail "install.sh did not point the unit at /usr/local/bin"
grep -q "ExecStart=/usr/local/bin/ferryd " "$work/stage/etc/systemd/system/ferry-healthcheck.service" \
  || fail "install.sh did not point the health check at /usr/local/bin"
echo "deploy/check.sh: all good"
