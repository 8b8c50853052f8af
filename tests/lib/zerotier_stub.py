"""A local HTTP server that speaks the published shapes of three ZeroTier APIs, with state.

zerotier-one cannot be installed on the test machines, so the modules are tested against this
server instead. It implements, on one port on 127.0.0.1:

* the service API of zerotier-one (``X-ZT1-Auth``): ``GET /status``, ``GET /network``,
  ``GET/POST/DELETE /network/<nwid>`` with the network object fields of service/README.md
  (``id``, ``nwid``, ``status``, ``assignedAddresses``, ``portDeviceName``, ``allowManaged``, ...);
* the self-hosted controller API (same token): ``GET/POST/DELETE
  /controller/network/<nwid>/member/<node>``, flat member object (``authorized``, ``name``,
  ``ipAssignments``); like the real controller it is type-sensitive and ignores fields it does not
  know or of the wrong type;
* the ZeroTier Central API (``Authorization: token <t>``) under ``/api/v1``:
  ``GET/POST/DELETE /api/v1/network/<nwid>/member/<node>``, ``name`` at the top level and
  ``authorized``/``ipAssignments`` under ``config``; top-level ``authorized`` is ignored as Central does.

Both controller views share one member store, so authorizing through either one turns the
service API's ``ACCESS_DENIED`` into ``OK`` on the next poll, as a real controller's new
network config would.

Status after a join: ``REQUESTING_CONFIGURATION`` for ``config_polls`` reads, then ``NOT_FOUND``
for a network the controller does not know, ``ACCESS_DENIED`` while the member of a private
network is not authorized, else ``OK`` with the member's ``ipAssignments`` (or an address from the
network's pool) and a device name. Every request is recorded (method, path, headers with lower-case names, body) so
tests can assert what was and was not sent. ``rate_limit(path, count, retry_after)`` makes the
next ``count`` requests to ``path`` answer 429 with ``Retry-After``.

Run standalone (the Molecule stand-in daemon does this):
``python3 zerotier_stub.py --port 9993 --token-file /var/lib/zerotier-one/authtoken.secret
--network 8056c2e21c000001:10.147.17.0/24``.
"""
import argparse
import ipaddress
import json
import os
import re
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SERVICE_NETWORK = re.compile(r"^/network/([0-9a-f]{16})$")
CONTROLLER_MEMBER = re.compile(r"^/controller/network/([0-9a-f]{16})/member/([0-9a-f]{10})$")
CENTRAL_MEMBER = re.compile(r"^/api/v1/network/([0-9a-f]{16})/member/([0-9a-f]{10})$")


class StubNetwork:
    """A network the stub's controller knows: its address pool and whether it is private."""

    def __init__(self, network_id, cidr="10.147.17.0/24", private=True, name="liteboxd-egress"):
        self.network_id = network_id
        self.subnet = ipaddress.ip_network(cidr)
        self.private = private
        self.name = name
        self._next_host = 10

    def allocate(self):
        address = self.subnet.network_address + self._next_host
        self._next_host += 1
        return str(address)


class ZeroTierStub:
    def __init__(self, token=None, central_token=None, node_address="0deadbeef1", config_polls=2,
                 host="127.0.0.1", port=0):
        self.token = token or secrets.token_hex(12)
        self.central_token = central_token or secrets.token_hex(16)
        self.node_address = node_address
        self.config_polls = config_polls
        self.networks = {}   # network id -> StubNetwork (known to the controller)
        self.joined = {}     # network id -> {"polls": int, "settings": dict}
        self.members = {}    # (network id, node) -> flat member dict (controller shape)
        self.requests = []
        self._rate_limits = {}
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer((host, port), self._handler_class())
        self.server.daemon_threads = True
        self.thread = None

    # -- test controls -------------------------------------------------------------------------
    @property
    def url(self):
        host, port = self.server.server_address[:2]
        return "http://%s:%d" % (host, port)

    @property
    def central_url(self):
        return self.url + "/api/v1"

    def add_network(self, network_id, cidr="10.147.17.0/24", private=True):
        self.networks[network_id] = StubNetwork(network_id, cidr, private)
        return self.networks[network_id]

    def rate_limit(self, path, count, retry_after="1", message="rate limit exceeded, slow down"):
        self._rate_limits[path] = [count, retry_after, message]

    def mutating_requests(self):
        return [r for r in self.requests if r["method"] in ("POST", "PUT", "DELETE")]

    def start(self):
        self.thread = threading.Thread(target=self.server.serve_forever, name="zerotier-stub", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Stop serving; safe to call twice (a test may stop it to make the API unreachable)."""
        if self.thread is None:
            return
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
        self.thread = None

    # -- state ---------------------------------------------------------------------------------
    def _member(self, network_id, node):
        return self.members.get((network_id, node))

    def _ensure_member(self, network_id, node):
        key = (network_id, node)
        if key not in self.members:
            self.members[key] = {
                "id": node, "address": node, "nwid": network_id, "objtype": "member",
                "authorized": False, "activeBridge": False, "name": "", "ipAssignments": [],
                "noAutoAssignIps": False, "revision": 0, "identity": "%s:0:%s" % (node, "ab" * 32),
            }
        return self.members[key]

    def _update_member(self, member, body):
        """Apply a flat controller body with the real controller's type sensitivity."""
        if isinstance(body.get("authorized"), bool):
            member["authorized"] = body["authorized"]
        if isinstance(body.get("name"), str):
            member["name"] = body["name"]
        if isinstance(body.get("activeBridge"), bool):
            member["activeBridge"] = body["activeBridge"]
        ips = body.get("ipAssignments")
        if isinstance(ips, list) and all(isinstance(ip, str) for ip in ips):
            member["ipAssignments"] = [str(ipaddress.ip_address(ip)) for ip in ips]
        member["revision"] += 1

    def _network_object(self, network_id):
        entry = self.joined[network_id]
        entry["polls"] += 1
        known = self.networks.get(network_id)
        obj = {
            "id": network_id, "nwid": network_id, "mac": "32:aa:bb:cc:dd:ee", "name": "",
            "status": "REQUESTING_CONFIGURATION", "type": "PRIVATE", "mtu": 2800, "dhcp": False,
            "bridge": False, "broadcastEnabled": True, "portError": 0, "netconfRevision": 0,
            "assignedAddresses": [], "routes": [], "portDeviceName": "", "allowManaged": True,
            "allowGlobal": False, "allowDefault": False, "allowDNS": False,
        }
        obj.update(entry["settings"])
        if entry["polls"] <= self.config_polls:
            return obj
        if known is None:
            obj["status"] = "NOT_FOUND"
            return obj
        member = self._ensure_member(network_id, self.node_address)
        obj["type"] = "PRIVATE" if known.private else "PUBLIC"
        if known.private and not member["authorized"]:
            obj["status"] = "ACCESS_DENIED"
            return obj
        if not member["ipAssignments"] and obj["allowManaged"]:
            member["ipAssignments"] = [known.allocate()]
        obj.update(
            status="OK", name=known.name, netconfRevision=member["revision"] + 1,
            portDeviceName="zt" + network_id[-8:],
            assignedAddresses=["%s/%d" % (ip, known.subnet.prefixlen) for ip in member["ipAssignments"]]
            if obj["allowManaged"] else [],
            routes=[{"target": str(known.subnet), "via": None, "flags": 0, "metric": 0}],
        )
        return obj

    @staticmethod
    def _central_member(member):
        return {
            "id": "%s-%s" % (member["nwid"], member["id"]), "networkId": member["nwid"], "nodeId": member["id"],
            "name": member["name"], "description": "", "hidden": False, "clock": 0,
            "config": {
                "id": member["id"], "authorized": member["authorized"], "activeBridge": member["activeBridge"],
                "ipAssignments": list(member["ipAssignments"]), "noAutoAssignIps": member["noAutoAssignIps"],
                "revision": member["revision"], "identity": member["identity"],
            },
        }

    # -- HTTP ----------------------------------------------------------------------------------
    def _handle(self, method, path, headers, body):
        """Return (status, payload, extra headers)."""
        limit = self._rate_limits.get(path)
        if limit and limit[0] > 0:
            limit[0] -= 1
            return 429, {"type": "rate_limit", "message": limit[2]}, {"Retry-After": limit[1]}
        if path.startswith("/api/v1/"):
            if headers.get("Authorization") != "token %s" % self.central_token:
                return 403, {"type": "permission", "message": "Invalid API token"}, {}
            return self._central(method, path, body)
        if headers.get("X-ZT1-Auth") != self.token:
            return 401, {"error": "401 Unauthorized"}, {}
        if path.startswith("/controller/"):
            return self._controller(method, path, body)
        return self._service(method, path, body)

    def _service(self, method, path, body):
        if path == "/status" and method == "GET":
            return 200, {"address": self.node_address, "online": True, "version": "1.14.2", "versionMajor": 1,
                         "versionMinor": 14, "versionRev": 2, "tcpFallbackActive": False,
                         "publicIdentity": "%s:0:%s" % (self.node_address, "ab" * 32), "clock": 0}, {}
        if path == "/network" and method == "GET":
            return 200, [self._network_object(nwid) for nwid in sorted(self.joined)], {}
        match = SERVICE_NETWORK.match(path)
        if not match:
            return 404, {}, {}
        network_id = match.group(1)
        if method == "GET":
            if network_id not in self.joined:
                return 404, {}, {}
            return 200, self._network_object(network_id), {}
        if method in ("POST", "PUT"):
            entry = self.joined.setdefault(network_id, {"polls": 0, "settings": {}})
            for field in ("allowManaged", "allowGlobal", "allowDefault", "allowDNS"):
                if isinstance(body.get(field), bool):
                    entry["settings"][field] = body[field]
            entry["polls"] -= 1  # building the answer below is not a poll
            return 200, self._network_object(network_id), {}
        if method == "DELETE":
            if self.joined.pop(network_id, None) is None:
                return 404, {}, {}
            return 200, {"result": True}, {}
        return 405, {}, {}

    def _controller(self, method, path, body):
        match = CONTROLLER_MEMBER.match(path)
        if not match:
            return 404, {}, {}
        network_id, node = match.groups()
        if network_id not in self.networks:
            return 404, {}, {}
        member = self._member(network_id, node)
        if method == "GET":
            return (200, member, {}) if member else (404, {}, {})
        if method in ("POST", "PUT"):
            member = self._ensure_member(network_id, node)
            self._update_member(member, body)
            return 200, member, {}
        if method == "DELETE":
            if member is None:
                return 404, {}, {}
            return 200, self.members.pop((network_id, node)), {}
        return 405, {}, {}

    def _central(self, method, path, body):
        match = CENTRAL_MEMBER.match(path)
        if not match or match.group(1) not in self.networks:
            return 404, {"type": "not_found", "message": "network not found"}, {}
        network_id, node = match.groups()
        member = self._member(network_id, node)
        if method == "GET":
            if member is None:
                return 404, {"type": "not_found", "message": "member not found"}, {}
            return 200, self._central_member(member), {}
        if method == "POST":
            member = self._ensure_member(network_id, node)
            flat = dict(body.get("config") or {}) if isinstance(body.get("config"), dict) else {}
            flat.pop("name", None)  # Central's member name lives at the top level only
            if isinstance(body.get("name"), str):
                flat["name"] = body["name"]
            self._update_member(member, flat)
            return 200, self._central_member(member), {}
        if method == "DELETE":
            if member is None:
                return 404, {"type": "not_found", "message": "member not found"}, {}
            self.members.pop((network_id, node))
            return 200, {}, {}
        return 405, {}, {}

    def _handler_class(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw.strip() else {}
                except ValueError:
                    body = None
                path = self.path.split("?", 1)[0]
                if path != "/" and path.endswith("/"):
                    path = path[:-1]
                with stub.lock:
                    stub.requests.append({"method": self.command, "path": path, "headers": dict((k.lower(), v) for k, v in self.headers.items()),
                                          "body": body})
                    if body is None:
                        status, payload, extra = 400, {"error": "malformed JSON"}, {}
                    else:
                        status, payload, extra = stub._handle(self.command, path, self.headers,
                                                              body if isinstance(body, dict) else {})
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

            def log_message(self, *args):
                pass

        return Handler


def main():
    parser = argparse.ArgumentParser(description="ZeroTier API stand-in (service, controller and Central shapes)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9993)
    parser.add_argument("--token-file", required=True, help="authtoken.secret to create (if absent) and use")
    parser.add_argument("--node-address", default="0deadbeef1")
    parser.add_argument("--config-polls", type=int, default=2)
    parser.add_argument("--network", action="append", default=[],
                        help="NWID:CIDR[:public] the stand-in controller knows (members of public ones need no "
                             "authorization)")
    args = parser.parse_args()
    if not os.path.exists(args.token_file):
        os.makedirs(os.path.dirname(args.token_file) or ".", exist_ok=True)
        fd = os.open(args.token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(12))
    with open(args.token_file) as handle:
        token = handle.read().strip()
    stub = ZeroTierStub(token=token, node_address=args.node_address, config_polls=args.config_polls,
                        host=args.host, port=args.port)
    for spec in args.network:
        parts = spec.split(":")
        stub.add_network(parts[0], parts[1], private=not (len(parts) > 2 and parts[2] == "public"))
    stub.server.serve_forever()


if __name__ == "__main__":
    main()
