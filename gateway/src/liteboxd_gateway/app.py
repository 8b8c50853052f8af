"""The request pipeline: route, look up, authenticate, limit, then proxy or relay.

Order of checks and their answers: malformed or conflicting routing 400, port outside the allowed
range 403, cache not yet synced 503, unknown sandbox 404, missing or wrong token 401 (one body for
both), sandbox not Ready or without IP 503, over a limit 429, then the sandbox: 502 when it cannot
be reached or breaks the protocol, 504 when connecting times out. The gateway's own endpoints
(``/status.ok``, ``/readyz``) answer only requests that carry no sandbox routing at all.
HTTP requests arrive from ``http1.ClientConnection``; WebSocket upgrades from aiohttp's server.
"""
import asyncio
import itertools
import json
import os
import re

from aiohttp import web

from . import auth, logs
from .headers import WEBSOCKET_HANDSHAKE, forwarded_request_fields
from .limits import SandboxLimits
from .proxy import HttpProxy, UpstreamError
from .routing import RouteError, resolve
from .version import __version__
from .websocket import client_protocols, connect_upstream, websocket_upstream
from .wsrelay import Offload, Relay

REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNAUTHORIZED = "unauthorized"
JSON = "application/json"
# The gateway answers Expect: 100-continue itself.
DROPPED_REQUEST_HEADERS = frozenset(("expect",))


class Exchange:
    """What one request did, for the access log and metrics."""

    __slots__ = ("request_id", "form", "sandbox_id", "target", "status", "error", "bytes")

    def __init__(self, request_id):
        self.request_id = request_id
        self.form = "internal"
        self.sandbox_id = None
        self.target = None
        self.status = 0
        self.error = None
        self.bytes = 0


class HttpExchange(Exchange):
    """An HTTP request being served: when it began, the Forward still at work on it, and whether
    it holds a slot of its sandbox's connection limit."""

    __slots__ = ("gateway", "client", "request", "started", "forward", "holding")

    def cancel(self):
        self.gateway.abandon(self)


class Rejected(Exception):
    """The gateway answers the request itself: ``status`` with ``{"error": message}``."""

    def __init__(self, status: int, reason: str, message=None):
        super().__init__(message or reason.replace("_", " "))
        self.status = status
        self.reason = reason


class Admitted:
    """A request that may go to its sandbox: where to (the Pod's name and address), and what is
    left of its token carriers."""

    __slots__ = ("route", "pod_name", "pod_ip", "target", "cookies")

    def __init__(self, route, pod_name, pod_ip, target, cookies):
        self.route, self.pod_name, self.pod_ip, self.target, self.cookies = route, pod_name, pod_ip, target, cookies


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def error_response(status: int, message: str, request_id: str) -> web.Response:
    return web.Response(status=status, body=error_body(message), content_type=JSON,
                        headers={"X-Request-Id": request_id, "Cache-Control": "no-store"})


class Gateway:
    def __init__(self, config, cache, metrics):
        self.config = config
        self.cache = cache
        self.metrics = metrics
        self.limits = SandboxLimits(config.max_concurrent_per_sandbox, config.rate_per_sandbox, config.rate_burst)
        cache.on_removed.append(self.limits.forget)
        self.draining = False
        self.relays = set()
        self.websocket_upstream = None
        self.proxy = None
        self.offload = None
        self._request_id_prefix = os.urandom(6).hex()
        self._request_ids = itertools.count()

    async def start(self, connection):
        """``connection``: the API server's (kube.KubeConnection), for WebSockets through its pod proxy."""
        self.websocket_upstream = websocket_upstream(self.config, connection)
        self.proxy = HttpProxy(self.config, self.metrics)
        self.offload = Offload.start(asyncio.get_running_loop())
        # The count of requests under way is kept once, where holding writes depends on it.
        held_writes = self.proxy.held_writes
        self.metrics.active_requests.read = lambda: held_writes.active

    async def close(self):
        if self.proxy is not None:
            self.proxy.close()
        if self.offload is not None:
            self.offload.close()

    def begin_drain(self):
        """Report not-ready from now on and close WebSockets (they would outlive any drain)."""
        self.draining = True
        for relay in list(self.relays):
            relay.shutdown("gateway shutting down")

    @property
    def ready(self) -> bool:
        return self.cache.synced and not self.draining

    def _exchange(self, headers, kind=Exchange) -> Exchange:
        incoming_id = headers.get("X-Request-Id")
        if incoming_id and REQUEST_ID_RE.fullmatch(incoming_id):
            return kind(incoming_id)
        # Unique, not secret: a random prefix per process and a counter (no system call per request).
        return kind(f"{self._request_id_prefix}{next(self._request_ids):012x}")

    def _account(self, exchange, method, remote, elapsed):
        self.metrics.requests.inc(exchange.form, exchange.status)
        if exchange.status != 101:
            self.metrics.duration.observe(elapsed, exchange.form)
        if self.config.access_log:
            # The forwarded target (token carriers removed), never the raw one. In logs.AccessLine's order.
            logs.access((exchange.request_id, remote, method, exchange.form, exchange.sandbox_id, exchange.target,
                         exchange.status, elapsed * 1000, exchange.bytes, exchange.error or None))

    def _reject(self, exchange, status, reason, message=None):
        self.metrics.rejected.inc(reason)
        exchange.error = reason
        return Rejected(status, reason, message)

    def _admit(self, method, raw_path, headers, exchange, websocket: bool):
        """Route, look up, authenticate and limit. Returns Admitted (holding a connection slot
        the caller releases), None for the gateway's own paths, or raises Rejected."""
        try:
            route = resolve(raw_path, headers, self.config.domain, self.config.path_prefix)
        except RouteError as exc:
            exchange.form = "invalid"
            raise self._reject(exchange, 400, "bad_route", str(exc)) from None
        if route is None:
            return None
        exchange.form, exchange.sandbox_id = route.form, route.sandbox_id
        if route.port not in self.config.allowed_ports:
            raise self._reject(exchange, 403, "port_not_allowed")
        if not self.cache.synced:
            raise self._reject(exchange, 503, "cache_not_synced", "sandbox registry not loaded yet")
        sandbox = self.cache.get(route.sandbox_id)
        if sandbox is None:
            raise self._reject(exchange, 404, "sandbox_not_found")

        # Token carriers are looked for only where there is a query or a cookie at all.
        target = route.target
        query_token = cookie_token = None
        if "?" in target:
            path, _unused, query = target.partition("?")
            query_token, kept_query = auth.strip_query_param(query, self.config.token_query_param)
            target = path + ("?" + kept_query if kept_query or query_token is None else "")
        cookies = headers.getall("Cookie", ())
        if cookies:
            cookie_token, kept_cookie = auth.strip_cookie(cookies, self.config.token_cookie)
            if cookie_token is not None:
                cookies = (kept_cookie,) if kept_cookie else ()
        exchange.target = target
        header_tokens = headers.getall(auth.TOKEN_HEADER, ())
        token = header_tokens[0] if len(header_tokens) == 1 else None
        if not header_tokens and websocket:
            token = query_token if query_token is not None else cookie_token
        if not auth.token_matches(token, sandbox.token, sandbox.token_sha256):
            raise self._reject(exchange, 401, "unauthorized", UNAUTHORIZED)
        if not sandbox.ready or not sandbox.pod_ip:
            raise self._reject(exchange, 503, "sandbox_not_ready")
        if not self.limits.allow_rate(route.sandbox_id):
            raise self._reject(exchange, 429, "rate_limited", "too many requests")
        if not self.limits.acquire(route.sandbox_id):
            raise self._reject(exchange, 429, "too_many_connections", "too many open connections")
        return Admitted(route, sandbox.name, sandbox.pod_ip, target, cookies)

    def _own_endpoint(self, method, raw_path, exchange):
        """The gateway's own paths: (status, text) or Rejected."""
        path = raw_path.split("?", 1)[0]
        if path not in ("/status.ok", "/readyz"):
            raise self._reject(exchange, 404, "not_found")
        if method not in ("GET", "HEAD"):
            raise self._reject(exchange, 405, "method_not_allowed")
        if path == "/status.ok":
            return 200, f"ok {__version__}\n"
        if self.ready:
            return 200, "ready\n"
        return 503, "draining\n" if self.draining else "cache not synced\n"

    # -- HTTP, from http1.ClientConnection ----------------------------------------------------
    # Callbacks, no task: the answer comes at once (the gateway's own) or from the Forward's
    # ``done``; either way ``client.finished`` follows, unless the client left first (``abandon``).
    def serve(self, client, request):
        """Answer one HTTP request on a client connection."""
        exchange = self._exchange(request.headers, HttpExchange)
        exchange.gateway, exchange.client, exchange.request = self, client, request
        exchange.started = self.proxy.loop.time()
        exchange.forward = None
        exchange.holding = False
        request.exchange = exchange
        try:
            admitted = self._admit(request.method, request.raw_path, request.headers, exchange, websocket=False)
            if admitted is None:
                status, text = self._own_endpoint(request.method, request.raw_path, exchange)
                exchange.status = status
                client.respond(request, status, [(b"Content-Type", b"text/plain; charset=utf-8"),
                                                 (b"X-Request-Id", exchange.request_id.encode())], text.encode(),
                               reason=b"", streaming=False, close=False, has_length=False)
                self._served(exchange)
                return
        except Rejected as rejected:
            self._answer_error(client, request, exchange, rejected.status, str(rejected))
            self._served(exchange)
            return
        exchange.holding = True
        self.proxy.held_writes.active += 1
        try:
            fields = forwarded_request_fields(request.headers, admitted.cookies, client.peer_host, self.config,
                                              admitted.route, DROPPED_REQUEST_HEADERS)
            forward = exchange.forward = self.proxy.forward(client, request, admitted.pod_ip, admitted.route.port,
                                                            admitted.target, fields, exchange.request_id,
                                                            self._forwarded)
            forward.start()
        except BaseException:
            forward, exchange.forward = exchange.forward, None
            if forward is not None:
                forward.cancel()
            self._release(exchange)
            raise

    def _answer_error(self, client, request, exchange, status, message, close=False):
        exchange.status = status
        client.respond(request, status, [(b"Content-Type", JSON.encode()), (b"X-Request-Id", exchange.request_id.encode()),
                                         (b"Cache-Control", b"no-store")], error_body(message), reason=b"",
                       streaming=False, close=close, has_length=False)

    def _forwarded(self, forward):
        """The Forward is through: answer its error if the client has no answer yet, then account."""
        exchange = forward.request.exchange
        exchange.forward = None
        self._release(exchange)
        error = forward.error
        if error is None:
            exchange.status = forward.status
        elif isinstance(error, UpstreamError):
            self.metrics.upstream_errors.inc(error.kind)
            exchange.error = str(error)
            self._answer_error(exchange.client, exchange.request, exchange, error.status, str(error))
        else:  # ClientBodyTimeout
            exchange.error = "client body timeout"
            self._answer_error(exchange.client, exchange.request, exchange, 408, "request body timeout", close=True)
        self._served(exchange)

    def abandon(self, exchange):
        """The client left, or broke its request's framing, before the answer was through."""
        forward = exchange.forward
        if forward is None:
            return  # answered already
        exchange.forward = None
        forward.cancel()
        self._release(exchange)
        exchange.status = exchange.status or 499
        exchange.error = exchange.error or "client went away"
        self._account_http(exchange)

    def _release(self, exchange):
        if exchange.holding:
            exchange.holding = False
            self.proxy.held_writes.active -= 1
            self.limits.release(exchange.sandbox_id)

    def _account_http(self, exchange):
        """Account an HTTP exchange that is over, answered or abandoned, once the answer has left."""
        exchange.request.exchange = None  # no reference cycle: both go as soon as the client is done with them
        exchange.bytes = exchange.client.body_bytes  # now: the connection may go on to its next request
        self.proxy.held_writes.after(self._account_written, exchange)

    def _account_written(self, exchange):
        self._account(exchange, exchange.request.method, exchange.client.peer_host,
                      self.proxy.loop.time() - exchange.started)

    def _served(self, exchange):
        self._account_http(exchange)
        exchange.client.finished(exchange.request)

    # -- WebSocket upgrades, from aiohttp's server ---------------------------------------------
    async def handle_websocket(self, request: web.BaseRequest) -> web.StreamResponse:
        """Relay one WebSocket; any answer other than 101 closes the connection."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        exchange = self._exchange(request.headers)
        response = None
        try:
            response = await self._websocket(request, exchange)
            exchange.status = response.status
            if exchange.status != 101:
                response.force_close()
            return response
        except asyncio.CancelledError:
            exchange.status = exchange.status or 499
            exchange.error = exchange.error or "client went away"
            raise
        finally:
            exchange.bytes = response.body_length if response is not None and response.prepared else 0
            peer = request.transport.get_extra_info("peername") if request.transport else None
            self._account(exchange, request.method, peer[0] if peer else None, loop.time() - started)

    async def _websocket(self, request, exchange):
        try:
            admitted = self._admit(request.method, request.raw_path, request.headers, exchange, websocket=True)
            if admitted is None:
                raise self._reject(exchange, 404, "not_found")
        except Rejected as rejected:
            return error_response(rejected.status, str(rejected), exchange.request_id)
        try:
            if not web.WebSocketResponse().can_prepare(request).ok:
                rejected = self._reject(exchange, 400, "bad_websocket_handshake")
                return error_response(rejected.status, str(rejected), exchange.request_id)
            peer = request.transport.get_extra_info("peername") if request.transport else None
            fields = forwarded_request_fields(request.headers, admitted.cookies, peer[0] if peer else "",
                                              self.config, admitted.route, WEBSOCKET_HANDSHAKE)
            return await self._relay(request, exchange, admitted, fields)
        finally:
            self.limits.release(admitted.route.sandbox_id)

    async def _relay(self, request, exchange, admitted, fields):
        # http1.ClientConnection handed the connection over with a wsrelay.ClientSide as its Protocol.
        client_side = request.transport.get_protocol()
        try:
            upstream = await connect_upstream(self.websocket_upstream, admitted.pod_name, admitted.pod_ip,
                                              admitted.route.port, admitted.target, fields, exchange.request_id,
                                              client_protocols(request.headers), self.config, self.metrics)
        except UpstreamError as exc:
            self.metrics.upstream_errors.inc(exc.kind)
            exchange.error = str(exc)
            return error_response(exc.status, str(exc), exchange.request_id)
        relay = Relay(self.config, client_side, upstream, self.offload)
        try:
            # Offer the client only what the sandbox chose. aiohttp answers the handshake; the relay
            # reads the connection from then on, so aiohttp's own WebSocket reader never gets a byte.
            client = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else (),
                                           compress=False)
            await client.prepare(request)
            exchange.status = 101
            self.relays.add(relay)
            self.metrics.active_websockets.add(1)
            try:
                reason = await relay.run()
            finally:
                self.relays.discard(relay)
                self.metrics.active_websockets.add(-1)
            self.metrics.websockets.inc(reason)
            exchange.error = "client went away" if reason == "client_gone" else (
                None if reason.endswith("closed") else reason)
            return client
        finally:
            relay.abort()
