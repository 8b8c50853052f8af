"""profile: liteboxd against the real API server, with Pods shaped exactly as LiteBoxd's server makes them.

``liteboxd_pod`` builds the Pod of fslongjin/liteboxd's ``CreatePod`` (backend/internal/k8s/client.go):
name ``sandbox-<id>``, labels ``app: liteboxd``, ``sandbox-id: <id>``, ``liteboxd.io/managed-by:
liteboxd-server`` and ``liteboxd.io/internet-access: "true"`` only for internet without domains;
annotations ttl, created-at and the access token; container ``main`` with its limits, workspace
emptyDir, seccomp RuntimeDefault, no service-account token. A persistent sandbox's Pod comes from
its Deployment ``sandbox-<id>`` (a generated name, the same labels). LiteBoxd's own
``EnsureDefaultPolicies`` NetworkPolicies are there too, as its server writes them at start-up.
The API server evaluates every selector (as in test_policies_selectors).
"""
import datetime

from kubernetes import client

from tests.integration.test_policies_selectors import label_selector, selected
from tests.lib.modules import run_module

LITEBOXD_LABELS = {"app": "liteboxd", "liteboxd.io/managed-by": "liteboxd-server"}


def liteboxd_pod(sandbox_id, internet=False, name=None, token="tok-0123456789abcdef"):
    labels = dict(LITEBOXD_LABELS, **{"sandbox-id": sandbox_id})
    if internet:
        labels["liteboxd.io/internet-access"] = "true"
    return {
        "metadata": {
            "name": name or f"sandbox-{sandbox_id}", "labels": labels,
            "annotations": {"liteboxd/ttl": "3600",
                            "liteboxd/created-at": datetime.datetime.now(datetime.timezone.utc).strftime(
                                "%Y-%m-%dT%H:%M:%SZ"),
                            "liteboxd.io/access-token": token}},
        "spec": {
            "automountServiceAccountToken": False, "restartPolicy": "Never",
            "tolerations": [{"key": key, "operator": "Exists"} for key in (
                "node.kubernetes.io/disk-pressure", "node.kubernetes.io/memory-pressure",
                "node.kubernetes.io/pid-pressure")],
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "main", "image": "python:3.12-slim", "imagePullPolicy": "IfNotPresent",
                "resources": {"limits": {"cpu": "500m", "memory": "512Mi"},
                              "requests": {"cpu": "100m", "memory": "128Mi"}},
                "securityContext": {"allowPrivilegeEscalation": False},
                "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}]}],
            "volumes": [{"name": "workspace", "emptyDir": {}}]},
    }


def liteboxd_network_policies():
    """The NetworkPolicies LiteBoxd's server writes into its sandbox namespace at start-up (names and
    selectors as in its network_policy.go; rules reduced to what the API server needs)."""
    pods = {"matchLabels": {"app": "liteboxd"}}
    return [
        {"metadata": {"name": "default-deny-all"}, "spec": {"podSelector": pods, "policyTypes": ["Ingress", "Egress"]}},
        {"metadata": {"name": "allow-dns"}, "spec": {"podSelector": pods, "policyTypes": ["Egress"], "egress": [
            {"ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}},
        {"metadata": {"name": "allow-gateway-ingress"}, "spec": {"podSelector": pods, "policyTypes": ["Ingress"],
                                                                 "ingress": [{"from": [{"podSelector": {
                                                                     "matchLabels": {"app": "liteboxd-gateway"}}}]}]}},
        {"metadata": {"name": "allow-internet-egress"}, "spec": {
            "podSelector": {"matchLabels": {"app": "liteboxd", "liteboxd.io/internet-access": "true"}},
            "policyTypes": ["Egress"], "egress": [{"ports": [{"protocol": "TCP", "port": 443}]}]}},
    ]


def test_the_policies_and_the_egress_policy_select_liteboxds_own_pods(kube_apiserver, kube_namespace):
    ns = kube_namespace
    auth = {"kubeconfig": kube_apiserver.kubeconfig}
    api_client = kube_apiserver.api_client()
    core, networking = client.CoreV1Api(api_client), client.NetworkingV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    egress_name = "egress-" + ns[-20:].strip("-")
    core.patch_namespace(ns, {"metadata": {"labels": {"kubernetes.io/metadata.name": ns}}})
    for body in liteboxd_network_policies():
        networking.create_namespaced_network_policy(ns, body)
    theirs = {p.metadata.name: p.metadata.resource_version for p in networking.list_namespaced_network_policy(ns).items}
    # A sandbox with internet, one with domains (LiteBoxd gives it no internet label), one without,
    # a persistent sandbox's Pod from its Deployment, and a non-sandbox Pod of LiteBoxd's (prepull).
    core.create_namespaced_pod(ns, liteboxd_pod("a1b2c3", internet=True))
    core.create_namespaced_pod(ns, liteboxd_pod("d4e5f6"))
    core.create_namespaced_pod(ns, liteboxd_pod("a0b0c0"))
    core.create_namespaced_pod(ns, liteboxd_pod("p9q8r7", name="sandbox-p9q8r7-7d9c8b6f5-x2x4q"))
    for name, labels in (("prepull-img1-abcde", {"app": "liteboxd-prepull", "job-name": "prepull-img1"}),
                         ("gateway", {"app": "liteboxd-gateway"}), ("coredns", {"k8s-app": "kube-dns"})):
        core.create_namespaced_pod(ns, {"metadata": {"name": name, "labels": labels},
                                        "spec": {"containers": [{"name": "c", "image": "example.invalid/x"}]}})
    # The sandbox module in the same profile makes the same shape.
    made = run_module("sandbox", dict(auth, name="m1n2o3", namespace=ns, profile="liteboxd", wait=False,
                                      image="example.invalid/sandbox:1", ports=[8000], network={
                                          "allow_internet_access": True, "allowed_domains": ["pypi.org"]},
                                      gateway_url="https://gw.example.com"))
    try:
        args = dict(auth, namespace=ns, profile="liteboxd", gateway_namespace=ns, dns_namespace=ns)
        first = run_module("sandbox_network_policies", args)
        again = run_module("sandbox_network_policies", args)
        run_module("egress_gateway_policy", dict(auth, name=egress_name, sandbox_namespace=ns, profile="liteboxd",
                                                 egress_ip="10.147.17.5"))

        nps = {p.metadata.name: api_client.sanitize_for_serialization(p)
               for p in networking.list_namespaced_network_policy(ns).items}
        cnps = {p["metadata"]["name"]: p for p in custom.list_namespaced_custom_object(
            "cilium.io", "v2", ns, "ciliumnetworkpolicies")["items"]}
        cegp = custom.get_cluster_custom_object("cilium.io", "v2", "ciliumegressgatewaypolicies", egress_name)
        module_pod = core.read_namespaced_pod("sandbox-m1n2o3", ns)
    finally:
        run_module("egress_gateway_policy", dict(auth, name=egress_name, state="absent"))

    sandboxes = {f"{ns}/sandbox-{i}" for i in ("a1b2c3", "d4e5f6", "a0b0c0", "m1n2o3")} | {
        f"{ns}/sandbox-p9q8r7-7d9c8b6f5-x2x4q"}
    assert again["changed"] is False
    # Ours are named beside LiteBoxd's, which stay exactly as its server wrote them.
    assert {p["name"] for p in first["policies"]} == {
        "sandbox-network-default-deny-all", "sandbox-network-allow-dns", "sandbox-network-deny-k8s-api",
        "sandbox-network-allow-gateway-ingress", "sandbox-network-allow-gateway-ingress-from-hosts",
        "sandbox-network-allow-internet-egress"}
    assert {name: nps[name]["metadata"]["resourceVersion"] for name in theirs} == theirs
    # default-deny-all ({}) takes every Pod; every allow takes exactly LiteBoxd's sandboxes, so none of
    # them is cut off from DNS or from the gateway.
    assert selected(core, nps["sandbox-network-default-deny-all"]["spec"]["podSelector"], ns) >= sandboxes
    for name in ("sandbox-network-allow-dns", "sandbox-network-deny-k8s-api",
                 "sandbox-network-allow-gateway-ingress-from-hosts"):
        assert selected(core, cnps[name]["spec"]["endpointSelector"], ns) == sandboxes, name
    gateway_policy = nps["sandbox-network-allow-gateway-ingress"]["spec"]
    assert selected(core, gateway_policy["podSelector"], ns) == sandboxes
    assert selected(core, gateway_policy["ingress"][0]["from"][0]["podSelector"], ns) == {f"{ns}/gateway"}
    assert selected(core, cnps["sandbox-network-allow-dns"]["spec"]["egress"][0]["toEndpoints"][0]) == {
        f"{ns}/coredns"}
    assert selected(core, nps["sandbox-network-allow-internet-egress"]["spec"]["podSelector"], ns) == {
        f"{ns}/sandbox-a1b2c3"}
    # The egress gateway takes every sandbox: the internet one and the domain ones leave by the tunnel.
    assert selected(core, cegp["spec"]["selectors"][0]["podSelector"]) == sandboxes
    assert label_selector(cegp["spec"]["selectors"][0]["podSelector"])[1] == ns
    # The module's Pod is LiteBoxd's shape; its domain policy selects it by LiteBoxd's id label.
    labels = module_pod.metadata.labels
    assert (labels["app"], labels["sandbox-id"]) == ("liteboxd", "m1n2o3")
    assert "liteboxd.io/internet-access" not in module_pod.metadata.labels  # domains only
    assert selected(core, cnps["allow-domains-m1n2o3"]["spec"]["endpointSelector"], ns) == {f"{ns}/sandbox-m1n2o3"}
    assert made["access_url"] == "https://gw.example.com/api/v1/sandbox/m1n2o3/port/8000/"


def test_switching_profiles_replaces_the_objects(kube_apiserver, kube_namespace):
    args = {"kubeconfig": kube_apiserver.kubeconfig, "namespace": kube_namespace}
    run_module("sandbox_network_policies", args)

    switched = run_module("sandbox_network_policies", dict(args, profile="liteboxd"))

    actions = {p["name"]: p["action"] for p in switched["policies"]}
    assert actions["default-deny-all"] == "deleted"
    assert actions["sandbox-network-default-deny-all"] == "created"
    names = {p.metadata.name for p in client.NetworkingV1Api(kube_apiserver.api_client())
             .list_namespaced_network_policy(kube_namespace).items}
    assert names == {"sandbox-network-default-deny-all", "sandbox-network-allow-gateway-ingress",
                     "sandbox-network-allow-internet-egress"}
