"""Limits, metrics and the access log."""
import asyncio
import json
import logging

from multidict import CIMultiDict

from liteboxd_gateway.logs import JsonFormatter


async def test_concurrent_connection_limit_gives_429(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory(max_concurrent_per_sandbox=2)
    sandbox = await sandbox_factory()
    other = await sandbox_factory()
    token = {"X-Access-Token": sandbox.token}
    # Two SSE streams held open by the upstream occupy both slots.
    streams = [await http.get(gateway.url + sandbox.path("/sse"), headers=token) for _unused in range(2)]
    try:
        for stream in streams:
            assert await stream.content.readuntil(b"\n\n") == b"data: first\n\n"
        assert "liteboxd_gateway_active_requests 2" in gateway.gateway.metrics.render().splitlines()
        async with http.get(gateway.url + sandbox.path("/"), headers=token) as response:
            assert response.status == 429
        # The limit is per sandbox: another one is unaffected.
        async with http.get(gateway.url + other.path("/"), headers={"X-Access-Token": other.token}) as response:
            assert response.status == 200
        async with http.ws_connect(gateway.url.replace("http", "ws") + other.path("/ws"),
                                   headers={"X-Access-Token": other.token}):
            pass
    finally:
        sandbox.upstream.release_sse.set()
        for stream in streams:
            await stream.read()
            stream.release()
    async with http.get(gateway.url + sandbox.path("/"), headers=token) as response:
        assert response.status == 200
    assert gateway.gateway.limits.open_connections(sandbox.name) == 0
    assert "liteboxd_gateway_active_requests 0" in gateway.gateway.metrics.render().splitlines()


async def test_websockets_count_against_the_connection_limit(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory(max_concurrent_per_sandbox=1)
    sandbox = await sandbox_factory()
    token = {"X-Access-Token": sandbox.token}
    async with http.ws_connect(gateway.url.replace("http", "ws") + sandbox.path("/ws"), headers=token) as ws:
        await ws.send_str("hi")
        assert (await ws.receive()).data == "hi"
        async with http.get(gateway.url + sandbox.path("/"), headers=token) as response:
            assert response.status == 429


async def test_request_rate_limit_gives_429(gateway_factory, sandbox_factory, http):
    # A refill rate so low that no token comes back during the test: exactly `burst` pass.
    gateway = await gateway_factory(rate_per_sandbox=0.001, rate_burst=3)
    sandbox = await sandbox_factory()
    statuses = []
    for _unused in range(5):
        async with http.get(gateway.url + sandbox.path("/"), headers={"X-Access-Token": sandbox.token}) as r:
            statuses.append(r.status)
    assert statuses == [200, 200, 200, 429, 429]


async def test_metrics_are_served_on_their_own_port_without_sandbox_ids(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    async with http.get(gateway.url + sandbox.path("/"), headers={"X-Access-Token": sandbox.token}) as r:
        assert r.status == 200
    async with http.get(gateway.url + sandbox.path("/"), headers={"X-Access-Token": "bad"}) as r:
        assert r.status == 401
    async with http.get(gateway.url + "/metrics") as r:
        assert r.status == 404  # not on the proxy port
    expected = ['liteboxd_gateway_requests_total{form="path",code="200"} 1',
                'liteboxd_gateway_requests_total{form="path",code="401"} 1']
    # The handler records its metrics just after the last byte went out: read until both show.
    for _unused in range(100):
        async with http.get(f"http://127.0.0.1:{gateway.metrics_port}/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await r.text()
        if all(line in text for line in expected):
            break
        await asyncio.sleep(0.05)
    assert 'liteboxd_gateway_requests_total{form="path",code="200"} 1' in text
    assert 'liteboxd_gateway_requests_total{form="path",code="401"} 1' in text
    assert 'liteboxd_gateway_rejected_total{reason="unauthorized"} 1' in text
    assert 'liteboxd_gateway_request_duration_seconds_count{form="path"} 2' in text
    assert "liteboxd_gateway_cache_synced 1" in text
    assert "liteboxd_gateway_cache_sandboxes 1" in text
    assert sandbox.name not in text and sandbox.token not in text


async def test_access_log_is_json_with_request_id_and_never_a_token(gateway_factory, sandbox_factory, http, caplog):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    caplog.set_level(logging.INFO, logger="liteboxd_gateway")
    ws_base = gateway.url.replace("http", "ws")
    async with http.get(gateway.url + sandbox.path(f"/p?x=1&access_token={sandbox.token}"),
                        headers={"X-Access-Token": sandbox.token, "X-Request-Id": "req-123",
                                 "Cookie": f"liteboxd_access_token={sandbox.token}"}) as r:
        assert r.status == 200 and r.headers["X-Request-Id"] == "req-123"
    async with http.get(gateway.url + sandbox.path("/"), headers={"X-Access-Token": sandbox.token + "x"}) as r:
        assert r.status == 401
    async with http.ws_connect(ws_base + sandbox.path(f"/ws?access_token={sandbox.token}")) as ws:
        await ws.send_str("x")
        await ws.receive()
    for _unused in range(100):  # the last line is written just after the client saw the close
        records = [r for r in caplog.records if r.name == "liteboxd_gateway.access"]
        if len(records) >= 3:
            break
        await asyncio.sleep(0.05)
    assert len(records) >= 3
    lines = [JsonFormatter().format(record) for record in caplog.records]
    for line in lines:
        assert sandbox.token not in line
    entries = [json.loads(JsonFormatter().format(r)) for r in records]
    first = entries[0]
    assert first["request_id"] == "req-123"
    assert first["target"] == "/p?x=1"
    assert (first["status"], first["form"], first["sandbox"], first["method"]) == (200, "path", sandbox.name, "GET")
    assert entries[1]["status"] == 401 and len(entries[1]["request_id"]) == 24
    assert entries[2]["status"] == 101 and entries[2]["target"] == "/ws"


async def test_upstream_sees_the_request_id(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    async with http.get(gateway.url + sandbox.path("/"), headers={"X-Access-Token": sandbox.token}) as r:
        body = await r.json()
        assert CIMultiDict(body["headers"])["X-Request-Id"] == r.headers["X-Request-Id"]
    async with http.get(gateway.url + sandbox.path("/"), headers={"X-Access-Token": sandbox.token,
                                                                  "X-Request-Id": "bad id;<script>"}) as r:
        assert r.headers["X-Request-Id"] != "bad id;<script>"
