"""HTTP forwarding to a sandbox, streaming both ways.

Bodies are never held whole: the request body is read from the client chunk by chunk (with a
slow-client timeout between reads) while it is sent upstream, and the response is written to the
client as each chunk arrives, so Server-Sent Events and long polls pass through as sent. Upstream
connections are pooled with a short idle timeout. Only a failed connect is retried: once a byte
of the request may have reached the sandbox, the request is never replayed.
"""
import asyncio
import logging

import aiohttp
from aiohttp import web
from yarl import URL

from .headers import downstream_response_headers

log = logging.getLogger("liteboxd_gateway.proxy")
NO_BODY_STATUSES = frozenset((204, 304))
# aiohttp adds these on its own when absent; a proxy must send exactly what the client sent.
CLIENT_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")


class UpstreamError(Exception):
    """The sandbox could not be reached or broke off: ``status`` is 502 or 504, ``kind`` a metric label."""

    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(detail)
        self.status = status
        self.kind = kind


class ClientBodyTimeout(Exception):
    """The client paused longer than the body timeout while sending its request body."""


def upstream_session(config) -> aiohttp.ClientSession:
    """The pooled client every request and WebSocket to sandboxes goes through."""
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=config.upstream_idle_timeout,
                                     use_dns_cache=False, ssl=False)
    return aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                 skip_auto_headers=CLIENT_AUTO_HEADERS,
                                 cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)


def upstream_url(pod_ip: str, port: int, target: str) -> URL:
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return URL(f"http://{host}:{port}{target}", encoded=True)


async def _body_chunks(content, timeout: float, state: dict):
    while True:
        try:
            async with asyncio.timeout(timeout):
                chunk = await content.readany()
        except TimeoutError:
            state["timed_out"] = True
            raise ClientBodyTimeout() from None
        if not chunk:
            return
        yield chunk


class HttpProxy:
    def __init__(self, config, session: aiohttp.ClientSession, metrics):
        self.config = config
        self.session = session
        self.metrics = metrics
        self.timeout = aiohttp.ClientTimeout(total=None, connect=config.upstream_connect_timeout,
                                             sock_read=config.upstream_read_timeout or None)

    async def connect(self, method: str, url: URL, headers, body):
        """Send the request; retry only connect failures. Returns the upstream response."""
        attempts = 1 + self.config.upstream_connect_retries
        for attempt in range(attempts):
            try:
                return await self.session.request(method, url, headers=headers, data=body,
                                                  allow_redirects=False, timeout=self.timeout,
                                                  compress=None, auto_decompress=False)
            except aiohttp.ConnectionTimeoutError as exc:
                raise UpstreamError(504, "connect_timeout", f"connect to {url.host}:{url.port} timed out") from exc
            except aiohttp.ClientConnectorError as exc:
                if attempt + 1 == attempts:
                    raise UpstreamError(502, "connect", f"cannot connect to {url.host}:{url.port}: "
                                                        f"{exc.os_error}") from exc
                self.metrics.connect_retries.inc()
                await asyncio.sleep(0.05 * (attempt + 1))
            except aiohttp.ServerTimeoutError as exc:
                raise UpstreamError(504, "read_timeout", "sandbox did not answer in time") from exc
            except aiohttp.ClientError as exc:
                raise UpstreamError(502, "protocol", f"sandbox request failed: {type(exc).__name__}") from exc

    async def forward(self, request: web.BaseRequest, url: URL, headers, request_id: str) -> web.StreamResponse:
        body_state = {}
        body = None
        if request.body_exists:
            if "100-continue" in request.headers.get("Expect", "").lower():
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = _body_chunks(request.content, self.config.client_body_timeout, body_state)
        try:
            upstream = await self.connect(request.method, url, headers, body)
        except UpstreamError:
            if body_state.get("timed_out"):
                raise ClientBodyTimeout() from None
            raise
        complete = False
        try:
            response_headers = downstream_response_headers(upstream.headers)
            response_headers["X-Request-Id"] = request_id
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=response_headers)
            await response.prepare(request)
            if request.method != "HEAD" and upstream.status not in NO_BODY_STATUSES:
                try:
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                except (aiohttp.ClientPayloadError, aiohttp.ServerTimeoutError, aiohttp.ClientOSError) as exc:
                    # Headers are out: the only honest signal left is to cut the client connection,
                    # so a truncated body is never mistaken for a complete one.
                    self.metrics.upstream_errors.inc("body")
                    log.info("sandbox response broke off: %s", type(exc).__name__)
                    if request.transport is not None:
                        request.transport.abort()
                    return response
            await response.write_eof()
            complete = True
            return response
        finally:
            if complete:
                upstream.release()
            else:
                upstream.close()
