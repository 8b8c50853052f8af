"""One module_defaults block for the `k8s` action group configures every Kubernetes module, run
through ansible-playbook exactly as a user (or AWX) runs it."""
import json
import os
import pathlib
import subprocess
import sys

import yaml
from kubernetes import client

from tests.lib.collection import install_on_path
from tests.lib.modules import run_module

PLAYBOOK_BIN = pathlib.Path(sys.executable).parent / "ansible-playbook"


def playbook(server, namespace, egress_name):
    return [{
        "name": "Cluster plane with one connection block",
        "hosts": "localhost",
        "gather_facts": False,
        "module_defaults": {"group/liteboxd.sandbox_network.k8s": {
            "host": server.url, "api_key": server.token, "ca_cert": server.ca_file}},
        "tasks": [
            {"name": "Policies", "liteboxd.sandbox_network.sandbox_network_policies": {"namespace": namespace}},
            {"name": "Egress gateway", "liteboxd.sandbox_network.egress_gateway_policy": {
                "name": egress_name, "sandbox_namespace": namespace, "egress_ip": "10.147.17.5"}},
            {"name": "Sandbox", "register": "sandbox", "no_log": True,
             "liteboxd.sandbox_network.sandbox": {"name": "sbx-1", "namespace": namespace, "wait": False,
                                                  "image": "example.invalid/sandbox:1", "ports": [8000],
                                                  "network": {"allow_internet_access": True}}},
            {"name": "A token comes back on creation only", "ansible.builtin.assert": {"that": [
                "(sandbox.access_token is defined) == (sandbox is changed)",
                "sandbox.access_url == '/sandbox/sbx-1/port/8000/'"]}},
        ],
    }]


def run_playbook(path):
    root = install_on_path()
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(root), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_NOCOLOR="1", ANSIBLE_HOME=str(path.parent / "ansible-home"))
    proc = subprocess.run([str(PLAYBOOK_BIN), "-i", "localhost,", "-c", "local",
                           "-e", "ansible_python_interpreter=%s" % sys.executable, str(path)],
                          capture_output=True, text=True, timeout=300, env=env, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc.stdout, json.loads(proc.stdout)["stats"]["localhost"]


def test_one_module_defaults_block_configures_every_module(kube_apiserver, kube_namespace, tmp_path):
    egress_name = "egress-" + kube_namespace[-20:].strip("-")
    path = tmp_path / "cluster.yml"
    path.write_text(yaml.safe_dump(playbook(kube_apiserver, kube_namespace, egress_name), sort_keys=False))
    try:
        first_output, first = run_playbook(path)
        second_output, second = run_playbook(path)
        pod = client.CoreV1Api(kube_apiserver.api_client()).read_namespaced_pod("sbx-1", kube_namespace)
    finally:
        run_module("egress_gateway_policy", {"host": kube_apiserver.url, "api_key": kube_apiserver.token,
                                             "ca_cert": kube_apiserver.ca_file, "name": egress_name, "state": "absent"})

    assert (first["failures"], first["changed"]) == (0, 3)
    assert (second["failures"], second["changed"]) == (0, 0)
    assert pod.metadata.labels["liteboxd.io/internet-access"] == "true"
    token = pod.metadata.annotations["liteboxd.io/access-token"]
    assert token not in first_output and token not in second_output  # no_log kept it out of the output
