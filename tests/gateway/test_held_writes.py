"""Writes held to the end of the event loop's pass (writes.py), over real sockets, on both loops."""
import asyncio
import socket

import pytest
import uvloop

from liteboxd_gateway.writes import HeldWriter, HeldWrites

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class Writer(HeldWriter, asyncio.Protocol):
    def __init__(self, held_writes):
        self.held_writes = held_writes
        self.closed = False

    def connection_made(self, transport):
        self.transport = transport

    def _can_write(self):
        return not self.closed

    def close(self):
        self.write_held()
        self.closed = True
        self.transport.close()

    def abort(self):
        self._drop_held()
        self.closed = True
        self.transport.abort()


async def connected_pair(held_writes):
    """A Writer on one end of a socket pair, and the other end (non-blocking) to read from."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    _transport, writer = await asyncio.get_running_loop().connect_accepted_socket(lambda: Writer(held_writes), ours)
    return writer, theirs


def close_all(*ends):
    """Writers and peer sockets alike."""
    for end in ends:
        end.close()


async def read_after_the_pass(*peers):
    """What each peer got (waiting for it) once the loop has run the end of the pass."""
    await asyncio.sleep(0.05)
    for peer in peers:
        peer.setblocking(True)
    return tuple(peer.recv(100) for peer in peers)


def received(peer) -> bytes:
    try:
        return peer.recv(1 << 20)
    except BlockingIOError:
        return b"<nothing>"


def run(loop_kind, scenario):
    with asyncio.Runner(loop_factory=LOOPS[loop_kind]) as runner:
        return runner.run(scenario())


async def start_a_busy_pass(held_writes):
    """A first write in this pass (it leaves at once), so that the writes after it are held."""
    starter, starter_peer = await connected_pair(held_writes)
    starter._write(b"first")
    assert received(starter_peer) == b"first"
    return starter, starter_peer


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_the_first_write_of_a_pass_leaves_at_once_the_others_together_at_its_end_in_order(loop_kind):
    async def scenario():
        held_writes = HeldWrites(asyncio.get_running_loop())
        first, first_peer = await connected_pair(held_writes)
        second, second_peer = await connected_pair(held_writes)
        await asyncio.sleep(0.01)  # a new pass
        first._write(b"one ")
        second._write(b"other")
        first._write(b"two ")
        first._write(b"three")
        during_the_pass = received(first_peer), received(second_peer)
        await asyncio.sleep(0)  # the loop's next pass
        await asyncio.sleep(0.05)
        after_the_pass = received(first_peer), received(second_peer)
        close_all(first, second, first_peer, second_peer)
        return during_the_pass, after_the_pass

    during_the_pass, after_the_pass = run(loop_kind, scenario)
    assert during_the_pass == (b"one ", b"<nothing>")
    assert after_the_pass == (b"two three", b"other")


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_closing_writes_what_is_held_first_and_aborting_drops_it(loop_kind):
    async def scenario():
        held_writes = HeldWrites(asyncio.get_running_loop())
        closing, closing_peer = await connected_pair(held_writes)
        aborting, aborting_peer = await connected_pair(held_writes)
        starter, starter_peer = await start_a_busy_pass(held_writes)
        closing._write(b"last words")
        closing.close()
        aborting._write(b"never sent")
        aborting.abort()
        results = await read_after_the_pass(closing_peer, aborting_peer) + (closing_peer.recv(100),)
        close_all(closing_peer, aborting_peer, starter_peer, starter)
        return results

    assert run(loop_kind, scenario) == (b"last words", b"", b"")


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_connection_that_fails_to_write_leaves_the_others_theirs(loop_kind):
    async def scenario():
        held_writes = HeldWrites(asyncio.get_running_loop())
        broken, broken_peer = await connected_pair(held_writes)
        healthy, healthy_peer = await connected_pair(held_writes)
        starter, starter_peer = await start_a_busy_pass(held_writes)
        broken._write(b"lost")
        healthy._write(b"delivered")

        def refuse():
            raise RuntimeError("transport gone")

        broken._can_write = refuse
        results = await read_after_the_pass(healthy_peer, broken_peer)
        close_all(healthy, starter, healthy_peer, broken_peer, starter_peer)
        return results

    # The failing connection is aborted: its peer sees the end, not a hang.
    assert run(loop_kind, scenario) == (b"delivered", b"")


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_work_put_after_runs_once_the_writes_have_left(loop_kind):
    async def scenario():
        held_writes = HeldWrites(asyncio.get_running_loop())
        writer, peer = await connected_pair(held_writes)
        seen = []

        def bookkeeping(name):
            seen.append((name, received(peer)))

        await asyncio.sleep(0.01)  # a new pass
        writer._write(b"answer")  # the pass's first write: at once
        held_writes.after(bookkeeping, "account")
        writer._write(b" and more")
        seen.append(("in the pass", received(peer)))
        await asyncio.sleep(0.05)
        close_all(writer, peer)
        return seen

    assert run(loop_kind, scenario) == [("in the pass", b"answer"), ("account", b" and more")]


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_after_a_busy_pass_even_the_first_write_is_held_after_a_quiet_one_it_is_not(loop_kind):
    async def scenario():
        held_writes = HeldWrites(asyncio.get_running_loop())
        first, first_peer = await connected_pair(held_writes)
        second, second_peer = await connected_pair(held_writes)
        first._write(b"busy ")
        second._write(b"busy ")  # two connections wrote in this pass: the gateway is busy
        await asyncio.sleep(0.01)
        received(first_peer), received(second_peer)
        first._write(b"held")
        after_a_busy_pass = received(first_peer)  # a quiet pass, since only one connection wrote
        await asyncio.sleep(0.01)
        received(first_peer)
        first._write(b"at once")
        after_a_quiet_pass = received(first_peer)
        await asyncio.sleep(0.01)
        close_all(first, second, first_peer, second_peer)
        return after_a_busy_pass, after_a_quiet_pass

    assert run(loop_kind, scenario) == (b"<nothing>", b"at once")
