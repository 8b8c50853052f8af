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
ruleset, and one shell script that the module runs and a systemd unit re-runs at boot. Canonical
one-line strings in ``ip`` syntax let the wanted and the read-back state compare directly.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import re

try:
    import netaddr
except ImportError:  # the module reports missing_required_lib
    netaddr = None

NFT_TABLE = "liteboxd_cube_router"
UNIT_NAME = "liteboxd-cube-router.service"
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:+-]{1,15}$")
ROUTE_TYPES = ("unicast", "throw", "unreachable", "blackhole", "prohibit")
TABLE_NAMES = {"main": 254, "local": 255, "default": 253}
DEVICE_MAC = "<device-mac>"
FIRST_ENABLEMENT_WARNING = (
    "cube-router is enabled (or recreated) on this host by this run: existing outbound connections from "
    "running sandboxes are interrupted; they work again once the application reconnects through cube-router.")


class SpecError(ValueError):
    """Bad input; ``option`` names the option at fault."""

    def __init__(self, option, message):
        self.option = option
        super(SpecError, self).__init__("%s: %s" % (option, message))


def peer_name(device):
    """The veth peer of ``device`` (only used where the kernel has no dummy link type)."""
    return "%s-p" % device[:13]


def _ifname(option, value):
    if not IFNAME_RE.match(str(value or "")):
        raise SpecError(option, "%r is not a valid interface name (1-15 characters, no spaces or '/')" % value)
    return str(value)


def _ipv4(option, value):
    try:
        address = netaddr.IPAddress(str(value))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise SpecError(option, "%r is not an IPv4 address" % value)
    if address.version != 4:
        raise SpecError(option, "%r is not an IPv4 address" % value)
    return str(address)


def _ipv4_cidr(option, value, default_prefix=32):
    text = str(value or "")
    if text in ("default", "0.0.0.0/0", "all"):
        return "default"
    try:
        network = netaddr.IPNetwork(text if "/" in text else "%s/%d" % (text, default_prefix))
    except (netaddr.AddrFormatError, ValueError, TypeError):
        raise SpecError(option, "%r is not an IPv4 CIDR" % value)
    if network.version != 4:
        raise SpecError(option, "%r is not an IPv4 CIDR" % value)
    return "default" if network.prefixlen == 0 else str(network.cidr)


def _table(option, value):
    if value is None:
        return 254
    if str(value) in TABLE_NAMES:
        return TABLE_NAMES[str(value)]
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise SpecError(option, "%r is not a table number or one of main, local, default" % value)
    if not 0 < number < 2 ** 32:
        raise SpecError(option, "%r is out of range" % value)
    return number


def table_text(number):
    for name, value in TABLE_NAMES.items():
        if value == number:
            return name
    return str(number)


# ----- canonical one-line forms (shared by the wanted and the read-back state) -----

def route_text(route):
    """``ip route`` arguments for a route dict; the identity key is (table, dst, metric)."""
    parts = [] if route.get("type", "unicast") == "unicast" else [route["type"]]
    parts.append(route["dst"])
    for key, word in (("via", "via"), ("dev", "dev"), ("src", "src"), ("metric", "metric")):
        if route.get(key) not in (None, "", 0):
            parts += [word, str(route[key])]
    if route.get("onlink"):
        parts.append("onlink")
    if route.get("table", 254) != 254:
        parts += ["table", table_text(route["table"])]
    return " ".join(parts)


def route_key(route):
    return (route.get("table", 254), route["dst"], route.get("metric") or 0)


def rule_text(rule):
    parts = ["pref", str(rule["priority"])]
    for key in ("from", "to"):
        if rule.get(key) not in (None, "default"):
            parts += [key, rule[key]]
    for key in ("iif", "oif"):
        if rule.get(key):
            parts += [key, rule[key]]
    if rule.get("fwmark"):
        parts += ["fwmark", "%#x/%#x" % (rule["fwmark"], rule["fwmark"])]
    parts += ["lookup", table_text(rule["table"])]
    return " ".join(parts)


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
    option = "routes[%d]" % index
    route_type = raw.get("type") or "unicast"
    if route_type not in ROUTE_TYPES:
        raise SpecError(option + ".type", "%r is not one of %s" % (route_type, ", ".join(ROUTE_TYPES)))
    route = {"type": route_type, "dst": _ipv4_cidr(option + ".dst", raw.get("dst")),
             "table": _table(option + ".table", raw.get("table")), "metric": int(raw.get("metric") or 0),
             "onlink": bool(raw.get("onlink"))}
    if raw.get("via"):
        route["via"] = _ipv4(option + ".via", raw["via"])
    if raw.get("dev"):
        route["dev"] = _ifname(option + ".dev", raw["dev"])
    if raw.get("src"):
        route["src"] = _ipv4(option + ".src", raw["src"])
    if route_type == "unicast" and not (route.get("via") or route.get("dev")):
        raise SpecError(option, "a unicast route needs via and/or dev")
    return route


def normalize_rule(index, raw):
    option = "rules[%d]" % index
    try:
        priority = int(raw.get("priority"))
    except (TypeError, ValueError):
        raise SpecError(option + ".priority", "a priority (1-32765) is required")
    if not 0 < priority < 32766:
        raise SpecError(option + ".priority", "%d is outside 1-32765" % priority)
    rule = {"priority": priority, "table": _table(option + ".table", raw.get("table"))}
    for key in ("from", "to"):
        if raw.get(key):
            rule[key] = _ipv4_cidr("%s.%s" % (option, key), raw[key])
    for key in ("iif", "oif"):
        if raw.get(key):
            rule[key] = _ifname("%s.%s" % (option, key), raw[key])
    return rule


def normalize_tunnel(index, raw):
    option = "tunnels[%d]" % index
    kind = raw.get("kind")
    tunnel = {"name": _ifname(option + ".name", raw.get("name")), "kind": kind,
              "mtu": int(raw["mtu"]) if raw.get("mtu") else None}
    if raw.get("address"):
        network = netaddr.IPNetwork(_ipv4_cidr(option + ".address", raw["address"]))
        tunnel["address"] = "%s/%d" % (netaddr.IPNetwork(str(raw["address"])).ip, network.prefixlen)
    if kind == "vxlan":
        if raw.get("vni") is None:
            raise SpecError(option + ".vni", "a VXLAN tunnel needs a vni")
        tunnel.update(vni=int(raw["vni"]), dstport=int(raw.get("dstport") or 4789))
        for key in ("local", "remote"):
            if raw.get(key):
                tunnel[key] = _ipv4("%s.%s" % (option, key), raw[key])
        if not tunnel.get("remote"):
            raise SpecError(option + ".remote", "a point-to-point VXLAN tunnel needs a remote")
        if raw.get("dev"):
            tunnel["dev"] = _ifname(option + ".dev", raw["dev"])
    elif kind == "gre":
        for key in ("local", "remote"):
            tunnel[key] = _ipv4("%s.%s" % (option, key), raw.get(key))
        tunnel.update(ttl=int(raw.get("ttl") or 255), key=int(raw["key"]) if raw.get("key") else None)
    else:
        raise SpecError(option + ".kind", "%r is not one of vxlan, gre" % kind)
    return tunnel


def build_spec(params, addresses):
    """The normalised spec from module parameters and the derived addresses."""
    device = _ifname("device", params["device"])
    sandbox_cidr = _ipv4_cidr("sandbox_cidr", params["sandbox_cidr"], default_prefix=32)
    cidrs, interfaces = [], []
    for index, source in enumerate(params.get("sandbox_sources") or [sandbox_cidr]):
        if re.match(r"^[0-9.]+(/[0-9]+)?$", str(source)) or ":" in str(source) and "/" in str(source):
            cidrs.append(_ipv4_cidr("sandbox_sources[%d]" % index, source))
        else:
            interfaces.append(_ifname("sandbox_sources[%d]" % index, source))
    if device in interfaces:
        raise SpecError("sandbox_sources", "the cube-router device %s cannot be a sandbox source" % device)
    if not 1 <= params["snat_port_min"] <= 65535:
        raise SpecError("snat_port_min", "%d is outside 1-65535" % params["snat_port_min"])
    priority = params["rule_priority"]
    if not 0 < priority < 32765:
        raise SpecError("rule_priority", "%d is outside 1-32764 (the rules use it and the next one)" % priority)
    reply_mark = params["reply_mark"]
    if not 0 < reply_mark < 2 ** 32 or reply_mark & (reply_mark - 1):
        raise SpecError("reply_mark", "%#x is not a single mark bit" % reply_mark)
    table = _table("route_table", params["route_table"])
    if table in TABLE_NAMES.values():
        raise SpecError("route_table", "cube-router needs its own table, not %s" % table_text(table))
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
        "routes": [normalize_route(i, r) for i, r in enumerate(params.get("routes") or [])],
        "rules": [normalize_rule(i, r) for i, r in enumerate(params.get("rules") or [])],
        "tunnels": tunnels,
    }


# ----- the wanted state -----

def own_routes(spec):
    device, nat_ip, table = spec["device"], spec["nat_ip"], spec["route_table"]
    if nat_ip is None:  # removal without a record: only the table identifies them
        return []
    return [
        {"type": "unicast", "dst": "%s/32" % nat_ip, "dev": device, "table": 254},
        {"type": "unicast", "dst": "default", "via": nat_ip, "dev": device, "onlink": True, "table": table},
        {"type": "throw", "dst": spec["sandbox_cidr"], "table": table},
    ]


def own_rules(spec):
    priority, table, mark = spec["rule_priority"], spec["route_table"], spec["reply_mark"]
    # Packets the loop hands back on the device carry the NAT IP, which may be inside a source CIDR.
    rules = [{"priority": priority, "iif": spec["device"], "table": 254}]
    # Replies of connections that did not start in a sandbox (port mapping, in-cluster peers) keep
    # the host's routing: the prerouting chain marks them.
    rules += [{"priority": priority, "from": cidr, "fwmark": mark, "table": 254} for cidr in spec["source_cidrs"]]
    rules += [{"priority": priority, "iif": name, "fwmark": mark, "table": 254} for name in spec["source_interfaces"]]
    rules += [{"priority": priority + 1, "from": cidr, "table": table} for cidr in spec["source_cidrs"]]
    rules += [{"priority": priority + 1, "iif": name, "table": table} for name in spec["source_interfaces"]]
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
        masquerade % ("udp", ""),
        masquerade % ("icmp", ""),
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def wanted_state(spec, device_kind):
    device = spec["device"]
    return {
        "device": "%s kind %s up rp_filter 2" % (device, device_kind),
        "addresses": ["%s dev %s" % (spec["router_cidr"], device)],
        "neighbours": ["%s lladdr %s dev %s nud permanent" % (spec["nat_ip"], DEVICE_MAC, device)],
        "routes": sorted(route_text(r) for r in own_routes(spec) + spec["routes"]),
        "rules": sorted(rule_text(r) for r in own_rules(spec) + spec["rules"]),
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
    for rule in own_rules(spec) + spec["rules"]:
        lines.append("while ip rule del %s 2>/dev/null; do :; done" % rule_text(rule))
    lines.append("ip route flush table %d 2>/dev/null || true" % spec["route_table"])
    lines.append("nft delete table ip %s 2>/dev/null || true" % NFT_TABLE)
    if restore_routes is not None:
        lines += ["ip route del %s 2>/dev/null || true" % route_text(r) for r in spec["routes"]]
        lines += ["ip route replace %s" % route_text(r) for r in restore_routes]
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
        "ip neigh replace %s lladdr \"$(cat /sys/class/net/%s/address)\" dev %s nud permanent"
        % (spec["nat_ip"], device, device),
        "# Egress of the device loops back into its ingress: the kernel receives the packet on it.",
        "tc qdisc add dev %s clsact" % device,
        "tc filter add dev %s egress u32 match u32 0 0 action mirred ingress redirect dev %s" % (device, device),
        "nft -f %s" % nft_path,
        "sysctl -qw net.ipv4.ip_forward=1",
        "# Routes: the NAT IP, the cube-router table, then the operator's routes.",
    ]
    lines += ["ip route replace %s" % route_text(r) for r in own_routes(spec) + spec["routes"]]
    lines.append("# Rules: steer sandbox sources into the cube-router table, then the operator's rules.")
    for rule in own_rules(spec) + spec["rules"]:
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
