#!/usr/bin/env python3
"""The seed-004 client as the handout writes it: signals, names and data
separated only by sleep(0.1); names without a length; recv(SIGNALSIZE) for a
signal (36: getsizeof(b'CLS')), recv(4) for a repo's file count, recv(1024)
for names and data, a PON for every piece of a requested file, and a piece
that is exactly DON ends a file.

Usage: signal_client.py HOST PORT send FILE
       signal_client.py HOST PORT send-many FILE...   (one connection)
       signal_client.py HOST PORT send-get FILE TARGET_FILE   (SAF, then RAF of it)
       signal_client.py HOST PORT get NAME TARGET_FILE
       signal_client.py HOST PORT send-repo DIR
       signal_client.py HOST PORT get-repo NAME TARGET_DIR
SLOW_READ=seconds in the environment sleeps that long before every recv (a
slow or busy student machine); SRC_ADDR binds the client to that address first
(a lab of students, each on its own address). Exit 0 on success, 1 when the
server says ERR."""
import os
import socket
import struct
import sys
from enum import Enum
from os.path import exists
from sys import getsizeof
from time import sleep

BUFFERSIZE = 1024
SLOW = float(os.environ.get("SLOW_READ", "0"))


class Signal(Enum):
    CLOSE_SERVER = b'CLS'
    SEND_A_FILE = b'SAF'
    REQUEST_A_FILE = b'RAF'
    SEND_A_REPO = b'SAR'
    REQUEST_A_REPO = b'RAR'
    DONE = b'DON'
    ERROR = b'ERR'
    PING = b'PIN'
    PONG = b'PON'


SIGNALSIZE = getsizeof(Signal.CLOSE_SERVER.value)


def send_signal(client_socket: socket.socket, signal: Signal):
    client_socket.send(signal.value)


def recv(client_socket: socket.socket, n: int) -> bytes:
    if SLOW:
        sleep(SLOW)
    return client_socket.recv(n)


def send_file(client_socket: socket.socket, file_name: str):
    """Send a file to server"""
    if not exists(file_name):
        raise FileNotFoundError(f'{file_name} does not exist')

    send_signal(client_socket, Signal.SEND_A_FILE)
    sleep(0.1)

    client_socket.send(file_name.split("/")[-1].encode())
    sleep(0.1)

    with open(file_name, 'rb') as f:
        while chunk := f.read(BUFFERSIZE):
            client_socket.send(chunk)

    sleep(0.1)
    send_signal(client_socket, Signal.DONE)


def request_file(client_socket: socket.socket, file_name: str, target: str) -> bool:
    """Request a file from server"""
    send_signal(client_socket, Signal.REQUEST_A_FILE)
    sleep(0.1)
    client_socket.send(file_name.encode())
    sleep(0.1)
    sig = recv(client_socket, SIGNALSIZE)
    if sig == Signal.ERROR.value:
        print(f'{file_name} not found on the server')
        return False
    with open(target, 'wb') as f:
        while True:
            data = recv(client_socket, BUFFERSIZE)
            if not data or data == Signal.DONE.value:
                break
            send_signal(client_socket, Signal.PONG)
            f.write(data)
    return True


def send_repo(client_socket: socket.socket, repo_path: str):
    """Send every file of a folder to server"""
    files = sorted(f for f in os.listdir(repo_path) if os.path.isfile(os.path.join(repo_path, f)))
    send_signal(client_socket, Signal.SEND_A_REPO)
    sleep(0.1)
    client_socket.send(struct.pack('!I', len(files)))
    for name in files:
        sleep(0.1)
        client_socket.send(name.encode())
        sleep(0.1)
        with open(os.path.join(repo_path, name), 'rb') as f:
            while chunk := f.read(BUFFERSIZE):
                client_socket.send(chunk)
        sleep(0.1)
        send_signal(client_socket, Signal.DONE)


def request_repo(client_socket: socket.socket, repo_name: str, target: str):
    """Request a folder from server; its files are written flat into target"""
    send_signal(client_socket, Signal.REQUEST_A_REPO)
    sleep(0.1)
    client_socket.send(repo_name.encode())
    count = struct.unpack('!I', recv(client_socket, 4))[0]
    os.makedirs(target, exist_ok=True)
    for _ in range(count):
        name = recv(client_socket, BUFFERSIZE).decode()
        with open(os.path.join(target, name), 'wb') as f:
            while True:
                data = recv(client_socket, BUFFERSIZE)
                if not data or data == Signal.DONE.value:
                    break
                f.write(data)


def main():
    host, port, op, args = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    client_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if os.environ.get("SRC_ADDR"):
        client_socket.bind((os.environ["SRC_ADDR"], 0))
    client_socket.connect((host, port))
    ok = True
    if op == 'send':
        send_file(client_socket, args[0])
    elif op == 'send-many':
        for name in args:
            send_file(client_socket, name)
            sleep(0.1)
    elif op == 'send-get':
        send_file(client_socket, args[0])
        sleep(0.1)
        ok = request_file(client_socket, args[0].split("/")[-1], args[1])
    elif op == 'get':
        ok = request_file(client_socket, args[0], args[1])
    elif op == 'send-repo':
        send_repo(client_socket, args[0])
    elif op == 'get-repo':
        request_repo(client_socket, args[0], args[1])
    sleep(0.1)
    send_signal(client_socket, Signal.CLOSE_SERVER)
    client_socket.close()
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
