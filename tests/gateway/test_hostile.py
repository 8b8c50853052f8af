"""Hostile input: every attempt must end at the gateway, never at another sandbox or its own paths.

Requests go over raw sockets so nothing normalises them on the way.
"""
import asyncio

import pytest


async def raw_exchange(port, data: bytes, read_until_close=True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if read_until_close:
            return await asyncio.wait_for(reader.read(-1), 30)
        return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    finally:
        writer.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def request(target, headers=(), body=b"") -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: gw.example", "Connection: close", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
async def two_sandboxes(gateway_factory, sandbox_factory):
    gateway = await gateway_factory(domain="sandbox.test")
    alice = await sandbox_factory("alice")
    bob = await sandbox_factory("bob")
    return gateway, alice, bob


TRAVERSALS = [
    "/sandbox/alice/port/{a}/../../bob/port/{b}/",
    "/sandbox/alice/port/{a}/%2e%2e/%2e%2e/bob/port/{b}/",
    "/sandbox/alice/port/{a}/%2E%2E/%2e./.%2e/bob/port/{b}/",
    "/sandbox/alice/port/{a}/..%2f..%2fbob%2fport%2f{b}%2f",
    "/sandbox/alice/port/{a}/..%2F..%2F..%2Fstatus.ok",
    "/sandbox/alice/port/{a}/..\\..\\bob",
    "/sandbox/alice/port/{a}/./x",
    "/sandbox/alice%2f..%2fbob/port/{b}/",
    "/sandbox/alice/port/{a}%2f..%2f..%2fbob%2fport%2f{b}/",
    "/sandbox/../sandbox/bob/port/{b}/",
    "/sandbox/alice/port/{a}/../../../readyz",
    "//sandbox/bob/port/{b}/",
]


@pytest.mark.parametrize("template", TRAVERSALS)
async def test_path_traversal_never_reaches_another_sandbox_or_gateway_paths(two_sandboxes, template):
    gateway, alice, bob = two_sandboxes
    target = template.format(a=alice.port, b=bob.port)
    response = await raw_exchange(gateway.port, request(target, [f"X-Access-Token: {alice.token}"]))
    assert status_of(response) in (400, 404), response[:200]
    assert not response.endswith(b"ready\n") and b"ok 0." not in response
    assert alice.upstream.seen == [] and bob.upstream.seen == []


async def test_gateway_paths_behind_routing_go_to_the_sandbox_not_the_gateway(two_sandboxes):
    gateway, alice, _unused = two_sandboxes
    for path in ("/readyz", "/status.ok"):
        response = await raw_exchange(gateway.port, request(
            path, [f"OpenSandbox-Ingress-To: alice-{alice.port}", f"X-Access-Token: {alice.token}"]))
        assert status_of(response) == 200
        assert b'"name": "alice"' in response
    assert [seen[1] for seen in alice.upstream.seen] == ["/readyz", "/status.ok"]


async def test_absolute_form_target_is_refused(two_sandboxes):
    gateway, alice, bob = two_sandboxes
    target = f"http://{bob.upstream.host}:{bob.port}/"
    response = await raw_exchange(gateway.port, request(
        target, [f"OpenSandbox-Ingress-To: alice-{alice.port}", f"X-Access-Token: {alice.token}"]))
    assert status_of(response) == 400
    assert alice.upstream.seen == [] and bob.upstream.seen == []


@pytest.mark.parametrize("headers", [
    ["OpenSandbox-Ingress-To: alice-{a}", "OPEN-SANDBOX-INGRESS: bob-{b}"],
    ["OpenSandbox-Ingress-To: alice-{a}", "OpenSandbox-Ingress-To: bob-{b}"],
    ["OpenSandbox-Ingress-To: alice-{a}, bob-{b}"],
    ["OpenSandbox-Ingress-To: alice-{a}", "Host: bob-{b}.sandbox.test"],
])
async def test_conflicting_routing_headers_are_refused(two_sandboxes, headers):
    gateway, alice, bob = two_sandboxes
    lines = [h.format(a=alice.port, b=bob.port) for h in headers] + [f"X-Access-Token: {alice.token}"]
    data = ("\r\n".join(["GET / HTTP/1.1", "Connection: close", *lines]) + "\r\n\r\n").encode()
    if not any(h.startswith("Host:") for h in lines):
        data = data.replace(b"GET / HTTP/1.1\r\n", b"GET / HTTP/1.1\r\nHost: gw.example\r\n")
    response = await raw_exchange(gateway.port, data)
    assert status_of(response) == 400
    assert alice.upstream.seen == [] and bob.upstream.seen == []


async def test_two_host_headers_are_refused(two_sandboxes):
    gateway, alice, bob = two_sandboxes
    data = (f"GET / HTTP/1.1\r\nHost: alice-{alice.port}.sandbox.test\r\nHost: bob-{bob.port}.sandbox.test\r\n"
            f"X-Access-Token: {alice.token}\r\nConnection: close\r\n\r\n").encode()
    response = await raw_exchange(gateway.port, data)
    assert status_of(response) == 400
    assert alice.upstream.seen == [] and bob.upstream.seen == []


SMUGGLING = [
    # CL.TE: a front end using Content-Length would pass the rest as the start of another request
    "Content-Length: {n}\r\nTransfer-Encoding: chunked",
    "Transfer-Encoding: chunked\r\nContent-Length: {n}",
    # TE.TE obfuscations
    "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
    "Transfer-Encoding: xchunked",
    "Transfer-Encoding: chunked, identity",
    "Transfer-Encoding : chunked",
    "Transfer-Encoding:\tchunked\r\n Content-Length: {n}",
    # CL.CL
    "Content-Length: {n}\r\nContent-Length: 3",
    "Content-Length: +{n}",
    "Content-Length: 0x10",
]


@pytest.mark.parametrize("framing", SMUGGLING)
async def test_request_smuggling_is_refused_and_nothing_is_smuggled(two_sandboxes, framing):
    gateway, alice, bob = two_sandboxes
    smuggled = f"GET /sandbox/bob/port/{bob.port}/smuggled HTTP/1.1\r\nHost: x\r\nX-Access-Token: {bob.token}\r\n\r\n"
    body = "0\r\n\r\n" + smuggled
    data = (f"POST {alice.path('/digest')} HTTP/1.1\r\nHost: gw.example\r\nX-Access-Token: {alice.token}\r\n"
            f"{framing.format(n=len(body))}\r\n\r\n{body}").encode()
    response = await raw_exchange(gateway.port, data)
    assert status_of(response) in (400, 501), response[:300]
    assert response.count(b"HTTP/1.") == 1  # one answer: nothing was read as a second request
    assert alice.upstream.seen == [] and bob.upstream.seen == []


async def test_oversized_headers_and_request_line_are_refused(gateway_factory, sandbox_factory):
    gateway = await gateway_factory(max_header_size=4096, max_headers=20)
    alice = await sandbox_factory("alice")
    token = f"X-Access-Token: {alice.token}"
    cases = [
        request(alice.path("/"), [token, "X-Big: " + "a" * 5000]),
        request(alice.path("/") + "?" + "q" * 5000, [token]),
        request(alice.path("/"), [token] + [f"X-Many-{i}: v" for i in range(30)]),
    ]
    for data in cases:
        response = await raw_exchange(gateway.port, data)
        assert status_of(response) in (400, 414, 431), response[:200]
    assert alice.upstream.seen == []


async def test_host_spoofing_does_not_route(two_sandboxes):
    gateway, alice, bob = two_sandboxes
    for host in (f"alice-{alice.port}.evil.test", f"alice-{alice.port}.sandbox.test.evil.test",
                 f"alice-{alice.port}sandbox.test", "sandbox.test"):
        data = (f"GET / HTTP/1.1\r\nHost: {host}\r\nX-Access-Token: {alice.token}\r\n"
                "Connection: close\r\n\r\n").encode()
        assert status_of(await raw_exchange(gateway.port, data)) == 404, host
    data = (f"GET / HTTP/1.1\r\nHost: x.alice-{alice.port}.sandbox.test\r\nX-Access-Token: {alice.token}\r\n"
            "Connection: close\r\n\r\n").encode()
    assert status_of(await raw_exchange(gateway.port, data)) == 400
    assert alice.upstream.seen == []


async def test_host_naming_another_sandbox_needs_that_sandboxes_token(two_sandboxes):
    gateway, alice, bob = two_sandboxes
    data = (f"GET {alice.path('/')} HTTP/1.1\r\nHost: bob-{bob.port}.sandbox.test\r\n"
            f"X-Access-Token: {alice.token}\r\nConnection: close\r\n\r\n").encode()
    assert status_of(await raw_exchange(gateway.port, data)) == 401
    assert alice.upstream.seen == [] and bob.upstream.seen == []


async def test_token_for_one_sandbox_does_not_open_another(two_sandboxes):
    gateway, alice, bob = two_sandboxes
    response = await raw_exchange(gateway.port, request(bob.path("/"), [f"X-Access-Token: {alice.token}"]))
    assert status_of(response) == 401
    assert bob.upstream.seen == []


async def test_client_that_never_finishes_its_headers_is_disconnected(gateway_factory, sandbox_factory):
    gateway = await gateway_factory(client_idle_timeout=0.5)
    alice = await sandbox_factory("alice")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(f"GET {alice.path('/')} HTTP/1.1\r\nHost: x\r\nX-Slow: ".encode())
    await writer.drain()
    assert await asyncio.wait_for(reader.read(-1), 30) == b""  # closed by the gateway
    writer.close()
    assert alice.upstream.seen == []


async def test_client_stalling_its_body_gets_408(gateway_factory, sandbox_factory):
    gateway = await gateway_factory(client_body_timeout=0.5)
    alice = await sandbox_factory("alice")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(f"POST {alice.path('/digest')} HTTP/1.1\r\nHost: x\r\nX-Access-Token: {alice.token}\r\n"
                 f"Content-Length: 100\r\n\r\n0123456789".encode())
    await writer.drain()
    response = await asyncio.wait_for(reader.read(-1), 30)
    writer.close()
    assert status_of(response) == 408
