"""The shared Kubernetes plumbing against a real API server: connection options, error messages
a user can act on, and the guard against a server that would silently drop a field we own."""
import os

import pytest
from kubernetes import client

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import k8s
from tests.lib.apiserver import free_port
from tests.lib.modules import run_module


def test_the_k8s_auth_environment_variables_are_honoured(kube_apiserver, kube_namespace, monkeypatch):
    monkeypatch.setenv("K8S_AUTH_HOST", kube_apiserver.url)
    monkeypatch.setenv("K8S_AUTH_API_KEY", kube_apiserver.token)
    monkeypatch.setenv("K8S_AUTH_SSL_CA_CERT", kube_apiserver.ca_file)
    result = run_module("sandbox_network_policies", {"namespace": kube_namespace})
    assert result["changed"] is True


def test_a_kubeconfig_context_is_honoured(kube_apiserver, kube_namespace):
    result = run_module("sandbox_network_policies", {"kubeconfig": kube_apiserver.kubeconfig,
                                                     "context": "liteboxd-test", "namespace": kube_namespace})
    assert result["changed"] is True
    failed = run_module("sandbox_network_policies", {"kubeconfig": kube_apiserver.kubeconfig, "context": "nope",
                                                     "namespace": kube_namespace}, expect_fail=True)
    assert failed["msg"].startswith("cannot load kubeconfig %s:" % kube_apiserver.kubeconfig)
    assert "nope" in failed["msg"]


def test_an_unreachable_api_is_named(kube_namespace):
    url = "https://127.0.0.1:%d" % free_port()
    failed = run_module("sandbox_network_policies", {"host": url, "api_key": "x", "namespace": kube_namespace},
                        expect_fail=True)
    assert failed["msg"].startswith("cannot reach the Kubernetes API at %s:" % url)


def test_wrong_credentials_are_a_401_message(kube_apiserver, kube_namespace):
    failed = run_module("sandbox", {"host": kube_apiserver.url, "api_key": "wrong", "ca_cert": kube_apiserver.ca_file,
                                    "name": "sbx-1", "namespace": kube_namespace, "image": "x", "wait": False},
                        expect_fail=True)
    assert failed["msg"] == ("the Kubernetes API at %s rejected the credentials (401 Unauthorized): check api_key or "
                             "the kubeconfig user" % kube_apiserver.url)


def test_an_unknown_certificate_authority_is_a_tls_message(kube_apiserver, kube_namespace):
    failed = run_module("egress_gateway_policy", {"host": kube_apiserver.url, "api_key": kube_apiserver.token,
                                                  "egress_ip": "10.147.17.5", "name": kube_namespace},
                        expect_fail=True)
    assert "%s" % kube_apiserver.url in failed["msg"]
    assert "certificate" in failed["msg"].lower()
    assert "ca_cert" in failed["msg"]


def test_forbidden_is_a_403_message_with_the_servers_reason(kube_apiserver, kube_namespace):
    api_client = kube_apiserver.api_client()
    api_client.set_default_header("Impersonate-User", "nobody")  # admin may impersonate; nobody may do nothing
    with pytest.raises(k8s.K8sApiError) as err:
        k8s.K8sClient(api_client).list(k8s.NETWORK_POLICY, kube_namespace)
    assert err.value.status == 403
    assert str(err.value).startswith("forbidden (403) by the Kubernetes API at %s: " % kube_apiserver.url)
    assert 'User "nobody" cannot list resource "networkpolicies"' in str(err.value)


@pytest.mark.parametrize("resource", [
    k8s.Resource("cilium.io/v2", "CiliumMissingPolicy", "ciliummissingpolicies", True,
                 crd="ciliummissingpolicies.cilium.io"),
    k8s.Resource("missing.liteboxd.io/v1", "Missing", "missings", True, crd="missings.missing.liteboxd.io"),
])
def test_a_missing_crd_is_named(kube_apiserver, kube_namespace, resource):
    kube = k8s.K8sClient(kube_apiserver.api_client())
    with pytest.raises(k8s.K8sError) as err:
        kube.get(resource, "x", kube_namespace)
    assert str(err.value) == (
        "the Kubernetes API at %s does not serve %s (%s): the CustomResourceDefinition %s is not installed "
        "(install or upgrade Cilium)" % (kube_apiserver.url, resource.plural, resource.api_version, resource.crd))
    # An object that does not exist is not an error.
    assert kube.get(k8s.CILIUM_NETWORK_POLICY, "does-not-exist", kube_namespace) is None


@pytest.mark.parametrize("check_mode", [False, True])
def test_a_field_the_server_would_drop_is_refused_and_nothing_is_stored(kube_apiserver, kube_namespace, check_mode):
    # kube-apiserver v1.20 does not know NetworkPolicy endPort and silently drops it, which
    # would leave only the first port open.
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "ranged", "namespace": kube_namespace},
              "spec": {"podSelector": {}, "policyTypes": ["Ingress"],
                       "ingress": [{"ports": [{"port": 3000, "endPort": 3999, "protocol": "TCP"}]}]}}
    kube = k8s.K8sClient(kube_apiserver.api_client())
    with pytest.raises(k8s.K8sError) as err:
        k8s.ensure_object(kube, policy, check_mode=check_mode)
    assert "would drop or alter spec.ingress[0].ports[0].endPort of NetworkPolicy %s/ranged" % kube_namespace \
        in str(err.value)
    assert client.NetworkingV1Api(kube_apiserver.api_client()).list_namespaced_network_policy(
        kube_namespace).items == []


def test_the_server_validates_with_ciliums_own_schema(kube_apiserver, kube_namespace):
    """Guards the meaning of "accepted by the server": with Cilium's own CRD schemas installed
    (LITEBOXD_CILIUM_CRDS, as CI runs) a policy with an unknown entity is refused by the server,
    not only by our checks; the project's stand-in CRDs accept it, which is why the modules
    validate their input themselves."""
    crd = client.ApiextensionsV1Api(kube_apiserver.api_client()).read_custom_resource_definition(
        "ciliumnetworkpolicies.cilium.io")
    spec_schema = crd.spec.versions[0].schema.open_apiv3_schema.properties["spec"]
    ciliums_own = bool(os.environ.get("LITEBOXD_CILIUM_CRDS"))
    assert ("egressDeny" in (spec_schema.properties or {})) == ciliums_own
    bad = {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
           "metadata": {"name": "bad-entity", "namespace": kube_namespace},
           "spec": {"endpointSelector": {}, "egress": [{"toEntities": ["everything"]}]}}
    if not ciliums_own:
        assert k8s.ensure_object(k8s.K8sClient(kube_apiserver.api_client()), bad, check_mode=True)["changed"]
        return
    with pytest.raises(k8s.K8sApiError) as err:
        k8s.ensure_object(k8s.K8sClient(kube_apiserver.api_client()), bad, check_mode=True)
    assert err.value.status == 422
    assert "everything" in str(err.value)
