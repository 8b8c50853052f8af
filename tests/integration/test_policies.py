"""sandbox_network_policies against a real kube-apiserver + etcd with Cilium's CRDs.

The server validates every object the module writes; these tests check what it stored.
Enforcement is Cilium's datapath, which does not run here.
"""
import pytest
from kubernetes import client

from tests.lib.modules import run_module

MANAGED = {"app.kubernetes.io/managed-by": "liteboxd.sandbox_network"}
BASE = {("NetworkPolicy", "default-deny-all"), ("CiliumNetworkPolicy", "allow-dns"),
        ("CiliumNetworkPolicy", "deny-k8s-api"), ("NetworkPolicy", "allow-gateway-ingress"),
        ("CiliumNetworkPolicy", "allow-gateway-ingress-from-hosts")}
INTERNET = {("NetworkPolicy", "allow-internet-egress")}


def auth(server):
    return {"host": server.url, "api_key": server.token, "ca_cert": server.ca_file}


def stored(server, namespace):
    """{(kind, name): object} of every policy in the namespace, as the server stores it."""
    api_client = server.api_client()
    found = {}
    for item in client.NetworkingV1Api(api_client).list_namespaced_network_policy(namespace).items:
        found[("NetworkPolicy", item.metadata.name)] = api_client.sanitize_for_serialization(item)
    cnps = client.CustomObjectsApi(api_client).list_namespaced_custom_object(
        "cilium.io", "v2", namespace, "ciliumnetworkpolicies")["items"]
    for item in cnps:
        found[("CiliumNetworkPolicy", item["metadata"]["name"])] = item
    return found


def test_sets_are_accepted_by_the_server_and_a_second_run_changes_nothing(kube_apiserver, kube_namespace):
    args = dict(auth(kube_apiserver), namespace=kube_namespace, gateway_ports=[3000, 8080])

    first = run_module("sandbox_network_policies", args)
    second = run_module("sandbox_network_policies", args)

    assert first["changed"] is True
    assert {(p["kind"], p["name"]) for p in first["policies"]} == BASE | INTERNET
    assert {p["action"] for p in first["policies"]} == {"created"}
    assert second["changed"] is False
    assert {p["action"] for p in second["policies"]} == {"unchanged"}
    objects = stored(kube_apiserver, kube_namespace)
    assert set(objects) == BASE | INTERNET
    for (kind, name), obj in objects.items():
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "liteboxd.sandbox_network"
        assert labels["liteboxd.io/policy-set"] == ("internet" if name == "allow-internet-egress" else "base")
    deny_all = objects[("NetworkPolicy", "default-deny-all")]["spec"]
    assert deny_all == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    dns = objects[("CiliumNetworkPolicy", "allow-dns")]["spec"]["egress"][0]
    assert dns["toPorts"][0]["rules"] == {"dns": [{"matchPattern": "*"}]}
    assert dns["toEndpoints"] == [{"matchLabels": {"k8s:k8s-app": "kube-dns",
                                                   "k8s:io.kubernetes.pod.namespace": "kube-system"}}]
    deny = objects[("CiliumNetworkPolicy", "deny-k8s-api")]["spec"]["egressDeny"]
    assert deny[0] == {"toEntities": ["kube-apiserver", "host", "remote-node"]}
    assert {"cidr": "169.254.0.0/16"} in deny[1]["toCIDRSet"]
    internet = objects[("NetworkPolicy", "allow-internet-egress")]["spec"]
    assert internet["podSelector"] == {"matchLabels": {"liteboxd.io/sandbox": "true",
                                                       "liteboxd.io/internet-access": "true"}}
    rule = internet["egress"][0]
    assert "ports" not in rule  # no port list: every port and protocol
    assert rule["to"][0]["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert set(rule["to"][0]["ipBlock"]["except"]) >= {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"}
    gateway = objects[("NetworkPolicy", "allow-gateway-ingress")]["spec"]["ingress"][0]
    assert [p["port"] for p in gateway["ports"]] == [3000, 8080]
    assert gateway["from"][0]["podSelector"] == {"matchLabels": {"app": "liteboxd-gateway"}}
    hosts = objects[("CiliumNetworkPolicy", "allow-gateway-ingress-from-hosts")]["spec"]["ingress"][0]
    assert hosts["fromEntities"] == ["host", "remote-node"]
    assert hosts["toPorts"] == [{"ports": [{"port": "3000", "protocol": "TCP"}, {"port": "8080", "protocol": "TCP"}]}]


def test_a_gateway_host_outside_the_cluster_is_admitted_by_its_address(kube_apiserver, kube_namespace):
    """A host that is not a cluster node is neither Cilium's host nor remote-node entity: Cilium's CIDR
    rules are what match "a network endpoint outside the cluster"."""
    args = dict(auth(kube_apiserver), namespace=kube_namespace, gateway_sources=[],
                gateway_source_cidrs=["10.20.0.40/32", "198.51.100.0/28"], gateway_ports=[8000])

    first = run_module("sandbox_network_policies", args)
    again = run_module("sandbox_network_policies", args)
    objects = stored(kube_apiserver, kube_namespace)

    assert again["changed"] is False
    assert set(objects) == (BASE | INTERNET | {("CiliumNetworkPolicy", "allow-gateway-ingress-from-cidrs")}) - {
        ("NetworkPolicy", "allow-gateway-ingress"), ("CiliumNetworkPolicy", "allow-gateway-ingress-from-hosts")}
    spec = objects[("CiliumNetworkPolicy", "allow-gateway-ingress-from-cidrs")]["spec"]
    assert spec["endpointSelector"] == {"matchLabels": {"liteboxd.io/sandbox": "true"}}
    assert spec["ingress"] == [{"fromCIDRSet": [{"cidr": "10.20.0.40/32"}, {"cidr": "198.51.100.0/28"}],
                                "toPorts": [{"ports": [{"port": "8000", "protocol": "TCP"}]}]}]
    assert {p["name"] for p in first["policies"]} >= {"allow-gateway-ingress-from-cidrs"}


def test_check_mode_reports_the_changes_with_a_diff_and_stores_nothing(kube_apiserver, kube_namespace):
    args = dict(auth(kube_apiserver), namespace=kube_namespace)

    planned = run_module("sandbox_network_policies", args, check=True, diff=True)

    assert planned["changed"] is True
    assert {p["action"] for p in planned["policies"]} == {"created"}
    assert stored(kube_apiserver, kube_namespace) == {}
    headers = {d["after_header"] for d in planned["diff"]}
    assert "NetworkPolicy %s/default-deny-all" % kube_namespace in headers
    deny_all = next(d for d in planned["diff"] if d["after_header"].endswith("/default-deny-all"))
    assert deny_all["before"] == {}
    # The "after" is the server's dry-run answer: validated and defaulted, not our own manifest.
    assert deny_all["after"]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert deny_all["after"]["metadata"]["labels"]["liteboxd.io/policy-set"] == "base"

    run_module("sandbox_network_policies", args)
    again = run_module("sandbox_network_policies", args, check=True, diff=True)
    assert again["changed"] is False
    assert again["diff"] == []


def test_an_object_changed_by_hand_is_put_back(kube_apiserver, kube_namespace):
    args = dict(auth(kube_apiserver), namespace=kube_namespace)
    run_module("sandbox_network_policies", args)
    api_client = kube_apiserver.api_client()
    networking = client.NetworkingV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    # Opened up by hand: ingress no longer denied, a rule added, an owned label removed.
    networking.patch_namespaced_network_policy("default-deny-all", kube_namespace,
                                               {"spec": {"policyTypes": ["Egress"]}})
    dns = custom.get_namespaced_custom_object("cilium.io", "v2", kube_namespace, "ciliumnetworkpolicies", "allow-dns")
    dns["spec"]["egress"].append({"toEntities": ["world"]})
    custom.replace_namespaced_custom_object("cilium.io", "v2", kube_namespace, "ciliumnetworkpolicies",
                                            "allow-dns", dns)
    internet = networking.read_namespaced_network_policy("allow-internet-egress", kube_namespace)
    del internet.metadata.labels["liteboxd.io/policy-set"]
    internet.metadata.labels["team"] = "kept"
    networking.replace_namespaced_network_policy("allow-internet-egress", kube_namespace, internet)

    check = run_module("sandbox_network_policies", args, check=True, diff=True)
    still_open = networking.read_namespaced_network_policy("default-deny-all", kube_namespace)
    repaired = run_module("sandbox_network_policies", args)
    after = stored(kube_apiserver, kube_namespace)

    actions = dict((p["name"], p["action"]) for p in repaired["policies"])
    assert actions["default-deny-all"] == "replaced"
    assert actions["allow-dns"] == "replaced"
    assert actions["allow-internet-egress"] == "patched"
    assert dict((p["name"], p["action"]) for p in check["policies"]) == actions
    assert still_open.spec.policy_types == ["Egress"]  # check mode changed nothing
    changed_headers = {d["after_header"].rsplit("/", 1)[1] for d in check["diff"]}
    assert changed_headers == {"default-deny-all", "allow-dns", "allow-internet-egress"}
    assert after[("NetworkPolicy", "default-deny-all")]["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert {"toEntities": ["world"]} not in after[("CiliumNetworkPolicy", "allow-dns")]["spec"]["egress"]
    labels = after[("NetworkPolicy", "allow-internet-egress")]["metadata"]["labels"]
    assert labels["liteboxd.io/policy-set"] == "internet"
    assert labels["team"] == "kept"  # labels we do not own stay
    assert run_module("sandbox_network_policies", args)["changed"] is False


def test_unwanted_objects_of_the_owned_sets_are_pruned(kube_apiserver, kube_namespace):
    args = dict(auth(kube_apiserver), namespace=kube_namespace)
    run_module("sandbox_network_policies", args)

    narrowed = run_module("sandbox_network_policies", dict(args, gateway_sources=["cluster"], internet_set=False))

    actions = dict((p["name"], p["action"]) for p in narrowed["policies"])
    assert actions["allow-gateway-ingress-from-hosts"] == "deleted"
    assert actions["allow-internet-egress"] == "deleted"
    assert set(stored(kube_apiserver, kube_namespace)) == BASE - {
        ("CiliumNetworkPolicy", "allow-gateway-ingress-from-hosts")}


def test_absent_removes_exactly_what_it_owns(kube_apiserver, kube_namespace):
    args = dict(auth(kube_apiserver), namespace=kube_namespace)
    run_module("sandbox_network_policies", args)
    api_client = kube_apiserver.api_client()
    client.NetworkingV1Api(api_client).create_namespaced_network_policy(kube_namespace, {
        "metadata": {"name": "site-specific"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(
        "cilium.io", "v2", kube_namespace, "ciliumnetworkpolicies", {
            "apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "allow-domains-sbx1", "labels": dict(MANAGED, **{
                "liteboxd.io/policy-set": "domains", "liteboxd.io/sandbox-id": "sbx1"})},
            "spec": {"endpointSelector": {"matchLabels": {"liteboxd.io/sandbox-id": "sbx1"}},
                     "egress": [{"toFQDNs": [{"matchName": "example.com"}]}]}})

    planned = run_module("sandbox_network_policies", dict(args, state="absent"), check=True)
    assert len(stored(kube_apiserver, kube_namespace)) == len(BASE | INTERNET) + 2
    removed = run_module("sandbox_network_policies", dict(args, state="absent"))
    again = run_module("sandbox_network_policies", dict(args, state="absent"))

    assert planned["changed"] is True
    assert {(p["kind"], p["name"]) for p in removed["policies"]} == BASE | INTERNET
    assert {p["action"] for p in removed["policies"]} == {"deleted"}
    assert set(stored(kube_apiserver, kube_namespace)) == {
        ("NetworkPolicy", "site-specific"), ("CiliumNetworkPolicy", "allow-domains-sbx1")}
    assert again["changed"] is False


def test_a_missing_namespace_is_created_and_only_planned_in_check_mode(kube_apiserver, kube_namespace):
    namespace = kube_namespace + "-new"
    args = dict(auth(kube_apiserver), namespace=namespace)
    core = client.CoreV1Api(kube_apiserver.api_client())
    try:
        planned = run_module("sandbox_network_policies", args, check=True)
        assert planned["changed"] is True
        assert [ns.metadata.name for ns in core.list_namespace().items if ns.metadata.name == namespace] == []
        created = run_module("sandbox_network_policies", args)
        assert created["changed"] is True
        assert core.read_namespace(namespace).metadata.labels["app.kubernetes.io/managed-by"] == \
            "liteboxd.sandbox_network"
        assert set(stored(kube_apiserver, namespace)) == BASE | INTERNET
        failed = run_module("sandbox_network_policies", dict(args, namespace=namespace + "-x", create_namespace=False),
                            expect_fail=True)
        assert "namespaces \"%s-x\" not found" % namespace in failed["msg"]
    finally:
        from tests.lib.apiserver import delete_namespace
        delete_namespace(kube_apiserver.api_client(), namespace)


@pytest.mark.parametrize("bad, message", [
    ({"private_cidrs": ["10.0.0.0/33"]}, "private_cidrs[0]: '10.0.0.0/33' is not a CIDR"),
    ({"private_cidrs": ["10.1.2.3/8"]}, "private_cidrs[0]: '10.1.2.3/8' has host bits set; the network is 10.0.0.0/8"),
    ({"gateway_ports": [70000]}, "gateway_ports[0]: 70000 is not a port number"),
    ({"gateway_ports": [0]}, "gateway_ports[0]: 0 is not a port number"),
    ({"gateway_pod_labels": {"app": "not a label value"}}, "gateway_pod_labels: the value 'not a label value'"),
    ({"gateway_sources": []}, "gateway_sources: name at least one"),
    ({"gateway_source_cidrs": ["10.20.0.40"]}, "gateway_source_cidrs[0]: '10.20.0.40' has no prefix length"),
    ({"namespace": "Bad_Namespace"}, "namespace: 'Bad_Namespace' is not a valid name"),
    ({"gateway_bogus": 1}, "Unsupported parameters"),  # names gateway_bogus
    ({"gateway_sources": ["internet"]}, "gateway_sources"),
])
def test_malformed_input_is_refused_before_any_request(bad, message):
    # The API address is a closed port: a request would fail differently than the expected message.
    args = dict({"host": "https://127.0.0.1:9", "api_key": "unused"}, **bad)
    failed = run_module("sandbox_network_policies", args, expect_fail=True)
    assert message in failed["msg"]
    assert list(bad)[0] in failed["msg"]  # the message names the option
    assert "127.0.0.1:9" not in failed["msg"]


def test_policies_are_kept_in_etcd_across_an_api_server_restart(kube_apiserver, kube_namespace):
    """Seed phase 1.4: the policies persist in etcd; after kube-apiserver restarts nothing needs re-applying."""
    args = dict(auth(kube_apiserver), namespace=kube_namespace)
    run_module("sandbox_network_policies", args)
    before = stored(kube_apiserver, kube_namespace)

    kube_apiserver.restart_apiserver()
    after = stored(kube_apiserver, kube_namespace)
    again = run_module("sandbox_network_policies", args)

    assert set(after) == BASE | INTERNET
    assert {key: obj["metadata"]["uid"] for key, obj in after.items()} == \
        {key: obj["metadata"]["uid"] for key, obj in before.items()}
    assert again["changed"] is False
