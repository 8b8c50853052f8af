"""Body bytes handed from a Protocol's callbacks to the one task that reads them.

A request body arriving from the client (``http1.py``) is read by the task sending it to the
sandbox (``proxy.py``; response bodies go from callback to callback). Reading from the producing
transport pauses while more than ``HIGH_WATER`` bytes wait, so a slow reader holds back a fast sender.
"""
import collections

# Bytes buffered before reading from the producing transport pauses until the reader took them.
HIGH_WATER = 256 * 1024


class ChunkStream:
    """Chunks fed by a Protocol, read by one task; ``finish`` ends the stream, maybe with an error
    that the reader gets after the bytes before it. The first end counts; later ones are ignored."""

    __slots__ = ("loop", "pause", "resume", "chunks", "size", "paused", "eof", "error", "waiter")

    def __init__(self, loop, pause, resume):
        self.loop = loop
        self.pause = pause
        self.resume = resume
        self.chunks = collections.deque()
        self.size = 0
        self.paused = False
        self.eof = False
        self.error = None
        self.waiter = None

    def feed(self, data: bytes):
        self.chunks.append(data)
        self.size += len(data)
        if self.size > HIGH_WATER and not self.paused:
            self.paused = True
            self.pause()
        self._wake()

    def finish(self, error=None):
        if not self.eof:
            self.eof = True
            self.error = error
            self._wake()

    def _wake(self):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def take(self) -> bytes:
        """Everything received and not yet read."""
        data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.size = 0
        if self.paused:
            self.paused = False
            self.resume()
        return data

    async def read(self) -> bytes:
        """The next bytes (waiting for some); b"" at the end, or the error the stream ended with."""
        while not self.chunks:
            if self.eof:
                if self.error is not None:
                    raise self.error
                return b""
            self.waiter = self.loop.create_future()
            await self.waiter
        return self.take()
