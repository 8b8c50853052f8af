"""WebSocket handshakes: the sandbox's first, then the client's; ``wsrelay`` relays after them.

The client is accepted only after the sandbox accepted, with the subprotocol the sandbox chose, so
a refused upstream is an HTTP error to the client rather than an open-then-closed socket. The
upstream handshake goes to the Pod IP (``DirectUpstream``) or, for gateways that cannot route to Pod
IPs, through the API server's pod proxy (``ApiServerUpstream``). Either way the gateway is the
HTTP/1.1 client itself (an asyncio Protocol reading the answer with httptools), so the connection
passes to the relay with whatever the sandbox sent after its 101, not a byte parsed away.
"""
import asyncio
import base64
import hashlib
import logging
import os
from urllib.parse import quote, urlsplit

import httptools

from .headers import HEADER_ENCODING
from .proxy import UpstreamError, host_header, request_head
from .wsrelay import UpstreamSide

log = logging.getLogger("liteboxd_gateway.websocket")
ACCEPT_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


def is_api_credential(name: str) -> bool:
    """A request header kube-apiserver authenticates or impersonates with."""
    lowered = name.lower()
    return lowered == "authorization" or lowered.startswith("impersonate-")


class DirectUpstream:
    """Handshakes straight to the Pod IP."""

    refuser, peer = "sandbox", "the sandbox"

    async def prepare(self, pod_name: str, pod_ip: str, port: int, target: str, fields: list):
        """Where to connect and what to ask for: (host, port, TLS context or None, request-target)."""
        return pod_ip, port, None, target

    def describe(self) -> str:
        return "direct to the Pod IP"


class ApiServerUpstream:
    """Handshakes through the API server's pod proxy, as the gateway's own Kubernetes identity.

    kube-apiserver authenticates the gateway, deletes the Authorization header, dials the Pod IP and
    writes the request on (its UpgradeAwareHandler: headers as they came, the gateway's address
    appended to X-Forwarded-For); once the sandbox answered 101 it copies bytes both ways. Needs
    ``get`` and ``create`` on ``pods/proxy`` in the sandbox namespace.
    """

    refuser, peer = "API server pod proxy", "the API server"

    def __init__(self, config, connection):
        self.connection = connection
        server = urlsplit(connection.server)
        self.host = server.hostname
        self.port = server.port or (443 if server.scheme == "https" else 80)
        self.ssl = (connection.ssl_context or True) if server.scheme == "https" else None
        self.pods_path = f"{server.path}/api/v1/namespaces/{quote(config.namespace, safe='')}/pods"

    async def prepare(self, pod_name: str, pod_ip: str, port: int, target: str, fields: list):
        # Whatever API credentials the client sent must not act under the gateway's identity.
        fields[:] = [field for field in fields if not is_api_credential(field[0])]
        try:
            fields.extend((await self.connection.auth_headers()).items())
        except OSError as exc:  # the service-account token file, which the kubelet rotates
            raise UpstreamError(502, "credentials", f"cannot read the gateway's API credentials: {exc}") from exc
        # Go writes its own User-Agent on a request without one, and none for an empty one.
        if not any(name.lower() == "user-agent" for name, _value in fields):
            fields.append(("User-Agent", ""))
        return self.host, self.port, self.ssl, f"{self.pods_path}/{pod_name}:{port}/proxy{target}"

    def describe(self) -> str:
        return f"through the API server's pod proxy at {self.connection.server}"


def websocket_upstream(config, connection):
    """The handshake route chosen by ``--websocket-upstream``."""
    upstream = ApiServerUpstream(config, connection) if config.websocket_upstream == "apiserver" else DirectUpstream()
    log.info("WebSocket handshakes go %s", upstream.describe())
    return upstream


class UpstreamHandshake:
    """The sandbox's connection until its 101, as its asyncio Protocol: writes the upgrade request
    and reads the answer's head; on a valid 101 the connection passes to an ``UpstreamSide``
    (``answer``'s result) with the bytes that followed the head, else ``answer`` fails with an
    UpstreamError and the connection is closed."""

    def __init__(self, request: bytes, accept: bytes, protocols: tuple, refuser: str):
        self.request = request
        self.accept = accept
        self.protocols = protocols
        self.refuser = refuser
        self.answer = asyncio.get_running_loop().create_future()
        self.parser = httptools.HttpResponseParser(self)
        self.transport = None
        self.status = 0
        self.fields = {}  # lower-cased name: the first value

    def connection_made(self, transport):
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data):
        if self.answer.done():
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._switched(data[upgrade.args[0]:])
        except httptools.HttpParserError as exc:
            # llhttp stops at a 101 without an Upgrade field, as at any malformed answer.
            self._fail(self._refused() if self.status == 101 else
                       UpstreamError(502, "ws_handshake", f"{self.refuser} WebSocket failed: malformed answer ({exc})"))

    def eof_received(self):
        return None

    def connection_lost(self, exc):
        self._fail(UpstreamError(502, "ws_handshake", f"{self.refuser} WebSocket failed: the connection closed"))

    def pause_writing(self):
        pass  # the request is one small write

    def resume_writing(self):
        pass

    def on_header(self, name: bytes, value: bytes):
        self.fields.setdefault(name.lower(), value)

    def on_headers_complete(self):
        self.status = self.parser.get_status_code()
        if self.status < 200 and self.status != 101:
            self.fields = {}  # an informational answer (100 Continue) before the real one
        elif self.status != 101:
            self._fail(self._refused())

    def _refused(self) -> UpstreamError:
        return UpstreamError(502, "ws_handshake", f"{self.refuser} refused the WebSocket (HTTP {self.status})")

    def _switched(self, rest: bytes):
        fields = self.fields
        if (self.status != 101 or fields.get(b"upgrade", b"").lower() != b"websocket"
                or fields.get(b"connection", b"").lower() != b"upgrade"
                or fields.get(b"sec-websocket-accept") != self.accept):
            self._fail(self._refused())
            return
        protocol = None
        if self.protocols and b"sec-websocket-protocol" in fields:
            # The first the sandbox names among those offered, as aiohttp's client took it.
            chosen = fields[b"sec-websocket-protocol"].decode(*HEADER_ENCODING).split(",")
            protocol = next((name.strip() for name in chosen if name.strip() in self.protocols), None)
        side = UpstreamSide(protocol)
        self.transport.set_protocol(side)
        side.connection_made(self.transport)
        if rest:
            side.data_received(rest)
        self.answer.set_result(side)

    def _fail(self, error: UpstreamError):
        if not self.answer.done():
            self.answer.set_exception(error)
            if self.transport is not None:
                self.transport.close()


async def connect_upstream(upstream, pod_name, pod_ip, port, target, fields, request_id, protocols, config,
                           metrics) -> UpstreamSide:
    """Open the sandbox's WebSocket by way of ``upstream`` (DirectUpstream or ApiServerUpstream),
    offering ``protocols``; retry only connect failures. Raises UpstreamError."""
    host, connect_port, ssl, request_target = await upstream.prepare(pod_name, pod_ip, port, target, fields)
    key = base64.b64encode(os.urandom(16))
    accept = base64.b64encode(hashlib.sha1(key + ACCEPT_GUID).digest())
    upgrade = f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key.decode()}\r\n"
    if protocols:
        upgrade += f"Sec-WebSocket-Protocol: {','.join(protocols)}\r\n"
    # The sandbox's address as Host in both modes: the API server passes Host on.
    request = request_head("GET", request_target, host_header(pod_ip, port), fields, request_id, upgrade)
    loop = asyncio.get_running_loop()
    attempts = 1 + config.upstream_connect_retries
    for attempt in range(attempts):
        handshake = UpstreamHandshake(request, accept, protocols, upstream.refuser)
        try:
            async with asyncio.timeout(config.upstream_connect_timeout):
                await loop.create_connection(lambda: handshake, host, connect_port, ssl=ssl,
                                             server_hostname=host if ssl else None)
            break
        except TimeoutError:
            raise UpstreamError(504, "connect_timeout", f"connect to {upstream.peer} timed out") from None
        except OSError as exc:
            if attempt + 1 == attempts:
                raise UpstreamError(502, "connect", f"cannot connect to {upstream.peer}: {exc}") from exc
            metrics.connect_retries.inc()
            await asyncio.sleep(0.05 * (attempt + 1))
    try:
        return await handshake.answer
    except asyncio.CancelledError:
        handshake.transport.close()  # the client went away while the sandbox was answering
        raise


def client_protocols(headers):
    return tuple(token.strip() for value in headers.getall("Sec-WebSocket-Protocol", ())
                 for token in value.split(",") if token.strip())
