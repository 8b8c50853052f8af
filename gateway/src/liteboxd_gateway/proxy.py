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
from .writes import HeldWrites, HeldWriter

log = logging.getLogger("liteboxd_gateway.proxy")
# Methods whose requests carry no body unless the client framed one.
BODYLESS_METHODS = frozenset(("GET", "HEAD", "OPTIONS", "TRACE", "DELETE", "CONNECT"))
CRLF = "\r\n"


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


class UpstreamConnection(HeldWriter):
    """One keep-alive connection to a sandbox, carrying one Forward at a time; while the gateway
    is busy its writes are held to the end of the event loop's pass (``writes.py``).

    Its parser lives as long as the connection: llhttp reads one message after the other (an
    answer to HEAD, whose body llhttp would wait for, ends the connection's reuse). The Forward
    hears of the response through ``head``, ``body`` and, once a read has been parsed, ``parsed``.
    """

    def __init__(self, loop, address, held_writes):
        super().__init__(held_writes)
        self.loop = loop
        self.address = address
        self.closed = False
        self.idle_since = 0.0
        self.parser = httptools.HttpResponseParser(self)
        self.forward = None
        self._head_only = False
        self._reason = b""
        self._fields = []
        self.head_received = False
        self.until_close = False
        self.complete = False
        self.reusable = False
        self._drain_waiter = None
        self._writing_paused = False

    # -- exchange --------------------------------------------------------------------------
    def begin(self, forward, data: bytes, head_only: bool):
        """Send a request head (and maybe its whole body); ``forward`` hears of the response."""
        self.forward = forward
        self._head_only = head_only
        self._reason, self._fields = b"", []
        self.head_received = self.until_close = self.complete = self.reusable = False
        self._write(data)

    def write(self, data: bytes):
        if not self.closed:
            self._write(data)

    def _can_write(self) -> bool:
        return not self.closed

    async def drain(self):
        if self.closed:
            raise UpstreamBroken("connection closed")
        if self._writing_paused:
            self._drain_waiter = self.loop.create_future()
            await self._drain_waiter

    def pause_reading(self):
        if not self.closed:
            self.transport.pause_reading()

    def resume_reading(self):
        if not self.closed:
            self.transport.resume_reading()

    def close(self):
        """Close now: bytes still held were for an exchange given up."""
        self.reusable = False
        self._drop_held()
        if not self.closed:
            self.closed = True
            self.transport.close()

    def _fail(self, error):
        """The exchange broke off: tell the Forward (once) and drop the connection."""
        forward, self.forward = self.forward, None
        self.close()
        if forward is not None and not self.complete:
            forward.failed(error)

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        forward = self.forward
        if forward is None or self.complete:
            # Bytes nobody asked for: the connection can no longer be trusted.
            self._fail(UpstreamBroken("unexpected data from the sandbox"))
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamBroken("sandbox switched protocols on a plain request"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamBroken(f"malformed response: {exc}"))
        if self.complete or (self.head_received and not self.closed):
            forward.parsed()

    def eof_received(self):
        self._end_of_stream()
        return False

    def connection_lost(self, exc):
        self.closed = True
        self._end_of_stream()
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(UpstreamBroken("connection lost"))

    def _end_of_stream(self):
        self.reusable = False
        forward = self.forward
        if forward is not None and self.until_close and self.head_received and not self.complete:
            self.on_message_complete()  # a body without length ends with the connection
            forward.parsed()
        else:
            self._fail(UpstreamBroken("sandbox closed the connection"))

    def pause_writing(self):
        self._writing_paused = True

    def resume_writing(self):
        self._writing_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # -- httptools callbacks ---------------------------------------------------------------
    def on_status(self, reason: bytes):
        self._reason += reason

    def on_header(self, name: bytes, value: bytes):
        self._fields.append((name, value))

    def on_headers_complete(self):
        status = self.parser.get_status_code()
        if status < 200:
            # Informational answers (100 Continue, 103 Early Hints) precede the real one.
            self._fields, self._reason = [], b""
            return
        fields, has_length, framed = downstream_response_fields(self._fields)
        self.until_close = not framed and status not in (204, 304) and not self._head_only
        self.head_received = True
        self.forward.head(status, self._reason, fields, has_length)
        if self._head_only:
            # llhttp would wait for the Content-Length body a HEAD answer never has.
            self.on_message_complete()

    def on_body(self, body: bytes):
        if not self.complete:
            self.forward.body(body)

    def on_message_complete(self):
        if not self.head_received or self.complete:
            return  # the end of an informational answer
        self.complete = True
        self.reusable = (not self._head_only and not self.until_close and not self.closed
                         and self.parser.should_keep_alive())


class UpstreamPool:
    """Keep-alive connections per sandbox address; idle ones are closed after ``idle_timeout``."""

    def __init__(self, config, metrics, held_writes):
        self.config = config
        self.metrics = metrics
        self.loop = asyncio.get_running_loop()
        self.held_writes = held_writes
        self.idle = {}
        self._sweeper = self.loop.call_later(config.upstream_idle_timeout, self._sweep)

    def take_idle(self, address):
        """An idle connection to ``address`` (host, port), or None."""
        stack = self.idle.get(address)
        if stack:
            now = self.loop.time()
            while stack:
                connection = stack.pop()
                if not connection.closed and now - connection.idle_since < self.config.upstream_idle_timeout:
                    return connection
                connection.close()
        return None

    async def connect(self, address) -> UpstreamConnection:
        host, port = address
        attempts = 1 + self.config.upstream_connect_retries
        for attempt in range(attempts):
            try:
                async with asyncio.timeout(self.config.upstream_connect_timeout):
                    _unused, connection = await self.loop.create_connection(
                        lambda: UpstreamConnection(self.loop, address, self.held_writes), host, port)
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
        connection.forward = None
        if connection.reusable and not connection.closed:
            connection.idle_since = self.loop.time()
            stack = self.idle.get(connection.address)
            if stack is None:
                self.idle[connection.address] = [connection]
            else:
                stack.append(connection)
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


def request_head(method: str, target: str, host: str, fields, request_id: str, framing: str) -> bytes:
    """The request head for the sandbox: ``fields`` as (name, value) text, then X-Request-Id and
    ``framing`` (a Content-Length or Transfer-Encoding line, or nothing)."""
    # Each field joined in C: ": ".join((name, value)).
    return (f"{method} {target} HTTP/1.1\r\nHost: {host}\r\n" + "\r\n".join(map(": ".join, fields))
            + f"{CRLF if fields else ''}X-Request-Id: {request_id}\r\n{framing}\r\n").encode(*HEADER_ENCODING)


def host_header(pod_ip: str, port: int) -> str:
    return f"[{pod_ip}]:{port}" if ":" in pod_ip else f"{pod_ip}:{port}"


class Forward:
    """One request on its way to a sandbox and its answer on the way back to the client.

    Driven by the Protocols' callbacks: with an idle pooled connection and the request body
    already received (the common case) no task is involved; a task only connects or streams a
    request body up. The answer leaves in one write when it arrived complete in one read, else
    the head goes first and body chunks follow as they arrive (a client that cannot keep up
    pauses reading from the sandbox). ``done(forward)`` is called once at the end, unless
    cancelled; then ``error`` is the UpstreamError or ClientBodyTimeout to answer, if the client
    has had no answer yet, and ``status`` the status the sandbox answered.
    """

    __slots__ = ("proxy", "client", "request", "address", "data", "streaming", "chunked", "request_id",
                 "done", "connection", "task", "status", "error", "_reason", "_fields", "_has_length",
                 "_chunks", "_answering", "_finished", "_body_sent", "_timer", "_last_read", "_paused")

    def __init__(self, proxy, client, request, address, data, streaming, chunked, request_id, done):
        self.proxy, self.client, self.request, self.address = proxy, client, request, address
        self.data, self.streaming, self.chunked, self.request_id, self.done = data, streaming, chunked, request_id, done
        self.connection = self.task = self.error = self._timer = None
        self.status = 0
        self._reason = b""
        self._fields = None
        self._has_length = False
        self._chunks = []
        self._answering = self._finished = self._paused = False
        self._body_sent = not streaming
        self._last_read = 0.0

    def start(self):
        connection = None if self.streaming else self.proxy.pool.take_idle(self.address)
        if connection is not None:
            self._send(connection)
        else:
            self.task = self.proxy.loop.create_task(self._connect_and_send())

    def cancel(self):
        """The client went away: stop, without calling ``done``."""
        self._finished = True
        if self.task is not None:
            self.task.cancel()
        self._stop(reusable=False)

    def _send(self, connection):
        self.connection = connection
        connection.begin(self, self.data, self.request.method == "HEAD")
        self.data = b""
        if not self.streaming:
            self._arm_read_timeout()

    async def _connect_and_send(self):
        connection = self.proxy.pool.take_idle(self.address)
        if connection is None:
            try:
                connection = await self.proxy.pool.connect(self.address)
            except UpstreamError as exc:
                self._finish(exc)
                return
            if self._finished:  # cancelled while connecting
                self.proxy.pool.release(connection)
                return
        self._send(connection)
        if self.streaming:
            try:
                await self.proxy.send_body(connection, self.request.body, self.chunked)
            except ClientBodyTimeout as exc:
                # Answered 408 unless the sandbox answered first; the connection is not reused.
                if not self._answering and not self._finished:
                    self._finish(exc)
                return
            except (UpstreamBroken, ConnectionError):
                return  # the sandbox broke off (its connection reports it) or the client left (it cancels)
            self._body_sent = True
            self._arm_read_timeout()

    # -- the read timeout: a timer per exchange, re-armed by reads --------------------------------
    def _arm_read_timeout(self):
        timeout = self.proxy.config.upstream_read_timeout
        if timeout and not self._finished:
            self._last_read = self.proxy.loop.time()
            self._timer = self.proxy.loop.call_at(self._last_read + timeout, self._check_read_timeout)

    def _check_read_timeout(self):
        loop, timeout = self.proxy.loop, self.proxy.config.upstream_read_timeout
        if self._paused:  # held back by a slow client, not by the sandbox
            self._last_read = loop.time()
        if loop.time() - self._last_read < timeout:
            self._timer = loop.call_at(self._last_read + timeout, self._check_read_timeout)
            return
        self._timer = None
        self.failed(UpstreamError(504, "read_timeout", "sandbox did not answer in time"))

    # -- from the UpstreamConnection ------------------------------------------------------------
    def head(self, status, reason, fields, has_length):
        self.status, self._reason, self._has_length = status, reason, has_length
        fields.append((b"X-Request-Id", self.request_id.encode()))
        self._fields = fields

    def body(self, chunk: bytes):
        if self._answering:
            self.client.send(chunk)
        else:
            self._chunks.append(chunk)

    def parsed(self):
        """A read was parsed: answer when the response is complete, else stream what came."""
        if self._finished:
            return
        if self._timer is not None:
            self._last_read = self.proxy.loop.time()
        connection, client = self.connection, self.client
        if connection.complete:
            if self._answering:
                client.end()
            else:
                whole = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
                client.respond(self.request, self.status, self._fields, whole, self._reason, streaming=False,
                               close=False, has_length=self._has_length)
            self._finish(None)
            return
        if not self._answering:
            self._answering = True
            client.respond(self.request, self.status, self._fields, b"", self._reason, streaming=True, close=False,
                           has_length=self._has_length)
            for chunk in self._chunks:
                client.send(chunk)
            self._chunks = None
        if client.writing_paused and not self._paused:
            self._paused = True
            connection.pause_reading()
            client.when_drained(self._client_drained)

    def _client_drained(self):
        if self._paused and not self._finished:
            self._paused = False
            self.connection.resume_reading()

    def failed(self, error):
        """The sandbox broke off, broke the protocol or did not answer in time."""
        if self._finished:
            return
        if isinstance(error, UpstreamBroken):
            error = UpstreamError(502, "protocol", f"sandbox request failed: {error}")
        if not self._answering:
            self._finish(error)
            return
        # Headers are out: the only honest signal left is to cut the client connection, so a
        # truncated body is never mistaken for a complete one.
        self.proxy.metrics.upstream_errors.inc("body")
        log.info("sandbox response broke off: %s", error)
        self.client.abort()
        self._finish(None)

    def _finish(self, error):
        self._finished = True
        self.error = error
        task = self.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()  # the sandbox answered before the whole request body went up
        # A connection is reused only after a whole request and a whole response.
        self._stop(reusable=error is None and self._body_sent)
        self.done(self)

    def _stop(self, reusable: bool):
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        connection, self.connection = self.connection, None
        if connection is not None:
            if not reusable or not connection.complete:
                connection.close()
            self.proxy.pool.release(connection)


class HttpProxy:
    def __init__(self, config, metrics):
        self.config = config
        self.metrics = metrics
        self.loop = asyncio.get_running_loop()
        # The writes of client and sandbox connections alike, made during one pass of the loop.
        self.held_writes = HeldWrites(self.loop)
        self.pool = UpstreamPool(config, metrics, self.held_writes)

    def close(self):
        self.pool.close()

    async def send_body(self, connection, body, chunked: bool):
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

    def forward(self, client, request, pod_ip: str, port: int, target: str, fields, request_id: str, done) -> Forward:
        """The Forward (to ``start``) of a request to the sandbox and of its answer to the client;
        ``fields``: the request's header fields as (name, value) text, without framing."""
        method = request.method
        body = b""
        streaming = chunked = False
        framing = ""
        if request.has_body:
            if not request.body.eof and "100-continue" in request.headers.get("Expect", "").lower():
                client.write_continue()
            if request.body.eof:
                # The whole body is already here: send it with the head, framed by its length.
                body = request.body.take()
                if not request.has_length:
                    framing = f"Content-Length: {len(body)}\r\n"
            else:
                streaming = True
                if not request.has_length:
                    chunked = True
                    framing = "Transfer-Encoding: chunked\r\n"
        elif method not in BODYLESS_METHODS and not request.has_length:
            framing = "Content-Length: 0\r\n"
        head = request_head(method, target, host_header(pod_ip, port), fields, request_id, framing)
        return Forward(self, client, request, (pod_ip, port), head + body if body else head, streaming, chunked,
                       request_id, done)
