"""The route_aware_egress role through ansible-playbook, run inside the lab's "host" namespace with a
local connection: the seed's dual-NIC example converges, is idempotent, check mode predicts, and
disabling removes every trace."""
import json
import os
import subprocess
import sys

import pytest

from tests.integration.cube_router_lab import (
    ECHO_IP, HOST_LAN_IP, HOST_WAN_IP, INET_GW, INTERNAL_GW, PRIVATE_TARGET, SANDBOX_CIDR, Lab,
)
from tests.lib.collection import install_on_path

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: liteboxd.sandbox_network.route_aware_egress
"""


@pytest.fixture
def lab():
    lab = Lab()
    yield lab
    lab.close()


def play(lab, tmp_path, variables, check=False):
    """Run the role; return the play recap's counters for localhost."""
    install_on_path()
    (tmp_path / "play.yml").write_text(PLAYBOOK)
    (tmp_path / "vars.json").write_text(json.dumps(variables))
    argv = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", "ansible_python_interpreter=%s" % sys.executable, "-e", "@%s" % (tmp_path / "vars.json"),
            str(tmp_path / "play.yml")] + (["--check", "--diff"] if check else [])
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="json", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_HOME=str(tmp_path / "ansible-home"))
    proc = subprocess.run(["ip", "netns", "exec", lab.host.name] + argv, capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(proc.stdout)["stats"]["localhost"]


def dual_nic(tmp_path, enabled=True):
    """The seed's example 2: internet on the primary NIC, private ranges on the internal NIC."""
    return {
        "route_aware_egress_enabled": enabled,
        "route_aware_egress_sandbox_cidr": SANDBOX_CIDR,
        "route_aware_egress_routes": [
            {"dst": "default", "via": INET_GW, "dev": "wan0", "src": HOST_WAN_IP},
            {"dst": "10.0.0.0/8", "via": INTERNAL_GW, "dev": "lan0", "src": HOST_LAN_IP},
            {"dst": "172.16.0.0/12", "via": INTERNAL_GW, "dev": "lan0", "src": HOST_LAN_IP},
        ],
        "route_aware_egress_state_dir": str(tmp_path / "state"),
        "route_aware_egress_unit_dir": str(tmp_path / "units"),
    }


def test_dual_nic_example_converges_idempotently_and_disables_without_trace(lab, tmp_path):
    before = lab.snapshot()
    assert play(lab, tmp_path, dual_nic(tmp_path, enabled=False))["changed"] == 0  # off: nothing to do
    assert play(lab, tmp_path, dual_nic(tmp_path), check=True)["changed"] == 1
    assert lab.snapshot() == before  # check mode touched nothing

    assert play(lab, tmp_path, dual_nic(tmp_path))["changed"] == 1
    assert lab.host.ip_json("addr show dev cube-router")[0]["operstate"] in ("UP", "UNKNOWN")
    assert lab.host.ip_json("route show default")[0].get("prefsrc") == HOST_WAN_IP
    assert lab.seen_by(lab.sandbox, ECHO_IP) == HOST_WAN_IP
    assert lab.seen_by(lab.sandbox, PRIVATE_TARGET) == HOST_LAN_IP
    assert play(lab, tmp_path, dual_nic(tmp_path))["changed"] == 0
    assert play(lab, tmp_path, dual_nic(tmp_path), check=True)["changed"] == 0

    assert play(lab, tmp_path, dual_nic(tmp_path, enabled=False))["changed"] == 1
    assert lab.snapshot() == before  # the replaced default route is back as it was
    assert play(lab, tmp_path, dual_nic(tmp_path, enabled=False))["changed"] == 0
