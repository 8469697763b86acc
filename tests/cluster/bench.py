#!/usr/bin/env python3
"""Scale-out figures for docs/SCALE.md: 200 concurrent uploads through one
ferryd and through two, on the loopback cluster of cluster.sh (3 Garage
nodes, replication 3; 3 etcd members), beside one ferryd on its local disk.

All on one machine: the point is correctness and overhead, not speed-up
(two instances share the same 2 cores as the cluster and the clients).

    tests/cluster/bench.py [--clients 200] [--size 1M] [--count 1000] [--runs 3]

Needs release builds (cargo build --release -p ferryd -p ferry) and what
cluster.sh needs. Prints a Markdown table and writes bench-results.json.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FERRYD = os.path.join(ROOT, "target/release/ferryd")
FERRY = os.path.join(ROOT, "target/release/ferry")
CLUSTER = os.path.join(ROOT, "tests/cluster/cluster.sh")
# All the clients come from 127.0.0.1: lift the per-address caps.
LIMITS = '[limits]\nmax_connections = 4096\nmax_connections_per_ip = 4096\nmax_uploads_per_ip = 1000000\n'
BINDS = LIMITS + "".join(
    f'[{s}]\nbind = "127.0.0.1:0"\n'
    for s in ["udp_upload", "udp_download", "udp_sum", "tcp_upload", "magic_download", "signal", "http"]
)


def start_ferryd(config_text, state, name):
    config = os.path.join(os.path.dirname(state), f"{name}.toml")
    with open(config, "w") as f:
        f.write(config_text + "\n" + BINDS)
    p = subprocess.Popen(
        [FERRYD, "--config", config, "--storage", state, "--log-format", "json", "--log-level", "warn,ferryd=info"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    for line in p.stderr:
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if ev.get("message") == "bound":
            # Keep draining stderr so ferryd never blocks on a full pipe.
            subprocess.Popen(["cat"], stdin=p.stderr, stdout=subprocess.DEVNULL)
            return p, int(ev["signal"].rsplit(":", 1)[1])
    raise SystemExit(f"{name} did not start")


def peak_rss_mib(p):
    with open(f"/proc/{p.pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def bench(port, clients, size, count):
    return subprocess.Popen(
        [FERRY, "--quiet", "bench", "signal-up", "--host", "127.0.0.1", "--signal-port", str(port),
         "--clients", str(clients), "--size", size, "--count", str(count), "--timeout", "60s", "--json"],
        stdout=subprocess.PIPE, text=True,
    )


def run_case(instances, clients, size, count):
    """One run: `instances` = [(popen, port)], the clients split between them."""
    t0 = time.monotonic()
    procs = [bench(port, clients // len(instances), size, count // len(instances)) for _, port in instances]
    reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    wall = time.monotonic() - t0
    moved = sum(r["transfers"] * r["size"] for r in reports)
    return {
        "mib_per_s": moved / wall / 2**20,
        "transfers": sum(r["transfers"] for r in reports),
        "errors": sum(r["errors"] for r in reports),
        "first_error": next((r["first_error"] for r in reports if r.get("first_error")), None),
        "p99_ms": max(r["p99_ms"] for r in reports),
        "rss_mib": [round(peak_rss_mib(p), 1) for p, _ in instances],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--size", default="1M")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="ferry-scale-") as tmp:
        # One ferryd on its local disk, for the overhead of the store.
        p, port = start_ferryd("", os.path.join(tmp, "local"), "local")
        results["local disk, 1 instance"] = [run_case([(p, port)], a.clients, a.size, a.count) for _ in range(a.runs)]
        p.terminate(); p.wait()
        subprocess.run([CLUSTER, "up", tmp], check=True, stdout=subprocess.DEVNULL)
        try:
            storage = open(os.path.join(tmp, "storage.toml")).read()
            for n in (1, 2):
                ferryds = [start_ferryd(storage, os.path.join(tmp, f"s{n}{i}"), f"s{n}{i}") for i in range(n)]
                results[f"S3 + etcd, {n} instance{'s' if n > 1 else ''}"] = [
                    run_case(ferryds, a.clients, a.size, a.count) for _ in range(a.runs)
                ]
                for p, _ in ferryds:
                    p.terminate(); p.wait()
        finally:
            subprocess.run([CLUSTER, "down", tmp])
    with open("bench-results.json", "w") as f:
        json.dump(results, f, indent=1)
    print(f"| {a.clients} clients × {a.size} signal SAF, {a.count} uploads | MiB/s (median of {a.runs}) | p99 ms | errors | peak RSS per ferryd (MiB) |")
    print("|---|---|---|---|---|")
    for case, runs in results.items():
        runs = sorted(runs, key=lambda r: r["mib_per_s"])
        m = runs[len(runs) // 2]
        rss = " + ".join(str(max(r["rss_mib"][i] for r in runs)) for i in range(len(m["rss_mib"])))
        print(f"| {case} | {m['mib_per_s']:.0f} ({runs[0]['mib_per_s']:.0f}–{runs[-1]['mib_per_s']:.0f}) | {m['p99_ms']:.0f} | {sum(r['errors'] for r in runs)} | {rss} |")
        if m["first_error"]:
            print(f"|   first error: {m['first_error']} |||||", file=sys.stderr)


if __name__ == "__main__":
    main()
