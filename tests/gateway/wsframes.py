"""WebSocket frames by hand, for tests that look at the relay frame by frame: a raw client of the
gateway and a raw sandbox, each reading and writing frames exactly as given (RFC 6455)."""
import asyncio
import base64
import hashlib
import os
import struct

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def frame(opcode: int, payload: bytes = b"", fin=True, masked=True, rsv=0, length=None) -> bytes:
    """One frame; ``length`` overrides the declared payload length (to claim more than is sent)."""
    length = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    mask_bit = 0x80 if masked else 0
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class Frame:
    def __init__(self, fin, opcode, payload, masked, rsv):
        self.fin, self.opcode, self.payload, self.masked, self.rsv = fin, opcode, payload, masked, rsv

    @property
    def close(self):
        """(code, reason) of a Close frame; (None, "") for one without status."""
        if len(self.payload) < 2:
            return None, ""
        return struct.unpack("!H", self.payload[:2])[0], self.payload[2:].decode()

    def __repr__(self):
        return f"Frame(fin={self.fin}, opcode={self.opcode}, payload={self.payload[:40]!r}, masked={self.masked})"


class Peer:
    """One end of a WebSocket connection spoken frame by frame."""

    def __init__(self, reader, writer, masks: bool):
        self.reader, self.writer, self.masks = reader, writer, masks

    def send(self, opcode, payload=b"", **kwargs):
        kwargs.setdefault("masked", self.masks)
        self.writer.write(frame(opcode, payload, **kwargs))

    def send_raw(self, data: bytes):
        self.writer.write(data)

    async def recv(self, timeout=10) -> Frame:
        """The next frame; AssertionError at the end of the stream."""
        async with asyncio.timeout(timeout):
            try:
                first, second = await self.reader.readexactly(2)
            except asyncio.IncompleteReadError:
                raise AssertionError("the connection ended instead of a frame") from None
            length = second & 0x7F
            if length == 126:
                length = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            key = await self.reader.readexactly(4) if second & 0x80 else None
            payload = await self.reader.readexactly(length)
        if key is not None:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return Frame(bool(first & 0x80), first & 0x0F, payload, key is not None, first >> 4 & 7)

    async def recv_message(self, timeout=10):
        """(opcode, payload) of the next data message, its fragments joined."""
        first = await self.recv(timeout)
        opcode, payload = first.opcode, first.payload
        while not first.fin:
            first = await self.recv(timeout)
            assert first.opcode == CONTINUATION, first
            payload += first.payload
        return opcode, payload

    async def ended(self, timeout=10) -> bool:
        """Whether the other end closed the connection with nothing more sent, within ``timeout``."""
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(1) == b""
        except TimeoutError:
            return False

    def close(self):
        self.writer.close()


async def client_handshake(port: int, target: str, headers=()) -> Peer:
    """A WebSocket client of the gateway, past its 101."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {target} HTTP/1.1", "Host: gw.test", "Connection: Upgrade", "Upgrade: websocket",
             "Sec-WebSocket-Version: 13", f"Sec-WebSocket-Key: {key}", *headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert f"Sec-WebSocket-Accept: {accept_key(key)}".encode() in head
    return Peer(reader, writer, masks=True)


class RawSandbox:
    """A sandbox's WebSocket server that accepts every handshake and hands each connection, as a
    Peer, to the test; ``greeting`` is sent with the 101, in the same write, and with ``hang_up``
    the connection ends right after it."""

    def __init__(self, host: str):
        self.host = host
        self.port = None
        self.heads = []
        self.connections = asyncio.Queue()
        self.greeting = b""
        self.hang_up = False
        self._server = None

    async def start(self):
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader, writer):
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        self.heads.append(head)
        key = next(line.split(":", 1)[1].strip() for line in head.split("\r\n")
                   if line.lower().startswith("sec-websocket-key:"))
        writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode() + self.greeting)
        if self.hang_up:
            writer.close()
        await self.connections.put(Peer(reader, writer, masks=False))

    async def accepted(self, timeout=10) -> Peer:
        return await asyncio.wait_for(self.connections.get(), timeout)

    async def stop(self):
        self._server.close()
