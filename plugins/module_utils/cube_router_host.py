# -*- coding: utf-8 -*-
# Copyright: (c) 2026, LiteBoxd platform team
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read the route-aware egress state of this host (pyroute2 for links, addresses, neighbours, routes
and rules; ``nft -j``/``tc -j`` for the firewall and the steering loop) in the canonical forms of
``cube_router``, and the host facts the address rules need."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import socket

try:
    from pyroute2 import IPRoute
except ImportError:  # the module reports missing_required_lib
    IPRoute = None

from ansible_collections.liteboxd.sandbox_network.plugins.module_utils.cube_router import (
    DEVICE_MAC,
    NFT_TABLE,
    canonical_json,
    empty_state,
    own_routes,
    route_key,
    route_text,
    rule_text,
    steering_text,
    strip_handles,
    tunnel_state_text,
)

RTN_TYPES = {1: "unicast", 6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw"}
RTNH_F_ONLINK = 4
RTM_F_CLONED = 0x200
NUD_PERMANENT = 0x80


def _sysctl(name):
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as handle:
            return handle.read().strip()
    except IOError:
        return None


def _link_kind(link):
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info else None


def decode_tunnel(link, names_with_mtu, addresses, link_names):
    """A tunnel link message in ``tunnel_state_text`` form, or None if it is no vxlan/gre link."""
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info else None
    data = info.get_attr("IFLA_INFO_DATA") if info else None
    name = link.get_attr("IFLA_IFNAME")
    if kind == "vxlan" and data is not None:
        tunnel = {"kind": "vxlan", "vni": data.get_attr("IFLA_VXLAN_ID"), "local": data.get_attr("IFLA_VXLAN_LOCAL"),
                  "remote": data.get_attr("IFLA_VXLAN_GROUP"), "dstport": data.get_attr("IFLA_VXLAN_PORT"),
                  "dev": link_names.get(data.get_attr("IFLA_VXLAN_LINK"))}
    elif kind == "gre" and data is not None:
        tunnel = {"kind": "gre", "local": data.get_attr("IFLA_GRE_LOCAL"), "remote": data.get_attr("IFLA_GRE_REMOTE"),
                  "ttl": data.get_attr("IFLA_GRE_TTL"), "key": data.get_attr("IFLA_GRE_OKEY") or None}
    else:
        return None
    tunnel.update(name=name, mtu=link.get_attr("IFLA_MTU") if name in names_with_mtu else None)
    own = [a for a in addresses if a["dev"] == name]
    if own:
        tunnel["address"] = own[0]["address"]
    return tunnel


class HostReader(object):
    """One netlink snapshot of the host; ``run`` is AnsibleModule.run_command."""

    def __init__(self, run):
        self.run = run
        with IPRoute() as ipr:
            self.links = list(ipr.get_links())
            self.names = dict((link["index"], link.get_attr("IFLA_IFNAME")) for link in self.links)
            self.addresses = [
                {"address": "%s/%d" % (a.get_attr("IFA_ADDRESS"), a["prefixlen"]), "dev": self.names.get(a["index"])}
                for a in ipr.get_addr(family=socket.AF_INET)]
            self.neighbours = list(ipr.get_neighbours(family=socket.AF_INET))
            self.routes = [self._route(r) for r in ipr.get_routes(family=socket.AF_INET)]
            self.rules = [self._rule(r) for r in ipr.get_rules(family=socket.AF_INET)]
        self.routes = [r for r in self.routes if r is not None]

    def link(self, name):
        for link in self.links:
            if link.get_attr("IFLA_IFNAME") == name:
                return link
        return None

    def _route(self, msg):
        table = msg.get_attr("RTA_TABLE") or msg["table"]
        if table == 255 or msg["type"] not in RTN_TYPES or msg["flags"] & RTM_F_CLONED:
            return None
        dst = msg.get_attr("RTA_DST")
        route = {"type": RTN_TYPES[msg["type"]], "table": table,
                 "dst": "%s/%d" % (dst, msg["dst_len"]) if dst else "default",
                 "metric": msg.get_attr("RTA_PRIORITY") or 0, "onlink": bool(msg["flags"] & RTNH_F_ONLINK)}
        if msg.get_attr("RTA_GATEWAY"):
            route["via"] = msg.get_attr("RTA_GATEWAY")
        if msg.get_attr("RTA_OIF"):
            route["dev"] = self.names.get(msg.get_attr("RTA_OIF"))
        if msg.get_attr("RTA_PREFSRC"):
            route["src"] = msg.get_attr("RTA_PREFSRC")
        return route

    def _rule(self, msg):
        rule = {"priority": msg.get_attr("FRA_PRIORITY") or 0, "table": msg.get_attr("FRA_TABLE") or msg["table"]}
        if msg["src_len"]:
            rule["from"] = "%s/%d" % (msg.get_attr("FRA_SRC"), msg["src_len"])
        if msg["dst_len"]:
            rule["to"] = "%s/%d" % (msg.get_attr("FRA_DST"), msg["dst_len"])
        for key, attr in (("iif", "FRA_IIFNAME"), ("oif", "FRA_OIFNAME")):
            if msg.get_attr(attr):
                rule[key] = msg.get_attr(attr)
        if msg.get_attr("FRA_FWMARK"):
            rule["fwmark"] = msg.get_attr("FRA_FWMARK")
        return rule

    # ----- what the address rules look at -----

    def forwarding(self):
        return _sysctl("net.ipv4.ip_forward")

    def device_kind(self, name):
        link = self.link(name)
        return _link_kind(link) if link is not None else None

    # ----- the cube-router state, for every spec in ``specs`` (current and previous) -----

    def state(self, specs):
        state = empty_state()
        routes, rules = set(), set()
        for spec in specs:
            device = spec["device"]
            link = self.link(device)
            if link is not None:
                mac = link.get_attr("IFLA_ADDRESS")
                state["device"] = "%s kind %s %s rp_filter %s" % (
                    device, _link_kind(link), "up" if link["flags"] & 1 else "down",
                    _sysctl("net.ipv4.conf.%s.rp_filter" % device.replace(".", "/")))
                state["addresses"] += ["%s dev %s" % (a["address"], device) for a in self.addresses if a["dev"] == device]
                for neigh in self.neighbours:
                    if neigh["ifindex"] == link["index"]:
                        lladdr = neigh.get_attr("NDA_LLADDR")
                        state["neighbours"].append("%s lladdr %s dev %s nud %s" % (
                            neigh.get_attr("NDA_DST"), DEVICE_MAC if lladdr == mac else lladdr, device,
                            "permanent" if neigh["state"] & NUD_PERMANENT else "dynamic"))
                state["steering"] += self._steering(device)
            keys = set(route_key(r) for r in own_routes(spec) + spec["routes"])
            routes.update(route_text(r) for r in self.routes
                          if route_key(r) in keys or r["table"] == spec["route_table"])
            prefixes = (spec["rule_priority"], spec["rule_priority"] + 1)
            wanted_rules = set(rule_text(r) for r in spec["rules"])
            rules.update(rule_text(r) for r in self.rules
                         if r["priority"] in prefixes or rule_text(r) in wanted_rules)
            with_mtu = set(t["name"] for t in spec["tunnels"] if t.get("mtu"))
            for tunnel in spec["tunnels"]:
                link = self.link(tunnel["name"])
                decoded = decode_tunnel(link, with_mtu, self.addresses, self.names) if link is not None else None
                if decoded is not None:
                    state["tunnels"].append(tunnel_state_text(decoded))
                elif link is not None:
                    state["tunnels"].append("%s kind %s" % (tunnel["name"], _link_kind(link)))
        for key in ("addresses", "neighbours", "steering", "tunnels"):
            state[key] = sorted(set(state[key]))
        state["routes"], state["rules"] = sorted(routes), sorted(rules)
        if self.forwarding() is not None:
            state["sysctl"] = {"net.ipv4.ip_forward": self.forwarding()}
        state["firewall"] = self.nft_text()
        return state

    def _steering(self, device):
        rc, out, err = self.run(["tc", "-j", "filter", "show", "dev", device, "egress"])
        found = []
        for item in json.loads(out or "[]") if rc == 0 else []:
            for action in (item.get("options") or {}).get("actions") or []:
                if (action.get("kind") == "mirred" and action.get("direction") == "ingress"
                        and action.get("mirred_action") == "redirect"):
                    found.append(steering_text(action.get("to_dev")) if action.get("to_dev") == device
                                 else "dev %s egress mirred ingress redirect dev %s" % (device, action.get("to_dev")))
        return found

    def nft_text(self):
        rc, out, err = self.run(["nft", "list", "table", "ip", NFT_TABLE])
        return out if rc == 0 else ""

    def nft_json(self):
        """The owned table as canonical JSON without handles ('' when the table is absent)."""
        rc, out, err = self.run(["nft", "-j", "list", "table", "ip", NFT_TABLE])
        if rc != 0:
            return ""
        return canonical_json(strip_handles(json.loads(out)["nftables"][1:]))

    def replaced_routes(self, spec, previous_routes):
        """Host routes that ``spec``'s operator routes would replace (same table, dst and metric),
        other than routes a previous run installed: they are restored on removal."""
        ours = set(route_text(r) for r in previous_routes)
        wanted = dict((route_key(r), route_text(r)) for r in spec["routes"])
        return [r for r in self.routes
                if route_key(r) in wanted and route_text(r) != wanted[route_key(r)] and route_text(r) not in ours]


def dummy_available():
    """Without touching the host (check mode): is the dummy link type loaded or installable?"""
    if os.path.isdir("/sys/module/dummy"):
        return True
    release = os.uname()[2]
    for name in ("modules.dep", "modules.builtin"):
        try:
            with open(os.path.join("/lib/modules", release, name)) as handle:
                if "/dummy.ko" in handle.read():
                    return True
        except IOError:
            continue
    return False
