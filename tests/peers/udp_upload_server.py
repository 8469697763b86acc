#!/usr/bin/env python3
"""The seed-000 server as the handout describes it: file_info, the buffer
size, the data into memory, CRC check, `OK`; one upload at a time.
Usage: udp_upload_server.py PORT DIR BUFFER_SIZE"""
import binascii
import json
import os
import socket
import sys


def main():
    port, directory, buffer_size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind(("127.0.0.1", port))
    print(f"ready {s.getsockname()[1]}", flush=True)
    while True:
        try:
            data, addr = s.recvfrom(65536)
            info = json.loads(data.decode())
            s.sendto(str(buffer_size).encode(), addr)
            contents = b""
            while len(contents) < info["size"]:
                chunk, _ = s.recvfrom(65536)
                contents += chunk
            if "%08X" % (binascii.crc32(contents) & 0xFFFFFFFF) == info["checksum"]:
                with open(os.path.join(directory, "new_" + info["name"]), "wb") as f:
                    f.write(contents)
                s.sendto(b"OK", addr)
        except Exception as e:
            s.sendto(str(e).encode(), addr)


if __name__ == "__main__":
    main()
