#!/usr/bin/env python3
"""The seed-001 section-4 server as the handout has students write it: a
datagram with a file name, then the file in 2048-byte chunks, the last one
shorter (an empty one when the size is a multiple of 2048); no pacing, one
request at a time. Usage: udp_download_server.py PORT DIR (PORT 0 picks one)"""
import os
import socket
import sys

CHUNK = 2048


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    s.bind(("127.0.0.1", port))
    print(f"ready {s.getsockname()[1]}", flush=True)
    while True:
        data, addr = s.recvfrom(65536)
        try:
            with open(os.path.join(directory, os.path.basename(data.decode())), "rb") as f:
                while True:
                    chunk = f.read(CHUNK)
                    s.sendto(chunk, addr)
                    if len(chunk) < CHUNK:
                        break
        except OSError as e:
            print(e, file=sys.stderr)


if __name__ == "__main__":
    main()
