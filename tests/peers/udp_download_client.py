#!/usr/bin/env python3
"""A seed-001 §4 download client as students publish it: one UDP socket with
the default receive buffer, the file name in one datagram, then
recvfrom(2048) in a loop, a line printed and a write for every datagram,
until one is shorter than 2048 bytes. No pacing, no retries: a datagram the
kernel dropped is simply missing. (A 5 s timeout stands in for a student
waiting at a hung client.)

Usage: udp_download_client.py HOST PORT NAME TARGET
Exit 0 when a short datagram ended the file, 1 on a timeout."""
import socket
import sys

CHUNK = 2048


def main():
    host, port, name, target = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(5)
    s.sendto(name.encode(), (host, port))
    n = 0
    with open(target, "wb") as f:
        while True:
            try:
                data, _ = s.recvfrom(CHUNK)
            except socket.timeout:
                print(f"timed out after {n} datagrams")
                sys.exit(1)
            n += 1
            print(f"received block {n}: {len(data)} bytes")
            f.write(data)
            if len(data) < CHUNK:
                break
    s.close()


if __name__ == "__main__":
    main()
