"""cube_router's pure parts: spec validation, the wanted state, the rendered nftables ruleset, script
and unit, and the decoding of tunnel links (GRE included: this kernel cannot create one)."""
import pytest
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import cube_router as cr
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import netlink
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.cube_router_addresses import derive_addresses
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.cube_router_host import decode_tunnel
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.routing import SpecError

GRE = {"name": "natgre", "kind": "gre", "local": "203.0.113.10", "remote": "198.51.100.20", "mtu": 1476,
       "address": "169.254.100.1/30"}
VXLAN = {"name": "natvx", "kind": "vxlan", "vni": 100, "local": "203.0.113.10", "remote": "198.51.100.20",
         "dev": "eth0", "address": "169.254.100.1/30"}


def params(**extra):
    result = dict(sandbox_cidr="192.168.0.0/18", cidr=None, device="cube-router", snat_port_min=cr.SNAT_PORT_MIN,
                  port_mapping_ports=cr.PORT_MAPPING_PORTS,
                  sandbox_sources=None, route_table=3626, rule_priority=30100, reply_mark=0x10000000,
                  routes=[], rules=[], tunnels=[])
    result.update(extra)
    return result


def spec(**extra):
    p = params(**extra)
    return cr.build_spec(p, derive_addresses(p["sandbox_cidr"], cidr=p["cidr"]))


def test_defaults_steer_the_sandbox_cidr():
    s = spec()
    assert (s["router_cidr"], s["nat_ip"], s["peer"]) == ("192.168.63.253/32", "192.168.63.254", "cube-router-p")
    assert s["source_cidrs"] == ["192.168.0.0/18"] and s["source_interfaces"] == []
    assert [cr.rule_text(r) for r in cr.own_rules(s)] == [
        "pref 30100 iif cube-router lookup main",
        "pref 30101 iif cube-router unreachable",
        "pref 30100 from 192.168.0.0/18 fwmark 0x10000000/0x10000000 lookup main",
        "pref 30102 from 192.168.0.0/18 lookup 3626",
    ]
    assert [cr.route_text(r) for r in cr.own_routes(s)] == [
        "192.168.63.254/32 dev cube-router",
        "default via 192.168.63.254 dev cube-router onlink table 3626",
        "throw 192.168.0.0/18 table 3626",
    ]


def test_sources_mix_cidrs_and_interfaces():
    s = spec(sandbox_sources=["cube-br0", "10.88.0.0/16", "tap+x"])
    assert s["source_cidrs"] == ["10.88.0.0/16"] and s["source_interfaces"] == ["cube-br0", "tap+x"]
    nft = cr.render_nft(s)
    assert 'oifname "cube-router" ip saddr 10.88.0.0/16 snat to 192.168.63.254' in nft
    assert 'oifname "cube-router" iifname { "cube-br0", "tap+x" } snat to 192.168.63.254' in nft
    assert "pref 30102 iif cube-br0 lookup 3626" in [cr.rule_text(r) for r in cr.own_rules(s)]


def test_firewall_is_the_cube_sandbox_rule_set_in_an_owned_table():
    nft = cr.render_nft(spec(snat_port_min=31000))
    # Atomic replacement: create-if-missing, delete, define, all in one nft -f transaction.
    assert nft.splitlines()[1:4] == ["table ip liteboxd_cube_router", "delete table ip liteboxd_cube_router",
                                     "table ip liteboxd_cube_router {"]
    for line in (
        'iifname "cube-router" ip saddr 192.168.63.254 accept',
        'oifname "cube-router" ip daddr 192.168.63.254 ct state established,related accept',
        'ip saddr 192.168.63.254 oifname != "cube-router" meta l4proto tcp masquerade to :31000-65535',
        'ip saddr 192.168.63.254 oifname != "cube-router" meta l4proto udp masquerade to :31000-65535',
        'ip saddr 192.168.63.254 oifname != "cube-router" meta l4proto icmp masquerade',
        "ip saddr 192.168.0.0/18 ct direction reply meta mark set meta mark | 0x10000000",
    ):
        assert "\t\t" + line + "\n" in nft


def test_masquerade_ports_default_to_cube_sandboxs_snat_range():
    nft = cr.render_nft(spec())
    for proto in ("tcp", "udp"):
        assert 'meta l4proto %s masquerade to :30000-65535\n' % proto in nft


@pytest.mark.parametrize("snat_port_min, port_mapping_ports", [
    (20000, "20000-29999"),  # the old default: inside CubeSandbox's port-mapping range
    (29999, "20000-29999"),
    (1024, "20000-29999"),  # 1024-65535 covers the whole range
    (30000, "20000-59999"),  # a network-agent with a widened range
])
def test_snat_ports_overlapping_port_mapping_are_refused(snat_port_min, port_mapping_ports):
    with pytest.raises(SpecError) as info:
        spec(snat_port_min=snat_port_min, port_mapping_ports=port_mapping_ports)
    message = str(info.value)
    assert info.value.option == "snat_port_min"
    assert "%d-65535 overlap the port-mapping range %s" % (snat_port_min, port_mapping_ports) in message
    assert "port_mapping_ports" in message and "empty string" in message


@pytest.mark.parametrize("snat_port_min, port_mapping_ports", [
    (30000, "20000-29999"), (60000, "20000-59999"), (20000, ""), (20000, None)])
def test_snat_ports_clear_of_port_mapping_or_told_there_is_none(snat_port_min, port_mapping_ports):
    assert spec(snat_port_min=snat_port_min, port_mapping_ports=port_mapping_ports)["snat_port_min"] == snat_port_min


@pytest.mark.parametrize("extra, option", [
    (dict(device="cube router"), "device"),
    (dict(device="a-very-long-device-name"), "device"),
    (dict(snat_port_min=0), "snat_port_min"),
    (dict(port_mapping_ports="20000"), "port_mapping_ports"),
    (dict(port_mapping_ports="29999-20000"), "port_mapping_ports"),
    (dict(rule_priority=32764), "rule_priority"),
    (dict(route_table=254), "route_table"),
    (dict(reply_mark=0x3), "reply_mark"),
    (dict(sandbox_sources=["fd00::/64"]), "sandbox_sources[0]"),
    (dict(sandbox_sources=["cube-router"]), "sandbox_sources"),
    (dict(routes=[{"dst": "10.0.0.0/8"}]), "routes[0]"),
    (dict(routes=[{"dst": "10.0.0.0/8", "via": "fe80::1"}]), "routes[0].via"),
    (dict(routes=[{"dst": "10.0.0.0/8", "dev": "eth0", "table": "nope"}]), "routes[0].table"),
    (dict(rules=[{"priority": 0, "table": "200"}]), "rules[0].priority"),
    (dict(tunnels=[{"name": "t0", "kind": "ipip", "remote": "198.51.100.20"}]), "tunnels[0].kind"),
    (dict(tunnels=[{"name": "t0", "kind": "vxlan", "remote": "198.51.100.20"}]), "tunnels[0].vni"),
    (dict(tunnels=[{"name": "t0", "kind": "gre", "remote": "198.51.100.20"}]), "tunnels[0].local"),
    (dict(tunnels=[dict(GRE, name="cube-router-p")]), "tunnels"),
])
def test_bad_options_are_named(extra, option):
    with pytest.raises(SpecError) as info:
        spec(**extra)
    assert info.value.option == option and str(info.value).startswith(option + ":")


def test_operator_routes_and_rules_render_in_ip_syntax():
    s = spec(routes=[{"dst": "198.51.100.20", "via": "203.0.113.1", "dev": "eth0", "src": "203.0.113.10"},
                     {"dst": "0.0.0.0/0", "dev": "natgre"},
                     {"dst": "192.0.2.0/24", "type": "unreachable", "metric": 100, "table": "200"}],
             rules=[{"priority": 30000, "iif": "cube-router", "to": "192.0.2.0/24", "table": "200"}])
    assert [cr.route_text(r) for r in cr.operator_routes(s)] == [
        "198.51.100.20/32 via 203.0.113.1 dev eth0 src 203.0.113.10",
        "default dev natgre",
        "unreachable 192.0.2.0/24 table 200 metric 100",
    ]
    # The state record keeps the format of earlier releases, and reads back to the same routes.
    assert s["routes"][1] == {"type": "unicast", "dst": "default", "dev": "natgre", "table": 254, "metric": 0,
                              "onlink": False}
    assert [cr.route_record(r) for r in cr.operator_routes(s)] == s["routes"]
    assert [cr.rule_record(r) for r in cr.operator_rules(s)] == s["rules"]
    assert [cr.rule_text(r) for r in cr.operator_rules(s)] == ["pref 30000 to 192.0.2.0/24 iif cube-router lookup 200"]


def test_wanted_state_lists_every_part_for_the_diff():
    state = cr.wanted_state(spec(tunnels=[VXLAN]), "veth")
    assert state["device"] == "cube-router kind veth up rp_filter 2 accept_local 1"
    assert state["neighbours"] == ["192.168.63.254 lladdr <device-mac> dev cube-router nud permanent"]
    assert state["steering"] == ["dev cube-router egress u32 match-all mirred ingress redirect dev cube-router"]
    assert state["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert state["tunnels"] == [
        "natvx type vxlan id 100 local 203.0.113.10 remote 198.51.100.20 dstport 4789 dev eth0 mtu auto "
        "address 169.254.100.1/30"]
    assert sorted(state) == sorted(cr.empty_state())


def test_apply_script_tries_dummy_then_veth_and_starts_from_scratch():
    script = cr.render_apply(spec(tunnels=[GRE]), "/etc/liteboxd/cube-router/cube-router.nft").splitlines()
    assert script[:4] == ["#!/bin/sh", script[1], script[2], "set -eu"]
    assert script.index("ip link del dev cube-router 2>/dev/null || true") < script.index(
        "if ! ip link add cube-router type dummy 2>/dev/null; then")
    assert "  ip link add cube-router type veth peer name cube-router-p" in script
    assert "ip link add natgre type gre local 203.0.113.10 remote 198.51.100.20 ttl 255" in script
    assert "ip link set dev natgre mtu 1476" in script
    assert ("tc filter add dev cube-router egress u32 match u32 0 0 action mirred ingress redirect dev cube-router"
            in script)
    assert "nft -f /etc/liteboxd/cube-router/cube-router.nft" in script
    # Routes before the rules that steer into them.
    assert script.index("ip route replace default via 192.168.63.254 dev cube-router onlink table 3626") < script.index(
        "ip rule add pref 30102 from 192.168.0.0/18 lookup 3626")
    # Packets cube-router hands back that the main table cannot route are refused before steering.
    assert script.index("ip rule add pref 30100 iif cube-router lookup main") < script.index(
        "ip rule add pref 30101 iif cube-router unreachable")
    # A host set up by an earlier release, which steered at 30101, is cleaned up first.
    assert script.index("while ip rule del pref 30101 lookup 3626 2>/dev/null; do :; done") < script.index(
        "ip rule add pref 30102 from 192.168.0.0/18 lookup 3626")


def test_teardown_restores_replaced_routes_and_forwarding():
    s = spec(routes=[{"dst": "default", "dev": "natgre"}])
    replaced = [{"type": "unicast", "dst": "default", "via": "203.0.113.1", "dev": "eth0", "table": 254}]
    script = cr.render_teardown(s, replaced, "0").splitlines()
    assert script.index("ip route del default dev natgre 2>/dev/null || true") < script.index(
        "ip route replace default via 203.0.113.1 dev eth0")
    assert script[-1] == "sysctl -qw net.ipv4.ip_forward=0"
    assert "sysctl" not in cr.render_teardown(s, replaced, "1")


def test_unit_reapplies_at_boot():
    unit = cr.render_unit("/etc/liteboxd/cube-router/apply.sh", "/etc/liteboxd/cube-router/teardown.sh")
    assert "ExecStart=/bin/sh /etc/liteboxd/cube-router/apply.sh" in unit
    assert "After=network-online.target" in unit and "WantedBy=multi-user.target" in unit


def _link_message(name, kind, data, mtu=1476):
    """An RTM_NEWLINK message as the kernel sends it: encoded by pyroute2, decoded by module_utils/netlink."""
    msg = ifinfmsg()
    msg["header"]["type"] = 16
    msg["index"], msg["flags"] = 7, 1
    msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_MTU", mtu),
                    ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind), ("IFLA_INFO_DATA", {"attrs": data})]})]
    msg.encode()
    return netlink.decode(bytes(msg.data))[0][1]


def test_gre_link_decodes_to_the_rendered_tunnel():
    s = spec(tunnels=[GRE])
    message = _link_message("natgre", "gre", [("IFLA_GRE_LOCAL", "203.0.113.10"), ("IFLA_GRE_REMOTE", "198.51.100.20"),
                                              ("IFLA_GRE_TTL", 255)])
    decoded = decode_tunnel(message, {"natgre"}, [{"address": "169.254.100.1/30", "dev": "natgre"}], {})
    assert cr.tunnel_state_text(decoded) == cr.wanted_state(s, "veth")["tunnels"][0]
    assert cr.tunnel_state_text(decoded) == (
        "natgre type gre local 203.0.113.10 remote 198.51.100.20 ttl 255 mtu 1476 address 169.254.100.1/30")


def test_gre_key_and_ttl_difference_is_seen():
    s = spec(tunnels=[dict(GRE, key=42)])
    message = _link_message("natgre", "gre", [("IFLA_GRE_LOCAL", "203.0.113.10"), ("IFLA_GRE_REMOTE", "198.51.100.20"),
                                              ("IFLA_GRE_TTL", 64)])
    decoded = decode_tunnel(message, {"natgre"}, [{"address": "169.254.100.1/30", "dev": "natgre"}], {})
    assert cr.tunnel_state_text(decoded) != cr.wanted_state(s, "veth")["tunnels"][0]


def test_vxlan_link_decodes_to_the_rendered_tunnel():
    s = spec(tunnels=[VXLAN])
    message = _link_message("natvx", "vxlan", [("IFLA_VXLAN_ID", 100), ("IFLA_VXLAN_LOCAL", "203.0.113.10"),
                                               ("IFLA_VXLAN_GROUP", "198.51.100.20"), ("IFLA_VXLAN_PORT", 4789),
                                               ("IFLA_VXLAN_LINK", 2)], mtu=1450)
    decoded = decode_tunnel(message, set(), [{"address": "169.254.100.1/30", "dev": "natvx"}], {2: "eth0"})
    assert cr.tunnel_state_text(decoded) == cr.wanted_state(s, "veth")["tunnels"][0]


def test_changed_sections_and_handle_free_nft_json():
    assert cr.changed_sections({"a": 1, "b": [1]}, {"a": 1, "b": [2]}) == ["b"]
    listing = [{"chain": {"name": "x", "handle": 3}}, {"rule": {"expr": [{"accept": None}], "handle": 9}}]
    assert cr.strip_handles(listing) == [{"chain": {"name": "x"}}, {"rule": {"expr": [{"accept": None}]}}]
