"""The selectors of the base, internet, domain and egress gateway policies line up with real pods.

Each stored policy's selector is turned into a labelSelector string and the API server itself
evaluates it against the pods that exist: sandboxes with and without internet access, the
gateway, kube-dns, and an internet-labelled pod in another namespace. (Cilium selects the same
way; its ``k8s:`` prefix and the ``io.kubernetes.pod.namespace`` pseudo-label are mapped to the
label and the namespace.)
"""
from kubernetes import client

from tests.lib.apiserver import delete_namespace
from tests.lib.modules import run_module

NAMESPACE_KEY = "io.kubernetes.pod.namespace"


def auth(server):
    return {"kubeconfig": server.kubeconfig}


def label_selector(selector):
    """A Kubernetes LabelSelector (matchLabels / matchExpressions) as a labelSelector string,
    plus the namespace a Cilium selector pins with its pseudo-label (None when it does not)."""
    terms, namespace = [], None
    for key, value in (selector.get("matchLabels") or {}).items():
        key = key[len("k8s:"):] if key.startswith("k8s:") else key
        if key == NAMESPACE_KEY:
            namespace = value
        else:
            terms.append("%s=%s" % (key, value))
    for expr in selector.get("matchExpressions") or []:
        operator = expr["operator"]
        if operator in ("In", "NotIn"):
            terms.append("%s %s (%s)" % (expr["key"], operator.lower(), ",".join(expr["values"])))
        else:
            terms.append(("" if operator == "Exists" else "!") + expr["key"])
    return ",".join(terms), namespace


def selected(core, selector, namespace=None):
    """Names ("namespace/pod") of the pods the API server finds for the selector."""
    text, pinned = label_selector(selector)
    namespace = pinned or namespace
    if namespace:
        pods = core.list_namespaced_pod(namespace, label_selector=text).items
    else:
        pods = core.list_pod_for_all_namespaces(label_selector=text).items
    return {"%s/%s" % (p.metadata.namespace, p.metadata.name) for p in pods}


def test_policy_selectors_select_the_intended_pods(kube_apiserver, kube_namespace):
    ns = kube_namespace
    other = ns + "-other"
    api_client = kube_apiserver.api_client()
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    networking = client.NetworkingV1Api(api_client)
    egress_name = "egress-" + ns[-20:].strip("-")
    # kube-apiserver >= 1.21 sets this label on every namespace; this v1.20 server does not.
    core.patch_namespace(ns, {"metadata": {"labels": {"kubernetes.io/metadata.name": ns}}})
    core.create_namespace({"metadata": {"name": other}})
    try:
        base = dict(auth(kube_apiserver), namespace=ns, wait=False, image="example.invalid/sandbox:1", ports=[8000])
        run_module("sandbox", dict(base, name="sbx-open", network={"allow_internet_access": True}))
        run_module("sandbox", dict(base, name="sbx-closed"))
        domains_only = {"allow_internet_access": True, "allowed_domains": ["pypi.org"]}
        run_module("sandbox", dict(base, name="sbx-domains", network=domains_only))
        for namespace, name, labels in ((ns, "gateway", {"app": "liteboxd-gateway"}),
                                        (ns, "coredns", {"k8s-app": "kube-dns"}),
                                        (other, "stray", {"liteboxd.io/internet-access": "true"})):
            core.create_namespaced_pod(namespace, {"metadata": {"name": name, "labels": labels},
                                                   "spec": {"containers": [{"name": "c", "image": "example.invalid/x"}]}})
        run_module("sandbox_network_policies", dict(auth(kube_apiserver), namespace=ns, gateway_namespace=ns,
                                                    dns_namespace=ns))
        run_module("egress_gateway_policy", dict(auth(kube_apiserver), name=egress_name, sandbox_namespace=ns,
                                                 egress_ip="10.147.17.5"))

        nps = dict((p.metadata.name, api_client.sanitize_for_serialization(p))
                   for p in networking.list_namespaced_network_policy(ns).items)
        cnps = dict((p["metadata"]["name"], p) for p in custom.list_namespaced_custom_object(
            "cilium.io", "v2", ns, "ciliumnetworkpolicies")["items"])
        cegp = custom.get_cluster_custom_object("cilium.io", "v2", "ciliumegressgatewaypolicies", egress_name)
        sandboxes = {ns + "/sbx-open", ns + "/sbx-closed", ns + "/sbx-domains"}
        everything = sandboxes | {ns + "/gateway", ns + "/coredns"}

        assert selected(core, nps["default-deny-all"]["spec"]["podSelector"], ns) == everything
        for name in ("allow-dns", "deny-k8s-api", "allow-gateway-ingress-from-hosts"):
            assert selected(core, cnps[name]["spec"]["endpointSelector"], ns) == sandboxes, name
        assert selected(core, nps["allow-gateway-ingress"]["spec"]["podSelector"], ns) == sandboxes
        assert selected(core, nps["allow-internet-egress"]["spec"]["podSelector"], ns) == {ns + "/sbx-open"}
        # Internet with domains is those domains only (LiteBoxd's semantics): not the internet set.
        assert selected(core, cnps["allow-domains-sbx-domains"]["spec"]["endpointSelector"], ns) == {
            ns + "/sbx-domains"}
        assert "allow-domains-sbx-open" not in cnps and "allow-domains-sbx-closed" not in cnps
        # The egress gateway takes every sandbox, so whatever a policy allows out (the internet or the
        # listed domains) leaves through the tunnel; not the stray pod elsewhere.
        assert selected(core, cegp["spec"]["selectors"][0]["podSelector"]) == sandboxes
        # Peers: DNS goes to kube-dns only, ingress comes from the gateway pods only.
        dns_peer = cnps["allow-dns"]["spec"]["egress"][0]["toEndpoints"][0]
        assert selected(core, dns_peer) == {ns + "/coredns"}
        peer = nps["allow-gateway-ingress"]["spec"]["ingress"][0]["from"][0]
        namespaces = core.list_namespace(label_selector=label_selector(peer["namespaceSelector"])[0]).items
        assert [n.metadata.name for n in namespaces] == [ns]
        assert selected(core, peer["podSelector"], ns) == {ns + "/gateway"}

        # Internet access withdrawn in place: the internet set selects nothing.
        run_module("sandbox", dict(base, name="sbx-open", network={"allow_internet_access": False}))
        assert selected(core, nps["allow-internet-egress"]["spec"]["podSelector"], ns) == set()
        assert selected(core, cnps["deny-k8s-api"]["spec"]["endpointSelector"], ns) == sandboxes
    finally:
        run_module("egress_gateway_policy", dict(auth(kube_apiserver), name=egress_name, state="absent"))
        delete_namespace(api_client, other)
