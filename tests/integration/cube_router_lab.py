"""The route-aware egress lab in throwaway network namespaces.

    sandbox 192.168.0.2/18 ── sbx0 192.168.0.1/18 ┐
                                                    │ host
    internal 10.206.0.1/24 ── lan0 10.206.0.15/24  ┤   (private target 10.50.0.12 behind "internal")
    inet 198.51.100.1/24   ── wan0 198.51.100.10/24┘   (primary NIC, default route)
    inet 203.0.113.1/24    ── wan0 203.0.113.20/24 remote gateway (MASQUERADEs 169.254.100.0/30 out of wan0)
    inet 192.0.2.1/24      ── eth0 192.0.2.10/24   echo (the "internet" host)
    host natvx 169.254.100.1/30 ══ VXLAN 100 over wan0 ══ remote gateway natvx 169.254.100.2/30

"inet" is the internet: a router joining the host's primary uplink, the remote gateway and the echo
host. The echo servers (TCP and UDP, port 7) answer with the peer address they see.
"""
import json
import os
import subprocess
import sys
import textwrap

from tests.lib.netns import Netns, veth

SANDBOX_CIDR = "192.168.0.0/18"
SANDBOX_IP = "192.168.0.2"
HOST_WAN_IP = "198.51.100.10"
HOST_LAN_IP = "10.206.0.15"
INET_GW = "198.51.100.1"
INTERNAL_GW = "10.206.0.1"
PRIVATE_TARGET = "10.50.0.12"
REMOTE_GW_IP = "203.0.113.20"
ECHO_IP = "192.0.2.10"
TUNNEL_HOST_IP = "169.254.100.1"
TUNNEL_REMOTE_IP = "169.254.100.2"
ROUTER_IP, NAT_IP = "192.168.63.253", "192.168.63.254"
PUBLISHED_PORT = 8080

ECHO_SERVER = textwrap.dedent("""
    import socket, sys, threading
    address = sys.argv[1]
    def udp():
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((address, 7))
        while True:
            data, peer = sock.recvfrom(512)
            sock.sendto(peer[0].encode(), peer)
    threading.Thread(target=udp, daemon=True).start()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, int(sys.argv[2]) if len(sys.argv) > 2 else 7))
    server.listen(16)
    print("ready", flush=True)
    while True:
        conn, peer = server.accept()
        conn.sendall(peer[0].encode())
        conn.close()
""")

CLIENT = textwrap.dedent("""
    import json, os, socket, struct, sys
    target, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    source = sys.argv[4] if len(sys.argv) > 4 else None

    def checksum(data):
        total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
        total = (total >> 16) + (total & 0xFFFF)
        return ~(total + (total >> 16)) & 0xFFFF

    if proto == "icmp":  # echo request; "seen" is who answered the matching echo reply
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        sock.settimeout(5)
        ident = os.getpid() & 0xFFFF
        header = struct.pack("!BBHHH", 8, 0, 0, ident, 1) + b"cube-router"
        sock.sendto(struct.pack("!BBHHH", 8, 0, checksum(header + b"\\0"), ident, 1) + b"cube-router", (target, 0))
        while True:
            data, peer = sock.recvfrom(1024)
            offset = (data[0] & 0x0F) * 4
            kind, _, _, reply_id, _ = struct.unpack("!BBHHH", data[offset:offset + 8])
            if kind == 0 and reply_id == ident:
                seen = peer[0]
                break
    elif proto == "tcp":
        sock = socket.create_connection((target, port), timeout=5,
                                        source_address=(source, 0) if source else None)
        seen = sock.recv(512).decode()
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(5)
        sock.sendto(b"who", (target, port))
        seen = sock.recvfrom(512)[0].decode()
    print(json.dumps({"seen": seen}))
""")


class Lab:
    """Builds the topology; ``close`` removes every namespace and process."""

    def __init__(self):
        self.namespaces, self.captures = [], []
        try:
            self._build()
        except Exception:
            self.close()
            raise

    def _ns(self, prefix):
        ns = Netns(prefix)
        self.namespaces.append(ns)
        return ns

    def _build(self):
        self.host, self.sandbox = self._ns("crhost"), self._ns("crsbx")
        self.internal, self.inet = self._ns("crint"), self._ns("crinet")
        self.remote, self.echo = self._ns("crrgw"), self._ns("crecho")
        host, sandbox, internal, inet, remote, echo = (
            self.host, self.sandbox, self.internal, self.inet, self.remote, self.echo)

        veth(host, "sbx0", sandbox, "eth0")
        host.ip("addr add 192.168.0.1/18 dev sbx0")
        sandbox.ip("addr add %s/18 dev eth0" % SANDBOX_IP)
        sandbox.ip("route add default via 192.168.0.1")

        veth(host, "lan0", internal, "eth0")
        host.ip("addr add %s/24 dev lan0" % HOST_LAN_IP)
        internal.ip("addr add %s/24 dev eth0" % INTERNAL_GW)
        internal.ip("addr add %s/32 dev lo" % PRIVATE_TARGET)

        veth(host, "wan0", inet, "h0")
        host.ip("addr add %s/24 dev wan0" % HOST_WAN_IP)
        inet.ip("addr add %s/24 dev h0" % INET_GW)
        host.ip("route add default via %s dev wan0" % INET_GW)

        veth(remote, "wan0", inet, "g0")
        remote.ip("addr add %s/24 dev wan0" % REMOTE_GW_IP)
        inet.ip("addr add 203.0.113.1/24 dev g0")
        remote.ip("route add default via 203.0.113.1")

        veth(echo, "eth0", inet, "e0")
        echo.ip("addr add %s/24 dev eth0" % ECHO_IP)
        inet.ip("addr add 192.0.2.1/24 dev e0")
        echo.ip("route add default via 192.0.2.1")
        inet.sysctl("net.ipv4.ip_forward", 1)

        # The remote gateway end of the tunnel, MASQUERADing tunnel traffic to the internet.
        remote.ip("link add natvx type vxlan id 100 local %s remote %s dstport 4789 dev wan0" % (REMOTE_GW_IP, HOST_WAN_IP))
        remote.ip("addr add %s/30 dev natvx" % TUNNEL_REMOTE_IP)
        remote.ip("link set natvx up")
        remote.sysctl("net.ipv4.ip_forward", 1)
        remote.run(["nft", "-f", "-"], input=textwrap.dedent("""
            table ip remote_gateway {
                chain postrouting {
                    type nat hook postrouting priority srcnat; policy accept;
                    ip saddr 169.254.100.0/30 oifname "wan0" masquerade
                }
            }
        """))
        # The host is a router for the sandbox, and without cube-router sandbox traffic takes the
        # original direct path: SNAT on the primary NIC (what CubeVS does; this rule stands in for it).
        host.sysctl("net.ipv4.ip_forward", 1)
        host.run(["nft", "-f", "-"], input=textwrap.dedent("""
            table ip lab_direct_snat {
                chain postrouting {
                    type nat hook postrouting priority srcnat; policy accept;
                    ip saddr %s oifname "wan0" masquerade
                }
            }
        """ % SANDBOX_CIDR))

        for ns, address in ((echo, ECHO_IP), (internal, PRIVATE_TARGET)):
            self.serve(ns, address)

    def serve(self, ns, address, port=7):
        proc = ns.popen([sys.executable, "-c", ECHO_SERVER, address, str(port)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    def seen_by(self, ns, target, port=7, proto="tcp", source=None):
        """Connect from ``ns`` and return the peer address the server saw."""
        argv = [sys.executable, "-c", CLIENT, target, str(port), proto] + ([source] if source else [])
        return json.loads(ns.run(argv).stdout)["seen"]

    def capture(self, bpf, count, ns=None):
        """Start ``tcpdump -i any -c count -w`` in the host (or ``ns``); returns a Capture."""
        capture = Capture(ns or self.host, bpf, count)
        self.captures.append(capture)
        return capture

    def snapshot(self, ns=None):
        """Everything cube_router may touch, for before/after comparisons."""
        ns = ns or self.host

        def ipj(args):
            out = ns.run(["ip", "-j"] + args.split()).stdout.strip()
            return json.loads(out) if out else []
        links = [{k: link.get(k) for k in ("ifname", "link_type", "operstate", "mtu", "linkinfo")}
                 for link in ipj("-d link show")]
        return {
            "links": links,
            "addresses": [(a["ifname"], [(i["local"], i["prefixlen"]) for i in a.get("addr_info", [])])
                          for a in ipj("addr show")],
            "rules": ipj("-4 rule show"),
            "routes": ipj("-4 route show table all"),
            "neighbours": [n for n in ipj("-4 neigh show") if "PERMANENT" in n.get("state", [])],
            "nft": ns.run(["nft", "list", "ruleset"]).stdout,
            "tc": {link["ifname"]: ns.run(["tc", "filter", "show", "dev", link["ifname"], "egress"]).stdout
                   for link in links},
            "ip_forward": ns.sysctl("net.ipv4.ip_forward"),
        }

    def close(self):
        for capture in self.captures:  # a failed test may not have stopped its capture
            if os.path.exists(capture.path):
                os.unlink(capture.path)
        for ns in reversed(self.namespaces):
            ns.close()
        self.namespaces = []


class Capture:
    """One pcap of every interface: its packets keep the kernel's order and name their interface.
    tcpdump exits by itself after ``count`` packets, so nothing depends on how long to wait."""

    def __init__(self, ns, bpf, count):
        self.ns = ns
        self.path = "/tmp/cube-router-%s.pcap" % ns.name
        self.proc = ns.popen(["tcpdump", "--immediate-mode", "-U", "-n", "-i", "any", "-c", str(count),
                              "-w", self.path, bpf], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while "listening on" not in self.proc.stderr.readline():  # attached once it says so
            assert self.proc.poll() is None, "tcpdump exited"

    def stop(self):
        """Wait for the packets; return [(interface, direction, 'src > dst: ...'), ...] in capture order."""
        try:
            self.proc.wait(timeout=30)  # a guard against a hang: fewer packets than expected fail below
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            self.proc.wait()
        # Interface indexes in the file resolve to names only inside the namespace.
        out = self.ns.run(["tcpdump", "-n", "-r", self.path]).stdout
        os.unlink(self.path)
        packets = []
        for line in out.splitlines():
            # 10:45:41.564405 cube-router In  IP 192.168.63.254.48650 > 203.0.113.7.7: Flags [S], ...
            fields = line.split(None, 4)
            if len(fields) == 5 and fields[3] == "IP":
                packets.append((fields[1], fields[2], fields[4]))
        return packets
