"""The API-server fixture is a real kube-apiserver: it validates, stores, patches and watches,
and never outlives the test run that started it."""
import os
import pathlib
import subprocess
import sys
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from tests.lib.collection import REPO


def test_pod_created_status_patched_and_watched(kube_apiserver, kube_namespace):
    api = client.CoreV1Api(kube_apiserver.api_client())
    api.create_namespaced_pod(kube_namespace, {
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "example.invalid/web:1"}]}})
    created = api.read_namespaced_pod("web", kube_namespace)
    assert created.status.phase == "Pending"  # no scheduler or kubelet: the test plays the kubelet

    stream = watch.Watch()
    events = stream.stream(api.list_namespaced_pod, kube_namespace, resource_version=created.metadata.resource_version,
                           timeout_seconds=20)
    api.patch_namespaced_pod_status("web", kube_namespace, {"status": {
        "phase": "Running", "podIP": "10.42.0.7",
        "conditions": [{"type": "Ready", "status": "True"}]}})
    event = next(events)
    stream.stop()

    assert event["type"] == "MODIFIED"
    pod = event["object"]
    assert (pod.status.phase, pod.status.pod_ip) == ("Running", "10.42.0.7")
    assert [(c.type, c.status) for c in pod.status.conditions] == [("Ready", "True")]


def test_network_policy_with_invalid_cidr_is_rejected_by_the_server(kube_apiserver, kube_namespace):
    api = client.NetworkingV1Api(kube_apiserver.api_client())
    policy = {"metadata": {"name": "bad"}, "spec": {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}}
    with pytest.raises(ApiException) as err:
        api.create_namespaced_network_policy(kube_namespace, policy)
    assert err.value.status == 422
    assert "10.0.0.0/33" in err.value.body
    assert api.list_namespaced_network_policy(kube_namespace).items == []


def test_cilium_crds_are_served(kube_apiserver):
    assert set(kube_apiserver.installed_crds) == {
        "ciliumnetworkpolicies.cilium.io", "ciliumclusterwidenetworkpolicies.cilium.io",
        "ciliumegressgatewaypolicies.cilium.io"}
    api = client.CustomObjectsApi(kube_apiserver.api_client())
    body = {"apiVersion": "cilium.io/v2", "kind": "CiliumEgressGatewayPolicy",
            "metadata": {"name": "fixture-probe"},
            "spec": {"selectors": [{"podSelector": {"matchLabels": {"a": "b"}}}],
                     "destinationCIDRs": ["0.0.0.0/0"],
                     "egressGateway": {"nodeSelector": {"matchLabels": {"liteboxd.io/role": "egress"}},
                                       "egressIP": "10.147.17.5"}}}
    api.create_cluster_custom_object("cilium.io", "v2", "ciliumegressgatewaypolicies", body)
    try:
        got = api.get_cluster_custom_object("cilium.io", "v2", "ciliumegressgatewaypolicies", "fixture-probe")
        assert got["spec"]["egressGateway"]["egressIP"] == "10.147.17.5"
    finally:
        api.delete_cluster_custom_object("cilium.io", "v2", "ciliumegressgatewaypolicies", "fixture-probe")


def test_cilium_schema_decides_on_a_bad_destination_cidr(kube_apiserver):
    """Cilium's own schema (CI) refuses /33; the minimal stand-in CRDs accept anything, which is why
    the modules validate their input themselves."""
    api = client.CustomObjectsApi(kube_apiserver.api_client())
    body = {"apiVersion": "cilium.io/v2", "kind": "CiliumEgressGatewayPolicy", "metadata": {"name": "bad-cidr"},
            "spec": {"selectors": [{"podSelector": {}}], "destinationCIDRs": ["0.0.0.0/33"],
                     "egressGateway": {"nodeSelector": {}, "egressIP": "10.147.17.5"}}}
    if os.environ.get("LITEBOXD_CILIUM_CRDS"):
        with pytest.raises(ApiException) as err:
            api.create_cluster_custom_object("cilium.io", "v2", "ciliumegressgatewaypolicies", body)
        assert err.value.status == 422
        assert "destinationCIDRs" in err.value.body
    else:
        api.create_cluster_custom_object("cilium.io", "v2", "ciliumegressgatewaypolicies", body)
        api.delete_cluster_custom_object("cilium.io", "v2", "ciliumegressgatewaypolicies", "bad-cidr")


def test_apiserver_restart_keeps_data(kube_apiserver, kube_namespace):
    core = client.CoreV1Api(kube_apiserver.api_client())
    core.create_namespaced_config_map(kube_namespace, {"metadata": {"name": "kept"}, "data": {"k": "v"}})
    kube_apiserver.restart_apiserver()
    assert client.CoreV1Api(kube_apiserver.api_client()).read_namespaced_config_map("kept", kube_namespace).data == {"k": "v"}


INNER_TEST = '''
import pathlib, time
PIDS = pathlib.Path({pids!r})

def test_uses_the_server(kube_apiserver):
    PIDS.write_text(" ".join(map(str, kube_apiserver.pids)))
    if {sleep}:
        time.sleep(600)  # killed from outside before this ends
    assert False, "this inner test fails on purpose"
'''


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def _wait_gone(pids, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


def _inner_run(tmp_path, sleep):
    pids_file = tmp_path / "pids"
    test_file = tmp_path / "test_inner.py"
    test_file.write_text(INNER_TEST.format(pids=str(pids_file), sleep=sleep))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.lib.apiserver", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), str(test_file)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return proc, pids_file


def test_a_failing_test_leaves_no_server_behind(tmp_path):
    proc, pids_file = _inner_run(tmp_path, sleep=False)
    output = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 1, output
    assert "this inner test fails on purpose" in output
    pids = [int(p) for p in pids_file.read_text().split()]
    assert len(pids) == 2  # etcd and kube-apiserver
    assert _wait_gone(pids) == []


def test_a_killed_test_run_leaves_no_server_behind(tmp_path):
    proc, pids_file = _inner_run(tmp_path, sleep=True)
    try:
        deadline = time.monotonic() + 300
        while not pids_file.exists() or not pids_file.read_text():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.monotonic() < deadline, "the inner run never started its server"
            time.sleep(0.2)
        pids = [int(p) for p in pids_file.read_text().split()]
        assert all(_alive(p) for p in pids)
    finally:
        proc.kill()  # SIGKILL: no finalizer runs; the parent-death signal must stop the servers
        proc.wait()
    assert _wait_gone(pids) == []
