"""The operator's path through AWX: jobs shaped as AWX shapes them (tests/lib/awx.py), run by
ansible-runner against the real API server, with the project of extensions/awx/project.

- The deploy job (deploy.yml -> liteboxd.sandbox_network.site, job tags sandbox_policies) applies
  the policies with the cluster's connection from each of the ways the cluster plays accept it:
  AWX's built-in bearer token credential (K8S_AUTH_* in the environment, nothing else), the
  shipped kubeconfig credential type (K8S_AUTH_KUBECONFIG), liteboxd_kubeconfig, and
  liteboxd_k8s_auth (module_defaults); the ZeroTier credential is attached as on a real deploy
  template. The rollback job removes what it applied.
- A job of the project's own creates a sandbox: its access token stays out of the job.
- The zerotier role's join step authorizes the node through ZeroTier Central with the token the
  shipped ZeroTier credential type injects (against tests/lib/zerotier_stub.py).
- With no way to reach the API server the deploy job fails with the one message, and the host
  plays whose groups are empty are skipped on the way.
No secret (bearer token, ZeroTier token, sandbox token) appears in any job's events or stdout,
which is what AWX stores and shows.
"""
import pathlib
import sys
import types

import pytest
from kubernetes import client

from tests.integration.test_module_defaults_role import cluster_state
from tests.lib.awx import Job, credential_type
from tests.lib.zerotier_stub import SHORT_TIMINGS, Timings, World

HOST_GROUPS = ("k3s_servers", "k3s_agents", "egress_exits", "egress_nodes", "route_aware_egress_hosts",
               "gateway_hosts")
EGRESS_IP = "10.147.17.5"
NWID = "8056c2e21c000001"
NODE = "0deadbeef1"
NO_AUTH_MESSAGE = "The cluster plays need the Kubernetes API server and no way to reach it is given"


def inventory(egress_nodes=(), hostvars=None):
    """AWX's inventory script output: localhost for the cluster plays, every platform group."""
    groups = {name: {"hosts": list(egress_nodes) if name == "egress_nodes" else []} for name in HOST_GROUPS}
    meta = {"localhost": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}}
    meta.update(hostvars or {})
    return dict(groups, all={"children": ["ungrouped"] + list(HOST_GROUPS)}, ungrouped={"hosts": ["localhost"]},
                _meta={"hostvars": meta})


def zerotier_credential(job, central):
    job.inject_custom(credential_type("zerotier_api"),
                      {"api": "central", "api_url": central.api_url, "token": central.token})


def assert_no_secret(result, *secrets):
    for secret in secrets:
        assert secret and secret not in result.stdout, "a secret is in the job's stdout"
        assert secret not in result.event_text, "a secret is in the job's events"


def assert_successful(result):
    assert (result.status, result.rc) == ("successful", 0), result.stdout[-6000:] + result.runner.stderr[-2000:]


@pytest.fixture
def zerotier():
    """A node's zerotier-one and ZeroTier Central holding its network (tests/lib/zerotier_stub.py), fast timings."""
    world = World(Timings(**SHORT_TIMINGS))
    stand_in = types.SimpleNamespace(node=world.daemon(NODE), central=world.central(NWID[:10]))
    stand_in.central.add_network(NWID, "10.147.17.0/24", private=True)
    yield stand_in
    world.stop()


@pytest.mark.parametrize("auth", ["bearer_token_credential", "kubeconfig_credential", "liteboxd_kubeconfig",
                                  "liteboxd_k8s_auth"])
def test_deploy_job_applies_the_policies_and_rollback_removes_them(auth, kube_apiserver, kube_namespace,
                                                                   zerotier, tmp_path):
    egress_name = "awx-" + kube_namespace[-24:].strip("-")
    variables = {"liteboxd_sandbox_namespace": kube_namespace, "sandbox_policies_egress_policy_name": egress_name}
    nodes = inventory(["egress-1"], {"egress-1": {"egress_node_egress_ip": EGRESS_IP}})
    connection = {"host": kube_apiserver.url, "api_key": kube_apiserver.token, "ca_cert": str(kube_apiserver.ca_file)}

    def job(name, playbook, extravars, tags):
        made = Job(tmp_path / name, playbook, nodes, dict(variables, **extravars), tags)
        if auth == "bearer_token_credential":
            made.inject_bearer_token(kube_apiserver.url, kube_apiserver.token, pathlib.Path(kube_apiserver.ca_file).read_text())
        elif auth == "kubeconfig_credential":
            made.inject_custom(credential_type("kubeconfig"),
                               {"kubeconfig": pathlib.Path(kube_apiserver.kubeconfig).read_text()})
        elif auth == "liteboxd_kubeconfig":
            made.extravars["liteboxd_kubeconfig"] = str(kube_apiserver.kubeconfig)
        else:
            made.extravars["liteboxd_k8s_auth"] = connection
        zerotier_credential(made, zerotier.central)
        return made

    deploy = job("deploy", "deploy.yml", {}, ["sandbox_policies"])
    deployed = deploy.run()
    names, egress = cluster_state(kube_apiserver, kube_namespace, egress_name)
    rollback = job("rollback", "rollback.yml", {"rollback_sandbox_policies": True}, ["cluster"])
    rolled_back = rollback.run()
    names_after, egress_after = cluster_state(kube_apiserver, kube_namespace, egress_name)

    assert_successful(deployed)
    assert names == {"default-deny-all", "allow-dns", "deny-k8s-api", "allow-gateway-ingress",
                     "allow-gateway-ingress-from-hosts", "allow-internet-egress"}
    assert egress["spec"]["egressGateway"]["egressIP"] == EGRESS_IP
    assert deploy.stats()["changed"] == {"localhost": 2}
    assert_successful(rolled_back)
    assert names_after == set() and egress_after is None
    for result in (deployed, rolled_back):
        assert_no_secret(result, kube_apiserver.token, zerotier.central.token)


def test_a_sandbox_job_keeps_the_sandbox_token_out_of_the_job(kube_apiserver, kube_namespace, tmp_path):
    job = Job(tmp_path / "sandbox", "sandbox.yml", inventory(), {"liteboxd_sandbox_namespace": kube_namespace})
    job.inject_bearer_token(kube_apiserver.url, kube_apiserver.token, pathlib.Path(kube_apiserver.ca_file).read_text())
    job.project_playbooks["sandbox.yml"] = [{
        "name": "A sandbox for a user", "hosts": "localhost", "gather_facts": False,
        # As the module's documentation says: the result holds the token.
        "tasks": [{"name": "Create the sandbox", "register": "sandbox", "no_log": True,
                   "liteboxd.sandbox_network.sandbox": {
                       "name": "awx-user-1", "namespace": "{{ liteboxd_sandbox_namespace }}",
                       "image": "registry.example/agent:1", "network": {"allow_internet_access": True},
                       "wait": False}},
                  {"name": "Hand the access URL on (the token goes to the user by another way)",
                   "ansible.builtin.debug": {"msg": "{{ sandbox.access_url | default('') }}"}}]}]

    result = job.run()

    pod = client.CoreV1Api(kube_apiserver.api_client()).read_namespaced_pod("awx-user-1", kube_namespace)
    token = pod.metadata.annotations["liteboxd.io/access-token"]
    assert_successful(result)
    assert pod.metadata.labels["liteboxd.io/internet-access"] == "true"
    assert len(token) >= 43
    assert_no_secret(result, token, kube_apiserver.token)


def test_the_zerotier_credential_authorizes_the_node_through_central(zerotier, tmp_path):
    home = tmp_path / "zerotier-one"
    home.mkdir()
    (home / "authtoken.secret").write_text(zerotier.node.token)
    egress_host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                   "zerotier_network_id": NWID, "zerotier_home": str(home), "zerotier_api_url": zerotier.node.url,
                   "zerotier_authorize": True, "zerotier_poll_interval": 0.2, "zerotier_wait_timeout": 30}
    job = Job(tmp_path / "zerotier", "zerotier.yml", inventory(["egress-1"], {"egress-1": egress_host}))
    zerotier_credential(job, zerotier.central)
    job.project_playbooks["zerotier.yml"] = [{
        "name": "Join and authorize the egress nodes (the zerotier role's join step)", "hosts": "egress_nodes",
        "gather_facts": False,
        "tasks": [{"name": "Join, authorize, wait", "ansible.builtin.include_role": {
            "name": "liteboxd.sandbox_network.zerotier", "tasks_from": "join.yml"},
            "vars": {"zerotier_install_pending": False}}]}]

    result = job.run()

    central = [r for r in zerotier.central.requests if r["path"].startswith("/api/v1/")]
    assert_successful(result)
    assert central and all(r["headers"].get("authorization") == "token %s" % zerotier.central.token
                           for r in central)
    assert [r for r in central if r["method"] == "POST"], "nothing was posted to Central"
    member = [r for r in central if r["method"] == "POST"][-1]["body"]
    assert member["config"]["authorized"] is True
    assert_no_secret(result, zerotier.central.token)


def test_without_a_way_to_the_api_server_the_deploy_job_fails_with_one_message(zerotier, tmp_path):
    job = Job(tmp_path / "deploy", "deploy.yml", inventory())
    zerotier_credential(job, zerotier.central)

    result = job.run()

    failed = [event["event_data"] for event in result.events if event["event"] == "runner_on_failed"]
    skipped_plays = [event["event_data"]["play"] for event in result.events
                     if event["event"] == "playbook_on_no_hosts_matched"]
    assert (result.status, result.rc) == ("failed", 2), result.stdout[-4000:]
    assert len(failed) == 1
    message = failed[0]["res"]["msg"]
    assert message.startswith(NO_AUTH_MESSAGE)
    for way in ("liteboxd_kubeconfig", "K8S_AUTH_HOST", "K8S_AUTH_API_KEY", "liteboxd_k8s_auth",
                "group/liteboxd.sandbox_network.k8s", "--skip-tags cluster"):
        assert way in message
    assert failed[0]["play"] == "Egress gateway policy"
    assert {"ZeroTier on the cloud exits and egress nodes", "Cloud exits and egress nodes"} <= set(skipped_plays)
    assert_no_secret(result, zerotier.central.token)
