"""The sandbox module against a real kube-apiserver + etcd (the test plays the kubelet)."""
import concurrent.futures
import hashlib
import time

import pytest
from kubernetes import client

from tests.lib.modules import run_module

IMAGE = "registry.example.invalid/liteboxd/python-sandbox:3.12"


def auth(server):
    return {"kubeconfig": server.kubeconfig}


def sandbox_args(server, namespace, name="sbx-1", **extra):
    args = dict(auth(server), name=name, namespace=namespace, image=IMAGE, command=["python", "-m", "http.server"],
                ports=[8000, 9000], env={"MODE": "test"}, wait=False, gateway_url="https://gw.example.com/")
    args.update(extra)
    return args


def read_pod(server, namespace, name):
    return client.CoreV1Api(server.api_client()).read_namespaced_pod(name, namespace)


def domain_policies(server, namespace):
    items = client.CustomObjectsApi(server.api_client()).list_namespaced_custom_object(
        "cilium.io", "v2", namespace, "ciliumnetworkpolicies")["items"]
    return dict((item["metadata"]["name"], item) for item in items)


def play_kubelet(server, namespace, name, ip="10.42.0.17"):
    client.CoreV1Api(server.api_client()).patch_namespaced_pod_status(name, namespace, {"status": {
        "phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}})


def test_create_returns_the_token_once_and_a_second_run_keeps_it(kube_apiserver, kube_namespace):
    args = sandbox_args(kube_apiserver, kube_namespace)

    created = run_module("sandbox", args)
    pod = read_pod(kube_apiserver, kube_namespace, "sbx-1")
    again = run_module("sandbox", args)

    token = created["access_token"]
    assert created["changed"] is True
    assert len(token) >= 43  # token_urlsafe(32): 256 bits
    assert pod.metadata.annotations["liteboxd.io/access-token"] == token
    assert "liteboxd.io/access-token-sha256" not in pod.metadata.annotations
    assert pod.metadata.labels == {"liteboxd.io/sandbox": "true", "liteboxd.io/sandbox-id": "sbx-1",
                                   "app.kubernetes.io/managed-by": "liteboxd.sandbox_network"}
    container = pod.spec.containers[0]
    assert (container.image, container.command) == (IMAGE, ["python", "-m", "http.server"])
    assert [p.container_port for p in container.ports] == [8000, 9000]
    assert pod.spec.automount_service_account_token is False
    assert created["access_url"] == "https://gw.example.com/sandbox/sbx-1/port/8000/"
    assert (created["phase"], created["pod_ip"], created["ready"]) == ("Pending", None, False)
    assert again["changed"] is False
    assert "access_token" not in again
    assert read_pod(kube_apiserver, kube_namespace, "sbx-1").metadata.annotations[
        "liteboxd.io/access-token"] == token


def test_hashed_token_storage_and_rotation(kube_apiserver, kube_namespace):
    args = sandbox_args(kube_apiserver, kube_namespace)
    token = run_module("sandbox", args)["access_token"]

    to_hash = run_module("sandbox", dict(args, token_storage="hash"))
    annotations = read_pod(kube_apiserver, kube_namespace, "sbx-1").metadata.annotations
    back = run_module("sandbox", args, expect_fail=True)
    rotated = run_module("sandbox", dict(args, token_storage="hash", rotate_token=True))
    rotated_annotations = read_pod(kube_apiserver, kube_namespace, "sbx-1").metadata.annotations

    assert to_hash["changed"] is True and "access_token" not in to_hash
    assert annotations["liteboxd.io/access-token-sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert "liteboxd.io/access-token" not in annotations
    assert "cannot be turned back into the token; set rotate_token: true" in back["msg"]
    assert rotated["changed"] is True
    assert rotated["access_token"] != token
    assert rotated_annotations["liteboxd.io/access-token-sha256"] == \
        hashlib.sha256(rotated["access_token"].encode()).hexdigest()


def test_created_with_hashed_storage_never_stores_the_token(kube_apiserver, kube_namespace):
    created = run_module("sandbox", sandbox_args(kube_apiserver, kube_namespace, token_storage="hash"))
    annotations = read_pod(kube_apiserver, kube_namespace, "sbx-1").metadata.annotations
    assert annotations["liteboxd.io/access-token-sha256"] == \
        hashlib.sha256(created["access_token"].encode()).hexdigest()
    assert created["access_token"] not in str(annotations)


def test_network_changes_in_place(kube_apiserver, kube_namespace):
    args = sandbox_args(kube_apiserver, kube_namespace)
    run_module("sandbox", args)
    uid = read_pod(kube_apiserver, kube_namespace, "sbx-1").metadata.uid

    opened = run_module("sandbox", dict(args, network={"allow_internet_access": True,
                                                       "allowed_domains": ["PyPI.org", "*.github.com"]}), diff=True)
    opened_pod = read_pod(kube_apiserver, kube_namespace, "sbx-1")
    opened_policies = domain_policies(kube_apiserver, kube_namespace)
    steady = run_module("sandbox", dict(args, network={"allow_internet_access": True,
                                                       "allowed_domains": ["PyPI.org", "*.github.com"]}))
    closed = run_module("sandbox", dict(args, network={"allow_internet_access": False}))
    closed_pod = read_pod(kube_apiserver, kube_namespace, "sbx-1")

    assert opened["changed"] is True
    assert opened["actions"] == {"pod": "patched", "domain_policy": "created"}
    assert opened_pod.metadata.uid == uid
    assert opened_pod.metadata.labels["liteboxd.io/internet-access"] == "true"
    policy = opened_policies["allow-domains-sbx-1"]
    assert policy["metadata"]["labels"]["liteboxd.io/policy-set"] == "domains"
    assert policy["spec"]["endpointSelector"] == {"matchLabels": {"liteboxd.io/sandbox-id": "sbx-1"}}
    assert policy["spec"]["egress"] == [{
        "toFQDNs": [{"matchName": "pypi.org"}, {"matchPattern": "*.github.com"}],
        "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}, {"port": "443", "protocol": "TCP"}]}]}]
    pod_diff = next(d for d in opened["diff"] if d["after_header"].startswith("Pod"))
    assert pod_diff["after"]["metadata"]["annotations"]["liteboxd.io/access-token"] == "<redacted>"
    assert steady["changed"] is False
    assert closed["changed"] is True
    assert closed["actions"] == {"pod": "patched", "domain_policy": "deleted"}
    assert closed_pod.metadata.uid == uid
    assert "liteboxd.io/internet-access" not in closed_pod.metadata.labels
    assert "allow-domains-sbx-1" not in domain_policies(kube_apiserver, kube_namespace)


def test_a_spec_change_needs_recreate_which_keeps_the_token(kube_apiserver, kube_namespace):
    args = sandbox_args(kube_apiserver, kube_namespace)
    token = run_module("sandbox", args)["access_token"]
    uid = read_pod(kube_apiserver, kube_namespace, "sbx-1").metadata.uid

    refused = run_module("sandbox", dict(args, image=IMAGE + "-new"), expect_fail=True)
    planned = run_module("sandbox", dict(args, image=IMAGE + "-new", recreate=True), check=True, diff=True)
    unchanged_uid = read_pod(kube_apiserver, kube_namespace, "sbx-1").metadata.uid
    recreated = run_module("sandbox", dict(args, image=IMAGE + "-new", recreate=True))
    pod = read_pod(kube_apiserver, kube_namespace, "sbx-1")

    assert "different Pod spec" in refused["msg"] and "recreate: true" in refused["msg"]
    assert planned["changed"] is True and planned["actions"]["pod"] == "recreated"
    assert planned["diff"][0]["after"]["spec"]["containers"][0]["image"] == IMAGE + "-new"
    assert unchanged_uid == uid
    assert recreated["actions"]["pod"] == "recreated"
    assert "access_token" not in recreated
    assert pod.metadata.uid != uid
    assert pod.spec.containers[0].image == IMAGE + "-new"
    assert pod.metadata.annotations["liteboxd.io/access-token"] == token


def test_absent_deletes_the_pod_and_its_domain_policy(kube_apiserver, kube_namespace):
    args = sandbox_args(kube_apiserver, kube_namespace, network={"allowed_domains": ["example.com"]})
    run_module("sandbox", args)

    removed = run_module("sandbox", dict(args, state="absent", wait=True))
    again = run_module("sandbox", dict(args, state="absent"))

    assert removed["changed"] is True
    assert removed["actions"] == {"pod": "deleted", "domain_policy": "deleted"}
    assert client.CoreV1Api(kube_apiserver.api_client()).list_namespaced_pod(kube_namespace).items == []
    assert domain_policies(kube_apiserver, kube_namespace) == {}
    assert again["changed"] is False


def test_check_mode_creates_nothing_and_returns_no_token(kube_apiserver, kube_namespace):
    planned = run_module("sandbox", sandbox_args(kube_apiserver, kube_namespace,
                                                 network={"allowed_domains": ["example.com"]}), check=True, diff=True)

    assert planned["changed"] is True
    assert "access_token" not in planned
    assert client.CoreV1Api(kube_apiserver.api_client()).list_namespaced_pod(kube_namespace).items == []
    assert domain_policies(kube_apiserver, kube_namespace) == {}
    pod_diff = planned["diff"][0]
    assert pod_diff["before"] == {}
    # The server's dry-run answer, defaulted by the server (so it was validated there).
    assert pod_diff["after"]["spec"]["containers"][0]["terminationMessagePath"] == "/dev/termination-log"
    assert pod_diff["after"]["metadata"]["annotations"]["liteboxd.io/access-token"] == "<redacted>"


def test_wait_returns_ready_when_the_kubelet_reports_it(kube_apiserver, kube_namespace):
    core = client.CoreV1Api(kube_apiserver.api_client())
    args = sandbox_args(kube_apiserver, kube_namespace, wait=True, wait_timeout=60)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(run_module, "sandbox", args)
        deadline = time.monotonic() + 60
        while not core.list_namespaced_pod(kube_namespace).items:
            assert time.monotonic() < deadline and not running.done(), "the module never created the Pod"
            time.sleep(0.1)
        play_kubelet(kube_apiserver, kube_namespace, "sbx-1")
        result = running.result(timeout=90)

    assert result["ready"] is True
    assert (result["phase"], result["pod_ip"]) == ("Running", "10.42.0.17")
    assert result["access_token"]


def test_wait_times_out_with_a_clear_message(kube_apiserver, kube_namespace):
    failed = run_module("sandbox", sandbox_args(kube_apiserver, kube_namespace, wait=True, wait_timeout=2),
                        expect_fail=True)
    assert failed["msg"].startswith("timed out after 2s waiting for Pod %s/sbx-1: phase Pending" % kube_namespace)
    assert "is the Pod scheduled" in failed["msg"]


@pytest.mark.parametrize("storage", ["plain", "hash"])
def test_a_wait_timeout_after_creation_still_returns_the_token(kube_apiserver, kube_namespace, storage):
    failed = run_module("sandbox", sandbox_args(kube_apiserver, kube_namespace, wait=True, wait_timeout=2,
                                                token_storage=storage), expect_fail=True)
    annotations = read_pod(kube_apiserver, kube_namespace, "sbx-1").metadata.annotations

    assert failed["changed"] is True
    assert failed["actions"] == {"pod": "created", "domain_policy": "absent"}
    assert "returned in access_token of this failed result" in failed["msg"]
    token = failed["access_token"]
    stored = {"plain": ("liteboxd.io/access-token", token),
              "hash": ("liteboxd.io/access-token-sha256", hashlib.sha256(token.encode()).hexdigest())}[storage]
    assert annotations[stored[0]] == stored[1]


def test_a_wait_timeout_on_an_unchanged_sandbox_reports_no_change(kube_apiserver, kube_namespace):
    run_module("sandbox", sandbox_args(kube_apiserver, kube_namespace))
    failed = run_module("sandbox", sandbox_args(kube_apiserver, kube_namespace, wait=True, wait_timeout=1),
                        expect_fail=True)
    assert failed.get("changed", False) is False
    assert "access_token" not in failed


@pytest.mark.parametrize("bad, message", [
    ({"name": "Sbx_1"}, "name: 'Sbx_1' is not a valid name"),
    ({"network": {"allowed_domains": ["a.*.example.com"]}}, "network.allowed_domains[0]: 'a.*.example.com' is not"),
    ({"network": {"allowed_domains": ["https://example.com"]}}, "network.allowed_domains[0]"),
    ({"network": {"allowed_domains": ["*"]}}, "network.allowed_domains[0]: '*' is not a domain name"),
    ({"network": {"allowed_domains": ["10.0.0.1"]}}, "network.allowed_domains[0]: '10.0.0.1'"),
    ({"network": {"allow_internet": True}}, "allow_internet"),
    ({"ports": [65536]}, "ports[0]: 65536 is not a port number"),
    ({"resources": {"limit": {"cpu": "1"}}}, "resources: unknown field 'limit'"),
    ({"labels": {"liteboxd.io/internet-access": "true"}}, "labels: 'liteboxd.io/internet-access' is set by the"),
    ({"image": None}, "image: required with state=present"),
    ({"bogus": 1}, "Unsupported parameters"),
])
def test_malformed_input_is_refused_before_any_request(bad, message):
    args = dict(host="https://127.0.0.1:9", api_key="unused", name="sbx-1", image=IMAGE, wait=False)
    args.update(bad)
    failed = run_module("sandbox", args, expect_fail=True)
    assert message in failed["msg"]
    assert "127.0.0.1:9" not in failed["msg"]
