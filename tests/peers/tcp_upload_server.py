#!/usr/bin/env python3
"""The seed-002 server as the handout has students write it: one client at a
time, recv(1024) for the header, `go ahead`, then the data into a file.
Usage: tcp_upload_server.py PORT DIR"""
import os
import socket
import sys

BUFFER = 4096


def get_file_info(data: bytes):
    return data[8:].decode(), int.from_bytes(data[:8], "big")


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(256)
    print(f"ready {sock.getsockname()[1]}", flush=True)
    while True:
        conn, _ = sock.accept()
        try:
            name, size = get_file_info(conn.recv(1024))
            conn.sendall(b"go ahead")
            path = os.path.join(directory, os.path.basename(name) + ".temp")
            received = 0
            with open(path, "wb") as f:
                while received < size:
                    chunk = conn.recv(BUFFER)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
        except Exception as e:  # the handout: "If an exception occurs, the file should be deleted."
            print(e, file=sys.stderr)
        finally:
            conn.close()


if __name__ == "__main__":
    main()
