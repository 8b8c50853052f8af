"""A stand-in for zerotier-one 1.14.1 and ZeroTier Central, built from how the real daemon behaves.

zerotier-one cannot be installed on the test machines. This module serves, with state and with the
real daemon's timing, what ``docs/zerotier.md`` ("What the real daemon does", observed on
zerotier-one 1.14.1) records:

* a **daemon** (``Daemon``): the service API (``X-ZT1-Auth``, ``?auth=`` or ``Authorization:
  Bearer``; 401 with body ``{}``) and the controller API under ``/controller`` (404s with an empty
  body), one HTTP server per node, each node with its own address and token;
* **ZeroTier Central** (``Central``): ``/api/v1/network/<nwid>[/member/<node>]``, ``name`` at the
  top level and ``authorized``/``ipAssignments`` under ``config`` (``Authorization: token <t>``).

Nodes and controllers meet in a ``World``: a node that joins network ``<nwid>`` asks the controller
whose address is the id's first 10 hex digits for its configuration, ``Timings.first_answer``
seconds after the join (``REQUESTING_CONFIGURATION`` until then, and for ever when no controller
has that address). The controller answers ``NOT_FOUND`` for a network it does not know, makes the
node's member record itself (unauthorized, no ``name``) and answers ``ACCESS_DENIED`` or ``OK``
with the member's addresses. A change of authorization reaches a node that already has an answer
late: ``authorize_delay`` after an authorization, ``deauthorize_delay`` after a de-authorization
(the node keeps reporting ``OK`` and keeps its addresses meanwhile, and after it). A member deleted
while its node is joined is made again ``recreate_delay`` later. ``Timings()`` are the observed
values; tests pass short ones so they stay fast.

Every request is recorded per server (method, path, query, lower-case headers, body) so tests can
assert what was and was not sent; ``rate_limit(path, count, retry_after)`` answers the next
``count`` requests to ``path`` with 429 and ``Retry-After``.

Run standalone (the Molecule stand-in package does), one daemon per host:
``python3 zerotier_stub.py --home /var/lib/zerotier-one --endpoint 10.89.20.30
--root http://10.89.20.30:9993 [--address 8056c2e21c] [--network NWID:CIDR] [--data-path]``.
There a node asks the root over HTTP (``/stand-in/netconf`` on the endpoint, the stand-in for
ZeroTier's UDP protocol), and with ``--data-path`` each joined network gets a real device named as
zerotier-one names it: a VXLAN device over the endpoint with the assigned address and a forwarding
entry for every authorized peer, so packets cross the stand-in tunnel (and stop at once for a
de-authorized member, as with ZeroTier).
"""
import argparse
import ipaddress
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

VERSION = (1, 14, 1)
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"
HEX16 = re.compile(r"^[0-9a-fA-F]{16}$")
SERVICE_NETWORK = re.compile(r"^/network/([^/]+)$")
CONTROLLER_NETWORK = re.compile(r"^/controller/network/([0-9a-fA-F]{10}(?:[0-9a-fA-F]{6}|______))$")
CONTROLLER_MEMBERS = re.compile(r"^/controller/network/([0-9a-fA-F]{16})/member$")
CONTROLLER_MEMBER = re.compile(r"^/controller/network/([0-9a-fA-F]{16})/member/([0-9a-fA-F]{10})$")
CENTRAL_NETWORK = re.compile(r"^/api/v1/network/([0-9a-fA-F]{16})$")
CENTRAL_MEMBER = re.compile(r"^/api/v1/network/([0-9a-fA-F]{16})/member/([0-9a-fA-F]{10})$")
LOCAL_SETTINGS = ("allowManaged", "allowGlobal", "allowDefault", "allowDNS")


def device_name(network_id):
    """The device zerotier-one creates for a network: "zt" + base32 of nwid ^ (nwid >> 24), 40 bits.

    The same name on every node (osdep/LinuxEthernetTap.cpp, without the collision suffix).
    """
    nwid = int(network_id, 16)
    nwid40 = (nwid ^ (nwid >> 24)) & 0xFFFFFFFFFF
    return "zt" + "".join(BASE32[(nwid40 >> (35 - 5 * i)) & 0x1F] for i in range(8))


def _ms():
    return int(time.time() * 1000)


class Timings:
    """Seconds between what happens on a controller and what a node reports.

    The defaults are the observed values (zerotier-one 1.14.1, private root, no internet).
    """

    def __init__(self, first_answer=2.0, authorize_delay=1.5, deauthorize_delay=45.0, recreate_delay=3.0):
        self.first_answer = first_answer            # join -> first answer (ACCESS_DENIED 1-4 s, NOT_FOUND ~2 s)
        self.authorize_delay = authorize_delay      # a denied node stays ACCESS_DENIED 0.7-2.3 s after authorization
        self.deauthorize_delay = deauthorize_delay  # a de-authorized node stays OK 29-58 s
        self.recreate_delay = recreate_delay        # a member deleted while joined is back within about 3 s

    @classmethod
    def parse(cls, text):
        """``first_answer=0.5,deauthorize_delay=20`` -> Timings."""
        values = {}
        for item in filter(None, (text or "").split(",")):
            key, value = item.partition("=")[::2]
            if key not in cls().__dict__:
                raise ValueError("unknown timing %r (known: %s)" % (key, ", ".join(sorted(cls().__dict__))))
            values[key] = float(value)
        return cls(**values)


class Controller:
    """The network controller inside zerotier-one (or behind Central): networks, members, netconf."""

    def __init__(self, address, timings):
        self.address = address
        self.timings = timings
        self.networks = {}       # nwid -> controller network object
        self.members = {}        # (nwid, node) -> member object
        self.history = {}        # (nwid, node) -> [(monotonic time, authorized)]
        self.first_request = {}  # (nwid, node) -> when the node first asked for this record's config
        self.deleted = {}        # (nwid, node) -> when the record was deleted
        self.endpoints = {}      # (nwid, node) -> the node's physical endpoint (stand-in data path)
        self._pool_next = {}

    # -- networks ------------------------------------------------------------------------------
    def create_network(self, network_id=None, body=None):
        """POST /controller/network/<nwid>, or <address>______ for a new random id."""
        if network_id is None or network_id.endswith("______"):
            prefix = (network_id or self.address)[:10]
            network_id = prefix + secrets.token_hex(3)
        network_id = network_id.lower()
        network = self.networks.get(network_id)
        if network is None:
            network = {
                "authTokens": [], "capabilities": [], "creationTime": _ms(), "dns": {"domain": "", "servers": []},
                "enableBroadcast": True, "id": network_id, "ipAssignmentPools": [], "mtu": 2800,
                "multicastLimit": 32, "name": "", "nwid": network_id, "objtype": "network", "private": True,
                "revision": 0, "routes": [], "rules": [{"type": "ACTION_ACCEPT"}], "ssoEnabled": False,
                "tags": [], "v4AssignMode": {"zt": False},
                "v6AssignMode": {"6plane": False, "rfc4193": False, "zt": False},
            }
            self.networks[network_id] = network
        self._update_network(network, body or {})
        return network

    @staticmethod
    def _update_network(network, body):
        for field, kind in (("name", str), ("private", bool), ("mtu", int), ("enableBroadcast", bool)):
            if isinstance(body.get(field), kind):
                network[field] = body[field]
        if isinstance(body.get("routes"), list):
            network["routes"] = [{"target": str(ipaddress.ip_network(r["target"], strict=False)),
                                  "via": r.get("via")} for r in body["routes"] if isinstance(r, dict)]
        if isinstance(body.get("ipAssignmentPools"), list):
            network["ipAssignmentPools"] = [{"ipRangeStart": p["ipRangeStart"], "ipRangeEnd": p["ipRangeEnd"]}
                                            for p in body["ipAssignmentPools"] if isinstance(p, dict)]
        for mode in ("v4AssignMode", "v6AssignMode"):
            if isinstance(body.get(mode), dict):
                network[mode].update((k, v) for k, v in body[mode].items() if isinstance(v, bool))
        network["revision"] += 1

    def add_network(self, network_id, cidr="10.147.17.0/24", private=True, name="liteboxd-egress"):
        """A network with a managed route and a pool over ``cidr`` (hosts .1 to the last)."""
        subnet = ipaddress.ip_network(cidr)
        hosts = list(subnet.hosts())
        return self.create_network(network_id, {
            "name": name, "private": private, "routes": [{"target": cidr, "via": None}],
            "ipAssignmentPools": [{"ipRangeStart": str(hosts[0]), "ipRangeEnd": str(hosts[-1])}],
            "v4AssignMode": {"zt": True}})

    # -- members -------------------------------------------------------------------------------
    @staticmethod
    def _new_member(network_id, node, identity=""):
        """The record a controller makes: unauthorized, no addresses and no ``name`` key."""
        return {
            "activeBridge": False, "address": node, "authenticationExpiryTime": 0, "authorized": False,
            "capabilities": [], "creationTime": _ms(), "id": node, "identity": identity, "ipAssignments": [],
            "lastAuthorizedCredential": None, "lastAuthorizedCredentialType": None, "lastAuthorizedTime": 0,
            "lastDeauthorizedTime": 0, "noAutoAssignIps": False, "nwid": network_id, "objtype": "member",
            "revision": 1, "ssoExempt": False, "tags": [], "vMajor": -1, "vMinor": -1, "vProto": -1, "vRev": -1,
        }

    def update_member(self, network_id, node, body, now):
        """POST a flat body: creates the record if absent; unknown fields and wrong types are ignored."""
        key = (network_id, node)
        member = self.members.get(key)
        if member is None:
            member = self.members[key] = self._new_member(network_id, node)
            self.history[key] = [(now, False)]
            self.deleted.pop(key, None)
        if isinstance(body.get("authorized"), bool) and body["authorized"] != member["authorized"]:
            member["authorized"] = body["authorized"]
            member["lastAuthorizedTime" if body["authorized"] else "lastDeauthorizedTime"] = _ms()
            member["lastAuthorizedCredentialType"] = "api" if body["authorized"] else member[
                "lastAuthorizedCredentialType"]
            self.history.setdefault(key, []).append((now, body["authorized"]))
        if isinstance(body.get("name"), str):
            member["name"] = body["name"]
        for field in ("activeBridge", "noAutoAssignIps", "ssoExempt"):
            if isinstance(body.get(field), bool):
                member[field] = body[field]
        ips = body.get("ipAssignments")
        if isinstance(ips, list) and all(isinstance(ip, str) for ip in ips):
            parsed = []
            for ip in ips:
                try:
                    parsed.append(str(ipaddress.ip_address(ip)))  # stored compressed, as the controller does
                except ValueError:
                    continue
            member["ipAssignments"] = parsed
        member["revision"] += 1
        return member

    def delete_member(self, network_id, node, now):
        key = (network_id, node)
        member = self.members.pop(key, None)
        if member is not None:
            self.deleted[key] = now
            self.history.pop(key, None)
            self.first_request.pop(key, None)
        return member

    def _authorized_for_node(self, key, now):
        """Authorization as the node sees it: changes after its first answer reach it late."""
        first = self.first_request[key]
        best = None
        for when, value in self.history.get(key, []):
            delay = self.timings.authorize_delay if value else self.timings.deauthorize_delay
            if when <= first or when + delay <= now:
                if best is None or when >= best[0]:
                    best = (when, value)
        return bool(best and best[1])

    def _allocate(self, network, member):
        """A pool address for a member without one: stable for a node id, free on the network."""
        taken = set(ip for m in self.members.values() if m["nwid"] == network["id"] for ip in m["ipAssignments"])
        for pool in network["ipAssignmentPools"]:
            start = int(ipaddress.ip_address(pool["ipRangeStart"]))
            end = int(ipaddress.ip_address(pool["ipRangeEnd"]))
            if ipaddress.ip_address(start).version != 4:
                continue
            size = end - start + 1
            offset = int(member["address"], 16) % size
            for step in range(size):
                candidate = str(ipaddress.ip_address(start + (offset + step) % size))
                if candidate not in taken:
                    return candidate
        return None

    def netconf(self, network_id, node, identity, endpoint, now):
        """A node's configuration request; None while the controller does not answer yet."""
        network = self.networks.get(network_id)
        if network is None:
            return {"status": "NOT_FOUND"}
        key = (network_id, node)
        member = self.members.get(key)
        if member is None:
            deleted = self.deleted.get(key)
            if deleted is not None and now < deleted + self.timings.recreate_delay:
                return None
            member = self.members[key] = self._new_member(network_id, node, identity)
            self.history[key] = [(now, False)]
            self.deleted.pop(key, None)
        if key not in self.first_request:
            self.first_request[key] = now
            # The controller records the node's version: the revision moves without any API write.
            member.update(vMajor=VERSION[0], vMinor=VERSION[1], vRev=VERSION[2], vProto=12,
                          identity=member["identity"] or identity)
            member["revision"] += 1
        if endpoint:
            self.endpoints[key] = endpoint
        if network["private"] and not self._authorized_for_node(key, now):
            return {"status": "ACCESS_DENIED"}
        if (network["v4AssignMode"].get("zt") and not member["noAutoAssignIps"]
                and not any(ipaddress.ip_address(ip).version == 4 for ip in member["ipAssignments"])):
            address = self._allocate(network, member)
            if address:
                member["ipAssignments"] = member["ipAssignments"] + [address]
                member["revision"] += 1
        addresses = []
        for ip in member["ipAssignments"]:
            for route in network["routes"]:
                target = ipaddress.ip_network(route["target"])
                if route.get("via") is None and ipaddress.ip_address(ip) in target:
                    addresses.append("%s/%d" % (ip, target.prefixlen))
                    break
        # Traffic follows the record at once, whatever the node still reports: no peers for a member
        # that is not authorized any more, and it is in nobody else's peers.
        peers = self.peers(network_id, exclude=node) if member["authorized"] or not network["private"] else []
        return {"status": "OK", "name": network["name"], "addresses": addresses, "mtu": network["mtu"],
                "routes": [{"target": r["target"], "via": r.get("via"), "flags": 0, "metric": 0}
                           for r in network["routes"]],
                "revision": network["revision"], "peers": peers}

    def peers(self, network_id, exclude=None):
        """Authorized members with a known endpoint (the stand-in data path's forwarding entries)."""
        network = self.networks[network_id]
        return [{"node": node, "endpoint": endpoint}
                for (nwid, node), endpoint in sorted(self.endpoints.items())
                if nwid == network_id and node != exclude and (nwid, node) in self.members
                and (not network["private"] or self.members[(nwid, node)]["authorized"])]


class Join:
    """A network as one node has joined it."""

    def __init__(self, network_id, now):
        self.network_id = network_id
        self.joined_at = now
        self.settings = {"allowManaged": True, "allowGlobal": False, "allowDefault": False, "allowDNS": False}
        self.answer = None      # the controller's last answer
        self.addresses = []     # what is on the device: kept after ACCESS_DENIED, as zerotier-one does

    def apply(self, answer):
        self.answer = answer
        if answer["status"] == "OK":
            self.addresses = list(answer["addresses"]) if self.settings["allowManaged"] else []

    def status(self):
        return self.answer["status"] if self.answer else "REQUESTING_CONFIGURATION"

    def network_object(self):
        answer = self.answer or {}
        managed = self.settings["allowManaged"]
        obj = {
            "allowDNS": False, "allowDefault": False, "allowGlobal": False, "allowManaged": True,
            "assignedAddresses": list(self.addresses), "bridge": False, "broadcastEnabled": True, "dhcp": False,
            "dns": {"domain": "", "servers": []}, "id": self.network_id, "mac": "32:aa:bb:cc:dd:ee",
            "mtu": answer.get("mtu", 2800), "multicastSubscriptions": [], "name": answer.get("name", ""),
            "netconfRevision": answer.get("revision", 0), "nwid": self.network_id,
            "portDeviceName": device_name(self.network_id),  # set from the join on
            "portError": 0, "routes": list(answer.get("routes", [])) if managed else [], "status": self.status(),
            "type": "PRIVATE",
        }
        obj.update(self.settings)
        return obj


class Node:
    """The service side of a daemon: joins, asks controllers through ``transport``, reports."""

    def __init__(self, address, timings, transport, endpoint="", on_change=None):
        self.address = address
        self.identity = "%s:0:%s" % (address, secrets.token_hex(32))
        self.timings = timings
        self.transport = transport
        self.endpoint = endpoint
        self.on_change = on_change or (lambda join: None)
        self.joins = {}

    def refresh(self, now):
        for join in list(self.joins.values()):
            if now - join.joined_at < self.timings.first_answer:
                continue
            answer = self.transport(join.network_id, {"node": self.address, "identity": self.identity,
                                                      "endpoint": self.endpoint})
            if answer is not None and join.network_id in self.joins:
                join.apply(answer)
                self.on_change(join)

    def status(self):
        return {
            "address": self.address, "clock": _ms(),
            "config": {"settings": {"allowTcpFallbackRelay": True, "portMappingEnabled": True, "primaryPort": 9993,
                                    "softwareUpdate": "disable", "softwareUpdateChannel": "release"}},
            "online": True, "planetWorldId": 149604618, "planetWorldTimestamp": 1644592324813,
            "publicIdentity": self.identity,
            "tcpFallbackActive": False, "version": "%d.%d.%d" % VERSION, "versionBuild": 0,
            "versionMajor": VERSION[0], "versionMinor": VERSION[1], "versionRev": VERSION[2],
        }

    def join(self, network_id, body, now):
        join = self.joins.get(network_id)
        if join is None:
            join = self.joins[network_id] = Join(network_id, now)
        for field in LOCAL_SETTINGS:
            if isinstance(body.get(field), bool):
                join.settings[field] = body[field]
        if join.answer is not None:
            join.apply(join.answer)
        self.on_change(join)
        return join

    def leave(self, network_id):
        join = self.joins.pop(network_id, None)
        if join is not None:
            join.answer = None
            self.on_change(_Left(network_id))
        return join


class _Left:
    """What on_change gets for a network the node left."""

    def __init__(self, network_id):
        self.network_id = network_id
        self.answer = None
        self.addresses = []

    @staticmethod
    def status():
        return "LEFT"


# -- HTTP ---------------------------------------------------------------------------------------

EMPTY = object()  # an answer with no body at all (zerotier-one's 404 when no route matches)


class Server:
    """One HTTP server: records requests, answers rate limits, hands the rest to ``handle``.

    ``handle(method, path, query, headers, body)`` returns (status, payload, extra headers);
    payload EMPTY sends no body.
    """

    def __init__(self, handle, lock, host="127.0.0.1", port=0):
        self.handle = handle
        self.lock = lock
        self.requests = []
        self._rate_limits = {}
        self.httpd = ThreadingHTTPServer((host, port), self._handler_class())
        self.httpd.daemon_threads = True
        self.thread = None

    @property
    def url(self):
        host, port = self.httpd.server_address[:2]
        return "http://%s:%d" % (host, port)

    def rate_limit(self, path, count, retry_after="1", message="rate limit exceeded, slow down"):
        self._rate_limits[path] = [count, retry_after, message]

    def mutating_requests(self):
        return [r for r in self.requests if r["method"] in ("POST", "PUT", "DELETE")]

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="zerotier-stub", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Stop serving; safe to call twice (a test may stop it to make the API unreachable)."""
        if self.thread is None:
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
        self.thread = None

    def _handler_class(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw.strip() else {}
                except ValueError:
                    body = None
                parts = urlsplit(self.path)
                path = parts.path
                if path != "/" and path.endswith("/"):
                    path = path[:-1]
                query = dict((k, v[-1]) for k, v in parse_qs(parts.query).items())
                headers = dict((k.lower(), v) for k, v in self.headers.items())
                with server.lock:
                    server.requests.append({"method": self.command, "path": path, "query": query,
                                            "headers": headers, "body": body})
                    limit = server._rate_limits.get(path)
                    if limit and limit[0] > 0:
                        limit[0] -= 1
                        status, payload, extra = 429, {"type": "rate_limit", "message": limit[2]}, {
                            "Retry-After": limit[1]}
                    elif body is None:
                        status, payload, extra = 400, {}, {}
                    else:
                        status, payload, extra = server.handle(self.command, path, query, headers,
                                                               body if isinstance(body, dict) else {})
                data = b"" if payload is EMPTY else json.dumps(payload).encode()
                self.send_response(status)
                if payload is not EMPTY:
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


class Daemon(Server):
    """One zerotier-one: a node with its service API and its built-in controller, on one port."""

    def __init__(self, address, timings, transport, lock, token=None, host="127.0.0.1", port=0, endpoint="",
                 on_change=None, before_request=None):
        super(Daemon, self).__init__(self._handle, lock, host, port)
        self.token = token or secrets.token_hex(12)
        self.node = Node(address, timings, transport, endpoint, on_change)
        self.controller = Controller(address, timings)
        self.before_request = before_request or (lambda: None)

    @property
    def address(self):
        return self.node.address

    def add_network(self, network_id, cidr="10.147.17.0/24", private=True):
        return self.controller.add_network(network_id, cidr, private)

    def _authorized(self, query, headers):
        bearer = headers.get("authorization", "")
        given = headers.get("x-zt1-auth") or query.get("auth") or (bearer[7:] if bearer.startswith("Bearer ") else "")
        return given == self.token

    def _handle(self, method, path, query, headers, body):
        if not self._authorized(query, headers):
            return 401, {}, {}
        self.before_request()
        now = time.monotonic()
        if path == "/controller" or path.startswith("/controller/"):
            return self._controller(method, path, body, now)
        return self._service(method, path, body, now)

    def _service(self, method, path, body, now):
        node = self.node
        if path == "/status" and method == "GET":
            return 200, node.status(), {}
        if path == "/network" and method == "GET":
            return 200, [node.joins[n].network_object() for n in sorted(node.joins)], {}
        match = SERVICE_NETWORK.match(path)
        if not match or not HEX16.match(match.group(1)):
            return 404, EMPTY, {}
        network_id = match.group(1).lower()
        if method == "GET":
            join = node.joins.get(network_id)
            return (200, join.network_object(), {}) if join else (404, {}, {})
        if method in ("POST", "PUT"):
            return 200, node.join(network_id, body, now).network_object(), {}
        if method == "DELETE":
            return (200, {"result": True}, {}) if node.leave(network_id) else (200, {}, {})
        return 404, EMPTY, {}

    def _controller(self, method, path, body, now):
        controller = self.controller
        if path == "/controller" and method == "GET":
            return 200, {"controller": True, "apiVersion": 4, "clock": _ms(), "databaseReady": True}, {}
        if path == "/controller/network" and method == "GET":
            return 200, sorted(controller.networks), {}
        match = CONTROLLER_NETWORK.match(path)
        if match:
            network_id = match.group(1).lower()
            if method == "POST":
                return 200, controller.create_network(network_id, body), {}
            network = controller.networks.get(network_id)
            return (200, network, {}) if method == "GET" and network else (404, EMPTY, {})
        match = CONTROLLER_MEMBERS.match(path)
        if match and method == "GET":
            network_id = match.group(1).lower()
            if network_id not in controller.networks:
                return 404, EMPTY, {}
            return 200, dict((node, m["revision"]) for (nwid, node), m in sorted(controller.members.items())
                             if nwid == network_id), {}
        match = CONTROLLER_MEMBER.match(path)
        if not match:
            return 404, EMPTY, {}
        network_id, node = match.group(1).lower(), match.group(2).lower()
        if network_id not in controller.networks:
            return 404, EMPTY, {}
        if method == "GET":
            member = controller.members.get((network_id, node))
            return (200, member, {}) if member else (404, EMPTY, {})
        if method in ("POST", "PUT"):
            return 200, controller.update_member(network_id, node, body, now), {}
        if method == "DELETE":
            member = controller.delete_member(network_id, node, now)
            return (200, member, {}) if member else (404, EMPTY, {})
        return 404, EMPTY, {}


class Central(Server):
    """ZeroTier Central's member API over a controller that answers for ``prefix``."""

    def __init__(self, prefix, timings, lock, token=None, before_request=None):
        super(Central, self).__init__(self._handle, lock)
        self.token = token or secrets.token_hex(16)
        self.controller = Controller(prefix, timings)
        self.before_request = before_request or (lambda: None)

    @property
    def api_url(self):
        return self.url + "/api/v1"

    def add_network(self, network_id, cidr="10.147.17.0/24", private=True):
        return self.controller.add_network(network_id, cidr, private)

    @staticmethod
    def _member(member):
        return {
            "id": "%s-%s" % (member["nwid"], member["id"]), "networkId": member["nwid"], "nodeId": member["id"],
            "name": member.get("name", ""), "description": "", "hidden": False, "clock": _ms(),
            "config": dict((k, member[k]) for k in ("id", "authorized", "activeBridge", "ipAssignments",
                                                    "noAutoAssignIps", "revision", "identity")),
        }

    def _handle(self, method, path, query, headers, body):
        if headers.get("authorization") != "token %s" % self.token:
            return 403, {"type": "permission", "message": "Invalid API token"}, {}
        self.before_request()
        now = time.monotonic()
        controller = self.controller
        match = CENTRAL_NETWORK.match(path)
        if match and method == "GET":
            network = controller.networks.get(match.group(1).lower())
            if network is None:
                return 404, {"type": "not_found", "message": "network not found"}, {}
            return 200, {"id": network["id"], "config": network}, {}
        match = CENTRAL_MEMBER.match(path)
        if not match or match.group(1).lower() not in controller.networks:
            return 404, {"type": "not_found", "message": "network not found"}, {}
        network_id, node = match.group(1).lower(), match.group(2).lower()
        member = controller.members.get((network_id, node))
        if method == "GET":
            if member is None:
                return 404, {"type": "not_found", "message": "member not found"}, {}
            return 200, self._member(member), {}
        if method == "POST":
            flat = dict(body["config"]) if isinstance(body.get("config"), dict) else {}
            flat.pop("name", None)  # Central's member name lives at the top level only
            if isinstance(body.get("name"), str):
                flat["name"] = body["name"]
            return 200, self._member(controller.update_member(network_id, node, flat, now)), {}
        if method == "DELETE":
            if controller.delete_member(network_id, node, now) is None:
                return 404, {"type": "not_found", "message": "member not found"}, {}
            return 200, {}, {}
        return 405, {"type": "error", "message": "method not allowed"}, {}


class World:
    """Nodes and controllers in one process, found by address, as roots would find them.

    Every request to any server first lets every node ask its controllers (what zerotier-one does
    in the background), so controller-made records and late status changes happen on time.
    """

    def __init__(self, timings=None):
        self.timings = timings or Timings()
        self.lock = threading.RLock()
        self.servers = []
        self.controllers = {}   # address -> Controller

    def daemon(self, address, token=None):
        daemon = Daemon(address, self.timings, self._transport(address), self.lock, token=token,
                        before_request=self.tick)
        self.controllers[address] = daemon.controller
        self.servers.append(daemon)
        return daemon.start()

    def central(self, prefix, token=None):
        central = Central(prefix, self.timings, self.lock, token=token, before_request=self.tick)
        self.controllers[prefix] = central.controller
        self.servers.append(central)
        return central.start()

    def _transport(self, address):
        def ask(network_id, request):
            controller = self.controllers.get(network_id[:10])
            if controller is None:
                return None  # nobody has that address: no answer, ever
            return controller.netconf(network_id, request["node"], request["identity"], request["endpoint"],
                                      time.monotonic())
        return ask

    def tick(self):
        now = time.monotonic()
        for server in self.servers:
            if isinstance(server, Daemon):
                server.node.refresh(now)

    def stop(self):
        for server in self.servers:
            server.stop()


# The integration tests' timings: the observed order of events, in fractions of a second.
SHORT_TIMINGS = dict(first_answer=0.3, authorize_delay=0.5, deauthorize_delay=3.0, recreate_delay=0.5)


def controller_and_node(network_id, node_address, **timings):
    """A World on ``SHORT_TIMINGS`` (``timings`` override them) with two daemons: ``world.controller``,
    whose address is the id's prefix and which holds ``network_id`` (private, 10.147.17.0/24), and the
    node ``world.node``."""
    world = World(Timings(**dict(SHORT_TIMINGS, **timings)))
    world.controller = world.daemon(network_id[:10])
    world.controller.add_network(network_id, "10.147.17.0/24", private=True)
    world.node = world.daemon(node_address)
    return world


# -- standalone daemon (the Molecule stand-in package) ------------------------------------------

class DataPath:
    """A real device per joined network: VXLAN over the endpoint, named as zerotier-one names it."""

    def __init__(self, endpoint):
        self.endpoint = endpoint

    @staticmethod
    def _ip(*args, check=True):
        return subprocess.run(["ip"] + list(args), capture_output=True, text=True, check=check)

    def _exists(self, device):
        return self._ip("link", "show", device, check=False).returncode == 0

    def sync(self, join):
        device = device_name(join.network_id)
        if join.status() == "LEFT":
            self.remove(device)
            return
        if not self._exists(device):
            self._ip("link", "add", device, "type", "vxlan", "id", str(int(join.network_id, 16) & 0xFFFFFF),
                     "local", self.endpoint, "dstport", "9993", "nolearning")
            self._ip("link", "set", device, "up")
        wanted = set(join.addresses)
        shown = json.loads(self._ip("-j", "addr", "show", "dev", device).stdout or "[]")
        present = set("%s/%s" % (a["local"], a["prefixlen"]) for link in shown for a in link.get("addr_info", [])
                      if a.get("family") == "inet" and a.get("scope") == "global")
        for address in wanted - present:
            self._ip("addr", "add", address, "dev", device)
        peers = set(p["endpoint"] for p in (join.answer or {}).get("peers", []))
        if join.status() != "OK":
            peers = set()  # a de-authorized member loses its peers at once; it keeps its address
        fdb = subprocess.run(["bridge", "-j", "fdb", "show", "dev", device], capture_output=True, text=True,
                             check=True).stdout
        current = set(e["dst"] for e in json.loads(fdb or "[]") if e.get("mac") == "00:00:00:00:00:00" and e.get("dst"))
        for peer in peers - current:
            subprocess.run(["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", device, "dst", peer], check=True)
        for peer in current - peers:
            subprocess.run(["bridge", "fdb", "del", "00:00:00:00:00:00", "dev", device, "dst", peer], check=False)

    def remove(self, device):
        if self._exists(device):
            self._ip("link", "del", device, check=False)


def _identity(home, wanted):
    path = os.path.join(home, "identity.public")
    if os.path.exists(path):
        with open(path) as handle:
            return handle.read().split(":")[0]
    address = wanted or secrets.token_hex(5)
    with open(path, "w") as handle:
        handle.write("%s:0:%s\n" % (address, secrets.token_hex(32)))
    return address


def _secret(path):
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(12))
    with open(path) as handle:
        return handle.read().strip()


class State:
    """networks.d and controller.d: what zerotier-one keeps across a restart (joins, networks, members)."""

    def __init__(self, home):
        self.path = os.path.join(home, "stand-in-state.json")

    def load(self, daemon):
        if not os.path.exists(self.path):
            return
        with open(self.path) as handle:
            data = json.load(handle)
        now = time.monotonic()
        for network_id, settings in data.get("joined", {}).items():
            daemon.node.join(network_id, settings, now)
        daemon.controller.networks.update(data.get("networks", {}))
        for member in data.get("members", []):
            key = (member["nwid"], member["id"])
            daemon.controller.members[key] = member
            daemon.controller.history[key] = [(now, member["authorized"])]

    def save(self, daemon):
        data = {"joined": dict((n, j.settings) for n, j in daemon.node.joins.items()),
                "networks": daemon.controller.networks, "members": list(daemon.controller.members.values())}
        tmp = self.path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(data, handle)
        os.replace(tmp, self.path)


def main():
    parser = argparse.ArgumentParser(description="STAND-IN zerotier-one (tests only): ZeroTier's APIs, not ZeroTier")
    parser.add_argument("--home", default="/var/lib/zerotier-one")
    parser.add_argument("--port", type=int, default=9993)
    parser.add_argument("--address", default="", help="node address on first start (else random)")
    parser.add_argument("--endpoint", default="", help="this host's underlay address (peer listener, VXLAN)")
    parser.add_argument("--root", default="", help="URL of the root's peer listener, which is also the controller")
    parser.add_argument("--network", action="append", default=[],
                        help="NWID:CIDR[:public] this daemon's controller knows from the start")
    parser.add_argument("--timings", default="", help="e.g. first_answer=1,deauthorize_delay=20")
    parser.add_argument("--data-path", action="store_true", help="create a VXLAN device per joined network")
    parser.add_argument("--abort-on-sigterm", action="store_true",
                        help="end like zerotier-one 1.14.1 sometimes does on SIGTERM: abort (SIGABRT)")
    args = parser.parse_args()
    os.makedirs(args.home, exist_ok=True)
    timings = Timings.parse(args.timings)
    lock = threading.RLock()
    address = _identity(args.home, args.address)
    data_path = DataPath(args.endpoint) if args.data_path else None
    state = State(args.home)
    daemon = None

    def transport(network_id, request):
        if network_id[:10] == address:
            return daemon.controller.netconf(network_id, request["node"], request["identity"], request["endpoint"],
                                             time.monotonic())
        if not args.root:
            return None
        data = json.dumps(dict(request, network_id=network_id)).encode()
        try:
            with urllib.request.urlopen(urllib.request.Request(
                    args.root + "/stand-in/netconf", data=data, headers={"Content-Type": "application/json"}),
                    timeout=2) as response:
                return json.loads(response.read() or b"null")
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def on_change(join):
        if data_path is not None:
            data_path.sync(join)

    daemon = Daemon(address, timings, transport, lock, token=_secret(os.path.join(args.home, "authtoken.secret")),
                    port=args.port, endpoint=args.endpoint, on_change=on_change, before_request=lambda: None)
    for spec in args.network:
        parts = spec.split(":")
        if parts[0].lower() not in daemon.controller.networks:
            daemon.add_network(parts[0].lower(), parts[1], private=not (len(parts) > 2 and parts[2] == "public"))
    state.load(daemon)

    peer_listener = None
    if args.endpoint:
        def peer(method, path, query, headers, body):
            if method != "POST" or path != "/stand-in/netconf" or body.get("network_id", "")[:10] != address:
                return 404, EMPTY, {}
            return 200, daemon.controller.netconf(body["network_id"], body["node"], body.get("identity", ""),
                                                  body.get("endpoint", ""), time.monotonic()), {}
        peer_listener = Server(peer, lock, host=args.endpoint, port=args.port).start()

    stopping = threading.Event()

    def terminate(signum, frame):
        stopping.set()

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    daemon.start()
    while not stopping.wait(0.5):
        with lock:
            daemon.node.refresh(time.monotonic())
            state.save(daemon)
    with lock:
        state.save(daemon)
        if data_path is not None:  # zerotier-one's devices go away with it
            for network_id in list(daemon.node.joins):
                data_path.remove(device_name(network_id))
    if args.abort_on_sigterm:
        sys.stderr.write("terminate called without an active exception\n")
        sys.stderr.flush()
        os.abort()
    daemon.stop()
    if peer_listener is not None:
        peer_listener.stop()


if __name__ == "__main__":
    main()
