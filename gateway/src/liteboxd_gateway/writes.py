"""Socket writes held until the event loop has handled the whole batch of I/O events at hand.

A write on a TCP socket whose reader sleeps wakes that reader, and on a busy host (a VM above all,
where the wake-up is an inter-processor interrupt) the wake-up costs more than the write. So
while the gateway is busy (the last pass of the loop had more than one connection writing), the
writes of a pass are held to its end: those to one peer process (the client, or a sandbox's
server) leave together and wake it once per pass instead of once per request. When it is not,
the pass's first write leaves at once, as it would without any of this: one request at a time
sees no added latency. The bytes to one
connection stay in order, and a connection about to close writes what it holds first. Work that
no peer waits for (accounting, the access log) is put ``after`` the writes: the answer leaves
before the bookkeeping, not behind it.
"""
import logging

log = logging.getLogger("liteboxd_gateway.writes")


class HeldWrites:
    """The connections of one event loop holding bytes to write at the end of the current pass.

    A connection holds its bytes itself, when ``hold`` says so; ``flush_held`` then calls its
    ``write_held`` once, and then what was put ``after``.
    """

    __slots__ = ("loop", "_holding", "_after", "_scheduled", "_writers", "_busy")

    def __init__(self, loop):
        self.loop = loop
        self._holding = []
        self._after = []
        self._scheduled = False
        self._writers = 0  # connections that wrote in this pass
        self._busy = False  # more than one did in the last pass that wrote

    def hold(self, connection) -> bool:
        """True: ``connection`` is to hold its bytes to the end of the pass. False: it is the
        pass's first writer and the gateway is not busy: it writes now (nothing is held yet)."""
        self._writers += 1
        if not self._scheduled:
            self._schedule()
            if not self._busy:
                return False
        self._holding.append(connection)
        return True

    def after(self, callback, argument):
        """Call ``callback(argument)`` once the writes held in this pass have left."""
        self._after.append((callback, argument))
        if not self._scheduled:
            self._schedule()

    def _schedule(self):
        self._scheduled = True
        self.loop.call_soon(self.flush_held)

    def flush_held(self):
        self._scheduled = False
        self._busy = self._writers > 1
        self._writers = 0
        holding, self._holding = self._holding, []
        after, self._after = self._after, []
        for connection in holding:
            try:
                connection.write_held()
            except Exception:  # one broken connection must not keep the others' bytes
                log.exception("writing to a connection failed")
                connection.transport.abort()
        for callback, argument in after:
            try:
                callback(argument)
            except Exception:
                log.exception("work after the writes failed")


class HeldWriter:
    """Mixin for a Protocol writing through ``HeldWrites``: ``_write`` holds, ``write_held`` writes.

    The class sets ``held_writes`` (the loop's HeldWrites) and ``transport``, and says with
    ``_can_write`` whether its transport still takes bytes.
    """

    held_writes = None
    transport = None
    _held = None

    def _write(self, data: bytes):
        held = self._held
        if held is not None:
            held.append(data)
        elif self.held_writes.hold(self):
            self._held = [data]
        else:
            self.transport.write(data)

    def write_held(self):
        held, self._held = self._held, None
        if held and self._can_write():
            if len(held) == 1:
                self.transport.write(held[0])
            else:
                self.transport.writelines(held)

    def _drop_held(self):
        self._held = None

    def _can_write(self) -> bool:
        raise NotImplementedError
