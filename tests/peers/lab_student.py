#!/usr/bin/env python3
"""One student on a lab day: the handout-shaped clients of all five labs at
once (a thread each), against one server, from one address (SRC_ADDR).

- 000 udp_upload: file_info as JSON, 1 s for the buffer size, the file in
  buffer-size datagrams unpaced, 1 s for OK, else again from file_info
  (at most 10 times), as the seed's steps 5 to 8 say;
- 001 §4 udp_download: the name, recvfrom(2048), a line printed (flushed,
  as on a terminal) and a write per datagram, until one is shorter;
- 001 §3 udp_sum: "Client of <id>:<n>", the reply within 2 s (3 tries);
- 002 tcp_upload: 8-byte big-endian size and the name in one send, recv(1024)
  for `go ahead`, the data, close;
- 003 magic_download: 49 7E 01, the name's length and the name; the 8-byte
  header, then everything until the server closes;
- 004 signal: the handout's own send_file then request_file of the same file
  on one connection (tests/peers/signal_client.py).

Usage: lab_student.py HOST ID DIR udp_upload,udp_download,udp_sum,tcp_upload,magic,signal
DIR holds up-000.bin (to upload by 000), up-002.bin (002), up-004.bin (004);
the server holds dl-001-ID.bin and dl-003-ID.bin. Downloads are written to
DIR. Prints one JSON line per lab: {"lab", "ok", "secs", "why"}."""
import json
import os
import socket
import struct
import sys
import threading
import time
import binascii

sys.path.insert(0, os.path.dirname(__file__))
import signal_client  # noqa: E402

SRC = os.environ.get("SRC_ADDR", "")
OUT_LOCK = threading.Lock()


def sock(kind):
    s = socket.socket(socket.AF_INET, kind)
    if SRC:
        s.bind((SRC, 0))
    return s


def lab_000(host, port, d, sid):
    path = os.path.join(d, "up-000.bin")
    data = open(path, "rb").read()
    info = {"checksum": "%08X" % (binascii.crc32(data) & 0xFFFFFFFF), "name": f"u000-{sid}.bin", "size": len(data)}
    s = sock(socket.SOCK_DGRAM)
    s.settimeout(1)
    for _ in range(10):
        s.sendto(json.dumps(info).encode(), (host, port))
        try:
            reply, _ = s.recvfrom(1024)
            size = int(reply.decode())
        except (socket.timeout, ValueError):
            continue
        for i in range(0, len(data), size):
            s.sendto(data[i:i + size], (host, port))
        try:
            ok, _ = s.recvfrom(1024)
            if ok == b"OK":
                return True, ""
        except socket.timeout:
            pass
    return False, "no OK after 10 tries"


def lab_001_download(host, port, d, sid):
    s = sock(socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(f"dl-001-{sid}.bin".encode(), (host, port))
    n = 0
    with open(os.path.join(d, "got-001.bin"), "wb") as f:
        while True:
            try:
                data, _ = s.recvfrom(2048)
            except socket.timeout:
                return False, f"timed out after {n} datagrams"
            n += 1
            with OUT_LOCK:
                print(f"# block {n}: {len(data)} bytes", flush=True)
            f.write(data)
            if len(data) < 2048:
                return True, ""


def lab_001_sum(host, port, d, sid):
    s = sock(socket.SOCK_DGRAM)
    s.settimeout(2)
    n = int(sid) % 100 + 1
    for _ in range(3):
        s.sendto(f"Client of {sid}:{n}".encode(), (host, port))
        try:
            reply, _ = s.recvfrom(1024)
        except socket.timeout:
            continue
        name, _, number = reply.decode(errors="replace").rpartition(":")
        if name and number.strip().isdigit() and 1 <= int(number) <= 100:
            return True, ""
        return False, f"reply {reply!r}"
    return False, "no reply"


def lab_002(host, port, d, sid):
    data = open(os.path.join(d, "up-002.bin"), "rb").read()
    s = sock(socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect((host, port))
    s.send(struct.pack(">Q", len(data)) + f"u002-{sid}.bin".encode())
    if s.recv(1024) != b"go ahead":
        return False, "no go ahead"
    s.sendall(data)
    s.close()
    return True, ""


def lab_003(host, port, d, sid):
    name = f"dl-003-{sid}.bin".encode()
    s = sock(socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect((host, port))
    s.send(struct.pack(">HBH", 0x497E, 1, len(name)) + name)
    got = b""
    while True:
        try:
            b = s.recv(65536)
        except socket.timeout:
            return False, "a read gap of 5 s"
        if not b:
            break
        got += b
    if len(got) < 8 or got[:4] != b"\x49\x7e\x02\x01":
        return False, f"header {got[:8].hex()}"
    length = struct.unpack(">I", got[4:8])[0]
    open(os.path.join(d, "got-003.bin"), "wb").write(got[8:])
    return len(got) - 8 == length, "" if len(got) - 8 == length else "short"


def lab_004(host, port, d, sid):
    src = os.path.join(d, "up-004.bin")
    named = os.path.join(d, f"u004-{sid}.bin")
    if not os.path.exists(named):
        os.link(src, named)
    s = sock(socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect((host, port))
    signal_client.send_file(s, named)
    time.sleep(0.1)
    ok = signal_client.request_file(s, os.path.basename(named), os.path.join(d, "got-004.bin"))
    time.sleep(0.1)
    s.send(b"CLS")
    s.close()
    return ok, "" if ok else "ERR"


LABS = {
    "udp_upload": ("000", lab_000),
    "udp_download": ("001-download", lab_001_download),
    "udp_sum": ("001-sum", lab_001_sum),
    "tcp_upload": ("002", lab_002),
    "magic": ("003", lab_003),
    "signal": ("004", lab_004),
}


def main():
    host, sid, d, ports = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    results = []

    def run(key, port):
        lab, fn = LABS[key]
        t = time.perf_counter()
        try:
            ok, why = fn(host, int(port), d, sid)
        except OSError as e:
            ok, why = False, f"{type(e).__name__}: {e}"
        results.append({"lab": lab, "ok": ok, "secs": time.perf_counter() - t, "why": why})

    threads = []
    for item in ports.split(","):
        key, port = item.split("=")
        threads.append(threading.Thread(target=run, args=(key, port)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with OUT_LOCK:
        for r in results:
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
