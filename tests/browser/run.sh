#!/usr/bin/env bash
# What a student sees: ferryd's lab page in a real browser, and its metrics
# through promtool.
#
# Starts ferryd on free loopback ports, runs four broken student clients
# written from the handouts (seeds 000, 002, 003, 004) and a fifth that
# sends seed 000's file_info to udp_download's port, then checks:
# - /api/attempts has a failed attempt with a diagnosis for each of the five
#   services (the rules are printed; the fifth names udp_upload's port);
# - `/` in headless chromium shows those diagnoses (the DOM, not the source:
#   what the browser made of the markup), and its screenshot is written to
#   docs/img/lab-page.png;
# - /book has the anchor the tcp_upload diagnosis links to;
# - `promtool check metrics` finds nothing wrong in /metrics, whose scrape is
#   written to docs/metrics-example.txt;
# - ferryd exits 0 on SIGTERM.
# The screenshot and the scrape are rewritten in place on every run (their
# times and counts change); commit them when they should be updated.
#
# Runs on a clean checkout as root with no standard input; installs chromium,
# prometheus (promtool) and curl with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD

fail() {
  printf 'tests/browser: FAILED: %s\n' "$*" >&2
  exit 1
}

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") </dev/null
fi

cargo build --release --locked -p ferryd
ferryd=$root/target/release/ferryd

work=$(mktemp -d -t ferry-browser.XXXXXX)
pid=
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Shows ferryd's log, then fails.
fail_with_log() {
  printf '%s\n' '--- the last lines of ferryd'"'"'s log:' >&2
  tail -n 30 "$work/ferryd.log" >&2 || true
  fail "$@"
}

cat >"$work/ferryd.toml" <<'EOF'
[udp_upload]
bind = "127.0.0.1:0"
[udp_download]
bind = "127.0.0.1:0"
[udp_sum]
bind = "127.0.0.1:0"
[tcp_upload]
bind = "127.0.0.1:0"
[magic_download]
bind = "127.0.0.1:0"
[signal]
bind = "127.0.0.1:0"
[http]
bind = "127.0.0.1:0"
EOF

"$ferryd" --config "$work/ferryd.toml" --storage "$work/storage" --log-format json \
  </dev/null >"$work/ferryd.out" 2>"$work/ferryd.log" &
pid=$!

# The bound addresses, from the `bound` event (polled: no fixed wait).
python3 - "$work/ferryd.log" "$pid" >"$work/addrs" <<'PY' || fail_with_log "ferryd did not log its bound addresses"
import json, os, sys, time
log, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    with open(log) as f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if ev.get("message") == "bound":
                for k in ("udp_upload", "udp_download", "tcp_upload", "magic_download", "signal", "http"):
                    print(f"{k}={ev[k]}")
                sys.exit(0)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit("ferryd exited")
    time.sleep(0.02)
sys.exit("no bound event within 20 s")
PY
udp_upload=$(sed -n 's/^udp_upload=//p' "$work/addrs")
udp_download=$(sed -n 's/^udp_download=//p' "$work/addrs")
tcp_upload=$(sed -n 's/^tcp_upload=//p' "$work/addrs")
magic_download=$(sed -n 's/^magic_download=//p' "$work/addrs")
signal=$(sed -n 's/^signal=//p' "$work/addrs")
http=$(sed -n 's/^http=//p' "$work/addrs")
printf 'ferryd (pid %s): http on %s\n' "$pid" "$http"

# --- four broken student clients -------------------------------------------

# a. Seed 000 (udp_upload) with a wrong CRC-32 in file_info.
python3 - "$udp_upload" <<'PY' || fail_with_log "the udp_upload client"
import json, socket, sys
host, port = sys.argv[1].rsplit(":", 1)
server = (host, int(port))
data = bytes(range(256)) * 12  # 3072 bytes: three datagrams of 1452 or fewer
file_info = {"checksum": "00000001", "name": "photo.jpg", "size": len(data)}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(json.dumps(file_info).encode(), server)
buffer_size = int(s.recv(64).decode())
for i in range(0, len(data), buffer_size):
    s.sendto(data[i:i + buffer_size], server)
reply = s.recv(1024).decode()
print(f"udp_upload: buffer size {buffer_size}, reply {reply!r}")
if not reply.startswith("ERROR: checksum mismatch"):
    sys.exit(f"expected ERROR: checksum mismatch, got {reply!r}")
PY

# b. Seed 002 (tcp_upload) that does not wait for `go ahead`.
python3 - "$tcp_upload" <<'PY' || fail_with_log "the tcp_upload client"
import socket, struct, sys
host, port = sys.argv[1].rsplit(":", 1)
data = b"lab 2 notes\nUDP has no connection.\n"
s = socket.create_connection((host, int(port)), timeout=5)
s.sendall(struct.pack('!Q', len(data)) + b'notes.txt' + data)
s.close()
print("tcp_upload: sent size, name and data in one go, then closed")
PY

# c. Seed 003 (magic_download, COSC264) with the magic number's bytes swapped.
python3 - "$magic_download" <<'PY' || fail_with_log "the magic_download client"
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=5)
s.sendall(bytes([0x7E, 0x49, 0x01, 0x00, 0x05]) + b'a.txt')
answer = b""
while chunk := s.recv(4096):
    answer += chunk
s.close()
print(f"magic_download: the server closed after {len(answer)} bytes")
if answer:
    sys.exit(f"expected no answer to a bad magic number, got {answer!r}")
PY

# d. Seed 004's handout signal client, without the DON that ends the file.
python3 - "$signal" <<'PY' || fail_with_log "the signal client"
import socket, sys
from time import sleep
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=5)
s.send(b'SAF')
sleep(0.1)
s.send(b'report.txt')
sleep(0.1)
s.send(b'my lab report\n')
sleep(0.1)
s.send(b'CLS')
s.close()
print("signal: SAF, name, data, CLS (no DON), closed")
PY

# e. Seed 000's file_info sent to the wrong port: udp_download's.
python3 - "$udp_download" <<'PY' || fail_with_log "the wrong-port client"
import json, socket, sys
host, port = sys.argv[1].rsplit(":", 1)
file_info = {"checksum": "97F6DB4F", "name": "photo.jpg", "size": 65066}
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(json.dumps(file_info).encode(), (host, int(port)))
reply = s.recv(2048)
print(f"wrong port: udp_download answered {reply[:60]!r}")
PY

# --- the diagnoses, as JSON -------------------------------------------------

# Polled: a failure is recorded when ferryd sees the connection end.
python3 - "$http" <<'PY' || fail_with_log "/api/attempts"
import json, sys, time, urllib.request
url = f"http://{sys.argv[1]}/api/attempts"
want = ["udp_upload", "tcp_upload", "magic_download", "signal", "udp_download"]
deadline = time.monotonic() + 15
while True:
    with urllib.request.urlopen(url, timeout=5) as r:
        attempts = json.load(r)
    found = {}
    for a in attempts:
        if a["outcome"] == "failed" and a.get("diagnosis") and a["service"] not in found:
            found[a["service"]] = a
    if all(s in found for s in want):
        break
    if time.monotonic() > deadline:
        print(json.dumps(attempts, indent=1), file=sys.stderr)
        sys.exit("no failed attempt with a diagnosis for: "
                 + ", ".join(s for s in want if s not in found))
    time.sleep(0.05)
# What each rule must say (daemon/src/observe/diagnose.rs). tcp_upload's
# client closes at once, so ferryd may see the close before the name settles
# ("closed the connection before `go ahead`") or the name run into the data
# ("without waiting for `go ahead`"): both name `go ahead`.
says = {
    "udp_upload": "zlib.crc32",
    "tcp_upload": "`go ahead`",
    "magic_download": "not the magic number 0x497E",
    "signal": "send `DON` alone",
    "udp_download": "look like a udp_upload request",
}
wrong = []
for s in want:
    a = found[s]
    d = a["diagnosis"]
    if says[s] not in d["rule"]:
        wrong.append(f"{s}'s rule does not say {says[s]!r}: {d['rule']!r}")
    print(f"{s}: reason: {a.get('reason')}")
    print(f"{s}: rule: {d['rule']}")
    print(f"{s}: section: {d['section']}")
if wrong:
    sys.exit("\n".join(wrong))
PY

# --- the page in a real browser ---------------------------------------------

# Headless chromium as root; each run gets a fresh profile under $work, and
# its crash database and caches (which ignore --user-data-dir) go there too.
browse() {
  local profile
  profile=$(mktemp -d -p "$work" chromium.XXXXXX)
  XDG_CONFIG_HOME=$profile/config XDG_CACHE_HOME=$profile/cache timeout 60 chromium --headless --no-sandbox --disable-gpu --disable-quic \
    --no-first-run --disable-background-networking --disable-component-update \
    --disable-sync --user-data-dir="$profile" "$@" 2>>"$work/chromium.log"
}

browse --dump-dom "http://$http/" >"$work/page.html" ||
  { tail -n 20 "$work/chromium.log" >&2; fail "chromium could not load http://$http/"; }
# The strings come from daemon/src/observe/diagnose.rs (and the page's own
# labels from daemon/src/http/page.rs): one per broken client, and the markup
# they sit in (the diagnoses' `backquoted` spans are set as <code>).
for want in \
  '<b>Why:</b>' \
  '<b>What the client sent first:</b>' \
  '<b>The rule:</b>' \
  '<code>zlib.crc32(data) &amp; 0xFFFFFFFF</code>' \
  '<code>"%08X"</code>' \
  'checksum mismatch' \
  '<code>go ahead</code>' \
  '7E 49 01 00 05 61 2E 74 78 74' \
  '~I...a.txt' \
  'starts with 0x7E49, not the magic number 0x497E' \
  'send <code>DON</code> alone' \
  'look like a udp_upload request' \
  'href="/book#udp_upload-9000udp"' \
  'href="/book#tcp_upload-9003tcp"' \
  'href="/book#magic_download-9004tcp"' \
  'href="/book#the-handouts-dialect"'; do
  grep -qF -- "$want" "$work/page.html" ||
    fail "the lab page (in chromium's DOM) does not contain: $want"
done
# Client text is escaped once: no entity shows up as text.
if grep -qE '&amp;(amp|lt|gt|quot|#39);' "$work/page.html"; then
  fail "the lab page escapes something twice: $(grep -oE '.{40}&amp;(amp|lt|gt|quot|#39);.{20}' "$work/page.html" | sed -n 1,3p)"
fi
diags=$({ grep -o 'class="diag"' "$work/page.html" || true; } | wc -l)
[ "$diags" -ge 5 ] || fail "the lab page shows $diags diagnoses, expected at least 5"
echo "lab page: $diags diagnoses, every expected text present"

mkdir -p docs/img
browse --screenshot="$work/lab-page.png" --window-size=1280,2200 "http://$http/" >/dev/null ||
  { tail -n 20 "$work/chromium.log" >&2; fail "chromium could not take a screenshot of http://$http/"; }
[ -s "$work/lab-page.png" ] || fail "chromium wrote no screenshot"
cp "$work/lab-page.png" docs/img/lab-page.png
echo "wrote docs/img/lab-page.png"

browse --dump-dom "http://$http/book" >"$work/book.html" ||
  { tail -n 20 "$work/chromium.log" >&2; fail "chromium could not load http://$http/book"; }
grep -qF 'id="tcp_upload-9003tcp"' "$work/book.html" ||
  fail "/book has no element with id=\"tcp_upload-9003tcp\" (the tcp_upload diagnosis links to it)"
echo "book: the anchor tcp_upload-9003tcp is there"

# --- metrics through promtool -----------------------------------------------

curl -fsS --max-time 10 "http://$http/metrics" >"$work/metrics.txt" || fail "could not scrape /metrics"
if ! lint=$(promtool check metrics <"$work/metrics.txt" 2>&1) || [ -n "$lint" ]; then
  printf '%s\n' "$lint" >&2
  fail "promtool check metrics reports problems in ferryd's /metrics (above)"
fi
cp "$work/metrics.txt" docs/metrics-example.txt
echo "metrics: promtool check metrics is silent; wrote docs/metrics-example.txt"

# --- shutdown ---------------------------------------------------------------

kill -TERM "$pid"
# Polled (bash reaps the child as it exits), so a hung shutdown fails after
# 20 s instead of hanging CI; `wait` then gives its exit code.
for _ in $(seq 400); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.05
done
kill -0 "$pid" 2>/dev/null && fail_with_log "ferryd did not stop within 20 s of SIGTERM"
rc=0
wait "$pid" || rc=$?
pid=
[ "$rc" -eq 0 ] || fail_with_log "ferryd exited $rc on SIGTERM, expected 0"
echo "ferryd stopped on SIGTERM with exit code 0"
echo "tests/browser: OK"
