"""The egress_node role's re-apply of the egress gateway policy (tasks/reapply_policy.yml, run by its
handler after the egress IP or its tunnel device changed, and by verify.yml after it re-created the
device) through ansible-playbook against a real kube-apiserver serving the CiliumEgressGatewayPolicy CRD.

Cilium processes a policy again on any update of the object; the task must update every policy the
platform manages in place (same object, a new resourceVersion) and leave the others alone."""
import json
import os
import pathlib
import subprocess
import sys
import uuid

import pytest
from kubernetes import client

from tests.lib.collection import REPO, install_on_path

GROUP, VERSION, PLURAL = "cilium.io", "v2", "ciliumegressgatewaypolicies"
MANAGED = {"app.kubernetes.io/managed-by": "liteboxd.sandbox_network"}
PLAYBOOK = """
- name: Re-apply the egress gateway policy
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Re-apply
      ansible.builtin.include_role:
        name: liteboxd.sandbox_network.egress_node
        tasks_from: reapply_policy.yml
"""


def policy(name, labels):
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumEgressGatewayPolicy",
            "metadata": {"name": name, "labels": labels},
            "spec": {"selectors": [{"podSelector": {"matchLabels": {"liteboxd.io/internet-access": "true"}}}],
                     "destinationCIDRs": ["0.0.0.0/0"],
                     "egressGateway": {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "egress-node-1"}},
                                       "egressIP": "10.147.17.5"}}}


@pytest.fixture
def policies(kube_apiserver):
    api = client.CustomObjectsApi(kube_apiserver.api_client())
    names = {"managed": "lbx-egress-%s" % uuid.uuid4().hex[:6], "foreign": "other-egress-%s" % uuid.uuid4().hex[:6]}
    api.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy(names["managed"], MANAGED))
    api.create_cluster_custom_object(GROUP, VERSION, PLURAL, policy(names["foreign"], {"team": "other"}))
    yield api, names
    for name in names.values():
        api.delete_cluster_custom_object(GROUP, VERSION, PLURAL, name)


def reapply(tmp_path, kubeconfig, reselect):
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    extra = {"egress_node_kubeconfig": kubeconfig, "egress_node_reselect": reselect,
             "ansible_python_interpreter": sys.executable}
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(install_on_path()), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_HOME=str(tmp_path / "ansible-home"), ANSIBLE_LOCALHOST_WARNING="false")
    proc = subprocess.run([str(pathlib.Path(sys.executable).parent / "ansible-playbook"), "-i", "localhost,",
                           "-c", "local", str(tmp_path / "play.yml"), "-e", json.dumps(extra)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=REPO, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]


def test_every_managed_policy_is_updated_in_place_and_no_other(kube_apiserver, policies, tmp_path):
    api, names = policies
    before = {key: api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name) for key, name in names.items()}

    reapply(tmp_path, kube_apiserver.kubeconfig, "10.147.17.5 on ztlab0 (ifindex 7)")
    first = {key: api.get_cluster_custom_object(GROUP, VERSION, PLURAL, name) for key, name in names.items()}
    reapply(tmp_path, kube_apiserver.kubeconfig, "10.147.17.5 on ztlab0 (ifindex 9)")  # the device re-created again
    second = api.get_cluster_custom_object(GROUP, VERSION, PLURAL, names["managed"])

    managed = [before["managed"], first["managed"], second]
    assert [m["metadata"]["uid"] for m in managed] == [before["managed"]["metadata"]["uid"]] * 3, "never re-created"
    assert len({m["metadata"]["resourceVersion"] for m in managed}) == 3, "each re-apply is an update Cilium sees"
    assert [(m["metadata"].get("annotations") or {}).get("liteboxd.io/egress-ip-reselect") for m in managed] == [
        None, "10.147.17.5 on ztlab0 (ifindex 7)", "10.147.17.5 on ztlab0 (ifindex 9)"]
    assert second["spec"] == before["managed"]["spec"]
    assert first["foreign"]["metadata"]["resourceVersion"] == before["foreign"]["metadata"]["resourceVersion"]
