"""WebSockets through the API server's pod proxy (``--websocket-upstream apiserver``), end to end.

The real kube-apiserver dials the sandbox itself and refuses loopback and link-local Pod IPs, so
each sandbox's WebSocket server listens in its own network namespace, reached from the host over a
veth pair in the benchmark range 198.18.0.0/15; its Pod reports that address as podIP. The same
address is routable from the host, so a direct-mode gateway reaches the same server and the two
modes can be compared request by request.
"""
import asyncio
import ctypes
import itertools
import json
import random
import secrets
import socket
import subprocess
import threading
import uuid

import aiohttp
import pytest
import yaml
from aiohttp import web

from liteboxd_gateway import config as config_module
from tests.gateway.conftest import Sandbox, Upstream, assert_echoes, next_loopback, ws_url
from tests.gateway.test_role_cluster import run_role
from tests.lib.netns import Netns

CLONE_NEWNET = 0x40000000
CLIENT_PROTOCOLS = ("chat.v3", "chat.v1")
_sandbox_names = itertools.count()


class PodNetwork:
    """A network namespace standing in for a Pod network: ``pod_ip`` in it, ``host_ip`` on the host."""

    def __init__(self):
        block = random.randrange(0, 2 ** 17, 4)  # a /30 of 198.18.0.0/15
        base = f"198.{18 + (block >> 16)}.{(block >> 8) & 255}"
        self.host_ip, self.pod_ip = f"{base}.{(block & 255) + 1}", f"{base}.{(block & 255) + 2}"
        self.host_device = f"lbxws{uuid.uuid4().hex[:8]}"
        self.netns = Netns("lbxws")
        try:
            # Created with its peer already inside the namespace: deleting the namespace removes both.
            subprocess.run(["ip", "link", "add", self.host_device, "type", "veth", "peer", "name", "eth0",
                            "netns", self.netns.name], check=True, capture_output=True)
            subprocess.run(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_device], check=True)
            subprocess.run(["ip", "link", "set", self.host_device, "up"], check=True)
            self.netns.ip(f"addr add {self.pod_ip}/30 dev eth0")
            self.netns.ip("link set eth0 up")
        except BaseException:
            self.close()
            raise

    def listening_socket(self) -> socket.socket:
        """A TCP socket listening on pod_ip inside the namespace (made by a thread that entered it;
        the socket stays in the namespace, the thread ends, the rest of the process never moves)."""
        made = {}

        def enter_and_listen():
            try:
                libc = ctypes.CDLL("libc.so.6", use_errno=True)
                with open(f"/run/netns/{self.netns.name}", "rb") as handle:
                    if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns into the Pod network failed")
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind((self.pod_ip, 0))
                sock.listen(128)
                sock.setblocking(False)
                made["socket"] = sock
            except BaseException as exc:  # handed to the test's thread
                made["error"] = exc

        thread = threading.Thread(target=enter_and_listen, name="pod-network-listener")
        thread.start()
        thread.join()
        if "error" in made:
            raise made["error"]
        return made["socket"]

    def close(self):
        self.netns.close()
        if subprocess.run(["ip", "link", "show", self.host_device], capture_output=True, check=False).returncode == 0:
            subprocess.run(["ip", "link", "del", self.host_device], check=False)


@pytest.fixture
def pod_network():
    network = PodNetwork()
    try:
        yield network
    finally:
        network.close()


@pytest.fixture
async def pod_sandbox_factory(pods, pod_network, running_gateways):
    """Sandboxes whose WebSocket server listens on the Pod network's address."""
    runners = []

    async def make(ip=None):
        name = f"ps-{next(_sandbox_names)}-{secrets.token_hex(3)}"
        upstream = Upstream(name, ip or pod_network.pod_ip)
        upstream.runner = web.AppRunner(upstream.app(), access_log=None)
        await upstream.runner.setup()
        runners.append(upstream.runner)
        if ip is None:
            sock = pod_network.listening_socket()
            await web.SockSite(upstream.runner, sock).start()
            upstream.port = sock.getsockname()[1]
        else:
            await web.TCPSite(upstream.runner, ip, 0).start()
            upstream.port = upstream.runner.addresses[0][1]
        token = secrets.token_urlsafe(24)
        await pods.create(name, token=token, ip=upstream.host)
        for gateway in running_gateways:
            await gateway.wait_sandbox(name)
        return Sandbox(name, upstream, token)

    yield make
    for runner in runners:
        await runner.cleanup()


def write_kubeconfig(path, kube_apiserver, user: dict) -> str:
    """A kubeconfig for the fixture's API server as another ``user`` than its admin."""
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gateway",
        "clusters": [{"name": "test", "cluster": {"server": kube_apiserver.url,
                                                  "certificate-authority": kube_apiserver.ca_file}}],
        "users": [{"name": "gateway", "user": user}],
        "contexts": [{"name": "gateway", "context": {"cluster": "test", "user": "gateway"}}]}))
    return str(path)


async def handshake_error(http, url, **kwargs):
    """The gateway's answer to a refused handshake: (status, error message)."""
    async with http.get(url, headers={"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                                      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", **kwargs.get("headers", {})}) as response:
        body = await response.read()
        return response.status, json.loads(body)["error"]


async def test_relay_through_the_pod_proxy_matches_direct_mode(gateway_factory, pod_sandbox_factory, http):
    direct = await gateway_factory()
    proxied = await gateway_factory(websocket_upstream="apiserver")
    sandbox = await pod_sandbox_factory()
    headers = {"X-Access-Token": sandbox.token, "X-Request-Id": "same-request", "X-App": "kept",
               "Host": "gateway.example"}
    async with aiohttp.ClientSession(skip_auto_headers=("User-Agent",)) as client:
        for gateway in (direct, proxied):
            async with client.ws_connect(ws_url(gateway, sandbox, "/ws"), protocols=CLIENT_PROTOCOLS,
                                         headers=headers) as ws:
                assert ws.protocol == "chat.v1"  # the sandbox's choice, through the API server too
                await assert_echoes(ws)
    (direct_path, direct_headers, direct_protocol), (path, seen, protocol) = sandbox.upstream.ws_seen
    assert (path, protocol) == (direct_path, direct_protocol) == ("/ws", "chat.v1")

    def comparable(request_headers):
        return {name.lower(): value for name, value in request_headers.items()
                if name.lower() not in ("sec-websocket-key", "x-forwarded-for")}

    # Same Host (the Pod's address), X-Forwarded-Host/Proto, request id, no User-Agent added.
    assert comparable(seen) == comparable(direct_headers)
    assert seen["Host"] == f"{sandbox.upstream.host}:{sandbox.port}"
    assert (seen["X-Forwarded-Host"], seen["X-Forwarded-Proto"], seen["X-App"]) == ("gateway.example", "http", "kept")
    assert "user-agent" not in comparable(seen)
    # kube-apiserver appends the address the gateway connected from.
    assert direct_headers["X-Forwarded-For"] == "127.0.0.1"
    assert seen["X-Forwarded-For"] == "127.0.0.1, 127.0.0.1"


async def test_the_api_server_rewrites_the_target_of_an_upgrade(gateway_factory, pod_sandbox_factory, http):
    """Known limitations of kube-apiserver, documented in the README: it drops the query of an
    upgrade (kubernetes/kubernetes#77142) and decodes, cleans and re-encodes the path. If this
    fails, the API server under test passes them on and the README must say so."""
    gateway = await gateway_factory(websocket_upstream="apiserver")
    sandbox = await pod_sandbox_factory()
    token = {"X-Access-Token": sandbox.token}
    async with http.ws_connect(ws_url(gateway, sandbox, "/ws?room=1"), headers=token) as ws:
        await ws.send_str("q")
        assert (await ws.receive()).data == "q"
    assert sandbox.upstream.ws_seen[0][0] == "/ws"
    # Not a WebSocket endpoint: the sandbox records the request and answers 200, which the API
    # server turns into an error of its own.
    assert await handshake_error(http, ws_url(gateway, sandbox, "/a%41//b%2Fc"), headers=token) == (
        502, "API server pod proxy refused the WebSocket (HTTP 500)")
    assert sandbox.upstream.seen[0][1] == "/aA/b/c"


async def test_close_codes_and_limits_as_in_direct_mode(gateway_factory, pod_sandbox_factory, http):
    gateway = await gateway_factory(websocket_upstream="apiserver", ws_max_message_size=1024)
    sandbox = await pod_sandbox_factory()
    token = {"X-Access-Token": sandbox.token}
    async with http.ws_connect(ws_url(gateway, sandbox), headers=token) as ws:
        await ws.send_str("close 4001")
        message = await ws.receive()
        assert (message.type, message.data, message.extra) == (aiohttp.WSMsgType.CLOSE, 4001, "upstream says bye")
    async with http.ws_connect(ws_url(gateway, sandbox), headers=token) as ws:
        await ws.close(code=4002, message=b"client says bye")
    await gateway.wait_for(lambda: sandbox.upstream.ws_closed, "the sandbox saw the client's close")
    assert sandbox.upstream.ws_closed[0] == (4002, "client says bye")
    async with http.ws_connect(ws_url(gateway, sandbox), headers=token) as ws:
        await ws.send_str("abort now")  # the sandbox vanishes: 1011, never 1006
        message = await ws.receive()
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1011)
    async with http.ws_connect(ws_url(gateway, sandbox), headers=token) as ws:
        await ws.send_str("big 4096")
        message = await ws.receive()
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, 1009)
    await gateway.stop()
    gateway = await gateway_factory(websocket_upstream="apiserver", ws_idle_timeout=0.3)
    async with http.ws_connect(ws_url(gateway, sandbox), headers=token) as ws:
        message = await ws.receive()
        assert (message.type, message.data, message.extra) == (aiohttp.WSMsgType.CLOSE, 1001, "idle timeout")


async def test_token_required_before_the_api_server_is_asked(gateway_factory, pod_sandbox_factory, http):
    gateway = await gateway_factory(websocket_upstream="apiserver")
    sandbox = await pod_sandbox_factory()
    assert await handshake_error(http, ws_url(gateway, sandbox)) == (401, "unauthorized")
    assert await handshake_error(http, ws_url(gateway, sandbox), headers={"X-Access-Token": "nope"}) == (
        401, "unauthorized")
    assert sandbox.upstream.ws_seen == []


async def test_no_credentials_reach_the_sandbox(gateway_factory, pod_sandbox_factory, http, kube_apiserver):
    gateway = await gateway_factory(websocket_upstream="apiserver")
    sandbox = await pod_sandbox_factory()
    # The client's own Authorization and an impersonation attempt: neither may act at the API server
    # under the gateway's identity (the fixture's gateway is system:masters, which may impersonate:
    # had Impersonate-User passed, the API server would have refused the anonymous user with 403).
    headers = {"X-Access-Token": sandbox.token, "Authorization": "Bearer client-secret",
               "Impersonate-User": "system:anonymous", "Impersonate-Group": "system:unauthenticated"}
    async with http.ws_connect(ws_url(gateway, sandbox, f"/ws?access_token={sandbox.token}"), headers=headers) as ws:
        await ws.send_str("c")
        assert (await ws.receive()).data == "c"
    _path, seen, _protocol = sandbox.upstream.ws_seen[0]
    names = {name.lower() for name in seen}
    assert "authorization" not in names and not any(name.startswith("impersonate-") for name in names)
    assert kube_apiserver.token not in repr(sandbox.upstream.ws_seen)
    assert sandbox.token not in repr(sandbox.upstream.ws_seen)
    assert "client-secret" not in repr(sandbox.upstream.ws_seen)


async def test_api_server_refusals_are_502_with_the_reason(gateway_factory, pod_sandbox_factory, pods, http):
    gateway = await gateway_factory(websocket_upstream="apiserver", upstream_connect_retries=0)
    sandbox = await pod_sandbox_factory()
    token = {"X-Access-Token": sandbox.token}
    # The sandbox refuses the handshake itself; the API server passes its answer on.
    assert await handshake_error(http, ws_url(gateway, sandbox, "/ws-refuse"), headers=token) == (
        502, "API server pod proxy refused the WebSocket (HTTP 403)")
    # Nothing listens on the port: kube-apiserver v1.20 answers its dial error with 500.
    path = f"/sandbox/{sandbox.name}/port/1/ws"
    status, error = await handshake_error(http, gateway.url + path, headers=token)
    assert (status, error) == (502, "API server pod proxy refused the WebSocket (HTTP 500)"), error
    # A loopback Pod IP, which a direct gateway would reach: kube-apiserver refuses to proxy to it.
    loopback = await pod_sandbox_factory(ip=next_loopback())
    status, error = await handshake_error(http, ws_url(gateway, loopback), headers={"X-Access-Token": loopback.token})
    assert (status, error) == (502, "API server pod proxy refused the WebSocket (HTTP 400)"), error
    assert loopback.upstream.ws_seen == []
    # A Pod without an IP never gets that far.
    await pods.set_status(sandbox.name, None, ready=False)
    await gateway.wait_sandbox(sandbox.name, ready=False)
    assert await handshake_error(http, ws_url(gateway, sandbox), headers=token) == (503, "sandbox not ready")


async def test_unreachable_api_server_is_502(gateway_factory, pod_sandbox_factory, http, kube_apiserver):
    gateway = await gateway_factory(websocket_upstream="apiserver", upstream_connect_retries=1)
    sandbox = await pod_sandbox_factory()
    kube_apiserver.stop_apiserver()  # the cache keeps serving what it knew
    try:
        status, error = await handshake_error(http, ws_url(gateway, sandbox), headers={"X-Access-Token": sandbox.token})
    finally:
        kube_apiserver.start_apiserver()
    assert status == 502 and error.startswith("cannot connect to the API server:"), error
    assert sandbox.upstream.ws_seen == []


async def test_credentials_are_read_for_each_handshake(gateway_factory, pod_sandbox_factory, http, kube_apiserver, tmp_path):
    """A token file (as the in-cluster service account's, which the kubelet rotates) is read per
    handshake; when it cannot be read, the client gets a 502 saying so."""
    token_file = tmp_path / "token"
    token_file.write_text(kube_apiserver.token)
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", kube_apiserver, {"tokenFile": str(token_file)})
    gateway = await gateway_factory(websocket_upstream="apiserver", kubeconfig=kubeconfig)
    sandbox = await pod_sandbox_factory()
    token = {"X-Access-Token": sandbox.token}
    async with http.ws_connect(ws_url(gateway, sandbox), headers=token) as ws:
        await ws.send_str("t")
        assert (await ws.receive()).data == "t"
    token_file.unlink()
    status, error = await handshake_error(http, ws_url(gateway, sandbox), headers=token)
    assert status == 502 and error.startswith("cannot read the gateway's API credentials:"), error
    assert len(sandbox.upstream.ws_seen) == 1


async def handshake_status(http, url, headers, expected, timeout=30):
    """Repeat the handshake until it gets ``expected`` (101 or the gateway's status): RBAC changes
    reach the API server's authorizer through an informer, a moment after they are written."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            async with http.ws_connect(url, headers=headers) as ws:
                await ws.send_str("ping me")
                assert (await ws.receive()).data == "ping me"
                status = 101
        except aiohttp.WSServerHandshakeError as exc:
            status = exc.status
        if status == expected or loop.time() > deadline:
            return status
        await asyncio.sleep(0.2)


async def test_role_grants_pods_proxy_for_apiserver_mode_only(tmp_path, kube_apiserver, kube_namespace,
                                                              gateway_factory, pod_sandbox_factory, http):
    """The role's own ServiceAccount and Role, used by a gateway: the WebSocket works through the
    pod proxy exactly when the role was applied with gateway_websocket_upstream=apiserver."""
    from kubernetes import client

    api = kube_apiserver.api_client()
    variables = {
        "gateway_install_mode": "cluster", "gateway_image": "registry.example/liteboxd/gateway:0.1.0",
        "gateway_namespace": kube_namespace, "gateway_sandbox_namespace": kube_namespace,
        "gateway_create_namespace": False, "gateway_wait": False, "gateway_ingress_enabled": False,
        "gateway_k8s_auth": {"kubeconfig": kube_apiserver.kubeconfig}, "gateway_websocket_upstream": "apiserver",
    }
    run_role(tmp_path, variables)
    rbac = client.RbacAuthorizationV1Api(api)
    rules = rbac.read_namespaced_role("liteboxd-gateway", kube_namespace).rules
    assert [(r.resources, sorted(r.verbs)) for r in rules] == [(["pods"], ["get", "list", "watch"]),
                                                               (["pods/proxy"], ["create", "get"])]
    env = {e.name: e.value for e in client.AppsV1Api(api).read_namespaced_deployment(
        "liteboxd-gateway", kube_namespace).spec.template.spec.containers[0].env}
    assert env["LITEBOXD_GATEWAY_WEBSOCKET_UPSTREAM"] == "apiserver"

    # A token of the role's ServiceAccount, as the kubelet would mount it.
    token = client.CoreV1Api(api).create_namespaced_service_account_token(
        "liteboxd-gateway", kube_namespace, {"spec": {"audiences": ["https://kubernetes.default.svc"],
                                                      "expirationSeconds": 3600}}).status.token
    kubeconfig = write_kubeconfig(tmp_path / "gateway-kubeconfig", kube_apiserver, {"token": token})
    gateway = await gateway_factory(websocket_upstream="apiserver", kubeconfig=kubeconfig)
    sandbox = await pod_sandbox_factory()
    url, headers = ws_url(gateway, sandbox), {"X-Access-Token": sandbox.token}
    assert await handshake_status(http, url, headers, 101) == 101
    assert token not in repr(sandbox.upstream.ws_seen)

    run_role(tmp_path, dict(variables, gateway_websocket_upstream="direct"))
    rules = rbac.read_namespaced_role("liteboxd-gateway", kube_namespace).rules
    assert [(r.resources, sorted(r.verbs)) for r in rules] == [(["pods"], ["get", "list", "watch"])]
    assert await handshake_status(http, url, headers, 502) == 502
    assert await handshake_error(http, url, headers=headers) == (502, "API server pod proxy refused the WebSocket (HTTP 403)")


def test_websocket_upstream_setting(monkeypatch):
    monkeypatch.setenv("LITEBOXD_GATEWAY_LISTEN_HOST", "127.0.0.1")
    assert config_module.load([]).websocket_upstream == "direct"
    assert config_module.load(["--websocket-upstream", "apiserver"]).websocket_upstream == "apiserver"
    monkeypatch.setenv("LITEBOXD_GATEWAY_WEBSOCKET_UPSTREAM", "apiserver")
    assert config_module.load([]).websocket_upstream == "apiserver"
    monkeypatch.setenv("LITEBOXD_GATEWAY_WEBSOCKET_UPSTREAM", "pod-proxy")
    with pytest.raises(config_module.ConfigError, match=r"--websocket-upstream: must be direct or apiserver, got 'pod-proxy'"):
        config_module.load([])
