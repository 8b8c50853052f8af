"""Socket writes held until the event loop has handled the whole batch of I/O events at hand.

A write on a TCP socket whose reader sleeps wakes that reader, and on a busy host (a VM above all,
where the wake-up is an inter-processor interrupt) the wake-up costs more than the write. So
while the gateway is busy (more than one request under way), the writes of a pass of the event
loop are held to its end: those to one peer process (the client, or a sandbox's server) leave
together and wake it once per pass instead of once per request. When it is not, writes leave at
once and nothing is scheduled, as without any of this: one request at a time costs no extra pass
of the loop and sees no added latency. The bytes to one connection stay in order, and a connection
about to close writes what it holds first. Work that no peer waits for (accounting, the access
log) is put ``after`` the writes: the answer leaves before the bookkeeping, not behind it. A
transport's flow control sees held bytes at the end of the pass, so a slow client pauses the
sandbox's reads one read later than it would otherwise.
"""
import logging

log = logging.getLogger("liteboxd_gateway.writes")


class HeldWrites:
    """The connections of one event loop holding bytes to write at the end of the current pass.

    A connection holds its bytes itself, when ``hold`` says so; ``flush_held`` then calls its
    ``write_held`` once, and then what was put ``after``. ``active`` counts the requests under
    way (the gateway keeps it): the gateway is busy when there are more than one.
    """

    __slots__ = ("loop", "active", "_holding", "_after", "_scheduled")

    def __init__(self, loop):
        self.loop = loop
        self.active = 0
        self._holding = []
        self._after = []
        self._scheduled = False

    def hold(self, connection) -> bool:
        """True: ``connection`` is to hold its bytes to the end of the pass. False: it writes
        now (the gateway is not busy and nothing is held)."""
        if not self._scheduled:
            if self.active < 2:
                return False
            self._schedule()
        self._holding.append(connection)
        return True

    def after(self, callback, argument):
        """Call ``callback(argument)`` once the writes held in this pass have left: now, when
        nothing is held."""
        if not self._scheduled:
            callback(argument)
            return
        self._after.append((callback, argument))

    def _schedule(self):
        self._scheduled = True
        self.loop.call_soon(self.flush_held)

    def flush_held(self):
        self._scheduled = False
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

    The class sets ``transport`` once connected, and says with ``_can_write`` whether its
    transport still takes bytes.
    """

    def __init__(self, held_writes: HeldWrites):
        self.held_writes = held_writes
        self.transport = None
        self._held = None

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
