"""egress_gateway_policy against a real kube-apiserver with Cilium's CiliumEgressGatewayPolicy CRD.

The policy is cluster-scoped, so each test uses its own name and deletes it at the end.
"""
import pytest
from kubernetes import client

from tests.lib.modules import run_module


def auth(server):
    return {"host": server.url, "api_key": server.token, "ca_cert": server.ca_file}


@pytest.fixture
def policy_name(kube_apiserver, kube_namespace):
    name = "egress-" + kube_namespace[-20:].strip("-")
    yield name
    run_module("egress_gateway_policy", dict(auth(kube_apiserver), name=name, state="absent"))


def stored(server, name):
    api = client.CustomObjectsApi(server.api_client())
    items = api.list_cluster_custom_object("cilium.io", "v2", "ciliumegressgatewaypolicies")["items"]
    return next((item for item in items if item["metadata"]["name"] == name), None)


def test_policy_is_accepted_and_a_second_run_changes_nothing(kube_apiserver, kube_namespace, policy_name):
    args = dict(auth(kube_apiserver), name=policy_name, sandbox_namespace=kube_namespace, egress_ip="10.147.17.5")

    planned = run_module("egress_gateway_policy", args, check=True, diff=True)
    nothing = stored(kube_apiserver, policy_name)
    created = run_module("egress_gateway_policy", args)
    again = run_module("egress_gateway_policy", args)
    policy = stored(kube_apiserver, policy_name)

    assert planned["changed"] is True and planned["action"] == "created"
    assert planned["diff"]["before"] == {}
    assert planned["diff"]["after"]["spec"]["egressGateway"]["egressIP"] == "10.147.17.5"
    assert nothing is None
    assert created["changed"] is True
    assert again["changed"] is False and again["action"] == "unchanged"
    assert policy["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "liteboxd.sandbox_network",
                                            "liteboxd.io/policy-set": "egress-gateway"}
    spec = policy["spec"]
    # Every sandbox: the network policies decide what may leave, and all of it leaves through the tunnel.
    assert spec["selectors"] == [{"podSelector": {"matchLabels": {
        "liteboxd.io/sandbox": "true", "io.kubernetes.pod.namespace": kube_namespace}}}]
    assert spec["destinationCIDRs"] == ["0.0.0.0/0"]
    assert spec["excludedCIDRs"] == ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                                     "169.254.0.0/16"]
    assert spec["egressGateway"] == {"nodeSelector": {"matchLabels": {"liteboxd.io/role": "egress"}},
                                     "egressIP": "10.147.17.5"}


def test_changed_egress_ip_and_hand_edits_are_put_back(kube_apiserver, kube_namespace, policy_name):
    args = dict(auth(kube_apiserver), name=policy_name, sandbox_namespace=kube_namespace, egress_ip="10.147.17.5")
    run_module("egress_gateway_policy", args)
    api = client.CustomObjectsApi(kube_apiserver.api_client())
    api.patch_cluster_custom_object("cilium.io", "v2", "ciliumegressgatewaypolicies", policy_name,
                                    {"spec": {"excludedCIDRs": ["10.0.0.0/8"]}})

    repaired = run_module("egress_gateway_policy", args, diff=True)
    moved = run_module("egress_gateway_policy", dict(args, egress_ip="10.147.17.9"))

    assert repaired["action"] == "replaced"
    assert repaired["diff"]["before"]["spec"]["excludedCIDRs"] == ["10.0.0.0/8"]
    assert len(repaired["diff"]["after"]["spec"]["excludedCIDRs"]) == 5
    assert moved["action"] == "replaced"
    assert stored(kube_apiserver, policy_name)["spec"]["egressGateway"]["egressIP"] == "10.147.17.9"


def test_several_egress_nodes_use_the_multi_gateway_form(kube_apiserver, kube_namespace, policy_name):
    args = dict(auth(kube_apiserver), name=policy_name, sandbox_namespace=kube_namespace, egress_gateways=[
        {"node_selector": {"kubernetes.io/hostname": "egress-a"}, "egress_ip": "10.147.17.5"},
        {"node_selector": {"kubernetes.io/hostname": "egress-b"}, "interface": "zt0"}])

    created = run_module("egress_gateway_policy", args)
    again = run_module("egress_gateway_policy", args)

    spec = stored(kube_apiserver, policy_name)["spec"]
    assert created["changed"] is True and again["changed"] is False
    assert spec["egressGateways"] == [
        {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "egress-a"}}, "egressIP": "10.147.17.5"},
        {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "egress-b"}}, "interface": "zt0"}]
    assert spec["egressGateway"] == spec["egressGateways"][0]


def test_absent_deletes_it(kube_apiserver, kube_namespace, policy_name):
    args = dict(auth(kube_apiserver), name=policy_name, sandbox_namespace=kube_namespace, egress_ip="10.147.17.5")
    run_module("egress_gateway_policy", args)

    planned = run_module("egress_gateway_policy", dict(args, state="absent"), check=True)
    still_there = stored(kube_apiserver, policy_name)
    removed = run_module("egress_gateway_policy", dict(args, state="absent"))
    again = run_module("egress_gateway_policy", dict(args, state="absent"))

    assert planned["changed"] is True and still_there is not None
    assert removed["changed"] is True and removed["action"] == "deleted"
    assert stored(kube_apiserver, policy_name) is None
    assert again["changed"] is False and again["action"] == "absent"


@pytest.mark.parametrize("bad, message", [
    ({"egress_ip": "not-an-ip"}, "egress_ip: 'not-an-ip' is not an IPv4 address"),
    ({"egress_ip": "10.147.17.256"}, "egress_ip: '10.147.17.256' is not an IPv4 address"),
    ({"egress_ip": "2001:db8::1"}, "egress_ip: '2001:db8::1' is not an IPv4 address"),
    ({}, "egress_ip or interface is required with state=present"),
    ({"egress_ip": "10.0.0.1", "excluded_cidrs": ["192.168.0.0/40"]}, "excluded_cidrs[0]: '192.168.0.0/40' is not a CIDR"),
    ({"egress_ip": "10.0.0.1", "destination_cidrs": ["0.0.0.0"]}, "destination_cidrs[0]: '0.0.0.0' has no prefix"),
    ({"egress_gateways": [{"node_selector": {"a": "b"}, "egress_ip": "1.2.3"}]},
     "egress_gateways[0].egress_ip: '1.2.3' is not an IPv4 address"),
    ({"egress_gateways": [{"node_selector": {"a": "b"}, "egress_ip": "1.2.3.4", "bogus": 1}]}, "bogus"),
    ({"egress_ip": "10.0.0.1", "egress_gateways": [{"node_selector": {"a": "b"}, "egress_ip": "1.2.3.4"}]},
     "mutually exclusive"),
    # Cilium ignores a policy whose gateway names both (docs: "will be ignored by Cilium").
    ({"egress_ip": "10.147.17.5", "interface": "zt0"}, "egress_ip and interface: give one of them, not both"),
    ({"egress_gateways": [{"node_selector": {"a": "b"}, "egress_ip": "1.2.3.4"},
                          {"node_selector": {"a": "c"}, "egress_ip": "1.2.3.5", "interface": "zt0"}]},
     "egress_gateways[1]: egress_ip and interface: give one of them, not both"),
    ({"egress_gateways": [{"node_selector": {"a": "b"}}]}, "egress_gateways[0]: egress_ip or interface is required"),
    ({"interface": "zt0", "egress_gateways": [{"node_selector": {"a": "b"}, "egress_ip": "1.2.3.4"}]},
     "mutually exclusive"),
    # An excluded CIDR outside every destination has no effect in Cilium.
    ({"egress_ip": "10.147.17.5", "destination_cidrs": ["203.0.113.0/24"]},
     "excluded_cidrs[0]: 10.0.0.0/8 lies outside every destination_cidrs entry"),
])
def test_malformed_input_is_refused_before_any_request(bad, message):
    failed = run_module("egress_gateway_policy", dict({"host": "https://127.0.0.1:9", "api_key": "unused"}, **bad),
                        expect_fail=True)
    assert message in failed["msg"]
    assert "127.0.0.1:9" not in failed["msg"]


def test_the_interface_alone_names_the_egress_address(kube_apiserver, kube_namespace, policy_name):
    args = dict(auth(kube_apiserver), name=policy_name, sandbox_namespace=kube_namespace, interface="zt0")

    run_module("egress_gateway_policy", args)

    assert stored(kube_apiserver, policy_name)["spec"]["egressGateway"] == {
        "nodeSelector": {"matchLabels": {"liteboxd.io/role": "egress"}}, "interface": "zt0"}
