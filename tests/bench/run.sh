#!/usr/bin/env bash
# The benchmark harness (docs/BENCHMARKS.md): installs the contenders it needs
# from Debian (socat, tftpd-hpa, curl), builds ferry in release mode, and runs
# tests/bench/harness.py. Environment knobs: BENCH_ONE_MIB (single-stream size,
# 1024), BENCH_BIG_MIB (memory test, 5120), BENCH_UDP_MIB (64),
# BENCH_CONCURRENCY (1,10,100,1000), BENCH_ONLY (a comma list of tcp, down, udp,
# udpshm, conc, pinned, busyudp, py, mem).
set -euo pipefail
cd "$(dirname "$0")/../.."
need=()
command -v socat >/dev/null 2>&1 || need+=(socat)
command -v in.tftpd >/dev/null 2>&1 || need+=(tftpd-hpa)
command -v curl >/dev/null 2>&1 || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") </dev/null
fi
# ferry as its package installs it: net.core.rmem_max raised for udp_upload
# (deploy/60-ferry.conf; the harness records the value in results.json).
if [ "$(id -u)" = 0 ] && [ -w /proc/sys/net/core/rmem_max ]; then
  sysctl -q -p deploy/60-ferry.conf || true
fi
cargo build --release --locked -p ferryd -p ferry
exec python3 tests/bench/harness.py "$@"
