"""node_label (the egress node's ``liteboxd.io/role=egress``) against a real kube-apiserver."""
import uuid

import pytest
from kubernetes import client

from tests.lib.modules import run_module

ROLE = {"liteboxd.io/role": "egress"}


@pytest.fixture
def node(kube_apiserver):
    core = client.CoreV1Api(kube_apiserver.api_client())
    name = "egress-%s" % uuid.uuid4().hex[:8]
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(
        name=name, labels={"kubernetes.io/hostname": name, "liteboxd.io/role": "worker-old"})))
    yield core, name
    core.delete_node(name)


def labels(core, name):
    return core.read_node(name).metadata.labels


def test_label_check_mode_idempotence_and_removal(kube_apiserver, node):
    core, name = node
    args = dict(kubeconfig=kube_apiserver.kubeconfig, name=name, labels=ROLE)

    predicted = run_module("node_label", args, check=True, diff=True)
    assert predicted["changed"]
    assert predicted["labels"]["liteboxd.io/role"] == "egress"
    assert labels(core, name)["liteboxd.io/role"] == "worker-old", "check mode changed the Node"

    applied = run_module("node_label", args, diff=True)
    assert applied["changed"]
    assert applied["diff"]["before"]["labels"]["liteboxd.io/role"] == "worker-old"
    assert applied["diff"]["after"]["labels"]["liteboxd.io/role"] == "egress"
    assert labels(core, name) == {"kubernetes.io/hostname": name, "liteboxd.io/role": "egress"}

    assert not run_module("node_label", args)["changed"]
    assert not run_module("node_label", args, check=True)["changed"]

    removed = run_module("node_label", dict(args, state="absent"))
    assert removed["changed"]
    assert labels(core, name) == {"kubernetes.io/hostname": name}, "other labels must stay"
    assert not run_module("node_label", dict(args, state="absent"))["changed"]


def test_host_and_token_instead_of_kubeconfig(kube_apiserver, node):
    core, name = node
    result = run_module("node_label", dict(host=kube_apiserver.url, api_key=kube_apiserver.token,
                                           ca_cert=kube_apiserver.ca_file, name=name, labels=ROLE))
    assert result["changed"]
    assert labels(core, name)["liteboxd.io/role"] == "egress"


def test_bad_input_and_missing_node(kube_apiserver, node):
    core, name = node
    before = labels(core, name)
    missing = run_module("node_label", dict(kubeconfig=kube_apiserver.kubeconfig, name="no-such-node",
                                            labels=ROLE), expect_fail=True)
    assert missing["msg"].startswith("name: Node no-such-node does not exist")
    empty = run_module("node_label", dict(kubeconfig=kube_apiserver.kubeconfig, name=name,
                                          labels={"liteboxd.io/role": ""}), expect_fail=True)
    assert "labels:" in empty["msg"] and "liteboxd.io/role" in empty["msg"]
    wrong_token = run_module("node_label", dict(host=kube_apiserver.url, api_key="not-the-token",
                                                ca_cert=kube_apiserver.ca_file, name=name, labels=ROLE),
                             expect_fail=True)
    assert "401" in wrong_token["msg"]
    assert labels(core, name) == before
