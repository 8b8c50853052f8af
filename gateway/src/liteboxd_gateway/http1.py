"""The client side: an HTTP/1.1 server Protocol parsing requests with httptools (llhttp).

One ClientConnection per client connection; requests on it are served one at a time, in order
(a pipelined request waits its turn), each from the read that completed its head once llhttp has
judged all of that read, by callbacks and without a task of its own. llhttp refuses ambiguous
framing before anything is forwarded: Content-Length together with Transfer-Encoding, duplicate
or malformed Content-Length, a Transfer-Encoding that does not end in chunked, obs-fold,
whitespace before a colon. Such a request gets 400 and the connection closes. Heads are bounded: the request-target and each header
field by ``--max-header-size``, the number of fields by ``--max-headers``, and the time to send a
head (or to idle between requests) by ``--client-idle-timeout``. Responses leave in as few writes
as possible: a complete answer is one piece, and while the gateway is busy what the connection
writes during one pass of the event loop leaves in one write at its end (``writes.py``); a
streamed answer is framed by the sandbox's Content-Length, else chunked. A WebSocket upgrade's
connection passes to a ``wsrelay.ClientSide``; aiohttp's server answers its handshake
(``websocket.py``), then the relay reads it.
"""
import asyncio
import collections
import http
import logging

import httptools
from multidict import CIMultiDict

from .headers import HEADER_ENCODING, is_websocket_upgrade
from .streams import ChunkStream
from .writes import HeldWriter
from .wsrelay import ClientSide

log = logging.getLogger("liteboxd_gateway.http1")
# Requests parsed ahead of the one being served before reading pauses.
PIPELINE_DEPTH = 2
REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}


class Refused(Exception):
    """A request head breaks a limit; answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Request:
    """One request head as parsed, with its body stream; ``exchange`` is what serves it (the
    gateway sets it), stopped by ``cancel`` when the client leaves or breaks the framing."""

    __slots__ = ("method", "raw_path", "version", "headers", "keep_alive", "has_body", "has_length", "body",
                 "exchange")

    def __init__(self, method, raw_path, version, headers, keep_alive, has_body, has_length, body):
        self.method, self.raw_path, self.version = method, raw_path, version
        self.headers, self.keep_alive, self.has_body, self.has_length = headers, keep_alive, has_body, has_length
        self.body = body
        self.exchange = None

    def cancel(self):
        if self.exchange is not None:
            self.exchange.cancel()


def _finished_stream() -> ChunkStream:
    stream = ChunkStream(None, None, None)
    stream.finish()
    return stream


# The body of every request without one: already at its end, never fed.
NO_BODY = _finished_stream()


class ClientConnections:
    """The open client connections of one listener, for a graceful shutdown."""

    def __init__(self):
        self.open = set()
        self.draining = False
        self._emptied = None

    def discard(self, connection):
        self.open.discard(connection)
        if not self.open and self._emptied is not None and not self._emptied.done():
            self._emptied.set_result(None)

    async def shutdown(self, timeout: float):
        """Close idle connections now, the others after their current response; abort after ``timeout``."""
        self.draining = True
        for connection in list(self.open):
            connection.close_if_idle()
        if self.open:
            self._emptied = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._emptied), timeout)
            except TimeoutError:
                for connection in list(self.open):
                    connection.transport.abort()


class ClientConnection(HeldWriter):
    """One client connection: parse heads, serve each request through the gateway, write answers
    (held to the end of the event loop's pass while the gateway is busy, ``writes.py``)."""

    def __init__(self, gateway, connections: ClientConnections, websocket_server):
        super().__init__(gateway.proxy.held_writes)
        self.gateway = gateway
        self.config = gateway.config
        # Limits read per request, kept at hand.
        self.max_header_size, self.max_headers = self.config.max_header_size, self.config.max_headers
        # llhttp keeps a partial field in memory until it ends: this bounds what a whole head may be.
        self.max_head_bytes = self.max_header_size * (self.max_headers + 2)
        self.connections = connections
        self.websocket_server = websocket_server
        self.loop = asyncio.get_running_loop()
        self.peer_host = ""
        self.parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._fields = []
        self._head_bytes = 0
        self._in_head = False
        self._parsing = None  # the request whose body is being parsed
        self._upgrade = None  # a request asking to switch protocols
        self._queue = collections.deque()  # parsed requests not yet served, in order
        self._serving = None  # the request being served
        self._dispatching = False
        self._idle_timer = None
        self._idle_since = None  # since when the connection idles or waits for a head; None while serving
        self._paused = set()
        self._drained = None
        self._write_paused = False
        self._chunked = False
        self._closing = False
        self.response_started = False
        self.body_bytes = 0

    # -- connection ------------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer_host = peer[0] if peer else ""
        self.connections.open.add(self)
        self._arm_idle()
        self._idle_timer = self.loop.call_later(self.config.client_idle_timeout, self._check_idle)

    def eof_received(self):
        return None  # as asyncio.Protocol's: the transport closes, and a request being served is dropped

    def connection_lost(self, exc):
        self._closing = True
        self._drop_held()
        self.connections.discard(self)
        self._stop_idle_timer()
        if self._parsing is not None:
            self._parsing.body.finish(ConnectionResetError("client went away"))
        if self._serving is not None:
            self._serving.cancel()
            self._serving = None
        self._drained = None

    def pause_writing(self):
        self._write_paused = True

    def resume_writing(self):
        self._write_paused = False
        drained, self._drained = self._drained, None
        if drained is not None:
            drained()

    def pause_reading(self, reason: str):
        if not self._paused and not self._closing:
            self.transport.pause_reading()
        self._paused.add(reason)

    def resume_reading(self, reason: str):
        if reason in self._paused:
            self._paused.discard(reason)
            if not self._paused and not self._closing:
                self.transport.resume_reading()

    def _pause_for_body(self):
        self.pause_reading("body")

    def _resume_for_body(self):
        self.resume_reading("body")

    def close_if_idle(self):
        if self._serving is None and not self._in_head:
            self._close()

    def _close(self):
        if not self._closing:
            self.write_held()
            self._closing = True
            self.transport.close()

    def _can_write(self) -> bool:
        return not self._closing

    # One timer per connection, re-armed from when the connection last became idle: a request
    # only stamps the time instead of creating and cancelling a timer.
    def _arm_idle(self):
        self._idle_since = self.loop.time()

    def _cancel_idle(self):
        self._idle_since = None

    def _check_idle(self):
        timeout = self.config.client_idle_timeout
        since = self._idle_since
        if since is not None and self.loop.time() - since >= timeout:
            self._idle_timer = None
            self._close()
            return
        self._idle_timer = self.loop.call_at((self.loop.time() if since is None else since) + timeout, self._check_idle)

    def _stop_idle_timer(self):
        self._idle_since = None
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    # -- parsing ---------------------------------------------------------------------------
    def data_received(self, data):
        if self._in_head or self._parsing is None:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse(431, "request header fields too large")
                return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._switch_protocols(data[upgrade.args[0]:])
            return
        except httptools.HttpParserCallbackError as exc:
            refused = exc.__context__ if isinstance(exc.__context__, Refused) else Refused(400, "bad request")
            self._refuse(refused.status, str(refused))
            return
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed request: {exc}")
            return
        # Serving starts only once llhttp has judged all it was given: a head it accepted may
        # still turn out to be badly framed (Content-Length with Transfer-Encoding ...).
        if self._serving is None and self._queue:
            self._serve_next()

    def on_message_begin(self):
        self._url = b""
        self._fields = []
        self._in_head = True

    def on_url(self, url: bytes):
        self._url += url
        if len(self._url) > self.max_header_size:
            raise Refused(414, "request line too long")

    def on_header(self, name: bytes, value: bytes):
        if len(name) + len(value) + 2 > self.max_header_size:
            raise Refused(431, "request header field too large")
        fields = self._fields
        fields.append((name.decode(*HEADER_ENCODING), value.decode(*HEADER_ENCODING)))
        if len(fields) > self.max_headers:
            raise Refused(431, "too many request header fields")

    def on_headers_complete(self):
        self._in_head = False
        self._head_bytes = 0
        self._cancel_idle()
        parser = self.parser
        headers = CIMultiDict(self._fields)
        length = headers.get("Content-Length")
        has_body = "Transfer-Encoding" in headers or (length is not None and length != "0")
        request = Request(parser.get_method().decode("ascii"), self._url.decode(*HEADER_ENCODING),
                          parser.get_http_version(), headers, parser.should_keep_alive(), has_body,
                          length is not None,
                          ChunkStream(self.loop, self._pause_for_body, self._resume_for_body) if has_body else NO_BODY)
        if parser.should_upgrade():
            self._upgrade = request
            return
        self._parsing = request
        self._queue.append(request)
        if len(self._queue) - (self._serving is None) >= PIPELINE_DEPTH:
            self.pause_reading("pipeline")

    def on_body(self, body: bytes):
        self._parsing.body.feed(body)

    def on_message_complete(self):
        if self._parsing is not None:
            self._parsing.body.finish()
            self._parsing = None

    def _refuse(self, status: int, message: str):
        """Answer a request that cannot be parsed or is too large, then close."""
        if self._parsing is not None:
            self._parsing.body.finish(ConnectionResetError(message))
        if self._serving is not None and not self.response_started:
            # The body of the request being served broke its framing before any answer.
            self._serving.cancel()
            self._serving = None
        if self._serving is not None or self._closing:
            # A response is under way or gone: the connection can only be cut.
            self.transport.abort()
            return
        self._stop_idle_timer()
        self.gateway.metrics.rejected.inc("bad_request")
        body = ('{"error": "%s"}' % message.replace('"', "'")).encode()
        self._write(self._head(status, [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-store"),
                                        (b"Content-Length", b"%d" % len(body))], "1.1", False) + body)
        self._close()

    def _switch_protocols(self, rest: bytes):
        request, self._upgrade = self._upgrade, None
        if request is None or self._serving is not None or self._queue:
            self._refuse(400, "unexpected protocol switch")
            return
        if not is_websocket_upgrade(request.method, request.headers):
            # Another protocol (h2c ...): served as a plain request without a body, then closed,
            # since llhttp stops parsing the connection at an upgrade.
            request.keep_alive = False
            request.has_body = False
            request.body = NO_BODY
            self._queue.append(request)
            self._serve_next()
            return
        # aiohttp's server answers the handshake (it gets the head again) and the relay takes the
        # connection from there: what follows the head is for the relay, held until it starts.
        self.connections.discard(self)
        self._stop_idle_timer()
        self._paused.clear()
        head = [f"{request.method} {request.raw_path} HTTP/{request.version}\r\n"]
        head.extend(f"{name}: {value}\r\n" for name, value in request.headers.items())
        head.append("\r\n")
        self.write_held()  # the answers to earlier requests go before the switch
        handler = self.websocket_server()
        client_side = ClientSide(handler)
        self.transport.set_protocol(client_side)
        self.transport.resume_reading()
        client_side.connection_made(self.transport)
        handler.data_received("".join(head).encode(*HEADER_ENCODING))
        if rest:
            client_side.data_received(rest)

    # -- serving ---------------------------------------------------------------------------
    def _serve_next(self):
        """Serve queued requests in order, one at a time. A request answered at once (the gateway's
        own answers) is followed by the next in this loop, not by recursion."""
        if self._dispatching:
            return
        self._dispatching = True
        try:
            while self._serving is None and self._queue and not self._closing:
                request = self._serving = self._queue.popleft()
                self.resume_reading("pipeline")
                self.response_started = False
                self.body_bytes = 0
                self._chunked = False
                try:
                    self.gateway.serve(self, request)
                except ConnectionError:  # the client went away while its answer was written
                    self.abort()
                except Exception:  # a bug must not leave the client waiting
                    log.exception("serving a request failed")
                    self.abort()
        finally:
            self._dispatching = False

    def finished(self, request: Request):
        """The gateway answered ``request``: keep the connection for the next one, or close it."""
        if self._serving is not request:
            return
        self._serving = None
        if self._closing or not request.keep_alive or self.connections.draining or not request.body.eof:
            # A body left unread would be taken for the next request.
            self._close()
        elif self._queue:
            self._serve_next()
        else:
            self._arm_idle()

    def _head(self, status: int, fields, version: str, keep_alive: bool, reason: bytes = b"") -> bytes:
        if not keep_alive:
            connection = b"Connection: close\r\n\r\n"
        elif version == "1.0":
            connection = b"Connection: keep-alive\r\n\r\n"
        else:
            connection = b"\r\n"
        # Each field joined in C: b": ".join((name, value)).
        return b"HTTP/1.1 %d %s\r\n%s%s%s" % (status, reason or REASONS.get(status, b"Unknown"),
                                              b"\r\n".join(map(b": ".join, fields)), b"\r\n" if fields else b"",
                                              connection)

    def respond(self, request: Request, status: int, fields: list, body: bytes, reason: bytes, streaming: bool,
                close: bool, has_length: bool):
        """Send a response head, header fields as (name, value) bytes, with the whole body unless
        ``streaming`` (then ``send`` and ``end``). ``reason``: the reason phrase, empty for the
        standard one; ``close``: close the connection after it; ``has_length``: a Content-Length is
        among the fields. Every argument is given: compiled, it is called as a C function, which
        takes no keyword after a skipped default."""
        self.response_started = True
        bodyless = request.method == "HEAD" or status in (204, 304) or status < 200
        if close:
            request.keep_alive = False
        if not bodyless and not has_length:
            if not streaming:
                fields.append((b"Content-Length", b"%d" % len(body)))
            elif request.version == "1.1":
                fields.append((b"Transfer-Encoding", b"chunked"))
                self._chunked = True
            else:
                request.keep_alive = False  # HTTP/1.0 without a length: the body ends with the connection
        keep_alive = request.keep_alive and not self.connections.draining
        head = self._head(status, fields, request.version, keep_alive, reason)
        if bodyless:
            body = b""
        self.body_bytes += len(body)
        self._write(head + body if body else head)

    def send(self, chunk: bytes):
        """A piece of a streamed response body."""
        if self._closing:
            return
        self.body_bytes += len(chunk)
        self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if self._chunked else chunk)

    @property
    def writing_paused(self) -> bool:
        """The transport's buffer is full: stop sending until ``when_drained`` calls back."""
        return self._write_paused

    def when_drained(self, callback):
        self._drained = callback

    def end(self):
        if self._chunked and not self._closing:
            self._write(b"0\r\n\r\n")

    def write_continue(self):
        self._write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def abort(self):
        self._closing = True
        self._drop_held()
        self.transport.abort()
