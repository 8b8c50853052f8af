"""The gateway's own HTTP/1.1 handling on both sides, over raw sockets where framing matters."""
import asyncio
import json

from tests.gateway.test_hostile import raw_exchange, status_of


def split_responses(data: bytes):
    """(status, headers, body) of each response in a byte stream framed by Content-Length or chunked."""
    responses = []
    while data:
        head, _unused, data = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {}
        for line in lines[1:]:
            name, _unused, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            size = int(headers["content-length"])
            body, data = data[:size], data[size:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size_line, _unused, data = data.partition(b"\r\n")
                size = int(size_line, 16)
                body, data = body + data[:size], data[size + 2:]
                if size == 0:
                    break
        else:
            body, data = data, b""
        responses.append((int(lines[0].split()[1]), headers, body))
    return responses


async def test_pipelined_requests_are_answered_in_order(gateway_factory, sandbox_factory):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    requests = b"".join(
        f"GET {sandbox.path(f'/n{i}')} HTTP/1.1\r\nHost: x\r\nX-Access-Token: {sandbox.token}\r\n"
        f"{'Connection: close' if i == 4 else 'X-N: ' + str(i)}\r\n\r\n".encode() for i in range(5))
    responses = split_responses(await raw_exchange(gateway.port, requests))
    assert [status for status, _unused, _body in responses] == [200] * 5
    assert [json.loads(body)["raw_path"] for _unused, _headers, body in responses] == [f"/n{i}" for i in range(5)]


async def test_http10_client_gets_an_answer_and_the_connection_closes(gateway_factory, sandbox_factory):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    data = f"GET {sandbox.path('/chunked')} HTTP/1.0\r\nX-Access-Token: {sandbox.token}\r\n\r\n".encode()
    response = await raw_exchange(gateway.port, data)  # reads until the gateway closes
    head, _unused, body = response.partition(b"\r\n\r\n")
    assert status_of(response) == 200
    assert b"transfer-encoding" not in head.lower()  # an HTTP/1.0 client cannot read chunks
    assert body == b"".join(f"chunk-{i};".encode() for i in range(100))


async def test_expect_100_continue_is_answered_by_the_gateway(gateway_factory, sandbox_factory):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(f"POST {sandbox.path('/digest')} HTTP/1.1\r\nHost: x\r\nX-Access-Token: {sandbox.token}\r\n"
                     "Content-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30) == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"hello")
        response = await asyncio.wait_for(reader.read(-1), 30)
    finally:
        writer.close()
    assert status_of(response) == 200
    assert json.loads(response.partition(b"\r\n\r\n")[2])["size"] == 5
    assert "expect" not in {name.lower() for name in sandbox.upstream.seen[0][2]}


async def test_other_upgrades_are_plain_requests_without_the_upgrade(gateway_factory, sandbox_factory):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    data = (f"GET {sandbox.path('/h2c')} HTTP/1.1\r\nHost: x\r\nX-Access-Token: {sandbox.token}\r\n"
            "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n").encode()
    response = await raw_exchange(gateway.port, data)
    assert status_of(response) == 200
    sent = {name.lower() for name in sandbox.upstream.seen[0][2]}
    assert not sent & {"upgrade", "http2-settings"}


async def test_client_leaving_mid_response_does_not_return_the_upstream_connection(
        gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory(upstream_idle_timeout=30)
    sandbox = await sandbox_factory()
    token = f"X-Access-Token: {sandbox.token}"
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(f"GET {sandbox.path('/large/104857600')} HTTP/1.1\r\nHost: x\r\n{token}\r\n\r\n".encode())
    await writer.drain()
    await asyncio.wait_for(reader.readexactly(65536), 30)
    writer.transport.abort()
    for _unused in range(100):
        if not gateway.gateway.proxy.held_writes.active:
            break
        await asyncio.sleep(0.05)
    response = await raw_exchange(gateway.port, f"GET {sandbox.path('/')} HTTP/1.1\r\nHost: x\r\n{token}\r\n"
                                                f"Connection: close\r\n\r\n".encode())
    assert status_of(response) == 200
    assert sandbox.upstream.peers[0] != sandbox.upstream.peers[1]  # a fresh upstream connection


async def test_idle_upstream_connections_expire(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory(upstream_idle_timeout=0.3)
    sandbox = await sandbox_factory()
    for pause in (0, 0.6):
        await asyncio.sleep(pause)
        async with http.get(gateway.url + sandbox.path("/"), headers={"X-Access-Token": sandbox.token}) as r:
            assert r.status == 200
    assert sandbox.upstream.peers[0] != sandbox.upstream.peers[1]
