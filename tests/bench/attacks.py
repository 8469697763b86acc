#!/usr/bin/env python3
"""The attacks and mistakes of the hostile review, rerun against a release
ferryd on loopback at small scale, each bounded in time and size. For each:
what ferry did, and, measured while it ran, PIN/PON latency (p50, p99, max,
from a client on an address of its own) and ferryd's peak RSS (VmHWM, reset
before each attack through /proc/PID/clear_refs).

Run it through tests/bench/attacks.sh (builds the release binaries).
Results: docs/bench/attacks.md and docs/bench/attacks.json.
"""
import atexit
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FERRYD = os.path.join(REPO, "target", "release", "ferryd")
FERRY = os.path.join(REPO, "target", "release", "ferry")
OUT = os.environ.get("BENCH_OUT", os.path.join(REPO, "docs", "bench"))
SERVICES = ["udp_upload", "udp_download", "udp_sum", "tcp_upload", "magic_download", "signal"]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


RUNNING = []


def kill_all():
    """No ferryd outlives the run, even when an attack fails."""
    for p in RUNNING:
        if p.poll() is None:
            p.kill()


atexit.register(kill_all)


class Ferryd:
    """A release ferryd on `root` with every service on 127.0.0.1:0 and JSON
    logs, which are kept (events are what some attacks measure)."""

    def __init__(self, root, extra="", bind="127.0.0.1:0"):
        self.root = root
        os.makedirs(root, exist_ok=True)
        self.conf = os.path.join(os.path.dirname(root), "ferryd.toml")
        text = extra + "\n" + "".join(f'[{s}]\nbind = "{bind}"\n' for s in SERVICES)
        with open(self.conf, "w") as f:
            f.write(text)
        self.t0 = time.monotonic()
        if "[http]" not in extra:
            text += '[http]\nbind = "127.0.0.1:0"\n'
        self.proc = subprocess.Popen([FERRYD, "--config", self.conf, "--storage", root, "--log-format", "json",
                                      "--log-level", "warn,ferryd=info"], stderr=subprocess.PIPE, text=True)
        RUNNING.append(self.proc)
        self.events = []
        self.bound = None
        for line in self.proc.stderr:
            if '"bound"' in line:
                self.bound = json.loads(line)
                break
        if self.bound is None:
            raise RuntimeError("ferryd did not start")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stderr:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                pass

    def addr(self, service):
        """Where to reach `service`: its address, or loopback's when it is
        bound to all addresses."""
        host, port = self.bound[service].rsplit(":", 1)
        host = host.strip("[]")
        return ("127.0.0.1" if host in ("::", "0.0.0.0") else host), int(port)

    def reset_peak(self):
        with open(f"/proc/{self.proc.pid}/clear_refs", "w") as f:
            f.write("5")

    def peak_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Pinger:
    """PIN/PON over a fresh connection every 20 ms from 127.0.0.250."""

    def __init__(self, addr):
        self.addr, self.rtts, self.failures, self.stop_flag = addr, [], 0, False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_flag:
            t = time.monotonic()
            try:
                s = socket.socket()
                s.bind(("127.0.0.250", 0))
                s.settimeout(120)
                s.connect(self.addr)
                s.sendall(b"PIN")
                if s.recv(3) == b"PON":
                    self.rtts.append((time.monotonic() - t) * 1000)
                else:
                    self.failures += 1
                s.close()
            except OSError:
                self.failures += 1
            time.sleep(0.02)

    def result(self):
        self.stop_flag = True
        self.thread.join()
        r = sorted(self.rtts) or [float("nan")]
        pick = lambda q: r[min(len(r) - 1, int(q * len(r)))]
        return {"pings": len(self.rtts), "ping_failures": self.failures,
                "p50_ms": round(pick(0.5), 2), "p99_ms": round(pick(0.99), 2), "max_ms": round(r[-1], 2)}


def frame(tag, text=b""):
    return tag + struct.pack(">H", len(text)) + text


def saf(name, data):
    import binascii
    n = name.encode()
    return b"SAF" + struct.pack(">H", len(n)) + n + struct.pack(">Q", len(data)) + data + \
        struct.pack(">I", binascii.crc32(data) & 0xFFFFFFFF)


def conn(addr, src="127.0.0.1", timeout=20):
    s = socket.socket()
    s.bind((src, 0))
    s.settimeout(timeout)
    s.connect(addr)
    return s


def reply(s):
    head = b""
    while len(head) < 5:
        chunk = s.recv(5 - len(head))
        if not chunk:
            return None, ""
        head += chunk
    n = struct.unpack(">H", head[3:5])[0]
    text = b""
    while len(text) < n:
        text += s.recv(n - len(text))
    return head[:3].decode(), text.decode(errors="replace")


def count_files(root):
    return sum(len(files) + len(dirs) for _, dirs, files in os.walk(root))


# Each attack: (key, description, size, function(d) -> what ferry did).

def deep_trees(d):
    addr = d.addr("signal")
    path = "d/" * 510 + "f"
    answers = []

    def one(i):
        s = conn(addr, f"127.0.1.{1 + i % 8}")
        s.sendall(frame(b"SAR", f"deep{i}".encode()) + saf(path, b"") + frame(b"DON"))
        answers.append(reply(s))
        s.close()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    refused = sum(1 for a in answers if a[0] == "ERR" and "levels deep" in a[1])
    return f"{refused} of 24 refused (`levels deep, the limit is 32`); {count_files(d.root)} entries in the root afterwards"


def abandoned_trees(d):
    addr = d.addr("signal")
    for i in range(3):
        s = conn(addr, f"127.0.2.{i + 1}")
        body = frame(b"SAR", f"big{i}".encode())
        for k in range(3000):
            body += saf(f"x/{k // 100}/f{k}", b"")
        s.sendall(body)
        time.sleep(0.3)
        s.close()
    work = os.path.join(d.root, ".ferry-work")
    t = time.monotonic()
    while os.listdir(work) and time.monotonic() - t < 60:
        time.sleep(0.1)
    return (f"3 trees of 3,000 entries cut before DON: removed by the reaper; {len(os.listdir(work))} entries left "
            f"in the work area {time.monotonic() - t:.1f} s after the last was cut")


def forged_crc(d):
    addr = d.addr("signal")
    honest = os.urandom(5000)
    forged = bytearray(honest)
    for i, b in enumerate([0x41, 0x06, 0x71, 0xDB, 0x01]):
        forged[100 + i] ^= b
    s = conn(addr)
    s.sendall(saf("essay.txt", bytes(forged)))
    a = reply(s)
    s.sendall(saf("essay.txt", honest))
    b = reply(s)
    s.close()
    stored = open(os.path.join(d.root, b[1]), "rb").read() == honest if b[0] == "DON" else False
    return f"forger `{a[1]}`, honest upload `{b[1]}`, honest bytes stored: {stored}"


def reserved_names(d):
    addr = d.addr("signal")
    out = []
    for req in [frame(b"RAR", b".FERRY-WORK"), frame(b"RAF", ".Ferry-Work/x".encode()),
                frame(b"RAF", "\uff0eferry-lock".encode())]:
        s = conn(addr)
        s.sendall(req)
        out.append(reply(s)[0])
        s.close()
    return f"{out.count('ERR')} of 3 refused (`names starting with '.ferry' are reserved`)"


def forged_udp_download(d):
    big = os.path.join(d.root, "big.bin")
    with open(big, "wb") as f:
        f.truncate(64 << 20)
    addr = d.addr("udp_download")
    before = len(d.events)
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.sendto(b"big.bin", addr)
        s.close()
    time.sleep(2)
    ev = [e for e in d.events[before:] if e.get("service") == "udp_download"]
    sent = sum(e.get("bytes", 0) for e in ev if e.get("message") == "transfer failed")
    icmp = sum(1 for e in ev if "ICMP" in str(e.get("error", "")))
    capped = sum(1 for e in ev if e.get("message") == "download refused")
    return (f"50 forged 7-byte requests for a 64 MiB file: {sent:,} bytes of it sent in all; {icmp} downloads "
            f"stopped at the first send by ICMP port unreachable, {capped} refused by the per-address cap")


def stat_flood(d):
    path = os.path.join(d.root, "admin.bin")
    with open(path, "wb") as f:
        f.write(os.urandom(1 << 20) * 160)
    addr = d.addr("udp_download")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    for _ in range(100):
        s.sendto(b"\0STAT admin.bin", addr)
    answered = refused = 0
    end = time.monotonic() + 12
    while time.monotonic() < end and answered + refused < 100:
        try:
            r = s.recv(4096)
        except socket.timeout:
            continue
        if r.startswith(b"\0STAT"):
            answered += 1
        else:
            refused += 1
    return (f"100 STATs at once (1.5 KB) of a 160 MiB file ferry did not store: {answered} answered, "
            f"{refused} refused (4 at once per address, then the 4 GiB budget): at most 4 GiB read per 10 minutes")


def squatting(d):
    addr = d.addr("signal")
    s = conn(addr, "127.0.3.1")
    t = time.monotonic()
    stored = refused = 0
    for i in range(2100):
        s.sendall(saf("lab1.py", i.to_bytes(2, "big")))
        tag, text = reply(s)
        if tag == "DON":
            stored += 1
        elif "quota" in text:
            refused += 1
    took = time.monotonic() - t
    s.close()
    o = conn(addr, "127.0.3.2")
    o.sendall(saf("lab1.py", b"honest"))
    other = reply(o)
    o.close()
    return f"2,100 `lab1.py` from one address in {took:.1f} s: {stored} stored, {refused} refused by the quota; another address then: `{other[0]} {other[1]}`"


def idle_hold(d):
    addr = d.addr("signal")
    held = []
    for i in range(1024):
        try:
            s = conn(addr, f"127.0.4.{1 + i % 16}", timeout=5)
            s.sendall(b"PIN")
            s.recv(3)
            held.append(s)
        except OSError:
            pass
    for s in held:
        try:
            s.sendall(b" ")
        except OSError:
            pass
    served = 0
    for i in range(20):
        try:
            s = conn(addr, f"127.0.4.{1 + i % 16}", timeout=5)
            s.sendall(b"PIN")
            if s.recv(3) == b"PON":
                served += 1
            s.close()
        except OSError:
            pass
    for s in held:
        s.close()
    return f"{len(held)} idle connections from 16 addresses, kept with whitespace: {served} of 20 new clients from those addresses served (the longest-idle closed to make room)"


def udp_hold(d):
    addr = d.addr("udp_upload")
    socks = []
    for i in range(1024):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.5.{1 + i % 16}", 0))
        s.settimeout(2)
        info = json.dumps({"checksum": "00000000", "name": f"hold{i}", "size": 100000}).encode()
        s.sendto(info, addr)
        try:
            s.recv(64)
            s.sendto(b"x", addr)
            socks.append(s)
        except OSError:
            s.close()
    time.sleep(1)
    for s in socks:
        s.sendto(b"x", addr)
    time.sleep(0.6)
    import binascii
    data = os.urandom(3000)
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.5.1", 0))
    c.settimeout(3)
    info = json.dumps({"checksum": "%08X" % (binascii.crc32(data) & 0xFFFFFFFF), "name": "real.bin", "size": len(data)})
    c.sendto(info.encode(), addr)
    r = c.recv(64)
    ok = b"?"
    if r.isdigit():
        for k in range(0, len(data), int(r)):
            c.sendto(data[k:k + int(r)], addr)
        ok = c.recv(64)
    [s.close() for s in socks]
    return f"{len(socks)} UDP sessions held by one byte each: a real upload from a held address got `{ok.decode(errors='replace')}`"


def second_daemon(d):
    r = subprocess.run([FERRYD, "--config", d.conf, "--storage", d.root], capture_output=True, text=True, timeout=30)
    last = r.stderr.strip().splitlines()[-1].replace(d.root, "<root>")
    last = re.sub(r"^\S+Z\s+", "", last)  # the log line's timestamp
    last = last.replace(f"pid {d.proc.pid}", "pid <its pid>")
    return f"exit {r.returncode}: `{last}`"


# The second hostile review (issue 23).

def udp_file_info(name, data):
    import binascii
    return json.dumps({"checksum": "%08X" % (binascii.crc32(data) & 0xFFFFFFFF), "name": name,
                       "size": len(data)}).encode()


def saf_from(d, src, name, data):
    s = conn(d.addr("signal"), src)
    s.sendall(saf(name, data))
    r = reply(s)
    s.close()
    return r


def forged_quota(d):
    """2,100 forged file_infos in a victim's name, never completed."""
    addr = d.addr("udp_upload")
    victim = "127.0.5.1"
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(60)]
    for s in socks:
        s.bind((victim, 0))
    for i in range(2100):
        socks[i % 60].sendto(udp_file_info(f"forged{i}.txt", b"x" * 100), addr)
    for s in socks:
        s.close()
    time.sleep(0.5)
    ok = sum(1 for i in range(20) if saf_from(d, victim, f"mine{i}.py", b"print(%d)" % i)[0] == "DON")
    return f"2,100 forged `file_info`s in the victim's name, never completed: then {ok} of the victim's 20 SAFs stored"


def forged_download_budget(d):
    """Forged udp_download requests in a victim's name, then the victim's own."""
    with open(os.path.join(d.root, "huge.bin"), "wb") as f:
        f.truncate(1 << 30)
    with open(os.path.join(d.root, "notes.txt"), "wb") as f:
        f.write(b"lecture notes\n")
    addr = d.addr("udp_download")
    victim = "127.0.5.2"
    for _ in range(12):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((victim, 0))
        s.sendto(b"huge.bin", addr)
        s.close()
    time.sleep(1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((victim, 0))
    s.settimeout(3)
    s.sendto(b"notes.txt", addr)
    try:
        got = s.recv(4096)
    except socket.timeout:
        got = b"(nothing)"
    os.remove(os.path.join(d.root, "huge.bin"))
    return (f"12 forged requests for a 1 GiB file in the victim's name (each stopped by ICMP), then the victim's "
            f"own request: `{got.decode(errors='replace').strip()}`")


def forged_confession(d):
    addr = d.addr("udp_upload")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.5.3", 0))
    s.settimeout(2)
    data = b"I copied lab 3"
    s.sendto(udp_file_info("confession.txt", data), addr)
    s.recv(64)
    s.sendto(data, addr)
    ack = s.recv(64)
    s.close()
    line = next((json.loads(l) for l in open(os.path.join(d.root, ".ferry-ledger.jsonl"))
                 if '"confession.txt"' in l), {})
    return (f"two datagrams from a forged address: `{ack.decode()}`; its ledger line says "
            f"`\"unverified_source\": {str(line.get('unverified_source', False)).lower()}`, the page `(UDP: unverified)`")


def ledger_flush(d):
    """Forged zero-byte retries of an empty stored file, from 60 addresses."""
    honest = saf_from(d, "127.0.5.4", "handed-in.py", b"print('on time')")
    addr = d.addr("udp_upload")
    path = os.path.join(d.root, ".ferry-ledger.jsonl")
    before = os.path.getsize(path)
    socks = []
    for i in range(60):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((f"127.0.6.{i + 1}", 0))
        socks.append(s)
    info = udp_file_info("empty.txt", b"")
    for i in range(42000):
        socks[i % 60].sendto(info, addr)
        if i % 500 == 0:
            time.sleep(0.01)
    time.sleep(1)
    for s in socks:
        s.close()
    added = os.path.getsize(path) - before
    kept = any('"handed-in.py"' in l for l in open(path))
    return (f"42,000 forged zero-byte retries of an empty file from 60 addresses: {added:,} bytes of ledger added "
            f"(one line per address and name per hour); the honest `{honest[1]}` line still there: {kept}")


def tree_inodes(d):
    """A tree's entries count against the address's quota of files."""
    addr = d.addr("signal")
    s = conn(addr, "127.0.5.5", timeout=60)
    wire = frame(b"SAR", b"big") + b"".join(saf(f"f{i}", b"") for i in range(5000)) + frame(b"DON")
    s.sendall(wire)
    tag, text = reply(s)
    s.close()
    stored = count_files(os.path.join(d.root, "big")) if os.path.isdir(os.path.join(d.root, "big")) else 0
    return f"one SAR of 5,000 empty files from an address whose quota is 2,000 files an hour: `{tag} {text[:90]}`; {stored} entries stored"


def classmate_download(d):
    alice, bob = "127.0.5.6", "127.0.5.7"
    saf_from(d, alice, "solution.py", b"print('alice')")
    s = conn(d.addr("signal"), bob)
    s.sendall(frame(b"RAF", b"solution.py"))
    raf = reply(s)
    s.close()
    m = conn(d.addr("magic_download"), bob)
    m.sendall(b"\x49\x7e\x01" + struct.pack(">H", 11) + b"solution.py")
    magic = m.recv(64)
    m.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((bob, 0))
    u.settimeout(2)
    u.sendto(b"solution.py", d.addr("udp_download"))
    udp = u.recv(4096)
    u.close()
    return (f"a classmate asks for another's hand-in: RAF `{raf[0]} {raf[1][:60]}…`, magic status {magic[3]} "
            f"with {len(magic) - 8} bytes, udp_download `{udp[:40].decode(errors='replace')}…`; 0 bytes of it sent")


def tmpfs(path, size):
    """A tmpfs of `size` at `path` (needs root), or None where mounting fails."""
    os.makedirs(path, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path], capture_output=True)
    return path if r.returncode == 0 else None


def tiny_root(tmp):
    root = tmpfs(os.path.join(tmp, "tiny"), "256k")
    if root is None:
        raise RuntimeError("cannot mount a tmpfs here (needs root)")
    return Ferryd(root, '[http]\nbind = "127.0.0.1:0"\n')


def ledger_tear(d):
    """A full disk while the ledger's page is full: no torn line, and no
    acknowledgement without its line."""
    ledger = os.path.join(d.root, ".ferry-ledger.jsonl")
    size = lambda: os.path.getsize(ledger) if os.path.exists(ledger) else 0
    s = conn(d.addr("signal"))
    i = 0
    while size() % 4096 < 3800:
        s.sendall(saf(f"f{i}.txt", b""))
        assert reply(s)[0] == "DON"
        i += 1
    fd = os.open(os.path.join(d.root, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    os.close(fd)
    long = "b" * 200 + ".txt"
    s.sendall(saf(long, b""))
    full = reply(s)
    os.remove(os.path.join(d.root, "filler"))
    s.close()
    s = conn(d.addr("signal"))
    s.sendall(saf(long, b""))
    again = reply(s)
    s.sendall(saf("after.txt", b""))
    after = reply(s)
    s.close()
    lines = open(ledger, "rb").read().splitlines()
    torn = 0
    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            torn += 1
    acked = [n for n, r in ((long, again), ("after.txt", after)) if r[0] == "DON"]
    recorded = all(any(f'"{n}"'.encode() in line for line in lines) for n in acked)
    subprocess.run(["umount", "-l", d.root])
    return (f"a 256 KiB tmpfs filled while the ledger's page was full: the upload whose line did not fit got "
            f"`{full[0]} {full[1][:70]}…`; sent again with room: `{again[0]}`; {len(lines)} ledger lines, "
            f"{torn} torn; every acknowledged upload has its line: {recorded}")


NEIGHBOURS = ("fd00:f::a", "fd00:f::b")


def neighbours_root(tmp):
    for a in NEIGHBOURS:
        subprocess.run(["ip", "-6", "addr", "add", f"{a}/64", "dev", "lo", "nodad"], capture_output=True)
    return Ferryd(os.path.join(tmp, "v6", "data"), '[http]\nbind = "[::]:0"\n', bind="[::]:0")


def ipv6_neighbours(d):
    """Two hosts of one /64: the second never sees the first's files."""
    import urllib.request
    a, b = NEIGHBOURS
    port = d.addr("signal")[1]
    for src, name in ((a, "A-thesis-draft-v3.docx"), (b, "B-lab3.py")):
        s = socket.socket(socket.AF_INET6)
        s.bind((src, 0))
        s.settimeout(20)
        s.connect((a, port))
        s.sendall(saf(name, name.encode()))
        reply(s)
        s.close()
    http = d.bound["http"].rsplit(":", 1)[1]
    seen, own = 0, 0
    for path in ("/", "/api/attempts", "/api/ledger"):
        # As neighbour b: the request leaves from b's address.
        s = socket.socket(socket.AF_INET6)
        s.bind((b, 0))
        s.settimeout(20)
        s.connect((a, int(http)))
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        body = b""
        while chunk := s.recv(65536):
            body += chunk
        s.close()
        seen += body.count(b"A-thesis-draft-v3.docx")
        own += body.count(b"B-lab3.py") > 0
    for x in NEIGHBOURS:
        subprocess.run(["ip", "-6", "addr", "del", f"{x}/64", "dev", "lo"], capture_output=True)
    return (f"a neighbour in the same /64 ({b}) reads the page, /api/attempts and /api/ledger after {a} "
            f"uploaded `A-thesis-draft-v3.docx`: named {seen} times; the neighbour's own upload shown in {own} of 3")


def drip_server(reply_bytes, drip):
    """A signal server that answers `reply_bytes`, then a byte every 2 s."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()

    def serve():
        while True:
            c, _ = lst.accept()
            c.recv(256)
            c.sendall(reply_bytes)
            try:
                while drip:
                    time.sleep(2)
                    c.sendall(b"x")
                c.recv(256)
            except OSError:
                pass
            c.close()

    threading.Thread(target=serve, daemon=True).start()
    return lst.getsockname()[1]


def malicious_server(d):
    """ferry against a server that drips, and one whose ERR would retitle and
    clear the terminal."""
    cwd = tempfile.mkdtemp(prefix="ferry-attacks-client-")
    header = b"SAF" + struct.pack(">H", 5) + b"a.bin" + struct.pack(">Q", 1000)
    port = drip_server(header, True)
    t = time.monotonic()
    held = subprocess.run([FERRY, "--timeout", "3s", "--signal-port", str(port), "get", "a.bin"], cwd=cwd,
                          capture_output=True, timeout=120)
    took = time.monotonic() - t
    evil = "\x1b]0;owned\x07\x1b[2Jgone".encode()
    port = drip_server(frame(b"ERR", evil), False)
    err = subprocess.run([FERRY, "--signal-port", str(port), "get", "b.bin"], cwd=cwd, capture_output=True,
                         timeout=60)
    raw = b"\x1b" in err.stderr or b"\x07" in err.stderr
    left = os.listdir(cwd)
    shutil.rmtree(cwd, ignore_errors=True)
    return (f"a server dripping a byte every 2 s: `ferry --timeout 3s get` cut after {took:.1f} s, exit "
            f"{held.returncode}, files left {len(left)}; an ERR that would retitle and clear the terminal: "
            f"exit {err.returncode}, shown escaped: {not raw}")


ATTACKS = [
    ("deep-tree", "SAR entries 511 directories deep", "24 connections", deep_trees),
    ("abandoned-trees", "SAR trees cut before DON", "3 x 3,000 entries", abandoned_trees),
    ("forged-crc", "a forged file of the same name, size and CRC-32 first", "5 KB", forged_crc),
    ("second-daemon", "a second ferryd on the running root", "1", second_daemon),
    ("case", "the work area in another case or Unicode form", "3 requests", reserved_names),
    ("forged-udp-download", "udp_download to a forged source", "50 x 64 MiB", forged_udp_download),
    ("stat-flood", "STAT of a big file ferry did not store", "100 x 160 MiB", stat_flood),
    ("squat", "one address squatting lab1.py", "2,100 uploads", squatting),
    ("idle-hold", "idle signal connections held with whitespace", "1,024 connections", idle_hold),
    ("udp-hold", "UDP upload sessions held by one byte each", "1,024 sessions", udp_hold),
    ("forged-quota", "forged udp_upload `file_info`s spending a victim's quota", "2,100 datagrams", forged_quota),
    ("forged-budget", "forged udp_download requests spending a victim's budget", "12 x 1 GiB", forged_download_budget),
    ("forged-confession", "a forged UDP upload in a victim's name", "2 datagrams", forged_confession),
    ("ledger-flush", "forged deduplicated retries flushing the ledger", "42,000 datagrams", ledger_flush),
    ("tree-inodes", "a tree spending inodes past the quota", "5,000 entries", tree_inodes),
    ("classmate", "a classmate downloading another's hand-in", "3 requests", classmate_download),
    ("ledger-tear", "a full disk tearing the ledger", "256 KiB tmpfs", ledger_tear, tiny_root),
    ("ipv6-neighbours", "an IPv6 neighbour reading the page", "2 hosts of one /64", ipv6_neighbours,
     neighbours_root),
    ("malicious-server", "`ferry` against a dripping or retitling server", "2 servers", malicious_server),
]


def restart_over_leftovers():
    tmp = tempfile.mkdtemp(prefix="ferry-attacks-")
    root = os.path.join(tmp, "data")
    tree = os.path.join(root, ".ferry-work", "tree-999-1")
    for a in range(100):
        os.makedirs(os.path.join(tree, f"d{a}"))
        for b in range(1000):
            open(os.path.join(tree, f"d{a}", f"f{b}"), "w").close()
    t = time.monotonic()
    d = Ferryd(root)
    s = conn(d.addr("signal"))
    s.sendall(b"PIN")
    s.recv(3)
    to_pon = (time.monotonic() - t) * 1000
    d.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    return round(to_pon, 1)


def main():
    rows = []
    tmp = tempfile.mkdtemp(prefix="ferry-attacks-")
    try:
        d = Ferryd(os.path.join(tmp, "data"), "[limits]\nmax_uploads_per_ip = 2000\n")
        # BENCH_ATTACKS_ONLY=key,key reruns only those (the table is then partial).
        only = [k for k in os.environ.get("BENCH_ATTACKS_ONLY", "").split(",") if k]
        for key, what, size, run, *own in ATTACKS:
            if only and key not in only:
                continue
            # An attack with a daemon of its own (a tiny disk, IPv6) is
            # measured on that one.
            target = own[0](tmp) if own else d
            target.reset_peak()
            p = Pinger(target.addr("signal"))
            t = time.monotonic()
            did = run(target)
            took = time.monotonic() - t
            ping = p.result()
            row = {"attack": key, "what": what, "size": size, "ferry": did, "seconds": round(took, 1),
                   "peak_rss_mib": round(target.peak_mib(), 1), **ping}
            if own:
                target.stop()
            log(json.dumps(row))
            rows.append(row)
        d.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    to_pon = restart_over_leftovers()
    rows.append({"attack": "restart", "what": "restart after kill -9 over 100,000 leftover entries", "size": "100,000 entries",
                 "ferry": f"PIN answered {to_pon} ms after the start; the leftovers removed in the background",
                 "seconds": None, "peak_rss_mib": None, "p50_ms": None, "p99_ms": None, "max_ms": None, "pings": None,
                 "ping_failures": None})
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "attacks.json"), "w") as f:
        json.dump(rows, f, indent=1)
    with open(os.path.join(OUT, "attacks.md"), "w") as f:
        f.write("| attack | size | what ferry did | PIN p50 / p99 / max (ms) | peak RSS (MiB) |\n|---|---|---|---|---|\n")
        for r in rows:
            ping = "—" if r["p99_ms"] is None else f"{r['p50_ms']} / {r['p99_ms']} / {r['max_ms']}"
            rss = "—" if r["peak_rss_mib"] is None else r["peak_rss_mib"]
            f.write(f"| {r['what']} | {r['size']} | {r['ferry']} | {ping} | {rss} |\n")
    print(open(os.path.join(OUT, "attacks.md")).read())


if __name__ == "__main__":
    main()
