#!/usr/bin/env python3
"""The seed-001 section-3 server as a student writes it: "name:number" in,
its own "name:number" back; an out-of-range number ends the server (as the
lab text asks). Usage: udp_sum_server.py PORT DIR (DIR unused; PORT 0 picks one)"""
import socket
import sys

NAME = "Server of John Q. Smith"
NUMBER = 42


def main():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", int(sys.argv[1])))
    print(f"ready {s.getsockname()[1]}", flush=True)
    while True:
        data, addr = s.recvfrom(1024)
        name, number = data.decode().rsplit(":", 1)
        number = int(number)
        if not 1 <= number <= 100:
            break
        print(f"{name} {NAME} {number} {NUMBER} {number + NUMBER}", flush=True)
        s.sendto(f"{NAME}:{NUMBER}".encode(), addr)
    s.close()


if __name__ == "__main__":
    main()
