"""The host state policy_routing and cube_router leave behind, byte for byte, against recorded fixtures.

Each case runs a module in throwaway network namespaces and snapshots what it leaves on the host:
links, addresses, routes and rules of every table (``ip -d -j``), permanent neighbours, the nftables
ruleset, tc filters, the sysctls it sets and every file it writes. The fixtures in ``host_state/``
were recorded from the code before the routing model was redesigned (issue 17), so a redesign that
changes anything a host sees fails here. Values the kernel picks at random (veth MAC addresses) and
the test's temporary directory are replaced by placeholders; link, carrier and operational states
that settle asynchronously are left out.

Re-record (only when a change of host state is intended, and say why in the commit):
    LITEBOXD_RECORD_HOST_STATE=1 python -m pytest tests/integration/test_routing_host_state.py
"""
import json
import os
import pathlib

import pytest

from tests.integration.cube_router_lab import (
    ECHO_IP, HOST_LAN_IP, HOST_WAN_IP, INET_GW, INTERNAL_GW, REMOTE_GW_IP, TUNNEL_HOST_IP, TUNNEL_REMOTE_IP, Lab,
)
from tests.lib.modules import run_module
from tests.lib.netns import Netns, veth

FIXTURES = pathlib.Path(__file__).with_name("host_state")
RECORD = os.environ.get("LITEBOXD_RECORD_HOST_STATE") == "1"
# Flags that follow carrier and link-state changes the kernel makes on its own schedule.
ASYNC_FLAGS = {"LOWER_UP", "NO-CARRIER", "linkdown", "M-DOWN"}

TUNNEL = dict(name="natvx", kind="vxlan", vni=100, local=HOST_WAN_IP, remote=REMOTE_GW_IP, dev="wan0",
              address=TUNNEL_HOST_IP + "/30")
PRIVATE_RANGES = [dict(dst=cidr, via=INTERNAL_GW, dev="lan0", src=HOST_LAN_IP) for cidr in ("10.0.0.0/8", "172.16.0.0/12")]

CUBE_CASES = {
    # CubeSandbox's default sandbox CIDR: router 192.168.63.253/32, NAT 192.168.63.254; example 1b's
    # policy route through a VXLAN tunnel and example 2's private ranges on the internal NIC.
    "cube_default_cidr": dict(
        sandbox_cidr="192.168.0.0/18", tunnels=[TUNNEL],
        routes=[dict(dst=ECHO_IP + "/32", via=TUNNEL_REMOTE_IP, dev="natvx", table="200")] + PRIVATE_RANGES
        + [dict(dst="192.0.2.128/25", type="unreachable", metric=100, table="200")],
        rules=[{"priority": 30000, "iif": "cube-router", "table": "200"},
               {"priority": 30001, "from": "10.99.0.0/16", "to": "192.0.2.0/24", "table": "200"}]),
    # The seed's custom CIDR (router 10.254.0.1/32, NAT 10.254.0.2), sources by interface and CIDR.
    "cube_custom_cidr": dict(sandbox_cidr="192.168.0.0/18", cidr="10.254.0.0/24",
                             sandbox_sources=["sbx0", "192.168.0.0/18"], snat_port_min=31000, persist=False),
    # A /16 sandbox CIDR (router 10.88.255.253/32, NAT 10.88.255.254) and example 1: the default route
    # through the tunnel, the underlay peer pinned, the replaced default route recorded for removal.
    "cube_replaced_default": dict(
        sandbox_cidr="10.88.0.0/16", tunnels=[TUNNEL], device="cr-egress", route_table=3700, rule_priority=30200,
        routes=[dict(dst=REMOTE_GW_IP + "/32", via=INET_GW, dev="wan0", src=HOST_WAN_IP)] + PRIVATE_RANGES
        + [dict(dst="default", via=TUNNEL_REMOTE_IP, dev="natvx")]),
    # The smallest custom CIDR, /30: router 172.31.255.253/32, NAT 172.31.255.254.
    "cube_custom_slash30": dict(sandbox_cidr="192.168.0.0/18", cidr="172.31.255.252/30"),
}

CUBE_DEVICES = ("cube-router", "cr-egress")

EGRESS_IP, EXIT_IP = "10.147.17.5", "10.147.17.1"
POLICY_CASES = {
    # The egress_node role's fail-closed table, rule and routes.
    "policy_egress": dict(
        tables=[dict(name="zerotier-egress", id=100, exclusive=True)],
        rules=[{"priority": 100, "from": EGRESS_IP, "table": "zerotier-egress"}],
        routes=[dict(dst="default", type="unreachable", metric=4278198272, table="zerotier-egress"),
                dict(dst="10.42.0.0/16", type="throw", table="zerotier-egress"),
                dict(dst="10.43.0.0/16", type="throw", table="zerotier-egress"),
                dict(dst="default", via=EXIT_IP, dev="tun0", metric=100, table="zerotier-egress")]),
    # IPv6 routes, an fwmark/iif rule, a rule action, a host route with a source in main.
    "policy_mixed": dict(
        tables=[dict(name="v6egress", id=106), dict(name="big-id", id=100000)],
        rules=[dict(priority=200, fwmark="0x10/0xff", iif="uplink", table="v6egress", family="ipv6"),
               dict(priority=201, to="198.51.100.0/24", action="unreachable"),
               {"priority": 202, "from": "10.99.0.0/16", "oif": "tun0", "table": "big-id"}],
        routes=[dict(dst="default", family="ipv6", via="fd00:147::1", dev="tun0", table="v6egress"),
                dict(dst="2001:db8::/32", type="blackhole", table="v6egress"),
                dict(dst="10.9.9.9", dev="tun0", src=EGRESS_IP),
                dict(dst="10.60.0.0/16", via=EXIT_IP, dev="tun0", metric=7, scope="global", table="big-id"),
                dict(dst="10.61.0.0/16", type="prohibit", table="big-id")]),
}


def _ipj(ns, args):
    out = ns.run(["ip", "-j"] + args.split()).stdout.strip()
    return json.loads(out) if out else []


def _without_async(value):
    if isinstance(value, list):
        return [v for v in value if v not in ASYNC_FLAGS]
    return value


def host_state(ns, roots, tmp_path):
    """Everything the routing modules may change in ``ns`` and under ``roots``, in comparable form."""
    links = _ipj(ns, "-d link show")
    macs = dict((link["address"], "<mac of %s>" % link["ifname"]) for link in links if link.get("address"))
    keep = ("ifname", "link_type", "mtu", "linkinfo", "master")
    state = {
        "links": [dict([(k, link.get(k)) for k in keep] + [("flags", _without_async(link.get("flags")))])
                  for link in links],
        "addresses": [(a["ifname"], [(i["family"], i["local"], i["prefixlen"], i.get("scope")) for i in a.get("addr_info", [])
                                     if not i["local"].startswith("fe80:")]) for a in _ipj(ns, "addr show")],
        "routes4": [dict((k, _without_async(v)) for k, v in r.items()) for r in _ipj(ns, "-d -4 route show table all")],
        "routes6": [dict((k, _without_async(v)) for k, v in r.items()) for r in _ipj(ns, "-d -6 route show table all")
                    if not r["dst"].startswith(("fe80:", "ff00:"))],
        "rules4": _ipj(ns, "-d -4 rule show"),
        "rules6": _ipj(ns, "-d -6 rule show"),
        "neighbours": [dict(n, lladdr=macs.get(n.get("lladdr"), n.get("lladdr")))
                       for n in _ipj(ns, "neigh show nud permanent")],
        "nft": ns.run(["nft", "list", "ruleset"]).stdout,
        "tc": dict((link["ifname"], ns.run(["tc", "filter", "show", "dev", link["ifname"], "egress"]).stdout)
                   for link in links),
        # What the modules set (the other values a namespace inherits from the machine).
        "sysctl": dict((key, ns.sysctl(key)) for key in ["net.ipv4.ip_forward"] + [
            "net.ipv4.conf.%s.%s" % (link["ifname"], key) for link in links if link["ifname"] in CUBE_DEVICES
            for key in ("rp_filter", "accept_local")]),
        "files": {},
    }
    for root in roots:
        for path in sorted(pathlib.Path(root).rglob("*")):
            name = str(path).replace(str(tmp_path), "<tmp>")
            if path.is_symlink():
                state["files"][name] = "-> " + os.readlink(path).replace(str(tmp_path), "<tmp>")
            elif path.is_file():
                state["files"][name] = "%o %s" % (path.stat().st_mode & 0o7777,
                                                  path.read_text().replace(str(tmp_path), "<tmp>"))
    return state


def check(name, state):
    path = FIXTURES / ("%s.json" % name)
    text = json.dumps(state, indent=1, sort_keys=True) + "\n"
    if RECORD:
        FIXTURES.mkdir(exist_ok=True)
        path.write_text(text)
    recorded = json.loads(path.read_text())
    state = json.loads(text)
    for key in sorted(recorded):
        assert state[key] == recorded[key], "%s: %s differs from the recorded host state" % (name, key)
    assert sorted(state) == sorted(recorded)


@pytest.fixture
def lab():
    lab = Lab()
    yield lab
    lab.close()


@pytest.mark.parametrize("case", sorted(CUBE_CASES))
def test_cube_router_host_state_is_as_recorded(lab, tmp_path, case):
    files = dict(state_dir=str(tmp_path / "state"), unit_dir=str(tmp_path / "units"))
    result = run_module("cube_router", dict(CUBE_CASES[case], **files), netns=lab.host.name)
    assert result["changed"]
    check(case, host_state(lab.host, [files["state_dir"], files["unit_dir"]], tmp_path))
    assert not run_module("cube_router", dict(CUBE_CASES[case], **files), netns=lab.host.name)["changed"]


@pytest.fixture
def node():
    with Netns() as host, Netns() as exit_ns:
        for ns in (host, exit_ns):
            ns.sysctl("net.ipv6.conf.default.addr_gen_mode", 1)
        host.sysctl("net.ipv4.ip_forward", 0)  # a new namespace inherits the machine's
        veth(host, "tun0", exit_ns, "tun0")
        veth(host, "uplink", exit_ns, "uplink")
        host.ip("addr add %s/24 dev tun0" % EGRESS_IP)
        host.ip("-6 addr add fd00:147::5/64 dev tun0 nodad")
        host.ip("addr add 192.0.2.2/24 dev uplink")
        yield host


@pytest.mark.parametrize("case", sorted(POLICY_CASES))
def test_policy_routing_host_state_is_as_recorded(node, tmp_path, case):
    rt_dir = tmp_path / "rt_tables.d"
    rt_dir.mkdir()
    result = run_module("policy_routing", dict(POLICY_CASES[case], rt_tables_dir=str(rt_dir)), netns=node.name)
    assert result["changed"]
    check(case, host_state(node, [rt_dir], tmp_path))
    assert not run_module("policy_routing", dict(POLICY_CASES[case], rt_tables_dir=str(rt_dir)),
                          netns=node.name)["changed"]
