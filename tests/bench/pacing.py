#!/usr/bin/env python3
"""udp_download pacing against clients shaped like the published ones
(tests/peers/udp_download_client.py: default receive buffer, a print and a
write per datagram), to choose `udp_download.rate` (issue 22). For each rate,
N downloads of a 5 MiB file one after another, on a quiet box and with two
CPU-bound processes beside them; each download is whole or not (SHA-256).

Run after a release build (tests/bench/run.sh builds one):
    python3 tests/bench/pacing.py            # rates 0 (unpaced), 32, 16, 8, 4 MiB/s
    BENCH_PACING_RATES=8,12 BENCH_PACING_RUNS=16 python3 tests/bench/pacing.py
Prints a Markdown table (docs/BENCHMARKS.md quotes it)."""
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

MIB = 1 << 20
SIZE = int(os.environ.get("BENCH_PACING_MIB", "5")) * MIB
RUNS = int(os.environ.get("BENCH_PACING_RUNS", "8"))
RATES = [int(r) for r in os.environ.get("BENCH_PACING_RATES", "0,32,16,8,4").split(",")]
CLIENT = os.path.join(harness.PEERS, "udp_download_client.py")


def one_rate(rate, busy):
    root = os.path.join(harness.WORK, "root-pacing")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    src = os.path.join(root, "lab.bin")
    harness.make_file(src, SIZE)
    want = harness.sha256(src)
    hogs = []
    if busy:
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    srv = harness.ferryd(root, udp_download={"rate": f'"{rate} MiB"' if rate else "0"})
    whole, times = 0, []
    try:
        port = harness.port_of(srv, "udp_download")
        for i in range(RUNS):
            target = os.path.join(harness.WORK, f"pacing-{i}.bin")
            t = time.perf_counter()
            r = subprocess.run([sys.executable, CLIENT, "127.0.0.1", port, "lab.bin", target],
                               capture_output=True, text=True)
            secs = time.perf_counter() - t
            ok = r.returncode == 0 and os.path.exists(target) and harness.sha256(target) == want
            whole += ok
            if ok:
                times.append(secs)
            if os.path.exists(target):
                os.remove(target)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
    median = sorted(times)[len(times) // 2] if times else 0
    return whole, median


def main():
    os.makedirs(harness.WORK, exist_ok=True)
    print(f"| rate | quiet box: whole | quiet: median s | 2 CPU-bound processes: whole | busy: median s |")
    print("|---|---|---|---|---|")
    for rate in RATES:
        q, qt = one_rate(rate, False)
        b, bt = one_rate(rate, True)
        label = f"{rate} MiB/s" if rate else "unpaced"
        print(f"| {label} | {q}/{RUNS} | {qt:.2f} | {b}/{RUNS} | {bt:.2f} |", flush=True)


if __name__ == "__main__":
    main()
