"""The Pod cache against the real API server: changes while serving, restarts, resync."""
import asyncio

import yaml

from liteboxd_gateway import cache as cache_module
from tests.lib.apiserver import free_port


async def fetch(http, gateway, sandbox, token=None):
    async with http.get(gateway.url + sandbox.path("/"),
                        headers={"X-Access-Token": token or sandbox.token}) as response:
        return response.status


async def test_pod_becoming_ready_unready_terminating_and_deleted(gateway_factory, sandbox_factory, pods, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory(ready=False)
    await gateway.wait_sandbox(sandbox.name, ready=False)
    assert await fetch(http, gateway, sandbox) == 503
    await pods.set_status(sandbox.name, sandbox.upstream.host, ready=True)
    await gateway.wait_sandbox(sandbox.name, ready=True)
    assert await fetch(http, gateway, sandbox) == 200
    await pods.set_status(sandbox.name, sandbox.upstream.host, ready=False)
    await gateway.wait_sandbox(sandbox.name, ready=False)
    assert await fetch(http, gateway, sandbox) == 503
    await pods.set_status(sandbox.name, sandbox.upstream.host, ready=True)
    await gateway.wait_sandbox(sandbox.name, ready=True)
    # Being deleted (a finalizer holds it): no new traffic.
    await pods.patch(sandbox.name, {"metadata": {"finalizers": ["liteboxd.io/test-hold"]}})
    await pods.delete(sandbox.name)
    await gateway.wait_sandbox(sandbox.name, ready=False)
    assert await fetch(http, gateway, sandbox) == 503
    await pods.patch(sandbox.name, {"metadata": {"finalizers": None}})
    await gateway.wait_for(lambda: gateway.gateway.cache.get(sandbox.name) is None, "pod gone")
    assert await fetch(http, gateway, sandbox) == 404


async def test_token_rotation_and_hash_only_storage_are_followed(gateway_factory, sandbox_factory, pods, http):
    import hashlib

    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    assert await fetch(http, gateway, sandbox) == 200
    new = "rotated-token-value-0123456789"
    await pods.annotate(sandbox.name, {"liteboxd.io/access-token": None,
                                       "liteboxd.io/access-token-sha256": hashlib.sha256(new.encode()).hexdigest()})
    await gateway.wait_for(lambda: gateway.gateway.cache.get(sandbox.name).token is None, "token rotated")
    assert await fetch(http, gateway, sandbox) == 401
    assert await fetch(http, gateway, sandbox, token=new) == 200


async def test_pod_without_sandbox_label_is_unknown(gateway_factory, pods, upstream_factory, http):
    gateway = await gateway_factory()
    upstream = await upstream_factory("plain")
    await pods.create("plain", token="tok", labels={"app": "other"}, ip=upstream.host)
    await pods.create("marker", token="tok", ip=upstream.host)
    await gateway.wait_sandbox("marker")  # events arrive in order: "plain" would be there by now
    assert gateway.gateway.cache.get("plain") is None
    async with http.get(f"{gateway.url}/sandbox/plain/port/{upstream.port}/",
                        headers={"X-Access-Token": "tok"}) as response:
        assert response.status == 404
    assert upstream.seen == []


async def test_list_is_paged(gateway_factory, pods, monkeypatch):
    monkeypatch.setattr(cache_module, "LIST_PAGE_SIZE", 2)
    for i in range(5):
        await pods.create(f"paged-{i}", token="tok", ip="127.0.0.1")
    gateway = await gateway_factory()
    assert {f"paged-{i}" for i in range(5)} <= set(gateway.gateway.cache._sandboxes)


async def test_keeps_serving_from_cache_while_the_api_server_restarts_then_resyncs(
        gateway_factory, sandbox_factory, kube_apiserver, pods, http):
    gateway = await gateway_factory()
    sandbox = await sandbox_factory()
    await gateway.wait_sandbox(sandbox.name)
    await asyncio.to_thread(kube_apiserver.stop_apiserver)
    try:
        for _unused in range(3):
            assert await fetch(http, gateway, sandbox) == 200
        async with http.get(gateway.url + "/readyz") as response:
            assert response.status == 200  # synced once; a lost API server does not empty the cache
        # Force a resync on reconnect: a resourceVersion from before this server's watch window.
        gateway.watcher.resource_version = "1"
    finally:
        # On this thread: the fixture ties the server's life to the thread that starts it.
        kube_apiserver.start_apiserver()
    later = await sandbox_factory()
    await gateway.wait_sandbox(later.name)
    assert await fetch(http, gateway, later) == 200
    assert await fetch(http, gateway, sandbox) == 200
    await pods.set_status(sandbox.name, sandbox.upstream.host, ready=False)
    await gateway.wait_sandbox(sandbox.name, ready=False)
    assert await fetch(http, gateway, sandbox) == 503
    metrics = gateway.gateway.metrics
    assert metrics.watch_restarts.values.get(("gone",), 0) >= 1
    assert metrics.watch_restarts.values.get(("error",), 0) >= 1


async def test_not_synced_cache_answers_503_and_readyz_fails(gateway_factory, kube_apiserver, tmp_path, http):
    config = yaml.safe_load(open(kube_apiserver.kubeconfig))
    config["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    unreachable = tmp_path / "kubeconfig"
    unreachable.write_text(yaml.safe_dump(config))
    gateway = await gateway_factory(wait_synced=False, kubeconfig=str(unreachable))
    async with http.get(gateway.url + "/readyz") as response:
        assert response.status == 503
    async with http.get(gateway.url + "/status.ok") as response:
        assert response.status == 200
    async with http.get(gateway.url + "/sandbox/any/port/80/", headers={"X-Access-Token": "x"}) as response:
        assert response.status == 503
