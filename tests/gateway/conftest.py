"""Gateway test plumbing: real upstream servers, sandbox Pods in the real API server, a gateway.

Each sandbox's upstream listens on its own loopback address (127.0.0.x), and its Pod reports that
address as podIP, so a request that reached the wrong sandbox would show in which server saw it.
The test plays the kubelet by patching Pod status through the status subresource.
"""
import asyncio
import hashlib
import itertools
import os
import pathlib
import secrets
import sys

import aiohttp
import pytest
from aiohttp import web

# The package under test: this checkout's sources, or a build of them with compiled modules
# (scripts/test runs the gateway tests once more on one).
GATEWAY_SRC = pathlib.Path(os.environ.get("LITEBOXD_GATEWAY_SRC")
                           or pathlib.Path(__file__).resolve().parents[2] / "gateway" / "src")
if str(GATEWAY_SRC) not in sys.path:
    sys.path.insert(0, str(GATEWAY_SRC))

from liteboxd_gateway import kube  # noqa: E402
from liteboxd_gateway.config import Config  # noqa: E402
from liteboxd_gateway.server import serve  # noqa: E402

_addresses = itertools.count(2)


def next_loopback() -> str:
    """A loopback address no other upstream of this test session uses (127.0.0.2 ...)."""
    n = next(_addresses)
    return f"127.0.{n // 250}.{n % 250 + 2}"


# -- upstream servers -------------------------------------------------------------------------
def ws_url(gateway, sandbox, rest="/ws"):
    return gateway.url.replace("http://", "ws://") + sandbox.path(rest)


async def assert_echoes(ws):
    """Text, binary and a burst of pushes through a WebSocket to an Upstream's /ws echo."""
    await ws.send_str("hello ✓")
    assert (await ws.receive()).data == "hello ✓"
    await ws.send_bytes(b"\x00\x01binary")
    assert (await ws.receive()).data == b"\x00\x01binary"
    await ws.send_str("push 3")
    assert [(await ws.receive()).data for _unused in range(3)] == ["push 0", "push 1", "push 2"]


class Upstream:
    """An aiohttp server standing in for a sandbox's workload, recording what reached it."""

    def __init__(self, name: str, host: str):
        self.name = name
        self.host = host
        self.port = None
        self.seen = []  # (method, raw path, headers) of every request that reached it
        self.ws_seen = []  # (raw path, headers, chosen protocol)
        self.ws_closed = []  # close codes received from the gateway
        self.peers = []  # client (gateway) ports, to see keep-alive reuse
        self.release_sse = asyncio.Event()
        self.release_chunked = asyncio.Event()  # /chunked?hold: the rest follows once a test sets it
        self.runner = None

    def app(self):
        app = web.Application(client_max_size=1024 ** 3)
        app.router.add_route("*", "/ws", self.websocket)
        app.router.add_get("/ws-refuse", self.ws_refuse)
        app.router.add_get("/sse", self.sse)
        app.router.add_get("/chunked", self.chunked)
        app.router.add_get("/large/{size}", self.large)
        app.router.add_post("/digest", self.digest)
        app.router.add_get("/slow", self.slow)
        app.router.add_get("/break", self.break_body)
        app.router.add_get("/status/{code}", self.status)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app

    async def start(self, port=0):
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.host, port)
        await site.start()
        self.port = self.runner.addresses[0][1]
        return self

    async def stop(self):
        await self.runner.cleanup()

    def _record(self, request):
        self.seen.append((request.method, request.raw_path, dict(request.headers)))
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append(peer[1] if peer else None)

    async def echo(self, request):
        self._record(request)
        body = await request.read()
        return web.json_response({
            "name": self.name, "method": request.method, "raw_path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()], "body": body.decode("latin-1"),
        }, headers={"Connection": "keep-alive, X-Hop", "X-Hop": "secret", "Keep-Alive": "timeout=5",
                    "Set-Cookie": "a=1", "X-Upstream": self.name})

    async def status(self, request):
        self._record(request)
        return web.Response(status=int(request.match_info["code"]), text="from upstream")

    async def sse(self, request):
        self._record(request)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await response.write(b"data: first\n\n")
        await self.release_sse.wait()  # the test releases this only after it read the first event
        await response.write(b"data: second\n\n")
        await response.write_eof()
        return response

    async def chunked(self, request):
        self._record(request)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(100):
            await response.write(f"chunk-{i};".encode())
            if i == 0 and "hold" in request.query:
                # Until the client has the head, the gateway has only seen part of the body: it
                # must stream, however fast the rest would have followed.
                await asyncio.wait_for(self.release_chunked.wait(), 30)
        await response.write_eof()
        return response

    async def large(self, request):
        self._record(request)
        size = int(request.match_info["size"])
        response = web.StreamResponse(headers={"Content-Length": str(size)})
        await response.prepare(request)
        block = bytes(range(256)) * 256  # 64 KiB
        sent = 0 if request.method != "HEAD" else size
        while sent < size:
            piece = block[: min(len(block), size - sent)]
            await response.write(piece)
            sent += len(piece)
        await response.write_eof()
        return response

    async def digest(self, request):
        self._record(request)
        digest, size = hashlib.sha256(), 0
        async for chunk in request.content.iter_any():
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"sha256": digest.hexdigest(), "size": size,
                                  "chunked": request.headers.get("Transfer-Encoding")})

    async def slow(self, request):
        self._record(request)
        await asyncio.sleep(float(request.query.get("seconds", "1")))
        return web.Response(text="slow done")

    async def break_body(self, request):
        self._record(request)
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(b"partial")
        await asyncio.sleep(0.05)
        request.transport.abort()
        return response

    async def ws_refuse(self, request):
        self._record(request)
        return web.Response(status=403, text="no")

    async def websocket(self, request):
        protocols = ("chat.v2", "chat.v1")
        ws = web.WebSocketResponse(protocols=protocols if "protocols" not in request.query else (),
                                   max_msg_size=64 * 1024 * 1024, autoclose=False)
        await ws.prepare(request)
        self.ws_seen.append((request.raw_path, dict(request.headers), ws.ws_protocol))
        while True:
            message = await ws.receive()
            if message.type == aiohttp.WSMsgType.TEXT:
                command, _unused, arg = message.data.partition(" ")
                if command == "close":
                    await ws.close(code=int(arg), message=b"upstream says bye")
                    break
                if command == "abort":
                    request.transport.abort()
                    break
                if command == "big":
                    await ws.send_bytes(b"x" * int(arg))
                    continue
                if command == "push":  # several messages without being asked again
                    for i in range(int(arg)):
                        await ws.send_str(f"push {i}")
                    continue
                await ws.send_str(message.data)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await ws.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.CLOSE:
                self.ws_closed.append((message.data, message.extra))
                await ws.close()
                break
            else:
                break
        return ws


@pytest.fixture
async def upstream_factory():
    started = []

    async def make(name="app", host=None, port=0):
        server = await Upstream(name, host or next_loopback()).start(port)
        started.append(server)
        return server

    yield make
    for server in started:
        await server.stop()


# -- sandbox Pods in the real API server ----------------------------------------------------
class Pods:
    """Creates sandbox Pods and plays their kubelet (status patches), off the event loop."""

    def __init__(self, api_client, namespace):
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace

    async def create(self, name, token=None, token_sha256=None, labels=None, ip=None, ready=True):
        annotations = {}
        if token is not None:
            annotations["liteboxd.io/access-token"] = token
        if token_sha256 is not None:
            annotations["liteboxd.io/access-token-sha256"] = token_sha256
        body = {
            "metadata": {"name": name, "annotations": annotations,
                         "labels": labels if labels is not None else {
                             "liteboxd.io/sandbox": "true", "liteboxd.io/sandbox-id": name}},
            "spec": {"containers": [{"name": "main", "image": "registry.invalid/sandbox:1"}]},
        }
        await asyncio.to_thread(self.core.create_namespaced_pod, self.namespace, body)
        if ip is not None:
            await self.set_status(name, ip, ready)

    async def set_status(self, name, ip, ready=True):
        status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}] if ip else None,
                  "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
        await asyncio.to_thread(self.core.patch_namespaced_pod_status, name, self.namespace, {"status": status})

    async def annotate(self, name, annotations):
        await asyncio.to_thread(self.core.patch_namespaced_pod, name, self.namespace,
                                {"metadata": {"annotations": annotations}})

    async def patch(self, name, body):
        await asyncio.to_thread(self.core.patch_namespaced_pod, name, self.namespace, body)

    async def delete(self, name):
        await asyncio.to_thread(self.core.delete_namespaced_pod, name, self.namespace, grace_period_seconds=0)


@pytest.fixture
def pods(kube_apiserver, kube_namespace):
    return Pods(kube_apiserver.api_client(), kube_namespace)


class Sandbox:
    """A sandbox Pod with its upstream server and token."""

    def __init__(self, name, upstream, token):
        self.name, self.upstream, self.token = name, upstream, token

    @property
    def port(self):
        return self.upstream.port

    def path(self, rest="/"):
        return f"/sandbox/{self.name}/port/{self.port}{rest}"


@pytest.fixture
def running_gateways():
    """The in-process gateways of a test: sandboxes made later wait until each of them sees them."""
    return []


@pytest.fixture
async def sandbox_factory(pods, upstream_factory, running_gateways):
    counter = itertools.count()

    async def make(name=None, hashed=False, ready=True):
        name = name or f"sb-{next(counter)}-{secrets.token_hex(3)}"
        upstream = await upstream_factory(name)
        token = secrets.token_urlsafe(24)
        if hashed:
            await pods.create(name, token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                              ip=upstream.host, ready=ready)
        else:
            await pods.create(name, token=token, ip=upstream.host, ready=ready)
        for gateway in running_gateways:
            if not gateway.task.done():
                await gateway.wait_sandbox(name, ready=ready)
        return Sandbox(name, upstream, token)

    return make


# -- the gateway -----------------------------------------------------------------------------
class RunningGateway:
    def __init__(self, started, task, stop, config):
        self.gateway = started.gateway
        self.watcher = started.watcher
        self.port = started.addresses[0][1]
        self.metrics_port = started.metrics_addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.task, self.stop_event, self.config = task, stop, config

    async def stop(self):
        self.stop_event.set()
        await asyncio.wait_for(self.task, 60)

    async def wait_for(self, predicate, what, timeout=30):
        """Poll until the cache shows what the test changed (the watch is asynchronous)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"gateway cache never showed: {what}")
            await asyncio.sleep(0.05)

    async def wait_sandbox(self, name, ready=True):
        def check():
            sandbox = self.gateway.cache.get(name)
            return sandbox is not None and sandbox.ready == ready
        await self.wait_for(check, f"{name} ready={ready}")


@pytest.fixture
async def gateway_factory(kube_apiserver, kube_namespace, running_gateways):
    running = running_gateways

    async def make(wait_synced=True, **overrides):
        settings = dict(listen_host="127.0.0.1", port=0, metrics_host="127.0.0.1", metrics_port=0,
                        event_loop="asyncio", kubeconfig=kube_apiserver.kubeconfig, namespace=kube_namespace,
                        drain_delay=0, shutdown_timeout=5, upstream_connect_timeout=2,
                        watch_backoff_initial=0.2, watch_backoff_max=1.0, domain="sandbox.test")
        settings.update(overrides)
        config = Config(**settings)
        started, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(serve(config, kube.load(config.kubeconfig), started=started, stop=stop))
        waiter = asyncio.create_task(started.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            waiter.cancel()
            task.result()
        gateway = RunningGateway(started, task, stop, config)
        running.append(gateway)
        if wait_synced:
            await asyncio.wait_for(started.watcher.synced.wait(), 30)
        return gateway

    yield make
    for gateway in running:
        if not gateway.task.done():
            await gateway.stop()


@pytest.fixture
async def http():
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session
