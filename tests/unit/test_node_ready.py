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
