"""roles/sandbox_policies refuses what Cilium would ignore before it changes anything."""
import pytest

from tests.integration.test_module_defaults_role import cluster_state, run_role


def failed_message(result):
    """The message of the task that failed (of its failed item, for a loop)."""
    failed = next(task["hosts"]["localhost"] for play in result["plays"] for task in play["tasks"]
                  if task["hosts"]["localhost"].get("failed"))
    return next((item["msg"] for item in failed.get("results", []) if item.get("failed")), failed["msg"])


@pytest.mark.parametrize("variables, message", [
    ({"sandbox_policies_egress_ip": "10.147.17.5", "sandbox_policies_egress_interface": "zt0"},
     "sandbox_policies_egress_ip and sandbox_policies_egress_interface"),
    ({"sandbox_policies_egress_gateways": [
        {"node_selector": {"kubernetes.io/hostname": "egress-a"}, "egress_ip": "10.147.17.5", "interface": "zt0"}]},
     "sandbox_policies_egress_gateways[0]: egress_ip and interface"),
])
def test_egress_ip_and_interface_together_are_refused_before_any_change(kube_apiserver, kube_namespace, tmp_path,
                                                                        variables, message):
    result = run_role(kube_apiserver, tmp_path, dict(variables, sandbox_policies_namespace=kube_namespace),
                      expect_rc=2)

    assert message in failed_message(result)
    assert "Cilium ignores" in failed_message(result)
    assert cluster_state(kube_apiserver, kube_namespace, "none")[0] == set()
