#!/usr/bin/python3
"""Lab echo service: tells every client the source address it was seen with.

HTTP on each TCP port given (`GET /` answers JSON {"client", "port"}), and a UDP echo that
answers `client=<address> port=<port>` on each UDP port given. Standard library only.
"""
import argparse
import http.server
import json
import socketserver
import threading


class EchoHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server naming)
        body = json.dumps({"client": self.client_address[0], "port": self.server.server_address[1]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


class UDPEcho(socketserver.BaseRequestHandler):
    def handle(self):
        _, sock = self.request
        reply = f"client={self.client_address[0]} port={self.server.server_address[1]}\n"
        sock.sendto(reply.encode(), self.client_address)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tcp", type=int, nargs="*", default=[80])
    parser.add_argument("--udp", type=int, nargs="*", default=[])
    args = parser.parse_args()
    servers = [http.server.ThreadingHTTPServer(("0.0.0.0", port), EchoHandler) for port in args.tcp]
    servers += [socketserver.ThreadingUDPServer(("0.0.0.0", port), UDPEcho) for port in args.udp]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


if __name__ == "__main__":
    main()
