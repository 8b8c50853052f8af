"""WebSocket relay through the gateway to a real upstream WebSocket server."""
import asyncio

import aiohttp
import pytest

from tests.gateway.conftest import assert_echoes, ws_url


async def test_echo_text_and_binary_with_subprotocol_chosen_by_upstream(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    async with http.ws_connect(ws_url(gateway, sandbox), protocols=("chat.v3", "chat.v1"),
                               headers={"X-Access-Token": sandbox.token}) as ws:
        assert ws.protocol == "chat.v1"  # the one the upstream accepted, not the client's first
        await assert_echoes(ws)
    path, headers, protocol = sandbox.upstream.ws_seen[0]
    assert protocol == "chat.v1"
    assert "X-Access-Token" not in headers
    assert headers["X-Forwarded-For"] == "127.0.0.1"


async def test_no_subprotocol_when_upstream_picks_none(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    async with http.ws_connect(ws_url(gateway, sandbox, "/ws?protocols=none"), protocols=("chat.v1",),
                               headers={"X-Access-Token": sandbox.token}) as ws:
        assert ws.protocol is None
        await ws.send_str("x")
        assert (await ws.receive()).data == "x"


async def test_token_by_query_param_and_cookie_is_removed_before_forwarding(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    url = ws_url(gateway, sandbox, f"/ws?room=1&access_token={sandbox.token}")
    async with http.ws_connect(url) as ws:
        await ws.send_str("q")
        assert (await ws.receive()).data == "q"
    async with http.ws_connect(ws_url(gateway, sandbox),
                               headers={"Cookie": f"theme=dark; liteboxd_access_token={sandbox.token}"}) as ws:
        await ws.send_str("c")
        assert (await ws.receive()).data == "c"
    (path1, headers1, _unused), (path2, headers2, _unused) = sandbox.upstream.ws_seen
    assert path1 == "/ws?room=1"
    assert headers2["Cookie"] == "theme=dark"
    assert sandbox.token not in repr(sandbox.upstream.ws_seen)


async def test_websocket_without_or_with_wrong_token_is_401(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    for kwargs in ({}, {"headers": {"X-Access-Token": "nope"}}):
        with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
            await http.ws_connect(ws_url(gateway, sandbox), **kwargs)
        assert raised.value.status == 401
    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await http.ws_connect(ws_url(gateway, sandbox, "/ws?access_token=nope"))
    assert raised.value.status == 401
    assert sandbox.upstream.ws_seen == []


async def test_upstream_refusing_the_handshake_is_an_http_error_to_the_client(
        gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await http.ws_connect(ws_url(gateway, sandbox, "/ws-refuse"), headers={"X-Access-Token": sandbox.token})
    assert raised.value.status == 502


async def test_close_codes_pass_both_ways(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    token = {"X-Access-Token": sandbox.token}
    async with http.ws_connect(ws_url(gateway, sandbox), headers=token) as ws:
        await ws.send_str("close 4001")
        message = await ws.receive()
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert (message.data, message.extra) == (4001, "upstream says bye")
    async with http.ws_connect(ws_url(gateway, sandbox), headers=token) as ws:
        await ws.close(code=4002, message=b"client says bye")
    await gateway.wait_for(lambda: sandbox.upstream.ws_closed, "upstream saw the close")
    assert sandbox.upstream.ws_closed[0] == (4002, "client says bye")


async def test_upstream_vanishing_gives_the_client_1011_not_1006(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    async with http.ws_connect(ws_url(gateway, sandbox), headers={"X-Access-Token": sandbox.token}) as ws:
        await ws.send_str("abort now")
        message = await ws.receive()
        assert message.type == aiohttp.WSMsgType.CLOSE
        assert message.data == 1011


async def test_message_size_cap_closes_with_1009(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory(ws_max_message_size=1024)
    sandbox = await sandbox_factory()
    async with http.ws_connect(ws_url(gateway, sandbox), headers={"X-Access-Token": sandbox.token}) as ws:
        await ws.send_bytes(b"y" * 4096)
        message = await ws.receive()
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1009)
    async with http.ws_connect(ws_url(gateway, sandbox), headers={"X-Access-Token": sandbox.token}) as ws:
        await ws.send_str("big 4096")  # the upstream's message is over the cap too
        message = await ws.receive()
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1009)


async def test_idle_and_lifetime_limits_close_with_1001(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory(ws_idle_timeout=0.3)
    sandbox = await sandbox_factory()
    async with http.ws_connect(ws_url(gateway, sandbox), headers={"X-Access-Token": sandbox.token}) as ws:
        message = await ws.receive()
        assert (message.type, message.data, message.extra) == (aiohttp.WSMsgType.CLOSE, 1001, "idle timeout")
    await gateway.stop()
    gateway = await gateway_factory(ws_max_lifetime=0.5)
    async with http.ws_connect(ws_url(gateway, sandbox), headers={"X-Access-Token": sandbox.token}) as ws:
        messages = []
        while True:
            await ws.send_str("keep busy")
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            messages.append(message.data)
            await asyncio.sleep(0.05)
        assert (message.type, message.data, message.extra) == (aiohttp.WSMsgType.CLOSE, 1001, "lifetime exceeded")
        assert messages


async def test_connection_header_is_parsed_as_a_token_list(gateway_factory, sandbox_factory):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write((f"GET {sandbox.path('/ws')} HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\n"
                  f"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                  f"X-Access-Token: {sandbox.token}\r\n\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    assert head.startswith(b"HTTP/1.1 101")
    assert b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head
    writer.close()
