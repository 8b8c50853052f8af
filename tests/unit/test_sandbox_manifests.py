"""The pure builders and input checks of the sandbox cluster plane."""
import hashlib

import pytest

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import sandbox_manifests as m

MANAGED = {"app.kubernetes.io/managed-by": "liteboxd.sandbox_network"}


def by_name(objects):
    return dict((o["metadata"]["name"], o) for o in objects)


def test_base_set_kinds_names_and_labels():
    policies = by_name(m.base_policies())
    assert {name: p["kind"] for name, p in policies.items()} == {
        "default-deny-all": "NetworkPolicy", "allow-dns": "CiliumNetworkPolicy",
        "deny-k8s-api": "CiliumNetworkPolicy", "allow-gateway-ingress": "NetworkPolicy",
        "allow-gateway-ingress-from-hosts": "CiliumNetworkPolicy"}
    for policy in policies.values():
        assert policy["metadata"]["namespace"] == "liteboxd-sandbox"
        assert policy["metadata"]["labels"] == dict(MANAGED, **{"liteboxd.io/policy-set": "base"})


def test_default_deny_covers_every_pod_both_ways():
    spec = by_name(m.base_policies())["default-deny-all"]["spec"]
    assert spec == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_dns_goes_to_kube_dns_only_through_the_dns_proxy():
    spec = by_name(m.base_policies(dns_namespace="dns", dns_pod_labels={"app": "coredns"}))["allow-dns"]["spec"]
    assert spec["endpointSelector"] == {"matchLabels": {"liteboxd.io/sandbox": "true"}}
    assert spec["egress"] == [{
        "toEndpoints": [{"matchLabels": {"k8s:app": "coredns", "k8s:io.kubernetes.pod.namespace": "dns"}}],
        "toPorts": [{"ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}],
                     "rules": {"dns": [{"matchPattern": "*"}]}}]}]


def test_api_nodes_metadata_and_private_ranges_are_denied():
    spec = by_name(m.base_policies())["deny-k8s-api"]["spec"]
    assert spec["egressDeny"][0] == {"toEntities": ["kube-apiserver", "host", "remote-node"]}
    assert [c["cidr"] for c in spec["egressDeny"][1]["toCIDRSet"]] == list(m.PRIVATE_CIDRS)
    assert "169.254.0.0/16" in m.PRIVATE_CIDRS  # cloud metadata
    assert "egress" not in spec  # deny only: allows come from the other policies
    without_ranges = by_name(m.base_policies(private_cidrs=[]))["deny-k8s-api"]["spec"]
    assert without_ranges["egressDeny"] == [{"toEntities": ["kube-apiserver", "host", "remote-node"]}]


def test_gateway_ingress_from_pods_and_from_hosts_on_the_given_ports():
    policies = by_name(m.base_policies(gateway_namespace="gw", gateway_pod_labels={"app": "gw"},
                                       gateway_ports=[3000, 8080]))
    rule = policies["allow-gateway-ingress"]["spec"]["ingress"][0]
    assert rule == {"from": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "gw"}},
                              "podSelector": {"matchLabels": {"app": "gw"}}}],
                    "ports": [{"port": 3000, "protocol": "TCP"}, {"port": 8080, "protocol": "TCP"}]}
    hosts = policies["allow-gateway-ingress-from-hosts"]["spec"]["ingress"][0]
    assert hosts == {"fromEntities": ["host", "remote-node"],
                     "toPorts": [{"ports": [{"port": "3000", "protocol": "TCP"}, {"port": "8080", "protocol": "TCP"}]}]}


def test_gateway_sources_choose_the_ingress_policies_and_no_ports_means_all_ports():
    cluster_only = by_name(m.base_policies(gateway_sources=["cluster"]))
    hosts_only = by_name(m.base_policies(gateway_sources=["host"]))
    assert "allow-gateway-ingress-from-hosts" not in cluster_only
    assert "ports" not in cluster_only["allow-gateway-ingress"]["spec"]["ingress"][0]
    assert "allow-gateway-ingress" not in hosts_only
    assert "toPorts" not in hosts_only["allow-gateway-ingress-from-hosts"]["spec"]["ingress"][0]


def test_internet_set_is_every_public_destination_on_every_port():
    (policy,) = m.internet_policies(namespace="ns")
    assert policy["metadata"]["labels"]["liteboxd.io/policy-set"] == "internet"
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"liteboxd.io/sandbox": "true", "liteboxd.io/internet-access": "true"}},
        "policyTypes": ["Egress"],
        "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(m.PRIVATE_CIDRS)}}]}]}
    (open_policy,) = m.internet_policies(private_cidrs=[])
    assert open_policy["spec"]["egress"][0]["to"][0]["ipBlock"] == {"cidr": "0.0.0.0/0"}


def test_domain_policy_uses_fqdns_on_80_and_443_for_one_sandbox():
    policy = m.domain_policy("sbx-1", "ns", ["PyPI.org.", "*.GitHub.com", "pypi.org"])
    assert policy["metadata"]["name"] == "allow-domains-sbx-1"
    expected_labels = {"liteboxd.io/policy-set": "domains", "liteboxd.io/sandbox-id": "sbx-1"}
    assert policy["metadata"]["labels"] == dict(MANAGED, **expected_labels)
    assert policy["spec"] == {
        "endpointSelector": {"matchLabels": {"liteboxd.io/sandbox": "true", "liteboxd.io/sandbox-id": "sbx-1"}},
        "egress": [{"toFQDNs": [{"matchName": "pypi.org"}, {"matchPattern": "*.github.com"}],
                    "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}, {"port": "443", "protocol": "TCP"}]}]}]}


@pytest.mark.parametrize("bad", ["*", "*.com", "a.*.example.com", "https://example.com", "example.com/path",
                                 "10.0.0.1", "-bad.example.com", "exa mple.com", "", "a" * 64 + ".com", 42])
def test_bad_domain_patterns_are_refused(bad):
    with pytest.raises(m.ManifestError) as err:
        m.domain_selector(bad, "network.allowed_domains[0]")
    assert str(err.value).startswith("network.allowed_domains[0]: ")


def test_egress_gateway_policy_single_and_multi_gateway_forms():
    single = m.egress_gateway_policy([{"node_selector": {"liteboxd.io/role": "egress"}, "egress_ip": "10.147.17.5"}])
    assert single["metadata"]["name"] == "liteboxd-sandbox-egress-via-node"
    assert "namespace" not in single["metadata"]  # cluster-scoped
    assert single["spec"] == {
        "selectors": [{"podSelector": {"matchLabels": {"liteboxd.io/sandbox": "true",
                                                       "io.kubernetes.pod.namespace": "liteboxd-sandbox"}}}],
        "destinationCIDRs": ["0.0.0.0/0"],
        "egressGateway": {"nodeSelector": {"matchLabels": {"liteboxd.io/role": "egress"}}, "egressIP": "10.147.17.5"},
        "excludedCIDRs": list(m.PRIVATE_CIDRS)}
    multi = m.egress_gateway_policy([
        {"node_selector": {"h": "a"}, "interface": "zt0"},
        {"node_selector": {"h": "b"}, "egress_ip": "10.0.0.2"}], excluded_cidrs=[])
    assert multi["spec"]["egressGateway"] == multi["spec"]["egressGateways"][0]
    assert multi["spec"]["egressGateways"][0] == {"nodeSelector": {"matchLabels": {"h": "a"}}, "interface": "zt0"}
    assert len(multi["spec"]["egressGateways"]) == 2
    assert "excludedCIDRs" not in multi["spec"]


def test_sandbox_pod_labels_annotations_and_spec():
    spec = m.sandbox_pod_spec("img", command=["run"], env={"B": 2, "A": "x"}, ports=[8000],
                              resources={"limits": {"cpu": "1"}})
    pod = m.sandbox_pod("sbx-1", "ns", spec, m.sandbox_labels("sbx-1", False, {"team": "a"}),
                        m.token_annotations("tok", "plain"))
    assert pod["metadata"]["labels"] == {"team": "a", "liteboxd.io/sandbox": "true", "liteboxd.io/sandbox-id": "sbx-1",
                                         "app.kubernetes.io/managed-by": "liteboxd.sandbox_network",
                                         "liteboxd.io/internet-access": None}
    assert pod["metadata"]["annotations"]["liteboxd.io/access-token"] == "tok"
    assert pod["metadata"]["annotations"]["liteboxd.io/access-token-sha256"] is None
    assert pod["metadata"]["annotations"]["liteboxd.io/spec-sha256"] == m.spec_digest(spec)
    container = pod["spec"]["containers"][0]
    assert container["env"] == [{"name": "A", "value": "x"}, {"name": "B", "value": "2"}]
    assert container["ports"] == [{"containerPort": 8000, "protocol": "TCP"}]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert m.sandbox_labels("sbx-1", True)["liteboxd.io/internet-access"] == "true"


def test_spec_digest_changes_with_the_spec_only():
    assert m.spec_digest(m.sandbox_pod_spec("a")) == m.spec_digest(m.sandbox_pod_spec("a"))
    assert m.spec_digest(m.sandbox_pod_spec("a")) != m.spec_digest(m.sandbox_pod_spec("a", command=["x"]))


def test_hashed_token_annotation_is_lowercase_hex_sha256():
    annotations = m.token_annotations("secret-token", "hash")
    assert annotations == {"liteboxd.io/access-token-sha256": hashlib.sha256(b"secret-token").hexdigest(),
                           "liteboxd.io/access-token": None}
    assert m.token_annotations(storage="hash", digest="ab")["liteboxd.io/access-token-sha256"] == "ab"


def test_access_url():
    assert m.access_url("https://gw.example.com/", "sbx-1", [8000, 9000]) == \
        "https://gw.example.com/sandbox/sbx-1/port/8000/"
    assert m.access_url("", "sbx-1", [3000]) == "/sandbox/sbx-1/port/3000/"
    assert m.access_url("https://gw", "sbx-1", []) is None


def test_pod_ready_needs_running_and_the_ready_condition():
    assert not m.pod_ready(None)
    assert not m.pod_ready({"status": {"phase": "Running"}})
    assert not m.pod_ready({"status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "True"}]}})
    assert m.pod_ready({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})


@pytest.mark.parametrize("check, value, message", [
    (m.check_cidr, "10.0.0.0/33", "opt: '10.0.0.0/33' is not a CIDR"),
    (m.check_cidr, "10.0.0.1/8", "opt: '10.0.0.1/8' has host bits set; the network is 10.0.0.0/8"),
    (m.check_cidr, "10.0.0.1", "opt: '10.0.0.1' has no prefix length"),
    (m.check_ipv4, "2001:db8::1", "opt: '2001:db8::1' is not an IPv4 address"),
    (m.check_ipv4, "not-an-ip", "opt: 'not-an-ip' is not an IPv4 address"),
    (m.check_port, 0, "opt: 0 is not a port number"),
    (m.check_port, 65536, "opt: 65536 is not a port number"),
    (m.check_port, True, "opt: True is not a port number"),
    (m.check_name, "Upper", "opt: 'Upper' is not a valid name"),
    (m.check_name, "a" * 64, "is not a valid name"),
])
def test_checks_refuse_with_the_option_name(check, value, message):
    with pytest.raises(m.ManifestError) as err:
        check(value, "opt")
    assert message in str(err.value)


def test_cidr_checks_accept_canonical_networks():
    assert m.check_cidrs(["10.0.0.0/8", "::/0"], "opt") == ["10.0.0.0/8", "::/0"]
    with pytest.raises(m.ManifestError, match=r"opt\[1\]: '::/0' is not an IPv4 CIDR"):
        m.check_cidrs(["10.0.0.0/8", "::/0"], "opt", version=4)
    with pytest.raises(m.ManifestError, match="listed more than once"):
        m.check_ports([80, 80], "opt")


def test_label_checks():
    assert m.check_labels({"a.b/c": "d", "flag": True}, "labels") == {"a.b/c": "d", "flag": "true"}
    with pytest.raises(m.ManifestError, match="labels: 'bad key!' is not a valid label key"):
        m.check_labels({"bad key!": "x"}, "labels")
    with pytest.raises(m.ManifestError, match="cannot be overridden"):
        m.check_labels({"liteboxd.io/sandbox": "false"}, "labels", reserved=m.DEFAULT_PROFILE.reserved_labels)


def test_resources_only_requests_and_limits():
    assert m.check_resources({"limits": {"cpu": 1}}, "resources") == {"limits": {"cpu": "1"}}
    with pytest.raises(m.ManifestError, match="resources: unknown field 'limit'"):
        m.check_resources({"limit": {}}, "resources")
    with pytest.raises(m.ManifestError, match="resources.requests: must be a map"):
        m.check_resources({"requests": "1"}, "resources")


def test_owned_selector():
    assert m.owned_selector(["internet", "base"]) == \
        "app.kubernetes.io/managed-by=liteboxd.sandbox_network,liteboxd.io/policy-set in (base,internet)"
