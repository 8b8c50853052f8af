"""The callback-driven HTTP path: answers given at once, one upstream parser per connection, access lines."""
import asyncio
import json

from liteboxd_gateway import logs

from tests.gateway.test_hostile import raw_exchange
from tests.gateway.test_http1 import split_responses


async def test_a_long_pipelined_burst_is_answered_in_order(gateway_factory, sandbox_factory):
    # Answers the gateway gives at once follow one another in a loop, never by recursion, and
    # stay in order with the ones that wait for the sandbox.
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    count = 3000
    requests = []
    for i in range(count):
        if i % 500 == 250:
            requests.append(f"GET {sandbox.path(f'/n{i}')} HTTP/1.1\r\nHost: x\r\nX-Access-Token: {sandbox.token}\r\n\r\n")
        else:
            requests.append(f"GET /status.ok?{i} HTTP/1.1\r\nHost: x\r\n\r\n")
    requests.append("GET /status.ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    responses = split_responses(await raw_exchange(gateway.port, "".join(requests).encode()))
    assert len(responses) == count + 1
    assert all(status == 200 for status, _headers, _body in responses)
    for i in range(250, count, 500):
        assert json.loads(responses[i][2])["raw_path"] == f"/n{i}"
    assert responses[0][2].startswith(b"ok ")


async def test_one_upstream_connection_carries_answers_of_every_framing(gateway_factory, sandbox_factory):
    # The sandbox-side parser is kept from one response to the next on a keep-alive connection.
    gateway = await gateway_factory(upstream_idle_timeout=30)
    sandbox = await sandbox_factory()
    token = f"X-Access-Token: {sandbox.token}\r\n"
    requests = [
        f"GET {sandbox.path('/large/5000')} HTTP/1.1\r\nHost: x\r\n{token}\r\n",
        f"GET {sandbox.path('/chunked')} HTTP/1.1\r\nHost: x\r\n{token}\r\n",
        f"GET {sandbox.path('/status/404')} HTTP/1.1\r\nHost: x\r\n{token}\r\n",
        f"POST {sandbox.path('/digest')} HTTP/1.1\r\nHost: x\r\n{token}Content-Length: 5\r\n\r\nhello",
        f"GET {sandbox.path('/large/300000')} HTTP/1.1\r\nHost: x\r\n{token}\r\n",
        f"GET {sandbox.path('/echo')} HTTP/1.1\r\nHost: x\r\n{token}Connection: close\r\n\r\n",
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        for request in requests:  # one at a time, so each reuses the connection the last one left
            writer.write(request.encode())
            await writer.drain()
            await asyncio.sleep(0.05)
        data = await asyncio.wait_for(reader.read(-1), 30)
    finally:
        writer.close()
    responses = split_responses(data)
    assert [status for status, _headers, _body in responses] == [200, 200, 404, 200, 200, 200]
    assert len(responses[0][2]) == 5000 and len(responses[4][2]) == 300000
    assert responses[1][2] == b"".join(f"chunk-{i};".encode() for i in range(100))
    assert json.loads(responses[3][2])["size"] == 5
    assert json.loads(responses[5][2])["raw_path"] == "/echo"
    assert len(sandbox.upstream.peers) == 6 and len(set(sandbox.upstream.peers)) == 1


def test_access_lines_are_the_json_of_their_record():
    formatter = logs.JsonFormatter()
    lines = [
        logs.AccessLine("id-1", "127.0.0.1", "GET", "path", "alice", '/p?q="\u00e9"\\', 200, 0.125, 1024, None),
        logs.AccessLine("id-2", None, "GET", "invalid", None, None, 400, 1.0, 0, "bad route \u2603"),
        logs.AccessLine("id-3", "::1", "POST", "header", "bob", "/\udcff", 502, 12.5, 0, "sandbox request failed"),
    ]
    for line in lines:
        record = logs.AccessRecord(line)
        text = formatter.format(record)
        expected = {"time": text[9:38], "level": "info", "logger": logs.ACCESS_LOGGER, "message": "request",
                    **record.fields}
        assert json.loads(text) == expected
        assert ("error" in record.fields) == (line.error is not None)
        # One line of ASCII whatever the target or error held: quotes, backslashes, non-ASCII escaped.
        assert text.isascii() and "\n" not in text
    # A plain tuple in the same order (what the gateway logs) is the same line.
    assert formatter.access_line(1.5, tuple(lines[0])) == formatter.access_line(1.5, lines[0])


async def test_a_client_that_stops_reading_holds_back_the_sandbox_then_gets_everything(gateway_factory, sandbox_factory):
    # The streamed answer pauses the upstream read while the client's buffer is full and resumes
    # it when drained; the upstream connection then serves the next request.
    gateway = await gateway_factory(upstream_idle_timeout=30)
    sandbox = await sandbox_factory()
    token = f"X-Access-Token: {sandbox.token}\r\n"
    size = 16 * 1024 * 1024
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(f"GET {sandbox.path(f'/large/{size}')} HTTP/1.1\r\nHost: x\r\n{token}\r\n".encode())
        await writer.drain()
        await asyncio.sleep(1)  # not reading: every buffer on the way fills up
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200") and f"Content-Length: {size}".encode() in head
        body = await asyncio.wait_for(reader.readexactly(size), 60)
        assert body == (bytes(range(256)) * 256 * (size // 65536))[:size]
        writer.write(f"GET {sandbox.path('/again')} HTTP/1.1\r\nHost: x\r\n{token}Connection: close\r\n\r\n".encode())
        await writer.drain()
        rest = await asyncio.wait_for(reader.read(-1), 30)
    finally:
        writer.close()
    assert rest.startswith(b"HTTP/1.1 200") and json.loads(rest.partition(b"\r\n\r\n")[2])["raw_path"] == "/again"
    assert len(sandbox.upstream.peers) == 2 and sandbox.upstream.peers[0] == sandbox.upstream.peers[1]
