#!/usr/bin/env bash
# Runs every fuzz target of proto/ for a bounded time and records what it
# fuzzed, so that every change to proto/src gets fuzzed:
#
#   proto/fuzz/run.sh [SECONDS]               fuzz each target SECONDS (default 60),
#                                             then record proto/src's hash in last-fuzzed
#   proto/fuzz/run.sh --if-changed SECONDS    (CI) fuzz only if proto/src differs from
#                                             the recorded hash
#
# Uses nightly with AddressSanitizer when installed, otherwise stable with
# RUSTC_BOOTSTRAP=1 and no sanitizer (Rust's own checks still catch panics,
# overflows and out-of-bounds). Installs cargo-fuzz if it is missing.
set -euo pipefail
cd "$(dirname "$0")"
if_changed=false
if [ "${1:-}" = "--if-changed" ]; then
  if_changed=true
  shift
fi
secs=${1:-60}
hash=$(cd ../src && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if $if_changed && [ -f last-fuzzed ] && [ "$(cat last-fuzzed)" = "$hash" ]; then
  echo "proto/src is as last fuzzed ($hash): skipping"
  exit 0
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
if rustup run nightly rustc --version >/dev/null 2>&1; then
  fuzz=(cargo +nightly fuzz run -O)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz run -O -s none)
fi
for target in $(cargo fuzz list); do
  printf '%-16s ' "$target"
  "${fuzz[@]}" "$target" -- -max_total_time="$secs" -max_len=4096 2>&1 \
    | grep -E '^Done [0-9]+ runs' || { echo "FAILED: see proto/fuzz/artifacts/$target"; exit 1; }
done
echo "$hash" > last-fuzzed
echo "recorded proto/src $hash in proto/fuzz/last-fuzzed"
