"""A K3s-shaped kubeconfig rewritten by the k3s_kubeconfig filter works against a real API server."""
import base64
import pathlib

from kubernetes import client, config

from ansible_collections.liteboxd.sandbox_network.plugins.filter.k3s_kubeconfig import rewrite_kubeconfig


def k3s_style_kubeconfig(ca_file, token):
    """What K3s writes on a server: everything called "default", the API on 127.0.0.1:6443, the CA inline."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "default", "cluster": {
            "certificate-authority-data": base64.b64encode(pathlib.Path(ca_file).read_bytes()).decode(),
            "server": "https://127.0.0.1:6443"}}],
        "contexts": [{"name": "default", "context": {"cluster": "default", "user": "default"}}],
        "current-context": "default",
        "users": [{"name": "default", "user": {"token": token}}],
    }


def test_rewritten_kubeconfig_reaches_the_api_server(kube_apiserver):
    rewritten = rewrite_kubeconfig(k3s_style_kubeconfig(kube_apiserver.ca_file, kube_apiserver.token),
                                   kube_apiserver.url, "liteboxd")
    api = client.CoreV1Api(config.new_client_from_config_dict(rewritten, context="liteboxd"))
    names = {ns.metadata.name for ns in api.list_namespace().items}
    assert "kube-system" in names
    assert api.api_client.configuration.host == kube_apiserver.url
