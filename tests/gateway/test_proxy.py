"""HTTP proxying against real upstream servers and sandbox Pods in a real API server."""
import asyncio
import hashlib
import json
import os
import socket

import aiohttp
import pytest

from tests.gateway.conftest import next_loopback
from tests.lib.apiserver import free_port


async def get_json(http, url, **kwargs):
    async with http.get(url, **kwargs) as response:
        return response.status, await response.json(content_type=None), response.headers


async def test_path_form_forwards_path_query_and_encoding_untouched(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    url = gateway.url + sandbox.path("/a%2Fb/c%20d/%E2%9C%93?q=a%26b&x=%2F&empty=")
    status, body, headers = await get_json(http, aiohttp.client.URL(url, encoded=True),
                                           headers={"X-Access-Token": sandbox.token})
    assert status == 200
    assert body["name"] == sandbox.name
    assert body["raw_path"] == "/a%2Fb/c%20d/%E2%9C%93?q=a%26b&x=%2F&empty="
    assert headers["X-Upstream"] == sandbox.name
    assert headers["X-Request-Id"]


async def test_path_form_without_trailing_path_reaches_root(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    for suffix, expected in (("", "/"), ("/", "/"), ("?x=1", "/?x=1")):
        url = aiohttp.client.URL(f"{gateway.url}/sandbox/{sandbox.name}/port/{sandbox.port}{suffix}", encoded=True)
        status, body, _unused = await get_json(http, url, headers={"X-Access-Token": sandbox.token})
        assert (status, body["raw_path"]) == (200, expected)


async def test_header_forms_and_host_form_route_with_token(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory(domain="sandbox.test")
    sandbox = await sandbox_factory()
    target = f"{sandbox.name}-{sandbox.port}"
    forms = [
        {"OpenSandbox-Ingress-To": target},
        {"OPEN-SANDBOX-INGRESS": target},
        {"Host": f"{target}.sandbox.test"},
        {"Host": f"{target}.SANDBOX.test:8443"},
    ]
    for form in forms:
        headers = dict(form, **{"X-Access-Token": sandbox.token})
        status, body, _unused = await get_json(http, gateway.url + "/some/path?x=1", headers=headers)
        assert status == 200, form
        assert body["raw_path"] == "/some/path?x=1"
        sent = {k.lower() for k, _unused in body["headers"]}
        assert not sent & {"opensandbox-ingress-to", "open-sandbox-ingress", "x-access-token"}
        # without the token: 401
        async with http.get(gateway.url + "/some/path", headers=form) as response:
            assert response.status == 401


async def test_hashed_token_is_accepted_and_the_hash_itself_is_not(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory(hashed=True)
    async with http.get(gateway.url + sandbox.path("/"), headers={"X-Access-Token": sandbox.token}) as response:
        assert response.status == 200
    digest = hashlib.sha256(sandbox.token.encode()).hexdigest()
    async with http.get(gateway.url + sandbox.path("/"), headers={"X-Access-Token": digest}) as response:
        assert response.status == 401


async def test_missing_and_wrong_token_get_the_same_401(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    bodies = []
    for headers in ({}, {"X-Access-Token": "wrong"}, {"X-Access-Token": sandbox.token + "x"},
                    {"X-Access-Token": ""}):
        async with http.get(gateway.url + sandbox.path("/"), headers=headers) as response:
            assert response.status == 401
            bodies.append(await response.read())
    assert len(set(bodies)) == 1
    assert json.loads(bodies[0]) == {"error": "unauthorized"}
    assert sandbox.upstream.seen == []


async def test_two_token_headers_are_refused(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    headers = aiohttp.client.CIMultiDict([("X-Access-Token", sandbox.token), ("X-Access-Token", "other")])
    async with http.get(gateway.url + sandbox.path("/"), headers=headers) as response:
        assert response.status == 401


async def test_query_and_cookie_tokens_do_not_open_plain_http_and_are_removed(
        gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    url = gateway.url + sandbox.path(f"/x?access_token={sandbox.token}")
    async with http.get(url) as response:
        assert response.status == 401
    async with http.get(url, headers={"Cookie": f"liteboxd_access_token={sandbox.token}"}) as response:
        assert response.status == 401
    url = gateway.url + sandbox.path(f"/x?a=1&access_token={sandbox.token}&b=%2F")
    headers = {"X-Access-Token": sandbox.token, "Cookie": f"keep=1; liteboxd_access_token={sandbox.token}"}
    status, body, _unused = await get_json(http, aiohttp.client.URL(url, encoded=True), headers=headers)
    assert status == 200
    assert body["raw_path"] == "/x?a=1&b=%2F"
    assert dict(body["headers"])["Cookie"] == "keep=1"
    assert sandbox.token not in json.dumps(body)


async def test_unknown_sandbox_404_and_gateway_paths(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    async with http.get(gateway.url + "/sandbox/nobody/port/80/", headers={"X-Access-Token": "x"}) as response:
        assert response.status == 404
    async with http.get(gateway.url + "/", headers={"X-Access-Token": "x"}) as response:
        assert response.status == 404
    async with http.get(gateway.url + "/status.ok") as response:
        assert response.status == 200
        assert (await response.text()).startswith("ok ")
    async with http.get(gateway.url + "/readyz") as response:
        assert response.status == 200


async def test_port_outside_allowed_range_is_403(gateway_factory, sandbox_factory, http):
    sandbox = await sandbox_factory()
    gateway = await gateway_factory(allowed_ports=__import__("liteboxd_gateway.config").config.PortRanges.parse("1-1023"))
    async with http.get(gateway.url + sandbox.path("/"), headers={"X-Access-Token": sandbox.token}) as response:
        assert response.status == 403
    assert sandbox.upstream.seen == []


async def test_not_ready_sandbox_is_503(gateway_factory, sandbox_factory, pods, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory(ready=False)
    await gateway.wait_for(lambda: gateway.gateway.cache.get(sandbox.name) is not None, "pod listed")
    async with http.get(gateway.url + sandbox.path("/"), headers={"X-Access-Token": sandbox.token}) as response:
        assert response.status == 503
    # no IP at all
    await pods.create("no-ip", token="t0k3n")
    await gateway.wait_for(lambda: gateway.gateway.cache.get("no-ip") is not None, "pod without IP listed")
    async with http.get(gateway.url + "/sandbox/no-ip/port/80/", headers={"X-Access-Token": "t0k3n"}) as response:
        assert response.status == 503


async def test_hop_by_hop_headers_removed_both_ways_and_forwarded_headers_set(
        gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    headers = {"X-Access-Token": sandbox.token, "Connection": "keep-alive, X-Private", "X-Private": "p",
               "Keep-Alive": "timeout=1", "TE": "trailers", "Proxy-Authorization": "Basic eA==",
               "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https",
               "X-Forwarded-Prefix": "/evil", "Host": "front.example:8080", "X-Custom": "kept"}
    status, body, response_headers = await get_json(http, gateway.url + sandbox.path("/h"), headers=headers)
    assert status == 200
    sent = {k.lower(): v for k, v in body["headers"]}
    for name in ("x-private", "keep-alive", "te", "proxy-authorization"):
        assert name not in sent
    assert sent["x-custom"] == "kept"
    assert sent["x-forwarded-for"] == "127.0.0.1"
    assert sent["x-forwarded-host"] == "front.example:8080"
    assert sent["x-forwarded-proto"] == "http"
    assert sent["x-forwarded-prefix"] == f"/sandbox/{sandbox.name}/port/{sandbox.port}"
    assert sent["host"] == f"{sandbox.upstream.host}:{sandbox.port}"
    assert "X-Hop" not in response_headers and "Keep-Alive" not in response_headers
    assert response_headers.getall("Set-Cookie") == ["a=1"]


async def test_trusted_forwarded_headers_are_appended(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory(trust_forwarded_headers=True)
    sandbox = await sandbox_factory()
    headers = {"X-Access-Token": sandbox.token, "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    status, body, _unused = await get_json(http, gateway.url + sandbox.path("/"), headers=headers)
    sent = {k.lower(): v for k, v in body["headers"]}
    assert sent["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
    assert sent["x-forwarded-proto"] == "https"


async def test_sse_events_arrive_as_sent(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    async with http.get(gateway.url + sandbox.path("/sse"), headers={"X-Access-Token": sandbox.token}) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        # The upstream holds the second event until the first has arrived here: only streaming passes.
        first = await asyncio.wait_for(response.content.readuntil(b"\n\n"), 30)
        assert first == b"data: first\n\n"
        sandbox.upstream.release_sse.set()
        assert await response.content.read() == b"data: second\n\n"


async def test_chunked_and_large_responses_stream_through(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    token = {"X-Access-Token": sandbox.token}
    async with http.get(gateway.url + sandbox.path("/chunked?hold"), headers=token) as response:
        assert response.headers.get("Transfer-Encoding") == "chunked"
        sandbox.upstream.release_chunked.set()
        assert await response.read() == b"".join(f"chunk-{i};".encode() for i in range(100))
    size = 48 * 1024 * 1024 + 123
    async with http.get(gateway.url + sandbox.path(f"/large/{size}"), headers=token) as response:
        assert response.headers["Content-Length"] == str(size)
        digest, total = hashlib.sha256(), 0
        async for chunk in response.content.iter_any():
            digest.update(chunk)
            total += len(chunk)
    expected = hashlib.sha256((bytes(range(256)) * 256 * (size // 65536 + 1))[:size]).hexdigest()
    assert (total, digest.hexdigest()) == (size, expected)


async def test_large_request_bodies_stream_up_with_and_without_length(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    payload = os.urandom(32 * 1024 * 1024)
    url = gateway.url + sandbox.path("/digest")
    async with http.post(url, data=payload, headers={"X-Access-Token": sandbox.token}) as response:
        result = await response.json()
    assert result == {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload), "chunked": None}

    async def pieces():
        for offset in range(0, len(payload), 1 << 20):
            yield payload[offset:offset + (1 << 20)]

    async with http.post(url, data=pieces(), headers={"X-Access-Token": sandbox.token}) as response:
        result = await response.json()
    assert result == {"sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload), "chunked": "chunked"}


async def test_upstream_statuses_pass_through(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    for code in (201, 204, 302, 404, 500, 503):
        async with http.get(gateway.url + sandbox.path(f"/status/{code}"), allow_redirects=False,
                            headers={"X-Access-Token": sandbox.token}) as response:
            assert response.status == code
    async with http.head(gateway.url + sandbox.path("/large/1000"), headers={"X-Access-Token": sandbox.token}) as r:
        assert r.status == 200 and r.headers["Content-Length"] == "1000"


async def test_upstream_keep_alive_connection_is_reused(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory(upstream_idle_timeout=30)
    sandbox = await sandbox_factory()
    for _unused in range(5):
        async with http.get(gateway.url + sandbox.path("/"), headers={"X-Access-Token": sandbox.token}) as r:
            assert r.status == 200
    assert len(set(sandbox.upstream.peers)) == 1


async def test_refused_connection_is_502_after_retries(gateway_factory, pods, http):
    gateway = await gateway_factory(upstream_connect_retries=2)
    port = free_port()  # nothing listens there
    await pods.create("refused", token="tok", ip="127.0.0.1")
    await gateway.wait_sandbox("refused")
    async with http.get(f"{gateway.url}/sandbox/refused/port/{port}/", headers={"X-Access-Token": "tok"}) as r:
        assert r.status == 502
    text = gateway.gateway.metrics.render()
    assert "liteboxd_gateway_upstream_connect_retries_total 2" in text


async def test_upstream_that_breaks_protocol_is_502_and_request_is_not_retried(gateway_factory, pods, http):
    gateway = await gateway_factory(upstream_connect_retries=3)
    host = next_loopback()
    seen = []

    async def garbage(reader, writer):
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, host, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await pods.create("garbage", token="tok", ip=host)
        await gateway.wait_sandbox("garbage")
        async with http.post(f"{gateway.url}/sandbox/garbage/port/{port}/", data=b"once",
                             headers={"X-Access-Token": "tok"}) as r:
            assert r.status == 502
        assert len(seen) == 1
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("kind", ["http", "websocket"])
async def test_connect_timeout_is_504(gateway_factory, pods, http, kind):
    gateway = await gateway_factory(upstream_connect_timeout=0.5, upstream_connect_retries=0)
    host = next_loopback()
    # A listener that never accepts, with its backlog filled: new SYNs are dropped, connect hangs.
    listener = socket.socket()
    listener.bind((host, 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _unused in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex((host, port))
            fillers.append(filler)
        await asyncio.sleep(0.2)
        await pods.create("blackhole", token="tok", ip=host)
        await gateway.wait_sandbox("blackhole")
        url = f"{gateway.url}/sandbox/blackhole/port/{port}/"
        if kind == "http":
            async with http.get(url, headers={"X-Access-Token": "tok"}) as r:
                assert r.status == 504
        else:
            # The configured 0.5 s bounds the handshake's connect, not aiohttp's default of 30 s.
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                async with asyncio.timeout(20):
                    await http.ws_connect(url, headers={"X-Access-Token": "tok"})
            assert refused.value.status == 504
    finally:
        for sock in fillers + [listener]:
            sock.close()


async def test_upstream_breaking_mid_body_cuts_the_client_connection(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    async with http.get(gateway.url + sandbox.path("/break"), headers={"X-Access-Token": sandbox.token}) as r:
        assert r.status == 200
        try:
            await r.read()
        except aiohttp.ClientPayloadError:
            pass
        else:
            raise AssertionError("a truncated upstream body was delivered as complete")


async def test_no_time_to_first_byte_limit_by_default(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    async with http.get(gateway.url + sandbox.path("/slow?seconds=1.5"),
                        headers={"X-Access-Token": sandbox.token}) as r:
        assert (r.status, await r.text()) == (200, "slow done")


async def test_upstream_read_timeout_when_configured_is_504(gateway_factory, sandbox_factory, http):
    gateway = await gateway_factory(upstream_read_timeout=0.3)
    sandbox = await sandbox_factory()
    async with http.get(gateway.url + sandbox.path("/slow?seconds=3"),
                        headers={"X-Access-Token": sandbox.token}) as r:
        assert r.status == 504
