"""The request pipeline: route, look up, authenticate, limit, then proxy or relay.

Order of checks and their answers: malformed or conflicting routing 400, port outside the allowed
range 403, cache not yet synced 503, unknown sandbox 404, missing or wrong token 401 (one body for
both), sandbox not Ready or without IP 503, over a limit 429, then the sandbox: 502 when it cannot
be reached or breaks the protocol, 504 when connecting times out. The gateway's own endpoints
(``/status.ok``, ``/readyz``) answer only requests that carry no sandbox routing at all.
"""
import asyncio
import json
import logging
import os
import re

from aiohttp import web

from . import auth
from .headers import WEBSOCKET_HANDSHAKE, is_websocket_upgrade, upstream_request_headers
from .limits import SandboxLimits
from .logs import access_log
from .proxy import ClientBodyTimeout, HttpProxy, UpstreamError
from .routing import RouteError, resolve
from .version import __version__
from .websocket import Relay, client_protocols, connect_upstream, upstream_session, upstream_url

log = logging.getLogger("liteboxd_gateway")
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
UNAUTHORIZED = "unauthorized"
JSON = "application/json"


class Exchange:
    """What one request did, for the access log and metrics."""

    __slots__ = ("request_id", "form", "sandbox_id", "target", "status", "error", "upstream_kind")

    def __init__(self, request_id):
        self.request_id = request_id
        self.form = "internal"
        self.sandbox_id = None
        self.target = None
        self.status = 0
        self.error = None
        self.upstream_kind = None


def error_response(status: int, message: str, request_id: str) -> web.Response:
    return web.Response(status=status, body=json.dumps({"error": message}).encode(), content_type=JSON,
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
        self.session = None
        self.proxy = None

    async def start(self):
        self.session = upstream_session()
        self.proxy = HttpProxy(self.config, self.metrics)

    async def close(self):
        if self.proxy is not None:
            self.proxy.close()
        if self.session is not None:
            await self.session.close()

    def begin_drain(self):
        """Report not-ready from now on and close WebSockets (they would outlive any drain)."""
        self.draining = True
        for relay in list(self.relays):
            relay.shutdown("gateway shutting down")

    @property
    def ready(self) -> bool:
        return self.cache.synced and not self.draining

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        loop = asyncio.get_running_loop()
        started = loop.time()
        incoming_id = request.headers.get("X-Request-Id", "")
        exchange = Exchange(incoming_id if REQUEST_ID_RE.fullmatch(incoming_id) else os.urandom(12).hex())
        response = None
        try:
            response = await self._dispatch(request, exchange)
            exchange.status = response.status
            return response
        except asyncio.CancelledError:
            exchange.status = exchange.status or 499
            exchange.error = exchange.error or "client went away"
            raise
        finally:
            elapsed = loop.time() - started
            self.metrics.requests.inc(exchange.form, str(exchange.status))
            if exchange.status != 101:
                self.metrics.duration.observe(elapsed, exchange.form)
            if self.config.access_log:
                self._log(request, exchange, elapsed, response)

    def _log(self, request, exchange, elapsed, response):
        peer = request.transport.get_extra_info("peername") if request.transport else None
        fields = {
            "request_id": exchange.request_id,
            "remote": peer[0] if peer else None,
            "method": request.method,
            "form": exchange.form,
            "sandbox": exchange.sandbox_id,
            # The forwarded target (token carriers removed), never the raw one.
            "target": exchange.target,
            "status": exchange.status,
            "duration_ms": round(elapsed * 1000, 3),
            "bytes": response.body_length if response is not None and response.prepared else 0,
        }
        if exchange.error:
            fields["error"] = exchange.error
        access_log.info("request", extra={"fields": fields})

    def _reject(self, exchange, status, reason, message=None):
        self.metrics.rejected.inc(reason)
        exchange.error = reason
        return error_response(status, message or reason.replace("_", " "), exchange.request_id)

    async def _dispatch(self, request, exchange):
        try:
            route = resolve(request.raw_path, request.headers, self.config.domain)
        except RouteError as exc:
            exchange.form = "invalid"
            return self._reject(exchange, 400, "bad_route", str(exc))
        if route is None:
            return self._own_endpoint(request, exchange)
        exchange.form, exchange.sandbox_id = route.form, route.sandbox_id
        if route.port not in self.config.allowed_ports:
            return self._reject(exchange, 403, "port_not_allowed")
        if not self.cache.synced:
            return self._reject(exchange, 503, "cache_not_synced", "sandbox registry not loaded yet")
        sandbox = self.cache.get(route.sandbox_id)
        if sandbox is None:
            return self._reject(exchange, 404, "sandbox_not_found")

        websocket = is_websocket_upgrade(request.method, request.headers)
        path, question, query = route.target.partition("?")
        query_token, kept_query = auth.strip_query_param(query, self.config.token_query_param)
        cookies = request.headers.getall("Cookie", ())
        cookie_token, kept_cookie = auth.strip_cookie(cookies, self.config.token_cookie)
        if cookie_token is not None:
            cookies = (kept_cookie,) if kept_cookie else ()
        target = path + (question + kept_query if kept_query or (question and query_token is None) else "")
        exchange.target = target
        header_tokens = request.headers.getall(auth.TOKEN_HEADER, ())
        token = header_tokens[0] if len(header_tokens) == 1 else None
        if not header_tokens and websocket:
            token = query_token if query_token is not None else cookie_token
        if not auth.token_matches(token, sandbox.token, sandbox.token_sha256):
            return self._reject(exchange, 401, "unauthorized", UNAUTHORIZED)
        if not sandbox.ready or not sandbox.pod_ip:
            return self._reject(exchange, 503, "sandbox_not_ready")
        if not self.limits.allow_rate(route.sandbox_id):
            return self._reject(exchange, 429, "rate_limited", "too many requests")
        if not self.limits.acquire(route.sandbox_id):
            return self._reject(exchange, 429, "too_many_connections", "too many open connections")
        try:
            if websocket:
                return await self._relay(request, exchange, route, upstream_url(sandbox.pod_ip, route.port, target),
                                         cookies)
            return await self._forward(request, exchange, route, sandbox.pod_ip, target, cookies)
        finally:
            self.limits.release(route.sandbox_id)

    async def _forward(self, request, exchange, route, pod_ip, target, cookies):
        headers = upstream_request_headers(request, cookies, self.config, route, frozenset(("expect",)))
        headers["X-Request-Id"] = exchange.request_id
        self.metrics.active_requests.add(1)
        try:
            return await self.proxy.forward(request, pod_ip, route.port, target, headers, exchange.request_id)
        except UpstreamError as exc:
            self.metrics.upstream_errors.inc(exc.kind)
            exchange.error = str(exc)
            return error_response(exc.status, str(exc), exchange.request_id)
        except ClientBodyTimeout:
            exchange.error = "client body timeout"
            response = error_response(408, "request body timeout", exchange.request_id)
            response.force_close()
            return response
        finally:
            self.metrics.active_requests.add(-1)

    async def _relay(self, request, exchange, route, url, cookies):
        if not web.WebSocketResponse().can_prepare(request).ok:
            return self._reject(exchange, 400, "bad_websocket_handshake")
        headers = upstream_request_headers(request, cookies, self.config, route, WEBSOCKET_HANDSHAKE)
        headers["X-Request-Id"] = exchange.request_id
        try:
            upstream = await connect_upstream(self.session, url, headers, client_protocols(request.headers),
                                              self.config, self.metrics)
        except UpstreamError as exc:
            self.metrics.upstream_errors.inc(exc.kind)
            exchange.error = str(exc)
            return error_response(exc.status, str(exc), exchange.request_id)
        relay = Relay(self.config, self.metrics)
        try:
            # Offer the client only what the sandbox chose.
            client = web.WebSocketResponse(protocols=(upstream.protocol,) if upstream.protocol else (),
                                           autoclose=False, autoping=True, compress=False, decode_text=False,
                                           max_msg_size=self.config.ws_max_message_size, timeout=5.0)
            await client.prepare(request)
            exchange.status = 101
            self.relays.add(relay)
            self.metrics.active_websockets.add(1)
            try:
                reason = await relay.run(client, upstream)
            finally:
                self.relays.discard(relay)
                self.metrics.active_websockets.add(-1)
            self.metrics.websockets.inc(reason)
            exchange.error = None if reason.endswith("closed") else reason
            return client
        finally:
            await upstream.close()

    def _own_endpoint(self, request, exchange):
        path = request.raw_path.split("?", 1)[0]
        if path not in ("/status.ok", "/readyz"):
            return self._reject(exchange, 404, "not_found")
        if request.method not in ("GET", "HEAD"):
            return self._reject(exchange, 405, "method_not_allowed")
        if path == "/status.ok":
            return web.Response(text=f"ok {__version__}\n")
        if self.ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="draining\n" if self.draining else "cache not synced\n")
