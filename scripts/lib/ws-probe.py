#!/usr/bin/env python3
"""A minimal websocket client for scripts/test-package.sh: Python's standard library only, so it
runs inside the test's systemd container with the host's own python3.

Usage: ws-probe.py URL [--host HOST] [--origin ORIGIN] [--timeout SECONDS]

Connects to URL (ws:// or wss://; certificates are not verified: the test's are self-signed),
optionally sending HOST as the Host header (to reach a named nginx server on 127.0.0.1), and
prints one line per event, flushed at once so that the caller can wait on it:

    open                 the upgrade succeeded (101)
    message <text>       a text frame
    close <code>         the server's close frame (1001: going away), after which it exits 0
    error <what>         anything else (refused upgrade, connection lost, timeout): exit 1

Pings are answered with pongs; the client never closes on its own before the timeout
(default 60 s), after which it prints "error timeout".
"""

import argparse
import base64
import os
import socket
import ssl
import struct
import sys
import urllib.parse


def say(line):
    print(line, flush=True)


# Bytes received after the handshake's header, before read_exact asked for them.
PENDING = bytearray()


def read_exact(sock, n):
    while len(PENDING) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        PENDING.extend(chunk)
    data = bytes(PENDING[:n])
    del PENDING[:n]
    return data


def send_frame(sock, opcode, payload):
    """A masked client frame (RFC 6455 5.3: clients must mask)."""
    mask = os.urandom(4)
    header = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        header += bytes([0x80 | n])
    elif n < 65536:
        header += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        header += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(header + mask + masked)


def read_frame(sock):
    b0, b1 = read_exact(sock, 2)
    opcode = b0 & 0x0F
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", read_exact(sock, 2))
    elif n == 127:
        (n,) = struct.unpack("!Q", read_exact(sock, 8))
    mask = read_exact(sock, 4) if b1 & 0x80 else None
    payload = read_exact(sock, n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return opcode, payload


def connect(url, host, origin, timeout, unix=None):
    parts = urllib.parse.urlsplit(url)
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    if unix:
        # The server's own unix socket (its systemd socket unit), bypassing nginx.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(unix)
    else:
        sock = socket.create_connection((parts.hostname, port), timeout=timeout)
    host = host or parts.netloc
    if secure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        sock = context.wrap_socket(sock, server_hostname=host.split(":")[0])
    path = parts.path + ("?" + parts.query if parts.query else "")
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    )
    if origin:
        request += f"Origin: {origin}\r\n"
    sock.sendall((request + "\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed during the handshake")
        response += chunk
    head, rest = response.split(b"\r\n\r\n", 1)
    PENDING.extend(rest)
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 101 " not in status + " ":
        raise ConnectionError(f"upgrade refused: {status}")
    return sock


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--host")
    parser.add_argument("--origin")
    parser.add_argument("--timeout", type=float, default=60.0)
    parser.add_argument("--unix", help="connect to this unix socket instead of the URL's host")
    args = parser.parse_args()
    try:
        sock = connect(args.url, args.host, args.origin, args.timeout, args.unix)
        say("open")
        while True:
            opcode, payload = read_frame(sock)
            if opcode == 0x1:
                say("message " + payload.decode(errors="replace"))
            elif opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                say(f"close {code}")
                return 0
            elif opcode == 0x9:
                send_frame(sock, 0xA, payload)
    except socket.timeout:
        say("error timeout")
    except (OSError, ConnectionError) as e:
        say(f"error {e}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
