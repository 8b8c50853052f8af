"""Pure parts of the shared Kubernetes plumbing: comparison, diffs, paths, client construction."""
import pytest
import yaml

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import k8s


def test_server_defaults_that_are_empty_are_not_differences():
    desired = {"selectors": [{"podSelector": {"matchLabels": {"a": "b"}}}], "egressGateway": {"egressIP": "1.2.3.4"}}
    current = {"selectors": [{"podSelector": {"matchLabels": {"a": "b"}}}], "egressGateway": {"egressIP": "1.2.3.4"},
               "egressGateways": []}
    assert k8s.differences(desired, current) == []


def test_values_changed_and_content_added_by_hand_are_differences():
    desired = {"policyTypes": ["Ingress", "Egress"], "podSelector": {}}
    assert k8s.differences(desired, {"policyTypes": ["Egress"], "podSelector": {}}) == [".policyTypes"]
    assert k8s.differences(desired, dict(desired, ingress=[{"from": []}])) == [".ingress"]
    assert k8s.differences(desired, {"policyTypes": ["Ingress", "Egress"], "podSelector": {"matchLabels": {"x": "y"}}}) \
        == [".podSelector.matchLabels"]
    assert k8s.differences({"a": [{"b": 1}]}, {"a": [{"b": 2}]}) == [".a[0].b"]
    assert k8s.differences({"a": {"b": 1}}, {"a": "x"}) == [".a"]
    assert k8s.differences({"port": 3000, "endPort": 3999}, {"port": 3000}) == [".endPort"]


def test_metadata_patch_sets_and_removes_only_owned_keys():
    desired = {"labels": {"a": "1", "gone": None, "never": None}, "annotations": {"t": "x"}}
    current = {"labels": {"a": "0", "gone": "yes", "other": "kept"}, "annotations": {"t": "x"}}
    assert k8s._metadata_patch(desired, current) == {"labels": {"a": "1", "gone": None}}
    assert k8s._metadata_patch({"labels": {"a": "1"}}, {"labels": {"a": "1"}}) == {}


def test_diff_view_drops_server_bookkeeping_and_redacts_secrets():
    obj = {"apiVersion": "v1", "kind": "Pod", "status": {"phase": "Running"},
           "metadata": {"name": "p", "uid": "u", "resourceVersion": "7", "managedFields": [], "creationTimestamp": "t",
                        "annotations": {"liteboxd.io/access-token": "secret", "other": "x"}}}
    shown = k8s.for_diff(obj, redact=("liteboxd.io/access-token",))
    assert shown == {"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "p", "annotations": {"liteboxd.io/access-token": "<redacted>", "other": "x"}}}
    assert obj["metadata"]["annotations"]["liteboxd.io/access-token"] == "secret"  # the input is untouched
    assert k8s.for_diff(None) == {}
    entry = k8s.diff_entry(k8s.NETWORK_POLICY, "a", "ns", None, {"kind": "NetworkPolicy"})
    assert entry["before"] == {} and entry["after_header"] == "NetworkPolicy ns/a"


def test_resource_paths():
    assert k8s.POD.path("ns", "p", "status") == "/api/v1/namespaces/ns/pods/p/status"
    assert k8s.NAMESPACE.path(None, "ns") == "/api/v1/namespaces/ns"
    assert k8s.NETWORK_POLICY.path("ns") == "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies"
    assert k8s.CILIUM_EGRESS_GATEWAY_POLICY.path("ignored", "x") == "/apis/cilium.io/v2/ciliumegressgatewaypolicies/x"
    assert k8s.resource_for({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy"}) is k8s.CILIUM_NETWORK_POLICY


def test_host_and_token_need_no_kubeconfig(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    api_client = k8s.build_api_client({"host": "https://10.0.0.1:6443/", "api_key": "tok", "ca_cert": "/ca.crt",
                                       "validate_certs": False})
    cfg = api_client.configuration
    assert (cfg.host, cfg.ssl_ca_cert, cfg.verify_ssl) == ("https://10.0.0.1:6443", "/ca.crt", False)
    assert cfg.auth_settings()["BearerToken"]["value"] == "Bearer tok"


def test_explicit_options_override_the_kubeconfig(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [{"name": "a", "cluster": {"server": "https://a.example:6443"}},
                     {"name": "b", "cluster": {"server": "https://b.example:6443"}}],
        "users": [{"name": "u", "user": {"token": "from-file"}}],
        "contexts": [{"name": "a", "context": {"cluster": "a", "user": "u"}},
                     {"name": "b", "context": {"cluster": "b", "user": "u"}}]}))
    plain = k8s.build_api_client({"kubeconfig": str(kubeconfig)}).configuration
    other = k8s.build_api_client({"kubeconfig": str(kubeconfig), "context": "b", "api_key": "over"}).configuration
    assert plain.host == "https://a.example:6443"
    assert plain.auth_settings()["BearerToken"]["value"] == "Bearer from-file"
    assert other.host == "https://b.example:6443"
    assert other.auth_settings()["BearerToken"]["value"] == "Bearer over"


def test_missing_configuration_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(k8s.K8sError, match="no Kubernetes API configured: set host"):
        k8s.build_api_client({})
    with pytest.raises(k8s.K8sError, match="cannot load kubeconfig %s" % (tmp_path / "nope")):
        k8s.build_api_client({"kubeconfig": str(tmp_path / "nope")})


def test_auth_spec_matches_the_doc_fragment():
    from ansible_collections.liteboxd.sandbox_network.plugins.doc_fragments.k8s_auth import ModuleDocFragment

    documented = yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]
    assert set(documented) == set(k8s.AUTH_ARG_SPEC)
    for name, spec in k8s.AUTH_ARG_SPEC.items():
        assert documented[name]["type"] == spec["type"], name
        assert documented[name].get("aliases", []) == spec.get("aliases", []), name
        assert documented[name].get("default") == spec.get("default"), name
