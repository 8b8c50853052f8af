"""The WebSocket relay once both handshakes are done: frames pass between the two connections whole
and as they came.

Each connection has a Protocol (``ClientSide``, ``UpstreamSide``) that reads the heads of the frames
it receives and forwards the data frames (text, binary, continuation) to the other connection
unchanged, all those of one read in one write: nothing is decoded, unmasked or encoded again, so text
stays the bytes it was and a fragmented message stays fragmented. A client masks its frames, as the
sandbox expects of a client, and the sandbox does not, as the client expects of a server; a frame
masked the other way is rebuilt. A frame that arrives in pieces is held until it is whole (it is
shorter than the message size limit).

What the gateway enforces needs only the heads: no reserved bit (no extension is negotiated), known
opcodes, control frames whole and of at most 125 bytes, fragments in order, and the message size:
the frame that brings a message to ``--ws-max-message-size`` bytes or more closes the connection
with 1009 before any of it is forwarded. Control frames stay with the gateway: it answers a ping
itself, drops pongs, and a Close ends the session. A close is passed on with its code and reason;
codes that must never be sent (1005 "no status", 1006 "abnormal", 1015) are replaced: 1000 for a
close without status, 1011 towards the client when the sandbox vanished or sent an unsendable code,
1001 towards the sandbox when the client vanished, broke the protocol or sent an unsendable code.
Idle time (no message either way), total lifetime and gateway shutdown close both sides with 1001.
The sandbox's connection ends once its Close is written; the client gets ``CLOSE_TIMEOUT`` to answer
a close it did not start, as the server side of the closing handshake, and as long to end its
connection after a close it started (the gateway's writing half ends with its answer).

Where the gateway is compiled (wsfast) and both connections are plain TCP, a session's data frames
pass in ``Offload``'s thread instead, socket to socket without the event loop; the thread hands the
session back here for anything else (a control frame, a frame to rebuild or refuse, a frame not yet
whole, the end of a connection, a full socket) with the bytes it read and did not forward, and the
session goes back to the thread once nothing is under way here. The rules stay the ones above: the
thread forwards only what ``read_frames`` would forward as it came.
"""
import asyncio
import logging
import os
import sys
import threading

try:
    from .wsfast import LOST, Relayer
except ImportError:  # the pure-Python package: every frame is relayed on the event loop
    LOST, Relayer = -2, None

log = logging.getLogger("liteboxd_gateway.wsrelay")

NORMAL, GOING_AWAY, PROTOCOL_ERROR, INVALID_TEXT, MESSAGE_TOO_BIG, INTERNAL_ERROR = 1000, 1001, 1002, 1007, 1009, 1011
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
# Codes below 3000 a peer may close with (RFC 6455 §7.4.1; 1006 as aiohttp took it, passed on as vanished).
RECEIVABLE_CODES = frozenset((1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014))
CLOSE_TIMEOUT = 5.0  # seconds the client has to answer a Close from the gateway
HOLD_LIMIT = 65536  # bytes a connection may send before the relay starts, before reading from it pauses
# The states of one side; the relay starts both out of WAITING.
WAITING, OPEN, CLOSING, CLOSED = 0, 1, 2, 3
# Why reading from a side is paused (bits).
PEER_FULL, HOLDING, OFFLOADED = 1, 2, 4


def sendable_close_code(code, vanished: int) -> int:
    """A close code that may go on the wire for one received (or None when the peer vanished)."""
    if code is None or code == 1006:
        return vanished
    if code == 1005:
        return NORMAL
    if 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999:
        return code
    return vanished


def apply_mask(key: bytes, payload: bytes) -> bytes:
    """``payload`` XORed with the four-byte masking ``key`` (masking and unmasking alike)."""
    size = len(payload)
    if not size:
        return payload
    return (int.from_bytes(payload, "big") ^ int.from_bytes((key * (size // 4 + 1))[:size], "big")).to_bytes(size, "big")


def frame(first: int, payload: bytes, masked: bool) -> bytes:
    """A frame with first byte ``first`` (FIN and opcode); ``masked`` with a random key, as from a client."""
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, mask_bit | size))
    elif size < 65536:
        head = bytes((first, mask_bit | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + size.to_bytes(8, "big")
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + apply_mask(key, payload)


def frame_payload(data: bytes, pos: int, head: int, size: int, masked: int) -> bytes:
    """The payload, unmasked, of the frame at ``pos`` in ``data`` with a head of ``head`` bytes."""
    payload = data[pos + head:pos + head + size]
    if masked:
        return apply_mask(data[pos + head - 4:pos + head], payload)
    return payload


class Side:
    """One connection of a relay, as its asyncio Protocol: reads frames and forwards the data frames
    to ``peer``. Until the relay starts, what arrives is held."""

    def __init__(self, masks: bool):
        self.masks = masks  # frames written to this connection are masked (the sandbox's: the gateway is its client)
        self.transport = None
        self.relay = None
        self.peer = None
        self.state = WAITING
        self.lost = False  # the connection ended before the relay started
        self.max_message_size = 0
        self._held = []  # the start of a frame not yet whole, in pieces
        self._held_size = 0
        self._needed = 0  # how many bytes the held frame has in all, once its head is known
        self._opcode = 0  # the opcode of the fragmented message under way, 0 between messages
        self._message_size = 0  # that message's payload bytes so far
        self._pauses = 0
        self._close_sent = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        if not isinstance(data, bytes):  # a bytearray or memoryview from some transports
            data = bytes(data)
        if self._held:
            self._held.append(data)
            self._held_size += len(data)
            if self.state == WAITING:
                if self._held_size > HOLD_LIMIT:
                    self.pause_reading(HOLDING)
                return
            if self._held_size < self._needed:
                return
            data = b"".join(self._held)
            self._held = []
            self._held_size = 0
        elif self.state == WAITING:
            self._held = [data]
            self._held_size = len(data)
            return
        if self.state != CLOSED:
            self.read_frames(data)
            relay = self.relay
            if relay.offload is not None and not relay.handle:
                relay.try_offload()

    def eof_received(self):
        return None  # the transport closes; connection_lost tells the relay

    def connection_lost(self, exc):
        state, self.state = self.state, CLOSED
        if state == WAITING:
            self.lost = True
        elif state == OPEN:
            self.relay.vanished(self)
        elif state == CLOSING:
            self.relay.finish()

    def pause_writing(self):
        if self.peer is not None:
            self.peer.pause_reading(PEER_FULL)

    def resume_writing(self):
        if self.peer is not None:
            self.peer.resume_reading(PEER_FULL)

    # -- the relay's side ------------------------------------------------------------------
    def pause_reading(self, reason: int):
        if not self._pauses and self.state != CLOSED:
            self.transport.pause_reading()
        self._pauses |= reason

    def resume_reading(self, reason: int):
        if self._pauses & reason:
            self._pauses &= ~reason
            if not self._pauses and self.state != CLOSED:
                self.transport.resume_reading()

    def start(self, relay, peer):
        """Relay from now on, beginning with what arrived before."""
        self.relay, self.peer = relay, peer
        self.max_message_size = relay.max_message_size
        if self.state == WAITING:
            self.state = OPEN
            self.resume_reading(HOLDING)
        # Unless the other side's first frames ended the session: what came before, then its end.
        if self._held and not relay.outcome:
            data = b"".join(self._held)
            self._held = []
            self._held_size = 0
            self.read_frames(data)
        if self.lost and not relay.outcome:
            relay.vanished(self)

    def idle(self) -> bool:
        """Open, with nothing held, paused or unwritten: the fast path may take the connection."""
        return (self.state == OPEN and not self._held and not self._pauses
                and not self.transport.get_write_buffer_size())

    def write(self, data: bytes):
        if self.state == OPEN:
            self.transport.write(data)

    def send_close(self, code: int, reason: bytes):
        """Write a Close frame, once, while the connection is there."""
        if not self._close_sent and self.state != CLOSED and code:
            self._close_sent = True
            self.transport.write(frame(0x80 | CLOSE, code.to_bytes(2, "big") + reason, self.masks))

    def close(self):
        if self.state != CLOSED:
            self.state = CLOSED
            self.transport.close()

    # -- frames ----------------------------------------------------------------------------
    def read_frames(self, data: bytes):
        """Forward the whole data frames in ``data``, act on control frames, hold a partial frame."""
        end = len(data)
        pos = 0
        start = 0  # the first byte not yet forwarded
        needed = 0
        completed = False
        peer_masks = self.peer.masks
        while pos < end:
            if end - pos < 2:
                break
            first = data[pos]
            second = data[pos + 1]
            opcode = first & 0x0F
            size = second & 0x7F
            head = 2
            if size == 126:
                head = 4
            elif size == 127:
                head = 10
            masked = second & 0x80
            if masked:
                head += 4
            if end - pos < head:
                break
            if size == 126:
                size = data[pos + 2] << 8 | data[pos + 3]
            elif size == 127:
                size = min(int.from_bytes(data[pos + 2:pos + 10], "big"), sys.maxsize)
            error = self.refusal(first, second, size)
            if error:
                self.write_to_peer(data, start, pos)
                self.relay.broke(self, error)
                return
            if end - pos < head + size:
                needed = head + size
                break
            if opcode < CLOSE:
                if (masked != 0) != peer_masks:
                    self.write_to_peer(data, start, pos)
                    self.peer.write(frame(first, frame_payload(data, pos, head, size, masked), peer_masks))
                    start = pos + head + size
                if first & 0x80:
                    self._opcode = 0
                    self._message_size = 0
                    completed = True
                else:
                    if opcode:
                        self._opcode = opcode
                    self._message_size += size
                pos += head + size
            else:
                self.write_to_peer(data, start, pos)
                payload = frame_payload(data, pos, head, size, masked)
                pos += head + size
                start = pos
                self.control(opcode, payload)
                if self.state == CLOSED:
                    return
        self.write_to_peer(data, start, pos)
        if completed:
            self.relay.message_completed()
        if pos < end and self.state != CLOSED:
            self._held = [data[pos:]]
            self._held_size = end - pos
            self._needed = needed

    def write_to_peer(self, data: bytes, start: int, stop: int):
        if start < stop:
            self.peer.write(data if start == 0 and stop == len(data) else data[start:stop])

    def refusal(self, first: int, second: int, size: int) -> int:
        """The close code a frame head (first two bytes, payload size) breaks the protocol or a limit
        with, else 0 (the rules aiohttp applied)."""
        opcode = first & 0x0F
        if first & 0x70:
            return PROTOCOL_ERROR
        if opcode >= CLOSE:
            if opcode > PONG or not first & 0x80 or second & 0x7F > 125:
                return PROTOCOL_ERROR
            return 0
        if opcode > BINARY:
            return PROTOCOL_ERROR
        if size >= self.max_message_size - self._message_size:
            return MESSAGE_TOO_BIG
        if (opcode == CONTINUATION) != (self._opcode != 0):
            return PROTOCOL_ERROR  # a continuation with no message under way, or a new message inside one
        return 0

    def control(self, opcode: int, payload: bytes):
        if opcode == PING:
            self.write(frame(0x80 | PONG, payload, self.masks))
        elif opcode == CLOSE:
            if not payload:
                self.relay.received_close(self, 0, b"")
                return
            code = payload[0] << 8 | payload[1] if len(payload) > 1 else 0
            if code < 3000 and code not in RECEIVABLE_CODES:
                self.relay.broke(self, PROTOCOL_ERROR)
                return
            reason = payload[2:]
            try:
                reason.decode("utf-8")
            except UnicodeDecodeError:
                self.relay.broke(self, INVALID_TEXT)
                return
            self.relay.received_close(self, code, reason)


class UpstreamSide(Side):
    """The sandbox's connection, from its 101 on; ``protocol`` is the subprotocol it chose."""

    def __init__(self, protocol):
        super().__init__(True)
        self.protocol = protocol


class ClientSide(Side):
    """The client's connection, from its upgrade request on. Until the relay starts, aiohttp's server
    (``handler``) answers the handshake on it and hears of the connection's end; it never reads from it."""

    def __init__(self, handler):
        super().__init__(False)
        self.handler = handler
        self._close_timer = None

    def connection_made(self, transport):
        self.transport = transport
        self.handler.connection_made(transport)

    def eof_received(self):
        if self.state == WAITING:
            return self.handler.eof_received()
        return None

    def connection_lost(self, exc):
        started = self.state != WAITING
        super().connection_lost(exc)
        if started:
            # After the relay's task has taken its outcome: aiohttp cancels the handler on it.
            asyncio.get_running_loop().call_soon(self.handler.connection_lost, exc)
        else:
            self.handler.connection_lost(exc)

    def pause_writing(self):
        if self.state == WAITING:
            self.handler.pause_writing()
        else:
            super().pause_writing()

    def resume_writing(self):
        if self.state == WAITING:
            self.handler.resume_writing()
        else:
            super().resume_writing()

    def close(self):
        super().close()
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        self.relay.finish()

    def await_close(self):
        """Wait for the client's Close (anything else it sends is dropped), at most CLOSE_TIMEOUT."""
        self.state = CLOSING
        self._close_timer = self.relay.loop.call_later(CLOSE_TIMEOUT, self.close)

    def linger(self):
        """The client closed and has its answer: end the writing half and read, dropping, until it
        closes too (at most CLOSE_TIMEOUT). Closing at once would leave what it sent after its Close
        unread, and the kernel would reset the connection, the answer with it."""
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.await_close()


def plain_socket(transport) -> int:
    """The file descriptor of a plain TCP transport, or -1 (TLS, or no socket to hand over)."""
    if transport.get_extra_info("sslcontext") is not None or transport.get_extra_info("ssl_object") is not None:
        return -1
    sock = transport.get_extra_info("socket")
    return sock.fileno() if sock is not None else -1


class Offload:
    """The fast path of one event loop (wsfast.Relayer): its thread, the sessions it carries and the
    eventfd through which it hands sessions back. Only where the gateway is compiled (``start``)."""

    def __init__(self, loop):
        self.loop = loop
        self.relayer = Relayer()
        self.relays = {}  # handle: Relay
        threading.Thread(target=self.relayer.run, name="liteboxd-wsrelay", daemon=True).start()
        loop.add_reader(self.relayer.notify_fd, self.handed_back)

    @classmethod
    def start(cls, loop):
        """The fast path for ``loop``, or None where wsfast was not compiled."""
        return cls(loop) if Relayer is not None else None

    def attach(self, relay, client_fd: int, upstream_fd: int) -> int:
        client, upstream = relay.client, relay.upstream
        handle = self.relayer.attach(client_fd, upstream_fd, relay.max_message_size, client._opcode,
                                     client._message_size, upstream._opcode, upstream._message_size,
                                     relay.last_activity)
        self.relays[handle] = relay
        return handle

    def reclaim(self, handle: int):
        del self.relays[handle]
        return self.relayer.reclaim(handle)

    def last_activity(self, handle: int) -> float:
        return self.relayer.last_activity(handle)

    def handed_back(self):
        for handle in self.relayer.handed_back():
            relay = self.relays.get(handle)
            # Else the loop took it back first (an end, a timer). Back to the thread after bytes it
            # left here; after an end or an error of a connection the transport must read that first.
            if relay is not None and relay.reclaim():
                relay.try_offload()

    def close(self):
        self.loop.remove_reader(self.relayer.notify_fd)
        self.relayer.stop()


class Relay:
    """One client <-> sandbox WebSocket session, from both handshakes to both connections closed."""

    def __init__(self, config, client: ClientSide, upstream: UpstreamSide, offload=None):
        self.loop = asyncio.get_running_loop()
        self.max_message_size = config.ws_max_message_size
        self.idle_timeout = config.ws_idle_timeout
        self.max_lifetime = config.ws_max_lifetime
        self.client = client
        self.upstream = upstream
        self.started = False
        self.outcome = ""
        self.last_activity = 0.0
        self.done = self.loop.create_future()
        self._ends = 0.0
        self._timer = None
        # The fast path, for sessions whose connections are both plain TCP; ``handle`` while it has this one.
        self._fds = (plain_socket(client.transport), plain_socket(upstream.transport)) if offload is not None else ()
        self.offload = offload if self._fds and min(self._fds) >= 0 else None
        self.handle = 0
        self._reclaiming = False

    async def run(self) -> str:
        """Relay until it ends: client_closed, upstream_closed, client_gone (it vanished or broke the
        protocol), idle_timeout, lifetime_exceeded or gateway_shutting_down."""
        now = self.last_activity = self.loop.time()
        self._ends = now + self.max_lifetime
        self._timer = self.loop.call_at(min(self._ends, now + self.idle_timeout), self._check_time)
        self.started = True
        self.client.start(self, self.upstream)
        self.upstream.start(self, self.client)
        self.try_offload()
        try:
            return await self.done
        except asyncio.CancelledError:
            self.abort()
            raise

    def shutdown(self, reason: str):
        self._end(reason.replace(" ", "_"), GOING_AWAY, GOING_AWAY, reason.encode(), False)

    def abort(self):
        """Close what is still open (the handshake's task was cancelled)."""
        if self.started:
            self._end("aborted", GOING_AWAY, GOING_AWAY, b"", True)
        else:
            self.upstream.send_close(GOING_AWAY, b"")
            self.upstream.close()

    def message_completed(self):
        self.last_activity = self.loop.time()

    def try_offload(self):
        """Hand the session to the fast path's thread if it has one and nothing is under way here."""
        if (self.offload is None or self.handle or self.outcome or self._reclaiming
                or not self.client.idle() or not self.upstream.idle()):
            return
        self.client.pause_reading(OFFLOADED)
        self.upstream.pause_reading(OFFLOADED)
        try:
            self.handle = self.offload.attach(self, *self._fds)
        except OSError as exc:
            log.warning("WebSocket relayed on the event loop: %s", exc)
            self.offload = None
            self.client.resume_reading(OFFLOADED)
            self.upstream.resume_reading(OFFLOADED)

    def reclaim(self) -> bool:
        """Take the session back from the fast path's thread: its fragment state, the time of its
        last message, what it forwarded and could not write, and what it read and left here (True
        when there was such a rest)."""
        handle, self.handle = self.handle, 0
        if not handle:
            return False
        side, rest, pending, client_opcode, client_size, upstream_opcode, upstream_size, last = \
            self.offload.reclaim(handle)
        client, upstream = self.client, self.upstream
        client._opcode, client._message_size = client_opcode, client_size
        upstream._opcode, upstream._message_size = upstream_opcode, upstream_size
        if last > self.last_activity:
            self.last_activity = last
        self._reclaiming = True
        try:
            client.resume_reading(OFFLOADED)
            upstream.resume_reading(OFFLOADED)
            if side == LOST:
                self._end("aborted", INTERNAL_ERROR, INTERNAL_ERROR, b"", True)
            elif side >= 0:
                reader = client if side == 0 else upstream
                if pending:
                    reader.peer.write(pending)
                if rest:
                    reader.data_received(rest)
                    return True
            return False
        finally:
            self._reclaiming = False

    def received_close(self, side: Side, code: int, reason: bytes):
        """``code`` 0: a Close without status."""
        if side is self.client:
            sent = sendable_close_code(code, GOING_AWAY) if code else NORMAL
            self._end("client_closed", sent, sent, reason, True)
        else:
            sent = sendable_close_code(code, INTERNAL_ERROR) if code else NORMAL
            self._end("upstream_closed", sent, sent, reason, False)

    def broke(self, side: Side, code: int):
        """``side`` broke the protocol or a limit: it is closed with ``code``."""
        if side is self.client:
            self._end("client_gone", GOING_AWAY, code, b"", True)
        else:
            self._end("upstream_closed", code, code, b"", False)

    def vanished(self, side: Side):
        if side is self.client:
            self._end("client_gone", GOING_AWAY, 0, b"", True)
        else:
            self._end("upstream_closed", 0, INTERNAL_ERROR, b"", False)

    def finish(self):
        if not self.done.done():
            self.done.set_result(self.outcome)

    def _end(self, outcome: str, upstream_code: int, client_code: int, reason: bytes, client_done: bool):
        """Close the sandbox's connection after ``upstream_code``, and send the client ``client_code``;
        its connection ends now when ``client_done`` (it closed, vanished or broke the protocol), else
        once it answers. A side that already ended the session is closed on anything more."""
        if self.handle:
            self.reclaim()  # what the thread read first counts first, and may end the session itself
        if self.outcome:
            if self.client.state == CLOSING:
                self.client.close()
            return
        self.outcome = outcome
        if self._timer is not None:
            self._timer.cancel()
        self.upstream.send_close(upstream_code, reason)
        self.upstream.close()
        self.client.send_close(client_code, reason)
        if outcome == "client_closed" and self.client.state == OPEN:
            self.client.linger()
        elif client_done or self.client.state != OPEN:
            self.client.close()
        else:
            self.client.await_close()

    def _check_time(self):
        now = self.loop.time()
        if self.handle:
            last = self.offload.last_activity(self.handle)
            if last > self.last_activity:
                self.last_activity = last
        if now >= self._ends:
            self.shutdown("lifetime exceeded")
            return
        idle_ends = self.last_activity + self.idle_timeout
        if now >= idle_ends:
            self.shutdown("idle timeout")
            return
        self._timer = self.loop.call_at(min(self._ends, idle_ends), self._check_time)
