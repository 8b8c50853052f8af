# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Route-aware sandbox egress (CubeSandbox's cube-router): the wanted host state, as pure data.

The datapath. Traffic from the sandbox sources is policy-routed into the cube-router device
(``default via <nat-ip> dev <device> onlink`` in an own table), SNATed to the internal NAT IP on its
way out of the device, and looped back into the device's ingress by a tc ``mirred ingress redirect``
on the device's egress: the kernel then receives it *on cube-router* (first capture point) with
source NAT IP, routes it by the main table to whatever device the host's routes pick (second
capture point) and MASQUERADEs it there. Replies are un-MASQUERADEd to the NAT IP, routed to the
device by the /32 route and the permanent neighbour, looped in again and un-SNATed to the sandbox.
mirred resets conntrack on redirect, so the two passes are two separate connections whose tuples
never meet (sandbox->dst / dst->NAT, and NAT->dst / dst->egress-address): no conntrack zone needed.
A dummy device is used where the kernel has one; otherwise a veth pair whose peer only gives the
device its carrier (the same loop works on both).

Everything here is rendered from one spec: the state sections (shown in diff), the nftables
ruleset, and one shell script that the module runs and a systemd unit re-runs at boot. Routes and
rules are ``routing``'s; their one-line ``ip`` text lets the wanted and the read-back state compare
directly.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import re

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils import routing
from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.routing import (
    MAIN_TABLE,
    Route,
    Rule,
    SpecError,
    netaddr,
    parse_address,
    parse_ifname,
    parse_network,
    route_text,
    rule_text,
)

NFT_TABLE = "liteboxd_cube_router"
# CubeSandbox's network-agent gives port mappings host ports 20000-29999 by default (host_port_min,
# host_port_max) and its own SNAT allocates from 30000 (CubeVS's MAX_PORT_START) to 65535.
SNAT_PORT_MIN = 30000
PORT_MAPPING_PORTS = "20000-29999"
UNIT_NAME = "liteboxd-cube-router.service"
# Operator tables are numbers or the kernel's names; rt_tables files play no part here.
TABLE_NAMES = dict((name, (number, "builtin")) for name, number in routing.BUILTIN_TABLES.items())
DEVICE_MAC = "<device-mac>"
FIRST_ENABLEMENT_WARNING = (
    "cube-router is enabled (or recreated) on this host by this run: existing outbound connections from "
    "running sandboxes are interrupted; they work again once the application reconnects through cube-router.")


def peer_name(device):
    """The veth peer of ``device`` (only used where the kernel has no dummy link type)."""
    return "%s-p" % device[:13]


# ----- routes and rules as the state record keeps them (the format of earlier releases) -----

def route_record(route):
    record = {"type": route.type, "dst": "default" if route.dst == "0.0.0.0/0" else route.dst,
              "table": route.table, "metric": route.metric, "onlink": route.onlink}
    for key in ("via", "dev", "src"):
        if getattr(route, key):
            record[key] = getattr(route, key)
    return record


def record_route(record):
    route_type, via = record.get("type") or "unicast", record.get("via")
    return Route("ipv4", record.get("table", MAIN_TABLE), "0.0.0.0/0" if record["dst"] == "default" else record["dst"],
                 record.get("metric") or 0, route_type, via, record.get("dev"), record.get("src"),
                 routing.default_scope(route_type, via), bool(record.get("onlink")), None)


def rule_record(rule):
    record = {"priority": rule.priority, "table": rule.table}
    for key, value in (("from", rule.src), ("to", rule.dst), ("iif", rule.iif), ("oif", rule.oif)):
        if value:
            record[key] = value
    return record


def record_rule(record):
    cidrs = [None if record.get(key) in (None, "default") else record[key] for key in ("from", "to")]
    return Rule("ipv4", record["priority"], cidrs[0], cidrs[1], record.get("iif"), record.get("oif"), None, None,
                False, "lookup", record["table"])


def tunnel_text(tunnel):
    """``ip link add`` arguments after the name; the same words describe a read-back tunnel."""
    if tunnel["kind"] == "vxlan":
        parts = ["type", "vxlan", "id", str(tunnel["vni"])]
        for key in ("local", "remote"):
            if tunnel.get(key):
                parts += [key, tunnel[key]]
        parts += ["dstport", str(tunnel["dstport"])]
        if tunnel.get("dev"):
            parts += ["dev", tunnel["dev"]]
    else:
        parts = ["type", "gre", "local", tunnel["local"], "remote", tunnel["remote"], "ttl", str(tunnel["ttl"])]
        if tunnel.get("key"):
            parts += ["key", str(tunnel["key"])]
    return " ".join(parts)


def tunnel_state_text(tunnel):
    text = "%s %s mtu %s" % (tunnel["name"], tunnel_text(tunnel), tunnel.get("mtu") or "auto")
    if tunnel.get("address"):
        text += " address %s" % tunnel["address"]
    return text


# ----- the spec -----

def normalize_route(index, raw):
    return routing.normalize_route(raw, TABLE_NAMES, "routes[%d]" % index, family="ipv4", proto=None)


def normalize_rule(index, raw):
    option = "rules[%d]" % index
    if raw.get("priority") is None or not 0 < int(raw["priority"]) < 32766:
        # Below the main table's rule (32766), or the rule would never see a packet.
        raise SpecError(option + ".priority", "%s is outside 1-32765" % raw.get("priority"))
    return routing.normalize_rule(raw, TABLE_NAMES, option, family="ipv4")


def normalize_tunnel(index, raw):
    option = "tunnels[%d]" % index
    kind = raw.get("kind")
    tunnel = {"name": parse_ifname(raw.get("name"), option + ".name"), "kind": kind,
              "mtu": int(raw["mtu"]) if raw.get("mtu") else None}
    if raw.get("address"):
        try:
            address = netaddr.IPNetwork(str(raw["address"]))
        except (netaddr.AddrFormatError, ValueError, TypeError):
            address = None
        if address is None or address.version != 4 or "/" not in str(raw["address"]):
            raise SpecError(option + ".address", "%r is not an IPv4 address in CIDR form" % (raw["address"],))
        tunnel["address"] = "%s/%d" % (address.ip, address.prefixlen)
    if kind == "vxlan":
        if raw.get("vni") is None:
            raise SpecError(option + ".vni", "a VXLAN tunnel needs a vni")
        tunnel.update(vni=int(raw["vni"]), dstport=int(raw.get("dstport") or 4789))
        for key in ("local", "remote"):
            if raw.get(key):
                tunnel[key] = parse_address(raw[key], "%s.%s" % (option, key), "ipv4")[1]
        if not tunnel.get("remote"):
            raise SpecError(option + ".remote", "a point-to-point VXLAN tunnel needs a remote")
        if raw.get("dev"):
            tunnel["dev"] = parse_ifname(raw["dev"], option + ".dev")
    elif kind == "gre":
        for key in ("local", "remote"):
            if not raw.get(key):
                raise SpecError("%s.%s" % (option, key), "a GRE tunnel needs a %s address" % key)
            tunnel[key] = parse_address(raw[key], "%s.%s" % (option, key), "ipv4")[1]
        tunnel.update(ttl=int(raw.get("ttl") or 255), key=int(raw["key"]) if raw.get("key") else None)
    else:
        raise SpecError(option + ".kind", "%r is not one of vxlan, gre" % kind)
    return tunnel


def check_snat_ports(snat_port_min, port_mapping_ports):
    """The MASQUERADE source ports (``snat_port_min``-65535) must stay clear of the host ports that
    port mappings use (``port_mapping_ports``, "low-high"; empty: nothing on this host maps ports)."""
    if not 1 <= snat_port_min <= 65535:
        raise SpecError("snat_port_min", "%d is outside 1-65535" % snat_port_min)
    if not port_mapping_ports:
        return
    low, _sep, high = str(port_mapping_ports).partition("-")
    if not (low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high) <= 65535):
        raise SpecError("port_mapping_ports", "%r is not a port range like 20000-29999 (or empty)"
                        % (port_mapping_ports,))
    if snat_port_min <= int(high):
        raise SpecError("snat_port_min", (
            "MASQUERADE source ports %d-65535 overlap the port-mapping range %s (port_mapping_ports), where "
            "CubeSandbox's network-agent publishes sandbox ports; its own SNAT uses 30000-65535. Set "
            "snat_port_min above %s, set port_mapping_ports to the range your network-agent uses "
            "(host_port_min-host_port_max), or to an empty string if nothing maps ports on this host")
            % (snat_port_min, port_mapping_ports, high))


def build_spec(params, addresses):
    """The normalised spec from module parameters and the derived addresses (JSON data: it is also
    the state record)."""
    device = parse_ifname(params["device"], "device")
    sandbox_cidr = parse_network(params["sandbox_cidr"], "sandbox_cidr", "ipv4")[1]
    cidrs, interfaces = [], []
    for index, source in enumerate(params.get("sandbox_sources") or [sandbox_cidr]):
        where = "sandbox_sources[%d]" % index
        if re.match(r"^[0-9.]+(/[0-9]+)?$", str(source)) or ":" in str(source) and "/" in str(source):
            cidrs.append(parse_network(source, where, "ipv4")[1])
        else:
            interfaces.append(parse_ifname(source, where))
    if device in interfaces:
        raise SpecError("sandbox_sources", "the cube-router device %s cannot be a sandbox source" % device)
    check_snat_ports(params["snat_port_min"], params.get("port_mapping_ports"))
    priority = params["rule_priority"]
    if not 0 < priority < 32764:
        raise SpecError("rule_priority", "%d is outside 1-32763 (the rules use it and the next two, all before "
                        "the main table's rule at 32766)" % priority)
    reply_mark = params["reply_mark"]
    if not 0 < reply_mark < 2 ** 32 or reply_mark & (reply_mark - 1):
        raise SpecError("reply_mark", "%#x is not a single mark bit" % reply_mark)
    table = routing.resolve_table(params["route_table"], TABLE_NAMES, "route_table")
    if table in routing.BUILTIN_TABLE_NAMES:
        raise SpecError("route_table", "cube-router needs its own table, not %s" % routing.BUILTIN_TABLE_NAMES[table])
    tunnels = [normalize_tunnel(i, t) for i, t in enumerate(params.get("tunnels") or [])]
    names = [device, peer_name(device)] + [t["name"] for t in tunnels]
    if len(set(names)) != len(names):
        raise SpecError("tunnels", "tunnel names must be unique and differ from %s and %s" % tuple(names[:2]))
    return {
        "device": device,
        "peer": peer_name(device),
        "sandbox_cidr": sandbox_cidr,
        "router_cidr": addresses["router_cidr"],
        "router_ip": addresses["router_ip"],
        "nat_ip": addresses["nat_ip"],
        "source_cidrs": sorted(set(cidrs)),
        "source_interfaces": sorted(set(interfaces)),
        "snat_port_min": params["snat_port_min"],
        "route_table": table,
        "rule_priority": priority,
        "reply_mark": reply_mark,
        "routes": [route_record(normalize_route(i, r)) for i, r in enumerate(params.get("routes") or [])],
        "rules": [rule_record(normalize_rule(i, r)) for i, r in enumerate(params.get("rules") or [])],
        "tunnels": tunnels,
    }


# ----- the wanted state -----

def operator_routes(spec):
    return [record_route(record) for record in spec["routes"]]


def operator_rules(spec):
    return [record_rule(record) for record in spec["rules"]]


def own_routes(spec):
    device, nat_ip, table = spec["device"], spec["nat_ip"], spec["route_table"]
    if nat_ip is None:  # removal without a record: only the table identifies them
        return []
    return [
        Route("ipv4", MAIN_TABLE, "%s/32" % nat_ip, 0, "unicast", None, device, None, "link", False, None),
        Route("ipv4", table, "0.0.0.0/0", 0, "unicast", nat_ip, device, None, "global", True, None),
        Route("ipv4", table, spec["sandbox_cidr"], 0, "throw", None, None, None, "global", False, None),
    ]


def own_rules(spec):
    priority, table, mark = spec["rule_priority"], spec["route_table"], spec["reply_mark"]

    def rule(prio, src=None, iif=None, fwmark=None, lookup=MAIN_TABLE, action="lookup"):
        return Rule("ipv4", prio, src, None, iif, None, fwmark, fwmark, False, action,
                    lookup if action == "lookup" else None)

    # Packets the loop hands back on the device carry the NAT IP, which may be inside a source CIDR:
    # the main table routes them, and what it has no route for (a host without a default route) is
    # refused next, instead of falling through to the steering rules and into the device again.
    rules = [rule(priority, iif=spec["device"]), rule(priority + 1, iif=spec["device"], action="unreachable")]
    # Replies of connections that did not start in a sandbox (port mapping, in-cluster peers) keep
    # the host's routing: the prerouting chain marks them.
    rules += [rule(priority, src=cidr, fwmark=mark) for cidr in spec["source_cidrs"]]
    rules += [rule(priority, iif=name, fwmark=mark) for name in spec["source_interfaces"]]
    rules += [rule(priority + 2, src=cidr, lookup=table) for cidr in spec["source_cidrs"]]
    rules += [rule(priority + 2, iif=name, lookup=table) for name in spec["source_interfaces"]]
    return rules


def steering_text(device):
    return "dev %s egress u32 match-all mirred ingress redirect dev %s" % (device, device)


def render_nft(spec):
    device, nat_ip = spec["device"], spec["nat_ip"]
    selectors = ["ip saddr %s" % cidr for cidr in spec["source_cidrs"]]
    if spec["source_interfaces"]:
        selectors.append("iifname { %s }" % ", ".join('"%s"' % name for name in spec["source_interfaces"]))
    normalise = ['\t\toifname "%s" %s snat to %s' % (device, selector, nat_ip) for selector in selectors]
    replies = ["\t\t%s ct direction reply meta mark set meta mark | %#x" % (selector, spec["reply_mark"])
               for selector in selectors]
    masquerade = '\t\tip saddr %s oifname != "%s" meta l4proto %%s masquerade%%s' % (nat_ip, device)
    lines = [
        "# Rendered by liteboxd.sandbox_network.cube_router: do not edit.",
        "table ip %s" % NFT_TABLE,
        "delete table ip %s" % NFT_TABLE,
        "table ip %s {" % NFT_TABLE,
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority mangle; policy accept;",
    ] + replies + [
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        '\t\tiifname "%s" ip saddr %s accept' % (device, nat_ip),
        '\t\toifname "%s" ip daddr %s ct state established,related accept' % (device, nat_ip),
        "\t}",
        "\tchain postrouting {",
        "\t\ttype nat hook postrouting priority srcnat; policy accept;",
    ] + normalise + [
        masquerade % ("tcp", " to :%d-65535" % spec["snat_port_min"]),
        masquerade % ("udp", " to :%d-65535" % spec["snat_port_min"]),
        masquerade % ("icmp", ""),
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def wanted_state(spec, device_kind):
    device = spec["device"]
    return {
        "device": "%s kind %s up rp_filter 2 accept_local 1" % (device, device_kind),
        "addresses": ["%s dev %s" % (spec["router_cidr"], device)],
        "neighbours": ["%s lladdr %s dev %s nud permanent" % (spec["nat_ip"], DEVICE_MAC, device)],
        "routes": sorted(route_text(r) for r in own_routes(spec) + operator_routes(spec)),
        "rules": sorted(rule_text(r) for r in own_rules(spec) + operator_rules(spec)),
        "steering": [steering_text(device)],
        "sysctl": {"net.ipv4.ip_forward": "1"},
        "tunnels": sorted(tunnel_state_text(t) for t in spec["tunnels"]),
        "firewall": render_nft(spec),
    }


def empty_state():
    return {"device": None, "addresses": [], "neighbours": [], "routes": [], "rules": [], "steering": [],
            "sysctl": {}, "tunnels": [], "firewall": ""}


# ----- the script the module runs and the unit re-runs at boot -----

def _teardown_lines(spec, restore_routes):
    device = spec["device"]
    lines = ["# Remove what a previous run left (every step tolerates absence)."]
    lines += ["ip link del dev %s 2>/dev/null || true" % name for name in [device] + [t["name"] for t in spec["tunnels"]]]
    for rule in own_rules(spec) + operator_rules(spec):
        lines.append("while ip rule del %s 2>/dev/null; do :; done" % rule_text(rule))
    # Earlier releases steered at rule_priority + 1.
    lines.append("while ip rule del pref %d lookup %d 2>/dev/null; do :; done"
                 % (spec["rule_priority"] + 1, spec["route_table"]))
    lines.append("ip route flush table %d 2>/dev/null || true" % spec["route_table"])
    lines.append("nft delete table ip %s 2>/dev/null || true" % NFT_TABLE)
    if restore_routes is not None:
        lines += ["ip route del %s 2>/dev/null || true" % route_text(r) for r in operator_routes(spec)]
        lines += ["ip route replace %s" % route_text(record_route(r)) for r in restore_routes]
    return lines


def render_teardown(spec, restore_routes, forwarding_before):
    lines = ["#!/bin/sh", "# Rendered by liteboxd.sandbox_network.cube_router: removes route-aware egress.", "set -u"]
    lines += _teardown_lines(spec, restore_routes)
    if forwarding_before == "0":
        lines.append("sysctl -qw net.ipv4.ip_forward=0")
    return "\n".join(lines) + "\n"


def render_apply(spec, nft_path):
    device, peer = spec["device"], spec["peer"]
    lines = ["#!/bin/sh", "# Rendered by liteboxd.sandbox_network.cube_router: do not edit.",
             "# Applies route-aware sandbox egress from scratch (run by the module and at boot).", "set -eu"]
    lines += _teardown_lines(spec, None)
    lines.append("# Tunnel devices the egress routes use.")
    for tunnel in spec["tunnels"]:
        lines.append("ip link add %s %s" % (tunnel["name"], tunnel_text(tunnel)))
        if tunnel.get("mtu"):
            lines.append("ip link set dev %s mtu %d" % (tunnel["name"], tunnel["mtu"]))
        if tunnel.get("address"):
            lines.append("ip addr replace %s dev %s" % (tunnel["address"], tunnel["name"]))
        lines.append("ip link set dev %s up" % tunnel["name"])
    lines += [
        "# The device: dummy where the kernel has it, else a veth pair whose peer only gives carrier.",
        "if ! ip link add %s type dummy 2>/dev/null; then" % device,
        "  ip link add %s type veth peer name %s" % (device, peer),
        "  ip link set dev %s up" % peer,
        "fi",
        "ip link set dev %s up" % device,
        "ip addr replace %s dev %s" % (spec["router_cidr"], device),
        # Replies reach sandbox sources through the device, so the reverse path is not the device.
        "sysctl -qw net.ipv4.conf.%s.rp_filter=2" % device.replace(".", "/"),
        # ICMP errors the host sends about sandbox traffic (net unreachable, fragmentation needed) go to
        # the NAT IP from the router IP and loop back in on the device: accept that local source.
        "sysctl -qw net.ipv4.conf.%s.accept_local=1" % device.replace(".", "/"),
        "ip neigh replace %s lladdr \"$(cat /sys/class/net/%s/address)\" dev %s nud permanent"
        % (spec["nat_ip"], device, device),
        "# Egress of the device loops back into its ingress: the kernel receives the packet on it.",
        "tc qdisc add dev %s clsact" % device,
        "tc filter add dev %s egress u32 match u32 0 0 action mirred ingress redirect dev %s" % (device, device),
        "nft -f %s" % nft_path,
        "sysctl -qw net.ipv4.ip_forward=1",
        "# Routes: the NAT IP, the cube-router table, then the operator's routes.",
    ]
    lines += ["ip route replace %s" % route_text(r) for r in own_routes(spec) + operator_routes(spec)]
    lines.append("# Rules: steer sandbox sources into the cube-router table, then the operator's rules.")
    for rule in own_rules(spec) + operator_rules(spec):
        lines.append("ip rule add %s" % rule_text(rule))
    return "\n".join(lines) + "\n"


def render_unit(apply_path, teardown_path):
    return "\n".join([
        "# Rendered by liteboxd.sandbox_network.cube_router: do not edit.",
        "[Unit]",
        "Description=LiteBoxd route-aware sandbox egress (cube-router)",
        "Wants=network-online.target",
        "After=network-online.target nftables.service",
        "",
        "[Service]",
        "Type=oneshot",
        "RemainAfterExit=yes",
        "ExecStart=/bin/sh %s" % apply_path,
        "ExecStop=/bin/sh %s" % teardown_path,
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def sha256(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def strip_handles(value):
    """nft JSON without kernel handles, so two listings of the same ruleset compare equal."""
    if isinstance(value, dict):
        return dict((k, strip_handles(v)) for k, v in value.items() if k != "handle")
    if isinstance(value, list):
        return [strip_handles(v) for v in value]
    return value


def canonical_json(value):
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def changed_sections(before, after):
    return [key for key in sorted(after) if before.get(key) != after.get(key)]
