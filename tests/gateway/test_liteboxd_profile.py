"""The gateway with --profile liteboxd routes LiteBoxd's own Pods, created in the real API server
exactly as LiteBoxd's server creates them (tests/integration/test_liteboxd_profile.py builds them)."""
import asyncio
import secrets

import pytest

from liteboxd_gateway import config
from tests.gateway.conftest import assert_echoes
from tests.integration.test_liteboxd_profile import liteboxd_pod

LITEBOXD = dict(profile="liteboxd", **config.PROFILES["liteboxd"])


class LiteBoxdSandbox:
    """A sandbox as LiteBoxd's server makes it: its id, its Pod(s), its token and its workload."""

    def __init__(self, sandbox_id, upstream, token):
        self.id, self.upstream, self.token = sandbox_id, upstream, token

    def path(self, rest="/"):
        return f"/api/v1/sandbox/{self.id}/port/{self.upstream.port}{rest}"


@pytest.fixture
def liteboxd_sandbox(pods, upstream_factory):
    async def make(sandbox_id=None, pod_name=None, ready=True, internet=False):
        sandbox_id = sandbox_id or secrets.token_hex(4)
        upstream = await upstream_factory(sandbox_id)
        token = secrets.token_hex(32)  # LiteBoxd's generateAccessToken: 32 random bytes, hex
        body = liteboxd_pod(sandbox_id, internet=internet, name=pod_name, token=token)
        await asyncio.to_thread(pods.core.create_namespaced_pod, pods.namespace, body)
        await pods.set_status(body["metadata"]["name"], upstream.host, ready)
        return LiteBoxdSandbox(sandbox_id, upstream, token)

    return make


async def serves(gateway, sandbox_id, pod_name, ready=True):
    def check():
        found = gateway.gateway.cache.get(sandbox_id)
        return found is not None and found.name == pod_name and found.ready == ready
    await gateway.wait_for(check, f"{sandbox_id} served by {pod_name} (ready={ready})")


def test_the_profile_sets_the_pods_the_path_and_the_id(monkeypatch):
    monkeypatch.setenv("LITEBOXD_GATEWAY_LISTEN_HOST", "127.0.0.1")
    loaded = config.load(["--profile", "liteboxd"])
    assert (loaded.label_selector, loaded.path_prefix, loaded.sandbox_id_label) == (
        "app=liteboxd", "/api/v1/sandbox/", "sandbox-id")
    default = config.load([])
    assert (default.label_selector, default.path_prefix, default.sandbox_id_label) == (
        "liteboxd.io/sandbox=true", "/sandbox/", "")
    assert config.load(["--profile", "liteboxd", "--path-prefix", "/gw/"]).path_prefix == "/gw/"
    monkeypatch.setenv("LITEBOXD_GATEWAY_LABEL_SELECTOR", "app=liteboxd,tier=gpu")
    assert config.load(["--profile", "liteboxd"]).label_selector == "app=liteboxd,tier=gpu"
    with pytest.raises(config.ConfigError, match="--path-prefix"):
        config.load(["--path-prefix", "/api/../x/"])
    with pytest.raises(config.ConfigError, match="--sandbox-id-label"):
        config.load(["--sandbox-id-label", "not a label"])


async def test_liteboxds_pods_are_routed_by_its_path_and_host_form(gateway_factory, liteboxd_sandbox, pods, http):
    gateway = await gateway_factory(**LITEBOXD)
    sandbox = await liteboxd_sandbox(internet=True)
    other = await liteboxd_sandbox()
    await serves(gateway, sandbox.id, f"sandbox-{sandbox.id}")
    await serves(gateway, other.id, f"sandbox-{other.id}")
    headers = {"X-Access-Token": sandbox.token}

    async with http.get(gateway.url + sandbox.path("/hello?x=1"), headers=headers) as answer:
        body = await answer.json()
    async with http.get(gateway.url + "/app", headers=dict(
            headers, Host=f"{sandbox.id}-{sandbox.upstream.port}.sandbox.test")) as by_host:
        host_body = await by_host.json()
    async with http.get(gateway.url + sandbox.path("/hello")) as no_token:
        assert no_token.status == 401
    async with http.get(gateway.url + other.path("/"), headers=headers) as wrong_sandbox:
        assert wrong_sandbox.status == 401
    # The Pod's name is not the sandbox id, and this collection's own path form is not LiteBoxd's route.
    async with http.get(gateway.url + f"/api/v1/sandbox/sandbox-{sandbox.id}/port/{sandbox.upstream.port}/",
                        headers=headers) as by_pod_name:
        assert by_pod_name.status == 404
    async with http.get(gateway.url + f"/sandbox/{sandbox.id}/port/{sandbox.upstream.port}/",
                        headers=headers) as default_form:
        assert default_form.status == 404
    async with http.ws_connect(gateway.url.replace("http://", "ws://") + sandbox.path("/ws"), headers=headers) as ws:
        await assert_echoes(ws)

    assert answer.status == 200 and body["name"] == sandbox.id and body["raw_path"] == "/hello?x=1"
    forwarded = {name.lower(): value for name, value in body["headers"]}
    assert forwarded["x-forwarded-prefix"] == f"/api/v1/sandbox/{sandbox.id}/port/{sandbox.upstream.port}"
    assert "x-access-token" not in forwarded
    assert host_body["name"] == sandbox.id and host_body["raw_path"] == "/app"


async def test_a_persistent_sandbox_goes_to_its_ready_pod(gateway_factory, liteboxd_sandbox, pods, upstream_factory,
                                                          http):
    """LiteBoxd's persistent sandboxes are a Deployment's Pods: generated names, one sandbox-id. During
    a restart two exist; requests go to the Ready one, and the newest when neither or both are."""
    gateway = await gateway_factory(**LITEBOXD)
    old = await liteboxd_sandbox(pod_name="sandbox-p9q8r7-7d9c8b6f5-aaaaa", sandbox_id="p9q8r7")
    await serves(gateway, "p9q8r7", "sandbox-p9q8r7-7d9c8b6f5-aaaaa")
    new_upstream = await upstream_factory("p9q8r7-new", port=old.upstream.port)  # another address, same port
    body = liteboxd_pod("p9q8r7", name="sandbox-p9q8r7-7d9c8b6f5-bbbbb", token=old.token)
    await asyncio.to_thread(pods.core.create_namespaced_pod, pods.namespace, body)
    await pods.set_status("sandbox-p9q8r7-7d9c8b6f5-bbbbb", new_upstream.host, ready=False)
    headers = {"X-Access-Token": old.token}

    async def reached():
        async with http.get(gateway.url + f"/api/v1/sandbox/p9q8r7/port/{old.upstream.port}/", headers=headers) as r:
            return r.status, (await r.json()).get("name") if r.status == 200 else None

    # (the cache's members: the new Pod is known before the old one is asked for)
    await gateway.wait_for(lambda: "sandbox-p9q8r7-7d9c8b6f5-bbbbb" in gateway.gateway.cache._members["p9q8r7"],
                           "the new Pod in the cache")
    assert await reached() == (200, "p9q8r7")  # the new Pod is not Ready yet: the old one serves
    await pods.set_status("sandbox-p9q8r7-7d9c8b6f5-aaaaa", old.upstream.host, ready=False)
    await pods.set_status("sandbox-p9q8r7-7d9c8b6f5-bbbbb", new_upstream.host, ready=True)
    await serves(gateway, "p9q8r7", "sandbox-p9q8r7-7d9c8b6f5-bbbbb")
    assert await reached() == (200, "p9q8r7-new")
    await pods.delete("sandbox-p9q8r7-7d9c8b6f5-bbbbb")
    await serves(gateway, "p9q8r7", "sandbox-p9q8r7-7d9c8b6f5-aaaaa", ready=False)
    async with http.get(gateway.url + f"/api/v1/sandbox/p9q8r7/port/{old.upstream.port}/", headers=headers) as r:
        assert r.status == 503  # the one left is not Ready
    await pods.delete("sandbox-p9q8r7-7d9c8b6f5-aaaaa")
    await gateway.wait_for(lambda: gateway.gateway.cache.get("p9q8r7") is None, "p9q8r7 gone")
    assert await reached() == (404, None)


async def test_other_pods_in_liteboxds_namespace_are_not_sandboxes(gateway_factory, pods, liteboxd_sandbox):
    gateway = await gateway_factory(**LITEBOXD)
    await asyncio.to_thread(pods.core.create_namespaced_pod, pods.namespace, {
        "metadata": {"name": "prepull-img1-abcde", "labels": {"app": "liteboxd-prepull", "job-name": "prepull-img1"}},
        "spec": {"containers": [{"name": "prepull", "image": "example.invalid/x"}]}})
    sandbox = await liteboxd_sandbox()
    await serves(gateway, sandbox.id, f"sandbox-{sandbox.id}")
    assert len(gateway.gateway.cache) == 1
