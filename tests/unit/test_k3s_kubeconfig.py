"""The k3s_kubeconfig filter: K3s's kubeconfig pointed at the controller's endpoint, names changed."""
import copy

import pytest
import yaml
from ansible.errors import AnsibleFilterError

from ansible_collections.liteboxd.sandbox_network.plugins.filter.k3s_kubeconfig import FilterModule, rewrite_kubeconfig

# The shape K3s writes to /etc/rancher/k3s/k3s.yaml.
K3S_KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "default", "cluster": {"certificate-authority-data": "Q0E=", "server": "https://127.0.0.1:6443"}}],
    "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
    "current-context": "default",
    "users": [{"name": "default", "user": {"client-certificate-data": "Q0VSVA==", "client-key-data": "S0VZ"}}],
}


def test_registered_as_filter():
    assert FilterModule().filters()["k3s_kubeconfig"] is rewrite_kubeconfig


def test_endpoint_rewritten_names_kept_without_name():
    result = rewrite_kubeconfig(K3S_KUBECONFIG, "https://k3s.example.com:6443")
    assert result["clusters"][0]["cluster"] == {"certificate-authority-data": "Q0E=", "server": "https://k3s.example.com:6443"}
    assert result["contexts"] == K3S_KUBECONFIG["contexts"]
    assert result["current-context"] == "default"
    assert result["users"] == K3S_KUBECONFIG["users"]


def test_name_renames_cluster_user_context_and_current_context():
    result = rewrite_kubeconfig(K3S_KUBECONFIG, "https://10.0.0.11:6443", "liteboxd")
    assert [c["name"] for c in result["clusters"]] == ["liteboxd"]
    assert [u["name"] for u in result["users"]] == ["liteboxd"]
    assert result["contexts"] == [{"name": "liteboxd", "context": {"cluster": "liteboxd", "user": "liteboxd"}}]
    assert result["current-context"] == "liteboxd"
    assert result["users"][0]["user"]["client-key-data"] == "S0VZ"


def test_yaml_text_input_and_input_not_modified():
    original = copy.deepcopy(K3S_KUBECONFIG)
    result = rewrite_kubeconfig(yaml.safe_dump(K3S_KUBECONFIG), "https://10.0.0.11:6443", "liteboxd")
    assert result["clusters"][0]["cluster"]["server"] == "https://10.0.0.11:6443"
    rewrite_kubeconfig(K3S_KUBECONFIG, "https://10.0.0.11:6443", "liteboxd")
    assert K3S_KUBECONFIG == original


@pytest.mark.parametrize("endpoint", ["10.0.0.11:6443", "http://10.0.0.11:6443", "https://10.0.0.11:6443/path", "", None])
def test_bad_endpoint_is_an_error(endpoint):
    with pytest.raises(AnsibleFilterError, match="endpoint must be https://<host>:<port>"):
        rewrite_kubeconfig(K3S_KUBECONFIG, endpoint)


@pytest.mark.parametrize("kubeconfig", ["", "just text", {"kind": "Config"}, {"clusters": []}])
def test_not_a_kubeconfig_is_an_error(kubeconfig):
    with pytest.raises(AnsibleFilterError, match="not a kubeconfig"):
        rewrite_kubeconfig(kubeconfig, "https://10.0.0.11:6443")
