"""WebSocket relay: upstream handshake first, then the client, then frames both ways.

The client is accepted only after the sandbox accepted, with the subprotocol the sandbox chose,
so a refused upstream is an HTTP error to the client rather than an open-then-closed socket.
Messages are relayed as they are (text stays text, without decoding). A close from either side is
passed on with its code and reason; codes that must never be sent (1005 "no status", 1006
"abnormal", 1015) are replaced: 1000 for a close without status, 1011 towards the client when the
sandbox vanished, 1001 towards the sandbox when the client vanished. Idle time (no message either
way), total lifetime and gateway shutdown close both sides with 1001.

The handshake goes to the Pod IP (``DirectUpstream``) or, for gateways that cannot route to Pod IPs,
through the API server's pod proxy (``ApiServerUpstream``); everything after it is the same relay.
"""
import asyncio
import logging
from urllib.parse import quote

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from .proxy import UpstreamError, host_header

log = logging.getLogger("liteboxd_gateway.websocket")
DATA_TYPES = (WSMsgType.TEXT, WSMsgType.BINARY)
NORMAL, GOING_AWAY, INTERNAL_ERROR = 1000, 1001, 1011
# aiohttp adds these on its own when absent; a proxy must send exactly what the client sent.
CLIENT_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


def _handshake_session(ssl, config) -> aiohttp.ClientSession:
    """The client of WebSocket handshakes (a relayed connection is never reused). Connecting is bounded
    by --upstream-connect-timeout as for HTTP; nothing else is (aiohttp's default would end a handshake
    after 5 minutes and a connect after 30 s)."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True, use_dns_cache=False, ssl=ssl)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                 timeout=aiohttp.ClientTimeout(total=None, sock_connect=config.upstream_connect_timeout),
                                 skip_auto_headers=CLIENT_AUTO_HEADERS,
                                 cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)


def is_api_credential(name: str) -> bool:
    """A request header kube-apiserver authenticates or impersonates with."""
    lowered = name.lower()
    return lowered == "authorization" or lowered.startswith("impersonate-")


class DirectUpstream:
    """Handshakes straight to the Pod IP."""

    refuser, peer = "sandbox", "the sandbox"

    def __init__(self, config):
        self.session = _handshake_session(False, config)

    async def close(self):
        await self.session.close()

    async def prepare(self, pod_name: str, pod_ip: str, port: int, target: str, headers) -> URL:
        return URL(f"http://{host_header(pod_ip, port)}{target}", encoded=True)

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
        self.pods_url = f"{connection.server}/api/v1/namespaces/{quote(config.namespace, safe='')}/pods"
        self.session = _handshake_session(connection.ssl_context, config)

    async def close(self):
        await self.session.close()

    async def prepare(self, pod_name: str, pod_ip: str, port: int, target: str, headers) -> URL:
        # Whatever API credentials the client sent must not act under the gateway's identity.
        for name in [name for name in headers if is_api_credential(name)]:
            headers.popall(name, None)
        try:
            headers.update(await self.connection.auth_headers())
        except OSError as exc:  # the service-account token file, which the kubelet rotates
            raise UpstreamError(502, "credentials", f"cannot read the gateway's API credentials: {exc}") from exc
        # The API server passes Host on: give the sandbox the one a direct handshake carries.
        headers["Host"] = host_header(pod_ip, port)
        # Go writes its own User-Agent on a request without one, and none for an empty one.
        headers.setdefault("User-Agent", "")
        return URL(f"{self.pods_url}/{pod_name}:{port}/proxy{target}", encoded=True)

    def describe(self) -> str:
        return f"through the API server's pod proxy at {self.connection.server}"


def websocket_upstream(config, connection):
    """The handshake route chosen by ``--websocket-upstream``."""
    upstream = ApiServerUpstream(config, connection) if config.websocket_upstream == "apiserver" else DirectUpstream(config)
    log.info("WebSocket handshakes go %s", upstream.describe())
    return upstream


def sendable_close_code(code, vanished: int) -> int:
    """A close code that may go on the wire for one received (or None when the peer vanished)."""
    if code is None or code == 1006:
        return vanished
    if code == 1005:
        return NORMAL
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return vanished


class Relay:
    """One client <-> sandbox WebSocket session."""

    def __init__(self, config, metrics):
        self.config = config
        self.metrics = metrics
        self.last_activity = 0.0
        self._stop = asyncio.Event()
        self.stop_reason = ""

    def shutdown(self, reason: str):
        self.stop_reason = reason
        self._stop.set()

    async def _pump(self, source, destination):
        loop = asyncio.get_running_loop()
        while True:
            message = await source.receive()
            if message.type in DATA_TYPES:
                self.last_activity = loop.time()
                data = message.data if isinstance(message.data, bytes) else message.data.encode()
                await destination.send_frame(data, message.type)
            elif message.type is WSMsgType.CLOSE:
                return message.data, message.extra or ""
            elif message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                return source.close_code, ""

    async def _watchdog(self):
        loop = asyncio.get_running_loop()
        ends = loop.time() + self.config.ws_max_lifetime
        while not self._stop.is_set():
            now = loop.time()
            if now >= ends:
                self.stop_reason = "lifetime exceeded"
                return
            if now - self.last_activity >= self.config.ws_idle_timeout:
                self.stop_reason = "idle timeout"
                return
            wake = min(ends, self.last_activity + self.config.ws_idle_timeout)
            try:
                async with asyncio.timeout(wake - now):
                    await self._stop.wait()
            except TimeoutError:
                pass

    async def run(self, client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> str:
        self.last_activity = asyncio.get_running_loop().time()
        from_client = asyncio.create_task(self._pump(client, upstream))
        from_upstream = asyncio.create_task(self._pump(upstream, client))
        watchdog = asyncio.create_task(self._watchdog())
        tasks = (from_client, from_upstream, watchdog)
        try:
            done, _unused = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        first = next(task for task in tasks if task in done)
        if first is watchdog:
            reason = self.stop_reason
            message = reason.encode()
            await asyncio.gather(client.close(code=GOING_AWAY, message=message),
                                 upstream.close(code=GOING_AWAY, message=message), return_exceptions=True)
            return reason.replace(" ", "_")
        if first.exception() is not None:
            # Sending failed, so the destination is gone: the client pump writes to the sandbox.
            to_client = INTERNAL_ERROR if first is from_client else GOING_AWAY
            await asyncio.gather(client.close(code=to_client), upstream.close(code=GOING_AWAY),
                                 return_exceptions=True)
            return "send_failed"
        code, reason = first.result()
        message = reason.encode()[:123] if isinstance(reason, str) else b""
        if first is from_client:
            to_upstream = sendable_close_code(code, GOING_AWAY)
            await asyncio.gather(upstream.close(code=to_upstream, message=message),
                                 client.close(code=to_upstream, message=message), return_exceptions=True)
            return "client_closed"
        to_client = sendable_close_code(code, INTERNAL_ERROR)
        await asyncio.gather(client.close(code=to_client, message=message),
                             upstream.close(code=to_client, message=message), return_exceptions=True)
        return "upstream_closed"


async def connect_upstream(upstream, pod_name, pod_ip, port, target, headers, protocols, config, metrics):
    """Open the sandbox's WebSocket by way of ``upstream`` (DirectUpstream or ApiServerUpstream);
    retry only connect failures. Raises UpstreamError."""
    url = await upstream.prepare(pod_name, pod_ip, port, target, headers)
    attempts = 1 + config.upstream_connect_retries
    for attempt in range(attempts):
        try:
            return await upstream.session.ws_connect(
                url, protocols=protocols, headers=headers, autoclose=False, autoping=True,
                max_msg_size=config.ws_max_message_size, compress=0, decode_text=False,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0))
        except aiohttp.WSServerHandshakeError as exc:
            raise UpstreamError(502, "ws_handshake", f"{upstream.refuser} refused the WebSocket (HTTP {exc.status})") from exc
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamError(504, "connect_timeout", f"connect to {upstream.peer} timed out") from exc
        except aiohttp.ClientConnectorError as exc:
            if attempt + 1 == attempts:
                raise UpstreamError(502, "connect", f"cannot connect to {upstream.peer}: {exc.os_error}") from exc
            metrics.connect_retries.inc()
            await asyncio.sleep(0.05 * (attempt + 1))
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise UpstreamError(502, "ws_handshake", f"{upstream.refuser} WebSocket failed: {type(exc).__name__}") from exc


def client_protocols(headers):
    return tuple(token.strip() for value in headers.getall("Sec-WebSocket-Protocol", ())
                 for token in value.split(",") if token.strip())
