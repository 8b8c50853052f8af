#!/usr/bin/python3
"""LAB ONLY probe: from a source address to the echo host, print what the echo host saw.

    egress-probe SOURCE TARGET tcp PORT   -> the client address the HTTP echo saw, or the error
    egress-probe SOURCE TARGET udp PORT   -> the client address the UDP echo saw, or the error
Errors print as errno names (EHOSTUNREACH: refused by an unreachable route) or "timeout".
"""
import errno
import http.client
import json
import socket
import sys


def tcp(source, target, port):
    conn = http.client.HTTPConnection(target, port, timeout=3, source_address=(source, 0))
    conn.request("GET", "/")
    return json.loads(conn.getresponse().read())["client"]


def udp(source, target, port):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(3)
    sock.bind((source, 0))
    sock.sendto(b"probe\n", (target, port))
    reply = sock.recv(512).decode()
    return reply.split()[0].split("=", 1)[1]


def main():
    source, target, proto, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    try:
        print((tcp if proto == "tcp" else udp)(source, target, port))
    except socket.timeout:
        print("timeout")
    except OSError as exc:
        print(errno.errorcode.get(exc.errno, str(exc)))


if __name__ == "__main__":
    main()
