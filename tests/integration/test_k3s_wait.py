"""The k3s role's kubeconfig fetch and node wait (tasks/kubeconfig.yml, tasks/wait.yml, in the order
tasks/main.yml runs them) through ansible-playbook against a real kube-apiserver.

The lab's K3s hosts are inventory hosts on a local connection; the first server's K3s kubeconfig is
a K3s-shaped file (API on 127.0.0.1:6443, so only a rewritten endpoint reaches the server) made from
the fixture's credentials; the hosts are Node objects, and the test plays their kubelets by writing
the Node status.
"""
import collections
import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from tests.integration.test_k3s_kubeconfig import k3s_style_kubeconfig
from tests.lib.collection import REPO, install_on_path
from tests.lib.modules import run_module

PLAYBOOK_BIN = pathlib.Path(sys.executable).parent / "ansible-playbook"
CONTEXT = "liteboxd-lab"
# Nodes are named by k3s_node_name (the role passes it to K3s as node-name): the servers take its
# default, the inventory name; the agent's is set.
NODE_NAMES = {"lab-egress": "lab-egress", "lab-sandbox-inet": "lab-sandbox-inet", "lab-sandbox-noinet": "sandbox-agent-1"}

NO_NETWORK = ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
              "message:Network plugin returns error: cni plugin not initialized")
PLEG_UNHEALTHY = "PLEG is not healthy: pleg was last seen active 3m0s ago; threshold is 3m0s"

Lab = collections.namedtuple("Lab", "path core")

PLAYBOOK = """
- name: The k3s role's kubeconfig fetch and node wait
  hosts: k3s_servers:k3s_agents
  gather_facts: true
  gather_subset: [min]
  tasks:
    - name: Fetch the first server's kubeconfig for the controller
      ansible.builtin.include_role:
        name: liteboxd.sandbox_network.k3s
        tasks_from: kubeconfig.yml
    - name: Wait until the nodes are Ready
      ansible.builtin.include_role:
        name: liteboxd.sandbox_network.k3s
        tasks_from: wait.yml
"""


@pytest.fixture
def lab(kube_apiserver, tmp_path):
    """The inventory and the first server's k3s.yaml; the Nodes are deleted afterwards."""
    server_kubeconfig = tmp_path / "k3s.yaml"
    server_kubeconfig.write_text(yaml.safe_dump(k3s_style_kubeconfig(kube_apiserver.ca_file, kube_apiserver.token)))
    server_kubeconfig.chmod(0o600)
    servers = {"lab-egress": {}, "lab-sandbox-inet": {}}
    inventory = {"all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                 "k3s_server_kubeconfig_path": str(server_kubeconfig), "k3s_api_endpoint": kube_apiserver.url,
                 "k3s_kubeconfig_dest": str(tmp_path / "controller" / "liteboxd.yaml"),
                 "k3s_kubeconfig_context": CONTEXT, "k3s_wait_timeout": 120},
        "children": {"k3s_servers": {"hosts": servers}, "k3s_agents": {"hosts": {"lab-sandbox-noinet": {"k3s_node_name": NODE_NAMES["lab-sandbox-noinet"]}}}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "controller").mkdir()
    core = client.CoreV1Api(kube_apiserver.api_client())
    yield Lab(tmp_path, core)
    for name in NODE_NAMES.values():
        try:
            core.delete_node(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


def run_playbook(tmp_path, *options, extra=None):
    """Return (returncode, parsed JSON output)."""
    root = install_on_path()
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    command = [str(PLAYBOOK_BIN), "-i", str(tmp_path / "hosts.yml"), str(tmp_path / "play.yml")] + list(options)
    if extra:
        command += ["-e", json.dumps(extra)]
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(root), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_NOCOLOR="1")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=REPO, check=False)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("ansible-playbook printed no JSON:\n%s\n%s" % (proc.stdout[-4000:], proc.stderr[-4000:]))


def task_results(output, task_name):
    """{host: result} of the role's task of that name (a run_once task reports one host)."""
    for play in output["plays"]:
        for task in play["tasks"]:
            if task["task"]["name"] == "liteboxd.sandbox_network.k3s : " + task_name:
                return task["hosts"]
    return {}


def register_node(core, name):
    """What a kubelet does first: create its Node, with no status yet."""
    core.create_node({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})


def report(core, name, status, reason, message):
    """What a kubelet posts: the Ready condition and its version."""
    core.patch_node_status(name, {"status": {
        "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": message,
                        "lastHeartbeatTime": "2026-11-23T10:15:02Z", "lastTransitionTime": "2026-11-23T10:15:02Z"}],
        "nodeInfo": {"kubeletVersion": "v1.33.6+k3s1"}}})


def report_ready(core, name):
    report(core, name, "True", "KubeletReady", "kubelet is posting ready status")


def report_no_network(core, name):
    """A fresh K3s node without Flannel, before Cilium runs."""
    report(core, name, "False", "KubeletNotReady", NO_NETWORK)


def kubelets_start_once(written, core, stop):
    """Play the kubelets only once the controller's kubeconfig exists, so a wait that returns must have
    watched the Nodes come up: the first server turns Ready, the second Ready but for its network (no
    CNI yet), and the agent registers and reports the same."""
    while not written.exists():
        if stop.wait(0.1):
            return
    report_ready(core, NODE_NAMES["lab-egress"])
    report_no_network(core, NODE_NAMES["lab-sandbox-inet"])
    register_node(core, NODE_NAMES["lab-sandbox-noinet"])
    report_no_network(core, NODE_NAMES["lab-sandbox-noinet"])


def run_with_kubelets(tmp_path, core, written):
    stop = threading.Event()
    kubelets = threading.Thread(target=kubelets_start_once, args=(written, core, stop))
    kubelets.start()
    try:
        return run_playbook(tmp_path)
    finally:
        stop.set()
        kubelets.join()


def test_fetches_the_kubeconfig_then_waits_until_every_node_is_up(kube_apiserver, lab):
    tmp_path, core = lab.path, lab.core
    dest = tmp_path / "controller" / "liteboxd.yaml"
    for host in ("lab-egress", "lab-sandbox-inet"):
        register_node(core, NODE_NAMES[host])  # registered, no kubelet report yet: not up

    returncode, output = run_with_kubelets(tmp_path, core, dest)

    assert returncode == 0, json.dumps(output)[-4000:]
    waited = task_results(output, "Wait until the node is Ready")
    no_network = {"ready": False, "state": "Ready=False (KubeletNotReady: %s)" % NO_NETWORK}
    assert {host: result["nodes"] for host, result in waited.items()} == {
        "lab-egress": [{"name": "lab-egress", "kubelet_version": "v1.33.6+k3s1", "ready": True,
                        "state": "Ready=True (KubeletReady: kubelet is posting ready status)"}],
        "lab-sandbox-inet": [dict(no_network, name="lab-sandbox-inet", kubelet_version="v1.33.6+k3s1")],
        "lab-sandbox-noinet": [dict(no_network, name=NODE_NAMES["lab-sandbox-noinet"], kubelet_version="v1.33.6+k3s1")]}
    assert {host: stats["changed"] for host, stats in output["stats"].items()} == {
        "lab-egress": 1, "lab-sandbox-inet": 0, "lab-sandbox-noinet": 0}  # the kubeconfig written, nothing else
    fetched = yaml.safe_load(dest.read_text())
    assert [(c["name"], c["cluster"]["server"]) for c in fetched["clusters"]] == [(CONTEXT, kube_apiserver.url)]
    assert fetched["users"] == [{"name": CONTEXT, "user": {"token": kube_apiserver.token}}]
    assert fetched["contexts"] == [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT}}]
    assert fetched["current-context"] == CONTEXT
    assert oct(dest.stat().st_mode & 0o777) == "0o600"
    assert not temporary_kubeconfig(output).exists(), "the wait's temporary kubeconfig must be removed"


def temporary_kubeconfig(output):
    created = task_results(output, "Create a private temporary kubeconfig on the controller")
    return pathlib.Path(next(iter(created.values()))["path"])


def test_an_existing_kubeconfig_is_kept_unless_forced_then_backed_up(kube_apiserver, lab):
    tmp_path, core = lab.path, lab.core
    dest = tmp_path / "controller" / "liteboxd.yaml"
    users_own = "# the user's own kubeconfig, for another cluster\n"
    dest.write_text(users_own)
    for name in NODE_NAMES.values():
        register_node(core, name)
        report_ready(core, name)

    kept_rc, kept = run_playbook(tmp_path)
    kept_text = dest.read_text()
    forced_rc, forced = run_playbook(tmp_path, extra={"k3s_kubeconfig_force": True})

    # The wait does not use the file at the destination: it succeeds although that file is not a kubeconfig.
    assert kept_rc == 0, json.dumps(kept)[-4000:]
    assert kept_text == users_own
    assert all(stats["changed"] == 0 for stats in kept["stats"].values()), "a second run must change nothing"
    assert not next(iter(task_results(kept, "Write the kubeconfig on the controller with the API endpoint rewritten")
                         .values()))["changed"]
    assert forced_rc == 0, json.dumps(forced)[-4000:]
    assert yaml.safe_load(dest.read_text())["clusters"][0]["cluster"]["server"] == kube_apiserver.url
    backups = [path for path in dest.parent.iterdir() if path.name.startswith("liteboxd.yaml.")]
    assert [path.read_text() for path in backups] == [users_own]


def test_a_node_that_never_comes_up_fails_the_wait_naming_it(kube_apiserver, lab):
    tmp_path, core = lab.path, lab.core
    for host in NODE_NAMES:
        register_node(core, NODE_NAMES[host])
    report_no_network(core, "lab-egress")
    report_no_network(core, "lab-sandbox-inet")
    report(core, NODE_NAMES["lab-sandbox-noinet"], "False", "KubeletNotReady", PLEG_UNHEALTHY)

    returncode, output = run_playbook(tmp_path, extra={"k3s_wait_timeout": 3})
    network_returncode, network_output = run_playbook(
        tmp_path, extra={"k3s_wait_timeout": 3, "k3s_wait_for_network": True})

    # By default only the agent, whose kubelet reports more than a missing network, fails.
    waited = task_results(output, "Wait until the node is Ready")
    assert returncode == 2
    assert [host for host, result in waited.items() if result.get("failed")] == ["lab-sandbox-noinet"]
    assert waited["lab-sandbox-noinet"]["msg"] == "Nodes not Ready after 3s at %s: %s: Ready=False (KubeletNotReady: %s)" % (
        kube_apiserver.url, NODE_NAMES["lab-sandbox-noinet"], PLEG_UNHEALTHY)
    assert not temporary_kubeconfig(output).exists(), "the temporary kubeconfig must be removed after a failed wait too"
    # With k3s_wait_for_network the servers' missing network fails them too.
    waited = task_results(network_output, "Wait until the node is Ready")
    assert network_returncode == 2
    assert sorted(host for host, result in waited.items() if result.get("failed")) == sorted(NODE_NAMES)
    assert waited["lab-egress"]["msg"] == "Nodes not Ready after 3s at %s: lab-egress: Ready=False (KubeletNotReady: %s)" % (
        kube_apiserver.url, NO_NETWORK)


def test_check_mode_on_a_fresh_controller_and_cluster_changes_nothing(lab):
    tmp_path = lab.path
    (tmp_path / "k3s.yaml").unlink()  # K3s has not run yet

    returncode, output = run_playbook(tmp_path, "--check")

    assert returncode == 0, json.dumps(output)[-4000:]
    assert not (tmp_path / "controller" / "liteboxd.yaml").exists()
    assert all(result.get("skipped") for result in task_results(output, "Wait until the node is Ready").values())
    assert all(stats["failures"] == 0 and stats["changed"] == 0 for stats in output["stats"].values())


def test_the_module_names_every_node_not_ready_and_why(kube_apiserver, lab):
    core = lab.core
    register_node(core, "lab-egress")
    report_no_network(core, "lab-egress")
    unregistered = NODE_NAMES["lab-sandbox-noinet"]

    failed = run_module("node_ready", dict(kubeconfig=kube_apiserver.kubeconfig, timeout=2,
                                           names=["lab-egress", unregistered]), expect_fail=True)

    assert failed["msg"] == (
        "Nodes not Ready after 2s at %s: lab-egress: Ready=False (KubeletNotReady: %s); %s: not registered (no Node "
        "object of that name)" % (kube_apiserver.url, NO_NETWORK, unregistered))
    assert failed["nodes"] == []
