"""HTTP forwarding to a sandbox over pooled keep-alive connections, streaming both ways.

The upstream side is a plain asyncio Protocol with httptools parsing: a request head is written
in one piece (with the body when the client already sent all of it), and the response head and
body chunks are handed over as they are parsed. Bodies are never held whole: the request body is
read from the client chunk by chunk (with a slow-client timeout between reads) while it is sent
upstream, and the response is written to the client as each chunk arrives, so Server-Sent Events
and long polls pass through as sent; a slow client pauses reading from the sandbox. Connections
are pooled per sandbox address with a short idle timeout. Only a failed connect is retried: once a
byte of the request may have reached the sandbox, the request is never replayed.
"""
import asyncio
import logging

import httptools

from .headers import HEADER_ENCODING, downstream_response_fields
from .streams import ChunkStream

log = logging.getLogger("liteboxd_gateway.proxy")
# Methods whose requests carry no body unless the client framed one.
BODYLESS_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "DELETE", "CONNECT"))


class UpstreamError(Exception):
    """The sandbox could not be reached or broke off: ``status`` is 502 or 504, ``kind`` a metric label."""

    def __init__(self, status: int, kind: str, detail: str):
        super().__init__(detail)
        self.status = status
        self.kind = kind


class ClientBodyTimeout(Exception):
    """The client paused longer than the body timeout while sending its request body."""


class UpstreamBroken(Exception):
    """The sandbox closed the connection or broke the protocol during an exchange."""


class ResponseHead:
    """Status, reason (bytes) and the header fields for the client ((name, value) bytes)."""

    __slots__ = ("status", "reason", "fields", "has_length")

    def __init__(self, status, reason, fields, has_length):
        self.status, self.reason, self.fields, self.has_length = status, reason, fields, has_length


class UpstreamConnection(asyncio.Protocol):
    """One keep-alive connection to a sandbox, carrying one exchange at a time.

    ``begin`` starts an exchange; ``head`` resolves with the response head, ``body.read()`` returns
    body bytes (``b""`` at the end of the message) and raises UpstreamBroken when the sandbox broke off.
    """

    def __init__(self, loop, address):
        self.loop = loop
        self.address = address
        self.transport = None
        self.closed = False
        self.idle_since = 0.0
        self._parser = None
        self._head_only = False
        self._reason = b""
        self._headers = []
        self._until_close = False
        self.head = None
        self.body = ChunkStream(loop, self._pause_reading, self._resume_reading)
        self.complete = False
        self.reusable = False
        self._drain_waiter = None
        self._writing_paused = False

    # -- exchange --------------------------------------------------------------------------
    def begin(self, data: bytes, head_only: bool):
        """Send a request head (and maybe its whole body); expect one response."""
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._reason, self._headers = b"", []
        self.head = self.loop.create_future()
        self.body = ChunkStream(self.loop, self._pause_reading, self._resume_reading)
        self.complete = self.reusable = False
        self.transport.write(data)

    def write(self, data: bytes):
        if not self.closed:
            self.transport.write(data)

    async def drain(self):
        if self.closed:
            raise UpstreamBroken("connection closed")
        if self._writing_paused:
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter

    def read_buffered(self):
        """The whole body when it has already arrived complete, else None (then stream with ``read``)."""
        return self.body.take() if self.complete else None

    def close(self):
        self.reusable = False
        if not self.closed:
            self.closed = True
            self.transport.close()

    def _wake(self, waiter, error=None):
        if waiter is not None and not waiter.done():
            if error is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(error)

    def _fail(self, error):
        if not self.body.eof:  # neither complete nor failed already
            self.body.finish(error)
            if self.head is not None and not self.head.done():
                self.head.set_exception(error)
                self.head.exception()  # a client gone before the head leaves nobody to await it
        self.close()

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if self._parser is None or self.complete:
            # Bytes nobody asked for: the connection can no longer be trusted.
            self._fail(UpstreamBroken("unexpected data from the sandbox"))
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamBroken("sandbox switched protocols on a plain request"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBroken(f"malformed response: {exc}"))

    def eof_received(self):
        self._end_of_stream()
        return False

    def connection_lost(self, exc):
        self.closed = True
        self._end_of_stream()
        self._wake(self._drain_waiter, UpstreamBroken("connection lost"))

    def _end_of_stream(self):
        self.reusable = False
        if self._until_close and self.head is not None and self.head.done() and not self.complete:
            self.on_message_complete()
        else:
            self._fail(UpstreamBroken("sandbox closed the connection"))

    def _pause_reading(self):
        if not self.closed:
            self.transport.pause_reading()

    def _resume_reading(self):
        if not self.closed:
            self.transport.resume_reading()

    def pause_writing(self):
        self._writing_paused = True

    def resume_writing(self):
        self._writing_paused = False
        self._wake(self._drain_waiter)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_status(self, reason: bytes):
        self._reason += reason

    def on_header(self, name: bytes, value: bytes):
        self._headers.append((name, value))

    def on_headers_complete(self):
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            # Informational answers (100 Continue, 103 Early Hints) precede the real one.
            self._headers, self._reason = [], b""
            return
        fields, has_length, framed = downstream_response_fields(self._headers)
        self._until_close = not framed and status not in (204, 304) and not self._head_only
        self.head.set_result(ResponseHead(status, self._reason, fields, has_length))
        if self._head_only:
            # llhttp would wait for the Content-Length body a HEAD answer never has.
            self.on_message_complete()

    def on_body(self, body: bytes):
        if self.complete:
            return
        self.body.feed(body)

    def on_message_complete(self):
        if self.head is None or not self.head.done() or self.complete:
            return  # the end of an informational answer
        self.complete = True
        self.reusable = (not self._head_only and not self._until_close and not self.closed
                         and self._parser.should_keep_alive())
        self.body.finish()


class UpstreamPool:
    """Keep-alive connections per sandbox address; idle ones are closed after ``idle_timeout``."""

    def __init__(self, config, metrics):
        self.config = config
        self.metrics = metrics
        self.loop = asyncio.get_running_loop()
        self.idle = {}
        self._sweeper = self.loop.call_later(config.upstream_idle_timeout, self._sweep)

    async def acquire(self, host: str, port: int) -> UpstreamConnection:
        stack = self.idle.get((host, port))
        if stack:
            now = self.loop.time()
            while stack:
                connection = stack.pop()
                if not connection.closed and now - connection.idle_since < self.config.upstream_idle_timeout:
                    return connection
                connection.close()
        return await self._connect(host, port)

    async def _connect(self, host, port):
        attempts = 1 + self.config.upstream_connect_retries
        for attempt in range(attempts):
            try:
                async with asyncio.timeout(self.config.upstream_connect_timeout):
                    _unused, connection = await self.loop.create_connection(
                        lambda: UpstreamConnection(self.loop, (host, port)), host, port)
                return connection
            except TimeoutError:
                raise UpstreamError(504, "connect_timeout", f"connect to {host}:{port} timed out") from None
            except OSError as exc:
                if attempt + 1 == attempts:
                    raise UpstreamError(502, "connect", f"cannot connect to {host}:{port}: {exc}") from exc
                self.metrics.connect_retries.inc()
                await asyncio.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def release(self, connection: UpstreamConnection):
        if connection.reusable and not connection.closed:
            connection.idle_since = self.loop.time()
            self.idle.setdefault(connection.address, []).append(connection)
        else:
            connection.close()

    def _sweep(self):
        deadline = self.loop.time() - self.config.upstream_idle_timeout
        for address, stack in list(self.idle.items()):
            kept = [c for c in stack if not c.closed and c.idle_since > deadline]
            for connection in stack:
                if connection not in kept:
                    connection.close()
            if kept:
                self.idle[address] = kept
            else:
                del self.idle[address]
        self._sweeper = self.loop.call_later(self.config.upstream_idle_timeout / 2, self._sweep)

    def close(self):
        self._sweeper.cancel()
        for stack in self.idle.values():
            for connection in stack:
                connection.close()
        self.idle.clear()


def request_head(method: str, target: str, host: str, headers, chunked: bool) -> bytes:
    lines = [f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
    if chunked:
        lines.append("Transfer-Encoding: chunked\r\n")
    lines.append("\r\n")
    return "".join(lines).encode(*HEADER_ENCODING)


def host_header(pod_ip: str, port: int) -> str:
    return f"[{pod_ip}]:{port}" if ":" in pod_ip else f"{pod_ip}:{port}"


class HttpProxy:
    def __init__(self, config, metrics):
        self.config = config
        self.metrics = metrics
        self.pool = UpstreamPool(config, metrics)

    def close(self):
        self.pool.close()

    async def _send_body(self, connection, body, chunked: bool):
        timeout = self.config.client_body_timeout
        while True:
            try:
                async with asyncio.timeout(timeout):
                    chunk = await body.read()
            except TimeoutError:
                raise ClientBodyTimeout() from None
            if not chunk:
                break
            connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await connection.drain()
        if chunked:
            connection.write(b"0\r\n\r\n")

    async def _wait(self, awaitable):
        if self.config.upstream_read_timeout:
            try:
                async with asyncio.timeout(self.config.upstream_read_timeout):
                    return await awaitable
            except TimeoutError:
                raise UpstreamError(504, "read_timeout", "sandbox did not answer in time") from None
        return await awaitable

    async def _response_head(self, connection, sender):
        """Wait for the response head while the body goes up; a stalled client body wins."""
        if sender is not None:
            await asyncio.wait((sender, connection.head), return_when=asyncio.FIRST_COMPLETED)
            if sender.done() and not sender.cancelled() and isinstance(sender.exception(), ClientBodyTimeout):
                raise ClientBodyTimeout()
        try:
            return await self._wait(connection.head)
        except UpstreamBroken as exc:
            raise UpstreamError(502, "protocol", f"sandbox request failed: {exc}") from None

    async def forward(self, client, request, pod_ip: str, port: int, target: str, headers, request_id: str) -> int:
        """Send the request to the sandbox and its answer to the client; returns the status.

        Raises UpstreamError or ClientBodyTimeout only while the client has had no answer yet.
        """
        method = request.method
        body = b""
        streaming = False
        chunked = False
        if request.has_body:
            if "100-continue" in request.headers.get("Expect", "").lower() and not request.body.eof:
                client.write_continue()
            chunked = "Content-Length" not in headers
            if request.body.eof:
                # The whole body is already here: send it with the head, framed by its length.
                body = request.body.take()
                if chunked:
                    headers["Content-Length"] = str(len(body))
                    chunked = False
            else:
                streaming = True
        elif method not in BODYLESS_METHODS and "Content-Length" not in headers:
            headers["Content-Length"] = "0"
        head = request_head(method, target, host_header(pod_ip, port), headers, chunked)

        connection = await self.pool.acquire(pod_ip, port)
        sender = None
        complete = False
        try:
            connection.begin(head + body if body else head, method == "HEAD")
            if streaming:
                sender = asyncio.get_running_loop().create_task(self._send_body(connection, request.body, chunked))
            upstream = await self._response_head(connection, sender)
            fields = upstream.fields
            fields.append((b"X-Request-Id", request_id.encode()))
            whole = connection.read_buffered()
            if whole is not None:
                # Small answers arrive complete: headers and body leave in one write.
                client.respond(request, upstream.status, fields, whole, upstream.reason, has_length=upstream.has_length)
                complete = True
                return upstream.status
            client.respond(request, upstream.status, fields, reason=upstream.reason, streaming=True,
                           has_length=upstream.has_length)
            try:
                while chunk := await self._wait(connection.body.read()):
                    await client.write(chunk)
            except (UpstreamBroken, UpstreamError) as exc:
                # Headers are out: the only honest signal left is to cut the client connection,
                # so a truncated body is never mistaken for a complete one.
                self.metrics.upstream_errors.inc("body")
                log.info("sandbox response broke off: %s", exc)
                client.abort()
                return upstream.status
            client.end()
            complete = True
            return upstream.status
        finally:
            if sender is not None:
                if not sender.done():
                    sender.cancel()
                    connection.close()
                elif not sender.cancelled() and sender.exception() is not None:
                    connection.close()  # the body did not all go up
            if not complete:
                connection.close()
            self.pool.release(connection)
