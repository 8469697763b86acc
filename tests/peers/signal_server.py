#!/usr/bin/env python3
"""The seed-004 server as the handout writes it: one client at a time, a loop
of receive_signal (recv(36)) and the four file functions, messages separated
only by sleep(0.1), names read with recv(1024), a PON awaited for every piece
of a file it sends. Files are kept flat in DIR (the handout writes them under
file-transfered/server-receive/); CLS ends this client, not the server.

Usage: signal_server.py PORT DIR  (PORT 0 picks one; prints "ready PORT")"""
import os
import socket
import struct
import sys
from enum import Enum
from sys import getsizeof
from time import sleep

BUFFERSIZE = 1024


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


def send_signal(client_socket, signal):
    client_socket.send(signal.value)


def receive_signal(client_socket):
    return client_socket.recv(SIGNALSIZE)


def receive_file(client_socket, directory):
    file_name = client_socket.recv(BUFFERSIZE).decode()
    with open(os.path.join(directory, os.path.basename(file_name)), 'wb') as f:
        while True:
            data = client_socket.recv(BUFFERSIZE)
            if not data or data == Signal.DONE.value:
                break
            f.write(data)


def send_file(client_socket, path):
    if not os.path.isfile(path):
        send_signal(client_socket, Signal.ERROR)
        return
    send_signal(client_socket, Signal.SEND_A_FILE)
    sleep(0.1)
    with open(path, 'rb') as f:
        while chunk := f.read(BUFFERSIZE):
            client_socket.send(chunk)
            client_socket.recv(SIGNALSIZE)  # PON
    sleep(0.1)
    send_signal(client_socket, Signal.DONE)


def receive_repo(client_socket, directory):
    count = struct.unpack('!I', client_socket.recv(4))[0]
    for _ in range(count):
        receive_file(client_socket, directory)


def send_repo(client_socket, path):
    files = sorted(f for f in os.listdir(path) if os.path.isfile(os.path.join(path, f))) \
        if os.path.isdir(path) else []
    client_socket.send(struct.pack('!I', len(files)))
    for name in files:
        sleep(0.1)
        client_socket.send(name.encode())
        sleep(0.1)
        with open(os.path.join(path, name), 'rb') as f:
            while chunk := f.read(BUFFERSIZE):
                client_socket.send(chunk)
        sleep(0.1)
        send_signal(client_socket, Signal.DONE)


def serve(client_socket, directory):
    while True:
        sig = receive_signal(client_socket)
        if sig == Signal.CLOSE_SERVER.value:
            break
        if sig == Signal.SEND_A_FILE.value:
            receive_file(client_socket, directory)
        if sig == Signal.REQUEST_A_FILE.value:
            file_name = client_socket.recv(BUFFERSIZE)
            send_file(client_socket, os.path.join(directory, file_name.decode()))
        if sig == Signal.SEND_A_REPO.value:
            receive_repo(client_socket, directory)
        if sig == Signal.REQUEST_A_REPO.value:
            repo_name = client_socket.recv(BUFFERSIZE)
            send_repo(client_socket, os.path.join(directory, repo_name.decode()))
        if sig == Signal.PING.value:
            send_signal(client_socket, Signal.PONG)
        if not sig:
            break


def main():
    port, directory = int(sys.argv[1]), sys.argv[2]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(('127.0.0.1', port))
    sock.listen(16)
    print(f"ready {sock.getsockname()[1]}", flush=True)
    while True:
        client_socket, _ = sock.accept()
        try:
            serve(client_socket, directory)
        except Exception as e:
            print(e, file=sys.stderr)
        finally:
            client_socket.close()


if __name__ == '__main__':
    main()
