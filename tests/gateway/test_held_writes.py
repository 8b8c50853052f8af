"""Writes held to the end of the event loop's pass (writes.py), over real sockets, on both loops."""
import asyncio
import json
import socket

import pytest
import uvloop

from liteboxd_gateway.writes import HeldWriter, HeldWrites

from tests.gateway.test_http1 import split_responses

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class Writer(HeldWriter, asyncio.Protocol):
    def __init__(self, held_writes):
        super().__init__(held_writes)
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


def busy_held_writes():
    """The loop's HeldWrites as while two requests are under way."""
    held_writes = HeldWrites(asyncio.get_running_loop())
    held_writes.active = 2
    return held_writes


async def two_busy_pairs():
    """Two Writers on one busy HeldWrites, each with its peer socket: ((writer, peer), (writer, peer))."""
    held_writes = busy_held_writes()
    return await connected_pair(held_writes), await connected_pair(held_writes)


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_while_busy_writes_leave_together_at_the_end_of_the_pass_in_order(loop_kind):
    async def scenario():
        (first, first_peer), (second, second_peer) = await two_busy_pairs()
        first._write(b"one ")
        second._write(b"other")
        first._write(b"two ")
        first._write(b"three")
        during_the_pass = received(first_peer), received(second_peer)
        after_the_pass = await read_after_the_pass(first_peer, second_peer)
        close_all(first, second, first_peer, second_peer)
        return during_the_pass, after_the_pass

    during_the_pass, after_the_pass = run(loop_kind, scenario)
    assert during_the_pass == (b"<nothing>", b"<nothing>")
    assert after_the_pass == (b"one two three", b"other")


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_with_one_request_under_way_writes_and_bookkeeping_happen_at_once(loop_kind):
    async def scenario():
        held_writes = HeldWrites(asyncio.get_running_loop())
        held_writes.active = 1
        writer, peer = await connected_pair(held_writes)
        seen = []
        writer._write(b"answer")
        held_writes.after(seen.append, received(peer))
        writer._write(b" and more")
        seen.append(received(peer))
        close_all(writer, peer)
        return seen

    assert run(loop_kind, scenario) == [b"answer", b" and more"]


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_closing_writes_what_is_held_first_and_aborting_drops_it(loop_kind):
    async def scenario():
        (closing, closing_peer), (aborting, aborting_peer) = await two_busy_pairs()
        closing._write(b"last words")
        closing.close()
        aborting._write(b"never sent")
        aborting.abort()
        results = await read_after_the_pass(closing_peer, aborting_peer) + (closing_peer.recv(100),)
        close_all(closing_peer, aborting_peer)
        return results

    assert run(loop_kind, scenario) == (b"last words", b"", b"")


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_a_connection_that_fails_to_write_leaves_the_others_theirs(loop_kind):
    async def scenario():
        (broken, broken_peer), (healthy, healthy_peer) = await two_busy_pairs()
        broken._write(b"lost")
        healthy._write(b"delivered")

        def refuse():
            raise RuntimeError("transport gone")

        broken._can_write = refuse
        results = await read_after_the_pass(healthy_peer, broken_peer)
        close_all(healthy, healthy_peer, broken_peer)
        return results

    # The failing connection is aborted: its peer sees the end, not a hang.
    assert run(loop_kind, scenario) == (b"delivered", b"")


@pytest.mark.parametrize("loop_kind", LOOPS)
def test_while_busy_work_put_after_runs_once_the_writes_have_left(loop_kind):
    async def scenario():
        held_writes = busy_held_writes()
        writer, peer = await connected_pair(held_writes)
        seen = []

        def bookkeeping(name):
            seen.append((name, received(peer)))

        writer._write(b"answer")
        held_writes.after(bookkeeping, "account")
        seen.append(("in the pass", received(peer)))
        await asyncio.sleep(0.05)
        close_all(writer, peer)
        return seen

    assert run(loop_kind, scenario) == [("in the pass", b"<nothing>"), ("account", b"answer")]


async def test_many_requests_at_once_through_the_gateway_are_each_answered_and_counted_out(
        gateway_factory, sandbox_factory, monkeypatch):
    # Many client connections at once make the gateway busy: its writes are held and leave per
    # pass; every answer must still reach its own client whole, and the count of requests under
    # way must come back to zero (else it would hold writes forever after).
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    # How many connections each pass's flush wrote, seen where the flush is scheduled (the
    # HeldWrites type itself may be compiled, and then cannot be patched).
    flushes = []
    held_writes = gateway.gateway.proxy.held_writes
    loop = asyncio.get_running_loop()
    call_soon = loop.call_soon

    def counted_flush():
        flushes.append(len(held_writes._holding))
        held_writes.flush_held()

    def call_soon_counting_flushes(callback, *args, **kwargs):
        return call_soon(counted_flush if callback == held_writes.flush_held else callback, *args, **kwargs)

    monkeypatch.setattr(loop, "call_soon", call_soon_counting_flushes)

    async def one(i):
        reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
        try:
            for j in range(5):
                writer.write(f"GET {sandbox.path(f'/c{i}r{j}')} HTTP/1.1\r\nHost: x\r\n"
                             f"X-Access-Token: {sandbox.token}\r\n\r\n".encode())
            writer.write(f"GET {sandbox.path('/large/70000')} HTTP/1.1\r\nHost: x\r\n"
                         f"X-Access-Token: {sandbox.token}\r\nConnection: close\r\n\r\n".encode())
            return split_responses(await asyncio.wait_for(reader.read(-1), 30))
        finally:
            writer.close()

    answers = await asyncio.gather(*(one(i) for i in range(30)))
    for i, responses in enumerate(answers):
        assert [status for status, _headers, _body in responses] == [200] * 6
        assert [json.loads(body)["raw_path"] for _status, _headers, body in responses[:5]] == \
            [f"/c{i}r{j}" for j in range(5)]
        assert len(responses[5][2]) == 70000
    assert max(flushes) > 1  # the gateway was busy: passes held the writes of several connections
    assert gateway.gateway.proxy.held_writes.active == 0
    assert "liteboxd_gateway_active_requests 0" in gateway.gateway.metrics.render().splitlines()
