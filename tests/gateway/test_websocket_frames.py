"""The WebSocket relay frame by frame: a raw client and a raw sandbox, each seeing exactly what the
gateway wrote to it (frames, close codes, the end of the connection)."""
import asyncio
import os
import secrets

import pytest

from tests.gateway.conftest import next_loopback
from tests.gateway.wsframes import (BINARY, CLOSE, CONTINUATION, PING, PONG, TEXT, RawSandbox, client_handshake,
                                    close_payload, frame)

MAX_MESSAGE = 1024


@pytest.fixture
async def raw_sandbox(pods):
    """A RawSandbox behind a sandbox Pod: (sandbox, name, token)."""
    sandbox = await RawSandbox(next_loopback()).start()
    name, token = f"raw-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    await pods.create(name, token=token, ip=sandbox.host)
    yield sandbox, name, token
    await sandbox.stop()


@pytest.fixture
async def relayed(gateway_factory, raw_sandbox):
    """A relayed WebSocket: (gateway, client Peer, sandbox Peer); messages of MAX_MESSAGE bytes or more are refused."""
    gateway = await gateway_factory(ws_max_message_size=MAX_MESSAGE)
    sandbox, name, token = raw_sandbox
    await gateway.wait_sandbox(name)
    client = await client_handshake(gateway.port, f"/sandbox/{name}/port/{sandbox.port}/ws",
                                    [f"X-Access-Token: {token}"])
    upstream = await sandbox.accepted()
    yield gateway, client, upstream
    client.close()
    upstream.close()


@pytest.fixture
async def relay(relayed):
    """(client Peer, sandbox Peer) of ``relayed``."""
    return relayed[1:]


async def assert_closed_with(peer, code, reason=""):
    close = await peer.recv()
    assert (close.opcode, close.close) == (CLOSE, (code, reason)), close
    return close


async def close_after_fragments(peer, opcode):
    """(code, reason) of the Close ``peer`` gets after any first fragments (of ``opcode``) that passed."""
    while (received := await peer.recv()).opcode != CLOSE:
        assert received.opcode == opcode and not received.fin, received
    return received.close


async def test_data_frames_pass_unchanged_masked_only_towards_the_sandbox(relay):
    client, sandbox = relay
    client.send(TEXT, b"\xff not UTF-8")  # text is passed as bytes, never decoded
    client.send(BINARY, b"")
    client.send(TEXT, b"")
    for opcode, payload in ((TEXT, b"\xff not UTF-8"), (BINARY, b""), (TEXT, b"")):
        received = await sandbox.recv()
        assert (received.fin, received.opcode, received.payload, received.masked) == (True, opcode, payload, True)
    sandbox.send(BINARY, bytes(range(256)) * 3)
    received = await client.recv()
    assert (received.opcode, received.payload, received.masked) == (BINARY, bytes(range(256)) * 3, False)


async def test_compiled_gateways_carry_data_frames_in_the_relay_thread_and_take_the_rest_back(relayed):
    gateway, client, sandbox = relayed
    offload = gateway.gateway.offload
    # wsfast is built with the other compiled modules; the pure-Python package relays on the event loop.
    assert (offload is not None) == (os.environ.get("LITEBOXD_GATEWAY_BUILD") == "compiled")
    client.send(PING, b"first")  # a control frame is the event loop's: answered there, then back to the thread
    assert (await client.recv()).payload == b"first"
    frames = offload.relayer.frames if offload else 0
    for number in range(20):  # ten messages of two fragments each
        client.send(CONTINUATION if number % 2 else TEXT, b"to the sandbox %d" % number, fin=number % 2 == 1)
    for number in range(20):
        received = await sandbox.recv()
        assert (received.fin, received.opcode, received.payload, received.masked) == (
            number % 2 == 1, CONTINUATION if number % 2 else TEXT, b"to the sandbox %d" % number, True)
    for number in range(20):
        sandbox.send(BINARY, b"to the client %d" % number)
        assert (await client.recv()).payload == b"to the client %d" % number
    if offload:
        assert offload.relayer.frames - frames == 40
        assert offload.relayer.attaches >= 2 and offload.relayer.ejections >= 1
    client.send(CLOSE, close_payload(1000))
    await assert_closed_with(sandbox, 1000)
    await assert_closed_with(client, 1000)
    assert await client.ended()


async def test_frames_masked_the_wrong_way_are_rebuilt(relay):
    client, sandbox = relay
    client.send(TEXT, b"unmasked from a client", masked=False)
    received = await sandbox.recv()
    assert (received.payload, received.masked) == (b"unmasked from a client", True)
    sandbox.send(BINARY, b"masked from a server", masked=True)
    received = await client.recv()
    assert (received.payload, received.masked) == (b"masked from a server", False)


async def test_fragments_pass_as_sent_and_pings_between_them_are_answered_by_the_gateway(relay):
    client, sandbox = relay
    client.send(TEXT, b"ab", fin=False)
    client.send(PING, b"between")
    client.send(CONTINUATION, b"cd", fin=False)
    client.send(CONTINUATION, b"ef")
    pong = await client.recv()
    assert (pong.opcode, pong.payload, pong.masked) == (PONG, b"between", False)
    frames = [await sandbox.recv() for _unused in range(3)]
    assert [(f.fin, f.opcode, f.payload) for f in frames] == [
        (False, TEXT, b"ab"), (False, CONTINUATION, b"cd"), (True, CONTINUATION, b"ef")]


async def test_pings_are_answered_by_the_gateway_and_pongs_end_there(relay):
    client, sandbox = relay
    client.send(PING, b"from client")
    client.send(PONG, b"unasked")
    client.send(TEXT, b"after")
    pong = await client.recv()
    assert (pong.opcode, pong.payload) == (PONG, b"from client")
    assert (await sandbox.recv()).payload == b"after"  # neither the ping nor the pong reached the sandbox
    sandbox.send(PING, b"from sandbox")
    sandbox.send(PONG, b"unasked")
    sandbox.send(TEXT, b"after")
    pong = await sandbox.recv()
    assert (pong.opcode, pong.payload, pong.masked) == (PONG, b"from sandbox", True)
    assert (await client.recv()).payload == b"after"


async def test_what_the_sandbox_sends_with_its_101_and_frames_split_across_reads_arrive_whole(
        gateway_factory, raw_sandbox):
    gateway = await gateway_factory()
    sandbox, name, token = raw_sandbox
    sandbox.greeting = frame(TEXT, b"hello from the sandbox", masked=False)
    await gateway.wait_sandbox(name)
    client = await client_handshake(gateway.port, f"/sandbox/{name}/port/{sandbox.port}/ws",
                                    [f"X-Access-Token: {token}"])
    upstream = await sandbox.accepted()
    assert (await client.recv()).payload == b"hello from the sandbox"
    big = frame(BINARY, bytes(range(256)) * 1024)  # 256 KiB, sent in pieces with pauses
    for start in range(0, len(big), 50000):
        client.send_raw(big[start:start + 50000])
        await client.writer.drain()
        await asyncio.sleep(0.01)
    received = await upstream.recv()
    assert (received.opcode, received.payload) == (BINARY, bytes(range(256)) * 1024)
    client.close()


@pytest.mark.parametrize("greeting, expected", [
    (frame(TEXT, b"last words", masked=False) + frame(CLOSE, close_payload(4001, b"bye"), masked=False),
     [(TEXT, b"last words"), (CLOSE, close_payload(4001, b"bye"))]),
    (b"", [(CLOSE, close_payload(1011))]),
], ids=["close", "vanish"])
async def test_a_sandbox_that_ends_right_after_its_101(gateway_factory, raw_sandbox, greeting, expected):
    gateway = await gateway_factory()
    sandbox, name, token = raw_sandbox
    sandbox.greeting, sandbox.hang_up = greeting, True
    await gateway.wait_sandbox(name)
    client = await client_handshake(gateway.port, f"/sandbox/{name}/port/{sandbox.port}/ws",
                                    [f"X-Access-Token: {token}"])
    assert [((f := await client.recv()).opcode, f.payload) for _unused in expected] == expected
    client.send(CLOSE, b"")
    assert await client.ended()


async def test_a_burst_to_a_client_that_reads_late_arrives_whole_and_in_order(relay):
    client, sandbox = relay
    chunk = bytes(range(200)) * 5  # 1000 bytes, under the message limit
    for i in range(8000):
        sandbox.send(BINARY, i.to_bytes(4, "big") + chunk[4:])
    await asyncio.sleep(0.5)  # the client reads nothing meanwhile
    for i in range(8000):
        received = await client.recv()
        assert received.payload[:4] == i.to_bytes(4, "big") and received.payload[4:] == chunk[4:]


CLIENT_CLOSES = [
    # What the client closes with -> what the sandbox and the client get.
    (close_payload(4002, b"bye"), (4002, "bye"), (4002, "bye")),
    (b"", (1000, ""), (1000, "")),  # no status: passed as 1000
    (close_payload(1006), (1001, ""), (1001, "")),  # never sendable: as a vanished client
    (close_payload(5000), (1001, ""), (1001, "")),  # outside the codes that may be sent
]


@pytest.mark.parametrize("payload, to_sandbox, to_client", CLIENT_CLOSES, ids=["4002", "empty", "1006", "5000"])
async def test_a_close_from_the_client_reaches_the_sandbox_and_both_connections_end(
        relay, payload, to_sandbox, to_client):
    client, sandbox = relay
    client.send(CLOSE, payload)
    client.send(TEXT, b"after the close")  # never passed on
    await assert_closed_with(sandbox, *to_sandbox)
    assert await sandbox.ended()
    await assert_closed_with(client, *to_client)
    assert await client.ended()


SANDBOX_CLOSES = [
    # What the sandbox closes with -> what the client and the sandbox get.
    (close_payload(4001, b"bye"), (4001, "bye")),
    (b"", (1000, "")),
    (close_payload(1006), (1011, "")),  # never sendable: as a vanished sandbox
    (close_payload(5000), (1011, "")),
]


@pytest.mark.parametrize("payload, to_both", SANDBOX_CLOSES, ids=["4001", "empty", "1006", "5000"])
async def test_a_close_from_the_sandbox_reaches_the_client_which_may_answer(relay, payload, to_both):
    client, sandbox = relay
    sandbox.send(CLOSE, payload)
    await assert_closed_with(sandbox, *to_both)
    assert await sandbox.ended()
    await assert_closed_with(client, *to_both)
    assert not await client.ended(timeout=0.3)  # the gateway waits for the client's answer
    client.send(CLOSE, close_payload(to_both[0]))
    assert await client.ended()


async def test_a_client_that_never_answers_a_close_is_cut_off_after_the_close_timeout(relay):
    client, sandbox = relay
    sandbox.send(CLOSE, close_payload(4001))
    await assert_closed_with(client, 4001)
    client.send(TEXT, b"still talking")  # dropped: the sandbox is gone
    assert await client.ended(timeout=15)


async def test_vanishing_peers_are_1001_to_the_sandbox_and_1011_to_the_client(gateway_factory, raw_sandbox):
    gateway = await gateway_factory()
    sandbox, name, token = raw_sandbox
    await gateway.wait_sandbox(name)
    target = f"/sandbox/{name}/port/{sandbox.port}/ws"
    client = await client_handshake(gateway.port, target, [f"X-Access-Token: {token}"])
    upstream = await sandbox.accepted()
    client.writer.transport.abort()
    await assert_closed_with(upstream, 1001)
    assert await upstream.ended()
    client = await client_handshake(gateway.port, target, [f"X-Access-Token: {token}"])
    upstream = await sandbox.accepted()
    upstream.writer.write_eof()
    await assert_closed_with(client, 1011)
    client.close()


BROKEN_FRAMES = {
    "reserved bit": lambda masked: frame(TEXT, b"x", rsv=4, masked=masked),
    "unknown opcode": lambda masked: frame(3, b"x", masked=masked),
    "fragmented ping": lambda masked: frame(PING, b"x", fin=False, masked=masked),
    "ping of 126 bytes": lambda masked: frame(PING, b"x" * 126, masked=masked),
    "continuation first": lambda masked: frame(CONTINUATION, b"x", masked=masked),
    "new message inside a fragmented one": lambda masked: frame(TEXT, b"a", fin=False, masked=masked) + frame(
        TEXT, b"b", masked=masked),
    "close with one byte": lambda masked: frame(CLOSE, b"\x03", masked=masked),
    "close with code 1005": lambda masked: frame(CLOSE, close_payload(1005), masked=masked),
    "close with code 999": lambda masked: frame(CLOSE, close_payload(999), masked=masked),
}


@pytest.mark.parametrize("side", ["client", "sandbox"])
@pytest.mark.parametrize("broken", BROKEN_FRAMES, ids=list(BROKEN_FRAMES))
async def test_protocol_errors_close_the_offender_with_1002(relay, broken, side):
    client, sandbox = relay
    offender, other = (client, sandbox) if side == "client" else (sandbox, client)
    offender.send_raw(BROKEN_FRAMES[broken](offender.masks))
    await assert_closed_with(offender, 1002)
    assert await offender.ended()
    # The sandbox hears of a broken client as of a vanished one, the client of the sandbox's error.
    assert await close_after_fragments(other, TEXT) == ((1001, "") if side == "client" else (1002, ""))


async def test_a_close_reason_that_is_not_utf8_is_1007(relay):
    client, sandbox = relay
    client.send(CLOSE, close_payload(4000, b"\xff\xfe"))
    await assert_closed_with(client, 1007)
    await assert_closed_with(sandbox, 1001)


@pytest.mark.parametrize("side", ["client", "sandbox"])
async def test_messages_of_the_size_limit_or_more_are_1009(gateway_factory, raw_sandbox, side):
    gateway = await gateway_factory(ws_max_message_size=MAX_MESSAGE)
    sandbox, name, token = raw_sandbox
    await gateway.wait_sandbox(name)
    target = f"/sandbox/{name}/port/{sandbox.port}/ws"
    for message in ([b"y" * (MAX_MESSAGE - 1)], [b"y" * MAX_MESSAGE], [b"y" * 600, b"y" * 600]):
        client = await client_handshake(gateway.port, target, [f"X-Access-Token: {token}"])
        upstream = await sandbox.accepted()
        sender, receiver = (client, upstream) if side == "client" else (upstream, client)
        for i, fragment in enumerate(message):
            sender.send(BINARY if i == 0 else CONTINUATION, fragment, fin=i == len(message) - 1)
        if len(message) == 1 and len(message[0]) < MAX_MESSAGE:
            assert (await receiver.recv()).payload == message[0]
        else:
            await assert_closed_with(sender, 1009)
            assert await sender.ended()
            assert await close_after_fragments(receiver, BINARY) == ((1001, "") if side == "client" else (1009, ""))
        client.close()
        upstream.close()


async def test_pings_do_not_keep_an_idle_websocket_open(gateway_factory, raw_sandbox):
    gateway = await gateway_factory(ws_idle_timeout=1.0)
    sandbox, name, token = raw_sandbox
    await gateway.wait_sandbox(name)
    client = await client_handshake(gateway.port, f"/sandbox/{name}/port/{sandbox.port}/ws",
                                    [f"X-Access-Token: {token}"])
    upstream = await sandbox.accepted()
    for _unused in range(4):
        client.send(PING, b"alive?")
        assert (await client.recv()).opcode == PONG
        await asyncio.sleep(0.1)
    await assert_closed_with(client, 1001, "idle timeout")
    await assert_closed_with(upstream, 1001, "idle timeout")


async def test_gateway_shutdown_closes_websockets_with_1001(gateway_factory, raw_sandbox):
    gateway = await gateway_factory()
    sandbox, name, token = raw_sandbox
    await gateway.wait_sandbox(name)
    client = await client_handshake(gateway.port, f"/sandbox/{name}/port/{sandbox.port}/ws",
                                    [f"X-Access-Token: {token}"])
    upstream = await sandbox.accepted()
    stopping = asyncio.create_task(gateway.stop())
    await assert_closed_with(upstream, 1001, "gateway shutting down")
    await assert_closed_with(client, 1001, "gateway shutting down")
    client.send(CLOSE, close_payload(1001))
    assert await client.ended()
    await stopping


async def test_the_upgrade_request_the_sandbox_gets(gateway_factory, raw_sandbox):
    gateway = await gateway_factory()
    sandbox, name, token = raw_sandbox
    await gateway.wait_sandbox(name)
    client = await client_handshake(
        gateway.port, f"/sandbox/{name}/port/{sandbox.port}/ws?a=1&access_token={token}",
        ["Sec-WebSocket-Protocol: chat.v1, chat.v2", "Sec-WebSocket-Extensions: permessage-deflate",
         "Cookie: x=1; liteboxd_access_token=zz", "User-Agent: UA/1", "X-Custom: a", "X-Custom: b"])
    await sandbox.accepted()
    head = sandbox.heads[0].split("\r\n")
    assert head[:2] == ["GET /ws?a=1 HTTP/1.1", f"Host: {sandbox.host}:{sandbox.port}"]
    assert head[2:6] == ["User-Agent: UA/1", "X-Custom: a", "X-Custom: b", "Cookie: x=1"]
    assert head[6].startswith("X-Forwarded-For: ") and any(line.startswith("X-Request-Id: ") for line in head)
    assert head[-7:-4] == ["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13"]
    assert head[-4].startswith("Sec-WebSocket-Key: ")
    assert head[-3:] == ["Sec-WebSocket-Protocol: chat.v1,chat.v2", "", ""]
    assert not any(line.lower().startswith("sec-websocket-extensions") for line in head)
    client.close()


ANSWERS = {
    "wrong accept": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: bm90IHRoZSBhY2NlcHQ=\r\n\r\n",
    "no upgrade field": b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n",
    "not 101": b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n",
    "closed": b"",
    "malformed": b"HTTP/1.1 1O1 Switching\r\n\r\n",
}


@pytest.mark.parametrize("answer", ANSWERS, ids=list(ANSWERS))
async def test_a_sandbox_that_does_not_accept_properly_is_502(gateway_factory, pods, http, answer):
    gateway = await gateway_factory()

    async def answer_badly(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(ANSWERS[answer])
        writer.close()

    server = await asyncio.start_server(answer_badly, next_loopback(), 0)
    host, port = server.sockets[0].getsockname()[:2]
    name, token = f"bad-{secrets.token_hex(3)}", secrets.token_urlsafe(12)
    await pods.create(name, token=token, ip=host)
    await gateway.wait_sandbox(name)
    async with http.get(f"{gateway.url}/sandbox/{name}/port/{port}/ws", headers={
            "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "X-Access-Token": token}) as response:
        assert response.status == 502
        error = (await response.json())["error"]
    expected = {"wrong accept": "(HTTP 101)", "no upgrade field": "(HTTP 101)", "not 101": "(HTTP 426)"}
    assert error.endswith(expected.get(answer, "")) and error.startswith("sandbox "), error
    server.close()
