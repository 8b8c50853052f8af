"""The egress node fails closed, proved with packets in network namespaces.

node ── tun0 (10.147.17.5) ═══ tun0 (10.147.17.1) ── exit   [198.51.100.10 on lo]
  └─── uplink (192.0.2.2)  ─── uplink (192.0.2.1) ── inet   [198.51.100.10 on lo too]

The node's main table routes everything out of ``uplink``; only the egress table (applied by the
policy_routing module with the egress_node role's data) sends traffic from the egress IP into the
tunnel. Both far ends answer on 198.51.100.10, so a leak through the uplink would get replies:
nft counters on the node count every packet from the egress IP per output interface.
"""
import json
import sys
import time

import pytest

from tests.lib.collection import REPO
from tests.lib.modules import run_module
from tests.lib.netns import Netns, veth

EGRESS_IP = "10.147.17.5"
EXIT_IP = "10.147.17.1"
TARGET = "198.51.100.10"
SCRIPT = REPO / "roles" / "egress_node" / "files" / "liteboxd-egress-routing"

# The egress_node role's routing data (vars/main.yml) for these names and addresses.
ROUTING = {
    "tables": [{"name": "zerotier-egress", "id": 100, "exclusive": True}],
    "rules": [{"priority": 100, "from": EGRESS_IP, "table": "zerotier-egress"}],
    "routes": [
        {"dst": "default", "type": "unreachable", "metric": 4278198272, "table": "zerotier-egress"},
        {"dst": "10.42.0.0/16", "type": "throw", "table": "zerotier-egress"},
        {"dst": "default", "via": EXIT_IP, "dev": "tun0", "metric": 100, "table": "zerotier-egress"},
    ],
}

COUNTERS = """
table inet egress_count {
    counter via_tunnel {}
    counter leaked {}
    chain out {
        type filter hook postrouting priority 0; policy accept;
        ip saddr %s oifname "tun0" counter name via_tunnel
        ip saddr %s oifname != "tun0" counter name leaked
    }
}
""" % (EGRESS_IP, EGRESS_IP)


@pytest.fixture
def lab(tmp_path):
    with Netns() as node, Netns() as exit_ns, Netns() as inet:
        veth(node, "tun0", exit_ns, "tun0")
        veth(node, "uplink", inet, "uplink")
        node.ip("addr add %s/24 dev tun0" % EGRESS_IP)
        exit_ns.ip("addr add %s/24 dev tun0" % EXIT_IP)
        node.ip("addr add 192.0.2.2/24 dev uplink")
        inet.ip("addr add 192.0.2.1/24 dev uplink")
        node.ip("route add default via 192.0.2.1")
        for far_end in (exit_ns, inet):
            far_end.ip("addr add %s/32 dev lo" % TARGET)
        inet.ip("route add 10.147.17.0/24 via 192.0.2.2")  # a leaked packet would even get its reply
        # What the role's sysctl file sets on the tunnel device.
        node.sysctl("net.ipv4.conf.tun0.ignore_routes_with_linkdown", 1)
        node.run(["nft", "-f", "-"], input=COUNTERS)
        rt_dir = tmp_path / "rt_tables.d"
        rt_dir.mkdir()
        # As the role runs it: the module also writes what it applied as the service's batch file.
        run_module("policy_routing", dict(ROUTING, rt_tables_dir=str(rt_dir), batch_file=str(tmp_path / "egress-routing.ip")),
                   netns=node.name)
        yield node, exit_ns, tmp_path


PROBE = """
import errno, socket, sys
sock = socket.socket()
sock.settimeout(1)
sock.bind((sys.argv[1], 0))
try:
    sock.connect((sys.argv[2], 9))
except ConnectionRefusedError:
    print("reached")  # the far end answered with a reset: the packet got there and back
except socket.timeout:
    print("timeout")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc))
"""


def probe(node):
    """A TCP SYN from the egress IP to the target: 'reached', 'EHOSTUNREACH', 'timeout'..."""
    return node.run([sys.executable, "-c", PROBE, EGRESS_IP, TARGET]).stdout.strip()


def counter(node, name):
    """Packets counted by the named nft counter on the node."""
    text = node.run(["nft", "-j", "list", "counter", "inet", "egress_count", name]).stdout
    for item in json.loads(text)["nftables"]:
        if "counter" in item:
            return item["counter"]["packets"]
    raise AssertionError("no counter %s" % name)


def route_get(node):
    return node.run(["ip", "route", "get", TARGET, "from", EGRESS_IP], check=False)


def wait_until(predicate, what, deadline=30):
    """Poll until ``predicate()`` holds (the watcher reacts to a netlink event); fail after ``deadline`` s."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError("timed out waiting for: %s" % what)


def test_tunnel_up_traffic_goes_through_the_tunnel_only(lab):
    node, _exit_ns, _tmp = lab
    assert probe(node) == "reached"
    assert "dev tun0" in route_get(node).stdout
    assert counter(node, "via_tunnel") >= 1
    assert counter(node, "leaked") == 0
    # Without the rule the same packet would leave through the uplink: the table is what holds it.
    assert "dev uplink" in node.ip("route get %s" % TARGET)


def test_carrier_lost_fails_closed_and_recovers_by_itself(lab):
    node, exit_ns, _tmp = lab
    exit_ns.ip("link set tun0 down")  # the far end is gone: no carrier on the node's tun0
    wait_until(lambda: "NO-CARRIER" in node.ip("link show tun0"), "tun0 loses carrier")

    lookup = route_get(node)
    assert lookup.returncode != 0 and "No route to host" in lookup.stderr, lookup
    for _attempt in range(3):
        assert probe(node) == "EHOSTUNREACH"  # refused at once by the unreachable default
    assert counter(node, "leaked") == 0
    assert counter(node, "via_tunnel") == 0

    exit_ns.ip("link set tun0 up")  # nothing re-run: the route was kept, only skipped while linkdown
    wait_until(lambda: probe(node) == "reached", "traffic flows again through the tunnel")
    assert counter(node, "leaked") == 0


def test_device_down_fails_closed_and_the_watcher_restores_it(lab):
    node, _exit_ns, tmp = lab
    batch = tmp / "egress-routing.ip"
    assert "route replace default via %s dev tun0 table 100 proto static metric 100" % EXIT_IP in batch.read_text()

    # Admin down: the kernel deletes the tunnel route, the unreachable default remains.
    node.ip("link set tun0 down")
    assert "default via" not in node.ip("route show table 100")
    assert "unreachable default" in node.ip("route show table 100")
    lookup = route_get(node)
    assert lookup.returncode != 0 and "No route to host" in lookup.stderr, lookup
    assert probe(node) == "EHOSTUNREACH"
    # Up again without the watcher: the kernel does not bring the route back; still closed.
    node.ip("link set tun0 up")
    assert "default via" not in node.ip("route show table 100")
    assert probe(node) == "EHOSTUNREACH"
    assert counter(node, "leaked") == 0

    # The service's watcher (what systemd runs) restores it, and again after the next flap.
    node.popen(["bash", str(SCRIPT), "watch", "tun0", str(batch)])
    wait_until(lambda: probe(node) == "reached", "the watcher re-applies the tunnel route")
    node.ip("link set tun0 down")
    assert probe(node) == "EHOSTUNREACH"
    node.ip("link set tun0 up")
    wait_until(lambda: probe(node) == "reached", "the watcher re-applies after link up")
    assert counter(node, "leaked") == 0
    assert [r["priority"] for r in node.ip_json("rule show") if r.get("src") == EGRESS_IP] == [100]


def test_apply_script_rebuilds_the_routing_after_reboot(lab):
    """After a reboot the kernel has nothing: one 'apply' gives the rule, the table and fail-closed."""
    node, _exit_ns, tmp = lab
    batch = tmp / "egress-routing.ip"
    expected_rules = node.ip("rule show")
    expected_routes = node.ip("route show table 100")
    node.ip("rule del priority 100")
    node.ip("route flush table 100")

    node.run(["bash", str(SCRIPT), "apply", "tun0", str(batch)])
    node.run(["bash", str(SCRIPT), "apply", "tun0", str(batch)])  # idempotent: no duplicate rule
    assert node.ip("rule show") == expected_rules
    assert sorted(node.ip("route show table 100").splitlines()) == sorted(expected_routes.splitlines())
    # And the module agrees nothing is left to do, the batch file included.
    rt_dir = tmp / "rt_tables.d"
    again = run_module("policy_routing", dict(ROUTING, rt_tables_dir=str(rt_dir), batch_file=str(batch)), netns=node.name)
    assert not again["changed"] and again["batch_file"] == dict(path=str(batch), changed=False, written=False)


def test_apply_script_adds_ipv6_rule_lines_once(lab):
    """An IPv6 rule in the batch file ("rule -6 ...") is added once, to the IPv6 rules."""
    node, _exit_ns, tmp = lab
    node.ip("-6 addr add fd00:147::5/64 dev tun0 nodad")
    routing_v6 = dict(ROUTING, rt_tables_dir=str(tmp / "rt_tables.d"), batch_file=str(tmp / "v6.ip"),
                      rules=ROUTING["rules"] + [dict(priority=101, iif="uplink", family="ipv6", table="zerotier-egress")],
                      routes=ROUTING["routes"] + [dict(dst="default", family="ipv6", type="unreachable", table="zerotier-egress")])
    run_module("policy_routing", routing_v6, netns=node.name)
    assert "rule -6 pref 101 iif uplink lookup 100\n" in (tmp / "v6.ip").read_text()
    expected = node.ip("-6 rule show"), node.ip("-6 route show table 100")
    node.ip("-6 rule del priority 101")
    node.ip("-6 route flush table 100")
    for _twice in range(2):
        node.run(["bash", str(SCRIPT), "apply", "tun0", str(tmp / "v6.ip")])
    assert (node.ip("-6 rule show"), node.ip("-6 route show table 100")) == expected
    assert not run_module("policy_routing", routing_v6, netns=node.name)["changed"]
