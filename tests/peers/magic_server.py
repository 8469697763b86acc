#!/usr/bin/env python3
"""The seed-003 (COSC264) server as the student wrote it: one connection at a
time, the whole file read into memory, FileResponse header + data in one
sendall. Usage: magic_server.py PORT DIR"""
import os
import socket
import sys


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(256)
    print(f"ready {s.getsockname()[1]}", flush=True)
    while True:
        conn, _ = s.accept()
        conn.settimeout(1)
        try:
            header = conn.recv(5)
            n = (header[3] << 8) + header[4]
            name = b""
            while len(name) < n:
                part = conn.recv(n - len(name))
                if not part:
                    break
                name += part
            record = bytearray([0x49, 0x7E, 2])
            try:
                with open(os.path.join(directory, name.decode()), "rb") as f:
                    data = f.read()
                record += bytes([1]) + len(data).to_bytes(4, "big") + data
            except OSError:
                record += bytes([0]) + (0).to_bytes(4, "big")
            conn.settimeout(None)
            conn.sendall(record)
        except Exception as e:
            print(e, file=sys.stderr)
        finally:
            conn.close()


if __name__ == "__main__":
    main()
