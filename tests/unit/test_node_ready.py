"""node_ready: how it reads a Node's readiness (its documentation is checked with every module's in
tests/unit/test_module_docs.py; the waiting itself runs against the real API server in
tests/integration/test_k3s_wait.py)."""
import pytest

from ansible_collections.liteboxd.sandbox_network.plugins.modules import node_ready


def node(*conditions):
    return {"metadata": {"name": "agent-1"}, "status": {"conditions": list(conditions)}}


NO_NETWORK = ("container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
              "message:Network plugin returns error: cni plugin not initialized")


@pytest.mark.parametrize("state, up, up_without_network, described", [
    (None, False, False, "not registered (no Node object of that name)"),
    (node(), False, False, "registered, no Ready condition reported yet"),
    (node({"type": "MemoryPressure", "status": "False"}), False, False, "registered, no Ready condition reported yet"),
    (node({"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": NO_NETWORK}), False, True,
     "Ready=False (KubeletNotReady: %s)" % NO_NETWORK),
    # Kubernetes before 1.2x said "runtime network not ready".
    (node({"type": "Ready", "status": "False", "message": NO_NETWORK[len("container "):]}), False, True,
     "Ready=False (%s)" % NO_NETWORK[len("container "):]),
    # Several problems, the network among them: more than a missing CNI.
    (node({"type": "Ready", "status": "False", "reason": "KubeletNotReady",
           "message": "[container runtime status check may not have completed yet, %s]" % NO_NETWORK}), False, False,
     "Ready=False (KubeletNotReady: [container runtime status check may not have completed yet, %s])" % NO_NETWORK),
    (node({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": NO_NETWORK}), False, False,
     "Ready=Unknown (NodeStatusUnknown: %s)" % NO_NETWORK),
    (node({"type": "Ready", "status": "True"}), True, True, "Ready=True"),
])
def test_readiness_and_what_is_said_about_it(state, up, up_without_network, described):
    assert node_ready.is_up(state) is up
    assert node_ready.is_up(state, require_network=False) is up_without_network
    assert node_ready.describe(state) == described


RESTARTED_AT = node_ready.parse_time("2026-12-05T10:00:00Z")


@pytest.mark.parametrize("heartbeat, up, described", [
    # The status the node left before its restart: Ready, but not a report of the restarted node.
    ("2026-12-05T09:58:30Z", False, "Ready=True, not reported since 2026-12-05T10:00:00Z (last 2026-12-05T09:58:30Z)"),
    # The same second as the clock read before the restart: it may have come before the restart.
    ("2026-12-05T10:00:00Z", False, "Ready=True, not reported since 2026-12-05T10:00:00Z (last 2026-12-05T10:00:00Z)"),
    (None, False, "Ready=True, not reported since 2026-12-05T10:00:00Z (last never)"),
    ("2026-12-05T10:00:07Z", True, "Ready=True"),
])
def test_a_restarted_node_counts_only_once_it_reported_after_the_restart(heartbeat, up, described):
    state = node({"type": "Ready", "status": "True", "lastHeartbeatTime": heartbeat})
    assert node_ready.is_up(state, heartbeat_after=RESTARTED_AT) is up
    assert node_ready.describe(state, heartbeat_after=RESTARTED_AT) == described
    assert node_ready.is_up(state) is True  # without heartbeat_after, any Ready counts


def test_a_fresh_report_without_its_network_counts_only_when_the_network_is_not_required():
    state = node({"type": "Ready", "status": "False", "message": NO_NETWORK, "lastHeartbeatTime": "2026-12-05T10:00:03Z"})
    assert node_ready.is_up(state, require_network=False, heartbeat_after=RESTARTED_AT) is True
    assert node_ready.is_up(state, require_network=True, heartbeat_after=RESTARTED_AT) is False
