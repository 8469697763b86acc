#!/usr/bin/env python3
"""A lab day (issue 22): N students, each on its own 127.x address, each
running the handout-shaped clients of all five labs at once
(tests/peers/lab_student.py: 000 upload, 001 download and sum, 002 upload,
003 download, 004 SAF then RAF), all starting together, against one
release ferryd, with and without two CPU-bound processes beside them (the
box has 2 cores; the clients share them). File sizes cycle through 1 KiB to
20 MiB. A pinger sends PIN every 50 ms from an address of its own.

Per lab it reports: intact, failed (the client saw the failure, or, for a
UDP download, ended short: datagrams lost on the way, which the protocol
cannot tell), wrong bytes (a file stored that differs from what was sent,
or one received whole-sized with other bytes: must be 0), the time until the last student finished, PIN
p50/p99 and ferryd's peak RSS.

    python3 tests/bench/labday.py                    # 20 and 60 students, quiet and busy
    BENCH_LABDAY_STUDENTS=200 python3 tests/bench/labday.py
    BENCH_LABDAY_ONLY=udp_upload BENCH_LABDAY_WHY=1 ...   # one kind of client
    BENCH_LABDAY_SERVER=peers ...                         # against tests/peers' handout servers
    BENCH_LABDAY_OUT=docs/bench ...                       # also labday.json and a plot per box
Prints a Markdown table (docs/BENCHMARKS.md quotes it)."""
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402

KIB, MIB = 1 << 10, 1 << 20
SIZES = [1 * KIB, 16 * KIB, 256 * KIB, 1 * MIB, 4 * MIB, 20 * MIB]
STUDENTS = [int(n) for n in os.environ.get("BENCH_LABDAY_STUDENTS", "20,60").split(",")]
STUDENT = os.path.join(harness.PEERS, "lab_student.py")
LABS = ["000", "001-download", "001-sum", "002", "003", "004"]
# BENCH_LABDAY_ONLY=udp_upload,signal runs only those clients (the others
# count as failed): to look at one lab under the crowd of its own kind.
BOXES = [b == "busy" for b in os.environ.get("BENCH_LABDAY_BOXES", "quiet,busy").split(",")]
ONLY = [x for x in os.environ.get("BENCH_LABDAY_ONLY", "").split(",") if x]


def size_of(s, lab):
    return SIZES[(s + LABS.index(lab)) % len(SIZES)]


def pinger(port, rtts, stop):
    while not stop.is_set():
        t = time.perf_counter()
        try:
            s = socket.create_connection(("127.0.0.1", int(port)), timeout=5)
            s.sendall(b"PIN")
            got = s.recv(3)
            s.close()
            rtts.append(time.perf_counter() - t if got == b"PON" else float("inf"))
        except OSError:
            rtts.append(float("inf"))
        stop.wait(0.05)


# BENCH_LABDAY_SERVER=peers runs the same lab against the handout servers of
# tests/peers (each lab's own, one client at a time, as students write them).
SERVER = os.environ.get("BENCH_LABDAY_SERVER", "ferry")
PEER_SCRIPTS = [("udp_upload", "udp_upload_server.py", ["1452"]), ("udp_download", "udp_download_server.py", []),
                ("udp_sum", "udp_sum_server.py", []), ("tcp_upload", "tcp_upload_server.py", []),
                ("magic", "magic_server.py", []), ("signal", "signal_server.py", [])]


def peer_servers(root):
    """Each lab's handout server on a port of its own, storing in `root`: the
    servers and the ports argument of lab_student.py."""
    servers, ports = [], []
    for key, script, extra in PEER_SCRIPTS:
        srv = harness.Server("python", [sys.executable, os.path.join(harness.PEERS, script), "0", root, *extra],
                             ready="stdout")
        servers.append(srv)
        ports.append(f"{key}={srv.lines[-1].split()[1]}")
    return servers, ",".join(ports)


def stored_path(root, lab, s):
    """Where the server under test keeps student `s`'s upload of `lab`: ferry
    under its name; the handout servers as they write it (seed 000 adds
    `new_`, the seed 002 server keeps its `.temp`)."""
    name = f"u{lab}-{s}.bin"
    if SERVER == "peers":
        name = {"000": f"new_{name}", "002": f"{name}.temp"}.get(lab, name)
    return os.path.join(root, name)


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] if xs else float("nan")


def one_day(n, busy):
    root = os.path.join(harness.WORK, "root-labday")
    work = os.path.join(harness.WORK, "labday")
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(root)
    sources = {}
    for s in range(n):
        d = os.path.join(work, f"s{s:03}")
        os.makedirs(d)
        for lab, name in (("000", "up-000.bin"), ("002", "up-002.bin"), ("004", "up-004.bin")):
            data = os.urandom(size_of(s, lab))
            open(os.path.join(d, name), "wb").write(data)
            sources[(s, lab)] = data
        for lab, name in (("001-download", f"dl-001-{s}.bin"), ("003", f"dl-003-{s}.bin")):
            data = os.urandom(size_of(s, lab))
            open(os.path.join(root, name), "wb").write(data)
            sources[(s, lab)] = data
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2 if busy else 0)]
    # BENCH_LABDAY_NICE=-10 runs ferryd at that niceness (as a unit's Nice=).
    nice = os.environ.get("BENCH_LABDAY_NICE")
    prefix = ("nice", "-n", nice) if nice else ()
    rtts, stop = [], threading.Event()
    if SERVER == "peers":
        # No pinger: the handout's signal server serves one client at a time.
        peers, ports = peer_servers(root)
        srv = None
    else:
        peers = []
        srv = harness.ferryd(root, prefix=prefix, udp_upload={"buffer_size": "1452"})
        ports = ",".join(f"{k}={harness.port_of(srv, svc)}" for k, svc in (
            ("udp_upload", "udp_upload"), ("udp_download", "udp_download"), ("udp_sum", "udp_sum"),
            ("tcp_upload", "tcp_upload"), ("magic", "magic_download"), ("signal", "signal")))
        threading.Thread(target=pinger, args=(harness.port_of(srv, "signal"), rtts, stop), daemon=True).start()
    t0 = time.perf_counter()
    procs = []
    for s in range(n):
        env = dict(os.environ, SRC_ADDR=f"127.0.{10 + s // 250}.{1 + s % 250}")
        # Each lab's client a program of its own, as on a student's machine.
        # Their output goes to a file, drained as a terminal would be.
        for one in ports.split(","):
            if ONLY and one.split("=")[0] not in ONLY:
                continue
            out = os.path.join(work, f"s{s:03}", f"out-{one.split('=')[0]}.txt")
            with open(out, "w") as f:
                procs.append((s, out, subprocess.Popen(
                    [sys.executable, STUDENT, "127.0.0.1", str(s), os.path.join(work, f"s{s:03}"), one],
                    stdout=f, stderr=subprocess.DEVNULL, env=env)))
    results = {}
    for s, out, p in procs:
        p.wait(timeout=900)
        for line in open(out).read().splitlines():
            if line.startswith("{"):
                r = json.loads(line)
                results[(s, r["lab"])] = r
    took = time.perf_counter() - t0
    time.sleep(1)  # the last uploads are stored a moment after their end
    stop.set()
    # The handout servers' peak RSS summed (they are six processes).
    rss = srv.stop()[0] if srv else sum(p.stop()[0] for p in peers)
    if srv and os.environ.get("BENCH_LABDAY_WHY"):
        for line in srv.tail:
            if '"WARN"' in line or '"ERROR"' in line or '"udp_upload"' in line:
                print("  ferryd:", line.strip()[:400], file=sys.stderr)
    for h in hogs:
        h.kill()
        h.wait()
    rows = {}
    for lab in LABS:
        intact = failed = wrong = 0
        for s in range(n):
            r = results.get((s, lab), {"ok": False})
            d = os.path.join(work, f"s{s:03}")
            if lab in ("000", "002"):
                stored = stored_path(root, lab, s)
                have = open(stored, "rb").read() if os.path.exists(stored) else None
            elif lab == "004":
                stored = stored_path(root, lab, s)
                have = open(stored, "rb").read() if os.path.exists(stored) else None
                back = os.path.join(d, "got-004.bin")
                got = open(back, "rb").read() if os.path.exists(back) else None
                if got is not None and r["ok"] and got != sources[(s, lab)]:
                    wrong += 1
            elif lab == "001-sum":
                have = None
            else:
                got_path = os.path.join(d, "got-001.bin" if lab == "001-download" else "got-003.bin")
                have = open(got_path, "rb").read() if os.path.exists(got_path) and r["ok"] else None
            # A download short of datagrams lost on the way is a failure the
            # protocol cannot tell (the client stops at the last, short
            # datagram); wrong is a file of the right size with other bytes,
            # or a stored upload that differs.
            if have is not None and have != sources[(s, lab)]:
                if lab in ("000", "002", "004") or len(have) == len(sources[(s, lab)]):
                    wrong += 1
            good = r["ok"] and (lab == "001-sum" or have == sources[(s, lab)])
            if not good and os.environ.get("BENCH_LABDAY_WHY"):
                size = len(sources.get((s, lab), b""))
                print(f"  student {s} lab {lab} ({size} B): {r.get('why')!r}, have "
                      f"{None if have is None else len(have)}", file=sys.stderr)
            intact += good
            failed += not good
        rows[lab] = (intact, failed, wrong)
    finite = [x for x in rtts if x != float("inf")]
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    return rows, took, pct(finite, 0.5), pct(finite, 0.99), len(rtts) - len(finite), len(rtts), rss


def plot(out, results):
    """`labday.json` and, per box, `labday-<box>.svg` (the share of students
    each lab served intact, against the number of students) into `out`."""
    import json
    os.makedirs(out, exist_ok=True)
    tag = "-handout" if SERVER == "peers" else ""
    with open(os.path.join(out, f"labday{tag}.json"), "w") as f:
        json.dump({"server": SERVER, "nice": os.environ.get("BENCH_LABDAY_NICE"), "rows": results}, f, indent=1)
    for busy in BOXES:
        rows = [r for r in results if r["busy"] == busy]
        if not rows:
            continue
        xs = [r["students"] for r in rows]
        series = {lab: [100.0 * r["labs"][lab][0] / r["students"] for r in rows] for lab in LABS}
        box = "busy" if busy else "quiet"
        who = "the handout servers" if SERVER == "peers" else "ferryd"
        harness.svg_lines(os.path.join(out, f"labday{tag}-{box}.svg"),
                          f"Lab day, {who}, {'2 CPU-bound processes' if busy else 'quiet box'}", xs, series,
                          "students at once", "% of students served intact", log_x=False)


def main():
    os.makedirs(harness.WORK, exist_ok=True)
    results = []
    print("| students | box | " + " | ".join(f"{lab} intact/failed/wrong" for lab in LABS)
          + " | all done (s) | PIN p50 / p99 (ms) | PIN unanswered | ferryd peak RSS |")
    print("|---|---|" + "---|" * len(LABS) + "---|---|---|---|")
    for n in STUDENTS:
        for busy in BOXES:
            rows, took, p50, p99, lost, pings, rss = one_day(n, busy)
            cells = " | ".join(f"{a}/{b}/{c}" for a, b, c in (rows[lab] for lab in LABS))
            box = ("2 CPU-bound processes" if busy else "quiet") + (", handout servers" if SERVER == "peers" else "")
            ping = f"{p50 * 1000:.1f} / {p99 * 1000:.1f} | {lost} of {pings}" if pings else "— | —"
            print(f"| {n} | {box} | {cells} | {took:.1f} | {ping} | {rss:.0f} MiB |", flush=True)
            results.append({"students": n, "busy": busy, "labs": {lab: list(rows[lab]) for lab in LABS},
                             "seconds": round(took, 1), "pin_p50_ms": round(p50 * 1000, 2) if pings else None,
                             "pin_p99_ms": round(p99 * 1000, 2) if pings else None, "pin_unanswered": lost,
                             "pings": pings, "peak_rss_mib": round(rss)})
    # BENCH_LABDAY_OUT=<dir> writes the figures and a plot per box there.
    if os.environ.get("BENCH_LABDAY_OUT"):
        plot(os.environ["BENCH_LABDAY_OUT"], results)


if __name__ == "__main__":
    main()
