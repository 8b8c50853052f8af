"""The in-cluster image (`scripts/build-gateway.sh image`) run by Podman as a Deployment would run
it: its own user, a read-only root filesystem, no capabilities, and the service account's token
and CA where the kubelet mounts them, against the real API server."""
import asyncio
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import uuid

import aiohttp
import pytest

from tests.gateway.test_role_cluster import run_role
from tests.gateway.test_server import log_lines, wait_ready
from tests.lib.apiserver import _die_with_parent as die_with_parent
from tests.lib.apiserver import free_port
from tests.lib.gateway_build import build_gateway

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.fixture(scope="session")
def gateway_image() -> dict:
    return build_gateway("image")


def service_account_token(kube_apiserver, namespace) -> str:
    """A ServiceAccount allowed what the role's Role allows (get/list/watch Pods), and a token for it."""
    from kubernetes import client

    api = kube_apiserver.api_client()
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "liteboxd-gateway"}})
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "liteboxd-gateway"}, "rules": [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "liteboxd-gateway"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "liteboxd-gateway"},
        "subjects": [{"kind": "ServiceAccount", "name": "liteboxd-gateway", "namespace": namespace}]})
    return core.create_namespaced_service_account_token("liteboxd-gateway", namespace, {"spec": {
        "audiences": ["https://kubernetes.default.svc"], "expirationSeconds": 3600}}).status.token


def podman(*args, check=True) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, check=check, timeout=120)


def test_the_image_is_non_root_and_has_no_shell(gateway_image):
    config = json.loads(podman("image", "inspect", gateway_image["image"]).stdout)[0]["Config"]
    assert config["User"] == "65532:65532"
    assert config["Entrypoint"] == ["liteboxd-gateway"]
    # Nothing but the gateway's Python: no shell to run anything else with.
    shell = podman("run", "--rm", "--network", "none", "--entrypoint", "/bin/sh", gateway_image["image"], "-c", "id",
                   check=False)
    assert shell.returncode != 0
    assert int(gateway_image["image_size"]) > 0 and os.path.getsize(gateway_image["image_archive"]) > 0


async def test_in_cluster_with_a_service_account_token_it_proxies_with_the_token_only(
        tmp_path, gateway_image, kube_apiserver, kube_namespace, sandbox_factory):
    # What the kubelet mounts for a Pod's service account (readable by the Pod's user).
    secrets = tmp_path / "serviceaccount"
    secrets.mkdir(mode=0o755)
    (secrets / "token").write_text(service_account_token(kube_apiserver, kube_namespace))
    (secrets / "ca.crt").write_bytes(open(kube_apiserver.ca_file, "rb").read())
    (secrets / "namespace").write_text(kube_namespace)
    for path in secrets.iterdir():
        path.chmod(0o644)
    sandbox = await sandbox_factory()
    port, metrics_port = free_port(), free_port()
    name = f"liteboxd-gateway-test-{uuid.uuid4().hex[:8]}"
    with open(tmp_path / "gateway.log", "wb") as log:
        # The host's network namespace: the API server and the sandbox listen on its loopback.
        process = await asyncio.create_subprocess_exec(
            "podman", "run", "--name", name, "--network", "host",
            "--read-only", "--read-only-tmpfs=false", "--cap-drop", "all", "--security-opt", "no-new-privileges",
            "--volume", f"{secrets}:{SERVICE_ACCOUNT_DIR}:ro",
            "--env", "KUBERNETES_SERVICE_HOST=127.0.0.1", "--env", f"KUBERNETES_SERVICE_PORT={kube_apiserver.port}",
            "--env", "LITEBOXD_GATEWAY_LISTEN_HOST=127.0.0.1", "--env", f"LITEBOXD_GATEWAY_PORT={port}",
            "--env", "LITEBOXD_GATEWAY_METRICS_HOST=127.0.0.1", "--env", f"LITEBOXD_GATEWAY_METRICS_PORT={metrics_port}",
            "--env", f"LITEBOXD_GATEWAY_NAMESPACE={kube_namespace}", "--env", "LITEBOXD_GATEWAY_DRAIN_DELAY=0",
            gateway_image["image"], stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            # Ready once its service account listed the sandbox Pods.
            await wait_ready(http, url, process, tmp_path / "gateway.log")
            async with http.get(url + sandbox.path("/hello")) as response:
                assert response.status == 401
            async with http.get(url + sandbox.path("/hello"), headers={"X-Access-Token": sandbox.token}) as response:
                assert response.status == 200
                assert (await response.json())["raw_path"] == "/hello"
        assert [seen[1] for seen in sandbox.upstream.seen] == ["/hello"]
        # A Deployment's rollout stops Pods with SIGTERM: the gateway drains and exits 0.
        podman("stop", "--time", "30", name)
        assert await asyncio.wait_for(process.wait(), 60) == 0
        started = next(line for line in log_lines(tmp_path) if line["message"].endswith(" listening"))
        assert started["compiled"] == ["app", "http1", "proxy", "writes", "wsfast", "wsrelay"]
        assert started["event_loop"].startswith("uvloop")
    finally:
        podman("rm", "--force", name, check=False)
        if process.returncode is None:
            process.kill()
            await process.wait()


IMAGE_PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: The gateway role's image entry point
      ansible.builtin.include_role:
        name: liteboxd.sandbox_network.gateway
        tasks_from: image.yml
"""


@pytest.fixture
def containerd():
    """A containerd of its own (Debian's; K3s runs its own build of the same daemon): its socket."""
    state = pathlib.Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))  # short: a socket path has 108 bytes
    socket_path = state / "sock"
    (state / "config.toml").write_text(
        f'version = 2\nroot = "{state}/root"\nstate = "{state}/state"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        f'[grpc]\n  address = "{socket_path}"\n')
    log = open(state / "containerd.log", "wb")
    daemon = subprocess.Popen(["containerd", "--config", str(state / "config.toml")], stdout=log,
                              stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    log.close()
    try:
        for _unused in range(100):
            if subprocess.run(["ctr", "--address", str(socket_path), "version"], capture_output=True,
                              check=False).returncode == 0:
                break
            assert daemon.poll() is None, (state / "containerd.log").read_text()
            time.sleep(0.1)
        yield socket_path
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(state)


def test_the_image_entry_point_imports_the_archive_into_containerd(tmp_path, gateway_image, containerd):
    # K3s itself cannot run here: `k3s ctr` is containerd's ctr on K3s's socket, so a two-line
    # k3s hands it to the ctr of this test's containerd, which does the real import.
    k3s = tmp_path / "k3s"
    k3s.write_text(f'#!/bin/sh\n[ "$1" = ctr ] || exit 64\nshift\nexec ctr --address {containerd} "$@"\n')
    k3s.chmod(0o755)
    images_dir = tmp_path / "agent" / "images"
    variables = {"gateway_image": gateway_image["image"], "gateway_image_archive": gateway_image["image_archive"],
                 "gateway_k3s_images_dir": str(images_dir), "gateway_k3s_binary": str(k3s)}

    def imported():
        return subprocess.run(["ctr", "--address", str(containerd), "--namespace", "k8s.io", "images", "ls", "--quiet"],
                              capture_output=True, text=True, check=True).stdout.split()

    # Check mode predicts the directory and the copy (the import follows the copy) and changes nothing.
    assert run_role(tmp_path, variables, check=True, playbook=IMAGE_PLAYBOOK)["changed"] == 2
    assert imported() == [] and not images_dir.exists()
    assert run_role(tmp_path, variables, playbook=IMAGE_PLAYBOOK)["changed"] == 3
    # The reference the Deployment names is in the store CRI uses, and the archive where K3s
    # imports it again at start.
    assert imported() == [gateway_image["image"]]
    assert (images_dir / "liteboxd-gateway.tar").read_bytes() == pathlib.Path(gateway_image["image_archive"]).read_bytes()
    assert run_role(tmp_path, variables, playbook=IMAGE_PLAYBOOK)["changed"] == 0
    assert run_role(tmp_path, variables, check=True, playbook=IMAGE_PLAYBOOK)["changed"] == 0
