"""cube_router on a real kernel: the module run as Ansible runs it, inside the lab's "host" namespace.

The lab (cube_router_lab.py) has a sandbox behind the host, an internal and an internet uplink, and a
VXLAN tunnel to a remote gateway that MASQUERADEs to the internet echo host.
"""
import json
import os
import sys
import textwrap

import pytest

from tests.integration.cube_router_lab import (
    ECHO_IP, HOST_LAN_IP, HOST_WAN_IP, INET_GW, INTERNAL_GW, NAT_IP, PRIVATE_TARGET, PUBLISHED_PORT,
    REMOTE_GW_IP, ROUTER_IP, SANDBOX_CIDR, SANDBOX_IP, TUNNEL_HOST_IP, TUNNEL_REMOTE_IP, Lab,
)
from tests.lib.modules import run_module

TUNNEL = dict(name="natvx", kind="vxlan", vni=100, local=HOST_WAN_IP, remote=REMOTE_GW_IP, dev="wan0",
              address=TUNNEL_HOST_IP + "/30")
# Example 2 (dual NIC): private ranges leave by the internal NIC with its address.
PRIVATE_RANGES = [dict(dst=cidr, via=INTERNAL_GW, dev="lan0", src=HOST_LAN_IP)
                  for cidr in ("10.0.0.0/8", "172.16.0.0/12")]
# Sandbox traffic (received on cube-router) to the echo host goes through the tunnel: a policy route,
# so the host's own traffic keeps its default route.
SYN = "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn"
SYN_ACK = "tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack)"
ECHO_VIA_TUNNEL = dict(
    routes=[dict(dst=ECHO_IP + "/32", via=TUNNEL_REMOTE_IP, dev="natvx", table="200")] + PRIVATE_RANGES,
    rules=[{"priority": 30000, "iif": "cube-router", "table": "200"}])


@pytest.fixture
def lab():
    lab = Lab()
    yield lab
    lab.close()


@pytest.fixture
def files(tmp_path):
    return dict(state_dir=str(tmp_path / "state"), unit_dir=str(tmp_path / "units"))


def args(files, **extra):
    result = dict(sandbox_cidr=SANDBOX_CIDR, tunnels=[TUNNEL], **files)
    result.update(ECHO_VIA_TUNNEL)
    result.update(extra)
    return result


def cube(lab, params, **kwargs):
    return run_module("cube_router", params, netns=lab.host.name, **kwargs)


def warning_texts(result):
    return [str(w) for w in result.get("warnings", [])]


def test_check_mode_reports_everything_and_touches_nothing(lab, files):
    before = lab.snapshot()
    result = cube(lab, args(files), check=True, diff=True)
    assert result["changed"] is True
    assert (result["router_ip"], result["nat_ip"], result["device"]) == (ROUTER_IP, NAT_IP, "cube-router")
    assert result["device_kind"] == "veth" and result["peer"] == "cube-router-p"  # this kernel has no dummy
    assert {"device", "addresses", "neighbours", "routes", "rules", "steering", "firewall", "tunnels", "files"} <= set(
        result["changes"])
    after = result["diff"]["after"]
    assert after["device"] == "cube-router kind veth up rp_filter 2 accept_local 1"
    assert after["addresses"] == ["192.168.63.253/32 dev cube-router"]
    assert after["neighbours"] == ["192.168.63.254 lladdr <device-mac> dev cube-router nud permanent"]
    assert "192.168.63.254/32 dev cube-router" in after["routes"]
    assert "default via 192.168.63.254 dev cube-router onlink table 3626" in after["routes"]
    assert "pref 30102 from 192.168.0.0/18 lookup 3626" in after["rules"]
    assert "pref 30101 iif cube-router unreachable" in after["rules"]
    assert 'ip saddr 192.168.63.254 oifname != "cube-router" meta l4proto tcp masquerade to :30000-65535' in after[
        "firewall"]
    assert result["diff"]["before"]["device"] is None and result["diff"]["before"]["firewall"] == ""
    assert any("interrupted" in w for w in warning_texts(result))
    assert lab.snapshot() == before
    assert not os.path.exists(files["state_dir"]) and not os.path.exists(files["unit_dir"])


def test_apply_is_idempotent_and_check_mode_agrees(lab, files):
    first = cube(lab, args(files), diff=True)
    assert first["changed"] is True and first["device_kind"] == "veth"
    assert any("interrupted" in w for w in warning_texts(first))
    link = lab.host.ip_json("-d link show cube-router")[0]
    assert link["linkinfo"]["info_kind"] == "veth" and "UP" in link["flags"]
    assert [a["local"] for a in lab.host.ip_json("addr show dev cube-router")[0]["addr_info"] if a["family"] == "inet"] == [
        ROUTER_IP]
    neighbour = [n for n in lab.host.ip_json("neigh show dev cube-router") if n["dst"] == NAT_IP][0]
    assert neighbour["lladdr"] == link["address"] and "PERMANENT" in neighbour["state"]
    assert lab.host.sysctl("net.ipv4.ip_forward") == "1"

    second = cube(lab, args(files), diff=True)
    assert second["changed"] is False and second["changes"] == [], second["changes"]
    assert second["diff"]["before"] == second["diff"]["after"]
    assert not warning_texts(second)
    assert cube(lab, args(files), check=True)["changed"] is False


def test_sandbox_egress_follows_the_tunnel_route_and_is_seen_on_cube_router_first(lab, files):
    cube(lab, args(files))
    capture = lab.capture("host %s and tcp port 7 and %s" % (ECHO_IP, SYN), 3)
    assert lab.seen_by(lab.sandbox, ECHO_IP) == REMOTE_GW_IP  # MASQUERADEd twice: tunnel, then remote gateway
    syns = capture.stop()
    # The SYN: in from the sandbox, received on cube-router with the NAT IP, out of the tunnel with
    # the tunnel address after MASQUERADE — in that order.
    assert [(dev, direction) for dev, direction, _source in syns] == [("sbx0", "In"), ("cube-router", "In"), ("natvx", "Out")]
    assert syns[0][2].startswith(SANDBOX_IP + ".")
    assert syns[1][2].startswith(NAT_IP + ".")
    assert syns[2][2].startswith(TUNNEL_HOST_IP + ".")

    assert lab.seen_by(lab.sandbox, ECHO_IP, proto="udp") == REMOTE_GW_IP
    # Both passes are separate connections: sandbox -> NAT IP, then NAT IP -> tunnel address.
    tracked = lab.host.run(["conntrack", "-L", "-p", "udp"]).stdout
    assert "src=%s dst=%s" % (SANDBOX_IP, ECHO_IP) in tracked and "dst=%s" % NAT_IP in tracked
    assert "src=%s dst=%s" % (NAT_IP, ECHO_IP) in tracked and "dst=%s" % TUNNEL_HOST_IP in tracked
    # ICMP is MASQUERADEd too: the echo host gets the request from the remote gateway, the sandbox the reply.
    capture = lab.capture("icmp[icmptype] == icmp-echo", 1, ns=lab.echo)
    assert lab.seen_by(lab.sandbox, ECHO_IP, proto="icmp") == ECHO_IP
    assert capture.stop()[0][2].startswith("%s > %s: ICMP echo request" % (REMOTE_GW_IP, ECHO_IP))
    route = lab.host.ip_json("route get %s from %s iif cube-router" % (ECHO_IP, NAT_IP))[0]
    assert route["dev"] == "natvx"


UDP_FROM_PORT = """
import socket, sys
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(5)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.sendto(b"who", (sys.argv[3], 7))
print(sock.recvfrom(512)[0].decode())
"""


def masqueraded_source_port(lab, sandbox_port):
    """Send UDP from ``sandbox_port`` of the sandbox to the echo host (through the tunnel); return the
    source port the packet left the tunnel with, after cube-router's MASQUERADE."""
    capture = lab.capture("udp and dst host %s and dst port 7" % ECHO_IP, 3)
    lab.sandbox.run([sys.executable, "-c", UDP_FROM_PORT, SANDBOX_IP, str(sandbox_port), ECHO_IP])
    [(dev, direction, text)] = [p for p in capture.stop() if p[0] == "natvx"]
    assert direction == "Out" and text.startswith(TUNNEL_HOST_IP + ".")
    return int(text.split(" > ")[0].rsplit(".", 1)[1])


def test_masquerade_source_ports_stay_clear_of_port_mapping(lab, files):
    """CubeSandbox publishes sandbox ports on host ports 20000-29999: a sandbox connection from such a
    port leaves with a source port from 30000-65535, CubeSandbox's SNAT range."""
    cube(lab, args(files))
    assert 30000 <= masqueraded_source_port(lab, 25000) <= 65535
    # An operator who says nothing maps ports here may use the whole range: the port is then kept.
    cube(lab, args(files, snat_port_min=20000, port_mapping_ports=""))
    assert masqueraded_source_port(lab, 25001) == 25001


def test_snat_ports_in_the_port_mapping_range_are_refused_before_any_change(lab, files):
    before = lab.snapshot()
    result = cube(lab, args(files, snat_port_min=20000), expect_fail=True)
    assert result["msg"].startswith("snat_port_min: MASQUERADE source ports 20000-65535 overlap the port-mapping "
                                    "range 20000-29999")
    assert lab.snapshot() == before and not os.path.exists(files["state_dir"])


CONNECT = """
import errno, socket, sys
sock = socket.socket()
sock.settimeout(5)
try:
    sock.connect((sys.argv[1], 7))
    print("reached")
except socket.timeout:
    print("timeout")
except OSError as exc:
    print(errno.errorcode.get(exc.errno, exc))
"""
# Counts the packets to the echo host that the kernel receives on cube-router.
HANDED_BACK = """
table ip test_handed_back {
    counter to_echo {}
    chain prerouting {
        type filter hook prerouting priority -300; policy accept;
        iifname "cube-router" ip daddr %s counter name to_echo
    }
}
""" % ECHO_IP


def test_without_a_default_route_what_cube_router_hands_back_is_refused_not_looped(lab, files):
    """On a host without a default route, what cube-router hands back finds no route in the main
    table. Its source, the NAT IP, is inside the sandbox CIDR, so the steering rule would send it into
    cube-router again and again until its TTL ran out; the rule after the main-table lookup refuses it."""
    lab.host.ip("route del default")
    lab.host.run(["nft", "-f", "-"], input=HANDED_BACK)
    cube(lab, dict(sandbox_cidr=SANDBOX_CIDR, **files))
    # The sandbox's packet is steered into cube-router ...
    assert lab.host.ip_json("route get %s from %s iif sbx0" % (ECHO_IP, SANDBOX_IP))[0]["dev"] == "cube-router"
    # ... and what cube-router hands back, with no route in the main table, is refused there.
    lookup = lab.host.run(["ip", "route", "get", ECHO_IP, "from", NAT_IP, "iif", "cube-router"], check=False)
    assert lookup.returncode != 0 and "Network is unreachable" in lookup.stderr, lookup

    capture = lab.capture("icmp", 1, ns=lab.sandbox)
    assert lab.sandbox.run([sys.executable, "-c", CONNECT, ECHO_IP]).stdout.strip() == "ENETUNREACH"
    [(_dev, _direction, icmp)] = capture.stop()
    assert "ICMP net %s unreachable" % ECHO_IP in icmp, icmp  # refused at once, not "time exceeded"
    counted = json.loads(lab.host.run(["nft", "-j", "list", "counter", "ip", "test_handed_back", "to_echo"]).stdout)
    assert [i["counter"]["packets"] for i in counted["nftables"] if "counter" in i] == [1]  # one pass, no loop

    # With a route for the destination it flows again, through the same rules.
    lab.host.ip("route add default via %s dev wan0" % INET_GW)
    assert lab.seen_by(lab.sandbox, ECHO_IP) == HOST_WAN_IP


def test_steering_rules_of_an_earlier_release_are_replaced(lab, files):
    """Earlier releases steered at rule_priority + 1, where the refusal rule now sits: a host they set up
    is seen as changed, and the run leaves only the current rules."""
    cube(lab, args(files))
    lab.host.ip("rule add pref 30101 from %s lookup 3626" % SANDBOX_CIDR)
    assert cube(lab, args(files))["changes"] == ["rules"]
    assert [(r["priority"], r.get("action", "lookup")) for r in lab.host.ip_json("-4 rule show")
            if r["priority"] == 30101] == [(30101, "unreachable")]
    assert cube(lab, args(files))["changed"] is False
    assert lab.seen_by(lab.sandbox, ECHO_IP) == REMOTE_GW_IP


def test_private_destination_leaves_by_the_internal_nic_with_its_address(lab, files):
    cube(lab, args(files))
    capture = lab.capture("host %s and tcp port 7 and %s" % (PRIVATE_TARGET, SYN), 3)
    assert lab.seen_by(lab.sandbox, PRIVATE_TARGET) == HOST_LAN_IP
    syns = capture.stop()
    assert [(dev, direction) for dev, direction, _source in syns] == [("sbx0", "In"), ("cube-router", "In"), ("lan0", "Out")]
    assert syns[2][2].startswith(HOST_LAN_IP + ".")


def test_host_default_route_own_traffic_and_inbound_service_unchanged(lab, files):
    default_before = lab.host.ip_json("route show default")
    own_before = lab.host.ip_json("route get %s" % ECHO_IP)
    # A service on the primary NIC, and a sandbox port published on it (the lab's stand-in for port
    # mapping: DNAT to the sandbox).
    lab.serve(lab.host, HOST_WAN_IP, PUBLISHED_PORT)
    lab.serve(lab.sandbox, SANDBOX_IP, 7)
    lab.host.run(["nft", "-f", "-"], input=textwrap.dedent("""
        table ip lab_port_mapping {
            chain prerouting {
                type nat hook prerouting priority dstnat; policy accept;
                iifname "wan0" tcp dport %d dnat to %s:7
            }
        }
    """ % (PUBLISHED_PORT + 1, SANDBOX_IP)))

    cube(lab, args(files))
    assert lab.host.ip_json("route show default") == default_before
    assert lab.host.ip_json("route get %s" % ECHO_IP) == own_before
    assert lab.seen_by(lab.host, ECHO_IP) == HOST_WAN_IP  # the host's own traffic: direct, primary NIC

    capture = lab.capture("(tcp port %d or tcp port %d or (src host %s and tcp src port 7)) and %s" % (
        PUBLISHED_PORT, PUBLISHED_PORT + 1, SANDBOX_IP, SYN_ACK), 3)
    assert lab.seen_by(lab.echo, HOST_WAN_IP, PUBLISHED_PORT) == ECHO_IP
    assert lab.seen_by(lab.echo, HOST_WAN_IP, PUBLISHED_PORT + 1) == ECHO_IP  # the sandbox sees the client
    answers = capture.stop()
    # Both answers leave by the primary NIC from its address; the sandbox's never enters cube-router.
    assert [(dev, direction, text.split(" > ")[0]) for dev, direction, text in answers] == [
        ("wan0", "Out", "%s.%d" % (HOST_WAN_IP, PUBLISHED_PORT)),
        ("sbx0", "In", "%s.7" % SANDBOX_IP),
        ("wan0", "Out", "%s.%d" % (HOST_WAN_IP, PUBLISHED_PORT + 1)),
    ]


def test_absent_leaves_no_trace_and_restores_a_replaced_default_route(lab, files):
    before = lab.snapshot()
    # Example 1: the tunnel becomes the default route, with the underlay peer and private ranges pinned.
    pinned = [dict(dst=REMOTE_GW_IP + "/32", via=INET_GW, dev="wan0", src=HOST_WAN_IP)] + PRIVATE_RANGES
    params = args(files, routes=pinned + [dict(dst="default", via=TUNNEL_REMOTE_IP, dev="natvx")], rules=[])
    cube(lab, params)
    assert lab.host.ip_json("route show default")[0]["dev"] == "natvx"
    assert lab.seen_by(lab.sandbox, ECHO_IP) == REMOTE_GW_IP
    assert os.path.islink(os.path.join(files["unit_dir"], "multi-user.target.wants", "liteboxd-cube-router.service"))

    check = cube(lab, dict(state="absent", **files), check=True, diff=True)
    assert check["changed"] is True and check["diff"]["after"]["device"] is None
    assert lab.host.ip_json("route show default")[0]["dev"] == "natvx"

    removed = cube(lab, dict(state="absent", **files), diff=True)
    assert removed["changed"] is True
    assert lab.snapshot() == before  # links, addresses, rules, routes, neighbours, nft, tc, ip_forward
    assert not os.path.exists(files["state_dir"])
    assert os.listdir(files["unit_dir"]) == ["multi-user.target.wants"]
    assert os.listdir(os.path.join(files["unit_dir"], "multi-user.target.wants")) == []
    assert lab.seen_by(lab.sandbox, ECHO_IP) == HOST_WAN_IP  # back to the primary NIC path (plain forwarding)

    again = cube(lab, dict(state="absent", **files))
    assert again["changed"] is False


def test_first_enablement_restores_forwarding_state_on_absent(lab, files):
    lab.host.sysctl("net.ipv4.ip_forward", 0)
    cube(lab, args(files))
    assert lab.host.sysctl("net.ipv4.ip_forward") == "1"
    cube(lab, dict(state="absent", **files))
    assert lab.host.sysctl("net.ipv4.ip_forward") == "0"


def test_changed_spec_recreates_cleanly(lab, files):
    cube(lab, args(files))
    changed = cube(lab, args(files, cidr="192.168.100.0/24", sandbox_sources=["sbx0"]), diff=True)
    assert changed["changed"] is True and (changed["router_ip"], changed["nat_ip"]) == ("192.168.100.1", "192.168.100.2")
    assert any("interrupted" in w for w in warning_texts(changed))
    addresses = [a["local"] for a in lab.host.ip_json("addr show dev cube-router")[0]["addr_info"] if a["family"] == "inet"]
    assert addresses == ["192.168.100.1"]
    rules = lab.host.ip("-4 rule show")
    assert "192.168.0.0/18" not in rules and "iif sbx0 lookup 3626" in rules
    assert NAT_IP not in lab.host.ip("-4 neigh show") + lab.host.ip("-4 route show table all")
    assert lab.seen_by(lab.sandbox, ECHO_IP) == REMOTE_GW_IP
    assert lab.seen_by(lab.sandbox, PRIVATE_TARGET) == HOST_LAN_IP
    assert cube(lab, args(files, cidr="192.168.100.0/24", sandbox_sources=["sbx0"]))["changed"] is False


def test_boot_unit_reapplies_the_rendered_script(lab, files):
    cube(lab, args(files))
    unit = open(os.path.join(files["unit_dir"], "liteboxd-cube-router.service")).read()
    apply_script = os.path.join(files["state_dir"], "apply.sh")
    assert "ExecStart=/bin/sh %s" % apply_script in unit and "WantedBy=multi-user.target" in unit
    # A reboot loses everything the kernel held; the unit's script brings it back.
    lab.host.run(["sh", os.path.join(files["state_dir"], "teardown.sh")])
    assert cube(lab, args(files), check=True)["changed"] is True
    lab.host.run(["sh", apply_script])
    assert cube(lab, args(files))["changed"] is False
    assert lab.seen_by(lab.sandbox, ECHO_IP) == REMOTE_GW_IP


@pytest.mark.parametrize("extra, rule", [
    (dict(cidr="10.99.1.0/24"), "cidr_no_route_overlap"),  # the host route added below
    (dict(cidr="10.206.0.0/16"), "cidr_no_interface_overlap"),  # the internal NIC's address
    (dict(cidr="10.254.0.0/24"), "nat_ip_not_local"),  # 10.254.0.2 is configured on lo below
    (dict(cidr="10.254.0.4/24"), "cidr_aligned"),
    (dict(cidr="100.64.0.0/24"), "cidr_private"),
    (dict(cidr="10.0.0.0/15"), "cidr_prefix"),
    (dict(cidr="10.254.0.0/31"), "cidr_prefix"),
    (dict(cidr="fd00:254::/64"), "cidr_ipv4"),
    (dict(sandbox_cidr="192.168.0.0/25"), "sandbox_cidr_prefix"),
])
def test_bad_input_names_the_rule_and_applies_nothing(lab, files, extra, rule):
    lab.host.ip("addr add 10.254.0.2/32 dev lo")
    lab.host.ip("route add 10.99.0.0/16 via %s dev lan0" % INTERNAL_GW)
    before = lab.snapshot()
    result = cube(lab, args(files, **extra), expect_fail=True)
    assert result["rule"] == rule and rule in result["msg"]
    assert lab.snapshot() == before
    assert not os.path.exists(files["state_dir"])


def test_renamed_device_replaces_the_old_one_and_absent_removes_it(lab, files):
    cube(lab, args(files))
    renamed = cube(lab, args(files, device="cr-egress", rules=[{"priority": 30000, "iif": "cr-egress", "table": "200"}]))
    assert renamed["changed"] is True and renamed["device"] == "cr-egress" and renamed["peer"] == "cr-egress-p"
    names = [link["ifname"] for link in lab.host.ip_json("link show")]
    assert "cube-router" not in names and "cube-router-p" not in names and "cr-egress" in names
    assert "cube-router" not in lab.host.ip("-4 rule show")
    assert lab.seen_by(lab.sandbox, PRIVATE_TARGET) == HOST_LAN_IP
    assert lab.seen_by(lab.sandbox, ECHO_IP) == REMOTE_GW_IP
    cube(lab, dict(state="absent", **files))
    assert "cr-egress" not in [link["ifname"] for link in lab.host.ip_json("link show")]


def test_an_existing_foreign_device_is_not_taken_over(lab, files):
    before = lab.snapshot()
    result = cube(lab, args(files, device="lan0"), expect_fail=True)
    assert result["msg"].startswith("device: lan0 already exists")
    assert lab.snapshot() == before and not os.path.exists(files["state_dir"])


def test_missing_device_fails_first_and_a_kernel_refusal_is_rolled_back(lab, files):
    before = lab.snapshot()
    missing = cube(lab, args(files, routes=[dict(dst="10.77.0.0/16", via=INTERNAL_GW, dev="eth9")]), expect_fail=True)
    assert missing["msg"] == "routes[0].dev: device eth9 does not exist"
    assert lab.snapshot() == before and not os.path.exists(files["state_dir"])

    # The kernel refuses a gateway that is not on the link only when the script runs.
    refused = cube(lab, args(files, routes=[dict(dst="10.77.0.0/16", via="10.123.0.1", dev="lan0")]), expect_fail=True)
    assert "apply.sh failed" in refused["msg"] and "removed again" in refused["msg"]
    assert lab.snapshot() == before
    assert not os.path.exists(files["state_dir"])
    assert not os.path.exists(os.path.join(files["unit_dir"], "liteboxd-cube-router.service"))
