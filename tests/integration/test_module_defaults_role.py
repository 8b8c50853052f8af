"""The sandbox_policies role through ansible-playbook: its module_defaults block hands
sandbox_policies_k8s_auth to every Kubernetes module; idempotent, check mode predicts, absent rolls back."""
import json
import os
import pathlib
import subprocess
import sys

import yaml
from kubernetes import client

from tests.lib.collection import install_on_path

PLAYBOOK_BIN = pathlib.Path(sys.executable).parent / "ansible-playbook"


def run_role(server, tmp_path, variables, *options, expect_rc=0):
    root = install_on_path()
    play = [{"hosts": "localhost", "gather_facts": False,
             "roles": [{"role": "liteboxd.sandbox_network.sandbox_policies"}]}]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play))
    extra = dict(variables, sandbox_policies_k8s_auth={"host": server.url, "api_key": server.token,
                                                       "ca_cert": server.ca_file},
                 ansible_python_interpreter=sys.executable)
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(root), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_HOME=str(tmp_path / "ansible-home"))
    proc = subprocess.run([str(PLAYBOOK_BIN), "-i", "localhost,", "-c", "local", "-e", json.dumps(extra), str(path)]
                          + list(options), capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == expect_rc, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout)


def cluster_state(server, namespace, egress_name):
    api_client = server.api_client()
    custom = client.CustomObjectsApi(api_client)
    names = {p.metadata.name for p in client.NetworkingV1Api(api_client).list_namespaced_network_policy(namespace).items}
    names |= {p["metadata"]["name"] for p in custom.list_namespaced_custom_object(
        "cilium.io", "v2", namespace, "ciliumnetworkpolicies")["items"]}
    egress = [p for p in custom.list_cluster_custom_object("cilium.io", "v2", "ciliumegressgatewaypolicies")["items"]
              if p["metadata"]["name"] == egress_name]
    return names, egress[0] if egress else None


def test_role_applies_reconciles_and_rolls_back(kube_apiserver, kube_namespace, tmp_path):
    egress_name = "egress-" + kube_namespace[-20:].strip("-")
    variables = {"sandbox_policies_namespace": kube_namespace, "sandbox_policies_egress_policy_name": egress_name,
                 "sandbox_policies_egress_ip": "10.147.17.5", "sandbox_policies_gateway_ports": [8000]}
    try:
        first = run_role(kube_apiserver, tmp_path, variables)
        names, egress = cluster_state(kube_apiserver, kube_namespace, egress_name)
        second = run_role(kube_apiserver, tmp_path, variables)
        client.NetworkingV1Api(kube_apiserver.api_client()).delete_namespaced_network_policy(
            "default-deny-all", kube_namespace)
        checked = run_role(kube_apiserver, tmp_path, variables, "--check", "--diff")
        names_after_check = cluster_state(kube_apiserver, kube_namespace, egress_name)[0]
        repaired = run_role(kube_apiserver, tmp_path, variables)
        rolled_back = run_role(kube_apiserver, tmp_path, dict(variables, sandbox_policies_state="absent"))
        names_after_rollback, egress_after_rollback = cluster_state(kube_apiserver, kube_namespace, egress_name)
    finally:
        run_role(kube_apiserver, tmp_path, dict(variables, sandbox_policies_state="absent"))

    assert first["stats"]["localhost"]["changed"] == 2
    assert names == {"default-deny-all", "allow-dns", "deny-k8s-api", "allow-gateway-ingress",
                     "allow-gateway-ingress-from-hosts", "allow-internet-egress"}
    assert egress["spec"]["egressGateway"]["egressIP"] == "10.147.17.5"
    assert egress["spec"]["selectors"][0]["podSelector"]["matchLabels"]["io.kubernetes.pod.namespace"] == kube_namespace
    assert second["stats"]["localhost"]["changed"] == 0
    assert checked["stats"]["localhost"]["changed"] == 1
    assert "default-deny-all" not in names_after_check
    assert repaired["stats"]["localhost"]["changed"] == 1
    assert rolled_back["stats"]["localhost"]["changed"] == 2
    assert names_after_rollback == set() and egress_after_rollback is None


def test_role_refuses_an_enabled_egress_gateway_without_an_address(kube_apiserver, kube_namespace, tmp_path):
    result = run_role(kube_apiserver, tmp_path, {"sandbox_policies_namespace": kube_namespace}, expect_rc=2)
    failed = [host["localhost"] for play in result["plays"] for task in play["tasks"]
              for host in [task["hosts"]] if host["localhost"].get("failed")]
    assert "sandbox_policies_egress_ip (the egress node's ZeroTier address)" in failed[0]["msg"]
    assert cluster_state(kube_apiserver, kube_namespace, "none")[0] == set()  # refused before anything was applied
