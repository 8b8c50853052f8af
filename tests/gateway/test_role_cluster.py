"""roles/gateway in cluster mode, applied by ansible-playbook to the real API server."""
import json
import os
import subprocess
import sys

import pytest

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: liteboxd.sandbox_network.gateway
"""


def run_role(tmp_path, variables, check=False, playbook=PLAYBOOK):
    (tmp_path / "play.yml").write_text(playbook)
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
            str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'vars.json'}", "-e",
            f"ansible_python_interpreter={sys.executable}"]
    if check:
        argv += ["--check", "--diff"]
    env = {**os.environ, "ANSIBLE_STDOUT_CALLBACK": "json", "ANSIBLE_NOCOLOR": "1"}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    stats = json.loads(out.stdout)["stats"]["localhost"]
    return stats


@pytest.fixture
def cluster_vars(kube_apiserver, kube_namespace):
    return {
        "gateway_install_mode": "cluster", "gateway_image": "registry.example/liteboxd/gateway:0.1.0",
        "gateway_namespace": kube_namespace, "gateway_sandbox_namespace": kube_namespace,
        "gateway_create_namespace": False, "gateway_wait": False, "gateway_domain": "sandbox.example.com",
        "gateway_settings": {"max-concurrent-per-sandbox": 64},
        "gateway_k8s_auth": {"kubeconfig": kube_apiserver.kubeconfig},
    }


def test_cluster_manifests_apply_idempotently_and_are_removed(tmp_path, kube_apiserver, kube_namespace,
                                                              cluster_vars):
    from kubernetes import client

    api = kube_apiserver.api_client()
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    rbac, networking = client.RbacAuthorizationV1Api(api), client.NetworkingV1Api(api)

    assert run_role(tmp_path, cluster_vars)["changed"] > 0
    deployment = apps.read_namespaced_deployment("liteboxd-gateway", kube_namespace)
    container = deployment.spec.template.spec.containers[0]
    assert container.image == "registry.example/liteboxd/gateway:0.1.0"
    env = {e.name: e.value for e in container.env}
    assert env["LITEBOXD_GATEWAY_NAMESPACE"] == kube_namespace
    assert env["LITEBOXD_GATEWAY_DOMAIN"] == "sandbox.example.com"
    assert env["LITEBOXD_GATEWAY_MAX_CONCURRENT_PER_SANDBOX"] == "64"
    assert container.readiness_probe.http_get.path == "/readyz"
    assert deployment.spec.template.spec.service_account_name == "liteboxd-gateway"
    role = rbac.read_namespaced_role("liteboxd-gateway", kube_namespace)
    assert [(r.resources, sorted(r.verbs)) for r in role.rules] == [(["pods"], ["get", "list", "watch"])]
    binding = rbac.read_namespaced_role_binding("liteboxd-gateway", kube_namespace)
    assert binding.subjects[0].name == "liteboxd-gateway"
    service = core.read_namespaced_service("liteboxd-gateway", kube_namespace)
    assert {p.name: p.port for p in service.spec.ports} == {"http": 8080, "metrics": 9090}
    ingress = networking.read_namespaced_ingress("liteboxd-gateway", kube_namespace)
    assert [rule.host for rule in ingress.spec.rules] == ["sandbox.example.com", "*.sandbox.example.com"]

    # The ServiceAccount may watch sandbox Pods, and only that.
    review = client.AuthorizationV1Api(api).create_subject_access_review({
        "spec": {"user": f"system:serviceaccount:{kube_namespace}:liteboxd-gateway",
                 "resourceAttributes": {"namespace": kube_namespace, "verb": "watch", "resource": "pods"}}})
    assert review.status.allowed
    review = client.AuthorizationV1Api(api).create_subject_access_review({
        "spec": {"user": f"system:serviceaccount:{kube_namespace}:liteboxd-gateway",
                 "resourceAttributes": {"namespace": kube_namespace, "verb": "get", "resource": "secrets"}}})
    assert not review.status.allowed

    assert run_role(tmp_path, cluster_vars)["changed"] == 0
    assert run_role(tmp_path, dict(cluster_vars, gateway_replicas=3), check=True)["changed"] == 1
    assert apps.read_namespaced_deployment("liteboxd-gateway", kube_namespace).spec.replicas == 2

    assert run_role(tmp_path, dict(cluster_vars, gateway_state="absent"))["changed"] > 0
    assert not apps.list_namespaced_deployment(kube_namespace).items
    assert not rbac.list_namespaced_role(kube_namespace).items
    assert run_role(tmp_path, dict(cluster_vars, gateway_state="absent"))["changed"] == 0


def refused(tmp_path, variables) -> str:
    """Run the role expecting it to fail; returns its output."""
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                          "-c", "local", str(tmp_path / "play.yml"), "-e", f"@{tmp_path / 'vars.json'}"],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode != 0
    return out.stdout


def test_cluster_mode_requires_an_image(tmp_path, cluster_vars):
    assert "gateway_image" in refused(tmp_path, dict(cluster_vars, gateway_image=""))


def test_host_mode_without_a_wheelhouse_stops_before_any_change(tmp_path):
    # Host mode on this machine, with a wheelhouse that was never built: refused at validation,
    # before the first task that changes anything, naming the variable and the build command.
    variables = {"gateway_wheelhouse": str(tmp_path / "not-built"), "gateway_install_dir": str(tmp_path / "opt"),
                 "gateway_config_dir": str(tmp_path / "etc")}
    output = refused(tmp_path, variables)
    assert f"gateway_wheelhouse ({tmp_path / 'not-built'}) holds no gateway wheelhouse" in output
    assert "scripts/build-gateway.sh" in output
    assert not (tmp_path / "opt").exists() and not (tmp_path / "etc").exists()
